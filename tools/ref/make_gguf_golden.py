#!/usr/bin/env python3
"""Golden summaries of fusekit's GGUF export, checked by independent means.

1. Runs the C test binary in generation mode (FK_GGUF_GOLDEN_OUT=DIR test_gguf_model): it writes,
   for each tiny deterministic model (llama_tiny, qwen2_tiny, gpt2_tiny; fixed seeds), the GGUF
   export DIR/<name>.gguf and the same model as a Hugging Face folder DIR/<name>_hf/
   (config.json, model.safetensors, tokenizer.json).
2. Reads each GGUF with tools/ref/check_gguf.py (llama.cpp's `gguf` package; no fusekit code).
3. Builds the GGUF file llama.cpp expects from the Hugging Face folder alone, with numpy and the
   facts of llama.cpp's conventions -- tensor names, ggml dims (reversed numpy shape), GPT-2's
   Conv1D weights transposed to [out, in], q/k rows (weights and biases) permuted per head from
   rotate-half into interleaved RoPE order as convert_hf_to_gguf.py does, keys and their types
   (counts u32, epsilons and RoPE base f32), tokenizer tokens and merges from tokenizer.json --
   and asserts the file holds exactly that (every tensor's SHA-256, every expected key).
4. Writes tests/data/gguf/<name>.check.json: the reader's keys (type, element type, value) and
   tensors (name, ggml type, shape, bytes, offset, sha256), which tests/test_gguf_model.c
   compares against a fresh export.

Run from the repository root:  tools/ref/.venv/bin/python tools/ref/make_gguf_golden.py [--build build]
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ["llama_tiny", "qwen2_tiny", "gpt2_tiny"]


def interleave_rows(w, n_head):
    """Rotate-half -> interleaved RoPE order, written two ways that must agree: as an index map
    (row 2j+s of head h takes row s*hd/2+j) and as convert_hf_to_gguf.py's reshape formula."""
    hd = w.shape[0] // n_head
    half = hd // 2
    idx = [h * hd + s * half + j for h in range(n_head) for j in range(half) for s in range(2)]
    a = w[idx]
    b = w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    assert np.array_equal(a, b)
    return a


def expected_tensors(hf_dir, cfg):
    """GGUF tensor name -> float32 array in the layout llama.cpp reads, from the HF folder."""
    st = load_file(os.path.join(hf_dir, "model.safetensors"))
    out = {}
    if cfg["model_type"] == "gpt2":
        p = "transformer." if "transformer.wte.weight" in st else ""
        out["token_embd.weight"] = st[p + "wte.weight"]
        out["position_embd.weight"] = st[p + "wpe.weight"]
        for i in range(cfg["n_layer"]):
            h = f"{p}h.{i}."
            b = f"blk.{i}."
            for hf, gg, conv in [("ln_1", "attn_norm", False), ("attn.c_attn", "attn_qkv", True), ("attn.c_proj", "attn_output", True),
                                 ("ln_2", "ffn_norm", False), ("mlp.c_fc", "ffn_up", True), ("mlp.c_proj", "ffn_down", True)]:
                w = st[h + hf + ".weight"]
                out[b + gg + ".weight"] = w.T if conv else w  # Conv1D stores [in, out]
                out[b + gg + ".bias"] = st[h + hf + ".bias"]
        out["output_norm.weight"] = st[p + "ln_f.weight"]
        out["output_norm.bias"] = st[p + "ln_f.bias"]
        if "lm_head.weight" in st and not cfg.get("tie_word_embeddings", True):
            out["output.weight"] = st["lm_head.weight"]
        return out
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    out["token_embd.weight"] = st["model.embed_tokens.weight"]
    for i in range(cfg["num_hidden_layers"]):
        h = f"model.layers.{i}."
        b = f"blk.{i}."
        pairs = [("input_layernorm", "attn_norm", None), ("self_attn.q_proj", "attn_q", H), ("self_attn.k_proj", "attn_k", KV),
                 ("self_attn.v_proj", "attn_v", None), ("self_attn.o_proj", "attn_output", None),
                 ("post_attention_layernorm", "ffn_norm", None), ("mlp.gate_proj", "ffn_gate", None),
                 ("mlp.up_proj", "ffn_up", None), ("mlp.down_proj", "ffn_down", None)]
        for hf, gg, heads in pairs:
            for kind in ("weight", "bias"):
                if h + hf + "." + kind in st:
                    w = st[h + hf + "." + kind]
                    out[b + gg + "." + kind] = interleave_rows(w, heads) if heads else w
    out["output_norm.weight"] = st["model.norm.weight"]
    if "lm_head.weight" in st:
        out["output.weight"] = st["lm_head.weight"]
    return out


def expected_keys(cfg, tok):
    """key -> (gguf-py type name, value) that llama.cpp needs, from config.json and tokenizer.json."""
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    if cfg["model_type"] == "gpt2":
        a = "gpt2"
        k = {f"{a}.context_length": ("UINT32", cfg["n_positions"]), f"{a}.embedding_length": ("UINT32", cfg["n_embd"]),
             f"{a}.block_count": ("UINT32", cfg["n_layer"]),
             f"{a}.feed_forward_length": ("UINT32", cfg.get("n_inner") or 4 * cfg["n_embd"]),
             f"{a}.attention.head_count": ("UINT32", cfg["n_head"]),
             f"{a}.attention.layer_norm_epsilon": ("FLOAT32", f32(cfg["layer_norm_epsilon"]))}
    else:
        a = "llama"
        H = cfg["num_attention_heads"]
        hd = cfg.get("head_dim", cfg["hidden_size"] // H)
        k = {f"{a}.context_length": ("UINT32", cfg["max_position_embeddings"]), f"{a}.embedding_length": ("UINT32", cfg["hidden_size"]),
             f"{a}.block_count": ("UINT32", cfg["num_hidden_layers"]), f"{a}.feed_forward_length": ("UINT32", cfg["intermediate_size"]),
             f"{a}.attention.head_count": ("UINT32", H), f"{a}.attention.head_count_kv": ("UINT32", cfg["num_key_value_heads"]),
             f"{a}.rope.freq_base": ("FLOAT32", f32(cfg["rope_theta"])), f"{a}.rope.dimension_count": ("UINT32", hd),
             f"{a}.attention.layer_norm_rms_epsilon": ("FLOAT32", f32(cfg["rms_norm_eps"]))}
    k["general.architecture"] = ("STRING", a)
    k[f"{a}.vocab_size"] = ("UINT32", cfg["vocab_size"])
    k["general.file_type"] = ("UINT32", 0)
    vocab = dict(tok["model"]["vocab"])
    for t in tok.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    tokens = [None] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    k["tokenizer.ggml.model"] = ("STRING", "gpt2")
    k["tokenizer.ggml.tokens"] = ("ARRAY", tokens)
    k["tokenizer.ggml.merges"] = ("ARRAY", merges)
    return k


def check_one(gguf_path, hf_dir):
    r = subprocess.run([sys.executable, os.path.join(HERE, "check_gguf.py"), "--json", gguf_path], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"check_gguf failed on {gguf_path}: {r.stderr}")
    got = json.loads(r.stdout)
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(hf_dir, "tokenizer.json")) as f:
        tok = json.load(f)
    assert got["version"] == 3, got["version"]
    for key, (typ, val) in expected_keys(cfg, tok).items():
        assert key in got["kv"], f"{gguf_path}: key {key} missing"
        assert got["kv"][key]["type"] == typ, f"{key}: {got['kv'][key]['type']} != {typ}"
        assert got["kv"][key]["value"] == val, f"{key}: {got['kv'][key]['value']!r} != {val!r}"
    exp = expected_tensors(hf_dir, cfg)
    names = [t["name"] for t in got["tensors"]]
    assert sorted(names) == sorted(exp), f"tensor names differ: {sorted(set(names) ^ set(exp))}"
    permuted = 0
    for t in got["tensors"]:
        e = np.ascontiguousarray(exp[t["name"]], dtype="<f4")
        assert t["type"] == "F32", t
        assert t["shape"] == list(reversed(e.shape)), (t["name"], t["shape"], e.shape)
        assert t["sha256"] == hashlib.sha256(e.tobytes()).hexdigest(), f"{t['name']}: data differs from the HF tensor"
        permuted += t["name"].endswith(("attn_q.weight", "attn_k.weight", "attn_q.bias", "attn_k.bias"))
    summary = {"version": got["version"], "alignment": got["alignment"], "kv": got["kv"],
               "tensors": [{k: t[k] for k in ("name", "type", "shape", "n_bytes", "offset", "sha256")} for t in got["tensors"]]}
    return summary, len(got["tensors"]), permuted


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="CMake build folder holding tests/test_gguf_model (default build)")
    ap.add_argument("--out", default="tests/data/gguf", help="where the .check.json files go (default tests/data/gguf)")
    args = ap.parse_args()
    exe = os.path.join(args.build, "tests", "test_gguf_model")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, FK_GGUF_GOLDEN_OUT=tmp, OMP_NUM_THREADS="1")
        r = subprocess.run([exe], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{exe} failed:\n{r.stdout}{r.stderr}")
        os.makedirs(args.out, exist_ok=True)
        for name in NAMES:
            summary, n, permuted = check_one(os.path.join(tmp, name + ".gguf"), os.path.join(tmp, name + "_hf"))
            path = os.path.join(args.out, name + ".check.json")
            with open(path, "w") as f:
                json.dump(summary, f, indent=1)
                f.write("\n")
            print(f"{path}: {len(summary['kv'])} keys, {n} tensors ({permuted} RoPE-permuted) match the HF folder")


if __name__ == "__main__":
    main()
