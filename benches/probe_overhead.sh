#!/usr/bin/env bash
# Throughput and p99 of a Node HTTP server (benches/http_server.js) under closed-loop load, in
# three variants run as alternating rounds: no agent; agent without probe (LOOPTOP_PROBE=0);
# agent with the Node probe. Usage: benches/probe_overhead.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
rounds=${1:-5}
secs=${2:-3}
cargo build --release -q
agent=$(target/release/looptop agent path)
pin0=""; pin1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi

measure() { # env... -> "rps p99"
  local out port pid
  out=$(mktemp)
  # Server on core 0, load on core 1 (when there are two): far less noise than sharing.
  $pin0 env "$@" node benches/http_server.js >"$out" &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.05; done
  port=$(awk '/listening/ {print $2}' "$out")
  $pin1 node benches/http_load.js "$port" 1 16 >/dev/null # warm-up
  $pin1 node benches/http_load.js "$port" "$secs" 16
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$out"
}

declare -A rps p99 last
pairs_agent=""; pairs_probe=""; p99_delta=""
for r in $(seq "$rounds"); do
  # Alternate the order every round, so drift does not favour one variant.
  if (( r % 2 )); then order="none agent probe"; else order="probe agent none"; fi
  for v in $order; do
    case $v in
      none) res=$(measure LOOPTOP_X=0) ;;
      agent) res=$(measure LD_PRELOAD="$agent" LOOPTOP_PROBE=0) ;;
      probe) res=$(measure LD_PRELOAD="$agent") ;;
    esac
    rps[$v]+="${res% *} "; p99[$v]+="${res#* } "; last[$v]=$res
  done
  pairs_agent+="$(ratio "${last[agent]% *}" "${last[none]% *}") "
  pairs_probe+="$(ratio "${last[probe]% *}" "${last[none]% *}") "
  p99_delta+="$(awk -v a="${last[probe]#* }" -v b="${last[none]#* }" 'BEGIN{printf "%.2f", a-b}') "
done
range() { minmax "$1"; }
echo "node HTTP server, 16 connections, $secs s x $rounds alternating rounds (median, min .. max)"
for v in none agent probe; do
  printf '  %-6s %8s req/s (%s)   p99 %s ms (%s)\n' "$v" "$(median "${rps[$v]}")" "$(range "${rps[$v]}")" \
    "$(median "${p99[$v]}")" "$(range "${p99[$v]}")"
done
base=$(median "${rps[none]}")
for v in agent probe; do
  echo "  throughput ratio $v/none: $(awk -v a="$(median "${rps[$v]}")" -v b="$base" 'BEGIN{printf "%.3f", a/b}') (goal >= 0.99)"
done
result agent_overhead "throughput, no agent" "req/s" "${rps[none]}"
result agent_overhead "throughput, agent + Node probe" "req/s" "${rps[probe]}"
result agent_overhead "throughput ratio agent+probe / none (paired rounds)" ratio "$pairs_probe" ">= 0.99" "$(meets "$(median "$pairs_probe")" ">=" 0.99)"
result agent_overhead "throughput ratio agent alone (LOOPTOP_PROBE=0) / none" ratio "$pairs_agent" ">= 0.99" "$(meets "$(median "$pairs_agent")" ">=" 0.99)"
result agent_overhead "p99 latency, no agent" ms "${p99[none]}"
result agent_overhead "p99 latency, agent + Node probe" ms "${p99[probe]}"
result agent_overhead "p99 added by agent+probe (paired)" ms "$p99_delta" "within noise"
