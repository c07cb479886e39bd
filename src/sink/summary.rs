//! The text summary: per loop, ticks, utilization, tick and lag percentiles, and every stall.

use crate::analysis::report::{LoopReport, Report};
use crate::units::fmt_ms;
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
        writeln!(out, "  {} stack samples{lost}", report.samples)?;
    }
    if report.dropped_events > 0 {
        writeln!(out, "  {} events dropped (looptop fell behind)", report.dropped_events)?;
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
            "  {} {} pauses ({majors} major), {} in all, longest {}",
            opts.paint("1", "gc  "),
            gc.count,
            fmt_ms(gc.total_ms),
            fmt_ms(gc.max_ms)
        )?;
    }
    if let Some(p) = &report.pool {
        writeln!(
            out,
            "  {} {} of {} workers busy at most, {} queued at most; {} items waited p50 {}  p99 {}  max {}",
            opts.paint("1", "pool"),
            p.busy_max,
            p.size,
            p.queued_max,
            p.items,
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
            "  {} {} allocator pauses, {} in all, longest {}{what}",
            opts.paint("1", "alloc"),
            a.count,
            fmt_ms(a.total_ms),
            fmt_ms(a.max_ms)
        )?;
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
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
                "      {} {}{}  ({:.0}% of {} sample{})",
                opts.paint("33;1", b.kind),
                b.frame,
                b.location.as_ref().map(|l| format!("  {l}")).unwrap_or_default(),
                b.confidence * 100.0,
                b.samples,
                plural(b.samples as usize)
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
