// GFLOP/s of the library's matrix products on transformer shapes: fp32 (OpenBLAS), bf16 (oneDNN
// where the CPU has AVX512-BF16) and bf16 emulated (rounded operands through OpenBLAS), the three
// alternated shape by shape over --rounds rounds. One JSON line per (shape, path) with the median
// over rounds and its ratio to fp32; threads from OMP_NUM_THREADS.
//   fk_gemm_bench [--rounds N] [--seconds S]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusekit/base.h"
#include "fusekit/model.h"
#include "nn/gemm.h"

typedef struct {
    const char *name;  // which product of which config
    int M, N, K;
    bool ta, tb;
} shape;

// Products of M-llama (B*T = 4096 tokens, d 512, SwiGLU 1376, vocab 8192) and S (2048 tokens, d 256):
// forward x W^T, backward dX = dY W and dW = dY^T X.
static const shape shapes[] = {
    {"M-llama qkv fwd", 4096, 1536, 512, false, true},  {"M-llama gate+up fwd", 4096, 2752, 512, false, true},
    {"M-llama down fwd", 4096, 512, 1376, false, true}, {"M-llama lm_head fwd", 4096, 8192, 512, false, true},
    {"M-llama down dX", 4096, 1376, 512, false, false}, {"M-llama down dW", 512, 1376, 4096, true, false},
    {"S qkv fwd", 2048, 768, 256, false, true},         {"S lm_head fwd", 2048, 8192, 256, false, true},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])
enum { P_FP32, P_BF16, P_EMUL, N_PATHS };
static const char *path_name[N_PATHS] = {"fp32", "bf16", "bf16-emulated"};

static void set_path(int p) {
    fk_matmul_set_precision(p == P_FP32 ? FK_PRECISION_FP32 : FK_PRECISION_BF16);
    fk_matmul_force_emulation(p == P_EMUL);
}

// GFLOP/s of repeated products of s for at least `seconds` (after one untimed call).
static double measure(const shape *s, const float *A, const float *B, float *C, double seconds) {
    CBLAS_TRANSPOSE ta = s->ta ? CblasTrans : CblasNoTrans, tb = s->tb ? CblasTrans : CblasNoTrans;
    int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    fk_sgemm(CblasRowMajor, ta, tb, s->M, s->N, s->K, 1, A, lda, B, ldb, 0, C, s->N);
    double t0 = fk_time_s(), t;
    int reps = 0;
    do {
        fk_sgemm(CblasRowMajor, ta, tb, s->M, s->N, s->K, 1, A, lda, B, ldb, 0, C, s->N);
        reps++;
        t = fk_time_s() - t0;
    } while (t < seconds);
    return 2.0 * s->M * s->N * s->K * reps / t / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The CPU's model name (/proc/cpuinfo), for the JSON lines: the bf16 ratio depends on it (AMX or not).
static void cpu_name(char *out, size_t n) {
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !c) continue;
        c += strspn(c + 1, " \t") + 1;
        c[strcspn(c, "\n\"\\")] = 0;
        snprintf(out, n, "%s", c);
        break;
    }
    if (f) fclose(f);
}

int main(int argc, char **argv) {
    // As the fusekit binary does: OpenBLAS's kernels for this CPU (without it OpenBLAS may run
    // AVX2 kernels on an AVX-512 CPU it does not know, and fp32 would read about 5x too slow).
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : fk_blas_better_core();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);  // returns only on failure
    int rounds = 3;
    double seconds = 0.5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: fk_gemm_bench [--rounds N (3)] [--seconds S per measurement (0.5)]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > 100 || !(seconds > 0)) {
        fprintf(stderr, "fk_gemm_bench: --rounds must be 1..100 and --seconds > 0\n");
        return 2;
    }
    size_t most = (size_t)4096 * 8192;
    float *A = malloc(most * 4), *B = malloc(most * 4), *C = malloc(most * 4);
    double *g = malloc(sizeof(double) * N_SHAPES * N_PATHS * rounds);
    if (!A || !B || !C || !g) return 1;
    fk_rng r;
    fk_rng_seed(&r, 1);
    for (size_t i = 0; i < most; i++) A[i] = fk_rng_normal(&r), B[i] = fk_rng_normal(&r);
    for (int k = 0; k < rounds; k++)
        for (size_t s = 0; s < N_SHAPES; s++)
            for (int p = 0; p < N_PATHS; p++) {
                set_path(p);
                g[(s * N_PATHS + p) * rounds + k] = measure(&shapes[s], A, B, C, seconds);
            }
    const char *omp = getenv("OMP_NUM_THREADS");
    char cpu[128];
    cpu_name(cpu, sizeof cpu);
    for (size_t s = 0; s < N_SHAPES; s++) {
        double med[N_PATHS];
        for (int p = 0; p < N_PATHS; p++) {
            double *v = g + (s * N_PATHS + p) * rounds;
            qsort(v, rounds, sizeof *v, cmp_double);
            med[p] = rounds % 2 ? v[rounds / 2] : 0.5 * (v[rounds / 2 - 1] + v[rounds / 2]);
        }
        for (int p = 0; p < N_PATHS; p++) {
            set_path(p);
            printf("{\"shape\": \"%s\", \"M\": %d, \"N\": %d, \"K\": %d, \"trans_a\": %s, \"trans_b\": %s, "
                   "\"path\": \"%s\", \"backend\": \"%s\", \"gflops_median\": %.1f, \"ratio_to_fp32\": %.3f, "
                   "\"rounds\": %d, \"threads\": \"%s\", \"cpu\": \"%s\"}\n",
                   shapes[s].name, shapes[s].M, shapes[s].N, shapes[s].K, shapes[s].ta ? "true" : "false",
                   shapes[s].tb ? "true" : "false", path_name[p], fk_matmul_backend(), med[p], med[p] / med[P_FP32],
                   rounds, omp ? omp : "default", cpu);
        }
    }
    free(A), free(B), free(C), free(g);
    return 0;
}
