// Hugging Face folders: config.json mapping and safetensors weights with HF names.
#include "fusekit/hf.h"
#include "fusekit/gguf.h"
#include "arch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *fk_arch_name(fk_arch a) { return arch_of(a)->model_type; }

// The first row whose model_type describes c exactly; fusekit (every switch in config.json) when none does.
fk_arch fk_config_arch(const fk_config *c) {
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *f = &arch_families[i];
        if (f->hf_fits && f->hf_fits(f, c)) return (fk_arch)f->arch;
    }
    return FK_ARCH_FUSEKIT;
}

// ------------------------------------------------------------------ tensor names

// Whether the set has ARCH_T_ALT rows of role k (another form of its tensors: transformers 5's stacked experts).
static bool has_alt(arch_tensor_set s, fk_param_kind k) {
    for (int i = 0; i < s.n; i++)
        if (s.t[i].kind == k && (s.t[i].flags & ARCH_T_ALT)) return true;
    return false;
}

// The HF tensors of a model in the row's written form, or (alt) with the ARCH_T_ALT rows in place of the
// written ones of their roles.
static fk_status hf_tensors_form(const fk_model *m, fk_arch arch, bool alt, fk_hf_tensor **out, int *n) {
    arch_item *it;
    int k, kept = 0;
    arch_tensor_set set = arch_of(arch)->hf;
    FK_TRY(arch_items(m, set, &it, &k));
    fk_hf_tensor *ts = malloc((size_t)(k > 0 ? k : 1) * sizeof *ts);
    if (!ts) { free(it); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < k; i++) {
        const fk_param *p = &m->params[it[i].param];
        bool is_alt = it[i].flags & ARCH_T_ALT;
        if (alt ? !is_alt && has_alt(set, p->kind) : is_alt) continue;
        fk_hf_tensor *t = &ts[kept++];
        memcpy(t->name, it[i].name, sizeof t->name);
        t->n_exp = it[i].n_exp;
        t->exp_stride = it[i].exp_stride;
        t->param = it[i].param;
        t->row0 = it[i].row0;
        t->rows = it[i].rows;
        t->transpose = (it[i].flags & ARCH_T_TRANSPOSE) != 0;
        t->head_rows = it[i].flags & ARCH_T_QKV_HEADS ? m->cfg.head_dim : 0;
        t->ndim = p->ndim;
        t->shape[2] = 1;
        if (p->ndim == 1) { t->shape[0] = t->rows; t->shape[1] = 1; }
        else if (t->transpose) { t->shape[0] = p->shape[1]; t->shape[1] = t->rows; }
        else { t->shape[0] = t->rows; t->shape[1] = p->shape[1]; }
        if (t->n_exp > 0) {  // [experts, rows, cols]
            t->ndim = 3;
            t->shape[2] = t->shape[1];
            t->shape[1] = t->shape[0];
            t->shape[0] = t->n_exp;
        }
    }
    free(it);
    *out = ts;
    *n = kept;
    return FK_OK;
}

fk_status fk_hf_tensors(const fk_model *m, fk_arch arch, fk_hf_tensor **out, int *n) { return hf_tensors_form(m, arch, false, out, n); }

static int64_t tensor_cols(const fk_model *m, const fk_hf_tensor *t) {
    const fk_param *p = &m->params[t->param];
    return p->ndim == 2 ? p->shape[1] : 1;
}

// The entry row that file row r of a qkv tensor grouped per KV head holds: with G query heads per
// KV head, file row (g * (G + 2) + s) * hd + j is query head g * G + s (s < G), key head g (s G) or
// value head g (s G + 1), row j (G 1: GPT-NeoX's [q_h; k_h; v_h]).
static int64_t qkv_head_row(const fk_model *m, const fk_hf_tensor *t, int64_t r) {
    int64_t hd = t->head_rows, G = m->cfg.n_head / m->cfg.n_kv_head, kv = t->rows / ((G + 2) * hd);
    int64_t g = r / ((G + 2) * hd), s = r / hd % (G + 2), j = r % hd;
    if (s < G) return (g * G + s) * hd + j;
    return kv * G * hd + (s - G) * kv * hd + g * hd + j;
}

// One expert's (or a plain tensor's) rows.
static void gather_one(const fk_model *m, const float *arena, const fk_hf_tensor *t, float *out) {
    int64_t cols = tensor_cols(m, t);
    const float *src = arena + m->params[t->param].offset + t->row0 * cols;
    if (t->head_rows > 0) {
        for (int64_t r = 0; r < t->rows; r++) memcpy(out + r * cols, src + qkv_head_row(m, t, r) * cols, (size_t)cols * sizeof(float));
        return;
    }
    if (!t->transpose) { memcpy(out, src, (size_t)(t->rows * cols) * sizeof(float)); return; }
    for (int64_t r = 0; r < t->rows; r++)
        for (int64_t c = 0; c < cols; c++) out[c * t->rows + r] = src[r * cols + c];
}

static void scatter_one(const fk_model *m, float *arena, const fk_hf_tensor *t, const float *in) {
    int64_t cols = tensor_cols(m, t);
    float *dst = arena + m->params[t->param].offset + t->row0 * cols;
    if (t->head_rows > 0) {
        for (int64_t r = 0; r < t->rows; r++) memcpy(dst + qkv_head_row(m, t, r) * cols, in + r * cols, (size_t)cols * sizeof(float));
        return;
    }
    if (!t->transpose) { memcpy(dst, in, (size_t)(t->rows * cols) * sizeof(float)); return; }
    for (int64_t r = 0; r < t->rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = in[c * t->rows + r];
}

// Stacked experts: expert e's rows at arena + e * exp_stride, the file's slice e.
void fk_hf_gather(const fk_model *m, const float *arena, const fk_hf_tensor *t, float *out) {
    int64_t size = t->rows * tensor_cols(m, t);
    for (int64_t e = 0; e < (t->n_exp > 0 ? t->n_exp : 1); e++) gather_one(m, arena + e * t->exp_stride, t, out + e * size);
}

void fk_hf_scatter(const fk_model *m, float *arena, const fk_hf_tensor *t, const float *in) {
    int64_t size = t->rows * tensor_cols(m, t);
    for (int64_t e = 0; e < (t->n_exp > 0 ? t->n_exp : 1); e++) scatter_one(m, arena + e * t->exp_stride, t, in + e * size);
}

// ------------------------------------------------------------------ config.json

// A float config value written as the shortest decimal that reads back to the same float
// (1e-06, not 9.9999999747524271e-07; integers as 10000.0), as transformers writes it.
static cJSON *float_json(float v) {
    char buf[48];
    if (v == floorf(v) && fabsf(v) < 1e15f) snprintf(buf, sizeof buf, "%.1f", (double)v);  // 10000.0
    else
        for (int prec = 1; prec <= 9; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
            if ((float)strtod(buf, NULL) == v) break;
        }
    return cJSON_CreateRaw(buf);
}

static void add_float(cJSON *j, const char *key, float v) { cJSON_AddItemToObject(j, key, float_json(v)); }

static const char *torch_dtype_name(fk_dtype dt) {
    return dt == FK_DT_BF16 ? "bfloat16" : dt == FK_DT_F16 ? "float16" : "float32";
}

// A float, or null when 0 (off).
static void add_float_or_null(cJSON *j, const char *key, float v) {
    if (v > 0) add_float(j, key, v); else cJSON_AddNullToObject(j, key);
}

// layer_types: "sliding_attention" or "full_attention" per layer (flags: sliding[] as it is, else
// only the layers that have a window).
static void add_layer_types(cJSON *j, const fk_config *c, bool flags) {
    cJSON *a = cJSON_CreateArray();
    for (int64_t l = 0; l < c->n_layer; l++)
        cJSON_AddItemToArray(a, cJSON_CreateString((flags ? c->sliding[l] != 0 : arch_slides(c, l)) ? "sliding_attention" : "full_attention"));
    cJSON_AddItemToObject(j, "layer_types", a);
}

// "rope_scaling" in transformers 4.x's form (5.x reads it too): llama3, linear (when `linear`:
// the fusekit type keeps its linear scale among its switches instead), or null.
// rope_type dynamic, yarn or longrope as transformers reads them (the attention factor explicit).
static cJSON *rope_ext_json(const fk_config *c) {
    static const char *const names[] = {"", "dynamic", "yarn", "longrope"};
    cJSON *rs = cJSON_CreateObject();
    cJSON_AddStringToObject(rs, "rope_type", names[c->rope_ext]);
    if (c->rope_ext != FK_ROPE_EXT_LONGROPE) add_float(rs, "factor", c->rope_ext_factor);
    if (c->rope_ext == FK_ROPE_EXT_DYNAMIC) return rs;  // its length is max_position_embeddings
    cJSON_AddNumberToObject(rs, "original_max_position_embeddings", (double)c->rope_ext_ctx);
    add_float(rs, "attention_factor", c->rope_attn_factor);
    if (c->rope_ext == FK_ROPE_EXT_YARN) {
        add_float(rs, "beta_fast", c->rope_beta_fast);
        add_float(rs, "beta_slow", c->rope_beta_slow);
        if (c->rope_yarn_no_trunc) cJSON_AddFalseToObject(rs, "truncate");
        return rs;
    }
    cJSON *sh = cJSON_AddArrayToObject(rs, "short_factor"), *lo = cJSON_AddArrayToObject(rs, "long_factor");
    for (int32_t d = 0; d < c->rope_n_factors; d++) {
        cJSON_AddItemToArray(sh, float_json(c->rope_short[d]));
        cJSON_AddItemToArray(lo, float_json(c->rope_long[d]));
    }
    return rs;
}

static void add_rope_scaling(cJSON *j, const fk_config *c, bool linear) {
    cJSON *rs = NULL;
    if (c->rope_orig_ctx > 0) {
        rs = cJSON_CreateObject();
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
        add_float(rs, "factor", c->rope_scale);
        add_float(rs, "low_freq_factor", c->rope_low_freq);
        add_float(rs, "high_freq_factor", c->rope_high_freq);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", (double)c->rope_orig_ctx);
    } else if (linear && c->rope_scale > 0 && c->rope_scale != 1) {
        rs = cJSON_CreateObject();
        cJSON_AddStringToObject(rs, "rope_type", "linear");
        add_float(rs, "factor", c->rope_scale);
    } else if (c->rope_ext != FK_ROPE_EXT_NONE) {
        rs = rope_ext_json(c);
    }
    if (rs) cJSON_AddItemToObject(j, "rope_scaling", rs);
    else cJSON_AddNullToObject(j, "rope_scaling");
}

// The Gemma keys of generation gen (model_type gemma, gemma2, gemma3_text) beyond the sizes, as
// transformers writes and reads them; the RoPE keys in the form transformers 4.x reads and 5.x converts.
static void gemma_config_json(cJSON *j, const fk_config *c, int gen) {
    if (gen == 3) {
        add_float(j, "rope_local_base_freq", c->rope_theta_local > 0 ? c->rope_theta_local : c->rope_theta);
        add_rope_scaling(j, c, true);
    } else {
        cJSON_AddNullToObject(j, "rope_scaling");
    }
    if (gen == 1) return;
    cJSON_AddNumberToObject(j, "query_pre_attn_scalar", (double)arch_query_pre_attn_scalar(c));
    if (c->sliding_window > 0) cJSON_AddNumberToObject(j, "sliding_window", (double)c->sliding_window);
    else cJSON_AddNullToObject(j, "sliding_window");
    add_layer_types(j, c, false);
    if (gen == 3) {
        // transformers before layer_types: layer l is global when (l + 1) % pattern == 0
        int64_t p = c->n_layer + 1;
        for (int64_t l = 0; l < c->n_layer && p == c->n_layer + 1; l++) if (!arch_slides(c, l)) p = l + 1;
        bool fits = true;
        for (int64_t l = 0; l < c->n_layer; l++) fits &= arch_slides(c, l) == ((l + 1) % p != 0);
        if (fits) cJSON_AddNumberToObject(j, "sliding_window_pattern", (double)p);
    }
    add_float_or_null(j, "attn_logit_softcapping", c->attn_softcap);
    add_float_or_null(j, "final_logit_softcapping", c->final_softcap);
}

// The "fusekit" object of model_type fusekit: fk_config's switches, each under its own name.
static void fusekit_switches_json(cJSON *j, const fk_config *c) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "norm", c->norm == FK_NORM_LAYERNORM ? "layernorm" : "rmsnorm");
    cJSON_AddStringToObject(s, "position", c->pos == FK_POS_LEARNED ? "learned" : c->pos == FK_POS_ROPE ? "rope" : "none");
    cJSON_AddStringToObject(s, "mlp", c->mlp == FK_MLP_GELU ? "gelu" : c->mlp == FK_MLP_GEGLU ? "geglu" : "swiglu");
    cJSON_AddBoolToObject(s, "bias_qkv", c->bias_qkv);
    cJSON_AddBoolToObject(s, "bias_out", c->bias_out);
    cJSON_AddBoolToObject(s, "bias_mlp", c->bias_mlp);
    cJSON_AddBoolToObject(s, "bias_norm", c->bias_norm);
    // the Gemma-family switches (FK_CF_DESCRIBE rows of the field table), written only when on,
    // under fk_config's names and meanings
    for (int i = 0; i < fk_config_n_fields; i++) {
        const fk_config_field *f = &fk_config_fields[i];
        double v = fk_config_field_value(c, f, -1);
        if (!(f->flags & FK_CF_DESCRIBE) || v == 0) continue;
        if (f->type == FK_CF_BOOL) cJSON_AddBoolToObject(s, f->name, 1);
        else add_float(s, f->name, (float)v);
    }
    if (c->rope_scale > 0 && c->rope_scale != 1 && c->rope_orig_ctx == 0) add_float(s, "rope_scale", c->rope_scale);
    if (c->pos == FK_POS_ROPE && fk_config_rotary_dim(c) != c->head_dim) cJSON_AddNumberToObject(s, "rotary_dim", (double)c->rotary_dim);
    bool any = false;
    for (int64_t l = 0; l < c->n_layer; l++) any |= c->sliding[l] != 0;
    if (c->sliding_window > 0) cJSON_AddNumberToObject(s, "sliding_window", (double)c->sliding_window);
    if (any) add_layer_types(s, c, true);
    cJSON_AddItemToObject(j, "fusekit", s);
}

// sliding_window: the window when a layer slides, else null.
static void add_window(cJSON *j, const char *key, const fk_config *c) {
    if (arch_any_sliding(c)) cJSON_AddNumberToObject(j, key, (double)c->sliding_window);
    else cJSON_AddNullToObject(j, key);
}

// Qwen's window keys (k->key is use_sliding_window, k->def the default max_window_layers): with
// windows, layer_types as transformers 5 writes it, and max_window_layers for transformers 4 (the
// first of the last layers that all slide: exact when no layer before them does).
static void qwen_window_json(cJSON *j, const arch_key *k, const fk_config *c) {
    bool any = arch_any_sliding(c);
    int64_t first = c->n_layer;
    for (int64_t l = c->n_layer - 1; l >= 0 && arch_slides(c, l); l--) first = l;
    cJSON_AddBoolToObject(j, k->key, any);
    add_window(j, "sliding_window", c);
    cJSON_AddNumberToObject(j, "max_window_layers", any ? (double)first : k->def);
    if (any) add_layer_types(j, c, false);
}

// The share of each head RoPE turns, as the shortest decimal whose int(head_dim * share) is rotary_dim.
static void rotary_json(cJSON *j, const char *key, const fk_config *c) {
    double hd = (double)c->head_dim, share = (double)fk_config_rotary_dim(c) / hd;
    while ((int64_t)(hd * share) < fk_config_rotary_dim(c)) share = nextafter(share, 2.0);
    cJSON_AddNumberToObject(j, key, share);
}

// The activation name written: the row's exact-GELU name or its first name.
static const char *act_name(const arch_family *f, const fk_config *c) {
    if (c->gelu_exact && f->acts_exact) return f->acts_exact[0];
    return f->acts ? f->acts[0] : c->mlp == FK_MLP_SWIGLU ? "silu" : c->gelu_exact ? "gelu" : "gelu_pytorch_tanh";
}

// MPT's keys beyond the sizes (ARCH_F_MPT) as transformers' MptConfig writes them (integers where
// its strict dataclass wants them: expansion_ratio, alibi_bias_max, attn_pdrop).
static void mpt_config_json(cJSON *j, const fk_config *c) {
    cJSON *a = cJSON_CreateObject();
    cJSON_AddBoolToObject(a, "alibi", 1);
    cJSON_AddNumberToObject(a, "alibi_bias_max", (double)c->alibi_bias_max);
    cJSON_AddStringToObject(a, "attn_impl", "torch");
    cJSON_AddNumberToObject(a, "attn_pdrop", 0);
    cJSON_AddStringToObject(a, "attn_type", "multihead_attention");
    cJSON_AddBoolToObject(a, "attn_uses_sequence_id", 0);
    add_float_or_null(a, "clip_qkv", c->clip_qkv);
    cJSON_AddBoolToObject(a, "prefix_lm", 0);
    cJSON_AddBoolToObject(a, "qk_ln", 0);
    add_float_or_null(a, "softmax_scale", c->attn_scale);
    cJSON_AddItemToObject(j, "attn_config", a);
    cJSON_AddBoolToObject(j, "no_bias", 1);
    cJSON_AddBoolToObject(j, "learned_pos_emb", 0);
    cJSON_AddNullToObject(j, "logit_scale");
    cJSON_AddStringToObject(j, "norm_type", "low_precision_layernorm");
    cJSON_AddStringToObject(j, "init_device", "cpu");
    add_float(j, "embedding_fraction", 1);
}

// Falcon's layout keys (ARCH_F_FALCON) in the form that loads as c: two norms are the new decoder;
// one shared norm the 7B form when multi-query or multi-head, else the new decoder with one norm.
static void falcon_config_json(cJSON *j, const fk_config *c) {
    bool two = c->residual == FK_RESID_PARALLEL, mq = c->n_kv_head == 1;
    bool nda = two || (c->residual == FK_RESID_PARALLEL_SHARED && !mq && c->n_kv_head != c->n_head);
    cJSON_AddBoolToObject(j, "new_decoder_architecture", nda);
    cJSON_AddBoolToObject(j, "multi_query", nda || mq);  // (the new decoder ignores it: the class default)
    cJSON_AddBoolToObject(j, "parallel_attn", c->residual != FK_RESID_SEQUENTIAL);
    // num_kv_heads is read by the new decoder only (FalconConfig: num_attention_heads when absent);
    // num_key_value_heads is the count FalconConfig derives and saves
    cJSON_AddNumberToObject(j, "num_kv_heads", (double)(nda ? c->n_kv_head : c->n_head));
    cJSON_AddNumberToObject(j, "num_key_value_heads", (double)c->n_kv_head);
    if (nda) cJSON_AddNumberToObject(j, "num_ln_in_parallel_attn", two ? 2 : 1);
    else cJSON_AddNullToObject(j, "num_ln_in_parallel_attn");
    cJSON_AddBoolToObject(j, "alibi", 0);
}

// The dense layers of an MoE config (mlp_only_layers), ascending.
static cJSON *dense_layers_json(const fk_config *c) {
    cJSON *a = cJSON_CreateArray();
    for (int64_t l = 0; l < c->n_layer; l++)
        if (!c->moe[l]) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)l));
    return a;
}

// The row's MoE keys (ARCH_F_MOE, k->key the expert count) as its transformers class writes them;
// nothing for a dense model (model_type fusekit).
static void moe_config_json(cJSON *j, const fk_config *c, const arch_family *f, const arch_key *k) {
    const arch_moe *mo = f->moe;
    if (c->n_expert == 0) return;
    cJSON_AddNumberToObject(j, k->key, (double)c->n_expert);
    cJSON_AddNumberToObject(j, "num_experts_per_tok", (double)c->n_expert_used);
    if (mo->ffn_key) cJSON_AddNumberToObject(j, mo->ffn_key, (double)c->expert_ffn);
    int64_t shared = 0;
    for (int64_t l = 0; l < c->n_layer; l++) shared = c->moe[l] && c->ffn[l] > shared ? c->ffn[l] : shared;
    if (mo->shared_key) cJSON_AddNumberToObject(j, mo->shared_key, (double)shared);
    if (mo->norm_key) cJSON_AddBoolToObject(j, "norm_topk_prob", c->expert_norm);
    if (mo->sparse_keys) {
        cJSON_AddNumberToObject(j, "decoder_sparse_step", 1);
        cJSON_AddItemToObject(j, "mlp_only_layers", dense_layers_json(c));
    }
    if (mo->per_layer) {
        cJSON_AddBoolToObject(j, "shared_expert_gate", c->shared_gate);
        bool uniform = true;
        for (int64_t l = 0; l < c->n_layer; l++) uniform &= !c->moe[l] || fk_config_experts(c, l) == c->n_expert;
        if (!uniform) {
            cJSON *a = cJSON_CreateArray();
            for (int64_t l = 0; l < c->n_layer; l++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)fk_config_experts(c, l)));
            cJSON_AddItemToObject(j, "fusekit_experts", a);
        }
        return;
    }
    if (mo->jitter_key) add_float(j, "router_jitter_noise", 0);
    cJSON_AddBoolToObject(j, "output_router_logits", 0);
    cJSON_AddNumberToObject(j, "router_aux_loss_coef", mo->aux_coef);
}

// The width intermediate_size says: the widest layer's; in an MoE row's config the dense layers' (the
// experts' where it has no dense layer: Mixtral's and OLMoE's experts are intermediate_size wide).
static int64_t ffn_key_width(const fk_config *c, const arch_family *f) {
    bool moe = c->n_expert > 0 && f->moe && !f->moe->per_layer;
    int64_t F = 0;
    for (int64_t l = 0; l < c->n_layer; l++) F = c->ffn[l] > F && !(moe && c->moe[l]) ? c->ffn[l] : F;
    return moe && F == 0 ? c->expert_ffn : F;
}

// The row's keys in its order: the sizes under the family's names, its constants and its groups.
static void write_keys(cJSON *j, const fk_config *c, const arch_family *f) {
    int64_t F = ffn_key_width(c, f);
    for (int i = 0; i < f->keys.n; i++) {
        const arch_key *k = &f->keys.k[i];
        if (k->how == ARCH_D_READ_ONLY) continue;
        switch (k->field) {
        case ARCH_F_D_MODEL: cJSON_AddNumberToObject(j, k->key, (double)c->d_model); break;
        case ARCH_F_N_LAYER: cJSON_AddNumberToObject(j, k->key, (double)c->n_layer); break;
        case ARCH_F_N_HEAD: cJSON_AddNumberToObject(j, k->key, (double)c->n_head); break;
        case ARCH_F_N_KV_HEAD: cJSON_AddNumberToObject(j, k->key, (double)c->n_kv_head); break;
        case ARCH_F_HEAD_DIM: cJSON_AddNumberToObject(j, k->key, (double)c->head_dim); break;
        case ARCH_F_FFN: cJSON_AddNumberToObject(j, k->key, (double)(k->how == ARCH_D_RATIO ? F / c->d_model : F)); break;
        case ARCH_F_MAX_SEQ:  // dynamic RoPE: the length it scales beyond (fusekit's context is factor times it)
            cJSON_AddNumberToObject(j, k->key, (double)(c->rope_ext == FK_ROPE_EXT_DYNAMIC ? c->rope_ext_ctx : c->max_seq));
            break;
        case ARCH_F_NORM_EPS: add_float(j, k->key, c->norm_eps); break;
        case ARCH_F_ROPE_THETA: add_float(j, k->key, c->rope_theta); break;
        case ARCH_F_ACT: cJSON_AddStringToObject(j, k->key, act_name(f, c)); break;
        case ARCH_F_FLAG: cJSON_AddBoolToObject(j, k->key, k->def != 0); break;
        case ARCH_F_ZERO: cJSON_AddNumberToObject(j, k->key, k->def); break;
        case ARCH_F_ATTN_BIAS:
        case ARCH_F_QKV_BIAS: cJSON_AddBoolToObject(j, k->key, c->bias_qkv); break;
        case ARCH_F_QK_LN: cJSON_AddBoolToObject(j, k->key, c->qk_norm_ln); break;
        case ARCH_F_ROTARY: rotary_json(j, k->key, c); break;
        case ARCH_F_PARALLEL: cJSON_AddBoolToObject(j, k->key, c->residual == f->residual); break;
        case ARCH_F_USE_BIAS: cJSON_AddBoolToObject(j, k->key, c->bias_qkv); break;
        case ARCH_F_NULL: cJSON_AddNullToObject(j, k->key); break;
        case ARCH_F_ORIG_CTX:
            cJSON_AddNumberToObject(j, k->key, (double)(c->rope_ext_ctx > 0 && c->rope_ext != FK_ROPE_EXT_DYNAMIC ? c->rope_ext_ctx
                                                        : c->rope_orig_ctx > 0 ? c->rope_orig_ctx : c->max_seq));
            break;
        case ARCH_F_WINDOW: add_window(j, k->key, c); break;
        case ARCH_F_QWEN_WINDOW: qwen_window_json(j, k, c); break;
        case ARCH_F_ROPE_SCALING: add_rope_scaling(j, c, ((int)k->def & 1) != 0); break;
        case ARCH_F_GEMMA: gemma_config_json(j, c, f->gemma); break;
        case ARCH_F_SWITCHES: fusekit_switches_json(j, c); break;
        case ARCH_F_MPT: mpt_config_json(j, c); break;
        case ARCH_F_FALCON: falcon_config_json(j, c); break;
        case ARCH_F_MOE: moe_config_json(j, c, f, k); break;
        case ARCH_F_NULL_ONLY: cJSON_AddNullToObject(j, k->key); break;
        case ARCH_F_SCALARS: break;
        }
    }
}

// config.json text; torch_dtype names the dtype the weights are saved in.
static char *config_json(const fk_config *c, fk_dtype dtype) {
    fk_arch arch = fk_config_arch(c);
    cJSON *j = cJSON_CreateObject(), *archs = cJSON_CreateArray();
    cJSON_AddItemToArray(archs, cJSON_CreateString(arch_of(arch)->hf_class));
    cJSON_AddItemToObject(j, "architectures", archs);
    cJSON_AddStringToObject(j, "model_type", fk_arch_name(arch));
    cJSON_AddNumberToObject(j, "vocab_size", (double)c->vocab_size);
    write_keys(j, c, arch_of(arch));
    const arch_moe *mo = arch_of(arch)->moe;
    if (!fk_config_uniform_ffn(c) && !(mo && !mo->per_layer)) {  // (an MoE row's keys say its widths: hf_fits_moe)
        cJSON *a = cJSON_CreateArray();
        for (int64_t l = 0; l < c->n_layer; l++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)c->ffn[l]));
        cJSON_AddItemToObject(j, "fusekit_intermediate_sizes", a);
    }
    if (!fk_config_uniform_heads(c)) {
        cJSON *a = cJSON_CreateArray();
        for (int64_t l = 0; l < c->n_layer; l++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)fk_config_heads(c, l)));
        cJSON_AddItemToObject(j, "fusekit_attention_heads", a);
    }
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tied);
    if (c->bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id); else cJSON_AddNullToObject(j, "bos_token_id");
    if (c->eos_id >= 0) cJSON_AddNumberToObject(j, "eos_token_id", c->eos_id); else cJSON_AddNullToObject(j, "eos_token_id");
    cJSON_AddStringToObject(j, "torch_dtype", torch_dtype_name(dtype));
    cJSON_AddStringToObject(j, "fusekit_version", FK_VERSION);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

char *fk_hf_config_json(const fk_config *c) { return config_json(c, FK_DT_F32); }

// fam: the row read (read_family sets it), for keys whose meaning depends on the row's other keys
// root: the object read (in: its key path for messages, NULL at the top level, e.g. "attn_config").
typedef struct { const cJSON *root; const char *path; fk_status st; const arch_family *fam; const char *in; } cfg_reader;

// The path of key of r's object as messages name it: "attn_config.clip_qkv" in a nested object.
static const char *key_path(const cfg_reader *r, const char *key, char *buf, size_t n) {
    if (!r->in) return key;
    snprintf(buf, n, "%s.%s", r->in, key);
    return buf;
}

// Whether the row read has both a partial-rotary key and Llama's RoPE scaling keys (phi3): then
// each reader leaves the other's keys to it.
static bool rotary_and_scaling(const cfg_reader *r) {
    return r->fam && arch_key_of(r->fam, ARCH_F_ROTARY) && arch_key_of(r->fam, ARCH_F_ROPE_SCALING);
}

// The RoPE object transformers 5 applies and its key: rope_scaling when it is set and not empty (it
// wins over rope_parameters, as PreTrainedConfig.convert_rope_params_to_dict's
// `rope_scaling or rope_parameters`), else rope_parameters, else rope_scaling (NULL when neither).
static const cJSON *rope_object(const cJSON *root, const char **key) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    bool rs_set = rs && !cJSON_IsNull(rs) && !(cJSON_IsObject(rs) && !rs->child);
    if (!rs_set && rp && !cJSON_IsNull(rp)) { *key = "rope_parameters"; return rp; }
    *key = "rope_scaling";
    return rs && !cJSON_IsNull(rs) ? rs : NULL;
}

// A JSON number as an integer in lo..hi, range-checked before the cast (a cast of 1e300 to an
// integer is undefined behaviour); false when it is not an integer or out of range.
static bool json_int(const cJSON *v, double lo, double hi, int64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != floor(d)) return false;
    *out = (int64_t)d;
    return true;
}

// Integer keys: within int64 (a double below 2^63 converts exactly); fk_config_validate then
// bounds each size, naming the field.
#define INT_KEY_MAX 9223372036854774784.0  // the largest double below 2^63

// Reads an integer key; `def` < 0 with the key absent is an error.
static int64_t get_int(cfg_reader *r, const char *key, int64_t def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    char kp[128];
    if (!v || cJSON_IsNull(v)) {
        if (def < 0 && r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: missing key \"%s\"", r->path, key_path(r, key, kp, sizeof kp));
        return def;
    }
    int64_t x;
    if (!json_int(v, -INT_KEY_MAX, INT_KEY_MAX, &x)) {
        if (r->st == FK_OK)
            r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be an integer within int64 range (got %g)", r->path,
                             key_path(r, key, kp, sizeof kp), cJSON_IsNumber(v) ? v->valuedouble : NAN);
        return def;
    }
    return x;
}

static double get_num(cfg_reader *r, const char *key, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v || cJSON_IsNull(v)) return def;
    if (!cJSON_IsNumber(v)) {
        char kp[128];
        if (r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be a number", r->path, key_path(r, key, kp, sizeof kp));
        return def;
    }
    return v->valuedouble;
}

static bool get_bool(cfg_reader *r, const cJSON *obj, const char *key, bool def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return def;
    if (!cJSON_IsBool(v)) {
        char kp[128];
        if (r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be true or false", r->path, key_path(r, key, kp, sizeof kp));
        return def;
    }
    return cJSON_IsTrue(v);
}

static const char *get_str(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// bos/eos may be an integer or a list (the first is used); -1 when none or out of range.
static int32_t get_token_id(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    int64_t id;
    return json_int(v, 0, INT32_MAX, &id) ? (int32_t)id : -1;
}

// A per-layer integer list (fusekit_intermediate_sizes, fusekit_attention_heads) into out.
static void get_int_list(cfg_reader *r, const char *key, int64_t n_layer, int64_t *out) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!cJSON_IsArray(a)) return;
    if (cJSON_GetArraySize(a) != n_layer && r->st == FK_OK)
        r->st = fk_error(FK_ERR_FORMAT, "%s: %s has %d entries but the model has %lld layers", r->path, key, cJSON_GetArraySize(a),
                         (long long)n_layer);
    for (int l = 0; l < cJSON_GetArraySize(a) && l < FK_MAX_LAYERS && r->st == FK_OK; l++)
        if (!json_int(cJSON_GetArrayItem(a, l), 0, INT_KEY_MAX, &out[l]))
            r->st = fk_error(FK_ERR_FORMAT, "%s: %s[%d] must be a non-negative integer within int64 range", r->path, key, l);
}

// A number that may be null: absent gives def, null gives 0 (off); a negative value is an error.
static double get_num_or_null(cfg_reader *r, const char *key, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v) return def;
    if (cJSON_IsNull(v)) return 0;
    double x = get_num(r, key, def);
    char kp[128];
    if (!(x >= 0) && r->st == FK_OK)
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" is %g, expected a positive number or null", r->path, key_path(r, key, kp, sizeof kp), x);
    return x >= 0 ? x : 0;
}

// One RoPE parameter object of a Gemma config ({"rope_type": "default" | "linear", "rope_theta": x,
// "factor": f}); key names it in errors. theta (may be NULL) and factor are set when given.
static void gemma_rope(cfg_reader *r, const cJSON *o, const char *key, bool allow_linear, float *theta, float *factor) {
    if (!cJSON_IsObject(o)) {
        if (r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be an object or null", r->path, key);
        return;
    }
    const char *kind = get_str(o, "rope_type");
    if (!kind) kind = get_str(o, "type");
    bool linear = kind && strcmp(kind, "linear") == 0;
    if (kind && !linear && strcmp(kind, "default") != 0 && r->st == FK_OK)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" has rope_type \"%s\"; fusekit implements default and linear RoPE", r->path, key, kind);
    if (linear && !allow_linear && r->st == FK_OK)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" asks for linear RoPE scaling, which this model_type does not scale "
                         "(fusekit: only gemma3_text's global layers)", r->path, key);
    // every key must be one fusekit applies
    const cJSON *it;
    cJSON_ArrayForEach(it, o) {
        const char *k = it->string;
        bool known = strcmp(k, "rope_type") == 0 || strcmp(k, "type") == 0 || strcmp(k, "rope_theta") == 0 || (linear && strcmp(k, "factor") == 0) ||
                     (strcmp(k, "partial_rotary_factor") == 0 && cJSON_IsNumber(it) && it->valuedouble == 1);
        if (!known && r->st == FK_OK)
            r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\".%s is not supported with rope_type \"%s\" (fusekit would ignore it)", r->path, key, k,
                             kind ? kind : "default");
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "rope_theta");
    if (t && theta) {
        if (cJSON_IsNumber(t) && t->valuedouble > 0) *theta = (float)t->valuedouble;
        else if (r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\".rope_theta must be a positive number", r->path, key);
    }
    if (linear) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "factor");
        if (cJSON_IsNumber(f) && f->valuedouble >= 1 && f->valuedouble < 1e6) *factor = (float)f->valuedouble;
        else if (r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\".factor must be a number >= 1 for linear RoPE scaling", r->path, key);
    }
}

// A positive finite number of RoPE object o (key its name in errors) below lim, or 0 after an error.
static double rope_num(cfg_reader *r, const cJSON *o, const char *key, const char *name, double lim) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < lim) return v->valuedouble;
    if (r->st == FK_OK)
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\".%s must be a number in (0, %g)%s", r->path, key, name, lim, v ? "" : " (it is missing)");
    return 0;
}

// A partial_rotary_factor v (under key) other than 1 is refused: the Llama and Gemma families'
// transformers code rotates whole heads (its apply_rotary_pos_emb has no pass-through part).
static void whole_heads_only(cfg_reader *r, const cJSON *v, const char *key) {
    if (rotary_and_scaling(r)) return;  // the row's partial-rotary key reads it
    if (v && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 1) && r->st == FK_OK)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" is %s; this model_type's transformers code rotates whole heads only", r->path, key,
                         cJSON_IsNumber(v) ? "set below 1" : "not a number");
}

// original_max_position_embeddings of RoPE object o (key its name): transformers 5 takes the
// top-level key when there is one (Phi-3's), else the object's, else max_position_embeddings; a
// config whose two keys differ is refused (one of them would be ignored).
static int64_t rope_orig_ctx(cfg_reader *r, const cJSON *o, const char *key, int64_t max_pos) {
    cfg_reader sub = {o, r->path, r->st, r->fam, key};
    int64_t in = get_int(&sub, "original_max_position_embeddings", 0), top = get_int(r, "original_max_position_embeddings", 0);
    if (r->st == FK_OK) r->st = sub.st;
    if (in != 0 && top != 0 && in != top && r->st == FK_OK)
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\".original_max_position_embeddings is %lld but the top-level key is %lld", r->path, key,
                         (long long)in, (long long)top);
    int64_t v = top ? top : in ? in : max_pos;
    if (v < 1 && r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\".original_max_position_embeddings must be positive (got %lld)", r->path, key, (long long)v);
    return v;
}

// A list of n positive factors under key.name into out (n is checked before anything is stored).
static void rope_factors(cfg_reader *r, const cJSON *o, const char *key, const char *name, int64_t n, float *out) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, name);
    if (r->st != FK_OK) return;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n || n > FK_MAX_ROPE_FACTORS) {
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\".%s must be a list of %lld numbers (rotary dims / 2; at most %d)%s", r->path, key, name,
                         (long long)n, FK_MAX_ROPE_FACTORS, cJSON_IsArray(a) ? "" : " (it is missing or not a list)");
        return;
    }
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, a) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble < 1e30)) {
            r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\".%s[%d] must be a positive number", r->path, key, name, i);
            return;
        }
        out[i++] = (float)v->valuedouble;
    }
}

// YaRN's mscale: 0.1 * mscale * ln(factor) + 1 (1 for factor <= 1), as transformers' yarn_get_mscale.
static double yarn_mscale(double factor, double mscale) { return factor <= 1 ? 1.0 : 0.1 * mscale * log(factor) + 1.0; }

// An optional positive number key.name (def when absent or null; transformers' `or` and `if` treat 0
// as absent for beta_fast/beta_slow and mscale/mscale_all_dim, which zero_default says).
static double rope_opt(cfg_reader *r, const cJSON *o, const char *key, const char *name, double def, bool zero_default) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v) || (zero_default && cJSON_IsNumber(v) && v->valuedouble == 0)) return def;
    return rope_num(r, o, key, name, 1e30);
}

// rope_type dynamic, yarn and longrope of object o (c->max_seq is max_position_embeddings), with
// the attention factor as transformers 5 derives it when the object has none.
static void rope_ext_parse(cfg_reader *r, const cJSON *o, const char *key, int kind, fk_config *c) {
    c->rope_ext = kind;
    if (kind == FK_ROPE_EXT_DYNAMIC) {  // scales beyond max_position_embeddings, up to factor times it
        c->rope_ext_factor = (float)rope_num(r, o, key, "factor", 1e6);
        c->rope_ext_ctx = c->max_seq;
        double ext = floor((double)c->max_seq * c->rope_ext_factor);
        if (ext > (double)c->max_seq) c->max_seq = ext < (double)FK_LIM_SEQ ? (int64_t)ext : FK_LIM_SEQ;
        return;
    }
    c->rope_ext_ctx = rope_orig_ctx(r, o, key, c->max_seq);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "factor");
    double factor = f && !cJSON_IsNull(f) ? rope_num(r, o, key, "factor", 1e6) : (double)c->max_seq / (double)c->rope_ext_ctx;
    double af = rope_opt(r, o, key, "attention_factor", 0, false);
    if (kind == FK_ROPE_EXT_YARN) {
        c->rope_ext_factor = (float)factor;
        // transformers' `if mscale and mscale_all_dim`: 0 (or null) is absent, as for the betas
        double ms = rope_opt(r, o, key, "mscale", 0, true), msa = rope_opt(r, o, key, "mscale_all_dim", 0, true);
        if (af == 0) af = ms != 0 && msa != 0 ? yarn_mscale(factor, ms) / yarn_mscale(factor, msa) : yarn_mscale(factor, 1);
        c->rope_beta_fast = (float)rope_opt(r, o, key, "beta_fast", 32, true);
        c->rope_beta_slow = (float)rope_opt(r, o, key, "beta_slow", 1, true);
        const cJSON *tr = cJSON_GetObjectItemCaseSensitive(o, "truncate");
        if (tr && !cJSON_IsNull(tr) && !cJSON_IsBool(tr) && r->st == FK_OK)
            r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\".truncate must be true or false", r->path, key);
        c->rope_yarn_no_trunc = cJSON_IsFalse(tr);
    } else {  // longrope: rotary dims / 2 factors each
        int64_t half = fk_config_rotary_dim(c) / 2;
        rope_factors(r, o, key, "short_factor", half, c->rope_short);
        rope_factors(r, o, key, "long_factor", half, c->rope_long);
        c->rope_n_factors = (int32_t)half;
        if (af == 0) af = factor <= 1 ? 1.0 : sqrt(1 + log(factor) / log((double)c->rope_ext_ctx));
    }
    c->rope_attn_factor = (float)af;
}

// rope_type llama3 of object o.
static void rope_llama3_parse(cfg_reader *r, const cJSON *o, const char *key, fk_config *c) {
    c->rope_scale = (float)rope_num(r, o, key, "factor", 1e6);
    c->rope_low_freq = (float)rope_num(r, o, key, "low_freq_factor", 1e6);
    c->rope_high_freq = (float)rope_num(r, o, key, "high_freq_factor", 1e6);
    c->rope_orig_ctx = rope_orig_ctx(r, o, key, c->max_seq);
    if (r->st == FK_OK && !(c->rope_high_freq > c->rope_low_freq))
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" has high_freq_factor %g <= low_freq_factor %g", r->path, key, (double)c->rope_high_freq,
                         (double)c->rope_low_freq);
}

// The RoPE types a Llama-family config names, with the keys each reads beyond rope_type, type,
// rope_theta and partial_rotary_factor (transformers' _validate_*_rope_parameters).
static const struct { const char *name; int ext; const char *keys[8]; } rope_types[] = {
    {"default", 0, {NULL}},
    {"linear", 0, {"factor", NULL}},
    {"llama3", 0, {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", NULL}},
    {"dynamic", FK_ROPE_EXT_DYNAMIC, {"factor", NULL}},
    {"yarn", FK_ROPE_EXT_YARN, {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
                                "mscale_all_dim", "truncate"}},
    {"longrope", FK_ROPE_EXT_LONGROPE, {"short_factor", "long_factor", "original_max_position_embeddings", "attention_factor", "factor", NULL}},
};

// RoPE of a Llama-family config (llama, mistral, qwen2, fusekit) beyond rope_theta: rope_scaling as
// transformers 4.x writes them, or rope_parameters as 5.x does (rope_object: a non-empty
// rope_scaling wins when both are there, as in transformers 5). rope_type default, linear (rope_scale), llama3 (rope_orig_ctx, ...),
// dynamic, yarn and longrope (rope_ext) are implemented (phi3_names: "su" and "yarn" are longrope,
// as Phi3Config reads them); any other type, per-layer-type
// parameters, partial rotary factors (which transformers' Llama-family code cannot apply) and
// keys fusekit does not know are refused, naming the key: none may be ignored.
static void llama_rope(cfg_reader *r, fk_config *c, bool phi3_names) {
    const cJSON *root = r->root;
    whole_heads_only(r, cJSON_GetObjectItemCaseSensitive(root, "partial_rotary_factor"), "partial_rotary_factor");
    const char *key;
    const cJSON *o = rope_object(root, &key);
    if (!o || r->st != FK_OK) return;
    if (!cJSON_IsObject(o)) { r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be an object or null", r->path, key); return; }
    const char *kind = get_str(o, "rope_type"), *old = get_str(o, "type");
    if (kind && old && strcmp(kind, old) != 0) {
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" has rope_type \"%s\" but type \"%s\"", r->path, key, kind, old);
        return;
    }
    if (!kind) kind = old ? old : "default";
    if (phi3_names && (strcmp(kind, "su") == 0 || strcmp(kind, "yarn") == 0)) kind = "longrope";  // Phi3Config's older names
    size_t t = 0, nt = sizeof rope_types / sizeof rope_types[0];
    while (t < nt && strcmp(kind, rope_types[t].name) != 0) t++;
    if (t == nt) {
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" has rope_type \"%s\"; fusekit implements default, linear, llama3, dynamic, yarn "
                         "and longrope RoPE", r->path, key, kind);
        return;
    }
    // every key of the object must be one fusekit applies
    const cJSON *it;
    cJSON_ArrayForEach(it, o) {
        const char *k = it->string;
        bool known = strcmp(k, "rope_type") == 0 || strcmp(k, "type") == 0 || strcmp(k, "rope_theta") == 0 || strcmp(k, "partial_rotary_factor") == 0;
        for (int i = 0; i < 8 && rope_types[t].keys[i] && !known; i++) known = strcmp(k, rope_types[t].keys[i]) == 0;
        if (!known) {
            r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\".%s is not supported with rope_type \"%s\" (fusekit would ignore it)", r->path,
                             key, k, kind);
            return;
        }
        if (strcmp(k, "partial_rotary_factor") == 0)
            whole_heads_only(r, it, strcmp(key, "rope_scaling") == 0 ? "rope_scaling.partial_rotary_factor" : "rope_parameters.partial_rotary_factor");
        if (r->st != FK_OK) return;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "rope_theta")) c->rope_theta = (float)rope_num(r, o, key, "rope_theta", 1e30);
    if (strcmp(kind, "linear") == 0) c->rope_scale = (float)rope_num(r, o, key, "factor", 1e6);
    if (strcmp(kind, "llama3") == 0) rope_llama3_parse(r, o, key, c);
    if (rope_types[t].ext) rope_ext_parse(r, o, key, rope_types[t].ext, c);
}

// layer_types of r's object, when it has it (true): sliding[l] for each "sliding_attention" entry, 0
// for each "full_attention"; any other entry is refused (never read as full attention).
static bool layer_types_parse(cfg_reader *r, int64_t L, fk_config *c) {
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(r->root, "layer_types");
    if (!lt || cJSON_IsNull(lt)) return false;
    char kp[128];
    const char *key = key_path(r, "layer_types", kp, sizeof kp);
    if ((!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != L) && r->st == FK_OK)
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be a list of num_hidden_layers (%lld) entries (has %d)", r->path, key,
                         (long long)L, cJSON_IsArray(lt) ? cJSON_GetArraySize(lt) : -1);
    for (int l = 0; r->st == FK_OK && l < L && l < FK_MAX_LAYERS; l++) {
        const cJSON *e = cJSON_GetArrayItem(lt, l);
        const char *k = cJSON_IsString(e) ? e->valuestring : NULL;
        c->sliding[l] = k && strcmp(k, "sliding_attention") == 0;
        if (!c->sliding[l] && (!k || strcmp(k, "full_attention") != 0))
            r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: %s[%d] is %s%s%s; expected \"sliding_attention\" or \"full_attention\"", r->path, key, l,
                             k ? "\"" : "", k ? k : "not a string", k ? "\"" : "");
    }
    return true;
}

// A window key's value: absent gives def, null 0 (none); else a positive integer.
static int64_t window_value(cfg_reader *r, const char *key, int64_t def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v) return def;
    if (cJSON_IsNull(v)) return 0;
    int64_t w = get_int(r, key, 0);
    if (w < 1 && r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" is %lld; expected a positive window or null", r->path, key, (long long)w);
    return w;
}

// Window w on the layers sliding[] flags (w 0, or at least the context: no window, since every
// query then sees all its keys). These families rotate every layer with the same (scaled) RoPE;
// so do fusekit's sliding layers under dynamic, YaRN and LongRoPE, while under linear or Llama 3
// scaling they switch to an unscaled table (Gemma 3's local layers): that combination is refused.
static void set_window(cfg_reader *r, const arch_family *f, const char *key, int64_t w, fk_config *c) {
    c->sliding_window = w > 0 && w < c->max_seq ? w : 0;
    if (!c->sliding_window) memset(c->sliding, 0, sizeof c->sliding);
    if (arch_any_sliding(c) && arch_rope_local_unscaled(c) && r->st == FK_OK)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" is %lld with %s RoPE scaling: %s scales the RoPE of its sliding layers too, "
                         "which fusekit does not under that type (its sliding layers keep an unscaled table)", r->path, key, (long long)w,
                         c->rope_orig_ctx > 0 ? "llama3" : "linear", f->model_type);
}

// Qwen's windows: none unless use_sliding_window (transformers then sets sliding_window to None);
// else the layers layer_types names, or those from max_window_layers (k->def when absent) on.
static void qwen_window_parse(cfg_reader *r, const arch_family *f, const arch_key *k, fk_config *c) {
    if (!get_bool(r, r->root, k->key, false)) return;
    int64_t w = window_value(r, "sliding_window", 4096);
    if (!layer_types_parse(r, c->n_layer, c)) {
        int64_t first = get_int(r, "max_window_layers", (int64_t)k->def);
        for (int64_t l = 0; l < c->n_layer && l < FK_MAX_LAYERS; l++) c->sliding[l] = l >= first;
    }
    set_window(r, f, "sliding_window", w, c);
}

// The sliding window of a Gemma 2/3 config and which layers use it: layer_types, else
// transformers' defaults (Gemma 2: the even layers; Gemma 3: all but every sliding_window_pattern-th).
static void gemma_sliding_parse(cfg_reader *r, int gen, int64_t L, fk_config *c) {
    const cJSON *root = r->root;
    const char *path = r->path;
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    c->sliding_window = !sw ? 4096 : cJSON_IsNull(sw) ? 0 : get_int(r, "sliding_window", 0);
    if (c->sliding_window < 0 && r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"sliding_window\" must be positive or null", path);
    if (layer_types_parse(r, L, c)) {
    } else if (gen == 2) {  // transformers: layer l slides when l is even
        for (int64_t l = 0; l < L && l < FK_MAX_LAYERS; l++) c->sliding[l] = l % 2 == 0;
    } else {  // every sliding_window_pattern-th layer is global
        const char *pk = cJSON_GetObjectItemCaseSensitive(root, "sliding_window_pattern") ? "sliding_window_pattern" : "_sliding_window_pattern";
        int64_t p = get_int(r, pk, 6);
        if (p < 1 && r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be a positive integer", path, pk);
        for (int64_t l = 0; p >= 1 && l < L && l < FK_MAX_LAYERS; l++) c->sliding[l] = (l + 1) % p != 0;
    }
}

// The keys of Gemma generation gen (model_type gemma, gemma2, gemma3_text) beyond the sizes, the
// activation and rope_theta, r->root the text model's config. Absent keys take transformers' defaults.
static void gemma_config_parse(cfg_reader *r, int gen, fk_config *c) {
    const cJSON *root = r->root;
    const char *path = r->path;
    // RoPE: the keys transformers 4.x writes (rope_theta, rope_local_base_freq, rope_scaling), then
    // 5.x's rope_parameters (flat, or per layer type for gemma3_text)
    float theta = c->rope_theta, theta_local = 1e4f, factor = 1;
    whole_heads_only(r, cJSON_GetObjectItemCaseSensitive(root, "partial_rotary_factor"), "partial_rotary_factor");
    if (gen == 3) theta_local = (float)get_num(r, "rope_local_base_freq", theta_local);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) gemma_rope(r, rs, "rope_scaling", gen == 3, NULL, &factor);
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rp && !cJSON_IsNull(rp)) {
        const cJSON *full = cJSON_GetObjectItemCaseSensitive(rp, "full_attention"), *sl = cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention");
        if (full || sl) {
            float unused = 1;
            const cJSON *it;
            cJSON_ArrayForEach(it, rp)
                if (strcmp(it->string, "full_attention") != 0 && strcmp(it->string, "sliding_attention") != 0 && r->st == FK_OK)
                    r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"rope_parameters\".%s is not a layer type fusekit knows (full_attention, "
                                     "sliding_attention)", path, it->string);
            if (full) gemma_rope(r, full, "rope_parameters.full_attention", gen == 3, &theta, &factor);
            if (sl) gemma_rope(r, sl, "rope_parameters.sliding_attention", false, gen == 3 ? &theta_local : &theta, &unused);
        } else {
            gemma_rope(r, rp, "rope_parameters", gen == 3, &theta, &factor);
        }
    }
    c->rope_theta = theta;
    c->rope_theta_local = gen == 3 ? theta_local : 0;
    c->rope_scale = factor != 1 ? factor : 0;
    if (gen == 1) return;
    double q = get_num(r, "query_pre_attn_scalar", 256);
    if (!(q > 0) && r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"query_pre_attn_scalar\" must be positive (got %g)", path, q);
    c->attn_scale = q > 0 ? (float)pow(q, -0.5) : 0;
    c->final_softcap = (float)get_num_or_null(r, "final_logit_softcapping", gen == 2 ? 30.0 : 0);
    // transformers' Gemma 3 never applies attn_logit_softcapping; Gemma 2 defaults to 50
    c->attn_softcap = gen == 2 ? (float)get_num_or_null(r, "attn_logit_softcapping", 50.0) : 0;
    gemma_sliding_parse(r, gen, c->n_layer, c);
}

// The index in names (NULL-ended) of string key of r's object; def when absent; another value is refused.
static int kind_name(cfg_reader *r, const char *key, const char *const *names, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v || cJSON_IsNull(v)) return def;
    char list[96] = "", kp[128];
    for (int i = 0; names[i]; i++) {
        if (cJSON_IsString(v) && strcmp(v->valuestring, names[i]) == 0) return i;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", names[i]);
    }
    if (r->st == FK_OK)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" is %s%.64s%s; expected one of %s", r->path, key_path(r, key, kp, sizeof kp),
                         cJSON_IsString(v) ? "\"" : "", cJSON_IsString(v) ? v->valuestring : "not a string", cJSON_IsString(v) ? "\"" : "", list);
    return def;
}

// The "fusekit" object of model_type fusekit: fk_config's switches, each under its own name.
static void fusekit_switches_parse(cfg_reader *r, const cJSON *s, fk_config *c) {
    cfg_reader rs = {s, r->path, r->st, r->fam, "fusekit"};
    static const char *const norms[] = {"layernorm", "rmsnorm", NULL}, *const poss[] = {"learned", "rope", "none", NULL},
                             *const mlps[] = {"gelu", "swiglu", "geglu", NULL};  // in fk_*_kind order
    c->norm = (fk_norm_kind)kind_name(&rs, "norm", norms, FK_NORM_RMSNORM);
    c->pos = (fk_pos_kind)kind_name(&rs, "position", poss, FK_POS_ROPE);
    c->mlp = (fk_mlp_kind)kind_name(&rs, "mlp", mlps, FK_MLP_SWIGLU);
    for (int i = 0; i < fk_config_n_fields; i++) {  // the Gemma-family switches, as fusekit_switches_json writes them
        const fk_config_field *f = &fk_config_fields[i];
        char *at = (char *)c + f->offset;
        if (!(f->flags & FK_CF_DESCRIBE)) continue;
        if (f->type == FK_CF_BOOL) *(bool *)at = get_bool(&rs, s, f->name, false);
        else if (f->type == FK_CF_ENUM) *(int *)at = (int)get_num(&rs, f->name, 0);  // residual
        else *(float *)at = (float)get_num(&rs, f->name, 0);
    }
    c->rope_scale = (float)get_num(&rs, "rope_scale", c->rope_scale);
    c->rotary_dim = get_int(&rs, "rotary_dim", 0);
    c->sliding_window = get_int(&rs, "sliding_window", 0);
    layer_types_parse(&rs, c->n_layer, c);
    c->bias_qkv = get_bool(&rs, s, "bias_qkv", false);
    c->bias_out = get_bool(&rs, s, "bias_out", false);
    c->bias_mlp = get_bool(&rs, s, "bias_mlp", false);
    c->bias_norm = get_bool(&rs, s, "bias_norm", false);
    r->st = rs.st;
    if (c->norm == FK_NORM_LAYERNORM) c->norm_eps = (float)get_num(r, "rms_norm_eps", 1e-5);
}

// head_dim from d_model / n_head when no key gives it: an error unless n_head divides d_model.
static int64_t split_heads(cfg_reader *r, const arch_family *f, int64_t d, int64_t H, int64_t hd) {
    if (H > 0 && d > 0 && d % H != 0) {
        if (r->st == FK_OK)
            r->st = fk_error(FK_ERR_FORMAT, "%s: %s %lld is not a multiple of %s %lld%s", r->path, arch_key_of(f, ARCH_F_D_MODEL)->key,
                             (long long)d, arch_key_of(f, ARCH_F_N_HEAD)->key, (long long)H,
                             arch_key_of(f, ARCH_F_HEAD_DIM) ? " and key \"head_dim\" is absent" : "");
        return hd;
    }
    return H > 0 ? d / H : hd;
}

// The scalar fields under the row's keys (the first present key of a field, else the last one's
// default), into a config with the row's switches; *act_key: the activation key to check.
static void read_scalars(cfg_reader *r, const arch_family *f, fk_config *c, const char **act_key) {
    int64_t v[ARCH_F_SCALARS] = {0};
    double x[ARCH_F_SCALARS] = {0};
    bool done[ARCH_F_SCALARS] = {false};
    int64_t V = get_int(r, "vocab_size", -1);
    for (int i = 0; i < f->keys.n; i++) {
        const arch_key *k = &f->keys.k[i];
        if (k->field >= ARCH_F_SCALARS || done[k->field]) continue;
        bool last = true;
        for (int j = i + 1; j < f->keys.n; j++) last &= f->keys.k[j].field != k->field;
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(r->root, k->key);
        bool present = o && !cJSON_IsNull(o);
        if (!present && !last) continue;
        done[k->field] = true;
        int64_t def = k->how == ARCH_D_VALUE || k->how == ARCH_D_RATIO ? (int64_t)k->def : k->how == ARCH_D_N_HEAD ? v[ARCH_F_N_HEAD]
                    : k->how == ARCH_D_4D ? 4 * v[ARCH_F_D_MODEL] : k->how == ARCH_D_NEXT ? 0 : -1;
        if (k->field == ARCH_F_NORM_EPS || k->field == ARCH_F_ROPE_THETA) x[k->field] = get_num(r, k->key, k->def);
        else if (k->field == ARCH_F_ACT) *act_key = k->key;
        else if (k->field == ARCH_F_HEAD_DIM && k->how == ARCH_D_SPLIT && !present) done[k->field] = false;  // from the sizes, below
        else v[k->field] = get_int(r, k->key, def);
        if (k->how == ARCH_D_NEXT && v[k->field] == 0) done[k->field] = false;  // absent or 0: the next key
        if (k->how == ARCH_D_RATIO) {  // the width is the ratio times d_model
            if (!(v[k->field] >= 1 && v[k->field] <= FK_LIM_DIM) && r->st == FK_OK)
                r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" is %lld, expected 1..%lld", r->path, k->key, (long long)v[k->field],
                                 (long long)FK_LIM_DIM);
            v[k->field] *= v[ARCH_F_D_MODEL] >= 1 && v[ARCH_F_D_MODEL] <= FK_LIM_DIM ? v[ARCH_F_D_MODEL] : 0;
        }
    }
    int64_t d = v[ARCH_F_D_MODEL], H = v[ARCH_F_N_HEAD];
    fk_config_llama(c, V, d, v[ARCH_F_N_LAYER], H, done[ARCH_F_N_KV_HEAD] ? v[ARCH_F_N_KV_HEAD] : H, v[ARCH_F_FFN], v[ARCH_F_MAX_SEQ]);
    c->head_dim = done[ARCH_F_HEAD_DIM] ? v[ARCH_F_HEAD_DIM] : split_heads(r, f, d, H, c->head_dim);  // may differ from d / H
    c->norm_eps = (float)x[ARCH_F_NORM_EPS];
    if (done[ARCH_F_ROPE_THETA]) c->rope_theta = (float)x[ARCH_F_ROPE_THETA];
    arch_apply_switches(f, c);
    c->tied = get_bool(r, r->root, "tie_word_embeddings", f->tied);
}

// The activation under key must be one the row's family computes as fusekit does (an exact-GELU
// name sets c->gelu_exact).
static void check_act(cfg_reader *r, const arch_family *f, const char *key, fk_config *c) {
    const char *act = get_str(r->root, key);
    if (!f->acts || !act || r->st != FK_OK) return;
    char list[160] = "";
    for (int i = 0; f->acts[i]; i++) {
        if (strcmp(act, f->acts[i]) == 0) return;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", f->acts[i]);
    }
    for (int i = 0; f->acts_exact && f->acts_exact[i]; i++) {  // exact GELU
        if (strcmp(act, f->acts_exact[i]) == 0) { c->gelu_exact = true; return; }
        snprintf(list + strlen(list), sizeof list - strlen(list), ", %s (exact)", f->acts_exact[i]);
    }
    r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" is \"%s\", which fusekit does not implement for model_type %s (it reads: %s)", r->path,
                     key, act, f->model_type, list);
}

// The share of each head RoPE turns (ARCH_F_ROTARY: rotary_pct or partial_rotary_factor, k->def when
// absent), then transformers 5's rope_parameters (or rope_scaling), which carries it with rope_theta.
// rotary_dim is int(head_dim * share), as transformers computes it; other RoPE types and keys are
// refused, naming them.
static void rotary_parse(cfg_reader *r, const arch_key *k, fk_config *c) {
    double share = get_num(r, k->key, k->def);
    const char *key;
    const cJSON *o = rope_object(r->root, &key), *it;
    if (o && r->st == FK_OK) {
        if (!cJSON_IsObject(o)) { r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" must be an object or null", r->path, key); return; }
        if (!rotary_and_scaling(r))  // (else the row's RoPE scaling key checks the object)
        cJSON_ArrayForEach(it, o) {
            const char *n = it->string;
            bool type = strcmp(n, "rope_type") == 0 || strcmp(n, "type") == 0;
            if (type && !(cJSON_IsString(it) && strcmp(it->valuestring, "default") == 0) && r->st == FK_OK)
                r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\".%s is %s; fusekit implements this model_type's default RoPE only", r->path,
                                 key, n, cJSON_IsString(it) ? it->valuestring : "not a string");
            else if (!type && strcmp(n, "rope_theta") != 0 && strcmp(n, "partial_rotary_factor") != 0 && r->st == FK_OK)
                r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\".%s is not supported (fusekit would ignore it)", r->path, key, n);
        }
        if (cJSON_GetObjectItemCaseSensitive(o, "rope_theta")) c->rope_theta = (float)rope_num(r, o, key, "rope_theta", 1e30);
        if (cJSON_GetObjectItemCaseSensitive(o, "partial_rotary_factor")) share = rope_num(r, o, key, "partial_rotary_factor", 1e30);
    }
    // range-checked before the cast (a float to integer cast out of range is undefined; NaN fails)
    int64_t dims = share > 0 && share < 1e6 ? (int64_t)((double)c->head_dim * share) : 0;
    if (!(share <= 1) || dims < 2) {
        if (r->st == FK_OK)
            r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" (or partial_rotary_factor) is %g: it turns %lld of the %lld dims of a head, expected "
                             "a share in (0, 1] giving 2..%lld", r->path, k->key, share, (long long)dims, (long long)c->head_dim, (long long)c->head_dim);
        return;
    }
    c->rotary_dim = dims == c->head_dim ? 0 : dims;
}

// An error naming key (of r's object) when it is set other than to `want`.
static void mpt_refuse(cfg_reader *r, const char *key, const char *want) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v || cJSON_IsNull(v) || r->st != FK_OK) return;
    char *text = cJSON_PrintUnformatted(v), kp[128];
    bool ok = text && strcmp(text, want) == 0;
    if (!ok)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" is %s; fusekit implements model_type mpt only with %s (transformers' "
                         "MptForCausalLM computes that, whatever the key says)", r->path, key_path(r, key, kp, sizeof kp), text ? text : "?", want);
    free(text);
}

// MPT's keys beyond the sizes (ARCH_F_MPT): exact GELU, attn_config's ALiBi, clip_qkv and softmax_scale; what transformers' MptForCausalLM does not
// compute (biases, other norms or FFNs, logit_scale, QK-LayerNorm, prefix LM, ...) is refused.
// learned_pos_emb is read as transformers does (not at all): a wpe tensor is refused as extra.
static void mpt_config_parse(cfg_reader *r, fk_config *c) {
    c->gelu_exact = true;  // MptMLP: nn.GELU(approximate="none")
    mpt_refuse(r, "no_bias", "true");
    mpt_refuse(r, "logit_scale", "null");
    const char *norm = get_str(r->root, "norm_type");
    if (norm && strcmp(norm, "low_precision_layernorm") != 0 && strcmp(norm, "layernorm") != 0) mpt_refuse(r, "norm_type", "\"low_precision_layernorm\"");
    const cJSON *ffn = cJSON_GetObjectItemCaseSensitive(r->root, "ffn_config");
    if (ffn && !cJSON_IsNull(ffn)) {
        cfg_reader fr = {ffn, r->path, r->st, r->fam, "ffn_config"};
        mpt_refuse(&fr, "ffn_type", "\"mptmlp\"");
        mpt_refuse(&fr, "ffn_act_fn", "null");
        r->st = fr.st;
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(r->root, "attn_config");
    c->alibi_bias_max = 8;  // MptAttentionConfig's defaults when attn_config is absent
    if (!a || cJSON_IsNull(a) || r->st != FK_OK) return;
    if (!cJSON_IsObject(a)) { r->st = fk_error(FK_ERR_FORMAT, "%s: key \"attn_config\" must be an object", r->path); return; }
    cfg_reader ar = {a, r->path, r->st, r->fam, "attn_config"};
    mpt_refuse(&ar, "alibi", "true");
    static const char *const off[] = {"qk_ln", "qk_gn", "prefix_lm", "attn_uses_sequence_id", "rope"};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) mpt_refuse(&ar, off[i], "false");
    mpt_refuse(&ar, "attn_type", "\"multihead_attention\"");
    mpt_refuse(&ar, "sliding_window_size", "-1");
    double bmax = get_num(&ar, "alibi_bias_max", 8), clip = get_num_or_null(&ar, "clip_qkv", 0), sc = get_num_or_null(&ar, "softmax_scale", 0);
    if (!(bmax > 0 && bmax < 1e6) && ar.st == FK_OK)
        ar.st = fk_error(FK_ERR_FORMAT, "%s: key \"attn_config.alibi_bias_max\" is %g, expected a number in (0, 1e6)", r->path, bmax);
    c->alibi_bias_max = (float)bmax;
    c->clip_qkv = (float)clip;
    c->attn_scale = (float)sc;
    r->st = ar.st;
}

// Falcon's layout keys (ARCH_F_FALCON) as FalconAttention and FalconDecoderLayer read them: the KV heads
// (multi_query: one; the new decoder: num_kv_heads; else every head) and the residual kind; alibi and
// the combinations transformers cannot build are refused naming the key.
static void falcon_config_parse(cfg_reader *r, fk_config *c) {
    if (get_bool(r, r->root, "alibi", false) && r->st == FK_OK) {
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"alibi\" is true; fusekit implements model_type falcon only with RoPE (transformers' "
                         "Falcon ALiBi rounds to bfloat16 and scales differently from MPT's)", r->path);
        return;
    }
    bool nda = get_bool(r, r->root, "new_decoder_architecture", false), mq = get_bool(r, r->root, "multi_query", true);
    bool par = get_bool(r, r->root, "parallel_attn", true);
    double kv = get_num_or_null(r, "num_kv_heads", 0), ln = get_num_or_null(r, "num_ln_in_parallel_attn", 0);
    if (kv == 0) kv = (double)c->n_head;  // FalconConfig: num_attention_heads when absent
    if (r->st != FK_OK) return;
    if (nda && !par)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"parallel_attn\" is false with new_decoder_architecture true; transformers' "
                         "FalconDecoderLayer then has no ln_attn/ln_mlp to run", r->path);
    else if (ln != 0 && ln != 1 && ln != 2)
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"num_ln_in_parallel_attn\" is %g, expected 1, 2 or null", r->path, ln);
    else if (!nda && ln == 2 && par)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"num_ln_in_parallel_attn\" is 2 without new_decoder_architecture; transformers' "
                         "FalconDecoderLayer then makes ln_attn/ln_mlp but runs input_layernorm", r->path);
    else if (nda && (kv < 1 || kv != floor(kv) || c->n_head % (int64_t)kv != 0))
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"num_kv_heads\" is %g, expected a divisor of num_attention_heads %lld", r->path, kv,
                         (long long)c->n_head);
    else if (!nda && !mq && kv != (double)c->n_head)
        r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"num_kv_heads\" is %g with multi_query false; transformers' Falcon then splits %lld "
                         "key heads from query_key_value but groups queries by %g", r->path, kv, (long long)c->n_head, kv);
    if (r->st != FK_OK) return;
    c->n_kv_head = nda ? (int64_t)kv : mq ? 1 : c->n_head;
    c->residual = nda ? (ln == 1 ? FK_RESID_PARALLEL_SHARED : FK_RESID_PARALLEL) : par ? FK_RESID_PARALLEL_SHARED : FK_RESID_SEQUENTIAL;
}

// A count key of an MoE config: an integer in lo..hi (def when absent), else an error naming it.
static int64_t moe_int(cfg_reader *r, const char *key, int64_t def, int64_t lo, int64_t hi) {
    int64_t v = get_int(r, key, def);
    if ((v < lo || v > hi) && r->st == FK_OK)
        r->st = fk_error(FK_ERR_FORMAT, "%s: key \"%s\" is %lld, expected %lld..%lld", r->path, key, (long long)v, (long long)lo, (long long)hi);
    return v;
}

// Which layers are MoE: every one, but for the layers mlp_only_layers lists and those decoder_sparse_step
// skips (layer l is MoE when (l + 1) % step == 0), as transformers' Qwen2-MoE / Qwen3-MoE decoder layers decide.
static void moe_layers_parse(cfg_reader *r, const arch_moe *mo, fk_config *c) {
    int64_t L = c->n_layer < FK_MAX_LAYERS ? c->n_layer : FK_MAX_LAYERS, step = 1;
    for (int64_t l = 0; l < L; l++) c->moe[l] = 1;
    if (!mo->sparse_keys) return;
    step = moe_int(r, "decoder_sparse_step", 1, 1, FK_MAX_LAYERS);
    for (int64_t l = 0; l < L && step >= 1; l++) c->moe[l] = (l + 1) % step == 0;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(r->root, "mlp_only_layers"), *v;
    if (!a || cJSON_IsNull(a)) return;
    if (!cJSON_IsArray(a) && r->st == FK_OK) r->st = fk_error(FK_ERR_FORMAT, "%s: key \"mlp_only_layers\" must be a list of layer indices", r->path);
    int i = 0;
    cJSON_ArrayForEach(v, a) {
        int64_t l;
        if (json_int(v, 0, (double)L - 1, &l)) c->moe[l] = 0;
        else if (r->st == FK_OK)
            r->st = fk_error(FK_ERR_FORMAT, "%s: key \"mlp_only_layers\"[%d] must be a layer index 0..%lld", r->path, i, (long long)L - 1);
        i++;
    }
    int64_t n = 0;
    for (int64_t l = 0; l < L; l++) n += c->moe[l];
    if (n == 0 && r->st == FK_OK)
        r->st = fk_error(FK_ERR_FORMAT, "%s: keys \"decoder_sparse_step\" (%lld) and \"mlp_only_layers\" leave none of the %lld layers a "
                         "mixture of experts", r->path, (long long)step, (long long)L);
}

// The MoE keys of row f (ARCH_F_MOE; k->key the expert count, k->def when absent): experts, top-k, their
// width, renormalisation, the MoE layers and their shared expert. A count of 0 is a dense model where the row
// may have dense layers (transformers' Qwen2-MoE: num_experts > 0 makes the MoE layers). router_jitter_noise
// (training-time input noise), output_router_logits and router_aux_loss_coef (the load-balancing loss) change
// no forward computation: read as any value; fusekit trains without either.
static void moe_config_parse(cfg_reader *r, const arch_family *f, const arch_key *k, fk_config *c) {
    const arch_moe *mo = f->moe;
    const char *ck = k->key, *alias = mo->count_alias;
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(r->root, ck), *av = alias ? cJSON_GetObjectItemCaseSensitive(r->root, alias) : NULL;
    if ((!kv || cJSON_IsNull(kv)) && av && !cJSON_IsNull(av)) ck = alias;
    else if (av && !cJSON_IsNull(av) && kv && !cJSON_IsNull(kv) && get_int(r, alias, 0) != get_int(r, ck, 0) && r->st == FK_OK)
        r->st = fk_error(FK_ERR_FORMAT, "%s: keys \"%s\" and \"%s\" (the same count in transformers) differ", r->path, ck, alias);
    int64_t E = moe_int(r, ck, (int64_t)k->def, mo->sparse_keys ? 0 : 1, FK_LIM_EXPERTS);
    if (E == 0 || r->st != FK_OK) return;
    c->n_expert = E;
    c->n_expert_used = moe_int(r, "num_experts_per_tok", mo->used_def, 1, E);
    c->expert_ffn = mo->ffn_key ? moe_int(r, mo->ffn_key, mo->ffn_def, 1, FK_LIM_DIM) : c->ffn[0];
    c->expert_norm = mo->norm_key ? get_bool(r, r->root, "norm_topk_prob", false) : true;
    int64_t shared = mo->shared_key ? moe_int(r, mo->shared_key, mo->shared_def, 1, FK_LIM_DIM) : 0;
    c->shared_gate = mo->shared_key || (mo->per_layer && get_bool(r, r->root, "shared_expert_gate", false));
    moe_layers_parse(r, mo, c);
    for (int64_t l = 0; l < FK_MAX_LAYERS; l++)  // (past n_layer: 0, whatever the unused intermediate_size said)
        if ((c->moe[l] && !mo->per_layer) || l >= c->n_layer) c->ffn[l] = c->moe[l] ? shared : 0;  // the shared expert, or no dense FFN
    if (mo->per_layer) get_int_list(r, "fusekit_experts", c->n_layer, c->experts);
    for (int64_t l = 0; l < c->n_layer && l < FK_MAX_LAYERS; l++)
        if (c->experts[l] == E) c->experts[l] = 0;  // (0: n_expert)
    get_num(r, "router_jitter_noise", 0);  // (type checks only)
    get_bool(r, r->root, "output_router_logits", false);
    get_num(r, "router_aux_loss_coef", 0);
}

// A family's config.json: the scalar fields, then in the row's order the keys that refine them.
static void read_family(cfg_reader *r, const arch_family *f, fk_config *c) {
    const char *act_key = NULL;
    r->fam = f;
    read_scalars(r, f, c, &act_key);
    for (int i = 0; i < f->keys.n; i++) {
        const arch_key *k = &f->keys.k[i];
        switch (k->field) {
        case ARCH_F_ACT:
            if (k->key == act_key) check_act(r, f, k->key, c);
            if (k->def == 1 && f->acts_exact && !get_str(r->root, k->key)) c->gelu_exact = true;  // absent: exact GELU (gpt_neox)
            break;
        case ARCH_F_FLAG:
            if (get_bool(r, r->root, k->key, k->def != 0) != (k->def != 0) && r->st == FK_OK)
                r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" is %s; fusekit implements model_type %s only with \"%s\": %s", r->path,
                                 k->key, k->def != 0 ? "false" : "true", f->model_type, k->key, k->def != 0 ? "true" : "false");
            break;
        case ARCH_F_ATTN_BIAS: c->bias_qkv = c->bias_out = get_bool(r, r->root, k->key, k->def != 0); break;
        case ARCH_F_ROTARY: rotary_parse(r, k, c); break;
        case ARCH_F_PARALLEL: c->residual = get_bool(r, r->root, k->key, k->def != 0) ? f->residual : FK_RESID_SEQUENTIAL; break;
        case ARCH_F_QKV_BIAS: c->bias_qkv = get_bool(r, r->root, k->key, k->def != 0); break;
        case ARCH_F_QK_LN: c->qk_norm = c->qk_norm_ln = get_bool(r, r->root, k->key, k->def != 0); break;
        case ARCH_F_ROPE_SCALING: llama_rope(r, c, ((int)k->def & ARCH_ROPE_PHI3_NAMES) != 0); break;
        case ARCH_F_USE_BIAS: c->bias_qkv = c->bias_out = c->bias_mlp = get_bool(r, r->root, k->key, f->sw.bias_qkv); break;
        case ARCH_F_WINDOW:
            for (int64_t l = 0; l < c->n_layer && l < FK_MAX_LAYERS; l++) c->sliding[l] = 1;
            set_window(r, f, k->key, window_value(r, k->key, (int64_t)k->def), c);
            break;
        case ARCH_F_QWEN_WINDOW: qwen_window_parse(r, f, k, c); break;
        case ARCH_F_GEMMA: gemma_config_parse(r, f->gemma, c); break;
        case ARCH_F_MPT: mpt_config_parse(r, c); break;
        case ARCH_F_FALCON: falcon_config_parse(r, c); break;
        case ARCH_F_MOE: moe_config_parse(r, f, k, c); break;
        case ARCH_F_NULL_ONLY: {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, k->key);
            if (v && !cJSON_IsNull(v) && r->st == FK_OK)
                r->st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"%s\" is set; fusekit implements model_type %s only with \"%s\": null",
                                 r->path, k->key, f->model_type, k->key);
            break;
        }
        case ARCH_F_SWITCHES: {
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(r->root, k->key);
            if (cJSON_IsObject(s)) fusekit_switches_parse(r, s, c);
            else if (r->st == FK_OK)
                r->st = fk_error(FK_ERR_FORMAT, "%s: model_type %s needs the \"%s\" object of switches", r->path, f->model_type, k->key);
            break;
        }
        default: break;
        }
    }
}

fk_status fk_hf_config_parse(const char *json, const char *path, fk_config *c) {
    cJSON *root = NULL;
    FK_TRY(fk_json_parse(path, json, strlen(json), &root));
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); return fk_error(FK_ERR_FORMAT, "%s: not a JSON object", path); }
    cfg_reader r = {root, path, FK_OK, NULL, NULL};
    const char *type = get_str(root, "model_type");
    if (!type) { cJSON_Delete(root); return fk_error(FK_ERR_FORMAT, "%s: missing key \"model_type\"", path); }
    bool alias = false;
    const arch_family *fam = arch_of_model_type(type, &alias);
    if (!fam) {
        fk_status st = fk_error(FK_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (supported: %s)", path, type, arch_model_type_names());
        cJSON_Delete(root);
        return st;
    }
    if (alias) {
        // Gemma 3 with a vision tower: the text model is text_config (the weights under
        // model.language_model. or language_model.model.; the vision tensors are skipped)
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
        if (!cJSON_IsObject(tc)) {
            fk_status st = fk_error(FK_ERR_FORMAT, "%s: model_type %s needs the object \"text_config\"", path, type);
            cJSON_Delete(root);
            return st;
        }
        r.root = tc;
        read_family(&r, fam, c);
        r.root = root;
        c->tied = get_bool(&r, root, "tie_word_embeddings", c->tied);
    } else {
        read_family(&r, fam, c);
    }
    const cJSON *quant = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (quant && !cJSON_IsNull(quant) && r.st == FK_OK) {
        const char *method = get_str(quant, "quant_method");
        r.st = fk_error(FK_ERR_UNSUPPORTED, "%s: key \"quantization_config\" is set (quant_method \"%s\"); quantized checkpoints are not supported "
                        "(fusekit loads F32, F16 and BF16 weights)", path, method ? method : "?");
    }
    r.root = root;
    get_int_list(&r, "fusekit_intermediate_sizes", c->n_layer, c->ffn);
    get_int_list(&r, "fusekit_attention_heads", c->n_layer, c->heads);
    c->bos_id = get_token_id(root, "bos_token_id");
    c->eos_id = get_token_id(root, "eos_token_id");
    cJSON_Delete(root);
    if (r.st != FK_OK) return r.st;
    fk_status st = fk_config_validate(c);
    if (st != FK_OK) return fk_error_context(st, "%s", path);
    return FK_OK;
}

fk_status fk_hf_config_read(const char *path, fk_config *c) {
    char *json;
    FK_TRY(fk_read_file(path, &json, NULL));
    fk_status st = fk_hf_config_parse(json, path, c);
    free(json);
    return st;
}

// ------------------------------------------------------------------ weights

static bool is_norm_kind(fk_param_kind k) {
    return k == FK_P_LN1_W || k == FK_P_LN2_W || k == FK_P_LNF_W || k == FK_P_ATTN_POST_W || k == FK_P_FFN_POST_W ||
           k == FK_P_Q_NORM_W || k == FK_P_K_NORM_W;
}

// What a Gemma folder's norm weights differ by from the model's: HF stores w with the scale 1 + w,
// the model scales by norm_offset + w, so HF = w + norm_offset - 1 (0 for other types).
static float norm_shift(const fk_model *m, fk_arch arch) { return arch_of(arch)->sw.gemma_scales ? m->cfg.norm_offset - 1 : 0; }

fk_status fk_hf_save(const fk_model *m, const char *dir, fk_dtype dtype) {
    if (fk_model_is_frozen(m))
        return fk_error(FK_ERR_ARG, "save %s: the model reads its matrices as stored in its file (loaded frozen); load it decoded to save it", dir);
    if (dtype != FK_DT_F32 && dtype != FK_DT_F16 && dtype != FK_DT_BF16)
        return fk_error(FK_ERR_ARG, "save: dtype %s is not one of F32, F16, BF16", fk_dtype_name(dtype));
    FK_TRY(fk_mkdir_p(dir));
    fk_hf_tensor *ts;
    int n;
    fk_arch arch = fk_config_arch(&m->cfg);
    float shift = norm_shift(m, arch);
    FK_TRY(fk_hf_tensors(m, arch, &ts, &n));
    fk_st_entry *e = calloc((size_t)n, sizeof *e);
    void **bufs = calloc((size_t)n, sizeof *bufs);
    fk_status st = e && bufs ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && st == FK_OK; i++) {
        const fk_hf_tensor *t = &ts[i];
        int64_t numel = t->rows * tensor_cols(m, t);
        e[i].name = t->name;
        e[i].dtype = dtype;
        e[i].ndim = t->ndim;
        e[i].shape[0] = t->shape[0];
        e[i].shape[1] = t->shape[1];
        bool shifted = shift != 0 && is_norm_kind(m->params[t->param].kind);
        if (!t->transpose && !t->head_rows && dtype == FK_DT_F32 && !shifted) { e[i].data = m->w + m->params[t->param].offset + t->row0 * tensor_cols(m, t); continue; }
        float *tmp = malloc((size_t)numel * sizeof(float));
        bufs[i] = tmp;
        if (!tmp) { st = fk_error(FK_ERR_NOMEM, "out of memory"); break; }
        fk_hf_gather(m, m->w, t, tmp);
        if (shifted)
            for (int64_t j = 0; j < numel; j++) tmp[j] += shift;
        if (dtype != FK_DT_F32) {
            uint16_t *h = (uint16_t *)tmp;  // in place: element j is written after element j is read
            for (int64_t j = 0; j < numel; j++) h[j] = dtype == FK_DT_F16 ? fk_f32_to_f16(tmp[j]) : fk_f32_to_bf16(tmp[j]);
        }
        e[i].data = tmp;
    }
    char *path = fk_path_join(dir, "model.safetensors"), *cpath = fk_path_join(dir, "config.json");
    if (st == FK_OK) st = fk_st_write(path, e, n, "{\"format\":\"pt\"}");
    if (st == FK_OK) {
        char *json = config_json(&m->cfg, dtype);
        st = fk_write_file_atomic(cpath, json, strlen(json));
        free(json);
    }
    for (int i = 0; i < n; i++) free(bufs ? bufs[i] : NULL);
    free(bufs); free(e); free(ts); free(path); free(cpath);
    return st;
}

// A Gemma 3 folder with a vision tower (model_type gemma3) keeps the text model under another
// prefix: transformers 5 writes model.language_model.*, 4.x language_model.model.* (and
// language_model.lm_head.weight). Returns the name of HF tensor `name` in such a folder in buf,
// or name itself.
static const char *text_model_name(const char *name, int layout, char *buf, size_t n) {
    if (layout == 0) return name;
    if (strncmp(name, "model.", 6) == 0) snprintf(buf, n, "%s%s", layout == 1 ? "model.language_model." : "language_model.model.", name + 6);
    else snprintf(buf, n, "%s%s", layout == 1 ? "" : "language_model.", name);
    return buf;
}

static bool vision_tensor(const char *name) {
    const char *pre[] = {"vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."};
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
        if (strncmp(name, pre[i], strlen(pre[i])) == 0) return true;
    return false;
}

// Tensors a checkpoint may hold that are buffers, not parameters.
static bool ignorable(const char *name) {
    size_t n = strlen(name);
    const char *sfx[] = {".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        size_t k = strlen(sfx[i]);
        if (n >= k && strcmp(name + n - k, sfx[i]) == 0) return true;
    }
    return false;
}

// The row whose tensor names a folder's weights have: its config.json's model_type (a model whose
// computation another row writes, phi3 without partial rotary as mistral, keeps its file's names);
// the row that writes the config when config.json names no type of the table.
static fk_arch folder_arch(const char *dir, const fk_config *c) {
    fk_arch a = fk_config_arch(c);
    char type[64];
    bool alias;
    const arch_family *f = fk_hf_model_type(dir, type, sizeof type) == FK_OK && type[0] ? arch_of_model_type(type, &alias) : NULL;
    if (f && f->arch >= 0) a = (fk_arch)f->arch;
    return a;
}

fk_status fk_hf_model_type(const char *dir, char *buf, size_t n) {
    buf[0] = 0;
    char *path = fk_path_join(dir, "config.json"), *json = NULL;
    if (!path) return fk_error(FK_ERR_NOMEM, "out of memory");
    fk_status st = fk_read_file(path, &json, NULL);
    cJSON *root = st == FK_OK ? cJSON_Parse(json) : NULL;
    if (st == FK_OK && !root) st = fk_error(FK_ERR_FORMAT, "%s: not valid JSON", path);
    const char *type = root ? get_str(root, "model_type") : NULL;
    if (type) snprintf(buf, n, "%s", type);
    cJSON_Delete(root);
    free(json);
    free(path);
    return st;
}

// The form of a folder's tensors: the row's written one, or its ARCH_T_ALT form (transformers 5's stacked
// experts) when the first tensor of a role with one is missing and the other form's is there.
static fk_status folder_form(const fk_model *m, fk_arch arch, const fk_st_set *s, fk_hf_tensor **ts, int *n) {
    arch_tensor_set set = arch_of(arch)->hf;
    int i = 0;
    while (i < *n && !has_alt(set, m->params[(*ts)[i].param].kind)) i++;
    if (i == *n || fk_st_set_find(s, (*ts)[i].name, NULL)) return FK_OK;
    fk_hf_tensor *alt;
    int na, j = 0;
    FK_TRY(hf_tensors_form(m, arch, true, &alt, &na));
    while (j < na && !has_alt(set, m->params[alt[j].param].kind)) j++;
    if (j == na || !fk_st_set_find(s, alt[j].name, NULL)) { free(alt); return FK_OK; }  // neither: the written form's error
    free(*ts);
    *ts = alt;
    *n = na;
    return FK_OK;
}

// ------------------------------------------------------------------ frozen: matrices read in place

// Whether the n 16-bit floats (dtype F16 or BF16) at p are all finite: no exponent of all ones.
static bool halves_finite(const void *p, int64_t n, fk_dtype dt) {
    const unsigned char *b = p;
    unsigned mask = dt == FK_DT_BF16 ? 0x7f80u : 0x7c00u, bad = 0;
    #pragma omp parallel for reduction(| : bad) if (n > (1 << 20))
    for (int64_t i = 0; i < n; i++) bad |= ((b[2 * i] | (unsigned)b[2 * i + 1] << 8) & mask) == mask;
    return !bad;
}

// Whether a frozen load reads file tensor f in place: F16/BF16 rows of a matrix the engine can
// read as stored, in the table's row order and width (not transposed as GPT-2's Conv1D, not
// regrouped per KV head, not stacked experts), at an even address.
static bool in_place(const fk_model *m, const fk_hf_tensor *t, const fk_st_tensor *f) {
    return (f->dtype == FK_DT_F16 || f->dtype == FK_DT_BF16) && !t->transpose && t->head_rows == 0 && t->n_exp == 0 && t->ndim == 2 &&
           fk_param_storable(m->params[t->param].kind) && t->shape[1] == tensor_cols(m, t) && (uintptr_t)f->data % 2 == 0;
}

// Makes HF tensor t's rows read from file tensor f where it is mapped (fk_model_add_stored), after
// checking its values are finite; the arena's rows stay untouched.
static fk_status store_in_place(fk_model *m, const fk_hf_tensor *t, const fk_st_tensor *f, const char *path) {
    if (!halves_finite(f->data, f->numel, f->dtype))
        return fk_error(FK_ERR_NUMERIC, "%s: tensor %s holds a non-finite value", path, t->name);
    fk_stored s = {.param = t->param, .row0 = t->row0, .rows = t->shape[0], .type = f->dtype == FK_DT_BF16 ? FK_GGML_BF16 : FK_GGML_F16,
                   .data = f->data, .row_bytes = (size_t)t->shape[1] * 2};
    fk_status st = fk_model_add_stored(m, &s);
    return st == FK_OK ? st : fk_error_context(st, "%s: tensor %s", path, t->name);
}

// Whether every matrix (2-D or more) in the files is F16 or BF16: a frozen load then keeps them
// in place, and the memory check counts only the rest.
static bool set_all_half(const fk_st_set *s) {
    for (int i = 0; i < s->n; i++)
        for (int j = 0; j < s->st[i].n_tensors; j++) {
            const fk_st_tensor *t = &s->st[i].tensors[j];
            if (t->ndim >= 2 && t->dtype != FK_DT_F16 && t->dtype != FK_DT_BF16) return false;
        }
    return true;
}

// The weights of dir from its open files s into m: copied into the arena, or with keep the
// tensors in_place allows read where s maps them (s must then outlive m).
// (over 80 lines: one pass over the tensors with its per-tensor checks; split, they would pass a dozen locals)
static fk_status load_weights_from(fk_model *m, const char *dir, const fk_st_set *sp, bool keep) {
    const fk_st_set s = *sp;  // a view: the caller owns and closes the files
    fk_hf_tensor *ts;
    int n;
    fk_arch arch = folder_arch(dir, &m->cfg);
    float shift = norm_shift(m, arch);
    fk_status st = fk_hf_tensors(m, arch, &ts, &n);
    if (st == FK_OK) st = folder_form(m, arch, &s, &ts, &n);
    float *tmp = NULL;
    int64_t tmp_cap = 0;
    // a Gemma 3 folder with a vision tower: the text model's prefix
    int layout = 0;
    const char *p0 = NULL;
    char nbuf[160];
    const arch_family *fam = arch_of(arch);
    const char *pre = fam->hf_optional_prefix;
    size_t npre = pre ? strlen(pre) : 0;
    if (fam->model_type_alias && !fk_st_set_find(&s, "model.embed_tokens.weight", &p0))
        layout = fk_st_set_find(&s, "model.language_model.embed_tokens.weight", &p0) ? 1
               : fk_st_set_find(&s, "language_model.model.embed_tokens.weight", &p0) ? 2 : 0;
    for (int i = 0; i < n && st == FK_OK; i++) {
        const fk_hf_tensor *t = &ts[i];
        const char *path = NULL;
        const fk_st_tensor *f = fk_st_set_find(&s, text_model_name(t->name, layout, nbuf, sizeof nbuf), &path);
        if (!f && pre && strncmp(t->name, pre, npre) == 0) f = fk_st_set_find(&s, t->name + npre, &path);
        if (!f) { st = fk_error(FK_ERR_FORMAT, "%s: tensor %s is missing (config.json asks for it)", dir, t->name); break; }
        int64_t want = t->shape[0] * t->shape[1] * t->shape[2];
        bool shape_ok = f->ndim == t->ndim;
        for (int d = 0; d < t->ndim && shape_ok; d++) shape_ok = f->shape[d] == t->shape[d];
        if (!shape_ok) {
            char got[96] = "", exp[96] = "";
            for (int d = 0; d < f->ndim; d++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)f->shape[d]);
            for (int d = 0; d < t->ndim; d++) snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            st = fk_error(FK_ERR_FORMAT, "%s: tensor %s has shape [%s] but config.json implies [%s]", path, t->name, got, exp);
            break;
        }
        if (keep && in_place(m, t, f)) {
            st = store_in_place(m, t, f, path);
            continue;
        }
        // The files are mmapped (fk_st_open); the model's weights are one arena, so each tensor
        // is copied once out of the mapping: F32 straight into the arena (transposed for GPT-2's
        // Conv1D weights), F16/BF16 (and F64, or F32 at an offset not a multiple of 4) converted
        // through one scratch buffer grown to the largest such tensor. No file is read whole.
        const float *src = NULL;
        if (f->dtype == FK_DT_F32 && (uintptr_t)f->data % _Alignof(float) == 0) src = f->data;
        else {
            if (want > tmp_cap) {
                float *grown = realloc(tmp, (size_t)want * sizeof(float));
                if (!grown) { st = fk_error(FK_ERR_NOMEM, "out of memory"); break; }
                tmp = grown;
                tmp_cap = want;
            }
            st = fk_st_to_f32(f, tmp);
            if (st != FK_OK) { fk_error_context(st, "%s", path); break; }
            src = tmp;
        }
        fk_hf_scatter(m, m->w, t, src);
        for (int64_t j = 0; j < want && st == FK_OK; j++)
            if (!isfinite(src[j]))
                st = fk_error(FK_ERR_NUMERIC, "%s: tensor %s holds a non-finite value (%g)", path, t->name, (double)src[j]);
        if (shift != 0 && is_norm_kind(m->params[t->param].kind))
            for (int64_t j = 0; j < want; j++) m->w[m->params[t->param].offset + t->row0 * tensor_cols(m, t) + j] -= shift;
    }
    free(tmp);
    // Every tensor in the files must be used: an extra one means config and weights disagree.
    for (int i = 0; i < s.n && st == FK_OK; i++)
        for (int j = 0; j < s.st[i].n_tensors && st == FK_OK; j++) {
            const char *nm = s.st[i].tensors[j].name;
            bool known = ignorable(nm) || (m->cfg.tied && strcmp(nm, text_model_name("lm_head.weight", layout, nbuf, sizeof nbuf)) == 0) ||
                         (layout && vision_tensor(nm));
            for (int k = 0; k < n && !known; k++)
                known = strcmp(text_model_name(ts[k].name, layout, nbuf, sizeof nbuf), nm) == 0 ||
                        (pre && strncmp(ts[k].name, pre, npre) == 0 && strcmp(ts[k].name + npre, nm) == 0);
            if (!known) st = fk_error(FK_ERR_FORMAT, "%s: tensor %s is not part of the model config.json describes (%s with %lld layers)",
                                      s.st[i].path, nm, fk_arch_name(arch), (long long)m->cfg.n_layer);
        }
    free(ts);
    return st;
}

fk_status fk_hf_load_weights(fk_model *m, const char *dir) {
    fk_st_set s;
    FK_TRY(fk_st_set_open(&s, dir));
    fk_status st = load_weights_from(m, dir, &s, false);
    fk_st_set_close(&s);
    return st;
}

static void set_release(void *p) {
    fk_st_set_close(p);
    free(p);
}

fk_status fk_hf_load(fk_model *m, const char *dir) { return fk_hf_load_ex(m, dir, 0); }

fk_status fk_hf_load_ex(fk_model *m, const char *dir, unsigned flags) {
    fk_config c;
    char *cpath = fk_path_join(dir, "config.json");
    fk_status st = fk_hf_config_read(cpath, &c);
    free(cpath);
    FK_TRY(st);
    bool keep = flags & FK_HF_KEEP_STORED;
    if (!keep) {  // the memory check (from config.json alone) before any file is opened
        st = fk_model_init(m, &c);
        if (st != FK_OK) return fk_error_context(st, "%s/config.json", dir);
        st = fk_hf_load_weights(m, dir);
        if (st != FK_OK) fk_model_free(m);
        return st;
    }
    fk_st_set *s = calloc(1, sizeof *s);
    if (!s) return fk_error(FK_ERR_NOMEM, "out of memory");
    st = fk_st_set_open(s, dir);  // first: whether every matrix stays in the files decides the memory check
    if (st == FK_OK) {
        st = fk_model_init_ex(m, &c, set_all_half(s) ? FK_MODEL_INIT_STORED : 0);
        if (st != FK_OK) st = fk_error_context(st, "%s/config.json", dir);
        else if ((st = load_weights_from(m, dir, s, true)) != FK_OK) fk_model_free(m);  // before the files its stored rows point into
    }
    if (st == FK_OK && m->n_stored > 0) fk_model_set_stored_owner(m, s, set_release);
    else set_release(s);
    return st;
}
