#!/bin/sh
# Speed and memory on real GGUF files (issues 15 and 20): for each file, in alternating rounds,
# `fusekit eval --protocol llama-perplexity` in each precision of PRECISIONS and llama.cpp's
# llama-perplexity on the same text, context, batch and threads (tokens/s, peak RSS, perplexity),
# and `fusekit extract` in each precision (tokens/s, peak RSS against the file's size). One JSON
# line per measurement, then one summary line per file with the medians and the ratios measured
# in this run.
#
# usage: sh bench/real_speed.sh BUILD TEXT FILE.gguf...
# env:   LLAMA_PERPLEXITY  llama.cpp's llama-perplexity (optional: without it only fusekit runs;
#                          build it from the llama-cpp-python sdist's vendor/llama.cpp, see README)
#        PRECISIONS ("fp32 bf16": fusekit's --precision values, each a contender of its own; int8 too)
#        THREADS (2) CTX (512) ROUNDS (2) MAX_BYTES (40000: the text is cut to this many bytes)
#        EXTRACT (1; 0 leaves extraction out)
# The models are loaded frozen: their matrices stay mapped in the file's types. Needs bc and GNU time
# (Debian: bc, time).
set -e
BUILD=$1; TEXT=$2; shift 2
F="$BUILD/fusekit"
THREADS=${THREADS:-2}; CTX=${CTX:-512}; ROUNDS=${ROUNDS:-2}; MAX_BYTES=${MAX_BYTES:-40000}
PRECISIONS=${PRECISIONS:-fp32 bf16}; EXTRACT=${EXTRACT:-1}
LP=${LLAMA_PERPLEXITY:-}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
head -c "$MAX_BYTES" "$TEXT" > "$D/text.txt"
num() { grep -o "\"$1\":[-0-9.e+]*" "$2" | head -1 | cut -d: -f2; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "null"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
for M in "$@"; do
  size=$(stat -c %s "$M")
  : > "$D/lp_tps"; : > "$D/lp_rss"
  for p in $PRECISIONS; do : > "$D/fk_tps_$p"; : > "$D/fk_rss_$p"; : > "$D/ex_tps_$p"; : > "$D/ex_rss_$p"; done
  amb=null
  r=1
  while [ "$r" -le "$ROUNDS" ]; do
    for p in $PRECISIONS; do
      # fusekit eval, llama.cpp's protocol
      /usr/bin/time -f '%M %e' -o "$D/rss" "$F" eval --model "$M" --data "$D/text.txt" --protocol llama-perplexity --seq "$CTX" \
        --batch 1 --threads "$THREADS" --precision "$p" > "$D/fk.json" 2> "$D/fk.err" || { cat "$D/fk.err" >&2; exit 1; }
      # tokens/s for both tools: every token of every chunk processed, over the whole run's wall time
      ppl=$(num ppl "$D/fk.json"); rss=$(tail -1 "$D/rss" | cut -d' ' -f1); wall=$(tail -1 "$D/rss" | cut -d' ' -f2)
      tps=$(echo "$(num chunks "$D/fk.json") * $CTX / $wall" | bc -l)
      echo "$tps" >> "$D/fk_tps_$p"; echo "$rss" >> "$D/fk_rss_$p"
      printf '{"bench":"real_speed","model":"%s","tool":"fusekit eval","precision":"%s","round":%d,"threads":%s,"n_ctx":%s,"tokens_per_s":%.1f,"ppl":%s,"peak_rss_mb":%.1f}\n' \
        "$M" "$p" "$r" "$THREADS" "$CTX" "$tps" "$ppl" "$(echo "$rss / 1024" | bc -l)"
    done
    if [ -n "$LP" ]; then
      /usr/bin/time -f '%M %e' -o "$D/rss" "$LP" -m "$M" -f "$D/text.txt" -c "$CTX" -b "$CTX" -t "$THREADS" > "$D/lp.txt" 2>&1 \
        || { cat "$D/lp.txt" >&2; exit 1; }
      chunks=$(grep -o 'calculating perplexity over [0-9]* chunks' "$D/lp.txt" | grep -o '[0-9][0-9]*')
      lppl=$(grep -o 'Final estimate: PPL = [0-9.]*' "$D/lp.txt" | grep -o '[0-9.]*$')
      rss=$(tail -1 "$D/rss" | cut -d' ' -f1); wall=$(tail -1 "$D/rss" | cut -d' ' -f2)
      ltps=$(echo "$chunks * $CTX / $wall" | bc -l)
      echo "$ltps" >> "$D/lp_tps"; echo "$rss" >> "$D/lp_rss"
      printf '{"bench":"real_speed","model":"%s","tool":"llama-perplexity","round":%d,"threads":%s,"n_ctx":%s,"tokens_per_s":%.1f,"ppl":%s,"peak_rss_mb":%.1f}\n' \
        "$M" "$r" "$THREADS" "$CTX" "$ltps" "${lppl:-null}" "$(echo "$rss / 1024" | bc -l)"
    fi
    # fusekit extract (top-10 per position), a fresh store each round
    for p in $PRECISIONS; do
      [ "$EXTRACT" = 0 ] && break
      rm -f "$D/s.fkd" "$D/s.fkd.partial"; rm -rf "$D/s.fkd.tokenizer"
      /usr/bin/time -f '%M' -o "$D/rss" "$F" extract --model "$M" --data "$D/text.txt" -k 10 -o "$D/s.fkd" --seq "$CTX" --batch 1 \
        --threads "$THREADS" --precision "$p" > "$D/ex.json" 2> "$D/ex.err" || { cat "$D/ex.err" >&2; exit 1; }
      etps=$(num positions_per_s "$D/ex.json"); rss=$(tail -1 "$D/rss")
      wmb=$(num weights_mb "$D/ex.json"); amb=$(num activations_mb "$D/ex.json")
      echo "$etps" >> "$D/ex_tps_$p"; echo "$rss" >> "$D/ex_rss_$p"
      printf '{"bench":"real_speed","model":"%s","tool":"fusekit extract","precision":"%s","round":%d,"threads":%s,"seq":%s,"tokens_per_s":%s,"peak_rss_mb":%.1f,"file_mb":%.1f,"weights_mb":%s,"activations_mb":%s,"rss_over_file_plus_acts":%.3f}\n' \
        "$M" "$p" "$r" "$THREADS" "$CTX" "${etps:-null}" "$(echo "$rss / 1024" | bc -l)" "$(echo "$size / 1048576" | bc -l)" "$wmb" "$amb" \
        "$(echo "$rss / 1024 / ($size / 1048576 + $amb)" | bc -l)"
    done
    r=$((r + 1))
  done
  # summary: per precision, fusekit's medians and the ratio to llama-perplexity's median
  lp=$(median < "$D/lp_tps")
  fks=""; ratios=""; exs=""; exrs=""
  for p in $PRECISIONS; do
    fk=$(median < "$D/fk_tps_$p"); ex=$(median < "$D/ex_tps_$p"); exr=$(median < "$D/ex_rss_$p")
    ratio=null; [ "$lp" != null ] && ratio=$(printf '%.3f' "$(echo "$fk / $lp" | bc -l)")
    [ "$exr" != null ] && exr=$(printf '%.1f' "$(echo "$exr / 1024" | bc -l)")
    fks="$fks${fks:+,}\"$p\":$fk"; ratios="$ratios${ratios:+,}\"$p\":$ratio"
    exs="$exs${exs:+,}\"$p\":$ex"; exrs="$exrs${exrs:+,}\"$p\":$exr"
  done
  printf '{"bench":"real_speed_summary","model":"%s","threads":%s,"n_ctx":%s,"rounds":%s,"llama_perplexity_tps":%s,"fusekit_eval_tps":{%s},"eval_speed_ratio":{%s},"extract_tps":{%s},"extract_peak_rss_mb":{%s},"file_mb":%.1f,"activations_mb":%s}\n' \
    "$M" "$THREADS" "$CTX" "$ROUNDS" "$lp" "$fks" "$ratios" "$exs" "$exrs" "$(echo "$size / 1048576" | bc -l)" "$amb"
done
