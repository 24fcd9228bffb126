// fk_config presets and validation.
#include "fusekit/model.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void config_common(fk_config *c, int64_t vocab, int64_t d_model, int64_t n_layer, int64_t n_head, int64_t max_seq) {
    memset(c, 0, sizeof *c);
    c->vocab_size = vocab;
    c->d_model = d_model;
    c->n_layer = n_layer;
    c->n_head = n_head;
    c->n_kv_head = n_head;
    c->head_dim = n_head > 0 ? d_model / n_head : 0;
    c->max_seq = max_seq;
    c->rope_theta = 10000.0f;
    c->bos_id = -1;
    c->eos_id = -1;
}

void fk_config_gpt2(fk_config *c, int64_t vocab, int64_t d_model, int64_t n_layer, int64_t n_head, int64_t max_seq) {
    config_common(c, vocab, d_model, n_layer, n_head, max_seq);
    for (int l = 0; l < FK_MAX_LAYERS; l++) c->ffn[l] = 4 * d_model;
    c->norm = FK_NORM_LAYERNORM;
    c->norm_eps = 1e-5f;
    c->pos = FK_POS_LEARNED;
    c->mlp = FK_MLP_GELU;
    c->bias_qkv = c->bias_out = c->bias_mlp = c->bias_norm = true;
    c->tied = true;
}

void fk_config_llama(fk_config *c, int64_t vocab, int64_t d_model, int64_t n_layer, int64_t n_head,
                     int64_t n_kv_head, int64_t ffn, int64_t max_seq) {
    config_common(c, vocab, d_model, n_layer, n_head, max_seq);
    c->n_kv_head = n_kv_head;
    for (int l = 0; l < FK_MAX_LAYERS; l++) c->ffn[l] = ffn;
    c->norm = FK_NORM_RMSNORM;
    c->norm_eps = 1e-5f;
    c->pos = FK_POS_ROPE;
    c->mlp = FK_MLP_SWIGLU;
    c->tied = false;
}

bool fk_config_gated(const fk_config *c) { return c->mlp == FK_MLP_SWIGLU || c->mlp == FK_MLP_GEGLU; }

bool fk_config_uniform_ffn(const fk_config *c) {
    for (int64_t l = 1; l < c->n_layer; l++)
        if (c->ffn[l] != c->ffn[0]) return false;
    return true;
}

// The size limits are in model.h (FK_LIM_*); a size product (a matrix, a table, the KV cache, a
// batch's activations over the context) within these cannot overflow.
#define LIM_DIM FK_LIM_DIM
#define LIM_SEQ FK_LIM_SEQ
#define LIM_FLOATS ((int64_t)1 << 40)  // weights, and KV cache, in floats

// ------------------------------------------------------------------ the field table

#define FK_CF_ROW(field, type, label, flags, lo, hi, keys) {#field, label, keys, type, offsetof(fk_config, field), flags, lo, hi},
const fk_config_field fk_config_fields[] = {FK_CONFIG_FIELDS(FK_CF_ROW)};
#undef FK_CF_ROW
const int fk_config_n_fields = (int)(sizeof fk_config_fields / sizeof fk_config_fields[0]);

double fk_config_field_value(const fk_config *c, const fk_config_field *f, int64_t l) {
    const char *p = (const char *)c + f->offset;
    switch (f->type) {
    case FK_CF_I64:  // rotary_dim: 0 means head_dim
        return f->offset == offsetof(fk_config, rotary_dim) ? (double)fk_config_rotary_dim(c) : (double)*(const int64_t *)p;
    case FK_CF_I32: return (double)*(const int32_t *)p;
    case FK_CF_F32: return (double)*(const float *)p;
    case FK_CF_BOOL: return *(const bool *)p;
    case FK_CF_ENUM: return (double)*(const int *)p;  // the fk_*_kind enums
    case FK_CF_LAYERS:  // heads: 0 means n_head
        if (l < 0 || l >= FK_MAX_LAYERS) return 0;
        if (f->offset == offsetof(fk_config, experts)) return (double)fk_config_experts(c, l);  // experts: 0 means n_expert
        return f->offset == offsetof(fk_config, heads) ? (double)fk_config_heads(c, l) : (double)((const int64_t *)p)[l];
    case FK_CF_LAYER_FLAGS: return l < 0 || l >= FK_MAX_LAYERS ? 0 : ((const uint8_t *)p)[l];
    }
    return 0;
}

const fk_config_field *fk_config_diff(const fk_config *a, const fk_config *b, int64_t *layer) {
    for (int i = 0; i < fk_config_n_fields; i++) {
        const fk_config_field *f = &fk_config_fields[i];
        if (!(f->flags & FK_CF_COMPARE) || ((f->flags & FK_CF_IF_LEARNED) && a->pos != FK_POS_LEARNED) ||
            ((f->flags & FK_CF_IF_ROPE) && a->pos != FK_POS_ROPE))
            continue;
        bool per_layer = f->type == FK_CF_LAYERS || f->type == FK_CF_LAYER_FLAGS;
        for (int64_t l = per_layer ? 0 : -1; l < (per_layer ? a->n_layer : 0); l++)
            if (fk_config_field_value(a, f, l) != fk_config_field_value(b, f, l)) { *layer = l; return f; }
        // LongRoPE's lists, under their count's row (the table has no list type)
        if (f->offset == offsetof(fk_config, rope_n_factors) && a->rope_n_factors > 0 && a->rope_n_factors <= FK_MAX_ROPE_FACTORS &&
            (memcmp(a->rope_short, b->rope_short, (size_t)a->rope_n_factors * sizeof(float)) != 0 ||
             memcmp(a->rope_long, b->rope_long, (size_t)a->rope_n_factors * sizeof(float)) != 0)) {
            *layer = -1;
            return f;
        }
    }
    return NULL;
}

// a * b into *out; false when it overflows int64 (or an operand is negative).
static bool mul_ok(int64_t a, int64_t b, int64_t *out) { return a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, out); }
static bool add_ok(int64_t a, int64_t b, int64_t *out) { return !__builtin_add_overflow(a, b, out); }

// A size field within lo..hi; names the field and the file keys it comes from.
static fk_status check_range(const char *name, const char *keys, int64_t v, int64_t lo, int64_t hi) {
    if (v >= lo && v <= hi) return FK_OK;
    return fk_error(FK_ERR_ARG, "config: %s is %lld, expected %lld..%lld (%s)", name, (long long)v, (long long)lo, (long long)hi, keys);
}

// Floats of one matrix or vector as the parameter table lays it out (rounded up to 16).
static bool table_floats(int64_t d0, int64_t d1, int64_t *acc) {
    int64_t n;
    return mul_ok(d0, d1, &n) && add_ok(n, 15, &n) && add_ok(*acc, n & ~(int64_t)15, acc);
}

fk_status fk_config_weight_floats(const fk_config *c, int64_t *floats) {
    int64_t C = c->d_model, hd = c->head_dim, t = 0;
    bool ok = table_floats(c->vocab_size, C, &t) && (c->tied || table_floats(c->vocab_size, C, &t)) &&
              (!c->bias_lm_head || table_floats(c->vocab_size, 1, &t)) &&
              (c->pos != FK_POS_LEARNED || table_floats(c->max_seq, C, &t)) && table_floats(2, C, &t);
    for (int64_t l = 0; ok && l < c->n_layer; l++) {
        int64_t q = fk_config_heads(c, l), qkv, up = fk_config_gated(c) ? 2 * c->ffn[l] : c->ffn[l];
        ok = add_ok(q, 2 * c->n_kv_head, &qkv) && mul_ok(qkv, hd, &qkv) && table_floats(qkv, C, &t) && table_floats(qkv, 1, &t) &&
             table_floats(C, q * hd, &t) && table_floats(up, C, &t) && table_floats(up, 1, &t) && table_floats(C, c->ffn[l], &t) &&
             table_floats(6, C, &t) &&
             (c->qk_norm_whole || c->qk_norm_ln ? table_floats(1, q * hd, &t) && table_floats(1, c->n_kv_head * hd, &t)
                                                : table_floats(2, hd, &t));
        int64_t E = fk_config_experts(c, l), F = c->expert_ffn, eup = fk_config_gated(c) ? 2 * F : F;
        for (int64_t e = 0; ok && e < E; e++) ok = table_floats(eup, C, &t) && table_floats(C, F, &t);
        ok = ok && (E == 0 || (table_floats(E, C, &t) && table_floats(1, C, &t)));
    }
    *floats = t;
    if (!ok) return fk_error(FK_ERR_ARG, "config: the weights' size overflows");
    return FK_OK;
}

// RoPE scaling dynamic, yarn, longrope (rope_ext): alone, with its own fields only, in range.
static fk_status check_rope_ext(const fk_config *c) {
    static const char *const names[] = {"none", "dynamic", "yarn", "longrope"};
    int k = c->rope_ext;
    if (k < FK_ROPE_EXT_NONE || k > FK_ROPE_EXT_LONGROPE) return fk_error(FK_ERR_ARG, "config: unknown RoPE scaling kind rope_ext %d", k);
    bool yarn = k == FK_ROPE_EXT_YARN, lr = k == FK_ROPE_EXT_LONGROPE;
    if (k == FK_ROPE_EXT_NONE) {
        if (c->rope_ext_factor != 0 || c->rope_ext_ctx != 0 || c->rope_attn_factor != 0 || c->rope_beta_fast != 0 || c->rope_beta_slow != 0 ||
            c->rope_yarn_no_trunc || c->rope_n_factors != 0)
            return fk_error(FK_ERR_ARG, "config: dynamic/yarn/longrope RoPE parameters set without their rope_type (rope_ext none)");
        return FK_OK;
    }
    const char *name = names[k];
    if (c->pos != FK_POS_ROPE) return fk_error(FK_ERR_ARG, "config: rope_type %s without RoPE", name);
    if (c->rope_orig_ctx != 0 || (c->rope_scale != 0 && c->rope_scale != 1))
        return fk_error(FK_ERR_ARG, "config: rope_type %s with linear or llama3 scaling (rope_scale %g, rope_orig_ctx %lld): one type at a time", name,
                        (double)c->rope_scale, (long long)c->rope_orig_ctx);
    if (!lr && !(c->rope_ext_factor >= 1 && c->rope_ext_factor < 1e6))
        return fk_error(FK_ERR_ARG, "config: rope_type %s needs a factor in 1..1e6 (config.json rope_scaling.factor, got %g)", name,
                        (double)c->rope_ext_factor);
    if (lr && c->rope_ext_factor != 0) return fk_error(FK_ERR_ARG, "config: rope_type longrope keeps its factor in rope_attn_factor (rope_ext_factor %g)",
                                                     (double)c->rope_ext_factor);
    FK_TRY(check_range("rope_ext_ctx", lr || yarn ? "config.json rope_scaling.original_max_position_embeddings, GGUF rope.scaling.original_context_length"
                                                  : "config.json max_position_embeddings of a dynamic RoPE model", c->rope_ext_ctx, 1, LIM_SEQ));
    if ((yarn || lr) && !(c->rope_attn_factor > 0 && c->rope_attn_factor < 1e6))
        return fk_error(FK_ERR_ARG, "config: rope_type %s needs an attention_factor in (0, 1e6) (got %g)", name, (double)c->rope_attn_factor);
    if (!yarn && !lr && c->rope_attn_factor != 0) return fk_error(FK_ERR_ARG, "config: rope_type dynamic has no attention_factor");
    if (yarn && (!(c->rope_beta_fast > 0 && c->rope_beta_fast < 1e6) || !(c->rope_beta_slow > 0 && c->rope_beta_slow < 1e6)))
        return fk_error(FK_ERR_ARG, "config: rope_type yarn needs beta_fast and beta_slow in (0, 1e6) (got %g, %g)", (double)c->rope_beta_fast,
                        (double)c->rope_beta_slow);
    if (!yarn && (c->rope_beta_fast != 0 || c->rope_beta_slow != 0 || c->rope_yarn_no_trunc))
        return fk_error(FK_ERR_ARG, "config: beta_fast/beta_slow/truncate set with rope_type %s (they are yarn's)", name);
    int64_t half = fk_config_rotary_dim(c) / 2;
    if (k == FK_ROPE_EXT_DYNAMIC && half < 2) return fk_error(FK_ERR_ARG, "config: rope_type dynamic needs at least 4 rotary dims");
    if (lr != (c->rope_n_factors != 0) || (lr && c->rope_n_factors != half) || c->rope_n_factors > FK_MAX_ROPE_FACTORS)
        return fk_error(FK_ERR_ARG, "config: rope_type %s has %d short/long factors, expected %lld (rotary dims / 2)", name, (int)c->rope_n_factors,
                        lr ? (long long)half : 0LL);
    for (int32_t d = 0; d < c->rope_n_factors; d++)
        if (!(c->rope_short[d] > 0 && c->rope_short[d] < 1e30) || !(c->rope_long[d] > 0 && c->rope_long[d] < 1e30))
            return fk_error(FK_ERR_ARG, "config: longrope factor %d is %g (short) / %g (long), expected finite values > 0", (int)d,
                            (double)c->rope_short[d], (double)c->rope_long[d]);
    return FK_OK;
}

// Mixture of experts: sizes in range (before the weights are counted), MoE layers only with experts,
// and the combinations the engine computes.
static fk_status check_moe(const fk_config *c) {
    int64_t n_moe = 0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        if (c->moe[l] > 1) return fk_error(FK_ERR_ARG, "config: moe[%lld] is %d, expected 0 or 1", (long long)l, c->moe[l]);
        if (!c->moe[l] && c->experts[l] != 0)
            return fk_error(FK_ERR_ARG, "config: dense layer %lld has experts[%lld] = %lld", (long long)l, (long long)l, (long long)c->experts[l]);
        n_moe += c->moe[l];
    }
    if (c->n_expert == 0) {
        if (n_moe > 0 || c->n_expert_used != 0 || c->expert_ffn != 0 || c->expert_norm || c->shared_gate)
            return fk_error(FK_ERR_ARG, "config: MoE fields set without experts (n_expert 0)");
        return FK_OK;
    }
    if (n_moe == 0) return fk_error(FK_ERR_ARG, "config: %lld experts but no MoE layer", (long long)c->n_expert);
    FK_TRY(check_range("expert_ffn", "config.json moe_intermediate_size/intermediate_size, GGUF expert_feed_forward_length", c->expert_ffn, 1,
                       LIM_DIM));
    for (int64_t l = 0; l < c->n_layer; l++) {
        if (!c->moe[l]) continue;
        int64_t E = fk_config_experts(c, l);
        if (c->experts[l] < 0 || E > c->n_expert || c->n_expert_used < 1 || c->n_expert_used > E)
            return fk_error(FK_ERR_ARG, "config: MoE layer %lld has %lld experts and routes to %lld, expected 1 <= num_experts_per_tok <= "
                            "experts <= %lld (config.json num_experts_per_tok, GGUF expert_used_count)", (long long)l, (long long)E,
                            (long long)c->n_expert_used, (long long)c->n_expert);
        if (c->shared_gate && c->ffn[l] == 0)
            return fk_error(FK_ERR_ARG, "config: MoE layer %lld has a shared-expert gate but no shared expert (FFN width 0)", (long long)l);
    }
    if (c->bias_mlp) return fk_error(FK_ERR_ARG, "config: MoE with MLP biases is not implemented (no supported family has them)");
    if (c->residual != FK_RESID_SEQUENTIAL || c->post_norms)
        return fk_error(FK_ERR_ARG, "config: MoE with a parallel residual or post-norms is not implemented");
    return FK_OK;
}

// Sizes: the field table's, heads and rotary dims, MoE, each layer's FFN width and heads, and the
// weights and KV cache they make (bounded, so no size product overflows).
static fk_status check_sizes(const fk_config *c) {
    // the sizes of the field table, in its order
    for (int i = 0; i < fk_config_n_fields; i++) {
        const fk_config_field *f = &fk_config_fields[i];
        if (f->flags & FK_CF_SIZE)
            FK_TRY(check_range(f->name, f->keys, *(const int64_t *)((const char *)c + f->offset), f->lo, f->hi ? f->hi : c->n_head));
    }
    if (c->n_head % c->n_kv_head != 0)
        return fk_error(FK_ERR_ARG, "config: n_head %lld must be a positive multiple of n_kv_head %lld",
                        (long long)c->n_head, (long long)c->n_kv_head);
    if (c->pos == FK_POS_ROPE && c->head_dim % 2 != 0)
        return fk_error(FK_ERR_ARG, "config: RoPE needs an even head_dim (got %lld)", (long long)c->head_dim);
    if (c->rotary_dim < 0 || c->rotary_dim > c->head_dim || c->rotary_dim % 2 != 0)
        return fk_error(FK_ERR_ARG, "config: rotary_dim is %lld, expected an even number of dims 0..head_dim %lld (config.json "
                        "partial_rotary_factor/rotary_pct times head_dim, GGUF rope.dimension_count)", (long long)c->rotary_dim, (long long)c->head_dim);
    if (c->pos != FK_POS_ROPE && c->rotary_dim != 0)
        return fk_error(FK_ERR_ARG, "config: rotary_dim is %lld without RoPE", (long long)c->rotary_dim);
    FK_TRY(check_moe(c));
    for (int64_t l = 0; l < c->n_layer; l++) {
        if ((c->ffn[l] < 1 && !(c->ffn[l] == 0 && c->moe[l])) || c->ffn[l] > LIM_DIM)
            return fk_error(FK_ERR_ARG, "config: layer %lld has FFN width %lld, expected 1..%lld (config.json intermediate_size/n_inner, "
                            "GGUF feed_forward_length)", (long long)l, (long long)c->ffn[l], (long long)LIM_DIM);
        int64_t h = fk_config_heads(c, l);
        if (h < c->n_kv_head || h > c->n_head || h % c->n_kv_head != 0)
            return fk_error(FK_ERR_ARG, "config: layer %lld has %lld query heads, expected a multiple of n_kv_head %lld up to n_head %lld", (long long)l,
                            (long long)h, (long long)c->n_kv_head, (long long)c->n_head);
    }
    // With the limits above no product below overflows; still checked, at one place.
    int64_t total, kv;
    FK_TRY(fk_config_weight_floats(c, &total));
    if (total > LIM_FLOATS) return fk_error(FK_ERR_ARG, "config: %.4g weights, expected at most 2^40", (double)total);
    if (!mul_ok(c->n_layer, c->max_seq, &kv) || !mul_ok(kv, c->n_kv_head * c->head_dim, &kv) || kv > LIM_FLOATS)
        return fk_error(FK_ERR_ARG, "config: max_seq %lld makes a KV cache of %.4g floats, expected at most 2^40", (long long)c->max_seq,
                        (double)c->n_layer * (double)c->max_seq * (double)(c->n_kv_head * c->head_dim));
    return FK_OK;
}

// The switches of a block: norms, MLP and residual kinds, QK-norm and post-norm combinations, the
// Gemma switches, sliding windows, ALiBi and clip_qkv: the combinations the engine computes.
static fk_status check_switches(const fk_config *c) {
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps)) return fk_error(FK_ERR_ARG, "config: norm epsilon is %g, expected a finite value > 0", (double)c->norm_eps);
    if (c->pos == FK_POS_ROPE && (!(c->rope_theta > 0) || !isfinite(c->rope_theta)))
        return fk_error(FK_ERR_ARG, "config: rope_theta is %g, expected a finite value > 0", (double)c->rope_theta);
    if (c->norm == FK_NORM_RMSNORM && c->bias_norm) return fk_error(FK_ERR_ARG, "config: RMSNorm has no bias");
    if (c->mlp != FK_MLP_GELU && c->mlp != FK_MLP_SWIGLU && c->mlp != FK_MLP_GEGLU)
        return fk_error(FK_ERR_ARG, "config: unknown MLP kind %d", (int)c->mlp);
    if (c->gelu_exact && c->mlp != FK_MLP_GELU) return fk_error(FK_ERR_ARG, "config: gelu_exact (exact GELU) needs the GELU MLP");
    if (c->residual != FK_RESID_SEQUENTIAL && c->residual != FK_RESID_PARALLEL && c->residual != FK_RESID_PARALLEL_SHARED)
        return fk_error(FK_ERR_ARG, "config: unknown residual placement %d (0 sequential, 1 parallel, 2 parallel with one norm)",
                        (int)c->residual);
    if (c->qk_norm_whole && (!c->qk_norm || !fk_config_uniform_heads(c)))
        return fk_error(FK_ERR_ARG, "config: QK-norm over whole projections needs qk_norm and one head count for every layer");
    if (c->no_pre_norms && (!c->post_norms || c->residual != FK_RESID_SEQUENTIAL))
        return fk_error(FK_ERR_ARG, "config: a model without pre-norms needs post-norms and the sequential residual");
    if (c->residual != FK_RESID_SEQUENTIAL && c->post_norms)
        return fk_error(FK_ERR_ARG, "config: parallel attention and MLP (residual %d) with post-norms is not a model fusekit computes",
                        (int)c->residual);
    if (c->qk_norm_ln && (!c->qk_norm || c->qk_norm_whole))
        return fk_error(FK_ERR_ARG, "config: QK-norm as a LayerNorm per head (qk_norm_ln) needs qk_norm, not over whole projections");
    if (c->norm != FK_NORM_RMSNORM && (c->post_norms || (c->qk_norm && !c->qk_norm_ln) || c->norm_offset != 0))
        return fk_error(FK_ERR_ARG, "config: post-norms, QK-norm (but StableLM's LayerNorm per head) and a norm offset need RMSNorm");
    // the Gemma switches: finite, not negative
    for (int i = 0; i < fk_config_n_fields; i++) {
        const fk_config_field *f = &fk_config_fields[i];
        double v = fk_config_field_value(c, f, -1);
        if ((f->flags & FK_CF_SWITCH) && (!(v >= 0) || !isfinite(v)))
            return fk_error(FK_ERR_ARG, "config: %s is %g, expected a finite value >= 0", f->name, v);
    }
    FK_TRY(check_range("sliding_window", "config.json sliding_window, GGUF attention.sliding_window", c->sliding_window, 0, LIM_SEQ));
    for (int64_t l = 0; l < c->n_layer; l++)
        if (c->sliding[l] > 1) return fk_error(FK_ERR_ARG, "config: sliding[%lld] is %d, expected 0 or 1", (long long)l, c->sliding[l]);
    // ALiBi and clip_qkv (MPT): the combinations the engine computes
    if (c->alibi_bias_max > 0 && c->pos != FK_POS_NONE)
        return fk_error(FK_ERR_ARG, "config: ALiBi (alibi_bias_max %g) needs position kind none, not %s", (double)c->alibi_bias_max,
                        c->pos == FK_POS_ROPE ? "rope" : "learned");
    if (c->alibi_bias_max > 0 && !fk_config_uniform_heads(c))
        return fk_error(FK_ERR_ARG, "config: ALiBi with per-layer query head counts (folded heads) is not implemented: a head's slope "
                        "depends on its index among n_head");
    if (c->clip_qkv > 0 && (c->pos == FK_POS_ROPE || c->qk_norm))
        return fk_error(FK_ERR_ARG, "config: clip_qkv %g with %s is not implemented (MPT clamps q, k and v without either)", (double)c->clip_qkv,
                        c->qk_norm ? "QK-norm" : "RoPE");
    return FK_OK;
}

// Llama 3 RoPE scaling: its factor, frequency factors and original context, or none of them.
static fk_status check_llama3(const fk_config *c) {
    if (c->rope_orig_ctx != 0) {
        FK_TRY(check_range("rope_orig_ctx", "config.json rope_scaling.original_max_position_embeddings", c->rope_orig_ctx, 1, LIM_SEQ));
        if (c->pos != FK_POS_ROPE) return fk_error(FK_ERR_ARG, "config: Llama 3 RoPE scaling without RoPE");
        if (!(c->rope_scale > 0))
            return fk_error(FK_ERR_ARG, "config: Llama 3 RoPE scaling needs a factor > 0 (rope_scale is %g)", (double)c->rope_scale);
        if (!(c->rope_low_freq > 0) || !(c->rope_high_freq > c->rope_low_freq) || !isfinite(c->rope_high_freq))
            return fk_error(FK_ERR_ARG, "config: Llama 3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor (got %g, %g)",
                            (double)c->rope_low_freq, (double)c->rope_high_freq);
    } else if (c->rope_low_freq != 0 || c->rope_high_freq != 0) {
        return fk_error(FK_ERR_ARG, "config: low/high_freq_factor set without Llama 3 RoPE scaling (rope_orig_ctx 0)");
    }
    return FK_OK;
}

fk_status fk_config_validate(const fk_config *c) {
    FK_TRY(check_sizes(c));
    FK_TRY(check_switches(c));
    FK_TRY(check_llama3(c));
    return check_rope_ext(c);
}

int64_t fk_config_heads(const fk_config *c, int64_t l) { return c->heads[l] > 0 ? c->heads[l] : c->n_head; }

int64_t fk_config_experts(const fk_config *c, int64_t l) { return !c->moe[l] ? 0 : c->experts[l] > 0 ? c->experts[l] : c->n_expert; }
int64_t fk_config_rotary_dim(const fk_config *c) { return c->rotary_dim > 0 ? c->rotary_dim : c->head_dim; }

bool fk_config_uniform_heads(const fk_config *c) {
    for (int64_t l = 0; l < c->n_layer; l++)
        if (fk_config_heads(c, l) != c->n_head) return false;
    return true;
}

void fk_config_describe(const fk_config *c, char *buf, size_t n) {
    char ffn[64];
    if (fk_config_uniform_ffn(c)) snprintf(ffn, sizeof ffn, "%lld", (long long)c->ffn[0]);
    else snprintf(ffn, sizeof ffn, "per-layer");
    snprintf(buf, n, "vocab=%lld d_model=%lld n_layer=%lld n_head=%lld n_kv_head=%lld head_dim=%lld ffn=%s ctx=%lld "
             "norm=%s pos=%s mlp=%s bias(qkv=%d out=%d mlp=%d norm=%d) tied=%d",
             (long long)c->vocab_size, (long long)c->d_model, (long long)c->n_layer, (long long)c->n_head,
             (long long)c->n_kv_head, (long long)c->head_dim, ffn, (long long)c->max_seq,
             c->norm == FK_NORM_LAYERNORM ? "layernorm" : "rmsnorm",
             c->pos == FK_POS_LEARNED ? "learned" : c->pos == FK_POS_ROPE ? "rope" : "none",
             c->mlp == FK_MLP_GELU ? "gelu" : c->mlp == FK_MLP_GEGLU ? "geglu" : "swiglu", c->bias_qkv, c->bias_out,
             c->bias_mlp, c->bias_norm, c->tied);
    // the Gemma switches, only those that are on
    size_t k = strlen(buf);
#define ADD(...) do { if (k < n) { snprintf(buf + k, n - k, __VA_ARGS__); k += strlen(buf + k); } } while (0)
    int64_t ns = 0;
    for (int64_t l = 0; l < c->n_layer; l++) ns += c->sliding[l] != 0;
    for (int i = 0; i < fk_config_n_fields; i++) {
        const fk_config_field *f = &fk_config_fields[i];
        double v = fk_config_field_value(c, f, -1);
        if (f->offset == offsetof(fk_config, sliding_window) && v > 0 && ns > 0)  // in table order, before rope_theta_local
            ADD(" window=%lld on %lld/%lld layers", (long long)c->sliding_window, (long long)ns, (long long)c->n_layer);
        if (!(f->flags & FK_CF_DESCRIBE) || v == 0) continue;  // switches listed only when on
        if (f->type == FK_CF_BOOL) ADD(" %s=1", f->name);
        else ADD(" %s=%g", f->name, v);
    }
    if (c->pos == FK_POS_ROPE && fk_config_rotary_dim(c) != c->head_dim) ADD(" rotary_dim=%lld", (long long)c->rotary_dim);
    if (c->rope_orig_ctx > 0)
        ADD(" rope_llama3(factor=%g low=%g high=%g ctx=%lld)", (double)c->rope_scale, (double)c->rope_low_freq, (double)c->rope_high_freq,
            (long long)c->rope_orig_ctx);
    else if (c->rope_scale > 0 && c->rope_scale != 1) ADD(" rope_scale=%g", (double)c->rope_scale);
    if (c->n_expert > 0) {
        int64_t nm = 0;
        for (int64_t l = 0; l < c->n_layer; l++) nm += c->moe[l];
        ADD(" moe(experts=%lld top%lld ffn=%lld%s%s on %lld/%lld layers)", (long long)c->n_expert, (long long)c->n_expert_used,
            (long long)c->expert_ffn, c->expert_norm ? " renormalised" : "", c->shared_gate ? " shared-gate" : "", (long long)nm,
            (long long)c->n_layer);
    }
    if (c->rope_ext == FK_ROPE_EXT_DYNAMIC) ADD(" rope_dynamic(factor=%g)", (double)c->rope_ext_factor);
    if (c->rope_ext == FK_ROPE_EXT_YARN)
        ADD(" rope_yarn(factor=%g ctx=%lld attn=%g beta=%g/%g%s)", (double)c->rope_ext_factor, (long long)c->rope_ext_ctx, (double)c->rope_attn_factor,
            (double)c->rope_beta_fast, (double)c->rope_beta_slow, c->rope_yarn_no_trunc ? " untruncated" : "");
    if (c->rope_ext == FK_ROPE_EXT_LONGROPE)
        ADD(" rope_longrope(ctx=%lld attn=%g factors=%d)", (long long)c->rope_ext_ctx, (double)c->rope_attn_factor, (int)c->rope_n_factors);
#undef ADD
}
