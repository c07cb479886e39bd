//! The V8 perf map (`/tmp/perf-<pid>.map`, a name V8 hard-codes) made safe before V8 opens it.
//!
//! V8 opens the map with `fopen(…, "w")`, which follows a link and truncates whatever it points
//! to. So before the agent adds `--perf-basic-prof`, it creates the file itself with `O_EXCL` and
//! `O_NOFOLLOW`, mode 0600: V8 then truncates our own empty file. A stale map of our own user
//! under that name is replaced; anything else there (another user's file, a link, a FIFO) means
//! no perf map for this process — the agent leaves the flag out. The map is removed when the
//! process exits (or, after a crash, by the next agent's sweep, or by the looptop that keeps the
//! segment), unless the user asked for perf maps with their own flag.

use std::ffi::CString;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The pid we created the map for (0: none), and its inode.
static CREATED_FOR: AtomicU32 = AtomicU32::new(0);
static INODE: AtomicU64 = AtomicU64::new(0);

/// V8's perf map path for `pid`.
pub(crate) fn path(pid: u32) -> CString {
    CString::new(format!("/tmp/perf-{pid}.map")).expect("no NUL in a formatted path")
}

/// Creates this process's perf map safely; true when V8 may now be told to write it.
pub(crate) fn prepare() -> bool {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let p = path(pid);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: plain system calls on a NUL-terminated path and the descriptor they return.
    unsafe {
        let mut fd = libc::open(p.as_ptr(), flags, 0o600 as libc::c_uint);
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            if !crate::sweep::is_own_regular(std::path::Path::new(p.to_str().unwrap_or_default())) {
                return false;
            }
            libc::unlink(p.as_ptr());
            fd = libc::open(p.as_ptr(), flags, 0o600 as libc::c_uint);
        }
        if fd < 0 {
            return false;
        }
        let mut st: libc::stat = std::mem::zeroed();
        let ok = libc::fstat(fd, &mut st) == 0;
        libc::close(fd);
        if !ok {
            return false;
        }
        INODE.store(st.st_ino, Ordering::Relaxed);
    }
    CREATED_FOR.store(pid, Ordering::Relaxed);
    true
}

/// Whether the agent created the perf map of `pid` (this process image).
pub(crate) fn created_for(pid: u32) -> bool {
    CREATED_FOR.load(Ordering::Relaxed) == pid && pid != 0
}

/// At exit: removes the map the agent created, if it is still that file.
pub(crate) fn remove_own(pid: u32) {
    if !created_for(pid) {
        return;
    }
    let p = path(pid);
    // SAFETY: lstat fills a valid struct for a NUL-terminated path; unlink of that path.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::lstat(p.as_ptr(), &mut st) == 0
            && st.st_ino == INODE.load(Ordering::Relaxed)
            && st.st_uid == libc::geteuid()
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
        {
            libc::unlink(p.as_ptr());
        }
    }
}

/// Removes the map of a dead process of ours whose segment says the agent made it.
pub(crate) fn remove_dead(pid: u32) {
    let p = path(pid);
    if crate::sweep::is_own_regular(std::path::Path::new(p.to_str().unwrap_or_default())) {
        // SAFETY: unlink of a NUL-terminated path.
        unsafe { libc::unlink(p.as_ptr()) };
    }
}
