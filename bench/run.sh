#!/usr/bin/env bash
# The benchmark: Manifold and Janus under the same loads, side by side.
#
#   bash bench/run.sh                 # every scenario, both servers (about 20 minutes)
#   bash bench/run.sh --scenarios a   # arguments go to manifold-bench (see --help)
#   bash bench/run.sh --scenarios d --servers manifold   # simulcast to capped downlinks (a minute)
#   bash bench/run.sh --scenarios e --servers manifold   # one room across two nodes over NATS (5 minutes)
#   bash bench/run.sh --smoke         # seconds: scenario (a) at N=2, Manifold only
#   bash bench/run.sh --soak          # the one-hour soak: scenario (b) + churn, Manifold only
#   bash bench/run.sh --soak-ci       # its 2-minute form (debug build, 2 rooms), as CI runs it
#
# Builds the release binaries (a debug build for --smoke), installs Debian's janus package
# if it is missing, then runs crates/manifold-bench inside a private network namespace
# (bench/netns.sh) where both servers and the load generator live. Results: bench/results/
# (<scenario>.json, <scenario>.md, <scenario>.png, summary.md); scratch: target/bench-work/.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
soak=false
for a in "$@"; do
  [[ "$a" == "--smoke" ]] && smoke=true
  [[ "$a" == "--soak" ]] && soak=true
done
if [[ " $* " == *" --soak-ci "* ]]; then
  # The test command's form: a debug build (the suite has built it already), 2 minutes,
  # two rooms of four; same rules as the hour.
  smoke=true
  soak=true
  set -- $(printf '%s\n' "$@" | grep -v -- '--soak-ci') --soak --soak-minutes 2 --soak-rooms 2 \
    --out "${CARGO_TARGET_DIR:-target}/soak-ci" --work "${CARGO_TARGET_DIR:-target}/soak-ci/work"
fi

if $smoke; then
  profile_flag=()
  profile_dir=debug
else
  profile_flag=(--release)
  profile_dir=release
fi
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build "${profile_flag[@]}" -j2 -p manifold -p manifold-bench
bin="$target_dir/$profile_dir"

if ! $smoke && ! $soak && [[ " $* " != *" --servers manifold "* ]] && ! command -v janus >/dev/null; then
  echo "bench: installing Debian's janus package" >&2
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq janus >/dev/null
fi

args=(--manifold "$bin/manifold")
if $smoke && ! $soak; then
  args+=(--out "$target_dir/bench-smoke" --work "$target_dir/bench-smoke/work")
fi

# A private network namespace when we may make one; loopback of this one otherwise
# (enough for Manifold; Janus needs the namespace).
if unshare -n true 2>/dev/null; then
  exec unshare -n bash bench/netns.sh "$bin/manifold-bench" "${args[@]}" "$@"
else
  if ! $smoke; then
    echo "bench: cannot create a network namespace (unshare -n); Janus will not gather candidates" >&2
  fi
  exec "$bin/manifold-bench" "${args[@]}" "$@"
fi
