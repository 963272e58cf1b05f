//! The gates every event passes before delivery, as pure functions of the
//! event, the TrueTime `now` and a shard's de-duplication window.
//!
//! - **Staleness**: an event is dropped when it is *certainly* older than
//!   its type's threshold: `now.earliest − created > threshold`, where
//!   `created` is the creation time the caller gave (its TrueTime `latest`,
//!   never before the true creation). An event whose age is uncertain is
//!   delivered.
//! - **De-duplication**: the first event under an idempotency key
//!   `(member, creation time, nonce)` passes; later ones within the window
//!   are duplicates. The window covers creation times down to
//!   `now.earliest − window`, and the window is at least the largest
//!   staleness threshold, so a duplicate that falls out of the window is
//!   stale anyway: duplicates are dropped exactly, with bounded memory.
//! - **Targeting and the online check** happen per device at delivery
//!   ([`crate::model::Targets`], [`crate::registry`]).
//!
//! The window holds 128-bit keyed hashes of the keys, in one-second buckets
//! of creation time, and is capped in entries: at the cap the oldest bucket
//! is evicted early and counted (status reports it), never silently.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use eventlog::IdempotencyToken;
use fbclock::TrueTime;

const NS_PER_S: i64 = 1_000_000_000;

/// What the gates decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Pass,
    /// Certainly older than its type's threshold.
    Stale,
    /// Seen before under the same idempotency key.
    Duplicate,
}

/// Whether an event created at `created_ns` is certainly older than `threshold` at `now`.
#[must_use]
pub fn is_stale(created_ns: i64, now: TrueTime, threshold: Duration) -> bool {
    let threshold = i64::try_from(threshold.as_nanos()).unwrap_or(i64::MAX);
    now.earliest_ns.saturating_sub(created_ns) > threshold
}

/// A shard's de-duplication window.
#[derive(Debug)]
pub struct DedupWindow {
    window_ns: i64,
    cap: usize,
    len: usize,
    /// Creation second → key hashes.
    buckets: BTreeMap<i64, HashSet<u128, IdentityState>>,
    hashers: (RandomState, RandomState),
    evicted_early: u64,
}

/// The hashes are already uniform: use them as they are.
#[derive(Clone, Copy, Debug, Default)]
struct IdentityState;

impl BuildHasher for IdentityState {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

#[derive(Debug)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

impl DedupWindow {
    /// A window of `window` (by creation time) holding at most `cap` keys.
    #[must_use]
    pub fn new(window: Duration, cap: usize) -> Self {
        Self {
            window_ns: i64::try_from(window.as_nanos()).unwrap_or(i64::MAX),
            cap: cap.max(1),
            len: 0,
            buckets: BTreeMap::new(),
            hashers: (RandomState::new(), RandomState::new()),
            evicted_early: 0,
        }
    }

    fn hash(&self, member: &str, token: &IdempotencyToken) -> u128 {
        let key = (member, token.event_time_ns, token.nonce);
        (u128::from(self.hashers.0.hash_one(key)) << 64) | u128::from(self.hashers.1.hash_one(key))
    }

    /// Records the key; `true` if it was not in the window (first sighting).
    /// Keys older than the window are not recorded (they are stale) and
    /// report `true`.
    pub fn first_sighting(
        &mut self,
        member: &str,
        token: &IdempotencyToken,
        now: TrueTime,
    ) -> bool {
        let second = token.event_time_ns.div_euclid(NS_PER_S);
        if second < self.horizon(now) {
            return true;
        }
        let hash = self.hash(member, token);
        let bucket = self.buckets.entry(second).or_default();
        if !bucket.insert(hash) {
            return false;
        }
        self.len += 1;
        while self.len > self.cap {
            let Some((_, oldest)) = self.buckets.pop_first() else {
                break;
            };
            self.len -= oldest.len();
            self.evicted_early += oldest.len() as u64;
        }
        true
    }

    /// The first creation second still inside the window.
    fn horizon(&self, now: TrueTime) -> i64 {
        now.earliest_ns
            .saturating_sub(self.window_ns)
            .div_euclid(NS_PER_S)
    }

    /// Removes a key recorded by [`DedupWindow::first_sighting`] (a batch
    /// that could not be stored is processed again and must not find its
    /// own keys).
    pub fn forget(&mut self, member: &str, token: &IdempotencyToken) {
        let second = token.event_time_ns.div_euclid(NS_PER_S);
        let hash = self.hash(member, token);
        if let Some(bucket) = self.buckets.get_mut(&second)
            && bucket.remove(&hash)
        {
            self.len -= 1;
        }
    }

    /// Drops the buckets that have left the window.
    pub fn expire(&mut self, now: TrueTime) {
        let horizon = self.horizon(now);
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= horizon {
                break;
            }
            self.len -= entry.remove().len();
        }
    }

    /// Keys held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys evicted before their time because the cap was reached (a
    /// duplicate of one of them would pass).
    #[must_use]
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }
}

/// Runs the staleness and de-duplication gates on one event.
pub fn judge(
    member: &str,
    token: &IdempotencyToken,
    staleness: Duration,
    now: TrueTime,
    window: &mut DedupWindow,
) -> Verdict {
    if !window.first_sighting(member, token, now) {
        Verdict::Duplicate
    } else if is_stale(token.event_time_ns, now, staleness) {
        Verdict::Stale
    } else {
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NS_PER_S;

    fn at(t: i64) -> TrueTime {
        TrueTime {
            earliest_ns: t - 1_000,
            latest_ns: t + 1_000,
        }
    }

    fn token(t: i64, nonce: u128) -> IdempotencyToken {
        IdempotencyToken {
            event_time_ns: t,
            nonce,
        }
    }

    #[test]
    fn only_certainly_stale_events_are_dropped() {
        let limit = Duration::from_secs(10);
        let created = 100 * S;
        // Age between 10 s − 1 µs and 10 s + 1 µs: uncertain, delivered.
        assert!(!is_stale(created, at(110 * S), limit));
        assert!(!is_stale(created, at(110 * S + 1_000), limit));
        assert!(is_stale(created, at(110 * S + 1_001), limit));
        // Creation times in the future are not stale.
        assert!(!is_stale(created, at(0), limit));
        assert!(is_stale(i64::MIN, at(0), limit));
    }

    #[test]
    fn duplicates_are_caught_per_member_and_token() {
        let mut w = DedupWindow::new(Duration::from_secs(60), 1_000);
        let now = at(1_000 * S);
        let limit = Duration::from_secs(30);
        assert_eq!(
            judge("a", &token(990 * S, 1), limit, now, &mut w),
            Verdict::Pass
        );
        assert_eq!(
            judge("a", &token(990 * S, 1), limit, now, &mut w),
            Verdict::Duplicate
        );
        assert_eq!(
            judge("b", &token(990 * S, 1), limit, now, &mut w),
            Verdict::Pass
        );
        assert_eq!(
            judge("a", &token(990 * S, 2), limit, now, &mut w),
            Verdict::Pass
        );
        assert_eq!(
            judge("a", &token(960 * S, 3), limit, now, &mut w),
            Verdict::Stale
        );
        // A retry of a stale event is a duplicate (it was recorded), and
        // a very old one is stale either way.
        assert_eq!(
            judge("a", &token(960 * S, 3), limit, now, &mut w),
            Verdict::Duplicate
        );
        assert_eq!(
            judge("a", &token(10 * S, 4), limit, now, &mut w),
            Verdict::Stale
        );
        assert_eq!(w.len(), 4);
        w.forget("a", &token(990 * S, 1));
        w.forget("a", &token(990 * S, 1));
        assert_eq!(w.len(), 3);
        assert_eq!(
            judge("a", &token(990 * S, 1), limit, now, &mut w),
            Verdict::Pass
        );
    }

    #[test]
    fn the_window_expires_by_creation_time_and_respects_its_cap() {
        let mut w = DedupWindow::new(Duration::from_secs(10), 100);
        for i in 0..50 {
            assert!(w.first_sighting("m", &token(100 * S + i * S / 10, i as u128), at(101 * S)));
        }
        assert_eq!(w.len(), 50);
        w.expire(at(112 * S));
        // Creation seconds 100 and 101 left the window (horizon 102 − 1 µs → 101).
        assert!(w.len() < 50 && !w.is_empty(), "{}", w.len());
        w.expire(at(200 * S));
        assert!(w.is_empty());
        for i in 0..150 {
            w.first_sighting("m", &token(200 * S + i * S / 20, i as u128), at(200 * S));
        }
        assert!(w.len() <= 100);
        assert!(w.evicted_early() >= 50);
    }
}
