//! `looptop run -- CMD`: launch with the agent, report when the command exits, exit with its
//! status.

use super::observe::launch_and_observe;
use crate::plan::RunPlan;
use crate::sink::{json, summary};
use crate::target::launch::{self, LaunchPlan, Output};
use anyhow::{Context, Result};
use std::io::Write;

/// Runs `looptop run`.
pub fn execute(plan: RunPlan) -> Result<u8> {
    launch::forward_signals();
    let threshold = plan.observe.stall_threshold;
    let launch = LaunchPlan {
        command: plan.command.clone(),
        stall_floor_ns: stall_floor(threshold),
        stdout: Output::Inherit,
        stderr: Output::Inherit,
    };
    let quiet = plan.observe.quiet;
    let observed = launch_and_observe(
        &launch,
        threshold,
        |l| {
            if !quiet && super::is_tty(2) {
                eprintln!("looptop: watching pid {}; the report follows when it exits (Ctrl-C stops it)", l.child.id());
            }
        },
        |_| {},
    )?;
    for w in &observed.warnings {
        eprintln!("looptop: warning: {w}");
    }
    let report = &observed.report;
    match (&plan.output, plan.json) {
        (Some(path), json_out) => {
            let mut f = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
            if json_out {
                json::write(report, &mut f)?;
            } else {
                summary::write(report, &summary::Options::new(false), &mut f)?;
            }
            if !plan.observe.quiet {
                eprintln!("looptop: wrote {}", path.display());
            }
        }
        (None, true) => json::write(report, std::io::stdout().lock())?,
        (None, false) => {
            let color = plan.observe.color && super::is_tty(2);
            let mut err = std::io::stderr().lock();
            summary::write(report, &summary::Options::new(color), &mut err)?;
            err.flush()?;
        }
    }
    // Like time(1): the target's own status.
    Ok(report.target.exit_code.unwrap_or(0).clamp(0, 255) as u8)
}

/// The agent keeps every tick at least this long individually: the threshold, or lower so a
/// later, lower threshold (and recordings) still see every stall.
pub(super) fn stall_floor(threshold: std::time::Duration) -> u64 {
    (threshold.as_nanos() as u64).clamp(1, looptop_abi::DEFAULT_STALL_FLOOR_NS)
}
