#!/bin/sh
# Training memory of a 1.1B model at ctx 512 (issue 20, item 2): a TinyLlama-1.1B-shape Llama
# (d 2048, 22 layers, 32 heads / 4 KV heads, FFN 5632) with SmolLM2's tokenizer (49,152 tokens:
# 1.17B parameters), random weights from a config.json, 2 steps of 512-token sequences: batch 1
# with f32 and with bf16 AdamW moments, batch 4 with bf16 moments and --checkpoint-activations;
# peak RSS from /usr/bin/time -v (GNU time; Debian: time). Needs
# about 21 GB of memory and 15 GB of disk for the checkpoint, removed after each run.
# Usage: sh bench/big_train.sh [BUILD_DIR] [WORK_DIR]   (THREADS, default 1; the tokenizer from
# bench/real_models.sh or FK_REAL_SMOLLM2)
BUILD=${1:-build}
W=${2:-out/big_train}
THREADS=${THREADS:-1}
cd "$(dirname "$0")/.." || exit 1
[ -x /usr/bin/time ] || { echo "big_train: needs GNU time (/usr/bin/time; Debian: apt-get install time)" >&2; exit 1; }
[ -n "${FK_REAL_SMOLLM2:-}" ] || eval "$(bash bench/real_models.sh)"
mkdir -p "$W"
cat > "$W/config.json" <<'JSON'
{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152, "hidden_size": 2048,
 "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
 "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "hidden_act": "silu", "rope_theta": 10000.0,
 "tie_word_embeddings": false}
JSON
head -c 200000 "${FK_CORPORA:-../shared/data/corpora}/shakespeare/input.txt" > "$W/text.txt"
# moments:batch:checkpointing
for run in f32:1:no bf16:1:no bf16:4:yes; do
  mo=${run%%:*} rest=${run#*:} b=${rest%%:*} ck=${rest#*:} tag=$(echo "$run" | tr ':' '-')
  flag=""
  [ "$ck" = yes ] && flag=--checkpoint-activations
  rm -rf "$W/out"
  /usr/bin/time -v "$BUILD/fusekit" train --config "$W/config.json" --tokenizer "$FK_REAL_SMOLLM2" --data "$W/text.txt" -o "$W/out" \
    --batch "$b" --seq 512 --steps 2 --eval-every 0 --log-every 1 --optim-state "$mo" $flag --threads "$THREADS" \
    > "$W/train-$tag.log" 2> "$W/time-$tag.log" || { echo "big_train: run $run failed (see $W/time-$tag.log)" >&2; exit 1; }
  rss=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$W/time-$tag.log")
  tps=$(grep -o '"tokens_per_s":[0-9.]*' "$W/train-$tag.log" | tail -1 | cut -d: -f2)
  echo "{\"bench\": \"big_train\", \"params\": $(grep -o 'parameters: [0-9]*' "$W/time-$tag.log" | cut -d' ' -f2), \"moments\": \"$mo\", \"batch\": $b, \"seq\": 512, \"checkpoint_activations\": \"$ck\", \"peak_rss_gb\": $(awk -v k="$rss" 'BEGIN { printf "%.2f", k * 1024 / 1e9 }'), \"tokens_per_s\": $tps, \"threads\": $THREADS}"
  rm -rf "$W/out"
done
