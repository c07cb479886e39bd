#!/usr/bin/env bash
# Every benchmark in one run, written up in benches/RESULTS.md (machine, date, versions, method,
# medians of paired runs with min and max, goals met or missed and why). About 20 minutes on a
# 2-core machine; --quick runs fewer and shorter rounds (about 6 minutes) for a smoke test.
# Perf-mode, flamegraph and own-cost figures need root (they say SKIP otherwise).
# Usage: benches/run.sh [--quick] [-o FILE]
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0; dest=benches/RESULTS.md
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    -o) dest=$2; shift ;;
    *) echo "usage: benches/run.sh [--quick] [-o FILE]" >&2; exit 2 ;;
  esac
  shift
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BENCH_RESULT=$work/results.jsonl
: >"$BENCH_RESULT"
cargo build --release -q || exit 1
if [ "$quick" = 1 ]; then
  steps=("agent_tick.sh 3 1000000" "probe_overhead.sh 3 2" "attach_overhead.sh 2 4" "accuracy.sh 1 1"
         "flame_pipeline.sh 10 1" "peers.sh 1 5" "own_cost.sh 15 1" "python_cost.sh 2 4")
else
  steps=("agent_tick.sh 7 2000000" "probe_overhead.sh 9 3" "attach_overhead.sh 5 6" "accuracy.sh 3 3"
         "flame_pipeline.sh 30 3" "peers.sh 3 10" "own_cost.sh 60 1" "python_cost.sh 8 8")
fi
for step in "${steps[@]}"; do
  set -- $step
  script=$1; shift
  echo "== benches/$script $* ($(date +%T))"
  start=$(date +%s)
  if bash "benches/$script" "$@" 2>&1 | tee "$work/${script%.sh}.log"; then status=ok; else status=failed; fi
  grep -q '^SKIP' "$work/${script%.sh}.log" && status=skipped
  printf '{"step":"%s","args":"%s","status":"%s","seconds":%s}\n' "$script" "$*" "$status" "$(( $(date +%s) - start ))" >>"$work/steps.jsonl"
done
python3 benches/results.py "$BENCH_RESULT" "$work/steps.jsonl" "$work" >"$dest" && echo "wrote $dest"
