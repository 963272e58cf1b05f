//! The push-edge channel, in process: a bounded mailbox per connected edge
//! device. Devices registered on the `edge` channel get a mailbox; pushes
//! land in it (the oldest is dropped, and counted, when it is full) and the
//! device drains it (`GET /v1/edge/{member}/{device}`). The WebSocket/SSE
//! edge of a separate service replaces the mailbox with a connection; the
//! bulkhead in front of it stays the same.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use outbound::{Adapter, Channel, Push, SendError};

const SHARDS: usize = 16;

type Mailboxes = HashMap<Arc<str>, HashMap<Arc<str>, VecDeque<Push>>>;

/// The in-process edge (cheap to clone).
#[derive(Clone, Debug)]
pub struct EdgeHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    dropped: AtomicU64,
    shards: Vec<Mutex<Mailboxes>>,
}

impl EdgeHub {
    /// A hub whose mailboxes hold `capacity` pushes each.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                dropped: AtomicU64::new(0),
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            }),
        }
    }

    fn shard(&self, member: &str) -> std::sync::MutexGuard<'_, Mailboxes> {
        self.inner.shards[crate::model::shard_of(member, SHARDS)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a mailbox for a device (kept if it exists).
    pub fn connect(&self, member: &str, device: &str) {
        self.shard(member)
            .entry(member.into())
            .or_default()
            .entry(device.into())
            .or_default();
    }

    /// Closes a device's mailbox.
    pub fn disconnect(&self, member: &str, device: &str) {
        let mut shard = self.shard(member);
        if let Some(devices) = shard.get_mut(member) {
            devices.remove(device);
            if devices.is_empty() {
                shard.remove(member);
            }
        }
    }

    /// Takes everything in a device's mailbox; `None` if not connected.
    #[must_use]
    pub fn drain(&self, member: &str, device: &str) -> Option<Vec<Push>> {
        let mut shard = self.shard(member);
        let mailbox = shard.get_mut(member)?.get_mut(device)?;
        Some(mailbox.drain(..).collect())
    }

    /// Pushes dropped because a mailbox was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn deliver(&self, push: &Push) -> Result<(), SendError> {
        let mut shard = self.shard(&push.member);
        let mailbox = shard
            .get_mut(&*push.member)
            .and_then(|d| d.get_mut(&*push.device_id))
            .ok_or(SendError::Unregistered)?;
        if mailbox.len() >= self.inner.capacity {
            mailbox.pop_front();
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
        mailbox.push_back(push.clone());
        Ok(())
    }
}

impl Adapter for EdgeHub {
    fn channel(&self) -> Channel {
        Channel::Edge
    }

    fn send(&self, push: &Push) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        std::future::ready(self.deliver(push))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(member: &str, device: &str, id: u64) -> Push {
        Push {
            notification_id: id,
            member: member.into(),
            device_id: device.into(),
            device_token: device.into(),
            urgent: false,
            kind: "k".into(),
            body: bytes::Bytes::from_static(b"{}"),
            expires_at_unix_s: 0,
            created: std::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn mailboxes_are_bounded_and_per_device() {
        let hub = EdgeHub::new(2);
        assert_eq!(
            hub.send(&push("m", "d", 1)).await,
            Err(SendError::Unregistered)
        );
        hub.connect("m", "d");
        hub.connect("m", "e");
        for id in 1..=3 {
            hub.send(&push("m", "d", id)).await.unwrap();
        }
        hub.send(&push("m", "e", 9)).await.unwrap();
        let got: Vec<u64> = hub
            .drain("m", "d")
            .unwrap()
            .iter()
            .map(|p| p.notification_id)
            .collect();
        assert_eq!(got, [2, 3]);
        assert_eq!(hub.dropped(), 1);
        assert!(hub.drain("m", "d").unwrap().is_empty());
        hub.disconnect("m", "d");
        assert!(hub.drain("m", "d").is_none());
        assert_eq!(hub.drain("m", "e").unwrap().len(), 1);
    }
}
