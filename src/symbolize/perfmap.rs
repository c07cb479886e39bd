//! An incremental reader of `/tmp/perf-<pid>.map` files (V8's `--perf-basic-prof`, CPython's
//! perf trampoline).
//!
//! Each line is `START SIZE NAME` (hex without `0x`). The file only grows while the process runs,
//! so a refresh reads the bytes past the last complete line and nothing else; a partial last line
//! waits until its newline arrives. V8 reuses code space after GC and writes a new line for code
//! it compiles or moves there, so a new entry replaces every older entry it overlaps: the newest
//! entry wins, and stale names are dropped rather than shown.
//!
//! The file is the target's, and may be anything its user made of it: it is opened as that user
//! could ([`Reader`]), only when it is a regular file they own, never blocking; what is read and
//! kept is bounded, and a map past the bounds is read no further, with a note.

use crate::safefs::{Expect, Reader, Refused};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Bytes read per `read` call while catching up.
const CHUNK: usize = 1 << 20;
/// Bytes of a map read at most, over its life: a big application's map reaches hundreds of MB
/// (each compilation adds a line); a map already longer than this is not read at all.
const MAX_READ: u64 = 1 << 30;
/// Entries kept at most (V8 replaces code in place, so live entries stay far fewer than lines).
const MAX_ENTRIES: usize = 4 << 20;
/// Bytes of names kept at most.
const MAX_NAME_BYTES: usize = 256 << 20;
/// How long [`PerfMap::refresh`] waits before looking again for a file it did not find: processes
/// without a perf map are common, and samples of them often hold addresses no mapping knows.
const RETRY_OPEN: Duration = Duration::from_millis(100);

/// One code range and its name.
#[derive(Debug)]
struct Entry {
    end: u64,
    name: Box<str>,
}

/// The entries of one perf map, kept current by [`PerfMap::refresh`].
#[derive(Debug, Default)]
pub(crate) struct PerfMap {
    /// Where to look for the file, best first (through the process's root while it runs, then
    /// this namespace's `/tmp`).
    candidates: Vec<PathBuf>,
    /// Its path as the process knows it, for frames' `module`.
    name: String,
    /// Whose eyes the file is opened with; `None`: not at all (whose process it was is unknown).
    reader: Option<Reader>,
    /// The file once found; kept open so it can be read after the process exits.
    file: Option<File>,
    /// When [`PerfMap::refresh`] last looked for the file in vain.
    missed_at: Option<Instant>,
    /// Bytes consumed: everything before is parsed.
    offset: u64,
    /// Non-overlapping ranges by start address.
    entries: BTreeMap<u64, Entry>,
    /// Entries removed by newer ones so far: names looked up before may be stale.
    replaced: u64,
    /// Bytes parsed at most ([`MAX_READ`]; smaller in tests).
    max_read: u64,
    /// Bytes parsed so far (all readings, should the file be truncated and written again).
    read_total: u64,
    /// Bytes of the names in `entries`.
    name_bytes: usize,
    /// Past a bound: nothing more is read.
    stopped: bool,
    /// Why the map was not read, or not to its end.
    note: Option<String>,
}

impl PerfMap {
    /// A map called `name` in its process, read from the first of `candidates` that opens as
    /// `reader` could, and is a regular file of theirs; never opened when `reader` is `None`.
    pub(crate) fn new(name: String, candidates: Vec<PathBuf>, reader: Option<Reader>) -> Self {
        PerfMap { candidates, name, reader, max_read: MAX_READ, ..PerfMap::default() }
    }

    /// Opens the file if it was not yet; returns whether it is open. Opened while the process
    /// runs, it stays readable after the process exits. A candidate that is there but refused
    /// (a link, a FIFO, someone else's, too large) leaves a note.
    pub(crate) fn open(&mut self) -> bool {
        if self.file.is_some() {
            return true;
        }
        let Some(reader) = &self.reader else { return false };
        let expect = Expect::read(self.max_read).owned_by(reader.uid());
        for path in &self.candidates {
            match reader.open(path, expect) {
                Ok(file) => {
                    self.file = Some(file);
                    return true;
                }
                Err(e) if e.os_error().is_some_and(|e| e.kind() == io::ErrorKind::NotFound) => {}
                Err(e) => {
                    if self.note.is_none() {
                        self.note = Some(refused_note(&self.name, &e));
                    }
                }
            }
        }
        false
    }

    /// Why the map was not read, or not to its end.
    pub(crate) fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Its path as the process knows it, for frames' `module`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Reads the lines added since the last refresh; returns whether any entry was added.
    pub(crate) fn refresh(&mut self) -> io::Result<bool> {
        if self.file.is_none() {
            if self.missed_at.is_some_and(|t| t.elapsed() < RETRY_OPEN) {
                return Ok(false);
            }
            if !self.open() {
                self.missed_at = Some(Instant::now());
                return Ok(false);
            }
        }
        let Some(file) = self.file.take() else { return Ok(false) };
        let added = self.read_new(&file);
        self.file = Some(file);
        added
    }

    fn read_new(&mut self, file: &File) -> io::Result<bool> {
        if self.stopped {
            return Ok(false);
        }
        let len = file.metadata()?.len();
        if len < self.offset {
            // Truncated: a new file under the same name. Start over.
            self.entries.clear();
            self.name_bytes = 0;
            self.replaced += 1;
            self.offset = 0;
        }
        let until = len.min(self.offset + self.max_read.saturating_sub(self.read_total));
        let mut added = false;
        let mut buf = vec![0u8; CHUNK.min((until - self.offset) as usize)];
        while self.offset < until && !self.stopped {
            let want = buf.len().min((until - self.offset) as usize);
            let n = file.read_at(&mut buf[..want], self.offset)?;
            if n == 0 {
                break;
            }
            let (consumed, any) = self.apply(&buf[..n]);
            added |= any;
            let mut advance = consumed as u64;
            if consumed == 0 {
                if n < CHUNK {
                    break; // a partial last line: wait for the rest
                }
                // A line longer than a chunk is garbage: skip past it.
                advance = n as u64;
            }
            self.offset += advance;
            // What was parsed counts, not what is read again while a last line is incomplete.
            self.read_total += advance;
        }
        if until < len && !self.stopped {
            self.stop(format!("passed {} MiB", self.max_read >> 20));
        }
        Ok(added)
    }

    /// Reads no more of the map, saying why.
    fn stop(&mut self, why: String) {
        self.stopped = true;
        self.note = Some(format!(
            "perf map {} {why}: read no further, so JavaScript compiled from then on is unnamed",
            self.name
        ));
    }

    /// Parses the complete lines at the start of `bytes`; returns the bytes consumed (up to and
    /// including the last newline) and whether an entry was added. Garbage lines are skipped.
    pub(crate) fn apply(&mut self, bytes: &[u8]) -> (usize, bool) {
        let Some(last_nl) = bytes.iter().rposition(|&b| b == b'\n') else {
            return (0, false);
        };
        let mut added = false;
        for line in bytes[..last_nl].split(|&b| b == b'\n') {
            if let Some((start, size, name)) = parse_line(line) {
                self.insert(start, size, name);
                added = true;
                if self.entries.len() > MAX_ENTRIES || self.name_bytes > MAX_NAME_BYTES {
                    self.stop(format!(
                        "holds more than {MAX_ENTRIES} entries or {} MiB of names",
                        MAX_NAME_BYTES >> 20
                    ));
                    break;
                }
            }
        }
        (last_nl + 1, added)
    }

    /// Adds `[start, start + size)`, removing the older entries it overlaps.
    fn insert(&mut self, start: u64, size: u64, name: &str) {
        let Some(end) = start.checked_add(size) else { return };
        if size == 0 {
            return;
        }
        if let Some((&s, e)) = self.entries.range(..start).next_back() {
            if e.end > start {
                self.remove(s);
            }
        }
        let inside: Vec<u64> = self.entries.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            self.remove(s);
        }
        self.name_bytes += name.len();
        self.entries.insert(start, Entry { end, name: name.into() });
    }

    /// Removes the entry at `start`, replaced by a newer one.
    fn remove(&mut self, start: u64) {
        if let Some(e) = self.entries.remove(&start) {
            self.name_bytes -= e.name.len();
            self.replaced += 1;
        }
    }

    /// How many entries newer ones replaced so far: when it changes, names looked up earlier may
    /// be stale.
    pub(crate) fn replaced(&self) -> u64 {
        self.replaced
    }

    /// The start and name of the code at `addr`.
    pub(crate) fn lookup(&self, addr: u64) -> Option<(u64, &str)> {
        let (&start, e) = self.entries.range(..=addr).next_back()?;
        (addr < e.end).then_some((start, &*e.name))
    }

    /// Entries known.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The note for a perf map that is there but was refused.
fn refused_note(name: &str, e: &Refused) -> String {
    format!("perf map {name} not read ({e}): JavaScript frames are unnamed")
}

/// `START SIZE NAME` → its parts; `None` for anything else.
fn parse_line(line: &[u8]) -> Option<(u64, u64, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    Some((hex(start)?, hex(size)?, name))
}

fn hex(s: &str) -> Option<u64> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn newest_entry_wins() {
        let mut m = PerfMap::default();
        m.apply(b"1000 100 JS:~a /a.js:1:1\n2000 100 JS:~b /b.js:1:1\n1100 100 JS:~c /c.js:1:1\n");
        assert_eq!(m.lookup(0x1000).map(|e| e.1), Some("JS:~a /a.js:1:1"));
        assert_eq!(m.lookup(0x10ff).map(|e| e.1), Some("JS:~a /a.js:1:1"));
        assert_eq!(m.lookup(0x1100).map(|e| e.1), Some("JS:~c /c.js:1:1"));
        assert_eq!(m.lookup(0x0fff), None);
        assert_eq!(m.lookup(0x1200), None);
        // Overlaps the tail of `a` and all of `c`: both go.
        assert_eq!(m.replaced(), 0);
        m.apply(b"10f0 20 JS:*d /d.js:1:1\n");
        assert_eq!(m.replaced(), 2);
        assert_eq!(m.lookup(0x1000), None);
        assert_eq!(m.lookup(0x10f0).map(|e| e.1), Some("JS:*d /d.js:1:1"));
        assert_eq!(m.lookup(0x110f).map(|e| e.1), Some("JS:*d /d.js:1:1"));
        assert_eq!(m.lookup(0x1110), None);
        assert_eq!(m.lookup(0x2050).map(|e| e.1), Some("JS:~b /b.js:1:1"));
        // Same start, replaced; a range covering several entries replaces them all.
        m.apply(b"2000 100 RegExp:x\n");
        assert_eq!(m.lookup(0x2000).map(|e| e.1), Some("RegExp:x"));
        m.apply(b"0 10000 Builtin:Everything\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(0x2000).map(|e| e.1), Some("Builtin:Everything"));
        // Adjacent ranges do not overlap.
        m.apply(b"10000 10 Builtin:Next\n");
        assert_eq!(m.lookup(0xffff).map(|e| e.1), Some("Builtin:Everything"));
        assert_eq!(m.lookup(0x10000).map(|e| e.1), Some("Builtin:Next"));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let mut m = PerfMap::default();
        let text: &[u8] =
            b"zz 10 bad\n1000\n\n1000 0 empty\nffffffffffffffff 10 overflow\n2000 10 name with spaces\r\n\xff\xfe 1 x\n3000 10 ok\n";
        let (n, added) = m.apply(text);
        assert!(added);
        assert_eq!(m.len(), 2);
        assert_eq!(m.lookup(0x2005).map(|e| e.1), Some("name with spaces"));
        assert_eq!(m.lookup(0x3000).map(|e| e.1), Some("ok"));
        assert_eq!(n, text.len());
    }

    #[test]
    fn partial_last_line_waits() {
        let mut m = PerfMap::default();
        let (n, _) = m.apply(b"1000 10 JS:~a /a.js:1:1\n2000 10 JS:~b /b.j");
        assert_eq!(n, 24);
        assert_eq!(m.lookup(0x2000), None);
        assert_eq!(m.apply(b"2000 10 JS:~b"), (0, false));
    }

    #[test]
    fn refresh_reads_only_new_complete_lines() {
        let dir = std::env::temp_dir().join(format!("looptop-perfmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf-1.map");
        let _ = std::fs::remove_file(&path);
        let mut m =
            PerfMap::new("/tmp/perf-1.map".into(), vec![dir.join("missing.map"), path.clone()], Some(Reader::Me));
        assert!(!m.open());
        let mut f = File::create(&path).unwrap();

        f.write_all(b"1000 10 JS:~a /a.js:1:1\n2000 10 JS:~b").unwrap();
        assert!(m.refresh().unwrap());
        assert_eq!(m.name(), "/tmp/perf-1.map");
        assert_eq!(m.lookup(0x1000).map(|e| e.1), Some("JS:~a /a.js:1:1"));
        assert_eq!(m.lookup(0x2000), None);
        assert!(!m.refresh().unwrap());

        f.write_all(b" /b.js:2:2\n1000 10 JS:*a /a.js:1:1\n").unwrap();
        assert!(m.refresh().unwrap());
        assert_eq!(m.lookup(0x2000).map(|e| e.1), Some("JS:~b /b.js:2:2"));
        assert_eq!(m.lookup(0x1000).map(|e| e.1), Some("JS:*a /a.js:1:1"));

        // Many lines, more than one read chunk.
        let mut big = Vec::new();
        for i in 0..40_000u64 {
            writeln!(big, "{:x} 10 JS:~f{i} /big.js:{i}:1", 0x10_0000 + i * 0x10).unwrap();
        }
        f.write_all(&big).unwrap();
        assert!(m.refresh().unwrap());
        assert_eq!(m.lookup(0x10_0000 + 39_999 * 0x10 + 5).map(|e| e.1), Some("JS:~f39999 /big.js:39999:1"));
        assert_eq!(m.len(), 40_002);

        // Truncated and rewritten: starts over.
        drop(f);
        std::fs::write(&path, "5000 10 JS:~new /n.js:1:1\n").unwrap();
        assert!(m.refresh().unwrap());
        assert_eq!(m.lookup(0x1000), None);
        assert_eq!(m.lookup(0x5000).map(|e| e.1), Some("JS:~new /n.js:1:1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_not_an_error_and_looked_for_again_later() {
        let dir = std::env::temp_dir().join(format!("looptop-perfmap-late-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf-2.map");
        let mut m =
            PerfMap::new(String::new(), vec![PathBuf::from("/nonexistent/perf-1.map"), path.clone()], Some(Reader::Me));
        assert!(!m.refresh().unwrap());
        assert_eq!(m.lookup(0), None);
        std::fs::write(&path, "10 10 Builtin:A\n").unwrap();
        // Not looked for again right away by a refresh…
        assert!(!m.refresh().unwrap());
        // … but a while later, or when asked to open it.
        std::thread::sleep(RETRY_OPEN);
        assert!(m.refresh().unwrap());
        assert_eq!(m.lookup(0x10).map(|e| e.1), Some("Builtin:A"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_what_is_not_a_map_of_the_targets_user() {
        let dir = std::env::temp_dir().join(format!("looptop-perfmap-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let real = dir.join("real.map");
        std::fs::write(&real, "10 10 JS:~secret /s.js:1:1\n").unwrap();
        let link = dir.join("link.map");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let fifo = dir.join("fifo.map");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (path, why) in [(&link, "link"), (&fifo, "regular")] {
            let mut m = PerfMap::new("/tmp/perf-1.map".into(), vec![path.clone()], Some(Reader::Me));
            // A FIFO with no writer would block a plain open forever.
            assert!(!m.open(), "{why}");
            assert!(m.note().is_some_and(|n| n.contains("/tmp/perf-1.map")), "{why}: {:?}", m.note());
            assert_eq!(m.lookup(0x10), None);
        }
        // Not the target user's own file.
        let other = Reader::User(crate::safefs::Creds { uid: crate::safefs::euid() + 1, gid: 0, groups: vec![] });
        if crate::safefs::euid() == 0 {
            std::os::unix::fs::chown(&real, Some(0), None).unwrap();
        }
        let mut m = PerfMap::new(String::new(), vec![real.clone()], Some(other));
        assert!(!m.open());
        // Whose process it was is unknown: not opened at all.
        let mut m = PerfMap::new(String::new(), vec![real.clone()], None);
        assert!(!m.open() && m.note().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stops_reading_past_the_bound() {
        let dir = std::env::temp_dir().join(format!("looptop-perfmap-bound-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf-3.map");
        let mut f = File::create(&path).unwrap();
        let mut m = PerfMap::new("/tmp/perf-3.map".into(), vec![path.clone()], Some(Reader::Me));
        m.max_read = 64;
        f.write_all(b"1000 10 JS:~a /a.js:1:1\n2000 10 JS:~b /b.js:1:1\n").unwrap();
        assert!(m.refresh().unwrap());
        assert!(m.note().is_none());
        // Grows past 64 bytes: the lines before the bound count, nothing after.
        f.write_all(b"3000 10 JS:~c /c.js:1:1\n4000 10 JS:~d /d.js:1:1\n").unwrap();
        m.refresh().unwrap();
        assert_eq!(m.lookup(0x1000).map(|e| e.1), Some("JS:~a /a.js:1:1"));
        assert_eq!(m.lookup(0x4000), None);
        assert!(m.note().is_some_and(|n| n.contains("read no further")), "{:?}", m.note());
        f.write_all(b"5000 10 JS:~e /e.js:1:1\n").unwrap();
        assert!(!m.refresh().unwrap());
        // A file already over the bound is not read at all.
        let mut m = PerfMap::new("/tmp/perf-3.map".into(), vec![path.clone()], Some(Reader::Me));
        m.max_read = 64;
        assert!(!m.refresh().unwrap());
        assert!(m.note().is_some_and(|n| n.contains("more than the 64 accepted")), "{:?}", m.note());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
