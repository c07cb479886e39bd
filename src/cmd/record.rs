//! `looptop record` and `looptop report`: write a recording of a launched or running process,
//! and print the summary of one.

use crate::error::UserError;
use crate::observe::{observe_target, replay, Collect};
use crate::plan::{JsonTo, RecordPlan, ReportPlan, TargetSpec};
use crate::sink::output::{self, OutputFile};
use crate::sink::report_out::{ReportOut, Stream};
use crate::source::recording::Load;
use crate::units::plural;
use anyhow::Result;

/// Runs `looptop record`.
pub fn execute(plan: RecordPlan) -> Result<u8> {
    if output::is_stdout(&plan.output) && matches!(plan.target, TargetSpec::Launch(_)) {
        return Err(UserError::usage("record -o - would mix the recording with the command's own output on stdout")
            .hint("write it to a file (-o app.rec), or attach to the running process with --pid PID")
            .into());
    }
    if output::is_stdout(&plan.output) && matches!(plan.json, Some(JsonTo::Stdout)) {
        return Err(UserError::usage("record -o - --json would mix the recording and the JSON report on stdout")
            .hint("write one of them to a file: --json=report.json, or -o app.rec")
            .into());
    }
    // Before anything starts: a recording (or report) that cannot be written is refused now.
    let output = OutputFile::create(&plan.output, "the recording", "-o FILE")?;
    let json = plan.json.as_ref().map(|to| OutputFile::json(to, "the JSON report")).transpose()?;
    let collect = Collect {
        record: Some(std::sync::Arc::new(output)),
        ..Collect::new(plan.observe.stall_threshold, plan.duration, plan.stacks)
    };
    let observed = observe_target(&plan.target, &collect, plan.observe.quiet, "record")?;
    observed.tell();
    if let Some(json) = json {
        json.write_with(|w| Ok(crate::sink::json::write(&observed.report, w)?))?;
    }
    if !plan.observe.quiet {
        let r = &observed.report;
        let (path, bytes) = observed.recorded.as_ref().map(|(p, b)| (p.display().to_string(), *b)).unwrap_or_default();
        let (loops, stalls) = (r.loops.len(), r.stalls().count());
        let samples = r.samples as usize;
        let what = format!(
            "{:.1} s, {loops} loop{}, {stalls} stall{}, {samples} stack sample{}, {}",
            r.wall_ms / 1000.0,
            plural(loops),
            plural(stalls),
            plural(samples),
            crate::units::fmt_bytes(bytes),
        );
        if output::is_stdout(&plan.output) {
            eprintln!("looptop: wrote the recording to stdout ({what})");
        } else {
            eprintln!("looptop: wrote {path} ({what}); read it with `looptop report {path}`");
        }
    }
    if let Some(why) = observed.lost.first() {
        // What was read is kept; the exit code says the recording is not the whole story.
        return Err(UserError::observe(format!("the recording was cut short while the process ran: {why}"))
            .hint("the recording keeps everything read until then; restart the process to record it again")
            .into());
    }
    Ok(crate::error::exit::OK)
}

/// Runs `looptop report`.
pub fn report(plan: ReportPlan) -> Result<u8> {
    let out = ReportOut::open(plan.json.as_ref(), None, Stream::Stdout)?;
    let how = Load { threshold_ns: plan.stall_threshold.map(|t| t.as_nanos() as u64), ..Load::default() };
    let replay = replay(&plan.recording, &how)?;
    let report = replay.report(&plan.recording);
    out.write(&report, plan.color, false)?;
    Ok(crate::error::exit::OK)
}
