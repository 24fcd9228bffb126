// Internal to src/fuse: the bit-parallel edit distance kernel shared by token alignment
// (align.c) and the MinED vocabulary map (align_vmap.c).
#ifndef FK_FUSE_ALIGN_INTERNAL_H
#define FK_FUSE_ALIGN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

// Bit-parallel Levenshtein distance (Myers 1999, in Hyyrö's formulation for the global
// distance): the pattern's columns of the DP matrix are held as bit vectors of vertical
// deltas, one text byte per step. peq[c] has bit k set where pattern[k] == c; m <= 64.
// Stops early, returning a value > bound, once the distance must exceed bound.
static inline int64_t myers_bounded(const uint64_t *peq, size_t m, const uint8_t *t, size_t n, int64_t bound) {
    if (m == 0) return (int64_t)n;
    uint64_t pv = ~(uint64_t)0, mv = 0, last = (uint64_t)1 << (m - 1);
    int64_t score = (int64_t)m;
    for (size_t j = 0; j < n; j++) {
        uint64_t eq = peq[t[j]];
        uint64_t xv = eq | mv;
        uint64_t xh = (((eq & pv) + pv) ^ pv) | eq;
        uint64_t ph = mv | ~(xh | pv);
        uint64_t mh = pv & xh;
        if (ph & last) score++;
        else if (mh & last) score--;
        ph = (ph << 1) | 1;  // row 0 of the matrix is 0, 1, 2, ...: +1 per column
        mh <<= 1;
        pv = mh | ~(xv | ph);
        mv = ph & xv;
        // the last row can fall by at most one per remaining column
        if (score - (int64_t)(n - 1 - j) > bound) return bound + 1;
    }
    return score;
}

static inline void peq_set(uint64_t *peq, const uint8_t *p, size_t m) {
    for (size_t k = 0; k < m; k++) peq[p[k]] |= (uint64_t)1 << k;
}
static inline void peq_clear(uint64_t *peq, const uint8_t *p, size_t m) {
    for (size_t k = 0; k < m; k++) peq[p[k]] = 0;
}

#endif
