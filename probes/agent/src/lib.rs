//! `liblooptop_agent.so`: preloaded into a target (`LD_PRELOAD`), it wraps the wait calls of
//! every event loop (`epoll_wait`, `epoll_pwait`, `epoll_pwait2`, `poll`, `ppoll`, and `select` and
//! `pselect` given descriptors) and times each loop iteration (tick) into the process's shared-memory
//! segment.
//!
//! Rules this file keeps:
//! - **Fail open.** If anything cannot be set up, the wrappers only call the real function.
//! - **Cheap wait path.** Per wait call: two vDSO clock reads, a thread-local lookup and a few
//!   plain atomic stores into this thread's own slot. No syscall besides the wrapped one (the
//!   first wait of a thread claims its slot once).
//! - **No panic crosses FFI**: every entry point runs its bookkeeping under `catch_unwind`, and a
//!   panic disables the agent instead of reaching the target.
#![deny(missing_docs)]

mod alloc;
mod filters;
mod perfmap;
mod pool;
mod probe;
mod python;
mod segment;
mod sleeps;
mod stack;
mod sweep;
mod sys;
mod v8files;
mod v8layout;
mod watchdog;
mod wrappers;

use looptop_abi::{slot_state, LoopSlot};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// False once the agent has stepped aside (setup failed, or a bug was caught).
static ENABLED: AtomicBool = AtomicBool::new(true);
/// Fork generation: a thread's cached slot is valid only for the generation it was claimed in.
static GENERATION: AtomicU32 = AtomicU32::new(1);
/// How long a thread that found no loop slot waits before it tries again (ns).
const SLOT_RETRY_NS: u64 = 1_000_000_000;

/// Stall ring floor (ns).
static STALL_FLOOR_NS: AtomicU64 = AtomicU64::new(looptop_abi::DEFAULT_STALL_FLOOR_NS);

/// This thread's loop slot, cached.
struct Local {
    generation: Cell<u32>,
    slot: Cell<*const LoopSlot>,
    /// True when this generation already tried to claim and must not retry before `retry_ns`.
    settled: Cell<bool>,
    /// When a thread that found no slot may try again (0: never, the agent is off).
    retry_ns: Cell<u64>,
    /// This thread was counted in `slots_exhausted` already.
    counted: Cell<bool>,
    /// Nesting depth of wait calls (a wait inside a signal handler during a wait).
    depth: Cell<u32>,
    /// Where on the stack the wait that began the current tick was made (0: none yet).
    tick_sp: Cell<usize>,
    /// When a futex park of a thread that may be a pool's worker returned (0: none): the start
    /// of its first tick if it becomes a loop ([`first_tick_from_here`]).
    first_tick_ns: Cell<u64>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            generation: Cell::new(0),
            slot: Cell::new(ptr::null()),
            settled: Cell::new(false),
            retry_ns: Cell::new(0),
            counted: Cell::new(false),
            depth: Cell::new(0),
            tick_sp: Cell::new(0),
            first_tick_ns: Cell::new(0),
        }
    };
    /// Registered once per claimed thread; its drop marks the slot exited.
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Marks this thread's slot exited when the thread ends.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = catch_unwind(|| {
            if let Some(slot) = owned_slot() {
                close_slot(slot, now_ns());
            }
        });
    }
}

/// Monotonic clock in ns (vDSO, no syscall).
#[inline]
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// The slot this thread owns in the current generation, without claiming one.
pub(crate) fn owned_slot() -> Option<&'static LoopSlot> {
    LOCAL
        .try_with(|l| {
            if l.generation.get() != GENERATION.load(Ordering::Relaxed) {
                return None;
            }
            // SAFETY: a non-null slot points into the segment mapping of this generation, which
            // stays mapped until the process exits or forks (and a fork bumps the generation).
            unsafe { l.slot.get().as_ref() }
        })
        .ok()
        .flatten()
}

/// This thread's slot, claiming one on its first wait.
#[inline]
fn current_slot() -> Option<&'static LoopSlot> {
    LOCAL
        .try_with(|l| {
            let generation = GENERATION.load(Ordering::Relaxed);
            if l.generation.get() == generation {
                // SAFETY: see `owned_slot`.
                if let Some(slot) = unsafe { l.slot.get().as_ref() } {
                    return Some(slot);
                }
                // A thread that found no slot tries again now and then: slots free up as
                // threads exit, and a grower it gave up on may have finished.
                if l.settled.get() && (l.retry_ns.get() == 0 || now_ns() < l.retry_ns.get()) {
                    return None;
                }
            } else {
                l.counted.set(false);
            }
            l.generation.set(generation);
            l.slot.set(ptr::null());
            match segment::ensure() {
                segment::Ready::Yes(seg) => {
                    l.settled.set(true);
                    let Some(slot) = claim(seg, l.first_tick_ns.replace(0)) else {
                        l.retry_ns.set(now_ns() + SLOT_RETRY_NS);
                        if !l.counted.replace(true) {
                            seg.header().slots_exhausted.fetch_add(1, Ordering::Relaxed);
                        }
                        return None;
                    };
                    l.retry_ns.set(0);
                    if l.counted.replace(false) {
                        // Found one at a later try: no longer a thread without a slot.
                        seg.header().slots_exhausted.fetch_sub(1, Ordering::Relaxed);
                    }
                    l.slot.set(slot);
                    let _ = EXIT_GUARD.try_with(|_| {});
                    watchdog::ensure_started(seg);
                    Some(slot)
                }
                segment::Ready::Never => {
                    l.settled.set(true);
                    l.retry_ns.set(0);
                    None
                }
                segment::Ready::NotYet => None,
            }
        })
        .ok()
        .flatten()
}

/// Claims a slot for the calling thread: slot 0 for the main thread (so that the main loop never
/// goes without one), else a free slot — reserving more pages when all backed ones are taken —
/// or the oldest exited one. A thread that finds none is counted in the header. `first_tick_ns`:
/// when its first tick began, if before this wait ([`first_tick_from_here`]); 0: now.
fn claim(seg: segment::Segment, first_tick_ns: u64) -> Option<&'static LoopSlot> {
    let now = now_ns();
    // SAFETY: gettid and getpid have no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    let main = tid == unsafe { libc::getpid() } as u32;
    let take = |s: &'static LoopSlot, from: u32| {
        s.state.compare_exchange(from, slot_state::CLAIMING, Ordering::Acquire, Ordering::Relaxed).is_ok()
    };
    let free = |seg: segment::Segment| seg.slots().iter().skip(1).find(|s| take(s, slot_state::FREE));
    let slot = if main && seg.slots().first().is_some_and(|s| take(s, slot_state::FREE) || take(s, slot_state::EXITED))
    {
        seg.slots().first()
    } else {
        free(seg)
            .or_else(|| loop {
                // Reserve slots in steps that double (1, 2, 4 … 64): few reservations for a
                // process that starts many loops at once. Threads that grew at the same moment
                // may have taken the new ones: then another step.
                let backed = seg.slots().len();
                if backed >= looptop_abi::LOOP_SLOTS || !seg.grow(backed * 2) {
                    break None;
                }
                if let Some(s) = free(seg) {
                    break Some(s);
                }
            })
            .or_else(|| {
                let oldest = seg
                    .slots()
                    .iter()
                    .skip(1)
                    .filter(|s| s.state.load(Ordering::Relaxed) == slot_state::EXITED)
                    .min_by_key(|s| s.ended_ns.load(Ordering::Relaxed))?;
                take(oldest, slot_state::EXITED).then_some(oldest)
            })
    };
    let slot = slot?;
    reset_slot(slot);
    let mut name = [0u8; 16];
    thread_name(&mut name);
    slot.tid.store(tid, Ordering::Relaxed);
    watchdog::note_stack(slot);
    looptop_abi::name_to_words(&name, &slot.name);
    if first_tick_ns != 0 && first_tick_ns <= now {
        slot.claimed_ns.store(first_tick_ns, Ordering::Relaxed);
        slot.busy_since_ns.store(first_tick_ns, Ordering::Relaxed);
    } else {
        slot.claimed_ns.store(now, Ordering::Relaxed);
    }
    slot.generation.fetch_add(1, Ordering::Relaxed);
    slot.state.store(slot_state::ACTIVE, Ordering::Release);
    Some(slot)
}

/// The calling thread's name (`prctl(PR_GET_NAME)`, or `/proc/thread-self/comm` where a seccomp
/// filter forbids prctl).
fn thread_name(name: &mut [u8; 16]) {
    if sys::allowed(sys::Call::Prctl) {
        // SAFETY: PR_GET_NAME writes at most 16 bytes.
        unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    } else if !sys::allowed(sys::Call::Files) || !sys::allowed(sys::Call::Stat) {
        // A seccomp filter of the program's own: no name.
    } else if let Ok(comm) = std::fs::read("/proc/thread-self/comm") {
        let n = comm.len().min(15);
        name[..n].copy_from_slice(&comm[..n]);
        if let Some(nl) = name.iter().position(|&b| b == b'\n') {
            name[nl] = 0;
        }
    }
}

/// Zeroes a slot being (re)claimed; nobody reads a slot in state CLAIMING.
fn reset_slot(slot: &LoopSlot) {
    let z = |a: &AtomicU64| a.store(0, Ordering::Relaxed);
    for a in [
        &slot.claimed_ns,
        &slot.ended_ns,
        &slot.ticks,
        &slot.busy_ns,
        &slot.idle_ns,
        &slot.max_busy_ns,
        &slot.busy_since_ns,
        &slot.wait_since_ns,
        &slot.stall_count,
        &slot.stack_lo,
        &slot.stack_hi,
    ] {
        z(a);
    }
    slot.in_call.store(0, Ordering::Relaxed);
    if slot.hist.iter().any(|h| h.load(Ordering::Relaxed) != 0) {
        slot.hist.iter().for_each(z);
    }
    for e in slot.stalls.iter() {
        z(&e.seq);
    }
}

/// Marks the slot of an exiting thread ended. A tick still open is left open: it never reached
/// a wait, so it is not a completed tick (the reader decides what a cut-short tick means).
fn close_slot(slot: &LoopSlot, now: u64) {
    slot.write_begin();
    slot.ended_ns.store(now, Ordering::Relaxed);
    slot.write_end();
    slot.state.store(slot_state::EXITED, Ordering::Release);
}

/// What `wait_enter` did, so that `wait_exit` undoes exactly that.
enum Enter {
    /// Not recording (agent off, or no slot for this thread).
    Off,
    /// A wait inside a wait (e.g. from a signal handler): only the depth was raised.
    Nested,
    /// The outermost wait of this thread: the tick was closed on this slot.
    Outer(&'static LoopSlot),
}

/// Called before the real wait: ends the current tick.
#[inline]
fn wait_enter() -> Enter {
    if !ENABLED.load(Ordering::Relaxed) {
        return Enter::Off;
    }
    let r = catch_unwind(AssertUnwindSafe(|| {
        let Some(slot) = current_slot() else {
            return Enter::Off;
        };
        pool::note_waiter();
        let outer = LOCAL.try_with(|l| {
            let d = l.depth.get();
            l.depth.set(d + 1);
            d == 0
        });
        match outer {
            Ok(true) => {}
            Ok(false) => return Enter::Nested,
            Err(_) => return Enter::Off,
        }
        let now = now_ns();
        slot.write_begin();
        let since = slot.busy_since_ns.load(Ordering::Relaxed);
        if since != 0 {
            slot.record_tick(since, now.saturating_sub(since), STALL_FLOOR_NS.load(Ordering::Relaxed));
            slot.busy_since_ns.store(0, Ordering::Relaxed);
        }
        slot.wait_since_ns.store(now, Ordering::Relaxed);
        slot.write_end();
        Enter::Outer(slot)
    }));
    r.unwrap_or_else(|_| {
        ENABLED.store(false, Ordering::Relaxed);
        Enter::Off
    })
}

/// Called after the real wait returned: the next tick starts now.
#[inline]
fn wait_exit(slot: &LoopSlot) {
    let now = now_ns();
    slot.write_begin();
    let since = slot.wait_since_ns.load(Ordering::Relaxed);
    if since != 0 {
        LoopSlot::bump(&slot.idle_ns, now.saturating_sub(since));
    }
    slot.wait_since_ns.store(0, Ordering::Relaxed);
    slot.busy_since_ns.store(now, Ordering::Relaxed);
    slot.write_end();
}

/// A wait call as the wrapper saw it: where on the stack it was made, and whether it only
/// checks for events (a zero timeout) instead of waiting for them.
#[derive(Clone, Copy)]
pub(crate) struct WaitCall {
    /// An address in the wrapper's own frame.
    pub sp: usize,
    /// The timeout is zero: the call returns at once.
    pub zero_timeout: bool,
}

/// Whether `call` is a nested wait: a zero-timeout check for events made deeper on the stack than
/// the wait that began the current tick (Redis answering `BUSY` from inside a long Lua script
/// runs its loop nested): part of the tick that is running, not the end of it.
#[inline]
fn nested(call: WaitCall) -> bool {
    call.zero_timeout
        && LOCAL
            .try_with(|l| {
                let tick_sp = l.tick_sp.get();
                tick_sp != 0 && call.sp.saturating_add(looptop_abi::NESTED_MIN_BYTES) < tick_sp
            })
            .unwrap_or(false)
}

/// Marks now as the start of this thread's first tick, should it become a loop (a thread that is
/// one already is left alone): at once when it is a pool's worker by now (woken from a park it
/// began before its pool's loop first waited), so that the watchdog watches this very tick; else
/// at its next wait. Keeps `errno`.
pub(crate) fn first_tick_from_here() {
    // SAFETY: as in `timed`: the caller sees the errno of the real call.
    let errno = unsafe { *libc::__errno_location() };
    if owned_slot().is_none() {
        let _ = LOCAL.try_with(|l| l.first_tick_ns.set(now_ns()));
        if ENABLED.load(Ordering::Relaxed) && pool::is_worker() {
            let _ = current_slot();
        }
    }
    unsafe { *libc::__errno_location() = errno };
}

/// Runs `wait` between the tick bookkeeping, keeping `errno` as the real call left it. While
/// the wait lasts the watchdog leaves the thread alone ([`watchdog::Quiet`]); `wait` gets the
/// signal to add to any signal mask it passes to the kernel. A nested wait ([`nested`]) runs
/// like a sleep inside the tick.
#[inline]
pub(crate) fn timed<R>(call: WaitCall, wait: impl FnOnce(Option<libc::c_int>) -> R) -> R {
    if nested(call) {
        return quietly(wait);
    }
    let enter = wait_enter();
    let quiet = match enter {
        Enter::Outer(slot) => Some(watchdog::Quiet::begin(slot)),
        _ => None,
    };
    let r = wait(quiet.as_ref().and_then(|q| q.blocked));
    if let Enter::Off = enter {
        return r;
    }
    // SAFETY: __errno_location returns this thread's errno; nothing below may change it, but the
    // target must see exactly what the real call left.
    let errno = unsafe { *libc::__errno_location() };
    drop(quiet);
    let _ = LOCAL.try_with(|l| l.depth.set(l.depth.get().saturating_sub(1)));
    if let Enter::Outer(slot) = enter {
        wait_exit(slot);
        let _ = LOCAL.try_with(|l| l.tick_sp.set(call.sp));
    }
    unsafe { *libc::__errno_location() = errno };
    r
}

/// Runs a sleep-like call (one a signal would cut short with `EINTR`) so that the watchdog leaves
/// a loop thread alone while it lasts; other threads call straight through.
#[inline]
pub(crate) fn quietly<R>(call: impl FnOnce(Option<libc::c_int>) -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return call(None);
    }
    let Some(slot) = owned_slot() else { return call(None) };
    let quiet = watchdog::Quiet::begin(slot);
    let r = call(quiet.blocked);
    // SAFETY: as in `timed`: the caller sees the errno of the real call.
    let errno = unsafe { *libc::__errno_location() };
    drop(quiet);
    unsafe { *libc::__errno_location() = errno };
    r
}

/// Library constructor: read the environment, create the segment, resolve the real functions.
extern "C" fn agent_init() {
    std::panic::set_hook(Box::new(|_| {}));
    let ok = catch_unwind(|| {
        // Resolved before the probe's child runs them (dlsym in that child could deadlock).
        filters::ALL.iter().for_each(|n| {
            n.get();
        });
        // Nothing above allocates: glibc's malloc asks `getrandom` on its first call, which a
        // filter may forbid in a program that never allocates itself.
        if !sys::probe() {
            ENABLED.store(false, Ordering::Relaxed);
            // Said to a `looptop run` that launched us, when a file can still be written (and
            // memory allocated).
            if sys::allowed(sys::Call::Files) && sys::allowed(sys::Call::Getrandom) {
                segment::configure_from_env();
                segment::report_failure("seccomp", std::path::Path::new(&sys::forbidden_names()), 0);
            }
            return;
        }
        segment::configure_from_env();
        if let Some(floor) = std::env::var(looptop_abi::ENV_STALL_FLOOR_NS).ok().and_then(|v| v.parse().ok()) {
            STALL_FLOOR_NS.store(floor, Ordering::Relaxed);
        }
        wrappers::resolve_all();
        pool::configure();
        alloc::configure_from_env();
        watchdog::configure_from_env();
        probe::arrange();
        // SAFETY: registering plain extern "C" callbacks.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_child));
            libc::atexit(agent_exit);
        }
        // Create the segment now (not at the first wait) so that looptop can tell "the agent is
        // loaded but this process never waited" from "the agent never loaded".
        let _ = segment::ensure();
    });
    if ok.is_err() {
        ENABLED.store(false, Ordering::Relaxed);
    }
}

/// In a fork child: forget the parent's segment (still shared with the parent) and start a
/// fresh one lazily at this process's first wait.
extern "C" fn after_fork_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    pool::after_fork();
    watchdog::after_fork();
    segment::forget_after_fork();
}

/// At exit: mark the exiting thread's loop ended, stamp the exit time, remove the segment unless the
/// launcher asked to keep it.
extern "C" fn agent_exit() {
    let _ = catch_unwind(|| {
        let now = now_ns();
        if let Some(slot) = owned_slot() {
            if slot.state.load(Ordering::Relaxed) == slot_state::ACTIVE {
                close_slot(slot, now);
            }
        }
        segment::at_exit(now);
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = agent_init;
