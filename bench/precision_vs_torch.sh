#!/bin/sh
# fusekit against PyTorch 2 at both precisions on ONE thread: bench/run.sh's side-by-side table
# with THREADS=1, PyTorch 2 only (fp32 and bf16 autocast; PYTHON names the interpreter with
# `pip install torch`), fusekit fp32, bf16 and bf16 with attention in fp32 (AB_ATTN=1), the
# contenders alternated in each of ROUNDS rounds; prints the runs as JSON lines, then the medians,
# ratios and table of bench/side_by_side.py.
# Usage: sh bench/precision_vs_torch.sh [BUILD_DIR] [ROUNDS] [CONFIGS] [MODES]
BUILD=${1:-build}
ROUNDS=${2:-2} THREADS=1 TORCH1=none TORCH2=${PYTHON:-python3} AB_ATTN=1 EXTRAS=0 \
  exec sh "$(dirname "$0")/run.sh" "$BUILD" "${3:-S M-llama}" "${4:-train infer}"
