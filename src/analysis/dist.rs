//! The distribution of tick busy times, and the two views DESIGN.md asks for: per-tick
//! percentiles (`tick_ms`) and time-weighted lag percentiles (`lag_ms`).
//!
//! Lag at an instant is the time until the loop finishes its current tick, so the share of wall
//! time with lag > x is `S(x) = Σ max(0, busy_i − x) / wall`. `S` is piecewise linear and falls
//! with x; the p-th lag percentile is the smallest x with `S(x) ≤ 1 − p`.

use looptop_abi::{hist_bucket, hist_bucket_range};

/// Tick busy times as (value ns, count) groups.
#[derive(Debug, Clone, Default)]
pub struct TickDist {
    groups: Vec<(f64, u64)>,
}

impl TickDist {
    /// From the agent's histogram, with `exact` ticks (ns) known individually: each exact tick
    /// replaces one count of its bucket, so long ticks are exact and short ones within half a
    /// bucket (≤ 0.4 %).
    pub fn from_hist(hist: &[u64], exact: impl IntoIterator<Item = u64>) -> Self {
        let mut counts = hist.to_vec();
        let mut groups = Vec::new();
        for ns in exact {
            if let Some(c) = counts.get_mut(hist_bucket(ns)) {
                *c = c.saturating_sub(1);
            }
            groups.push((ns as f64, 1));
        }
        for (i, &c) in counts.iter().enumerate().filter(|(_, &c)| c > 0) {
            let (lo, hi) = hist_bucket_range(i);
            let mid = if hi - lo <= 1 { lo as f64 } else { (lo + hi) as f64 / 2.0 };
            groups.push((mid, c));
        }
        groups.sort_by(|a, b| a.0.total_cmp(&b.0));
        TickDist { groups }
    }

    /// Adds ticks of `ns` (e.g. the tick in progress).
    pub fn push(&mut self, ns: f64, count: u64) {
        let at = self.groups.partition_point(|g| g.0 < ns);
        self.groups.insert(at, (ns, count));
    }

    /// Number of ticks.
    pub fn count(&self) -> u64 {
        self.groups.iter().map(|g| g.1).fold(0, u64::saturating_add)
    }

    /// Σ busy (ns).
    pub fn sum(&self) -> f64 {
        self.groups.iter().map(|g| g.0 * g.1 as f64).sum()
    }

    /// Longest tick (ns), 0 when none.
    pub fn max(&self) -> f64 {
        self.groups.last().map_or(0.0, |g| g.0)
    }

    /// The p-th percentile (0..=1) of ticks, each tick counting once.
    pub fn tick_percentile(&self, p: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for &(v, c) in &self.groups {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return v;
            }
        }
        self.max()
    }

    /// The p-th percentile (0..=1) of lag over `wall_ns` of wall time.
    pub fn lag_percentile(&self, p: f64, wall_ns: f64) -> f64 {
        if wall_ns <= 0.0 || self.groups.is_empty() {
            return 0.0;
        }
        if p >= 1.0 {
            return self.max();
        }
        let target = (1.0 - p) * wall_ns;
        // Walk from the longest ticks down: with the k longest included, S(x)·wall = Σ − k·x.
        let (mut k, mut sum) = (0f64, 0f64);
        for (j, &(v, c)) in self.groups.iter().enumerate().rev() {
            k += c as f64;
            sum += v * c as f64;
            let next = if j == 0 { 0.0 } else { self.groups[j - 1].0 };
            if sum - k * next >= target {
                return ((sum - target) / k).clamp(next, v);
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator, so the test needs no crate.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Lag percentile by brute force: walk the timeline in 1 µs steps.
    fn brute_lag(ticks: &[(u64, u64)], p: f64) -> f64 {
        let mut lags = Vec::new();
        for &(busy, idle) in ticks {
            for t in 0..busy {
                lags.push((busy - t) as f64);
            }
            lags.extend(std::iter::repeat_n(0.0, idle as usize));
        }
        lags.sort_by(f64::total_cmp);
        let i = ((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len()) - 1;
        lags[i]
    }

    #[test]
    fn lag_matches_brute_force_on_random_ticks() {
        let mut seed = 0x9e3779b97f4a7c15;
        for case in 0..30 {
            let n = 5 + (rng(&mut seed) % 200) as usize;
            let ticks: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    let busy = if rng(&mut seed) % 10 == 0 { 100 + rng(&mut seed) % 3000 } else { rng(&mut seed) % 50 };
                    (busy, rng(&mut seed) % 400)
                })
                .collect();
            let wall: u64 = ticks.iter().map(|t| t.0 + t.1).sum();
            let dist = TickDist::from_hist(&[], ticks.iter().map(|t| t.0));
            for p in [0.5, 0.9, 0.99, 0.999] {
                let want = brute_lag(&ticks, p);
                let got = dist.lag_percentile(p, wall as f64);
                // The brute force is discrete in 1-unit steps.
                assert!((got - want).abs() <= 1.0 + want * 1e-9, "case {case} p{p}: got {got}, want {want}");
            }
            assert_eq!(dist.lag_percentile(1.0, wall as f64), ticks.iter().map(|t| t.0).max().unwrap() as f64);
        }
    }

    #[test]
    fn idle_loop_has_zero_lag_and_ticks_count_once() {
        let dist = TickDist::from_hist(&[], [10, 20, 30, 40]);
        assert_eq!(dist.lag_percentile(0.5, 1_000_000.0), 0.0);
        assert_eq!(dist.tick_percentile(0.5), 20.0);
        assert_eq!(dist.tick_percentile(0.99), 40.0);
        assert_eq!(dist.count(), 4);
    }

    #[test]
    fn histogram_values_are_within_half_a_bucket_and_exact_ticks_replace_counts() {
        let mut hist = vec![0u64; looptop_abi::HIST_BUCKETS];
        for ns in [1_234_567u64, 60_000_000, 60_000_000] {
            hist[hist_bucket(ns)] += 1;
        }
        let d = TickDist::from_hist(&hist, [60_000_000]);
        assert_eq!(d.count(), 3);
        assert!((d.tick_percentile(0.1) - 1_234_567.0).abs() / 1_234_567.0 < 0.004);
        assert_eq!(d.max().round(), d.max());
        assert!((d.max() - 60_000_000.0).abs() / 60e6 < 0.004);
    }
}
