//! Per-stage counters and latency histograms, rendered as Prometheus text.
//!
//! Everything is a relaxed atomic: recording costs a few nanoseconds on the
//! hot path and never takes a lock. Histograms are log-linear (8 buckets per
//! power of two, so a quantile is within 9 % of the true value) and export
//! a fixed set of Prometheus `le` bounds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use outbound::Channel;

use crate::model::Priority;

const SUB_BITS: u32 = 3;
const BUCKETS: usize = 64 << SUB_BITS;
/// Prometheus bucket bounds, seconds.
const LE: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram (nanoseconds).
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < 1 << SUB_BITS {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    let sub = (ns >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (((msb - SUB_BITS + 1) << SUB_BITS) as u64 + sub) as usize
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
    /// Records one value.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns).min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Values recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
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
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum_ns.store(0, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        let mut i = 0;
        for le in LE {
            let limit = (le * 1e9) as u64;
            while i < BUCKETS && bucket_top(i) <= limit {
                cumulative += self.buckets[i].load(Ordering::Relaxed);
                i += 1;
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// A counter per priority.
#[derive(Debug, Default)]
pub struct PerPriority([AtomicU64; 3]);

impl PerPriority {
    /// Adds `n` for `p`.
    pub fn add(&self, p: Priority, n: u64) {
        self.0[p.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The value for `p`.
    #[must_use]
    pub fn get(&self, p: Priority) -> u64 {
        self.0[p.index()].load(Ordering::Relaxed)
    }
}

/// A counter per channel.
#[derive(Debug, Default)]
pub struct PerChannel([AtomicU64; 3]);

impl PerChannel {
    /// Adds one for `c`.
    pub fn inc(&self, c: Channel) {
        self.0[channel_index(c)].fetch_add(1, Ordering::Relaxed);
    }

    /// The value for `c`.
    #[must_use]
    pub fn get(&self, c: Channel) -> u64 {
        self.0[channel_index(c)].load(Ordering::Relaxed)
    }
}

/// Position of `c` in [`Channel::ALL`].
#[must_use]
pub fn channel_index(c: Channel) -> usize {
    Channel::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

/// The pipeline's metrics, stage by stage.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events accepted at ingest (durable).
    pub ingested: PerPriority,
    /// Events refused at ingest: invalid.
    pub refused_invalid: PerPriority,
    /// Events refused at ingest: overload (admission limit or lag cap).
    pub refused_overload: PerPriority,
    /// Records read by the processors.
    pub processed: PerPriority,
    /// Dropped by the staleness gate.
    pub stale: PerPriority,
    /// Dropped by the de-duplication gate.
    pub duplicate: PerPriority,
    /// Records that did not decode or name an unconfigured type.
    pub corrupt: PerPriority,
    /// Notifications written to the member store.
    pub stored: PerPriority,
    /// Stored notifications with no online targeted device (pull only).
    pub offline: PerPriority,
    /// Pushes handed to a channel.
    pub pushed: PerChannel,
    /// Pushes a channel refused: queue full.
    pub shed_queue_full: PerChannel,
    /// Pushes a channel refused: breaker open.
    pub shed_breaker_open: PerChannel,
    /// Pushes delivered.
    pub delivered: PerChannel,
    /// Pushes that failed.
    pub failed: PerChannel,
    /// Store write failures (the batch is retried).
    pub store_errors: AtomicU64,
    /// Ingest → stored, per priority.
    pub stored_latency: [Histogram; 3],
    /// Ingest → delivered, per channel, urgent (high priority) or not.
    pub delivered_latency: [[Histogram; 2]; 3],
}

impl Metrics {
    /// Ingest → delivered latency of `channel`, high priority or not.
    #[must_use]
    pub fn delivery(&self, channel: Channel, urgent: bool) -> &Histogram {
        &self.delivered_latency[channel_index(channel)][usize::from(urgent)]
    }

    /// Prometheus text exposition. `gauges` adds `(name, labels, value)` lines.
    #[must_use]
    pub fn render(&self, gauges: &[(&str, String, f64)]) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let per_priority: [(&str, &str, &PerPriority); 9] = [
            (
                "ingested",
                "events accepted at ingest (durable)",
                &self.ingested,
            ),
            (
                "refused_invalid",
                "events refused at ingest as invalid",
                &self.refused_invalid,
            ),
            (
                "refused_overload",
                "events refused at ingest for overload",
                &self.refused_overload,
            ),
            (
                "processed",
                "log records read by the processors",
                &self.processed,
            ),
            ("stale", "events dropped by the staleness gate", &self.stale),
            (
                "duplicate",
                "events dropped by the de-duplication gate",
                &self.duplicate,
            ),
            ("corrupt", "log records that did not decode", &self.corrupt),
            (
                "stored",
                "notifications written to the member store",
                &self.stored,
            ),
            (
                "offline",
                "stored notifications with no online targeted device",
                &self.offline,
            ),
        ];
        for (name, help, c) in per_priority {
            let _ = writeln!(out, "# HELP timecard_notify_{name}_total {help}");
            let _ = writeln!(out, "# TYPE timecard_notify_{name}_total counter");
            for p in Priority::ALL {
                let _ = writeln!(
                    out,
                    "timecard_notify_{name}_total{{priority=\"{p}\"}} {}",
                    c.get(p)
                );
            }
        }
        let per_channel: [(&str, &str, &PerChannel); 5] = [
            ("pushed", "pushes handed to a channel", &self.pushed),
            (
                "shed_queue_full",
                "pushes refused: channel queue full",
                &self.shed_queue_full,
            ),
            (
                "shed_breaker_open",
                "pushes refused: circuit breaker open",
                &self.shed_breaker_open,
            ),
            ("delivered", "pushes delivered", &self.delivered),
            ("failed", "pushes that failed", &self.failed),
        ];
        for (name, help, c) in per_channel {
            let _ = writeln!(out, "# HELP timecard_notify_{name}_total {help}");
            let _ = writeln!(out, "# TYPE timecard_notify_{name}_total counter");
            for ch in Channel::ALL {
                let _ = writeln!(
                    out,
                    "timecard_notify_{name}_total{{channel=\"{ch}\"}} {}",
                    c.get(ch)
                );
            }
        }
        let _ = writeln!(
            out,
            "# TYPE timecard_notify_store_errors_total counter\ntimecard_notify_store_errors_total {}",
            self.store_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP timecard_notify_stored_seconds ingest to member store\n# TYPE timecard_notify_stored_seconds histogram"
        );
        for p in Priority::ALL {
            self.stored_latency[p.index()].render(
                &mut out,
                "timecard_notify_stored_seconds",
                &format!("priority=\"{p}\""),
            );
        }
        let _ = writeln!(
            out,
            "# HELP timecard_notify_delivered_seconds ingest to delivery\n# TYPE timecard_notify_delivered_seconds histogram"
        );
        for ch in Channel::ALL {
            for urgent in [true, false] {
                self.delivery(ch, urgent).render(
                    &mut out,
                    "timecard_notify_delivered_seconds",
                    &format!("channel=\"{ch}\",urgent=\"{urgent}\""),
                );
            }
        }
        for (name, labels, value) in gauges {
            let _ = writeln!(out, "timecard_notify_{name}{{{labels}}} {value}");
        }
        out
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
        for v in [0u64, 1, 7, 8, 9, 100, 1_000, 123_456, 10_000_000_000] {
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
    fn quantiles_and_exposition() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).unwrap().as_micros() as f64;
        let p99 = h.quantile(0.99).unwrap().as_micros() as f64;
        assert!((500.0..560.0).contains(&p50), "{p50}");
        assert!((990.0..1100.0).contains(&p99), "{p99}");
        let m = Metrics::default();
        m.ingested.add(Priority::High, 3);
        m.delivery(Channel::Fcm, true)
            .record(Duration::from_millis(3));
        let text = m.render(&[("lag", "priority=\"low\"".into(), 7.0)]);
        assert!(text.contains("timecard_notify_ingested_total{priority=\"high\"} 3"));
        assert!(text.contains(
            "timecard_notify_delivered_seconds_bucket{channel=\"fcm\",urgent=\"true\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains(
            "timecard_notify_delivered_seconds_bucket{channel=\"fcm\",urgent=\"true\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("timecard_notify_lag{priority=\"low\"} 7"));
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
