//! A session's sampled stacks as a [`Profile`]: every sample, or only those taken inside stalls,
//! for `looptop flame` and the live view's flamegraph keys.

use super::{Profile, Timeline};
use crate::analysis::stacks::{FoldKey, Folded};
use crate::analysis::Session;
use crate::event::{OffCpu, SampleOrigin};
use crate::symbolize::{Frame, FrameKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Which time a flamegraph shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Time {
    /// On-CPU samples only: where the threads spent CPU (the default of the everything-graph).
    #[default]
    Cpu,
    /// On-CPU and off-CPU (blocked, sleeping) time: wall-clock (the default of `--stalls-only`:
    /// a loop blocked in a sleep or a lock is blocked all the same).
    Wall,
    /// Off-CPU time only: where the threads waited.
    OffCpu,
}

impl Time {
    /// As `--time` names it.
    pub fn name(self) -> &'static str {
        match self {
            Time::Cpu => "on-CPU",
            Time::Wall => "wall-clock",
            Time::OffCpu => "off-CPU",
        }
    }
}

/// What [`build_profile`] draws.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    /// Samples taken before this are left out (0: none is).
    pub since_ns: u64,
    /// The end of the observation.
    pub end_ns: u64,
    /// The perf sampling rate (0: the watchdog's samples only).
    pub rate_hz: u64,
    /// Only samples taken inside stalls.
    pub stalls_only: bool,
    /// Which time (None: wall-clock for stalls only, on-CPU otherwise).
    pub time: Option<Time>,
}

impl Draw {
    /// Every sample from `since_ns` to `end_ns` (or only those in stalls), in the default time.
    pub fn new(since_ns: u64, end_ns: u64, rate_hz: u64, stalls_only: bool) -> Draw {
        Draw { since_ns, end_ns, rate_hz, stalls_only, time: None }
    }

    /// The time drawn.
    pub fn time(&self) -> Time {
        self.time.unwrap_or(if self.stalls_only { Time::Wall } else { Time::Cpu })
    }
}

/// The stacks of a session as a flamegraph profile: one root per thread role (the main loop, each
/// other loop, the libuv pool, V8's platform threads, the rest), never the agent's own watchdog
/// thread. Where perf sampled a process, its samples are drawn and the watchdog's (taken during
/// stalls only) are left out, so stalls are not counted twice; elsewhere the watchdog's are what
/// there is. Samples the session folded into counts (the older part of a long run) are drawn when
/// the profile starts before them; each thread's samples not folded are also kept in time order
/// ([`Profile::threads`]).
pub fn build_profile(session: &Session, command: &[String], draw: &Draw) -> Profile {
    let Draw { since_ns, end_ns, rate_hz, stalls_only, .. } = *draw;
    let time = draw.time();
    let stacks = session.stacks();
    let spans = session.stall_spans(end_ns);
    let mut by_thread: BTreeMap<(u32, u32), Vec<(u64, u64)>> = BTreeMap::new();
    for &(pid, tid, start, dur) in &spans {
        by_thread.entry((pid, tid)).or_default().push((start, start.saturating_add(dur)));
    }
    let (folded, folded_from) = stacks.folded();
    let folded: Vec<(&FoldKey, &Folded)> = if since_ns <= folded_from { folded.iter().collect() } else { Vec::new() };
    let mut perf_pids: BTreeSet<u32> =
        stacks.threads().filter(|t| t.2.iter().any(|s| s.origin != SampleOrigin::Watchdog)).map(|t| t.0).collect();
    perf_pids.extend(folded.iter().filter(|(k, _)| !k.watchdog).map(|(k, _)| k.pid));
    let loops: HashMap<(u32, u32), String> =
        session.loops().map(|l| ((l.id.pid, l.id.tid), l.name.to_string())).collect();
    let mut pids: BTreeSet<u32> = stacks.threads().map(|t| t.0).collect();
    pids.extend(folded.iter().map(|(k, _)| k.pid));
    let many_processes = pids.len() > 1;
    // One box per function: frames that differ only in the line running are drawn as one.
    let mut frames: Vec<Frame> = stacks.frames().iter().map(Frame::function).collect();
    let canon: Vec<u32> = {
        let mut first: HashMap<&Frame, u32> = HashMap::new();
        frames.iter().enumerate().map(|(i, f)| *first.entry(f).or_insert(i as u32)).collect()
    };
    // The agent's watchdog thread, sampled inside the target: looptop's own, never drawn.
    let watchdog: BTreeSet<u32> = (0..frames.len() as u32)
        .filter(|&id| frames[id as usize].name.starts_with("looptop_agent::watchdog::"))
        .collect();
    let mut extra: HashMap<String, u32> = HashMap::new();
    let mut synthetic = |frames: &mut Vec<Frame>, name: String, kind: FrameKind| -> u32 {
        *extra.entry(name.clone()).or_insert_with(|| {
            frames.push(Frame { kind, ..Frame::unknown(None) }.renamed(name));
            frames.len() as u32 - 1
        })
    };
    let period_ns = 1_000_000_000u64.checked_div(rate_hz).unwrap_or(0);
    // What each thread has to draw: stacks (outermost first, with their off-CPU box) and weights.
    let mut drawn: BTreeMap<Thread, Vec<(Vec<u32>, u64)>> = BTreeMap::new();
    let mut timelines: BTreeMap<Thread, Vec<TimedStack>> = BTreeMap::new();
    let mut outermost_first = |frames: &mut Vec<Frame>, stack: &[u32], off_cpu: Option<&OffCpu>| -> Vec<u32> {
        let mut out: Vec<u32> = stack.iter().rev().map(|&id| canon.get(id as usize).copied().unwrap_or(id)).collect();
        if let Some(off) = off_cpu {
            let name = match (&off.wchan, off.syscall) {
                (Some(w), _) => format!("[off-CPU: {w}]"),
                (None, Some(nr)) => format!("[off-CPU: syscall {nr}]"),
                _ => "[off-CPU]".to_string(),
            };
            out.push(synthetic(frames, name, FrameKind::Kernel));
        }
        out
    };
    let mut sorted_folded = folded;
    sorted_folded.sort_by(|a, b| {
        (a.0.pid, a.0.tid, &a.0.stack, a.0.in_stall).cmp(&(b.0.pid, b.0.tid, &b.0.stack, b.0.in_stall))
    });
    for (k, f) in sorted_folded {
        if k.watchdog && perf_pids.contains(&k.pid) {
            continue;
        }
        if (stalls_only && !k.in_stall) || !shows(k.off, time) || k.stack.iter().any(|id| watchdog.contains(id)) {
            continue;
        }
        let stack = outermost_first(&mut frames, &k.stack, k.off_cpu.as_ref());
        let w = if rate_hz > 0 { f.periods } else { f.count };
        drawn.entry((k.pid, k.tid)).or_default().push((stack, w));
    }
    for (pid, tid, samples) in stacks.threads() {
        let spans = by_thread.get(&(pid, tid)).map_or(&[][..], |v| v.as_slice());
        for s in samples {
            if s.origin == SampleOrigin::Watchdog && perf_pids.contains(&pid) {
                continue;
            }
            if s.t_ns < since_ns
                || s.t_ns > end_ns
                || (stalls_only && !s.in_stall(spans))
                || !shows(s.is_off_cpu(), time)
            {
                continue;
            }
            if s.stack.iter().any(|id| watchdog.contains(id)) {
                continue;
            }
            let stack = outermost_first(&mut frames, &s.stack, s.off_cpu.as_ref());
            let ns = if s.off_cpu.is_some() || s.weight_ns > 0 {
                s.weight_ns.max(1)
            } else {
                period_ns.max(1).saturating_mul(s.count.max(1))
            };
            timelines.entry((pid, tid)).or_default().push((s.t_ns, stack.clone(), ns));
            drawn.entry((pid, tid)).or_default().push((stack, s.periods(rate_hz)));
        }
    }
    let mut merged: HashMap<Vec<u32>, u64> = HashMap::new();
    let mut threads = Vec::new();
    for ((pid, tid), items) in drawn {
        let r = thread_role(&frames, items.iter().map(|i| i.0.as_slice()), loops.get(&(pid, tid)), pid == tid);
        let role = if many_processes { format!("{r} (pid {pid})") } else { r };
        let root = synthetic(&mut frames, format!("[{role}]"), FrameKind::Unknown);
        for (mut stack, w) in items {
            stack.insert(0, root);
            let m = merged.entry(stack).or_default();
            *m = m.saturating_add(w);
        }
        if let Some(mut timeline) = timelines.remove(&(pid, tid)) {
            timeline.sort_by_key(|(t, _, _)| *t);
            threads.push(Timeline { name: format!("{role} · thread {tid}"), samples: timeline });
        }
    }
    let samples = merged.values().fold(0, |n: u64, &w| n.saturating_add(w));
    let mut stacks_out: Vec<(Vec<u32>, u64)> = merged.into_iter().collect();
    stacks_out.sort();
    let from = since_ns.max(session.origin_ns());
    let wall_s = end_ns.saturating_sub(from) as f64 / 1e9;
    let stalls = spans
        .iter()
        .filter(|s| s.3 >= session.threshold_ns() && s.2.saturating_add(s.3) >= from && s.2 <= end_ns)
        .count();
    let what = time.name();
    Profile {
        title: format!("looptop: {}", command.join(" ")),
        subtitle: format!(
            "{wall_s:.1} s · {what} · {samples} samples · {stalls} stall{}{}",
            if stalls == 1 { "" } else { "s" },
            if stalls_only { " (stalls only)" } else { "" }
        ),
        frames,
        stacks: stacks_out,
        threads,
        origin_ns: from,
    }
}

/// A thread: (pid, tid).
type Thread = (u32, u32);
/// A sample in a timeline: when, its stack (outermost first), the time it stands for (ns).
type TimedStack = (u64, Vec<u32>, u64);

/// Whether a sample (off the CPU or not) belongs to the time drawn.
fn shows(off: bool, time: Time) -> bool {
    match time {
        Time::Cpu => !off,
        Time::Wall => true,
        Time::OffCpu => off,
    }
}

/// The role of a thread, from what looptop knows of it (a loop) or from its outermost frames.
fn thread_role<'a>(
    frames: &[Frame],
    stacks: impl Iterator<Item = &'a [u32]> + Clone,
    loop_name: Option<&String>,
    main: bool,
) -> String {
    if let Some(name) = loop_name {
        return if main { format!("main loop: {name}") } else { format!("loop: {name}") };
    }
    let names = || stacks.clone().flatten().filter_map(|&id| frames.get(id as usize)).map(|f| f.name.as_str());
    let has = |pred: &dyn Fn(&str) -> bool| names().any(pred);
    if has(&|n| n == "worker" || n.starts_with("uv__work") || n.contains("uv__threadpool")) {
        "libuv thread pool".into()
    } else if has(&|n| {
        n.contains("PlatformWorker") || n.contains("v8::platform") || n.contains("WorkerThreadsTaskRunner")
    }) {
        "V8 platform threads (GC, compiler)".into()
    } else if has(&|n| n.contains("concurrent.futures") || n.contains("ThreadPoolExecutor") || n.contains("_worker")) {
        "executor threads".into()
    } else if main {
        "main thread".into()
    } else {
        "other threads".into()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::recording::read_from;
    use serde_json::json;

    /// A node whose main loop ran `spin`, slept once, whose libuv worker ran `crypto` and whose
    /// agent's watchdog woke, as a recording holds them.
    fn session() -> Session {
        const PID: u64 = 4242;
        let t0 = 1_000_000_000u64;
        let header = json!({"t": "recording", "schema": "looptop.recording/1", "looptop": "x", "origin_ns": t0,
            "stall_threshold_ns": 50_000_000u64, "pid": PID, "command": ["node"], "rate_hz": 1000, "mode": "agent"});
        let frame = |id: u64, name: &str| json!({"t": "frame", "id": id, "frame": {"name": name, "kind": "native"}});
        let stack = |tid: u64, t: u64, frames: &[u64], off: bool| {
            let off_cpu = if off { json!({"syscall": 202, "wchan": "futex_wait_queue"}) } else { json!(null) };
            let origin = if off { "perf-off-cpu" } else { "perf-cpu" };
            json!({"t": "stack", "pid": PID, "tid": tid, "t_ns": t0 + t, "weight_ns": if off { 5_000_000 } else { 0 },
                   "origin": origin, "tick_ns": 0, "off_cpu": off_cpu, "frames": frames})
        };
        let lines = [
            header,
            json!({"t": "loop_started", "id": {"pid": PID, "tid": PID, "since_ns": t0}, "name": "node", "start_ns": t0}),
            frame(0, "node::Start"),
            frame(1, "spin"),
            frame(2, "worker"),
            frame(3, "crypto"),
            frame(4, "looptop_agent::watchdog::run"),
            frame(5, "clock_nanosleep"),
            stack(PID, 3_000_000, &[1, 0], false),
            stack(PID, 1_000_000, &[1, 0], false),
            stack(PID, 2_000_000, &[0], true),
            stack(PID + 1, 1_500_000, &[3, 2], false),
            stack(PID + 2, 1_200_000, &[5, 4], false),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        read_from(text.as_bytes()).expect("a recording").session
    }

    /// Folded lines of a profile: root first, names joined with `;`.
    fn folded(p: &Profile) -> Vec<String> {
        let mut out: Vec<String> = p
            .stacks
            .iter()
            .map(|(s, w)| {
                let names: Vec<&str> = s.iter().map(|&id| p.frames[id as usize].name.as_str()).collect();
                format!("{} {w}", names.join(";"))
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn on_cpu_by_default_one_root_per_role_never_the_agents_watchdog() {
        let s = session();
        let p = build_profile(&s, &[], &Draw::new(0, u64::MAX / 2, 1000, false));
        assert_eq!(
            folded(&p),
            ["[libuv thread pool];worker;crypto 1", "[main loop: node];node::Start;spin 2"],
            "{}",
            p.subtitle
        );
        assert!(p.subtitle.contains("on-CPU"), "{}", p.subtitle);
        let wall = build_profile(&s, &[], &Draw { time: Some(Time::Wall), ..Draw::new(0, u64::MAX / 2, 1000, false) });
        assert!(folded(&wall).contains(&"[main loop: node];node::Start;[off-CPU: futex_wait_queue] 5".to_string()));
        let off = build_profile(&s, &[], &Draw { time: Some(Time::OffCpu), ..Draw::new(0, u64::MAX / 2, 1000, false) });
        assert_eq!(folded(&off), ["[main loop: node];node::Start;[off-CPU: futex_wait_queue] 5"]);
    }

    #[test]
    fn each_thread_keeps_its_samples_in_time_order_in_real_time() {
        let p =
            build_profile(&session(), &[], &Draw { time: Some(Time::Wall), ..Draw::new(0, u64::MAX / 2, 1000, false) });
        let main = p.threads.iter().find(|t| t.name.starts_with("main loop: node")).expect("the main loop's timeline");
        let times: Vec<u64> = main.samples.iter().map(|s| s.0).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        // 1 ms per on-CPU sample at 1000 Hz, the off-CPU one its own 5 ms.
        let ms: Vec<u64> = main.samples.iter().map(|s| s.2 / 1_000_000).collect();
        assert_eq!(ms, [1, 5, 1]);
        assert!(!p.threads.iter().any(|t| t.samples.iter().any(|s| s.1.contains(&4))), "no watchdog");
    }
}
