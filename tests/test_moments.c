// AdamW moments stored in bf16 (fk_optim_opts.moments = FK_MOMENTS_BF16): the stochastic rounding
// (exact neighbours, unbiased over its 2^16 random values, inf/NaN kept, no overflow to infinity),
// the second moment tracking its f32 value where rounding to nearest stalls (beta2 0.999), and
// training with bf16 moments against f32 moments on a small Llama.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

static float bits_f(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static uint32_t f_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

static void test_stochastic_rounding(void **s) {
    (void)s;
    fk_rng r;
    fk_rng_seed(&r, 3);
    for (int i = 0; i < 300; i++) {
        float x = (float)(fk_rng_normal(&r) * pow(10.0, (double)(i % 13) - 8));
        if (i == 0) x = 1.0f + 1.0f / 4096;  // low bits 0x1000... exactly representable cases too
        uint32_t b = f_bits(x);
        float lo = bits_f(b & 0xffff0000u), hi = bits_f((b & 0xffff0000u) + 0x10000u);  // the two neighbours by magnitude
        double sum = 0;
        for (uint32_t k = 0; k < 65536; k++) {
            float y = fk_bf16_to_f32(fk_bf16_round_stochastic(x, k));
            if (y != lo && y != hi) fail_msg("x %a, r %u -> %a: not a neighbour (%a, %a)", (double)x, k, (double)y, (double)lo, (double)hi);
            sum += y;
        }
        // unbiased: the mean over the 2^16 random values is x itself
        assert_true(fabs(sum / 65536.0 - (double)x) <= 1e-12 * fabs((double)x));
        assert_true(fk_bf16_to_f32(fk_bf16_round_stochastic(x, 0)) == lo);  // no random bits: truncation
    }
    assert_true(isinf(fk_bf16_to_f32(fk_bf16_round_stochastic(INFINITY, 0xffff))));
    assert_true(isnan(fk_bf16_to_f32(fk_bf16_round_stochastic(NAN, 0xffff))));
    float big = bits_f(0x7f7fffffu);  // the largest float: rounding up would reach infinity
    assert_true(isfinite(fk_bf16_to_f32(fk_bf16_round_stochastic(big, 0xffff))));
    assert_true(isfinite(fk_bf16_to_f32(fk_bf16_round_stochastic(-big, 0xffff))));
    fk_moments mo;
    CHECK(fk_moments_parse("bf16", &mo));
    assert_int_equal(mo, FK_MOMENTS_BF16);
    assert_int_equal(fk_moments_parse("f16", &mo), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "--optim-state"));
}

// A constant gradient g for 600 updates with beta2 0.999 (lr 0: the weights stay): the exact
// second moment is (1 - 0.999^t) g^2. Stored in bf16 with stochastic rounding its mean over the
// model's elements stays within 1% of that; rounding to nearest (simulated here) stalls once an
// update is under half a bf16 step, ending more than 10% low.
static void test_second_moment_tracks(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 64, 32, 1, 2, 1, 64, 16);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 1);
    CHECK(fk_model_alloc_grads(&m));
    fk_optim_opts o;
    fk_optim_defaults(&o);
    o.beta2 = 0.999f, o.weight_decay = 0, o.moments = FK_MOMENTS_BF16;
    fk_adamw a;
    CHECK(fk_adamw_init(&a, &m, &o));
    assert_null(a.m);
    const float g = 3e-3f;
    for (int64_t i = 0; i < m.n_floats; i++) m.g[i] = g;
    float rne = 0;  // round to nearest even, the alternative
    const int T = 600;
    for (int t = 1; t <= T; t++) {
        fk_adamw_update(&a, &m, 0.0f, 1.0f);
        rne = fk_bf16_to_f32(fk_f32_to_bf16(0.999f * rne + 0.001f * g * g));
    }
    double exact = (1.0 - pow(0.999, T)) * (double)g * g, mean = 0;
    for (int64_t i = 0; i < m.n_floats; i++) mean += fk_bf16_to_f32(a.v16[i]);
    mean /= (double)m.n_floats;
    print_message("  v after %d steps: exact %.4e, bf16 stochastic mean %.4e (%+.2f%%), bf16 nearest %.4e (%+.1f%%)\n", T, exact,
                  mean, 100 * (mean / exact - 1), (double)rne, 100 * (rne / exact - 1));
    assert_true(fabs(mean / exact - 1) < 0.01);
    assert_true(rne < 0.9 * exact);  // the failure the stochastic rounding avoids
    fk_adamw_free(&a);
    fk_model_free(&m);
}

// fk_train 80 steps on a small Llama, f32 moments against bf16 moments (same seed, batches,
// schedule): both learn (last-10 mean loss under half the first step's) and end within 2% of
// each other; the bf16 optimizer holds half the bytes.
static float g_loss[2][80];
static int g_k;
static void loss_cb(const fk_train_event *ev, void *user) { (void)user; if (ev->step >= 1 && ev->step <= 80) g_loss[g_k][ev->step - 1] = ev->loss; }

static void test_training_bf16_moments(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 256, 64, 2, 4, 2, 176, 64);
    int32_t ids[4096];
    structured_ids(ids, 4096, 256, 5, 9, 7, 11);
    fk_token_data d = {.ids = ids, .n = 4096, .vocab_size = 256, .text_bytes = 4096};
    for (g_k = 0; g_k < 2; g_k++) {
        fk_model m;
        CHECK(fk_model_init(&m, &c));
        fk_model_init_weights(&m, 4);
        CHECK(fk_model_alloc_grads(&m));
        fk_train_opts o;
        fk_train_defaults(&o);
        o.steps = 80, o.batch = 4, o.seq = 64, o.eval_every = 0, o.optim.lr = 3e-3f, o.optim.total_steps = 80, o.log_every = 1;
        o.optim.moments = g_k ? FK_MOMENTS_BF16 : FK_MOMENTS_F32;
        fk_adamw opt;
        CHECK(fk_adamw_init(&opt, &m, &o.optim));
        CHECK(fk_train(&m, &opt, &d, NULL, &o, NULL, loss_cb, NULL));
        fk_adamw_free(&opt), fk_model_free(&m);
    }
    double last[2] = {0, 0};
    for (int k = 0; k < 2; k++)
        for (int i = 70; i < 80; i++) last[k] += g_loss[k][i] / 10;
    print_message("  80 steps: first loss %.4f; last-10 mean f32 moments %.4f, bf16 moments %.4f (%+.2f%%)\n", (double)g_loss[0][0],
                  last[0], last[1], 100 * (last[1] / last[0] - 1));
    for (int k = 0; k < 2; k++) assert_true(last[k] < 0.5 * g_loss[k][0]);
    assert_true(fabs(last[1] / last[0] - 1) < 0.02);
    assert_true(last[1] != last[0]);  // the moments' storage reached the run
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stochastic_rounding),
        cmocka_unit_test(test_second_moment_tracks),
        cmocka_unit_test(test_training_bf16_moments),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
