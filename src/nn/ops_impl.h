// The ops, each a forward/backward pair, written once over a scalar type.
// Instantiated for float by ops.c (the library) and for double by the tests, whose
// finite-difference checks run in double precision against the same code.
// Before including, define: real (the scalar), FK_OP(name) (the instantiated name),
// FK_GEMM and FK_GEMV (cblas_sgemm/sgemv or cblas_dgemm/dgemv), FK_GEMM_ATTN (attention's
// score and value products: cblas_sgemm or cblas_dgemm, full precision under bf16 too), FK_EXP,
// FK_TANH and FK_ERF (exp/tanh/erf for real); optionally FK_GEMM_BIAS (a product with its bias
// added where it is stored) and FK_GEMM_BACKWARD (a layer's two backward products at once).
// Conventions: outputs first, then inputs, then weights, then dimensions; a shape comment
// on top of each op.
// Backward convention: every backward ADDS into the gradients it produces, of its inputs and of
// its parameters alike (a caller zeroes a gradient buffer once, before the first op adds to it;
// a value used twice just gets both contributions). The exceptions work in place, as their
// forwards do: rope_apply, qknorm_backward and the cross-entropy backwards turn the gradient
// they are given into the gradient of their input, in the same buffer.

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "base/par.h"

#include "fusekit/base.h"

#define FK_OMP_MIN_WORK 16384  // below this many elements a loop stays on one thread
// Soft cross-entropy rows whose teacher mass falls short of 1 by more than FK_TAIL_MIN keep the
// rest on a tail class; 1 - S is floored at FK_TAIL_FLOOR.
#define FK_TAIL_MIN 1e-5
#define FK_TAIL_FLOOR 1e-30

#include "nn/rowops.h"  // fk_fast_expf and the log-sum-exp row kernel

// ------------------------------------------------------------------ linear
// inp is (N,C), w is (OC,C), b is (OC) or NULL; out is (N,OC): out = inp w^T + b
static inline void FK_OP(matmul_forward)(real *out, const real *inp, const real *w, const real *b,
                                         int64_t N, int64_t C, int64_t OC) {
#ifdef FK_GEMM_BIAS
    if (N > 1 && b) {  // the bias added as the product is stored, where the GEMM can
        FK_GEMM_BIAS((int)N, (int)OC, (int)C, inp, (int)C, w, (int)C, b, out, (int)OC);
        return;
    }
#endif
    if (N == 1)  // one token (generation): a matrix-vector product, without GEMM's packing
        FK_GEMV(CblasRowMajor, CblasNoTrans, (int)OC, (int)C, 1, w, (int)C, inp, 1, 0, out, 1);
    else
        FK_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)OC, (int)C, 1, inp, (int)C, w, (int)C, 0, out, (int)OC);
    if (b) {
        #pragma omp parallel for if (N * OC > FK_OMP_MIN_WORK)
        for (int64_t i = 0; i < N; i++)
            for (int64_t o = 0; o < OC; o++) out[i * OC + o] += b[o];
    }
}

// dout is (N,OC); dinp (N,C) (NULL: skipped) is dinp_beta dinp + dout w (dinp_beta 1 adds, as
// every backward does; 0 overwrites, so a caller need not zero it first), dw (OC,C) and db (OC)
// are added to.
static inline void FK_OP(matmul_backward_beta)(real *dinp, real *dw, real *db, const real *dout, const real *inp,
                                               const real *w, int64_t N, int64_t C, int64_t OC, real dinp_beta) {
#ifdef FK_GEMM_BACKWARD
    if (dinp && dw)  // both products at once (the library rounds dout once for both under bf16)
        FK_GEMM_BACKWARD((int)N, (int)C, (int)OC, dout, inp, w, dinp_beta, dinp, dw);
    else
#endif
    {
        if (dinp)
            FK_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)C, (int)OC, 1, dout, (int)OC, w, (int)C, dinp_beta, dinp,
                    (int)C);
        if (dw)
            FK_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)C, (int)N, 1, dout, (int)OC, inp, (int)C, 1, dw, (int)C);
    }
    if (db) {
        // columns split across threads, rows summed in order: deterministic and vectorized
        #pragma omp parallel for if (N * OC > FK_OMP_MIN_WORK)
        for (int64_t o0 = 0; o0 < OC; o0 += 64) {
            int64_t o1 = o0 + 64 < OC ? o0 + 64 : OC;
            real acc[64] = {0};
            for (int64_t i = 0; i < N; i++)
                for (int64_t o = o0; o < o1; o++) acc[o - o0] += dout[i * OC + o];
            for (int64_t o = o0; o < o1; o++) db[o] += acc[o - o0];
        }
    }
}

// dout is (N,OC); dinp (N,C) (NULL: skipped), dw (OC,C) and db (OC) are added to.
static inline void FK_OP(matmul_backward)(real *dinp, real *dw, real *db, const real *dout, const real *inp,
                                          const real *w, int64_t N, int64_t C, int64_t OC) {
    FK_OP(matmul_backward_beta)(dinp, dw, db, dout, inp, w, N, C, OC, 1);
}

// ------------------------------------------------------------------ embeddings
// tokens is (N) with positions pos[i] (NULL: no position table); wte is (V,C), wpe is (P,C);
// out is (N,C): out[i] = wte[tokens[i]] + wpe[pos[i]]
static inline void FK_OP(encoder_forward)(real *out, const int32_t *tokens, const int32_t *pos,
                                          const real *wte, const real *wpe, int64_t N, int64_t C) {
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *e = wte + (int64_t)tokens[i] * C;
        real *o = out + i * C;
        if (wpe) {
            const real *p = wpe + (int64_t)pos[i] * C;
            for (int64_t c = 0; c < C; c++) o[c] = e[c] + p[c];
        } else {
            memcpy(o, e, (size_t)C * sizeof(real));
        }
    }
}

// dout is (N,C); dwte (V,C) and dwpe (P,C) are added to. Serial over rows so that repeated
// tokens accumulate deterministically.
static inline void FK_OP(encoder_backward)(real *dwte, real *dwpe, const real *dout, const int32_t *tokens,
                                           const int32_t *pos, int64_t N, int64_t C) {
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
        int64_t c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int64_t i = 0; i < N; i++) {
            real *e = dwte + (int64_t)tokens[i] * C;
            const real *d = dout + i * C;
            for (int64_t c = c0; c < c1; c++) e[c] += d[c];
            if (dwpe) {
                real *p = dwpe + (int64_t)pos[i] * C;
                for (int64_t c = c0; c < c1; c++) p[c] += d[c];
            }
        }
    }
}

// ------------------------------------------------------------------ LayerNorm
// inp is (N,C), w and b are (C) (b may be NULL); out is (N,C); mean and rstd are (N)
static inline void FK_OP(layernorm_forward)(real *out, real *mean, real *rstd, const real *inp, const real *w,
                                            const real *b, int64_t N, int64_t C, real eps) {
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *x = inp + i * C;
        real m = 0, v = 0;
        #pragma omp simd reduction(+ : m)
        for (int64_t c = 0; c < C; c++) m += x[c];
        m /= (real)C;
        #pragma omp simd reduction(+ : v)
        for (int64_t c = 0; c < C; c++) { real d = x[c] - m; v += d * d; }
        v /= (real)C;
        real s = 1 / sqrt(v + eps);
        real *o = out + i * C;
        for (int64_t c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + (b ? b[c] : 0);
        if (mean) mean[i] = m;
        rstd[i] = s;
    }
}

// dout is (N,C); dinp (N,C), dw and db (C) are added to (db may be NULL).
static inline void FK_OP(layernorm_backward)(real *dinp, real *dw, real *db, const real *dout, const real *inp,
                                             const real *w, const real *mean, const real *rstd, int64_t N, int64_t C) {
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *x = inp + i * C, *d = dout + i * C;
        real m = mean[i], s = rstd[i], dmean = 0, dxhat_xhat = 0;
        #pragma omp simd reduction(+ : dmean, dxhat_xhat)
        for (int64_t c = 0; c < C; c++) {
            real dxhat = d[c] * w[c], xhat = (x[c] - m) * s;
            dmean += dxhat;
            dxhat_xhat += dxhat * xhat;
        }
        dmean /= (real)C;
        dxhat_xhat /= (real)C;
        real *di = dinp + i * C;
        for (int64_t c = 0; c < C; c++) {
            real xhat = (x[c] - m) * s;
            di[c] += (d[c] * w[c] - dmean - xhat * dxhat_xhat) * s;
        }
    }
    // parameter gradients: columns split across threads, rows summed in order (deterministic)
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
        int64_t c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int64_t i = 0; i < N; i++) {
            const real *x = inp + i * C, *d = dout + i * C;
            for (int64_t c = c0; c < c1; c++) {
                dw[c] += d[c] * (x[c] - mean[i]) * rstd[i];
                if (db) db[c] += d[c];
            }
        }
    }
}

// ------------------------------------------------------------------ RMSNorm
// inp is (N,C), w is (C); out is (N,C); rstd is (N) (may be NULL):
// out = inp / sqrt(mean(inp^2) + eps) * (off + w). off is 0 for Llama-style weights, 1 for
// Hugging Face Gemma's (which store w - 1).
static inline void FK_OP(rmsnorm_forward)(real *out, real *rstd, const real *inp, const real *w,
                                          int64_t N, int64_t C, real eps, real off) {
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *x = inp + i * C;
        real ss = 0;
        #pragma omp simd reduction(+ : ss)
        for (int64_t c = 0; c < C; c++) ss += x[c] * x[c];
        real s = 1 / sqrt(ss / (real)C + eps);
        real *o = out + i * C;
        for (int64_t c = 0; c < C; c++) o[c] = x[c] * s * (off + w[c]);
        if (rstd) rstd[i] = s;
    }
}

// dout is (N,C); dinp (N,C) and dw (C) are added to.
static inline void FK_OP(rmsnorm_backward)(real *dinp, real *dw, const real *dout, const real *inp, const real *w,
                                           const real *rstd, int64_t N, int64_t C, real off) {
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *x = inp + i * C, *d = dout + i * C;
        real s = rstd[i], dot = 0;
        #pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; c++) dot += d[c] * (off + w[c]) * x[c];
        real k = dot * s * s * s / (real)C;
        real *di = dinp + i * C;
        for (int64_t c = 0; c < C; c++) di[c] += d[c] * (off + w[c]) * s - x[c] * k;
    }
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
        int64_t c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int64_t i = 0; i < N; i++) {
            const real *x = inp + i * C, *d = dout + i * C;
            for (int64_t c = c0; c < c1; c++) dw[c] += d[c] * x[c] * rstd[i];
        }
    }
}

// ------------------------------------------------------------------ QK-norm
// qkv is (N, QKVD) with QKVD = nq*dq + 2*nk*dk: nq query groups of dq values, nk key groups of dk
// values, then the values. Each group of every row is RMS-normalised in place over its values and
// multiplied by (off + wq) for query groups, (off + wk) for key groups (wq is (dq), wk (dk), shared
// across groups); values untouched. Per head (Gemma 3, Qwen3): nq = H, nk = KVH, dq = dk = hd.
// Whole projections (OLMo 2): nq = nk = 1, dq = H*hd, dk = KVH*hd. ln (StableLM 2 12B's per-head
// LayerNorm): each group's mean is removed first (a LayerNorm without bias); own: every group has its
// own weights, wq (nq*dq) and wk (nk*dk), group g's at its offset among its kind's. pre (N, nq*dq + nk*dk)
// keeps the inputs (less their means when ln) and rstd (N, nq+nk) the scales for the backward; either
// may be NULL (inference).
#ifndef FK_QK_GROUPS
#define FK_QK_GROUPS
typedef struct { int64_t nq, dq, nk, dk; bool ln, own; } fk_qk_groups;
// Group g of a row: its offset in the row (qkv and pre alike) and its width.
static inline int64_t fk_qk_group(const fk_qk_groups *G, int64_t g, int64_t *width) {
    *width = g < G->nq ? G->dq : G->dk;
    return g < G->nq ? g * G->dq : G->nq * G->dq + (g - G->nq) * G->dk;
}
// Offset of group g's weights in wq (query groups) or wk: 0 when the groups share them.
static inline int64_t fk_qk_weight(const fk_qk_groups *G, int64_t g) {
    return !G->own ? 0 : g < G->nq ? g * G->dq : (g - G->nq) * G->dk;
}
#endif

static inline void FK_OP(qknorm_forward)(real *qkv, real *pre, real *rstd, const real *wq, const real *wk, int64_t N,
                                         const fk_qk_groups *G, real eps, real off) {
    int64_t QKVD = G->nq * G->dq + 2 * G->nk * G->dk, PD = G->nq * G->dq + G->nk * G->dk, NG = G->nq + G->nk;
    #pragma omp parallel for if (N * PD > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++)
        for (int64_t h = 0; h < NG; h++) {
            int64_t n, at = fk_qk_group(G, h, &n);
            real *x = qkv + i * QKVD + at, ss = 0, mean = 0;
            const real *w = (h < G->nq ? wq : wk) + fk_qk_weight(G, h);
            for (int64_t e = 0; G->ln && e < n; e++) mean += x[e];
            for (int64_t e = 0; G->ln && e < n; e++) x[e] -= mean / (real)n;
            if (pre) memcpy(pre + i * PD + at, x, (size_t)n * sizeof(real));
            for (int64_t e = 0; e < n; e++) ss += x[e] * x[e];
            real s = 1 / sqrt(ss / (real)n + eps);
            for (int64_t e = 0; e < n; e++) x[e] = x[e] * s * (off + w[e]);
            if (rstd) rstd[i * NG + h] = s;
        }
}

// In place: dqkv (N, QKVD) holds the gradient of the normalised q and k groups; those become
// the gradient of the inputs (values untouched). dwq (dq; own: nq*dq), dwk (dk; own: nk*dk) are added to.
static inline void FK_OP(qknorm_backward)(real *dqkv, real *dwq, real *dwk, const real *pre, const real *wq,
                                          const real *wk, const real *rstd, int64_t N, const fk_qk_groups *G, real off) {
    int64_t QKVD = G->nq * G->dq + 2 * G->nk * G->dk, PD = G->nq * G->dq + G->nk * G->dk, NG = G->nq + G->nk;
    // weight gradients first (they read dqkv before it is overwritten): columns across threads,
    // rows and groups summed in order (deterministic); q's columns, then k's (own weights: a
    // column is one group's)
    int64_t WQ = G->own ? G->nq * G->dq : G->dq, WK = G->own ? G->nk * G->dk : G->dk;
    #pragma omp parallel for if (N * PD > FK_OMP_MIN_WORK)
    for (int64_t c = 0; c < WQ + WK; c++) {
        bool k = c >= WQ;
        int64_t j = k ? c - WQ : c, e = j, h0 = k ? G->nq : 0, h1 = k ? NG : G->nq, d = k ? G->dk : G->dq;
        if (G->own) { h0 += j / d; h1 = h0 + 1; e = j % d; }
        real a = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t h = h0; h < h1; h++) {
                int64_t n, at = fk_qk_group(G, h, &n);
                a += dqkv[i * QKVD + at + e] * pre[i * PD + at + e] * rstd[i * NG + h];
            }
        if (k) dwk[j] += a; else dwq[j] += a;
    }
    #pragma omp parallel for if (N * PD > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++)
        for (int64_t h = 0; h < NG; h++) {
            int64_t n, at = fk_qk_group(G, h, &n);
            real *d = dqkv + i * QKVD + at, s = rstd[i * NG + h], dot = 0, sum = 0;
            const real *x = pre + i * PD + at, *w = (h < G->nq ? wq : wk) + fk_qk_weight(G, h);
            for (int64_t e = 0; e < n; e++) dot += d[e] * (off + w[e]) * x[e];
            for (int64_t e = 0; G->ln && e < n; e++) sum += d[e] * (off + w[e]);  // LayerNorm: the mean's path
            real k = dot * s * s * s / (real)n, m = sum * s / (real)n;
            for (int64_t e = 0; e < n; e++) d[e] = d[e] * (off + w[e]) * s - x[e] * k - m;
        }
}

// ------------------------------------------------------------------ rotary positions
// qkv is (N, QKVD) with QKVD = (H + 2*KVH)*hd; rotates the first rd dims (even, <= hd) of the
// q and k heads of row i in place by position pos[i], Hugging Face "rotate half" convention
// over them: for d < rd/2 the pair (x[d], x[d+rd/2]) turns by the angle of table column d;
// dims rd .. hd-1 pass unchanged (partial rotary: GPT-NeoX, Phi-2, StableLM). cos and sin are
// (P, rd/2). sign = +1 forward, -1 backward (the inverse rotation carries the gradient back).
static inline void FK_OP(rope_apply)(real *qkv, const float *cos_t, const float *sin_t, const int32_t *pos,
                                     int64_t N, int64_t H, int64_t KVH, int64_t hd, int64_t rd, real sign) {
    int64_t QKVD = (H + 2 * KVH) * hd, half = rd / 2;
    #pragma omp parallel for if (N * QKVD > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const float *cs = cos_t + (int64_t)pos[i] * half, *sn = sin_t + (int64_t)pos[i] * half;
        for (int64_t h = 0; h < H + KVH; h++) {
            real *x = qkv + i * QKVD + h * hd;
            for (int64_t d = 0; d < half; d++) {
                real c = cs[d], s = sign * sn[d], x1 = x[d], x2 = x[d + half];
                x[d] = x1 * c - x2 * s;
                x[d + half] = x2 * c + x1 * s;
            }
        }
    }
}

// ------------------------------------------------------------------ causal attention
// One implementation for every caller: B sequences of n new query rows at positions p0 .. p0+n-1,
// over the keys and values at positions 0 .. p0+n-1. A training or evaluation forward has p0 = 0
// and reads q, k and v from its own qkv rows; a KV-cache step has the new rows' q and reads k
// and v from the cache (the new rows' keys already written there). Head h reads kv head
// h / (H/KVH). Scores are s = scale * q.k; with softcap > 0 they become softcap * tanh(s / softcap)
// (Gemma 2) before the mask. With ALiBi, head h then adds slope_h * (j - i), a constant per
// score: the backward (through the kept probabilities) is unchanged. Query at position i sees
// keys j <= i, and with window > 0 only those with i - j < window (sliding-window layers).
#ifndef FK_ATT_DIMS
#define FK_ATT_DIMS
typedef struct {
    int64_t B, n, p0;      // sequences, new rows per sequence, position of the first new row
    int64_t H, KVH, hd;    // query heads, key/value heads, head size
    int64_t q_stride;      // between query rows: q of row i of sequence b, head h at q + (b*n + i)*q_stride + h*hd
    int64_t kv_stride;     // between key rows (values likewise): key j of sequence b at k + b*kv_seq + j*kv_stride
    int64_t kv_seq;        // between the sequences' keys
    int64_t window;        // 0: full causal attention
    const float *alibi;    // (H) ALiBi slopes of the query heads, or NULL (fk_alibi_slopes)
} fk_att_dims;

// out is (H): the ALiBi slopes of H heads with maximum bias m, as llama.cpp's max_alibi_bias and
// MPT's build_mpt_alibi_tensor(alibi_bias_max) compute them. With n = 2^floor(log2 H), head h < n
// has 2^(-m (h+1) / n) and head h >= n has 2^(-m (2 (h-n) + 1) / (2n)): MPT's interleaving of the
// next power of two's slopes is this same sequence, and with m = 8 so is BLOOM's/Falcon's
// build_alibi_tensor. Computed in double, rounded to float.
static inline void fk_alibi_slopes(float *out, int64_t H, double m) {
    int64_t n = 1;
    while (2 * n <= H) n *= 2;
    for (int64_t h = 0; h < H; h++)
        out[h] = (float)(h < n ? exp2(-m * (double)(h + 1) / (double)n) : exp2(-m * (double)(2 * (h - n) + 1) / (double)(2 * n)));
}
#endif
#ifndef FK_ATT_BLK
#define FK_ATT_BLK 64
#endif
// First key column a block of rows starting at position i0 needs.
static inline int64_t FK_OP(att_first_col)(int64_t i0, int64_t window) { return window > 0 && i0 - window + 1 > 0 ? i0 - window + 1 : 0; }

// out is (B,n,H*hd). probs (B,H,n,n), only with p0 = 0, keeps the softmax rows for the backward
// (entries outside the visible keys, inside the row block's columns, are zero); NULL keeps one
// row block of them in scratch. Rows are processed in blocks of FK_ATT_BLK so the masked upper
// triangle (and, with a window, the columns before it) is mostly never computed. scratch holds
// nthr slices of min(n, FK_ATT_BLK) x (p0+n) reals (unused with probs); the loop runs on at most
// nthr threads.
static inline void FK_OP(attention_forward)(real *out, real *probs, const real *q, const real *k, const real *v,
                                            const fk_att_dims *d, real scale, real softcap, real *scratch, int nthr) {
    int64_t B = d->B, n = d->n, p0 = d->p0, H = d->H, hd = d->hd, D = H * hd, G = H / d->KVH, Tk = p0 + n;
    int64_t qs = d->q_stride, ks = d->kv_stride, window = d->window;
    #pragma omp parallel num_threads(nthr)
    {
        real *mine = probs ? NULL : scratch + (int64_t)omp_get_thread_num() * (n < FK_ATT_BLK ? n : FK_ATT_BLK) * Tk;
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                const real *qb = q + b * n * qs + h * hd;
                const real *kb = k + b * d->kv_seq + (h / G) * hd, *vb = v + b * d->kv_seq + (h / G) * hd;
                real *o = out + b * n * D + h * hd;
                for (int64_t i0 = 0; i0 < n; i0 += FK_ATT_BLK) {
                    int64_t i1 = i0 + FK_ATT_BLK < n ? i0 + FK_ATT_BLK : n, rows = i1 - i0, a1 = p0 + i1;
                    int64_t j0 = FK_OP(att_first_col)(p0 + i0, window), cols = a1 - j0;
                    real *P = probs ? probs + (b * H + h) * n * Tk + i0 * Tk : mine;  // row i0 of the block
                    FK_GEMM_ATTN(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)hd, scale,
                            qb + i0 * qs, (int)qs, kb + j0 * ks, (int)ks, 0, P + j0, (int)Tk);
                    for (int64_t i = p0 + i0; i < a1; i++) {
                        int64_t lo = FK_OP(att_first_col)(i, window);
                        real *p = P + (i - p0 - i0) * Tk, mx, sum = 0;
                        if (softcap > 0)
                            for (int64_t j = lo; j <= i; j++) p[j] = softcap * FK_TANH(p[j] / softcap);
                        if (d->alibi)
                            for (int64_t j = lo; j <= i; j++) p[j] += (real)d->alibi[h] * (real)(j - i);
                        mx = p[lo];
                        #pragma omp simd reduction(max : mx)
                        for (int64_t j = lo + 1; j <= i; j++) mx = p[j] > mx ? p[j] : mx;
                        #pragma omp simd reduction(+ : sum)
                        for (int64_t j = lo; j <= i; j++) { p[j] = FK_EXP(p[j] - mx); sum += p[j]; }
                        real inv = 1 / sum;
                        #pragma omp simd
                        for (int64_t j = lo; j <= i; j++) p[j] *= inv;
                        for (int64_t j = j0; j < lo; j++) p[j] = 0;
                        for (int64_t j = i + 1; j < a1; j++) p[j] = 0;
                    }
                    FK_GEMM_ATTN(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd, (int)cols, 1,
                            P + j0, (int)Tk, vb + j0 * ks, (int)ks, 0, o + i0 * D, (int)D);
                }
            }
    }
}

// Self-attention over the rows' own q, k, v (p0 = 0): qkv is (B,T,QKVD), q heads (H*hd), k heads
// (KVH*hd), v heads (KVH*hd); alibi (H) slopes or NULL.
static inline void FK_OP(self_attention_forward)(real *out, real *probs, const real *qkv, int64_t B, int64_t T, int64_t H,
                                                 int64_t KVH, int64_t hd, real scale, real softcap, int64_t window,
                                                 const float *alibi, real *scratch, int nthr) {
    int64_t QKVD = (H + 2 * KVH) * hd;
    fk_att_dims d = {.B = B, .n = T, .p0 = 0, .H = H, .KVH = KVH, .hd = hd, .q_stride = QKVD, .kv_stride = QKVD,
                     .kv_seq = T * QKVD, .window = window, .alibi = alibi};
    FK_OP(attention_forward)(out, probs, qkv, qkv + H * hd, qkv + (H + KVH) * hd, &d, scale, softcap, scratch, nthr);
}

// dout is (B,T,H*hd); dqkv (B,T,QKVD) is added to; qkv and probs are the forward's, and so
// are scale, softcap and window (ALiBi's constant biases need nothing here). With a softcap the raw scores are recomputed (one more GEMM per
// row block) for the derivative of the tanh. scratch holds nthr slices of 2 x FK_ATT_BLK x T
// reals (a row block's dP and, with a softcap, its raw scores); the loop runs on at most nthr threads.
static inline void FK_OP(attention_backward)(real *dqkv, const real *dout, const real *qkv, const real *probs,
                                             int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t hd,
                                             real scale, real softcap, int64_t window, real *scratch, int nthr) {
    int64_t QKVD = (H + 2 * KVH) * hd, D = H * hd, G = H / KVH;
    #pragma omp parallel num_threads(nthr)
    {
        real *dS = scratch + (int64_t)omp_get_thread_num() * 2 * FK_ATT_BLK * T;  // the row block's dP, then dS
        real *S = softcap > 0 ? dS + FK_ATT_BLK * T : NULL;
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t b = 0; b < B; b++)
            for (int64_t g = 0; g < KVH; g++) {
                const real *k = qkv + b * T * QKVD + D + g * hd, *v = k + KVH * hd;
                real *dk = dqkv + b * T * QKVD + D + g * hd, *dv = dk + KVH * hd;
                for (int64_t h = g * G; h < (g + 1) * G; h++) {
                    const real *q = qkv + b * T * QKVD + h * hd, *P = probs + (b * H + h) * T * T;
                    const real *dO = dout + b * T * D + h * hd;
                    real *dq = dqkv + b * T * QKVD + h * hd;
                    for (int64_t i0 = 0; i0 < T; i0 += FK_ATT_BLK) {
                        int64_t i1 = i0 + FK_ATT_BLK < T ? i0 + FK_ATT_BLK : T, rows = i1 - i0;
                        int64_t j0 = FK_OP(att_first_col)(i0, window), cols = i1 - j0;
                        // dP = dO V^T ; dV += P^T dO  (dS row i - i0 holds row i of the block)
                        FK_GEMM_ATTN(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)hd, 1,
                                dO + i0 * D, (int)D, v + j0 * QKVD, (int)QKVD, 0, dS + j0, (int)T);
                        FK_GEMM_ATTN(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)hd, (int)rows, 1,
                                P + i0 * T + j0, (int)T, dO + i0 * D, (int)D, 1, dv + j0 * QKVD, (int)QKVD);
                        if (S)  // the raw scores of the block, as the forward computed them
                            FK_GEMM_ATTN(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)hd, scale,
                                    q + i0 * QKVD, (int)QKVD, k + j0 * QKVD, (int)QKVD, 0, S, (int)cols);
                        // softmax backward: dS = P * (dP - sum(P * dP)) [* (1 - tanh^2)] * scale
                        for (int64_t i = i0; i < i1; i++) {
                            const real *p = P + i * T;
                            real *d = dS + (i - i0) * T, dot = 0;
                            #pragma omp simd reduction(+ : dot)
                            for (int64_t j = j0; j <= i; j++) dot += p[j] * d[j];
                            for (int64_t j = j0; j <= i; j++) d[j] = p[j] * (d[j] - dot) * scale;
                            if (S) {
                                const real *s = S + (i - i0) * cols - j0;
                                for (int64_t j = j0; j <= i; j++) { real t = FK_TANH(s[j] / softcap); d[j] *= 1 - t * t; }
                            }
                            for (int64_t j = i + 1; j < i1; j++) d[j] = 0;
                        }
                        // dQ = dS K ; dK += dS^T Q
                        FK_GEMM_ATTN(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd, (int)cols, 1,
                                dS + j0, (int)T, k + j0 * QKVD, (int)QKVD, 1, dq + i0 * QKVD, (int)QKVD);
                        FK_GEMM_ATTN(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)hd, (int)rows, 1,
                                dS + j0, (int)T, q + i0 * QKVD, (int)QKVD, 1, dk + j0 * QKVD, (int)QKVD);
                    }
                }
            }
    }
}

// ------------------------------------------------------------------ clamp (MPT's clip_qkv)
// x is (N), clamped in place to [-c, c].
static inline void FK_OP(clamp_forward)(real *x, int64_t N, real c) {
    #pragma omp parallel for if (N > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) x[i] = x[i] > c ? c : x[i] < -c ? -c : x[i];
}

// dx (N) is zeroed where the forward clamped: out (N) is the clamped output, |out| = c there
// (torch's clamp passes the gradient at x = +-c exactly; a value landing on c is measure zero).
static inline void FK_OP(clamp_backward)(real *dx, const real *out, int64_t N, real c) {
    #pragma omp parallel for if (N > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++)
        if (out[i] >= c || out[i] <= -c) dx[i] = 0;
}

// ------------------------------------------------------------------ activations
#define FK_GELU_S 0.7978845608028654  // sqrt(2/pi)
// inp is (N); out is (N): GELU, tanh approximation (GPT-2's gelu_new)
static inline void FK_OP(gelu_forward)(real *out, const real *inp, int64_t N) {
    #pragma omp parallel for if (N > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        real x = inp[i];
        out[i] = (real)0.5 * x * (1 + FK_TANH((real)FK_GELU_S * (x + (real)0.044715 * x * x * x)));
    }
}

// dout is (N); dinp (N) is added to.
static inline void FK_OP(gelu_backward)(real *dinp, const real *inp, const real *dout, int64_t N) {
    #pragma omp parallel for if (N > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        real x = inp[i], u = (real)FK_GELU_S * (x + (real)0.044715 * x * x * x), th = FK_TANH(u);
        real du = (real)FK_GELU_S * (1 + 3 * (real)0.044715 * x * x);
        dinp[i] += dout[i] * ((real)0.5 * (1 + th) + (real)0.5 * x * (1 - th * th) * du);
    }
}

#define FK_GELU_R2 0.7071067811865476   // 1/sqrt(2)
#define FK_GELU_R2PI 0.3989422804014327 // 1/sqrt(2 pi)
// inp is (N); out is (N): exact GELU x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (transformers' "gelu")
static inline void FK_OP(gelu_exact_forward)(real *out, const real *inp, int64_t N) {
    #pragma omp parallel for if (N > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) out[i] = (real)0.5 * inp[i] * (1 + FK_ERF(inp[i] * (real)FK_GELU_R2));
}

// dout is (N); dinp (N) is added to: d/dx = Phi(x) + x phi(x).
static inline void FK_OP(gelu_exact_backward)(real *dinp, const real *inp, const real *dout, int64_t N) {
    #pragma omp parallel for if (N > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        real x = inp[i], cdf = (real)0.5 * (1 + FK_ERF(x * (real)FK_GELU_R2)), pdf = (real)FK_GELU_R2PI * FK_EXP((real)-0.5 * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

// inp is (N, 2F): gate (F) then up (F) per row; out is (N, F): silu(gate) * up
static inline void FK_OP(swiglu_forward)(real *out, const real *inp, int64_t N, int64_t F) {
    #pragma omp parallel for if (N * F > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *g = inp + i * 2 * F, *u = g + F;
        real *o = out + i * F;
        for (int64_t f = 0; f < F; f++) o[f] = g[f] / (1 + FK_EXP(-g[f])) * u[f];
    }
}

// dout is (N,F); dinp (N,2F) is added to.
static inline void FK_OP(swiglu_backward)(real *dinp, const real *inp, const real *dout, int64_t N, int64_t F) {
    #pragma omp parallel for if (N * F > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *g = inp + i * 2 * F, *u = g + F, *d = dout + i * F;
        real *dg = dinp + i * 2 * F, *du = dg + F;
        for (int64_t f = 0; f < F; f++) {
            real sg = 1 / (1 + FK_EXP(-g[f])), silu = g[f] * sg;
            du[f] += d[f] * silu;
            dg[f] += d[f] * u[f] * sg * (1 + g[f] * (1 - sg));
        }
    }
}

// inp is (N, 2F): gate (F) then up (F) per row; out is (N, F): gelu_tanh(gate) * up (Gemma's GeGLU)
static inline void FK_OP(geglu_forward)(real *out, const real *inp, int64_t N, int64_t F) {
    #pragma omp parallel for if (N * F > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *g = inp + i * 2 * F, *u = g + F;
        real *o = out + i * F;
        for (int64_t f = 0; f < F; f++) {
            real x = g[f];
            o[f] = (real)0.5 * x * (1 + FK_TANH((real)FK_GELU_S * (x + (real)0.044715 * x * x * x))) * u[f];
        }
    }
}

// dout is (N,F); dinp (N,2F) is added to.
static inline void FK_OP(geglu_backward)(real *dinp, const real *inp, const real *dout, int64_t N, int64_t F) {
    #pragma omp parallel for if (N * F > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *g = inp + i * 2 * F, *u = g + F, *d = dout + i * F;
        real *dg = dinp + i * 2 * F, *du = dg + F;
        for (int64_t f = 0; f < F; f++) {
            real x = g[f], th = FK_TANH((real)FK_GELU_S * (x + (real)0.044715 * x * x * x));
            real dth = (real)FK_GELU_S * (1 + 3 * (real)0.044715 * x * x);
            du[f] += d[f] * (real)0.5 * x * (1 + th);
            dg[f] += d[f] * u[f] * ((real)0.5 * (1 + th) + (real)0.5 * x * (1 - th * th) * dth);
        }
    }
}

// ------------------------------------------------------------------ softmax cross-entropy
// logits is (N,V), targets (N) with -1 = ignored; losses (N) get -log softmax(logits)[target]
// (0 where ignored). With to_probs, logits are replaced by softmax(logits) in place, ready for
// the backward. Returns the number of scored rows.
// Cross-entropy of the targets and, with a teacher, the soft cross-entropy against it:
// losses[i] = -log softmax(x_i)[t_i]; flosses[i] = -sum_v P_i(v) log softmax(x_i)(v) over the
// sparse row P_i (= losses[i] when the row is empty). logits (N,V) become softmax
// probabilities in place when to_probs. Ignored targets (-1) score 0. Returns positions scored.
static inline int64_t FK_OP(soft_crossentropy_forward)(real *losses, real *flosses, real *logits, const int32_t *targets,
                                                       const fk_sparse_dist *teacher, int64_t N, int64_t V, int to_probs) {
    int64_t n_scored = 0;
    #pragma omp parallel for reduction(+ : n_scored) if (N * V > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        real *x = logits + i * V, mx = fk_row_max_real(x, V);
        int32_t t = targets ? targets[i] : -1;
        real xt = t >= 0 ? x[t] : 0;  // the target's logit, before x is overwritten
        real px = 0, ps = 0;           // sum_v P(v) x_v and sum_v P(v) over the teacher row, likewise
        int64_t r0 = teacher ? teacher->row[i] : 0, r1 = teacher ? teacher->row[i + 1] : 0;
        for (int64_t e = r0; e < r1; e++) { px += (real)teacher->p[e] * x[teacher->ids[e]]; ps += (real)teacher->p[e]; }
        // with to_probs, x holds exp(x - mx) from here on (normalised at the end)
        real sum = to_probs ? fk_row_exp_real(x, V, mx) : fk_row_sumexp_real(x, V, mx);
        real lse = (real)fk_lse_in_double(mx, sum);
        if (t >= 0) {
            losses[i] = lse - xt;
            n_scored++;
        } else if (losses) {
            losses[i] = 0;
        }
        if (flosses) {
            real fl = t < 0 ? 0 : r1 > r0 ? lse * ps - px : losses[i];
            // a row with mass r = 1 - ps < 1 keeps r on a tail class: - r log(1 - S), S = sum_K q
            real r = 1 - ps;
            if (t >= 0 && r1 > r0 && r > FK_TAIL_MIN) {
                real S = 0;
                for (int64_t e = r0; e < r1; e++) S += to_probs ? x[teacher->ids[e]] / sum : FK_EXP(x[teacher->ids[e]] - lse);
                fl -= r * log(1 - S > FK_TAIL_FLOOR ? 1 - S : FK_TAIL_FLOOR);
            }
            flosses[i] = fl;
        }
        if (to_probs) {
            real inv = 1 / sum;
            for (int64_t j = 0; j < V; j++) x[j] *= inv;
        }
    }
    return n_scored;
}

static inline int64_t FK_OP(crossentropy_forward)(real *losses, real *logits, const int32_t *targets,
                                                  int64_t N, int64_t V, int to_probs) {
    return FK_OP(soft_crossentropy_forward)(losses, NULL, logits, targets, NULL, N, V, to_probs);
}

// The gradient of lambda * losses + (1 - lambda) * flosses (soft_crossentropy_forward) with
// respect to the logits, from the probabilities, in place:
// dlogits = scale * (probs - lambda onehot(target) - (1 - lambda) P), with P = onehot(target)
// on empty teacher rows; ignored rows become zero. One row i (p = its V probabilities).
static inline void FK_OP(soft_crossentropy_backward_row)(real *p, int64_t i, const int32_t *targets, const fk_sparse_dist *teacher,
                                                         real lambda, int64_t V, real scale) {
    if (targets[i] < 0) { memset(p, 0, (size_t)V * sizeof(real)); return; }
    for (int64_t j = 0; j < V; j++) p[j] *= scale;
    int64_t r0 = teacher ? teacher->row[i] : 0, r1 = teacher ? teacher->row[i + 1] : 0;
    if (r1 == r0) { p[targets[i]] -= scale; return; }
    real ps = 0, S = 0;
    for (int64_t e = r0; e < r1; e++) ps += (real)teacher->p[e];
    real r = 1 - ps;
    if (r > FK_TAIL_MIN && scale != 0) {
        // tail class: d/dz_j = q_j (1 - r / (1 - S)) + [j in K] (r q_j / (1 - S) - P_j), over scale * q
        for (int64_t e = r0; e < r1; e++) S += p[teacher->ids[e]];
        S /= scale;
        real den = 1 - S > FK_TAIL_FLOOR ? 1 - S : FK_TAIL_FLOOR, c = (1 - lambda) * r / den, a = 1 - c;
        // the row's entries get a + c, the rest a: mark the entries by negating them first (probabilities are >= 0)
        for (int64_t e = r0; e < r1; e++) p[teacher->ids[e]] = -p[teacher->ids[e]] - 1;
        for (int64_t j = 0; j < V; j++) p[j] = p[j] < 0 ? (-p[j] - 1) * (a + c) : p[j] * a;
    }
    p[targets[i]] -= scale * lambda;
    for (int64_t e = r0; e < r1; e++) p[teacher->ids[e]] -= scale * (1 - lambda) * (real)teacher->p[e];
}

// All N rows of probs (N,V), as soft_crossentropy_backward_row.
static inline void FK_OP(soft_crossentropy_backward)(real *probs, const int32_t *targets, const fk_sparse_dist *teacher,
                                                     real lambda, int64_t N, int64_t V, real scale) {
    #pragma omp parallel for if (N * V > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) FK_OP(soft_crossentropy_backward_row)(probs + i * V, i, targets, teacher, lambda, V, scale);
}

// ------------------------------------------------------------------ final-logit soft-capping
// x is (N,V), in place: x = cap * tanh(x / cap) (Gemma 2). rowmax (N) gets each row's largest
// capped value (NULL: not kept); the backward needs it.
static inline void FK_OP(softcap_forward)(real *x, real *rowmax, int64_t N, int64_t V, real cap) {
    #pragma omp parallel for if (N * V > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        real *r = x + i * V, mx = -INFINITY;
        for (int64_t j = 0; j < V; j++) { r[j] = cap * FK_TANH(r[j] / cap); mx = r[j] > mx ? r[j] : mx; }
        if (rowmax) rowmax[i] = mx;
    }
}

// soft_crossentropy_backward through the soft-cap: probs (N,V) are the softmax of the capped
// logits z; they become the gradient with respect to the logits before capping, in place:
// dx = dz * (1 - (z / cap)^2). z is recovered from the probabilities: z_j = max_i + log(p_j / p_max),
// with max_i from softcap_forward (p_max belongs to it). scratch holds nthr slices of V reals
// (a row's probabilities kept); the loop runs on at most nthr threads.
static inline void FK_OP(softcap_crossentropy_backward)(real *probs, const real *rowmax, const int32_t *targets,
                                                        const fk_sparse_dist *teacher, real lambda, int64_t N, int64_t V,
                                                        real scale, real cap, real *scratch, int nthr) {
    #pragma omp parallel num_threads(nthr)
    {
        real *keep = scratch + (int64_t)omp_get_thread_num() * V;
        #pragma omp for
        for (int64_t i = 0; i < N; i++) {
            real *p = probs + i * V, pmax = 0;
            if (targets[i] < 0) { FK_OP(soft_crossentropy_backward_row)(p, i, targets, teacher, lambda, V, scale); continue; }
            memcpy(keep, p, (size_t)V * sizeof(real));
            for (int64_t j = 0; j < V; j++) pmax = keep[j] > pmax ? keep[j] : pmax;
            FK_OP(soft_crossentropy_backward_row)(p, i, targets, teacher, lambda, V, scale);
            real lz = rowmax[i] - log(pmax);
            for (int64_t j = 0; j < V; j++) {
                real t = keep[j] > 0 ? (lz + log(keep[j])) / cap : -1;
                t = t < -1 ? -1 : t > 1 ? 1 : t;
                p[j] *= 1 - t * t;
            }
        }
    }
}

// probs (N,V) from crossentropy_forward(to_probs) become dlogits in place:
// dlogits = scale * (probs - onehot(target)); ignored rows become zero.
static inline void FK_OP(crossentropy_backward)(real *probs, const int32_t *targets, int64_t N, int64_t V, real scale) {
    FK_OP(soft_crossentropy_backward)(probs, targets, NULL, 1, N, V, scale);
}

// ------------------------------------------------------------------ padded vocabularies
// x is (N,V), in place: columns n_real .. V-1 (LM-head rows that are no token of the tokenizer,
// Qwen2.5's and Phi-3's padding) become FK_LOGIT_MASKED, so that every softmax over a row is
// one over the real tokens. rowmax (N, NULL: not kept), softcap_forward's, becomes the real
// columns' largest value, the one the soft-cap backward reads.
static inline void FK_OP(vocab_mask_forward)(real *x, real *rowmax, int64_t N, int64_t V, int64_t n_real) {
    #pragma omp parallel for if (N * V > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        real *r = x + i * V, mx = r[0];
        for (int64_t j = n_real; j < V; j++) r[j] = (real)FK_LOGIT_MASKED;
        if (!rowmax) continue;
        for (int64_t j = 1; j < n_real; j++) mx = r[j] > mx ? r[j] : mx;
        rowmax[i] = mx;
    }
}

// The masked columns are constants: their gradient dx (N,V) is zero, in place.
static inline void FK_OP(vocab_mask_backward)(real *dx, int64_t N, int64_t V, int64_t n_real) {
    for (int64_t i = 0; i < N; i++) memset(dx + i * V + n_real, 0, (size_t)(V - n_real) * sizeof(real));
}

// ------------------------------------------------------------------ mixture of experts
// Routing: logits (N,E) of the router; probs (N,E) = softmax over each row (in real: float32 as
// transformers computes it); idx (N,K) the K largest probabilities of each row, largest first
// (ties: the lower index first); wts (N,K) their probabilities, divided by their sum when norm
// (Mixtral; norm_topk_prob). K <= E.
static inline void FK_OP(moe_route_forward)(real *probs, int32_t *idx, real *wts, const real *logits, int64_t N, int64_t E,
                                            int64_t K, int norm) {
    #pragma omp parallel for if (N * E > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *z = logits + i * E;
        real *p = probs + i * E, mx = z[0], s = 0;
        for (int64_t e = 1; e < E; e++) mx = z[e] > mx ? z[e] : mx;
        for (int64_t e = 0; e < E; e++) { p[e] = FK_EXP(z[e] - mx); s += p[e]; }
        for (int64_t e = 0; e < E; e++) p[e] /= s;
        // insertion into the sorted top K (strictly larger moves up: ties keep the lower index first)
        int32_t *ix = idx + i * K;
        int64_t n = 0;
        for (int64_t e = 0; e < E; e++) {
            if (n == K && !(p[e] > p[ix[K - 1]])) continue;
            int64_t j = n < K ? n++ : K - 1;
            for (; j > 0 && p[e] > p[ix[j - 1]]; j--) ix[j] = ix[j - 1];
            ix[j] = (int32_t)e;
        }
        real *w = wts + i * K, sum = 0;
        for (int64_t k = 0; k < K; k++) { w[k] = p[ix[k]]; sum += w[k]; }
        if (norm)
            for (int64_t k = 0; k < K; k++) w[k] /= sum;
    }
}

// dwts (N,K) is the gradient of the routing weights; dlogits (N,E) is added to. The choice itself
// has no gradient: with norm, dp_j = (dw_j - sum_k w_k dw_k) / sum_k p_k on the chosen, else
// dp_j = dw_j; 0 on the others; then through the softmax, dz = p (dp - p . dp).
static inline void FK_OP(moe_route_backward)(real *dlogits, const real *probs, const int32_t *idx, const real *wts,
                                             const real *dwts, int64_t N, int64_t E, int64_t K, int norm) {
    #pragma omp parallel for if (N * E > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < N; i++) {
        const real *p = probs + i * E, *w = wts + i * K, *dw = dwts + i * K;
        const int32_t *ix = idx + i * K;
        real wdw = 0, psum = 0, pdp = 0;
        for (int64_t k = 0; k < K; k++) { wdw += w[k] * dw[k]; psum += p[ix[k]]; }
#define FK_MOE_DP(k) (norm ? (dw[k] - wdw) / psum : dw[k])
        for (int64_t k = 0; k < K; k++) pdp += p[ix[k]] * FK_MOE_DP(k);
        real *dz = dlogits + i * E;
        for (int64_t e = 0; e < E; e++) dz[e] -= p[e] * pdp;
        for (int64_t k = 0; k < K; k++) dz[ix[k]] += p[ix[k]] * FK_MOE_DP(k);
#undef FK_MOE_DP
    }
}

// Groups the N*K (token, slot) pairs of idx (N,K) by expert (a counting sort, stable: within an
// expert, pairs in token order): expert e's pairs are order[start[e] .. start[e+1]-1], each the
// pair's index t*K + k; row_of (N*K) is the inverse (pair -> its row in the grouped order).
static inline void FK_OP(moe_sort)(int32_t *order, int32_t *start, int32_t *row_of, const int32_t *idx, int64_t N, int64_t K,
                                   int64_t E) {
    memset(start, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int64_t j = 0; j < N * K; j++) start[idx[j] + 1]++;
    for (int64_t e = 0; e < E; e++) start[e + 1] += start[e];
    for (int64_t j = 0; j < N * K; j++) {  // start[e] is expert e's next free row while this runs
        int32_t r = start[idx[j]]++;
        order[r] = (int32_t)j;
        row_of[j] = r;
    }
    for (int64_t e = E; e > 0; e--) start[e] = start[e - 1];  // each now its expert's end: shift back
    start[0] = 0;
}

// xg (N*K, C): row r is row order[r] / K of x (N, C), the input of the pair's expert.
static inline void FK_OP(moe_gather)(real *xg, const real *x, const int32_t *order, int64_t NK, int64_t K, int64_t C) {
    #pragma omp parallel for if (NK * C > FK_OMP_MIN_WORK)
    for (int64_t r = 0; r < NK; r++) memcpy(xg + r * C, x + (order[r] / K) * C, (size_t)C * sizeof(real));
}

// The gather's backward: dx (N, C) row t is added the rows of dxg (N*K, C) of its K pairs.
static inline void FK_OP(moe_gather_backward)(real *dx, const real *dxg, const int32_t *row_of, int64_t N, int64_t K, int64_t C) {
    #pragma omp parallel for if (N * K * C > FK_OMP_MIN_WORK)
    for (int64_t t = 0; t < N; t++)
        for (int64_t k = 0; k < K; k++) {
            const real *g = dxg + (int64_t)row_of[t * K + k] * C;
            for (int64_t c = 0; c < C; c++) dx[t * C + c] += g[c];
        }
}

// The experts' outputs ye (N*K, C), in grouped order, weighted and summed per token: out (N, C)
// row t is added sum_k wts[t,k] ye[row_of[t*K+k]] (slots in order: deterministic).
static inline void FK_OP(moe_combine_forward)(real *out, const real *ye, const real *wts, const int32_t *row_of, int64_t N,
                                              int64_t K, int64_t C) {
    #pragma omp parallel for if (N * K * C > FK_OMP_MIN_WORK)
    for (int64_t t = 0; t < N; t++)
        for (int64_t k = 0; k < K; k++) {
            const real *y = ye + (int64_t)row_of[t * K + k] * C, w = wts[t * K + k];
            for (int64_t c = 0; c < C; c++) out[t * C + c] += w * y[c];
        }
}

// dout (N, C); dye (N*K, C) and dwts (N,K) are added to: dye[row] += w dout_t, dwts[t,k] += dout_t . ye[row].
static inline void FK_OP(moe_combine_backward)(real *dye, real *dwts, const real *dout, const real *ye, const real *wts,
                                               const int32_t *row_of, int64_t N, int64_t K, int64_t C) {
    #pragma omp parallel for if (N * K * C > FK_OMP_MIN_WORK)
    for (int64_t t = 0; t < N; t++)
        for (int64_t k = 0; k < K; k++) {
            int64_t r = row_of[t * K + k];
            const real *y = ye + r * C, *d = dout + t * C, w = wts[t * K + k];
            real *dy = dye + r * C, s = 0;
            for (int64_t c = 0; c < C; c++) { dy[c] += w * d[c]; s += d[c] * y[c]; }
            dwts[t * K + k] += s;
        }
}

// The shared expert's gate (Qwen2-MoE): out (N, C) row t = sigmoid(glogit[t]) * dense[t]; sig (N)
// keeps the sigmoids (NULL: not kept).
static inline void FK_OP(sigmoid_gate_forward)(real *out, real *sig, const real *glogit, const real *dense, int64_t N, int64_t C) {
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t t = 0; t < N; t++) {
        real s = 1 / (1 + FK_EXP(-glogit[t]));
        if (sig) sig[t] = s;
        for (int64_t c = 0; c < C; c++) out[t * C + c] = s * dense[t * C + c];
    }
}

// dout (N, C); ddense (N, C) and dglogit (N) are added to: ddense = s dout, dglogit = (dout . dense) s (1 - s).
static inline void FK_OP(sigmoid_gate_backward)(real *ddense, real *dglogit, const real *dout, const real *sig, const real *dense,
                                                int64_t N, int64_t C) {
    #pragma omp parallel for if (N * C > FK_OMP_MIN_WORK)
    for (int64_t t = 0; t < N; t++) {
        real s = sig[t], dot = 0;
        for (int64_t c = 0; c < C; c++) { ddense[t * C + c] += s * dout[t * C + c]; dot += dout[t * C + c] * dense[t * C + c]; }
        dglogit[t] += dot * s * (1 - s);
    }
}

// ULD, the sorted-probability fusion objective (its own file)
#include "nn/uld_impl.h"
