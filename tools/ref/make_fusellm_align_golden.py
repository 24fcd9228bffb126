#!/usr/bin/env python3
"""Goldens of FuseLLM's own token alignment and vocabulary map (tests/data/fusellm_align/).

Runs FuseLLM's functions (github fanqiwan/FuseLLM, FuseLLM/src/utils/others.py: dtw and
transform_step_logits; vocab_mapping.py: find_best_mapping) on token sequences of real text
tokenized by fusekit, for pairs of real tokenizers (../shared/data/tokenizers GGUF vocabularies,
loaded by transformers) and the demo's trained tokenizers (tests/data/fusellm_align/demo).
The FuseLLM source is read at dev time from --fusellm (a checkout; never committed):

    git clone https://github.com/fanqiwan/FuseLLM /work/cache/fusellm   (or an archive of it)
    tools/ref/.venv/bin/pip install editdistance
    tools/ref/.venv/bin/python tools/ref/make_fusellm_align_golden.py --fusekit build/fusekit \
        --fusellm /work/cache/fusellm

How FuseLLM's code is driven (nothing of it is changed):
- Tokenizers: the GGUF vocabularies are written as tokenizer.json by `fusekit tokenizer convert`
  (transformers' GGUF loader refuses mpt and falcon) and loaded by transformers'
  PreTrainedTokenizerFast; every id's convert_ids_to_tokens string is checked against the
  vocabulary read by gguf-py (or the demo's tokenizer.json read as JSON).
- transform_step_logits looks up each tokenizer's word marker by class (LlamaTokenizer "▁",
  GPTNeoXTokenizerFast "Ġ") and applies its first-token special case to GPTNeoXTokenizerFast /
  GPT2TokenizerFast sources. transformers 5 loads these vocabularies as TokenizersBackend; each
  instance gets the class of its kind (SentencePiece: LlamaTokenizer, byte-level:
  GPTNeoXTokenizerFast), a subclass of TokenizersBackend whose convert_ids_to_tokens is the same.
- The alignment pairs: others.dtw is wrapped to record what transform_step_logits's call returns
  (base_to_blending: the source tokens of each target token).
- Whether a target position uses the source's distribution: per step the source gets one entry
  (its own token id, logit -(j + 2)); transform_step_logits's output at position i is the one-hot
  [1.0] exactly when it does not. Run in "hard" mode (no map) and "soft" mode (the MinED map).
- The map: find_best_mapping, the function vocab_mapping.py defines inside its __main__ block,
  taken from the file by its syntax tree and run as it is, for every source token of the
  sequences plus 150 random source ids. base_tokens is the target vocabulary in id order
  (FuseLLM's list(get_vocab().keys()) is id order for the slow LlamaTokenizer it loads and a
  hash order, different each run, for fast tokenizers; min() keeps the first of equal
  distances, so id order makes its ties deterministic: the lowest id). The number of target
  tokens tied at the minimum is recorded too.

Output, one file per pair, <src>--<tgt>.txt, lines of space-separated fields:
  pair SRC TGT            seq NAME NS NT            sids ... / sbeg ... (NS + 1) / tids ... / tbeg ...
  lo ... / hi ...         (per target token: its aligned source tokens [lo, hi))
  hard 0|1 ... / soft 0|1 ...   (per target token: the source's distribution used)
  map SID TID TIES        (find_best_mapping of source token SID: target id, tokens tied at the minimum)
"""
import argparse
import ast
import importlib.util
import json
import os
import random
import subprocess
import sys

import editdistance

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared", "data")
TOKDIR = os.path.join(SHARED, "tokenizers")
OUT = os.path.join(ROOT, "tests", "data", "fusellm_align")

# (source, target, text file, byte offset of each chunk): the paper's MPT -> Llama 2 and
# OpenLLaMA (SentencePiece) -> Llama 2, byte-level to byte-level, code, and the demo's A, C -> B.
PAIRS = [
    ("mpt", "llama-spm", "wikitext2/valid.txt", [20000, 400000]),
    ("phi-3", "llama-spm", "shakespeare/input.txt", [5000, 600000]),
    ("llama-spm", "gpt-2", "wikitext2/test.txt", [30000, 700000]),
    ("falcon", "gpt-2", "shakespeare/input.txt", [100000, 900000]),
    ("starcoder", "llama-spm", "linux/test.txt", [10000, 150000]),
    ("gpt-2", "deepseek-llm", "linux/test.txt", [60000]),
    ("demo-A", "demo-B", "demo", [0, 5000]),
    ("demo-C", "demo-B", "demo", [2500, 8000]),
]
SPM = ("llama-spm", "phi-3", "demo-B")  # SentencePiece-style vocabularies; the rest are byte-level BPE
# bytes per sequence: a few hundred tokens, under FK_ALIGN_DTW_WINDOW (512) target tokens, so
# that fusekit's modes align it as one window as FuseLLM aligns a sequence (the demo's small
# vocabularies take about one token per 2 bytes)
CHUNK = {"demo": 500}
CHUNK_DEFAULT = 1000
N_RANDOM = 150


def tok_path(name):
    if name.startswith("demo-"):
        return os.path.join(OUT, "demo", name[5:])
    return os.path.join(TOKDIR, f"ggml-vocab-{name}.gguf")


def load_hf(fk, name, kind, work):
    import transformers

    folder = tok_path(name)
    if not name.startswith("demo-"):  # (transformers' own GGUF loader refuses mpt and falcon vocabularies)
        folder = os.path.join(work, name)
        subprocess.run([fk, "tokenizer", "convert", "--tokenizer", tok_path(name), "-o", folder, "--force"], check=True,
                       capture_output=True)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"))
    tok.__class__ = transformers.LlamaTokenizer if kind == "spm" else transformers.GPTNeoXTokenizerFast
    return tok


def fusekit_encode(fk, name, text):
    r = subprocess.run([fk, "tokenizer", "encode", "--tokenizer", tok_path(name), "--json"], input=text.encode(),
                       capture_output=True, check=True)
    return json.loads(r.stdout)


def vocab_strings(name):
    """The vocabulary's strings by id, read without transformers (gguf-py / the JSON itself)."""
    if name.startswith("demo-"):
        j = json.load(open(os.path.join(tok_path(name), "tokenizer.json")))
        v = dict(j["model"]["vocab"])
        v.update({a["content"]: a["id"] for a in j.get("added_tokens", [])})
        out = [None] * (max(v.values()) + 1)
        for k, i in v.items():
            out[i] = k
        return out
    import gguf

    f = gguf.GGUFReader(tok_path(name)).fields["tokenizer.ggml.tokens"]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def load_fusellm(root):
    utils = os.path.join(root, "FuseLLM", "src", "utils")
    spec = importlib.util.spec_from_file_location("fusellm_others", os.path.join(utils, "others.py"))
    others = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(others)
    tree = ast.parse(open(os.path.join(utils, "vocab_mapping.py")).read())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "find_best_mapping")
    ns = {"editdistance": editdistance}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "vocab_mapping.py", "exec"), ns)
    return others, ns["find_best_mapping"]


def chunk_text(domain, off):
    if domain == "demo":
        raw = open(os.path.join(OUT, "demo", "text.txt"), "rb").read()
    else:
        raw = open(os.path.join(SHARED, "corpora", domain), "rb").read()
    start = raw.index(b"\n", off) + 1
    end = raw.index(b"\n", start + CHUNK.get(domain, CHUNK_DEFAULT)) + 1
    return raw[start:end].decode("utf-8")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fusekit", required=True)
    ap.add_argument("--fusellm", required=True, help="a FuseLLM checkout (github fanqiwan/FuseLLM)")
    ap.add_argument("--only", nargs="*", help="only these pairs (SRC--TGT)")
    ap.add_argument("--work", default="/tmp/fusellm_align_work", help="scratch folder for tokenizer.json conversions")
    args = ap.parse_args()
    others, find_best_mapping = load_fusellm(args.fusellm)
    recorded = {}
    real_dtw = others.dtw

    def recording_dtw(s1, s2, norm_func):
        r = real_dtw(s1, s2, norm_func=norm_func)
        recorded["base_to_blending"] = r[3]
        return r

    others.dtw = recording_dtw
    rng = random.Random(19)
    cache = {}
    for src, tgt, domain, offs in PAIRS:
        if args.only and f"{src}--{tgt}" not in args.only:
            continue
        toks = {}
        for name in (src, tgt):
            if name not in cache:
                cache[name] = load_hf(args.fusekit, name, "spm" if name in SPM else "bpe", args.work)
                strings = cache[name].convert_ids_to_tokens(list(range(len(cache[name].get_vocab()))))
                assert strings == vocab_strings(name), f"{name}: convert_ids_to_tokens differs from the vocabulary"
            toks[name] = cache[name]
        S, T = toks[src], toks[tgt]
        s_vocab = S.get_vocab()
        t_vocab = T.get_vocab()
        t_by_id = sorted(t_vocab.items(), key=lambda kv: kv[1])
        base_tokens = [k for k, _ in t_by_id]
        s_marker = others.TOKENIZER_TO_SPECIAL_TOKEN[S.__class__]
        t_marker = others.TOKENIZER_TO_SPECIAL_TOKEN[T.__class__]
        replaced = {x.replace(s_marker, t_marker): x for x in s_vocab}  # (no two differ only by marker here)
        lines = [f"pair {src} {tgt}"]
        map_ids = set()
        for k, off in enumerate(offs):
            text = chunk_text(domain, off)
            es, et = fusekit_encode(args.fusekit, src, text), fusekit_encode(args.fusekit, tgt, text)
            sids, tids = es["ids"], et["ids"]
            sbeg = [sp[0] for sp in es["offsets"]] + [es["offsets"][-1][1]]
            tbeg = [sp[0] for sp in et["offsets"]] + [et["offsets"][-1][1]]
            map_ids.update(sids)
            s_strings = S.convert_ids_to_tokens(sids)
            # vocab_mapping.py's map (keyed by every source string, marker replaced), for every
            # key soft mode may look up here: the sequence's tokens, and the first token with
            # the special case's marker when that is a source token's string too
            firsts = [s_strings[0], t_marker + s_strings[0].replace(s_marker, t_marker)]
            mapping = {}
            for x in set(s_strings) | {replaced[f] for f in firsts if f in replaced}:
                tmp_x, best = find_best_mapping(x, base_tokens, s_marker, t_marker)
                mapping[tmp_x] = best
            logits = [[-(j + 2.0)] for j in range(len(sids))]
            indices = [[i] for i in sids]
            used = {}
            for mode in ("hard", "soft"):
                out_logits, _ = others.transform_step_logits(
                    base_model_tokenizer=T, blending_model_tokenizer=S, base_model_vocab=t_vocab,
                    base_model_input_ids=tids, blending_model_input_ids=sids,
                    blending_model_per_step_logits=logits, blending_model_per_step_indices=indices,
                    vocab_align_type=mode, blending_to_base_mapping=mapping if mode == "soft" else None)
                used[mode] = [0 if lg == [1.0] else 1 for lg in out_logits]
            b2s = recorded["base_to_blending"]
            lo = [min(x) for x in b2s]
            hi = [max(x) + 1 for x in b2s]
            lines.append(f"seq {domain}@{off} {len(sids)} {len(tids)}")
            for key, vals in (("sids", sids), ("sbeg", sbeg), ("tids", tids), ("tbeg", tbeg), ("lo", lo), ("hi", hi),
                              ("hard", used["hard"]), ("soft", used["soft"])):
                lines.append(key + " " + " ".join(map(str, vals)))
        map_ids.update(rng.randrange(len(s_vocab)) for _ in range(N_RANDOM))
        s_strings = S.convert_ids_to_tokens(sorted(map_ids))
        n_tied = 0
        for sid, x in zip(sorted(map_ids), s_strings):
            tmp_x, best = find_best_mapping(x, base_tokens, s_marker, t_marker)
            ties = 1
            if best != tmp_x:
                _, tied = find_best_mapping(x, base_tokens, s_marker, t_marker, best_one=False)
                ties = len(tied)
                n_tied += ties > 1
            lines.append(f"map {sid} {t_vocab[best]} {ties}")
        path = os.path.join(OUT, f"{src}--{tgt}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{src} -> {tgt}: {len(offs)} sequences, {len(map_ids)} mapped ids ({n_tied} with tied minima) -> {path}",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
