//! The poll loop of one observation: a collector thread reads the sources, the pipeline and the
//! session take what it read, every poll, until the target exits or the caller stops; then the
//! report (and the recording's end).

use super::*;

/// The tick source the collector thread reads.
pub(super) enum Polled {
    /// The agents' segments.
    Agent(AgentSource),
    /// perf tracepoints and samples of a process without the agent, and of its descendants.
    Perf(Box<KernelSource>, Family),
}

impl Polled {
    fn poll(&mut self, out: &mut Vec<Event>, last: bool) {
        match self {
            Polled::Agent(a) if last => a.poll_last(now_ns(), out),
            Polled::Agent(a) => a.poll(now_ns(), out),
            Polled::Perf(p, family) => {
                if !last {
                    family.follow(p);
                }
                p.poll(out, last)
            }
        }
    }
}

/// The processes an attached process started (a server's workers: gunicorn's or nginx's, a Node
/// cluster's), observed as they appear: a parent that only manages its workers runs no loop of
/// its own, and attaching to it should show theirs, as `run` follows a command's children.
pub(super) struct Family {
    root: u32,
    /// Every descendant observed so far.
    followed: Vec<u32>,
    /// Every descendant tried (observed, gone, or not permitted): each is tried once.
    tried: std::collections::BTreeSet<u32>,
    /// When to look for new ones next.
    next_ns: u64,
}

impl Family {
    /// How often the family's `/proc/PID/task/*/children` files are read for new descendants.
    const EVERY_NS: u64 = 500_000_000;

    pub(super) fn new(root: u32) -> Family {
        Family { root, followed: Vec::new(), tried: Default::default(), next_ns: 0 }
    }

    /// Adds the descendants of the root that appeared since the last look to `source`.
    fn follow(&mut self, source: &mut KernelSource) {
        let now = now_ns();
        if now < self.next_ns {
            return;
        }
        self.next_ns = now + Self::EVERY_NS;
        for pid in crate::target::proc::family(self.root) {
            if !self.tried.insert(pid) {
                continue;
            }
            // Gone already, or not permitted: it stays unobserved (the others are still followed).
            if source.add_process(pid).is_ok() {
                self.followed.push(pid);
            }
        }
    }

    /// One sentence for the report when any descendant was followed.
    fn note(&self) -> Option<String> {
        if self.followed.is_empty() {
            return None;
        }
        let mut pids = self.followed.clone();
        pids.sort_unstable();
        let shown: Vec<String> = pids.iter().take(8).map(u32::to_string).collect();
        let more = if pids.len() > 8 { format!(" and {} more", pids.len() - 8) } else { String::new() };
        Some(format!(
            "followed {} process{} started by {} ({}{more}): their loops are in the report beside its own",
            pids.len(),
            if pids.len() == 1 { "" } else { "es" },
            self.root,
            shown.join(", ")
        ))
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
    pub(super) fn finish(self, out: &mut Vec<Event>) -> Polled {
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
pub(super) struct Run {
    pub(super) pipeline: Pipeline,
    perf: Perf,
    /// The GC pauses of the JVMs among the processes observed.
    jvm: crate::source::jvm::JvmSource,
    pub(super) source: AgentSource,
    collector: Option<Collector>,
    origin: u64,
    end: u64,
    /// Records perf mode lost (ticks, samples).
    dropped: u64,
    /// What the kernel source says of what it lost, when it lost anything.
    lost_note: Option<String>,
    /// What perf mode could not observe (e.g. uprobes refused).
    unseen: Vec<String>,
    /// Which descendants of an attached process were followed, when any were.
    followed: Option<String>,
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
    pub(super) fn start(collect: &Collect, ticks: Mode, origin: u64, pid: u32, command: &[String]) -> Result<Run> {
        let mut session = Session::new(origin, collect.threshold.as_nanos() as u64);
        // What a process attached to did before (the agent's counters, stalls and pauses since
        // it started) is not this observation's.
        session.count_from(origin);
        let perf_mode = ticks == Mode::Perf;
        session.set_mode(if perf_mode { "perf" } else { "agent" });
        // The agent's ticks get perf stacks next to them, unless --mode agent.
        let perf = Perf::new(if perf_mode || collect.mode == Mode::Agent { 0 } else { collect.rate_hz });
        session.set_rate(if perf.source.is_some() || perf_mode { collect.rate_hz } else { 0 });
        if collect.keep_all_samples {
            session.stacks_mut().keep_all();
        }
        let mut pipeline = Pipeline::new(session);
        pipeline.watch(pid);
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
            jvm: Default::default(),
            source: AgentSource::new(Selector::Pid(0)),
            collector: None,
            origin,
            end: origin,
            dropped: 0,
            lost_note: None,
            unseen: Vec::new(),
            followed: None,
            closing: None,
            gone: None,
            stopped: false,
        })
    }

    /// Reads the sources until the target is gone, the duration is over or the user stops us.
    /// Returns the exit status of a launched target.
    pub(super) fn poll_until(
        &mut self,
        source: Polled,
        collect: &Collect,
        mut observee: Observee,
        mut on_poll: impl FnMut(&mut Pipeline) -> Flow,
    ) -> Result<Option<std::process::ExitStatus>> {
        let perf_events = |k: &KernelSource| matches!(k, KernelSource::Perf(_));
        let drained = match &source {
            Polled::Perf(k, _) => perf_events(k),
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
                Polled::Perf(mut p, family) => {
                    p.disable();
                    self.dropped = p.lost();
                    self.lost_note = p.lost_note();
                    self.unseen = p.notes().to_vec();
                    self.followed = family.note();
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
        self.jvm.poll(events);
        self.pipeline.feed(events)?;
        self.perf.follow(self.pipeline.pids());
        self.jvm.follow(self.pipeline.pids());
        if let Some(p) = &self.perf.source {
            let lost = p.lost();
            self.pipeline.lose_samples(lost.saturating_sub(self.perf.lost))?;
            self.perf.lost = lost;
        }
        Ok(())
    }

    pub(super) fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self.source.errors.iter().map(|e| e.to_string()).collect();
        w.extend(self.source.slot_warnings());
        w.extend(self.perf.note.clone());
        w.extend(self.unseen.iter().cloned());
        w.extend(self.jvm.notes.iter().cloned());
        w.extend(self.pipeline.file_notes());
        let go = self.pipeline.go_pids();
        w.extend(go.iter().map(|pid| format!("process {pid} is a Go program: {}", crate::target::golang::NO_LOOP)));
        if self.pipeline.session.loop_count() == 0 && go.is_empty() {
            w.push(format!(
                "no event loop seen in {:.1} s: the target never waited in {}{}",
                self.end.saturating_sub(self.origin) as f64 / 1e9,
                crate::source::waits::NAMED,
                if self.pipeline.session.stacks().is_empty() { "" } else { " (its CPU stacks are still shown)" }
            ));
        }
        w.extend(self.lost_note.clone());
        // The stacks added to the agent's ticks.
        w.extend(self.perf.source.as_ref().and_then(KernelSource::lost_note));
        w
    }

    pub(super) fn finish(mut self, mut target: Target, warnings: Vec<String>) -> Result<Observed> {
        target.runtime = self.pipeline.session.runtime();
        target.stopped = self.stopped;
        let mut report = self.pipeline.session.report(target.clone(), self.end);
        report.warnings = warnings.clone();
        let recorded = match self.pipeline.take_recorder() {
            Some(rec) => {
                let path = rec.path().to_path_buf();
                let bytes = rec.finish(self.end, &target, &warnings).map_err(recording_failed)?;
                Some((path, bytes))
            }
            None => None,
        };
        let notes = self
            .gone
            .map(|pid| format!("process {pid} exited after {:.1} s", self.end.saturating_sub(self.origin) as f64 / 1e9))
            .into_iter()
            .chain(self.followed)
            .collect();
        let loops_without_slot = self.source.without_slot.values().sum();
        let lost = self.source.lost.values().cloned().collect();
        let go_pids = self.pipeline.go_pids().iter().copied().collect();
        Ok(Observed {
            go_pids,
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
pub(super) fn told(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<record::WriteError>() {
        Ok(w) => recording_failed(w).into(),
        Err(e) => e,
    }
}

/// Observation failed mid-way (a recording that cannot be written, …) while the command looptop
/// launched runs: it is stopped — SIGTERM, SIGKILL after a grace — so that nothing is left
/// behind, and the user is told so (exit 3).
pub(super) fn stopped_after(e: anyhow::Error, launched: &mut Launched) -> anyhow::Error {
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
pub(super) fn not_observed(launched: &Launched, command: &str, exit_code: i32) -> UserError {
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
