#!/bin/sh
# Side-by-side benchmark: fusekit and PyTorch on configs S, M and M-llama, training and
# inference, each run in its own process (peak RSS per run). Prints JSON lines, then one
# ratio line per (config, mode). Usage: sh bench/run.sh [BUILD_DIR] [CONFIGS] [MODES]
BUILD=${1:-build}
CONFIGS=${2:-"S M M-llama"}
MODES=${3:-"train infer"}
OUT=$(mktemp)
# the measured fp32 FMA peak of this machine, the denominator of MFU
"$BUILD/fk_peak" | tee -a "$OUT"
PEAK=${FK_PEAK_GFLOPS:-$(sed -n 's/.*"gflops":\([0-9.]*\).*/\1/p' "$OUT" | head -1)}
for c in $CONFIGS; do
  for m in $MODES; do
    "$BUILD/fk_bench" --config "$c" --mode "$m" --peak-gflops "$PEAK" | tee -a "$OUT"
    if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
      /usr/bin/python3 bench/torch_bench.py --config "$c" --mode "$m" | tee -a "$OUT"
    fi
  done
done
# tokenizers: encode MB/s on one thread, and training an 8192-token vocabulary on 4 MB
if [ -d ../shared/data ]; then "$BUILD/fk_tok_bench" ../shared/data | tee -a "$OUT"; fi
# knowledge fusion: token alignment throughput and MinED maps; extraction vs inference, store
# size and fused-training step time relative to CLM-only (config S, two teachers)
if [ -d ../shared/data ]; then
  OMP_NUM_THREADS=1 "$BUILD/fk_align_bench" ../shared/data | tee -a "$OUT"
  sh bench/fuse_bench.sh "$BUILD" | tee -a "$OUT"
fi
# generation with the KV cache (fusekit only; batch 1, one token at a time over the context)
for c in $CONFIGS; do "$BUILD/fk_bench" --config "$c" --mode decode | tee -a "$OUT"; done
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
rows = [r for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")) if "impl" in r]
by = {(r["impl"], r["config"], r["mode"]): r for r in rows}
for (impl, c, m), r in by.items():
    if impl != "fusekit" or ("pytorch", c, m) not in by: continue
    p = by[("pytorch", c, m)]
    print(json.dumps({"ratio": f"fusekit/pytorch", "config": c, "mode": m,
                      "speedup": round(r["tokens_per_s"] / p["tokens_per_s"], 3),
                      "rss_ratio": round(r["peak_rss_mb"] / p["peak_rss_mb"], 3)}))
PY
rm -f "$OUT"
