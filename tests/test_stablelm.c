// StableLM (transformers' StableLmForCausalLM; references from tools/ref/make_golden.py: stablelm,
// sequential with q/k/v biases, and stablelm_par, attention and MLP from one norm) as llama.cpp's
// stablelm GGUF: NEOX order, rope.dimension_count the rotated dims, no ffn_norm when parallel (the
// way llama.cpp's graph tells the two apart). Export and import give back the config and weights
// exactly and the golden's logits; what llama.cpp's stablelm cannot express is refused.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "fusekit/fusekit.h"
#include "test_golden.h"
#include "test_util.h"

// against transformers' float32 logits (the suite's golden tolerance, tools/ref/README.md)
#define TOL_LOGITS 1e-4

static void load_golden(fk_model *m, const char *name, char *dir, size_t n) {
    snprintf(dir, n, "%s/golden/%s", FK_TEST_DATA, name);
    CHECK(fk_hf_load(m, dir));
    m->cfg.bos_id = m->cfg.eos_id = -1;  // (the GGUF carries no tokenizer ids here)
}

static void test_gguf_round_trip(void **s) {
    (void)s;
    static const struct { const char *name; fk_residual_kind residual; } cases[] = {
        {"stablelm", FK_RESID_SEQUENTIAL}, {"stablelm_par", FK_RESID_PARALLEL_SHARED}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fk_model m, b;
        char dir[600];
        load_golden(&m, cases[k].name, dir, sizeof dir);
        assert_int_equal(m.cfg.residual, cases[k].residual);
        assert_true(m.cfg.bias_qkv && !m.cfg.bias_out && !m.cfg.bias_mlp && m.cfg.bias_norm);
        assert_int_equal(m.cfg.rotary_dim, 4);  // partial_rotary_factor 0.25 of head_dim 16
        char *path = tpath("s.gguf");
        fk_gguf_export_stats st;
        CHECK(fk_gguf_export(&m, NULL, path, FK_DT_F32, cases[k].name, &st));
        assert_string_equal(st.arch, "stablelm");
        fk_gguf g;
        CHECK(fk_gguf_open(path, &g));
        int64_t rot;
        CHECK(fk_gguf_get_i64(&g, "stablelm.rope.dimension_count", &rot));
        assert_int_equal(rot, 4);
        assert_non_null(fk_gguf_find(&g, "stablelm.attention.layer_norm_epsilon"));
        assert_non_null(fk_gguf_find_tensor(&g, "blk.1.attn_k.bias"));
        assert_null(fk_gguf_find_tensor(&g, "blk.1.attn_output.bias"));
        bool seq = cases[k].residual == FK_RESID_SEQUENTIAL;
        assert_true((fk_gguf_find_tensor(&g, "blk.1.ffn_norm.weight") != NULL) == seq);
        assert_true((fk_gguf_find_tensor(&g, "blk.1.ffn_norm.bias") != NULL) == seq);
        fk_gguf_close(&g);
        CHECK(fk_gguf_import(path, &b, NULL));
        assert_memory_equal(&m.cfg, &b.cfg, sizeof m.cfg);
        assert_memory_equal(m.w, b.w, (size_t)m.n_floats * sizeof(float));
        double loss_rel, e = golden_run(&b, dir, &loss_rel);
        print_message("  %-12s as GGUF stablelm and back: logits vs transformers %.2e, loss rel %.1e\n", cases[k].name, e, loss_rel);
        assert_true(e < TOL_LOGITS);
        fk_model_free(&m);
        fk_model_free(&b);
    }
}

static void expect_export_refused(fk_model *m, const char *needle) {
    const char *arch = NULL;
    assert_int_equal(fk_gguf_model_arch(&m->cfg, &arch), FK_ERR_UNSUPPORTED);
    print_message("  refused as expected: %s\n", fk_last_error());
    assert_non_null(strstr(fk_last_error(), needle));
}

// llama.cpp's stablelm has no output-projection or MLP bias and requires output.weight; a StableLM
// config with o_proj biases is no longer StableLM in Hugging Face's terms either (saved as fusekit).
static void test_gguf_refusals(void **s) {
    (void)s;
    fk_model m;
    char dir[600];
    load_golden(&m, "stablelm", dir, sizeof dir);
    const char *arch = NULL;
    CHECK(fk_gguf_model_arch(&m.cfg, &arch));
    assert_string_equal(arch, "stablelm");
    m.cfg.tied = true;
    expect_export_refused(&m, "tied LM head");
    assert_int_equal(fk_config_arch(&m.cfg), FK_ARCH_STABLELM);
    m.cfg.tied = false;
    m.cfg.bias_out = true;
    expect_export_refused(&m, "output-projection or MLP biases");
    assert_int_equal(fk_config_arch(&m.cfg), FK_ARCH_FUSEKIT);
    m.cfg.bias_out = false;
    m.cfg.residual = FK_RESID_PARALLEL;  // two norms in parallel: GPT-NeoX's, not StableLM's
    assert_int_equal(fk_config_arch(&m.cfg), FK_ARCH_FUSEKIT);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_round_trip),
        cmocka_unit_test(test_gguf_refusals),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
