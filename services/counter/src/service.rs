//! The counter service: validation, the three counter types, the log tailer
//! and the rollup pipeline. Transport-free (gRPC and HTTP call into it).
//!
//! # Eventually consistent and accurate counters
//!
//! An add is an immutable [`Envelope`] appended to the event log under its
//! idempotency token. A **tailer** task reads the log in order and applies
//! every event to the [`Index`] — after a restart it does the same from the
//! checkpointed resume position, so the state rebuilt equals the state lost.
//!
//! A **rollup** task freezes the window before
//! `F = earliest − accept_limit − grace` every `rollup_interval`, once the
//! tailer has applied everything appended so far, and persists the changed
//! counters' checkpoints and then `(F, resume seq)` in the KV store.
//! Ingest accepts an event only if its time `t > latest − accept_limit`
//! (TrueTime at ingest) and the append completes within `grace`; so for any
//! accepted event and any later rollup, `t > true(ingest) − accept_limit ≥
//! true(rollup) − accept_limit − grace ≥ F`: **no accepted event can land
//! in a frozen window**, and concurrent or repeated rollups agree. (An
//! append that outlives `grace` is reported as failed; if it lands later and
//! behind `F` it is not counted, and counted as `late` in the status.)
//!
//! Rollup triggers are coalesced: one pass per interval handles every
//! counter with pending events once, whatever its traffic.
//!
//! - eventual `GetCount` = the last rollup (stale by about
//!   `accept_limit + grace + rollup_interval`);
//! - accurate `GetCount` = the last rollup + the pending events, read after
//!   the tailer has caught up with the log's end as of the request.
//!
//! # Best-effort counters
//!
//! memcached `incr`/`decr` with TTL; an idempotency token is an `add` marker
//! with the same TTL, so a retry counts once while the marker lives. No
//! durability; if memcached is down the namespace reports degraded and the
//! other types are unaffected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use eventlog::backend::Backend;
use eventlog::{Envelope, IdempotencyToken, TimeSource};
use operate::metrics::Exposition;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::memcache::Memcache;
use crate::metrics::{OpMetrics, Operation};
use crate::state::{Applied, Checkpoint, Index, Op, Values};

/// Key of the global rollup checkpoint.
const ROLLUP_KEY: &str = "rollup";
/// Prefix of per-counter checkpoints.
const CHECKPOINT_PREFIX: &str = "c/";
/// Longest namespace or counter name.
pub const MAX_NAME: usize = 64;

/// A namespace's counter type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// memcached, TTL, no durability.
    BestEffort {
        /// Time to live of counters and idempotency markers, seconds.
        ttl_s: u32,
    },
    /// Event log + rollup; reads return the last rollup.
    Eventual,
    /// Event log + rollup; reads add the pending delta.
    Accurate,
}

impl Kind {
    /// The name used in replies and configuration.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::BestEffort { .. } => "best-effort",
            Self::Eventual => "eventual",
            Self::Accurate => "accurate",
        }
    }
}

/// Parses `NAME=TYPE[:TTL_S]`, TYPE one of `best-effort`, `eventual`, `accurate`.
pub fn parse_namespace(s: &str) -> Result<(String, Kind), String> {
    let (name, kind) = s.split_once('=').ok_or_else(|| {
        format!(
            "namespace {s:?}: expected NAME=TYPE (TYPE: best-effort[:TTL_S], eventual, accurate)"
        )
    })?;
    check_name("namespace", name).map_err(|e| e.to_string())?;
    let kind = match kind.split_once(':') {
        None if kind == "eventual" => Kind::Eventual,
        None if kind == "accurate" => Kind::Accurate,
        None if kind == "best-effort" => Kind::BestEffort { ttl_s: 86_400 },
        Some(("best-effort", ttl)) => Kind::BestEffort {
            ttl_s: ttl
                .parse()
                .ok()
                .filter(|t| *t > 0 && *t <= 30 * 86_400)
                .ok_or_else(|| {
                    format!("namespace {name}: TTL {ttl:?} must be 1..=2592000 seconds")
                })?,
        },
        _ => {
            return Err(format!(
                "namespace {name}: unknown type {kind:?} (best-effort[:TTL_S], eventual, accurate)"
            ));
        }
    };
    Ok((name.to_owned(), kind))
}

/// Configuration of the service.
#[derive(Clone, Debug)]
pub struct CounterConfig {
    /// Namespaces and their types.
    pub namespaces: HashMap<String, Kind>,
    /// Events older than this (by TrueTime `latest`) are refused; the
    /// rollup freezes windows older than this plus `grace`.
    pub accept_limit: Duration,
    /// Events further in the future (by TrueTime `earliest`) are refused.
    pub future_limit: Duration,
    /// Longest an append may take before the add is reported failed.
    pub grace: Duration,
    /// Rollup period.
    pub rollup_interval: Duration,
    /// memcached for best-effort namespaces.
    pub memcached: Option<SocketAddr>,
    /// Drop log segments that every checkpoint has passed.
    pub trim_log: bool,
}

impl Default for CounterConfig {
    fn default() -> Self {
        Self {
            namespaces: HashMap::new(),
            accept_limit: Duration::from_secs(5),
            future_limit: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            rollup_interval: Duration::from_millis(250),
            memcached: None,
            trim_log: true,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// No such namespace.
    #[error("unknown namespace {0:?} (configured: {1})")]
    UnknownNamespace(String, String),
    /// A malformed name.
    #[error(
        "{what} name {name:?}: 1 to {MAX_NAME} characters from [A-Za-z0-9_.-], starting and ending with a letter or digit"
    )]
    BadName {
        /// "namespace" or "counter".
        what: &'static str,
        /// What was given (shortened).
        name: String,
    },
    /// A malformed token.
    #[error("{0}")]
    BadToken(String),
    /// The token's event time is outside the accept window.
    #[error(
        "idempotency token event time is {0}: use a fresh token (the event cannot be placed in a window that may already be rolled up)"
    )]
    TokenOutOfWindow(String),
    /// The count would leave the int64 range.
    #[error("count would overflow int64 (current {current}, delta {delta})")]
    Overflow {
        /// Accurate count now.
        current: i128,
        /// Requested delta.
        delta: i64,
    },
    /// Concurrent adds took the count beyond int64 (the ingest check saw an
    /// older state); the count is kept exactly and reported as this error.
    #[error(
        "count {0} is outside the int64 range (concurrent adds overshot); add a negative delta to bring it back"
    )]
    OutOfRange(i128),
    /// A backend (log, store, memcached, clock) failed; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// The count, if the operation returns one.
    pub count: Option<i64>,
    /// The namespace's type.
    pub consistency: &'static str,
    /// The count includes every event before this TAI time (ns), if known.
    pub as_of_ns: Option<i64>,
    /// The token had been counted already (exact for add-and-get; a plain
    /// add may not know yet: the event still counts once).
    pub duplicate: bool,
    /// The token the event was recorded under.
    pub token: Option<String>,
}

/// Service counters, for status.
#[derive(Debug, Default)]
struct Stats {
    appended: AtomicU64,
    duplicates: AtomicU64,
    late: AtomicU64,
    cleared: AtomicU64,
    corrupt: AtomicU64,
    rollups: AtomicU64,
    checkpoints_written: AtomicU64,
    rollup_errors: AtomicU64,
}

/// Status, as `timecard status` and `/v1/status` show it.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Where TrueTime comes from (and whether its bound is assumed).
    pub clock: String,
    /// The event log / store backend.
    pub backend: String,
    /// memcached address and whether it answers.
    pub memcached: Option<String>,
    /// Best-effort namespaces are degraded (memcached unreachable).
    pub best_effort_degraded: bool,
    /// Namespaces and types.
    pub namespaces: Vec<(String, &'static str)>,
    /// Counters in memory.
    pub counters: usize,
    /// Events not yet rolled up.
    pub pending_events: usize,
    /// Global rollup boundary (TAI ns).
    pub rolled_up_to_ns: i64,
    /// Next log sequence the tailer will apply.
    pub applied_seq: u64,
    /// Events appended by this process.
    pub appended: u64,
    /// Duplicates recognised (at ingest, or while applying the log).
    pub duplicates: u64,
    /// Live events that landed behind a frozen window (appends that outlived
    /// `grace`, reported failed to their callers; should stay 0).
    pub late: u64,
    /// Adds at or before a clear of their counter (cleared, not counted).
    pub cleared: u64,
    /// Log records that could not be decoded.
    pub corrupt: u64,
    /// Rollup passes that froze a new window.
    pub rollups: u64,
    /// Checkpoints persisted.
    pub checkpoints_written: u64,
    /// Rollup passes that failed to persist (retried).
    pub rollup_errors: u64,
}

struct Inner {
    cfg: CounterConfig,
    clock: TimeSource,
    backend: Backend,
    index: Index,
    applied: watch::Sender<u64>,
    memcache: Option<Memcache>,
    degraded: AtomicBool,
    stats: Stats,
    ops: OpMetrics,
    stop: AtomicBool,
}

impl Inner {
    /// Whether the tailer applies every record below `seq_end` within `timeout`.
    async fn applied_through(&self, seq_end: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|a| *a >= seq_end)).await,
            Ok(Ok(_))
        )
    }
}

/// The running service (cheap to clone).
#[derive(Clone)]
pub struct CounterService {
    inner: Arc<Inner>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

fn check_name(what: &'static str, name: &str) -> Result<(), CounterError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_NAME
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(CounterError::BadName {
            what,
            name: name.chars().take(80).collect(),
        })
    }
}

/// The memcached key of a best-effort counter (`namespace/counter`).
fn mc_counter_key(key: &str) -> String {
    format!("tc:{}", key.replace('/', ":"))
}

/// The memcached key marking `token` as counted for `key`.
fn mc_marker_key(key: &str, token: IdempotencyToken) -> String {
    format!("tct:{}:{token}", key.replace('/', ":"))
}

/// A best-effort reply (memcached counters are unsigned; a count beyond
/// int64 reads as `i64::MAX`).
fn best_effort_reply(
    count: Option<u64>,
    duplicate: bool,
    token: Option<IdempotencyToken>,
) -> Reply {
    Reply {
        count: count.map(|c| i64::try_from(c).unwrap_or(i64::MAX)),
        consistency: "best-effort",
        as_of_ns: None,
        duplicate,
        token: token.map(|t| t.to_string()),
    }
}

fn unavailable(e: impl std::fmt::Display) -> CounterError {
    CounterError::Unavailable(e.to_string())
}

fn encode_rollup(frozen: i64, resume: u64) -> Vec<u8> {
    let mut v = frozen.to_le_bytes().to_vec();
    v.extend_from_slice(&resume.to_le_bytes());
    v
}

fn decode_rollup(b: &[u8]) -> Option<(i64, u64)> {
    if b.len() != 16 {
        return None;
    }
    Some((
        i64::from_le_bytes(b[..8].try_into().ok()?),
        u64::from_le_bytes(b[8..].try_into().ok()?),
    ))
}

/// A duration in ns, saturating at `i64::MAX`.
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn to_i64(v: i128) -> Result<i64, CounterError> {
    i64::try_from(v).map_err(|_| CounterError::OutOfRange(v))
}

impl CounterService {
    /// Loads the checkpoints, starts the tailer and the rollup, and returns
    /// the service. Runs on the caller's tokio runtime.
    pub async fn start(
        cfg: CounterConfig,
        clock: TimeSource,
        backend: Backend,
    ) -> Result<Self, CounterError> {
        let (frozen, resume) = match backend.kv.get(ROLLUP_KEY).await.map_err(unavailable)? {
            Some(b) => decode_rollup(&b).ok_or_else(|| {
                CounterError::Unavailable("corrupt rollup checkpoint in the KV store".into())
            })?,
            None => (i64::MIN, 1),
        };
        let end = backend.log.end().await.map_err(unavailable)?;
        if resume > end {
            return Err(CounterError::Unavailable(format!(
                "the checkpoints resume the event log at {resume} but the log ends at {end}: \
                 the log was lost or replaced; refusing to start rather than lose adds"
            )));
        }
        let index = Index::new(frozen);
        let mut restored = 0usize;
        for (k, v) in backend
            .kv
            .scan(CHECKPOINT_PREFIX)
            .await
            .map_err(unavailable)?
        {
            let key = k[CHECKPOINT_PREFIX.len()..].to_owned();
            match Checkpoint::decode_value(key, &v) {
                Some(cp) => {
                    index.restore(&cp);
                    restored += 1;
                }
                None => tracing::warn!(key = %k, "ignoring a corrupt counter checkpoint"),
            }
        }
        tracing::info!(restored, frozen, resume, backend = %backend.description, "counter: checkpoints loaded");
        let memcache = cfg
            .memcached
            .map(|a| Memcache::new(a, Duration::from_millis(500)));
        let (applied, _) = watch::channel(resume);
        let inner = Arc::new(Inner {
            cfg,
            clock,
            backend,
            index,
            applied,
            memcache,
            degraded: AtomicBool::new(false),
            stats: Stats::default(),
            ops: OpMetrics::default(),
            stop: AtomicBool::new(false),
        });
        let svc = Self {
            inner: inner.clone(),
            tasks: Arc::default(),
        };
        let tailer = tokio::spawn(tail(inner.clone(), resume, end));
        let rollup = tokio::spawn(rollup(inner.clone()));
        let probe = tokio::spawn(probe_memcached(inner));
        svc.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend([tailer, rollup, probe]);
        Ok(svc)
    }

    /// Stops the background tasks.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }

    fn kind(&self, ns: &str) -> Result<Kind, CounterError> {
        check_name("namespace", ns)?;
        self.inner.cfg.namespaces.get(ns).copied().ok_or_else(|| {
            let mut names: Vec<_> = self.inner.cfg.namespaces.keys().cloned().collect();
            names.sort();
            CounterError::UnknownNamespace(ns.into(), names.join(", "))
        })
    }

    fn key(ns: &str, counter: &str) -> Result<String, CounterError> {
        check_name("counter", counter)?;
        Ok(format!("{ns}/{counter}"))
    }

    fn memcache(&self) -> Result<&Memcache, CounterError> {
        self.inner.memcache.as_ref().ok_or_else(|| {
            CounterError::Unavailable(
                "best-effort namespace but no memcached configured (--memcached HOST:PORT)".into(),
            )
        })
    }

    fn mc_result<T>(&self, r: Result<T, crate::memcache::McError>) -> Result<T, CounterError> {
        match r {
            Ok(v) => {
                self.inner.degraded.store(false, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                // Only an unreachable server degrades the namespace; a
                // protocol surprise is this request's problem.
                if matches!(e, crate::memcache::McError::Unreachable { .. }) {
                    self.inner.degraded.store(true, Ordering::Relaxed);
                    Err(CounterError::Unavailable(format!(
                        "best-effort namespace degraded: {e}"
                    )))
                } else {
                    Err(CounterError::Unavailable(e.to_string()))
                }
            }
        }
    }

    /// Checks a caller's token against the accept window, or makes one.
    fn token(
        &self,
        given: Option<IdempotencyToken>,
    ) -> Result<(IdempotencyToken, fbclock::TrueTime), CounterError> {
        let tt = self
            .inner
            .clock
            .now()
            .map_err(|e| unavailable(format!("no TrueTime: {e}")))?;
        let Some(tok) = given else {
            return Ok((IdempotencyToken::fresh(tt.latest_ns), tt));
        };
        let t = tok.event_time_ns;
        let oldest = tt
            .latest_ns
            .saturating_sub(nanos(self.inner.cfg.accept_limit));
        let newest = tt
            .earliest_ns
            .saturating_add(nanos(self.inner.cfg.future_limit));
        if t <= oldest {
            return Err(CounterError::TokenOutOfWindow(format!(
                "{} ms older than the accept limit ({} ms)",
                (i128::from(oldest) - i128::from(t)) / 1_000_000,
                self.inner.cfg.accept_limit.as_millis()
            )));
        }
        if t > newest {
            return Err(CounterError::TokenOutOfWindow(format!(
                "{} ms in the future (limit {} ms)",
                (i128::from(t) - i128::from(newest)) / 1_000_000,
                self.inner.cfg.future_limit.as_millis()
            )));
        }
        Ok((tok, tt))
    }

    async fn append(
        &self,
        key: String,
        token: IdempotencyToken,
        tt: fbclock::TrueTime,
        op: Op,
    ) -> Result<u64, CounterError> {
        let env = Envelope::new(key, token, tt, op.encode())
            .map_err(|e| CounterError::BadToken(e.to_string()))?;
        let seq = tokio::time::timeout(
            self.inner.cfg.grace,
            self.inner.backend.log.append(vec![env]),
        )
        .await
        .map_err(|_| {
            CounterError::Unavailable(format!(
                "the event log did not confirm within {} ms: the add may or may not count; \
                 retry with token {token} (it counts once)",
                self.inner.cfg.grace.as_millis()
            ))
        })?
        .map_err(unavailable)?;
        self.inner.stats.appended.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    /// Waits until the tailer has applied every record below `seq_end`.
    async fn caught_up(&self, seq_end: u64) -> Result<(), CounterError> {
        if self
            .inner
            .applied_through(seq_end, self.inner.cfg.grace)
            .await
        {
            Ok(())
        } else {
            Err(CounterError::Unavailable(
                "the log tailer is behind (or the service is stopping); retry".into(),
            ))
        }
    }

    /// Waits until everything acknowledged so far is applied (the read
    /// barrier of accurate reads).
    async fn barrier(&self) -> Result<(), CounterError> {
        let end = self.inner.backend.log.end().await.map_err(unavailable)?;
        self.caught_up(end).await
    }

    fn reply(
        kind: Kind,
        v: Option<Values>,
        duplicate: bool,
        token: Option<IdempotencyToken>,
    ) -> Result<Reply, CounterError> {
        let (count, as_of) = match (kind, v) {
            (Kind::Eventual, Some(v)) => (Some(to_i64(v.checkpoint)?), Some(v.frozen)),
            (Kind::Accurate, Some(v)) => (Some(to_i64(v.accurate)?), None),
            _ => (None, None),
        };
        Ok(Reply {
            count,
            consistency: kind.name(),
            as_of_ns: as_of.filter(|t| *t != i64::MIN),
            duplicate,
            token: token.map(|t| t.to_string()),
        })
    }

    /// `AddCount` (`and_get`: `AddAndGetCount`).
    pub async fn add(
        &self,
        ns: &str,
        counter: &str,
        delta: i64,
        token: Option<IdempotencyToken>,
        and_get: bool,
    ) -> Result<Reply, CounterError> {
        let op = if and_get {
            Operation::AddAndGet
        } else {
            Operation::Add
        };
        let add = self.add_untimed(ns, counter, delta, token, and_get);
        self.inner.ops.time(op, add).await
    }

    async fn add_untimed(
        &self,
        ns: &str,
        counter: &str,
        delta: i64,
        token: Option<IdempotencyToken>,
        and_get: bool,
    ) -> Result<Reply, CounterError> {
        let kind = self.kind(ns)?;
        let key = Self::key(ns, counter)?;
        if let Kind::BestEffort { ttl_s } = kind {
            return self
                .add_best_effort(&key, delta, token, ttl_s, and_get)
                .await;
        }
        let (token, tt) = self.token(token)?;
        if and_get {
            // Apply everything acknowledged so far first: the reply then
            // says exactly whether this token was already counted, and the
            // count includes every earlier add.
            self.barrier().await?;
        }
        if self.inner.index.contains(&key, token) {
            self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            let v = and_get.then(|| self.inner.index.values(&key));
            return Self::reply(kind, v, true, Some(token));
        }
        let v = self.inner.index.values(&key);
        // Refuse an add that leaves the int64 range, unless it moves an
        // overshot count back towards it.
        let next = v.accurate.saturating_add(i128::from(delta));
        if i64::try_from(next).is_err() && next.abs() >= v.accurate.abs() {
            return Err(CounterError::Overflow {
                current: v.accurate,
                delta,
            });
        }
        let seq = self.append(key.clone(), token, tt, Op::Add(delta)).await?;
        if !and_get {
            return Self::reply(kind, None, false, Some(token));
        }
        self.reply_after(kind, &key, seq, token).await
    }

    /// The reply once the tailer has applied the event at `seq`.
    async fn reply_after(
        &self,
        kind: Kind,
        key: &str,
        seq: u64,
        token: IdempotencyToken,
    ) -> Result<Reply, CounterError> {
        // The event is durable: a failure from here on must not read as
        // "not recorded".
        let recorded = |e: CounterError| match e {
            CounterError::OutOfRange(v) => CounterError::Unavailable(format!(
                "the add was recorded under token {token}, but the count {v} is outside int64"
            )),
            other => CounterError::Unavailable(format!(
                "the add was recorded under token {token}; the count is not available yet: {other}"
            )),
        };
        self.caught_up(seq + 1).await.map_err(recorded)?;
        Self::reply(kind, Some(self.inner.index.values(key)), false, Some(token)).map_err(recorded)
    }

    async fn add_best_effort(
        &self,
        key: &str,
        delta: i64,
        token: Option<IdempotencyToken>,
        ttl_s: u32,
        and_get: bool,
    ) -> Result<Reply, CounterError> {
        let mc = self.memcache()?;
        let ckey = mc_counter_key(key);
        if let Some(t) = token
            && !self.mc_result(mc.add(&mc_marker_key(key, t), b"1", ttl_s).await)?
        {
            self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            let count = if and_get {
                Some(self.mc_result(mc.get_counter(&ckey).await)?.unwrap_or(0))
            } else {
                None
            };
            return Ok(best_effort_reply(count, true, token));
        }
        let incr = mc.incr(&ckey, delta, ttl_s).await;
        if incr.is_err()
            && let Some(t) = token
        {
            // Not counted: drop the marker so a retry is not taken for a
            // duplicate (best effort, like everything here).
            let _ = mc.delete(&mc_marker_key(key, t)).await;
        }
        let n = self.mc_result(incr)?;
        Ok(best_effort_reply(and_get.then_some(n), false, token))
    }

    /// `GetCount`.
    pub async fn get(&self, ns: &str, counter: &str) -> Result<Reply, CounterError> {
        self.inner
            .ops
            .time(Operation::Get, self.get_untimed(ns, counter))
            .await
    }

    async fn get_untimed(&self, ns: &str, counter: &str) -> Result<Reply, CounterError> {
        let kind = self.kind(ns)?;
        let key = Self::key(ns, counter)?;
        match kind {
            Kind::BestEffort { .. } => {
                let mc = self.memcache()?;
                let n = self.mc_result(mc.get_counter(&mc_counter_key(&key)).await)?;
                Ok(best_effort_reply(Some(n.unwrap_or(0)), false, None))
            }
            Kind::Eventual => Self::reply(kind, Some(self.inner.index.values(&key)), false, None),
            Kind::Accurate => {
                self.barrier().await?;
                Self::reply(kind, Some(self.inner.index.values(&key)), false, None)
            }
        }
    }

    /// `ClearCount`.
    pub async fn clear(
        &self,
        ns: &str,
        counter: &str,
        token: Option<IdempotencyToken>,
    ) -> Result<Reply, CounterError> {
        self.inner
            .ops
            .time(Operation::Clear, self.clear_untimed(ns, counter, token))
            .await
    }

    async fn clear_untimed(
        &self,
        ns: &str,
        counter: &str,
        token: Option<IdempotencyToken>,
    ) -> Result<Reply, CounterError> {
        let kind = self.kind(ns)?;
        let key = Self::key(ns, counter)?;
        if let Kind::BestEffort { .. } = kind {
            let mc = self.memcache()?;
            self.mc_result(mc.delete(&mc_counter_key(&key)).await)?;
            return Ok(best_effort_reply(Some(0), false, None));
        }
        let (token, tt) = self.token(token)?;
        let seq = self.append(key.clone(), token, tt, Op::Clear).await?;
        self.reply_after(kind, &key, seq, token).await
    }

    /// Writes the service's metrics into `m` (`timecard_counter_*`).
    pub fn write_metrics(&self, m: &mut Exposition) {
        m.daemon("counter", env!("CARGO_PKG_VERSION"));
        self.inner.ops.write(m, &self.status());
    }

    /// The service's status.
    #[must_use]
    pub fn status(&self) -> Status {
        let i = &self.inner;
        let (counters, pending) = i.index.stats();
        let mut namespaces: Vec<_> = i
            .cfg
            .namespaces
            .iter()
            .map(|(n, k)| (n.clone(), k.name()))
            .collect();
        namespaces.sort();
        let has_best_effort = i
            .cfg
            .namespaces
            .values()
            .any(|k| matches!(k, Kind::BestEffort { .. }));
        Status {
            clock: i.clock.describe(),
            backend: i.backend.description.clone(),
            memcached: i.memcache.as_ref().map(|m| m.addr().to_string()),
            best_effort_degraded: has_best_effort
                && (i.memcache.is_none() || i.degraded.load(Ordering::Relaxed)),
            namespaces,
            counters,
            pending_events: pending,
            rolled_up_to_ns: i.index.frozen(),
            applied_seq: *i.applied.borrow(),
            appended: i.stats.appended.load(Ordering::Relaxed),
            duplicates: i.stats.duplicates.load(Ordering::Relaxed),
            late: i.stats.late.load(Ordering::Relaxed),
            cleared: i.stats.cleared.load(Ordering::Relaxed),
            corrupt: i.stats.corrupt.load(Ordering::Relaxed),
            rollups: i.stats.rollups.load(Ordering::Relaxed),
            checkpoints_written: i.stats.checkpoints_written.load(Ordering::Relaxed),
            rollup_errors: i.stats.rollup_errors.load(Ordering::Relaxed),
        }
    }
}

/// Reads the log in order from `next` and applies it to the index.
async fn tail(inner: Arc<Inner>, mut next: u64, replay_end: u64) {
    while !inner.stop.load(Ordering::Relaxed) {
        match inner
            .backend
            .log
            .read(next, 4096, Duration::from_millis(100))
            .await
        {
            Ok(records) => {
                for r in records {
                    next = r.seq + 1;
                    let Some(op) = Op::decode(&r.envelope.payload) else {
                        inner.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(seq = r.seq, "counter: skipping an undecodable event");
                        continue;
                    };
                    match inner
                        .index
                        .apply(&r.envelope.key, r.envelope.token, op, r.seq)
                    {
                        Applied::New => {}
                        Applied::Duplicate => {
                            inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        Applied::Cleared => {
                            inner.stats.cleared.fetch_add(1, Ordering::Relaxed);
                        }
                        // A replay re-reads rolled-up events (the log is in
                        // append order, not time order): only live ones count.
                        Applied::Late if r.seq >= replay_end => {
                            inner.stats.late.fetch_add(1, Ordering::Relaxed);
                        }
                        Applied::Late => {}
                    }
                }
                inner.applied.send_replace(next);
            }
            Err(e) => {
                tracing::warn!(error = %e, "counter: log read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Freezes windows and persists checkpoints (see the module docs).
async fn rollup(inner: Arc<Inner>) {
    let mut unsaved: HashMap<String, Checkpoint> = HashMap::new();
    let mut saved_boundary = inner.index.frozen();
    let mut tick = tokio::time::interval(inner.cfg.rollup_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !inner.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let Ok(tt) = inner.clock.now() else { continue };
        let lag = nanos(inner.cfg.accept_limit + inner.cfg.grace);
        let boundary = tt.earliest_ns.saturating_sub(lag);
        if crate::state::slice_floor(boundary) <= inner.index.frozen()
            && unsaved.is_empty()
            && saved_boundary == inner.index.frozen()
        {
            continue;
        }
        let Ok(end) = inner.backend.log.end().await else {
            continue;
        };
        if !inner
            .applied_through(end, inner.cfg.rollup_interval * 4)
            .await
        {
            continue;
        }
        let applied = *inner.applied.borrow();
        let cps = inner.index.freeze(boundary);
        if !cps.is_empty() {
            inner.stats.rollups.fetch_add(1, Ordering::Relaxed);
        }
        for cp in cps {
            unsaved.insert(cp.key.clone(), cp);
        }
        let frozen = inner.index.frozen();
        let resume = inner.index.resume_seq(applied);
        let mut items: Vec<(String, Vec<u8>)> = unsaved
            .values()
            .map(|cp| (format!("{CHECKPOINT_PREFIX}{}", cp.key), cp.encode_value()))
            .collect();
        // The global checkpoint goes last: on NATS a crash part-way leaves
        // counters ahead of it, which a restart handles (state.rs).
        items.push((ROLLUP_KEY.to_owned(), encode_rollup(frozen, resume)));
        let n = items.len() as u64 - 1;
        match inner.backend.kv.put_all(items).await {
            Ok(()) => {
                unsaved.clear();
                saved_boundary = frozen;
                inner
                    .stats
                    .checkpoints_written
                    .fetch_add(n, Ordering::Relaxed);
                if inner.cfg.trim_log
                    && let Err(e) = inner.backend.log.trim_before(resume).await
                {
                    tracing::warn!(error = %e, "counter: log trim failed");
                }
            }
            Err(e) => {
                inner.stats.rollup_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "counter: checkpoint write failed; will retry");
            }
        }
    }
}

/// Keeps the degraded flag fresh while nobody uses best-effort counters.
async fn probe_memcached(inner: Arc<Inner>) {
    let Some(mc) = inner.memcache.as_ref() else {
        return;
    };
    while !inner.stop.load(Ordering::Relaxed) {
        let ok = mc.version().await.is_ok();
        inner.degraded.store(!ok, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
