#!/usr/bin/env python3
"""Golden token ids of whole corpora for the tokenizers of the model families fusekit loads,
from Hugging Face's `tokenizers` package (PyPI), for tests/real/test_real_tok.c.

usage: make_tok_golden.py [--vocabs DIR] [--corpora DIR] [--out FILE] [--json-dir DIR] [--only NAME]

The vocabularies are llama.cpp's test vocabularies (models/ggml-vocab-NAME.gguf in llama.cpp's
repository, shipped in the llama-cpp-python sdist on PyPI under vendor/llama.cpp/models;
tests/real/fetch_vocabs.sh fetches them). Each is turned into a `tokenizers.Tokenizer` by
transformers' own GGUF converter (the one AutoTokenizer.from_pretrained(dir, gguf_file=...) uses), then given
the parts of the family's published tokenizer.json that a GGUF file does not carry (the table
below: Qwen2's and GPT-NeoX's NFC normalizer, Llama 3's ignore_merges, Falcon's and StarCoder2's
pre-tokenizer sequences). Where llama.cpp ships test vectors for the vocabulary (NAME.gguf.inp /
.out, made with the family's real tokenizer), the reference must reproduce all of them first:
that checks the converted tokenizer against the published one.

For every vocabulary and corpus it writes one line to FILE (default tests/data/tok/corpus_golden.txt):
  NAME CORPUS N_TOKENS SHA256(ids as little-endian int32) FIRST_16_IDS(comma separated)
encoded without special tokens added (add_special_tokens=False). The corpora: the three of
../shared/data/corpora and tok/nfd.txt, which this script writes beside FILE: the NFD form of
llama.cpp's test strings and of the first 64 KB of WikiText-2's test set (a text that is not in
NFC, for the NFC normalizer). Beside FILE it also writes NAME.shape.json: the reference's
tokenizer.json with model.vocab and model.merges emptied (the test fills them in from the GGUF
file: everything else, normalizer, pre-tokenizer, added tokens, model options, is the reference's).
With --json-dir it also saves each whole reference as DIR/NAME/tokenizer.json.
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import tempfile
import unicodedata

import gguf
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer

CORPORA = ["wikitext2/test.txt", "shakespeare/input.txt", "linux/train.txt", "tok/nfd.txt"]


def write_nfd(vocabs, corpora, path):
    """A text that NFC changes: NFD of llama.cpp's test strings and of WikiText-2's first 64 KB."""
    text = open(os.path.join(vocabs, "ggml-vocab-qwen2.gguf.inp"), encoding="utf-8").read()
    text += open(os.path.join(corpora, "wikitext2/test.txt"), encoding="utf-8").read()[:65536]
    nfd = unicodedata.normalize("NFD", text)
    assert unicodedata.normalize("NFC", nfd) != nfd
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(nfd)


def nfc(tk):
    tk.normalizer = normalizers.NFC()


def ignore_merges(tk):
    tk.model.ignore_merges = True


def falcon_pre(tk):  # tiiuae/falcon-7b's tokenizer.json
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Punctuation(behavior="contiguous"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split(Regex("[0-9][0-9][0-9]"), behavior="isolated", invert=False),
    ])


def starcoder_pre(tk):  # bigcode/starcoder2-3b's tokenizer.json
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])


def bytelevel_pre(tk):  # GPT-2, GPT-NeoX-20B, Phi-2 / CodeGen
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)


def whitespace_added(tk, path):
    """GPT-NeoX-20B's (and so MPT's) runs of 2..24 spaces are added tokens of their published
    tokenizer.json, matched before pre-tokenization, spelled as plain spaces (USER_DEFINED in the
    GGUF). The converter respells them in the byte alphabet, where "  " becomes a second "ĠĠ"
    that takes over the id of the real "ĠĠ" (245), and drops them as added tokens. Here they keep
    their own spelling and id, in the vocabulary and as added tokens (normalized, not special),
    and every other token its first id."""
    r = gguf.GGUFReader(path)
    toks, types = r.fields["tokenizer.ggml.tokens"], r.fields["tokenizer.ggml.token_type"]
    spell = bytes_to_unicode()
    alphabet = set(spell.values())
    vocab, extra = {}, []
    for i, d in enumerate(types.data):
        text = bytes(toks.parts[toks.data[i]]).decode("utf-8")
        raw = int(types.parts[d][0]) == 4 and not set(text) <= alphabet
        if raw:
            extra.append({"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": True, "special": False})
        key = text if raw or set(text) <= alphabet else "".join(spell[b] for b in text.encode("utf-8"))
        vocab.setdefault(key, i)
    if not extra:
        return tk
    j = json.loads(tk.to_str())
    j["model"]["vocab"] = vocab
    j["added_tokens"] = sorted(j["added_tokens"] + extra, key=lambda t: t["id"])
    return Tokenizer.from_str(json.dumps(j))


# NAME: (families, changes that make the converted tokenizer the published one)
FAMILIES = {
    "llama-bpe": ("Llama 3 / 3.1 / 3.2 / 3.3", [ignore_merges]),
    "qwen2": ("Qwen2 / Qwen2.5 / Qwen3", [nfc]),
    "gpt-neox": ("GPT-NeoX-20B / Pythia", [nfc, bytelevel_pre]),
    "mpt": ("MPT (the GPT-NeoX-20B tokenizer)", [nfc, bytelevel_pre]),
    "falcon": ("Falcon", [falcon_pre]),
    "starcoder": ("StarCoder2", [starcoder_pre]),
    "gpt-2": ("GPT-2; Phi-2 / CodeGen share its merges", [bytelevel_pre]),
}


def reference(vocabs, name):
    # the converter AutoTokenizer.from_pretrained(dir, gguf_file=...) runs, called directly: the
    # loader before it also wants a model architecture transformers reads from GGUF (not gptneox)
    arch, tokenizer_dict, _ = get_gguf_tokenizer(os.path.join(vocabs, f"ggml-vocab-{name}.gguf"))
    tk, _ = convert_gguf_tokenizer(arch, tokenizer_dict)
    tk = whitespace_added(tk, os.path.join(vocabs, f"ggml-vocab-{name}.gguf"))
    for change in FAMILIES[name][1]:
        change(tk)
    return tk


def check_vectors(tk, vocabs, name):
    inp = os.path.join(vocabs, f"ggml-vocab-{name}.gguf.inp")
    if not os.path.exists(inp):
        return "no llama.cpp vectors"
    cases = open(inp, encoding="utf-8").read().split("\n__ggml_vocab_test__\n")[:-1]
    want = open(inp[:-4] + ".out").read().split("\n")
    bad = [i for i, s in enumerate(cases) if tk.encode(s, add_special_tokens=False).ids != [int(x) for x in want[i].split()]]
    if bad:
        sys.exit(f"{name}: the reference differs from llama.cpp's vectors (made with the published tokenizer) in cases {bad}")
    return f"{len(cases)} llama.cpp vectors exact"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocabs", default=os.environ.get("FK_REAL_VOCABS", ""))
    ap.add_argument("--corpora", default=os.path.join(root, "..", "shared", "data", "corpora"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "data", "tok", "corpus_golden.txt"))
    ap.add_argument("--json-dir")
    ap.add_argument("--only", action="append")
    a = ap.parse_args()
    if not a.vocabs:
        sys.exit("--vocabs DIR (or FK_REAL_VOCABS): the folder of llama.cpp's ggml-vocab-*.gguf (tests/real/fetch_vocabs.sh)")
    old = {}
    if a.only and os.path.exists(a.out):  # keep the other vocabularies' lines
        for line in open(a.out):
            if line.strip() and not line.startswith("#"):
                old.setdefault(line.split()[0], []).append(line)
    lines = []
    data = os.path.dirname(a.out)
    os.makedirs(data, exist_ok=True)
    write_nfd(a.vocabs, a.corpora, os.path.join(data, "nfd.txt"))
    for name in FAMILIES:
        if a.only and name not in a.only:
            lines += old.get(name, [])
            continue
        tk = reference(a.vocabs, name)
        note = check_vectors(tk, a.vocabs, name)
        if a.json_dir:
            os.makedirs(os.path.join(a.json_dir, name), exist_ok=True)
            tk.save(os.path.join(a.json_dir, name, "tokenizer.json"))
        shape = json.loads(tk.to_str())
        shape["model"]["vocab"], shape["model"]["merges"] = {}, []
        with open(os.path.join(data, f"{name}.shape.json"), "w", encoding="utf-8") as f:
            json.dump(shape, f, indent=1, ensure_ascii=False)
            f.write("\n")
        for c in CORPORA:
            path = os.path.join(data, c[4:]) if c.startswith("tok/") else os.path.join(a.corpora, c)
            text = open(path, encoding="utf-8", newline="").read()
            ids = tk.encode(text, add_special_tokens=False).ids
            sha = hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).hexdigest()
            lines.append(f"{name} {c} {len(ids)} {sha} {','.join(map(str, ids[:16]))}\n")
            print(f"{name:10s} {c:22s} {len(ids):8d} tokens  ({note})")
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(a.out), delete=False) as f:
        f.write("# make_tok_golden.py: NAME CORPUS N_TOKENS SHA256(int32 LE ids) FIRST_16_IDS -- tokenizers "
                f"{__import__('tokenizers').__version__}, transformers {__import__('transformers').__version__}\n")
        f.writelines(lines)
    os.chmod(f.name, 0o644)
    os.replace(f.name, a.out)


if __name__ == "__main__":
    main()
