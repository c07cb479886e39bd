//! Hours, in minutes (issue 16): looptop recording a busy server keeps its memory flat, because
//! samples are folded into counts as the run goes and the caches of names are bounded.

use crate::util::*;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// looptop's resident memory (kB).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn issue_16_memory_stays_flat_while_recording_a_busy_server() {
    if !perf_permitted("issue_16_memory_stays_flat_while_recording_a_busy_server") {
        return;
    }
    let _t = timing();
    let dir = TempDir::new("long");
    let rec = dir.path("long.rec");
    let server = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/http_server.js");
    let mut lt = looptop()
        .args(["record", "-q", "-o"])
        .arg(&rec)
        .args(["--", "node"])
        .arg(&server)
        .stdout(std::process::Stdio::piped())
        .spawn_within(Duration::from_secs(300));
    let mut line = String::new();
    std::io::BufReader::new(lt.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("the server said {line:?}")).to_string();
    let load = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/http_load.js");
    let mut load = std::process::Command::new("node")
        .arg(&load)
        .args([port.as_str(), "185", "16"])
        .stdout(std::process::Stdio::null())
        .spawn_within(Duration::from_secs(260));
    let start = Instant::now();
    let at = |secs: u64| {
        std::thread::sleep(Duration::from_secs(secs).saturating_sub(start.elapsed()));
        rss_kb(lt.id())
    };
    let (minute_1, minute_3) = (at(60), at(180));
    load.wait();
    // SAFETY: signalling the looptop this test started.
    unsafe { libc::kill(lt.id() as i32, libc::SIGTERM) };
    lt.wait();
    let (out, report) = {
        let out = looptop().args(["report", "--json"]).arg(&rec).output_limited();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out, v)
    };
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let samples = report["samples"].as_u64().unwrap_or(0);
    // Every sample kept would be tens of MB a minute (4 MB/s were measured before issue 16);
    // what may still grow is the long tail of frames and stacks first seen, a few MB.
    let grew_mb = (minute_3 as f64 - minute_1 as f64) / 1024.0;
    println!("looptop VmRSS {minute_1} kB at 1 min, {minute_3} kB at 3 min, {samples} samples recorded");
    assert!(minute_1 > 0 && minute_3 > 0);
    assert!(samples > 20_000, "too few samples for the test to mean anything: {samples}");
    assert!(grew_mb <= 20.0, "looptop's memory grew {grew_mb:.1} MB from minute 1 to minute 3 ({samples} samples)");
}
