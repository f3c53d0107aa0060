#!/usr/bin/env bash
# Baseline for Archipel's thin-link federation figure: what Mosquitto's own bridge spends on
# the wire per message when it drains a backlog of QoS 1 messages of 60 bytes over TLS across
# a 9,600 bit/s link, counted as Archipel's is (tests/benches/federation.rs): by the veth
# device between two network namespaces, both directions, everything included.
#
# The same backlog as mosquitto-bridge.sh: broker B (namespace b) refuses the bridge's user
# until the subscriber on B is ready, so broker A (namespace a) queues for the bridge every
# message published on it; then B learns the user, reloads, and the bridge drains. The link is
# the one the Rust tests build (archipel_e2e::netns): a veth pair on 10.77.0.0/30, each end
# `tc qdisc ... tbf rate 9600bit burst 1600 latency 2000ms`, IPv6 off. TLS 1.3 with
# certificates both ways (a CA of this run's own), as Archipel's peers authenticate both ways.
# Publisher and subscriber talk to their brokers on each namespace's loopback, off the link.
#
# Settings beyond Mosquitto's defaults: max_queued_messages 0 (keep the whole backlog),
# restart_timeout 5 (a refused bridge retries with a full TLS handshake, which a 9,600 bit/s
# link should not carry every second), the credentials and the certificates.
#
# Usage (as root): deploy/bench/mosquitto-thin.sh [COUNT]   (default 2000; about 3 minutes)
set -euo pipefail

COUNT="${1:-2000}"
MOSQUITTO="${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
work="$(mktemp -d /tmp/archipel-mosquitto-thin.XXXXXX)"
chmod 755 "$work"
NA="mosquitto-thin-$$-a"
NB="mosquitto-thin-$$-b"
PEER=8883

cleanup() {
    # Deleting the namespaces ends nothing inside them: stop the brokers and clients first.
    for ns in "$NA" "$NB"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    done
    wait 2>/dev/null || true
    ip netns del "$NA" 2>/dev/null || true
    ip netns del "$NB" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
in_a() { ip netns exec "$NA" "$@"; }
in_b() { ip netns exec "$NB" "$@"; }

# Waits (at most $3 s) until file $1 has a line matching $2.
wait_line() {
    local deadline=$((SECONDS + $3))
    until grep -q -- "$2" "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "no line matching '$2' in $1 within $3 s"
        sleep 0.1
    done
}

# Bytes the veth device in namespace a sent plus received.
wire_bytes() {
    in_a cat /sys/class/net/veth-a/statistics/tx_bytes /sys/class/net/veth-a/statistics/rx_bytes |
        awk '{ s += $1 } END { print s }'
}

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tc)"
[ -x "$MOSQUITTO" ] || die "mosquitto is missing (apt-get install mosquitto mosquitto-clients)"

for ns in "$NA" "$NB"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip -n "$NA" link add veth-a type veth peer name veth-b netns "$NB"
for side in a:1 b:2; do
    ns="mosquitto-thin-$$-${side%%:*}"
    dev="veth-${side%%:*}"
    ip -n "$ns" addr add "10.77.0.${side##*:}/30" dev "$dev"
    tc -n "$ns" qdisc add dev "$dev" root tbf rate 9600bit burst 1600 latency 2000ms
    ip -n "$ns" link set "$dev" up
done

# A CA, B's server certificate for its link address, and the bridge's client certificate.
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null
for who in b bridge; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=$who" -keyout "$who.key" -out "$who.csr" 2>/dev/null
    printf 'subjectAltName=IP:10.77.0.2\n' >"$who.ext"
    openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile "$who.ext" -out "$who.crt" 2>/dev/null
done
chmod 644 ./*.key
mosquitto_passwd -c -b b.passwd bench-sub sub-pass

cat >b.conf <<EOF
user root
persistence false
max_queued_messages 0
per_listener_settings true
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
listener 1883 127.0.0.1
allow_anonymous false
password_file $work/b.passwd
listener $PEER 10.77.0.2
allow_anonymous false
password_file $work/b.passwd
cafile $work/ca.crt
certfile $work/b.crt
keyfile $work/b.key
require_certificate true
tls_version tlsv1.3
EOF

cat >a.conf <<EOF
user root
persistence false
max_queued_messages 0
allow_anonymous true
sys_interval 1
log_dest stderr
listener 1883 127.0.0.1

connection bench
address 10.77.0.2:$PEER
topic bench/# out 1
remote_username bench-bridge
remote_password bridge-pass
restart_timeout 5
bridge_cafile $work/ca.crt
bridge_certfile $work/bridge.crt
bridge_keyfile $work/bridge.key
bridge_tls_version tlsv1.3
EOF

ip netns exec "$NB" "$MOSQUITTO" -c b.conf 2>b.log &
b_pid="$!"
wait_line b.log "Opening ipv4 listen socket on port $PEER" 10
ip netns exec "$NA" "$MOSQUITTO" -c a.conf 2>a.log &
a_pid="$!"
wait_line a.log "not authorised" 30
say "A in $NA, B in $NB over 9,600 bit/s; the bridge is refused, so A queues what it should forward"

payload="$(printf 'archipel bridge baseline %035d' 0)"
in_a mosquitto_pub -h 127.0.0.1 -p 1883 -q 1 -t bench/load --repeat "$COUNT" -m "$payload"
stored=0
for _ in $(seq 30); do
    stored="$(in_a mosquitto_sub -h 127.0.0.1 -p 1883 -t '$SYS/broker/store/messages/count' -C 1 -W 5)"
    [ "$stored" -ge "$COUNT" ] && break
    sleep 1
done
[ "$stored" -ge "$COUNT" ] || die "A holds only $stored messages"
say "A holds $stored messages for the bridge"

ip netns exec "$NB" stdbuf -oL mosquitto_sub -h 127.0.0.1 -p 1883 -i bench-sub -u bench-sub -P sub-pass -q 1 \
    -t 'bench/#' -C "$COUNT" -W 1800 -F '%U' >received &
sub_pid="$!"
wait_line b.log "bench-sub 1 bench/#" 10

say "letting the bridge in"
mosquitto_passwd -b b.passwd bench-bridge bridge-pass
before="$(wire_bytes)"
opened="$(date +%s.%N)"
kill -HUP "$b_pid"
wait "$sub_pid" || die "the subscriber stopped early: $(wc -l <received) of $COUNT received"
after="$(wire_bytes)"

received="$(wc -l <received)"
[ "$received" -eq "$COUNT" ] || die "received $received of $COUNT"
awk -v n="$COUNT" -v first="$(head -n 1 received)" -v last="$(tail -n 1 received)" \
    -v opened="$opened" -v bytes="$((after - before))" 'BEGIN {
    printf "mosquitto bridge over 9,600 bit/s, TLS: %d messages of 60 bytes (QoS 1) in %.1f s from letting the bridge in (%.1f s first to last): %.1f msg/s\n",
        n, last - opened, last - first, n / (last - opened)
    printf "mosquitto bridge over 9,600 bit/s, TLS: %d bytes on the link both ways: %.1f bytes per message\n",
        bytes, bytes / n
}'
hwm() { sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$1/status"; }
printf 'mosquitto bridge over 9,600 bit/s: peak RSS (VmHWM) broker A %s, broker B %s\n' \
    "$(hwm "$a_pid")" "$(hwm "$b_pid")"
