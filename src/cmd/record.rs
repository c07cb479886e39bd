//! `looptop record` and `looptop report`: write a recording of a launched or running process,
//! and print the summary of one.

use super::observe::{attach_and_observe, launch_and_observe, Collect, Flow, Observed};
use super::output::OutputFile;
use super::run::{ReportOut, Stream};
use crate::error::UserError;
use crate::plan::{RecordPlan, ReportPlan, TargetSpec};
use crate::source::recording::{self, RecordingError};
use crate::target::launch::{self, LaunchPlan};
use crate::units::plural;
use anyhow::Result;
use std::time::Duration;

/// Runs `looptop record`.
pub fn execute(plan: RecordPlan) -> Result<u8> {
    if super::output::is_stdout(&plan.output) && matches!(plan.target, TargetSpec::Launch(_)) {
        return Err(UserError::usage("record -o - would mix the recording with the command's own output on stdout")
            .hint("write it to a file (-o app.rec), or attach to the running process with --pid PID")
            .into());
    }
    // Before anything starts: a recording that cannot be written is refused now.
    let output = OutputFile::create(&plan.output, "the recording", "-o FILE")?;
    let collect = Collect {
        record: Some(std::sync::Arc::new(output)),
        ..Collect::new(plan.observe.stall_threshold, plan.duration, plan.stacks)
    };
    let observed = observe_target(&plan.target, &collect, plan.observe.quiet, "record")?;
    observed.tell();
    if !plan.observe.quiet {
        let r = &observed.report;
        let (path, lines) = observed.recorded.as_ref().map(|(p, l)| (p.display().to_string(), *l)).unwrap_or_default();
        let (loops, stalls) = (r.loops.len(), r.stalls().count());
        let samples = r.samples as usize;
        let what = format!(
            "{:.1} s, {loops} loop{}, {stalls} stall{}, {samples} stack sample{}, {lines} lines",
            r.wall_ms / 1000.0,
            plural(loops),
            plural(stalls),
            plural(samples),
        );
        if super::output::is_stdout(&plan.output) {
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

/// Observes what `target` names (a command or a pid) with `collect`.
pub(super) fn observe_target(target: &TargetSpec, collect: &Collect, quiet: bool, verb: &str) -> Result<Observed> {
    launch::forward_signals();
    match target {
        TargetSpec::Launch(command) => {
            let launch = LaunchPlan::inherited(command, super::run::stall_floor(collect.threshold));
            launch_and_observe(&launch, collect, |l| note_start(quiet, l.child.id(), collect.duration), |_| Flow::Go)
        }
        TargetSpec::Pid(pid) => {
            note_start(quiet, *pid, collect.duration);
            attach_and_observe(*pid, collect, |_| Flow::Go)
        }
        TargetSpec::Recording(_) | TargetSpec::Missing => {
            Err(UserError::usage(format!("looptop {verb} needs a target: a command after `--` or --pid PID"))
                .hint(format!("e.g. looptop {verb} -- node server.js, or looptop {verb} --pid 4242"))
                .into())
        }
    }
}

fn note_start(quiet: bool, pid: u32, duration: Option<Duration>) {
    if quiet || !super::is_tty(2) {
        return;
    }
    match duration {
        Some(d) => eprintln!(
            "looptop: watching pid {pid} for {}; Ctrl-C stops early",
            crate::units::fmt_ms(d.as_secs_f64() * 1000.0)
        ),
        None => eprintln!("looptop: watching pid {pid} until it exits; Ctrl-C stops"),
    }
}

/// Loads a recording, turning format errors into usage errors (exit 2) and printing warnings.
pub(super) fn load(path: &std::path::Path, threshold: Option<Duration>) -> Result<recording::Replay> {
    let mut replay = recording::load(path).map_err(|e| match e {
        RecordingError::Io { .. } => UserError::usage(e.to_string()).hint("check the path"),
        RecordingError::NotFile { .. } | RecordingError::NotRecording { .. } | RecordingError::BadHeader { .. } => {
            UserError::usage(e.to_string()).hint("give a file written by `looptop record -o FILE`")
        }
        RecordingError::Version { .. } => {
            UserError::usage(e.to_string()).hint("read it with the looptop version that wrote it")
        }
    })?;
    if let Some(t) = threshold {
        replay.session.set_threshold(t.as_nanos() as u64);
    }
    for w in replay.warnings(path) {
        eprintln!("looptop: warning: {w}");
    }
    Ok(replay)
}

/// Runs `looptop report`.
pub fn report(plan: ReportPlan) -> Result<u8> {
    let out = ReportOut::open(plan.json.as_ref(), None, Stream::Stdout)?;
    let replay = load(&plan.recording, plan.stall_threshold)?;
    let report = replay.report(&plan.recording);
    out.write(&report, plan.color, false)?;
    Ok(crate::error::exit::OK)
}
