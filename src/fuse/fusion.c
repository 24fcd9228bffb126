// Fusion of teachers' next-token distributions (MinCE, AvgCE) and the teacher set that
// feeds fused training from distribution stores. See fusekit/fusion.h and fusion.md §5-6.
#include "fusekit/fusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fk_fusion_defaults(fk_fusion_opts *o) {
    o->kind = FK_FUSE_MINCE;
    o->level = FK_FUSE_SEQUENCE;
    o->tau = 1.0f;
    o->temperature = 1.0f;
    o->tail = false;
    o->objective = FK_OBJECTIVE_CE;
    o->span_temp = 1.0f;  // chosen on the demo's validation split (docs/fusion.md §6); ALM's code uses 100
    o->shuffle_seed = 0;
}

fk_status fk_fusion_parse(const char *kind, const char *level, fk_fusion_opts *o) {
    if (kind) {
        if (strcmp(kind, "mince") == 0) o->kind = FK_FUSE_MINCE;
        else if (strcmp(kind, "avgce") == 0) o->kind = FK_FUSE_AVGCE;
        else return fk_error(FK_ERR_ARG, "fusion must be mince or avgce (got \"%s\")", kind);
    }
    if (level) {
        if (strcmp(level, "sequence") == 0) o->level = FK_FUSE_SEQUENCE;
        else if (strcmp(level, "token") == 0) o->level = FK_FUSE_TOKEN;
        else return fk_error(FK_ERR_ARG, "fusion level must be sequence or token (got \"%s\")", level);
    }
    return FK_OK;
}

void fk_fused_rows_clear(fk_fused_rows *r) { r->n_rows = r->n_entries = 0; }

void fk_fused_rows_free(fk_fused_rows *r) {
    free(r->row); free(r->ids); free(r->p);
    memset(r, 0, sizeof *r);
}

static fk_status rows_reserve(fk_fused_rows *r, int64_t rows, int64_t entries) {
    if (r->n_rows + rows + 1 > r->cap_rows) {
        int64_t cap = 2 * (r->n_rows + rows + 1);
        int64_t *p = realloc(r->row, (size_t)cap * sizeof *p);
        if (!p) return fk_error(FK_ERR_NOMEM, "out of memory");
        r->row = p;
        r->cap_rows = cap;
    }
    if (r->n_entries + entries > r->cap_entries) {
        int64_t cap = 2 * (r->n_entries + entries);
        int32_t *ids = realloc(r->ids, (size_t)cap * sizeof *ids);
        if (ids) r->ids = ids;
        float *p = realloc(r->p, (size_t)cap * sizeof *p);
        if (p) r->p = p;
        if (!ids || !p) return fk_error(FK_ERR_NOMEM, "out of memory");
        r->cap_entries = cap;
    }
    if (r->n_rows == 0) r->row[0] = r->n_entries;
    return FK_OK;
}

// Adds weight * q_t(position j) into (ids, p, *n), q_t the teacher's renormalised entries or a
// one-hot on the label. The arrays stay sorted by id with distinct ids.
static void add_teacher(const fk_teacher_window *t, int64_t j, int32_t label, float temperature, bool tail, double weight, int32_t *ids,
                        double *p, int *n) {
    int c = t->count[j];
    double q[64];
    int32_t qi[64];
    if (c == 0) {
        qi[0] = label;
        q[0] = 1;
        c = 1;
    } else {
        const float *lp = t->logp + j * t->k;
        double mx = lp[0], s = 0;
        for (int e = 1; e < c; e++) mx = lp[e] > mx ? lp[e] : mx;
        for (int e = 0; e < c; e++) { q[e] = exp((lp[e] - mx) / temperature); s += q[e]; qi[e] = t->ids[j * t->k + e]; }
        for (int e = 0; e < c; e++) q[e] = tail ? exp(lp[e]) : q[e] / s;
    }
    for (int e = 0; e < c; e++) {
        int32_t id = qi[e];
        int lo = 0, hi = *n;  // binary search for id
        while (lo < hi) { int mid = (lo + hi) / 2; if (ids[mid] < id) lo = mid + 1; else hi = mid; }
        if (lo < *n && ids[lo] == id) { p[lo] += weight * q[e]; continue; }
        memmove(ids + lo + 1, ids + lo, (size_t)(*n - lo) * sizeof *ids);
        memmove(p + lo + 1, p + lo, (size_t)(*n - lo) * sizeof *p);
        ids[lo] = id;
        p[lo] = weight * q[e];
        (*n)++;
    }
}

void fk_fusion_weights(const fk_fusion_opts *o, const double *ce, int S, double *w) {
    if (o->kind == FK_FUSE_MINCE) {
        int best = 0;
        for (int s = 1; s < S; s++) if (ce[s] < ce[best]) best = s;
        for (int s = 0; s < S; s++) w[s] = s == best;
        return;
    }
    double mn = ce[0], z = 0, tau = o->tau > 0 ? o->tau : 1.0f;
    for (int s = 1; s < S; s++) mn = ce[s] < mn ? ce[s] : mn;
    for (int s = 0; s < S; s++) { w[s] = exp(-(ce[s] - mn) / tau); z += w[s]; }
    for (int s = 0; s < S; s++) w[s] /= z;
}

fk_status fk_fuse_window(const fk_fusion_opts *o, const fk_teacher_window *t, int S, const int32_t *labels, int64_t n,
                         fk_fused_rows *out, double *weights) {
    if (S < 1 || S > 64) return fk_error(FK_ERR_ARG, "fusion: %d teachers (1 to 64 are supported)", S);
    if (o->tail && o->temperature > 0 && o->temperature != 1)
        return fk_error(FK_ERR_ARG, "fusion: a tail class needs the teachers' own probabilities (teacher temperature 1, got %g)", o->temperature);
    int kmax = 0;
    for (int s = 0; s < S; s++) {
        if (t[s].n < n) return fk_error(FK_ERR_ARG, "fusion: teacher %d covers %lld positions, the window %lld", s, (long long)t[s].n, (long long)n);
        if (t[s].k < 1 || t[s].k > 64) return fk_error(FK_ERR_ARG, "fusion: teacher %d has k = %d (1 to 64)", s, t[s].k);
        kmax += t[s].k;
    }
    FK_TRY(rows_reserve(out, n, n * kmax));
    double w[64], seq_ce[64];
    float temp = o->temperature > 0 ? o->temperature : 1.0f;
    for (int s = 0; s < S; s++) {
        double sum = 0;
        for (int64_t j = 0; j < n; j++) sum += t[s].ce[j];
        seq_ce[s] = sum / (double)(n > 0 ? n : 1);
        if (weights) weights[s] = 0;
    }
    int32_t *ids = malloc((size_t)kmax * sizeof *ids);
    double *p = malloc((size_t)kmax * sizeof *p);
    if (!ids || !p) { free(ids); free(p); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    for (int64_t j = 0; j < n; j++) {
        // the span's cross-entropy per teacher: the window's mean or this position's
        double ce[64];
        for (int s = 0; s < S; s++) ce[s] = o->level == FK_FUSE_SEQUENCE ? seq_ce[s] : t[s].ce[j];
        fk_fusion_weights(o, ce, S, w);
        int m = 0;
        for (int s = 0; s < S; s++)
            if (w[s] > 0) {
                add_teacher(&t[s], j, labels[j], temp, o->tail, w[s], ids, p, &m);
                if (weights) weights[s] += w[s];
            }
        double z = 0;
        for (int e = 0; e < m; e++) z += p[e];
        if (o->tail) z = z > 1 ? z : 1;  // the row's mass stays (above 1 only by quantisation)
        int64_t base = out->n_entries;
        for (int e = 0; e < m; e++) { out->ids[base + e] = ids[e]; out->p[base + e] = (float)(p[e] / z); }
        out->n_entries += m;
        out->row[++out->n_rows] = out->n_entries;
    }
    free(ids); free(p);
    return FK_OK;
}

// ------------------------------------------------------------------ alignment options

void fk_align_opts_default(fk_align_opts *o) {
    o->mode = FK_ALIGN_OFFSETS;
    o->vmap = FK_VMAP_MINED;
    o->cache_dir = NULL;
}

fk_status fk_align_parse(const char *mode, const char *vmap, fk_align_opts *o) {
    if (mode) FK_TRY(fk_align_parse_mode(mode, &o->mode));
    if (vmap) FK_TRY(fk_vmap_parse_mode(vmap, &o->vmap));
    return FK_OK;
}
