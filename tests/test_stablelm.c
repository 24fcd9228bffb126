// StableLM (transformers' StableLmForCausalLM; references from tools/ref/make_golden.py: stablelm,
// sequential with q/k/v biases, stablelm_par, attention and MLP from one norm, and stablelm_qkln,
// StableLM 2 12B's form with qk_layernorm) as llama.cpp's stablelm GGUF: NEOX order,
// rope.dimension_count the rotated dims, no ffn_norm when parallel (the way llama.cpp's graph tells
// the two apart), the per-head QK LayerNorm weights stacked as attn_q_norm/attn_k_norm {head_dim, heads}
// (convert_hf_to_gguf.py's StableLMModel._stack_qk_norm). Export and import give back the config and
// weights exactly and the golden's logits; what llama.cpp's stablelm cannot express is refused.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
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

// stablelm_qkln's attn_q_norm / attn_k_norm: F32 {16, heads} (also in an F16 file, as the converter keeps
// *_norm.weight), each row the Hugging Face folder's norms.<h>.weight of that head.
static void check_qk_norms(const fk_gguf *g, const char *dir) {
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fk_safetensors st;
    CHECK(fk_st_open(&st, path));
    for (int k = 0; k < 2; k++) {
        const fk_gguf_tensor *t = fk_gguf_find_tensor(g, k ? "blk.1.attn_k_norm.weight" : "blk.1.attn_q_norm.weight");
        assert_non_null(t);
        assert_int_equal(t->ggml_type, FK_GGML_F32);
        assert_int_equal(t->n_dims, 2);
        assert_int_equal(t->dims[0], 16);
        assert_int_equal(t->dims[1], k ? 2 : 4);
        for (uint64_t h = 0; h < t->dims[1]; h++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.1.self_attn.%s_layernorm.norms.%d.weight", k ? "k" : "q", (int)h);
            const fk_st_tensor *w = fk_st_find(&st, name);
            assert_non_null(w);
            float hf[16];
            CHECK(fk_st_to_f32(w, hf));
            assert_memory_equal((const float *)t->data + 16 * h, hf, sizeof hf);
        }
    }
    fk_st_close(&st);
}

static void test_gguf_round_trip(void **s) {
    (void)s;
    static const struct { const char *name; fk_residual_kind residual; bool qkln; fk_dtype type; } cases[] = {
        {"stablelm", FK_RESID_SEQUENTIAL, false, FK_DT_F32}, {"stablelm_par", FK_RESID_PARALLEL_SHARED, false, FK_DT_F32},
        {"stablelm_qkln", FK_RESID_PARALLEL_SHARED, true, FK_DT_F32}, {"stablelm_qkln", FK_RESID_PARALLEL_SHARED, true, FK_DT_F16}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fk_model m, b;
        char dir[600];
        load_golden(&m, cases[k].name, dir, sizeof dir);
        assert_int_equal(m.cfg.residual, cases[k].residual);
        assert_true(m.cfg.bias_qkv == !cases[k].qkln && !m.cfg.bias_out && !m.cfg.bias_mlp && m.cfg.bias_norm);  // (12B: no q/k/v bias)
        assert_true(m.cfg.qk_norm == cases[k].qkln && m.cfg.qk_norm_ln == cases[k].qkln);
        assert_int_equal(m.cfg.rotary_dim, 4);  // partial_rotary_factor 0.25 of head_dim 16
        char *path = tpath("s.gguf");
        fk_gguf_export_stats st;
        CHECK(fk_gguf_export(&m, NULL, path, cases[k].type, cases[k].name, &st));
        assert_string_equal(st.arch, "stablelm");
        fk_gguf g;
        CHECK(fk_gguf_open(path, &g));
        int64_t rot;
        CHECK(fk_gguf_get_i64(&g, "stablelm.rope.dimension_count", &rot));
        assert_int_equal(rot, 4);
        assert_non_null(fk_gguf_find(&g, "stablelm.attention.layer_norm_epsilon"));
        assert_true((fk_gguf_find_tensor(&g, "blk.1.attn_k.bias") != NULL) == !cases[k].qkln);
        if (cases[k].qkln) check_qk_norms(&g, dir);
        else assert_null(fk_gguf_find_tensor(&g, "blk.1.attn_q_norm.weight"));
        assert_null(fk_gguf_find_tensor(&g, "blk.1.attn_output.bias"));
        bool seq = cases[k].residual == FK_RESID_SEQUENTIAL;
        assert_true((fk_gguf_find_tensor(&g, "blk.1.ffn_norm.weight") != NULL) == seq);
        assert_true((fk_gguf_find_tensor(&g, "blk.1.ffn_norm.bias") != NULL) == seq);
        fk_gguf_close(&g);
        CHECK(fk_gguf_import(path, &b, NULL));
        assert_memory_equal(&m.cfg, &b.cfg, sizeof m.cfg);
        if (cases[k].type != FK_DT_F32) {  // F16 matrices; the QK-norm weights (F32) exactly
            const fk_param *q = fk_model_find_param(&m, "layers.1.attn.q_norm.weight"), *qb = fk_model_find_param(&b, "layers.1.attn.q_norm.weight");
            assert_int_equal(q->numel, 4 * 16);
            assert_memory_equal(m.w + q->offset, b.w + qb->offset, (size_t)q->numel * sizeof(float));
            fk_model_free(&m);
            fk_model_free(&b);
            continue;
        }
        assert_memory_equal(m.w, b.w, (size_t)m.n_floats * sizeof(float));
        double loss_rel, e = golden_run(&b, dir, &loss_rel);
        print_message("  %-13s as GGUF stablelm %s and back: logits vs transformers %.2e, loss rel %.1e\n", cases[k].name,
                      fk_dtype_name(cases[k].type), e, loss_rel);
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

// Folding heads of StableLM 2 12B's form keeps the kept heads' own QK-norm weights: layer 1 keeping
// query heads 1 and 3 (one per KV group) with Z = I (the refit keeps those heads' o_proj columns) computes
// what the model computes with heads 0 and 2 of layer 1 silenced (their o_proj columns zero), to 1e-5;
// its Hugging Face save (per-layer heads: model_type fusekit) loads back the same.
static void test_fold_heads_qkln(void **s) {
    (void)s;
    fk_model m, f, back;
    char dir[600];
    load_golden(&m, "stablelm_qkln", dir, sizeof dir);
    int64_t hd = m.cfg.head_dim, D = m.cfg.n_head * hd, C = m.cfg.d_model;
    double *Z = calloc((size_t)(D * D), sizeof *Z);
    for (int64_t i = 0; i < D; i++) Z[i * D + i] = 1;
    const int32_t keep[2] = {1, 3};
    CHECK(fk_fold_heads(&m, 1, keep, 2, Z, 1e-12, &f));
    assert_int_equal(fk_config_heads(&f.cfg, 1), 2);
    const fk_param *q = fk_model_find_param(&m, "layers.1.attn.q_norm.weight"), *fq = fk_model_find_param(&f, "layers.1.attn.q_norm.weight");
    assert_int_equal(fq->numel, 2 * hd);
    assert_memory_equal(f.w + fq->offset, m.w + q->offset + hd, (size_t)hd * sizeof(float));
    assert_memory_equal(f.w + fq->offset + hd, m.w + q->offset + 3 * hd, (size_t)hd * sizeof(float));
    int32_t tok[16];
    for (int i = 0; i < 16; i++) tok[i] = (int32_t)((i * 29 + 5) % m.cfg.vocab_size);
    size_t n = (size_t)(16 * m.cfg.vocab_size);
    float *lf = malloc(n * sizeof(float));
    CHECK(fk_model_forward(&f, tok, NULL, 1, 16, false, NULL));
    memcpy(lf, fk_model_logits(&f), n * sizeof(float));
    const fk_param *o = fk_model_find_param(&m, "layers.1.attn.o.weight");
    for (int64_t r = 0; r < C; r++)
        for (int64_t h = 0; h < 4; h += 2) memset(m.w + o->offset + r * D + h * hd, 0, (size_t)hd * sizeof(float));
    CHECK(fk_model_forward(&m, tok, NULL, 1, 16, false, NULL));
    double err = 0;
    for (size_t i = 0; i < n; i++) err = fmax(err, fabs((double)lf[i] - fk_model_logits(&m)[i]));
    print_message("  stablelm_qkln, layer 1 folded to heads 1 and 3: logits vs those heads silenced %.2e\n", err);
    assert_true(err < 1e-5);
    CHECK(fk_hf_save(&f, tpath("folded"), FK_DT_F32));
    CHECK(fk_hf_load(&back, tpath("folded")));
    assert_true(back.cfg.qk_norm_ln && fk_config_heads(&back.cfg, 1) == 2);
    assert_int_equal(back.n_floats, f.n_floats);
    assert_memory_equal(back.w, f.w, (size_t)f.n_floats * sizeof(float));
    free(Z); free(lf);
    fk_model_free(&m);
    fk_model_free(&f);
    fk_model_free(&back);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_round_trip),
        cmocka_unit_test(test_gguf_refusals),
        cmocka_unit_test(test_fold_heads_qkln),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
