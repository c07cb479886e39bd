#!/usr/bin/env python3
"""Matches injected stalls (benches/inject.js truth) with the stalls of a looptop recording, by
time on CLOCK_MONOTONIC, and prints per length and kind: found or missed, looptop's error, and
monitorEventLoopDelay's error. Usage: accuracy.py TRUTH RECORDING THRESHOLD_MS"""
import json
import statistics
import sys

truth_path, rec_path, threshold = sys.argv[1], sys.argv[2], float(sys.argv[3])
truth = [json.loads(l) for l in open(truth_path) if l.strip()]
stalls = []
for line in open(rec_path):
    ev = json.loads(line)
    if ev.get("t") == "stall":
        stalls.append((ev["start_ns"], ev["duration_ns"]))
rows = {}
for t in truth:
    start = int(t["start_ns"])
    end = start + t["ms"] * 1e6
    # The tick that contains the injected block: it starts before it and ends after it.
    hit = [s for s in stalls if s[0] <= start + 1e5 and s[0] + s[1] >= end - 1e5]
    got = hit[0][1] / 1e6 if hit else None
    key = (t["target_ms"], t["kind"])
    rows.setdefault(key, []).append((t["ms"], got, t["meld_max_ms"]))

print(f"{'ms':>6} {'kind':>7} {'found':>6} {'looptop err ms (max)':>21} {'meld err ms (max)':>18} {'meld found':>10}")
summary = {"expected": 0, "found": 0, "within": 0, "meld_within": 0, "meld_found": 0, "errors": [], "meld_errors": []}
for (ms, kind), vals in sorted(rows.items()):
    exp = [v for v in vals if v[0] >= threshold]
    found = [v for v in exp if v[1] is not None]
    err = [abs(v[1] - v[0]) for v in found]
    merr = [abs(v[2] - v[0]) for v in exp]
    mfound = [v for v in exp if v[2] >= threshold]
    tol = lambda v: max(1.0, 0.02 * v[0])
    summary["expected"] += len(exp)
    summary["found"] += len(found)
    summary["within"] += sum(1 for v in found if abs(v[1] - v[0]) <= tol(v))
    summary["meld_within"] += sum(1 for v in exp if abs(v[2] - v[0]) <= tol(v))
    summary["meld_found"] += len(mfound)
    summary["errors"] += [e / v[0] * 100 for e, v in zip(err, found)]
    summary["meld_errors"] += [abs(v[2] - v[0]) / v[0] * 100 for v in exp]
    print(f"{ms:>6} {kind:>7} {len(found):>3}/{len(exp):<2} {max(err) if err else 0:>21.3f} {max(merr) if merr else 0:>18.3f} {len(mfound):>7}/{len(exp)}")
print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)}))
print("RESULT " + json.dumps({
    "found_pct": 100.0 * summary["found"] / max(1, summary["expected"]),
    "within_pct": 100.0 * summary["within"] / max(1, summary["expected"]),
    "meld_within_pct": 100.0 * summary["meld_within"] / max(1, summary["expected"]),
    "meld_found_pct": 100.0 * summary["meld_found"] / max(1, summary["expected"]),
    "err_pct_median": statistics.median(summary["errors"]) if summary["errors"] else 0,
    "err_pct_max": max(summary["errors"]) if summary["errors"] else 0,
    "meld_err_pct_median": statistics.median(summary["meld_errors"]) if summary["meld_errors"] else 0,
}))
