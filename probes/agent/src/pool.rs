//! Pools of loops: a work-stealing runtime (tokio's multi-thread scheduler) runs worker threads
//! that take turns waiting on the runtime's epoll instance; a worker that does not hold it parks
//! on a futex until the holder hands it work, and may never wait in epoll at all. A worker's idle
//! is its park, so its futex waits without a timeout are wait calls: they end the tick (made
//! through libc's `syscall`, as Rust's std makes them: [`crate::filters`]).
//!
//! A worker is known by its name: a thread named apart from its process (tokio names its
//! threads `tokio-rt-worker`, or what `thread_name` says) whose name a thread that waits for
//! events (a loop) also bears. A thread named as its process (Node's and CPython's threads all
//! are, the main thread of every program is) keeps its futex waits inside its ticks, where they
//! block the loop (`Atomics.wait`, a lock), and a thread that never shares a name with a loop (a
//! blocking pool's, a logger) is no loop.

use crate::now_ns;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Names of threads that waited for events, as [`name_hash`]es (0: a free entry).
static WAITER_NAMES: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
/// The process's own name ([`name_hash`]), 0 when it could not be read: then no pool is seen.
static PROCESS_NAME: AtomicU64 = AtomicU64::new(0);
/// How long a thread that is no worker yet waits before it asks again (its pool's epoll waiter
/// may not have waited yet).
const RECHECK_NS: u64 = 100_000_000;

/// What this thread is.
struct Mine {
    /// Its name's hash, 0 before it is read.
    name: Cell<u64>,
    /// Its name is in [`WAITER_NAMES`].
    noted: Cell<bool>,
    /// A worker: its futex waits are parks.
    worker: Cell<bool>,
    /// When to ask again whether it is a worker (`u64::MAX`: never, it is named as its process).
    recheck_ns: Cell<u64>,
}

thread_local! {
    static MINE: Mine = const {
        Mine { name: Cell::new(0), noted: Cell::new(false), worker: Cell::new(false), recheck_ns: Cell::new(0) }
    };
}

/// FNV-1a of a thread name (up to its NUL), never 0.
fn name_hash(name: &[u8]) -> u64 {
    let n = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let h = name[..n].iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    h.max(1)
}

/// The calling thread's name hash (`prctl(PR_GET_NAME)`), 0 where a seccomp filter forbids it.
fn own_name() -> u64 {
    if !crate::sys::allowed(crate::sys::Call::Prctl) {
        return 0;
    }
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    name_hash(&name)
}

/// At load (on the main thread, named as the process): the name workers are told apart from.
pub(crate) fn configure() {
    PROCESS_NAME.store(own_name(), Ordering::Relaxed);
}

/// The cached name of this thread.
fn cached_name(m: &Mine) -> u64 {
    if m.name.get() == 0 {
        m.name.set(own_name());
    }
    m.name.get()
}

/// Notes that this thread waits for events: its name marks its pool. One thread-local check per
/// wait after the first.
#[inline]
pub(crate) fn note_waiter() {
    let _ = MINE.try_with(|m| {
        if m.noted.replace(true) {
            return;
        }
        let name = cached_name(m);
        if name == 0 || WAITER_NAMES.iter().any(|e| e.load(Ordering::Relaxed) == name) {
            return;
        }
        // A full table drops the name: those threads' futex waits stay inside their ticks.
        let _ = WAITER_NAMES.iter().find(|e| e.compare_exchange(0, name, Ordering::Relaxed, Ordering::Relaxed).is_ok());
    });
}

/// Whether this thread is named apart from its process (a worker's first mark); once false,
/// for good.
fn apart(m: &Mine) -> bool {
    if m.recheck_ns.get() == u64::MAX {
        return false;
    }
    let process = PROCESS_NAME.load(Ordering::Relaxed);
    let name = cached_name(m);
    if process == 0 || name == 0 || name == process {
        m.recheck_ns.set(u64::MAX);
        return false;
    }
    true
}

/// Whether this thread is named apart from its process: it may turn out a pool's worker, whose
/// first tick then begins when its last park returned ([`crate::first_tick_from_here`]).
#[inline]
pub(crate) fn named_apart() -> bool {
    MINE.try_with(apart).unwrap_or(false)
}

/// Whether this thread is a pool's worker (see the module's comment); asked at a futex wait.
#[inline]
pub(crate) fn is_worker() -> bool {
    MINE.try_with(|m| {
        if m.worker.get() {
            return true;
        }
        // No clock read for a thread named as its process (most of them).
        if m.recheck_ns.get() == u64::MAX {
            return false;
        }
        let now = now_ns();
        if now < m.recheck_ns.get() || !apart(m) {
            return false;
        }
        let name = cached_name(m);
        let worker = WAITER_NAMES.iter().any(|e| e.load(Ordering::Relaxed) == name);
        m.worker.set(worker);
        m.recheck_ns.set(now.saturating_add(RECHECK_NS));
        worker
    })
    .unwrap_or(false)
}

/// In a fork child: the parent's threads are gone, and so are their pools; the forking thread
/// asks again.
pub(crate) fn after_fork() {
    WAITER_NAMES.iter().for_each(|e| e.store(0, Ordering::Relaxed));
    let _ = MINE.try_with(|m| {
        m.noted.set(false);
        m.worker.set(false);
        m.recheck_ns.set(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hash_up_to_their_end() {
        assert_eq!(name_hash(b"tokio-rt-worker\0"), name_hash(b"tokio-rt-worker"));
        assert_ne!(name_hash(b"tokio-rt-worker"), name_hash(b"node"));
        assert_ne!(name_hash(b""), 0);
    }
}
