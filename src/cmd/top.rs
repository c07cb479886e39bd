//! `looptop top` (and `looptop PID`): the live view of a command it launches or a running
//! process ([`crate::observe::live`]), and the summary of what it showed when it closes.

use crate::error::UserError;
use crate::observe::live::{observe_live, Watch};
use crate::observe::Collect;
use crate::plan::{TargetSpec, TopPlan};
use crate::sink::report_out::tell_summary;
use anyhow::Result;

/// Runs `looptop top`.
pub fn execute(plan: TopPlan) -> Result<u8> {
    let collect = Collect::new(plan.observe.stall_threshold, plan.duration, plan.stacks);
    let watch = match &plan.target {
        TargetSpec::Launch(command) => Watch::Logged(command.clone()),
        TargetSpec::Pid(pid) => Watch::Pid(*pid),
        TargetSpec::Recording(_) | TargetSpec::Missing => {
            return Err(UserError::usage("looptop top needs a target: a command after `--` or --pid PID")
                .hint("e.g. looptop top -- node server.js, or looptop top --pid 4242 (or just looptop 4242)")
                .into())
        }
    };
    let live = observe_live(watch, &collect, plan.observe.color, plan.window)?;
    live.observed.tell();
    // What the view showed, left on the terminal once it closes (as `run` does).
    let report = &live.observed.report;
    tell_summary(report, plan.observe.color)?;
    if let Some(log) = &live.log {
        eprintln!("looptop: the program's output is in {}", log.display());
    }
    Ok(crate::error::exit::OK)
}
