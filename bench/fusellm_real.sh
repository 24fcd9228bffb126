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
# (bench/stats.py). OBJECTIVES (default "ce") lists the fused arms, each trained with the same
# teachers, stores and batches: ce (MinCE's soft cross-entropy, the FuseLLM arm above), uld
# (Universal Logit Distillation on the same fused rows), span (ALM's chunk likelihoods, --span-temp
# at fuse's default); OBJ+VMAP runs an objective with fuse --vmap VMAP. Every arm gets the MinCE
# arm's tuning (lambda from LAMBDAS at the CLM-chosen rate, on val.txt), then every seed, and is
# paired by seed against MinCE and against CLM-only. Held-out figures on
# wikitext-2 test.txt and linux test.txt (their first TEST_BYTES), read once, at the end, with
# llama.cpp's perplexity protocol (chunks of SEQ tokens, BOS where the tokenizer adds one, the
# second half of each chunk scored): bits per byte, mean ± sd over the seeds. Then the fused model
# (first seed) is folded by 20% of its FFN parameters and healed, beside magnitude pruning of the
# same budget healed the same way and the fused model healed the same way without folding (the
# healed-original control: folded - healed is what folding itself costs).
#
# usage: bench/fusellm_real.sh [BUILD_DIR] [WORK_DIR]     (stages are cached in WORK_DIR)
#   SIZE=short (default) runs in minutes; SIZE=full took 23 minutes on 2 shared cores.
#   Every size knob can be set alone: SEQ BATCH STEPS SEEDS LRS LAMBDAS HEAL_STEPS K MIX_BYTES
#   VAL_BYTES TEST_BYTES CAL_TOKENS THREADS; OBJECTIVES picks the fused arms (must include ce);
#   FOLD=0 skips folding and pruning (a later FOLD=1 run adds them to the cached runs). The models come from bench/real_models.sh (pip,
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
: "${SEEDS:=1 2 3}" "${K:=10}" "${THREADS:=0}" "${OBJECTIVES:=ce}" "${FOLD:=1}"
case "$FOLD" in 0|1) ;; *) echo "fusellm_real: FOLD must be 0 or 1 (got '$FOLD')" >&2; exit 2 ;; esac
# the fused arms, checked before any work: OBJ or OBJ+VMAP, OBJ one of fuse's --objective choices
VMAPS_OK=$("$F" fuse --help 2>&1 | grep -o -- '--vmap NAME .*' | grep -o '\[[a-z|-]*\]' | tr -d '[]' || true)
case " $OBJECTIVES " in *" ce "*) ;; *) echo "fusellm_real: OBJECTIVES must include ce, the MinCE arm the others are paired with (got '$OBJECTIVES')" >&2; exit 2 ;; esac
for a in $OBJECTIVES; do
  case "${a%%+*}" in ce|uld|span) ;; *) echo "fusellm_real: OBJECTIVES: objective '${a%%+*}' of '$a' is not ce, uld or span" >&2; exit 2 ;; esac
  case "$a" in *+*) case "|$VMAPS_OK|" in *"|${a#*+}|"*) ;; *) echo "fusellm_real: OBJECTIVES: vocabulary map '${a#*+}' of '$a' is not one of fuse's --vmap choices ($VMAPS_OK)" >&2; exit 2 ;; esac ;; esac
done
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
# a fused arm's name: fused for MinCE (the run folders of the one-objective script), else fused-OBJ[-VMAP]
arm_name() { if [ "$1" = ce ]; then echo fused; else echo "fused-${1//+/-}"; fi; }
arm_opts() {  # fuse's options for an arm (none for ce: the MinCE command as before)
  local o=${1%%+*}
  [ "$o" = ce ] || echo "--objective $o"
  case "$1" in *+*) echo "--vmap ${1#*+}" ;; esac
}
fuse_run() {  # arm lr lambda seed
  local o=$W/runs/$(arm_name "$1")-lr$2-l$3-s$4
  done_run "$o" || { rm -rf "$o"; say "fused ($1) lr $2 lambda $3 seed $4"; "$F" fuse --target "$SMOL" --source "$SMOL" "$GEMMA" --data "$MIX" -k "$K" \
    --store-dir "$W/stores" $(arm_opts "$1") --lambda "$3" --lr "$2" --seed "$4" $T -o "$o" > "$W/logs/$(basename "$o").log" 2>&1; trim "$o"; }
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
declare -A LAM  # each fused arm's lambda, chosen alone with the same trials
for a in $OBJECTIVES; do
  best_l="" best=""
  for l in $LAMBDAS; do
    fuse_run "$a" "$best_lr" "$l" "$S1"
    v=$(val_bpb "$W/runs/$(arm_name "$a")-lr$best_lr-l$l-s$S1")
    say "  fused ($a) lr $best_lr lambda $l: val $v bits/byte"
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $v < $best else 1)"; then best=$v; best_l=$l; fi
  done
  LAM[$a]=$best_l
  say "chosen on val.txt: lr $best_lr, lambda $best_l ($a)"
done
best_l=${LAM[ce]}
for s in $SEEDS; do clm_run "$best_lr" "$s"; for a in $OBJECTIVES; do fuse_run "$a" "$best_lr" "${LAM[$a]}" "$s"; done; done
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
if [ "$FOLD" = 1 ] && ! done_run "$W/runs/folded"; then
  rm -rf "$W/runs/folded"; say "fold the fused model by 20% FFN, heal $HEAL_STEPS steps"
  "$F" fold --model "$FUSED" --data "$MIX" --budget 0.2 --scope ffn --ops ffn --seq "$SEQ" --max-tokens "$CAL_TOKENS" --probe-windows 2 $TH \
    --heal-steps "$HEAL_STEPS" -o "$W/runs/folded" -- $HEAL > "$W/logs/folded.log" 2>&1
  trim "$W/runs/folded"
fi
# the healed-original control: the fused model healed exactly as the fold heals (same steps, rate,
# seed, teacher), nothing folded (fold --heal-only), so folded - healed is what folding itself costs
if [ "$FOLD" = 1 ] && ! done_run "$W/runs/healed"; then
  rm -rf "$W/runs/healed"; say "heal the fused model (nothing folded) $HEAL_STEPS steps: the healed-original control"
  "$F" fold --model "$FUSED" --data "$MIX" --budget 0.2 --scope ffn --ops ffn --seq "$SEQ" --max-tokens "$CAL_TOKENS" --probe-windows 2 $TH \
    --heal-steps "$HEAL_STEPS" --heal-only -o "$W/runs/healed" -- $HEAL > "$W/logs/healed.log" 2>&1
  trim "$W/runs/healed"
fi
if [ "$FOLD" = 1 ] && ! done_run "$W/runs/pruned"; then
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
  for a in $OBJECTIVES; do ev "$(arm_name "$a")-s$s" "$W/runs/$(arm_name "$a")-lr$best_lr-l${LAM[$a]}-s$s"; done
done
if [ "$FOLD" = 1 ]; then ev healed "$W/runs/healed"; ev folded "$W/runs/folded"; ev pruned "$W/runs/pruned"; fi

# ---- results.json and the table
python3 - "$W" "$SIZE" "$SEQ" "$BATCH" "$STEPS" "$SEEDS" "$best_lr" "$best_l" "$LRS" "$LAMBDAS" "$HEAL_STEPS" "$K" "$MIX_BYTES" "$TEST_BYTES" "$(pwd)/bench" \
  "$(for a in $OBJECTIVES; do printf '%s=%s ' "$a" "${LAM[$a]}"; done)" <<'PY'
import json, statistics, sys, glob, os
W, size, seq, batch, steps, seeds, lr, lam, lrs, lams, heal, k, mix_bytes, test_bytes = sys.argv[1:15]
sys.path.insert(0, sys.argv[15])
from stats import paired
# the fused arms: (arm, model name, lambda); ce is MinCE, named fused as before
arms = [(a, "fused" if a == "ce" else "fused-" + a.replace("+", "-"), l) for a, l in (x.split("=") for x in sys.argv[16].split())]
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
                  "objectives": [a for a, _, _ in arms], "lambdas": {a: float(l) for a, _, l in arms},
                  "protocol": f"llama-perplexity, n_ctx {seq}"},
       "tuning_val_bpb": {"clm": {l: val(f"clm-lr{l}-s{seeds[0]}") for l in lrs.split()},
                          **{n: {m: val(f"{n}-lr{lr}-l{m}-s{seeds[0]}") for m in lams.split()} for _, n, _ in arms}},
       "models": {}, "stores": [json.loads(l) for l in open(f"{W}/stores.jsonl")]}
for m in [m for m in ["smollm2", "gemma3", "healed", "folded", "pruned"] if (m, "wiki") in bpb]:  # healed, folded, pruned: unless FOLD=0
    res["models"][m] = {d: {"mean": bpb[(m, d)], "sd": None, "n": 1} for d in doms}
    res["models"][m]["params"] = params[m]; res["models"][m]["ffn_params"] = ffn[m]
for m in ["clm"] + [n for _, n, _ in arms]:
    res["models"][m] = {d: agg(m, d) for d in doms}
    res["models"][m]["params"] = params[f"{m}-s{seeds[0]}"]; res["models"][m]["ffn_params"] = ffn[f"{m}-s{seeds[0]}"]
# fused - CLM-only, paired by seed (the same seed gives both the same batches), 95% t interval
def diff(a, b): return {d: paired(res["models"][a][d]["values"], res["models"][b][d]["values"]) for d in doms}
res["fused_minus_clm"] = diff("fused", "clm")
# every arm against CLM-only and (but MinCE itself) against MinCE, paired by seed the same way
res["arms"] = {a: {"model": n, "lambda": float(l), "minus_clm": diff(n, "clm"), **({"minus_mince": diff(n, "fused")} if a != "ce" else {})}
               for a, n, l in arms}
for s in res["stores"]:
    i = s["info"]
    s["positions_per_s"] = round(i["positions"] / s["extract_seconds"], 1) if s.get("extract_seconds") else None
json.dump(res, open(f"{W}/results.json", "w"), indent=1)
role = {"smollm2": "source and target before training: SmolLM2-135M-Instruct Q4_1", "gemma3": "source: Gemma-3-270M Q4_K_M",
        "clm": f"CLM-only continual training of SmolLM2 (lr {lr})", "fused": f"FuseLLM: SmolLM2 + Gemma-3 into SmolLM2 (lr {lr}, lambda {lam})",
        "healed": "fused, healed as the fold heals, nothing folded (control)",
        "folded": "fused, 20% of FFN folded + healed", "pruned": "fused, 20% of FFN magnitude-pruned + healed"}
what = {"uld": "ULD (sorted-probability L1) on the fused rows", "span": "span: chunk likelihoods (ALM)", "ce": "MinCE soft cross-entropy"}
for a, n, l in arms:
    if a != "ce": role[n] = what[a.split("+")[0]] + (f", --vmap {a.split('+')[1]}" if "+" in a else "") + f" (lr {lr}, lambda {l})"
L = [f"FuseLLM in miniature ({size} run): {steps} steps x {batch} x {seq} = {steps * batch * seq} training tokens per run, "
     f"seeds {' '.join(seeds)}; held-out bits per byte (llama.cpp perplexity protocol, n_ctx {seq}), first {test_bytes} bytes of each test file.", "",
     "| model | | params | wikitext-2 test | linux test |", "|---|---|---:|---:|---:|"]
for m in ["smollm2", "gemma3", "clm"] + [n for _, n, _ in arms] + [m for m in ["healed", "folded", "pruned"] if m in res["models"]]:
    r = res["models"][m]
    cell = lambda d: f"{r[d]['mean']:.4f} ± {r[d]['sd']:.4f}" if r[d]["n"] > 1 else f"{r[d]['mean']:.4f}"
    L.append(f"| {m} | {role[m]} | {r['params']:,} | {cell('wiki')} | {cell('linux')} |")
L.append("")
def line(a, b, label_b, p, d):
    if p: L.append(f"{a} − {label_b} on {d} (bits/byte, paired by seed, n {p['n']}): {p['mean']:+.4f}, 95% interval [{p['lo']:+.4f}, {p['hi']:+.4f}]; "
                   f"per seed: {a} {', '.join(f'{x:.4f}' for x in res['models'][a][d]['values'])}, {label_b} {', '.join(f'{x:.4f}' for x in res['models'][b][d]['values'])}")
for a, n, _ in arms:
    for d in doms:
        line(n, "clm", "CLM-only", res["arms"][a]["minus_clm"][d], d)
        if a != "ce": line(n, "fused", "MinCE", res["arms"][a]["minus_mince"][d], d)
if "healed" in res["models"] and "folded" in res["models"]:
    L.append("folding's own cost, folded − healed (seed 1, the same healing): " + ", ".join(
        f"{d} {res['models']['folded'][d]['mean'] - res['models']['healed'][d]['mean']:+.4f}" for d in doms) + " bits/byte")
L.append("")
for s in res["stores"]:
    i = s["info"]
    L.append(f"store {os.path.basename(i['path'])}: {i['positions']} positions, {i['bytes_per_position']:.2f} bytes/position, "
             f"extraction {s['positions_per_s'] or 'cached'} tokens/s")
L.append(f"hyper-parameters on the last 20% of wikitext-2 valid.txt (val bits/byte): {json.dumps(res['tuning_val_bpb'])}")
open(f"{W}/results.md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
