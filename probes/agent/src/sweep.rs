//! Removing what dead processes of our own user left behind: segments of processes that ended
//! without their exit handlers (`_exit`, a signal, a fork child of a fork server) and the V8
//! perf maps the agent made for them. Every agent does it when it creates its segment, so what a
//! process tree can leave in `/dev/shm` is bounded by the processes alive at once (plus the
//! segments a live looptop keeps for its last read).
//!
//! Only regular files of our own user, named `looptop-<pid>[-<hex>]`, whose header carries that
//! pid, of a process that no longer exists, are removed; nothing is followed or opened blocking.

use looptop_abi::{header_flags, Header, MAGIC, SEGMENT_PREFIX};
use std::ffi::CString;
use std::mem::offset_of;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// At most this many of our own user's files are looked into per sweep (names of other users'
/// files and of FIFOs, links and folders cost nothing: they are passed over by their type and
/// owner alone).
const MAX_ENTRIES: usize = 16_384;

/// The inode of this process's pid namespace (0 when it cannot be told).
pub(crate) fn own_pid_ns() -> u64 {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: stat fills a valid struct for a NUL-terminated path.
    if unsafe { libc::stat(c"/proc/self/ns/pid".as_ptr(), &mut st) } == 0 {
        st.st_ino
    } else {
        0
    }
}

/// Whether the segment at `path` was made in our pid namespace (or by an agent that did not
/// say): only then does its pid name a process we can see.
pub(crate) fn same_pid_ns(path: &Path) -> bool {
    facts(path).is_none_or(|(f, _, _)| f.pid_ns == 0 || f.pid_ns == own_pid_ns())
}

/// Whether the process `pid` exists (a zombie counts; another user's process counts).
fn alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    if crate::sys::allowed(crate::sys::Call::Kill) {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid as libc::pid_t, 0) } == 0 {
            return true;
        }
        return std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid a segment's file name carries.
pub(crate) fn pid_of_name(name: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(SEGMENT_PREFIX.as_bytes())?;
    let digits = rest.split(|&b| b == b'-').next()?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// `lstat` of a path: (is a regular file, owner, device, inode).
fn lstat(path: &Path) -> Option<(bool, u32, u64, u64)> {
    let c = c_path(path)?;
    // SAFETY: lstat fills a valid struct for a NUL-terminated path.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::lstat(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.st_mode & libc::S_IFMT == libc::S_IFREG, st.st_uid, st.st_dev, st.st_ino))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether `path` is a regular file of our own user (not a link, FIFO or another user's file).
pub(crate) fn is_own_regular(path: &Path) -> bool {
    lstat(path).is_some_and(|(reg, uid, _, _)| reg && uid == euid())
}

/// Unlinks `path` if it is still the file (device, inode) we know.
pub(crate) fn remove_if_same(path: &Path, dev: u64, ino: u64) {
    if lstat(path).is_some_and(|(_, _, d, i)| d == dev && i == ino) {
        if let Some(c) = c_path(path) {
            // SAFETY: a NUL-terminated path.
            unsafe { libc::unlink(c.as_ptr()) };
        }
    }
}

/// What a segment's header says about removing it: its pid, its keeper, its flags and its pid
/// namespace.
struct Facts {
    pid: u32,
    keeper: u32,
    flags: u32,
    pid_ns: u64,
}

/// Reads the facts of a segment file of ours (never blocking, never following a link).
fn facts(path: &Path) -> Option<(Facts, u64, u64)> {
    let c = c_path(path)?;
    // SAFETY: plain system calls on a NUL-terminated path and the descriptor they return.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut st: libc::stat = std::mem::zeroed();
        let mut head = [0u8; std::mem::size_of::<Header>()];
        let ok = libc::fstat(fd, &mut st) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_uid == euid()
            && libc::pread(fd, head.as_mut_ptr().cast(), head.len(), 0) == head.len() as isize;
        libc::close(fd);
        if !ok || head[..8] != MAGIC {
            return None;
        }
        let u32_at = |off: usize| u32::from_ne_bytes(head[off..off + 4].try_into().expect("4 bytes"));
        let version = u32_at(offset_of!(Header, version));
        let (keeper, flags, pid_ns) = if version >= 3 {
            let ns = offset_of!(Header, pid_ns);
            let pid_ns = u64::from_ne_bytes(head[ns..ns + 8].try_into().expect("8 bytes"));
            (u32_at(offset_of!(Header, keeper_pid)), u32_at(offset_of!(Header, flags)), pid_ns)
        } else {
            (0, 0, 0)
        };
        Some((Facts { pid: u32_at(offset_of!(Header, pid)), keeper, flags, pid_ns }, st.st_dev, st.st_ino))
    }
}

/// Removes the segments (and agent-made perf maps) of our user's dead processes in `dir`.
pub(crate) fn dead_segments(dir: &Path, own_pid: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let (me, ns) = (euid(), own_pid_ns());
    let mut looked = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = pid_of_name(name.as_bytes()) else { continue };
        // The entry's type from the listing itself: a FIFO, link or folder costs no call (and
        // is never opened: its owner learns nothing of when our processes start).
        if pid == own_pid || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if !lstat(&path).is_some_and(|(reg, uid, _, _)| reg && uid == me) {
            continue;
        }
        looked += 1;
        if looked > MAX_ENTRIES {
            break;
        }
        if alive(pid) {
            continue;
        }
        let Some((facts, dev, ino)) = facts(&path) else { continue };
        // Another pid namespace's process: its pid says nothing here.
        if facts.pid != pid || (facts.pid_ns != 0 && facts.pid_ns != ns) || alive(facts.keeper) {
            continue;
        }
        remove_if_same(&path, dev, ino);
        if facts.flags & header_flags::PERF_MAP != 0 {
            crate::perfmap::remove_dead(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_pids() {
        assert_eq!(pid_of_name(b"looptop-42"), Some(42));
        assert_eq!(pid_of_name(b"looptop-42-00ff"), Some(42));
        assert_eq!(pid_of_name(b"looptop-x"), None);
        assert_eq!(pid_of_name(b"looptop-"), None);
        assert_eq!(pid_of_name(b"other-42"), None);
    }
}
