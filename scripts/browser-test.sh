#!/usr/bin/env bash
# Browser end-to-end tests: Debian's chromium driven by playwright-core against the real
# server binary on 127.0.0.1. Installs chromium and the npm packages when missing; fails
# with a clear message when it cannot (it never skips).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "browser tests: $*" >&2; exit 1; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    die "$1 is missing and apt-get is not available to install it"
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "$1 is missing; install it (apt-get install $2) or run as root"
    sudo="sudo -n"
  fi
  echo "installing $2 with apt-get"
  $sudo apt-get update -qq || die "apt-get update failed while installing $2"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null \
    || die "apt-get install $2 failed"
}

[ -x /usr/bin/chromium ] || apt_install chromium chromium
command -v node >/dev/null || apt_install node nodejs
command -v npm >/dev/null || apt_install npm npm

(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) \
  || die "npm ci in tests/browser failed"

bin=target/debug/manifold
cargo build -p manifold -j2 --quiet || die "the server binary does not build"
log=$(mktemp)
"$bin" serve --listen 127.0.0.1:0 --port-base 0 --workers 2 --log-level warn >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT

url=""
for _ in $(seq 1 100); do
  url=$(sed -n 's/^manifold: listening on //p' "$log" | head -n1)
  [ -n "$url" ] && break
  kill -0 $server 2>/dev/null || { cat "$log" >&2; die "the server exited before listening"; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log" >&2; die "the server did not report its address"; }

status=0
for t in tests/browser/*.test.mjs; do
  echo "--- $t against $url"
  MANIFOLD_URL="$url" node "$t" || status=1
done
if [ $status != 0 ]; then
  echo "--- server log" >&2
  cat "$log" >&2
  die "a browser test failed"
fi
