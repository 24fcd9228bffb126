// fk_model: the parameter table over one arena, forward and backward of the whole
// decoder, and incremental inference with a KV cache.
#include "fusekit/model.h"
#include "nn/ops.h"
#include "nn/gemm.h"
#include "nn/attn_amx.h"
#include "nn/moe.h"
#include "base/par.h"
#include "fusekit/quants.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ================================================================== parameter table

// q/k/v rows of layer l; with l = -1 the widest layer's (buffer sizes)
static int64_t qkv_dim(const fk_config *c, int64_t l) { return ((l < 0 ? c->n_head : fk_config_heads(c, l)) + 2 * c->n_kv_head) * c->head_dim; }
static int64_t up_dim(const fk_config *c, int64_t l) { return fk_config_gated(c) ? 2 * c->ffn[l] : c->ffn[l]; }
static int64_t max_ffn(const fk_config *c) {
    int64_t m = 0;
    for (int64_t l = 0; l < c->n_layer; l++) m = c->ffn[l] > m ? c->ffn[l] : m;
    return m;
}

// Row stride of the saved up-projection outputs: the widest layer's.
static int64_t up_stride(const fk_config *c) { return fk_config_gated(c) ? 2 * max_ffn(c) : max_ffn(c); }
// Query plus key heads of the widest layer (QK-norm buffers).
static int64_t qk_heads(const fk_config *c) { return c->n_head + c->n_kv_head; }
// The groups QK-norm normalises in a layer of H query heads: each head, or (OLMo 2) the whole
// query projection and the whole key projection; StableLM 2 12B: each head by a LayerNorm of its own.
static fk_qk_groups qk_groups(const fk_config *c, int64_t H) {
    int64_t hd = c->head_dim, KVH = c->n_kv_head;
    if (c->qk_norm_whole) return (fk_qk_groups){.nq = 1, .dq = H * hd, .nk = 1, .dk = KVH * hd};
    return (fk_qk_groups){.nq = H, .dq = hd, .nk = KVH, .dk = hd, .ln = c->qk_norm_ln, .own = c->qk_norm_ln};
}
// Attention window of layer l (0: full causal attention).
static int64_t layer_window(const fk_config *c, int64_t l) { return c->sliding[l] ? c->sliding_window : 0; }
// ALiBi slopes of the n_head heads into buf (FK_LIM_HEADS floats), or NULL without ALiBi.
static const float *alibi_slopes(const fk_config *c, float *buf) {
    if (!(c->alibi_bias_max > 0)) return NULL;
    fk_alibi_slopes(buf, c->n_head, c->alibi_bias_max);
    return buf;
}
// Attention score scale: attn_scale, or 1/sqrt(head_dim).
static float att_scale(const fk_config *c) { return c->attn_scale > 0 ? c->attn_scale : (float)(1 / sqrt((double)c->head_dim)); }

// Appends one tensor to the table (when table != NULL) and returns its offset.
// Offsets are rounded up to 16 floats so every tensor starts 64-byte aligned.
static int64_t add_param(fk_model *m, int *n, int64_t *cursor, const char *name, fk_param_kind kind, int layer,
                         int64_t d0, int64_t d1) {
    int64_t numel = d1 > 0 ? d0 * d1 : d0, off = *cursor;
    if (m->params) {
        fk_param *p = &m->params[*n];
        snprintf(p->name, sizeof p->name, "%s", name);
        p->kind = kind;
        p->layer = layer;
        p->expert = -1;
        p->ndim = d1 > 0 ? 2 : 1;
        p->shape[0] = d0;
        p->shape[1] = d1 > 0 ? d1 : 1;
        p->numel = numel;
        p->offset = off;
        p->decay = p->ndim == 2;
    }
    (*n)++;
    *cursor = off + ((numel + 15) & ~(int64_t)15);
    return off;
}

// An MoE layer's router, shared-expert gate and experts (every up, then every down; see
// fk_layer_offsets); -1 offsets on a dense layer.
static void build_experts(fk_model *m, int *n, int64_t *cur, int l) {
    const fk_config *c = &m->cfg;
    fk_layer_offsets *o = &m->layer[l];
    int64_t E = fk_config_experts(c, l), C = c->d_model, F = c->expert_ffn, UP = fk_config_gated(c) ? 2 * F : F;
    o->router_w = o->shared_gate_w = o->exp_up_w = o->exp_down_w = -1;
    o->exp_up_stride = (UP * C + 15) & ~(int64_t)15;
    o->exp_down_stride = (C * F + 15) & ~(int64_t)15;
    if (E == 0) return;
    char nm[64];
    snprintf(nm, sizeof nm, "layers.%d.mlp.router.weight", l);
    o->router_w = add_param(m, n, cur, nm, FK_P_ROUTER_W, l, E, C);
    if (c->shared_gate) {
        snprintf(nm, sizeof nm, "layers.%d.mlp.shared_gate.weight", l);
        o->shared_gate_w = add_param(m, n, cur, nm, FK_P_SHARED_GATE_W, l, 1, C);
    }
    for (int pass = 0; pass < 2; pass++)
        for (int64_t e = 0; e < E; e++) {
            snprintf(nm, sizeof nm, "layers.%d.mlp.experts.%lld.%s.weight", l, (long long)e, pass ? "down" : "up");
            int idx = *n;
            int64_t off = pass ? add_param(m, n, cur, nm, FK_P_EXP_DOWN_W, l, C, F) : add_param(m, n, cur, nm, FK_P_EXP_UP_W, l, UP, C);
            if (m->params) m->params[idx].expert = (int)e;
            if (e == 0) *(pass ? &o->exp_down_w : &o->exp_up_w) = off;
        }
}

// Declares every tensor, in a fixed order. Called twice: to count, then to fill.
static void build_table(fk_model *m) {
    const fk_config *c = &m->cfg;
    int n = 0;
    int64_t cur = 0, C = c->d_model;
    char nm[64];
    bool ln = c->norm == FK_NORM_LAYERNORM;
    m->tok_emb = add_param(m, &n, &cur, "tok_emb.weight", FK_P_TOK_EMB, -1, c->vocab_size, C);
    m->pos_emb = c->pos == FK_POS_LEARNED ? add_param(m, &n, &cur, "pos_emb.weight", FK_P_POS_EMB, -1, c->max_seq, C) : -1;
    for (int l = 0; l < (int)c->n_layer; l++) {
        fk_layer_offsets *o = &m->layer[l];
        o->attn_post_w = o->ffn_post_w = o->q_norm_w = o->k_norm_w = -1;
        int64_t D = fk_config_heads(c, l) * c->head_dim;
#define P(field, suffix, kind, d0, d1) \
        (snprintf(nm, sizeof nm, "layers.%d.%s", l, suffix), o->field = add_param(m, &n, &cur, nm, kind, l, d0, d1))
        if (!c->no_pre_norms) P(ln1_w, "ln1.weight", FK_P_LN1_W, C, 0); else o->ln1_w = -1;  // OLMo 2: none
        if (c->bias_norm && o->ln1_w >= 0) P(ln1_b, "ln1.bias", FK_P_LN1_B, C, 0); else o->ln1_b = -1;
        P(qkv_w, "attn.qkv.weight", FK_P_QKV_W, qkv_dim(c, l), C);
        if (c->bias_qkv) P(qkv_b, "attn.qkv.bias", FK_P_QKV_B, qkv_dim(c, l), 0); else o->qkv_b = -1;
        if (c->qk_norm) {
            bool heads = c->qk_norm_whole || c->qk_norm_ln;  // weights over every head (whole, or one set per head)
            P(q_norm_w, "attn.q_norm.weight", FK_P_Q_NORM_W, heads ? D : c->head_dim, 0);
            P(k_norm_w, "attn.k_norm.weight", FK_P_K_NORM_W, heads ? c->n_kv_head * c->head_dim : c->head_dim, 0);
        }
        P(o_w, "attn.o.weight", FK_P_O_W, C, D);
        if (c->bias_out) P(o_b, "attn.o.bias", FK_P_O_B, C, 0); else o->o_b = -1;
        if (c->post_norms) P(attn_post_w, "attn_post.weight", FK_P_ATTN_POST_W, C, 0);
        if (c->residual != FK_RESID_PARALLEL_SHARED && !c->no_pre_norms) P(ln2_w, "ln2.weight", FK_P_LN2_W, C, 0);
        else o->ln2_w = -1;  // shared: ln1; OLMo 2: none
        if (c->bias_norm && o->ln2_w >= 0) P(ln2_b, "ln2.bias", FK_P_LN2_B, C, 0); else o->ln2_b = -1;
        o->up_w = o->up_b = o->down_w = o->down_b = -1;
        if (c->ffn[l] > 0) {  // an MoE layer may have no dense FFN (Mixtral)
            P(up_w, "mlp.up.weight", FK_P_UP_W, up_dim(c, l), C);
            if (c->bias_mlp) P(up_b, "mlp.up.bias", FK_P_UP_B, up_dim(c, l), 0);
            P(down_w, "mlp.down.weight", FK_P_DOWN_W, C, c->ffn[l]);
            if (c->bias_mlp) P(down_b, "mlp.down.bias", FK_P_DOWN_B, C, 0);
        }
        build_experts(m, &n, &cur, l);
        if (c->post_norms) P(ffn_post_w, "ffn_post.weight", FK_P_FFN_POST_W, C, 0);
#undef P
    }
    m->lnf_w = add_param(m, &n, &cur, "lnf.weight", FK_P_LNF_W, -1, C, 0);
    m->lnf_b = c->bias_norm && ln ? add_param(m, &n, &cur, "lnf.bias", FK_P_LNF_B, -1, C, 0) : -1;
    m->lm_head = c->tied ? m->tok_emb : add_param(m, &n, &cur, "lm_head.weight", FK_P_LM_HEAD, -1, c->vocab_size, C);
    m->lm_head_b = c->bias_lm_head ? add_param(m, &n, &cur, "lm_head.bias", FK_P_LM_HEAD_B, -1, c->vocab_size, 0) : -1;
    m->n_params = n;
    m->n_floats = cur;
}

// RoPE tables (positions, rotary_dim/2) of cos and sin: the global one (rope_theta, positions
// divided by rope_scale, Llama 3 scaling, or cfg.rope_ext's dynamic/yarn/longrope) and, when
// sliding layers differ, the local one (rope_theta_local, unscaled). They hold the positions used
// so far (rope_ensure grows them geometrically up to max_seq), so a model declaring a long context
// costs only what it runs; dynamic and longrope tables depend on the length a forward reaches and
// are refilled when its regime (rope_regime) changes, except that a KV-cache step under dynamic NTK
// past the original context fills only its own positions (each such length has its own base).
//
// Inverse frequency d of a table as Hugging Face computes it (float32): theta^-(2d/rotary_dim), then
// linear scaling (divided by scale) or, with llama3, Llama 3's scaling (transformers'
// rope_type "llama3": long wavelengths divided by the factor, short ones kept, a blend between).
static float rope_inv_freq(const fk_config *cfg, float theta, float scale, bool llama3, int64_t d) {
    float inv = 1.0f / powf(theta, (float)(2 * d) / (float)fk_config_rotary_dim(cfg));
    if (llama3) {
        // the wavelength limits and hi - lo in double (Python floats), the rest in float32
        float factor = cfg->rope_scale, lo = cfg->rope_low_freq, hi = cfg->rope_high_freq, old = (float)cfg->rope_orig_ctx;
        float lo_wave = (float)((double)old / lo), hi_wave = (float)((double)old / hi);
        float wavelen = (float)(2 * M_PI) / inv;
        float inv_l = wavelen > lo_wave ? inv / factor : inv;
        if (!(wavelen < hi_wave) && !(wavelen > lo_wave)) {
            float s = (old / wavelen - lo) / (float)((double)hi - lo);
            inv_l = (1 - s) * inv_l / factor + s * inv_l;
        }
        return inv_l;
    }
    return scale != 1 ? inv / scale : inv;
}

// The regime of cfg.rope_ext's tables for a forward reaching length n: dynamic, the length
// its base is computed for (rope_ext_ctx up to there); longrope, 1 for the long factors; else 0.
static int64_t rope_regime(const fk_config *cfg, int64_t n) {
    if (cfg->rope_ext == FK_ROPE_EXT_DYNAMIC) return n > cfg->rope_ext_ctx ? n : cfg->rope_ext_ctx;
    if (cfg->rope_ext == FK_ROPE_EXT_LONGROPE) return n > cfg->rope_ext_ctx;
    return 0;
}

// YaRN's correction dim of num_rot rotations (transformers' find_correction_dim, in double).
static double yarn_dim(double num_rot, double rd, double base, double ctx) { return rd * log(ctx / (num_rot * 2 * M_PI)) / (2 * log(base)); }

// Inverse frequency d of cfg.rope_ext at regime g, in transformers' float32 steps
// (_compute_dynamic_ntk_parameters, _compute_yarn_parameters, _compute_longrope_parameters).
static float rope_ext_inv_freq(const fk_config *cfg, int64_t g, int64_t d) {
    int64_t rd = fk_config_rotary_dim(cfg);
    float e = (float)(2 * d) / (float)rd, theta = cfg->rope_theta, f = cfg->rope_ext_factor;
    switch (cfg->rope_ext) {
    case FK_ROPE_EXT_DYNAMIC: {
        if (g > cfg->rope_ext_ctx)  // base * ((factor * n / ctx) - (factor - 1)) ** (rd / (rd - 2)), a float32 tensor
            theta = theta * powf(f * (float)g / (float)cfg->rope_ext_ctx - (float)((double)f - 1), (float)((double)rd / (double)(rd - 2)));
        return 1.0f / powf(theta, e);
    }
    case FK_ROPE_EXT_YARN: {
        float pos = powf(theta, e), extrap = 1.0f / pos, interp = 1.0f / (f * pos);
        double lo = yarn_dim(cfg->rope_beta_fast, (double)rd, theta, (double)cfg->rope_ext_ctx);
        double hi = yarn_dim(cfg->rope_beta_slow, (double)rd, theta, (double)cfg->rope_ext_ctx);
        if (!cfg->rope_yarn_no_trunc) { lo = floor(lo); hi = ceil(hi); }
        lo = lo > 0 ? lo : 0;
        hi = hi < (double)(rd - 1) ? hi : (double)(rd - 1);
        if (lo == hi) hi += 0.001;  // transformers: "prevent singularity"
        float ramp = ((float)d - (float)lo) / (float)(hi - lo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float ext = 1 - ramp;
        return interp * (1 - ext) + extrap * ext;
    }
    case FK_ROPE_EXT_LONGROPE: return 1.0f / ((g ? cfg->rope_long[d] : cfg->rope_short[d]) * powf(theta, e));
    }
    return 1.0f / powf(theta, e);
}

// Positions t0..t1-1 of a table: angle t * inv_d in double, cos and sin times mul (float32).
static void rope_fill(float *cos_t, float *sin_t, const fk_config *cfg, const float *inv, float mul, int64_t t0, int64_t t1) {
    int64_t half = fk_config_rotary_dim(cfg) / 2;
    for (int64_t d = 0; d < half; d++)
        for (int64_t t = t0; t < t1; t++) {
            double a = (double)t * (double)inv[d];
            cos_t[t * half + d] = mul != 1 ? (float)cos(a) * mul : (float)cos(a);
            sin_t[t * half + d] = mul != 1 ? (float)sin(a) * mul : (float)sin(a);
        }
}

// Grows table *p (when there is one) to `want` positions.
static bool rope_grow(float **p, int64_t want, int64_t half) {
    if (!*p) return true;
    float *q = realloc(*p, (size_t)want * (size_t)half * sizeof(float));
    if (!q) return false;
    *p = q;
    return true;
}

// The tables hold positions from..n-1 (at least) for a forward (from 0) or a KV-cache step (from its
// first position) reaching length n.
static fk_status rope_ensure(fk_model *m, int64_t from, int64_t n) {
    const fk_config *cfg = &m->cfg;
    if (cfg->pos != FK_POS_ROPE) return FK_OK;
    if (n > cfg->max_seq) n = cfg->max_seq;
    int64_t g = rope_regime(cfg, n);
    if (g != m->rope_regime) { m->rope_len = 0; m->rope_regime = g; }  // another length regime: refill
    if (n <= m->rope_len) return FK_OK;
    int64_t half = fk_config_rotary_dim(cfg) / 2;
    if (n > m->rope_cap) {  // max_seq is at most 2^24 and head_dim 4096 (fk_config_validate)
        int64_t cap = m->rope_cap * 2 > n ? m->rope_cap * 2 : n;
        if (cap > cfg->max_seq) cap = cfg->max_seq;
        if (!rope_grow(&m->rope_cos, cap, half) || !rope_grow(&m->rope_sin, cap, half) || !rope_grow(&m->rope_cos_local, cap, half) ||
            !rope_grow(&m->rope_sin_local, cap, half))
            return fk_error(FK_ERR_NOMEM, "out of memory for the RoPE tables of %lld positions", (long long)cap);
        m->rope_cap = cap;
    }
    float inv[FK_LIM_HEAD_DIM / 2], mul = 1;
    bool scaled = cfg->rope_scale > 0 && cfg->rope_scale != 1, llama3 = cfg->rope_orig_ctx > 0;
    for (int64_t d = 0; d < half; d++)
        inv[d] = cfg->rope_ext ? rope_ext_inv_freq(cfg, g, d) : rope_inv_freq(cfg, cfg->rope_theta, scaled ? cfg->rope_scale : 1, llama3, d);
    if (cfg->rope_ext == FK_ROPE_EXT_YARN || cfg->rope_ext == FK_ROPE_EXT_LONGROPE) mul = cfg->rope_attn_factor;
    // dynamic past the original context: the base is this length's alone, so a step fills its own rows
    // (each row is computed on its own: the same values a full refill gives) and leaves no valid prefix
    bool own_rows = cfg->rope_ext == FK_ROPE_EXT_DYNAMIC && g > cfg->rope_ext_ctx && from > m->rope_len;
    int64_t t0 = own_rows ? from : m->rope_len;
    rope_fill(m->rope_cos, m->rope_sin, cfg, inv, mul, t0, n);
    if (m->rope_cos_local) {
        for (int64_t d = 0; d < half; d++) inv[d] = rope_inv_freq(cfg, cfg->rope_theta_local > 0 ? cfg->rope_theta_local : cfg->rope_theta, 1, false, d);
        rope_fill(m->rope_cos_local, m->rope_sin_local, cfg, inv, 1, t0, n);
    }
    m->rope_len = own_rows ? 0 : n;
    return FK_OK;
}

// The RoPE table of layer l.
static void layer_rope(const fk_model *m, int64_t l, const float **cs, const float **sn) {
    bool local = m->cfg.sliding[l] && m->rope_cos_local;
    *cs = local ? m->rope_cos_local : m->rope_cos;
    *sn = local ? m->rope_sin_local : m->rope_sin;
}

fk_status fk_model_rope_tables(fk_model *m, int64_t n, const float **cos, const float **sin, const float **cos_local,
                               const float **sin_local) {
    if (m->cfg.pos != FK_POS_ROPE) return fk_error(FK_ERR_ARG, "the model has no RoPE tables (its positions are not rotary)");
    if (n < 1) return fk_error(FK_ERR_ARG, "RoPE tables: length %lld", (long long)n);
    FK_TRY(rope_ensure(m, 0, n));
    *cos = m->rope_cos, *sin = m->rope_sin;
    *cos_local = m->rope_cos_local, *sin_local = m->rope_sin_local;
    return FK_OK;
}

fk_status fk_model_init(fk_model *m, const fk_config *cfg) { return fk_model_init_ex(m, cfg, 0); }

fk_status fk_model_init_ex(fk_model *m, const fk_config *cfg, unsigned flags) {
    memset(m, 0, sizeof *m);
    FK_TRY(fk_config_validate(cfg));  // bounds every size: the products below cannot overflow
    m->cfg = *cfg;
    m->layer = calloc((size_t)cfg->n_layer, sizeof *m->layer);
    if (!m->layer) return fk_error(FK_ERR_NOMEM, "out of memory");
    build_table(m);  // count
    m->params = calloc((size_t)m->n_params, sizeof *m->params);
    if (!m->params) { fk_model_free(m); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    build_table(m);  // fill
    // the memory the weights will take, checked before any of it is allocated: the whole arena,
    // or with stored matrices only what cannot be stored
    int64_t need = m->n_floats;
    if (flags & FK_MODEL_INIT_STORED)
        for (int i = 0; i < m->n_params; i++)
            if (fk_param_storable(m->params[i].kind)) need -= (m->params[i].numel + 15) & ~(int64_t)15;
    char what[96];
    snprintf(what, sizeof what, "the model (%.3g parameters, f32)", (double)m->n_floats);
    fk_status st = fk_mem_check(what, (double)need * sizeof(float));
    if (st != FK_OK) { fk_model_free(m); return st; }
    // a frozen model's arena: the stored matrices' rows are never written, so they need no commit
    m->w = flags & FK_MODEL_INIT_STORED ? fk_alloc_pages_sparse((size_t)m->n_floats * sizeof(float))
                                        : fk_alloc_pages((size_t)m->n_floats * sizeof(float));
    if (!m->w) {
        size_t mb = (size_t)m->n_floats * 4 >> 20;
        fk_model_free(m);
        return fk_error(FK_ERR_NOMEM, "cannot allocate %zu MiB for the weights", mb);
    }
    if (cfg->pos == FK_POS_ROPE) {  // room for the first positions; rope_ensure grows them
        float local_theta = cfg->rope_theta_local > 0 ? cfg->rope_theta_local : cfg->rope_theta;
        // (dynamic/yarn/longrope turn every layer alike: no local table for them)
        bool scaled = (cfg->rope_scale > 0 && cfg->rope_scale != 1) || cfg->rope_orig_ctx > 0, any_sliding = false;
        for (int64_t l = 0; l < cfg->n_layer; l++) any_sliding |= cfg->sliding[l] != 0;
        m->rope_cap = cfg->max_seq < 64 ? cfg->max_seq : 64;
        size_t rb = (size_t)m->rope_cap * (size_t)(fk_config_rotary_dim(cfg) / 2) * sizeof(float);
        m->rope_cos = malloc(rb);
        m->rope_sin = malloc(rb);
        bool ok = m->rope_cos && m->rope_sin;
        if (ok && any_sliding && (local_theta != cfg->rope_theta || scaled)) {
            m->rope_cos_local = malloc(rb);
            m->rope_sin_local = malloc(rb);
            ok = m->rope_cos_local && m->rope_sin_local;
        }
        if (!ok) { fk_model_free(m); return fk_error(FK_ERR_NOMEM, "out of memory"); }
    }
    return FK_OK;
}

void fk_model_init_weights(fk_model *m, uint64_t seed) {
    const fk_config *c = &m->cfg;
    float proj_std = 0.02f / sqrtf(2.0f * (float)c->n_layer);
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        float *w = m->w + p->offset;
        fk_rng r;
        fk_rng_seed(&r, seed ^ fk_fnv1a64(p->name, strlen(p->name), 0));  // per tensor: order-independent
        switch (p->kind) {
        case FK_P_LN1_W: case FK_P_LN2_W: case FK_P_LNF_W: case FK_P_ATTN_POST_W: case FK_P_FFN_POST_W:
        case FK_P_Q_NORM_W: case FK_P_K_NORM_W:
            for (int64_t j = 0; j < p->numel; j++) w[j] = 1.0f - c->norm_offset;  // the identity scale
            break;
        case FK_P_TOK_EMB: case FK_P_POS_EMB: case FK_P_QKV_W: case FK_P_UP_W: case FK_P_LM_HEAD: case FK_P_ROUTER_W:
        case FK_P_EXP_UP_W: case FK_P_SHARED_GATE_W:
            for (int64_t j = 0; j < p->numel; j++) w[j] = 0.02f * fk_rng_normal(&r);
            break;
        case FK_P_O_W: case FK_P_DOWN_W: case FK_P_EXP_DOWN_W:
            for (int64_t j = 0; j < p->numel; j++) w[j] = proj_std * fk_rng_normal(&r);
            break;
        default:
            memset(w, 0, (size_t)p->numel * sizeof(float));
        }
    }
}

fk_status fk_model_alloc_grads(fk_model *m) {
    if (m->g) return FK_OK;
    if (m->n_stored > 0)
        return fk_error(FK_ERR_ARG, "the model reads %d weight matrices as stored in its file (a frozen model for inference); "
                        "load it dequantized to train it", m->n_stored);
    FK_TRY(fk_mem_check("the gradient arena (f32)", (double)m->n_floats * sizeof(float)));
    m->g = fk_calloc_aligned((size_t)m->n_floats * sizeof(float));
    if (!m->g) return fk_error(FK_ERR_NOMEM, "cannot allocate %zu MiB for gradients", (size_t)m->n_floats * 4 >> 20);
    return FK_OK;
}

void fk_model_zero_grads(fk_model *m) {
    if (m->g) memset(m->g, 0, (size_t)m->n_floats * sizeof(float));
}

const fk_param *fk_model_find_param(const fk_model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

int64_t fk_model_num_matmul_params(const fk_model *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) {
        fk_param_kind k = m->params[i].kind;
        if (k == FK_P_QKV_W || k == FK_P_O_W || k == FK_P_UP_W || k == FK_P_DOWN_W || k == FK_P_LM_HEAD || k == FK_P_ROUTER_W ||
            k == FK_P_SHARED_GATE_W)
            n += m->params[i].numel;
    }
    if (m->cfg.tied) n += m->cfg.vocab_size * m->cfg.d_model;
    // MoE layers: the K experts each token runs, not all of them (compute per token)
    const fk_config *c = &m->cfg;
    for (int64_t l = 0; l < c->n_layer; l++)
        if (c->moe[l]) n += c->n_expert_used * (fk_config_gated(c) ? 3 : 2) * c->expert_ffn * c->d_model;
    return n;
}

// ================================================================== activations

struct fk_acts {
    int B, T;
    bool train;
    int nthr;              // threads the scratch has slices for
    int64_t slots;         // layers that keep their activations (n_layer when training, else 1; 1 with checkpointing)
    bool ckpt;             // laid out for activation checkpointing
    int64_t bytes;
    float *arena;          // every buffer below, carved from one allocation
    int64_t slice;         // floats of scratch per thread
    int32_t *tokens, *targets, *pos;   // (BT)
    float *resid;          // train: (L+1, BT, C); inference: (BT, C), updated in place
    float *mid;            // train: (L, BT, C)
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *probs, *att, *ln2, *ln2_mean, *ln2_rstd, *pre, *act;
    float *lse;            // att_lse: (S, B, n_head, T) each attention row's log-sum-exp, kept instead of probs
    bool att_lse;          // training's attention on the bf16 kernel: the backward recomputes the probabilities
    uint16_t *att16;       // act16 mode with attention's bf16 kernel in training: attention's output (S, N, D) as
                           // bf16, what the output projection reads forward and backward (att is then NULL)
    uint16_t *act16;       // act16 mode: the MLP's activation (S, N, max FFN) kept as bf16 (act is then NULL),
    uint16_t *ln1_16, *ln2_16;  // and the pre-norms' outputs (S, N, C) (ln1 and ln2 then NULL)
    float *lnf, *lnf_mean, *lnf_rstd, *logits, *losses, *flosses, *tmp;
    float *qk_pre, *qk_rstd;           // qk_norm: (S, BT, n_head + n_kv_head, hd) inputs and (S, BT, heads) scales
    float *attn_o, *attn_post_rstd;    // post_norms: attention output before its norm (S, BT, C), scales (S, BT)
    float *ffn_o, *ffn_post_rstd;      // post_norms: FFN output before its norm, scales
    float *lmax;                       // final_softcap: each row's largest capped logit (BT)
    float *dresid, *dln, *dqkv, *datt, *dpre, *dact;   // backward scratch, one layer's worth
    float *scratch;                    // nthr slices: attention row blocks, the soft-capped loss's rows
    fk_moe_bufs moe;                   // MoE layers (cfg.n_expert > 0): S slots, backward scratch
    int64_t n_scored;
    fk_sparse_dist teacher; // the teacher rows of the last training forward (caller-owned)
    bool have_teacher;
    float lambda;
    fk_objective objective;    // the fusion term of the last forward with a teacher
    int64_t *uld_idx;          // ULD scratch: nthr slices of uld_k entries each, grown on demand
    float *uld_t;
    int64_t uld_k;
    float *row_w;              // fk_model_weight_rows: per-row weights of the next backward (row_w_n values)
    int64_t row_w_n;
    bool have_row_w;
    bool have_probs;       // logits hold softmax probabilities (training forward with targets)
    bool have_logits;      // logits hold the logits of the last forward
};

static void acts_free(fk_acts *a) {
    if (!a) return;
    free(a->arena);
    free(a->uld_idx);
    free(a->uld_t);
    free(a->row_w);
    free(a);
}

// Floats of scratch one thread needs for a batch of sequences of T tokens: an attention row block
// (its probabilities in an inference forward; dP and the raw scores in the backward) and, with a
// final soft-cap, one row of probabilities in the loss's backward.
static int64_t scratch_slice(const fk_config *c, int64_t T, bool train) {
    int64_t att = (train ? 2 : 1) * FK_ATT_BLK * T, loss = train && c->final_softcap > 0 ? c->vocab_size : 0;
    return att > loss ? att : loss;
}

// Whether a training layout keeps attention's log-sum-exp instead of its probabilities: where the
// bf16 attention kernels (AMX tiles or AVX512-BF16) take training's attention (fk_attention_backward_amx
// recomputes them).
static bool att_lse_mode(const fk_config *c, bool train) { return train && c->head_dim <= FK_ATTN_AMX_MAX_HD && fk_attn_amx_on(); }

// Whether a training layout keeps the products' input activations as bf16 (act16 mode: the MLP's
// activation and the two pre-norms' outputs, which only the products read, and where the bf16
// attention kernel takes training's attention, its output, which only the output projection
// reads; the kernel writes it as bf16 directly): bf16 products on
// oneDNN (which read them as they would round them), an arena model of dense MLPs, no forward
// hook (which reads the activation as floats).
static bool act16_mode(const fk_model *m, bool train) {
    const fk_config *c = &m->cfg;
    if (!train || m->n_stored > 0 || m->hook || !fk_gemm_bf16_on(1 << 9, 1 << 9, 1 << 9)) return false;
    for (int64_t l = 0; l < c->n_layer; l++)
        if (c->moe[l]) return false;
    return true;
}

// Lays out the activation buffers of a (B, T) batch in one arena: with base NULL, only the
// offsets are counted (a->bytes); then again over the allocated arena.
static void acts_layout(fk_acts *a, const fk_config *c, int B, int T, bool train, bool ckpt, bool act16, int nthr, float *base) {
    int64_t N = (int64_t)B * T, C = c->d_model, L = c->n_layer, D = c->n_head * c->head_dim, F = max_ffn(c);
    ckpt = ckpt && train;
    int64_t UP = up_stride(c), S = train && !ckpt ? L : 1, off = 0;
    a->B = B; a->T = T; a->train = train; a->slots = S; a->nthr = nthr; a->ckpt = ckpt;
    a->slice = scratch_slice(c, T, train);
    // each buffer starts 64-byte aligned (16 floats)
#define CARVE(field, type, count) do { a->field = base ? (type *)(base + off) : NULL; off += ((count) + 15) & ~(int64_t)15; } while (0)
#define ALLOC(field, count) CARVE(field, float, count)
    CARVE(tokens, int32_t, N); CARVE(targets, int32_t, N); CARVE(pos, int32_t, N);
    ALLOC(resid, (train ? L + 1 : 1) * N * C);
    if (train) ALLOC(mid, L * N * C);
    if (act16) { CARVE(ln1_16, uint16_t, (S * N * C + 1) / 2); a->ln1 = NULL; }
    else { ALLOC(ln1, S * N * C); a->ln1_16 = NULL; }
    ALLOC(ln1_mean, S * N); ALLOC(ln1_rstd, S * N);
    ALLOC(qkv, S * N * qkv_dim(c, -1));
    // attention on the bf16 kernel keeps each row's log-sum-exp, not its B x H x T x T probabilities
    a->att_lse = att_lse_mode(c, train);
    if (train && a->att_lse) ALLOC(lse, S * (int64_t)B * c->n_head * T);
    else if (train) ALLOC(probs, S * (int64_t)B * c->n_head * T * T);
    if (act16 && a->att_lse) { CARVE(att16, uint16_t, (S * N * D + 1) / 2); a->att = NULL; }
    else { ALLOC(att, S * N * D); a->att16 = NULL; }
    if (act16) { CARVE(ln2_16, uint16_t, (S * N * C + 1) / 2); a->ln2 = NULL; }
    else { ALLOC(ln2, S * N * C); a->ln2_16 = NULL; }
    ALLOC(ln2_mean, S * N); ALLOC(ln2_rstd, S * N);
    ALLOC(pre, S * N * UP);
    if (act16) {
        CARVE(act16, uint16_t, (S * N * F + 1) / 2);
        a->act = NULL;
    } else {
        ALLOC(act, S * N * F);
        a->act16 = NULL;
    }
    ALLOC(lnf, N * C); ALLOC(lnf_mean, N); ALLOC(lnf_rstd, N);
    ALLOC(logits, N * c->vocab_size); ALLOC(losses, N); ALLOC(flosses, N); ALLOC(tmp, N * C);
    if (c->qk_norm) { ALLOC(qk_pre, S * N * qk_heads(c) * c->head_dim); ALLOC(qk_rstd, S * N * qk_heads(c)); }
    if (c->post_norms) { ALLOC(attn_o, S * N * C); ALLOC(attn_post_rstd, S * N); ALLOC(ffn_o, S * N * C); ALLOC(ffn_post_rstd, S * N); }
    if (c->final_softcap > 0) ALLOC(lmax, N);
    if (train) {
        ALLOC(dresid, N * C); ALLOC(dln, N * C); ALLOC(dqkv, N * qkv_dim(c, -1)); ALLOC(datt, N * D);
        ALLOC(dpre, N * UP); ALLOC(dact, N * F);
    }
    ALLOC(scratch, nthr * a->slice);
    off = fk_moe_layout(&a->moe, c, S, N, train, base, off);
#undef ALLOC
#undef CARVE
    a->bytes = off * (int64_t)sizeof(float);
}

size_t fk_model_activation_bytes(const fk_model *m, int B, int T, bool train) {
    fk_acts a = {0};
    acts_layout(&a, &m->cfg, B, T, train, m->checkpoint_acts, act16_mode(m, train), omp_get_max_threads(), NULL);
    return (size_t)a.bytes;
}

void fk_model_set_checkpointing(fk_model *m, bool on) { m->checkpoint_acts = on; }

// The slot of layer l's activations: its own when training keeps every layer's, else the one slot.
static int64_t slot_of(const fk_acts *a, int64_t l) { return a->slots > 1 ? l : 0; }

static fk_status acts_alloc(fk_model *m, int B, int T, bool train) {
    fk_acts *a = m->acts;
    int nthr = omp_get_max_threads();
    bool ckpt = train && m->checkpoint_acts;
    bool act16 = act16_mode(m, train);
    if (a && a->B == B && a->T == T && a->train == train && a->ckpt == ckpt && a->nthr >= nthr &&
        a->att_lse == att_lse_mode(&m->cfg, train) && (a->act16 != NULL) == act16)
        return FK_OK;
    // An inference forward fits in any buffers laid out for at least as many tokens (it uses
    // one layer's slot) and enough scratch, so evaluation between training steps reallocates
    // nothing. The buffers keep their (B, T); backward refuses until the next training forward.
    // (A layout in act16 mode serves while act16 would still be chosen: that forward keeps its activation
    // as bf16 too, right under bf16 products on oneDNN without a hook, not under fp32.)
    if (a && !train && (int64_t)a->B * a->T >= (int64_t)B * T && a->slice >= scratch_slice(&m->cfg, T, false) && a->nthr >= nthr &&
        (!a->act16 || act16_mode(m, true)) && !a->att16)  // (attention's fp32 output is needed there)
        return FK_OK;
    acts_free(a);
    m->acts = a = calloc(1, sizeof *a);
    if (!a) return fk_error(FK_ERR_NOMEM, "out of memory");
    acts_layout(a, &m->cfg, B, T, train, ckpt, act16, nthr, NULL);
    // checked before allocating (the pages are touched by the first forward): with the option
    // that would need less
    char what[96];
    snprintf(what, sizeof what, "the activation arena for a %s batch of %d x %d tokens", train ? "training" : "forward", B, T);
    fk_status st;
    if (train && !ckpt) {
        fk_acts alt = {0};
        acts_layout(&alt, &m->cfg, B, T, train, true, act16, nthr, NULL);
        st = fk_mem_check_hint(what, (double)a->bytes, "--checkpoint-activations needs %s, a smaller batch less", (double)alt.bytes);
    } else {
        st = fk_mem_check_hint(what, (double)a->bytes, "a smaller batch or sequence needs less", 0);
    }
    if (st != FK_OK) {
        acts_free(a);
        m->acts = NULL;
        return st;
    }
    a->arena = fk_calloc_aligned((size_t)a->bytes);
    if (!a->arena) {
        int64_t mb = a->bytes >> 20;
        acts_free(a);
        m->acts = NULL;
        return fk_error(FK_ERR_NOMEM, "cannot allocate %lld MiB of activations for batch %d x %d", (long long)mb, B, T);
    }
    acts_layout(a, &m->cfg, B, T, train, ckpt, act16, nthr, a->arena);
    return FK_OK;
}

// ================================================================== forward / backward

// A norm with weight offset w (< 0: an absent pre-norm, no_pre_norms: out is a copy of inp).
static void norm_forward(const fk_model *m, float *out, float *mean, float *rstd, const float *inp, int64_t w, int64_t b, int64_t N) {
    const fk_config *c = &m->cfg;
    if (w < 0) memcpy(out, inp, (size_t)(N * c->d_model) * sizeof(float));
    else if (c->norm == FK_NORM_LAYERNORM)
        fk_layernorm_forward(out, mean, rstd, inp, m->w + w, b >= 0 ? m->w + b : NULL, N, c->d_model, c->norm_eps);
    else
        fk_rmsnorm_forward(out, rstd, inp, m->w + w, N, c->d_model, c->norm_eps, c->norm_offset);
}

// norm_forward rounded to bf16 into out16 (N x C): blocks of rows normalised in fp32 (the values
// norm_forward would keep), then rounded as the products round operands, each thread a block at a time.
#define FK_NORM_ROWS 64
static fk_status norm_forward_bf16(const fk_model *m, uint16_t *out16, float *mean, float *rstd, const float *inp, int64_t w,
                                   int64_t b, int64_t N) {
    int64_t C = m->cfg.d_model;
    int failed = 0;
    #pragma omp parallel if (N * C > FK_OMP_MIN_WORK)
    {
        float *rows = malloc((size_t)(FK_NORM_ROWS * C) * sizeof(float));
        if (!rows) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < N; i0 += FK_NORM_ROWS) {
            if (!rows) continue;
            int64_t n = N - i0 < FK_NORM_ROWS ? N - i0 : FK_NORM_ROWS;
            norm_forward(m, rows, mean ? mean + i0 : NULL, rstd ? rstd + i0 : NULL, inp + i0 * C, w, b, n);
            fk_rows_to_bf16(out16 + i0 * C, rows, (int)n, (int)C, (int)C);
        }
        free(rows);
    }
    return failed ? fk_error(FK_ERR_NOMEM, "out of memory (%d rows of %lld floats for a norm)", FK_NORM_ROWS, (long long)C) : FK_OK;
}

static void norm_backward(fk_model *m, float *dinp, const float *dout, const float *inp, const float *mean,
                          const float *rstd, int64_t w, int64_t b, int64_t N) {
    const fk_config *c = &m->cfg;
    if (w < 0) {  // the identity of an absent pre-norm
        #pragma omp parallel for if (N * c->d_model > FK_OMP_MIN_WORK)
        for (int64_t i = 0; i < N * c->d_model; i++) dinp[i] += dout[i];
    } else if (c->norm == FK_NORM_LAYERNORM)
        fk_layernorm_backward(dinp, m->g + w, b >= 0 ? m->g + b : NULL, dout, inp, m->w + w, mean, rstd, N, c->d_model);
    else
        fk_rmsnorm_backward(dinp, m->g + w, dout, inp, m->w + w, rstd, N, c->d_model, c->norm_offset);
}

static void zero(float *x, int64_t n) { memset(x, 0, (size_t)n * sizeof(float)); }

static void scale_inplace(float *x, float s, int64_t n) {
    #pragma omp parallel for if (n > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

static void mlp_act_forward(const fk_config *c, float *act, const float *pre, int64_t N, int64_t F) {
    if (c->mlp == FK_MLP_SWIGLU) fk_swiglu_forward(act, pre, N, F);
    else if (c->mlp == FK_MLP_GEGLU) fk_geglu_forward(act, pre, N, F);
    else if (c->gelu_exact) fk_gelu_exact_forward(act, pre, N * F);
    else fk_gelu_forward(act, pre, N * F);
}

static void mlp_act_backward(const fk_config *c, float *dpre, const float *pre, const float *dact, int64_t N, int64_t F) {
    if (c->mlp == FK_MLP_SWIGLU) fk_swiglu_backward(dpre, pre, dact, N, F);
    else if (c->mlp == FK_MLP_GEGLU) fk_geglu_backward(dpre, pre, dact, N, F);
    else if (c->gelu_exact) fk_gelu_exact_backward(dpre, pre, dact, N * F);
    else fk_gelu_backward(dpre, pre, dact, N * F);
}

// The activation of N rows of pre (row stride UP) rounded to bf16 into act16 (N x F): blocks of
// rows computed in fp32 by mlp_act_forward (so the values it would keep), then rounded as the
// products round operands; each thread a block at a time (the ops' own parallel regions nest, idle).
#define FK_ACT_ROWS 32
static fk_status mlp_act_forward_bf16(const fk_config *c, uint16_t *act16, const float *pre, int64_t N, int64_t F, int64_t UP) {
    int failed = 0;
    #pragma omp parallel if (N * F > FK_OMP_MIN_WORK)
    {
        float *rows = malloc((size_t)(FK_ACT_ROWS * F) * sizeof(float));
        if (!rows) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < N; i0 += FK_ACT_ROWS) {
            if (!rows) continue;
            int64_t n = N - i0 < FK_ACT_ROWS ? N - i0 : FK_ACT_ROWS;
            mlp_act_forward(c, rows, pre + i0 * UP, n, F);
            fk_rows_to_bf16(act16 + i0 * F, rows, (int)n, (int)F, (int)F);
        }
        free(rows);
    }
    return failed ? fk_error(FK_ERR_NOMEM, "out of memory (%d rows of %lld floats for the MLP's activation)", FK_ACT_ROWS, (long long)F)
                  : FK_OK;
}

void fk_nn_act_forward(const fk_config *c, float *act, const float *pre, int64_t N, int64_t F) { mlp_act_forward(c, act, pre, N, F); }
void fk_nn_act_backward(const fk_config *c, float *dpre, const float *pre, const float *dact, int64_t N, int64_t F) {
    mlp_act_backward(c, dpre, pre, dact, N, F);
}

#define WP(off) ((off) >= 0 ? m->w + (off) : NULL)
#define GP(off) ((off) >= 0 ? m->g + (off) : NULL)

static void add_inplace(float *out, const float *a, const float *b, int64_t n) {
    #pragma omp parallel for if (n > FK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// ================================================================== stored (frozen) weights

const fk_param *fk_model_param_of(const fk_model *m, int64_t off) {
    for (int i = 0; i < m->n_params; i++)
        if (off >= m->params[i].offset && off < m->params[i].offset + m->params[i].numel) return &m->params[i];
    return NULL;
}

// Table row of a stored segment's local row r (undoes llama.cpp's interleaved RoPE order).
static int64_t stored_row(const fk_stored *s, int64_t r) {
    if (s->rope_hd <= 0) return s->row0 + r;
    int64_t hd = s->rope_hd, h = r / hd, w = r % hd;
    return s->row0 + h * hd + (w % 2) * (hd / 2) + w / 2;
}

bool fk_param_storable(fk_param_kind k) {
    return k == FK_P_TOK_EMB || k == FK_P_QKV_W || k == FK_P_O_W || k == FK_P_UP_W || k == FK_P_DOWN_W || k == FK_P_LM_HEAD ||
           k == FK_P_EXP_UP_W || k == FK_P_EXP_DOWN_W;
}

fk_status fk_model_add_stored(fk_model *m, const fk_stored *s) {
    if (s->param < 0 || s->param >= m->n_params) return fk_error(FK_ERR_ARG, "stored weight: table entry %d does not exist", s->param);
    const fk_param *p = &m->params[s->param];
    if (!fk_param_storable(p->kind))
        return fk_error(FK_ERR_ARG, "stored weight: '%s' is not a weight matrix that can be read as stored", p->name);
    if (s->row0 < 0 || s->rows < 1 || s->row0 > p->shape[0] - s->rows)
        return fk_error(FK_ERR_ARG, "stored weight: rows %lld..%lld are outside '%s' (%lld rows)", (long long)s->row0,
                        (long long)(s->row0 + s->rows), p->name, (long long)p->shape[0]);
    uint64_t rb;
    FK_TRY(fk_ggml_row_bytes(s->type, p->shape[1], &rb));
    const fk_ggml_type_info *ti = fk_ggml_type(s->type);
    if (!ti || !ti->dequant || rb != s->row_bytes || !s->data)
        return fk_error(FK_ERR_ARG, "stored weight: '%s' rows of type %s need %llu bytes each, got %zu", p->name,
                        fk_ggml_type_name(s->type), (unsigned long long)rb, s->row_bytes);
    if (s->rope_hd < 0 || (s->rope_hd > 0 && (s->rope_hd % 2 != 0 || s->rows % s->rope_hd != 0 || s->row0 % s->rope_hd != 0)))
        return fk_error(FK_ERR_ARG, "stored weight: '%s' RoPE head size %lld does not divide rows %lld..%lld", p->name,
                        (long long)s->rope_hd, (long long)s->row0, (long long)(s->row0 + s->rows));
    for (int i = 0; i < m->n_stored; i++) {
        const fk_stored *o = &m->stored[i];
        if (o->param == s->param && o->row0 < s->row0 + s->rows && s->row0 < o->row0 + o->rows)
            return fk_error(FK_ERR_ARG, "stored weight: rows %lld..%lld of '%s' are already stored", (long long)s->row0,
                            (long long)(s->row0 + s->rows), p->name);
    }
    fk_stored *grown = realloc(m->stored, (size_t)(m->n_stored + 1) * sizeof *grown);
    if (!grown) return fk_error(FK_ERR_NOMEM, "out of memory");
    m->stored = grown;
    m->stored[m->n_stored++] = *s;
    return FK_OK;
}

void fk_model_set_stored_owner(fk_model *m, void *owner, void (*release)(void *owner)) {
    m->stored_owner = owner;
    m->stored_release = release;
}

bool fk_model_is_frozen(const fk_model *m) { return m->n_stored > 0; }

fk_status fk_model_read_rows(const fk_model *m, int param, int64_t row0, int64_t rows, float *out) {
    if (param < 0 || param >= m->n_params) return fk_error(FK_ERR_ARG, "read rows: table entry %d does not exist", param);
    const fk_param *p = &m->params[param];
    int64_t C = p->ndim == 2 ? p->shape[1] : p->shape[0], R = p->ndim == 2 ? p->shape[0] : 1;
    if (row0 < 0 || rows < 0 || row0 > R - rows)
        return fk_error(FK_ERR_ARG, "read rows: rows %lld..%lld are outside '%s' (%lld rows)", (long long)row0, (long long)(row0 + rows),
                        p->name, (long long)R);
    memcpy(out, m->w + p->offset + row0 * C, (size_t)(rows * C) * sizeof(float));
    for (int i = 0; i < m->n_stored; i++) {
        const fk_stored *s = &m->stored[i];
        if (s->param != param) continue;
        for (int64_t r = 0; r < s->rows; r++) {
            int64_t t = stored_row(s, r);
            if (t >= row0 && t < row0 + rows)
                fk_dequantize_row(s->type, (const unsigned char *)s->data + (size_t)r * s->row_bytes, out + (t - row0) * C, C);
        }
    }
    return FK_OK;
}

bool fk_model_has_q8_stored(const fk_model *m) {
    for (int j = 0; j < m->n_stored; j++)
        if (fk_qmatmul_q8_supported(m->stored[j].type)) return true;
    return false;
}

size_t fk_model_weight_bytes(const fk_model *m) {
    size_t b = 0;
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        if (p->kind == FK_P_LM_HEAD && m->lm_head == m->tok_emb) continue;
        int64_t rows_stored = 0;
        for (int j = 0; j < m->n_stored; j++)
            if (m->stored[j].param == i) { rows_stored += m->stored[j].rows; b += m->stored[j].rows * m->stored[j].row_bytes; }
        b += (size_t)(p->numel - rows_stored * (p->ndim == 2 ? p->shape[1] : 1)) * sizeof(float);
    }
    return b;
}


// A dequantized tile's product through the library's GEMM (the matrix-product precision).
static void precision_tile(int N, int rows, int C, const float *inp, const float *tile, float *out, int ldo) {
    fk_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, rows, C, 1.0f, inp, C, tile, C, 0.0f, out, ldo);
}

// Grows the model's bf16 scratch of the stored products to at least `bytes`; NULL when out of memory.
static uint16_t *stored_bf16_scratch(fk_model *m, size_t bytes) {
    if (bytes > m->stored_bf16_bytes) {
        free(m->stored_bf16);
        m->stored_bf16 = malloc(bytes);
        m->stored_bf16_bytes = m->stored_bf16 ? bytes : 0;
    }
    return m->stored_bf16;
}

// Rows of a stored segment decoded per block (fk_dequantize_row) and rounded to bf16 per chunk:
// at most this many elements (4 MB of bf16) a chunk, so the decoded rows stay in cache for the product.
#define FK_STORED_CHUNK ((int64_t)1 << 21)

static int64_t g_stored_bf16_products;  // segments multiplied on the bf16 path (tests read it)
int64_t fk_nn_stored_bf16_products(void) { return g_stored_bf16_products; }
static int64_t g_stored_int8_products;  // segments multiplied with 8-bit activations (--precision int8)
int64_t fk_nn_stored_int8_products(void) { return g_stored_int8_products; }

// Under bf16 on oneDNN, a batch's product with one stored segment: out (N x s->rows, row stride
// ldo) = a16 W^T + bias, a16 the batch's activations already rounded to packed bf16 (N x C).
// bf16 rows are multiplied where the file maps them; other types are decoded and rounded to bf16
// a chunk of rows at a time across the threads, each chunk one oneDNN product on all of them.
// Sets *done false (and does nothing) where oneDNN does not take the product.
static fk_status stored_bf16_forward(const fk_stored *s, const uint16_t *a16, const float *bias, int64_t N,
                                     int64_t C, float *out, int64_t ldo, uint16_t *chunk, int64_t chunk_rows, bool *done) {
    *done = false;
    int64_t R = s->rows;
    if (s->type == FK_GGML_BF16 && s->row_bytes == (size_t)C * 2) {
        *done = fk_gemm_bf16((int)N, (int)R, (int)C, a16, s->data, bias, out, (int)ldo);
        g_stored_bf16_products += *done;
        return FK_OK;
    }
    int failed = 0;
    for (int64_t r0 = 0; r0 < R; r0 += chunk_rows) {
        int64_t n = R - r0 < chunk_rows ? R - r0 : chunk_rows;
        #pragma omp parallel if (n * C >= 65536)
        {
            float *row = malloc((size_t)C * sizeof(float));
            if (!row) {
                #pragma omp atomic write
                failed = 1;
            }
            #pragma omp for schedule(static)
            for (int64_t r = 0; r < n; r++) {
                if (!row) continue;
                fk_dequantize_row(s->type, (const unsigned char *)s->data + (size_t)(r0 + r) * s->row_bytes, row, C);
                fk_rows_to_bf16(chunk + r * C, row, 1, (int)C, (int)C);
            }
            free(row);
        }
        if (failed) return fk_error(FK_ERR_NOMEM, "out of memory (a row of %lld floats for a stored product)", (long long)C);
        // oneDNN refused a chunk (*done stays false): the caller redoes the whole segment on the f32 path
        if (!fk_gemm_bf16((int)N, (int)n, (int)C, a16, chunk, bias ? bias + r0 : NULL, out + r0, (int)ldo)) return FK_OK;
    }
    *done = true;
    g_stored_bf16_products++;
    return FK_OK;
}

// out (N,OC) = inp (N,C) W^T + b for the matrix at arena offset woff: from the arena, or from
// its stored segments (each multiplied in its own type, then scattered into out's columns).
static fk_status mm_forward(fk_model *m, float *out, const float *inp, int64_t woff, const float *bias, int64_t N, int64_t C,
                            int64_t OC) {
    if (m->n_stored == 0) { fk_matmul_forward(out, inp, m->w + woff, bias, N, C, OC); return FK_OK; }
    const fk_param *p = fk_model_param_of(m, woff);
    int pi = p ? (int)(p - m->params) : -1;
    int64_t covered = 0;
    // bf16 on oneDNN (a batch): the activations rounded once for every segment that takes that
    // path (the first one rounds them), then chunk rows of decoded weights
    uint16_t *a16 = NULL, *chunk = NULL;
    int64_t chunk_rows = FK_STORED_CHUNK / C < OC ? FK_STORED_CHUNK / C : OC;
    if (chunk_rows < 16) chunk_rows = 16;
    bool bf16_on = N >= 2 && N <= INT_MAX && C <= INT_MAX && OC <= INT_MAX && fk_gemm_bf16_on((int)N, (int)OC, (int)C);
    bool int8 = N >= 2 && fk_matmul_int8();  // --precision int8: quantized segments multiply 8-bit activations
    for (int i = 0; i < m->n_stored; i++) {
        const fk_stored *s = &m->stored[i];
        if (s->param != pi) continue;
        bool whole = s->row0 == 0 && s->rows == OC && s->rope_hd == 0;  // the whole matrix in table order: straight into out
        bool q8 = int8 && fk_qmatmul_q8_supported(s->type);
        if (q8) g_stored_int8_products++;
        if (bf16_on && !q8 && !a16) {
            uint16_t *buf = stored_bf16_scratch(m, (size_t)(N + chunk_rows) * (size_t)C * 2);
            if (buf) {
                a16 = buf;
                chunk = buf + N * C;
                fk_rows_to_bf16(a16, inp, (int)N, (int)C, (int)C);
            }
        }
        if (whole) {
            if (q8) return fk_qmatmul_forward_q8(out, inp, s->data, s->type, bias, N, C, OC);
            bool done = false;
            if (a16) FK_TRY(stored_bf16_forward(s, a16, bias, N, C, out, OC, chunk, chunk_rows, &done));
            return done ? FK_OK : fk_qmatmul_forward_gemm(out, inp, s->data, s->type, bias, N, C, OC, precision_tile);
        }
        if (N * s->rows > m->stored_tmp_n) {
            float *t = realloc(m->stored_tmp, (size_t)(N * s->rows) * sizeof(float));
            if (!t) return fk_error(FK_ERR_NOMEM, "out of memory (%lld x %lld scratch for '%s')", (long long)N, (long long)s->rows, p->name);
            m->stored_tmp = t;
            m->stored_tmp_n = N * s->rows;
        }
        bool done = false;
        if (q8) {
            FK_TRY(fk_qmatmul_forward_q8(m->stored_tmp, inp, s->data, s->type, NULL, N, C, s->rows));
            done = true;
        }
        if (a16 && !done) FK_TRY(stored_bf16_forward(s, a16, NULL, N, C, m->stored_tmp, s->rows, chunk, chunk_rows, &done));
        if (!done) FK_TRY(fk_qmatmul_forward_gemm(m->stored_tmp, inp, s->data, s->type, NULL, N, C, s->rows, precision_tile));
        const float *t = m->stored_tmp;
        int64_t R = s->rows;
        #pragma omp parallel for if (N * R > FK_OMP_MIN_WORK)
        for (int64_t n = 0; n < N; n++)
            for (int64_t r = 0; r < R; r++) {
                int64_t col = stored_row(s, r);
                out[n * OC + col] = t[n * R + r] + (bias ? bias[col] : 0.0f);
            }
        covered += R;
    }
    if (covered == 0) { fk_matmul_forward(out, inp, m->w + woff, bias, N, C, OC); return FK_OK; }
    if (covered != OC)
        return fk_error(FK_ERR_ARG, "forward: only %lld of the %lld rows of '%s' are stored", (long long)covered, (long long)OC, p->name);
    return FK_OK;
}

fk_status fk_nn_mm_forward(fk_model *m, float *out, const float *inp, int64_t woff, const float *bias, int64_t N, int64_t C, int64_t OC) {
    return mm_forward(m, out, inp, woff, bias, N, C, OC);
}

// Embedding rows of N tokens from the stored (quantized) table, plus learned positions.
static fk_status embed_stored(fk_model *m, float *out, const int32_t *tokens, const int32_t *pos, int64_t N) {
    int64_t C = m->cfg.d_model;
    for (int64_t n = 0; n < N; n++) {
        const fk_stored *s = NULL;
        for (int i = 0; i < m->n_stored && !s; i++) {
            const fk_stored *q = &m->stored[i];
            if (m->params[q->param].offset == m->tok_emb && tokens[n] >= q->row0 && tokens[n] < q->row0 + q->rows) s = q;
        }
        if (!s) return fk_error(FK_ERR_ARG, "forward: embedding row %d is not stored", tokens[n]);
        fk_dequantize_row(s->type, (const unsigned char *)s->data + (size_t)(tokens[n] - s->row0) * s->row_bytes, out + n * C, C);
        if (m->pos_emb >= 0) {
            const float *pe = m->w + m->pos_emb + (int64_t)pos[n] * C;
            for (int64_t j = 0; j < C; j++) out[n * C + j] += pe[j];
        }
    }
    return FK_OK;
}

// Token embeddings (plus learned positions) of N tokens into out (N, C), times emb_scale when set.
static fk_status embed_forward(fk_model *m, float *out, const int32_t *tokens, const int32_t *pos, int64_t N) {
    const fk_config *c = &m->cfg;
    int64_t C = c->d_model;
    int te = -1;
    for (int i = 0; i < m->n_stored && te < 0; i++)
        if (m->params[m->stored[i].param].offset == m->tok_emb) te = i;
    if (te < 0) fk_encoder_forward(out, tokens, pos, m->w + m->tok_emb, WP(m->pos_emb), N, C);
    else FK_TRY(embed_stored(m, out, tokens, pos, N));
    if (c->emb_scale > 0) scale_inplace(out, c->emb_scale, N * C);
    return FK_OK;
}

// Where one block's forward reads and writes. A training forward gives layer l's slot of every
// buffer (kept for the backward, probs included), an inference forward slot 0 (x, mid and out
// the same rows, updated in place), a KV-cache step its row buffers and the layer's cache (kc,
// vc: the n new keys and values are written at positions p0 .. p0+n-1, attention reads them
// all). Buffers a forward does not keep may be NULL (the norms' means and scales, qk_pre, probs).
typedef struct {
    int64_t B, n, p0;                  // sequences, rows per sequence, position of the first row
    const int32_t *pos;                // (B*n) positions, for RoPE
    float *x, *mid, *out;              // block input, after the attention branch, output (B*n, C)
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *qk_pre, *qk_rstd, *probs, *att, *attn_o, *attn_post_rstd;
    float *lse;                        // training on the bf16 kernel: each attention row's log-sum-exp instead of probs
    uint16_t *att16;                   // training in act16 mode on the bf16 kernel: attention's output as bf16 (att NULL)
    float *ln2, *ln2_mean, *ln2_rstd, *pre, *act, *ffn_o, *ffn_post_rstd, *tmp;
    uint16_t *act16, *ln1_16, *ln2_16; // instead of act, ln1, ln2: the same as bf16 (act16 mode)
    float *kc, *vc;                    // this layer's KV cache (max_seq, KVH*hd each), or NULL
    fk_moe_slot moe;                   // MoE layers: the layer's slot of the MoE buffers
    float *scratch;                    // nthr attention row blocks of FK_ATT_BLK x (p0 + n)
    int nthr;
} block_io;

// One transformer block, the same for training, evaluation and KV-cache steps:
// mid = x + [post-norm](o(attention(rope(qknorm(qkv(norm1(x))))))),
// out = mid + [post-norm](down(act(up(norm2(mid))))); with a parallel residual the MLP reads
// norm2(x) (taken before mid overwrites x in place), or norm1(x) itself when the norm is shared.
static fk_status block_forward(fk_model *m, int64_t l, const block_io *io) {
    const fk_config *c = &m->cfg;
    const fk_layer_offsets *o = &m->layer[l];
    int64_t N = io->B * io->n, C = c->d_model, KVH = c->n_kv_head, hd = c->head_dim, KVD = KVH * hd;
    int64_t H = fk_config_heads(c, l), D = H * hd, QD = qkv_dim(c, l), F = c->ffn[l];
    const float *mlp_in = c->residual == FK_RESID_PARALLEL_SHARED ? io->ln1 : io->ln2;
    const uint16_t *mlp_in16 = c->residual == FK_RESID_PARALLEL_SHARED ? io->ln1_16 : io->ln2_16;
    if (io->ln1_16) {  // act16 mode: the norms' outputs as bf16, read by the products as they are
        FK_TRY(norm_forward_bf16(m, io->ln1_16, io->ln1_mean, io->ln1_rstd, io->x, o->ln1_w, o->ln1_b, N));
        if (c->residual == FK_RESID_PARALLEL)
            FK_TRY(norm_forward_bf16(m, io->ln2_16, io->ln2_mean, io->ln2_rstd, io->x, o->ln2_w, o->ln2_b, N));
        fk_sgemm_a16((int)N, (int)QD, (int)C, io->ln1_16, m->w + o->qkv_w, (int)C, WP(o->qkv_b), io->qkv, (int)QD);
    } else {
        norm_forward(m, io->ln1, io->ln1_mean, io->ln1_rstd, io->x, o->ln1_w, o->ln1_b, N);
        if (c->residual == FK_RESID_PARALLEL) norm_forward(m, io->ln2, io->ln2_mean, io->ln2_rstd, io->x, o->ln2_w, o->ln2_b, N);
        FK_TRY(mm_forward(m, io->qkv, io->ln1, o->qkv_w, WP(o->qkv_b), N, C, QD));
    }
    if (c->clip_qkv > 0) fk_clamp_forward(io->qkv, N * QD, c->clip_qkv);  // MPT's clip_qkv
    if (c->qk_norm) {
        fk_qk_groups G = qk_groups(c, H);
        fk_qknorm_forward(io->qkv, io->qk_pre, io->qk_rstd, m->w + o->q_norm_w, m->w + o->k_norm_w, N, &G, c->norm_eps, c->norm_offset);
    }
    if (c->pos == FK_POS_ROPE) {
        const float *cs, *sn;
        layer_rope(m, l, &cs, &sn);
        fk_rope_apply(io->qkv, cs, sn, io->pos, N, H, KVH, hd, fk_config_rotary_dim(c), 1.0f);
    }
    fk_att_dims d = {.B = io->B, .n = io->n, .p0 = io->p0, .H = H, .KVH = KVH, .hd = hd, .q_stride = QD, .kv_stride = QD,
                     .kv_seq = io->n * QD, .window = layer_window(c, l)};
    float slopes[FK_LIM_HEADS];
    d.alibi = alibi_slopes(c, slopes);
    const float *k = io->qkv + D, *v = k + KVD;
    if (io->kc) {  // the new keys and values join the cache; attention reads the cache
        for (int64_t i = 0; i < io->n; i++) {
            memcpy(io->kc + (io->p0 + i) * KVD, io->qkv + i * QD + D, (size_t)KVD * sizeof(float));
            memcpy(io->vc + (io->p0 + i) * KVD, io->qkv + i * QD + D + KVD, (size_t)KVD * sizeof(float));
        }
        k = io->kc; v = io->vc; d.kv_stride = KVD; d.kv_seq = 0;
    }
    // under bf16 on AMX tiles or AMD's AVX512-BF16, blocks of queries take the bf16 kernel (one query, a KV-cache step, stays fp32);
    // a training layout for them keeps only each row's log-sum-exp, so there they must run
    if (io->lse) {
        if (!fk_attention_forward_amx(io->att, io->att16, NULL, io->lse, io->qkv, k, v, &d, att_scale(c), c->attn_softcap, io->nthr))
            return fk_error(FK_ERR_NOMEM, "out of memory for the bf16 attention kernel's buffers (layer %lld)", (long long)l);
    } else if (!(io->n >= 16 &&
                 fk_attention_forward_amx(io->att, NULL, io->probs, NULL, io->qkv, k, v, &d, att_scale(c), c->attn_softcap, io->nthr)))
        fk_attention_forward(io->att, io->probs, io->qkv, k, v, &d, att_scale(c), c->attn_softcap, io->scratch, io->nthr);
    // An inference forward (the residual updated in place, nothing kept for a backward) of an
    // arena model without post-norms lets the GEMM add the bias and the residual, and apply
    // GELU, where it stores the product (fk_sgemm_fused: oneDNN's bf16 path; false elsewhere,
    // where the separate steps below run). The residual's sum is the same either way.
    bool fuse = io->mid == io->x && io->out == io->x && !c->post_norms && m->n_stored == 0;
    if (!(fuse && fk_sgemm_fused((int)N, (int)C, (int)D, io->att, (int)D, m->w + o->o_w, (int)D, WP(o->o_b), 1.0f, FK_EP_NONE,
                                 io->mid, (int)C))) {
        // with post-norms the projection's output is kept (attn_o) and its norm goes to tmp
        float *ao = c->post_norms ? io->attn_o : io->tmp;
        if (io->att16) fk_sgemm_a16((int)N, (int)C, (int)D, io->att16, m->w + o->o_w, (int)D, WP(o->o_b), ao, (int)C);
        else FK_TRY(mm_forward(m, ao, io->att, o->o_w, WP(o->o_b), N, D, C));
        if (c->post_norms) norm_forward(m, io->tmp, NULL, io->attn_post_rstd, ao, o->attn_post_w, -1, N);
        add_inplace(io->mid, io->x, io->tmp, N * C);
    }
    if (c->residual == FK_RESID_SEQUENTIAL && io->ln2_16)
        FK_TRY(norm_forward_bf16(m, io->ln2_16, io->ln2_mean, io->ln2_rstd, io->mid, o->ln2_w, o->ln2_b, N));
    else if (c->residual == FK_RESID_SEQUENTIAL)
        norm_forward(m, io->ln2, io->ln2_mean, io->ln2_rstd, io->mid, o->ln2_w, o->ln2_b, N);
    float *fo = c->post_norms ? io->ffn_o : io->tmp;
    if (c->moe[l]) FK_TRY(fk_moe_forward(m, l, &io->moe, mlp_in, io->pre, io->act, fo, N));  // sequential, no post-norms
    else if (io->act16) {  // the activation as bf16, read by the down projection as it is
        fk_sgemm_a16((int)N, (int)up_dim(c, l), (int)C, mlp_in16, m->w + o->up_w, (int)C, WP(o->up_b), io->pre, (int)up_dim(c, l));
        FK_TRY(mlp_act_forward_bf16(c, io->act16, io->pre, N, F, up_dim(c, l)));
        fk_sgemm_a16((int)N, (int)C, (int)F, io->act16, m->w + o->down_w, (int)F, WP(o->down_b), fo, (int)C);
    } else {
        // (pre, GELU's input, is kept only for a backward)
        if (!(fuse && c->mlp == FK_MLP_GELU && !c->gelu_exact &&
              fk_sgemm_fused((int)N, (int)F, (int)C, mlp_in, (int)C, m->w + o->up_w, (int)C, WP(o->up_b), 0.0f, FK_EP_GELU_TANH,
                             io->act, (int)F))) {
            FK_TRY(mm_forward(m, io->pre, mlp_in, o->up_w, WP(o->up_b), N, C, up_dim(c, l)));
            mlp_act_forward(c, io->act, io->pre, N, F);
        }
        if (fuse && fk_sgemm_fused((int)N, (int)C, (int)F, io->act, (int)F, m->w + o->down_w, (int)F, WP(o->down_b), 1.0f,
                                   FK_EP_NONE, io->out, (int)C))
            return FK_OK;
        FK_TRY(mm_forward(m, fo, io->act, o->down_w, WP(o->down_b), N, F, C));
    }
    if (c->post_norms) norm_forward(m, io->tmp, NULL, io->ffn_post_rstd, fo, o->ffn_post_w, -1, N);
    add_inplace(io->out, io->mid, io->tmp, N * C);
    return FK_OK;
}

// The buffers of layer l in the activations of a whole-sequence forward: training keeps each
// layer's input x_l and mid-block residual, and its other activations in its slot (its own, or the
// one slot with checkpointing or in inference, where the residual is updated in place).
static block_io acts_io(fk_model *m, int64_t l, int B, int T, bool train) {
    const fk_config *c = &m->cfg;
    fk_acts *a = m->acts;
    int64_t N = (int64_t)B * T, C = c->d_model, D = c->n_head * c->head_dim, QD = qkv_dim(c, -1);
    int64_t QKH = qk_heads(c), hd = c->head_dim, SQ = QKH * hd, UP = up_stride(c), MF = max_ffn(c);
    int64_t s = train ? slot_of(a, l) : 0;  // an inference forward may run in a training layout: slot 0
    float *x = a->resid + (train ? l * N * C : 0);
    return (block_io){.B = B, .n = T, .p0 = 0, .pos = a->pos, .x = x, .mid = train ? a->mid + l * N * C : x,
                      .out = train ? a->resid + (l + 1) * N * C : x, .ln1 = a->ln1 ? a->ln1 + s * N * C : NULL,
                      .ln1_16 = a->ln1_16 ? a->ln1_16 + s * N * C : NULL, .ln1_mean = a->ln1_mean + s * N,
                      .ln1_rstd = a->ln1_rstd + s * N, .qkv = a->qkv + s * N * QD,
                      .qk_pre = c->qk_norm ? a->qk_pre + s * N * SQ : NULL, .qk_rstd = c->qk_norm ? a->qk_rstd + s * N * QKH : NULL,
                      .probs = train && !a->att_lse ? a->probs + s * (int64_t)B * c->n_head * T * T : NULL,
                      .lse = train && a->att_lse ? a->lse + s * (int64_t)B * c->n_head * T : NULL,
                      .att = a->att ? a->att + s * N * D : NULL, .att16 = a->att16 ? a->att16 + s * N * D : NULL,
                      .attn_o = c->post_norms ? a->attn_o + s * N * C : NULL,
                      .attn_post_rstd = c->post_norms ? a->attn_post_rstd + s * N : NULL, .ln2 = a->ln2 ? a->ln2 + s * N * C : NULL,
                      .ln2_16 = a->ln2_16 ? a->ln2_16 + s * N * C : NULL, .ln2_mean = a->ln2_mean + s * N, .ln2_rstd = a->ln2_rstd + s * N, .pre = a->pre + s * N * UP,
                      .act = a->act16 ? NULL : a->act + s * N * MF, .act16 = a->act16 ? a->act16 + s * N * MF : NULL, .ffn_o = c->post_norms ? a->ffn_o + s * N * C : NULL,
                      .ffn_post_rstd = c->post_norms ? a->ffn_post_rstd + s * N : NULL, .tmp = a->tmp,
                      .moe = fk_moe_slot_at(&a->moe, s), .scratch = a->scratch, .nthr = a->nthr};
}

// Final norm, LM head and final soft-cap of N rows x (N, C) into logits (N, V); rowmax (N) keeps
// each row's largest capped logit (NULL: not kept).
static fk_status head_forward(fk_model *m, float *logits, float *lnf, float *mean, float *rstd, const float *x, float *rowmax,
                              int64_t N) {
    const fk_config *c = &m->cfg;
    norm_forward(m, lnf, mean, rstd, x, m->lnf_w, m->lnf_b, N);
    FK_TRY(mm_forward(m, logits, lnf, m->lm_head, WP(m->lm_head_b), N, c->d_model, c->vocab_size));
    if (c->final_softcap > 0) fk_softcap_forward(logits, rowmax, N, c->vocab_size, c->final_softcap);
    if (m->vocab_real > 0) fk_vocab_mask_forward(logits, rowmax, N, c->vocab_size, m->vocab_real);  // padding rows
    return FK_OK;
}

// Checks a batch's tokens, targets and teacher rows against the vocabulary.
// ids_used: the teacher's ids must be in the vocabulary (not for ULD, which reads only the p).
static fk_status check_batch(const fk_config *c, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher,
                             bool ids_used, int64_t N) {
    int64_t V = c->vocab_size;
    for (int64_t i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return fk_error(FK_ERR_ARG, "forward: token %d at position %lld is outside the vocabulary (size %lld)",
                            tokens[i], (long long)i, (long long)V);
        if (targets && targets[i] >= V)
            return fk_error(FK_ERR_ARG, "forward: target %d at position %lld is outside the vocabulary (size %lld)",
                            targets[i], (long long)i, (long long)V);
    }
    if (teacher)
        for (int64_t i = 0; i < N; i++) {
            if (teacher->row[i + 1] < teacher->row[i])
                return fk_error(FK_ERR_ARG, "forward: teacher rows are not increasing at position %lld", (long long)i);
            for (int64_t e = teacher->row[i]; e < teacher->row[i + 1]; e++)
                if ((ids_used && (teacher->ids[e] < 0 || teacher->ids[e] >= V)) || !(teacher->p[e] >= 0))
                    return fk_error(FK_ERR_ARG, "forward: teacher entry %lld at position %lld (id %d, p %g) is invalid for vocabulary %lld",
                                    (long long)e, (long long)i, teacher->ids[e], teacher->p[e], (long long)V);
        }
    return FK_OK;
}

fk_status fk_model_forward(fk_model *m, const int32_t *tokens, const int32_t *targets, int B, int T, bool train, float *loss) {
    return fk_model_forward_soft(m, tokens, targets, NULL, 1.0f, B, T, train, loss, NULL);
}

fk_status fk_model_forward_soft(fk_model *m, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher,
                                float lambda, int B, int T, bool train, float *loss, float *fusion_loss) {
    return fk_model_forward_objective(m, tokens, targets, teacher, lambda, FK_OBJECTIVE_CE, B, T, train, loss, fusion_loss);
}

// The ULD scratch for the batch's longest teacher row (at least 1: an empty row is a one-hot).
static fk_status uld_scratch(fk_acts *a, const fk_sparse_dist *t, int64_t N) {
    int64_t k = 1;
    for (int64_t i = 0; i < N; i++) k = t->row[i + 1] - t->row[i] > k ? t->row[i + 1] - t->row[i] : k;
    if (k <= a->uld_k) return FK_OK;
    free(a->uld_idx);
    free(a->uld_t);
    a->uld_idx = malloc((size_t)(a->nthr * k) * sizeof *a->uld_idx);
    a->uld_t = malloc((size_t)(a->nthr * k) * sizeof *a->uld_t);
    a->uld_k = a->uld_idx && a->uld_t ? k : 0;
    return a->uld_k ? FK_OK : fk_error(FK_ERR_NOMEM, "out of memory (ULD scratch for teacher rows of %lld entries)", (long long)k);
}

fk_status fk_model_forward_objective(fk_model *m, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher,
                                     float lambda, fk_objective objective, int B, int T, bool train, float *loss,
                                     float *fusion_loss) {
    const fk_config *c = &m->cfg;
    if (B < 1 || T < 1) return fk_error(FK_ERR_ARG, "forward: empty batch %d x %d", B, T);
    if (T > c->max_seq) return fk_error(FK_ERR_ARG, "forward: sequence length %d exceeds the model's context %lld", T, (long long)c->max_seq);
    if (train && !targets) return fk_error(FK_ERR_ARG, "forward: training needs targets");
    bool uld = teacher && objective == FK_OBJECTIVE_ULD;
    if (uld && c->final_softcap > 0)
        return fk_error(FK_ERR_ARG, "forward: objective uld on a model with final-logit soft-capping (%g) is not supported", c->final_softcap);
    int64_t N = (int64_t)B * T, C = c->d_model, V = c->vocab_size;
    FK_TRY(check_batch(c, tokens, targets, teacher, !uld, N));
    FK_TRY(acts_alloc(m, B, T, train));
    FK_TRY(rope_ensure(m, 0, T));
    fk_acts *a = m->acts;
    memcpy(a->tokens, tokens, (size_t)N * sizeof(int32_t));
    for (int64_t i = 0; i < N; i++) { a->pos[i] = (int32_t)(i % T); a->targets[i] = targets ? targets[i] : -1; }

    FK_TRY(embed_forward(m, a->resid, a->tokens, a->pos, N));
    if (m->hook) m->hook(m->hook_user, -1, a->resid, NULL, NULL, N);
    for (int64_t l = 0; l < c->n_layer; l++) {
        block_io io = acts_io(m, l, B, T, train);
        FK_TRY(block_forward(m, l, &io));
        if (m->hook) m->hook(m->hook_user, (int)l, io.out, io.att, c->ffn[l] > 0 ? io.act : NULL, N);
    }
    FK_TRY(head_forward(m, a->logits, a->lnf, a->lnf_mean, a->lnf_rstd, a->resid + (train ? c->n_layer * N * C : 0), a->lmax, N));
    a->have_probs = false;
    a->have_logits = !train;
    a->have_teacher = teacher != NULL;
    a->have_row_w = false;
    if (teacher) { a->teacher = *teacher; a->lambda = lambda; a->objective = objective; }
    if (targets) {
        a->n_scored = fk_soft_crossentropy_forward(a->losses, teacher && !uld ? a->flosses : NULL, a->logits, a->targets,
                                                   uld ? NULL : teacher, N, V, train);
        if (uld) {  // on the probabilities (train) or the logits
            FK_TRY(uld_scratch(a, teacher, N));
            fk_uld_forward(a->flosses, a->logits, a->targets, teacher, N, V, train, a->uld_idx, a->uld_t, a->uld_k, a->nthr);
        }
        a->have_probs = train;
        double sum = 0, fsum = 0;
        for (int64_t i = 0; i < N; i++) sum += a->losses[i];
        if (teacher)
            for (int64_t i = 0; i < N; i++) fsum += a->flosses[i];
        float mean = a->n_scored > 0 ? (float)(sum / (double)a->n_scored) : 0.0f;
        float fmean = a->n_scored > 0 ? (float)(fsum / (double)a->n_scored) : 0.0f;
        if (fusion_loss) *fusion_loss = teacher ? fmean : mean;
        if (teacher) mean = lambda * mean + (1 - lambda) * fmean;
        if (loss) *loss = mean;
        if (!isfinite(mean)) {
            for (int64_t i = 0; i < N; i++)
                if (!isfinite(a->losses[i]))
                    return fk_error(FK_ERR_NUMERIC, "loss is %s at batch row %lld, position %lld",
                                    isnan(a->losses[i]) ? "NaN" : "Inf", (long long)(i / T), (long long)(i % T));
            return fk_error(FK_ERR_NUMERIC, "loss is not finite");
        }
    }
    return FK_OK;
}

const float *fk_model_logits(const fk_model *m) { return m->acts && m->acts->have_logits ? m->acts->logits : NULL; }
const float *fk_model_token_losses(const fk_model *m) { return m->acts ? m->acts->losses : NULL; }

// The gradient of layer l's branch output before its post-norm (Gemma 2/3) from the residual's,
// in a->tmp (free in the backward); without post-norms, the residual's gradient itself. out and
// rstd: the branch's saved outputs and scales for all layers (NULL without post-norms).
static const float *post_norm_backward(fk_model *m, fk_acts *a, const float *out, const float *rstd, int64_t w, int64_t l, int64_t N) {
    if (!m->cfg.post_norms) return a->dresid;
    int64_t C = m->cfg.d_model, s = slot_of(a, l);
    zero(a->tmp, N * C);
    norm_backward(m, a->tmp, a->dresid, out + s * N * C, NULL, rstd + s * N, w, -1, N);
    return a->tmp;
}

fk_status fk_model_weight_rows(fk_model *m, const float *w) {
    fk_acts *a = m->acts;
    if (!a || !a->train || !a->have_probs || a->have_teacher)
        return fk_error(FK_ERR_ARG, "weighting rows: no training forward without a teacher to differentiate");
    int64_t N = (int64_t)a->B * a->T;
    if (a->row_w_n < N) {
        float *p = realloc(a->row_w, (size_t)N * sizeof *p);
        if (!p) return fk_error(FK_ERR_NOMEM, "out of memory");
        a->row_w = p;
        a->row_w_n = N;
    }
    for (int64_t i = 0; i < N; i++)
        if (!isfinite(w[i])) return fk_error(FK_ERR_NUMERIC, "weighting rows: weight %g at row %lld is not finite", w[i], (long long)i);
    memcpy(a->row_w, w, (size_t)N * sizeof *w);
    a->have_row_w = true;
    return FK_OK;
}

// Over 80 lines: the loss's gradient, then every layer's in reverse order, in one pass as the forward.
fk_status fk_model_backward(fk_model *m, float grad_scale) {
    fk_acts *a = m->acts;
    if (!a || !a->train || !a->have_probs) return fk_error(FK_ERR_ARG, "backward: no training forward with targets to differentiate");
    FK_TRY(fk_model_alloc_grads(m));
    const fk_config *c = &m->cfg;
    int B = a->B, T = a->T;
    int64_t N = (int64_t)B * T, C = c->d_model, V = c->vocab_size, D = c->n_head * c->head_dim, QD = qkv_dim(c, -1);
    int64_t MF = max_ffn(c), QKH = qk_heads(c);
    float sc = att_scale(c);
    a->have_probs = false;  // the buffer now becomes dlogits
    a->have_logits = false;
    float scale = a->have_row_w ? grad_scale : a->n_scored > 0 ? grad_scale / (float)a->n_scored : 0.0f;
    if (a->have_teacher && a->objective == FK_OBJECTIVE_ULD)
        fk_uld_backward(a->logits, a->targets, &a->teacher, a->lambda, N, V, scale, a->uld_idx, a->uld_t, a->uld_k, a->nthr);
    else if (c->final_softcap > 0)
        fk_softcap_crossentropy_backward(a->logits, a->lmax, a->targets, a->have_teacher ? &a->teacher : NULL, a->lambda, N, V,
                                         scale, c->final_softcap, a->scratch, a->nthr);
    else
        fk_soft_crossentropy_backward(a->logits, a->targets, a->have_teacher ? &a->teacher : NULL, a->lambda, N, V, scale);
    if (a->have_row_w)  // the rows' gradients are linear in their loss: weighted after the fact
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < V; j++) a->logits[i * V + j] *= a->row_w[i];
    a->have_row_w = false;
    if (m->vocab_real > 0) fk_vocab_mask_backward(a->logits, N, V, m->vocab_real);
    // every op's backward adds into its input gradients: each buffer is zeroed before its first use,
    // or its first writer overwrites it (the products' dinp_beta 0)
    fk_matmul_backward_beta(a->dln, m->g + m->lm_head, GP(m->lm_head_b), a->logits, a->lnf, m->w + m->lm_head, N, C, V, 0);
    zero(a->dresid, N * C);
    norm_backward(m, a->dresid, a->dln, a->resid + c->n_layer * N * C, a->lnf_mean, a->lnf_rstd, m->lnf_w, m->lnf_b, N);
    for (int64_t l = c->n_layer - 1; l >= 0; l--) {
        const fk_layer_offsets *o = &m->layer[l];
        int64_t F = c->ffn[l], UP = up_dim(c, l), H = fk_config_heads(c, l), Dl = H * c->head_dim, QDl = qkv_dim(c, l);
        if (a->ckpt) {  // the layer's activations again, from its kept input (tmp and scratch are free here)
            block_io io = acts_io(m, l, B, T, true);
            FK_TRY(block_forward(m, l, &io));
        }
        int64_t s = slot_of(a, l);
        float *x = a->resid + l * N * C, *mid = a->mid + l * N * C;
        float *ln1 = a->ln1 ? a->ln1 + s * N * C : NULL, *qkv = a->qkv + s * N * QD, *att = a->att ? a->att + s * N * D : NULL;
        float *ln2 = a->ln2 ? a->ln2 + s * N * C : NULL;
        const uint16_t *ln1_16 = a->ln1_16 ? a->ln1_16 + s * N * C : NULL, *ln2_16 = a->ln2_16 ? a->ln2_16 + s * N * C : NULL;
        float *pre = a->pre + s * N * up_stride(c), *act = a->act ? a->act + s * N * MF : NULL;
        float *probs = a->att_lse ? NULL : a->probs + s * (int64_t)B * c->n_head * T * T;
        const float *lse = a->att_lse ? a->lse + s * (int64_t)B * c->n_head * T : NULL;
        // MLP branch: out = mid + [post-norm](down(act(up(norm2(mid))))); with a parallel residual the
        // MLP's input gradient waits in tmp (no post-norms then) until the attention branch has read
        // dresid as its output's gradient, and goes to norm2(x) or, shared, joins norm1's
        bool parallel = c->residual != FK_RESID_SEQUENTIAL;
        float *dmlp_in = parallel ? a->tmp : a->dln;
        const float *dfo = post_norm_backward(m, a, a->ffn_o, a->ffn_post_rstd, o->ffn_post_w, l, N);
        if (c->moe[l]) {  // experts, router, shared gate (sequential, no post-norms: tmp is free); dfo becomes the dense FFN's
            zero(dmlp_in, N * C);
            fk_moe_slot ms = fk_moe_slot_at(&a->moe, s);
            dfo = fk_moe_backward(m, l, &ms, &a->moe, dfo, ln2, dmlp_in, a->tmp, N);
        }
        if (F > 0) {
            if (a->act16) {  // the activation kept as bf16: the two products read it as it is, then the bias's gradient
                fk_sgemm_backward_a16((int)N, (int)F, (int)C, dfo, a->act16 + s * N * MF, m->w + o->down_w, 0, a->dact, m->g + o->down_w);
                if (o->down_b >= 0) fk_matmul_backward_beta(NULL, NULL, GP(o->down_b), dfo, NULL, NULL, N, F, C, 0);
            } else
                fk_matmul_backward_beta(a->dact, m->g + o->down_w, GP(o->down_b), dfo, act, m->w + o->down_w, N, F, C, 0);
            zero(a->dpre, N * UP);
            mlp_act_backward(c, a->dpre, pre, a->dact, N, F);
            // (a MoE layer's experts have started dmlp_in: added to; else overwritten)
            if (ln1_16) {  // act16 mode (no MoE layers): the norm's output as bf16
                fk_sgemm_backward_a16((int)N, (int)C, (int)UP, a->dpre, c->residual == FK_RESID_PARALLEL_SHARED ? ln1_16 : ln2_16,
                                      m->w + o->up_w, 0, dmlp_in, m->g + o->up_w);
                if (o->up_b >= 0) fk_matmul_backward_beta(NULL, NULL, GP(o->up_b), a->dpre, NULL, NULL, N, C, UP, 0);
            } else
                fk_matmul_backward_beta(dmlp_in, m->g + o->up_w, GP(o->up_b), a->dpre,
                                        c->residual == FK_RESID_PARALLEL_SHARED ? ln1 : ln2, m->w + o->up_w, N, C, UP, c->moe[l] ? 1 : 0);
        }
        if (!parallel) norm_backward(m, a->dresid, a->dln, mid, a->ln2_mean + s * N, a->ln2_rstd + s * N, o->ln2_w, o->ln2_b, N);
        // attention branch: mid = x + [post-norm](o(attention(rope(qknorm(qkv(norm1(x)))))))
        const float *dao = post_norm_backward(m, a, a->attn_o, a->attn_post_rstd, o->attn_post_w, l, N);
        if (a->att16) {  // attention's output kept as bf16: the two products read it as it is, then the bias's gradient
            fk_sgemm_backward_a16((int)N, (int)Dl, (int)C, dao, a->att16 + s * N * D, m->w + o->o_w, 0, a->datt, m->g + o->o_w);
            if (o->o_b >= 0) fk_matmul_backward_beta(NULL, NULL, GP(o->o_b), dao, NULL, NULL, N, Dl, C, 0);
        } else
            fk_matmul_backward_beta(a->datt, m->g + o->o_w, GP(o->o_b), dao, att, m->w + o->o_w, N, Dl, C, 0);
        zero(a->dqkv, N * QDl);
        float slopes[FK_LIM_HEADS];
        if (lse) {  // the probabilities again from the forward's log-sum-exp, on the tiles
            if (!fk_attention_backward_amx(a->dqkv, a->datt, qkv, NULL, lse, alibi_slopes(c, slopes), B, T, H, c->n_kv_head,
                                           c->head_dim, sc, c->attn_softcap, layer_window(c, l), a->nthr))
                return fk_error(FK_ERR_NOMEM, "out of memory for the bf16 attention kernel's buffers (layer %lld)", (long long)l);
        } else if (!fk_attention_backward_amx(a->dqkv, a->datt, qkv, probs, NULL, NULL, B, T, H, c->n_kv_head, c->head_dim, sc,
                                              c->attn_softcap, layer_window(c, l), a->nthr))
            fk_attention_backward(a->dqkv, a->datt, qkv, probs, B, T, H, c->n_kv_head, c->head_dim, sc, c->attn_softcap,
                                  layer_window(c, l), a->scratch, a->nthr);
        if (c->pos == FK_POS_ROPE) {
            const float *cs, *sn;
            layer_rope(m, l, &cs, &sn);
            fk_rope_apply(a->dqkv, cs, sn, a->pos, N, H, c->n_kv_head, c->head_dim, fk_config_rotary_dim(c), -1.0f);
        }
        if (c->qk_norm) {
            fk_qk_groups G = qk_groups(c, H);
            fk_qknorm_backward(a->dqkv, m->g + o->q_norm_w, m->g + o->k_norm_w, a->qk_pre + s * N * QKH * c->head_dim,
                               m->w + o->q_norm_w, m->w + o->k_norm_w, a->qk_rstd + s * N * QKH, N, &G, c->norm_offset);
        }
        if (c->clip_qkv > 0) fk_clamp_backward(a->dqkv, qkv, N * QDl, c->clip_qkv);  // qkv: clamped, neither rotated nor normed
        if (ln1_16) {
            fk_sgemm_backward_a16((int)N, (int)C, (int)QDl, a->dqkv, ln1_16, m->w + o->qkv_w, 0, a->dln, m->g + o->qkv_w);
            if (o->qkv_b >= 0) fk_matmul_backward_beta(NULL, NULL, GP(o->qkv_b), a->dqkv, NULL, NULL, N, C, QDl, 0);
        } else
            fk_matmul_backward_beta(a->dln, m->g + o->qkv_w, GP(o->qkv_b), a->dqkv, ln1, m->w + o->qkv_w, N, C, QDl, 0);
        if (c->residual == FK_RESID_PARALLEL_SHARED) add_inplace(a->dln, a->dln, a->tmp, N * C);
        norm_backward(m, a->dresid, a->dln, x, a->ln1_mean + s * N, a->ln1_rstd + s * N, o->ln1_w, o->ln1_b, N);
        if (c->residual == FK_RESID_PARALLEL)
            norm_backward(m, a->dresid, a->tmp, x, a->ln2_mean + s * N, a->ln2_rstd + s * N, o->ln2_w, o->ln2_b, N);
        if (m->grad_hook) m->grad_hook(m->grad_hook_user, (int)l);  // layer l's weight gradients are final
    }
    if (c->emb_scale > 0) scale_inplace(a->dresid, c->emb_scale, N * C);
    fk_encoder_backward(m->g + m->tok_emb, GP(m->pos_emb), a->dresid, a->tokens, a->pos, N, C);
    return FK_OK;
}

bool fk_model_layer_range(const fk_model *m, int l, int64_t *lo, int64_t *hi) {
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "layers.%d.", l);
    int64_t a = -1, b = -1;
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        if (strncmp(p->name, prefix, (size_t)n) != 0) continue;
        if (a < 0 || p->offset < a) a = p->offset;
        if (p->offset + p->numel > b) b = p->offset + p->numel;
    }
    if (a < 0) return false;
    int64_t held = 0;  // one run: the layer's entries fill [a, b), and no other table entry lies in it
    for (int i = 0; i < m->n_params; i++) {
        const fk_param *p = &m->params[i];
        bool mine = strncmp(p->name, prefix, (size_t)n) == 0;
        if (mine) held += p->numel;
        else if (p->offset < b && p->offset + p->numel > a) return false;
    }
    if (held != b - a) return false;
    *lo = a, *hi = b;
    return true;
}

// ================================================================== KV-cache inference

struct fk_kv_cache {
    int64_t cap_tokens;    // rows the row arena holds
    int64_t len;           // tokens cached
    float *k, *v;          // (L, max_seq, KVH*hd): the two halves of one cache arena
    size_t cache_bytes;    // of the cache arena (lazily zeroed pages: a context never reached costs nothing)
    float *rows;           // the row arena: every buffer below
    float *x, *ln, *ln2, *qkv, *att, *tmp, *pre, *act, *rstd, *scratch;   // ln2: the parallel residual's MLP norm
    int32_t *pos;
    fk_moe_bufs moe;       // MoE layers: one slot
    int nthr;              // threads the scratch has slices for
    int64_t bytes;
};

static void kv_free(fk_kv_cache *kv) {
    if (!kv) return;
    fk_free_pages(kv->k, kv->cache_bytes);
    free(kv->rows);
    free(kv);
}

// Lays out the row buffers of steps of up to n tokens in the row arena (base NULL: counts only);
// returns its floats. The attention scratch is a row block over the whole context per thread.
static int64_t kv_layout(fk_kv_cache *kv, const fk_config *c, int64_t n, float *base) {
    int64_t C = c->d_model, off = 0, blk = n < FK_ATT_BLK ? n : FK_ATT_BLK;
#define CARVE(field, type, count) do { kv->field = base ? (type *)(base + off) : NULL; off += ((count) + 15) & ~(int64_t)15; } while (0)
    CARVE(x, float, n * C); CARVE(ln, float, n * C); CARVE(ln2, float, c->residual == FK_RESID_PARALLEL ? n * C : 0);
    CARVE(qkv, float, n * qkv_dim(c, -1));
    CARVE(att, float, n * c->n_head * c->head_dim); CARVE(tmp, float, n * C); CARVE(pre, float, n * up_stride(c));
    CARVE(act, float, n * max_ffn(c)); CARVE(rstd, float, n); CARVE(pos, int32_t, n);
    CARVE(scratch, float, kv->nthr * blk * c->max_seq);
#undef CARVE
    return fk_moe_layout(&kv->moe, c, 1, n, false, base, off);
}

// Makes room for steps of n tokens: the cache arena once, the row arena (re)laid out for n rows.
static fk_status kv_alloc(fk_model *m, int64_t n) {
    const fk_config *c = &m->cfg;
    fk_kv_cache *kv = m->kv;
    int nthr = omp_get_max_threads();
    if (kv && kv->cap_tokens >= n && kv->nthr >= nthr) return FK_OK;
    if (!kv) {
        m->kv = kv = calloc(1, sizeof *kv);
        if (!kv) return fk_error(FK_ERR_NOMEM, "out of memory");
        size_t half = (size_t)(c->n_layer * c->max_seq * c->n_kv_head * c->head_dim) * sizeof(float);
        kv->cache_bytes = 2 * half;
        kv->k = fk_alloc_pages(kv->cache_bytes);
        if (!kv->k) {
            kv_free(kv); m->kv = NULL;
            return fk_error(FK_ERR_NOMEM, "cannot allocate the KV cache (%zu MiB)", 2 * half >> 20);
        }
        kv->v = kv->k + half / sizeof(float);
    }
    if (n < kv->cap_tokens) n = kv->cap_tokens;
    free(kv->rows);
    kv->nthr = nthr;
    int64_t floats = kv_layout(kv, c, n, NULL);
    kv->rows = fk_calloc_aligned((size_t)floats * sizeof(float));
    if (!kv->rows) {
        kv_free(kv); m->kv = NULL;
        return fk_error(FK_ERR_NOMEM, "cannot allocate the KV-cache step's buffers for %lld tokens (%lld MiB)", (long long)n,
                        (long long)(floats * 4 >> 20));
    }
    kv_layout(kv, c, n, kv->rows);
    kv->cap_tokens = n;
    kv->bytes = (int64_t)kv->cache_bytes + floats * (int64_t)sizeof(float);
    return FK_OK;
}

fk_status fk_model_step(fk_model *m, const int32_t *tokens, int n, int pos, float *logits) {
    const fk_config *c = &m->cfg;
    if (n < 1) return fk_error(FK_ERR_ARG, "step: no tokens");
    if ((int64_t)pos + n > c->max_seq)
        return fk_error(FK_ERR_ARG, "step: position %d + %d tokens exceeds the model's context %lld", pos, n, (long long)c->max_seq);
    FK_TRY(kv_alloc(m, n));
    FK_TRY(rope_ensure(m, pos, (int64_t)pos + n));
    fk_kv_cache *kv = m->kv;
    if (pos > kv->len)  // earlier positions keep their keys and values; later ones are dropped
        return fk_error(FK_ERR_ARG, "step: position %d but the cache holds %lld tokens", pos, (long long)kv->len);
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return fk_error(FK_ERR_ARG, "step: token %d is outside the vocabulary (size %lld)", tokens[i], (long long)c->vocab_size);
        kv->pos[i] = pos + i;
    }
    int64_t C = c->d_model, KVD = c->n_kv_head * c->head_dim, S = c->max_seq, total = pos + n;
    FK_TRY(embed_forward(m, kv->x, tokens, kv->pos, n));
    for (int64_t l = 0; l < c->n_layer; l++) {
        // rows updated in place; ln doubles as the projections' outputs before their post-norms
        block_io io = {.B = 1, .n = n, .p0 = pos, .pos = kv->pos, .x = kv->x, .mid = kv->x, .out = kv->x, .ln1 = kv->ln,
                       .ln1_rstd = kv->rstd, .qkv = kv->qkv, .att = kv->att, .attn_o = kv->ln, .attn_post_rstd = kv->rstd,
                       .ln2 = c->residual == FK_RESID_PARALLEL ? kv->ln2 : kv->ln, .ln2_rstd = kv->rstd, .pre = kv->pre, .act = kv->act, .ffn_o = kv->ln,
                       .ffn_post_rstd = kv->rstd, .tmp = kv->tmp, .kc = kv->k + l * S * KVD, .vc = kv->v + l * S * KVD,
                       .moe = kv->moe.at0, .scratch = kv->scratch, .nthr = kv->nthr};
        FK_TRY(block_forward(m, l, &io));
    }
    kv->len = total;
    float rstd;
    FK_TRY(head_forward(m, logits, kv->ln, NULL, &rstd, kv->x + (int64_t)(n - 1) * C, NULL, 1));
    for (int64_t v = 0; v < c->vocab_size; v++)
        if (!isfinite(logits[v])) return fk_error(FK_ERR_NUMERIC, "step: logit %lld is not finite at position %lld", (long long)v, (long long)(total - 1));
    return FK_OK;
}

size_t fk_model_memory_bytes(const fk_model *m) {
    size_t b = (size_t)m->n_floats * sizeof(float) * (m->g ? 2 : 1);
    if (m->acts) b += (size_t)m->acts->bytes;
    if (m->kv) b += (size_t)m->kv->bytes;
    return b;
}

void fk_model_free(fk_model *m) {
    if (m->stored_release) m->stored_release(m->stored_owner);
    free(m->stored); free(m->stored_tmp); free(m->stored_bf16);
    free(m->params); free(m->layer); fk_free_pages(m->w, (size_t)m->n_floats * sizeof(float)); free(m->g);
    free(m->rope_cos); free(m->rope_sin); free(m->rope_cos_local); free(m->rope_sin_local);
    acts_free(m->acts);
    kv_free(m->kv);
    memset(m, 0, sizeof *m);
}
