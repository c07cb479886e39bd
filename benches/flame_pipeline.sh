#!/usr/bin/env bash
# The flamegraph pipeline: a Node workload recorded for SECS at 997 Hz, then
#   looptop flame --from REC            (load + symbols already in the recording + SVG)
# against the classic
#   perf record -g -F 997 ; perf script | inferno-collapse-perf | inferno-flamegraph
# on the same workload and duration. Needs root (perf) and, for the comparison, inferno's
# binaries on PATH (cargo install inferno). Usage: benches/flame_pipeline.sh [secs]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cargo build --release -q
lt=target/release/looptop
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
echo "== looptop record (${secs}s at 997 Hz)"
SECS=$secs $lt record -q -o "$work/load.rec" -- node "$work/load.js"
ls -l "$work/load.rec" | awk '{print "recording bytes:", $5}'
t0=$(now); $lt flame -q --from "$work/load.rec" -o "$work/looptop.svg"; t1=$(now)
echo "looptop flame --from: $(echo "$t1 - $t0" | bc) s"
t0=$(now); $lt flame -q --stalls-only --from "$work/load.rec" -o "$work/stalls.svg"; t1=$(now)
echo "looptop flame --stalls-only --from: $(echo "$t1 - $t0" | bc) s"
if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
  echo "== perf record -g (${secs}s at 997 Hz)"
  SECS=$secs perf record -q -g -F 997 -o "$work/perf.data" -- node --perf-basic-prof "$work/load.js" 2>/dev/null
  t0=$(now)
  perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$work/perf.svg"
  t1=$(now)
  echo "perf script | inferno-collapse-perf | inferno-flamegraph: $(echo "$t1 - $t0" | bc) s"
else
  echo "inferno-collapse-perf / inferno-flamegraph not on PATH: cargo install inferno for the comparison"
  if command -v perf >/dev/null; then
    SECS=$secs perf record -q -g -F 997 -o "$work/perf.data" -- node --perf-basic-prof "$work/load.js" 2>/dev/null
    t0=$(now); perf script -i "$work/perf.data" > "$work/perf.txt" 2>/dev/null; t1=$(now)
    echo "perf script alone: $(echo "$t1 - $t0" | bc) s"
  fi
fi
