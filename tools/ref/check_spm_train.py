#!/usr/bin/env python3
"""Independent check of `fusekit tokenizer train --kind spm` with Hugging Face `tokenizers`.

usage: check_spm_train.py [--fusekit build/fusekit] [--data FILE] [--bytes 200000]
                          [--vocab 1000] [--split-digits] [--keep DIR]

Trains a SentencePiece-style tokenizer with fusekit on the first --bytes of --data, then
encodes (a) the training text, (b) the next --bytes of the file and (c) a line of characters
the training text lacks (byte fallback) with both `fusekit tokenizer encode` and
`tokenizers.Tokenizer.from_file(DIR/tokenizer.json)` (fusekit with --parse-special, as
Hugging Face always matches specials written in the text). The ids must be identical, and
both must decode them back to the text, where a literal "▁" reads as a space (Hugging Face
only when no special token is written in the text: it then decodes extra spaces). For information it also trains a
`sentencepiece` BPE model of the same vocabulary size on the same text and prints both
tokens/byte figures (the vocabularies differ: sentencepiece's trainer has its own rules).
Exit status 0 when every comparison matches.
"""
import argparse
import os
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer

UNSEEN = "naïve café — 日本語 🙂 \ttab  two spaces\n\nend 12345 ▁x ✓\n"


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def fusekit_ids(fk, folder, path):
    # Hugging Face always matches special tokens written in the text: fusekit's --parse-special
    out = subprocess.run([fk, "tokenizer", "encode", "--tokenizer", folder, "--file", path, "--parse-special"],
                         check=True, capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def fusekit_decode(fk, folder, ids, tmp):
    path = os.path.join(tmp, "ids.txt")
    with open(path, "w") as f:
        f.write(" ".join(map(str, ids)))
    return subprocess.run([fk, "tokenizer", "decode", "--tokenizer", folder, "--file", path],
                          check=True, capture_output=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fusekit", default="build/fusekit")
    ap.add_argument("--data", default="../shared/data/corpora/shakespeare/input.txt")
    ap.add_argument("--bytes", type=int, default=200000)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--split-digits", action="store_true")
    ap.add_argument("--keep", help="write the tokenizer here instead of a temporary folder")
    a = ap.parse_args()

    raw = open(a.data, "rb").read()
    train = raw[:a.bytes].decode("utf-8", errors="strict")
    held = raw[a.bytes:2 * a.bytes].decode("utf-8", errors="ignore")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.keep or os.path.join(tmp, "tok")
        texts = {"train": train, "held-out": held, "unseen characters": UNSEEN}
        paths = {}
        for k, v in texts.items():
            paths[k] = os.path.join(tmp, k.replace(" ", "_") + ".txt")
            with open(paths[k], "w", encoding="utf-8", newline="") as f:
                f.write(v)
        cmd = [a.fusekit, "tokenizer", "train", "--kind", "spm", "--data", paths["train"], "--vocab", str(a.vocab), "-o", folder]
        if a.split_digits:
            cmd.append("--split-digits")
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())
        tk = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        for k, text in texts.items():
            want = fusekit_ids(a.fusekit, folder, paths[k])
            got = tk.encode(text, add_special_tokens=False).ids
            d = first_diff(got, want)
            expect = text.replace("\u2581", " ")  # a "▁" in the text reads as a space (both libraries)
            hf_same = tk.decode(got, skip_special_tokens=False) == expect
            fk_same = fusekit_decode(a.fusekit, folder, want, tmp) == expect.encode()
            # Hugging Face prepends "▁" to the text after each special token but strips one space
            # at the start only, so with specials in the text its decode gains spaces.
            specials = any(s in text for s in ("<unk>", "<s>", "</s>"))
            print(f"{k}: {len(text.encode())} bytes, tokenizers {len(got)} ids, fusekit {len(want)}: "
                  + ("identical" if d is None else f"first difference at {d}: {got[d:d + 5]} vs {want[d:d + 5]}")
                  + f"; decoded back: fusekit {'exactly' if fk_same else 'DIFFERENTLY'}, tokenizers "
                  + ("exactly" if hf_same else "differently" + (" (specials in the text)" if specials else "")))
            ok &= d is None and fk_same and (hf_same or specials)
        try:
            import sentencepiece as spm
            prefix = os.path.join(tmp, "sp")
            spm.SentencePieceTrainer.train(input=paths["train"], model_prefix=prefix, vocab_size=a.vocab, model_type="bpe",
                                           character_coverage=1.0, byte_fallback=True, split_digits=a.split_digits,
                                           remove_extra_whitespaces=False, normalization_rule_name="identity",
                                           max_sentence_length=1 << 20, minloglevel=2)
            sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
            n_sp = len(sp.encode(held))
            n_fk = len(fusekit_ids(a.fusekit, folder, paths["held-out"]))
            nb = len(held.encode())
            print(f"held-out tokens/byte: fusekit {n_fk / nb:.3f}, sentencepiece BPE {n_sp / nb:.3f} (information only)")
        except Exception as e:  # information only
            print(f"sentencepiece comparison skipped: {e}")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
