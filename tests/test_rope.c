// RoPE variants (issue 18 item 1): partial rotary (rotary_dim), its tables, its config checks
// and how each file format carries or refuses it. The op's backward is checked by finite
// differences in test_ops (test_rope_partial), the whole model in test_model
// (test_fd_partial_rotary).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusekit/fusekit.h"
#include "model/arch.h"
#include "test_golden.h"
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

// A model of config c with seeded weights exported to <tmp>/name (F32), opened as *g.
static void export_open(const fk_config *c, const char *name, fk_gguf *g) {
    fk_model m;
    CHECK(fk_model_init(&m, c));
    fk_model_init_weights(&m, 1);
    CHECK(fk_gguf_export(&m, NULL, tpath(name), FK_DT_F32, NULL, NULL));
    fk_model_free(&m);
    CHECK(fk_gguf_open(tpath(name), g));
}

// GGUF: llama.cpp's llama graph asserts rope.dimension_count == head size, so the llama row
// refuses a partial-rotary config with the reason; a whole-head one writes dimension_count = head_dim.
static void test_rotary_dim_gguf(void **s) {
    (void)s;
    fk_config c;
    cfg_partial(&c, 4);
    assert_int_equal(arch_gguf_refuse(arch_of(FK_ARCH_LLAMA), &c), FK_ERR_UNSUPPORTED);
    assert_non_null(strstr(fk_last_error(), "partial rotary"));
    assert_non_null(strstr(fk_last_error(), "rope.dimension_count"));
    const char *arch;  // a row whose llama.cpp graph rotates part of a head takes it, or none does
    if (fk_gguf_model_arch(&c, &arch) == FK_OK) assert_true(arch_of_gguf(arch, strlen(arch))->gguf_rotary_part);
    cfg_partial(&c, 0);
    fk_gguf g;
    export_open(&c, "whole.gguf", &g);
    int64_t rot;
    CHECK(fk_gguf_get_i64(&g, "llama.rope.dimension_count", &rot));
    assert_int_equal(rot, 8);
    fk_gguf_close(&g);
}

// ------------------------------------------------------------------ RoPE scaling against transformers

// Max abs logit error of model m on golden/<name>'s tokens (transformers 5.25's LlamaForCausalLM,
// make_golden.py --only <name>); *dloss the loss's relative error.
static double golden_err(fk_model *m, const char *name, double *dloss) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/golden/%s", FK_TEST_DATA, name);
    return golden_run(m, dir, dloss);
}

// Loads dir, checks its logits against golden <name> within 1e-4 (loss within 1e-5 relative)
// and returns its config.
static void check_folder(const char *dir, const char *name, fk_config *c) {
    fk_model m;
    CHECK(fk_hf_load(&m, dir));
    double dl, err = golden_err(&m, name, &dl);
    print_message("  %-34s logits max abs error %.2e, loss rel %.1e\n", dir + strlen(dir) - (strlen(dir) > 34 ? 34 : strlen(dir)), err, dl);
    if (!(err < 1e-4) || !(dl < 1e-5)) fail_msg("%s: logits differ from transformers' by %.3g (loss %.3g)", dir, err, dl);
    *c = m.cfg;
    fk_model_free(&m);
}

// config.json of golden <name> in transformers 4's layout: rope_theta at the top, the rest of
// rope_parameters as rope_scaling with "type" (the older spelling) instead of rope_type.
static char *v4_layout(const char *name) {
    char path[600];
    snprintf(path, sizeof path, "%s/golden/%s/config.json", FK_TEST_DATA, name);
    char *text = slurp(path, NULL);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON *rp = cJSON_DetachItemFromObject(j, "rope_parameters");
    cJSON *theta = cJSON_DetachItemFromObject(rp, "rope_theta"), *type = cJSON_DetachItemFromObject(rp, "rope_type");
    cJSON_AddItemToObject(j, "rope_theta", theta);
    cJSON_AddItemToObject(rp, "type", type);
    cJSON_AddItemToObject(j, "rope_scaling", rp);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    return out;
}

// A folder <tmp>/<dir> with golden <name>'s weights and the given config.json text.
static const char *folder_with(const char *dir, const char *name, const char *config) {
    char *d = tpath(dir), src[600], dst[700];
    assert_int_equal(fk_mkdir_p(d), FK_OK);
    snprintf(src, sizeof src, "%s/golden/%s/model.safetensors", FK_TEST_DATA, name);
    snprintf(dst, sizeof dst, "%s/model.safetensors", d);
    assert_int_equal(symlink(src, dst), 0);
    snprintf(dst, sizeof dst, "%s/config.json", d);
    spit(dst, config, strlen(config));
    return d;
}

// Golden <name> (folder dir) from transformers 5's config.json and in transformers 4's layout, and
// saved by fusekit and loaded back: transformers' logits each time (check_folder) and one config, *c.
static void check_layouts(const char *dir, const char *name, fk_config *c) {
    char sub[80];
    fk_config c4, cs;
    check_folder(dir, name, c);
    char *v4 = v4_layout(name);
    snprintf(sub, sizeof sub, "%s_v4", name);
    check_folder(folder_with(sub, name, v4), name, &c4);
    free(v4);
    assert_memory_equal(&c4, c, sizeof c4);
    fk_model m;
    CHECK(fk_hf_load(&m, dir));
    snprintf(sub, sizeof sub, "%s_saved", name);
    CHECK(fk_hf_save(&m, tpath(sub), FK_DT_F32));
    fk_model_free(&m);
    check_folder(tpath(sub), name, &cs);
    assert_memory_equal(&cs, c, sizeof cs);
}

// Max abs logit error on golden <name> (folder dir) of its weights under config c without its
// dynamic/yarn/longrope scaling (scaling) or without its sliding window.
static double error_without(const fk_config *c, const char *dir, const char *name, bool scaling) {
    fk_config plain = *c;
    if (scaling) {
        plain.rope_ext = FK_ROPE_EXT_NONE;
        plain.rope_ext_factor = plain.rope_attn_factor = plain.rope_beta_fast = plain.rope_beta_slow = 0;
        plain.rope_ext_ctx = 0;
        plain.rope_n_factors = 0;
        plain.rope_yarn_no_trunc = false;
    } else {
        plain.sliding_window = 0;
    }
    fk_model m;
    CHECK(fk_model_init(&m, &plain));
    CHECK(fk_hf_load_weights(&m, dir));
    double dl, far = golden_err(&m, name, &dl);
    print_message("  %-34s without the %s: %.2e\n", name, scaling ? "scaling" : "window", far);
    fk_model_free(&m);
    return far;
}

// Each type from transformers 5's rope_parameters and from 4's rope_scaling gives transformers'
// logits (1e-4) and one config; saved and loaded back, the same config and logits; without the
// scaling the logits are far off (so the check tells them apart).
static void test_rope_scaling_goldens(void **s) {
    (void)s;
    static const char *const names[] = {"rope_yarn", "rope_yarn_mscale", "rope_dynamic", "rope_longrope_short", "rope_longrope_long"};
    static const int kinds[] = {FK_ROPE_EXT_YARN, FK_ROPE_EXT_YARN, FK_ROPE_EXT_DYNAMIC, FK_ROPE_EXT_LONGROPE, FK_ROPE_EXT_LONGROPE};
    for (int i = 0; i < 5; i++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/golden/%s", FK_TEST_DATA, names[i]);
        fk_config c5;
        check_layouts(dir, names[i], &c5);
        assert_int_equal(c5.rope_ext, kinds[i]);
        assert_int_equal(fk_config_arch(&c5), FK_ARCH_LLAMA);
        // the same weights without the scaling: far from transformers' logits
        assert_true(error_without(&c5, dir, names[i], true) > 1e-2);
    }
}

// Sliding windows with YaRN and dynamic NTK (goldens qwen2_swa_yarn: a window of 8 on layer 1,
// mistral_swa_dynamic: on both layers, 16 tokens): transformers' Qwen2 and Mistral turn every layer,
// sliding or not, with the one scaled table, as fusekit's sliding layers do under these types.
// transformers' logits within 1e-4 from both config layouts; saved as the model_type it is and read
// back the same; without the window or the scaling the logits are far off; KV-cache steps give the
// full forward's logits (1e-5; dynamic: a forward of its original context of 8, whose base is fixed).
static void test_rope_scaling_windows(void **s) {
    (void)s;
    static const struct { const char *name; fk_arch arch; int kind; int same; } cases[] = {
        {"qwen2_swa_yarn", FK_ARCH_QWEN2, FK_ROPE_EXT_YARN, 16}, {"mistral_swa_dynamic", FK_ARCH_MISTRAL, FK_ROPE_EXT_DYNAMIC, 8}};
    for (int i = 0; i < 2; i++) {
        const char *name = cases[i].name;
        char dir[600];
        snprintf(dir, sizeof dir, "%s/golden/%s", FK_TEST_DATA, name);
        fk_config c5;
        check_layouts(dir, name, &c5);
        assert_int_equal(c5.rope_ext, cases[i].kind);
        assert_true(c5.sliding_window == 8 && c5.sliding[1] && c5.max_seq > 8);
        assert_int_equal(fk_config_arch(&c5), cases[i].arch);
        fk_model m;
        CHECK(fk_hf_load(&m, dir));
        // KV-cache steps against the full forward
        int64_t V = m.cfg.vocab_size;
        int32_t x[16];
        for (int t = 0; t < 16; t++) x[t] = (int32_t)((t * 7 + 3) % V);
        float *want = malloc((size_t)(16 * V) * sizeof(float)), *lg = malloc((size_t)V * sizeof(float));
        int n = cases[i].same;
        CHECK(fk_model_forward(&m, x, NULL, 1, n, false, NULL));
        memcpy(want, fk_model_logits(&m), (size_t)(n * V) * sizeof(float));
        double err = 0;
        for (int t = 0; t < 16; t++) {
            CHECK(fk_model_step(&m, &x[t], 1, t, lg));
            for (int64_t v = 0; t < n && v < V; v++) err = fmax(err, fabs(lg[v] - want[t * V + v]));
        }
        free(want); free(lg);
        fk_model_free(&m);
        double no_window = error_without(&c5, dir, name, false), no_scaling = error_without(&c5, dir, name, true);
        print_message("  %-20s KV cache vs forward %.2e; without the window %.2e, without the scaling %.2e\n", name, err, no_window, no_scaling);
        assert_true(err < 1e-5);
        assert_true(no_window > 1e-3 && no_scaling > 1e-3);
    }
}

// Fields as transformers derives them: YaRN's attention factor 0.1 ln 4 + 1 and betas 32/1;
// dynamic's threshold max_position_embeddings 8 with a context of factor times it; LongRoPE's
// attention factor sqrt(1 + ln(256/64) / ln 64) and its lists.
static void test_rope_scaling_fields(void **s) {
    (void)s;
    fk_config c;
    char path[600];
    snprintf(path, sizeof path, "%s/golden/rope_yarn/config.json", FK_TEST_DATA);
    CHECK(fk_hf_config_read(path, &c));
    assert_true(c.rope_ext_factor == 4.0f && c.rope_ext_ctx == 64 && c.rope_beta_fast == 32 && c.rope_beta_slow == 1 && !c.rope_yarn_no_trunc);
    assert_true(c.rope_attn_factor == (float)(0.1 * log(4.0) + 1));
    snprintf(path, sizeof path, "%s/golden/rope_yarn_mscale/config.json", FK_TEST_DATA);
    CHECK(fk_hf_config_read(path, &c));
    assert_true(c.rope_ext_factor == 8.0f && c.rope_beta_fast == 8 && c.rope_beta_slow == 2 && c.rope_yarn_no_trunc);
    assert_true(c.rope_attn_factor == (float)((0.2 * log(8.0) + 1) / (0.1 * log(8.0) + 1)));
    // Llama 3.1's own numbers in transformers 5's layout
    const char *l31 = "{\"model_type\": \"llama\", \"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 48, "
                      "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"max_position_embeddings\": 131072, "
                      "\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                      "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";
    CHECK(fk_hf_config_parse(l31, "llama31/config.json", &c));
    assert_true(c.rope_theta == 500000.0f && c.rope_scale == 8.0f && c.rope_low_freq == 1.0f && c.rope_high_freq == 4.0f &&
                c.rope_orig_ctx == 8192 && c.max_seq == 131072 && c.rope_ext == FK_ROPE_EXT_NONE);
    snprintf(path, sizeof path, "%s/golden/rope_dynamic/config.json", FK_TEST_DATA);
    CHECK(fk_hf_config_read(path, &c));
    assert_true(c.rope_ext_factor == 2.0f && c.rope_ext_ctx == 8 && c.max_seq == 16);
    snprintf(path, sizeof path, "%s/golden/rope_longrope_short/config.json", FK_TEST_DATA);
    CHECK(fk_hf_config_read(path, &c));
    assert_true(c.rope_ext_ctx == 64 && c.rope_n_factors == 4 && c.rope_short[2] == 3.0f && c.rope_long[3] == 30.0f);
    fk_config other = c;  // models whose factors differ are different models (merge refuses them)
    other.rope_long[1] = 4.5f;
    int64_t layer;
    const fk_config_field *df = fk_config_diff(&c, &other, &layer);
    assert_non_null(df);
    assert_string_equal(df->name, "rope_n_factors");
    assert_true(c.rope_attn_factor == (float)sqrt(1 + log(4.0) / log(64.0)));
    char buf[1024];
    fk_config_describe(&c, buf, sizeof buf);
    assert_non_null(strstr(buf, "rope_longrope(ctx=64"));
}

// Golden <name>'s config.json with rope_parameters.<key> (or the top-level key when top) set to the
// JSON text val, parsed into *c: the status.
static fk_status parse_changed(const char *name, bool top, const char *key, const char *val, fk_config *c) {
    char path[600];
    snprintf(path, sizeof path, "%s/golden/%s/config.json", FK_TEST_DATA, name);
    char *text = slurp(path, NULL);
    cJSON *j = cJSON_Parse(text), *o = top ? j : cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
    free(text);
    cJSON_DeleteItemFromObject(o, key);
    cJSON_AddItemToObject(o, key, cJSON_Parse(val));
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    fk_status st = fk_hf_config_parse(out, "config.json", c);
    free(out);
    return st;
}

// ... refused: the status must be want and the message hold w.
static void refused_json(const char *name, bool top, const char *key, const char *val, fk_status want, const char *w) {
    fk_config c;
    fk_status st = parse_changed(name, top, key, val, &c);
    if (st != want || !strstr(fk_last_error(), w)) fail_msg("%s.%s = %s: status %d, message: %s", name, key, val, st, fk_last_error());
    print_message("  refused as expected: %s\n", fk_last_error());
}

// Unknown types, keys fusekit would ignore, lists of the wrong length, contradicting keys:
// refused naming the key and the value.
static void test_rope_scaling_refused(void **s) {
    (void)s;
    refused_json("rope_yarn", false, "rope_type", "\"su\"", FK_ERR_UNSUPPORTED, "rope_type \"su\"");
    refused_json("rope_yarn", false, "type", "\"linear\"", FK_ERR_FORMAT, "rope_type \"yarn\" but type \"linear\"");
    refused_json("rope_yarn", false, "low_freq_factor", "1.0", FK_ERR_UNSUPPORTED, "low_freq_factor is not supported with rope_type \"yarn\"");
    refused_json("rope_yarn", false, "factor", "0.5", FK_ERR_ARG, "factor in 1..1e6");
    refused_json("rope_yarn", true, "original_max_position_embeddings", "32", FK_ERR_FORMAT, "original_max_position_embeddings is 64 but the top-level key is 32");
    refused_json("rope_yarn", false, "truncate", "\"yes\"", FK_ERR_FORMAT, "\"rope_parameters\".truncate must be true or false");
    refused_json("rope_dynamic", false, "original_max_position_embeddings", "4", FK_ERR_UNSUPPORTED, "not supported with rope_type \"dynamic\"");
    refused_json("rope_longrope_short", false, "short_factor", "[1.0, 2.0, 3.0]", FK_ERR_FORMAT, "short_factor must be a list of 4 numbers");
    refused_json("rope_longrope_short", false, "long_factor", "[1.0, 2.0, -3.0, 4.0]", FK_ERR_FORMAT, "long_factor[2] must be a positive number");
    refused_json("rope_longrope_short", false, "long_factor", "null", FK_ERR_FORMAT, "long_factor must be a list of 4 numbers");
}

// YaRN's mscale / mscale_all_dim 0 read as absent, as transformers 5.25's `if mscale and
// mscale_all_dim`: the attention factor from the factor alone, 0.1 ln 8 + 1 (its
// _compute_yarn_parameters gives 1.2079441541679836 for each of these configs of rope_yarn_mscale);
// a negative one is still refused.
static void test_rope_yarn_mscale_zero(void **s) {
    (void)s;
    static const char *const keys[] = {"mscale", "mscale_all_dim"};
    for (int i = 0; i < 2; i++) {
        fk_config c;
        CHECK(parse_changed("rope_yarn_mscale", false, keys[i], "0", &c));
        print_message("  %s 0: attention factor %.9g\n", keys[i], (double)c.rope_attn_factor);
        assert_true(c.rope_attn_factor == (float)(0.1 * log(8.0) + 1));
        assert_true(c.rope_ext == FK_ROPE_EXT_YARN && c.rope_ext_factor == 8.0f);
    }
    refused_json("rope_yarn_mscale", false, "mscale", "-1", FK_ERR_FORMAT, "\"rope_parameters\".mscale must be a number in (0, 1e+30)");
}

// GGUF: linear scaling as llama.cpp's rope.scaling.type/factor, read back to the same config;
// YaRN as llama.cpp's yarn keys; dynamic refused with the reason.
static void test_rope_scaling_gguf(void **s) {
    (void)s;
    fk_config c;
    cfg_partial(&c, 0);
    c.rope_scale = 4;
    fk_model m, g;
    fk_gguf f;
    export_open(&c, "linear.gguf", &f);
    fk_gguf_str t;
    CHECK(fk_gguf_get_str(&f, "llama.rope.scaling.type", &t));
    assert_true(t.n == 6 && memcmp(t.s, "linear", 6) == 0);
    fk_gguf_close(&f);
    CHECK(fk_gguf_import(tpath("linear.gguf"), &g, NULL));
    int64_t layer;
    assert_null(fk_config_diff(&c, &g.cfg, &layer));
    assert_true(g.cfg.rope_scale == 4.0f);
    fk_model_free(&g);
    // YaRN: llama.cpp's keys (attn_factor over its own 1 + 0.1 ln factor); read back, the
    // transformers logits of golden rope_yarn within 1e-4; other betas or truncate false refused
    char dir[600];
    snprintf(dir, sizeof dir, "%s/golden/rope_yarn", FK_TEST_DATA);
    CHECK(fk_hf_load(&m, dir));
    CHECK(fk_gguf_export(&m, NULL, tpath("yarn.gguf"), FK_DT_F32, NULL, NULL));
    fk_model_free(&m);
    CHECK(fk_gguf_import(tpath("yarn.gguf"), &g, NULL));
    double dl, err = golden_err(&g, "rope_yarn", &dl);
    print_message("  rope_yarn through GGUF: logits max abs error %.2e, loss rel %.1e\n", err, dl);
    assert_true(err < 1e-4 && dl < 1e-5 && g.cfg.rope_ext == FK_ROPE_EXT_YARN && g.cfg.rope_ext_ctx == 64);
    fk_model_free(&g);
    snprintf(dir, sizeof dir, "%s/golden/rope_yarn_mscale", FK_TEST_DATA);
    CHECK(fk_hf_load(&m, dir));
    assert_int_equal(fk_gguf_export(&m, NULL, tpath("yarn2.gguf"), FK_DT_F32, NULL, NULL), FK_ERR_UNSUPPORTED);
    assert_non_null(strstr(fk_last_error(), "beta_fast 8"));
    fk_model_free(&m);
    snprintf(dir, sizeof dir, "%s/golden/rope_dynamic", FK_TEST_DATA);
    CHECK(fk_hf_load(&m, dir));
    assert_int_equal(fk_gguf_export(&m, NULL, tpath("dyn.gguf"), FK_DT_F32, NULL, NULL), FK_ERR_UNSUPPORTED);
    assert_non_null(strstr(fk_last_error(), "no dynamic NTK"));
    fk_model_free(&m);
}

// Phi-3 128k's form: rope_scaling {"type": "su" (or "yarn"), short/long factors} is longrope in
// Phi3Config, with the top-level original_max_position_embeddings; llama reads "yarn" as YaRN.
static void test_rope_phi3_names(void **s) {
    (void)s;
    const char *fmt = "{\"model_type\": \"phi3\", \"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 48, "
                      "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"max_position_embeddings\": 256, "
                      "\"original_max_position_embeddings\": 64, \"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"%s\", "
                      "\"short_factor\": [1.0, 1.5, 3.0, 7.0], \"long_factor\": [1.2, 4.0, 11.0, 30.0]}}";
    const char *names[] = {"su", "yarn", "longrope"};
    for (int i = 0; i < 3; i++) {
        char json[1024];
        snprintf(json, sizeof json, fmt, names[i]);
        fk_config c;
        CHECK(fk_hf_config_parse(json, "phi3/config.json", &c));
        assert_int_equal(c.rope_ext, FK_ROPE_EXT_LONGROPE);
        assert_true(c.rope_ext_ctx == 64 && c.rope_long[2] == 11.0f && c.rope_attn_factor == (float)sqrt(1 + log(4.0) / log(64.0)));
    }
}

// Length regimes (longrope beyond its original context of 8, dynamic beyond 8): KV-cache steps
// within the threshold give the full forward's logits (1e-5); a forward after steps past it
// gives the same logits as a fresh model's (the tables are refilled for the shorter length).
static void test_rope_regimes(void **s) {
    (void)s;
    static const char *const names[] = {"rope_longrope_long", "rope_dynamic"};
    for (int i = 0; i < 2; i++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/golden/%s", FK_TEST_DATA, names[i]);
        fk_model m;
        CHECK(fk_hf_load(&m, dir));
        int64_t V = m.cfg.vocab_size;
        int32_t x[16];
        for (int t = 0; t < 16; t++) x[t] = (int32_t)((t * 7 + 3) % V);
        float *want = malloc((size_t)(16 * V) * sizeof(float)), *lg = malloc((size_t)V * sizeof(float));
        CHECK(fk_model_forward(&m, x, NULL, 1, 8, false, NULL));
        memcpy(want, fk_model_logits(&m), (size_t)(8 * V) * sizeof(float));
        double err = 0;
        for (int t = 0; t < 16; t++) {
            CHECK(fk_model_step(&m, &x[t], 1, t, lg));
            for (int64_t v = 0; t < 8 && v < V; v++) err = fmax(err, fabs(lg[v] - want[t * V + v]));
        }
        CHECK(fk_model_forward(&m, x, NULL, 1, 8, false, NULL));
        const float *again = fk_model_logits(&m);
        for (int64_t k = 0; k < 8 * V; k++) err = fmax(err, fabs(again[k] - want[k]));
        print_message("  %-20s steps within the threshold and a forward after steps past it: max abs error %.2e\n", names[i], err);
        assert_true(err < 1e-5);
        free(want); free(lg);
        fk_model_free(&m);
    }
    // with sliding layers (Mistral, Phi-3 windows) these types turn every layer alike: no local table
    fk_config c;
    char path[600];
    snprintf(path, sizeof path, "%s/golden/rope_yarn/config.json", FK_TEST_DATA);
    CHECK(fk_hf_config_read(path, &c));
    c.sliding_window = 4;
    for (int64_t l = 0; l < c.n_layer; l++) c.sliding[l] = 1;
    fk_model m;
    CHECK(fk_model_init(&m, &c));
    assert_null(m.rope_cos_local);
    fk_model_free(&m);
}

// Dynamic NTK through the KV cache past its original context of 8 (golden rope_dynamic): each step
// turns its own position with the base of its own length, as transformers' generate does. A step
// fills only its own rows of the table; a model whose whole table is refilled for that length before
// each step (by a full forward of it) gives bit-identical step logits.
static void test_rope_dynamic_steps(void **s) {
    (void)s;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/golden/rope_dynamic", FK_TEST_DATA);
    fk_model a, b;
    CHECK(fk_hf_load(&a, dir));
    CHECK(fk_hf_load(&b, dir));
    int64_t V = a.cfg.vocab_size, T = a.cfg.max_seq;
    assert_true(a.cfg.rope_ext == FK_ROPE_EXT_DYNAMIC && a.cfg.rope_ext_ctx == 8 && T == 16);
    int32_t x[16];
    for (int t = 0; t < T; t++) x[t] = (int32_t)((t * 5 + 1) % V);
    float *la = malloc((size_t)V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    double err = 0;
    for (int t = 0; t < T; t++) {
        CHECK(fk_model_step(&a, &x[t], 1, t, la));
        CHECK(fk_model_forward(&b, x, NULL, 1, t + 1, false, NULL));  // the table of length t + 1, whole
        CHECK(fk_model_step(&b, &x[t], 1, t, lb));
        for (int64_t v = 0; v < V; v++) err = fmax(err, fabs(la[v] - lb[v]));
    }
    print_message("  rope_dynamic steps past the original context, own rows vs whole table: max abs difference %.2e\n", err);
    assert_true(err == 0);
    free(la); free(lb);
    fk_model_free(&a);
    fk_model_free(&b);
}

// Llama 3 scaling to GGUF: llama.cpp's rope_freqs tensor (its converter's factors); imported as
// LongRoPE with that one factor set and attention factor 1: transformers' logits within 1e-4
// (golden rope_llama3, tools/ref/make_rope_golden.py), and saved again as llama.
static void test_rope_llama3_gguf(void **s) {
    (void)s;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/golden/rope_llama3", FK_TEST_DATA);
    fk_model m, g;
    CHECK(fk_hf_load(&m, dir));
    CHECK(fk_gguf_export(&m, NULL, tpath("llama3.gguf"), FK_DT_F32, NULL, NULL));
    fk_model_free(&m);
    CHECK(fk_gguf_import(tpath("llama3.gguf"), &g, NULL));
    assert_int_equal(g.cfg.rope_ext, FK_ROPE_EXT_LONGROPE);
    assert_true(g.cfg.rope_attn_factor == 1 && g.cfg.rope_orig_ctx == 0);
    double dl, err = golden_err(&g, "rope_llama3", &dl);
    print_message("  rope_llama3 through GGUF (rope_freqs): logits max abs error %.2e, loss rel %.1e\n", err, dl);
    assert_true(err < 1e-4 && dl < 1e-5);
    assert_int_equal(fk_config_arch(&g.cfg), FK_ARCH_LLAMA);
    fk_gguf f;  // and it exports again, with the same factors
    CHECK(fk_gguf_export(&g, NULL, tpath("llama3b.gguf"), FK_DT_F32, NULL, NULL));
    CHECK(fk_gguf_open(tpath("llama3b.gguf"), &f));
    assert_non_null(fk_gguf_find_tensor(&f, "rope_freqs.weight"));
    fk_gguf_close(&f);
    fk_model_free(&g);
}

// Phi-4-mini's LongRoPE (partial rotary) to GGUF as llama.cpp's phi3 converter writes it
// (rope_factors_long/short, rope.scaling.original_context_length, attn_factor) and back to the
// same config.
static void test_rope_phi3_gguf(void **s) {
    (void)s;
    char path[600];
    snprintf(path, sizeof path, "%s/golden/phi3/config.json", FK_TEST_DATA);
    fk_config c;
    CHECK(fk_hf_config_read(path, &c));
    c.rotary_dim = c.head_dim / 2;  // Phi-4-mini's partial rotary: the phi3 row's GGUF kind
    c.sliding_window = 0;            // (and no window, as Phi-4-mini)
    memset(c.sliding, 0, sizeof c.sliding);
    int64_t half = fk_config_rotary_dim(&c) / 2;
    c.rope_ext = FK_ROPE_EXT_LONGROPE;
    c.rope_ext_ctx = 16;
    c.rope_attn_factor = 1.25f;
    c.rope_n_factors = (int32_t)half;
    for (int64_t d = 0; d < half; d++) { c.rope_short[d] = 1.0f + (float)d / 8; c.rope_long[d] = 2.0f + (float)d; }
    const char *arch;
    CHECK(fk_gguf_model_arch(&c, &arch));
    assert_string_equal(arch, "phi3");
    fk_gguf f;
    export_open(&c, "phi3.gguf", &f);
    assert_non_null(fk_gguf_find_tensor(&f, "rope_factors_long.weight"));
    fk_gguf_close(&f);
    fk_model g;
    CHECK(fk_gguf_import(tpath("phi3.gguf"), &g, NULL));
    int64_t layer;
    const fk_config_field *df = fk_config_diff(&c, &g.cfg, &layer);
    if (df) fail_msg("phi3 GGUF round trip: %s differs", df->name);
    assert_memory_equal(g.cfg.rope_long, c.rope_long, (size_t)half * sizeof(float));
    assert_memory_equal(g.cfg.rope_short, c.rope_short, (size_t)half * sizeof(float));
    fk_model_free(&g);
}

// ------------------------------------------------------------------ config.json kinds

// Golden <name>'s config (YaRN added when yarn; layer 1's FFN 8 narrower when folded, as a fold
// leaves it) written as config.json and read back: the same config. Returns the model_type written.
static fk_arch hf_round_trip(const char *name, bool yarn, bool folded) {
    char path[600];
    snprintf(path, sizeof path, "%s/golden/%s/config.json", FK_TEST_DATA, name);
    fk_config c, back;
    CHECK(fk_hf_config_read(path, &c));
    if (yarn) {  // transformers' defaults for factor 4: attention factor 0.1 ln 4 + 1, betas 32/1
        c.rope_ext = FK_ROPE_EXT_YARN;
        c.rope_ext_factor = 4;
        c.rope_ext_ctx = c.max_seq;
        c.rope_attn_factor = 1 + 0.1f * logf(4);
        c.rope_beta_fast = 32;
        c.rope_beta_slow = 1;
    }
    if (folded) c.ffn[1] -= 8;
    CHECK(fk_config_validate(&c));
    char *j = fk_hf_config_json(&c);
    if (fk_hf_config_parse(j, "config.json", &back) != FK_OK) fail_msg("%s%s%s: its config.json does not load: %s", name, yarn ? " + yarn" : "",
                                                                      folded ? " folded" : "", fk_last_error());
    int64_t layer;
    const fk_config_field *df = fk_config_diff(&c, &back, &layer);
    if (df) fail_msg("%s%s%s: %s differs after save and load", name, yarn ? " + yarn" : "", folded ? " folded" : "", df->name);
    free(j);
    return fk_config_arch(&c);
}

// A model_type whose keys cannot say the model is not written: gpt_neox and phi (no RoPE scaling
// in their keys) and phi3 (Phi3Config takes default and longrope only) with YaRN are written as
// fusekit; a folded Phi-4-mini (partial rotary with LongRoPE, per-layer FFN widths) is fusekit with
// LongRoPE's lists of rotary dims / 2, which the "fusekit" object's rotary_dim sizes.
static void test_rope_hf_kinds(void **s) {
    (void)s;
    static const char *const yarn_fusekit[] = {"gpt_neox", "gpt_neox_seq", "phi", "phi3_partial"};
    for (size_t i = 0; i < sizeof yarn_fusekit / sizeof yarn_fusekit[0]; i++) {
        assert_int_not_equal(hf_round_trip(yarn_fusekit[i], false, false), FK_ARCH_FUSEKIT);
        assert_int_equal(hf_round_trip(yarn_fusekit[i], true, false), FK_ARCH_FUSEKIT);
    }
    assert_int_equal(hf_round_trip("phi3_longrope", false, false), FK_ARCH_PHI3);
    assert_int_equal(hf_round_trip("phi3_longrope", false, true), FK_ARCH_FUSEKIT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotary_dim_config),
        cmocka_unit_test(test_rotary_dim_tables),
        cmocka_unit_test(test_rotary_dim_hf),
        cmocka_unit_test(test_rotary_dim_gguf),
        cmocka_unit_test(test_rope_scaling_goldens),
        cmocka_unit_test(test_rope_scaling_windows),
        cmocka_unit_test(test_rope_scaling_fields),
        cmocka_unit_test(test_rope_scaling_refused),
        cmocka_unit_test(test_rope_yarn_mscale_zero),
        cmocka_unit_test(test_rope_scaling_gguf),
        cmocka_unit_test(test_rope_phi3_names),
        cmocka_unit_test(test_rope_regimes),
        cmocka_unit_test(test_rope_dynamic_steps),
        cmocka_unit_test(test_rope_llama3_gguf),
        cmocka_unit_test(test_rope_phi3_gguf),
        cmocka_unit_test(test_rope_hf_kinds),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
