#!/bin/sh
# Development time only: tests/data/gguf/llamacpp/ — a tiny Llama-style model with grouped-query
# attention and a SentencePiece-style tokenizer, trained by fusekit and saved as a Hugging Face
# folder (hf/), and the GGUF file llama.cpp's own converter (convert_hf_to_gguf.py) makes of
# that folder. test_gguf_model checks that fusekit's export writes the converter's tensors and
# that importing the converter's file gives back the same model.
#
# usage: sh tools/ref/make_llamacpp_gguf.sh BUILD LLAMA_CPP_SRC TEXT
#   LLAMA_CPP_SRC: a llama.cpp source tree (used: convert_hf_to_gguf.py and gguf-py/; the copy
#   in llama-cpp-python 0.3.9's sdist, vendor/llama.cpp, was used for the committed files).
#   TEXT: any English text (the committed files used the first 20 kB of the demo's facts train split).
# Debian's torch 1.13 lacks a few dtype names the converter mentions; they are aliased.
set -e
BUILD=$1; SRC=$2; TEXT=$3
OUT=tests/data/gguf/llamacpp
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$BUILD/fusekit" tokenizer train --kind spm --vocab 360 --data "$TEXT" -o "$T/tok" > /dev/null
"$BUILD/fusekit" train --data "$TEXT" --tokenizer "$T/tok" --arch llama --d-model 16 --layers 2 --heads 4 --kv-heads 2 \
  --ffn 32 --ctx 32 --steps 30 --batch 4 --lr 3e-3 --seed 7 --eval-every 0 --log-every 100 -o "$T/hf" > /dev/null 2>&1
rm -rf "$T"/hf/checkpoint-* "$T/hf/metrics.jsonl" "$OUT"
mkdir -p "$OUT"
cp -r "$T/hf" "$OUT/hf"
tools/ref/.venv/bin/python - "$SRC" "$OUT/hf" "$OUT/convert_hf_to_gguf.gguf" <<'PY'
import sys, torch
for n in ["float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64"]:
    if not hasattr(torch, n): setattr(torch, n, torch.float32)
src = sys.argv[1]
sys.path.insert(0, src + "/gguf-py")
sys.argv = ["convert_hf_to_gguf.py", sys.argv[2], "--outfile", sys.argv[3], "--outtype", "f32"]
exec(compile(open(src + "/convert_hf_to_gguf.py").read(), "convert_hf_to_gguf.py", "exec"))
PY
