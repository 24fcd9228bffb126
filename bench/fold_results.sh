#!/bin/sh
# Folding results on the real corpora (docs/results.md): a Llama-style model trained by fusekit
# on WikiText-2 + Shakespeare + Linux C, folded by BUDGET of its FFN parameters, beside magnitude
# pruning, FLAP and ShortGPT, every model healed the same way (distillation from the original) —
# the original too: the healed original, given the same healing steps and objective, is the
# reference each method is compared with (what healing alone gives is not folding's).
#
#   sh bench/fold_results.sh [BUILD_DIR] [WORK_DIR]     (defaults: build, /tmp/fk_fold_results)
#
# Protocol (issue 19):
#  - equal size: magnitude, FLAP and ShortGPT-matched are pruned to exactly the folded model's
#    parameter count (fusekit prune --params; the script stops if any count differs); ShortGPT
#    drops whole layers, so it is also reported at its own budget (the layers reaching BUDGET),
#    where it is larger than the others' (its row says by how much);
#  - choices on validation: each method's healing learning rate is chosen from HEAL_LRS by the
#    bits per byte of its first-seed healed model on the validation text (val.txt: 30 kB per
#    domain, held out from training and disjoint from the test text); every method gets the same
#    grid; the calibration text and the budget are fixed beforehand, not chosen;
#  - replication: every method healed with every seed of SEEDS at its chosen rate; the test text
#    (100 kB of WikiText-2 test, Shakespeare's last 10%, 100 kB of Linux test) is read once per
#    final model, at the end; mean ± sd over seeds and the paired difference method − healed
#    original (same seed, so the same batches) with its 95% t interval (bench/stats.py).
#
# Stages whose output exists are skipped (delete WORK_DIR to start over). Writes WORK_DIR/
# results.jsonl (one line per model), results.json (the summary) and results.md (the tables).
# Environment: THREADS (default 2), STEPS (base training, 2000), HEAL_STEPS (300), BUDGET (0.3),
# SEEDS ("1 2 3"), HEAL_LRS ("3e-5 1e-4 3e-4 1e-3"), PROGRESSIVE (1: also fold -> heal in 3 rounds,
# first seed, folded's rate), the model's size D_MODEL (256) LAYERS (6) HEADS (8) KV_HEADS (2)
# FFN (704) CTX (256) BATCH (8) VOCAB (4096), CAL_BLOCKS (80: calibration text, 3 x 4 kB each),
# HEAL_BLOCKS (0: heal on the whole training text), HELD_BYTES (100000: test text per domain),
# METHODS (default all: original folded magnitude flap shortgpt-matched shortgpt).
set -e
BUILD=${1:-build}
W=${2:-/tmp/fk_fold_results}
F=$(cd "$BUILD" && pwd)/fusekit
HERE=$(cd "$(dirname "$0")" && pwd)
C=$HERE/../../shared/data/corpora
T=${THREADS:-2}
STEPS=${STEPS:-2000}
HEAL_STEPS=${HEAL_STEPS:-300}
BUDGET=${BUDGET:-0.3}
SEEDS=${SEEDS:-1 2 3}
HEAL_LRS=${HEAL_LRS:-3e-5 1e-4 3e-4 1e-3}
PROGRESSIVE=${PROGRESSIVE:-1}
CAL_BLOCKS=${CAL_BLOCKS:-80}
HEAL_BLOCKS=${HEAL_BLOCKS:-0}
SH_CAP=${HELD_BYTES:-200000}  # Shakespeare's last 10% (112 kB) whole unless HELD_BYTES is set
HELD_BYTES=${HELD_BYTES:-100000}
SHAPE="--d-model ${D_MODEL:-256} --layers ${LAYERS:-6} --heads ${HEADS:-8} --kv-heads ${KV_HEADS:-2} --ffn ${FFN:-704} --ctx ${CTX:-256}"
BATCH=${BATCH:-8}
[ -x "$F" ] || { echo "fold_results: no $F (build first)" >&2; exit 1; }
[ -f "$C/shakespeare/input.txt" ] || { echo "fold_results: no corpora at $C" >&2; exit 1; }
mkdir -p "$W/h"
cd "$W"
say() { echo "fold_results: $*" >&2; }

# --- data: training text (WikiText-2 valid, Shakespeare's first 85%, Linux train); validation
# text (WikiText-2 test and Linux test bytes 100001..130000, Shakespeare 85%..88%); test text per
# domain (the first HELD_BYTES of WikiText-2 test, of Shakespeare's last 10% and of Linux test);
# a calibration text of 4 kB blocks taken in turn from the three training texts
if [ ! -f val.txt ]; then
    n=$(wc -c < "$C/shakespeare/input.txt")
    cut=$((n * 85 / 100)) vcut=$((n * 88 / 100)) tcut=$((n * 9 / 10))
    head -c "$cut" "$C/shakespeare/input.txt" > shakespeare_train.txt
    head -c "$vcut" "$C/shakespeare/input.txt" | tail -c $((vcut - cut)) > val_shakespeare.txt
    tail -c $((n - tcut)) "$C/shakespeare/input.txt" | head -c "$SH_CAP" > held_shakespeare.txt
    head -c "$HELD_BYTES" "$C/wikitext2/test.txt" > held_wiki.txt
    head -c "$HELD_BYTES" "$C/linux/test.txt" > held_linux.txt
    tail -c +100001 "$C/wikitext2/test.txt" | head -c 30000 > val_wiki.txt
    tail -c +100001 "$C/linux/test.txt" | head -c 30000 > val_linux.txt
    cat "$C/wikitext2/valid.txt" shakespeare_train.txt "$C/linux/train.txt" > train.txt
    cat held_wiki.txt held_shakespeare.txt held_linux.txt > held.txt
    : > cal.txt
    i=0
    while [ $i -lt "$CAL_BLOCKS" ]; do
        for f in "$C/wikitext2/valid.txt" shakespeare_train.txt "$C/linux/train.txt"; do
            dd if="$f" bs=4096 skip=$i count=1 2>/dev/null >> cal.txt
        done
        i=$((i + 1))
    done
    : > heal.txt
    [ "$HEAL_BLOCKS" -gt 0 ] || cp train.txt heal.txt
    i=$CAL_BLOCKS
    while [ $i -lt $((CAL_BLOCKS + HEAL_BLOCKS)) ]; do
        for f in "$C/wikitext2/valid.txt" shakespeare_train.txt "$C/linux/train.txt"; do
            dd if="$f" bs=4096 skip=$i count=1 2>/dev/null >> heal.txt
        done
        i=$((i + 1))
    done
    cat val_wiki.txt val_shakespeare.txt val_linux.txt > val.txt.tmp
    mv val.txt.tmp val.txt
fi
[ -d tok ] || "$F" tokenizer train --data train.txt --vocab "${VOCAB:-4096}" -o tok > /dev/null
HEAL_DATA=heal.txt
[ -f train.bin ] || "$F" tokenize --tokenizer tok --data train.txt -o train.bin > /dev/null

# --- the model to fold: Llama style (by default d 256, 6 layers, 8 heads over 2 KV heads, SwiGLU 704)
if [ ! -f base/model.safetensors ]; then
    say "train the base model, $STEPS steps"
    "$F" train --data train.bin --val val.txt --tokenizer tok --arch llama $SHAPE \
        --batch "$BATCH" --steps "$STEPS" --lr 1e-3 --warmup 100 --eval-every 250 --eval-tokens 32768 --log-every 50 --threads "$T" -o base > base.log 2>&1
fi

# --- fold, then the baselines at exactly the folded model's parameter count; ShortGPT also at its own budget
num() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1" | tail -1; }
[ -f folded/model.safetensors ] || "$F" fold --model base --data cal.txt --budget "$BUDGET" --max-tokens 0 --threads "$T" -o folded > folded.json
"$F" info --model folded --json > folded.info
P=$(num folded.info params)
# (FLAP's bias compensation adds biases, 2 per kept channel and d_model per layer, so the most it
# reaches within P may fall short of P by less than one channel with its biases, 3 d_model + 2)
D=${D_MODEL:-256}
for m in magnitude flap shortgpt-matched; do
    [ -f "$m/model.safetensors" ] || "$F" prune --model base --data cal.txt --method "${m%-matched}" --params "$P" --max-tokens 0 --threads "$T" -o "$m" > "$m.json"
    "$F" info --model "$m" --json > "$m.info"
    q=$(num "$m.info" params)
    if [ "$m" = flap ]; then ok=$((q <= P && P - q < 3 * D + 2)); else ok=$((q == P)); fi
    [ "$ok" = 1 ] || { echo "fold_results: $m has $q parameters, the folded model $P: not at equal size" >&2; exit 1; }
done
[ -f shortgpt/model.safetensors ] || "$F" prune --model base --data cal.txt --method shortgpt --budget "$BUDGET" --max-tokens 0 --threads "$T" -o shortgpt > shortgpt.json

# --- healing: distillation from base on its own training text (heal.txt: all of it, or HEAL_BLOCKS
# blocks of 3 x 4 kB after the calibration blocks; top-10 store with a tail class, lambda 0.5),
# HEAL_STEPS steps; `original` is base itself healed the same way
src() { [ "$1" = original ] && echo base || echo "$1"; }
heal() {  # method lr seed -> h/<method>-lr<lr>-s<seed>
    o=h/$1-lr$2-s$3
    [ -f "$o/model.safetensors" ] && return 0
    say "heal $1, lr $2, seed $3"
    "$F" heal --teacher base --model "$(src "$1")" --data "$HEAL_DATA" --store-dir stores-heal -o "$o" --steps "$HEAL_STEPS" --batch "$BATCH" \
        --lr "$2" --seed "$3" --eval-every 0 --log-every 50 --val-frac 0 --save-every 0 --threads "$T" > "$o.log" 2>&1
    rm -rf "$o"/checkpoint-*
}
val_bpb() {  # model dir -> bits per byte on val.txt (cached beside it)
    [ -f "$1.val" ] || "$F" eval --model "$1" --data val.txt --threads "$T" > "$1.val"
    num "$1.val" bpb
}
METHODS=${METHODS:-original folded magnitude flap shortgpt-matched shortgpt}
set -- $SEEDS
S1=$1
: > choices.txt
for m in $METHODS; do
    best="" best_lr=""
    for lr in $HEAL_LRS; do
        heal "$m" "$lr" "$S1"
        v=$(val_bpb "h/$m-lr$lr-s$S1")
        say "  $m lr $lr: val $v bits/byte"
        if [ -z "$best" ] || awk "BEGIN{exit !($v < $best)}"; then best=$v; best_lr=$lr; fi
    done
    echo "$m $best_lr" >> choices.txt
    for s in $SEEDS; do heal "$m" "$best_lr" "$s"; done
done
lr_of() { awk -v m="$1" '$1 == m {print $2}' choices.txt; }
# progressive: three rounds of fold -> heal, each a third of the budget and of the healing steps
if [ "$PROGRESSIVE" = 1 ] && [ ! -f progressive/model.safetensors ]; then
    say "progressive folding, 3 rounds"
    "$F" fold --model base --data cal.txt --budget "$BUDGET" --max-tokens 0 --threads "$T" --rounds 3 --heal-steps "$HEAL_STEPS" --heal-data "$HEAL_DATA" \
        -o progressive -- --batch "$BATCH" --lr "$(lr_of folded)" --seed "$S1" --eval-every 0 --log-every 50 --val-frac 0 > progressive.log 2>&1
fi

# --- test: bits per byte per domain, KL to base, parameters, prefill tokens/s (one thread), once per model
rm -f results.jsonl.tmp
row() {  # name dir method healed seed lr
    "$F" info --model "$2" --json > "$2.info"
    for d in wiki shakespeare linux; do
        [ -f "$2.test_$d" ] || OMP_NUM_THREADS=1 "$F" eval --model "$2" --data "held_$d.txt" --threads 1 > "$2.test_$d"
    done
    [ -f "$2.kl" ] || OMP_NUM_THREADS=1 "$F" eval --model "$2" --data held.txt --kl-to base --threads 1 > "$2.kl"
    echo "{\"model\":\"$1\",\"method\":\"$3\",\"healed\":$4,\"seed\":$5,\"heal_lr\":$6,\"params\":$(num "$2.info" params),\"ffn_params\":$(num "$2.info" ffn_params),\"bpb_wiki\":$(num "$2.test_wiki" bpb),\"bpb_shakespeare\":$(num "$2.test_shakespeare" bpb),\"bpb_linux\":$(num "$2.test_linux" bpb),\"kl_to_base\":$(num "$2.kl" kl),\"prefill_tokens_per_s\":$(num "$2.test_linux" tokens_per_s)}" >> results.jsonl.tmp
}
say "test evaluation"
for m in $METHODS; do
    [ "$m" = original ] && row base base original false null null || row "$m" "$m" "$m" false null null
    lr=$(lr_of "$m")
    for s in $SEEDS; do row "$m-healed-s$s" "h/$m-lr$lr-s$s" "$m" true "$s" "$lr"; done
done
[ "$PROGRESSIVE" = 1 ] && row progressive progressive progressive true "$S1" "$(lr_of folded)"
mv results.jsonl.tmp results.jsonl

# --- the summary: mean ± sd over seeds, paired differences to the healed original
CONFIG="{\"steps\":$STEPS,\"heal_steps\":$HEAL_STEPS,\"budget\":$BUDGET,\"batch\":$BATCH,\"shape\":\"$SHAPE\",\"vocab\":${VOCAB:-4096},\"cal_blocks\":$CAL_BLOCKS,\"heal_blocks\":$HEAL_BLOCKS,\"held_bytes\":$HELD_BYTES,\"methods\":\"$METHODS\",\"seeds\":\"$SEEDS\",\"heal_lrs\":\"$HEAL_LRS\"}"
python3 - "$HERE" "$CONFIG" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
from stats import mean_sd, paired
cfg = json.loads(sys.argv[2])
rows = [json.loads(l) for l in open("results.jsonl")]
for r in rows: r["bpb_mean"] = (r["bpb_wiki"] + r["bpb_shakespeare"] + r["bpb_linux"]) / 3
choice = dict(l.split() for l in open("choices.txt"))
val = {m: {lr: json.loads(open(f"h/{m}-lr{lr}-s{cfg['seeds'].split()[0]}.val").read().splitlines()[-1])["bpb"] for lr in cfg["heal_lrs"].split()} for m in choice}
base = next(r for r in rows if r["model"] == "base")
healed = lambda m: {r["seed"]: r for r in rows if r["method"] == m and r["healed"] and r["model"] != "progressive"}
orig = healed("original")
methods = [m for m in ["original", "folded", "magnitude", "flap", "shortgpt-matched", "shortgpt"] if m in choice]
label = {"original": "original (unfolded)", "folded": "fold", "magnitude": "magnitude", "flap": "FLAP",
         "shortgpt-matched": "ShortGPT, matched (layers, then magnitude)", "shortgpt": "ShortGPT, own budget (whole layers)"}
summ = {"config": cfg, "heal_lr": choice, "val_bpb_by_lr": val, "methods": {}}
L = [f"Folding {cfg['budget']} of the FFN parameters of a Llama-style model ({cfg['shape']}, vocab {cfg['vocab']}, {cfg['steps']} training steps), "
     f"every model healed {cfg['heal_steps']} steps at the healing rate its validation text chose from {{{cfg['heal_lrs']}}}, seeds {cfg['seeds']}; "
     "test bits per byte (mean of the three domains), mean ± sd over seeds; difference to the healed original paired by seed, 95% t interval.", "",
     "| method | params | heal lr | unhealed bpb | healed bpb (mean ± sd) | per seed | healed − healed original (bpb) | 95% interval | relative |",
     "|---|---:|---:|---:|---:|---|---:|---|---:|"]
for m in methods:
    h = healed(m)
    seeds = sorted(set(h) & set(orig))
    xs = [h[s]["bpb_mean"] for s in seeds]
    mu, sd = mean_sd(xs)
    un = base if m == "original" else next(r for r in rows if r["model"] == m and not r["healed"])
    p = paired(xs, [orig[s]["bpb_mean"] for s in seeds]) if m != "original" else None
    rel = paired([h[s]["bpb_mean"] / orig[s]["bpb_mean"] * 100 for s in seeds], [100.0] * len(seeds)) if p else None
    summ["methods"][m] = {"params": un["params"], "heal_lr": float(choice[m]), "unhealed_bpb": un["bpb_mean"], "healed_bpb_mean": mu, "healed_bpb_sd": sd,
                          "per_seed": dict(zip(seeds, xs)), "vs_healed_original": p, "vs_healed_original_percent": rel,
                          "kl_to_base": {s: h[s]["kl_to_base"] for s in seeds}, "domains": {d: mean_sd([h[s][f"bpb_{d}"] for s in seeds]) for d in ("wiki", "shakespeare", "linux")}}
    cell = f"{p['mean']:+.4f}" if p else "—"
    ci = f"[{p['lo']:+.4f}, {p['hi']:+.4f}]" if p else "—"
    rc = f"{rel['mean']:+.2f}% [{rel['lo']:+.2f}, {rel['hi']:+.2f}]" if rel else "—"
    fp = next(r for r in rows if r["model"] == "folded")["params"]
    size = "" if m == "original" or un["params"] == fp else f" ({un['params'] - fp:+,} vs fold)"
    L.append(f"| {label[m]} | {un['params']:,}{size} | {choice[m]} | {un['bpb_mean']:.4f} | {mu:.4f} ± {sd:.4f} | {', '.join(f'{x:.4f}' for x in xs)} | {cell} | {ci} | {rc} |")
prog = [r for r in rows if r["model"] == "progressive"]
if prog:
    L += ["", f"progressive (3 rounds of fold -> heal, seed {prog[0]['seed']}): test bpb {prog[0]['bpb_mean']:.4f}, params {prog[0]['params']:,}"]
    summ["progressive"] = prog[0]
L += ["", "healing rate chosen on val.txt (val bits/byte by rate, first seed): " + json.dumps(val)]
json.dump(summ, open("results.json", "w"), indent=1)
open("results.md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
