//! Commands: each wires a target, a source, the session and a sink together.

mod check;
mod demo;
mod flame;
mod ps;
mod record;
mod run;
mod top;

use crate::plan::Plan;
use anyhow::Result;
use std::io::Write;

/// Runs a plan; the result is the process exit code.
pub fn execute(plan: Plan) -> Result<u8> {
    match plan {
        Plan::Run(p) => run::execute(p),
        Plan::Top(p) => top::execute(p),
        Plan::Check(p) => check::execute(p),
        Plan::Ps(p) => ps::execute(p),
        Plan::Demo(p) => demo::execute(p),
        Plan::Record(p) => record::execute(p),
        Plan::Report(p) => record::report(p),
        Plan::Flame(p) => flame::execute(p),
        Plan::AgentPath => {
            let path = crate::target::embedded::agent_path()?;
            writeln!(std::io::stdout(), "{}", path.display())?;
            Ok(crate::error::exit::OK)
        }
        Plan::Completions(shell) => {
            clap_complete::generate(shell, &mut crate::cli::command(), "looptop", &mut std::io::stdout());
            Ok(crate::error::exit::OK)
        }
    }
}

use crate::sink::is_tty;
