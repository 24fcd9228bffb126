#!/usr/bin/env bash
# Extraction from a 7B-shape bf16 model read in place (issue 20): `fusekit extract` of top-k
# stores from a Llama-2-7B-shape folder (bench/make_7b.py: 6.74e9 parameters, 13.5 GB of bf16
# shards) over a few hundred tokens, under /usr/bin/time -v, sampling the process's resident
# memory split into anonymous and file-backed pages (/proc/PID/status RssAnon, RssFile) every
# 0.2 s. Prints one JSON line: peak RSS (time's "Maximum resident set size"), the sampled peaks
# of anonymous and file-backed memory, tokens/s of the forward passes (extract's
# positions_per_s) and of the whole run (positions / wall seconds, loading included), the
# store's bytes and the weights' bytes as the library counts them.
#
#   /work/cache/venv/bin/python bench/make_7b.py --out /work/cache/llama2_7b_bf16   # once, ~13.5 GB
#   bench/big_extract.sh                          # MODEL=... FK=... THREADS=1 BYTES=1200 SEQ=128 K=10
#
# The mapped weights are file-backed pages: they count in RSS once touched (every matrix is read
# by each forward), and the kernel can drop them under pressure and read them again.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-/work/cache/llama2_7b_bf16}
FK=${FK:-build/fusekit}
THREADS=${THREADS:-1}
BYTES=${BYTES:-1200}   # of tests/data/gguf/llamacpp_ppl/eval.txt: 387 tokens with make_7b.py's tokenizer
SEQ=${SEQ:-128}
K=${K:-10}
[ -d "$MODEL" ] || { echo "big_extract.sh: no model folder $MODEL (make it with bench/make_7b.py --out $MODEL)" >&2; exit 2; }
[ -x "$FK" ] || { echo "big_extract.sh: no fusekit program at $FK (FK=path)" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
head -c "$BYTES" tests/data/gguf/llamacpp_ppl/eval.txt > "$WORK/text.txt"

nice /usr/bin/time -v "$FK" extract --model "$MODEL" --data "$WORK/text.txt" -k "$K" -o "$WORK/store.fkd" --seq "$SEQ" \
    --threads "$THREADS" > "$WORK/extract.json" 2> "$WORK/time.txt" &
TIME_PID=$!
# time's child is the fusekit process: sample its RssAnon / RssFile until it ends
anon=0 file=0 child=""
while kill -0 "$TIME_PID" 2>/dev/null; do
    [ -n "$child" ] || child=$(pgrep -P "$TIME_PID" | head -1 || true)
    if [ -n "$child" ] && [ -r "/proc/$child/status" ]; then
        read -r a f < <(awk '/^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {print a+0, f+0}' "/proc/$child/status" 2>/dev/null || echo "0 0")
        [ "$a" -gt "$anon" ] && anon=$a
        [ "$f" -gt "$file" ] && file=$f
    fi
    sleep 0.2
done
wait "$TIME_PID" || { cat "$WORK/time.txt" >&2; exit 1; }

python3 - "$WORK/extract.json" "$WORK/time.txt" "$anon" "$file" "$MODEL" "$THREADS" "$SEQ" "$K" <<'EOF'
import json, re, sys
ex = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
tv = open(sys.argv[2]).read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", tv).group(1))
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", tv).group(1).split(":")
wall_s = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
print(json.dumps({
    "model": sys.argv[5], "threads": int(sys.argv[6]), "seq": int(sys.argv[7]), "k": int(sys.argv[8]),
    "tokens": ex["positions"], "peak_rss_mb": round(rss_kb / 1024, 1),
    "peak_anon_mb": round(int(sys.argv[3]) / 1024, 1), "peak_file_mb": round(int(sys.argv[4]) / 1024, 1),
    "weights_mb": ex["weights_mb"], "activations_mb": ex["activations_mb"],
    "forward_tokens_per_s": ex["positions_per_s"], "extract_seconds": ex["seconds"],
    "wall_s": round(wall_s, 1), "wall_tokens_per_s": round(ex["positions"] / wall_s, 2),
    "store_bytes": ex["bytes"], "bytes_per_position": ex["bytes_per_position"]}))
EOF
