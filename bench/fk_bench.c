// fusekit speed benchmark: training and inference tokens/s, achieved GFLOP/s, MFU and peak
// RSS for the configs S, M and M-llama. Prints one JSON line per run. Never pass/fail.
// usage: fk_bench --config S|M|M-llama|M-moe|M-moe-active|M-moe-total --mode train|infer|decode [--steps N] [--peak-gflops X]
//                 [--precision fp32|bf16]  (matrix products: fk_matmul_set_precision; printed as "precision")
// decode: one sequence generated token by token with the KV cache over the whole context.
#include "fusekit/fusekit.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void make_config(const char *name, fk_config *c, int *B, int *T) {
    *B = 8;
    if (strcmp(name, "S") == 0) { fk_config_gpt2(c, 8192, 256, 4, 4, 256); *T = 256; }
    else if (strcmp(name, "M") == 0) { fk_config_gpt2(c, 8192, 512, 8, 8, 512); *T = 512; }
    else if (strcmp(name, "M-llama") == 0) { fk_config_llama(c, 8192, 512, 8, 8, 8, 1376, 512); *T = 512; }
    // Mixtral's shape at M-llama's size: 8 experts of M-llama's FFN width, 2 active, no dense FFN;
    // and the dense models with its active (2 FFNs wide) and its total (8 wide) FFN parameters
    else if (strcmp(name, "M-moe") == 0) {
        fk_config_llama(c, 8192, 512, 8, 8, 8, 0, 512);
        c->n_expert = 8; c->n_expert_used = 2; c->expert_ffn = 1376; c->expert_norm = true;
        for (int l = 0; l < 8; l++) c->moe[l] = 1;
        *T = 512;
    }
    else if (strcmp(name, "M-moe-active") == 0) { fk_config_llama(c, 8192, 512, 8, 8, 8, 2 * 1376, 512); *T = 512; }
    else if (strcmp(name, "M-moe-total") == 0) { fk_config_llama(c, 8192, 512, 8, 8, 8, 8 * 1376, 512); *T = 512; }
    else { fprintf(stderr, "unknown config %s (S, M, M-llama, M-moe, M-moe-active, M-moe-total)\n", name); exit(2); }
}

int main(int argc, char **argv) {
    // As the fusekit binary does: OpenBLAS's kernels for the CPU when its release does not know
    // the CPU and would run generic SSE3 ones (the variable is read when OpenBLAS loads).
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : fk_blas_better_core();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);  // returns only on failure
    const char *config = "S", *mode = "train";
    int steps = 0;
    double peak = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--config") == 0) config = argv[i + 1];
        else if (strcmp(argv[i], "--mode") == 0) mode = argv[i + 1];
        else if (strcmp(argv[i], "--steps") == 0) steps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--peak-gflops") == 0) peak = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--precision") == 0) {
            fk_precision p;
            if (fk_precision_parse(argv[i + 1], &p) != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 2; }
            fk_matmul_set_precision(p);
        } else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    bool train = strcmp(mode, "train") == 0;
    if (strcmp(mode, "decode") == 0) {
        fk_config dc;
        int dB, dT;
        make_config(config, &dc, &dB, &dT);
        fk_model dm;
        if (fk_model_init(&dm, &dc) != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 1; }
        fk_model_init_weights(&dm, 1);
        float *logits = malloc((size_t)dc.vocab_size * sizeof(float));
        int32_t tok = 1;
        fk_model_step(&dm, &tok, 1, 0, logits);  // warm-up
        double t0 = fk_time_s();
        for (int p = 0; p < dT; p++) {
            if (fk_model_step(&dm, &tok, 1, p, logits) != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 1; }
            tok = (int32_t)(p * 7919 % dc.vocab_size);
        }
        double dt = fk_time_s() - t0;
        printf("{\"impl\":\"fusekit\",\"config\":\"%s\",\"mode\":\"decode\",\"batch\":1,\"ctx\":%d,\"tokens_per_s\":%.1f,"
               "\"ms_per_token\":%.3f,\"peak_rss_mb\":%.1f}\n", config, dT, dT / dt, 1e3 * dt / dT, fk_peak_rss_mb());
        free(logits);
        fk_model_free(&dm);
        return 0;
    }
    fk_config c;
    int B, T;
    make_config(config, &c, &B, &T);
    fk_model m;
    fk_status st = fk_model_init(&m, &c);
    if (st != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 1; }
    fk_model_init_weights(&m, 1);
    fk_optim_opts oo;
    fk_optim_defaults(&oo);
    fk_adamw opt;
    if (train && fk_adamw_init(&opt, &m, &oo) != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 1; }
    int32_t *x = malloc((size_t)B * T * sizeof(int32_t)), *y = malloc((size_t)B * T * sizeof(int32_t));
    fk_rng r;
    fk_rng_seed(&r, 5);
    if (steps <= 0) steps = strcmp(config, "S") == 0 ? (train ? 20 : 40) : (train ? 5 : 12);
    double t0 = 0;
    for (int s = -2; s < steps; s++) {  // two untimed warm-up steps
        if (s == 0) t0 = fk_time_s();
        for (int i = 0; i < B * T; i++) { x[i] = (int32_t)fk_rng_below(&r, 8192); y[i] = (int32_t)fk_rng_below(&r, 8192); }
        float loss;
        if (train) {
            fk_model_zero_grads(&m);
            st = fk_model_forward(&m, x, y, B, T, true, &loss);
            if (st == FK_OK) st = fk_model_backward(&m, 1.0f);
            if (st == FK_OK) {
                double gn = fk_grad_norm(&m);
                fk_adamw_update(&opt, &m, 3e-4f, gn > 1 ? (float)(1 / (gn + 1e-6)) : 1.0f);
            }
        } else {
            st = fk_model_forward(&m, x, NULL, B, T, false, NULL);
        }
        if (st != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 1; }
    }
    double dt = fk_time_s() - t0, tps = (double)B * T * steps / dt;
    // FLOPs per token, shared with bench/torch_bench.py: 2 N_mm + 2 L T d forward; training 3x.
    double fwd = 2.0 * (double)fk_model_num_matmul_params(&m) + 2.0 * (double)c.n_layer * T * (double)c.d_model;
    double flops = train ? 3 * fwd : fwd, gflops = tps * flops / 1e9;
    printf("{\"impl\":\"fusekit\",\"config\":\"%s\",\"mode\":\"%s\",\"batch\":%d,\"ctx\":%d,\"tokens_per_s\":%.1f,"
           "\"gflops\":%.2f,", config, mode, B, T, tps, gflops);
    if (peak > 0) printf("\"mfu\":%.4f,", gflops / peak);
    printf("\"peak_rss_mb\":%.1f,\"steps\":%d,\"seconds\":%.3f,\"params\":%lld,\"precision\":\"%s\"}\n", fk_peak_rss_mb(),
           steps, dt, (long long)fk_model_num_params(&m), fk_matmul_backend());
    if (train) fk_adamw_free(&opt);
    fk_model_free(&m);
    free(x); free(y);
    return 0;
}
