// Redundancy analysis: properties that must hold exactly (a layer that adds nothing has block
// influence 0, angular distance 0 and CKA 1) and the Gram-derived statistics against direct
// per-token computations on the activations the forward pass produces.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/analyze.h"
#include "fusekit/fusekit.h"
#include "test_util.h"

// Layer 1 of three made the identity (its output projections zero): x_2 = x_1.
static void test_identity_layer(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 50, 32, 3, 4, 2, 48, 16);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 5);
    const fk_layer_offsets *o = &m.layer[1];
    memset(m.w + o->o_w, 0, (size_t)(c.d_model * c.n_head * c.head_dim) * sizeof(float));
    memset(m.w + o->down_w, 0, (size_t)(c.d_model * c.ffn[1]) * sizeof(float));
    fk_token_data d;
    random_tokens(&d, 200, 50, 3);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 3, 0, 2, &a));
    assert_int_equal(a.tokens, 12 / 3 * 3 * 16);  // 12 whole windows, 4 batches of 3
    print_message("  BI %.4g %.4g %.4g, CKA %.6f %.6f %.6f\n", a.bi[0], a.bi[1], a.bi[2], a.cka[0], a.cka[1], a.cka[2]);
    assert_true(fabs(a.bi[1]) < 1e-6);
    assert_true(a.angular[1 * 2 + 0] < 1e-3);  // acos near 1 is steep: float cosines give ~1e-4
    assert_true(fabs(a.cka[1] - 1) < 1e-5);
    assert_true(a.bi[0] > 1e-4 && a.bi[2] > 1e-4);
    // d(0, 2) = d(0, 1) when layer 1 adds nothing
    assert_true(fabs(a.angular[0 * 2 + 1] - a.angular[0 * 2 + 0]) < 1e-4);
    assert_true(isnan(a.angular[2 * 2 + 1]));  // past the last layer
    // head energies of the identity layer are zero (W_O = 0)
    for (int h = 0; h < a.n_head; h++) assert_true(a.head_energy[1 * a.n_head + h] == 0);
    fk_analysis_free(&a);
    fk_data_free(&d);
    fk_model_free(&m);
}

// The Gram matrices, means and head energies against direct sums over the activations.
typedef struct { int layer; double *g, *mean, *energy; const fk_model *m; int64_t F, D, H, hd, count; } direct_ctx;
static void direct_hook(void *user, int layer, const float *resid, const float *att, const float *act, int64_t N) {
    (void)resid;
    direct_ctx *c = user;
    if (layer != c->layer) return;
    const float *W = c->m->w + c->m->layer[layer].o_w;
    int64_t C = c->m->cfg.d_model;
    for (int64_t t = 0; t < N; t++) {
        const float *h = act + t * c->F;
        for (int64_t i = 0; i < c->F; i++) {
            c->mean[i] += h[i];
            for (int64_t j = 0; j < c->F; j++) c->g[i * c->F + j] += (double)h[i] * h[j];
        }
        const float *z = att + t * c->D;
        for (int64_t hh = 0; hh < c->H; hh++) {  // ||W_O[:, head] z_head||^2
            double e = 0;
            for (int64_t r = 0; r < C; r++) {
                double v = 0;
                for (int64_t i = hh * c->hd; i < (hh + 1) * c->hd; i++) v += (double)W[r * c->D + i] * z[i];
                e += v * v;
            }
            c->energy[hh] += e;
        }
    }
    c->count += N;
}

static void test_gram_direct(void **s) {
    (void)s;
    fk_config c;
    fk_config_gpt2(&c, 40, 24, 2, 3, 16);
    c.ffn[1] = 20;  // per-layer widths
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 9);
    fk_token_data d;
    random_tokens(&d, 300, 40, 3);
    fk_analysis a;
    CHECK(fk_analyze(&m, &d, 16, 2, 100, 2, &a));
    assert_int_equal(a.tokens, 96);  // 100 tokens: 7 windows of 16, in whole batches of 2: 3 batches,
                                     // spread over the text's 18 windows: windows 0, 3, 6, ..., 15
    // the same forwards again with a direct hook
    int64_t F = c.ffn[1], D = c.n_head * c.head_dim;
    direct_ctx dc = {1, calloc((size_t)(F * F), sizeof(double)), calloc((size_t)F, sizeof(double)), calloc(3, sizeof(double)), &m, F, D,
                     c.n_head, c.head_dim, 0};
    m.hook = direct_hook;
    m.hook_user = &dc;
    int32_t x[32];
    for (int b = 0; b < 3; b++) {
        for (int i = 0; i < 32; i++) x[i] = d.ids[(b * 2 + i / 16) * 3 * 16 + i % 16];
        CHECK(fk_model_forward(&m, x, NULL, 2, 16, false, NULL));
    }
    m.hook = NULL;
    assert_int_equal(dc.count, a.tokens);
    double worst = 0;
    for (int64_t i = 0; i < F * F; i++) worst = fmax(worst, fabs(a.ffn_gram[1][i] - dc.g[i]) / (1e-9 + fabs(dc.g[i])));
    for (int64_t i = 0; i < F; i++) assert_true(fabs(a.ffn_mean[1][i] - dc.mean[i] / (double)dc.count) < 1e-9);
    for (int h = 0; h < 3; h++) {
        double want = dc.energy[h] / (double)dc.count;
        assert_true(fabs(a.head_energy[1 * 3 + h] - want) < 1e-6 * (1 + want));
    }
    print_message("  FFN Gram: worst relative difference %.2e\n", worst);
    assert_true(worst < 1e-9);
    // the saved files
    CHECK(fk_analysis_save(&a, tpath("an")));
    fk_safetensors sf;
    CHECK(fk_st_open(&sf, tpath("an/stats.safetensors")));
    const fk_st_tensor *t = fk_st_find(&sf, "ffn_gram.1");
    assert_non_null(t);
    assert_int_equal(t->dtype, FK_DT_F64);
    assert_int_equal(t->numel, F * F);
    assert_memory_equal(t->data, a.ffn_gram[1], (size_t)(F * F) * sizeof(double));
    fk_st_close(&sf);
    assert_true(fk_path_exists(tpath("an/analysis.json")));
    char *html;
    size_t nh;
    CHECK(fk_read_file(tpath("an/analysis.html"), &html, &nh));
    assert_non_null(strstr(html, "<svg"));
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "src="));  // nothing fetched: it opens without network
    free(html);
    free(dc.g); free(dc.mean); free(dc.energy);
    fk_analysis_free(&a);
    // bad arguments
    assert_int_equal(fk_analyze(&m, &d, 16, 2, 0, 3, &a), FK_ERR_ARG);
    assert_non_null(strstr(fk_last_error(), "1..2"));
    assert_int_equal(fk_analyze(&m, &d, 32, 2, 0, 1, &a), FK_ERR_ARG);
    fk_data_free(&d);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_layer),
        cmocka_unit_test(test_gram_direct),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
