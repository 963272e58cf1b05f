//! The push registry: which edge node holds a member's device connection.
//!
//! Soft state with a TTL, as Zuul Push keeps it: an edge node registers a
//! device when its connection is authenticated, refreshes the record while
//! the connection lives ([`Registry::refresh_every`]) and removes it when
//! the connection closes. A node that crashes stops refreshing; its records
//! stop counting as online when their expiry passes, so no phantom route
//! survives it by more than the TTL.
//!
//! Two backends:
//! - **embedded**: an in-process map, for one process (the edge nodes and
//!   the message processor that share it);
//! - **NATS JetStream KV**: a bucket (`max_age` = TTL, so the server itself
//!   drops records nobody refreshes), one key per device
//!   (`r.<member>.<device>`). Every process keeps a local copy fed by a
//!   watch on the bucket, so lookups on the delivery path never wait for
//!   the network.
//!
//! Node ids are claimed as well ([`Registry::claim_node`]): a second live
//! node with the same id is refused at start instead of silently sharing
//! (and losing) the first one's routed pushes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use crate::token::valid_name;

const SHARDS: usize = 64;

/// The KV bucket edge nodes and message processors share by default.
pub const DEFAULT_BUCKET: &str = "timecard-push-registry";
/// How long the NATS bucket keeps a record nobody rewrites (garbage
/// collection; whether a record counts is decided by its own expiry).
pub const BUCKET_MAX_AGE: Duration = Duration::from_secs(600);
/// Longest record TTL (well under [`BUCKET_MAX_AGE`]).
pub const MAX_TTL: Duration = Duration::from_secs(300);

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A member, device or node name that is not valid.
    #[error("invalid registry name {0:?}: 1 to 128 characters from [A-Za-z0-9_-]")]
    Name(String),
    /// The NATS bucket could not be opened or written.
    #[error("push registry (NATS KV): {0}")]
    Nats(String),
    /// A setting out of range.
    #[error("{0}")]
    Config(String),
    /// Another live node holds this node id.
    #[error(
        "node id {node:?} is in use by {holder}{}: give each edge node its own id (timecard-push --node-id, notify --push-node)",
        claim_left(.expires_in_ms)
    )]
    NodeInUse {
        /// The node id.
        node: String,
        /// Who holds it (`host:pid/claim`).
        holder: String,
        /// Time left on a NATS claim unless its holder renews it, ms.
        expires_in_ms: Option<u64>,
    },
}

/// Where a device is connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The edge node holding the connection.
    pub node: Arc<str>,
    /// The device type from the connection's token.
    pub device_type: Arc<str>,
    /// The connection id on that node.
    pub conn: u64,
    /// Unix ms after which the record no longer counts.
    pub expires_unix_ms: u64,
}

impl Route {
    fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.node, self.device_type, self.conn, self.expires_unix_ms
        )
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut it = text.split('|');
        let (node, device_type, conn, expires) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || !valid_name(node) || !valid_name(device_type) {
            return None;
        }
        Some(Self {
            node: node.into(),
            device_type: device_type.into(),
            conn: conn.parse().ok()?,
            expires_unix_ms: expires.parse().ok()?,
        })
    }
}

/// One device's record in the local copy.
#[derive(Clone, Debug)]
struct Entry {
    device: Arc<str>,
    route: Route,
    /// KV revision (NATS), for conditional deletes.
    revision: u64,
}

type Shard = HashMap<Arc<str>, Vec<Entry>>;

/// The registry (cheap to clone).
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ttl: Duration,
    shards: Vec<RwLock<Shard>>,
    devices: AtomicUsize,
    nats: Option<kv::Store>,
    client: Option<async_nats::Client>,
    /// Node ids claimed in this process (the embedded registry's claims).
    claimed: Mutex<HashSet<String>>,
}

/// Unix ms on the system clock.
#[must_use]
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn key_of(member: &str, device: &str) -> String {
    format!("r.{member}.{device}")
}

fn check(names: &[&str]) -> Result<(), RegistryError> {
    match names.iter().find(|n| !valid_name(n)) {
        Some(bad) => Err(RegistryError::Name((*bad).chars().take(80).collect())),
        None => Ok(()),
    }
}

impl Registry {
    /// An in-process registry whose records live `ttl` without a refresh.
    #[must_use]
    pub fn embedded(ttl: Duration) -> Self {
        Self::with_nats(ttl, None, None)
    }

    fn with_nats(
        ttl: Duration,
        nats: Option<kv::Store>,
        client: Option<async_nats::Client>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl,
                shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
                devices: AtomicUsize::new(0),
                nats,
                client,
                claimed: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// A registry in the JetStream KV bucket `bucket` (created with
    /// `max_age = ttl` if missing), with a local copy kept current by a
    /// watch task on the current tokio runtime.
    ///
    /// # Errors
    /// The bucket cannot be opened or watched.
    pub async fn nats(
        client: &async_nats::Client,
        bucket: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<Self, RegistryError> {
        if ttl > MAX_TTL || ttl.is_zero() {
            return Err(RegistryError::Nats(format!(
                "a registry TTL of {ttl:?} is outside (0, {MAX_TTL:?}]"
            )));
        }
        let js = async_nats::jetstream::new(client.clone());
        let nats_err =
            |e: &dyn std::fmt::Display| RegistryError::Nats(format!("bucket {bucket}: {e}"));
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "timecard push registry: device -> edge node".into(),
                    history: 1,
                    max_age: BUCKET_MAX_AGE,
                    num_replicas: replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| nats_err(&e))?,
        };
        let mut watch = store
            .watch_with_history(">")
            .await
            .map_err(|e| nats_err(&e))?;
        let registry = Self::with_nats(ttl, Some(store), Some(client.clone()));
        let weak = Arc::downgrade(&registry.inner);
        tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                let Some(inner) = weak.upgrade() else { break };
                let registry = Registry { inner };
                match entry {
                    Ok(e) => registry.apply(&e),
                    Err(e) => tracing::warn!("push registry watch: {e}"),
                }
            }
        });
        Ok(registry)
    }

    /// Applies one update from the bucket to the local copy.
    fn apply(&self, e: &kv::Entry) {
        let Some((member, device)) = e.key.strip_prefix("r.").and_then(|k| k.split_once('.'))
        else {
            return;
        };
        match e.operation {
            kv::Operation::Put => {
                if let Some(route) = Route::decode(&e.value) {
                    self.insert_local(member, device, route, e.revision);
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                // Not a record written after the delete (a lagging watch).
                self.remove_local(member, device, |local| local.revision <= e.revision);
            }
        }
    }

    fn shard(&self, member: &str) -> &RwLock<Shard> {
        &self.inner.shards[crate::shard_index(member, SHARDS)]
    }

    fn insert_local(&self, member: &str, device: &str, route: Route, revision: u64) {
        let mut shard = crate::write(self.shard(member));
        let devices = shard.entry(member.into()).or_default();
        match devices.iter_mut().find(|e| &*e.device == device) {
            Some(e) if e.revision <= revision || revision == 0 => {
                e.route = route;
                e.revision = revision;
            }
            Some(_) => {}
            None => {
                devices.push(Entry {
                    device: device.into(),
                    route,
                    revision,
                });
                self.inner.devices.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes the device's entry if `keep_if_not` says so; returns it.
    fn remove_local(
        &self,
        member: &str,
        device: &str,
        matches: impl Fn(&Entry) -> bool,
    ) -> Option<Entry> {
        let mut shard = crate::write(self.shard(member));
        let devices = shard.get_mut(member)?;
        let i = devices
            .iter()
            .position(|e| &*e.device == device && matches(e))?;
        let e = devices.swap_remove(i);
        if devices.is_empty() {
            shard.remove(member);
        }
        self.inner.devices.fetch_sub(1, Ordering::Relaxed);
        Some(e)
    }

    /// A route for a connection on `node`, expiring one TTL from now.
    #[must_use]
    pub fn route(&self, node: &Arc<str>, device_type: &Arc<str>, conn: u64) -> Route {
        Route {
            node: node.clone(),
            device_type: device_type.clone(),
            conn,
            expires_unix_ms: unix_now_ms() + self.inner.ttl.as_millis() as u64,
        }
    }

    /// Registers (or refreshes) a device's route.
    ///
    /// # Errors
    /// Bad names, or the NATS write failed.
    pub async fn register(
        &self,
        member: &str,
        device: &str,
        route: Route,
    ) -> Result<(), RegistryError> {
        check(&[member, device, &route.node, &route.device_type])?;
        let revision = match &self.inner.nats {
            Some(store) => store
                .put(key_of(member, device), route.encode().into())
                .await
                .map_err(|e| RegistryError::Nats(e.to_string()))?,
            None => 0,
        };
        self.insert_local(member, device, route, revision);
        Ok(())
    }

    /// Renews the record of a live connection (`route` names its node and
    /// connection) if the record is still its own, or missing, or expired;
    /// never over a record a newer connection wrote. Whether it renewed.
    ///
    /// # Errors
    /// Bad names, or the NATS write failed (other than losing a race).
    pub async fn renew(
        &self,
        member: &str,
        device: &str,
        route: Route,
    ) -> Result<bool, RegistryError> {
        check(&[member, device, &route.node, &route.device_type])?;
        let now = unix_now_ms();
        let current = {
            let shard = crate::read(self.shard(member));
            shard
                .get(member)
                .and_then(|ds| ds.iter().find(|e| &*e.device == device))
                .map(|e| (e.route.clone(), e.revision))
        };
        let ours_or_stale =
            |r: &Route| (r.node == route.node && r.conn == route.conn) || r.expires_unix_ms <= now;
        let Some(store) = &self.inner.nats else {
            // In process: decide and write under the shard lock.
            let mut shard = crate::write(self.shard(member));
            let devices = shard.entry(member.into()).or_default();
            return Ok(match devices.iter_mut().find(|e| &*e.device == device) {
                Some(e) if ours_or_stale(&e.route) => {
                    e.route = route;
                    true
                }
                Some(_) => false,
                None => {
                    devices.push(Entry {
                        device: device.into(),
                        route,
                        revision: 0,
                    });
                    self.inner.devices.fetch_add(1, Ordering::Relaxed);
                    true
                }
            });
        };
        let key = key_of(member, device);
        let value = bytes::Bytes::from(route.encode());
        // Compare-and-set against the revision we know: a record written
        // meanwhile (a newer connection elsewhere) wins.
        let written = match current {
            Some((r, _)) if !ours_or_stale(&r) => return Ok(false),
            Some((_, revision)) => store.update(&key, value, revision).await.ok(),
            None => store.create(&key, value).await.ok(),
        };
        match written {
            Some(revision) => {
                self.insert_local(member, device, route, revision);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes a device's route if it still points at connection `conn` of
    /// `node` (a newer connection elsewhere keeps its record).
    pub async fn unregister(&self, member: &str, device: &str, node: &str, conn: u64) {
        let Some(e) = self.remove_local(member, device, |e| {
            &*e.route.node == node && e.route.conn == conn
        }) else {
            return;
        };
        if let Some(store) = &self.inner.nats {
            // Conditional: a newer registration (another node, another
            // connection) has a newer revision and stays.
            if let Err(err) = store
                .delete_expect_revision(key_of(member, device), Some(e.revision))
                .await
            {
                tracing::debug!(member, device, "registry delete skipped: {err}");
            }
        }
    }

    /// Calls `f(device, route)` for each device of `member` whose record
    /// has not expired.
    pub fn for_each_online(&self, member: &str, mut f: impl FnMut(&Arc<str>, &Route)) {
        let now = unix_now_ms();
        let shard = crate::read(self.shard(member));
        if let Some(devices) = shard.get(member) {
            for e in devices {
                if e.route.expires_unix_ms > now {
                    f(&e.device, &e.route);
                }
            }
        }
    }

    /// The route of one device, if online.
    #[must_use]
    pub fn lookup(&self, member: &str, device: &str) -> Option<Route> {
        let mut found = None;
        self.for_each_online(member, |d, r| {
            if &**d == device {
                found = Some(r.clone());
            }
        });
        found
    }

    /// Drops expired records from the local copy; how many.
    pub fn sweep(&self) -> usize {
        let now = unix_now_ms();
        let mut removed = 0;
        for shard in &self.inner.shards {
            let mut shard = crate::write(shard);
            shard.retain(|_, devices| {
                let before = devices.len();
                devices.retain(|e| e.route.expires_unix_ms > now);
                removed += before - devices.len();
                !devices.is_empty()
            });
        }
        self.inner.devices.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Records held locally (expired ones included until swept).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.devices.load(Ordering::Relaxed)
    }

    /// Whether no record is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record lifetime without a refresh.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// How often a node refreshes the records of its live connections
    /// (a third of the TTL, so two refreshes may be lost before expiry).
    #[must_use]
    pub fn refresh_every(&self) -> Duration {
        (self.inner.ttl / 3).max(Duration::from_millis(100))
    }

    /// The NATS connection of a NATS registry (also used for routing).
    #[must_use]
    pub fn client(&self) -> Option<&async_nats::Client> {
        self.inner.client.as_ref()
    }

    /// Claims `node` as this process's node id, so that two live edge
    /// nodes never share one (each would receive the other's routed
    /// pushes and find no connection for them). Embedded: unique within
    /// the process. NATS: a record `n.<node>` (`<expiry ms> <host>:<pid>/<claim>`)
    /// in the bucket, created if absent and renewed every
    /// [`Registry::refresh_every`] while the claim lives. A record whose
    /// holder is gone is taken over: at once when the holder was a process
    /// of this host that no longer runs (a restart after a crash), else
    /// once it has expired and, watched for a renewal period and a half,
    /// stayed unrenewed (so a clock ahead of the holder's cannot take a
    /// live claim).
    ///
    /// # Errors
    /// [`RegistryError::NodeInUse`] while another live node holds it; a bad
    /// name; NATS unreachable.
    pub async fn claim_node(&self, node: &str) -> Result<NodeClaim, RegistryError> {
        check(&[node])?;
        let holder = claim_holder();
        let (lost_tx, lost) = tokio::sync::watch::channel(false);
        let Some(store) = &self.inner.nats else {
            let mut claimed = crate::lock(&self.inner.claimed);
            if !claimed.insert(node.to_owned()) {
                return Err(RegistryError::NodeInUse {
                    node: node.to_owned(),
                    holder: format!("another edge node of this process ({holder})"),
                    expires_in_ms: None,
                });
            }
            return Ok(NodeClaim {
                registry: self.clone(),
                node: node.to_owned(),
                holder,
                revision: Arc::new(AtomicU64::new(0)),
                renewal: None,
                lost,
            });
        };
        let key = claim_key(node);
        let revision = match store.create(&key, self.claim_value(&holder)).await {
            Ok(revision) => revision,
            Err(create_err) => {
                let entry = store
                    .entry(&key)
                    .await
                    .map_err(|e| claim_err(&key, &e))?
                    .ok_or_else(|| claim_err(&key, &create_err))?;
                self.take_over(store, &key, node, &holder, &entry).await?
            }
        };
        let revision = Arc::new(AtomicU64::new(revision));
        let renewal =
            tokio::spawn(
                self.clone()
                    .renew_claim(key, holder.clone(), revision.clone(), lost_tx),
            );
        Ok(NodeClaim {
            registry: self.clone(),
            node: node.to_owned(),
            holder,
            revision,
            renewal: Some(renewal),
            lost,
        })
    }

    /// `<expiry ms> <holder>` for a claim written now.
    fn claim_value(&self, holder: &str) -> bytes::Bytes {
        let expires = unix_now_ms() + self.inner.ttl.as_millis() as u64;
        bytes::Bytes::from(format!("{expires} {holder}"))
    }

    /// Takes the existing claim `entry` over if its holder is gone; its new
    /// revision.
    async fn take_over(
        &self,
        store: &kv::Store,
        key: &str,
        node: &str,
        holder: &str,
        entry: &kv::Entry,
    ) -> Result<u64, RegistryError> {
        let (expires_ms, other) = parse_claim(&entry.value);
        let ttl_ms = self.inner.ttl.as_millis() as u64;
        let in_use = |left_ms: u64| RegistryError::NodeInUse {
            node: node.to_owned(),
            holder: other.clone(),
            expires_in_ms: Some(left_ms),
        };
        if other == holder {
            // Our own create, whose answer was lost.
            return Ok(entry.revision);
        }
        if !holder_gone_from_this_host(&other) {
            let now = unix_now_ms();
            if expires_ms > now {
                return Err(in_use(expires_ms - now));
            }
            // Expired by our clock: a live holder renews within a refresh
            // period, whatever its clock says.
            tokio::time::sleep(self.refresh_every() * 3 / 2).await;
            match store.entry(key).await {
                Ok(Some(e)) if e.revision == entry.revision => {}
                Ok(None) => {
                    return store
                        .create(key, self.claim_value(holder))
                        .await
                        .map_err(|_| in_use(ttl_ms));
                }
                Ok(Some(_)) => return Err(in_use(ttl_ms)),
                Err(e) => return Err(claim_err(key, &e)),
            }
        }
        // Compare-and-set: of several nodes taking over, one wins.
        store
            .update(key, self.claim_value(holder), entry.revision)
            .await
            .map_err(|_| in_use(ttl_ms))
    }

    /// Renews a NATS claim every refresh period; says on `lost` when
    /// another holder has it (and stops).
    async fn renew_claim(
        self,
        key: String,
        holder: String,
        revision: Arc<AtomicU64>,
        lost: tokio::sync::watch::Sender<bool>,
    ) {
        let Some(store) = self.inner.nats.clone() else {
            return;
        };
        let mut failing = false;
        loop {
            tokio::time::sleep(self.refresh_every()).await;
            let value = self.claim_value(&holder);
            let err = match store
                .update(&key, value, revision.load(Ordering::Relaxed))
                .await
            {
                Ok(r) => {
                    revision.store(r, Ordering::Relaxed);
                    failing = false;
                    continue;
                }
                Err(e) => e,
            };
            match store.entry(&key).await {
                Ok(entry) => match entry.as_ref().and_then(live_claim) {
                    // A write whose answer was lost went through: still ours.
                    Some((_, h)) if h == holder => {
                        if let Some(e) = entry {
                            revision.store(e.revision, Ordering::Relaxed);
                        }
                    }
                    Some((_, other)) => {
                        tracing::error!(
                            "push registry: the node id of claim {key} was taken over by {other} \
                             (this node could not renew it for a TTL)"
                        );
                        let _ = lost.send(true);
                        return;
                    }
                    // Gone (the bucket dropped it during a long outage):
                    // nobody holds it; claim it again (if another node did
                    // first, the next round finds it taken over).
                    None => {
                        if let Ok(r) = store.create(&key, self.claim_value(&holder)).await {
                            revision.store(r, Ordering::Relaxed);
                            failing = false;
                        }
                    }
                },
                Err(_) if !failing => {
                    failing = true;
                    tracing::error!(
                        "push registry: renewing the claim {key} failed ({err}); \
                         retrying every {:?}",
                        self.refresh_every()
                    );
                }
                Err(_) => {}
            }
        }
    }

    /// `embedded` or `nats-kv:<bucket>`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.inner.nats {
            Some(store) => format!("nats-kv:{}", store.name),
            None => "embedded".into(),
        }
    }
}

/// A node id held by this process (see [`Registry::claim_node`]); released
/// by [`NodeClaim::release`], or on drop (best effort: a NATS claim dropped
/// outside a runtime stays until it expires or this host's next claimant
/// sees its process gone).
#[derive(Debug)]
pub struct NodeClaim {
    registry: Registry,
    node: String,
    holder: String,
    /// Revision of the NATS claim record as last written.
    revision: Arc<AtomicU64>,
    renewal: Option<tokio::task::JoinHandle<()>>,
    lost: tokio::sync::watch::Receiver<bool>,
}

impl NodeClaim {
    /// The node id.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Becomes `true` when another node took the id over (this one could
    /// not renew it for a TTL): the two must not both serve.
    #[must_use]
    pub fn lost(&self) -> tokio::sync::watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Gives the node id back now (a NATS record is deleted if it is still
    /// this claim's), so a replacement may start at once.
    pub async fn release(mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
        if let Some(store) = &self.registry.inner.nats {
            let revision = self.revision.load(Ordering::Relaxed);
            delete_claim(store, &claim_key(&self.node), &self.holder, revision).await;
        }
    }
}

impl Drop for NodeClaim {
    fn drop(&mut self) {
        crate::lock(&self.registry.inner.claimed).remove(&self.node);
        let Some(task) = self.renewal.take() else {
            return;
        };
        task.abort();
        if let (Some(store), Ok(rt)) = (
            self.registry.inner.nats.clone(),
            tokio::runtime::Handle::try_current(),
        ) {
            let (key, holder) = (claim_key(&self.node), self.holder.clone());
            let revision = self.revision.load(Ordering::Relaxed);
            rt.spawn(async move { delete_claim(&store, &key, &holder, revision).await });
        }
    }
}

/// Deletes the claim record if it is still `holder`'s: at `revision`, or,
/// when a renewal in flight wrote a newer one, at that.
async fn delete_claim(store: &kv::Store, key: &str, holder: &str, revision: u64) {
    if store
        .delete_expect_revision(key, Some(revision))
        .await
        .is_ok()
    {
        return;
    }
    if let Ok(Some(e)) = store.entry(key).await
        && live_claim(&e).is_some_and(|(_, h)| h == holder)
        && let Err(err) = store.delete_expect_revision(key, Some(e.revision)).await
    {
        tracing::debug!(key, "claim delete skipped: {err}");
    }
}

fn claim_key(node: &str) -> String {
    format!("n.{node}")
}

fn claim_err(key: &str, e: &dyn std::fmt::Display) -> RegistryError {
    RegistryError::Nats(format!("claim {key}: {e}"))
}

/// Who claims: `host:pid/claim`, the last part telling apart claims of one
/// process (and so a record this claim wrote from any other).
fn claim_holder() -> String {
    let claim = eventlog::envelope::random_u128() as u32;
    format!("{}:{}/{claim:08x}", crate::host_name(), std::process::id())
}

/// Whether `holder` (`host:pid/claim`) was a process of this host that no longer
/// runs. Only processes this one can see count as running (the packaged
/// units' `ProtectProc=invisible` shows those of the same user, which the
/// edge units share); without /proc nothing is known to be gone.
fn holder_gone_from_this_host(holder: &str) -> bool {
    let process = holder.split_once('/').map_or(holder, |(p, _)| p);
    let Some((host, pid)) = process.rsplit_once(':') else {
        return false;
    };
    let (Ok(pid), here) = (pid.parse::<u32>(), crate::host_name()) else {
        return false;
    };
    !here.is_empty()
        && host == here
        && pid != std::process::id()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The expiry and holder of a claim record; `None` once it was deleted.
fn live_claim(entry: &kv::Entry) -> Option<(u64, String)> {
    (entry.operation == kv::Operation::Put).then(|| parse_claim(&entry.value))
}

/// `<expires unix ms> <holder>`; garbage reads as long expired.
fn parse_claim(value: &[u8]) -> (u64, String) {
    let text = String::from_utf8_lossy(value);
    let (expires, holder) = text.split_once(' ').unwrap_or((&text, "?"));
    (expires.parse().unwrap_or(0), holder.to_owned())
}

/// " (its claim expires in N ms unless renewed)" for NATS claims.
fn claim_left(left_ms: &Option<u64>) -> String {
    left_ms.map_or_else(String::new, |ms| {
        format!(" (its claim expires in {ms} ms unless renewed)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(r: &Registry, m: &str) -> Vec<(String, String)> {
        let mut v = Vec::new();
        r.for_each_online(m, |d, route| {
            v.push((d.to_string(), route.node.to_string()))
        });
        v.sort();
        v
    }

    #[tokio::test]
    async fn routes_register_move_expire_and_unregister_only_their_own() {
        let r = Registry::embedded(Duration::from_millis(300));
        let (a, b, tv): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "tv".into());
        r.register("m", "d1", r.route(&a, &tv, 1)).await.unwrap();
        r.register("m", "d2", r.route(&a, &tv, 2)).await.unwrap();
        assert_eq!(
            devices(&r, "m"),
            [("d1".into(), "a".into()), ("d2".into(), "a".into())]
        );
        // d1 reconnects to node b; node a's late unregister leaves it.
        r.register("m", "d1", r.route(&b, &tv, 9)).await.unwrap();
        r.unregister("m", "d1", "a", 1).await;
        assert_eq!(r.lookup("m", "d1").unwrap().node, b);
        r.unregister("m", "d2", "a", 2).await;
        assert!(r.lookup("m", "d2").is_none());
        assert_eq!(r.len(), 1);
        // Nobody refreshes d1: it stops counting, then is swept.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(devices(&r, "m").is_empty());
        assert_eq!(r.sweep(), 1);
        assert!(r.is_empty());
        assert!(r.register("m.x", "d", r.route(&a, &tv, 3)).await.is_err());
    }

    #[tokio::test]
    async fn a_node_id_is_held_by_one_claim_at_a_time() {
        let r = Registry::embedded(Duration::from_secs(1));
        let claim = r.claim_node("edge-a").await.unwrap();
        assert_eq!(claim.node(), "edge-a");
        let err = r.claim_node("edge-a").await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::NodeInUse { node, .. } if node == "edge-a"),
            "{err}"
        );
        assert!(err.to_string().contains("--node-id"), "{err}");
        assert!(!err.to_string().contains("expires"), "{err}");
        let other = r.claim_node("edge-b").await.unwrap();
        drop(claim);
        let again = r.claim_node("edge-a").await.unwrap();
        again.release().await;
        r.claim_node("edge-a").await.unwrap();
        drop(other);
        assert!(matches!(
            r.claim_node("edge.a").await,
            Err(RegistryError::Name(_))
        ));
        assert_eq!(parse_claim(b"17 host:42"), (17, "host:42".into()));
        assert_eq!(parse_claim(b"garbage"), (0, "?".into()));
        // A process of this host that has exited is gone; this one is not;
        // another host's processes are never judged from here.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let exited = child.id();
        child.wait().unwrap();
        let host = crate::host_name();
        assert!(holder_gone_from_this_host(&format!("{host}:{exited}")));
        assert!(holder_gone_from_this_host(&format!(
            "{host}:{exited}/0badcafe"
        )));
        assert!(!holder_gone_from_this_host(&claim_holder()));
        assert!(!holder_gone_from_this_host(&format!(
            "elsewhere-{host}:{exited}"
        )));
        assert!(!holder_gone_from_this_host("garbage"));
    }

    #[tokio::test]
    async fn renewals_restore_lost_records_but_never_overwrite_a_newer_route() {
        let r = Registry::embedded(Duration::from_millis(300));
        let (a, b, tv): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "tv".into());
        // Missing (lost in an outage): written again.
        assert!(r.renew("m", "d", r.route(&a, &tv, 1)).await.unwrap());
        assert_eq!(r.lookup("m", "d").unwrap().conn, 1);
        // Its own record: renewed.
        assert!(r.renew("m", "d", r.route(&a, &tv, 1)).await.unwrap());
        // The device moved to b (a newer connection): a's renewal loses.
        r.register("m", "d", r.route(&b, &tv, 7)).await.unwrap();
        assert!(!r.renew("m", "d", r.route(&a, &tv, 1)).await.unwrap());
        assert_eq!(r.lookup("m", "d").unwrap().node, b);
        // b's record expired (b crashed) while a still holds a connection.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(r.renew("m", "d", r.route(&a, &tv, 1)).await.unwrap());
        assert_eq!(r.lookup("m", "d").unwrap().node, a);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn route_values_round_trip_and_garbage_is_ignored() {
        let r = Route {
            node: "n-1".into(),
            device_type: "tv".into(),
            conn: 5,
            expires_unix_ms: 99,
        };
        assert_eq!(Route::decode(r.encode().as_bytes()), Some(r));
        for bad in ["", "a|b|c", "a|b|x|1", "a b|tv|1|2", "a|tv|1|2|3", "\u{ff}"] {
            assert_eq!(Route::decode(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
