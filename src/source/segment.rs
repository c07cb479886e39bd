//! The reader's side of an agent's shared-memory segment: finding segments, deciding whether to
//! believe one, and taking consistent copies of its header, loop slots and rings.
//!
//! The segment is read with `pread` from a descriptor, never through a mapping: its owner (the
//! target's user) can truncate or replace the file at any moment, and a read past its end is then
//! a short read (reported as [`SegmentError::Truncated`]), not a `SIGBUS` in looptop. Files are
//! opened by [`crate::safefs`] rules: no link, no FIFO, a bounded size. A segment is believed only
//! when its owner is the process's user and its header names that process (pid and start time) —
//! or, for `looptop run`, our session.
//!
//! Consistency: every record, stall and sample carries its index + 1 as a sequence word written
//! last by the agent; the reader copies a span, then reads the sequence words again, and keeps
//! only entries whose word did not change. A slot's counters are guarded by a seqlock read before
//! and after the copy.

use crate::safefs;
use looptop_abi::{
    backed_len, python::PY_FRAMES, slot_state, Header, LoopSlot, Record, SampleEntry, StackCopyEntry, StallEntry,
    COPY_OFFSET, COPY_RING, EVENT_OFFSET, EVENT_RING, HIST_BUCKETS, JS_FRAMES, LAYOUT_VERSION, LOOP_SLOTS, MAGIC,
    PROBE_CHANNELS, PROBE_OFFSET, PROBE_RING, RECORD_SIZE, SAMPLE_FRAMES, SAMPLE_OFFSET, SAMPLE_RING, SAMPLE_SIZE,
    SEGMENT_PREFIX, SEGMENT_SIZE, SLOT_OFFSET, SLOT_SIZE, STALL_RING,
};
use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Why a segment cannot be read or is not believed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Opening or reading failed.
    #[error("cannot read agent segment {path}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a segment (a FIFO, a link, another file), or still being created.
    #[error("{path} is not a looptop segment ({why})")]
    NotSegment {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        why: String,
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
    /// Shorter than its header says (cut short by its owner, or the folder filled up).
    #[error("agent segment {path} is truncated ({len} bytes where its header needs {need}); restart the process to observe it again")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length it should have.
        need: u64,
    },
    /// Its header or a slot holds what no agent writes (a version far from any looptop's, a slot
    /// state no agent sets), or it changed under the reader.
    #[error("agent segment {path} is damaged ({why}); restart the process to observe it again")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Not the agent's segment of the process it names: another user's file, a header naming
    /// another process, or one left by a dead process whose pid was reused.
    #[error("ignored {path}: {why}")]
    NotBelieved {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl SegmentError {
    /// Whether the error says nothing about the process (a file that is simply not a segment, or
    /// a stale one): skipped silently.
    pub fn is_noise(&self) -> bool {
        matches!(self, SegmentError::NotSegment { .. })
    }
}

/// The folder segments live in (`LOOPTOP_SHM_DIR`, default `/dev/shm`).
pub fn shm_dir() -> PathBuf {
    std::env::var_os(looptop_abi::ENV_SHM_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| looptop_abi::DEFAULT_SHM_DIR.into())
}

/// The pid a segment's file name carries: `looptop-<pid>` or `looptop-<pid>-<hex>`.
pub fn pid_of_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(SEGMENT_PREFIX)?;
    let (digits, suffix) = rest.split_once('-').unwrap_or((rest, ""));
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !suffix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    digits.parse().ok()
}

/// Every file in the folder named like a segment, with the pid its name carries (nothing is
/// opened: a name proves nothing).
pub fn list(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let pid = pid_of_name(e.file_name().to_str()?)?;
            Some((pid, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// What a segment must belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The live process with this pid.
    Pid(u32),
    /// A process launched by our `looptop run` session (alive or not).
    Session(u64),
    /// Whatever process the name and header agree on (to remove a dead process's segment).
    Named,
}

/// What `/proc` says of a live process: its start time and the user its files are created as.
fn identity(pid: u32) -> Option<(u64, u32)> {
    let p = procfs::process::Process::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    if stat.state == 'Z' || stat.state == 'X' {
        return None;
    }
    let creds = safefs::Creds::of_pid(pid)?;
    Some((stat.starttime, creds.uid))
}

/// A segment opened for reading, with a copy of its header as of the last [`Segment::refresh`].
pub struct Segment {
    file: File,
    path: PathBuf,
    header: Box<Header>,
    len: u64,
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

/// Zeroed memory of a plain `repr(C)` type made of integers, byte arrays and atomics.
fn zeroed<T>() -> Box<T> {
    let layout = std::alloc::Layout::new::<T>();
    assert!(layout.size() > 0, "zero-sized ABI type");
    // SAFETY: a zeroed allocation of T's layout; the ABI types read here are integers, byte
    // arrays and atomics, for which all-zero is a valid value.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut T;
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(p)
    }
}

/// The bytes of such a value, to read into.
fn bytes_of_mut<T>(v: &mut T) -> &mut [u8] {
    // SAFETY: any byte pattern is a valid value of the ABI types (integers and atomics), and the
    // slice covers exactly the value.
    unsafe { std::slice::from_raw_parts_mut((v as *mut T).cast::<u8>(), size_of::<T>()) }
}

impl Segment {
    /// Opens a segment and decides whether to believe it (see the module documentation).
    pub fn open(path: &Path, owner: Owner) -> Result<Segment, SegmentError> {
        let not_segment = |why: &str| SegmentError::NotSegment { path: path.to_path_buf(), why: why.to_string() };
        let file = safefs::open(path, safefs::Expect::read(SEGMENT_SIZE as u64)).map_err(|e| match e {
            safefs::Refused::Io { source, .. } if source.raw_os_error() == Some(libc::ELOOP) => {
                not_segment("a symbolic link")
            }
            safefs::Refused::Io { source, .. } => SegmentError::Io { path: path.to_path_buf(), source },
            safefs::Refused::NotRegular { .. } => not_segment("not a regular file"),
            safefs::Refused::TooLarge { .. } => not_segment("larger than any segment"),
            safefs::Refused::Owner { .. } => not_segment("another user's file"),
        })?;
        let meta = file.metadata().map_err(|source| SegmentError::Io { path: path.to_path_buf(), source })?;
        let mut seg = Segment { file, path: path.to_path_buf(), header: zeroed(), len: meta.len() };
        if seg.len < 8 {
            return Err(not_segment("empty, or still being created"));
        }
        let mut magic = [0u8; 8];
        seg.read_exact_at(&mut magic, 0)?;
        if magic != MAGIC {
            return Err(not_segment("no looptop header"));
        }
        // Every layout version keeps the session where this one does: a launcher tells another
        // session's segment (of whatever version) from its own before anything else.
        let mut session = [0u8; 8];
        if let Owner::Session(s) = owner {
            seg.read_exact_at(&mut session, offset_of!(Header, session) as u64)?;
            if u64::from_ne_bytes(session) != s {
                return Err(SegmentError::NotBelieved { path: path.to_path_buf(), why: "of another session".into() });
            }
        }
        if seg.len < size_of::<Header>() as u64 {
            return Err(seg.truncated(size_of::<Header>() as u64));
        }
        seg.refresh()?;
        let h = &seg.header;
        if h.version != LAYOUT_VERSION {
            // Versions count up from 1: a number far past this one is damage, not an agent.
            if h.version == 0 || h.version > LAYOUT_VERSION + 100 {
                return Err(SegmentError::Damaged {
                    path: path.to_path_buf(),
                    why: format!("its header's layout version reads {}", h.version),
                });
            }
            return Err(SegmentError::Version { path: path.to_path_buf(), found: h.version });
        }
        let layout_ok = h.header_size as usize == size_of::<Header>()
            && h.slot_size as usize == SLOT_SIZE
            && h.loop_slots as usize == LOOP_SLOTS
            && h.slot_offset as usize == SLOT_OFFSET
            && h.event_offset as usize == EVENT_OFFSET
            && h.probe_offset as usize == PROBE_OFFSET
            && h.sample_offset as usize == SAMPLE_OFFSET
            && h.probe_channels as usize == PROBE_CHANNELS
            && h.probe_ring as usize == PROBE_RING
            && h.sample_ring as usize == SAMPLE_RING
            && h.sample_size as usize == SAMPLE_SIZE
            && h.record_size as usize == RECORD_SIZE;
        if !layout_ok {
            return Err(not_segment("a header of version 3 with another layout"));
        }
        seg.believe(owner, meta.uid())?;
        Ok(seg)
    }

    /// Checks the segment belongs to what the caller follows.
    fn believe(&self, owner: Owner, file_uid: u32) -> Result<(), SegmentError> {
        let h = &self.header;
        let refuse = |why: String| Err(SegmentError::NotBelieved { path: self.path.clone(), why });
        let named = self.path.file_name().and_then(|n| pid_of_name(n.to_str()?));
        if named != Some(h.pid) {
            return refuse(format!("its header names pid {}, not the pid of its name", h.pid));
        }
        match (owner, identity(h.pid)) {
            (Owner::Named, _) => Ok(()),
            (Owner::Pid(p), _) if p != h.pid => refuse(format!("it is the segment of pid {}, not {p}", h.pid)),
            (Owner::Pid(p), None) => refuse(format!("process {p} is gone")),
            (Owner::Session(s), _) if h.session != s => refuse("it belongs to another looptop session".into()),
            (_, Some((start, uid))) => {
                if start != h.start_time_ticks {
                    refuse(format!("it was left by an earlier process {} (the pid was reused)", h.pid))
                } else if uid != file_uid {
                    refuse(format!("it belongs to uid {file_uid}, but process {} runs as uid {uid}", h.pid))
                } else {
                    Ok(())
                }
            }
            // A process of our session that is gone already: its final figures, if the file is
            // its own user's (the one its header names) and the session (a secret its
            // environment carried) matches.
            (Owner::Session(_), None) if h.owner_uid == file_uid => Ok(()),
            (Owner::Session(_), None) => refuse(format!("it belongs to uid {file_uid}, not its writer's")),
        }
    }

    fn truncated(&self, need: u64) -> SegmentError {
        SegmentError::Truncated { path: self.path.clone(), len: self.len, need }
    }

    /// Reads exactly `buf.len()` bytes at `off`; a short read means the file was cut short.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> Result<(), SegmentError> {
        match self.file.read_exact_at(buf, off) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
                Err(SegmentError::Truncated { path: self.path.clone(), len, need: off + buf.len() as u64 })
            }
            Err(source) => Err(SegmentError::Io { path: self.path.clone(), source }),
        }
    }

    /// Reads the header again (its counters and exit time change) and checks the file still
    /// holds every slot the header says is backed.
    pub fn refresh(&mut self) -> Result<(), SegmentError> {
        let mut h = zeroed::<Header>();
        self.read_exact_at(bytes_of_mut(&mut *h), 0)?;
        // Checked when it was opened: a change since is its owner's doing, not an agent's.
        if self.header.magic != [0; 8] && (h.magic != self.header.magic || h.version != self.header.version) {
            let why = format!("its header changed while it was read (layout version {})", h.version);
            return Err(SegmentError::Damaged { path: self.path.clone(), why });
        }
        let backed = (h.backed_slots.load(Ordering::Relaxed) as usize).min(LOOP_SLOTS);
        self.len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        self.header = h;
        let need = backed_len(backed.max(1)) as u64;
        if self.header.version == LAYOUT_VERSION && self.len < need {
            return Err(self.truncated(need));
        }
        Ok(())
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header as of the last [`Segment::refresh`].
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Executable path from the header.
    pub fn exe(&self) -> String {
        let e = &self.header.exe;
        let n = e.iter().position(|&b| b == 0).unwrap_or(e.len());
        String::from_utf8_lossy(&e[..n]).into_owned()
    }

    /// Slots the header says are backed.
    fn backed_slots(&self) -> usize {
        (self.header.backed_slots.load(Ordering::Relaxed) as usize).min(LOOP_SLOTS)
    }

    /// Snapshots of every claimed slot. A slot whose writer keeps it busy is read anyway after a
    /// few tries (its process may have died mid-update); the counters are monotonic, so a torn
    /// read is off by at most one tick.
    pub fn snapshots(&self) -> Result<Vec<(usize, SlotSnapshot)>, SegmentError> {
        let mut out = Vec::new();
        let mut buf = zeroed::<LoopSlot>();
        for i in 0..self.backed_slots() {
            if let Some(snap) = self.read_slot(i, &mut buf)? {
                out.push((i, snap));
            }
        }
        Ok(out)
    }

    fn read_slot(&self, i: usize, buf: &mut LoopSlot) -> Result<Option<SlotSnapshot>, SegmentError> {
        let base = looptop_abi::slot_offset(i) as u64;
        let head = offset_of!(LoopSlot, stalls);
        let hist = offset_of!(LoopSlot, hist);
        let mut seq = [0u8; 8];
        for tries in 1.. {
            self.read_exact_at(&mut seq, base)?;
            let s1 = u64::from_ne_bytes(seq);
            let bytes = bytes_of_mut(buf);
            self.read_exact_at(&mut bytes[..head], base)?;
            let state = buf.state.load(Ordering::Relaxed);
            if state > slot_state::EXITED {
                let why = format!("loop slot {i} is in state {state}, which no agent sets");
                return Err(SegmentError::Damaged { path: self.path.clone(), why });
            }
            if state != slot_state::ACTIVE && state != slot_state::EXITED {
                return Ok(None);
            }
            let bytes = bytes_of_mut(buf);
            self.read_exact_at(&mut bytes[hist..hist + HIST_BUCKETS * 8], base + hist as u64)?;
            self.read_exact_at(&mut seq, base)?;
            let seq_ok = s1 == u64::from_ne_bytes(seq) && s1 % 2 == 0;
            if seq_ok || tries >= 16 {
                return Ok(Some(snapshot_of(buf, seq_ok)));
            }
            std::thread::yield_now();
        }
        unreachable!("the loop returns")
    }

    /// Copies entries `[first, upto)` of a ring of `ring` entries of `T` at `offset`, each
    /// validated by its sequence word (index + 1 when valid): a pass that copies, then a pass
    /// that reads the words again. Returns the entries still valid, in order, with their indices.
    /// Each pass reads the span in one or two system calls (two where it wraps).
    fn ring_span<T: Sequenced>(
        &self,
        offset: u64,
        ring: usize,
        first: u64,
        upto: u64,
    ) -> Result<Vec<(u64, Box<T>)>, SegmentError> {
        let size = size_of::<T>();
        let first = first.max(upto.saturating_sub(ring as u64));
        let count = upto.saturating_sub(first) as usize;
        let copy = self.ring_bytes(offset, ring, size, first, count)?;
        let again = self.ring_bytes(offset, ring, size, first, count)?;
        let seq_at = |bytes: &[u8], k: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[k * size..k * size + 8]);
            u64::from_ne_bytes(w)
        };
        let mut valid = Vec::with_capacity(count);
        for k in 0..count {
            let n = first + k as u64;
            if seq_at(&copy, k) == n + 1 && seq_at(&again, k) == n + 1 {
                let mut e = zeroed::<T>();
                bytes_of_mut(&mut *e).copy_from_slice(&copy[k * size..(k + 1) * size]);
                valid.push((n, e));
            }
        }
        Ok(valid)
    }

    /// The bytes of entries `first..first + count` (`count` ≤ `ring`) of a ring of `ring`
    /// entries of `size` bytes at `offset`.
    fn ring_bytes(
        &self,
        offset: u64,
        ring: usize,
        size: usize,
        first: u64,
        count: usize,
    ) -> Result<Vec<u8>, SegmentError> {
        let mut bytes = vec![0u8; count * size];
        let start = (first % ring as u64) as usize;
        let head = count.min(ring - start);
        self.read_exact_at(&mut bytes[..head * size], offset + (start * size) as u64)?;
        if head < count {
            self.read_exact_at(&mut bytes[head * size..], offset)?;
        }
        Ok(bytes)
    }

    /// Stalls `from..upto` of slot `i` still in its ring, and how many before them were lost.
    pub fn stalls(&self, i: usize, from: u64, upto: u64) -> Result<(Vec<(u64, u64)>, u64), SegmentError> {
        let first = from.max(upto.saturating_sub(STALL_RING as u64));
        let offset = (looptop_abi::slot_offset(i) + offset_of!(LoopSlot, stalls)) as u64;
        let got = self.ring_span::<StallEntry>(offset, STALL_RING, first, upto)?;
        // A count that went back (a slot rewritten under us) has lost nothing and has nothing new.
        let lost = upto.saturating_sub(from).saturating_sub(got.len() as u64);
        Ok((
            got.iter()
                .map(|(_, e)| (e.start_ns.load(Ordering::Relaxed), e.duration_ns.load(Ordering::Relaxed)))
                .collect(),
            lost,
        ))
    }

    /// Agent records (allocator pauses) from index `from`; returns them, how many were lost, and
    /// the next index to read.
    pub fn events(&self, from: u64) -> Result<(Vec<RecordCopy>, u64, u64), SegmentError> {
        let head = self.header.event_head.load(Ordering::Relaxed);
        let first = from.max(head.saturating_sub(EVENT_RING as u64));
        let got = self.ring_span::<Record>(EVENT_OFFSET as u64, EVENT_RING, first, head)?;
        let lost = head.saturating_sub(from) - got.len() as u64;
        Ok((got.iter().map(|(_, r)| RecordCopy::of(r)).collect(), lost, head.max(from)))
    }

    /// Records of probe channel `ch` from index `from` (probes keep no head counter: the reader
    /// follows the sequence numbers); returns them, how many were lost, and the next index.
    pub fn probe_records(&self, ch: usize, from: u64) -> Result<(Vec<RecordCopy>, u64, u64), SegmentError> {
        /// Records read per system call once the channel has something new.
        const CHUNK: u64 = 32;
        let offset = (PROBE_OFFSET + ch.min(PROBE_CHANNELS - 1) * PROBE_RING * RECORD_SIZE) as u64;
        let (mut next, mut lost, mut out) = (from, 0, Vec::new());
        let mut seq = [0u8; 8];
        self.read_exact_at(&mut seq, offset + (next % PROBE_RING as u64) * RECORD_SIZE as u64)?;
        let seq = u64::from_ne_bytes(seq);
        // The writer lapped us: skip to the record that now sits where we looked.
        if seq > next.saturating_add(1) && (seq - 1) % PROBE_RING as u64 == next % PROBE_RING as u64 {
            lost += seq - 1 - next;
            next = seq - 1;
        }
        // Nothing new (at u64::MAX, sequence words the writer never wrote, nothing ever is).
        if seq != next.saturating_add(1) {
            return Ok((out, lost, next));
        }
        let end = next.saturating_add(PROBE_RING as u64);
        while next < end {
            let upto = (next + CHUNK).min(end);
            let got = self.ring_span::<Record>(offset, PROBE_RING, next, upto)?;
            // The records written in order from `next`; the first gap is where the writer is.
            for (n, r) in got {
                if n != next {
                    break;
                }
                out.push(RecordCopy::of(&r));
                next += 1;
            }
            if next < upto {
                break;
            }
        }
        Ok((out, lost, next))
    }

    /// Number of probe channels.
    pub fn probe_channels(&self) -> usize {
        PROBE_CHANNELS
    }

    /// Watchdog stack samples from index `from`; returns them, how many were lost, and the next
    /// index. The newest entries may still be being written (the handler has not run yet): the
    /// reader stops there and reads them next time.
    pub fn samples(&self, from: u64) -> Result<(Vec<SampleCopy>, u64, u64), SegmentError> {
        let head = self.header.sample_head.load(Ordering::Relaxed);
        let first = from.max(head.saturating_sub(SAMPLE_RING as u64));
        let got = self.ring_span::<SampleEntry>(SAMPLE_OFFSET as u64, SAMPLE_RING, first, head)?;
        let (mut out, mut lost, mut expect) = (Vec::with_capacity(got.len()), first - from.min(first), first);
        for (n, e) in got {
            lost += n - expect;
            expect = n + 1;
            out.push(SampleCopy::of(n, &e));
        }
        // The newest entries may not be written yet: read them next time (unless far behind).
        if expect < head && head - expect <= 2 {
            return Ok((out, lost, expect));
        }
        lost += head.saturating_sub(expect);
        Ok((out, lost, head.max(from)))
    }
}

impl Segment {
    /// The copy of the user stack taken with sample `n`, when it has one and it was not
    /// overwritten since (the copy ring is shorter than the sample ring).
    pub fn stack_copy(&self, n: u64) -> Result<Option<crate::event::UserStack>, SegmentError> {
        let got = self.ring_span::<StackCopyEntry>(COPY_OFFSET as u64, COPY_RING, n, n + 1)?;
        let Some((_, c)) = got.into_iter().next() else { return Ok(None) };
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let len = (ld(&c.len) as usize).min(c.words.len() * 8) / 8;
        if len == 0 {
            return Ok(None);
        }
        let bytes = c.words[..len].iter().flat_map(|w| ld(w).to_ne_bytes()).collect();
        Ok(Some(crate::event::UserStack { ip: ld(&c.ip), sp: ld(&c.sp), bp: ld(&c.bp), bytes }))
    }
}

/// ABI entries whose first word is their sequence word (index + 1 when valid): ring reads
/// check it in the bytes they copied.
trait Sequenced {}

macro_rules! sequenced {
    ($($t:ty),*) => {$(
        // The sequence word must be the entry's first word, an AtomicU64.
        const _: () = assert!(offset_of!($t, seq) == 0);
        const _: fn(&$t) -> &std::sync::atomic::AtomicU64 = |e| &e.seq;
        impl Sequenced for $t {}
    )*};
}

sequenced!(Record, StallEntry, SampleEntry, StackCopyEntry);

fn snapshot_of(slot: &LoopSlot, seq_ok: bool) -> SlotSnapshot {
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let n = looptop_abi::name_from_words(&slot.name);
    let len = n.iter().position(|&b| b == 0).unwrap_or(n.len());
    SlotSnapshot {
        state: slot.state.load(Ordering::Relaxed),
        generation: slot.generation.load(Ordering::Relaxed),
        tid: slot.tid.load(Ordering::Relaxed),
        name: String::from_utf8_lossy(&n[..len]).into_owned(),
        claimed_ns: r(&slot.claimed_ns),
        ended_ns: r(&slot.ended_ns),
        ticks: r(&slot.ticks),
        busy_ns: r(&slot.busy_ns),
        idle_ns: r(&slot.idle_ns),
        max_busy_ns: r(&slot.max_busy_ns),
        busy_since_ns: r(&slot.busy_since_ns),
        stall_count: r(&slot.stall_count),
        hist: slot.hist.iter().map(r).collect(),
        seq_ok,
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

impl RecordCopy {
    fn of(r: &Record) -> Self {
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        RecordCopy {
            kind: r.kind.load(Ordering::Relaxed),
            thread: r.thread.load(Ordering::Relaxed),
            t_ns: ld(&r.t_ns),
            dur_ns: ld(&r.dur_ns),
            a: ld(&r.a),
            b: ld(&r.b),
            c: ld(&r.c),
            d: ld(&r.d),
        }
    }
}

/// A copy of one watchdog [`SampleEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleCopy {
    /// Its index in the ring's sequence (its stack copy's, [`Segment::stack_copy`]).
    pub index: u64,
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
    /// V8's two words of each of the innermost frames ([`SampleEntry::js`]).
    pub js: Vec<[u64; 2]>,
    /// The thread's Python frames ([`SampleEntry::py`]).
    pub py: Vec<[u64; 2]>,
}

impl SampleCopy {
    fn of(index: u64, e: &SampleEntry) -> Self {
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let n = (e.nframes.load(Ordering::Relaxed) as usize).min(SAMPLE_FRAMES);
        let mut wchan = Vec::with_capacity(32);
        for w in &e.wchan {
            wchan.extend_from_slice(&ld(w).to_ne_bytes());
        }
        let end = wchan.iter().position(|&b| b == 0).unwrap_or(32);
        let wchan = String::from_utf8_lossy(&wchan[..end]).into_owned();
        let syscall = ld(&e.syscall);
        SampleCopy {
            index,
            tid: e.tid.load(Ordering::Relaxed),
            t_ns: ld(&e.t_ns),
            tick_ns: ld(&e.tick_ns),
            flags: ld(&e.flags),
            syscall: (syscall != u64::MAX).then_some(syscall as i64),
            wchan: (!wchan.is_empty()).then_some(wchan),
            frames: e.frames[..n].iter().map(ld).collect(),
            js: e.js[..n.min(JS_FRAMES)].iter().map(|w| [ld(&w[0]), ld(&w[1])]).collect(),
            py: e.py[..(ld(&e.npy) as usize).min(PY_FRAMES)].iter().map(|w| [ld(&w[0]), ld(&w[1])]).collect(),
        }
    }
}

/// The segment of a live process, believed (see [`Segment::open`]); `None` when it has no file
/// named like one, else the first reason its files were refused.
pub fn find(dir: &Path, pid: u32) -> Option<Result<Segment, SegmentError>> {
    let mut first_err = None;
    for (p, path) in list(dir) {
        if p != pid {
            continue;
        }
        match Segment::open(&path, Owner::Pid(pid)) {
            Ok(seg) => return Some(Ok(seg)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map(Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(pid_of_name("looptop-42"), Some(42));
        assert_eq!(pid_of_name("looptop-42-0123abcd"), Some(42));
        assert_eq!(pid_of_name("looptop-42-zz"), None);
        assert_eq!(pid_of_name("looptop-run-1"), None);
        assert_eq!(pid_of_name("looptop-"), None);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("looptop-seg-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("looptop-{}", std::process::id()));
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Segment::open(&path, Owner::Pid(std::process::id())).err().unwrap();
        assert!(matches!(e, SegmentError::NotSegment { .. }), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A segment file laid out as the agent writes it (one slot backed, rings empty), with
    /// `words` (offset, value) written over it; opened as [`Owner::Named`].
    fn fake(tag: &str, adjust: impl FnOnce(&mut Header), words: &[(usize, u64)]) -> (PathBuf, Segment) {
        let dir = std::env::temp_dir().join(format!("looptop-seg-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{SEGMENT_PREFIX}{}", std::process::id()));
        let mut h = zeroed::<Header>();
        h.magic = MAGIC;
        h.version = LAYOUT_VERSION;
        h.header_size = size_of::<Header>() as u32;
        h.pid = std::process::id();
        (h.loop_slots, h.slot_size, h.slot_offset) = (LOOP_SLOTS as u32, SLOT_SIZE as u32, SLOT_OFFSET as u64);
        (h.event_offset, h.probe_offset, h.sample_offset) =
            (EVENT_OFFSET as u64, PROBE_OFFSET as u64, SAMPLE_OFFSET as u64);
        (h.probe_channels, h.probe_ring, h.record_size) =
            (PROBE_CHANNELS as u32, PROBE_RING as u32, RECORD_SIZE as u32);
        (h.sample_ring, h.sample_size) = (SAMPLE_RING as u32, SAMPLE_SIZE as u32);
        h.backed_slots.store(1, Ordering::Relaxed);
        adjust(&mut h);
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(backed_len(1) as u64).unwrap();
        file.write_all_at(bytes_of_mut(&mut *h), 0).unwrap();
        for &(at, v) in words {
            file.write_all_at(&v.to_ne_bytes(), at as u64).unwrap();
        }
        let seg = Segment::open(&path, Owner::Named).unwrap_or_else(|e| panic!("{e}"));
        (dir, seg)
    }

    /// Found by fuzzing the segment reader: counters and sequence words its writer (the target's
    /// user) controls overflowed the reader's arithmetic — a panic with overflow checks, a
    /// huge count of lost events without.
    #[test]
    fn counters_that_go_back_or_reach_u64_max_lose_nothing_and_panic_nowhere() {
        // A stall count that went back (5 stalls read, the slot now says 3).
        let (dir, seg) = fake("back", |_| {}, &[]);
        assert_eq!(seg.stalls(0, 5, 3).unwrap(), (vec![], 0));
        std::fs::remove_dir_all(dir).unwrap();
        // A probe reader that followed sequence words up to u64::MAX.
        let at = PROBE_OFFSET + (u64::MAX % PROBE_RING as u64) as usize * RECORD_SIZE;
        let (dir, seg) = fake("probe", |_| {}, &[(at, u64::MAX)]);
        let (records, lost, next) = seg.probe_records(0, u64::MAX).unwrap();
        assert_eq!((records.len(), lost, next), (0, 0, u64::MAX));
        std::fs::remove_dir_all(dir).unwrap();
        // A sample head at u64::MAX with the entry before the last written.
        let n = u64::MAX - 2;
        let at = SAMPLE_OFFSET + (n % SAMPLE_RING as u64) as usize * SAMPLE_SIZE;
        let (dir, seg) = fake("samples", |h| h.sample_head.store(u64::MAX, Ordering::Relaxed), &[(at, n + 1)]);
        let (samples, _, next) = seg.samples(u64::MAX - 3).unwrap();
        assert_eq!((samples.len(), next), (1, u64::MAX - 1));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
