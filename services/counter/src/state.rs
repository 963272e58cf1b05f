//! The counters' state machine: pure, no I/O, no clocks (time is passed in).
//!
//! Every add or clear is an event with an event time `t` (the idempotency
//! token's) and a log sequence number. Per counter the index keeps
//!
//! - a **checkpoint**: the count of every event with `t < frozen` — the
//!   last rollup, which is what an eventually consistent read returns;
//! - the **pending** events with `t ≥ frozen`, keyed by token, so a
//!   duplicate (retry, hedge, replay after a restart) is recognised and
//!   counted once; their sum is kept, so an accurate read is O(1).
//!
//! [`Index::freeze`] moves everything before a boundary into the
//! checkpoints (the rollup). The caller only freezes boundaries that no
//! future event can fall behind (see `service.rs`), so frozen windows are
//! immutable and a rollup computed twice gives the same answer.
//!
//! Clear at `T` means: the count becomes the sum of events with `t > T`.
//!
//! Pending events are also tallied per time slice with the smallest log
//! sequence in it: after a rollup, [`Index::resume_seq`] is where a restart
//! must start reading the log to rebuild the pending part exactly.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use eventlog::IdempotencyToken;

/// Time slice of the pending tally, ns: freeze boundaries are multiples.
pub const SLICE_NS: i64 = 100_000_000;
const SHARDS: usize = 32;

/// A mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add a (signed) delta.
    Add(i64),
    /// Reset to zero at the event time.
    Clear,
}

impl Op {
    /// Payload bytes: `1 | delta i64` or `2`.
    #[must_use]
    pub fn encode(self) -> Vec<u8> {
        match self {
            Self::Add(d) => {
                let mut v = vec![1];
                v.extend_from_slice(&d.to_le_bytes());
                v
            }
            Self::Clear => vec![2],
        }
    }

    /// Parses [`Op::encode`]'s bytes.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        match b {
            [1, rest @ ..] if rest.len() == 8 => {
                Some(Self::Add(i64::from_le_bytes(rest.try_into().ok()?)))
            }
            [2] => Some(Self::Clear),
            _ => None,
        }
    }
}

/// What [`Index::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Counted.
    New,
    /// The token was already counted (or cleared away).
    Duplicate,
    /// The event is behind the frozen boundary; not counted. Live, only
    /// events whose append outlived the service's deadline get here; a
    /// replay after a restart meets the already rolled-up ones too.
    Late,
    /// An add at or before a clear of the same counter: cleared, not counted.
    Cleared,
}

/// One counter's state.
#[derive(Clone, Debug, Default)]
struct CounterState {
    /// Events with `t < frozen` are in `count`.
    frozen: i64,
    count: i128,
    pending: BTreeMap<(i64, u128), i64>,
    pending_sum: i128,
    /// Latest clear not yet frozen.
    clear_at: Option<i64>,
    /// The checkpoint changed since the last [`Index::freeze`] reported it.
    dirty: bool,
}

impl CounterState {
    fn accurate(&self) -> i128 {
        let base = if self.clear_at.is_some() {
            0
        } else {
            self.count
        };
        base + self.pending_sum
    }

    fn apply(&mut self, token: IdempotencyToken, op: Op, global: i64) -> Applied {
        let t = token.event_time_ns;
        if t < self.frozen.max(global) {
            return Applied::Late;
        }
        if matches!(op, Op::Add(_)) && self.clear_at.is_some_and(|c| t <= c) {
            return Applied::Cleared;
        }
        match op {
            Op::Add(d) => {
                // The first event under a token wins: a retry carrying a
                // different delta is still the same event.
                match self.pending.entry((t, token.nonce)) {
                    std::collections::btree_map::Entry::Occupied(_) => return Applied::Duplicate,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(d);
                    }
                }
                self.pending_sum += i128::from(d);
            }
            Op::Clear => {
                if self.clear_at.is_some_and(|c| t <= c) {
                    return Applied::Duplicate;
                }
                // Everything at or before `t` goes.
                let later = match t.checked_add(1) {
                    Some(next) => self.pending.split_off(&(next, 0)),
                    None => std::collections::BTreeMap::new(),
                };
                let cleared: i128 = self.pending.values().map(|d| i128::from(*d)).sum();
                self.pending = later;
                self.pending_sum -= cleared;
                self.clear_at = Some(t);
            }
        }
        Applied::New
    }

    fn freeze(&mut self, boundary: i64) {
        if boundary <= self.frozen {
            return;
        }
        if self.clear_at.is_some_and(|c| c < boundary) {
            self.count = 0;
            self.clear_at = None;
            self.dirty = true;
        }
        let later = self.pending.split_off(&(boundary, 0));
        let sum: i128 = self.pending.values().map(|d| i128::from(*d)).sum();
        if !self.pending.is_empty() {
            self.dirty = true;
        }
        self.count += sum;
        self.pending_sum -= sum;
        self.pending = later;
        self.frozen = boundary;
    }
}

/// A counter's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Values {
    /// The last rollup (events before `frozen`).
    pub checkpoint: i128,
    /// The rollup boundary (TAI ns, exclusive).
    pub frozen: i64,
    /// Checkpoint plus everything pending.
    pub accurate: i128,
}

/// A checkpoint to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Counter key (`namespace/counter`).
    pub key: String,
    /// Boundary (exclusive).
    pub frozen: i64,
    /// Count of events before it.
    pub count: i128,
}

impl Checkpoint {
    /// `frozen i64 | count i128`, little endian.
    #[must_use]
    pub fn encode_value(&self) -> Vec<u8> {
        let mut v = self.frozen.to_le_bytes().to_vec();
        v.extend_from_slice(&self.count.to_le_bytes());
        v
    }

    /// Parses [`Checkpoint::encode_value`]'s bytes.
    #[must_use]
    pub fn decode_value(key: String, b: &[u8]) -> Option<Self> {
        if b.len() != 24 {
            return None;
        }
        Some(Self {
            key,
            frozen: i64::from_le_bytes(b[..8].try_into().ok()?),
            count: i128::from_le_bytes(b[8..].try_into().ok()?),
        })
    }
}

#[derive(Default)]
struct Shard {
    counters: HashMap<String, CounterState>,
    /// Pending slice index → smallest log sequence in it.
    slices: BTreeMap<i64, u64>,
}

/// All counters (thread-safe; sharded by counter key).
pub struct Index {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    /// Global boundary: everything before it is in the checkpoints.
    frozen: Mutex<i64>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new(i64::MIN)
    }
}

fn slice_of(t: i64) -> i64 {
    t.div_euclid(SLICE_NS)
}

/// `t` rounded down to a slice edge: the boundary a freeze at `t` uses.
#[must_use]
pub fn slice_floor(t: i64) -> i64 {
    slice_of(t) * SLICE_NS
}

impl Index {
    /// An empty index whose boundary is `frozen`.
    #[must_use]
    pub fn new(frozen: i64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            frozen: Mutex::new(frozen),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The global rollup boundary.
    #[must_use]
    pub fn frozen(&self) -> i64 {
        *self.frozen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_state(&self, global: i64) -> CounterState {
        CounterState {
            frozen: global,
            ..CounterState::default()
        }
    }

    /// Restores a persisted checkpoint (before replaying the log).
    pub fn restore(&self, cp: &Checkpoint) {
        let global = self.frozen();
        let mut s = self.shard(&cp.key);
        let st = s.counters.entry(cp.key.clone()).or_default();
        st.frozen = cp.frozen.max(global);
        st.count = cp.count;
    }

    /// Applies one event read from the log at `seq`.
    pub fn apply(&self, key: &str, token: IdempotencyToken, op: Op, seq: u64) -> Applied {
        // The boundary is read under the shard lock: a freeze moves the
        // boundary first and then visits every shard, so an event applied
        // here is either behind the new boundary (late) or frozen with it.
        let mut s = self.shard(key);
        let global = self.frozen();
        let r = match s.counters.get_mut(key) {
            Some(st) => st.apply(token, op, global),
            None => {
                let mut st = self.new_state(global);
                let r = st.apply(token, op, global);
                s.counters.insert(key.to_owned(), st);
                r
            }
        };
        if r == Applied::New {
            let e = s.slices.entry(slice_of(token.event_time_ns)).or_insert(seq);
            *e = (*e).min(seq);
        }
        r
    }

    /// Whether `token` is already counted (pending) for `key`.
    #[must_use]
    pub fn contains(&self, key: &str, token: IdempotencyToken) -> bool {
        let s = self.shard(key);
        s.counters
            .get(key)
            .is_some_and(|st| st.pending.contains_key(&(token.event_time_ns, token.nonce)))
    }

    /// A counter's values (zero if never seen).
    #[must_use]
    pub fn values(&self, key: &str) -> Values {
        let global = self.frozen();
        let s = self.shard(key);
        match s.counters.get(key) {
            Some(st) => Values {
                checkpoint: st.count,
                frozen: st.frozen.max(global),
                accurate: st.accurate(),
            },
            None => Values {
                checkpoint: 0,
                frozen: global,
                accurate: 0,
            },
        }
    }

    /// Rolls up everything before `boundary` (rounded down to a slice edge);
    /// returns the changed checkpoints. Counters that did not change are not
    /// returned (their stored checkpoint stays valid: no event fell between).
    pub fn freeze(&self, boundary: i64) -> Vec<Checkpoint> {
        let boundary = slice_floor(boundary);
        {
            let mut g = self.frozen.lock().unwrap_or_else(PoisonError::into_inner);
            if boundary <= *g {
                return Vec::new();
            }
            *g = boundary;
        }
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let keep = s.slices.split_off(&slice_of(boundary));
            // A shard with no pending slice before the boundary has nothing
            // to freeze; its counters' boundaries follow the global one.
            let touched = !s.slices.is_empty();
            s.slices = keep;
            for (key, st) in &mut s.counters {
                if touched {
                    st.freeze(boundary);
                }
                if std::mem::take(&mut st.dirty) {
                    out.push(Checkpoint {
                        key: key.clone(),
                        frozen: boundary,
                        count: st.count,
                    });
                }
            }
        }
        out
    }

    /// Where to start reading the log to rebuild the pending events: the
    /// smallest sequence of any pending slice, else `end`.
    #[must_use]
    pub fn resume_seq(&self, end: u64) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .slices
                    .values()
                    .min()
                    .copied()
            })
            .min()
            .unwrap_or(end)
            .min(end)
    }

    /// Counters known and events pending, for status output.
    #[must_use]
    pub fn stats(&self) -> (usize, usize) {
        let mut counters = 0;
        let mut pending = 0;
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(PoisonError::into_inner);
            counters += s.counters.len();
            pending += s.counters.values().map(|c| c.pending.len()).sum::<usize>();
        }
        (counters, pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tok(t: i64, n: u128) -> IdempotencyToken {
        IdempotencyToken {
            event_time_ns: t,
            nonce: n,
        }
    }

    #[test]
    fn duplicates_count_once_before_and_after_a_rollup() {
        let ix = Index::new(0);
        assert_eq!(ix.apply("n/c", tok(10, 1), Op::Add(5), 1), Applied::New);
        assert_eq!(
            ix.apply("n/c", tok(10, 1), Op::Add(5), 2),
            Applied::Duplicate
        );
        assert_eq!(ix.apply("n/c", tok(11, 2), Op::Add(-2), 3), Applied::New);
        assert_eq!(ix.values("n/c").accurate, 3);
        assert_eq!(ix.values("n/c").checkpoint, 0);
        let cps = ix.freeze(SLICE_NS);
        assert_eq!(cps.len(), 1);
        assert_eq!(cps[0].count, 3);
        assert_eq!(ix.values("n/c").checkpoint, 3);
        assert_eq!(ix.apply("n/c", tok(10, 1), Op::Add(5), 4), Applied::Late);
        assert_eq!(ix.values("n/c").accurate, 3);
        assert!(ix.freeze(2 * SLICE_NS).is_empty(), "nothing changed");
    }

    #[test]
    fn clear_drops_earlier_events_and_keeps_later_ones() {
        let ix = Index::new(0);
        ix.apply("n/c", tok(10, 1), Op::Add(5), 1);
        ix.apply("n/c", tok(30, 2), Op::Add(7), 2);
        ix.apply("n/c", tok(20, 3), Op::Clear, 3);
        // A retry of the cleared add stays cleared.
        assert_eq!(ix.apply("n/c", tok(10, 1), Op::Add(5), 4), Applied::Cleared);
        // So does an add at the clear's own time, whatever its nonce.
        assert_eq!(
            ix.apply("n/c", tok(20, u128::MAX), Op::Add(5), 5),
            Applied::Cleared
        );
        // A repeated clear is a duplicate.
        assert_eq!(
            ix.apply("n/c", tok(20, 3), Op::Clear, 6),
            Applied::Duplicate
        );
        assert_eq!(ix.values("n/c").accurate, 7);
        ix.freeze(SLICE_NS);
        assert_eq!(ix.values("n/c").checkpoint, 7);
        assert_eq!(ix.values("n/c").accurate, 7);
    }

    #[test]
    fn a_retry_with_another_delta_is_the_same_event() {
        let ix = Index::new(0);
        assert_eq!(ix.apply("n/c", tok(10, 1), Op::Add(5), 1), Applied::New);
        assert_eq!(
            ix.apply("n/c", tok(10, 1), Op::Add(7), 2),
            Applied::Duplicate
        );
        assert_eq!(ix.values("n/c").accurate, 5);
        ix.freeze(SLICE_NS);
        assert_eq!(ix.values("n/c").checkpoint, 5);
        assert_eq!(ix.values("n/c").accurate, 5);
    }

    #[test]
    fn resume_seq_is_the_oldest_pending_event() {
        let ix = Index::new(0);
        ix.apply("a/x", tok(5, 1), Op::Add(1), 7);
        ix.apply("a/y", tok(SLICE_NS + 5, 1), Op::Add(1), 3);
        ix.apply("a/z", tok(2 * SLICE_NS + 5, 1), Op::Add(1), 9);
        assert_eq!(ix.resume_seq(100), 3);
        ix.freeze(2 * SLICE_NS);
        assert_eq!(ix.resume_seq(100), 9);
        ix.freeze(3 * SLICE_NS);
        assert_eq!(ix.resume_seq(100), 100);
    }

    #[test]
    fn checkpoint_encoding_round_trips() {
        let cp = Checkpoint {
            key: "n/c".into(),
            frozen: -5,
            count: -(1 << 80),
        };
        assert_eq!(
            Checkpoint::decode_value(cp.key.clone(), &cp.encode_value()),
            Some(cp)
        );
        assert_eq!(Checkpoint::decode_value("k".into(), &[1, 2]), None);
        assert_eq!(Op::decode(&Op::Add(-9).encode()), Some(Op::Add(-9)));
        assert_eq!(Op::decode(&Op::Clear.encode()), Some(Op::Clear));
        assert_eq!(Op::decode(&[1, 2, 3]), None);
    }

    proptest! {
        /// Any interleaving of adds, duplicates and rollups, then a restart
        /// (checkpoints + replay from resume_seq), gives the true sum.
        #[test]
        fn rollup_and_restart_are_exact(events in proptest::collection::vec((0i64..20, 0u128..50, -100i64..100, any::<bool>()), 1..200),
                                        freezes in proptest::collection::vec(0usize..200, 0..5)) {
            let ix = Index::new(0);
            let mut log: Vec<(u64, IdempotencyToken, i64)> = Vec::new();
            let mut truth: HashMap<u128, i64> = HashMap::new();
            let mut stored: HashMap<String, Checkpoint> = HashMap::new();
            let mut global = (0i64, 1u64);
            let mut frozen_to = 0;
            for (i, (slice, nonce, delta, dup)) in events.iter().enumerate() {
                let t = (frozen_to + *slice) * SLICE_NS + 1;
                let tk = tok(t, *nonce + (i as u128) * 1000);
                let seq = log.len() as u64 + 1;
                log.push((seq, tk, *delta));
                ix.apply("n/c", tk, Op::Add(*delta), seq);
                truth.insert(tk.nonce, *delta);
                if *dup {
                    let seq = log.len() as u64 + 1;
                    log.push((seq, tk, *delta));
                    ix.apply("n/c", tk, Op::Add(*delta), seq);
                }
                if freezes.contains(&i) {
                    frozen_to += 2;
                    let end = log.len() as u64 + 1;
                    for cp in ix.freeze(frozen_to * SLICE_NS) {
                        stored.insert(cp.key.clone(), cp);
                    }
                    global = (frozen_to * SLICE_NS, ix.resume_seq(end));
                }
            }
            let want: i64 = truth.values().sum();
            prop_assert_eq!(ix.values("n/c").accurate, i128::from(want));
            // Restart.
            let re = Index::new(global.0);
            for cp in stored.values() {
                re.restore(cp);
            }
            for (seq, tk, d) in log.iter().filter(|(s, _, _)| *s >= global.1) {
                re.apply("n/c", *tk, Op::Add(*d), *seq);
            }
            prop_assert_eq!(re.values("n/c").accurate, i128::from(want));
        }
    }
}
