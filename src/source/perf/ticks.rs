//! Ticks without the agent: the `syscalls:sys_enter_*` / `sys_exit_*` tracepoints of the wait
//! calls ([`crate::source::waits`]) on each thread, turned into the same loops, totals and stalls
//! the agent's segment gives.
//!
//! A tick is the time from a wait call's exit to the next wait call's entry on the same thread
//! (DESIGN.md); [`TickClock`] is that definition as a state machine over the records, kept apart
//! from perf so that it is tested on plain numbers.

use super::error::PerfError;
use super::sys;
use super::tracefs;
use crate::event::{Event, LoopId, LoopTotals};
use crate::source::waits::WAIT_CALLS;
use perf_event::events::Tracepoint;
use perf_event::{Builder, Clock, Counter, SampleFlag, Sampler};
use std::io;

/// Stall-long ticks a thread's clock remembers for the samples read after they ended.
const LONG_TICKS_KEPT: usize = 8;

/// Ring size for a thread's wait records: 32 bytes a record, two a tick, so 64 KiB holds about
/// 1000 ticks: a loop spinning at 50 000 ticks/s fills it in 20 ms, one poll.
const RING_BYTES: usize = 512 * 1024;

/// What a wait tracepoint's record means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitRecord {
    /// A wait call entered.
    Enter,
    /// A wait call entered, when its first argument is not 0 (the kernel filters the others).
    EnterWithFds,
    /// A wait call returned.
    Exit,
    /// A call returned that was a wait only if its entry passed the filter: counted when the
    /// thread is waiting, ignored inside a tick (`select(0, …)`, a sleep).
    ExitIfWaiting,
    /// A futex wait without a timeout entered (the kernel filters the others): a wait when the
    /// thread is a pool's worker ([`TickClock::set_worker`]), else part of its tick.
    Park,
}

/// The kernel's filter for [`WaitRecord::Park`]: `FUTEX_WAIT` or `FUTEX_WAIT_BITSET`, private or
/// not, either clock, no timeout (the agent's and the BPF source's rule, as ftrace writes it).
const PARK_FILTER: &str = "utime == 0 && (op == 0 || op == 128 || op == 256 || op == 384 || op == 9 || op == 137 \
                           || op == 265 || op == 393)";

/// The tracepoint ids of the wait calls on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTracepoints {
    /// (tracepoint id, its meaning, for an entry its timeout's argument in ms), for each wait
    /// call the kernel has.
    pub ids: Vec<(u64, WaitRecord, Option<usize>)>,
    /// The same for futex waits, a pool worker's park (empty on a kernel without them).
    pub parks: Vec<(u64, WaitRecord, Option<usize>)>,
}

impl WaitTracepoints {
    /// Reads the ids from tracefs (mounting it when missing and `mount` is allowed). The
    /// per-call `syscalls:sys_enter_*`/`sys_exit_*`, not `raw_syscalls` with a filter: those
    /// build a record for every system call of the thread before the filter drops it, these
    /// cost a bit test for the calls that are not ours.
    pub fn open(mount: bool) -> Result<WaitTracepoints, PerfError> {
        let root = tracefs::root(mount)?;
        let id_of = |dir: std::path::PathBuf| -> Result<Option<u64>, PerfError> {
            // An older kernel without epoll_pwait2 simply has no such tracepoint.
            let Ok(text) = std::fs::read_to_string(dir.join("id")) else { return Ok(None) };
            let id = text.trim().parse().map_err(|_| PerfError::Tracepoint {
                path: dir.join("id"),
                reason: format!("'{}' is not a tracepoint id", text.trim()),
            })?;
            Ok(Some(id))
        };
        let mut ids = Vec::new();
        for call in WAIT_CALLS {
            let (enter, exit) = match call.with_fds {
                false => (WaitRecord::Enter, WaitRecord::Exit),
                true => (WaitRecord::EnterWithFds, WaitRecord::ExitIfWaiting),
            };
            for (dir, meaning, timeout_arg) in [("enter", enter, call.timeout_ms_arg), ("exit", exit, None)] {
                let dir = root.join(format!("events/syscalls/sys_{dir}_{}", call.name));
                ids.extend(id_of(dir)?.map(|id| (id, meaning, timeout_arg)));
            }
        }
        if ids.is_empty() {
            return Err(PerfError::NoSyscallTracepoints { path: root.join("events/syscalls") });
        }
        let mut parks = Vec::new();
        for (dir, meaning) in [("enter", WaitRecord::Park), ("exit", WaitRecord::ExitIfWaiting)] {
            parks.extend(id_of(root.join(format!("events/syscalls/sys_{dir}_futex")))?.map(|id| (id, meaning, None)));
        }
        if parks.len() != 2 {
            parks.clear();
        }
        Ok(WaitTracepoints { ids, parks })
    }
}

/// The wait tracepoints of one thread, all writing into one ring.
pub(super) struct WaitEvents {
    ring: Sampler,
    /// The other tracepoints, redirected into `ring` (kept open, and closed with it).
    _others: Vec<Counter>,
    /// Kernel event id → what its records mean, and for an entry the argument that holds its
    /// timeout in ms (for nested waits).
    enters: Vec<(u64, WaitRecord, Option<usize>)>,
}

/// `PERF_REG_X86_SP`: the user stack pointer, the one register the wait records carry.
#[cfg(target_arch = "x86_64")]
const SP_REGS: u64 = 1 << 7;
/// Elsewhere no register is read, and no wait is found nested.
#[cfg(not(target_arch = "x86_64"))]
const SP_REGS: u64 = 0;

/// Where a syscall tracepoint's raw record keeps argument `i` (after the common fields and the
/// call's number: its `format` file).
fn raw_arg(raw: &[u8], i: usize) -> Option<u64> {
    let at = 16 + 8 * i;
    Some(u64::from_ne_bytes(raw.get(at..at + 8)?.try_into().ok()?))
}

impl WaitEvents {
    /// Opens and enables every wait tracepoint on `tid`, and its futex waits when `parks` (a
    /// thread named apart from its process, which may be a pool's worker).
    pub fn open(tid: u32, tracepoints: &WaitTracepoints, parks: bool) -> io::Result<WaitEvents> {
        let build = |id: u64| {
            let mut b = Builder::new(Tracepoint::with_id(id));
            b.observe_pid(tid as i32)
                .any_cpu()
                .sample_period(1)
                .clockid(Clock::MONOTONIC)
                // The stack pointer and the arguments, for nested waits (every event of the ring
                // carries the same fields: the ring is parsed with one layout).
                .sample(
                    SampleFlag::IDENTIFIER
                        | SampleFlag::TID
                        | SampleFlag::TIME
                        | SampleFlag::REGS_USER
                        | SampleFlag::RAW,
                )
                .sample_regs_user(SP_REGS)
                // The tracepoints fire in the kernel.
                .exclude_kernel(false)
                .enabled(false);
            b.build()
        };
        let mut counters = Vec::new();
        let mut enters = Vec::new();
        let parks = if parks { &tracepoints.parks[..] } else { &[] };
        for &(id, meaning, timeout_arg) in tracepoints.ids.iter().chain(parks) {
            let c = build(id)?;
            if meaning == WaitRecord::EnterWithFds {
                sys::set_filter(&c, "n > 0")?;
            }
            if meaning == WaitRecord::Park {
                sys::set_filter(&c, PARK_FILTER)?;
            }
            enters.push((c.id(), meaning, timeout_arg));
            counters.push(c);
        }
        let (ring, others) = sys::one_ring(counters, RING_BYTES)?;
        Ok(WaitEvents { ring, _others: others, enters })
    }

    /// Stops every wait tracepoint of the thread.
    pub fn disable(&mut self) {
        let _ = self.ring.disable();
        self._others.iter_mut().for_each(|c| drop(c.disable()));
    }

    /// Feeds every record in the ring to `clock`; returns the records the kernel lost.
    pub fn drain(&mut self, clock: &mut TickClock, out: &mut Vec<Event>) -> u64 {
        use perf_event::data::Record;
        let mut lost = 0;
        while let Some(record) = self.ring.next_record() {
            match record.parse_record() {
                Ok(Record::Sample(s)) => {
                    let (Some(id), Some(t)) = (s.id(), s.time()) else { continue };
                    let Some(&(_, meaning, timeout_arg)) = self.enters.iter().find(|(i, ..)| *i == id) else {
                        continue;
                    };
                    let sp = s.regs_user().and_then(|r| r.regs.first().copied()).unwrap_or(0);
                    // An int timeout of 0 (a pointer one is not known): the call only checks.
                    let zero = timeout_arg.and_then(|i| raw_arg(s.raw()?, i)).is_some_and(|v| v as u32 == 0);
                    match meaning {
                        WaitRecord::Enter | WaitRecord::EnterWithFds => clock.enter_at(t, sp, zero, out),
                        WaitRecord::Exit => clock.exit(t, out),
                        WaitRecord::ExitIfWaiting => clock.exit_if_waiting(t, out),
                        WaitRecord::Park if clock.worker => clock.enter_at(t, sp, false, out),
                        WaitRecord::Park => {}
                    }
                }
                Ok(Record::Lost(l)) => {
                    lost += l.lost;
                    clock.lost();
                }
                _ => {}
            }
        }
        lost
    }
}

/// Where a thread is in its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not known: no record yet, or records were lost. The next exit starts a tick.
    Unknown,
    /// Inside a wait call since this time.
    Waiting(u64),
    /// Running a tick since this time.
    Busy(u64),
}

/// The tick clock of one thread, from its wait entries and exits: the agent's counters (ticks,
/// busy, idle, histogram, stalls) rebuilt outside the process.
#[derive(Debug, Clone)]
pub struct TickClock {
    pid: u32,
    tid: u32,
    name: String,
    phase: Phase,
    /// The loop, once the thread has waited (or was found waiting).
    id: Option<LoopId>,
    stall_floor_ns: u64,
    totals: LoopTotals,
    changed: bool,
    /// The last completed stall-long ticks (start, end), for the samples read after they ended
    /// (shorter ticks may have followed before the samples' ring is read).
    long_ticks: std::collections::VecDeque<(u64, u64)>,
    /// A pool's worker: its futex parks are waits ([`WaitRecord::Park`]).
    worker: bool,
    /// The user stack pointer at the wait that began the current tick, and at the wait under
    /// way (0: not known), for nested waits.
    tick_sp: u64,
    wait_sp: u64,
    /// The wait under way is nested: its exit starts no tick.
    nested: bool,
}

impl TickClock {
    /// A thread seen from `at_ns` on. `waiting`: found inside a wait call when we attached (a loop
    /// from that moment). `busy`: a tick is taken to be under way since `at_ns` (the main thread
    /// of a process we attach to, so that a stall in progress is not missed).
    pub fn new(pid: u32, tid: u32, name: String, at_ns: u64, stall_floor_ns: u64) -> TickClock {
        TickClock {
            pid,
            tid,
            name,
            phase: Phase::Unknown,
            id: None,
            stall_floor_ns,
            totals: LoopTotals {
                at_ns,
                ticks: 0,
                busy_ns: 0,
                idle_ns: 0,
                max_busy_ns: 0,
                busy_since_ns: 0,
                hist: vec![0; looptop_abi::HIST_BUCKETS].into_boxed_slice(),
            },
            changed: false,
            long_ticks: std::collections::VecDeque::new(),
            worker: false,
            tick_sp: 0,
            wait_sp: 0,
            nested: false,
        }
    }

    /// The thread was found inside a wait call at `at_ns`: a loop from then on.
    pub fn found_waiting(&mut self, at_ns: u64, out: &mut Vec<Event>) {
        self.start_loop(at_ns, out);
        self.phase = Phase::Waiting(at_ns);
    }

    /// The thread is taken to be running a tick since `at_ns` (until a wait entry proves or an
    /// exit disproves it).
    pub fn assume_busy(&mut self, at_ns: u64) {
        if self.phase == Phase::Unknown {
            self.phase = Phase::Busy(at_ns);
        }
    }

    /// The loop, once there is one.
    pub fn id(&self) -> Option<LoopId> {
        self.id
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the thread is a pool's worker, whose futex parks are waits: named apart from its
    /// process and as a thread of it that waits for events (the agent's pool.rs).
    pub fn set_worker(&mut self, worker: bool) {
        self.worker = worker;
    }

    fn start_loop(&mut self, at_ns: u64, out: &mut Vec<Event>) {
        if self.id.is_none() {
            let id = LoopId { pid: self.pid, tid: self.tid, since_ns: at_ns };
            self.id = Some(id);
            out.push(Event::LoopStarted { id, name: self.name.clone(), start_ns: at_ns });
            self.changed = true;
        }
    }

    /// A wait call entered at `t` with the user stack pointer `sp` (0: not known); `zero`: its
    /// timeout is zero. A zero-timeout wait made deeper on the stack than the wait that began the
    /// tick is nested: part of the tick (the agent's and the BPF program's rule).
    pub fn enter_at(&mut self, t: u64, sp: u64, zero: bool, out: &mut Vec<Event>) {
        let deeper = sp != 0 && sp.saturating_add(looptop_abi::NESTED_MIN_BYTES as u64) < self.tick_sp;
        if zero && deeper && matches!(self.phase, Phase::Busy(_)) {
            self.nested = true;
            return;
        }
        self.nested = false;
        self.wait_sp = sp;
        self.enter(t, out);
    }

    /// A wait call entered at `t`: the tick under way ends.
    pub fn enter(&mut self, t: u64, out: &mut Vec<Event>) {
        match self.phase {
            Phase::Busy(since) if t >= since => {
                self.start_loop(since, out);
                let busy = t - since;
                let tot = &mut self.totals;
                tot.ticks += 1;
                tot.busy_ns += busy;
                tot.max_busy_ns = tot.max_busy_ns.max(busy);
                tot.hist[looptop_abi::hist_bucket(busy)] += 1;
                if busy >= self.stall_floor_ns {
                    if self.long_ticks.len() == LONG_TICKS_KEPT {
                        self.long_ticks.pop_front();
                    }
                    self.long_ticks.push_back((since, t));
                    if let Some(id) = self.id {
                        out.push(Event::Stall { id, start_ns: since, duration_ns: busy });
                    }
                }
            }
            _ => self.start_loop(t, out),
        }
        self.phase = Phase::Waiting(t);
        self.changed = true;
    }

    /// A wait call returned at `t`: a tick begins.
    pub fn exit(&mut self, t: u64, out: &mut Vec<Event>) {
        if std::mem::take(&mut self.nested) {
            return;
        }
        self.tick_sp = self.wait_sp;
        match self.phase {
            Phase::Waiting(since) if t >= since => self.totals.idle_ns += t - since,
            // The thread was waiting when we attached, or a record was lost.
            _ => self.start_loop(t, out),
        }
        self.phase = Phase::Busy(t);
        self.changed = true;
    }

    /// A call returned at `t` that was a wait only if the thread entered it waiting (its entry
    /// passed the kernel's filter); inside a tick it was a sleep, part of the tick.
    pub fn exit_if_waiting(&mut self, t: u64, out: &mut Vec<Event>) {
        if matches!(self.phase, Phase::Waiting(_)) {
            self.exit(t, out);
        }
    }

    /// The start of the tick running at `t` (the current one or a recent stall-long one), when
    /// it had lasted at least the stall floor by then; else 0. A sample's tick, as the BPF source
    /// stamps it in the kernel (looptop reads a stall's Python frames for such samples).
    pub fn tick_of(&self, t: u64) -> u64 {
        let since = match self.phase {
            Phase::Busy(since) if t >= since => since,
            _ => match self.long_ticks.iter().find(|&&(start, end)| t >= start && t <= end) {
                Some(&(start, _)) => start,
                None => return 0,
            },
        };
        if t - since >= self.stall_floor_ns {
            since
        } else {
            0
        }
    }

    /// Records were lost: where the thread is is unknown until its next wait call returns.
    pub fn lost(&mut self) {
        self.phase = Phase::Unknown;
        self.nested = false;
        self.tick_sp = 0;
    }

    /// The loop's totals as of `now_ns`, when there is a loop and something changed (or a tick is
    /// under way, whose length grows).
    pub fn totals(&mut self, now_ns: u64) -> Option<Event> {
        let id = self.id?;
        let busy_since = match self.phase {
            Phase::Busy(since) => since,
            _ => 0,
        };
        if !self.changed && busy_since == 0 {
            return None;
        }
        self.changed = false;
        self.totals.at_ns = now_ns;
        self.totals.busy_since_ns = busy_since;
        Some(Event::Totals { id, totals: self.totals.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn clock() -> TickClock {
        TickClock::new(10, 11, "node".into(), 0, 10 * MS)
    }

    fn stalls(out: &[Event]) -> Vec<(u64, u64)> {
        out.iter()
            .filter_map(|e| match e {
                Event::Stall { start_ns, duration_ns, .. } => Some((*start_ns, *duration_ns)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ticks_run_from_a_wait_exit_to_the_next_entry() {
        let mut c = clock();
        let mut out = Vec::new();
        c.enter(100 * MS, &mut out); // first record: the loop starts, no tick yet
        c.exit(105 * MS, &mut out);
        c.enter(106 * MS, &mut out); // 1 ms tick
        c.exit(110 * MS, &mut out);
        c.enter(170 * MS, &mut out); // 60 ms stall
        let Some(Event::Totals { totals, id }) = c.totals(200 * MS) else { panic!("no totals") };
        assert_eq!(id, LoopId { pid: 10, tid: 11, since_ns: 100 * MS });
        assert_eq!((totals.ticks, totals.busy_ns, totals.idle_ns, totals.max_busy_ns), (2, 61 * MS, 9 * MS, 60 * MS));
        assert_eq!(totals.busy_since_ns, 0);
        assert_eq!(totals.hist.iter().sum::<u64>(), 2);
        assert_eq!(stalls(&out), vec![(110 * MS, 60 * MS)]);
        assert!(matches!(out[0], Event::LoopStarted { start_ns, .. } if start_ns == 100 * MS));
        assert!(c.totals(201 * MS).is_none(), "nothing changed");
    }

    #[test]
    fn samples_get_the_tick_they_ran_in_once_it_is_stall_long() {
        let mut c = clock(); // stall floor 10 ms
        let mut out = Vec::new();
        c.exit(100 * MS, &mut out);
        assert_eq!(c.tick_of(105 * MS), 0, "5 ms into a tick: not past the floor yet");
        assert_eq!(c.tick_of(115 * MS), 100 * MS);
        assert_eq!(c.tick_of(99 * MS), 0, "before the tick");
        c.enter(160 * MS, &mut out);
        // Read after the tick ended (the samples' ring is drained after the waits').
        assert_eq!(c.tick_of(150 * MS), 100 * MS);
        assert_eq!(c.tick_of(161 * MS), 0, "waiting");
        // A short tick after it: the stall's samples still find theirs.
        c.exit(170 * MS, &mut out);
        c.enter(175 * MS, &mut out);
        assert_eq!(c.tick_of(150 * MS), 100 * MS);
        assert_eq!(c.tick_of(172 * MS), 0, "a short tick");
    }

    #[test]
    fn a_tick_under_way_shows_in_the_totals() {
        let mut c = clock();
        let mut out = Vec::new();
        c.exit(5 * MS, &mut out); // waiting when attached: the loop starts at the exit
        let Some(Event::Totals { totals, .. }) = c.totals(300 * MS) else { panic!() };
        assert_eq!((totals.ticks, totals.busy_since_ns), (0, 5 * MS));
        assert!(c.totals(301 * MS).is_some(), "a growing tick is reported every time");
    }

    #[test]
    fn a_thread_found_waiting_is_a_loop_at_once() {
        let mut c = clock();
        let mut out = Vec::new();
        c.found_waiting(50 * MS, &mut out);
        c.exit(80 * MS, &mut out);
        c.enter(81 * MS, &mut out);
        let Some(Event::Totals { totals, .. }) = c.totals(90 * MS) else { panic!() };
        assert_eq!((totals.ticks, totals.idle_ns), (1, 30 * MS));
        assert_eq!(out.iter().filter(|e| matches!(e, Event::LoopStarted { .. })).count(), 1);
    }

    #[test]
    fn the_main_thread_assumed_busy_counts_a_stall_in_progress_from_the_attach() {
        let mut c = clock();
        let mut out = Vec::new();
        c.assume_busy(0);
        c.enter(400 * MS, &mut out);
        assert_eq!(stalls(&out), vec![(0, 400 * MS)]);
        assert!(matches!(out[0], Event::LoopStarted { start_ns: 0, .. }));
        // Without the assumption, a thread's life before its first wait is not a tick.
        let mut c = clock();
        let mut out = Vec::new();
        c.enter(400 * MS, &mut out);
        assert!(stalls(&out).is_empty());
    }

    #[test]
    fn a_zero_timeout_wait_deeper_on_the_stack_is_part_of_the_tick() {
        let mut c = clock();
        let mut out = Vec::new();
        let loop_sp = 0x7fff_0000_0000;
        c.enter_at(0, loop_sp, false, &mut out);
        c.exit(MS, &mut out); // the tick begins, its wait made at `loop_sp`
                              // Redis's loop run from inside a Lua script: zero-timeout waits 8 KiB deeper.
        for i in 0..5 {
            c.enter_at((100 + 100 * i) * MS, loop_sp - 8192, true, &mut out);
            c.exit((100 + 100 * i) * MS + 10_000, &mut out);
        }
        // A blocking wait, or a zero-timeout one as deep as the loop's, ends it.
        c.enter_at(600 * MS, loop_sp - 8192, false, &mut out);
        let Some(Event::Totals { totals, .. }) = c.totals(700 * MS) else { panic!() };
        assert_eq!(totals.ticks, 1, "one tick, not six");
        assert_eq!(totals.max_busy_ns, 599 * MS);
        c.exit(601 * MS, &mut out);
        c.enter_at(602 * MS, loop_sp - 64, true, &mut out);
        let Some(Event::Totals { totals, .. }) = c.totals(700 * MS) else { panic!() };
        assert_eq!(totals.ticks, 2, "a zero-timeout wait at the loop's own depth is its next wait");
    }

    #[test]
    fn lost_records_drop_the_tick_they_cut() {
        let mut c = clock();
        let mut out = Vec::new();
        c.exit(0, &mut out);
        c.lost();
        c.enter(500 * MS, &mut out); // the exit that began this tick may be among the lost
        c.exit(501 * MS, &mut out);
        c.enter(502 * MS, &mut out);
        let Some(Event::Totals { totals, .. }) = c.totals(600 * MS) else { panic!() };
        assert_eq!(totals.ticks, 1);
        assert!(stalls(&out).is_empty());
    }

    #[test]
    fn this_kernel_has_the_wait_tracepoints_when_readable() {
        match WaitTracepoints::open(false) {
            Ok(t) => assert!(t.ids.len() >= 8, "{t:?}"),
            Err(e) => println!("SKIP: {e}"),
        }
    }
}
