#!/usr/bin/env python3
"""CPython's own regression tests three ways, and their per-test outcomes compared (issue 13: a
program must not be able to tell that looptop watches it).

  plain     python -m test NAMES
  run       looptop run -q -o REPORT -- python -m test NAMES
  preload   LD_PRELOAD=$(looptop agent path) python -m test NAMES

Each run writes regrtest's JUnit XML; every test id gets an outcome (pass, skip, fail, error,
xfail, xpass; "none" when the id has no result: its module crashed or timed out, or one of its
subtests failed). Ids that do not pass plain are left out by name. A test id whose outcome under
`run` or `preload` differs from plain is run again on its own, plain and in that mode, --confirm
times each: "reproducible" when it differs every time and plain never does, else "flaky". A test
file without any result (it timed out or crashed; the test regrtest's --timeout caught is named)
counts as one reproducible difference. regrtest's own verdicts per test file (failed, env
changed, ...) are compared and shown too.

Usage (benches/transparency.sh builds looptop and passes --looptop):
  transparency.py --looptop PATH [--python 3.11 ...] [--quick] [--jobs N] [--confirm N]
                  [--use RESOURCES] [--out DIR] [NAME ...]
Exit status: 0 when no difference is reproducible, 1 otherwise, 2 when a run could not be made.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

DEFAULT_TESTS = ["test_asyncio.test_events", "test_asyncio.test_base_events", "test_signal", "test_subprocess",
                 "test_selectors", "test_epoll", "test_poll", "test_gc"]
QUICK_TESTS = ["test_selectors", "test_epoll", "test_poll"]
MODES = ("plain", "run", "preload")
PASSING = ("pass", "skip", "xfail")


def find_python(spec):
    """A path, or a version such as 3.11 looked up in ~/.pyenv/versions, then as pythonX.Y."""
    if os.sep in spec:
        return spec
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{spec}.*/bin/python3")),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p.split("/versions/")[1].split("/")[0])])
    return found[-1] if found else shutil.which(f"python{spec}") or shutil.which(spec)


def version_of(python):
    out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


class Runner:
    def __init__(self, args, python, version, outdir):
        self.args = args
        self.python = python
        self.version = version
        self.outdir = outdir
        self.agent = subprocess.run([args.looptop, "agent", "path"], capture_output=True, text=True,
                                    check=True).stdout.strip()
        self.count = 0

    def run(self, mode, names, match=None, tag=""):
        """Runs regrtest once in `mode`: (outcomes by test id, verdicts by file, seconds, rc)."""
        self.count += 1
        base = os.path.join(self.outdir, f"{self.count:03d}-{mode}{tag}")
        junit = base + ".xml"
        argv = [self.python, "-m", "test", *names, "--junit-xml", junit, "-j", str(self.args.jobs),
                "--timeout", str(self.args.test_timeout)]
        if self.args.use:
            argv += ["-u", self.args.use]
        if match:
            argv += ["-m", match]
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if mode == "run":
            argv = [self.args.looptop, "run", "-q", "-o", base + ".report", "--", *argv]
        elif mode == "preload":
            env["LD_PRELOAD"] = self.agent
        argv = ["nice", "-n", "10", "timeout", "-k", "30", str(self.args.run_timeout), *argv]
        t0 = time.monotonic()
        with open(base + ".log", "w") as log:
            rc = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.outdir).returncode
        seconds = time.monotonic() - t0
        with open(base + ".log", errors="replace") as log:
            text = log.read()
        return junit_outcomes(junit), (file_verdicts(text), hung_tests(text)), seconds, rc


def junit_outcomes(path):
    """Outcome per test id from regrtest's JUnit XML ({} when there is none)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    outcomes = {}
    for case in root.iter("testcase"):
        name = case.get("name")
        if not name:
            continue  # a test whose subtest failed gets a testcase without a name
        tags = {child.tag for child in case}
        outcome = ("error" if "error" in tags else "fail" if "failure" in tags else "skip" if "skipped" in tags
                   else "xfail" if "output" in tags else "xpass" if "outcome" in tags else "pass")
        outcomes[name] = outcome
    return outcomes


SECTION = re.compile(r"^(\d+) (?:tests?|test files?) (.+?):$")


def file_verdicts(log):
    """regrtest's summary: {verdict: [test files]} for every listed verdict (failed, skipped, env
    changed, ...)."""
    verdicts = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        m = SECTION.match(line.strip())
        if not m or line.startswith(" "):
            continue
        key = re.sub(r"\s*\(.*\)", "", m.group(2)).strip()
        names = []
        for follow in lines[i + 1:]:
            if not follow.startswith("    "):
                break
            names += follow.split()
        verdicts.setdefault(key, []).extend(names)
    return verdicts


def hung_tests(log):
    """The test functions regrtest's --timeout caught running: ["test_x.py:test_name", ...]."""
    hung = []
    for block in log.split("Timeout (")[1:]:
        for line in block.splitlines()[1:]:
            m = re.search(r'File ".*/(test_\w+\.py)", line \d+ in (test_\w+)', line)
            if m:
                hung.append(f"{m.group(1)}:{m.group(2)}")
                break
            if not line.startswith(("  File", "Thread", "Current thread")):
                break
    return hung


def module_of(test_id, names):
    """The regrtest name (e.g. test_asyncio.test_events) a test id belongs to."""
    inner = re.search(r"\(([\w.]+)\)", test_id)
    tid = inner.group(1) if inner else test_id
    for n in sorted(names, key=len, reverse=True):
        if tid.startswith(f"test.{n}.") or tid == f"test.{n}":
            return n
    return None


def compare(runner, mode, results, names, args):
    """The figures of one mode against plain; differing tests are run again to tell reproducible
    differences from flaky ones."""
    plain = results["plain"][0]
    excluded = sorted(t for t, o in plain.items() if o not in PASSING)
    compared = sorted(t for t in plain if t not in excluded)
    outcomes, (verdicts, hung), seconds, rc = results[mode]
    plain_verdicts = results["plain"][1][0]
    differing = [t for t in compared if outcomes.get(t, "none") != plain[t]]
    # A test file that gave no result at all (it timed out or crashed) is one difference.
    silent = {}
    for t in differing:
        silent.setdefault(module_of(t, names), []).append(t)
    silent = {m: ids for m, ids in silent.items() if m and all(outcomes.get(t, "none") == "none" for t in ids)
              and len(ids) == sum(1 for t in compared if module_of(t, names) == m)}
    files = [{"file": m, "tests": len(ids), "hung_in": [h for h in hung if h.startswith(m.split(".")[-1] + ".py")]}
             for m, ids in silent.items()]
    details = []
    for t in [t for t in differing if module_of(t, names) not in silent]:
        module = module_of(t, names)
        seen = {"plain": [], mode: []}
        if module and args.confirm and len(details) < args.confirm_max:
            for _ in range(args.confirm):
                for m in ("plain", mode):
                    seen[m].append(runner.run(m, [module], match=t, tag="-confirm")[0].get(t, "none"))
        verdict = ("reproducible" if seen[mode] and all(o != plain[t] for o in seen[mode])
                   and all(o == plain[t] for o in seen["plain"]) else "flaky" if seen[mode] else "unconfirmed")
        details.append({"test": t, "plain": plain[t], mode: outcomes.get(t, "none"), "verdict": verdict,
                        "reruns_plain": seen["plain"], "reruns_" + mode: seen[mode]})
    # regrtest's verdicts per file, other than those it gave plain as well.
    file_diffs = {}
    for k in set(verdicts) | set(plain_verdicts):
        now, before = set(verdicts.get(k, [])), set(plain_verdicts.get(k, []))
        if now != before:
            file_diffs[k] = sorted(now - before) + sorted("-" + n for n in before - now)
    return {"python": runner.version, "mode": mode, "suite": names, "tests_plain": len(plain),
            "excluded_failing_plain": excluded, "compared": len(compared),
            "identical": len(compared) - len(differing), "differing": details, "files_without_results": files,
            "extra_ids": sorted(set(outcomes) - set(plain)), "file_verdicts_differing": file_diffs,
            "seconds": round(seconds, 1), "seconds_plain": round(results["plain"][2], 1), "exit": rc,
            "exit_plain": results["plain"][3]}


def show(fig, mode):
    print(f"  {fig['python']} {mode:8} compared {fig['compared']}, identical {fig['identical']}, "
          f"differing {fig['compared'] - fig['identical']}, excluded (not passing plain) "
          f"{len(fig['excluded_failing_plain'])}; {fig['seconds']} s vs {fig['seconds_plain']} s plain", flush=True)
    for f in fig["files_without_results"]:
        print(f"      {f['file']}: no results for its {f['tests']} tests (timed out or crashed)"
              + (f"; hung in {' '.join(f['hung_in'])}" if f["hung_in"] else ""), flush=True)
    for d in fig["differing"]:
        print(f"      {d['test']}: plain {d['plain']}, {mode} {d[mode]} -> {d['verdict']} "
              f"(reruns plain {d['reruns_plain']}, {mode} {d['reruns_' + mode]})", flush=True)
    for k, v in fig["file_verdicts_differing"].items():
        print(f"      regrtest '{k}' differs: {' '.join(v)}", flush=True)
    if fig["excluded_failing_plain"]:
        print(f"      excluded: {' '.join(fig['excluded_failing_plain'])}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--looptop", required=True)
    ap.add_argument("--python", action="append", help="version (3.11) or path; repeatable (default 3.11 and 3.12)")
    ap.add_argument("--quick", action="store_true", help=" ".join(QUICK_TESTS) + " only")
    ap.add_argument("--jobs", type=int, default=1, help="regrtest -j (default 1: each file in a worker process)")
    ap.add_argument("--confirm", type=int, default=3, help="reruns of each differing test (default 3)")
    ap.add_argument("--confirm-max", type=int, default=30, help="most differing tests rerun per mode (default 30)")
    ap.add_argument("--use", default="", help="regrtest -u resources (default none)")
    ap.add_argument("--test-timeout", type=int, default=300, help="regrtest --timeout per test (default 300 s)")
    ap.add_argument("--run-timeout", type=int, default=3600, help="seconds before a whole run is killed")
    ap.add_argument("--out", help="folder for logs, JUnit files and reports (default: a new temp folder)")
    ap.add_argument("--json", help="also write the figures to this file as JSON")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    names = args.names or (QUICK_TESTS if args.quick else DEFAULT_TESTS)
    pythons = args.python or ["3.11", "3.12"]
    outdir = os.path.abspath(args.out or tempfile.mkdtemp(prefix="looptop-transparency-"))
    os.makedirs(outdir, exist_ok=True)
    print(f"transparency: {' '.join(names)}; logs in {outdir}", flush=True)

    figures = []
    reproducible = 0
    for spec in pythons:
        python = find_python(spec)
        if not python or subprocess.run([python, "-c", "import test.libregrtest"], capture_output=True).returncode:
            print(f"transparency: no Python {spec} with its test package (python -m test); skipped", flush=True)
            if args.python:
                return 2
            continue
        version = version_of(python)
        runner = Runner(args, python, version, os.path.join(outdir, version))
        os.makedirs(runner.outdir, exist_ok=True)
        results = {}
        for mode in MODES:
            outcomes, verdicts, seconds, rc = runner.run(mode, names)
            results[mode] = (outcomes, verdicts, seconds, rc)
            print(f"  {version} {mode:8} {len(outcomes):5} tests in {seconds:6.1f} s (exit {rc})", flush=True)
            if not outcomes:
                print(f"transparency: the {mode} run of Python {version} gave no results; see {runner.outdir}")
                return 2
        for mode in ("run", "preload"):
            fig = compare(runner, mode, results, names, args)
            reproducible += sum(d["verdict"] == "reproducible" for d in fig["differing"])
            reproducible += len(fig["files_without_results"])
            figures.append(fig)
            show(fig, mode)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    print(f"transparency: {reproducible} reproducible difference(s); logs in {outdir}")
    return 1 if reproducible else 0


if __name__ == "__main__":
    sys.exit(main())
