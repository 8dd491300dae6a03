#!/usr/bin/env bash
# Inside a fresh network namespace (unshare -n): bring up loopback and a veth pair whose
# v0 carries 127.0.0.2/32, because Janus never gathers ICE candidates on an interface
# flagged LOOPBACK. Then run the command given. Traffic stays inside the namespace.
set -euo pipefail
ip link set lo up
if ip link add v0 type veth peer name v1 2>/dev/null; then
  ip link set v0 up
  ip link set v1 up
  ip addr add 127.0.0.2/32 dev v0
else
  # Manifold and the loadgen need only loopback; Janus will find no candidate.
  echo "bench: no veth pair in this namespace (Janus runs will fail)" >&2
fi
exec "$@"
