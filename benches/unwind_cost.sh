#!/usr/bin/env bash
# What copying the user stack with every stall sample (issue 18 point 4) costs: a loop spinning
# 5 s in one tick (one stall, every sample of it a stall sample), its rounds per ms plain, with
# `looptop record --pid` attached through BPF copying 16 KiB per sample (the default), and with
# LOOPTOP_UNWIND=fp (frame pointers only); and looptop's own CPU time in each. Then a loop that
# sleeps 100 000 times inside one tick (pipe round trips with a helper thread: every sleep a
# switch-out inside a tick, where the off-CPU copy is taken at most once a millisecond), its round
# trips per ms the same three ways, both threads on CPU 1 (unpinned, a round trip's cost depends
# on where the scheduler puts the two threads far more than on looptop). Alternating rounds.
# Usage: benches/unwind_cost.sh [rounds]   (builds looptop in release first; root for BPF)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
rounds=${1:-5}
cargo build --release -q
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cc -O2 -fomit-frame-pointer -fno-inline -o "$dir/spin_stall" benches/spin_stall.c
cc -O2 -pthread -o "$dir/pingpong_tick" benches/pingpong_tick.c
plain=(); copies=(); fp=(); cpu_copies=(); cpu_fp=(); pp_plain=(); pp_copies=(); pp_fp=()
# One attached run: the target's rounds per ms, then looptop's CPU seconds (user + system).
attached() {
  $pin "$dir/$program" 1500 "$arg" >"$dir/out" &
  local target=$!
  sleep 0.3
  /usr/bin/time -f "%U %S" -o "$dir/time" env "$@" target/release/looptop record -q --pid "$target" \
    -o "$dir/r.rec" 2>"$dir/lt.err"
  wait "$target"
  cat "$dir/out"
  awk '{print $1 + $2}' "$dir/time"
}
for _ in $(seq "$rounds"); do
  program=spin_stall arg=5000 pin=
  plain+=("$("$dir/spin_stall" 200 5000)")
  { read -r r; read -r c; } < <(attached LOOPTOP_UNWIND=)
  copies+=("$r"); cpu_copies+=("$c")
  { read -r r; read -r c; } < <(attached LOOPTOP_UNWIND=fp)
  fp+=("$r"); cpu_fp+=("$c")
  program=pingpong_tick arg=100000 pin="taskset -c 1"
  pp_plain+=("$($pin "$dir/pingpong_tick" 200 100000)")
  { read -r r; read -r _; } < <(attached LOOPTOP_UNWIND=)
  pp_copies+=("$r")
  { read -r r; read -r _; } < <(attached LOOPTOP_UNWIND=fp)
  pp_fp+=("$r")
done
grep -q "refused BPF" "$dir/lt.err" && echo "note: BPF was refused; the attached figures are perf events' (no copies)"
echo "a 5 s stall, $rounds rounds, the target's rounds per ms (median, min .. max), looptop's CPU s"
echo "  plain:                        $(median "${plain[@]}") ($(minmax "${plain[@]}"))"
echo "  attached, stack copies:       $(median "${copies[@]}") ($(minmax "${copies[@]}")); looptop $(median "${cpu_copies[@]}") s"
echo "  attached, frame pointers:     $(median "${fp[@]}") ($(minmax "${fp[@]}")); looptop $(median "${cpu_fp[@]}") s"
echo "100 000 sleeps in one tick, round trips per ms"
echo "  plain:                        $(median "${pp_plain[@]}") ($(minmax "${pp_plain[@]}"))"
echo "  attached, stack copies:       $(median "${pp_copies[@]}") ($(minmax "${pp_copies[@]}"))"
echo "  attached, frame pointers:     $(median "${pp_fp[@]}") ($(minmax "${pp_fp[@]}"))"
result unwind_cost "round trips per ms sleeping in a tick, plain" trips/ms "${pp_plain[*]}"
result unwind_cost "round trips per ms sleeping in a tick, attached with stack copies" trips/ms "${pp_copies[*]}"
result unwind_cost "round trips per ms sleeping in a tick, attached with frame pointers" trips/ms "${pp_fp[*]}"
result unwind_cost "rounds per ms in a 5 s stall, plain" rounds/ms "${plain[*]}"
result unwind_cost "rounds per ms in a 5 s stall, attached with stack copies" rounds/ms "${copies[*]}"
result unwind_cost "rounds per ms in a 5 s stall, attached with frame pointers" rounds/ms "${fp[*]}"
result unwind_cost "looptop CPU s over the stall, stack copies" s "${cpu_copies[*]}"
result unwind_cost "looptop CPU s over the stall, frame pointers" s "${cpu_fp[*]}"
