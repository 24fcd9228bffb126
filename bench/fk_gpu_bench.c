// Training and inference tokens/s of the CUDA engine (bench/README.md, "GPU"): GPT-2 124M and a
// Llama-3.2-1B-shaped model, random weights and tokens, bf16 products; one JSON line per run with
// the model FLOPs utilisation against a bf16 peak (--peak, TFLOP/s; default 989, the H100/H200 SXM
// dense datasheet figure). bench/torch_bench.py --device cuda times PyTorch on the same shapes.
//   fk_gpu_bench [--config gpt2-124m|llama-1b|all] [--mode train|infer|all] [--steps N] [--batch B] [--peak TF]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/base.h"
#include "fusekit/gpu.h"
#include "fusekit/model.h"

static void config_of(const char *name, fk_config *c, int *B, int *T) {
    if (strcmp(name, "gpt2-124m") == 0) {
        fk_config_gpt2(c, 50257, 768, 12, 12, 1024);
        *B = 16, *T = 1024;
    } else {  // Llama 3.2 1B: 2048 wide, 16 layers, 32 heads of 64, 8 KV heads, SwiGLU 8192, tied
        fk_config_llama(c, 128256, 2048, 16, 32, 8, 8192, 1024);
        c->rope_theta = 500000.0f;
        c->tied = true;
        *B = 8, *T = 1024;
    }
}

static int run(const char *name, const char *mode, int steps, int batch, double peak) {
    fk_config c;
    int B, T;
    config_of(name, &c, &B, &T);
    if (batch > 0) B = batch;
    fk_model m;
    if (fk_model_init(&m, &c) != FK_OK) { fprintf(stderr, "%s\n", fk_last_error()); return 1; }
    fk_model_init_weights(&m, 1);
    bool train = strcmp(mode, "train") == 0;
    fk_gpu *g;
    double t_open = fk_time_s();
    if (fk_gpu_open(&g, &m, B, T, train) != FK_OK) {
        printf("{\"bench\":\"gpu\",\"config\":\"%s\",\"mode\":\"%s\",\"error\":\"%s\"}\n", name, mode, fk_last_error());
        fk_model_free(&m);
        return 1;
    }
    t_open = fk_time_s() - t_open;
    int64_t N = (int64_t)B * T;
    int32_t *x = malloc((size_t)N * 4), *y = malloc((size_t)N * 4);
    fk_rng r;
    fk_rng_seed(&r, 3);
    for (int64_t i = 0; i < N; i++) { x[i] = (int32_t)fk_rng_below(&r, (uint64_t)c.vocab_size); y[i] = (int32_t)fk_rng_below(&r, (uint64_t)c.vocab_size); }
    int warm = 2;
    double t0 = 0;
    float loss = 0;
    fk_status st = FK_OK;
    for (int s = 0; s < warm + steps && st == FK_OK; s++) {
        if (s == warm) t0 = fk_time_s();
        if (train) {
            fk_gpu_zero_grads(g);
            st = fk_gpu_train_step(g, x, y, NULL, 1.0f, B, T, 1.0f, &loss, NULL);
            double gn;
            if (st == FK_OK) st = fk_gpu_grad_norm(g, &gn);
            if (st == FK_OK) st = fk_gpu_adamw(g, s + 1, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f);
        } else {
            st = fk_gpu_forward(g, x, y, B, T, &loss, NULL, NULL);
        }
    }
    double dt = fk_time_s() - t0;
    if (st != FK_OK) {
        printf("{\"bench\":\"gpu\",\"config\":\"%s\",\"mode\":\"%s\",\"error\":\"%s\"}\n", name, mode, fk_last_error());
        return 1;
    }
    double fwd, trn;
    fk_model_flops_per_token(&m, T, &fwd, &trn);
    double tps = (double)N * steps / dt, flops = (train ? trn : fwd) * tps;
    char desc[256];
    fk_gpu_describe(desc, sizeof desc);
    printf("{\"bench\":\"gpu\",\"engine\":\"fusekit\",\"config\":\"%s\",\"mode\":\"%s\",\"batch\":%d,\"ctx\":%d,\"params\":%lld,"
           "\"steps\":%d,\"step_ms\":%.2f,\"tokens_per_s\":%.0f,\"tflops\":%.1f,\"mfu\":%.4f,\"peak_tflops\":%.0f,\"loss\":%.4f,"
           "\"device_gib\":%.2f,\"open_s\":%.2f,\"gpu\":\"%s\"}\n",
           name, mode, B, T, (long long)fk_model_num_params(&m), steps, 1e3 * dt / steps, tps, flops / 1e12, flops / (peak * 1e12), peak,
           loss, (double)fk_gpu_held_bytes(g) / (1 << 30), t_open, desc);
    fflush(stdout);
    fk_gpu_close(g);
    fk_model_free(&m);
    free(x);
    free(y);
    return 0;
}

int main(int argc, char **argv) {
    const char *config = "all", *mode = "all";
    int steps = 10, batch = 0;
    double peak = 989;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--config") == 0) config = argv[i + 1];
        else if (strcmp(argv[i], "--mode") == 0) mode = argv[i + 1];
        else if (strcmp(argv[i], "--steps") == 0) steps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0) batch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--peak") == 0) peak = atof(argv[i + 1]);
        else { fprintf(stderr, "fk_gpu_bench: unknown option %s\n", argv[i]); return 2; }
    }
    char desc[256];
    if (fk_gpu_describe(desc, sizeof desc) != FK_OK) { fprintf(stderr, "fk_gpu_bench: %s\n", fk_last_error()); return 2; }
    const char *configs[] = {"gpt2-124m", "llama-1b"}, *modes[] = {"train", "infer"};
    int rc = 0;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            if ((strcmp(config, "all") == 0 || strcmp(config, configs[a]) == 0) && (strcmp(mode, "all") == 0 || strcmp(mode, modes[b]) == 0))
                rc |= run(configs[a], modes[b], steps, batch, peak);
    return rc;
}
