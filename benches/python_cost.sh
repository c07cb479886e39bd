#!/usr/bin/env bash
# What reading Python frames costs an asyncio server (issue 17): benches/py_http_server.py (a
# request 30 Python calls deep, a 60 ms stall every 4000 requests) under closed-loop load
# (http_load.js, 16 keep-alive connections), in rotating rounds: plain; the agent preloaded
# without its Python walk (LOOPTOP_PYTHON_FRAMES=0); the agent with it; and, as root, started
# with nothing and attached with `looptop record --pid` (BPF stacks, frames read from outside).
# Throughput ratios to the same round's plain run, medians of the rounds; then the time per stack read and named
# from outside (cargo bench --bench python_walk). Usage: benches/python_cost.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
rounds=${1:-5}
secs=${2:-5}
cargo build --release -q
lt=$PWD/target/release/looptop
agent=$("$lt" agent path)
pin0=""; pin1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi
variants="plain nowalk walk"
[ "$(id -u)" -eq 0 ] && variants="$variants attached"
work=$(mktemp -d)
srv=""; ltp=""
cleanup() { [ -n "$ltp" ] && kill -TERM "$ltp" 2>/dev/null; [ -n "$srv" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
declare -A rps ratios
for r in $(seq "$rounds"); do
  plain=""
  for v in $variants; do
    : >"$work/srv.out"
    case $v in
      nowalk) env=(LD_PRELOAD="$agent" LOOPTOP_PYTHON_FRAMES=0) ;;
      walk) env=(LD_PRELOAD="$agent") ;;
      *) env=() ;;
    esac
    $pin0 env "${env[@]}" python3 benches/py_http_server.py >"$work/srv.out" &
    srv=$!
    for _ in $(seq 100); do grep -q listening "$work/srv.out" && break; sleep 0.05; done
    port=$(awk '/listening/ {print $2}' "$work/srv.out")
    if [ "$v" = attached ]; then
      "$lt" record -q --pid "$srv" -o "$work/r.rec" 2>/dev/null &
      ltp=$!
      sleep 2
    fi
    $pin1 node benches/http_load.js "$port" 1 16 >/dev/null
    n=$($pin1 node benches/http_load.js "$port" "$secs" 16 | awk '{print $1}')
    rps[$v]+="$n "
    # Paired with this round's plain run: the server's throughput drifts between rounds.
    if [ "$v" = plain ]; then plain=$n; else ratios[$v]+="$(ratio "$n" "$plain") "; fi
    [ -n "$ltp" ] && { kill -TERM "$ltp"; wait "$ltp" || true; ltp=""; }
    kill "$srv"; wait "$srv" 2>/dev/null || true; srv=""
    printf '  round %s %-8s %6s req/s\n' "$r" "$v" "$n"
  done
done
echo "plain: median $(median "${rps[plain]}") req/s ($(minmax "${rps[plain]}"))"
for v in $variants; do
  [ "$v" = plain ] && continue
  printf '%-8s throughput / plain of the same round: median %s (%s)\n' "$v" "$(median ${ratios[$v]})" "$(minmax ${ratios[$v]})"
  result python_cost "asyncio server throughput, $v / plain" ratio "${ratios[$v]}"
done
cargo bench -q --bench python_walk 2>/dev/null
