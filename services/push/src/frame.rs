//! What travels over a connection, server to client: one JSON text frame
//! (WebSocket message or SSE `data:` line) per [`Frame`].
//!
//! ```text
//! {"type":"hello","node":"edge-1","conn":7,"heartbeat_s":30,"lifetime_s":1712}
//! {"type":"push","id":42,"kind":"new-episode","durable":true,"sent_ns":1764000000000000000,"body":{...}}
//! {"type":"reconnect","reason":"drain"}
//! ```
//!
//! A push is serialized once and the bytes shared by every connection it
//! goes to. Pure: no I/O.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Largest frame: publishers are refused beyond it, clients and nodes
/// refuse to read more.
pub const MAX_FRAME: usize = 64 * 1024;

/// Unix time now on the system clock, ns (what [`Message::sent_ns`] holds).
#[must_use]
pub fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// One message pushed to devices.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    /// The sender's id: for durable messages, the position in the pull
    /// store (a client catches up with `since=<id>`); 0 if none.
    #[serde(default)]
    pub id: u64,
    /// What the message is about, e.g. `new-episode`, `dashboard`.
    pub kind: String,
    /// Whether the message is also kept in a pull store (missed pushes are
    /// fetched from there on reconnect) or is fire-and-forget.
    #[serde(default)]
    pub durable: bool,
    /// When the sender sent it, Unix ns (for delivery latency).
    #[serde(default)]
    pub sent_ns: i64,
    /// A JSON value.
    pub body: Box<RawValue>,
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        (
            self.id,
            &self.kind,
            self.durable,
            self.sent_ns,
            self.body.get(),
        ) == (
            other.id,
            &other.kind,
            other.durable,
            other.sent_ns,
            other.body.get(),
        )
    }
}

/// Why a reconnect is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectReason {
    /// The node is shutting down.
    Drain,
    /// The connection reached its (randomized) maximum lifetime.
    Lifetime,
    /// A newer connection of the same device took this one's place (two
    /// clients sharing a token): back off instead of reconnecting at once.
    Replaced,
}

/// A frame from server to client.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// First frame on a connection: the client is registered and routable.
    Hello {
        /// The edge node's id.
        node: String,
        /// Connection id on that node.
        conn: u64,
        /// Seconds between heartbeats.
        heartbeat_s: u64,
        /// Seconds until the server asks this connection to reconnect.
        lifetime_s: u64,
    },
    /// A message.
    Push(Message),
    /// Reconnect (to any node) now; nothing is lost.
    Reconnect {
        /// Why.
        reason: ReconnectReason,
    },
}

impl Frame {
    /// The frame as JSON text.
    #[must_use]
    pub fn encode(&self) -> Encoded {
        // Serializing these types cannot fail: no maps with non-string
        // keys, and raw bodies are valid JSON by construction.
        Encoded(Bytes::from(serde_json::to_vec(self).unwrap_or_default()))
    }

    /// Parses a frame.
    ///
    /// # Errors
    /// Not JSON, not a known frame, or larger than [`MAX_FRAME`].
    pub fn decode(text: &str) -> Result<Self, String> {
        if text.len() > MAX_FRAME {
            return Err(format!("frame of {} bytes exceeds {MAX_FRAME}", text.len()));
        }
        // Internally tagged enums cannot hold raw JSON values when
        // deserializing, so frames are read through one flat shape.
        let w: Wire = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let missing = |f: &str| format!("{} frame without {f}", w.tag);
        match w.tag.as_str() {
            "hello" => Ok(Self::Hello {
                node: w.node.ok_or_else(|| missing("node"))?,
                conn: w.conn.unwrap_or(0),
                heartbeat_s: w.heartbeat_s.unwrap_or(0),
                lifetime_s: w.lifetime_s.unwrap_or(0),
            }),
            "push" => Ok(Self::Push(Message {
                id: w.id.unwrap_or(0),
                kind: w.kind.ok_or_else(|| missing("kind"))?,
                durable: w.durable.unwrap_or(false),
                sent_ns: w.sent_ns.unwrap_or(0),
                body: w.body.ok_or_else(|| missing("body"))?,
            })),
            "reconnect" => Ok(Self::Reconnect {
                reason: w.reason.ok_or_else(|| missing("reason"))?,
            }),
            other => Err(format!("unknown frame type {other:?}")),
        }
    }
}

/// Every field any frame has.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    tag: String,
    node: Option<String>,
    conn: Option<u64>,
    heartbeat_s: Option<u64>,
    lifetime_s: Option<u64>,
    id: Option<u64>,
    kind: Option<String>,
    durable: Option<bool>,
    sent_ns: Option<i64>,
    body: Option<Box<RawValue>>,
    reason: Option<ReconnectReason>,
}

/// A serialized frame (UTF-8 JSON; cheap to clone, shared by every
/// connection it is sent to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// The JSON bytes.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Built only from serde_json output, which is UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn garbage_frames_are_errors_not_panics(s in ".{0,300}") {
            let _ = Frame::decode(&s);
        }

        #[test]
        fn decoded_frames_re_encode_to_themselves(id in any::<u64>(), sent in any::<i64>(), kind in "[a-z-]{1,20}", n in any::<i32>()) {
            let f = Frame::Push(Message {
                id,
                kind,
                durable: id % 2 == 0,
                sent_ns: sent,
                body: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
            });
            let e = f.encode();
            prop_assert_eq!(Frame::decode(e.as_str()).unwrap().encode(), e);
        }
    }

    #[test]
    fn frames_round_trip_and_bodies_stay_byte_for_byte() {
        let body = RawValue::from_string(r#"{"b":1,"a":[1.50,"x"]}"#.into()).unwrap();
        let f = Frame::Push(Message {
            id: 42,
            kind: "new-episode".into(),
            durable: true,
            sent_ns: 7,
            body,
        });
        let e = f.encode();
        assert!(e.as_str().starts_with(r#"{"type":"push","id":42,"#));
        assert!(e.as_str().contains(r#""body":{"b":1,"a":[1.50,"x"]}"#));
        assert_eq!(Frame::decode(e.as_str()).unwrap(), f);
        let r = Frame::Reconnect {
            reason: ReconnectReason::Drain,
        };
        assert_eq!(
            r.encode().as_str(),
            r#"{"type":"reconnect","reason":"drain"}"#
        );
        assert!(Frame::decode("{").is_err());
        assert!(Frame::decode(r#"{"type":"nope"}"#).is_err());
        assert!(Frame::decode(&" ".repeat(MAX_FRAME + 1)).is_err());
    }
}
