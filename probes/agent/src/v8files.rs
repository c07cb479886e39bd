//! V8's own files, when the agent turned on `--perf-basic-prof`: the perf map and the isolate
//! log V8 opens for that flag (both with `fopen`, both kept open for the life of the isolate).
//!
//! - The isolate log (`isolate-0x…-<pid>-v8.log`, in the working folder) is nobody's wish when the
//!   agent added the flag: its `fopen` gets a file with no name (`O_TMPFILE` in /tmp, else a
//!   memfd; V8 refuses anything but a regular file). Nothing is created in the program's folder,
//!   and a folder the program cannot write no longer makes V8 print its log on stdout. (The log
//!   holds V8's heap chunk events only: a few KiB, growing slowly with heap churn.)
//! - Both descriptors are moved to high numbers (from [`HIGH_FD`] on). A program that closes
//!   descriptors it did not open, by number (a daemon closing what it inherited — Node's own
//!   `close` is a raw system call, so it cannot be intercepted), then opens its files gets the
//!   lowest free numbers, never V8's: V8's writes never land in the program's files (they fail
//!   once their descriptor is closed, and the perf map stops growing). Only a program that closes
//!   V8's descriptors and then holds more than [`HIGH_FD`] descriptors at once could meet them.
//!
//! With the user's own `--perf-basic-prof` or V8 logging flags, none of this applies.

use crate::wrappers::Next;
use libc::{c_char, FILE};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether V8's logging in this process is the agent's doing.
static OURS: AtomicBool = AtomicBool::new(false);
/// V8's descriptors go at or above this number (when the descriptor limit allows).
const HIGH_FD: libc::c_int = 4096;

static FOPEN: Next = Next::new(b"fopen\0");
static FOPEN64: Next = Next::new(b"fopen64\0");

/// Every symbol this module wraps, for resolving up front.
pub(crate) static ALL: [&Next; 2] = [&FOPEN, &FOPEN64];

/// V8's logging in this process is the agent's (it added `--perf-basic-prof`).
pub(crate) fn set_ours() {
    OURS.store(true, Ordering::Relaxed);
}

/// Which V8 file `path` is: the perf map of this process (false) or an isolate log (true).
fn v8_file(path: &[u8]) -> Option<bool> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    if path == crate::perfmap::path(pid).as_bytes() {
        return Some(false);
    }
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    (name.starts_with(b"isolate-0x") && name.ends_with(b"-v8.log")).then_some(true)
}

/// `open(2)` flags for an `fopen` mode ("w", "w+", "a" …).
fn open_flags(mode: &[u8]) -> libc::c_int {
    let plus = mode.contains(&b'+');
    let access = if plus { libc::O_RDWR } else { libc::O_WRONLY };
    match mode.first() {
        Some(b'a') => access | libc::O_CREAT | libc::O_APPEND,
        Some(b'r') => {
            if plus {
                libc::O_RDWR
            } else {
                libc::O_RDONLY
            }
        }
        _ => access | libc::O_CREAT | libc::O_TRUNC,
    }
}

/// Moves `fd` to a number at or above [`HIGH_FD`] (close-on-exec); `fd` itself when that is not
/// possible (a descriptor limit below it).
unsafe fn high(fd: libc::c_int) -> libc::c_int {
    let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD);
    if moved < 0 {
        return fd;
    }
    libc::syscall(libc::SYS_close, fd);
    moved
}

/// V8's file, opened the way the module says; null to let the real `fopen` do it.
unsafe fn open_v8_file(path: *const c_char, mode: *const c_char, log: bool) -> *mut FILE {
    let fd = if log {
        let fd = libc::open(c"/tmp".as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o600);
        if fd >= 0 {
            fd
        } else {
            libc::memfd_create(c"v8-log".as_ptr(), libc::MFD_CLOEXEC)
        }
    } else {
        let flags = open_flags(CStr::from_ptr(mode).to_bytes()) | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        libc::open(path, flags, 0o600)
    };
    if fd < 0 {
        return std::ptr::null_mut();
    }
    let fd = high(fd);
    let f = libc::fdopen(fd, mode);
    if f.is_null() {
        libc::syscall(libc::SYS_close, fd);
    }
    f
}

unsafe fn open_file(next: &Next, path: *const c_char, mode: *const c_char) -> *mut FILE {
    let addr = next.get();
    if addr == 0 {
        *libc::__errno_location() = libc::ENOSYS;
        return std::ptr::null_mut();
    }
    // SAFETY: addr is the next definition of this very symbol, with this signature.
    let real: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut FILE = std::mem::transmute(addr);
    if !OURS.load(Ordering::Relaxed) || path.is_null() || mode.is_null() {
        return real(path, mode);
    }
    let which = std::panic::catch_unwind(|| v8_file(CStr::from_ptr(path).to_bytes())).ok().flatten();
    if let Some(log) = which {
        let f = open_v8_file(path, mode, log);
        if !f.is_null() {
            return f;
        }
    }
    real(path, mode)
}

/// Interposed: V8's files opened the way the module says; every other call unchanged.
///
/// # Safety
/// Same contract as the libc function.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
    open_file(&FOPEN, path, mode)
}

/// Interposed: as [`fopen`].
///
/// # Safety
/// Same contract as the libc function.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
    open_file(&FOPEN64, path, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v8_files_are_told_by_name() {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        assert_eq!(v8_file(format!("/tmp/perf-{pid}.map").as_bytes()), Some(false));
        assert_eq!(v8_file(b"isolate-0x55d5c8e0-4242-v8.log"), Some(true));
        assert_eq!(v8_file(b"/srv/isolate-0x1-1-v8.log"), Some(true));
        assert_eq!(v8_file(b"/tmp/perf-1.map"), None);
        assert_eq!(v8_file(b"data.log"), None);
    }

    #[test]
    fn fopen_modes_become_open_flags() {
        assert_eq!(open_flags(b"w"), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
        assert_eq!(open_flags(b"w+"), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC);
        assert_eq!(open_flags(b"a"), libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND);
        assert_eq!(open_flags(b"r+"), libc::O_RDWR);
    }
}
