#!/usr/bin/env bash
# Hours of `looptop record` (issue 16): `record -q -o r.rec -- node benches/http_server.js` at the
# default rate under closed-loop load (benches/http_load.js, 16 connections, one load process per
# minute), server on core 0 and load on core 1. Every minute: looptop's VmRSS and VmHWM, the
# recording's size, the server's throughput. At the end: `report` and `flame --from` of the whole
# recording and `flame --from --since/--until` of one minute in its middle — wall time and peak
# memory of each (GNU time) — and the samples the report says were lost.
# Needs root (perf/BPF stacks). Usage: benches/long_record.sh [minutes] [table.md]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
minutes=${1:-60}
table=${2:-}
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (perf)"; exit 0; }
cargo build --release -q
work=$(mktemp -d)
# A copy: the binary measured stays the same should target/ be rebuilt meanwhile.
cp target/release/looptop "$work/looptop"
lt=$work/looptop
pin0=""; pin1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin0="taskset -c 0"; pin1="taskset -c 1"; fi
ltp=""
cleanup() { [ -n "$ltp" ] && kill -TERM "$ltp" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
$pin0 setsid env -u NODE_OPTIONS "$lt" record -q -o "$work/r.rec" -- node benches/http_server.js >"$work/srv.out" 2>"$work/lt.err" &
ltp=$!
for _ in $(seq 200); do grep -q listening "$work/srv.out" && break; sleep 0.05; done
port=$(awk '/listening/ {print $2}' "$work/srv.out")
[ -n "$port" ] || { echo "the server did not start:"; cat "$work/lt.err"; exit 1; }
rows="| minute | looptop VmRSS (MB) | VmHWM (MB) | recording (MB) | server req/s |"$'\n'"|---|---|---|---|---|"
rss_all=""
for m in $(seq "$minutes"); do
  rps=$($pin1 node benches/http_load.js "$port" 60 16 | awk '{print $1}')
  rss=$(mb "$(kb "$ltp" VmRSS)"); hwm=$(mb "$(kb "$ltp" VmHWM)")
  size=$(awk -v b="$(stat -c %s "$work/r.rec")" 'BEGIN{printf "%.1f", b/1e6}')
  rss_all+="$rss "
  rows+=$'\n'"| $m | $rss | $hwm | $size | $rps |"
  printf '  minute %3d: looptop VmRSS %s MB, VmHWM %s MB, recording %s MB, %s req/s\n' "$m" "$rss" "$hwm" "$size" "$rps"
done
kill -TERM "$ltp"; wait "$ltp" || true; ltp=""
size=$(awk -v b="$(stat -c %s "$work/r.rec")" 'BEGIN{printf "%.1f", b/1e6}')
timed() { /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/cmd.err" || { cat "$work/cmd.err"; }; cat "$work/time"; }
read -r rep_s rep_kb < <(timed "$lt" report --json="$work/r.json" "$work/r.rec")
read -r fl_s fl_kb < <(timed "$lt" flame -q --from "$work/r.rec" -o "$work/all.svg")
half=$((minutes / 2))
read -r win_s win_kb < <(timed "$lt" flame -q --from "$work/r.rec" --since "${half}m" --until "$((half + 1))m" -o "$work/win.svg")
lost=$(jq '.lost_samples' "$work/r.json"); samples=$(jq '.samples' "$work/r.json")
rss1=$(echo "$rss_all" | awk '{print $1}'); rssn=$(echo "$rss_all" | awk '{print $NF}')
echo "recording: $size MB for $minutes min; $samples samples, $lost lost (as the source said)"
echo "looptop VmRSS minute 1: $rss1 MB, minute $minutes: $rssn MB, max $(maxof "$rss_all") MB"
echo "report: ${rep_s} s, $(mb "$rep_kb") MB; flame --from: ${fl_s} s, $(mb "$fl_kb") MB; one-minute window: ${win_s} s, $(mb "$win_kb") MB"
if [ -n "$table" ]; then printf '%s\n' "$rows" >"$table"; fi
result long_record "recording size after $minutes min" MB "$size" "<= 200 MB" "$(meets "$size" "<=" 200)"
result long_record "looptop VmRSS, minute 1 to $minutes (max)" MB "$rss_all" "<= 100 MB, flat" "$(meets "$(maxof "$rss_all")" "<=" 100)"
result long_record "report of the whole recording" s "$rep_s" "<= 5 s" "$(meets "$rep_s" "<=" 5)"
result long_record "report peak memory" MB "$(mb "$rep_kb")" "<= 200 MB" "$(meets "$(mb "$rep_kb")" "<=" 200)"
result long_record "flame --from the whole recording" s "$fl_s" "<= 5 s" "$(meets "$fl_s" "<=" 5)"
result long_record "flame --from peak memory" MB "$(mb "$fl_kb")" "<= 200 MB" "$(meets "$(mb "$fl_kb")" "<=" 200)"
result long_record "flame --from --since/--until one minute" s "$win_s"
result long_record "flame of one minute, peak memory" MB "$(mb "$win_kb")"
