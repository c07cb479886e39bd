//! Interposed sleep-like calls: the ones a signal handler cuts short with `EINTR` whatever
//! `SA_RESTART` says (signal(7)). On a loop thread each runs inside [`crate::quietly`], so the
//! watchdog never signals the thread while it is in one (it takes the stack from outside
//! instead). Other threads call straight through.
//!
//! Not covered (a program could still see `EINTR` from the watchdog's signal in them, only while
//! a stall is in progress on that loop thread): raw `syscall(SYS_nanosleep, …)`, `semop`,
//! `msgrcv`, `io_getevents`, a blocking `connect`, socket calls with `SO_RCVTIMEO`.

use crate::wrappers::{MaskArg, Next};
use libc::{c_int, c_uint, clockid_t, fd_set, siginfo_t, sigset_t, timespec, timeval, useconds_t};

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

/// Every symbol this module wraps, for resolving up front.
pub(crate) static ALL: [&Next; 10] = [
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
];

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
wrap_sleep!(SELECT, fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *mut timeval) -> c_int, fail = -1);
wrap_sleep!(PSELECT, fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *const timespec, sigmask: *const sigset_t) -> c_int,
    fail = -1, mask = sigmask);
wrap_sleep!(PAUSE, fn pause() -> c_int, fail = -1);
wrap_sleep!(SIGSUSPEND, fn sigsuspend(mask: *const sigset_t) -> c_int, fail = -1, mask = mask);
wrap_sleep!(SIGTIMEDWAIT, fn sigtimedwait(set: *const sigset_t, info: *mut siginfo_t, timeout: *const timespec) -> c_int, fail = -1);
wrap_sleep!(SIGWAITINFO, fn sigwaitinfo(set: *const sigset_t, info: *mut siginfo_t) -> c_int, fail = -1);
