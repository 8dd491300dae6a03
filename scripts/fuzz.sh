#!/usr/bin/env bash
# The fuzz targets under fuzz/ (cargo-fuzz, libFuzzer, Rust nightly), one per parser of
# outside input. See docs/reliability.md for what each covers and the recorded runs.
#
#   bash scripts/fuzz.sh smoke            # build every target, run each for a few seconds
#   bash scripts/fuzz.sh long [target]    # each target to 10 million runs or 30 minutes
#   bash scripts/fuzz.sh seeds            # regenerate fuzz/corpus/ from the test suite
#
# Long runs build with optimisations and debug assertions (integer overflow is a crash too), the
# smoke the dev profile; both
# without a sanitizer: the code under test is safe Rust, and the sanitizer build of the
# C dependencies (OpenSSL, AWS-LC) would double the cold build. Any crash fails the run and
# leaves its input under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "fuzz: $*" >&2; exit 1; }

mode="${1:-smoke}"
only="${2:-}"
targets=(classify stun keyframe vp8 rewriters sdp_check trickle room_message token offer shard_datagram relay_frame tcp_frame)
smoke_secs="${FUZZ_SMOKE_SECS:-5}"
# Long runs: optimised, with debug assertions. The smoke in the test command builds the dev
# profile instead (debug assertions on, no optimisation): a quicker cold build, and
# five seconds per target need no speed.
build=(-O -a -s none)
if [ "$mode" = smoke ]; then build=(--dev -s none); fi

ensure_tools() {
  cargo +nightly --version >/dev/null 2>&1 \
    || die "Rust nightly is needed (rustup toolchain install nightly)"
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked >/dev/null || die "cannot install cargo-fuzz"
  fi
}

# run TARGET ARGS...: fuzz TARGET on a scratch copy of its corpus (the committed seeds are
# not rewritten), with libFuzzer ARGS.
run() {
  local t="$1"; shift
  local work="fuzz/target/corpus-run/$t"
  rm -rf "$work"; mkdir -p "$work" "fuzz/artifacts/$t"
  [ -d "fuzz/corpus/$t" ] && cp -r "fuzz/corpus/$t/." "$work/"
  (cd fuzz && cargo +nightly fuzz run "${build[@]}" "$t" "../$work" -- \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 "$@") 2>&1 \
    | tee "fuzz/target/$t.log" | grep -E "^(#[0-9]+ +DONE|stat::|==|SUMMARY|thread .* panicked|Done [0-9]+ runs)" || true
  # cargo fuzz run exits non-zero on a crash; tee hides it, the log does not.
  if grep -qE "(SUMMARY: libFuzzer|panicked at|deadly signal|Test unit written)" "fuzz/target/$t.log"; then
    echo "fuzz: $t CRASHED; input in fuzz/artifacts/$t/, log fuzz/target/$t.log" >&2
    return 1
  fi
}

case "$mode" in
  smoke)
    ensure_tools
    (cd fuzz && cargo +nightly fuzz build "${build[@]}") || die "the fuzz targets do not build"
    status=0
    for t in "${targets[@]}"; do
      echo "--- $t ($smoke_secs s)"
      run "$t" -max_total_time="$smoke_secs" || status=1
    done
    [ $status = 0 ] || die "a fuzz target crashed"
    ;;
  long)
    ensure_tools
    (cd fuzz && cargo +nightly fuzz build "${build[@]}") || die "the fuzz targets do not build"
    status=0
    for t in "${targets[@]}"; do
      [ -n "$only" ] && [ "$t" != "$only" ] && continue
      echo "--- $t (10 million runs or 30 minutes)"
      start=$(date +%s)
      run "$t" -runs=10000000 -max_total_time=1800 -rss_limit_mb=4096 || status=1
      echo "$t: $(( $(date +%s) - start )) s"
    done
    [ $status = 0 ] || die "a fuzz target crashed"
    ;;
  seeds)
    capture=$(mktemp -d)
    trap 'rm -rf "$capture"' EXIT
    MANIFOLD_CAPTURE_DIR="$capture" cargo test -j2 -p manifold-core \
      --test forwarding --test negotiation --test loss_reorder --test late_joiner >/dev/null
    MANIFOLD_CAPTURE_DIR="$capture" cargo test -j2 -p manifold --test room --test security >/dev/null
    python3 scripts/fuzz_seeds.py "$capture" fuzz/corpus
    ;;
  *)
    die "unknown mode $mode (smoke, long, seeds)"
    ;;
esac
