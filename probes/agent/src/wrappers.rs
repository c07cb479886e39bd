//! The interposed wait calls. Each resolves the next definition with `dlsym(RTLD_NEXT)` and runs
//! it inside [`crate::timed`]. The `_chk` variants are what `_FORTIFY_SOURCE` builds call.

use libc::{c_int, epoll_event, nfds_t, pollfd, sigset_t, size_t, timespec};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A lazily resolved pointer to the next definition of a symbol.
pub(crate) struct Next {
    name: &'static [u8],
    addr: AtomicUsize,
}

impl Next {
    pub(crate) const fn new(name: &'static [u8]) -> Self {
        Next { name, addr: AtomicUsize::new(0) }
    }

    /// The real function's address, or 0 when no later object defines it.
    #[inline]
    pub(crate) fn get(&self) -> usize {
        let a = self.addr.load(Ordering::Relaxed);
        if a != 0 {
            return a;
        }
        // SAFETY: name is NUL-terminated; RTLD_NEXT finds the definition after this library.
        let a = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) } as usize;
        self.addr.store(a, Ordering::Relaxed);
        a
    }
}

static EPOLL_WAIT: Next = Next::new(b"epoll_wait\0");
static EPOLL_PWAIT: Next = Next::new(b"epoll_pwait\0");
static EPOLL_PWAIT2: Next = Next::new(b"epoll_pwait2\0");
static POLL: Next = Next::new(b"poll\0");
static PPOLL: Next = Next::new(b"ppoll\0");
static POLL_CHK: Next = Next::new(b"__poll_chk\0");
static PPOLL_CHK: Next = Next::new(b"__ppoll_chk\0");

/// Resolves every wrapped symbol up front (dlsym may allocate; better at load than mid-wait).
pub(crate) fn resolve_all() {
    for n in [&EPOLL_WAIT, &EPOLL_PWAIT, &EPOLL_PWAIT2, &POLL, &PPOLL, &POLL_CHK, &PPOLL_CHK]
        .into_iter()
        .chain(crate::alloc::ALL)
        .chain(crate::sleeps::ALL)
        .chain(crate::v8files::ALL)
    {
        n.get();
    }
}

/// Fails like a missing syscall when no real definition exists.
pub(crate) fn enosys() -> c_int {
    // SAFETY: writing this thread's errno.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

/// A signal mask argument with `add` added (a copy), for the length of a call: a call that
/// installs its own mask must not unblock the watchdog's signal the agent blocked around it.
pub(crate) struct MaskArg {
    copy: std::mem::MaybeUninit<sigset_t>,
}

impl MaskArg {
    /// The pointer to pass instead of `mask`.
    ///
    /// # Safety
    /// `mask` is null or points to a valid `sigset_t`.
    #[inline]
    pub(crate) unsafe fn with(&mut self, mask: *const sigset_t, add: Option<c_int>) -> *const sigset_t {
        match add {
            Some(sig) if !mask.is_null() => {
                let copy = self.copy.write(*mask);
                libc::sigaddset(copy, sig);
                copy
            }
            _ => mask,
        }
    }

    /// An empty holder (nothing is copied unless [`MaskArg::with`] needs it).
    #[inline]
    pub(crate) fn new() -> Self {
        MaskArg { copy: std::mem::MaybeUninit::uninit() }
    }
}

/// Whether a `timespec` timeout is zero (null: wait forever).
///
/// # Safety
/// `t` is null or points to a valid `timespec`.
#[inline]
pub(crate) unsafe fn zero_timespec(t: *const timespec) -> bool {
    !t.is_null() && (*t).tv_sec == 0 && (*t).tv_nsec == 0
}

/// Whether a `poll` asks for no event on any of its descriptors: with a zero timeout it only
/// checks that they are open (Rust's std checks fds 0–2 so at startup, on the main thread of a
/// tokio program that then parks in `block_on` for ever). Such a call waits for no events: it
/// neither makes a loop nor ends a tick.
///
/// # Safety
/// `fds` is null or points to `nfds` valid `pollfd`s.
#[inline]
pub(crate) unsafe fn asks_nothing(fds: *const pollfd, nfds: nfds_t) -> bool {
    // A few descriptors at most: a loop's poll asks for events on some of them.
    !fds.is_null() && nfds > 0 && nfds <= 8 && (0..nfds as usize).all(|i| (*fds.add(i)).events == 0)
}

/// An address in the caller's stack frame (what [`crate::WaitCall::sp`] compares).
#[inline(always)]
pub(crate) fn stack_here() -> usize {
    let marker = 0u8;
    std::hint::black_box(std::ptr::addr_of!(marker)) as usize
}

macro_rules! wrap {
    ($next:ident, fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, zero = $zero:expr $(, mask = $mask:ident)? $(, check = $check:expr)?) => {
        /// Interposed: times the tick around the real call.
        ///
        /// # Safety
        /// Same contract as the libc function of this name.
        #[no_mangle]
        #[allow(unused_mut)]
        pub unsafe extern "C" fn $name($(mut $arg: $ty),*) -> $ret {
            let addr = $next.get();
            if addr == 0 {
                return enosys() as $ret;
            }
            // SAFETY: addr is the next definition of this very symbol, with this signature.
            let real: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(addr) };
            let mut _holder = MaskArg::new();
            // SAFETY: the timeout argument is what the caller passed the real call (reading a
            // `timespec` one needs `unsafe`; an int one does not).
            #[allow(unused_unsafe)]
            let call = crate::WaitCall { sp: stack_here(), zero_timeout: unsafe { $zero } };
            // SAFETY: as above, the arguments are what the caller passed the real call.
            let asks_nothing = false $(|| (call.zero_timeout && unsafe { $check }))?;
            if asks_nothing {
                return unsafe { real($($arg),*) };
            }
            crate::timed(call, |_add| unsafe {
                $($mask = _holder.with($mask, _add);)?
                real($($arg),*)
            })
        }
    };
}

wrap!(EPOLL_WAIT, fn epoll_wait(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int) -> c_int, zero = timeout == 0);
wrap!(EPOLL_PWAIT, fn epoll_pwait(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int, sigmask: *const sigset_t) -> c_int,
    zero = timeout == 0, mask = sigmask);
wrap!(EPOLL_PWAIT2, fn epoll_pwait2(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: *const timespec, sigmask: *const sigset_t) -> c_int,
    zero = zero_timespec(timeout), mask = sigmask);
wrap!(POLL, fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int, zero = timeout == 0,
    check = asks_nothing(fds, nfds));
wrap!(PPOLL, fn ppoll(fds: *mut pollfd, nfds: nfds_t, timeout: *const timespec, sigmask: *const sigset_t) -> c_int,
    zero = zero_timespec(timeout), mask = sigmask, check = asks_nothing(fds, nfds));
wrap!(POLL_CHK, fn __poll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: c_int, fdslen: size_t) -> c_int, zero = timeout == 0,
    check = asks_nothing(fds, nfds));
wrap!(PPOLL_CHK, fn __ppoll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: *const timespec, sigmask: *const sigset_t, fdslen: size_t) -> c_int,
    zero = zero_timespec(timeout), mask = sigmask, check = asks_nothing(fds, nfds));
