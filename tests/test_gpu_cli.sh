#!/bin/sh
# fusekit's verbs on the CUDA engine, end to end, against the same runs on the CPU: train and its
# held-out loss, a kill -9 mid-run resumed on the GPU, a SIGINT's checkpoint, a GPU checkpoint
# resumed on the CPU, eval, fuse, and extract (the stores compared with fk_store_diff, also against a CPU
# extraction with bf16 products; the test asserts the same top-1 id at >= 99% of positions, the
# figures printed say the rest). Run by tools/gpu_check.sh on a machine with a GPU; exits 77
# (skipped) when the binary has no CUDA engine or no GPU answers.
#   sh tests/test_gpu_cli.sh FUSEKIT FK_STORE_DIFF
set -u
G=${GDEV:-cuda}  # GDEV=cpu checks this script's own logic on a machine without a GPU
FK=${1:-build-cuda/fusekit}
DIFF=${2:-build-cuda/fk_store_diff}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cat README.md docs/*.md > "$D/data.txt"
SHAPE="--arch llama --d-model 128 --layers 2 --heads 4 --kv-heads 2 --ctx 128 --batch 8 --seed 3 --eval-tokens 8192"
if ! "$FK" train --data "$D/data.txt" $SHAPE --steps 1 --device $G -o "$D/probe" > "$D/probe.log" 2>&1; then
  if grep -q -e "without the CUDA engine" -e "no CUDA device" "$D/probe.log"; then echo "SKIP: $(tail -1 "$D/probe.log")"; exit 77; fi
  cat "$D/probe.log"; fail "train --device $G (probe)"
fi
last_val() { grep '"val_loss"' "$1/metrics.jsonl" | tail -1 | sed 's/.*"val_loss":\([0-9.e+-]*\).*/\1/'; }

# 1. the same run on each device: held-out loss within 2%
for dev in cpu cuda; do
  dv=$dev; [ $dev = cuda ] && dv=$G
  "$FK" train --data "$D/data.txt" $SHAPE --steps 150 --save-every 50 --device $dv -o "$D/t_$dev" > "$D/t_$dev.log" 2>&1 || { cat "$D/t_$dev.log"; fail "train --device $dev"; }
done
vc=$(last_val "$D/t_cpu"); vg=$(last_val "$D/t_cuda")
echo "train 150 steps: held-out loss cpu $vc cuda $vg"
awk -v a="$vc" -v b="$vg" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.02 * a && b < 4.0) }' || fail "held-out losses differ: $vc vs $vg"
grep '"tokens_per_s"' "$D/t_cuda/metrics.jsonl" | tail -1

# 2. kill -9 mid-run, resumed on the GPU: finishes, and its held-out loss is the uninterrupted run's
"$FK" train --data "$D/data.txt" $SHAPE --steps 150 --save-every 10 --device $G -o "$D/k" > "$D/k.log" 2>&1 &
pid=$!
i=0
while [ ! -d "$D/k/checkpoint-50" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
[ -f "$D/k/model.safetensors" ] && fail "a killed run left a final model"
"$FK" train --data "$D/data.txt" $SHAPE --steps 150 --save-every 10 --device $G -o "$D/k" --resume > "$D/k2.log" 2>&1 || { cat "$D/k2.log"; fail "resume on the GPU"; }
vk=$(last_val "$D/k")
echo "killed at >= step 50 and resumed: held-out loss $vk (uninterrupted $vg)"
awk -v a="$vk" -v b="$vg" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.01 * b) }' || fail "resumed run's loss $vk vs $vg"

# 3. SIGINT: the step finishes, a checkpoint is written, the run exits; resumed on the CPU
"$FK" train --data "$D/data.txt" $SHAPE --steps 100000 --device $G -o "$D/s" > "$D/s.log" 2>&1 &
pid=$!
sleep 3
kill -INT $pid; wait $pid; rc=$?
ls -d "$D"/s/checkpoint-* > /dev/null 2>&1 || { cat "$D/s.log"; fail "SIGINT left no checkpoint (rc $rc)"; }
ck=$(ls -d "$D"/s/checkpoint-* | sort -t- -k2 -n | tail -1)
n=${ck##*-}
"$FK" train --data "$D/data.txt" $SHAPE --steps $((n + 5)) --device cpu -o "$D/s" --resume-from "$ck" > "$D/s2.log" 2>&1 || { cat "$D/s2.log"; fail "a GPU checkpoint resumed on the CPU"; }
echo "SIGINT at step $n (rc $rc), resumed on the CPU to step $((n + 5))"

# 4. eval on each device
for dev in cpu cuda; do
  dv=$dev; [ $dev = cuda ] && dv=$G
  "$FK" eval --model "$D/t_cpu" --data "$D/data.txt" --seq 128 --batch 8 --max-tokens 20000 --device $dv > "$D/e_$dev.json" 2> "$D/e_$dev.err" || { cat "$D/e_$dev.err"; fail "eval --device $dev"; }
done
lc=$(sed 's/.*"loss":\([0-9.e+-]*\).*/\1/' "$D/e_cpu.json"); lg=$(sed 's/.*"loss":\([0-9.e+-]*\).*/\1/' "$D/e_cuda.json")
echo "eval: loss cpu $lc cuda $lg"
awk -v a="$lc" -v b="$lg" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.005 * a) }' || fail "eval losses differ"

# 5. fuse on each device (extraction, alignment-free same-tokenizer teacher, fused training): the
# held-out loss within 2%
for dev in cpu cuda; do
  dv=$dev; [ $dev = cuda ] && dv=$G
  "$FK" fuse --target "$D/t_cpu" --source "$D/t_cpu" --data "$D/data.txt" --steps 60 --batch 8 --seq 128 --eval-every 0 \
      --eval-tokens 8192 --seed 3 --device $dv -o "$D/f_$dev" > "$D/f_$dev.log" 2>&1 || { cat "$D/f_$dev.log"; fail "fuse --device $dev"; }
done
fc=$(last_val "$D/f_cpu"); fg=$(last_val "$D/f_cuda")
echo "fuse 60 steps: held-out loss cpu $fc cuda $fg"
awk -v a="$fc" -v b="$fg" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.02 * a) }' || fail "fused held-out losses differ: $fc vs $fg"
grep -q '"clm_loss":[0-9]' "$D/f_cuda/metrics.jsonl" || fail "fuse --device cuda logged no CLM part"

# 6. extract on each device: the same top-k ids
for dev in cpu cuda; do
  dv=$dev; [ $dev = cuda ] && dv=$G
  "$FK" extract --model "$D/t_cpu" --data "$D/data.txt" --seq 127 --batch 8 --device $dv -o "$D/x_$dev.fkd" > "$D/x_$dev.log" 2>&1 || { cat "$D/x_$dev.log"; fail "extract --device $dev"; }
done
"$FK" extract --model "$D/t_cpu" --data "$D/data.txt" --seq 127 --batch 8 --precision bf16 -o "$D/x_cpubf16.fkd" > /dev/null 2>&1 || fail "extract --precision bf16"
"$DIFF" "$D/x_cpu.fkd" "$D/x_cuda.fkd" | tee "$D/diff.json"
"$DIFF" "$D/x_cpubf16.fkd" "$D/x_cuda.fkd"
"$DIFF" "$D/x_cpu.fkd" "$D/x_cpubf16.fkd"
sed 's/.*"top1_agree":\([0-9.]*\).*/\1/' "$D/diff.json" | awk '{ exit !($1 >= 0.99) }' || fail "extraction top-1 ids agree on less than 99% of positions"
echo "PASS"
