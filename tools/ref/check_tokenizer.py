#!/usr/bin/env python3
"""Independent check of tokenizer folders written by fusekit, with Hugging Face's own
libraries: `tokenizers` (Tokenizer.from_file) and `transformers` (AutoTokenizer).

usage: check_tokenizer.py TOKENIZER_DIR TEXT_FILE IDS_FILE [--add-special]

IDS_FILE holds the ids fusekit produced for TEXT_FILE (`fusekit tokenizer encode
--tokenizer DIR --file TEXT_FILE --parse-special > IDS_FILE`; Hugging Face always matches
special tokens written in the text, which is fusekit's --parse-special). Both libraries
must load the folder and give exactly those ids; exit status 0 when they do. Whether
Hugging Face decodes the ids back to the text is printed for information: its ByteLevel
decoder turns added tokens such as DeepSeek-Coder's "ü" into the byte 0xFC, where fusekit
gives the text back exactly.
"""
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    add = "--add-special" in sys.argv
    folder, text_path, ids_path = args
    text = open(text_path, encoding="utf-8").read()
    want = [int(x) for x in open(ids_path).read().split()]
    ok = True
    tk = Tokenizer.from_file(folder + "/tokenizer.json")
    got = tk.encode(text, add_special_tokens=add).ids
    d = first_diff(got, want)
    print(f"tokenizers {len(got)} ids, fusekit {len(want)}: " + ("identical" if d is None else f"first difference at {d}: {got[d:d+5]} vs {want[d:d+5]}"))
    ok &= d is None
    at = AutoTokenizer.from_pretrained(folder)
    got2 = at(text, add_special_tokens=add)["input_ids"]
    d2 = first_diff(got2, want)
    print(f"transformers {type(at).__name__} {len(got2)} ids: " + ("identical" if d2 is None else f"first difference at {d2}: {got2[d2:d2+5]} vs {want[d2:d2+5]}"))
    ok &= d2 is None
    back = tk.decode(want, skip_special_tokens=False)
    print("(information) tokenizers decode(ids) == text:", back == text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
