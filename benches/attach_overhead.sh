#!/usr/bin/env bash
# The cost of attaching agentlessly: throughput of a Node HTTP server (benches/http_server.js,
# started with nothing: no looptop, no LD_PRELOAD) under closed-loop load, without and with
#   looptop record --mode perf --pid SERVER -o REC        (default rate, 997 Hz)
# attached, in alternating rounds (a fresh server per run, the order swapped every round); and
# looptop's own CPU (utime+stime from /proc/PID/stat over the load window) and peak RSS (VmHWM)
# while attached. Needs root or CAP_PERFMON (perf). Usage: benches/attach_overhead.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
rounds=${1:-6}
secs=${2:-10}
capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
if [ "$(id -u)" -ne 0 ] && (( (0x${capeff:-0} >> 38 & 1) == 0 )); then # 38 = CAP_PERFMON
  echo "SKIP: needs root or CAP_PERFMON"
  exit 0
fi
cargo build --release -q
lt=$PWD/target/release/looptop
hz=$(getconf CLK_TCK)
pin0=""; pin1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi

work=$(mktemp -d)
srv_pid=""; lt_pid=""; load_pid=""
cleanup() {
  trap - EXIT INT TERM
  # looptop first, with SIGINT, so it detaches (closes its perf events) before the server goes.
  if [ -n "$lt_pid" ] && kill -0 "$lt_pid" 2>/dev/null; then kill -INT "$lt_pid" 2>/dev/null || true; fi
  for p in $load_pid $srv_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cpu_ticks() { # pid -> utime+stime (clock ticks); the fields after the ")" that ends comm
  local s
  s=$(cat "/proc/$1/stat")
  s=${s##*) }
  set -- $s
  echo $((${12} + ${13}))
}
now() { date +%s.%N; }
fail() { # message: print it, looptop's stderr, and stop
  echo "FAIL: $1" >&2
  [ -s "$work/lt.err" ] && sed 's/^/  looptop: /' "$work/lt.err" >&2
  exit 1
}

# One run: fresh server, 1 s warm-up, [attach], load for $secs, [detach]. Sets res="rps p99"
# and, attached, cpu (% of one core over the load window), hwm (kB), samples, lost.
measure() { # plain|attached
  local port t0 t1 c0 c1
  : >"$work/srv.out"
  # Server on core 0, load on core 1 (when there are two); looptop is not pinned: it runs
  # where the scheduler puts it, as it would for a user.
  $pin0 env -u LD_PRELOAD -u NODE_OPTIONS node benches/http_server.js >"$work/srv.out" &
  srv_pid=$!
  for _ in $(seq 100); do grep -q listening "$work/srv.out" && break; sleep 0.05; done
  port=$(awk '/listening/ {print $2}' "$work/srv.out")
  [ -n "$port" ] || fail "the server did not start"
  $pin1 node benches/http_load.js "$port" 1 16 >/dev/null # warm-up (before attaching)
  if [ "$1" = attached ]; then
    rm -f "$work/r.rec"
    "$lt" record --mode perf --pid "$srv_pid" -o "$work/r.rec" ${LOOPTOP_ATTACH_ARGS:-} 2>"$work/lt.err" &
    lt_pid=$!
    # Attached once the `process` line is written: it follows the opening of every thread's
    # perf events and of the runtime uprobes.
    for _ in $(seq 200); do
      grep -q '^{"t":"process"' "$work/r.rec" 2>/dev/null && break
      kill -0 "$lt_pid" 2>/dev/null || { wait "$lt_pid" || true; fail "looptop record --pid exited while attaching"; }
      sleep 0.05
    done
    grep -q '^{"t":"process"' "$work/r.rec" 2>/dev/null || fail "looptop record --pid not attached after 10 s"
    head -n1 "$work/r.rec" | grep -q '"mode":"perf"' || fail "the recording is not in perf mode: $(head -n1 "$work/r.rec")"
    sleep 0.5 # let the first poll (perf map, symbols of what is already mapped) pass
    c0=$(cpu_ticks "$lt_pid"); t0=$(now)
  fi
  $pin1 node benches/http_load.js "$port" "$secs" 16 >"$work/load.out" &
  load_pid=$!
  wait "$load_pid"; load_pid=""
  res=$(cat "$work/load.out")
  if [ "$1" = attached ]; then
    kill -0 "$lt_pid" 2>/dev/null || fail "looptop record --pid exited during the load"
    c1=$(cpu_ticks "$lt_pid"); t1=$(now)
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$lt_pid/status")
    cpu=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.2f", 100 * c / hz / (t1 - t0)}')
    kill -INT "$lt_pid"
    wait "$lt_pid" || fail "looptop record --pid exited with status $? after SIGINT"
    lt_pid=""
    samples=$(grep -c '^{"t":"stack"' "$work/r.rec" || true)
    # perf records lost to full rings: `dropped` lines in perf mode (`lost_samples` otherwise).
    lost=$(sed -n 's/^{"t":"\(dropped\|lost_samples\)".*"count":\([0-9]*\).*/\2/p' "$work/r.rec" | awk '{s+=$1} END {print s+0}')
  fi
  kill "$srv_pid"; wait "$srv_pid" 2>/dev/null || true
  srv_pid=""
}

rps_plain=(); rps_att=(); p99_plain=(); p99_att=(); ratios=(); cpus=(); hwms=()
echo "node HTTP server, 16 connections, $secs s x $rounds alternating rounds; looptop record --mode perf --pid (997 Hz)"
for r in $(seq "$rounds"); do
  if (( r % 2 )); then order="plain attached"; else order="attached plain"; fi
  for v in $order; do
    measure "$v"
    if [ "$v" = plain ]; then
      rp=${res% *}; rps_plain+=("$rp"); p99_plain+=("${res#* }")
    else
      ra=${res% *}; rps_att+=("$ra"); p99_att+=("${res#* }"); cpus+=("$cpu"); hwms+=("$hwm")
    fi
  done
  ratio=$(awk -v a="$ra" -v b="$rp" 'BEGIN{printf "%.3f", a/b}')
  ratios+=("$ratio")
  printf '  round %d (%s): plain %6s req/s  attached %6s req/s  ratio %s | looptop %5s%% CPU, VmHWM %d MB, %s stacks, %s records lost\n' \
    "$r" "${order// /, }" "$rp" "$ra" "$ratio" "$cpu" "$((hwm / 1024))" "$samples" "$lost"
done

echo "summary (median, min .. max over $rounds rounds)"
echo "  plain:    $(median "${rps_plain[@]}") req/s ($(minmax "${rps_plain[@]}"))   p99 $(median "${p99_plain[@]}") ms ($(minmax "${p99_plain[@]}"))"
echo "  attached: $(median "${rps_att[@]}") req/s ($(minmax "${rps_att[@]}"))   p99 $(median "${p99_att[@]}") ms ($(minmax "${p99_att[@]}"))"
echo "  throughput ratio attached/plain: $(median "${ratios[@]}") ($(minmax "${ratios[@]}")) (goal >= 0.95)"
echo "  looptop CPU while attached: median $(median "${cpus[@]}") %, max $(maxof "${cpus[@]}") % of one core (goal <= 3 %)"
echo "  looptop max RSS (VmHWM): $(awk -v k="$(maxof "${hwms[@]}")" 'BEGIN{printf "%.1f", k/1024}') MB"
result perf_mode "throughput, plain" "req/s" "${rps_plain[*]}"
result perf_mode "throughput, attached in perf mode (997 Hz)" "req/s" "${rps_att[*]}"
result perf_mode "throughput ratio attached / plain (paired rounds)" ratio "${ratios[*]}" ">= 0.95" "$(meets "$(median "${ratios[*]}")" ">=" 0.95)"
result perf_mode "p99 latency, plain" ms "${p99_plain[*]}"
result perf_mode "p99 latency, attached" ms "${p99_att[*]}"
result perf_mode "looptop CPU while attached" "% of a core" "${cpus[*]}" "<= 3 %" "$(meets "$(median "${cpus[*]}")" "<=" 3)"
