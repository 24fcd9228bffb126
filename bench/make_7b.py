#!/usr/bin/env python3
"""Writes a Llama-2-7B-shape model folder with random bf16 weights, for bench/big_extract.sh.

Shape (defaults): hidden 4096, 32 layers, 32 heads (32 KV heads), FFN 11008, vocab 32000,
RMSNorm eps 1e-5, RoPE theta 10000, untied head: 6.74e9 parameters, 13.5 GB in bf16. The
folder is what Hugging Face writes for Llama-2-7b: config.json (model_type llama, torch_dtype
bfloat16), the weights in shards model-0000i-of-0000n.safetensors with
model.safetensors.index.json, and a tokenizer.json.

Weights: N(0, 0.02) for the embedding, q/k/v, gate/up and the LM head, N(0, 0.02/sqrt(2 L))
for o_proj and down_proj (GPT-2's residual scaling), norms 1 -- a sane init, so the logits
are finite and moderate. Seeded: the same folder every run. Never commit the output.

Tokenizer: the GPT-NeoX-20B BPE (a tokenizer.json under /work/cache/tok, or --tokenizer)
cut to the model's vocabulary: the ids below --vocab and the merges whose parts and result
are among them (BPE numbers a merge's result after its parts, so the cut is a consistent
tokenizer with exactly --vocab ids when the source has at least that many).

Usage (the tools/ref venv: torch, safetensors):
  /work/cache/venv/bin/python bench/make_7b.py --out /work/cache/llama2_7b_bf16
  (--layers 2 --hidden 256 --ffn 688 --heads 4 for a small folder of the same form)
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file

NEOX = "/work/cache/tok/allenai_eleuther-ai-gpt-neox-20b-pii-special.json"


def cut_tokenizer(src, vocab):
    """The BPE tokenizer.json at src restricted to ids < vocab (a consistent BPE)."""
    with open(src, encoding="utf-8") as f:
        tj = json.load(f)
    model = tj["model"]
    keep = {t: i for t, i in model["vocab"].items() if i < vocab}
    merges = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in keep and b in keep and a + b in keep:
            merges.append(m)
    model["vocab"] = keep
    model["merges"] = merges
    tj["added_tokens"] = [t for t in tj.get("added_tokens", []) if t["id"] < vocab]
    if len(keep) + sum(1 for t in tj["added_tokens"] if t["content"] not in keep) != vocab:
        raise SystemExit(f"{src}: cutting to {vocab} ids leaves {len(keep)} vocabulary entries; "
                         "choose a tokenizer with at least --vocab ids")
    return tj


def normal(gen, shape, std):
    """N(0, std) as bf16, drawn in f32 (row blocks, so the f32 scratch stays small)."""
    out = torch.empty(shape, dtype=torch.bfloat16)
    rows = max(1, (1 << 24) // shape[-1])
    for r0 in range(0, shape[0], rows):
        blk = torch.randn((min(rows, shape[0] - r0),) + tuple(shape[1:]), generator=gen, dtype=torch.float32)
        out[r0:r0 + blk.shape[0]] = (blk * std).to(torch.bfloat16)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--layers-per-shard", type=int, default=8)
    ap.add_argument("--tokenizer", default=NEOX, help="a BPE tokenizer.json with at least --vocab ids")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    d, L, V, F = a.hidden, a.layers, a.vocab, a.ffn
    gen = torch.Generator().manual_seed(a.seed)
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * L)
    n_shards = (L + a.layers_per_shard - 1) // a.layers_per_shard
    weight_map, total = {}, 0
    for s in range(n_shards):
        t = {}
        if s == 0:
            t["model.embed_tokens.weight"] = normal(gen, (V, d), std)
        for l in range(s * a.layers_per_shard, min(L, (s + 1) * a.layers_per_shard)):
            p = f"model.layers.{l}."
            for n in ("q", "k", "v"):
                t[p + f"self_attn.{n}_proj.weight"] = normal(gen, (d, d), std)
            t[p + "self_attn.o_proj.weight"] = normal(gen, (d, d), proj_std)
            t[p + "mlp.gate_proj.weight"] = normal(gen, (F, d), std)
            t[p + "mlp.up_proj.weight"] = normal(gen, (F, d), std)
            t[p + "mlp.down_proj.weight"] = normal(gen, (d, F), proj_std)
            t[p + "input_layernorm.weight"] = torch.ones(d, dtype=torch.bfloat16)
            t[p + "post_attention_layernorm.weight"] = torch.ones(d, dtype=torch.bfloat16)
        if s == n_shards - 1:
            t["model.norm.weight"] = torch.ones(d, dtype=torch.bfloat16)
            t["lm_head.weight"] = normal(gen, (V, d), std)
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file(t, os.path.join(a.out, name), metadata={"format": "pt"})
        for k, v in t.items():
            weight_map[k] = name
            total += v.numel() * 2
        print(f"{name}: {len(t)} tensors", flush=True)
        del t
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d, "intermediate_size": F,
           "num_hidden_layers": L, "num_attention_heads": a.heads, "num_key_value_heads": a.heads,
           "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False, "vocab_size": V,
           "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "bfloat16"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(cut_tokenizer(a.tokenizer, V), f, ensure_ascii=False)
    print(json.dumps({"out": a.out, "params": total // 2, "bytes": total}))


if __name__ == "__main__":
    main()
