//! The BPF source: what the perf source does, done in the kernel (`looptop.bpf.c`), so that
//! attaching costs the target almost nothing.
//!
//! - **Ticks**: programs on the wait calls' enter/exit tracepoints keep each loop thread's tick
//!   state, totals and histogram in a slot of an array map that looptop maps and reads every
//!   poll without a system call (the start of a tick under way included, so a stall in progress
//!   shows live). Only stalls cross to looptop, through a ring buffer.
//! - **Stacks**: a `cpu-clock` program on every CPU takes the target's stacks, sends each new
//!   one once (`stacks.rs`) and counts them by hash per thread in the kernel; looptop reads and
//!   clears the counts every
//!   [`COUNTS_EVERY`]. A sample taken while its thread's tick is already older than the stall
//!   floor goes to the ring buffer with its time instead, so every stall keeps its own stacks.
//! - **Off-CPU**, for loop threads inside a tick only (never inside their wait call):
//!   `sched_switch` takes the stack at switch-out and the time away at switch-in; in a stall it
//!   is sent, else counted.
//!
//! The program is compiled from `looptop.bpf.c` by `build.sh` and committed (`looptop.bpf.o`),
//! so building looptop needs no clang; a test checks that the object matches its source.

mod batch;
mod error;
mod hooks;
mod layout;
mod runtime;
mod shared;
mod stacks;
mod targets;

pub use error::BpfError;
use error::{chain, refused};

use crate::event::{Event, LoopId, LoopTotals, OffCpu, Sample, SampleOrigin};
use crate::source::perf::PerfOptions;
use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::perf_event::{perf_sw_ids, PerfEventScope, PerfTypeId, SamplePolicy};
use aya::programs::{PerfEvent, TracePoint};
use layout::{kind, phase, Record, Slot, StackKey, SLOTS};
use runtime::{PoolMaps, ProcessRuntime, Uprobes};
use shared::Shared;
use stacks::Stacks;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

/// The compiled program (`build.sh` rebuilds it from `looptop.bpf.c`).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("looptop.bpf.o");

/// Index of the `lost` counter of stacks `new_stacks` had no room for (see `looptop.bpf.c`).
const LOST_STACK: usize = 1;

/// How often the in-kernel stack counts are read and cleared (ns): a batch read, not needed
/// every poll (a stall's samples come through the ring).
const COUNTS_EVERY: u64 = 250_000_000;
/// How often gone processes (/proc), the pools and the lost counts are read (ns).
const SLOW_EVERY: u64 = 100_000_000;

/// What looptop last said about a slot's loop.
struct LoopView {
    id: LoopId,
    ended: bool,
    /// (ticks, idle, busy since) last reported.
    last: (u64, u64, u64),
}

/// A process observed.
struct Process {
    runtime: Option<ProcessRuntime>,
    exit: crate::target::proc::ExitWatch,
    /// Its name (its main thread's): a loop named otherwise may be a pool's worker.
    name: [u8; 16],
}

/// Ticks, stacks and off-CPU waits from the kernel, for the processes added.
pub struct BpfSource {
    ebpf: aya::Ebpf,
    /// The uprobe programs loaded (attach mode; else the pool and GC are not probed).
    uprobes: bool,
    attached: Uprobes,
    pool_maps: PoolMaps,
    /// Observed processes, each with its name (futex parks: `hooks::attach_parks`).
    targets: BpfHashMap<MapData, u32, [u8; 16]>,
    slot_of: BpfHashMap<MapData, u32, u32>,
    counters: Shared,
    slots: Shared,
    hist: Shared,
    records: RingBuf<MapData>,
    counts: BpfHashMap<MapData, StackKey, u64>,
    stacks: Stacks,
    lost_map: Array<MapData, u64>,
    options: PerfOptions,
    period_ns: u64,
    processes: BTreeMap<u32, Process>,
    loops: HashMap<usize, LoopView>,
    counts_batch: batch::Batch<StackKey, u64>,
    counts_at: u64,
    /// When the slow work (gone processes, pools, lost counts) was last done (ns).
    slow_at: u64,
    /// The kernel side's `lost` counters as last read (ring, stack, counts).
    lost_by: [u64; 3],
    lost: u64,
    pending: Vec<Event>,
    notes: Vec<String>,
    disabled: bool,
    /// The futex programs are attached (`hooks::attach_parks`): at the first loop named apart
    /// from its process, since they run for every futex call on the machine (~300 ns each).
    parks: bool,
}

impl BpfSource {
    /// Loads and attaches the programs `options` need. Fails when BPF is refused, for the
    /// caller to fall back on the perf source.
    pub fn new(options: PerfOptions) -> Result<BpfSource, BpfError> {
        if std::env::var_os("LOOPTOP_NO_BPF").is_some_and(|v| !v.is_empty() && v != "0") {
            return Err(BpfError::Off);
        }
        let floor = options.stall_floor_ns;
        let kernel: u32 = options.kernel.into();
        let off_cpu: u32 = (options.off_cpu && options.rate_hz > 0).into();
        let copies: u32 = crate::source::stack_copies().into();
        let mut ebpf = aya::EbpfLoader::new()
            .set_global("stall_floor_ns", &floor, true)
            .set_global("kernel_stacks", &kernel, true)
            .set_global("off_cpu_enabled", &off_cpu, true)
            .set_global("stack_copies", &copies, true)
            .load(OBJECT)
            .map_err(|e| refused("loading the program")(chain(&e)))?;
        hooks::attach_wait_calls(&mut ebpf)?;
        // Loaded now (a program loaded after the maps are taken finds none), attached when needed.
        hooks::load_parks(&mut ebpf)?;
        // Exact exit times (else a process is found gone at the next poll).
        if options.ticks {
            let prog: Option<&mut TracePoint> = ebpf.program_mut("on_exit").and_then(|p| p.try_into().ok());
            if let Some(prog) = prog {
                if prog.load().is_ok() {
                    let _ = prog.attach("sched", "sched_process_exit");
                }
            }
        }
        if options.rate_hz > 0 {
            let prog: &mut PerfEvent = ebpf
                .program_mut("on_cpu")
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| refused("the program")("on_cpu is missing".into()))?;
            prog.load().map_err(|e| refused("loading the sampler")(chain(&e)))?;
            let period = 1_000_000_000 / options.rate_hz.max(1);
            let cpus = crate::source::perf::sys::online_cpus().map_err(|e| refused("listing CPUs")(chain(&e)))?;
            for cpu in cpus {
                prog.attach(
                    PerfTypeId::Software,
                    perf_sw_ids::PERF_COUNT_SW_CPU_CLOCK as u64,
                    PerfEventScope::AllProcessesOneCpu { cpu: cpu as u32 },
                    SamplePolicy::Period(period),
                    false,
                )
                .map_err(|e| refused("attaching the sampler")(chain(&e)))?;
            }
            if off_cpu == 1 {
                hooks::attach_switch(&mut ebpf)?;
            }
        }
        // The pool and GC uprobes, for a process without the agent (its probe does that work).
        let mut notes = Vec::new();
        let mut uprobes = options.ticks;
        for name in runtime::PROGRAMS.iter().filter(|_| options.ticks) {
            let loaded =
                ebpf.program_mut(name).and_then(|p| <&mut aya::programs::UProbe>::try_from(p).ok()).map(|p| p.load());
            if let Some(Err(e)) = loaded {
                notes.push(format!(
                    "the thread pool and GC pauses are not probed: the kernel refused uprobes ({})",
                    chain(&e)
                ));
                uprobes = false;
                break;
            }
        }
        let take = |ebpf: &mut aya::Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| refused("the program's maps")(format!("{name} is missing")))
        };
        let map_err = |e: aya::maps::MapError| refused("a map")(chain(&e));
        let data = |m: aya::maps::Map| -> Result<MapData, BpfError> {
            use aya::maps::Map;
            match m {
                Map::Array(d) => Ok(d),
                other => Err(refused("a map")(format!("{other:?} is not an array"))),
            }
        };
        let counters = Shared::map(&data(take(&mut ebpf, "counters")?)?, 24)?;
        let slots = Shared::map(&data(take(&mut ebpf, "slots")?)?, SLOTS * std::mem::size_of::<Slot>())?;
        let hist = Shared::map(&data(take(&mut ebpf, "hist")?)?, SLOTS * looptop_abi::HIST_BUCKETS * 8)?;
        Ok(BpfSource {
            targets: BpfHashMap::try_from(take(&mut ebpf, "targets")?).map_err(map_err)?,
            slot_of: BpfHashMap::try_from(take(&mut ebpf, "slot_of")?).map_err(map_err)?,
            records: RingBuf::try_from(take(&mut ebpf, "records")?).map_err(map_err)?,
            counts: BpfHashMap::try_from(take(&mut ebpf, "counts")?).map_err(map_err)?,
            stacks: Stacks::new(
                BpfHashMap::try_from(take(&mut ebpf, "new_stacks")?).map_err(map_err)?,
                BpfHashMap::try_from(take(&mut ebpf, "known")?).map_err(map_err)?,
            ),
            lost_map: Array::try_from(take(&mut ebpf, "lost")?).map_err(map_err)?,
            pool_maps: PoolMaps {
                pools: BpfHashMap::try_from(take(&mut ebpf, "pools")?).map_err(map_err)?,
                queued_max: BpfHashMap::try_from(take(&mut ebpf, "pool_queued_max")?).map_err(map_err)?,
            },
            uprobes,
            attached: Uprobes::default(),
            ebpf,
            counters,
            slots,
            hist,
            options,
            period_ns: 1_000_000_000 / options.rate_hz.max(1),
            processes: BTreeMap::new(),
            loops: HashMap::new(),
            counts_batch: batch::Batch::new(1024, 0),
            counts_at: 0,
            slow_at: 0,
            lost_by: [0; 3],
            lost: 0,
            pending: Vec::new(),
            notes,
            disabled: false,
            parks: false,
        })
    }

    /// Reads what happened since the last poll into `out`. `last`: the final read, which also
    /// takes the stack counts however recent the previous read.
    pub fn poll(&mut self, out: &mut Vec<Event>, last: bool) {
        out.append(&mut self.pending);
        let now = crate::source::now_ns();
        if self.options.rate_hz > 0 {
            let sent = self.counters.u64_at(2).load(Ordering::Acquire);
            self.stacks.read_new(sent, now);
        }
        if self.options.ticks {
            self.read_slots(now, out);
        }
        self.read_records(out);
        if self.options.rate_hz > 0 && (last || now.saturating_sub(self.counts_at) >= COUNTS_EVERY) {
            self.read_counts(now, out);
            self.counts_at = now;
        }
        // What takes system calls, less often: gone processes (/proc), the pools and the lost
        // counts. A loop thread's exit is stamped in its slot by the kernel side, so its open
        // tick ends at the exit whenever it is found; one that exited is looked for at once.
        let slow = last || now.saturating_sub(self.slow_at) >= SLOW_EVERY;
        if slow {
            self.slow_at = now;
        }
        if slow || self.a_loop_exited() {
            self.end_gone(now, out);
        }
        if !slow {
            return;
        }
        for process in self.processes.values_mut() {
            if let Some(runtime) = &mut process.runtime {
                runtime.poll(&mut self.pool_maps, now, out);
            }
        }
        let unslotted = self.unslotted();
        if unslotted > 0 && !self.notes.iter().any(|n| n.contains("found no slot")) {
            self.notes.push(format!(
                "{unslotted} threads that waited found no slot among the {SLOTS} the kernel side keeps: their ticks \
                 are not timed"
            ));
        }
        // Records the ring had no room for and samples the counts had no room for are lost;
        // a sample whose stack found no room in `new_stacks` still counts (without it).
        for (i, seen) in self.lost_by.iter_mut().enumerate() {
            let now = self.lost_map.get(&(i as u32), 0).unwrap_or(*seen);
            let more = now.saturating_sub(*seen);
            *seen = now;
            if more > 0 && i != LOST_STACK {
                self.lost += more;
                out.push(Event::Dropped { count: more });
            }
        }
    }

    /// Slots in use, at most [`SLOTS`].
    fn used(&self) -> usize {
        (self.counters.u64_at(0).load(Ordering::Acquire) as usize).min(SLOTS)
    }

    /// Announces slot `i`'s loop when it has become one; its id.
    fn announce(&mut self, i: usize, s: &Slot, out: &mut Vec<Event>) -> Option<LoopId> {
        if let Some(v) = self.loops.get(&i) {
            if v.id.tid == s.tid && v.id.pid == s.tgid {
                return Some(v.id);
            }
        }
        if s.loop_ns == 0 || !self.processes.contains_key(&s.tgid) {
            return None;
        }
        let id = LoopId { pid: s.tgid, tid: s.tid, since_ns: s.loop_ns };
        if self.processes.get(&s.tgid).is_some_and(|p| p.name != s.comm) {
            self.attach_parks(s.tgid);
        }
        let end = s.comm.iter().position(|&b| b == 0).unwrap_or(16);
        let name = String::from_utf8_lossy(&s.comm[..end]).into_owned();
        out.push(Event::LoopStarted { id, name, start_ns: s.loop_ns });
        self.loops.insert(i, LoopView { id, ended: false, last: (u64::MAX, 0, 0) });
        Some(id)
    }

    fn read_slots(&mut self, now: u64, out: &mut Vec<Event>) {
        for i in 0..self.used() {
            let s = self.slots.slot(i);
            let Some(id) = self.announce(i, &s, out) else { continue };
            let busy_since = if s.phase == phase::BUSY { s.since } else { 0 };
            let view = self.loops.get_mut(&i).expect("announced");
            if view.ended {
                continue;
            }
            let key = (s.ticks, s.idle_ns, busy_since);
            if key == view.last && busy_since == 0 {
                continue;
            }
            view.last = key;
            let totals = LoopTotals {
                at_ns: now,
                ticks: s.ticks,
                busy_ns: s.busy_ns,
                idle_ns: s.idle_ns,
                max_busy_ns: s.max_busy_ns,
                busy_since_ns: busy_since,
                hist: self.hist.hist(i),
            };
            out.push(Event::Totals { id, totals });
        }
    }

    fn read_records(&mut self, out: &mut Vec<Event>) {
        let mut records = Vec::new();
        while let Some(item) = self.records.next() {
            records.extend(Record::read(&item).map(|r| (r, Record::stack_copy(&item))));
        }
        for (r, copy) in records {
            if !self.processes.contains_key(&r.tgid) {
                continue;
            }
            match r.kind {
                kind::STALL if self.options.ticks => {
                    let Some(id) = self.loop_of(r.tid, out) else { continue };
                    out.push(Event::Stall { id, start_ns: r.t, duration_ns: r.value });
                }
                kind::GC => out.push(Event::Gc {
                    pid: r.tgid,
                    thread: r.tid,
                    start_ns: r.t,
                    duration_ns: r.value,
                    kind: crate::event::GcKind::from_code(r.pad.into()),
                }),
                kind::SAMPLE | kind::OFF_CPU => {
                    let off = r.kind == kind::OFF_CPU;
                    let ips = self.ips(r.kernel, r.user, r.t);
                    out.push(Event::Sample(Sample {
                        pid: r.tgid,
                        tid: r.tid,
                        t_ns: r.t,
                        origin: if off { SampleOrigin::PerfOffCpu } else { SampleOrigin::PerfCpu },
                        weight_ns: if off { r.value } else { self.period_ns },
                        tick_ns: r.tick,
                        off_cpu: off.then_some(OffCpu { syscall: None, wchan: None }),
                        ips,
                        count: 1,
                        js: Vec::new(),
                        py: Vec::new(),
                        stack: copy.map(Box::new),
                    }));
                }
                _ => {}
            }
        }
    }

    /// The loop of thread `tid`, announcing it first if this poll has not yet.
    fn loop_of(&mut self, tid: u32, out: &mut Vec<Event>) -> Option<LoopId> {
        let i = self.slot_of.get(&tid, 0).ok()? as usize;
        if i >= SLOTS {
            return None;
        }
        let s = self.slots.slot(i);
        self.announce(i, &s, out)
    }

    /// The frames of a stack pair, kernel first, innermost first.
    /// A sample's frames: kernel then user, each by hash (0: none).
    fn ips(&mut self, kernel: u64, user: u64, now: u64) -> Vec<u64> {
        let mut ips = Vec::new();
        self.stacks.extend(kernel, now, &mut ips);
        self.stacks.extend(user, now, &mut ips);
        ips
    }

    fn read_counts(&mut self, now: u64, out: &mut Vec<Event>) {
        let mut taken = Vec::new();
        self.counts_batch.take_all(&mut self.counts, |k, v| taken.push((*k, *v)));
        let mut samples = Vec::new();
        for (key, value) in taken {
            if value == 0 || !self.processes.contains_key(&key.tgid) {
                continue;
            }
            let off = key.off_cpu != 0;
            let ips = self.ips(key.kernel, key.user, now);
            samples.push(Sample {
                pid: key.tgid,
                tid: key.tid,
                t_ns: now,
                origin: SampleOrigin::KernelCount,
                weight_ns: if off { value } else { value.saturating_mul(self.period_ns) },
                tick_ns: 0,
                off_cpu: off.then_some(OffCpu { syscall: None, wchan: None }),
                ips,
                count: if off { 1 } else { value },
                js: Vec::new(),
                py: Vec::new(),
                stack: None,
            });
        }
        out.extend(samples.into_iter().map(Event::Sample));
    }

    /// Whether the kernel side stamped the exit of a loop thread not yet ended.
    fn a_loop_exited(&self) -> bool {
        self.loops.iter().any(|(&i, v)| !v.ended && exit_stamp(&self.slots, i, v).is_some())
    }

    /// Ends the loops of threads and processes that are gone.
    fn end_gone(&mut self, now: u64, out: &mut Vec<Event>) {
        let gone: Vec<u32> = self.processes.iter_mut().filter_map(|(&pid, p)| p.exit.exited().then_some(pid)).collect();
        // When each loop's thread exited, as the kernel side stamped it (else now).
        let slots = &self.slots;
        let exited = |i: usize, view: &LoopView| exit_stamp(slots, i, view).filter(|&t| t <= now);
        for pid in &gone {
            if let Some(r) = self.processes.remove(pid).and_then(|p| p.runtime) {
                r.detach(&mut self.ebpf, &mut self.attached, &mut self.pool_maps);
            }
            let _ = self.targets.remove(pid);
            if self.options.ticks {
                let at_ns = self
                    .loops
                    .iter()
                    .filter(|(_, v)| v.id.pid == *pid && v.id.tid == *pid)
                    .find_map(|(&i, v)| exited(i, v))
                    .unwrap_or(now);
                out.push(Event::ProcessExited { pid: *pid, at_ns, clean: false });
            }
        }
        for (&i, view) in self.loops.iter_mut().filter(|(_, v)| !v.ended) {
            if gone.contains(&view.id.pid) {
                view.ended = true;
                continue;
            }
            let path = format!("/proc/{}/task/{}", view.id.pid, view.id.tid);
            if !std::path::Path::new(&path).exists() {
                view.ended = true;
                if self.options.ticks {
                    let at_ns = exited(i, view).unwrap_or(now);
                    out.push(Event::LoopEnded { id: view.id, at_ns, clean: true });
                }
            }
        }
    }

    /// Stops observing: the programs stay loaded until drop but skip every process.
    pub fn disable(&mut self) {
        if self.disabled {
            return;
        }
        self.disabled = true;
        for pid in self.processes.keys().copied().collect::<Vec<_>>() {
            let _ = self.targets.remove(&pid);
        }
    }

    /// What could not be observed and why, one sentence each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Records and samples lost so far (the ring buffer or the counts full).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// What was lost, in one sentence, when anything was.
    pub fn lost_note(&self) -> Option<String> {
        let [ring, stacks, counts] = self.lost_by;
        lost_sentence([ring, stacks + self.stacks.unknown, counts])
    }

    /// Loops that found no slot (more than [`SLOTS`] threads waited).
    pub fn unslotted(&self) -> u64 {
        self.counters.u64_at(1).load(Ordering::Relaxed)
    }
}

/// When slot `i`'s thread — the thread of `view`, not a later one in the same slot — exited, as
/// the kernel side stamped it.
fn exit_stamp(slots: &Shared, i: usize, view: &LoopView) -> Option<u64> {
    let s = slots.slot(i);
    (s.tid == view.id.tid && s.exited_ns != 0).then_some(s.exited_ns)
}

/// The kernel side's `lost` counters (ring, stack, counts) in one sentence, when any is set.
fn lost_sentence(lost_by: [u64; 3]) -> Option<String> {
    let [ring, stacks, counts] = lost_by;
    let mut parts = Vec::new();
    if ring > 0 {
        parts.push(format!("{ring} records found the ring buffer full (looptop fell behind)"));
    }
    if counts > 0 {
        parts.push(format!("{counts} samples found the stack counts full"));
    }
    if stacks > 0 {
        parts.push(format!(
            "{stacks} samples lost a stack (the kernel side's table of new stacks was full, or looptop had \
             forgotten it); they are counted without it"
        ));
    }
    (!parts.is_empty()).then(|| format!("BPF: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::lost_sentence;

    #[test]
    fn what_was_lost_is_said_by_kind() {
        assert_eq!(lost_sentence([0, 0, 0]), None);
        let s = lost_sentence([2, 21, 0]).unwrap();
        assert!(s.starts_with("BPF: 2 records found the ring buffer full"), "{s}");
        assert!(s.contains("; 21 samples lost a stack") && !s.contains("counts full"), "{s}");
        assert_eq!(lost_sentence([0, 0, 5]).unwrap(), "BPF: 5 samples found the stack counts full");
    }
}
