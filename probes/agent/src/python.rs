//! The Python frames of a stalled loop thread, read by the watchdog from its own process: the
//! interpreter's runtime found once with `dlsym`, the thread's state looked up by its kernel id
//! (and kept per loop), then one bounded walk of its frames ([`looptop_abi::python::walk`]).
//!
//! Every read goes through `process_vm_readv` on our own pid, so a frame freed or half-written
//! by the running thread reads as garbage or fails, never faults; the walk allocates nothing
//! and takes no lock. A process without CPython, or with a version the ABI crate does not know,
//! keeps `npy` at 0: looptop then names only native frames.

use looptop_abi::python::{self, Mem, PyLayout, PY_FRAMES};
use looptop_abi::SampleEntry;
use std::sync::atomic::Ordering;

/// Our own memory, read without the risk of a fault.
struct OwnMemory;

impl Mem for OwnMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        crate::sys::read_own(addr, buf) == buf.len()
    }
}

/// The CPython runtime of this process.
#[derive(Clone, Copy)]
pub(crate) struct Runtime {
    layout: &'static PyLayout,
    /// `&_PyRuntime`.
    runtime: u64,
    /// Where glibc keeps a thread's kernel id in its `struct pthread` (3.10 needs it).
    pthread_tid: Option<u64>,
}

impl Runtime {
    /// The runtime, if this process runs a CPython whose layout is known (from the watchdog
    /// thread: `dlsym` may allocate and lock).
    pub(crate) fn find() -> Option<Runtime> {
        if !crate::sys::allowed(crate::sys::Call::ProcessVmReadv) {
            return None;
        }
        let runtime = symbol(c"_PyRuntime")?;
        let minor = match symbol(c"Py_Version") {
            // SAFETY: `Py_Version` is an exported `const unsigned long` (3.11+).
            Some(at) => python::minor_of_hex(unsafe { std::ptr::read_volatile(at as *const libc::c_ulong) } as u64)?,
            None => minor_from_get_version()?,
        };
        let layout = python::layout(minor)?;
        // SAFETY: pthread_self and gettid have no preconditions.
        let (me, tid) = unsafe { (libc::pthread_self() as u64, libc::syscall(libc::SYS_gettid) as u32) };
        let pthread_tid = python::pthread_tid_offset(&OwnMemory, me, tid);
        Some(Runtime { layout, runtime: runtime as u64, pthread_tid })
    }

    /// Writes the Python frames of thread `tid` into `entry` (`npy` 0 when none are found);
    /// `tstate` caches the thread's state between samples (0 = not known).
    pub(crate) fn sample(&self, tid: u32, tstate: &mut u64, entry: &SampleEntry) {
        let mem = OwnMemory;
        let l = self.layout;
        if *tstate == 0 || python::thread_id(&mem, l, *tstate, self.pthread_tid) != Some(tid) {
            *tstate = python::find_thread(&mem, l, self.runtime, tid, self.pthread_tid).unwrap_or(0);
        }
        let mut words = [[0u64; 2]; PY_FRAMES];
        let n = if *tstate == 0 { 0 } else { python::walk(&mem, l, *tstate, &mut words) };
        for (dst, w) in entry.py.iter().zip(&words[..n]) {
            dst[0].store(w[0], Ordering::Relaxed);
            dst[1].store(w[1], Ordering::Relaxed);
        }
        entry.npy.store(n as u64, Ordering::Relaxed);
    }
}

/// The address of an exported symbol of the program or its libraries.
fn symbol(name: &std::ffi::CStr) -> Option<*const libc::c_void> {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope.
    let at = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as *const libc::c_void;
    (!at.is_null()).then_some(at)
}

/// The minor version from `Py_GetVersion()` ("3.10.13 (main, …"): 3.10 has no `Py_Version`.
fn minor_from_get_version() -> Option<u32> {
    let f = symbol(c"Py_GetVersion")?;
    // SAFETY: `Py_GetVersion` takes nothing and returns a static NUL-terminated string; it
    // needs neither the GIL nor an initialized interpreter.
    let s = unsafe {
        let f: extern "C" fn() -> *const libc::c_char = std::mem::transmute(f);
        std::ffi::CStr::from_ptr(f())
    };
    let v = s.to_bytes();
    let rest = v.strip_prefix(b"3.")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}
