//! The perf source: stacks of a process that runs without the agent, from `perf_event_open`.
//!
//! - **On-CPU**: `cpu-clock` at [`PerfOptions::rate_hz`], frame-pointer callchains; each
//!   [`Sample`](crate::event::Sample) weighs its period (ns). One sampler per CPU when
//!   permitted (`CAP_PERFMON`, or `perf_event_paranoid` ≤ 0), keeping the target's samples: a
//!   per-thread sampler re-arms its timer at every context switch, which cost a busy Node server
//!   a third of its throughput on a VM. Else one sampler per thread.
//! - **Off-CPU**, per thread (in perf mode only on loop threads): the `sched:sched_switch`
//!   tracepoint gives the stack when the thread leaves the CPU to wait; its switch-in record (`attr.context_switch`) gives the time it comes
//!   back. One `PerfOffCpu` sample is emitted *when the thread is back*, at the switch-out time,
//!   weighing the whole wait. A wait still going on at [`PerfSource::poll`] is held until it
//!   ends (and dropped if the thread exits first): a stall spent sleeping shows up when it ends.
//! - **Threads**: events are per thread, without `inherit` (the kernel refuses to `mmap` an
//!   inherited per-thread event), so every poll rescans `/proc/PID/task`: a thread started after
//!   [`PerfSource::add_process`] is sampled from the next poll on, and an exited one is drained and
//!   closed (off the polling thread: each close of a tracepoint or uprobe event may wait for an
//!   RCU grace period).
//!
//! - **Ticks** (perf mode, [`PerfOptions::ticks`]): the wait calls' tracepoints give each
//!   thread's ticks (`ticks.rs`), and the source emits the process, its loops, their totals and
//!   stalls like the agent's segment does.
//!
//! - **Runtime** (perf mode, a binary with libuv's and V8's symbols): uprobes give the libuv
//!   pool's queue and waits and V8's GC pauses (`uprobes.rs`), in the same events the Node probe
//!   emits.
//!
//! All times are `CLOCK_MONOTONIC` (`attr.clockid`), the clock of [`crate::source::now_ns`].

mod error;
pub(crate) mod sites;
pub(crate) mod sys;
mod thread;
pub(crate) mod ticks;
mod tracefs;
pub(crate) mod uprobes;

#[cfg(test)]
mod tests;

pub use error::{Missing, PerfError, PARANOID_PATH};

use crate::event::Event;
use error::{is_refusal, Access};
use perf_event::events::Software;
use perf_event::Builder;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use thread::{OpenError, Setup, Thread};
use ticks::WaitTracepoints;
use tracefs::SchedSwitch;
use uprobes::Runtime;

/// What the perf source samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfOptions {
    /// On-CPU samples per second of CPU time, per thread (default 997).
    pub rate_hz: u64,
    /// Off-CPU stacks from `sched_switch` (default true; needs CAP_PERFMON and tracefs).
    pub off_cpu: bool,
    /// Kernel frames in callchains, when permitted (default true).
    pub kernel: bool,
    /// Time the ticks from the wait calls' tracepoints (perf mode: no agent in the target).
    pub ticks: bool,
    /// With `ticks`, completed ticks at least this long become stall events.
    pub stall_floor_ns: u64,
    /// With `ticks`, probe the libuv pool too (a uprobe hit per item submitted, started and
    /// done); GC pauses are always probed.
    pub pool: bool,
}

impl Default for PerfOptions {
    fn default() -> Self {
        PerfOptions {
            rate_hz: 997,
            off_cpu: true,
            kernel: true,
            ticks: false,
            stall_floor_ns: looptop_abi::DEFAULT_STALL_FLOOR_NS,
            pool: false,
        }
    }
}

/// One observed process and its threads.
#[derive(Default)]
struct Process {
    threads: BTreeMap<u32, Thread>,
    /// Threads whose events would not open; not retried.
    failed: BTreeSet<u32>,
    /// Its libuv pool and GC probes (perf mode, a binary with the symbols), and their state.
    runtime: Option<Runtime>,
    /// When it was added (ns): CPU-wide samples from before are not ours to give.
    since_ns: u64,
}

/// Samples the threads of processes with perf events.
pub struct PerfSource {
    setup: Setup,
    processes: BTreeMap<u32, Process>,
    lost: u64,
    /// Events from [`PerfSource::add_process`], delivered by the next poll.
    pending: Vec<Event>,
    /// What could not be observed and why, for the user.
    notes: Vec<String>,
    /// Closes the events of exited threads and processes off the polling thread.
    closer: Closer,
    /// On-CPU samples of every CPU, when permitted (else each thread has its own sampler).
    cpu_wide: Option<CpuWide>,
    /// Probe the libuv pool ([`PerfOptions::pool`]).
    pool: bool,
}

/// `cpu-clock` samplers of every online CPU, any process.
struct CpuWide {
    rings: Vec<perf_event::Sampler>,
}

impl CpuWide {
    fn open(rate_hz: u64, kernel: bool) -> std::io::Result<CpuWide> {
        let mut rings = Vec::new();
        for cpu in sys::online_cpus()? {
            let mut ring = thread::cpu_sampler(None, Some(cpu), rate_hz, kernel).map_err(|e| e.source)?;
            ring.enable()?;
            rings.push(ring);
        }
        Ok(CpuWide { rings })
    }

    /// Moves the samples of `processes` taken since each was added into `out`, in time order
    /// across the CPUs; returns the records the kernel lost.
    fn drain(&mut self, processes: &BTreeMap<u32, Process>, out: &mut Vec<Event>) -> u64 {
        use perf_event::data::Record;
        let mut lost = 0;
        let mut samples = Vec::new();
        for ring in &mut self.rings {
            while let Some(record) = ring.next_record() {
                match record.parse_record() {
                    Ok(Record::Sample(s)) => {
                        let ours = s.pid().and_then(|pid| processes.get(&pid));
                        if ours.is_some_and(|p| s.time().is_some_and(|t| t >= p.since_ns)) {
                            samples.push(thread::cpu_sample(&s, 0, 0));
                        }
                    }
                    Ok(Record::Lost(l)) => lost += l.lost,
                    _ => {}
                }
            }
        }
        samples.sort_by_key(|s| s.t_ns);
        out.extend(samples.into_iter().map(Event::Sample));
        lost
    }
}

/// A thread that drops what it is sent: closing perf events waits for RCU grace periods.
struct Closer {
    tx: Option<std::sync::mpsc::Sender<Box<dyn Send>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Closer {
    fn new() -> Closer {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn Send>>();
        let thread = std::thread::Builder::new().name("perf-close".into()).spawn(move || rx.into_iter().for_each(drop));
        // Without a thread, events are closed where they are dropped.
        match thread {
            Ok(thread) => Closer { tx: Some(tx), thread: Some(thread) },
            Err(_) => Closer { tx: None, thread: None },
        }
    }

    fn close(&self, what: Box<dyn Send>) {
        if let Some(tx) = &self.tx {
            // A send fails only when the thread is gone; the value is then dropped right here.
            let _ = tx.send(what);
        }
    }
}

impl PerfSource {
    /// Checks permissions and finds the tracepoint (mounting tracefs when root and missing).
    pub fn new(options: PerfOptions) -> Result<Self, PerfError> {
        let access = check(&options)?;
        let sched_switch = if options.off_cpu { Some(SchedSwitch::open(access.sys_admin)?) } else { None };
        let waits = if options.ticks { Some(WaitTracepoints::open(access.sys_admin)?) } else { None };
        // On-CPU samples CPU-wide when permitted: a per-thread cpu-clock re-arms its timer at
        // every context switch of the thread, which cost a Node server half its throughput on a
        // VM; one timer per CPU costs the same whatever the target does. Other processes'
        // samples are dropped here.
        let cpu_wide = match options.rate_hz {
            0 => None,
            hz if access.perfmon || access.paranoid <= 0 => CpuWide::open(hz, options.kernel && access.kernel()).ok(),
            _ => None,
        };
        let setup = Setup {
            rate_hz: if cpu_wide.is_some() { 0 } else { options.rate_hz },
            kernel: options.kernel && access.kernel(),
            sched_switch,
            waits,
            stall_floor_ns: options.stall_floor_ns,
        };
        Ok(PerfSource {
            setup,
            processes: BTreeMap::new(),
            lost: 0,
            pending: Vec::new(),
            notes: Vec::new(),
            closer: Closer::new(),
            cpu_wide,
            pool: options.pool,
        })
    }

    /// Whether the default options are permitted here, and if not, why (cheap: no mount).
    pub fn permitted() -> Result<(), PerfError> {
        let access = check(&PerfOptions::default())?;
        tracefs::available(access.sys_admin)
    }

    /// Samples every thread of `pid`, and from the next poll on, threads it starts later.
    pub fn add_process(&mut self, pid: u32) -> Result<(), PerfError> {
        if self.processes.contains_key(&pid) {
            return Ok(());
        }
        let tids = tasks(pid).ok_or(PerfError::NoSuchProcess(pid))?;
        let now = crate::source::now_ns();
        let mut process = Process { since_ns: now, ..Process::default() };
        for tid in tids {
            match Thread::open(pid, tid, &self.setup, Some(now)) {
                Ok(thread) => {
                    process.threads.insert(tid, thread);
                }
                // The thread exited between the listing and the open.
                Err(e) if e.source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(open_error(pid, tid, e)),
            }
        }
        if process.threads.is_empty() {
            return Err(PerfError::NoSuchProcess(pid));
        }
        if self.setup.waits.is_some() {
            process.runtime = Runtime::attach(pid, now, self.pool, &mut self.pending, &mut self.notes);
        }
        self.processes.insert(pid, process);
        Ok(())
    }

    /// Drains every ring into `out`, opens threads started since the last poll and closes
    /// exited ones (after draining them). Never blocks.
    pub fn poll(&mut self, out: &mut Vec<Event>) {
        let mut lost = 0;
        out.append(&mut self.pending);
        let now = crate::source::now_ns();
        // Before a gone process is dropped below: its last samples are in these rings too. They
        // join `out` once their threads' wait records are read, which say which tick each is in.
        let mut wide = Vec::new();
        if let Some(cpu_wide) = &mut self.cpu_wide {
            lost += cpu_wide.drain(&self.processes, &mut wide);
        }
        let mut wide_of: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
        for (i, ev) in wide.iter().enumerate() {
            if let Event::Sample(s) = ev {
                wide_of.entry((s.pid, s.tid)).or_default().push(i);
            }
        }
        let ticks = self.setup.waits.is_some();
        let closer = &self.closer;
        self.processes.retain(|&pid, process| {
            // List first and drain after, so a thread found gone has written its last record.
            // A zombie has no threads left to observe.
            let alive =
                if crate::target::proc::is_alive(pid, 0) { tasks(pid).unwrap_or_default() } else { BTreeSet::new() };
            for &tid in &alive {
                if process.threads.contains_key(&tid) || process.failed.contains(&tid) {
                    continue;
                }
                match Thread::open(pid, tid, &self.setup, None) {
                    Ok(thread) => {
                        process.threads.insert(tid, thread);
                    }
                    Err(e) if e.source.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(_) => {
                        process.failed.insert(tid);
                    }
                }
            }
            for (&tid, thread) in process.threads.iter_mut() {
                lost += thread.drain(out);
                out.extend(thread.totals(now));
                for &i in wide_of.get(&(pid, tid)).into_iter().flatten() {
                    if let Event::Sample(s) = &mut wide[i] {
                        s.tick_ns = thread.tick_of(s.t_ns);
                    }
                }
            }
            if ticks {
                mark_workers(pid, &mut process.threads);
            }
            if let Some(runtime) = &mut process.runtime {
                lost += runtime.poll(now, out);
            }
            if alive.is_empty() {
                if ticks {
                    // Its loops end with it; a tick under way was cut short (the stall counts).
                    out.push(Event::ProcessExited { pid, at_ns: now, clean: false });
                }
                closer.close(Box::new(std::mem::take(process)));
                return false;
            }
            let gone: Vec<u32> = process.threads.keys().copied().filter(|tid| !alive.contains(tid)).collect();
            for tid in gone {
                let Some(thread) = process.threads.remove(&tid) else { continue };
                if let Some(id) = thread.loop_id() {
                    out.push(Event::LoopEnded { id, at_ns: now, clean: true });
                }
                // Closing its events waits for RCU grace periods: not on the polling thread.
                closer.close(Box::new(thread));
            }
            process.failed.retain(|tid| alive.contains(tid));
            true
        });
        out.append(&mut wide);
        if lost > 0 {
            self.lost += lost;
            out.push(Event::Dropped { count: lost });
        }
    }

    /// Stops every event (cheap: the target is no longer slowed); closing them, which is slow,
    /// happens on drop.
    pub fn disable(&mut self) {
        for process in self.processes.values_mut() {
            for thread in process.threads.values_mut() {
                thread.disable();
            }
            if let Some(runtime) = &mut process.runtime {
                runtime.disable();
            }
        }
        for ring in self.cpu_wide.iter_mut().flat_map(|c| c.rings.iter_mut()) {
            let _ = ring.disable();
        }
    }

    /// What could not be observed and why (e.g. uprobes refused), one sentence each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Records the kernel could not write because a ring was full (`PERF_RECORD_LOST`), so far:
    /// samples and, with off-CPU stacks on, switch records (three per wait).
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

impl Drop for PerfSource {
    /// Closes every event, many at a time: each close of a tracepoint or uprobe event waits for
    /// an RCU grace period (40–90 ms here), so a hundred closed one by one made a detach take
    /// seconds; closed from many threads, the waits overlap.
    fn drop(&mut self) {
        let mut parts: Vec<Box<dyn Send>> = Vec::new();
        for (_, process) in std::mem::take(&mut self.processes) {
            parts.extend(process.threads.into_values().map(|t| Box::new(t) as Box<dyn Send>));
            parts.extend(process.runtime.map(|r| Box::new(r) as Box<dyn Send>));
        }
        // The closer finishes what it was sent while the rest closes here.
        self.closer.tx = None;
        let closer = self.closer.thread.take();
        const CLOSERS: usize = 32;
        let per = parts.len().div_ceil(CLOSERS).max(1);
        std::thread::scope(|scope| {
            if let Some(closer) = closer {
                scope.spawn(move || closer.join());
            }
            while !parts.is_empty() {
                let chunk: Vec<Box<dyn Send>> = parts.drain(..per.min(parts.len())).collect();
                // A thread that cannot start closes nothing in parallel: its chunk closes here.
                if let Err(e) =
                    std::thread::Builder::new().name("perf-close".into()).spawn_scoped(scope, move || drop(chunk))
                {
                    drop(e);
                }
            }
        });
    }
}

/// Whether `options` are permitted: the level and our capabilities, then one real
/// `perf_event_open` on ourselves to catch seccomp and containers.
fn check(options: &PerfOptions) -> Result<Access, PerfError> {
    let access = Access::detect()?;
    if options.ticks {
        access.tracepoints(Missing::Tracepoints)?;
    }
    if options.off_cpu {
        access.off_cpu()?;
    }
    let mut probe = Builder::new(Software::CPU_CLOCK);
    probe.exclude_kernel(!(options.kernel && access.kernel()));
    match probe.build() {
        Ok(_) => Ok(access),
        Err(e) if is_refusal(&e) || e.raw_os_error() == Some(libc::ENOSYS) => Err(access.refused(e)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(PerfError::Unsupported),
        Err(source) => Err(PerfError::Open { what: "cpu-clock", tid: std::process::id(), source }),
    }
}

/// The thread ids of a process; `None` when it is gone.
fn tasks(pid: u32) -> Option<BTreeSet<u32>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// A failure to open a thread's events, as the user's problem it is.
fn open_error(pid: u32, tid: u32, e: OpenError) -> PerfError {
    match e {
        OpenError { source, mmap: true, .. } if is_refusal(&source) => PerfError::LockedMemory { source },
        // Our own check passed, so a refusal is about this process: another user's, or not traceable.
        OpenError { source, .. } if is_refusal(&source) => PerfError::ProcessDenied { pid, source },
        OpenError { what, source, .. } => PerfError::Open { what, tid, source },
    }
}

/// Marks which threads of `pid` are a pool's workers (their futex parks are waits): named apart
/// from the process and as one of its loops (a thread that waited for events).
fn mark_workers(pid: u32, threads: &mut BTreeMap<u32, Thread>) {
    let process = threads.get(&pid).and_then(Thread::name).map(str::to_string);
    let loops: BTreeSet<String> =
        threads.values().filter(|t| t.loop_id().is_some()).filter_map(|t| t.name().map(str::to_string)).collect();
    for (&tid, thread) in threads.iter_mut() {
        let worker = tid != pid && thread.name().is_some_and(|n| process.as_deref() != Some(n) && loops.contains(n));
        thread.set_worker(worker);
    }
}
