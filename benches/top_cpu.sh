#!/usr/bin/env bash
# looptop's own CPU while the live view (`looptop top --pid`) is attached to a busy Node HTTP
# server (benches/http_server.js under closed-loop load), in a real terminal (tmux, 120x40):
#   agent        the server preloads the agent; `top --rate 0` (no perf stacks)
#   agent+perf   the same with perf stacks at the default 997 Hz (root or CAP_PERFMON)
#   perf         the server started with nothing; perf mode (root or CAP_PERFMON)
# CPU is utime+stime of looptop from /proc/PID/stat over the load window, in % of one core;
# the server's throughput is shown next to it. Usage: benches/top_cpu.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-20}
command -v tmux >/dev/null || { echo "SKIP: needs tmux"; exit 0; }
cargo build --release -q
lt=$PWD/target/release/looptop
agent=$("$lt" agent path)
hz=$(getconf CLK_TCK)
perf_ok=1
capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
if [ "$(id -u)" -ne 0 ] && (( (0x${capeff:-0} >> 38 & 1) == 0 )); then perf_ok=0; fi
pin0=""; pin1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi

work=$(mktemp -d)
sock="looptop-bench-$$"
srv_pid=""
cleanup() {
  trap - EXIT INT TERM
  tmux -L "$sock" kill-server 2>/dev/null || true
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cpu_ticks() { local s; s=$(cat "/proc/$1/stat"); s=${s##*) }; set -- $s; echo $((${12} + ${13})); }
now() { date +%s.%N; }

measure() { # agent|agent+perf|perf -> sets cpu, rps
  local preload="" args="--rate 0" port lt_pid c0 c1 t0 t1
  case $1 in
    agent) preload=$agent ;;
    agent+perf) preload=$agent; args="" ;;
    perf) args="--mode perf" ;;
  esac
  : >"$work/srv.out"
  $pin0 env -u NODE_OPTIONS LD_PRELOAD="$preload" node benches/http_server.js >"$work/srv.out" &
  srv_pid=$!
  for _ in $(seq 100); do grep -q listening "$work/srv.out" && break; sleep 0.05; done
  port=$(awk '/listening/ {print $2}' "$work/srv.out")
  [ -n "$port" ] || { echo "FAIL: the server did not start" >&2; exit 1; }
  $pin1 node benches/http_load.js "$port" 1 16 >/dev/null
  tmux -L "$sock" -f /dev/null new-session -d -s top -x 120 -y 40 \
    "exec $lt top $args --pid $srv_pid 2>$work/lt.err"
  lt_pid=$(tmux -L "$sock" display-message -p -t top '#{pane_pid}')
  for _ in $(seq 100); do tmux -L "$sock" capture-pane -p -t top | grep -q 'Loops (' && break; sleep 0.1; done
  tmux -L "$sock" capture-pane -p -t top | grep -q 'Loops (' || { echo "FAIL: no view"; tmux -L "$sock" capture-pane -p -t top; cat "$work/lt.err"; exit 1; } >&2
  sleep 1
  c0=$(cpu_ticks "$lt_pid"); t0=$(now)
  rps=$($pin1 node benches/http_load.js "$port" "$secs" 16 | awk '{print $1}')
  c1=$(cpu_ticks "$lt_pid"); t1=$(now)
  cpu=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.2f", 100 * c / hz / (t1 - t0)}')
  mode=$(tmux -L "$sock" capture-pane -p -t top | head -n2 | grep -oE 'agent\+perf|agent|perf' | head -n1)
  tmux -L "$sock" send-keys -t top q
  for _ in $(seq 100); do kill -0 "$lt_pid" 2>/dev/null || break; sleep 0.1; done
  tmux -L "$sock" kill-server 2>/dev/null || true
  kill "$srv_pid"; wait "$srv_pid" 2>/dev/null || true
  srv_pid=""
}

variants="agent"
if [ "$perf_ok" = 1 ]; then variants="agent agent+perf perf"; else echo "note: no perf privileges: agent only"; fi
echo "looptop top --pid on a node HTTP server under load (16 connections), $secs s x $rounds rounds, view 120x40"
declare -A all
for r in $(seq "$rounds"); do
  for v in $variants; do
    measure "$v"
    all[$v]+="$cpu "
    printf '  round %d %-10s looptop %5s%% of a core (view says mode %s), server %s req/s\n' "$r" "$v" "$cpu" "$mode" "$rps"
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "summary: looptop CPU, median of $rounds (goal <= 3 % of a core)"
for v in $variants; do
  # shellcheck disable=SC2086
  printf '  %-10s %s %%  (%s)\n' "$v" "$(median ${all[$v]})" "${all[$v]% }"
done
