//! Observing a target until it exits (or for a while): the poll loop shared by `run`, `demo`,
//! `record` and `flame`, for a command looptop launches or a pid it attaches to, and the
//! diagnosis when nothing could be observed.

use crate::sink::output::{self, OutputFile};
pub mod live;
pub mod pipeline;
mod poll;
mod replay;
mod target;

use crate::analysis::report::{Report, Target};
use crate::analysis::Session;
use crate::error::UserError;
use crate::event::Event;
use crate::plan::{Mode, Stacks};
use crate::recording::Header;
use crate::sink::record::{self, Recorder};
use crate::source::agent::{AgentSource, Selector};
use crate::source::kernel::KernelSource;
use crate::source::now_ns;
use crate::source::perf::{PerfError, PerfOptions};
use crate::target::launch::{self, LaunchPlan, Launched};
use crate::target::proc::ExitWatch;
use anyhow::{Context, Result};
use pipeline::Pipeline;
use poll::{not_observed, stopped_after, told, Polled, Run};
pub use replay::replay;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
pub use target::observe_target;

/// How often sources are read while a perf-event source runs (its rings must be drained), and
/// how often a starting process is looked at.
const POLL: Duration = Duration::from_millis(20);
/// How often the other sources are read: the agent and the BPF programs stamp every time
/// themselves and keep far more than this long of records, so polling only sets how fresh the
/// numbers look (and, for a process killed without its exit handlers, how close its exit time
/// is). Each wake-up costs looptop's own CPU.
const POLL_STAMPED: Duration = Duration::from_millis(50);
/// How long a process whose environment or maps name the agent is given to create its segment.
const AGENT_STARTUP: Duration = Duration::from_secs(5);

/// What to collect besides ticks.
#[derive(Debug, Clone)]
pub struct Collect {
    /// A tick at least this long is a stall.
    pub threshold: Duration,
    /// Stop after this long (a launched target is then asked to exit with SIGTERM).
    pub duration: Option<Duration>,
    /// Write a recording here (opened before anything starts).
    pub record: Option<Arc<OutputFile>>,
    /// perf `cpu-clock` samples at this rate when permitted (0: no perf stacks).
    pub rate_hz: u64,
    /// How a pid is observed (a launched command always gets the agent).
    pub mode: Mode,
    /// Attached without the agent: probe the libuv pool too.
    pub pool_probes: bool,
    /// Keep every stack sample one by one (a speedscope profile's timelines), instead of folding
    /// older ones into counts.
    pub keep_all_samples: bool,
}

impl Collect {
    /// Observe as `stacks` says (perf stacks when permitted), for `duration` if given.
    pub fn new(threshold: Duration, duration: Option<Duration>, stacks: Stacks) -> Self {
        let Stacks { rate_hz, mode, pool_probes } = stacks;
        Collect { threshold, duration, record: None, rate_hz, mode, pool_probes, keep_all_samples: false }
    }
}

/// What a poll hook wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep observing.
    Go,
    /// Stop now, as when the duration is over (a launched target is asked to exit).
    Stop,
}

/// A finished observation.
pub struct Observed {
    /// The report.
    pub report: Report,
    /// Things the user should know (no loop seen, unreadable segments, no perf).
    pub warnings: Vec<String>,
    /// How it ended, when worth saying ("process 4242 exited after 3.2 s").
    pub notes: Vec<String>,
    /// The session behind the report (stacks for flamegraphs).
    pub session: Session,
    /// The recording written, and its size in bytes.
    pub recorded: Option<(PathBuf, u64)>,
    /// Threads that waited for events but found no loop slot in their agent's segment: loops
    /// whose ticks were never seen (a check cannot vouch for them).
    pub loops_without_slot: u64,
    /// The Go processes observed: no loop of theirs was kept ([`crate::target::golang`]).
    pub go_pids: Vec<u32>,
    /// Live processes whose segment became unreadable mid-way, with why: what came after was
    /// not seen (a check cannot pass, a recording is incomplete).
    pub lost: Vec<String>,
    /// Perf mode's events, disabled, closed when this is dropped: after the results are out
    /// (each uprobe close waits for an RCU grace period, seconds in all).
    _closing: Option<Box<KernelSource>>,
}

impl Observed {
    /// Prints the warnings and notes to stderr.
    pub fn tell(&self) {
        for w in &self.warnings {
            eprintln!("looptop: warning: {w}");
        }
        for n in &self.notes {
            eprintln!("looptop: {n}");
        }
    }
}

/// perf next to the agent, when permitted.
struct Perf {
    source: Option<KernelSource>,
    /// The next poll is the last: it takes everything the kernel still holds.
    last: bool,
    added: std::collections::BTreeSet<u32>,
    note: Option<String>,
    lost: u64,
}

impl Perf {
    fn new(rate_hz: u64) -> Perf {
        if rate_hz == 0 {
            return Perf { source: None, added: Default::default(), note: None, lost: 0, last: false };
        }
        let opts = PerfOptions { rate_hz, ..PerfOptions::default() };
        match KernelSource::permitted().and_then(|_| KernelSource::open(opts)) {
            Ok((s, note)) => Perf { source: Some(s), added: Default::default(), note, lost: 0, last: false },
            Err(e) => Perf {
                source: None,
                added: Default::default(),
                lost: 0,
                last: false,
                note: Some(format!(
                    "perf stack sampling is off ({e}); stacks come from the agent's watchdog, during stalls only"
                )),
            },
        }
    }

    /// Samples every process the pipeline has seen.
    fn follow(&mut self, pids: &std::collections::BTreeSet<u32>) {
        let Some(src) = &mut self.source else { return };
        for &pid in pids {
            if self.added.insert(pid) {
                match src.add_process(pid) {
                    // Gone before it could be sampled (a short command): nothing was missed.
                    Ok(()) | Err(crate::source::perf::PerfError::NoSuchProcess(_)) => {}
                    Err(e) => {
                        self.note.get_or_insert_with(|| format!("perf could not sample process {pid}: {e}"));
                    }
                }
            }
        }
    }

    fn poll(&mut self, out: &mut Vec<Event>) {
        if let Some(src) = &mut self.source {
            src.poll(out, self.last);
        }
    }
}

/// The thing being observed.
enum Observee<'a> {
    Launched(&'a mut Launched),
    Attached(u32),
}

/// Launches `plan` with the agent, calls `on_poll` after each read, and reports once the
/// target exits (or the duration is over). Fails (exit 3) when no agent reported from the
/// target at all.
pub fn launch_and_observe(
    plan: &LaunchPlan,
    collect: &Collect,
    mut on_start: impl FnMut(&mut Launched),
    on_poll: impl FnMut(&mut Pipeline) -> Flow,
) -> Result<Observed> {
    if collect.mode == Mode::Perf {
        return Err(UserError::usage(
            "--mode perf attaches to a running process; a command looptop starts gets the agent",
        )
        .hint("start the program yourself and give --pid PID, or drop --mode perf")
        .into());
    }
    crate::source::agent::remove_dead_segments();
    let agent = crate::target::embedded::agent_path()?;
    let origin = now_ns();
    let shown: Vec<String> = plan.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut launched = launch::spawn(plan, &agent)?;
    on_start(&mut launched);
    let pid = launched.child.id();
    let source = AgentSource::new(Selector::Session(launched.session));
    // (Writing the recording's header can fail already: a full disk.)
    let mut run = Run::start(collect, Mode::Agent, origin, pid, &shown).map_err(|e| stopped_after(e, &mut launched))?;
    let status = match run.poll_until(Polled::Agent(source), collect, Observee::Launched(&mut launched), on_poll) {
        Ok(status) => status,
        Err(e) => return Err(stopped_after(e, &mut launched)),
    };
    let exit_code = status.map(launch::exit_code);
    if run.source.processes_seen() == 0 {
        return Err(not_observed(&launched, &shown.join(" "), exit_code.unwrap_or(0)).into());
    }
    let mut warnings = run.warnings();
    let agent_errors = launch::agent_errors(&launched.run_dir);
    if !agent_errors.is_empty() {
        // Why no loop was seen is the agent's error, not that the program never waited.
        warnings.retain(|w| !w.starts_with("no event loop seen"));
    }
    warnings.extend(agent_errors);
    warnings.extend(unnamed_java(pid, &run.pipeline.session));
    run.finish(Target { pid, command: shown, runtime: "native", exit_code, stopped: false }, warnings)
}

/// Attaches to a running process: its agent segment if it has one (plus perf stacks when
/// permitted), or agentless through perf (ticks from tracepoints), as `collect.mode` says.
pub fn attach_and_observe(pid: u32, collect: &Collect, on_poll: impl FnMut(&mut Pipeline) -> Flow) -> Result<Observed> {
    let command = settled_cmdline(pid);
    if command.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(UserError::observe(format!("no process with pid {pid}"))
            .hint("list candidates with `looptop ps` (processes with the agent) or `ps aux`")
            .into());
    }
    let shown = if command.is_empty() { "CMD".to_string() } else { command.join(" ") };
    let (has_agent, not_used) = match collect.mode {
        Mode::Perf => (false, None),
        _ => match has_agent(pid) {
            Ok(yes) => (yes, None),
            Err(e) => (false, Some(e)),
        },
    };
    if let (Mode::Agent, Some(e)) = (collect.mode, &not_used) {
        return Err(UserError::observe(format!("cannot use the agent of process {pid}: {e}"))
            .hint(format!(
                "restart it under `looptop run -- {shown}` or with LD_PRELOAD=$(looptop agent path), or attach \
                 with --mode perf (root or CAP_PERFMON)"
            ))
            .into());
    }
    if collect.mode == Mode::Agent && !has_agent {
        return Err(UserError::observe(format!(
            "process {pid} has no looptop agent, and --mode agent uses nothing else"
        ))
        .hint(format!(
            "restart it under `looptop run -- {shown}` or with LD_PRELOAD=$(looptop agent path), or attach with \
                 --mode perf (root or CAP_PERFMON)"
        ))
        .into());
    }
    let origin = now_ns();
    if has_agent {
        let mut run = Run::start(collect, Mode::Agent, origin, pid, &command)?;
        let source = AgentSource::new(Selector::Pid(pid));
        run.poll_until(Polled::Agent(source), collect, Observee::Attached(pid), on_poll).map_err(told)?;
        let warnings = run.warnings();
        return run.finish(Target { pid, command, runtime: "native", exit_code: None, stopped: false }, warnings);
    }
    // Agentless: perf times the ticks and samples the stacks.
    let opts = PerfOptions {
        rate_hz: collect.rate_hz,
        // --rate 0: no perf stacks at all, on-CPU or off.
        off_cpu: collect.rate_hz > 0,
        ticks: true,
        stall_floor_ns: stall_floor(collect.threshold),
        pool: collect.pool_probes,
        ..PerfOptions::default()
    };
    let refused = |e: PerfError| perf_refused(pid, &shown, e);
    let (mut source, bpf_note) = KernelSource::open(opts).map_err(refused)?;
    source.add_process(pid).map_err(refused)?;
    let mut run = Run::start(collect, Mode::Perf, origin, pid, &command)?;
    let polled = Polled::Perf(Box::new(source), poll::Family::new(pid));
    run.poll_until(polled, collect, Observee::Attached(pid), on_poll).map_err(told)?;
    let mut warnings = run.warnings();
    warnings.extend(bpf_note);
    warnings.extend(not_used.map(|e| format!("attached with perf: the agent's segment was not used ({e})")));
    warnings.extend(unnamed_js(pid, &run.pipeline.session));
    warnings.extend(unnamed_java(pid, &run.pipeline.session));
    run.finish(Target { pid, command, runtime: "native", exit_code: None, stopped: false }, warnings)
}

/// The command line of `pid`, waiting up to a second while it is empty: a process caught in
/// `execve` shows no command line, maps nor environment yet (a server started a moment ago).
fn settled_cmdline(pid: u32) -> Vec<String> {
    let mut command = crate::target::proc::cmdline(pid);
    for _ in 0..50 {
        if !command.is_empty() || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(POLL);
        command = crate::target::proc::cmdline(pid);
    }
    command
}

/// Whether `pid` runs the agent: a segment of it that looptop believes is there, or it maps the
/// agent library and is about to create one (a process started a moment ago). A segment named
/// after the pid that is not believed (truncated, corrupt, of another version, another user's)
/// is the error to report when the agent is all there is to use.
fn has_agent(pid: u32) -> Result<bool, crate::source::segment::SegmentError> {
    use crate::source::segment::{find, shm_dir, SegmentError};
    // A file with no header yet, or a short one, may be a segment its agent is still writing.
    let starting = |e: &SegmentError| matches!(e, SegmentError::NotSegment { .. } | SegmentError::Truncated { .. });
    let mut last = None;
    let mut step = || -> Result<Option<bool>, SegmentError> {
        match find(&shm_dir(), pid) {
            Some(Ok(_)) => Ok(Some(true)),
            Some(Err(e)) if starting(&e) => {
                last = Some(e);
                Ok(None)
            }
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    };
    if step()?.is_some() {
        return Ok(true);
    }
    let read = |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
    let mentions = |bytes: Vec<u8>| bytes.windows(16).any(|w| w == b"liblooptop_agent");
    if mentions(read("maps")) || mentions(read("environ")) {
        // The agent is loaded or about to be: a process that was just started creates its
        // segment once the loader has run its constructors, which a loaded machine can delay
        // for seconds, and a segment is read here while its agent writes its header.
        let deadline = std::time::Instant::now() + AGENT_STARTUP;
        while std::time::Instant::now() < deadline && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(POLL);
            if step()?.is_some() {
                return Ok(true);
            }
        }
    }
    last.map_or(Ok(false), Err)
}

/// Why perf mode cannot observe `pid`, with every way out (exit 3).
fn perf_refused(pid: u32, shown: &str, e: PerfError) -> anyhow::Error {
    let hint = match &e {
        PerfError::NoSuchProcess(_) => "list candidates with `ps aux`".to_string(),
        _ => format!(
            "or, with no privileges at all, restart it under `looptop run -- {shown}` or with \
             LD_PRELOAD=$(looptop agent path)"
        ),
    };
    UserError::observe(format!("cannot attach to process {pid} without an agent: {e}")).hint(hint).into()
}

/// Whether `pid` has a perf map (`/tmp/perf-PID.map`, in its own mount namespace or ours).
fn has_perf_map(pid: u32) -> bool {
    let map = format!("/proc/{pid}/root/tmp/perf-{pid}.map");
    std::path::Path::new(&map).exists() || std::path::Path::new(&format!("/tmp/perf-{pid}.map")).exists()
}

/// A warning when a Node process was sampled without a perf map: JS frames stay unnamed.
pub fn unnamed_js(pid: u32, session: &Session) -> Option<String> {
    if session.runtime() != "node" || session.stacks().is_empty() {
        return None;
    }
    if has_perf_map(pid) {
        return None;
    }
    Some(format!(
        "JavaScript functions are unnamed: node {pid} writes no perf map (/tmp/perf-{pid}.map), so blockers are \
         named from V8's own frames only; restart it under `looptop run` or with LD_PRELOAD=$(looptop agent path) \
         (or node --perf-basic-prof) to get function names and lines"
    ))
}

/// A warning when a JVM was sampled without a perf map: its Java methods stay unnamed. JDK 17 and
/// later write one on request, without a restart.
pub fn unnamed_java(pid: u32, session: &Session) -> Option<String> {
    let java = |p: &str| p.rsplit('/').next() == Some("java");
    let known = session.process(pid).is_some_and(|p| java(&p.exe) || p.command.first().is_some_and(|c| java(c)));
    if session.stacks().is_empty() || !(known || crate::target::proc::is_jvm(pid)) {
        return None;
    }
    if has_perf_map(pid) {
        return None;
    }
    Some(format!(
        "Java methods are unnamed: java {pid} writes no perf map (/tmp/perf-{pid}.map); on JDK 17 or later run \
         `jcmd {pid} Compiler.perfmap` (no restart; it lists the methods compiled so far) and look again, or start \
         it with -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit for a map at its exit"
    ))
}

/// The agent keeps every tick at least this long individually: the threshold, or lower so a
/// later, lower threshold (and recordings) still see every stall.
pub fn stall_floor(threshold: std::time::Duration) -> u64 {
    looptop_abi::stall_floor_ns(threshold.as_nanos() as u64)
}
