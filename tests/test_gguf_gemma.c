// GGUF gemma, gemma2 and gemma3: files written by llama.cpp's own converter
// (convert_hf_to_gguf.py) from tiny random-weight Hugging Face Gemma models
// (tests/data/gguf/gemma/, tools/ref/make_gemma_gguf.py) import with llama.cpp's
// conventions — (1 + w) norm weights as stored, NEOX RoPE order, hard-coded attention scale,
// sliding-window pattern and local RoPE base — and give the logits transformers gives;
// fusekit's export writes the converter's tensors bit for bit and reads back; a model in
// Hugging Face's conventions (norm offset 1, another attention scale) exports to an
// equivalent file; broken and inconsistent files fail naming the file and the key or tensor.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

#define GEMMA_DIR FK_TEST_DATA "/gguf/gemma"

static const char *const ARCHS[] = {"gemma", "gemma2", "gemma3"};

static void model_path(char *buf, size_t n, const char *arch, const char *file) { snprintf(buf, n, "%s/%s/%s", GEMMA_DIR, arch, file); }

// Logits of tokens (1, T) under the model, malloc'd (T * V floats).
static float *logits_of(fk_model *m, const int32_t *tokens, int T) {
    CHECK(fk_model_forward(m, tokens, NULL, 1, T, false, NULL));
    size_t n = (size_t)T * (size_t)m->cfg.vocab_size;
    float *out = malloc(n * sizeof(float));
    assert_non_null(out);
    memcpy(out, fk_model_logits(m), n * sizeof(float));
    return out;
}

// The golden tokens and transformers logits beside a fixture.
static void load_golden(const char *arch, int32_t **tokens, int *T, float **logits, int64_t *V) {
    char path[512];
    model_path(path, sizeof path, arch, "golden.safetensors");
    fk_safetensors st;
    CHECK(fk_st_open(&st, path));
    const fk_st_tensor *tt = fk_st_find(&st, "tokens"), *lt = fk_st_find(&st, "logits");
    assert_non_null(tt);
    assert_non_null(lt);
    *T = (int)tt->shape[1];
    *V = lt->shape[2];
    *tokens = malloc(sizeof(int32_t) * (size_t)*T);
    *logits = malloc(sizeof(float) * (size_t)(*T * *V));
    memcpy(*tokens, tt->data, sizeof(int32_t) * (size_t)*T);
    memcpy(*logits, lt->data, sizeof(float) * (size_t)(*T * *V));
    fk_st_close(&st);
}

static double max_abs_diff(const float *a, const float *b, int64_t n, double *scale) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    if (scale) *scale = s;
    return d;
}

// ------------------------------------------------------------------ import

static void test_import_config(void **s) {
    (void)s;
    char path[512];
    fk_model m;
    fk_tokenizer *tok;
    for (int a = 0; a < 3; a++) {
        model_path(path, sizeof path, ARCHS[a], "model.gguf");
        CHECK(fk_gguf_import(path, &m, &tok));
        const fk_config *c = &m.cfg;
        assert_int_equal(c->vocab_size, 700);
        assert_int_equal(c->d_model, 32);
        assert_int_equal(c->n_head, 2);
        assert_int_equal(c->n_kv_head, 1);
        assert_int_equal(c->head_dim, 16);
        assert_int_equal(c->ffn[0], 32);
        assert_int_equal(c->max_seq, 64);
        assert_int_equal(c->mlp, FK_MLP_GEGLU);
        assert_true(c->tied);
        assert_false(c->bias_qkv || c->bias_out || c->bias_mlp || c->bias_norm);
        assert_float_equal(c->emb_scale, sqrtf(32.0f), 0);
        assert_float_equal(c->norm_offset, 0, 0);
        assert_float_equal(c->attn_scale, 0.25f, 0);
        assert_float_equal(c->norm_eps, 1e-6f, 1e-12);
        assert_int_equal(c->post_norms, a > 0);
        assert_int_equal(c->qk_norm, a == 2);
        if (a == 0) {
            assert_int_equal(c->n_layer, 2);
            assert_int_equal(c->sliding_window, 0);
            assert_float_equal(c->rope_theta, 10000.0f, 0);
        } else if (a == 1) {
            static const uint8_t want[3] = {1, 0, 1};  // llama.cpp and transformers: even layers slide
            assert_int_equal(c->n_layer, 3);
            assert_int_equal(c->sliding_window, 4);
            assert_memory_equal(c->sliding, want, 3);
            assert_float_equal(c->attn_softcap, 2.0f, 0);
            assert_float_equal(c->final_softcap, 3.0f, 0);
            assert_float_equal(c->rope_theta_local, 10000.0f, 0);
        } else {
            static const uint8_t want[7] = {1, 1, 1, 1, 1, 0, 1};  // every sixth layer global
            assert_int_equal(c->n_layer, 7);
            assert_int_equal(c->sliding_window, 4);
            assert_memory_equal(c->sliding, want, 7);
            assert_float_equal(c->attn_softcap, 0, 0);
            assert_float_equal(c->final_softcap, 0, 0);
            assert_float_equal(c->rope_theta, 1e6f, 0);
            assert_float_equal(c->rope_theta_local, 10000.0f, 0);
            assert_float_equal(c->rope_scale, 2.0f, 0);
        }
        assert_int_equal(c->bos_id, 2);
        assert_int_equal(c->eos_id, 1);
        assert_non_null(tok);
        assert_int_equal(fk_tok_vocab_size(tok), 700);
        fk_tok_free(tok);
        fk_model_free(&m);
    }
}

// The converter's file gives transformers' logits.
static void test_logits_vs_transformers(void **s) {
    (void)s;
    for (int a = 0; a < 3; a++) {
        char path[512];
        int32_t *tokens;
        float *want;
        int T;
        int64_t V;
        load_golden(ARCHS[a], &tokens, &T, &want, &V);
        model_path(path, sizeof path, ARCHS[a], "model.gguf");
        fk_model m;
        CHECK(fk_gguf_import(path, &m, NULL));
        assert_int_equal(V, m.cfg.vocab_size);
        float *got = logits_of(&m, tokens, T);
        double scale, d = max_abs_diff(got, want, T * V, &scale);
        print_message("%s: max |fusekit - transformers| = %.3g (logits up to %.3g)\n", ARCHS[a], d, scale);
        assert_true(d <= 1e-4 * fmax(1.0, scale));
        // The KV-cache path gives the same last-position logits.
        float *step = malloc(sizeof(float) * (size_t)V);
        CHECK(fk_model_step(&m, tokens, T, 0, step));
        assert_true(max_abs_diff(step, want + (int64_t)(T - 1) * V, V, NULL) <= 1e-4 * fmax(1.0, scale));
        free(step);
        free(got);
        free(want);
        free(tokens);
        fk_model_free(&m);
    }
}

// ------------------------------------------------------------------ export

// Tensor data of two GGUF files equal byte for byte (same names, types, shapes, bytes), and the
// architecture keys that llama.cpp reads equal.
static void assert_same_gguf(const char *a_path, const char *b_path, const char *arch) {
    fk_gguf a, b;
    CHECK(fk_gguf_open(a_path, &a));
    CHECK(fk_gguf_open(b_path, &b));
    assert_int_equal(a.n_tensors, b.n_tensors);
    for (int64_t i = 0; i < a.n_tensors; i++) {
        const fk_gguf_tensor *x = &a.tensors[i];
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)x->name.n, x->name.s);
        const fk_gguf_tensor *y = fk_gguf_find_tensor(&b, name);
        if (!y) fail_msg("%s: tensor %s is not in %s", a_path, name, b_path);
        if (x->ggml_type != y->ggml_type || x->n_dims != y->n_dims || x->nbytes != y->nbytes ||
            memcmp(x->dims, y->dims, sizeof(uint64_t) * x->n_dims) != 0 || memcmp(x->data, y->data, x->nbytes) != 0)
            fail_msg("tensor %s differs between %s and %s", name, a_path, b_path);
    }
    static const char *const keys[] = {"context_length", "embedding_length", "block_count", "feed_forward_length",
                                       "attention.head_count", "attention.head_count_kv", "attention.key_length",
                                       "attention.value_length", "attention.layer_norm_rms_epsilon", "rope.freq_base",
                                       "attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping",
                                       "rope.freq_base_swa", "rope.scaling.factor"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        char key[128];
        snprintf(key, sizeof key, "%s.%s", arch, keys[k]);
        bool ha = fk_gguf_find(&a, key) != NULL, hb = fk_gguf_find(&b, key) != NULL;
        double va = 0, vb = 0;
        if (ha) CHECK(fk_gguf_get_f64(&a, key, &va));
        if (hb) CHECK(fk_gguf_get_f64(&b, key, &vb));
        // the RoPE bases: the converter may omit one where llama.cpp's default (10000) holds
        if (!strncmp(keys[k], "rope.freq_base", 14) && ha != hb && (ha ? va : vb) == 10000.0) continue;
        if (ha != hb || va != vb) fail_msg("key %s: %s has %s%g, %s has %s%g", key, a_path, ha ? "" : "none ", va, b_path, hb ? "" : "none ", vb);
    }
    fk_gguf_close(&a);
    fk_gguf_close(&b);
}

// Import -> export in BF16 writes the converter's tensors bit for bit (the fixtures' matrices
// are BF16, norms F32); F32 export -> import gives the same weights and logits.
static void test_export_roundtrip(void **s) {
    (void)s;
    for (int a = 0; a < 3; a++) {
        char path[512], out[512];
        model_path(path, sizeof path, ARCHS[a], "model.gguf");
        fk_model m, r;
        fk_tokenizer *tok;
        CHECK(fk_gguf_import(path, &m, &tok));
        snprintf(out, sizeof out, "%s", tpath("bf16.gguf"));
        fk_gguf_export_stats stats;
        CHECK(fk_gguf_export(&m, tok, out, FK_DT_BF16, "t", &stats));
        assert_string_equal(stats.arch, ARCHS[a]);
        assert_same_gguf(path, out, ARCHS[a]);
        snprintf(out, sizeof out, "%s", tpath("f32.gguf"));
        CHECK(fk_gguf_export(&m, tok, out, FK_DT_F32, "t", NULL));
        fk_tokenizer *tok2;
        CHECK(fk_gguf_import(out, &r, &tok2));
        assert_true(fk_tok_fingerprint(tok) == fk_tok_fingerprint(tok2));
        assert_int_equal(r.n_floats, m.n_floats);
        assert_memory_equal(r.w, m.w, sizeof(float) * (size_t)m.n_floats);
        assert_memory_equal(&r.cfg, &m.cfg, sizeof m.cfg);
        fk_tok_free(tok);
        fk_tok_free(tok2);
        fk_model_free(&r);
        fk_model_free(&m);
    }
}

// A model in Hugging Face's conventions (RMSNorm (1 + w) with norm_offset 1, an attention scale
// that is not llama.cpp's) exports to a file whose import computes the same logits.
static void test_export_hf_conventions(void **s) {
    (void)s;
    for (int a = 0; a < 3; a++) {
        char path[512];
        model_path(path, sizeof path, ARCHS[a], "model.gguf");
        fk_model m, h, r;
        CHECK(fk_gguf_import(path, &m, NULL));
        fk_config c = m.cfg;
        c.norm_offset = 1.0f;
        c.attn_scale = 0.3f;
        CHECK(fk_model_init(&h, &c));
        memcpy(h.w, m.w, sizeof(float) * (size_t)m.n_floats);
        for (int i = 0; i < h.n_params; i++) {  // stored 1 + w -> w; queries rescaled so scores stay
            const fk_param *p = &h.params[i];
            bool norm = p->kind == FK_P_LN1_W || p->kind == FK_P_LN2_W || p->kind == FK_P_LNF_W || p->kind == FK_P_ATTN_POST_W ||
                        p->kind == FK_P_FFN_POST_W || p->kind == FK_P_Q_NORM_W || p->kind == FK_P_K_NORM_W;
            if (norm)
                for (int64_t j = 0; j < p->numel; j++) h.w[p->offset + j] -= 1.0f;
        }
        int32_t tokens[9] = {5, 17, 300, 42, 8, 650, 99, 3, 120};
        float *want = logits_of(&m, tokens, 9);
        float *hl = logits_of(&h, tokens, 9);
        double scale, d_h = max_abs_diff(hl, want, 9 * c.vocab_size, &scale);
        assert_true(d_h > 1e-3);  // the scale changed the model...
        CHECK(fk_gguf_export(&h, NULL, tpath("hf.gguf"), FK_DT_F32, NULL, NULL));
        CHECK(fk_gguf_import(tpath("hf.gguf"), &r, NULL));
        assert_float_equal(r.cfg.norm_offset, 0, 0);
        assert_float_equal(r.cfg.attn_scale, 0.25f, 0);
        float *got = logits_of(&r, tokens, 9);
        double d = max_abs_diff(got, hl, 9 * c.vocab_size, &scale);  // ...and the file keeps it
        print_message("%s: HF conventions exported: max logit difference %.3g (logits up to %.3g)\n", ARCHS[a], d, scale);
        assert_true(d <= 1e-4 * fmax(1.0, scale));
        free(want);
        free(hl);
        free(got);
        fk_model_free(&m);
        fk_model_free(&h);
        fk_model_free(&r);
    }
}

static void expect_export_error(const fk_config *c, const char *needle) {
    const char *arch;
    fk_status st = fk_gguf_model_arch(c, &arch);
    if (st != FK_ERR_UNSUPPORTED || !strstr(fk_last_error(), needle))
        fail_msg("export of the config: status %d, message '%s' (expected one naming '%s')", st, fk_last_error(), needle);
}

static void test_unsupported_export(void **s) {
    (void)s;
    fk_model m;
    char path[512];
    model_path(path, sizeof path, "gemma2", "model.gguf");
    CHECK(fk_gguf_import(path, &m, NULL));
    fk_config c = m.cfg;
    c.emb_scale = 0;
    expect_export_error(&c, "embedding scale");
    c = m.cfg;
    c.attn_softcap = 0;
    expect_export_error(&c, "soft-caps");
    c = m.cfg;
    c.tied = false;
    expect_export_error(&c, "untied");
    c = m.cfg;
    c.rope_scale = 4;
    expect_export_error(&c, "RoPE scaling");
    c = m.cfg;
    c.ffn[1] = 16;
    expect_export_error(&c, "per-layer");
    c = m.cfg;
    c.mlp = FK_MLP_SWIGLU;  // a llama model with a Gemma switch
    expect_export_error(&c, "embedding scale");
    c.post_norms = false;
    c.emb_scale = 0;
    c.attn_softcap = c.final_softcap = 0;
    c.sliding_window = 0;
    c.norm_offset = 0.5f;
    expect_export_error(&c, "offset");
    fk_model_free(&m);
}

// A gemma2 model with its own sliding pattern and local base writes the pattern and base keys.
static void test_export_pattern(void **s) {
    (void)s;
    fk_model m, r;
    char path[512];
    model_path(path, sizeof path, "gemma2", "model.gguf");
    CHECK(fk_gguf_import(path, &m, NULL));
    m.cfg.sliding[0] = 0;
    m.cfg.sliding[1] = 1;
    m.cfg.sliding[2] = 1;
    m.cfg.rope_theta_local = 500.0f;
    CHECK(fk_gguf_export(&m, NULL, tpath("pat.gguf"), FK_DT_F32, NULL, NULL));
    fk_gguf g;
    CHECK(fk_gguf_open(tpath("pat.gguf"), &g));
    const fk_gguf_kv *kv = fk_gguf_find(&g, "gemma2.attention.sliding_window_pattern");
    assert_non_null(kv);
    assert_int_equal(kv->elem_type, FK_GGUF_BOOL);
    assert_int_equal(kv->count, 3);
    fk_gguf_close(&g);
    CHECK(fk_gguf_import(tpath("pat.gguf"), &r, NULL));
    assert_memory_equal(r.cfg.sliding, m.cfg.sliding, 3);
    assert_float_equal(r.cfg.rope_theta_local, 500.0f, 0);
    fk_model_free(&r);
    fk_model_free(&m);
}

// ------------------------------------------------------------------ broken files

typedef struct {
    const char *drop_key;
    const char *u32_key;   // set (or add) this key to u32_val
    uint32_t u32_val;
    const char *str_key;   // set (or add) this key to str_val
    const char *str_val;
    const char *drop_tensor;
    const char *arr_key;   // set this key to an array of arr_n booleans
    int arr_n;
} mutation;

static void rewrite(const char *src, const char *dst, const mutation *mu) {
    fk_gguf g;
    CHECK(fk_gguf_open(src, &g));
    fk_gguf_writer *w = fk_gguf_writer_new();
    for (int64_t i = 0; i < g.n_kv; i++) {
        const fk_gguf_kv *kv = &g.kvs[i];
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.n, kv->key.s);
        if ((mu->drop_key && !strcmp(key, mu->drop_key)) || (mu->u32_key && !strcmp(key, mu->u32_key)) ||
            (mu->str_key && !strcmp(key, mu->str_key)) || (mu->arr_key && !strcmp(key, mu->arr_key)))
            continue;
        if (kv->type == FK_GGUF_ARRAY && kv->elem_type == FK_GGUF_STRING) {
            const char **ss = malloc(kv->count * sizeof *ss);
            uint64_t *ls = malloc(kv->count * sizeof *ls);
            for (uint64_t j = 0; j < kv->count; j++) { ss[j] = kv->strs[j].s; ls[j] = kv->strs[j].n; }
            CHECK(fk_gguf_set_arr_str(w, key, ss, ls, kv->count));
            free(ss);
            free(ls);
        } else if (kv->type == FK_GGUF_ARRAY) {
            CHECK(fk_gguf_set_arr(w, key, kv->elem_type, kv->data, kv->count));
        } else if (kv->type == FK_GGUF_STRING) {
            CHECK(fk_gguf_set_str(w, key, kv->strs[0].s, kv->strs[0].n));
        } else if (kv->type == FK_GGUF_U32) {
            uint32_t u;
            memcpy(&u, kv->data, 4);
            CHECK(fk_gguf_set_u32(w, key, u));
        } else if (kv->type == FK_GGUF_F32) {
            float f;
            memcpy(&f, kv->data, 4);
            CHECK(fk_gguf_set_f32(w, key, f));
        } else if (kv->type == FK_GGUF_BOOL) {
            CHECK(fk_gguf_set_bool(w, key, *(const unsigned char *)kv->data != 0));
        } else {
            fail_msg("rewrite: key %s has type %d", key, kv->type);
        }
    }
    if (mu->u32_key) CHECK(fk_gguf_set_u32(w, mu->u32_key, mu->u32_val));
    if (mu->str_key) CHECK(fk_gguf_set_str(w, mu->str_key, mu->str_val, strlen(mu->str_val)));
    if (mu->arr_key) {
        uint8_t b[16] = {1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0};
        CHECK(fk_gguf_set_arr(w, mu->arr_key, FK_GGUF_BOOL, b, (uint64_t)mu->arr_n));
    }
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const fk_gguf_tensor *t = &g.tensors[i];
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.s);
        if (mu->drop_tensor && !strcmp(name, mu->drop_tensor)) continue;
        CHECK(fk_gguf_add_tensor(w, name, t->ggml_type, t->n_dims, t->dims, t->data, t->nbytes));
    }
    CHECK(fk_gguf_writer_write(w, dst));
    fk_gguf_writer_free(w);
    fk_gguf_close(&g);
}

static void expect_import_error(const char *path, fk_status want, const char *n1, const char *n2) {
    fk_model m;
    fk_tokenizer *t = NULL;
    fk_status st = fk_gguf_import(path, &m, &t);
    const char *e = fk_last_error();
    if (st != want || !strstr(e, path) || !strstr(e, n1) || (n2 && !strstr(e, n2)))
        fail_msg("import of %s: status %d, message '%s' (expected %d naming the file, '%s'%s%s)", path, st, e, want, n1,
                 n2 ? " and " : "", n2 ? n2 : "");
    assert_null(t);
}

static void test_broken_files(void **s) {
    (void)s;
    char src[512], bad[512];
    model_path(src, sizeof src, "gemma3", "model.gguf");
    snprintf(bad, sizeof bad, "%s", tpath("bad.gguf"));
    static const struct { mutation mu; fk_status st; const char *n1, *n2; } cases[] = {
        // head_dim * heads disagrees with attn_q's rows
        {{.u32_key = "gemma3.attention.key_length", .u32_val = 8}, FK_ERR_UNSUPPORTED, "key_length 8 != value_length 16", NULL},
        {{.u32_key = "gemma3.attention.head_count", .u32_val = 4}, FK_ERR_FORMAT, "blk.0.attn_q.weight", "shape"},
        {{.u32_key = "gemma3.feed_forward_length", .u32_val = 48}, FK_ERR_FORMAT, "blk.0.ffn_gate.weight", "shape"},
        {{.drop_key = "gemma3.attention.layer_norm_rms_epsilon"}, FK_ERR_FORMAT, "gemma3.attention.layer_norm_rms_epsilon", "missing"},
        {{.drop_key = "gemma3.embedding_length"}, FK_ERR_FORMAT, "gemma3.embedding_length", "missing"},
        {{.drop_tensor = "blk.3.attn_q_norm.weight"}, FK_ERR_FORMAT, "blk.3.attn_q_norm.weight", "missing"},
        {{.drop_tensor = "blk.0.post_ffw_norm.weight"}, FK_ERR_FORMAT, "blk.0.post_ffw_norm.weight", "missing"},
        {{.arr_key = "gemma3.attention.sliding_window_pattern", .arr_n = 5}, FK_ERR_FORMAT, "gemma3.attention.sliding_window_pattern", "7"},
        {{.str_key = "gemma3.rope.scaling.type", .str_val = "yarn"}, FK_ERR_UNSUPPORTED, "gemma3.rope.scaling.type", "yarn"},
        {{.str_key = "general.architecture", .str_val = "gemma3n"}, FK_ERR_UNSUPPORTED, "general.architecture", "gemma3n"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        rewrite(src, bad, &cases[k].mu);
        expect_import_error(bad, cases[k].st, cases[k].n1, cases[k].n2);
    }
}

// llama.cpp's defaults where keys are absent, and the keys that override them.
static void test_keys_and_defaults(void **s) {
    (void)s;
    char src[512], f[512];
    fk_model m;
    snprintf(f, sizeof f, "%s", tpath("k.gguf"));
    model_path(src, sizeof src, "gemma2", "model.gguf");
    mutation drop_caps = {.drop_key = "gemma2.attn_logit_softcapping"};
    rewrite(src, f, &drop_caps);
    CHECK(fk_gguf_import(f, &m, NULL));
    assert_float_equal(m.cfg.attn_softcap, 50.0f, 0);  // gemma2's default
    fk_model_free(&m);
    mutation drop_window = {.drop_key = "gemma2.attention.sliding_window"};
    rewrite(src, f, &drop_window);
    CHECK(fk_gguf_import(f, &m, NULL));
    assert_int_equal(m.cfg.sliding_window, 4096);
    fk_model_free(&m);
    model_path(src, sizeof src, "gemma3", "model.gguf");
    mutation period = {.u32_key = "gemma3.attention.sliding_window_pattern", .u32_val = 3};  // a period, not an array
    rewrite(src, f, &period);
    CHECK(fk_gguf_import(f, &m, NULL));
    static const uint8_t want3[7] = {1, 1, 0, 1, 1, 0, 1};
    assert_memory_equal(m.cfg.sliding, want3, 7);
    fk_model_free(&m);
    mutation no_swa = {.drop_key = "gemma3.attention.sliding_window"};  // gemma3 without the key: no sliding layers
    rewrite(src, f, &no_swa);
    CHECK(fk_gguf_import(f, &m, NULL));
    assert_int_equal(m.cfg.sliding_window, 0);
    for (int l = 0; l < 7; l++) assert_int_equal(m.cfg.sliding[l], 0);
    fk_model_free(&m);
    mutation no_base = {.drop_key = "gemma3.rope.freq_base_swa"};  // llama.cpp's gemma3 local base
    rewrite(src, f, &no_base);
    CHECK(fk_gguf_import(f, &m, NULL));
    assert_float_equal(m.cfg.rope_theta_local, 10000.0f, 0);
    fk_model_free(&m);
    mutation scale_none = {.str_key = "gemma3.rope.scaling.type", .str_val = "none"};
    rewrite(src, f, &scale_none);
    CHECK(fk_gguf_import(f, &m, NULL));
    assert_float_equal(m.cfg.rope_scale, 0, 0);
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_config),   cmocka_unit_test(test_logits_vs_transformers), cmocka_unit_test(test_export_roundtrip),
        cmocka_unit_test(test_export_hf_conventions), cmocka_unit_test(test_unsupported_export), cmocka_unit_test(test_export_pattern),
        cmocka_unit_test(test_broken_files),    cmocka_unit_test(test_keys_and_defaults),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
