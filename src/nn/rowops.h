// Internal: the one log-sum-exp / log-softmax kernel over a row of V logits, used by the
// engine's cross-entropy (nn), evaluation (eval), extraction and ensembles (fuse) and fold's
// KL probes, so that every figure comes from the same arithmetic. Included as "nn/rowops.h".
//
// Three instances of the same code, named by suffix:
//   _exact  float logits, exp in double, summed in double in index order (evaluation: loss,
//           probes, KL, ensembles)
//   _fast   float logits, fk_fast_expf summed in float in vector lanes (the engine's float
//           cross-entropy; extraction, whose stores must not change)
//   _d      double logits, exp in double, vector lanes (the engine instantiated for double by
//           the finite-difference tests)
// A row's lse is max + log(sum_j exp(z_j - max)); fk_lse_in_double and fk_lse_in_float are its
// two roundings (callers keep the one their stored or compared figures were made with).
#ifndef FK_NN_ROWOPS_H
#define FK_NN_ROWOPS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef FK_FAST_EXPF
#define FK_FAST_EXPF
// exp for float that the compiler vectorizes: exp(x) = 2^k exp(r), r = x - k ln 2, |r| <= ln2/2,
// exp(r) by its degree-6 Taylor polynomial (relative error < 2e-7). Inputs are clamped to
// [-87, 88] so 2^k stays a normal float; exp(-87) ~ 1.6e-38 stands in for underflow.
static inline float fk_fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds x log2(e) to an integer k
    float kf = x * 1.44269504088896341f + shifter;
    int32_t kb;
    memcpy(&kb, &kf, 4);
    kf -= shifter;
    int32_t k = kb - 0x4B400000;
    float r = x - kf * 0.693359375f - kf * -2.12194440e-4f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f + r * (8.3333338e-3f + r * 1.3888889e-3f)))));
    uint32_t bits = (uint32_t)(k + 127) << 23;  // unsigned: a NaN input gives a k whose shift would overflow an int
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}
// tanh through the fast exp: 1 - 2 / (exp(2x) + 1) (absolute error ~1e-7).
static inline float fk_fast_tanhf(float x) { return 1.0f - 2.0f / (fk_fast_expf(2.0f * x) + 1.0f); }
#endif

// The row kernels for elements T, sums in ACC, exponential EXP; VEC 1 lets the sums run in
// vector lanes (a different, fixed order), VEC 0 keeps index order. A macro so that the three
// instances above are one text.
//   fk_row_max_S(z, V)        the largest of z[0..V)
//   fk_row_sumexp_S(z, V, mx) sum_j EXP(z_j - mx)
//   fk_row_exp_S(z, V, mx)    z_j = EXP(z_j - mx) in place, returns their sum
//   fk_row_lse_S(z, V)        max + log(sumexp), rounded to ACC
#define FK_ROW_KERNELS(S, T, ACC, EXP, VEC)                                                        \
    static inline T fk_row_max_##S(const T *z, int64_t V) {                                      \
        T mx = z[0];                                                                             \
        _Pragma("omp simd reduction(max : mx)")                                                  \
        for (int64_t j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;                              \
        return mx;                                                                               \
    }                                                                                            \
    static inline ACC fk_row_sumexp_##S(const T *z, int64_t V, T mx) {                           \
        ACC s = 0;                                                                               \
        if (VEC) {                                                                               \
            _Pragma("omp simd reduction(+ : s)")                                                 \
            for (int64_t j = 0; j < V; j++) s += EXP((ACC)z[j] - (ACC)mx);                       \
        } else {                                                                                 \
            for (int64_t j = 0; j < V; j++) s += EXP((ACC)z[j] - (ACC)mx);                       \
        }                                                                                        \
        return s;                                                                                \
    }                                                                                            \
    static inline ACC fk_row_exp_##S(T *z, int64_t V, T mx) {                                    \
        ACC s = 0;                                                                               \
        _Pragma("omp simd reduction(+ : s)")                                                     \
        for (int64_t j = 0; j < V; j++) { z[j] = (T)EXP((ACC)z[j] - (ACC)mx); s += z[j]; }       \
        return s;                                                                                \
    }                                                                                            \
    static inline ACC fk_row_lse_##S(const T *z, int64_t V) {                                    \
        T mx = fk_row_max_##S(z, V);                                                             \
        return (ACC)(mx + log(fk_row_sumexp_##S(z, V, mx)));                                     \
    }

FK_ROW_KERNELS(exact, float, double, exp, 0)
FK_ROW_KERNELS(fast, float, float, fk_fast_expf, 1)
FK_ROW_KERNELS(d, double, double, exp, 1)

// lse from a row's max and sum of exponentials, in double (what the engine's cross-entropy and
// the ensemble use) ...
static inline double fk_lse_in_double(double mx, double sum) { return mx + log(sum); }
// ... or in float, max + (float)log(sum) (log-probabilities kept in float: KL probes, stores).
static inline float fk_lse_in_float(float mx, double sum) { return mx + (float)log(sum); }

// Log-softmax of a row in place, in float: z_j -= lse (the exact sum, the lse in float).
static inline void fk_row_log_softmax_exact(float *z, int64_t V) {
    float mx = fk_row_max_exact(z, V), lse = fk_lse_in_float(mx, fk_row_sumexp_exact(z, V, mx));
    for (int64_t v = 0; v < V; v++) z[v] -= lse;
}

// The engine's instance for its element type `real` (fast for float, libm exp for double).
#define fk_row_max_real(z, V) _Generic((z), float *: fk_row_max_fast, double *: fk_row_max_d)(z, V)
#define fk_row_sumexp_real(z, V, mx) _Generic((z), float *: fk_row_sumexp_fast, double *: fk_row_sumexp_d)(z, V, mx)
#define fk_row_exp_real(z, V, mx) _Generic((z), float *: fk_row_exp_fast, double *: fk_row_exp_d)(z, V, mx)

#endif
