//! Raw perf ABI constants the perf-event2 crates do not name, and the one `mount(2)` call.
//! The only `unsafe` of the perf source lives here.

use std::ffi::CString;
use std::io;
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
