#!/bin/sh
# make demo: the end-to-end demo. Until the embedded synthetic corpus and the fusion demo
# land (issue 6), it trains a small byte-level model on Tiny Shakespeare (or, without
# ../shared/data, on a text it generates), evaluates it and generates from it.
set -e
FK=${1:-build/fusekit}
OUT=${DEMO_OUT:-out/demo}
DATA=../shared/data/corpora/shakespeare/input.txt
mkdir -p "$OUT"
rm -rf "$OUT/model"   # the demo starts afresh each time
if [ ! -f "$DATA" ]; then
  DATA="$OUT/text.txt"
  i=0; : > "$DATA"
  while [ $i -lt 3000 ]; do echo "the quick brown fox $i jumps over the lazy dog number $((i * 7 % 13))." >> "$DATA"; i=$((i + 1)); done
fi
echo "== training a 4-layer GPT-2-style byte-level model on $DATA (about a minute on 2 cores)"
"$FK" train --data "$DATA" -o "$OUT/model" --steps 600 --batch 16 --ctx 128 --d-model 128 --layers 4 --heads 4 \
  --lr 3e-3 --warmup 50 --eval-every 200 --log-every 100
echo "== held-out evaluation (last 10% of the text)"
tail -c 100000 "$DATA" > "$OUT/heldout.txt"
"$FK" eval --model "$OUT/model" --data "$OUT/heldout.txt"
echo "== generation"
"$FK" generate --model "$OUT/model" --prompt "ROMEO:" -n 200 --temperature 0.8 --top-k 40
"$FK" info --model "$OUT/model" | head -4
