#!/usr/bin/env python3
"""Development time only: llama.cpp's own converter (convert_hf_to_gguf.py) against
`fusekit export --gguf --type f32` on one Hugging Face folder: every tensor (name, type,
shape, bytes) and every key outside general.* compared; prints the differences, exits 1 on any
tensor difference.

usage: tools/ref/.venv/bin/python tools/ref/compare_convert_hf_to_gguf.py LLAMA_CPP_SRC BUILD FOLDER
           [--pre NAME] [--keep OUT.gguf]
  LLAMA_CPP_SRC: a llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/); the
  results in docs/results.md used llama-cpp-python 0.3.36's sdist, vendor/llama.cpp.
  --pre: the converter names a byte-level BPE pre-tokenizer by hashing a real tokenizer's output
  (get_vocab_base_pre) and refuses one it does not know, as any fusekit-trained tokenizer is:
  it is then told NAME (the pre-tokenizer the folder's tokenizer.json was trained with).
  --keep: also copy the converter's file there (tests/data/gguf/llamacpp_ppl/qwen3/).
"""

import argparse
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np


def convert(src, folder, out, pre):
    sys.path[:0] = [src, os.path.join(src, "gguf-py")]
    import conversion.base as base

    real = base.TextModel.get_vocab_base_pre

    def vocab_base_pre(self, tokenizer):
        try:
            return real(self, tokenizer)
        except NotImplementedError:
            if not pre:
                raise
            return pre

    base.TextModel.get_vocab_base_pre = vocab_base_pre
    try:
        import sentencepiece  # noqa: F401
    except ImportError:  # the converter imports it before looking for tokenizer.model, which these folders lack
        sys.modules["sentencepiece"] = types.SimpleNamespace(SentencePieceProcessor=None)
    sys.argv = ["convert_hf_to_gguf.py", folder, "--outfile", out, "--outtype", "f32"]
    runpy.run_path(os.path.join(src, "convert_hf_to_gguf.py"), run_name="__main__")


def fields(reader):
    out = {}
    for name, f in reader.fields.items():
        if name.startswith("general.") or name.startswith("GGUF."):
            continue
        out[name] = f.contents()
    return out


def compare(ours_path, conv_path):
    import gguf

    ours, conv = gguf.GGUFReader(ours_path), gguf.GGUFReader(conv_path)
    t1 = {t.name: t for t in ours.tensors}
    t2 = {t.name: t for t in conv.tensors}
    bad = 0
    for name in sorted(set(t1) | set(t2)):
        a, b = t1.get(name), t2.get(name)
        if a is None or b is None:
            print("tensor %s: only in %s" % (name, "the converter's file" if a is None else "fusekit's"))
            bad += 1
            continue
        if a.tensor_type != b.tensor_type or list(a.shape) != list(b.shape):
            print("tensor %s: fusekit %s %s, converter %s %s" % (name, a.tensor_type.name, list(a.shape), b.tensor_type.name,
                                                                 list(b.shape)))
            bad += 1
        elif a.data.tobytes() != b.data.tobytes():
            d = np.abs(np.asarray(a.data, np.float64) - np.asarray(b.data, np.float64)).max()
            print("tensor %s: values differ (max |diff| %.3g)" % (name, d))
            bad += 1
    print("tensors: %d in fusekit's file, %d in the converter's, %d differ" % (len(t1), len(t2), bad))
    k1, k2 = fields(ours), fields(conv)
    same = 0
    for k in sorted(set(k1) | set(k2)):
        if k not in k1 or k not in k2:
            print("key %s: only in %s (%s)" % (k, "the converter's file" if k not in k1 else "fusekit's",
                                               short(k2.get(k, k1.get(k)))))
        elif k1[k] != k2[k]:
            print("key %s: fusekit %s, converter %s" % (k, short(k1[k]), short(k2[k])))
        else:
            same += 1
    print("keys (outside general.*): %d equal" % same)
    return bad


def short(v):
    s = repr(v)
    return s if len(s) < 120 else s[:117] + "..."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("build")
    ap.add_argument("folder")
    ap.add_argument("--pre")
    ap.add_argument("--keep")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours, conv = os.path.join(tmp, "ours.gguf"), os.path.join(tmp, "conv.gguf")
        subprocess.run([os.path.join(a.build, "fusekit"), "export", "--model", a.folder, "--gguf", ours, "--type", "f32"], check=True,
                       stdout=subprocess.DEVNULL)
        pid = os.fork()  # the converter parses sys.argv and may exit: run it in a child
        if pid == 0:
            convert(os.path.abspath(a.src), os.path.abspath(a.folder), conv, a.pre)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            sys.exit("convert_hf_to_gguf.py failed on %s" % a.folder)
        sys.path[:0] = [os.path.join(os.path.abspath(a.src), "gguf-py")]
        bad = compare(ours, conv)
        if a.keep:
            shutil.copy(conv, a.keep)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
