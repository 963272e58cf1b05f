//! The per-member notification store: the "pull" half of hybrid push/pull,
//! and the event-sourced member state.
//!
//! A member's notification state is never updated in place: it is the fold
//! of immutable [`MemberEvent`]s (a notification arrived, was read, was
//! dismissed), each stamped with the TrueTime interval at which the store
//! accepted it and a store sequence number that is also the notification id
//! and the pull cursor. [`fold`] rebuilds the state as of any time `t`
//! ("time travel"): events certainly accepted by `t` (`latest ≤ t`) apply;
//! events whose interval contains `t` are reported as uncertain, not guessed.
//!
//! One writer task owns the store: it takes batches from the processing
//! workers (high priority first), assigns consecutive sequence numbers and
//! writes the events and then, as the last key, the checkpoint of every
//! shard (`meta.state`): on the embedded backend in one transaction; on
//! JetStream KV the checkpoint only after every event of the batch is
//! acknowledged. A worker therefore never resumes past an event that is not
//! stored, and (embedded) never stores an event twice.
//!
//! Keys: `s.<seq, 16 hex digits>` → member id + event, so every batch is
//! an append at the right edge of the B-tree (a handful of dirty pages per
//! commit, where member-first keys dirtied a page per member). A member's
//! events are found through an in-memory index (member → sequence numbers),
//! updated after each commit and rebuilt from one scan of `s.` at start;
//! it costs about 16 bytes per stored event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventlog::{Kv, KvError, TimeSource};
use fbclock::TrueTime;
use tokio::sync::{mpsc, oneshot};

use crate::model::{DeviceType, ModelError, Priority, Targets};

const EVENT_VERSION: u8 = 1;
const META_VERSION: u8 = 1;
const META_KEY: &str = "meta.state";
/// Most events written in one store batch.
pub const MAX_BATCH: usize = 8_192;

/// What changed in a member's notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A notification arrived.
    Notified {
        /// Type name.
        kind: String,
        /// Priority.
        priority: Priority,
        /// Device types it is for.
        targets: Targets,
        /// Creation time (the idempotency key's), TAI ns.
        created_ns: i64,
        /// The JSON body.
        body: Vec<u8>,
    },
    /// The member read notification `id`.
    Read {
        /// Notification id.
        id: u64,
    },
    /// The member dismissed notification `id`.
    Dismissed {
        /// Notification id.
        id: u64,
    },
}

/// One immutable event of a member's notification state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEvent {
    /// Store sequence number (for `Notified`, the notification id).
    pub seq: u64,
    /// When the store accepted it.
    pub at: TrueTime,
    /// What changed.
    pub change: Change,
}

impl MemberEvent {
    /// What changed: `notified`, `read` or `dismissed` (the APIs' names).
    #[must_use]
    pub fn change_name(&self) -> &'static str {
        match self.change {
            Change::Notified { .. } => "notified",
            Change::Read { .. } => "read",
            Change::Dismissed { .. } => "dismissed",
        }
    }

    /// The notification the event is about (a `notified` event's own id).
    #[must_use]
    pub fn notification_id(&self) -> u64 {
        match self.change {
            Change::Notified { .. } => self.seq,
            Change::Read { id } | Change::Dismissed { id } => id,
        }
    }

    /// Binary form: `version | tag | earliest | latest | fields`.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Appends the binary form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let tag = match &self.change {
            Change::Notified { .. } => 0u8,
            Change::Read { .. } => 1,
            Change::Dismissed { .. } => 2,
        };
        out.extend_from_slice(&[EVENT_VERSION, tag]);
        out.extend_from_slice(&self.at.earliest_ns.to_le_bytes());
        out.extend_from_slice(&self.at.latest_ns.to_le_bytes());
        match &self.change {
            Change::Notified {
                kind,
                priority,
                targets,
                created_ns,
                body,
            } => {
                out.extend_from_slice(&created_ns.to_le_bytes());
                crate::model::encode_fields(kind, *priority, *targets, body, out);
            }
            Change::Read { id } | Change::Dismissed { id } => {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }

    /// Decodes the event stored under sequence number `seq`.
    pub fn decode(seq: u64, bytes: &[u8]) -> Result<Self, ModelError> {
        let corrupt = ModelError::Corrupt;
        let (head, rest) = bytes.split_at_checked(18).ok_or(corrupt("short event"))?;
        if head[0] != EVENT_VERSION {
            return Err(corrupt("event version"));
        }
        let at = TrueTime {
            earliest_ns: i64::from_le_bytes(head[2..10].try_into().expect("8 bytes")),
            latest_ns: i64::from_le_bytes(head[10..18].try_into().expect("8 bytes")),
        };
        let word = |b: &[u8]| -> Result<[u8; 8], ModelError> {
            b.get(..8)
                .and_then(|w| w.try_into().ok())
                .ok_or(corrupt("short field"))
        };
        let change = match head[1] {
            0 => {
                let created_ns = i64::from_le_bytes(word(rest)?);
                let n = crate::model::Notification::decode(&rest[8..])?;
                Change::Notified {
                    kind: n.kind,
                    priority: n.priority,
                    targets: n.targets,
                    created_ns,
                    body: n.body,
                }
            }
            1 => Change::Read {
                id: u64::from_le_bytes(word(rest)?),
            },
            2 => Change::Dismissed {
                id: u64::from_le_bytes(word(rest)?),
            },
            _ => return Err(corrupt("event tag")),
        };
        Ok(Self { seq, at, change })
    }
}

/// A notification's state as of some time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Arrived, not read.
    Unread,
    /// Read.
    Read,
    /// Dismissed.
    Dismissed,
}

/// One notification in a member's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NotificationState {
    /// Id (store sequence number).
    pub id: u64,
    /// Type.
    pub kind: String,
    /// Priority.
    pub priority: &'static str,
    /// Creation time, TAI ns.
    pub created_ns: i64,
    /// When the store accepted it: `[earliest, latest]`, TAI ns.
    pub stored: [i64; 2],
    /// Unread, read or dismissed.
    pub status: Status,
    /// The JSON body.
    #[serde(serialize_with = "raw_json")]
    pub body: Vec<u8>,
}

fn raw_json<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match std::str::from_utf8(body)
        .ok()
        .and_then(|b| serde_json::value::RawValue::from_string(b.to_owned()).ok())
    {
        Some(raw) => raw.serialize(s),
        None => s.serialize_none(),
    }
}

/// A member's notification state as of `at_ns`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemberState {
    /// The time asked about, TAI ns.
    pub at_ns: i64,
    /// Notifications certainly present at `at_ns`, oldest first.
    pub notifications: Vec<NotificationState>,
    /// Events whose acceptance interval contains `at_ns`: whether they
    /// had happened by then is unknowable, so they are not applied.
    pub uncertain: Vec<u64>,
}

/// Folds a member's events (in sequence order) into the state as of `at_ns`.
#[must_use]
pub fn fold(events: &[MemberEvent], at_ns: i64) -> MemberState {
    let mut state = MemberState {
        at_ns,
        ..MemberState::default()
    };
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events {
        if e.at.earliest_ns > at_ns {
            continue;
        }
        if e.at.latest_ns > at_ns {
            state.uncertain.push(e.seq);
            continue;
        }
        match &e.change {
            Change::Notified {
                kind,
                priority,
                created_ns,
                body,
                ..
            } => {
                index.insert(e.seq, state.notifications.len());
                state.notifications.push(NotificationState {
                    id: e.seq,
                    kind: kind.clone(),
                    priority: priority.as_str(),
                    created_ns: *created_ns,
                    stored: [e.at.earliest_ns, e.at.latest_ns],
                    status: Status::Unread,
                    body: body.clone(),
                });
            }
            Change::Read { id } | Change::Dismissed { id } => {
                let Some(n) = index.get(id).map(|i| &mut state.notifications[*i]) else {
                    continue;
                };
                match e.change {
                    Change::Read { .. } if n.status == Status::Unread => n.status = Status::Read,
                    Change::Dismissed { .. } => n.status = Status::Dismissed,
                    _ => {}
                }
            }
        }
    }
    state
}

/// Whether a device of type `device` sees `event` when it pulls.
#[must_use]
pub fn visible_to(event: &MemberEvent, device: Option<DeviceType>) -> bool {
    match (&event.change, device) {
        (Change::Notified { targets, .. }, Some(d)) => targets.includes(d),
        _ => true,
    }
}

fn event_key(seq: u64) -> String {
    format!("s.{seq:016x}")
}

/// Stored value: `member_len u8 | member | event`.
fn stored_value(member: &str, event: &MemberEvent) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + member.len() + 64);
    v.push(member.len() as u8);
    v.extend_from_slice(member.as_bytes());
    event.encode_into(&mut v);
    v
}

/// Splits a stored value into member and event.
fn split_value(seq: u64, v: &[u8]) -> Result<(&str, MemberEvent), ModelError> {
    let (len, rest) = v.split_first().ok_or(ModelError::Corrupt("empty value"))?;
    let (member, event) = rest
        .split_at_checked(usize::from(*len))
        .ok_or(ModelError::Corrupt("member length"))?;
    let member = std::str::from_utf8(member).map_err(|_| ModelError::Corrupt("member utf-8"))?;
    Ok((member, MemberEvent::decode(seq, event)?))
}

/// Member → its event sequence numbers, ascending.
type IndexMap = std::collections::HashMap<Arc<str>, Vec<u64>>;

/// The index, shared by the writer and readers.
type MemberIndex = std::sync::RwLock<IndexMap>;

/// Where a shard's processing resumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCheckpoint {
    /// The next log sequence to deliver.
    pub next: u64,
    /// Where to start re-reading the log (for de-duplication only) after a
    /// restart: the first record whose creation time may still be in the window.
    pub replay_from: u64,
}

/// The store's own checkpoint: next sequence number and every shard's checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The next store sequence number.
    pub next_seq: u64,
    /// Shards per priority this store was written with.
    pub shards: u16,
    /// Checkpoint of each (priority, shard).
    pub checkpoints: BTreeMap<(Priority, u16), ShardCheckpoint>,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![META_VERSION];
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        out.extend_from_slice(&self.shards.to_le_bytes());
        out.extend_from_slice(&(self.checkpoints.len() as u16).to_le_bytes());
        for ((p, s), c) in &self.checkpoints {
            out.push(*p as u8);
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&c.next.to_le_bytes());
            out.extend_from_slice(&c.replay_from.to_le_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> Result<Self, ModelError> {
        let corrupt = || ModelError::Corrupt("store checkpoint");
        if b.first() != Some(&META_VERSION) || b.len() < 13 {
            return Err(corrupt());
        }
        let u64_at = |i: usize| -> Result<u64, ModelError> {
            Ok(u64::from_le_bytes(
                b.get(i..i + 8).ok_or_else(corrupt)?.try_into().expect("8"),
            ))
        };
        let u16_at = |i: usize| -> Result<u16, ModelError> {
            Ok(u16::from_le_bytes(
                b.get(i..i + 2).ok_or_else(corrupt)?.try_into().expect("2"),
            ))
        };
        let mut meta = Self {
            next_seq: u64_at(1)?,
            shards: u16_at(9)?,
            checkpoints: BTreeMap::new(),
        };
        let n = usize::from(u16_at(11)?);
        for i in 0..n {
            let at = 13 + i * 19;
            let p = *b.get(at).ok_or_else(corrupt)?;
            let p = Priority::ALL
                .get(usize::from(p))
                .copied()
                .ok_or_else(corrupt)?;
            meta.checkpoints.insert(
                (p, u16_at(at + 1)?),
                ShardCheckpoint {
                    next: u64_at(at + 3)?,
                    replay_from: u64_at(at + 11)?,
                },
            );
        }
        Ok(meta)
    }
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The key-value backend failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Stored data does not decode.
    #[error(transparent)]
    Corrupt(#[from] ModelError),
    /// The writer is gone (shutting down).
    #[error("notification store closed")]
    Closed,
    /// No TrueTime.
    #[error("{0}")]
    Clock(String),
    /// The store was created with another shard count.
    #[error(
        "the store was written with {stored} shards per priority, configured {configured}; use --shards {stored} or a new data directory"
    )]
    Shards {
        /// In the store.
        stored: u16,
        /// Configured.
        configured: u16,
    },
    /// No such notification.
    #[error("member has no notification {0}")]
    NoSuchNotification(u64),
}

/// One member event to write.
#[derive(Debug)]
pub struct NewEvent {
    /// Member id.
    pub member: Arc<str>,
    /// What changed.
    pub change: Change,
}

struct Request {
    priority: Priority,
    events: Vec<NewEvent>,
    checkpoint: Option<((Priority, u16), ShardCheckpoint)>,
    reply: oneshot::Sender<Result<(u64, TrueTime), StoreError>>,
}

/// The store (cheap to clone).
#[derive(Clone, Debug)]
pub struct Store {
    kv: Kv,
    index: Arc<MemberIndex>,
    tx: mpsc::Sender<Request>,
    written: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request({} events)", self.events.len())
    }
}

impl Store {
    /// Loads the checkpoint and starts the writer task.
    pub async fn open(kv: Kv, clock: TimeSource, shards: u16) -> Result<(Self, Meta), StoreError> {
        let meta = match kv.get(META_KEY).await? {
            Some(b) => Meta::decode(&b)?,
            None => Meta {
                next_seq: 1,
                shards,
                checkpoints: BTreeMap::new(),
            },
        };
        if meta.shards != shards {
            return Err(StoreError::Shards {
                stored: meta.shards,
                configured: shards,
            });
        }
        // One streaming pass: only member ids and sequence numbers are kept.
        let next_seq = meta.next_seq;
        let members = kv
            .scan_fold("s.", IndexMap::new(), move |members, key, value| {
                let Some(seq) = key
                    .strip_prefix("s.")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                else {
                    return Ok(());
                };
                if seq >= next_seq {
                    // Written by a batch whose checkpoint never landed
                    // (NATS): it will be written again.
                    return Ok(());
                }
                let (member, _) = split_value(seq, value)
                    .map_err(|e| KvError::Embedded(format!("{key}: {e}")))?;
                match members.get_mut(member) {
                    Some(seqs) => seqs.push(seq),
                    None => {
                        members.insert(Arc::from(member), vec![seq]);
                    }
                }
                Ok(())
            })
            .await?;
        let (tx, rx) = mpsc::channel(1024);
        let store = Self {
            kv: kv.clone(),
            index: Arc::new(std::sync::RwLock::new(members)),
            tx,
            written: Arc::new(AtomicU64::new(0)),
            batches: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(writer(
            kv,
            clock,
            meta.clone(),
            rx,
            store.index.clone(),
            store.clone_counters(),
        ));
        Ok((store, meta))
    }

    fn clone_counters(&self) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        (self.written.clone(), self.batches.clone())
    }

    /// Writes `events` (and the shard checkpoint, if any) durably; returns
    /// the first event's sequence number and the acceptance TrueTime.
    pub async fn write(
        &self,
        priority: Priority,
        events: Vec<NewEvent>,
        checkpoint: Option<((Priority, u16), ShardCheckpoint)>,
    ) -> Result<(u64, TrueTime), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                priority,
                events,
                checkpoint,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Every event of `member`, in order.
    pub async fn events(&self, member: &str) -> Result<Vec<MemberEvent>, StoreError> {
        self.events_after(member, 0).await
    }

    fn seqs_after(&self, member: &str, cursor: u64) -> Vec<u64> {
        let index = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        index.get(member).map_or_else(Vec::new, |seqs| {
            let from = seqs.partition_point(|s| *s <= cursor);
            seqs[from..].to_vec()
        })
    }

    /// Events of `member` with sequence number above `cursor`, in order.
    pub async fn events_after(
        &self,
        member: &str,
        cursor: u64,
    ) -> Result<Vec<MemberEvent>, StoreError> {
        let seqs = self.seqs_after(member, cursor);
        let values = self
            .kv
            .get_many(seqs.iter().map(|s| event_key(*s)).collect())
            .await?;
        let mut out = Vec::with_capacity(seqs.len());
        for (seq, value) in seqs.into_iter().zip(values) {
            let value = value.ok_or(ModelError::Corrupt("indexed event missing"))?;
            out.push(split_value(seq, &value)?.1);
        }
        Ok(out)
    }

    /// Whether `member` has notification `id`.
    pub async fn has_notification(&self, member: &str, id: u64) -> Result<bool, StoreError> {
        if self
            .seqs_after(member, id.saturating_sub(1))
            .first()
            .is_none_or(|s| *s != id)
        {
            return Ok(false);
        }
        Ok(match self.kv.get(&event_key(id)).await? {
            Some(v) => {
                let (owner, event) = split_value(id, &v)?;
                owner == member && matches!(event.change, Change::Notified { .. })
            }
            None => false,
        })
    }

    /// Events written and batches committed since start.
    #[must_use]
    pub fn counters(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        )
    }
}

async fn writer(
    kv: Kv,
    clock: TimeSource,
    mut meta: Meta,
    mut rx: mpsc::Receiver<Request>,
    index: Arc<MemberIndex>,
    (written, batches): (Arc<AtomicU64>, Arc<AtomicU64>),
) {
    let mut pending: Option<Request> = None;
    loop {
        let first = match pending.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut requests = vec![first];
        let mut size = requests[0].events.len();
        // Take more only while the next request still fits (a single
        // request larger than the bound goes alone).
        while let Ok(permit) = rx.try_recv() {
            if size + permit.events.len() > MAX_BATCH {
                pending = Some(permit);
                break;
            }
            size += permit.events.len();
            requests.push(permit);
        }
        // Most urgent first: they get the lowest sequence numbers and, were
        // the batch split, the first write.
        requests.sort_by_key(|r| r.priority);
        let at = match clock.now() {
            Ok(at) => at,
            Err(e) => {
                for r in requests {
                    let _ = r.reply.send(Err(StoreError::Clock(e.to_string())));
                }
                continue;
            }
        };
        let mut items = Vec::with_capacity(size + 1);
        let mut next = meta.next_seq;
        let mut firsts = Vec::with_capacity(requests.len());
        let mut new_meta = meta.clone();
        let mut indexed = Vec::with_capacity(size);
        for r in &mut requests {
            firsts.push(next);
            for e in r.events.drain(..) {
                let event = MemberEvent {
                    seq: next,
                    at,
                    change: e.change,
                };
                items.push((event_key(next), stored_value(&e.member, &event)));
                indexed.push((e.member, next));
                next += 1;
            }
            if let Some((shard, c)) = r.checkpoint {
                new_meta.checkpoints.insert(shard, c);
            }
        }
        new_meta.next_seq = next;
        let encoded_meta = new_meta.encode();
        items.push((META_KEY.to_owned(), encoded_meta.clone()));
        let n = items.len() as u64 - 1;
        let mut result = kv.put_all(items).await;
        if result.is_err() {
            // The checkpoint may have landed with its acknowledgement lost
            // (NATS): then the batch is committed, and retrying it under the
            // old sequence numbers would overwrite it. Ask the store.
            if let Ok(Some(stored)) = kv.get(META_KEY).await
                && stored == encoded_meta
            {
                result = Ok(());
            }
        }
        if result.is_ok() {
            let mut index = index
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (member, seq) in indexed {
                index.entry(member).or_default().push(seq);
            }
            drop(index);
            meta = new_meta;
            written.fetch_add(n, Ordering::Relaxed);
            batches.fetch_add(1, Ordering::Relaxed);
        }
        for (r, first) in requests.into_iter().zip(firsts) {
            let _ = r.reply.send(
                result
                    .clone()
                    .map(|()| (first, at))
                    .map_err(StoreError::from),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tt(e: i64, l: i64) -> TrueTime {
        TrueTime {
            earliest_ns: e,
            latest_ns: l,
        }
    }

    fn notified(seq: u64, at: TrueTime) -> MemberEvent {
        MemberEvent {
            seq,
            at,
            change: Change::Notified {
                kind: "new-episode".into(),
                priority: Priority::Medium,
                targets: Targets::parse(&["tv"]).unwrap(),
                created_ns: at.earliest_ns - 5,
                body: br#"{"show":"x"}"#.to_vec(),
            },
        }
    }

    #[test]
    fn events_round_trip_and_garbage_is_refused() {
        for e in [
            notified(7, tt(100, 200)),
            MemberEvent {
                seq: 8,
                at: tt(300, 400),
                change: Change::Read { id: 7 },
            },
            MemberEvent {
                seq: 9,
                at: tt(500, 600),
                change: Change::Dismissed { id: 7 },
            },
        ] {
            assert_eq!(MemberEvent::decode(e.seq, &e.encode()).unwrap(), e);
            let bytes = e.encode();
            for cut in 0..bytes.len() {
                let _ = MemberEvent::decode(e.seq, &bytes[..cut]);
            }
        }
        assert!(MemberEvent::decode(1, &[9; 30]).is_err());
    }

    #[test]
    fn state_at_time_travels_and_reports_uncertainty() {
        let events = vec![
            notified(1, tt(100, 110)),
            notified(2, tt(200, 210)),
            MemberEvent {
                seq: 3,
                at: tt(300, 310),
                change: Change::Read { id: 1 },
            },
            MemberEvent {
                seq: 4,
                at: tt(400, 410),
                change: Change::Dismissed { id: 2 },
            },
            MemberEvent {
                seq: 5,
                at: tt(500, 510),
                change: Change::Dismissed { id: 99 },
            },
        ];
        assert!(fold(&events, 50).notifications.is_empty());
        let s = fold(&events, 105);
        assert!(s.notifications.is_empty());
        assert_eq!(s.uncertain, [1]);
        let s = fold(&events, 250);
        assert_eq!(s.notifications.len(), 2);
        assert!(s.notifications.iter().all(|n| n.status == Status::Unread));
        let s = fold(&events, 305);
        assert_eq!(s.uncertain, [3]);
        assert_eq!(s.notifications[0].status, Status::Unread);
        let s = fold(&events, 10_000);
        assert_eq!(s.notifications[0].status, Status::Read);
        assert_eq!(s.notifications[1].status, Status::Dismissed);
        assert!(s.uncertain.is_empty());
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""body":{"show":"x"}"#), "{json}");
    }

    #[test]
    fn pulls_filter_by_device_type() {
        let e = notified(1, tt(1, 2));
        assert!(visible_to(&e, Some(DeviceType::Tv)));
        assert!(!visible_to(&e, Some(DeviceType::Phone)));
        assert!(visible_to(&e, None));
    }

    proptest::proptest! {
        #[test]
        fn stored_garbage_never_panics(seq in 0u64..u64::MAX, bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            let _ = MemberEvent::decode(seq, &bytes);
            let _ = split_value(seq, &bytes);
            let _ = Meta::decode(&bytes);
        }
    }

    #[test]
    fn meta_round_trips() {
        let mut m = Meta {
            next_seq: 42,
            shards: 4,
            checkpoints: BTreeMap::new(),
        };
        m.checkpoints.insert(
            (Priority::Low, 3),
            ShardCheckpoint {
                next: 10,
                replay_from: 2,
            },
        );
        m.checkpoints
            .insert((Priority::High, 0), ShardCheckpoint::default());
        assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
        let b = m.encode();
        for cut in 0..b.len() {
            assert!(Meta::decode(&b[..cut]).is_err());
        }
    }

    #[tokio::test]
    async fn the_writer_assigns_sequences_and_checkpoints_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::Embedded(eventlog::kv::RedbKv::open(dir.path().join("s.redb")).unwrap());
        let clock = TimeSource::system(1_000_000);
        let (store, meta) = Store::open(kv.clone(), clock.clone(), 2).await.unwrap();
        assert_eq!(meta.next_seq, 1);
        let change = |id| NewEvent {
            member: "m1".into(),
            change: Change::Read { id },
        };
        let cp = ShardCheckpoint {
            next: 5,
            replay_from: 1,
        };
        let (first, _) = store
            .write(
                Priority::Low,
                vec![change(1), change(2)],
                Some(((Priority::Low, 1), cp)),
            )
            .await
            .unwrap();
        assert_eq!(first, 1);
        let (first, _) = store
            .write(Priority::High, vec![change(3)], None)
            .await
            .unwrap();
        assert_eq!(first, 3);
        assert_eq!(store.events_after("m1", 1).await.unwrap().len(), 2);
        drop(store);
        let (_, meta) = Store::open(kv.clone(), clock.clone(), 2).await.unwrap();
        assert_eq!(meta.next_seq, 4);
        assert_eq!(meta.checkpoints[&(Priority::Low, 1)], cp);
        assert!(matches!(
            Store::open(kv, clock, 3).await,
            Err(StoreError::Shards {
                stored: 2,
                configured: 3
            })
        ));
    }
}
