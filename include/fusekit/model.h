// fusekit model: a decoder-only transformer described by orthogonal switches (fk_config),
// and its parameter table over one arena (fk_model). One code path covers GPT-2,
// Llama/Mistral/TinyLlama/SmolLM and Qwen2-style models.
#ifndef FUSEKIT_MODEL_H
#define FUSEKIT_MODEL_H

#include "fusekit/base.h"

#define FK_MAX_LAYERS 256

typedef enum { FK_NORM_LAYERNORM, FK_NORM_RMSNORM } fk_norm_kind;
typedef enum { FK_POS_LEARNED, FK_POS_ROPE, FK_POS_NONE } fk_pos_kind;
// RoPE scaling types beyond linear and llama3 (fk_config.rope_ext).
typedef enum { FK_ROPE_EXT_NONE, FK_ROPE_EXT_DYNAMIC, FK_ROPE_EXT_YARN, FK_ROPE_EXT_LONGROPE } fk_rope_ext;
#define FK_MAX_ROPE_FACTORS 512  // LongRoPE factors per list (rotary dims / 2)
// GELU: act(up x); SWIGLU: silu(gate x) * (up x); GEGLU: gelu_tanh(gate x) * (up x) (Gemma).
typedef enum { FK_MLP_GELU, FK_MLP_SWIGLU, FK_MLP_GEGLU } fk_mlp_kind;
// Where a block's two branches read and add (see fk_config.residual).
typedef enum { FK_RESID_SEQUENTIAL, FK_RESID_PARALLEL, FK_RESID_PARALLEL_SHARED } fk_residual_kind;

typedef struct {
    int64_t vocab_size;
    int64_t d_model;
    int64_t n_layer;
    int64_t n_head;
    int64_t n_kv_head;             // grouped-query attention: n_head % n_kv_head == 0
    int64_t head_dim;
    int64_t max_seq;               // context length
    int64_t ffn[FK_MAX_LAYERS];    // FFN hidden width per layer (folded models differ per layer)
    int64_t heads[FK_MAX_LAYERS];  // query heads per layer, a multiple of n_kv_head and at most n_head;
                                   // 0 = n_head (folded models may keep fewer per KV group)
    fk_norm_kind norm;
    float norm_eps;
    fk_pos_kind pos;
    float rope_theta;
    int64_t rotary_dim;            // RoPE turns the first rotary_dim dims of each query and key head, in Hugging
                                   // Face's rotate_half layout over them (pairs d, d + rotary_dim/2), and leaves
                                   // the rest as they are; 0 = head_dim. Even, <= head_dim (partial_rotary_factor,
                                   // rotary_pct; GGUF rope.dimension_count). fk_config_rotary_dim reads it.
    fk_mlp_kind mlp;               // GELU (tanh approximation unless gelu_exact), SwiGLU or GeGLU
    bool gelu_exact;               // FK_MLP_GELU only: exact GELU 0.5 x (1 + erf(x / sqrt 2)) (transformers'
                                   // "gelu"); false: the tanh approximation (gelu_new)
    bool bias_qkv;                 // q/k/v projection biases (GPT-2, Qwen2)
    bool bias_out;                 // attention output projection bias
    bool bias_mlp;                 // MLP biases
    bool bias_norm;                // LayerNorm has a bias
    bool tied;                     // LM head shares the token embedding
    bool bias_lm_head;             // the LM head has a bias (vocab_size; Phi-2)
    fk_residual_kind residual;     // SEQUENTIAL: mid = x + attn(ln1(x)), out = mid + mlp(ln2(mid));
                                   // PARALLEL: out = x + attn(ln1(x)) + mlp(ln2(x)) (GPT-NeoX use_parallel_residual);
                                   // PARALLEL_SHARED: out = x + attn(ln1(x)) + mlp(ln1(x)), no ln2 (Phi-2, Falcon-7B).
                                   // The parallel kinds have no post-norms.
    int32_t bos_id, eos_id;        // -1 when none
    // ---- Gemma family switches (all zero / false: off; the presets leave them off). A layer is:
    //   x = emb_scale * embedding                                  (no scale when 0)
    //   h = x + post_attn_norm(attention(rope(qknorm(qkv(ln1(x))))))   post-norm only with post_norms
    //   out = h + post_ffn_norm(down(act(up(ln2(h)))))
    // and the logits final_softcap * tanh(lm_head(lnf(x_L)) / final_softcap).
    float emb_scale;               // the embedding (token + learned position, if any) is multiplied by this
                                   // (Gemma: sqrt(d_model) rounded to float32); 0 = none
    float norm_offset;             // every RMSNorm (ln1, ln2, lnf, both post-norms, both QK-norms) multiplies by
                                   // (norm_offset + w): 1 for Hugging Face Gemma weights, 0 for llama.cpp's Gemma
                                   // GGUF (which stores 1 + w). Each RMSNorm uses norm_eps. Needs RMSNorm.
    bool post_norms;               // an RMSNorm (d_model weights, FK_P_ATTN_POST_W / FK_P_FFN_POST_W) on the attention
                                   // output (after o_proj) and on the FFN output (after down), before each residual
                                   // add (Gemma 2/3: post_attention_layernorm, post_feedforward_layernorm); ln2 is
                                   // then HF's pre_feedforward_layernorm
    bool qk_norm;                  // RMSNorm over head_dim of each query head (FK_P_Q_NORM_W) and each key head
                                   // (FK_P_K_NORM_W), weights shared across heads, after the projection and
                                   // before RoPE (Gemma 3, Qwen3)
    bool qk_norm_whole;            // qk_norm over each token's whole query projection and whole key projection (weights
                                   // n_head*head_dim and n_kv_head*head_dim; OLMo 2, grouped KV heads included)
    bool qk_norm_ln;               // qk_norm as StableLM 2 12B's (StableLmLayerNormPerHead, qk_layernorm): a LayerNorm
                                   // without bias (mean removed, norm_eps) over each head, every query and key head with
                                   // its own head_dim weights (FK_P_Q_NORM_W heads[l]*head_dim, FK_P_K_NORM_W n_kv_head*head_dim)
    bool no_pre_norms;             // no ln1/ln2: the branches read the residual stream itself, with post-norms (OLMo 2)
    float attn_scale;              // attention scores are (q.k) * attn_scale; 0 = 1/sqrt(head_dim)
                                   // (Gemma 2/3: query_pre_attn_scalar^-0.5 rounded to float32)
    float attn_softcap;            // scores = cap * tanh(scores / cap) after the scale, before the mask; 0 = none
                                   // (Gemma 2; transformers' Gemma 3 ignores attn_logit_softcapping)
    float final_softcap;           // logits = cap * tanh(logits / cap), also what fk_model_step returns; 0 = none
    // ALiBi and MPT's clamp (MPT, Falcon with alibi; zero: off)
    float alibi_bias_max;          // > 0: ALiBi: head h adds slope_h * (j - i) to the score of query i and key j
                                   // (after the scale and any soft-cap, before the mask), the slopes of MPT's
                                   // alibi_bias_max / llama.cpp's max_alibi_bias (fk_alibi_slopes); needs pos none
    float clip_qkv;                // > 0: the q/k/v projection's output is clamped to [-clip_qkv, clip_qkv] (MPT's
                                   // attn_config.clip_qkv; llama.cpp's clamp_kqv); needs no RoPE and no QK-norm
    int64_t sliding_window;        // W: on a layer with sliding[l] = 1, query i sees the keys j with i - W < j <= i
                                   // (W keys, itself included; transformers' sliding_window); 0 = no window anywhere
    uint8_t sliding[FK_MAX_LAYERS];// 1: layer l is a local layer: the window above, and the local RoPE table;
                                   // 0: global (full causal attention, the global table)
    float rope_theta_local;        // RoPE base of the local layers, never scaled (Gemma 3's rope_local_base_freq);
                                   // 0 = rope_theta
    float rope_scale;              // linear RoPE scaling of the global layers (every layer when none is local):
                                   // inverse frequencies / rope_scale, i.e. positions / rope_scale;
                                   // 0 or 1 = none (Gemma 3 4B+: rope_scaling {rope_type linear, factor 8})
    // Llama 3 RoPE scaling (transformers' rope_type "llama3", Llama 3.1/3.2), on when rope_orig_ctx > 0,
    // with rope_scale as its factor instead of the linear scaling above: a frequency whose wavelength
    // 2 pi / inv is above rope_orig_ctx / rope_low_freq is divided by the factor, one below
    // rope_orig_ctx / rope_high_freq is kept, and one in between is blended with
    // s = (rope_orig_ctx / wavelength - low) / (high - low): inv * ((1 - s) / factor + s).
    int64_t rope_orig_ctx;         // original_max_position_embeddings; 0 = no Llama 3 scaling
    float rope_low_freq;           // low_freq_factor
    float rope_high_freq;          // high_freq_factor (> low_freq_factor)
    // RoPE scaling of transformers' rope_type dynamic, yarn and longrope (rope_ext; FK_ROPE_EXT_NONE: none of
    // them: rope_scale and rope_orig_ctx above say linear or llama3, and must be off with them). Tables are
    // computed as transformers computes them (float32 inverse frequencies of the rotary_dim dims, rd), for
    // the length n a forward reaches (T; a KV-cache step: its last position + 1):
    //   DYNAMIC  n <= rope_ext_ctx (transformers' max_position_embeddings): plain; beyond, the base
    //            theta * (factor * n / rope_ext_ctx - (factor - 1))^(rd / (rd - 2)); max_seq may exceed it
    //   YARN     inv_d = interp_d (1 - e_d) + extrap_d e_d, e_d = 1 - clamp((d - low) / (high - low), 0, 1), low and
    //            high from beta_fast, beta_slow and rope_ext_ctx (floored/ceiled unless rope_yarn_no_trunc)
    //   LONGROPE inv_d = theta^(-2d/rd) / short[d] while n <= rope_ext_ctx, / long[d] beyond
    // YARN and LONGROPE multiply cos and sin by rope_attn_factor. A KV-cache step rotates its new rows with
    // the table of its n; cached keys keep theirs (as transformers' generate does).
    int rope_ext;                  // fk_rope_ext
    float rope_ext_factor;         // factor (DYNAMIC, YARN)
    int64_t rope_ext_ctx;          // original_max_position_embeddings (YARN, LONGROPE); max_position_embeddings (DYNAMIC)
    float rope_attn_factor;        // YARN, LONGROPE: attention_factor, as transformers derives it when absent (> 0)
    float rope_beta_fast, rope_beta_slow;  // YARN (transformers' defaults 32, 1)
    bool rope_yarn_no_trunc;       // YARN: transformers' truncate false
    int32_t rope_n_factors;        // LONGROPE: rd/2 short and long factors
    float rope_short[FK_MAX_ROPE_FACTORS], rope_long[FK_MAX_ROPE_FACTORS];
    // ---- Mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE; n_expert 0: none). On a layer with moe[l] = 1
    // the FFN branch of input x (the norm's output) is
    //   p = softmax(router x) over the layer's E = experts[l] experts (float32, as transformers);
    //   the K = n_expert_used largest p_e are chosen (ties: the lower index); w_e = p_e, divided by their sum
    //   when expert_norm; y = sum over the chosen of w_e expert_e(x) + g dense(x)
    // where expert_e is an FFN of the model's mlp kind (act(up x) or act(gate x) * up x, then down), expert_ffn
    // wide, without biases; dense(x) is the layer's ordinary FFN, ffn[l] wide (0: none, as Mixtral): Qwen2-MoE's
    // shared expert; g = sigmoid(shared_gate . x) with shared_gate, else 1. Layers with moe[l] = 0 are dense
    // (Qwen2-MoE's mlp_only_layers and decoder_sparse_step). The top-k choice has no gradient (as in every
    // MoE trainer); the chosen weights, the experts, the router and the shared gate do.
    int64_t n_expert;              // experts per MoE layer as declared (num_local_experts, num_experts); 0: no MoE
    int64_t n_expert_used;         // K (num_experts_per_tok): 1..experts of every MoE layer
    int64_t expert_ffn;            // each expert's FFN width (Mixtral intermediate_size, Qwen-MoE/OLMoE moe_intermediate_size
                                   // or intermediate_size)
    bool expert_norm;              // renormalise the K chosen probabilities to sum 1 (Mixtral always; norm_topk_prob)
    bool shared_gate;              // scale the MoE layers' dense FFN by sigmoid(shared_gate . x) (Qwen2-MoE shared_expert_gate)
    uint8_t moe[FK_MAX_LAYERS];    // 1: layer l is an MoE layer
    int64_t experts[FK_MAX_LAYERS];// experts of layer l; 0 = n_expert (folded models may keep fewer per layer)
} fk_config;

// Size limits of a config (fk_config_validate): generous for real models (Llama 3.1 405B: d_model
// 16384, FFN 53248, 128 heads, context 131072; Gemma 3: vocabulary 262144, head_dim 256) and small
// enough that no size product of the engine can overflow int64 or size_t.
#define FK_LIM_VOCAB ((int64_t)1 << 24)
#define FK_LIM_DIM ((int64_t)1 << 20)     // d_model and each FFN width
#define FK_LIM_HEADS 4096                 // query and KV heads
#define FK_LIM_HEAD_DIM 4096
#define FK_LIM_SEQ ((int64_t)1 << 24)     // context length, Llama 3 original context, sliding window
#define FK_LIM_EXPERTS 1024               // experts per MoE layer (Qwen3-MoE 128, DeepSeek-V3 256)

// The config's fields, one row each: X(field, type, label, flags, lo, hi, keys)
//   type   FK_CF_I64, FK_CF_I32, FK_CF_F32, FK_CF_BOOL, FK_CF_ENUM; FK_CF_LAYERS (int64_t per layer),
//          FK_CF_LAYER_FLAGS (uint8_t per layer)
//   label  how config.json names it (merge's messages)
//   flags  FK_CF_SIZE: validate bounds it to lo..hi (hi 0: n_head), naming `keys`, the file keys it
//          comes from; FK_CF_COMPARE: models that differ in it cannot be merged (FK_CF_IF_LEARNED,
//          FK_CF_IF_ROPE: only with learned positions, with RoPE); FK_CF_SWITCH: a float that must be
//          finite and >= 0, and with FK_CF_DESCRIBE a switch fk_config_describe lists when it is on
// Rows in the order merge compares them. The fingerprint (fk_model_fingerprint) keeps its own,
// frozen layout: it is the key of caches on disk.
#define FK_CONFIG_FIELDS(X) \
    X(vocab_size, FK_CF_I64, "vocab_size", FK_CF_SIZE | FK_CF_COMPARE, 1, FK_LIM_VOCAB, "config.json vocab_size, GGUF tokens") \
    X(d_model, FK_CF_I64, "hidden_size (n_embd)", FK_CF_SIZE | FK_CF_COMPARE, 1, FK_LIM_DIM, "config.json hidden_size/n_embd, GGUF embedding_length") \
    X(n_layer, FK_CF_I64, "num_hidden_layers (n_layer)", FK_CF_SIZE | FK_CF_COMPARE, 1, FK_MAX_LAYERS, \
      "config.json num_hidden_layers/n_layer, GGUF block_count") \
    X(n_head, FK_CF_I64, "num_attention_heads (n_head)", FK_CF_SIZE | FK_CF_COMPARE, 1, FK_LIM_HEADS, \
      "config.json num_attention_heads/n_head, GGUF attention.head_count") \
    X(n_kv_head, FK_CF_I64, "num_key_value_heads", FK_CF_SIZE | FK_CF_COMPARE, 1, 0, "config.json num_key_value_heads, GGUF attention.head_count_kv") \
    X(head_dim, FK_CF_I64, "head_dim", FK_CF_SIZE | FK_CF_COMPARE, 1, FK_LIM_HEAD_DIM, "config.json head_dim, GGUF attention.key_length") \
    X(ffn, FK_CF_LAYERS, "intermediate_size (n_inner)", FK_CF_COMPARE, 0, 0, "") \
    X(heads, FK_CF_LAYERS, "fusekit_attention_heads", FK_CF_COMPARE, 0, 0, "") \
    X(norm, FK_CF_ENUM, "norm kind (layernorm/rmsnorm)", FK_CF_COMPARE, 0, 0, "") \
    X(pos, FK_CF_ENUM, "position kind (learned/rope/none)", FK_CF_COMPARE, 0, 0, "") \
    X(mlp, FK_CF_ENUM, "mlp kind (gelu/swiglu)", FK_CF_COMPARE, 0, 0, "") \
    X(gelu_exact, FK_CF_BOOL, "exact GELU (activation_function gelu)", FK_CF_COMPARE | FK_CF_DESCRIBE, 0, 0, "") \
    X(bias_qkv, FK_CF_BOOL, "q/k/v bias (attention_bias)", FK_CF_COMPARE, 0, 0, "") \
    X(bias_out, FK_CF_BOOL, "output projection bias", FK_CF_COMPARE, 0, 0, "") \
    X(bias_mlp, FK_CF_BOOL, "mlp bias", FK_CF_COMPARE, 0, 0, "") \
    X(bias_norm, FK_CF_BOOL, "norm bias", FK_CF_COMPARE, 0, 0, "") \
    X(tied, FK_CF_BOOL, "tie_word_embeddings", FK_CF_COMPARE, 0, 0, "") \
    X(bias_lm_head, FK_CF_BOOL, "LM-head bias", FK_CF_COMPARE | FK_CF_DESCRIBE, 0, 0, "") \
    X(residual, FK_CF_ENUM, "residual placement (1 parallel, 2 parallel with one norm; use_parallel_residual)", \
      FK_CF_COMPARE | FK_CF_DESCRIBE, 0, 0, "") \
    X(max_seq, FK_CF_I64, "n_positions", FK_CF_SIZE | FK_CF_COMPARE | FK_CF_IF_LEARNED, 1, FK_LIM_SEQ, \
      "config.json max_position_embeddings/n_positions, GGUF context_length") \
    X(rope_theta, FK_CF_F32, "rope_theta", FK_CF_COMPARE | FK_CF_IF_ROPE, 0, 0, "") \
    X(rotary_dim, FK_CF_I64, "rotary dims (partial_rotary_factor)", FK_CF_COMPARE | FK_CF_IF_ROPE, 0, 0, "") \
    X(norm_eps, FK_CF_F32, "rms_norm_eps (layer_norm_epsilon)", FK_CF_COMPARE, 0, 0, "") \
    X(bos_id, FK_CF_I32, "bos_token_id", 0, 0, 0, "") \
    X(eos_id, FK_CF_I32, "eos_token_id", 0, 0, 0, "") \
    X(emb_scale, FK_CF_F32, "embedding scale", FK_CF_COMPARE | FK_CF_SWITCH | FK_CF_DESCRIBE, 0, 0, "") \
    X(norm_offset, FK_CF_F32, "RMSNorm offset (1 + w)", FK_CF_COMPARE | FK_CF_SWITCH | FK_CF_DESCRIBE, 0, 0, "") \
    X(post_norms, FK_CF_BOOL, "post-norms", FK_CF_COMPARE | FK_CF_DESCRIBE, 0, 0, "") \
    X(qk_norm, FK_CF_BOOL, "QK-norm", FK_CF_COMPARE | FK_CF_DESCRIBE, 0, 0, "") \
    X(qk_norm_whole, FK_CF_BOOL, "QK-norm over whole projections", FK_CF_COMPARE | FK_CF_DESCRIBE, 0, 0, "") \
    X(qk_norm_ln, FK_CF_BOOL, "QK-norm as a LayerNorm per head (qk_layernorm)", FK_CF_COMPARE | FK_CF_DESCRIBE, 0, 0, "") \
    X(no_pre_norms, FK_CF_BOOL, "no pre-norms (post-norms only)", FK_CF_COMPARE | FK_CF_DESCRIBE, 0, 0, "") \
    X(attn_scale, FK_CF_F32, "attention scale (query_pre_attn_scalar)", FK_CF_COMPARE | FK_CF_SWITCH | FK_CF_DESCRIBE, 0, 0, "") \
    X(attn_softcap, FK_CF_F32, "attn_logit_softcapping", FK_CF_COMPARE | FK_CF_SWITCH | FK_CF_DESCRIBE, 0, 0, "") \
    X(final_softcap, FK_CF_F32, "final_logit_softcapping", FK_CF_COMPARE | FK_CF_SWITCH | FK_CF_DESCRIBE, 0, 0, "") \
    X(alibi_bias_max, FK_CF_F32, "alibi_bias_max (ALiBi)", FK_CF_COMPARE | FK_CF_SWITCH | FK_CF_DESCRIBE, 0, 0, "") \
    X(clip_qkv, FK_CF_F32, "clip_qkv", FK_CF_COMPARE | FK_CF_SWITCH | FK_CF_DESCRIBE, 0, 0, "") \
    X(sliding_window, FK_CF_I64, "sliding_window", FK_CF_COMPARE, 0, 0, "") \
    X(sliding, FK_CF_LAYER_FLAGS, "layer_types (sliding layers)", FK_CF_COMPARE, 0, 0, "") \
    X(rope_theta_local, FK_CF_F32, "rope_local_base_freq", FK_CF_COMPARE | FK_CF_SWITCH | FK_CF_DESCRIBE, 0, 0, "") \
    X(rope_scale, FK_CF_F32, "rope_scaling factor", FK_CF_COMPARE | FK_CF_SWITCH, 0, 0, "") \
    X(rope_orig_ctx, FK_CF_I64, "rope_scaling original_max_position_embeddings", FK_CF_COMPARE, 0, 0, "") \
    X(rope_low_freq, FK_CF_F32, "rope_scaling low_freq_factor", FK_CF_COMPARE, 0, 0, "") \
    X(rope_high_freq, FK_CF_F32, "rope_scaling high_freq_factor", FK_CF_COMPARE, 0, 0, "") \
    X(rope_ext, FK_CF_ENUM, "rope_scaling rope_type (dynamic/yarn/longrope)", FK_CF_COMPARE, 0, 0, "") \
    X(rope_ext_factor, FK_CF_F32, "rope_scaling factor (dynamic/yarn)", FK_CF_COMPARE | FK_CF_SWITCH, 0, 0, "") \
    X(rope_ext_ctx, FK_CF_I64, "rope_scaling original_max_position_embeddings (yarn/longrope)", FK_CF_COMPARE, 0, 0, "") \
    X(rope_attn_factor, FK_CF_F32, "rope_scaling attention_factor", FK_CF_COMPARE | FK_CF_SWITCH, 0, 0, "") \
    X(rope_beta_fast, FK_CF_F32, "rope_scaling beta_fast", FK_CF_COMPARE | FK_CF_SWITCH, 0, 0, "") \
    X(rope_beta_slow, FK_CF_F32, "rope_scaling beta_slow", FK_CF_COMPARE | FK_CF_SWITCH, 0, 0, "") \
    X(rope_yarn_no_trunc, FK_CF_BOOL, "rope_scaling truncate false", FK_CF_COMPARE, 0, 0, "") \
    X(rope_n_factors, FK_CF_I32, "rope_scaling short_factor/long_factor", FK_CF_COMPARE, 0, 0, "") \
    X(n_expert, FK_CF_I64, "num_local_experts (num_experts)", FK_CF_SIZE | FK_CF_COMPARE, 0, FK_LIM_EXPERTS, \
      "config.json num_local_experts/num_experts, GGUF expert_count") \
    X(n_expert_used, FK_CF_I64, "num_experts_per_tok", FK_CF_COMPARE, 0, 0, "") \
    X(expert_ffn, FK_CF_I64, "moe_intermediate_size (expert FFN width)", FK_CF_COMPARE, 0, 0, "") \
    X(expert_norm, FK_CF_BOOL, "norm_topk_prob", FK_CF_COMPARE, 0, 0, "") \
    X(shared_gate, FK_CF_BOOL, "shared_expert_gate", FK_CF_COMPARE, 0, 0, "") \
    X(moe, FK_CF_LAYER_FLAGS, "MoE layers (decoder_sparse_step, mlp_only_layers)", FK_CF_COMPARE, 0, 0, "") \
    X(experts, FK_CF_LAYERS, "fusekit_experts (experts per layer)", FK_CF_COMPARE, 0, 0, "")

typedef enum { FK_CF_I64, FK_CF_I32, FK_CF_F32, FK_CF_BOOL, FK_CF_ENUM, FK_CF_LAYERS, FK_CF_LAYER_FLAGS } fk_config_field_type;
enum { FK_CF_SIZE = 1u << 0, FK_CF_COMPARE = 1u << 1, FK_CF_IF_LEARNED = 1u << 2, FK_CF_IF_ROPE = 1u << 3, FK_CF_SWITCH = 1u << 4,
       FK_CF_DESCRIBE = 1u << 5 };
// One row of FK_CONFIG_FIELDS, with the field's offset in fk_config.
typedef struct {
    const char *name, *label, *keys;
    fk_config_field_type type;
    size_t offset;
    unsigned flags;
    int64_t lo, hi;
} fk_config_field;
extern const fk_config_field fk_config_fields[];
extern const int fk_config_n_fields;
// A scalar field's value as a double (FK_CF_I64, I32, F32, BOOL, ENUM); layer l of a per-layer one.
double fk_config_field_value(const fk_config *c, const fk_config_field *f, int64_t l);
// The first field flagged FK_CF_COMPARE (in table order) on which b differs from a, and the
// layer (-1 for a scalar); NULL when none does.
const fk_config_field *fk_config_diff(const fk_config *a, const fk_config *b, int64_t *layer);

// Presets; both leave every switch set and every FFN width equal.
void fk_config_gpt2(fk_config *c, int64_t vocab, int64_t d_model, int64_t n_layer, int64_t n_head, int64_t max_seq);
void fk_config_llama(fk_config *c, int64_t vocab, int64_t d_model, int64_t n_layer, int64_t n_head,
                     int64_t n_kv_head, int64_t ffn, int64_t max_seq);
// Checks every field; sizes are bounded (vocab 2^24, d_model and FFN widths 2^20, heads 4096,
// head_dim 4096, context 2^24, weights and KV cache 2^40 floats) so no size product overflows.
// FK_ERR_ARG naming the field and the config.json / GGUF keys it comes from.
fk_status fk_config_validate(const fk_config *c);
// Floats of the weight arena a config needs (an upper bound: every optional norm counted),
// overflow-checked; FK_ERR_ARG when it overflows.
fk_status fk_config_weight_floats(const fk_config *c, int64_t *floats);
bool fk_config_uniform_ffn(const fk_config *c);
// True for gated FFNs (SwiGLU, GeGLU): the up projection holds gate rows, then up rows.
bool fk_config_gated(const fk_config *c);
// Query heads of layer l (heads[l], or n_head when 0); true when every layer has n_head.
int64_t fk_config_heads(const fk_config *c, int64_t l);
bool fk_config_uniform_heads(const fk_config *c);
// Experts of layer l: 0 on a dense layer, experts[l] (or n_expert when 0) on an MoE layer.
int64_t fk_config_experts(const fk_config *c, int64_t l);
// Dims RoPE turns in each head: rotary_dim, or head_dim when it is 0.
int64_t fk_config_rotary_dim(const fk_config *c);
// The OpenBLAS core type (OPENBLAS_CORETYPE) this CPU should use when the loaded OpenBLAS did
// not recognise it and fell back to generic SSE kernels ("SkylakeX" with AVX-512, "Haswell"
// with AVX2 + FMA), or NULL when its choice is fine. OpenBLAS reads the variable once, when it
// is loaded, so a program that wants the fix sets it and restarts itself (the CLI does).
const char *fk_blas_better_core(void);

// ---- Matrix-product precision (process-wide; set it before work starts, not during).
// FP32: OpenBLAS sgemm. BF16: both operands of every model GEMM rounded to bf16 (round to nearest
// even), products accumulated and written in fp32: oneDNN's matmul where the library was built
// with oneDNN and the CPU has AVX512-BF16, otherwise emulated (the rounded operands through fp32
// sgemm, the same products in another addition order). FUSEKIT_BF16_EMULATE=1 in the environment
// or fk_matmul_force_emulation(true) forces the emulation. Element-wise ops stay fp32.
// AUTO: BF16 where it is faster than fp32 (fk_bf16_fast), FP32 elsewhere; fk_precision_resolve
// turns it into one of the two, and fk_matmul_set_precision(AUTO) sets what it resolves to.
// INT8 (frozen models only: eval, extraction, generation; training refuses it): a batch's
// products with stored quantized weights (GGUF Q4_0 .. Q8_0, the K-quants, IQ4_NL/XS) take the
// activations as 8-bit codes per 32 (fk_qmatmul_forward_q8, llama.cpp's rule; AVX512-VNNI where
// the build has it), every other product as AUTO. fk_matmul_set_precision(INT8) sets AUTO's
// precision and fk_matmul_int8(); any other value clears it.
typedef enum { FK_PRECISION_FP32, FK_PRECISION_BF16, FK_PRECISION_AUTO, FK_PRECISION_INT8 } fk_precision;
void fk_matmul_set_precision(fk_precision p);
fk_precision fk_matmul_precision(void);  // FP32 or BF16, never AUTO or INT8
bool fk_matmul_int8(void);               // set by fk_matmul_set_precision(INT8)
void fk_matmul_force_emulation(bool on);
// "fp32", "bf16", "auto" or "int8" -> *out; anything else FK_ERR_ARG naming --precision and the value.
fk_status fk_precision_parse(const char *s, fk_precision *out);
const char *fk_precision_name(fk_precision p);  // "fp32", "bf16", "auto", "int8"
// AUTO and INT8 -> BF16 when fk_bf16_fast(), else FP32 (the precision of the float products);
// FP32 and BF16 unchanged.
fk_precision fk_precision_resolve(fk_precision p);
// True when bf16 products run natively on oneDNN (built with it, the CPU has AVX512-BF16,
// emulation not forced) and are the faster path: on AMX-BF16 tiles (the CPU, the kernel and
// ONEDNN_MAX_CPU_ISA allow them; measured 2.4-3.7x fp32 OpenBLAS, one thread, bench/fk_gemm_bench)
// or on an AMD CPU's AVX512-BF16 (Zen 4: 1.74-2.02x). Intel's AVX512-BF16 without AMX ran
// 0.49-0.58x fp32 and is not.
bool fk_bf16_fast(void);
// The path products take now, in words ("bf16 (oneDNN, AMX-BF16 tiles)", ...).
const char *fk_matmul_backend(void);
bool fk_cpu_has_bf16(void);  // the CPU has AVX512-BF16
float fk_bf16_round(float f);  // f rounded to bf16 (nearest even), as a float
// Describes a config in one line ("llama-style d=512 L=8 H=8/8 ffn=1376 ...").
void fk_config_describe(const fk_config *c, char *buf, size_t n);

// Role of a tensor in the table.
typedef enum {
    FK_P_TOK_EMB, FK_P_POS_EMB,
    FK_P_LN1_W, FK_P_LN1_B, FK_P_QKV_W, FK_P_QKV_B, FK_P_O_W, FK_P_O_B,
    FK_P_LN2_W, FK_P_LN2_B, FK_P_UP_W, FK_P_UP_B, FK_P_DOWN_W, FK_P_DOWN_B,
    FK_P_LNF_W, FK_P_LNF_B, FK_P_LM_HEAD,
    FK_P_ATTN_POST_W, FK_P_FFN_POST_W,   // post-norms (cfg.post_norms), d_model each
    FK_P_Q_NORM_W, FK_P_K_NORM_W,        // QK-norm (cfg.qk_norm), head_dim each (qk_norm_whole, qk_norm_ln: more)
    FK_P_LM_HEAD_B,                      // LM-head bias (cfg.bias_lm_head), vocab_size
    FK_P_ROUTER_W,                       // MoE router (experts[l], d_model)
    FK_P_EXP_UP_W, FK_P_EXP_DOWN_W,      // one MoE expert's up (gated: gate rows, then up rows) and down, as FK_P_UP_W/DOWN_W
    FK_P_SHARED_GATE_W,                  // the shared expert's gate (1, d_model) (cfg.shared_gate)
    FK_P_COUNT
} fk_param_kind;

// One row of the parameter table. Internal layouts, all row-major:
//   qkv  (n_head*hd + 2*n_kv_head*hd, d_model): rows of q, then k, then v (one matmul)
//   up   (ffn, d_model) for GELU; (2*ffn, d_model) for SwiGLU and GeGLU: gate rows, then up rows
//   down (d_model, ffn); o (d_model, n_head*hd); linear maps compute y = x W^T + b.
typedef struct {
    char name[64];
    fk_param_kind kind;
    int layer;          // -1 for global tensors
    int expert;         // FK_P_EXP_UP_W / FK_P_EXP_DOWN_W: the expert's index in its layer; -1 otherwise
    int ndim;
    int64_t shape[2];
    int64_t numel;
    int64_t offset;     // in floats, into the arenas
    bool decay;         // AdamW weight decay applies (matrices and embeddings)
} fk_param;

typedef struct {
    int64_t ln1_w, ln1_b, qkv_w, qkv_b, o_w, o_b, ln2_w, ln2_b, up_w, up_b, down_w, down_b;  // -1: absent
    int64_t attn_post_w, ffn_post_w, q_norm_w, k_norm_w;                                       // -1: absent
    // MoE layers (cfg.moe[l]; -1 elsewhere): the router, the shared gate, and expert 0's up and down; the
    // layer's experts follow in the arena, expert e's up at exp_up_w + e * exp_up_stride and down at
    // exp_down_w + e * exp_down_stride (table entries "layers.L.mlp.experts.E.up.weight" / ".down.weight").
    // up_w/down_w (and their biases) are -1 on an MoE layer with ffn[l] == 0.
    int64_t router_w, shared_gate_w, exp_up_w, exp_down_w, exp_up_stride, exp_down_stride;
} fk_layer_offsets;

// A weight matrix of a frozen model read where its file stores it (quantized, f16, bf16 or
// f32, memory-mapped) instead of from the f32 arena: rows [row0, row0 + rows) of table entry
// `param`, each row shape[1] elements of ggml type `type` in row_bytes bytes. The forward
// passes multiply by it directly (fk_qmatmul_forward: weight tiles decoded on the fly, once per
// batch); an embedding row is decoded when looked up.
typedef struct {
    int param;             // index into fk_model.params
    int64_t row0, rows;
    uint32_t type;         // ggml type
    const void *data;      // rows * row_bytes bytes, kept valid by the model's stored_owner
    size_t row_bytes;
    int64_t rope_hd;       // > 0: rows are in llama.cpp's interleaved RoPE order within each head of
                           // rope_hd rows (GGUF row 2j+s of a head is table row s*rope_hd/2+j)
} fk_stored;

typedef struct fk_acts fk_acts;
typedef struct fk_kv_cache fk_kv_cache;

typedef struct {
    fk_config cfg;
    int n_params;
    fk_param *params;
    int64_t n_floats;              // arena size
    float *w;                      // weights arena
    float *g;                      // gradient arena (NULL until fk_model_alloc_grads)
    int64_t tok_emb, pos_emb, lnf_w, lnf_b, lm_head;   // offsets (-1: absent; lm_head == tok_emb when tied)
    int64_t lm_head_b;             // LM-head bias offset (-1: absent)
    fk_layer_offsets *layer;
    int64_t rope_len;              // positions of the RoPE tables filled so far (lazily, up to max_seq)
    int64_t rope_regime;           // which tables those are when they depend on the length (cfg.rope_ext)
    int64_t rope_cap;              // positions the tables have room for (grown with rope_len, never sized
                                   // from the declared context up front)
    float *rope_cos, *rope_sin;    // (rope_cap, head_dim/2): rope_theta, positions / rope_scale
    float *rope_cos_local, *rope_sin_local;  // the sliding layers' table (rope_theta_local, unscaled) when
                                   // it differs from the global one; NULL: the sliding layers use rope_cos/sin
    fk_acts *acts;                 // activations for the last forward
    fk_kv_cache *kv;               // generation cache
    // Optional observer of forward passes (analysis): called after the embedding with layer -1
    // (resid = x_0; att, act NULL) and after each layer l with resid = x_{l+1}, att = the
    // heads' outputs before the output projection (N, n_head * head_dim) and act = the FFN
    // activations (N, ffn[l]); N = B*T rows, row-major. On an MoE layer act is the dense (shared)
    // FFN's activations, NULL when it has none (ffn[l] == 0); the experts' are not passed. NULL: none.
    void (*hook)(void *user, int layer, const float *resid, const float *att, const float *act, int64_t N);
    void *hook_user;
    // Optional observer of the backward: called when layer l's weight gradients are complete (the
    // layers from the last to the first), e.g. to start reducing them while the rest runs. NULL: none.
    void (*grad_hook)(void *user, int layer);
    void *grad_hook_user;
    // Frozen models (fk_model_add_stored): matrices read in place; their arena rows stay
    // untouched (the arena is lazily zeroed pages, so they cost no memory). NULL / 0: none.
    fk_stored *stored;
    int n_stored;
    void *stored_owner;                   // keeps the stored data valid (a mapped file)
    void (*stored_release)(void *owner);  // called by fk_model_free
    float *stored_tmp;                    // scratch of the stored matmuls
    int64_t stored_tmp_n;
    void *stored_bf16;                    // their bf16 scratch (activations, decoded rows) under bf16
    size_t stored_bf16_bytes;
    // Padded vocabularies: the tokens of the model's tokenizer (fk_model_set_vocab_real); rows
    // vocab_real .. vocab_size-1 of the embedding and LM head are padding. 0: every row is a token.
    int64_t vocab_real;
    // Activation checkpointing (fk_model_set_checkpointing): a training forward keeps only each
    // layer's input and mid-block residual; the backward recomputes a layer's other activations
    // just before differentiating it (one more forward's work, the same gradients bit for bit).
    bool checkpoint_acts;
} fk_model;

// Builds the table and allocates zeroed weights, after checking that they fit the memory
// available (fk_mem_check: FK_ERR_NOMEM naming both figures).
fk_status fk_model_init(fk_model *m, const fk_config *cfg);
enum {
    // the caller reads the matrices as stored in a mapped file (fk_model_add_stored, a frozen GGUF
    // load): the memory check counts only the tensors that cannot be stored (norms, biases)
    FK_MODEL_INIT_STORED = 1u << 0,
};
fk_status fk_model_init_ex(fk_model *m, const fk_config *cfg, unsigned flags);
void fk_model_free(fk_model *m);
// GPT-2 initialisation: N(0, 0.02); residual output projections N(0, 0.02/sqrt(2 L));
// norm weights 1, biases 0. Deterministic for a seed.
void fk_model_init_weights(fk_model *m, uint64_t seed);
fk_status fk_model_alloc_grads(fk_model *m);
void fk_model_zero_grads(fk_model *m);
const fk_param *fk_model_find_param(const fk_model *m, const char *name);

// Groups of table entries by role, for fk_model_count_params (one bit each; OR them).
enum {
    FK_PARAMS_EMBED = 1u << 0,      // token embedding, learned position embedding
    FK_PARAMS_ATTN = 1u << 1,       // q/k/v and output projections with their biases, QK-norm weights
    FK_PARAMS_FFN_UNITS = 1u << 2,  // up (gate and up) weights and biases, down weights: what an FFN unit owns
    FK_PARAMS_FFN_DOWN_B = 1u << 3, // the down projection's bias (d_model per layer, whatever the width)
    FK_PARAMS_NORMS = 1u << 4,      // the layers' norms: ln1, ln2, post-norms
    FK_PARAMS_FINAL = 1u << 5,      // the final norm and an untied LM head
    FK_PARAMS_EXPERTS = 1u << 6,    // MoE: routers, experts, shared-expert gates
    FK_PARAMS_FFN = FK_PARAMS_FFN_UNITS | FK_PARAMS_FFN_DOWN_B | FK_PARAMS_EXPERTS,  // the whole FFN
    FK_PARAMS_BLOCKS = FK_PARAMS_ATTN | FK_PARAMS_FFN | FK_PARAMS_NORMS,    // everything inside the layers
    FK_PARAMS_ALL = FK_PARAMS_BLOCKS | FK_PARAMS_EMBED | FK_PARAMS_FINAL,
};
#define FK_PARAMS_ANY_LAYER (-1)
// Elements of the table entries in the groups of `mask`, in layer `layer` (>= 0) or anywhere
// (FK_PARAMS_ANY_LAYER: every layer and the global tensors); a tied head is counted once.
int64_t fk_model_count_params(const fk_model *m, unsigned mask, int layer);
// The group (FK_PARAMS_*) a table role belongs to.
unsigned fk_param_group(fk_param_kind k);
int64_t fk_model_num_params(const fk_model *m);           // fk_model_count_params(m, FK_PARAMS_ALL, FK_PARAMS_ANY_LAYER)
// Weights in the matrix multiplies of one token, head included: the compute per token (FLOPs about 2x
// this). MoE layers count their router, shared gate and the n_expert_used experts a token runs, not
// all experts (fk_model_num_params and fk_model_count_params count every expert).
int64_t fk_model_num_matmul_params(const fk_model *m);
// Compute per token of a run over windows of ctx tokens, in FLOPs (PaLM's count, Chowdhery et al.
// 2022, appendix B): *fwd = 2 x fk_model_num_matmul_params (a multiply-add is 2 FLOPs; MoE: the
// active experts only) + per layer 2 x 2 x ctx_l x heads_l x head_dim (q.k scores and the weighted
// sum of values, each query against ctx_l keys with ctx_l = min(ctx, sliding window) on a local
// layer; no halving for the causal mask), and *train = 3 x *fwd (the backward pass twice the
// forward's). Norms, activations, softmax, RoPE and the embedding lookup, O(d_model) per token,
// are not counted. Either output may be NULL.
void fk_model_flops_per_token(const fk_model *m, int ctx, double *fwd, double *train);
// A copy of src with its own arena (weights only: no gradients, caches, hook or stored rows);
// FK_ERR_ARG for a frozen model, whose matrices are not in its arena.
fk_status fk_model_clone(fk_model *dst, const fk_model *src);

// Makes table rows [s->row0, s->row0 + s->rows) of a matrix (token embedding, qkv, o, up,
// down, LM head) read from s->data as stored, instead of from the arena. The rows of one
// entry must be covered entirely, in one or more calls, before the next forward. The model
// is then frozen: fk_model_backward and fk_model_alloc_grads refuse. FK_ERR_ARG when the
// entry is not such a matrix, the rows are out of range or already stored, or row_bytes does
// not match the type and row length.
fk_status fk_model_add_stored(fk_model *m, const fk_stored *s);
// The table entry whose floats hold arena offset off (its first or any later one), or NULL.
const fk_param *fk_model_param_of(const fk_model *m, int64_t off);
// Whether entries of this kind can be read as stored (token embedding, qkv, o, up, down, LM head).
bool fk_param_storable(fk_param_kind k);
// Hands the owner of the stored data to the model (released by fk_model_free).
void fk_model_set_stored_owner(fk_model *m, void *owner, void (*release)(void *owner));
// Copies rows [row0, row0 + rows) of table entry `param` as f32 into out (rows * shape[1]
// floats), decoding stored rows. FK_ERR_ARG when the range is outside the entry.
fk_status fk_model_read_rows(const fk_model *m, int param, int64_t row0, int64_t rows, float *out);
// Whether any weight is read as stored (the model is frozen: inference only).
bool fk_model_is_frozen(const fk_model *m);
// Padded vocabularies (Qwen2.5: 151936 rows for 151665 tokens; Phi-3: 32064 for 32011): the
// model's tokenizer has n_tokens <= vocab_size tokens; the logits of rows n_tokens.. become
// FK_LOGIT_MASKED in every forward and their gradient zero, so losses, extraction, evaluation
// and sampling are over the real tokens, as with the rows cut; the rows themselves stay (saving
// writes vocab_size back). n_tokens 0 or vocab_size: none (the default). FK_ERR_ARG outside that.
fk_status fk_model_set_vocab_real(fk_model *m, int64_t n_tokens);
// The rows that are tokens: vocab_real, or vocab_size when there is no padding.
int64_t fk_model_vocab_real(const fk_model *m);
// Bytes of weights the model reads: the arena's entries that are not stored, plus the stored
// rows' bytes.
size_t fk_model_weight_bytes(const fk_model *m);
// Whether some matrix is stored in a quantized type that --precision int8 multiplies with 8-bit
// activations (fk_qmatmul_q8_supported).
bool fk_model_has_q8_stored(const fk_model *m);

// Forward over a batch: tokens (B, T); targets (B, T) or NULL; target -1 is ignored.
// With targets, *loss gets the mean cross-entropy over scored positions.
// train=true keeps what backward needs; train=false reuses one layer's buffers.
// The logits of the last forward (train=false) are at fk_model_logits() as (B, T, V).
fk_status fk_model_forward(fk_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           bool train, float *loss);
const float *fk_model_logits(const fk_model *m);
// Forward with a teacher (knowledge fusion, distillation): the loss per position is
// lambda * CE(target) + (1 - lambda) * (-sum_v P(v) log softmax(z)(v)) over the teacher's sparse
// row P (B*T rows; an empty row counts as a one-hot on the target). *loss gets the mean of
// that, *fusion_loss the mean of the teacher term. teacher must stay valid until backward.
// teacher NULL is fk_model_forward (fusion_loss then gets the CE).
fk_status fk_model_forward_soft(fk_model *m, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher,
                                float lambda, int B, int T, bool train, float *loss, float *fusion_loss);
// How a forward learns from its teacher rows (the fusion objective; docs/fusion.md §6):
// FK_OBJECTIVE_CE, the soft cross-entropy above; FK_OBJECTIVE_ULD, Universal Logit Distillation:
// sum_{i<k} |s_(i) - t_(i)| + |R - r| between the row's k probabilities sorted decreasing (t) and
// the model's k largest (s), R and r the masses each leaves (r > 0 only for rows summing to less
// than 1). ULD does not read the rows' ids: they need not be in the model's vocabulary.
// FK_OBJECTIVE_SPAN (chunk likelihoods, fusion.md §6) is not a forward's: fk_train computes it through
// fk_teacher.span and fk_model_weight_rows; a forward given it computes CE.
typedef enum { FK_OBJECTIVE_CE = 0, FK_OBJECTIVE_ULD = 1, FK_OBJECTIVE_SPAN = 2 } fk_objective;
// fk_model_forward_soft with the fusion term given by `objective` (CE: the same call). ULD is
// refused on models with final-logit soft-capping.
fk_status fk_model_forward_objective(fk_model *m, const int32_t *tokens, const int32_t *targets, const fk_sparse_dist *teacher,
                                     float lambda, fk_objective objective, int B, int T, bool train, float *loss,
                                     float *fusion_loss);
// Backward of the last training forward; adds grad_scale * d(loss)/d(params) into m->g.
fk_status fk_model_backward(fk_model *m, float grad_scale);
// Weights the rows of the next fk_model_backward, after a training forward without a teacher:
// it then adds grad_scale * sum_i w[i] * d(loss_i)/d(params), loss_i the cross-entropy of
// position i (fk_model_token_losses), instead of the mean's gradient. w (B*T finite values)
// is copied. A loss that is any function of the positions' cross-entropies (the span objective,
// fusion.md §6) is differentiated by passing its derivatives with respect to them as w.
fk_status fk_model_weight_rows(fk_model *m, const float *w);
// Per-position cross-entropy of the last forward with targets (B*T values; 0 where ignored).
const float *fk_model_token_losses(const fk_model *m);
// The arena entries [*lo, *hi) that hold layer l's weights ("layers.<l>." in the table), when they
// are one run holding nothing else; false otherwise.
bool fk_model_layer_range(const fk_model *m, int l, int64_t *lo, int64_t *hi);

// Incremental inference with a KV cache: feeds n tokens at positions pos..pos+n-1 and writes the
// logits of the last one to `logits` (vocab_size floats). pos is how many of the cached tokens
// stay (at most all of them; 0 resets): those after it are dropped, as when a conversation's
// next prompt shares only a prefix with the cached context. Cost per token is linear in the
// context length.
fk_status fk_model_step(fk_model *m, const int32_t *tokens, int n, int pos, float *logits);
// The RoPE tables of a forward reaching length n (positions 0..n-1, rotary_dim/2 columns each), filled
// as the forward fills them: *cos/*sin the global layers', *cos_local/*sin_local the sliding layers'
// when they differ (else NULL). Valid until the next forward or step. FK_ERR_ARG without RoPE.
fk_status fk_model_rope_tables(fk_model *m, int64_t n, const float **cos, const float **sin, const float **cos_local,
                               const float **sin_local);
// Bytes the activations of a (B, T) forward would take (train: what backward needs too).
size_t fk_model_activation_bytes(const fk_model *m, int B, int T, bool train);
// Activation checkpointing for the training forwards from now on (m->checkpoint_acts): fk_model_
// activation_bytes and the next training forward then count and keep only what it needs.
void fk_model_set_checkpointing(fk_model *m, bool on);
// Bytes held by weights, gradients, activations and caches right now.
size_t fk_model_memory_bytes(const fk_model *m);

#endif
