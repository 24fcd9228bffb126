// Import of llama.cpp's qwen2 GGUF architecture (every Qwen2/Qwen2.5 GGUF). The file is written as
// llama.cpp's convert_hf_to_gguf.py (Qwen2Model, --outtype f32) writes it from the transformers
// golden folders qwen2 and qwen2_tied (tools/ref/make_golden.py): its tensor names, q/k/v biases and
// q/k rows unpermuted (llama.cpp rotates qwen2 in NEOX order, as Hugging Face stores them), and its
// keys (TextModel.set_gguf_parameters). Imported, the model gives the golden's logits; exporting
// it still writes llama.cpp's llama, as for every Qwen2-style model.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "fusekit/gguf.h"
#include "test_golden.h"
#include "test_util.h"

// against transformers' float32 logits (the brief's bound for an F32 file; the suite's golden
// tolerance is 1e-4)
#define TOL_LOGITS 1e-5

// convert_hf_to_gguf.py's names for Qwen2ForCausalLM's tensors (gguf-py's tensor_mapping); %d the layer
static const struct { const char *hf, *gguf; } names[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
    {"model.layers.%d.input_layernorm.weight", "blk.%d.attn_norm.weight"},
    {"model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight"},
    {"model.layers.%d.self_attn.q_proj.bias", "blk.%d.attn_q.bias"},
    {"model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight"},
    {"model.layers.%d.self_attn.k_proj.bias", "blk.%d.attn_k.bias"},
    {"model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight"},
    {"model.layers.%d.self_attn.v_proj.bias", "blk.%d.attn_v.bias"},
    {"model.layers.%d.self_attn.o_proj.weight", "blk.%d.attn_output.weight"},
    {"model.layers.%d.post_attention_layernorm.weight", "blk.%d.ffn_norm.weight"},
    {"model.layers.%d.mlp.gate_proj.weight", "blk.%d.ffn_gate.weight"},
    {"model.layers.%d.mlp.up_proj.weight", "blk.%d.ffn_up.weight"},
    {"model.layers.%d.mlp.down_proj.weight", "blk.%d.ffn_down.weight"},
};

// The GGUF name of Hugging Face tensor hf (into out), false when the converter has none.
static bool gguf_name(const char *hf, char *out, size_t n) {
    int l = 0;
    const char *p = strstr(hf, "layers.");
    if (p) l = atoi(p + 7);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char want[128];
        snprintf(want, sizeof want, names[i].hf, l);
        if (strcmp(want, hf) == 0) { snprintf(out, n, names[i].gguf, l); return true; }
    }
    return false;
}

// Writes dir's config c and model.safetensors to path as the converter's qwen2 GGUF (F32).
static void write_qwen2_gguf(const char *dir, const fk_config *c, const char *path) {
    char st_path[700];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    fk_safetensors st;
    CHECK(fk_st_open(&st, st_path));
    fk_gguf_writer *w = fk_gguf_writer_new();
    assert_non_null(w);
    CHECK(fk_gguf_set_str(w, "general.architecture", "qwen2", 5));
    CHECK(fk_gguf_set_u32(w, "qwen2.block_count", (uint32_t)c->n_layer));
    CHECK(fk_gguf_set_u32(w, "qwen2.context_length", (uint32_t)c->max_seq));
    CHECK(fk_gguf_set_u32(w, "qwen2.embedding_length", (uint32_t)c->d_model));
    CHECK(fk_gguf_set_u32(w, "qwen2.feed_forward_length", (uint32_t)c->ffn[0]));
    CHECK(fk_gguf_set_u32(w, "qwen2.attention.head_count", (uint32_t)c->n_head));
    CHECK(fk_gguf_set_u32(w, "qwen2.attention.head_count_kv", (uint32_t)c->n_kv_head));
    CHECK(fk_gguf_set_f32(w, "qwen2.rope.freq_base", c->rope_theta));
    CHECK(fk_gguf_set_f32(w, "qwen2.attention.layer_norm_rms_epsilon", c->norm_eps));
    CHECK(fk_gguf_set_u32(w, "general.file_type", 0));  // all F32
    for (int i = 0; i < st.n_tensors; i++) {
        const fk_st_tensor *t = &st.tensors[i];
        char name[128];
        assert_true(gguf_name(t->name, name, sizeof name));
        assert_int_equal(t->dtype, FK_DT_F32);
        uint64_t dims[2];  // ggml order: the Hugging Face shape reversed, the bytes as they are
        for (int d = 0; d < t->ndim; d++) dims[d] = (uint64_t)t->shape[t->ndim - 1 - d];
        CHECK(fk_gguf_add_tensor(w, name, 0 /* GGML_TYPE_F32 */, (uint32_t)t->ndim, dims, t->data, t->nbytes));
    }
    CHECK(fk_gguf_writer_write(w, path));
    fk_gguf_writer_free(w);
    fk_st_close(&st);
}

static void test_qwen2_import(void **s) {
    (void)s;
    static const char *const goldens[] = {"qwen2", "qwen2_tied"};
    for (size_t k = 0; k < sizeof goldens / sizeof goldens[0]; k++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/golden/%s", FK_TEST_DATA, goldens[k]);
        fk_model hf, m;
        CHECK(fk_hf_load(&hf, dir));
        char *path = tpath("qwen2.gguf");
        write_qwen2_gguf(dir, &hf.cfg, path);
        CHECK(fk_gguf_import(path, &m, NULL));
        assert_int_equal(fk_config_arch(&m.cfg), FK_ARCH_QWEN2);  // saved as model_type qwen2
        assert_true(m.cfg.bias_qkv && !m.cfg.bias_out && !m.cfg.bias_mlp);
        assert_int_equal(m.cfg.tied, hf.cfg.tied);
        assert_int_equal(m.cfg.n_kv_head, hf.cfg.n_kv_head);
        assert_true(m.cfg.rope_theta == hf.cfg.rope_theta && m.cfg.norm_eps == hf.cfg.norm_eps);
        double loss_rel, err = golden_run(&m, dir, &loss_rel);
        printf("%s: qwen2 GGUF import, max |logit - transformers| %.3g, loss rel %.3g\n", goldens[k], err, loss_rel);
        assert_true(err < TOL_LOGITS);
        assert_true(loss_rel < TOL_LOGITS);
        // export is unchanged: a Qwen2-style model is written as llama.cpp's llama
        char *out = tpath("qwen2_out.gguf");
        fk_gguf_export_stats es;
        CHECK(fk_gguf_export(&m, NULL, out, FK_DT_F32, goldens[k], &es));
        assert_string_equal(es.arch, "llama");
        fk_model_free(&m);
        fk_model_free(&hf);
        remove(path);
        remove(out);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen2_import),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
