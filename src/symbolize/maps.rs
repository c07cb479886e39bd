//! Snapshots of a process's executable mappings (`/proc/PID/maps`), kept after it exits.

use std::sync::Arc;

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backing {
    /// A file, by its path inside the process's mount namespace.
    File(Arc<str>),
    /// A file deleted (or replaced) since it was mapped; its former path.
    Deleted(Arc<str>),
    /// Anonymous memory (JIT code), including `[anon:…]` and memfd mappings.
    Anon,
    /// A kernel-provided mapping: `[vdso]`, `[vsyscall]` …
    Special(Arc<str>),
}

/// One executable mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Inode number of the file behind it (0 for anonymous memory).
    pub inode: u64,
    /// What backs it.
    pub backing: Backing,
}

/// The executable mappings of a process, sorted by address and non-overlapping.
#[derive(Debug, Default)]
pub(crate) struct Maps {
    mappings: Vec<Mapping>,
    /// A hash of the text last parsed, so an unchanged file is not parsed again.
    text_hash: u64,
}

impl Maps {
    /// Takes in a new reading of `/proc/PID/maps`. Mappings of the previous snapshot that no new
    /// mapping overlaps are kept, so addresses sampled before an `munmap` still resolve.
    pub(crate) fn update(&mut self, text: &str) {
        let hash = hash(text);
        if hash == self.text_hash && !self.mappings.is_empty() {
            return;
        }
        self.text_hash = hash;
        let mut new: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        new.sort_by_key(|m| m.start);
        new.dedup_by(|later, earlier| later.start < earlier.end); // overlapping lines are garbage
        let kept = self.mappings.iter().filter(|old| !overlaps_any(&new, old.start, old.end)).cloned();
        let mut merged: Vec<Mapping> = kept.collect();
        merged.extend(new);
        merged.sort_by_key(|m| m.start);
        self.mappings = merged;
    }

    /// The mapping that holds `addr`.
    pub(crate) fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }

    /// All mappings.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.iter()
    }
}

/// Whether any of the sorted `ms` overlaps `[start, end)`.
fn overlaps_any(ms: &[Mapping], start: u64, end: u64) -> bool {
    let i = ms.partition_point(|m| m.end <= start);
    ms.get(i).is_some_and(|m| m.start < end)
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// `START-END PERMS OFFSET DEV INODE [PATH]` → an executable mapping; `None` for anything else.
fn parse_line(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        let s = rest.trim_start_matches(' ');
        let end = s.find(' ').unwrap_or(s.len());
        let (f, r) = s.split_at(end);
        rest = r;
        f
    };
    let (range, perms, offset, _dev, inode) = (field(), field(), field(), field(), field());
    if !perms.contains('x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let inode: u64 = inode.parse().ok()?;
    if start >= end {
        return None;
    }
    let path = rest.trim_start_matches(' ');
    let backing = if path.is_empty() || path.starts_with("[anon") || path.starts_with("/memfd:") {
        Backing::Anon
    } else if path.starts_with('[') || inode == 0 && !path.starts_with('/') {
        Backing::Special(path.into())
    } else if let Some(p) = path.strip_suffix(" (deleted)") {
        Backing::Deleted(p.into())
    } else {
        Backing::File(path.into())
    };
    Some(Mapping { start, end, offset, inode, backing })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
00400000-00b72000 r--p 00000000 08:01 1234                               /usr/bin/node
00b72000-025fe000 r-xp 00772000 08:01 1234                               /usr/bin/node
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 
7f0000010000-7f0000020000 r-xp 00028000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000030000-7f0000031000 r-xp 00001000 08:01 77                         /srv/my lib/a b.so (deleted)
7f0000040000-7f0000041000 r-xp 00000000 00:01 5                          /memfd:jit (deleted)
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_executable_mappings() {
        let mut m = Maps::default();
        m.update(TEXT);
        let all: Vec<_> = m.iter().collect();
        assert_eq!(all.len(), 7);
        assert_eq!(m.find(0x400000), None, "not executable");
        let node = m.find(0xb72000).unwrap();
        assert_eq!((node.start, node.end, node.offset), (0xb72000, 0x25fe000, 0x772000));
        assert_eq!(node.backing, Backing::File("/usr/bin/node".into()));
        assert_eq!(m.find(0x25fe000), None);
        assert_eq!(m.find(0x7f0000000fff).unwrap().backing, Backing::Anon);
        assert_eq!(m.find(0x7f0000030000).unwrap().backing, Backing::Deleted("/srv/my lib/a b.so".into()));
        assert_eq!(m.find(0x7f0000040000).unwrap().backing, Backing::Anon);
        assert_eq!(m.find(0x7ffd00000001).unwrap().backing, Backing::Special("[vdso]".into()));
        assert_eq!(m.find(0), None);
        assert_eq!(m.find(u64::MAX), None);
    }

    #[test]
    fn keeps_old_mappings_nothing_replaced() {
        let mut m = Maps::default();
        m.update(TEXT);
        // libc unmapped, something new mapped over the anonymous range.
        m.update(
            "00b72000-025fe000 r-xp 00772000 08:01 1234 /usr/bin/node\n\
             7f0000000800-7f0000000900 r-xp 00000000 08:01 5 /usr/lib/new.so\n",
        );
        assert!(m.find(0x7f0000010000).is_some(), "unmapped since: still known");
        assert_eq!(m.find(0x7f0000000000), None, "replaced: the old anonymous mapping is gone");
        assert_eq!(m.find(0x7f0000000800).unwrap().backing, Backing::File("/usr/lib/new.so".into()));
        let starts: Vec<u64> = m.iter().map(|m| m.start).collect();
        let mut sorted = starts.clone();
        sorted.sort();
        assert_eq!(starts, sorted);
    }
}
