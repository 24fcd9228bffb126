#!/bin/sh
# The demo's pipeline on the real corpora of ../shared/data/corpora (issue 6): three sources,
# each trained mostly on one domain with its own tokenizer and architecture, fused into a
# target initialised from one of them by continual training on a small mixed corpus, against
# the CLM-only baseline with the same initialisation, corpus, steps and schedule; then the
# fused model folded by an FFN budget and healed. Every model is evaluated on each domain's
# held-out text. Prints JSON lines and a Markdown table (docs/results.md keeps it).
#
#   A  Wikipedia (WikiText-2)   Llama style, SentencePiece-style BPE 4096
#   B  Shakespeare              GPT-2 style, byte-level BPE 2048
#   C  Linux C code             Llama style + GQA, byte-level BPE 6144 (llama-bpe pre-tokenizer)
#
# usage: sh bench/fuse_real.sh [BUILD_DIR] [WORK_DIR]   (stages are cached in WORK_DIR)
# About 45 minutes on 2 cores.
set -e
BUILD=${1:-build}
W=${2:-out/fuse_real}
F="$BUILD/fusekit"
C=../shared/data/corpora
SRC_STEPS=${SRC_STEPS:-1200}
FUSE_STEPS=${FUSE_STEPS:-400}
mkdir -p "$W/data" "$W/logs"

# ---- data: train / test per domain (test: 100 KB never trained on)
if [ ! -f "$W/data/done" ]; then
  for d in wiki shakespeare linux; do mkdir -p "$W/data/$d"; done
  cp "$C/wikitext2/valid.txt" "$W/data/wiki/train.txt"
  head -c 100000 "$C/wikitext2/test.txt" > "$W/data/wiki/test.txt"
  N=$(wc -c < "$C/shakespeare/input.txt")
  head -c $((N - 100000)) "$C/shakespeare/input.txt" > "$W/data/shakespeare/train.txt"
  tail -c 100000 "$C/shakespeare/input.txt" > "$W/data/shakespeare/test.txt"
  head -c 1100000 "$C/linux/train.txt" > "$W/data/linux/train.txt"
  head -c 100000 "$C/linux/test.txt" > "$W/data/linux/test.txt"
  # the mixed corpus: the domains interleaved in blocks of whole lines (about 2 KB); the
  # fusion corpus is its first FUSE_BYTES, the mixed validation text comes from the other end
  python3 - "$W/data" <<'PY'
import sys
root = sys.argv[1]
doms = ["wiki", "shakespeare", "linux"]
def blocks(path, size=2048):
    out, cur = [], []
    n = 0
    for line in open(path, encoding="utf-8", errors="surrogateescape"):
        cur.append(line); n += len(line)
        if n >= size:
            out.append("".join(cur)); cur, n = [], 0
    return out
bs = [blocks(f"{root}/{d}/train.txt") for d in doms]
mix, k = [], 0
while all(k < len(b) for b in bs):
    for b in bs: mix.append(b[k])
    k += 1
open(f"{root}/mix.txt", "w", encoding="utf-8", errors="surrogateescape").write("".join(mix))
val = "".join(mix[-60:])
open(f"{root}/mix_valid.txt", "w", encoding="utf-8", errors="surrogateescape").write(val)
PY
  head -c ${FUSE_BYTES:-600000} "$W/data/mix.txt" > "$W/data/fusion.txt"
  head -c 150000 "$W/data/mix.txt" > "$W/data/mix_slice.txt"
  for d in wiki shakespeare linux; do cat "$W/data/$d/train.txt" "$W/data/mix_slice.txt" > "$W/data/source-$d.txt"; done
  touch "$W/data/done"
fi

S="--ctx 256 --batch 16 --d-model 128 --layers 4 --heads 4 --seed 1 --log-every 100 --eval-every $SRC_STEPS --val-frac 0.02"
train_source() {  # name domain tokenizer-args arch-args
  [ -f "$W/$1/model.safetensors" ] && return 0
  "$F" tokenizer train --data "$W/data/source-$2.txt" $3 -o "$W/tok-$1" > "$W/logs/tok-$1.log"
  "$F" train --data "$W/data/source-$2.txt" --tokenizer "$W/tok-$1" $4 $S --steps $SRC_STEPS -o "$W/$1" > "$W/logs/$1.log" 2>&1
}
train_source A wiki "--kind spm --vocab 4096 --split-digits" "--arch llama --lr 2e-3"
train_source B shakespeare "--vocab 2048" "--arch gpt2 --lr 2e-3"
train_source C linux "--vocab 6144 --pre llama-bpe" "--arch llama --kv-heads 2 --lr 2e-3"

T="--steps $FUSE_STEPS --batch 16 --lr 1e-3 --seed 1 --val $W/data/mix_valid.txt --eval-every 50 --log-every 10"
[ -f "$W/fused/model.safetensors" ] || "$F" fuse --target "$W/A" --source "$W/B" "$W/C" --data "$W/data/fusion.txt" \
  --lambda ${LAMBDA:-0.5} --teacher-tail --vmap exact $T -o "$W/fused" > "$W/logs/fused.log" 2>&1
[ -f "$W/baseline/model.safetensors" ] || "$F" train --init "$W/A" --data "$W/data/fusion.txt" $T -o "$W/baseline" > "$W/logs/baseline.log" 2>&1
[ -f "$W/folded/model.safetensors" ] || "$F" fold --model "$W/fused" --data "$W/data/fusion.txt" --budget 0.25 --heal-steps 200 \
  -o "$W/folded" -- --batch 16 --seed 1 > "$W/logs/folded.log" 2>&1

# ---- evaluation: every model on every domain's held-out text
: > "$W/results.jsonl"
for m in A B C baseline fused folded; do
  for d in wiki shakespeare linux; do
    R=$("$F" eval --model "$W/$m" --data "$W/data/$d/test.txt" --seq 256 | tail -1)
    P=$("$F" info --model "$W/$m" --json | tail -1)
    python3 - "$m" "$d" "$R" "$P" >> "$W/results.jsonl" <<'PY'
import json, sys
r, p = json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps({"bench": "fuse_real", "model": sys.argv[1], "domain": sys.argv[2], "bpb": round(r["bpb"], 4),
                  "tokens_per_s": r["tokens_per_s"], "params": p.get("params")}))
PY
  done
done
cat "$W/results.jsonl"
SHARES=$(grep -o '"teacher_shares":\[[^]]*\]' "$W/fused/metrics.jsonl" | tail -1)
python3 - "$W/results.jsonl" "$SHARES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
doms = ["wiki", "shakespeare", "linux"]
role = {"A": "source: Wikipedia (Llama, SPM 4096)", "B": "source: Shakespeare (GPT-2, BPE 2048)",
        "C": "source: Linux (Llama GQA, BPE 6144)", "baseline": "CLM only, from A", "fused": "fusion of A, B, C, from A",
        "folded": "fused, 25% FFN folded + healed"}
print("\n| model | | params | " + " | ".join(doms) + " | mean |")
print("|---|---|---:|" + "---:|" * (len(doms) + 1))
for m in ["A", "B", "C", "baseline", "fused", "folded"]:
    b = {r["domain"]: r["bpb"] for r in rows if r["model"] == m}
    p = next(r["params"] for r in rows if r["model"] == m)
    mean = sum(b[d] for d in doms) / len(doms)
    print(f"| {m} | {role[m]} | {p:,} | " + " | ".join(f"{b[d]:.4f}" for d in doms) + f" | **{mean:.4f}** |")
print("\nteacher shares (A, B, C):", sys.argv[2])
PY
