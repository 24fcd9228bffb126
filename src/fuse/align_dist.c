// A source's next-token distributions and cross-entropies carried onto the target's positions
// (fusion.md §4, with fusekit's next-token semantics). See fusekit/align.h.
#include "fusekit/align.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fk_aligned_dist_free(fk_aligned_dist *d) {
    if (!d) return;
    free(d->count);
    free(d->ids);
    free(d->logp);
    free(d->ce);
    memset(d, 0, sizeof *d);
}

// log(exp(a) + exp(b))
static float log_add(float a, float b) {
    float m = a > b ? a : b, l = a > b ? b : a;
    if (m == -INFINITY) return m;
    return m + log1pf(expf(l - m));
}

// Source position i's entries mapped to target ids into (tid, tlp); returns how many.
static int map_entries(int c, const int32_t *sid, const float *slp, const int32_t *vmap, int32_t *tid, float *tlp) {
    int n = 0;
    for (int e = 0; e < c; e++) {
        int32_t t = vmap ? vmap[sid[e]] : sid[e];
        if (t < 0) continue;
        int q = 0;
        while (q < n && tid[q] != t) q++;
        if (q < n) {
            tlp[q] = log_add(tlp[q], slp[e]);  // a collision: probabilities add
        } else {
            tid[n] = t;
            tlp[n] = slp[e];
            n++;
        }
    }
    // by probability descending, then id (insertion sort: k is small)
    for (int a = 1; a < n; a++) {
        int32_t id = tid[a];
        float lp = tlp[a];
        int b = a;
        while (b > 0 && (tlp[b - 1] < lp || (tlp[b - 1] == lp && tid[b - 1] > id))) {
            tid[b] = tid[b - 1];
            tlp[b] = tlp[b - 1];
            b--;
        }
        tid[b] = id;
        tlp[b] = lp;
    }
    return n;
}

fk_status fk_align_dists(const fk_alignment *a, const fk_tokseq *src, const fk_tokseq *tgt, const int32_t *vmap, int k,
                         const uint8_t *cnt, const int32_t *ids, const float *logp, const float *ce, fk_aligned_dist *out) {
    memset(out, 0, sizeof *out);
    if (!a || !src || !tgt || !src->begin || !tgt->begin) return fk_error(FK_ERR_ARG, "aligning distributions: an argument is missing");
    if (k < 1 || k > 255) return fk_error(FK_ERR_ARG, "aligning distributions: k = %d, expected 1..255", k);
    if (a->n != tgt->n)
        return fk_error(FK_ERR_ARG, "aligning distributions: the alignment has %lld target tokens, the target sequence %lld",
                        (long long)a->n, (long long)tgt->n);
    int64_t ns = src->n, nt = tgt->n;
    int64_t nsp = ns > 0 ? ns - 1 : 0, n = nt > 0 ? nt - 1 : 0;
    if (nsp > 0 && (!cnt || !ids || !logp || !ce)) return fk_error(FK_ERR_ARG, "aligning distributions: the source's data is missing");
    if (src->begin[0] != tgt->begin[0] || src->begin[ns] != tgt->begin[nt])
        return fk_error(FK_ERR_ARG, "aligning distributions: the source tokens cover bytes [%lld, %lld), the target tokens [%lld, %lld)",
                        (long long)src->begin[0], (long long)src->begin[ns], (long long)tgt->begin[0], (long long)tgt->begin[nt]);
    size_t na = (size_t)(n > 0 ? n : 1);
    out->n = n;
    out->k = k;
    out->count = calloc(na, 1);
    out->ids = malloc(na * (size_t)k * sizeof *out->ids);
    out->logp = malloc(na * (size_t)k * sizeof *out->logp);
    out->ce = malloc(na * sizeof *out->ce);
    double *acc = calloc(na, sizeof *acc);
    if (!out->count || !out->ids || !out->logp || !out->ce || !acc) {
        free(acc);
        fk_aligned_dist_free(out);
        return fk_error(FK_ERR_NOMEM, "out of memory aligning the distributions of %lld positions", (long long)n);
    }
    fk_status st = FK_OK;

    // Distributions: position j from source position lo[j] where the tokens align one to one.
    for (int64_t j = 0; j < n && st == FK_OK; j++) {
        int32_t *tid = out->ids + j * k;
        float *tlp = out->logp + j * k;
        int c = 0;
        int64_t i = a->lo[j];
        if (a->one_to_one[j] && i >= 0 && i < nsp) {
            if (cnt[i] > k) {
                st = fk_error(FK_ERR_ARG, "aligning distributions: source position %lld has %d entries, more than k = %d", (long long)i,
                              cnt[i], k);
                break;
            }
            const int32_t *sid = ids + i * k;
            for (int e = 0; e < cnt[i]; e++)
                if (sid[e] < 0) {
                    st = fk_error(FK_ERR_ARG, "aligning distributions: source position %lld entry %d has id %d", (long long)i, e, sid[e]);
                    break;
                }
            if (st != FK_OK) break;
            c = map_entries(cnt[i], sid, logp + i * k, vmap, tid, tlp);
        }
        out->count[j] = (uint8_t)c;
        for (int e = c; e < k; e++) {
            tid[e] = -1;
            tlp[e] = -INFINITY;
        }
    }

    // Cross-entropies: source position i predicts source token i + 1 = bytes [b0, b1); its ce
    // goes to the target positions predicting the tokens that overlap them, by bytes.
    const int64_t *sb = src->begin, *tb = tgt->begin;
    int64_t p = 0;  // first target token ending after b0
    for (int64_t i = 0; i < nsp && st == FK_OK && nt > 0; i++) {
        int64_t b0 = sb[i + 1], b1 = sb[i + 2];
        double v = ce[i];
        while (p < nt && tb[p + 1] <= b0) p++;
        if (b1 > b0) {
            for (int64_t q = p; q < nt && tb[q] < b1; q++) {
                int64_t lo = tb[q] > b0 ? tb[q] : b0, hi = tb[q + 1] < b1 ? tb[q + 1] : b1;
                if (hi > lo && q >= 1) acc[q - 1] += v * (double)(hi - lo) / (double)(b1 - b0);
            }
        } else {
            int64_t q = p < nt ? p : nt - 1;  // the token holding byte b0; the last one at the end
            if (q >= 1) acc[q - 1] += v;
        }
    }
    for (int64_t j = 0; j < n; j++) out->ce[j] = (float)acc[j];
    free(acc);
    if (st != FK_OK) fk_aligned_dist_free(out);
    return st;
}
