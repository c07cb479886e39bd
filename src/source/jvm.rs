//! The JVM's GC pauses, from its own counters: HotSpot's performance data file
//! (`/tmp/hsperfdata_<user>/<pid>`, what `jstat` reads; on unless the JVM runs with
//! `-XX:-UsePerfData`). Each collector keeps how many pauses it made and when its last one began
//! and ended, on the JVM's elapsed counter: nanoseconds on `CLOCK_MONOTONIC` since the JVM set
//! its counter's zero. That zero is found from the counter itself: the JVM's sampler rewrites
//! `sun.os.hrt.ticks` every 50 ms, and reading the file closely around a few rewrites brackets
//! the zero within a fraction of a millisecond. A pause is a safepoint: every Java thread stands
//! still, so its event is for the whole process ([`GC_ALL_THREADS`]).

use crate::event::{Event, GcKind, GC_ALL_THREADS};
use crate::safefs::{Expect, Reader};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

/// A performance data file larger than this is not read (HotSpot's default is 32 KiB).
const MOST_BYTES: u64 = 1 << 20;
/// Entries read at most.
const MOST_ENTRIES: usize = 4096;
/// The file's magic number, in its first four bytes (big-endian).
const MAGIC: u32 = 0xcafe_c0c0;
/// How long the zero of the JVM's counter is looked for, and how often the file is read then.
const CALIBRATE_FOR: Duration = Duration::from_millis(400);
const CALIBRATE_EVERY: Duration = Duration::from_micros(200);
/// Rewrites of `sun.os.hrt.ticks` seen before the zero is taken as known.
const CALIBRATE_REWRITES: u32 = 4;

/// The counters looptop reads, by name, from one reading of the file.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Counters {
    /// Numbers (`J` entries).
    longs: HashMap<String, i64>,
    /// Strings (`B` entries, up to their NUL).
    strings: HashMap<String, String>,
    /// Where each number lies in the file (to read one again alone).
    at: HashMap<String, u64>,
}

impl Counters {
    /// Parses a performance data file; `None` when it is not one.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Counters> {
        let u32_at = |at: usize, le: bool| -> Option<u32> {
            let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            Some(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
        };
        if u32_at(0, false)? != MAGIC {
            return None;
        }
        let le = *bytes.get(4)? == 1;
        let i64_at = |at: usize| -> Option<i64> {
            let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
            Some(if le { i64::from_le_bytes(b) } else { i64::from_be_bytes(b) })
        };
        // The prologue: magic, byte order, versions, accessible, used, overflow, modification
        // time, then where the entries start and how many there are.
        let (mut at, n) = (u32_at(24, le)? as usize, u32_at(28, le)? as usize);
        let mut c = Counters::default();
        for _ in 0..n.min(MOST_ENTRIES) {
            // An entry: its length, its name's offset, its vector length, its type, flags, units
            // and variability, its data's offset (offsets from the entry's start).
            let len = u32_at(at, le)? as usize;
            let name_at = at + u32_at(at + 4, le)? as usize;
            let vector = u32_at(at + 8, le)? as usize;
            let kind = *bytes.get(at + 12)?;
            let data_at = at + u32_at(at + 16, le)? as usize;
            if len < 20 {
                return None;
            }
            let name_end = bytes.get(name_at..)?.iter().position(|&b| b == 0)? + name_at;
            let name = String::from_utf8_lossy(&bytes[name_at..name_end]).into_owned();
            match (kind, vector) {
                (b'J', 0) => {
                    c.longs.insert(name.clone(), i64_at(data_at)?);
                    c.at.insert(name, data_at as u64);
                }
                (b'B', n) if n > 0 => {
                    let raw = bytes.get(data_at..data_at + n)?;
                    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                    c.strings.insert(name, String::from_utf8_lossy(&raw[..end]).into_owned());
                }
                _ => {}
            }
            at = at.checked_add(len)?;
        }
        Some(c)
    }

    /// A number.
    pub(crate) fn long(&self, name: &str) -> Option<i64> {
        self.longs.get(name).copied()
    }

    /// The collectors: (number, name).
    fn collectors(&self) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .strings
            .iter()
            .filter_map(|(k, name)| {
                let n = k.strip_prefix("sun.gc.collector.")?.strip_suffix(".name")?.parse().ok()?;
                Some((n, name.clone()))
            })
            .collect();
        v.sort();
        v
    }
}

/// What kind of pause a collector makes, from its name (HotSpot's: "G1 young collection
/// pauses", "G1 full collection pauses", "G1 concurrent cycle pauses", "PSScavenge",
/// "PSParallelCompact", "Copy", "MarkSweepCompact", "Shenandoah Pauses", "ZGC … Pauses" …).
pub(crate) fn kind_of(collector: &str) -> GcKind {
    let c = collector.to_ascii_lowercase();
    if c.contains("young") || c.contains("scavenge") || c == "copy" || c.contains("parnew") {
        GcKind::Young
    } else if c.contains("full") || c.contains("compact") || c.contains("marksweep") {
        GcKind::Full
    } else {
        GcKind::Concurrent
    }
}

/// Where the zero of a JVM's counter stands.
enum Zero {
    /// Being looked for on a thread of its own.
    Pending(Receiver<Option<i64>>),
    /// `CLOCK_MONOTONIC` of the counter's zero (ns).
    Known(i64),
    /// Not found (the sampler never rewrote the ticks): no pause can be placed.
    Unknown,
}

/// One collector's pauses as last read.
#[derive(Debug, Clone, Copy, Default)]
struct Collector {
    /// The entry time of the last pause sent (or known at the first reading).
    last_entry: i64,
}

/// One JVM observed.
struct Jvm {
    file: File,
    zero: Zero,
    /// Nanoseconds per tick of the JVM's counter, as a ratio (`sun.os.hrt.frequency`).
    per_second: i64,
    collectors: BTreeMap<u32, (GcKind, Collector)>,
    /// Pauses seen before the zero was known: (entry, exit, kind) in ticks.
    held: Vec<(i64, i64, GcKind)>,
}

/// How long a process is looked at for a JVM with its performance data file (a command looptop
/// starts is seen before it is a JVM, and the JVM writes the file during its start-up), and how
/// often.
const LOOK_FOR_NS: u64 = 10_000_000_000;
const LOOK_EVERY_NS: u64 = 500_000_000;

/// GC pauses of the JVMs among the processes observed.
#[derive(Default)]
pub struct JvmSource {
    jvms: BTreeMap<u32, Jvm>,
    /// Processes being looked at: when first seen, when looked at last.
    looking: BTreeMap<u32, (u64, u64)>,
    /// Processes no longer looked at (no JVM, or one without a file to read).
    done: BTreeSet<u32>,
    /// What could not be read, for the user.
    pub notes: Vec<String>,
}

impl JvmSource {
    /// Looks at the processes of `pids` for a JVM (every half second, for ten seconds from when
    /// each was first seen): a JVM's performance data file is opened as the process's user, and
    /// the zero of its counter looked for.
    pub fn follow(&mut self, pids: &BTreeSet<u32>) {
        let now = crate::source::now_ns();
        for &pid in pids {
            if self.jvms.contains_key(&pid) || self.done.contains(&pid) {
                continue;
            }
            let (first, last) = self.looking.entry(pid).or_insert((now, 0));
            if *last != 0 && now < *last + LOOK_EVERY_NS {
                continue;
            }
            *last = now;
            let over = now >= *first + LOOK_FOR_NS;
            let jvm = crate::target::proc::is_jvm(pid);
            let Some((file, c)) = (if jvm { open(pid) } else { None }) else {
                if over || !crate::target::proc::is_alive(pid, 0) {
                    self.looking.remove(&pid);
                    self.done.insert(pid);
                    if jvm {
                        self.notes.push(format!(
                            "java {pid} has no performance data file looptop may read (/tmp/hsperfdata_USER/{pid}; \
                             does it run with -XX:-UsePerfData?): its GC pauses are not seen"
                        ));
                    }
                }
                continue;
            };
            self.looking.remove(&pid);
            self.jvms.insert(pid, Jvm::new(file, &c));
        }
    }

    /// The pauses that ended since the last poll, and a `ProbeReady` for each JVM whose pauses
    /// can now be placed.
    pub fn poll(&mut self, out: &mut Vec<Event>) {
        for (&pid, jvm) in self.jvms.iter_mut() {
            if let Zero::Pending(rx) = &jvm.zero {
                match rx.try_recv() {
                    Ok(Some(zero)) => {
                        jvm.zero = Zero::Known(zero);
                        out.push(Event::ProbeReady { pid });
                    }
                    Ok(None) | Err(TryRecvError::Disconnected) => {
                        jvm.zero = Zero::Unknown;
                        // A JVM that exited meanwhile has no pause left to place.
                        if !crate::target::proc::is_alive(pid, 0) {
                            continue;
                        }
                        self.notes.push(format!(
                            "java {pid}: its performance data's clock could not be matched to looptop's (no \
                             sampler update in {} ms): its GC pauses are not placed in stalls",
                            CALIBRATE_FOR.as_millis()
                        ));
                    }
                    Err(TryRecvError::Empty) => {}
                }
            }
            if matches!(jvm.zero, Zero::Unknown) {
                continue;
            }
            jvm.read_pauses();
            if let Zero::Known(zero) = jvm.zero {
                let ns = |ticks: i64| ticks.saturating_mul(1_000_000_000 / jvm.per_second.max(1));
                for (entry, exit, kind) in jvm.held.drain(..) {
                    let start = zero.saturating_add(ns(entry));
                    out.push(Event::Gc {
                        pid,
                        thread: GC_ALL_THREADS,
                        start_ns: u64::try_from(start).unwrap_or(0),
                        duration_ns: u64::try_from(ns(exit - entry)).unwrap_or(0),
                        kind,
                    });
                }
            }
        }
        // A JVM that exited keeps nothing more to read.
        self.jvms.retain(|&pid, _| crate::target::proc::is_alive(pid, 0));
    }
}

impl Jvm {
    /// A JVM whose performance data `file` holds `c`: its collectors as they stand (their last
    /// pauses are the past), and the zero of its counter looked for on a thread of its own.
    fn new(file: File, c: &Counters) -> Jvm {
        let per_second = c.long("sun.os.hrt.frequency").filter(|&f| f > 0).unwrap_or(1_000_000_000);
        let collectors = c
            .collectors()
            .into_iter()
            .map(|(n, name)| {
                let entry = c.long(&format!("sun.gc.collector.{n}.lastEntryTime")).unwrap_or(0);
                (n, (kind_of(&name), Collector { last_entry: entry }))
            })
            .collect();
        let zero = match (c.at.get("sun.os.hrt.ticks"), file.try_clone()) {
            (Some(&at), Ok(f)) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let spawned = std::thread::Builder::new().name("looptop-jvm-zero".into()).spawn(move || {
                    let _ = tx.send(zero_of(&f, at, per_second));
                });
                if spawned.is_ok() {
                    Zero::Pending(rx)
                } else {
                    Zero::Unknown
                }
            }
            _ => Zero::Unknown,
        };
        Jvm { file, zero, per_second, collectors, held: Vec::new() }
    }

    /// Reads the file and holds each collector's pause that ended since the last reading (only
    /// the last one of a collector that made several in between: the file keeps no more).
    fn read_pauses(&mut self) {
        let Some(c) = read(&self.file).and_then(|b| Counters::parse(&b)) else { return };
        for (n, (kind, seen)) in self.collectors.iter_mut() {
            let long = |what: &str| c.long(&format!("sun.gc.collector.{n}.{what}"));
            let (Some(entry), Some(exit)) = (long("lastEntryTime"), long("lastExitTime")) else { continue };
            // A pause under way has entered and not exited yet; one that ended is new if it
            // entered after the last one sent.
            if exit >= entry && entry > seen.last_entry {
                seen.last_entry = entry;
                self.held.push((entry, exit, *kind));
            }
        }
    }
}

/// The JVM `pid`'s performance data file, opened as its user, and its counters; `None` when it
/// has none looptop may read.
fn open(pid: u32) -> Option<(File, Counters)> {
    let reader = Reader::of_pid(pid)?;
    let nspid = crate::target::proc::nspid(pid).unwrap_or(pid);
    let expect = Expect::read(MOST_BYTES).owned_by(reader.uid());
    for path in candidates(pid, nspid) {
        let Ok(file) = reader.open(&path, expect) else { continue };
        if let Some(c) = read(&file).and_then(|b| Counters::parse(&b)) {
            return Some((file, c));
        }
    }
    None
}

/// Where the JVM may have put its file: `hsperfdata_<user>/<pid>` in its `/tmp` (through its
/// root: a container's), whatever the user's name.
fn candidates(pid: u32, nspid: u32) -> Vec<PathBuf> {
    let tmp = Path::new("/proc").join(pid.to_string()).join("root/tmp");
    let Ok(dir) = std::fs::read_dir(&tmp) else { return Vec::new() };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("hsperfdata_"))
        .map(|e| e.path().join(nspid.to_string()))
        .take(64)
        .collect()
}

/// The whole file, from its start whatever was read before (bounded).
fn read(file: &File) -> Option<Vec<u8>> {
    let len = file.metadata().ok()?.len();
    if len > MOST_BYTES {
        return None;
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).ok()?;
    Some(bytes)
}

/// The `CLOCK_MONOTONIC` time (ns) of the zero of the JVM's counter, by reading the ticks the
/// sampler rewrites (the number at byte `at` of `file`) until it changed a few times: each change
/// happened after the read before it began and before the read that saw it ended, which brackets
/// the zero; the brackets are intersected. `None` if it never changed.
fn zero_of(file: &File, at: u64, per_second: i64) -> Option<i64> {
    let ns = |ticks: i64| ticks.saturating_mul(1_000_000_000 / per_second.max(1));
    let le = cfg!(target_endian = "little");
    let ticks = || -> Option<i64> {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, at).ok()?;
        Some(if le { i64::from_le_bytes(b) } else { i64::from_be_bytes(b) })
    };
    let now = || crate::source::now_ns() as i64;
    let deadline = now() + CALIBRATE_FOR.as_nanos() as i64;
    let (mut lo, mut hi, mut rewrites) = (i64::MIN, i64::MAX, 0);
    let mut before = now();
    let mut last = ticks()?;
    while rewrites < CALIBRATE_REWRITES && now() < deadline {
        std::thread::sleep(CALIBRATE_EVERY);
        let began = now();
        let t = ticks()?;
        let ended = now();
        if t != last {
            lo = lo.max(before - ns(t));
            hi = hi.min(ended - ns(t));
            rewrites += 1;
        }
        (before, last) = (began, t);
    }
    (rewrites > 0 && lo <= hi).then(|| lo + (hi - lo) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian performance data file with `longs` and `strings`, laid out as HotSpot does.
    fn file(longs: &[(&str, i64)], strings: &[(&str, &str)]) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut n = 0u32;
        let mut entry = |name: &str, kind: u8, vector: u32, data: &[u8]| {
            let name_at = 20u32;
            let data_at = (name_at as usize + name.len() + 1).next_multiple_of(8) as u32;
            let len = (data_at as usize + data.len()).next_multiple_of(8) as u32;
            let mut e = Vec::new();
            e.extend(len.to_le_bytes());
            e.extend(name_at.to_le_bytes());
            e.extend(vector.to_le_bytes());
            e.extend([kind, 0, 0, 0]);
            e.extend(data_at.to_le_bytes());
            e.extend(name.as_bytes());
            e.resize(data_at as usize, 0);
            e.extend(data);
            e.resize(len as usize, 0);
            entries.extend(e);
            n += 1;
        };
        for (name, v) in longs {
            entry(name, b'J', 0, &v.to_le_bytes());
        }
        for (name, s) in strings {
            let mut data = s.as_bytes().to_vec();
            data.push(0);
            entry(name, b'B', data.len() as u32, &data);
        }
        let mut f = Vec::new();
        f.extend(MAGIC.to_be_bytes());
        f.extend([1, 2, 0, 1]);
        f.extend([0u8; 16]);
        f.extend(32u32.to_le_bytes());
        f.extend(n.to_le_bytes());
        f.extend(entries);
        f
    }

    #[test]
    fn counters_are_read_as_hotspot_writes_them() {
        let bytes = file(
            &[("sun.gc.collector.0.lastEntryTime", 1_429_205_907), ("sun.os.hrt.frequency", 1_000_000_000)],
            &[("sun.gc.collector.0.name", "G1 young collection pauses")],
        );
        let c = Counters::parse(&bytes).unwrap();
        assert_eq!(c.long("sun.gc.collector.0.lastEntryTime"), Some(1_429_205_907));
        assert_eq!(c.collectors(), vec![(0, "G1 young collection pauses".to_string())]);
        let at = c.at["sun.os.hrt.frequency"] as usize;
        assert_eq!(i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()), 1_000_000_000);
    }

    #[test]
    fn a_damaged_file_is_refused_not_trusted() {
        let bytes = file(&[("sun.os.hrt.ticks", 5)], &[]);
        assert!(Counters::parse(&bytes[..30]).is_none());
        let mut wrong = bytes.clone();
        wrong[0] = 0;
        assert!(Counters::parse(&wrong).is_none());
        // An entry claiming to run past the end, or of no length.
        let mut long = bytes.clone();
        long[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Counters::parse(&long).map_or(true, |c| c.long("sun.os.hrt.ticks") == Some(5)));
        let mut empty = bytes;
        empty[32..36].copy_from_slice(&0u32.to_le_bytes());
        assert!(Counters::parse(&empty).is_none());
    }

    #[test]
    fn collectors_are_named_by_their_pauses() {
        assert_eq!(kind_of("G1 young collection pauses"), GcKind::Young);
        assert_eq!(kind_of("G1 full collection pauses"), GcKind::Full);
        assert_eq!(kind_of("G1 concurrent cycle pauses"), GcKind::Concurrent);
        assert_eq!(kind_of("PSScavenge"), GcKind::Young);
        assert_eq!(kind_of("PSParallelCompact"), GcKind::Full);
        assert_eq!(kind_of("Copy"), GcKind::Young);
        assert_eq!(kind_of("MarkSweepCompact"), GcKind::Full);
        assert_eq!(kind_of("Shenandoah Pauses"), GcKind::Concurrent);
    }
}
