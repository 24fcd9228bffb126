// fk_qmatmul_forward against cblas_sgemm on the pre-dequantized matrix: tokens/s for the
// shapes of SmolLM2-135M and Gemma-3-270M (C x OC: 576x1536, 640x2048, 2048x640 (ffn_down),
// 640x262144 (Gemma's tied output)) at N = 512 (a batch of tokens, eval / extraction) and
// N = 1 (generation), for the types the two real files use, exact (fk_qmatmul_forward) and
// with 8-bit activations (fk_qmatmul_forward_q8); K-quants need C % 256 == 0 and
// run only where it holds (a "skipped" line otherwise). Also fk_dequantize_row's rate per
// type. One JSON line per case. Never pass/fail.
// usage: fk_quant_bench [--types Q4_1,Q8_0,...] [--shapes 576x1536,...] [--n 512,1] [--reps R]
#include "fusekit/fusekit.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Random blocks of the type with small finite half-float scales (|d| ~ 1e-3..1e-2): the
// speed does not depend on the values, only on the layout.
static void random_blocks(uint8_t *b, uint64_t nbytes, uint32_t type, fk_rng *r) {
    for (uint64_t i = 0; i < nbytes; i++) b[i] = (uint8_t)fk_rng_u64(r);
    const fk_ggml_type_info *t = fk_ggml_type(type);
    uint64_t nb = nbytes / (uint64_t)t->bytes;
    static const struct { uint32_t type; int off[2]; } scales[] = {
        {FK_GGML_Q4_0, {0, -1}}, {FK_GGML_Q4_1, {0, 2}}, {FK_GGML_Q5_0, {0, -1}}, {FK_GGML_Q5_1, {0, 2}}, {FK_GGML_Q8_0, {0, -1}},
        {FK_GGML_Q2_K, {80, 82}}, {FK_GGML_Q3_K, {108, -1}}, {FK_GGML_Q4_K, {0, 2}}, {FK_GGML_Q5_K, {0, 2}}, {FK_GGML_Q6_K, {208, -1}},
        {FK_GGML_IQ4_NL, {0, -1}}, {FK_GGML_IQ4_XS, {0, -1}},
    };
    for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
        if (scales[s].type != type) continue;
        for (uint64_t k = 0; k < nb; k++)
            for (int j = 0; j < 2; j++)
                if (scales[s].off[j] >= 0) {
                    uint16_t h = fk_f32_to_f16((fk_rng_uniform(r) + 0.1f) * 0.01f);
                    memcpy(b + k * (uint64_t)t->bytes + scales[s].off[j], &h, 2);
                }
    }
}

static uint32_t type_id(const char *name) {
    for (uint32_t t = 0; t < FK_GGML_TYPE_COUNT; t++)
        if (strcmp(fk_ggml_type_name(t), name) == 0) return t;
    fprintf(stderr, "unknown type %s\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    // As the fusekit binary does: OpenBLAS's kernels for the CPU when its release does not know
    // the CPU and would run generic SSE3 ones (the variable is read when OpenBLAS loads).
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : fk_blas_better_core();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);  // returns only on failure
    const char *types = "Q4_1,Q8_0,Q4_K,Q5_0,Q6_K", *shapes = "576x1536,640x2048,2048x640,640x262144", *ns = "512,1";
    int reps = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--types") == 0) types = argv[i + 1];
        else if (strcmp(argv[i], "--shapes") == 0) shapes = argv[i + 1];
        else if (strcmp(argv[i], "--n") == 0) ns = argv[i + 1];
        else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    fk_rng r;
    fk_rng_seed(&r, 1);
    {  // dequantization rate: one row of 4096 elements, again and again (stays in L1/L2)
        char ty[256];
        snprintf(ty, sizeof ty, "%s", types);
        char *save;
        for (char *tp = strtok_r(ty, ",", &save); tp; tp = strtok_r(NULL, ",", &save)) {
            uint32_t type = type_id(tp);
            uint64_t rb;
            if (fk_ggml_row_bytes(type, 4096, &rb) != FK_OK) continue;
            uint8_t *wq = malloc(rb);
            float *y = malloc(4096 * sizeof(float));
            random_blocks(wq, rb, type, &r);
            int R = 20000;
            double t0 = fk_time_s();
            for (int k = 0; k < R; k++) fk_dequantize_row(type, wq, y, 4096);
            double dt = fk_time_s() - t0;
            printf("{\"bench\":\"dequantize_row\",\"type\":\"%s\",\"threads\":1,\"gelem_per_s\":%.3f,\"check\":%g}\n", tp,
                   4096.0 * R / dt / 1e9, (double)y[17]);
            free(wq);
            free(y);
        }
    }
    char sh[256];
    snprintf(sh, sizeof sh, "%s", shapes);
    for (char *sp = strtok(sh, ","); sp; sp = strtok(NULL, ",")) {
        long long C = 0, OC = 0;
        if (sscanf(sp, "%lldx%lld", &C, &OC) != 2) { fprintf(stderr, "bad shape %s\n", sp); return 2; }
        char ty[256];
        snprintf(ty, sizeof ty, "%s", types);
        char *save_t;
        for (char *tp = strtok_r(ty, ",", &save_t); tp; tp = strtok_r(NULL, ",", &save_t)) {
            uint32_t type = type_id(tp);
            uint64_t rb;
            if (fk_ggml_row_bytes(type, C, &rb) != FK_OK) {
                printf("{\"bench\":\"qmatmul\",\"type\":\"%s\",\"C\":%lld,\"OC\":%lld,\"skipped\":\"C is not a multiple of the block size %d\"}\n",
                       tp, C, OC, fk_ggml_type(type)->block);
                continue;
            }
            uint8_t *wq = malloc(rb * (uint64_t)OC);
            float *wf = malloc((size_t)(C * OC) * sizeof(float));
            if (!wq || !wf) { fprintf(stderr, "out of memory\n"); return 1; }
            random_blocks(wq, rb * (uint64_t)OC, type, &r);
            for (long long o = 0; o < OC; o++) fk_dequantize_row(type, wq + (uint64_t)o * rb, wf + o * C, C);
            char nsb[64];
            snprintf(nsb, sizeof nsb, "%s", ns);
            char *save_n;
            for (char *np = strtok_r(nsb, ",", &save_n); np; np = strtok_r(NULL, ",", &save_n)) {
                long long N = atoll(np);
                float *x = malloc((size_t)(N * C) * sizeof(float)), *y = malloc((size_t)(N * OC) * sizeof(float));
                if (!x || !y) { fprintf(stderr, "out of memory\n"); return 1; }
                for (long long i = 0; i < N * C; i++) x[i] = fk_rng_normal(&r);
                double flops = 2.0 * (double)N * (double)C * (double)OC;
                int R = reps > 0 ? reps : flops > 2e10 ? 1 : flops > 1e9 ? 3 : N == 1 && OC > 100000 ? 5 : 20;
                double tq = 1e30, tf = 1e30, t8 = 1e30;
                for (int k = 0; k <= R; k++) {  // k == 0: warm-up
                    double ta = fk_time_s();
                    if (fk_qmatmul_forward_q8(y, x, wq, type, NULL, N, C, OC) != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 1; }
                    double t0 = fk_time_s();
                    if (k > 0) t8 = t0 - ta < t8 ? t0 - ta : t8;
                    if (fk_qmatmul_forward(y, x, wq, type, NULL, N, C, OC) != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 1; }
                    double t1 = fk_time_s();
                    if (N == 1)
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)OC, (int)C, 1, wf, (int)C, x, 1, 0, y, 1);
                    else
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)OC, (int)C, 1, x, (int)C, wf, (int)C, 0, y, (int)OC);
                    double t2 = fk_time_s();
                    if (k > 0) { tq = t1 - t0 < tq ? t1 - t0 : tq; tf = t2 - t1 < tf ? t2 - t1 : tf; }
                }
                printf("{\"bench\":\"qmatmul\",\"type\":\"%s\",\"C\":%lld,\"OC\":%lld,\"N\":%lld,\"threads\":%d,\"reps\":%d,"
                       "\"qmatmul_tokens_per_s\":%.1f,\"qmatmul_q8_tokens_per_s\":%.1f,\"sgemm_f32_tokens_per_s\":%.1f,"
                       "\"ratio\":%.3f,\"ratio_q8\":%.3f,\"qmatmul_gflops\":%.2f,\"weight_mb_quant\":%.1f,\"weight_mb_f32\":%.1f}\n",
                       tp, C, OC, N, omp_get_max_threads(), R, N / tq, N / t8, N / tf, tf / tq, tf / t8, flops / tq / 1e9,
                       rb * (double)OC / 1e6, 4.0 * C * OC / 1e6);
                fflush(stdout);
                free(x);
                free(y);
            }
            free(wq);
            free(wf);
        }
    }
    return 0;
}
