//! The session: everything known about the observed loops, built only from events.

use super::classify::{self, ClassSample};
use super::dist::TickDist;
use super::report::{Blocker, LagPercentiles, LoopReport, Report, Stall, Target, TickPercentiles, SCHEMA};
use super::stacks::{Stacks, StoredSample};
use crate::event::{Event, LoopId, LoopTotals, ProcessInfo, Sample};
use crate::symbolize::Frame;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

const MS: f64 = 1e6;
/// A stall's blocker is kept once the stall ended this long ago: the samples of a stall arrive
/// within a few polls of its end (perf's off-CPU sample comes when the thread is back).
const SETTLED_NS: u64 = 2_000_000_000;
/// A stall at least this much of which was GC pauses is a `gc` stall, whatever its samples say
/// (the runtime timed the pauses; a sample or two at a futex inside them says little).
const GC_STALL_SHARE: f64 = 0.5;
/// Stalls whose samples stay one by one however old (the live view's stall details); the
/// samples of older ones are folded into counts once their blocker is known.
pub const RECENT_STALLS: usize = 64;
/// How much of the recent past keeps its samples one by one (ns): a live view's flamegraph of
/// the last window, and the samples of stalls still to be classified.
pub const KEEP_SAMPLES_NS: u64 = 30_000_000_000;
/// How often samples older than [`KEEP_SAMPLES_NS`] are folded (ns of the run).
pub const FOLD_EVERY_NS: u64 = 10_000_000_000;

/// One loop as the session knows it.
#[derive(Debug, Clone)]
struct LoopState {
    name: String,
    start_ns: u64,
    /// When the loop ended, and whether on its own (see [`Event::LoopEnded`]).
    ended: Option<(u64, bool)>,
    totals: Option<LoopTotals>,
    /// The totals before those, for utilization over the last interval.
    prev_totals: Option<LoopTotals>,
    /// Completed ticks at least the source's floor long: (start, busy) ns.
    stalls: Vec<(u64, u64)>,
    /// Its totals when counting began ([`Session::count_from`]); reports count what came after.
    baseline: Option<LoopTotals>,
}

#[derive(Debug, Clone)]
struct ProcState {
    info: ProcessInfo,
    exited_ns: Option<u64>,
}

/// Consumes events; answers with a [`Report`].
#[derive(Debug, Clone)]
pub struct Session {
    threshold_ns: u64,
    origin_ns: u64,
    processes: BTreeMap<u32, ProcState>,
    loops: BTreeMap<LoopId, LoopState>,
    runtime: super::runtime::Runtime,
    stacks: Stacks,
    dropped: u64,
    lost_samples: u64,
    mode: &'static str,
    /// What is known of settled stalls, by (loop, start, duration): a live view asks for the
    /// report several times a second, and classifying every stall each time would grow with the
    /// run.
    /// Reports count from here (ns; 0: from the start): a warm-up is left out.
    counted_from_ns: u64,
    /// (GC ms, blocker) of each settled stall.
    settled: RefCell<HashMap<StallKey, Settled>>,
}

/// A stall: its loop, start and duration (ns).
type StallKey = (LoopId, u64, u64);
/// What is known of a settled stall: its GC ms and blocker.
type Settled = (Option<f64>, Option<Blocker>);

/// One loop as a live view sees it.
#[derive(Debug, Clone, Copy)]
pub struct LoopView<'a> {
    /// Which loop.
    pub id: LoopId,
    /// Thread name.
    pub name: &'a str,
    /// Its latest counters, once read.
    pub totals: Option<&'a LoopTotals>,
    /// Whether its thread still runs.
    pub alive: bool,
}

impl Session {
    /// A session whose times count from `origin_ns`, with this stall threshold.
    pub fn new(origin_ns: u64, threshold_ns: u64) -> Self {
        Session {
            threshold_ns,
            origin_ns,
            processes: BTreeMap::new(),
            loops: BTreeMap::new(),
            runtime: Default::default(),
            stacks: Stacks::default(),
            dropped: 0,
            lost_samples: 0,
            mode: "agent",
            settled: RefCell::default(),
            counted_from_ns: 0,
        }
    }

    /// Sets the report's `mode` (`agent`, `perf`, `agent+perf`).
    pub fn set_mode(&mut self, mode: &'static str) {
        self.mode = mode;
    }

    /// Where ticks come from: `agent` or `perf`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// The sampled stacks.
    pub fn stacks(&self) -> &Stacks {
        &self.stacks
    }

    /// The sampled stacks, to intern frames into.
    pub fn stacks_mut(&mut self) -> &mut Stacks {
        &mut self.stacks
    }

    /// Takes a sample whose frames were interned as `stack` (innermost first).
    pub fn add_sample(&mut self, sample: &Sample, stack: Vec<u32>) {
        self.stacks.push(sample, stack);
    }

    /// Counts stack samples a source lost.
    pub fn lose_samples(&mut self, n: u64) {
        self.lost_samples = self.lost_samples.saturating_add(n);
    }

    /// Changes the stall threshold (a report of a recording with another threshold).
    pub fn set_threshold(&mut self, threshold_ns: u64) {
        self.threshold_ns = threshold_ns;
    }

    /// The stall threshold (ns).
    pub fn threshold_ns(&self) -> u64 {
        self.threshold_ns
    }

    /// When observation began (ns).
    pub fn origin_ns(&self) -> u64 {
        self.origin_ns
    }

    /// Every stall at or over the threshold: (pid, tid, start, duration) ns, including one in
    /// progress at `now_ns` (and the tick cut short by a signal).
    pub fn stall_spans(&self, now_ns: u64) -> Vec<(u32, u32, u64, u64)> {
        let mut out = Vec::new();
        for (id, l) in &self.loops {
            let r = self.loop_report(id, l, now_ns, false);
            for s in r.stalls {
                let start = (s.start_ms * MS + self.origin_ns as f64).round() as u64;
                out.push((id.pid, id.tid, start, (s.duration_ms * MS) as u64));
            }
        }
        out
    }

    /// Leaves everything before `at_ns` out of reports (a warm-up: start-up compilation, module
    /// loading; or what a process did before looptop attached to it): ticks, lag, stalls (those
    /// that end after it), GC and allocator pauses count from there; a loop seen later that began
    /// before counts from its first totals. The thread pool's figures still cover the whole run.
    pub fn count_from(&mut self, at_ns: u64) {
        self.counted_from_ns = at_ns;
        self.runtime.count_from(at_ns);
        for l in self.loops.values_mut() {
            l.baseline = l.totals.clone();
        }
    }

    /// Every loop with its latest counters.
    pub fn loops(&self) -> impl Iterator<Item = LoopView<'_>> {
        self.loops.iter().map(|(id, l)| LoopView {
            id: *id,
            name: &l.name,
            totals: l.totals.as_ref(),
            alive: l.ended.is_none() && !self.exited(id.pid),
        })
    }

    /// Folds the stack samples taken before `before_ns` into counts ([`Stacks::fold_before`]),
    /// so that memory stays flat however long the run: every stall that ended [`SETTLED_NS`]
    /// before `now_ns` is classified first (its blocker kept), and the samples of the last
    /// [`RECENT_STALLS`] stalls, and of those not yet settled, stay (the live view's details).
    pub fn forget_samples(&mut self, before_ns: u64, now_ns: u64) {
        self.settle(now_ns);
        // Every stall as (pid, tid, start, end), in order of start.
        let mut spans: Vec<(u32, u32, u64, u64)> = self
            .stall_spans(now_ns)
            .into_iter()
            .map(|(p, t, start, dur)| (p, t, start, start.saturating_add(dur)))
            .collect();
        spans.sort_by_key(|s| s.2);
        let by = |spans: &mut dyn Iterator<Item = &(u32, u32, u64, u64)>| {
            let mut m: HashMap<(u32, u32), Vec<(u64, u64)>> = HashMap::new();
            for &(pid, tid, start, end) in spans {
                m.entry((pid, tid)).or_default().push((start, end));
            }
            m
        };
        let by_thread = by(&mut spans.iter());
        // Kept one by one: the last RECENT_STALLS stalls, and those not settled yet.
        let last = spans.len().saturating_sub(RECENT_STALLS);
        let keep = by(&mut spans
            .iter()
            .enumerate()
            .filter(|(i, s)| *i >= last || s.3.saturating_add(SETTLED_NS) >= now_ns)
            .map(|(_, s)| s));
        let in_spans = |m: &HashMap<(u32, u32), Vec<(u64, u64)>>, pid, tid, s: &StoredSample| {
            m.get(&(pid, tid)).is_some_and(|v| s.in_stall(v))
        };
        self.stacks.fold_before(
            before_ns,
            |pid, tid, s| in_spans(&keep, pid, tid, s),
            |pid, tid, s| in_spans(&by_thread, pid, tid, s),
        );
    }

    /// Classifies every stall (at or over the source's floor) that ended [`SETTLED_NS`] before
    /// `now_ns` and was not yet, while its samples are at hand.
    fn settle(&self, now_ns: u64) {
        for (id, l) in &self.loops {
            for &(start, dur) in &l.stalls {
                if start.saturating_add(dur).saturating_add(SETTLED_NS) < now_ns
                    && !self.settled.borrow().contains_key(&(*id, start, dur))
                {
                    self.stall(id, start, dur, false, now_ns, true);
                }
            }
        }
    }

    /// Sets the perf rate the stacks are sampled at (Hz, 0: none).
    pub fn set_rate(&mut self, rate_hz: u64) {
        self.stacks.set_rate(rate_hz);
    }

    /// What the session knows now, as events: processes, loops, their stalls and counters, the
    /// runtime probes and pools. A recording started mid-way begins with these.
    pub fn state_events(&self) -> Vec<Event> {
        let mut out: Vec<Event> = self.processes.values().map(|p| Event::Process(p.info.clone())).collect();
        for (id, l) in &self.loops {
            out.push(Event::LoopStarted { id: *id, name: l.name.clone(), start_ns: l.start_ns });
            for &(start_ns, duration_ns) in &l.stalls {
                out.push(Event::Stall { id: *id, start_ns, duration_ns });
            }
            if let Some(t) = &l.totals {
                out.push(Event::Totals { id: *id, totals: t.clone() });
            }
        }
        out.extend(self.runtime.state_events());
        out
    }

    /// The stack that best shows a stall's blocker, outermost first, each frame with its source
    /// line: the most frequent stack among the stall's samples that pass through `frame` (all
    /// its samples when none does).
    pub fn stall_stack(
        &self,
        pid: u32,
        tid: u32,
        start_ns: u64,
        duration_ns: u64,
        frame: &str,
    ) -> Vec<(&Frame, Option<&str>)> {
        let mut counts: HashMap<&[u32], u64> = HashMap::new();
        let samples: Vec<&[u32]> = self
            .stacks
            .during(pid, tid, start_ns, start_ns.saturating_add(duration_ns))
            .map(|s| s.stack.as_slice())
            .collect();
        let through = |st: &&[u32]| st.iter().any(|&f| self.stacks.frame(f).name == frame);
        let any_through = samples.iter().any(through);
        for st in samples.into_iter().filter(|st| !any_through || through(st)) {
            *counts.entry(st).or_default() += 1;
        }
        let best = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))).map(|c| c.0).unwrap_or(&[]);
        best.iter().rev().map(|&f| (self.stacks.frame(f), self.stacks.source(f))).collect()
    }

    /// Whether a frame of process `pid` is the user's code (not the runtime's or a library's).
    pub fn is_user_frame(&self, pid: u32, frame: &Frame) -> bool {
        let user_module =
            self.processes.get(&pid).map(|p| p.info.exe.as_str()).filter(|exe| classify::native_is_user(exe));
        classify::is_user_frame(frame, user_module)
    }

    /// The thread pool as of its latest sample: (busy, queued) items.
    pub fn pool_now(&self) -> Option<(u64, u64)> {
        self.runtime.pool_now()
    }

    /// GC pauses that started at or after `since_ns`: (count, longest ns).
    pub fn gc_since(&self, since_ns: u64) -> (u64, u64) {
        self.runtime.gc_since(since_ns)
    }

    /// Takes one event into account.
    pub fn handle(&mut self, ev: Event) {
        let Some(ev) = self.runtime.handle(ev) else { return };
        match ev {
            Event::Process(mut info) => {
                // The target's command line and thread names are its user's to choose.
                info.command = info.command.into_iter().map(crate::units::printable).collect();
                info.exe = crate::units::printable(info.exe);
                self.processes.insert(info.pid, ProcState { info, exited_ns: None });
            }
            Event::LoopStarted { id, name, start_ns } => {
                self.loops.entry(id).or_insert(LoopState {
                    name: crate::units::printable(name),
                    start_ns,
                    ended: None,
                    totals: None,
                    prev_totals: None,
                    stalls: Vec::new(),
                    baseline: None,
                });
            }
            Event::Totals { id, totals } => {
                if let Some(l) = self.loops.get_mut(&id) {
                    // A loop that began before counting did (attached to: its agent's counters
                    // cover the process's whole life) counts from its first totals.
                    if l.baseline.is_none() && l.totals.is_none() && l.start_ns < self.counted_from_ns {
                        l.baseline = Some(totals.clone());
                    }
                    l.prev_totals = l.totals.replace(totals);
                }
            }
            Event::Stall { id, start_ns, duration_ns } => {
                if let Some(l) = self.loops.get_mut(&id) {
                    l.stalls.push((start_ns, duration_ns));
                }
            }
            Event::LoopEnded { id, at_ns, clean } => {
                if let Some(l) = self.loops.get_mut(&id) {
                    l.ended.get_or_insert((at_ns, clean));
                }
            }
            Event::ProcessExited { pid, at_ns, clean: _ } => {
                if let Some(p) = self.processes.get_mut(&pid) {
                    p.exited_ns.get_or_insert(at_ns);
                }
            }
            Event::Dropped { count } => self.dropped = self.dropped.saturating_add(count),
            // Runtime events were taken above.
            _ => {}
        }
    }

    /// Number of loops seen.
    pub fn loop_count(&self) -> usize {
        self.loops.len()
    }

    /// Number of processes seen.
    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// Stalls seen so far (completed, at or over the threshold).
    pub fn stall_count(&self) -> usize {
        self.loops.values().flat_map(|l| &l.stalls).filter(|s| s.1 >= self.threshold_ns).count()
    }

    /// What the session knows of a process.
    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.processes.get(&pid).map(|p| &p.info)
    }

    /// Whether the process has exited.
    pub fn exited(&self, pid: u32) -> bool {
        self.processes.get(&pid).is_some_and(|p| p.exited_ns.is_some())
    }

    /// Loops of `pid` whose thread still runs.
    pub fn live_loops(&self, pid: u32) -> usize {
        self.loops.iter().filter(|(id, l)| id.pid == pid && l.ended.is_none()).count()
    }

    /// Utilization of the busiest live loop of `pid` between the last two reads (0 when the
    /// loop was read only once).
    pub fn recent_utilization(&self, pid: u32) -> f64 {
        let busy = |t: &LoopTotals| {
            let cur = if t.busy_since_ns != 0 { t.at_ns.saturating_sub(t.busy_since_ns) } else { 0 };
            (t.busy_ns + cur) as f64
        };
        self.loops
            .iter()
            .filter(|(id, l)| id.pid == pid && l.ended.is_none())
            .filter_map(|(_, l)| {
                let (a, b) = (l.prev_totals.as_ref()?, l.totals.as_ref()?);
                let wall = b.at_ns.checked_sub(a.at_ns).filter(|&w| w > 0)? as f64;
                Some(((busy(b) - busy(a)) / wall).clamp(0.0, 1.0))
            })
            .fold(0.0, f64::max)
    }

    /// The runtime of the observed program: that of the first process that ran a loop.
    pub fn runtime(&self) -> &'static str {
        let pid = self.loops.keys().next().map(|id| id.pid);
        let p = pid.and_then(|pid| self.processes.get(&pid)).or_else(|| self.processes.values().next());
        p.map_or("native", |p| crate::target::proc::runtime_of(&p.info.exe, &p.info.command))
    }

    /// The report as of `now_ns`.
    pub fn report(&self, target: Target, now_ns: u64) -> Report {
        let loops = self.loops.iter().map(|(id, l)| self.loop_report(id, l, now_ns, true)).collect();
        Report {
            schema: SCHEMA,
            target,
            mode: self.mode,
            wall_ms: now_ns.saturating_sub(self.origin_ns) as f64 / MS,
            stall_threshold_ms: self.threshold_ns as f64 / MS,
            loops,
            gc: self.runtime.gc_report(self.origin_ns, self.counted_from_ns),
            pool: self.runtime.pool_report(),
            alloc: Some(self.runtime.alloc_report(self.origin_ns, self.counted_from_ns)),
            blockers: Vec::new(),
            samples: self.stacks.len(),
            lost_samples: self.lost_samples,
            dropped_events: self.dropped,
            warnings: Vec::new(),
        }
        .with_blockers()
    }

    /// One loop's report; `blockers`: classify its stalls (spans alone need no stacks).
    fn loop_report(&self, id: &LoopId, l: &LoopState, now_ns: u64, blockers: bool) -> LoopReport {
        let exited = self.processes.get(&id.pid).and_then(|p| p.exited_ns);
        let alive = l.ended.is_none() && exited.is_none();
        let (mut end, clean) = match l.ended {
            Some((at, clean)) => (at, clean),
            None => (exited.unwrap_or(now_ns), false),
        };
        let start = l.start_ns.max(self.counted_from_ns);
        end = end.max(start);
        let empty = LoopTotals {
            at_ns: now_ns,
            ticks: 0,
            busy_ns: 0,
            idle_ns: 0,
            max_busy_ns: 0,
            busy_since_ns: 0,
            hist: Box::new([]),
        };
        let from = self.counted_from_ns;
        let t = l.totals.as_ref().unwrap_or(&empty);
        let since_base = l.baseline.as_ref().map(|b| LoopTotals {
            ticks: t.ticks.saturating_sub(b.ticks),
            busy_ns: t.busy_ns.saturating_sub(b.busy_ns),
            idle_ns: t.idle_ns.saturating_sub(b.idle_ns),
            hist: t
                .hist
                .iter()
                .enumerate()
                .map(|(i, &c)| c.saturating_sub(b.hist.get(i).copied().unwrap_or(0)))
                .collect(),
            ..t.clone()
        });
        let t = since_base.as_ref().unwrap_or(t);
        // Stalls that end in the window: one under way when counting began is the window's too.
        let counted = l.stalls.iter().filter(|s| s.0.saturating_add(s.1) > from);
        let mut dist = TickDist::from_hist(&t.hist, counted.clone().map(|s| s.1));
        let mut stalls: Vec<Stall> = counted
            .filter(|s| s.1 >= self.threshold_ns)
            .map(|&(start, dur)| self.stall(id, start, dur, false, now_ns, blockers))
            .collect();
        // The tick under way. A loop that ended on its own (thread exit, exit(), exec) never
        // came back to wait: its open tail is not a tick and not part of its life. A tick cut
        // short by a signal (Ctrl-C on a stuck server) is the stall the user came for: it counts.
        let mut busy = t.busy_ns as f64;
        if t.busy_since_ns != 0 && end > t.busy_since_ns {
            if clean {
                end = t.busy_since_ns.max(start);
            } else {
                let cur = end - t.busy_since_ns;
                dist.push(cur as f64, 1);
                busy += cur as f64;
                if cur >= self.threshold_ns {
                    stalls.push(self.stall(id, t.busy_since_ns, cur, alive, now_ns, blockers));
                }
            }
        }
        stalls.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        let wall = (end - start) as f64;
        let ms = |ns: f64| ns / MS;
        LoopReport {
            pid: id.pid,
            tid: id.tid,
            name: l.name.clone(),
            ticks: t.ticks,
            utilization: if wall > 0.0 { (busy / wall).min(1.0) } else { 0.0 },
            tick_ms: TickPercentiles {
                p50: ms(dist.tick_percentile(0.5)),
                p90: ms(dist.tick_percentile(0.9)),
                p99: ms(dist.tick_percentile(0.99)),
                max: ms(dist.max()),
            },
            lag_ms: LagPercentiles {
                p50: ms(dist.lag_percentile(0.5, wall)),
                p90: ms(dist.lag_percentile(0.9, wall)),
                p99: ms(dist.lag_percentile(0.99, wall)),
                p999: ms(dist.lag_percentile(0.999, wall)),
                max: ms(dist.max()),
            },
            stalls,
        }
    }

    fn stall(
        &self,
        id: &LoopId,
        start_ns: u64,
        duration_ns: u64,
        in_progress: bool,
        now_ns: u64,
        blockers: bool,
    ) -> Stall {
        let key = (*id, start_ns, duration_ns);
        let cached = if blockers { self.settled.borrow().get(&key).cloned() } else { Some((None, None)) };
        let (gc_ms, blocker) = cached.unwrap_or_else(|| {
            let gc_ms = self.runtime.gc_overlap_ms(id.pid, id.tid, start_ns, duration_ns);
            let mut blocker = self.blocker(id, start_ns, duration_ns);
            let share = gc_ms.unwrap_or(0.0) * MS / duration_ns.max(1) as f64;
            // (A stall with no stack keeps no blocker: DESIGN.md's `null` where nothing was captured.)
            if let Some(b) = blocker.as_mut().filter(|b| share >= GC_STALL_SHARE && b.kind != GC) {
                into_gc(b, share);
            }
            let known = (gc_ms, blocker);
            if !in_progress && start_ns.saturating_add(duration_ns).saturating_add(SETTLED_NS) < now_ns {
                self.settled.borrow_mut().insert(key, known.clone());
            }
            known
        });
        Stall {
            gc_ms,
            start_ms: (start_ns as f64 - self.origin_ns as f64) / MS,
            duration_ms: duration_ns as f64 / MS,
            in_progress,
            blocker,
        }
    }

    /// Classifies a stall from the samples of its thread taken during it.
    fn blocker(&self, id: &LoopId, start_ns: u64, duration_ns: u64) -> Option<Blocker> {
        let user_module =
            self.processes.get(&id.pid).map(|p| p.info.exe.as_str()).filter(|exe| classify::native_is_user(exe));
        let samples: Vec<ClassSample> = self
            .stacks
            .during(id.pid, id.tid, start_ns, start_ns.saturating_add(duration_ns))
            .map(|s| ClassSample {
                frames: s.stack.iter().map(|&f| self.stacks.frame(f)).collect(),
                off_cpu: s.off_cpu.as_ref(),
                user_module,
                weight_ns: s.weight_ns,
            })
            .collect();
        let verdict = classify::classify(&samples)?;
        let source = self.stacks.id_of(&verdict.frame).and_then(|i| self.stacks.source(i));
        let location = verdict.frame.running_location();
        let position = location.as_ref().map(|_| match verdict.frame.kind {
            crate::symbolize::FrameKind::Js | crate::symbolize::FrameKind::V8Code
                if verdict.frame.exec_line.is_none() =>
            {
                "function-start"
            }
            _ => "executing",
        });
        Some(Blocker {
            kind: verdict.kind.name(),
            confidence: (verdict.confidence * 100.0).round() / 100.0,
            position,
            location,
            source: source.map(str::to_string),
            frame: verdict.frame.name,
            samples: samples.len() as u64,
            basis: "samples",
        })
    }
}

/// The kind name of GC stalls.
const GC: &str = crate::analysis::rules::BlockerKind::Gc.name();

/// Makes `b` the blocker of a stall mostly spent in GC pauses (`share` of it, 0..1): kind `gc`
/// from the runtime's pause times; the user function its samples found stays (the code that
/// made the garbage), a runtime frame (a GC helper's futex) gives way to `garbage collection`.
fn into_gc(b: &mut Blocker, share: f64) {
    b.kind = GC;
    b.basis = "gc_pauses";
    b.confidence = (share.min(1.0) * 100.0).round() / 100.0;
    if b.location.is_none() {
        b.frame = "garbage collection".into();
        b.source = None;
    }
}
