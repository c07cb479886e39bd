//! Observing what a command line names: a command looptop launches, or a running pid.

use super::{attach_and_observe, launch_and_observe, Collect, Flow, Observed};
use crate::error::UserError;
use crate::plan::TargetSpec;
use crate::target::launch::{self, LaunchPlan};
use anyhow::Result;
use std::time::Duration;

/// Observes what `target` names (a command or a pid) with `collect`.
pub fn observe_target(target: &TargetSpec, collect: &Collect, quiet: bool, verb: &str) -> Result<Observed> {
    launch::forward_signals();
    match target {
        TargetSpec::Launch(command) => {
            let launch = LaunchPlan::inherited(command, super::stall_floor(collect.threshold));
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

/// Says which process is watched, and for how long (on a terminal, unless quiet).
fn note_start(quiet: bool, pid: u32, duration: Option<Duration>) {
    if quiet || !crate::sink::is_tty(2) {
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
