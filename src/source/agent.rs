//! The agent source: watches the segments of a session (`looptop run`) or of one pid, and turns
//! their slots into events. Needs no privileges.

use super::segment::RecordCopy;
use super::segment::{self, Owner, Segment, SegmentError};
use crate::event::{Event, GcKind, LoopId, LoopTotals, OffCpu, ProcessInfo, Sample, SampleOrigin};
use crate::target::proc;
use looptop_abi::{alloc_call, record_kind, sample_flags, PROBE_CHANNELS};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Which segments to follow.
#[derive(Debug, Clone, Copy)]
pub enum Selector {
    /// Every process started under this `looptop run` session, descendants included.
    Session(u64),
    /// One process.
    Pid(u32),
}

/// What the source knows of one loop slot.
struct SlotTrack {
    id: LoopId,
    next_stall: u64,
    ended: bool,
}

/// One mapped process image.
struct Image {
    seg: Segment,
    inode: u64,
    exited: bool,
    slots: BTreeMap<usize, SlotTrack>,
    next_event: u64,
    next_probe: [u64; PROBE_CHANNELS],
    next_sample: u64,
    /// When the process was last seen alive (ns).
    alive_ns: u64,
    /// Tells when the process exited without its exit handlers (asked every poll).
    exit: proc::ExitWatch,
    /// The previous watchdog sample per thread: (tick, time), for sample weights.
    last_sample: BTreeMap<u32, (u64, u64)>,
}

impl Image {
    fn new(seg: Segment, inode: u64, exit: proc::ExitWatch) -> Self {
        Image {
            exit,
            seg,
            inode,
            exited: false,
            slots: BTreeMap::new(),
            next_event: 0,
            next_probe: [0; PROBE_CHANNELS],
            next_sample: 0,
            alive_ns: 0,
            last_sample: BTreeMap::new(),
        }
    }
}

/// How often the segment folder is listed for new processes while some are followed (ns).
const LIST_EVERY: u64 = 100_000_000;

/// Follows agent segments and yields events.
pub struct AgentSource {
    dir: PathBuf,
    selector: Selector,
    images: BTreeMap<u32, Image>,
    /// Segments read to their end (pid, inode): never taken up again.
    finished: std::collections::BTreeSet<(u32, u64)>,
    /// Processes seen so far.
    seen: usize,
    /// When the segment folder was last listed (ns).
    listed_at: u64,
    /// Segments that could not be read or were not believed, with why (reported once each).
    pub errors: Vec<SegmentError>,
    /// Per process, threads that waited but found no free loop slot (their ticks are not seen).
    pub without_slot: BTreeMap<u32, u64>,
    /// Live processes whose segment became unreadable mid-way (cut short, changed, damaged):
    /// what came after is not seen, so the observation is incomplete.
    pub lost: BTreeMap<u32, String>,
}

impl AgentSource {
    /// A source over the segment folder.
    pub fn new(selector: Selector) -> Self {
        AgentSource {
            dir: segment::shm_dir(),
            selector,
            images: BTreeMap::new(),
            finished: Default::default(),
            seen: 0,
            listed_at: 0,
            errors: Vec::new(),
            without_slot: BTreeMap::new(),
            lost: BTreeMap::new(),
        }
    }

    /// Number of processes seen so far.
    pub fn processes_seen(&self) -> usize {
        self.seen
    }

    /// Reads every followed segment once and appends what changed to `out`.
    pub fn poll(&mut self, now: u64, out: &mut Vec<Event>) {
        self.poll_listing(now, false, out);
    }

    /// The last read: lists the folder whenever it was last listed, so that no process that
    /// started since is missed.
    pub fn poll_last(&mut self, now: u64, out: &mut Vec<Event>) {
        self.poll_listing(now, true, out);
    }

    fn poll_listing(&mut self, now: u64, list: bool, out: &mut Vec<Event>) {
        // Listing the folder is the dearest part of a poll: a new process (or an exec) waits
        // for the next listing, its times are stamped by its agent all the same.
        if list || self.listed_at == 0 || now.saturating_sub(self.listed_at) >= LIST_EVERY {
            self.listed_at = now;
            self.discover(now, out);
        }
        for (&pid, img) in self.images.iter_mut() {
            if let Err(e) = poll_image(pid, img, now, out) {
                // Cut short or made unreadable by its owner: keep what was read, follow it no more.
                end_loops(img, img.alive_ns.max(img.seg.header().created_ns), false, out);
                img.exited = true;
                out.push(Event::ProcessExited { pid, at_ns: img.alive_ns, clean: false });
                if crate::target::proc::is_alive(pid, 0) {
                    self.lost.insert(pid, e.to_string());
                }
                note(&mut self.errors, e);
            }
            let missing = img.seg.header().slots_exhausted.load(std::sync::atomic::Ordering::Relaxed);
            if missing > 0 {
                self.without_slot.insert(pid, missing);
            }
        }
        // A process read to its end: in a session its segment was kept for us, so it goes now
        // (a launched tree that starts thousands of short processes leaves nothing behind), and
        // its descriptor is closed.
        let done: Vec<u32> = self.images.iter().filter(|(_, img)| img.exited).map(|(&pid, _)| pid).collect();
        for pid in done {
            let img = self.images.remove(&pid).expect("listed above");
            if let Selector::Session(_) = self.selector {
                remove_segment(img.seg.path(), img.inode, img.seg.header());
            }
            self.finished.insert((pid, img.inode));
        }
    }

    /// Warnings for processes whose threads found no loop slot.
    pub fn slot_warnings(&self) -> Vec<String> {
        self.without_slot
            .iter()
            .map(|(pid, n)| {
                format!(
                    "{n} thread{} of process {pid} waited but found no free loop slot (the agent keeps {} per \
                     process; the main thread always has one): their ticks are not recorded",
                    if *n == 1 { "" } else { "s" },
                    looptop_abi::LOOP_SLOTS
                )
            })
            .collect()
    }

    fn discover(&mut self, now: u64, out: &mut Vec<Event>) {
        let candidates = segment::list(&self.dir);
        for (pid, path) in candidates {
            let owner = match self.selector {
                Selector::Pid(p) if p != pid => continue,
                Selector::Pid(p) => Owner::Pid(p),
                Selector::Session(s) => Owner::Session(s),
            };
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if self.images.get(&pid).is_some_and(|img| img.inode == meta.ino())
                || self.finished.contains(&(pid, meta.ino()))
            {
                continue;
            }
            let seg = match Segment::open(&path, owner) {
                Ok(s) => s,
                Err(e) => {
                    // In a session, other processes' segments are none of our business.
                    let ours =
                        matches!(self.selector, Selector::Pid(_)) || !matches!(e, SegmentError::NotBelieved { .. });
                    if ours && !e.is_noise() {
                        note(&mut self.errors, e);
                    }
                    continue;
                }
            };
            let h = seg.header();
            // A new image under a pid we follow: the process called exec.
            if let Some(mut old) = self.images.remove(&pid) {
                let _ = poll_image(pid, &mut old, now, out);
                end_loops(&mut old, h.created_ns, true, out);
            }
            let exe = seg.exe();
            let mut command = proc::cmdline(pid);
            if command.is_empty() {
                command = vec![exe.clone()];
            }
            out.push(Event::Process(ProcessInfo { pid, command, exe, start_ns: h.created_ns }));
            let exit = proc::ExitWatch::started_at(pid, h.start_time_ticks);
            self.images.insert(pid, Image::new(seg, meta.ino(), exit));
            self.seen += 1;
        }
    }

    /// Removes the segments this source kept alive for its last read (`LOOPTOP_KEEP_SEGMENT`)
    /// once their processes are gone, with the perf maps their agents made.
    pub fn remove_finished(&self) {
        for (&pid, img) in &self.images {
            let h = img.seg.header();
            if img.exited || !proc::is_alive(pid, h.start_time_ticks) {
                remove_segment(img.seg.path(), img.inode, h);
            }
        }
    }
}

/// Keeps the first error of each kind of message.
fn note(errors: &mut Vec<SegmentError>, e: SegmentError) {
    if !errors.iter().any(|k| k.to_string() == e.to_string()) {
        errors.push(e);
    }
}

/// Removes a segment file (if it is still the inode we read) and the perf map its agent made.
fn remove_segment(path: &std::path::Path, inode: u64, h: &looptop_abi::Header) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == inode && m.file_type().is_file()) {
        let _ = std::fs::remove_file(path);
    }
    let flags = h.flags.load(std::sync::atomic::Ordering::Relaxed);
    if flags & looptop_abi::header_flags::PERF_MAP != 0 {
        let map = PathBuf::from(format!("/tmp/perf-{}.map", h.pid));
        if std::fs::symlink_metadata(&map).is_ok_and(|m| m.file_type().is_file() && m.uid() == h.owner_uid) {
            let _ = std::fs::remove_file(&map);
        }
    }
}

fn end_loops(img: &mut Image, at_ns: u64, clean: bool, out: &mut Vec<Event>) {
    for t in img.slots.values_mut().filter(|t| !t.ended) {
        t.ended = true;
        out.push(Event::LoopEnded { id: t.id, at_ns, clean });
    }
}

fn poll_image(pid: u32, img: &mut Image, now: u64, out: &mut Vec<Event>) -> Result<(), SegmentError> {
    if img.exited {
        return Ok(());
    }
    img.seg.refresh()?;
    let h = img.seg.header();
    let exited_ns = h.exited_ns.load(std::sync::atomic::Ordering::Acquire);
    let exited_at = if exited_ns != 0 {
        Some((exited_ns, true))
    } else if img.exit.exited() {
        // Died without exit handlers (a signal, `_exit`): it was last seen alive at the previous
        // read, the latest instant known to be inside its life (now, if never seen alive).
        Some((if img.alive_ns == 0 { now } else { img.alive_ns }, false))
    } else {
        img.alive_ns = now;
        None
    };
    for (i, snap) in img.seg.snapshots()? {
        let id = LoopId { pid, tid: snap.tid, since_ns: snap.claimed_ns };
        if img.slots.get(&i).is_some_and(|t| t.id != id) {
            // The slot was reused by another thread: the one we knew has ended.
            let old = img.slots.remove(&i).expect("checked");
            if !old.ended {
                out.push(Event::LoopEnded { id: old.id, at_ns: snap.claimed_ns, clean: true });
            }
        }
        let track = img.slots.entry(i).or_insert_with(|| {
            let name = proc::thread_name(pid, snap.tid).unwrap_or_else(|| snap.name.clone());
            out.push(Event::LoopStarted { id, name, start_ns: snap.claimed_ns });
            SlotTrack { id, next_stall: 0, ended: false }
        });
        if track.ended {
            continue;
        }
        let (stalls, lost) = img.seg.stalls(i, track.next_stall, snap.stall_count)?;
        track.next_stall = snap.stall_count;
        if lost > 0 {
            out.push(Event::Dropped { count: lost });
        }
        for (start_ns, duration_ns) in stalls {
            out.push(Event::Stall { id, start_ns, duration_ns });
        }
        out.push(Event::Totals {
            id,
            totals: LoopTotals {
                at_ns: now,
                ticks: snap.ticks,
                busy_ns: snap.busy_ns,
                idle_ns: snap.idle_ns,
                max_busy_ns: snap.max_busy_ns,
                busy_since_ns: snap.busy_since_ns,
                hist: snap.hist,
            },
        });
        if snap.ended_ns != 0 {
            track.ended = true;
            out.push(Event::LoopEnded { id, at_ns: snap.ended_ns, clean: true });
        }
    }
    read_records(pid, img, out)?;
    if let Some((at_ns, clean)) = exited_at {
        end_loops(img, at_ns, clean, out);
        img.exited = true;
        out.push(Event::ProcessExited { pid, at_ns, clean });
    }
    Ok(())
}

/// Reads new agent and probe records (allocator pauses, GC pauses, pool state).
fn read_records(pid: u32, img: &mut Image, out: &mut Vec<Event>) -> Result<(), SegmentError> {
    let (recs, lost, next) = img.seg.events(img.next_event)?;
    img.next_event = next;
    let mut dropped = lost;
    let mut all = recs;
    for ch in 0..img.seg.probe_channels() {
        let (recs, lost, next) = img.seg.probe_records(ch, img.next_probe[ch])?;
        img.next_probe[ch] = next;
        dropped += lost;
        all.extend(recs);
    }
    out.extend(all.into_iter().filter_map(|r| record_event(pid, r)));
    let (samples, lost, next) = img.seg.samples(img.next_sample)?;
    img.next_sample = next;
    dropped += lost;
    if dropped > 0 {
        out.push(Event::Dropped { count: dropped });
    }
    let interval = img.seg.header().watch_interval_ns;
    let v8 = img.seg.header().v8.known.load(std::sync::atomic::Ordering::Relaxed) != 0;
    for s in samples {
        if s.flags & sample_flags::MISSED != 0 || s.frames.is_empty() {
            continue;
        }
        // A sample stands for the time since the previous one of the same tick.
        let weight_ns = match img.last_sample.insert(s.tid, (s.tick_ns, s.t_ns)) {
            Some((tick, t)) if tick == s.tick_ns && s.t_ns > t => s.t_ns - t,
            _ => interval,
        };
        let off = s.flags & sample_flags::OFF_CPU != 0;
        // A copy that cannot be read leaves the sample to its walked frames.
        let stack = if off { None } else { img.seg.stack_copy(s.index).ok().flatten().map(Box::new) };
        out.push(Event::Sample(Sample {
            pid,
            tid: s.tid,
            t_ns: s.t_ns,
            origin: SampleOrigin::Watchdog,
            weight_ns,
            tick_ns: s.tick_ns,
            off_cpu: off.then_some(OffCpu { syscall: s.syscall, wchan: s.wchan }),
            ips: s.frames,
            count: 1,
            js: if v8 && s.js.iter().any(|w| *w != [0, 0]) { s.js } else { Vec::new() },
            py: s.py,
            stack,
        }));
    }
    Ok(())
}

/// The event a record stands for.
fn record_event(pid: u32, r: RecordCopy) -> Option<Event> {
    Some(match r.kind {
        record_kind::ALLOC => Event::Alloc {
            pid,
            tid: r.thread,
            start_ns: r.t_ns,
            duration_ns: r.dur_ns,
            call: alloc_call::name(r.a).to_string(),
            size: r.b,
        },
        record_kind::GC => {
            Event::Gc { pid, thread: r.thread, start_ns: r.t_ns, duration_ns: r.dur_ns, kind: GcKind::from_code(r.a) }
        }
        record_kind::POOL_KIND => {
            Event::PoolKind { pid, kind: if r.a == 2 { "python-executor" } else { "libuv" }.to_string(), size: r.b }
        }
        record_kind::PROBE => Event::ProbeReady { pid },
        record_kind::POOL => Event::PoolSample { pid, at_ns: r.t_ns, size: r.a, in_flight: r.b, queued_max: r.c },
        record_kind::POOL_WAIT => {
            Event::PoolWaits { pid, low_ns: r.a, high_ns: r.b, count: r.c, max_ns: r.d, at_ns: r.t_ns }
        }
        _ => return None,
    })
}

/// Removes segments whose process is gone (killed before it could remove its own, or kept for a
/// launcher that died), and the perf maps their agents made. Only files of our own user (root:
/// any user's) that are segments of that very pid are touched; nothing is followed.
pub fn remove_dead_segments() {
    let me = crate::safefs::euid();
    // A segment made in another pid namespace (a container sharing /dev/shm) names a pid of
    // that namespace: dead or alive here says nothing of it.
    let own_ns = std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).unwrap_or(0);
    for (pid, path) in segment::list(&segment::shm_dir()) {
        if proc::is_alive(pid, 0) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.file_type().is_file() || (me != 0 && meta.uid() != me) {
            continue;
        }
        match Segment::open(&path, Owner::Named) {
            Ok(seg) => {
                let h = seg.header();
                let keeper = h.keeper_pid;
                let same_ns = h.pid_ns == 0 || h.pid_ns == own_ns;
                if h.pid == pid && same_ns && (keeper == 0 || !proc::is_alive(keeper, 0)) {
                    remove_segment(&path, meta.ino(), h);
                }
            }
            // Half-created by a process that died, or of an unknown layout: the pid is gone.
            Err(SegmentError::NotSegment { .. } | SegmentError::Version { .. } | SegmentError::Truncated { .. }) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => {}
        }
    }
}
