# Sourced by tests/test_mpi_netns.sh and bench/mpi_buckets_net.sh: two "hosts" on one machine.
# netns_pair A B DIR [RATE] makes network namespaces A and B joined by a veth pair with
# loopback-range addresses (127.0.99.1 in A, 127.0.99.2 in B; lo keeps 127.0.0.1/32 alone, so the
# range routes over the link, route_localnet letting loopback-range packets use a real interface),
# shapes each end's egress to RATE with a token bucket when given (`tc ... tbf`), and writes
# DIR/agent.sh, an rsh agent for Open MPI's launcher that runs "host command ..." inside that
# host's namespace. The caller has made namespace A (its check for root) and removes both.
netns_pair() {
    _a=$1 _b=$2 _d=$3 _rate=${4:-}
    ip netns add "$_b"
    ip link add "${_a}v" type veth peer name "${_b}v"
    ip link set "${_a}v" netns "$_a"
    ip link set "${_b}v" netns "$_b"
    for _n in "$_a" "$_b"; do
        _i=$([ "$_n" = "$_a" ] && echo 1 || echo 2)
        ip netns exec "$_n" sh -c "ip link set lo up && ip addr del 127.0.0.1/8 dev lo && ip addr add 127.0.0.1/32 dev lo &&
            sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.${_n}v.route_localnet=1 &&
            ip addr add 127.0.99.$_i/24 dev ${_n}v && ip link set ${_n}v up"
        if [ -n "$_rate" ]; then ip netns exec "$_n" tc qdisc add dev "${_n}v" root tbf rate "$_rate" burst 1mb latency 400ms; fi
    done
    cat > "$_d/agent.sh" << AGENT
#!/bin/sh
h=\$1; shift
case "\$h" in 127.0.99.2) exec ip netns exec $_b sh -c "\$*" ;; *) exec ip netns exec $_a sh -c "\$*" ;; esac
AGENT
    chmod +x "$_d/agent.sh"
}
# The mpirun prefix for one rank on each host, Open MPI's TCP transport alone (no shared memory).
netns_mpirun() {
    echo "ip netns exec $1 mpirun -np 2 --host 127.0.99.1,127.0.99.2 --mca plm_rsh_agent $2/agent.sh --mca btl tcp,self --mca btl_tcp_if_include 127.0.99.0/24 --mca oob_tcp_if_include 127.0.99.0/24"
}
