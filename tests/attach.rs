//! Attaching to running processes: with the agent preloaded (its segment), and agentless
//! through perf (tick tracepoints, samples, uprobes). Targets are started by the test, not by
//! looptop, and delay their blockers (FIXTURE_START_MS) until looptop has attached.

use crate::util::*;
use serde_json::Value;
use std::process::{Command, Output, Stdio};

/// Each truth episode has a stall of its kind whose duration is within max(5 ms, 5 %).
fn assert_durations(report: &Value, truth: &[Truth]) {
    let stalls = main_stalls(report);
    for t in truth {
        let found = stalls
            .iter()
            .any(|s| s["blocker"]["kind"] == t.kind.as_str() && within_truth(s["duration_ms"].as_f64().unwrap(), t.ms));
        assert!(found, "{} of {:.1} ms: no stall of that kind and length in {stalls:#?}", t.kind, t.ms);
    }
}

#[test]
fn perf_mode_times_a_plain_node_process_and_names_its_blockers() {
    if !perf_permitted("perf_mode_times_a_plain_node_process_and_names_its_blockers") {
        return;
    }
    // Perf mode: uprobes in every process running the same binary, machine-wide tracing.
    let _machine = machine_wide();
    let file = fixture("node/blockers.js");
    let only = [("FIXTURE_ONLY", "regex,json-parse,sync-crypto,sync-wait,cpu")];
    let mut target = Target::start_loop(&["node", file.to_str().unwrap()], &only);
    let (out, report) = target.record(&[]);
    let truth = target.truth();
    assert_eq!(truth.len(), 5, "{}", stderr(&out));
    assert_eq!(report["mode"], "perf", "{report:#}");
    // No perf map without looptop: kinds come from V8's native frames; names are not checked.
    assert_blockers(&report, &truth, "blockers.js", Lines::Unchecked);
    assert_durations(&report, &truth);
    let text = stderr(&out);
    assert!(text.contains(&format!("process {} exited after", target.pid())), "{text}");
    assert!(text.contains("JavaScript functions are unnamed") && text.contains("looptop run"), "{text}");
    // The recording keeps the warning: `report` says it too.
    let warned = report["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("are unnamed"));
    assert!(warned, "the report of the recording: {:#}", report["warnings"]);
    let main = main_loop(&report);
    assert!(main["ticks"].as_u64().unwrap() >= 5, "{main:#}");
    // GC pauses from uprobes on V8's heap: parsing the payload allocates enough to scavenge.
    let gc = &report["gc"];
    assert!(gc["count"].as_u64().unwrap() >= 1, "GC pauses expected from uprobes: {gc:#}");
    let pauses = gc["pauses"].as_array().unwrap();
    assert!(pauses.iter().all(|p| matches!(p["kind"].as_str(), Some("minor" | "major"))), "{gc:#}");
    let json = main_stalls(&report).into_iter().find(|s| s["blocker"]["kind"] == "json-parse").unwrap();
    assert!(json["gc_ms"].as_f64().is_some(), "the parse's stall says how much of it was GC: {json:#}");
}

#[test]
fn attached_to_node_with_a_perf_map_compiled_code_names_the_line_that_ran() {
    if !perf_permitted("attached_to_node_with_a_perf_map_compiled_code_names_the_line_that_ran") {
        return;
    }
    // No agent: the stacks are the kernel's (return addresses only). A loop that runs 250 ms is
    // compiled while it runs (baseline, then optimized on the stack): its code's own source
    // positions name the loop's line. JSON.parse, called from code still interpreted, can only
    // be named where its function starts (the interpreter's slots are the agent's to read).
    let file = fixture("node/blockers.js");
    let only = [("FIXTURE_ONLY", "cpu,json-parse"), LINGER];
    let flags = ["--perf-basic-prof", "--interpreted-frames-native-stack"];
    let mut target = Target::start_loop(&["node", flags[0], flags[1], file.to_str().unwrap()], &only);
    let (out, report) = target.record(&[]);
    let truth = target.truth();
    assert_eq!(truth.len(), 2, "{}", stderr(&out));
    assert_blockers(&report, &truth, "blockers.js", Lines::Either);
    let stall = |kind: &str| main_stalls(&report).into_iter().find(|s| s["blocker"]["kind"] == kind).unwrap();
    assert_eq!(stall("cpu")["blocker"]["position"], "executing", "{:#}", stall("cpu"));
    assert_eq!(stall("json-parse")["blocker"]["position"], "function-start", "{:#}", stall("json-parse"));
}

#[test]
fn perf_mode_sees_the_libuv_pool_queue_and_wait() {
    if !perf_permitted("perf_mode_sees_the_libuv_pool_queue_and_wait") {
        return;
    }
    // Perf mode: uprobes in every process running the same binary, machine-wide tracing.
    let _machine = machine_wide();
    // Kept in the kernel by the BPF source, and parsed hit by hit by the perf-event source.
    for no_bpf in ["", "1"] {
        pool_burst_attached(no_bpf);
    }
    // Without --pool-probes the pool is not probed (a uprobe hit per item costs a pool-heavy
    // server the most), and the report says nothing of it.
    let file = fixture("node/pool_burst.js");
    let mut target = Target::start_loop(&["node", file.to_str().unwrap()], &[("FIXTURE_JOBS", "12")]);
    let (_, report) = target.record(&["--rate", "0"]);
    assert!(report["pool"].is_null(), "{:#}", report["pool"]);
}

fn pool_burst_attached(no_bpf: &str) {
    let file = fixture("node/pool_burst.js");
    let mut target = Target::start_loop(&["node", file.to_str().unwrap()], &[("FIXTURE_JOBS", "12")]);
    let (out, report) = target.record_env(&["--rate", "0", "--pool-probes"], &[("LOOPTOP_NO_BPF", no_bpf)]);
    assert!(!stderr(&out).contains("refused BPF"), "{}", stderr(&out));
    let p = &report["pool"];
    assert!(p.is_object(), "pool expected from uprobes (LOOPTOP_NO_BPF={no_bpf}): {}\n{report:#}", stderr(&out));
    assert_eq!(p["size"], 4, "{p:#}");
    // Exact, not modelled: the burst is queued faster than the idle workers wake, so more than
    // jobs - workers may wait at once, never more than the jobs.
    let q = p["queued_max"].as_u64().unwrap();
    assert!((8..=12).contains(&q), "12 jobs on 4 workers: 8 to 12 queued, got {q}");
    assert_eq!(p["items"], 12, "every job's wait: {p:#}");
    // The last wave waits for two waves before it: at least one job's run.
    let job = target.truth().iter().map(|t| t.ms).fold(f64::MAX, f64::min);
    let wait_max = p["wait_ms"]["max"].as_f64().unwrap();
    assert!(wait_max >= job, "longest wait {wait_max} ms, one job runs {job} ms: {p:#}");
}

#[test]
fn a_preloaded_agent_is_read_from_its_segment_with_function_names() {
    let file = fixture("node/blockers.js");
    let agent = looptop().args(["agent", "path"]).output_limited();
    let agent = String::from_utf8(agent.stdout).unwrap().trim().to_string();
    let only = [("FIXTURE_ONLY", "regex,cpu"), ("LD_PRELOAD", agent.as_str()), LINGER];
    let mut target = Target::start(&["node", file.to_str().unwrap()], &only);
    let (out, report) = target.record(&["--rate", "0"]);
    assert_eq!(report["mode"], "agent", "{report:#}");
    let truth = target.truth();
    assert_eq!(truth.len(), 2, "{}", stderr(&out));
    assert_blockers(&report, &truth, "blockers.js", Lines::Running);
}

#[test]
fn perf_mode_times_python_asyncio() {
    if !perf_permitted("perf_mode_times_python_asyncio") {
        return;
    }
    // Perf mode: uprobes in every process running the same binary, machine-wide tracing.
    let _machine = machine_wide();
    let file = fixture("python/blockers.py");
    let mut target = Target::start_loop(&["python3", file.to_str().unwrap()], &[]);
    let (out, report) = target.record(&[]);
    let truth = target.truth();
    assert_eq!(truth.len(), 4, "{}", stderr(&out));
    assert_eq!(report["mode"], "perf");
    // CPython 3.11 is built without frame pointers: perf's walk stops a frame or two above the
    // leaf, so `json.loads` (dict, string and page-fault work under the `_json` scanner) cannot be
    // told apart; its stall is still timed. A leaf names the others (nanosleep, sre, the spin).
    let named: Vec<Truth> = truth.iter().filter(|t| t.kind != "json-parse").cloned().collect();
    assert_durations(&report, &named);
    let parse = truth.iter().find(|t| t.kind == "json-parse").unwrap();
    let timed = main_stalls(&report).iter().any(|s| within_truth(s["duration_ms"].as_f64().unwrap(), parse.ms));
    assert!(timed, "json.loads of {:.1} ms: no stall of that length", parse.ms);
}

#[test]
fn perf_mode_times_a_c_epoll_loop() {
    if !perf_permitted("perf_mode_times_a_c_epoll_loop") {
        return;
    }
    // Perf mode: uprobes in every process running the same binary, machine-wide tracing.
    let _machine = machine_wide();
    let bin = c_epoll_loop();
    let mut target = Target::start_loop(&[bin.to_str().unwrap()], &[]);
    let (_, report) = target.record(&[]);
    let truth = target.truth();
    let stalls = main_stalls(&report);
    assert_eq!(stalls.len(), 2, "{stalls:#?}");
    assert_eq!(stalls[0]["blocker"]["kind"], "cpu", "{stalls:#?}");
    assert_busy_frame(&stalls[0]);
    assert_eq!(stalls[1]["blocker"]["kind"], "sync-wait", "{stalls:#?}");
    let over: Vec<f64> = truth.iter().map(|t| t.ms).collect();
    assert_stalls_match(&stalls_of(&report, |l| l["tid"] == l["pid"]), &over, 50.0, "C loop in perf mode");
}

#[test]
fn a_process_that_never_waits_says_so_and_still_has_stacks() {
    if !perf_permitted("a_process_that_never_waits_says_so_and_still_has_stacks") {
        return;
    }
    // Perf mode: uprobes in every process running the same binary, machine-wide tracing.
    let _machine = machine_wide();
    let mut target = Target::start(&["python3", "-c", "while True: pass"], &[]);
    let (out, report) = target_record_for(&mut target, "1s");
    let text = stderr(&out);
    // "in 1.0 s", or a little more on a loaded machine.
    let seen = text.split("no event loop seen in ").nth(1).and_then(|rest| rest.split(' ').next()?.parse::<f64>().ok());
    assert!(seen.is_some_and(|s| (1.0..3.0).contains(&s)), "{text}");
    assert!(report["samples"].as_u64().unwrap() > 100, "CPU stacks expected: {report:#}");
}

/// `looptop record --pid -d DUR` of a target that keeps running.
fn target_record_for(target: &mut Target, duration: &str) -> (Output, Value) {
    let rec = target.dir.path("attach.rec");
    let out = looptop()
        .args(["record", "--pid", &target.pid(), "-d", duration, "-o", rec.to_str().unwrap()])
        .output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(target.child.child.try_wait().unwrap().is_none(), "the target must still run after we detach");
    let rep = looptop().args(["report", "--json", rec.to_str().unwrap()]).output_limited();
    (out, serde_json::from_slice(&rep.stdout).expect("report JSON"))
}

#[test]
fn an_unprivileged_user_is_told_what_is_missing_and_the_ways_out() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: dropping privileges needs root");
        return;
    }
    let mut target = Target::start(&["python3", "-c", "import time; time.sleep(30)"], &[]);
    // A copy of looptop that the unprivileged user can execute, wherever the build lives.
    let dir = TempDir::new("unprivileged");
    let bin = dir.path("looptop");
    std::fs::copy(env!("CARGO_BIN_EXE_looptop"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&bin)
        .args(["record", "--pid", &target.pid(), "-d", "1s", "-o", "/dev/null"])
        .env("HOME", "/tmp")
        .output_limited();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("not permitted"), "{text}");
    assert!(text.contains("CAP_PERFMON") && text.contains("perf_event_paranoid"), "{text}");
    assert!(text.contains("looptop run") && text.contains("LD_PRELOAD"), "{text}");
    assert!(target.child.child.try_wait().unwrap().is_none(), "the target is untouched");
}

#[test]
fn no_such_pid_and_a_missing_agent_are_exit_3() {
    let out = looptop().args(["record", "--pid", "999999999", "-o", "/dev/null"]).output_limited();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no process with pid 999999999"), "{}", stderr(&out));
    let target = Target::start(&["python3", "-c", "import time; time.sleep(30)"], &[]);
    let out = looptop().args(["record", "--pid", &target.pid(), "--mode", "agent", "-o", "/dev/null"]).output_limited();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("has no looptop agent"), "{}", stderr(&out));
}

/// The first byte of `symbol` in the running `pid`, and whether the executable has it.
fn code_byte(pid: u32, symbol: &str) -> Option<u8> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let nm = Command::new("nm").arg(&exe).output_limited();
    let vaddr = String::from_utf8_lossy(&nm.stdout).lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (addr, _, name) = (f.next()?, f.next()?, f.next()?);
        (name == symbol).then(|| u64::from_str_radix(addr, 16).ok()).flatten()
    })?;
    // A position-independent executable is loaded at its first mapping; a fixed one where linked.
    let elf = std::fs::read(&exe).ok()?;
    let base = if elf[16] == 3 {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let path = exe.to_str()?;
        let first = maps.lines().find(|l| l.ends_with(path))?;
        u64::from_str_radix(first.split('-').next()?, 16).ok()?
    } else {
        0
    };
    use std::io::{Read, Seek, SeekFrom};
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    mem.seek(SeekFrom::Start(base + vaddr)).ok()?;
    let mut byte = [0u8];
    mem.read_exact(&mut byte).ok()?;
    Some(byte[0])
}

#[test]
fn detaching_on_ctrl_c_removes_the_probes() {
    if !perf_permitted("detaching_on_ctrl_c_removes_the_probes") {
        return;
    }
    // Perf mode: uprobes in every process running the same binary, machine-wide tracing.
    let _machine = machine_wide();
    let file = fixture("node/pool_burst.js");
    let target = Target::start_loop(&["node", file.to_str().unwrap()], &[("FIXTURE_START_MS", "60000")]);
    let pid = target.child.id();
    const INT3: u8 = 0xcc;
    let Some(before) = code_byte(pid, "uv__work_submit") else {
        println!("SKIP: this node has no uv__work_submit symbol (stripped)");
        return;
    };
    assert_ne!(before, INT3);
    let rec = target.dir.path("attach.rec");
    let attached = looptop()
        .args(["record", "--pool-probes", "--pid", &target.pid(), "-o", rec.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_limited();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while code_byte(pid, "uv__work_submit") != Some(INT3) {
        assert!(std::time::Instant::now() < deadline, "the uprobe on uv__work_submit never appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(attached.id() as i32, libc::SIGINT) };
    let out = attached.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(code_byte(pid, "uv__work_submit"), Some(before), "the breakpoint outlived the attach");
    let rep = looptop().args(["report", "--json", rec.to_str().unwrap()]).output_limited();
    assert!(rep.status.success(), "the recording is complete: {}", stderr(&rep));
}

#[test]
fn attached_to_an_agent_process_the_numbers_cover_the_window_only() {
    let _timing = timing();
    let agent = looptop().args(["agent", "path"]).output_limited();
    let agent = String::from_utf8(agent.stdout).unwrap().trim().to_string();
    // A 600 ms stall and a burst of GC at start-up, then a calm loop: all of it before looptop
    // attaches.
    let js = "function s(ms){const e=Date.now()+ms;while(Date.now()<e);}\
              setTimeout(()=>{let k=[];for(let i=0;i<200000;i++)k.push({i});s(600)},100);\
              setInterval(()=>{},20);";
    let child = Command::new("node")
        .args(["-e", js])
        .env("LD_PRELOAD", &agent)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn_limited();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id().to_string();
    let out = looptop()
        .args(["check", "--pid", &pid, "-d", "2s", "--rate", "0", "-b", "stalls==0", "-b", "stall.max<100ms"])
        .output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "the stall before the attach is not the window's: {err}");
    let dir = TempDir::new("window");
    let rec = dir.path("w.rec");
    let out = looptop()
        .args(["record", "--pid", &pid, "-d", "2s", "--rate", "0", "-o", rec.to_str().unwrap()])
        .output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = looptop().args(["report", "--json"]).arg(&rec).output_limited();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "agent", "{report:#}");
    let wall = report["wall_ms"].as_f64().unwrap();
    assert!((1500.0..4000.0).contains(&wall), "{wall}");
    let main = main_loop(&report);
    assert!(main["stalls"].as_array().unwrap().is_empty(), "{main:#}");
    // A 20 ms timer for 2 s: about a hundred ticks, not the start-up's thousands.
    let ticks = main["ticks"].as_u64().unwrap();
    assert!((20..400).contains(&ticks), "ticks of the window only: {ticks}");
    assert!(main["tick_ms"]["max"].as_f64().unwrap() < 100.0, "{main:#}");
}
