//! Where a report goes — its text summary and its JSON — read the same way by every command
//! that prints one.

use crate::error::UserError;
use crate::plan::JsonTo;
use crate::sink::output::OutputFile;
use crate::sink::{json, summary};
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// Where a text summary goes when there is no output file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout (`report`: the summary is the output).
    Stdout,
    /// stderr (`run`: stdout belongs to the target, like time(1)).
    Stderr,
}

/// Where a report goes, opened before anything starts: its text summary and its JSON, read the
/// same way by every command — a bare `--json` puts the JSON where the text would have gone to
/// stdout, `--json=FILE` writes it beside the text, `-o FILE` takes what would go to the terminal.
pub struct ReportOut {
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
                summary::write(report, &summary::Options::new(color && crate::sink::is_tty(2)), &mut err)?;
                err.flush()?;
            }
            Some(Text::Stream(Stream::Stdout)) => {
                let mut out = std::io::stdout().lock();
                summary::write(report, &summary::Options::new(color && crate::sink::is_tty(1)), &mut out)?;
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
pub fn tell_summary(report: &crate::analysis::report::Report, color: bool) -> Result<()> {
    ReportOut { text: Some(Text::Stream(Stream::Stderr)), json: None }.write(report, color, true)
}
