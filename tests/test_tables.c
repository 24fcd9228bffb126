// The tables of issue 17 item 4: every family's tensor-name sets cover each model's arena once,
// every row of the architecture table is unique and round-trips a config it fits through
// config.json and GGUF, parameter counts by mask add up, fk_model_clone copies, and
// fk_config_diff sees every field.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fusekit/fusekit.h"
#include "model/arch.h"
#include "test_util.h"

// Small configs exercising every tensor kind: GPT-2, Llama with biases, per-layer widths and
// heads, and the Gemma 3 switches (post-norms, QK-norm, GeGLU).
static void configs(fk_config *c, int *n) {
    fk_config_gpt2(&c[0], 50, 16, 2, 2, 8);
    fk_config_llama(&c[1], 50, 16, 3, 4, 2, 24, 8);
    c[1].bias_qkv = c[1].bias_out = c[1].bias_mlp = true;
    c[1].ffn[1] = 8;
    c[1].heads[2] = 2;
    fk_config_llama(&c[2], 50, 16, 2, 2, 1, 24, 8);
    c[2].mlp = FK_MLP_GEGLU;
    c[2].post_norms = c[2].qk_norm = true;
    c[2].tied = true;
    *n = 3;
}

// Every float of the arena is in exactly one tensor of the set (the tied head aside).
static void check_cover(const fk_model *m, arch_tensor_set s, const char *what) {
    arch_item *it;
    int n;
    CHECK(arch_items(m, s, &it, &n));
    uint8_t *seen = calloc((size_t)m->n_floats, 1);
    assert_non_null(seen);
    for (int i = 0; i < n; i++) {
        if (it[i].flags & ARCH_T_ALT) continue;  // (another form of the same tensors, read only)
        const fk_param *p = &m->params[it[i].param];
        int64_t cols = p->ndim == 2 ? p->shape[1] : 1;
        for (int64_t e = 0; e < (it[i].n_exp > 0 ? it[i].n_exp : 1); e++)  // (stacked experts: each expert's rows)
            for (int64_t j = it[i].row0 * cols; j < (it[i].row0 + it[i].rows) * cols; j++) seen[p->offset + e * it[i].exp_stride + j]++;
    }
    for (int k = 0; k < m->n_params; k++)
        for (int64_t j = 0; j < m->params[k].numel; j++)
            if (seen[m->params[k].offset + j] != 1)
                fail_msg("%s: %s element %lld is in %d tensors", what, m->params[k].name, (long long)j, seen[m->params[k].offset + j]);
    free(seen);
    free(it);
}

// Row f's experts on every layer of c, as its keys describe them (4 experts, top 2, 8 wide; Qwen2-MoE's shared
// expert 24 wide with its gate, no dense FFN otherwise); nothing for a row without experts.
static void row_experts(const arch_family *f, fk_config *c) {
    if (!f->moe || f->moe->per_layer) return;
    c->n_expert = 4;
    c->n_expert_used = 2;
    c->expert_ffn = 8;
    c->expert_norm = !f->moe->norm_key;
    c->shared_gate = f->moe->shared_key != NULL;
    for (int l = 0; l < FK_MAX_LAYERS; l++) {
        c->moe[l] = l < c->n_layer;
        c->ffn[l] = c->shared_gate && l < c->n_layer ? 24 : 0;
    }
}

// The Llama-family sets serve every model; a row's own set (GPT-2's, StarCoder2's, Phi-3's: fused
// tensors, other names, no QK-norm or post-norm) the models with the row's switches.
static bool llama_set(arch_tensor_set s) { return s.t == arch_of(FK_ARCH_LLAMA)->hf.t || s.t == arch_of(FK_ARCH_LLAMA)->gguf_t.t; }

static void check_row_sets(const fk_model *m, const arch_family *a, bool all) {
    if (a->hf.t && (all || llama_set(a->hf))) check_cover(m, a->hf, a->model_type);
    if (a->gguf_t.t && (all || llama_set(a->gguf_t))) check_cover(m, a->gguf_t, a->gguf);
}

static void test_tensor_sets_cover(void **s) {
    (void)s;
    fk_config c[3];
    int nc;
    configs(c, &nc);
    for (int k = 0; k < nc; k++) {
        fk_model m;
        CHECK(fk_model_init(&m, &c[k]));
        for (int f = 0; f < arch_n_families; f++) check_row_sets(&m, &arch_families[f], false);
        fk_model_free(&m);
    }
    for (int f = 0; f < arch_n_families; f++) {  // each row's sets over a model with its switches
        fk_config rc;
        fk_config_llama(&rc, 50, 16, 2, 4, 2, 24, 8);
        arch_apply_switches(&arch_families[f], &rc);
        row_experts(&arch_families[f], &rc);
        fk_model m;
        CHECK(fk_model_init(&m, &rc));
        check_row_sets(&m, &arch_families[f], true);
        fk_model_free(&m);
    }
}

// Names are unique across rows: model_type (aliases included) and general.architecture.
static void test_arch_rows_unique(void **s) {
    (void)s;
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *a = &arch_families[i];
        const char *names[] = {a->model_type, a->model_type_alias};
        for (int j = 0; j < arch_n_families; j++) {
            const arch_family *b = &arch_families[j];
            for (int k = 0; k < 2; k++) {
                if (!names[k]) continue;
                if (j != i || k == 1) assert_false(b->model_type && strcmp(names[k], b->model_type) == 0);
                if (j != i || k == 0) assert_false(b->model_type_alias && strcmp(names[k], b->model_type_alias) == 0);
            }
            if (j != i) assert_false(a->gguf && b->gguf && strcmp(a->gguf, b->gguf) == 0);
        }
        if (a->arch >= 0) {
            assert_ptr_equal(arch_of((fk_arch)a->arch), a);
            // the reader needs these fields under the row's own names
            arch_field need[] = {ARCH_F_D_MODEL, ARCH_F_N_LAYER, ARCH_F_N_HEAD, ARCH_F_FFN, ARCH_F_MAX_SEQ, ARCH_F_NORM_EPS};
            for (size_t k = 0; k < sizeof need / sizeof need[0]; k++) assert_non_null(arch_key_of(a, need[k]));
        }
        if (a->gguf) {
            assert_ptr_equal(arch_of_gguf(a->gguf, strlen(a->gguf)), a);
            assert_true(a->gguf_claims && a->gguf_fits && a->gguf_t.t);
        }
    }
}

// A small config with row f's switches, in the form its files read back: gguf selects llama.cpp's
// conventions (Gemma's norm weights stored as 1 + w, its attention scale always set, gemma2's
// sliding window and local base always written).
// Whether row f writes c (to GGUF: claims it; to config.json: fits it, or has no HF side but claims it).
static bool row_takes(const arch_family *f, bool gguf, const fk_config *c) {
    if (gguf || !f->hf_fits) return !f->gguf_claims || f->gguf_claims(f, c);
    return f->hf_fits(f, c);
}

static void row_config(const arch_family *f, bool gguf, fk_config *c) {
    fk_config_llama(c, 50, 16, 2, 4, f->sw.pos != FK_POS_ROPE ? 4 : 2, 24, 8);  // without RoPE: multi-head (gpt2, mpt)
    arch_apply_switches(f, c);
    row_experts(f, c);
    if (gguf && c->n_expert > 0) c->expert_norm = (f->gguf_keys & ARCH_GK_MOE_NORM) != 0;  // llama.cpp's graph's own choice
    if (gguf && c->qk_norm_whole) c->n_kv_head = c->n_head;  // llama.cpp's olmoe: attn_k_norm n_embd wide
    if (!gguf) c->bos_id = 1;  // GGUF keeps token ids with the tokenizer (none here)
    if (f->sw.gemma_scales) {
        c->norm_offset = gguf ? 0 : 1;
        c->tied = true;
        c->attn_scale = gguf || f->gemma > 1 ? 1 / sqrtf((float)c->head_dim) : 0;
    }
    if (f->gemma == 2) {
        c->attn_softcap = 50;
        c->final_softcap = 30;
        if (gguf) {
            c->sliding_window = c->max_seq;
            c->sliding[0] = 1;
            c->rope_theta_local = c->rope_theta;
        }
    }
    if (f->gemma == 3 && !gguf) c->rope_theta_local = 10000;
    // what the row's kind needs beyond its switches: a window on every layer (mistral), partial
    // rotary (phi3), per-layer widths (deci), multi-head attention (gpt_neox), exact GELU and a
    // width that is a multiple of d_model (mpt's Hugging Face files; its GGUF has the tanh GELU)
    fk_config base = *c;
    for (int k = 0; k < 5 && !row_takes(f, gguf, c); k++) {
        *c = base;
        if (k == 0) {
            c->sliding_window = 4;
            for (int64_t l = 0; l < c->n_layer; l++) c->sliding[l] = 1;
        }
        if (k == 1) c->rotary_dim = c->head_dim / 2;
        if (k == 2) c->ffn[1] = 8;
        if (k == 3) c->n_kv_head = c->n_head;
        if (k == 4) {
            c->gelu_exact = true;
            for (int l = 0; l < FK_MAX_LAYERS; l++) c->ffn[l] = 2 * c->d_model;
        }
    }
}

static void expect_same(const fk_config *want, const fk_config *got, const char *what) {
    int64_t l;
    const fk_config_field *f = fk_config_diff(want, got, &l);
    if (f) fail_msg("%s: %s differs (layer %lld)", what, f->name, (long long)l);
    for (size_t k = 0; k < sizeof *want; k++)
        if (((const unsigned char *)want)[k] != ((const unsigned char *)got)[k]) fail_msg("%s: the configs differ at byte %zu", what, k);
}

// Each row writes a config it fits and reads it back unchanged: config.json, and GGUF for the
// rows with a llama.cpp architecture of their own. At most one row fits any of these configs.
static void test_arch_rows_round_trip(void **s) {
    (void)s;
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *f = &arch_families[i];
        fk_config c, r;
        if (f->hf_fits || f->arch == FK_ARCH_FUSEKIT) {
            row_config(f, false, &c);
            if (f->arch == FK_ARCH_FUSEKIT) c.post_norms = true;  // no other model_type has post-norms with SwiGLU
            assert_int_equal(fk_config_arch(&c), f->arch);
            int fit = 0;
            for (int j = 0; j < arch_n_families; j++) fit += arch_families[j].hf_fits && arch_families[j].hf_fits(&arch_families[j], &c);
            assert_true(fit <= 1);
            char *json = fk_hf_config_json(&c);
            CHECK(fk_hf_config_parse(json, f->model_type, &r));
            free(json);
            expect_same(&c, &r, f->model_type);
        }
        if (f->gguf) {
            row_config(f, true, &c);
            const char *arch;
            CHECK(fk_gguf_model_arch(&c, &arch));
            assert_string_equal(arch, f->gguf);
            int claims = 0;
            for (int j = 0; j < arch_n_families; j++)
                claims += arch_families[j].gguf_claims && arch_families[j].gguf_claims(&arch_families[j], &c);
            assert_int_equal(claims, 1);
            fk_model m, g;
            CHECK(fk_model_init(&m, &c));
            fk_model_init_weights(&m, 3);
            char *path = tpath("row.gguf");
            CHECK(fk_gguf_export(&m, NULL, path, FK_DT_F32, "row", NULL));
            CHECK(fk_gguf_import(path, &g, NULL));
            expect_same(&c, &g.cfg, f->gguf);
            fk_model_free(&m);
            fk_model_free(&g);
        }
    }
}

// Change k of a config (k < N_CHANGES): one switch or size moved away from a row's config.
#define N_CHANGES 25
static void change(fk_config *c, int k) {
    switch (k) {
    case 0: c->norm = c->norm == FK_NORM_RMSNORM ? FK_NORM_LAYERNORM : FK_NORM_RMSNORM; break;
    case 1: c->pos = FK_POS_LEARNED; break;
    case 2: c->pos = FK_POS_ROPE; break;
    case 3: c->pos = FK_POS_NONE; break;
    case 4: c->mlp = FK_MLP_GELU; break;
    case 5: c->mlp = FK_MLP_SWIGLU; break;
    case 6: c->mlp = FK_MLP_GEGLU; break;
    case 7: c->bias_qkv = !c->bias_qkv; break;
    case 8: c->bias_out = !c->bias_out; break;
    case 9: c->bias_mlp = !c->bias_mlp; break;
    case 10: c->bias_norm = !c->bias_norm; break;
    case 11: c->post_norms = !c->post_norms; break;
    case 12: c->qk_norm = !c->qk_norm; break;
    case 13: c->tied = !c->tied; break;
    case 14: c->emb_scale = c->emb_scale > 0 ? 0 : sqrtf((float)c->d_model); break;
    case 15: c->norm_offset = c->norm_offset > 0 ? 0 : 1; break;
    case 16: c->attn_scale = c->attn_scale > 0 ? 0 : 0.3f; break;
    case 17: c->attn_softcap = c->attn_softcap > 0 ? 0 : 50; break;
    case 18: c->final_softcap = c->final_softcap > 0 ? 0 : 30; break;
    case 19: c->sliding_window = 4; c->sliding[0] = 1; break;
    case 20: c->rope_scale = 8; break;
    case 21: c->rope_orig_ctx = 16; c->rope_scale = 8; c->rope_low_freq = 1; c->rope_high_freq = 4; break;
    case 22: c->ffn[1] = 8; break;
    case 23: c->gelu_exact = !c->gelu_exact; break;
    default: c->n_kv_head = c->n_kv_head == c->n_head ? 2 : c->n_head; break;
    }
}

// No two rows fit or claim the same config, over each row's config with up to two changes: the
// first row that fits would otherwise hide the other (fk_config_arch, fk_gguf_model_arch).
static void test_arch_rows_disjoint(void **s) {
    (void)s;
    for (int i = 0; i < arch_n_families; i++)
        for (int a = -1; a < N_CHANGES; a++)
            for (int b = a; b < N_CHANGES; b++) {
                fk_config c;
                row_config(&arch_families[i], false, &c);
                if (a >= 0) change(&c, a);
                if (b > a) change(&c, b);
                int fit = 0, claims = 0;
                for (int j = 0; j < arch_n_families; j++) {
                    const arch_family *f = &arch_families[j];
                    fit += f->hf_fits && f->hf_fits(f, &c);
                    claims += f->gguf_claims && f->gguf_claims(f, &c);
                }
                if (fit > 1 || claims > 1) fail_msg("row %d, changes %d and %d: %d rows fit, %d claim", i, a, b, fit, claims);
            }
}

// The config.json of row f's config with key set to the JSON text value (malloc'd).
static char *row_json_with(const arch_family *f, const char *key, const char *value) {
    fk_config c;
    row_config(f, false, &c);
    char *json = fk_hf_config_json(&c);
    cJSON *j = cJSON_Parse(json);
    free(json);
    assert_non_null(j);
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    cJSON_AddItemToObject(j, key, cJSON_Parse(value));
    json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return json;
}

static void expect_refused(char *json, const char *model_type, const char *key) {
    fk_config r;
    fk_status st = fk_hf_config_parse(json, "row/config.json", &r);
    free(json);
    if (st != FK_ERR_UNSUPPORTED || !strstr(fk_last_error(), key))
        fail_msg("%s: status %d, message '%s' (expected one naming %s)", model_type, st, fk_last_error(), key);
}

// Every row refuses what it does not implement, naming the key: a flag at the other value, an
// activation it does not list.
static void test_arch_rows_refuse(void **s) {
    (void)s;
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *f = &arch_families[i];
        if (!f->hf_fits) continue;
        for (int k = 0; k < f->keys.n; k++) {
            const arch_key *key = &f->keys.k[k];
            if (key->field == ARCH_F_FLAG) expect_refused(row_json_with(f, key->key, key->def != 0 ? "false" : "true"), f->model_type, key->key);
            if (key->field == ARCH_F_ACT && f->acts) expect_refused(row_json_with(f, key->key, "\"relu\""), f->model_type, key->key);
        }
    }
}

static void test_param_masks(void **s) {
    (void)s;
    fk_config c[3];
    int nc;
    configs(c, &nc);
    for (int k = 0; k < nc; k++) {
        fk_model m;
        CHECK(fk_model_init(&m, &c[k]));
        int64_t all = 0;
        for (int i = 0; i < m.n_params; i++) all += m.params[i].numel;
        assert_int_equal(fk_model_num_params(&m), all);
        assert_int_equal(fk_model_count_params(&m, FK_PARAMS_ALL, FK_PARAMS_ANY_LAYER), all);
        int64_t parts = 0, layers = 0;
        for (unsigned b = 1; b < FK_PARAMS_ALL; b <<= 1) parts += fk_model_count_params(&m, b, FK_PARAMS_ANY_LAYER);
        assert_int_equal(parts, all);
        for (int l = 0; l < (int)c[k].n_layer; l++) {
            layers += fk_model_count_params(&m, FK_PARAMS_BLOCKS, l);
            // what one FFN unit owns: d_model inputs per up block (gate and up when gated), a bias each, d_model outputs
            int64_t blocks = fk_config_gated(&c[k]) ? 2 : 1, unit = blocks * (c[k].d_model + 1) + c[k].d_model;
            if (!c[k].bias_mlp) unit -= blocks;
            assert_int_equal(fk_model_count_params(&m, FK_PARAMS_FFN_UNITS, l), unit * c[k].ffn[l]);
        }
        assert_int_equal(layers, fk_model_count_params(&m, FK_PARAMS_BLOCKS, FK_PARAMS_ANY_LAYER));
        fk_model_free(&m);
    }
}

static void test_clone(void **s) {
    (void)s;
    fk_config c[3];
    int nc;
    configs(c, &nc);
    fk_model a, b;
    CHECK(fk_model_init(&a, &c[1]));
    fk_model_init_weights(&a, 7);
    CHECK(fk_model_clone(&b, &a));
    assert_int_equal(a.n_floats, b.n_floats);
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    assert_ptr_not_equal(a.w, b.w);
    assert_memory_equal(&a.cfg, &b.cfg, sizeof a.cfg);
    fk_model_free(&a);
    fk_model_free(&b);
}

static void test_config_diff(void **s) {
    (void)s;
    fk_config c[3];
    int nc;
    configs(c, &nc);
    fk_config a = c[1], b = c[1];
    int64_t l;
    assert_null(fk_config_diff(&a, &b, &l));
    b.heads[1] = 2;  // per-layer query heads count
    const fk_config_field *f = fk_config_diff(&a, &b, &l);
    assert_non_null(f);
    assert_string_equal(f->name, "heads");
    assert_int_equal(l, 1);
    b = a;
    b.heads[0] = a.n_head;  // 0 and n_head mean the same
    assert_null(fk_config_diff(&a, &b, &l));
    b = a;
    b.rope_orig_ctx = 8192;
    f = fk_config_diff(&a, &b, &l);
    assert_non_null(f);
    assert_string_equal(f->name, "rope_orig_ctx");
    // each row's offset and type name the field it says
    for (int i = 0; i < fk_config_n_fields; i++) assert_true(fk_config_fields[i].offset < sizeof(fk_config));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_sets_cover),
        cmocka_unit_test(test_arch_rows_unique),
        cmocka_unit_test(test_arch_rows_round_trip),
        cmocka_unit_test(test_arch_rows_refuse),
        cmocka_unit_test(test_arch_rows_disjoint),
        cmocka_unit_test(test_param_masks),
        cmocka_unit_test(test_clone),
        cmocka_unit_test(test_config_diff),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
