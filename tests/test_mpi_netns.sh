#!/bin/sh
# Open MPI across two hosts on one machine (issue 22): two network namespaces made here, joined
# by a veth pair with loopback-range addresses (127.0.99.1 and .2, no route out of them), Open
# MPI's TCP transport only (no shared memory between the ranks), its launcher reaching the second
# "host" through `ip netns exec` as its rsh agent. Over that real network path:
#   - mpirun -np 2 fusekit train equals one process with --grad-accum 2 (the loss at every logged
#     step within 1e-5 relative), and the gradients crossed the link (bytes counted on the veth);
#   - an extraction on the two ranks writes the one-process store byte for byte.
# Needs root (CAP_NET_ADMIN) and iproute2; without them it says so and is skipped (exit 0).
# The namespaces (and with them the veth pair) are removed on every exit.
#
# usage: sh tests/test_mpi_netns.sh BUILD/fusekit   (a build with -DFK_MPI=ON; make test-mpi runs it)
set -eu
F=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
command -v mpirun > /dev/null 2>&1 || { echo "test_mpi_netns: no mpirun (Debian: openmpi-bin)" >&2; exit 1; }
A=fk$$a B=fk$$b
if [ "$(id -u)" != 0 ] || ! command -v ip > /dev/null 2>&1 || ! ip netns add "$A" 2> /dev/null; then
    echo "test_mpi_netns: skipped (needs root and iproute2 to make network namespaces)"
    exit 0
fi
D=$(mktemp -d)
cleanup() { ip netns del "$A" 2> /dev/null || true; ip netns del "$B" 2> /dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
. "$(cd "$(dirname "$0")/.." && pwd)/tools/netns_pair.sh"
netns_pair "$A" "$B" "$D"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
NET="timeout 300 $(netns_mpirun "$A" "$D")"
awk 'BEGIN { for (i = 0; i < 1200; i++) printf "line %d: the cat sat on the mat, the dog ran to the %s.\n", i % 23, (i % 2 ? "door" : "tree") }' > "$D/text.txt"
ARGS="--data $D/text.txt --steps 30 --batch 4 --ctx 32 --d-model 32 --layers 2 --heads 2 --log-every 5 --eval-every 10 --precision fp32 --seed 7"
rx0=$(ip netns exec "$B" cat "/sys/class/net/${B}v/statistics/rx_bytes")
$NET "$F" train $ARGS -o "$D/r2" > "$D/r2.out" 2> "$D/r2.err" || { cat "$D/r2.err" >&2; exit 1; }
rx1=$(ip netns exec "$B" cat "/sys/class/net/${B}v/statistics/rx_bytes")
"$F" train $ARGS --grad-accum 2 -o "$D/r1" > "$D/r1.out" 2> "$D/r1.err" || { cat "$D/r1.err" >&2; exit 1; }
grep -q "data-parallel ranks: 2" "$D/r2.err" || { echo "test_mpi_netns: the run did not see 2 ranks" >&2; cat "$D/r2.err" >&2; exit 1; }
num() { grep -o "\"$1\":[-0-9.e+]*" "$2" | cut -d: -f2; }
num loss "$D/r1/metrics.jsonl" > "$D/l1"
num loss "$D/r2/metrics.jsonl" > "$D/l2"
[ "$(wc -l < "$D/l1")" -ge 6 ] && [ "$(wc -l < "$D/l1")" -eq "$(wc -l < "$D/l2")" ] || { echo "test_mpi_netns: metric lines differ in number" >&2; exit 1; }
paste "$D/l1" "$D/l2" | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) { print "test_mpi_netns: loss " $1 " (1 process) vs " $2 " (2 hosts)" > "/dev/stderr"; bad = 1 } } END { exit bad }'
# 30 all-reduces of the gradients (26,176 floats each way) must have crossed the link
crossed=$((rx1 - rx0))
[ "$crossed" -gt 2000000 ] || { echo "test_mpi_netns: only $crossed bytes crossed the veth" >&2; exit 1; }
"$F" extract --model "$D/r1" --data "$D/text.txt" --seq 32 -o "$D/one.fkd" > "$D/x1" 2>&1 || { cat "$D/x1" >&2; exit 1; }
$NET "$F" extract --model "$D/r1" --data "$D/text.txt" --seq 32 -o "$D/two.fkd" > "$D/x2" 2>&1 || { cat "$D/x2" >&2; exit 1; }
cmp "$D/one.fkd" "$D/two.fkd" || { echo "test_mpi_netns: the store extracted on two hosts differs from one process's" >&2; exit 1; }
echo "test_mpi_netns: two hosts (network namespaces, TCP over a veth, $crossed bytes across it) = 1 process with --grad-accum 2; extraction byte-identical"
