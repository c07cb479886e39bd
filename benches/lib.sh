# Shared by the bench scripts: statistics over whitespace-separated numbers, and `result`, which
# appends one figure as a JSON line to $BENCH_RESULT (when set) for benches/run.sh to gather
# into benches/RESULTS.md.

median() { printf '%s\n' $* | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
minof() { printf '%s\n' $* | sort -g | head -n1; }
maxof() { printf '%s\n' $* | sort -g | tail -n1; }
minmax() { echo "$(minof "$@") .. $(maxof "$@")"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", (b == 0 ? 0 : a / b)}'; }

# result BENCH FIGURE UNIT "VALUES..." [GOAL] [MET: yes|no|-] [NOTE]
# Records the median, min and max of VALUES (one per run or pair).
result() {
  local bench=$1 figure=$2 unit=$3 values=$4 goal=${5:-} met=${6:--} note=${7:-}
  [ -n "${BENCH_RESULT:-}" ] || return 0
  local n
  n=$(printf '%s\n' $values | grep -c .)
  printf '{"bench":"%s","figure":"%s","unit":"%s","median":%s,"min":%s,"max":%s,"runs":%s,"goal":"%s","met":"%s","note":"%s"}\n' \
    "$bench" "$figure" "$unit" "$(median $values)" "$(minof $values)" "$(maxof $values)" "$n" \
    "$goal" "$met" "${note//\"/\'}" >>"$BENCH_RESULT"
}

# meets VALUE OP LIMIT -> yes|no
meets() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN{ok = (op == ">=") ? v >= l : (op == "<=") ? v <= l : 0; print ok ? "yes" : "no"}'; }

# kb PID FIELD -> a /proc/PID/status size field (VmRSS, VmHWM) in kB, 0 when the process is gone.
kb() { awk "/^$2:/ {print \$2}" "/proc/$1/status" 2>/dev/null || echo 0; }
# mb KB -> MB with one decimal.
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
