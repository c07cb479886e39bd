//! The recent past of every loop, second by second: the lag chart of the live view.
//!
//! Each second closes a window: the ticks the loop completed in it (the difference of its
//! histogram since the previous window) plus the tick under way, counted as long as it has run so
//! far (the lag of an event arriving now is at least that). The window's lag p99 is the
//! time-weighted percentile of [`TickDist::lag_percentile`] over the window; its max is the
//! longest of those ticks.

use super::dist::TickDist;
use super::session::Session;
use crate::event::LoopId;
use std::collections::{BTreeMap, VecDeque};

/// Lag of one loop over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagPoint {
    /// End of the window (ns).
    pub end_ns: u64,
    /// Time-weighted lag p99 (ns).
    pub p99_ns: f64,
    /// Longest tick completed in the window, or the one under way (ns).
    pub max_ns: f64,
    /// Ticks completed in the window.
    pub ticks: u64,
}

#[derive(Debug, Clone)]
struct Track {
    hist: Box<[u64]>,
    ticks: u64,
    since_ns: u64,
    points: VecDeque<LagPoint>,
}

/// Per-second lag of every loop over the last `keep` windows.
#[derive(Debug, Clone)]
pub struct LagHistory {
    window_ns: u64,
    keep: usize,
    loops: BTreeMap<LoopId, Track>,
}

impl LagHistory {
    /// Windows of `window_ns`, the last `keep` of each loop kept.
    pub fn new(window_ns: u64, keep: usize) -> Self {
        LagHistory { window_ns: window_ns.max(1), keep: keep.max(1), loops: BTreeMap::new() }
    }

    /// Closes the window of each live loop whose time is up at `now_ns`.
    pub fn update(&mut self, session: &Session, now_ns: u64) {
        for l in session.loops().filter(|l| l.alive) {
            let Some(t) = l.totals else { continue };
            let track = self.loops.entry(l.id).or_insert_with(|| Track {
                hist: t.hist.clone(),
                ticks: t.ticks,
                since_ns: now_ns,
                points: VecDeque::new(),
            });
            if now_ns < track.since_ns + self.window_ns {
                continue;
            }
            let delta: Vec<u64> = t
                .hist
                .iter()
                .enumerate()
                .map(|(i, &c)| c.saturating_sub(track.hist.get(i).copied().unwrap_or(0)))
                .collect();
            let mut dist = TickDist::from_hist(&delta, std::iter::empty());
            if t.busy_since_ns != 0 && now_ns > t.busy_since_ns {
                dist.push((now_ns - t.busy_since_ns) as f64, 1);
            }
            let wall = (now_ns - track.since_ns) as f64;
            track.points.push_back(LagPoint {
                end_ns: now_ns,
                p99_ns: dist.lag_percentile(0.99, wall),
                max_ns: dist.max(),
                ticks: t.ticks.saturating_sub(track.ticks),
            });
            while track.points.len() > self.keep {
                track.points.pop_front();
            }
            track.hist = t.hist.clone();
            track.ticks = t.ticks;
            track.since_ns = now_ns;
        }
    }

    /// The windows of a loop, oldest first.
    pub fn points(&self, id: &LoopId) -> impl Iterator<Item = &LagPoint> {
        self.loops.get(id).into_iter().flat_map(|t| t.points.iter())
    }

    /// Ticks per second of a loop over its latest window.
    pub fn ticks_per_s(&self, id: &LoopId) -> f64 {
        let Some(t) = self.loops.get(id) else { return 0.0 };
        let mut last = t.points.iter().rev().take(2);
        match (last.next(), last.next()) {
            (Some(a), Some(b)) if a.end_ns > b.end_ns => a.ticks as f64 * 1e9 / (a.end_ns - b.end_ns) as f64,
            (Some(a), None) => a.ticks as f64 * 1e9 / self.window_ns as f64,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, LoopTotals};
    use looptop_abi::{hist_bucket, HIST_BUCKETS};

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn totals(at_ns: u64, ticks: &[u64], busy_since_ns: u64) -> LoopTotals {
        let mut hist = vec![0u64; HIST_BUCKETS];
        for &t in ticks {
            hist[hist_bucket(t)] += 1;
        }
        LoopTotals {
            at_ns,
            ticks: ticks.len() as u64,
            busy_ns: ticks.iter().sum(),
            idle_ns: 0,
            max_busy_ns: ticks.iter().copied().max().unwrap_or(0),
            busy_since_ns,
            hist: hist.into_boxed_slice(),
        }
    }

    #[test]
    fn each_second_shows_its_own_ticks_and_the_tick_under_way() {
        let id = LoopId { pid: 1, tid: 1, since_ns: 0 };
        let mut s = Session::new(0, 50 * MS);
        s.handle(Event::LoopStarted { id, name: "main".into(), start_ns: 0 });
        let mut h = LagHistory::new(S, 60);
        s.handle(Event::Totals { id, totals: totals(0, &[], 0) });
        h.update(&s, 0);
        // Second 1: a thousand 1 ms ticks.
        let fast = vec![MS; 1000];
        s.handle(Event::Totals { id, totals: totals(S, &fast, 0) });
        h.update(&s, S);
        // Second 2: a tick has been running for 700 ms.
        s.handle(Event::Totals { id, totals: totals(2 * S, &fast, 2 * S - 700 * MS) });
        h.update(&s, 2 * S);
        // Second 3: it ended after 900 ms, then fast ticks again.
        let mut more = fast.clone();
        more.push(900 * MS);
        more.extend(vec![MS; 100]);
        s.handle(Event::Totals { id, totals: totals(3 * S, &more, 0) });
        h.update(&s, 3 * S);
        let p: Vec<&LagPoint> = h.points(&id).collect();
        assert_eq!(p.len(), 3);
        assert!(p[0].max_ns < 1.01 * MS as f64 && p[0].p99_ns < 1.01 * MS as f64, "{:?}", p[0]);
        assert_eq!(p[0].ticks, 1000);
        assert!((p[1].max_ns - 700e6).abs() < 1e6, "{:?}", p[1]);
        assert!(p[1].p99_ns > 600e6, "the tick under way dominates the second: {:?}", p[1]);
        assert!((p[2].max_ns - 900e6).abs() < 8e6, "{:?}", p[2]);
        assert_eq!(p[2].ticks, 101);
        assert!((h.ticks_per_s(&id) - 101.0).abs() < 1e-9);
        // Updates within a window change nothing.
        h.update(&s, 3 * S + 10 * MS);
        assert_eq!(h.points(&id).count(), 3);
    }

    #[test]
    fn only_the_last_windows_are_kept() {
        let id = LoopId { pid: 1, tid: 2, since_ns: 0 };
        let mut s = Session::new(0, 50 * MS);
        s.handle(Event::LoopStarted { id, name: "w".into(), start_ns: 0 });
        let mut h = LagHistory::new(S, 5);
        for i in 0..20 {
            s.handle(Event::Totals { id, totals: totals(i * S, &[], 0) });
            h.update(&s, i * S);
        }
        let p: Vec<&LagPoint> = h.points(&id).collect();
        assert_eq!(p.len(), 5);
        assert_eq!(p[4].end_ns, 19 * S);
    }
}
