//! A session's sampled stacks as a [`Profile`]: every sample, or only those taken inside stalls,
//! for `looptop flame` and the live view's flamegraph keys.

use super::Profile;
use crate::analysis::stacks::StoredSample;
use crate::analysis::Session;
use crate::event::SampleOrigin;
use crate::symbolize::{Frame, FrameKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The stacks of a session as a flamegraph profile. Where perf sampled a process, its samples
/// are drawn and the watchdog's (taken during stalls only) are left out, so stalls are not
/// counted twice; elsewhere the watchdog's are what there is.
///
/// Samples taken before `since_ns` are left out (0: none is).
pub fn build_profile(
    session: &Session,
    command: &[String],
    since_ns: u64,
    end_ns: u64,
    rate_hz: u64,
    stalls_only: bool,
) -> Profile {
    let stacks = session.stacks();
    let spans = session.stall_spans(end_ns);
    let mut by_thread: BTreeMap<(u32, u32), Vec<(u64, u64)>> = BTreeMap::new();
    for &(pid, tid, start, dur) in &spans {
        by_thread.entry((pid, tid)).or_default().push((start, start.saturating_add(dur)));
    }
    let perf_pids: BTreeSet<u32> =
        stacks.threads().filter(|t| t.2.iter().any(|s| s.origin != SampleOrigin::Watchdog)).map(|t| t.0).collect();
    let mut frames: Vec<Frame> = stacks.frames().to_vec();
    let mut extra: HashMap<String, u32> = HashMap::new();
    let mut merged: HashMap<Vec<u32>, u64> = HashMap::new();
    for (pid, tid, samples) in stacks.threads() {
        let spans = by_thread.get(&(pid, tid)).map_or(&[][..], |v| v.as_slice());
        for s in samples {
            if s.origin == SampleOrigin::Watchdog && perf_pids.contains(&pid) {
                continue;
            }
            if s.t_ns < since_ns || (stalls_only && !in_stall(s, spans)) {
                continue;
            }
            let mut stack: Vec<u32> = s.stack.iter().rev().copied().collect();
            if let Some(off) = &s.off_cpu {
                let name = match (&off.wchan, off.syscall) {
                    (Some(w), _) => format!("[off-CPU: {w}]"),
                    (None, Some(nr)) => format!("[off-CPU: syscall {nr}]"),
                    _ => "[off-CPU]".to_string(),
                };
                let id = *extra.entry(name.clone()).or_insert_with(|| {
                    frames.push(Frame { kind: FrameKind::Kernel, ..Frame::unknown(None) }.renamed(name));
                    frames.len() as u32 - 1
                });
                stack.push(id);
            }
            let w = merged.entry(stack).or_default();
            *w = w.saturating_add(weight(s, rate_hz));
        }
    }
    let samples = merged.values().fold(0, |n: u64, &w| n.saturating_add(w));
    let mut stacks_out: Vec<(Vec<u32>, u64)> = merged.into_iter().collect();
    stacks_out.sort();
    let from = since_ns.max(session.origin_ns());
    let wall_s = end_ns.saturating_sub(from) as f64 / 1e9;
    let stalls = spans.iter().filter(|s| s.3 >= session.threshold_ns() && s.2.saturating_add(s.3) >= from).count();
    Profile {
        title: format!("looptop: {}", command.join(" ")),
        subtitle: format!(
            "{wall_s:.1} s · {samples} samples · {stalls} stall{}{}",
            if stalls == 1 { "" } else { "s" },
            if stalls_only { " (stalls only)" } else { "" }
        ),
        frames,
        stacks: stacks_out,
    }
}

/// The perf sample rate behind a session's stacks: `rate_hz` when perf sampled, else 0 (the
/// watchdog's samples only).
pub fn perf_rate(session: &Session, rate_hz: u64) -> u64 {
    if session.stacks().any_perf() {
        rate_hz
    } else {
        0
    }
}

/// Whether a sample lies inside one of its thread's stalls (the watchdog's by its tick).
fn in_stall(s: &StoredSample, spans: &[(u64, u64)]) -> bool {
    match s.origin {
        SampleOrigin::Watchdog => spans.iter().any(|&(start, _)| start == s.tick_ns),
        SampleOrigin::KernelCount => false,
        _ => spans.iter().any(|&(start, end)| s.t_ns >= start && s.t_ns <= end),
    }
}

/// Off-CPU time in sampling periods (at least one).
fn off_cpu_periods(ns: u64, rate_hz: u64) -> u64 {
    ((ns as f64 * rate_hz as f64 / 1e9).round() as u64).max(1)
}

/// Samples a stored sample counts for: its count (1, or what the kernel counted), or its
/// off-CPU time in sampling periods.
fn weight(s: &StoredSample, rate_hz: u64) -> u64 {
    match s.origin {
        SampleOrigin::PerfOffCpu if rate_hz > 0 => off_cpu_periods(s.weight_ns, rate_hz),
        SampleOrigin::KernelCount if s.off_cpu.is_some() && rate_hz > 0 => off_cpu_periods(s.weight_ns, rate_hz),
        _ => s.count.max(1),
    }
}
