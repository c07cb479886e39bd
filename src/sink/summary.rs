//! The text summary: per loop, ticks, utilization, tick and lag percentiles, and every stall.

use crate::analysis::report::{LoopReport, Report};
use crate::units::{fmt_ms, plural};
use std::io::{self, Write};

/// How to render.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// ANSI colours (off for `NO_COLOR`, `--no-color`, or not a terminal).
    pub color: bool,
    /// Stalls listed per loop at most; the rest are counted.
    pub max_stalls: usize,
}

impl Options {
    /// Default options with colour on or off.
    pub fn new(color: bool) -> Self {
        Options { color, max_stalls: 50 }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// How the observation ended: `exited 0 after 5.56 s` or `observed for 10.0 s`.
pub fn status(report: &Report) -> String {
    match report.target.exit_code {
        Some(c) if report.target.stopped => {
            format!("stopped by looptop after {} (it was sent SIGTERM; exited {c})", fmt_ms(report.wall_ms))
        }
        Some(c) => format!("exited {c} after {}", fmt_ms(report.wall_ms)),
        None => format!("observed for {}", fmt_ms(report.wall_ms)),
    }
}

/// Writes the summary.
pub fn write(report: &Report, opts: &Options, mut out: impl Write) -> io::Result<()> {
    let t = &report.target;
    let status = status(report);
    writeln!(out, "{} {} — {status} (pid {}, {})", opts.paint("1", "looptop:"), t.command.join(" "), t.pid, t.runtime)?;
    let stalls = report.stalls().count();
    writeln!(
        out,
        "  {} loop{}, {} stall{} at or over {}",
        report.loops.len(),
        plural(report.loops.len()),
        stalls,
        plural(stalls),
        fmt_ms(report.stall_threshold_ms)
    )?;
    if report.samples > 0 || report.lost_samples > 0 {
        let lost = if report.lost_samples > 0 { format!(", {} lost", report.lost_samples) } else { String::new() };
        writeln!(out, "  {} stack sample{}{lost}", report.samples, plural(report.samples as usize))?;
    }
    if report.dropped_events > 0 {
        writeln!(
            out,
            "  {} event{} dropped (looptop fell behind)",
            report.dropped_events,
            plural(report.dropped_events as usize)
        )?;
    }
    write_runtime(report, opts, &mut out)?;
    // Loops that did nearly nothing (runtime helper threads) are named, not detailed.
    let (quiet, busy): (Vec<&LoopReport>, Vec<&LoopReport>) =
        report.loops.iter().partition(|l| l.stalls.is_empty() && l.ticks < 10 && l.utilization < 0.01);
    for l in busy {
        write_loop(l, opts, &mut out)?;
    }
    if !quiet.is_empty() {
        let names: Vec<String> = quiet.iter().map(|l| format!("{}/{} {}", l.pid, l.tid, l.name)).collect();
        writeln!(out, "\n{} idle loop{}: {}", quiet.len(), plural(quiet.len()), names.join(", "))?;
    }
    write_blockers(report, opts, &mut out)
}

/// The stalls' blockers, aggregated by kind and location, worst first.
fn write_blockers(report: &Report, opts: &Options, out: &mut impl Write) -> io::Result<()> {
    let unnamed = report.stalls().filter(|(_, s)| s.blocker.is_none()).count();
    if report.blockers.is_empty() {
        if unnamed > 0 {
            writeln!(out, "\nno stack was captured during the stalls: blockers unknown")?;
        }
        return Ok(());
    }
    writeln!(out, "\n{}", opts.paint("1", "blockers (worst first):"))?;
    for b in &report.blockers {
        writeln!(
            out,
            "  {} {:>3}× {:>9} in all, max {:>9}  {}{}",
            opts.paint("33;1", &format!("{:<14}", b.kind)),
            b.count,
            fmt_ms(b.total_ms),
            fmt_ms(b.max_ms),
            b.frame,
            b.location.as_ref().map(|l| format!("  {l}")).unwrap_or_default()
        )?;
        if let Some(src) = &b.source {
            writeln!(out, "      {}", opts.paint("2", &format!("│ {src}")))?;
        }
    }
    if unnamed > 0 {
        writeln!(out, "  {unnamed} stall{} without a stack", plural(unnamed))?;
    }
    Ok(())
}

/// GC, thread pool and allocator lines, where the source sees them.
fn write_runtime(report: &Report, opts: &Options, out: &mut impl Write) -> io::Result<()> {
    if let Some(gc) = &report.gc {
        let majors = gc.pauses.iter().filter(|p| p.kind == "major" || p.kind == "gen2").count();
        writeln!(
            out,
            "  {} {} pause{} ({majors} major), {} in all, longest {}",
            opts.paint("1", "gc  "),
            gc.count,
            plural(gc.count as usize),
            fmt_ms(gc.total_ms),
            fmt_ms(gc.max_ms)
        )?;
    }
    if let Some(p) = &report.pool {
        writeln!(
            out,
            "  {} {} of {} worker{} busy at most, {} queued at most; {} item{} waited p50 {}  p99 {}  max {}",
            opts.paint("1", "pool"),
            p.busy_max,
            p.size,
            plural(p.size as usize),
            p.queued_max,
            p.items,
            plural(p.items as usize),
            fmt_ms(p.wait_ms.p50),
            fmt_ms(p.wait_ms.p99),
            fmt_ms(p.wait_ms.max)
        )?;
    }
    if let Some(a) = report.alloc.as_ref().filter(|a| a.count > 0) {
        let worst = a.pauses.iter().max_by(|x, y| x.duration_ms.total_cmp(&y.duration_ms));
        let what = worst.map(|w| format!(" ({} of {} bytes)", w.call, w.size)).unwrap_or_default();
        writeln!(
            out,
            "  {} {} allocator pause{}, {} in all, longest {}{what}",
            opts.paint("1", "alloc"),
            a.count,
            plural(a.count as usize),
            fmt_ms(a.total_ms),
            fmt_ms(a.max_ms)
        )?;
    }
    Ok(())
}

/// Fewer samples than this in a stall make its blocker a guess, and the summary says so.
const FEW_SAMPLES: u64 = 5;
/// A kind that less of the stall's sampled time showed than this is a weak verdict, said so.
const LOW_CONFIDENCE: f64 = 0.5;

/// What a stall's blocker rests on: `96% of 48 samples`; `GC for 92% of the stall`; and a word of
/// caution under [`FEW_SAMPLES`] or [`LOW_CONFIDENCE`].
fn evidence(b: &crate::analysis::report::Blocker) -> String {
    let pct = b.confidence * 100.0;
    if b.basis == "gc_pauses" {
        return format!("GC pauses for {pct:.0}% of the stall");
    }
    let n = b.samples;
    let few = if n < FEW_SAMPLES {
        ": too few to be sure"
    } else if b.confidence < LOW_CONFIDENCE {
        ": low confidence, the other samples disagree or show nothing"
    } else {
        ""
    };
    format!("{pct:.0}% of {n} sample{}{few}", plural(n as usize))
}

fn write_loop(l: &LoopReport, opts: &Options, out: &mut impl Write) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{}  ticks {}  utilization {:.1}%",
        opts.paint("1", &format!("loop {}/{} {}", l.pid, l.tid, l.name)),
        l.ticks,
        l.utilization * 100.0
    )?;
    let k = &l.tick_ms;
    writeln!(
        out,
        "  tick  p50 {}  p90 {}  p99 {}  max {}",
        fmt_ms(k.p50),
        fmt_ms(k.p90),
        fmt_ms(k.p99),
        fmt_ms(k.max)
    )?;
    let g = &l.lag_ms;
    writeln!(
        out,
        "  lag   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        fmt_ms(g.p50),
        fmt_ms(g.p90),
        fmt_ms(g.p99),
        fmt_ms(g.p999),
        fmt_ms(g.max)
    )?;
    if l.stalls.is_empty() {
        return writeln!(out, "  no stalls");
    }
    writeln!(out, "  {}", opts.paint("31;1", &format!("stalls ({}):", l.stalls.len())))?;
    for s in l.stalls.iter().take(opts.max_stalls) {
        let dur = opts.paint("31", &format!("{:>9}", fmt_ms(s.duration_ms)));
        let mut note = String::new();
        if let Some(gc) = s.gc_ms.filter(|&g| g >= 0.05) {
            note += &format!("  (GC {}, {:.0}%)", fmt_ms(gc), 100.0 * gc / s.duration_ms.max(1e-9));
        }
        if s.in_progress {
            note += "  (in progress)";
        }
        writeln!(out, "    at {:>9}  {dur}{note}", fmt_ms(s.start_ms.max(0.0)))?;
        if let Some(b) = &s.blocker {
            writeln!(
                out,
                "      {} {}{}  ({})",
                opts.paint("33;1", b.kind),
                b.frame,
                b.location.as_ref().map(|l| format!("  {l}{}", position_note(b))).unwrap_or_default(),
                evidence(b)
            )?;
            if let Some(src) = &b.source {
                writeln!(out, "        {}", opts.paint("2", &format!("│ {src}")))?;
            }
        }
    }
    if l.stalls.len() > opts.max_stalls {
        writeln!(out, "    … {} more", l.stalls.len() - opts.max_stalls)?;
    }
    Ok(())
}

/// Says when a location is where the function starts rather than the line that ran.
fn position_note(b: &crate::analysis::report::Blocker) -> &'static str {
    if b.position == Some("function-start") {
        " (function start)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use crate::analysis::report::Target;
    use crate::analysis::Session;
    use crate::event::{Event, GcKind, LoopId, ProcessInfo, Sample};
    use crate::symbolize::Frame;

    const MS_NS: u64 = 1_000_000;

    #[test]
    fn a_stall_mostly_spent_in_gc_pauses_is_a_gc_stall_and_a_thin_verdict_says_so() {
        let mut s = Session::new(0, 50 * MS_NS);
        let info = ProcessInfo { pid: 7, command: vec!["node".into()], exe: "/usr/bin/node".into(), start_ns: 0 };
        s.handle(Event::Process(info));
        let id = LoopId { pid: 7, tid: 7, since_ns: 0 };
        s.handle(Event::LoopStarted { id, name: "node".into(), start_ns: 0 });
        // 50 ms of a 60 ms stall in one pause; 10 ms of another in GC.
        // Each stall caught twice waiting on a futex (V8's GC helpers), as the watchdog sees it.
        let futex = Frame {
            name: "futex_wait".into(),
            kind: crate::symbolize::FrameKind::Kernel,
            module: Some("[kernel]".into()),
            file: None,
            line: None,
            col: None,
            tier: None,
            exec_line: None,
        };
        let frame = s.stacks_mut().intern(futex, |_| None);
        for (start, gc) in [(100, 50), (300, 10)] {
            s.handle(Event::Stall { id, start_ns: start * MS_NS, duration_ns: 60 * MS_NS });
            let kind = GcKind::from_code(2);
            s.handle(Event::Gc { pid: 7, thread: 0, start_ns: (start + 5) * MS_NS, duration_ns: gc * MS_NS, kind });
            for at in [20, 40] {
                let sample = Sample {
                    pid: 7,
                    tid: 7,
                    t_ns: (start + at) * MS_NS,
                    origin: crate::event::SampleOrigin::Watchdog,
                    weight_ns: 20 * MS_NS,
                    tick_ns: start * MS_NS,
                    off_cpu: Some(crate::event::OffCpu { syscall: Some(202), wchan: None }),
                    ips: vec![],
                    count: 1,
                    js: Vec::new(),
                    py: Vec::new(),
                    stack: None,
                };
                s.stacks_mut().push(&sample, vec![frame]);
            }
        }
        let target = Target { pid: 7, command: vec![], runtime: "node", exit_code: None, stopped: false };
        let report = s.report(target, 1_000 * MS_NS);
        let stalls = &report.loops[0].stalls;
        assert_eq!(stalls.len(), 2, "{stalls:?}");
        let b = stalls[0].blocker.as_ref().expect("the GC stall has a blocker");
        assert_eq!((b.kind, b.basis, b.frame.as_str()), ("gc", "gc_pauses", "garbage collection"));
        assert!((b.confidence - 0.83).abs() < 0.01, "{b:?}");
        assert_eq!(b.samples, 2);
        let other = stalls[1].blocker.as_ref().expect("the other stall has a blocker");
        assert_eq!((other.kind, other.basis), ("sync-wait", "samples"), "a sixth of a stall in GC is not a GC stall");
        let mut text = Vec::new();
        super::write(&report, &super::Options::new(false), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("gc garbage collection  (GC pauses for 83% of the stall)"), "{text}");
        assert!(text.contains("sync-wait futex_wait  (100% of 2 samples: too few to be sure)"), "{text}");
        assert!(text.contains("  4 stack samples\n") && text.contains(" 2 pauses (2 major)"), "{text}");
    }

    #[test]
    fn a_verdict_most_samples_do_not_show_says_so() {
        let b = |confidence: f64, samples: u64| crate::analysis::report::Blocker {
            kind: "cpu",
            confidence,
            basis: "samples",
            frame: "spin".into(),
            location: None,
            position: None,
            source: None,
            samples,
        };
        assert_eq!(
            super::evidence(&b(0.28, 40)),
            "28% of 40 samples: low confidence, the other samples disagree or show nothing"
        );
        assert_eq!(super::evidence(&b(0.5, 40)), "50% of 40 samples");
        assert_eq!(super::evidence(&b(0.3, 2)), "30% of 2 samples: too few to be sure");
    }
}
