//! Interposed sleep-like calls: the ones a signal handler cuts short with `EINTR` whatever
//! `SA_RESTART` says (signal(7)). On a loop thread each runs inside [`crate::quietly`], so the
//! watchdog never signals the thread while it is in one (it takes the stack from outside
//! instead). Other threads call straight through.
//!
//! Also the other calls signal(7) lists as never restarted: semaphores (`sem_wait`,
//! `sem_timedwait`, `sem_clockwait`, System V `semop`, `semtimedop`, `msgrcv`, `msgsnd`), the
//! socket calls a timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`) makes fail with `EINTR` (`accept`,
//! `accept4`, `connect`, `recv`, `recvfrom`, `recvmsg`, `recvmmsg`, `send`, `sendto`, `sendmsg`),
//! and the same calls made through libc's `syscall` ([`crate::filters`]).
//!
//! Not covered (a program could still see `EINTR` from the watchdog's signal in them, only while
//! a stall is in progress on that loop thread): `read` and `write` on a socket with a timeout,
//! libaio's `io_getevents`, and any of these made by a raw `syscall` instruction (Go, static
//! binaries).

use crate::wrappers::{MaskArg, Next};
use libc::{
    c_int, c_long, c_uint, c_void, clockid_t, fd_set, mmsghdr, msghdr, sem_t, sembuf, siginfo_t, sigset_t, size_t,
    sockaddr, socklen_t, ssize_t, timespec, timeval, useconds_t,
};

static NANOSLEEP: Next = Next::new(b"nanosleep\0");
static CLOCK_NANOSLEEP: Next = Next::new(b"clock_nanosleep\0");
static USLEEP: Next = Next::new(b"usleep\0");
static SLEEP: Next = Next::new(b"sleep\0");
static SELECT: Next = Next::new(b"select\0");
static PSELECT: Next = Next::new(b"pselect\0");
static PAUSE: Next = Next::new(b"pause\0");
static SIGSUSPEND: Next = Next::new(b"sigsuspend\0");
static SIGTIMEDWAIT: Next = Next::new(b"sigtimedwait\0");
static SIGWAITINFO: Next = Next::new(b"sigwaitinfo\0");
static SEM_WAIT: Next = Next::new(b"sem_wait\0");
static SEM_TIMEDWAIT: Next = Next::new(b"sem_timedwait\0");
static SEM_CLOCKWAIT: Next = Next::new(b"sem_clockwait\0");
static SEMOP: Next = Next::new(b"semop\0");
static SEMTIMEDOP: Next = Next::new(b"semtimedop\0");
static MSGRCV: Next = Next::new(b"msgrcv\0");
static MSGSND: Next = Next::new(b"msgsnd\0");
static ACCEPT: Next = Next::new(b"accept\0");
static ACCEPT4: Next = Next::new(b"accept4\0");
static CONNECT: Next = Next::new(b"connect\0");
static RECV: Next = Next::new(b"recv\0");
static RECVFROM: Next = Next::new(b"recvfrom\0");
static RECVMSG: Next = Next::new(b"recvmsg\0");
static RECVMMSG: Next = Next::new(b"recvmmsg\0");
static SEND: Next = Next::new(b"send\0");
static SENDTO: Next = Next::new(b"sendto\0");
static SENDMSG: Next = Next::new(b"sendmsg\0");

/// Every symbol this module wraps, for resolving up front.
pub(crate) static ALL: [&Next; 27] = [
    &NANOSLEEP,
    &CLOCK_NANOSLEEP,
    &USLEEP,
    &SLEEP,
    &SELECT,
    &PSELECT,
    &PAUSE,
    &SIGSUSPEND,
    &SIGTIMEDWAIT,
    &SIGWAITINFO,
    &SEM_WAIT,
    &SEM_TIMEDWAIT,
    &SEM_CLOCKWAIT,
    &SEMOP,
    &SEMTIMEDOP,
    &MSGRCV,
    &MSGSND,
    &ACCEPT,
    &ACCEPT4,
    &CONNECT,
    &RECV,
    &RECVFROM,
    &RECVMSG,
    &RECVMMSG,
    &SEND,
    &SENDTO,
    &SENDMSG,
];

/// System calls that a signal handler cuts short with `EINTR` (signal(7)), made through libc's
/// `syscall`: run quietly on a loop thread like their libc wrappers.
pub(crate) fn sleeps_when_raw(nr: c_long) -> bool {
    matches!(
        nr,
        libc::SYS_nanosleep
            | libc::SYS_clock_nanosleep
            | libc::SYS_futex
            | libc::SYS_select
            | libc::SYS_semop
            | libc::SYS_semtimedop
            | libc::SYS_msgrcv
            | libc::SYS_msgsnd
            | libc::SYS_io_getevents
            | libc::SYS_rt_sigtimedwait
            | libc::SYS_accept
            | libc::SYS_accept4
            | libc::SYS_connect
            | libc::SYS_recvfrom
            | libc::SYS_recvmsg
            | libc::SYS_recvmmsg
            | libc::SYS_sendto
            | libc::SYS_sendmsg
    )
}

macro_rules! wrap_sleep {
    ($next:ident, fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, fail = $fail:expr $(, mask = $mask:ident)?) => {
        /// Interposed: the watchdog leaves a loop thread alone while it is in this call.
        ///
        /// # Safety
        /// Same contract as the libc function of this name.
        #[no_mangle]
        #[allow(unused_mut)]
        pub unsafe extern "C" fn $name($(mut $arg: $ty),*) -> $ret {
            let addr = $next.get();
            if addr == 0 {
                crate::wrappers::enosys();
                return $fail;
            }
            // SAFETY: addr is the next definition of this very symbol, with this signature.
            let real: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(addr) };
            let mut _holder = MaskArg::new();
            crate::quietly(|_add| unsafe {
                $($mask = _holder.with($mask, _add);)?
                real($($arg),*)
            })
        }
    };
}

wrap_sleep!(NANOSLEEP, fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int, fail = -1);
// clock_nanosleep returns the error number instead of setting errno.
wrap_sleep!(CLOCK_NANOSLEEP, fn clock_nanosleep(clock: clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec) -> c_int,
    fail = libc::ENOSYS);
wrap_sleep!(USLEEP, fn usleep(usec: useconds_t) -> c_int, fail = -1);
wrap_sleep!(SLEEP, fn sleep(secs: c_uint) -> c_uint, fail = secs);
/// Runs `select` or `pselect`: a loop's wait when given descriptors (gunicorn's sync workers wait
/// in `select`), a sleep inside a tick when not (CPython 3.10's `time.sleep`).
#[inline]
fn select_like<R>(n: c_int, wait: crate::WaitCall, call: impl FnOnce(Option<c_int>) -> R) -> R {
    if n > 0 {
        crate::timed(wait, call)
    } else {
        crate::quietly(call)
    }
}

/// Interposed: a wait for events given descriptors, else a sleep ([`select_like`]).
///
/// # Safety
/// Same contract as the libc function of this name.
#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    let addr = SELECT.get();
    if addr == 0 {
        return crate::wrappers::enosys();
    }
    // SAFETY: addr is the next definition of `select`, with this signature.
    let real: unsafe extern "C" fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *mut timeval) -> c_int =
        unsafe { std::mem::transmute(addr) };
    // SAFETY: the timeout the caller passed, null or valid.
    let zero_timeout = unsafe { !timeout.is_null() && (*timeout).tv_sec == 0 && (*timeout).tv_usec == 0 };
    let wait = crate::WaitCall { sp: crate::wrappers::stack_here(), zero_timeout };
    select_like(n, wait, |_| unsafe { real(n, r, w, e, timeout) })
}

/// Interposed: a wait for events given descriptors, else a sleep ([`select_like`]).
///
/// # Safety
/// Same contract as the libc function of this name.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let addr = PSELECT.get();
    if addr == 0 {
        return crate::wrappers::enosys();
    }
    // SAFETY: addr is the next definition of `pselect`, with this signature.
    let real: unsafe extern "C" fn(
        c_int,
        *mut fd_set,
        *mut fd_set,
        *mut fd_set,
        *const timespec,
        *const sigset_t,
    ) -> c_int = unsafe { std::mem::transmute(addr) };
    let mut holder = MaskArg::new();
    // SAFETY: the timeout the caller passed, null or valid.
    let wait = crate::WaitCall {
        sp: crate::wrappers::stack_here(),
        zero_timeout: unsafe { crate::wrappers::zero_timespec(timeout) },
    };
    select_like(n, wait, |add| unsafe { real(n, r, w, e, timeout, holder.with(sigmask, add)) })
}

wrap_sleep!(PAUSE, fn pause() -> c_int, fail = -1);
wrap_sleep!(SIGSUSPEND, fn sigsuspend(mask: *const sigset_t) -> c_int, fail = -1, mask = mask);
wrap_sleep!(SIGTIMEDWAIT, fn sigtimedwait(set: *const sigset_t, info: *mut siginfo_t, timeout: *const timespec) -> c_int, fail = -1);
wrap_sleep!(SIGWAITINFO, fn sigwaitinfo(set: *const sigset_t, info: *mut siginfo_t) -> c_int, fail = -1);
wrap_sleep!(SEM_WAIT, fn sem_wait(sem: *mut sem_t) -> c_int, fail = -1);
wrap_sleep!(SEM_TIMEDWAIT, fn sem_timedwait(sem: *mut sem_t, abstime: *const timespec) -> c_int, fail = -1);
wrap_sleep!(SEM_CLOCKWAIT, fn sem_clockwait(sem: *mut sem_t, clock: clockid_t, abstime: *const timespec) -> c_int, fail = -1);
wrap_sleep!(SEMOP, fn semop(id: c_int, sops: *mut sembuf, n: size_t) -> c_int, fail = -1);
wrap_sleep!(SEMTIMEDOP, fn semtimedop(id: c_int, sops: *mut sembuf, n: size_t, timeout: *const timespec) -> c_int, fail = -1);
wrap_sleep!(MSGRCV, fn msgrcv(id: c_int, msg: *mut c_void, size: size_t, kind: c_long, flags: c_int) -> ssize_t, fail = -1);
wrap_sleep!(MSGSND, fn msgsnd(id: c_int, msg: *const c_void, size: size_t, flags: c_int) -> c_int, fail = -1);
wrap_sleep!(ACCEPT, fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int, fail = -1);
wrap_sleep!(ACCEPT4, fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int, fail = -1);
wrap_sleep!(CONNECT, fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int, fail = -1);
wrap_sleep!(RECV, fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t, fail = -1);
wrap_sleep!(RECVFROM, fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t,
    fail = -1);
wrap_sleep!(RECVMSG, fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t, fail = -1);
wrap_sleep!(RECVMMSG, fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, n: c_uint, flags: c_int, timeout: *mut timespec) -> c_int, fail = -1);
wrap_sleep!(SEND, fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t, fail = -1);
wrap_sleep!(SENDTO, fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t,
    fail = -1);
wrap_sleep!(SENDMSG, fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t, fail = -1);
