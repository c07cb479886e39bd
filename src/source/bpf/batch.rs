//! Takes the stack counts out of their hash map in a few system calls
//! (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`, kernel 5.6+; each bucket read and emptied under its lock,
//! so a count the kernel side adds meanwhile lands in the next read), instead of three per key
//! (next key, lookup, delete) — what looptop's own CPU went to at 997 Hz. Where the kernel has no
//! batch operations the caller reads key by key.

use super::layout::StackKey;
use aya::maps::MapData;
use std::os::fd::{AsFd, AsRawFd};

const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Keys and values per system call.
const CHUNK: usize = 1024;

/// Every (key, count) of the counts map, removed from it; `None` when the kernel has no batch
/// operations for it (the map is left as it was).
pub(super) fn take_counts(map: &MapData) -> Option<Vec<(StackKey, u64)>> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut out = Vec::new();
    let mut keys = vec![StackKey::default(); CHUNK];
    let mut values = vec![0u64; CHUNK];
    // The batch token of a hash map is a bucket index (u32); 8 bytes leave room.
    let mut token = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { std::ptr::addr_of!(token) as u64 },
            out_batch: std::ptr::addr_of_mut!(token) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at buffers of `count` keys and values and at `token`,
        // all alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                std::ptr::addr_of_mut!(attr),
                std::mem::size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let errno = if r < 0 { std::io::Error::last_os_error().raw_os_error() } else { None };
        let n = (attr.count as usize).min(CHUNK);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match errno {
            None => {}
            // The end of the map.
            Some(libc::ENOENT) => return Some(out),
            // No batch operations here (or refused) before anything was taken.
            Some(_) if first && out.is_empty() => return None,
            Some(_) => return Some(out),
        }
        first = false;
    }
}
