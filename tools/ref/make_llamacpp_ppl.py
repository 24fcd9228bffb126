#!/usr/bin/env python3
"""Development time only: tests/data/gguf/llamacpp_ppl/ — perplexity parity with llama.cpp
for each model family fusekit exports to GGUF (issue 18, "References and tests").

For each family (FAMILIES below) this script
  1. builds the family's own transformers model class from the config of its golden folder
     (tests/data/golden/<golden>/config.json) with the vocabulary of a tokenizer trained by
     fusekit, random weights (seed 0), and saves it with that tokenizer;
  2. trains it for a few steps with `fusekit train --init` (so that its predictions are far from
     uniform and the perplexity depends on every part of the forward), which writes a Hugging
     Face folder of the same model_type;
  3. runs bench/llama_ppl.sh on the folder (fusekit export --gguf --type f32, llama.cpp's
     llama-perplexity, `fusekit eval --protocol llama-perplexity`) and writes
     <out>/<family>/ = the folder + llama_cpp.json (both perplexities, chunks, n_ctx, GGUF
     architecture), which tests/test_llamacpp_parity.c checks fusekit against.

The shared texts are public domain (Tiny Shakespeare from ../shared/data): train.txt is not
committed (20 kB from the start), eval.txt is (the first 4 kB of the held-out last 10%).

usage: LLAMA_PERPLEXITY=/path/to/llama-perplexity tools/ref/.venv/bin/python \
         tools/ref/make_llamacpp_ppl.py BUILD [--only FAMILY ...] [--types f32 f16]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests/data/gguf/llamacpp_ppl")
CORPUS = os.path.join(ROOT, "../shared/data/corpora/shakespeare/input.txt")
N_CTX = 32
VOCAB = 320

# family -> (golden folder whose config is used, tokenizer kind and pre-tokenizer, config changes,
# fold): fold=True folds a third of the FFN away after training (`fusekit fold`: per-layer
# widths, exported as llama.cpp's deci).
FAMILIES = {
    "gpt2": ("gpt2", ("bpe", "gpt-2"), {"n_positions": 64}, False),
    "llama": ("llama", ("spm", None), {}, False),
    "deci": ("llama", ("spm", None), {}, True),
    "qwen2": ("qwen2", ("bpe", "qwen2"), {}, False),
    "qwen3": ("qwen3", ("bpe", "qwen2"), {"hidden_size": 32, "intermediate_size": 48, "head_dim": 16}, False),
    "gemma": ("gemma", ("spm", None), {}, False),
    "gemma2": ("gemma2", ("spm", None), {}, False),
    "gemma3": ("gemma3", ("spm", None), {}, False),
    # llama.cpp's starcoder2 graph has no window: fusekit exports a windowed model with
    # context_length = window, so the window is the evaluation context here (32)
    "starcoder2": ("starcoder2", ("bpe", "starcoder"), {"sliding_window": N_CTX}, False),
    # llama.cpp sets Phi-3's token attributes by general.name ("phi3": the folder's name) and
    # then needs Phi-3's <|endoftext|>
    "phi3": ("phi3_partial", ("spm", None, "<|endoftext|>"), {}, False),
    # llama.cpp's gptneox graph computes the tanh GELU (exact GELU is refused on export)
    "gptneox": ("gpt_neox", ("bpe", "gpt-2"), {"hidden_act": "gelu_new", "hidden_size": 32, "intermediate_size": 64}, False),
    "phi2": ("phi", ("bpe", "gpt-2"), {}, False),
    # StableLM 2 12B's form: qk_layernorm (attn_q_norm / attn_k_norm {head_dim, heads}), parallel from one norm
    "stablelm_qkln": ("stablelm_qkln", ("bpe", "gpt-2"), {}, False),
    # Falcon 7B's form (multi-query, one norm) and Falcon 40B's (two norms as attn_norm_2 / attn_norm, 2 KV
    # heads), no biases, with the tanh GELU llama.cpp's falcon computes
    "falcon": ("falcon", ("bpe", "gpt-2"), {"activation": "gelu_new", "hidden_size": 32, "ffn_hidden_size": 64}, False),
    "falcon40b": ("falcon_40b_tanh", ("bpe", "gpt-2"), {}, False),
    # OLMo 2 with grouped KV heads (the olmo2_gqa golden) and OLMo 2's pre-tokenizer (llama.cpp's dbrx)
    "olmo2": ("olmo2_gqa", ("bpe", "dbrx"), {}, False),
    # mixtures of experts (4 experts, top 2): Mixtral as llama.cpp's llama; Qwen2-MoE without dense layers
    # (llama.cpp's qwen2moe makes every layer MoE); OLMoE multi-head (llama.cpp's olmoe: attn_k_norm n_embd wide)
    "mixtral": ("mixtral", ("spm", None), {}, False),
    "qwen2moe": ("qwen2_moe", ("bpe", "qwen2"), {"mlp_only_layers": []}, False),
    "qwen3moe": ("qwen3_moe", ("bpe", "qwen2"), {}, False),
    "olmoe": ("olmoe", ("bpe", "dbrx"), {"num_key_value_heads": 4}, False),
    # a padded vocabulary: 320 embedding rows for 318 tokens (export writes [PAD318], [PAD319])
    "llama_padded": ("llama", ("spm", None, None, VOCAB - 2), {}, False),
}


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, **kw).stdout


def texts(tmp):
    data = open(CORPUS, encoding="utf-8").read()
    train = os.path.join(tmp, "train.txt")
    with open(train, "w", encoding="utf-8") as f:
        f.write(data[:20000])
    held = data[len(data) * 9 // 10:]
    held = held[held.index("\n\n") + 2:]  # from the start of a speech
    cut = held[:4096]
    with open(os.path.join(OUT, "eval.txt"), "w", encoding="utf-8") as f:
        f.write(cut[:cut.rindex("\n") + 1])
    return train


def tokenizer(build, tmp, train, kind, pre, special=None, vocab=VOCAB):
    d = os.path.join(tmp, "tok-%s-%s-%s-%d" % (kind, pre, special, vocab))
    if not os.path.isdir(d):
        cmd = [build + "/fusekit", "tokenizer", "train", "--kind", kind, "--vocab", str(vocab), "--data", train, "-o", d]
        run(*(cmd + (["--pre", pre] if pre else []) + (["--special", special] if special else [])))
    return d


def init_folder(golden, changes, tok, dst):
    cfg_path = os.path.join(ROOT, "tests/data/golden", golden, "config.json")
    config = transformers.AutoConfig.from_pretrained(cfg_path)
    text = getattr(config, "text_config", None) or config
    text.vocab_size = VOCAB
    for k in ("max_position_embeddings",):
        if hasattr(text, k):
            setattr(text, k, max(getattr(text, k), 2 * N_CTX))
    for k, v in changes.items():
        setattr(text, k, v)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(dst, safe_serialization=True)
    for f in os.listdir(tok):
        shutil.copy(os.path.join(tok, f), dst)


def train(build, init, train_txt, dst, fold):
    trained = init + "-trained" if fold else dst
    run(build + "/fusekit", "train", "--init", init, "--data", train_txt, "--steps", "60", "--batch", "4", "--seq", str(N_CTX),
        "--lr", "3e-3", "--seed", "7", "--eval-every", "0", "--log-every", "1000", "-o", trained, stderr=subprocess.DEVNULL)
    if fold:
        run(build + "/fusekit", "fold", "--model", trained, "--data", train_txt, "--budget", "0.3", "--ops", "ffn", "--fold-edges",
            "-o", dst, stderr=subprocess.DEVNULL)
    for f in os.listdir(dst):
        if f.startswith("checkpoint-") or f in ("metrics.jsonl", "plan.json"):
            p = os.path.join(dst, f)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def measure(build, folder, types):
    env = dict(os.environ, TYPES=" ".join(types))
    out = run("sh", os.path.join(ROOT, "bench/llama_ppl.sh"), build, os.path.join(OUT, "eval.txt"), str(N_CTX), folder, env=env)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--types", nargs="*", default=["f32", "f16"])
    ap.add_argument("--stage", choices=["all", "train", "measure"], default="all",
                    help="train: only write the folders; measure: only measure the folders already there")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        train_txt = texts(tmp)
        for fam in a.only or FAMILIES:
            golden, tok_kind, changes, fold = FAMILIES[fam]
            dst = os.path.join(OUT, fam)
            if a.stage != "measure":
                tok = tokenizer(build, tmp, train_txt, *tok_kind)
                init = os.path.join(tmp, fam + "-init")
                init_folder(golden, changes, tok, init)
                shutil.rmtree(dst, ignore_errors=True)
                train(build, init, train_txt, dst, fold)
            if a.stage == "train":
                continue
            rows = measure(build, dst, a.types)
            f32 = next(r for r in rows if r["gguf_type"] == "f32")
            rec = {"family": fam, "model_type": json.load(open(os.path.join(dst, "config.json"))).get("model_type"),
                   "gguf_arch": f32["arch"], "n_ctx": N_CTX, "chunks": f32["chunks_llama_cpp"],
                   "llama_cpp": {r["gguf_type"]: r["ppl_llama_cpp"] for r in rows}, "fusekit": f32["ppl_fusekit"],
                   "llama_cpp_source": "llama-cpp-python 0.3.36 sdist, vendor/llama.cpp, CPU, default options",
                   "transformers": transformers.__version__, "torch": torch.__version__}
            with open(os.path.join(dst, "llama_cpp.json"), "w") as f:
                json.dump(rec, f, indent=1)
                f.write("\n")
            print(json.dumps(rec))
            if f32["chunks_fusekit"] != f32["chunks_llama_cpp"] or abs(f32["rel_diff"]) > 1e-4:
                print("%s: llama.cpp and fusekit disagree: %s" % (fam, rows), file=sys.stderr)


if __name__ == "__main__":
    main()
