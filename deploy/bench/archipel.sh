#!/usr/bin/env bash
# Archipel's end-to-end benchmarks (tests/benches), in release, one after the other, beside
# Mosquitto's own bridge (mosquitto-bridge.sh) in the same session:
#
#   bridge            mosquitto-bridge.sh: Mosquitto's bridge drains 100k QoS 1 messages
#   drain_mqtt        100k queued texts drained by `archipel run` to Mosquitto, PUBACK-confirmed
#   ingest_backlog    100k downlink envelopes waiting on Mosquitto for the gateway's session
#   ingest_live       the same 100k published while the gateway is connected
#   enqueue_latency   1,000 msg/s of downlink for 30 s: commit p50/p99, and from outside
#   mesh_io           bytes written and fsyncs per relayed message at mesh rates (3 min)
#   federation        1M queued texts drained hub to hub over loopback, then 10k over a
#                     9,600 bit/s veth link (root: network namespaces; about 25 minutes)
#   bridge_thin       mosquitto-thin.sh: Mosquitto's bridge, TLS, over the same 9,600 bit/s link
#
# Usage: deploy/bench/archipel.sh [NAME...]   (default: all of them, in this order)
#
# Builds the release binary and the bench executables first (under the shared cargo lock when
# /tmp/archipel-cargo.lock exists), then runs each executable directly, so no lock is held
# while measuring. Each bench starts its own Mosquitto (and simulator) on free loopback ports
# and stops everything it started. Needs mosquitto, mosquitto-clients, python3 and strace.
# Settings of each bench (ARCHIPEL_BENCH_*) are described at the top of its file.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
all=(bridge drain_mqtt ingest_backlog ingest_live enqueue_latency mesh_io federation bridge_thin)
[ "$#" -gt 0 ] && all=("$@")

cargo_locked() {
    if [ -e /tmp/archipel-cargo.lock ]; then
        flock /tmp/archipel-cargo.lock cargo "$@"
    else
        cargo "$@"
    fi
}

cargo_locked build --release -p archipel-gateway
export ARCHIPEL_BIN="$root/target/release/archipel"
built="$(cargo_locked bench -p archipel-e2e --no-run 2>&1)"
exe() {
    local path
    path="$(printf '%s\n' "$built" | sed -n "s|.*Executable benches/$1\.rs (\(.*\))|\1|p")"
    [ -n "$path" ] || { printf 'no executable for bench %s\n' "$1" >&2; exit 1; }
    printf '%s\n' "$path"
}

for name in "${all[@]}"; do
    printf '\n== %s (%s; load %s)\n' "$name" "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)"
    case "$name" in
        bridge) deploy/bench/mosquitto-bridge.sh ;;
        drain_mqtt) "$(exe drain_mqtt)" ;;
        ingest_backlog) "$(exe ingest_mqtt)" || echo "(ingest_backlog did not finish)" ;;
        ingest_live) ARCHIPEL_BENCH_LIVE=1 "$(exe ingest_mqtt)" || echo "(ingest_live did not finish)" ;;
        enqueue_latency) "$(exe enqueue_latency)" ;;
        mesh_io) "$(exe mesh_io)" ;;
        federation) "$(exe federation)" ;;
        bridge_thin) deploy/bench/mosquitto-thin.sh ;;
        *) printf 'unknown bench %s (one of: %s)\n' "$name" "bridge drain_mqtt ingest_backlog ingest_live enqueue_latency mesh_io federation bridge_thin" >&2; exit 2 ;;
    esac
done
