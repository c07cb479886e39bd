//! The wait calls: the system calls in which a thread waits for events, so that a thread that
//! makes them is a loop and each return starts a tick (DESIGN.md's five, and `select` and
//! `pselect6` given descriptors). Both kernel sources hook them, and looptop asks
//! `/proc/PID/task/TID/syscall` whether a thread is inside one right now.

/// One wait call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitCall {
    /// The name of its `syscalls:sys_enter_*`/`sys_exit_*` tracepoints.
    pub name: &'static str,
    /// Its number on this architecture (-1: this architecture has no such call).
    pub nr: i64,
    /// A wait only when its first argument (the number of descriptors) is not 0: `select` with
    /// no descriptors is a sleep (CPython 3.10's `time.sleep`), part of a tick; with them it is
    /// a loop's wait (gunicorn's sync workers).
    pub with_fds: bool,
    /// The argument that holds its timeout as an int of milliseconds (0: only check for
    /// events), for the nested-wait rule; `None` for a pointer to a `timespec`/`timeval`, which
    /// the perf source cannot read after the fact.
    pub timeout_ms_arg: Option<usize>,
}

impl WaitCall {
    const fn new(name: &'static str, nr: i64, with_fds: bool, timeout_ms_arg: Option<usize>) -> WaitCall {
        WaitCall { name, nr, with_fds, timeout_ms_arg }
    }
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const EPOLL_WAIT: i64 = 232;
    pub const POLL: i64 = 7;
    pub const SELECT: i64 = 23;
    pub const EPOLL_PWAIT: i64 = 281;
    pub const PPOLL: i64 = 271;
    pub const PSELECT6: i64 = 270;
}

// The generic table (aarch64, riscv64): no epoll_wait, poll or select of their own; libc makes
// them with the calls below.
#[cfg(not(target_arch = "x86_64"))]
mod nr {
    pub const EPOLL_WAIT: i64 = -1;
    pub const POLL: i64 = -1;
    pub const SELECT: i64 = -1;
    pub const EPOLL_PWAIT: i64 = 22;
    pub const PPOLL: i64 = 73;
    pub const PSELECT6: i64 = 72;
}

/// Every wait call. A kernel without one (epoll_pwait2 before 5.11) simply has no tracepoint.
pub const WAIT_CALLS: [WaitCall; 7] = [
    WaitCall::new("epoll_wait", nr::EPOLL_WAIT, false, Some(3)),
    WaitCall::new("epoll_pwait", nr::EPOLL_PWAIT, false, Some(3)),
    WaitCall::new("epoll_pwait2", 441, false, None),
    WaitCall::new("poll", nr::POLL, false, Some(2)),
    WaitCall::new("ppoll", nr::PPOLL, false, None),
    WaitCall::new("select", nr::SELECT, true, None),
    WaitCall::new("pselect6", nr::PSELECT6, true, None),
];

/// The wait calls as the user reads them in a message ("never waited in …").
pub const NAMED: &str = "epoll_wait, epoll_pwait, epoll_pwait2, poll, ppoll or select/pselect with descriptors";

/// Whether a system call (number and first argument) waits for events.
pub fn is_wait(nr: i64, arg0: u64) -> bool {
    WAIT_CALLS.iter().any(|w| w.nr >= 0 && w.nr == nr && (!w.with_fds || arg0 != 0))
}

/// Whether `tid` of `pid` is inside one of the wait calls right now.
pub fn in_wait_call(pid: u32, tid: u32) -> bool {
    current_call(pid, tid).is_some_and(|(nr, args)| is_wait(nr, args[0]))
}

/// Whether `tid` of `pid` is parked on a futex right now ([`looptop_abi::futex_parks`]).
pub fn parked(pid: u32, tid: u32) -> bool {
    current_call(pid, tid).is_some_and(|(nr, args)| nr == libc::SYS_futex && looptop_abi::futex_parks(args[1], args[3]))
}

/// The system call `tid` of `pid` is in, with its arguments.
fn current_call(pid: u32, tid: u32) -> Option<(i64, [u64; 6])> {
    parse_syscall(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?)
}

/// The call number and arguments of a `/proc/…/syscall` line ("7 0x7ffc… 0x1 …"; "running"
/// or "-1 …" when the thread is not in a call).
fn parse_syscall(text: &str) -> Option<(i64, [u64; 6])> {
    let mut words = text.split_whitespace();
    let nr = words.next()?.parse().ok()?;
    let mut args = [0u64; 6];
    for (arg, word) in args.iter_mut().zip(words) {
        *arg = u64::from_str_radix(word.trim_start_matches("0x"), 16).unwrap_or(0);
    }
    Some((nr, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_waits_only_with_descriptors() {
        let select = WAIT_CALLS.iter().find(|w| w.name == "pselect6").unwrap().nr;
        assert!(is_wait(select, 5));
        assert!(!is_wait(select, 0), "select(0, …) is a sleep");
        let ppoll = WAIT_CALLS.iter().find(|w| w.name == "ppoll").unwrap().nr;
        assert!(is_wait(ppoll, 0), "poll with no descriptors still waits (libuv's loop can)");
        assert!(!is_wait(-1, 0));
        assert_eq!(
            parse_syscall("270 0x5 0x7ffc 0x0 0x0 0x0 0x0 0x7ffd 0x7f00\n"),
            Some((270, [5, 0x7ffc, 0, 0, 0, 0]))
        );
        assert_eq!(parse_syscall("running\n"), None);
    }

    /// The thread of a real `select` with a descriptor and one with none, seen from outside.
    #[test]
    fn a_thread_in_select_on_a_pipe_is_in_a_wait_call() {
        use std::sync::mpsc;
        let pid = std::process::id();
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (tx, rx) = mpsc::channel();
        let read_fd = fds[0];
        let waiter = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let mut set = std::mem::MaybeUninit::<libc::fd_set>::zeroed();
            // SAFETY: FD_SET on a zeroed set, select on a valid set and no timeout.
            unsafe {
                libc::FD_SET(read_fd, set.as_mut_ptr());
                libc::select(
                    read_fd + 1,
                    set.as_mut_ptr(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
            let mut tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
            // SAFETY: select with no descriptors: a one-second sleep.
            unsafe { libc::select(0, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), &mut tv) };
        });
        let tid = rx.recv().unwrap();
        let until = |want: bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while in_wait_call(pid, tid) != want {
                assert!(std::time::Instant::now() < deadline, "in_wait_call never became {want}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        until(true);
        // SAFETY: writing one byte into our own pipe ends the select.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        // Now in select(0, …): asleep, not waiting for events.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!in_wait_call(pid, tid));
        waiter.join().unwrap();
        // SAFETY: closing our own pipe.
        unsafe { libc::close(fds[0]) };
        unsafe { libc::close(fds[1]) };
    }
}
