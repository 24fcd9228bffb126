#!/bin/sh
# AdamW moments in bf16 (--optim-state bf16) against f32 (the default): the same training run
# (Llama shape, byte-level, Shakespeare), the two alternated for every seed of SEEDS; held-out
# loss at the end of each run (the last --val-frac of the text, never trained on), mean ± sd and
# the paired difference bf16 - f32 with its 95% t interval (bench/stats.py), and the optimizer's
# bytes per weight. Nothing is tuned here: both arms take the same settings.
# Usage: sh bench/moments_loss.sh [BUILD_DIR] [WORK_DIR]   (STEPS, SEEDS, THREADS, BETA2 in the environment)
BUILD=${1:-build}
W=${2:-out/moments_loss}
STEPS=${STEPS:-600}
SEEDS=${SEEDS:-1 2 3}
THREADS=${THREADS:-1}
BETA2=${BETA2:-0.95}
DATA=${FK_CORPORA:-../shared/data/corpora}/shakespeare/input.txt
cd "$(dirname "$0")/.." || exit 1
[ -f "$DATA" ] || { echo "moments_loss: no $DATA (set FK_CORPORA)" >&2; exit 1; }
mkdir -p "$W"
: > "$W/results.jsonl"
for s in $SEEDS; do
  for mo in f32 bf16; do
    out="$W/run-$mo-s$s"
    rm -rf "$out"
    "$BUILD/fusekit" train --data "$DATA" -o "$out" --arch llama --d-model 256 --layers 4 --heads 8 --kv-heads 4 --ctx 256 \
      --batch 8 --steps "$STEPS" --lr 1e-3 --beta2 "$BETA2" --seed "$s" --eval-every "$STEPS" --eval-tokens 0 --log-every "$STEPS" \
      --optim-state "$mo" --threads "$THREADS" > "$out.log" 2>&1 || { echo "moments_loss: run $mo seed $s failed (see $out.log)" >&2; exit 1; }
    v=$(grep -o '"val_loss":[0-9.eE+-]*' "$out.log" | tail -1 | cut -d: -f2)
    ob=$(stat -c %s "$out/checkpoint-$STEPS/optimizer.safetensors")
    echo "{\"moments\": \"$mo\", \"seed\": $s, \"val_loss\": $v, \"optimizer_bytes\": $ob, \"steps\": $STEPS, \"beta2\": $BETA2}" | tee -a "$W/results.jsonl"
  done
done
python3 - "$W/results.jsonl" "$(pwd)/bench" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[2])
from stats import mean_sd, paired
rows = [json.loads(l) for l in open(sys.argv[1])]
seeds = sorted({r["seed"] for r in rows})
v = {(r["moments"], r["seed"]): r["val_loss"] for r in rows}
for mo in ("f32", "bf16"):
    m, sd = mean_sd([v[(mo, s)] for s in seeds])
    ob = next(r["optimizer_bytes"] for r in rows if r["moments"] == mo)
    print(f"{mo} moments: held-out loss {m:.4f} ± {sd:.4f} (seeds {seeds}); optimizer.safetensors {ob:,} bytes")
q = paired([v[("bf16", s)] for s in seeds], [v[("f32", s)] for s in seeds])
print(f"bf16 - f32: {q['mean']:+.4f} nats, 95% t interval [{q['lo']:+.4f}, {q['hi']:+.4f}] (n {q['n']})")
PY
