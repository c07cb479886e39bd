//! Raw perf ABI constants the perf-event2 crates do not name, and the one `mount(2)` call.
//! The only `unsafe` of the perf source lives here.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `PERF_RECORD_SWITCH`: the observed thread went on or off a CPU (`attr.context_switch`).
pub const PERF_RECORD_SWITCH: u32 = 14;
/// `PERF_RECORD_MISC_SWITCH_OUT`: set on a switch record when the thread left the CPU.
pub const PERF_RECORD_MISC_SWITCH_OUT: u16 = 1 << 13;
/// Callchain entries at or above this (`(u64)-PERF_CONTEXT_MAX`) are `PERF_CONTEXT_*` markers
/// (kernel, user, guest …), not addresses.
pub const PERF_CONTEXT_MAX: u64 = -4095i64 as u64;
/// `CAP_SYS_ADMIN`, in `/proc/self/status` `CapEff`.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_PERFMON` (Linux 5.8+), in `/proc/self/status` `CapEff`.
pub const CAP_PERFMON: u32 = 38;

/// `mount -t tracefs nodev PATH`.
pub fn mount_tracefs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; data may be null.
    let rc = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Maps a ring for the first of `counters` and redirects the others into it, then enables them
/// all: one ring to read, records in the order they happened.
pub fn one_ring(
    counters: Vec<perf_event::Counter>,
    bytes: usize,
) -> io::Result<(perf_event::Sampler, Vec<perf_event::Counter>)> {
    let mut rest = counters.into_iter();
    let first = rest.next().ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
    let mut ring = first.sampled(bytes)?;
    let mut others: Vec<perf_event::Counter> = rest.collect();
    for c in &others {
        set_output(c, &ring)?;
    }
    for c in &mut others {
        c.enable()?;
    }
    ring.enable()?;
    Ok((ring, others))
}

/// `PERF_EVENT_IOC_SET_OUTPUT`: `_IO('$', 5)`.
const PERF_EVENT_IOC_SET_OUTPUT: libc::c_ulong = 0x2405;

/// Sends the records of `event` into the ring of `ring` (same thread, same clock).
pub fn set_output(event: &impl AsRawFd, ring: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: both are open perf event fds owned by the caller for the duration of the call.
    let rc = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_OUTPUT, ring.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `PERF_EVENT_IOC_SET_FILTER`: the kernel drops a tracepoint's records that do not match
/// `filter` (ftrace's filter syntax over the tracepoint's fields, "n > 0").
pub fn set_filter(event: &impl AsRawFd, filter: &str) -> io::Result<()> {
    let filter = CString::new(filter).map_err(io::Error::other)?;
    // SAFETY: an open perf event fd owned by the caller, and a NUL-terminated string that
    // outlives the call (the kernel copies it).
    let rc = unsafe { libc::ioctl(event.as_raw_fd(), perf_event_open_sys::bindings::SET_FILTER as _, filter.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A uprobe or uretprobe on `path` at file offset `offset`, as a perf-event2 event (its own
/// `UProbe` does not implement `Event` in 0.7).
#[derive(Debug, Clone)]
pub struct UserProbe {
    /// The dynamic PMU type of uprobes (`/sys/bus/event_source/devices/uprobe/type`).
    pub pmu: u32,
    /// On return rather than on entry.
    pub ret: bool,
    /// The ELF file.
    pub path: CString,
    /// File offset of the probed instruction.
    pub offset: u64,
}

impl UserProbe {
    /// The uprobe PMU's type number.
    pub fn pmu() -> io::Result<u32> {
        let text = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")?;
        text.trim().parse().map_err(io::Error::other)
    }
}

impl perf_event::events::Event for UserProbe {
    fn update_attrs(self, _: &mut perf_event_open_sys::bindings::perf_event_attr) {
        unreachable!("Builder calls update_attrs_with_data")
    }

    fn update_attrs_with_data(
        self,
        attr: &mut perf_event_open_sys::bindings::perf_event_attr,
    ) -> Option<std::sync::Arc<dyn perf_event::events::EventData>> {
        attr.type_ = self.pmu;
        // Bit 0 of `config`: a uretprobe (`/sys/bus/event_source/devices/uprobe/format/retprobe`).
        attr.config = u64::from(self.ret);
        attr.uprobe_path = self.path.as_ptr() as u64;
        attr.probe_offset = self.offset;
        // The path must live until the event is opened.
        Some(std::sync::Arc::new(self.path))
    }
}

/// The online CPUs (`/sys/devices/system/cpu/online`, e.g. `0-3,6`).
pub fn online_cpus() -> io::Result<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(text.trim()).ok_or_else(|| io::Error::other(format!("unreadable CPU list '{}'", text.trim())))
}

fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
