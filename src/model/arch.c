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
    {FK_P_Q_NORM_W, ARCH_ROWS_ALL, ARCH_T_NO_QK_LN, "model.layers.%d.self_attn.q_norm.weight"},
    {FK_P_K_NORM_W, ARCH_ROWS_ALL, ARCH_T_NO_QK_LN, "model.layers.%d.self_attn.k_norm.weight"},
    {FK_P_Q_NORM_W, ARCH_ROWS_ALL, ARCH_T_QK_LN, "model.layers.%d.self_attn.q_layernorm.norms.%d.weight"},  // StableLM 2 12B
    {FK_P_K_NORM_W, ARCH_ROWS_ALL, ARCH_T_QK_LN, "model.layers.%d.self_attn.k_layernorm.norms.%d.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.bias"},
    {FK_P_ATTN_POST_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.pre_feedforward_layernorm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.pre_feedforward_layernorm.bias"},
    {FK_P_FFN_POST_W, ARCH_ROWS_ALL, ARCH_T_POST, "model.layers.%d.post_feedforward_layernorm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NO_POST, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, ARCH_T_NO_POST, "model.layers.%d.post_attention_layernorm.bias"},
    {FK_P_UP_W, ARCH_ROWS_GATE, ARCH_T_DENSE, "model.layers.%d.mlp.gate_proj.weight"},
    {FK_P_UP_B, ARCH_ROWS_GATE, 0, "model.layers.%d.mlp.gate_proj.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, ARCH_T_DENSE, "model.layers.%d.mlp.up_proj.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.up_proj.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, ARCH_T_DENSE, "model.layers.%d.mlp.down_proj.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.down_proj.bias"},
    // mixture of experts (qwen2_moe, qwen3_moe, olmoe, fusekit): the router, the experts one tensor each (as the
    // hub's checkpoints and transformers' save_pretrained write them; transformers 5 holds each layer's experts
    // stacked, gate_up_proj [E, 2F, C] and down_proj [E, C, F], as save_original_format=False writes them: read
    // too), Qwen2-MoE's shared expert and its gate
    {FK_P_ROUTER_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.gate.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_GATE, 0, "model.layers.%d.mlp.experts.%d.gate_proj.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.experts.%d.up_proj.weight"},
    {FK_P_EXP_DOWN_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.experts.%d.down_proj.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_ALL, ARCH_T_EXPERTS | ARCH_T_ALT, "model.layers.%d.mlp.experts.gate_up_proj"},
    {FK_P_EXP_DOWN_W, ARCH_ROWS_ALL, ARCH_T_EXPERTS | ARCH_T_ALT, "model.layers.%d.mlp.experts.down_proj"},
    {FK_P_UP_W, ARCH_ROWS_GATE, ARCH_T_MOE, "model.layers.%d.mlp.shared_expert.gate_proj.weight"},
    {FK_P_UP_W, ARCH_ROWS_UP, ARCH_T_MOE, "model.layers.%d.mlp.shared_expert.up_proj.weight"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, ARCH_T_MOE, "model.layers.%d.mlp.shared_expert.down_proj.weight"},
    {FK_P_SHARED_GATE_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.shared_expert_gate.weight"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "model.norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "model.norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
    {FK_P_LM_HEAD_B, ARCH_ROWS_ALL, 0, "lm_head.bias"},
};

// Mixtral (MixtralForCausalLM): Llama's attention, block_sparse_moe's router and experts w1 (gate), w3 (up)
// and w2 (down), one tensor each as the hub's checkpoints and save_pretrained write them; transformers 5's
// in-memory form (mlp.gate, mlp.experts.gate_up_proj / down_proj stacked: save_original_format=False) is read too.
static const arch_tensor hf_mixtral[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "model.embed_tokens.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.weight"},
    {FK_P_QKV_W, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.weight"},
    {FK_P_QKV_W, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.weight"},
    {FK_P_QKV_W, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, 0, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_ROUTER_W, ARCH_ROWS_ALL, 0, "model.layers.%d.block_sparse_moe.gate.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_GATE, 0, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_UP, 0, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight"},
    {FK_P_EXP_DOWN_W, ARCH_ROWS_ALL, 0, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight"},
    {FK_P_ROUTER_W, ARCH_ROWS_ALL, ARCH_T_ALT, "model.layers.%d.mlp.gate.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_ALL, ARCH_T_EXPERTS | ARCH_T_ALT, "model.layers.%d.mlp.experts.gate_up_proj"},
    {FK_P_EXP_DOWN_W, ARCH_ROWS_ALL, ARCH_T_EXPERTS | ARCH_T_ALT, "model.layers.%d.mlp.experts.down_proj"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "model.norm.weight"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// StarCoder2 (Starcoder2ForCausalLM): Llama's attention names, LayerNorms with biases, a plain
// MLP mlp.c_fc / mlp.c_proj (nn.Linear, not GPT-2's Conv1D).
static const arch_tensor hf_starcoder2[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "model.embed_tokens.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.bias"},
    {FK_P_QKV_W, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.bias"},
    {FK_P_QKV_W, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.bias"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, 0, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "model.layers.%d.post_attention_layernorm.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.c_fc.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.c_fc.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.c_proj.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.c_proj.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "model.norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "model.norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// Phi-3 (Phi3ForCausalLM): q, k and v rows in one qkv_proj, gate then up rows in one gate_up_proj
// (transformers chunks it gate first), as fusekit's qkv and up entries hold them.
static const arch_tensor hf_phi3[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "model.embed_tokens.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.weight"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.qkv_proj.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.o_proj.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, 0, "model.layers.%d.post_attention_layernorm.weight"},
    {FK_P_UP_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.gate_up_proj.weight"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.down_proj.weight"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "model.norm.weight"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// MPT (transformers' MptForCausalLM): fused Wqkv (q, k, v rows), LayerNorms and linear maps
// without biases (no_bias), the LM head tied to wte unless tie_word_embeddings is false.
static const arch_tensor hf_mpt[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "transformer.wte.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "transformer.blocks.%d.norm_1.weight"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, 0, "transformer.blocks.%d.attn.Wqkv.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "transformer.blocks.%d.attn.out_proj.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, 0, "transformer.blocks.%d.norm_2.weight"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "transformer.blocks.%d.ffn.up_proj.weight"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "transformer.blocks.%d.ffn.down_proj.weight"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "transformer.norm_f.weight"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// GPT-NeoX / Pythia (GPTNeoXForCausalLM): query_key_value fuses q, k and v per head ([q_h; k_h; v_h]);
// the LM head is embed_out, as checkpoints and transformers 5's save_pretrained name it.
static const arch_tensor hf_gpt_neox[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "gpt_neox.embed_in.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "gpt_neox.layers.%d.input_layernorm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "gpt_neox.layers.%d.input_layernorm.bias"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, 0, "gpt_neox.layers.%d.post_attention_layernorm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "gpt_neox.layers.%d.post_attention_layernorm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, ARCH_T_QKV_HEADS, "gpt_neox.layers.%d.attention.query_key_value.weight"},
    {FK_P_QKV_B, ARCH_ROWS_ALL, ARCH_T_QKV_HEADS, "gpt_neox.layers.%d.attention.query_key_value.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "gpt_neox.layers.%d.attention.dense.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "gpt_neox.layers.%d.attention.dense.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "gpt_neox.layers.%d.mlp.dense_h_to_4h.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "gpt_neox.layers.%d.mlp.dense_h_to_4h.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "gpt_neox.layers.%d.mlp.dense_4h_to_h.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "gpt_neox.layers.%d.mlp.dense_4h_to_h.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "gpt_neox.final_layer_norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "gpt_neox.final_layer_norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "embed_out.weight"},
};

// Falcon (FalconForCausalLM): query_key_value grouped per KV head (multi-query: [all q; k; v]; new
// decoder: [q x G; k_g; v_g] per group; otherwise [q_h; k_h; v_h]), input_layernorm (shared, or
// with post_attention_layernorm when sequential) or ln_attn and ln_mlp (parallel from two norms);
// every linear map with or without biases (bias); the LM head tied by default.
#define FALCON_LN(kind_w, kind_b, flag, name) \
    {kind_w, ARCH_ROWS_ALL, flag, "transformer.h.%d." name ".weight"}, {kind_b, ARCH_ROWS_ALL, flag, "transformer.h.%d." name ".bias"}
static const arch_tensor hf_falcon[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "transformer.word_embeddings.weight"},
    FALCON_LN(FK_P_LN1_W, FK_P_LN1_B, ARCH_T_ONE_NORM, "input_layernorm"),
    FALCON_LN(FK_P_LN1_W, FK_P_LN1_B, ARCH_T_TWO_NORMS, "ln_attn"),
    FALCON_LN(FK_P_LN2_W, FK_P_LN2_B, ARCH_T_ONE_NORM, "post_attention_layernorm"),
    FALCON_LN(FK_P_LN2_W, FK_P_LN2_B, ARCH_T_TWO_NORMS, "ln_mlp"),
    {FK_P_QKV_W, ARCH_ROWS_ALL, ARCH_T_QKV_HEADS, "transformer.h.%d.self_attention.query_key_value.weight"},
    {FK_P_QKV_B, ARCH_ROWS_ALL, ARCH_T_QKV_HEADS, "transformer.h.%d.self_attention.query_key_value.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "transformer.h.%d.self_attention.dense.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.self_attention.dense.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "transformer.h.%d.mlp.dense_h_to_4h.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "transformer.h.%d.mlp.dense_h_to_4h.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "transformer.h.%d.mlp.dense_4h_to_h.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "transformer.h.%d.mlp.dense_4h_to_h.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "transformer.ln_f.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "transformer.ln_f.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
};

// Phi-2 (PhiForCausalLM): one input_layernorm for the parallel attention and MLP, biases on every
// linear map, the LM head's included.
static const arch_tensor hf_phi[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "model.embed_tokens.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "model.layers.%d.input_layernorm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_Q, 0, "model.layers.%d.self_attn.q_proj.bias"},
    {FK_P_QKV_W, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_K, 0, "model.layers.%d.self_attn.k_proj.bias"},
    {FK_P_QKV_W, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.weight"},
    {FK_P_QKV_B, ARCH_ROWS_V, 0, "model.layers.%d.self_attn.v_proj.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.dense.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "model.layers.%d.self_attn.dense.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.fc1.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "model.layers.%d.mlp.fc1.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.fc2.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "model.layers.%d.mlp.fc2.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "model.final_layernorm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "model.final_layernorm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "lm_head.weight"},
    {FK_P_LM_HEAD_B, ARCH_ROWS_ALL, 0, "lm_head.bias"},
};

// llama.cpp's gpt2 (and mpt and gptneox, without position_embd: NeoX's converter undoes Hugging Face's per-head
// q/k/v interleave; and phi2 as older converters wrote it): fused q/k/v in the internal (untransposed) layout.
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
    {FK_P_LM_HEAD_B, ARCH_ROWS_ALL, 0, "output.bias"},  // (phi2's older fused form: an LM-head bias)
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
    {FK_P_Q_NORM_W, ARCH_ROWS_ALL, ARCH_T_NORM | ARCH_T_QSCALE | ARCH_T_HEAD_ROWS, "blk.%d.attn_q_norm.weight"},
    {FK_P_K_NORM_W, ARCH_ROWS_ALL, ARCH_T_NORM | ARCH_T_HEAD_ROWS, "blk.%d.attn_k_norm.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.bias"},
    {FK_P_ATTN_POST_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.post_attention_norm.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.ffn_norm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_norm.bias"},
    {FK_P_UP_W, ARCH_ROWS_GATE, ARCH_T_DENSE, "blk.%d.ffn_gate.weight"},
    {FK_P_UP_W, ARCH_ROWS_UP, ARCH_T_DENSE, "blk.%d.ffn_up.weight"},
    {FK_P_UP_B, ARCH_ROWS_GATE, ARCH_T_DENSE, "blk.%d.ffn_gate.bias"},
    {FK_P_UP_B, ARCH_ROWS_UP, ARCH_T_DENSE, "blk.%d.ffn_up.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, ARCH_T_DENSE, "blk.%d.ffn_down.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, ARCH_T_DENSE, "blk.%d.ffn_down.bias"},
    // mixture of experts (llama's Mixtral, qwen2moe, qwen3moe, olmoe): the router, the experts stacked
    // (older Mixtral files: one tensor per expert), Qwen2-MoE's shared expert and its gate
    {FK_P_ROUTER_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_gate_inp.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_GATE, ARCH_T_EXPERTS, "blk.%d.ffn_gate_exps.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_UP, ARCH_T_EXPERTS, "blk.%d.ffn_up_exps.weight"},
    {FK_P_EXP_DOWN_W, ARCH_ROWS_ALL, ARCH_T_EXPERTS, "blk.%d.ffn_down_exps.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_GATE, ARCH_T_ALT, "blk.%d.ffn_gate.%d.weight"},
    {FK_P_EXP_UP_W, ARCH_ROWS_UP, ARCH_T_ALT, "blk.%d.ffn_up.%d.weight"},
    {FK_P_EXP_DOWN_W, ARCH_ROWS_ALL, ARCH_T_ALT, "blk.%d.ffn_down.%d.weight"},
    {FK_P_SHARED_GATE_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_gate_inp_shexp.weight"},
    {FK_P_UP_W, ARCH_ROWS_GATE, ARCH_T_MOE, "blk.%d.ffn_gate_shexp.weight"},
    {FK_P_UP_W, ARCH_ROWS_UP, ARCH_T_MOE, "blk.%d.ffn_up_shexp.weight"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, ARCH_T_MOE, "blk.%d.ffn_down_shexp.weight"},
    {FK_P_FFN_POST_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.post_ffw_norm.weight"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, ARCH_T_NORM, "output_norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "output_norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "output.weight"},
};

// llama.cpp's phi3: fused attn_qkv (q, k, v rows) and ffn_up (gate, then up rows: its SwiGLU
// splits the product in halves, the first through SiLU), NEOX rotation.
static const arch_tensor gguf_phi3[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "token_embd.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.attn_norm.weight"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_qkv.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.weight"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.ffn_norm.weight"},
    {FK_P_UP_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_up.weight"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.weight"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, ARCH_T_NORM, "output_norm.weight"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "output.weight"},
};

// llama.cpp's phi2: separate attn_q/k/v as its converter writes them, one attn_norm, output.bias.
static const arch_tensor gguf_phi2[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "token_embd.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, ARCH_T_NORM, "blk.%d.attn_norm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_norm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_Q, 0, "blk.%d.attn_q.weight"},
    {FK_P_QKV_B, ARCH_ROWS_Q, 0, "blk.%d.attn_q.bias"},
    {FK_P_QKV_W, ARCH_ROWS_K, 0, "blk.%d.attn_k.weight"},
    {FK_P_QKV_B, ARCH_ROWS_K, 0, "blk.%d.attn_k.bias"},
    {FK_P_QKV_W, ARCH_ROWS_V, 0, "blk.%d.attn_v.weight"},
    {FK_P_QKV_B, ARCH_ROWS_V, 0, "blk.%d.attn_v.bias"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.weight"},
    {FK_P_O_B, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.bias"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.weight"},
    {FK_P_UP_B, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.bias"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.weight"},
    {FK_P_DOWN_B, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.bias"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, ARCH_T_NORM, "output_norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "output_norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "output.weight"},
    {FK_P_LM_HEAD_B, ARCH_ROWS_ALL, 0, "output.bias"},
};

// llama.cpp's falcon: the fused attn_qkv as its converter writes it (all queries, then keys, then
// values: fusekit's order), no biases; Falcon 7B's one attn_norm, or the new decoder's attn_norm_2
// (ln_attn, the attention's) with attn_norm (ln_mlp: its graph feeds the FFN attn_norm).
static const arch_tensor gguf_falcon[] = {
    {FK_P_TOK_EMB, ARCH_ROWS_ALL, 0, "token_embd.weight"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, ARCH_T_ONE_NORM, "blk.%d.attn_norm.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, ARCH_T_ONE_NORM, "blk.%d.attn_norm.bias"},
    {FK_P_LN1_W, ARCH_ROWS_ALL, ARCH_T_TWO_NORMS, "blk.%d.attn_norm_2.weight"},
    {FK_P_LN1_B, ARCH_ROWS_ALL, ARCH_T_TWO_NORMS, "blk.%d.attn_norm_2.bias"},
    {FK_P_LN2_W, ARCH_ROWS_ALL, ARCH_T_TWO_NORMS, "blk.%d.attn_norm.weight"},
    {FK_P_LN2_B, ARCH_ROWS_ALL, ARCH_T_TWO_NORMS, "blk.%d.attn_norm.bias"},
    {FK_P_QKV_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_qkv.weight"},
    {FK_P_O_W, ARCH_ROWS_ALL, 0, "blk.%d.attn_output.weight"},
    {FK_P_UP_W, ARCH_ROWS_UP, 0, "blk.%d.ffn_up.weight"},
    {FK_P_DOWN_W, ARCH_ROWS_ALL, 0, "blk.%d.ffn_down.weight"},
    {FK_P_LNF_W, ARCH_ROWS_ALL, 0, "output_norm.weight"},
    {FK_P_LNF_B, ARCH_ROWS_ALL, 0, "output_norm.bias"},
    {FK_P_LM_HEAD, ARCH_ROWS_ALL, 0, "output.weight"},
};

// ------------------------------------------------------------------ shared conventions

float arch_attn_scale(const fk_config *c) { return c->attn_scale > 0 ? c->attn_scale : (float)(1 / sqrt((double)c->head_dim)); }

int64_t arch_query_pre_attn_scalar(const fk_config *c) {
    double s = arch_attn_scale(c), q = nearbyint(1 / (s * s));
    return q >= 1 && q < 1e9 && (float)pow(q, -0.5) == (float)s ? (int64_t)q : 0;
}

// (l within the layer table: a config being read may not have had n_layer checked yet)
bool arch_slides(const fk_config *c, int64_t l) { return l >= 0 && l < FK_MAX_LAYERS && c->sliding[l] && c->sliding_window > 0; }

bool arch_any_sliding(const fk_config *c) {
    for (int64_t l = 0; l < c->n_layer && l < FK_MAX_LAYERS; l++)
        if (arch_slides(c, l)) return true;
    return false;
}

bool arch_rope_scaled(const fk_config *c) { return c->rope_scale > 0 && c->rope_scale != 1; }

bool arch_rope_any_scaling(const fk_config *c) { return arch_rope_scaled(c) || c->rope_orig_ctx > 0 || c->rope_ext != FK_ROPE_EXT_NONE; }

bool arch_rope_local_unscaled(const fk_config *c) { return arch_rope_scaled(c) || c->rope_orig_ctx > 0; }  // fk_model_init's rule

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

void arch_apply_switches(const arch_family *f, fk_config *c) {
    const arch_switches *s = &f->sw;
    c->norm = s->norm;
    c->pos = s->pos;
    c->mlp = s->mlp;
    c->bias_qkv = s->bias_qkv;
    c->bias_out = s->bias_out;
    c->bias_mlp = s->bias_mlp;
    c->bias_norm = s->bias_norm;
    c->post_norms = s->post_norms;
    c->qk_norm = s->qk_norm;
    c->residual = f->residual;
    c->bias_lm_head = f->bias_lm_head;
    c->no_pre_norms = f->no_pre_norms;
    c->qk_norm_whole = f->qk_norm_whole;
    if (f->alibi) c->alibi_bias_max = 8;  // MPT's default alibi_bias_max (its readers then read the key)
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
    bool attn_key = arch_key_of(f, ARCH_F_ATTN_BIAS) != NULL, all_key = arch_key_of(f, ARCH_F_USE_BIAS) != NULL;
    bool qkv_key = arch_key_of(f, ARCH_F_QKV_BIAS) != NULL;  // q/k/v biases alone (use_qkv_bias)
    bool biases = all_key ? c->bias_qkv == c->bias_out && c->bias_out == c->bias_mlp
                : c->bias_mlp == s->bias_mlp &&
                      (attn_key ? c->bias_qkv == c->bias_out : (qkv_key || c->bias_qkv == s->bias_qkv) && c->bias_out == s->bias_out);
    return c->norm == s->norm && c->pos == s->pos && c->mlp == s->mlp && c->bias_norm == s->bias_norm && biases &&
           c->post_norms == s->post_norms && (f->qk_norm_ln ? c->qk_norm == c->qk_norm_ln : c->qk_norm == s->qk_norm && !c->qk_norm_ln) &&
           (!c->gelu_exact || f->acts_exact) &&
           (c->alibi_bias_max > 0) == f->alibi && (!(c->clip_qkv > 0) || f->alibi) && c->bias_lm_head == f->bias_lm_head &&
           c->no_pre_norms == f->no_pre_norms && c->qk_norm_whole == f->qk_norm_whole && (c->n_expert == 0 || f->moe) &&
           // use_parallel_residual (gpt_neox, stablelm) says the row's parallel form or sequential
           (c->residual == f->residual || (arch_key_of(f, ARCH_F_PARALLEL) && c->residual == FK_RESID_SEQUENTIAL));
}

// None of the Gemma family's scales, soft-caps, query scale or local RoPE base.
static bool no_gemma_scale(const fk_config *c) {
    return !(c->emb_scale > 0) && c->norm_offset == 0 && !(c->attn_scale > 0) && !(c->attn_softcap > 0) && !(c->final_softcap > 0) &&
           !(c->rope_theta_local > 0);
}

// ... nor sliding layers.
static bool no_gemma_switch(const fk_config *c) { return no_gemma_scale(c) && !arch_any_sliding(c); }

// The windows a sliding_window key says (some: Qwen's, on any layers; else on every layer or
// none): below the context, with no linear or Llama 3 RoPE scaling (fusekit's sliding layers would
// then take an unscaled table of their own, hf.c's set_window; dynamic, YaRN and LongRoPE turn
// them with the global table, as transformers' Mistral, Qwen2 and Phi3 turn every layer).
static bool window_fits(const fk_config *c, bool some) {
    bool any = false, all = true;
    for (int64_t l = 0; l < c->n_layer; l++) {
        any |= arch_slides(c, l);
        all &= arch_slides(c, l);
    }
    return !any || ((all || some) && c->sliding_window < c->max_seq && !arch_rope_local_unscaled(c));
}

// gpt2: no RoPE scaling, multi-head attention over d_model, one FFN width.
static bool hf_fits_gpt2(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && no_gemma_switch(c) && !arch_rope_scaled(c) && c->rope_orig_ctx == 0 && c->n_kv_head == c->n_head &&
           c->head_dim * c->n_head == c->d_model && fk_config_uniform_ffn(c);
}

// RoPE over whole heads (rows whose files have no partial-rotary key).
static bool whole_rotary(const fk_config *c) { return fk_config_rotary_dim(c) == c->head_dim; }

// llama, qwen2: their switches (rope_scaling holds linear and Llama 3 scaling).
static bool hf_fits_llama(const arch_family *f, const fk_config *c) { return switches_match(f, c) && no_gemma_switch(c) && whole_rotary(c); }

// qwen2, qwen3: llama's, with sliding windows on any layers (use_sliding_window).
static bool hf_fits_qwen(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && no_gemma_scale(c) && whole_rotary(c) && window_fits(c, true);
}

// mistral: llama with a window on every layer (without one it is llama, the row before it).
static bool hf_fits_mistral(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && no_gemma_scale(c) && whole_rotary(c) && arch_any_sliding(c) && window_fits(c, false);
}

// starcoder2: no head_dim key (d_model / n_head), one FFN width, a window on every layer or none.
static bool hf_fits_starcoder2(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && no_gemma_scale(c) && whole_rotary(c) && window_fits(c, false) && c->head_dim * c->n_head == c->d_model &&
           uniform_layers(c);
}

// phi3: what llama and mistral do not say, partial rotary (Phi-4-mini), with transformers' head_dim
// d_model / n_head and one FFN width and head count (qkv_proj and gate_up_proj are split by them);
// default or longrope RoPE only (Phi3Config raises on any other type; it reads "yarn" as longrope).
static bool hf_fits_phi3(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && no_gemma_scale(c) && !whole_rotary(c) && window_fits(c, false) && c->head_dim * c->n_head == c->d_model &&
           uniform_layers(c) && !arch_rope_scaled(c) && c->rope_orig_ctx == 0 &&
           (c->rope_ext == FK_ROPE_EXT_NONE || c->rope_ext == FK_ROPE_EXT_LONGROPE);
}

// mpt: ALiBi, MptMLP's exact GELU, multi-head attention over d_model, one FFN width that is a
// whole multiple of d_model (expansion_ratio), a softmax_scale but none of Gemma's other switches.
static bool hf_fits_mpt(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && c->gelu_exact && !(c->emb_scale > 0) && !(c->attn_softcap > 0) && !(c->final_softcap > 0) &&
           !arch_any_sliding(c) && c->n_kv_head == c->n_head && c->head_dim * c->n_head == c->d_model && uniform_layers(c) &&
           c->ffn[0] % c->d_model == 0 && c->alibi_bias_max == floorf(c->alibi_bias_max);  // MptAttentionConfig: an int
}

// gpt_neox (multi-head only) and phi: no RoPE scaling of any type (their keys, as fusekit reads
// them, carry none), no sliding windows, heads over d_model, one FFN width and head count; any
// rotary share. A sequential gpt_neox turning whole heads with attention biases is starcoder2's
// computation, and written as starcoder2.
static bool hf_fits_neox_phi(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && no_gemma_switch(c) && !arch_rope_any_scaling(c) &&
           (c->n_kv_head == c->n_head || arch_key_of(f, ARCH_F_N_KV_HEAD)) && c->head_dim * c->n_head == c->d_model && uniform_layers(c) &&
           (c->residual != FK_RESID_SEQUENTIAL || !whole_rotary(c) || !c->bias_qkv);
}

// stablelm: any rotary share of unscaled RoPE, no windows, heads over d_model (no head_dim key), one
// FFN width and head count.
static bool hf_fits_stablelm(const arch_family *f, const fk_config *c) {
    return switches_match(f, c) && no_gemma_switch(c) && !arch_rope_any_scaling(c) && c->head_dim * c->n_head == c->d_model &&
           uniform_layers(c);
}

// falcon: the row's switches in parallel from one norm or two, RoPE over whole heads over d_model,
// one FFN width and head count. What Falcon's files also say is written as the row that computes
// the same: sequential is starcoder2's computation, two norms with biases and multi-head gpt_neox's.
static bool hf_fits_falcon(const arch_family *f, const fk_config *c) {
    fk_config t = *c;
    t.residual = f->residual;
    bool neox = c->residual == FK_RESID_PARALLEL && c->bias_qkv && c->n_kv_head == c->n_head;
    return c->residual != FK_RESID_SEQUENTIAL && !neox && switches_match(f, &t) && no_gemma_switch(c) && whole_rotary(c) &&
           c->head_dim * c->n_head == c->d_model && uniform_layers(c) && c->n_kv_head > 0 && c->n_head % c->n_kv_head == 0;
}

// What a row's MoE keys say (arch_moe): one expert count, the MoE layers (all, or all but the dense ones
// decoder_sparse_step / mlp_only_layers name), the shared expert's width and gate or none, one dense width,
// renormalisation where the row has no norm_topk_prob.
static bool moe_layout_fits(const arch_moe *mo, const fk_config *c) {
    int64_t dense = -1, shared = -1;
    for (int64_t l = 0; l < c->n_layer; l++) {
        int64_t *w = c->moe[l] ? &shared : &dense;
        if ((c->moe[l] && fk_config_experts(c, l) != c->n_expert) || (!c->moe[l] && !mo->sparse_keys) || (*w >= 0 && c->ffn[l] != *w))
            return false;
        *w = c->ffn[l];
    }
    return (mo->shared_key ? shared > 0 && c->shared_gate : shared == 0 && !c->shared_gate) && (mo->norm_key || c->expert_norm);
}

// mixtral, qwen2_moe, qwen3_moe, olmoe: the row's switches with experts laid out as its keys say, one head
// count, whole-head RoPE, a window on every layer where the row has the key (mixtral), heads spanning
// d_model where the row has no head_dim key (olmoe: its q_norm is hidden_size wide).
static bool hf_fits_moe(const arch_family *f, const fk_config *c) {
    return c->n_expert > 0 && switches_match(f, c) && moe_layout_fits(f->moe, c) && no_gemma_scale(c) && whole_rotary(c) &&
           fk_config_uniform_heads(c) && window_fits(c, false) && (arch_key_of(f, ARCH_F_WINDOW) || !arch_any_sliding(c)) &&
           (arch_key_of(f, ARCH_F_HEAD_DIM) || c->head_dim * c->n_head == c->d_model);
}

// gemma, gemma2, gemma3_text: the generation's switches and what its keys can say.
static bool hf_fits_gemma(const arch_family *f, const fk_config *c) {
    if (!switches_match(f, c) || c->rope_orig_ctx > 0 || c->rope_ext || !whole_rotary(c)) return false;  // Gemma: default/linear RoPE only
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

bool arch_moe_shared(const fk_config *c) {
    for (int64_t l = 0; l < c->n_layer; l++)
        if (c->moe[l] && c->ffn[l] > 0) return true;
    return false;
}

// What llama.cpp's MoE graphs compute (src/models/{llama,qwen2moe,qwen3moe,olmoe}.cpp, build_moe_ffn): every
// layer MoE with one expert count, SiLU-gated experts, the row's renormalisation (hard-coded: llama.cpp reads
// no norm_topk_prob), and the row's shared expert with its sigmoid gate on every layer, or none.
static fk_status gguf_moe_refuse(const arch_family *f, const fk_config *c) {
    unsigned k = f ? f->gguf_keys : 0;
    if (!(k & (ARCH_GK_EXPERTS | ARCH_GK_MOE)))
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model is a mixture of experts (%lld experts, top %lld)%s%s; fusekit exports "
                        "one as llama.cpp's llama (Mixtral: RMSNorm, RoPE, SwiGLU experts renormalised, no shared expert), qwen2moe "
                        "(a shared expert with a sigmoid gate, not renormalised), qwen3moe (per-head QK-norm, renormalised) or olmoe "
                        "(QK-norm over whole projections, not renormalised)", (long long)c->n_expert, (long long)c->n_expert_used,
                        f && f->gguf ? ", which llama.cpp's " : "", f && f->gguf ? f->gguf : "");
    const char *arch = f->gguf ? f->gguf : "llama";
    bool norm = k & ARCH_GK_MOE_NORM, shared = k & ARCH_GK_MOE_SHARED;
    for (int64_t l = 0; l < c->n_layer; l++) {
        if (!c->moe[l])
            return fk_error(FK_ERR_UNSUPPORTED, "gguf export: layer %lld is dense (mlp_only_layers / decoder_sparse_step); llama.cpp's %s "
                            "makes every layer a mixture of experts", (long long)l, arch);
        if (fk_config_experts(c, l) != fk_config_experts(c, 0))
            return fk_error(FK_ERR_UNSUPPORTED, "gguf export: layer %lld has %lld experts and layer 0 %lld; llama.cpp's %s.expert_count is "
                            "one count for every layer", (long long)l, (long long)fk_config_experts(c, l), (long long)fk_config_experts(c, 0), arch);
        if (shared ? c->ffn[l] != c->ffn[0] || !c->shared_gate : c->ffn[l] != 0)
            return fk_error(FK_ERR_UNSUPPORTED, "gguf export: layer %lld %s; llama.cpp's %s has %s", (long long)l,
                            c->ffn[l] ? "has a shared expert (a dense FFN beside the experts)" : "has no shared expert", arch,
                            shared ? "one shared expert width and a sigmoid gate on every layer" : "no shared expert");
    }
    if (c->mlp != FK_MLP_SWIGLU)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the experts are not SwiGLU; llama.cpp's %s computes SiLU-gated experts", arch);
    if (c->expert_norm != norm)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the chosen experts' weights are %srenormalised (norm_topk_prob %s); llama.cpp's %s "
                        "graph %s them (it reads no such key)", c->expert_norm ? "" : "not ", c->expert_norm ? "true" : "false", arch,
                        norm ? "always renormalises" : "never renormalises");
    return FK_OK;
}

fk_status arch_gguf_refuse(const arch_family *f, const fk_config *c) {
    // llama.cpp 0.3.36's GELU graphs (gpt2, mpt, gptneox, phi2, starcoder2, falcon) all build ggml_gelu, the tanh form
    if (c->gelu_exact)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has exact GELU (erf); llama.cpp's %s graph computes the tanh "
                        "approximation (ggml_gelu), so the export would be a different model (fusekit export --gelu-approx writes "
                        "the tanh form and reports the largest logit change it makes)", f && f->gguf ? f->gguf : "GELU");
    if (c->n_expert > 0) FK_TRY(gguf_moe_refuse(f, c));
    if (c->pos == FK_POS_ROPE && !whole_rotary(c) && !(f && f->gguf_rotary_part && f->gguf_neox))  // (interleaved rows permute whole heads)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model rotates %lld of its %lld head dims (partial rotary), which llama.cpp's "
                        "%s graph does not (it requires rope.dimension_count to equal the head size)", (long long)c->rotary_dim,
                        (long long)c->head_dim, f && f->gguf ? f->gguf : "llama");
    // Llama 3 and single-set LongRoPE go to llama.cpp's rope_freqs tensor, which its llama graph reads
    bool llama = f && f->gguf && strcmp(f->gguf, "llama") == 0;
    bool one_set = c->rope_ext == FK_ROPE_EXT_LONGROPE && c->rope_attn_factor == 1 &&
                   memcmp(c->rope_short, c->rope_long, (size_t)c->rope_n_factors * sizeof(float)) == 0;
    if (c->rope_orig_ctx > 0 && !llama)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has Llama 3 RoPE scaling, which fusekit exports only as llama.cpp's llama "
                        "(its rope_freqs tensor)");
    bool yarn = c->rope_ext == FK_ROPE_EXT_YARN;  // llama.cpp reads no betas or truncate key: 32/1, truncated
    if (yarn && (c->rope_beta_fast != 32 || c->rope_beta_slow != 1 || c->rope_yarn_no_trunc))
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has YaRN with beta_fast %g, beta_slow %g%s; llama.cpp reads no such keys "
                        "and computes beta_fast 32, beta_slow 1 with a truncated correction range", (double)c->rope_beta_fast,
                        (double)c->rope_beta_slow, c->rope_yarn_no_trunc ? ", truncate false" : "");
    bool phi3 = f && f->gguf && strcmp(f->gguf, "phi3") == 0 && c->rope_ext == FK_ROPE_EXT_LONGROPE;  // rope_factors_long/short
    if (c->rope_ext != FK_ROPE_EXT_NONE && !(one_set && llama) && !yarn && !phi3)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has %s RoPE scaling, which fusekit does not export to GGUF yet%s",
                        c->rope_ext == FK_ROPE_EXT_DYNAMIC ? "dynamic (NTK)" : c->rope_ext == FK_ROPE_EXT_YARN ? "YaRN" : "LongRoPE",
                        c->rope_ext == FK_ROPE_EXT_DYNAMIC ? " (llama.cpp has no dynamic NTK scaling)"
                        : c->rope_ext == FK_ROPE_EXT_LONGROPE ? " (only one factor set with attention factor 1, as llama's rope_freqs)" : "");
    if ((c->alibi_bias_max > 0 || c->clip_qkv > 0) && !(f && f->alibi))
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has %s, which of llama.cpp's architectures fusekit writes only mpt "
                        "expresses (LayerNorm, ALiBi, a GELU MLP)", c->alibi_bias_max > 0 ? "ALiBi" : "clip_qkv");
    if (c->qk_norm_ln && !(f && f->qk_norm_ln))
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has QK-norm as a LayerNorm per head (StableLM 2 12B's qk_layernorm), "
                        "which of llama.cpp's architectures only stablelm expresses (LayerNorm, RoPE, SwiGLU)");
    if (f && f->sw.gemma_scales) return FK_OK;
    bool post = f && f->sw.post_norms, qk = f && (f->sw.qk_norm || c->qk_norm_ln);  // what the row's own switches include
    const char *sw = c->emb_scale != 0 ? "an embedding scale"
                   : c->norm_offset != 0 ? "an RMSNorm weight offset (1 + w)"
                   : c->post_norms && !post ? "post-norms"
                   : c->qk_norm && !qk ? "QK-norm"
                   : c->attn_scale != 0 && fabsf(c->attn_scale * sqrtf((float)c->head_dim) - 1.0f) > 1e-6f ? "an attention scale other than 1/sqrt(head_dim)"
                   : c->attn_softcap != 0 ? "attention-logit soft-capping"
                   : c->final_softcap != 0 ? "final-logit soft-capping"
                   : arch_any_sliding(c) && (c->rope_theta_local > 0 || !window_fits(c, true))
                       ? "sliding layers with a RoPE table of their own (a local base, or unscaled under RoPE scaling)"
                   : c->pos != FK_POS_ROPE && c->rope_scale != 0 && c->rope_scale != 1 ? "RoPE scaling without RoPE"  // linear: rope.scaling.*
                   : NULL;
    if (sw)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has %s, which llama.cpp's llama, deci and gpt2 architectures do not "
                        "express (only its Gemma architectures do, with a GeGLU MLP)", sw);
    return FK_OK;
}

// Dense models go to the rows that allow them (not qwen2moe, qwen3moe, olmoe), MoE models to the rows
// with experts whose shared expert they have or lack (qwen2moe's or the others').
static bool gguf_claims_moe(const arch_family *f, const fk_config *c) {
    unsigned k = f->gguf_keys;
    if (c->n_expert == 0) return !(k & ARCH_GK_MOE);
    return (k & (ARCH_GK_EXPERTS | ARCH_GK_MOE)) && arch_moe_shared(c) == ((k & ARCH_GK_MOE_SHARED) != 0);
}

// The row's norm, position and MLP kinds, post-norms and QK-norm (gpt2), and its experts.
static bool gguf_claims_kind(const arch_family *f, const fk_config *c) {
    return gguf_claims_moe(f, c) && c->norm == f->sw.norm && c->pos == f->sw.pos && c->mlp == f->sw.mlp && c->post_norms == f->sw.post_norms &&
           c->qk_norm == f->sw.qk_norm && c->residual == f->residual && c->bias_lm_head == f->bias_lm_head &&
           c->no_pre_norms == f->no_pre_norms && c->qk_norm_whole == f->qk_norm_whole;
}

// llama reads one FFN width and head count (and rotates whole heads: phi3 claims the rest); deci one per layer.
static bool gguf_claims_llama(const arch_family *f, const fk_config *c) {
    return gguf_claims_kind(f, c) && !c->bias_norm && uniform_layers(c) && whole_rotary(c);
}

static bool gguf_claims_deci(const arch_family *f, const fk_config *c) {
    return gguf_claims_kind(f, c) && !c->bias_norm && !uniform_layers(c);
}

// A GeGLU model's generation: gemma3 with QK-norm, gemma2 with post-norms, else gemma.
static bool gguf_claims_gemma(const arch_family *f, const fk_config *c) {
    return gguf_claims_moe(f, c) && c->mlp == f->sw.mlp && (c->qk_norm ? 3 : c->post_norms ? 2 : 1) == f->gemma;
}

static fk_status gguf_fits_gpt2(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
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

// mpt: ALiBi (LayerNorm, no positions, a GELU MLP: the row's switches), one FFN width and head count.
static bool gguf_claims_mpt(const arch_family *f, const fk_config *c) { return gguf_claims_kind(f, c) && c->alibi_bias_max > 0; }

// llama.cpp's mpt computes the tanh GELU and the scale 1/sqrt(head_dim); its biases are each optional.
static fk_status gguf_fits_mpt(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
    if (!uniform_layers(c) || c->bias_qkv != c->bias_out || c->bias_qkv != c->bias_mlp)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: an ALiBi model with %s: llama.cpp's mpt reads one FFN width and head count",
                        uniform_layers(c) ? "some linear biases but not all (fusekit writes all or none for mpt)" : "per-layer FFN widths or head counts");
    return FK_OK;
}

// starcoder2: LayerNorm with bias, RoPE and a plain GELU MLP, one FFN width and head count.
static bool gguf_claims_starcoder2(const arch_family *f, const fk_config *c) {
    return gguf_claims_kind(f, c) && c->bias_norm && uniform_layers(c);
}

// llama.cpp's starcoder2 computes the tanh GELU (arch_gguf_refuse); its biases are each optional.
static fk_status gguf_fits_starcoder2(const arch_family *f, const fk_config *c) { return gguf_fits_llama(f, c); }

// Linear biases (q/k/v, output, MLP): llama.cpp's gptneox wants every one, its falcon none.
static bool any_linear_bias(const fk_config *c) { return c->bias_qkv || c->bias_out || c->bias_mlp; }

// gptneox (parallel with two norms, linear biases: without them it is falcon's new decoder) and phi2
// (one shared norm, LM-head bias): LayerNorm with bias, one FFN width and head count. A sequential
// NeoX is starcoder2's kind in llama.cpp.
static bool gguf_claims_neox_phi(const arch_family *f, const fk_config *c) {
    return gguf_claims_kind(f, c) && c->bias_norm && uniform_layers(c) && (f->residual != FK_RESID_PARALLEL || any_linear_bias(c));
}

// llama.cpp's gptneox and phi2 graphs: every bias, heads spanning the embedding (q is the first
// n_embd rows of the fused product), the tanh GELU.
static fk_status gguf_fits_neox_phi(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
    const char *miss = !c->bias_qkv || !c->bias_out || !c->bias_mlp ? "a linear map without bias, where llama.cpp requires every bias"
                     : c->head_dim * c->n_head != c->d_model ? "head_dim * n_head != d_model"
                     : arch_any_sliding(c) || c->rope_scale != 0 || c->rope_orig_ctx != 0 ? "sliding windows or RoPE scaling"
                     : NULL;
    if (!miss && c->tied)  // (llama.cpp's llama-perplexity on a tied phi2 export: "tensor 'output.weight' not found")
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has a tied LM head; llama.cpp's %s loader requires output.weight",
                        f->gguf);
    if (miss)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has %s: llama.cpp's %s architecture would compute a different model",
                        miss, f->gguf);
    return FK_OK;
}

// falcon: attention and MLP in parallel from one LayerNorm without an LM-head bias (Falcon 7B's form;
// phi2 has the bias), or from two without linear biases (Falcon 40B's new decoder, its ln_attn written
// as attn_norm_2; with biases, two norms are gptneox's claim).
static bool gguf_claims_falcon(const arch_family *f, const fk_config *c) {
    fk_config t = *c;
    if (c->residual == FK_RESID_PARALLEL && !any_linear_bias(c)) t.residual = f->residual;
    return gguf_claims_kind(f, &t) && c->bias_norm;
}

// llama.cpp's falcon graph: no linear biases, the tanh GELU, heads spanning the embedding (attn_output
// is n_embd square), unscaled RoPE over whole heads.
static fk_status gguf_fits_falcon(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
    const char *miss = any_linear_bias(c) ? "linear biases, which llama.cpp's falcon graph has none of"
                     : c->head_dim * c->n_head != c->d_model ? "head_dim * n_head != d_model"
                     : arch_any_sliding(c) || c->rope_scale != 0 || c->rope_orig_ctx != 0 ? "sliding windows or RoPE scaling"
                     : NULL;
    if (miss)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model (attention and MLP in parallel from %s LayerNorm%s: llama.cpp's falcon "
                        "architecture) has %s: llama.cpp would compute a different model", c->residual == FK_RESID_PARALLEL ? "two" : "one",
                        c->residual == FK_RESID_PARALLEL ? "s" : "", miss);
    return FK_OK;
}

// stablelm: LayerNorm with bias, RoPE and SwiGLU, sequential or parallel from one norm, one FFN width
// and head count.
static bool gguf_claims_stablelm(const arch_family *f, const fk_config *c) {
    return gguf_claims_moe(f, c) && c->norm == f->sw.norm && c->pos == f->sw.pos && c->mlp == f->sw.mlp && c->bias_norm && !c->post_norms &&
           !c->bias_lm_head && (c->residual == f->residual || c->residual == FK_RESID_SEQUENTIAL) && uniform_layers(c);
}

// llama.cpp's stablelm: q/k/v biases only (each optional), heads spanning the embedding (attn_output is
// n_embd square), an output tensor (its loader requires one), unscaled RoPE; parallel when the file
// has no ffn_norm.
static fk_status gguf_fits_stablelm(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
    const char *miss = c->bias_out || c->bias_mlp ? "output-projection or MLP biases (its graph has q/k/v biases only)"
                     : c->head_dim * c->n_head != c->d_model ? "head_dim * n_head != d_model"
                     : c->tied ? "a tied LM head (its loader requires output.weight)"
                     : arch_any_sliding(c) || arch_rope_any_scaling(c) ? "sliding windows or RoPE scaling"
                     : NULL;
    if (miss) return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has %s, which llama.cpp's stablelm architecture does not express", miss);
    return FK_OK;
}

// llama.cpp's olmo2: q/k/v biases only (each optional), attn_output and attn_q_norm n_embd wide (attn_k_norm
// n_head_kv * head size: grouped KV heads fit), an output tensor (its loader requires one), whole-head RoPE.
static fk_status gguf_fits_olmo2(const arch_family *f, const fk_config *c) {
    FK_TRY(gguf_fits_llama(f, c));
    const char *miss = c->bias_out || c->bias_mlp ? "output-projection or MLP biases (its graph has q/k/v biases only)"
                     : c->head_dim * c->n_head != c->d_model ? "head_dim * n_head != d_model (its attn_output and attn_q_norm are n_embd wide)"
                     : c->tied ? "a tied LM head (its loader requires output.weight)"
                     : NULL;
    if (miss) return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has %s, which llama.cpp's olmo2 architecture does not express", miss);
    return FK_OK;
}

// qwen2moe and olmoe: llama.cpp's loaders require output.weight and n_embd-square attention projections
// (olmoe's attn_k_norm is n_embd wide too: multi-head only).
static fk_status gguf_fits_moe_untied(const arch_family *f, const fk_config *c) {
    FK_TRY(gguf_fits_llama(f, c));
    const char *miss = c->tied ? "a tied LM head (its loader requires output.weight)"
                     : c->head_dim * c->n_head != c->d_model ? "head_dim * n_head != d_model (its attention projections are n_embd square)"
                     : f->qk_norm_whole && c->n_kv_head != c->n_head ? "grouped-query attention (its attn_k_norm is n_embd wide)"
                     : NULL;
    if (miss) return fk_error(FK_ERR_UNSUPPORTED, "gguf export: the model has %s, which llama.cpp's %s architecture does not express", miss, f->gguf);
    return FK_OK;
}

// phi3: llama's switches with what llama's GGUF does not say, partial rotary (Phi-4-mini).
static bool gguf_claims_phi3(const arch_family *f, const fk_config *c) {
    return gguf_claims_kind(f, c) && !c->bias_norm && uniform_layers(c) && !whole_rotary(c);
}

// llama.cpp's phi3 has no biases.
static fk_status gguf_fits_phi3(const arch_family *f, const fk_config *c) {
    FK_TRY(arch_gguf_refuse(f, c));
    if (c->bias_qkv || c->bias_out || c->bias_mlp)
        return fk_error(FK_ERR_UNSUPPORTED, "gguf export: linear biases in a partial-rotary Llama-style model: llama.cpp's phi3 architecture "
                        "has none");
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
// Qwen's window keys (use_sliding_window, sliding_window, max_window_layers 28 by default, layer_types)
#define QWEN_WINDOW {ARCH_F_QWEN_WINDOW, "use_sliding_window", ARCH_D_VALUE, 28}
static const arch_key keys_qwen2[] = {
    LLAMA_SIZES(2048, ARCH_D_SPLIT, 0), LLAMA_ROPE(1), QWEN_WINDOW, DROPOUT,
};
// qwen3: qwen2 with QK-norm (weight w), no q/k/v bias by default and an explicit head_dim
static const arch_key keys_qwen3[] = {
    LLAMA_SIZES(32768, ARCH_D_VALUE, 128), LLAMA_ROPE(1), {ARCH_F_ATTN_BIAS, "attention_bias", ARCH_D_VALUE, 0},
    QWEN_WINDOW, DROPOUT,
};
// mistral: a window on every layer, 4096 when the key is absent (transformers' MistralConfig, whose
// context is 4096 * 32 by default)
static const arch_key keys_mistral[] = {
    LLAMA_SIZES(131072, ARCH_D_SPLIT, 0), LLAMA_ROPE(1), {ARCH_F_WINDOW, "sliding_window", ARCH_D_VALUE, 4096}, DROPOUT,
};
// The sizes of a config.json without head_dim (d_model / n_head), with transformers' defaults.
#define PLAIN_SIZES(kv_how, kv, ctx, eps_key, eps) \
    {ARCH_F_D_MODEL, "hidden_size", ARCH_D_REQUIRED, 0}, {ARCH_F_FFN, "intermediate_size", ARCH_D_REQUIRED, 0}, \
    {ARCH_F_N_LAYER, "num_hidden_layers", ARCH_D_REQUIRED, 0}, {ARCH_F_N_HEAD, "num_attention_heads", ARCH_D_REQUIRED, 0}, \
    {ARCH_F_N_KV_HEAD, "num_key_value_heads", kv_how, kv}, {ARCH_F_MAX_SEQ, "max_position_embeddings", ARCH_D_VALUE, ctx}, \
    {ARCH_F_NORM_EPS, eps_key, ARCH_D_VALUE, eps}
// starcoder2: use_bias on every linear map, no window by default, its own dropout names
static const arch_key keys_starcoder2[] = {
    PLAIN_SIZES(ARCH_D_VALUE, 2, 4096, "norm_epsilon", 1e-5), LLAMA_ROPE(1), {ARCH_F_WINDOW, "sliding_window", ARCH_D_VALUE, 0},
    {ARCH_F_USE_BIAS, "use_bias", ARCH_D_VALUE, 1}, DROPOUT, {ARCH_F_ZERO, "residual_dropout", ARCH_D_VALUE, 0},
    {ARCH_F_ZERO, "embedding_dropout", ARCH_D_VALUE, 0},
};
// phi3: partial rotary (Phi-4-mini: 0.75) read before rope_scaling (LongRoPE has a factor per rotated
// pair), no window by default, GPT-2's dropout names
static const arch_key keys_phi3[] = {
    PLAIN_SIZES(ARCH_D_N_HEAD, 0, 4096, "rms_norm_eps", 1e-5), {ARCH_F_ORIG_CTX, "original_max_position_embeddings", ARCH_D_VALUE, 0},
    {ARCH_F_ROTARY, "partial_rotary_factor", ARCH_D_VALUE, 1},
    LLAMA_ROPE(1 | ARCH_ROPE_PHI3_NAMES), {ARCH_F_WINDOW, "sliding_window", ARCH_D_VALUE, 0},
    {ARCH_F_ZERO, "resid_pdrop", ARCH_D_VALUE, 0}, {ARCH_F_ZERO, "embd_pdrop", ARCH_D_VALUE, 0}, DROPOUT,
    {ARCH_F_NULL, "pad_token_id", ARCH_D_VALUE, 0},
};
// mpt: the sizes under MPT's names (the FFN width as expansion_ratio * d_model), the rest (attn_config, ...) as one group
static const arch_key keys_mpt[] = {
    {ARCH_F_D_MODEL, "d_model", ARCH_D_REQUIRED, 0}, {ARCH_F_N_HEAD, "n_heads", ARCH_D_REQUIRED, 0},
    {ARCH_F_N_LAYER, "n_layers", ARCH_D_REQUIRED, 0}, {ARCH_F_MAX_SEQ, "max_seq_len", ARCH_D_VALUE, 2048},
    {ARCH_F_NORM_EPS, "layer_norm_epsilon", ARCH_D_VALUE, 1e-5}, {ARCH_F_FFN, "expansion_ratio", ARCH_D_RATIO, 4},
    {ARCH_F_MPT, "attn_config", ARCH_D_VALUE, 0},
    {ARCH_F_ZERO, "resid_pdrop", ARCH_D_VALUE, 0}, {ARCH_F_ZERO, "emb_pdrop", ARCH_D_VALUE, 0},
};
// gpt_neox: transformers 4's keys, which 5 still reads (rotary_pct and rotary_emb_base go to
// rope_parameters, read too); absent hidden_act is the exact GELU (`def` 1)
static const arch_key keys_gpt_neox[] = {
    {ARCH_F_D_MODEL, "hidden_size", ARCH_D_REQUIRED, 0}, {ARCH_F_FFN, "intermediate_size", ARCH_D_REQUIRED, 0},
    {ARCH_F_N_LAYER, "num_hidden_layers", ARCH_D_REQUIRED, 0}, {ARCH_F_N_HEAD, "num_attention_heads", ARCH_D_REQUIRED, 0},
    {ARCH_F_MAX_SEQ, "max_position_embeddings", ARCH_D_VALUE, 2048}, {ARCH_F_NORM_EPS, "layer_norm_eps", ARCH_D_VALUE, 1e-5},
    {ARCH_F_ROPE_THETA, "rotary_emb_base", ARCH_D_VALUE, 1e4}, {ARCH_F_ACT, "hidden_act", ARCH_D_VALUE, 1},
    {ARCH_F_ROTARY, "rotary_pct", ARCH_D_VALUE, 0.25}, {ARCH_F_PARALLEL, "use_parallel_residual", ARCH_D_VALUE, 1},
    {ARCH_F_ATTN_BIAS, "attention_bias", ARCH_D_VALUE, 1}, DROPOUT, {ARCH_F_ZERO, "hidden_dropout", ARCH_D_VALUE, 0},
};
// phi: partial_rotary_factor 0.5 when absent; qk_layernorm (LayerNorms on q and k) is refused
static const arch_key keys_phi[] = {
    PLAIN_SIZES(ARCH_D_N_HEAD, 0, 2048, "layer_norm_eps", 1e-5), {ARCH_F_ROPE_THETA, "rope_theta", ARCH_D_VALUE, 1e4},
    {ARCH_F_ACT, "hidden_act", ARCH_D_VALUE, 0}, {ARCH_F_ROTARY, "partial_rotary_factor", ARCH_D_VALUE, 0.5},
    {ARCH_F_FLAG, "qk_layernorm", ARCH_D_VALUE, 0}, {ARCH_F_ZERO, "resid_pdrop", ARCH_D_VALUE, 0}, {ARCH_F_ZERO, "embd_pdrop", ARCH_D_VALUE, 0},
    DROPOUT,
};
// stablelm: partial_rotary_factor 0.25 when absent (transformers 5: in rope_parameters with rope_theta),
// use_qkv_bias, use_parallel_residual (one shared norm), qk_layernorm (a LayerNorm per head, StableLM 2 12B)
static const arch_key keys_stablelm[] = {
    PLAIN_SIZES(ARCH_D_N_HEAD, 0, 4096, "layer_norm_eps", 1e-5), {ARCH_F_ROPE_THETA, "rope_theta", ARCH_D_VALUE, 1e4},
    {ARCH_F_ACT, "hidden_act", ARCH_D_VALUE, 0}, {ARCH_F_ROTARY, "partial_rotary_factor", ARCH_D_VALUE, 0.25},
    {ARCH_F_QKV_BIAS, "use_qkv_bias", ARCH_D_VALUE, 0}, {ARCH_F_PARALLEL, "use_parallel_residual", ARCH_D_VALUE, 0},
    {ARCH_F_QK_LN, "qk_layernorm", ARCH_D_VALUE, 0}, DROPOUT, {ARCH_F_ZERO, "hidden_dropout", ARCH_D_VALUE, 0},
};
// olmo2: Llama's keys (head_dim d_model / n_head when absent; Olmo2Attention reads it when present),
// rms_norm_eps 1e-5 when absent (Olmo2Config's default)
static const arch_key keys_olmo2[] = {
    PLAIN_SIZES(ARCH_D_N_HEAD, 0, 2048, "rms_norm_eps", 1e-5), {ARCH_F_HEAD_DIM, "head_dim", ARCH_D_SPLIT, 0}, LLAMA_ROPE(1),
    {ARCH_F_ATTN_BIAS, "attention_bias", ARCH_D_VALUE, 0}, DROPOUT,
};
// falcon: its own size names (ffn_hidden_size 4 * d_model when absent), the RoPE of transformers 5
// (rope_parameters), activation "gelu" (exact) by default, bias on every linear map, the layout group
static const arch_key keys_falcon[] = {
    {ARCH_F_D_MODEL, "hidden_size", ARCH_D_REQUIRED, 0}, {ARCH_F_N_LAYER, "num_hidden_layers", ARCH_D_REQUIRED, 0},
    {ARCH_F_N_HEAD, "num_attention_heads", ARCH_D_REQUIRED, 0}, {ARCH_F_FFN, "ffn_hidden_size", ARCH_D_4D, 0},
    {ARCH_F_MAX_SEQ, "max_position_embeddings", ARCH_D_VALUE, 2048}, {ARCH_F_NORM_EPS, "layer_norm_epsilon", ARCH_D_VALUE, 1e-5},
    {ARCH_F_ROPE_THETA, "rope_theta", ARCH_D_VALUE, 1e4}, {ARCH_F_ROPE_SCALING, "rope_scaling", ARCH_D_VALUE, 1},
    {ARCH_F_ACT, "activation", ARCH_D_VALUE, 1}, {ARCH_F_USE_BIAS, "bias", ARCH_D_VALUE, 0}, {ARCH_F_FALCON, "", ARCH_D_VALUE, 0},
    DROPOUT, {ARCH_F_ZERO, "hidden_dropout", ARCH_D_VALUE, 0},
};
// Mixture of experts. The keys of transformers' classes beyond the expert count (router_aux_loss_coef and
// output_router_logits false are written as the class writes them; fusekit adds no load-balancing loss)
static const arch_moe moe_mixtral = {.count_alias = "num_experts", .used_def = 2, .jitter_key = true, .aux_coef = 0.001};
static const arch_moe moe_qwen2 = {.used_def = 4, .ffn_key = "moe_intermediate_size", .ffn_def = 1408,
                                   .shared_key = "shared_expert_intermediate_size", .shared_def = 5632, .norm_key = true,
                                   .sparse_keys = true, .aux_coef = 0.001};
static const arch_moe moe_qwen3 = {.count_alias = "num_local_experts", .used_def = 8, .ffn_key = "moe_intermediate_size", .ffn_def = 768,
                                   .norm_key = true, .sparse_keys = true, .aux_coef = 0.001};
static const arch_moe moe_olmoe = {.count_alias = "num_local_experts", .used_def = 8, .norm_key = true, .aux_coef = 0.01};
// model_type fusekit: every MoE switch, the experts per layer included (a folded model)
static const arch_moe moe_fusekit = {.ffn_key = "moe_intermediate_size", .norm_key = true, .sparse_keys = true, .per_layer = true};
// mixtral: Mistral's keys (a window on every layer, none by default), base 1e6, 8 KV heads by default; its
// experts are intermediate_size wide
static const arch_key keys_mixtral[] = {
    PLAIN_SIZES(ARCH_D_VALUE, 8, 131072, "rms_norm_eps", 1e-5), {ARCH_F_HEAD_DIM, "head_dim", ARCH_D_SPLIT, 0},
    {ARCH_F_ROPE_THETA, "rope_theta", ARCH_D_VALUE, 1e6}, {ARCH_F_ACT, "hidden_act", ARCH_D_VALUE, 0},
    {ARCH_F_ROPE_SCALING, "rope_scaling", ARCH_D_VALUE, 1}, {ARCH_F_WINDOW, "sliding_window", ARCH_D_VALUE, 0},
    {ARCH_F_MOE, "num_local_experts", ARCH_D_VALUE, 8}, DROPOUT,
};
// qwen2_moe: qkv_bias (transformers 5; 4 always has q/k/v biases), windows refused (transformers 4 and 5 slide
// different layers), 60 experts, the dense layers intermediate_size wide
static const arch_key keys_qwen2_moe[] = {
    PLAIN_SIZES(ARCH_D_N_HEAD, 0, 32768, "rms_norm_eps", 1e-6), {ARCH_F_HEAD_DIM, "head_dim", ARCH_D_SPLIT, 0}, LLAMA_ROPE(1),
    {ARCH_F_QKV_BIAS, "qkv_bias", ARCH_D_VALUE, 1}, {ARCH_F_FLAG, "use_sliding_window", ARCH_D_VALUE, 0},
    {ARCH_F_MOE, "num_experts", ARCH_D_VALUE, 60}, DROPOUT,
};
// qwen3_moe: QK-norm per head, 4 KV heads and 128 experts by default, no window
static const arch_key keys_qwen3_moe[] = {
    PLAIN_SIZES(ARCH_D_VALUE, 4, 32768, "rms_norm_eps", 1e-6), {ARCH_F_HEAD_DIM, "head_dim", ARCH_D_SPLIT, 0}, LLAMA_ROPE(1),
    {ARCH_F_ATTN_BIAS, "attention_bias", ARCH_D_VALUE, 0}, {ARCH_F_FLAG, "use_sliding_window", ARCH_D_VALUE, 0},
    {ARCH_F_MOE, "num_experts", ARCH_D_VALUE, 128}, DROPOUT,
};
// olmoe: QK-norm over the whole projections, no head_dim key (d_model / n_head), clip_qkv refused (OLMoE clamps
// after its QK-norm, fusekit before), 64 experts intermediate_size wide
static const arch_key keys_olmoe[] = {
    PLAIN_SIZES(ARCH_D_N_HEAD, 0, 4096, "rms_norm_eps", 1e-5), LLAMA_ROPE(1), {ARCH_F_ATTN_BIAS, "attention_bias", ARCH_D_VALUE, 0},
    {ARCH_F_NULL_ONLY, "clip_qkv", ARCH_D_VALUE, 0}, {ARCH_F_MOE, "num_experts", ARCH_D_VALUE, 64}, DROPOUT,
};
// fusekit: the switches before rope_scaling, whose LongRoPE lists have rotary_dim / 2 entries
static const arch_key keys_fusekit[] = {
    LLAMA_SIZES(2048, ARCH_D_SPLIT, 0), {ARCH_F_SWITCHES, "fusekit", ARCH_D_REQUIRED, 0}, {ARCH_F_MOE, "num_experts", ARCH_D_VALUE, 0},
    LLAMA_ROPE(0), DROPOUT,
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
#define SW_STARCODER2 {FK_NORM_LAYERNORM, FK_POS_ROPE, FK_MLP_GELU, true, true,  true,  true,  false, false, false}
#define SW_GEMMA(post, qk) {FK_NORM_RMSNORM, FK_POS_ROPE, FK_MLP_GEGLU, false, false, false, false, post, qk, true}
#define SW_OLMO2 {FK_NORM_RMSNORM, FK_POS_ROPE, FK_MLP_SWIGLU, false, false, false, false, true, true, false}
#define SW_MPT   {FK_NORM_LAYERNORM, FK_POS_NONE,    FK_MLP_GELU,   false, false, false, false, false, false, false}
#define SW_NEOX_PHI {FK_NORM_LAYERNORM, FK_POS_ROPE,   FK_MLP_GELU,   true,  true,  true,  true,  false, false, false}
#define SW_STABLELM {FK_NORM_LAYERNORM, FK_POS_ROPE,   FK_MLP_SWIGLU, false, false, false, true,  false, false, false}
#define SW_FALCON {FK_NORM_LAYERNORM,  FK_POS_ROPE,   FK_MLP_GELU,   false, false, false, true,  false, false, false}

// The Hugging Face columns, and the GGUF columns of a row with llama.cpp's Llama tensor names.
#define HF(cls_, set_, keys_, acts_, tied_, fits_) \
    .hf_class = cls_, .hf = SET(set_), .keys = SET(keys_), .acts = acts_, .tied = tied_, .hf_fits = fits_
#define GGUF(name_, gemma_, neox_, keys_, claims_, fits_) \
    .gguf = name_, .gguf_gemma = gemma_, .gguf_neox = neox_, .gguf_t = SET(gguf_llama), .gguf_keys = keys_, .gguf_claims = claims_, .gguf_fits = fits_
#define GK_GEMMA (ARCH_GK_LLAMA | ARCH_GK_HEAD_LENGTHS | ARCH_GK_GEMMA)
#define GK_MOE (ARCH_GK_LLAMA | ARCH_GK_MOE)  // llama.cpp's MoE-only architectures (qwen2moe, qwen3moe, olmoe)

// In fk_arch order for the rows that have one (fk_arch_name, config.json's architectures).
const arch_family arch_families[] = {
    {FK_ARCH_GPT2, "gpt2", NULL, 0, SW_GPT2, HF("GPT2LMHeadModel", hf_gpt2, keys_gpt2, acts_gelu_tanh, true, hf_fits_gpt2),
     .acts_exact = acts_gelu_exact, .hf_optional_prefix = "transformer.",
     .gguf = "gpt2", .gguf_t = SET(gguf_gpt2), .gguf_keys = ARCH_GK_LAYERNORM, .gguf_claims = gguf_claims_kind, .gguf_fits = gguf_fits_gpt2},
    {FK_ARCH_LLAMA, "llama", NULL, 0, SW_LLAMA, HF("LlamaForCausalLM", hf_llama, keys_llama, acts_silu, false, hf_fits_llama),
     GGUF("llama", false, false, ARCH_GK_LLAMA | ARCH_GK_EXPERTS | ARCH_GK_MOE_NORM, gguf_claims_llama, gguf_fits_llama)},  // (Mixtral: experts)
    // qwen2: GGUF import only (llama.cpp's qwen2: llama's names and keys, q/k/v biases, NEOX order as Hugging
    // Face stores q and k); export keeps writing Qwen2-style models as llama (permuted Q/K)
    {FK_ARCH_QWEN2, "qwen2", NULL, 0, SW_QWEN2, HF("Qwen2ForCausalLM", hf_llama, keys_qwen2, acts_silu, false, hf_fits_qwen),
     .gguf_import = "qwen2", .gguf_neox = true, .gguf_t = SET(gguf_llama), .gguf_keys = ARCH_GK_LLAMA},
    {FK_ARCH_MISTRAL, "mistral", NULL, 0, SW_LLAMA, HF("MistralForCausalLM", hf_llama, keys_mistral, acts_silu, false, hf_fits_mistral)},
    // every switch in its config.json: what no other model_type describes (fk_config_arch's fallback)
    {FK_ARCH_FUSEKIT, "fusekit", NULL, 0, SW_LLAMA, HF("FusekitForCausalLM", hf_llama, keys_fusekit, NULL, false, NULL), .moe = &moe_fusekit},
    {FK_ARCH_GEMMA, "gemma", NULL, 1, SW_GEMMA(false, false), HF("GemmaForCausalLM", hf_llama, keys_gemma, acts_gemma1, true, hf_fits_gemma),
     GGUF("gemma", true, true, GK_GEMMA, gguf_claims_gemma, gguf_fits_gemma)},
    {FK_ARCH_GEMMA2, "gemma2", NULL, 2, SW_GEMMA(true, false), HF("Gemma2ForCausalLM", hf_llama, keys_gemma2, acts_gemma, true, hf_fits_gemma),
     GGUF("gemma2", true, true, GK_GEMMA, gguf_claims_gemma, gguf_fits_gemma), .gguf_swa_pattern = 2},
    // gemma3: Gemma 3 with a vision tower, whose text model is text_config (its weights under another prefix)
    {FK_ARCH_GEMMA3, "gemma3_text", "gemma3", 3, SW_GEMMA(true, true),
     HF("Gemma3ForCausalLM", hf_llama, keys_gemma3, acts_gemma, true, hf_fits_gemma),
     GGUF("gemma3", true, true, GK_GEMMA, gguf_claims_gemma, gguf_fits_gemma), .gguf_swa_pattern = 6},
    // qwen3: llama.cpp rotates it in NEOX order, as Hugging Face stores q and k
    {FK_ARCH_QWEN3, "qwen3", NULL, 0, SW_QWEN3, HF("Qwen3ForCausalLM", hf_llama, keys_qwen3, acts_silu, false, hf_fits_qwen),
     GGUF("qwen3", false, true, ARCH_GK_LLAMA, gguf_claims_llama, gguf_fits_llama)},
    // starcoder2: llama.cpp rotates it in NEOX order; its tensors are llama's names with LayerNorm and linear biases
    {FK_ARCH_STARCODER2, "starcoder2", NULL, 0, SW_STARCODER2,
     HF("Starcoder2ForCausalLM", hf_starcoder2, keys_starcoder2, acts_gemma, true, hf_fits_starcoder2), .acts_exact = acts_gelu_exact,
     GGUF("starcoder2", false, true, ARCH_GK_LLAMA | ARCH_GK_LAYERNORM, gguf_claims_starcoder2, gguf_fits_starcoder2)},
    // phi3: llama's computation with fused tensors; llama.cpp rotates it in NEOX order, also partially
    {FK_ARCH_PHI3, "phi3", NULL, 0, SW_LLAMA, HF("Phi3ForCausalLM", hf_phi3, keys_phi3, acts_silu, false, hf_fits_phi3),
     .gguf = "phi3", .gguf_neox = true, .gguf_rotary_part = true, .gguf_t = SET(gguf_phi3), .gguf_keys = ARCH_GK_LLAMA,
     .gguf_claims = gguf_claims_phi3, .gguf_fits = gguf_fits_phi3},
    // mpt: ALiBi, clip_qkv, exact GELU (llama.cpp: the tanh GELU), no biases (no_bias), tied by default
    {FK_ARCH_MPT, "mpt", NULL, 0, SW_MPT, HF("MptForCausalLM", hf_mpt, keys_mpt, NULL, true, hf_fits_mpt), .acts_exact = acts_gelu_exact, .alibi = true,
     .gguf = "mpt", .gguf_t = SET(gguf_gpt2), .gguf_keys = ARCH_GK_LAYERNORM | ARCH_GK_ALIBI, .gguf_claims = gguf_claims_mpt,
     .gguf_fits = gguf_fits_mpt},
    // gpt_neox (Pythia): per-head fused q/k/v, parallel (two norms) or sequential, partial rotary in NEOX order
    {FK_ARCH_GPTNEOX, "gpt_neox", NULL, 0, SW_NEOX_PHI, .residual = FK_RESID_PARALLEL,
     HF("GPTNeoXForCausalLM", hf_gpt_neox, keys_gpt_neox, acts_gelu_tanh, false, hf_fits_neox_phi), .acts_exact = acts_gelu_exact,
     .gguf = "gptneox", .gguf_neox = true, .gguf_rotary_part = true, .gguf_t = SET(gguf_gpt2),
     .gguf_keys = ARCH_GK_LLAMA | ARCH_GK_LAYERNORM | ARCH_GK_PARALLEL, .gguf_claims = gguf_claims_neox_phi, .gguf_fits = gguf_fits_neox_phi},
    // phi (Phi-2): attention and MLP in parallel from one LayerNorm, an LM-head bias, partial rotary
    {FK_ARCH_PHI, "phi", NULL, 0, SW_NEOX_PHI, .residual = FK_RESID_PARALLEL_SHARED,
     .bias_lm_head = true,
     HF("PhiForCausalLM", hf_phi, keys_phi, acts_gelu_tanh, false, hf_fits_neox_phi), .acts_exact = acts_gelu_exact,
     .gguf = "phi2", .gguf_neox = true, .gguf_rotary_part = true, .gguf_t = SET(gguf_phi2), .gguf_t_fused = SET(gguf_gpt2),
     .gguf_keys = ARCH_GK_LLAMA | ARCH_GK_LAYERNORM,
     .gguf_claims = gguf_claims_neox_phi, .gguf_fits = gguf_fits_neox_phi},
    // stablelm (StableLM 3B, StableLM 2): LayerNorm with bias, SwiGLU, q/k/v biases alone, partial rotary in
    // NEOX order, sequential or parallel from one norm (llama.cpp: parallel when the file has no ffn_norm),
    // QK-norm as a LayerNorm per head when qk_layernorm (StableLM 2 12B; llama.cpp: attn_q_norm/attn_k_norm)
    {FK_ARCH_STABLELM, "stablelm", NULL, 0, SW_STABLELM, .residual = FK_RESID_PARALLEL_SHARED, .qk_norm_ln = true,
     HF("StableLmForCausalLM", hf_llama, keys_stablelm, acts_silu, false, hf_fits_stablelm),
     .gguf = "stablelm", .gguf_neox = true, .gguf_rotary_part = true, .gguf_t = SET(gguf_llama),
     .gguf_keys = ARCH_GK_LLAMA | ARCH_GK_LAYERNORM, .gguf_claims = gguf_claims_stablelm, .gguf_fits = gguf_fits_stablelm},
    // olmo2 (OLMo 2): post-norms only (post_attention_layernorm, post_feedforward_layernorm), q_norm/k_norm
    // over the whole projections; Llama's tensor names; GGUF olmo2 in NEOX order (no attn_norm/ffn_norm; a
    // window there is OLMo 3's: 3 of every 4 layers slide, refused on import)
    {FK_ARCH_OLMO2, "olmo2", NULL, 0, SW_OLMO2, .no_pre_norms = true, .qk_norm_whole = true,
     HF("Olmo2ForCausalLM", hf_llama, keys_olmo2, acts_silu, false, hf_fits_llama),
     GGUF("olmo2", false, true, ARCH_GK_LLAMA, gguf_claims_llama, gguf_fits_olmo2), .gguf_swa_pattern = 4},
    // falcon (Falcon 7B/40B/180B, Falcon 2): fused q/k/v grouped per KV head, parallel from one norm (7B) or two
    // (new_decoder_architecture), or sequential; exact GELU by default; ALiBi refused; GGUF falcon: Falcon 7B's form exported
    // and imported (NEOX order), the new decoder's two norms too (attn_norm_2; with biases gptneox's claim)
    {FK_ARCH_FALCON, "falcon", NULL, 0, SW_FALCON, .residual = FK_RESID_PARALLEL_SHARED,
     HF("FalconForCausalLM", hf_falcon, keys_falcon, acts_gelu_tanh, true, hf_fits_falcon), .acts_exact = acts_gelu_exact,
     .gguf = "falcon", .gguf_neox = true, .gguf_t = SET(gguf_falcon), .gguf_keys = ARCH_GK_LLAMA | ARCH_GK_LAYERNORM,
     .gguf_claims = gguf_claims_falcon, .gguf_fits = gguf_fits_falcon},
    // mixture of experts: mixtral (Mixtral 8x7B / 8x22B: renormalised top-k, no shared expert), qwen2_moe (Qwen1.5-MoE,
    // Qwen2-57B-A14B: a shared expert with a sigmoid gate, dense layers by mlp_only_layers), qwen3_moe (QK-norm per head),
    // olmoe (OLMoE: QK-norm over the whole projections)
    {FK_ARCH_MIXTRAL, "mixtral", NULL, 0, SW_LLAMA, HF("MixtralForCausalLM", hf_mixtral, keys_mixtral, acts_silu, false, hf_fits_moe),
     .moe = &moe_mixtral},
    {FK_ARCH_QWEN2_MOE, "qwen2_moe", NULL, 0, SW_QWEN2, HF("Qwen2MoeForCausalLM", hf_llama, keys_qwen2_moe, acts_silu, false, hf_fits_moe),
     .moe = &moe_qwen2, GGUF("qwen2moe", false, true, GK_MOE | ARCH_GK_MOE_SHARED | ARCH_GK_EXPERT_FFN, gguf_claims_llama, gguf_fits_moe_untied)},
    {FK_ARCH_QWEN3_MOE, "qwen3_moe", NULL, 0, SW_QWEN3, HF("Qwen3MoeForCausalLM", hf_llama, keys_qwen3_moe, acts_silu, false, hf_fits_moe),
     .moe = &moe_qwen3, GGUF("qwen3moe", false, true, GK_MOE | ARCH_GK_MOE_NORM | ARCH_GK_EXPERT_FFN, gguf_claims_llama, gguf_fits_llama)},
    {FK_ARCH_OLMOE, "olmoe", NULL, 0, SW_QWEN3, .qk_norm_whole = true, HF("OlmoeForCausalLM", hf_llama, keys_olmoe, acts_silu, false, hf_fits_moe),
     .moe = &moe_olmoe, GGUF("olmoe", false, true, GK_MOE, gguf_claims_llama, gguf_fits_moe_untied)},
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

static bool same_name(const char *g, const char *name, size_t n) { return g && strlen(g) == n && memcmp(g, name, n) == 0; }

// (a row's gguf_import too: qwen2)
const arch_family *arch_of_gguf(const char *name, size_t n) {
    for (int i = 0; i < arch_n_families; i++)
        if (same_name(arch_families[i].gguf, name, n) || same_name(arch_families[i].gguf_import, name, n)) return &arch_families[i];
    return NULL;
}

const char *arch_gguf_names(void) {
    static char buf[256];
    if (buf[0]) return buf;
    size_t k = 0;
    for (int i = 0; i < arch_n_families; i++) {
        const char *g = arch_families[i].gguf ? arch_families[i].gguf : arch_families[i].gguf_import;
        if (g && k < sizeof buf) k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", k ? ", " : "", g);
    }
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
    case FK_P_LM_HEAD_B: return m->lm_head_b;
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
    case FK_P_ROUTER_W: return o->router_w;
    case FK_P_SHARED_GATE_W: return o->shared_gate_w;
    case FK_P_EXP_UP_W: case FK_P_EXP_DOWN_W: break;  // one entry per expert: not a layer role
    case FK_P_COUNT: break;
    }
    return -1;
}

static bool per_layer(fk_param_kind k) {
    return k != FK_P_TOK_EMB && k != FK_P_POS_EMB && k != FK_P_LNF_W && k != FK_P_LNF_B && k != FK_P_LM_HEAD && k != FK_P_LM_HEAD_B;
}

// Rows [*row0, *row0 + *rows) of entry p that tensor row r of layer l holds; false when the
// tensor does not exist for this config.
static bool item_rows(const fk_config *c, const arch_tensor *r, int l, const fk_param *p, int64_t *row0, int64_t *rows) {
    if (((r->flags & ARCH_T_POST) && !c->post_norms) || ((r->flags & ARCH_T_NO_POST) && c->post_norms)) return false;
    bool two_norms = c->residual == FK_RESID_PARALLEL;
    if (((r->flags & ARCH_T_TWO_NORMS) && !two_norms) || ((r->flags & ARCH_T_ONE_NORM) && two_norms)) return false;
    if (((r->flags & ARCH_T_QK_LN) && !c->qk_norm_ln) || ((r->flags & ARCH_T_NO_QK_LN) && c->qk_norm_ln)) return false;
    bool moe = l >= 0 && c->moe[l], expert = r->kind == FK_P_EXP_UP_W || r->kind == FK_P_EXP_DOWN_W;
    if (((r->flags & ARCH_T_MOE) && !moe) || ((r->flags & ARCH_T_DENSE) && moe)) return false;
    int64_t Dq = l >= 0 ? fk_config_heads(c, l) * c->head_dim : 0, Dkv = c->n_kv_head * c->head_dim, F = l >= 0 ? c->ffn[l] : 0;
    if (expert) F = c->expert_ffn;
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

static fk_status push_item(item_list *L, const arch_item *it);

// Item `it` of layer l as one tensor per head of hd rows, head h named by the pattern's second %d
// (StableLM's q_layernorm.norms.%d).
static fk_status add_head_items(item_list *L, const arch_item *it, const char *pattern, int l, int64_t hd) {
    for (int64_t h = 0; h < it->rows / hd; h++) {
        arch_item ih = *it;
        ih.row0 = it->row0 + h * hd;
        ih.rows = hd;
        snprintf(ih.name, sizeof ih.name, pattern, l, (int)h);
        FK_TRY(push_item(L, &ih));
    }
    return FK_OK;
}

// An expert role's tensors of MoE layer l: one stacking every expert (ARCH_T_EXPERTS), or one per
// expert (the name's second %d); none on a dense layer.
static fk_status add_expert_items(item_list *L, const fk_model *m, const arch_tensor *r, int l) {
    const fk_layer_offsets *o = &m->layer[l];
    int64_t E = fk_config_experts(&m->cfg, l);
    bool up = r->kind == FK_P_EXP_UP_W, stacked = r->flags & ARCH_T_EXPERTS;
    int64_t off0 = up ? o->exp_up_w : o->exp_down_w, stride = up ? o->exp_up_stride : o->exp_down_stride;
    for (int64_t e = 0; off0 >= 0 && e < (stacked ? 1 : E); e++) {
        const fk_param *p = fk_model_param_of(m, off0 + e * stride);
        FK_ASSERT(p && p->offset == off0 + e * stride && p->expert == (int)e);
        arch_item it = {.param = (int)(p - m->params), .flags = r->flags, .n_exp = stacked ? E : 0, .exp_stride = stacked ? stride : 0};
        if (!item_rows(&m->cfg, r, l, p, &it.row0, &it.rows)) return FK_OK;
        snprintf(it.name, sizeof it.name, r->name, l, (int)e);
        FK_TRY(push_item(L, &it));
    }
    return FK_OK;
}

// Appends tensor row r of layer l (-1: a global tensor) when the model has it.
static fk_status add_item(item_list *L, const fk_model *m, const arch_tensor *r, int l) {
    if (r->kind == FK_P_EXP_UP_W || r->kind == FK_P_EXP_DOWN_W) return add_expert_items(L, m, r, l);
    int64_t off = kind_offset(m, r->kind, l);
    if (off < 0) return FK_OK;
    const fk_param *p = fk_model_param_of(m, off);
    FK_ASSERT(p && p->offset == off);
    arch_item it = {.param = (int)(p - m->params), .flags = r->flags};
    if (!item_rows(&m->cfg, r, l, p, &it.row0, &it.rows)) return FK_OK;
    if (r->flags & ARCH_T_QK_LN) return add_head_items(L, &it, r->name, l, m->cfg.head_dim);
    snprintf(it.name, sizeof it.name, r->name, l);
    return push_item(L, &it);
}

static fk_status push_item(item_list *L, const arch_item *it) {
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 64;
        arch_item *t = realloc(L->t, (size_t)cap * sizeof *t);
        if (!t) return fk_error(FK_ERR_NOMEM, "out of memory");
        L->t = t;
        L->cap = cap;
    }
    L->t[L->n++] = *it;
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
