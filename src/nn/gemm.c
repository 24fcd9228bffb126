// The library's matrix products: fp32 through OpenBLAS, or bf16 inputs with fp32 accumulation
// (fk_matmul_set_precision). bf16 runs oneDNN's matmul primitive where the CPU has AVX512-BF16
// and the library was built with oneDNN; elsewhere (or when forced) it emulates: both inputs
// rounded to bf16 (round to nearest even), then OpenBLAS's sgemm on the rounded values. A
// product of two bf16 numbers is exact in fp32, so the two paths differ only in the order of
// the fp32 additions: their results agree within fp32 accumulation error, on any machine.
// oneDNN uses AMX tiles where the CPU, the kernel and ONEDNN_MAX_CPU_ISA allow them. bf16 is the
// faster path (fk_bf16_fast; FK_PRECISION_AUTO resolves to bf16 there only) on AMX tiles, and on
// AMD's AVX512-BF16 (Zen 4 and later: VDPBF16PS does twice the fp32 FMA's work per cycle), not on
// Intel's AVX512-BF16 without AMX (the same work per cycle as fp32, measured slower).
#include "nn/gemm.h"
#include "nn/attn_amx.h"

#include <stdlib.h>
#include <string.h>

#include "base/par.h"
#ifdef __AVX512BF16__
#include <immintrin.h>
#endif
#ifdef FK_HAVE_DNNL
#include <dnnl.h>
#include <pthread.h>
#endif

static fk_precision g_precision = FK_PRECISION_FP32;
static int g_emulate = -1;  // -1: not decided yet (FUSEKIT_BF16_EMULATE is read on first use)

static bool g_int8;  // FK_PRECISION_INT8: stored quantized weights multiply 8-bit activations

void fk_matmul_set_precision(fk_precision p) {
    g_int8 = p == FK_PRECISION_INT8;
    g_precision = fk_precision_resolve(p);
}
fk_precision fk_matmul_precision(void) { return g_precision; }
bool fk_matmul_int8(void) { return g_int8; }
void fk_matmul_force_emulation(bool on) { g_emulate = on; }

fk_status fk_precision_parse(const char *s, fk_precision *out) {
    if (s && strcmp(s, "fp32") == 0) *out = FK_PRECISION_FP32;
    else if (s && strcmp(s, "bf16") == 0) *out = FK_PRECISION_BF16;
    else if (s && strcmp(s, "auto") == 0) *out = FK_PRECISION_AUTO;
    else if (s && strcmp(s, "int8") == 0) *out = FK_PRECISION_INT8;
    else return fk_error(FK_ERR_ARG, "--precision: '%s' is not fp32, bf16, auto or int8", s ? s : "(none)");
    return FK_OK;
}

const char *fk_precision_name(fk_precision p) {
    return p == FK_PRECISION_BF16 ? "bf16" : p == FK_PRECISION_AUTO ? "auto" : p == FK_PRECISION_INT8 ? "int8" : "fp32";
}

bool fk_cpu_has_bf16(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

// True when bf16 products go to oneDNN: built with it, the CPU has AVX512-BF16, not forced off.
static bool use_dnnl(void) {
#ifdef FK_HAVE_DNNL
    if (g_emulate < 0) {
        const char *e = getenv("FUSEKIT_BF16_EMULATE");
        g_emulate = e && *e && strcmp(e, "0") != 0;
    }
    return !g_emulate && fk_cpu_has_bf16();
#else
    return false;
#endif
}

// oneDNN's bf16 matmul on AMX tiles: the ISA oneDNN dispatches to (its CPU check, the kernel's
// permission for tiles, and ONEDNN_MAX_CPU_ISA, which caps it) includes AMX-BF16.
static bool dnnl_amx(void) {
#ifdef FK_HAVE_DNNL
    static int amx = -1;
    if (amx < 0) amx = (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx;
    return use_dnnl() && amx;
#else
    return false;
#endif
}

// The CPU's vendor is AMD (CPUID leaf 0: "AuthenticAMD").
static bool cpu_is_amd(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
#else
    return false;
#endif
}

bool fk_bf16_native(void) { return use_dnnl(); }
bool fk_bf16_tiles(void) { return dnnl_amx(); }
bool fk_bf16_fast(void) { return dnnl_amx() || (use_dnnl() && cpu_is_amd()); }

fk_precision fk_precision_resolve(fk_precision p) {
    if (p != FK_PRECISION_AUTO && p != FK_PRECISION_INT8) return p;
    return fk_bf16_fast() ? FK_PRECISION_BF16 : FK_PRECISION_FP32;
}

const char *fk_matmul_backend(void) {
    if (g_precision == FK_PRECISION_FP32) return "fp32 (OpenBLAS)";
    if (!use_dnnl()) return "bf16 emulated (inputs rounded to bf16, OpenBLAS fp32 sgemm)";
    const char *att = fk_attn_bf16_unit();
    bool tiles_att = att && strcmp(att, "AMX tiles") == 0;
    if (!dnnl_amx()) return att ? "bf16 (oneDNN, AVX512-BF16; attention on AVX512-BF16)" : "bf16 (oneDNN, AVX512-BF16)";
    return !att ? "bf16 (oneDNN, AMX-BF16 tiles)"
           : tiles_att ? "bf16 (oneDNN, AMX-BF16 tiles; attention on AMX tiles)"
                       : "bf16 (oneDNN, AMX-BF16 tiles; attention on AVX512-BF16)";
}

static inline float bf16_float(float f) {
    uint32_t x = fk_bf16_rne(f) << 16;
    memcpy(&f, &x, 4);
    return f;
}

float fk_bf16_round(float f) { return bf16_float(f); }

// Per-thread scratch that only grows (GEMMs run inside parallel regions too): NULL when out of memory.
// 0 and 1: an operand rounded to bf16 (A, B); 2: a gradient rounded once for two products; 3: a
// bf16 operand widened to fp32 (bf16_to_scratch).
static void *scratch(int which, size_t bytes) {
    static _Thread_local void *buf[4];
    static _Thread_local size_t cap[4];
    if (cap[which] < bytes) {
        free(buf[which]);
        buf[which] = malloc(bytes);
        cap[which] = buf[which] ? bytes : 0;
    }
    return buf[which];
}

// Conversions of an operand run on the calling thread inside a parallel region, across the
// threads outside one when the operand is this large.
#define FK_CONVERT_PAR (1 << 16)

// The rows x cols matrix at src (row stride ld) rounded to bf16, packed (row stride cols), as floats.
static void round_rows_f32(float *dst, const float *src, int rows, int cols, int ld) {
    #pragma omp parallel for if ((int64_t)rows * cols >= FK_CONVERT_PAR && !omp_in_parallel())
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(size_t)r * cols + c] = bf16_float(src[(size_t)r * ld + c]);
}

static void emulated_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
                          int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int ar = ta == CblasNoTrans ? M : K, ac = ta == CblasNoTrans ? K : M;  // A as stored
    int br = tb == CblasNoTrans ? K : N, bc = tb == CblasNoTrans ? N : K;
    float *a = scratch(0, (size_t)ar * ac * sizeof(float)), *b = scratch(1, (size_t)br * bc * sizeof(float));
    FK_ASSERT(a && b);  // out of memory for a copy of an operand the caller already holds
    round_rows_f32(a, A, ar, ac, lda);
    round_rows_f32(b, B, br, bc, ldb);
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, ac, b, bc, beta, C, ldc);
}

#ifdef FK_HAVE_DNNL
// ------------------------------------------------------------------ oneDNN
// Primitives for recent shapes, created once each (creating one costs far more than a small
// product); one lock around creation and execution keeps concurrent callers apart.
#define FK_DNNL_CACHE 64
typedef struct {
    int M, N, K, ta, tb, ldc, bias, ep;
    float alpha, beta;
    dnnl_primitive_t prim;
} onednn_entry;
static struct {
    pthread_mutex_t lock;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    onednn_entry e[FK_DNNL_CACHE];
    int n, next;
    bool failed;
} g_onednn = {.lock = PTHREAD_MUTEX_INITIALIZER};

// The rows x cols matrix at src (row stride ld) as packed bf16 (round to nearest even). With
// AVX512-BF16 (the CPU oneDNN's path needs) sixteen at a time by the conversion instruction,
// which rounds the same way and keeps NaNs quiet, but reads subnormal inputs as zero (they are
// below bf16's precision relative to any normal product term).
static void rows_to_bf16(uint16_t *dst, const float *src, int rows, int cols, int ld) {
    #pragma omp parallel for if ((int64_t)rows * cols >= FK_CONVERT_PAR)
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * ld;
        uint16_t *d = dst + (size_t)r * cols;
        int c = 0;
#ifdef __AVX512BF16__
        for (; c + 16 <= cols; c += 16) {
            __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(s + c));
            memcpy(d + c, &v, sizeof v);
        }
#endif
        for (; c < cols; c++) d[c] = (uint16_t)fk_bf16_rne(s[c]);
    }
}

// The 2-D descriptor of an operand of logical shape rows x cols, stored packed as given or transposed.
static void md2(dnnl_memory_desc_t *md, int rows, int cols, bool trans, dnnl_data_type_t dt, int ld) {
    dnnl_dims_t dims = {rows, cols}, strides = {trans ? 1 : ld, trans ? ld : 1};
    dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
}

// A primitive for C = beta C + ep(alpha op(A) op(B) [+ bias]) with packed bf16 operands and C's
// row stride ldc, bias an f32 row of N added to every row of the product (only with alpha 1);
// NULL on failure.
static dnnl_primitive_t onednn_prim(int M, int N, int K, bool ta, bool tb, float alpha, float beta, int ldc, bool bias,
                                    fk_epilogue ep) {
    for (int i = 0; i < g_onednn.n; i++) {
        onednn_entry *e = &g_onednn.e[i];
        if (e->M == M && e->N == N && e->K == K && e->ta == ta && e->tb == tb && e->ldc == ldc && e->alpha == alpha &&
            e->beta == beta && e->bias == bias && e->ep == (int)ep)
            return e->prim;
    }
    dnnl_memory_desc_t a, b, c, bmd;
    md2(&a, M, K, ta, dnnl_bf16, ta ? M : K);
    md2(&b, K, N, tb, dnnl_bf16, tb ? K : N);
    md2(&c, M, N, false, dnnl_f32, ldc);
    md2(&bmd, 1, N, false, dnnl_f32, N);
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    bool ok = dnnl_matmul_desc_init(&desc, &a, &b, bias ? &bmd : NULL, &c) == dnnl_success &&
              dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && alpha != 1.0f) ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success;
    if (ok && (beta != 0.0f || ep != FK_EP_NONE)) {
        // the element-wise epilogue on the product (plus bias), then the sum with C's old values
        ok = dnnl_post_ops_create(&po) == dnnl_success;
        if (ok && ep == FK_EP_GELU_TANH) ok = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_tanh, 0.0f, 0.0f) == dnnl_success;
        if (ok && beta != 0.0f) ok = dnnl_post_ops_append_sum(po, beta) == dnnl_success;
        ok = ok && dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    }
    ok = ok && dnnl_primitive_desc_create(&pd, &desc, attr, g_onednn.engine, NULL) == dnnl_success &&
         dnnl_primitive_create(&prim, pd) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) return NULL;
    onednn_entry *e = &g_onednn.e[g_onednn.next];
    if (g_onednn.n == FK_DNNL_CACHE) dnnl_primitive_destroy(e->prim);
    else g_onednn.n++;
    *e = (onednn_entry){M, N, K, ta, tb, ldc, bias, (int)ep, alpha, beta, prim};
    g_onednn.next = (g_onednn.next + 1) % FK_DNNL_CACHE;
    return prim;
}

// C = beta C + ep(alpha op(A) op(B) [+ bias]) (bias a row of N, only with alpha 1) through
// oneDNN; false when oneDNN could not run it (the caller emulates). a16 (b16), when given, is A
// (B) already rounded to packed bf16 (as rows_to_bf16 leaves it), and A (B) is not read.
static bool onednn_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const uint16_t *a16,
                        const float *B, int ldb, const uint16_t *b16, float beta, float *C, int ldc, const float *bias,
                        fk_epilogue ep) {
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    uint16_t *a = a16 ? (uint16_t *)a16 : scratch(0, (size_t)ar * ac * 2), *b = b16 ? (uint16_t *)b16 : scratch(1, (size_t)br * bc * 2);
    if (!a || !b) return false;
    if (!a16) rows_to_bf16(a, A, ar, ac, lda);
    if (!b16) rows_to_bf16(b, B, br, bc, ldb);
    pthread_mutex_lock(&g_onednn.lock);
    bool ok = !g_onednn.failed;
    if (ok && !g_onednn.engine)
        ok = dnnl_engine_create(&g_onednn.engine, dnnl_cpu, 0) == dnnl_success &&
             dnnl_stream_create(&g_onednn.stream, g_onednn.engine, dnnl_stream_default_flags) == dnnl_success;
    g_onednn.failed = !ok;
    dnnl_primitive_t prim = ok ? onednn_prim(M, N, K, ta, tb, alpha, beta, ldc, bias != NULL, ep) : NULL;
    dnnl_memory_desc_t amd, bmd, cmd, biasmd;
    md2(&amd, M, K, ta, dnnl_bf16, ta ? M : K);
    md2(&bmd, K, N, tb, dnnl_bf16, tb ? K : N);
    md2(&cmd, M, N, false, dnnl_f32, ldc);
    md2(&biasmd, 1, N, false, dnnl_f32, N);
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL, biasm = NULL;
    ok = prim && dnnl_memory_create(&am, &amd, g_onednn.engine, a) == dnnl_success &&
         dnnl_memory_create(&bm, &bmd, g_onednn.engine, b) == dnnl_success &&
         dnnl_memory_create(&cm, &cmd, g_onednn.engine, C) == dnnl_success &&
         (!bias || dnnl_memory_create(&biasm, &biasmd, g_onednn.engine, (void *)bias) == dnnl_success);
    if (ok) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_BIAS, biasm}};
        ok = dnnl_primitive_execute(prim, g_onednn.stream, bias ? 4 : 3, args) == dnnl_success &&
             dnnl_stream_wait(g_onednn.stream) == dnnl_success;
    }
    if (am) dnnl_memory_destroy(am);
    if (bm) dnnl_memory_destroy(bm);
    if (cm) dnnl_memory_destroy(cm);
    if (biasm) dnnl_memory_destroy(biasm);
    pthread_mutex_unlock(&g_onednn.lock);
    return ok;
}
#endif

// Products below this many multiply-adds stay on the emulated path under bf16: oneDNN's per-call
// cost (operand descriptors, execution) outweighs them.
#define FK_DNNL_MIN_WORK (1 << 18)

// Whether bf16 products with packed bf16 operands go to oneDNN now (any size).
static bool bf16_operands_on(int M, int N, int K) {
#ifdef FK_HAVE_DNNL
    bool nested = false;
#ifdef _OPENMP
    nested = omp_in_parallel();  // inside a parallel region: oneDNN would run on one thread behind the lock
#endif
    return g_precision != FK_PRECISION_FP32 && M > 0 && N > 0 && K > 0 && !nested && use_dnnl();
#else
    (void)M, (void)N, (void)K;
    return false;
#endif
}

bool fk_gemm_bf16_on(int M, int N, int K) { return bf16_operands_on(M, N, K) && (int64_t)M * N * K >= FK_DNNL_MIN_WORK; }

void fk_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    FK_ASSERT(order == CblasRowMajor);
    if (g_precision == FK_PRECISION_FP32 || M == 0 || N == 0) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#ifdef FK_HAVE_DNNL
    if (fk_gemm_bf16_on(M, N, K) &&
        onednn_gemm(ta == CblasTrans, tb == CblasTrans, M, N, K, alpha, A, lda, NULL, B, ldb, NULL, beta, C, ldc, NULL, FK_EP_NONE))
        return;
#endif
    emulated_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

bool fk_sgemm_fused(int M, int N, int K, const float *A, int lda, const float *B, int ldb, const float *bias, float beta,
                    fk_epilogue ep, float *C, int ldc) {
#ifdef FK_HAVE_DNNL
    return fk_gemm_bf16_on(M, N, K) && onednn_gemm(false, true, M, N, K, 1, A, lda, NULL, B, ldb, NULL, beta, C, ldc, bias, ep);
#else
    (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)bias, (void)beta, (void)ep, (void)C, (void)ldc;
    return false;
#endif
}

void fk_sgemm_backward(int N, int C, int OC, const float *dout, const float *inp, const float *w, float dinp_beta, float *dinp,
                       float *dw) {
#ifdef FK_HAVE_DNNL
    uint16_t *d = NULL;
    if (fk_gemm_bf16_on(N, C, OC) && (d = scratch(2, (size_t)N * OC * 2))) {
        // dout (N x OC, row stride OC) rounded once: the A of both products, as stored
        rows_to_bf16(d, dout, N, OC, OC);
        if (!onednn_gemm(false, false, N, C, OC, 1, dout, OC, d, w, C, NULL, dinp_beta, dinp, C, NULL, FK_EP_NONE))
            emulated_gemm(CblasNoTrans, CblasNoTrans, N, C, OC, 1, dout, OC, w, C, dinp_beta, dinp, C);
        if (!onednn_gemm(true, false, OC, C, N, 1, dout, OC, d, inp, C, NULL, 1, dw, C, NULL, FK_EP_NONE))
            emulated_gemm(CblasTrans, CblasNoTrans, OC, C, N, 1, dout, OC, inp, C, 1, dw, C);
        return;
    }
#endif
    fk_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1, dout, OC, w, C, dinp_beta, dinp, C);
    fk_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1, dout, OC, inp, C, 1, dw, C);
}

void fk_rows_to_bf16(uint16_t *dst, const float *src, int rows, int cols, int ld) {
#ifdef FK_HAVE_DNNL
    rows_to_bf16(dst, src, rows, cols, ld);
#else
    #pragma omp parallel for if ((int64_t)rows * cols >= FK_CONVERT_PAR && !omp_in_parallel())
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(size_t)r * cols + c] = (uint16_t)fk_bf16_rne(src[(size_t)r * ld + c]);
#endif
}

bool fk_gemm_bf16(int M, int N, int K, const uint16_t *a16, const uint16_t *b16, const float *bias, float *C, int ldc) {
#ifdef FK_HAVE_DNNL
    return bf16_operands_on(M, N, K) && onednn_gemm(false, true, M, N, K, 1, NULL, K, a16, NULL, K, b16, 0.0f, C, ldc, bias, FK_EP_NONE);
#else
    (void)M, (void)N, (void)K, (void)a16, (void)b16, (void)bias, (void)C, (void)ldc;
    return false;
#endif
}

// The rows x cols packed bf16 matrix as floats (exact), in scratch buffer 3; NULL when out of memory.
static float *bf16_to_scratch(const uint16_t *a16, int rows, int cols) {
    float *a = scratch(3, (size_t)rows * cols * sizeof(float));
    if (!a) return NULL;
    #pragma omp parallel for if ((int64_t)rows * cols >= FK_CONVERT_PAR && !omp_in_parallel())
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            uint32_t x = (uint32_t)a16[(size_t)r * cols + c] << 16;
            memcpy(&a[(size_t)r * cols + c], &x, 4);
        }
    return a;
}

void fk_sgemm_a16(int M, int N, int K, const uint16_t *a16, const float *B, int ldb, const float *bias, float *C, int ldc) {
#ifdef FK_HAVE_DNNL
    if (fk_gemm_bf16_on(M, N, K) && onednn_gemm(false, true, M, N, K, 1, NULL, K, a16, B, ldb, NULL, 0.0f, C, ldc, bias, FK_EP_NONE))
        return;
#endif
    // elsewhere the operand's exact values in fp32, through the library's product (which rounds them to themselves)
    float *a = bf16_to_scratch(a16, M, K);
    FK_ASSERT(a);  // out of memory for a copy of an activation the caller already holds
    fk_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, B, ldb, 0, C, ldc);
    if (bias) {
        #pragma omp parallel for if ((int64_t)M * N > FK_CONVERT_PAR && !omp_in_parallel())
        for (int i = 0; i < M; i++)
            for (int o = 0; o < N; o++) C[(size_t)i * ldc + o] += bias[o];
    }
}

void fk_sgemm_backward_a16(int N, int C, int OC, const float *dout, const uint16_t *inp16, const float *w, float dinp_beta,
                           float *dinp, float *dw) {
#ifdef FK_HAVE_DNNL
    uint16_t *d = NULL;
    if (fk_gemm_bf16_on(N, C, OC) && (d = scratch(2, (size_t)N * OC * 2))) {
        rows_to_bf16(d, dout, N, OC, OC);
        bool ok = onednn_gemm(false, false, N, C, OC, 1, dout, OC, d, w, C, NULL, dinp_beta, dinp, C, NULL, FK_EP_NONE);
        if (!ok) emulated_gemm(CblasNoTrans, CblasNoTrans, N, C, OC, 1, dout, OC, w, C, dinp_beta, dinp, C);
        if (onednn_gemm(true, false, OC, C, N, 1, dout, OC, d, NULL, C, inp16, 1, dw, C, NULL, FK_EP_NONE)) return;
        float *inp = bf16_to_scratch(inp16, N, C);
        FK_ASSERT(inp);
        emulated_gemm(CblasTrans, CblasNoTrans, OC, C, N, 1, dout, OC, inp, C, 1, dw, C);
        return;
    }
#endif
    float *inp = bf16_to_scratch(inp16, N, C);
    FK_ASSERT(inp);
    fk_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1, dout, OC, w, C, dinp_beta, dinp, C);
    fk_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1, dout, OC, inp, C, 1, dw, C);
}

void fk_sgemm_bias(int M, int N, int K, const float *A, int lda, const float *B, int ldb, const float *bias, float *C, int ldc) {
    // under bf16 on oneDNN the bias is added where the product is stored: no pass of its own
    if (fk_sgemm_fused(M, N, K, A, lda, B, ldb, bias, 0.0f, FK_EP_NONE, C, ldc)) return;
    fk_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, lda, B, ldb, 0, C, ldc);
    #pragma omp parallel for if ((int64_t)M * N > FK_CONVERT_PAR && !omp_in_parallel())
    for (int i = 0; i < M; i++)
        for (int o = 0; o < N; o++) C[(size_t)i * ldc + o] += bias[o];
}

void fk_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int M, int N, float alpha, const float *A, int lda,
              const float *x, int incx, float beta, float *y, int incy) {
    FK_ASSERT(order == CblasRowMajor);
    if (g_precision == FK_PRECISION_FP32 || incx != 1 || incy != 1 || ta != CblasNoTrans) {
        cblas_sgemv(CblasRowMajor, ta, M, N, alpha, A, lda, x, incx, beta, y, incy);
        return;
    }
    // y (M) = A (M x N) x: the product with a one-row matrix, so one token's logits equal a batch's
    fk_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, M, N, alpha, x, N, A, lda, beta, y, M);
}
