// Hugging Face folders against the independent reference (tools/ref/make_golden.py, folders
// under tests/data/golden/): every reference folder (gpt2, llama, qwen2, mistral, Llama-3-like
// tied, attention biases, bf16/f16 weights, shards, tied Qwen2, bf16 GPT-2) loads with the
// config it declares and reproduces the reference logits; fusekit saves each of them with the
// reference's tensor names, shapes, dtypes (bit-identical data) and config keys; broken configs
// and weight files fail with messages naming the file and the key or tensor.
// (test_model.c trains on gpt2/llama/qwen2; test_io.c covers round trips of fusekit's own
// folders, truncated data, short files, wrong FFN shapes, layer-count mismatches.)
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusekit/fusekit.h"
#include "test_util.h"

// Logits: the reference's float32 noise against float64 is below 1e-6 (tools/ref/README.md);
// bf16/f16 folders are computed by the reference from the rounded weights in float32, and fusekit
// converts those weights exactly, so the same tolerance holds for them.
#define TOL_LOGITS 1e-4
#define TOL_LOSS_REL 1e-5

typedef struct {
    const char *name;
    fk_arch arch;       // the HF type fusekit maps it to (and saves it as)
    fk_dtype dtype;     // the reference's weight dtype
    bool tied;
    int64_t n_head, n_kv_head, head_dim, ffn, max_seq;
    double rope_theta;  // 0: learned positions
    double norm_eps;
    bool gelu_exact;    // activation_function "gelu" (exact erf GELU)
} golden_spec;

static const golden_spec goldens[] = {
    {"gpt2", FK_ARCH_GPT2, FK_DT_F32, true, 4, 4, 8, 128, 32, 0, 1e-5, false},
    {"llama", FK_ARCH_LLAMA, FK_DT_F32, false, 4, 2, 8, 48, 64, 1e4, 1e-6, false},
    {"qwen2", FK_ARCH_QWEN2, FK_DT_F32, false, 4, 2, 8, 40, 64, 1e6, 1e-6, false},
    // sliding_window 16 < max_position_embeddings 64 on every layer (T = 16: the window covers it)
    {"mistral", FK_ARCH_MISTRAL, FK_DT_F32, false, 4, 1, 8, 64, 64, 1e4, 1e-5, false},
    {"llama3", FK_ARCH_LLAMA, FK_DT_F32, true, 6, 2, 8, 64, 128, 5e5, 1e-5, false},
    {"llama_bias", FK_ARCH_LLAMA, FK_DT_F32, false, 4, 4, 8, 48, 64, 1e4, 1e-6, false},
    {"llama_bf16", FK_ARCH_LLAMA, FK_DT_BF16, false, 4, 2, 8, 48, 64, 1e4, 1e-6, false},
    {"llama_f16", FK_ARCH_LLAMA, FK_DT_F16, false, 4, 2, 8, 48, 64, 1e4, 1e-6, false},
    {"llama_sharded", FK_ARCH_LLAMA, FK_DT_F32, false, 4, 2, 8, 48, 64, 1e4, 1e-6, false},
    {"qwen2_tied", FK_ARCH_QWEN2, FK_DT_F32, true, 4, 2, 8, 40, 64, 1e6, 1e-6, false},
    {"gpt2_bf16", FK_ARCH_GPT2, FK_DT_BF16, true, 4, 4, 8, 96, 32, 0, 1e-5, false},
    {"gpt2_gelu", FK_ARCH_GPT2, FK_DT_F32, true, 4, 4, 8, 128, 32, 0, 1e-5, true},
    // QK-norm over each head, head_dim 32 != hidden 64 / 4 heads, no q/k/v bias
    {"qwen3", FK_ARCH_QWEN3, FK_DT_F32, false, 4, 2, 32, 96, 64, 1e6, 1e-6, false},
    // MPT: ALiBi (no positions), fused Wqkv, no biases, exact GELU; 6 heads with clip_qkv, 8 heads with softmax_scale
    {"mpt", FK_ARCH_MPT, FK_DT_F32, true, 6, 6, 8, 192, 64, 0, 1e-5, true},
    {"mpt_8h", FK_ARCH_MPT, FK_DT_F32, false, 8, 8, 4, 128, 64, 0, 1e-5, true},
    // sliding windows of 8 keys over 16 tokens: every layer (mistral), layer 1 (qwen2, qwen3: max_window_layers 1)
    {"mistral_swa", FK_ARCH_MISTRAL, FK_DT_F32, false, 4, 1, 8, 48, 64, 1e4, 1e-6, false},
    {"qwen2_swa", FK_ARCH_QWEN2, FK_DT_F32, false, 4, 2, 8, 40, 64, 1e6, 1e-6, false},
    {"qwen3_swa", FK_ARCH_QWEN3, FK_DT_F32, false, 4, 2, 16, 40, 64, 1e6, 1e-6, false},
    // LayerNorm with bias, GELU MLP c_fc/c_proj, use_bias, tied, window 8
    {"starcoder2", FK_ARCH_STARCODER2, FK_DT_F32, true, 4, 2, 8, 64, 64, 1e4, 1e-5, false},
    // fused qkv_proj and gate_up_proj, window 8: Mistral's computation, saved as mistral
    {"phi3", FK_ARCH_MISTRAL, FK_DT_F32, false, 4, 2, 8, 48, 64, 1e4, 1e-5, false},
    // partial_rotary_factor 0.75 (Phi-4-mini), tied, no window: saved as phi3 with the fused tensors
    {"phi3_partial", FK_ARCH_PHI3, FK_DT_F32, true, 4, 2, 8, 48, 64, 1e4, 1e-5, false},
    // GPT-NeoX: per-head fused query_key_value, rotary_pct 0.25 of head_dim 16, exact GELU; parallel
    // residual with two norms (gpt_neox), sequential with gelu_new and base 500 (gpt_neox_seq)
    {"gpt_neox", FK_ARCH_GPTNEOX, FK_DT_F32, false, 4, 4, 16, 96, 64, 1e4, 1e-5, true},
    {"gpt_neox_seq", FK_ARCH_GPTNEOX, FK_DT_F32, false, 4, 4, 16, 96, 64, 500, 1e-5, false},
    // Phi-2: attention and MLP from one LayerNorm, LM-head bias, partial_rotary_factor 0.4 of head_dim 10
    {"phi", FK_ARCH_PHI, FK_DT_F32, false, 4, 2, 10, 64, 64, 1e4, 1e-5, false},
    // OLMo 2: post-norms only, QK-norm over the whole q and k projections
    {"olmo2", FK_ARCH_OLMO2, FK_DT_F32, false, 4, 4, 8, 48, 64, 1e4, 1e-6, false},
    // OLMo 2 with grouped KV heads (32B's form): k_norm over the 2 KV heads' 16 values, base 500
    {"olmo2_gqa", FK_ARCH_OLMO2, FK_DT_F32, false, 4, 2, 8, 40, 64, 500, 1e-5, false},
    // StableLM: LayerNorm with bias, SwiGLU, q/k/v biases only, partial_rotary_factor 0.25 of head_dim 16;
    // sequential (stablelm), parallel from one norm with base 500 (stablelm_par)
    {"stablelm", FK_ARCH_STABLELM, FK_DT_F32, false, 4, 2, 16, 96, 64, 1e4, 1e-5, false},
    {"stablelm_par", FK_ARCH_STABLELM, FK_DT_F32, false, 4, 2, 16, 96, 64, 500, 1e-5, false},
    // StableLM 2 12B's form: qk_layernorm (a LayerNorm per q and k head, each its own weights), parallel
    {"stablelm_qkln", FK_ARCH_STABLELM, FK_DT_F32, false, 4, 2, 16, 96, 64, 1e4, 1e-5, false},
    // Falcon 7B's form: multi-query, parallel from one norm (falcon); the new decoder with two norms,
    // query_key_value grouped per KV head, biases, base 500 (falcon_40b)
    {"falcon", FK_ARCH_FALCON, FK_DT_F32, true, 4, 1, 16, 96, 64, 1e4, 1e-5, true},
    {"falcon_40b", FK_ARCH_FALCON, FK_DT_F32, false, 4, 2, 16, 96, 64, 500, 1e-5, true},
    // Falcon 40B as released (no biases) with the tanh GELU; Falcon 2's new decoder from one shared norm
    // (num_ln_in_parallel_attn 1), tied; sequential multi-head with biases (parallel_attn false: the computation
    // of StarCoder2 with exact GELU, saved as starcoder2)
    {"falcon_40b_tanh", FK_ARCH_FALCON, FK_DT_F32, false, 4, 2, 8, 64, 64, 1e4, 1e-5, false},
    {"falcon2", FK_ARCH_FALCON, FK_DT_F32, true, 4, 2, 8, 64, 64, 1e4, 1e-5, false},
    {"falcon_seq", FK_ARCH_STARCODER2, FK_DT_F32, false, 4, 4, 8, 64, 64, 1e4, 1e-5, true},
};
#define N_GOLDENS (int)(sizeof goldens / sizeof goldens[0])

static char *golden_dir(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/golden/%s", FK_TEST_DATA, name);
    return p;
}

static void expect_error(fk_status st, fk_status want, const char *needle1, const char *needle2) {
    if (st == FK_OK) fail_msg("expected an error mentioning '%s'", needle1);
    const char *msg = fk_last_error();
    if (st != want) fail_msg("status %d instead of %d: %s", st, want, msg);
    print_message("  error as expected: %s\n", msg);
    if (needle1 && !strstr(msg, needle1)) fail_msg("message '%s' does not mention '%s'", msg, needle1);
    if (needle2 && !strstr(msg, needle2)) fail_msg("message '%s' does not mention '%s'", msg, needle2);
}

// ------------------------------------------------------------------ logits

// Runs the golden tokens through m; returns the max abs logit error (and checks the loss).
static bool arch_any_window(const fk_config *c) {
    for (int64_t l = 0; l < c->n_layer; l++)
        if (c->sliding[l] && c->sliding_window > 0) return true;
    return false;
}

static double golden_logits_error(fk_model *m, const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    fk_safetensors g;
    CHECK(fk_st_open(&g, path));
    const fk_st_tensor *tok = fk_st_find(&g, "tokens"), *lg = fk_st_find(&g, "logits"), *ls = fk_st_find(&g, "loss");
    assert_non_null(tok); assert_non_null(lg); assert_non_null(ls);
    assert_int_equal(tok->dtype, FK_DT_I32);
    assert_int_equal(lg->dtype, FK_DT_F32);
    int B = (int)tok->shape[0], T = (int)tok->shape[1] - 1;
    int64_t V = m->cfg.vocab_size;
    assert_int_equal(lg->numel, (int64_t)B * T * V);
    int32_t *x = malloc((size_t)(B * T) * sizeof(int32_t)), *y = malloc((size_t)(B * T) * sizeof(int32_t));
    const int32_t *t = tok->data;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            x[b * T + i] = t[b * (T + 1) + i];
            y[b * T + i] = t[b * (T + 1) + i + 1];
        }
    float loss;
    CHECK(fk_model_forward(m, x, y, B, T, false, &loss));
    const float *got = fk_model_logits(m), *want = lg->data;
    double err = 0;
    for (int64_t i = 0; i < lg->numel; i++) err = fmax(err, fabs((double)got[i] - want[i]));
    float ref_loss = ((const float *)ls->data)[0];
    if (fabs(loss - ref_loss) > TOL_LOSS_REL * fabs(ref_loss)) fail_msg("%s: loss %.7f, reference %.7f", dir, loss, ref_loss);
    free(x); free(y);
    fk_st_close(&g);
    return err;
}

static void test_golden_logits(void **s) {
    (void)s;
    for (int i = 0; i < N_GOLDENS; i++) {
        const golden_spec *gs = &goldens[i];
        fk_model m;
        CHECK(fk_hf_load(&m, golden_dir(gs->name)));
        const fk_config *c = &m.cfg;
        // config.json mapped as declared
        assert_int_equal(fk_config_arch(c), gs->arch);
        assert_int_equal(c->tied, gs->tied);
        assert_int_equal(c->n_head, gs->n_head);
        assert_int_equal(c->n_kv_head, gs->n_kv_head);
        assert_int_equal(c->head_dim, gs->head_dim);
        assert_int_equal(c->ffn[0], gs->ffn);
        assert_int_equal(c->ffn[1], gs->ffn);
        assert_int_equal(c->max_seq, gs->max_seq);
        assert_true(fabs(c->norm_eps - gs->norm_eps) <= 1e-7 * gs->norm_eps);
        assert_int_equal(c->gelu_exact, gs->gelu_exact);
        if (gs->rope_theta > 0) {
            assert_int_equal(c->pos, FK_POS_ROPE);
            assert_true(c->rope_theta == (float)gs->rope_theta);
        } else {
            assert_int_equal(c->pos, c->alibi_bias_max > 0 ? FK_POS_NONE : FK_POS_LEARNED);  // MPT: ALiBi
        }
        double err = golden_logits_error(&m, golden_dir(gs->name));
        print_message("  %-14s %-6s %-5s logits max abs error %.2e\n", gs->name, fk_arch_name(gs->arch), fk_dtype_name(gs->dtype), err);
        if (!(err < TOL_LOGITS)) fail_msg("%s: logits differ from the reference by %.3g", gs->name, err);
        fk_model_free(&m);
    }
}

// ------------------------------------------------------------------ saved folders match the reference

// Every model*.safetensors of a folder (single file or shards), opened.
typedef struct { int n; fk_safetensors st[16]; } weight_files;

static void weights_open(weight_files *w, const char *dir) {
    w->n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "model", 5) != 0 || n < 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0) continue;
        assert_true(w->n < 16);
        char path[800];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        CHECK(fk_st_open(&w->st[w->n++], path));
    }
    closedir(d);
}

static void weights_close(weight_files *w) {
    for (int i = 0; i < w->n; i++) fk_st_close(&w->st[i]);
}

// The saved folder holds exactly the reference's tensors with the same shapes, in dtype; the
// data is bit-identical when dtype is the reference's own.
static void compare_weights(const char *ref_dir, const char *dir, fk_dtype dtype, bool same_dtype) {
    weight_files r, o;
    weights_open(&r, ref_dir);
    weights_open(&o, dir);
    assert_int_equal(o.n, 1);  // fusekit writes one model.safetensors
    int total = 0;
    for (int f = 0; f < r.n; f++)
        for (int i = 0; i < r.st[f].n_tensors; i++, total++) {
            const fk_st_tensor *a = &r.st[f].tensors[i], *b = fk_st_find(&o.st[0], a->name);
            if (!b) fail_msg("%s: fusekit did not write %s", dir, a->name);
            assert_int_equal(a->ndim, b->ndim);
            for (int d = 0; d < a->ndim; d++)
                if (a->shape[d] != b->shape[d]) fail_msg("%s: %s dimension %d is %lld, reference %lld", dir, a->name, d,
                                                         (long long)b->shape[d], (long long)a->shape[d]);
            assert_int_equal(b->dtype, dtype);
            if (same_dtype && memcmp(a->data, b->data, a->nbytes) != 0) fail_msg("%s: %s data differs from the reference", dir, a->name);
        }
    if (o.st[0].n_tensors != total) fail_msg("%s: %d tensors, the reference has %d", dir, o.st[0].n_tensors, total);
    weights_close(&r);
    weights_close(&o);
}

static cJSON *read_json(const char *path) {
    char *text = slurp(path, NULL);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fail_msg("%s is not JSON", path);
    return j;
}

static bool json_equal(const cJSON *a, const cJSON *b) { return cJSON_Compare(a, b, true); }

// Keys transformers writes that do not change the causal LM (bookkeeping, other heads' options,
// a sliding window and layer types that use_sliding_window=false turns off).
static bool bookkeeping(const char *key, const cJSON *ref) {
    static const char *k[] = {"transformers_version", "initializer_range", "use_cache", "summary_type", "summary_use_proj",
                              "summary_activation", "summary_proj_to_labels", "summary_first_dropout", "classifier_dropout",
                              "is_decoder", NULL};
    for (int i = 0; k[i]; i++) if (strcmp(key, k[i]) == 0) return true;
    // Phi-3's original context, used only by LongRoPE
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(ref, "rope_parameters"), *rt = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
    if (strcmp(key, "original_max_position_embeddings") == 0 && cJSON_IsString(rt) && strcmp(rt->valuestring, "default") == 0) return true;
    // Qwen-MoE's dense width when every layer is MoE (no mlp_only_layers, decoder_sparse_step 1): no layer reads it
    const cJSON *mol = cJSON_GetObjectItemCaseSensitive(ref, "mlp_only_layers"), *step = cJSON_GetObjectItemCaseSensitive(ref, "decoder_sparse_step");
    if (strcmp(key, "intermediate_size") == 0 && cJSON_GetObjectItemCaseSensitive(ref, "moe_intermediate_size") && cJSON_GetArraySize(mol) == 0 &&
        cJSON_IsNumber(step) && step->valuedouble == 1)
        return true;
    const cJSON *usw = cJSON_GetObjectItemCaseSensitive(ref, "use_sliding_window");
    // qwen3's layer_types: with use_sliding_window false transformers sets sliding_window to None,
    // so every layer is full attention whatever it names
    if (cJSON_IsFalse(usw) && (strcmp(key, "sliding_window") == 0 || strcmp(key, "max_window_layers") == 0 ||
                               strcmp(key, "layer_types") == 0)) return true;
    return false;
}

// When a key is absent, transformers uses the class default; either side may omit a key whose
// value is that default. Returns the default as JSON text, or NULL when the key has none here.
static const char *class_default(const char *key, const char *model_type) {
    static const char *d[][2] = {
        {"pretraining_tp", "1"}, {"scale_attn_by_inverse_layer_idx", "false"}, {"reorder_and_upcast_attn", "false"},
        {"rope_scaling", "null"}, {"attention_bias", "false"}, {"mlp_bias", "false"}, {"use_sliding_window", "false"},
        {"bos_token_id", "null"}, {"eos_token_id", "null"}, {"pad_token_id", "null"}, {"add_cross_attention", "false"}, {NULL, NULL}};
    if (strcmp(key, "tie_word_embeddings") == 0) return strcmp(model_type, "gpt2") == 0 ? "true" : "false";
    for (int i = 0; d[i][0]; i++) if (strcmp(key, d[i][0]) == 0) return d[i][1];
    return NULL;
}

static bool equals_text(const cJSON *v, const char *text) {
    cJSON *t = cJSON_Parse(text);
    bool eq = json_equal(v, t);
    cJSON_Delete(t);
    return eq;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("config: %s is not a number", key);
    return v->valuedouble;
}

static const char *dtype_torch(fk_dtype dt) { return dt == FK_DT_BF16 ? "bfloat16" : dt == FK_DT_F16 ? "float16" : "float32"; }

// transformers 5's rope_parameters {"rope_type": "default", "rope_theta": x} is what fusekit's
// transformers-4 layout, rope_theta x (and no rope_scaling), says.
// A partial_rotary_factor in it is the top-level partial_rotary_factor or rotary_pct (gpt_neox, whose
// base is rotary_emb_base).
static bool rope_layouts_agree(const cJSON *rp, const cJSON *out) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rp, "rope_type"), *theta = cJSON_GetObjectItemCaseSensitive(rp, "rope_theta");
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(out, "rope_theta"), *rs = cJSON_GetObjectItemCaseSensitive(out, "rope_scaling");
    const cJSON *prf = cJSON_GetObjectItemCaseSensitive(rp, "partial_rotary_factor"), *share = cJSON_GetObjectItemCaseSensitive(out, "rotary_pct");
    if (!o) o = cJSON_GetObjectItemCaseSensitive(out, "rotary_emb_base");
    if (!share) share = cJSON_GetObjectItemCaseSensitive(out, "partial_rotary_factor");
    bool part = !prf || (cJSON_IsNumber(share) && share->valuedouble == prf->valuedouble);
    return cJSON_IsObject(rp) && cJSON_GetArraySize(rp) == 2 + (prf != NULL) && part && cJSON_IsString(type) &&
           strcmp(type->valuestring, "default") == 0 && cJSON_IsNumber(theta) && cJSON_IsNumber(o) && theta->valuedouble == o->valuedouble &&
           (!rs || cJSON_IsNull(rs));
}

// The model_type of golden folder `name`.
static const char *golden_type(const char *name) {
    static char type[64];
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", golden_dir(name));
    cJSON *j = read_json(path);
    snprintf(type, sizeof type, "%s", cJSON_GetObjectItemCaseSensitive(j, "model_type")->valuestring);
    cJSON_Delete(j);
    return type;
}

// MPT's attn_config: transformers 5 writes it as a sub-config with PretrainedConfig's own keys
// (id2label, return_dict, ...); its attention keys must be what fusekit writes, the rest is bookkeeping.
static bool attn_config_agrees(const cJSON *ref, const cJSON *out) {
    static const char *const keys[] = {"alibi", "alibi_bias_max", "attn_impl", "attn_pdrop", "attn_type", "attn_uses_sequence_id",
                                       "clip_qkv", "prefix_lm", "qk_ln", "softmax_scale"};
    const int n = (int)(sizeof keys / sizeof keys[0]);
    for (int i = 0; i < n; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(ref, keys[i]), *b = cJSON_GetObjectItemCaseSensitive(out, keys[i]);
        if (!a || !b || !json_equal(a, b)) return false;
    }
    return cJSON_GetArraySize(out) == n;
}

// The other spelling transformers' attribute_map reads for an MoE config's expert count (Qwen3-MoE: 5 writes
// num_local_experts, the hub's checkpoints and fusekit num_experts, which both versions read); NULL for other keys.
static const char *count_alias(const char *key) {
    return strcmp(key, "num_local_experts") == 0 ? "num_experts" : strcmp(key, "num_experts") == 0 ? "num_local_experts" : NULL;
}

// fusekit's config.json says what the reference's does, key by key, in the reference's spelling.
static void compare_config(const char *ref_dir, const char *dir, fk_dtype dtype) {
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/config.json", ref_dir);
    snprintf(p2, sizeof p2, "%s/config.json", dir);
    cJSON *ref = read_json(p1), *out = read_json(p2);
    const char *ref_type = cJSON_GetObjectItemCaseSensitive(ref, "model_type")->valuestring;
    const cJSON *it;
    // every key of the reference
    cJSON_ArrayForEach(it, ref) {
        const char *k = it->string;
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(out, k);
        if (bookkeeping(k, ref)) continue;
        if (strcmp(k, "torch_dtype") == 0 || strcmp(k, "dtype") == 0) {  // transformers 5 names it dtype
            o = cJSON_GetObjectItemCaseSensitive(out, "torch_dtype");
            if (!cJSON_IsString(o) || strcmp(o->valuestring, dtype_torch(dtype)) != 0) fail_msg("%s: torch_dtype is not %s", p2, dtype_torch(dtype));
            continue;
        }
        if (strcmp(k, "rope_parameters") == 0 && !o && rope_layouts_agree(it, out)) continue;
        if (!o && count_alias(k)) o = cJSON_GetObjectItemCaseSensitive(out, count_alias(k));
        if (strcmp(k, "head_dim") == 0 && cJSON_IsNull(it) && o && o->valuedouble == num(ref, "hidden_size") / num(ref, "num_attention_heads"))
            continue;  // (MixtralConfig: null is hidden_size / num_attention_heads)
        if (strcmp(k, "attn_config") == 0 && o && attn_config_agrees(it, o)) continue;
        if (strcmp(k, "n_inner") == 0 && cJSON_IsNull(it)) {  // null: 4 * n_embd
            assert_true(num(out, k) == 4 * num(ref, "n_embd"));
            continue;
        }
        if (o) {
            if (!json_equal(it, o)) {
                char *a = cJSON_PrintUnformatted(it), *b = cJSON_PrintUnformatted(o);
                fail_msg("%s: %s is %s, the reference has %s", p2, k, b, a);
            }
        } else {
            const char *def = class_default(k, ref_type);
            if (!def || !equals_text(it, def)) fail_msg("%s: key %s is missing (the reference has it)", p2, k);
        }
    }
    // every key fusekit adds must mean what transformers assumes without it
    cJSON_ArrayForEach(it, out) {
        const char *k = it->string;
        if (cJSON_GetObjectItemCaseSensitive(ref, k) || strcmp(k, "fusekit_version") == 0) continue;
        if (count_alias(k) && cJSON_GetObjectItemCaseSensitive(ref, count_alias(k))) continue;  // (compared above)
        if (strcmp(k, "torch_dtype") == 0 && cJSON_GetObjectItemCaseSensitive(ref, "dtype")) continue;
        if (strcmp(k, "head_dim") == 0) { assert_true(it->valuedouble == num(ref, "hidden_size") / num(ref, "num_attention_heads")); continue; }
        if (strcmp(k, "n_ctx") == 0) { assert_true(it->valuedouble == num(ref, "n_positions")); continue; }
        bool rope_key = strcmp(k, "rope_theta") == 0 || strcmp(k, "rotary_emb_base") == 0 || strcmp(k, "rotary_pct") == 0 ||
                        strcmp(k, "partial_rotary_factor") == 0;
        if (rope_key && rope_layouts_agree(cJSON_GetObjectItemCaseSensitive(ref, "rope_parameters"), out)) continue;
        const char *def = class_default(k, ref_type);
        if (!def || !equals_text(it, def)) {
            char *b = cJSON_PrintUnformatted(it);
            fail_msg("%s: writes %s = %s, which the reference does not have", p2, k, b);
        }
    }
    cJSON_Delete(ref);
    cJSON_Delete(out);
}

// Golden folder `gname` (weights in `dtype`, of type `arch` for fusekit) saved as F32 and as dtype.
static void save_like_reference(const char *gname, fk_arch arch, fk_dtype dtype) {
    const char *ref_dir = golden_dir(gname);
    fk_model m;
    CHECK(fk_hf_load(&m, ref_dir));
    fk_dtype dts[2] = {FK_DT_F32, dtype};
    for (int k = 0; k < (dtype == FK_DT_F32 ? 1 : 2); k++) {
        char name[128];
        snprintf(name, sizeof name, "save_%s_%s", gname, fk_dtype_name(dts[k]));
        char *dir = tpath(name);
        CHECK(fk_hf_save(&m, dir, dts[k]));
        // a reference whose model is another type's exactly (phi3 without partial rotary: mistral's)
        // is saved as that type: its tensors and keys are that type's, and it loads back the same
        if (strcmp(golden_type(gname), fk_arch_name(arch)) == 0) {
            compare_weights(ref_dir, dir, dts[k], dts[k] == dtype);
            compare_config(ref_dir, dir, dts[k]);
        }
        // and it loads back to the same weights (exactly: they were representable)
        fk_model b;
        CHECK(fk_hf_load(&b, dir));
        assert_memory_equal(&m.cfg, &b.cfg, sizeof m.cfg);
        assert_memory_equal(m.w, b.w, (size_t)m.n_floats * sizeof(float));
        fk_model_free(&b);
    }
    print_message("  %-14s saved as F32%s%s: tensors and config.json match the reference\n", gname,
                  dtype == FK_DT_F32 ? "" : " and ", dtype == FK_DT_F32 ? "" : fk_dtype_name(dtype));
    fk_model_free(&m);
}

static void test_save_like_reference(void **s) {
    (void)s;
    for (int i = 0; i < N_GOLDENS; i++) save_like_reference(goldens[i].name, goldens[i].arch, goldens[i].dtype);
}

// head_dim other than hidden_size / num_attention_heads (Mistral-Nemo, Qwen3-like): written,
// read back, and honoured in the tensor shapes.
static void test_head_dim(void **s) {
    (void)s;
    fk_config c;
    fk_config_llama(&c, 40, 32, 2, 4, 2, 24, 16);
    c.head_dim = 16;
    fk_model a, b;
    CHECK(fk_model_init(&a, &c));
    fk_model_init_weights(&a, 3);
    CHECK(fk_hf_save(&a, tpath("hd"), FK_DT_F32));
    cJSON *j = read_json(tpath("hd/config.json"));
    assert_true(num(j, "head_dim") == 16);
    cJSON_Delete(j);
    fk_safetensors st;
    CHECK(fk_st_open(&st, tpath("hd/model.safetensors")));
    const fk_st_tensor *q = fk_st_find(&st, "model.layers.0.self_attn.q_proj.weight"), *k = fk_st_find(&st, "model.layers.0.self_attn.k_proj.weight"),
                       *o = fk_st_find(&st, "model.layers.0.self_attn.o_proj.weight");
    assert_int_equal(q->shape[0], 64); assert_int_equal(q->shape[1], 32);
    assert_int_equal(k->shape[0], 32); assert_int_equal(k->shape[1], 32);
    assert_int_equal(o->shape[0], 32); assert_int_equal(o->shape[1], 64);
    fk_st_close(&st);
    CHECK(fk_hf_load(&b, tpath("hd")));
    assert_int_equal(b.cfg.head_dim, 16);
    assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
    fk_model_free(&a); fk_model_free(&b);
}

// ------------------------------------------------------------------ broken configs

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *d = slurp(from, &n);
    CHECK(fk_write_file_atomic(to, d, n));
    free(d);
}

// dst = a copy of a golden folder's weights and config.json, with key set to `value` (JSON text),
// or removed when value is NULL (key NULL: the config unchanged).
static char *variant(const char *golden, const char *dst, const char *key, const char *value) {
    char *dir = tpath(dst);
    CHECK(fk_mkdir_p(dir));
    char from[800], to[800];
    DIR *d = opendir(golden_dir(golden));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "model", 5) != 0) continue;
        snprintf(from, sizeof from, "%s/%s", golden_dir(golden), e->d_name);
        snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
        copy_file(from, to);
    }
    closedir(d);
    snprintf(from, sizeof from, "%s/config.json", golden_dir(golden));
    cJSON *j = read_json(from);
    if (key) cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    if (key && value) {
        cJSON *v = cJSON_Parse(value);
        assert_non_null(v);
        cJSON_AddItemToObject(j, key, v);
    }
    char *text = cJSON_Print(j);
    snprintf(to, sizeof to, "%s/config.json", dir);
    CHECK(fk_write_file_atomic(to, text, strlen(text)));
    free(text);
    cJSON_Delete(j);
    return dir;
}

// Exact GELU: "gelu_python" reads as "gelu" does and is saved as "gelu"; a GELU model with RoPE
// (model_type fusekit) keeps the switch in its "fusekit" object; an exact-GELU GeGLU is no model.
static void test_gelu_exact(void **s) {
    (void)s;
    fk_model m;
    CHECK(fk_hf_load(&m, variant("gpt2_gelu", "gpy", "activation_function", "\"gelu_python\"")));
    assert_true(m.cfg.gelu_exact);
    double err = golden_logits_error(&m, golden_dir("gpt2_gelu"));
    if (!(err < TOL_LOGITS)) fail_msg("gelu_python: logits differ from the reference by %.3g", err);
    CHECK(fk_hf_save(&m, tpath("gpy_saved"), FK_DT_F32));
    cJSON *j = read_json(tpath("gpy_saved/config.json"));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "activation_function")->valuestring, "gelu");
    cJSON_Delete(j);
    char desc[512];
    fk_config_describe(&m.cfg, desc, sizeof desc);
    assert_non_null(strstr(desc, "gelu_exact=1"));
    fk_model_free(&m);
    fk_config c, b;
    fk_config_llama(&c, 40, 32, 2, 4, 2, 24, 16);
    c.mlp = FK_MLP_GELU;
    char *text = fk_hf_config_json(&c);
    assert_null(strstr(text, "gelu_exact"));  // off: not written
    free(text);
    c.gelu_exact = true;
    assert_int_equal(fk_config_arch(&c), FK_ARCH_FUSEKIT);
    text = fk_hf_config_json(&c);
    assert_non_null(strstr(text, "\"gelu_exact\""));
    CHECK(fk_hf_config_parse(text, "fusekit.json", &b));
    free(text);
    assert_true(b.gelu_exact);
    c.mlp = FK_MLP_GEGLU;
    expect_error(fk_config_validate(&c), FK_ERR_ARG, "gelu_exact", NULL);
}

// OLMo 2's keys as Olmo2Config reads them: rms_norm_eps absent is 1e-5 (not Llama's 1e-6), head_dim
// absent is hidden_size / num_attention_heads; grouped KV heads are olmo2 (k_norm over n_kv_head * head_dim).
static void test_olmo2_keys(void **s) {
    (void)s;
    fk_model m;
    CHECK(fk_hf_load(&m, variant("olmo2", "olmo2_eps", "rms_norm_eps", NULL)));
    assert_true(m.cfg.norm_eps == 1e-5f && m.cfg.head_dim == 8);
    fk_model_free(&m);
    CHECK(fk_hf_load(&m, variant("olmo2_gqa", "olmo2_hd", "head_dim", NULL)));
    assert_true(m.cfg.n_kv_head == 2 && m.cfg.head_dim == 8 && m.cfg.qk_norm_whole && m.cfg.no_pre_norms);
    assert_int_equal(fk_model_find_param(&m, "layers.0.attn.k_norm.weight")->numel, 16);
    assert_int_equal(fk_config_arch(&m.cfg), FK_ARCH_OLMO2);
    fk_model_free(&m);
}

// MPT's keys: what transformers' MptForCausalLM does not compute is refused naming the key and
// value; alibi_bias_max and softmax_scale are read (MosaicML's and llama.cpp's meaning).
static void test_mpt_keys(void **s) {
    (void)s;
    fk_model m;
    const char *attn = "{\"alibi\": true, \"alibi_bias_max\": 4, \"clip_qkv\": null, \"softmax_scale\": 0.25}";
    CHECK(fk_hf_load(&m, variant("mpt", "mpt_b4", "attn_config", attn)));
    assert_true(m.cfg.alibi_bias_max == 4 && m.cfg.clip_qkv == 0 && m.cfg.attn_scale == 0.25f && m.cfg.pos == FK_POS_NONE);
    fk_model_free(&m);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_nb", "no_bias", "false")), FK_ERR_UNSUPPORTED, "mpt_nb/config.json", "\"no_bias\" is false");
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_ls", "logit_scale", "2.0")), FK_ERR_UNSUPPORTED, "logit_scale", NULL);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_nt", "norm_type", "\"rmsnorm\"")), FK_ERR_UNSUPPORTED, "norm_type", "rmsnorm");
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_er", "expansion_ratio", "0")), FK_ERR_FORMAT, "expansion_ratio", NULL);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_na", "attn_config", "{\"alibi\": false}")), FK_ERR_UNSUPPORTED, "attn_config.alibi",
                 "false");
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_qk", "attn_config", "{\"qk_ln\": true}")), FK_ERR_UNSUPPORTED, "attn_config.qk_ln", NULL);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_mq", "attn_config", "{\"attn_type\": \"multiquery_attention\"}")), FK_ERR_UNSUPPORTED,
                 "attn_config.attn_type", "multiquery_attention");
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_pl", "attn_config", "{\"prefix_lm\": true}")), FK_ERR_UNSUPPORTED, "prefix_lm", NULL);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_cq", "attn_config", "{\"clip_qkv\": -1}")), FK_ERR_FORMAT, "clip_qkv", NULL);
    // keys of attn_config and ffn_config are named by their path in config.json
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_cq2", "attn_config", "{\"clip_qkv\": -1}")), FK_ERR_FORMAT, "\"attn_config.clip_qkv\" is -1",
                 NULL);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_cq3", "attn_config", "{\"clip_qkv\": \"x\"}")), FK_ERR_FORMAT,
                 "\"attn_config.clip_qkv\" must be a number", NULL);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_ss", "attn_config", "{\"softmax_scale\": true}")), FK_ERR_FORMAT,
                 "\"attn_config.softmax_scale\" must be a number", NULL);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_bm", "attn_config", "{\"alibi_bias_max\": [8]}")), FK_ERR_FORMAT,
                 "\"attn_config.alibi_bias_max\" must be a number", NULL);
    expect_error(fk_hf_load(&m, variant("mpt", "mpt_ft", "ffn_config", "{\"ffn_type\": \"te_ln_mlp\"}")), FK_ERR_UNSUPPORTED,
                 "\"ffn_config.ffn_type\" is \"te_ln_mlp\"", NULL);
    // a model saved as mpt loads as transformers computes it: an ALiBi model with the tanh GELU is not mpt
    fk_config c;
    CHECK(fk_hf_load(&m, golden_dir("mpt")));
    c = m.cfg;
    fk_model_free(&m);
    assert_int_equal(fk_config_arch(&c), FK_ARCH_MPT);
    c.gelu_exact = false;
    assert_int_equal(fk_config_arch(&c), FK_ARCH_FUSEKIT);
    c.gelu_exact = true;
    c.alibi_bias_max = 2.5f;  // MptAttentionConfig's alibi_bias_max is an int
    assert_int_equal(fk_config_arch(&c), FK_ARCH_FUSEKIT);
}

static void test_bad_configs(void **s) {
    (void)s;
    fk_model m;
    // model types and features fusekit does not implement: refused, naming file and key
    // (falcon was the example until it became a row: issue 18)
    expect_error(fk_hf_load(&m, variant("llama", "rwkv", "model_type", "\"rwkv\"")), FK_ERR_UNSUPPORTED, "rwkv/config.json", "model_type \"rwkv\"");
    // RoPE keys of another type (linear, llama3: test_hostile_config; yarn, dynamic, longrope: test_rope)
    expect_error(fk_hf_load(&m, variant("llama", "rs", "rope_scaling", "{\"type\": \"yarn\", \"factor\": 2.0, \"low_freq_factor\": 1.0}")), FK_ERR_UNSUPPORTED,
                 "rs/config.json", "rope_scaling");
    assert_non_null(strstr(fk_last_error(), "yarn"));
    expect_error(fk_hf_load(&m, variant("llama3", "rs3", "rope_parameters", "{\"rope_type\": \"dynamic\", \"factor\": 8.0, \"high_freq_factor\": 4.0}")), FK_ERR_UNSUPPORTED,
                 "rs3/config.json", "rope_parameters");
    assert_non_null(strstr(fk_last_error(), "dynamic"));
    expect_error(fk_hf_load(&m, variant("llama", "mlpb", "mlp_bias", "true")), FK_ERR_UNSUPPORTED, "mlpb/config.json", "mlp_bias");
    expect_error(fk_hf_load(&m, variant("llama", "act", "hidden_act", "\"gelu\"")), FK_ERR_UNSUPPORTED, "act/config.json", "hidden_act");
    expect_error(fk_hf_load(&m, variant("gpt2", "gact", "activation_function", "\"relu\"")), FK_ERR_UNSUPPORTED, "gact/config.json",
                 "activation_function");
    assert_non_null(strstr(fk_last_error(), "gelu (exact)"));  // the exact-GELU names are listed
    expect_error(fk_hf_load(&m, variant("gpt2", "gact10", "activation_function", "\"gelu_10\"")), FK_ERR_UNSUPPORTED, "gact10/config.json",
                 "\"gelu_10\"");
    expect_error(fk_hf_load(&m, variant("gpt2", "sil", "scale_attn_by_inverse_layer_idx", "true")), FK_ERR_UNSUPPORTED, "sil/config.json",
                 "scale_attn_by_inverse_layer_idx");
    // Qwen2's window 4096 with use_sliding_window is at least the context (64): no window
    CHECK(fk_hf_load(&m, variant("qwen2", "usw", "use_sliding_window", "true")));
    assert_false(arch_any_window(&m.cfg));
    fk_model_free(&m);
    expect_error(fk_hf_load(&m, variant("llama", "quant", "quantization_config", "{\"quant_method\": \"gptq\", \"bits\": 4}")), FK_ERR_UNSUPPORTED,
                 "quant/config.json", "quantization_config");
    // hidden_size not a multiple of num_attention_heads without head_dim
    expect_error(fk_hf_load(&m, variant("llama", "heads", "num_attention_heads", "5")), FK_ERR_FORMAT, "heads/config.json", "head_dim");
    // keys that change tensor shapes: the tensor and both shapes are named
    expect_error(fk_hf_load(&m, variant("llama", "kv", "num_key_value_heads", "4")), FK_ERR_FORMAT, "model.layers.0.self_attn.k_proj.weight",
                 "has shape [16, 32] but config.json implies [32, 32]");
    expect_error(fk_hf_load(&m, variant("llama", "hd", "head_dim", "16")), FK_ERR_FORMAT, "model.layers.0.self_attn.q_proj.weight",
                 "implies [64, 32]");
    // untied config over a tied checkpoint: the head is missing
    expect_error(fk_hf_load(&m, variant("qwen2_tied", "untied", "tie_word_embeddings", "false")), FK_ERR_FORMAT, "lm_head.weight", "missing");
    // Mistral's sliding window: none, or one at least the context, is full attention (no window);
    // a smaller one masks every layer (the context stays max_position_embeddings), so a window of 8
    // over the golden's 16 tokens changes the logits
    CHECK(fk_hf_load(&m, variant("mistral", "sw_null", "sliding_window", "null")));
    assert_int_equal(m.cfg.max_seq, 64);
    assert_false(arch_any_window(&m.cfg));
    assert_true(golden_logits_error(&m, golden_dir("mistral")) < TOL_LOGITS);
    fk_model_free(&m);
    CHECK(fk_hf_load(&m, variant("mistral", "sw_big", "sliding_window", "4096")));
    assert_int_equal(m.cfg.max_seq, 64);
    assert_false(arch_any_window(&m.cfg));
    fk_model_free(&m);
    CHECK(fk_hf_load(&m, variant("mistral", "sw_absent", "sliding_window", NULL)));  // transformers' 4096
    assert_false(arch_any_window(&m.cfg));
    fk_model_free(&m);
    CHECK(fk_hf_load(&m, variant("mistral", "sw_small", "sliding_window", "8")));
    assert_int_equal(m.cfg.max_seq, 64);
    assert_int_equal(m.cfg.sliding_window, 8);
    assert_int_equal(m.cfg.sliding[0] + m.cfg.sliding[1], 2);
    fk_model full;
    CHECK(fk_hf_load(&full, golden_dir("mistral")));
    int32_t ids[16];
    for (int i = 0; i < 16; i++) ids[i] = (7 * i + 3) % 96;
    CHECK(fk_model_forward(&m, ids, NULL, 1, 16, false, NULL));
    CHECK(fk_model_forward(&full, ids, NULL, 1, 16, false, NULL));
    const float *a = fk_model_logits(&m), *b = fk_model_logits(&full);
    double d_in = 0, d_out = 0;  // positions 0..7 see at most 8 keys: the same; later ones do not
    for (int64_t i = 0; i < 16 * 96; i++) *(i < 8 * 96 ? &d_in : &d_out) = fmax(*(i < 8 * 96 ? &d_in : &d_out), fabs(a[i] - b[i]));
    assert_true(d_in == 0 && d_out > 1e-3);
    fk_model_free(&full);
    fk_model_free(&m);
    expect_error(fk_hf_load(&m, variant("mistral", "sw_zero", "sliding_window", "0")), FK_ERR_FORMAT, "sw_zero/config.json", "sliding_window");
    // a window with RoPE scaling: Mistral scales its sliding layers' RoPE, fusekit's sliding layers would not
    expect_error(fk_hf_load(&m, variant("mistral_swa", "sw_scaled", "rope_parameters", "{\"rope_type\": \"linear\", \"factor\": 2.0}")),
                 FK_ERR_UNSUPPORTED, "sw_scaled/config.json", "sliding_window");
}

// ------------------------------------------------------------------ broken weight files

// A golden folder whose model.safetensors is rewritten with tensor `name` changed by `edit`
// (or dropped when edit is NULL).
static void write_edited(const char *golden, const char *dst, const char *name, void (*edit)(fk_st_entry *e, void *buf)) {
    char *dir = variant(golden, dst, NULL, NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/golden/%s/model.safetensors", FK_TEST_DATA, golden);
    fk_safetensors st;
    CHECK(fk_st_open(&st, path));
    fk_st_entry *e = calloc((size_t)st.n_tensors, sizeof *e);
    void *buf = NULL;
    int n = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const fk_st_tensor *t = &st.tensors[i];
        fk_st_entry *x = &e[n];
        x->name = t->name;
        x->dtype = t->dtype;
        x->ndim = t->ndim;
        memcpy(x->shape, t->shape, sizeof t->shape);
        x->data = t->data;
        if (strcmp(t->name, name) == 0) {
            if (!edit) continue;  // dropped
            buf = malloc(t->nbytes);
            memcpy(buf, t->data, t->nbytes);
            edit(x, buf);
            x->data = buf;
        }
        n++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(fk_st_write(path, e, n, NULL));
    free(buf); free(e);
    fk_st_close(&st);
}

static void to_i8(fk_st_entry *e, void *buf) { (void)buf; e->dtype = FK_DT_I8; }
static void to_i32(fk_st_entry *e, void *buf) { (void)buf; e->dtype = FK_DT_I32; }
static void put_nan(fk_st_entry *e, void *buf) { (void)e; uint16_t nan16 = 0x7fc0; memcpy((char *)buf + 2 * 5, &nan16, 2); }

// Replaces the first occurrence of `from` in a file's bytes with `to` (same length).
static void patch_file(const char *path, const char *from, const char *to) {
    size_t n;
    char *d = slurp(path, &n);
    char *p = memmem(d, n, from, strlen(from));
    assert_non_null(p);
    assert_int_equal(strlen(from), strlen(to));
    memcpy(p, to, strlen(to));
    CHECK(fk_write_file_atomic(path, d, n));
    free(d);
}

static void test_bad_weights(void **s) {
    (void)s;
    fk_model m;
    // a tensor the config needs is absent
    write_edited("llama", "w_missing", "model.layers.1.mlp.up_proj.weight", NULL);
    expect_error(fk_hf_load(&m, tpath("w_missing")), FK_ERR_FORMAT, "tensor model.layers.1.mlp.up_proj.weight is missing", "w_missing");
    // integer dtypes are refused, naming file, tensor and dtype (F64 converts; quantized types are unknown dtypes)
    write_edited("llama", "w_i8", "model.norm.weight", to_i8);
    expect_error(fk_hf_load(&m, tpath("w_i8")), FK_ERR_FORMAT, "w_i8/model.safetensors", "model.norm.weight has dtype I8");
    write_edited("llama", "w_i32", "model.layers.0.input_layernorm.weight", to_i32);
    expect_error(fk_hf_load(&m, tpath("w_i32")), FK_ERR_FORMAT, "w_i32/model.safetensors", "input_layernorm.weight has dtype I32");
    variant("llama_bf16", "w_f8", NULL, NULL);
    patch_file(tpath("w_f8/model.safetensors"), "\"BF16\"", "\"F8E4\"");
    expect_error(fk_hf_load(&m, tpath("w_f8")), FK_ERR_FORMAT, "w_f8/model.safetensors", "unknown dtype F8E4");
    // a non-finite weight names the tensor and the file
    write_edited("llama_bf16", "w_nan", "model.layers.0.mlp.down_proj.weight", put_nan);
    expect_error(fk_hf_load(&m, tpath("w_nan")), FK_ERR_NUMERIC, "model.layers.0.mlp.down_proj.weight", "w_nan/model.safetensors");
    // header cut short: the length prefix points past the end of the file
    char *dir = variant("llama", "w_hdr", NULL, NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t n;
    char *d = slurp(path, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)d[i];
    CHECK(fk_write_file_atomic(path, d, 8 + hlen / 2));
    expect_error(fk_hf_load(&m, dir), FK_ERR_FORMAT, "w_hdr/model.safetensors", "header length");
    // a header that fits but is not JSON
    memset(d + 8, '{', 4);
    CHECK(fk_write_file_atomic(path, d, n));
    expect_error(fk_hf_load(&m, dir), FK_ERR_FORMAT, "w_hdr/model.safetensors", "header is not a JSON object");
    free(d);
    // shards: the index names a file that is not there, or has no weight_map
    dir = variant("llama_sharded", "w_shard", NULL, NULL);
    snprintf(path, sizeof path, "%s/model-00002-of-00003.safetensors", dir);
    assert_int_equal(remove(path), 0);
    expect_error(fk_hf_load(&m, dir), FK_ERR_IO, "w_shard/model-00002-of-00003.safetensors", NULL);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    patch_file(path, "\"weight_map\"", "\"weight_mop\"");
    expect_error(fk_hf_load(&m, dir), FK_ERR_FORMAT, "w_shard/model.safetensors.index.json", "weight_map");
    // neither model.safetensors nor an index
    assert_int_equal(remove(path), 0);
    expect_error(fk_hf_load(&m, dir), FK_ERR_IO, "w_shard/model.safetensors", NULL);
}

// Golden folder name's config.json with key set to the JSON text value (NULL: removed), parsed.
static fk_status parse_golden_with(const char *name, const char *key, const char *value, fk_config *c) {
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", golden_dir(name));
    cJSON *j = read_json(path);
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    if (value) cJSON_AddItemToObject(j, key, cJSON_Parse(value));
    char *text = cJSON_PrintUnformatted(j);
    fk_status st = fk_hf_config_parse(text, path, c);
    free(text);
    cJSON_Delete(j);
    return st;
}

// gpt_neox and phi keys: transformers' defaults when absent (exact GELU, parallel residual, rotary
// share 0.25 / 0.5) and refusals naming the key (a share turning no pair or an odd number of dims,
// another RoPE type, qk_layernorm).
static void test_neox_phi_keys(void **s) {
    (void)s;
    fk_config c;
    CHECK(parse_golden_with("gpt_neox_seq", "hidden_act", NULL, &c));
    assert_true(c.gelu_exact);
    CHECK(parse_golden_with("gpt_neox_seq", "use_parallel_residual", NULL, &c));
    assert_int_equal(c.residual, FK_RESID_PARALLEL);
    CHECK(parse_golden_with("gpt_neox", "rope_parameters", NULL, &c));  // no key at all: rotary_pct 0.25 of 16
    assert_int_equal(c.rotary_dim, 4);
    assert_true(c.rope_theta == 10000.0f);
    CHECK(parse_golden_with("gpt_neox", "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 500.0}", &c));
    assert_int_equal(c.rotary_dim, 4);
    assert_true(c.rope_theta == 500.0f);
    // phi's default share 0.5 of head_dim 10 turns 5 dims: refused (transformers' tables would not fit either)
    expect_error(parse_golden_with("phi", "rope_parameters", NULL, &c), FK_ERR_ARG, "rotary_dim is 5", NULL);
    expect_error(parse_golden_with("gpt_neox", "rope_parameters", "{\"rope_type\": \"default\", \"partial_rotary_factor\": 0.01}", &c),
                 FK_ERR_FORMAT, "rotary_pct", "0 of the 16");
    expect_error(parse_golden_with("phi", "rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": 2.0}", &c), FK_ERR_UNSUPPORTED,
                 "rope_parameters", "yarn");
    expect_error(parse_golden_with("phi", "rope_parameters", "{\"rope_type\": \"default\", \"partial_rotary_factor\": 0.3}", &c),
                 FK_ERR_ARG, "rotary_dim is 3", "partial_rotary_factor");
    expect_error(parse_golden_with("phi", "qk_layernorm", "true", &c), FK_ERR_UNSUPPORTED, "qk_layernorm", NULL);
    // shares outside (0, 1] name the value and the range (was: "must be a number in (0, 1.5)"); a huge
    // one is not cast to an integer
    expect_error(parse_golden_with("gpt_neox", "rope_parameters", "{\"rope_type\": \"default\", \"partial_rotary_factor\": 1.2}", &c),
                 FK_ERR_FORMAT, "is 1.2", "(0, 1]");
    expect_error(parse_golden_with("gpt_neox", "rope_parameters", "{\"rope_type\": \"default\", \"partial_rotary_factor\": -1}", &c),
                 FK_ERR_FORMAT, "partial_rotary_factor", NULL);
    expect_error(parse_golden_with("gpt_neox", "rope_parameters", "{\"rope_type\": \"default\", \"partial_rotary_factor\": 1e29}", &c),
                 FK_ERR_FORMAT, "(0, 1]", NULL);
}

// stablelm keys: StableLmConfig's defaults when absent (rotary share 0.25, no q/k/v bias, sequential,
// no QK-norm), qk_layernorm true as StableLM 2 12B's per-head LayerNorms, and refusals naming the key
// (other RoPE types, activations).
static void test_stablelm_keys(void **s) {
    (void)s;
    fk_config c;
    CHECK(parse_golden_with("stablelm_par", "rope_parameters", NULL, &c));
    assert_int_equal(c.rotary_dim, 4);
    assert_true(c.rope_theta == 10000.0f);
    CHECK(parse_golden_with("stablelm_par", "use_parallel_residual", NULL, &c));
    assert_int_equal(c.residual, FK_RESID_SEQUENTIAL);
    CHECK(parse_golden_with("stablelm", "use_qkv_bias", NULL, &c));
    assert_false(c.bias_qkv || c.bias_out || c.bias_mlp);
    assert_true(c.bias_norm && c.mlp == FK_MLP_SWIGLU && c.norm == FK_NORM_LAYERNORM);
    CHECK(parse_golden_with("stablelm", "qk_layernorm", "true", &c));  // (refused before StableLM 2 12B's form was computed)
    assert_true(c.qk_norm && c.qk_norm_ln && !c.qk_norm_whole);
    assert_int_equal(fk_config_arch(&c), FK_ARCH_STABLELM);
    CHECK(parse_golden_with("stablelm_qkln", "qk_layernorm", NULL, &c));
    assert_false(c.qk_norm || c.qk_norm_ln);
    expect_error(parse_golden_with("stablelm", "qk_layernorm", "1.5", &c), FK_ERR_FORMAT, "qk_layernorm", NULL);
    expect_error(parse_golden_with("stablelm", "rope_parameters", "{\"rope_type\": \"linear\", \"factor\": 2.0}", &c), FK_ERR_UNSUPPORTED,
                 "rope_parameters", "linear");
    expect_error(parse_golden_with("stablelm", "hidden_act", "\"gelu\"", &c), FK_ERR_UNSUPPORTED, "hidden_act", "gelu");
}

// falcon keys: the layouts transformers builds (sequential: written as starcoder2, the same computation),
// ALiBi and the layouts it cannot build refused naming the key; GGUF export refused naming llama.cpp's falcon.
static void test_falcon_keys(void **s) {
    (void)s;
    fk_config c;
    CHECK(parse_golden_with("falcon", "parallel_attn", "false", &c));
    assert_int_equal(c.residual, FK_RESID_SEQUENTIAL);
    assert_int_equal(c.n_kv_head, 1);
    assert_int_equal(fk_config_arch(&c), FK_ARCH_STARCODER2);
    CHECK(parse_golden_with("falcon", "multi_query", "false", &c));
    assert_int_equal(c.n_kv_head, 4);
    assert_int_equal(c.residual, FK_RESID_PARALLEL_SHARED);
    assert_int_equal(fk_config_arch(&c), FK_ARCH_FALCON);
    CHECK(parse_golden_with("falcon_40b", "num_ln_in_parallel_attn", "1", &c));
    assert_int_equal(c.residual, FK_RESID_PARALLEL_SHARED);
    assert_int_equal(c.n_kv_head, 2);
    CHECK(parse_golden_with("falcon", "activation", NULL, &c));
    assert_true(c.gelu_exact);
    expect_error(parse_golden_with("falcon", "alibi", "true", &c), FK_ERR_UNSUPPORTED, "\"alibi\"", "falcon");
    expect_error(parse_golden_with("falcon_40b", "parallel_attn", "false", &c), FK_ERR_UNSUPPORTED, "parallel_attn", "new_decoder_architecture");
    expect_error(parse_golden_with("falcon_40b", "num_kv_heads", "3", &c), FK_ERR_FORMAT, "num_kv_heads", "3");
    expect_error(parse_golden_with("falcon", "num_ln_in_parallel_attn", "2", &c), FK_ERR_UNSUPPORTED, "num_ln_in_parallel_attn", "2");
    const char *arch;
    CHECK(parse_golden_with("falcon", "bias", NULL, &c));
    expect_error(fk_gguf_model_arch(&c, &arch), FK_ERR_UNSUPPORTED, "llama.cpp's falcon", "exact GELU");
}

// falcon as llama.cpp's falcon GGUF: Falcon 7B's form with the tanh GELU (llama.cpp's; the golden's exact
// GELU is refused above) exports and imports back to the same config and weights; attn_qkv holds the
// rows of transformers' multi-query query_key_value ([all q; k; v]) unchanged, as llama.cpp's converter
// writes them; one attn_norm, no biases, the tied head as token_embd.
static void test_falcon_gguf(void **s) {
    (void)s;
    fk_model m, b;
    char *dir = golden_dir("falcon"), path[700];
    CHECK(fk_hf_load(&m, dir));
    m.cfg.gelu_exact = false;
    m.cfg.bos_id = m.cfg.eos_id = -1;  // (the GGUF carries no tokenizer ids here)
    char *out = tpath("falcon.gguf");
    fk_gguf_export_stats st;
    CHECK(fk_gguf_export(&m, NULL, out, FK_DT_F32, "falcon", &st));
    assert_string_equal(st.arch, "falcon");
    fk_gguf g;
    CHECK(fk_gguf_open(out, &g));
    assert_null(fk_gguf_find_tensor(&g, "blk.0.attn_norm_2.weight"));
    assert_null(fk_gguf_find_tensor(&g, "output.weight"));
    assert_non_null(fk_gguf_find_tensor(&g, "blk.1.attn_norm.bias"));
    const fk_gguf_tensor *qkv = fk_gguf_find_tensor(&g, "blk.1.attn_qkv.weight");
    assert_non_null(qkv);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fk_safetensors st_ref;
    CHECK(fk_st_open(&st_ref, path));
    const fk_st_tensor *ref = fk_st_find(&st_ref, "transformer.h.1.self_attention.query_key_value.weight");
    assert_non_null(ref);
    assert_int_equal(qkv->nbytes, (uint64_t)ref->numel * sizeof(float));
    assert_memory_equal(qkv->data, ref->data, (size_t)qkv->nbytes);
    fk_st_close(&st_ref);
    fk_gguf_close(&g);
    CHECK(fk_gguf_import(out, &b, NULL));
    assert_memory_equal(&m.cfg, &b.cfg, sizeof m.cfg);
    assert_memory_equal(m.w, b.w, (size_t)m.n_floats * sizeof(float));
    assert_int_equal(fk_config_arch(&b.cfg), FK_ARCH_FALCON);
    print_message("  falcon (tanh GELU) as GGUF falcon and back: config and weights exact, attn_qkv = query_key_value\n");
    fk_model_free(&m);
    fk_model_free(&b);
}

// ------------------------------------------------------------------ mixture of experts

// The MoE references (make_golden.py, each family's transformers class): 4 experts, top 2, experts 16 wide.
typedef struct {
    const char *name;
    fk_arch arch;
    bool norm;             // norm_topk_prob (Mixtral: always)
    int64_t shared;        // the shared expert's width (Qwen2-MoE), 0: none
    const char *dense;     // per layer: '1' dense (mlp_only_layers), '0' MoE
    int64_t dense_ffn;     // the dense layers' width
    int64_t head_dim;
    bool qk_norm, qk_whole, bias_qkv;
} moe_spec;

static const moe_spec moe_goldens[] = {
    {"mixtral", FK_ARCH_MIXTRAL, true, 0, "00", 0, 8, false, false, false},
    {"qwen2_moe", FK_ARCH_QWEN2_MOE, false, 24, "010", 40, 8, false, false, true},
    {"qwen3_moe", FK_ARCH_QWEN3_MOE, true, 0, "00", 0, 16, true, false, false},
    {"olmoe", FK_ARCH_OLMOE, false, 0, "00", 0, 8, true, true, false},
};
#define N_MOE (int)(sizeof moe_goldens / sizeof moe_goldens[0])

// config.json of each reference read as its class reads it: experts, top-k, their width, renormalisation, the
// MoE layers and their shared expert (gate), the attention switches; written back as the same model_type.
static void check_moe_config(const moe_spec *ms, const fk_config *c) {
    assert_int_equal(fk_config_arch(c), ms->arch);
    assert_true(c->n_expert == 4 && c->n_expert_used == 2 && c->expert_ffn == 16 && c->expert_norm == ms->norm);
    assert_int_equal(c->shared_gate, ms->shared > 0);
    assert_int_equal(c->n_layer, (int64_t)strlen(ms->dense));
    for (int64_t l = 0; l < c->n_layer; l++) {
        bool dense = ms->dense[l] == '1';
        assert_int_equal(c->moe[l], !dense);
        assert_int_equal(fk_config_experts(c, l), dense ? 0 : 4);
        assert_int_equal(c->ffn[l], dense ? ms->dense_ffn : ms->shared);
    }
    assert_true(c->head_dim == ms->head_dim && c->qk_norm == ms->qk_norm && c->qk_norm_whole == ms->qk_whole && c->bias_qkv == ms->bias_qkv);
    assert_true(!c->bias_out && !c->bias_mlp && c->mlp == FK_MLP_SWIGLU && c->norm == FK_NORM_RMSNORM && !c->tied);
}

static void test_moe_load_save(void **s) {
    (void)s;
    for (int i = 0; i < N_MOE; i++) {
        fk_model m;
        CHECK(fk_hf_load(&m, golden_dir(moe_goldens[i].name)));
        check_moe_config(&moe_goldens[i], &m.cfg);
        double err = golden_logits_error(&m, golden_dir(moe_goldens[i].name));
        print_message("  %-14s logits max abs error %.2e\n", moe_goldens[i].name, err);
        if (!(err < TOL_LOGITS)) fail_msg("%s: logits differ from the reference by %.3g", moe_goldens[i].name, err);
        fk_model_free(&m);
        save_like_reference(moe_goldens[i].name, moe_goldens[i].arch, FK_DT_F32);
    }
}

// transformers 5's in-memory form, saved with save_original_format=False: each layer's experts stacked in
// mlp.experts.gate_up_proj [E, 2F, C] and down_proj [E, C, F] (Mixtral: mlp.gate for block_sparse_moe.gate),
// loads to the same weights as the per-expert checkpoint of the same model; saved per expert.
static void test_moe_stacked(void **s) {
    (void)s;
    const char *pairs[][2] = {{"mixtral_stacked", "mixtral"}, {"qwen2_moe_stacked", "qwen2_moe"}};
    for (int i = 0; i < 2; i++) {
        fk_model a, b;
        CHECK(fk_hf_load(&a, golden_dir(pairs[i][0])));
        CHECK(fk_hf_load(&b, golden_dir(pairs[i][1])));
        assert_memory_equal(&a.cfg, &b.cfg, sizeof a.cfg);
        assert_int_equal(a.n_floats, b.n_floats);
        assert_memory_equal(a.w, b.w, (size_t)a.n_floats * sizeof(float));
        char *dir = tpath(pairs[i][0]);
        CHECK(fk_hf_save(&a, dir, FK_DT_F32));
        compare_weights(golden_dir(pairs[i][1]), dir, FK_DT_F32, true);
        print_message("  %s: the stacked experts load as %s's per-expert tensors, bit for bit\n", pairs[i][0], pairs[i][1]);
        fk_model_free(&a);
        fk_model_free(&b);
    }
}

// MoE keys as transformers reads them, and refusals naming the key: what fusekit does not compute
// (OLMoE's clip_qkv after its QK-norm, Qwen-MoE sliding windows), counts out of range, layer lists.
static void test_moe_keys(void **s) {
    (void)s;
    fk_config c;
    // decoder_sparse_step 3: layer 2 is MoE (layer l when (l + 1) % 3 == 0), layer 1 also by mlp_only_layers
    CHECK(parse_golden_with("qwen2_moe", "decoder_sparse_step", "3", &c));
    assert_true(!c.moe[0] && !c.moe[1] && c.moe[2] && c.ffn[0] == 40 && c.ffn[2] == 24);
    expect_error(parse_golden_with("qwen2_moe", "decoder_sparse_step", "2", &c), FK_ERR_FORMAT, "\"decoder_sparse_step\" (2)", "mlp_only_layers");
    expect_error(parse_golden_with("qwen2_moe", "decoder_sparse_step", "0", &c), FK_ERR_FORMAT, "decoder_sparse_step", "0");
    expect_error(parse_golden_with("qwen2_moe", "mlp_only_layers", "[3]", &c), FK_ERR_FORMAT, "mlp_only_layers", "0..2");
    // num_experts 0: transformers' Qwen2-MoE makes every layer dense (intermediate_size): qwen2's computation
    CHECK(parse_golden_with("qwen2_moe", "num_experts", "0", &c));
    assert_true(c.n_expert == 0 && !c.moe[0] && c.ffn[0] == 40 && c.ffn[2] == 40);
    assert_int_equal(fk_config_arch(&c), FK_ARCH_QWEN2);
    expect_error(parse_golden_with("mixtral", "num_local_experts", "0", &c), FK_ERR_FORMAT, "num_local_experts", "1..");
    expect_error(parse_golden_with("mixtral", "num_experts_per_tok", "5", &c), FK_ERR_FORMAT, "num_experts_per_tok", "1..4");
    CHECK(parse_golden_with("mixtral", "num_local_experts", NULL, &c));  // MixtralConfig's default: 8
    assert_int_equal(c.n_expert, 8);
    CHECK(parse_golden_with("mixtral", "num_experts", "4", &c));  // attribute_map's other spelling, the same count
    expect_error(parse_golden_with("mixtral", "num_experts", "6", &c), FK_ERR_FORMAT, "num_local_experts", "differ");
    // training-time keys: router_jitter_noise and the load-balancing loss change no forward computation
    CHECK(parse_golden_with("mixtral", "router_jitter_noise", "0.1", &c));
    CHECK(parse_golden_with("olmoe", "output_router_logits", "true", &c));
    assert_int_equal(fk_config_arch(&c), FK_ARCH_OLMOE);
    expect_error(parse_golden_with("olmoe", "clip_qkv", "8.0", &c), FK_ERR_UNSUPPORTED, "clip_qkv", "null");
    expect_error(parse_golden_with("qwen3_moe", "use_sliding_window", "true", &c), FK_ERR_UNSUPPORTED, "use_sliding_window", "false");
    expect_error(parse_golden_with("qwen2_moe", "use_sliding_window", "true", &c), FK_ERR_UNSUPPORTED, "use_sliding_window", "false");
    // a Mixtral with a window on every layer (Mistral's key) is mixtral
    CHECK(parse_golden_with("mixtral", "sliding_window", "8", &c));
    assert_true(c.sliding_window == 8 && c.sliding[1] && fk_config_arch(&c) == FK_ARCH_MIXTRAL);
    // experts per layer (a folded model): model_type fusekit with fusekit_experts, read back the same
    CHECK(parse_golden_with("qwen2_moe", "use_cache", "true", &c));
    c.experts[2] = 3;
    assert_int_equal(fk_config_arch(&c), FK_ARCH_FUSEKIT);
    char *json = fk_hf_config_json(&c);
    assert_non_null(strstr(json, "\"fusekit_experts\""));
    fk_config r;
    CHECK(fk_hf_config_parse(json, "fusekit", &r));
    free(json);
    assert_memory_equal(&c, &r, sizeof c);
}

// Falcon 40B as released (two norms, no biases; tanh GELU here) and Falcon 2's new decoder from one
// norm, both with 2 KV heads, as llama.cpp's falcon: attn_qkv is convert_hf_to_gguf.py's regrouping of
// query_key_value (per KV head [q x G; k; v] into all queries, all keys, all values), head_count_kv 2,
// ln_attn as attn_norm_2 and ln_mlp as attn_norm (its graph feeds the FFN attn_norm); imported back
// with config and weights exact and the golden's logits (1e-4).
static void test_falcon_new_decoder_gguf(void **s) {
    (void)s;
    static const char *const names[] = {"falcon_40b_tanh", "falcon2"};
    for (int k = 0; k < 2; k++) {
        fk_model m, b;
        char *dir = golden_dir(names[k]), path[700];
        CHECK(fk_hf_load(&m, dir));
        char *out = tpath("falcon_nd.gguf");
        fk_gguf_export_stats st;
        CHECK(fk_gguf_export(&m, NULL, out, FK_DT_F32, names[k], &st));
        assert_string_equal(st.arch, "falcon");
        fk_gguf g;
        CHECK(fk_gguf_open(out, &g));
        bool two = m.cfg.residual == FK_RESID_PARALLEL;
        assert_int_equal(fk_gguf_find_tensor(&g, "blk.1.attn_norm_2.weight") != NULL, two);
        assert_int_equal(fk_gguf_find_tensor(&g, "output.weight") != NULL, !m.cfg.tied);
        int64_t kv;
        CHECK(fk_gguf_get_i64(&g, "falcon.attention.head_count_kv", &kv));
        assert_int_equal(kv, 2);
        // the converter's regrouping of transformers' query_key_value, row by row
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        fk_safetensors ref;
        CHECK(fk_st_open(&ref, path));
        const fk_st_tensor *hf = fk_st_find(&ref, "transformer.h.1.self_attention.query_key_value.weight");
        const fk_gguf_tensor *qkv = fk_gguf_find_tensor(&g, "blk.1.attn_qkv.weight");
        assert_non_null(hf);
        assert_non_null(qkv);
        assert_int_equal(qkv->nbytes, (uint64_t)hf->numel * sizeof(float));
        int64_t H = m.cfg.n_head, KV = m.cfg.n_kv_head, G = H / KV, hd = m.cfg.head_dim, C = m.cfg.d_model;
        const float *from = hf->data, *to = qkv->data;
        for (int64_t gi = 0; gi < KV; gi++)
            for (int64_t j = 0; j < G + 2; j++) {  // head j of group gi: a query, then the key, then the value
                int64_t dst = j < G ? gi * G + j : j == G ? H + gi : H + KV + gi;
                assert_memory_equal(to + dst * hd * C, from + (gi * (G + 2) + j) * hd * C, (size_t)(hd * C) * sizeof(float));
            }
        fk_st_close(&ref);
        fk_gguf_close(&g);
        CHECK(fk_gguf_import(out, &b, NULL));
        m.cfg.bos_id = m.cfg.eos_id = -1;  // (the GGUF carries no tokenizer ids here)
        assert_memory_equal(&m.cfg, &b.cfg, sizeof m.cfg);
        assert_memory_equal(m.w, b.w, (size_t)m.n_floats * sizeof(float));
        double err = golden_logits_error(&b, dir);
        print_message("  %-15s as GGUF falcon (%s) and back: config and weights exact, logits vs transformers %.2e\n", names[k],
                      two ? "attn_norm_2" : "one norm", err);
        assert_true(err < TOL_LOGITS);
        fk_model_free(&m);
        fk_model_free(&b);
    }
    // with biases, two norms are gptneox's claim (which has every bias); without them and with exact GELU, refused
    fk_model m;
    CHECK(fk_hf_load(&m, golden_dir("falcon_40b_tanh")));
    m.cfg.gelu_exact = true;
    expect_error(fk_gguf_export(&m, NULL, tpath("f.gguf"), FK_DT_F32, "f", NULL), FK_ERR_UNSUPPORTED, "falcon", "GELU");
    fk_model_free(&m);
    CHECK(fk_hf_load(&m, golden_dir("falcon_40b")));
    m.cfg.gelu_exact = false;
    fk_gguf_export_stats st;
    CHECK(fk_gguf_export(&m, NULL, tpath("f.gguf"), FK_DT_F32, "f", &st));
    assert_string_equal(st.arch, "gptneox");
    fk_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moe_load_save), cmocka_unit_test(test_moe_stacked), cmocka_unit_test(test_moe_keys),
        cmocka_unit_test(test_neox_phi_keys),
        cmocka_unit_test(test_stablelm_keys),
        cmocka_unit_test(test_falcon_keys),
        cmocka_unit_test(test_falcon_gguf),
        cmocka_unit_test(test_falcon_new_decoder_gguf),
        cmocka_unit_test(test_mpt_keys),
        cmocka_unit_test(test_olmo2_keys),
        cmocka_unit_test(test_golden_logits), cmocka_unit_test(test_save_like_reference), cmocka_unit_test(test_head_dim),
        cmocka_unit_test(test_gelu_exact),    cmocka_unit_test(test_bad_configs),   cmocka_unit_test(test_bad_weights),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
