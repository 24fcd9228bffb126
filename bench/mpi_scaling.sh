#!/bin/sh
# Data-parallel scaling under Open MPI (issue 22): measured on this machine, then modelled for
# larger runs.
#
# Measured: `fusekit train` of two shapes (byte vocabulary: the text needs no tokenizer) on 1 and 2 ranks (one thread each, no --oversubscribe:
# one rank per core), the same per-rank micro-batch, so 2 ranks train twice the tokens per step;
# training tokens/s from the last metrics line, and the scaling efficiency
# E = tokens/s(2 ranks) / (2 x tokens/s(1 rank)); the same with --zero1; and one process with two
# threads (OMP_NUM_THREADS=2), the alternative to two ranks on this machine (speedup_vs_2threads).
# Bytes communicated per rank and step, by the ring all-reduce's count (what each rank sends):
# 2 (R-1)/R x 4P, and with --zero1 another (R-1)/R x 4P (tests/test_mpi_netns.sh counts the bytes
# crossing a real veth). Extraction: `fusekit extract` of each shape's model (S over the whole text,
# M-llama over its first 256 KB) on 1 and 2 ranks (one thread each) and one process with two
# threads, positions/s from wall-clock time (start-up included), the 2-rank store checked equal.
#
# Modelled (no network here): the step time of R ranks is the one-rank compute time t1 plus the
# gradient all-reduce, not overlapped with the backward (fusekit reduces after it), as a ring
# all-reduce: 2 (R-1)/R x 4P bytes / B + 2 (R-1) x a, with P parameters, B the link bandwidth
# (25 Gb/s = 3.125 GB/s) and a the per-message latency (5 us); --zero1 adds the exchange of the
# updated weights, (R-1)/R x 4P / B + (R-1) x a. E(R) = t1 / (t1 + communication). t1 comes from
# the one-rank tokens/s measured here (or given: TPS_* below) and the per-rank tokens per step.
#
# (--bind-to none: Open MPI would bind a lone process to one core, and its two threads would share it.)
# usage: sh bench/mpi_scaling.sh [BUILD_MPI] [WORK]    (BUILD_MPI: a -DFK_MPI=ON build, make test-mpi makes build-mpi)
# Prints JSON lines: {"bench":"mpi_scaling",...} measured, {"bench":"mpi_model",...} modelled.
set -eu
BUILD=${1:-build-mpi}
W=${2:-/tmp/fk_mpi_scaling}
F=$(cd "$BUILD" && pwd)/fusekit
[ -x "$F" ] || { echo "mpi_scaling: no $F (make test-mpi builds build-mpi)" >&2; exit 1; }
command -v mpirun > /dev/null || { echo "mpi_scaling: no mpirun (Debian: openmpi-bin)" >&2; exit 1; }
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$W"
C=$(cd "$(dirname "$0")/.." && pwd)/../shared/data/corpora/wikitext2/valid.txt
if [ -f "$C" ]; then cp "$C" "$W/text.txt"
else awk 'BEGIN { for (i = 0; i < 40000; i++) printf "line %d: the cat sat on the mat, the dog ran to the %s.\n", i % 97, (i % 2 ? "door" : "tree") }' > "$W/text.txt"; fi
STEPS=${STEPS:-12}
# name | shape options | micro-batch
SHAPES="S|--arch gpt2 --d-model 256 --layers 4 --heads 4 --ctx 256|8
M-llama|--arch llama --d-model 512 --layers 8 --heads 8 --kv-heads 8 --ffn 1376 --ctx 512|2"
tps() { grep -o '"tokens_per_s":[0-9.e+]*' "$1/metrics.jsonl" | tail -1 | cut -d: -f2; }
params() { grep -o 'parameters: [0-9]*' "$1" | head -1 | cut -d' ' -f2; }
echo "$SHAPES" | while IFS='|' read -r name shape mb; do
    for run in "1 " "2 " "2 --zero1" "t2 "; do
        set -- $run
        np=$1; shift
        o="$W/$name-np$np${1:-}"
        rm -rf "$o"
        th=1
        if [ "$np" = t2 ]; then th=2; np=1; fi  # one process, two threads
        OMP_NUM_THREADS=$th mpirun --bind-to none -x OMP_NUM_THREADS -np "$np" "$F" train --data "$W/text.txt" $shape --batch "$mb" --steps "$STEPS" --log-every "$STEPS" --eval-every 0 --precision fp32 --seed 1 ${1:-} -o "$o" < /dev/null > "$o.out" 2> "$o.err" ||
            { cat "$o.err" >&2; exit 1; }
        [ $th = 2 ] && np=t2
        echo "$name $np ${1:-none} $(tps "$o") $(params "$o.err")"
    done
done > "$W/measured.txt"
awk '{ t[$1 " " $2 " " $3] = $4; p[$1] = $5 }
     END { for (k in t) { split(k, a, " "); if (a[2] == "t2") continue; base = t[a[1] " 1 none"]; two = t[a[1] " t2 none"]; P = p[a[1]];
             bytes = a[2] > 1 ? 2 * (a[2] - 1) / a[2] * 4 * P + (a[3] == "--zero1" ? (a[2] - 1) / a[2] * 4 * P : 0) : 0;
             printf "{\"bench\":\"mpi_scaling\",\"verb\":\"train\",\"shape\":\"%s\",\"params\":%d,\"ranks\":%d,\"zero1\":%s,\"tokens_per_s\":%s,\"efficiency\":%.3f,\"threads_per_rank\":1,\"tokens_per_s_1proc_2threads\":%s,\"speedup_vs_2threads\":%.3f,\"bytes_per_rank_step\":%d}\n",
                    a[1], P, a[2], a[3] == "--zero1" ? "true" : "false", t[k], t[k] / (a[2] * base), two, t[k] / two, bytes } }' "$W/measured.txt" | sort
# extraction with each shape's model (trained above on one rank): S over the whole text, M-llama over
# its first 256 KB; on 1 and 2 ranks and one process with 2 threads
head -c 262144 "$W/text.txt" > "$W/text256k.txt"
for shape in "S text.txt 255" "M-llama text256k.txt 511"; do
    set -- $shape
    for run in "1 1" "2 1" "1 2"; do
        np=${run% *} th=${run#* }
        x="$W/x-$1-$np$th"
        rm -f "$x.fkd"
        t0=$(date +%s.%N)
        OMP_NUM_THREADS=$th mpirun --bind-to none -x OMP_NUM_THREADS -np "$np" "$F" extract --model "$W/$1-np1" --data "$W/$2" --seq "$3" --batch 4 \
            --precision fp32 -o "$x.fkd" < /dev/null > /dev/null 2> "$x.err" || { cat "$x.err" >&2; exit 1; }
        t1=$(date +%s.%N)
        echo "$1 $np $th $(echo "$t1 - $t0" | bc) $(wc -c < "$W/$2")"
    done
    cmp -s "$W/x-$1-11.fkd" "$W/x-$1-21.fkd" || { echo "mpi_scaling: the $1 store extracted on 2 ranks differs" >&2; exit 1; }
done > "$W/extract.txt"
awk '{ s[$1 " " $2 " " $3] = $4; n[$1] = $5 } END { for (k in s) { split(k, a, " ");
    printf "{\"bench\":\"mpi_scaling\",\"verb\":\"extract\",\"shape\":\"%s\",\"ranks\":%d,\"threads_per_rank\":%d,\"positions\":%d,\"seconds\":%.2f,\"positions_per_s\":%.0f,\"speedup_vs_1rank\":%.3f}\n",
           a[1], a[2], a[3], n[a[1]], s[k], n[a[1]] / s[k], s[a[1] " 1 1"] / s[k] } }' "$W/extract.txt" | sort
# the model: one-rank tokens/s per shape (measured above for S and M-llama, fp32, one thread;
# SmolLM2-135M and the 1.1B Llama from README's runs on this machine: 20 and 26 tokens/s) and
# the per-rank tokens per step
S1=$(awk '$1 == "S" && $2 == 1 { print $4 }' "$W/measured.txt")
M1=$(awk '$1 == "M-llama" && $2 == 1 { print $4 }' "$W/measured.txt")
SP=$(awk '$1 == "S" { print $5; exit }' "$W/measured.txt")
MP=$(awk '$1 == "M-llama" { print $5; exit }' "$W/measured.txt")
printf '%s\n' "S $SP $S1 2048" "M-llama $MP $M1 1024" "SmolLM2-135M 134515008 ${TPS_135M:-20} 512" "Llama-1.1B 1170302976 ${TPS_1B:-26} 2048" |
awk -v B="${BW_GBPS:-25}" -v A="${LAT_US:-5}" '{
    bw = B / 8 * 1e9; a = A * 1e-6; P = $2; t1 = $4 / $3
    for (R = 8; R <= 64; R *= 2) {
        ar = 2 * (R - 1) / R * 4 * P / bw + 2 * (R - 1) * a
        z = (R - 1) / R * 4 * P / bw + (R - 1) * a
        printf "{\"bench\":\"mpi_model\",\"shape\":\"%s\",\"params\":%d,\"tokens_per_s_one_rank\":%s,\"tokens_per_rank_step\":%d,\"step_compute_s\":%.4g,\"ranks\":%d,\"link_gbps\":%s,\"allreduce_s\":%.4g,\"efficiency\":%.3f,\"efficiency_zero1\":%.3f}\n",
               $1, P, $3, $4, t1, R, B, ar, t1 / (t1 + ar), t1 / (t1 + ar + z)
    } }'
