// The span objective (fusion.md §6, "Span objective"): approximate likelihood matching of
// chunks cut at the byte offsets both tokenizations share (ALM, Minixhofer et al. 2025), and
// the boundary files aligned stores carry for it. See fusekit/fusion.h.
#include "fusekit/fusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fk_span_shared_ends(const int64_t *sb, int64_t ns, const int64_t *tb, int64_t nt, uint8_t *end) {
    int64_t i = 0;  // first source boundary not below the current target end
    for (int64_t t = 0; t < nt; t++) {
        int64_t e = tb[t + 1];
        while (i <= ns && sb[i] < e) i++;
        end[t] = (uint8_t)(i <= ns && sb[i] == e);
    }
}

int64_t fk_span_chunks(const uint8_t *ends, int64_t n, int32_t *chunk) {
    int64_t nc = 0, a = 0;
    bool open = ends[0] != 0;  // whether the chunk starting at position a starts on a shared boundary
    for (int64_t j = 0; j < n; j++) {
        chunk[j] = -1;
        if (!ends[j + 1]) continue;
        if (open) {
            for (int64_t q = a; q <= j; q++) chunk[q] = (int32_t)nc;
            nc++;
        }
        a = j + 1;
        open = true;
    }
    return nc;
}

// log(1 - exp(x)) for x < 0, accurate on both sides of log(1/2)
static double log1mexp(double x) { return x < -M_LN2 ? log1p(-exp(x)) : log(-expm1(x)); }

double fk_span_bce(double t, double s, double temp, double *dnll) {
    if (t > 0) t = 0;  // chunk likelihoods are probabilities (quantised ce can pass 0 by a step)
    if (s > 0) s = 0;
    double a = t / temp - FK_SPAN_EPS, b = s / temp - FK_SPAN_EPS, pt = exp(a);
    // d/db of -(pt b + (1 - pt) log(1 - e^b)) = (1 - pt) / (e^-b - 1) - pt; nll = -s, db/ds = 1/temp
    if (dnll) *dnll = (pt - (1 - pt) / expm1(-b)) / temp;
    return -(pt * b + (1 - pt) * log1mexp(b));
}

double fk_span_window(const int32_t *chunk, int64_t n, const float *nll, const double *t, int64_t nc, double temp, float *g) {
    double *s = calloc((size_t)(nc > 0 ? nc : 1), sizeof *s), *h = calloc((size_t)(nc > 0 ? nc : 1), sizeof *h);
    if (!s || !h) { free(s); free(h); return NAN; }
    for (int64_t j = 0; j < n; j++)
        if (chunk[j] >= 0) s[chunk[j]] -= nll[j];
    double loss = 0;
    for (int64_t c = 0; c < nc; c++) loss += fk_span_bce(t[c], s[c], temp, &h[c]);
    for (int64_t j = 0; j < n; j++) g[j] = chunk[j] >= 0 ? (float)h[chunk[j]] : 0.0f;
    free(s); free(h);
    return loss;
}

// ------------------------------------------------------------------ boundary files
// "<aligned store>.bounds": magic "FKBOUNDS", u64 n_tokens, u64 the target tokenizer's
// fingerprint, u64 the corpus fingerprint, then n_tokens bytes, 1 where the target token ends
// at a boundary of the source's tokenization (fk_span_shared_ends), else 0.
#define BOUNDS_MAGIC "FKBOUNDS"
#define BOUNDS_HEAD 32

char *fk_span_bounds_path(const char *aligned_path) {
    size_t n = strlen(aligned_path);
    char *p = malloc(n + 8);
    if (p) { memcpy(p, aligned_path, n); memcpy(p + n, ".bounds", 8); }
    return p;
}

fk_status fk_span_bounds_write(const char *path, const uint8_t *ends, int64_t n_tokens, uint64_t tokenizer_fp, uint64_t corpus_fp) {
    size_t size = BOUNDS_HEAD + (size_t)n_tokens;
    uint8_t *buf = malloc(size);
    if (!buf) return fk_error(FK_ERR_NOMEM, "out of memory writing %s", path);
    uint64_t head[3] = {(uint64_t)n_tokens, tokenizer_fp, corpus_fp};  // little-endian hosts only, as the stores
    memcpy(buf, BOUNDS_MAGIC, 8);
    memcpy(buf + 8, head, sizeof head);
    memcpy(buf + BOUNDS_HEAD, ends, (size_t)n_tokens);
    fk_status st = fk_write_file_atomic(path, buf, size);
    free(buf);
    return st;
}

fk_status fk_span_bounds_read(const char *path, int64_t n_tokens, uint64_t tokenizer_fp, uint64_t corpus_fp, uint8_t **ends) {
    *ends = NULL;
    if (!fk_path_exists(path))
        return fk_error(FK_ERR_IO, "%s is missing: the span objective needs the aligned store's shared boundaries (fusekit train and fuse "
                        "write them when they align a store)", path);
    char *data;
    size_t size;
    FK_TRY(fk_read_file(path, &data, &size));
    uint64_t head[3] = {0};
    if (size >= BOUNDS_HEAD) memcpy(head, data + 8, sizeof head);
    fk_status st = FK_OK;
    if (size < BOUNDS_HEAD || memcmp(data, BOUNDS_MAGIC, 8) != 0)
        st = fk_error(FK_ERR_FORMAT, "%s is not a boundary file (magic %s expected)", path, BOUNDS_MAGIC);
    else if (head[0] != (uint64_t)n_tokens || size != BOUNDS_HEAD + (size_t)n_tokens)
        st = fk_error(FK_ERR_FORMAT, "%s holds %llu tokens in %zu bytes, its store %lld: stale or torn", path, (unsigned long long)head[0], size,
                      (long long)n_tokens);
    else if (head[1] != tokenizer_fp || head[2] != corpus_fp)
        st = fk_error(FK_ERR_FORMAT, "%s belongs to another tokenizer or corpus than its store (fingerprints differ)", path);
    for (size_t i = BOUNDS_HEAD; st == FK_OK && i < size; i++)
        if ((uint8_t)data[i] > 1) st = fk_error(FK_ERR_FORMAT, "%s: token %zu has flag %u (0 or 1)", path, i - BOUNDS_HEAD, (uint8_t)data[i]);
    if (st == FK_OK) {
        *ends = malloc((size_t)(n_tokens > 0 ? n_tokens : 1));
        if (!*ends) st = fk_error(FK_ERR_NOMEM, "out of memory reading %s", path);
        else memcpy(*ends, data + BOUNDS_HEAD, (size_t)n_tokens);
    }
    free(data);
    return st;
}

void fk_span_teacher_logp(const fk_fusion_opts *o, const fk_teacher_window *t, int S, const int32_t *chunk, int64_t n, double *tl,
                          double *weights) {
    double seq_ce[64];  // the window's mean ce per teacher (sequence level)
    for (int k = 0; k < S; k++) {
        double sum = 0;
        for (int64_t j = 0; j < n; j++) sum += t[k].ce[j];
        seq_ce[k] = sum / (double)(n > 0 ? n : 1);
    }
    for (int64_t j = 0; j < n;) {
        if (chunk[j] < 0) { j++; continue; }
        int64_t e = j;
        while (e < n && chunk[e] == chunk[j]) e++;
        double nats[64], ce[64], w[64];
        for (int k = 0; k < S; k++) {
            double sum = 0;
            for (int64_t q = j; q < e; q++) sum += t[k].ce[q];
            nats[k] = sum;
            ce[k] = o->level == FK_FUSE_SEQUENCE ? seq_ce[k] : sum / (double)(e - j);
        }
        fk_fusion_weights(o, ce, S, w);
        // log sum_k w_k exp(-nats_k), from the most likely teacher
        double mn = INFINITY, z = 0;
        for (int k = 0; k < S; k++) if (w[k] > 0 && nats[k] < mn) mn = nats[k];
        for (int k = 0; k < S; k++) {
            if (w[k] > 0) z += w[k] * exp(-(nats[k] - mn));
            if (weights) weights[k] += w[k] * (double)(e - j);
        }
        tl[chunk[j]] = -mn + log(z);
        j = e;
    }
}
