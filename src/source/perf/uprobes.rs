//! The libuv thread pool and V8's GC pauses of a process without the agent, from uprobes.
//!
//! - **Pool**: `uv__work_submit(loop, w, …)` on the submitting thread queues item `w` (its second
//!   argument, `rsi`); a worker starts it when it enters the item's work function with `w` as its
//!   first argument (`rdi`): `uv__fs_work`, `uv__queue_work` (crypto, zlib, `uv_queue_work`),
//!   `uv__getaddrinfo_work`, `uv__getnameinfo_work`, `uv__random_work`; it is done when that
//!   function returns (uretprobe). Queued = submitted and not started, exactly, for every item
//!   submitted since the attach; the wait of an item is its start minus its submission.
//!   `uv_queue_work` (where libuv inlines `uv__work_submit`) is probed too: its item is at a
//!   fixed offset of the request.
//! - **GC**: `v8::internal::Heap::PerformGarbageCollection` entry to return is a pause; the
//!   collector it runs (`Heap::Scavenge`, `MinorMarkCompact`, `MarkCompact`) entered inside
//!   names its kind.
//!
//! The sites come from the executable's or a mapped libuv/libnode's symbols (`sites.rs`); a
//! binary without them gets no probes (the pool is then unseen and GC shows only as GC frames in
//! stacks). The events are CPU-wide (one ring per CPU) and hits of other processes are dropped:
//! per-thread events would miss the pool's workers, which libuv starts at the first submission,
//! until the next poll. So while looptop is attached, other processes running the same binary
//! take the breakpoints too (a few µs per pool item or GC, nothing per tick); closing the events
//! removes them all.

use super::sites::RuntimeProbes;
use super::sys;
use crate::event::{Event, GcKind};
use perf_event::{Builder, Clock, Counter, SampleFlag, Sampler};
use std::collections::{BTreeMap, HashMap};
use std::io;

/// What reaching a probe site means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `uv__work_submit` entered: item in `rsi` queued.
    Submit,
    /// `uv_queue_work(loop, req, …)` entered: item `&req->work_req` queued (libuv inlines its
    /// own `uv__work_submit` there).
    QueueWork,
    /// A work function entered on a worker: item in `rdi` started.
    WorkStart,
    /// A work function returned on a worker: its item is done.
    WorkEnd,
    /// `Heap::PerformGarbageCollection` entered: a pause starts.
    GcStart,
    /// `Heap::PerformGarbageCollection` returned: the pause ends.
    GcEnd,
    /// A collector entered inside a pause: the pause's kind.
    GcKind(GcKind),
}

impl Role {
    /// The user register (`PERF_REG_X86_*` index) carrying the argument this role needs.
    pub fn arg_register(self) -> Option<usize> {
        match self {
            Role::Submit | Role::QueueWork => Some(ARG_RSI),
            Role::WorkStart => Some(ARG_RDI),
            _ => None,
        }
    }
}

/// `PERF_REG_X86_SI` and `PERF_REG_X86_DI`: the second and first integer arguments (SysV).
const PERF_REG_X86_SI: u32 = 4;
const PERF_REG_X86_DI: u32 = 5;
/// The user registers every record of a thread's tick ring carries (one sample format per ring).
pub const REGS_MASK: u64 = (1 << PERF_REG_X86_SI) | (1 << PERF_REG_X86_DI);
/// Positions of the registers in a record's `regs` (in bit order of [`REGS_MASK`]).
const ARG_RSI: usize = 0;
const ARG_RDI: usize = 1;

/// `offsetof(uv_work_t, work_req)` on 64-bit: `UV_REQ_FIELDS` (data, type, reserved[6]: 64 bytes),
/// then `loop`, `work_cb`, `after_work_cb`. Public ABI, stable across libuv 1.x.
const UV_WORK_REQ_OFFSET: u64 = 88;

/// A probe site reached by a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// When (ns, `CLOCK_MONOTONIC`).
    pub t_ns: u64,
    /// The thread.
    pub tid: u32,
    /// Which site.
    pub role: Role,
    /// The argument register of the role ([`Role::arg_register`]), else 0.
    pub arg: u64,
}

/// Ring size per CPU: a hit is 56 bytes, so 1 MiB holds about 18 000 (three per pool item): a
/// server doing 100 000 pool items/s fills it in 60 ms, three polls.
const RING_BYTES: usize = 1024 * 1024;

/// The probe sites of one process on every CPU.
pub struct ProbeEvents {
    pid: u32,
    /// One ring per CPU, with the site events redirected into it.
    rings: Vec<(Sampler, Vec<Counter>)>,
    /// Kernel event id → role.
    roles: Vec<(u64, Role)>,
}

impl ProbeEvents {
    /// Opens and enables every site on every online CPU.
    pub fn open(pid: u32, probes: &RuntimeProbes) -> io::Result<ProbeEvents> {
        let pmu = sys::UserProbe::pmu()?;
        let mut rings = Vec::new();
        let mut roles = Vec::new();
        for cpu in sys::online_cpus()? {
            let mut counters = Vec::new();
            for site in &probes.sites {
                let path =
                    std::ffi::CString::new(site.path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
                let mut b = Builder::new(sys::UserProbe { pmu, ret: site.ret, path, offset: site.offset });
                b.any_pid()
                    .one_cpu(cpu)
                    .sample_period(1)
                    .clockid(Clock::MONOTONIC)
                    .sample(SampleFlag::IDENTIFIER | SampleFlag::TID | SampleFlag::TIME | SampleFlag::REGS_USER)
                    .sample_regs_user(REGS_MASK)
                    .exclude_kernel(false)
                    .enabled(false);
                let c = b.build()?;
                roles.push((c.id(), site.role));
                counters.push(c);
            }
            rings.push(sys::one_ring(counters, RING_BYTES)?);
        }
        Ok(ProbeEvents { pid, rings, roles })
    }

    /// Stops every site's event (the breakpoints go when the events are closed).
    pub fn disable(&mut self) {
        for (ring, others) in &mut self.rings {
            let _ = ring.disable();
            others.iter_mut().for_each(|c| drop(c.disable()));
        }
    }

    /// Moves the hits of our process into `hits`; returns the records the kernel lost.
    pub fn drain(&mut self, hits: &mut Vec<Hit>) -> u64 {
        use perf_event::data::Record;
        let mut lost = 0;
        for (ring, _) in &mut self.rings {
            while let Some(record) = ring.next_record() {
                match record.parse_record() {
                    Ok(Record::Sample(s)) => {
                        if s.pid() != Some(self.pid) {
                            continue;
                        }
                        let (Some(id), Some(t_ns)) = (s.id(), s.time()) else { continue };
                        let Some(role) = self.roles.iter().find(|(i, _)| *i == id).map(|r| r.1) else { continue };
                        let regs = s.regs_user();
                        let arg = role.arg_register().and_then(|r| regs?.regs.get(r).copied()).unwrap_or(0);
                        hits.push(Hit { t_ns, tid: s.tid().unwrap_or(0), role, arg });
                    }
                    Ok(Record::Lost(l)) => lost += l.lost,
                    _ => {}
                }
            }
        }
        lost
    }
}

/// Waits per power of two, as the Node probe buckets them (12.5 % wide).
const WAIT_BUCKETS_PER_OCTAVE: f64 = 8.0;

/// The pool and GC state of one process, rebuilt from its hits in time order.
pub struct RuntimeClock {
    pid: u32,
    pool_size: Option<u64>,
    /// Submitted, not started: item → submission time.
    queued: HashMap<u64, u64>,
    /// Workers running an item.
    running: BTreeMap<u32, ()>,
    queued_max: usize,
    /// Wait bucket → (items, longest wait).
    waits: BTreeMap<u32, (u64, u64)>,
    /// Something happened in the pool since the last sample.
    active: bool,
    /// The last sample had items in flight (the next one shows them gone).
    busy: bool,
    /// Thread → (pause start, nesting depth, kind seen inside).
    pauses: HashMap<u32, (u64, u32, Option<GcKind>)>,
    /// Hits not yet in time order with the other threads' (newer than the last drain's start).
    held: Vec<Hit>,
}

impl RuntimeClock {
    /// The state of `pid`'s pool and GC; `pool_size` when the pool is probed.
    pub fn new(pid: u32, pool_size: Option<u64>) -> RuntimeClock {
        RuntimeClock {
            pid,
            pool_size,
            queued: HashMap::new(),
            running: BTreeMap::new(),
            queued_max: 0,
            waits: BTreeMap::new(),
            active: false,
            busy: false,
            pauses: HashMap::new(),
            held: Vec::new(),
        }
    }

    /// Takes the hits drained from every thread's ring. Those before `drained_from` (the time
    /// the drain began) are complete across threads and are applied in time order; later ones
    /// wait for the next drain.
    pub fn feed(&mut self, hits: &mut Vec<Hit>, drained_from: u64, out: &mut Vec<Event>) {
        self.held.append(hits);
        self.held.sort_by_key(|h| h.t_ns);
        let ready = self.held.partition_point(|h| h.t_ns < drained_from);
        let now: Vec<Hit> = self.held.drain(..ready).collect();
        for hit in now {
            self.apply(hit, out);
        }
    }

    fn apply(&mut self, hit: Hit, out: &mut Vec<Event>) {
        match hit.role {
            Role::Submit | Role::QueueWork => {
                let item = if hit.role == Role::QueueWork { hit.arg + UV_WORK_REQ_OFFSET } else { hit.arg };
                // A build whose `uv_queue_work` calls `uv__work_submit` reports the item twice.
                self.queued.entry(item).or_insert(hit.t_ns);
                self.queued_max = self.queued_max.max(self.queued.len());
                self.active = true;
            }
            Role::WorkStart => {
                if let Some(at) = self.queued.remove(&hit.arg) {
                    let wait = hit.t_ns.saturating_sub(at);
                    let w = self.waits.entry(bucket(wait)).or_insert((0, 0));
                    w.0 += 1;
                    w.1 = w.1.max(wait);
                }
                self.running.insert(hit.tid, ());
                self.active = true;
            }
            Role::WorkEnd => {
                self.running.remove(&hit.tid);
                self.active = true;
            }
            Role::GcStart => {
                self.pauses.entry(hit.tid).or_insert((hit.t_ns, 0, None)).1 += 1;
            }
            Role::GcKind(kind) => {
                if let Some(p) = self.pauses.get_mut(&hit.tid) {
                    p.2.get_or_insert(kind);
                }
            }
            Role::GcEnd => {
                let Some(p) = self.pauses.get_mut(&hit.tid) else { return };
                p.1 -= 1;
                if p.1 == 0 {
                    let (start_ns, _, kind) = self.pauses.remove(&hit.tid).unwrap_or_default();
                    out.push(Event::Gc {
                        pid: self.pid,
                        thread: hit.tid,
                        start_ns,
                        duration_ns: hit.t_ns.saturating_sub(start_ns),
                        kind: kind.unwrap_or(GcKind::Unknown),
                    });
                }
            }
        }
    }

    /// Records were lost: what was under way is unknown (the pool forgets its queue).
    pub fn lost(&mut self) {
        self.queued.clear();
        self.running.clear();
        self.pauses.clear();
    }

    /// The pool's state now and the waits since the last sample, when anything happened.
    pub fn sample(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let Some(size) = self.pool_size else { return };
        let in_flight = (self.queued.len() + self.running.len()) as u64;
        if !self.active && !self.busy {
            return;
        }
        out.push(Event::PoolSample {
            pid: self.pid,
            at_ns: now_ns,
            size,
            in_flight,
            queued_max: self.queued_max as u64,
        });
        for (b, (count, max_ns)) in std::mem::take(&mut self.waits) {
            out.push(Event::PoolWaits {
                pid: self.pid,
                low_ns: bucket_low(b),
                high_ns: bucket_low(b + 1),
                count,
                max_ns,
                at_ns: now_ns,
            });
        }
        self.queued_max = self.queued.len();
        self.active = false;
        self.busy = in_flight > 0;
    }
}

/// The wait bucket of `ns`: 0 below 1 µs, then [`WAIT_BUCKETS_PER_OCTAVE`] per doubling.
fn bucket(ns: u64) -> u32 {
    if ns < 1000 {
        0
    } else {
        1 + ((ns as f64 / 1000.0).log2() * WAIT_BUCKETS_PER_OCTAVE) as u32
    }
}

/// The lower bound (ns) of bucket `b`.
fn bucket_low(b: u32) -> u64 {
    if b == 0 {
        0
    } else {
        (1000.0 * 2f64.powf(f64::from(b - 1) / WAIT_BUCKETS_PER_OCTAVE)) as u64
    }
}

/// A process's libuv pool and GC probes with their state: what both kernel sources (perf and
/// BPF) add to the ticks of a process without the agent.
pub struct Runtime {
    events: ProbeEvents,
    clock: RuntimeClock,
}

impl Runtime {
    /// A process attached at `now_ns` without the agent: its `Process` event (command line and
    /// executable from `/proc`), then its probes as [`Runtime::open`] places them.
    pub fn attach(
        pid: u32,
        now_ns: u64,
        pool: bool,
        pending: &mut Vec<Event>,
        notes: &mut Vec<String>,
    ) -> Option<Runtime> {
        pending.push(crate::source::attached_process(pid, now_ns));
        Runtime::open(pid, pool, pending, notes)
    }

    /// Probes `pid` when its binary has the symbols; the pool and probe events for the session
    /// go to `pending`, and why the probes would not open to `notes`.
    pub fn open(pid: u32, pool: bool, pending: &mut Vec<Event>, notes: &mut Vec<String>) -> Option<Runtime> {
        let probes = super::sites::RuntimeProbes::find(pid)?;
        let probes = if pool { probes } else { probes.without_pool()? };
        match ProbeEvents::open(pid, &probes) {
            Ok(events) => {
                if let Some(size) = probes.pool_size {
                    pending.push(Event::PoolKind { pid, kind: "libuv".into(), size });
                }
                if probes.gc {
                    pending.push(Event::ProbeReady { pid });
                }
                Some(Runtime { events, clock: RuntimeClock::new(pid, probes.pool_size) })
            }
            Err(e) => {
                notes.push(format!(
                    "the thread pool and GC pauses of process {pid} are not probed: uprobes would not open ({e})"
                ));
                None
            }
        }
    }

    /// Applies the hits so far; returns the records the kernel lost.
    pub fn poll(&mut self, now_ns: u64, out: &mut Vec<Event>) -> u64 {
        let mut hits = Vec::new();
        let lost = self.events.drain(&mut hits);
        if lost > 0 {
            self.clock.lost();
        }
        self.clock.feed(&mut hits, now_ns, out);
        self.clock.sample(now_ns, out);
        lost
    }

    /// Stops the probes (closed on drop).
    pub fn disable(&mut self) {
        self.events.disable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(t_ns: u64, tid: u32, role: Role, arg: u64) -> Hit {
        Hit { t_ns, tid, role, arg }
    }

    #[test]
    fn queue_depth_and_waits_follow_the_items() {
        let mut clock = RuntimeClock::new(10, Some(2));
        let mut out = Vec::new();
        // Three items on two workers: the third waits for the first to finish.
        let mut hits = vec![
            hit(100, 10, Role::Submit, 0xa),
            hit(101, 10, Role::QueueWork, 0xb000 - UV_WORK_REQ_OFFSET),
            hit(102, 10, Role::Submit, 0xc),
            hit(5_000, 11, Role::WorkStart, 0xa),
            hit(6_000, 12, Role::WorkStart, 0xb000),
            hit(2_000_000, 11, Role::WorkEnd, 0),
            hit(2_000_100, 11, Role::WorkStart, 0xc),
        ];
        // Arrives from another thread's ring out of order: applied in time order all the same.
        hits.reverse();
        clock.feed(&mut hits, 3_000_000, &mut out);
        clock.sample(3_000_000, &mut out);
        let Event::PoolSample { size, in_flight, queued_max, .. } = out[0] else { panic!("{out:?}") };
        assert_eq!((size, in_flight, queued_max), (2, 2, 3));
        let waits: Vec<(u64, u64)> = out[1..]
            .iter()
            .map(|e| match e {
                Event::PoolWaits { count, max_ns, .. } => (*count, *max_ns),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits.iter().map(|w| w.0).sum::<u64>(), 3);
        assert_eq!(waits.iter().map(|w| w.1).max(), Some(2_000_100 - 102));
        // Idle after one more sample showing the last items done.
        out.clear();
        clock.feed(
            &mut vec![hit(3_100_000, 11, Role::WorkEnd, 0), hit(3_200_000, 12, Role::WorkEnd, 0)],
            4_000_000,
            &mut out,
        );
        clock.sample(4_000_000, &mut out);
        assert!(matches!(out[..], [Event::PoolSample { in_flight: 0, queued_max: 0, .. }]), "{out:?}");
        out.clear();
        clock.sample(5_000_000, &mut out);
        assert!(out.is_empty(), "no samples while idle: {out:?}");
    }

    #[test]
    fn hits_newer_than_the_drain_wait_for_the_next() {
        let mut clock = RuntimeClock::new(10, Some(4));
        let mut out = Vec::new();
        clock.feed(&mut vec![hit(500, 11, Role::WorkStart, 0xa)], 400, &mut out);
        // The submission (from the loop thread's ring) arrives with the next drain.
        clock.feed(&mut vec![hit(300, 10, Role::Submit, 0xa)], 1_000, &mut out);
        clock.sample(1_000, &mut out);
        assert!(matches!(out[1], Event::PoolWaits { count: 1, max_ns: 200, .. }), "{out:?}");
    }

    #[test]
    fn gc_pauses_take_the_kind_of_the_collector_inside() {
        let mut clock = RuntimeClock::new(10, None);
        let mut out = Vec::new();
        let mut hits = vec![
            hit(1_000, 10, Role::GcStart, 0),
            hit(1_010, 10, Role::GcKind(GcKind::Minor), 0),
            hit(3_000, 10, Role::GcEnd, 0),
            hit(9_000, 10, Role::GcStart, 0),
            hit(9_500, 10, Role::GcEnd, 0),
        ];
        clock.feed(&mut hits, 10_000, &mut out);
        clock.sample(10_000, &mut out);
        assert_eq!(out.len(), 2, "no pool: no pool samples; {out:?}");
        assert!(matches!(
            out[0],
            Event::Gc { start_ns: 1_000, duration_ns: 2_000, kind: GcKind::Minor, thread: 10, .. }
        ));
        assert!(matches!(out[1], Event::Gc { duration_ns: 500, kind: GcKind::Unknown, .. }));
    }

    #[test]
    fn buckets_match_the_node_probe() {
        assert_eq!(bucket(999), 0);
        assert_eq!(bucket(1_000), 1);
        assert_eq!(bucket_low(1), 1_000);
        assert_eq!(bucket_low(9), 2_000);
        for ns in [1_500u64, 80_000, 3_000_000, 1_000_000_000] {
            let b = bucket(ns);
            assert!(
                bucket_low(b) <= ns && ns < bucket_low(b + 1),
                "{ns} in [{}, {})",
                bucket_low(b),
                bucket_low(b + 1)
            );
        }
    }
}
