//! Array maps mapped into looptop (`BPF_F_MMAPABLE`): the loop slots, their histograms and the
//! slot counter, read every poll (and seeded at attach) without a system call.

use super::layout::Slot;
use super::BpfError;
use aya::maps::MapData;
use std::sync::atomic::{AtomicU64, Ordering};

/// An array map mapped into looptop (`BPF_F_MMAPABLE`): read (and, for slots, seeded) without a
/// system call.
pub(super) struct Shared {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, accessed through volatile reads and atomics.
unsafe impl Send for Shared {}

impl Shared {
    pub(super) fn map(data: &MapData, len: usize) -> Result<Shared, BpfError> {
        use std::os::fd::{AsFd, AsRawFd};
        let page = 4096;
        let len = len.div_ceil(page) * page;
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF array map's memory, shared, for as long as `Shared` lives.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(BpfError::Refused {
                what: "mmap of a map",
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        Ok(Shared { ptr: ptr.cast(), len })
    }

    /// The `i`-th element of `size` bytes (elements of a mapped array are 8-byte aligned).
    pub(super) fn at(&self, i: usize, size: usize) -> *mut u8 {
        let stride = size.div_ceil(8) * 8;
        assert!((i + 1) * stride <= self.len, "element {i} out of the mapping");
        // SAFETY: in bounds, checked above.
        unsafe { self.ptr.add(i * stride) }
    }

    pub(super) fn u64_at(&self, i: usize) -> &AtomicU64 {
        // SAFETY: 8-byte aligned, in bounds, shared with the kernel's atomic adds.
        unsafe { &*(self.at(i, 8) as *const AtomicU64) }
    }

    /// A consistent copy of slot `i` (the thread may be writing it: retried while its sequence
    /// is odd or changes).
    pub(super) fn slot(&self, i: usize) -> Slot {
        let p = self.at(i, std::mem::size_of::<Slot>()) as *const Slot;
        let mut copy = Slot::default();
        for _ in 0..4 {
            // SAFETY: in bounds; a volatile copy of plain integers.
            let seq = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*p).seq)) };
            std::sync::atomic::fence(Ordering::Acquire);
            copy = unsafe { std::ptr::read_volatile(p) };
            std::sync::atomic::fence(Ordering::Acquire);
            let again = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*p).seq)) };
            if seq == again && seq % 2 == 0 {
                break;
            }
        }
        copy
    }

    /// Slot `i`'s histogram.
    pub(super) fn hist(&self, i: usize) -> Box<[u64]> {
        let n = looptop_abi::HIST_BUCKETS;
        let base = self.at(i * n, 8) as *const u64;
        // SAFETY: a slot's buckets are contiguous and in bounds (`at` checked the first; the
        // map holds SLOTS × HIST_BUCKETS).
        (0..n).map(|b| unsafe { std::ptr::read_volatile(base.add(b)) }).collect()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
