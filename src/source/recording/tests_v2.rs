//! The binary format written by the real [`Recorder`] and read back: whole, cut at every byte,
//! and a window of it read alone.

use super::*;
use crate::analysis::stacks::{Stacks, StoredSample};
use crate::event::{Event, LoopId, LoopTotals, ProcessInfo, SampleOrigin};
use crate::sink::flame;
use crate::sink::record::Recorder;
use crate::symbolize::{Frame, FrameKind};
use crate::testdir::TempDir;

const PID: u32 = 77;
const ORIGIN: u64 = 5_000_000_000;
const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// Writes `secs` of a loop sampled every `every` ns (two functions in turn, a third during its
/// stalls: 300 ms every 4 s), a block closed every 2 s; returns the bytes and the samples written.
fn write(path: &Path, secs: u64, every: u64) -> (Vec<u8>, u64) {
    let header = Header::new(ORIGIN, 50 * MS, PID, &["node".into(), "app.js".into()], 100, "agent");
    let file = std::fs::File::create(path).unwrap();
    let mut rec = Recorder::new(file, path, &header).unwrap();
    let id = LoopId { pid: PID, tid: PID, since_ns: ORIGIN };
    let info = ProcessInfo { pid: PID, command: vec!["node".into()], exe: "/usr/bin/node".into(), start_ns: ORIGIN };
    rec.event(&Event::Process(info)).unwrap();
    rec.event(&Event::LoopStarted { id, name: "node".into(), start_ns: ORIGIN }).unwrap();
    let mut stacks = Stacks::new(100);
    let frame = |name: &str| Frame { kind: FrameKind::Js, ..Frame::unknown(None) }.renamed(name.into());
    let main = stacks.intern(frame("main"), |_| None);
    let names = ["handle", "render", "blockingRegex"];
    let ids: Vec<u32> = names.iter().map(|n| stacks.intern(frame(n), |_| Some(format!("// {n}")))).collect();
    let mut samples = 0;
    let mut ticks = 0;
    let per_s = S / every;
    for i in 0..secs * per_s {
        let t = ORIGIN + i * every;
        let in_stall = t >= ORIGIN + S && (t - ORIGIN) % (4 * S) < 300 * MS;
        let f = if in_stall { ids[2] } else { ids[(i % 2) as usize] };
        let s = StoredSample {
            t_ns: t,
            weight_ns: 10 * MS,
            origin: SampleOrigin::PerfCpu,
            tick_ns: 0,
            off_cpu: None,
            stack: vec![f, main],
            count: 1,
        };
        rec.stack(PID, PID, &s, &stacks).unwrap();
        samples += 1;
        let since = t - ORIGIN;
        if (since + every) % (4 * S) == 300 * MS && since > S {
            rec.event(&Event::Stall { id, start_ns: t + every - 300 * MS, duration_ns: 300 * MS }).unwrap();
        }
        if i % per_s == per_s - 1 {
            ticks += 1000;
            let totals = LoopTotals {
                at_ns: t,
                ticks,
                busy_ns: ticks * MS / 2,
                idle_ns: ticks * MS / 2,
                max_busy_ns: 300 * MS,
                busy_since_ns: 0,
                hist: vec![ticks].into_boxed_slice(),
            };
            rec.event(&Event::Totals { id, totals }).unwrap();
        }
        if i % (2 * per_s) == 2 * per_s - 1 {
            rec.cut().unwrap();
        }
    }
    let target = Target { pid: PID, command: vec!["node".into()], runtime: "node", exit_code: Some(0), stopped: false };
    rec.finish(ORIGIN + secs * S, &target, &["a warning".into()]).unwrap();
    (std::fs::read(path).unwrap(), samples)
}

fn folded(replay: &Replay, since: u64, until: u64) -> Vec<(Vec<String>, u64)> {
    let draw = flame::Draw::new(since, until, replay.header.rate_hz, false);
    let p = flame::build_profile(&replay.session, &[], &draw);
    let mut out: Vec<(Vec<String>, u64)> =
        p.stacks.iter().map(|(st, w)| (st.iter().map(|&f| p.frames[f as usize].name.clone()).collect(), *w)).collect();
    out.sort();
    out
}

#[test]
fn a_recording_reads_back_whole() {
    let tmp = TempDir::new("whole");
    let (bytes, samples) = write(&tmp.path("r.rec"), 80, 10 * MS);
    assert_eq!(bytes[..8], crate::recording::MAGIC);
    let r = read_from(bytes.as_slice()).unwrap();
    assert!(r.end.is_some());
    assert_eq!(r.warnings(Path::new("a.rec")), ["a warning"]);
    assert_eq!(r.session.stacks().len(), samples);
    let report = r.report(Path::new("a.rec"));
    let stalls = &report.loops[0].stalls;
    assert_eq!(stalls.len(), 19, "{stalls:?}");
    assert!(stalls.iter().all(|s| s.blocker.as_ref().is_some_and(|b| b.frame == "blockingRegex")), "{stalls:?}");
    // Folded as it was read (80 s of samples, 30 s kept one by one at most): the flamegraph of
    // everything still counts every sample.
    assert!(r.session.stacks().folded().1 < u64::MAX, "nothing was folded");
    let all: u64 = folded(&r, 0, r.end_ns()).iter().map(|s| s.1).sum();
    assert_eq!(all, samples);
    // The same from the file (its index unused without a window).
    let loaded = load(&tmp.path("r.rec"), &Load::default()).unwrap();
    assert_eq!(folded(&loaded, 0, loaded.end_ns()), folded(&r, 0, r.end_ns()));
}

#[test]
fn a_recording_cut_at_any_byte_reads_up_to_its_last_complete_block() {
    let tmp = TempDir::new("cut");
    let (bytes, samples) = write(&tmp.path("r.rec"), 12, 40 * MS);
    let whole = read_from(bytes.as_slice()).unwrap();
    let mut last = 0;
    for cut in 0..bytes.len() {
        let r = match read_from(&bytes[..cut]) {
            Ok(r) => r,
            // Only before the header block is complete.
            Err(ReadError::NotRecording | ReadError::BadHeader(_)) if cut < 300 => continue,
            Err(e) => panic!("cut at {cut}: {e}"),
        };
        let n = r.session.stacks().len();
        assert!(n >= last && n <= samples, "cut at {cut}: {n} samples after {last}");
        last = n;
        assert!(r.skipped.count == 0 && r.damaged.is_none(), "cut at {cut}: {:?} {:?}", r.skipped, r.damaged);
        let w = r.warnings(Path::new("a.rec"));
        if r.end.is_none() {
            assert!(w.iter().any(|w| w.contains("ends early")), "cut at {cut}: {w:?}");
        }
        // Every stall read keeps its blocker.
        let report = r.report(Path::new("a.rec"));
        for s in report.loops.iter().flat_map(|l| &l.stalls).filter(|s| !s.in_progress) {
            assert_eq!(s.blocker.as_ref().map(|b| b.frame.as_str()), Some("blockingRegex"), "cut at {cut}");
        }
    }
    assert_eq!(last, whole.session.stacks().len());
    // A damaged byte inside a block: what comes before is read, and where it broke is said.
    let mut bad = bytes.clone();
    let at = bytes.len() / 2;
    bad[at] ^= 0x40;
    let r = read_from(bad.as_slice()).unwrap();
    assert!(r.session.stacks().len() < samples);
    assert!(r.damaged.is_some(), "{:?}", r.warnings(Path::new("a.rec")));
    assert!(r.warnings(Path::new("a.rec")).iter().any(|w| w.contains("is damaged at byte")));
}

#[test]
fn a_window_read_alone_equals_that_window_of_the_whole() {
    let tmp = TempDir::new("window");
    let (bytes, _) = write(&tmp.path("r.rec"), 80, 10 * MS);
    let all = load(&tmp.path("r.rec"), &Load { keep_all: true, ..Load::default() }).unwrap();
    let cut = TempDir::new("window-cut");
    // Without its index and trailer (a killed recorder's file): found by the block heads.
    std::fs::write(cut.path("r.rec"), &bytes[..bytes.len() - 400]).unwrap();
    for (since, until) in
        [(10 * S, 20 * S), (0, 3 * S), (12 * S + 5 * MS, 12 * S + 15 * MS), (39 * S, 60 * S), (70 * S, 90 * S)]
    {
        let want = folded(&all, ORIGIN + since, ORIGIN + until);
        assert!(!want.is_empty());
        for path in [&tmp.path("r.rec"), &cut.path("r.rec")] {
            let r = load(path, &Load { window: Some((since, until)), ..Load::default() }).unwrap();
            assert_eq!(folded(&r, ORIGIN + since, ORIGIN + until), want, "{} {since}..{until}", path.display());
            // Nothing outside the window was kept.
            assert!(r
                .session
                .stacks()
                .threads()
                .all(|(_, _, v)| v.iter().all(|s| s.t_ns >= ORIGIN + since && s.t_ns <= ORIGIN + until)));
        }
        // From a stream (no seeking): the same.
        let r = read_with(bytes.as_slice(), &Load { window: Some((since, until)), ..Load::default() }).unwrap();
        assert_eq!(folded(&r, ORIGIN + since, ORIGIN + until), want);
    }
}
