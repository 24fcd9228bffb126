// Internal to src/fuse: the bit-parallel edit distance kernel shared by token alignment
// (align.c) and the MinED vocabulary map (align_vmap.c).
#ifndef FK_FUSE_ALIGN_INTERNAL_H
#define FK_FUSE_ALIGN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fusekit/tokenizer.h"
#ifdef __SSE2__
#include <emmintrin.h>
#endif

// Bit-parallel Levenshtein distance (Myers 1999, in Hyyrö's formulation for the global
// distance): the pattern's columns of the DP matrix are held as bit vectors of vertical
// deltas, one text byte per step. peq[c] has bit k set where pattern[k] == c; m <= 64.
// Stops early, returning a value > bound, once the distance must exceed bound.
// One text symbol's step: eq is the pattern's match vector for the symbol; returns the change
// of the last row's score (+1, 0, -1).
static inline int myers_step(uint64_t eq, uint64_t *pv, uint64_t *mv, uint64_t last) {
    uint64_t xv = eq | *mv;
    uint64_t xh = (((eq & *pv) + *pv) ^ *pv) | eq;
    uint64_t ph = *mv | ~(xh | *pv);
    uint64_t mh = *pv & xh;
    int d = (ph & last) ? 1 : (mh & last) ? -1 : 0;
    ph = (ph << 1) | 1;  // row 0 of the matrix is 0, 1, 2, ...: +1 per column
    mh <<= 1;
    *pv = mh | ~(xv | ph);
    *mv = ph & xv;
    return d;
}

static inline int64_t myers_bounded(const uint64_t *peq, size_t m, const uint8_t *t, size_t n, int64_t bound) {
    if (m == 0) return (int64_t)n;
    uint64_t pv = ~(uint64_t)0, mv = 0, last = (uint64_t)1 << (m - 1);
    int64_t score = (int64_t)m;
    for (size_t j = 0; j < n; j++) {
        score += myers_step(peq[t[j]], &pv, &mv, last);
        // the last row can fall by at most one per remaining column
        if (score - (int64_t)(n - 1 - j) > bound) return bound + 1;
    }
    return score;
}

// Two-row dynamic programming over strings of T, for strings the bit vectors cannot hold:
// defines `static int64_t name(a, na, b, nb)`, -1 when out of memory.
#define FK_EDIT_DP(name, T)                                                                      \
    static int64_t name(const T *a, size_t na, const T *b, size_t nb) {                          \
        if (na < nb) { const T *t = a; a = b; b = t; size_t tn = na; na = nb; nb = tn; }          \
        if (nb == 0) return (int64_t)na;                                                         \
        int64_t *row = malloc((nb + 1) * sizeof *row);                                           \
        if (!row) return -1;                                                                     \
        for (size_t j = 0; j <= nb; j++) row[j] = (int64_t)j;                                    \
        for (size_t i = 1; i <= na; i++) {                                                       \
            int64_t diag = row[0];                                                               \
            row[0] = (int64_t)i;                                                                 \
            for (size_t j = 1; j <= nb; j++) {                                                   \
                int64_t up = row[j];                                                             \
                int64_t v = diag + (a[i - 1] != b[j - 1]);                                       \
                if (up + 1 < v) v = up + 1;                                                      \
                if (row[j - 1] + 1 < v) v = row[j - 1] + 1;                                      \
                row[j] = v;                                                                      \
                diag = up;                                                                       \
            }                                                                                    \
        }                                                                                        \
        int64_t d = row[nb];                                                                     \
        free(row);                                                                               \
        return d;                                                                                \
    }

// A lower bound of the edit distance: the larger of the two one-sided excesses of two strings'
// counts of symbol classes (FK_N_CLASS classes, counts saturating at 255; mapping symbols to
// classes can only shorten the distance, and a distance is at least the bag distance).
#define FK_N_CLASS 32
static inline int64_t bag_bound(const uint8_t *a, const uint8_t *b) {
#ifdef __SSE2__
    __m128i z = _mm_setzero_si128();
    __m128i a0 = _mm_loadu_si128((const __m128i *)a), a1 = _mm_loadu_si128((const __m128i *)(a + 16));
    __m128i b0 = _mm_loadu_si128((const __m128i *)b), b1 = _mm_loadu_si128((const __m128i *)(b + 16));
    __m128i p = _mm_add_epi64(_mm_sad_epu8(_mm_subs_epu8(a0, b0), z), _mm_sad_epu8(_mm_subs_epu8(a1, b1), z));
    __m128i q = _mm_add_epi64(_mm_sad_epu8(_mm_subs_epu8(b0, a0), z), _mm_sad_epu8(_mm_subs_epu8(b1, a1), z));
    int64_t pos = _mm_cvtsi128_si32(p) + _mm_extract_epi16(p, 4), neg = _mm_cvtsi128_si32(q) + _mm_extract_epi16(q, 4);
#else
    int64_t pos = 0, neg = 0;
    for (int k = 0; k < FK_N_CLASS; k++) {
        if (a[k] > b[k]) pos += a[k] - b[k];
        else neg += b[k] - a[k];
    }
#endif
    return pos > neg ? pos : neg;
}

// ---------------------------------------------------------------- MinED candidate search
// The one search behind both MinED maps, over any element type (bytes in align_vmap.c, code
// points in align_fusellm.c): the caller describes its candidates and gives the distance.
typedef struct {
    const int32_t *ids;     // candidate ids sorted by (length, id)
    const uint8_t *counts;  // FK_N_CLASS class counts per entry of ids (for bag_bound)
    const int64_t *at;      // candidates of length L: ids[at[L] .. at[L + 1])
    int64_t max_len;
    int64_t min_dist;       // least possible distance to a query (1 where no candidate equals it)
    const void *strings;    // the caller's candidate strings, for its distance
} fk_mined_cands;
typedef struct {
    const void *a;      // the query's elements
    size_t na;
    const void *match;  // its match vectors for the bit-parallel distance, NULL when na > 64
} fk_mined_query;
// Distance from query q to candidate id (len elements): > bound once it must exceed bound,
// -1 when out of memory (that candidate is then passed over).
typedef int64_t (*fk_mined_dist)(const fk_mined_cands *c, const fk_mined_query *q, int32_t id, size_t len, int64_t bound);

// The candidate nearest to q (class counts ca; ties: lowest id), or -1 when there is none.
// Buckets are visited by growing length difference, a lower bound of the distance, so the
// search stops once it exceeds the best distance found. Static inline so that each caller's
// distance is inlined.
static inline int32_t fk_mined_search(const fk_mined_cands *c, const fk_mined_query *q, const uint8_t *ca, fk_mined_dist dist) {
    int64_t best = INT64_MAX;
    int32_t best_id = INT32_MAX;
    for (int64_t delta = 0; delta <= best; delta++) {
        int64_t lens[2] = {(int64_t)q->na - delta, (int64_t)q->na + delta};
        if (lens[0] < 0 && lens[1] > c->max_len) break;
        for (int s = 0; s < (delta ? 2 : 1); s++) {
            int64_t L = lens[s];
            if (L < 0 || L > c->max_len) continue;
            for (int64_t x = c->at[L]; x < c->at[L + 1]; x++) {
                int32_t id = c->ids[x];
                int64_t thr = id < best_id ? best : best - 1;  // a higher id must be strictly nearer
                if ((delta > c->min_dist ? delta : c->min_dist) > thr) {
                    if (id > best_id) break;  // so are all the rest of this bucket
                    continue;
                }
                if (bag_bound(ca, c->counts + (size_t)x * FK_N_CLASS) > thr) continue;
                int64_t d = dist(c, q, id, (size_t)L, thr);
                if (d >= 0 && d <= thr) {
                    best = d;
                    best_id = id;
                }
            }
        }
    }
    return best_id == INT32_MAX ? -1 : best_id;
}

static inline void peq_set(uint64_t *peq, const uint8_t *p, size_t m) {
    for (size_t k = 0; k < m; k++) peq[p[k]] |= (uint64_t)1 << k;
}
static inline void peq_clear(uint64_t *peq, const uint8_t *p, size_t m) {
    for (size_t k = 0; k < m; k++) peq[p[k]] = 0;
}


// ---------------------------------------------------------------- FuseLLM's token strings
// (align_fusellm.c; FK_ALIGN_FUSELLM and FK_VMAP_FUSELLM*, fusion.md §2-3.)
// The code points of token id's vocabulary string (what transformers' convert_ids_to_tokens
// gives) with every word marker of its tokenizer's kind removed: the strings FuseLLM's dtw
// compares. Writes at most cap; returns the count.
size_t fk_fusellm_token(const fk_tokenizer *t, int32_t id, uint32_t *buf, size_t cap);
// Match vectors of a pattern of code points, for the bit-parallel distance: code points below
// 512 in a table, the others hashed. Zero it once; set and clear a pattern around its uses.
typedef struct {
    uint64_t lo[512];
    uint32_t key[128];
    uint64_t val[128];
} fk_cpeq;
// Loads pattern p (m code points); false (nothing loaded) when m > 64.
bool fk_cpeq_set(fk_cpeq *q, const uint32_t *p, size_t m);
void fk_cpeq_clear(fk_cpeq *q, const uint32_t *p, size_t m);
// Levenshtein distance over code points, a (na) against b (nb): with q holding a (fk_cpeq_set
// returned true) bit-parallel, stopping at a value > bound once it must exceed bound;
// otherwise (q NULL) dynamic programming, -1 when out of memory.
int64_t fk_cp_distance(const fk_cpeq *q, const uint32_t *a, size_t na, const uint32_t *b, size_t nb, int64_t bound);
// FuseLLM's test for using the source's distribution at a target token aligned to exactly one
// source token (transform_step_logits): the source string, its marker replaced by the
// target's, equals the target string (first: the sequence's first target token, where a
// byte-level source gets the target's marker added when the target token has one and it has
// not), or vmap (FuseLLM's "soft" mode; may be NULL) maps it to the target token.
bool fk_fusellm_agree(const fk_tokenizer *st, int32_t sid, const fk_tokenizer *tt, int32_t tid, bool first, const int32_t *vmap);
// FuseLLM's vocabulary map over token strings (vocab_mapping.py): every source token whose
// string, marker replaced, is a target token's string maps to it; with mined, the others to
// the target token at minimum edit distance over code points (ties: lowest id); else -1.
fk_status fk_vmap_build_fusellm(const fk_tokenizer *src, const fk_tokenizer *tgt, bool mined, int32_t **map);

#endif
