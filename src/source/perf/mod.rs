//! The perf source: stacks of a process that runs without the agent, from `perf_event_open`.
//!
//! - **On-CPU**: a `cpu-clock` sampler per thread at [`PerfOptions::rate_hz`], frame-pointer
//!   callchains; each [`Sample`](crate::event::Sample) weighs its period (ns).
//! - **Off-CPU**: the `sched:sched_switch` tracepoint per thread gives the stack when the thread
//!   leaves the CPU to wait; its switch-in record (`attr.context_switch`) gives the time it comes
//!   back. One `PerfOffCpu` sample is emitted *when the thread is back*, at the switch-out time,
//!   weighing the whole wait. A wait still going on at [`PerfSource::poll`] is held until it
//!   ends (and dropped if the thread exits first): a stall spent sleeping shows up when it ends.
//! - **Threads**: events are per thread, without `inherit` (the kernel refuses to `mmap` an
//!   inherited per-thread event), so every poll rescans `/proc/PID/task`: a thread started after
//!   [`PerfSource::add_process`] is sampled from the next poll on, and an exited one is drained and
//!   closed.
//!
//! All times are `CLOCK_MONOTONIC` (`attr.clockid`), the clock of [`crate::source::now_ns`].

mod error;
mod sys;
mod thread;
mod tracefs;

#[cfg(test)]
mod tests;

pub use error::{Missing, PerfError, PARANOID_PATH};

use crate::event::Event;
use error::{is_refusal, Access};
use perf_event::events::Software;
use perf_event::Builder;
use std::collections::{BTreeMap, BTreeSet};
use thread::{OpenError, Setup, Thread};
use tracefs::SchedSwitch;

/// What the perf source samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfOptions {
    /// On-CPU samples per second of CPU time, per thread (default 997).
    pub rate_hz: u64,
    /// Off-CPU stacks from `sched_switch` (default true; needs CAP_PERFMON and tracefs).
    pub off_cpu: bool,
    /// Kernel frames in callchains, when permitted (default true).
    pub kernel: bool,
}

impl Default for PerfOptions {
    fn default() -> Self {
        PerfOptions { rate_hz: 997, off_cpu: true, kernel: true }
    }
}

/// One observed process and its threads.
#[derive(Default)]
struct Process {
    threads: BTreeMap<u32, Thread>,
    /// Threads whose events would not open; not retried.
    failed: BTreeSet<u32>,
}

/// Samples the threads of processes with perf events.
pub struct PerfSource {
    setup: Setup,
    processes: BTreeMap<u32, Process>,
    lost: u64,
}

impl PerfSource {
    /// Checks permissions and finds the tracepoint (mounting tracefs when root and missing).
    pub fn new(options: PerfOptions) -> Result<Self, PerfError> {
        let access = check(&options)?;
        let sched_switch = if options.off_cpu { Some(SchedSwitch::open(access.sys_admin)?) } else { None };
        let setup = Setup { rate_hz: options.rate_hz.max(1), kernel: options.kernel && access.kernel(), sched_switch };
        Ok(PerfSource { setup, processes: BTreeMap::new(), lost: 0 })
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
        let mut process = Process::default();
        for tid in tids {
            match Thread::open(pid, tid, &self.setup) {
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
        self.processes.insert(pid, process);
        Ok(())
    }

    /// Drains every ring into `out`, opens threads started since the last poll and closes
    /// exited ones (after draining them). Never blocks.
    pub fn poll(&mut self, out: &mut Vec<Event>) {
        let mut lost = 0;
        self.processes.retain(|&pid, process| {
            // List first and drain after, so a thread found gone has written its last record.
            let alive = tasks(pid).unwrap_or_default();
            for &tid in &alive {
                if process.threads.contains_key(&tid) || process.failed.contains(&tid) {
                    continue;
                }
                match Thread::open(pid, tid, &self.setup) {
                    Ok(thread) => {
                        process.threads.insert(tid, thread);
                    }
                    Err(e) if e.source.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(_) => {
                        process.failed.insert(tid);
                    }
                }
            }
            for thread in process.threads.values_mut() {
                lost += thread.drain(out);
            }
            process.threads.retain(|tid, _| alive.contains(tid));
            process.failed.retain(|tid| alive.contains(tid));
            !alive.is_empty()
        });
        if lost > 0 {
            self.lost += lost;
            out.push(Event::Dropped { count: lost });
        }
    }

    /// Records the kernel could not write because a ring was full (`PERF_RECORD_LOST`), so far:
    /// samples and, with off-CPU stacks on, switch records (three per wait).
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

/// Whether `options` are permitted: the level and our capabilities, then one real
/// `perf_event_open` on ourselves to catch seccomp and containers.
fn check(options: &PerfOptions) -> Result<Access, PerfError> {
    let access = Access::detect()?;
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
