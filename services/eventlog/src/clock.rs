//! TrueTime for services: an interval `[earliest, latest]` (TAI ns) that
//! contains true time.
//!
//! In production it comes from `fbclockd`'s shared memory (the `fbclock`
//! client: one `clock_gettime`, no syscall to the daemon). On a laptop with
//! no daemon, the system clock is used with a configured error bound — an
//! assumption, not a measurement, and [`TimeSource::describe`] says so in
//! every status output. Tests use a [`ManualClock`] they move by hand.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use fbclock::{FbClock, TrueTime};

/// TAI − UTC since 2017-01-01, seconds (used to put the system clock on TAI).
pub const TAI_UTC_S: i64 = 37;
const NS_PER_S: i64 = 1_000_000_000;

/// Why no TrueTime could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The fbclock client refused (no data, stale, WOU too big, …).
    #[error("fbclock: {0}")]
    Fbclock(#[from] fbclock::Error),
}

/// A clock that a test moves by hand: true time is `now`, the interval is
/// `now ± half_width`.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ns: AtomicI64,
    half_width_ns: AtomicI64,
}

impl ManualClock {
    /// A clock at `now_ns` with an interval of `± half_width_ns`.
    #[must_use]
    pub fn new(now_ns: i64, half_width_ns: i64) -> Arc<Self> {
        Arc::new(Self {
            now_ns: AtomicI64::new(now_ns),
            half_width_ns: AtomicI64::new(half_width_ns),
        })
    }

    /// Moves true time forward (or back) by `ns`.
    pub fn advance(&self, ns: i64) {
        self.now_ns.fetch_add(ns, Ordering::SeqCst);
    }

    /// True time, ns.
    #[must_use]
    pub fn now_ns(&self) -> i64 {
        self.now_ns.load(Ordering::SeqCst)
    }

    /// Sets the interval's half width.
    pub fn set_half_width(&self, ns: i64) {
        self.half_width_ns.store(ns, Ordering::SeqCst);
    }
}

/// Where a service reads TrueTime.
#[derive(Clone)]
pub enum TimeSource {
    /// `fbclockd`'s shared memory.
    Fbclock(Arc<FbClock>),
    /// `CLOCK_REALTIME` + TAI−UTC, with an assumed error bound.
    System {
        /// Half width of the interval, ns (assumed, not measured).
        error_bound_ns: i64,
    },
    /// A test clock.
    Manual(Arc<ManualClock>),
}

impl fmt::Debug for TimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TimeSource {
    /// The system clock with an assumed error bound of `error_bound_ns`.
    #[must_use]
    pub fn system(error_bound_ns: i64) -> Self {
        Self::System {
            error_bound_ns: error_bound_ns.max(0),
        }
    }

    /// `fbclockd`'s shared memory at `path` (default path if `None`) if it
    /// opens, else the system clock with an assumed bound of `system_bound_ns`
    /// (a warning is logged when an explicitly given path fails).
    #[must_use]
    pub fn fbclock_or_system(path: Option<&std::path::Path>, system_bound_ns: i64) -> Self {
        let chosen = path.unwrap_or(std::path::Path::new(fbclock::DEFAULT_PATH));
        match FbClock::open(chosen) {
            Ok(c) => Self::Fbclock(Arc::new(c)),
            Err(e) => {
                if path.is_some() {
                    tracing::warn!(path = %chosen.display(), error = %e, "fbclock unavailable; using the system clock");
                }
                Self::system(system_bound_ns)
            }
        }
    }

    /// TrueTime now.
    pub fn now(&self) -> Result<TrueTime, ClockError> {
        match self {
            Self::Fbclock(c) => Ok(c.now()?),
            Self::System { error_bound_ns } => {
                let t = fbclock::clock_ns(libc::CLOCK_REALTIME as u32) + TAI_UTC_S * NS_PER_S;
                Ok(TrueTime {
                    earliest_ns: t - error_bound_ns,
                    latest_ns: t + error_bound_ns,
                })
            }
            Self::Manual(m) => {
                let now = m.now_ns();
                let w = m.half_width_ns.load(Ordering::SeqCst);
                Ok(TrueTime {
                    earliest_ns: now - w,
                    latest_ns: now + w,
                })
            }
        }
    }

    /// One line for status output: which clock, and whether its bound is
    /// measured or assumed.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Fbclock(_) => "fbclock (TrueTime from fbclockd shared memory)".into(),
            Self::System { error_bound_ns } => format!(
                "system clock, ASSUMED error bound ±{} µs (no fbclockd: not a TrueTime guarantee)",
                error_bound_ns / 1000
            ),
            Self::Manual(_) => "manual test clock".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_interval_has_the_configured_width_on_tai() {
        let s = TimeSource::system(5_000_000);
        let tt = s.now().unwrap();
        assert_eq!(tt.wou_ns(), 10_000_000);
        let utc = fbclock::clock_ns(libc::CLOCK_REALTIME as u32);
        assert!((tt.midpoint_ns() - utc - TAI_UTC_S * NS_PER_S).abs() < NS_PER_S);
        assert!(s.describe().contains("ASSUMED"));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let m = ManualClock::new(1_000, 10);
        let s = TimeSource::Manual(m.clone());
        assert_eq!(s.now().unwrap().earliest_ns, 990);
        m.advance(500);
        m.set_half_width(0);
        assert_eq!(s.now().unwrap().latest_ns, 1_500);
    }

    #[test]
    fn missing_fbclock_file_is_an_error_not_a_panic() {
        assert!(FbClock::open("/nonexistent/fbclock").is_err());
    }
}
