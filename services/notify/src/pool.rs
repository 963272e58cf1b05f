//! Sizing each priority's processing pool by declarative reconciliation.
//!
//! A [`PoolPolicy`] turns the queue lag into a *goal* (how many workers the
//! priority should have): up at once to what the lag asks for (aggressive
//! scale-up, a backlog is drained now), down by one worker only after the
//! lag has asked for fewer for a whole `scale_down_after` (slow scale-down,
//! so a burst that comes and goes does not make the pool thrash). The
//! service's reconciler then drives the running workers toward the goal;
//! both goal and actual are in the status output, with the reason of the
//! last change. Pure: time is an argument.

use std::time::{Duration, Instant};

/// How one priority's pool scales.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolPolicy {
    /// Fewest workers.
    pub min: usize,
    /// Most workers (at most the shard count: a shard is processed by one worker at a time).
    pub max: usize,
    /// Lag one worker is expected to absorb; more lag asks for more workers.
    pub lag_per_worker: u64,
    /// How long the lag must ask for fewer workers before one is removed.
    pub scale_down_after: Duration,
}

impl PoolPolicy {
    /// Workers the lag asks for, within `[min, max]`.
    #[must_use]
    pub fn wanted(&self, lag: u64) -> usize {
        let per = self.lag_per_worker.max(1);
        let wanted = usize::try_from(lag.div_ceil(per)).unwrap_or(usize::MAX);
        wanted.clamp(self.min.max(1), self.max.max(self.min).max(1))
    }
}

/// A pool's goal and how it got there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goal {
    /// Workers the pool should have.
    pub workers: usize,
    /// Since when the lag has asked for fewer than `workers`.
    below_since: Option<Instant>,
    /// Why the goal last changed.
    pub reason: String,
}

impl Goal {
    /// The starting goal: the policy's minimum.
    #[must_use]
    pub fn initial(policy: &PoolPolicy) -> Self {
        Self {
            workers: policy.wanted(0),
            below_since: None,
            reason: "start".into(),
        }
    }

    /// Updates the goal for `lag` at `now`; whether it changed.
    pub fn update(&mut self, policy: &PoolPolicy, lag: u64, now: Instant) -> bool {
        let wanted = policy.wanted(lag);
        if wanted > self.workers {
            self.reason = format!("scale up {} -> {wanted}: lag {lag}", self.workers);
            self.workers = wanted;
            self.below_since = None;
            return true;
        }
        if wanted == self.workers {
            self.below_since = None;
            return false;
        }
        match self.below_since {
            None => {
                self.below_since = Some(now);
                false
            }
            Some(since) if now.duration_since(since) >= policy.scale_down_after => {
                self.reason = format!(
                    "scale down {} -> {}: lag {lag} for {:?}",
                    self.workers,
                    self.workers - 1,
                    policy.scale_down_after
                );
                self.workers -= 1;
                self.below_since = (wanted < self.workers).then_some(now);
                true
            }
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PoolPolicy {
        PoolPolicy {
            min: 1,
            max: 4,
            lag_per_worker: 1_000,
            scale_down_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn scales_up_at_once_and_down_slowly() {
        let p = policy();
        let t0 = Instant::now();
        let mut g = Goal::initial(&p);
        assert_eq!(g.workers, 1);
        assert!(g.update(&p, 3_500, t0));
        assert_eq!(g.workers, 4, "one step straight to what the lag asks");
        assert!(!g.update(&p, 100_000, t0), "capped at max");
        // The backlog is gone: nothing happens for 30 s…
        assert!(!g.update(&p, 0, t0));
        assert!(!g.update(&p, 0, t0 + Duration::from_secs(29)));
        // …then one worker per 30 s.
        assert!(g.update(&p, 0, t0 + Duration::from_secs(30)));
        assert_eq!(g.workers, 3);
        assert!(!g.update(&p, 0, t0 + Duration::from_secs(45)));
        assert!(g.update(&p, 0, t0 + Duration::from_secs(60)));
        assert_eq!(g.workers, 2);
        assert!(g.reason.contains("scale down 3 -> 2"), "{}", g.reason);
        // A short dip that recovers resets the timer.
        assert!(!g.update(&p, 0, t0 + Duration::from_secs(61)));
        assert!(!g.update(&p, 1_500, t0 + Duration::from_secs(62)));
        assert!(!g.update(&p, 0, t0 + Duration::from_secs(63)));
        assert!(!g.update(&p, 0, t0 + Duration::from_secs(90)));
        assert!(g.update(&p, 0, t0 + Duration::from_secs(93)));
        assert_eq!(g.workers, 1);
        assert!(
            !g.update(&p, 0, t0 + Duration::from_secs(500)),
            "floor at min"
        );
    }

    #[test]
    fn odd_policies_stay_in_bounds() {
        let p = PoolPolicy {
            min: 0,
            max: 0,
            lag_per_worker: 0,
            scale_down_after: Duration::ZERO,
        };
        assert_eq!(p.wanted(u64::MAX), 1);
        assert_eq!(p.wanted(0), 1);
    }
}
