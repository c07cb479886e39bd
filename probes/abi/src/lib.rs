//! The shared-memory segment layout, shared by `liblooptop_agent.so` (the writer) and `looptop`
//! (the reader).
//!
//! One segment per process, `<dir>/looptop-<pid>` (dir `/dev/shm` unless `LOOPTOP_SHM_DIR`; when
//! that name is taken by a file the agent cannot remove, `looptop-<pid>-<random hex>`), mode 0600,
//! owned by the process's user. It starts with a [`Header`], then the event ring, the probe
//! channels and the sample ring (the *base*, reserved with `posix_fallocate` at creation), then up
//! to [`LOOP_SLOTS`] [`LoopSlot`]s, one per thread that waits in `epoll_wait`/`poll` (a *loop*).
//! Slots are reserved as loops appear ([`Header::backed_slots`]): the file grows, and no page is
//! touched before it is known to be backed, so a full `/dev/shm` makes the agent step aside
//! instead of killing the process with `SIGBUS`. Slot 0 is kept for the main thread. Every field the agent changes after creation is an
//! atomic; each slot is guarded by a seqlock ([`LoopSlot::seq`]) so that a reader can take a
//! consistent snapshot without ever blocking the writer. The layout is `repr(C)` and versioned by
//! [`LAYOUT_VERSION`]: a reader refuses any other version.
#![no_std]
#![deny(missing_docs)]

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

pub mod python;

/// First bytes of every segment.
pub const MAGIC: [u8; 8] = *b"LOOPTOP\0";
/// Layout version; bump on any change of the structures below.
pub const LAYOUT_VERSION: u32 = 6;
/// Number of loop slots per process: bounded, so the segment size is fixed.
pub const LOOP_SLOTS: usize = 64;
/// A zero-timeout wait made more than this much deeper on the stack than the wait that began the
/// tick is nested, part of that tick (Redis answering `BUSY` from inside a Lua script): more than
/// the frames of one wrapper and another, less than any loop's own frames. The agent, the BPF
/// program (its own `#define`) and the perf source use it.
pub const NESTED_MIN_BYTES: usize = 1024;

/// Whether a futex call (`op`, and its timeout argument: 0 for none) parks its thread until
/// woken: `FUTEX_WAIT` or `FUTEX_WAIT_BITSET` (0 and 9), private (128) or not, either clock
/// (256), with no timeout — a pool worker's park, its idle. Timed waits are a blocking pool's
/// idle threads (tokio's keep-alive), which are no loop. The agent's pool, the BPF program's
/// `enter_futex` and the perf source's filter keep this rule.
pub fn futex_parks(op: u64, timeout: u64) -> bool {
    let cmd = op & !(128 | 256);
    timeout == 0 && (cmd == 0 || cmd == 9)
}
/// Stalls kept per loop, newest overwrite oldest; a reader that falls behind counts the loss.
pub const STALL_RING: usize = 256;
/// Records in the agent's event ring (allocator pauses), shared by all threads of the process.
pub const EVENT_RING: usize = 1024;
/// Stack samples kept by the watchdog, newest overwrite oldest.
pub const SAMPLE_RING: usize = 256;
/// Frames kept per stack sample (deeper stacks are cut at the root end).
pub const SAMPLE_FRAMES: usize = 120;
/// Copies of the user stack kept ([`StackCopyEntry`]): sample `i`'s copy, when it has one, is
/// entry `i % COPY_RING`. Fewer than samples: looptop reads them within a poll (tens of ms), while
/// the watchdog samples a stalled loop every few ms.
pub const COPY_RING: usize = 32;
/// Bytes of stack a copy holds at most, from the stack pointer up.
pub const COPY_BYTES: usize = 8192;
/// Innermost frames of a sample whose interpreter slots are kept ([`SampleEntry::js`]).
pub const JS_FRAMES: usize = 32;
/// Probe channels: one per runtime thread with a probe (Node: `threadId % PROBE_CHANNELS`).
pub const PROBE_CHANNELS: usize = 8;
/// Records per probe channel.
pub const PROBE_RING: usize = 256;
/// Length of the executable path field, NUL-padded (truncated if longer).
pub const EXE_LEN: usize = 256;
/// Length of a thread name field (Linux `comm` is at most 15 bytes plus NUL).
pub const NAME_LEN: usize = 16;
/// Prefix of a segment's file name; the pid follows.
pub const SEGMENT_PREFIX: &str = "looptop-";
/// Default folder of segments.
pub const DEFAULT_SHM_DIR: &str = "/dev/shm";
/// Default floor of the stall ring: ticks at least this long are kept individually.
pub const DEFAULT_STALL_FLOOR_NS: u64 = 10_000_000;

/// The floor looptop observes with under a stall threshold: the threshold itself when lower than
/// the default floor (so every stall is kept), else the default floor (so a later, lower
/// threshold still sees the ticks down to it).
pub const fn stall_floor_ns(threshold_ns: u64) -> u64 {
    if threshold_ns == 0 {
        1
    } else if threshold_ns < DEFAULT_STALL_FLOOR_NS {
        threshold_ns
    } else {
        DEFAULT_STALL_FLOOR_NS
    }
}

/// Environment: folder for segments (default `/dev/shm`).
pub const ENV_SHM_DIR: &str = "LOOPTOP_SHM_DIR";
/// Environment: session id (decimal u64) set by `looptop run`, copied into each header so the
/// launcher finds every descendant's segment.
pub const ENV_SESSION: &str = "LOOPTOP_SESSION";
/// Environment: a folder where an agent that cannot set up writes `agent-error-<pid>` (one line).
pub const ENV_RUN_DIR: &str = "LOOPTOP_RUN_DIR";
/// Environment: stall ring floor in nanoseconds (decimal).
pub const ENV_STALL_FLOOR_NS: &str = "LOOPTOP_STALL_FLOOR_NS";
/// Environment: allocator calls at least this long (ns) on a loop thread are allocator pauses.
pub const ENV_ALLOC_THRESHOLD_NS: &str = "LOOPTOP_ALLOC_THRESHOLD_NS";
/// Default allocator pause threshold: 1 ms.
pub const DEFAULT_ALLOC_THRESHOLD_NS: u64 = 1_000_000;
/// Environment: `0` stops the agent from arranging the runtime probe (Node `--require`, Python
/// `sitecustomize`).
pub const ENV_PROBE: &str = "LOOPTOP_PROBE";
/// Environment: `0` turns the watchdog off (no stacks of stalls in progress).
pub const ENV_WATCHDOG: &str = "LOOPTOP_WATCHDOG";
/// Environment: `0` stops the watchdog from reading a stalled thread's Python frames.
pub const ENV_PYTHON_FRAMES: &str = "LOOPTOP_PYTHON_FRAMES";
/// Environment: how often (ns) the watchdog looks at the loops and samples a stalled one.
pub const ENV_WATCH_INTERVAL_NS: &str = "LOOPTOP_WATCH_INTERVAL_NS";
/// Default watchdog interval: 5 ms.
pub const DEFAULT_WATCH_INTERVAL_NS: u64 = 5_000_000;
/// Most stack samples the watchdog takes of one stall.
pub const SAMPLES_PER_STALL: u64 = 200;
/// Environment: the pid of a looptop that launched the process; the agent then leaves its segment
/// at exit and other agents' sweeps leave it while that looptop lives (the launcher removes it
/// after its last read, so a short-lived process is never missed). `1` keeps it with no keeper.
pub const ENV_KEEP_SEGMENT: &str = "LOOPTOP_KEEP_SEGMENT";

/// Slot states ([`LoopSlot::state`]).
pub mod slot_state {
    /// Never used.
    pub const FREE: u32 = 0;
    /// Being claimed by a thread; not yet readable.
    pub const CLAIMING: u32 = 1;
    /// Owned by a live thread.
    pub const ACTIVE: u32 = 2;
    /// Its thread exited; data final, slot reusable when no free slot is left.
    pub const EXITED: u32 = 3;
}

/// Sub-buckets per power of two in the busy-time histogram (2^7 = 128: ≤ 0.8 % bucket width).
pub const HIST_SUB_BITS: u32 = 7;
const HIST_SUB: u64 = 1 << HIST_SUB_BITS;
/// Largest power of two covered exactly (2^42 ns ≈ 73 min); longer ticks land in the last bucket.
pub const HIST_MAX_EXP: u32 = 42;
/// Number of histogram buckets.
pub const HIST_BUCKETS: usize = ((HIST_MAX_EXP - HIST_SUB_BITS + 2) as usize) * HIST_SUB as usize;

/// The histogram bucket of a duration in nanoseconds: exact below 128 ns, log-linear above with
/// 128 sub-buckets per power of two, so a bucket's width is at most 1/128 of its values.
#[inline]
pub fn hist_bucket(ns: u64) -> usize {
    if ns < HIST_SUB {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    if msb > HIST_MAX_EXP {
        return HIST_BUCKETS - 1;
    }
    let shift = msb - HIST_SUB_BITS;
    let mantissa = (ns >> shift) - HIST_SUB; // 0..128
    ((shift as u64 + 1) * HIST_SUB + mantissa) as usize
}

/// The range `[low, high)` of durations (ns) that fall in a bucket.
pub fn hist_bucket_range(index: usize) -> (u64, u64) {
    log_linear_range(index, HIST_SUB_BITS)
}

/// The range `[low, high)` of bucket `index` of a log-linear histogram with `2^sub_bits` buckets
/// per power of two (the agent's has [`HIST_SUB_BITS`]; the BPF source's pool waits have fewer).
pub fn log_linear_range(index: usize, sub_bits: u32) -> (u64, u64) {
    let sub = 1u64 << sub_bits;
    let index = index as u64;
    if index < sub {
        return (index, index + 1);
    }
    let shift = index / sub - 1;
    let mantissa = index % sub + sub;
    (mantissa << shift, (mantissa + 1) << shift)
}

/// Segment header: identifies the process and the layout.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// `size_of::<Header>()`, a second guard against layout mismatch.
    pub header_size: u32,
    /// Total segment size in bytes.
    pub segment_size: u64,
    /// Process id of the writer.
    pub pid: u32,
    /// `CLOCK_MONOTONIC` (1): the clock of every timestamp in the segment.
    pub clock_id: u32,
    /// Process start time in clock ticks since boot (`/proc/PID/stat` field 22), so a reused pid
    /// is never taken for the process that wrote the segment.
    pub start_time_ticks: u64,
    /// Session id from `LOOPTOP_SESSION`, 0 when not launched by `looptop run`.
    pub session: u64,
    /// Stall ring floor (ns): ticks at least this long are recorded in [`LoopSlot::stalls`].
    pub stall_floor_ns: u64,
    /// When the agent created the segment (ns, `CLOCK_MONOTONIC`).
    pub created_ns: u64,
    /// When the process began to exit (ns), 0 while it runs.
    pub exited_ns: AtomicU64,
    /// Number of loop slots that follow ([`LOOP_SLOTS`]).
    pub loop_slots: u32,
    /// Size of one [`LoopSlot`] in bytes.
    pub slot_size: u32,
    /// Threads that found no free slot (their ticks are not recorded).
    pub slots_exhausted: AtomicU64,
    /// Allocator pause threshold (ns).
    pub alloc_threshold_ns: u64,
    /// Records written to the event ring so far (the next index).
    pub event_head: AtomicU64,
    /// Byte offset of the event ring ([`EVENT_RING`] [`Record`]s).
    pub event_offset: u64,
    /// Byte offset of the probe channels ([`PROBE_CHANNELS`] × [`PROBE_RING`] [`Record`]s);
    /// probes write them with `pwrite` on the segment file, seq word first zeroed, last set.
    pub probe_offset: u64,
    /// Number of probe channels.
    pub probe_channels: u32,
    /// Records per probe channel.
    pub probe_ring: u32,
    /// Size of one [`Record`] in bytes.
    pub record_size: u32,
    /// Reserved (zero).
    pub _pad: u32,
    /// Executable path, NUL-padded.
    pub exe: [u8; EXE_LEN],
    /// Byte offset of the stack sample ring ([`SAMPLE_RING`] [`SampleEntry`]s).
    pub sample_offset: u64,
    /// Number of entries in the sample ring.
    pub sample_ring: u32,
    /// Size of one [`SampleEntry`] in bytes.
    pub sample_size: u32,
    /// Samples written so far (the next index); entry `i` lives at `i % sample_ring`.
    pub sample_head: AtomicU64,
    /// The watchdog samples a tick once it has been busy this long (ns); 0 = no watchdog.
    pub watch_threshold_ns: AtomicU64,
    /// The watchdog's sampling interval (ns).
    pub watch_interval_ns: u64,
    /// Real-time signal the watchdog uses, 0 when it cannot signal (only off-CPU stacks).
    pub watch_signal: AtomicU32,
    /// Reserved (zero).
    pub _pad2: u32,
    /// Samples the watchdog asked for and did not get (signal blocked or not delivered in time).
    pub samples_missed: AtomicU64,
    /// Byte offset of loop slot 0 (the end of the base).
    pub slot_offset: u64,
    /// Slots whose pages are reserved (the file is at least `slot_offset + backed_slots *
    /// slot_size` long); only these may be claimed or read.
    pub backed_slots: AtomicU32,
    /// Effective uid of the process that created the segment.
    pub owner_uid: u32,
    /// Pid of the `looptop` that keeps this segment for its last read (`LOOPTOP_KEEP_SEGMENT`),
    /// 0 when nobody does: the agent that sweeps dead processes' segments leaves it while that
    /// looptop lives.
    pub keeper_pid: u32,
    /// [`header_flags`].
    pub flags: AtomicU32,
    /// Inode of the creator's pid namespace (`/proc/self/ns/pid`), 0 from agents before it was
    /// kept: containers that share `/dev/shm` but not pids must not take each other's segments
    /// for those of dead processes.
    pub pid_ns: u64,
    /// Where V8 keeps what an interpreted frame is running, when the process exports V8's
    /// postmortem metadata (`v8dbg_*` symbols, as Node does): lets looptop name the line.
    pub v8: V8Layout,
    /// Reserved for later fields of the same version (zero).
    pub reserved: [u64; 5],
}

/// Where V8 keeps an interpreted frame's position, from the process's `v8dbg_*` symbols, copied
/// by the agent so that the watchdog's signal handler keeps those two words of each frame
/// ([`SampleEntry::js`]); looptop reads the rest of V8's layout from the binary itself. All zero
/// when the process has no V8 (or not these symbols, or compressed pointers).
#[repr(C)]
pub struct V8Layout {
    /// Non-zero once the fields below are written (read with `Acquire`).
    pub known: AtomicU32,
    /// Offset of an interpreted frame's `BytecodeArray` (a tagged pointer) from its frame pointer.
    pub off_fp_bytecode_array: AtomicI32,
    /// Offset from the frame pointer of its bytecode offset (a Smi).
    pub off_fp_bytecode_offset: AtomicI32,
    /// Reserved (zero).
    pub _pad: AtomicU32,
}

/// Flags of a segment ([`Header::flags`]).
pub mod header_flags {
    /// The agent created `/tmp/perf-<pid>.map` for V8 (`--perf-basic-prof`); whoever removes the
    /// segment of the dead process removes the map too.
    pub const PERF_MAP: u32 = 1;
    /// A seccomp filter forbids a system call the watchdog needs: no stacks by signal.
    pub const NO_SIGNALS: u32 = 2;
}

/// Kinds of [`Record`].
pub mod record_kind {
    /// An allocator pause (agent): `a` = call ([`super::alloc_call`]), `b` = size in bytes.
    pub const ALLOC: u32 = 1;
    /// A GC pause (probe): `a` = kind (V8: 1 minor, 2 major, 4 incremental, 8 weak callbacks;
    /// CPython: 16 + generation), `b` = flags.
    pub const GC: u32 = 2;
    /// Thread-pool state (probe), sampled: `a` = pool size, `b` = items in flight (submitted −
    /// completed), `c` = most items queued since the previous sample, `d` = items submitted so far.
    pub const POOL: u32 = 3;
    /// Thread-pool waits (probe): `c` items waited at least `a` ns and less than `b` ns (a
    /// histogram bucket); `d` = longest wait in the bucket (ns).
    pub const POOL_WAIT: u32 = 4;
    /// Which pool the probe sees (probe, once): `a` = 1 libuv, 2 Python default executor,
    /// `b` = size.
    pub const POOL_KIND: u32 = 5;
    /// A probe started (probe, once per runtime thread): `a` = 1 Node, 2 Python.
    pub const PROBE: u32 = 6;
}

/// Allocator calls ([`record_kind::ALLOC`] `a`).
pub mod alloc_call {
    /// `mmap`.
    pub const MMAP: u64 = 1;
    /// `munmap`.
    pub const MUNMAP: u64 = 2;
    /// `madvise`.
    pub const MADVISE: u64 = 3;
    /// `mremap`.
    pub const MREMAP: u64 = 4;
    /// `brk`.
    pub const BRK: u64 = 5;
    /// `sbrk`.
    pub const SBRK: u64 = 6;
    /// Names, by code.
    pub fn name(code: u64) -> &'static str {
        match code {
            MMAP => "mmap",
            MUNMAP => "munmap",
            MADVISE => "madvise",
            MREMAP => "mremap",
            BRK => "brk",
            SBRK => "sbrk",
            _ => "?",
        }
    }
}

/// One event: an allocator pause from the agent, or a GC pause / pool sample from a probe.
/// Valid when `seq` is its index + 1 (written first as 0, last as index + 1).
#[repr(C)]
pub struct Record {
    /// Index + 1 of the record held; 0 while being written.
    pub seq: AtomicU64,
    /// One of [`record_kind`].
    pub kind: AtomicU32,
    /// Thread id (agent) or runtime thread number (probe).
    pub thread: AtomicU32,
    /// When (ns, `CLOCK_MONOTONIC`).
    pub t_ns: AtomicU64,
    /// Duration (ns), 0 for samples.
    pub dur_ns: AtomicU64,
    /// Kind-specific.
    pub a: AtomicU64,
    /// Kind-specific.
    pub b: AtomicU64,
    /// Kind-specific.
    pub c: AtomicU64,
    /// Kind-specific.
    pub d: AtomicU64,
}

/// Size of a [`Record`].
pub const RECORD_SIZE: usize = core::mem::size_of::<Record>();

/// One stall: a tick whose busy time was at least the header's floor.
#[repr(C)]
pub struct StallEntry {
    /// Index+1 of the stall this entry holds (0 = never written); written last, checked by the
    /// reader before and after copying so an entry overwritten meanwhile is detected.
    pub seq: AtomicU64,
    /// Tick start (ns, `CLOCK_MONOTONIC`): the return of the wait call.
    pub start_ns: AtomicU64,
    /// Busy time of the tick (ns).
    pub duration_ns: AtomicU64,
}

/// Sample flags ([`SampleEntry::flags`]).
pub mod sample_flags {
    /// The thread was off-CPU (sleeping in a syscall): the stack comes from a scan, `syscall` and
    /// `wchan` say where it waits.
    pub const OFF_CPU: u64 = 1;
    /// Frames after the first come from scanning the stack for return addresses (no usable frame
    /// pointers): may hold stale frames.
    pub const SCANNED: u64 = 2;
    /// The stack had more than [`super::SAMPLE_FRAMES`] frames.
    pub const TRUNCATED: u64 = 4;
    /// Abandoned: the signal was not delivered in time; no frames.
    pub const MISSED: u64 = 8;
}

/// One stack of a loop thread, taken by the watchdog during a stall in progress.
/// Valid when `seq` is its index + 1 (written first as 0, last as index + 1).
#[repr(C)]
pub struct SampleEntry {
    /// Index + 1 of the sample held; 0 while being written.
    pub seq: AtomicU64,
    /// Thread id.
    pub tid: AtomicU32,
    /// Frames in use.
    pub nframes: AtomicU32,
    /// When (ns, `CLOCK_MONOTONIC`).
    pub t_ns: AtomicU64,
    /// Start of the tick in progress (ns): ties the sample to its stall.
    pub tick_ns: AtomicU64,
    /// [`sample_flags`].
    pub flags: AtomicU64,
    /// System call the thread waits in (x86_64 number), -1 when none or unknown.
    pub syscall: AtomicU64,
    /// Kernel function it sleeps in (`wchan`), NUL-padded.
    pub wchan: [AtomicU64; 4],
    /// Instruction addresses, innermost first; after the first, return addresses.
    pub frames: [AtomicU64; SAMPLE_FRAMES],
    /// For each of the first [`JS_FRAMES`] frames, the two words V8 keeps at that frame's frame
    /// pointer + [`V8Layout::off_fp_bytecode_array`] and `off_fp_bytecode_offset` (meaningful
    /// for interpreted JavaScript frames only); zero when unknown.
    pub js: [[AtomicU64; 2]; JS_FRAMES],
    /// Python frames in use in `py` (0 when the process runs no CPython the agent knows).
    pub npy: AtomicU64,
    /// The thread's Python frames, innermost first, as [`python::walk`] yields them (code
    /// object, position | [`python::ENTRY`]); looptop names them from the process's memory.
    pub py: [[AtomicU64; 2]; python::PY_FRAMES],
}

/// A copy of a loop thread's user stack taken with a watchdog sample, for looptop to unwind with
/// the binaries' CFI (code built without frame pointers). Valid when `seq` is the sample's index
/// + 1 (written first as 0, last as index + 1, before the sample itself).
#[repr(C)]
pub struct StackCopyEntry {
    /// Index + 1 of the sample this copy goes with; 0 while being written.
    pub seq: AtomicU64,
    /// Instruction pointer of the interrupted code.
    pub ip: AtomicU64,
    /// Stack pointer: the address of `words[0]`.
    pub sp: AtomicU64,
    /// Frame pointer (`rbp`).
    pub bp: AtomicU64,
    /// Bytes of `words` copied.
    pub len: AtomicU64,
    /// The stack from `sp` up.
    pub words: [AtomicU64; COPY_BYTES / 8],
}

/// One loop: a thread that waits in `epoll_wait`/`poll`.
#[repr(C)]
pub struct LoopSlot {
    /// Seqlock: odd while the owner updates the fields below, even when consistent.
    pub seq: AtomicU64,
    /// One of [`slot_state`].
    pub state: AtomicU32,
    /// Bumped on each claim, so a reader can tell a reused slot from the thread it knew.
    pub generation: AtomicU32,
    /// Thread id.
    pub tid: AtomicU32,
    /// Non-zero while the thread is inside a wait or sleep call the agent wraps: the watchdog
    /// never signals it then (a signal would cut the call short with `EINTR`).
    pub in_call: AtomicU32,
    /// Thread name at claim time, NUL-padded.
    pub name: [AtomicU64; NAME_LEN / 8],
    /// When the thread first waited (ns): the start of this loop's wall time.
    pub claimed_ns: AtomicU64,
    /// When the thread exited (ns), 0 while alive.
    pub ended_ns: AtomicU64,
    /// Completed ticks.
    pub ticks: AtomicU64,
    /// Σ busy time of completed ticks (ns).
    pub busy_ns: AtomicU64,
    /// Σ time inside wait calls (ns), completed waits only.
    pub idle_ns: AtomicU64,
    /// Longest completed tick (ns).
    pub max_busy_ns: AtomicU64,
    /// Start of the current tick (ns) while the thread is busy; 0 while it waits.
    pub busy_since_ns: AtomicU64,
    /// Start of the current wait (ns) while the thread waits; 0 while it is busy.
    pub wait_since_ns: AtomicU64,
    /// Lowest address of the thread's stack (for the watchdog's stack walk).
    pub stack_lo: AtomicU64,
    /// Highest address (exclusive) of the thread's stack.
    pub stack_hi: AtomicU64,
    /// Stalls written so far; entry `i` lives at `stalls[i % STALL_RING]`.
    pub stall_count: AtomicU64,
    /// Recent stalls.
    pub stalls: [StallEntry; STALL_RING],
    /// Busy time per tick, by [`hist_bucket`].
    pub hist: [AtomicU64; HIST_BUCKETS],
}

/// Byte offset of the event ring.
pub const EVENT_OFFSET: usize = core::mem::size_of::<Header>();
/// Byte offset of the probe channels.
pub const PROBE_OFFSET: usize = EVENT_OFFSET + EVENT_RING * RECORD_SIZE;
/// Byte offset of the stack sample ring.
pub const SAMPLE_OFFSET: usize = PROBE_OFFSET + PROBE_CHANNELS * PROBE_RING * RECORD_SIZE;
/// Size of a [`SampleEntry`].
pub const SAMPLE_SIZE: usize = core::mem::size_of::<SampleEntry>();
/// Byte offset of the stack copy ring ([`COPY_RING`] [`StackCopyEntry`]s).
pub const COPY_OFFSET: usize = SAMPLE_OFFSET + SAMPLE_RING * SAMPLE_SIZE;
/// Size of a [`StackCopyEntry`].
pub const COPY_SIZE: usize = core::mem::size_of::<StackCopyEntry>();
/// Byte offset of loop slot 0: the base (header and rings) ends here.
pub const SLOT_OFFSET: usize = (COPY_OFFSET + COPY_RING * COPY_SIZE + 4095) & !4095;
/// Size of a [`LoopSlot`].
pub const SLOT_SIZE: usize = core::mem::size_of::<LoopSlot>();
/// Largest size of a segment (every slot backed); the agent maps this much address space.
pub const SEGMENT_SIZE: usize = SLOT_OFFSET + LOOP_SLOTS * SLOT_SIZE;

/// Length of a segment file whose first `slots` slots are backed.
pub const fn backed_len(slots: usize) -> usize {
    SLOT_OFFSET + slots * SLOT_SIZE
}

// The segment is bounded, a process with one loop reserves about 1 MiB (a quarter of it the stack
// copies), and every slot stays 8-byte aligned.
const _: () = assert!(SEGMENT_SIZE < 4 << 20);
const _: () = assert!(backed_len(1) < 5 << 18);
const _: () = assert!(RECORD_SIZE == 64);
const _: () = assert!(SAMPLE_SIZE.is_multiple_of(8));
const _: () =
    assert!(core::mem::size_of::<Header>().is_multiple_of(8) && core::mem::size_of::<LoopSlot>().is_multiple_of(8));

/// Byte offset of loop slot `i` from the start of the segment.
pub const fn slot_offset(i: usize) -> usize {
    SLOT_OFFSET + i * SLOT_SIZE
}

impl LoopSlot {
    /// Opens a seqlock write section (single writer: the owning thread).
    #[inline]
    pub fn write_begin(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Release);
    }

    /// Closes a seqlock write section.
    #[inline]
    pub fn write_end(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Release);
    }

    /// Adds to a counter owned by this slot's single writer (a plain load and store: no locked
    /// instruction on the wait path).
    #[inline]
    pub fn bump(counter: &AtomicU64, by: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
    }

    /// Records a completed tick of `busy` ns that started at `start` (inside a write section).
    #[inline]
    pub fn record_tick(&self, start: u64, busy: u64, stall_floor: u64) {
        Self::bump(&self.ticks, 1);
        Self::bump(&self.busy_ns, busy);
        Self::bump(&self.hist[hist_bucket(busy)], 1);
        if busy > self.max_busy_ns.load(Ordering::Relaxed) {
            self.max_busy_ns.store(busy, Ordering::Relaxed);
        }
        if busy >= stall_floor {
            let n = self.stall_count.load(Ordering::Relaxed);
            let e = &self.stalls[(n % STALL_RING as u64) as usize];
            e.seq.store(0, Ordering::Relaxed);
            core::sync::atomic::fence(Ordering::Release);
            e.start_ns.store(start, Ordering::Relaxed);
            e.duration_ns.store(busy, Ordering::Relaxed);
            e.seq.store(n + 1, Ordering::Release);
            self.stall_count.store(n + 1, Ordering::Release);
        }
    }
}

impl Record {
    /// Writes this record as entry `index` of its ring (any number of writers, each with its own
    /// index): seq cleared, fields, then seq = index + 1.
    #[allow(clippy::too_many_arguments)]
    pub fn write(&self, index: u64, kind: u32, thread: u32, t_ns: u64, dur_ns: u64, a: u64, b: u64) {
        self.seq.store(0, Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Release);
        self.kind.store(kind, Ordering::Relaxed);
        self.thread.store(thread, Ordering::Relaxed);
        self.t_ns.store(t_ns, Ordering::Relaxed);
        self.dur_ns.store(dur_ns, Ordering::Relaxed);
        self.a.store(a, Ordering::Relaxed);
        self.b.store(b, Ordering::Relaxed);
        self.c.store(0, Ordering::Relaxed);
        self.d.store(0, Ordering::Relaxed);
        self.seq.store(index + 1, Ordering::Release);
    }
}

/// Reads a NUL-padded name stored in `u64` words.
pub fn name_from_words(words: &[AtomicU64; NAME_LEN / 8]) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    for (i, w) in words.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
    out
}

/// Stores a name (truncated to 15 bytes) into `u64` words.
pub fn name_to_words(name: &[u8], words: &[AtomicU64; NAME_LEN / 8]) {
    let mut buf = [0u8; NAME_LEN];
    let n = name.iter().position(|&b| b == 0).unwrap_or(name.len()).min(NAME_LEN - 1);
    buf[..n].copy_from_slice(&name[..n]);
    for (i, w) in words.iter().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn only_untimed_futex_waits_park() {
        assert!(futex_parks(0x89, 0), "FUTEX_WAIT_BITSET_PRIVATE, no timeout (Rust's std)");
        assert!(futex_parks(0, 0));
        assert!(futex_parks(0x80 | 0x100, 0));
        assert!(!futex_parks(0x89, 0x7ffc_0000), "a timed wait (a blocking pool's keep-alive)");
        assert!(!futex_parks(0x81, 0), "FUTEX_WAKE");
        assert!(!futex_parks(6, 0), "FUTEX_LOCK_PI");
    }

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut prev = 0;
        for ns in 0..200_000u64 {
            let b = hist_bucket(ns);
            assert!(b >= prev);
            prev = b;
        }
        for ns in (0..200_000u64).chain((0..2000).map(|i| (1u64 << (i % 44)) | (i * 7919))) {
            let b = hist_bucket(ns);
            let (lo, hi) = hist_bucket_range(b);
            if ns < (1 << (HIST_MAX_EXP + 1)) {
                assert!(lo <= ns && ns < hi, "{ns} not in bucket {b} [{lo},{hi})");
            }
        }
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn bucket_width_is_under_one_percent_from_1us_to_1h() {
        let mut ns = 1_000u64;
        while ns <= 3_600_000_000_000 {
            let (lo, hi) = hist_bucket_range(hist_bucket(ns));
            assert!(((hi - lo) as f64) / (lo as f64) <= 0.01, "bucket of {ns}: [{lo},{hi})");
            ns = ns * 11 / 10 + 1;
        }
    }

    /// The Node and Python probes read these header offsets directly (probes/node/probe.js,
    /// probes/python/looptop_probe.py): moving a field breaks them.
    #[test]
    fn header_offsets_the_probes_read() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(Header, magic), 0);
        assert_eq!(offset_of!(Header, version), 8);
        assert_eq!(offset_of!(Header, pid), 24);
        assert_eq!(offset_of!(Header, start_time_ticks), 32);
        assert_eq!(offset_of!(Header, probe_offset), 112);
        assert_eq!(offset_of!(Header, probe_channels), 120);
        assert_eq!(offset_of!(Header, probe_ring), 124);
        assert_eq!(offset_of!(Header, record_size), 128);
        assert_eq!(offset_of!(Record, seq), 0);
        assert_eq!(offset_of!(Record, kind), 8);
        assert_eq!(offset_of!(Record, t_ns), 16);
        assert_eq!(offset_of!(Record, d), 56);
        // The probes check the layout version themselves.
        let node = include_str!("../../node/probe.js");
        assert!(node.contains(&std::format!("readUInt32LE(8) !== {LAYOUT_VERSION} ")));
        let python = include_str!("../../python/looptop_probe.py");
        assert!(python.contains(&std::format!("unpack_from(\"<I\", h, 8)[0] != {LAYOUT_VERSION} ")));
    }

    #[test]
    fn names_round_trip() {
        let words: [AtomicU64; 2] = Default::default();
        name_to_words(b"node-worker-thread-long", &words);
        assert_eq!(&name_from_words(&words)[..15], b"node-worker-thr");
        assert_eq!(name_from_words(&words)[15], 0);
    }
}
