//! What one frame of the live view shows: plain data built from the session, so that drawing is a
//! function of it (and is tested on fixed data).

use crate::analysis::history::LagHistory;
use crate::analysis::report::{BlockerSummary, Report, Target};
use crate::analysis::Session;
use crate::event::LoopId;

/// Facts about the observation the session does not hold.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Process observed.
    pub pid: u32,
    /// Its command line.
    pub command: Vec<String>,
    /// perf stack samples per second (0: none).
    pub rate_hz: u64,
    /// The recording being written, if any.
    pub recording: Option<String>,
    /// Set once observation ended ("process 4242 exited after 12.3 s (status 0)").
    pub ended: Option<String>,
    /// Things the user should know (perf off, lost records).
    pub warnings: Vec<String>,
}

/// The header line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// Process observed.
    pub pid: u32,
    /// Its command line.
    pub command: String,
    /// `node`, `python` or `native`.
    pub runtime: String,
    /// `agent`, `perf` or `agent+perf`.
    pub mode: String,
    /// Seconds observed.
    pub uptime_s: f64,
    /// perf stack samples per second (0: none).
    pub rate_hz: u64,
    /// Stack samples lost.
    pub lost_samples: u64,
    /// Events dropped.
    pub dropped_events: u64,
    /// Stall threshold (ms).
    pub threshold_ms: f64,
    /// The recording being written.
    pub recording: Option<String>,
    /// How observation ended, once it has.
    pub ended: Option<String>,
    /// Warnings to show under the header.
    pub warnings: Vec<String>,
}

/// A loop stuck right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    /// Process.
    pub pid: u32,
    /// Thread.
    pub tid: u32,
    /// Thread name.
    pub name: String,
    /// How long so far (ms).
    pub for_ms: f64,
    /// What it is doing, from the samples so far: kind, frame, location.
    pub blocker: Option<(String, String, Option<String>)>,
}

/// One row of the loops table.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopRow {
    /// Which loop.
    pub id: LoopId,
    /// Thread name.
    pub name: String,
    /// Busy share of its life.
    pub utilization: f64,
    /// Ticks per second lately.
    pub ticks_per_s: f64,
    /// Lag percentiles over its life (ms).
    pub lag_p50: f64,
    /// 99th.
    pub lag_p99: f64,
    /// Longest.
    pub lag_max: f64,
    /// Stalls.
    pub stalls: usize,
    /// Its thread still runs.
    pub alive: bool,
    /// Its lag second by second, oldest first: (seconds before now, p99 ms, max ms).
    pub chart: Vec<(f64, f64, f64)>,
}

/// One row of the stalls table.
#[derive(Debug, Clone, PartialEq)]
pub struct StallRow {
    /// Process.
    pub pid: u32,
    /// Thread.
    pub tid: u32,
    /// Start (ns, the session's clock).
    pub start_ns: u64,
    /// Start (seconds since observation began).
    pub at_s: f64,
    /// Duration (ms).
    pub duration_ms: f64,
    /// Still under way.
    pub in_progress: bool,
    /// GC share (ms), where known.
    pub gc_ms: Option<f64>,
    /// Blocker kind, frame, location and source line.
    pub kind: Option<String>,
    /// The first user frame.
    pub frame: Option<String>,
    /// Its `file:line:col`.
    pub location: Option<String>,
    /// The source line there.
    pub source: Option<String>,
}

/// The GC line.
#[derive(Debug, Clone, PartialEq)]
pub struct GcRow {
    /// Pauses per second over the last [`RECENT_S`] seconds.
    pub per_s: f64,
    /// Longest of those (ms).
    pub recent_max_ms: f64,
    /// Pauses in all.
    pub count: u64,
    /// Longest ever (ms).
    pub max_ms: f64,
    /// Σ pauses (ms).
    pub total_ms: f64,
}

/// The thread-pool line.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRow {
    /// `libuv` or `python-executor`.
    pub kind: String,
    /// Workers.
    pub size: u64,
    /// Busy now.
    pub busy: u64,
    /// Waiting for a worker now.
    pub queued: u64,
    /// Most waiting at once.
    pub queued_max: u64,
    /// Wait p99 (ms).
    pub wait_p99_ms: f64,
    /// Longest wait (ms).
    pub wait_max_ms: f64,
}

/// Everything one frame shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The header.
    pub header: Header,
    /// Loops stuck now, longest first.
    pub stuck: Vec<Stuck>,
    /// Loops, busiest first.
    pub loops: Vec<LoopRow>,
    /// Stalls, newest first.
    pub stalls: Vec<StallRow>,
    /// Blockers, worst first.
    pub blockers: Vec<BlockerSummary>,
    /// GC, where a probe sees it.
    pub gc: Option<GcRow>,
    /// The thread pool, where a probe sees it.
    pub pool: Option<PoolRow>,
}

/// Seconds of the GC rate window.
pub const RECENT_S: u64 = 10;
/// Stalls listed at most.
const MAX_STALLS: usize = 200;

impl Snapshot {
    /// The view of `session` at `now_ns`.
    pub fn build(session: &Session, history: &LagHistory, live: &Live, now_ns: u64) -> Snapshot {
        let target = Target {
            pid: live.pid,
            command: live.command.clone(),
            runtime: session.runtime(),
            exit_code: None,
            stopped: false,
        };
        let report = session.report(target, now_ns);
        let origin = session.origin_ns();
        let header = Header {
            pid: live.pid,
            command: short_command(&live.command),
            runtime: report.target.runtime.to_string(),
            mode: if live.rate_hz > 0 && report.mode == "agent" && session.stacks().any_perf() {
                "agent+perf".into()
            } else {
                report.mode.to_string()
            },
            uptime_s: report.wall_ms / 1e3,
            rate_hz: live.rate_hz,
            lost_samples: report.lost_samples,
            dropped_events: report.dropped_events,
            threshold_ms: report.stall_threshold_ms,
            recording: live.recording.clone(),
            ended: live.ended.clone(),
            warnings: live.warnings.clone(),
        };
        Snapshot {
            header,
            stuck: stuck(&report),
            loops: loops(&report, session, history, now_ns),
            stalls: stalls(&report, origin),
            blockers: report.blockers.clone(),
            gc: report.gc.as_ref().map(|g| {
                let (n, max) = session.gc_since(now_ns.saturating_sub(RECENT_S * 1_000_000_000));
                let window = (RECENT_S as f64).min(report.wall_ms / 1e3).max(1.0);
                GcRow {
                    per_s: n as f64 / window,
                    recent_max_ms: max as f64 / 1e6,
                    count: g.count,
                    max_ms: g.max_ms,
                    total_ms: g.total_ms,
                }
            }),
            pool: report.pool.as_ref().map(|p| {
                let (busy, queued) = session.pool_now().unwrap_or((0, 0));
                PoolRow {
                    kind: p.kind.clone(),
                    size: p.size,
                    busy,
                    queued,
                    queued_max: p.queued_max,
                    wait_p99_ms: p.wait_ms.p99,
                    wait_max_ms: p.wait_ms.max,
                }
            }),
        }
    }
}

fn stuck(report: &Report) -> Vec<Stuck> {
    let mut out: Vec<Stuck> = report
        .loops
        .iter()
        .flat_map(|l| l.stalls.iter().filter(|s| s.in_progress).map(move |s| (l, s)))
        .map(|(l, s)| Stuck {
            pid: l.pid,
            tid: l.tid,
            name: l.name.clone(),
            for_ms: s.duration_ms,
            blocker: s.blocker.as_ref().map(|b| (b.kind.to_string(), b.frame.clone(), b.location.clone())),
        })
        .collect();
    out.sort_by(|a, b| b.for_ms.total_cmp(&a.for_ms));
    out
}

fn loops(report: &Report, session: &Session, history: &LagHistory, now_ns: u64) -> Vec<LoopRow> {
    let ids: Vec<_> = session.loops().map(|l| (l.id, l.alive)).collect();
    let mut rows: Vec<LoopRow> = report
        .loops
        .iter()
        .zip(ids)
        .map(|(l, (id, alive))| LoopRow {
            id,
            name: l.name.clone(),
            utilization: l.utilization,
            ticks_per_s: history.ticks_per_s(&id),
            lag_p50: l.lag_ms.p50,
            lag_p99: l.lag_ms.p99,
            lag_max: l.lag_ms.max,
            stalls: l.stalls.len(),
            alive,
            chart: history
                .points(&id)
                .map(|p| (now_ns.saturating_sub(p.end_ns) as f64 / 1e9, p.p99_ns / 1e6, p.max_ns / 1e6))
                .collect(),
        })
        .collect();
    // Live loops first, then the busiest: the main loop of a server is at the top.
    rows.sort_by(|a, b| b.alive.cmp(&a.alive).then(b.utilization.total_cmp(&a.utilization)).then(a.id.cmp(&b.id)));
    rows
}

fn stalls(report: &Report, origin_ns: u64) -> Vec<StallRow> {
    let mut rows: Vec<StallRow> = report
        .stalls()
        .map(|(l, s)| StallRow {
            pid: l.pid,
            tid: l.tid,
            start_ns: (s.start_ms * 1e6 + origin_ns as f64).round() as u64,
            at_s: s.start_ms / 1e3,
            duration_ms: s.duration_ms,
            in_progress: s.in_progress,
            gc_ms: s.gc_ms,
            kind: s.blocker.as_ref().map(|b| b.kind.to_string()),
            frame: s.blocker.as_ref().map(|b| b.frame.clone()),
            location: s.blocker.as_ref().and_then(|b| b.location.clone()),
            source: s.blocker.as_ref().and_then(|b| b.source.clone()),
        })
        .collect();
    rows.sort_by(|a, b| b.at_s.total_cmp(&a.at_s));
    rows.truncate(MAX_STALLS);
    rows
}

/// A command line for the header: paths shortened to their last part, at most 48 characters.
fn short_command(command: &[String]) -> String {
    let words: Vec<&str> =
        command.iter().map(|w| if w.starts_with('/') { super::draw::short_path(w) } else { w.as_str() }).collect();
    let line = words.join(" ");
    if line.chars().count() > 48 {
        format!("{}…", line.chars().take(47).collect::<String>())
    } else {
        line
    }
}
