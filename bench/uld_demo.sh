#!/usr/bin/env bash
# ULD against MinCE's soft cross-entropy on the demo's setting (issue 19, item 5).
#
# Usage: bench/uld_demo.sh DEMO_DIR [FUSEKIT]
#   DEMO_DIR  the output of `fusekit demo --quick -o DEMO_DIR` (its sources, stores, tuned
#             fused (objective ce) and baseline models, data/<domain>/{valid,test}.txt)
#   FUSEKIT   the fusekit program (default: fusekit on PATH)
#
# The ULD arm gets the demo's fused arm's grid and seed (lambda {0.5, 0.8} x vmap {mined,
# exact}, lr 0.002, 150 steps, --teacher-tail, seed 1: as DEMO_DIR/commands.sh's fused-t*
# lines) with --objective uld; each trial is scored as the demo scores its trials (mean bits
# per byte over the four domains' valid.txt, `fusekit eval`), the lowest kept; then that
# trial, the demo's fused and baseline models are scored once on the test splits.
set -euo pipefail
D=$(cd "$1" && pwd)
F=${2:-fusekit}
OUT=$D/uld
mkdir -p "$OUT"

# mean bits per byte of model $1 over the four domains' split $2
mean_bpb() {
    local s=0 b
    for d in arith facts grammar records; do
        b=$("$F" eval --model "$1" --data "$D/data/$d/$2.txt" --threads 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["bpb"])')
        s=$(python3 -c "print($s + $b)")
    done
    python3 -c "print('%.4f' % ($s / 4))"
}

best="" best_bpb=9
i=0
for lam in 0.5 0.8; do
    for vm in mined exact; do
        i=$((i + 1))
        "$F" fuse --target "$D/models/B" --source "$D/models/A" --source "$D/models/C" --store-dir "$D/models/stores" \
            --data "$D/corpus/fusion.txt" --val "$D/data/mix/valid.txt" -o "$OUT/t$i" --steps 150 --batch 16 --lr 0.002 \
            --seed 1 --eval-every 25 --log-every 5 --threads 1 --lambda "$lam" --teacher-tail --vmap "$vm" --objective uld \
            > "$OUT/t$i.log" 2>&1
        v=$(mean_bpb "$OUT/t$i" valid)
        echo "uld trial t$i: lambda $lam vmap $vm: valid bpb $v"
        if python3 -c "import sys; sys.exit(0 if $v < $best_bpb else 1)"; then best=t$i best_bpb=$v; fi
    done
done
echo "chosen on valid: $best ($best_bpb)"
for m in "$OUT/$best" "$D/models/fused" "$D/models/baseline"; do
    echo "test bpb $(mean_bpb "$m" test)  $m"
done
