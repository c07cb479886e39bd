#!/usr/bin/env bash
# The live view for a long time (issue 16): `looptop top --pid` (agent preloaded, perf stacks at
# the default rate) in a real terminal (tmux, 120x40) on benches/http_server.js under closed-loop
# load (one load process a minute), the server stalled 120 ms every 5 s on purpose
# (benches/stall_every.js). Every minute: looptop's VmRSS and VmHWM; at the end the screen, and
# whether it still shows the stalls (count) and their blocker (stallOnPurpose).
# Needs root (perf). Usage: benches/long_top.sh [minutes] [table.md]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
minutes=${1:-60}
table=${2:-}
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (perf)"; exit 0; }
command -v tmux >/dev/null || { echo "SKIP: needs tmux"; exit 0; }
cargo build --release -q
work=$(mktemp -d)
cp target/release/looptop "$work/looptop"
lt=$work/looptop
agent=$("$lt" agent path)
pin0=""; pin1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi
sock="looptop-long-top-$$"
srv=""
cleanup() { tmux -L "$sock" kill-server 2>/dev/null || true; [ -n "$srv" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
$pin0 env -u NODE_OPTIONS LD_PRELOAD="$agent" node -r ./benches/stall_every.js benches/http_server.js >"$work/srv.out" &
srv=$!
for _ in $(seq 200); do grep -q listening "$work/srv.out" && break; sleep 0.05; done
port=$(awk '/listening/ {print $2}' "$work/srv.out")
tmux -L "$sock" -f /dev/null new-session -d -s top -x 120 -y 40 "exec $lt top --pid $srv 2>$work/lt.err"
ltp=$(tmux -L "$sock" display-message -p -t top '#{pane_pid}')
rows="| minute | looptop VmRSS (MB) | VmHWM (MB) | server req/s |"$'\n'"|---|---|---|---|"
rss_all=""
for m in $(seq "$minutes"); do
  rps=$($pin1 node benches/http_load.js "$port" 60 16 | awk '{print $1}')
  rss=$(mb "$(kb "$ltp" VmRSS)"); hwm=$(mb "$(kb "$ltp" VmHWM)")
  rss_all+="$rss "
  rows+=$'\n'"| $m | $rss | $hwm | $rps |"
  printf '  minute %3d: looptop VmRSS %s MB, VmHWM %s MB, %s req/s\n' "$m" "$rss" "$hwm" "$rps"
done
screen=$(tmux -L "$sock" capture-pane -p -t top)
printf '%s\n' "$screen"
shown=$(printf '%s\n' "$screen" | grep -c stallOnPurpose || true)
echo "looptop VmRSS minute 1: $(echo "$rss_all" | awk '{print $1}') MB, minute $minutes: $(echo "$rss_all" | awk '{print $NF}') MB; screen lines naming stallOnPurpose: $shown"
if [ -n "$table" ]; then printf '%s\n' "$rows" >"$table"; fi
result long_top "live view VmRSS, minute 1 to $minutes (max)" MB "$rss_all" "flat" "-"
