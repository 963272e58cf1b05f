//! An edge node: holds device connections and writes pushes to them.
//!
//! A device connects over WebSocket (`GET /v1/ws`) or Server-Sent Events
//! (`GET /v1/sse`) with a signed token ([`crate::token`]); the token is
//! checked before the upgrade, so a bad or missing one costs one HTTP
//! response and no connection state. An accepted connection is registered
//! in the push registry, gets a `hello` frame and then:
//!
//! - **bounded send buffer**: pushes are queued without waiting
//!   (`try_send`); a client whose buffer is full is dropped (it reconnects
//!   and catches up from the pull store) and never slows anyone else. A
//!   write that stalls longer than the write timeout drops it too.
//! - **heartbeats**: WebSocket pings (SSE comments); a WebSocket client
//!   that sends nothing, not even a pong, for three intervals is closed.
//! - **randomized maximum lifetime** (75 to 100 % of the configured one):
//!   the connection is asked to reconnect, so load spreads onto new nodes
//!   and reconnect waves do not synchronise.
//! - **graceful drain** on shutdown: new connections are refused and every
//!   client is told to reconnect elsewhere, spread over the drain period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use operate::metrics::Exposition;
use tokio::sync::mpsc;

use crate::frame::{Encoded, Frame, ReconnectReason};
use crate::registry::Registry;
use crate::token::{Claims, valid_name};

const SHARDS: usize = 64;

/// How an edge node behaves.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// This node's id (in the registry and in `hello`).
    pub node_id: String,
    /// Interval of heartbeats (WebSocket ping, SSE comment).
    pub heartbeat: Duration,
    /// Maximum connection lifetime; each connection gets a random 75 to
    /// 100 % of it.
    pub max_lifetime: Duration,
    /// Frames queued per connection before it counts as too slow.
    pub send_buffer: usize,
    /// Longest a write to one client may take.
    pub write_timeout: Duration,
    /// Most connections held at once.
    pub max_connections: usize,
    /// Over how long a drain spreads its reconnect requests.
    pub drain_period: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            node_id: "edge-1".into(),
            heartbeat: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(30 * 60),
            send_buffer: 64,
            write_timeout: Duration::from_secs(10),
            max_connections: 250_000,
            drain_period: Duration::from_secs(5),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The node is draining.
    #[error("edge node is draining; connect to another node")]
    Draining,
    /// The node holds its maximum number of connections.
    #[error("edge node is full ({0} connections)")]
    Full(usize),
    /// The registry could not record the connection.
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
}

/// One connection in the node's table.
#[derive(Debug)]
struct Conn {
    device: Arc<str>,
    device_type: Arc<str>,
    conn: u64,
    topic: Option<Arc<str>>,
    tx: mpsc::Sender<Encoded>,
}

type Shard = HashMap<Arc<str>, Vec<Conn>>;

/// A connection named outside the table: member, device, device type, id.
type ConnRef = (Arc<str>, Arc<str>, Arc<str>, u64);

/// Counters of a node.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Connections accepted over WebSocket.
    pub accepted_ws: AtomicU64,
    /// Connections accepted over SSE.
    pub accepted_sse: AtomicU64,
    /// Upgrades refused for a bad or missing token.
    pub refused_auth: AtomicU64,
    /// Upgrades refused because the node was full or draining.
    pub refused_busy: AtomicU64,
    /// Frames queued to connections.
    pub queued: AtomicU64,
    /// Frames written to sockets.
    pub written: AtomicU64,
    /// Connections dropped because their send buffer was full or a write stalled.
    pub dropped_slow: AtomicU64,
    /// Connections closed for silence (no pong).
    pub closed_idle: AtomicU64,
    /// Connections asked to reconnect at the end of their lifetime.
    pub closed_lifetime: AtomicU64,
    /// Connections asked to reconnect by a drain.
    pub closed_drain: AtomicU64,
    /// Pushes for a device that is not connected here (any more).
    pub not_here: AtomicU64,
}

/// An edge node (cheap to clone).
#[derive(Clone, Debug)]
pub struct EdgeNode {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: EdgeConfig,
    node: Arc<str>,
    key: crate::token::TokenKey,
    registry: Registry,
    shards: Vec<RwLock<Shard>>,
    connections: AtomicU64,
    next_conn: AtomicU64,
    draining: AtomicBool,
    /// Sockets and SSE streams being served.
    open: AtomicU64,
    stats: EdgeStats,
    started: Instant,
    /// The node id's claim on the registry, held until the node drains.
    claim: Mutex<Option<crate::registry::NodeClaim>>,
}

/// An accepted connection's server side: frames to write, and its place in
/// the table (left when dropped).
#[derive(Debug)]
pub struct Attached {
    node: EdgeNode,
    member: Arc<str>,
    device: Arc<str>,
    conn: u64,
    rx: mpsc::Receiver<Encoded>,
    lifetime: Duration,
    hello: Encoded,
}

impl Attached {
    /// The next frame to write; `None` once the node let go of the
    /// connection (drained, replaced or too slow).
    pub async fn recv(&mut self) -> Option<Encoded> {
        self.rx.recv().await
    }

    /// The next frame if one is queued (in-process consumers).
    pub fn try_recv(&mut self) -> Option<Encoded> {
        self.rx.try_recv().ok()
    }

    /// The queued pushes, decoded (in-process consumers such as tests
    /// and benchmarks).
    pub fn drain_messages(&mut self) -> Vec<crate::frame::Message> {
        std::iter::from_fn(|| self.try_recv())
            .filter_map(|f| match Frame::decode(f.as_str()) {
                Ok(Frame::Push(m)) => Some(m),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.node.detach(&self.member, &self.device, self.conn);
    }
}

/// A node id unique on a shared registry by default: `<prefix>-<host>-<port>`
/// (characters of the host name outside `[A-Za-z0-9_-]` as `-`).
#[must_use]
pub fn default_node_id(prefix: &str, port: u16) -> String {
    let host: String = crate::host_name()
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if host.is_empty() {
        format!("{prefix}-{port}")
    } else {
        format!("{prefix}-{host}-{port}")
    }
}

impl EdgeNode {
    /// A node that verifies tokens with `key` and registers connections in
    /// `registry`.
    ///
    /// # Errors
    /// A node id that is not a valid name.
    pub fn new(
        config: EdgeConfig,
        key: crate::token::TokenKey,
        registry: Registry,
    ) -> Result<Self, crate::registry::RegistryError> {
        if !valid_name(&config.node_id) {
            return Err(crate::registry::RegistryError::Name(config.node_id));
        }
        for (what, d) in [
            ("heartbeat", config.heartbeat),
            ("maximum lifetime", config.max_lifetime),
            ("write timeout", config.write_timeout),
        ] {
            if d < Duration::from_millis(10) {
                return Err(crate::registry::RegistryError::Config(format!(
                    "the {what} must be at least 10 ms (got {d:?})"
                )));
            }
        }
        if config.send_buffer == 0 || config.max_connections == 0 {
            return Err(crate::registry::RegistryError::Config(
                "the send buffer and the connection limit must be positive".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                node: config.node_id.as_str().into(),
                config,
                key,
                registry,
                shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
                connections: AtomicU64::new(0),
                next_conn: AtomicU64::new(1),
                draining: AtomicBool::new(false),
                open: AtomicU64::new(0),
                stats: EdgeStats::default(),
                started: Instant::now(),
                claim: Mutex::new(None),
            }),
        })
    }

    /// Resolves if another node takes this node's id over (see
    /// [`crate::registry::NodeClaim::lost`]); never without a held claim.
    pub async fn claim_lost(&self) {
        let lost = crate::lock(&self.inner.claim)
            .as_ref()
            .map(crate::registry::NodeClaim::lost);
        if let Some(mut lost) = lost
            && lost.wait_for(|l| *l).await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }

    /// Keeps `claim` (this node's id, from [`Registry::claim_node`]) for
    /// the node's life; [`EdgeNode::drain`] gives it back.
    pub fn hold_claim(&self, claim: crate::registry::NodeClaim) {
        *crate::lock(&self.inner.claim) = Some(claim);
    }

    /// The node id.
    #[must_use]
    pub fn id(&self) -> &Arc<str> {
        &self.inner.node
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EdgeConfig {
        &self.inner.config
    }

    /// The registry connections are recorded in.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &EdgeStats {
        &self.inner.stats
    }

    /// Connections held now.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Whether the node is draining.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    fn shard(&self, member: &str) -> &RwLock<Shard> {
        &self.inner.shards[crate::shard_index(member, SHARDS)]
    }

    /// Accepts an authenticated device: puts it in the table (replacing an
    /// older connection of the same device on this node), registers its
    /// route and returns its server side. `topic` subscribes it to
    /// broadcasts of that topic.
    ///
    /// # Errors
    /// Draining, full, or the registry write failed.
    pub async fn attach(&self, claims: &Claims, topic: Option<&str>) -> Result<Attached, Refused> {
        let inner = &self.inner;
        if self.is_draining() {
            inner.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Draining);
        }
        let max = inner.config.max_connections as u64;
        // Sockets still being served count too (a dropped connection's
        // socket lives until its stalled write times out).
        if inner.open.load(Ordering::Relaxed) >= max {
            inner.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full(inner.config.max_connections));
        }
        if inner
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            inner.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full(inner.config.max_connections));
        }
        let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(inner.config.send_buffer.max(1));
        let member: Arc<str> = claims.member.as_str().into();
        let device: Arc<str> = claims.device.as_str().into();
        let device_type: Arc<str> = claims.device_type.as_str().into();
        let lifetime = inner
            .config
            .max_lifetime
            .mul_f64(0.75 + 0.25 * crate::unit_random());
        let attached = Attached {
            node: self.clone(),
            member: member.clone(),
            device: device.clone(),
            conn,
            rx,
            lifetime,
            hello: Frame::Hello {
                node: inner.node.to_string(),
                conn,
                heartbeat_s: inner.config.heartbeat.as_secs(),
                lifetime_s: lifetime.as_secs(),
            }
            .encode(),
        };
        {
            let mut shard = crate::write(self.shard(&member));
            let conns = shard.entry(member.clone()).or_default();
            if let Some(old) = conns.iter().position(|c| c.device == device) {
                // The device connected again here: the old connection is
                // told why and closes.
                let old = conns.swap_remove(old);
                let _ = old.tx.try_send(
                    Frame::Reconnect {
                        reason: ReconnectReason::Replaced,
                    }
                    .encode(),
                );
                inner.connections.fetch_sub(1, Ordering::Relaxed);
            }
            conns.push(Conn {
                device: device.clone(),
                device_type: device_type.clone(),
                conn,
                topic: topic.map(Into::into),
                tx,
            });
        }
        let route = inner.registry.route(&inner.node, &device_type, conn);
        inner.registry.register(&member, &device, route).await?;
        Ok(attached)
    }

    /// Attaches a device inside this process (no socket, no token: the
    /// caller is trusted), e.g. a consumer in the same process, a test or a
    /// benchmark; it reads its frames with [`Attached::recv`].
    ///
    /// # Errors
    /// Bad names, draining, full, or the registry write failed.
    pub async fn attach_local(
        &self,
        member: &str,
        device: &str,
        device_type: &str,
    ) -> Result<Attached, Refused> {
        let claims = Claims {
            member: member.into(),
            device: device.into(),
            device_type: device_type.into(),
            topics: Vec::new(),
            expires_unix_s: u64::MAX,
        };
        self.attach(&claims, None).await
    }

    /// Takes connection `conn` out of the table (if still there) and
    /// unregisters its route.
    fn detach(&self, member: &Arc<str>, device: &Arc<str>, conn: u64) {
        self.remove_conns(member, |c| c.conn == conn);
        self.unregister(member, device, conn);
    }

    /// Removes the route of connection `conn` (if it is still the route:
    /// a newer connection keeps its record).
    fn unregister(&self, member: &Arc<str>, device: &Arc<str>, conn: u64) {
        let (registry, node, member, device) = (
            self.inner.registry.clone(),
            self.inner.node.clone(),
            member.clone(),
            device.clone(),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { registry.unregister(&member, &device, &node, conn).await });
        }
    }

    /// Removes a member's connections matching `which`; their devices and
    /// connection ids.
    fn remove_conns(&self, member: &str, which: impl Fn(&Conn) -> bool) -> Vec<(Arc<str>, u64)> {
        let mut shard = crate::write(self.shard(member));
        let Some(conns) = shard.get_mut(member) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        conns.retain(|c| {
            let hit = which(c);
            if hit {
                removed.push((c.device.clone(), c.conn));
            }
            !hit
        });
        if conns.is_empty() {
            shard.remove(member);
        }
        self.inner
            .connections
            .fetch_sub(removed.len() as u64, Ordering::Relaxed);
        removed
    }

    /// Queues `frame` to each connection for which `which` holds; drops
    /// connections whose buffer is full. Returns how many got it and how
    /// many matched.
    fn offer(
        &self,
        member: &str,
        frame: &Encoded,
        which: impl Fn(&Conn) -> bool,
    ) -> (usize, usize) {
        let (mut sent, mut matched) = (0, 0);
        let mut slow = Vec::new();
        {
            let shard = crate::read(self.shard(member));
            if let Some(conns) = shard.get(member) {
                for c in conns.iter().filter(|c| which(c)) {
                    matched += 1;
                    match c.tx.try_send(frame.clone()) {
                        Ok(()) => sent += 1,
                        Err(_) => slow.push(c.conn),
                    }
                }
            }
        }
        self.drop_slow(member, &slow);
        let stats = &self.inner.stats;
        stats.queued.fetch_add(sent as u64, Ordering::Relaxed);
        (sent, matched)
    }

    fn drop_slow(&self, member: &str, slow: &[u64]) {
        if slow.is_empty() {
            return;
        }
        // Its route goes now, not when its blocked write times out.
        let member: Arc<str> = member.into();
        let removed = self.remove_conns(&member, |c| slow.contains(&c.conn));
        for (device, conn) in &removed {
            self.unregister(&member, device, *conn);
        }
        self.inner
            .stats
            .dropped_slow
            .fetch_add(removed.len() as u64, Ordering::Relaxed);
    }

    /// Queues `frame` to a member's connections here (one device, or all);
    /// how many got it.
    pub fn deliver(&self, member: &str, device: Option<&str>, frame: &Encoded) -> usize {
        let (sent, matched) = self.offer(member, frame, |c| device.is_none_or(|d| *c.device == *d));
        if matched == 0 {
            self.inner.stats.not_here.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Queues `frame` to every connection subscribed to `topic`; how many.
    pub fn broadcast(&self, topic: &str, frame: &Encoded) -> usize {
        let mut sent = 0;
        for shard in &self.inner.shards {
            let mut slow: Vec<(Arc<str>, u64)> = Vec::new();
            {
                let shard = crate::read(shard);
                for (member, conns) in shard.iter() {
                    for c in conns.iter().filter(|c| c.topic.as_deref() == Some(topic)) {
                        match c.tx.try_send(frame.clone()) {
                            Ok(()) => sent += 1,
                            Err(_) => slow.push((member.clone(), c.conn)),
                        }
                    }
                }
            }
            for (member, conn) in slow {
                self.drop_slow(&member, &[conn]);
            }
        }
        self.inner
            .stats
            .queued
            .fetch_add(sent as u64, Ordering::Relaxed);
        sent
    }

    /// Every connection: (member, device, device type, connection id).
    fn snapshot(&self) -> Vec<ConnRef> {
        let mut all = Vec::with_capacity(self.connections() as usize);
        for shard in &self.inner.shards {
            let shard = crate::read(shard);
            for (member, conns) in shard.iter() {
                all.extend(conns.iter().map(|c| {
                    (
                        member.clone(),
                        c.device.clone(),
                        c.device_type.clone(),
                        c.conn,
                    )
                }));
            }
        }
        all
    }

    /// Whether connection `conn` of a member is in the table.
    fn holds(&self, member: &str, conn: u64) -> bool {
        crate::read(self.shard(member))
            .get(member)
            .is_some_and(|cs| cs.iter().any(|c| c.conn == conn))
    }

    /// Renews the route of every live connection (the table is the
    /// authority: a record that went missing or expired, e.g. during a NATS
    /// outage longer than the TTL, is written again; one a newer
    /// connection wrote is left alone), 64 writes at a time, and sweeps
    /// expired records out of the local copy. Run every
    /// [`Registry::refresh_every`].
    pub async fn refresh(&self) {
        use futures_util::StreamExt as _;
        let registry = &self.inner.registry;
        futures_util::stream::iter(self.snapshot())
            .for_each_concurrent(64, |(member, device, device_type, conn)| async move {
                if !self.holds(&member, conn) {
                    return;
                }
                let route = registry.route(&self.inner.node, &device_type, conn);
                if let Err(e) = registry.renew(&member, &device, route).await {
                    tracing::warn!(%member, %device, "registry refresh failed: {e}");
                }
            })
            .await;
        registry.sweep();
    }

    /// Refreshes the node's routes until the node is dropped.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.registry.refresh_every();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                EdgeNode { inner }.refresh().await;
            }
        })
    }

    /// Graceful drain: refuse new connections, then ask every client to
    /// reconnect elsewhere, spread over the drain period, and let go of
    /// them. Returns when all are gone or the period plus the write
    /// timeout has passed.
    pub async fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        let all = self.snapshot();
        let period = self.inner.config.drain_period;
        let start = tokio::time::Instant::now();
        let bye = Frame::Reconnect {
            reason: ReconnectReason::Drain,
        }
        .encode();
        let n = all.len().max(1);
        for (i, (member, _, _, conn)) in all.iter().enumerate() {
            let at = start + period.mul_f64(i as f64 / n as f64);
            if tokio::time::Instant::now() < at {
                tokio::time::sleep_until(at).await;
            }
            let (told, _) = self.offer(member, &bye, |c| c.conn == *conn);
            let removed = self.remove_conns(member, |c| c.conn == *conn);
            for (device, conn) in &removed {
                self.unregister(member, device, *conn);
            }
            // Told to go, it is closed by the drain, even when the client was
            // quicker to hang up than this loop to take it out of the table.
            if told > 0 || !removed.is_empty() {
                self.inner
                    .stats
                    .closed_drain
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let deadline = start + period + self.inner.config.write_timeout;
        while self.inner.stats_open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Drained: a replacement may take the node id now.
        let claim = crate::lock(&self.inner.claim).take();
        if let Some(claim) = claim {
            claim.release().await;
        }
    }

    /// The status as JSON.
    #[must_use]
    pub fn status(&self) -> serde_json::Value {
        let s = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "node": &*self.inner.node,
            "connections": self.connections(),
            "open_sockets": self.inner.stats_open(),
            "draining": self.is_draining(),
            "uptime_s": self.inner.started.elapsed().as_secs(),
            "registry": {"backend": self.inner.registry.describe(), "records": self.inner.registry.len(), "ttl_s": self.inner.registry.ttl().as_secs_f64()},
            "accepted": {"websocket": get(&s.accepted_ws), "sse": get(&s.accepted_sse)},
            "refused": {"auth": get(&s.refused_auth), "busy": get(&s.refused_busy)},
            "frames": {"queued": get(&s.queued), "written": get(&s.written), "not_here": get(&s.not_here)},
            "closed": {"slow": get(&s.dropped_slow), "idle": get(&s.closed_idle), "lifetime": get(&s.closed_lifetime), "drain": get(&s.closed_drain)},
            "rss_bytes": crate::rss_bytes(),
        })
    }

    /// Writes the node's counters into `m` as `timecard_push_*` families
    /// (under the push edge's names, whoever else `m` is for).
    pub fn write_metrics(&self, m: &mut Exposition) {
        let s = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        m.daemon("push", env!("CARGO_PKG_VERSION"));
        m.gauge("connections", "Connections held.")
            .value(self.connections());
        m.counter("accepted_total", "Connections accepted.")
            .sample(&[("transport", "websocket")], get(&s.accepted_ws))
            .sample(&[("transport", "sse")], get(&s.accepted_sse));
        m.counter("refused_total", "Connections refused.")
            .sample(&[("reason", "auth")], get(&s.refused_auth))
            .sample(&[("reason", "busy")], get(&s.refused_busy));
        m.counter("frames_queued_total", "Frames queued to connections.")
            .value(get(&s.queued));
        m.counter("frames_written_total", "Frames written to sockets.")
            .value(get(&s.written));
        m.counter("closed_total", "Connections closed by the server.")
            .sample(&[("reason", "slow")], get(&s.dropped_slow))
            .sample(&[("reason", "idle")], get(&s.closed_idle))
            .sample(&[("reason", "lifetime")], get(&s.closed_lifetime))
            .sample(&[("reason", "drain")], get(&s.closed_drain));
        m.gauge("registry_records", "Registry records held locally.")
            .value(self.inner.registry.len());
    }

    /// Serves an upgraded WebSocket until it closes.
    pub async fn run_websocket(&self, socket: WebSocket, mut a: Attached) {
        let _open = OpenSocket::new(&self.inner);
        let (mut sink, mut incoming) = socket.split();
        let cfg = &self.inner.config;
        let stats = &self.inner.stats;
        let timeout = cfg.write_timeout;
        let text = |e: Encoded| {
            WsMessage::Text(Utf8Bytes::try_from(e.bytes().clone()).unwrap_or_default())
        };
        if tokio::time::timeout(timeout, sink.send(text(a.hello.clone())))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
        let start = tokio::time::Instant::now();
        let mut heartbeat = tokio::time::interval_at(start + cfg.heartbeat, cfg.heartbeat);
        let lifetime = tokio::time::sleep(a.lifetime);
        tokio::pin!(lifetime);
        let mut last_heard = start;
        let close = |code: u16, reason: &'static str| {
            WsMessage::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }))
        };
        loop {
            tokio::select! {
                frame = a.rx.recv() => {
                    let Some(frame) = frame else {
                        // Let go by the node (drain, replaced, too slow).
                        let _ = tokio::time::timeout(timeout, sink.send(close(1012, "reconnect"))).await;
                        break;
                    };
                    let mut n = 1u64;
                    let mut ok = sink.feed(text(frame)).await.is_ok();
                    while ok && n < 64 {
                        match a.rx.try_recv() {
                            Ok(f) => {
                                n += 1;
                                ok = sink.feed(text(f)).await.is_ok();
                            }
                            Err(_) => break,
                        }
                    }
                    match tokio::time::timeout(timeout, sink.flush()).await {
                        Ok(Ok(())) if ok => {
                            stats.written.fetch_add(n, Ordering::Relaxed);
                        }
                        Ok(_) => break,
                        Err(_) => {
                            // A stalled write: too slow (counted once,
                            // whether or not its buffer filled first).
                            self.drop_slow(&a.member, &[a.conn]);
                            break;
                        }
                    }
                }
                msg = incoming.next() => match msg {
                    None | Some(Err(_) | Ok(WsMessage::Close(_))) => break,
                    Some(Ok(_)) => last_heard = tokio::time::Instant::now(),
                },
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > cfg.heartbeat * 3 {
                        stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    let ping = sink.send(WsMessage::Ping(bytes::Bytes::new()));
                    if tokio::time::timeout(timeout, ping).await.map_or(true, |r| r.is_err()) {
                        break;
                    }
                }
                () = &mut lifetime => {
                    stats.closed_lifetime.fetch_add(1, Ordering::Relaxed);
                    let bye = Frame::Reconnect { reason: ReconnectReason::Lifetime }.encode();
                    let _ = tokio::time::timeout(timeout, async {
                        sink.send(text(bye)).await?;
                        sink.send(close(1000, "lifetime")).await
                    }).await;
                    break;
                }
            }
        }
    }

    /// The frames of an SSE connection as a stream: `hello`, then pushes,
    /// then (at the end of the lifetime) `reconnect`.
    pub fn sse_frames(
        &self,
        a: Attached,
    ) -> impl futures_util::Stream<Item = Encoded> + Send + 'static {
        let open = OpenSocket::new(&self.inner);
        let deadline = tokio::time::Instant::now() + a.lifetime;
        let hello = Some(a.hello.clone());
        let stats = self.inner.clone();
        futures_util::stream::unfold(
            (a, hello, false, open, stats),
            move |(mut a, hello, done, open, inner)| async move {
                if let Some(h) = hello {
                    return Some((h, (a, None, false, open, inner)));
                }
                if done {
                    return None;
                }
                tokio::select! {
                    f = a.rx.recv() => {
                        let f = f?;
                        inner.stats.written.fetch_add(1, Ordering::Relaxed);
                        Some((f, (a, None, false, open, inner)))
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        inner.stats.closed_lifetime.fetch_add(1, Ordering::Relaxed);
                        let bye = Frame::Reconnect { reason: ReconnectReason::Lifetime }.encode();
                        Some((bye, (a, None, true, open, inner)))
                    }
                }
            },
        )
    }

    /// Checks a token (an `Authorization: Bearer` header or a `token`
    /// query parameter) at the current time; counts refusals.
    ///
    /// # Errors
    /// Missing, malformed, forged or expired.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Claims, crate::token::TokenError> {
        let r = match token {
            Some(t) => self.inner.key.verify(t, crate::token::unix_now_s()),
            None => Err(crate::token::TokenError::Malformed(
                "no token: send Authorization: Bearer <token> or ?token=<token>",
            )),
        };
        if r.is_err() {
            self.inner
                .stats
                .refused_auth
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Counts an accepted connection by transport.
    pub(crate) fn count_accept(&self, websocket: bool) {
        let s = &self.inner.stats;
        if websocket {
            &s.accepted_ws
        } else {
            &s.accepted_sse
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

impl Inner {
    fn stats_open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// Counts a socket (or SSE stream) being served, for drains to wait on.
#[derive(Debug)]
struct OpenSocket(Arc<Inner>);

impl OpenSocket {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.open.fetch_add(1, Ordering::Relaxed);
        Self(inner.clone())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
