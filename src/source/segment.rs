//! The reader's side of an agent's shared-memory segment: finding segments, validating the
//! layout, and taking consistent snapshots of loop slots without ever blocking the writer.

use looptop_abi::{
    slot_state, Header, LoopSlot, Record, SampleEntry, EVENT_OFFSET, EVENT_RING, HIST_BUCKETS, LAYOUT_VERSION,
    LOOP_SLOTS, MAGIC, PROBE_CHANNELS, PROBE_OFFSET, PROBE_RING, RECORD_SIZE, SAMPLE_FRAMES, SAMPLE_OFFSET,
    SAMPLE_RING, SEGMENT_PREFIX, SEGMENT_SIZE, STALL_RING,
};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};

/// Why a segment cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Opening or mapping failed.
    #[error("cannot read agent segment {path}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a segment, or still being created.
    #[error("{path} is not a looptop segment (or is still being created)")]
    NotSegment {
        /// The file.
        path: PathBuf,
    },
    /// Written by an agent of another layout version.
    #[error(
        "agent segment {path} has layout version {found}; this looptop reads version {LAYOUT_VERSION}: use the \
         looptop whose agent the process loaded (see `looptop --version`)"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// The folder segments live in (`LOOPTOP_SHM_DIR`, default `/dev/shm`).
pub fn shm_dir() -> PathBuf {
    std::env::var_os(looptop_abi::ENV_SHM_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| looptop_abi::DEFAULT_SHM_DIR.into())
}

/// Every segment file in the folder, with the pid its name carries.
pub fn list(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let pid = name.to_str()?.strip_prefix(SEGMENT_PREFIX)?.parse().ok()?;
            Some((pid, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// A mapped segment (read-only). The mapping stays valid after the writer exits and after the
/// file is removed, so final figures can be read once the process is gone.
pub struct Segment {
    map: Mmap,
    path: PathBuf,
}

/// A consistent copy of one loop slot.
#[derive(Debug, Clone)]
pub struct SlotSnapshot {
    /// Slot state ([`slot_state`]).
    pub state: u32,
    /// Claim number.
    pub generation: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name at claim time.
    pub name: String,
    /// First wait (ns).
    pub claimed_ns: u64,
    /// Thread exit (ns), 0 while alive.
    pub ended_ns: u64,
    /// Completed ticks.
    pub ticks: u64,
    /// Σ busy (ns).
    pub busy_ns: u64,
    /// Σ idle (ns).
    pub idle_ns: u64,
    /// Longest tick (ns).
    pub max_busy_ns: u64,
    /// Current tick start while busy, else 0.
    pub busy_since_ns: u64,
    /// Stalls written so far.
    pub stall_count: u64,
    /// Histogram of busy time per tick.
    pub hist: Box<[u64]>,
    /// False when the writer never left its write section while we read (a process that died
    /// mid-update): the figures may be off by one tick.
    pub seq_ok: bool,
}

impl Segment {
    /// Maps and validates a segment.
    pub fn open(path: &Path) -> Result<Segment, SegmentError> {
        let io = |source| SegmentError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < std::mem::size_of::<Header>() as u64 {
            return Err(SegmentError::NotSegment { path: path.to_path_buf() });
        }
        // SAFETY: the agent never shrinks a segment after creating it; all fields that change
        // are read through atomics.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let seg = Segment { map, path: path.to_path_buf() };
        let h = seg.header();
        // SAFETY: magic is written last by the agent (after a release fence).
        let magic = unsafe { std::ptr::read_volatile(&h.magic) };
        fence(Ordering::Acquire);
        if magic != MAGIC {
            return Err(SegmentError::NotSegment { path: path.to_path_buf() });
        }
        if h.version != LAYOUT_VERSION
            || h.header_size as usize != std::mem::size_of::<Header>()
            || h.slot_size as usize != std::mem::size_of::<LoopSlot>()
            || h.loop_slots as usize != LOOP_SLOTS
            || (len as usize) < SEGMENT_SIZE
        {
            return Err(SegmentError::Version { path: path.to_path_buf(), found: h.version });
        }
        Ok(seg)
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: the map is at least a header long (checked in open) and page aligned.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// Executable path from the header.
    pub fn exe(&self) -> String {
        let e = &self.header().exe;
        let n = e.iter().position(|&b| b == 0).unwrap_or(e.len());
        String::from_utf8_lossy(&e[..n]).into_owned()
    }

    fn slot(&self, i: usize) -> &LoopSlot {
        // SAFETY: open checked the map holds SEGMENT_SIZE bytes; slots are 8-byte aligned.
        unsafe { &*(self.map.as_ptr().add(looptop_abi::slot_offset(i)) as *const LoopSlot) }
    }

    /// Snapshots of every claimed slot. A slot whose writer keeps it busy is read anyway after a
    /// few tries (its process may have died mid-update); the counters are monotonic, so a torn
    /// read is off by at most one tick.
    pub fn snapshots(&self) -> Vec<(usize, SlotSnapshot)> {
        (0..LOOP_SLOTS)
            .filter_map(|i| {
                let slot = self.slot(i);
                let state = slot.state.load(Ordering::Acquire);
                if state != slot_state::ACTIVE && state != slot_state::EXITED {
                    return None;
                }
                Some((i, read_slot(slot)))
            })
            .collect()
    }

    /// Stalls `from..` of slot `i` still in its ring, and how many before them were overwritten.
    pub fn stalls(&self, i: usize, from: u64, upto: u64) -> (Vec<(u64, u64)>, u64) {
        let slot = self.slot(i);
        let first = from.max(upto.saturating_sub(STALL_RING as u64));
        let mut lost = first - from;
        let mut out = Vec::new();
        for n in first..upto {
            let e = &slot.stalls[(n % STALL_RING as u64) as usize];
            let before = e.seq.load(Ordering::Acquire);
            let start = e.start_ns.load(Ordering::Relaxed);
            let dur = e.duration_ns.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if before == n + 1 && e.seq.load(Ordering::Relaxed) == n + 1 {
                out.push((start, dur));
            } else {
                lost += 1;
            }
        }
        (out, lost)
    }
}

/// A copy of one [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCopy {
    /// [`looptop_abi::record_kind`].
    pub kind: u32,
    /// Thread id (agent) or runtime thread number (probe).
    pub thread: u32,
    /// When (ns).
    pub t_ns: u64,
    /// Duration (ns).
    pub dur_ns: u64,
    /// Kind-specific fields.
    pub a: u64,
    /// Kind-specific.
    pub b: u64,
    /// Kind-specific.
    pub c: u64,
    /// Kind-specific.
    pub d: u64,
}

/// Copies record `index` if the entry still holds it.
fn copy_record(r: &Record, index: u64) -> Option<RecordCopy> {
    let before = r.seq.load(Ordering::Acquire);
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let c = RecordCopy {
        kind: r.kind.load(Ordering::Relaxed),
        thread: r.thread.load(Ordering::Relaxed),
        t_ns: ld(&r.t_ns),
        dur_ns: ld(&r.dur_ns),
        a: ld(&r.a),
        b: ld(&r.b),
        c: ld(&r.c),
        d: ld(&r.d),
    };
    fence(Ordering::Acquire);
    (before == index + 1 && r.seq.load(Ordering::Relaxed) == index + 1).then_some(c)
}

impl Segment {
    fn ring(&self, offset: usize, len: usize) -> &[Record] {
        debug_assert!(offset + len * RECORD_SIZE <= SEGMENT_SIZE);
        // SAFETY: open checked the map holds SEGMENT_SIZE bytes; records are 8-byte aligned.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset) as *const Record, len) }
    }

    /// Agent records (allocator pauses) from index `from`; returns them, how many were lost, and
    /// the next index to read.
    pub fn events(&self, from: u64) -> (Vec<RecordCopy>, u64, u64) {
        let ring = self.ring(EVENT_OFFSET, EVENT_RING);
        let head = self.header().event_head.load(Ordering::Acquire);
        let first = from.max(head.saturating_sub(EVENT_RING as u64));
        let mut lost = first - from;
        let mut out = Vec::new();
        for i in first..head {
            match copy_record(&ring[(i % EVENT_RING as u64) as usize], i) {
                Some(c) => out.push(c),
                None => lost += 1,
            }
        }
        (out, lost, head)
    }

    /// Records of probe channel `ch` from index `from` (probes keep no head counter: the reader
    /// follows the sequence numbers); returns them, how many were lost, and the next index.
    pub fn probe_records(&self, ch: usize, from: u64) -> (Vec<RecordCopy>, u64, u64) {
        let ring = self.ring(PROBE_OFFSET + ch * PROBE_RING * RECORD_SIZE, PROBE_RING);
        let (mut next, mut lost, mut out) = (from, 0, Vec::new());
        for _ in 0..PROBE_RING {
            let r = &ring[(next % PROBE_RING as u64) as usize];
            let seq = r.seq.load(Ordering::Acquire);
            // The writer lapped us: skip to the record that now sits where we looked.
            if seq > next + 1 && (seq - 1) % PROBE_RING as u64 == next % PROBE_RING as u64 {
                lost += seq - 1 - next;
                next = seq - 1;
            }
            match copy_record(r, next) {
                Some(c) => {
                    out.push(c);
                    next += 1;
                }
                None => break,
            }
        }
        (out, lost, next)
    }

    /// Number of probe channels.
    pub fn probe_channels(&self) -> usize {
        PROBE_CHANNELS
    }

    /// Watchdog stack samples from index `from`; returns them, how many were lost, and the next
    /// index. The newest entries may still be being written (the handler has not run yet): the
    /// reader stops there and reads them next time.
    pub fn samples(&self, from: u64) -> (Vec<SampleCopy>, u64, u64) {
        // SAFETY: open checked the map holds SEGMENT_SIZE bytes; entries are 8-byte aligned.
        let ring = unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(SAMPLE_OFFSET) as *const SampleEntry, SAMPLE_RING)
        };
        let head = self.header().sample_head.load(Ordering::Acquire);
        let first = from.max(head.saturating_sub(SAMPLE_RING as u64));
        let (mut lost, mut out) = (first - from, Vec::new());
        for i in first..head {
            match copy_sample(&ring[(i % SAMPLE_RING as u64) as usize], i) {
                Some(c) => out.push(c),
                None if i + 2 >= head => return (out, lost, i),
                None => lost += 1,
            }
        }
        (out, lost, head)
    }
}

/// A copy of one watchdog [`SampleEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleCopy {
    /// Thread id.
    pub tid: u32,
    /// When (ns).
    pub t_ns: u64,
    /// Start of the tick it was taken in (ns).
    pub tick_ns: u64,
    /// [`looptop_abi::sample_flags`].
    pub flags: u64,
    /// System call the thread waited in, when off-CPU.
    pub syscall: Option<i64>,
    /// Kernel function it slept in, when off-CPU.
    pub wchan: Option<String>,
    /// Addresses, innermost first.
    pub frames: Vec<u64>,
}

/// Copies sample `index` if the entry holds it, complete.
fn copy_sample(e: &SampleEntry, index: u64) -> Option<SampleCopy> {
    let before = e.seq.load(Ordering::Acquire);
    if before != index + 1 {
        return None;
    }
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let n = (e.nframes.load(Ordering::Relaxed) as usize).min(SAMPLE_FRAMES);
    let mut wchan = Vec::with_capacity(32);
    for w in &e.wchan {
        wchan.extend_from_slice(&ld(w).to_ne_bytes());
    }
    let wchan = String::from_utf8_lossy(&wchan[..wchan.iter().position(|&b| b == 0).unwrap_or(32)]).into_owned();
    let syscall = ld(&e.syscall);
    let c = SampleCopy {
        tid: e.tid.load(Ordering::Relaxed),
        t_ns: ld(&e.t_ns),
        tick_ns: ld(&e.tick_ns),
        flags: ld(&e.flags),
        syscall: (syscall != u64::MAX).then_some(syscall as i64),
        wchan: (!wchan.is_empty()).then_some(wchan),
        frames: e.frames[..n].iter().map(ld).collect(),
    };
    fence(Ordering::Acquire);
    (e.seq.load(Ordering::Relaxed) == index + 1).then_some(c)
}

fn read_slot(slot: &LoopSlot) -> SlotSnapshot {
    let mut hist = vec![0u64; HIST_BUCKETS].into_boxed_slice();
    let mut tries = 0;
    loop {
        let s1 = slot.seq.load(Ordering::Acquire);
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let snap = SlotSnapshot {
            state: slot.state.load(Ordering::Relaxed),
            generation: slot.generation.load(Ordering::Relaxed),
            tid: slot.tid.load(Ordering::Relaxed),
            name: {
                let n = looptop_abi::name_from_words(&slot.name);
                let len = n.iter().position(|&b| b == 0).unwrap_or(n.len());
                String::from_utf8_lossy(&n[..len]).into_owned()
            },
            claimed_ns: r(&slot.claimed_ns),
            ended_ns: r(&slot.ended_ns),
            ticks: r(&slot.ticks),
            busy_ns: r(&slot.busy_ns),
            idle_ns: r(&slot.idle_ns),
            max_busy_ns: r(&slot.max_busy_ns),
            busy_since_ns: r(&slot.busy_since_ns),
            stall_count: slot.stall_count.load(Ordering::Acquire),
            hist: Box::new([]),
            seq_ok: false,
        };
        for (h, a) in hist.iter_mut().zip(slot.hist.iter()) {
            *h = a.load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        let s2 = slot.seq.load(Ordering::Relaxed);
        tries += 1;
        let seq_ok = s1 == s2 && s1 % 2 == 0;
        if seq_ok || tries >= 64 {
            return SlotSnapshot { hist, seq_ok, ..snap };
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// A writer hammering one slot while a reader snapshots it: every snapshot must be
    /// consistent (ticks == Σ histogram, busy == Σ recorded ticks).
    #[test]
    fn snapshots_are_consistent_under_concurrent_writes() {
        // SAFETY: all-zero bytes are a valid LoopSlot (atomics and integers).
        let slot: Arc<LoopSlot> = Arc::from(unsafe { Box::<LoopSlot>::new_zeroed().assume_init() });
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (slot, stop) = (slot.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    slot.write_begin();
                    slot.record_tick(n, 1000 + n % 5000, u64::MAX);
                    slot.write_end();
                    n += 1;
                }
                n
            })
        };
        let mut checked = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while std::time::Instant::now() < deadline {
            let s = read_slot(&slot);
            if s.seq_ok {
                assert_eq!(s.ticks, s.hist.iter().sum::<u64>());
                checked += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().unwrap();
        assert!(written > 0 && checked > 0, "written {written}, checked {checked}");
    }
}
