#!/bin/sh
# Extraction from quantized GGUF teachers in fp32 and bf16 products (issue 20, item 3): for each
# file, in alternating rounds, `fusekit extract --precision fp32` and `--precision bf16` on the
# same text (positions/s, peak RSS), then how far the two stores are apart (bench/fk_store_diff:
# top-1 agreement, |delta ce|, mean ce of each, KL on the kept entries). The matrices stay in the
# file's types: batched products dequantize tiles of rows and multiply them by the library's
# GEMM (OpenBLAS sgemm in fp32; oneDNN on AMX tiles in bf16 where the CPU has them, otherwise
# emulated and slower). One JSON line per run, one summary line per file with the medians and
# the ratio measured in this run.
#
# usage: sh bench/quant_extract.sh BUILD TEXT FILE.gguf...
# env:   THREADS (1) ROUNDS (2) MAX_BYTES (40000: the text is cut to this many bytes) SEQ (512)
# Needs GNU time (Debian: time) and bc.
set -e
BUILD=$1; TEXT=$2; shift 2
F="$BUILD/fusekit"
THREADS=${THREADS:-1}; ROUNDS=${ROUNDS:-2}; MAX_BYTES=${MAX_BYTES:-40000}; SEQ=${SEQ:-512}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
head -c "$MAX_BYTES" "$TEXT" > "$D/text.txt"
num() { grep -o "\"$1\":[-0-9.e+]*" "$2" | head -1 | cut -d: -f2; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "null"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
for M in "$@"; do
  name=$(basename "$M")
  for p in fp32 bf16; do : > "$D/tps_$p"; : > "$D/rss_$p"; done
  r=1
  while [ "$r" -le "$ROUNDS" ]; do
    for p in fp32 bf16; do
      rm -f "$D/$p.fkd"
      OMP_NUM_THREADS=$THREADS /usr/bin/time -f '%M' -o "$D/rss" "$F" extract --model "$M" --data "$D/text.txt" -o "$D/$p.fkd" \
        --seq "$SEQ" --threads "$THREADS" --precision "$p" > "$D/out.json" 2> "$D/err" || { cat "$D/err" >&2; exit 1; }
      tps=$(num positions_per_s "$D/out.json"); rss=$(tail -1 "$D/rss")
      echo "$tps" >> "$D/tps_$p"; echo "$rss" >> "$D/rss_$p"
      printf '{"bench":"quant_extract","model":"%s","precision":"%s","round":%d,"threads":%s,"seq":%s,"positions_per_s":%s,"peak_rss_mb":%.1f}\n' \
        "$name" "$p" "$r" "$THREADS" "$SEQ" "$tps" "$(echo "$rss / 1024" | bc -l)"
    done
    r=$((r + 1))
  done
  a=$(median < "$D/tps_fp32"); b=$(median < "$D/tps_bf16")
  diff=$("$BUILD/fk_store_diff" "$D/fp32.fkd" "$D/bf16.fkd")
  printf '{"bench":"quant_extract_summary","model":"%s","threads":%s,"cpu":"%s","fp32_positions_per_s":%s,"bf16_positions_per_s":%s,"bf16_over_fp32":%.3f,"fp32_peak_rss_mb":%.1f,"bf16_peak_rss_mb":%.1f,"diff":%s}\n' \
    "$name" "$THREADS" "$cpu" "$a" "$b" "$(echo "$b / $a" | bc -l)" "$(median < "$D/rss_fp32" | awk '{print $1/1024}')" \
    "$(median < "$D/rss_bf16" | awk '{print $1/1024}')" "$diff"
done
