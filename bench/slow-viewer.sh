#!/usr/bin/env bash
# A viewer behind a slow link, as users meet it: real Chromium publisher (fake camera at
# 1280x720) and two Chromium viewers in one room; one viewer sits in its own network
# namespace behind a token bucket (tc tbf, default 300 kbit/s, 100 ms of queue). Reports
# what each viewer decodes: resolution, frame rate, frames, freezes, loss, NACKs, PLIs.
#
#   bash bench/slow-viewer.sh [--server BIN] [--rate 300kbit] [--seconds 30] [--no-simulcast]
#                             [--out FILE.json]
#
# Needs root (network namespaces), Debian's chromium and tests/browser's node_modules
# (scripts/browser-test.sh installs them). Everything stays inside two namespaces this
# script creates and deletes: mfd-srv (server, publisher, fast viewer; 10.77.0.1) and
# mfd-slow (the slow viewer; 10.77.0.2).
set -euo pipefail
cd "$(dirname "$0")/.."

server_bin=target/release/manifold
rate=300kbit
seconds=30
simulcast=1
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server_bin=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --no-simulcast) simulcast=0; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "slow-viewer: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$server_bin" ] || { echo "slow-viewer: no server binary at $server_bin" >&2; exit 1; }
[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

srv=mfd-srv
slow=mfd-slow
log=$(mktemp)
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$slow" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT
ip netns del "$srv" 2>/dev/null || true
ip netns del "$slow" 2>/dev/null || true
ip netns add "$srv"
ip netns add "$slow"
ip -n "$srv" link set lo up
ip -n "$slow" link set lo up
ip -n "$srv" link add vs type veth peer name vw netns "$slow"
ip -n "$srv" addr add 10.77.0.1/24 dev vs
ip -n "$slow" addr add 10.77.0.2/24 dev vw
ip -n "$srv" link set vs up
ip -n "$slow" link set vw up
# What reaches the slow viewer goes through a token bucket with 100 ms of queue.
ip netns exec "$srv" tc qdisc add dev vs root tbf rate "$rate" burst 16kbit latency 100ms

ip netns exec "$srv" "$server_bin" serve --listen 10.77.0.1:0 --media-bind 10.77.0.1 \
  --announce-ip 10.77.0.1 --port-base 0 --workers 2 --log-level warn >"$log" 2>&1 &
server=$!
url=""
for _ in $(seq 1 100); do
  url=$(sed -n 's/^manifold: listening on //p' "$log" | head -n1)
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log" >&2; echo "slow-viewer: the server did not start" >&2; exit 1; }

MANIFOLD_URL=$url NS_FAST=$srv NS_SLOW=$slow SECONDS_TO_RUN=$seconds SIMULCAST=$simulcast \
  RATE=$rate OUT=$out node bench/slow-viewer.mjs
