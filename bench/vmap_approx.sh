#!/usr/bin/env bash
# The approx vocabulary map (the first token of the target's encoding of each source token,
# from the tokenizers alone: docs/fusion.md §3) against MinCE's mined map, and the exact map as
# a third arm, on the demo's quick setting (issue 19, item 5), one protocol for all: every arm
# is MinCE's soft cross-entropy with its own --vmap, tuned on the validation split over the
# same grid (LAMBDAS x LRS) with seed 1; the chosen setting of each arm then trained with seeds
# 1..SEEDS and the test split read once per model at the end; mean +- sd per arm and paired
# differences (same seed, so the same batches) with 95% t intervals (bench/stats.py).
#
# usage: [LAMBDAS='0.5 0.9'] [LRS='0.001 0.002 0.004'] [ARMS='mined approx exact'] \
#        bench/vmap_approx.sh DEMO OUT [FUSEKIT] [SEEDS]
#   DEMO: a `fusekit demo --quick` folder, laid out as bench/span_objective.sh reads it
#   (models/B the target; models/fused/stores/ the sources' stores on corpus/fusion.txt;
#   data/mix/{valid,test}.txt). OUT gets runs/, tune.tsv, test.tsv and summary.txt. One
#   thread per run (about 10-20 s each on the quick setting); finished runs are kept and reused.
set -euo pipefail
DEMO=$1 OUT=$2 FK=${3:-fusekit} SEEDS=${4:-5}
LAMBDAS=${LAMBDAS:-0.5 0.9} LRS=${LRS:-0.001 0.002 0.004} ARMS=${ARMS:-mined approx exact}
BENCH=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/runs" "$OUT/cache"
stores=()
for s in "$DEMO"/models/fused/stores/*.fkd; do
  case "$s" in *.to-*) ;; *) stores+=(--teacher "$s") ;; esac
done
[ ${#stores[@]} -gt 0 ] || { echo "vmap_approx.sh: no source stores in $DEMO/models/fused/stores" >&2; exit 2; }
common=(--data "$DEMO/corpus/fusion.txt" --val "$DEMO/data/mix/valid.txt" --init "$DEMO/models/B" --steps 150 --batch 16
        --eval-every 150 --log-every 50 --threads 1 --objective ce --teacher-tail --align-cache "$OUT/cache" "${stores[@]}")

. "$(dirname "$0")/train_run.sh"  # run NAME SEED ARGS...: trains OUT/runs/NAME, prints its val_bpb

: >"$OUT/tune.tsv"
for lr in $LRS; do
  for lam in $LAMBDAS; do
    for arm in $ARMS; do
      printf '%s\t%s\t%s\t%s\n' "$arm" "$lam" "$lr" "$(run "tune-$arm-$lam-$lr" 1 --vmap "$arm" --lambda "$lam" --lr "$lr")" >>"$OUT/tune.tsv"
    done
  done
done

# the best setting of each arm on the validation split; then seeds 1..SEEDS and the test split once
best() { awk -F'\t' -v a="$1" '$1 == a && (b == "" || $4 < b) { b = $4; l = $2; r = $3 } END { print l, r }' "$OUT/tune.tsv"; }
: >"$OUT/test.tsv"
for arm in $ARMS; do
  read -r lam lr < <(best "$arm")
  for seed in $(seq 1 "$SEEDS"); do
    run "test-$arm-$lam-$lr-$seed" "$seed" --vmap "$arm" --lambda "$lam" --lr "$lr" >/dev/null
    bpb=$(nice "$FK" eval --model "$OUT/runs/test-$arm-$lam-$lr-$seed" --data "$DEMO/data/mix/test.txt" --threads 1 | grep -o '"bpb":[0-9.]*' | cut -d: -f2)
    printf '%s\t%s\t%s\t%s\t%s\n' "$arm" "$lam" "$lr" "$seed" "$bpb" >>"$OUT/test.tsv"
  done
done

python3 - "$OUT" "$BENCH" <<'PY' | tee "$OUT/summary.txt"
import sys
sys.path.insert(0, sys.argv[2])
from stats import mean_sd, paired
out = sys.argv[1]
tune = [l.split('\t') for l in open(out + '/tune.tsv').read().split('\n') if l]
arms, cfg = {}, {}
for a, lam, lr, seed, bpb in (l.split('\t') for l in open(out + '/test.tsv').read().split('\n') if l):
    arms.setdefault(a, {})[int(seed)] = float(bpb)
    cfg[a] = f'lambda {lam}, lr {lr}'
for a in arms:
    v = [float(r[3]) for r in tune if r[0] == a]
    print(f'{a:7s} tuned over {len(v)} trials on valid (best {min(v):.4f}); chose {cfg[a]}')
for a, d in arms.items():
    v = [d[s] for s in sorted(d)]
    m, sd = mean_sd(v)
    print(f'{a:7s} test bpb {m:.4f} +- {sd:.4f} (n {len(v)})  per seed: ' + ' '.join(f'{x:.4f}' for x in v))
for a, b in (('approx', 'mined'), ('approx', 'exact'), ('exact', 'mined')):
    if a not in arms or b not in arms: continue
    seeds = sorted(set(arms[a]) & set(arms[b]))
    p = paired([arms[a][s] for s in seeds], [arms[b][s] for s in seeds])
    if p: print(f'{a} - {b}: {p["mean"]:+.4f} bpb, 95% t interval [{p["lo"]:+.4f}, {p["hi"]:+.4f}], n {p["n"]}')
PY
