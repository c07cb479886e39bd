//! The report as JSON (`looptop.report/1`).

use crate::analysis::report::Report;
use std::io::Write;

/// Writes the report as pretty JSON followed by a newline.
pub fn write(report: &Report, mut out: impl Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut out, report)?;
    writeln!(out)
}
