#!/bin/sh
# Mixture-of-experts speed: does throughput follow active or total parameters? fk_bench on
# M-moe (8 experts of M-llama's FFN, 2 active), M-moe-active (dense, the FFN parameters one token
# uses: 2 FFNs wide) and M-moe-total (dense, all 8 FFNs), alternated over ROUNDS rounds, each run in
# its own process. Prints the JSON lines, then per mode the medians and the ratios
# moe/active (1 = MoE as fast as a dense model of its active size) and moe/total.
# Usage: sh bench/moe_speed.sh [BUILD_DIR] [MODES] [ROUNDS]
BUILD=${1:-build}
MODES=${2:-"infer decode train"}
ROUNDS=${3:-2}
OUT=$(mktemp)
for m in $MODES; do
  r=0
  while [ "$r" -lt "$ROUNDS" ]; do
    for c in M-moe M-moe-active M-moe-total; do "$BUILD/fk_bench" --config "$c" --mode "$m" | tee -a "$OUT"; done
    r=$((r + 1))
  done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for mode in dict.fromkeys(r["mode"] for r in rows):
    med = {c: statistics.median(r["tokens_per_s"] for r in rows if r["mode"] == mode and r["config"] == c)
           for c in ("M-moe", "M-moe-active", "M-moe-total")}
    print(json.dumps({"moe_speed": mode, "tokens_per_s": {k: round(v, 1) for k, v in med.items()},
                      "moe_over_active": round(med["M-moe"] / med["M-moe-active"], 3),
                      "moe_over_total": round(med["M-moe"] / med["M-moe-total"], 3)}))
PY
rm -f "$OUT"
