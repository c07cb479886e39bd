//! The agent source: watches the segments of a session (`looptop run`) or of one pid, and turns
//! their slots into events. Needs no privileges.

use super::segment::RecordCopy;
use super::segment::{self, Segment, SegmentError};
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
    /// The previous watchdog sample per thread: (tick, time), for sample weights.
    last_sample: BTreeMap<u32, (u64, u64)>,
}

/// Follows agent segments and yields events.
pub struct AgentSource {
    dir: PathBuf,
    selector: Selector,
    images: BTreeMap<u32, Image>,
    /// Segments that could not be read, with why (reported once each).
    pub errors: Vec<SegmentError>,
}

impl AgentSource {
    /// A source over the segment folder.
    pub fn new(selector: Selector) -> Self {
        AgentSource { dir: segment::shm_dir(), selector, images: BTreeMap::new(), errors: Vec::new() }
    }

    /// Number of processes seen so far.
    pub fn processes_seen(&self) -> usize {
        self.images.len()
    }

    /// Reads every followed segment once and appends what changed to `out`.
    pub fn poll(&mut self, now: u64, out: &mut Vec<Event>) {
        self.discover(now, out);
        for (&pid, img) in self.images.iter_mut() {
            poll_image(pid, img, now, out);
        }
    }

    fn discover(&mut self, now: u64, out: &mut Vec<Event>) {
        let candidates = segment::list(&self.dir);
        for (pid, path) in candidates {
            if let Selector::Pid(p) = self.selector {
                if p != pid {
                    continue;
                }
            }
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if self.images.get(&pid).is_some_and(|img| img.inode == meta.ino()) {
                continue;
            }
            let seg = match Segment::open(&path) {
                Ok(s) => s,
                Err(SegmentError::NotSegment { .. }) => continue,
                Err(e) => {
                    if !self.errors.iter().any(|k| k.to_string() == e.to_string()) {
                        self.errors.push(e);
                    }
                    continue;
                }
            };
            let h = seg.header();
            let ours = match self.selector {
                Selector::Session(s) => h.session == s,
                Selector::Pid(p) => h.pid == p,
            };
            if !ours || h.pid != pid {
                continue;
            }
            // A new image under a pid we follow: the process called exec.
            if let Some(mut old) = self.images.remove(&pid) {
                poll_image(pid, &mut old, now, out);
                end_loops(&mut old, h.created_ns, true, out);
            }
            let exe = seg.exe();
            let mut command = proc::cmdline(pid);
            if command.is_empty() {
                command = vec![exe.clone()];
            }
            out.push(Event::Process(ProcessInfo { pid, command, exe, start_ns: h.created_ns }));
            self.images.insert(
                pid,
                Image {
                    seg,
                    inode: meta.ino(),
                    exited: false,
                    slots: BTreeMap::new(),
                    next_event: 0,
                    next_probe: [0; PROBE_CHANNELS],
                    next_sample: 0,
                    alive_ns: 0,
                    last_sample: BTreeMap::new(),
                },
            );
        }
    }

    /// Removes the segments this source kept alive for its last read (`LOOPTOP_KEEP_SEGMENT`)
    /// once their processes are gone.
    pub fn remove_finished(&self) {
        for (&pid, img) in &self.images {
            let h = img.seg.header();
            if img.exited || !proc::is_alive(pid, h.start_time_ticks) {
                let path = img.seg.path();
                if std::fs::metadata(path).is_ok_and(|m| m.ino() == img.inode) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

fn end_loops(img: &mut Image, at_ns: u64, clean: bool, out: &mut Vec<Event>) {
    for t in img.slots.values_mut().filter(|t| !t.ended) {
        t.ended = true;
        out.push(Event::LoopEnded { id: t.id, at_ns, clean });
    }
}

fn poll_image(pid: u32, img: &mut Image, now: u64, out: &mut Vec<Event>) {
    if img.exited {
        return;
    }
    let h = img.seg.header();
    let exited_ns = h.exited_ns.load(std::sync::atomic::Ordering::Acquire);
    let exited_at = if exited_ns != 0 {
        Some((exited_ns, true))
    } else if !proc::is_alive(pid, h.start_time_ticks) {
        // Died without exit handlers (a signal, `_exit`): it was last seen alive at the previous
        // read, the latest instant known to be inside its life (now, if never seen alive).
        Some((if img.alive_ns == 0 { now } else { img.alive_ns }, false))
    } else {
        img.alive_ns = now;
        None
    };
    for (i, snap) in img.seg.snapshots() {
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
        let (stalls, lost) = img.seg.stalls(i, track.next_stall, snap.stall_count);
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
    read_records(pid, img, out);
    if let Some((at_ns, clean)) = exited_at {
        end_loops(img, at_ns, clean, out);
        img.exited = true;
        out.push(Event::ProcessExited { pid, at_ns, clean });
    }
}

/// Reads new agent and probe records (allocator pauses, GC pauses, pool state).
fn read_records(pid: u32, img: &mut Image, out: &mut Vec<Event>) {
    let (recs, lost, next) = img.seg.events(img.next_event);
    img.next_event = next;
    let mut dropped = lost;
    let mut all = recs;
    for ch in 0..img.seg.probe_channels() {
        let (recs, lost, next) = img.seg.probe_records(ch, img.next_probe[ch]);
        img.next_probe[ch] = next;
        dropped += lost;
        all.extend(recs);
    }
    out.extend(all.into_iter().filter_map(|r| record_event(pid, r)));
    let (samples, lost, next) = img.seg.samples(img.next_sample);
    img.next_sample = next;
    dropped += lost;
    if dropped > 0 {
        out.push(Event::Dropped { count: dropped });
    }
    let interval = img.seg.header().watch_interval_ns;
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
        out.push(Event::Sample(Sample {
            pid,
            tid: s.tid,
            t_ns: s.t_ns,
            origin: SampleOrigin::Watchdog,
            weight_ns,
            tick_ns: s.tick_ns,
            off_cpu: off.then_some(OffCpu { syscall: s.syscall, wchan: s.wchan }),
            ips: s.frames,
        }));
    }
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
        record_kind::POOL_WAIT => Event::PoolWaits { pid, low_ns: r.a, high_ns: r.b, count: r.c, max_ns: r.d },
        _ => return None,
    })
}

/// Removes segments whose process is gone (killed before it could remove its own, or kept for a
/// launcher that died). Segments of other users are left alone.
pub fn remove_dead_segments() {
    for (pid, path) in segment::list(&segment::shm_dir()) {
        let dead = match Segment::open(&path) {
            Ok(seg) => {
                let h = seg.header();
                h.pid == pid && !proc::is_alive(pid, h.start_time_ticks)
            }
            // Half-created by a process that died, or of an unknown layout: judge by the pid.
            Err(SegmentError::NotSegment { .. } | SegmentError::Version { .. }) => !proc::is_alive(pid, 0),
            Err(SegmentError::Io { .. }) => false,
        };
        if dead {
            let _ = std::fs::remove_file(&path);
        }
    }
}
