//! The message processor: takes a message for a member (or a device, or a
//! broadcast topic), looks up the push registry and hands the frame to the
//! edge node holding each connection: directly when that node is in this
//! process, otherwise over NATS (`timecard.push.node.<node>`; broadcasts on
//! `timecard.push.topic.<topic>`, which every node subscribes to).
//!
//! Delivery through the edge is best effort. Durable messages are also in
//! a pull store (the notification service's member store); a device that
//! missed them fetches them when it reconnects ([`crate::client`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;

use crate::edge::EdgeNode;
use crate::frame::Encoded;
use crate::registry::{Registry, Route};

const NODE_SUBJECT: &str = "timecard.push.node";
const TOPIC_SUBJECT: &str = "timecard.push.topic";

/// What a routing call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// Connections on this process's node that got the frame queued.
    pub local: usize,
    /// Frames forwarded to other nodes over NATS.
    pub forwarded: usize,
    /// Targeted devices without a live route.
    pub offline: usize,
}

/// Why a frame could not be handed to a remote node.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The route is on another node and there is no NATS connection.
    #[error("device is on node {0}, which this process cannot reach (no NATS)")]
    Unreachable(String),
    /// The NATS publish failed.
    #[error("NATS publish: {0}")]
    Nats(String),
}

/// Counters.
#[derive(Debug, Default)]
pub struct ProcessorStats {
    /// Frames queued on the local node.
    pub local: AtomicU64,
    /// Frames forwarded over NATS.
    pub forwarded: AtomicU64,
    /// Frames received over NATS for the local node.
    pub received: AtomicU64,
    /// Targets with no live route.
    pub offline: AtomicU64,
}

/// The processor (cheap to clone).
#[derive(Clone, Debug)]
pub struct Processor {
    registry: Registry,
    local: Option<EdgeNode>,
    nats: Option<async_nats::Client>,
    stats: Arc<ProcessorStats>,
}

fn forward_payload(member: &str, device: &str, frame: &Encoded) -> Bytes {
    let mut b = BytesMut::with_capacity(member.len() + device.len() + 2 + frame.bytes().len());
    b.put_slice(member.as_bytes());
    b.put_u8(b'\n');
    b.put_slice(device.as_bytes());
    b.put_u8(b'\n');
    b.put_slice(frame.bytes());
    b.freeze()
}

/// Splits `a\nb\nrest`.
fn split2(payload: &[u8]) -> Option<(&str, &str, &[u8])> {
    let i = payload.iter().position(|&b| b == b'\n')?;
    let j = i + 1 + payload[i + 1..].iter().position(|&b| b == b'\n')?;
    Some((
        std::str::from_utf8(&payload[..i]).ok()?,
        std::str::from_utf8(&payload[i + 1..j]).ok()?,
        &payload[j + 1..],
    ))
}

/// Re-validates a frame that came over the network.
fn encoded_from_wire(bytes: &[u8]) -> Option<Encoded> {
    let text = std::str::from_utf8(bytes).ok()?;
    Some(crate::frame::Frame::decode(text).ok()?.encode())
}

impl Processor {
    /// A processor over `registry`, delivering to `local` directly and to
    /// other nodes over `nats`.
    #[must_use]
    pub fn new(
        registry: Registry,
        local: Option<EdgeNode>,
        nats: Option<async_nats::Client>,
    ) -> Self {
        Self {
            registry,
            local,
            nats,
            stats: Arc::default(),
        }
    }

    /// A processor hosting an edge node of its own: the node (on
    /// `registry`, renewing its routes until dropped) and, when the
    /// registry is on NATS, routing over NATS with the node receiving what
    /// other processes forward to it. Needs a tokio runtime.
    ///
    /// # Errors
    /// A bad node configuration, a node id a live node holds
    /// ([`Registry::claim_node`]), or the NATS subscriptions failed.
    pub async fn hosting(
        config: crate::edge::EdgeConfig,
        key: crate::token::TokenKey,
        registry: Registry,
    ) -> Result<Self, crate::registry::RegistryError> {
        let node = EdgeNode::new(config, key, registry.clone())?;
        node.hold_claim(registry.claim_node(node.id()).await?);
        node.spawn_refresh();
        let nats = registry.client().cloned();
        let processor = Self::new(registry, Some(node), nats);
        if processor.nats.is_some() {
            processor
                .serve_forwarded()
                .await
                .map_err(|e| crate::registry::RegistryError::Nats(e.to_string()))?;
        }
        Ok(processor)
    }

    /// The registry.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The node in this process, if any.
    #[must_use]
    pub fn local(&self) -> Option<&EdgeNode> {
        self.local.as_ref()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &ProcessorStats {
        &self.stats
    }

    /// The local node's status (if any) with the routing counters, as JSON.
    #[must_use]
    pub fn status(&self) -> serde_json::Value {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut v = self.local.as_ref().map_or_else(
            || serde_json::json!({"registry": self.registry.describe()}),
            EdgeNode::status,
        );
        v["routing"] = serde_json::json!({
            "local": get(&s.local), "forwarded": get(&s.forwarded),
            "received": get(&s.received), "offline": get(&s.offline),
            "nats": self.nats.is_some(),
        });
        v
    }

    /// Hands `frame` to one device at `route`.
    ///
    /// Returns whether a local connection got it, or that it was forwarded.
    ///
    /// # Errors
    /// The route's node is remote and unreachable, or the publish failed.
    pub async fn to_route(
        &self,
        member: &str,
        device: &str,
        route: &Route,
        frame: &Encoded,
    ) -> Result<Routed, RouteError> {
        if let Some(node) = self.local.as_ref().filter(|n| *n.id() == route.node) {
            let local = node.deliver(member, Some(device), frame);
            self.stats.local.fetch_add(local as u64, Ordering::Relaxed);
            return Ok(Routed {
                local,
                offline: usize::from(local == 0),
                ..Routed::default()
            });
        }
        let Some(nats) = &self.nats else {
            return Err(RouteError::Unreachable(route.node.to_string()));
        };
        nats.publish(
            format!("{NODE_SUBJECT}.{}", route.node),
            forward_payload(member, device, frame),
        )
        .await
        .map_err(|e| RouteError::Nats(e.to_string()))?;
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        Ok(Routed {
            forwarded: 1,
            ..Routed::default()
        })
    }

    /// Hands `frame` to every online device of `member` (or just `device`).
    pub async fn unicast(&self, member: &str, device: Option<&str>, frame: &Encoded) -> Routed {
        let mut targets = Vec::new();
        self.registry.for_each_online(member, |d, r| {
            if device.is_none_or(|want| **d == *want) {
                targets.push((d.clone(), r.clone()));
            }
        });
        let mut total = Routed::default();
        if targets.is_empty() {
            total.offline = 1;
        }
        for (d, route) in targets {
            match self.to_route(member, &d, &route, frame).await {
                Ok(r) => {
                    total.local += r.local;
                    total.forwarded += r.forwarded;
                    total.offline += r.offline;
                }
                Err(e) => {
                    tracing::debug!(member, device = %d, "push not routed: {e}");
                    total.offline += 1;
                }
            }
        }
        self.stats
            .offline
            .fetch_add(total.offline as u64, Ordering::Relaxed);
        total
    }

    /// Hands `frame` to every connection subscribed to `topic`, here and
    /// (over NATS) on every other node.
    ///
    /// # Errors
    /// The NATS publish failed (local connections got it anyway).
    pub async fn broadcast(&self, topic: &str, frame: &Encoded) -> Result<Routed, RouteError> {
        let local = self.local.as_ref().map_or(0, |n| n.broadcast(topic, frame));
        self.stats.local.fetch_add(local as u64, Ordering::Relaxed);
        let mut routed = Routed {
            local,
            ..Routed::default()
        };
        if let Some(nats) = &self.nats {
            let origin = self.local.as_ref().map_or("", |n| n.id());
            nats.publish(
                format!("{TOPIC_SUBJECT}.{topic}"),
                forward_payload(origin, topic, frame),
            )
            .await
            .map_err(|e| RouteError::Nats(e.to_string()))?;
            routed.forwarded = 1;
        }
        Ok(routed)
    }

    /// Delivers what other processes forward to this process's node, until
    /// the subscriptions end.
    ///
    /// # Errors
    /// No local node or no NATS connection, or subscribing failed.
    pub async fn serve_forwarded(&self) -> Result<tokio::task::JoinHandle<()>, RouteError> {
        let (Some(node), Some(nats)) = (self.local.clone(), self.nats.clone()) else {
            return Err(RouteError::Nats(
                "forwarding needs a local node and NATS".into(),
            ));
        };
        let sub = |s: String| {
            let nats = nats.clone();
            async move {
                nats.subscribe(s)
                    .await
                    .map_err(|e| RouteError::Nats(e.to_string()))
            }
        };
        let direct = sub(format!("{NODE_SUBJECT}.{}", node.id())).await?;
        let topics = sub(format!("{TOPIC_SUBJECT}.>")).await?;
        // Make sure the server has the subscriptions before anyone routes here.
        nats.flush()
            .await
            .map_err(|e| RouteError::Nats(e.to_string()))?;
        let stats = self.stats.clone();
        Ok(tokio::spawn(async move {
            let mut both =
                futures_util::stream::select(direct.map(|m| (true, m)), topics.map(|m| (false, m)));
            while let Some((is_direct, msg)) = both.next().await {
                let Some((a, b, frame)) = split2(&msg.payload) else {
                    continue;
                };
                let Some(frame) = encoded_from_wire(frame) else {
                    tracing::warn!("dropping a malformed forwarded frame");
                    continue;
                };
                stats.received.fetch_add(1, Ordering::Relaxed);
                if is_direct {
                    node.deliver(a, Some(b), &frame);
                } else if a != &**node.id() {
                    node.broadcast(b, &frame);
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_forwarded_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Some((_, _, frame)) = split2(&bytes) {
                let _ = encoded_from_wire(frame);
            }
        }
    }

    #[test]
    fn forwarded_payloads_split_and_garbage_is_refused() {
        let f = crate::frame::Frame::Reconnect {
            reason: crate::frame::ReconnectReason::Drain,
        }
        .encode();
        let p = forward_payload("m", "d", &f);
        let (a, b, rest) = split2(&p).unwrap();
        assert_eq!((a, b), ("m", "d"));
        assert_eq!(encoded_from_wire(rest), Some(f));
        assert!(split2(b"no newline").is_none());
        assert!(split2(b"one\nnewline").is_none());
        assert!(encoded_from_wire(b"m\nd\n{").is_none());
        assert!(encoded_from_wire(&[0xff, 0xfe]).is_none());
    }
}
