// The CUDA engine against the CPU engine (src/nn), its reference: logits, losses, one step's
// gradients, the fusion loss with teacher rows, and AdamW updates, on small models of each family
// the CUDA engine implements (GPT-2, Llama with grouped-query attention, a Gemma-style model with
// sliding layers, GeGLU, an embedding scale and RMSNorm offset), and training that lowers the loss.
// Tolerances: the CUDA engine rounds every matrix product's operands to bf16 (fp32 accumulation),
// the CPU engine here computes in fp32, so logits and gradients agree to bf16's precision (relative
// L2 errors below 2e-2 and 6e-2), AdamW (fp32 on both) to 1e-5.
//
// Without a CUDA build or a GPU this program prints why and exits 77 (CTest: skipped).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fusekit/gpu.h"
#include "fusekit/model.h"
#include "fusekit/train.h"
#include "test_util.h"

static double rel_err(const float *a, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

typedef struct {
    const char *name;
    fk_config c;
} family;

static family families(int i) {
    family f;
    memset(&f, 0, sizeof f);
    switch (i) {
    case 0:
        f.name = "gpt2";
        fk_config_gpt2(&f.c, 97, 64, 2, 2, 32);  // head_dim 32
        break;
    case 1:
        f.name = "llama-gqa";
        fk_config_llama(&f.c, 101, 128, 2, 4, 2, 96, 32);  // head_dim 32, 2 KV heads
        f.c.tied = false;
        break;
    default:
        f.name = "gemma-style";
        fk_config_llama(&f.c, 89, 128, 3, 2, 1, 80, 32);  // head_dim 64
        f.c.mlp = FK_MLP_GEGLU;
        f.c.emb_scale = sqrtf(128.0f);
        f.c.norm_offset = 1.0f;
        f.c.sliding_window = 5;
        f.c.sliding[0] = f.c.sliding[2] = 1;
        f.c.rope_theta_local = 10000.0f;
        f.c.rope_theta = 1000000.0f;
        f.c.tied = true;
        break;
    }
    return f;
}
#define N_FAMILIES 3

static void batch(int32_t *x, int32_t *y, int n, int V, uint64_t seed) {
    fk_rng r;
    fk_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        x[i] = (int32_t)fk_rng_below(&r, (uint64_t)V);
        y[i] = i % 7 == 3 ? -1 : (int32_t)fk_rng_below(&r, (uint64_t)V);  // some positions not scored
    }
}

// Norm weights away from 1 and biases away from 0, so that their gradients and roles are tested.
static void perturb(fk_model *m, uint64_t seed) {
    fk_rng r;
    fk_rng_seed(&r, seed);
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].ndim == 1)
            for (int64_t j = 0; j < m->params[i].numel; j++) m->w[m->params[i].offset + j] += 0.1f * fk_rng_normal(&r);
}

static void test_forward_and_gradients(void **state) {
    (void)state;
    enum { B = 3, T = 17 };
    for (int fi = 0; fi < N_FAMILIES; fi++) {
        family f = families(fi);
        fk_model m;
        CHECK(fk_model_init(&m, &f.c));
        fk_model_init_weights(&m, 7 + fi);
        perturb(&m, 11 + fi);
        int32_t x[B * T], y[B * T];
        batch(x, y, B * T, (int)f.c.vocab_size, 5 + fi);
        int64_t V = f.c.vocab_size, n = m.n_floats;
        // logits and loss of an inference forward
        float cpu_loss, gpu_loss;
        CHECK(fk_model_forward(&m, x, y, B, T, false, &cpu_loss));
        float *ref = malloc((size_t)(B * T * V) * sizeof(float)), *got = malloc((size_t)(B * T * V) * sizeof(float));
        memcpy(ref, fk_model_logits(&m), (size_t)(B * T * V) * sizeof(float));
        fk_gpu *g;
        CHECK(fk_gpu_open(&g, &m, B, T, true));
        CHECK(fk_gpu_forward(g, x, y, B, T, &gpu_loss, NULL, got));
        double e_logits = rel_err(got, ref, B * T * V);
        printf("# %-12s logits rel err %.2e, loss cpu %.6f gpu %.6f\n", f.name, e_logits, cpu_loss, gpu_loss);
        assert_true(e_logits < 2e-2);
        assert_true(fabsf(gpu_loss - cpu_loss) < 2e-2f * fabsf(cpu_loss));
        // one training step's gradients, parameter by parameter
        CHECK(fk_model_alloc_grads(&m));
        fk_model_zero_grads(&m);
        CHECK(fk_model_forward(&m, x, y, B, T, true, &cpu_loss));
        CHECK(fk_model_backward(&m, 0.5f));
        fk_gpu_zero_grads(g);
        CHECK(fk_gpu_train_step(g, x, y, NULL, 1.0f, B, T, 0.5f, &gpu_loss, NULL));
        float *gg = malloc((size_t)n * sizeof(float));
        CHECK(fk_gpu_get_grads(g, gg));
        double worst = 0;
        const char *worst_name = "";
        for (int i = 0; i < m.n_params; i++) {
            const fk_param *p = &m.params[i];
            double e = rel_err(gg + p->offset, m.g + p->offset, p->numel);
            if (e > worst) { worst = e; worst_name = p->name; }
        }
        double e_all = rel_err(gg, m.g, n);
        printf("# %-12s train loss cpu %.6f gpu %.6f; gradient rel err %.2e (worst %s %.2e)\n", f.name, cpu_loss, gpu_loss, e_all,
               worst_name, worst);
        assert_true(fabsf(gpu_loss - cpu_loss) < 2e-2f * fabsf(cpu_loss));
        assert_true(e_all < 3e-2);
        assert_true(worst < 6e-2);
        // the gradients accumulate (grad_accum): a second identical step doubles them
        CHECK(fk_gpu_train_step(g, x, y, NULL, 1.0f, B, T, 0.5f, &gpu_loss, NULL));
        float *g2 = malloc((size_t)n * sizeof(float));
        CHECK(fk_gpu_get_grads(g, g2));
        for (int64_t j = 0; j < n; j++) g2[j] *= 0.5f;
        assert_true(rel_err(g2, gg, n) < 1e-4);
        // AdamW: the same update as the CPU's from the same gradients (copied to the host model)
        fk_optim_opts oo;
        fk_optim_defaults(&oo);
        oo.weight_decay = 0.1f;
        fk_adamw opt;
        CHECK(fk_adamw_init(&opt, &m, &oo));
        memcpy(m.g, g2, (size_t)n * sizeof(float));
        CHECK(fk_gpu_set_weights(g, m.w));
        fk_gpu_zero_grads(g);
        CHECK(fk_gpu_train_step(g, x, y, NULL, 1.0f, B, T, 0.5f, &gpu_loss, NULL));  // the same gradients again
        CHECK(fk_gpu_get_grads(g, gg));
        memcpy(m.g, gg, (size_t)n * sizeof(float));
        double gn_gpu, gn_cpu = fk_grad_norm(&m);
        CHECK(fk_gpu_grad_norm(g, &gn_gpu));
        assert_true(fabs(gn_gpu - gn_cpu) < 1e-5 * gn_cpu);
        for (int t = 1; t <= 3; t++) {
            fk_adamw_update(&opt, &m, 1e-3f, 0.7f);
            CHECK(fk_gpu_adamw(g, t, 1e-3f, oo.beta1, oo.beta2, oo.eps, oo.weight_decay, 0.7f));
        }
        float *w = malloc((size_t)n * sizeof(float)), *mo = malloc((size_t)n * sizeof(float)), *ve = malloc((size_t)n * sizeof(float));
        CHECK(fk_gpu_get_weights(g, w));
        CHECK(fk_gpu_get_moments(g, mo, ve));
        double e_w = rel_err(w, m.w, n), e_m = rel_err(mo, opt.m, n), e_v = rel_err(ve, opt.v, n);
        printf("# %-12s AdamW x3: weights rel err %.2e, moments %.2e / %.2e\n", f.name, e_w, e_m, e_v);
        assert_true(e_w < 1e-5 && e_m < 1e-5 && e_v < 1e-5);
        free(w); free(mo); free(ve); free(g2); free(gg); free(ref); free(got);
        fk_adamw_free(&opt);
        fk_gpu_close(g);
        fk_model_free(&m);
    }
}

// The fusion loss: lambda * CE + (1 - lambda) * soft CE against sparse teacher rows (rows that sum
// to less than one keep a tail class; empty rows count as one-hots), value and gradients.
static void test_teacher_loss(void **state) {
    (void)state;
    enum { B = 2, T = 11, K = 4 };
    family f = families(1);
    fk_model m;
    CHECK(fk_model_init(&m, &f.c));
    fk_model_init_weights(&m, 3);
    int32_t x[B * T], y[B * T];
    batch(x, y, B * T, (int)f.c.vocab_size, 9);
    int64_t row[B * T + 1];
    int32_t ids[B * T * K];
    float p[B * T * K];
    fk_rng r;
    fk_rng_seed(&r, 4);
    int64_t e = 0;
    for (int i = 0; i < B * T; i++) {
        row[i] = e;
        int k = i % 5 == 0 ? 0 : K;  // some empty rows
        float left = i % 3 == 0 ? 0.9f : 1.0f;  // some rows with a tail
        for (int j = 0; j < k; j++, e++) {
            ids[e] = (int32_t)((y[i] >= 0 ? y[i] : 0) + j * 13) % (int32_t)f.c.vocab_size;
            p[e] = j == k - 1 ? left : left * 0.5f, left -= p[e];
        }
    }
    row[B * T] = e;
    fk_sparse_dist t = {.row = row, .ids = ids, .p = p};
    CHECK(fk_model_alloc_grads(&m));
    fk_model_zero_grads(&m);
    float cl, cf, gl, gf;
    CHECK(fk_model_forward_soft(&m, x, y, &t, 0.3f, B, T, true, &cl, &cf));
    CHECK(fk_model_backward(&m, 1.0f));
    fk_gpu *g;
    CHECK(fk_gpu_open(&g, &m, B, T, true));
    CHECK(fk_gpu_train_step(g, x, y, &t, 0.3f, B, T, 1.0f, &gl, &gf));
    float *gg = malloc((size_t)m.n_floats * sizeof(float));
    CHECK(fk_gpu_get_grads(g, gg));
    double eg = rel_err(gg, m.g, m.n_floats);
    printf("# teacher rows: loss cpu %.6f gpu %.6f, teacher term cpu %.6f gpu %.6f, gradient rel err %.2e\n", cl, gl, cf, gf, eg);
    assert_true(fabsf(gl - cl) < 2e-2f * cl && fabsf(gf - cf) < 2e-2f * cf);
    assert_true(eg < 3e-2);
    free(gg);
    fk_gpu_close(g);
    fk_model_free(&m);
}

// Training on the GPU lowers the loss on structured text as on the CPU.
static void test_training_learns(void **state) {
    (void)state;
    enum { B = 8, T = 32, STEPS = 60 };
    family f = families(1);
    fk_model m;
    CHECK(fk_model_init(&m, &f.c));
    fk_model_init_weights(&m, 1);
    fk_gpu *g;
    CHECK(fk_gpu_open(&g, &m, B, T, true));
    int32_t ids[B * (T + 1)], x[B * T], y[B * T];
    float first = 0, last = 0;
    for (int s = 1; s <= STEPS; s++) {
        structured_ids(ids, B * (T + 1), (int)f.c.vocab_size, (uint64_t)s, 4, 3, 1);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < T; i++) { x[b * T + i] = ids[b * (T + 1) + i]; y[b * T + i] = ids[b * (T + 1) + i + 1]; }
        float loss;
        fk_gpu_zero_grads(g);
        CHECK(fk_gpu_train_step(g, x, y, NULL, 1.0f, B, T, 1.0f, &loss, NULL));
        CHECK(fk_gpu_adamw(g, s, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f));
        if (s == 1) first = loss;
        last = loss;
    }
    printf("# training: loss %.4f -> %.4f over %d steps\n", first, last, STEPS);
    assert_true(last < 0.75f * first);
    fk_gpu_close(g);
    fk_model_free(&m);
}

// Bad input: a batch larger than opened, tokens outside the vocabulary, a model too large for the
// device (the estimate checked before allocating, both figures in the message).
static void test_refusals(void **state) {
    (void)state;
    family f = families(0);
    fk_model m;
    CHECK(fk_model_init(&m, &f.c));
    fk_gpu *g;
    CHECK(fk_gpu_open(&g, &m, 2, 8, false));
    int32_t x[32] = {0}, y[32] = {0};
    float loss;
    assert_int_equal(fk_gpu_forward(g, x, y, 4, 8, &loss, NULL, NULL), FK_ERR_ARG);
    x[3] = 1000;
    assert_int_equal(fk_gpu_forward(g, x, y, 2, 8, &loss, NULL, NULL), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "outside the vocabulary"));
    assert_int_equal(fk_gpu_train_step(g, x, y, NULL, 1, 2, 8, 1, &loss, NULL), FK_ERR_ARG);  // opened for inference
    fk_gpu_close(g);
    assert_int_equal(fk_gpu_open(&g, &m, 1 << 30, 32, true), FK_ERR_NOMEM);
    printf("# too large: %s\n", fk_last_error());
    assert_non_null(strstr(fk_last_error(), "GiB are free"));
    fk_config c = f.c;
    c.alibi_bias_max = 8;
    c.pos = FK_POS_NONE;
    assert_int_equal(fk_gpu_supports(&c), FK_ERR_UNSUPPORTED);
    fk_model_free(&m);
}

int main(void) {
    char desc[256];
    if (!fk_gpu_built()) { printf("SKIP: this build has no CUDA engine (cmake -DFK_CUDA=ON)\n"); return 77; }
    if (fk_gpu_describe(desc, sizeof desc) != FK_OK) { printf("SKIP: no GPU: %s\n", fk_last_error()); return 77; }
    printf("# device: %s\n", desc);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_and_gradients),
        cmocka_unit_test(test_teacher_loss),
        cmocka_unit_test(test_training_learns),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
