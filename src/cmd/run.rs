//! `looptop run -- CMD`: launch with the agent, report when the command exits, exit with its
//! status.

use super::observe::{launch_and_observe, Collect, Flow};
use super::output::OutputFile;
use super::top::Watch;
use crate::error::UserError;
use crate::plan::{JsonTo, RunPlan};
use crate::sink::{json, summary};
use crate::target::launch::{self, LaunchPlan};
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// Runs `looptop run`.
pub fn execute(plan: RunPlan) -> Result<u8> {
    launch::forward_signals();
    // Before anything starts: a report that cannot be written is refused now, not after the run.
    let out = ReportOut::open(plan.json.as_ref(), plan.output.as_deref(), Stream::Stderr)?;
    let threshold = plan.observe.stall_threshold;
    let launch = LaunchPlan::inherited(&plan.command, stall_floor(threshold));
    let quiet = plan.observe.quiet;
    let collect = Collect::new(threshold, None, plan.stacks);
    if out.leaves_terminal() && !plan.no_tui && super::top::can_show() {
        let watch = Watch::Logged(plan.command.clone());
        let live = super::top::observe_live(watch, &collect, plan.observe.color, super::top::WINDOW)?;
        live.observed.tell();
        let report = &live.observed.report;
        out.write(report, plan.observe.color, quiet)?;
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
    out.write(report, plan.observe.color, quiet)?;
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

/// Where a report goes, opened before anything starts: its text summary and its JSON, read the
/// same way by every command — a bare `--json` puts the JSON where the text would have gone to
/// stdout, `--json=FILE` writes it beside the text, `-o FILE` takes what would go to the terminal.
pub(super) struct ReportOut {
    text: Option<Text>,
    json: Option<OutputFile>,
}

/// The text summary's way out.
enum Text {
    Stream(Stream),
    File(OutputFile),
}

impl ReportOut {
    /// Opens the outputs of `--json` and `-o` (a path that cannot be written is refused, exit 2).
    pub fn open(json: Option<&JsonTo>, output: Option<&Path>, text_to: Stream) -> Result<ReportOut, UserError> {
        let out = output.map(|p| OutputFile::create(p, "the report", "-o FILE")).transpose()?;
        Ok(match json {
            None => ReportOut { text: Some(out.map_or(Text::Stream(text_to), Text::File)), json: None },
            Some(to @ JsonTo::Stdout) => {
                let json = match out {
                    Some(out) => out,
                    None => OutputFile::json(to, "the JSON report")?,
                };
                ReportOut { text: None, json: Some(json) }
            }
            Some(to @ JsonTo::File(_)) => ReportOut {
                text: Some(out.map_or(Text::Stream(text_to), Text::File)),
                json: Some(OutputFile::json(to, "the JSON report")?),
            },
        })
    }

    /// The text goes to stderr and the JSON, if any, to a file: the live view may take the terminal.
    pub fn leaves_terminal(&self) -> bool {
        matches!(self.text, Some(Text::Stream(Stream::Stderr))) && !self.json.as_ref().is_some_and(|j| j.is_stdout())
    }

    /// Some text summary is written (not only JSON).
    pub fn has_text(&self) -> bool {
        self.text.is_some()
    }

    /// Writes the report: the text summary and the JSON, where they go.
    pub fn write(&self, report: &crate::analysis::report::Report, color: bool, quiet: bool) -> Result<()> {
        match &self.text {
            None => {}
            Some(Text::File(out)) => {
                out.write_with(|w| Ok(summary::write(report, &summary::Options::new(false), w)?))?;
                out.tell_written(quiet);
            }
            Some(Text::Stream(Stream::Stderr)) => {
                let mut err = std::io::stderr().lock();
                summary::write(report, &summary::Options::new(color && super::is_tty(2)), &mut err)?;
                err.flush()?;
            }
            Some(Text::Stream(Stream::Stdout)) => {
                let mut out = std::io::stdout().lock();
                summary::write(report, &summary::Options::new(color && super::is_tty(1)), &mut out)?;
                out.flush()?;
            }
        }
        if let Some(out) = &self.json {
            out.write_with(|w| Ok(json::write(report, w)?))?;
            out.tell_written(quiet);
        }
        Ok(())
    }
}

/// Writes the text summary of a report to stderr (what a live view showed, left on the terminal).
pub(super) fn tell_summary(report: &crate::analysis::report::Report, color: bool) -> Result<()> {
    ReportOut { text: Some(Text::Stream(Stream::Stderr)), json: None }.write(report, color, true)
}

/// The agent keeps every tick at least this long individually: the threshold, or lower so a
/// later, lower threshold (and recordings) still see every stall.
pub(super) fn stall_floor(threshold: std::time::Duration) -> u64 {
    looptop_abi::stall_floor_ns(threshold.as_nanos() as u64)
}
