#!/usr/bin/env bash
# GET /metrics against a real Prometheus: start manifold (dev mode, 127.0.0.1:0), a
# Prometheus on a free loopback port scraping it every second, a few seconds of loadgen (a
# room of one publisher and two subscribers over the WebSocket room protocol); then
# `promtool check metrics` on a scrape, and every panel query of
# deploy/grafana/manifold.json must return a non-empty result, not all NaN, through
# /api/v1/query.
# Installs Debian's prometheus when missing; fails loudly otherwise. About 15 s.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "metrics test: $*" >&2; exit 1; }
. scripts/lib.sh

command -v prometheus >/dev/null && command -v promtool >/dev/null || apt_install prometheus prometheus
command -v prometheus >/dev/null && command -v promtool >/dev/null || die "prometheus or promtool still missing"
command -v python3 >/dev/null || apt_install python3 python3
[ -x target/debug/manifold ] || cargo build -j2 -p manifold

work=$(mktemp -d)
prom=""
server=""
loadgen=""
cleanup() {
  [ -n "$loadgen" ] && kill "$loadgen" 2>/dev/null || true
  [ -n "$prom" ] && kill "$prom" 2>/dev/null || true
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_server "$work/manifold.log" --listen 127.0.0.1:0 --port-base 0 --workers 2 --log-level warn
target=${url#http://}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: manifold
    metrics_path: /metrics
    static_configs:
      - targets: ["$target"]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/prometheus.log" 2>&1 &
prom=$!

# wait_for_query QUERY: until Prometheus answers QUERY with a non-empty result (15 s at most).
wait_for_query() {
  python3 - "$port" "$1" <<'PY'
import json, sys, time, urllib.parse, urllib.request
q = urllib.parse.urlencode({"query": sys.argv[2]})
for _ in range(60):
    try:
        r = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v1/query?{q}", timeout=2))
        if r["data"]["result"]:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.25)
sys.exit(1)
PY
}

# A token that does not verify: counted in manifold_auth_failures_total.
curl -s -o /dev/null -H 'Authorization: Bearer not-a-token' "$url/stats" || true

# The sessions start once Prometheus has scraped the idle server: their set-up (join,
# connect and DTLS histograms, the join PLI) then falls inside the queries' windows.
wait_for_query 'up{job="manifold"} == 1' || die "Prometheus never scraped the server"
target/debug/manifold loadgen --target room --server "$url" --rooms 1 --publishers 1 \
  --subscribers 2 --keyframe-interval 2s --duration 40s >"$work/loadgen.log" 2>&1 &
loadgen=$!
# Queries run while the load does (a series that left the scrapes is stale at once), once
# Prometheus holds four scrapes of the room: enough for every rate() of the dashboard.
wait_for_query 'count_over_time(manifold_room_participants[1m]) >= 4' \
  || die "Prometheus never held four scrapes of the loaded room"
ctype=$(curl -sf -o "$work/scrape.txt" -w '%{content_type}' "$url/metrics") || die "GET /metrics failed"
case "$ctype" in
  "text/plain; version=0.0.4"*) ;;
  *) die "GET /metrics: Content-Type $ctype, not the text format 0.0.4" ;;
esac
# Any complaint fails the step, whatever promtool's exit status.
lint=$(promtool check metrics <"$work/scrape.txt" 2>&1) || die "promtool check metrics: $lint"
[ -z "$lint" ] || die "promtool check metrics: $lint"
kill -0 "$prom" 2>/dev/null || { cat "$work/prometheus.log" >&2; die "prometheus exited"; }

python3 - "$port" deploy/grafana/manifold.json <<'PY'
import json, sys, urllib.parse, urllib.request
port, path = sys.argv[1], sys.argv[2]
exprs = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        exprs.extend(t["expr"] for t in p.get("targets", []))
walk(json.load(open(path))["panels"])
assert exprs, "no panel queries in the dashboard"
failed = []
for e in exprs:
    q = urllib.parse.urlencode({"query": e})
    r = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{q}", timeout=5))
    result = r["data"]["result"] if r.get("status") == "success" else []
    n = len(result)
    sample = result[0]["value"][1] if result else "-"
    print(f"{n:4d} series  first {sample:>12.12}  {e}")
    # A quantile over no observations is NaN: no data either.
    if n == 0 or all(x["value"][1] == "NaN" for x in result):
        failed.append(e)
if failed:
    sys.exit("metrics test: empty result for: " + "; ".join(failed))
print(f"{len(exprs)} passed, 0 failed")
PY
# The load ran through every query (40 s is the cap, not the plan): stop it.
kill -0 "$loadgen" 2>/dev/null || { cat "$work/loadgen.log" >&2; die "loadgen ended early"; }
kill "$loadgen"
wait "$loadgen" 2>/dev/null || true
