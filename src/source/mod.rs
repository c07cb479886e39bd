//! Sources: each reads what a target did and yields [`crate::event::Event`]s. A source never
//! formats output.

pub mod agent;
pub mod bpf;
pub mod kernel;
pub mod perf;
pub mod recording;
pub mod segment;

/// `CLOCK_MONOTONIC` now, in ns: the clock of every event.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
