//! Observing a target until it exits (or for a while): the poll loop shared by `run`, `demo`,
//! `record` and `flame`, for a command looptop launches or a pid it attaches to, and the
//! diagnosis when nothing could be observed.

use crate::sink::output::{self, OutputFile};
pub mod live;
pub mod pipeline;
mod replay;
mod target;

use crate::analysis::report::{Report, Target};
use crate::analysis::Session;
use crate::error::UserError;
use crate::event::Event;
use crate::plan::{Mode, Stacks};
use crate::sink::record::{self, Header, Recorder};
use crate::source::agent::{AgentSource, Selector};
use crate::source::kernel::KernelSource;
use crate::source::now_ns;
use crate::source::perf::{PerfError, PerfOptions};
use crate::target::launch::{self, LaunchPlan, Launched};
use crate::target::proc::ExitWatch;
use anyhow::{Context, Result};
use pipeline::Pipeline;
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
}

impl Collect {
    /// Observe as `stacks` says (perf stacks when permitted), for `duration` if given.
    pub fn new(threshold: Duration, duration: Option<Duration>, stacks: Stacks) -> Self {
        let Stacks { rate_hz, mode, pool_probes } = stacks;
        Collect { threshold, duration, record: None, rate_hz, mode, pool_probes }
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
    /// The recording written, and its number of lines.
    pub recorded: Option<(PathBuf, u64)>,
    /// Threads that waited for events but found no loop slot in their agent's segment: loops
    /// whose ticks were never seen (a check cannot vouch for them).
    pub loops_without_slot: u64,
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
    let mut run = Run::start(collect, Mode::Agent, origin, pid, &shown)?;
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
    run.poll_until(Polled::Perf(Box::new(source)), collect, Observee::Attached(pid), on_poll).map_err(told)?;
    let mut warnings = run.warnings();
    warnings.extend(bpf_note);
    warnings.extend(not_used.map(|e| format!("attached with perf: the agent's segment was not used ({e})")));
    warnings.extend(unnamed_js(pid, &run.pipeline.session));
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

/// A warning when a Node process was sampled without a perf map: JS frames stay unnamed.
pub fn unnamed_js(pid: u32, session: &Session) -> Option<String> {
    if session.runtime() != "node" || session.stacks().is_empty() {
        return None;
    }
    let map = format!("/proc/{pid}/root/tmp/perf-{pid}.map");
    if std::path::Path::new(&map).exists() || std::path::Path::new(&format!("/tmp/perf-{pid}.map")).exists() {
        return None;
    }
    Some(format!(
        "JavaScript functions are unnamed: node {pid} writes no perf map (/tmp/perf-{pid}.map), so blockers are \
         named from V8's own frames only; restart it under `looptop run` or with LD_PRELOAD=$(looptop agent path) \
         (or node --perf-basic-prof) to get function names and lines"
    ))
}

/// The tick source the collector thread reads.
enum Polled {
    /// The agents' segments.
    Agent(AgentSource),
    /// perf tracepoints and samples of a process without the agent.
    Perf(Box<KernelSource>),
}

impl Polled {
    fn poll(&mut self, out: &mut Vec<Event>, last: bool) {
        match self {
            Polled::Agent(a) if last => a.poll_last(now_ns(), out),
            Polled::Agent(a) => a.poll(now_ns(), out),
            Polled::Perf(p) => p.poll(out, last),
        }
    }
}

/// Reads the tick source on a thread of its own, every poll, so that tick and exit times
/// stay exact (and perf rings drained) however long symbolizing a batch of stacks takes on the
/// main thread.
struct Collector {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rx: std::sync::mpsc::Receiver<Vec<Event>>,
    handle: std::thread::JoinHandle<Polled>,
}

impl Collector {
    fn spawn(mut source: Polled, every: Duration) -> Result<Collector> {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("looptop-collect".into())
            .spawn(move || loop {
                let last = flag.load(Ordering::Acquire);
                let mut events = Vec::new();
                source.poll(&mut events, last);
                if !events.is_empty() && tx.send(events).is_err() {
                    return source;
                }
                if last {
                    return source;
                }
                std::thread::sleep(every);
            })
            .context("starting the collector thread")?;
        Ok(Collector { stop, rx, handle })
    }

    /// Everything read so far.
    fn drain(&self, out: &mut Vec<Event>) {
        while let Ok(batch) = self.rx.try_recv() {
            out.extend(batch);
        }
    }

    /// Reads a last time, stops, and gives the source back with what it read.
    fn finish(self, out: &mut Vec<Event>) -> Polled {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let Collector { rx, handle, .. } = self;
        let source = handle.join().unwrap_or_else(|_| Polled::Agent(AgentSource::new(Selector::Pid(0))));
        while let Ok(batch) = rx.try_recv() {
            out.extend(batch);
        }
        source
    }
}

/// One observation under way.
struct Run {
    pipeline: Pipeline,
    perf: Perf,
    source: AgentSource,
    collector: Option<Collector>,
    origin: u64,
    end: u64,
    /// Records perf mode lost (ticks, samples).
    dropped: u64,
    /// What the kernel source says of what it lost, when it lost anything.
    lost_note: Option<String>,
    /// What perf mode could not observe (e.g. uprobes refused).
    unseen: Vec<String>,
    /// Perf mode's source once stopped, to close after the results are out.
    closing: Option<Box<KernelSource>>,
    /// An attached process ended while observed.
    gone: Option<u32>,
    /// The launched command was asked to stop by looptop (its duration ran out, or a stop was asked).
    stopped: bool,
}

impl Run {
    /// Starts the session (and recording). `ticks`: where ticks come from, [`Mode::Agent`] (perf
    /// stacks are added when permitted) or [`Mode::Perf`] (perf samples with the ticks).
    fn start(collect: &Collect, ticks: Mode, origin: u64, pid: u32, command: &[String]) -> Result<Run> {
        let mut session = Session::new(origin, collect.threshold.as_nanos() as u64);
        // What a process attached to did before (the agent's counters, stalls and pauses since
        // it started) is not this observation's.
        session.count_from(origin);
        let perf_mode = ticks == Mode::Perf;
        session.set_mode(if perf_mode { "perf" } else { "agent" });
        let mut pipeline = Pipeline::new(session);
        pipeline.watch(pid);
        // The agent's ticks get perf stacks next to them, unless --mode agent.
        let perf = Perf::new(if perf_mode || collect.mode == Mode::Agent { 0 } else { collect.rate_hz });
        if let Some(out) = &collect.record {
            let header = Header::new(
                origin,
                collect.threshold.as_nanos() as u64,
                pid,
                command,
                if perf.source.is_some() || perf_mode { collect.rate_hz } else { 0 },
                if perf_mode { "perf" } else { "agent" },
            );
            let rec = Recorder::new(out.writer()?, out.path(), &header).map_err(|e| out.failed(&e.source))?;
            pipeline.record_to(rec);
        }
        Ok(Run {
            pipeline,
            perf,
            source: AgentSource::new(Selector::Pid(0)),
            collector: None,
            origin,
            end: origin,
            dropped: 0,
            lost_note: None,
            unseen: Vec::new(),
            closing: None,
            gone: None,
            stopped: false,
        })
    }

    /// Reads the sources until the target is gone, the duration is over or the user stops us.
    /// Returns the exit status of a launched target.
    fn poll_until(
        &mut self,
        source: Polled,
        collect: &Collect,
        mut observee: Observee,
        mut on_poll: impl FnMut(&mut Pipeline) -> Flow,
    ) -> Result<Option<std::process::ExitStatus>> {
        let perf_events = |k: &KernelSource| matches!(k, KernelSource::Perf(_));
        let drained = match &source {
            Polled::Perf(k) => perf_events(k),
            Polled::Agent(_) => false,
        } || self.perf.source.as_ref().is_some_and(perf_events);
        let every = if drained { POLL } else { POLL_STAMPED };
        let mut exit = match &observee {
            Observee::Attached(pid) => Some(ExitWatch::new(*pid)),
            Observee::Launched(_) => None,
        };
        self.collector = Some(Collector::spawn(source, every)?);
        let mut deadline = collect.duration.map(|d| self.origin + d.as_nanos() as u64);
        let mut events: Vec<Event> = Vec::new();
        let mut termed: Option<u64> = None;
        let status = loop {
            self.read(&mut events)?;
            let flow = on_poll(&mut self.pipeline);
            let now = now_ns();
            if flow == Flow::Stop && !deadline.is_some_and(|d| d <= now) {
                deadline = Some(now);
            }
            match &mut observee {
                Observee::Launched(l) => {
                    if let Some(status) = l.child.try_wait().context("waiting for the target")? {
                        break Some(status);
                    }
                    if deadline.is_some_and(|d| now >= d) {
                        // Time is up: ask the target to exit, then insist.
                        match termed {
                            None => {
                                termed = Some(now);
                                self.stopped = true;
                                l.signal_all(libc::SIGTERM);
                            }
                            Some(t) if now - t > launch::TERM_GRACE.as_nanos() as u64 => {
                                l.signal_all(libc::SIGKILL);
                            }
                            _ => {}
                        }
                    }
                }
                Observee::Attached(pid) => {
                    // A zombie is gone too (its parent has not reaped it yet).
                    let gone = exit.as_mut().is_some_and(ExitWatch::exited);
                    if gone {
                        self.gone = Some(*pid);
                    }
                    if gone || launch::interrupted() || deadline.is_some_and(|d| now >= d) {
                        break None;
                    }
                }
            }
            std::thread::sleep(every);
        };
        self.end = now_ns();
        if let Some(c) = self.collector.take() {
            match c.finish(&mut events) {
                Polled::Agent(a) => self.source = a,
                Polled::Perf(mut p) => {
                    p.disable();
                    self.dropped = p.lost();
                    self.lost_note = p.lost_note();
                    self.unseen = p.notes().to_vec();
                    self.closing = Some(p);
                }
            }
        }
        self.perf.last = true;
        self.read(&mut events)?;
        self.source.remove_finished();
        Ok(status)
    }

    fn read(&mut self, events: &mut Vec<Event>) -> Result<()> {
        if let Some(c) = &self.collector {
            c.drain(events);
        }
        self.perf.poll(events);
        self.pipeline.feed(events)?;
        self.perf.follow(self.pipeline.pids());
        if let Some(p) = &self.perf.source {
            let lost = p.lost();
            self.pipeline.lose_samples(lost.saturating_sub(self.perf.lost))?;
            self.perf.lost = lost;
        }
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self.source.errors.iter().map(|e| e.to_string()).collect();
        w.extend(self.source.slot_warnings());
        w.extend(self.perf.note.clone());
        w.extend(self.unseen.iter().cloned());
        w.extend(self.pipeline.file_notes());
        if self.pipeline.session.loop_count() == 0 {
            w.push(format!(
                "no event loop seen in {:.1} s: the target never waited in epoll_wait, epoll_pwait, epoll_pwait2, \
                 poll or ppoll{}",
                self.end.saturating_sub(self.origin) as f64 / 1e9,
                if self.pipeline.session.stacks().is_empty() { "" } else { " (its CPU stacks are still shown)" }
            ));
        }
        w.extend(self.lost_note.clone());
        // The stacks added to the agent's ticks.
        w.extend(self.perf.source.as_ref().and_then(KernelSource::lost_note));
        w
    }

    fn finish(mut self, mut target: Target, warnings: Vec<String>) -> Result<Observed> {
        target.runtime = self.pipeline.session.runtime();
        target.stopped = self.stopped;
        let mut report = self.pipeline.session.report(target.clone(), self.end);
        report.warnings = warnings.clone();
        let recorded = match self.pipeline.take_recorder() {
            Some(rec) => {
                let path = rec.path().to_path_buf();
                let lines = rec.finish(self.end, &target, &warnings).map_err(recording_failed)?;
                Some((path, lines))
            }
            None => None,
        };
        let notes = self
            .gone
            .map(|pid| format!("process {pid} exited after {:.1} s", self.end.saturating_sub(self.origin) as f64 / 1e9))
            .into_iter()
            .collect();
        let loops_without_slot = self.source.without_slot.values().sum();
        let lost = self.source.lost.values().cloned().collect();
        Ok(Observed {
            report,
            warnings,
            notes,
            session: self.pipeline.session,
            recorded,
            loops_without_slot,
            lost,
            _closing: self.closing,
        })
    }
}

/// A recording that could not be written (a full disk), as one sentence and the fix (exit 3).
fn recording_failed(e: record::WriteError) -> UserError {
    let mut err = output::write_failed("the recording", &e.path, "-o FILE", &e.source);
    err.message += "; it keeps what was written until then";
    err
}

/// An error of the poll loop: a recording that cannot be written is told as one sentence and
/// the fix.
fn told(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<record::WriteError>() {
        Ok(w) => recording_failed(w).into(),
        Err(e) => e,
    }
}

/// Observation failed mid-way (a recording that cannot be written, …) while the command looptop
/// launched runs: it is stopped — SIGTERM, SIGKILL after a grace — so that nothing is left
/// behind, and the user is told so (exit 3).
fn stopped_after(e: anyhow::Error, launched: &mut Launched) -> anyhow::Error {
    let pid = launched.child.id();
    let how = match (launched.child.try_wait(), launched.stop()) {
        (Ok(Some(status)), _) => format!("had already ended ({})", launch::describe(status)),
        (_, Some(status)) => format!("was stopped ({})", launch::describe(status)),
        (_, None) => "could not be stopped".into(),
    };
    match told(e).downcast::<UserError>() {
        Ok(mut err) => {
            err.message += &format!("; process {pid} {how}");
            err.into()
        }
        Err(e) => UserError::observe(format!("{e:#}; process {pid} {how}")).into(),
    }
}

/// Why nothing was observed, as one sentence and the fix.
fn not_observed(launched: &Launched, command: &str, exit_code: i32) -> UserError {
    let errors = launch::agent_errors(&launched.run_dir);
    if let Some(first) = errors.first() {
        let hint = if first.contains("seccomp filter") {
            "allow those calls in the filter (systemd's SystemCallFilter=, docker run --security-opt seccomp=FILE) \
             to observe it; the agent never makes a call a filter forbids"
        } else if first.contains("reserve space") {
            "free space in /dev/shm (the agent leaves a quarter of it free, 4 to 64 MiB, for the programs that \
             use it), enlarge it (docker run --shm-size=256m), or set LOOPTOP_SHM_DIR to a roomier folder on tmpfs"
        } else {
            "make /dev/shm a writable tmpfs (mount -t tmpfs -o mode=1777 tmpfs /dev/shm), or set LOOPTOP_SHM_DIR to \
             a writable folder on tmpfs"
        };
        return UserError::observe(format!("{first}, so '{command}' ran unobserved (it exited {exit_code})"))
            .hint(hint);
    }
    UserError::observe(format!(
        "the looptop agent was not loaded into '{command}' (it exited {exit_code}), so nothing was observed"
    ))
    .hint(
        "looptop run needs a dynamically linked program; statically linked (Go, musl) and setuid programs ignore \
         LD_PRELOAD",
    )
}

/// The agent keeps every tick at least this long individually: the threshold, or lower so a
/// later, lower threshold (and recordings) still see every stall.
pub fn stall_floor(threshold: std::time::Duration) -> u64 {
    looptop_abi::stall_floor_ns(threshold.as_nanos() as u64)
}
