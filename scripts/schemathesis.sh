#!/usr/bin/env bash
# The OpenAPI document against the running server: schemathesis (PyPI, pinned, in a venv
# under target/) generates requests from docs/openapi.json for every admin operation,
# /stats, /healthz, /readyz and /metrics, and checks that no answer is a server error and
# every answer matches its documented status and schema. Excluded: POST /admin/drain (the
# node would take no session for the rest of the run) and WHIP/WHEP (SDP bodies, covered
# by their own tests). Bounded: a few examples per operation, the whole step well under 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "schemathesis: $*" >&2; exit 1; }
. scripts/lib.sh

VERSION=4.32.5
VENV=target/schemathesis-venv
ST=$VENV/bin/schemathesis
if ! "$ST" --version 2>/dev/null | grep -q "$VERSION"; then
  command -v python3 >/dev/null || apt_install python3 python3
  python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv python3-venv
  python3 -m venv "$VENV" || die "cannot make a venv in $VENV"
  "$VENV/bin/pip" install -q "schemathesis==$VERSION" || die "pip install schemathesis==$VERSION failed"
fi
"$ST" --version | grep -q "$VERSION" || die "schemathesis $VERSION is not installed in $VENV"

command -v curl >/dev/null || apt_install curl curl
[ -x target/debug/manifold ] || cargo build -p manifold -j2
KEY="schemathesis-test-key-0123456789abcdef"
log=$(mktemp)
MANIFOLD_AUTH__KEY=$KEY start_server "$log" --listen 127.0.0.1:0 --port-base 0 --workers 1
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -f "$log"' EXIT
TOKEN=$(target/debug/manifold token --auth-key "$KEY" --identity schemathesis --admin) \
  || die "cannot mint a token"

# The served document is the committed one (the openapi test checks the code's).
curl -sf "$url/openapi.json" | cmp -s - docs/openapi.json \
  || die "GET /openapi.json differs from docs/openapi.json"

"$ST" run docs/openapi.json --url "$url" \
  -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance \
  --exclude-path /admin/drain --exclude-path-regex '^/(whip|whep)/' \
  --max-examples 20 --seed 12 --no-color \
  || { tail -n 50 "$log" >&2; die "the server broke its OpenAPI document (above)"; }
