#!/usr/bin/env bash
# The cost of attaching agentlessly: throughput of a Node HTTP server (benches/http_server.js,
# started with nothing: no looptop, no LD_PRELOAD) under closed-loop load, without and with
#   looptop record --mode perf --pid SERVER -o REC        (default rate, 997 Hz)
# attached, once with the BPF source (the default) and once with the perf-event source it falls
# back on (LOOPTOP_NO_BPF=1), in rotating rounds (a fresh server per run, the order rotated
# every round); and
# looptop's own CPU (utime+stime from /proc/PID/stat over the load window) and peak RSS (VmHWM)
# while attached. A fourth variant, `floor`, is the sampling alone as perf itself does it
# (`perf record -e cpu-clock -a` at the same period, no stacks, no ticks): what any CPU-wide
# profiler at 997 Hz costs this server on this machine. Needs root or CAP_PERFMON (perf). Usage: benches/attach_overhead.sh [rounds] [seconds]
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
  if [ -n "$lt_pid" ] && kill -0 "$lt_pid" 2>/dev/null; then kill -TERM "$lt_pid" 2>/dev/null || true; fi
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
measure() { # plain|bpf|perf
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
  if [ "$1" = floor ]; then
    perf record -q -e cpu-clock -a -c $((1000000000 / 997)) -o "$work/floor.data" >/dev/null 2>&1 &
    lt_pid=$!
    sleep 1
  elif [ "$1" != plain ]; then
    rm -f "$work/r.rec"
    local nobpf=""
    [ "$1" = perf ] && nobpf=1
    LOOPTOP_NO_BPF=$nobpf "$lt" record --mode perf --pid "$srv_pid" -o "$work/r.rec" ${LOOPTOP_ATTACH_ARGS:-} 2>"$work/lt.err" &
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
  if [ "$1" = floor ]; then
    kill -TERM "$lt_pid" 2>/dev/null; wait "$lt_pid" 2>/dev/null || true
    lt_pid=""; rm -f "$work/floor.data"
  elif [ "$1" != plain ]; then
    kill -0 "$lt_pid" 2>/dev/null || fail "looptop record --pid exited during the load"
    c1=$(cpu_ticks "$lt_pid"); t1=$(now)
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$lt_pid/status")
    cpu=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.2f", 100 * c / hz / (t1 - t0)}')
    kill -TERM "$lt_pid"
    wait "$lt_pid" || fail "looptop record --pid exited with status $? after SIGINT"
    lt_pid=""
    samples=$(grep -c '^{"t":"stack"' "$work/r.rec" || true)
    # perf records lost to full rings: `dropped` lines in perf mode (`lost_samples` otherwise).
    lost=$(sed -n 's/^{"t":"\(dropped\|lost_samples\)".*"count":\([0-9]*\).*/\2/p' "$work/r.rec" | awk '{s+=$1} END {print s+0}')
  fi
  kill "$srv_pid"; wait "$srv_pid" 2>/dev/null || true
  srv_pid=""
}

rps_plain=(); p99_plain=()
declare -A rps p99 ratios cpus hwms
echo "node HTTP server, 16 connections, $secs s x $rounds rotating rounds; looptop record --mode perf --pid (997 Hz), BPF and perf events"
orders=("plain bpf perf floor" "bpf perf floor plain" "perf floor plain bpf" "floor plain bpf perf")
for r in $(seq "$rounds"); do
  order=${orders[$(( (r - 1) % 4 ))]}
  declare -A got=()
  for v in $order; do
    measure "$v"
    if [ "$v" = plain ]; then
      rp=${res% *}; rps_plain+=("$rp"); p99_plain+=("${res#* }")
    elif [ "$v" = floor ]; then
      got[$v]=${res% *}
    else
      got[$v]=${res% *}
      rps[$v]+="${res% *} "; p99[$v]+="${res#* } "; cpus[$v]+="$cpu "; hwms[$v]+="$hwm "
      printf '    %-4s %6s req/s | looptop %5s%% CPU, VmHWM %d MB, %s stack lines, %s records lost\n' \
        "$v" "${res% *}" "$cpu" "$((hwm / 1024))" "$samples" "$lost"
    fi
  done
  line="  round $r ($order): plain $rp req/s"
  for v in bpf perf floor; do
    ratio=$(awk -v a="${got[$v]}" -v b="$rp" 'BEGIN{printf "%.3f", a/b}')
    ratios[$v]+="$ratio "
    line+="  $v ratio $ratio"
  done
  echo "$line"
  unset got
done

echo "summary (median, min .. max over $rounds rounds)"
echo "  plain: $(median "${rps_plain[@]}") req/s ($(minmax "${rps_plain[@]}"))   p99 $(median "${p99_plain[@]}") ms ($(minmax "${p99_plain[@]}"))"
result perf_mode "throughput, plain" "req/s" "${rps_plain[*]}"
result perf_mode "p99 latency, plain" ms "${p99_plain[*]}"
for v in bpf perf; do
  read -ra R <<<"${rps[$v]}"; read -ra P <<<"${p99[$v]}"; read -ra Q <<<"${ratios[$v]}"; read -ra C <<<"${cpus[$v]}"; read -ra H <<<"${hwms[$v]}"
  echo "  $v: $(median "${R[@]}") req/s ($(minmax "${R[@]}"))   p99 $(median "${P[@]}") ms   ratio $(median "${Q[@]}") ($(minmax "${Q[@]}"))   looptop CPU $(median "${C[@]}") % (max $(maxof "${C[@]}"))   VmHWM $(awk -v k="$(maxof "${H[@]}")" 'BEGIN{printf "%.1f", k/1024}') MB"
  name=$([ "$v" = bpf ] && echo "BPF source" || echo "perf events (LOOPTOP_NO_BPF=1)")
  result perf_mode "throughput, attached, $name (997 Hz)" "req/s" "${R[*]}"
  result perf_mode "throughput ratio attached / plain, $name" ratio "${Q[*]}" ">= 0.97" "$(meets "$(median "${Q[*]}")" ">=" 0.97)"
  result perf_mode "p99 latency, attached, $name" ms "${P[*]}"
  result perf_mode "looptop CPU while attached, $name" "% of a core" "${C[*]}" "<= 1 %" "$(meets "$(median "${C[*]}")" "<=" 1)"
  result perf_mode "looptop VmHWM attached, $name" MB "$(for k in "${H[@]}"; do awk -v k="$k" 'BEGIN{printf "%.1f ", k/1024}'; done)" "<= 64 MB" "$(meets "$(awk -v k="$(maxof "${H[@]}")" 'BEGIN{printf "%.1f", k/1024}')" "<=" 64)"
done
read -ra Q <<<"${ratios[floor]}"
echo "  floor (perf record -e cpu-clock -a, 997 Hz, no stacks): ratio $(median "${Q[@]}") ($(minmax "${Q[@]}"))"
result perf_mode "throughput ratio, perf record -e cpu-clock -a at 997 Hz without stacks (the floor)" ratio "${Q[*]}"
