//! The reader against recordings built line by line: what is kept, what is skipped and counted,
//! what is refused.

use super::*;
use crate::event::Event;
use crate::event::LoopId;
use crate::recording::{Line, LINE_TAGS};
use serde_json::json;
use std::io::Read;

const PID: u32 = 4242;
const ORIGIN: u64 = 1_000_000_000;

fn header() -> String {
    let h = Header {
        schema: crate::recording::SCHEMA_V1.into(),
        ..Header::new(ORIGIN, 50_000_000, PID, &["node".into(), "server.js".into()], 0, "agent")
    };
    serde_json::to_string(&Line::Recording(h)).unwrap()
}

fn loop_id() -> serde_json::Value {
    json!({"pid": PID, "tid": PID, "since_ns": ORIGIN})
}

fn loop_started() -> String {
    json!({"t": "loop_started", "id": loop_id(), "name": "node", "start_ns": ORIGIN}).to_string()
}

fn stall(i: u64) -> String {
    json!({"t": "stall", "id": loop_id(), "start_ns": ORIGIN + i * 1_000_000_000, "duration_ns": 100_000_000})
        .to_string()
}

fn frame(id: u64, name: &str) -> String {
    json!({"t": "frame", "id": id, "frame": {"name": name, "kind": "js", "file": "/srv/app/a.js", "line": 3}})
        .to_string()
}

fn stack(t_ns: u64, frames: &[u64]) -> String {
    json!({"t": "stack", "pid": PID, "tid": PID, "t_ns": t_ns, "weight_ns": 1_000_000, "origin": "perf-cpu",
           "tick_ns": 0, "off_cpu": null, "frames": frames})
    .to_string()
}

fn end() -> String {
    json!({"t": "end", "at_ns": ORIGIN + 10_000_000_000u64, "exit_code": 0, "runtime": "node"}).to_string()
}

fn read(lines: &[&[u8]]) -> Replay {
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    read_from(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"))
}

fn stalls(r: &Replay) -> usize {
    r.session.stall_count()
}

#[test]
fn a_whole_recording_has_no_warning() {
    let (h, l, s, e) = (header(), loop_started(), stall(1), end());
    let r = read(&[h.as_bytes(), l.as_bytes(), s.as_bytes(), e.as_bytes()]);
    assert_eq!(stalls(&r), 1);
    assert_eq!(r.lines, 4);
    assert!(r.warnings(Path::new("a.rec")).is_empty(), "{:?}", r.warnings(Path::new("a.rec")));
    assert!(r.report(Path::new("a.rec")).warnings.is_empty());
}

#[test]
fn an_unreadable_line_is_skipped_and_the_rest_kept() {
    // Issue 13: one invalid UTF-8 byte on line 3 hid everything after it.
    let (h, l, e) = (header(), loop_started(), end());
    let (s1, s2, s3) = (stall(1), stall(2), stall(3));
    let mut bad = stall(4).into_bytes();
    bad[20] = 0xff;
    let r = read(&[h.as_bytes(), l.as_bytes(), &bad, s1.as_bytes(), s2.as_bytes(), s3.as_bytes(), e.as_bytes()]);
    assert_eq!(stalls(&r), 3);
    assert_eq!(r.skipped, Skipped { count: 1, first: Some((3, "not valid UTF-8".into())) });
    assert!(r.end.is_some());
    let w = r.warnings(Path::new("a.rec"));
    assert_eq!(w, ["a.rec: skipped 1 unreadable line of 7 (first: line 3, not valid UTF-8); everything else is shown"]);
    assert_eq!(r.report(Path::new("a.rec")).warnings, w);
}

#[test]
fn every_kind_of_bad_line_is_counted_with_the_first_reason() {
    let (h, l, s, e) = (header(), loop_started(), stall(1), end());
    let cases: [(&[u8], &str); 7] = [
        (b"{\"t\":\"stall\",\"id\":", "not a JSON object"),
        (b"[1,2,3]", "not a JSON object"),
        (b"{\"t\":\"telemetry\",\"x\":1}", "a 'telemetry' line looptop cannot read"),
        (b"{\"t\":\"\\u001b[31m\"}", "a JSON object of no kind looptop knows"),
        (b"{\"x\":1}", "a JSON object of no kind looptop knows"),
        (b"{\"t\":\"stall\",\"start_ns\":-1}", "a 'stall' line looptop cannot read"),
        (h.as_bytes(), "a second header"),
    ];
    for (bad, why) in cases {
        let r = read(&[h.as_bytes(), l.as_bytes(), bad, s.as_bytes(), bad, e.as_bytes()]);
        assert_eq!(stalls(&r), 1, "{why}");
        assert_eq!(r.skipped, Skipped { count: 2, first: Some((3, why.into())) });
    }
    // A sample event: recordings keep stacks as stack lines.
    let sample = json!({"t": "sample", "pid": 1, "tid": 1, "t_ns": 1, "origin": "perf-cpu", "weight_ns": 1,
                        "tick_ns": 0, "off_cpu": null, "ips": [1, 2]})
    .to_string();
    let r = read(&[h.as_bytes(), sample.as_bytes(), e.as_bytes()]);
    assert_eq!(r.skipped.count, 1);
    assert_eq!(r.session.stacks().len(), 0);
    // Lines after the end line.
    let r = read(&[h.as_bytes(), e.as_bytes(), l.as_bytes(), s.as_bytes()]);
    assert_eq!(r.skipped, Skipped { count: 2, first: Some((3, "after the end line".into())) });
    assert_eq!(r.session.loop_count(), 0);
}

#[test]
fn frame_ids_are_looked_up_never_used_as_sizes() {
    // Issue 13: a frame id of 4294967295 made the reader allocate 17 GiB.
    let (h, e) = (header(), end());
    let (f_max, f_0) = (frame(u32::MAX as u64, "spin"), frame(0, "main"));
    let ok = stack(ORIGIN + 5, &[u32::MAX as u64, 0]);
    let unknown = stack(ORIGIN + 6, &[7]);
    let too_big = frame(u64::MAX, "huge");
    let r = read(&[
        h.as_bytes(),
        f_max.as_bytes(),
        f_0.as_bytes(),
        ok.as_bytes(),
        unknown.as_bytes(),
        too_big.as_bytes(),
        e.as_bytes(),
    ]);
    assert_eq!(r.session.stacks().len(), 1);
    let (_, _, samples) = r.session.stacks().threads().next().unwrap();
    let names: Vec<&str> = samples[0].stack.iter().map(|&f| r.session.stacks().frame(f).name.as_str()).collect();
    assert_eq!(names, ["spin", "main"]);
    assert_eq!(
        r.skipped,
        Skipped { count: 2, first: Some((5, "a stack naming a frame the file does not define before it".into())) }
    );
}

#[test]
fn overlapping_stalls_of_one_loop_are_skipped() {
    // Each would be classified from every sample under it: thousands of them made `report` of a
    // 2 MB file run for minutes.
    let (h, l, e) = (header(), loop_started(), end());
    let first = json!({"t": "stall", "id": loop_id(), "start_ns": ORIGIN, "duration_ns": 1_000_000_000}).to_string();
    let inside =
        json!({"t": "stall", "id": loop_id(), "start_ns": ORIGIN + 10, "duration_ns": 100_000_000}).to_string();
    let after = stall(2);
    let r = read(&[h.as_bytes(), l.as_bytes(), first.as_bytes(), inside.as_bytes(), after.as_bytes(), e.as_bytes()]);
    assert_eq!(stalls(&r), 2);
    assert_eq!(
        r.skipped,
        Skipped { count: 1, first: Some((4, "a stall that starts before its loop's previous stall ended".into())) }
    );
}

#[test]
fn samples_out_of_order_are_sorted_by_thread_and_time() {
    let (h, f, e) = (header(), frame(0, "main"), end());
    let lines: Vec<String> = (0..2000u64).rev().map(|i| stack(ORIGIN + i, &[0])).collect();
    let mut all: Vec<&[u8]> = vec![h.as_bytes(), f.as_bytes()];
    all.extend(lines.iter().map(|l| l.as_bytes()));
    all.push(e.as_bytes());
    let r = read(&all);
    let (_, _, samples) = r.session.stacks().threads().next().unwrap();
    assert_eq!(samples.len(), 2000);
    assert!(samples.windows(2).all(|w| w[0].t_ns <= w[1].t_ns));
}

#[test]
fn a_cut_last_line_means_the_file_ends_early_and_is_not_counted() {
    let (h, l, s) = (header(), loop_started(), stall(1));
    let mut bytes = [h.as_bytes(), l.as_bytes(), s.as_bytes()].join(&b'\n');
    bytes.extend_from_slice(b"\n{\"t\":\"stall\",\"id\":{\"pi");
    let r = read_from(bytes.as_slice()).unwrap();
    assert_eq!(stalls(&r), 1);
    assert_eq!(r.skipped.count, 0);
    let w = r.warnings(Path::new("a.rec"));
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("ends early"), "{w:?}");
}

#[test]
fn a_line_over_the_cap_is_skipped() {
    let (h, l, s, e) = (header(), loop_started(), stall(1), end());
    let long = vec![b'x'; MAX_LINE + 10];
    let r = read(&[h.as_bytes(), l.as_bytes(), &long, s.as_bytes(), e.as_bytes()]);
    assert_eq!(stalls(&r), 1);
    assert_eq!(r.skipped, Skipped { count: 1, first: Some((3, "longer than 16 MiB".into())) });
}

#[test]
fn what_is_not_a_recording_is_refused_from_its_first_line() {
    let refused = |bytes: &[u8]| matches!(read_from(bytes), Err(ReadError::NotRecording));
    assert!(refused(b""));
    assert!(refused(b"\0\0\0\0"));
    assert!(refused(b"\x7fELF\x02\x01\x01"));
    assert!(refused(b"{\"schema\":\"looptop.report/1\"}\n"));
    assert!(refused(b"{\"t\":\"stall\"}\n"));
    let future = b"{\"t\":\"recording\",\"schema\":\"looptop.recording/9\"}\n";
    assert!(matches!(read_from(&future[..]), Err(ReadError::Version(v)) if v == "looptop.recording/9"));
    assert!(refused(b"{\"t\":\"recording\",\"schema\":\"looptop.recording/\\u001b[2J\"}\n"));
    // A first line with no end: refused after MAX_LINE bytes, the rest never read.
    let endless = std::io::BufReader::new(std::io::repeat(b'{').take(u64::MAX));
    let t = std::time::Instant::now();
    assert!(matches!(read_from(endless), Err(ReadError::NotRecording)));
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn line_tags_are_the_tags_of_line() {
    let h = Header::new(0, 0, 1, &[], 0, "agent");
    let frame = crate::symbolize::Frame::unknown(None);
    let end = End { at_ns: 0, exit_code: None, runtime: "native".into(), stopped: false };
    let lines = [
        Line::Recording(h),
        Line::Frame { id: 0, frame, source: None },
        Line::Stack {
            pid: 1,
            tid: 1,
            t_ns: 0,
            weight_ns: 0,
            origin: crate::event::SampleOrigin::Watchdog,
            tick_ns: 0,
            off_cpu: None,
            frames: vec![],
            count: 1,
        },
        Line::LostSamples { count: 1 },
        Line::Warning { text: "w".into() },
        Line::End(end),
    ];
    let tags: Vec<String> =
        lines.iter().map(|l| serde_json::to_value(l).unwrap()["t"].as_str().unwrap().into()).collect();
    assert_eq!(tags, LINE_TAGS);
    let ev = Event::Stall { id: LoopId { pid: 1, tid: 1, since_ns: 0 }, start_ns: 0, duration_ns: 0 };
    assert!(!LINE_TAGS.contains(&serde_json::to_value(ev).unwrap()["t"].as_str().unwrap()));
}

#[test]
fn a_loop_whose_start_line_is_lost_keeps_its_stalls() {
    let (h, s1, s2, e) = (header(), stall(1), stall(2), end());
    let mut bad = loop_started().into_bytes();
    bad[5] = 0xc3;
    let r = read(&[h.as_bytes(), &bad, s1.as_bytes(), s2.as_bytes(), e.as_bytes()]);
    assert_eq!(stalls(&r), 2);
    let report = r.report(Path::new("a.rec"));
    assert_eq!(report.loops.len(), 1);
    assert_eq!(report.loops[0].name, UNNAMED);
    assert_eq!(report.loops[0].stalls.len(), 2);
}

/// A recording with one of each line, numbers as a recorder writes them.
fn every_kind() -> Vec<serde_json::Value> {
    let id = loop_id();
    let hist = json!([[1, 2], [300, 4], [5000, 1]]);
    let totals = |at: u64, since: u64| {
        json!({"t": "totals", "id": id, "totals": {"at_ns": at, "ticks": 7, "busy_ns": 5, "idle_ns": 5,
               "max_busy_ns": 5, "busy_since_ns": since, "hist": hist}})
    };
    let stack = |origin: &str, off_cpu: serde_json::Value| {
        json!({"t": "stack", "pid": PID, "tid": PID, "t_ns": ORIGIN + 150, "weight_ns": 5, "origin": origin,
               "tick_ns": ORIGIN + 100, "off_cpu": off_cpu, "frames": [0, 0]})
    };
    vec![
        serde_json::from_str(&header()).unwrap(),
        json!({"t": "process", "pid": PID, "command": ["node"], "exe": "/usr/bin/node", "start_ns": ORIGIN}),
        json!({"t": "probe_ready", "pid": PID}),
        serde_json::from_str(&loop_started()).unwrap(),
        totals(ORIGIN + 10, 0),
        json!({"t": "stall", "id": id, "start_ns": ORIGIN + 100, "duration_ns": 100_000_000}),
        json!({"t": "stall", "id": id, "start_ns": ORIGIN + 200, "duration_ns": 100_000_000}),
        json!({"t": "gc", "pid": PID, "thread": 0, "start_ns": ORIGIN + 150, "duration_ns": 1000, "kind": "Minor"}),
        json!({"t": "gc", "pid": PID, "thread": 0, "start_ns": ORIGIN + 160, "duration_ns": 1000, "kind": {"Generation": 2}}),
        json!({"t": "alloc", "pid": PID, "tid": PID, "start_ns": ORIGIN + 150, "duration_ns": 1000, "call": "mmap", "size": 5}),
        json!({"t": "alloc", "pid": PID, "tid": PID, "start_ns": ORIGIN + 170, "duration_ns": 1000, "call": "brk", "size": 5}),
        json!({"t": "pool_kind", "pid": PID, "kind": "libuv", "size": 4}),
        json!({"t": "pool_sample", "pid": PID, "at_ns": ORIGIN + 30, "size": 4, "in_flight": 2, "queued_max": 1}),
        json!({"t": "pool_waits", "pid": PID, "low_ns": 1000, "high_ns": 2000, "count": 3, "max_ns": 1900}),
        json!({"t": "pool_waits", "pid": PID, "low_ns": 1000, "high_ns": 2000, "count": 3, "max_ns": 1900}),
        json!({"t": "pool_waits", "pid": PID, "low_ns": 3000, "high_ns": 4000, "count": 3, "max_ns": 3900}),
        serde_json::from_str(&frame(0, "f")).unwrap(),
        stack("perf-off-cpu", json!({"syscall": 1, "wchan": null})),
        stack("watchdog", json!(null)),
        stack("perf-cpu", json!(null)),
        json!({"t": "lost_samples", "count": 3}),
        json!({"t": "lost_samples", "count": 3}),
        json!({"t": "dropped", "count": 3}),
        json!({"t": "dropped", "count": 3}),
        totals(ORIGIN + 20, ORIGIN + 15),
        json!({"t": "loop_ended", "id": id, "at_ns": ORIGIN + 500, "clean": false}),
        json!({"t": "process_exited", "pid": PID, "at_ns": ORIGIN + 600, "clean": true}),
        serde_json::from_str(&end()).unwrap(),
    ]
}

/// The paths of the integers in `v`.
fn number_paths(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        serde_json::Value::Number(_) => out.push(at.clone()),
        serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| {
            at.push(i.to_string());
            number_paths(v, at, out);
            at.pop();
        }),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, v)| {
            at.push(k.clone());
            number_paths(v, at, out);
            at.pop();
        }),
        _ => {}
    }
}

fn set_number(v: &mut serde_json::Value, path: &[String], n: u64) {
    let mut v = v;
    for k in path {
        v = match v {
            serde_json::Value::Array(a) => match k.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            serde_json::Value::Object(o) => match o.get_mut(k) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    if v.is_number() {
        *v = n.into();
    }
}

/// Reads `lines` and renders what was read every way `report` and `flame --from` do.
fn read_and_render(lines: &[serde_json::Value]) {
    use crate::sink::{flame, json, summary};
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let Ok(r) = read_from(text.as_bytes()) else { return };
    let report = r.report(Path::new("a.rec"));
    json::write(&report, std::io::sink()).unwrap();
    summary::write(&report, &summary::Options::new(false), std::io::sink()).unwrap();
    for stalls_only in [false, true] {
        let p = flame::build_profile(&r.session, &[], &flame::Draw::new(0, r.end_ns(), r.header.rate_hz, stalls_only));
        p.sample_count();
        for format in [flame::Format::Folded, flame::Format::Speedscope, flame::Format::Svg] {
            flame::write(&p, &flame::Options::new(format), std::io::sink()).unwrap();
        }
    }
}

/// Found by fuzzing the reader: sums and ends of spans (`start + duration`) taken from a file
/// overflowed, a panic in builds with overflow checks (the tests', the fuzzer's) and nonsense
/// in release builds. Every number of every line at an extreme, in that line alone and in
/// every line of its kind: reading, the report in all its forms and the flamegraph never panic.
#[test]
fn extreme_numbers_in_any_line_never_panic() {
    let lines = every_kind();
    for i in 0..lines.len() {
        let mut paths = Vec::new();
        number_paths(&lines[i], &mut Vec::new(), &mut paths);
        for path in &paths {
            for n in [u64::MAX, u64::MAX - 1, 1 << 63, u32::MAX as u64, 0] {
                let mut one = lines.clone();
                set_number(&mut one[i], path, n);
                read_and_render(&one);
                let mut kind = lines.clone();
                for l in kind.iter_mut().filter(|l| l["t"] == lines[i]["t"]) {
                    set_number(l, path, n);
                }
                read_and_render(&kind);
            }
        }
    }
}

/// What a file claims cannot make memory grow past what it holds: loops beyond the first 2048,
/// stacks deeper than 1024 frames and counts past 2^32 are skipped and counted (issue 13,
/// point 14).
#[test]
fn claims_past_the_bounds_are_skipped_not_allocated() {
    let mut lines = vec![header()];
    for tid in 0..2100u32 {
        let id = json!({"pid": PID, "tid": tid, "since_ns": ORIGIN});
        let totals = json!({"at_ns": ORIGIN + 5, "ticks": 1, "busy_ns": 1, "idle_ns": 1, "max_busy_ns": 1,
                            "busy_since_ns": 0, "hist": [[4000, 1]]});
        lines.push(json!({"t": "totals", "id": id, "totals": totals}).to_string());
    }
    lines.push(frame(0, "f"));
    lines.push(stack(ORIGIN + 9, &[0; 1025]));
    let mut counted = serde_json::from_str::<serde_json::Value>(&stack(ORIGIN + 9, &[0])).unwrap();
    counted["count"] = json!(u64::MAX);
    lines.push(counted.to_string());
    counted["count"] = json!(3);
    lines.push(counted.to_string());
    let text = lines.join("\n") + "\n";
    let replay = read_from(text.as_bytes()).expect("a recording");
    let report = replay.report(std::path::Path::new("x.rec"));
    let warnings = replay.warnings(std::path::Path::new("x.rec")).join("\n");
    assert_eq!(report.loops.len(), 2048, "{warnings}");
    assert_eq!(report.samples, 3);
    let warnings = replay.warnings(std::path::Path::new("x.rec")).join("\n");
    assert!(
        warnings.contains("skipped 54 unreadable lines") && warnings.contains("beyond the first 2048"),
        "{warnings}"
    );
}

/// A header of this format that cannot be read is said to be damaged, not another version.
#[test]
fn a_damaged_header_is_not_called_another_version() {
    let mut h = serde_json::from_str::<serde_json::Value>(&header()).unwrap();
    h["pid"] = json!(1u64 << 40);
    let e = read_from(format!("{h}\n").as_bytes()).err().expect("refused").at(std::path::Path::new("x.rec"));
    let text = e.to_string();
    assert!(text.contains("damaged") && !text.contains("this looptop reads"), "{text}");
}

/// Names, source lines, loop names, commands and warnings from a file never drive the terminal:
/// every control character is shown as `�`.
#[test]
fn a_recordings_bytes_never_reach_the_terminal_as_control_characters() {
    let esc = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let mut h = serde_json::from_str::<serde_json::Value>(&header()).unwrap();
    h["command"] = json!([format!("node{esc}")]);
    let lines = [
        h.to_string(),
        json!({"t": "loop_started", "id": loop_id(), "name": format!("main{esc}"), "start_ns": ORIGIN}).to_string(),
        stall(1),
        json!({"t": "frame", "id": 0, "frame": {"name": format!("f{esc}"), "kind": "js", "file": format!("/a{esc}.js"), "line": 3}, "source": format!("x{esc}")}).to_string(),
        stack(ORIGIN + 1_050_000_000, &[0]),
        json!({"t": "warning", "text": format!("w{esc}")}).to_string(),
    ];
    let replay = read_from((lines.join("\n") + "\n").as_bytes()).expect("a recording");
    let report = replay.report(std::path::Path::new("x.rec"));
    let mut out = Vec::new();
    crate::sink::summary::write(&report, &crate::sink::summary::Options::new(false), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap() + &report.warnings.join("\n");
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    assert!(
        text.contains("f\u{FFFD}]0;pwned") && text.contains("main\u{FFFD}") && text.contains("w\u{FFFD}"),
        "{text}"
    );
}
