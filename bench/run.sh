#!/bin/sh
# Side-by-side benchmark (`make bench`): fusekit fp32 and bf16, Debian's PyTorch 1.13 (fp32) and
# PyTorch 2 from PyPI (fp32 and bf16 autocast) on configs S, M and M-llama, training and
# inference, with the same model code (bench/torch_bench.py) and THREADS threads, each run in its
# own process (peak RSS per run), the contenders alternated inside every one of ROUNDS rounds.
# Prints every run as a JSON line, then (bench/side_by_side.py) per (config, mode, contender) the
# median tokens/s, MFU against the measured peak of its precision (fk_peak: fp32 FMA chains;
# bf16 on AMX tiles or AVX512-BF16) and the median peak RSS, the ratios of fusekit to PyTorch,
# and the same as a markdown table. Then tokenizers, knowledge fusion and KV-cache generation.
#
# Usage: sh bench/run.sh [BUILD_DIR] [CONFIGS] [MODES]
#   ROUNDS   rounds of alternated contenders (default 2)
#   THREADS  threads of every contender (default: every core, nproc)
#   TORCH1   interpreter with PyTorch 1.x (default /usr/bin/python3: apt install python3-torch)
#   TORCH2   interpreter with PyTorch 2.x (default $PYTHON, else python3; pip install torch)
#   AB_ATTN  1 adds fusekit bf16 with FUSEKIT_ATTN_AMX=0 (attention's products in fp32 under
#            bf16, as before its bf16 kernel: "fusekit bf16 attn-fp32"; where that kernel runs:
#            AMX tiles, AMD's AVX512-BF16)
#   EXTRAS   0 skips tokenizers, fusion and generation after the table
#   KEEP     file the runs are also appended to (default: none)
# A contender whose interpreter lacks torch is left out and named on stderr.
BUILD=${1:-build}
CONFIGS=${2:-"S M M-llama"}
MODES=${3:-"train infer"}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-$(nproc)}
TORCH1=${TORCH1:-/usr/bin/python3}
TORCH2=${TORCH2:-${PYTHON:-python3}}
cd "$(dirname "$0")/.." || exit 1
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
torch_major() { "$1" -c 'import torch; print(torch.__version__.split(".")[0])' 2>/dev/null; }
T1=""; T2=""
[ "$(torch_major "$TORCH1")" = 1 ] && T1=$TORCH1 || echo "run.sh: $TORCH1 has no PyTorch 1.x: left out (apt install python3-torch)" >&2
[ "$(torch_major "$TORCH2")" = 2 ] && T2=$TORCH2 || echo "run.sh: $TORCH2 has no PyTorch 2.x: left out (pip install torch; TORCH2=...)" >&2
# the measured peaks of this machine at THREADS threads, the denominators of MFU
OMP_NUM_THREADS=$THREADS "$BUILD/fk_peak" | tee -a "$OUT"
r=0
while [ "$r" -lt "$ROUNDS" ]; do
  for c in $CONFIGS; do for m in $MODES; do
    OMP_NUM_THREADS=$THREADS "$BUILD/fk_bench" --config "$c" --mode "$m" --precision fp32 | tee -a "$OUT"
    [ -n "$T1" ] && "$T1" bench/torch_bench.py --config "$c" --mode "$m" --threads "$THREADS" 2>/dev/null | tee -a "$OUT"
    OMP_NUM_THREADS=$THREADS "$BUILD/fk_bench" --config "$c" --mode "$m" --precision bf16 | tee -a "$OUT"
    [ "${AB_ATTN:-0}" = 1 ] && FUSEKIT_ATTN_AMX=0 OMP_NUM_THREADS=$THREADS "$BUILD/fk_bench" --config "$c" --mode "$m" --precision bf16 | tee -a "$OUT"
    [ -n "$T2" ] && "$T2" bench/torch_bench.py --config "$c" --mode "$m" --threads "$THREADS" 2>/dev/null | tee -a "$OUT"
    [ -n "$T2" ] && "$T2" bench/torch_bench.py --config "$c" --mode "$m" --threads "$THREADS" --autocast bf16 2>/dev/null | tee -a "$OUT"
  done; done
  r=$((r + 1))
done
[ -n "$KEEP" ] && cat "$OUT" >> "$KEEP"
/usr/bin/python3 bench/side_by_side.py --threads "$THREADS" "$OUT"
[ "${EXTRAS:-1}" = 0 ] && exit 0
# tokenizers: encode MB/s on one thread, and training an 8192-token vocabulary on 4 MB
if [ -d ../shared/data ]; then "$BUILD/fk_tok_bench" ../shared/data; fi
# knowledge fusion: token alignment throughput and MinED maps; extraction vs inference, store
# size and fused-training step time relative to CLM-only (config S, two teachers)
if [ -d ../shared/data ]; then
  OMP_NUM_THREADS=1 "$BUILD/fk_align_bench" ../shared/data
  sh bench/fuse_bench.sh "$BUILD"
fi
# generation with the KV cache (fusekit only; batch 1, one token at a time over the context)
for c in $CONFIGS; do "$BUILD/fk_bench" --config "$c" --mode decode; done
