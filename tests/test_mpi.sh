#!/bin/sh
# Data-parallel training under Open MPI (issue 22, first part): `mpirun -np 2 fusekit train` with
# --grad-accum 1 against one process with --grad-accum 2 on the same data, seed and schedule —
# the same micro-batches summed in another order — must give the same loss at every logged step
# and the same held-out bits per byte to 1e-5 relative (float summation order; bench runs show
# them equal to all printed digits); rank 0 alone writes metrics.jsonl (one line per logged step)
# and the model; an error on the ranks (a missing data file) ends the run with an error, not a hang;
# --zero1 changes no byte of the model or the optimizer file;
# eval (windows, --kl-to, llama-perplexity) on 2 ranks prints once the figures of one process;
# extract on 2 and 3 ranks, and a .partial resumed on 2, write the one-process store byte for byte;
# analyze on 2 ranks prints the same figures and fold writes the same model; fuse on 2 ranks
# writes the same stores and trains as one process with --grad-accum 2, and so does heal;
# ranks started with other options or another binary are refused at the start; a rank killed
# mid-run ends the run with an error naming it, leaves no model under the final name, and
# --resume finishes the run on 3 ranks, then continues it in one process.
#
# usage: sh tests/test_mpi.sh BUILD/fusekit   (a build with -DFK_MPI=ON; make test-mpi runs it)
set -eu
F=$1
command -v mpirun > /dev/null 2>&1 || { echo "test_mpi: no mpirun (Debian: openmpi-bin)" >&2; exit 1; }
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="timeout 300 mpirun -np 2 --oversubscribe"
awk 'BEGIN { for (i = 0; i < 1200; i++) printf "line %d: the cat sat on the mat, the dog ran to the %s.\n", i % 23, (i % 2 ? "door" : "tree") }' > "$D/text.txt"
ARGS="--data $D/text.txt --steps 30 --batch 4 --ctx 32 --d-model 32 --layers 2 --heads 2 --log-every 5 --eval-every 10 --precision fp32 --seed 7"
$MPIRUN "$F" train $ARGS -o "$D/r2" > "$D/r2.out" 2> "$D/r2.err" || { cat "$D/r2.err" >&2; exit 1; }
"$F" train $ARGS --grad-accum 2 -o "$D/r1" > "$D/r1.out" 2> "$D/r1.err" || { cat "$D/r1.err" >&2; exit 1; }
grep -q "data-parallel ranks: 2" "$D/r2.err" || { echo "test_mpi: the run did not see 2 ranks" >&2; cat "$D/r2.err" >&2; exit 1; }
# every logged step's loss, side by side
num() { grep -o "\"$1\":[-0-9.e+]*" "$2" | cut -d: -f2; }
num loss "$D/r1/metrics.jsonl" > "$D/l1"
num loss "$D/r2/metrics.jsonl" > "$D/l2"
n1=$(wc -l < "$D/l1"); n2=$(wc -l < "$D/l2")
[ "$n1" -ge 6 ] && [ "$n2" -eq "$n1" ] || { echo "test_mpi: $n1 and $n2 metric lines, the same number expected (rank 0 alone writes)" >&2; exit 1; }
paste "$D/l1" "$D/l2" | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) { print "test_mpi: loss " $1 " (1 process) vs " $2 " (2 ranks)" > "/dev/stderr"; bad = 1 } } END { exit bad }'
b1=$("$F" eval --model "$D/r1" --data "$D/text.txt" | grep -o '"bpb":[-0-9.e+]*' | cut -d: -f2)
b2=$("$F" eval --model "$D/r2" --data "$D/text.txt" | grep -o '"bpb":[-0-9.e+]*' | cut -d: -f2)
awk -v a="$b1" -v b="$b2" 'BEGIN { d = a - b; if (d < 0) d = -d; if (d > 1e-5 * a) { print "test_mpi: bits per byte " a " vs " b > "/dev/stderr"; exit 1 } }'
# ZeRO-1 (--zero1: each rank the moments of its half of the weights, the updated halves
# exchanged, checkpoints streamed to rank 0): the same model and the same optimizer file byte for
# byte as without it, bf16 moments too; its checkpoint resumed on 3 ranks with --zero1
Z="--data $D/text.txt --steps 20 --batch 4 --ctx 32 --d-model 32 --layers 2 --heads 2 --log-every 5 --eval-every 0 --save-every 10 --precision fp32 --seed 7"
for ms in f32 bf16; do
    $MPIRUN "$F" train $Z --optim-state $ms -o "$D/z0$ms" > /dev/null 2> "$D/z0.err" || { cat "$D/z0.err" >&2; exit 1; }
    $MPIRUN "$F" train $Z --optim-state $ms --zero1 -o "$D/z1$ms" > /dev/null 2> "$D/z1.err" || { cat "$D/z1.err" >&2; exit 1; }
    for f in model.safetensors checkpoint-20/optimizer.safetensors; do
        cmp "$D/z0$ms/$f" "$D/z1$ms/$f" || { echo "test_mpi: --zero1 ($ms moments) changed $f" >&2; exit 1; }
    done
done
# the per-layer gradient buckets (overlapped with the backward) against one reduction after it
FUSEKIT_MPI_BUCKETS=0 timeout 300 mpirun --oversubscribe -np 2 -x FUSEKIT_MPI_BUCKETS "$F" train $Z -o "$D/nob" > /dev/null 2> "$D/nob.err" ||
    { cat "$D/nob.err" >&2; exit 1; }
cmp "$D/z0f32/model.safetensors" "$D/nob/model.safetensors" || { echo "test_mpi: the gradient buckets changed the model" >&2; exit 1; }
rm -rf "$D/z1f32/checkpoint-20" "$D/z1f32/model.safetensors"
timeout 300 mpirun --oversubscribe -np 3 "$F" train $Z --zero1 --resume -o "$D/z1f32" > /dev/null 2> "$D/z2.err" || { cat "$D/z2.err" >&2; exit 1; }
[ -f "$D/z1f32/model.safetensors" ] || { echo "test_mpi: a --zero1 checkpoint did not resume on 3 ranks" >&2; exit 1; }
# evaluation on 2 ranks (each a contiguous half of the windows or chunks, sums reduced; an ensemble's
# members each run that way, each position's probability from the rank that computed it): the same
# figures as one process to every printed digit (a double sum in another order), printed once
fig() { grep -o '"\(tokens\|bytes\|loss\|ppl\|bpb\|kl\)":[-0-9.e+]*' "$1" | tr '\n' ' '; }
for proto in "" "--kl-to $D/r1" "--protocol llama-perplexity" "--ensemble $D/r1"; do
    "$F" eval --model "$D/r2" --data "$D/text.txt" --seq 32 $proto > "$D/e1" 2> "$D/e1.err" || { cat "$D/e1.err" >&2; exit 1; }
    $MPIRUN "$F" eval --model "$D/r2" --data "$D/text.txt" --seq 32 $proto > "$D/e2" 2> "$D/e2.err" || { cat "$D/e2.err" >&2; exit 1; }
    [ "$(wc -l < "$D/e2")" -eq 1 ] || { echo "test_mpi: eval $proto printed $(wc -l < "$D/e2") lines on 2 ranks, 1 expected" >&2; exit 1; }
    [ -n "$(fig "$D/e1")" ] && [ "$(fig "$D/e1")" = "$(fig "$D/e2")" ] ||
        { echo "test_mpi: eval $proto: 1 process $(fig "$D/e1"), 2 ranks $(fig "$D/e2")" >&2; exit 1; }
done
# extraction on 2 and 3 ranks (rank r computes the r-th batch of each round, rank 0 writes every
# row in order): the one-process store byte for byte; a .partial (the store cut in the middle of
# a record) resumed on 2 ranks gives it too
"$F" extract --model "$D/r2" --data "$D/text.txt" --seq 32 -o "$D/one.fkd" > "$D/x1" 2>&1 || { cat "$D/x1" >&2; exit 1; }
for np in 2 3; do
    timeout 300 mpirun --oversubscribe -np $np "$F" extract --model "$D/r2" --data "$D/text.txt" --seq 32 -o "$D/n$np.fkd" > "$D/x$np" 2>&1 ||
        { cat "$D/x$np" >&2; exit 1; }
    cmp "$D/one.fkd" "$D/n$np.fkd" || { echo "test_mpi: the store extracted on $np ranks differs from one process's" >&2; exit 1; }
done
cp "$D/one.fkd" "$D/res.fkd.partial"
truncate -s $(( $(wc -c < "$D/one.fkd") / 2 )) "$D/res.fkd.partial"
$MPIRUN "$F" extract --model "$D/r2" --data "$D/text.txt" --seq 32 -o "$D/res.fkd" > "$D/xr" 2>&1 || { cat "$D/xr" >&2; exit 1; }
cmp "$D/one.fkd" "$D/res.fkd" || { echo "test_mpi: a .partial resumed on 2 ranks differs from one process's store" >&2; exit 1; }
# analyze and fold on 2 ranks (each a share of the statistics' batches, the sums reduced): the
# same per-layer figures as one process, and the same folded model (its plan and least-squares
# refits are read from the reduced sums); rank 0 alone writes and prints
"$F" train --data "$D/text.txt" --steps 60 --batch 4 --ctx 32 --d-model 64 --layers 4 --heads 2 --eval-every 0 --precision fp32 -o "$D/m4" > /dev/null 2>&1
"$F" analyze --model "$D/m4" --data "$D/text.txt" --seq 32 -o "$D/an1" > "$D/an1.out" 2> "$D/an1.err" || { cat "$D/an1.err" >&2; exit 1; }
$MPIRUN "$F" analyze --model "$D/m4" --data "$D/text.txt" --seq 32 -o "$D/an2" > "$D/an2.out" 2> "$D/an2.err" || { cat "$D/an2.err" >&2; exit 1; }
cmp "$D/an1.out" "$D/an2.out" || { echo "test_mpi: analyze's per-layer lines differ on 2 ranks" >&2; exit 1; }
[ -f "$D/an2/stats.safetensors" ] && [ "$(grep -c analysed "$D/an2.err")" -eq 1 ] || { echo "test_mpi: analyze on 2 ranks: no stats, or not one summary line" >&2; exit 1; }
"$F" fold --model "$D/m4" --data "$D/text.txt" --budget 0.2 --seq 32 -o "$D/f1" > "$D/f1.out" 2> "$D/f1.err" || { cat "$D/f1.err" >&2; exit 1; }
$MPIRUN "$F" fold --model "$D/m4" --data "$D/text.txt" --budget 0.2 --seq 32 -o "$D/f2" > "$D/f2.out" 2> "$D/f2.err" || { cat "$D/f2.err" >&2; exit 1; }
# (byte-identical here; the statistics' sums are added in another order, so on another CPU a
# refitted weight may round the other way: then the two models must still evaluate alike)
if ! cmp -s "$D/f1/model.safetensors" "$D/f2/model.safetensors"; then
    e1=$("$F" eval --model "$D/f1" --data "$D/text.txt" --seq 32 | grep -o '"bpb":[-0-9.e+]*')
    e2=$("$F" eval --model "$D/f2" --data "$D/text.txt" --seq 32 | grep -o '"bpb":[-0-9.e+]*')
    [ -n "$e1" ] && [ "$e1" = "$e2" ] || { echo "test_mpi: the model folded on 2 ranks evaluates $e2, one process's $e1" >&2; exit 1; }
fi
[ "$(grep -c '^folded model' "$D/f2.err")" -eq 1 ] || { echo "test_mpi: fold on 2 ranks did not print once" >&2; cat "$D/f2.err" >&2; exit 1; }
# fuse on 2 ranks (extraction shared out, fused training data-parallel) against one process with
# --grad-accum 2: the same stores byte for byte and the same loss at every logged step
FU="--target $D/r2 --source $D/m4 --data $D/text.txt --steps 20 --batch 4 --seq 32 --log-every 5 --eval-every 10 --precision fp32 --seed 3"
"$F" fuse $FU --grad-accum 2 -o "$D/fu1" > /dev/null 2> "$D/fu1.err" || { cat "$D/fu1.err" >&2; exit 1; }
$MPIRUN "$F" fuse $FU -o "$D/fu2" > /dev/null 2> "$D/fu2.err" || { cat "$D/fu2.err" >&2; exit 1; }
for st in "$D"/fu1/stores/*.fkd; do
    cmp "$st" "$D/fu2/stores/$(basename "$st")" || { echo "test_mpi: fuse's store $(basename "$st") differs on 2 ranks" >&2; exit 1; }
done
num loss "$D/fu1/metrics.jsonl" > "$D/fl1"
num loss "$D/fu2/metrics.jsonl" > "$D/fl2"
[ "$(wc -l < "$D/fl1")" -ge 4 ] && [ "$(wc -l < "$D/fl1")" -eq "$(wc -l < "$D/fl2")" ] || { echo "test_mpi: fuse's metric lines differ in number" >&2; exit 1; }
paste "$D/fl1" "$D/fl2" | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) { print "test_mpi: fuse loss " $1 " (1 process) vs " $2 " (2 ranks)" > "/dev/stderr"; bad = 1 } } END { exit bad }'
# heal on 2 ranks (the folded model distilled from the model before folding) likewise
HE="--teacher $D/m4 --model $D/f2 --data $D/text.txt --steps 10 --batch 4 --seq 32 --log-every 5 --eval-every 0 --precision fp32 --seed 3"
"$F" heal $HE --grad-accum 2 -o "$D/he1" > /dev/null 2> "$D/he1.err" || { cat "$D/he1.err" >&2; exit 1; }
$MPIRUN "$F" heal $HE -o "$D/he2" > /dev/null 2> "$D/he2.err" || { cat "$D/he2.err" >&2; exit 1; }
num loss "$D/he1/metrics.jsonl" > "$D/hl1"
num loss "$D/he2/metrics.jsonl" > "$D/hl2"
[ "$(wc -l < "$D/hl1")" -ge 2 ] && [ "$(wc -l < "$D/hl1")" -eq "$(wc -l < "$D/hl2")" ] || { echo "test_mpi: heal's metric lines differ in number" >&2; exit 1; }
paste "$D/hl1" "$D/hl2" | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) { print "test_mpi: heal loss " $1 " (1 process) vs " $2 " (2 ranks)" > "/dev/stderr"; bad = 1 } } END { exit bad }'
# fold --rounds 2 --heal-steps 20 on 2 ranks (each round's statistics shared out, rank 0 writing its
# folded and healed models, the healing data-parallel) against one process healing with --grad-accum 2:
# round 1's healing logs the same losses (within 1e-5); round 2 folds a model healed on 2 ranks, whose
# weights differ from the one process's in the last bits, so its losses agree within 1e-3
FR="--model $D/m4 --data $D/text.txt --budget 0.2 --seq 32 --rounds 2 --heal-steps 20"
FT="--batch 4 --seq 32 --log-every 5 --eval-every 0 --precision fp32 --seed 3"
"$F" fold $FR -o "$D/fr1" -- $FT --grad-accum 2 > /dev/null 2> "$D/fr1.err" || { cat "$D/fr1.err" >&2; exit 1; }
$MPIRUN "$F" fold $FR -o "$D/fr2" -- $FT > /dev/null 2> "$D/fr2.err" || { cat "$D/fr2.err" >&2; exit 1; }
[ "$(grep -c '^round ' "$D/fr2.err")" -eq 2 ] || { echo "test_mpi: fold --rounds 2 on 2 ranks did not report each round once" >&2; exit 1; }
for r in "round-1/healed 1e-5" ". 1e-3"; do
    set -- $r
    num loss "$D/fr1/$1/metrics.jsonl" > "$D/rl1"
    num loss "$D/fr2/$1/metrics.jsonl" > "$D/rl2"
    [ "$(wc -l < "$D/rl1")" -ge 2 ] && [ "$(wc -l < "$D/rl1")" -eq "$(wc -l < "$D/rl2")" ] || { echo "test_mpi: fold --rounds: metric lines of $1 differ in number" >&2; exit 1; }
    paste "$D/rl1" "$D/rl2" | awk -v tol="$2" '{ d = $1 - $2; if (d < 0) d = -d; if (d > tol * $1) { print "test_mpi: fold --rounds loss " $1 " (1 process) vs " $2 " (2 ranks)" > "/dev/stderr"; bad = 1 } } END { exit bad }'
done
# an error on the ranks ends the run (exit status non-zero, the message printed), within the timeout
if $MPIRUN "$F" train --data "$D/missing.txt" -o "$D/bad" --steps 2 > "$D/bad.out" 2> "$D/bad.err"; then
    echo "test_mpi: a run on a missing file succeeded" >&2; exit 1
fi
grep -q "missing.txt" "$D/bad.err" || { echo "test_mpi: no message naming the missing file" >&2; cat "$D/bad.err" >&2; exit 1; }
[ ! -e "$D/bad" ] || { echo "test_mpi: the failed run left $D/bad" >&2; exit 1; }
# ranks started unlike each other (MPMD launches): another option, another binary (the same
# program with one byte more); refused before any work, on every rank, naming the rank and how
MPI1="timeout 300 mpirun --oversubscribe -np 1"
if $MPI1 "$F" train $ARGS -o "$D/mm" : -np 1 "$F" train $ARGS --lr 2e-3 -o "$D/mm" > "$D/mm.out" 2> "$D/mm.err"; then
    echo "test_mpi: ranks with different options ran" >&2; exit 1
fi
grep -q "MPI rank 1 was started as 'fusekit train .*--lr 2e-3.*', rank 0 as 'fusekit train" "$D/mm.err" ||
    { echo "test_mpi: no message naming rank 1's other command line" >&2; cat "$D/mm.err" >&2; exit 1; }
cp "$F" "$D/fusekit2" && printf x >> "$D/fusekit2"
if $MPI1 "$F" train $ARGS -o "$D/mm" : -np 1 "$D/fusekit2" train $ARGS -o "$D/mm" > "$D/mm.out" 2> "$D/mm.err"; then
    echo "test_mpi: ranks running different binaries ran" >&2; exit 1
fi
grep -q "MPI rank 1 runs another fusekit binary than rank 0" "$D/mm.err" ||
    { echo "test_mpi: no message naming rank 1's other binary" >&2; cat "$D/mm.err" >&2; exit 1; }
[ ! -e "$D/mm" ] || { echo "test_mpi: a refused start left $D/mm" >&2; exit 1; }
# a rank killed mid-run: the run ends with an error naming the rank, not a hang; no model under the
# final name, only whole checkpoints; --resume on 2 ranks finishes it
LONG="--data $D/text.txt --steps 3000 --batch 4 --ctx 32 --d-model 32 --layers 2 --heads 2 --log-every 10 --eval-every 0 --save-every 10 --precision fp32 --seed 7"
$MPIRUN "$F" train $LONG -o "$D/k" > "$D/k.out" 2> "$D/k.err" &
mp=$!
i=0
while [ -z "$(ls -d "$D"/k/checkpoint-* 2> /dev/null)" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
victim=""
for p in $(pgrep -f -- "-o $D/k\$" || true); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=$p
done
[ -n "$victim" ] || { echo "test_mpi: rank 1 of the long run not found (a checkpoint after $i waits)" >&2; kill $mp; exit 1; }
kill -9 "$victim"
if wait $mp; then echo "test_mpi: the run survived a killed rank" >&2; exit 1; fi
grep -q "rank 1" "$D/k.err" || { echo "test_mpi: the killed rank is not named" >&2; cat "$D/k.err" >&2; exit 1; }
[ ! -e "$D/k/model.safetensors" ] || { echo "test_mpi: a killed run left a model under its final name" >&2; exit 1; }
# resumed on another number of ranks (3: the checkpoint holds the weights, moments and step, not
# the rank count), then once more in one process past the end
timeout 300 mpirun --oversubscribe -np 3 "$F" train $LONG --resume -o "$D/k" > "$D/k2.out" 2> "$D/k2.err" || { cat "$D/k2.err" >&2; exit 1; }
grep -q "resum" "$D/k2.err" || { echo "test_mpi: the second run did not say it resumed" >&2; cat "$D/k2.err" >&2; exit 1; }
[ -f "$D/k/model.safetensors" ] || { echo "test_mpi: the resumed run wrote no model" >&2; exit 1; }
grep -q '"step":3000' "$D/k/metrics.jsonl" || { echo "test_mpi: the resumed run did not reach step 3000" >&2; exit 1; }
"$F" train $(echo "$LONG" | sed 's/--steps 3000/--steps 3020/') --resume -o "$D/k" > "$D/k3.out" 2> "$D/k3.err" || { cat "$D/k3.err" >&2; exit 1; }
grep -q '"step":3020' "$D/k/metrics.jsonl" || { echo "test_mpi: the run resumed in one process did not reach step 3020" >&2; exit 1; }
echo "test_mpi: 2 ranks = 1 process with --grad-accum 2 (loss at $n1 logged steps within 1e-5; bpb $b2 vs $b1); --zero1 and the gradient buckets byte-identical, resumed on 3 ranks; eval, --kl-to, llama-perplexity and --ensemble equal on 2 ranks; stores extracted on 2 and 3 ranks and resumed on 2 byte-identical; analyze and fold equal on 2 ranks; fuse, heal and fold --rounds with healing on 2 ranks = 1 process with --grad-accum 2 (stores byte-identical); errors end all ranks; unlike ranks refused; a killed rank named, resumed on 3 ranks and then on 1"
