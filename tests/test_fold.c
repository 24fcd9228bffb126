// Folding FFN units: exact duplicates and scaled copies fold away without changing the
// model's outputs; the least-squares refit beats the mean-sum rule on correlated neurons; the
// folded model (per-layer widths) saves, loads and trains.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/analyze.h"
#include "fusekit/fold.h"
#include "fusekit/fusekit.h"
#include "test_util.h"

// Mean squared difference of the logits of two models on the same batch, relative to the
// mean square of the first model's logits.
static double logit_error(fk_model *a, fk_model *b, const fk_token_data *d) {
    int B = 2, T = 16;
    int64_t V = a->cfg.vocab_size, n = (int64_t)B * T * V;
    CHECK(fk_model_forward(a, d->ids, NULL, B, T, false, NULL));
    float *la = malloc((size_t)n * sizeof(float));
    memcpy(la, fk_model_logits(a), (size_t)n * sizeof(float));
    CHECK(fk_model_forward(b, d->ids, NULL, B, T, false, NULL));
    const float *lb = fk_model_logits(b);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) { e += ((double)la[i] - lb[i]) * ((double)la[i] - lb[i]); s += (double)la[i] * la[i]; }
    free(la);
    return e / s;
}

// SwiGLU layer 0 of 12 units: unit 7 = unit 2 with its up row times 3 (h7 = 3 h2), unit 9 an
// exact copy of unit 4. Folding 12 -> 10 units must leave the logits unchanged.
static void test_fold_copies(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 30, 16, 2, 2, 2, 12, 16);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 4);
    // larger weights so the FFN matters
    for (int64_t i = 0; i < m.n_floats; i++) m.w[i] *= 5;
    const fk_layer_offsets *o = &m.layer[0];
    int64_t C = c.d_model, F = 12;
    float *up = m.w + o->up_w;  // gate rows 0..11, up rows 12..23
    memcpy(up + 7 * C, up + 2 * C, (size_t)C * sizeof(float));
    for (int64_t i = 0; i < C; i++) up[(F + 7) * C + i] = 3 * up[(F + 2) * C + i];
    memcpy(up + 9 * C, up + 4 * C, (size_t)C * sizeof(float));
    memcpy(up + (F + 9) * C, up + (F + 4) * C, (size_t)C * sizeof(float));
    fk_token_data d, test;
    random_tokens(&d, 2000, 30, 1);
    random_tokens(&test, 64, 30, 2);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    int32_t labels[12], rep[10];
    for (int f = 0, j = 0; f < 12; f++) {
        if (f == 7) { labels[f] = labels[2]; continue; }
        if (f == 9) { labels[f] = labels[4]; continue; }
        rep[j] = f;
        labels[f] = j++;
    }
    fk_model lsq, ms;
    CHECK(fk_fold_ffn(&m, 0, labels, rep, 10, a.ffn_gram[0], 1e-10, FK_FOLD_LSQ, &lsq));
    assert_int_equal(lsq.cfg.ffn[0], 10);
    assert_int_equal(lsq.cfg.ffn[1], 12);
    double e = logit_error(&m, &lsq, &test);
    print_message("  least squares, scaled copy and duplicate folded: relative logit error %.2e\n", e);
    assert_true(e < 1e-10);  // (1e-5 relative RMS)
    // mean-sum is exact for the exact duplicate alone
    int32_t labels2[12], rep2[11];
    for (int f = 0, j = 0; f < 12; f++) {
        if (f == 9) { labels2[f] = labels2[4]; continue; }
        rep2[j] = f;
        labels2[f] = j++;
    }
    CHECK(fk_fold_ffn(&m, 0, labels2, rep2, 11, NULL, 0, FK_FOLD_MEAN_SUM, &ms));
    double e2 = logit_error(&m, &ms, &test);
    print_message("  mean-sum, duplicate folded: relative logit error %.2e\n", e2);
    assert_true(e2 < 1e-10);
    fk_model_free(&ms);
    // the folded model saves with per-layer widths, loads and trains one step with finite gradients
    CHECK(fk_hf_save(&lsq, tpath("folded"), FK_DT_F32));
    fk_model back;
    CHECK(fk_hf_load(&back, tpath("folded")));
    assert_int_equal(back.cfg.ffn[0], 10);
    assert_true(logit_error(&lsq, &back, &test) == 0);
    CHECK(fk_model_alloc_grads(&back));
    fk_model_zero_grads(&back);
    float loss;
    CHECK(fk_model_forward(&back, test.ids, test.ids + 1, 2, 16, true, &loss));
    CHECK(fk_model_backward(&back, 1.0f));
    assert_true(isfinite(fk_grad_norm(&back)) && fk_grad_norm(&back) > 0);
    fk_model_free(&back);
    fk_model_free(&lsq);
    // bad arguments
    rep[0] = 7;  // not in cluster 0
    assert_int_equal(fk_fold_ffn(&m, 0, labels, rep, 10, a.ffn_gram[0], 1e-2, FK_FOLD_LSQ, &lsq), FK_ERR_ARG);
    assert_int_equal(fk_fold_ffn(&m, 5, labels, rep, 10, a.ffn_gram[0], 1e-2, FK_FOLD_LSQ, &lsq), FK_ERR_ARG);
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

// GELU layer of 16 units made of 8 pairs of correlated neurons (the second of each pair is the
// first plus small noise): folding each pair to one unit, least squares loses less than mean-sum.
static void test_lsq_beats_mean_sum(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 30, 16, 1, 2, 16);
    c.ffn[0] = 16;
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 8);
    for (int64_t i = 0; i < m.n_floats; i++) m.w[i] *= 5;
    int64_t C = c.d_model;
    float *up = m.w + m.layer[0].up_w;
    fk_rng r;
    fk_rng_seed(&r, 12);
    for (int p = 0; p < 8; p++)
        for (int64_t i = 0; i < C; i++) up[(2 * p + 1) * C + i] = up[2 * p * C + i] * 1.5f + 0.05f * fk_rng_normal(&r);
    fk_token_data d, test;
    random_tokens(&d, 3000, 30, 3);
    random_tokens(&test, 64, 30, 4);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 4, 0, 1, &a));
    int32_t labels[16], rep[8];
    for (int f = 0; f < 16; f++) labels[f] = f / 2;
    for (int p = 0; p < 8; p++) rep[p] = 2 * p;
    fk_model lsq, ms;
    CHECK(fk_fold_ffn(&m, 0, labels, rep, 8, a.ffn_gram[0], 1e-2, FK_FOLD_LSQ, &lsq));
    CHECK(fk_fold_ffn(&m, 0, labels, rep, 8, NULL, 0, FK_FOLD_MEAN_SUM, &ms));
    double el = logit_error(&m, &lsq, &test), em = logit_error(&m, &ms, &test);
    print_message("  relative logit error: least squares %.3e, mean-sum %.3e\n", el, em);
    assert_true(el < em);
    fk_model_free(&lsq); fk_model_free(&ms);
    fk_analysis_free(&a);
    fk_data_free(&d); fk_data_free(&test);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_copies),
        cmocka_unit_test(test_lsq_beats_mean_sum),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
