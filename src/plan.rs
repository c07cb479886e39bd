//! Plans: the parsed command line turned into plain settings with real types. Nothing here
//! knows clap's parse types; the commands in [`crate::cmd`] take these.

pub use crate::cli::Mode;
use crate::cli::{
    AgentCommand, AttachArgs, Command, FlameFormat, JsonArgs, ObserveArgs, QuietArgs, StackArgs, TargetArgs,
};
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

/// Where stacks and ticks come from, shared by commands that observe loops.
#[derive(Debug, Clone, Copy)]
pub struct Stacks {
    /// perf stack samples per second (0: none).
    pub rate_hz: u64,
    /// How a pid is observed.
    pub mode: Mode,
    /// Attached without the agent: probe the libuv pool too.
    pub pool_probes: bool,
}

/// Where `--json` sends the report: the same meaning on every command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonTo {
    /// `--json` (or `--json=-`): stdout, in place of the text that would go there.
    Stdout,
    /// `--json=FILE`: the file, beside the text.
    File(PathBuf),
}

impl JsonTo {
    fn from_arg(path: Option<PathBuf>) -> Option<JsonTo> {
        path.map(|p| if p.as_os_str() == "-" { JsonTo::Stdout } else { JsonTo::File(p) })
    }

    /// Where it goes, `-` for stdout (as [`crate::cmd`]'s output files read it).
    pub fn path(&self) -> &std::path::Path {
        match self {
            JsonTo::Stdout => std::path::Path::new("-"),
            JsonTo::File(p) => p,
        }
    }
}

/// `looptop run`.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Shared settings.
    pub observe: Observe,
    /// Where stacks and ticks come from.
    pub stacks: Stacks,
    /// Program and arguments.
    pub command: Vec<OsString>,
    /// The report as JSON.
    pub json: Option<JsonTo>,
    /// Report file instead of stdout (JSON) / stderr (text).
    pub output: Option<PathBuf>,
    /// Never open the live view.
    pub no_tui: bool,
}

/// `looptop top`.
#[derive(Debug, Clone)]
pub struct TopPlan {
    /// Shared settings.
    pub observe: Observe,
    /// Where stacks and ticks come from.
    pub stacks: Stacks,
    /// What `f` draws: the last this long.
    pub window: Duration,
    /// What to watch.
    pub target: TargetSpec,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// `looptop check`.
#[derive(Debug, Clone)]
pub struct CheckPlan {
    /// Shared settings.
    pub observe: Observe,
    /// Where stacks and ticks come from.
    pub stacks: Stacks,
    /// Budget expressions from the flags.
    pub budgets: Vec<String>,
    /// The budget file, when given.
    pub budget_file: Option<PathBuf>,
    /// JUnit XML output.
    pub junit: Option<PathBuf>,
    /// The report as JSON.
    pub json: Option<JsonTo>,
    /// GitHub Actions annotations and summary.
    pub github: bool,
    /// Left out at the start.
    pub warmup: Duration,
    /// A failing command is judged on its budgets instead of failing the check.
    pub ignore_exit_code: bool,
    /// What to check.
    pub target: TargetSpec,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// What a command observes.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// Launch this command with the agent.
    Launch(Vec<OsString>),
    /// Attach to a running process.
    Pid(u32),
    /// Replay a recording.
    Recording(PathBuf),
    /// Nothing was given (a usage error when the command runs).
    Missing,
}

/// `looptop record`.
#[derive(Debug, Clone)]
pub struct RecordPlan {
    /// Shared settings.
    pub observe: Observe,
    /// Where stacks and ticks come from.
    pub stacks: Stacks,
    /// The recording to write.
    pub output: PathBuf,
    /// Where the JSON report of the run goes, if anywhere.
    pub json: Option<JsonTo>,
    /// What to record.
    pub target: TargetSpec,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// `looptop report`.
#[derive(Debug, Clone)]
pub struct ReportPlan {
    /// The stall threshold, when not the recording's own.
    pub stall_threshold: Option<Duration>,
    /// Colour allowed.
    pub color: bool,
    /// The report as JSON.
    pub json: Option<JsonTo>,
    /// The recording.
    pub recording: PathBuf,
}

/// `looptop flame`.
#[derive(Debug, Clone)]
pub struct FlamePlan {
    /// Shared settings.
    pub observe: Observe,
    /// Where stacks and ticks come from.
    pub stacks: Stacks,
    /// Where to write (`-` = stdout).
    pub output: PathBuf,
    /// The format.
    pub format: FlameFormat,
    /// The output's extension names no format looptop writes, and none was asked for (`out.png`):
    /// refused, rather than an SVG under a name that promises something else.
    pub unknown_extension: Option<String>,
    /// Only samples inside stalls.
    pub stalls_only: bool,
    /// Which time (None: the default for `stalls_only`).
    pub time: Option<crate::sink::flame::Time>,
    /// What to draw.
    pub target: TargetSpec,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Of a recording, only what it holds from / until this long after its start.
    pub since: Option<Duration>,
    /// See `since`.
    pub until: Option<Duration>,
}

/// `looptop ps`.
#[derive(Debug, Clone)]
pub struct PsPlan {
    /// Shared settings.
    pub observe: Observe,
    /// The rows as JSON.
    pub json: Option<JsonTo>,
    /// Utilization window.
    pub window: Duration,
}

/// `looptop demo`.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    /// Shared settings.
    pub observe: Observe,
    /// Where stacks and ticks come from.
    pub stacks: Stacks,
    /// How long to run.
    pub duration: Duration,
    /// The report as JSON.
    pub json: Option<JsonTo>,
    /// Never open the live view.
    pub no_tui: bool,
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Launch and report.
    Run(RunPlan),
    /// The live view.
    Top(TopPlan),
    /// Check budgets.
    Check(CheckPlan),
    /// List agent processes.
    Ps(PsPlan),
    /// The bundled demo.
    Demo(DemoPlan),
    /// Write a recording.
    Record(RecordPlan),
    /// Report on a recording.
    Report(ReportPlan),
    /// Write a flamegraph.
    Flame(FlamePlan),
    /// Print the agent library's path.
    AgentPath,
    /// Print a completion script.
    Completions(clap_complete::Shell),
}

/// Stack sampling, and how a pid is observed where the command can attach (else the default).
fn stacks(a: &StackArgs, attach: Option<&AttachArgs>) -> Stacks {
    let (mode, pool_probes) = attach.map_or((Mode::Auto, false), |t| (t.mode, t.pool_probes));
    Stacks { rate_hz: a.rate, mode, pool_probes }
}

fn observe(a: ObserveArgs, quiet: Option<QuietArgs>) -> Observe {
    Observe { stall_threshold: a.stall_threshold, color: color(a.no_color), quiet: quiet.is_some_and(|q| q.quiet) }
}

/// Colour unless `--no-color` or NO_COLOR says no.
fn color(no_color: bool) -> bool {
    !no_color && !std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

fn json(a: JsonArgs) -> Option<JsonTo> {
    JsonTo::from_arg(a.json)
}

fn target(t: &TargetArgs, from: Option<PathBuf>) -> TargetSpec {
    match (from, t.pid, t.command.is_empty()) {
        (Some(rec), _, _) => TargetSpec::Recording(rec),
        (None, Some(pid), _) => TargetSpec::Pid(pid),
        (None, None, false) => TargetSpec::Launch(t.command.clone()),
        (None, None, true) => TargetSpec::Missing,
    }
}

/// The flamegraph format: as asked, else from the output's extension, else SVG; the output; and
/// the output's extension when it names no format and none was asked for.
fn flame_output(format: Option<FlameFormat>, output: Option<PathBuf>) -> (FlameFormat, PathBuf, Option<String>) {
    let ext = output.as_ref().and_then(|o| o.extension()).map(|e| e.to_string_lossy().to_ascii_lowercase());
    let from_ext = match ext.as_deref() {
        Some("svg") => Some(FlameFormat::Svg),
        Some("folded" | "txt") => Some(FlameFormat::Folded),
        Some("json") => Some(FlameFormat::Speedscope),
        _ => None,
    };
    let unknown = ext.filter(|_| format.is_none() && from_ext.is_none());
    let format = format.or(from_ext).unwrap_or(FlameFormat::Svg);
    let output = output.unwrap_or_else(|| {
        PathBuf::from(match format {
            FlameFormat::Svg => "flame.svg",
            FlameFormat::Folded => "flame.folded",
            FlameFormat::Speedscope => "flame.speedscope.json",
        })
    });
    (format, output, unknown)
}

impl From<Command> for Plan {
    fn from(command: Command) -> Plan {
        match command {
            Command::Run(a) => Plan::Run(RunPlan {
                observe: observe(a.observe, Some(a.quiet)),
                stacks: stacks(&a.stacks, None),
                command: a.command,
                json: json(a.json),
                output: a.output,
                no_tui: a.no_tui,
            }),
            Command::Top(a) => Plan::Top(TopPlan {
                observe: observe(a.observe, None),
                stacks: stacks(&a.stacks, Some(&a.attach)),
                window: a.window,
                target: target(&a.target, None),
                duration: a.target.duration,
            }),
            Command::Check(a) => Plan::Check(CheckPlan {
                observe: observe(a.observe, Some(a.quiet)),
                stacks: stacks(&a.stacks, Some(&a.attach)),
                budgets: a.budgets,
                budget_file: a.budget_file,
                junit: a.junit,
                json: json(a.json),
                github: a.github,
                warmup: a.warmup,
                ignore_exit_code: a.ignore_exit_code,
                target: target(&a.target, None),
                duration: a.target.duration,
            }),
            Command::Ps(a) => {
                Plan::Ps(PsPlan { observe: observe(a.observe, None), json: JsonTo::from_arg(a.json), window: a.window })
            }
            Command::Demo(a) => Plan::Demo(DemoPlan {
                observe: observe(a.observe, Some(a.quiet)),
                stacks: stacks(&a.stacks, None),
                duration: a.duration,
                json: json(a.json),
                no_tui: a.no_tui,
            }),
            Command::Record(a) => Plan::Record(RecordPlan {
                observe: observe(a.observe, Some(a.quiet)),
                stacks: stacks(&a.stacks, Some(&a.attach)),
                output: a.output,
                json: json(a.json),
                target: target(&a.target, None),
                duration: a.target.duration,
            }),
            Command::Report(a) => Plan::Report(ReportPlan {
                stall_threshold: a.stall_threshold,
                color: color(a.no_color),
                json: json(a.json),
                recording: a.recording,
            }),
            Command::Flame(a) => {
                let (format, output, unknown_extension) = flame_output(a.format, a.output);
                Plan::Flame(FlamePlan {
                    observe: observe(a.observe, Some(a.quiet)),
                    stacks: stacks(&a.stacks, Some(&a.attach)),
                    output,
                    format,
                    unknown_extension,
                    stalls_only: a.stalls_only,
                    time: a.time.map(|t| match t {
                        crate::cli::FlameTime::Cpu => crate::sink::flame::Time::Cpu,
                        crate::cli::FlameTime::Wall => crate::sink::flame::Time::Wall,
                        crate::cli::FlameTime::OffCpu => crate::sink::flame::Time::OffCpu,
                    }),
                    target: target(&a.target, a.from),
                    duration: a.target.duration,
                    since: a.since,
                    until: a.until,
                })
            }
            Command::Agent { command: AgentCommand::Path } => Plan::AgentPath,
            Command::Completions { shell } => Plan::Completions(shell),
        }
    }
}
