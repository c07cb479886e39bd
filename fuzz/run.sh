#!/bin/sh
# Runs one fuzz target on one core: fuzz/run.sh recording|budget|segment [RUNS] [libFuzzer flags...]
#
# New inputs go to fuzz/work/TARGET (not committed); the seeds in fuzz/corpus/TARGET stay as
# they are. A crash, a hang (5 s for one input) or more than 512 MiB of memory stops the run
# and leaves the input in fuzz/artifacts/TARGET/; replay it with
#   cargo +nightly fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...
# SANITIZER=address fuzz/run.sh TARGET runs it under AddressSanitizer.
set -eu
target=${1:?usage: fuzz/run.sh recording|budget|segment [RUNS] [libFuzzer flags...]}
runs=${2:-10000000}
[ $# -ge 2 ] && shift 2 || shift 1
cd "$(dirname "$0")"
mkdir -p "work/$target" "artifacts/$target"
dict=""
[ -f "$target.dict" ] && dict="-dict=$target.dict"
# By default no sanitizer: a run is several times faster, overflow checks and debug assertions
# stay on (cargo fuzz's default) and the memory limit is kept by RSS. SANITIZER=address adds
# AddressSanitizer, which also refuses any single allocation over the limit at once (the segment
# reader's byte views of ABI types are its only unsafe code).
# ASan's quarantine of freed memory (256 MiB by default) would count against the 512 MiB.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=16}"
exec cargo +nightly fuzz run -s "${SANITIZER:-none}" "$target" "work/$target" "corpus/$target" -- \
    $dict -runs="$runs" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=5 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 "$@"
