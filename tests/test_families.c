// Sliding windows and the StarCoder2 and Phi-3 rows against their references: the golden folders
// of transformers' MistralForCausalLM, Qwen2ForCausalLM / Qwen3ForCausalLM (use_sliding_window),
// Starcoder2ForCausalLM and Phi3ForCausalLM (tools/ref/make_golden.py: windows of 8 keys over 16
// tokens). Generation through the KV cache past the window gives the logits of the full forward
// and of transformers; GGUF export and import keep each model (a window becomes the context in
// llama.cpp's architectures without windows). test_hf.c checks the folders' logits, loss and
// saving; test_model.c the gradients (finite differences).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

// Logits of the KV cache against the full forward: the same float32 arithmetic in another order
#define TOL_STEP 1e-5
// against transformers' float32 logits (the suite's golden tolerance, tools/ref/README.md)
#define TOL_LOGITS 1e-4

static const char *const WINDOWED[] = {"mistral_swa", "qwen2_swa", "qwen3_swa", "starcoder2", "phi3"};
#define N_WINDOWED (int)(sizeof WINDOWED / sizeof WINDOWED[0])

static char *golden_dir(const char *name) {
    static char buf[2][512];
    static int k;
    char *p = buf[k++ % 2];
    snprintf(p, 512, "%s/golden/%s", FK_TEST_DATA, name);
    return p;
}

// The golden's first token row (T + 1 tokens) and its logits (B, T, V).
typedef struct {
    fk_safetensors st;
    const int32_t *tokens;
    const float *logits;
    int T;
} golden;

static void golden_open(golden *g, const char *name) {
    char path[600];
    snprintf(path, sizeof path, "%s/golden.safetensors", golden_dir(name));
    CHECK(fk_st_open(&g->st, path));
    const fk_st_tensor *tok = fk_st_find(&g->st, "tokens"), *lg = fk_st_find(&g->st, "logits");
    assert_non_null(tok);
    assert_non_null(lg);
    g->tokens = tok->data;
    g->logits = lg->data;
    g->T = (int)tok->shape[1] - 1;
}

static double max_diff(const float *a, const float *b, int64_t n) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i]));
    return e;
}

// Max abs error of m's logits on golden `name`'s first row against transformers', over its first
// n tokens (0: all of them).
static double golden_error(fk_model *m, const char *name, int n) {
    golden g;
    golden_open(&g, name);
    if (n == 0) n = g.T;
    CHECK(fk_model_forward(m, g.tokens, NULL, 1, n, false, NULL));
    double e = max_diff(fk_model_logits(m), g.logits, n * m->cfg.vocab_size);
    fk_st_close(&g.st);
    return e;
}

// Windowed golden k: its model and golden tokens and logits.
static void open_windowed(int k, fk_model *m, golden *g) {
    CHECK(fk_hf_load(m, golden_dir(WINDOWED[k])));
    golden_open(g, WINDOWED[k]);
}

// Token by token through the KV cache past the window: each position's logits are the full
// forward's and transformers'.
static void test_kv_cache_past_window(void **s) {
    (void)s;
    for (int k = 0; k < N_WINDOWED; k++) {
        fk_model m;
        golden g;
        open_windowed(k, &m, &g);
        int T = g.T;
        int64_t V = m.cfg.vocab_size;
        assert_true(m.cfg.sliding_window > 0 && m.cfg.sliding_window < T);  // the window masks
        CHECK(fk_model_forward(&m, g.tokens, NULL, 1, T, false, NULL));
        float *full = malloc((size_t)(T * V) * sizeof(float)), *step = malloc((size_t)V * sizeof(float));
        memcpy(full, fk_model_logits(&m), (size_t)(T * V) * sizeof(float));
        double e_full = 0, e_ref = 0;
        for (int t = 0; t < T; t++) {
            CHECK(fk_model_step(&m, g.tokens + t, 1, t, step));
            e_full = fmax(e_full, max_diff(step, full + t * V, V));
            e_ref = fmax(e_ref, max_diff(step, g.logits + t * V, V));
        }
        // and in two chunks, the second starting inside the window
        CHECK(fk_model_step(&m, g.tokens, 5, 0, step));
        CHECK(fk_model_step(&m, g.tokens + 5, T - 5, 5, step));
        e_full = fmax(e_full, max_diff(step, full + (T - 1) * V, V));
        print_message("  %-12s window %lld of %d tokens: KV cache vs forward %.2e, vs transformers %.2e\n", WINDOWED[k],
                      (long long)m.cfg.sliding_window, T, e_full, e_ref);
        assert_true(e_full < TOL_STEP);
        assert_true(e_ref < TOL_LOGITS);
        free(full);
        free(step);
        fk_st_close(&g.st);
        fk_model_free(&m);
    }
}

// The window masks: without it the logits past the window differ from transformers'.
static void test_window_matters(void **s) {
    (void)s;
    for (int k = 0; k < N_WINDOWED; k++) {
        fk_model m;
        golden g;
        open_windowed(k, &m, &g);
        m.cfg.sliding_window = 0;
        CHECK(fk_model_forward(&m, g.tokens, NULL, 1, g.T, false, NULL));
        int64_t V = m.cfg.vocab_size, W = 8;
        assert_true(max_diff(fk_model_logits(&m), g.logits, W * V) < TOL_LOGITS);  // within the window: the same
        assert_true(max_diff(fk_model_logits(&m) + W * V, g.logits + W * V, (g.T - W) * V) > 1e-3);
        fk_st_close(&g.st);
        fk_model_free(&m);
    }
}

// GGUF: starcoder2 and phi3 (as llama.cpp's own architectures, NEOX order) and mistral (as llama)
// exported at F32 and imported give the golden's logits within the window, which becomes the
// context (llama.cpp's graphs have no window); the architecture and context are the file's.
static void test_gguf_round_trip(void **s) {
    (void)s;
    static const struct { const char *name, *arch; } cases[] = {
        {"starcoder2", "starcoder2"}, {"phi3", "llama"}, {"mistral_swa", "llama"}, {"qwen2_swa", "llama"}, {"qwen3_swa", "qwen3"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fk_model m, b;
        CHECK(fk_hf_load(&m, golden_dir(cases[k].name)));
        char *path = tpath("f.gguf");
        fk_gguf_export_stats st;
        CHECK(fk_gguf_export(&m, NULL, path, FK_DT_F32, cases[k].name, &st));
        assert_string_equal(st.arch, cases[k].arch);
        CHECK(fk_gguf_import(path, &b, NULL));
        assert_int_equal(b.cfg.max_seq, m.cfg.sliding_window);
        assert_int_equal(b.cfg.sliding_window, 0);
        double e = golden_error(&b, cases[k].name, (int)m.cfg.sliding_window);
        print_message("  %-12s as GGUF %s (context %lld): logits vs transformers %.2e\n", cases[k].name, st.arch, (long long)b.cfg.max_seq, e);
        assert_true(e < TOL_LOGITS);
        fk_model_free(&m);
        fk_model_free(&b);
    }
}

// Without a window, starcoder2 and phi3-like models keep every switch through GGUF: LayerNorm
// biases and linear biases (starcoder2), fused attn_qkv / ffn_up (phi3, chosen by partial rotary).
static void test_gguf_starcoder2_config(void **s) {
    (void)s;
    fk_model m, b;
    CHECK(fk_hf_load(&m, golden_dir("starcoder2")));
    m.cfg.sliding_window = 0;
    memset(m.cfg.sliding, 0, sizeof m.cfg.sliding);
    m.cfg.bos_id = m.cfg.eos_id = -1;  // GGUF keeps token ids with the tokenizer (none here)
    char *path = tpath("sc.gguf");
    CHECK(fk_gguf_export(&m, NULL, path, FK_DT_F32, "sc", NULL));
    CHECK(fk_gguf_import(path, &b, NULL));
    assert_memory_equal(&m.cfg, &b.cfg, sizeof m.cfg);
    assert_memory_equal(m.w, b.w, (size_t)m.n_floats * sizeof(float));
    fk_gguf g;
    CHECK(fk_gguf_open(path, &g));
    assert_non_null(fk_gguf_find(&g, "starcoder2.attention.layer_norm_epsilon"));
    assert_null(fk_gguf_find(&g, "starcoder2.attention.layer_norm_rms_epsilon"));
    assert_non_null(fk_gguf_find_tensor(&g, "blk.1.ffn_up.bias"));
    assert_null(fk_gguf_find_tensor(&g, "output.weight"));  // tied
    fk_gguf_close(&g);
    fk_model_free(&m);
    fk_model_free(&b);
    // exact GELU is not llama.cpp's starcoder2
    CHECK(fk_hf_load(&m, golden_dir("starcoder2")));
    m.cfg.gelu_exact = true;
    assert_int_equal(fk_gguf_export(&m, NULL, path, FK_DT_F32, "sc", NULL), FK_ERR_UNSUPPORTED);
    assert_non_null(strstr(fk_last_error(), "starcoder2"));
    fk_model_free(&m);
}

// Phi-4-mini-like partial rotary (6 of 8 dims): llama.cpp's phi3 (fused attn_qkv and ffn_up, NEOX,
// rope.dimension_count 6), the same config and weights back, the golden's logits.
static void test_gguf_phi3(void **s) {
    (void)s;
    fk_model m, b;
    CHECK(fk_hf_load(&m, golden_dir("phi3_partial")));
    m.cfg.bos_id = m.cfg.eos_id = -1;
    char *path = tpath("phi3.gguf");
    fk_gguf_export_stats st;
    CHECK(fk_gguf_export(&m, NULL, path, FK_DT_F32, "phi3", &st));
    assert_string_equal(st.arch, "phi3");
    CHECK(fk_gguf_import(path, &b, NULL));
    assert_memory_equal(&m.cfg, &b.cfg, sizeof m.cfg);
    assert_memory_equal(m.w, b.w, (size_t)m.n_floats * sizeof(float));
    fk_gguf g;
    CHECK(fk_gguf_open(path, &g));
    const fk_gguf_tensor *qkv = fk_gguf_find_tensor(&g, "blk.0.attn_qkv.weight"), *up = fk_gguf_find_tensor(&g, "blk.0.ffn_up.weight");
    assert_non_null(qkv);
    assert_non_null(up);
    assert_int_equal(qkv->dims[1], 4 * 8 + 2 * 2 * 8);  // q, k and v rows
    assert_int_equal(up->dims[1], 2 * 48);                // gate and up rows
    int64_t rot;
    CHECK(fk_gguf_get_i64(&g, "phi3.rope.dimension_count", &rot));
    assert_int_equal(rot, 6);
    fk_gguf_close(&g);
    assert_true(golden_error(&b, "phi3_partial", 0) < TOL_LOGITS);
    fk_model_free(&m);
    fk_model_free(&b);
}

// Qwen's windows on layers max_window_layers cannot say (layer 0 of 2) are written as layer_types
// and read back; a window of 0 on qwen2 and an unknown layer type are refused naming the key.
static void test_qwen_layer_types(void **s) {
    (void)s;
    fk_config c, r;
    fk_config_llama(&c, 40, 32, 2, 4, 2, 24, 64);
    c.bias_qkv = true;
    c.sliding_window = 8;
    c.sliding[0] = 1;
    assert_int_equal(fk_config_arch(&c), FK_ARCH_QWEN2);
    char *json = fk_hf_config_json(&c);
    assert_non_null(strstr(json, "\"sliding_attention\", \"full_attention\""));
    CHECK(fk_hf_config_parse(json, "q/config.json", &r));
    assert_memory_equal(&c, &r, sizeof c);
    free(json);
    static const char *bad[][2] = {
        {"{\"model_type\": \"qwen2\", \"vocab_size\": 40, \"hidden_size\": 32, \"intermediate_size\": 24, \"num_hidden_layers\": 2, "
         "\"num_attention_heads\": 4, \"use_sliding_window\": true, \"sliding_window\": 0}", "sliding_window"},
        {"{\"model_type\": \"qwen2\", \"vocab_size\": 40, \"hidden_size\": 32, \"intermediate_size\": 24, \"num_hidden_layers\": 2, "
         "\"num_attention_heads\": 4, \"use_sliding_window\": true, \"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"chunked\"]}",
         "layer_types[1]"},
    };
    for (int k = 0; k < 2; k++) {
        assert_int_not_equal(fk_hf_config_parse(bad[k][0], "q/config.json", &r), FK_OK);
        assert_non_null(strstr(fk_last_error(), bad[k][1]));
        assert_non_null(strstr(fk_last_error(), "q/config.json"));
    }
}

// model_type fusekit (a window on layer 0 alone, which no family's keys say): its "fusekit" object's
// layer_types read back; an entry other than sliding_attention / full_attention, and a norm, position
// or MLP name fusekit does not know, are refused naming the key path, index and value (they were
// read as full attention and as the defaults).
static void test_fusekit_layer_types(void **s) {
    (void)s;
    fk_config c, r;
    fk_config_llama(&c, 40, 32, 2, 4, 2, 24, 64);
    c.sliding_window = 8;
    c.sliding[0] = 1;
    assert_int_equal(fk_config_arch(&c), FK_ARCH_FUSEKIT);
    char *json = fk_hf_config_json(&c);
    CHECK(fk_hf_config_parse(json, "f/config.json", &r));
    assert_memory_equal(&c, &r, sizeof c);
    static const struct { const char *key, *value, *want; } bad[] = {
        {"layer_types", "[\"full_attention\", \"chunked_attention\"]", "fusekit.layer_types[1] is \"chunked_attention\""},
        {"layer_types", "[\"sliding_attention\", 3]", "fusekit.layer_types[1] is not a string"},
        {"layer_types", "[\"sliding_attention\"]", "\"fusekit.layer_types\" must be a list of num_hidden_layers (2) entries (has 1)"},
        {"norm", "\"groupnorm\"", "\"fusekit.norm\" is \"groupnorm\""},
        {"position", "\"alibi\"", "\"fusekit.position\" is \"alibi\""},
        {"mlp", "\"reglu\"", "\"fusekit.mlp\" is \"reglu\""},
        {"bias_qkv", "1", "\"fusekit.bias_qkv\" must be true or false"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        cJSON *j = cJSON_Parse(json), *f = cJSON_GetObjectItemCaseSensitive(j, "fusekit");
        assert_non_null(f);
        cJSON_DeleteItemFromObjectCaseSensitive(f, bad[k].key);
        cJSON_AddItemToObject(f, bad[k].key, cJSON_Parse(bad[k].value));
        char *text = cJSON_Print(j);
        fk_status st = fk_hf_config_parse(text, "f/config.json", &r);
        if (st == FK_OK || !strstr(fk_last_error(), bad[k].want) || !strstr(fk_last_error(), "f/config.json"))
            fail_msg("fusekit.%s = %s: status %d, message: %s", bad[k].key, bad[k].value, st, fk_last_error());
        print_message("  refused as expected: %s\n", fk_last_error());
        free(text);
        cJSON_Delete(j);
    }
    free(json);
}
// Phi-4-mini's RoPE through the phi3 row: partial rotary 0.75 (in rope_parameters) with LongRoPE,
// 16 tokens beyond the original 8 (long factors): transformers' logits; saved as phi3 (with the
// top-level original_max_position_embeddings, which Phi3Config would otherwise default to 4096:
// make_golden.py --check-saved reloads it with identical logits) and read back the same.
static void test_phi3_longrope(void **s) {
    (void)s;
    fk_model m, b;
    CHECK(fk_hf_load(&m, golden_dir("phi3_longrope")));
    assert_int_equal(m.cfg.rotary_dim, 6);
    assert_int_equal(m.cfg.rope_ext, FK_ROPE_EXT_LONGROPE);
    assert_int_equal(m.cfg.rope_ext_ctx, 8);
    double e = golden_error(&m, "phi3_longrope", 0);
    print_message("  phi3_longrope: logits vs transformers %.2e\n", e);
    assert_true(e < TOL_LOGITS);
    assert_int_equal(fk_config_arch(&m.cfg), FK_ARCH_PHI3);
    char *dir = tpath("phi3_longrope");
    CHECK(fk_hf_save(&m, dir, FK_DT_F32));
    CHECK(fk_hf_load(&b, dir));
    assert_memory_equal(&m.cfg, &b.cfg, sizeof m.cfg);
    assert_memory_equal(m.w, b.w, (size_t)m.n_floats * sizeof(float));
    fk_model_free(&m);
    fk_model_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_cache_past_window),
        cmocka_unit_test(test_window_matters),
        cmocka_unit_test(test_gguf_round_trip),
        cmocka_unit_test(test_gguf_starcoder2_config),
        cmocka_unit_test(test_gguf_phi3),
        cmocka_unit_test(test_qwen_layer_types),
        cmocka_unit_test(test_fusekit_layer_types),
        cmocka_unit_test(test_phi3_longrope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
