#!/usr/bin/env bash
# The span objective (docs/fusion.md §6, ALM's chunk likelihoods) against MinCE's soft
# cross-entropy and the CLM-only baseline on the demo's setting, with one protocol for all:
# every arm tuned on the validation split with the same grid (lambda x lr for the two fusion
# objectives; lr for the baseline, which has no lambda), on seed 1; the chosen settings then
# trained with seeds 1..SEEDS and the test split read once per model at the end. Two span
# arms, each with its own grid of the same size: span (--span-temp 100, tokenkit's default) and
# span1 (--span-temp 1: chunk probabilities as they are).
#
# usage: [LAMBDAS='0.5 0.9'] bench/span_objective.sh DEMO OUT [FUSEKIT] [SEEDS]
#   DEMO: a `fusekit demo --quick` folder (models/B the target; models/fused/stores/ the
#   sources' stores on corpus/fusion.txt; data/mix/{valid,test}.txt). OUT gets runs/, tune.tsv,
#   test.tsv and summary.txt. One thread per run (about 10 s each on the quick setting).
set -euo pipefail
DEMO=$1 OUT=$2 FK=${3:-fusekit} SEEDS=${4:-5} LAMBDAS=${LAMBDAS:-0.5 0.9}
mkdir -p "$OUT/runs" "$OUT/cache"
stores=()
for s in "$DEMO"/models/fused/stores/*.fkd; do
  case "$s" in *.to-*) ;; *) stores+=(--teacher "$s") ;; esac
done
common=(--data "$DEMO/corpus/fusion.txt" --val "$DEMO/data/mix/valid.txt" --init "$DEMO/models/B" --steps 150 --batch 16
        --eval-every 150 --log-every 50 --threads 1)
fused=("${stores[@]}" --align-cache "$OUT/cache" --vmap exact --teacher-tail)

# the options of a fusion arm
objective() { case $1 in ce) echo --objective ce ;; span) echo --objective span ;; span1) echo --objective span --span-temp 1 ;; esac; }

. "$(dirname "$0")/train_run.sh"  # run NAME SEED ARGS...: trains OUT/runs/NAME, prints its val_bpb

: >"$OUT/tune.tsv"
for lr in 0.001 0.002 0.004; do
  for lam in $LAMBDAS; do
    for arm in ce span span1; do
      printf '%s\t%s\t%s\t%s\n' "$arm" "$lam" "$lr" "$(run "tune-$arm-$lam-$lr" 1 "${fused[@]}" $(objective "$arm") --lambda "$lam" --lr "$lr")" >>"$OUT/tune.tsv"
    done
  done
  printf 'baseline\t1\t%s\t%s\n' "$lr" "$(run "tune-baseline-$lr" 1 --lr "$lr")" >>"$OUT/tune.tsv"
done

# the best setting of each arm on the validation split
best() { awk -F'\t' -v a="$1" '$1 == a && (b == "" || $4 < b) { b = $4; l = $2; r = $3 } END { print l, r }' "$OUT/tune.tsv"; }
: >"$OUT/test.tsv"
for arm in ce span span1 baseline; do
  read -r lam lr < <(best "$arm")
  for seed in $(seq 1 "$SEEDS"); do
    if [ "$arm" = baseline ]; then args=(--lr "$lr"); else args=("${fused[@]}" $(objective "$arm") --lambda "$lam" --lr "$lr"); fi
    run "test-$arm-$lam-$lr-$seed" "$seed" "${args[@]}" >/dev/null
    bpb=$(nice "$FK" eval --model "$OUT/runs/test-$arm-$lam-$lr-$seed" --data "$DEMO/data/mix/test.txt" --threads 1 | grep -o '"bpb":[0-9.]*' | cut -d: -f2)
    printf '%s\t%s\t%s\t%s\t%s\n' "$arm" "$lam" "$lr" "$seed" "$bpb" >>"$OUT/test.tsv"
  done
done

# mean +- sd per arm and paired differences (same seed) with 95% t intervals
python3 - "$OUT/test.tsv" <<'EOF' | tee "$OUT/summary.txt"
import statistics as st, sys
T = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
arms = {}
for a, lam, lr, seed, bpb in rows:
    arms.setdefault(a, {})[int(seed)] = float(bpb)
    arms[a]['cfg'] = f'lambda {lam}, lr {lr}' if a != 'baseline' else f'lr {lr}'
for a, d in arms.items():
    v = [d[s] for s in sorted(k for k in d if k != 'cfg')]
    print(f'{a:9s} {d["cfg"]:22s} test bpb {st.mean(v):.4f} +- {st.stdev(v) if len(v) > 1 else 0:.4f}  per seed: ' + ' '.join(f'{x:.4f}' for x in v))
for a, b in (('span', 'ce'), ('span1', 'ce'), ('span', 'baseline'), ('span1', 'baseline'), ('ce', 'baseline')):
    seeds = sorted(k for k in arms[a] if k != 'cfg' and k in arms[b])
    d = [arms[a][s] - arms[b][s] for s in seeds]
    n = len(d)
    if n < 2: continue
    m, h = st.mean(d), T.get(n, 2.0) * st.stdev(d) / n ** 0.5
    print(f'{a} - {b}: {m:+.4f} bpb ({100 * m / st.mean(arms[b][s] for s in seeds):+.2f}%), 95% CI [{m - h:+.4f}, {m + h:+.4f}], n = {n}')
EOF
