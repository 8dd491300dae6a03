#!/usr/bin/env bash
# Browser end-to-end tests: Debian's chromium driven by playwright-core against the real
# server binary on 127.0.0.1. Installs chromium and the npm packages when missing; fails
# with a clear message when it cannot (it never skips).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "browser tests: $*" >&2; exit 1; }

. scripts/lib.sh

[ -x /usr/bin/chromium ] || apt_install chromium chromium
command -v node >/dev/null || apt_install node nodejs
command -v npm >/dev/null || apt_install npm npm

(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) \
  || die "npm ci in tests/browser failed"

cargo build -p manifold -j2 --quiet || die "the server binary does not build"
log=$(mktemp)
trap 'kill ${server:-} 2>/dev/null || true; wait ${server:-} 2>/dev/null || true; rm -f "$log"' EXIT
# With ICE-TCP on, every page below also gets passive TCP candidates (and still picks UDP);
# ice-tcp.test.mjs disables UDP in its Chromium and must connect over TCP.
MANIFOLD_MEDIA__ICE_TCP=true \
  start_server "$log" --listen 127.0.0.1:0 --port-base 0 --workers 2 --log-level warn
single=$server

status=0
for t in tests/browser/*.test.mjs; do
  # The failover test brings its own cluster (below).
  [ "$t" = tests/browser/failover.test.mjs ] && continue
  # The HTTPS test brings its own TLS server (below).
  [ "$t" = tests/browser/https.test.mjs ] && continue
  # The TURN test brings its own coturn and server (below).
  [ "$t" = tests/browser/turn.test.mjs ] && continue
  echo "--- $t against $url"
  MANIFOLD_URL="$url" node "$t" || status=1
done
# The WHIP page again, publishing three simulcast layers.
echo "--- tests/browser/whip-whep.test.mjs with simulcast against $url"
MANIFOLD_WHIP_SIMULCAST=1 MANIFOLD_URL="$url" node tests/browser/whip-whep.test.mjs || status=1
# Two cores are few: the single server has done its part.
kill "$single" 2>/dev/null || true
wait "$single" 2>/dev/null || true

# The room app over built-in TLS: a test CA's certificate for 127.0.0.1 (openssl CLI), a
# server with [http] tls_cert/tls_key, Chromium trusting the certificate by its SPKI hash.
command -v openssl >/dev/null || apt_install openssl openssl
tls_dir=$(mktemp -d)
(
  cd "$tls_dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=manifold-browser-test-ca -keyout ca.key -out ca.pem
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout key.pem -out server.csr
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out cert.pem
) >"$tls_dir/openssl.log" 2>&1 || { cat "$tls_dir/openssl.log" >&2; die "could not make the test certificate"; }
spki=$(openssl x509 -in "$tls_dir/cert.pem" -pubkey -noout | openssl pkey -pubin -outform der \
  | openssl dgst -sha256 -binary | base64)
MANIFOLD_HTTP__TLS_CERT="$tls_dir/cert.pem" MANIFOLD_HTTP__TLS_KEY="$tls_dir/key.pem" \
  start_server "$log" --listen 127.0.0.1:0 --port-base 0 --workers 1 --log-level warn
tls_server=$server
case "$url" in https://*) ;; *) die "the TLS server reported $url, not https://";; esac
echo "--- tests/browser/https.test.mjs against $url"
MANIFOLD_URL="$url" MANIFOLD_SPKI="$spki" node tests/browser/https.test.mjs || status=1
kill "$tls_server" 2>/dev/null || true
wait "$tls_server" 2>/dev/null || true
rm -rf "$tls_dir"

# Failover: one Redis, one NATS and two nodes of one cluster on free 127.0.0.1 ports; the
# test kills node A (SIGKILL) under one of its pages.
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have redis-server || apt_install redis-server redis-server
have nats-server || apt_install nats-server nats-server
export PATH="$PATH:/usr/sbin"
free_port() { node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
# wait_port PORT WHAT PID: until something listens on PORT, or die.
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || die "$2 exited before listening"
    sleep 0.1
  done
  die "$2 did not listen on port $1"
}
# TURN: a real coturn on loopback (allow-loopback-peers: CI has network namespaces but no
# veth), a server whose [turn] shares its secret, and two relay-forced pages (docs/tls-turn.md).
have turnserver || apt_install turnserver coturn
have turnserver || die "turnserver still missing after apt-get install coturn"
turn_dir=$(mktemp -d)
turn_port=$(free_port)
turn_secret="browser-turn-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
turnserver --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$turn_port" \
  --realm manifold --use-auth-secret --static-auth-secret "$turn_secret" --allow-loopback-peers \
  --no-cli --no-tls --no-dtls --simple-log --no-stdout-log \
  --log-file "$turn_dir/turn.log" --pidfile "$turn_dir/turn.pid" >/dev/null 2>&1 &
turn=$!
trap 'kill ${turn:-} ${turn_node:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$log" "$turn_dir"' EXIT
wait_port "$turn_port" turnserver "$turn"
MANIFOLD_TURN__URLS="[\"turn:127.0.0.1:$turn_port?transport=udp\"]" MANIFOLD_TURN__STATIC_AUTH_SECRET="$turn_secret" \
  start_server "$turn_dir/server.log" --listen 127.0.0.1:0 --port-base 0 --workers 1 --log-level warn
turn_node=$server
echo "--- tests/browser/turn.test.mjs against $url through coturn on 127.0.0.1:$turn_port"
if ! MANIFOLD_URL="$url" node tests/browser/turn.test.mjs; then
  status=1
  for f in "$turn_dir"/server.log "$turn_dir"/turn*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -40 "$f" >&2; }; done
fi
kill "$turn_node" "$turn" 2>/dev/null || true
wait "$turn_node" "$turn" 2>/dev/null || true
rm -rf "$turn_dir"

cluster_dir=$(mktemp -d)
redis_port=$(free_port)
nats_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --loglevel warning >"$cluster_dir/redis.log" 2>&1 &
redis=$!
nats-server --addr 127.0.0.1 --port "$nats_port" >"$cluster_dir/nats.log" 2>&1 &
nats=$!
trap 'kill ${single:-} ${tls_server:-} ${node_a:-} ${node_b:-} ${redis:-} ${nats:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$log" "$cluster_dir"' EXIT
wait_port "$redis_port" redis-server "$redis"
wait_port "$nats_port" nats-server "$nats"
cluster_key="browser-failover-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# start_node ID: a node of the cluster; sets `server` and `url` (start_server).
start_node() {
  MANIFOLD_AUTH__KEY="$cluster_key" MANIFOLD_CLUSTER__NODE_ID="$1" MANIFOLD_CLUSTER__HEARTBEAT_SECS=1 \
    MANIFOLD_CLUSTER__REDIS_URL="redis://127.0.0.1:$redis_port" \
    MANIFOLD_CLUSTER__NATS_URL="nats://127.0.0.1:$nats_port" \
    start_server "$cluster_dir/$1.log" --listen 127.0.0.1:0 --port-base 0 --workers 1 --log-level warn
}
start_node node-a
node_a=$server url_a=$url
start_node node-b
node_b=$server url_b=$url
echo "--- tests/browser/failover.test.mjs against $url_a and $url_b"
if ! MANIFOLD_URL_A="$url_a" MANIFOLD_URL_B="$url_b" MANIFOLD_PID_A="$node_a" MANIFOLD_KEY="$cluster_key" \
  node tests/browser/failover.test.mjs; then
  status=1
  for f in node-a node-b; do echo "--- $f log" >&2; cat "$cluster_dir/$f.log" >&2; done
fi
# Killed by the test: reaped without the shell's "Killed" line.
kill -0 "$node_a" 2>/dev/null || wait "$node_a" 2>/dev/null || true

if [ $status != 0 ]; then
  echo "--- server log" >&2
  cat "$log" >&2
  die "a browser test failed"
fi
