//! The summary of `looptop check`, in the style users know from k6: one line per budget, ✓ or ✗,
//! the observed value next to the limit, and under a failed budget what explains it.

use super::Verdict;
use crate::analysis::report::Report;
use crate::units::{fmt_ms, plural};
use std::io::{self, Write};

/// Writes the summary.
pub fn write(report: &Report, verdict: &Verdict, color: bool, mut out: impl Write) -> io::Result<()> {
    let paint = |code: &str, s: &str| if color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() };
    let utf8 = crate::sink::utf8_locale();
    let (ok, bad) = if utf8 { ("✓", "✗") } else { ("ok", "FAIL") };
    let t = &report.target;
    let status = crate::sink::summary::status(report);
    let warm = if verdict.warmup_ms > 0.0 {
        format!("; the first {} left out", fmt_ms(verdict.warmup_ms))
    } else {
        String::new()
    };
    writeln!(
        out,
        "{} {} — {status} (pid {}, {}){warm}",
        paint("1", "looptop check:"),
        t.command.join(" "),
        t.pid,
        t.runtime
    )?;
    let width = verdict.outcomes.iter().map(|o| o.expr.chars().count()).max().unwrap_or(0) + 3;
    for (o, evidence) in verdict.outcomes.iter().zip(&verdict.evidence) {
        let mark = if o.held { paint("32", ok) } else { paint("31;1", bad) };
        let dots = ".".repeat(width.saturating_sub(o.expr.chars().count()));
        writeln!(out, "  {mark} {} {dots} {}", o.expr, if o.held { o.shown.clone() } else { paint("1", &o.shown) })?;
        for e in evidence {
            let at = e.location.as_deref().map(|l| format!("  {l}")).unwrap_or_default();
            writeln!(out, "      {} {}{}", if utf8 { "↳" } else { "->" }, e.what, paint("2", &at))?;
            if let Some(src) = &e.source {
                writeln!(out, "          {}", paint("2", src.trim()))?;
            }
        }
    }
    for u in &verdict.unmet {
        writeln!(out, "  {} {}", paint("31;1", bad), u.message)?;
    }
    let (n, failed) = (verdict.outcomes.len(), verdict.failed());
    let budgets = if failed == 0 {
        format!("all {n} budget{} held", plural(n))
    } else {
        format!("{failed} of {n} budget{} failed", plural(n))
    };
    let line = match verdict.unmet.first() {
        None if failed == 0 => paint("32", &budgets),
        None => paint("31;1", &budgets),
        Some(u) => paint("31;1", &format!("check failed: {} ({budgets})", u.title)),
    };
    writeln!(out, "{line}")
}
