//! What can stop the perf source, in sentences a user can act on, and the permission rules that
//! decide it before a `perf_event_open` fails with a bare `EACCES`.

use super::sys;
use std::io;
use std::path::PathBuf;

/// Where the kernel says how much it lets unprivileged users do with perf events.
pub const PARANOID_PATH: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Why the perf source cannot observe a process.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The kernel has no perf events at all.
    #[error(
        "this kernel has no perf events ({PARANOID_PATH} is missing); looptop's perf mode needs a kernel \
         built with CONFIG_PERF_EVENTS, or use the agent (`looptop run`)"
    )]
    Unsupported,
    /// `kernel.perf_event_paranoid` forbids what was asked and looptop lacks `CAP_PERFMON`.
    #[error("{}", not_permitted(*paranoid, *missing))]
    NotPermitted {
        /// `kernel.perf_event_paranoid`.
        paranoid: i32,
        /// What the level forbids.
        missing: Missing,
    },
    /// The level allows it, yet `perf_event_open` is refused: a container or seccomp filter.
    #[error(
        "perf_event_open was refused ({source}) although kernel.perf_event_paranoid is {paranoid}: a container \
         or seccomp profile blocks it; run the container with `--cap-add PERFMON` (or `--privileged`) and a \
         seccomp profile that allows perf_event_open"
    )]
    Blocked {
        /// `kernel.perf_event_paranoid`.
        paranoid: i32,
        /// The refusal.
        source: io::Error,
    },
    /// tracefs is not mounted and looptop may not mount it.
    #[error(
        "perf mode needs tracepoints (sched_switch, the wait calls), but tracefs is not mounted at \
         /sys/kernel/tracing; mount it as root (`mount -t tracefs nodev /sys/kernel/tracing`), or preload the \
         agent instead (`LD_PRELOAD=$(looptop agent path)`)"
    )]
    TracefsMissing,
    /// Mounting tracefs failed.
    #[error("could not mount tracefs at /sys/kernel/tracing ({0}); mount it yourself or turn off-CPU stacks off")]
    TracefsMount(io::Error),
    /// The sched_switch tracepoint's `id` or `format` could not be read or understood.
    #[error("cannot use the sched_switch tracepoint ({}): {reason}; off-CPU stacks need read access to tracefs (run as root)", path.display())]
    Tracepoint {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The kernel has no system-call tracepoints (built without `CONFIG_FTRACE_SYSCALLS`).
    #[error(
        "this kernel has no system-call tracepoints ({} is missing), so perf mode cannot time ticks; preload \
         the agent instead (`LD_PRELOAD=$(looptop agent path)`) or restart under `looptop run`",
        path.display()
    )]
    NoSyscallTracepoints {
        /// Where they would be.
        path: PathBuf,
    },
    /// No such process.
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    /// The process exists, but the kernel refuses to let us observe it.
    #[error(
        "not permitted to observe process {pid} ({source}): it runs as another user or is not traceable; run \
         looptop as that user, or as root"
    )]
    ProcessDenied {
        /// The process.
        pid: u32,
        /// The refusal.
        source: io::Error,
    },
    /// The ring buffers exceed the locked-memory allowance.
    #[error(
        "the perf ring buffers exceed the locked-memory limit ({source}); raise kernel.perf_event_mlock_kb or \
         `ulimit -l`, or run as root"
    )]
    LockedMemory {
        /// The refusal.
        source: io::Error,
    },
    /// Any other failure to open an event.
    #[error("could not open {what} for thread {tid}: {source}")]
    Open {
        /// Which event.
        what: &'static str,
        /// The thread.
        tid: u32,
        /// The failure.
        source: io::Error,
    },
}

/// What a `kernel.perf_event_paranoid` level forbids to a process without `CAP_PERFMON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Any perf event (level 3 and above on Debian, Ubuntu and Android kernels).
    PerfEvents,
    /// The raw `sched_switch` tracepoint data off-CPU stacks come from (any level above -1).
    OffCpu,
    /// The tracepoints perf mode times ticks with (tracefs is root's, and the level above -1).
    Tracepoints,
}

/// The sentence of [`PerfError::NotPermitted`].
fn not_permitted(paranoid: i32, missing: Missing) -> String {
    let (what, why, level) = match missing {
        Missing::PerfEvents => ("perf events are", "level 3 and above let only privileged processes use them", 1),
        Missing::OffCpu => ("off-CPU stacks are", "the raw sched_switch tracepoint needs it or level -1", -1),
        Missing::Tracepoints => (
            "perf mode is",
            "it times ticks with the wait calls' tracepoints, which need it or level -1, and reads tracefs",
            -1,
        ),
    };
    format!(
        "{what} not permitted: kernel.perf_event_paranoid is {paranoid} and looptop has no CAP_PERFMON ({why}); \
         run looptop as root, grant it CAP_PERFMON (`sudo setcap cap_perfmon+ep \"$(command -v looptop)\"`; in a \
         container `--cap-add PERFMON`), or lower the level (`sudo sysctl kernel.perf_event_paranoid={level}`)"
    )
}

/// What this process may do with perf events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Access {
    /// `kernel.perf_event_paranoid`.
    pub paranoid: i32,
    /// Has `CAP_PERFMON` or `CAP_SYS_ADMIN`: the level does not apply.
    pub perfmon: bool,
    /// Has `CAP_SYS_ADMIN`: may mount tracefs.
    pub sys_admin: bool,
}

impl Access {
    /// Reads the level and our effective capabilities.
    pub fn detect() -> Result<Access, PerfError> {
        let paranoid = std::fs::read_to_string(PARANOID_PATH)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(PerfError::Unsupported)?;
        let caps = effective_capabilities();
        let has = |cap: u32| caps & (1 << cap) != 0;
        let sys_admin = has(sys::CAP_SYS_ADMIN);
        Ok(Access { paranoid, perfmon: sys_admin || has(sys::CAP_PERFMON), sys_admin })
    }

    /// Kernel frames may be sampled (level 1 and below, or CAP_PERFMON).
    pub fn kernel(&self) -> bool {
        self.perfmon || self.paranoid <= 1
    }

    /// The raw sched_switch tracepoint may be sampled.
    pub fn off_cpu(&self) -> Result<(), PerfError> {
        self.tracepoints(Missing::OffCpu)
    }

    /// Tracepoints may be used (for `missing`'s purpose).
    pub fn tracepoints(&self, missing: Missing) -> Result<(), PerfError> {
        if self.perfmon || self.paranoid <= -1 {
            Ok(())
        } else {
            Err(PerfError::NotPermitted { paranoid: self.paranoid, missing })
        }
    }

    /// Why a `perf_event_open` on ourselves was refused with `EACCES`/`EPERM`: the level (3 and
    /// above forbid everything on some distributions' kernels) or else something outside the kernel's
    /// perf rules (seccomp, a container).
    pub fn refused(&self, source: io::Error) -> PerfError {
        if !self.perfmon && self.paranoid >= 3 {
            PerfError::NotPermitted { paranoid: self.paranoid, missing: Missing::PerfEvents }
        } else {
            PerfError::Blocked { paranoid: self.paranoid, source }
        }
    }
}

/// `CapEff` of `/proc/self/status`, 0 when unreadable.
fn effective_capabilities() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

/// Is this a refusal (as opposed to a missing thread or a bad attribute)?
pub(super) fn is_refusal(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paranoid_3_without_perfmon_names_the_level_and_the_fixes() {
        let access = Access { paranoid: 3, perfmon: false, sys_admin: false };
        let err = access.refused(io::Error::from_raw_os_error(libc::EACCES));
        let text = err.to_string();
        assert!(matches!(err, PerfError::NotPermitted { paranoid: 3, missing: Missing::PerfEvents }), "{err:?}");
        assert!(text.starts_with("perf events are not permitted: kernel.perf_event_paranoid is 3"), "{text}");
        assert!(text.contains("CAP_PERFMON"), "{text}");
        assert!(text.contains("sysctl kernel.perf_event_paranoid=1"), "{text}");
    }

    #[test]
    fn off_cpu_needs_perfmon_or_level_minus_1() {
        let user = |paranoid| Access { paranoid, perfmon: false, sys_admin: false };
        let err = user(2).off_cpu().unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("off-CPU stacks are not permitted: kernel.perf_event_paranoid is 2"), "{text}");
        assert!(text.contains("sysctl kernel.perf_event_paranoid=-1"), "{text}");
        assert!(user(1).off_cpu().is_err());
        assert!(user(-1).off_cpu().is_ok());
        assert!(Access { paranoid: 4, perfmon: true, sys_admin: false }.off_cpu().is_ok());
    }

    #[test]
    fn kernel_frames_need_level_1_or_perfmon() {
        let access = |paranoid, perfmon| Access { paranoid, perfmon, sys_admin: false };
        assert!(!access(2, false).kernel());
        assert!(access(1, false).kernel());
        assert!(access(2, true).kernel());
    }

    #[test]
    fn a_refusal_the_level_allows_blames_the_container() {
        let access = Access { paranoid: 2, perfmon: true, sys_admin: true };
        let text = access.refused(io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(text.contains("although kernel.perf_event_paranoid is 2"), "{text}");
        assert!(text.contains("seccomp"), "{text}");
    }

    #[test]
    fn capabilities_of_this_process_parse() {
        // Whatever they are, reading them must not fail on Linux.
        assert!(Access::detect().is_ok());
    }
}
