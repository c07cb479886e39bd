//! Recordings and flamegraphs: `record` then `report` gives the run's findings back; a truncated
//! recording loads with a warning; a file that is not a recording is refused (exit 2); every
//! flamegraph format parses.

use crate::util::*;
use serde_json::Value;

/// Records the regex and busy blockers of the Node fixture; returns the recording's path.
fn record_blockers(dir: &TempDir, extra: &[&str]) -> std::path::PathBuf {
    let rec = dir.path("blockers.rec");
    let file = fixture("node/blockers.js");
    let out = looptop()
        .args(["record", "-o"])
        .arg(&rec)
        .args(extra)
        .args(["--", "node", file.to_str().unwrap()])
        .env("FIXTURE_ONLY", "regex,cpu")
        .output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("looptop report"), "{}", stderr(&out));
    rec
}

fn report_json(rec: &std::path::Path) -> (std::process::Output, Value) {
    let out = looptop().args(["report", "--json"]).arg(rec).output_limited();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

#[test]
fn a_recording_reports_what_was_seen() {
    let dir = TempDir::new("rec");
    let rec = record_blockers(&dir, &["--rate", "0"]);
    let (out, report) = report_json(&rec);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["schema"], "looptop.report/1");
    let stalls = main_stalls(&report);
    let kinds: Vec<&str> = stalls.iter().map(|s| s["blocker"]["kind"].as_str().unwrap_or("none")).collect();
    assert_eq!(kinds, ["regex", "cpu"], "{report:#}");
    assert_eq!(stalls[0]["blocker"]["frame"], "validateName");
    assert!(report["samples"].as_u64().unwrap() > 20);
    assert_eq!(report["target"]["exit_code"], 0);
    // The text summary of the same recording.
    let text = looptop().arg("report").arg(&rec).output_limited();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("validateName") && text.contains("blockers (worst first):"), "{text}");
}

#[test]
fn a_truncated_recording_loads_with_a_warning() {
    let dir = TempDir::new("rec-cut");
    let rec = record_blockers(&dir, &["--rate", "0"]);
    let bytes = std::fs::read(&rec).unwrap();
    // Cut in the middle of a line, two thirds in: the tail (end line included) is lost.
    let cut = dir.path("cut.rec");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    let (out, report) = report_json(&cut);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("ends early"), "{}", stderr(&out));
    assert_eq!(report["schema"], "looptop.report/1");
    assert!(report["loops"].as_array().is_some_and(|l| !l.is_empty()), "{report:#}");
}

#[test]
fn files_that_are_not_recordings_are_refused() {
    let dir = TempDir::new("rec-bad");
    let garbage = dir.path("garbage.rec");
    std::fs::write(&garbage, [0u8, 159, 146, 150, 1, 2, 3, 255, 10, 11]).unwrap();
    let json = dir.path("report.json");
    std::fs::write(&json, "{\"schema\":\"looptop.report/1\"}\n").unwrap();
    let future = dir.path("future.rec");
    std::fs::write(&future, "{\"t\":\"recording\",\"schema\":\"looptop.recording/9\"}\n").unwrap();
    for (f, want) in [
        (&garbage, "is not a looptop recording"),
        (&json, "is not a looptop recording"),
        (&future, "looptop.recording/9"),
        (&dir.path("missing.rec"), "cannot read"),
    ] {
        let out = looptop().arg("report").arg(f).output_limited();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
        let flame = looptop().args(["flame", "-o", "-", "--from"]).arg(f).output_limited();
        assert_eq!(flame.status.code(), Some(2), "{}", stderr(&flame));
    }
}

#[test]
fn flamegraphs_in_every_format() {
    let dir = TempDir::new("flame");
    let rec = record_blockers(&dir, &["--rate", "0"]);
    // SVG: well-formed XML with the JS names.
    let svg = dir.path("stalls.svg");
    let out = looptop().args(["flame", "--stalls-only", "-o"]).arg(&svg).arg("--from").arg(&rec).output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    let xml = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    roxmltree::Document::parse_with_options(&text, xml).expect("the SVG is XML");
    assert!(text.contains("validateName") && text.contains("spinHot"), "JS names in the SVG");
    // Folded: `stack count` lines.
    let out = looptop().args(["flame", "--format", "folded", "-o", "-", "--from"]).arg(&rec).output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let folded = String::from_utf8_lossy(&out.stdout);
    assert!(folded.lines().count() > 1);
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("stack count");
        assert!(!stack.is_empty() && count.parse::<u64>().is_ok_and(|c| c > 0), "{line}");
    }
    assert!(folded.contains("validateName"), "{folded}");
    // speedscope: the file format's required shape.
    let ss = dir.path("p.speedscope.json");
    let out = looptop().args(["flame", "-o"]).arg(&ss).arg("--from").arg(&rec).output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&ss).unwrap()).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("speedscope"));
    assert_eq!(v["profiles"][0]["type"], "sampled");
    let names: Vec<&str> =
        v["shared"]["frames"].as_array().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.contains("validateName")), "{names:?}");
}

#[test]
fn flame_of_everything_uses_perf_samples() {
    if !perf_permitted("flame_of_everything_uses_perf_samples") {
        return;
    }
    let file = fixture("node/blockers.js");
    let out = looptop()
        .args(["flame", "--format", "folded", "-o", "-", "--", "node", file.to_str().unwrap()])
        .env("FIXTURE_ONLY", "cpu")
        .output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let folded = String::from_utf8_lossy(&out.stdout);
    let spin: u64 = folded
        .lines()
        .filter(|l| l.contains("spinHot"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert!(spin > 0, "spinHot missing:\n{folded}");
    // perf samples all of node's CPU time at 997 Hz (the 250 ms spin alone is ~250); the watchdog
    // alone takes at most ~50 of the one stall.
    let total: u64 = folded.lines().map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap()).sum();
    assert!(total > 150, "{total} samples:\n{folded}");
    // Code outside any stall is in the flamegraph of everything (the payload setup is not a
    // stall, but node's startup runs JS).
    assert!(folded.lines().count() > 5, "{folded}");
}

#[test]
fn record_attaches_to_a_process_with_the_agent_preloaded() {
    let dir = TempDir::new("rec-pid");
    let agent = looptop().args(["agent", "path"]).output_limited();
    let agent = String::from_utf8_lossy(&agent.stdout).trim().to_string();
    let file = fixture("node/blockers.js");
    // Started without looptop; its setup (payloads) takes a while before the first blocker.
    let mut node = std::process::Command::new("node")
        .arg(&file)
        .env("LD_PRELOAD", &agent)
        .env("FIXTURE_ONLY", "regex,cpu")
        .spawn_limited();
    let rec = dir.path("pid.rec");
    let out = looptop()
        .args(["record", "--rate", "0", "-o"])
        .arg(&rec)
        .args(["--pid", &node.id().to_string()])
        .output_limited();
    node.wait();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (out, report) = report_json(&rec);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stalls = main_stalls(&report);
    let frames: Vec<&str> = stalls.iter().filter_map(|s| s["blocker"]["frame"].as_str()).collect();
    assert!(frames.contains(&"validateName") && frames.contains(&"spinHot"), "{report:#}");
}
