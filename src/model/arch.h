// The architecture table (internal to src/model): one row per model family with its Hugging
// Face model_type and class, its llama.cpp general.architecture, the switches its files imply,
// its config.json keys and accepted activations, its GGUF key groups, the tensor-name patterns
// of both file formats, and the predicates that say whether each format represents a config.
// hf.c and gguf_model.c load, save, import and export through it and never branch on a
// family's name, so a family whose layers the engine already computes is one row here.
#ifndef FUSEKIT_MODEL_ARCH_H
#define FUSEKIT_MODEL_ARCH_H

#include "fusekit/hf.h"

// Which rows of a parameter-table entry a file tensor holds.
typedef enum {
    ARCH_ROWS_ALL,                         // the whole entry
    ARCH_ROWS_Q, ARCH_ROWS_K, ARCH_ROWS_V, // qkv's query rows (the layer's heads), key rows, value rows
    ARCH_ROWS_GATE,                        // a gated FFN's gate rows (no tensor when the FFN is not gated)
    ARCH_ROWS_UP,                          // a gated FFN's up rows; every row when it is not gated
} arch_rows;

// Conditions and conventions of one tensor (bits).
enum {
    ARCH_T_POST = 1u << 0,      // only with post-norms (cfg.post_norms)
    ARCH_T_NO_POST = 1u << 1,   // only without post-norms
    ARCH_T_TRANSPOSE = 1u << 2, // stored transposed (GPT-2's Conv1D weights)
    ARCH_T_ROPE = 1u << 3,      // GGUF: llama.cpp's interleaved RoPE row order within each head (not in a gguf_neox row)
    ARCH_T_NORM = 1u << 4,      // GGUF: an RMSNorm weight, stored plus the norm offset (Gemma)
    ARCH_T_QSCALE = 1u << 5,    // GGUF: carries an attention scale folded into the queries (Gemma): the
                                // QK-norm weight when the layer has one, else the query rows
    ARCH_T_QKV_HEADS = 1u << 6, // Hugging Face: a whole qkv entry with its rows grouped per KV head, [q of the group's
                                // heads; k_g; v_g] for each KV head g (GPT-NeoX's query_key_value: [q_h; k_h; v_h] per
                                // head; Falcon's: one group when multi-query, n_kv_head groups in its new decoder)
    ARCH_T_TWO_NORMS = 1u << 7, // only when attention and MLP run in parallel from two norms (FK_RESID_PARALLEL)
    ARCH_T_ONE_NORM = 1u << 8,  // only otherwise (Falcon: input_layernorm, post_attention_layernorm vs ln_attn, ln_mlp)
    // QK-norm as a LayerNorm per head with each head's own weights (cfg.qk_norm_ln, StableLM 2 12B)
    ARCH_T_QK_LN = 1u << 13,    // only with it; one tensor per head, the name's second %d (q_layernorm.norms.%d)
    ARCH_T_NO_QK_LN = 1u << 14, // only without it
    ARCH_T_HEAD_ROWS = 1u << 15,// GGUF: with it, the heads' weights as one (heads, head_dim) matrix, kept F32 (llama.cpp's
                                // stablelm attn_q_norm {n_embd_head, n_head}, which its converter stacks)
    // Mixture of experts. An expert role's tensor (FK_P_EXP_UP_W / FK_P_EXP_DOWN_W) holds one expert, its name
    // a pattern with a second %d for the expert, unless ARCH_T_EXPERTS says it stacks the layer's experts.
    ARCH_T_EXPERTS = 1u << 9,   // every expert of the layer in one tensor, expert-major (GGUF ffn_*_exps: ggml [cols, rows, E])
    ARCH_T_MOE = 1u << 10,      // only on MoE layers (cfg.moe[l]: the shared expert's names, Qwen2-MoE's ffn_*_shexp)
    ARCH_T_DENSE = 1u << 11,    // only on dense layers (the ordinary FFN's names, where an MoE layer's shared expert differs)
    ARCH_T_ALT = 1u << 12,      // another form of the set's expert rows (stacked for per-expert ones or the other way round),
                                // read in their place when the file has it and never written (older GGUF Mixtrals: one 2-D
                                // tensor per expert, blk.L.ffn_gate.E.weight; transformers 5's stacked experts.gate_up_proj)
};

// One file tensor: `name` is a printf pattern, with %d for the layer of a per-layer entry.
typedef struct {
    fk_param_kind kind;
    arch_rows rows;
    unsigned flags;
    const char *name;
} arch_tensor;

typedef struct {
    const arch_tensor *t;
    int n;
} arch_tensor_set;

// The switches a family sets on fk_config when its files are read, and that a config must have
// to be written as that family (with the row's own conditions, `hf_fits` / `gguf_fits`).
typedef struct {
    fk_norm_kind norm;
    fk_pos_kind pos;
    fk_mlp_kind mlp;
    bool bias_qkv, bias_out, bias_mlp, bias_norm;
    bool post_norms, qk_norm;
    bool gemma_scales;  // Gemma's embedding scale sqrt(d_model) and RMSNorm scale 1 + w (HF: norm_offset 1)
} arch_switches;

// What a config.json key of the common fields holds (arch_key.field).
typedef enum {
    ARCH_F_D_MODEL, ARCH_F_N_LAYER, ARCH_F_N_HEAD, ARCH_F_N_KV_HEAD, ARCH_F_HEAD_DIM, ARCH_F_FFN, ARCH_F_MAX_SEQ,
    ARCH_F_NORM_EPS, ARCH_F_ROPE_THETA,
    ARCH_F_ACT,       // the activation's name: the row's acts[0] written, any of acts read
    ARCH_F_SCALARS,   // (the fields above are read first, and make the config; those below then refine it)
    ARCH_F_FLAG,      // a boolean key fusekit implements only at `def`: written so, refused when it differs
    ARCH_F_ZERO,      // a number written as `def` and not read (dropout rates)
    ARCH_F_ATTN_BIAS, // a boolean that sets bias_qkv and bias_out together (attention_bias)
    ARCH_F_ROPE_SCALING, // the Llama family's rope_scaling / rope_parameters (def bit 1: a linear scale written
                         // here, else the fusekit type keeps it among its switches; ARCH_ROPE_PHI3_NAMES: rope_type
                         // "su" and "yarn" read as longrope, as Phi3Config does)
    ARCH_F_WINDOW,       // sliding_window on every layer (mistral, starcoder2, phi3; `def`: the window when the
                         // key is absent, 0: none); a window at least the context is no window
    ARCH_F_QWEN_WINDOW,  // Qwen's use_sliding_window with sliding_window, max_window_layers (`def` when absent)
                         // and layer_types: the sliding layers
    ARCH_F_USE_BIAS,     // a boolean that sets bias_qkv, bias_out and bias_mlp together (StarCoder2's use_bias)
    ARCH_F_ORIG_CTX,     // original_max_position_embeddings written at the top level (Phi-3, whose class default 4096
                         // there overrides the RoPE object's): the scaling's original context, else max_seq; read
                         // by the RoPE scaling reader
    ARCH_F_NULL,         // a key written as null and not read (Phi-3's pad_token_id, whose class default 32000 is
                         // a row only of Phi-3's own vocabulary)
    ARCH_F_GEMMA,        // the Gemma keys of the row's generation: RoPE (global and local), the query scale,
                         // sliding layers, soft-caps
    ARCH_F_SWITCHES,     // the "fusekit" object: every switch under fk_config's names
    ARCH_F_MPT,          // MPT's keys beyond the sizes: expansion_ratio, attn_config (alibi, alibi_bias_max, clip_qkv,
                         // softmax_scale, the options refused), no_bias, learned_pos_emb, norm_type, logit_scale
    ARCH_F_ROTARY,       // the share of each head RoPE turns (key: rotary_pct, partial_rotary_factor; `def` when absent)
                         // and transformers 5's rope_parameters {rope_type default, rope_theta, partial_rotary_factor}
    ARCH_F_PARALLEL,     // use_parallel_residual: the row's parallel form (gpt_neox: two norms; stablelm: one) or
                         // sequential (`def` when absent)
    ARCH_F_QKV_BIAS,     // a boolean that sets bias_qkv alone (StableLM's use_qkv_bias; o_proj has none)
    ARCH_F_QK_LN,        // a boolean that sets qk_norm with qk_norm_ln (StableLM's qk_layernorm)
    ARCH_F_FALCON,       // Falcon's attention layout keys: multi_query, new_decoder_architecture, parallel_attn,
                         // num_kv_heads, num_ln_in_parallel_attn (n_kv_head and the residual kind), alibi (refused)
    ARCH_F_MOE,          // the mixture-of-experts keys the row's `moe` names (the key: the expert count, `def` when
                         // absent; 0 for a row whose models may be dense)
    ARCH_F_NULL_ONLY,    // a key fusekit implements only as null (absent): written null, refused otherwise (OLMoE's
                         // clip_qkv, which clamps after its QK-norm)
} arch_field;

// How a reader fills a field whose key is absent (or null).
typedef enum {
    ARCH_D_REQUIRED,  // an error naming the key
    ARCH_D_VALUE,     // the key's `def`
    ARCH_D_N_HEAD,    // the number of attention heads (num_key_value_heads)
    ARCH_D_4D,        // 4 * d_model (GPT-2's n_inner)
    ARCH_D_SPLIT,     // d_model / n_head, which must divide (head_dim)
    ARCH_D_NEXT,      // the next key of the same field (GPT-2's n_positions, then n_ctx); an absent or 0 value falls through
    ARCH_D_READ_ONLY, // never written; read (in preference to the next key of the same field: Gemma 1's
                      // hidden_activation before hidden_act)
    ARCH_D_RATIO,     // the key holds the FFN width / d_model (MPT's expansion_ratio, an integer; `def` when
                      // absent); d_model's key comes before it
} arch_default;

// One config.json key: written in the row's order, read by field.
// ARCH_F_ROPE_SCALING's def bit: rope_type "su" and "yarn" are longrope (Phi3Config's older names).
#define ARCH_ROPE_PHI3_NAMES 2

typedef struct {
    arch_field field;
    const char *key;
    arch_default how;
    double def;
} arch_key;

typedef struct {
    const arch_key *k;
    int n;
} arch_key_set;

// The GGUF hyperparameter keys a family writes and reads beyond the common ones
// (<arch>.vocab_size, context_length, embedding_length, block_count, feed_forward_length,
// attention.head_count).
enum {
    ARCH_GK_LAYERNORM = 1u << 0,  // attention.layer_norm_epsilon (GPT-2: MHA, one FFN width)
    ARCH_GK_LLAMA = 1u << 1,      // attention.head_count_kv, rope.freq_base, rope.dimension_count,
                                  // attention.layer_norm_rms_epsilon, key/value_length when head_dim differs
    ARCH_GK_HEAD_LENGTHS = 1u << 2, // attention.key_length / value_length always (Gemma)
    ARCH_GK_GEMMA = 1u << 3,      // sliding windows, the local RoPE base, soft-caps, linear RoPE scaling
    ARCH_GK_ALIBI = 1u << 4,      // attention.max_alibi_bias, attention.clamp_kqv (when clipping), head_count_kv (mpt)
    ARCH_GK_PARALLEL = 1u << 5,   // use_parallel_residual (gptneox; true when absent)
    // Mixture of experts as llama.cpp's graphs compute it (softmax router, top expert_used_count of expert_count,
    // SwiGLU experts, every layer MoE): the keys expert_count and expert_used_count
    ARCH_GK_EXPERTS = 1u << 6,    // experts optional: MoE when expert_count > 0 (llama: Mixtral)
    ARCH_GK_MOE = 1u << 7,        // experts required (qwen2moe, qwen3moe, olmoe: llama.cpp throws without)
    ARCH_GK_MOE_NORM = 1u << 8,   // the graph renormalises the chosen weights (llama, qwen3moe; not qwen2moe, olmoe)
    ARCH_GK_MOE_SHARED = 1u << 9, // a shared expert with a sigmoid gate on every layer, expert_shared_feed_forward_length (qwen2moe)
    ARCH_GK_EXPERT_FFN = 1u << 10,// the experts' width is expert_feed_forward_length (qwen2moe, qwen3moe); else feed_forward_length
};

// A family's mixture-of-experts keys beyond the expert count (arch_family.moe; config.json, transformers' classes).
typedef struct {
    const char *count_alias; // the expert count's other spelling, read when the row's key is absent (transformers'
                             // attribute_map: num_experts / num_local_experts); NULL: none (Qwen2-MoE)
    int64_t used_def;        // num_experts_per_tok when absent
    const char *ffn_key;     // the experts' width (moe_intermediate_size, ffn_def when absent); NULL: intermediate_size
    int64_t ffn_def;         // is (Mixtral, OLMoE), and every layer is MoE without a dense FFN
    const char *shared_key;  // a shared expert with a sigmoid gate on every MoE layer, this wide (Qwen2-MoE's
    int64_t shared_def;      // shared_expert_intermediate_size); NULL: none (MoE layers have no dense FFN)
    bool norm_key;           // norm_topk_prob (false when absent); else the chosen weights are always renormalised
    bool sparse_keys;        // decoder_sparse_step and mlp_only_layers say the dense layers (intermediate_size wide)
    bool jitter_key;         // router_jitter_noise: training-time noise fusekit does not add (written 0, read as any)
    double aux_coef;         // router_aux_loss_coef written (fusekit adds no load-balancing loss; output_router_logits false)
    bool per_layer;          // model_type fusekit: shared_expert_gate and fusekit_experts (experts per layer) too, and the
                             // MoE layers' dense FFN (the shared expert) as intermediate_size / fusekit_intermediate_sizes say
} arch_moe;

typedef struct arch_family arch_family;

// One family: a row of the architecture table. A row may lack a Hugging Face side (deci: a
// GGUF form of per-layer widths) or a GGUF side of its own (qwen2, mistral: exported as llama).
struct arch_family {
    int arch;                 // fk_arch, -1 when there is no Hugging Face model_type
    const char *model_type;   // config.json model_type, written and read
    const char *model_type_alias;  // another model_type read as this family: a multimodal wrapper whose
                                   // text_config is the family's config (NULL: none)
    int gemma;                // Gemma generation (1, 2, 3), 0 for others
    arch_switches sw;         // the switches its files imply
    fk_residual_kind residual;  // and these two: parallel attention and MLP (gpt_neox: either, through
    bool bias_lm_head;          // use_parallel_residual; phi: one norm), an LM-head bias (phi)
    bool no_pre_norms, qk_norm_whole;  // olmo2: post-norms only, QK-norm over the whole q and k projections
    bool qk_norm_ln;          // stablelm: QK-norm, when its files have one, is a LayerNorm per head (qk_layernorm;
                              // GGUF attn_q_norm/attn_k_norm of {head_dim, heads})
    // ---- Hugging Face
    const char *hf_class;     // config.json architectures[0]
    arch_tensor_set hf;       // Hugging Face tensor names
    arch_key_set keys;        // its config.json keys of the common fields, in the order written
    const char *const *acts;  // activation names read (acts[0] written; NULL-ended); NULL: none checked
    const char *const *acts_exact;  // names read as exact GELU (sets gelu_exact; acts_exact[0] written); NULL: none
    bool tied;                // tie_word_embeddings when absent
    const char *hf_optional_prefix;  // a prefix of its tensor names some checkpoints omit (GPT-2's "transformer.")
    bool alibi;               // its files say ALiBi (alibi_bias_max > 0, position kind none) and clip_qkv (MPT);
                              // a row without never fits a config with either
    const arch_moe *moe;      // its mixture-of-experts keys (NULL: none; a row without never fits an MoE config)
    // whether the model_type describes c exactly (NULL: never written, e.g. mistral, read only;
    // fk_config_arch falls back to fusekit, whose config.json carries every switch)
    bool (*hf_fits)(const arch_family *f, const fk_config *c);
    // ---- GGUF
    const char *gguf;         // general.architecture, NULL when exported under another family's name
    const char *gguf_import;  // a general.architecture read as this row but never written (gguf NULL; the
                              // gguf_* fields below describe it): qwen2, whose models export as llama
    bool gguf_gemma;          // llama.cpp's Gemma conventions (norm weights 1 + w, a hard-coded attention scale)
    bool gguf_neox;           // llama.cpp rotates query/key halves (NEOX order), as Hugging Face does: the rows are
                              // stored as they are; else in its interleaved order (ARCH_T_ROPE rows permuted)
    bool gguf_rotary_part;    // llama.cpp's graph rotates the first rope.dimension_count dims of a head (partial
                              // rotary: gptneox, phi2, stablelm); false: it asserts they are the whole head
                              // (llama, qwen3, gemma: n_embd_head == n_rot), so a partial-rotary config is refused
    arch_tensor_set gguf_t;   // GGUF tensor names
    arch_tensor_set gguf_t_fused;  // older converters' form, read (never written) when the file has its fused
                                   // attn_qkv.weight (phi2: llama.cpp's create_tensor_qkv takes attn_qkv or attn_q/k/v)
    unsigned gguf_keys;       // ARCH_GK_*
    int gguf_swa_pattern;     // llama.cpp's sliding layers when no sliding_window_pattern key says otherwise:
                              // layer l slides unless l % n == n - 1 (gemma2 2, gemma3 6; olmo2 4, OLMo 3's
                              // form, which fusekit refuses on import; 0: none)
    // whether c has the switches that make it this row's kind (at most one row claims a config)
    bool (*gguf_claims)(const arch_family *f, const fk_config *c);
    // FK_OK when llama.cpp's architecture represents c, else FK_ERR_UNSUPPORTED with the reason
    fk_status (*gguf_fits)(const arch_family *f, const fk_config *c);
};

extern const arch_family arch_families[];
extern const int arch_n_families;

// The row of an fk_arch, and of a GGUF architecture name (n bytes; NULL when none imports it).
const arch_family *arch_of(fk_arch a);
const arch_family *arch_of_gguf(const char *name, size_t n);
// The GGUF architecture names, ", "-separated, in table order (for messages).
const char *arch_gguf_names(void);
// The row whose model_type (or alias, then *alias is set) is `type`; NULL when none.
const arch_family *arch_of_model_type(const char *type, bool *alias);
// The model_types read, aliases included, ", "-separated (for messages).
const char *arch_model_type_names(void);

// The first tensor of set s with role k and rows `rows` (-1: any); NULL when none.
const arch_tensor *arch_tensor_of(arch_tensor_set s, fk_param_kind k, int rows);

// Sets row f's switches on c (Gemma's scales from c->d_model, with Hugging Face's norm offset 1).
void arch_apply_switches(const arch_family *f, fk_config *c);

// The row's key of a field (the first when several), NULL when it has none.
const arch_key *arch_key_of(const arch_family *f, arch_field field);

// Conventions the rows' predicates share with the readers and writers.
// The attention scale a config uses (attn_scale, or 1/sqrt(head_dim)).
float arch_attn_scale(const fk_config *c);
// Hugging Face's integer query_pre_attn_scalar q with (float)q^-0.5 == the attention scale; 0 when none.
int64_t arch_query_pre_attn_scalar(const fk_config *c);
// True when layer l attends through a sliding window; when any layer does.
bool arch_slides(const fk_config *c, int64_t l);
bool arch_any_sliding(const fk_config *c);
// Linear RoPE scaling other than 1 (rope_scale), not Llama 3's.
bool arch_rope_scaled(const fk_config *c);
// Any RoPE scaling: linear, Llama 3's, dynamic, YaRN, LongRoPE.
bool arch_rope_any_scaling(const fk_config *c);
// Linear or Llama 3 scaling, under which fusekit's sliding layers take an unscaled table of their own
// (Gemma 3's local layers); dynamic, YaRN and LongRoPE turn every layer with the one table.
bool arch_rope_local_unscaled(const fk_config *c);
// A mixture of experts with a shared expert (a dense FFN beside the experts on an MoE layer: Qwen2-MoE).
bool arch_moe_shared(const fk_config *c);
// FK_ERR_UNSUPPORTED for what row f's llama.cpp architecture (f NULL: none) cannot represent
// whatever its other conditions: partial rotary without gguf_rotary_part, Llama 3 RoPE scaling (llama.cpp keeps it as a rope_freqs tensor,
// which fusekit does not write), and outside the Gemma rows the first Gemma-family switch c sets
// that f's own switches lack; a mixture of experts other than f's graph computes (ARCH_GK_EXPERTS, ARCH_GK_MOE*).
fk_status arch_gguf_refuse(const arch_family *f, const fk_config *c);

// One tensor of a model under a set: rows [row0, row0 + rows) of table entry `param`.
// An ARCH_T_EXPERTS tensor: the same rows of each of the layer's n_exp experts, `param` being expert 0's
// entry and expert e's rows exp_stride floats further in the arena (n_exp 0 for any other tensor).
typedef struct {
    char name[96];
    int param;
    int64_t row0, rows;
    unsigned flags;   // the set row's ARCH_T_* flags
    int64_t n_exp, exp_stride;
} arch_item;

// The tensors of model m under set s, in the set's order, layer by layer (malloc'd array); an expert
// role's per-expert tensors expert by expert.
fk_status arch_items(const fk_model *m, arch_tensor_set s, arch_item **out, int *n);

#endif
