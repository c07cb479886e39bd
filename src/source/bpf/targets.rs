//! The processes and threads observed: adding a process (its name in the target map, the slots
//! of its threads found waiting, or parked as a pool's workers, when looptop attaches) and
//! attaching the futex hooks once a pool is likely.

use super::layout::{self, phase, Slot, SLOTS};
use super::runtime::ProcessRuntime;
use super::{hooks, BpfSource, Process};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

impl BpfSource {
    /// Observes `pid` from now on: the threads found inside a wait call are loops at once and
    /// the main thread is taken to be in a tick (a stall in progress is not missed).
    pub fn add_process(&mut self, pid: u32) -> Result<(), crate::source::perf::PerfError> {
        use crate::source::perf::PerfError;
        if self.processes.contains_key(&pid) {
            return Ok(());
        }
        let tids = tasks(pid).ok_or(PerfError::NoSuchProcess(pid))?;
        let now = crate::source::now_ns();
        let name = comm_of(pid, pid);
        let waiting: BTreeMap<u32, bool> =
            tids.iter().map(|&tid| (tid, crate::source::waits::in_wait_call(pid, tid))).collect();
        // A pool's workers (named apart from the process, as a waiting loop is): the parked ones
        // are waiting too, so that their first tick shows.
        let loop_names: Vec<[u8; 16]> =
            waiting.iter().filter(|(_, &w)| w).map(|(&tid, _)| comm_of(pid, tid)).filter(|c| *c != name).collect();
        for (&tid, &waiting) in &waiting {
            let comm = comm_of(pid, tid);
            let worker = !loop_names.is_empty()
                && comm != name
                && loop_names.contains(&comm)
                && crate::source::waits::parked(pid, tid);
            if tid == pid || waiting || worker {
                let (p, since, loop_ns) =
                    if waiting || worker { (phase::WAITING, now, now) } else { (phase::BUSY, now, 0) };
                let pool = if worker { layout::POOL_WORKER } else { 0 };
                self.seed(Slot { tgid: pid, tid, phase: p, since, loop_ns, comm, pool, ..Slot::default() });
            }
        }
        if !loop_names.is_empty() {
            self.attach_parks(pid);
        }
        self.targets.insert(pid, name, 0).map_err(|e| PerfError::Open {
            what: "the BPF target map",
            tid: pid,
            source: std::io::Error::other(e),
        })?;
        let mut process = Process { runtime: None, exit: crate::target::proc::ExitWatch::new(pid), name };
        if self.options.ticks {
            self.pending.push(crate::source::attached_process(pid, now));
            if self.uprobes {
                process.runtime = ProcessRuntime::attach(
                    &mut self.ebpf,
                    &mut self.attached,
                    &mut self.pool_maps,
                    pid,
                    self.options.pool,
                    &mut self.pending,
                    &mut self.notes,
                );
            }
        }
        self.processes.insert(pid, process);
        Ok(())
    }

    /// Takes a slot for a thread of a process not yet in `targets` (so its programs do not run
    /// for it yet and the slot is ours to fill).
    fn seed(&mut self, slot: Slot) {
        let i = self.counters.u64_at(0).fetch_add(1, Ordering::AcqRel) as usize;
        if i >= SLOTS {
            self.counters.u64_at(1).fetch_add(1, Ordering::AcqRel);
            return;
        }
        let tid = slot.tid;
        // SAFETY: slot i was just taken; no program writes it before the insert below.
        unsafe { std::ptr::write_volatile(self.slots.at(i, std::mem::size_of::<Slot>()) as *mut Slot, slot) };
        let _ = self.slot_of.insert(tid, i as u32, 0);
    }

    /// Attaches the futex programs once (a loop of `pid` is named apart from it: a pool is
    /// likely); says so when the kernel refuses.
    pub(super) fn attach_parks(&mut self, pid: u32) {
        if std::mem::replace(&mut self.parks, true) {
            return;
        }
        if let Err(e) = hooks::attach_parks(&mut self.ebpf) {
            self.notes.push(format!(
                "the workers of process {pid}'s pool are timed without their parks on a futex, which read as busy: \
                 {e}"
            ));
        }
    }
}

/// The thread ids of a process; `None` when it is gone.
fn tasks(pid: u32) -> Option<Vec<u32>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// The name of thread `tid` of `pid` as the kernel keeps it (NUL-padded, as the BPF side reads it).
fn comm_of(pid: u32, tid: u32) -> [u8; 16] {
    let mut comm = [0u8; 16];
    let name = crate::target::proc::thread_name(pid, tid).unwrap_or_default();
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name.as_bytes()[..n]);
    comm
}
