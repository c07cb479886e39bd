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
    pub blockers: Vec<BlockerSummary>,
    /// Stack samples taken (agent watchdog and perf).
    pub samples: u64,
    /// Stack samples the sources lost (a ring overrun, a signal not delivered in time).
    pub lost_samples: u64,
    /// Events lost (a reader that fell behind a ring).
    pub dropped_events: u64,
    /// What the user should know about this report (lost data, lines of a recording that could
    /// not be read), as printed on stderr.
    pub warnings: Vec<String>,
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
    /// looptop stopped the launched command itself (SIGTERM when its `-d` ran out, or `q` in the
    /// live view): the exit status answers that signal. Absent when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
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
    pub blocker: Option<Blocker>,
}

/// What a stall was doing, from the stacks sampled during it.
#[derive(Debug, Clone, Serialize)]
pub struct Blocker {
    /// Blocker kind (`regex`, `json-parse`, … `cpu`).
    pub kind: &'static str,
    /// Share of the stall's samples of that kind; for a stall called `gc` from the runtime's own
    /// pause times (`basis` `gc_pauses`), the share of the stall spent in GC.
    pub confidence: f64,
    /// What the kind rests on: `samples` (the stacks taken during the stall) or `gc_pauses`.
    pub basis: &'static str,
    /// The first user frame (JS function, Python function or native symbol).
    pub frame: String,
    /// Its `file:line:col`, where known.
    pub location: Option<String>,
    /// What the location's line is: `executing` (the line running when sampled: native code with
    /// line tables, or JavaScript that V8 ran in its interpreter, from the frame's bytecode
    /// position) or `function-start` (where the function begins: all V8's perf map names for
    /// compiled JavaScript); absent without a location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<&'static str>,
    /// The source line there, where the file was readable.
    pub source: Option<String>,
    /// Samples taken during the stall.
    pub samples: u64,
}

/// Stalls with the same blocker (kind and location).
#[derive(Debug, Clone, Serialize)]
pub struct BlockerSummary {
    /// Blocker kind.
    pub kind: &'static str,
    /// Stalls.
    pub count: u64,
    /// Σ their durations (ms).
    pub total_ms: f64,
    /// Longest (ms).
    pub max_ms: f64,
    /// The frame.
    pub frame: String,
    /// Its location, where known.
    pub location: Option<String>,
    /// The source line, where known.
    pub source: Option<String>,
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
    /// `minor`, `major`, `incremental`, `weakcb` (V8), `gen0`..`gen2` (CPython) or `young`,
    /// `full`, `concurrent` (the JVM's collectors).
    pub kind: &'static str,
    /// Process.
    pub pid: u32,
}

/// The thread pool (`pool`).
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    /// `libuv` or `python-executor`.
    pub kind: String,
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
    pub call: String,
    /// Bytes.
    pub size: u64,
}

impl Report {
    /// All stalls of all loops, with their loop.
    pub fn stalls(&self) -> impl Iterator<Item = (&LoopReport, &Stall)> {
        self.loops.iter().flat_map(|l| l.stalls.iter().map(move |s| (l, s)))
    }

    /// The report with its `blockers` filled in.
    pub fn with_blockers(mut self) -> Self {
        self.aggregate_blockers();
        self
    }

    /// Aggregates the stalls' blockers by (kind, location), worst (most total time) first.
    pub fn aggregate_blockers(&mut self) {
        let mut out: Vec<BlockerSummary> = Vec::new();
        for (_, s) in self.stalls() {
            let Some(b) = &s.blocker else { continue };
            let key = b.location.as_ref().unwrap_or(&b.frame);
            match out.iter_mut().find(|o| o.kind == b.kind && o.location.as_ref().unwrap_or(&o.frame) == key) {
                Some(o) => {
                    o.count += 1;
                    o.total_ms += s.duration_ms;
                    o.max_ms = o.max_ms.max(s.duration_ms);
                }
                None => out.push(BlockerSummary {
                    kind: b.kind,
                    count: 1,
                    total_ms: s.duration_ms,
                    max_ms: s.duration_ms,
                    frame: b.frame.clone(),
                    location: b.location.clone(),
                    source: b.source.clone(),
                }),
            }
        }
        out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        self.blockers = out;
    }
}
