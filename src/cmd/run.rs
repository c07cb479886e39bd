//! `looptop run -- CMD`: launch with the agent, report when the command exits, exit with its
//! status.

use super::observe::{launch_and_observe, Collect, Flow};
use super::output::OutputFile;
use super::top::Watch;
use crate::plan::RunPlan;
use crate::sink::{json, summary};
use crate::target::launch::{self, LaunchPlan};
use anyhow::Result;
use std::io::Write;

/// Runs `looptop run`.
pub fn execute(plan: RunPlan) -> Result<u8> {
    launch::forward_signals();
    // Before anything starts: a report that cannot be written is refused now, not after the run.
    let output = plan.output.as_deref().map(|p| OutputFile::create(p, "the report", "-o FILE")).transpose()?;
    let threshold = plan.observe.stall_threshold;
    let launch = LaunchPlan::inherited(&plan.command, stall_floor(threshold));
    let quiet = plan.observe.quiet;
    let collect = Collect::new(threshold, None, plan.stacks);
    if !plan.json && plan.output.is_none() && !plan.no_tui && super::top::can_show() {
        let watch = Watch::Logged(plan.command.clone());
        let live = super::top::observe_live(watch, &collect, plan.observe.color, super::top::WINDOW)?;
        live.observed.tell();
        let report = &live.observed.report;
        emit(report, false, None, plan.observe.color, quiet, Stream::Stderr)?;
        if let Some(log) = &live.log {
            eprintln!("looptop: the program's output is in {}", log.display());
        }
        return Ok(report.target.exit_code.unwrap_or(0).clamp(0, 255) as u8);
    }
    let observed = launch_and_observe(
        &launch,
        &collect,
        |l| {
            if !quiet && super::is_tty(2) {
                eprintln!("looptop: watching pid {}; the report follows when it exits (Ctrl-C stops it)", l.child.id());
            }
        },
        |_| Flow::Go,
    )?;
    for w in &observed.warnings {
        eprintln!("looptop: warning: {w}");
    }
    let report = &observed.report;
    emit(report, plan.json, output.as_ref(), plan.observe.color, plan.observe.quiet, Stream::Stderr)?;
    // Like time(1): the target's own status.
    Ok(report.target.exit_code.unwrap_or(0).clamp(0, 255) as u8)
}

/// Where a text summary goes when there is no output file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    /// stdout (`report`: the summary is the output).
    Stdout,
    /// stderr (`run`: stdout belongs to the target, like time(1)).
    Stderr,
}

/// Writes a report: JSON to stdout or FILE, or the text summary to `text_to` or FILE.
pub(super) fn emit(
    report: &crate::analysis::report::Report,
    as_json: bool,
    output: Option<&OutputFile>,
    color: bool,
    quiet: bool,
    text_to: Stream,
) -> Result<()> {
    match (output, as_json) {
        (Some(out), json_out) => {
            out.write_with(|w| {
                if json_out {
                    json::write(report, w)?;
                } else {
                    summary::write(report, &summary::Options::new(false), w)?;
                }
                Ok(())
            })?;
            if !quiet {
                eprintln!("looptop: wrote {}", out.path().display());
            }
        }
        (None, true) => json::write(report, std::io::stdout().lock())?,
        (None, false) if text_to == Stream::Stderr => {
            let mut err = std::io::stderr().lock();
            summary::write(report, &summary::Options::new(color && super::is_tty(2)), &mut err)?;
            err.flush()?;
        }
        (None, false) => {
            let mut out = std::io::stdout().lock();
            summary::write(report, &summary::Options::new(color && super::is_tty(1)), &mut out)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The agent keeps every tick at least this long individually: the threshold, or lower so a
/// later, lower threshold (and recordings) still see every stall.
pub(super) fn stall_floor(threshold: std::time::Duration) -> u64 {
    looptop_abi::stall_floor_ns(threshold.as_nanos() as u64)
}
