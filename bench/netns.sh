#!/usr/bin/env bash
# Inside a fresh network namespace (unshare -n): bring up loopback and a non-loopback
# interface v0 carrying 127.0.0.2/32, because Janus and libnice (GStreamer) never gather
# ICE candidates on an interface flagged LOOPBACK. Then run the command given. Traffic
# stays inside the namespace: a local address is delivered through lo whatever device
# carries it.
#
# v0 is one end of a veth pair where the kernel has veth; where it has not (some CI
# kernels), a persistent TUN device held open by bench/tun-hold.py (a TUN device with no
# process attached has no carrier, and libnice skips interfaces that are not running).
# MANIFOLD_NETNS_NO_VETH=1 takes the TUN path on purpose.
set -euo pipefail
here=$(dirname "$0")
ip link set lo up
holder=
if [ -z "${MANIFOLD_NETNS_NO_VETH:-}" ] && ip link add v0 type veth peer name v1 2>/dev/null; then
  ip link set v1 up
elif ip tuntap add v0 mode tun 2>/dev/null; then
  echo "netns: no veth in this kernel; 127.0.0.2 is on a TUN device" >&2
  python3 "$here/tun-hold.py" v0 >/dev/null &
  holder=$!
  for _ in $(seq 50); do
    ip link show v0 | grep -q LOWER_UP && break
    ip link set v0 up 2>/dev/null || true
    sleep 0.1
  done
else
  # Manifold and the loadgen need only loopback; Janus and GStreamer will find no candidate.
  echo "netns: neither veth nor TUN in this kernel: no non-loopback interface" >&2
  exec "$@"
fi
ip link set v0 up
ip addr add 127.0.0.2/32 dev v0
if [ -z "$holder" ]; then
  exec "$@"
fi
trap 'kill "$holder" 2>/dev/null || true' EXIT
"$@"
