// Measures the fp32 FMA peak of this machine: every thread runs independent chains of
// vector fused multiply-adds (AVX-512, AVX2 or scalar, whichever the build targets). Then the
// bf16 peak: AMX tiles where the CPU and the kernel allow them (four independent 16 x 16 fp32
// accumulators, TDPBF16PS, 16384 flops each), else AVX512-BF16 (chains of VDPBF16PS, 64 flops
// each), else none. Prints one JSON line for each; bench/run.sh divides the GFLOP/s a run
// achieves by the peak of its precision to report MFU.
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }

#define CHAINS 12
#define ITERS 200000000L

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define AMX_ITERS 20000000L

// Chains of TDPBF16PS on tiles 0-3 (C), 4-5 (A), 6-7 (B), each 16 rows of 64 bytes; returns the flops.
__attribute__((target("amx-tile,amx-bf16"))) static double amx_run(void) {
    struct { unsigned char palette, start, reserved[14]; unsigned short colsb[16]; unsigned char rows[16]; } cfg;
    static const unsigned short zeros[16 * 32];
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, zeros, 64); _tile_loadd(5, zeros, 64); _tile_loadd(6, zeros, 64); _tile_loadd(7, zeros, 64);
    for (long i = 0; i < AMX_ITERS; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_release();
    return 4.0 * 2 * 16 * 16 * 32 * (double)AMX_ITERS;
}

// Chains of VDPBF16PS (16 lanes, each two products summed into fp32); returns the flops.
__attribute__((target("avx512f,avx512bf16"))) static double dpbf16_run(float *sink) {
    __m512 acc[CHAINS];
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380);  // 1.0, ~6e-8
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < ITERS / 4; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
    for (int c = 0; c < CHAINS; c++) *sink += _mm512_reduce_add_ps(acc[c]);
    return 64.0 * CHAINS * (double)(ITERS / 4);
}

// The bf16 peak over all threads: {"bench":"bf16_peak",...} with the kind of unit measured.
static void bf16_peak(void) {
    // CPUID leaf 7: AMX-TILE and AMX-BF16 are EDX bits 24 and 22 of subleaf 0, AVX512-BF16 EAX bit 5
    // of subleaf 1 (clang 14's __builtin_cpu_supports knows no AMX names); AMX also needs the
    // kernel's permission for the tile data (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    unsigned a, b, c, d, a1 = 0, b1, c1, d1 = 0;
    __builtin_cpu_init();
    int ok = __builtin_cpu_supports("avx512f") && __get_cpuid_count(7, 0, &a, &b, &c, &d) && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    int avx = ok && (a1 >> 5 & 1);
    int amx = ok && avx && (d >> 24 & 1) && (d >> 22 & 1) && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    if (!amx && !avx) {
        printf("{\"bench\":\"bf16_peak\",\"unit\":\"none\",\"gflops\":0}\n");
        return;
    }
    double t0 = now(), flops = 0;
    float sink = 0;
    int threads = 1;
    #pragma omp parallel reduction(+ : flops, sink)
    {
        #pragma omp single
        threads = omp_get_num_threads();
        float s = 0;
        flops += amx ? amx_run() : dpbf16_run(&s);
        sink += s;
    }
    double dt = now() - t0;
    printf("{\"bench\":\"bf16_peak\",\"unit\":\"%s\",\"threads\":%d,\"gflops\":%.1f,\"seconds\":%.3f,\"check\":%g}\n",
           amx ? "amx-bf16" : "avx512-bf16", threads, flops / dt / 1e9, dt, sink);
}
#else
static void bf16_peak(void) { printf("{\"bench\":\"bf16_peak\",\"unit\":\"none\",\"gflops\":0}\n"); }
#endif

int main(void) {
    double t0 = now(), sink = 0;
    int threads = 1, width = 1;
    #pragma omp parallel reduction(+ : sink)
    {
        #pragma omp single
        threads = omp_get_num_threads();
#if defined(__AVX512F__)
        __m512 acc[CHAINS], a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
        for (long i = 0; i < ITERS; i++)
            for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
        for (int c = 0; c < CHAINS; c++) sink += _mm512_reduce_add_ps(acc[c]);
        #pragma omp single
        width = 16;
#elif defined(__AVX2__) && defined(__FMA__)
        __m256 acc[CHAINS], a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
        for (long i = 0; i < ITERS; i++)
            for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
        float out[8];
        for (int c = 0; c < CHAINS; c++) { _mm256_storeu_ps(out, acc[c]); for (int k = 0; k < 8; k++) sink += out[k]; }
        #pragma omp single
        width = 8;
#else
        float acc[CHAINS];
        for (int c = 0; c < CHAINS; c++) acc[c] = (float)c;
        for (long i = 0; i < ITERS; i++)
            for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * 0.999999f + 1e-7f;
        for (int c = 0; c < CHAINS; c++) sink += acc[c];
#endif
    }
    double dt = now() - t0, flops = 2.0 * width * CHAINS * (double)ITERS * threads;
    printf("{\"bench\":\"fp32_peak\",\"threads\":%d,\"vector_width\":%d,\"gflops\":%.1f,\"seconds\":%.3f,\"check\":%g}\n",
           threads, width, flops / dt / 1e9, dt, sink);
    bf16_peak();
    return 0;
}
