//! The events every source produces and [`crate::analysis::Session`] consumes.
//!
//! Times are nanoseconds of `CLOCK_MONOTONIC`, the clock of the agent's segment, so events from
//! different processes and sources line up. Events serialize as one JSON object each (the lines of
//! a recording, `source::recording`).

use serde::{Deserialize, Serialize};

/// One loop: a thread of a process, and when it first waited (a tid can be reused, and a process
/// that `exec`s starts its loops again under the same pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LoopId {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// When the thread first waited (ns).
    pub since_ns: u64,
}

/// Cumulative counters of one loop, as the agent keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopTotals {
    /// When these totals were read (ns).
    pub at_ns: u64,
    /// Completed ticks.
    pub ticks: u64,
    /// Σ busy time of completed ticks (ns).
    pub busy_ns: u64,
    /// Σ time inside wait calls (ns).
    pub idle_ns: u64,
    /// Longest completed tick (ns).
    pub max_busy_ns: u64,
    /// Start of the current tick while busy, 0 while waiting.
    pub busy_since_ns: u64,
    /// Completed ticks by busy time, in the agent's log-linear buckets
    /// ([`looptop_abi::hist_bucket`]).
    #[serde(with = "sparse")]
    pub hist: Box<[u64]>,
}

/// A process looptop observes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Command line (from `/proc`), or the executable when the process is gone.
    pub command: Vec<String>,
    /// Executable path.
    pub exe: String,
    /// When its agent started (ns).
    pub start_ns: u64,
}

/// Something a source saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// A process with an agent appeared.
    Process(ProcessInfo),
    /// A thread waited for the first time: a loop.
    LoopStarted {
        /// Which loop.
        id: LoopId,
        /// Thread name.
        name: String,
        /// When it first waited (ns).
        start_ns: u64,
    },
    /// The loop's cumulative counters now (supersede earlier totals).
    Totals {
        /// Which loop.
        id: LoopId,
        /// The counters.
        totals: LoopTotals,
    },
    /// A completed tick at least as long as the source's stall floor.
    Stall {
        /// Which loop.
        id: LoopId,
        /// Tick start (ns).
        start_ns: u64,
        /// Busy time (ns).
        duration_ns: u64,
    },
    /// The loop's thread ended.
    LoopEnded {
        /// Which loop.
        id: LoopId,
        /// When (ns).
        at_ns: u64,
        /// The thread left on its own (thread exit, `exit()`, `exec`); false when its process
        /// died without running exit handlers (a signal, `_exit`).
        clean: bool,
    },
    /// The process ended.
    ProcessExited {
        /// Process id.
        pid: u32,
        /// When (ns).
        at_ns: u64,
        /// Its exit handlers ran (`exit()`); false when killed by a signal or `_exit`.
        clean: bool,
    },
    /// A runtime probe started in a process: its GC pauses are visible from now on.
    ProbeReady {
        /// Process id.
        pid: u32,
    },
    /// A stop-the-world GC pause.
    Gc {
        /// Process id.
        pid: u32,
        /// Runtime thread: Node's `threadId` (0 = main thread), the OS thread id (Python), or
        /// [`GC_ALL_THREADS`] (the JVM).
        thread: u32,
        /// Start (ns).
        start_ns: u64,
        /// Duration (ns).
        duration_ns: u64,
        /// What kind of collection.
        kind: GcKind,
    },
    /// A slow allocator call on a loop thread.
    Alloc {
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// Start (ns).
        start_ns: u64,
        /// Duration (ns).
        duration_ns: u64,
        /// `mmap`, `munmap`, `madvise`, `mremap`, `brk` or `sbrk`.
        call: String,
        /// Bytes asked for or released.
        size: u64,
    },
    /// Which thread pool a process has, and its size.
    PoolKind {
        /// Process id.
        pid: u32,
        /// `libuv` or `python-executor`.
        kind: String,
        /// Workers.
        size: u64,
    },
    /// Thread-pool state at an instant.
    PoolSample {
        /// Process id.
        pid: u32,
        /// When (ns).
        at_ns: u64,
        /// Workers.
        size: u64,
        /// Items submitted and not completed.
        in_flight: u64,
        /// Most items waiting for a worker since the previous sample.
        queued_max: u64,
    },
    /// Thread-pool items that waited between `low_ns` and `high_ns` for a worker.
    PoolWaits {
        /// Process id.
        pid: u32,
        /// Bucket start (ns).
        low_ns: u64,
        /// Bucket end (ns).
        high_ns: u64,
        /// Items.
        count: u64,
        /// Longest wait among them (ns).
        max_ns: u64,
        /// When the batch was written (ns; 0: not known, and counted wherever it falls).
        #[serde(default, skip_serializing_if = "is_zero")]
        at_ns: u64,
    },
    /// A stack sampled from a thread.
    Sample(Sample),
    /// Events the source could not deliver (a reader that fell behind a ring).
    Dropped {
        /// How many.
        count: u64,
    },
}

/// The `thread` of a GC pause that stops every thread of its process (the JVM's safepoints).
pub const GC_ALL_THREADS: u32 = u32::MAX;

/// Kinds of GC pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GcKind {
    /// V8 scavenge.
    Minor,
    /// V8 mark-compact.
    Major,
    /// V8 incremental marking step.
    Incremental,
    /// V8 weak callbacks processing.
    WeakCallbacks,
    /// CPython collection of a generation.
    Generation(u8),
    /// A JVM collector's pause of the young generation (G1 young, Parallel's scavenge, Serial's copy).
    Young,
    /// A JVM collector's full collection.
    Full,
    /// A JVM collector's pause within a concurrent collection (G1's remark and cleanup,
    /// Shenandoah's and ZGC's pauses).
    Concurrent,
    /// Not told.
    Unknown,
}

impl GcKind {
    /// From a probe record's code ([`looptop_abi::record_kind::GC`]).
    pub fn from_code(code: u64) -> Self {
        match code {
            1 => GcKind::Minor,
            2 => GcKind::Major,
            4 => GcKind::Incremental,
            8 => GcKind::WeakCallbacks,
            16..=18 => GcKind::Generation((code - 16) as u8),
            _ => GcKind::Unknown,
        }
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            GcKind::Minor => "minor",
            GcKind::Major => "major",
            GcKind::Incremental => "incremental",
            GcKind::WeakCallbacks => "weakcb",
            GcKind::Generation(0) => "gen0",
            GcKind::Generation(1) => "gen1",
            GcKind::Generation(_) => "gen2",
            GcKind::Young => "young",
            GcKind::Full => "full",
            GcKind::Concurrent => "concurrent",
            GcKind::Unknown => "unknown",
        }
    }
}

/// Which mechanism took a [`Sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SampleOrigin {
    /// The agent's watchdog, during a stall in progress (signal and frame-pointer walk, or a
    /// stack scan of a thread that sleeps).
    Watchdog,
    /// A perf `cpu-clock` sample: the thread was on a CPU.
    PerfCpu,
    /// A perf `sched_switch`: the thread left the CPU to wait.
    PerfOffCpu,
    /// Counted in the kernel between two reads (the BPF source): no instant of its own, so never
    /// part of a stall; `weight_ns` is the on-CPU samples' periods, or the time off the CPU.
    KernelCount,
}

/// Why a thread was off-CPU when sampled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OffCpu {
    /// The system call it waits in (x86_64 number), when known.
    pub syscall: Option<i64>,
    /// The kernel function it sleeps in (`/proc/.../wchan`, e.g. `futex_wait_queue`), when known.
    pub wchan: Option<String>,
}

/// One stack of one thread at an instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// When (ns).
    pub t_ns: u64,
    /// What took it.
    pub origin: SampleOrigin,
    /// Time this sample stands for (ns): the sampling period for on-CPU samples, how long the
    /// thread stayed off the CPU for an off-CPU one.
    pub weight_ns: u64,
    /// Start of the tick it was taken in (ns) when the source knows it (the watchdog), else 0.
    pub tick_ns: u64,
    /// Set when the thread was off-CPU.
    pub off_cpu: Option<OffCpu>,
    /// Instruction addresses, innermost first: kernel addresses (at or above
    /// [`KERNEL_ADDRESS_MIN`]) come before user ones when both are present.
    pub ips: Vec<u64>,
    /// Samples it stands for: 1, or the on-CPU samples of this stack that the kernel counted
    /// between two reads ([`SampleOrigin::KernelCount`]).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    /// What V8 kept in each of the innermost frames: an interpreted JavaScript frame's bytecode
    /// array and offset (watchdog samples of a process whose agent knows V8's layout), innermost
    /// first, zero where none were kept; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub js: Vec<[u64; 2]>,
    /// The thread's Python frames, innermost first, as `looptop_abi::python::walk` yields them
    /// (code object, position | entry flag): from the agent's watchdog, or read by looptop
    /// from the process while the stall it belongs to runs; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub py: Vec<[u64; 2]>,
    /// A copy of the thread's user stack, when the source took one: the pipeline unwinds it
    /// with the binaries' CFI into the user part of `ips` (frame pointers lie in code built
    /// without them) and drops it; never recorded.
    #[serde(skip)]
    pub stack: Option<Box<UserStack>>,
}

/// A copy of a thread's user stack from its stack pointer up, with the registers unwinding
/// starts from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserStack {
    /// Instruction pointer in user space.
    pub ip: u64,
    /// Stack pointer: the address of `bytes[0]`.
    pub sp: u64,
    /// Frame pointer (`rbp`).
    pub bp: u64,
    /// The stack's bytes from `sp` up.
    pub bytes: Vec<u8>,
}

/// Serde's default sample count.
pub fn one() -> u64 {
    1
}

/// Serde helper: a field of 0 (not known) is left out of JSON.
pub fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether a sample count is the default (left out of JSON).
pub fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Addresses at or above this are kernel addresses (x86_64 and aarch64 higher half).
pub const KERNEL_ADDRESS_MIN: u64 = 0xffff_8000_0000_0000;

/// A histogram as `[[bucket, count], …]` for its non-zero buckets.
mod sparse {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(hist: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(usize, u64)> = hist.iter().enumerate().filter(|(_, &c)| c != 0).map(|(i, &c)| (i, c)).collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[u64]>, D::Error> {
        let pairs = Vec::<(usize, u64)>::deserialize(d)?;
        // As long as its last non-zero bucket needs (readers take missing buckets as zero): a
        // recording holds many loops' totals, most with their ticks in the first buckets.
        let len = pairs.iter().filter(|&&(i, c)| c != 0 && i < looptop_abi::HIST_BUCKETS).map(|&(i, _)| i + 1).max();
        let mut hist = vec![0u64; len.unwrap_or(0)];
        for (i, c) in pairs {
            if let Some(h) = hist.get_mut(i) {
                *h = c;
            }
        }
        Ok(hist.into_boxed_slice())
    }
}
