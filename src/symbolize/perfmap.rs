//! An incremental reader of `/tmp/perf-<pid>.map` files (V8's `--perf-basic-prof`, CPython's
//! perf trampoline).
//!
//! Each line is `START SIZE NAME` (hex without `0x`). The file only grows while the process runs,
//! so a refresh reads the bytes past the last complete line and nothing else; a partial last line
//! waits until its newline arrives. V8 reuses code space after GC and writes a new line for code
//! it compiles or moves there, so a new entry replaces every older entry it overlaps: the newest
//! entry wins, and stale names are dropped rather than shown.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Bytes read per `read` call while catching up.
const CHUNK: usize = 1 << 20;
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
}

impl PerfMap {
    /// A map called `name` in its process, read from the first of `candidates` that opens.
    pub(crate) fn new(name: String, candidates: Vec<PathBuf>) -> Self {
        PerfMap { candidates, name, ..PerfMap::default() }
    }

    /// Opens the file if it was not yet; returns whether it is open. Opened while the process
    /// runs, it stays readable after the process exits.
    pub(crate) fn open(&mut self) -> bool {
        if self.file.is_none() {
            self.file = self.candidates.iter().find_map(|p| File::open(p).ok());
        }
        self.file.is_some()
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
        let len = file.metadata()?.len();
        if len < self.offset {
            // Truncated: a new file under the same name. Start over.
            self.entries.clear();
            self.replaced += 1;
            self.offset = 0;
        }
        let mut added = false;
        let mut buf = vec![0u8; CHUNK.min((len - self.offset) as usize)];
        while self.offset < len {
            let n = file.read_at(&mut buf, self.offset)?;
            if n == 0 {
                break;
            }
            let (consumed, any) = self.apply(&buf[..n]);
            added |= any;
            if consumed == 0 {
                if n < CHUNK {
                    break; // a partial last line: wait for the rest
                }
                // A line longer than a chunk is garbage: skip past it.
                self.offset += n as u64;
            }
            self.offset += consumed as u64;
        }
        Ok(added)
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
                self.entries.remove(&s);
                self.replaced += 1;
            }
        }
        let inside: Vec<u64> = self.entries.range(start..end).map(|(&s, _)| s).collect();
        self.replaced += inside.len() as u64;
        for s in inside {
            self.entries.remove(&s);
        }
        self.entries.insert(start, Entry { end, name: name.into() });
    }

    /// How many entries newer ones replaced so far: when it changes, names looked up earlier may
    /// be stale.
    pub(crate) fn replaced(&self) -> u64 {
        self.replaced
    }

    /// The name of the code at `addr`.
    pub(crate) fn lookup(&self, addr: u64) -> Option<&str> {
        let (_, e) = self.entries.range(..=addr).next_back()?;
        (addr < e.end).then_some(&*e.name)
    }

    /// Entries known.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
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
        assert_eq!(m.lookup(0x1000), Some("JS:~a /a.js:1:1"));
        assert_eq!(m.lookup(0x10ff), Some("JS:~a /a.js:1:1"));
        assert_eq!(m.lookup(0x1100), Some("JS:~c /c.js:1:1"));
        assert_eq!(m.lookup(0x0fff), None);
        assert_eq!(m.lookup(0x1200), None);
        // Overlaps the tail of `a` and all of `c`: both go.
        assert_eq!(m.replaced(), 0);
        m.apply(b"10f0 20 JS:*d /d.js:1:1\n");
        assert_eq!(m.replaced(), 2);
        assert_eq!(m.lookup(0x1000), None);
        assert_eq!(m.lookup(0x10f0), Some("JS:*d /d.js:1:1"));
        assert_eq!(m.lookup(0x110f), Some("JS:*d /d.js:1:1"));
        assert_eq!(m.lookup(0x1110), None);
        assert_eq!(m.lookup(0x2050), Some("JS:~b /b.js:1:1"));
        // Same start, replaced; a range covering several entries replaces them all.
        m.apply(b"2000 100 RegExp:x\n");
        assert_eq!(m.lookup(0x2000), Some("RegExp:x"));
        m.apply(b"0 10000 Builtin:Everything\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(0x2000), Some("Builtin:Everything"));
        // Adjacent ranges do not overlap.
        m.apply(b"10000 10 Builtin:Next\n");
        assert_eq!(m.lookup(0xffff), Some("Builtin:Everything"));
        assert_eq!(m.lookup(0x10000), Some("Builtin:Next"));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let mut m = PerfMap::default();
        let text: &[u8] =
            b"zz 10 bad\n1000\n\n1000 0 empty\nffffffffffffffff 10 overflow\n2000 10 name with spaces\r\n\xff\xfe 1 x\n3000 10 ok\n";
        let (n, added) = m.apply(text);
        assert!(added);
        assert_eq!(m.len(), 2);
        assert_eq!(m.lookup(0x2005), Some("name with spaces"));
        assert_eq!(m.lookup(0x3000), Some("ok"));
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
        let mut m = PerfMap::new("/tmp/perf-1.map".into(), vec![dir.join("missing.map"), path.clone()]);
        assert!(!m.open());
        let mut f = File::create(&path).unwrap();

        f.write_all(b"1000 10 JS:~a /a.js:1:1\n2000 10 JS:~b").unwrap();
        assert!(m.refresh().unwrap());
        assert_eq!(m.name(), "/tmp/perf-1.map");
        assert_eq!(m.lookup(0x1000), Some("JS:~a /a.js:1:1"));
        assert_eq!(m.lookup(0x2000), None);
        assert!(!m.refresh().unwrap());

        f.write_all(b" /b.js:2:2\n1000 10 JS:*a /a.js:1:1\n").unwrap();
        assert!(m.refresh().unwrap());
        assert_eq!(m.lookup(0x2000), Some("JS:~b /b.js:2:2"));
        assert_eq!(m.lookup(0x1000), Some("JS:*a /a.js:1:1"));

        // Many lines, more than one read chunk.
        let mut big = Vec::new();
        for i in 0..40_000u64 {
            writeln!(big, "{:x} 10 JS:~f{i} /big.js:{i}:1", 0x10_0000 + i * 0x10).unwrap();
        }
        f.write_all(&big).unwrap();
        assert!(m.refresh().unwrap());
        assert_eq!(m.lookup(0x10_0000 + 39_999 * 0x10 + 5), Some("JS:~f39999 /big.js:39999:1"));
        assert_eq!(m.len(), 40_002);

        // Truncated and rewritten: starts over.
        drop(f);
        std::fs::write(&path, "5000 10 JS:~new /n.js:1:1\n").unwrap();
        assert!(m.refresh().unwrap());
        assert_eq!(m.lookup(0x1000), None);
        assert_eq!(m.lookup(0x5000), Some("JS:~new /n.js:1:1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_not_an_error_and_looked_for_again_later() {
        let dir = std::env::temp_dir().join(format!("looptop-perfmap-late-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf-2.map");
        let mut m = PerfMap::new(String::new(), vec![PathBuf::from("/nonexistent/perf-1.map"), path.clone()]);
        assert!(!m.refresh().unwrap());
        assert_eq!(m.lookup(0), None);
        std::fs::write(&path, "10 10 Builtin:A\n").unwrap();
        // Not looked for again right away by a refresh…
        assert!(!m.refresh().unwrap());
        // … but a while later, or when asked to open it.
        std::thread::sleep(RETRY_OPEN);
        assert!(m.refresh().unwrap());
        assert_eq!(m.lookup(0x10), Some("Builtin:A"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
