#!/usr/bin/env bash
# Does Mosquitto hold its max_inflight_messages (20 by default) toward a QoS 1 subscriber?
# A subscriber of its own (slow-ack-subscriber.py: raw MQTT 3.1.1 over a socket, no library)
# acknowledges what has arrived in batches, every 2 ms, and reports the most publishes it held
# unacknowledged at once; with a broker that holds the limit, that is at most 20.
#
# Two cases, each on a fresh broker with max_queued_messages 0 (what a gateway's offline
# backlog needs): "live", 20,000 messages published while the subscriber is connected; and
# "backlog", 20,000 published while its persistent session is away, then it reconnects.
# Archipel's downlink ingest meets both (deploy/bench/README.md, `ingest_mqtt`).
#
# Usage: deploy/bench/mosquitto-inflight.sh   (needs mosquitto, mosquitto-clients, python3)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
MOSQUITTO="${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
work="$(mktemp -d /tmp/archipel-inflight.XXXXXX)"
broker=""

cleanup() {
    [ -n "$broker" ] && kill "$broker" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
start_broker() {
    {
        [ "$(id -u)" = 0 ] && echo "user root"
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence false"
        echo "max_queued_messages 0"
    } >"$work/mosquitto.conf"
    "$MOSQUITTO" -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
    broker="$!"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "error: mosquitto does not listen on $port" >&2
    exit 1
}
stop_broker() { kill "$broker"; wait "$broker" 2>/dev/null || true; broker=""; }
publish() { mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t t/x --repeat 20000 -m hello; }

start_broker
python3 "$here/slow-ack-subscriber.py" "$port" 4 clean >"$work/live" &
sub="$!"
sleep 0.5
publish
wait "$sub"
echo "live:    $(cat "$work/live") (max_inflight_messages 20)"
stop_broker

start_broker
python3 "$here/slow-ack-subscriber.py" "$port" 0.5 persistent >/dev/null
publish
python3 "$here/slow-ack-subscriber.py" "$port" 6 persistent >"$work/backlog"
echo "backlog: $(cat "$work/backlog") (max_inflight_messages 20)"
