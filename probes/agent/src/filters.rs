//! Interposed `prctl` and `syscall`. Sleep-like calls made through `syscall` run quietly, as
//! their libc wrappers do ([`crate::sleeps`]); a futex wait of a pool worker is a wait call
//! ([`crate::pool`]). And a seccomp filter the program installs itself, after the
//! agent's constructor probed what it may call ([`crate::sys`]), may forbid anything. The agent
//! stops making the calls it can do without just before the filter goes in (and goes on when
//! the install fails): see [`crate::sys::freeze`]. A filter installed by a raw `syscall`
//! instruction, without libc, is not seen.

use crate::wrappers::{enosys, Next};
use libc::{c_int, c_long, c_ulong};
use std::panic::catch_unwind;

static PRCTL: Next = Next::new(b"prctl\0");
static SYSCALL: Next = Next::new(b"syscall\0");

/// Every symbol this module wraps, for resolving up front (before the probe's child runs).
pub(crate) static ALL: [&Next; 2] = [&PRCTL, &SYSCALL];

/// `prctl(PR_SET_SECCOMP, …)` or `seccomp(SECCOMP_SET_MODE_*, …)`.
fn installs_filter(nr: c_long, a1: c_ulong) -> bool {
    (nr == libc::SYS_prctl && a1 == libc::PR_SET_SECCOMP as c_ulong)
        || (nr == libc::SYS_seccomp && (a1 == 0 || a1 == 1))
}

/// Runs `install` with the agent frozen; thaws it when the install failed.
fn guarded<R: Copy + PartialEq + From<i8>>(install: impl FnOnce() -> R) -> R {
    let before = crate::sys::freeze();
    let r = install();
    if r == R::from(-1) {
        crate::sys::thaw(before);
    }
    r
}

/// Interposed: freezes the agent around a seccomp install.
///
/// # Safety
/// Same contract as libc's `prctl` (its variadic arguments are read as four longs, as the
/// kernel takes them).
#[no_mangle]
pub unsafe extern "C" fn prctl(option: c_int, a2: c_ulong, a3: c_ulong, a4: c_ulong, a5: c_ulong) -> c_int {
    let addr = PRCTL.get();
    if addr == 0 {
        return enosys();
    }
    // SAFETY: addr is the next definition of prctl; the extra arguments are passed as they came.
    let real: unsafe extern "C" fn(c_int, c_ulong, c_ulong, c_ulong, c_ulong) -> c_int =
        unsafe { std::mem::transmute(addr) };
    if option == libc::PR_SET_SECCOMP {
        return guarded(|| unsafe { real(option, a2, a3, a4, a5) });
    }
    unsafe { real(option, a2, a3, a4, a5) }
}

/// Interposed: freezes the agent around a seccomp install.
///
/// # Safety
/// Same contract as libc's `syscall` (its variadic arguments are read as six longs, as the
/// kernel takes them).
#[no_mangle]
pub unsafe extern "C" fn syscall(
    nr: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    let addr = SYSCALL.get();
    if addr == 0 {
        return enosys() as c_long;
    }
    type Real = unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long;
    // SAFETY: addr is the next definition of syscall; the arguments are passed as they came.
    let real: Real = unsafe { std::mem::transmute(addr) };
    if installs_filter(nr, a1 as c_ulong) {
        return guarded(|| unsafe { real(nr, a1, a2, a3, a4, a5, a6) });
    }
    let parks = nr == libc::SYS_futex && looptop_abi::futex_parks(a2 as u64, a4 as u64);
    if parks && catch_unwind(crate::pool::is_worker).unwrap_or(false) {
        // A pool worker's park: its idle, a wait call like the epoll wait it takes turns at.
        let call = crate::WaitCall { sp: crate::wrappers::stack_here(), zero_timeout: false };
        return crate::timed(call, |_| unsafe { real(nr, a1, a2, a3, a4, a5, a6) });
    }
    if crate::sleeps::sleeps_when_raw(nr) {
        // A sleep-like call made raw: quietly, as its libc wrapper is.
        let r = crate::quietly(|_| unsafe { real(nr, a1, a2, a3, a4, a5, a6) });
        if parks && catch_unwind(crate::pool::named_apart).unwrap_or(false) {
            // Not known for a worker yet (its pool's loop may not have waited when it parked):
            // if it turns out one, its first tick began here.
            let _ = catch_unwind(crate::first_tick_from_here);
        }
        return r;
    }
    unsafe { real(nr, a1, a2, a3, a4, a5, a6) }
}
