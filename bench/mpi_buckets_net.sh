#!/bin/sh
# The gradient buckets' gain over a real, slow network path (issue 22): two network namespaces
# joined by a veth pair (as tests/test_mpi_netns.sh makes them), each end's egress shaped by a token
# bucket to RATE (default 1gbit: `tc qdisc ... tbf`), Open MPI's TCP transport between them.
# `fusekit train` of the M-llama shape (25.6 M parameters: a 102 MB gradient all-reduce a step) on
# the two "hosts", one thread each, with the per-layer buckets (the default: each layer's gradients
# start reducing as soon as its backward is done) and without (FUSEKIT_MPI_BUCKETS=0: one reduction
# after the backward), alternated over ROUNDS rounds; prints one JSON line per run and one with the
# medians and their ratio. Needs root and iproute2 (tc); the namespaces are removed on every exit.
# MPI_EXTRA adds mpirun options (e.g. "--mca btl_tcp_progress_thread 1": Open MPI's TCP transport
# moves data only inside MPI calls unless its progress thread runs).
#   sh bench/mpi_buckets_net.sh [BUILD_MPI/fusekit] [RATE] [ROUNDS]
set -eu
F=$(cd "$(dirname "${1:-build-mpi/fusekit}")" && pwd)/$(basename "${1:-build-mpi/fusekit}")
RATE=${2:-1gbit}
ROUNDS=${3:-2}
STEPS=${STEPS:-8}
A=fkb$$a B=fkb$$b
[ "$(id -u)" = 0 ] && command -v tc > /dev/null && ip netns add "$A" || { echo "mpi_buckets_net: needs root, iproute2 and tc" >&2; exit 1; }
D=$(mktemp -d)
cleanup() { ip netns del "$A" 2> /dev/null || true; ip netns del "$B" 2> /dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
. "$(cd "$(dirname "$0")/.." && pwd)/tools/netns_pair.sh"
netns_pair "$A" "$B" "$D" "$RATE"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
NET="$(netns_mpirun "$A" "$D") -x FUSEKIT_MPI_BUCKETS -x OMP_NUM_THREADS ${MPI_EXTRA:-}"
C=$(cd "$(dirname "$0")/.." && pwd)/../shared/data/corpora/wikitext2/valid.txt
if [ -f "$C" ]; then cp "$C" "$D/text.txt"
else awk 'BEGIN { for (i = 0; i < 40000; i++) printf "line %d: the cat sat on the mat, the dog ran to the %s.\n", i % 97, (i % 2 ? "door" : "tree") }' > "$D/text.txt"; fi
SHAPE="--arch llama --d-model 512 --layers 8 --heads 8 --kv-heads 8 --ffn 1376 --ctx 512 --batch 2"
tps() { grep -o '"tokens_per_s":[0-9.e+]*' "$1/metrics.jsonl" | tail -1 | cut -d: -f2; }
for r in $(seq "$ROUNDS"); do
    for b in 1 0; do
        o="$D/b$b-r$r"
        rx0=$(ip netns exec "$B" cat "/sys/class/net/${B}v/statistics/rx_bytes")
        FUSEKIT_MPI_BUCKETS=$b $NET "$F" train --data "$D/text.txt" $SHAPE --steps "$STEPS" --log-every "$STEPS" --eval-every 0 \
            --precision fp32 --seed 1 -o "$o" < /dev/null > "$o.out" 2> "$o.err" || { cat "$o.err" >&2; exit 1; }
        rx1=$(ip netns exec "$B" cat "/sys/class/net/${B}v/statistics/rx_bytes")
        echo "{\"bench\":\"mpi_buckets_net\",\"rate\":\"$RATE\",\"mpi_extra\":\"${MPI_EXTRA:-}\",\"buckets\":$b,\"round\":$r,\"steps\":$STEPS,\"tokens_per_s\":$(tps "$o"),\"bytes_received_by_rank1\":$((rx1 - rx0))}"
    done
done | tee "$D/runs.jsonl"
awk -F'"tokens_per_s":' '{ split($2, a, ","); b = ($0 ~ /"buckets":1/); v[b, ++n[b]] = a[1] }
     function med(b,   i, j, t, m) { m = n[b]; for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[b, j] < v[b, i]) { t = v[b, i]; v[b, i] = v[b, j]; v[b, j] = t }
                                     return m % 2 ? v[b, (m + 1) / 2] : (v[b, m / 2] + v[b, m / 2 + 1]) / 2 }
     END { on = med(1); off = med(0); printf "{\"bench\":\"mpi_buckets_net\",\"rate\":\"'"$RATE"'\",\"median_tokens_per_s_buckets\":%.1f,\"median_tokens_per_s_one_reduction\":%.1f,\"gain\":%.3f}\n", on, off, on / off }' "$D/runs.jsonl"
