//! Native code built without frame pointers (issue 18, point 4): a stall's samples carry a copy
//! of the thread's user stack (the agent's watchdog, BPF), which looptop unwinds with the
//! binary's CFI (`.eh_frame`), so the callers of the blocking function are the real ones. The
//! fixture is a C loop built as distributions build servers (`-O2 -fomit-frame-pointer`); with
//! frame pointers alone (`LOOPTOP_UNWIND=fp`) the same samples find no caller (the kernel's
//! walk) or stale ones (the watchdog's scan), which proves the fixture tells.

use crate::util::*;
use serde_json::Value;
use std::path::PathBuf;

/// `fixtures/c/nofp_loop.c`, built without frame pointers.
fn nofp_loop() -> PathBuf {
    c_fixture_built("nofp_loop", &["-O2", "-g", "-fomit-frame-pointer", "-fno-inline"])
}

/// The fixture's calls from `main` down to the function that blocks, as folded frames.
const CHAIN: &str = ";main;handle_request;parse_body;checksum";

/// Attaches `looptop record` (its environment extended by `env`) to the fixture for its three
/// requests: the report, the folded stacks of the stalls, and the fixture's truth.
fn attached(env: &[(&str, &str)]) -> (Value, String, Vec<Truth>) {
    let bin = nofp_loop();
    let mut target = Target::start_loop(&[bin.to_str().unwrap()], &[]);
    let (_, report) = target.record_env(&["--stall-threshold", "50ms"], env);
    let rec = target.dir.path("attach.rec");
    let flame = looptop()
        .args(["flame", "--stalls-only", "--format", "folded", "-o", "-", "--from"])
        .arg(&rec)
        .output_limited();
    assert!(flame.status.success(), "{}", stderr(&flame));
    (report, String::from_utf8_lossy(&flame.stdout).into_owned(), target.truth())
}

/// The share of the spinning stalls' samples (more than `least` of them) whose stack holds the
/// whole chain from `main`.
fn share_with_callers(folded: &str, least: u64) -> f64 {
    let (whole, _) = samples_with(folded, &[CHAIN]);
    let (all, _) = samples_with(folded, &["checksum"]);
    assert!(all > least, "{all} samples in three 150 ms stalls:\n{folded}");
    whole as f64 / all as f64
}

/// Each request one stall of its own length and kind; the spinning ones named after the function
/// that spun; the sleeping one after the function that slept when `sleeper` (its off-CPU stack
/// unwound), else after anything but it.
fn assert_stalls(report: &Value, truth: &[Truth], sleeper: bool, what: &str) {
    let ms: Vec<f64> = truth.iter().map(|t| t.ms).collect();
    assert_eq!(ms.len(), 4, "{what}: the fixture serves four requests: {truth:?}");
    assert_stalls_match(&stalls_of(report, |l| l["tid"] == l["pid"]), &ms, 50.0, what);
    for (t, stall) in truth.iter().zip(main_stalls(report)) {
        let b = &stall["blocker"];
        assert_eq!(b["kind"], t.kind.as_str(), "{what}: {stall:#}");
        let func = t.func.as_deref().unwrap();
        if t.kind == "cpu" || sleeper {
            assert_eq!(b["frame"], func, "{what}: {stall:#}");
        } else {
            assert_ne!(b["frame"], func, "{what}: the frame-pointer walk cannot know the caller: {stall:#}");
        }
    }
}

/// `looptop record --rate 0` (the agent's watchdog takes every stack) of the fixture, with
/// looptop's environment extended by `env`: the report, the folded stacks of the stalls, the truth.
fn under_agent(env: &[(&str, &str)]) -> (Value, String, Vec<Truth>) {
    let dir = TempDir::new("unwind-agent");
    let rec = dir.path("run.rec");
    let out = looptop()
        .args(["record", "--rate", "0", "--stall-threshold", "50ms", "-o"])
        .arg(&rec)
        .arg("--")
        .arg(nofp_loop())
        .env("FIXTURE_TRUTH", dir.path("truth.jsonl"))
        .envs(env.iter().copied())
        .output_limited();
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = looptop().args(["report", "--json"]).arg(&rec).output_limited();
    assert!(rep.status.success(), "{}", stderr(&rep));
    let flame = looptop()
        .args(["flame", "--stalls-only", "--format", "folded", "-o", "-", "--from"])
        .arg(&rec)
        .output_limited();
    assert!(flame.status.success(), "{}", stderr(&flame));
    let report = serde_json::from_slice(&rep.stdout).expect("report JSON");
    (report, String::from_utf8_lossy(&flame.stdout).into_owned(), read_truth(&dir.path("truth.jsonl")))
}

/// Asserts what one observation (`got`: report, folded on-CPU stacks of the stalls, truth) found:
/// every request's stall, and the callers of most of the spinning stalls' samples (more than
/// `least` of them) when `unwound`, of almost none of them else; the sleeping stall is named
/// after its function when `sleeper`.
fn assert_callers(got: (Value, String, Vec<Truth>), least: u64, unwound: bool, sleeper: bool, what: &str) {
    let (report, folded, truth) = got;
    assert_stalls(&report, &truth, sleeper, what);
    let share = share_with_callers(&folded, least);
    let ok = if unwound { share >= 0.9 } else { share < 0.1 };
    assert!(ok, "{what}: {:.0} % of the stall samples walked whole from main:\n{folded}", share * 100.0);
}

#[test]
fn under_the_agent_a_stalls_callers_come_from_the_binarys_cfi() {
    let _timing = timing();
    // The watchdog samples every 5 ms: about 30 samples a request.
    assert_callers(under_agent(&[]), 50, true, true, "agent, unwound");
    // The control: without frame pointers the watchdog's own walk falls back on scanning the
    // stack for return addresses, and the fixture's stale ones (the last request's `fprintf`)
    // come out as callers.
    assert_callers(under_agent(&[("LOOPTOP_UNWIND", "fp")]), 50, false, true, "agent, frame pointers and scan");
}

#[test]
fn attached_with_bpf_a_stalls_callers_come_from_the_binarys_cfi() {
    if !perf_permitted("attached_with_bpf_a_stalls_callers_come_from_the_binarys_cfi") {
        return;
    }
    let _machine = machine_wide();
    assert_callers(attached(&[]), 100, true, true, "BPF, unwound");
    // The control: the kernel's frame-pointer walk of the same code finds no caller.
    assert_callers(attached(&[("LOOPTOP_UNWIND", "fp")]), 100, false, false, "BPF, frame pointers");
}
