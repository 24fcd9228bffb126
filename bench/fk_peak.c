// Measures the fp32 FMA peak of this machine: every thread runs independent chains of
// vector fused multiply-adds (AVX-512, AVX2 or scalar, whichever the build targets).
// Prints one JSON line; bench/run.sh divides achieved GFLOP/s by it to report MFU.
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }

#define CHAINS 12
#define ITERS 200000000L

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
    return 0;
}
