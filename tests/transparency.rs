//! The runtime probes are invisible (issue 13, point 4): a program under looptop keeps its own
//! descriptors, files, descriptor limit, modules and API behaviour. Each test runs a fixture with
//! and without the probe (or without looptop) and compares what the program saw, and checks that
//! the probe was at work meanwhile (its GC and pool figures arrived).

use crate::util::*;
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

/// The program's own output (the lines before the report) and the report.
struct Traced {
    program: String,
    report: Value,
    out: Output,
}

/// A Python fixture's command line.
fn python(name: &str) -> [String; 2] {
    ["python3".to_string(), fixture(&format!("python/{name}")).to_string_lossy().into_owned()]
}

/// `looptop run --json --rate 0 -- CMD`, within the tests' time limit.
fn under_looptop(cmd: &[&str], env: &[(&str, &str)]) -> Traced {
    let _timing = timing();
    let out =
        looptop().args(["run", "--json", "--rate", "0", "--"]).args(cmd).envs(env.iter().copied()).output_limited();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = stdout.find("{\n").unwrap_or_else(|| panic!("no report on stdout:\n{stdout}\nstderr:\n{}", stderr(&out)));
    let report = serde_json::from_str(&stdout[at..]).expect("report JSON");
    Traced { program: stdout[..at].to_string(), report, out }
}

/// CMD on its own (no agent, no probe), within the tests' time limit.
fn plain(cmd: &[&str]) -> Output {
    let _timing = timing();
    Command::new(cmd[0]).args(&cmd[1..]).env_remove("LD_PRELOAD").output_limited()
}

fn json_line(text: &str, what: &str) -> Value {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: no JSON from the program ({e}):\n{text}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The probe wrote while the program ran: GC pauses, and `items` pool items.
fn assert_probe_worked(report: &Value, min_items: u64) {
    assert!(report["gc"]["count"].as_u64().unwrap_or(0) >= 1, "no GC pause arrived from the probe: {:#}", report["gc"]);
    let items = report["pool"]["items"].as_u64().unwrap_or(0);
    assert!(
        items >= min_items,
        "{items} pool items arrived from the probe, expected {min_items}: {:#}",
        report["pool"]
    );
}

#[test]
fn issue_13_python_daemon_keeps_its_descriptors_and_its_data_file() {
    let dir = TempDir::new("daemon-py");
    let data = dir.path("data.bin");
    let run =
        under_looptop(&["python3", fixture("python/daemon_fds.py").to_str().unwrap(), data.to_str().unwrap()], &[]);
    assert!(run.out.status.success(), "{}", stderr(&run.out));
    let seen = json_line(&run.program, "daemon_fds.py");
    assert_eq!(seen["fd"], 3, "the data file takes the first free number: {seen}");
    assert_eq!(seen["size"], 10, "the probe wrote into the program's data file: {seen}");
    assert_eq!(seen["content"], "0123456789");
    assert_eq!(seen["before"], seen["after"], "a descriptor appeared or vanished during GC and executor work");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 10, "the data file after exit");
    assert_probe_worked(&run.report, 16);
}

/// A Python fixture without looptop, then under it; both must succeed. Returns what the program
/// printed each time (first JSON line) and the run under looptop.
fn python_both_ways(name: &str) -> (Value, Value, Traced) {
    let cmd = python(name);
    let cmd = [cmd[0].as_str(), cmd[1].as_str()];
    let without = plain(&cmd);
    assert!(without.status.success(), "{name} without looptop: {}", stderr(&without));
    let run = under_looptop(&cmd, &[]);
    assert!(run.out.status.success(), "{name} under looptop: {}", stderr(&run.out));
    (json_line(&run.program, "under looptop"), json_line(&stdout(&without), "without looptop"), run)
}

#[test]
fn issue_13_python_at_a_descriptor_limit_of_10_runs_as_without_looptop() {
    let (with, without, run) = python_both_ways("fd_limit.py");
    assert_eq!(with, without, "what the program could open and compute");
    assert!(run.report["gc"]["count"].as_u64().unwrap_or(0) >= 1, "{:#}", run.report["gc"]);
}

#[test]
fn issue_13_run_in_executor_rejects_and_raises_as_without_the_probe() {
    let (with, without, run) = python_both_ways("executor_api.py");
    // CPython's test_call_coroutine: in debug mode a coroutine function is refused with TypeError.
    let refused =
        with.as_array().unwrap().iter().any(|c| c[0] == true && c[1] == "coroutine_function" && c[2] == "TypeError");
    assert!(refused, "run_in_executor(None, coroutine_function) must raise TypeError: {with:#}");
    // Results, exception types, messages and traceback frames (Python 3.11+), all the same.
    assert_eq!(with, without);
    assert!(run.report["pool"]["items"].as_u64().unwrap_or(0) >= 4, "{:#}", run.report["pool"]);
}

#[test]
fn issue_13_python_startup_leaves_modules_paths_and_descriptors_as_without_looptop() {
    let cmd = python("startup_state.py");
    let cmd = [cmd[0].as_str(), cmd[1].as_str()];
    let without = stdout(&plain(&cmd));
    let run = under_looptop(&cmd, &[]);
    let (w, p): (Vec<Value>, Vec<Value>) = (
        run.program.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        without.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
    );
    assert_eq!(w.len(), 2, "{}", run.program);
    // Until the program imports asyncio, the probe's finder waits first on sys.meta_path (README);
    // it leaves at that import.
    let mut first = w[0].clone();
    assert_eq!(first["meta_path"][0], "_AfterImport", "{first}");
    first["meta_path"].as_array_mut().unwrap().remove(0);
    assert_eq!(first, p[0], "at startup");
    assert_eq!(w[1], p[1], "after import asyncio");
}

#[test]
fn issue_13_python_probe_finds_its_segment_under_the_second_name() {
    use std::os::unix::fs::PermissionsExt;
    // A private folder on tmpfs (the agent keeps a quarter of its folder free: /tmp may be a
    // disk with less).
    let shm = TempDir(std::path::PathBuf::from(format!("/dev/shm/looptop-test-taken-name-{}", std::process::id())));
    std::fs::create_dir(&shm.0).unwrap();
    std::fs::set_permissions(&shm.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cmd = python("taken_name.py");
    let shm_dir = shm.0.to_str().unwrap();
    let run = under_looptop(&[&cmd[0], &cmd[1]], &[("LOOPTOP_SHM_DIR", shm_dir), ("FIXTURE_COLLECTIONS", "6")]);
    assert!(run.out.status.success(), "{}", stderr(&run.out));
    assert_eq!(run.program.trim(), "second name", "the agent did not take looptop-<pid>-<hex>");
    let gen2 = run.report["gc"]["pauses"].as_array().unwrap().iter().filter(|p| p["kind"] == "gen2").count();
    assert!(gen2 >= 6, "the child's 6 full collections: {gen2} gen2 pauses arrived; {:#}", run.report["gc"]);
}

/// V8 keeps two descriptors of its own for the perf map and isolate log that the agent's
/// `--perf-basic-prof` asks for (numbered from 4096 on, out of the program's way, see
/// `v8s_files_stay_out_of_a_node_programs_way`); at a descriptor limit of 64 they count against
/// it, so that test leaves the perf map out (LOOPTOP_PERF_MAP=0) to compare the probe alone.
const NO_PERF_MAP: (&str, &str) = ("LOOPTOP_PERF_MAP", "0");

#[test]
fn issue_13_node_daemon_keeps_its_descriptors_and_its_data_file() {
    let dir = TempDir::new("daemon-node");
    let data = dir.path("data.bin");
    let script = fixture("node/daemon_fds.js");
    let cmd = ["node", "--expose-gc", script.to_str().unwrap(), data.to_str().unwrap()];
    let run = under_looptop(&cmd, &[]);
    assert!(run.out.status.success(), "{}", stderr(&run.out));
    let seen = json_line(&run.program, "daemon_fds.js");
    assert_eq!(seen["size"], 10, "the probe wrote into the program's data file: {seen}");
    assert_eq!(seen["content"], "0123456789");
    assert_eq!(seen["before"], seen["after"], "a descriptor appeared or vanished during GC and pool work");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 10, "the data file after exit");
    assert_probe_worked(&run.report, 12);
    let off = under_looptop(&cmd, &[("LOOPTOP_PROBE", "0")]);
    let seen_off = json_line(&off.program, "without the probe");
    for key in ["fd", "before", "handles", "resources"] {
        assert_eq!(seen[key], seen_off[key], "{key} with and without the probe");
    }
}

#[test]
fn issue_13_node_at_its_descriptor_limit_runs_as_without_the_probe() {
    let script = fixture("node/fd_limit.js");
    let cmd = ["sh", "-c", "ulimit -n 64 && exec node --expose-gc \"$0\"", script.to_str().unwrap()];
    let with = under_looptop(&cmd, &[NO_PERF_MAP]);
    let without = under_looptop(&cmd, &[NO_PERF_MAP, ("LOOPTOP_PROBE", "0")]);
    assert!(
        with.out.status.success() && without.out.status.success(),
        "{}\n{}",
        stderr(&with.out),
        stderr(&without.out)
    );
    let (a, b) = (json_line(&with.program, "with the probe"), json_line(&without.program, "without"));
    assert_eq!(a["code"], "EMFILE", "{a}");
    assert_eq!(a, b, "what the program could open and compute, with and without the probe");
    assert!(with.report["gc"]["count"].as_u64().unwrap_or(0) >= 1, "{:#}", with.report["gc"]);
}

/// CPython's own tests of selectors, epoll and poll plain, under `looptop run` and with the agent
/// preloaded: the same outcome for every test. `benches/transparency.sh` runs the longer slice
/// (asyncio, signal, subprocess) on several Python versions.
#[test]
fn cpython_selectors_epoll_and_poll_tests_cannot_tell_looptop_is_there() {
    // Three runs of CPython's tests, some of them timing-sensitive: alone on the machine.
    let _machine = machine_wide();
    let has_tests = Command::new("python3").args(["-c", "import test.libregrtest"]).output_limited();
    if !has_tests.status.success() {
        println!("SKIP: python3 has no test package (python3 -m test)");
        return;
    }
    let dir = TempDir::new("cpython-tests");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/transparency.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--looptop", env!("CARGO_BIN_EXE_looptop"), "--quick", "--python", "python3", "--out"])
        .arg(&dir.0)
        .output_within(Duration::from_secs(900));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    println!("{text}");
    assert!(out.status.success(), "CPython's tests told looptop apart:\n{text}");
    assert!(text.contains("identical"), "{text}");
}

/// A Python signal handler whose signal arrives during a collection runs when the probe's GC
/// callback resumes; CPython would report its exception as "ignored" there. The probe hands it
/// back: Ctrl-C's KeyboardInterrupt and a SIGTERM handler's sys.exit reach the program as
/// without looptop, even in a program that does little but collect.
#[test]
fn signal_handlers_that_raise_during_a_collection_still_reach_the_program() {
    let script = fixture("python/gc_signals.py");
    let script = script.to_str().unwrap();
    let alone = plain(&["python3", script]);
    assert_eq!(stdout(&alone).trim(), "interrupted", "without looptop: {}", stderr(&alone));
    let run = under_looptop(&["python3", script], &[]);
    assert_eq!(run.program.trim(), "interrupted", "Ctrl-C was lost under looptop: {}", stderr(&run.out));
    assert!(run.report["gc"]["count"].as_u64().unwrap_or(0) > 0, "the probe recorded no GC: {:#}", run.report["gc"]);
    let term = under_looptop(&["python3", script, "15"], &[]);
    assert_eq!(term.out.status.code(), Some(7), "the SIGTERM handler's sys.exit(7) was lost: {}", stderr(&term.out));
}
