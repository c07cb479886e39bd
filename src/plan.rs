//! Plans: the parsed command line turned into plain settings with real types. Nothing here
//! knows clap's parse types; the commands in [`crate::cmd`] take these.

use crate::cli::{AgentCommand, Cli, Command, ObserveArgs};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Settings shared by commands that observe loops.
#[derive(Debug, Clone)]
pub struct Observe {
    /// A tick at least this long is a stall.
    pub stall_threshold: Duration,
    /// Colour allowed (`--no-color` and `NO_COLOR` say no; a sink still checks for a terminal).
    pub color: bool,
    /// Report only.
    pub quiet: bool,
}

/// `looptop run`.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Shared settings.
    pub observe: Observe,
    /// Program and arguments.
    pub command: Vec<OsString>,
    /// JSON instead of text.
    pub json: bool,
    /// Report file instead of stdout (JSON) / stderr (text).
    pub output: Option<PathBuf>,
}

/// `looptop ps`.
#[derive(Debug, Clone)]
pub struct PsPlan {
    /// Shared settings.
    pub observe: Observe,
    /// JSON instead of a table.
    pub json: bool,
    /// Utilization window.
    pub window: Duration,
}

/// `looptop demo`.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    /// Shared settings.
    pub observe: Observe,
    /// How long to run.
    pub duration: Duration,
    /// JSON instead of text.
    pub json: bool,
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Launch and report.
    Run(RunPlan),
    /// List agent processes.
    Ps(PsPlan),
    /// The bundled demo.
    Demo(DemoPlan),
    /// Print the agent library's path.
    AgentPath,
    /// Print a completion script.
    Completions(clap_complete::Shell),
}

fn observe(a: ObserveArgs) -> Observe {
    let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    Observe { stall_threshold: a.stall_threshold, color: !a.no_color && !no_color_env, quiet: a.quiet }
}

impl From<Cli> for Plan {
    fn from(cli: Cli) -> Plan {
        match cli.command {
            Command::Run(a) => {
                Plan::Run(RunPlan { observe: observe(a.observe), command: a.command, json: a.json, output: a.output })
            }
            Command::Ps(a) => Plan::Ps(PsPlan { observe: observe(a.observe), json: a.json, window: a.window }),
            Command::Demo(a) => {
                Plan::Demo(DemoPlan { observe: observe(a.observe), duration: a.duration, json: a.json })
            }
            Command::Agent { command: AgentCommand::Path } => Plan::AgentPath,
            Command::Completions { shell } => Plan::Completions(shell),
        }
    }
}
