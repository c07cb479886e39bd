//! tokio (issue 18 point 1): a multi-thread runtime's workers take turns at one epoll wait and
//! park on a futex while another holds it, so a worker's idle is its park. Each of a real tokio
//! server's requests (`fixtures/rust/tokio_server`, built here as a user ships it: release, no
//! frame pointers) blocks its worker for a time the handler measures; looptop must find each
//! once on the worker that ran it, with the handler's duration and kind, and nothing else: no
//! false stalls from parks, and no loop for the main thread parked in `block_on` (it never waits
//! for events). With the agent, attached with BPF and attached with perf events; and the
//! current-thread runtime, whose main thread is the loop.

use crate::util::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The fixture server, built once per test run into cargo's scratch folder (its crates come from
/// the registry, as `.ci/run` fetches them). Built holding the machine-wide lock: a release
/// build takes both cores for a while.
fn tokio_server() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let _quiet = machine_wide();
            let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tokio-fixture");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let out = Command::new(cargo)
                .args(["build", "--release", "--locked", "--quiet", "--manifest-path"])
                .arg(fixture("rust/tokio_server/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .output_limited();
            assert!(out.status.success(), "building fixtures/rust/tokio_server failed: {}", stderr(&out));
            target.join("release/tokio-server")
        })
        .clone()
}

/// The server's command line: `flavor` `multi` (two workers) or `current`.
fn server(port: u16, flavor: &str) -> Vec<String> {
    let bin = tokio_server();
    vec![bin.to_string_lossy().into_owned(), port.to_string(), flavor.to_string(), "2".to_string()]
}

/// Waits until the server answers, then blocks a worker four times (sleeping in async code, and
/// on the CPU), 400 ms apart, and ends with quick requests.
fn drive(port: u16) {
    assert!(get_when_up(port), "the tokio server never answered on port {port}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    for path in ["/sleep/300", "/spin/200", "/sleep/150", "/spin/120"] {
        assert!(http_get(port, path).unwrap_or_default().contains(" 200 "), "{path}");
        std::thread::sleep(std::time::Duration::from_millis(400));
    }
    for _ in 0..20 {
        assert!(http_get(port, "/ok").unwrap_or_default().contains(" 200 "));
    }
}

/// Every request's blocking is one stall of the thread that ran it (the handler's own tid),
/// within tolerance of the handler's timing, of its kind (the spin named by its function), and
/// no loop has any other stall. The main thread is a loop only for the current-thread runtime.
fn assert_requests(report: &Value, truth: &[Truth], main_is_loop: bool, what: &str) {
    assert_eq!(truth.len(), 4, "{what}: the server measured {truth:?}");
    let loops = report["loops"].as_array().unwrap();
    let pid = truth[0].pid.unwrap();
    assert_eq!(
        loops.iter().any(|l| l["tid"] == pid),
        main_is_loop,
        "{what}: the main thread is a loop: {main_is_loop} expected; loops {:#}",
        report["loops"]
    );
    for l in loops {
        let tid = l["tid"].as_u64().unwrap() as u32;
        let mine: Vec<&Truth> = truth.iter().filter(|t| t.tid == Some(tid)).collect();
        let stalls = by_start(l["stalls"].as_array().unwrap().clone());
        let durations = durations(&stalls);
        let measured: Vec<f64> = mine.iter().map(|t| t.ms).collect();
        assert_stalls_match(&durations, &measured, 50.0, &format!("{what}, thread {tid} ({})", l["name"]));
        for (t, s) in mine.iter().zip(&stalls) {
            let b = &s["blocker"];
            assert_eq!(b["kind"], t.kind.as_str(), "{what}: {} ms of {:?} is {b:#}", t.ms, t.func);
            if t.kind == "cpu" {
                let frame = b["frame"].as_str().unwrap_or_default();
                assert!(frame.ends_with("spin"), "{what}: the spin is named {b:#}");
            }
        }
    }
    let served: Vec<u32> = truth.iter().filter_map(|t| t.tid).collect();
    for tid in served {
        assert!(loops.iter().any(|l| l["tid"] == tid), "{what}: thread {tid} ran a request but is no loop");
    }
}

#[test]
fn issue_18_a_tokio_multi_thread_servers_requests_are_each_one_stall_of_their_worker_with_the_agent() {
    let port = free_port();
    let (report, truth) = served_with_agent(&server(port, "multi"), port, "tokio-agent", drive);
    assert_requests(&report, &truth, false, "tokio multi-thread, agent");
}

#[test]
fn issue_18_a_tokio_multi_thread_servers_requests_are_each_one_stall_of_their_worker_attached() {
    let test = "issue_18_a_tokio_multi_thread_servers_requests_are_each_one_stall_of_their_worker_attached";
    if !perf_permitted(test) {
        return;
    }
    let port = free_port();
    let (report, truth) = served_attached(&server(port, "multi"), port, "tokio-bpf", |pid| pid, &[], drive);
    let warnings = report["warnings"].to_string();
    assert!(!warnings.contains("refused BPF"), "BPF must run here: {warnings}");
    assert_requests(&report, &truth, false, "tokio multi-thread, attached (BPF)");
}

#[test]
fn issue_18_a_tokio_multi_thread_servers_requests_are_each_one_stall_of_their_worker_attached_with_perf_events() {
    let test =
        "issue_18_a_tokio_multi_thread_servers_requests_are_each_one_stall_of_their_worker_attached_with_perf_events";
    if !perf_permitted(test) {
        return;
    }
    let port = free_port();
    let env = [("LOOPTOP_NO_BPF", "1")];
    let (report, truth) = served_attached(&server(port, "multi"), port, "tokio-perf", |pid| pid, &env, drive);
    assert_requests(&report, &truth, false, "tokio multi-thread, attached (perf events)");
}

#[test]
fn issue_18_a_tokio_current_thread_servers_main_thread_is_its_loop_with_the_agent() {
    let port = free_port();
    let (report, truth) = served_with_agent(&server(port, "current"), port, "tokio-current", drive);
    assert_requests(&report, &truth, true, "tokio current-thread, agent");
}
