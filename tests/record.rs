//! Recordings and flamegraphs: `record` then `report` gives the run's findings back; a truncated
//! recording loads with a warning; a file that is not a recording is refused (exit 2); every
//! flamegraph format parses.

use crate::util::*;
use serde_json::{json, Value};

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
fn a_threshold_under_the_recorded_floor_says_what_was_not_kept() {
    let dir = TempDir::new("floor");
    // Recorded with the default 50 ms threshold: ticks kept one by one from 10 ms.
    let rec = record_blockers(&dir, &["--rate", "0"]);
    let out = looptop().args(["report", "--json", "--stall-threshold", "5ms"]).arg(&rec).output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("kept ticks one by one only from 10.0 ms") && err.contains("--stall-threshold 5ms"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = v["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("only from 10.0 ms")), "in the report too: {v}");
    // At or over the floor, nothing is missing.
    let out = looptop().args(["report", "--stall-threshold", "20ms"]).arg(&rec).output_limited();
    assert!(!stderr(&out).contains("kept ticks one by one"), "{}", stderr(&out));
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
    let out = looptop()
        .args(["flame", "--time", "wall", "--format", "folded", "-o", "-", "--from"])
        .arg(&rec)
        .output_limited();
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
    // An extension that names no format looptop writes is refused, not given an SVG.
    let png = dir.path("out.png");
    let out = looptop().args(["flame", "-o"]).arg(&png).arg("--from").arg(&rec).output_limited();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot write a .png flamegraph") && err.contains("out.svg"), "{err}");
    assert!(!png.exists(), "nothing written under a name that promises a PNG");
    // Asked for explicitly, any name goes.
    let out = looptop().args(["flame", "--format", "svg", "-o"]).arg(&png).arg("--from").arg(&rec).output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&png).unwrap().contains("<svg"));
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

/// A real recording in the JSON-lines format of earlier versions (`looptop.recording/1`,
/// tests/data/example.rec: the Node fixture's regex, JSON and crypto blockers), for the tests that
/// damage a copy of it line by line, with the main loop's stalls as its report gives them.
fn real_recording() -> &'static (std::path::PathBuf, Vec<Value>) {
    static REC: std::sync::OnceLock<(std::path::PathBuf, Vec<Value>)> = std::sync::OnceLock::new();
    REC.get_or_init(|| {
        let rec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/example.rec");
        let (out, report) = report_json(&rec);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let stalls = main_stalls(&report);
        assert_eq!(stalls.len(), 3, "{report:#}");
        (rec, stalls)
    })
}

/// Address space a looptop reading a small recording gets: however large a line or an id in it,
/// the 16 MiB line cap and the debug binary (about 10 MiB resident) fit many times over, while
/// reading by what the file claims (a 1 GiB line, a 17 GiB frame table) fails.
const SMALL_AS: u64 = 256 << 20;

/// `cmd` limited to `bytes` of address space (`RLIMIT_AS`).
fn small(cmd: &mut std::process::Command, bytes: u64) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// `report --json FILE` in [`SMALL_AS`] of memory: the outcome and its report.
fn report_small(rec: &std::path::Path) -> (std::process::Output, Value) {
    let out = small(looptop().args(["report", "--json"]).arg(rec), SMALL_AS).output_limited();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

/// The stalls of two reports agree: same starts, durations and blockers.
fn assert_same_stalls(got: &[Value], want: &[Value]) {
    let key = |s: &Value| (s["start_ms"].to_string(), s["duration_ms"].to_string(), s["blocker"]["frame"].to_string());
    let got: Vec<_> = got.iter().map(key).collect();
    let want: Vec<_> = want.iter().map(key).collect();
    assert_eq!(got, want);
}

/// The lines of the shared recording.
fn real_lines() -> Vec<String> {
    std::fs::read_to_string(&real_recording().0).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn issue_13_an_invalid_utf8_byte_on_line_3_hides_nothing() {
    let dir = TempDir::new("rec-utf8");
    let (_, want) = real_recording();
    let mut bytes = Vec::new();
    for (i, line) in real_lines().iter().enumerate() {
        let mut line = line.clone().into_bytes();
        if i == 2 {
            line[10] = 0xff;
        }
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
    }
    let lines = real_lines().len();
    let rec = dir.path("utf8.rec");
    std::fs::write(&rec, &bytes).unwrap();
    let (out, report) = report_small(&rec);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_same_stalls(&main_stalls(&report), want);
    let warning = format!("skipped 1 unreadable line of {lines} (first: line 3, not valid UTF-8)");
    assert!(err.contains(&warning), "{err}");
    assert!(!err.contains("ends early"), "the file has its end line: {err}");
    assert_eq!(report["warnings"].as_array().map(Vec::len), Some(1), "{report:#}");
    assert!(report["warnings"][0].as_str().unwrap().contains(&warning), "{report:#}");
    let text = looptop().arg("report").arg(&rec).output_limited();
    assert!(String::from_utf8_lossy(&text.stdout).contains("validateName"), "{}", stderr(&text));
    let flame = looptop().args(["flame", "--format", "folded", "-o", "-", "--from"]).arg(&rec).output_limited();
    assert_eq!(flame.status.code(), Some(0), "{}", stderr(&flame));
    assert!(String::from_utf8_lossy(&flame.stdout).contains("validateName"));
}

#[test]
fn issue_13_frame_ids_of_u32_max_and_u64_max_take_no_memory() {
    let dir = TempDir::new("rec-ids");
    let (_, want) = real_recording();
    // Frame 0 becomes frame 4294967295, in its definition and in every stack naming it; a frame
    // with an id past u32 is added before the end.
    let mut out = String::new();
    for line in real_lines() {
        let mut v: Value = serde_json::from_str(&line).unwrap();
        match v["t"].as_str() {
            Some("frame") if v["id"] == 0 => v["id"] = u32::MAX.into(),
            Some("stack") => {
                for f in v["frames"].as_array_mut().unwrap() {
                    if *f == 0 {
                        *f = u32::MAX.into();
                    }
                }
            }
            Some("end") => out
                .push_str("{\"t\":\"frame\",\"id\":18446744073709551615,\"frame\":{\"name\":\"x\",\"kind\":\"js\"}}\n"),
            _ => {}
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    let rec = dir.path("ids.rec");
    std::fs::write(&rec, out).unwrap();
    let (out, report) = report_small(&rec);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_same_stalls(&main_stalls(&report), want);
    assert!(err.contains("skipped 1 unreadable line"), "{err}");
}

#[test]
fn issue_13_a_1_gib_line_is_skipped_without_holding_it() {
    let dir = TempDir::new("rec-long");
    let (_, want) = real_recording();
    let lines = real_lines();
    // Line 3 is a gigabyte of zero bytes: a hole in a sparse file, no disk space used.
    let rec = dir.path("long.rec");
    let mut f = std::fs::File::create(&rec).unwrap();
    use std::io::{Seek, Write};
    writeln!(f, "{}\n{}", lines[0], lines[1]).unwrap();
    f.seek(std::io::SeekFrom::Current(1 << 30)).unwrap();
    writeln!(f).unwrap();
    for l in &lines[2..] {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let (out, report) = report_small(&rec);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_same_stalls(&main_stalls(&report), want);
    assert!(err.contains("skipped 1 unreadable line") && err.contains("line 3, longer than 16 MiB"), "{err}");
}

#[test]
fn issue_13_devices_fifos_and_folders_are_refused_at_once() {
    let dir = TempDir::new("rec-dev");
    let fifo = dir.path("fifo.rec");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let quick = std::time::Duration::from_secs(15);
    for (path, what) in [
        (std::path::PathBuf::from("/dev/zero"), "is a character device, not a recording file"),
        (fifo.clone(), "is a FIFO, not a recording file"),
        (dir.0.clone(), "is a folder, not a recording file"),
    ] {
        let out = small(looptop().arg("report").arg(&path), SMALL_AS).output_within(quick);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(what), "{}", stderr(&out));
        assert!(stderr(&out).contains("fix: give a file written by `looptop record -o FILE`"), "{}", stderr(&out));
        let flame = looptop().args(["flame", "-o", "-", "--from"]).arg(&path).output_within(quick);
        assert_eq!(flame.status.code(), Some(2), "{}", stderr(&flame));
    }
}

#[test]
fn issue_13_extreme_rates_and_weights_do_not_crash_flame() {
    // Two off-CPU samples whose weights saturate (a header's rate of u64::MAX Hz) overflowed the
    // sum of samples in `flame --from`, a panic with overflow checks (the fuzz target stops at
    // the profile and did not reach that sum).
    let dir = TempDir::new("rec-rate");
    let header = json!({"t": "recording", "schema": "looptop.recording/1", "looptop": "0.1.0", "origin_ns": 1_000,
        "stall_threshold_ns": 50_000_000, "pid": 1, "command": ["x"], "rate_hz": u64::MAX, "mode": "perf"});
    let mut lines = vec![header];
    for f in 0..2u32 {
        lines.push(json!({"t": "frame", "id": f, "frame": {"name": format!("f{f}"), "kind": "js"}}));
        lines.push(json!({"t": "stack", "pid": 1, "tid": 1, "t_ns": 2_000 + f as u64, "weight_ns": u64::MAX,
            "origin": "perf-off-cpu", "tick_ns": 0, "off_cpu": {"syscall": 1, "wchan": null}, "frames": [f]}));
    }
    lines.push(json!({"t": "end", "at_ns": 1_000_000_000u64, "exit_code": 0, "runtime": "native"}));
    let rec = dir.path("rate.rec");
    std::fs::write(&rec, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = looptop()
        .args(["flame", "--time", "wall", "--format", "folded", "-o", "-", "--from"])
        .arg(&rec)
        .output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn issue_16_a_recording_reports_exactly_what_the_live_run_reported() {
    let dir = TempDir::new("rec-same");
    let (rec, live) = (dir.path("same.rec"), dir.path("live.json"));
    let file = fixture("node/blockers.js");
    let out = looptop()
        .args(["record", "-o"])
        .arg(&rec)
        .arg(format!("--json={}", live.display()))
        .args(["--", "node", file.to_str().unwrap()])
        .env("FIXTURE_ONLY", "regex,json-parse,cpu")
        .output_limited();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let live: Value = serde_json::from_slice(&std::fs::read(&live).unwrap()).unwrap();
    assert_report_schema(&live);
    assert!(main_stalls(&live).len() >= 3, "{live:#}");
    let (out, replayed) = report_json(&rec);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The whole report, number for number: loops, ticks, percentiles, stalls and their blockers,
    // GC, pool, samples.
    assert_eq!(replayed, live);
    // The file is the binary format, not JSON lines.
    assert_eq!(&std::fs::read(&rec).unwrap()[..8], b"\x89LTREC2\n");
}

#[test]
fn issue_16_a_window_of_a_recording_is_drawn_alone() {
    let dir = TempDir::new("rec-window");
    let rec = record_blockers(&dir, &[]);
    let folded = |args: &[&str]| {
        let out =
            looptop().args(["flame", "--format", "folded", "-o", "-", "--from"]).arg(&rec).args(args).output_limited();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let all = folded(&[]);
    let (first, rest) = (folded(&["--until", "800ms"]), folded(&["--since", "800ms"]));
    assert!(!all.is_empty() && !rest.is_empty());
    // The two halves add up to the whole (a sample at exactly 800 ms would be in both).
    let weight =
        |lines: &[String]| -> u64 { lines.iter().filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum() };
    let (w_all, w_first, w_rest) = (weight(&all), weight(&first), weight(&rest));
    assert!(w_first + w_rest >= w_all && w_first + w_rest <= w_all + 2, "{w_first} + {w_rest} vs {w_all}");
    // The regex ran first, the busy loop last: each window holds its own.
    assert!(rest.iter().any(|l| l.contains("spinHot")), "{rest:#?}");
    let out =
        looptop().args(["flame", "-o", "-", "--since", "2s", "--until", "1s", "--from"]).arg(&rec).output_limited();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not after --since"), "{}", stderr(&out));
}
