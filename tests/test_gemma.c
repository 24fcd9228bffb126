// Gemma-family Hugging Face folders (model_type gemma, gemma2, gemma3_text, gemma3): the
// reference folders of tools/ref/make_gemma_golden.py load with the config transformers reads
// and reproduce its logits (test_model.c checks gradients and training on them); fusekit saves
// them back with transformers' tensor names, identical weights and a config that reads back to
// the same model (tools/ref/README.md: transformers itself loaded those saved folders and gave
// the reference logits); a model with llama.cpp's norm convention (norm_offset 0) saves as
// Hugging Face's (1 + w); configs written by transformers 4.x (rope_theta, rope_local_base_freq,
// sliding_window_pattern) and 5.x (rope_parameters, layer_types) parse alike; a Gemma 3 folder
// with a vision tower loads its text model; inconsistent configs fail naming config.json and the key.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define TOL_LOGITS 1e-4

static const char *names[] = {"gemma", "gemma2", "gemma3"};

static void golden_dir(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/golden/%s", FK_TEST_DATA, name); }

// The reference inputs (tokens[:, :T]) and logits of a golden folder.
typedef struct { fk_safetensors st; int B, T; int32_t *x; const float *logits; } gold;

static void gold_open(gold *g, const char *name) {
    char dir[512], path[600];
    golden_dir(dir, sizeof dir, name);
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    CHECK(fk_st_open(&g->st, path));
    const fk_st_tensor *tok = fk_st_find(&g->st, "tokens"), *lg = fk_st_find(&g->st, "logits");
    assert_non_null(tok);
    assert_non_null(lg);
    g->B = (int)tok->shape[0];
    g->T = (int)tok->shape[1] - 1;
    g->x = malloc((size_t)(g->B * g->T) * sizeof(int32_t));
    for (int b = 0; b < g->B; b++)
        for (int i = 0; i < g->T; i++) g->x[b * g->T + i] = ((const int32_t *)tok->data)[b * (g->T + 1) + i];
    g->logits = lg->data;
}

static void gold_close(gold *g) { free(g->x); fk_st_close(&g->st); }

// Max |logits - reference| of a model on the golden tokens.
static double logits_err(fk_model *m, const gold *g) {
    CHECK(fk_model_forward(m, g->x, NULL, g->B, g->T, false, NULL));
    const float *lg = fk_model_logits(m);
    double e = 0;
    for (int64_t i = 0; i < (int64_t)g->B * g->T * m->cfg.vocab_size; i++) e = fmax(e, fabs((double)lg[i] - g->logits[i]));
    return e;
}

// The config each reference folder declares, as fk_config switches.
static void test_configs(void **s) {
    (void)s;
    fk_model m;
    char dir[512];
    golden_dir(dir, sizeof dir, "gemma");
    CHECK(fk_hf_load(&m, dir));
    fk_config *c = &m.cfg;
    assert_int_equal(fk_config_arch(c), FK_ARCH_GEMMA);
    assert_true(c->mlp == FK_MLP_GEGLU && c->tied && c->head_dim == 8 && c->d_model == 16 && c->n_kv_head == 2);
    assert_true(c->emb_scale == 4.0f && c->norm_offset == 1 && !c->post_norms && !c->qk_norm && c->attn_scale == 0);
    assert_true(c->final_softcap == 0 && c->attn_softcap == 0 && c->sliding[0] == 0 && c->norm_eps == 1e-6f);
    fk_model_free(&m);
    golden_dir(dir, sizeof dir, "gemma2");
    CHECK(fk_hf_load(&m, dir));
    assert_int_equal(fk_config_arch(c), FK_ARCH_GEMMA2);
    assert_true(c->post_norms && !c->qk_norm && c->attn_scale == (float)pow(10, -0.5) && c->attn_softcap == 2.0f && c->final_softcap == 1.5f);
    assert_true(c->sliding_window == 5 && c->sliding[0] == 1 && c->sliding[1] == 0 && c->sliding[2] == 1 && c->sliding[3] == 0);
    assert_true(c->rope_theta == 10000.0f && c->rope_theta_local == 0 && c->rope_scale == 0);
    fk_model_free(&m);
    golden_dir(dir, sizeof dir, "gemma3");
    CHECK(fk_hf_load(&m, dir));
    assert_int_equal(fk_config_arch(c), FK_ARCH_GEMMA3);
    assert_true(c->post_norms && c->qk_norm && c->attn_scale == 0.25f && c->attn_softcap == 0 && c->final_softcap == 0 && !c->tied);
    assert_true(c->sliding_window == 6 && c->sliding[0] == 1 && c->sliding[1] == 1 && c->sliding[2] == 0 && c->sliding[3] == 1);
    assert_true(c->rope_theta == 1e6f && c->rope_theta_local == 1e4f && c->rope_scale == 4.0f && c->n_kv_head == 1);
    assert_non_null(m.rope_cos_local);
    fk_model_free(&m);
}

// Save -> load: same tensors bit for bit, the same config, the reference logits.
static void test_round_trip(void **s) {
    (void)s;
    for (int k = 0; k < 3; k++) {
        fk_model m, r;
        char dir[512];
        golden_dir(dir, sizeof dir, names[k]);
        CHECK(fk_hf_load(&m, dir));
        char *out = tpath(names[k]);
        CHECK(fk_hf_save(&m, out, FK_DT_F32));
        CHECK(fk_hf_load(&r, out));
        assert_int_equal(fk_config_arch(&r.cfg), fk_config_arch(&m.cfg));
        assert_memory_equal(&r.cfg, &m.cfg, sizeof m.cfg);
        assert_int_equal(r.n_floats, m.n_floats);
        assert_memory_equal(r.w, m.w, (size_t)m.n_floats * sizeof(float));
        // the files hold transformers' names: the reference's model.safetensors has the same set
        fk_safetensors a, b;
        char pa[600], pb[600];
        snprintf(pa, sizeof pa, "%s/model.safetensors", dir);
        snprintf(pb, sizeof pb, "%s/model.safetensors", out);
        CHECK(fk_st_open(&a, pa));
        CHECK(fk_st_open(&b, pb));
        assert_int_equal(a.n_tensors, b.n_tensors);
        for (int i = 0; i < a.n_tensors; i++) {
            const fk_st_tensor *t = fk_st_find(&b, a.tensors[i].name);
            if (!t) fail_msg("%s: saved folder lacks %s", names[k], a.tensors[i].name);
            assert_int_equal(t->nbytes, a.tensors[i].nbytes);
            assert_memory_equal(t->data, a.tensors[i].data, t->nbytes);
        }
        fk_st_close(&a); fk_st_close(&b);
        gold g;
        gold_open(&g, names[k]);
        double e = logits_err(&r, &g);
        print_message("  %s: saved and reloaded, logits max abs error %.2e\n", names[k], e);
        assert_true(e < TOL_LOGITS);
        gold_close(&g);
        fk_model_free(&m); fk_model_free(&r);
    }
}

// The evaluation protocol after BOS (a tokenizer that adds one: Gemma): each golden row is BOS
// (its first token) and T - 1 ids in one window; the loss fk_eval_data reports is the mean of
// -log softmax(transformers' logits)[next id] over the T - 1 ids, each predicted once (the first
// from BOS alone), and bits per byte follow from the bytes declared.
static void test_eval_bos(void **s) {
    (void)s;
    for (int k = 0; k < 3; k++) {
        fk_model m;
        char dir[512];
        golden_dir(dir, sizeof dir, names[k]);
        CHECK(fk_hf_load(&m, dir));
        gold g;
        gold_open(&g, names[k]);
        const int32_t *tok = fk_st_find(&g.st, "tokens")->data;
        int64_t V = m.cfg.vocab_size;
        for (int b = 0; b < g.B; b++) {
            int32_t ids[256];
            assert_true(g.T - 1 <= 256);
            for (int i = 0; i < g.T - 1; i++) ids[i] = tok[b * (g.T + 1) + 1 + i];
            fk_token_data d = {.ids = ids, .n = g.T - 1, .vocab_size = V, .text_bytes = 3 * (g.T - 1), .bos_first = true,
                               .bos_id = tok[b * (g.T + 1)]};
            double want = 0;
            for (int t = 0; t < g.T - 1; t++) {
                const float *z = g.logits + ((int64_t)b * g.T + t) * V;
                double mx = z[0], se = 0;
                for (int64_t v = 1; v < V; v++) mx = fmax(mx, z[v]);
                for (int64_t v = 0; v < V; v++) se += exp(z[v] - mx);
                want += mx + log(se) - z[ids[t]];
            }
            want /= g.T - 1;
            fk_eval_result r;
            CHECK(fk_eval_data(&m, &d, g.T, 2, 0, &r));
            assert_int_equal(r.tokens, g.T - 1);
            assert_true(fabs(r.loss - want) < 1e-4);
            assert_true(fabs(r.bpb - want / log(2.0) / 3.0) < 1e-4);
            // the same ids without BOS: a different protocol, so a different loss (the first id is not predicted)
            d.bos_first = false;
            CHECK(fk_eval_data(&m, &d, g.T, 2, 0, &r));
            assert_int_equal(r.tokens, g.T - 2);
        }
        gold_close(&g);
        fk_model_free(&m);
    }
}

// llama.cpp's GGUF stores Gemma's norm scales as 1 + w (norm_offset 0): saved to a folder,
// every norm weight is written as w - 1, the folder loads back with norm_offset 1 and computes
// the same logits.
static void test_norm_offset_zero(void **s) {
    (void)s;
    for (int k = 0; k < 3; k++) {
        fk_model m, r;
        char dir[512];
        golden_dir(dir, sizeof dir, names[k]);
        CHECK(fk_hf_load(&m, dir));
        m.cfg.norm_offset = 0;
        int norms = 0;
        for (int i = 0; i < m.n_params; i++) {
            fk_param_kind kd = m.params[i].kind;
            if (kd == FK_P_LN1_W || kd == FK_P_LN2_W || kd == FK_P_LNF_W || kd == FK_P_ATTN_POST_W || kd == FK_P_FFN_POST_W ||
                kd == FK_P_Q_NORM_W || kd == FK_P_K_NORM_W) {
                for (int64_t j = 0; j < m.params[i].numel; j++) m.w[m.params[i].offset + j] += 1;
                norms++;
            }
        }
        assert_int_equal(norms, k == 0 ? 5 : k == 1 ? 17 : 25);
        gold g;
        gold_open(&g, names[k]);
        assert_true(logits_err(&m, &g) < TOL_LOGITS);  // the same function with the other convention
        assert_int_equal(fk_config_arch(&m.cfg), k == 0 ? FK_ARCH_GEMMA : k == 1 ? FK_ARCH_GEMMA2 : FK_ARCH_GEMMA3);
        char *out = tpath("offset0");
        CHECK(fk_hf_save(&m, out, FK_DT_F32));
        CHECK(fk_hf_load(&r, out));
        assert_true(r.cfg.norm_offset == 1);
        double e = logits_err(&r, &g);
        print_message("  %s with norm_offset 0: saved as (1 + w), reloaded, logits max abs error %.2e\n", names[k], e);
        assert_true(e < TOL_LOGITS);
        // the saved norm weights are the reference's (HF) values up to the rounding of (w + 1) - 1
        fk_safetensors a, b;
        char pa[600];
        snprintf(pa, sizeof pa, "%s/model.safetensors", dir);
        char *pb = fk_path_join(out, "model.safetensors");
        CHECK(fk_st_open(&a, pa));
        CHECK(fk_st_open(&b, pb));
        const fk_st_tensor *ta = fk_st_find(&a, "model.norm.weight"), *tb = fk_st_find(&b, "model.norm.weight");
        for (int64_t j = 0; j < ta->numel; j++) assert_true(fabsf(((const float *)ta->data)[j] - ((const float *)tb->data)[j]) < 1e-7f);
        fk_st_close(&a); fk_st_close(&b);
        free(pb);
        gold_close(&g);
        fk_model_free(&m); fk_model_free(&r);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
        assert_int_equal(system(cmd), 0);
    }
}

// A config transformers cannot express (Gemma 2 with linear RoPE scaling and an attention scale
// that is no integer's inverse square root) saves as model_type fusekit with every switch.
static void test_fusekit_type(void **s) {
    (void)s;
    fk_model m, r;
    char dir[512], path[600];
    golden_dir(dir, sizeof dir, "gemma2");
    snprintf(path, sizeof path, "%s/config.json", dir);
    fk_config c;
    CHECK(fk_hf_config_read(path, &c));
    c.rope_scale = 2;
    c.attn_scale = 0.3f;
    c.ffn[1] = 20;
    assert_int_equal(fk_config_arch(&c), FK_ARCH_FUSEKIT);
    CHECK(fk_model_init(&m, &c));
    fk_model_init_weights(&m, 5);
    char *out = tpath("fusekit_gemma");
    CHECK(fk_hf_save(&m, out, FK_DT_F32));
    CHECK(fk_hf_load(&r, out));
    assert_memory_equal(&r.cfg, &m.cfg, sizeof m.cfg);
    assert_memory_equal(r.w, m.w, (size_t)m.n_floats * sizeof(float));
    fk_model_free(&m); fk_model_free(&r);
}

// config.json as transformers 4.5x wrote Gemma 3 270M's (rope_theta, rope_local_base_freq,
// rope_scaling null, sliding_window_pattern, no layer_types), sizes made small.
static const char *legacy_gemma3 =
    "{\"_sliding_window_pattern\": 3, \"architectures\": [\"Gemma3ForCausalLM\"], \"attention_bias\": false,"
    " \"attn_logit_softcapping\": null, \"bos_token_id\": 2, \"eos_token_id\": 1, \"final_logit_softcapping\": null,"
    " \"head_dim\": 8, \"hidden_activation\": \"gelu_pytorch_tanh\", \"hidden_size\": 16, \"intermediate_size\": 24,"
    " \"max_position_embeddings\": 64, \"model_type\": \"gemma3_text\", \"num_attention_heads\": 4, \"num_hidden_layers\": 4,"
    " \"num_key_value_heads\": 1, \"pad_token_id\": 0, \"query_pre_attn_scalar\": 16, \"rms_norm_eps\": 1e-06,"
    " \"rope_local_base_freq\": 10000.0, \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 4.0}, \"rope_theta\": 1000000.0,"
    " \"sliding_window\": 6, \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"vocab_size\": 48, \"tie_word_embeddings\": false}";

static void test_legacy_config(void **s) {
    (void)s;
    fk_config a, b;
    char dir[512];
    golden_dir(dir, sizeof dir, "gemma3");
    char *p = fk_path_join(dir, "config.json");
    CHECK(fk_hf_config_read(p, &a));  // transformers 5 (rope_parameters, layer_types)
    free(p);
    CHECK(fk_hf_config_parse(legacy_gemma3, "legacy.json", &b));
    b.bos_id = a.bos_id;
    assert_memory_equal(&a, &b, sizeof a);
    // the same model inside a Gemma 3 (vision) config's text_config
    char buf[4096];
    snprintf(buf, sizeof buf, "{\"model_type\": \"gemma3\", \"architectures\": [\"Gemma3ForConditionalGeneration\"], "
             "\"text_config\": %s, \"vision_config\": {\"model_type\": \"siglip_vision_model\"}, \"tie_word_embeddings\": false}", legacy_gemma3);
    CHECK(fk_hf_config_parse(buf, "vision.json", &b));
    b.bos_id = a.bos_id; b.eos_id = a.eos_id;
    assert_memory_equal(&a, &b, sizeof a);
    // Gemma 2 without layer_types alternates (even layers slide), defaults: caps 50 and 30
    const char *g2 = "{\"model_type\": \"gemma2\", \"vocab_size\": 48, \"hidden_size\": 16, \"intermediate_size\": 24,"
                     " \"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8,"
                     " \"sliding_window\": 4, \"query_pre_attn_scalar\": 8}";
    CHECK(fk_hf_config_parse(g2, "g2.json", &b));
    assert_true(b.sliding[0] == 1 && b.sliding[1] == 0 && b.sliding[2] == 1 && b.attn_softcap == 50 && b.final_softcap == 30);
    assert_true(b.tied && b.max_seq == 8192 && b.rope_theta == 10000.0f && b.attn_scale == (float)pow(8, -0.5));
    // Gemma 1's hidden_act "gelu" is the tanh GELU in transformers
    const char *g1 = "{\"model_type\": \"gemma\", \"vocab_size\": 48, \"hidden_size\": 16, \"intermediate_size\": 24,"
                     " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 1, \"head_dim\": 8, \"hidden_act\": \"gelu\"}";
    CHECK(fk_hf_config_parse(g1, "g1.json", &b));
    assert_true(b.mlp == FK_MLP_GEGLU && !b.post_norms && b.sliding[0] == 0);
}

// A Gemma 3 folder with a vision tower (transformers 5 names: model.language_model.*,
// model.vision_tower.*): the text model loads, the vision tensors are skipped.
static void test_vision_folder(void **s) {
    (void)s;
    char dir[512], path[600];
    golden_dir(dir, sizeof dir, "gemma3");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fk_safetensors a;
    CHECK(fk_st_open(&a, path));
    fk_st_entry *e = calloc((size_t)a.n_tensors + 1, sizeof *e);
    char (*nm)[160] = calloc((size_t)a.n_tensors + 1, sizeof *nm);
    for (int i = 0; i < a.n_tensors; i++) {
        const fk_st_tensor *t = &a.tensors[i];
        if (strncmp(t->name, "model.", 6) == 0) snprintf(nm[i], 160, "model.language_model.%s", t->name + 6);
        else snprintf(nm[i], 160, "%s", t->name);
        e[i] = (fk_st_entry){nm[i], t->dtype, t->ndim, {t->shape[0], t->shape[1]}, t->data};
    }
    static const float patch[4] = {1, 2, 3, 4};
    e[a.n_tensors] = (fk_st_entry){"model.vision_tower.patch.weight", FK_DT_F32, 1, {4}, patch};
    char *out = tpath("vision");
    CHECK(fk_mkdir_p(out));
    char *mp = fk_path_join(out, "model.safetensors"), *cp = fk_path_join(out, "config.json");
    CHECK(fk_st_write(mp, e, a.n_tensors + 1, NULL));
    char buf[4096];
    snprintf(buf, sizeof buf, "{\"model_type\": \"gemma3\", \"text_config\": %s, \"tie_word_embeddings\": false}", legacy_gemma3);
    spit(cp, buf, strlen(buf));
    fk_model m;
    CHECK(fk_hf_load(&m, out));
    gold g;
    gold_open(&g, "gemma3");
    double err = logits_err(&m, &g);
    print_message("  gemma3 with a vision tower: text model logits max abs error %.2e\n", err);
    assert_true(err < TOL_LOGITS);
    gold_close(&g);
    fk_model_free(&m);
    fk_st_close(&a);
    free(e); free(nm); free(mp); free(cp);
}

// Broken configs: the error names config.json and the key.
static void expect_error(const char *json, const char *want) {
    fk_config c;
    fk_status st = fk_hf_config_parse(json, "dir/config.json", &c);
    if (st == FK_OK) fail_msg("accepted: %s", json);
    const char *msg = fk_last_error();
    if (!strstr(msg, "dir/config.json") || !strstr(msg, want)) fail_msg("message \"%s\" lacks \"%s\"", msg, want);
    print_message("  %s\n", msg);
}

#define BASE3 "\"model_type\": \"gemma3_text\", \"vocab_size\": 48, \"hidden_size\": 16, \"intermediate_size\": 24, " \
              "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8"

static void test_bad_configs(void **s) {
    (void)s;
    expect_error("{" BASE3 ", \"layer_types\": [\"sliding_attention\", \"full_attention\"]}", "layer_types");
    expect_error("{" BASE3 ", \"layer_types\": [\"sliding_attention\", \"chunked_attention\", \"full_attention\"]}", "chunked_attention");
    expect_error("{" BASE3 ", \"layer_types\": [\"sliding_attention\", 3, \"full_attention\"]}", "layer_types[1]");
    expect_error("{" BASE3 ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}", "yarn");
    expect_error("{" BASE3 ", \"rope_parameters\": {\"full_attention\": {\"rope_type\": \"dynamic\"}}}", "rope_parameters.full_attention");
    expect_error("{" BASE3 ", \"rope_scaling\": {\"rope_type\": \"linear\"}}", "factor");
    expect_error("{" BASE3 ", \"hidden_activation\": \"silu\"}", "hidden_activation");
    expect_error("{" BASE3 ", \"hidden_activation\": \"gelu\"}", "hidden_activation");
    expect_error("{" BASE3 ", \"query_pre_attn_scalar\": 0}", "query_pre_attn_scalar");
    expect_error("{" BASE3 ", \"sliding_window_pattern\": 0}", "sliding_window_pattern");
    expect_error("{" BASE3 ", \"sliding_window\": -4}", "sliding_window");
    expect_error("{" BASE3 ", \"final_logit_softcapping\": -1.0}", "final_logit_softcapping");
    expect_error("{" BASE3 ", \"use_bidirectional_attention\": true}", "use_bidirectional_attention");
    // sizes whose products would overflow (a 2^57-position RoPE table wraps to 0 bytes)
    expect_error("{" BASE3 ", \"max_position_embeddings\": 144115188075855872}", "max_seq");
    expect_error("{" BASE3 ", \"max_position_embeddings\": 4294967296}", "max_seq");
    expect_error("{\"model_type\": \"gemma3_text\", \"vocab_size\": 48, \"hidden_size\": 16, \"intermediate_size\": 24, "
                 "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 4611686018427387904}",
                 "head_dim is 4611686018427387904");
    expect_error("{\"model_type\": \"gemma2\", \"vocab_size\": 48, \"hidden_size\": 16, \"intermediate_size\": 24, "
                 "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"head_dim\": 8, "
                 "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2.0}}", "rope_scaling");
    expect_error("{\"model_type\": \"gemma3\", \"vision_config\": {}}", "text_config");
    expect_error("{\"model_type\": \"gemma3_text\", \"hidden_size\": 16}", "missing key");
    expect_error("{\"model_type\": \"gemma3_text\", \"vocab_size\": 48, \"hidden_size\": 16, \"intermediate_size\": 24, "
                 "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 3}", "n_kv_head");
}

// head_dim * heads that disagrees with the weights: loading names the file, tensor and shapes.
static void test_bad_sizes(void **s) {
    (void)s;
    char dir[512];
    golden_dir(dir, sizeof dir, "gemma2");
    char *p = fk_path_join(dir, "config.json"), *json = NULL;
    CHECK(fk_read_file(p, &json, NULL));
    free(p);
    char *hd = strstr(json, "\"head_dim\": 8");
    assert_non_null(hd);
    hd[12] = '6';  // head_dim 6: q_proj would be (24, 16), o_proj (16, 24)
    char *out = tpath("bad_head_dim");
    CHECK(fk_mkdir_p(out));
    char *cp = fk_path_join(out, "config.json"), *mp = fk_path_join(out, "model.safetensors"), *src = fk_path_join(dir, "model.safetensors");
    spit(cp, json, strlen(json));
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", src, mp);
    assert_int_equal(system(cmd), 0);
    fk_model m;
    fk_status st = fk_hf_load(&m, out);
    assert_int_not_equal(st, FK_OK);
    print_message("  %s\n", fk_last_error());
    assert_non_null(strstr(fk_last_error(), "model.layers.0.self_attn.q_proj.weight"));
    assert_non_null(strstr(fk_last_error(), "config.json implies"));
    free(json); free(cp); free(mp); free(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_configs),     cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_norm_offset_zero),
        cmocka_unit_test(test_fusekit_type), cmocka_unit_test(test_legacy_config), cmocka_unit_test(test_vision_folder),
        cmocka_unit_test(test_bad_configs), cmocka_unit_test(test_bad_sizes),     cmocka_unit_test(test_eval_bos),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
