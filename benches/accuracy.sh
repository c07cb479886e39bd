#!/usr/bin/env bash
# Accuracy: stalls of known length (1 ms to 1 s, busy and off-CPU, benches/inject.js) under
# `looptop record --stall-threshold 1ms --rate 0`, matched by time with what looptop reports, and
# with what Node's own monitorEventLoopDelay saw in the same run. Goal: every stall at or over the
# threshold found, durations within max(1 ms, 2 %). Usage: benches/accuracy.sh [repeats] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
repeats=${1:-3}
runs=${2:-3}
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
found=(); within=(); meld=(); meldfound=(); errmed=(); errmax=(); melderr=()
for r in $(seq "$runs"); do
  INJECT_REPEATS=$repeats INJECT_TRUTH="$work/truth.jsonl" target/release/looptop record -q --rate 0 \
    --stall-threshold 1ms -o "$work/inject.rec" -- node benches/inject.js
  echo "run $r:"
  python3 benches/accuracy.py "$work/truth.jsonl" "$work/inject.rec" 1 | tee "$work/out.txt" | grep -v '^RESULT' | sed 's/^/  /'
  res=$(grep '^RESULT' "$work/out.txt" | cut -d' ' -f2-)
  get() { python3 -c "import json,sys; print(round(json.loads(sys.argv[1])[sys.argv[2]], 3))" "$res" "$1"; }
  found+=("$(get found_pct)"); within+=("$(get within_pct)"); meld+=("$(get meld_within_pct)")
  meldfound+=("$(get meld_found_pct)"); errmed+=("$(get err_pct_median)"); errmax+=("$(get err_pct_max)")
  melderr+=("$(get meld_err_pct_median)")
done
echo "stalls found: $(median "${found[*]}") % ; within max(1 ms, 2 %): looptop $(median "${within[*]}") %, monitorEventLoopDelay $(median "${meld[*]}") %"
result accuracy "injected stalls >= 1 ms found by looptop" "%" "${found[*]}" "100 %" "$(meets "$(minof "${found[*]}")" ">=" 100)"
result accuracy "durations within max(1 ms, 2 %), looptop" "%" "${within[*]}" "100 %" "$(meets "$(minof "${within[*]}")" ">=" 100)"
result accuracy "looptop duration error, median over stalls" "%" "${errmed[*]}"
result accuracy "looptop duration error, worst stall" "%" "${errmax[*]}"
result accuracy "stalls >= 1 ms seen by monitorEventLoopDelay (its max delay >= 1 ms)" "%" "${meldfound[*]}"
result accuracy "durations within max(1 ms, 2 %), monitorEventLoopDelay" "%" "${meld[*]}"
result accuracy "monitorEventLoopDelay duration error, median over stalls" "%" "${melderr[*]}"
