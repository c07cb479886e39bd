//! Which system calls the agent may make. Under a seccomp filter (containers, systemd's
//! `SystemCallFilter`), a call the filter forbids may kill the whole process, and a preloaded
//! agent must never be the one to make it. So when `/proc/self/status` says a filter is in force,
//! the constructor tries each call the agent would make later once, in a short-lived child
//! process, and the agent does without what killed the child: no signals for the watchdog (stacks
//! only of sleeping threads), no stack copies, no segment at all. Without a filter nothing is
//! tried.

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
    /// `process_vm_readv`: copying a sleeping thread's stack.
    ProcessVmReadv,
    /// `fallocate`: reserving the segment's pages.
    Fallocate,
    /// `ftruncate`.
    Ftruncate,
    /// `prctl(PR_GET_NAME)`: a loop's thread name.
    Prctl,
    /// `statfs`: the segment folder's free space.
    Statfs,
    /// `clone3`: the watchdog thread (glibc's `pthread_create`).
    Clone3,
    /// `kill(pid, 0)`: whether a process is alive.
    Kill,
}

const CALLS: [Call; 10] = [
    Call::Tgkill,
    Call::Sigaction,
    Call::Sigprocmask,
    Call::ProcessVmReadv,
    Call::Fallocate,
    Call::Ftruncate,
    Call::Prctl,
    Call::Statfs,
    Call::Clone3,
    Call::Kill,
];

/// Bit `c` set: call `c` is forbidden.
static FORBIDDEN: AtomicU32 = AtomicU32::new(0);

/// Whether the agent may make this call.
#[inline]
pub(crate) fn allowed(c: Call) -> bool {
    FORBIDDEN.load(Ordering::Relaxed) & (1 << c as u32) == 0
}

/// Whether the watchdog may signal loop threads (and the wrappers block its signal).
pub(crate) fn signals_allowed() -> bool {
    allowed(Call::Tgkill) && allowed(Call::Sigaction) && allowed(Call::Sigprocmask)
}

/// The `Seccomp:` mode of this process: 0 none, 1 strict, 2 filter.
fn seccomp_mode() -> u32 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status.lines().find_map(|l| l.strip_prefix("Seccomp:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Finds the forbidden calls (constructor only, before any thread of ours exists). Returns false
/// when the agent must not run at all (strict mode).
pub(crate) fn probe() -> bool {
    match seccomp_mode() {
        0 => true,
        2 => {
            FORBIDDEN.store(probe_in_children(), Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

/// Makes one call with harmless arguments (a bad descriptor, a query, signal 0): a filter checks
/// the call before its arguments, so a forbidden one is caught as surely as a real one.
fn try_call(c: Call) {
    let mut buf = [0u8; 64];
    // SAFETY: each call gets valid pointers into `buf` or null/invalid descriptors; none changes
    // anything of the (throwaway) process.
    unsafe {
        match c {
            Call::Tgkill => {
                libc::syscall(libc::SYS_tgkill, libc::syscall(libc::SYS_getpid), libc::syscall(libc::SYS_gettid), 0);
            }
            Call::Sigaction => {
                libc::syscall(libc::SYS_rt_sigaction, libc::SIGUSR2, 0usize, buf.as_mut_ptr(), 8usize);
            }
            Call::Sigprocmask => {
                libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, 0usize, buf.as_mut_ptr(), 8usize);
            }
            Call::ProcessVmReadv => {
                let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: 8 };
                let remote = libc::iovec { iov_base: buf[8..].as_mut_ptr().cast(), iov_len: 8 };
                libc::syscall(libc::SYS_process_vm_readv, libc::syscall(libc::SYS_getpid), &local, 1, &remote, 1, 0);
            }
            Call::Fallocate => {
                libc::syscall(libc::SYS_fallocate, -1, 0, 0, 1);
            }
            Call::Ftruncate => {
                libc::syscall(libc::SYS_ftruncate, -1, 0);
            }
            Call::Prctl => {
                libc::syscall(libc::SYS_prctl, libc::PR_GET_NAME, buf.as_mut_ptr());
            }
            Call::Statfs => {
                libc::syscall(libc::SYS_statfs, c"/".as_ptr(), buf.as_mut_ptr());
            }
            Call::Clone3 => {
                libc::syscall(libc::SYS_clone3, 0usize, 0usize);
            }
            Call::Kill => {
                libc::syscall(libc::SYS_kill, libc::syscall(libc::SYS_getpid), 0);
            }
        }
    }
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
        return CALLS.iter().fold(0, |m, &c| if c == Call::Kill { m } else { m | 1 << c as u32 });
    }
    // SAFETY: the page is 4096 bytes, page aligned.
    let progress = unsafe { &*(page as *const AtomicU32) };
    let mut forbidden = 0u32;
    let mut start = 0usize;
    while start < CALLS.len() {
        progress.store(start as u32, Ordering::SeqCst);
        // SAFETY: a fork-like clone; the child only makes raw system calls and atomic stores,
        // then exit_group, so nothing of the parent's state (locks, allocator) is used.
        let child = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
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
