//! The BPF source (issue 14): the committed object matches its source, stalls keep their own
//! stacks from the ring buffer while the rest is counted in the kernel, BPF refused falls back to
//! perf and then to the agent alone (each saying so), and a program may exit while attached.

use crate::util::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Whether clang can build BPF here; a skip is a failure in CI (`LOOPTOP_REQUIRE_PERF=1`,
/// whose `.ci/run` installs clang).
fn clang_present(test: &str) -> bool {
    let ok = Command::new("clang").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status_limited();
    if ok.success() {
        return true;
    }
    if std::env::var("LOOPTOP_REQUIRE_PERF").is_ok_and(|v| v == "1") {
        panic!("{test}: clang is required in CI (apt-get install clang)");
    }
    println!("SKIP: {test}: clang is not installed");
    false
}

#[test]
fn the_committed_object_is_built_from_its_source() {
    if !clang_present("the_committed_object_is_built_from_its_source") {
        return;
    }
    let dir = TempDir::new("bpf-object");
    let built = dir.path("looptop.bpf.o");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/source/bpf/build.sh");
    let out = Command::new("bash").arg(&script).arg(&built).output_limited();
    assert!(out.status.success(), "build.sh failed: {}", stderr(&out));
    let committed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/source/bpf/looptop.bpf.o")).unwrap();
    assert!(
        std::fs::read(&built).unwrap() == committed,
        "src/source/bpf/looptop.bpf.o is stale: run `bash src/source/bpf/build.sh` and commit the object"
    );
}

/// A C epoll loop started by the test, waiting in its loop before its blockers begin.
fn c_loop(dir: &TempDir, env: &[(&str, &str)]) -> Guarded {
    let child = Command::new(c_epoll_loop())
        .env("FIXTURE_TRUTH", dir.path("truth.jsonl"))
        .env("FIXTURE_START_MS", "1500")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn_limited();
    let syscall = format!("/proc/{}/syscall", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !["232 ", "281 ", "441 ", "7 ", "271 "]
        .iter()
        .any(|w| std::fs::read_to_string(&syscall).unwrap_or_default().starts_with(w))
    {
        assert!(std::time::Instant::now() < deadline, "the C loop never waited");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// `looptop record --pid` (under `wrap`, e.g. a seccomp filter; with `env`) until the target
/// exits, and the report of the recording.
fn record_pid(dir: &TempDir, pid: u32, wrap: &[&str], extra: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let rec = dir.path("attach.rec");
    let mut cmd = if wrap.is_empty() {
        looptop()
    } else {
        let mut c = Command::new(wrap[0]);
        c.args(&wrap[1..]).arg(env!("CARGO_BIN_EXE_looptop"));
        c
    };
    let out = cmd
        .args(["record", "--pid", &pid.to_string(), "-o"])
        .arg(&rec)
        .args(extra)
        .envs(env.iter().copied())
        .output_limited();
    let rep = looptop().args(["report", "--json"]).arg(&rec).output_limited();
    (out, serde_json::from_slice(&rep.stdout).unwrap_or(Value::Null))
}

#[test]
fn attached_stalls_keep_their_own_stacks_and_the_rest_is_counted_in_the_kernel() {
    if !perf_permitted("attached_stalls_keep_their_own_stacks_and_the_rest_is_counted_in_the_kernel") {
        return;
    }
    let _machine = machine_wide();
    // sched_switch from tp_btf (the default where it loads) and from the classic tracepoint.
    for hooks in ["", "tracepoints"] {
        stalls_keep_their_stacks(hooks);
    }
}

fn stalls_keep_their_stacks(hooks: &str) {
    let dir = TempDir::new("bpf-stacks");
    let mut target = c_loop(&dir, &[]);
    let (out, report) = record_pid(&dir, target.id(), &[], &[], &[("LOOPTOP_BPF_HOOKS", hooks)]);
    target.wait();
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("refused BPF"), "BPF must be used as root: {text}");
    let stalls = main_stalls(&report);
    assert_eq!(stalls.len(), 2, "{stalls:#?}");
    // The 90 ms busy stall: its samples came one by one through the ring buffer (counted
    // samples have no time and never join a stall), about one per ms after the first 10.
    assert_busy_frame(&stalls[0]);
    let n = stalls[0]["blocker"]["samples"].as_u64().unwrap_or(0);
    assert!(n >= 40, "{n} samples in a 90 ms stall at 997 Hz: {:#}", stalls[0]);
    // The 60 ms sleep: one off-CPU wait, sent when it ended.
    assert_eq!(stalls[1]["blocker"]["kind"], "sync-wait", "hooks {hooks:?}: {:#}", stalls[1]);
    // Everything else was counted in the kernel: the flamegraph of everything has the idle
    // loop's short busy tick too, with more samples than the stalls alone.
    let folded = looptop()
        .args(["flame", "--format", "folded", "-o", "-", "--from"])
        .arg(dir.path("attach.rec"))
        .output_limited();
    assert!(folded.status.success(), "{}", stderr(&folded));
    let folded = String::from_utf8_lossy(&folded.stdout);
    let total: u64 = folded.lines().filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok()).sum();
    assert!(total > n + 5, "{total} samples in all, {n} in the stall:\n{folded}");
    // The report counts what the kernel counted by its count, not as one sample per stack.
    assert!(report["samples"].as_u64().unwrap_or(0) >= n + 5, "{report:#}");
}

/// The BPF program types looptop (`pid`) holds: `prog_type` of each descriptor's fdinfo.
fn program_types(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("prog_type:")).and_then(|v| v.trim().parse().ok()))
        .collect()
}

#[test]
fn context_switches_are_followed_from_tp_btf_unless_the_classic_tracepoint_is_asked_for() {
    if !perf_permitted("context_switches_are_followed_from_tp_btf_unless_the_classic_tracepoint_is_asked_for") {
        return;
    }
    let _machine = machine_wide();
    // BPF_PROG_TYPE_TRACING (tp_btf) = 26, BPF_PROG_TYPE_TRACEPOINT = 5.
    for (hooks, want, not) in [("", 26, 0), ("tracepoints", 5, 26)] {
        let dir = TempDir::new("bpf-hooks");
        let mut target = c_loop(&dir, &[]);
        let mut lt = looptop()
            .args(["record", "--pid", &target.id().to_string(), "-d", "3s", "-o"])
            .arg(dir.path("r.rec"))
            .env("LOOPTOP_BPF_HOOKS", hooks)
            .stderr(Stdio::null())
            .spawn_limited();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut types = Vec::new();
        while std::time::Instant::now() < deadline && !types.contains(&want) {
            std::thread::sleep(Duration::from_millis(50));
            types = program_types(lt.id());
        }
        lt.wait();
        target.wait();
        assert!(types.contains(&want) && !types.contains(&not), "LOOPTOP_BPF_HOOKS={hooks:?}: program types {types:?}");
    }
}

#[test]
fn bpf_refused_falls_back_to_perf_and_perf_refused_to_the_agent_each_saying_why() {
    if !perf_permitted("bpf_refused_falls_back_to_perf_and_perf_refused_to_the_agent_each_saying_why") {
        return;
    }
    let _machine = machine_wide();
    let exec = c_fixture("seccomp_exec");
    let exec = exec.to_str().unwrap();
    // bpf() refused (Docker's default profile): perf events, and one line saying why.
    let dir = TempDir::new("bpf-refused");
    let mut target = c_loop(&dir, &[]);
    let (out, report) = record_pid(&dir, target.id(), &[exec, "bpf:EPERM", "--"], &[], &[]);
    target.wait();
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    let why: Vec<&str> = text.lines().filter(|l| l.contains("refused BPF")).collect();
    assert_eq!(why.len(), 1, "{text}");
    assert!(why[0].contains("Operation not permitted") && why[0].contains("using perf events instead"), "{text}");
    let stalls = main_stalls(&report);
    assert_eq!(stalls.len(), 2, "perf mode still times the stalls: {stalls:#?}");
    assert_busy_frame(&stalls[0]);

    // perf_event_open refused too: `run` keeps the agent alone, and says so.
    let out = Command::new(exec)
        .args(["bpf:EPERM", "perf_event_open:EPERM", "--"])
        .arg(env!("CARGO_BIN_EXE_looptop"))
        .args(["run", "--json", "--"])
        .arg(c_epoll_loop())
        .output_limited();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("perf stack sampling is off"), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout[stdout.find('{').unwrap()..]).unwrap();
    let stalls = main_stalls(&report);
    assert_eq!(stalls.len(), 2, "the agent alone times the stalls: {stalls:#?}");
    assert_busy_frame(&stalls[0]);

    // And attaching with neither: exit 3, with the ways out.
    let dir = TempDir::new("bpf-none");
    let mut target = c_loop(&dir, &[]);
    let (out, _) =
        record_pid(&dir, target.id(), &[exec, "bpf:EPERM", "perf_event_open:EPERM", "--"], &["-d", "1s"], &[]);
    let _status = target.wait();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("cannot attach to process") && text.contains("LD_PRELOAD"), "{text}");
}

#[test]
fn a_program_that_exits_while_attached_ends_the_observation_with_what_it_did() {
    if !perf_permitted("a_program_that_exits_while_attached_ends_the_observation_with_what_it_did") {
        return;
    }
    let _machine = machine_wide();
    let dir = TempDir::new("bpf-exit");
    let mut target = c_loop(&dir, &[("FIXTURE_EXIT", "7")]);
    let pid = target.id();
    // No duration: the observation lasts as long as the program. At a 20 ms threshold: the
    // program's last tick (a return from its last wait, then exit) lasts well under a
    // millisecond, and ends when the kernel saw the exit, not when looptop next looked (a poll
    // later, up to 20 ms, which would make it a stall).
    let (out, report) = record_pid(&dir, pid, &[], &["--stall-threshold", "20ms"], &[]);
    let status = target.wait();
    assert_eq!(status.code(), Some(7), "the program ran to its own end");
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("process {pid} exited")), "{text}");
    assert_eq!(main_stalls(&report).len(), 2, "the busy and the sleeping stall only: {report:#}");
    // Nothing of it stays in the kernel: a second attach to a new program starts clean.
    let dir = TempDir::new("bpf-exit-2");
    let mut again = c_loop(&dir, &[]);
    let (out, report) = record_pid(&dir, again.id(), &[], &[], &[]);
    again.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(main_stalls(&report).len(), 2, "{report:#}");
}
