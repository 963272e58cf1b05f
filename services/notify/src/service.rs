//! The pipeline: ingest → priority shard logs → processing pools (gates) →
//! member store → bulkheaded outbound channels.
//!
//! - **Ingest** validates each event, stamps it with TrueTime, and appends
//!   it to the log of its priority and member shard; the reply comes only
//!   after the append is durable. Admission is bounded per priority (events
//!   in flight and queue lag), so a flood gets `overloaded` errors, not
//!   unbounded memory.
//! - **Processing**: each priority has a pool of workers, sized by a
//!   reconciler from the queue lag ([`crate::pool`]). A shard is processed
//!   by one worker at a time, in log order: read a batch, run the gates
//!   ([`crate::gates`]), write the actionable notifications and the shard's
//!   checkpoint to the member store ([`crate::store`]), then hand a push per
//!   online, targeted device to that device's channel.
//! - **Outbound**: one bulkhead per channel (APNs, FCM, edge): bounded
//!   queue, concurrency limit, timeout, circuit breaker. A refused push is
//!   counted; the notification is in the store either way, and a device
//!   pulls it at its next lifecycle point.
//!
//! Crash safety: a shard's checkpoint moves only with the store write that
//! covers its batch, so after `kill -9` processing resumes at the first
//! record not stored. The de-duplication window is rebuilt by re-reading
//! the log from the checkpoint's `replay_from` (records whose creation time
//! may still be in the window) without delivering them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventlog::backend::Backend;
use eventlog::{Envelope, EventLog, IdempotencyToken, TimeSource};
use fbclock::TrueTime;
use outbound::{
    Adapter, Bulkhead, BulkheadConfig, Channel, Outcome, OutcomeSink, Push, Refused, SendError,
};
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use crate::edge::EdgeRouter;
use crate::gates::{self, DedupWindow, Verdict};
use crate::metrics::Metrics;
use crate::model::{
    self, DeviceType, ModelError, Notification, Priority, Targets, TypeSpec, shard_of,
};
use crate::pool::{Goal, PoolPolicy};
use crate::registry::{Registration, Registry, RegistryError};
use crate::store::{
    Change, MemberEvent, MemberState, NewEvent, ShardCheckpoint, Store, StoreError,
};
use operate::metrics::Exposition;

const NS_PER_S: i64 = 1_000_000_000;
/// How long an idle worker sleeps when no append woke it.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Extra history re-read for de-duplication after a restart, beyond the
/// window and the future limit: slack for acceptance stamps taken with a
/// different clock reading than the processor's (a safety margin only).
const REPLAY_MARGIN: Duration = Duration::from_secs(10);

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotifyError {
    /// Invalid input (unknown type or priority, bad member, body…).
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// A bad idempotency key.
    #[error("{0}")]
    BadKey(String),
    /// A device registration was refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The channel is not configured on this server.
    #[error("channel {0} is not configured on this server")]
    ChannelOff(Channel),
    /// The priority's queue is saturated: retry later with the same key.
    #[error("{0} priority is overloaded ({1}); retry later with the same idempotency key")]
    Overloaded(Priority, String),
    /// No such notification.
    #[error("member has no notification {0}")]
    NotFound(u64),
    /// The backend or clock failed: safe to retry with the same key.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
}

impl From<StoreError> for NotifyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchNotification(id) => Self::NotFound(id),
            StoreError::Shards { .. } => Self::Config(e.to_string()),
            e => Self::Unavailable(e.to_string()),
        }
    }
}

/// Endpoints of the providers' push services.
#[derive(Clone, Debug, Default)]
pub struct Providers {
    /// APNs, if enabled.
    pub apns: Option<outbound::apns::ApnsConfig>,
    /// FCM, if enabled.
    pub fcm: Option<outbound::fcm::FcmConfig>,
}

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// Notification types.
    pub types: Vec<TypeSpec>,
    /// Log shards per priority.
    pub shards: u16,
    /// Largest body, bytes.
    pub max_body: usize,
    /// Records a worker takes from a shard at once.
    pub read_batch: usize,
    /// Creation times further than this past `latest` are refused.
    pub future_limit: Duration,
    /// Keys the de-duplication windows hold in all, at most.
    pub dedup_capacity: usize,
    /// Pool policy per priority (high, medium, low).
    pub pools: [PoolPolicy; 3],
    /// Events in flight at ingest per priority, at most.
    pub admission: usize,
    /// Ingest refuses a priority whose queue lag exceeds this.
    pub max_lag: u64,
    /// Registry entry lifetime without a heartbeat.
    pub registry_ttl: Duration,
    /// Most devices in the registry.
    pub max_devices: usize,
    /// The push edge the edge channel routes through (registry, local
    /// node, NATS routing); `None`: an in-process edge node with an
    /// embedded registry and a fresh token key.
    pub edge: Option<push::processor::Processor>,
    /// Bulkhead per channel, in [`Channel::ALL`] order.
    pub bulkheads: [BulkheadConfig; 3],
    /// The providers' endpoints.
    pub providers: Providers,
    /// How often the reconciler sizes the pools.
    pub reconcile_every: Duration,
}

impl NotifyConfig {
    /// Defaults for `shards` shards per priority.
    #[must_use]
    pub fn with_shards(shards: u16) -> Self {
        let pool = |max: usize| PoolPolicy {
            min: 1,
            max: max.min(usize::from(shards)).max(1),
            lag_per_worker: 20_000,
            scale_down_after: Duration::from_secs(30),
        };
        Self {
            types: model::default_types(),
            shards,
            max_body: 3 * 1024,
            read_batch: 2_048,
            future_limit: Duration::from_secs(10),
            dedup_capacity: 4_000_000,
            pools: [pool(usize::MAX), pool(usize::MAX), pool(2)],
            admission: 65_536,
            max_lag: 5_000_000,
            registry_ttl: Duration::from_secs(90),
            max_devices: 2_000_000,
            edge: None,
            bulkheads: Default::default(),
            providers: Providers::default(),
            reconcile_every: Duration::from_millis(250),
        }
    }

    fn check(&self) -> Result<(), NotifyError> {
        let bad = |m: String| Err(NotifyError::Config(m));
        if self.types.is_empty() {
            return bad("no notification types".into());
        }
        if !(1..=64).contains(&self.shards) {
            return bad(format!("shards must be 1 to 64, got {}", self.shards));
        }
        if self.read_batch == 0 || self.admission == 0 || self.max_body == 0 {
            return bad("read batch, admission and max body must be positive".into());
        }
        Ok(())
    }

    /// The de-duplication window: the largest staleness threshold.
    #[must_use]
    pub fn dedup_window(&self) -> Duration {
        self.types
            .iter()
            .map(|t| t.staleness)
            .max()
            .unwrap_or_default()
    }
}

/// An event as a producer sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncomingEvent {
    /// Notification type.
    pub kind: String,
    /// Priority (`None`: the type's).
    pub priority: Option<String>,
    /// Member id.
    pub member: String,
    /// Device types (empty: all).
    pub targets: Vec<String>,
    /// JSON object.
    pub body: Vec<u8>,
    /// `CREATION_TIME_NS:NONCE` (`None`: now, fresh nonce; retries then
    /// cannot be recognised).
    pub idempotency_key: Option<String>,
}

/// An accepted (durable) event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    /// Its idempotency key (use it to retry).
    pub idempotency_key: String,
    /// Priority queue.
    pub priority: &'static str,
    /// Shard within the priority.
    pub shard: u16,
}

/// A pull reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// Changes since the cursor, in order.
    pub changes: Vec<MemberEvent>,
    /// Pass this as `since` next time.
    pub cursor: u64,
    /// Whether more changes wait beyond `limit`.
    pub more: bool,
}

struct ShardProc {
    next: u64,
    replay_from: u64,
    warm: bool,
    dedup: DedupWindow,
    /// (acceptance second, first sequence with it), oldest first.
    slices: VecDeque<(i64, u64)>,
    /// Early evictions of the window already added to the service's count.
    evictions_reported: u64,
}

impl ShardProc {
    fn note(&mut self, accepted_latest_ns: i64, seq: u64) {
        let sec = accepted_latest_ns.div_euclid(NS_PER_S);
        if self.slices.back().is_none_or(|(s, _)| *s < sec) {
            self.slices.push_back((sec, seq));
        }
    }

    /// The first sequence whose acceptance is within `keep` of `now`.
    fn replay_from(&mut self, now: TrueTime, keep: Duration, next: u64) -> u64 {
        let cutoff = now
            .earliest_ns
            .saturating_sub(i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX))
            .div_euclid(NS_PER_S);
        while self.slices.front().is_some_and(|(s, _)| *s < cutoff) {
            self.slices.pop_front();
        }
        self.slices.front().map_or(next, |(_, seq)| *seq)
    }
}

struct Shard {
    priority: Priority,
    index: u16,
    log: EventLog,
    next_hint: AtomicU64,
    proc: tokio::sync::Mutex<ShardProc>,
}

struct Delivery {
    member: Arc<str>,
    targets: Targets,
    kind: Arc<str>,
    body: Bytes,
    expires_at_unix_s: i64,
    created: Instant,
}

/// A priority's pool as the status shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoolStatus {
    /// Priority.
    pub priority: &'static str,
    /// Records appended but not processed yet.
    pub lag: u64,
    /// Workers the reconciler aims for.
    pub goal: usize,
    /// Workers running now (counted by the workers themselves; during a
    /// resize the old generation finishes its batch while the new starts).
    pub running: usize,
    /// Why the goal last changed.
    pub reason: String,
    /// Shards.
    pub shards: u16,
}

/// The notification service (use through `Arc`).
pub struct NotifyService {
    config: NotifyConfig,
    /// Type name → its spec and the name shared by every push of the type.
    types: HashMap<String, (TypeSpec, Arc<str>)>,
    clock: TimeSource,
    backend: String,
    shards: [Vec<Arc<Shard>>; 3],
    wake: [Notify; 3],
    admission: [Arc<Semaphore>; 3],
    lag: [AtomicU64; 3],
    generation: [AtomicU64; 3],
    /// Per priority: the goal and how many workers its generation spawned.
    goals: Mutex<[(Goal, usize); 3]>,
    /// Per priority: workers alive.
    live: [AtomicU64; 3],
    store: Store,
    registry: Registry,
    edge: push::processor::Processor,
    bulkheads: [Option<Bulkhead>; 3],
    metrics: Arc<Metrics>,
    stopping: AtomicBool,
    dedup_evicted: AtomicU64,
    /// When the registry was last swept of expired devices.
    last_sweep: Mutex<Instant>,
}

impl std::fmt::Debug for NotifyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NotifyService({})", self.backend)
    }
}

fn outcome_sink(channel: Channel, metrics: Arc<Metrics>, registry: Registry) -> OutcomeSink {
    Arc::new(move |push: &Push, outcome: &Outcome| match outcome {
        Outcome::Delivered => {
            metrics.delivered.inc(channel);
            metrics
                .delivery(channel, push.urgent)
                .record(push.created.elapsed());
        }
        Outcome::Failed(SendError::Unregistered) => {
            metrics.failed.inc(channel);
            registry.forget_token(&push.member, &push.device_id, &push.device_token);
        }
        Outcome::Failed(_) | Outcome::BreakerOpen => metrics.failed.inc(channel),
    })
}

fn start_bulkhead<A: Adapter>(
    adapter: A,
    config: &NotifyConfig,
    metrics: &Arc<Metrics>,
    registry: &Registry,
) -> Bulkhead {
    let channel = adapter.channel();
    let config = config.bulkheads[crate::metrics::channel_index(channel)].clone();
    Bulkhead::start(
        adapter,
        config,
        outcome_sink(channel, metrics.clone(), registry.clone()),
    )
}

impl NotifyService {
    /// Opens the shard logs and the store, and starts the pools, the
    /// reconciler and the channels.
    pub async fn start(
        config: NotifyConfig,
        backend: &Backend,
        clock: TimeSource,
    ) -> Result<Arc<Self>, NotifyError> {
        config.check()?;
        let (store, meta) = Store::open(backend.kv.clone(), clock.clone(), config.shards).await?;
        let window = config.dedup_window();
        let per_shard_cap = config.dedup_capacity / (3 * usize::from(config.shards));
        let mut shards: [Vec<Arc<Shard>>; 3] = Default::default();
        for p in Priority::ALL {
            for index in 0..config.shards {
                let log = backend
                    .open_log(&format!("{p}-{index}"))
                    .await
                    .map_err(|e| NotifyError::Unavailable(e.to_string()))?;
                let checkpoint =
                    meta.checkpoints
                        .get(&(p, index))
                        .copied()
                        .unwrap_or(ShardCheckpoint {
                            next: 1,
                            replay_from: 1,
                        });
                let end = log
                    .end()
                    .await
                    .map_err(|e| NotifyError::Unavailable(e.to_string()))?;
                if checkpoint.next > end {
                    return Err(NotifyError::Config(format!(
                        "the store has processed {p} shard {index} up to {} but its log ends at {end}: \
                         the log was lost or replaced; restore it or start with a new data directory",
                        checkpoint.next - 1
                    )));
                }
                shards[p.index()].push(Arc::new(Shard {
                    priority: p,
                    index,
                    log,
                    next_hint: AtomicU64::new(checkpoint.next),
                    proc: tokio::sync::Mutex::new(ShardProc {
                        next: checkpoint.next,
                        replay_from: checkpoint.replay_from.min(checkpoint.next),
                        warm: false,
                        dedup: DedupWindow::new(window, per_shard_cap),
                        slices: VecDeque::new(),
                        evictions_reported: 0,
                    }),
                }));
            }
        }
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(config.registry_ttl, config.max_devices);
        let edge = match &config.edge {
            Some(p) => p.clone(),
            None => in_process_edge().await?,
        };
        let apns = match &config.providers.apns {
            Some(c) => Some(start_bulkhead(
                outbound::apns::ApnsAdapter::new(c.clone())
                    .map_err(|e| NotifyError::Config(format!("APNs: {e}")))?,
                &config,
                &metrics,
                &registry,
            )),
            None => None,
        };
        let fcm = match &config.providers.fcm {
            Some(c) => Some(start_bulkhead(
                outbound::fcm::FcmAdapter::new(c.clone())
                    .map_err(|e| NotifyError::Config(format!("FCM: {e}")))?,
                &config,
                &metrics,
                &registry,
            )),
            None => None,
        };
        let edge_bulkhead =
            start_bulkhead(EdgeRouter::new(edge.clone()), &config, &metrics, &registry);
        let mut bulkheads: [Option<Bulkhead>; 3] = Default::default();
        bulkheads[crate::metrics::channel_index(Channel::Apns)] = apns;
        bulkheads[crate::metrics::channel_index(Channel::Fcm)] = fcm;
        bulkheads[crate::metrics::channel_index(Channel::Edge)] = Some(edge_bulkhead);
        let goals = [0, 1, 2].map(|i| (Goal::initial(&config.pools[i]), 0));
        let service = Arc::new(Self {
            types: config
                .types
                .iter()
                .map(|t| (t.name.clone(), (t.clone(), Arc::from(t.name.as_str()))))
                .collect(),
            admission: [0, 1, 2].map(|_| Arc::new(Semaphore::new(config.admission))),
            config,
            clock,
            backend: backend.description.clone(),
            shards,
            wake: Default::default(),
            lag: Default::default(),
            generation: Default::default(),
            goals: Mutex::new(goals),
            live: Default::default(),
            store,
            registry,
            edge,
            bulkheads,
            metrics,
            stopping: AtomicBool::new(false),
            dedup_evicted: AtomicU64::new(0),
            last_sweep: Mutex::new(Instant::now()),
        });
        service.reconcile().await;
        tokio::spawn(reconciler(Arc::downgrade(&service)));
        Ok(service)
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The push edge (registry, local node, routing).
    #[must_use]
    pub fn edge(&self) -> &push::processor::Processor {
        &self.edge
    }

    /// The push registry.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The member store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &TimeSource {
        &self.clock
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    fn bulkhead(&self, channel: Channel) -> Option<&Bulkhead> {
        self.bulkheads[crate::metrics::channel_index(channel)].as_ref()
    }

    fn validate(
        &self,
        e: IncomingEvent,
        now: TrueTime,
    ) -> Result<(Priority, u16, Envelope), NotifyError> {
        let (spec, _) = self.types.get(&e.kind).ok_or_else(|| {
            let mut names: Vec<&str> = self.types.keys().map(String::as_str).collect();
            names.sort_unstable();
            ModelError::UnknownType(e.kind.chars().take(60).collect(), names.join(", "))
        })?;
        let priority = match &e.priority {
            Some(p) if !p.is_empty() => p.parse()?,
            _ => spec.priority,
        };
        model::check_member(&e.member)?;
        let targets = Targets::parse(&e.targets)?;
        model::check_body(&e.body, self.config.max_body)?;
        let token = match &e.idempotency_key {
            Some(k) if !k.is_empty() => k
                .parse::<IdempotencyToken>()
                .map_err(|e| NotifyError::BadKey(e.to_string()))?,
            _ => IdempotencyToken::fresh(now.latest_ns),
        };
        let future = i64::try_from(self.config.future_limit.as_nanos()).unwrap_or(i64::MAX);
        if token.event_time_ns > now.latest_ns.saturating_add(future) {
            return Err(NotifyError::BadKey(format!(
                "creation time {} is more than {:?} in the future",
                token.event_time_ns, self.config.future_limit
            )));
        }
        let shard = shard_of(&e.member, usize::from(self.config.shards)) as u16;
        let payload = Notification {
            kind: e.kind,
            priority,
            targets,
            body: e.body,
        }
        .encode();
        let envelope = Envelope::new(e.member, token, now, payload)
            .map_err(|e| NotifyError::Invalid(ModelError::Body(e.to_string())))?;
        Ok((priority, shard, envelope))
    }

    /// Ingests events; each result says accepted (durable) or why not.
    pub async fn publish(&self, events: Vec<IncomingEvent>) -> Vec<Result<Accepted, NotifyError>> {
        let n = events.len();
        let now = match self.clock.now() {
            Ok(now) => now,
            Err(e) => return vec![Err(NotifyError::Unavailable(e.to_string())); n],
        };
        let mut results: Vec<Result<Accepted, NotifyError>> =
            vec![Err(NotifyError::Unavailable("not processed".into())); n];
        let shards = usize::from(self.config.shards);
        let mut groups: Vec<Vec<(usize, Envelope)>> = (0..3 * shards).map(|_| Vec::new()).collect();
        for (i, e) in events.into_iter().enumerate() {
            let fallback = e
                .priority
                .as_deref()
                .and_then(|p| p.parse().ok())
                .or_else(|| self.types.get(&e.kind).map(|(t, _)| t.priority));
            match self.validate(e, now) {
                Ok((p, shard, env)) => {
                    groups[p.index() * shards + usize::from(shard)].push((i, env))
                }
                Err(err) => {
                    self.metrics
                        .refused_invalid
                        .add(fallback.unwrap_or(Priority::Medium), 1);
                    results[i] = Err(err);
                }
            }
        }
        let appends = groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(g, members)| {
                let p = Priority::ALL[g / shards];
                let shard = &self.shards[p.index()][g % shards];
                self.append_group(shard, members)
            });
        let span = tracing::debug_span!("notify.ingest", events = n);
        for (outcome, indices) in futures_util::future::join_all(appends)
            .instrument(span)
            .await
        {
            for (i, r) in indices.into_iter().zip(outcome) {
                results[i] = r;
            }
        }
        results
    }

    async fn append_group(
        &self,
        shard: &Shard,
        members: Vec<(usize, Envelope)>,
    ) -> (Vec<Result<Accepted, NotifyError>>, Vec<usize>) {
        let p = shard.priority;
        let n = members.len();
        let (indices, envelopes): (Vec<usize>, Vec<Envelope>) = members.into_iter().unzip();
        let fail = |e: NotifyError| (vec![Err(e); n], indices.clone());
        let lag = self.lag[p.index()].load(Ordering::Relaxed);
        if lag > self.config.max_lag {
            self.metrics.refused_overload.add(p, n as u64);
            return fail(NotifyError::Overloaded(
                p,
                format!("queue lag {lag} above {}", self.config.max_lag),
            ));
        }
        let Ok(_permit) =
            self.admission[p.index()].try_acquire_many(n.min(u32::MAX as usize) as u32)
        else {
            self.metrics.refused_overload.add(p, n as u64);
            return fail(NotifyError::Overloaded(
                p,
                format!("{} events in flight at ingest", self.config.admission),
            ));
        };
        let accepted: Vec<Accepted> = envelopes
            .iter()
            .map(|e| Accepted {
                idempotency_key: e.token.to_string(),
                priority: p.as_str(),
                shard: shard.index,
            })
            .collect();
        match shard.log.append(envelopes).await {
            Ok(_) => {
                self.metrics.ingested.add(p, n as u64);
                self.wake[p.index()].notify_waiters();
                (accepted.into_iter().map(Ok).collect(), indices)
            }
            Err(e) => fail(NotifyError::Unavailable(e.to_string())),
        }
    }

    /// Registers (or renews) a device for pushes.
    pub fn register_device(&self, member: &str, r: Registration) -> Result<(), NotifyError> {
        if r.channel == Channel::Edge {
            return Err(RegistryError::Field(
                "edge devices register by connecting to the push edge (GET /v1/ws or /v1/sse with a token)".into(),
            )
            .into());
        }
        if self.bulkhead(r.channel).is_none() {
            return Err(NotifyError::ChannelOff(r.channel));
        }
        self.registry.register(member, r)?;
        Ok(())
    }

    /// Unregisters a device; whether it was registered.
    pub fn unregister_device(&self, member: &str, device: &str) -> bool {
        self.registry.unregister(member, device)
    }

    /// Changes since `cursor` visible to a device of type `device` (all if `None`).
    pub async fn pull(
        &self,
        member: &str,
        cursor: u64,
        limit: usize,
        device: Option<DeviceType>,
    ) -> Result<Pulled, NotifyError> {
        model::check_member(member)?;
        let events = self.store.events_after(member, cursor).await?;
        let limit = limit.clamp(1, 1_000);
        let mut pulled = Pulled {
            changes: Vec::new(),
            cursor,
            more: false,
        };
        for e in events {
            if pulled.changes.len() == limit {
                pulled.more = true;
                break;
            }
            pulled.cursor = e.seq;
            if crate::store::visible_to(&e, device) {
                pulled.changes.push(e);
            }
        }
        Ok(pulled)
    }

    /// The member's notification state as of `at_ns` (TAI ns).
    pub async fn state_at(&self, member: &str, at_ns: i64) -> Result<MemberState, NotifyError> {
        model::check_member(member)?;
        Ok(crate::store::fold(&self.store.events(member).await?, at_ns))
    }

    /// Records that the member read (`dismiss = false`) or dismissed a notification.
    pub async fn mark(&self, member: &str, id: u64, dismiss: bool) -> Result<u64, NotifyError> {
        model::check_member(member)?;
        if !self.store.has_notification(member, id).await? {
            return Err(NotifyError::NotFound(id));
        }
        let change = if dismiss {
            Change::Dismissed { id }
        } else {
            Change::Read { id }
        };
        let (seq, _) = self
            .store
            .write(
                Priority::High,
                vec![NewEvent {
                    member: member.into(),
                    change,
                }],
                None,
            )
            .await?;
        Ok(seq)
    }

    /// Sizes the pools once: goal from lag, then running toward goal.
    async fn reconcile(self: &Arc<Self>) {
        let now = Instant::now();
        let lags = self.lag().await;
        for p in Priority::ALL {
            let lag = lags[p.index()];
            self.lag[p.index()].store(lag, Ordering::Relaxed);
            let respawn = {
                let mut goals = self
                    .goals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (goal, spawned) = &mut goals[p.index()];
                goal.update(&self.config.pools[p.index()], lag, now);
                if goal.workers == *spawned {
                    None
                } else {
                    tracing::info!(priority = %p, goal = goal.workers, spawned, reason = %goal.reason, "resizing pool");
                    *spawned = goal.workers;
                    Some(goal.workers)
                }
            };
            if let Some(n) = respawn {
                let generation = self.generation[p.index()].fetch_add(1, Ordering::SeqCst) + 1;
                self.wake[p.index()].notify_waiters();
                for i in 0..n {
                    tokio::spawn(worker(self.clone(), p, generation, i, n));
                }
            }
        }
        // Expired devices are already invisible to deliveries; sweeping
        // them out (a pass over the whole registry) is for memory, so it
        // runs a few times per TTL, not on every reconciliation.
        let sweep_every = (self.registry.ttl() / 4).max(Duration::from_secs(1));
        let due = {
            let mut last = self
                .last_sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.elapsed() >= sweep_every;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            self.registry.sweep();
        }
    }

    /// Processes one batch of a shard; records read.
    async fn process(&self, shard: &Shard, proc: &mut ShardProc) -> usize {
        let p = shard.priority;
        if !proc.warm
            && let Err(e) = self.warm_up(shard, proc).await
        {
            tracing::warn!(priority = %p, shard = shard.index, "re-reading the log for de-duplication failed: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return 0;
        }
        let records = match shard
            .log
            .read(proc.next, self.config.read_batch, Duration::ZERO)
            .await
        {
            Ok(r) if r.is_empty() => return 0,
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(priority = %p, shard = shard.index, "reading the log failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return 0;
            }
        };
        let Ok(now) = self.clock.now() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return 0;
        };
        let batch_instant = Instant::now();
        proc.dedup.expire(now);
        let slices_before = proc.slices.len();
        let mut events = Vec::with_capacity(records.len());
        let mut deliveries = Vec::with_capacity(records.len());
        let (mut stale, mut duplicate, mut corrupt) = (0, 0, 0);
        // Records whose keys this batch put into the window (taken out
        // again if the batch cannot be stored).
        let mut recorded = Vec::with_capacity(records.len());
        for r in &records {
            let env = &r.envelope;
            proc.note(env.accepted.latest_ns, r.seq);
            let Some((n, (spec, kind))) = Notification::from_envelope(env)
                .ok()
                .and_then(|n| self.types.get(&n.kind).map(|t| (n, t)))
            else {
                corrupt += 1;
                continue;
            };
            let verdict = gates::judge(&env.key, &env.token, spec.staleness, now, &mut proc.dedup);
            if verdict != Verdict::Duplicate {
                recorded.push(env);
            }
            match verdict {
                Verdict::Stale => stale += 1,
                Verdict::Duplicate => duplicate += 1,
                Verdict::Pass => {
                    let member: Arc<str> = env.key.as_str().into();
                    let waited = u64::try_from(now.latest_ns - env.accepted.latest_ns).unwrap_or(0);
                    let expires_ns = env.token.event_time_ns.saturating_add(
                        i64::try_from(spec.staleness.as_nanos()).unwrap_or(i64::MAX),
                    );
                    deliveries.push(Delivery {
                        member: member.clone(),
                        targets: n.targets,
                        kind: kind.clone(),
                        body: Bytes::copy_from_slice(&n.body),
                        expires_at_unix_s: expires_ns.div_euclid(NS_PER_S)
                            - eventlog::clock::TAI_UTC_S,
                        created: batch_instant
                            .checked_sub(Duration::from_nanos(waited))
                            .unwrap_or(batch_instant),
                    });
                    events.push(NewEvent {
                        member,
                        change: Change::Notified {
                            kind: n.kind,
                            priority: n.priority,
                            targets: n.targets,
                            created_ns: env.token.event_time_ns,
                            body: n.body,
                        },
                    });
                }
            }
        }
        let next = records.last().map_or(proc.next, |r| r.seq + 1);
        let keep = self.config.dedup_window() + self.config.future_limit + REPLAY_MARGIN;
        let replay_from = proc.replay_from(now, keep, next);
        let checkpoint = ((p, shard.index), ShardCheckpoint { next, replay_from });
        let stored = events.len() as u64;
        let first = match self.store.write(p, events, Some(checkpoint)).await {
            Ok((first, _)) => first,
            Err(e) => {
                tracing::warn!(priority = %p, shard = shard.index, "member store write failed, retrying the batch: {e}");
                self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                // Take this batch's keys out of the window again, so the
                // retry does not take its own events for duplicates.
                for env in recorded {
                    proc.dedup.forget(&env.key, &env.token);
                }
                proc.slices.truncate(slices_before);
                tokio::time::sleep(Duration::from_millis(200)).await;
                return 0;
            }
        };
        proc.next = next;
        proc.replay_from = replay_from;
        shard.next_hint.store(next, Ordering::Relaxed);
        let m = &self.metrics;
        m.processed.add(p, records.len() as u64);
        m.stale.add(p, stale);
        m.duplicate.add(p, duplicate);
        m.corrupt.add(p, corrupt);
        m.stored.add(p, stored);
        self.note_evictions(proc);
        for (id, d) in (first..).zip(deliveries) {
            m.stored_latency[p.index()].record(d.created.elapsed());
            self.push(p, id, d);
        }
        records.len()
    }

    /// Adds the window's early evictions since the last call (warm-up
    /// included) to the status count.
    fn note_evictions(&self, proc: &mut ShardProc) {
        let total = proc.dedup.evicted_early();
        self.dedup_evicted
            .fetch_add(total - proc.evictions_reported, Ordering::Relaxed);
        proc.evictions_reported = total;
    }

    /// Hands one stored notification to every online, targeted device:
    /// APNs/FCM devices from the registry, edge devices from the push
    /// registry (connected to some edge node).
    fn push(&self, p: Priority, id: u64, d: Delivery) {
        let m = &self.metrics;
        let mut reached = false;
        let mut offer = |channel: Channel, device_id: &Arc<str>, token: &Arc<str>| {
            reached = true;
            let Some(bulkhead) = self.bulkhead(channel) else {
                return;
            };
            m.pushed.inc(channel);
            let push = Push {
                notification_id: id,
                member: d.member.clone(),
                device_id: device_id.clone(),
                device_token: token.clone(),
                urgent: p == Priority::High,
                kind: d.kind.clone(),
                body: d.body.clone(),
                expires_at_unix_s: d.expires_at_unix_s,
                created: d.created,
            };
            match bulkhead.try_submit(push) {
                Ok(()) | Err(Refused::Closed) => {}
                Err(Refused::QueueFull) => m.shed_queue_full.inc(channel),
                Err(Refused::BreakerOpen) => m.shed_breaker_open.inc(channel),
            }
        };
        self.registry.for_each_online(&d.member, |device| {
            if d.targets.includes(device.device_type) {
                offer(device.channel, &device.id, &device.token);
            }
        });
        self.edge
            .registry()
            .for_each_online(&d.member, |device, route| {
                let targeted = route
                    .device_type
                    .parse::<DeviceType>()
                    .is_ok_and(|t| d.targets.includes(t));
                if targeted {
                    offer(Channel::Edge, device, &route.node);
                }
            });
        if !reached {
            m.offline.add(p, 1);
        }
    }

    /// Re-reads `[replay_from, next)` into the de-duplication window.
    async fn warm_up(&self, shard: &Shard, proc: &mut ShardProc) -> Result<(), String> {
        let now = self.clock.now().map_err(|e| e.to_string())?;
        let (mut from, next) = (proc.replay_from, proc.next);
        while from < next {
            let records = shard
                .log
                .read(from, 4_096, Duration::ZERO)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = records.last().map(|r| r.seq) else {
                break;
            };
            for r in records.iter().take_while(|r| r.seq < next) {
                proc.note(r.envelope.accepted.latest_ns, r.seq);
                proc.dedup
                    .first_sighting(&r.envelope.key, &r.envelope.token, now);
            }
            from = last + 1;
        }
        proc.warm = true;
        self.note_evictions(proc);
        Ok(())
    }

    /// Stops the pools and drains the channels (up to `deadline`).
    pub async fn shutdown(&self, deadline: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        for w in &self.wake {
            w.notify_waiters();
        }
        for b in self.bulkheads.iter().flatten() {
            b.shutdown(deadline).await;
        }
    }

    /// Each pool's lag, goal and running workers.
    #[must_use]
    pub fn pools(&self) -> Vec<PoolStatus> {
        let goals = self
            .goals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Priority::ALL
            .iter()
            .map(|p| {
                let (goal, _) = &goals[p.index()];
                PoolStatus {
                    priority: p.as_str(),
                    lag: self.lag[p.index()].load(Ordering::Relaxed),
                    goal: goal.workers,
                    running: self.live[p.index()].load(Ordering::Relaxed) as usize,
                    reason: goal.reason.clone(),
                    shards: self.config.shards,
                }
            })
            .collect()
    }

    /// Records appended but not yet processed, per priority (fresh, not the reconciler's).
    pub async fn lag(&self) -> [u64; 3] {
        let mut out = [0; 3];
        for p in Priority::ALL {
            for s in &self.shards[p.index()] {
                if let Ok(end) = s.log.end().await {
                    out[p.index()] += end.saturating_sub(s.next_hint.load(Ordering::Relaxed));
                }
            }
        }
        out
    }

    /// Status as JSON.
    #[must_use]
    pub fn status(&self) -> serde_json::Value {
        let m = &self.metrics;
        let per_priority = |c: &crate::metrics::PerPriority| {
            serde_json::Value::Object(
                Priority::ALL
                    .iter()
                    .map(|p| (p.as_str().to_owned(), c.get(*p).into()))
                    .collect(),
            )
        };
        let (written, batches) = self.store.counters();
        let evicted = self.dedup_evicted.load(Ordering::Relaxed);
        serde_json::json!({
            "service": "notify",
            "backend": self.backend,
            "clock": self.clock.describe(),
            "pools": self.pools(),
            "ingested": per_priority(&m.ingested),
            "refused_invalid": per_priority(&m.refused_invalid),
            "refused_overload": per_priority(&m.refused_overload),
            "processed": per_priority(&m.processed),
            "stale": per_priority(&m.stale),
            "duplicate": per_priority(&m.duplicate),
            "corrupt": per_priority(&m.corrupt),
            "stored": per_priority(&m.stored),
            "offline": per_priority(&m.offline),
            "store": {"events_written": written, "batches": batches},
            "dedup": {
                "window_s": self.config.dedup_window().as_secs(),
                "evicted_early": evicted,
                "state": if evicted == 0 { "exact" } else { "degraded: window shortened by its memory cap" },
            },
            "registry": {"devices": self.registry.len(), "ttl_s": self.registry.ttl().as_secs()},
            "edge": self.edge.status(),
            "channels": self.bulkheads.iter().flatten().map(Bulkhead::stats).collect::<Vec<_>>(),
        })
    }

    /// Prometheus text for `/metrics`: the pipeline's `timecard_notify_*`
    /// and, when it hosts one, its edge node's `timecard_push_*`.
    #[must_use]
    pub fn prometheus(&self) -> String {
        let mut m = Exposition::new("notify", env!("CARGO_PKG_VERSION"));
        self.metrics.write(&mut m);
        let pools = self.pools();
        let per_pool: [GaugeOf<PoolStatus>; 3] = [
            (
                "queue_lag_records",
                "Records appended to the priority's queue and not processed yet.",
                |p| p.lag,
            ),
            (
                "pool_goal_workers",
                "Workers the pool's reconciler aims for.",
                |p| p.goal as u64,
            ),
            (
                "pool_running_workers",
                "Workers running in the pool.",
                |p| p.running as u64,
            ),
        ];
        for (name, help, value) in per_pool {
            let mut f = m.gauge(name, help);
            for p in &pools {
                f.sample(&[("priority", p.priority)], value(p));
            }
        }
        let channels: Vec<_> = self
            .bulkheads
            .iter()
            .flatten()
            .map(Bulkhead::stats)
            .collect();
        let per_channel: [GaugeOf<outbound::BulkheadStats>; 3] = [
            (
                "channel_queued",
                "Pushes queued in the channel's bulkhead, not started.",
                |s| s.queued as u64,
            ),
            (
                "channel_in_flight",
                "Pushes being sent on the channel.",
                |s| s.in_flight as u64,
            ),
            (
                "channel_breaker_open",
                "1 while the channel's circuit breaker is not closed.",
                |s| u64::from(s.breaker != outbound::BreakerState::Closed),
            ),
        ];
        for (name, help, value) in per_channel {
            let mut f = m.gauge(name, help);
            for s in &channels {
                f.sample(&[("channel", s.channel)], value(s));
            }
        }
        m.gauge("registry_devices", "Devices registered for push.")
            .value(self.registry.len());
        if let Some(node) = self.edge.local() {
            node.write_metrics(&mut m);
        }
        m.finish()
    }
}

/// A gauge family for `/metrics`: name, help, and its value for one item.
type GaugeOf<T> = (&'static str, &'static str, fn(&T) -> u64);

/// An edge node in this process with an embedded registry and a fresh key
/// (tests, benchmarks, and services not given an edge).
async fn in_process_edge() -> Result<push::processor::Processor, NotifyError> {
    let key = push::token::TokenKey::generate().map_err(|e| NotifyError::Config(e.to_string()))?;
    let config = push::edge::EdgeConfig {
        node_id: "notify".into(),
        ..Default::default()
    };
    let registry = push::registry::Registry::embedded(Duration::from_secs(30));
    push::processor::Processor::hosting(config, key, registry)
        .await
        .map_err(|e| NotifyError::Config(e.to_string()))
}

async fn reconciler(service: std::sync::Weak<NotifyService>) {
    loop {
        let Some(s) = service.upgrade() else { return };
        if s.stopping.load(Ordering::SeqCst) {
            return;
        }
        let every = s.config.reconcile_every;
        s.reconcile().await;
        drop(s);
        tokio::time::sleep(every).await;
    }
}

/// Counts a worker as alive until it returns (or panics).
struct Alive<'a>(&'a AtomicU64);

impl<'a> Alive<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn worker(service: Arc<NotifyService>, p: Priority, generation: u64, i: usize, n: usize) {
    let _alive = Alive::new(&service.live[p.index()]);
    let mine: Vec<Arc<Shard>> = service.shards[p.index()]
        .iter()
        .enumerate()
        .filter(|(s, _)| s % n == i)
        .map(|(_, s)| s.clone())
        .collect();
    loop {
        if service.generation[p.index()].load(Ordering::SeqCst) != generation
            || service.stopping.load(Ordering::SeqCst)
        {
            return;
        }
        let notified = service.wake[p.index()].notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut did = 0;
        for shard in &mine {
            if let Ok(mut proc) = shard.proc.try_lock() {
                let span =
                    tracing::debug_span!("notify.process", priority = %p, shard = shard.index);
                did += service.process(shard, &mut proc).instrument(span).await;
            }
        }
        if did == 0 {
            let _ = tokio::time::timeout(IDLE_WAIT, notified).await;
        }
    }
}
