#!/usr/bin/env bash
# The tools users know, on the server of probe_overhead.sh under the same closed-loop load:
# throughput with `clinic doctor` and with `0x` attached vs plain, and how long each takes to
# produce its report after the server is stopped (SIGINT); looptop (`looptop record` with the
# agent and perf stacks, then `looptop flame --from`) measured the same way. clinic and 0x are
# installed from the npm registry into ~/.cache/looptop-bench/npm.
# Usage: benches/peers.sh [rounds] [seconds]
set -uo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
rounds=${1:-3}
secs=${2:-10}
cargo build --release -q
lt=$PWD/target/release/looptop
npm_dir=$HOME/.cache/looptop-bench/npm
if [ ! -x "$npm_dir/node_modules/.bin/clinic" ] || [ ! -x "$npm_dir/node_modules/.bin/0x" ]; then
  echo "installing clinic and 0x from npm into $npm_dir"
  mkdir -p "$npm_dir"
  npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error clinic 0x >/dev/null 2>&1 || true
fi
# clinic asks on a terminal whether it may send usage statistics, and silently does nothing
# without one unless told no; neither tool should look for updates here.
export NO_INSIGHT=1 NO_UPDATE_NOTIFIER=1
pin0=""; pin1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi
work=$(mktemp -d)
tool_pid=""
cleanup() { [ -n "$tool_pid" ] && kill -INT "$tool_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b - a}'; }

# run TOOL: starts the server under it, loads it, stops it; sets rps and report (s after SIGINT).
run() {
  local port
  : >"$work/out"
  rm -rf "$work/dest"; mkdir -p "$work/dest"
  case $1 in
    plain) $pin0 node benches/http_server.js >"$work/out" 2>&1 & ;;
    clinic) (cd "$work/dest" && exec $pin0 "$npm_dir/node_modules/.bin/clinic" doctor --open=false -- node "$OLDPWD/benches/http_server.js") >"$work/out" 2>&1 & ;;
    0x) (cd "$work/dest" && exec $pin0 "$npm_dir/node_modules/.bin/0x" -- node "$OLDPWD/benches/http_server.js") >"$work/out" 2>&1 & ;;
    looptop) $pin0 "$lt" record -q -o "$work/dest/l.rec" -- node benches/http_server.js >"$work/out" 2>&1 & ;;
  esac
  tool_pid=$!
  for _ in $(seq 600); do grep -q listening "$work/out" && break; sleep 0.05; done
  port=$(grep -o 'listening [0-9]*' "$work/out" | head -n1 | cut -d' ' -f2)
  [ -n "$port" ] || { echo "  $1: the server did not start: $(tail -n3 "$work/out")"; rps=""; report=""; kill "$tool_pid" 2>/dev/null; wait "$tool_pid" 2>/dev/null; tool_pid=""; return; }
  $pin1 node benches/http_load.js "$port" 1 16 >/dev/null
  rps=$($pin1 node benches/http_load.js "$port" "$secs" 16 | awk '{print $1}')
  local t0; t0=$(now)
  # The server is the tool's child (or the tool itself): SIGINT the whole group of the tool.
  pkill -INT -f "benches/http_server.js" || true
  kill -INT "$tool_pid" 2>/dev/null || true
  wait "$tool_pid" 2>/dev/null || true
  tool_pid=""
  if [ "$1" = looptop ]; then "$lt" flame -q --from "$work/dest/l.rec" -o "$work/dest/l.svg"; fi
  report=$(since "$t0")
}

declare -A all_rps all_report all_ratio
tools="plain looptop"
[ -x "$npm_dir/node_modules/.bin/clinic" ] && tools+=" clinic" || echo "clinic: not installed (npm install failed)"
[ -x "$npm_dir/node_modules/.bin/0x" ] && tools+=" 0x" || echo "0x: not installed (npm install failed)"
echo "node HTTP server, 16 connections, $secs s x $rounds rounds: plain vs under each tool"
for r in $(seq "$rounds"); do
  for t in $tools; do
    run "$t"
    [ -n "$rps" ] || continue
    all_rps[$t]+="$rps "; [ "$t" = plain ] && base=$rps
    if [ "$t" != plain ]; then
      all_report[$t]+="$report "; all_ratio[$t]+="$(ratio "$rps" "$base") "
    fi
    printf '  round %d %-8s %6s req/s  report after stop %s s\n' "$r" "$t" "$rps" "${report:-}"
  done
done
for t in $tools; do
  [ "$t" = plain ] && continue
  [ -n "${all_ratio[$t]:-}" ] || continue
  result peers "throughput ratio under $t / plain (paired rounds)" ratio "${all_ratio[$t]}"
  result peers "$t: seconds from stopping the server to its report" s "${all_report[$t]}"
done
