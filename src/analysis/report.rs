//! The report (`looptop.report/1`, DESIGN.md): what every summary, JSON and budget sink renders.

use serde::Serialize;

/// Schema name of [`Report`].
pub const SCHEMA: &str = "looptop.report/1";

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// What was observed.
    pub target: Target,
    /// Source: `agent` (later also `perf`).
    pub mode: &'static str,
    /// Observed wall time (ms).
    pub wall_ms: f64,
    /// Stall threshold (ms).
    pub stall_threshold_ms: f64,
    /// Every loop seen.
    pub loops: Vec<LoopReport>,
    /// GC pauses; `null` where the source cannot see them.
    pub gc: Option<GcReport>,
    /// Thread pool; `null` where the source cannot see it.
    pub pool: Option<PoolReport>,
    /// Allocator pauses; `null` where the source cannot see them.
    pub alloc: Option<AllocReport>,
    /// Stalls aggregated by (kind, location), worst first.
    pub blockers: Vec<serde_json::Value>,
    /// Events lost (a reader that fell behind a ring).
    pub dropped_events: u64,
}

/// The observed process.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Pid of the process looptop launched or attached to.
    pub pid: u32,
    /// Its command line.
    pub command: Vec<String>,
    /// `node`, `python` or `native`.
    pub runtime: &'static str,
    /// Exit status (128+signal when killed), `null` while running.
    pub exit_code: Option<i32>,
}

/// One loop.
#[derive(Debug, Clone, Serialize)]
pub struct LoopReport {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub name: String,
    /// Completed ticks.
    pub ticks: u64,
    /// Σ busy / wall over the loop's life.
    pub utilization: f64,
    /// Per-tick percentiles (ms).
    pub tick_ms: TickPercentiles,
    /// Time-weighted lag percentiles (ms).
    pub lag_ms: LagPercentiles,
    /// Stalls, by start.
    pub stalls: Vec<Stall>,
}

/// Per-tick percentiles (ms).
#[derive(Debug, Clone, Serialize)]
pub struct TickPercentiles {
    /// Median tick.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Longest.
    pub max: f64,
}

/// Time-weighted lag percentiles (ms).
#[derive(Debug, Clone, Serialize)]
pub struct LagPercentiles {
    /// Median lag.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Longest.
    pub max: f64,
}

/// One stall.
#[derive(Debug, Clone, Serialize)]
pub struct Stall {
    /// Start (ms since looptop began observing).
    pub start_ms: f64,
    /// Busy time (ms); for a stall in progress, so far.
    pub duration_ms: f64,
    /// Still running when the report was made.
    pub in_progress: bool,
    /// Milliseconds of the stall spent in GC pauses; `null` where GC is not visible.
    pub gc_ms: Option<f64>,
    /// What blocked the loop; `null` where no stack was captured.
    pub blocker: Option<serde_json::Value>,
}

/// GC pauses (`gc`).
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// Pauses.
    pub count: u64,
    /// Σ pause time (ms).
    pub total_ms: f64,
    /// Longest pause (ms).
    pub max_ms: f64,
    /// Every pause.
    pub pauses: Vec<GcPause>,
}

/// One GC pause.
#[derive(Debug, Clone, Serialize)]
pub struct GcPause {
    /// Start (ms since looptop began observing).
    pub start_ms: f64,
    /// Duration (ms).
    pub duration_ms: f64,
    /// `minor`, `major`, `incremental`, `weakcb` (V8) or `gen0`..`gen2` (CPython).
    pub kind: &'static str,
    /// Process.
    pub pid: u32,
}

/// The thread pool (`pool`).
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    /// `libuv` or `python-executor`.
    pub kind: &'static str,
    /// Workers.
    pub size: u64,
    /// Most workers busy at once.
    pub busy_max: u64,
    /// Most items waiting for a worker at once.
    pub queued_max: u64,
    /// How long items waited for a worker (ms).
    pub wait_ms: PoolWaitMs,
    /// Items seen.
    pub items: u64,
}

/// Pool wait percentiles (ms).
#[derive(Debug, Clone, Serialize)]
pub struct PoolWaitMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Longest.
    pub max: f64,
}

/// Allocator pauses (`alloc`).
#[derive(Debug, Clone, Serialize)]
pub struct AllocReport {
    /// Pauses.
    pub count: u64,
    /// Σ (ms).
    pub total_ms: f64,
    /// Longest (ms).
    pub max_ms: f64,
    /// Every pause.
    pub pauses: Vec<AllocPause>,
}

/// One allocator pause.
#[derive(Debug, Clone, Serialize)]
pub struct AllocPause {
    /// Process.
    pub pid: u32,
    /// Thread.
    pub tid: u32,
    /// Start (ms since looptop began observing).
    pub start_ms: f64,
    /// Duration (ms).
    pub duration_ms: f64,
    /// The call.
    pub call: &'static str,
    /// Bytes.
    pub size: u64,
}

impl Report {
    /// All stalls of all loops, with their loop.
    pub fn stalls(&self) -> impl Iterator<Item = (&LoopReport, &Stall)> {
        self.loops.iter().flat_map(|l| l.stalls.iter().map(move |s| (l, s)))
    }
}
