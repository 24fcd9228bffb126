#!/usr/bin/env python3
"""Golden folders for RoPE scaling of Llama-family configs (tests/test_hostile_config.c).

Builds the real transformers LlamaForCausalLM with random weights and writes
tests/data/golden/<name>/:

  config.json, model.safetensors   model.save_pretrained(...), float32: transformers 5.x
                                   writes its RoPE settings under "rope_parameters"
  golden.safetensors               tokens (B, T+1) int32, logits (B, T, V) f32 of tokens[:, :-1],
                                   loss (1,) f32: mean cross-entropy of tokens[:, 1:]

Folders:
  rope_llama3   rope_theta 500000 (Llama 3's), rope_type "llama3" (factor 8, low_freq_factor 1,
                high_freq_factor 4, original_max_position_embeddings 64): with head_dim 16 one
                frequency is kept, one blended and six divided by the factor
  rope_linear   rope_theta 10000, rope_type "linear", factor 4

It prints, for each folder, how far the logits move when the scaling is dropped (plain RoPE
with the same theta) and when theta is 10000, so that the test's tolerance is known to tell
them apart.

Run:  /work/cache/tvenv/bin/python tools/ref/make_rope_golden.py   (about 5 s)
"""

import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import transformers
from transformers import LlamaConfig, LlamaForCausalLM

B, T = 2, 48
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "golden")

BASE = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    attn_implementation="eager",
)

SPECS = {
    "rope_llama3": dict(rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                             high_freq_factor=4.0, original_max_position_embeddings=64)),
    "rope_linear": dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=4.0)),
}


def build(cfg, seed):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model.eval()


def logits_of(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens[:, :-1]).logits.float()


def main():
    torch.set_num_threads(1)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for i, (name, extra) in enumerate(SPECS.items()):
        cfg = dict(BASE, **extra)
        model = build(cfg, 100 + i)
        g = torch.Generator().manual_seed(200 + i)
        tokens = torch.randint(0, cfg["vocab_size"], (B, T + 1), generator=g)
        logits = logits_of(model, tokens)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        out = os.path.join(ROOT, name)
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out, safe_serialization=True)
        save_file({"tokens": tokens.to(torch.int32).contiguous(), "logits": logits.contiguous(),
                   "loss": loss.float().reshape(1).contiguous()}, os.path.join(out, "golden.safetensors"),
                  metadata={"source": f"tools/ref/make_rope_golden.py, transformers {transformers.__version__}"})
        for fn in os.listdir(out):
            if fn not in ("config.json", "model.safetensors", "golden.safetensors"):
                os.remove(os.path.join(out, fn))
        saved = json.load(open(os.path.join(out, "config.json")))
        # how far the logits move without the scaling, and with Llama 2's theta
        rp = extra["rope_parameters"]
        plain = dict(BASE, rope_parameters=dict(rope_type="default", rope_theta=rp["rope_theta"]))
        other = dict(BASE, rope_parameters=dict(rp, rope_theta=10000.0 if rp["rope_theta"] != 10000.0 else 500000.0))
        moved = []
        for c in (plain, other):
            m2 = LlamaForCausalLM(LlamaConfig(**c)).eval()
            m2.load_state_dict(model.state_dict())
            moved.append((logits_of(m2, tokens) - logits).abs().max().item())
        print(f"[{name}] rope_parameters {saved.get('rope_parameters')}; loss {loss.item():.6f}; "
              f"logits move {moved[0]:.3g} without the scaling, {moved[1]:.3g} with the other theta")
    return 0


if __name__ == "__main__":
    sys.exit(main())
