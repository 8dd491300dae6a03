#!/usr/bin/env bash
# Instructions per forwarded packet in the core's forwarding path, under callgrind: a figure
# that does not move with machine noise (crates/manifold-core/examples/forward_cost.rs).
#
#   bash scripts/instructions.sh           # release build; video N = 10 and 100, audio N = 100,
#                                          # and joins; writes bench/results/instructions.{json,md}
#                                          # (minutes)
#   bash scripts/instructions.sh --smoke   # debug build, N = 2, short spans: it runs (seconds),
#                                          # no number asserted; results under target/
#
# Each case runs twice, with SHORT and LONG seconds of media after the same set-up, with
# collection on only inside Shard::handle_input and Shard::poll_output; the difference in
# instructions over the difference in forwarded packets excludes set-up and warm-up.
#
# Joins: a silent publisher and two audiences of audio-only WHEP players (JOINS_A, JOINS_B),
# set-up only, with collection also inside RtcFactory::accept and Shard::handle_command; the
# difference in instructions over the difference in players is the server's cost of one
# join (signaling's answer, the shard's command, ICE, the DTLS handshake).
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "instructions: $*" >&2; exit 1; }
. scripts/lib.sh

smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true

command -v valgrind >/dev/null || apt_install valgrind valgrind
command -v valgrind >/dev/null || die "valgrind still missing after apt-get"

target_dir="${CARGO_TARGET_DIR:-target}"
if $smoke; then
  cargo build -j2 -p manifold-core --example forward_cost
  bin="$target_dir/debug/examples/forward_cost"
  out="$target_dir/instructions-smoke"
  cases=("2 video")
  short=0.5
  long=1.0
  joins_a=2
  joins_b=4
else
  cargo build -j2 --release -p manifold-core --example forward_cost
  bin="$target_dir/release/examples/forward_cost"
  out=bench/results
  cases=("10 video" "100 video" "100 audio")
  short=1
  long=3
  joins_a=20
  joins_b=60
fi
work="$target_dir/instructions-work"
mkdir -p "$out" "$work"

# run N KIND SECONDS: callgrind's collected instruction total and the example's JSON line.
run() {
  local n=$1 kind=$2 secs=$3
  local file="$work/callgrind.$n.$kind.$secs"
  local extra=()
  local toggles=(--toggle-collect='*Shard*handle_input*' --toggle-collect='*Shard*poll_output*')
  [ "$kind" = audio ] && extra=(--audio-only)
  if [ "$kind" = join ]; then
    extra=(--audio-only --silent --warmup 0)
    toggles+=(--toggle-collect='*RtcFactory*accept*' --toggle-collect='*Shard*handle_command*')
  fi
  valgrind --tool=callgrind --callgrind-out-file="$file" --collect-atstart=no "${toggles[@]}" \
    "$bin" --subscribers "$n" --seconds "$secs" "${extra[@]}" >"$file.json" 2>"$file.log" \
    || { cat "$file.log" >&2; die "forward_cost failed under callgrind (N=$n $kind)"; }
  local ir
  ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file" | head -n1)
  [ -n "$ir" ] || ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file" | head -n1)
  [ -n "$ir" ] || die "no instruction total in $file"
  echo "$ir $(cat "$file.json")"
}

rows=()
for c in "${cases[@]}"; do
  read -r n kind <<<"$c"
  echo "== N=$n $kind: ${short}s and ${long}s of media under callgrind" >&2
  a=$(run "$n" "$kind" "$short")
  b=$(run "$n" "$kind" "$long")
  rows+=("$n|$kind|$a|$b")
done
echo "== joins: $joins_a and $joins_b silent audio-only players, set-up only, under callgrind" >&2
ja=$(run "$joins_a" join 0.001)
jb=$(run "$joins_b" join 0.001)
rows+=("$joins_a:$joins_b|join|$ja|$jb")

printf '%s\n' "${rows[@]}" | python3 -c '
import json, sys, datetime
out, smoke = sys.argv[1], sys.argv[2] == "true"
results = []
joins = None
for line in sys.stdin:
    n, kind, a, b = line.strip().split("|")
    ir_a, ja = a.split(" ", 1)
    ir_b, jb = b.split(" ", 1)
    ja, jb = json.loads(ja), json.loads(jb)
    d_ir = int(ir_b) - int(ir_a)
    if kind == "join":
        d_joins = jb["subscribers"] - ja["subscribers"]
        joins = {"kind": "join", "players": [ja["subscribers"], jb["subscribers"]],
                 "instructions": d_ir, "instructions_per_join": round(d_ir / d_joins)}
        continue
    d_fwd = jb["forwarded"] - ja["forwarded"]
    d_in = jb["received"] - ja["received"]
    if d_fwd <= 0:
        sys.exit(f"instructions: N={n} {kind}: no more packets forwarded in the longer run")
    results.append({
        "subscribers": int(n), "kind": kind,
        "instructions": d_ir, "forwarded": d_fwd, "received": d_in,
        "instructions_per_forwarded_packet": round(d_ir / d_fwd),
        "instructions_per_received_packet": round(d_ir / d_in) if d_in > 0 else None,
    })
doc = {"date": datetime.date.today().isoformat(), "smoke": smoke, "results": results,
       "joins": joins}
with open(f"{out}/instructions.json", "w") as f:
    json.dump(doc, f, indent=2)
md = ["| case | forwarded packets (difference) | instructions (difference) | instructions / forwarded packet |",
      "|---|---:|---:|---:|"]
for r in results:
    md.append("| %s, 1 → %d | %d | %d | %d |" % (r["kind"], r["subscribers"], r["forwarded"],
              r["instructions"], r["instructions_per_forwarded_packet"]))
if joins:
    md += ["", "| joins | players (difference) | instructions (difference) | instructions / join |",
           "|---|---:|---:|---:|",
           "| audio-only WHEP players, silent publisher | %d | %d | %d |" % (
               joins["players"][1] - joins["players"][0], joins["instructions"],
               joins["instructions_per_join"])]
with open(f"{out}/instructions.md", "w") as f:
    f.write("\n".join(md) + "\n")
print("\n".join(md))
' "$out" "$smoke"
