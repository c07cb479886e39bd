//! What the runtime probes and the agent's allocator watch report: GC pauses, the thread pool,
//! allocator pauses; and how much of a stall was GC.

use super::report::{AllocPause, AllocReport, GcPause, GcReport, PoolReport, PoolWaitMs};
use crate::event::{Event, GcKind, GC_ALL_THREADS};
use std::collections::{BTreeMap, BTreeSet};

const MS: f64 = 1e6;

#[derive(Debug, Clone)]
struct Gc {
    pid: u32,
    thread: u32,
    start_ns: u64,
    duration_ns: u64,
    kind: GcKind,
}

#[derive(Debug, Clone, Default)]
struct Pool {
    kind: String,
    size: u64,
    busy_max: u64,
    queued_max: u64,
    /// Wait buckets: low ns → (high ns, items, longest ns).
    waits: BTreeMap<u64, (u64, u64, u64)>,
    /// The latest sample: (busy, queued) items.
    now: Option<(u64, u64)>,
}

/// GC, pool and allocator figures from events.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    probes: BTreeSet<u32>,
    gc: Vec<Gc>,
    alloc: Vec<AllocPause>,
    alloc_raw: Vec<(u64, u64)>,
    pools: BTreeMap<u32, Pool>,
    /// Pool figures count from here (ns; see [`Runtime::count_from`]).
    counted_from_ns: u64,
}

impl Runtime {
    /// Pool figures (busiest, most queued, waits) count from `at_ns` on: what the pool did before
    /// an observation window began is left out, as for loops, GC and the allocator.
    pub fn count_from(&mut self, at_ns: u64) {
        self.counted_from_ns = at_ns;
        for p in self.pools.values_mut() {
            p.busy_max = 0;
            p.queued_max = 0;
            p.waits.clear();
        }
    }

    /// Takes the runtime events; returns the others.
    pub fn handle(&mut self, ev: Event) -> Option<Event> {
        match ev {
            Event::ProbeReady { pid } => {
                self.probes.insert(pid);
            }
            Event::Gc { pid, thread, start_ns, duration_ns, kind } => {
                self.probes.insert(pid);
                self.gc.push(Gc { pid, thread, start_ns, duration_ns, kind });
            }
            Event::Alloc { pid, tid, start_ns, duration_ns, call, size } => {
                self.alloc_raw.push((start_ns, duration_ns));
                self.alloc.push(AllocPause {
                    pid,
                    tid,
                    start_ms: start_ns as f64,
                    duration_ms: duration_ns as f64 / MS,
                    call,
                    size,
                });
            }
            Event::PoolKind { pid, kind, size } => {
                let p = self.pools.entry(pid).or_default();
                p.kind = kind;
                p.size = size;
            }
            Event::PoolSample { pid, at_ns, size, in_flight, queued_max } => {
                let p = self.pools.entry(pid).or_default();
                p.size = size;
                if at_ns >= self.counted_from_ns {
                    p.busy_max = p.busy_max.max(in_flight.min(size));
                    p.queued_max = p.queued_max.max(queued_max);
                }
                p.now = Some((in_flight.min(size), queued_max));
            }
            Event::PoolWaits { at_ns, .. } if at_ns != 0 && at_ns < self.counted_from_ns => {}
            Event::PoolWaits { pid, low_ns, high_ns, count, max_ns, .. } => {
                let b = self.pools.entry(pid).or_default().waits.entry(low_ns).or_insert((high_ns, 0, 0));
                b.1 = b.1.saturating_add(count);
                b.2 = b.2.max(max_ns);
            }
            other => return Some(other),
        }
        None
    }

    /// The busiest pool as of its latest sample: (busy, queued) items.
    pub fn pool_now(&self) -> Option<(u64, u64)> {
        self.busiest()?.now
    }

    /// GC pauses that started at or after `since_ns`: (count, longest ns).
    pub fn gc_since(&self, since_ns: u64) -> (u64, u64) {
        // Pauses arrive nearly in time order: the recent ones are at the end.
        let all: Vec<u64> =
            self.gc.iter().rev().take(4096).filter(|g| g.start_ns >= since_ns).map(|g| g.duration_ns).collect();
        (all.len() as u64, all.iter().copied().max().unwrap_or(0))
    }

    /// The probes and pools known, as events (a recording started mid-way begins with these).
    pub fn state_events(&self) -> Vec<Event> {
        let mut out: Vec<Event> = self.probes.iter().map(|&pid| Event::ProbeReady { pid }).collect();
        for (&pid, p) in self.pools.iter().filter(|(_, p)| !p.kind.is_empty()) {
            out.push(Event::PoolKind { pid, kind: p.kind.clone(), size: p.size });
        }
        out
    }

    fn busiest(&self) -> Option<&Pool> {
        self.pools
            .values()
            .filter(|p| !p.kind.is_empty())
            .max_by_key(|p| p.waits.values().map(|w| w.1).fold(0, u64::saturating_add))
    }

    /// Whether GC pauses of `pid` are visible (a probe runs there).
    pub fn sees_gc(&self, pid: u32) -> bool {
        self.probes.contains(&pid)
    }

    /// Milliseconds of GC inside `[start, start + dur)` on the loop `(pid, tid)`. A probe names
    /// threads by runtime number: Node's main thread is 0, CPython gives the OS thread id; a JVM's
    /// pauses stop every thread.
    pub fn gc_overlap_ms(&self, pid: u32, tid: u32, start_ns: u64, dur_ns: u64) -> Option<f64> {
        if !self.sees_gc(pid) {
            return None;
        }
        let end = start_ns.saturating_add(dur_ns);
        let ns: u64 = self
            .gc
            .iter()
            .filter(|g| {
                g.pid == pid && (g.thread == tid || (g.thread == 0 && tid == pid) || g.thread == GC_ALL_THREADS)
            })
            .map(|g| end.min(g.start_ns.saturating_add(g.duration_ns)).saturating_sub(start_ns.max(g.start_ns)))
            .fold(0, u64::saturating_add);
        Some(ns as f64 / MS)
    }

    /// The `gc` object: `None` where no probe ran.
    /// Pauses that started before `from_ns` are left out.
    pub fn gc_report(&self, origin_ns: u64, from_ns: u64) -> Option<GcReport> {
        if self.probes.is_empty() {
            return None;
        }
        let counted = || self.gc.iter().filter(move |g| g.start_ns >= from_ns);
        let total = counted().map(|g| g.duration_ns).fold(0, u64::saturating_add);
        let max = counted().map(|g| g.duration_ns).max().unwrap_or(0);
        Some(GcReport {
            count: counted().count() as u64,
            total_ms: total as f64 / MS,
            max_ms: max as f64 / MS,
            pauses: counted()
                .map(|g| GcPause {
                    start_ms: (g.start_ns as f64 - origin_ns as f64) / MS,
                    duration_ms: g.duration_ns as f64 / MS,
                    kind: g.kind.name(),
                    pid: g.pid,
                })
                .collect(),
        })
    }

    /// The `pool` object of the process whose pool did the most work; `None` if no probe saw one.
    pub fn pool_report(&self) -> Option<PoolReport> {
        let p = self.busiest()?;
        let n = p.waits.values().map(|w| w.1).fold(0, u64::saturating_add);
        let pct = |q: f64| {
            let rank = ((q * n as f64).ceil() as u64).clamp(1, n.max(1));
            let mut seen = 0u64;
            for (&low, &(high, count, max)) in &p.waits {
                seen = seen.saturating_add(count);
                if seen >= rank {
                    // The bucket's middle, but never past its longest wait.
                    return ((low as f64 + high as f64) / 2.0).min(max as f64) / MS;
                }
            }
            0.0
        };
        let max = p.waits.values().map(|w| w.2).max().unwrap_or(0);
        Some(PoolReport {
            kind: p.kind.clone(),
            size: p.size,
            busy_max: p.busy_max,
            queued_max: p.queued_max,
            wait_ms: PoolWaitMs { p50: pct(0.5), p99: pct(0.99), max: max as f64 / MS },
            items: n,
        })
    }

    /// The `alloc` object (the agent always watches allocator calls).
    /// Pauses that started before `from_ns` are left out.
    pub fn alloc_report(&self, origin_ns: u64, from_ns: u64) -> AllocReport {
        let counted = || self.alloc_raw.iter().zip(&self.alloc).filter(move |(raw, _)| raw.0 >= from_ns);
        let total = counted().map(|(raw, _)| raw.1).fold(0, u64::saturating_add);
        let max = counted().map(|(raw, _)| raw.1).max().unwrap_or(0);
        AllocReport {
            count: counted().count() as u64,
            total_ms: total as f64 / MS,
            max_ms: max as f64 / MS,
            pauses: counted()
                .map(|(_, a)| AllocPause { start_ms: (a.start_ms - origin_ns as f64) / MS, ..a.clone() })
                .collect(),
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    /// What the pool did before the window began is left out; what came after counts.
    #[test]
    fn pool_figures_cover_the_window_only() {
        let mut r = Runtime::default();
        let wait = |at_ns, max_ns| Event::PoolWaits { pid: 1, low_ns: 0, high_ns: max_ns, count: 1, max_ns, at_ns };
        let sample = |at_ns, in_flight, queued_max| Event::PoolSample { pid: 1, at_ns, size: 4, in_flight, queued_max };
        r.handle(Event::PoolKind { pid: 1, kind: "libuv".into(), size: 4 });
        r.handle(sample(10, 4, 30));
        r.handle(wait(10, 900_000_000));
        r.count_from(100);
        // A batch written before the window, read after it began (an attach reads the ring).
        r.handle(wait(50, 800_000_000));
        r.handle(sample(60, 4, 20));
        r.handle(sample(150, 2, 3));
        r.handle(wait(150, 2_000_000));
        let p = r.pool_report().expect("a pool");
        assert_eq!((p.busy_max, p.queued_max, p.items), (2, 3, 1), "{p:?}");
        assert!(p.wait_ms.max <= 2.0, "{p:?}");
        // A wait of unknown time (perf's uprobes, the BPF source) counts wherever it falls.
        r.handle(wait(0, 4_000_000));
        assert_eq!(r.pool_report().unwrap().items, 2);
    }
}
