//! The circuit breaker as a small pure state machine (time passed in).
//!
//! * **Closed**: everything goes through. `threshold` consecutive channel
//!   failures ([`SendError::Transient`], [`SendError::Timeout`]) open it; a
//!   success resets the count. [`SendError::Rejected`] and
//!   [`SendError::Unregistered`] are the device's fault: they neither count
//!   nor reset.
//! * **Open**: nothing is admitted or sent, for `open_for`.
//! * **HalfOpen** (after `open_for`): exactly one probe is sent. If the
//!   provider answers (success, or a device-level refusal) the breaker closes;
//!   a channel failure opens it again and restarts the timer.
//!
//! Results of requests that were let through while Closed but finish after
//! the breaker left Closed are ignored; only the probe decides HalfOpen.

use std::time::{Duration, Instant};

use crate::SendError;

/// State of a circuit breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Requests flow.
    #[default]
    Closed,
    /// Requests are refused until the cool-down ends.
    Open,
    /// One probe request decides between Closed and Open.
    HalfOpen,
}

/// What a sender got from [`Breaker::acquire`]; hand it back to [`Breaker::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Permit {
    /// An ordinary request while Closed.
    Normal,
    /// The single HalfOpen probe.
    Probe,
}

/// A circuit breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    state: BreakerState,
    threshold: u32,
    open_for: Duration,
    failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
    opened_count: u64,
}

impl Breaker {
    /// A closed breaker opening after `threshold` (at least 1) consecutive
    /// channel failures and staying open for `open_for`.
    #[must_use]
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            state: BreakerState::Closed,
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            opened_at: None,
            probe_in_flight: false,
            opened_count: 0,
        }
    }

    /// The state as of the last transition (an Open breaker whose cool-down
    /// has ended moves to HalfOpen on the next [`admits`](Self::admits) or
    /// [`acquire`](Self::acquire)).
    #[must_use]
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// The state as it would be seen at `now` (Open past its cool-down reads HalfOpen).
    #[must_use]
    pub fn state_at(&self, now: Instant) -> BreakerState {
        if self.state == BreakerState::Open && self.cooled_down(now) {
            BreakerState::HalfOpen
        } else {
            self.state
        }
    }

    /// Consecutive channel failures counted while Closed.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How many times the breaker has opened.
    #[must_use]
    pub fn opened_count(&self) -> u64 {
        self.opened_count
    }

    /// Closed with no failures counted: successes change nothing.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.state == BreakerState::Closed && self.failures == 0
    }

    fn cooled_down(&self, now: Instant) -> bool {
        self.opened_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.open_for)
    }

    fn tick(&mut self, now: Instant) {
        if self.state == BreakerState::Open && self.cooled_down(now) {
            self.state = BreakerState::HalfOpen;
            self.probe_in_flight = false;
        }
    }

    /// Whether a new request may be queued at `now`: Closed, or HalfOpen
    /// with the probe not yet taken.
    pub fn admits(&mut self, now: Instant) -> bool {
        self.tick(now);
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.probe_in_flight,
        }
    }

    /// Asks to send one request at `now`: `None` means do not send (Open, or
    /// HalfOpen with the probe already out).
    pub fn acquire(&mut self, now: Instant) -> Option<Permit> {
        self.tick(now);
        match self.state {
            BreakerState::Closed => Some(Permit::Normal),
            BreakerState::Open => None,
            BreakerState::HalfOpen if self.probe_in_flight => None,
            BreakerState::HalfOpen => {
                self.probe_in_flight = true;
                Some(Permit::Probe)
            }
        }
    }

    /// Records the result of a request sent under `permit`, at `now`.
    pub fn record(&mut self, permit: Permit, result: &Result<(), SendError>, now: Instant) {
        let channel_failure = matches!(result, Err(e) if e.is_channel_failure());
        match (permit, self.state) {
            (Permit::Normal, BreakerState::Closed) => {
                if channel_failure {
                    self.failures += 1;
                    if self.failures >= self.threshold {
                        self.open(now);
                    }
                } else if result.is_ok() {
                    self.failures = 0;
                }
            }
            (Permit::Probe, BreakerState::HalfOpen) => {
                self.probe_in_flight = false;
                if channel_failure {
                    self.open(now);
                } else {
                    self.state = BreakerState::Closed;
                    self.failures = 0;
                    self.opened_at = None;
                }
            }
            // Late results of requests admitted under an earlier state.
            _ => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.failures = 0;
        self.probe_in_flight = false;
        self.opened_count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(10);

    fn fail() -> Result<(), SendError> {
        Err(SendError::Transient("503".into()))
    }

    fn open_breaker(now: Instant) -> Breaker {
        let mut b = Breaker::new(3, OPEN_FOR);
        for _ in 0..3 {
            let p = b.acquire(now).unwrap();
            b.record(p, &fail(), now);
        }
        assert_eq!(b.state(), BreakerState::Open);
        b
    }

    #[test]
    fn opens_after_consecutive_channel_failures() {
        let t = Instant::now();
        let mut b = Breaker::new(3, OPEN_FOR);
        for _ in 0..2 {
            let p = b.acquire(t).unwrap();
            b.record(p, &fail(), t);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failures(), 2);
        let p = b.acquire(t).unwrap();
        b.record(p, &Err(SendError::Timeout), t);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened_count(), 1);
        assert!(!b.admits(t));
        assert_eq!(b.acquire(t), None);
    }

    #[test]
    fn success_resets_and_device_errors_do_not_count() {
        let t = Instant::now();
        let mut b = Breaker::new(2, OPEN_FOR);
        b.record(Permit::Normal, &fail(), t);
        b.record(Permit::Normal, &Ok(()), t);
        assert_eq!(b.failures(), 0);
        assert!(b.is_clean());
        b.record(Permit::Normal, &fail(), t);
        for _ in 0..10 {
            b.record(Permit::Normal, &Err(SendError::Unregistered), t);
            b.record(
                Permit::Normal,
                &Err(SendError::Rejected("BadDeviceToken".into())),
                t,
            );
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failures(), 1);
        b.record(Permit::Normal, &fail(), t);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn half_open_allows_exactly_one_probe_and_closes_on_success() {
        let t = Instant::now();
        let mut b = open_breaker(t);
        assert!(!b.admits(t + OPEN_FOR / 2));
        assert_eq!(b.state_at(t + OPEN_FOR), BreakerState::HalfOpen);
        let later = t + OPEN_FOR;
        assert!(b.admits(later));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.acquire(later), Some(Permit::Probe));
        assert_eq!(b.acquire(later), None, "only one probe");
        assert!(!b.admits(later), "no queueing while the probe is out");
        b.record(Permit::Probe, &Ok(()), later);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.is_clean());
        assert_eq!(b.acquire(later), Some(Permit::Normal));
    }

    #[test]
    fn failed_probe_reopens_and_restarts_the_timer() {
        let t = Instant::now();
        let mut b = open_breaker(t);
        let probe_at = t + OPEN_FOR + Duration::from_secs(1);
        assert_eq!(b.acquire(probe_at), Some(Permit::Probe));
        b.record(Permit::Probe, &Err(SendError::Timeout), probe_at);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened_count(), 2);
        assert!(!b.admits(probe_at + OPEN_FOR - Duration::from_millis(1)));
        assert!(b.admits(probe_at + OPEN_FOR));
    }

    #[test]
    fn probe_answered_with_device_error_closes() {
        let t = Instant::now();
        let mut b = open_breaker(t);
        let p = b.acquire(t + OPEN_FOR).unwrap();
        b.record(p, &Err(SendError::Unregistered), t + OPEN_FOR);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn late_results_are_ignored_outside_closed() {
        let t = Instant::now();
        let mut b = open_breaker(t);
        b.record(Permit::Normal, &Ok(()), t);
        b.record(Permit::Normal, &fail(), t);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened_count(), 1);
        let later = t + OPEN_FOR;
        let p = b.acquire(later).unwrap();
        b.record(Permit::Normal, &fail(), later);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(p, &Ok(()), later);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn zero_threshold_means_one() {
        let t = Instant::now();
        let mut b = Breaker::new(0, OPEN_FOR);
        b.record(Permit::Normal, &fail(), t);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
