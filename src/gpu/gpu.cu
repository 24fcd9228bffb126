// The CUDA engine (include/fusekit/gpu.h): the CPU engine's forward, backward and AdamW for the
// models it supports (fk_gpu_supports), on one GPU. Matrix products: cuBLASLt, bf16 operands,
// fp32 accumulation and output. Everything else: the kernels below, fp32. One stream (the
// default); errors are checked after every step and reported with the step's name.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "fusekit/gpu.h"
}

typedef __nv_bfloat16 bf16;

#define CK(call, what)                                                                                                  \
    do {                                                                                                                \
        cudaError_t e_ = (call);                                                                                        \
        if (e_ != cudaSuccess) return fk_error(FK_ERR_UNSUPPORTED, "CUDA: %s: %s", (what), cudaGetErrorString(e_));     \
    } while (0)
#define CKL(call, what)                                                                                                 \
    do {                                                                                                                \
        cublasStatus_t e_ = (call);                                                                                     \
        if (e_ != CUBLAS_STATUS_SUCCESS) return fk_error(FK_ERR_UNSUPPORTED, "cuBLASLt: %s: status %d", (what), (int)e_); \
    } while (0)

// After each launch: the launch's own error at once; with FUSEKIT_CUDA_SYNC=1 also the kernel's,
// synchronously, naming it (slow; for finding which kernel failed).
static int sync_each = -1;
static fk_status launched(const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        if (sync_each < 0) { const char *s = getenv("FUSEKIT_CUDA_SYNC"); sync_each = s && s[0] == '1'; }
        if (sync_each) e = cudaDeviceSynchronize();
    }
    if (e != cudaSuccess) return fk_error(FK_ERR_UNSUPPORTED, "CUDA: kernel %s: %s", what, cudaGetErrorString(e));
    return FK_OK;
}
#define LAUNCH(what, kern, grid, block, ...)                                                                             \
    do {                                                                                                                \
        kern<<<(grid), (block)>>>(__VA_ARGS__);                                                                         \
        FK_TRY(launched(what));                                                                                         \
    } while (0)

static unsigned blocks_for(int64_t n, int t) { int64_t b = (n + t - 1) / t; return (unsigned)(b > 65535 * 16 ? 65535 * 16 : b); }

// ------------------------------------------------------------------ reductions
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum (or max) over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ float block_reduce(float v, bool is_max) {
    __shared__ float sh[32];
    __shared__ float res;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        float x = lane < nw ? sh[lane] : (is_max ? -INFINITY : 0.0f);
        x = is_max ? warp_max(x) : warp_sum(x);
        if (lane == 0) res = x;
    }
    __syncthreads();
    return res;
}

// ------------------------------------------------------------------ element-wise kernels
__global__ void k_f2bf(bf16 *out, const float *in, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(in[i]);
}
__global__ void k_add(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}
__global__ void k_bias_add(float *y, const float *b, int64_t N, int64_t C) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * C; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += b[i % C];
}
// x[n] = scale * (tok_emb[tokens[n]] + pos_emb[n % T]) (no position table: NULL; scale 0: 1)
__global__ void k_embed(float *x, const float *te, const float *pe, const int32_t *tok, int64_t N, int64_t T, int64_t C,
                        float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * C; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = i / C, c = i % C;
        float v = te[(int64_t)tok[n] * C + c];
        if (pe) v += pe[(n % T) * C + c];
        x[i] = scale > 0 ? v * scale : v;
    }
}
__global__ void k_embed_bwd(float *gte, float *gpe, const float *dx, const int32_t *tok, int64_t N, int64_t T, int64_t C,
                            float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * C; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = i / C, c = i % C;
        float d = scale > 0 ? dx[i] * scale : dx[i];
        atomicAdd(gte + (int64_t)tok[n] * C + c, d);
        if (gpe) atomicAdd(gpe + (n % T) * C + c, d);
    }
}

// ------------------------------------------------------------------ norms (one warp per row)
// LayerNorm (ln): y = (x - mean) rstd w + b; RMSNorm: y = x rstd (off + w). y in bf16 (the next
// product's operand); mean (LayerNorm) and rstd kept for the backward.
__global__ void k_norm_fwd(bf16 *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int64_t N,
                           int64_t C, float eps, float off, int ln) {
    int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *xr = x + row * C;
    float m = 0;
    if (ln) {
        float s = 0;
        for (int64_t c = lane; c < C; c += 32) s += xr[c];
        m = warp_sum(s) / (float)C;
    }
    float v = 0;
    for (int64_t c = lane; c < C; c += 32) { float d = xr[c] - m; v += d * d; }
    float r = rsqrtf(warp_sum(v) / (float)C + eps);
    bf16 *yr = y + row * C;
    for (int64_t c = lane; c < C; c += 32)
        yr[c] = __float2bfloat16(ln ? (xr[c] - m) * r * w[c] + (b ? b[c] : 0.0f) : xr[c] * r * (off + w[c]));
    if (lane == 0) { if (mean) mean[row] = m; rstd[row] = r; }
}
// dx += the norm's input gradient for dy (fp32).
__global__ void k_norm_bwd(float *dx, const float *dy, const float *x, const float *w, const float *mean, const float *rstd,
                           int64_t N, int64_t C, float off, int ln) {
    int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *xr = x + row * C, *d = dy + row * C;
    float m = ln ? mean[row] : 0.0f, s = rstd[row], a = 0, bsum = 0;
    for (int64_t c = lane; c < C; c += 32) {
        float wd = d[c] * (ln ? w[c] : off + w[c]), xh = (xr[c] - m) * s;
        a += wd;
        bsum += wd * xh;
    }
    a = warp_sum(a) / (float)C;
    bsum = warp_sum(bsum) / (float)C;
    float *o = dx + row * C;
    for (int64_t c = lane; c < C; c += 32) {
        float wd = d[c] * (ln ? w[c] : off + w[c]), xh = (xr[c] - m) * s;
        o[c] += ln ? (wd - a - xh * bsum) * s : (wd - xh * bsum) * s;
    }
}
// Column sums over row chunks, added atomically: dw[c] += sum_n dy xhat (norm weights; x NULL: the
// plain sum, a bias), db[c] += sum_n dy (db may be NULL).
#define COL_ROWS 256
__global__ void k_colsum(float *dw, float *db, const float *dy, const float *x, const float *mean, const float *rstd,
                         int64_t N, int64_t C) {
    int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c >= C) return;
    int64_t r0 = blockIdx.y * (int64_t)COL_ROWS, r1 = r0 + COL_ROWS < N ? r0 + COL_ROWS : N;
    float sw = 0, sb = 0;
    for (int64_t n = r0; n < r1; n++) {
        float d = dy[n * C + c];
        sb += d;
        if (x) sw += d * (x[n * C + c] - (mean ? mean[n] : 0.0f)) * rstd[n];
    }
    if (x) atomicAdd(dw + c, sw);
    if (db) atomicAdd(db + c, sb);
}

// ------------------------------------------------------------------ RoPE (rotate-half over rd dims)
__global__ void k_rope(float *qkv, const float *cs, const float *sn, int64_t N, int64_t T, int64_t nh, int64_t hd, int64_t rd,
                       int64_t QD, float sign) {
    int64_t half = rd / 2, total = N * nh * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t d = i % half, h = (i / half) % nh, n = i / (half * nh), t = n % T;
        float *x = qkv + n * QD + h * hd;
        float c = cs[t * half + d], s = sign * sn[t * half + d], x1 = x[d], x2 = x[d + half];
        x[d] = x1 * c - x2 * s;
        x[d + half] = x2 * c + x1 * s;
    }
}

// ------------------------------------------------------------------ attention, flash style
// One thread per (sequence, head, query row): a running max and sum over the keys (online softmax),
// the output accumulated in registers; no T x T matrix exists. The threads of a block hold
// consecutive query rows of one head and step through the same keys together (the loads are
// broadcasts). lse (B, H, T) keeps each row's log-sum-exp for the backward.
#define ATT_THREADS 64
struct att_args {
    const float *qkv;
    int64_t B, T, H, KVH, QD, window;
    float scale;
};
template <int HD>
__global__ void k_att_fwd(att_args a, float *out, bf16 *out16, float *lse) {
    int64_t bh = blockIdx.y, b = bh / a.H, h = bh % a.H, G = a.H / a.KVH;
    int64_t i0 = blockIdx.x * (int64_t)ATT_THREADS, i = i0 + threadIdx.x;
    bool valid = i < a.T;
    float q[HD], acc[HD];
    const float *qr = a.qkv + (b * a.T + (valid ? i : 0)) * a.QD + h * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) { q[d] = qr[d] * a.scale; acc[d] = 0; }
    float mx = -INFINITY, l = 0;
    int64_t ilast = i0 + ATT_THREADS - 1 < a.T - 1 ? i0 + ATT_THREADS - 1 : a.T - 1;
    int64_t j0 = a.window > 0 && i0 - a.window + 1 > 0 ? i0 - a.window + 1 : 0;
    const float *kb = a.qkv + b * a.T * a.QD + a.H * HD + (h / G) * HD, *vb = kb + a.KVH * HD;
    for (int64_t j = j0; j <= ilast; j++) {
        bool on = valid && j <= i && (a.window <= 0 || i - j < a.window);
        if (!on) continue;
        const float *k = kb + j * a.QD, *v = vb + j * a.QD;
        float s = 0;
#pragma unroll
        for (int d = 0; d < HD; d++) s += q[d] * k[d];
        if (s > mx) {
            float corr = expf(mx - s);
            l = l * corr + 1;
#pragma unroll
            for (int d = 0; d < HD; d++) acc[d] = acc[d] * corr + v[d];
            mx = s;
        } else {
            float p = expf(s - mx);
            l += p;
#pragma unroll
            for (int d = 0; d < HD; d++) acc[d] += p * v[d];
        }
    }
    if (!valid) return;
    float inv = 1.0f / l;
    float *o = out + (b * a.T + i) * (a.H * HD) + h * HD;
    bf16 *o16 = out16 + (b * a.T + i) * (a.H * HD) + h * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) { o[d] = acc[d] * inv; o16[d] = __float2bfloat16(acc[d] * inv); }
    lse[bh * a.T + i] = mx + logf(l);
}
// Dd[b,h,i] = dout_i . out_i (the softmax backward's row term)
__global__ void k_att_dot(float *Dd, const float *dout, const float *out, int64_t B, int64_t T, int64_t H, int64_t hd) {
    int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= B * H * T) return;
    int64_t b = n / (H * T), h = (n / T) % H, i = n % T;
    const float *x = dout + (b * T + i) * H * hd + h * hd, *y = out + (b * T + i) * H * hd + h * hd;
    float s = 0;
    for (int64_t d = 0; d < hd; d++) s += x[d] * y[d];
    Dd[n] = s;
}
// dq of one query row: sum_j ds_ij k_j scale, ds = p (dp - D), p = exp(s - lse), dp = dout . v_j.
template <int HD>
__global__ void k_att_bwd_dq(att_args a, float *dqkv, const float *dout, const float *lse, const float *Dd) {
    int64_t bh = blockIdx.y, b = bh / a.H, h = bh % a.H, G = a.H / a.KVH;
    int64_t i0 = blockIdx.x * (int64_t)ATT_THREADS, i = i0 + threadIdx.x;
    bool valid = i < a.T;
    int64_t ii = valid ? i : 0;
    float q[HD], dO[HD], dq[HD];
    const float *qr = a.qkv + (b * a.T + ii) * a.QD + h * HD, *dr = dout + (b * a.T + ii) * (a.H * HD) + h * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) { q[d] = qr[d] * a.scale; dO[d] = dr[d]; dq[d] = 0; }
    float L = lse[bh * a.T + ii], Di = Dd[bh * a.T + ii];
    int64_t ilast = i0 + ATT_THREADS - 1 < a.T - 1 ? i0 + ATT_THREADS - 1 : a.T - 1;
    int64_t j0 = a.window > 0 && i0 - a.window + 1 > 0 ? i0 - a.window + 1 : 0;
    const float *kb = a.qkv + b * a.T * a.QD + a.H * HD + (h / G) * HD, *vb = kb + a.KVH * HD;
    for (int64_t j = j0; j <= ilast; j++) {
        bool on = valid && j <= i && (a.window <= 0 || i - j < a.window);
        if (!on) continue;
        const float *k = kb + j * a.QD, *v = vb + j * a.QD;
        float s = 0, dp = 0;
#pragma unroll
        for (int d = 0; d < HD; d++) { s += q[d] * k[d]; dp += dO[d] * v[d]; }
        float ds = expf(s - L) * (dp - Di);
#pragma unroll
        for (int d = 0; d < HD; d++) dq[d] += ds * k[d];
    }
    if (!valid) return;
    float *o = dqkv + (b * a.T + i) * a.QD + h * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) o[d] = dq[d] * a.scale;
}
// dk and dv of one key row of a KV head, over the query heads of its group and the rows that see it.
template <int HD>
__global__ void k_att_bwd_dkv(att_args a, float *dqkv, const float *dout, const float *lse, const float *Dd) {
    int64_t bg = blockIdx.y, b = bg / a.KVH, g = bg % a.KVH, G = a.H / a.KVH;
    int64_t j0 = blockIdx.x * (int64_t)ATT_THREADS, j = j0 + threadIdx.x;
    bool valid = j < a.T;
    int64_t jj = valid ? j : 0;
    float k[HD], v[HD], dk[HD], dv[HD];
    const float *kr = a.qkv + (b * a.T + jj) * a.QD + a.H * HD + g * HD, *vr = kr + a.KVH * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) { k[d] = kr[d]; v[d] = vr[d]; dk[d] = 0; dv[d] = 0; }
    int64_t jlast = j0 + ATT_THREADS - 1 < a.T - 1 ? j0 + ATT_THREADS - 1 : a.T - 1;
    int64_t iend = a.window > 0 && jlast + a.window - 1 < a.T - 1 ? jlast + a.window - 1 : a.T - 1;
    for (int64_t h = g * G; h < (g + 1) * G; h++) {
        const float *qb = a.qkv + b * a.T * a.QD + h * HD, *db = dout + b * a.T * (a.H * HD) + h * HD;
        const float *Lb = lse + (b * a.H + h) * a.T, *Db = Dd + (b * a.H + h) * a.T;
        for (int64_t i = j0; i <= iend; i++) {
            bool on = valid && i >= j && (a.window <= 0 || i - j < a.window);
            if (!on) continue;
            const float *q = qb + i * a.QD, *dO = db + i * (a.H * HD);
            float s = 0, dp = 0;
#pragma unroll
            for (int d = 0; d < HD; d++) { s += q[d] * k[d]; dp += dO[d] * v[d]; }
            float p = expf(s * a.scale - Lb[i]), ds = p * (dp - Db[i]);
#pragma unroll
            for (int d = 0; d < HD; d++) { dv[d] += p * dO[d]; dk[d] += ds * q[d]; }
        }
    }
    if (!valid) return;
    float *ok = dqkv + (b * a.T + j) * a.QD + a.H * HD + g * HD, *ov = ok + a.KVH * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) { ok[d] = dk[d] * a.scale; ov[d] = dv[d]; }
}

// ------------------------------------------------------------------ activations
#define GELU_S 0.7978845608028654f
#define GELU_R2 0.7071067811865476f
#define GELU_R2PI 0.3989422804014327f
__device__ __forceinline__ float gelu_t(float x) { return 0.5f * x * (1 + tanhf(GELU_S * (x + 0.044715f * x * x * x))); }
__device__ __forceinline__ float gelu_t_d(float x) {
    float th = tanhf(GELU_S * (x + 0.044715f * x * x * x)), du = GELU_S * (1 + 3 * 0.044715f * x * x);
    return 0.5f * (1 + th) + 0.5f * x * (1 - th * th) * du;
}
__device__ __forceinline__ float gelu_e(float x) { return 0.5f * x * (1 + erff(x * GELU_R2)); }
__device__ __forceinline__ float gelu_e_d(float x) { return 0.5f * (1 + erff(x * GELU_R2)) + x * GELU_R2PI * expf(-0.5f * x * x); }
// kind: 0 GELU tanh, 1 GELU exact, 2 SwiGLU, 3 GeGLU; pre is (N, F) or (N, 2F) (gate, then up)
__global__ void k_act_fwd(bf16 *act, const float *pre, int64_t N, int64_t F, int kind) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * F; i += (int64_t)gridDim.x * blockDim.x) {
        float y;
        if (kind < 2) y = kind == 0 ? gelu_t(pre[i]) : gelu_e(pre[i]);
        else {
            int64_t n = i / F, f = i % F;
            float g = pre[n * 2 * F + f], u = pre[n * 2 * F + F + f];
            y = kind == 2 ? g / (1 + expf(-g)) * u : gelu_t(g) * u;
        }
        act[i] = __float2bfloat16(y);
    }
}
__global__ void k_act_bwd(float *dpre, bf16 *dpre16, const float *dact, const float *pre, int64_t N, int64_t F, int kind) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * F; i += (int64_t)gridDim.x * blockDim.x) {
        float d = dact[i];
        if (kind < 2) {
            float x = pre[i], r = d * (kind == 0 ? gelu_t_d(x) : gelu_e_d(x));
            dpre[i] = r;
            dpre16[i] = __float2bfloat16(r);
        } else {
            int64_t n = i / F, f = i % F, ig = n * 2 * F + f, iu = ig + F;
            float g = pre[ig], u = pre[iu], dg, du;
            if (kind == 2) {
                float sg = 1 / (1 + expf(-g));
                du = d * g * sg;
                dg = d * u * sg * (1 + g * (1 - sg));
            } else {
                du = d * gelu_t(g);
                dg = d * u * gelu_t_d(g);
            }
            dpre[ig] = dg; dpre[iu] = du;
            dpre16[ig] = __float2bfloat16(dg); dpre16[iu] = __float2bfloat16(du);
        }
    }
}

// ------------------------------------------------------------------ loss
// One block per row of logits z (R rows of V, the first Vr real). loss[r] = lse - z[t] (0 when
// t < 0); floss[r] the teacher term (fusion.md; soft_crossentropy_forward in src/nn/ops_impl.h,
// tail class included). With train, the row becomes its gradient scale * (q - lambda onehot -
// (1 - lambda) P) (in place, fp32) and its bf16 copy is written to d16.
#define TAIL_MIN 1e-5f
#define TAIL_FLOOR 1e-30f
__global__ void k_ce(float *z, bf16 *d16, float *loss, float *floss, const int32_t *tgt, const int64_t *trow, const int32_t *tid,
                     const float *tp, int64_t V, int64_t Vr, float lambda, float scale, int train) {
    int64_t r = blockIdx.x;
    float *x = z + r * V;
    int t = tgt[r];
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < Vr; j += blockDim.x) mx = fmaxf(mx, x[j]);
    mx = block_reduce(mx, true);
    float s = 0;
    for (int64_t j = threadIdx.x; j < Vr; j += blockDim.x) s += expf(x[j] - mx);
    s = block_reduce(s, false);
    float lse = (float)((double)mx + log((double)s));
    __shared__ float sh_a, sh_c;
    int64_t r0 = trow ? trow[r] : 0, r1 = trow ? trow[r + 1] : 0;
    if (threadIdx.x == 0) {
        float l = t >= 0 ? lse - x[t] : 0.0f, fl = l, a = 1, c = 0;
        if (t >= 0 && r1 > r0) {
            float px = 0, ps = 0, S = 0;
            for (int64_t e = r0; e < r1; e++) { px += tp[e] * x[tid[e]]; ps += tp[e]; S += expf(x[tid[e]] - lse); }
            fl = lse * ps - px;
            float rem = 1 - ps;
            if (rem > TAIL_MIN) {
                float den = 1 - S > TAIL_FLOOR ? 1 - S : TAIL_FLOOR;
                fl -= rem * logf(den);
                c = (1 - lambda) * rem / den;
                a = 1 - c;
            }
        }
        if (t < 0) fl = 0;
        loss[r] = l;
        if (floss) floss[r] = fl;
        sh_a = a;
        sh_c = c;
    }
    __syncthreads();
    if (!train) return;
    float a = sh_a, c = sh_c;
    // probabilities, the teacher's entries marked by negation (-q - 1 < 0; as the CPU engine does)
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) x[j] = t < 0 || j >= Vr ? 0.0f : expf(x[j] - lse);
    __syncthreads();
    if (threadIdx.x == 0 && t >= 0 && c != 0)
        for (int64_t e = r0; e < r1; e++) x[tid[e]] = -x[tid[e]] - 1;
    __syncthreads();
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) x[j] = x[j] < 0 ? (-x[j] - 1) * (a + c) * scale : x[j] * a * scale;
    __syncthreads();
    if (threadIdx.x == 0 && t >= 0) {
        if (r1 == r0) x[t] -= scale;
        else {
            x[t] -= scale * lambda;
            for (int64_t e = r0; e < r1; e++) x[tid[e]] -= scale * (1 - lambda) * tp[e];
        }
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) d16[r * V + j] = __float2bfloat16(x[j]);
}
__global__ void k_mask_pad(float *z, int64_t R, int64_t V, int64_t Vr) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < R * V; i += (int64_t)gridDim.x * blockDim.x)
        if (i % V >= Vr) z[i] = FK_LOGIT_MASKED;
}


// One block per row of logits: k rounds of a block argmax, each over the entries that come after
// the previous pick in the order (value descending, id ascending), so the ids come out exactly in
// the CPU's top-k order; NaNs are never picked. lse over the Vr real rows. ok[r] = 0 when the row
// holds no finite maximum or a non-finite lse.
__global__ void k_topk(const float *z, int64_t V, int64_t Vr, int k, const int32_t *labels, int32_t *ids, float *logp, float *ce,
                       int *ok) {
    int64_t r = blockIdx.x;
    const float *x = z + r * V;
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ float pv_s;
    __shared__ int pi_s;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < Vr; j += blockDim.x) mx = fmaxf(mx, x[j]);  // fmaxf skips NaN
    mx = block_reduce(mx, true);
    float s = 0;
    for (int64_t j = threadIdx.x; j < Vr; j += blockDim.x) s += expf(x[j] - mx);
    s = block_reduce(s, false);
    float lse = mx + logf(s);
    float pv = INFINITY;
    int pi = -1;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int round = 0; round < k; round++) {
        float bv = -INFINITY;
        int bi = -1;
        for (int64_t j = threadIdx.x; j < Vr; j += blockDim.x) {
            float v = x[j];
            bool after = v < pv || (v == pv && (int)j > pi);
            if (after && (v > bv || (v == bv && bi >= 0 && (int)j < bi) || bi < 0) && v == v) { bv = v; bi = (int)j; }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) { bv = ov; bi = oi; }
        }
        if (lane == 0) { sv[w] = bv; si[w] = bi; }
        __syncthreads();
        if (threadIdx.x == 0) {
            float b2 = -INFINITY;
            int i2 = -1;
            for (int q = 0; q < nw; q++)
                if (si[q] >= 0 && (i2 < 0 || sv[q] > b2 || (sv[q] == b2 && si[q] < i2))) { b2 = sv[q]; i2 = si[q]; }
            ids[r * k + round] = i2;
            logp[r * k + round] = i2 >= 0 ? b2 - lse : -INFINITY;
            pv_s = b2;
            pi_s = i2;
        }
        __syncthreads();
        pv = pv_s;
        pi = pi_s;
        if (pi < 0) {  // fewer than k values: pad
            for (int q = round + 1 + (int)threadIdx.x; q < k; q += blockDim.x) { ids[r * k + q] = -1; logp[r * k + q] = -INFINITY; }
            break;
        }
    }
    if (threadIdx.x == 0) {
        int t = labels[r];
        ce[r] = t >= 0 ? lse - x[t] : NAN;
        ok[r] = isfinite(lse) && ids[r * k] >= 0 && (t < 0 || isfinite(ce[r]));
    }
}

// ------------------------------------------------------------------ optimizer
__global__ void k_adamw(float *w, bf16 *w16, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                        float eps, float decay, float step_size, float bc2_sqrt, float gs) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float gj = g[i] * gs;
        float mj = b1 * m[i] + (1.0f - b1) * gj, vj = b2 * v[i] + (1.0f - b2) * gj * gj;
        m[i] = mj;
        v[i] = vj;
        float wj = w[i] * decay - step_size * mj / (sqrtf(vj) / bc2_sqrt + eps);
        w[i] = wj;
        w16[i] = __float2bfloat16(wj);
    }
}
__global__ void k_sumsq(double *out, const float *g, int64_t n) {
    float s = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) s += g[i] * g[i];
    s = block_reduce(s, false);
    if (threadIdx.x == 0) atomicAdd(out, (double)s);
}

// ================================================================== host side
extern "C" fk_status fk_device_parse(const char *s, fk_device *out) {
    if (s && strcmp(s, "cpu") == 0) { *out = FK_DEVICE_CPU; return FK_OK; }
    if (s && strcmp(s, "cuda") == 0) { *out = FK_DEVICE_CUDA; return FK_OK; }
    return fk_error(FK_ERR_ARG, "--device must be cpu or cuda, not '%s'", s ? s : "");
}
extern "C" const char *fk_device_name(fk_device d) { return d == FK_DEVICE_CUDA ? "cuda" : "cpu"; }
extern "C" bool fk_gpu_built(void) { return true; }

extern "C" fk_status fk_gpu_describe(char *buf, size_t n) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) return fk_error(FK_ERR_UNSUPPORTED, "no CUDA device: %s", cudaGetErrorString(e));
    if (count < 1) return fk_error(FK_ERR_UNSUPPORTED, "no CUDA device: the runtime sees none");
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0), "device properties");
    snprintf(buf, n, "%.200s, %.1f GiB, compute %d.%d, %d SMs", p.name, (double)p.totalGlobalMem / (1 << 30), p.major, p.minor,
             p.multiProcessorCount);
    return FK_OK;
}

static bool hd_supported(int64_t hd) { return hd == 32 || hd == 64 || hd == 80 || hd == 96 || hd == 128 || hd == 256; }

extern "C" fk_status fk_gpu_supports(const fk_config *c) {
    const char *no = NULL;
    if (c->n_expert > 0) no = "mixture-of-experts layers";
    else if (c->alibi_bias_max > 0) no = "ALiBi";
    else if (c->clip_qkv > 0) no = "clip_qkv";
    else if (c->qk_norm || c->qk_norm_whole || c->qk_norm_ln) no = "QK-norm";
    else if (c->post_norms) no = "post-norms";
    else if (c->no_pre_norms) no = "models without pre-norms";
    else if (c->residual != FK_RESID_SEQUENTIAL) no = "parallel residual blocks";
    else if (c->attn_softcap > 0) no = "attention soft-capping";
    else if (c->final_softcap > 0) no = "final-logit soft-capping";
    else if (!hd_supported(c->head_dim)) no = "this head size (it has kernels for 32, 64, 80, 96, 128 and 256)";
    if (no) return fk_error(FK_ERR_UNSUPPORTED, "the CUDA engine does not implement %s yet (head_dim %lld): use --device cpu", no,
                            (long long)c->head_dim);
    return FK_OK;
}

// Per-layer sizes of the activation buffers.
typedef struct {
    int64_t H, D, QD, F, UP;
} layer_dims;
static layer_dims dims_of(const fk_config *c, int64_t l) {
    layer_dims d;
    d.H = fk_config_heads(c, l);
    d.D = d.H * c->head_dim;
    d.QD = (d.H + 2 * c->n_kv_head) * c->head_dim;
    d.F = c->ffn[l];
    d.UP = fk_config_gated(c) ? 2 * d.F : d.F;
    return d;
}

// Head chunk rows: the logits of R rows (fp32 and bf16) within about 512 MiB.
static int64_t head_rows(const fk_config *c, int64_t N) {
    int64_t r = ((int64_t)512 << 20) / (6 * c->vocab_size);
    if (r < 1) r = 1;
    return r < N ? r : N;
}

// Float counts of the activations (f: fp32, h: bf16) of B x T tokens.
static void act_counts(const fk_config *c, int64_t N, int64_t B, int64_t T, bool train, int64_t *f, int64_t *h) {
    int64_t C = c->d_model, L = c->n_layer, sf = 0, sh = 0, maxQD = 0, maxD = 0, maxUP = 0, maxF = 0;
    for (int64_t l = 0; l < L; l++) {
        layer_dims d = dims_of(c, l);
        int64_t s = train ? 1 : (l == 0);
        sf += s * (2 * N + N * d.QD + N * d.D + 2 * N + N * d.UP + B * d.H * T);  // ln1/ln2 mean+rstd, qkv, att, pre, lse
        sh += s * (2 * N * C + N * d.D + N * d.F);                                // ln1, ln2, att, act
        maxQD = d.QD > maxQD ? d.QD : maxQD; maxD = d.D > maxD ? d.D : maxD;
        maxUP = d.UP > maxUP ? d.UP : maxUP; maxF = d.F > maxF ? d.F : maxF;
    }
    int64_t R = head_rows(c, N), V = c->vocab_size;
    sf += (train ? (2 * L + 1) : 2) * N * C + N * C;  // resid (L+1 slots), mid (L), tmp
    sf += 2 * N + R * V + 3 * N;                      // lnf mean/rstd, logits chunk, losses
    sh += N * C + R * V;                              // lnf, dlogits
    if (train) {
        int64_t big = N * (maxQD > maxUP ? maxQD : maxUP);
        sf += N * C + N * C + N * maxQD + N * maxD + N * maxUP + N * maxF + B * (c->n_head) * T;  // dres, dln, dqkv, datt, dpre, dact, Dd
        sh += big;
    }
    *f = sf;
    *h = sh;
}

extern "C" fk_status fk_gpu_bytes(const fk_model *m, int B, int T, bool train, size_t *bytes) {
    int64_t f, h, n = m->n_floats;
    act_counts(&m->cfg, (int64_t)B * T, B, T, train, &f, &h);
    double b = 6.0 * n + (train ? 12.0 * n : 0) + 4.0 * f + 2.0 * h + 64.0 * (1 << 20);  // + cuBLASLt workspace, tables
    *bytes = (size_t)b;
    return FK_OK;
}

typedef struct {
    bool used;
    int ta, tb, m, n, k, lda, ldb, ldc, beta1;
    cublasLtMatmulAlgo_t algo;
} mm_cache_entry;
#define MM_CACHE 128

struct fk_gpu {
    fk_model *m;
    fk_config c;
    int B, T;
    bool train;
    int64_t n;  // arena floats
    float *w, *g, *mo, *ve;
    bf16 *w16;
    // activations
    float *resid, *mid, *tmp, *ln1m, *ln1r, *ln2m, *ln2r, *qkv, *att, *pre, *lse, *lnfm, *lnfr, *logits, *losses, *flosses;
    bf16 *ln1, *ln2, *att16, *act, *lnf, *dlog16, *big16;
    float *dres, *dln, *dqkv, *datt, *dpre, *dact, *Dd;
    int64_t *off_qkv, *off_att, *off_pre, *off_lse, *off_act, *off_att16;  // per layer, in elements
    int32_t *tok, *tgt;
    int64_t *trow;
    int32_t *tid;
    float *tp;
    int64_t t_cap;
    float *rope_cos, *rope_sin, *rope_cos_l, *rope_sin_l;
    double *dsum;
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_size;
    mm_cache_entry cache[MM_CACHE];
    size_t held;
    void *allocs[64];
    int n_allocs;
    float *host_losses;
};

static fk_status galloc(fk_gpu *g, void **p, size_t bytes, const char *what) {
    if (bytes == 0) bytes = 16;
    if (g->n_allocs >= 64) return fk_error(FK_ERR_NOMEM, "CUDA: too many allocations");
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess)
        return fk_error(FK_ERR_NOMEM, "CUDA: allocating %s (%.1f MiB): %s", what, (double)bytes / (1 << 20), cudaGetErrorString(e));
    g->allocs[g->n_allocs++] = *p;
    g->held += bytes;
    return FK_OK;
}
#define GALLOC(ptr, count, what) FK_TRY(galloc(g, (void **)&(ptr), (size_t)(count) * sizeof(*(ptr)), what))

extern "C" void fk_gpu_close(fk_gpu *g) {
    if (!g) return;
    for (int i = 0; i < g->n_allocs; i++) cudaFree(g->allocs[i]);
    if (g->lt) cublasLtDestroy(g->lt);
    free(g->off_qkv);
    free(g->host_losses);
    free(g);
}

// C (m x n, column-major, ldc) = alpha op(A) op(B) + beta C with bf16 A and B, fp32 C, fp32 accumulation.
static fk_status mm(fk_gpu *g, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const bf16 *A, int64_t lda, const bf16 *B,
                    int64_t ldb, float *C, int64_t ldc, float beta) {
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    CKL(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul descriptor");
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
    cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb ? n : k, tb ? k : n, ldb);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc);
    mm_cache_entry key;
    memset(&key, 0, sizeof key);
    key.used = true; key.ta = ta; key.tb = tb; key.m = (int)m; key.n = (int)n; key.k = (int)k;
    key.lda = (int)lda; key.ldb = (int)ldb; key.ldc = (int)ldc; key.beta1 = beta != 0;
    mm_cache_entry *hit = NULL;
    for (int i = 0; i < MM_CACHE && g->cache[i].used; i++) {
        mm_cache_entry *e = &g->cache[i];
        if (e->ta == key.ta && e->tb == key.tb && e->m == key.m && e->n == key.n && e->k == key.k && e->lda == key.lda &&
            e->ldb == key.ldb && e->ldc == key.ldc && e->beta1 == key.beta1) { hit = e; break; }
    }
    fk_status st = FK_OK;
    if (!hit) {
        cublasLtMatmulPreference_t pref;
        cublasLtMatmulPreferenceCreate(&pref);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g->ws_size, sizeof g->ws_size);
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g->lt, desc, la, lb, lc, lc, pref, 1, &res, &found);
        cublasLtMatmulPreferenceDestroy(pref);
        if (s != CUBLAS_STATUS_SUCCESS || found < 1)
            st = fk_error(FK_ERR_UNSUPPORTED, "cuBLASLt: no algorithm for a %lld x %lld x %lld bf16 product (status %d)", (long long)m,
                          (long long)n, (long long)k, (int)s);
        else {
            int slot = 0;
            while (slot < MM_CACHE - 1 && g->cache[slot].used) slot++;
            key.algo = res.algo;
            g->cache[slot] = key;
            hit = &g->cache[slot];
        }
    }
    if (st == FK_OK) {
        float alpha = 1.0f;
        cublasStatus_t s = cublasLtMatmul(g->lt, desc, &alpha, A, la, B, lb, &beta, C, lc, C, lc, &hit->algo, g->ws, g->ws_size, 0);
        if (s != CUBLAS_STATUS_SUCCESS)
            st = fk_error(FK_ERR_UNSUPPORTED, "cuBLASLt: a %lld x %lld x %lld product failed (status %d)", (long long)m, (long long)n,
                          (long long)k, (int)s);
    }
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(desc);
    return st;
}
// y (N, out) = x (N, in) W^T (W (out, in) row-major), + beta y
static fk_status lin_fwd(fk_gpu *g, float *y, const bf16 *x, int64_t woff, int64_t N, int64_t in, int64_t out, float beta) {
    return mm(g, true, false, out, N, in, g->w16 + woff, in, x, in, y, out, beta);
}
// dx (N, in) = dy (N, out) W
static fk_status lin_dx(fk_gpu *g, float *dx, const bf16 *dy, int64_t woff, int64_t N, int64_t in, int64_t out) {
    return mm(g, false, false, in, N, out, g->w16 + woff, in, dy, out, dx, in, 0.0f);
}
// dW (out, in) += dy^T x
static fk_status lin_dw(fk_gpu *g, int64_t woff, const bf16 *dy, const bf16 *x, int64_t N, int64_t in, int64_t out) {
    return mm(g, false, true, in, out, N, x, in, dy, out, g->g + woff, in, 1.0f);
}

static fk_status bias_add(float *y, const float *b, int64_t N, int64_t C) {
    LAUNCH("bias", k_bias_add, blocks_for(N * C, 256), 256, y, b, N, C);
    return FK_OK;
}
static fk_status colsum(float *db, const float *dy, int64_t N, int64_t C) {
    dim3 grid((unsigned)((C + 255) / 256), (unsigned)((N + COL_ROWS - 1) / COL_ROWS));
    LAUNCH("bias gradient", k_colsum, grid, 256, (float *)NULL, db, dy, (const float *)NULL, (const float *)NULL, (const float *)NULL, N, C);
    return FK_OK;
}
static fk_status to_bf16(bf16 *o, const float *x, int64_t n) {
    LAUNCH("to bf16", k_f2bf, blocks_for(n, 256), 256, o, x, n);
    return FK_OK;
}
#define WOFF(o) ((o) >= 0 ? g->w + (o) : (float *)NULL)
#define GOFF(o) ((o) >= 0 ? g->g + (o) : (float *)NULL)

static fk_status norm_fwd(fk_gpu *g, bf16 *y, float *mean, float *rstd, const float *x, int64_t w, int64_t b, int64_t N) {
    const fk_config *c = &g->c;
    bool ln = c->norm == FK_NORM_LAYERNORM;
    LAUNCH("norm", k_norm_fwd, (unsigned)((N + 7) / 8), 256, y, ln ? mean : (float *)NULL, rstd, x, g->w + w, ln ? WOFF(b) : (float *)NULL,
           N, c->d_model, c->norm_eps, c->norm_offset, (int)ln);
    return FK_OK;
}
static fk_status norm_bwd(fk_gpu *g, float *dx, const float *dy, const float *x, const float *mean, const float *rstd, int64_t w,
                          int64_t b, int64_t N) {
    const fk_config *c = &g->c;
    bool ln = c->norm == FK_NORM_LAYERNORM;
    LAUNCH("norm backward", k_norm_bwd, (unsigned)((N + 7) / 8), 256, dx, dy, x, g->w + w, ln ? mean : (const float *)NULL, rstd, N,
           c->d_model, c->norm_offset, (int)ln);
    dim3 grid((unsigned)((c->d_model + 255) / 256), (unsigned)((N + COL_ROWS - 1) / COL_ROWS));
    LAUNCH("norm weight gradient", k_colsum, grid, 256, g->g + w, ln ? GOFF(b) : (float *)NULL, dy, x, ln ? mean : (const float *)NULL,
           rstd, N, c->d_model);
    return FK_OK;
}

template <int HD>
static fk_status att_launch(int which, att_args a, float *out, bf16 *out16, float *lse, float *dqkv, const float *dout,
                            const float *Dd) {
    dim3 gq((unsigned)((a.T + ATT_THREADS - 1) / ATT_THREADS), (unsigned)(a.B * a.H));
    dim3 gk((unsigned)((a.T + ATT_THREADS - 1) / ATT_THREADS), (unsigned)(a.B * a.KVH));
    if (which == 0) LAUNCH("attention", k_att_fwd<HD>, gq, ATT_THREADS, a, out, out16, lse);
    else {
        LAUNCH("attention backward (dq)", k_att_bwd_dq<HD>, gq, ATT_THREADS, a, dqkv, dout, lse, Dd);
        LAUNCH("attention backward (dk, dv)", k_att_bwd_dkv<HD>, gk, ATT_THREADS, a, dqkv, dout, lse, Dd);
    }
    return FK_OK;
}
static fk_status attention(int which, int64_t hd, att_args a, float *out, bf16 *out16, float *lse, float *dqkv, const float *dout,
                           const float *Dd) {
    switch (hd) {
    case 32: return att_launch<32>(which, a, out, out16, lse, dqkv, dout, Dd);
    case 64: return att_launch<64>(which, a, out, out16, lse, dqkv, dout, Dd);
    case 80: return att_launch<80>(which, a, out, out16, lse, dqkv, dout, Dd);
    case 96: return att_launch<96>(which, a, out, out16, lse, dqkv, dout, Dd);
    case 128: return att_launch<128>(which, a, out, out16, lse, dqkv, dout, Dd);
    case 256: return att_launch<256>(which, a, out, out16, lse, dqkv, dout, Dd);
    }
    return fk_error(FK_ERR_UNSUPPORTED, "CUDA: no attention kernel for head_dim %lld", (long long)hd);
}

static int act_kind(const fk_config *c) {
    if (c->mlp == FK_MLP_SWIGLU) return 2;
    if (c->mlp == FK_MLP_GEGLU) return 3;
    return c->gelu_exact ? 1 : 0;
}

static void rope_tables(fk_gpu *g, int64_t l, const float **cs, const float **sn) {
    bool local = g->c.sliding[l] && g->rope_cos_l;
    *cs = local ? g->rope_cos_l : g->rope_cos;
    *sn = local ? g->rope_sin_l : g->rope_sin;
}

extern "C" fk_status fk_gpu_open(fk_gpu **out, fk_model *m, int B, int T, bool train) {
    *out = NULL;
    const fk_config *c = &m->cfg;
    FK_TRY(fk_gpu_supports(c));
    if (B < 1 || T < 1 || T > c->max_seq)
        return fk_error(FK_ERR_ARG, "CUDA: batch %d x %d does not fit the model (context %lld)", B, T, (long long)c->max_seq);
    if (train && fk_model_is_frozen(m)) return fk_error(FK_ERR_ARG, "CUDA: a frozen (stored) model cannot be trained");
    char desc[256];
    FK_TRY(fk_gpu_describe(desc, sizeof desc));
    size_t need, fr = 0, tot = 0;
    FK_TRY(fk_gpu_bytes(m, B, T, train, &need));
    CK(cudaMemGetInfo(&fr, &tot), "free memory");
    if (need > fr)
        return fk_error(FK_ERR_NOMEM, "CUDA: the model needs about %.2f GiB on the device for batches of %d x %d%s, and %.2f of its %.2f GiB are free",
                        (double)need / (1 << 30), B, T, train ? " (training)" : "", (double)fr / (1 << 30), (double)tot / (1 << 30));
    fk_gpu *g = (fk_gpu *)calloc(1, sizeof *g);
    if (!g) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = FK_OK;
#define TRY_(x) do { st = (x); if (st != FK_OK) { fk_gpu_close(g); return st; } } while (0)
    g->m = m;
    g->c = *c;
    g->B = B;
    g->T = T;
    g->train = train;
    g->n = m->n_floats;
    int64_t N = (int64_t)B * T, C = c->d_model, L = c->n_layer, n = g->n;
    if (cublasLtCreate(&g->lt) != CUBLAS_STATUS_SUCCESS) { fk_gpu_close(g); return fk_error(FK_ERR_UNSUPPORTED, "cuBLASLt: cannot create a handle"); }
    g->ws_size = (size_t)32 << 20;
    TRY_(galloc(g, &g->ws, g->ws_size, "cuBLASLt workspace"));
    TRY_(galloc(g, (void **)&g->w, (size_t)n * 4, "weights"));
    TRY_(galloc(g, (void **)&g->w16, (size_t)n * 2, "bf16 weights"));
    if (train) {
        TRY_(galloc(g, (void **)&g->g, (size_t)n * 4, "gradients"));
        TRY_(galloc(g, (void **)&g->mo, (size_t)n * 4, "AdamW first moments"));
        TRY_(galloc(g, (void **)&g->ve, (size_t)n * 4, "AdamW second moments"));
        cudaMemset(g->g, 0, (size_t)n * 4);
        cudaMemset(g->mo, 0, (size_t)n * 4);
        cudaMemset(g->ve, 0, (size_t)n * 4);
    }
    // weights: each table entry decoded on the host (stored rows too) and uploaded
    {
        int64_t maxn = 0;
        for (int i = 0; i < m->n_params; i++) maxn = m->params[i].numel > maxn ? m->params[i].numel : maxn;
        float *stage = (float *)malloc((size_t)maxn * sizeof(float));
        if (!stage) { fk_gpu_close(g); return fk_error(FK_ERR_NOMEM, "out of memory staging weights"); }
        cudaMemset(g->w, 0, (size_t)n * 4);
        for (int i = 0; i < m->n_params && st == FK_OK; i++) {
            const fk_param *p = &m->params[i];
            int64_t rows = p->ndim == 2 ? p->shape[0] : 1;
            st = fk_model_read_rows(m, i, 0, rows, stage);
            if (st == FK_OK && cudaMemcpy(g->w + p->offset, stage, (size_t)p->numel * 4, cudaMemcpyHostToDevice) != cudaSuccess)
                st = fk_error(FK_ERR_UNSUPPORTED, "CUDA: uploading %s", p->name);
        }
        free(stage);
        if (st != FK_OK) { fk_gpu_close(g); return st; }
        LAUNCH("to bf16", k_f2bf, blocks_for(n, 256), 256, g->w16, g->w, n);
    }
    // per-layer activation offsets
    g->off_qkv = (int64_t *)calloc((size_t)(6 * L), sizeof(int64_t));
    if (!g->off_qkv) { fk_gpu_close(g); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    g->off_att = g->off_qkv + L; g->off_pre = g->off_att + L; g->off_lse = g->off_pre + L; g->off_act = g->off_lse + L;
    g->off_att16 = g->off_act + L;
    int64_t sq = 0, sa = 0, sp = 0, sl = 0, sc = 0, maxQD = 0, maxD = 0, maxUP = 0, maxF = 0;
    for (int64_t l = 0; l < L; l++) {
        layer_dims d = dims_of(c, l);
        maxQD = d.QD > maxQD ? d.QD : maxQD; maxD = d.D > maxD ? d.D : maxD; maxUP = d.UP > maxUP ? d.UP : maxUP;
        maxF = d.F > maxF ? d.F : maxF;
        if (!train && l > 0) continue;
        g->off_qkv[l] = sq; g->off_att[l] = sa; g->off_pre[l] = sp; g->off_lse[l] = sl; g->off_act[l] = sc;
        sq += N * d.QD; sa += N * d.D; sp += N * d.UP; sl += (int64_t)B * d.H * T; sc += N * d.F;
    }
    if (!train)
        for (int64_t l = 1; l < L; l++) {
            g->off_qkv[l] = 0; g->off_att[l] = 0; g->off_pre[l] = 0; g->off_lse[l] = 0; g->off_act[l] = 0;
        }
    int64_t S = train ? L : 1, R = head_rows(c, N), V = c->vocab_size;
    TRY_(galloc(g, (void **)&g->resid, (size_t)((train ? L + 1 : 1) * N * C) * 4, "residual stream"));
    TRY_(galloc(g, (void **)&g->mid, (size_t)(S * N * C) * 4, "mid-block residual"));
    TRY_(galloc(g, (void **)&g->tmp, (size_t)(N * C) * 4, "branch output"));
    TRY_(galloc(g, (void **)&g->ln1m, (size_t)(S * N) * 4, "norm statistics"));
    TRY_(galloc(g, (void **)&g->ln1r, (size_t)(S * N) * 4, "norm statistics"));
    TRY_(galloc(g, (void **)&g->ln2m, (size_t)(S * N) * 4, "norm statistics"));
    TRY_(galloc(g, (void **)&g->ln2r, (size_t)(S * N) * 4, "norm statistics"));
    TRY_(galloc(g, (void **)&g->qkv, (size_t)sq * 4, "q, k, v"));
    TRY_(galloc(g, (void **)&g->att, (size_t)sa * 4, "attention output"));
    TRY_(galloc(g, (void **)&g->att16, (size_t)sa * 2, "attention output (bf16)"));
    TRY_(galloc(g, (void **)&g->pre, (size_t)sp * 4, "FFN pre-activations"));
    TRY_(galloc(g, (void **)&g->lse, (size_t)sl * 4, "attention log-sum-exp"));
    TRY_(galloc(g, (void **)&g->act, (size_t)sc * 2, "FFN activations"));
    TRY_(galloc(g, (void **)&g->ln1, (size_t)(S * N * C) * 2, "norm outputs"));
    TRY_(galloc(g, (void **)&g->ln2, (size_t)(S * N * C) * 2, "norm outputs"));
    TRY_(galloc(g, (void **)&g->lnf, (size_t)(N * C) * 2, "final norm output"));
    TRY_(galloc(g, (void **)&g->lnfm, (size_t)N * 4, "norm statistics"));
    TRY_(galloc(g, (void **)&g->lnfr, (size_t)N * 4, "norm statistics"));
    TRY_(galloc(g, (void **)&g->logits, (size_t)(R * V) * 4, "logits"));
    TRY_(galloc(g, (void **)&g->dlog16, (size_t)(R * V) * 2, "logit gradients"));
    TRY_(galloc(g, (void **)&g->losses, (size_t)N * 4, "losses"));
    TRY_(galloc(g, (void **)&g->flosses, (size_t)N * 4, "losses"));
    TRY_(galloc(g, (void **)&g->tok, (size_t)N * 4, "tokens"));
    TRY_(galloc(g, (void **)&g->tgt, (size_t)N * 4, "targets"));
    TRY_(galloc(g, (void **)&g->trow, (size_t)(N + 1) * 8, "teacher rows"));
    TRY_(galloc(g, (void **)&g->dsum, 8, "norm"));
    if (train) {
        int64_t big = N * (maxQD > maxUP ? maxQD : maxUP);
        big = big > N * C ? big : N * C;
        TRY_(galloc(g, (void **)&g->dres, (size_t)(N * C) * 4, "residual gradient"));
        TRY_(galloc(g, (void **)&g->dln, (size_t)(N * C) * 4, "norm gradient"));
        TRY_(galloc(g, (void **)&g->dqkv, (size_t)(N * maxQD) * 4, "q, k, v gradient"));
        TRY_(galloc(g, (void **)&g->datt, (size_t)(N * maxD) * 4, "attention gradient"));
        TRY_(galloc(g, (void **)&g->dpre, (size_t)(N * maxUP) * 4, "FFN gradient"));
        TRY_(galloc(g, (void **)&g->dact, (size_t)(N * maxF) * 4, "FFN gradient"));
        TRY_(galloc(g, (void **)&g->Dd, (size_t)((int64_t)B * c->n_head * T) * 4, "attention row terms"));
        TRY_(galloc(g, (void **)&g->big16, (size_t)big * 2, "bf16 gradients"));
    }
    if (c->pos == FK_POS_ROPE) {
        const float *cs, *sn, *csl, *snl;
        TRY_(fk_model_rope_tables(m, T, &cs, &sn, &csl, &snl));
        int64_t half = fk_config_rotary_dim(c) / 2, nb = (int64_t)T * half * 4;
        TRY_(galloc(g, (void **)&g->rope_cos, (size_t)nb, "RoPE table"));
        TRY_(galloc(g, (void **)&g->rope_sin, (size_t)nb, "RoPE table"));
        cudaMemcpy(g->rope_cos, cs, (size_t)nb, cudaMemcpyHostToDevice);
        cudaMemcpy(g->rope_sin, sn, (size_t)nb, cudaMemcpyHostToDevice);
        if (csl) {
            TRY_(galloc(g, (void **)&g->rope_cos_l, (size_t)nb, "RoPE table"));
            TRY_(galloc(g, (void **)&g->rope_sin_l, (size_t)nb, "RoPE table"));
            cudaMemcpy(g->rope_cos_l, csl, (size_t)nb, cudaMemcpyHostToDevice);
            cudaMemcpy(g->rope_sin_l, snl, (size_t)nb, cudaMemcpyHostToDevice);
        }
    }
    g->host_losses = (float *)malloc((size_t)N * 2 * sizeof(float));
    if (!g->host_losses) { fk_gpu_close(g); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) { fk_gpu_close(g); return fk_error(FK_ERR_UNSUPPORTED, "CUDA: opening the model: %s", cudaGetErrorString(e)); }
#undef TRY_
    *out = g;
    return FK_OK;
}

extern "C" size_t fk_gpu_held_bytes(const fk_gpu *g) { return g->held; }

static fk_status upload_batch(fk_gpu *g, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher, int B, int T,
                              int64_t *n_scored) {
    const fk_config *c = &g->c;
    int64_t N = (int64_t)B * T, V = c->vocab_size;
    if (B < 1 || T < 1 || B > g->B || T > g->T)
        return fk_error(FK_ERR_ARG, "CUDA: batch %d x %d is larger than the %d x %d the model was opened for", B, T, g->B, g->T);
    *n_scored = 0;
    for (int64_t i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return fk_error(FK_ERR_ARG, "forward: token %d at position %lld is outside the vocabulary (size %lld)", tokens[i], (long long)i,
                            (long long)V);
        if (targets && targets[i] >= V)
            return fk_error(FK_ERR_ARG, "forward: target %d at position %lld is outside the vocabulary (size %lld)", targets[i],
                            (long long)i, (long long)V);
        if (targets && targets[i] >= 0) (*n_scored)++;
    }
    CK(cudaMemcpy(g->tok, tokens, (size_t)N * 4, cudaMemcpyHostToDevice), "uploading tokens");
    if (targets) CK(cudaMemcpy(g->tgt, targets, (size_t)N * 4, cudaMemcpyHostToDevice), "uploading targets");
    else CK(cudaMemset(g->tgt, 0xff, (size_t)N * 4), "targets");
    if (teacher) {
        int64_t ne = teacher->row[N];
        for (int64_t i = 0; i < N; i++) {
            if (teacher->row[i + 1] < teacher->row[i])
                return fk_error(FK_ERR_ARG, "forward: teacher rows are not increasing at position %lld", (long long)i);
            for (int64_t e = teacher->row[i]; e < teacher->row[i + 1]; e++)
                if (teacher->ids[e] < 0 || teacher->ids[e] >= V || !(teacher->p[e] >= 0))
                    return fk_error(FK_ERR_ARG, "forward: teacher entry %lld at position %lld (id %d, p %g) is invalid for vocabulary %lld",
                                    (long long)e, (long long)i, teacher->ids[e], teacher->p[e], (long long)V);
        }
        if (ne > g->t_cap) {
            int64_t cap = ne * 2;
            FK_TRY(galloc(g, (void **)&g->tid, (size_t)cap * 4, "teacher ids"));
            FK_TRY(galloc(g, (void **)&g->tp, (size_t)cap * 4, "teacher probabilities"));
            g->t_cap = cap;
        }
        int64_t r0 = teacher->row[0];
        // rows relative to the first entry
        int64_t *rows = (int64_t *)malloc((size_t)(N + 1) * 8);
        if (!rows) return fk_error(FK_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i <= N; i++) rows[i] = teacher->row[i] - r0;
        cudaError_t e1 = cudaMemcpy(g->trow, rows, (size_t)(N + 1) * 8, cudaMemcpyHostToDevice);
        free(rows);
        CK(e1, "uploading teacher rows");
        if (ne - r0 > 0) {
            CK(cudaMemcpy(g->tid, teacher->ids + r0, (size_t)(ne - r0) * 4, cudaMemcpyHostToDevice), "uploading teacher ids");
            CK(cudaMemcpy(g->tp, teacher->p + r0, (size_t)(ne - r0) * 4, cudaMemcpyHostToDevice), "uploading teacher probabilities");
        }
    }
    return FK_OK;
}

// The layers' forward over the batch in g->tok: the final residual is returned in *xL.
static fk_status layers_forward(fk_gpu *g, int B, int T, float **xL) {
    const fk_config *c = &g->c;
    int64_t N = (int64_t)B * T, C = c->d_model, L = c->n_layer, hd = c->head_dim, KVH = c->n_kv_head;
    bool tr = g->train;
    LAUNCH("embedding", k_embed, blocks_for(N * C, 256), 256, g->resid, g->w + g->m->tok_emb, WOFF(g->m->pos_emb), g->tok, N,
           (int64_t)T, C, c->emb_scale);
    for (int64_t l = 0; l < L; l++) {
        const fk_layer_offsets *o = &g->m->layer[l];
        layer_dims d = dims_of(c, l);
        int64_t s = tr ? l : 0;
        float *x = g->resid + (tr ? l * N * C : 0), *mid = g->mid + s * N * C, *out = g->resid + (tr ? (l + 1) * N * C : 0);
        bf16 *ln1 = g->ln1 + s * N * C, *ln2 = g->ln2 + s * N * C;
        float *qkv = g->qkv + g->off_qkv[l], *att = g->att + g->off_att[l], *pre = g->pre + g->off_pre[l], *lse = g->lse + g->off_lse[l];
        bf16 *att16 = g->att16 + g->off_att[l], *act = g->act + g->off_act[l];
        FK_TRY(norm_fwd(g, ln1, g->ln1m + s * N, g->ln1r + s * N, x, o->ln1_w, o->ln1_b, N));
        FK_TRY(lin_fwd(g, qkv, ln1, o->qkv_w, N, C, d.QD, 0));
        if (o->qkv_b >= 0) FK_TRY(bias_add(qkv, g->w + o->qkv_b, N, d.QD));
        if (c->pos == FK_POS_ROPE) {
            const float *cs, *sn;
            rope_tables(g, l, &cs, &sn);
            int64_t rd = fk_config_rotary_dim(c);
            LAUNCH("rope", k_rope, blocks_for(N * (d.H + KVH) * (rd / 2), 256), 256, qkv, cs, sn, N, (int64_t)T, d.H + KVH, hd, rd, d.QD,
                   1.0f);
        }
        att_args aa = {qkv, B, T, d.H, KVH, d.QD, c->sliding[l] ? c->sliding_window : 0,
                       c->attn_scale > 0 ? c->attn_scale : (float)(1 / sqrt((double)hd))};
        FK_TRY(attention(0, hd, aa, att, att16, lse, NULL, NULL, NULL));
        FK_TRY(lin_fwd(g, g->tmp, att16, o->o_w, N, d.D, C, 0));
        if (o->o_b >= 0) FK_TRY(bias_add(g->tmp, g->w + o->o_b, N, C));
        LAUNCH("residual", k_add, blocks_for(N * C, 256), 256, mid, x, g->tmp, N * C);
        FK_TRY(norm_fwd(g, ln2, g->ln2m + s * N, g->ln2r + s * N, mid, o->ln2_w, o->ln2_b, N));
        FK_TRY(lin_fwd(g, pre, ln2, o->up_w, N, C, d.UP, 0));
        if (o->up_b >= 0) FK_TRY(bias_add(pre, g->w + o->up_b, N, d.UP));
        LAUNCH("activation", k_act_fwd, blocks_for(N * d.F, 256), 256, act, pre, N, d.F, act_kind(c));
        FK_TRY(lin_fwd(g, g->tmp, act, o->down_w, N, d.F, C, 0));
        if (o->down_b >= 0) FK_TRY(bias_add(g->tmp, g->w + o->down_b, N, C));
        LAUNCH("residual", k_add, blocks_for(N * C, 256), 256, out, mid, g->tmp, N * C);
    }
    *xL = g->resid + (tr ? L * N * C : 0);
    return FK_OK;
}

// The head over row chunks: logits, loss, and with train the logits' gradient carried back to the
// final norm's output (g->dln) and the head's weights. logits_out: the full (N, V) logits to the host.
static fk_status head(fk_gpu *g, int64_t N, const float *xL, bool train, float lambda, float scale, bool teacher, float *logits_out) {
    const fk_config *c = &g->c;
    fk_model *m = g->m;
    int64_t C = c->d_model, V = c->vocab_size, Vr = fk_model_vocab_real(m), R = head_rows(c, N);
    FK_TRY(norm_fwd(g, g->lnf, g->lnfm, g->lnfr, xL, m->lnf_w, m->lnf_b, N));
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        int64_t rows = r0 + R < N ? R : N - r0;
        FK_TRY(lin_fwd(g, g->logits, g->lnf + r0 * C, m->lm_head, rows, C, V, 0));
        if (m->lm_head_b >= 0) FK_TRY(bias_add(g->logits, g->w + m->lm_head_b, rows, V));
        if (logits_out) {
            if (Vr < V) LAUNCH("padding mask", k_mask_pad, blocks_for(rows * V, 256), 256, g->logits, rows, V, Vr);
            CK(cudaMemcpy(logits_out + r0 * V, g->logits, (size_t)(rows * V) * 4, cudaMemcpyDeviceToHost), "downloading logits");
        }
        LAUNCH("cross-entropy", k_ce, (unsigned)rows, 1024, g->logits, g->dlog16, g->losses + r0, g->flosses + r0, g->tgt + r0,
               teacher ? g->trow + r0 : (const int64_t *)NULL, g->tid, g->tp, V, Vr, lambda, scale, (int)train);
        if (!train) continue;
        FK_TRY(lin_dx(g, g->dln + r0 * C, g->dlog16, m->lm_head, rows, C, V));
        FK_TRY(lin_dw(g, m->lm_head, g->dlog16, g->lnf + r0 * C, rows, C, V));
        if (m->lm_head_b >= 0) FK_TRY(colsum(g->g + m->lm_head_b, g->logits, rows, V));
    }
    return FK_OK;
}

// Mean loss (and the teacher term's) over the scored positions, from the device's per-row values.
static fk_status read_losses(fk_gpu *g, int64_t N, int64_t n_scored, bool teacher, float lambda, float *loss, float *fusion_loss,
                             float *token_losses) {
    float *hl = g->host_losses, *hf = hl + N;
    CK(cudaMemcpy(hl, g->losses, (size_t)N * 4, cudaMemcpyDeviceToHost), "downloading losses");
    if (teacher) CK(cudaMemcpy(hf, g->flosses, (size_t)N * 4, cudaMemcpyDeviceToHost), "downloading losses");
    double s = 0, fs = 0;
    for (int64_t i = 0; i < N; i++) { s += hl[i]; if (teacher) fs += hf[i]; }
    float mean = n_scored > 0 ? (float)(s / (double)n_scored) : 0.0f, fmean = n_scored > 0 ? (float)(fs / (double)n_scored) : 0.0f;
    if (token_losses) memcpy(token_losses, hl, (size_t)N * 4);
    if (loss) *loss = teacher ? lambda * mean + (1 - lambda) * fmean : mean;
    if (fusion_loss) *fusion_loss = teacher ? fmean : mean;
    return FK_OK;
}

extern "C" fk_status fk_gpu_forward(fk_gpu *g, const int32_t *tokens, const int32_t *targets, int B, int T, float *loss,
                                    float *token_losses, float *logits) {
    int64_t ns = 0;
    FK_TRY(upload_batch(g, tokens, targets, NULL, B, T, &ns));
    bool tr = g->train;
    g->train = false;  // an inference forward: the layout's first slot, nothing kept
    float *xL;
    fk_status st = layers_forward(g, B, T, &xL);
    if (st == FK_OK) st = head(g, (int64_t)B * T, xL, false, 1.0f, 0.0f, false, logits);
    g->train = tr;
    FK_TRY(st);
    CK(cudaDeviceSynchronize(), "forward");
    return read_losses(g, (int64_t)B * T, ns, false, 1.0f, loss, NULL, token_losses);
}

extern "C" fk_status fk_gpu_train_step(fk_gpu *g, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher,
                                       float lambda, int B, int T, float grad_scale, float *loss, float *fusion_loss) {
    if (!g->train) return fk_error(FK_ERR_ARG, "CUDA: the model was opened for inference only");
    if (!targets) return fk_error(FK_ERR_ARG, "CUDA: a training step needs targets");
    const fk_config *c = &g->c;
    fk_model *m = g->m;
    int64_t ns = 0;
    FK_TRY(upload_batch(g, tokens, targets, teacher, B, T, &ns));
    int64_t N = (int64_t)B * T, C = c->d_model, L = c->n_layer, hd = c->head_dim, KVH = c->n_kv_head;
    float *xL;
    FK_TRY(layers_forward(g, B, T, &xL));
    float scale = ns > 0 ? grad_scale / (float)ns : 0.0f;
    FK_TRY(head(g, N, xL, true, teacher ? lambda : 1.0f, scale, teacher != NULL, NULL));
    // final norm: dres = d(lnf input)
    CK(cudaMemset(g->dres, 0, (size_t)(N * C) * 4), "gradient");
    FK_TRY(norm_bwd(g, g->dres, g->dln, xL, g->lnfm, g->lnfr, m->lnf_w, m->lnf_b, N));
    for (int64_t l = L - 1; l >= 0; l--) {
        const fk_layer_offsets *o = &m->layer[l];
        layer_dims d = dims_of(c, l);
        float *x = g->resid + l * N * C, *mid = g->mid + l * N * C;
        bf16 *ln1 = g->ln1 + l * N * C, *ln2 = g->ln2 + l * N * C;
        float *qkv = g->qkv + g->off_qkv[l], *att = g->att + g->off_att[l], *pre = g->pre + g->off_pre[l], *lse = g->lse + g->off_lse[l];
        bf16 *att16 = g->att16 + g->off_att[l], *act = g->act + g->off_act[l];
        // FFN: out = mid + down(act(up(ln2(mid))))
        FK_TRY(to_bf16(g->big16, g->dres, N * C));
        FK_TRY(lin_dw(g, o->down_w, g->big16, act, N, d.F, C));
        if (o->down_b >= 0) FK_TRY(colsum(g->g + o->down_b, g->dres, N, C));
        FK_TRY(lin_dx(g, g->dact, g->big16, o->down_w, N, d.F, C));
        LAUNCH("activation backward", k_act_bwd, blocks_for(N * d.F, 256), 256, g->dpre, g->big16, g->dact, pre, N, d.F, act_kind(c));
        FK_TRY(lin_dw(g, o->up_w, g->big16, ln2, N, C, d.UP));
        if (o->up_b >= 0) FK_TRY(colsum(g->g + o->up_b, g->dpre, N, d.UP));
        FK_TRY(lin_dx(g, g->dln, g->big16, o->up_w, N, C, d.UP));
        FK_TRY(norm_bwd(g, g->dres, g->dln, mid, g->ln2m + l * N, g->ln2r + l * N, o->ln2_w, o->ln2_b, N));
        // attention: mid = x + o(att(rope(qkv(ln1(x)))))
        FK_TRY(to_bf16(g->big16, g->dres, N * C));
        FK_TRY(lin_dw(g, o->o_w, g->big16, att16, N, d.D, C));
        if (o->o_b >= 0) FK_TRY(colsum(g->g + o->o_b, g->dres, N, C));
        FK_TRY(lin_dx(g, g->datt, g->big16, o->o_w, N, d.D, C));
        LAUNCH("attention row terms", k_att_dot, blocks_for((int64_t)B * d.H * T, 256), 256, g->Dd, g->datt, att, (int64_t)B, (int64_t)T,
               d.H, hd);
        att_args aa = {qkv, B, T, d.H, KVH, d.QD, c->sliding[l] ? c->sliding_window : 0,
                       c->attn_scale > 0 ? c->attn_scale : (float)(1 / sqrt((double)hd))};
        FK_TRY(attention(1, hd, aa, NULL, NULL, lse, g->dqkv, g->datt, g->Dd));
        if (c->pos == FK_POS_ROPE) {
            const float *cs, *sn;
            rope_tables(g, l, &cs, &sn);
            int64_t rd = fk_config_rotary_dim(c);
            LAUNCH("rope backward", k_rope, blocks_for(N * (d.H + KVH) * (rd / 2), 256), 256, g->dqkv, cs, sn, N, (int64_t)T, d.H + KVH,
                   hd, rd, d.QD, -1.0f);
        }
        FK_TRY(to_bf16(g->big16, g->dqkv, N * d.QD));
        if (o->qkv_b >= 0) FK_TRY(colsum(g->g + o->qkv_b, g->dqkv, N, d.QD));
        FK_TRY(lin_dw(g, o->qkv_w, g->big16, ln1, N, C, d.QD));
        FK_TRY(lin_dx(g, g->dln, g->big16, o->qkv_w, N, C, d.QD));
        FK_TRY(norm_bwd(g, g->dres, g->dln, x, g->ln1m + l * N, g->ln1r + l * N, o->ln1_w, o->ln1_b, N));
    }
    LAUNCH("embedding backward", k_embed_bwd, blocks_for(N * C, 256), 256, g->g + m->tok_emb, GOFF(m->pos_emb), g->dres, g->tok, N,
           (int64_t)T, C, c->emb_scale);
    CK(cudaDeviceSynchronize(), "training step");
    return read_losses(g, N, ns, teacher != NULL, lambda, loss, fusion_loss, NULL);
}


extern "C" fk_status fk_gpu_topk(fk_gpu *g, const int32_t *tokens, const int32_t *labels, int B, int T, int k, int32_t *ids, float *logp,
                                 float *ce) {
    if (k < 1 || k > 255) return fk_error(FK_ERR_ARG, "CUDA: top-k of %d (1..255)", k);
    int64_t ns = 0, N = (int64_t)B * T;
    FK_TRY(upload_batch(g, tokens, labels, NULL, B, T, &ns));
    const fk_config *c = &g->c;
    int64_t C = c->d_model, V = c->vocab_size, Vr = fk_model_vocab_real(g->m), R = head_rows(c, g->B * (int64_t)g->T);
    if (N * k > g->t_cap) {
        int64_t cap = N * k;
        FK_TRY(galloc(g, (void **)&g->tid, (size_t)cap * 4, "top-k ids"));
        FK_TRY(galloc(g, (void **)&g->tp, (size_t)cap * 4, "top-k values"));
        g->t_cap = cap;
    }
    int *ok = (int *)g->flosses;  // N ints: the rows' checks (the losses buffer is not used here)
    bool tr = g->train;
    g->train = false;
    float *xL;
    fk_status st = layers_forward(g, B, T, &xL);
    g->train = tr;
    FK_TRY(st);
    fk_model *m = g->m;
    FK_TRY(norm_fwd(g, g->lnf, g->lnfm, g->lnfr, xL, m->lnf_w, m->lnf_b, N));
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        int64_t rows = r0 + R < N ? R : N - r0;
        FK_TRY(lin_fwd(g, g->logits, g->lnf + r0 * C, m->lm_head, rows, C, V, 0));
        if (m->lm_head_b >= 0) FK_TRY(bias_add(g->logits, g->w + m->lm_head_b, rows, V));
        LAUNCH("top-k", k_topk, (unsigned)rows, 1024, g->logits, V, Vr, k, g->tgt + r0, g->tid + r0 * k, g->tp + r0 * k, g->losses + r0,
               ok + r0);
    }
    CK(cudaDeviceSynchronize(), "top-k");
    CK(cudaMemcpy(ids, g->tid, (size_t)(N * k) * 4, cudaMemcpyDeviceToHost), "downloading top-k ids");
    CK(cudaMemcpy(logp, g->tp, (size_t)(N * k) * 4, cudaMemcpyDeviceToHost), "downloading top-k values");
    CK(cudaMemcpy(ce, g->losses, (size_t)N * 4, cudaMemcpyDeviceToHost), "downloading cross-entropies");
    int *hok = (int *)g->host_losses;
    CK(cudaMemcpy(hok, ok, (size_t)N * 4, cudaMemcpyDeviceToHost), "downloading checks");
    for (int64_t i = 0; i < N; i++)
        if (!hok[i]) return fk_error(FK_ERR_NUMERIC, "CUDA: the logits at row %lld of the batch are not finite", (long long)i);
    return FK_OK;
}

extern "C" void fk_gpu_zero_grads(fk_gpu *g) {
    if (g->g) cudaMemset(g->g, 0, (size_t)g->n * 4);
}

extern "C" fk_status fk_gpu_grad_norm(fk_gpu *g, double *norm) {
    if (!g->g) return fk_error(FK_ERR_ARG, "CUDA: no gradients (opened for inference)");
    CK(cudaMemset(g->dsum, 0, 8), "norm");
    LAUNCH("gradient norm", k_sumsq, 1024, 256, g->dsum, g->g, g->n);
    double s;
    CK(cudaMemcpy(&s, g->dsum, 8, cudaMemcpyDeviceToHost), "gradient norm");
    *norm = sqrt(s);
    return FK_OK;
}

extern "C" fk_status fk_gpu_adamw(fk_gpu *g, int64_t t, float lr, float beta1, float beta2, float eps, float weight_decay,
                                  float grad_scale) {
    if (!g->g) return fk_error(FK_ERR_ARG, "CUDA: no optimizer state (opened for inference)");
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2);
    const fk_model *m = g->m;
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        float decay = p->decay ? 1.0f - lr * weight_decay : 1.0f;
        int64_t o = p->offset;
        LAUNCH("AdamW", k_adamw, blocks_for(p->numel, 256), 256, g->w + o, g->w16 + o, g->g + o, g->mo + o, g->ve + o, p->numel, lr, beta1,
               beta2, eps, decay, step_size, bc2_sqrt, grad_scale);
    }
    CK(cudaDeviceSynchronize(), "AdamW");
    return FK_OK;
}

static fk_status xfer(void *dst, const void *src, int64_t n, cudaMemcpyKind k, const char *what) {
    if (!dst || !src) return fk_error(FK_ERR_ARG, "CUDA: %s: the model was opened without it", what);
    CK(cudaMemcpy(dst, src, (size_t)n * 4, k), what);
    return FK_OK;
}
extern "C" fk_status fk_gpu_get_weights(fk_gpu *g, float *w) { return xfer(w, g->w, g->n, cudaMemcpyDeviceToHost, "weights"); }
extern "C" fk_status fk_gpu_set_weights(fk_gpu *g, const float *w) {
    FK_TRY(xfer(g->w, w, g->n, cudaMemcpyHostToDevice, "weights"));
    LAUNCH("to bf16", k_f2bf, blocks_for(g->n, 256), 256, g->w16, g->w, g->n);
    return FK_OK;
}
extern "C" fk_status fk_gpu_get_grads(fk_gpu *g, float *grad) { return xfer(grad, g->g, g->n, cudaMemcpyDeviceToHost, "gradients"); }
extern "C" fk_status fk_gpu_get_moments(fk_gpu *g, float *m, float *v) {
    FK_TRY(xfer(m, g->mo, g->n, cudaMemcpyDeviceToHost, "moments"));
    return xfer(v, g->ve, g->n, cudaMemcpyDeviceToHost, "moments");
}
extern "C" fk_status fk_gpu_set_moments(fk_gpu *g, const float *m, const float *v) {
    FK_TRY(xfer(g->mo, m, g->n, cudaMemcpyHostToDevice, "moments"));
    return xfer(g->ve, v, g->n, cudaMemcpyHostToDevice, "moments");
}
