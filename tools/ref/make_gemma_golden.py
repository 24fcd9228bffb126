#!/usr/bin/env python3
"""Golden reference folders for fusekit's Gemma family (gemma, gemma2, gemma3 text).

For each of three tiny random-weight models this script builds transformers' own
model class (GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM with a
Gemma3TextConfig), eager attention, float32, and writes tests/data/golden/<name>/:

  config.json, model.safetensors   model.save_pretrained(...), float32
  golden.safetensors               tokens, logits, loss, grad.<name> for every tensor,
                                   train_losses / train_grad_norms / final.<name> after
                                   5 AdamW steps (the format of make_golden.py)

The configs are chosen so every Gemma switch matters: head_dim != hidden_size /
heads, grouped-query attention, several layers with both sliding-window and global
layers, a window shorter than the sequence, query_pre_attn_scalar != head_dim,
soft-capping (gemma2) small enough to bend the tanh, gemma3's local RoPE base and
linear RoPE scaling, QK-norm, and random norm weights (transformers initialises
Gemma's (1 + w) norms at w = 0, which would hide a missing offset).

It also recomputes the logits in float64 (norms, softmax and RoPE patched to stay
in float64) and prints the float32-vs-float64 deviation.

Run (from the repository root):
  /work/cache/tvenv/bin/python tools/ref/make_gemma_golden.py
  ... --check-saved DIR NAME   load DIR (e.g. a folder fusekit saved) with
                               AutoModelForCausalLM and compare its logits with NAME's
  ... --real-gguf FILE --real-out DIR
                               development check on the real Gemma 3 270M (not in the suite):
                               dequantizes llama.cpp's gemma3 GGUF with the gguf package into a
                               Hugging Face gemma3_text folder (float32, norm weights - 1, the
                               270M's published config) and writes golden.safetensors with
                               tokens and transformers' logits for them
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
)

B, T = 2, 16
TRAIN_STEPS = 5
LR = 1e-3
BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.1
CLIP_NORM = 1.0
STD_MATRIX = 0.1
STD_NORM = 0.2  # Gemma norm weights w (the scale is 1 + w)

COMMON = dict(
    vocab_size=48,
    hidden_size=16,
    intermediate_size=24,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,  # != 16 / 4
    rms_norm_eps=1e-6,
    max_position_embeddings=64,
    attention_bias=False,
    attention_dropout=0.0,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=1,
    attn_implementation="eager",
)


def specs():
    """name -> (class, config, weight seed, token seed)."""
    return {
        "gemma": (
            GemmaForCausalLM,
            GemmaConfig(**COMMON, num_hidden_layers=2, hidden_act="gelu_pytorch_tanh", rope_theta=10000.0,
                        tie_word_embeddings=True),
            3001, 4001,
        ),
        # layers 0 and 2 slide (window 5 < T), 1 and 3 are global; both soft-caps bite
        "gemma2": (
            Gemma2ForCausalLM,
            Gemma2Config(**COMMON, num_hidden_layers=4, hidden_activation="gelu_pytorch_tanh", rope_theta=10000.0,
                         query_pre_attn_scalar=10, sliding_window=5, attn_logit_softcapping=2.0,
                         final_logit_softcapping=1.5, tie_word_embeddings=True),
            3002, 4002,
        ),
        # sliding_window_pattern 3: layers 0, 1, 3 slide (window 6), layer 2 is global; local RoPE
        # base 10000, global base 1e6 with linear scaling 4; QK-norm; untied head; 4/1 heads
        "gemma3": (
            Gemma3ForCausalLM,
            Gemma3TextConfig(**{**COMMON, "num_key_value_heads": 1}, num_hidden_layers=4,
                             hidden_activation="gelu_pytorch_tanh", rope_theta=1000000.0, rope_local_base_freq=10000.0,
                             rope_scaling={"rope_type": "linear", "factor": 4.0}, sliding_window_pattern=3,
                             query_pre_attn_scalar=16, sliding_window=6, final_logit_softcapping=None,
                             attn_logit_softcapping=None, tie_word_embeddings=False),
            3003, 4003,
        ),
    }


@torch.no_grad()
def reinit(model, seed):
    torch.manual_seed(seed)
    done = set()
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in done:
                continue
            done.add(id(p))
            if type(mod).__name__.endswith("RMSNorm"):
                p.copy_(STD_NORM * torch.randn_like(p))
            elif pname == "weight":
                p.copy_(STD_MATRIX * torch.randn_like(p))
            else:
                raise RuntimeError(f"unexpected parameter {mname}.{pname}")
    assert len(done) == len({id(p) for p in model.parameters()})


def loss_of(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="mean")


def run_reference(model, inputs, targets):
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=inputs).logits
    loss = loss_of(logits, targets)
    loss.backward()
    params = dict(model.named_parameters())
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    model.zero_grad(set_to_none=True)
    tm = copy.deepcopy(model)
    tm.train()
    tparams = dict(tm.named_parameters())
    decay = [p for p in tparams.values() if p.dim() >= 2]
    no_decay = [p for p in tparams.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=ADAM_EPS)
    losses, norms = [], []
    for _ in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        l = loss_of(tm(input_ids=inputs).logits, targets)
        losses.append(l.detach().clone())
        l.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(tm.parameters(), CLIP_NORM).detach().clone())
        opt.step()
    return logits.detach(), loss.detach(), grads, torch.stack(losses), torch.stack(norms), \
        {n: p.detach().clone() for n, p in tparams.items()}


def logits_f64(model, inputs):
    """The same model in float64: RMSNorm, the RoPE tables and the softmax patched to stay in
    float64 (transformers hard-codes float32 there). An estimate of float32's own noise."""
    m = copy.deepcopy(model).double()
    for mod in m.modules():
        name = type(mod).__name__
        if name.endswith("RMSNorm"):
            def fwd(x, mod=mod):
                return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mod.eps) * (1.0 + mod.weight)
            mod.forward = fwd
        if name.endswith("RotaryEmbedding"):
            for k, v in list(mod._buffers.items()):
                if v is not None and "inv_freq" in k:
                    mod._buffers[k] = v.double()
    orig = F.softmax

    def softmax(x, dim=None, _stacklevel=3, dtype=None):
        return orig(x, dim=dim, _stacklevel=_stacklevel, dtype=None if x.dtype == torch.float64 else dtype)

    F.softmax, torch.nn.functional.softmax = softmax, softmax
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            return m(input_ids=inputs).logits
    finally:
        F.softmax = torch.nn.functional.softmax = orig
        torch.set_default_dtype(old)


def build(name, cls, config, wseed, tseed, out_root):
    out_dir = os.path.join(out_root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    torch.manual_seed(wseed)
    model = cls(config)
    assert model.config._attn_implementation == "eager"
    reinit(model, wseed)
    model = model.float()
    gen = torch.Generator().manual_seed(tseed)
    tokens = torch.randint(0, config.vocab_size, (B, T + 1), generator=gen, dtype=torch.int64)
    inputs, targets = tokens[:, :T], tokens[:, 1:]

    model.save_pretrained(out_dir, safe_serialization=True)
    gc = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    with safe_open(os.path.join(out_dir, "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        saved = {k: f.get_tensor(k) for k in names}
    params = dict(model.named_parameters())
    assert sorted(names) == sorted(params), (sorted(set(names) ^ set(params)))
    for k in names:
        assert torch.equal(saved[k], params[k].detach()), k

    logits, loss, grads, losses, norms, final = run_reference(model, inputs, targets)
    assert torch.equal(losses[0], loss)
    golden = {
        "tokens": tokens.to(torch.int32).contiguous(),
        "logits": logits.float().contiguous(),
        "loss": loss.float().reshape(1).contiguous(),
        "train_losses": losses.float().contiguous(),
        "train_grad_norms": norms.float().contiguous(),
    }
    for k in names:
        golden["grad." + k] = grads[k].float().contiguous()
        golden["final." + k] = final[k].float().contiguous()
    meta = {"producer": f"tools/ref/make_gemma_golden.py model={name} B={B} T={T} "
                        f"transformers={transformers.__version__} torch={torch.__version__}"}
    gpath = os.path.join(out_dir, "golden.safetensors")
    save_file(golden, gpath, metadata=meta)
    for fn in os.listdir(out_dir):
        os.chmod(os.path.join(out_dir, fn), 0o644)

    # the folder reloads to the same logits
    re = cls.from_pretrained(out_dir, attn_implementation="eager")
    re.train()
    with torch.no_grad():
        assert torch.equal(re(input_ids=inputs).logits, logits), f"{name}: reloaded folder differs"
    # KV-cache generation in transformers equals the full forward at the last position
    re.eval()
    with torch.no_grad():
        out = re(input_ids=inputs[:, :1], use_cache=True)
        cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
        for t in range(1, T):
            out = re(input_ids=inputs[:, t:t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
        kv_dev = (out.logits[:, -1] - logits[:, -1]).abs().max().item()

    l64 = logits_f64(model, inputs)
    dev = (logits.double() - l64).abs().max().item()
    gmax = max(g.abs().max().item() for g in grads.values())
    size = sum(os.path.getsize(os.path.join(out_dir, fn)) for fn in os.listdir(out_dir))
    print(f"[{name}] {len(names)} tensors, {sum(v.numel() for v in saved.values())} params; "
          f"loss {loss.item():.6f} (ln V {math.log(config.vocab_size):.4f}); |logits| max {logits.abs().max().item():.3f}; "
          f"train_losses {[round(x, 5) for x in losses.tolist()]}; max |grad| {gmax:.3g}; "
          f"logits f32 vs f64 {dev:.2e}; transformers KV-cache vs full {kv_dev:.2e}; folder {size} bytes")
    print(f"    layer_types {getattr(config, 'layer_types', None)}")


def check_saved(pairs, out_root):
    from transformers import AutoModelForCausalLM
    ok = True
    for saved_dir, name in pairs:
        with safe_open(os.path.join(out_root, name, "golden.safetensors"), framework="pt") as f:
            tokens, want = f.get_tensor("tokens").long(), f.get_tensor("logits")
        model = AutoModelForCausalLM.from_pretrained(saved_dir, attn_implementation="eager", dtype=torch.float32)
        model.train()
        with torch.no_grad():
            got = model(input_ids=tokens[:, :T]).logits
        err = (got.double() - want.double()).abs().max().item()
        ok = ok and err <= 1e-5
        print(f"{saved_dir}: {type(model).__name__}, logits vs golden {name}: max abs {err:.2e}")
    return ok


# llama.cpp's gemma3 tensor names -> transformers' (norms stored as 1 + w there)
GGUF_NAMES = {
    "attn_norm": ("input_layernorm", True), "attn_q": ("self_attn.q_proj", False), "attn_k": ("self_attn.k_proj", False),
    "attn_v": ("self_attn.v_proj", False), "attn_q_norm": ("self_attn.q_norm", True), "attn_k_norm": ("self_attn.k_norm", True),
    "attn_output": ("self_attn.o_proj", False), "post_attention_norm": ("post_attention_layernorm", True),
    "ffn_norm": ("pre_feedforward_layernorm", True), "ffn_gate": ("mlp.gate_proj", False), "ffn_up": ("mlp.up_proj", False),
    "ffn_down": ("mlp.down_proj", False), "post_ffw_norm": ("post_feedforward_layernorm", True),
}


def real_gemma3(gguf_path, out_dir, n_tokens=24):
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(gguf_path)
    meta = {k: v.parts[v.data[0]] for k, v in r.fields.items() if k.startswith("gemma3.") and len(v.data) == 1}
    d, L = int(meta["gemma3.embedding_length"][0]), int(meta["gemma3.block_count"][0])
    tensors = {}
    for t in r.tensors:
        a = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
        if t.name == "token_embd.weight":
            tensors["model.embed_tokens.weight"] = a
        elif t.name == "output_norm.weight":
            tensors["model.norm.weight"] = a - 1
        else:
            _, layer, kind, _ = t.name.split(".")
            hf, norm = GGUF_NAMES[kind]
            tensors[f"model.layers.{layer}.{hf}.weight"] = a - 1 if norm else a
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    # google/gemma-3-270m's config.json (the GGUF does not carry the local RoPE base or the pattern)
    config = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=d, intermediate_size=int(meta["gemma3.feed_forward_length"][0]), num_hidden_layers=L,
        num_attention_heads=int(meta["gemma3.attention.head_count"][0]), num_key_value_heads=int(meta["gemma3.attention.head_count_kv"][0]),
        head_dim=int(meta["gemma3.attention.key_length"][0]), max_position_embeddings=int(meta["gemma3.context_length"][0]),
        rms_norm_eps=float(meta["gemma3.attention.layer_norm_rms_epsilon"][0]), rope_theta=float(meta["gemma3.rope.freq_base"][0]),
        rope_local_base_freq=10000.0, sliding_window=int(meta["gemma3.attention.sliding_window"][0]), sliding_window_pattern=6,
        query_pre_attn_scalar=256, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, attn_implementation="eager",
        bos_token_id=2, eos_token_id=1, pad_token_id=0)
    model = Gemma3ForCausalLM(config)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    model.tie_weights()
    model.float().eval()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    gen = torch.Generator().manual_seed(5)
    tokens = torch.cat([torch.tensor([[2]]), torch.randint(3, 20000, (1, n_tokens - 1), generator=gen)], dim=1)
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    save_file({"tokens": tokens.to(torch.int32).contiguous(), "logits": logits.float().contiguous()},
              os.path.join(out_dir, "golden.safetensors"))
    print(f"{out_dir}: gemma3_text d={d} L={L} vocab={vocab}, layer_types {config.layer_types}; "
          f"logits of {n_tokens} tokens, |max| {logits.abs().max().item():.2f}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "data", "golden"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--check-saved", nargs=2, action="append", metavar=("DIR", "NAME"))
    ap.add_argument("--real-gguf", default=None)
    ap.add_argument("--real-out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {sys.version.split()[0]}")
    if args.check_saved:
        sys.exit(0 if check_saved(args.check_saved, args.out) else 1)
    if args.real_gguf:
        real_gemma3(args.real_gguf, args.real_out)
        return
    for name, (cls, config, wseed, tseed) in specs().items():
        build(name, cls, config, wseed, tseed, args.out)
    print(f"wrote {', '.join(specs())} under {args.out}")


if __name__ == "__main__":
    main()
