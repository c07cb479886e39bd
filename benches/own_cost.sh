#!/usr/bin/env bash
# looptop's own cost while attached: CPU (utime+stime, % of one core) and peak memory (VmHWM) of
# `looptop record --pid` at the default rate (997 Hz) over SECS of load on the Node HTTP server of
# probe_overhead.sh: the server with the agent preloaded (agent + perf stacks), and started with
# nothing (perf mode). Needs root or CAP_PERFMON. Usage: benches/own_cost.sh [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
secs=${1:-60}
rounds=${2:-1}
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (perf)"; exit 0; }
cargo build --release -q
lt=$PWD/target/release/looptop
agent=$("$lt" agent path)
hz=$(getconf CLK_TCK)
pin0=""; pin1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi
work=$(mktemp -d)
srv=""; ltp=""
cleanup() { [ -n "$ltp" ] && kill -TERM "$ltp" 2>/dev/null; [ -n "$srv" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cpu_ticks() { local s; s=$(cat "/proc/$1/stat"); s=${s##*) }; set -- $s; echo $((${12} + ${13})); }
declare -A cpu hwm
for r in $(seq "$rounds"); do
  for mode in agent perf; do
    : >"$work/srv.out"
    preload=""; [ "$mode" = agent ] && preload=$agent
    $pin0 env -u NODE_OPTIONS LD_PRELOAD="$preload" node benches/http_server.js >"$work/srv.out" &
    srv=$!
    for _ in $(seq 100); do grep -q listening "$work/srv.out" && break; sleep 0.05; done
    port=$(awk '/listening/ {print $2}' "$work/srv.out")
    $pin1 node benches/http_load.js "$port" 1 16 >/dev/null
    "$lt" record -q --pid "$srv" -o "$work/r.rec" 2>"$work/lt.err" &
    ltp=$!
    sleep 3
    c0=$(cpu_ticks "$ltp"); t0=$(date +%s.%N)
    rps=$($pin1 node benches/http_load.js "$port" "$secs" 16 | awk '{print $1}')
    c1=$(cpu_ticks "$ltp"); t1=$(date +%s.%N)
    h=$(awk '/^VmHWM:/ {print $2}' "/proc/$ltp/status")
    c=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.2f", 100 * c / hz / (t1 - t0)}')
    kill -TERM "$ltp"; wait "$ltp" || true; ltp=""
    kill "$srv"; wait "$srv" 2>/dev/null || true; srv=""
    m=$(awk -v k="$h" 'BEGIN{printf "%.1f", k/1024}')
    cpu[$mode]+="$c "; hwm[$mode]+="$m "
    printf '  %-6s looptop %5s%% of a core, VmHWM %s MB, server %s req/s, mode %s\n' "$mode" "$c" "$m" "$rps" \
      "$("$lt" report --json "$work/r.rec" 2>/dev/null | jq -r .mode)"
  done
done
result own_cost "looptop CPU attached ${secs} s, agent + perf stacks at 997 Hz" "% of a core" "${cpu[agent]}" "<= 3 %" "$(meets "$(median "${cpu[agent]}")" "<=" 3)"
result own_cost "looptop peak memory (VmHWM), agent + perf" MB "${hwm[agent]}"
result own_cost "looptop CPU attached ${secs} s, perf mode at 997 Hz" "% of a core" "${cpu[perf]}" "<= 3 %" "$(meets "$(median "${cpu[perf]}")" "<=" 3)"
result own_cost "looptop peak memory (VmHWM), perf mode" MB "${hwm[perf]}"
