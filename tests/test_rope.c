// RoPE variants (issue 18 item 1): partial rotary (rotary_dim), its tables, its config checks
// and how each file format carries or refuses it. The op's backward is checked by finite
// differences in test_ops (test_rope_partial), the whole model in test_model
// (test_fd_partial_rotary).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

// A tiny Llama with head_dim 8 of which rd are rotated.
static void cfg_partial(fk_config *c, int64_t rd) {
    fk_config_llama(c, 13, 16, 2, 2, 1, 24, 32);
    c->rotary_dim = rd;
}

// The config is refused with FK_ERR_ARG and a message holding each of the words.
static void refused(const fk_config *c, const char *w1, const char *w2) {
    assert_int_equal(fk_config_validate(c), FK_ERR_ARG);
    const char *e = fk_last_error();
    if (!strstr(e, w1) || (w2 && !strstr(e, w2))) fail_msg("message lacks '%s' / '%s': %s", w1, w2 ? w2 : "", e);
}

static void test_rotary_dim_config(void **s) {
    (void)s;
    fk_config c;
    cfg_partial(&c, 0);
    CHECK(fk_config_validate(&c));
    assert_int_equal(fk_config_rotary_dim(&c), 8);  // 0 = head_dim
    c.rotary_dim = 4;
    CHECK(fk_config_validate(&c));
    assert_int_equal(fk_config_rotary_dim(&c), 4);
    char buf[512];
    fk_config_describe(&c, buf, sizeof buf);
    assert_non_null(strstr(buf, "rotary_dim=4"));
    // bad values name the field, the value and the keys it comes from
    c.rotary_dim = 5;
    refused(&c, "rotary_dim is 5", "partial_rotary_factor");
    c.rotary_dim = 10;
    refused(&c, "rotary_dim is 10", "rope.dimension_count");
    c.rotary_dim = -2;
    refused(&c, "rotary_dim is -2", "head_dim 8");
    fk_config g;
    fk_config_gpt2(&g, 13, 16, 2, 2, 32);
    g.rotary_dim = 4;
    refused(&g, "rotary_dim is 4 without RoPE", NULL);
    // merge: 0 and head_dim are one value; 4 differs from both
    fk_config a, b;
    cfg_partial(&a, 0);
    cfg_partial(&b, 8);
    int64_t layer;
    assert_null(fk_config_diff(&a, &b, &layer));
    b.rotary_dim = 4;
    const fk_config_field *f = fk_config_diff(&a, &b, &layer);
    assert_non_null(f);
    assert_string_equal(f->name, "rotary_dim");
}

// The RoPE table of a partial model: rd/2 frequencies theta^(-2d/rd) as transformers'
// _compute_default_rope_parameters gives them with partial_rotary_factor rd/head_dim (float32
// inverse frequencies, angle t*inv), within 1e-6.
static void test_rotary_dim_tables(void **s) {
    (void)s;
    fk_config c;
    cfg_partial(&c, 4);
    c.rope_theta = 500.0f;
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 3);
    int32_t x[20];
    for (int i = 0; i < 20; i++) x[i] = i % 13;
    CHECK(fk_model_forward(&m, x, NULL, 1, 20, false, NULL));
    double err = 0;
    for (int t = 0; t < 20; t++)
        for (int d = 0; d < 2; d++) {
            float inv = (float)(1.0 / pow(500.0, (double)(2 * d) / 4.0));
            err = fmax(err, fabs(m.rope_cos[t * 2 + d] - cos((double)t * inv)));
            err = fmax(err, fabs(m.rope_sin[t * 2 + d] - sin((double)t * inv)));
        }
    print_message("  partial rotary table (rd 4 of 8, theta 500): max abs error %.2e\n", err);
    assert_true(err < 1e-6);
    fk_model_free(&m);
}

// Hugging Face: llama's transformers code rotates whole heads, so a partial-rotary config is
// never saved as llama; one no model_type describes (here head_dim 6 != d_model / heads, with 4
// rotated) is model_type fusekit, whose "fusekit" object carries rotary_dim.
static void test_rotary_dim_hf(void **s) {
    (void)s;
    fk_config c, back;
    cfg_partial(&c, 4);
    assert_int_not_equal(fk_config_arch(&c), FK_ARCH_LLAMA);
    c.head_dim = 6;
    assert_int_equal(fk_config_arch(&c), FK_ARCH_FUSEKIT);
    char *j = fk_hf_config_json(&c);
    assert_non_null(strstr(j, "\"rotary_dim\""));
    CHECK(fk_hf_config_parse(j, "config.json", &back));
    assert_int_equal(back.rotary_dim, 4);
    int64_t layer;
    assert_null(fk_config_diff(&c, &back, &layer));
    free(j);
    cfg_partial(&c, 0);  // whole heads stay llama, without the key
    assert_int_equal(fk_config_arch(&c), FK_ARCH_LLAMA);
    j = fk_hf_config_json(&c);
    assert_null(strstr(j, "rotary_dim"));
    free(j);
}

// GGUF: llama.cpp's llama graph asserts rope.dimension_count == head size, so a partial-rotary
// config is refused with the reason; a whole-head one writes dimension_count = head_dim.
static void test_rotary_dim_gguf(void **s) {
    (void)s;
    fk_config c;
    cfg_partial(&c, 4);
    const char *arch;
    assert_int_equal(fk_gguf_model_arch(&c, &arch), FK_ERR_UNSUPPORTED);
    assert_non_null(strstr(fk_last_error(), "partial rotary"));
    assert_non_null(strstr(fk_last_error(), "rope.dimension_count"));
    cfg_partial(&c, 0);
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 1);
    CHECK(fk_gguf_export(&m, NULL, tpath("whole.gguf"), FK_DT_F32, NULL, NULL));
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("whole.gguf"), &g));
    int64_t rot;
    CHECK(fk_gguf_get_i64(&g, "llama.rope.dimension_count", &rot));
    assert_int_equal(rot, 8);
    fk_gguf_close(&g);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotary_dim_config),
        cmocka_unit_test(test_rotary_dim_tables),
        cmocka_unit_test(test_rotary_dim_hf),
        cmocka_unit_test(test_rotary_dim_gguf),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
