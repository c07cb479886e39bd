//! Sampled stacks of a session: an interned frame table (with the source line of each frame
//! where the file could be read), the recent samples as frame ids by thread and time, and the
//! older ones folded into counts by stack ([`Folded`]), so that memory follows the number of
//! distinct stacks, not the length of the run.

use crate::event::{OffCpu, Sample, SampleOrigin};
use crate::symbolize::Frame;
use std::collections::{BTreeMap, HashMap};

/// One sample, its frames interned.
#[derive(Debug, Clone)]
pub struct StoredSample {
    /// When (ns).
    pub t_ns: u64,
    /// Time it stands for (ns).
    pub weight_ns: u64,
    /// What took it.
    pub origin: SampleOrigin,
    /// Start of its tick when the source knows it (watchdog), else 0.
    pub tick_ns: u64,
    /// Set when the thread was off-CPU.
    pub off_cpu: Option<OffCpu>,
    /// Frame ids, innermost first.
    pub stack: Vec<u32>,
    /// Samples it stands for (1, or a count the kernel kept).
    pub count: u64,
}

impl StoredSample {
    /// Whether the thread was off the CPU (a flamegraph's off-CPU time).
    pub fn is_off_cpu(&self) -> bool {
        self.off_cpu.is_some() || self.origin == SampleOrigin::PerfOffCpu
    }

    /// Samples it counts for in a flamegraph at `rate_hz` (0: no perf): its count (1, or what
    /// the kernel counted), or its off-CPU time in sampling periods (at least one).
    pub fn periods(&self, rate_hz: u64) -> u64 {
        let off_periods = || ((self.weight_ns as f64 * rate_hz as f64 / 1e9).round() as u64).max(1);
        match self.origin {
            SampleOrigin::PerfOffCpu if rate_hz > 0 => off_periods(),
            SampleOrigin::KernelCount if self.off_cpu.is_some() && rate_hz > 0 => off_periods(),
            _ => self.count.max(1),
        }
    }

    /// Whether it lies inside one of its thread's stalls `spans` (start, end ns): the
    /// watchdog's by its tick; the kernel's counts, which have no instant, never.
    pub fn in_stall(&self, spans: &[(u64, u64)]) -> bool {
        match self.origin {
            SampleOrigin::Watchdog => spans.iter().any(|&(start, _)| start == self.tick_ns),
            SampleOrigin::KernelCount => false,
            _ => spans.iter().any(|&(start, end)| self.t_ns >= start && self.t_ns <= end),
        }
    }

    /// What is kept of sample `s` whose frames were interned as `stack`.
    pub fn of(s: &Sample, stack: Vec<u32>) -> Self {
        StoredSample {
            t_ns: s.t_ns,
            weight_ns: s.weight_ns,
            origin: s.origin,
            tick_ns: s.tick_ns,
            off_cpu: s.off_cpu.clone(),
            stack,
            count: s.count,
        }
    }
}

/// Distinct stacks folded at most before new ones are cut to their outermost [`TAIL_FRAMES`].
pub const MAX_FOLDED: usize = 1 << 15;
/// Frames kept of a stack folded past [`MAX_FOLDED`] (its outermost: the thread's own code).
pub const TAIL_FRAMES: usize = 24;

/// What samples folded together share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FoldKey {
    /// Process.
    pub pid: u32,
    /// Thread.
    pub tid: u32,
    /// Frame ids, innermost first.
    pub stack: Vec<u32>,
    /// Whether they were taken by the agent's watchdog (drawn only where perf took none).
    pub watchdog: bool,
    /// Whether the thread was off the CPU.
    pub off: bool,
    /// Why, where it was (the flamegraph's `[off-CPU: …]` box).
    pub off_cpu: Option<OffCpu>,
    /// Whether they lay inside a stall.
    pub in_stall: bool,
}

/// How many samples were folded under one [`FoldKey`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Samples ([`StoredSample::periods`] without perf).
    pub count: u64,
    /// [`StoredSample::periods`] at the session's rate.
    pub periods: u64,
}

/// The frame table and the samples of each thread.
#[derive(Debug, Clone)]
pub struct Stacks {
    frames: Vec<Frame>,
    sources: Vec<Option<String>>,
    index: HashMap<Frame, u32>,
    /// Recent samples by (pid, tid), in time order.
    threads: BTreeMap<(u32, u32), Vec<StoredSample>>,
    /// Older samples, counted by stack.
    folded: HashMap<FoldKey, Folded>,
    /// The earliest time of a folded sample (ns; `u64::MAX`: none was).
    folded_from_ns: u64,
    /// Every sample is kept one by one (a speedscope profile's timelines need them all).
    keep_all: bool,
    /// The perf rate of the samples (Hz, 0: none), to fold off-CPU time into periods.
    rate_hz: u64,
    count: u64,
}

impl Default for Stacks {
    fn default() -> Self {
        Stacks::new(0)
    }
}

impl Stacks {
    /// An empty store for samples taken at `rate_hz` (0: the watchdog only).
    pub fn new(rate_hz: u64) -> Self {
        Stacks {
            frames: Vec::new(),
            sources: Vec::new(),
            index: HashMap::new(),
            threads: BTreeMap::new(),
            folded: HashMap::new(),
            folded_from_ns: u64::MAX,
            keep_all: false,
            rate_hz,
            count: 0,
        }
    }

    /// Sets the perf rate the samples are taken at (Hz, 0: none).
    pub fn set_rate(&mut self, rate_hz: u64) {
        self.rate_hz = rate_hz;
    }

    /// Keeps every sample one by one, never folding (a speedscope profile, whose per-thread
    /// timelines need them all).
    pub fn keep_all(&mut self) {
        self.keep_all = true;
    }

    /// The perf rate the samples were taken at (Hz, 0: none).
    pub fn rate_hz(&self) -> u64 {
        self.rate_hz
    }

    /// The id of `frame`, adding it (with its source line, asked for only when new).
    pub fn intern(&mut self, mut frame: Frame, source: impl FnOnce(&Frame) -> Option<String>) -> u32 {
        if let Some(&id) = self.index.get(&frame) {
            return id;
        }
        // What the target's user (or a recording) wrote: never a control character.
        use crate::units::printable;
        let Frame { name, module, file, .. } = &mut frame;
        *name = printable(std::mem::take(name));
        *module = module.take().map(printable);
        *file = file.take().map(printable);
        let id = self.frames.len() as u32;
        self.sources.push(source(&frame).map(printable));
        self.frames.push(frame.clone());
        self.index.insert(frame, id);
        id
    }

    /// The id of a known frame.
    pub fn id_of(&self, frame: &Frame) -> Option<u32> {
        self.index.get(frame).copied()
    }

    /// Adds a sample whose frames were interned as `stack` (innermost first).
    pub fn push(&mut self, s: &Sample, stack: Vec<u32>) {
        self.push_stored(s.pid, s.tid, StoredSample::of(s, stack));
    }

    /// Adds a stored sample of thread `tid` of `pid`.
    pub fn push_stored(&mut self, pid: u32, tid: u32, s: StoredSample) {
        let v = self.threads.entry((pid, tid)).or_default();
        // Sources interleave a little (each is read in turn): keep every thread sorted by time.
        let at = v.len() - v.iter().rev().take_while(|l| l.t_ns > s.t_ns).count();
        self.count = self.count.saturating_add(s.count.max(1));
        v.insert(at, s);
    }

    /// A frame by id.
    pub fn frame(&self, id: u32) -> &Frame {
        &self.frames[id as usize]
    }

    /// The source line of a frame, when its file was readable.
    pub fn source(&self, id: u32) -> Option<&str> {
        self.sources.get(id as usize)?.as_deref()
    }

    /// Every frame, by id.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether perf took any of the samples (not only the agent's watchdog, during stalls).
    pub fn any_perf(&self) -> bool {
        self.threads.values().any(|v| v.iter().any(|s| s.origin != SampleOrigin::Watchdog))
            || self.folded.keys().any(|k| !k.watchdog)
    }

    /// Every thread's recent samples (those not yet folded).
    pub fn threads(&self) -> impl Iterator<Item = (u32, u32, &[StoredSample])> {
        self.threads.iter().map(|(&(p, t), v)| (p, t, v.as_slice()))
    }

    /// The samples folded into counts, and the time of the earliest of them (`u64::MAX` when
    /// none was).
    pub fn folded(&self) -> (&HashMap<FoldKey, Folded>, u64) {
        (&self.folded, self.folded_from_ns)
    }

    /// Folds the samples taken before `before_ns` into counts by stack, except those that
    /// `keep(pid, tid, sample)` (the samples of recent stalls, of stalls not yet classified);
    /// `in_stall(pid, tid, sample)` says which lay in a stall. The frame table and the count of
    /// samples taken stay. Nothing is folded in a store that keeps all.
    pub fn fold_before(
        &mut self,
        before_ns: u64,
        keep: impl Fn(u32, u32, &StoredSample) -> bool,
        in_stall: impl Fn(u32, u32, &StoredSample) -> bool,
    ) {
        if self.keep_all {
            return;
        }
        for (&(pid, tid), v) in self.threads.iter_mut() {
            let old = v.partition_point(|s| s.t_ns < before_ns);
            let mut kept = Vec::new();
            for s in v.drain(..old) {
                if keep(pid, tid, &s) {
                    kept.push(s);
                    continue;
                }
                self.folded_from_ns = self.folded_from_ns.min(s.t_ns);
                let (count, periods) = (s.count.max(1), s.periods(self.rate_hz));
                let mut key = FoldKey {
                    pid,
                    tid,
                    watchdog: s.origin == SampleOrigin::Watchdog,
                    off: s.is_off_cpu(),
                    in_stall: in_stall(pid, tid, &s),
                    off_cpu: s.off_cpu.clone(),
                    stack: s.stack,
                };
                // Past MAX_FOLDED distinct stacks, a new one is kept by its outermost frames
                // only: the long tail of rare stacks (a GC helper reached once) stops growing.
                if self.folded.len() >= MAX_FOLDED && !self.folded.contains_key(&key) {
                    key.stack.drain(..key.stack.len().saturating_sub(TAIL_FRAMES));
                }
                let f = self.folded.entry(key).or_default();
                f.count = f.count.saturating_add(count);
                f.periods = f.periods.saturating_add(periods);
            }
            if !kept.is_empty() {
                v.splice(0..0, kept);
            }
        }
        self.threads.retain(|_, v| !v.is_empty());
    }

    /// Samples of a thread taken in `[start, end]` (ns); watchdog samples by their tick instead.
    pub fn during(&self, pid: u32, tid: u32, start: u64, end: u64) -> impl Iterator<Item = &StoredSample> {
        let v = self.threads.get(&(pid, tid)).map_or(&[][..], |v| v.as_slice());
        let from = v.partition_point(|s| s.t_ns < start);
        v[from..].iter().take_while(move |s| s.t_ns <= end).filter(move |s| match s.origin {
            SampleOrigin::Watchdog => s.tick_ns == start,
            SampleOrigin::KernelCount => false,
            _ => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ns: u64, stack: Vec<u32>) -> StoredSample {
        StoredSample { t_ns, weight_ns: 0, origin: SampleOrigin::PerfCpu, tick_ns: 0, off_cpu: None, stack, count: 1 }
    }

    #[test]
    fn old_samples_fold_into_counts_and_rare_stacks_stop_growing_the_table() {
        let mut s = Stacks::new(997);
        // MAX_FOLDED distinct deep stacks, then as many more, then one seen again: all counted.
        let deep = |i: u32| (0..40).map(|d| if d == 0 { i } else { 1_000_000 + d }).collect::<Vec<u32>>();
        let n = MAX_FOLDED as u32 * 2;
        for i in 0..n {
            s.push_stored(1, 1, sample(u64::from(i), deep(i)));
        }
        s.push_stored(1, 1, sample(u64::from(n), deep(0)));
        s.push_stored(1, 1, sample(u64::from(n) + 1_000, deep(7)));
        s.fold_before(u64::from(n) + 1, |_, _, _| false, |_, _, st| st.t_ns % 2 == 0);
        let (folded, from) = s.folded();
        assert_eq!(from, 0);
        // The first MAX_FOLDED stacks whole (each counted in or out of a stall), then every
        // later one cut to its outermost TAIL_FRAMES frames: one key (in a stall or not) each.
        assert!(folded.len() <= MAX_FOLDED + 2, "{}", folded.len());
        let total: u64 = folded.values().map(|f| f.count).sum();
        assert_eq!(total, u64::from(n) + 1);
        assert!(folded.keys().any(|k| k.stack.len() == TAIL_FRAMES));
        assert_eq!(folded.iter().filter(|(k, _)| k.stack == deep(0)).map(|(_, f)| f.count).sum::<u64>(), 2);
        // What was not old enough stays one by one; the count of samples taken is unchanged.
        let left: Vec<u64> = s.threads().flat_map(|t| t.2.iter().map(|x| x.t_ns)).collect();
        assert_eq!(left, [u64::from(n) + 1_000]);
        assert_eq!(s.len(), u64::from(n) + 2);
    }
}
