//! Sampled stacks of a session: an interned frame table (with the source line of each frame
//! where the file could be read) and every sample as frame ids, by thread and time.

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

/// The frame table and the samples of each thread.
#[derive(Debug, Clone, Default)]
pub struct Stacks {
    frames: Vec<Frame>,
    sources: Vec<Option<String>>,
    index: HashMap<Frame, u32>,
    /// Samples by (pid, tid), in arrival order (sorted by [`Stacks::sort`]).
    threads: BTreeMap<(u32, u32), Vec<StoredSample>>,
    count: u64,
}

impl Stacks {
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
    }

    /// Every thread's samples.
    pub fn threads(&self) -> impl Iterator<Item = (u32, u32, &[StoredSample])> {
        self.threads.iter().map(|(&(p, t), v)| (p, t, v.as_slice()))
    }

    /// Drops the samples taken before `before_ns` unless `keep(pid, tid, t_ns)` (the frame table
    /// and the count of samples taken stay).
    pub fn retain_before(&mut self, before_ns: u64, keep: impl Fn(u32, u32, u64) -> bool) {
        for (&(pid, tid), v) in self.threads.iter_mut() {
            v.retain(|s| s.t_ns >= before_ns || keep(pid, tid, s.t_ns));
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
