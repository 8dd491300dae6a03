#!/usr/bin/env bash
# Three Manifold nodes on one machine, sharing one Redis and one NATS on loopback:
#
#   bash scripts/cluster-demo.sh            # until Ctrl-C
#   bash scripts/cluster-demo.sh --check    # start, check that the nodes list each other, stop
#
# Node i (1..3) serves http://127.0.0.1:808i/ with media workers on UDP 4i000+; open the demo
# page on two of them with the same room and the participants meet. Needs redis-server and
# nats-server (Debian packages of those names) and a built server (cargo build -p manifold).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${MANIFOLD_BIN:-target/debug/manifold}"
[ -x "$bin" ] || { echo "cluster-demo: build the server first (cargo build -p manifold)" >&2; exit 1; }
for tool in redis-server nats-server; do
  command -v "$tool" >/dev/null || { echo "cluster-demo: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

redis_port=$((20000 + RANDOM % 10000)); nats_port=$((redis_port + 1))
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 & pids+=($!)
nats-server -a 127.0.0.1 -p "$nats_port" >"$work/nats.log" 2>&1 & pids+=($!)
sleep 0.5
key="cluster-demo-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
for i in 1 2 3; do
  MANIFOLD_AUTH__KEY="$key" \
  MANIFOLD_CLUSTER__NODE_ID="node-$i" \
  MANIFOLD_CLUSTER__REDIS_URL="redis://127.0.0.1:$redis_port" \
  MANIFOLD_CLUSTER__NATS_URL="nats://127.0.0.1:$nats_port" \
    "$bin" serve --listen "127.0.0.1:808$i" --port-base "4${i}000" --workers 2 --log-level warn \
    >"$work/node-$i.log" 2>&1 & pids+=($!)
done
admin=$(MANIFOLD_AUTH__KEY="$key" "$bin" token --identity ops --admin)
for _ in $(seq 50); do
  n=$(curl -sf -H "authorization: Bearer $admin" http://127.0.0.1:8081/admin/nodes 2>/dev/null \
      | grep -o '"id":"node-[0-9]"' | sort -u | wc -l || true)
  [ "${n:-0}" -eq 3 ] && break
  sleep 0.2
done
echo "cluster-demo: nodes up at http://127.0.0.1:8081/ :8082/ :8083/ (redis :$redis_port, nats :$nats_port)"
echo "cluster-demo: /admin/nodes on node 1 lists ${n:-0} nodes; an admin token: $admin"
if [ "${1:-}" = --check ]; then
  [ "${n:-0}" -eq 3 ] || { echo "cluster-demo: the nodes did not find each other" >&2; tail -5 "$work"/node-*.log >&2; exit 1; }
  exit 0
fi
wait
