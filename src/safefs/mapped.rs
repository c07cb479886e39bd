//! The files a process maps (its executable, its libraries), opened for their symbols: the very
//! file the process maps, never another one its user put under the same name since.

use super::{as_user, open, open_checked, Expect, Reader, Refused};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file mapping of a process, as a line of `/proc/PID/maps` gives it.
#[derive(Debug, Clone, Copy)]
pub struct Mapped<'a> {
    /// The process.
    pub pid: u32,
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// Where the file is found by name from here: its path in `maps`, through
    /// `/proc/PID/root` when the process has another root; `None` for a deleted file.
    pub path: Option<&'a Path>,
    /// Its inode number in `maps` (0 when unknown).
    pub inode: u64,
}

/// Opens the file a process maps as `reader` could read it, bounded, never blocking: through
/// `/proc/PID/map_files/START-END` (the kernel's own reference to the mapping, no name in between
/// that anyone could swap; opening it needs `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE`, so in
/// practice root), else by its name with [`open`]'s rules, accepted only when its inode is the
/// mapped one.
pub fn open_mapped(reader: &Reader, m: &Mapped<'_>, max_len: u64) -> Result<File, Refused> {
    let link = PathBuf::from(format!("/proc/{}/map_files/{:x}-{:x}", m.pid, m.start, m.end));
    // The link is the kernel's (a magic link): followed, it is the mapped file itself.
    let through_link = as_user(reader.creds(), &link, move |p| open_checked(p, Expect::read(max_len), 0));
    let Some(path) = m.path else { return through_link };
    let refused = match through_link {
        Ok(file) => return Ok(file),
        Err(e) => e,
    };
    // Not permitted to follow map_files (not root): the name, as the reader.
    let inode = m.inode;
    as_user(reader.creds(), path, move |p| {
        let file = open(p, Expect::read(max_len))?;
        let found = file.metadata().map_err(|source| Refused::Io { path: p.to_path_buf(), source })?.ino();
        if inode != 0 && found != inode {
            return Err(Refused::Io {
                path: p.to_path_buf(),
                source: io::Error::other(format!("not the mapped file any more (inode {found}, mapped {inode})")),
            });
        }
        Ok(file)
    })
    .map_err(|by_name| match by_name.os_error().map(io::Error::kind) {
        // Nothing by that name: the map_files refusal says more.
        Some(io::ErrorKind::NotFound) => refused,
        _ => by_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping of this test executable's first executable line in `/proc/self/maps`.
    fn own_text() -> (u64, u64, PathBuf, u64) {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let line = maps.lines().find(|l| l.ends_with(exe.to_str().unwrap()) && l.contains(" r-xp ")).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        let (s, e) = f[0].split_once('-').unwrap();
        (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap(), exe, f[4].parse().unwrap())
    }

    #[test]
    fn opens_the_mapped_file_and_nothing_else() {
        let (start, end, exe, inode) = own_text();
        let pid = std::process::id();
        let m = Mapped { pid, start, end, path: Some(&exe), inode };
        let f = open_mapped(&Reader::Me, &m, u64::MAX).unwrap();
        assert_eq!(f.metadata().unwrap().ino(), inode);
        // Too large for the bound.
        assert!(open_mapped(&Reader::Me, &m, 16).is_err());
        // A name that now holds another file is refused (map_files may open it as root: the
        // mapping is still ours, so pretend the range is gone).
        let other = Path::new("/proc/self/status");
        let m = Mapped { pid, start: 1, end: 2, path: Some(other), inode };
        assert!(open_mapped(&Reader::Me, &m, u64::MAX).is_err());
        let m = Mapped { pid, start: 1, end: 2, path: None, inode };
        assert!(open_mapped(&Reader::Me, &m, u64::MAX).is_err());
    }
}
