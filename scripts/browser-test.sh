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
start_server "$log" --listen 127.0.0.1:0 --port-base 0 --workers 2 --log-level warn

status=0
for t in tests/browser/*.test.mjs; do
  echo "--- $t against $url"
  MANIFOLD_URL="$url" node "$t" || status=1
done
# The WHIP page again, publishing three simulcast layers.
echo "--- tests/browser/whip-whep.test.mjs with simulcast against $url"
MANIFOLD_WHIP_SIMULCAST=1 MANIFOLD_URL="$url" node tests/browser/whip-whep.test.mjs || status=1
if [ $status != 0 ]; then
  echo "--- server log" >&2
  cat "$log" >&2
  die "a browser test failed"
fi
