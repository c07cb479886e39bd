//! The `sched:sched_switch` tracepoint: finding tracefs (mounting it when root and missing), the
//! tracepoint's id, and where `prev_pid` and `prev_state` sit in its raw record.

use super::error::PerfError;
use super::sys;
use std::io;
use std::path::{Path, PathBuf};

/// Where tracefs is mounted today, and where it was (under debugfs) on older systems.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const SCHED_SWITCH: &str = "events/sched/sched_switch";

/// Where a field sits in the raw tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Field {
    offset: usize,
    size: usize,
}

impl Field {
    /// The field's value, sign-extended from its size; `None` when `raw` is too short.
    fn read(&self, raw: &[u8]) -> Option<i64> {
        let bytes = raw.get(self.offset..self.offset + self.size)?;
        Some(match self.size {
            1 => bytes[0] as i8 as i64,
            2 => i16::from_ne_bytes(bytes.try_into().ok()?) as i64,
            4 => i32::from_ne_bytes(bytes.try_into().ok()?) as i64,
            8 => i64::from_ne_bytes(bytes.try_into().ok()?),
            _ => return None,
        })
    }
}

/// The sched_switch tracepoint of this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SchedSwitch {
    /// Tracepoint id (`perf_event_attr.config`).
    pub id: u64,
    prev_pid: Field,
    prev_state: Field,
}

/// The low byte of `prev_state` holds the sleep states (S, D, T, t, X, Z, P, I); above it the
/// kernel reports a preemption ("R+", `TASK_REPORT_MAX`), and 0 is plain runnable.
const SLEEP_STATES: i64 = 0xff;

impl SchedSwitch {
    /// Finds the tracepoint; mounts tracefs first when it is missing and `mount` is allowed.
    pub fn open(mount: bool) -> Result<SchedSwitch, PerfError> {
        let dir = match find()? {
            Some(dir) => dir,
            None if mount => {
                sys::mount_tracefs(Path::new(TRACEFS[0])).map_err(PerfError::TracefsMount)?;
                find()?.ok_or(PerfError::TracefsMissing)?
            }
            None => return Err(PerfError::TracefsMissing),
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| PerfError::Tracepoint { path, reason: e.to_string() })
        };
        let id = read("id")?;
        let id = id.trim().parse().map_err(|_| PerfError::Tracepoint {
            path: dir.join("id"),
            reason: format!("'{}' is not a tracepoint id", id.trim()),
        })?;
        let format = read("format")?;
        Self::from_format(id, &format).map_err(|reason| PerfError::Tracepoint { path: dir.join("format"), reason })
    }

    /// Reads the field layout from the tracepoint's `format` file.
    fn from_format(id: u64, format: &str) -> Result<SchedSwitch, String> {
        let field = |name: &str| {
            format
                .lines()
                .find_map(|line| parse_field(line).filter(|(n, _)| *n == name).map(|(_, f)| f))
                .ok_or_else(|| format!("no field '{name}' in the format"))
        };
        Ok(SchedSwitch { id, prev_pid: field("prev_pid")?, prev_state: field("prev_state")? })
    }

    /// When a raw sched_switch record shows thread `tid` leaving the CPU to wait (not
    /// preempted, not some other thread): true.
    pub fn is_voluntary_switch_of(&self, tid: u32, raw: &[u8]) -> bool {
        let prev_pid = self.prev_pid.read(raw);
        let prev_state = self.prev_state.read(raw);
        matches!((prev_pid, prev_state), (Some(p), Some(s)) if p == tid as i64 && s & SLEEP_STATES != 0)
    }
}

/// `\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;` → `("prev_pid", Field)`.
fn parse_field(line: &str) -> Option<(&str, Field)> {
    let mut parts = line.trim().split(';').map(str::trim);
    let decl = parts.next()?.strip_prefix("field:")?;
    // The name is the last word of the declaration, without an array suffix.
    let name = decl.rsplit(' ').next()?.split('[').next()?;
    let mut offset = None;
    let mut size = None;
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.parse().ok();
        }
    }
    Some((name, Field { offset: offset?, size: size? }))
}

/// The sched_switch directory under a mounted tracefs; `None` when tracefs is not mounted;
/// an error when it is there but unreadable.
fn find() -> Result<Option<PathBuf>, PerfError> {
    for root in TRACEFS {
        let dir = Path::new(root).join(SCHED_SWITCH);
        match std::fs::metadata(dir.join("id")) {
            Ok(_) => return Ok(Some(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(PerfError::Tracepoint { path: dir.join("id"), reason: e.to_string() }),
        }
    }
    Ok(None)
}

/// The mounted tracefs (mounting it first when it is missing and `mount` is allowed).
pub(super) fn root(mount: bool) -> Result<PathBuf, PerfError> {
    let mounted = || TRACEFS.iter().map(Path::new).find(|r| r.join("events").is_dir()).map(Path::to_path_buf);
    match mounted() {
        Some(root) => Ok(root),
        None if mount => {
            sys::mount_tracefs(Path::new(TRACEFS[0])).map_err(PerfError::TracefsMount)?;
            mounted().ok_or(PerfError::TracefsMissing)
        }
        None => Err(PerfError::TracefsMissing),
    }
}

/// Whether the tracepoint can be had: found, or missing while we may mount tracefs. Cheap: no mount.
pub(super) fn available(may_mount: bool) -> Result<(), PerfError> {
    match find()? {
        Some(_) => Ok(()),
        None if may_mount => Ok(()),
        None => Err(PerfError::TracefsMissing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/sched/sched_switch/format` of Linux 6.x on x86_64.
    const FORMAT: &str = "name: sched_switch
ID: 372
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prev_prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:int next_prio;\toffset:60;\tsize:4;\tsigned:1;

print fmt: \"prev_comm=%s prev_pid=%d\", REC->prev_comm, REC->prev_pid
";

    fn raw(prev_pid: i32, prev_state: i64) -> Vec<u8> {
        let mut raw = vec![0u8; 68];
        raw[24..28].copy_from_slice(&prev_pid.to_ne_bytes());
        raw[32..40].copy_from_slice(&prev_state.to_ne_bytes());
        raw
    }

    #[test]
    fn format_gives_the_offsets() {
        let s = SchedSwitch::from_format(372, FORMAT).unwrap();
        assert_eq!(s.prev_pid, Field { offset: 24, size: 4 });
        assert_eq!(s.prev_state, Field { offset: 32, size: 8 });
        assert_eq!(parse_field("\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;").unwrap().0, "prev_comm");
    }

    #[test]
    fn sleeping_is_voluntary_preemption_and_running_are_not() {
        let s = SchedSwitch::from_format(372, FORMAT).unwrap();
        assert!(s.is_voluntary_switch_of(42, &raw(42, 0x1)), "S");
        assert!(s.is_voluntary_switch_of(42, &raw(42, 0x2)), "D");
        assert!(!s.is_voluntary_switch_of(42, &raw(42, 0)), "R");
        assert!(!s.is_voluntary_switch_of(42, &raw(42, 0x100)), "R+ (preempted)");
        assert!(!s.is_voluntary_switch_of(7, &raw(42, 0x1)), "another thread");
        assert!(!s.is_voluntary_switch_of(42, &raw(42, 1)[..30]), "truncated");
    }

    #[test]
    fn a_format_without_the_fields_is_an_error() {
        let err = SchedSwitch::from_format(1, "format:\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n");
        assert_eq!(err.unwrap_err(), "no field 'prev_pid' in the format");
    }

    #[test]
    fn this_kernels_tracepoint_parses_when_readable() {
        match SchedSwitch::open(false) {
            Ok(s) => assert!(s.id > 0),
            Err(e) => println!("SKIP: {e}"),
        }
    }
}
