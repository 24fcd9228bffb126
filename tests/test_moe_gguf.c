// GGUF export and import of mixtures of experts in llama.cpp's layouts (src/models/{llama,qwen2moe,
// qwen3moe,olmoe}.cpp, convert_hf_to_gguf.py): tiny Mixtral-, Qwen2-MoE-, Qwen3-MoE- and OLMoE-like
// models round-trip exactly in F32 (config, every weight, logits); the experts are 3-D tensors
// ffn_{gate,up,down}_exps of ggml shape [C, F, E] / [F, C, E] whose slice e is expert e (checked
// against the arena with the file reader); older per-expert Mixtral files (blk.L.ffn_gate.E.weight)
// import to the same model; a Q8_0 file imported frozen (experts read where the file stores them)
// gives the logits of the same file decoded into the arena; hostile keys and shapes are refused
// naming the key or tensor.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fusekit/gguf.h"
#include "fusekit/gguf_model.h"
#include "fusekit/model.h"
#include "fusekit/quants.h"
#include "test_util.h"

enum { MIXTRAL, QWEN2MOE, QWEN3MOE, OLMOE, N_KINDS };
static const char *kind_arch[N_KINDS] = {"llama", "qwen2moe", "qwen3moe", "olmoe"};

// A tiny model of each kind (d 32, 2 layers, 4 experts of width 32, top 2): its switches as the
// family's llama.cpp graph computes them; routers scaled so that top-2 choices have clear margins.
static void moe_model(fk_model *m, int kind) {
    fk_config c;
    fk_config_llama(&c, 64, 32, 2, 4, kind == OLMOE ? 4 : 2, 32, 64);
    c.n_expert = 4;
    c.n_expert_used = 2;
    c.expert_ffn = 32;
    c.expert_norm = kind == MIXTRAL || kind == QWEN3MOE;
    c.shared_gate = kind == QWEN2MOE;
    c.bias_qkv = kind == QWEN2MOE;
    c.qk_norm = kind == QWEN3MOE || kind == OLMOE;
    c.qk_norm_whole = kind == OLMOE;
    c.tied = false;
    for (int64_t l = 0; l < c.n_layer; l++) {
        c.moe[l] = 1;
        c.ffn[l] = kind == QWEN2MOE ? 64 : 0;  // Qwen2-MoE's shared expert
    }
    CHECK(fk_model_init(m, &c));
    fk_model_init_weights(m, 11 + (uint64_t)kind);
    for (int i = 0; i < m->n_params; i++) {
        fk_param *p = &m->params[i];
        float s = p->kind == FK_P_ROUTER_W ? 40.0f : p->kind == FK_P_SHARED_GATE_W ? 20.0f : 1.0f;
        for (int64_t j = 0; s != 1.0f && j < p->numel; j++) m->w[p->offset + j] *= s;
    }
}

// Every table entry of a has the same name and bits in b.
static void same_weights(const fk_model *a, const fk_model *b) {
    assert_int_equal(a->n_params, b->n_params);
    for (int i = 0; i < a->n_params; i++) {
        const fk_param *p = &a->params[i];
        const fk_param *q = fk_model_find_param(b, p->name);
        if (!q) fail_msg("%s is missing", p->name);
        assert_int_equal(p->numel, q->numel);
        if (memcmp(a->w + p->offset, b->w + q->offset, (size_t)p->numel * sizeof(float)) != 0) fail_msg("%s differs", p->name);
    }
}

static const int32_t TOK[2 * 8] = {1, 5, 9, 33, 2, 60, 17, 4, 8, 3, 41, 12, 7, 63, 20, 6};

// The largest difference between the logits of a and b on TOK, relative to the largest |logit| of a.
static double logits_diff(fk_model *a, fk_model *b) {
    float la, lb;
    CHECK(fk_model_forward(a, TOK, NULL, 2, 8, false, &la));
    CHECK(fk_model_forward(b, TOK, NULL, 2, 8, false, &lb));
    const float *x = fk_model_logits(a), *y = fk_model_logits(b);
    double d = 0, big = 0;
    for (int64_t i = 0; i < 2 * 8 * a->cfg.vocab_size; i++) {
        d = fmax(d, fabs((double)x[i] - y[i]));
        big = fmax(big, fabs((double)x[i]));
    }
    return d / big;
}

static void expect_same_config(const fk_config *a, const fk_config *b) {
    int64_t l;
    const fk_config_field *f = fk_config_diff(a, b, &l);
    if (f) fail_msg("%s differs (layer %lld)", f->name, (long long)l);
}

// ------------------------------------------------------------------ rewriting a file

enum { RW_COPY, RW_Q8_0, RW_SPLIT };  // tensors as they are; matrices as Q8_0; the experts one 2-D tensor each
typedef struct { const char *key; int64_t val; } patch;  // an integer key's new value (< 0: dropped)

static void copy_key(fk_gguf_writer *w, const fk_gguf_kv *kv, const patch *pt, int np) {
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)kv->key.n, kv->key.s);
    for (int i = 0; i < np; i++)
        if (strcmp(pt[i].key, key) == 0) {
            if (pt[i].val >= 0) CHECK(fk_gguf_set_u32(w, key, (uint32_t)pt[i].val));
            return;
        }
    const unsigned char *d = kv->data;
    uint32_t u;
    float f;
    switch (kv->type) {
    case FK_GGUF_U32: memcpy(&u, d, 4); CHECK(fk_gguf_set_u32(w, key, u)); break;
    case FK_GGUF_F32: memcpy(&f, d, 4); CHECK(fk_gguf_set_f32(w, key, f)); break;
    case FK_GGUF_BOOL: CHECK(fk_gguf_set_bool(w, key, d[0] != 0)); break;
    case FK_GGUF_STRING: CHECK(fk_gguf_set_str(w, key, kv->strs[0].s, kv->strs[0].n)); break;
    default: fail_msg("key %s: type %d not copied", key, (int)kv->type);
    }
}

// Writes src again as dst: its keys (patched), its tensors per mode.
static void rewrite(const char *src, const char *dst, const patch *pt, int np, int mode) {
    fk_gguf g;
    CHECK(fk_gguf_open(src, &g));
    fk_gguf_writer *w = fk_gguf_writer_new();
    for (int64_t i = 0; i < g.n_kv; i++) copy_key(w, &g.kvs[i], pt, np);
    for (int i = 0; i < np; i++)
        if (!fk_gguf_find(&g, pt[i].key) && pt[i].val >= 0) CHECK(fk_gguf_set_u32(w, pt[i].key, (uint32_t)pt[i].val));
    void *bufs[256];
    int nb = 0;
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const fk_gguf_tensor *t = &g.tensors[i];
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.s);
        char *exps = strstr(name, "_exps.weight");
        if (mode == RW_SPLIT && exps) {  // blk.L.ffn_gate_exps.weight -> blk.L.ffn_gate.E.weight
            uint64_t per = t->dims[0] * t->dims[1];
            for (uint64_t e = 0; e < t->dims[2]; e++) {
                char nm[128];
                snprintf(nm, sizeof nm, "%.*s.%llu.weight", (int)(exps - name), name, (unsigned long long)e);
                CHECK(fk_gguf_add_tensor(w, nm, FK_GGML_F32, 2, t->dims, (const float *)t->data + e * per, per * 4));
            }
            continue;
        }
        bool q = mode == RW_Q8_0 && t->n_dims >= 2 && t->dims[0] % 32 == 0 && !strstr(name, "ffn_gate_inp");
        if (!q) {
            CHECK(fk_gguf_add_tensor(w, name, t->ggml_type, t->n_dims, t->dims, t->data, t->nbytes));
            continue;
        }
        uint64_t rows = t->nbytes / 4 / t->dims[0], rb = t->dims[0] / 32 * 34;
        unsigned char *b = malloc(rows * rb);
        assert_true(nb < 256 && b);
        bufs[nb++] = b;
        for (uint64_t r = 0; r < rows; r++) test_q8_0_row((const float *)t->data + r * t->dims[0], (int64_t)t->dims[0], b + r * rb, NULL);
        CHECK(fk_gguf_add_tensor(w, name, FK_GGML_Q8_0, t->n_dims, t->dims, b, rows * rb));
    }
    CHECK(fk_gguf_writer_write(w, dst));
    for (int i = 0; i < nb; i++) free(bufs[i]);
    fk_gguf_writer_free(w);
    fk_gguf_close(&g);
}

// ------------------------------------------------------------------ tests

// Expert e of layer 0 in the file: ffn_gate_exps / ffn_up_exps slice e are the gate and up rows of
// the expert's up entry, ffn_down_exps slice e its down entry (ggml [C, F, E] and [F, C, E]).
static void check_layout(const char *path, const fk_model *m) {
    fk_gguf g;
    CHECK(fk_gguf_open(path, &g));
    int64_t C = m->cfg.d_model, F = m->cfg.expert_ffn, E = m->cfg.n_expert;
    const char *names[3] = {"blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight"};
    for (int k = 0; k < 3; k++) {
        const fk_gguf_tensor *t = fk_gguf_find_tensor(&g, names[k]);
        assert_non_null(t);
        assert_int_equal(t->n_dims, 3);
        assert_int_equal(t->dims[0], k < 2 ? C : F);
        assert_int_equal(t->dims[1], k < 2 ? F : C);
        assert_int_equal(t->dims[2], E);
        for (int64_t e = 0; e < E; e++) {
            const float *slice = (const float *)t->data + e * C * F;
            const float *want = m->w + m->layer[0].exp_up_w + e * m->layer[0].exp_up_stride + (k == 1 ? F * C : 0);
            if (k == 2) want = m->w + m->layer[0].exp_down_w + e * m->layer[0].exp_down_stride;
            assert_memory_equal(slice, want, (size_t)(C * F) * sizeof(float));
        }
    }
    const fk_gguf_tensor *r = fk_gguf_find_tensor(&g, "blk.1.ffn_gate_inp.weight");
    assert_true(r && r->n_dims == 2 && r->dims[0] == (uint64_t)C && r->dims[1] == (uint64_t)E);
    fk_gguf_close(&g);
}

// Each kind exports as its llama.cpp architecture and imports as the same model: config, weights and
// logits exact in F32; F16 exports keep the routers in F32 (as llama.cpp's converter).
static void test_round_trip(void **s) {
    (void)s;
    for (int k = 0; k < N_KINDS; k++) {
        fk_model m, g;
        moe_model(&m, k);
        char *path = tpath("moe.gguf");
        fk_gguf_export_stats st;
        CHECK(fk_gguf_export(&m, NULL, path, FK_DT_F32, "moe", &st));
        assert_string_equal(st.arch, kind_arch[k]);
        check_layout(path, &m);
        CHECK(fk_gguf_import(path, &g, NULL));
        expect_same_config(&m.cfg, &g.cfg);
        same_weights(&m, &g);
        assert_true(logits_diff(&m, &g) == 0);
        fk_model_free(&g);
        CHECK(fk_gguf_export(&m, NULL, path, FK_DT_F16, "moe", NULL));
        fk_gguf f;
        CHECK(fk_gguf_open(path, &f));
        assert_int_equal(fk_gguf_find_tensor(&f, "blk.0.ffn_gate_inp.weight")->ggml_type, FK_GGML_F32);
        assert_int_equal(fk_gguf_find_tensor(&f, "blk.0.ffn_down_exps.weight")->ggml_type, FK_GGML_F16);
        fk_gguf_close(&f);
        fk_model_free(&m);
    }
}

// An older Mixtral file (one 2-D tensor per expert, blk.L.ffn_gate.E.weight) is the same model.
static void test_legacy_experts(void **s) {
    (void)s;
    fk_model m, g;
    moe_model(&m, MIXTRAL);
    CHECK(fk_gguf_export(&m, NULL, tpath("mix.gguf"), FK_DT_F32, "moe", NULL));
    rewrite(tpath("mix.gguf"), tpath("legacy.gguf"), NULL, 0, RW_SPLIT);
    fk_gguf f;
    CHECK(fk_gguf_open(tpath("legacy.gguf"), &f));
    assert_non_null(fk_gguf_find_tensor(&f, "blk.1.ffn_down.3.weight"));
    assert_null(fk_gguf_find_tensor(&f, "blk.1.ffn_down_exps.weight"));
    fk_gguf_close(&f);
    CHECK(fk_gguf_import(tpath("legacy.gguf"), &g, NULL));
    expect_same_config(&m.cfg, &g.cfg);
    same_weights(&m, &g);
    fk_model_free(&g);
    fk_model_free(&m);
}

// A Q8_0 file imported frozen reads every expert where the file stores it and gives the logits of the
// same file decoded into the arena (the same values, summed in another order: 1e-5 of the largest).
static void test_quantized_frozen(void **s) {
    (void)s;
    for (int k = 0; k < N_KINDS; k++) {
        fk_model m, dec, fro;
        moe_model(&m, k);
        CHECK(fk_gguf_export(&m, NULL, tpath("f32.gguf"), FK_DT_F32, "moe", NULL));
        rewrite(tpath("f32.gguf"), tpath("q8.gguf"), NULL, 0, RW_Q8_0);
        const char *seed = getenv("FK_MOE_SEED_OUT");  // fuzz/corpus/gguf_model/qwen2moe_q8.gguf is this file
        if (seed && k == QWEN2MOE) {
            size_t n;
            char *b = slurp(tpath("q8.gguf"), &n);
            spit(seed, b, n);
            free(b);
        }
        CHECK(fk_gguf_import(tpath("q8.gguf"), &dec, NULL));
        CHECK(fk_gguf_import_ex(tpath("q8.gguf"), FK_GGUF_KEEP_STORED, &fro, NULL));
        int experts = 0;
        for (int i = 0; i < fro.n_stored; i++) {
            fk_param_kind pk = fro.params[fro.stored[i].param].kind;
            experts += pk == FK_P_EXP_UP_W || pk == FK_P_EXP_DOWN_W;
        }
        assert_int_equal(experts, 2 * 4 * 3);  // per layer and expert: gate and up slices, down
        double d = logits_diff(&dec, &fro);
        if (!(d < 1e-5)) fail_msg("%s: frozen Q8_0 logits differ from decoded ones by %g", kind_arch[k], d);
        fk_model_free(&fro);
        fk_model_free(&dec);
        fk_model_free(&m);
    }
}

static void expect_refused(const char *path, const char *what) {
    fk_model g;
    fk_status st = fk_gguf_import(path, &g, NULL);
    if (st == FK_OK) { fk_model_free(&g); fail_msg("%s imported", what); }
    if (!strstr(fk_last_error(), what)) fail_msg("expected '%s' in: %s", what, fk_last_error());
}

// Hostile keys and shapes: refused naming the key or the tensor, before any allocation they size.
static void test_hostile(void **s) {
    (void)s;
    fk_model m;
    moe_model(&m, QWEN2MOE);
    CHECK(fk_gguf_export(&m, NULL, tpath("q2.gguf"), FK_DT_F32, "moe", NULL));
    fk_model_free(&m);
    const char *src = tpath("q2.gguf"), *bad = tpath("bad.gguf");
    struct { patch p; const char *what; } cases[] = {
        {{"qwen2moe.expert_count", 0}, "qwen2moe.expert_count' is 0"},
        {{"qwen2moe.expert_count", -1}, "'qwen2moe.expert_count' is missing"},
        {{"qwen2moe.expert_count", 1000000}, "'qwen2moe.expert_count' is 1000000"},
        {{"qwen2moe.expert_count", 1024}, "'qwen2moe.expert_count' (1024)"},  // in range: more weights than the file holds
        {{"qwen2moe.expert_used_count", 5}, "'qwen2moe.expert_used_count' is 5"},
        {{"qwen2moe.expert_used_count", 0}, "'qwen2moe.expert_used_count' is 0"},
        {{"qwen2moe.expert_count", 3}, "blk.0.ffn_gate_inp.weight' has shape [32, 4] (ggml order) but the keys imply [32, 3]"},
        {{"qwen2moe.expert_feed_forward_length", 16}, "blk.0.ffn_gate_exps.weight' has shape [32, 32, 4] (ggml order) but the keys imply [32, 16, 4]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rewrite(src, bad, &cases[i].p, 1, RW_COPY);
        expect_refused(bad, cases[i].what);
    }
    // a Mixtral file saying expert_count 0 is a dense llama whose FFN tensors are missing
    moe_model(&m, MIXTRAL);
    CHECK(fk_gguf_export(&m, NULL, tpath("mix.gguf"), FK_DT_F32, "moe", NULL));
    fk_model_free(&m);
    patch p = {"llama.expert_count", 0};
    rewrite(tpath("mix.gguf"), bad, &p, 1, RW_COPY);
    expect_refused(bad, "blk.0.ffn_gate.weight' is missing");
}

// What llama.cpp's graphs do not compute is refused on export, naming it.
static void test_export_refused(void **s) {
    (void)s;
    struct { int kind; int change; const char *what; } cases[] = {
        {MIXTRAL, 0, "not renormalised (norm_topk_prob false); llama.cpp's llama graph always renormalises"},
        {QWEN2MOE, 0, "renormalised (norm_topk_prob true); llama.cpp's qwen2moe graph never renormalises"},
        {QWEN2MOE, 1, "layer 1 is dense"},
        {MIXTRAL, 2, "layer 1 has 3 experts and layer 0 4"},
        {OLMOE, 3, "tied LM head"},
        {MIXTRAL, 4, "is a mixture of experts (4 experts, top 2); fusekit exports one as llama.cpp's llama"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fk_config c;
        fk_model m;
        moe_model(&m, cases[i].kind);
        c = m.cfg;
        fk_model_free(&m);
        switch (cases[i].change) {
        case 0: c.expert_norm = !c.expert_norm; break;
        case 1: c.moe[1] = 0; c.experts[1] = 0; break;
        case 2: c.experts[1] = 3; break;
        case 3: c.tied = true; break;
        default: c.mlp = FK_MLP_GELU; break;
        }
        CHECK(fk_model_init(&m, &c));
        fk_status st = fk_gguf_export(&m, NULL, tpath("no.gguf"), FK_DT_F32, "moe", NULL);
        fk_model_free(&m);
        assert_int_equal(st, FK_ERR_UNSUPPORTED);
        if (!strstr(fk_last_error(), cases[i].what)) fail_msg("expected '%s' in: %s", cases[i].what, fk_last_error());
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_legacy_experts), cmocka_unit_test(test_quantized_frozen),
        cmocka_unit_test(test_hostile),         cmocka_unit_test(test_export_refused),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
