#!/usr/bin/env bash
# What looptop's futex hooks (a pool worker's park, issue 18) cost a futex wait: futex_wait
# plain; with the agent (its `syscall` wrapper, on a thread that is no pool worker); and while
# `looptop record --pid` watches another process with BPF (the futex tracepoints run for every
# process on the machine, and leave at the target check). Alternating rounds.
# Usage: benches/futex_cost.sh [rounds] [calls]   (builds looptop in release first; root for BPF)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
rounds=${1:-5}
calls=${2:-2000000}
cargo build --release -q
agent=$(target/release/looptop agent path)
dir=$(mktemp -d)
trap 'kill "$lt" "$idle" 2>/dev/null; rm -rf "$dir"' EXIT
cc -O2 -o "$dir/futex_wait" benches/futex_wait.c
plain=(); agent_runs=(); bpf=()
# The other process looptop watches: an idle loop (one wait a second).
python3 -c 'import select, time; p = select.epoll(); [p.poll(1) for _ in iter(int, 1)]' &
idle=$!
lt=
for _ in $(seq "$rounds"); do
  plain+=("$("$dir/futex_wait" "$calls")")
  agent_runs+=("$(LD_PRELOAD="$agent" "$dir/futex_wait" "$calls")")
  target/release/looptop record -q --rate 0 --pid "$idle" -o "$dir/idle.rec" 2>"$dir/lt.err" &
  lt=$!
  sleep 2
  bpf+=("$("$dir/futex_wait" "$calls")")
  kill -TERM "$lt"; wait "$lt" || true
done
grep -q "refused BPF" "$dir/lt.err" && echo "note: BPF was refused; the attached figures are perf events'"
echo "futex wait returning EAGAIN, $calls calls, $rounds rounds, ns per call (median, min .. max)"
echo "  plain:                          $(median "${plain[@]}") ($(minmax "${plain[@]}"))"
echo "  with the agent:                 $(median "${agent_runs[@]}") ($(minmax "${agent_runs[@]}"))"
echo "  looptop attached to another:    $(median "${bpf[@]}") ($(minmax "${bpf[@]}"))"
result futex_cost "ns per futex wait, plain" ns "${plain[*]}"
result futex_cost "ns per futex wait, with the agent" ns "${agent_runs[*]}"
result futex_cost "ns per futex wait, looptop attached to another process (BPF)" ns "${bpf[*]}"
