//! Observing a launched target until it exits: the poll loop shared by `run` and `demo`, and the
//! diagnosis when nothing could be observed.

use crate::analysis::report::{Report, Target};
use crate::analysis::Session;
use crate::error::UserError;
use crate::event::Event;
use crate::source::agent::{AgentSource, Selector};
use crate::source::now_ns;
use crate::target::launch::{self, LaunchPlan, Launched};
use anyhow::{Context, Result};
use std::time::Duration;

/// How often segments are read while the target runs.
const POLL: Duration = Duration::from_millis(20);

/// A finished observation.
pub struct Observed {
    /// The report.
    pub report: Report,
    /// Things the user should know (no loop seen, unreadable segments).
    pub warnings: Vec<String>,
}

/// Launches `plan` with the agent, calls `on_poll` after each read, and reports once the
/// target exits. Fails (exit 3) when no agent reported from the target at all.
pub fn launch_and_observe(
    plan: &LaunchPlan,
    threshold: Duration,
    mut on_start: impl FnMut(&mut Launched),
    mut on_poll: impl FnMut(&Session),
) -> Result<Observed> {
    crate::source::agent::remove_dead_segments();
    let agent = crate::target::embedded::agent_path()?;
    let origin = now_ns();
    let mut launched = launch::spawn(plan, &agent)?;
    on_start(&mut launched);
    let mut source = AgentSource::new(Selector::Session(launched.session));
    let mut session = Session::new(origin, threshold.as_nanos() as u64);
    let mut events: Vec<Event> = Vec::new();
    let status = loop {
        source.poll(now_ns(), &mut events);
        events.drain(..).for_each(|e| session.handle(e));
        on_poll(&session);
        if let Some(status) = launched.child.try_wait().context("waiting for the target")? {
            break status;
        }
        std::thread::sleep(POLL);
    };
    let end = now_ns();
    source.poll(end, &mut events);
    events.drain(..).for_each(|e| session.handle(e));
    source.remove_finished();
    let exit_code = launch::exit_code(status);
    let shown: Vec<String> = plan.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    if source.processes_seen() == 0 {
        return Err(not_observed(&launched, &shown.join(" "), exit_code).into());
    }
    let mut warnings: Vec<String> = source.errors.iter().map(|e| e.to_string()).collect();
    warnings.extend(launch::agent_errors(&launched.run_dir));
    if session.loop_count() == 0 {
        warnings.push(format!(
            "no event loop seen: '{}' never waited in epoll_wait, epoll_pwait, epoll_pwait2, poll or ppoll",
            shown.join(" ")
        ));
    }
    let target =
        Target { pid: launched.child.id(), command: shown, runtime: session.runtime(), exit_code: Some(exit_code) };
    let report = session.report(target, end);
    Ok(Observed { report, warnings })
}

/// Why nothing was observed, as one sentence and the fix.
fn not_observed(launched: &Launched, command: &str, exit_code: i32) -> UserError {
    let errors = launch::agent_errors(&launched.run_dir);
    if let Some(first) = errors.first() {
        return UserError::observe(format!("{first}, so '{command}' ran unobserved (it exited {exit_code})")).hint(
            "make /dev/shm a writable tmpfs (mount -t tmpfs -o mode=1777 tmpfs /dev/shm), or set LOOPTOP_SHM_DIR to \
             a writable folder on tmpfs",
        );
    }
    UserError::observe(format!(
        "the looptop agent was not loaded into '{command}' (it exited {exit_code}), so nothing was observed"
    ))
    .hint(
        "looptop run needs a dynamically linked program; statically linked (Go, musl) and setuid programs ignore \
         LD_PRELOAD",
    )
}
