//! Which system calls the agent may make. Under a seccomp filter (containers, systemd's
//! `SystemCallFilter`), a call the filter forbids may kill the whole process, and a preloaded
//! agent must never be the one to make it. So when `/proc/self/status` says a filter is in force,
//! the constructor tries each call the agent would make later once, in a short-lived child
//! process, and the agent does without what killed the child: no signals for the watchdog (stacks
//! only of sleeping threads), no stack copies, no watchdog, or no segment at all. Without a filter
//! nothing is tried. The one call taken on trust is the child's own creation (`clone3`, as
//! glibc's `pthread_create` makes it, else `clone`). A filter the program installs later (through
//! libc's `prctl` or `syscall`) freezes the agent: see [`freeze`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A system call (or group) the agent makes after its constructor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub(crate) enum Call {
    /// `tgkill`: the watchdog's signal.
    Tgkill = 0,
    /// `rt_sigaction`: installing and checking the watchdog's handler.
    Sigaction,
    /// `rt_sigprocmask`: blocking the watchdog's signal around a wait or sleep.
    Sigprocmask,
    /// `rt_sigreturn`: the return from the watchdog's handler (tried with a real signal).
    Sigreturn,
    /// `process_vm_readv`: copying a sleeping thread's stack.
    ProcessVmReadv,
    /// `fallocate`: reserving the segment's pages.
    Fallocate,
    /// `ftruncate`: sizing the segment.
    Ftruncate,
    /// `prctl(PR_GET_NAME)`: a loop's thread name.
    Prctl,
    /// `statfs`: the segment folder's free space.
    Statfs,
    /// `clone3`: the watchdog thread (glibc's `pthread_create`).
    Clone3,
    /// `kill(pid, 0)`: whether a process is alive.
    Kill,
    /// `getdents64`: listing the segment folder (removing dead processes' segments).
    Getdents,
    /// `unlink`: removing a segment or a perf map.
    Unlink,
    /// `readlink`: the program's path (`/proc/self/exe`), to choose its runtime probe.
    Readlink,
    /// `statx`, `newfstatat`, `fstat`: a file's type, owner and size.
    Stat,
    /// `openat`, `read`, `pread64`, `write`, `close`, `lseek`: the agent's files.
    Files,
    /// `getpid`, `gettid`, `geteuid`: who is asking.
    Ids,
    /// `getrandom`: a segment's name when its plain name is taken.
    Getrandom,
    /// `mmap`, `munmap`, `mprotect`, `madvise`: the segment and the watchdog's stack.
    Memory,
    /// `clock_nanosleep`: the watchdog's sleep.
    Sleep,
    /// `futex`: the watchdog thread's start and locks of the standard library.
    Futex,
    /// `sched_getaffinity`, `prlimit64`, `set_robust_list`, `rseq`: a new thread's start, and
    /// `pthread_getattr_np` (a loop thread's stack bounds).
    ThreadStart,
}

const CALLS: [Call; 22] = [
    Call::Tgkill,
    Call::Sigaction,
    Call::Sigprocmask,
    Call::Sigreturn,
    Call::ProcessVmReadv,
    Call::Fallocate,
    Call::Ftruncate,
    Call::Prctl,
    Call::Statfs,
    Call::Clone3,
    Call::Kill,
    Call::Getdents,
    Call::Unlink,
    Call::Readlink,
    Call::Stat,
    Call::Files,
    Call::Ids,
    Call::Getrandom,
    Call::Memory,
    Call::Sleep,
    Call::Futex,
    Call::ThreadStart,
];

/// Without these the agent has no segment at all: it steps aside.
const CORE: [Call; 9] = [
    Call::Ftruncate,
    Call::Getdents,
    Call::Unlink,
    Call::Readlink,
    Call::Stat,
    Call::Files,
    Call::Ids,
    Call::Getrandom,
    Call::Memory,
];

/// Without these there is no watchdog thread.
const THREAD: [Call; 5] = [Call::Clone3, Call::Sleep, Call::Futex, Call::ThreadStart, Call::Sigprocmask];

/// Bit `c` set: call `c` is forbidden. All bits: the program installed a seccomp filter of its
/// own after the probe, and nothing may be assumed of it any more.
static FORBIDDEN: AtomicU32 = AtomicU32::new(0);

/// Whether the agent may make this call.
#[inline]
pub(crate) fn allowed(c: Call) -> bool {
    FORBIDDEN.load(Ordering::Relaxed) & (1 << c as u32) == 0
}

/// Whether the watchdog may signal loop threads (and the wrappers block its signal).
pub(crate) fn signals_allowed() -> bool {
    [Call::Tgkill, Call::Sigaction, Call::Sigprocmask, Call::Sigreturn].into_iter().all(allowed)
}

/// The calls found forbidden, by name (`unlink, statx`), for the one line that says why the
/// agent stepped aside.
pub(crate) fn forbidden_names() -> String {
    let names: Vec<String> = CALLS.iter().filter(|&&c| !allowed(c)).map(|c| format!("{c:?}").to_lowercase()).collect();
    names.join(", ")
}

/// Whether the agent may keep a segment at all (create, size, list, remove).
pub(crate) fn core_allowed() -> bool {
    CORE.into_iter().all(allowed)
}

/// Whether the agent may start its watchdog thread.
pub(crate) fn thread_allowed() -> bool {
    THREAD.into_iter().all(allowed)
}

/// The program installed a seccomp filter of its own (seen by the interposed `prctl` and
/// `syscall`): from now on the agent makes no system call it can do without — no signal, no
/// stack copy, no new segment, no removal at exit (the watchdog only sleeps).
pub(crate) fn freeze() -> u32 {
    FORBIDDEN.swap(u32::MAX, Ordering::SeqCst)
}

/// Undoes [`freeze`] (the install it guarded failed): back to what the probe found.
pub(crate) fn thaw(before: u32) {
    FORBIDDEN.store(before, Ordering::SeqCst);
}

/// The `Seccomp:` mode of this process: 0 none, 1 strict, 2 filter. Read with `openat`, `read`
/// and `close` only (the loader made those calls before us; `std::fs` would add `statx`).
fn seccomp_mode() -> u32 {
    let mut buf = [0u8; 8192];
    let mut len = 0;
    // SAFETY: a NUL-terminated path; reads into the rest of `buf`; the descriptor is closed.
    unsafe {
        let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        while len < buf.len() {
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        libc::close(fd);
    }
    // Parsed in place: no allocation before the probe (see `agent_init`).
    buf[..len]
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"Seccomp:"))
        .and_then(|v| v.iter().find(|b| !b.is_ascii_whitespace()))
        .map_or(0, |&d| d.wrapping_sub(b'0') as u32)
}

/// Finds the forbidden calls (constructor only, before any thread of ours exists). Returns false
/// when the agent must not run at all (strict mode, or a call it cannot do without forbidden).
pub(crate) fn probe() -> bool {
    match seccomp_mode() {
        0 => true,
        2 => {
            FORBIDDEN.store(probe_in_children(), Ordering::Relaxed);
            core_allowed()
        }
        _ => false,
    }
}

/// The watchdog's handler in the probe's child: a signal that runs it and returns through
/// `rt_sigreturn`.
extern "C" fn ignore_signal(_: libc::c_int) {}

/// Makes one call with harmless arguments (a bad descriptor, a query, signal 0): a filter checks
/// the call before its arguments, so a forbidden one is caught as surely as a real one.
fn try_call(c: Call) {
    let mut buf = [0u8; 256];
    let p = buf.as_mut_ptr();
    // SAFETY: each call gets valid pointers into `buf` or null/invalid descriptors; none changes
    // anything of the (throwaway) process.
    unsafe {
        let pid = libc::syscall(libc::SYS_getpid);
        match c {
            Call::Tgkill => {
                libc::syscall(libc::SYS_tgkill, pid, libc::syscall(libc::SYS_gettid), 0);
            }
            Call::Sigaction => {
                libc::syscall(libc::SYS_rt_sigaction, libc::SIGUSR2, 0usize, p, 8usize);
            }
            Call::Sigprocmask => {
                libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, 0usize, p, 8usize);
            }
            Call::Sigreturn => {
                // A real round trip: glibc's restorer makes the rt_sigreturn call.
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = ignore_signal as *const () as usize;
                if libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut()) == 0 {
                    libc::syscall(libc::SYS_tgkill, pid, libc::syscall(libc::SYS_gettid), libc::SIGUSR2);
                }
            }
            Call::ProcessVmReadv => {
                let local = libc::iovec { iov_base: p.cast(), iov_len: 8 };
                let remote = libc::iovec { iov_base: p.add(8).cast(), iov_len: 8 };
                libc::syscall(libc::SYS_process_vm_readv, pid, &local, 1, &remote, 1, 0);
            }
            Call::Fallocate => {
                libc::syscall(libc::SYS_fallocate, -1, 0, 0, 1);
            }
            Call::Ftruncate => {
                libc::syscall(libc::SYS_ftruncate, -1, 0);
            }
            Call::Prctl => {
                libc::syscall(libc::SYS_prctl, libc::PR_GET_NAME, p);
            }
            Call::Statfs => {
                libc::syscall(libc::SYS_statfs, c"/".as_ptr(), p);
            }
            Call::Clone3 => {
                libc::syscall(libc::SYS_clone3, 0usize, 0usize);
            }
            Call::Kill => {
                libc::syscall(libc::SYS_kill, pid, 0);
            }
            Call::Getdents => {
                libc::syscall(libc::SYS_getdents64, -1, p, 64usize);
            }
            Call::Unlink => {
                libc::syscall(libc::SYS_unlink, c"".as_ptr());
                libc::syscall(libc::SYS_unlinkat, -1, c"".as_ptr(), 0);
            }
            Call::Readlink => {
                libc::syscall(libc::SYS_readlink, c"".as_ptr(), p, 16usize);
                libc::syscall(libc::SYS_readlinkat, -1, c"".as_ptr(), p, 16usize);
            }
            Call::Stat => {
                libc::syscall(libc::SYS_statx, -1, c"".as_ptr(), 0, 0, p);
                libc::syscall(libc::SYS_newfstatat, -1, c"".as_ptr(), p, 0);
                libc::syscall(libc::SYS_fstat, -1, p);
            }
            Call::Files => {
                libc::syscall(libc::SYS_openat, -1, c"".as_ptr(), 0, 0);
                libc::syscall(libc::SYS_read, -1, p, 0usize);
                libc::syscall(libc::SYS_pread64, -1, p, 0usize, 0);
                libc::syscall(libc::SYS_write, -1, p, 0usize);
                libc::syscall(libc::SYS_lseek, -1, 0, 0);
                libc::syscall(libc::SYS_close, -1);
            }
            Call::Ids => {
                libc::syscall(libc::SYS_gettid);
                libc::syscall(libc::SYS_geteuid);
            }
            Call::Getrandom => {
                libc::syscall(libc::SYS_getrandom, p, 8usize, libc::GRND_NONBLOCK);
            }
            Call::Memory => {
                libc::syscall(libc::SYS_munmap, 0usize, 0usize);
                libc::syscall(libc::SYS_mprotect, 0usize, 0usize, 0);
                libc::syscall(libc::SYS_madvise, 0usize, 0usize, 0);
                libc::syscall(libc::SYS_mmap, 0usize, 0usize, 0, 0, -1, 0);
            }
            Call::Sleep => {
                let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                libc::syscall(libc::SYS_clock_nanosleep, libc::CLOCK_MONOTONIC, 0, &zero, 0usize);
            }
            Call::Futex => {
                let word = 1u32;
                libc::syscall(libc::SYS_futex, &word, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 0);
            }
            Call::ThreadStart => {
                libc::syscall(libc::SYS_sched_getaffinity, 0, 128usize, p);
                libc::syscall(libc::SYS_prlimit64, 0, libc::RLIMIT_STACK, 0usize, p);
                libc::syscall(libc::SYS_set_robust_list, 0usize, 0usize);
                libc::syscall(libc::SYS_rseq, 0usize, 0u32, 0, 0);
            }
        }
    }
}

/// A child process that shares nothing but the address space's copy, as `fork` makes: `clone3`
/// first, as glibc's `pthread_create` does (so a filter that lets the program start threads
/// lets this through), then `clone` when `clone3` fails with an error (Docker's filter answers
/// `clone3` with ENOSYS so that glibc falls back the same way). Returns the child's pid, 0 in the
/// child, negative on failure.
fn fork_raw() -> libc::c_long {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    let args = CloneArgs {
        flags: 0,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: a fork-like clone3 (no stack given: the child runs on a copy of this one).
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid >= 0 {
        return pid;
    }
    // SAFETY: a fork-like clone.
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) }
}

/// Runs the calls in a child process (raw `clone`, raw system calls only, `exit_group`); when a
/// call kills the child, notes it and goes on from the next one in a new child.
fn probe_in_children() -> u32 {
    const DONE: u32 = u32::MAX;
    // SAFETY: an anonymous shared page to learn how far a child got; unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        // Cannot tell: do without everything the filter might forbid.
        return u32::MAX;
    }
    // SAFETY: the page is 4096 bytes, page aligned.
    let progress = unsafe { &*(page as *const AtomicU32) };
    let mut forbidden = 0u32;
    let mut start = 0usize;
    while start < CALLS.len() {
        progress.store(start as u32, Ordering::SeqCst);
        // The child only makes raw system calls, atomic stores and one `sigaction`, then
        // exit_group, so nothing of the parent's state (locks, allocator) is used.
        let child = fork_raw();
        if child == 0 {
            for (i, &c) in CALLS.iter().enumerate().skip(start) {
                progress.store(i as u32, Ordering::SeqCst);
                try_call(c);
            }
            progress.store(DONE, Ordering::SeqCst);
            // SAFETY: leaving the child at once.
            unsafe { libc::syscall(libc::SYS_exit_group, 0) };
        }
        if child < 0 {
            forbidden |= CALLS[start..].iter().fold(0, |m, &c| m | 1 << c as u32);
            break;
        }
        let mut status = 0;
        // SAFETY: waiting for our own child only.
        while unsafe { libc::waitpid(child as libc::pid_t, &mut status, libc::__WALL) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        let reached = progress.load(Ordering::SeqCst);
        if reached == DONE || reached as usize >= CALLS.len() {
            break;
        }
        forbidden |= 1 << CALLS[reached as usize] as u32;
        start = reached as usize + 1;
    }
    // SAFETY: unmapping the page mapped above.
    unsafe { libc::munmap(page, 4096) };
    forbidden
}

/// 64 random bits from the kernel (`getrandom`), mixed with the clock if that fails.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut v = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into v.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        v = crate::now_ns().wrapping_mul(0x9e3779b97f4a7c15)
            ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0xbf58476d1ce4e5b9)
            // SAFETY: getpid has no preconditions.
            ^ ((unsafe { libc::getpid() } as u64) << 32);
    }
    v
}

/// Copies our own memory at `addr` into `buf` without risking a fault (`process_vm_readv` of our
/// own pid reports EFAULT instead); returns the bytes copied (0 on any error).
pub(crate) fn read_own(addr: u64, buf: &mut [u8]) -> usize {
    if buf.is_empty() {
        return 0;
    }
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: one local iovec over `buf`, which we own mutably; the kernel checks the remote one.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_filter_everything_is_allowed() {
        if seccomp_mode() != 0 {
            return;
        }
        assert!(probe());
        assert!(CALLS.iter().all(|&c| allowed(c)));
    }

    #[test]
    fn the_children_find_nothing_forbidden_without_a_filter() {
        if seccomp_mode() != 0 {
            return;
        }
        assert_eq!(probe_in_children(), 0);
    }
}
