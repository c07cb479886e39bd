//! Allocator pauses: `mmap`, `munmap`, `madvise`, `mremap`, `brk` and `sbrk` calls on a loop
//! thread that take at least the threshold (default 1 ms) become records in the event ring.
//!
//! Only calls that go through the dynamic linker are seen: V8's and CPython's page allocators,
//! jemalloc/tcmalloc, and programs' own calls. glibc's malloc calls its internal `__mmap` and
//! `__sbrk` directly, so its large allocations are not seen here.

use crate::wrappers::Next;
use libc::{c_int, c_void, intptr_t, off_t, size_t};
use looptop_abi::{alloc_call, record_kind, EVENT_RING};
use std::sync::atomic::{AtomicU64, Ordering};

static THRESHOLD_NS: AtomicU64 = AtomicU64::new(looptop_abi::DEFAULT_ALLOC_THRESHOLD_NS);

/// Reads `LOOPTOP_ALLOC_THRESHOLD_NS`.
pub(crate) fn configure_from_env() {
    if let Some(t) = std::env::var(looptop_abi::ENV_ALLOC_THRESHOLD_NS).ok().and_then(|v| v.parse().ok()) {
        THRESHOLD_NS.store(t, Ordering::Relaxed);
    }
}

/// The threshold in force.
pub(crate) fn threshold_ns() -> u64 {
    THRESHOLD_NS.load(Ordering::Relaxed)
}

/// Runs an allocator call; on a loop thread, times it and records it when slow.
#[inline]
fn timed<R>(call: u64, size: u64, f: impl FnOnce() -> R) -> R {
    if !crate::ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let Some(slot) = crate::owned_slot() else { return f() };
    let t0 = crate::now_ns();
    let r = f();
    let dur = crate::now_ns().saturating_sub(t0);
    if dur >= THRESHOLD_NS.load(Ordering::Relaxed) {
        if let Some(seg) = crate::segment::existing() {
            // SAFETY: this thread's errno; recording makes no call that could change it, but the
            // caller must see exactly what the real call left.
            let errno = unsafe { *libc::__errno_location() };
            let i = seg.header().event_head.fetch_add(1, Ordering::AcqRel);
            let tid = slot.tid.load(Ordering::Relaxed);
            seg.events()[(i % EVENT_RING as u64) as usize].write(i, record_kind::ALLOC, tid, t0, dur, call, size);
            unsafe { *libc::__errno_location() = errno };
        }
    }
    r
}

static MMAP: Next = Next::new(b"mmap\0");
static MMAP64: Next = Next::new(b"mmap64\0");
static MUNMAP: Next = Next::new(b"munmap\0");
static MADVISE: Next = Next::new(b"madvise\0");
static MREMAP: Next = Next::new(b"mremap\0");
static BRK: Next = Next::new(b"brk\0");
static SBRK: Next = Next::new(b"sbrk\0");

/// Every symbol this module wraps, for resolving up front.
pub(crate) static ALL: [&Next; 7] = [&MMAP, &MMAP64, &MUNMAP, &MADVISE, &MREMAP, &BRK, &SBRK];

macro_rules! wrap_alloc {
    ($next:ident, fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $code:expr, size = $size:expr, fail = $fail:expr) => {
        /// Interposed: times the call on loop threads.
        ///
        /// # Safety
        /// Same contract as the libc function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            let addr = $next.get();
            if addr == 0 {
                *libc::__errno_location() = libc::ENOSYS;
                return $fail;
            }
            // SAFETY: addr is the next definition of this very symbol, with this signature.
            let real: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(addr) };
            timed($code, $size as u64, || unsafe { real($($arg),*) })
        }
    };
}

wrap_alloc!(MMAP, fn mmap(addr: *mut c_void, len: size_t, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void,
    alloc_call::MMAP, size = len, fail = libc::MAP_FAILED);
wrap_alloc!(MMAP64, fn mmap64(addr: *mut c_void, len: size_t, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void,
    alloc_call::MMAP, size = len, fail = libc::MAP_FAILED);
wrap_alloc!(MUNMAP, fn munmap(addr: *mut c_void, len: size_t) -> c_int, alloc_call::MUNMAP, size = len, fail = -1);
wrap_alloc!(MADVISE, fn madvise(addr: *mut c_void, len: size_t, advice: c_int) -> c_int,
    alloc_call::MADVISE, size = len, fail = -1);
// mremap is variadic (new_address with MREMAP_FIXED); on the Linux ABIs we build for, the fifth
// argument travels in the same register either way, so passing it through is exact.
wrap_alloc!(MREMAP, fn mremap(old: *mut c_void, old_len: size_t, new_len: size_t, flags: c_int, new_addr: *mut c_void) -> *mut c_void,
    alloc_call::MREMAP, size = new_len, fail = libc::MAP_FAILED);
wrap_alloc!(BRK, fn brk(addr: *mut c_void) -> c_int, alloc_call::BRK, size = 0, fail = -1);
wrap_alloc!(SBRK, fn sbrk(incr: intptr_t) -> *mut c_void, alloc_call::SBRK, size = incr.unsigned_abs(),
    fail = -1isize as *mut c_void);
