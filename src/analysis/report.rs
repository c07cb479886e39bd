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
    pub gc: Option<serde_json::Value>,
    /// Thread pool; `null` where the source cannot see it.
    pub pool: Option<serde_json::Value>,
    /// Allocator pauses; `null` where the source cannot see them.
    pub alloc: Option<serde_json::Value>,
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
    /// What blocked the loop; `null` where no stack was captured.
    pub blocker: Option<serde_json::Value>,
}

impl Report {
    /// All stalls of all loops, with their loop.
    pub fn stalls(&self) -> impl Iterator<Item = (&LoopReport, &Stall)> {
        self.loops.iter().flat_map(|l| l.stalls.iter().map(move |s| (l, s)))
    }
}
