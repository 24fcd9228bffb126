#!/bin/sh
# Folding results on the real corpora (docs/results.md): a Llama-style model trained by fusekit
# on WikiText-2 + Shakespeare + Linux C, folded by 30% of its FFN parameters, healed, and
# compared with magnitude pruning, FLAP and ShortGPT at the same budget, each healed the same way.
#
#   sh bench/fold_results.sh [BUILD_DIR] [WORK_DIR]     (defaults: build, /tmp/fk_fold_results)
#
# Stages whose output exists are skipped (delete WORK_DIR to start over). Prints one JSON line
# per model and a Markdown table. THREADS (default 2), STEPS (base training, default 2000),
# HEAL_STEPS (default 300) and BUDGET (default 0.3) can be set in the environment.
set -e
BUILD=${1:-build}
W=${2:-/tmp/fk_fold_results}
F=$(cd "$BUILD" && pwd)/fusekit
C=$(cd "$(dirname "$0")/.." && pwd)/../shared/data/corpora
T=${THREADS:-2}
STEPS=${STEPS:-2000}
HEAL_STEPS=${HEAL_STEPS:-300}
BUDGET=${BUDGET:-0.3}
[ -x "$F" ] || { echo "fold_results: no $F (build first)" >&2; exit 1; }
[ -f "$C/shakespeare/input.txt" ] || { echo "fold_results: no corpora at $C" >&2; exit 1; }
mkdir -p "$W"
cd "$W"

# --- data: training text (WikiText-2 valid, Shakespeare's first 90%, Linux train), held-out
# text per domain (100 kB of WikiText-2 test, Shakespeare's last 10%, 100 kB of Linux test),
# a calibration / healing text of 4 kB blocks taken in turn from the three training texts
if [ ! -f cal.txt ]; then
    n=$(wc -c < "$C/shakespeare/input.txt")
    cut=$((n * 9 / 10))
    head -c "$cut" "$C/shakespeare/input.txt" > shakespeare_train.txt
    tail -c $((n - cut)) "$C/shakespeare/input.txt" > held_shakespeare.txt
    head -c 100000 "$C/wikitext2/test.txt" > held_wiki.txt
    head -c 100000 "$C/linux/test.txt" > held_linux.txt
    cat "$C/wikitext2/valid.txt" shakespeare_train.txt "$C/linux/train.txt" > train.txt.tmp
    cat held_wiki.txt held_shakespeare.txt held_linux.txt > held.txt
    : > cal.txt.tmp
    i=0
    while [ $i -lt 80 ]; do
        for f in "$C/wikitext2/valid.txt" shakespeare_train.txt "$C/linux/train.txt"; do
            dd if="$f" bs=4096 skip=$i count=1 2>/dev/null >> cal.txt.tmp
        done
        i=$((i + 1))
    done
    mv cal.txt.tmp cal.txt
    mv train.txt.tmp train.txt
fi
[ -d tok ] || "$F" tokenizer train --data train.txt --vocab 4096 -o tok > /dev/null
[ -f train.bin ] || "$F" tokenize --tokenizer tok --data train.txt -o train.bin > /dev/null

# --- the model to fold: Llama style, d 256, 6 layers, 8 heads over 2 KV heads, SwiGLU 704
if [ ! -f base/model.safetensors ]; then
    "$F" train --data train.bin --val held.txt --tokenizer tok --arch llama --d-model 256 --layers 6 --heads 8 --kv-heads 2 --ffn 704 \
        --ctx 256 --batch 8 --steps "$STEPS" --lr 1e-3 --warmup 100 --eval-every 250 --eval-tokens 32768 --log-every 50 --threads "$T" -o base > base.log 2>&1
fi

# --- fold, the baselines, and healing for each (distillation from base, lambda 0.5, same steps)
[ -f folded/model.safetensors ] || "$F" fold --model base --data cal.txt --budget "$BUDGET" --max-tokens 0 --threads "$T" -o folded > folded.json
for m in magnitude flap shortgpt; do
    [ -f "$m/model.safetensors" ] || "$F" prune --model base --data cal.txt --method "$m" --budget "$BUDGET" --max-tokens 0 --threads "$T" -o "$m" > "$m.json"
done
# healing: distillation from base on its own training text (top-10 store with a tail class,
# lambda 0.5), 300 steps at base's final learning rate; the unfolded base healed the same way is
# the control (what the extra training alone gives)
HEAL="--steps $HEAL_STEPS --batch 8 --lr 1e-4 --eval-every 0 --log-every 50 --val-frac 0 --threads $T"
for m in folded magnitude flap shortgpt base; do
    [ -f "$m-healed/model.safetensors" ] || "$F" heal --teacher base --model "$m" --data train.txt --store-dir stores-train -o "$m-healed" $HEAL > "$m-healed.log" 2>&1
done
# progressive: three rounds of fold -> heal, each a third of the budget and of the healing steps
[ -f progressive/model.safetensors ] || "$F" fold --model base --data cal.txt --budget "$BUDGET" --max-tokens 0 --threads "$T" --rounds 3 \
    --heal-steps "$HEAL_STEPS" --heal-data train.txt -o progressive -- --batch 8 --lr 1e-4 --eval-every 0 --log-every 50 --val-frac 0 > progressive.log 2>&1

# --- evaluation: bits per byte per domain, parameters, prefill tokens/s (one thread, same kernels)
rm -f results.jsonl.tmp
num() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1" | tail -1; }
printf '| model | params | FFN params | bpb wiki | bpb shakespeare | bpb linux | bpb mean | vs base | KL to base | prefill tok/s |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for m in base base-healed folded folded-healed progressive magnitude magnitude-healed flap flap-healed shortgpt shortgpt-healed; do
    "$F" info --model "$m" --json > "$m.info"
    tot=0
    for d in wiki shakespeare linux; do
        OMP_NUM_THREADS=1 "$F" eval --model "$m" --data "held_$d.txt" --threads 1 > "$m.eval_$d"
        eval "b_$d=$(num "$m.eval_$d" bpb)"
    done
    eval "tps=$(num "$m.eval_linux" tokens_per_s)"
    OMP_NUM_THREADS=1 "$F" eval --model "$m" --data held.txt --kl-to base --threads 1 > "$m.kl"
    kl=$(num "$m.kl" kl)
    params=$(num "$m.info" params)
    ffn=$(num "$m.info" ffn_params)
    mean=$(echo "$b_wiki $b_shakespeare $b_linux" | awk '{printf "%.4f", ($1 + $2 + $3) / 3}')
    [ "$m" = base ] && basemean=$mean
    rel=$(echo "$mean $basemean" | awk '{printf "%+.2f%%", ($1 / $2 - 1) * 100}')
    echo "{\"model\":\"$m\",\"params\":$params,\"ffn_params\":$ffn,\"bpb_wiki\":$b_wiki,\"bpb_shakespeare\":$b_shakespeare,\"bpb_linux\":$b_linux,\"bpb_mean\":$mean,\"vs_base\":\"$rel\",\"kl_to_base\":$kl,\"prefill_tokens_per_s\":$tps}" >> results.jsonl.tmp
    printf '| %s | %s | %s | %.4f | %.4f | %.4f | %s | %s | %.4f | %.0f |\n' "$m" "$params" "$ffn" "$b_wiki" "$b_shakespeare" "$b_linux" "$mean" "$rel" "$kl" "$tps"
done
mv results.jsonl.tmp results.jsonl
