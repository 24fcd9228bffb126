// ULD, Universal Logit Distillation (Boizard et al. 2024, arXiv 2402.12030), as a fusion
// objective: the distance between the student's and the teacher's next-token distributions
// taken on their probabilities sorted in decreasing order (the Wasserstein-1 distance under a
// cost that ignores which token is which), so that no vocabulary map is needed. Written once
// over a scalar type and included by ops_impl.h (float in the library, double in test_ops).
//
// At a position whose teacher row has k entries (sorted t_(0) >= ... >= t_(k-1); an empty row
// is the one-hot [1]) and leaves mass r = 1 - sum t (the tail of --teacher-tail rows; 0 when the
// row sums to 1 within FK_TAIL_MIN), with the student's k largest probabilities
// s_(0) >= ... >= s_(k-1) and its remaining mass R = 1 - sum_{i<k} s_(i):
//   uld = sum_{i<k} |s_(i) - t_(i)| + |R - r|.
// With r = 0 this is the paper's loss with the teacher padded with zeros past its top k (the
// student's rest matched against zeros sums to R). With a tail, the teacher's r lies on
// tokens of unknown probabilities, each at most t_(k-1): |R - r| matches the two rests as one
// lumped entry (a lower bound of the exact sum over sorted ranks >= k). If k exceeds V, the
// teacher's entries past V count in full (the student has zeros there).
// Gradient with respect to the probabilities: sign(s_(i) - t_(i)) at the student's top k,
// sign(R - r) elsewhere (sign(0) = 0), carried through the softmax: dz_j = s_j (g_j - sum_m g_m s_m).
// The student's top k is a selection (a k-entry heap over the V probabilities), not a sort.

// Heap order: a before b when x[a] < x[b], ties by the higher index first (so the kept top k
// prefers lower indices on ties).
static inline int FK_OP(uld_less)(const real *x, int64_t a, int64_t b) { return x[a] < x[b] || (x[a] == x[b] && a > b); }

static inline void FK_OP(uld_sift)(const real *x, int64_t *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && FK_OP(uld_less)(x, h[l], h[m])) m = l;
        if (r < n && FK_OP(uld_less)(x, h[r], h[m])) m = r;
        if (m == i) return;
        int64_t t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

// idx (k) gets the indices of the k largest entries of x (V), largest first. k <= V.
static inline void FK_OP(uld_topk)(int64_t *idx, const real *x, int64_t V, int64_t k) {
    if (k <= 0) return;
    for (int64_t j = 0; j < k; j++) idx[j] = j;
    for (int64_t i = k / 2 - 1; i >= 0; i--) FK_OP(uld_sift)(x, idx, k, i);
    for (int64_t j = k; j < V; j++)
        if (FK_OP(uld_less)(x, idx[0], j)) { idx[0] = j; FK_OP(uld_sift)(x, idx, k, 0); }
    for (int64_t n = k - 1; n > 0; n--) {  // heap sort: the smallest goes last
        int64_t t = idx[0]; idx[0] = idx[n]; idx[n] = t;
        FK_OP(uld_sift)(x, idx, n, 0);
    }
}

// ts gets row i's teacher probabilities, largest first (shell sort: rows are short), and *rest
// the mass the row leaves; returns the row's length (1 for an empty row: the one-hot [1]).
static inline int64_t FK_OP(uld_teacher)(real *ts, const fk_sparse_dist *t, int64_t i, real *rest) {
    int64_t r0 = t->row[i], k = t->row[i + 1] - r0;
    *rest = 0;
    if (k == 0) { ts[0] = 1; return 1; }
    real ps = 0;
    for (int64_t e = 0; e < k; e++) { ts[e] = (real)t->p[r0 + e]; ps += ts[e]; }
    for (int64_t gap = k / 2; gap > 0; gap /= 2)
        for (int64_t a = gap; a < k; a++) {
            real v = ts[a];
            int64_t b = a;
            for (; b >= gap && ts[b - gap] < v; b -= gap) ts[b] = ts[b - gap];
            ts[b] = v;
        }
    if (1 - ps > FK_TAIL_MIN) *rest = 1 - ps;
    return k;
}

static inline real FK_OP(uld_sign)(real v) { return v > 0 ? 1 : v < 0 ? -1 : 0; }

// The ULD distance of one row x (V): probabilities when probs, else logits (their softmax is
// taken over the selected entries only). ts (k), rest: uld_teacher's. idx: k scratch entries.
static inline real FK_OP(uld_row)(const real *x, int64_t V, int probs, const real *ts, int64_t k, real rest, int64_t *idx) {
    int64_t ks = k < V ? k : V;
    FK_OP(uld_topk)(idx, x, V, ks);  // the softmax keeps the order: the logits' top k is the probabilities'
    real lse = 0;
    if (!probs) {
        real mx = fk_row_max_real((real *)x, V);  // read only
        lse = (real)fk_lse_in_double(mx, fk_row_sumexp_real((real *)x, V, mx));
    }
    real d = 0, S = 0;
    for (int64_t i = 0; i < ks; i++) {
        real q = probs ? x[idx[i]] : FK_EXP(x[idx[i]] - lse);
        d += fabs(q - ts[i]);
        S += q;
    }
    for (int64_t i = ks; i < k; i++) d += ts[i];
    return d + fabs(1 - S - rest);
}

// flosses (N) get each row's ULD distance (0 where targets[i] < 0). x (N,V): probabilities when
// probs, else logits. Scratch: nthr slices of kmax entries in iscr and rscr, kmax >= every
// row's length and >= 1.
static inline void FK_OP(uld_forward)(real *flosses, const real *x, const int32_t *targets, const fk_sparse_dist *t, int64_t N,
                                      int64_t V, int probs, int64_t *iscr, real *rscr, int64_t kmax, int nthr) {
    #pragma omp parallel num_threads(nthr) if (N * V > FK_OMP_MIN_WORK)
    {
        int64_t *idx = iscr + (int64_t)omp_get_thread_num() * kmax;
        real *ts = rscr + (int64_t)omp_get_thread_num() * kmax;
        #pragma omp for
        for (int64_t i = 0; i < N; i++) {
            if (targets[i] < 0) { flosses[i] = 0; continue; }
            real rest;
            int64_t k = FK_OP(uld_teacher)(ts, t, i, &rest);
            flosses[i] = FK_OP(uld_row)(x + i * V, V, probs, ts, k, rest, idx);
        }
    }
}

// The gradient of lambda * CE(target) + (1 - lambda) * uld with respect to the logits, from the
// row's probabilities p (V), in place, times scale; an ignored row becomes zero. idx, ts: kmax
// scratch entries each.
static inline void FK_OP(uld_backward_row)(real *p, int64_t i, const int32_t *targets, const fk_sparse_dist *t, real lambda,
                                           int64_t V, real scale, int64_t *idx, real *ts) {
    if (targets[i] < 0) { memset(p, 0, (size_t)V * sizeof(real)); return; }
    real rest;
    int64_t k = FK_OP(uld_teacher)(ts, t, i, &rest), ks = k < V ? k : V;
    FK_OP(uld_topk)(idx, p, V, ks);
    real S = 0, G = 0;  // G = sum_m g_m s_m
    for (int64_t e = 0; e < ks; e++) {
        real q = p[idx[e]], g = FK_OP(uld_sign)(q - ts[e]);
        S += q;
        G += g * q;
        ts[e] = g;
    }
    real gr = FK_OP(uld_sign)(1 - S - rest), ce = scale * lambda, w = scale * (1 - lambda);
    G += gr * (1 - S);
    for (int64_t e = 0; e < ks; e++) ts[e] = p[idx[e]] * (ce + w * (ts[e] - G));  // the top k's, kept aside
    real a = ce + w * (gr - G);
    for (int64_t j = 0; j < V; j++) p[j] *= a;
    for (int64_t e = 0; e < ks; e++) p[idx[e]] = ts[e];
    p[targets[i]] -= ce;
}

// All N rows of probs (N,V), as uld_backward_row; scratch as uld_forward's.
static inline void FK_OP(uld_backward)(real *probs, const int32_t *targets, const fk_sparse_dist *t, real lambda, int64_t N,
                                       int64_t V, real scale, int64_t *iscr, real *rscr, int64_t kmax, int nthr) {
    #pragma omp parallel num_threads(nthr) if (N * V > FK_OMP_MIN_WORK)
    {
        int64_t *idx = iscr + (int64_t)omp_get_thread_num() * kmax;
        real *ts = rscr + (int64_t)omp_get_thread_num() * kmax;
        #pragma omp for
        for (int64_t i = 0; i < N; i++) FK_OP(uld_backward_row)(probs + i * V, i, targets, t, lambda, V, scale, idx, ts);
    }
}
