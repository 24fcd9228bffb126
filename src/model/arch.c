// The architecture table: model families, their tensor names in Hugging Face folders and GGUF
// files, their config.json keys and the predicates that choose a family for a config (see
// arch.h). The sets list the tensors in the order the files hold them.
#include "arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SET(a) {a, (int)(sizeof a / sizeof a[0])}

// ------------------------------------------------------------------ tensor-name patterns

// GPT-2 (transformers' GPT2LMHeadModel): fused q/k/v, Conv1D weights stored transposed.
static const arch_tensor hf_gpt2[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "transformer.wte.weight"},
    {FK_P_POS_EMB, ARCH_ROWS_ALL, 0, "transformer.wpe.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "transformer.h.%d.ln_1.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.ln_1.bias"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, ARCH_T_TRANSPOSE, "transformer.h.%d.attn.c_attn.weight"},
    {FK_P_QKV_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.attn.c_attn.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, ARCH_T_TRANSPOSE, "transformer.h.%d.attn.c_proj.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.attn.c_proj.bias"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, 0, "transformer.h.%d.ln_2.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.ln_2.bias"},
    {FK_P_UP_W, ARCH_ROWS_ALL, ARCH_T_TRANSPOSE, "transformer.h.%d.mlp.c_fc.weight"},
    {FK_P_UP_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.mlp.c_fc.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, ARCH_T_TRANSPOSE, "transformer.h.%d.mlp.c_proj.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.mlp.c_proj.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "transformer.ln_f.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "transformer.ln_f.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// The Llama family (llama, mistral, qwen2, gemma*, fusekit): q/k/v and gate/up as separate
// tensors. With post-norms (Gemma 2/3) post_attention_layernorm is the attention output's norm and
// the FFN's input norm is pre_feedforward_layernorm; without, post_attention_layernorm is the latter.
static const arch_tensor hf_llama[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "model.embed_tokens.weight"},
    {FK_P_POS_EMB, ARCH_ROWS_ALL, 0, "model.embed_positions.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.bias"},
    {FK_P_QKV_W, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.bias"},
    {FK_P_QKV_W, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.bias"},
    {FK_P_Q_NORM_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.q_norm.weight"},
    {FK_P_K_NORM_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.k_norm.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.bias"},
    {FK_P_ATTN_POST_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.pre_feedforward_layernorm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.pre_feedforward_layernorm.bias"},
    {FK_P_FFN_POST_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.post_feedforward_layernorm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NO_POST, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, ARCH_T_NO_POST, "model.layers.%d.post_attention_layernorm.bias"},
    {FK_P_UP_W, ARCH_ROWS_GATE, 0, "model.layers.%d.mlp.gate_proj.weight"},
    {FK_P_UP_B, ARCH_ROWS_GATE, 0, "model.layers.%d.mlp.gate_proj.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.up_proj.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.up_proj.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.down_proj.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.down_proj.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "model.norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "model.norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// llama.cpp's gpt2: fused q/k/v in the internal (untransposed) layout.
static const arch_tensor gguf_gpt2[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "token_embd.weight"},
    {FK_P_POS_EMB, ARCH_ROWS_ALL, 0, "position_embd.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.attn_norm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_norm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_qkv.weight"},
    {FK_P_QKV_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_qkv.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.bias"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.ffn_norm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_norm.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, ARCH_T_NORM, "output_norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "output_norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "output.weight"},
};

// llama.cpp's llama, deci and gemma*: separate q/k/v (queries and keys in its interleaved RoPE
// order, except Gemma's), gate/up.
static const arch_tensor gguf_llama[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "token_embd.weight"},
    {FK_P_POS_EMB, ARCH_ROWS_ALL, 0, "position_embd.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.attn_norm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_norm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_Q, ARCH_T_ROPE | ARCH_T_QSCALE, "blk.%d.attn_q.weight"},
    {FK_P_QKV_W, ARCH_ROWS_K, ARCH_T_ROPE, "blk.%d.attn_k.weight"},
    {FK_P_QKV_W, ARCH_ROWS_V, 0, "blk.%d.attn_v.weight"},
    {FK_P_QKV_B, ARCH_ROWS_Q, ARCH_T_ROPE, "blk.%d.attn_q.bias"},
    {FK_P_QKV_B, ARCH_ROWS_K, ARCH_T_ROPE, "blk.%d.attn_k.bias"},
    {FK_P_QKV_B, ARCH_ROWS_V, 0, "blk.%d.attn_v.bias"},
    {FK_P_Q_NORM_W, ARCH_ROWS_ALL, ARCH_T_NORM | ARCH_T_QSCALE, "blk.%d.attn_q_norm.weight"},
    {FK_P_K_NORM_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.attn_k_norm.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.bias"},
    {FK_P_ATTN_POST_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.post_attention_norm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.ffn_norm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_norm.bias"},
    {FK_P_UP_W, ARCH_ROWS_GATE, 0, "blk.%d.ffn_gate.weight"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.weight"},
    {FK_P_UP_B, ARCH_ROWS_GATE, 0, "blk.%d.ffn_gate.bias"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.bias"},
    {FK_P_FFN_POST_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.post_ffw_norm.weight"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, ARCH_T_NORM, "output_norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "output_norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "output.weight"},
};

// ------------------------------------------------------------------ shared conventions

float arch_attn_scale(const fk_config *c) { return c->attn_scale > 0 ? c->attn_scale : (float)(1 / sqrt((double)c->head_dim)); }

int64_t arch_query_pre_attn_scalar(const fk_config *c) {
    double s = arch_attn_scale(c), q = nearbyint(1 / (s * s));
    return q >= 1 && q < 1e9 && (float)pow(q, -0.5) == (float)s ? (int64_t)q : 0;
}

bool arch_slides(const fk_config *c, int64_t l) { return c->sliding[l] && c->sliding_window > 0; }

bool arch_any_sliding(const fk_config *c) {
    for (int64_t l = 0; l < c->n_layer; l++)
        if (arch_slides(c, l)) return true;
    return false;
}

bool arch_rope_scaled(const fk_config *c) { return c->rope_scale > 0 && c->rope_scale != 1; }

const arch_tensor *arch_tensor_of(arch_tensor_set s, fk_param_kind k, int rows) {
    for (int i = 0; i < s.n; i++)
        if (s.t[i].kind == k && (rows < 0 || (int)s.t[i].rows == rows)) return &s.t[i];
    return NULL;
}

const arch_key *arch_key_of(const arch_family *f, arch_field field) {
    for (int i = 0; i < f->keys.n; i++)
        if (f->keys.k[i].field == field) return &f->keys.k[i];
    return NULL;
}

void arch_apply_switches(const arch_switches *s, fk_config *c) {
    c->norm = s->norm;
    c->pos = s->pos;
    c->mlp = s->mlp;
    c->bias_qkv = s->bias_qkv;
    c->bias_out = s->bias_out;
    c->bias_mlp = s->bias_mlp;
    c->bias_norm = s->bias_norm;
    c->post_norms = s->post_norms;
    c->qk_norm = s->qk_norm;
    if (s->gemma_scales) {
        c->emb_scale = c->d_model > 0 ? (float)sqrt((double)c->d_model) : 0;  // transformers: hidden_size**0.5 as a float32 tensor
        c->norm_offset = 1;                                                 // Gemma's RMSNorm scales by 1 + w
    }
}

static bool uniform_layers(const fk_config *c) { return fk_config_uniform_ffn(c) && fk_config_uniform_heads(c); }

// ------------------------------------------------------------------ Hugging Face: which model_type describes a config

// The row's switches, exactly (biases through an attention_bias key: q/k/v and output alike).
static bool switches_match(const arch_family *f, const fk_config *c) {
    const arch_switches *s = &f->sw;
    bool attn_key = arch_key_of(f, ARCH_F_ATTN_BIAS) != NULL;
    return c->norm == s->norm && c->pos == s->pos && c->mlp == s->mlp && c->bias_mlp == s->bias_mlp && c->bias_norm == s->bias_norm &&
           (attn_key ? c->bias_qkv == c->bias_out : c->bias_qkv == s->bias_qkv && c->bias_out == s->bias_out) &&
           c->post_norms == s->post_norms && c->qk_norm == s->qk_norm && (!c->gelu_exact || f->acts_exact);
}

// None of the Gemma family's scales, soft-caps, query scale, local RoPE base or sliding layers.
static bool no_gemma_switch(const fk_config *c) {
    return !(c->emb_scale > 0) && c->norm_offset == 0 && !(c->attn_scale > 0) && !(c->attn_softcap > 0) && !(c->final_softcap > 0) &&
           !(c->rope_theta_local > 0) && !arch_any_sliding(c);
}

// gpt2: no RoPE scaling, multi-head attention over d_model, one FFN width.
static bool hf_fits_gpt2(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && no_gemma_switch(c) && !arch_rope_scaled(c) && c->rope_orig_ctx == 0 && c->n_kv_head == c->n_head &&
           c->head_dim * c->n_head == c->d_model && fk_config_uniform_ffn(c);
}

// llama, qwen2: their switches (rope_scaling holds linear and Llama 3 scaling).
static bool hf_fits_llama(const arch_family *f, const fk_config *c) { return switches_match(f, c) && no_gemma_switch(c); }

// gemma, gemma2, gemma3_text: the generation's switches and what its keys can say.
static bool hf_fits_gemma(const arch_family *f, const fk_config *c) {
    if (!switches_match(f, c) || c->rope_orig_ctx > 0) return false;  // no Gemma type has Llama 3 scaling
    if (c->emb_scale != (float)sqrt((double)c->d_model) || (c->norm_offset != 0 && c->norm_offset != 1)) return false;
    bool any_local = false, scaled = arch_rope_scaled(c), sliding = arch_any_sliding(c);
    for (int64_t l = 0; l < c->n_layer; l++) any_local |= c->sliding[l] != 0;
    float theta_local = c->rope_theta_local > 0 ? c->rope_theta_local : c->rope_theta;
    // local layers without a window but with their own RoPE table: no Hugging Face layer type says that
    if (any_local && c->sliding_window == 0 && (theta_local != c->rope_theta || scaled)) return false;
    if (f->gemma == 1)
        return arch_attn_scale(c) == (float)(1 / sqrt((double)c->head_dim)) && c->attn_softcap == 0 && c->final_softcap == 0 && !sliding &&
               !scaled;
    if (arch_query_pre_attn_scalar(c) == 0) return false;
    if (f->gemma == 2) return theta_local == c->rope_theta && !scaled;
    return c->attn_softcap == 0;  // transformers' Gemma 3 has no attention soft-cap
}

// ------------------------------------------------------------------ GGUF: which llama.cpp architecture represents a config

fk_status arch_gguf_refuse(const arch_family *f, const fk_config *c) {
    if (c->rope_orig_ctx > 0)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has Llama 3 RoPE scaling, which fusekit does not export to GGUF");
    if (f && f->sw.gemma_scales) return FK_OK;
    bool post = f && f->sw.post_norms, qk = f && f->sw.qk_norm;  // what the row's own switches include
    const char *sw = c->emb_scale != 0 ? "an embedding scale"
                   : c->norm_offset != 0 ? "an RMSNorm weight offset (1 + w)"
                   : c->post_norms && !post ? "post-norms"
                   : c->qk_norm && !qk ? "QK-norm"
                   : c->attn_scale != 0 && fabsf(c->attn_scale * sqrtf((float)c->head_dim) - 1.0f) > 1e-6f ? "an attention scale other than 1/sqrt(head_dim)"
                   : c->attn_softcap != 0 ? "attention-logit soft-capping"
                   : c->final_softcap != 0 ? "final-logit soft-capping"
                   : arch_any_sliding(c) ? "sliding-window attention"
                   : c->rope_scale != 0 && c->rope_scale != 1 ? "RoPE scaling"
                   : NULL;
    if (sw)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has %s, which llama.cpp's llama, deci and gpt2 architectures do not "
                        "express (only its Gemma architectures do, with a GeGLU MLP)", sw);
    return FK_OK;
}

// The row's norm, position and MLP kinds, post-norms and QK-norm (gpt2).
static bool gguf_claims_kind(const arch_family *f, const fk_config *c) {
    return c->norm == f->sw.norm && c->pos == f->sw.pos && c->mlp == f->sw.mlp && c->post_norms == f->sw.post_norms &&
           c->qk_norm == f->sw.qk_norm;
}

// llama reads one FFN width and head count; deci one per layer.
static bool gguf_claims_llama(const arch_family *f, const fk_config *c) {
    return gguf_claims_kind(f, c) && !c->bias_norm && uniform_layers(c);
}

static bool gguf_claims_deci(const arch_family *f, const fk_config *c) {
    return gguf_claims_kind(f, c) && !c->bias_norm && !uniform_layers(c);
}

// A GeGLU model's generation: gemma3 with QK-norm, gemma2 with post-norms, else gemma.
static bool gguf_claims_gemma(const arch_family *f, const fk_config *c) {
    return c->mlp == f->sw.mlp && (c->qk_norm ? 3 : c->post_norms ? 2 : 1) == f->gemma;
}

static fk_status gguf_fits_gpt2(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
    if (c->gelu_exact)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has exact GELU (activation_function \"gelu\"); llama.cpp's gpt2 "
                        "architecture computes the tanh approximation (gelu_new), so the export would be a different model");
    const char *miss = !c->bias_norm ? "LayerNorm without bias"
                     : !c->bias_qkv || !c->bias_out || !c->bias_mlp ? "a GPT-2-style model without every linear bias"
                     : c->n_kv_head != c->n_head || !fk_config_uniform_heads(c) ? "grouped-query or per-layer attention heads with learned positions"
                     : c->head_dim * c->n_head != c->d_model ? "head_dim * n_head != d_model with learned positions"
                     : !fk_config_uniform_ffn(c) ? "per-layer FFN widths with learned positions (llama.cpp's gpt2 reads one width)"
                     : NULL;
    if (miss)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: %s has no llama.cpp architecture (gpt2 needs LayerNorm with bias, "
                        "learned positions, GELU, biases on every linear map, n_head * head_dim == d_model and one FFN width)", miss);
    return FK_OK;
}

static fk_status gguf_fits_llama(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
    for (int64_t l = 0; l < c->n_layer && c->bias_qkv; l++)
        if (fk_config_heads(c, l) * c->head_dim != c->d_model)
            return fk_error(FK_ERR_UNSUPPORTED, "gguf export: q/k/v biases with %lld query heads of %lld in layer %lld: llama.cpp "
                            "expects a q bias of d_model (%lld) values", (long long)fk_config_heads(c, l), (long long)c->head_dim,
                            (long long)l, (long long)c->d_model);
    return FK_OK;
}

static fk_status gguf_fits_deci(const arch_family *f, const fk_config *c) {
    FK_TRY(gguf_fits_llama(f, c));
    if (c->bias_mlp)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: MLP biases (e.g. from FLAP pruning) with per-layer FFN widths or head counts: "
                        "llama.cpp's deci architecture, the one that reads per-layer widths, has no FFN biases");
    return FK_OK;
}

// gemma (no post-norms), gemma2 (post-norms, soft-capping) or gemma3 (post-norms, QK-norm).
static fk_status gguf_fits_gemma(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
    float root = sqrtf((float)c->d_model);
    int gen = f->gemma;
    const char *miss = c->norm != FK_NORM_RMSNORM || c->bias_norm ? "a GeGLU model without RMSNorm (no bias)"
                     : c->pos != FK_POS_ROPE ? "a GeGLU model without RoPE"
                     : c->bias_qkv || c->bias_out || c->bias_mlp ? "linear biases"
                     : !uniform_layers(c) ? "per-layer FFN widths or head counts (llama.cpp's Gemma architectures read one of each)"
                     : fabsf(c->emb_scale - root) > 1e-6f * root ? "an embedding scale other than sqrt(d_model) (llama.cpp scales Gemma's embeddings by sqrt(n_embd))"
                     : c->qk_norm && !c->post_norms ? "QK-norm without post-norms (gemma3 has both)"
                     : !c->tied && gen != 3 ? "an untied LM head without QK-norm (llama.cpp's gemma and gemma2 reuse token_embd)"
                     : gen == 3 && c->attn_softcap != 0 ? "attention-logit soft-capping with QK-norm (gemma3 has none)"
                     : gen == 2 && (c->attn_softcap <= 0 || c->final_softcap <= 0)
                         ? "post-norms without both soft-caps (llama.cpp's gemma2 always caps attention and final logits)"
                     : gen == 2 && arch_any_sliding(c) && c->rope_scale != 0 && c->rope_scale != 1
                         ? "RoPE scaling with sliding layers in gemma2 (llama.cpp scales its sliding layers too)"
                     : gen == 1 && (c->attn_softcap != 0 || c->final_softcap != 0 || arch_any_sliding(c))
                         ? "soft-capping or sliding windows without post-norms (llama.cpp's gemma has neither)"
                     : NULL;
    if (miss)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: a Gemma-style model (GeGLU) with %s has no llama.cpp architecture (gemma, gemma2 "
                        "and gemma3 need RMSNorm, RoPE, no biases, one FFN width and head count, embeddings scaled by sqrt(d_model))", miss);
    return FK_OK;
}

// ------------------------------------------------------------------ families


// The sizes of a Llama-style config.json (the widest layer's FFN as intermediate_size), with the
// family's default context and head_dim.
#define LLAMA_SIZES(ctx, hd_how, hd) \
    {ARCH_F_D_MODEL, "hidden_size", ARCH_D_REQUIRED, 0}, {ARCH_F_FFN, "intermediate_size", ARCH_D_REQUIRED, 0}, \
    {ARCH_F_N_LAYER, "num_hidden_layers", ARCH_D_REQUIRED, 0}, {ARCH_F_N_HEAD, "num_attention_heads", ARCH_D_REQUIRED, 0}, \
    {ARCH_F_N_KV_HEAD, "num_key_value_heads", ARCH_D_N_HEAD, 0}, {ARCH_F_HEAD_DIM, "head_dim", hd_how, hd}, \
    {ARCH_F_MAX_SEQ, "max_position_embeddings", ARCH_D_VALUE, ctx}, {ARCH_F_NORM_EPS, "rms_norm_eps", ARCH_D_VALUE, 1e-6}
// rope_theta and hidden_act, then rope_scaling (def: whether a linear scale is written there), of the Llama family
#define LLAMA_ROPE(linear) \
    {ARCH_F_ROPE_THETA, "rope_theta", ARCH_D_VALUE, 1e4}, {ARCH_F_ACT, "hidden_act", ARCH_D_VALUE, 0}, \
    {ARCH_F_ROPE_SCALING, "rope_scaling", ARCH_D_VALUE, linear}
#define DROPOUT {ARCH_F_ZERO, "attention_dropout", ARCH_D_VALUE, 0}
// The Gemma keys after the sizes: the activation (hidden_activation; Gemma 1 hidden_act), RoPE base, the generation's keys
#define GEMMA_KEYS(theta) \
    {ARCH_F_ROPE_THETA, "rope_theta", ARCH_D_VALUE, theta}, {ARCH_F_GEMMA, "", ARCH_D_VALUE, 0}, \
    {ARCH_F_ATTN_BIAS, "attention_bias", ARCH_D_VALUE, 0}, DROPOUT, \
    {ARCH_F_FLAG, "use_bidirectional_attention", ARCH_D_READ_ONLY, 0}

static const arch_key keys_gpt2[] = {
    {ARCH_F_D_MODEL, "n_embd", ARCH_D_REQUIRED, 0}, {ARCH_F_N_LAYER, "n_layer", ARCH_D_REQUIRED, 0},
    {ARCH_F_N_HEAD, "n_head", ARCH_D_REQUIRED, 0}, {ARCH_F_MAX_SEQ, "n_positions", ARCH_D_NEXT, 0},
    {ARCH_F_MAX_SEQ, "n_ctx", ARCH_D_REQUIRED, 0}, {ARCH_F_FFN, "n_inner", ARCH_D_4D, 0},
    {ARCH_F_ACT, "activation_function", ARCH_D_VALUE, 0}, {ARCH_F_NORM_EPS, "layer_norm_epsilon", ARCH_D_VALUE, 1e-5},
    {ARCH_F_ZERO, "resid_pdrop", ARCH_D_VALUE, 0}, {ARCH_F_ZERO, "embd_pdrop", ARCH_D_VALUE, 0}, {ARCH_F_ZERO, "attn_pdrop", ARCH_D_VALUE, 0},
    {ARCH_F_FLAG, "scale_attn_weights", ARCH_D_VALUE, 1}, {ARCH_F_FLAG, "scale_attn_by_inverse_layer_idx", ARCH_D_READ_ONLY, 0},
};
static const arch_key keys_llama[] = {
    LLAMA_SIZES(2048, ARCH_D_SPLIT, 0), LLAMA_ROPE(1), {ARCH_F_ATTN_BIAS, "attention_bias", ARCH_D_VALUE, 0},
    {ARCH_F_FLAG, "mlp_bias", ARCH_D_VALUE, 0}, DROPOUT,
};
static const arch_key keys_qwen2[] = {
    LLAMA_SIZES(2048, ARCH_D_SPLIT, 0), LLAMA_ROPE(1), {ARCH_F_FLAG, "use_sliding_window", ARCH_D_VALUE, 0}, DROPOUT,
};
// qwen3: qwen2 with QK-norm (weight w), no q/k/v bias by default and an explicit head_dim
static const arch_key keys_qwen3[] = {
    LLAMA_SIZES(32768, ARCH_D_VALUE, 128), LLAMA_ROPE(1), {ARCH_F_ATTN_BIAS, "attention_bias", ARCH_D_VALUE, 0},
    {ARCH_F_FLAG, "use_sliding_window", ARCH_D_VALUE, 0}, DROPOUT,
};
// sliding-window attention equals full attention within the window: the window caps the context
static const arch_key keys_mistral[] = {
    LLAMA_SIZES(2048, ARCH_D_SPLIT, 0), LLAMA_ROPE(1), {ARCH_F_WINDOW_CAP, "sliding_window", ARCH_D_READ_ONLY, 0}, DROPOUT,
};
static const arch_key keys_fusekit[] = {
    LLAMA_SIZES(2048, ARCH_D_SPLIT, 0), LLAMA_ROPE(0), DROPOUT, {ARCH_F_SWITCHES, "fusekit", ARCH_D_REQUIRED, 0},
};
static const arch_key keys_gemma[] = {
    LLAMA_SIZES(8192, ARCH_D_VALUE, 256), {ARCH_F_ACT, "hidden_activation", ARCH_D_READ_ONLY, 0},
    {ARCH_F_ACT, "hidden_act", ARCH_D_VALUE, 0}, GEMMA_KEYS(1e4),
};
static const arch_key keys_gemma2[] = {LLAMA_SIZES(8192, ARCH_D_VALUE, 256), {ARCH_F_ACT, "hidden_activation", ARCH_D_VALUE, 0}, GEMMA_KEYS(1e4)};
static const arch_key keys_gemma3[] = {LLAMA_SIZES(131072, ARCH_D_VALUE, 256), {ARCH_F_ACT, "hidden_activation", ARCH_D_VALUE, 0}, GEMMA_KEYS(1e6)};

// The activations each family's modelling code computes as fusekit does (the first is written).
static const char *const acts_gelu_tanh[] = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast", NULL};
// transformers' exact (erf) GELU: "gelu" (torch's gelu) and "gelu_python" (the same formula in Python)
static const char *const acts_gelu_exact[] = {"gelu", "gelu_python", NULL};
static const char *const acts_silu[] = {"silu", NULL};
static const char *const acts_gemma[] = {"gelu_pytorch_tanh", "gelu_new", "gelu_fast", NULL};
// Gemma 1's hidden_act "gelu" is the tanh GELU in transformers
static const char *const acts_gemma1[] = {"gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu", NULL};

//                         norm               pos             mlp            qkv    out    mlp    norm   post   qk     gemma
#define SW_GPT2  {FK_NORM_LAYERNORM, FK_POS_LEARNED, FK_MLP_GELU,   true,  true,  true,  true,  false, false, false}
#define SW_LLAMA {FK_NORM_RMSNORM,   FK_POS_ROPE,    FK_MLP_SWIGLU, false, false, false, false, false, false, false}
#define SW_QWEN2 {FK_NORM_RMSNORM,   FK_POS_ROPE,    FK_MLP_SWIGLU, true,  false, false, false, false, false, false}
#define SW_QWEN3 {FK_NORM_RMSNORM,   FK_POS_ROPE,    FK_MLP_SWIGLU, false, false, false, false, false, true,  false}
#define SW_GEMMA(post, qk) {FK_NORM_RMSNORM, FK_POS_ROPE, FK_MLP_GEGLU, false, false, false, false, post, qk, true}

// The Hugging Face columns, and the GGUF columns of a row with llama.cpp's Llama tensor names.
#define HF(cls_, set_, keys_, acts_, tied_, fits_) \
    .hf_class = cls_, .hf = SET(set_), .keys = SET(keys_), .acts = acts_, .tied = tied_, .hf_fits = fits_
#define GGUF(name_, gemma_, neox_, keys_, claims_, fits_) \
    .gguf = name_, .gguf_gemma = gemma_, .gguf_neox = neox_, .gguf_t = SET(gguf_llama), .gguf_keys = keys_, .gguf_claims = claims_, .gguf_fits = fits_
#define GK_GEMMA (ARCH_GK_LLAMA | ARCH_GK_HEAD_LENGTHS | ARCH_GK_GEMMA)

// In fk_arch order for the rows that have one (fk_arch_name, config.json's architectures).
const arch_family arch_families[] = {
    {FK_ARCH_GPT2, "gpt2", NULL, 0, SW_GPT2, HF("GPT2LMHeadModel", hf_gpt2, keys_gpt2, acts_gelu_tanh, true, hf_fits_gpt2),
     .acts_exact = acts_gelu_exact, .hf_optional_prefix = "transformer.",
     .gguf = "gpt2", .gguf_t = SET(gguf_gpt2), .gguf_keys = ARCH_GK_LAYERNORM, .gguf_claims = gguf_claims_kind, .gguf_fits = gguf_fits_gpt2},
    {FK_ARCH_LLAMA, "llama", NULL, 0, SW_LLAMA, HF("LlamaForCausalLM", hf_llama, keys_llama, acts_silu, false, hf_fits_llama),
     GGUF("llama", false, false, ARCH_GK_LLAMA, gguf_claims_llama, gguf_fits_llama)},
    {FK_ARCH_QWEN2, "qwen2", NULL, 0, SW_QWEN2, HF("Qwen2ForCausalLM", hf_llama, keys_qwen2, acts_silu, false, hf_fits_llama)},
    {FK_ARCH_MISTRAL, "mistral", NULL, 0, SW_LLAMA, HF("MistralForCausalLM", hf_llama, keys_mistral, acts_silu, false, NULL)},
    // every switch in its config.json: what no other model_type describes (fk_config_arch's fallback)
    {FK_ARCH_FUSEKIT, "fusekit", NULL, 0, SW_LLAMA, HF("FusekitForCausalLM", hf_llama, keys_fusekit, NULL, false, NULL)},
    {FK_ARCH_GEMMA, "gemma", NULL, 1, SW_GEMMA(false, false), HF("GemmaForCausalLM", hf_llama, keys_gemma, acts_gemma1, true, hf_fits_gemma),
     GGUF("gemma", true, true, GK_GEMMA, gguf_claims_gemma, gguf_fits_gemma)},
    {FK_ARCH_GEMMA2, "gemma2", NULL, 2, SW_GEMMA(true, false), HF("Gemma2ForCausalLM", hf_llama, keys_gemma2, acts_gemma, true, hf_fits_gemma),
     GGUF("gemma2", true, true, GK_GEMMA, gguf_claims_gemma, gguf_fits_gemma), .gguf_swa_pattern = 2},
    // gemma3: Gemma 3 with a vision tower, whose text model is text_config (its weights under another prefix)
    {FK_ARCH_GEMMA3, "gemma3_text", "gemma3", 3, SW_GEMMA(true, true),
     HF("Gemma3ForCausalLM", hf_llama, keys_gemma3, acts_gemma, true, hf_fits_gemma),
     GGUF("gemma3", true, true, GK_GEMMA, gguf_claims_gemma, gguf_fits_gemma), .gguf_swa_pattern = 6},
    // qwen3: llama.cpp rotates it in NEOX order, as Hugging Face stores q and k
    {FK_ARCH_QWEN3, "qwen3", NULL, 0, SW_QWEN3, HF("Qwen3ForCausalLM", hf_llama, keys_qwen3, acts_silu, false, hf_fits_llama),
     GGUF("qwen3", false, true, ARCH_GK_LLAMA, gguf_claims_llama, gguf_fits_llama)},
    // llama with per-layer FFN widths and heads
    {-1, NULL, NULL, 0, SW_LLAMA, GGUF("deci", false, false, ARCH_GK_LLAMA, gguf_claims_deci, gguf_fits_deci)},
};
const int arch_n_families = (int)(sizeof arch_families / sizeof arch_families[0]);

const arch_family *arch_of(fk_arch a) {
    for (int i = 0; i < arch_n_families; i++)
        if (arch_families[i].arch == (int)a) return &arch_families[i];
    FK_ASSERT(!"fk_arch without a row in the architecture table");
    return NULL;
}

const arch_family *arch_of_gguf(const char *name, size_t n) {
    for (int i = 0; i < arch_n_families; i++) {
        const char *g = arch_families[i].gguf;
        if (g && strlen(g) == n && memcmp(g, name, n) == 0) return &arch_families[i];
    }
    return NULL;
}

const char *arch_gguf_names(void) {
    static char buf[256];
    if (buf[0]) return buf;
    size_t k = 0;
    for (int i = 0; i < arch_n_families; i++)
        if (arch_families[i].gguf && k < sizeof buf)
            k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", k ? ", " : "", arch_families[i].gguf);
    return buf;
}

const arch_family *arch_of_model_type(const char *type, bool *alias) {
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *f = &arch_families[i];
        *alias = f->model_type_alias && strcmp(f->model_type_alias, type) == 0;
        if ((f->model_type && strcmp(f->model_type, type) == 0) || *alias) return f;
    }
    return NULL;
}

const char *arch_model_type_names(void) {
    static char buf[256];
    if (buf[0]) return buf;
    size_t k = 0;
    for (int i = 0; i < arch_n_families; i++) {
        const arch_family *f = &arch_families[i];
        if (f->model_type && k < sizeof buf) k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", k ? ", " : "", f->model_type);
        if (f->model_type_alias && k < sizeof buf) k += (size_t)snprintf(buf + k, sizeof buf - k, ", %s", f->model_type_alias);
    }
    return buf;
}

// ------------------------------------------------------------------ expansion

// The arena offset of a table role in layer l (global roles ignore l); -1 when absent.
static int64_t kind_offset(const fk_model *m, fk_param_kind k, int l) {
    const fk_layer_offsets *o = l >= 0 ? &m->layer[l] : NULL;
    switch (k) {
    case FK_P_TOK_EMB: return m->tok_emb;
    case FK_P_POS_EMB: return m->pos_emb;
    case FK_P_LNF_W: return m->lnf_w;
    case FK_P_LNF_B: return m->lnf_b;
    case FK_P_LM_HEAD: return m->cfg.tied ? -1 : m->lm_head;
    case FK_P_LN1_W: return o->ln1_w;
    case FK_P_LN1_B: return o->ln1_b;
    case FK_P_QKV_W: return o->qkv_w;
    case FK_P_QKV_B: return o->qkv_b;
    case FK_P_O_W: return o->o_w;
    case FK_P_O_B: return o->o_b;
    case FK_P_LN2_W: return o->ln2_w;
    case FK_P_LN2_B: return o->ln2_b;
    case FK_P_UP_W: return o->up_w;
    case FK_P_UP_B: return o->up_b;
    case FK_P_DOWN_W: return o->down_w;
    case FK_P_DOWN_B: return o->down_b;
    case FK_P_ATTN_POST_W: return o->attn_post_w;
    case FK_P_FFN_POST_W: return o->ffn_post_w;
    case FK_P_Q_NORM_W: return o->q_norm_w;
    case FK_P_K_NORM_W: return o->k_norm_w;
    case FK_P_COUNT: break;
    }
    return -1;
}

static bool per_layer(fk_param_kind k) {
    return k != FK_P_TOK_EMB && k != FK_P_POS_EMB && k != FK_P_LNF_W && k != FK_P_LNF_B && k != FK_P_LM_HEAD;
}

// Rows [*row0, *row0 + *rows) of entry p that tensor row r of layer l holds; false when the
// tensor does not exist for this config.
static bool item_rows(const fk_config *c, const arch_tensor *r, int l, const fk_param *p, int64_t *row0, int64_t *rows) {
    if (((r->flags & ARCH_T_POST) && !c->post_norms) || ((r->flags & ARCH_T_NO_POST) && c->post_norms)) return false;
    int64_t Dq = l >= 0 ? fk_config_heads(c, l) * c->head_dim : 0, Dkv = c->n_kv_head * c->head_dim, F = l >= 0 ? c->ffn[l] : 0;
    bool gated = fk_config_gated(c);
    *row0 = 0;
    *rows = p->shape[0];
    switch (r->rows) {
    case ARCH_ROWS_ALL: return true;
    case ARCH_ROWS_Q: *rows = Dq; return true;
    case ARCH_ROWS_K: *row0 = Dq; *rows = Dkv; return true;
    case ARCH_ROWS_V: *row0 = Dq + Dkv; *rows = Dkv; return true;
    case ARCH_ROWS_GATE: *rows = F; return gated;
    case ARCH_ROWS_UP: if (gated) { *row0 = F; *rows = F; } return true;
    }
    return false;
}

typedef struct { arch_item *t; int n, cap; } item_list;

// Appends tensor row r of layer l (-1: a global tensor) when the model has it.
static fk_status add_item(item_list *L, const fk_model *m, const arch_tensor *r, int l) {
    int64_t off = kind_offset(m, r->kind, l);
    if (off < 0) return FK_OK;
    const fk_param *p = fk_model_param_of(m, off);
    FK_ASSERT(p && p->offset == off);
    arch_item it = {.param = (int)(p - m->params), .flags = r->flags};
    if (!item_rows(&m->cfg, r, l, p, &it.row0, &it.rows)) return FK_OK;
    snprintf(it.name, sizeof it.name, r->name, l);
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 64;
        arch_item *t = realloc(L->t, (size_t)cap * sizeof *t);
        if (!t) return fk_error(FK_ERR_NOMEM, "out of memory");
        L->t = t;
        L->cap = cap;
    }
    L->t[L->n++] = it;
    return FK_OK;
}

fk_status arch_items(const fk_model *m, arch_tensor_set s, arch_item **out, int *n) {
    item_list L = {0};
    fk_status st = FK_OK;
    int first = 0, last = s.n;  // the per-layer rows are [first, last)
    while (first < s.n && !per_layer(s.t[first].kind)) first++;
    while (last > first && !per_layer(s.t[last - 1].kind)) last--;
    for (int i = 0; i < first && st == FK_OK; i++) st = add_item(&L, m, &s.t[i], -1);
    for (int l = 0; l < (int)m->cfg.n_layer; l++)
        for (int i = first; i < last && st == FK_OK; i++) st = add_item(&L, m, &s.t[i], l);
    for (int i = last; i < s.n && st == FK_OK; i++) st = add_item(&L, m, &s.t[i], -1);
    if (st != FK_OK) { free(L.t); return st; }
    *out = L.t;
    *n = L.n;
    return FK_OK;
}
