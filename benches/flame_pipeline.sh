#!/usr/bin/env bash
# The flamegraph pipeline: a Node workload recorded for SECS at 997 Hz, then
#   looptop record + looptop flame --from REC      (symbols are in the recording)
# against the classic
#   perf record -g -F 997 ; perf script | inferno-collapse-perf | inferno-flamegraph
# on the same workload and duration, ROUNDS times in alternation. Times the post-processing
# (REC or perf.data -> SVG) and the whole (recording + post-processing). Needs root (perf);
# inferno's binaries come from PATH, or are installed with cargo into ~/.cache/looptop-bench.
# Usage: benches/flame_pipeline.sh [secs] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
secs=${1:-30}
rounds=${2:-3}
cargo build --release -q
lt=target/release/looptop
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! command -v perf >/dev/null || [ "$(id -u)" -ne 0 ]; then echo "SKIP: needs perf and root"; exit 0; fi
tools=$HOME/.cache/looptop-bench
export PATH=$tools/bin:$PATH
if ! command -v inferno-collapse-perf >/dev/null; then
  echo "installing inferno's binaries into $tools (cargo install inferno)"
  cargo install -q --root "$tools" inferno >/dev/null 2>&1 || { echo "SKIP: cargo install inferno failed"; exit 0; }
fi
# A server-like workload: JSON and regex work in short ticks, with a stall now and then.
cat > "$work/load.js" <<'JS'
const items = Array.from({ length: 20000 }, (_, i) => ({ i, s: 'x' + i }));
function handle() { return JSON.parse(JSON.stringify(items)).length + /^(a+)+$/.test('a'.repeat(12) + '!'); }
function stall() { const t = Date.now(); while (Date.now() - t < 120) handle(); }
let n = 0;
setInterval(() => { handle(); if (++n % 50 === 0) stall(); }, 5);
setTimeout(() => process.exit(0), Number(process.env.SECS) * 1000);
JS
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b - a}'; }
lt_post=(); lt_whole=(); lt_stalls=(); pf_post=(); pf_whole=(); speedups=()
echo "flamegraph of a ${secs} s Node workload at 997 Hz, $rounds rounds"
for r in $(seq "$rounds"); do
  t0=$(now)
  SECS=$secs $lt record -q -o "$work/load.rec" -- node "$work/load.js"
  t1=$(now)
  $lt flame -q --from "$work/load.rec" -o "$work/looptop.svg"
  post=$(since "$t1"); whole=$(since "$t0")
  t2=$(now); $lt flame -q --stalls-only --from "$work/load.rec" -o "$work/stalls.svg"; stalls=$(since "$t2")
  lt_post+=("$post"); lt_whole+=("$whole"); lt_stalls+=("$stalls")
  t0=$(now)
  # From the temp folder: V8 writes an isolate log where --perf-basic-prof runs.
  (cd "$work" && SECS=$secs perf record -q -g -F 997 -o "$work/perf.data" -- node --perf-basic-prof "$work/load.js" 2>/dev/null)
  t1=$(now)
  perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$work/perf.svg"
  ppost=$(since "$t1"); pwhole=$(since "$t0")
  pf_post+=("$ppost"); pf_whole+=("$pwhole")
  speedups+=("$(ratio "$ppost" "$post")")
  printf '  round %d: looptop flame --from %ss (whole %ss, --stalls-only %ss, recording %s bytes) | perf script|inferno %ss (whole %ss) | %sx\n' \
    "$r" "$post" "$whole" "$stalls" "$(stat -c %s "$work/load.rec")" "$ppost" "$pwhole" "${speedups[-1]}"
done
echo "post-processing speed-up: median $(median "${speedups[*]}")x ($(minmax "${speedups[*]}")) (goal >= 5x)"
result flame "looptop flame --from (post-processing)" s "${lt_post[*]}"
result flame "looptop flame --stalls-only --from" s "${lt_stalls[*]}"
result flame "perf script | inferno-collapse-perf | inferno-flamegraph" s "${pf_post[*]}"
result flame "post-processing speed-up, perf/looptop (paired)" x "${speedups[*]}" ">= 5x" "$(meets "$(median "${speedups[*]}")" ">=" 5)"
result flame "whole: looptop record + flame" s "${lt_whole[*]}" "" "-" "includes the ${secs} s of recording"
result flame "whole: perf record + script + inferno" s "${pf_whole[*]}" "" "-" "includes the ${secs} s of recording"
