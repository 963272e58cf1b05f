//! The counter's Prometheus metrics (`timecard_counter_*`, see
//! [`operate::metrics`]): operations by outcome and their latency, recorded
//! with relaxed atomics, and the service's [`Status`] as gauges and counters.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use operate::metrics::{Exposition, Histogram};

use crate::service::{CounterError, Status};

/// A counter operation, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `AddCount`.
    Add,
    /// `AddAndGetCount`.
    AddAndGet,
    /// `GetCount`.
    Get,
    /// `ClearCount`.
    Clear,
}

impl Operation {
    /// All operations, in label order.
    pub const ALL: [Self; 4] = [Self::Add, Self::AddAndGet, Self::Get, Self::Clear];

    /// The `op` label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::AddAndGet => "add_and_get",
            Self::Get => "get",
            Self::Clear => "clear",
        }
    }
}

/// Outcome labels, in slot order: success, then each error kind.
const OUTCOMES: [&str; 5] = ["ok", "invalid", "not_found", "out_of_range", "unavailable"];

/// The outcome slot of a result.
fn outcome<T>(r: &Result<T, CounterError>) -> usize {
    match r {
        Ok(_) => 0,
        Err(
            CounterError::BadName { .. }
            | CounterError::BadToken(_)
            | CounterError::TokenOutOfWindow(_),
        ) => 1,
        Err(CounterError::UnknownNamespace(..)) => 2,
        Err(CounterError::Overflow { .. } | CounterError::OutOfRange(_)) => 3,
        Err(CounterError::Unavailable(_)) => 4,
    }
}

/// Operations served (gRPC and HTTP alike), by outcome, and their latency.
#[derive(Debug, Default)]
pub struct OpMetrics {
    /// `[operation][outcome]`.
    count: [[AtomicU64; OUTCOMES.len()]; Operation::ALL.len()],
    /// Per operation.
    latency: [Histogram; Operation::ALL.len()],
}

impl OpMetrics {
    /// Runs `f`, counting its outcome and timing it as `op`.
    pub async fn time<T>(
        &self,
        op: Operation,
        f: impl Future<Output = Result<T, CounterError>>,
    ) -> Result<T, CounterError> {
        let start = Instant::now();
        let r = f.await;
        let i = op as usize;
        self.latency[i].record(start.elapsed());
        self.count[i][outcome(&r)].fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Writes the counter's families: operations, their latency, and `status`.
    pub fn write(&self, m: &mut Exposition, status: &Status) {
        let mut f = m.counter(
            "operations_total",
            "Counter operations served (gRPC and HTTP), by operation and outcome.",
        );
        for op in Operation::ALL {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let n = self.count[op as usize][o].load(Ordering::Relaxed);
                f.sample(&[("op", op.label()), ("outcome", outcome)], n);
            }
        }
        let mut f = m.histogram(
            "operation_duration_seconds",
            "Time to serve a counter operation, by operation.",
        );
        for op in Operation::ALL {
            f.sample(&[("op", op.label())], &self.latency[op as usize]);
        }
        m.gauge("counters", "Counters known (accurate and eventual).")
            .value(status.counters);
        m.gauge("pending_events", "Events not yet rolled up.")
            .value(status.pending_events);
        m.gauge(
            "rollup_boundary_seconds",
            "Global rollup boundary: TrueTime (TAI seconds since 1970) up to which counts are final.",
        )
        .value(status.rolled_up_to_ns as f64 / 1e9);
        m.gauge(
            "best_effort_degraded",
            "1 when best-effort counters have no memcached.",
        )
        .value(status.best_effort_degraded);
        for (name, help, v) in [
            (
                "events_appended_total",
                "Events appended to the log.",
                status.appended,
            ),
            (
                "duplicates_total",
                "Adds recognised as duplicates by their token.",
                status.duplicates,
            ),
            (
                "late_events_total",
                "Events that arrived after their rollup.",
                status.late,
            ),
            ("clears_total", "Clears applied.", status.cleared),
            (
                "corrupt_events_total",
                "Log records that did not decode.",
                status.corrupt,
            ),
            ("rollups_total", "Rollups run.", status.rollups),
            (
                "checkpoints_written_total",
                "Checkpoints written.",
                status.checkpoints_written,
            ),
            (
                "rollup_errors_total",
                "Rollups that failed.",
                status.rollup_errors,
            ),
        ] {
            m.counter(name, help).value(v);
        }
    }
}
