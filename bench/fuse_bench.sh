#!/bin/sh
# Knowledge-fusion speed figures, as JSON lines (never pass/fail):
#  - extraction positions/s next to plain inference (fusekit eval) of the same model on the same text;
#  - store bytes per position at k = 10;
#  - aligning a store to another tokenizer (fusekit train does it once, then caches it);
#  - fused-training step time relative to CLM-only training: config S (GPT-2 style, vocab
#    8192, context 256, d_model 256, 4 layers, 4 heads, batch 8) with two teachers of other
#    tokenizers (vocabularies 4096 and 8192), the same steps, seed and data, in one run.
# usage: sh bench/fuse_bench.sh [BUILD_DIR] [STEPS]   (needs ../shared/data)
set -e
BUILD=${1:-build}
STEPS=${2:-20}
F="$BUILD/fusekit"
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
head -c 1000000 ../shared/data/corpora/wikitext2/test.txt > "$D/text.txt"
"$F" tokenizer train --data ../shared/data/corpora/wikitext2/valid.txt --vocab 8192 -o "$D/tokT" > /dev/null
"$F" tokenizer train --data ../shared/data/corpora/shakespeare/input.txt --vocab 4096 -o "$D/tokA" > /dev/null
"$F" tokenizer train --data ../shared/data/corpora/linux/train.txt --vocab 8192 -o "$D/tokB" > /dev/null
S="--d-model 256 --layers 4 --heads 4 --ctx 256 --batch 8 --eval-every 0 --log-every 1000 --val-frac 0"
# random-weight models: speed does not depend on what they know
"$F" train --data "$D/text.txt" --tokenizer "$D/tokT" -o "$D/T" --arch gpt2 $S --steps 0 > /dev/null 2>&1
"$F" train --data "$D/text.txt" --tokenizer "$D/tokA" -o "$D/A" --arch llama $S --steps 0 > /dev/null 2>&1
"$F" train --data "$D/text.txt" --tokenizer "$D/tokB" -o "$D/B" --arch gpt2 $S --steps 0 > /dev/null 2>&1
EVAL=$("$F" eval --model "$D/A" --data "$D/text.txt" --batch 4)
EXTR=$("$F" extract --model "$D/A" --data "$D/text.txt" -k 10 -o "$D/A.fkd")
"$F" extract --model "$D/B" --data "$D/text.txt" -k 10 -o "$D/B.fkd" > /dev/null
python3 - "$EVAL" "$EXTR" <<'PY'
import json, sys
e, x = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"bench": "extract", "model": "llama d256 L4 vocab 4096", "positions": x["positions"],
                  "extract_positions_per_s": x["positions_per_s"], "infer_tokens_per_s": e["tokens_per_s"],
                  "extract_over_infer": round(x["positions_per_s"] / e["tokens_per_s"], 3),
                  "bytes_per_position": x["bytes_per_position"]}))
PY
T0=$(date +%s.%N)
"$F" train --init "$D/T" --data "$D/text.txt" -o "$D/warm" --teacher "$D/A.fkd" "$D/B.fkd" --steps 1 $S > /dev/null 2>&1
T1=$(date +%s.%N)
CLM=$("$F" train --init "$D/T" --data "$D/text.txt" -o "$D/clm" --steps "$STEPS" $S 2>/dev/null | tail -1)
FUS=$("$F" train --init "$D/T" --data "$D/text.txt" -o "$D/fus" --teacher "$D/A.fkd" "$D/B.fkd" --steps "$STEPS" $S 2>/dev/null | tail -1)
python3 - "$CLM" "$FUS" "$T0" "$T1" <<'PY'
import json, sys
c, f = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"bench": "align", "what": "two stores aligned to the target's tokenizer (+ a 1-step run)",
                  "seconds": round(float(sys.argv[4]) - float(sys.argv[3]), 2)}))
print(json.dumps({"bench": "fused_train", "config": "S", "teachers": 2, "steps": c["step"],
                  "clm_tokens_per_s": c["tokens_per_s"], "fused_tokens_per_s": f["tokens_per_s"],
                  "step_time_ratio": round(c["tokens_per_s"] / f["tokens_per_s"], 3)}))
PY
