//! The command line (clap derive). Also the single source of `--help`, the man pages in `man/`
//! and shell completions. No clap type leaves this file: [`crate::plan`] turns these into plans.

use crate::units::parse_duration;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  looptop demo                               a bundled Node server with real blockers
  looptop top -- node server.js              the live view: loops, lag, stalls as they happen
  looptop 4242                               the live view of a running process (top --pid)
  looptop check -b 'lag.p99<20ms' -b 'stalls==0' -- node test/load.js   fail CI on a stall
  looptop run -- node server.js              every loop's ticks, lag and stalls at exit
  looptop run --json -o report.json -- npm start
  LD_PRELOAD=$(looptop agent path) node server.js   preload the agent in production
  looptop ps                                 processes running the agent
  sudo looptop record -d 10s --pid 4242      attach to a server started with nothing (perf mode)

Output files (-o, --json=FILE, --junit FILE; `-` is stdout) are opened before anything starts: a path that
cannot be written is refused at once. In a folder others can write to (/tmp), a link, file or FIFO
another user may have planted there is never written through.

Exit codes: 0 success; 1 a budget failed; 2 usage or configuration error (a bad output path too);
3 could not observe the target, or an output could not be written mid-way (a full disk: a command
looptop started is then stopped). `looptop run` exits with the target's own status (3 when it
could not observe).";

/// looptop shows why an event loop is slow: it times every loop iteration (tick) of a program
/// and reports lag, stalls and what blocked the loop.
#[derive(Debug, Parser)]
#[command(
    name = "looptop",
    version,
    about,
    after_help = AFTER_HELP,
    propagate_version = true,
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Show the live view of this running process (short for `looptop top --pid PID`)
    #[arg(value_name = "PID")]
    pub pid: Option<u32>,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch a command with the agent and report every loop's ticks, lag and stalls when it exits
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// The live terminal view of a running process or of a command: loops, lag, stalls as they happen
    #[command(after_help = TOP_AFTER_HELP)]
    Top(TopArgs),
    /// Check lag budgets (for CI): observe a command or a pid, fail (exit 1) when a budget breaks, name the code
    #[command(after_help = CHECK_AFTER_HELP)]
    Check(CheckArgs),
    /// List processes that run the looptop agent, with their loops, utilization and stalls
    Ps(PsArgs),
    /// Run a bundled Node server with real blockers, under looptop, with built-in load
    Demo(DemoArgs),
    /// Write a recording (ticks, stalls, stacks, GC, pool, symbols) for `report` and `flame --from`
    #[command(after_help = RECORD_AFTER_HELP)]
    Record(RecordArgs),
    /// Print the summary (or --json report) of a recording
    Report(ReportArgs),
    /// Write a flamegraph (SVG, folded stacks or speedscope JSON), of everything or of the stalls only
    #[command(after_help = FLAME_AFTER_HELP)]
    Flame(FlameArgs),
    /// The agent library built into looptop
    Agent {
        /// What to do with it.
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Print a shell completion script (e.g. `looptop completions bash > /etc/bash_completion.d/looptop`)
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const RUN_AFTER_HELP: &str = "\
The command starts with LD_PRELOAD carrying the agent (appended to any LD_PRELOAD you already
set). Every descendant that loads the agent is followed (npm start -> sh -> node). The command
starts with the signal mask and dispositions looptop was started with (under nohup, SIGHUP stays
ignored); SIGINT, SIGTERM and SIGHUP sent to looptop are passed on to it. When it exits, looptop
prints the summary to stderr (like time(1)) or, with --json, the looptop.report/1 object to stdout
(or to -o FILE, checked before the command starts), and exits with the command's own status.

On a terminal (stdin, stdout and stderr all terminals, no --json, -o or --no-tui) run opens the
live view of `looptop top` while the command runs; the command's stdout and stderr then go to a
new log file in $TMPDIR (mode 0600) named in the view, and the summary is printed when you leave
the view.

A tick is one loop iteration: from the return of epoll_wait/poll to the next wait call (for the
workers of a tokio multi-thread runtime, their park on a futex is a wait call too). A stall
is a tick whose busy time is at least --stall-threshold. Lag percentiles are time-weighted: the
share of time an event arriving then would wait that long.

In Node and Python processes the agent also loads a runtime probe that reports GC pauses and the
thread pool (libuv's, or asyncio's default executor): size, queued items and how long items
wait. Slow mmap/munmap/madvise/mremap/brk calls on loop threads are allocator pauses.
LOOPTOP_PROBE=0 turns the probe off.";

const TOP_AFTER_HELP: &str = "\
The view shows the target (pid, command, runtime, mode, uptime), a banner while a loop is stuck
(how long, and what it is doing), every loop with its utilization, ticks/s and lag percentiles,
a chart of the last 60 s of lag (p99 and max per second against the threshold), the recent
stalls and the aggregated blockers (Enter shows a stall's stack), and GC and thread-pool lines.

Keys: q or Ctrl-C quit; p pause the display (collection goes on); Tab and the arrows move focus
and selection; Enter opens the stack of a stall or blocker; f writes a flamegraph SVG of the last
--window (F: stalls only) to a new file in the current folder; r starts or stops a recording (a
new file there too); + and - change the stall threshold; ? help.

A command started by top writes its output to a new log file in $TMPDIR (mode 0600), named in
the view.

When the target exits the view stays, saying so, until q. A command started by top is asked to
exit (SIGTERM) when you quit. The view needs a terminal; for scripts use `looptop run --json` or
`looptop record`.

Examples:
  looptop top -- node server.js
  looptop 4242                                 attach (the agent's segment, or perf mode)
  sudo looptop top --pid $(pgrep -f server.js)";

const CHECK_AFTER_HELP: &str = "\
A budget is METRIC OP VALUE[UNIT]: OP is one of < <= > >= ==, UNIT us, ms, s or %.
Metrics (loops: the worst loop counts):
  lag.p50 lag.p90 lag.p99 lag.p999 lag.max     time-weighted lag (a time)
  tick.p50 tick.p90 tick.p99 tick.max          busy time per tick (a time)
  stalls                                       ticks at or over --stall-threshold (a count)
  stall.max  stall.total                       longest stall; time in stalls (a time, or % of the run)
  utilization                                  busy share of the busiest loop (0..1 or %)
  gc.max  gc.total  gc.count                   GC pauses (Node, Python)
  pool.wait.p50 pool.wait.p99 pool.wait.max    how long thread-pool items waited for a worker
  pool.queued.max  pool.busy.max               most items queued / workers busy at once
  alloc.max  alloc.total  alloc.count          allocator pauses (slow mmap/munmap/madvise/brk)
A budget on something the source cannot see (gc.* of a C program) fails as not observed.

Budgets also come from a TOML file (--budget-file, or ./looptop.toml when present):
  [budgets]
  \"lag.p99\" = \"<20ms\"
  stalls = \"==0\"
--budget flags add to the file's budgets.

Output: one line per budget (✓ or ✗, the observed value), and under a failed one the worst stalls
(kind, function, file:line, source line) or pauses; all of it on stderr. --json prints the
looptop.report/1 object with a `budgets` array to stdout (--json=FILE writes it to FILE);
--junit FILE one test case per budget (`-`: stdout); --github prints
::error annotations at the worst stall's source line and appends a job summary to
$GITHUB_STEP_SUMMARY. These files are opened before the command starts.

A check never passes by accident: a command that exits with a failure status fails it (unless
--ignore-exit-code), and so does a run in which no event loop was seen, or in which threads that
wait for events found no free loop slot (their stalls would go unseen). Exit: 0 all held, 1 a
budget failed or the command failed, 2 a malformed budget or file, or an output that cannot be
written, 3 could not observe or no event loop seen (or an output could not be written at the
end). A command that looptop stops at the end of -d has not failed.

Examples:
  looptop check --budget 'lag.p99<20ms' --budget 'stalls==0' -- node test/load.js
  looptop check --warmup 2s --budget 'stall.max<200ms' --junit looptop.xml -- npm test
  looptop check --pid 4242 -d 30s --budget 'pool.wait.p99<10ms'";

/// `looptop check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Shared options.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Stack sampling.
    #[command(flatten)]
    pub stacks: StackArgs,
    /// How a --pid is observed.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Progress and notes.
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// A budget, e.g. 'lag.p99<20ms', 'stalls==0' (repeat for more)
    #[arg(short, long = "budget", value_name = "EXPR")]
    pub budgets: Vec<String>,
    /// A TOML file with a [budgets] table (default: ./looptop.toml when it exists)
    #[arg(long, value_name = "FILE")]
    pub budget_file: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per budget)
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// The looptop.report/1 JSON, with a `budgets` array.
    #[command(flatten)]
    pub json: JsonArgs,
    /// Print GitHub Actions annotations and append a job summary to $GITHUB_STEP_SUMMARY
    #[arg(long)]
    pub github: bool,
    /// Leave out the first DUR (start-up compilation and module loading)
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Judge the budgets of a command that exits with a failure status (a load script that
    /// fails on purpose); by default a failing command fails the check (exit 1)
    #[arg(long)]
    pub ignore_exit_code: bool,
    /// What to check.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `looptop top`.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Shared options.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Stack sampling.
    #[command(flatten)]
    pub stacks: StackArgs,
    /// How a --pid is observed.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// The stretch of time `f` and `F` draw as a flamegraph
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub window: Duration,
    /// What to watch.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Options of every command that observes loops.
#[derive(Debug, Clone, Args)]
pub struct ObserveArgs {
    /// A tick at least this long is a stall (e.g. 50ms, 0.2s)
    #[arg(long, value_name = "DUR", default_value = "50ms", value_parser = parse_duration)]
    pub stall_threshold: Duration,
    /// No colour (also when NO_COLOR is set or output is not a terminal)
    #[arg(long)]
    pub no_color: bool,
}

/// `-q`, on the commands that print progress and notes beside their result.
#[derive(Debug, Clone, Args)]
pub struct QuietArgs {
    /// Print only the result: no progress or notes
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--json[=FILE]`: the same word, the same meaning, on every command that reports.
#[derive(Debug, Clone, Args)]
pub struct JsonArgs {
    /// Print the looptop.report/1 JSON object to stdout in place of the text (--json=FILE: write it
    /// to FILE, beside the text)
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "-")]
    pub json: Option<PathBuf>,
}

/// `looptop run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Stack sampling.
    #[command(flatten)]
    pub stacks: StackArgs,
    /// Progress and notes.
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// The report as JSON.
    #[command(flatten)]
    pub json: JsonArgs,
    /// Write the report (the text summary, or the JSON of a bare --json) to FILE instead of the
    /// terminal; `-` is stdout (refused before the command starts when it cannot be written)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the summary at exit instead of opening the live view on a terminal
    #[arg(long)]
    pub no_tui: bool,
    /// The command to run, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// How stacks are sampled.
#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    /// perf stack samples per second when perf is permitted (root or CAP_PERFMON); 0: no perf stacks (perf mode still times the ticks through perf)
    #[arg(long, value_name = "HZ", default_value_t = 997)]
    pub rate: u64,
}

/// How a running process (`--pid`) is observed: only on the commands that can attach.
#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// How to observe a --pid: its agent's segment, or agentless from the kernel (BPF, else perf
    /// events; ticks from the wait calls' tracepoints; needs root or CAP_PERFMON). auto prefers
    /// the agent. LOOPTOP_NO_BPF=1 uses perf events instead of BPF; LOOPTOP_BPF_HOOKS=tracepoints
    /// hooks sched_switch as the classic tracepoint instead of tp_btf; LOOPTOP_UNWIND=fp keeps a
    /// stall's stacks to the frame-pointer walk (no stack copies unwound with the binaries' CFI)
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Attached without the agent, probe the libuv thread pool too: queue, busy workers and each
    /// item's wait, from uprobes hit on every item submitted, started and done (a few µs each;
    /// GC pauses are always probed). Off by default: it costs a pool-heavy server more than the
    /// rest of the attach together
    #[arg(long)]
    pub pool_probes: bool,
}

/// How a running process is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The agent's segment when the process has one (plus perf stacks when permitted), else perf
    Auto,
    /// Only the agent's segment: no privileges needed, the process must have the agent preloaded
    Agent,
    /// Agentless: the kernel's view through BPF (perf events when BPF is refused): tick
    /// tracepoints, stacks counted in the kernel, uprobes (root or CAP_PERFMON)
    Perf,
}

/// What to observe: a command to launch, a running pid, or (where allowed) a recording.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Attach to this running process (it needs the agent preloaded, or perf permissions).
    /// Attached without the agent, the processes it starts are followed too (a server's workers:
    /// attach to gunicorn's arbiter, nginx's master or a Node cluster's primary)
    #[arg(long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Stop after this long (a launched command and what it started are then sent SIGTERM, and
    /// SIGKILL 3 s later)
    #[arg(short, long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The command to run, after `--`
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

const RECORD_AFTER_HELP: &str = "\
A recording (format looptop.recording/2, documented in docs/commands.md) holds a header, then every
event as it happened (loops, ticks, stalls, GC, thread pool, allocator pauses), the symbolized
frames and stacks (each written once) and every stack sample, in zstd-compressed blocks with an
index: about 1 MB a minute for a busy Node server, and looptop's memory stays flat however long it
records. A block is closed about once a second, so a recording cut short by a kill or crash keeps
everything up to its last complete block; `looptop report` loads it with a warning, and a
damaged block ends the reading there, saying where. `flame --from FILE --since 10m --until 12m`
draws one window of a long recording without reading the rest. --json[=FILE] also writes the
run's report (what `report --json` later reads back). The file is opened before the command
starts (a path that cannot be written is refused at once, exit 2). If writing fails mid-way (a
full disk), a command record started is stopped (SIGTERM, SIGKILL 3 s later), the recording keeps
what was written, and record exits 3.

--pid attaches to a running process: through its agent's segment when it was started under
`looptop run` or with the agent preloaded (no privileges), else agentless in perf mode (root or
CAP_PERFMON): ticks from the wait calls' tracepoints, stacks from cpu-clock and sched_switch (both
kept in the kernel by a BPF program; perf events when BPF is refused, with a warning saying why,
or with LOOPTOP_NO_BPF=1), the libuv pool and V8 GC pauses from uprobes. --mode chooses; see
docs/attach.md.

Examples:
  looptop record -o api.rec -d 30s -- node server.js
  LD_PRELOAD=$(looptop agent path) node server.js &  looptop record -o api.rec --pid $!
  sudo looptop record -o api.rec -d 10s --pid $(pgrep -f server.js)   no agent: perf mode
  looptop report api.rec
  looptop flame --from api.rec --stalls-only -o stalls.svg";

/// `looptop record`.
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Shared options.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Stack sampling.
    #[command(flatten)]
    pub stacks: StackArgs,
    /// How a --pid is observed.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Progress and notes.
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// The recording to write (`-`: stdout)
    #[arg(short, long, value_name = "FILE", default_value = "looptop.rec")]
    pub output: PathBuf,
    /// Also the report of what was recorded, as the looptop.report/1 JSON object: to stdout
    /// (--json), or to FILE (--json=FILE); what `looptop report --json` later reads back from the
    /// recording
    #[command(flatten)]
    pub json: JsonArgs,
    /// What to record.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `looptop report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A tick at least this long is a stall (default: the recording's own threshold; stalls
    /// shorter than the recorder's floor, 10ms, were not kept individually)
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub stall_threshold: Option<Duration>,
    /// No colour (also when NO_COLOR is set or output is not a terminal)
    #[arg(long)]
    pub no_color: bool,
    /// The report as JSON.
    #[command(flatten)]
    pub json: JsonArgs,
    /// The recording
    #[arg(value_name = "REC")]
    pub recording: PathBuf,
}

const FLAME_AFTER_HELP: &str = "\
Stacks come from perf (cpu-clock samples at --rate, off-CPU stacks from sched_switch) when
permitted, and from the agent's watchdog during stalls in any case. One root per thread role
([main loop: node], [libuv thread pool], [V8 platform threads …], …), never looptop's own
watchdog thread. On-CPU time by default (--time wall adds where threads slept or waited).
--stalls-only keeps only samples taken inside stalls, in wall-clock time: the flamegraph of what
blocked the loop. speedscope files hold a timeline per thread, in milliseconds. JavaScript
frames are named from V8's perf map (looptop starts Node with --perf-basic-prof).

Examples:
  looptop flame -o cpu.svg -d 30s -- node server.js
  looptop flame --time wall -o wall.svg -d 30s -- node server.js
  looptop flame --stalls-only -o stalls.svg -- node server.js
  sudo looptop flame --stalls-only -d 10s -o stalls.svg --pid 4242   attach, no agent needed
  looptop flame --format speedscope -o app.speedscope.json --from api.rec
  looptop flame --from api.rec --since 10m --until 12m -o ten.svg   a window of a long recording
  looptop flame --format folded --from api.rec | grep validateEmail";

/// `looptop flame`.
#[derive(Debug, Clone, Args)]
pub struct FlameArgs {
    /// Shared options.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Stack sampling.
    #[command(flatten)]
    pub stacks: StackArgs,
    /// How a --pid is observed.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Progress and notes.
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// Where to write (default flame.svg, flame.folded or flame.speedscope.json; `-` for stdout);
    /// refused before anything starts when it cannot be written
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: from the -o extension: .svg, .folded or .txt, .json; svg without
    /// one; any other extension is refused)
    #[arg(long, value_enum)]
    pub format: Option<FlameFormat>,
    /// Keep only samples taken inside stalls
    #[arg(long)]
    pub stalls_only: bool,
    /// Which time to draw: cpu (on-CPU samples: where the threads ran; the default), wall (on-
    /// and off-CPU: also where they slept or waited; the default with --stalls-only), off-cpu
    #[arg(long, value_enum, value_name = "TIME")]
    pub time: Option<FlameTime>,
    /// Draw a recording instead of observing a process
    #[arg(long, value_name = "REC", conflicts_with_all = ["pid", "command", "duration"])]
    pub from: Option<PathBuf>,
    /// With --from: draw only what the recording holds from this long after its start (e.g. 10m);
    /// only the parts of the file that window needs are read
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "from")]
    pub since: Option<Duration>,
    /// With --from: draw only what the recording holds until this long after its start (e.g. 20m)
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "from")]
    pub until: Option<Duration>,
    /// What to observe.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Which time a flamegraph draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlameTime {
    /// On-CPU samples: where the threads ran
    Cpu,
    /// On- and off-CPU: where they ran, slept and waited
    Wall,
    /// Off-CPU only: where they slept and waited
    OffCpu,
}

/// Flamegraph formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlameFormat {
    /// An interactive SVG (inferno)
    Svg,
    /// Brendan Gregg's folded stacks: `frame;frame;frame count` per line
    Folded,
    /// speedscope JSON (https://www.speedscope.app)
    Speedscope,
}

/// `looptop ps`.
#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    /// Shared options.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Print the rows as a JSON array to stdout in place of the table (--json=FILE: write it to
    /// FILE, beside the table)
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "-")]
    pub json: Option<PathBuf>,
    /// How long to watch for the utilization column
    #[arg(long, value_name = "DUR", default_value = "250ms", value_parser = parse_duration)]
    pub window: Duration,
}

/// `looptop demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Shared options.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Stack sampling.
    #[command(flatten)]
    pub stacks: StackArgs,
    /// Progress and notes.
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// How long to run
    #[arg(short, long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The report as JSON.
    #[command(flatten)]
    pub json: JsonArgs,
    /// Print the summary at the end instead of opening the live view on a terminal
    #[arg(long)]
    pub no_tui: bool,
}

/// `looptop agent …`.
#[derive(Debug, Clone, Subcommand)]
pub enum AgentCommand {
    /// Print the agent library's path (written on first use), for LD_PRELOAD in production
    #[command(after_help = AGENT_PATH_AFTER_HELP)]
    Path,
}

const AGENT_PATH_AFTER_HELP: &str = "\
The agent is written to $XDG_CACHE_HOME/looptop or ~/.cache/looptop, else $TMPDIR/looptop-UID
(/tmp by default), under a name that changes with its content. A folder is used only when nobody
but you and root can change it or any folder above it, and the path printed is its real one, with
no link in it. When $TMPDIR/looptop-UID is taken by something not safely yours (a link, another
user's folder), a private $TMPDIR/looptop-UID-RANDOM of your own is used instead.

Example:
  LD_PRELOAD=$(looptop agent path) node server.js";

/// The clap command, for man pages, completions and tests.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parses the process arguments (clap exits with 2 on a usage error, 0 for --help). `looptop PID`
/// is read as `looptop top --pid PID`.
pub fn parse() -> Command {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| forgive(e, &args).exit());
    let top = |pid: u32| Cli::parse_from(["looptop", "top", "--pid", &pid.to_string()]).command;
    match (cli.command, cli.pid.and_then(top)) {
        (Some(command), _) | (None, Some(command)) => command,
        // `arg_required_else_help` prints the help before this can happen.
        (None, None) => {
            command().error(clap::error::ErrorKind::MissingSubcommand, "a subcommand or a PID is needed").exit()
        }
    }
}

/// `e`, or the error of a common slip with its fix: a mistyped subcommand (which clap takes
/// for a PID) gets the nearest one, and a command to launch given without `--` gets the line
/// with it.
pub fn forgive(e: clap::Error, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ErrorKind};
    let words: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let Some(i) = words.iter().position(|w| !w.starts_with('-')) else { return e };
    let mut cmd = command();
    let word = &words[i];
    let Some(sub) = cmd.find_subcommand(word).cloned() else {
        if word == "help"
            || word.parse::<u32>().is_ok()
            || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        {
            return e;
        }
        let near = cmd
            .get_subcommands()
            .flat_map(|s| std::iter::once(s.get_name()).chain(s.get_all_aliases()))
            .map(|n| (strsim::damerau_levenshtein(n, word), n))
            .filter(|&(d, n)| d <= 2 && d < n.len())
            .min();
        let message = match near {
            Some((_, n)) => format!("'{word}' is not a looptop command: did you mean `looptop {n}`?"),
            None => format!("'{word}' is neither a looptop command nor a PID (see `looptop --help`)"),
        };
        return cmd.error(ErrorKind::InvalidSubcommand, message);
    };
    // `looptop run node server.js`: the command goes after `--`.
    let launches = sub.get_arguments().any(|a| a.is_last_set());
    let stray = match e.get(ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(s)) if e.kind() == ErrorKind::UnknownArgument => s.clone(),
        _ => return e,
    };
    let at = words.iter().skip(i + 1).position(|w| *w == stray).map(|k| k + i + 1);
    match at {
        // `check --json report.json`: the file goes with `=`.
        Some(j) if words[j - 1] == "--json" => sub.bin_name(format!("looptop {word}")).error(
            ErrorKind::UnknownArgument,
            format!(
                "--json takes its file with `=`: --json={stray} (a bare --json prints the JSON to stdout, as on \
                 every looptop command)"
            ),
        ),
        Some(j) if launches && !stray.starts_with('-') && !words.iter().any(|w| w == "--") => {
            // Quoted for a shell where it matters ('lag.p99<20ms').
            let quote = |w: &str| {
                let plain = |c: char| c.is_ascii_alphanumeric() || "_./=:,@%+-".contains(c);
                if !w.is_empty() && w.chars().all(plain) {
                    w.to_string()
                } else {
                    format!("'{}'", w.replace('\'', r"'\''"))
                }
            };
            let fixed: Vec<String> = words[..j]
                .iter()
                .map(|w| quote(w))
                .chain(["--".into()])
                .chain(words[j..].iter().map(|w| quote(w)))
                .collect();
            sub.bin_name(format!("looptop {word}")).error(
                ErrorKind::UnknownArgument,
                format!("`looptop {word}` takes the command to run after `--`: looptop {}", fixed.join(" ")),
            )
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    #[test]
    fn clap_definition_is_consistent() {
        super::command().debug_assert();
    }

    /// The error clap gives for `args`, after [`super::forgive`].
    fn forgiven(args: &[&str]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let e = <super::Cli as clap::Parser>::try_parse_from(&args).expect_err("a usage error");
        super::forgive(e, &args).to_string()
    }

    #[test]
    fn a_mistyped_subcommand_gets_the_nearest_one() {
        assert!(forgiven(&["looptop", "dmeo"]).contains("did you mean `looptop demo`?"));
        assert!(forgiven(&["looptop", "rn", "--", "node", "x.js"]).contains("did you mean `looptop run`?"));
        assert!(forgiven(&["looptop", "flam", "--from", "r.rec"]).contains("did you mean `looptop flame`?"));
        let far = forgiven(&["looptop", "zzzzzz"]);
        assert!(far.contains("neither a looptop command nor a PID") && !far.contains("did you mean"), "{far}");
    }

    #[test]
    fn a_json_file_without_the_equals_sign_gets_the_fix() {
        let e = forgiven(&["looptop", "check", "-b", "stalls==0", "--json", "out.json", "--", "node", "t.js"]);
        assert!(e.contains("--json=out.json"), "{e}");
        let e = forgiven(&["looptop", "ps", "--json", "rows.json"]);
        assert!(e.contains("--json=rows.json"), "{e}");
    }

    /// `-q`, `--mode` and `--pool-probes` are offered only where they mean something, and
    /// `--json` is the same option on every command that has it.
    #[test]
    fn options_are_offered_only_where_they_mean_something() {
        let cmd = super::command();
        let has = |sub: &str, long: &str| {
            cmd.find_subcommand(sub).unwrap().get_arguments().any(|a| a.get_long() == Some(long))
        };
        for sub in ["top", "ps"] {
            assert!(!has(sub, "quiet"), "{sub} has -q");
        }
        for sub in ["run", "demo", "ps", "report"] {
            assert!(!has(sub, "mode") && !has(sub, "pool-probes"), "{sub} has --mode");
        }
        for sub in ["check", "top", "record", "flame"] {
            assert!(has(sub, "mode") && has(sub, "pool-probes"), "{sub} lacks --mode");
        }
        let json = |sub: &str| {
            let a = cmd.find_subcommand(sub).unwrap().get_arguments().find(|a| a.get_long() == Some("json")).cloned();
            let a = a.unwrap_or_else(|| panic!("{sub} has no --json"));
            (a.get_num_args(), a.is_require_equals_set(), a.get_value_names().map(<[_]>::to_vec))
        };
        let first = json("run");
        for sub in ["check", "report", "ps", "demo"] {
            assert_eq!(json(sub), first, "--json of {sub} differs from run's");
        }
    }

    #[test]
    fn a_command_without_the_double_dash_gets_the_line_with_it() {
        let e = forgiven(&["looptop", "run", "node", "server.js"]);
        assert!(e.contains("looptop run -- node server.js"), "{e}");
        let e = forgiven(&["looptop", "check", "-b", "lag.p99<20ms", "node", "t.js"]);
        assert!(e.contains("looptop check -b 'lag.p99<20ms' -- node t.js"), "{e}");
    }
}
