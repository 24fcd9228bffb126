#!/bin/sh
# --precision fp32 against bf16 end to end: fk_bench tokens/s for CONFIGS x MODES, the two
# precisions alternated in every round (each run its own process), ROUNDS rounds. bf16 runs on
# whatever path fusekit takes on this CPU (oneDNN's AMX-BF16 tiles, its AVX512-BF16 kernels, or
# the emulation; ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 in the environment forbids the tiles).
# Prints the JSON lines, then per config and mode the medians and bf16/fp32; --precision auto
# picks bf16 only where the tiles run (fk_bf16_fast).
# Usage: sh bench/precision_speed.sh [BUILD_DIR] [CONFIGS] [MODES] [ROUNDS]
BUILD=${1:-build}
CONFIGS=${2:-"S M-llama"}
MODES=${3:-"train infer"}
ROUNDS=${4:-2}
OUT=$(mktemp)
for c in $CONFIGS; do
  for m in $MODES; do
    r=0
    while [ "$r" -lt "$ROUNDS" ]; do
      for p in fp32 bf16; do "$BUILD/fk_bench" --config "$c" --mode "$m" --precision "$p" | tee -a "$OUT"; done
      r=$((r + 1))
    done
  done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
for key in dict.fromkeys((r["config"], r["mode"]) for r in rows):
    sel = [r for r in rows if (r["config"], r["mode"]) == key]
    med = {p: statistics.median(r["tokens_per_s"] for r in sel if r["precision"].startswith(p)) for p in ("fp32", "bf16")}
    bf = next(r["precision"] for r in sel if r["precision"].startswith("bf16"))
    print(json.dumps({"precision_speed": key[1], "config": key[0], "tokens_per_s": {k: round(v, 1) for k, v in med.items()},
                      "bf16_over_fp32": round(med["bf16"] / med["fp32"], 3), "bf16_path": bf,
                      "rounds": len(sel) // 2, "cpu": cpu}))
PY
rm -f "$OUT"
