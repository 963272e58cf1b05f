//! Per-stage counters and latency histograms, written as Prometheus text
//! (`timecard_notify_*`, see [`operate::metrics`]).
//!
//! Everything is a relaxed atomic: recording costs a few nanoseconds on the
//! hot path and never takes a lock. Latencies go into
//! [`operate::metrics::Histogram`]s (log-linear, within 13 %).

use std::sync::atomic::{AtomicU64, Ordering};

use operate::metrics::Exposition;
pub use operate::metrics::Histogram;
use outbound::Channel;

use crate::model::Priority;

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

    /// Writes the pipeline's counters and histograms into `m`.
    pub fn write(&self, m: &mut Exposition) {
        let per_priority: [(&str, &str, &PerPriority); 9] = [
            (
                "ingested_total",
                "Events accepted at ingest (durable).",
                &self.ingested,
            ),
            (
                "refused_invalid_total",
                "Events refused at ingest as invalid.",
                &self.refused_invalid,
            ),
            (
                "refused_overload_total",
                "Events refused at ingest for overload.",
                &self.refused_overload,
            ),
            (
                "processed_total",
                "Log records read by the processors.",
                &self.processed,
            ),
            (
                "stale_total",
                "Events dropped by the staleness gate.",
                &self.stale,
            ),
            (
                "duplicate_total",
                "Events dropped by the de-duplication gate.",
                &self.duplicate,
            ),
            (
                "corrupt_total",
                "Log records that did not decode.",
                &self.corrupt,
            ),
            (
                "stored_total",
                "Notifications written to the member store.",
                &self.stored,
            ),
            (
                "offline_total",
                "Stored notifications with no online targeted device.",
                &self.offline,
            ),
        ];
        for (name, help, c) in per_priority {
            let mut f = m.counter(name, help);
            for p in Priority::ALL {
                f.sample(&[("priority", &p.to_string())], c.get(p));
            }
        }
        let per_channel: [(&str, &str, &PerChannel); 5] = [
            ("pushed_total", "Pushes handed to a channel.", &self.pushed),
            (
                "shed_queue_full_total",
                "Pushes refused: channel queue full.",
                &self.shed_queue_full,
            ),
            (
                "shed_breaker_open_total",
                "Pushes refused: circuit breaker open.",
                &self.shed_breaker_open,
            ),
            ("delivered_total", "Pushes delivered.", &self.delivered),
            ("failed_total", "Pushes that failed.", &self.failed),
        ];
        for (name, help, c) in per_channel {
            let mut f = m.counter(name, help);
            for ch in Channel::ALL {
                f.sample(&[("channel", &ch.to_string())], c.get(ch));
            }
        }
        m.counter(
            "store_errors_total",
            "Member store write failures (the batch is retried).",
        )
        .value(self.store_errors.load(Ordering::Relaxed));
        let mut f = m.histogram("stored_seconds", "Time from ingest to the member store.");
        for p in Priority::ALL {
            f.sample(
                &[("priority", &p.to_string())],
                &self.stored_latency[p.index()],
            );
        }
        let mut f = m.histogram("delivered_seconds", "Time from ingest to delivery.");
        for ch in Channel::ALL {
            for urgent in [true, false] {
                f.sample(
                    &[
                        ("channel", &ch.to_string()),
                        ("urgent", &urgent.to_string()),
                    ],
                    self.delivery(ch, urgent),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn exposition() {
        let m = Metrics::default();
        m.ingested.add(Priority::High, 3);
        m.delivery(Channel::Fcm, true)
            .record(Duration::from_millis(3));
        let mut e = Exposition::new("notify", "0");
        m.write(&mut e);
        let text = e.finish();
        assert!(text.contains("timecard_notify_ingested_total{priority=\"high\"} 3\n"));
        assert!(text.contains(
            "timecard_notify_delivered_seconds_bucket{channel=\"fcm\",urgent=\"true\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains(
            "timecard_notify_delivered_seconds_bucket{channel=\"fcm\",urgent=\"true\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains("# TYPE timecard_notify_store_errors_total counter\n"));
    }
}
