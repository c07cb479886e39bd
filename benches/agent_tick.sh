#!/usr/bin/env bash
# The agent's cost per tick: epoll_tick with and without the agent, alternating pairs.
# Usage: benches/agent_tick.sh [pairs] [calls]   (builds looptop in release first)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
pairs=${1:-7}
calls=${2:-2000000}
cargo build --release -q
agent=$(target/release/looptop agent path)
bin=$(mktemp -d)/epoll_tick
cc -O2 -o "$bin" benches/epoll_tick.c
with=(); without=()
for _ in $(seq "$pairs"); do
  without+=("$("$bin" "$calls")")
  with+=("$(LD_PRELOAD="$agent" "$bin" "$calls")")
done
w=$(median "${with[@]}"); wo=$(median "${without[@]}")
echo "epoll_wait(…, 0), $calls calls, $pairs alternating pairs, ns per call (median, min .. max)"
echo "  without agent: $wo ($(minmax "${without[@]}"))"
echo "  with agent:    $w ($(minmax "${with[@]}"))"
echo "  added per tick: $(awk -v a="$w" -v b="$wo" 'BEGIN{printf "%.1f", a-b}') ns (goal <= 100 ns)"
added=()
for i in "${!with[@]}"; do added+=("$(awk -v a="${with[$i]}" -v b="${without[$i]}" 'BEGIN{printf "%.1f", a-b}')"); done
result agent_tick "ns per epoll_wait without the agent" ns "${without[*]}"
result agent_tick "ns per epoll_wait with the agent" ns "${with[*]}"
result agent_tick "ns added per tick (paired)" ns "${added[*]}" "<= 100 ns" "$(meets "$(median "${added[*]}")" "<=" 100)"
