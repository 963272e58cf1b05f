//! A latency histogram for hot paths: relaxed atomics, fixed memory, no
//! locks; formatting happens only when scraped.
//!
//! Values are nanoseconds in log-linear buckets (8 per power of two, so a
//! quantile is within 13 % of the true value); a scrape exports them at the
//! fixed Prometheus bounds [`LATENCY_BOUNDS_S`]. An internal bucket that
//! straddles an export bound is counted at the next bound up, so `le`
//! counts are exact only to the internal bucket's width (≤ 12.5 % of the
//! bound): values just under a bound may appear one bound later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 3;
/// Internal buckets: every `u64` of nanoseconds has one.
const BUCKETS: usize = 64 << SUB_BITS;

/// The `le` bounds every histogram is exported at, seconds (10 µs to 10 s).
pub const LATENCY_BOUNDS_S: [f64; 19] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// The bucket of `ns`.
fn bucket_of(ns: u64) -> usize {
    if ns < 1 << SUB_BITS {
        return usize::try_from(ns).unwrap_or(0);
    }
    let msb = 63 - ns.leading_zeros();
    let sub = (ns >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    let i = (u64::from(msb - SUB_BITS + 1) << SUB_BITS) + sub;
    usize::try_from(i).unwrap_or(BUCKETS - 1).min(BUCKETS - 1)
}

/// The largest value in bucket `i`.
fn bucket_top(i: usize) -> u64 {
    let i = i as u64;
    if i < 1 << SUB_BITS {
        return i;
    }
    let shift = (i >> SUB_BITS) - 1;
    let sub = i & ((1 << SUB_BITS) - 1);
    let top = (u128::from((1 << SUB_BITS) + sub + 1) << shift) - 1;
    u64::try_from(top).unwrap_or(u64::MAX)
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Durations recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1), as the top of its bucket; `None` when empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(bucket_top(i)));
            }
        }
        None
    }

    /// Forgets everything (benchmarks measure phases separately).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.sum_ns.store(0, Ordering::Relaxed);
    }

    /// The counts at [`LATENCY_BOUNDS_S`], read once so that they are
    /// cumulative and end at the count.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut cumulative = [0u64; LATENCY_BOUNDS_S.len() + 1];
        let mut i = 0;
        let mut seen = 0u64;
        for (slot, bound) in cumulative.iter_mut().zip(LATENCY_BOUNDS_S) {
            let limit = (bound * 1e9) as u64;
            while i < BUCKETS && bucket_top(i) <= limit {
                seen += self.buckets[i].load(Ordering::Relaxed);
                i += 1;
            }
            *slot = seen;
        }
        seen += self.buckets[i..]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum::<u64>();
        cumulative[LATENCY_BOUNDS_S.len()] = seen;
        Snapshot {
            cumulative,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at the export bounds.
pub(crate) struct Snapshot {
    /// Cumulative counts at each bound, then at `+Inf`.
    cumulative: [u64; LATENCY_BOUNDS_S.len() + 1],
    sum_ns: u64,
}

impl Snapshot {
    /// `(le, cumulative count)`, the last at `+Inf`.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BOUNDS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.cumulative.iter().copied())
    }

    /// Sum of the values, seconds.
    pub(crate) fn sum_s(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.cumulative[LATENCY_BOUNDS_S.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for i in 0..BUCKETS - 8 {
            let top = bucket_top(i);
            assert!(top >= last, "bucket {i}");
            last = top;
        }
        for v in [
            0u64,
            1,
            7,
            8,
            9,
            100,
            1_000,
            123_456,
            10_000_000_000,
            u64::MAX,
        ] {
            let b = bucket_of(v);
            assert!(bucket_top(b) >= v, "{v}");
            assert!(b == 0 || bucket_top(b - 1) < v, "{v}");
            assert!(
                bucket_top(b) as f64 <= v as f64 * 1.13 + 1.0,
                "{v} -> {}",
                bucket_top(b)
            );
        }
    }

    #[test]
    fn quantiles_snapshot_and_reset() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::from_secs(100));
        let p50 = h.quantile(0.5).unwrap().as_micros() as f64;
        let p99 = h.quantile(0.99).unwrap().as_micros() as f64;
        assert!((500.0..560.0).contains(&p50), "{p50}");
        assert!((990.0..1100.0).contains(&p99), "{p99}");
        let s = h.snapshot();
        let b: Vec<(f64, u64)> = s.buckets().collect();
        assert_eq!(b.len(), LATENCY_BOUNDS_S.len() + 1);
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "{b:?}");
        // A bucket counts under a bound when its top is under it: 1..=9 µs
        // (top 9.215 µs) are under 10 µs, 1..=983 µs (top 983.039 µs) under 1 ms.
        assert_eq!(b[0], (0.00001, 9));
        assert_eq!(b[6], (0.001, 983));
        assert_eq!(b[LATENCY_BOUNDS_S.len() - 1], (10.0, 1000));
        assert_eq!(*b.last().unwrap(), (f64::INFINITY, 1001));
        assert_eq!(s.count(), 1001);
        assert!((s.sum_s() - 100.5005).abs() < 1e-9, "{}", s.sum_s());
        h.reset();
        assert_eq!(h.count(), 0);
        assert_eq!(h.snapshot().sum_s(), 0.0);
    }
}
