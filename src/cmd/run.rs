//! `looptop run -- CMD`: launch with the agent, report when the command exits, exit with its
//! status.

use crate::observe::live::{self, Watch};
use crate::observe::{launch_and_observe, stall_floor, Collect, Flow};
use crate::plan::RunPlan;
use crate::sink::report_out::{ReportOut, Stream};
use crate::target::launch::{self, LaunchPlan};
use anyhow::Result;

/// Runs `looptop run`.
pub fn execute(plan: RunPlan) -> Result<u8> {
    launch::forward_signals();
    // Before anything starts: a report that cannot be written is refused now, not after the run.
    let out = ReportOut::open(plan.json.as_ref(), plan.output.as_deref(), Stream::Stderr)?;
    let threshold = plan.observe.stall_threshold;
    let launch = LaunchPlan::inherited(&plan.command, stall_floor(threshold));
    let quiet = plan.observe.quiet;
    let collect = Collect::new(threshold, None, plan.stacks);
    if out.leaves_terminal() && !plan.no_tui && live::can_show() {
        let watch = Watch::Logged(plan.command.clone());
        let live = live::observe_live(watch, &collect, plan.observe.color, live::WINDOW)?;
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
