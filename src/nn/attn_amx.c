// Causal attention's products on AMX tiles (TDPBF16PS) or AVX512-BF16 (VDPBF16PS): bf16 operands,
// fp32 accumulation.
//
// Under bf16 precision the layers' products already run on oneDNN's AMX kernels; attention's
// score and value products (row blocks of a few dozen queries against every visible key, per
// head) are too small for oneDNN's per-call cost and stayed fp32 in OpenBLAS, where they took
// a quarter to a third of a bf16 pass. Here they run on the tiles directly.
//
// Layout. A tile holds 16 rows of 64 bytes. C (16 x 16 fp32) += A (16 x 32 bf16) B, where row r
// of the B tile holds, for each of its 16 columns n, the pair (B[2r][n], B[2r+1][n]) of the
// product's right-hand matrix (two bf16 in 32 bits). So every right-hand operand is packed once
// per sequence and head into pairs along the summed dimension:
//   kt  (hdp/2 x Tkp pairs)  kt[r][j] = (K[j][2r], K[j][2r+1])     scores  S = Q K^T
//   vv  (Tkp/2 x hdp pairs)  vv[r][e] = (V[2r][e], V[2r+1][e])     output  O = P V
// and left-hand operands (the queries, the probabilities) are plain bf16 rows. Head sizes and
// key counts are padded with zeros to multiples of 32 (hdp, Tkp). A row block of 32 queries
// runs 2 x 2 output tiles (tiles 0-3), two A tiles (4, 5) and two B tiles (6, 7).
//
// Everything between the products stays fp32 as in the fp32 kernel (ops_impl.h): the scale, the
// soft-cap, ALiBi, the mask, the softmax; probabilities kept for a backward are fp32. Training
// keeps instead each row's log-sum-exp (B x H x T floats, not B x H x T x T), and the backward
// recomputes the probabilities from the scores on the tiles (the flash-attention backward). The
// result is that of the fp32 kernel with q, k, v and the probabilities rounded to bf16 (nearest
// even) before their products, up to the order of the fp32 additions.
//
// The CPU needs AMX-TILE, AMX-BF16 and AVX512-BF16, and Linux must grant the process the tile
// data (arch_prctl ARCH_REQ_XCOMP_PERM, as oneDNN asks for it too). Each thread loads its tile
// configuration before its first product and releases the tiles when done, so oneDNN's kernels
// (which configure their own) and this file never see each other's state.
//
// Without AMX (AMD's Zen 4 and later), the same products run on AVX512-BF16's VDPBF16PS over zmm
// registers (dp_product): the packed layouts are the ones that instruction reads too (a 32-bit
// lane holds a pair along the summed dimension), so everything but the innermost product is shared.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // syscall
#endif
#include "nn/attn_amx.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/par.h"
#include "nn/gemm.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define FK_AMX_BUILD 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define QB 32          // query rows per block: two row tiles
#define AMX_MAX_HD FK_ATTN_AMX_MAX_HD

#ifdef FK_AMX_BUILD
#include <cpuid.h>

// The CPU's AMX-TILE, AMX-BF16 and AVX512-BF16 (CPUID leaf 7: EDX bits 24 and 22 of subleaf 0,
// EAX bit 5 of subleaf 1), with AVX-512 enabled by the OS. (Read from CPUID: clang 14's
// __builtin_cpu_supports does not know the AMX names.)
static bool fk_cpu_has_amx_bf16(void) {
    unsigned a, b, c, d, a1, b1, c1, d1;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || !__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1))
        return false;
    return (d >> 24 & 1) && (d >> 22 & 1) && (a1 >> 5 & 1);
}

#define AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")))

// -1 not decided; else what the products run on: ATT_OFF, ATT_DP (AVX512-BF16's VDPBF16PS on
// zmm registers) or ATT_TILES (AMX). Decided once from the CPU's flags, the kernel's permission
// and FUSEKIT_ATTN_AMX.
enum { ATT_OFF, ATT_DP, ATT_TILES };
static int g_amx = -1;
static bool g_forced;  // FUSEKIT_ATTN_AMX=avx512: the AVX512-BF16 kernel even where it is not the faster path

static int amx_decide(void) {
    const char *e = getenv("FUSEKIT_ATTN_AMX");
    if (e && strcmp(e, "0") == 0) return ATT_OFF;
    g_forced = e && strcmp(e, "avx512") == 0;
    // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): granted once per process
    if (!g_forced && fk_cpu_has_amx_bf16() && syscall(SYS_arch_prctl, 0x1023, 18) == 0) return ATT_TILES;
    return fk_cpu_has_bf16() ? ATT_DP : ATT_OFF;
}

static int att_mode(void) {
    int a = __atomic_load_n(&g_amx, __ATOMIC_RELAXED);
    if (a < 0) {
        a = amx_decide();
        __atomic_store_n(&g_amx, a, __ATOMIC_RELAXED);
    }
    if (fk_matmul_precision() != FK_PRECISION_BF16) return ATT_OFF;
    // the tiles where oneDNN's products are on them; AVX512-BF16 where bf16 products run natively
    // and are the faster path (fk_bf16_fast), or where FUSEKIT_ATTN_AMX=avx512 asks for it
    if (a == ATT_TILES) return fk_bf16_tiles() ? ATT_TILES : ATT_OFF;
    if (a == ATT_DP) return fk_bf16_native() && (g_forced || fk_bf16_fast()) ? ATT_DP : ATT_OFF;
    return ATT_OFF;
}

bool fk_attn_amx_on(void) { return att_mode() != ATT_OFF; }

const char *fk_attn_bf16_unit(void) {
    int m = att_mode();
    return m == ATT_TILES ? "AMX tiles" : m == ATT_DP ? "AVX512-BF16" : NULL;
}

// The tile configuration: palette 1, every tile 16 rows of 64 bytes.
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

AMX_TARGET static void tiles_on(void) {
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) { c.colsb[t] = 64; c.rows[t] = 16; }
    _tile_loadconfig(&c);
}

static inline uint16_t bf(float f) { return (uint16_t)fk_bf16_rne(f); }
static inline int64_t up32(int64_t x) { return (x + 31) & ~(int64_t)31; }

// 16 floats rounded to bf16 (nearest even, as fk_bf16_rne; the instruction reads subnormal
// inputs as zero, far below any product they would join). n < 16 reads n and gives zeros after.
AMX_TARGET static inline __m256i cvt16(const float *src, int64_t n) {
    __m512 x = n >= 16 ? _mm512_loadu_ps(src) : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), src);
    return (__m256i)_mm512_cvtneps_pbh(x);
}

// One row of M (hd floats) as bf16 into dst (hdp halves, zero past hd): its pairs along hd.
AMX_TARGET static inline void row_bf16(uint16_t *dst, const float *m, int64_t hd, int64_t hdp) {
    int64_t e = 0;
    for (; e < hd; e += 16) _mm256_storeu_si256((__m256i *)(dst + e), cvt16(m + e, hd - e < 16 ? hd - e : 16));
    for (; e < hdp; e += 16) _mm256_storeu_si256((__m256i *)(dst + e), _mm256_setzero_si256());
}

// kt (hdp/2 x Tkp) from the rows of M (Tk rows of hd, stride ms): kt[r][j] = (M[j][2r], M[j][2r+1]);
// zero past Tk and hd. Sixteen rows at a time: converted to pairs, then transposed.
AMX_TARGET static void pack_pairs_t(uint32_t *kt, const float *m, int64_t ms, int64_t Tk, int64_t hd, int64_t Tkp, int64_t hdp) {
    uint32_t tmp[16 * AMX_MAX_HD / 2];
    int64_t R = hdp / 2;
    for (int64_t j0 = 0; j0 < Tkp; j0 += 16) {
        for (int64_t jj = 0; jj < 16; jj++) {
            if (j0 + jj < Tk) row_bf16((uint16_t *)(tmp + jj * R), m + (j0 + jj) * ms, hd, hdp);
            else memset(tmp + jj * R, 0, (size_t)R * 4);
        }
        for (int64_t r = 0; r < R; r++)
            for (int64_t jj = 0; jj < 16; jj++) kt[r * Tkp + j0 + jj] = tmp[jj * R + r];
    }
}

// vv (Tkp/2 x hdp) from the rows of M (Tk rows of hd, stride ms): vv[r][e] = (M[2r][e], M[2r+1][e]);
// zero past Tk and hd.
AMX_TARGET static void pack_pairs(uint32_t *vv, const float *m, int64_t ms, int64_t Tk, int64_t hd, int64_t Tkp, int64_t hdp) {
    // (a[e], b[e]) from the halves of one 32-element vector: a's 16 below, b's 16 above
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int64_t r = 0; 2 * r < Tkp; r++) {
        bool ha = 2 * r < Tk, hb = 2 * r + 1 < Tk;
        const float *a = ha ? m + 2 * r * ms : NULL, *b = hb ? a + ms : NULL;
        uint32_t *o = vv + r * hdp;
        int64_t e = 0;
        for (; e < hd; e += 16) {
            int64_t c = hd - e < 16 ? hd - e : 16;
            __m256i lo = ha ? cvt16(a + e, c) : _mm256_setzero_si256(), hi = hb ? cvt16(b + e, c) : _mm256_setzero_si256();
            __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            _mm512_storeu_si512(o + e, _mm512_permutexvar_epi16(idx, v));
        }
        for (; e < hdp; e += 16) _mm512_storeu_si512(o + e, _mm512_setzero_si512());
    }
}

// dst (QB x ld bf16) from up to QB rows of M (rows rows, hd each, stride ms); the rest zero.
AMX_TARGET static void rows_bf16(uint16_t *dst, int64_t ld, const float *m, int64_t ms, int64_t rows, int64_t hd) {
    for (int64_t i = 0; i < rows; i++) row_bf16(dst + i * ld, m + i * ms, hd, ld);
    memset(dst + rows * ld, 0, (size_t)((QB - rows) * ld) * 2);
}

// hd floats of src rounded to bf16 into dst (exactly hd halves written).
AMX_TARGET static void row_bf16_exact(uint16_t *dst, const float *src, int64_t hd) {
    int64_t e = 0;
    for (; e + 16 <= hd; e += 16) _mm256_storeu_si256((__m256i *)(dst + e), cvt16(src + e, 16));
    if (e < hd) {
        __m256i t = cvt16(src + e, hd - e);
        memcpy(dst + e, &t, (size_t)(hd - e) * 2);
    }
}

// Compiler barrier: GCC's tile loads and stores are asm statements without a memory clobber, so
// the plain loads and stores around them are ordered by hand.
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

// C (QB rows, row stride ldc floats) = [C +] A (QB rows of bf16, row stride lda) B for the columns
// [c0, c1) of C, summing over [k0, k1): B is packed in pairs along the summed dimension (row r
// of B holds the pairs of sums 2r and 2r + 1; row stride ldb pairs), so the columns kk.. of A
// meet B's pair rows kk/2... Every bound a multiple of 32. With acc, C is added to.
AMX_TARGET static void amx_product(float *C, int64_t ldc, const uint16_t *A, int64_t lda, const uint32_t *B,
                                    int64_t ldb, int64_t k0, int64_t k1, int64_t c0, int64_t c1, bool acc) {
    MEMORY_BARRIER();
    for (int64_t c = c0; c < c1; c += 32) {
        if (acc) {
            _tile_loadd(0, C + c, ldc * 4);
            _tile_loadd(1, C + c + 16, ldc * 4);
            _tile_loadd(2, C + 16 * ldc + c, ldc * 4);
            _tile_loadd(3, C + 16 * ldc + c + 16, ldc * 4);
        } else {
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        }
        for (int64_t kk = k0; kk < k1; kk += 32) {
            _tile_loadd(4, A + kk, lda * 2);
            _tile_loadd(5, A + 16 * lda + kk, lda * 2);
            _tile_loadd(6, B + kk / 2 * ldb + c, ldb * 4);
            _tile_loadd(7, B + kk / 2 * ldb + c + 16, ldb * 4);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, C + c, ldc * 4);
        _tile_stored(1, C + c + 16, ldc * 4);
        _tile_stored(2, C + 16 * ldc + c, ldc * 4);
        _tile_stored(3, C + 16 * ldc + c + 16, ldc * 4);
    }
    MEMORY_BARRIER();
}

// amx_product's contract with AVX512-BF16's VDPBF16PS on zmm registers, for CPUs without AMX:
// blocks of 8 rows x 32 columns of C in 16 accumulators, a pair row of B (two vectors) per step
// and each row's pair of A broadcast to meet it. The products are the tiles' (exact in fp32);
// only the order of the fp32 additions differs.
#define DP_ROWS 8
AMX_TARGET static void dp_product(float *C, int64_t ldc, const uint16_t *A, int64_t lda, const uint32_t *B, int64_t ldb,
                                  int64_t k0, int64_t k1, int64_t c0, int64_t c1, bool acc) {
    for (int64_t c = c0; c < c1; c += 32)
        for (int64_t r0 = 0; r0 < QB; r0 += DP_ROWS) {
            __m512 s[DP_ROWS][2];
            float *cr = C + r0 * ldc + c;
            #pragma GCC unroll 8
            for (int r = 0; r < DP_ROWS; r++) {
                s[r][0] = acc ? _mm512_loadu_ps(cr + r * ldc) : _mm512_setzero_ps();
                s[r][1] = acc ? _mm512_loadu_ps(cr + r * ldc + 16) : _mm512_setzero_ps();
            }
            const uint16_t *ar = A + r0 * lda;
            for (int64_t kk = k0; kk < k1; kk += 2) {
                const uint32_t *br = B + kk / 2 * ldb + c;
                __m512bh b0 = (__m512bh)_mm512_loadu_si512(br), b1 = (__m512bh)_mm512_loadu_si512(br + 16);
                #pragma GCC unroll 8
                for (int r = 0; r < DP_ROWS; r++) {
                    uint32_t pair;
                    memcpy(&pair, ar + r * lda + kk, 4);
                    __m512bh a = (__m512bh)_mm512_set1_epi32((int)pair);
                    s[r][0] = _mm512_dpbf16_ps(s[r][0], a, b0);
                    s[r][1] = _mm512_dpbf16_ps(s[r][1], a, b1);
                }
            }
            #pragma GCC unroll 8
            for (int r = 0; r < DP_ROWS; r++) {
                _mm512_storeu_ps(cr + r * ldc, s[r][0]);
                _mm512_storeu_ps(cr + r * ldc + 16, s[r][1]);
            }
        }
}

// C (QB rows) [+]= A B on the unit the products were given (amx_product's contract).
AMX_TARGET static inline void tile_product(float *C, int64_t ldc, const uint16_t *A, int64_t lda, const uint32_t *B,
                                           int64_t ldb, int64_t k0, int64_t k1, int64_t c0, int64_t c1, bool acc) {
    if (g_amx == ATT_TILES) amx_product(C, ldc, A, lda, B, ldb, k0, k1, c0, c1, acc);
    else dp_product(C, ldc, A, lda, B, ldb, k0, k1, c0, c1, acc);
}

// The tiles' configuration on (AMX) before a thread's products, and their release after.
AMX_TARGET static void unit_on(void) {
    if (g_amx == ATT_TILES) tiles_on();
}

AMX_TARGET static void unit_off(void) {
    if (g_amx == ATT_TILES) _tile_release();
}

// One thread's buffers for the forward.
typedef struct {
    uint32_t *kt, *vv;  // packed keys and values of the (sequence, kv head) last packed
    uint16_t *qb, *pb;  // a block's queries and probabilities (QB rows)
    float *s, *o;       // a block's scores and output (QB rows)
} fwd_bufs;

static size_t fwd_floats(int64_t Tkp, int64_t hdp) {
    // kt, vv: hdp/2 x Tkp and Tkp/2 x hdp words; qb QB x hdp and pb QB x Tkp halves; s, o
    return (size_t)(Tkp * hdp + (QB * hdp + QB * Tkp) / 2 + QB * Tkp + QB * hdp + 64);
}

static void fwd_carve(fwd_bufs *f, float *base, int64_t Tkp, int64_t hdp) {
    f->kt = (uint32_t *)base; base += hdp / 2 * Tkp;
    f->vv = (uint32_t *)base; base += Tkp / 2 * hdp;
    f->qb = (uint16_t *)base; base += QB * hdp / 2;
    f->pb = (uint16_t *)base; base += QB * Tkp / 2;
    f->s = base; base += QB * Tkp;
    f->o = base;
}

// Softmax of one query row at position pi, from its raw products sr (columns lo..pi read), into
// pr (bf16, the strip [jt0, jt1) written, zero outside lo..pi) and, with prow, fp32 probabilities
// (lo..pi; zero in [z0, lo) and (pi, z1)); with lse, the row's log-sum-exp of its final scores.
AMX_TARGET static void softmax_row(uint16_t *pr, float *prow, float *lse, float *sr, int64_t lo, int64_t pi, int64_t jt0,
                                   int64_t jt1, int64_t z0, int64_t z1, float scale, float softcap, const float *alibi_h) {
    float mx, sum = 0;
    // plain scores (no soft-cap or ALiBi, scale > 0): the scale joins the exponential's pass, the
    // maximum is taken on the raw products (rounding is monotonic: max(scale x) = scale max(x))
    bool plain = softcap <= 0 && !alibi_h && scale > 0;
    if (!plain) {
        if (softcap > 0)
            for (int64_t j = lo; j <= pi; j++) sr[j] = softcap * fk_fast_tanhf(sr[j] * scale / softcap);
        else {
            #pragma omp simd
            for (int64_t j = lo; j <= pi; j++) sr[j] *= scale;
        }
        if (alibi_h)
            for (int64_t j = lo; j <= pi; j++) sr[j] += *alibi_h * (float)(j - pi);
    }
    __m512 vm = _mm512_set1_ps(-INFINITY);
    int64_t j = lo;
    for (; j + 16 <= pi + 1; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(sr + j));
    mx = _mm512_reduce_max_ps(vm);
    for (; j <= pi; j++) mx = sr[j] > mx ? sr[j] : mx;
    if (plain) {
        mx *= scale;
        #pragma omp simd reduction(+ : sum)
        for (int64_t j = lo; j <= pi; j++) { sr[j] = fk_fast_expf(sr[j] * scale - mx); sum += sr[j]; }
    } else {
        #pragma omp simd reduction(+ : sum)
        for (int64_t j = lo; j <= pi; j++) { sr[j] = fk_fast_expf(sr[j] - mx); sum += sr[j]; }
    }
    float inv = 1 / sum;
    if (lse) *lse = mx + logf(sum);
    for (int64_t j = jt0; j < lo; j++) pr[j] = 0;
    #pragma omp simd
    for (int64_t j = lo; j <= pi; j++) { sr[j] *= inv; pr[j] = bf(sr[j]); }
    for (int64_t j = pi + 1; j < jt1; j++) pr[j] = 0;
    if (prow) {
        for (int64_t j = z0; j < lo; j++) prow[j] = 0;
        memcpy(prow + lo, sr + lo, (size_t)(pi + 1 - lo) * sizeof(float));
        for (int64_t j = pi + 1; j < z1; j++) prow[j] = 0;
    }
}

// The work of a forward's team: its arguments, then each thread's part.
typedef struct {
    float *out, *probs, *lse;
    uint16_t *out16;
    const float *q, *k, *v;
    const fk_att_dims *d;
    float scale, softcap;
    float *arena;  // per floats for each thread
    size_t per;
} fwd_job;

// One thread of the team (called inside the parallel region, so that clang compiles the tile
// instructions with this function's target: it does not give them to the region's own body).
AMX_TARGET static void fwd_thread(const fwd_job *job) {
    const fk_att_dims *d = job->d;
    int64_t B = d->B, n = d->n, p0 = d->p0, H = d->H, hd = d->hd, D = H * hd, G = H / d->KVH, Tk = p0 + n;
    int64_t qs = d->q_stride, ks = d->kv_stride, window = d->window, Tkp = up32(Tk), hdp = up32(hd);
    float *out = job->out, *probs = job->probs, *lse = job->lse, scale = job->scale, softcap = job->softcap;
    uint16_t *out16 = job->out16;
    const float *q = job->q, *k = job->k, *v = job->v;
    fwd_bufs f;
    fwd_carve(&f, job->arena + job->per * (size_t)omp_get_thread_num(), Tkp, hdp);
    int64_t packed = -1;  // the (sequence, kv head) kt and vv hold
    unit_on();
    #pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t g = h / G;
            if (packed != b * d->KVH + g) {
                pack_pairs_t(f.kt, k + b * d->kv_seq + g * hd, ks, Tk, hd, Tkp, hdp);
                pack_pairs(f.vv, v + b * d->kv_seq + g * hd, ks, Tk, hd, Tkp, hdp);
                packed = b * d->KVH + g;
            }
            const float *alibi_h = d->alibi ? d->alibi + h : NULL;
            for (int64_t i0 = 0; i0 < n; i0 += QB) {
                int64_t rows = n - i0 < QB ? n - i0 : QB, last = p0 + i0 + rows;  // keys < last are visible to some row
                int64_t jt0 = fk_att_first_col(p0 + i0, window) & ~(int64_t)31, jt1 = up32(last);
                rows_bf16(f.qb, hdp, q + (b * n + i0) * qs + h * hd, qs, rows, hd);
                tile_product(f.s, Tkp, f.qb, hdp, f.kt, Tkp, 0, hdp, jt0, jt1, false);  // S = Q K^T
                for (int64_t ii = 0; ii < rows; ii++) {
                    int64_t i = i0 + ii, pi = p0 + i, lo = fk_att_first_col(pi, window);
                    // the fp32 kernel's row block of FK_ATT_BLK rows: its columns hold zeros
                    int64_t bi = i / FK_ATT_BLK * FK_ATT_BLK, bi1 = bi + FK_ATT_BLK < n ? bi + FK_ATT_BLK : n;
                    float *prow = probs ? probs + ((b * H + h) * n + i) * Tk : NULL;
                    softmax_row(f.pb + ii * Tkp, prow, lse ? lse + (b * H + h) * n + i : NULL, f.s + ii * Tkp, lo, pi, jt0, jt1,
                                fk_att_first_col(p0 + bi, window), p0 + bi1, scale, softcap, alibi_h);
                }
                for (int64_t ii = rows; ii < QB; ii++) memset(f.pb + ii * Tkp + jt0, 0, (size_t)(jt1 - jt0) * 2);
                tile_product(f.o, hdp, f.pb, Tkp, f.vv, hdp, jt0, jt1, 0, hdp, false);  // O = P V
                for (int64_t ii = 0; ii < rows; ii++) {
                    int64_t at = (b * n + i0 + ii) * D + h * hd;
                    if (out) memcpy(out + at, f.o + ii * hdp, (size_t)hd * sizeof(float));
                    if (out16) row_bf16_exact(out16 + at, f.o + ii * hdp, hd);
                }
            }
        }
    unit_off();
}

bool fk_attention_forward_amx(float *out, uint16_t *out16, float *probs, float *lse, const float *q, const float *k,
                              const float *v, const fk_att_dims *d, float scale, float softcap, int nthr) {
    if (!fk_attn_amx_on() || d->hd > FK_ATTN_AMX_MAX_HD || (!out && !out16)) return false;
    if (nthr < 1) nthr = 1;
    size_t per = (fwd_floats(up32(d->p0 + d->n), up32(d->hd)) + 15) & ~(size_t)15;
    fwd_job job = {out, probs, lse, out16, q, k, v, d, scale, softcap, aligned_alloc(64, per * (size_t)nthr * sizeof(float)), per};
    if (!job.arena) return false;
    #pragma omp parallel num_threads(nthr)
    fwd_thread(&job);
    free(job.arena);
    return true;
}

// One thread's buffers for the backward, per (sequence, kv head): keys and values packed, and
// the keys' and values' gradients summed over the group's heads, transposed (hd x keys: the
// products that make them take the block's 32 rows as their summed dimension, so only the
// block's small dO and q are transposed, never its rows of T probabilities); per row block: its
// gradient rows, queries, probabilities and score gradients in the layouts their products take.
typedef struct {
    uint32_t *vt, *kv, *kt;   // V^T pairs along hd (dP = dO V^T), K pairs along keys (dQ = dS K), K^T (soft-cap)
    uint32_t *pp, *dsp;       // P and dS in pairs along the block's rows (QB/2 x Tp)
    uint16_t *dob, *qb;       // the block's dO and q, bf16 rows (QB x hdp)
    uint16_t *dot, *qt;       // the same transposed (hdp x QB)
    uint16_t *pb, *dsb;       // P and dS, bf16 rows (QB x Tp)
    float *dp, *s, *dq;       // dP and raw scores (QB x Tp), dQ (QB x hdp)
    float *pf;                // P recomputed from the saved log-sum-exp (QB x Tp)
    float *dkt, *dvt;         // dK^T, dV^T (hdp x Tp)
} bwd_bufs;

static size_t bwd_floats(int64_t Tp, int64_t hdp) {
    return (size_t)(3 * Tp * hdp / 2 + 2 * (QB / 2) * Tp + 2 * QB * hdp + QB * Tp + 3 * QB * Tp + QB * hdp +
                    2 * Tp * hdp + 64);
}

static void bwd_carve(bwd_bufs *f, float *base, int64_t Tp, int64_t hdp) {
#define CARVE(field, type, count) do { f->field = (type *)base; base += (count); } while (0)
    CARVE(vt, uint32_t, hdp / 2 * Tp); CARVE(kv, uint32_t, Tp / 2 * hdp); CARVE(kt, uint32_t, hdp / 2 * Tp);
    CARVE(pp, uint32_t, QB / 2 * Tp); CARVE(dsp, uint32_t, QB / 2 * Tp);
    CARVE(dob, uint16_t, QB * hdp / 2); CARVE(qb, uint16_t, QB * hdp / 2);
    CARVE(dot, uint16_t, hdp * QB / 2); CARVE(qt, uint16_t, hdp * QB / 2);
    CARVE(pb, uint16_t, QB * Tp / 2); CARVE(dsb, uint16_t, QB * Tp / 2);
    CARVE(dp, float, QB * Tp); CARVE(s, float, QB * Tp); CARVE(dq, float, QB * hdp); CARVE(pf, float, QB * Tp);
    CARVE(dkt, float, hdp * Tp); CARVE(dvt, float, hdp * Tp);
#undef CARVE
}

// dst (hdp x QB) = src (QB x hdp) transposed, bf16.
static void transpose_block(uint16_t *dst, const uint16_t *src, int64_t hdp) {
    for (int64_t e = 0; e < hdp; e++)
        for (int64_t i = 0; i < QB; i++) dst[e * QB + i] = src[i * hdp + e];
}

// pairs (QB/2 x ld) from bf16 rows (QB x ld), columns [j0, j1) (multiples of 32):
// pairs[r][j] = (rows[2r][j], rows[2r+1][j]).
AMX_TARGET static void pair_rows(uint32_t *pairs, const uint16_t *rows, int64_t ld, int64_t j0, int64_t j1) {
    // interleave a's 32 halves (the low words) with b's (the high ones): two 16-pair results
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5,
                                        36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_set_epi16(63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24, 55, 23, 54, 22,
                                        53, 21, 52, 20, 51, 19, 50, 18, 49, 17, 48, 16);
    for (int64_t r = 0; r < QB / 2; r++) {
        const uint16_t *a = rows + 2 * r * ld, *b = a + ld;
        uint32_t *o = pairs + r * ld;
        for (int64_t j = j0; j < j1; j += 32) {
            __m512i va = _mm512_loadu_si512(a + j), vb = _mm512_loadu_si512(b + j);
            _mm512_storeu_si512(o + j, _mm512_permutex2var_epi16(va, lo, vb));
            _mm512_storeu_si512(o + j + 16, _mm512_permutex2var_epi16(va, hi, vb));
        }
    }
}

// C^T (hdp x Tp, fp32) += At (hdp x QB bf16) B (QB/2 pair rows, columns [j0, j1)): a key gradient's
// transpose from one row block, 32 of its hd rows at a time.
AMX_TARGET static void key_grad_product(float *Ct, const uint16_t *At, const uint32_t *B, int64_t Tp, int64_t hdp, int64_t j0,
                                        int64_t j1) {
    for (int64_t e = 0; e < hdp; e += 32) tile_product(Ct + e * Tp, Tp, At + e * QB, QB, B, Tp, 0, QB, j0, j1, true);
}

// The work of a backward's team: its arguments, then each thread's part.
typedef struct {
    float *dqkv;
    const float *dout, *qkv, *probs, *lse, *alibi;
    int64_t B, T, H, KVH, hd, window;
    float scale, softcap;
    float *arena;  // per floats for each thread
    size_t per;
} bwd_job;

AMX_TARGET static void bwd_thread(const bwd_job *job) {
    int64_t B = job->B, T = job->T, H = job->H, KVH = job->KVH, hd = job->hd, window = job->window;
    int64_t QKVD = (H + 2 * KVH) * hd, D = H * hd, G = H / KVH, Tp = up32(T), hdp = up32(hd);
    float *dqkv = job->dqkv, scale = job->scale, softcap = job->softcap;
    const float *dout = job->dout, *qkv = job->qkv, *probs = job->probs, *lse = job->lse, *alibi = job->alibi;
    bwd_bufs f;
    bwd_carve(&f, job->arena + job->per * (size_t)omp_get_thread_num(), Tp, hdp);
    unit_on();
    #pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < KVH; g++) {
            const float *k = qkv + b * T * QKVD + D + g * hd, *v = k + KVH * hd;
            pack_pairs_t(f.vt, v, QKVD, T, hd, Tp, hdp);
            pack_pairs(f.kv, k, QKVD, T, hd, Tp, hdp);
            if (softcap > 0 || !probs) pack_pairs_t(f.kt, k, QKVD, T, hd, Tp, hdp);
            memset(f.dkt, 0, (size_t)(Tp * hdp) * sizeof(float));
            memset(f.dvt, 0, (size_t)(Tp * hdp) * sizeof(float));
            for (int64_t h = g * G; h < (g + 1) * G; h++) {
                const float *q = qkv + b * T * QKVD + h * hd, *dO = dout + b * T * D + h * hd;
                const float *P = probs ? probs + (b * H + h) * T * T : NULL, *lse_h = probs ? NULL : lse + (b * H + h) * T;
                for (int64_t i0 = 0; i0 < T; i0 += QB) {
                    int64_t rows = T - i0 < QB ? T - i0 : QB, jt0 = fk_att_first_col(i0, window) & ~(int64_t)31;
                    int64_t jt1 = up32(i0 + rows);
                    rows_bf16(f.dob, hdp, dO + i0 * D, D, rows, hd);
                    rows_bf16(f.qb, hdp, q + i0 * QKVD, QKVD, rows, hd);
                    transpose_block(f.dot, f.dob, hdp);
                    transpose_block(f.qt, f.qb, hdp);
                    tile_product(f.dp, Tp, f.dob, hdp, f.vt, Tp, 0, hdp, jt0, jt1, false);  // dP = dO V^T
                    if (softcap > 0 || !P)  // the raw products q.k again: the tanh's derivative, or P itself
                        tile_product(f.s, Tp, f.qb, hdp, f.kt, Tp, 0, hdp, jt0, jt1, false);
                    // softmax backward: dS = P * (dP - sum(P * dP)) [* (1 - tanh^2)] * scale
                    for (int64_t ii = 0; ii < QB; ii++) {
                        uint16_t *dsr = f.dsb + ii * Tp, *pr = f.pb + ii * Tp;
                        if (ii >= rows) {
                            memset(dsr + jt0, 0, (size_t)(jt1 - jt0) * 2);
                            memset(pr + jt0, 0, (size_t)(jt1 - jt0) * 2);
                            continue;
                        }
                        int64_t i = i0 + ii, lo = fk_att_first_col(i, window);
                        const float *p = P ? P + i * T : f.pf + ii * Tp;
                        float *dp = f.dp + ii * Tp, dot = 0;
                        if (!P) {  // P = exp(final score - log-sum-exp), the forward's arithmetic, and sum(P * dP) in the same pass
                            const float *sr = f.s + ii * Tp;
                            float *pw = f.pf + ii * Tp, l = lse_h[i], slope = alibi ? alibi[h] : 0.0f;
                            if (softcap > 0)
                                for (int64_t j = lo; j <= i; j++) {
                                    float x = softcap * fk_fast_tanhf(sr[j] * scale / softcap) + slope * (float)(j - i);
                                    pw[j] = fk_fast_expf(x - l);
                                    dot += pw[j] * dp[j];
                                }
                            else {
                                #pragma omp simd reduction(+ : dot)
                                for (int64_t j = lo; j <= i; j++) {
                                    pw[j] = fk_fast_expf(sr[j] * scale + slope * (float)(j - i) - l);
                                    dot += pw[j] * dp[j];
                                }
                            }
                        } else {
                            #pragma omp simd reduction(+ : dot)
                            for (int64_t j = lo; j <= i; j++) dot += p[j] * dp[j];
                        }
                        for (int64_t j = jt0; j < lo; j++) dsr[j] = pr[j] = 0;
                        if (softcap > 0) {
                            const float *sr = f.s + ii * Tp;
                            for (int64_t j = lo; j <= i; j++) {
                                float t = fk_fast_tanhf(sr[j] * scale / softcap), ds = p[j] * (dp[j] - dot) * scale * (1 - t * t);
                                dsr[j] = bf(ds);
                                pr[j] = bf(p[j]);
                            }
                        } else {
                            // dS = P * (dP - sum(P * dP)) * scale, rounded with P for their products
                            #pragma omp simd
                            for (int64_t j = lo; j <= i; j++) { dsr[j] = bf(p[j] * (dp[j] - dot) * scale); pr[j] = bf(p[j]); }
                        }
                        for (int64_t j = i + 1; j < jt1; j++) dsr[j] = pr[j] = 0;
                    }
                    pair_rows(f.pp, f.pb, Tp, jt0, jt1);
                    pair_rows(f.dsp, f.dsb, Tp, jt0, jt1);
                    key_grad_product(f.dvt, f.dot, f.pp, Tp, hdp, jt0, jt1);   // dV^T += dO^T P
                    key_grad_product(f.dkt, f.qt, f.dsp, Tp, hdp, jt0, jt1);   // dK^T += q^T dS
                    tile_product(f.dq, hdp, f.dsb, Tp, f.kv, hdp, jt0, jt1, 0, hdp, false);  // dQ = dS K
                    for (int64_t ii = 0; ii < rows; ii++) {
                        float *dq = dqkv + (b * T + i0 + ii) * QKVD + h * hd;
                        const float *src = f.dq + ii * hdp;
                        #pragma omp simd
                        for (int64_t e = 0; e < hd; e++) dq[e] += src[e];
                    }
                }
            }
            for (int64_t j = 0; j < T; j++) {
                float *dk = dqkv + (b * T + j) * QKVD + D + g * hd, *dv = dk + KVH * hd;
                for (int64_t e = 0; e < hd; e++) { dk[e] += f.dkt[e * Tp + j]; dv[e] += f.dvt[e * Tp + j]; }
            }
        }
    unit_off();
}

bool fk_attention_backward_amx(float *dqkv, const float *dout, const float *qkv, const float *probs, const float *lse,
                               const float *alibi, int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t hd, float scale,
                               float softcap, int64_t window, int nthr) {
    if (!fk_attn_amx_on() || hd > FK_ATTN_AMX_MAX_HD || (!probs && !lse)) return false;
    if (nthr < 1) nthr = 1;
    size_t per = (bwd_floats(up32(T), up32(hd)) + 15) & ~(size_t)15;
    bwd_job job = {dqkv, dout, qkv, probs, lse, alibi, B, T, H, KVH, hd, window, scale, softcap,
                   aligned_alloc(64, per * (size_t)nthr * sizeof(float)), per};
    if (!job.arena) return false;
    #pragma omp parallel num_threads(nthr)
    bwd_thread(&job);
    free(job.arena);
    return true;
}

#else  // not x86-64 Linux with GCC or clang: no tiles

bool fk_attn_amx_on(void) { return false; }

const char *fk_attn_bf16_unit(void) { return NULL; }

bool fk_attention_forward_amx(float *out, uint16_t *out16, float *probs, float *lse, const float *q, const float *k,
                              const float *v, const fk_att_dims *d, float scale, float softcap, int nthr) {
    (void)out; (void)out16; (void)probs; (void)lse; (void)q; (void)k; (void)v; (void)d; (void)scale; (void)softcap; (void)nthr;
    return false;
}

bool fk_attention_backward_amx(float *dqkv, const float *dout, const float *qkv, const float *probs, const float *lse,
                               const float *alibi, int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t hd, float scale,
                               float softcap, int64_t window, int nthr) {
    (void)dqkv; (void)dout; (void)qkv; (void)probs; (void)lse; (void)alibi; (void)B; (void)T; (void)H; (void)KVH; (void)hd; (void)scale;
    (void)softcap; (void)window; (void)nthr;
    return false;
}
#endif
