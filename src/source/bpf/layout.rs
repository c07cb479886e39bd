//! The records and map values `looptop.bpf.c` shares with looptop, byte for byte.

use crate::event::UserStack;

/// Loops the kernel side keeps (threads beyond are counted in `counters[1]`).
pub const SLOTS: usize = 128;

/// Phases of a slot (0: not known yet, no wait call seen).
pub mod phase {
    /// Inside a wait call.
    pub const WAITING: u32 = 1;
    /// Running a tick.
    pub const BUSY: u32 = 2;
}

/// Kinds of ring-buffer record.
pub mod kind {
    /// A completed tick at least the floor long.
    pub const STALL: u32 = 1;
    /// An on-CPU sample inside a stall.
    pub const SAMPLE: u32 = 2;
    /// A wait off the CPU inside a stall.
    pub const OFF_CPU: u32 = 3;
    /// A GC pause (`pad`: its kind, as `GcKind::from_code`).
    pub const GC: u32 = 4;
}

/// One loop thread (`struct slot`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Slot {
    pub seq: u32,
    pub tgid: u32,
    pub tid: u32,
    pub phase: u32,
    pub since: u64,
    pub loop_ns: u64,
    pub ticks: u64,
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub max_busy_ns: u64,
    pub exited_ns: u64,
    pub comm: [u8; 16],
    /// The user stack pointer at the wait that began the current tick (nested waits).
    pub tick_sp: u64,
    /// The same at the wait under way.
    pub wait_sp: u64,
    /// The wait under way is nested (its exit starts no tick).
    pub nested: u32,
    /// What the thread is to a pool of loops (`POOL_*` in the BPF source).
    pub pool: u32,
}

/// A slot's `pool` bit: the thread is a pool's worker, whose futex parks are waits.
pub const POOL_WORKER: u32 = 2;

/// Key of the `counts` map (`struct stack_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StackKey {
    pub tgid: u32,
    pub tid: u32,
    /// Stacks by hash (`new_stacks`' keys), 0 when none.
    pub user: u64,
    pub kernel: u64,
    pub off_cpu: u32,
    pub pad: u32,
}

// SAFETY: plain C structs of integers, no padding left uninitialized by the kernel side.
unsafe impl aya::Pod for StackKey {}

/// Frames per stack (`STACK_DEPTH`, the kernel's default `perf_event_max_stack`).
pub const STACK_DEPTH: usize = 127;

/// A stack sent once (`struct stack`, the values of `new_stacks`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StackFrames {
    pub len: u32,
    pub pad: u32,
    pub ips: [u64; STACK_DEPTH],
}

impl Default for StackFrames {
    fn default() -> StackFrames {
        StackFrames { len: 0, pad: 0, ips: [0; STACK_DEPTH] }
    }
}

impl StackFrames {
    /// The frames the kernel filled in, innermost first.
    pub fn frames(&self) -> &[u64] {
        &self.ips[..(self.len as usize).min(STACK_DEPTH)]
    }
}

// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for StackFrames {}

/// Buckets of a pool's wait histogram (`WAIT_BUCKETS`).
pub const WAIT_BUCKETS: usize = (40 - 4 + 2) * 16;

/// One process's libuv pool (`struct pool`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub queued: i64,
    pub running: i64,
    pub waits: [u64; WAIT_BUCKETS],
    pub wait_max: [u64; WAIT_BUCKETS],
}

impl Default for Pool {
    fn default() -> Pool {
        Pool { queued: 0, running: 0, waits: [0; WAIT_BUCKETS], wait_max: [0; WAIT_BUCKETS] }
    }
}

// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for Pool {}

/// Bytes of user stack the kernel side copies with a stall sample (`STACK_COPY`).
pub const STACK_COPY: usize = 16384;

/// A ring-buffer record (`struct record`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Record {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub pad: u32,
    pub user: u64,
    pub kernel: u64,
    pub t: u64,
    pub value: u64,
    pub tick: u64,
}

impl Record {
    /// The record in `bytes`, when it is one.
    pub fn read(bytes: &[u8]) -> Option<Record> {
        if bytes.len() < std::mem::size_of::<Record>() {
            return None;
        }
        // SAFETY: the length is checked; Record is plain integers, read unaligned.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Record>()) })
    }

    /// The user registers and stack copy after a stall sample's record (`struct sample_copy`),
    /// when the kernel side read any of the stack.
    pub fn stack_copy(bytes: &[u8]) -> Option<UserStack> {
        let tail = bytes.get(std::mem::size_of::<Record>()..)?;
        let word = |i: usize| Some(u64::from_ne_bytes(tail.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        // ip, sp, bp, the bytes copied, when it was taken; then the stack.
        let (ip, sp, bp, len) = (word(0)?, word(1)?, word(2)?, word(3)?);
        let len = usize::try_from(len).ok().filter(|&n| n > 0 && n <= STACK_COPY)?;
        let bytes = tail.get(40..40 + len)?.to_vec();
        Some(UserStack { ip, sp, bp, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_c_structs() {
        assert_eq!(std::mem::size_of::<Slot>(), 112);
        assert_eq!(std::mem::size_of::<StackKey>(), 32);
        assert_eq!(std::mem::size_of::<Record>(), 56);
        assert_eq!(std::mem::size_of::<StackFrames>(), 8 + 8 * STACK_DEPTH);
    }
}
