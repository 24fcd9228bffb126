#!/bin/sh
# fusekit against PyTorch 2 at both precisions, one thread, on the same machine in one run:
# bench/torch_bench.py fp32 and --autocast bf16 (torch.autocast on the CPU: bf16 matmuls, fp32
# master weights), fk_bench --precision fp32 and bf16, alternated per (config, mode) in every
# round, and fk_bench --precision bf16 with FUSEKIT_ATTN_AMX=0 (attention's products in fp32, as
# before they ran on AMX tiles; its "precision" field says which). PyTorch 2 comes from PyPI (pip install torch; PYTHON names the interpreter that has it).
# One JSON line per run on stdout; summarise with the snippet in bench/README.md.
# Usage: sh bench/precision_vs_torch.sh [BUILD_DIR] [ROUNDS] [CONFIGS] [MODES]
BUILD=${1:-build}
ROUNDS=${2:-2}
CONFIGS=${3:-"S M-llama"}
MODES=${4:-"train infer"}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 1
"$PY" -c "import torch" 2>/dev/null || { echo "precision_vs_torch: $PY has no torch (pip install torch; or set PYTHON)" >&2; exit 1; }
r=0
while [ "$r" -lt "$ROUNDS" ]; do
  for c in $CONFIGS; do for m in $MODES; do
    "$PY" bench/torch_bench.py --config "$c" --mode "$m" --threads 1 2>/dev/null
    "$PY" bench/torch_bench.py --config "$c" --mode "$m" --threads 1 --autocast bf16 2>/dev/null
    OMP_NUM_THREADS=1 "$BUILD/fk_bench" --config "$c" --mode "$m" --precision fp32 2>/dev/null
    OMP_NUM_THREADS=1 "$BUILD/fk_bench" --config "$c" --mode "$m" --precision bf16 2>/dev/null
    FUSEKIT_ATTN_AMX=0 OMP_NUM_THREADS=1 "$BUILD/fk_bench" --config "$c" --mode "$m" --precision bf16 2>/dev/null
  done; done
  r=$((r + 1))
done
