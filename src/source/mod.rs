//! Sources: each reads what a target did and yields [`crate::event::Event`]s. A source never
//! formats output.

pub mod agent;
pub mod bpf;
pub mod jvm;
pub mod kernel;
pub mod perf;
pub mod recording;
pub mod segment;
pub mod waits;

/// `CLOCK_MONOTONIC` now, in ns: the clock of every event.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The `Process` event of a process attached at `now_ns` without the agent (command line and
/// executable from `/proc`), as both kernel sources give it.
pub fn attached_process(pid: u32, now_ns: u64) -> crate::event::Event {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string());
    let exe = exe.unwrap_or_default().trim_end_matches(" (deleted)").to_string();
    let command = crate::target::proc::cmdline(pid);
    crate::event::Event::Process(crate::event::ProcessInfo { pid, command, exe, start_ns: now_ns })
}

/// Whether stall samples' copies of the user stack are taken (the kernel sources) and unwound with the binaries'
/// CFI (the default); `LOOPTOP_UNWIND=fp` keeps to the kernel's frame-pointer walk.
pub fn stack_copies() -> bool {
    !std::env::var("LOOPTOP_UNWIND").is_ok_and(|v| v == "fp")
}
