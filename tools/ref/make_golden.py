#!/usr/bin/env python3
"""Generate golden reference files for the fusekit C test suite.

For each of three tiny decoder-only models (GPT-2, Llama, Qwen2) this script
builds the *real* Hugging Face transformers model class with random weights,
and writes to tests/data/golden/<name>/:

  config.json, model.safetensors   model.save_pretrained(..., safe_serialization=True), float32
  golden.safetensors               reference tensors (see README.md next to this script)

It also recomputes every golden quantity in float64 (same weights, same code
path, with the float32 up-casts that transformers hard-codes removed for the
float64 run only) and prints/records the float32-vs-float64 deviations, which
show how much slack float32 arithmetic itself needs.

It then writes forward-only reference folders that exercise loading of Hugging
Face folders (other model types, config keys, bf16/f16 weights, shards):
config.json + the weights as save_pretrained writes them, and a golden.safetensors
with just tokens, logits and loss (see FORWARD_SPECS).

Run:  tools/ref/.venv/bin/python tools/ref/make_golden.py [--only NAME ...]
"""

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import sys
import types

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MptConfig,
    MptForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
    StableLmConfig,
    StableLmForCausalLM,
    FalconConfig,
    FalconForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
)

# ----------------------------------------------------------------------------
# Fixed settings (changing any of these changes the golden files)
# ----------------------------------------------------------------------------
B, T = 2, 16
SWA = 8  # the sliding windows of the *_swa, starcoder2 and phi3 folders: half of T
TRAIN_STEPS = 5
LR = 1e-3
BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.1
CLIP_NORM = 1.0

STD_MATRIX = 0.1  # every Linear/Conv1D weight and every embedding
STD_BIAS = 0.05  # every bias (incl. LayerNorm bias)
STD_NORM = 0.1  # norm weights = 1 + N(0, STD_NORM^2)
ROUTER_SCALE = 4.0  # MoE router weights: STD_MATRIX times this (top-k margins well above float32 rounding)


# The tiny configurations every reference starts from; each folder changes a few keys.
GPT2_BASE = dict(
    vocab_size=64,
    n_positions=32,
    n_embd=32,
    n_layer=2,
    n_head=4,
    activation_function="gelu_new",
    layer_norm_epsilon=1e-5,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    attn_implementation="eager",
)
LLAMA_BASE = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=64,
    tie_word_embeddings=False,
    attention_bias=False,
    attention_dropout=0.0,
    attn_implementation="eager",
)
QWEN2_BASE = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=64,
    tie_word_embeddings=False,
    use_sliding_window=False,
    attention_dropout=0.0,
    attn_implementation="eager",
)

# MPT: transformers' MptConfig keys (no_bias, expansion_ratio 4; its attention always has ALiBi
# with alibi_bias_max 8 and ignores learned_pos_emb)
MPT_ATTN = dict(alibi=True, alibi_bias_max=8, attn_pdrop=0, clip_qkv=None, softmax_scale=None)
MPT_BASE = dict(
    vocab_size=64,
    d_model=48,
    n_heads=6,
    n_layers=2,
    expansion_ratio=4,
    max_seq_len=64,
    layer_norm_epsilon=1e-5,
    learned_pos_emb=False,
    no_bias=True,
    attn_config=MPT_ATTN,
    attn_implementation="eager",
)

# GPT-NeoX (Pythia) in transformers 4's keys, which transformers 5 still reads (rotary_pct,
# rotary_emb_base become rope_parameters)
FALCON_BASE = dict(
    vocab_size=72,
    hidden_size=64,
    ffn_hidden_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    layer_norm_epsilon=1e-5,
    multi_query=True,
    parallel_attn=True,
    new_decoder_architecture=False,
    bias=False,
    alibi=False,
    activation="gelu",
    hidden_dropout=0.0,
    attention_dropout=0.0,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    attn_implementation="eager",
)
NEOX_BASE = dict(
    vocab_size=70,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    layer_norm_eps=1e-5,
    hidden_act="gelu",
    rotary_pct=0.25,
    rotary_emb_base=10000,
    use_parallel_residual=True,
    attention_bias=True,
    tie_word_embeddings=False,
    attention_dropout=0.0,
    hidden_dropout=0.0,
    attn_implementation="eager",
)

# StableLM (StableLmConfig's keys; partial_rotary_factor goes to rope_parameters)
STABLELM_BASE = dict(
    vocab_size=78,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    layer_norm_eps=1e-5,
    hidden_act="silu",
    rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25),
    use_qkv_bias=True,
    qk_layernorm=False,
    use_parallel_residual=False,
    tie_word_embeddings=False,
    attention_dropout=0.0,
    hidden_dropout=0.0,
    attn_implementation="eager",
)

# parameter name -> the name save_pretrained writes it under, where they differ
SAVED_AS = {"lm_head.weight": "embed_out.weight"}


def config(cls, base, **changes):
    """cls(**base) with some keys changed."""
    return cls(**{**base, **changes})


def model_specs():
    """name -> (model class, config, weight seed, token seed)."""
    return {
        "gpt2": (GPT2LMHeadModel, config(GPT2Config, GPT2_BASE), 1001, 2001),
        "llama": (LlamaForCausalLM, config(LlamaConfig, LLAMA_BASE), 1002, 2002),
        "qwen2": (Qwen2ForCausalLM, config(Qwen2Config, QWEN2_BASE), 1003, 2003),
        # MPT (MptForCausalLM): ALiBi with 6 heads (not a power of two: MPT's interleaved slopes),
        # clip_qkv 0.5 (a good part of q/k/v clamped), no biases, exact GELU, tied embeddings
        "mpt": (MptForCausalLM, config(MptConfig, MPT_BASE, attn_config=dict(MPT_ATTN, clip_qkv=0.5)), 1004, 2004),
        # MPT with 8 heads (power of two), no clip, softmax_scale 0.3, an untied LM head
        "mpt_8h": (
            MptForCausalLM,
            config(MptConfig, MPT_BASE, d_model=32, n_heads=8, vocab_size=72, tie_word_embeddings=False,
                   attn_config=dict(MPT_ATTN, softmax_scale=0.3)),
            1005, 2005,
        ),
    }


# Saved with save_original_format=False (transformers 5's in-memory names: stacked experts).
STACKED = {"mixtral_stacked", "qwen2_moe_stacked"}


def moe_forward_specs():
    """Mixture of experts (4 experts, top 2, SwiGLU experts 16 wide) from each family's own class, for
    forward_specs."""
    f32 = torch.float32
    return {
        # Mixtral: renormalised top-k, no shared expert, GQA 4/2, base 1e6
        "mixtral": (
            MixtralForCausalLM,
            MixtralConfig(vocab_size=80, hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, num_local_experts=4,
                          num_experts_per_tok=2, tie_word_embeddings=False, attention_dropout=0.0, bos_token_id=1,
                          eos_token_id=2, attn_implementation="eager", experts_implementation="eager"),
            1090, 2090, f32, None,
        ),
        # Qwen2-MoE: a shared expert (24 wide) with its sigmoid gate, top-k not renormalised, q/k/v biases,
        # layer 1 dense (mlp_only_layers, intermediate_size 40) of 3
        "qwen2_moe": (
            Qwen2MoeForCausalLM,
            Qwen2MoeConfig(vocab_size=72, hidden_size=32, intermediate_size=40, moe_intermediate_size=16,
                           shared_expert_intermediate_size=24, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=64, rms_norm_eps=1e-6, num_experts=4, num_experts_per_tok=2,
                           norm_topk_prob=False, mlp_only_layers=[1], tie_word_embeddings=False, attention_dropout=0.0,
                           attn_implementation="eager", experts_implementation="eager"),
            1091, 2091, f32, None,
        ),
        # Qwen3-MoE: QK-norm per head, head_dim 16 != 32 / 4, norm_topk_prob true, no shared expert
        "qwen3_moe": (
            Qwen3MoeForCausalLM,
            Qwen3MoeConfig(vocab_size=76, hidden_size=32, intermediate_size=40, moe_intermediate_size=16, head_dim=16,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           rms_norm_eps=1e-6, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
                           tie_word_embeddings=False, attention_dropout=0.0, attn_implementation="eager", experts_implementation="eager"),
            1092, 2092, f32, None,
        ),
        # OLMoE: QK-norm over the whole q and k projections with GQA 4/2 (k_norm over 2 x 8), top-k not
        # renormalised, experts intermediate_size wide
        "olmoe": (
            OlmoeForCausalLM,
            OlmoeConfig(vocab_size=68, hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, num_experts=4,
                        num_experts_per_tok=2, norm_topk_prob=False, tie_word_embeddings=False, attention_dropout=0.0,
                        pad_token_id=None, bos_token_id=1, eos_token_id=2, attn_implementation="eager", experts_implementation="eager"),
            1093, 2093, f32, None,
        ),
    }


def forward_specs():
    """Forward-only reference folders for loading Hugging Face checkpoints.

    name -> (model class, config, weight seed, token seed, dtype the weights are
    saved in, max_shard_size or None). transformers 4.40 has no `head_dim` key
    for Llama/Mistral/Qwen2 (head_dim is always hidden_size / num_attention_heads),
    so no folder here can have a different head_dim.
    """
    f32 = torch.float32
    return {
        # Mistral with GQA (4 query heads share 1 kv head) and a sliding window
        # equal to T: within the window it is full causal attention.
        "mistral": (
            MistralForCausalLM,
            MistralConfig(
                vocab_size=96,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=1,
                rope_theta=10000.0,
                rms_norm_eps=1e-5,
                max_position_embeddings=64,
                sliding_window=T,
                tie_word_embeddings=False,
                attention_dropout=0.0,
                attn_implementation="eager",
            ),
            1011, 2011, f32, None,
        ),
        # Llama-3 / SmolLM-like: tied embeddings, rope_theta 5e5, rms eps 1e-5, 6/2 heads
        "llama3": (
            LlamaForCausalLM,
            config(LlamaConfig, LLAMA_BASE, vocab_size=128, hidden_size=48, intermediate_size=64, num_attention_heads=6,
                   rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=True),
            1012, 2012, f32, None,
        ),
        # attention_bias: q/k/v/o all have biases
        "llama_bias": (LlamaForCausalLM, config(LlamaConfig, LLAMA_BASE, num_key_value_heads=4, attention_bias=True), 1013, 2013, f32, None),
        "llama_bf16": (LlamaForCausalLM, config(LlamaConfig, LLAMA_BASE), 1014, 2014, torch.bfloat16, None),
        "llama_f16": (LlamaForCausalLM, config(LlamaConfig, LLAMA_BASE), 1015, 2015, torch.float16, None),
        "llama_sharded": (LlamaForCausalLM, config(LlamaConfig, LLAMA_BASE), 1016, 2016, f32, "30KB"),
        # Qwen2-0.5B-like: tied embeddings, q/k/v biases
        "qwen2_tied": (Qwen2ForCausalLM, config(Qwen2Config, QWEN2_BASE, vocab_size=80, tie_word_embeddings=True), 1017, 2017, f32, None),
        # GPT-2 Conv1D layout in bf16, with an explicit n_inner
        "gpt2_bf16": (GPT2LMHeadModel, config(GPT2Config, GPT2_BASE, vocab_size=72, n_inner=96), 1018, 2018, torch.bfloat16, None),
        # GPT-2 with exact (erf) GELU: activation_function "gelu"
        "gpt2_gelu": (GPT2LMHeadModel, config(GPT2Config, GPT2_BASE, activation_function="gelu"), 1019, 2019, f32, None),
        # Qwen3: QK-norm (RMSNorm over each q/k head), no q/k/v bias, head_dim 32 != hidden/heads 16
        "qwen3": (
            Qwen3ForCausalLM,
            config(Qwen3Config, QWEN2_BASE, vocab_size=88, hidden_size=64, intermediate_size=96, head_dim=32,
                   attention_bias=False),
            1020, 2020, f32, None,
        ),
        # sliding windows of 8 keys over T = 16 tokens: Mistral on every layer; Qwen2 and Qwen3
        # (use_sliding_window) on the layers from max_window_layers 1 on
        "mistral_swa": (
            MistralForCausalLM,
            config(MistralConfig, LLAMA_BASE, vocab_size=72, num_key_value_heads=1, sliding_window=SWA),
            1021, 2021, f32, None,
        ),
        "qwen2_swa": (
            Qwen2ForCausalLM,
            config(Qwen2Config, QWEN2_BASE, vocab_size=76, use_sliding_window=True, sliding_window=SWA, max_window_layers=1),
            1022, 2022, f32, None,
        ),
        "qwen3_swa": (
            Qwen3ForCausalLM,
            config(Qwen3Config, QWEN2_BASE, vocab_size=84, head_dim=16, attention_bias=False, use_sliding_window=True,
                   sliding_window=SWA, max_window_layers=1),
            1023, 2023, f32, None,
        ),
        # StarCoder2: LayerNorm with bias, GELU (tanh) MLP c_fc/c_proj, use_bias, GQA 4/2, tied, window 8
        "starcoder2": (
            Starcoder2ForCausalLM,
            Starcoder2Config(vocab_size=68, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, norm_epsilon=1e-5, rope_theta=10000.0,
                             sliding_window=SWA, use_bias=True, attention_dropout=0.0, residual_dropout=0.0,
                             embedding_dropout=0.0, attn_implementation="eager"),
            1024, 2024, f32, None,
        ),
        # Phi-3 mini-like: fused qkv_proj and gate_up_proj, RMSNorm, SwiGLU, no biases, GQA 4/2, window 8
        "phi3": (
            Phi3ForCausalLM,
            Phi3Config(vocab_size=70, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, original_max_position_embeddings=64,
                       rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=SWA, resid_pdrop=0.0, embd_pdrop=0.0,
                       attention_dropout=0.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                       attn_implementation="eager"),
            1025, 2025, f32, None,
        ),
        # Phi-4-mini-like: partial_rotary_factor 0.75 (6 of head_dim 8 turn), tied, no window
        "phi3_partial": (
            Phi3ForCausalLM,
            Phi3Config(vocab_size=74, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, original_max_position_embeddings=64,
                       rms_norm_eps=1e-5, rope_theta=10000.0, partial_rotary_factor=0.75, resid_pdrop=0.0, embd_pdrop=0.0,
                       attention_dropout=0.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                       attn_implementation="eager"),
            1026, 2026, f32, None,
        ),
        # Phi-4-mini's RoPE: partial_rotary_factor 0.75 with LongRoPE (3 factors per list: 6 rotated dims),
        # T = 16 beyond the original 8 (long factors)
        "phi3_longrope": (
            Phi3ForCausalLM,
            Phi3Config(vocab_size=78, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, original_max_position_embeddings=8,
                       rms_norm_eps=1e-5, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0, tie_word_embeddings=True,
                       rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.75,
                                            short_factor=[1.0, 2.0, 5.0], long_factor=[1.5, 6.0, 20.0]),
                       bos_token_id=1, eos_token_id=2, pad_token_id=None, attn_implementation="eager"),
            1031, 2031, f32, None,
        ),
        # GPT-NeoX / Pythia: fused per-head [q, k, v] query_key_value, LayerNorm with bias, exact GELU,
        # rotary_pct 0.25 (head_dim 16: 4 dims turn), parallel residual with two norms; and sequential
        "gpt_neox": (
            GPTNeoXForCausalLM,
            GPTNeoXConfig(**NEOX_BASE),
            1026, 2026, f32, None,
        ),
        "gpt_neox_seq": (
            GPTNeoXForCausalLM,
            GPTNeoXConfig(**{**NEOX_BASE, "vocab_size": 74, "use_parallel_residual": False, "hidden_act": "gelu_new",
                             "rotary_emb_base": 500.0}),
            1027, 2027, f32, None,
        ),
        # Phi-2: one LayerNorm feeding attention and MLP in parallel, q/k/v/dense/fc biases, gelu_new,
        # partial_rotary_factor 0.4 (head_dim 10: 4 dims turn), an LM-head bias, GQA 4/2
        "phi": (
            PhiForCausalLM,
            PhiConfig(vocab_size=66, hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, layer_norm_eps=1e-5, hidden_act="gelu_new",
                      rope_theta=10000.0, partial_rotary_factor=0.4, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
                      tie_word_embeddings=False, qk_layernorm=False, attn_implementation="eager"),
            1028, 2028, f32, None,
        ),
        # OLMo 2: post-norms only, q_norm/k_norm over the whole q and k projections, multi-head
        "olmo2": (
            Olmo2ForCausalLM,
            Olmo2Config(vocab_size=68, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
                        attention_bias=False, attention_dropout=0.0, tie_word_embeddings=False, pad_token_id=None,
                        bos_token_id=1, eos_token_id=2, attn_implementation="eager"),
            1029, 2029, f32, None,
        ),
        # OLMo 2 with grouped KV heads (OLMo 2 32B's form): q_norm over 4 x 8 values, k_norm over 2 x 8;
        # rms_norm_eps 1e-5 (Olmo2Config's default), base 500
        "olmo2_gqa": (
            Olmo2ForCausalLM,
            Olmo2Config(vocab_size=70, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0,
                        attention_bias=False, attention_dropout=0.0, tie_word_embeddings=False, pad_token_id=None,
                        bos_token_id=1, eos_token_id=2, attn_implementation="eager"),
            1033, 2033, f32, None,
        ),
        # StableLM (3B / StableLM 2): LayerNorm with bias, SwiGLU, q/k/v biases (use_qkv_bias) and no
        # o_proj bias, partial_rotary_factor 0.25 (head_dim 16: 4 dims turn), GQA 4/2, sequential;
        # stablelm_par: use_parallel_residual (attention and MLP from input_layernorm alone), base 500
        "stablelm": (
            StableLmForCausalLM,
            StableLmConfig(**STABLELM_BASE),
            1029, 2029, f32, None,
        ),
        "stablelm_par": (
            StableLmForCausalLM,
            StableLmConfig(**{**STABLELM_BASE, "vocab_size": 82, "use_parallel_residual": True,
                              "rope_parameters": dict(rope_type="default", rope_theta=500.0, partial_rotary_factor=0.25)}),
            1030, 2030, f32, None,
        ),
        # StableLM 2 12B's form: qk_layernorm (StableLmLayerNormPerHead: a LayerNorm without bias over each of the
        # 4 query and 2 key heads, each head its own weights), parallel from input_layernorm, no q/k/v bias
        "stablelm_qkln": (
            StableLmForCausalLM,
            StableLmConfig(**{**STABLELM_BASE, "vocab_size": 86, "qk_layernorm": True, "use_parallel_residual": True,
                              "use_qkv_bias": False}),
            1100, 2100, f32, None,
        ),
        # Falcon 7B's form: multi-query (query_key_value [all q; k; v]), attention and MLP in parallel from
        # input_layernorm alone, no biases, exact GELU, tied; falcon_40b: the new decoder (ln_attn and
        # ln_mlp, query_key_value grouped per KV head [q x 2; k; v], num_kv_heads 2), biases, base 500, untied
        "falcon": (
            FalconForCausalLM,
            FalconConfig(**FALCON_BASE),
            1070, 2070, f32, None,
        ),
        "falcon_40b": (
            FalconForCausalLM,
            FalconConfig(**{**FALCON_BASE, "vocab_size": 76, "new_decoder_architecture": True, "num_kv_heads": 2,
                            "bias": True, "tie_word_embeddings": False,
                            "rope_parameters": dict(rope_type="default", rope_theta=500.0)}),
            1071, 2071, f32, None,
        ),
        # Falcon's other layouts, at width 32 (ffn 64): falcon_40b_tanh is Falcon 40B as released (no biases)
        # with the tanh GELU (gelu_new) llama.cpp's falcon computes; falcon2 the new decoder from one shared norm
        # (num_ln_in_parallel_attn 1: Falcon 2 11B), num_kv_heads 2, tied; falcon_seq sequential
        # (parallel_attn false: input_layernorm, post_attention_layernorm), multi-head [q_h; k_h; v_h], biases
        "falcon_40b_tanh": (
            FalconForCausalLM,
            FalconConfig(**{**FALCON_BASE, "vocab_size": 80, "hidden_size": 32, "ffn_hidden_size": 64, "new_decoder_architecture": True,
                            "num_kv_heads": 2, "activation": "gelu_new", "tie_word_embeddings": False}),
            1072, 2072, f32, None,
        ),
        "falcon2": (
            FalconForCausalLM,
            FalconConfig(**{**FALCON_BASE, "vocab_size": 84, "hidden_size": 32, "ffn_hidden_size": 64, "new_decoder_architecture": True,
                            "num_ln_in_parallel_attn": 1, "num_kv_heads": 2, "activation": "gelu_new"}),
            1073, 2073, f32, None,
        ),
        "falcon_seq": (
            FalconForCausalLM,
            FalconConfig(**{**FALCON_BASE, "vocab_size": 88, "hidden_size": 32, "ffn_hidden_size": 64, "parallel_attn": False,
                            "multi_query": False, "bias": True, "tie_word_embeddings": False}),
            1074, 2074, f32, None,
        ),
        # RoPE scaling types (Llama, head_dim 8, T = 16), as transformers 5 computes them:
        # YaRN factor 4 over an original context of 64 (truncated correction range 0..3: dim 0
        # extrapolated, 1 and 2 blended, 3 interpolated), attention factor 0.1 ln 4 + 1 from the factor
        "rope_yarn": (
            LlamaForCausalLM,
            config(LlamaConfig, LLAMA_BASE, vocab_size=60, max_position_embeddings=256,
                   rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64)),
            1060, 2060, f32, None,
        ),
        # YaRN with transformers 5's other keys: truncate false (a fractional correction range),
        # beta_fast 8 / beta_slow 2, attention factor from mscale 2 / mscale_all_dim 1
        "rope_yarn_mscale": (
            LlamaForCausalLM,
            config(LlamaConfig, LLAMA_BASE, vocab_size=58, max_position_embeddings=256,
                   rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=8.0, original_max_position_embeddings=64,
                                        beta_fast=8.0, beta_slow=2.0, mscale=2.0, mscale_all_dim=1.0, truncate=False)),
            1064, 2064, f32, None,
        ),
        # dynamic NTK, factor 2, max_position_embeddings 8 < T: the base grows to cover 16 positions
        "rope_dynamic": (
            LlamaForCausalLM,
            config(LlamaConfig, LLAMA_BASE, vocab_size=62, max_position_embeddings=8,
                   rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0)),
            1061, 2061, f32, None,
        ),
        # LongRoPE (Phi-3 128k's kind): T = 16 within the original 64 (short factors), and beyond 8
        # (long factors); attention factor sqrt(1 + ln(max/orig) / ln(orig))
        "rope_longrope_short": (
            LlamaForCausalLM,
            config(LlamaConfig, LLAMA_BASE, vocab_size=66, max_position_embeddings=256,
                   rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=64,
                                        short_factor=[1.0, 1.5, 3.0, 7.0], long_factor=[1.2, 4.0, 11.0, 30.0])),
            1062, 2062, f32, None,
        ),
        "rope_longrope_long": (
            LlamaForCausalLM,
            config(LlamaConfig, LLAMA_BASE, vocab_size=68, max_position_embeddings=64,
                   rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=8,
                                        short_factor=[1.0, 1.5, 3.0, 7.0], long_factor=[1.2, 4.0, 11.0, 30.0])),
            1063, 2063, f32, None,
        ),
        # sliding windows (8 keys over T = 16) with RoPE scaling: transformers turns every layer, sliding
        # or not, with the one scaled table. Qwen2 with YaRN (factor 4 over 64) and a window on layer 1;
        # Mistral with dynamic NTK (factor 2 beyond max_position_embeddings 8) and a window on every layer
        "qwen2_swa_yarn": (
            Qwen2ForCausalLM,
            config(Qwen2Config, QWEN2_BASE, vocab_size=70, use_sliding_window=True, sliding_window=SWA, max_window_layers=1,
                   max_position_embeddings=256,
                   rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64)),
            1080, 2080, f32, None,
        ),
        **moe_forward_specs(),
        # the same two models as transformers 5 holds them, saved with save_original_format=False: every layer's
        # experts in one stacked mlp.experts.gate_up_proj / down_proj (Mixtral: mlp.gate for block_sparse_moe.gate)
        "mixtral_stacked": moe_forward_specs()["mixtral"],
        "qwen2_moe_stacked": moe_forward_specs()["qwen2_moe"],
        "mistral_swa_dynamic": (
            MistralForCausalLM,
            config(MistralConfig, LLAMA_BASE, vocab_size=74, num_key_value_heads=1, sliding_window=SWA, max_position_embeddings=8,
                   rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0)),
            1081, 2081, f32, None,
        ),
    }


# Gradient references of the forward-only families: each is the forward folder's model class and
# config shrunk to vocab 32 and width 16 (so that the weights, gradients and AdamW finals stay small),
# with every switch of that folder kept; written by build_one like the full references above.
SHRINK = dict(vocab_size=32, hidden_size=16, intermediate_size=32)
GRAD_OF = {
    "qwen3_swa": dict(head_dim=8),  # QK-norm, head_dim 8 != 16 / 4, a window of 8 on layer 1
    "mistral_swa": dict(head_dim=4),  # GQA 4/1, a window of 8 on every layer
    "starcoder2": {},  # LayerNorm and linear biases, tanh GELU, GQA 4/2, window 8, tied
    "phi3_partial": dict(num_attention_heads=2, num_key_value_heads=1),  # fused qkv/gate_up, 6 of head_dim 8 turn
    "gpt_neox": dict(num_attention_heads=2),  # parallel from two norms, exact GELU, 2 of head_dim 8 turn
    "phi": dict(hidden_size=20, num_attention_heads=2, num_key_value_heads=1),  # one shared norm, LM-head bias, 4 of 10 turn
    "olmo2": {},  # post-norms only, QK-norm over the whole projections
    "stablelm": dict(num_attention_heads=2, num_key_value_heads=1),  # q/k/v biases, 2 of head_dim 8 turn, sequential
    "stablelm_par": dict(num_attention_heads=2, num_key_value_heads=1),  # parallel from input_layernorm
    "falcon": dict(ffn_hidden_size=32),  # multi-query [all q; k; v], parallel from one norm, tied
    "falcon_40b": dict(ffn_hidden_size=32),  # new decoder: ln_attn / ln_mlp, [q x 2; k; v] per KV head, biases
    "gpt2_gelu": dict(n_embd=16, n_inner=32),  # exact GELU
    "rope_yarn": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=8),  # YaRN's attention factor on cos/sin
    "stablelm_qkln": dict(num_attention_heads=2, num_key_value_heads=1),  # per-head LayerNorm on q and k, parallel
    "falcon2": dict(ffn_hidden_size=32),  # new decoder from one shared norm (num_ln_in_parallel_attn 1), 2 KV heads, tied
    "falcon_seq": dict(ffn_hidden_size=32),  # sequential (two norms), multi-head [q_h; k_h; v_h], biases
    # mixtures of experts: the router's gradient through the chosen weights, the experts', the shared gate's
    "mixtral": dict(intermediate_size=8),  # renormalised top 2 of 4, experts 8 wide
    "qwen2_moe": dict(intermediate_size=24, moe_intermediate_size=8, shared_expert_intermediate_size=12),  # shared expert, dense layer 1
    "qwen3_moe": dict(head_dim=8, moe_intermediate_size=8),  # per-head QK-norm, renormalised
    "olmoe": dict(intermediate_size=8),  # whole-projection QK-norm with GQA 4/2, not renormalised
}


def grad_specs():
    """<forward name>_grad -> (model class, config, weight seed, token seed), for build_one."""
    fwd = forward_specs()
    specs = {}
    for name, changes in GRAD_OF.items():
        cls, cfg, wseed, tseed = fwd[name][:4]
        d = cfg.to_dict()
        d.update({k: v for k, v in SHRINK.items() if k in d}, **changes)
        moe = {"experts_implementation": "eager"} if "num_experts_per_tok" in d else {}  # (the experts' loop, in float64 too)
        specs[name + "_grad"] = (cls, type(cfg).from_dict(d, attn_implementation="eager", **moe), wseed + 5000, tseed + 5000)
    return specs


# ----------------------------------------------------------------------------
# Weight initialisation
# ----------------------------------------------------------------------------
def is_norm_module(mod):
    return isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm")


@torch.no_grad()
def reinit(model, seed):
    """Re-initialise every parameter so that every tensor influences the test."""
    torch.manual_seed(seed)
    done = set()
    for _mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in done:  # tied parameter already handled
                continue
            done.add(id(p))
            if is_norm_module(mod):
                if pname == "weight":
                    p.copy_(1.0 + STD_NORM * torch.randn_like(p))
                elif pname == "bias":
                    p.copy_(STD_BIAS * torch.randn_like(p))
                else:
                    raise RuntimeError(f"unexpected norm parameter {pname}")
            elif pname == "bias":
                p.copy_(STD_BIAS * torch.randn_like(p))
            elif pname in ("weight", "gate_up_proj", "down_proj"):  # (MoE: every expert of a layer stacked)
                p.copy_(STD_MATRIX * torch.randn_like(p))
            else:
                raise RuntimeError(f"unexpected parameter {_mname}.{pname}")
    n_params = len({id(p) for p in model.parameters()})
    assert len(done) == n_params, (len(done), n_params)


# ----------------------------------------------------------------------------
# float64 support: transformers 4.40 hard-codes float32 in a few places
# (RMSNorm upcast, Llama RoPE cos/sin, softmax(dtype=float32), logits.float()).
# For the float64 comparison run ONLY we remove those casts so that the
# float64 numbers really are float64.  The float32 golden run uses the
# library code completely unmodified.
# ----------------------------------------------------------------------------
def _rmsnorm_forward_native(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def _make_llama_rope_forward_f64(module):
    def forward(x, position_ids):
        inv_freq = module.inv_freq.to(torch.float64)
        freqs = position_ids.to(torch.float64)[:, :, None] * inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = getattr(module, "attention_scaling", 1.0)  # YaRN's attention factor (1 for default RoPE)
        return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)

    return forward


def _mpt_alibi_f64(num_heads, sequence_length, alibi_bias_max=8, device=None):
    """transformers' build_mpt_alibi_tensor with its slopes in float64 (it computes them in float32)."""
    n2 = 2 ** math.ceil(math.log2(num_heads))
    slopes = 1.0 / torch.pow(2.0, torch.arange(1, n2 + 1, dtype=torch.float64) * (alibi_bias_max / n2))
    if n2 != num_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:num_heads]
    pos = torch.arange(1 - sequence_length, 1, dtype=torch.float64)
    return (slopes.view(num_heads, 1, 1) * pos.view(1, 1, sequence_length)).to(device)


def _forward_keep_float64(self, *args, **kwargs):
    """The module's own forward with Tensor.float() a no-op on float64 tensors (MptAttention's
    softmax(scores.float())); bound with MethodType so that deepcopy rebinds it to the copy."""
    orig = torch.Tensor.float
    torch.Tensor.float = lambda t, *a, **k: t if t.dtype == torch.float64 else orig(t, *a, **k)
    try:
        return type(self).forward(self, *args, **kwargs)
    finally:
        torch.Tensor.float = orig


def to_float64(model):
    m = copy.deepcopy(model).double()
    for mod in m.modules():
        name = type(mod).__name__
        if name == "MptModel":
            mod.build_mpt_alibi_tensor = _mpt_alibi_f64
        if name == "MptAttention" or name.endswith("TopKRouter"):  # (Mixtral: softmax(router_logits.float()))
            mod.forward = types.MethodType(_forward_keep_float64, mod)
        if name.endswith("RMSNorm"):
            mod.forward = _rmsnorm_forward_native.__get__(mod)
        if name.endswith("RotaryEmbedding"):
            if hasattr(mod, "dim"):
                dim, base = mod.dim, mod.base
            else:  # transformers 5 (Qwen3): dim and base from the config
                cfg = mod.config
                dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
                dim = int(dim * cfg.rope_parameters.get("partial_rotary_factor", 1.0))  # NeoX, Phi: partial rotary
                base = cfg.rope_parameters["rope_theta"]
            inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            if getattr(mod, "rope_type", "default") == "yarn":  # its own (static) table, widened from float32
                inv_freq = mod.inv_freq
            mod.register_buffer("inv_freq", inv_freq, persistent=False)
            if hasattr(mod, "_set_cos_sin_cache"):  # Qwen2: cached cos/sin table
                mod._set_cos_sin_cache(
                    seq_len=mod.max_seq_len_cached, device=inv_freq.device, dtype=torch.float64
                )
            else:  # Llama: computes cos/sin in forward, in float32
                mod.forward = _make_llama_rope_forward_f64(mod)
    return m


@contextlib.contextmanager
def float64_mode():
    """For the float64 run: default dtype float64 (masks etc. are built with
    the default dtype) and softmax(x, dtype=float32) keeps float64 inputs in
    float64."""
    orig = torch.nn.functional.softmax
    orig_default = torch.get_default_dtype()

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype == torch.float32 and input.dtype == torch.float64:
            dtype = None
        return orig(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

    torch.nn.functional.softmax = softmax
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.nn.functional.softmax = orig
        torch.set_default_dtype(orig_default)


class Float32Detector(torch.overrides.TorchFunctionMode):
    """Records any float32 tensor produced while active (float64 run check)."""

    # torch.optim keeps its step counter in a float32 scalar tensor
    # (torch.tensor(0.) then step += 1), and the profiler's record_function
    # allocates torch.zeros(1); neither touches model numbers.
    BOOKKEEPING = {("tensor", ()), ("add_", ()), ("zeros", (1,))}

    def __init__(self):
        super().__init__()
        self.hits = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for o in outs:
            if isinstance(o, torch.Tensor) and o.dtype == torch.float32:
                hit = (getattr(func, "__name__", str(func)), tuple(o.shape))
                if hit not in self.BOOKKEEPING:
                    self.hits.add(hit)
        return out


# ----------------------------------------------------------------------------
# Forward / loss / training
# ----------------------------------------------------------------------------
def compute_logits(model, inputs, use_full_model):
    if use_full_model:
        return model(input_ids=inputs).logits
    # float64 run: LlamaForCausalLM/Qwen2ForCausalLM.forward ends with
    # logits.float(); call base model + head directly (identical math).
    hidden = model.base_model(input_ids=inputs)[0]
    return model.lm_head(hidden)


def compute_loss(logits, targets):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="mean")


def param_names(model):
    """HF name of every (deduplicated) trainable parameter -> Parameter."""
    return dict(model.named_parameters())  # named_parameters() skips tied duplicates


def run_reference(model, inputs, targets, use_full_model):
    """Forward+backward on `model` and 5 AdamW steps on a copy of it."""
    model.train()
    model.zero_grad(set_to_none=True)
    logits = compute_logits(model, inputs, use_full_model)
    loss = compute_loss(logits, targets)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in param_names(model).items()}
    model.zero_grad(set_to_none=True)

    tm = copy.deepcopy(model)
    tm.train()
    params = param_names(tm)
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LR,
        betas=BETAS,
        eps=ADAM_EPS,
    )
    train_losses, grad_norms = [], []
    for _ in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        step_loss = compute_loss(compute_logits(tm, inputs, use_full_model), targets)
        train_losses.append(step_loss.detach().clone())
        step_loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(tm.parameters(), CLIP_NORM)
        grad_norms.append(gn.detach().clone())
        opt.step()
    final = {n: p.detach().clone() for n, p in params.items()}
    return {
        "logits": logits.detach(),
        "loss": loss.detach(),
        "grads": grads,
        "train_losses": torch.stack(train_losses),
        "grad_norms": torch.stack(grad_norms),
        "final": final,
    }


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


def build_model(cls, config, wseed):
    """The transformers model with this script's random float32 weights."""
    torch.manual_seed(wseed)
    model = cls(config)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    reinit(model, wseed)
    with torch.no_grad():  # MoE routers: wider top-k margins (no choice near a tie in float32)
        for mname, mod in model.named_modules():
            if type(mod).__name__.endswith("TopKRouter"):
                mod.weight.mul_(ROUTER_SCALE)
    return model.float()


def router_margins(model, inputs):
    """The smallest gap, over every token of every MoE layer, between the K-th and (K+1)-th largest router
    probabilities: the float32 rounding margin of the top-k choice."""
    gaps, hooks = [], []

    def hook(mod, args, out):
        probs = torch.softmax(out[0].double(), dim=-1)
        top = torch.topk(probs, mod.top_k + 1, dim=-1).values
        gaps.append((top[:, -2] - top[:, -1]).min().item())

    for mod in model.modules():
        if type(mod).__name__.endswith("TopKRouter"):
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=inputs)
    for h in hooks:
        h.remove()
    return min(gaps) if gaps else None


def make_tokens(vocab_size, tseed):
    """tokens (B, T+1), inputs tokens[:, :T], targets tokens[:, 1:]."""
    gen = torch.Generator().manual_seed(tseed)
    tokens = torch.randint(0, vocab_size, (B, T + 1), generator=gen, dtype=torch.int64)
    return tokens, tokens[:, :T], tokens[:, 1:]


def fresh_dir(out_root, name):
    out_dir = os.path.join(out_root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    return out_dir


def as_saved(by_param, saved):
    """{parameter name: x} keyed by the names save_pretrained wrote (`saved`): transformers 5 saves
    GPTNeoXForCausalLM's lm_head under its checkpoints' name, embed_out."""
    return split_experts({SAVED_AS.get(k, k) if SAVED_AS.get(k) in saved else k: x for k, x in by_param.items()}, saved)


def split_experts(by_param, saved):
    """transformers 5 holds an MoE layer's experts stacked (mlp.experts.gate_up_proj [E, 2F, C]: gate rows,
    then up rows; down_proj [E, C, F]) and save_pretrained writes one tensor per expert as the hub's checkpoints
    name them (Mixtral: block_sparse_moe.experts.E.w1 / w3 / w2 and block_sparse_moe.gate; the others
    mlp.experts.E.gate_proj / up_proj / down_proj): {in-memory name: x} keyed by the names in `saved`."""
    out = {}
    for k, x in by_param.items():
        pre, _, leaf = k.rpartition(".experts.")
        if k in saved:  # (saved as held: save_original_format=False)
            out[k] = x
            continue
        mix = pre.replace(".mlp", ".block_sparse_moe")
        mixtral = f"{mix}.experts.0.w1.weight" in saved
        if leaf == "gate_up_proj":
            F = x.shape[1] // 2
            for e in range(x.shape[0]):
                g, u = (f"{mix}.experts.{e}.w1.weight", f"{mix}.experts.{e}.w3.weight") if mixtral else (
                    f"{pre}.experts.{e}.gate_proj.weight", f"{pre}.experts.{e}.up_proj.weight")
                out[g], out[u] = x[e, :F], x[e, F:]
        elif leaf == "down_proj" and pre:
            for e in range(x.shape[0]):
                out[f"{mix}.experts.{e}.w2.weight" if mixtral else f"{pre}.experts.{e}.down_proj.weight"] = x[e]
        elif k.endswith(".mlp.gate.weight") and k.replace(".mlp.", ".block_sparse_moe.") in saved:
            out[k.replace(".mlp.", ".block_sparse_moe.")] = x
        else:
            out[k] = x
    return out


def save_folder(name, model, out_dir, dtype=torch.float32, max_shard_size=None):
    """save_pretrained(safe_serialization=True) of the float32 `model`, its weights
    stored as `dtype`; with max_shard_size, in shards with model.safetensors.index.json.
    The model's parameters must already be exactly representable in `dtype`.
    Returns (tensor names in file order, {name: tensor as stored}) over all files."""
    kwargs = {"safe_serialization": True}
    if name in STACKED:
        kwargs["save_original_format"] = False
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    to_save = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    to_save.save_pretrained(out_dir, **kwargs)
    gc = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    index = os.path.join(out_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
    else:
        weight_map, files = None, ["model.safetensors"]
    saved_names, saved = [], {}
    for fn in files:
        with safe_open(os.path.join(out_dir, fn), framework="pt") as f:
            for k in f.keys():
                assert k not in saved, f"{name}: {k} in two files"
                assert weight_map is None or weight_map[k] == fn, f"{name}: index.json misplaces {k}"
                saved_names.append(k)
                saved[k] = f.get_tensor(k)
    assert weight_map is None or sorted(weight_map) == sorted(saved_names), f"{name}: index.json lists other tensors"
    pnames = param_names(model)
    pnames = as_saved(pnames, saved)
    extra = sorted(set(saved_names) - set(pnames))
    missing = sorted(set(pnames) - set(saved_names))
    assert not missing, f"{name}: parameters not written by save_pretrained: {missing}"
    assert not extra, f"{name}: non-parameter tensors written by save_pretrained: {extra}"
    for k in saved_names:
        assert saved[k].dtype == dtype and torch.equal(saved[k].float(), pnames[k].detach()), k
    return saved_names, saved


def write_golden(golden, out_dir, name):
    """golden.safetensors next to the model; checks that it reads back bit-identically."""
    # A single metadata entry: safetensors serialises the metadata map in
    # hash order, so several keys would make the file bytes non-reproducible.
    meta = {
        "producer": f"tools/ref/make_golden.py model={name} B={B} T={T} "
        f"transformers={transformers.__version__} torch={torch.__version__}"
    }
    gpath = os.path.join(out_dir, "golden.safetensors")
    save_file(golden, gpath, metadata=meta)

    for fn in os.listdir(out_dir):  # safetensors writes 0600 files
        os.chmod(os.path.join(out_dir, fn), 0o644)

    with safe_open(gpath, framework="pt") as f:
        for k in golden:
            assert torch.equal(f.get_tensor(k), golden[k]), k
    return gpath


def check_reload(name, cls, out_dir, inputs, logits):
    """from_pretrained(<dir>) (float32) gives bit-identical logits."""
    with open(os.path.join(out_dir, "config.json")) as f:  # MoE: the experts' loop, not grouped_mm
        moe = {"experts_implementation": "eager"} if "num_experts_per_tok" in json.load(f) else {}
    reloaded = cls.from_pretrained(out_dir, attn_implementation="eager", **moe)
    reloaded.train()
    with torch.no_grad():
        rl = reloaded(input_ids=inputs).logits
    assert torch.equal(rl, logits), f"{name}: reloaded model gives different logits"


def build_one(name, cls, config, wseed, tseed, out_root):
    out_dir = fresh_dir(out_root, name)
    model = build_model(cls, config, wseed)
    tokens, inputs, targets = make_tokens(config.vocab_size, tseed)

    # ---- HF folder (initial weights, float32) ----
    saved_names, saved = save_folder(name, model, out_dir)
    margin = router_margins(model, inputs)
    assert margin is None or margin > 1e-4, f"{name}: a top-k choice within {margin:.2e} of a tie"

    # ---- float32 golden (library code unmodified) ----
    init_state = copy.deepcopy(model.state_dict())
    r32 = run_reference(model, inputs, targets, use_full_model=True)
    # the base_model+lm_head path used for float64 is the same computation
    with torch.no_grad():
        alt = compute_logits(model, inputs, use_full_model=False)
    assert torch.equal(alt, r32["logits"]), f"{name}: base_model+lm_head differs from model()"
    assert torch.equal(r32["train_losses"][0], r32["loss"]), f"{name}: step-0 loss != loss"
    for k, v in model.state_dict().items():
        assert torch.equal(v, init_state[k]), f"{name}: model mutated"

    # ---- float64 recomputation (same weights, same tokens) ----
    m64 = to_float64(model)
    det = Float32Detector()
    with float64_mode(), det:
        r64 = run_reference(m64, inputs, targets, use_full_model=False)
    assert not det.hits, f"{name}: float32 ops leaked into the float64 run: {sorted(det.hits)}"
    assert r64["logits"].dtype == torch.float64
    for r in (r32, r64):
        r["grads"], r["final"] = as_saved(r["grads"], saved), as_saved(r["final"], saved)

    # ---- golden.safetensors ----
    golden = {
        "tokens": tokens.to(torch.int32).contiguous(),
        "logits": r32["logits"].float().contiguous(),
        "loss": r32["loss"].float().reshape(1).contiguous(),
        "train_losses": r32["train_losses"].float().reshape(TRAIN_STEPS).contiguous(),
        "train_grad_norms": r32["grad_norms"].float().reshape(TRAIN_STEPS).contiguous(),
    }
    for k in saved_names:
        golden["grad." + k] = r32["grads"][k].float().contiguous()
        golden["final." + k] = r32["final"][k].float().contiguous()
    gpath = write_golden(golden, out_dir, name)
    check_reload(name, cls, out_dir, inputs, r32["logits"])

    # ---- float32 vs float64 deviations ----
    dev = {
        "logits_max_abs": max_abs(r32["logits"], r64["logits"]),
        "logits_max_abs_value": r64["logits"].abs().max().item(),
        "loss_f32": r32["loss"].item(),
        "loss_f64": r64["loss"].item(),
        "loss_rel": abs(r32["loss"].item() - r64["loss"].item()) / abs(r64["loss"].item()),
        "train_losses_max_abs": max_abs(r32["train_losses"], r64["train_losses"]),
        "train_grad_norms_f64": [round(x, 6) for x in r64["grad_norms"].tolist()],
    }
    # gradient: worst ratio err / (max|g|) over tensors, and worst err / (1e-4 + 1e-3 max|g|)
    g_rel, g_budget, g_abs = 0.0, 0.0, 0.0
    f_abs, f_abs_nz, f_worst = 0.0, 0.0, ""
    for k in saved_names:
        g32, g64 = r32["grads"][k].double(), r64["grads"][k]
        err = (g32 - g64).abs().max().item()
        gmax = g64.abs().max().item()
        g_abs = max(g_abs, err)
        g_rel = max(g_rel, err / gmax if gmax > 0 else 0.0)
        g_budget = max(g_budget, err / (1e-4 + 1e-3 * gmax))
        fd = (r32["final"][k].double() - r64["final"][k]).abs()
        if fd.max().item() > f_abs:
            f_abs, f_worst = fd.max().item(), k
        # elements whose gradient is mathematically zero (|g64| < 1e-12, e.g.
        # GPT-2's key bias) are driven by float32 noise through Adam's
        # normalisation; report the rest separately.
        nz = g64.abs() >= 1e-12
        if nz.any():
            f_abs_nz = max(f_abs_nz, fd[nz].max().item())
    dev.update(
        {
            "grad_max_abs": g_abs,
            "grad_max_rel_to_tensor_max": g_rel,
            "grad_fraction_of_suggested_budget": g_budget,
            "final_params_max_abs": f_abs,
            "final_params_worst_tensor": f_worst,
            "final_params_max_abs_nonzero_grad": f_abs_nz,
        }
    )

    size = os.path.getsize(gpath)
    print(
        f"[{name}] {len(saved_names)} tensors, "
        f"{sum(v.numel() for v in saved.values())} params; "
        f"loss={r32['loss'].item():.6f} (ln V={math.log(config.vocab_size):.4f}); "
        f"train_losses={[round(x, 5) for x in r32['train_losses'].tolist()]}; "
        f"golden.safetensors {size} bytes"
    )
    print(
        f"    f32 vs f64: logits {dev['logits_max_abs']:.2e}, loss rel {dev['loss_rel']:.2e}, "
        f"grads abs {dev['grad_max_abs']:.2e} (rel-to-max {dev['grad_max_rel_to_tensor_max']:.2e}, "
        f"{dev['grad_fraction_of_suggested_budget']:.2e} of budget), "
        f"train_losses {dev['train_losses_max_abs']:.2e}, final params {dev['final_params_max_abs']:.2e} "
        f"({dev['final_params_worst_tensor']}; {dev['final_params_max_abs_nonzero_grad']:.2e} where grad != 0)"
    )
    return {
        "names": [(k, list(saved[k].shape)) for k in saved_names],
        "deviation": dev,
        "golden_bytes": size,
    }


def build_forward(name, cls, config, wseed, tseed, dtype, max_shard_size, out_root):
    """A forward-only reference folder: the model saved with its weights in `dtype`
    (optionally sharded) and golden.safetensors with tokens, logits and loss computed
    in float32 from the weights exactly as stored (rounded to `dtype`)."""
    out_dir = fresh_dir(out_root, name)
    model = build_model(cls, config, wseed)
    if dtype != torch.float32:
        # round the parameters only (buffers such as RoPE's inv_freq stay float32)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dtype).float())
    tokens, inputs, targets = make_tokens(config.vocab_size, tseed)
    saved_names, saved = save_folder(name, model, out_dir, dtype, max_shard_size)

    model.train()
    with torch.no_grad():
        logits = compute_logits(model, inputs, use_full_model=True)
        alt = compute_logits(model, inputs, use_full_model=False)
        loss = compute_loss(logits, targets)
    assert torch.equal(alt, logits), f"{name}: base_model+lm_head differs from model()"
    m64 = to_float64(model)
    m64.train()
    det = Float32Detector()
    with float64_mode(), det, torch.no_grad():
        logits64 = compute_logits(m64, inputs, use_full_model=False)
    assert not det.hits, f"{name}: float32 ops leaked into the float64 run: {sorted(det.hits)}"

    golden = {
        "tokens": tokens.to(torch.int32).contiguous(),
        "logits": logits.float().contiguous(),
        "loss": loss.float().reshape(1).contiguous(),
    }
    gpath = write_golden(golden, out_dir, name)
    check_reload(name, cls, out_dir, inputs, logits)

    files = sorted(os.listdir(out_dir))
    folder_bytes = sum(os.path.getsize(os.path.join(out_dir, fn)) for fn in files)
    dev = max_abs(logits, logits64)
    margin = router_margins(model, inputs)
    assert margin is None or margin > 1e-4, f"{name}: a top-k choice within {margin:.2e} of a tie"
    print(
        f"[{name}] {len(saved_names)} tensors in {str(dtype).split('.')[1]}, "
        f"{sum(v.numel() for v in saved.values())} params, files {files} ({folder_bytes} bytes); "
        f"loss={loss.item():.6f}; logits f32 vs f64 {dev:.2e}" + (f"; top-k margin {margin:.2e}" if margin is not None else "")
    )
    return {
        "names": [(k, list(saved[k].shape), str(saved[k].dtype)) for k in saved_names],
        "logits_f32_vs_f64": dev,
        "folder_bytes": folder_bytes,
        "golden_bytes": os.path.getsize(gpath),
    }


def check_saved(pairs, out_root):
    """Loads folders another program (fusekit) saved, with AutoModelForCausalLM, and compares
    their logits on the golden tokens with golden/<name>/golden.safetensors."""
    from transformers import AutoModelForCausalLM

    ok = True
    for saved_dir, name in pairs:
        with safe_open(os.path.join(out_root, name, "golden.safetensors"), framework="pt") as f:
            tokens, want = f.get_tensor("tokens").long(), f.get_tensor("logits")
        model = AutoModelForCausalLM.from_pretrained(saved_dir, attn_implementation="eager", torch_dtype=torch.float32)
        model.train()
        with torch.no_grad():
            got = model(input_ids=tokens[:, :T]).logits
        err = max_abs(got, want)
        ok = ok and err <= 1e-5
        print(f"{saved_dir}: {type(model).__name__}, logits vs golden {name}: max abs {err:.2e}")
    return ok


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "data", "golden"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out, help="output root (default: tests/data/golden)")
    ap.add_argument("--report", default=None, help="optionally write a JSON report of names/deviations")
    ap.add_argument(
        "--check-saved",
        nargs=2,
        action="append",
        metavar=("DIR", "NAME"),
        help="instead of generating: load DIR with transformers and compare its logits with golden NAME (repeatable)",
    )
    ap.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="generate only this reference folder (repeatable); the others are left as they are",
    )
    args = ap.parse_args()

    torch.set_num_threads(1)  # reproducible summation order
    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {sys.version.split()[0]}")
    if args.check_saved:
        sys.exit(0 if check_saved(args.check_saved, args.out) else 1)
    wanted = set(args.only or [])
    full_specs = {**model_specs(), **grad_specs()}
    unknown = wanted - set(full_specs) - set(forward_specs())
    if unknown:
        sys.exit(f"--only: no reference named {', '.join(sorted(unknown))}")
    report = {}
    for name, (cls, config, wseed, tseed) in full_specs.items():
        if not wanted or name in wanted:
            report[name] = build_one(name, cls, config, wseed, tseed, args.out)
    for name, (cls, config, wseed, tseed, dtype, shard) in forward_specs().items():
        if not wanted or name in wanted:
            report[name] = build_forward(name, cls, config, wseed, tseed, dtype, shard, args.out)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    print(f"wrote {', '.join(report)} under {args.out}")


if __name__ == "__main__":
    main()
