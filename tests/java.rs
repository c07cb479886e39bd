//! A Java NIO server (issue 18): one selector thread (`fixtures/java/NioServer.java`, compiled
//! here with the JDK's `javac`) whose requests block it for times it measures. Under `run` and
//! attached: each request is one stall of the selector's loop, as long as the server measured, of
//! its kind, holding the GC pause the JVM counted in it (its performance data), and nothing else; and since the JVM wrote no perf map, looptop says how to get Java
//! method names without a restart (`jcmd PID Compiler.perfmap`). Without a JDK the tests skip, a
//! failure when `LOOPTOP_REQUIRE_JAVA=1` (CI, which installs one).

use crate::util::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The folder of the compiled fixture, once per test run; `None` (a skip) without a JDK.
pub(crate) fn java_classes(test: &str) -> Option<PathBuf> {
    let javac = Command::new("javac").arg("-version").output().is_ok_and(|o| o.status.success());
    if !present_or_skip(test, javac, "LOOPTOP_REQUIRE_JAVA", "javac", "apt-get install openjdk-17-jdk-headless") {
        return None;
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // javac starts a JVM that takes both cores for a moment: not beside the timing tests.
        let _quiet = machine_wide();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("java-fixtures");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("javac").arg("-d").arg(&dir).arg(fixture("java/NioServer.java")).output_limited();
        assert!(out.status.success(), "javac of fixtures/java/NioServer.java failed: {}", stderr(&out));
        dir
    });
    Some(dir.clone())
}

pub(crate) fn server(classes: &std::path::Path, port: u16) -> Vec<String> {
    let classes = classes.to_string_lossy().into_owned();
    ["java", "-cp", &classes, "NioServer", &port.to_string()].map(str::to_string).to_vec()
}

/// Waits until the server answers, then four requests that block its selector thread.
fn drive(port: u16) {
    assert!(get_when_up(port), "the Java server never answered on port {port}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    for path in ["/busy/150", "/sleep/120", "/gc/20", "/busy/200", "/sleep/80", "/gc/30"] {
        assert!(http_get(port, path).unwrap_or_default().contains(" 200 "), "{path}");
        std::thread::sleep(std::time::Duration::from_millis(400));
    }
}

/// One loop of the JVM has the requests' stalls, each as long as measured and of its kind, with
/// the GC time the JVM counted inside it (read from its performance data file); no loop has any
/// other; and the warning tells how to name Java methods.
fn assert_requests(report: &Value, truth: &[Truth], what: &str) {
    assert_eq!(truth.len(), 6, "{what}: the server measured {truth:?}");
    let pid = truth[0].pid.unwrap();
    let loops: Vec<&Value> = report["loops"].as_array().unwrap().iter().filter(|l| l["pid"] == pid).collect();
    let stalled: Vec<&&Value> = loops.iter().filter(|l| !l["stalls"].as_array().unwrap().is_empty()).collect();
    assert_eq!(stalled.len(), 1, "{what}: one loop (the selector's) has stalls: {:#}", report["loops"]);
    let stalls = by_start(stalled[0]["stalls"].as_array().unwrap().clone());
    let durations = durations(&stalls);
    let measured: Vec<f64> = truth.iter().map(|t| t.ms).collect();
    assert_stalls_match(&durations, &measured, 50.0, what);
    for (t, s) in truth.iter().zip(&stalls) {
        assert_eq!(s["blocker"]["kind"], t.kind.as_str(), "{what}: {} ms is {:#}", t.ms, s["blocker"]);
        // The JVM's collection time is whole milliseconds; a pause is placed on looptop's clock
        // within a fraction of one.
        let gc = s["gc_ms"].as_f64().unwrap_or(-1.0);
        let expected = t.gc_ms.unwrap_or(0.0);
        assert!(
            (gc - expected).abs() <= 2.0 + expected * 0.1,
            "{what}: {gc} ms of GC in a stall, the JVM counted {expected} ms: {s:#}"
        );
    }
    let full = report["gc"]["pauses"].as_array().map_or(0, |p| p.iter().filter(|p| p["kind"] == "full").count());
    assert!(full >= 2, "{what}: the two System.gc() are full pauses: {:#}", report["gc"]);
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("Java methods are unnamed") && warnings.contains(&format!("jcmd {pid} Compiler.perfmap")),
        "{what}: the way to name Java methods is said: {warnings}"
    );
}

#[test]
fn issue_18_a_java_nio_servers_requests_are_each_one_stall_of_its_selector_loop_under_run() {
    let test = "issue_18_a_java_nio_servers_requests_are_each_one_stall_of_its_selector_loop_under_run";
    let Some(classes) = java_classes(test) else { return };
    let port = free_port();
    let (report, truth) = served_with_agent(&server(&classes, port), port, "java-run", drive);
    assert_requests(&report, &truth, "java NIO under run");
}

#[test]
fn issue_18_a_java_nio_servers_requests_are_each_one_stall_of_its_selector_loop_attached() {
    let test = "issue_18_a_java_nio_servers_requests_are_each_one_stall_of_its_selector_loop_attached";
    if !perf_permitted(test) {
        return;
    }
    let Some(classes) = java_classes(test) else { return };
    let port = free_port();
    let (report, truth) = served_attached(&server(&classes, port), port, "java-attach", |pid| pid, &[], drive);
    assert_requests(&report, &truth, "java NIO attached");
}
