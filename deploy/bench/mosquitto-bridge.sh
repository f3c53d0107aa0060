#!/usr/bin/env bash
# Baseline for Archipel's MQTT drain: how fast Mosquitto's own bridge drains a backlog of
# 100,000 QoS 1 messages of 60 bytes from broker A to a subscriber on broker B.
#
# How the backlog is built: B is up but refuses the bridge (its password file does not know the
# bridge's user yet), so A's bridge stays disconnected and every message published on A waits
# in A's queue for the bridge. The subscriber on B subscribes first; then the bridge's user is
# added and B reloads (SIGHUP), the bridge gets in on its next retry and drains the backlog.
# The figure is the subscriber's rate from its first message to its last.
#
# Settings beyond the defaults, and why: max_queued_messages 0 on both brokers (the default of
# 1000 queued messages per client would drop nearly all of the backlog), restart_timeout 1 on
# the bridge (so it retries every second instead of after up to 30 s), and the credentials.
# Everything else (max_inflight_messages 20, the bridge's QoS 1 and clean session off) is
# Mosquitto's default. Loopback only; everything started here is stopped on exit.
#
# Usage: deploy/bench/mosquitto-bridge.sh [COUNT]   (needs mosquitto, mosquitto-clients, python3)
set -euo pipefail

COUNT="${1:-100000}"
MOSQUITTO="${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
work="$(mktemp -d /tmp/archipel-bridge-bench.XXXXXX)"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (at most 10 s) until something accepts connections on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "nothing listens on port $1"
}

# Waits (at most $3 s) until file $1 has a line matching $2.
wait_line() {
    local deadline=$((SECONDS + $3))
    until grep -q -- "$2" "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "no line matching '$2' in $1 within $3 s"
        sleep 0.1
    done
}

[ -x "$MOSQUITTO" ] || die "mosquitto is missing (apt-get install mosquitto mosquitto-clients)"
# As root, Mosquitto would switch to the `mosquitto` user, which cannot read this directory.
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root"

PA="$(free_port)"
PB="$(free_port)"
mosquitto_passwd -c -b "$work/b.passwd" bench-sub sub-pass

cat >"$work/b.conf" <<EOF
$user_line
persistence false
max_queued_messages 0
allow_anonymous false
password_file $work/b.passwd
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
listener $PB 127.0.0.1
EOF

cat >"$work/a.conf" <<EOF
$user_line
persistence false
max_queued_messages 0
allow_anonymous true
sys_interval 1
log_dest stderr
listener $PA 127.0.0.1

connection bench
address 127.0.0.1:$PB
topic bench/# out 1
remote_username bench-bridge
remote_password bridge-pass
restart_timeout 1
EOF

"$MOSQUITTO" -c "$work/b.conf" 2>"$work/b.log" &
pids+=("$!")
b_pid="$!"
"$MOSQUITTO" -c "$work/a.conf" 2>"$work/a.log" &
pids+=("$!")
a_pid="$!"
wait_port "$PB"
wait_port "$PA"
wait_line "$work/a.log" "not authorised" 15
say "A on $PA, B on $PB; the bridge is refused, so A queues what it should forward"

say "publishing $COUNT messages of 60 bytes, QoS 1, to A"
# One 60-byte payload, repeated: `mosquitto_pub -l` (a message per stdin line) drops most of a
# fast stream at end of input in Mosquitto 2.0.11, while --repeat sends every one.
payload="$(printf 'archipel bridge baseline %035d' 0)"
mosquitto_pub -h 127.0.0.1 -p "$PA" -q 1 -t bench/load --repeat "$COUNT" -m "$payload"
stored=0
for _ in $(seq 30); do
    stored="$(mosquitto_sub -h 127.0.0.1 -p "$PA" -t '$SYS/broker/store/messages/count' -C 1 -W 5)"
    [ "$stored" -ge "$COUNT" ] && break
    sleep 1
done
[ "$stored" -ge "$COUNT" ] || die "A holds only $stored messages"
say "A holds $stored messages for the bridge"

stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$PB" -i bench-sub -u bench-sub -P sub-pass -q 1 \
    -t 'bench/#' -C "$COUNT" -W 600 -F '%U' >"$work/received" &
pids+=("$!")
sub_pid="$!"
wait_line "$work/b.log" "bench-sub 1 bench/#" 10

say "letting the bridge in"
mosquitto_passwd -b "$work/b.passwd" bench-bridge bridge-pass
opened="$(date +%s.%N)"
kill -HUP "$b_pid"
wait "$sub_pid" || die "the subscriber stopped early: $(wc -l <"$work/received") of $COUNT received"

received="$(wc -l <"$work/received")"
[ "$received" -eq "$COUNT" ] || die "received $received of $COUNT"
first="$(head -n 1 "$work/received")"
last="$(tail -n 1 "$work/received")"
awk -v n="$COUNT" -v first="$first" -v last="$last" -v opened="$opened" 'BEGIN {
    printf "mosquitto bridge: %d messages of 60 bytes (QoS 1) drained in %.2f s: %.0f msg/s\n",
        n, last - first, n / (last - first)
    printf "(%.2f s from letting the bridge in, its reconnect delay included)\n", last - opened
}'
# Peak resident memory of each broker over the whole run, the backlog held in A's memory.
hwm() { sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$1/status"; }
printf 'mosquitto bridge: peak RSS (VmHWM) broker A %s, broker B %s\n' "$(hwm "$a_pid")" "$(hwm "$b_pid")"
