// Hostile and current-transformers config.json files (issue 16): sizes that would overflow
// size products, models larger than the memory available, numbers no integer can hold, and
// RoPE settings in transformers 5.x's rope_parameters (Llama 3 and linear scaling against
// tools/ref/make_rope_golden.py's logits; unknown types refused). Every config is written by
// the test into its temporary folder.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include <cjson/cJSON.h>

#include "fusekit/gguf_model.h"
#include "fusekit/hf.h"
#include "fusekit/model.h"
#include "fusekit/train.h"
#include "fusekit/safetensors.h"
#include "test_golden.h"
#include "test_util.h"

#define TOL_LOGITS 1e-4
#define TOL_LOSS_REL 1e-5

// A tiny Llama config.json; the test sets or removes keys on it.
#define BASE_JSON                                                                                                   \
    "{\"model_type\": \"llama\", \"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 48, "             \
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 16, "          \
    "\"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-05}"

static char *golden_dir(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/golden/%s", FK_TEST_DATA, name);
    return p;
}

static void expect_error(fk_status st, fk_status want, const char *n1, const char *n2, const char *n3) {
    if (st == FK_OK) fail_msg("expected an error mentioning '%s'", n1);
    const char *msg = fk_last_error();
    print_message("  refused: %s\n", msg);
    if (st != want) fail_msg("status %d instead of %d: %s", st, want, msg);
    const char *n[] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (n[i] && !strstr(msg, n[i])) fail_msg("message '%s' does not mention '%s'", msg, n[i]);
}

// The text of `json` with key set to the JSON text `value` (NULL: removed); malloc'd.
static char *with_key(const char *json, const char *key, const char *value) {
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        if (!v) fail_msg("bad test JSON %s", value);
        cJSON_AddItemToObject(j, key, v);
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

// A model folder <tmp>/<name> holding config.json = json and, when `weights_of` names a golden
// folder, its model.safetensors.
static char *folder(const char *name, const char *json, const char *weights_of) {
    char *dir = tpath(name), path[600];
    CHECK(fk_mkdir_p(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    spit(path, json, strlen(json));
    if (weights_of) {
        char from[600];
        snprintf(from, sizeof from, "%s/model.safetensors", golden_dir(weights_of));
        size_t n;
        char *d = slurp(from, &n);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        spit(path, d, n);
        free(d);
    }
    return dir;
}

// config.json of golden folder `name` (malloc'd text).
static char *golden_config(const char *name) {
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", golden_dir(name));
    return slurp(path, NULL);
}

// ------------------------------------------------------------------ sizes

// Each size key near 2^62 (which wrapped int64 products before), and each above the limits but
// within what the 2^40-float check alone let through: refused by fk_config_validate, the
// message naming config.json, the field and the key; loading the folder refuses the same way.
static void test_huge_sizes(void **s) {
    (void)s;
    const struct { const char *key, *field; } keys[] = {
        {"vocab_size", "vocab_size"},
        {"hidden_size", "d_model"},
        {"intermediate_size", "FFN width"},
        {"num_hidden_layers", "n_layer"},
        {"num_attention_heads", "n_head"},
        {"num_key_value_heads", "n_kv_head"},
        {"head_dim", "head_dim"},
        {"max_position_embeddings", "max_seq"},
    };
    // above each limit, yet (with the others small) at most 2^40 weights and KV-cache floats
    // (KV heads: more than the query heads)
    const char *big[] = {"33554432", "2097152", "2097152", "257", "8192", "4", "8192", "33554432"};
    fk_config c;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        for (int v = 0; v < 2; v++) {
            char *json = with_key(BASE_JSON, keys[i].key, v ? "4611686018427387904" : big[i]);
            expect_error(fk_hf_config_parse(json, "h/config.json", &c), FK_ERR_ARG, "h/config.json", keys[i].field, keys[i].key);
            // the whole load: refused before anything is allocated, no crash
            fk_model m;
            expect_error(fk_hf_load(&m, folder("huge", json, NULL)), FK_ERR_ARG, "huge/config.json", keys[i].key, NULL);
            free(json);
        }
    // too many layers in families whose windows walk the layers while the config is read (before
    // n_layer is checked): refused, nothing read past the layer table (fuzz_hf_config's find;
    // the sanitizer runs of this test see any such read)
    const char *windowed[] = {
        "{\"model_type\": \"mistral\", \"sliding_window\": 16}",
        "{\"model_type\": \"gemma2\", \"sliding_window\": 16, \"query_pre_attn_scalar\": 16}",
        "{\"model_type\": \"qwen2\", \"use_sliding_window\": true, \"sliding_window\": 16, \"max_window_layers\": 1}",
    };
    for (size_t i = 0; i < sizeof windowed / sizeof windowed[0]; i++) {
        cJSON *base = cJSON_Parse(BASE_JSON), *extra = cJSON_Parse(windowed[i]);
        assert_non_null(base); assert_non_null(extra);
        for (cJSON *e = extra->child; e; e = e->next) {
            cJSON_DeleteItemFromObjectCaseSensitive(base, e->string);
            cJSON_AddItemToObject(base, e->string, cJSON_Duplicate(e, true));
        }
        cJSON_DeleteItemFromObjectCaseSensitive(base, "num_hidden_layers");
        cJSON_AddNumberToObject(base, "num_hidden_layers", 296);
        char *j = cJSON_PrintUnformatted(base);
        expect_error(fk_hf_config_parse(j, "w/config.json", &c), FK_ERR_ARG, "w/config.json", "num_hidden_layers", NULL);
        free(j); cJSON_Delete(base); cJSON_Delete(extra);
    }
    // the products: within every per-key limit, a KV cache over 2^40 floats
    char *json = with_key(BASE_JSON, "max_position_embeddings", "16777216"), *t = with_key(json, "head_dim", "4096");
    char *u = with_key(t, "num_key_value_heads", "2"), *w = with_key(u, "num_hidden_layers", "256");
    expect_error(fk_hf_config_parse(w, "kv/config.json", &c), FK_ERR_ARG, "kv/config.json", "KV cache", NULL);
    free(json); free(t); free(u); free(w);
    // real models' sizes pass: Llama 3.1 405B (d 16384, FFN 53248, 126 layers, 128/8 heads,
    // context 131072, vocabulary 128256) and Gemma 3's vocabulary of 262144
    fk_config_llama(&c, 128256, 16384, 126, 128, 8, 53248, 131072);
    CHECK(fk_config_validate(&c));
    fk_config_llama(&c, 262144, 640, 18, 4, 1, 2048, 32768);
    c.head_dim = 256;
    CHECK(fk_config_validate(&c));
    int64_t n;
    fk_config_llama(&c, 128256, 16384, 126, 128, 8, 53248, 131072);
    CHECK(fk_config_weight_floats(&c, &n));
    assert_true(n >= 405000000000LL && n <= 407000000000LL);  // 405.9e9 with both embeddings
}

// ------------------------------------------------------------------ memory

// A 1.1 GB model under a 100 MB budget (FK_MEM_LIMIT_MB): refused before allocating, naming
// config.json and both figures; with its matrices stored (a frozen GGUF load) only the rest
// counts; the same model fits a larger budget.
static void test_memory_estimate(void **s) {
    (void)s;
    char *json = with_key(BASE_JSON, "vocab_size", "262144"), *t = with_key(json, "hidden_size", "1024");
    char *big = with_key(t, "tie_word_embeddings", "true");
    free(json); free(t);
    setenv("FK_MEM_LIMIT_MB", "100", 1);
    fk_model m;
    expect_error(fk_hf_load(&m, folder("mem", big, NULL)), FK_ERR_NOMEM, "mem/config.json", "needs 1.1 GB, 104.9 MB available", NULL);
    fk_config c;
    CHECK(fk_hf_config_parse(big, "mem/config.json", &c));
    expect_error(fk_model_init(&m, &c), FK_ERR_NOMEM, "needs 1.1 GB", "104.9 MB available", "FK_MEM_LIMIT_MB");
    CHECK(fk_model_init_ex(&m, &c, FK_MODEL_INIT_STORED));  // the embedding stays in the file
    fk_model_free(&m);
    setenv("FK_MEM_LIMIT_MB", "2000", 1);
    CHECK(fk_model_init(&m, &c));
    // gradients: a second arena, checked the same way
    setenv("FK_MEM_LIMIT_MB", "300", 1);
    expect_error(fk_model_alloc_grads(&m), FK_ERR_NOMEM, "gradient", "needs 1.1 GB, 314.6 MB available", NULL);
    // the optimizer's two moments: twice the weights, checked before they are allocated
    fk_adamw opt;
    fk_optim_opts oo = {0};
    expect_error(fk_adamw_init(&opt, &m, &oo), FK_ERR_NOMEM, "AdamW state", "needs 2.2 GB, 314.6 MB available",
                 "--optim-state bf16 stores them in 1.1 GB");
    // the activations, checked before they are allocated, with the option that needs less
    setenv("FK_MEM_LIMIT_MB", "20", 1);
    int32_t tok[2 * 64];
    for (int i = 0; i < 2 * 64; i++) tok[i] = i;
    expect_error(fk_model_forward(&m, tok, tok, 2, 64, true, NULL), FK_ERR_NOMEM, "activation arena for a training batch of 2 x 64",
                 "--checkpoint-activations needs", NULL);
    expect_error(fk_model_forward(&m, tok, tok, 2, 64, false, NULL), FK_ERR_NOMEM, "activation arena for a forward batch of 2 x 64",
                 "a smaller batch", NULL);
    fk_model_free(&m);
    unsetenv("FK_MEM_LIMIT_MB");
    assert_true(fk_mem_available_bytes() > 0);  // MemAvailable on Linux
    free(big);
}

// The RoPE tables are not sized from the declared context: a model declaring 2^24 positions of
// head_dim 4096 (a 128 GB table) starts with room for 64 and grows with what it runs; the grown
// table gives the same logits as a fresh one.
static void test_rope_lazy(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 64, 32, 1, 1, 1, 48, 1 << 24);
    c.head_dim = 4096;
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    assert_int_equal(m.rope_cap, 64);
    fk_model_free(&m);
    // growth: 40 positions, then 200, equal to 200 at once
    fk_config_llama(&c, 64, 32, 2, 2, 1, 48, 256);
    c.head_dim = 16;
    c.rope_theta = 500000;
    c.rope_scale = 8;
    c.rope_low_freq = 1;
    c.rope_high_freq = 4;
    c.rope_orig_ctx = 64;
    fk_model a, b;
    CHECK(fk_model_init(&a, &c));
    CHECK(fk_model_init(&b, &c));
    fk_model_init_weights(&a, 7);
    fk_model_init_weights(&b, 7);
    int32_t tok[200];
    for (int i = 0; i < 200; i++) tok[i] = (i * 37 + 11) % 64;
    CHECK(fk_model_forward(&a, tok, NULL, 1, 40, false, NULL));
    assert_int_equal(a.rope_cap, 64);
    CHECK(fk_model_forward(&a, tok, NULL, 1, 200, false, NULL));
    assert_int_equal(a.rope_cap, 200);
    CHECK(fk_model_forward(&b, tok, NULL, 1, 200, false, NULL));
    assert_memory_equal(fk_model_logits(&a), fk_model_logits(&b), 200 * 64 * sizeof(float));
    fk_model_free(&a);
    fk_model_free(&b);
}

// ------------------------------------------------------------------ JSON numbers

// Numbers no integer holds (1e300, 2^63, fractions, negatives for lists) are errors naming
// config.json and the key, range-checked before any cast.
static void test_json_numbers(void **s) {
    (void)s;
    const char *keys[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "max_position_embeddings"};
    const char *vals[] = {"1e300", "-1e300", "9223372036854775808", "12.5"};
    fk_config c;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
            char *json = with_key(BASE_JSON, keys[i], vals[v]);
            expect_error(fk_hf_config_parse(json, "n/config.json", &c), FK_ERR_FORMAT, "n/config.json", keys[i], "integer");
            free(json);
        }
    char *json = with_key(BASE_JSON, "fusekit_intermediate_sizes", "[48, 1e300]");
    expect_error(fk_hf_config_parse(json, "n/config.json", &c), FK_ERR_FORMAT, "n/config.json", "fusekit_intermediate_sizes[1]", NULL);
    free(json);
    json = with_key(BASE_JSON, "fusekit_attention_heads", "[-1e300, 2]");
    expect_error(fk_hf_config_parse(json, "n/config.json", &c), FK_ERR_FORMAT, "n/config.json", "fusekit_attention_heads[0]", NULL);
    free(json);
    json = with_key(BASE_JSON, "sliding_window", "1e300");
    char *t = with_key(json, "model_type", "\"mistral\"");
    expect_error(fk_hf_config_parse(t, "n/config.json", &c), FK_ERR_FORMAT, "n/config.json", "sliding_window", NULL);
    free(json); free(t);
    // token ids out of int32 range: no id
    json = with_key(BASE_JSON, "bos_token_id", "1e300");
    t = with_key(json, "eos_token_id", "[4294967296]");
    CHECK(fk_hf_config_parse(t, "n/config.json", &c));
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.eos_id, -1);
    free(json); free(t);
    // floats too large for a float: not finite, refused
    json = with_key(BASE_JSON, "rope_theta", "1e300");
    expect_error(fk_hf_config_parse(json, "n/config.json", &c), FK_ERR_ARG, "n/config.json", "rope_theta", NULL);
    free(json);
    json = with_key(BASE_JSON, "rms_norm_eps", "1e300");
    expect_error(fk_hf_config_parse(json, "n/config.json", &c), FK_ERR_ARG, "n/config.json", "epsilon", NULL);
    free(json);
}

// ------------------------------------------------------------------ RoPE

// Runs golden/<name>'s tokens through m: the max abs logit error (the loss checked too).
static double golden_error(fk_model *m, const char *name) {
    double loss_rel, err = golden_run(m, golden_dir(name), &loss_rel);
    if (err < TOL_LOGITS && loss_rel > TOL_LOSS_REL) fail_msg("%s: loss off by %.3g relative", name, loss_rel);
    return err;
}

// Loads folder dir and checks its logits against golden/<name>'s (err < TOL_LOGITS, or, with
// `far`, that they are far off: the test tells the settings apart); the config into *c.
static void load_check(const char *dir, const char *name, bool far, fk_config *c) {
    fk_model m;
    CHECK(fk_hf_load(&m, dir));
    double err = golden_error(&m, name);
    print_message("  %-26s logits max abs error %.2e\n", strrchr(dir, '/') + 1, err);
    if (!far && !(err < TOL_LOGITS)) fail_msg("%s: logits differ from transformers' by %.3g", dir, err);
    if (far && !(err > 1e-2)) fail_msg("%s: logits should differ from the scaled reference (%.3g)", dir, err);
    if (c) *c = m.cfg;
    fk_model_free(&m);
}

// transformers 5.x layout: rope_parameters with rope_theta and the scaling; 4.x layout:
// top-level rope_theta and rope_scaling ("rope_type" or the older "type"). Both read to the same
// config, and both give transformers' logits; so does a save -> load round trip.
static void test_rope_layouts(void **s) {
    (void)s;
    const struct { const char *name, *scaling; float theta, factor; int64_t orig; } g[] = {
        {"rope_llama3", "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                        "\"original_max_position_embeddings\": 64}", 500000.0f, 8.0f, 64},
        {"rope_linear", "{\"type\": \"linear\", \"factor\": 4.0}", 10000.0f, 4.0f, 0},
    };
    for (int i = 0; i < 2; i++) {
        char *v5 = golden_config(g[i].name), name[64];
        fk_config c5, c4, cr;
        snprintf(name, sizeof name, "%s_v5", g[i].name);
        load_check(folder(name, v5, g[i].name), g[i].name, false, &c5);
        assert_true(c5.rope_theta == g[i].theta && c5.rope_scale == g[i].factor && c5.rope_orig_ctx == g[i].orig);
        if (g[i].orig) assert_true(c5.rope_low_freq == 1.0f && c5.rope_high_freq == 4.0f);
        assert_int_equal(fk_config_arch(&c5), FK_ARCH_LLAMA);
        // 4.x: top-level rope_theta, rope_scaling
        char theta[32];
        snprintf(theta, sizeof theta, "%.1f", (double)g[i].theta);
        char *a = with_key(v5, "rope_parameters", NULL), *b = with_key(a, "rope_theta", theta), *v4 = with_key(b, "rope_scaling", g[i].scaling);
        snprintf(name, sizeof name, "%s_v4", g[i].name);
        load_check(folder(name, v4, g[i].name), g[i].name, false, &c4);
        assert_memory_equal(&c4, &c5, sizeof c4);
        // save -> load: the same config, the reference logits; config.json keeps the scaling
        fk_model m;
        CHECK(fk_hf_load(&m, tpath(name)));
        snprintf(name, sizeof name, "%s_saved", g[i].name);
        CHECK(fk_hf_save(&m, tpath(name), FK_DT_F32));
        fk_model_free(&m);
        load_check(tpath(name), g[i].name, false, &cr);
        assert_memory_equal(&cr, &c5, sizeof cr);
        char path[600];
        snprintf(path, sizeof path, "%s/config.json", tpath(name));
        char *saved = slurp(path, NULL);
        assert_non_null(strstr(saved, g[i].orig ? "\"llama3\"" : "\"linear\""));
        assert_non_null(strstr(saved, g[i].orig ? "\"rope_theta\":\t500000.0" : "\"rope_theta\":\t10000.0"));
        free(saved);
        // without the scaling the logits are far from transformers': the test tells them apart
        char *plain = with_key(v4, "rope_scaling", NULL);
        snprintf(name, sizeof name, "%s_plain", g[i].name);
        load_check(folder(name, plain, g[i].name), g[i].name, true, NULL);
        free(v5); free(a); free(b); free(v4); free(plain);
    }
    // the case: rope_theta only inside rope_parameters (default type) is read, not 10000
    char *json = with_key(BASE_JSON, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 500000.0}");
    fk_config c;
    CHECK(fk_hf_config_parse(json, "t/config.json", &c));
    assert_true(c.rope_theta == 500000.0f && c.rope_scale == 0 && c.rope_orig_ctx == 0);
    free(json);
    // with both, a non-empty rope_scaling wins and rope_parameters (its rope_theta included) is not
    // read, as transformers 5.25's convert_rope_params_to_dict (`rope_scaling or rope_parameters`)
    json = with_key(BASE_JSON, "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}");
    char *t = with_key(json, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 1000.0}");
    CHECK(fk_hf_config_parse(t, "t/config.json", &c));
    assert_true(c.rope_theta == 10000.0f && c.rope_scale == 2.0f);  // transformers 5.25: theta 10000, linear 2
    free(json); free(t);
    // an empty rope_scaling is not set: rope_parameters is read
    json = with_key(BASE_JSON, "rope_scaling", "{}");
    t = with_key(json, "rope_parameters", "{\"rope_type\": \"linear\", \"factor\": 4.0, \"rope_theta\": 1000.0}");
    CHECK(fk_hf_config_parse(t, "t/config.json", &c));
    assert_true(c.rope_theta == 1000.0f && c.rope_scale == 4.0f);
    free(json); free(t);
    // llama3 without original_max_position_embeddings: max_position_embeddings, as transformers
    json = with_key(BASE_JSON, "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}");
    CHECK(fk_hf_config_parse(json, "t/config.json", &c));
    assert_int_equal(c.rope_orig_ctx, 256);
    free(json);
}

// RoPE settings fusekit does not implement are refused, naming config.json, the key and the
// value; none is ignored.
static void test_rope_refused(void **s) {
    (void)s;
    const struct { const char *key, *value; fk_status st; const char *n2, *n3; } bad[] = {
        // (yarn, dynamic and longrope are implemented since issue 18: refused with a key of another type)
        {"rope_parameters", "{\"rope_type\": \"yarn\", \"rope_theta\": 10000.0, \"factor\": 4.0, \"low_freq_factor\": 1.0}", FK_ERR_UNSUPPORTED,
         "rope_parameters", "\"yarn\""},
        {"rope_scaling", "{\"rope_type\": \"dynamic\", \"factor\": 2.0, \"low_freq_factor\": 1.0}", FK_ERR_UNSUPPORTED, "rope_scaling", "\"dynamic\""},
        {"rope_scaling", "{\"type\": \"longrope\", \"short_factor\": [1.0], \"long_factor\": [1.0], \"low_freq_factor\": 1.0}", FK_ERR_UNSUPPORTED,
         "rope_scaling", "\"longrope\""},
        {"rope_parameters", "{\"rope_type\": \"su\", \"rope_theta\": 10000.0}", FK_ERR_UNSUPPORTED, "rope_parameters", "\"su\""},
        // keys that change the computation in a type fusekit knows
        {"rope_parameters", "{\"rope_type\": \"linear\", \"factor\": 2.0, \"attention_factor\": 0.5}", FK_ERR_UNSUPPORTED, "rope_parameters",
         "attention_factor"},
        {"rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0, \"partial_rotary_factor\": 0.5}", FK_ERR_UNSUPPORTED,
         "rope_parameters", "partial_rotary_factor"},
        {"partial_rotary_factor", "0.5", FK_ERR_UNSUPPORTED, "partial_rotary_factor", NULL},
        // per-layer-type parameters (Gemma 3's form) on a Llama
        {"rope_parameters", "{\"full_attention\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}", FK_ERR_UNSUPPORTED, "rope_parameters",
         "full_attention"},
        // incomplete or invalid scaling
        {"rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", FK_ERR_FORMAT, "rope_scaling", "low_freq_factor"},
        {"rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0, \"high_freq_factor\": 1.0}", FK_ERR_FORMAT,
         "rope_scaling", "high_freq_factor"},
        {"rope_scaling", "{\"rope_type\": \"linear\", \"factor\": 1e300}", FK_ERR_FORMAT, "rope_scaling", "factor"},
        {"rope_scaling", "{\"rope_type\": \"linear\"}", FK_ERR_FORMAT, "rope_scaling", "factor"},
        {"rope_scaling", "\"linear\"", FK_ERR_FORMAT, "rope_scaling", NULL},
        {"rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": -1.0}", FK_ERR_FORMAT, "rope_parameters", "rope_theta"},
    };
    fk_config c;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *json = with_key(BASE_JSON, bad[i].key, bad[i].value);
        expect_error(fk_hf_config_parse(json, "r/config.json", &c), bad[i].st, "r/config.json", bad[i].n2, bad[i].n3);
        free(json);
    }
    // Gemma's RoPE objects are as strict
    const char *gemma = "{\"model_type\": \"gemma3_text\", \"vocab_size\": 48, \"hidden_size\": 16, \"intermediate_size\": 24, "
                        "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 4}";
    const struct { const char *value, *n2; } gbad[] = {
        {"{\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 8.0, \"beta_fast\": 32}}", "beta_fast"},
        {"{\"full_attention\": {\"rope_type\": \"default\"}, \"chunked_attention\": {\"rope_type\": \"default\"}}", "chunked_attention"},
        {"{\"rope_type\": \"default\", \"rope_theta\": 10000.0, \"partial_rotary_factor\": 0.25}", "partial_rotary_factor"},
    };
    for (size_t i = 0; i < sizeof gbad / sizeof gbad[0]; i++) {
        char *json = with_key(gemma, "rope_parameters", gbad[i].value);
        expect_error(fk_hf_config_parse(json, "g/config.json", &c), FK_ERR_UNSUPPORTED, "g/config.json", "rope_parameters", gbad[i].n2);
        free(json);
    }
    char *gj = with_key(gemma, "rope_parameters", "{\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 8.0, \"rope_theta\": 1e6}}");
    CHECK(fk_hf_config_parse(gj, "g/config.json", &c));
    assert_true(c.rope_scale == 8.0f && c.rope_theta == 1e6f);
    free(gj);
    // Llama 3 scaling goes to GGUF as llama.cpp's llama with its rope_freqs tensor (issue 18,
    // test_rope's test_rope_llama3_gguf); no other architecture takes it
    char *json = with_key(BASE_JSON, "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}");
    CHECK(fk_hf_config_parse(json, "r/config.json", &c));
    const char *arch;
    CHECK(fk_gguf_model_arch(&c, &arch));
    assert_string_equal(arch, "llama");
    c.qk_norm = true;  // qwen3's kind
    expect_error(fk_gguf_model_arch(&c, &arch), FK_ERR_UNSUPPORTED, "Llama 3 RoPE scaling", NULL, NULL);
    free(json);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_huge_sizes),   cmocka_unit_test(test_memory_estimate), cmocka_unit_test(test_rope_lazy),
        cmocka_unit_test(test_json_numbers), cmocka_unit_test(test_rope_layouts),    cmocka_unit_test(test_rope_refused),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
