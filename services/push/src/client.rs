//! The device side: a client that stays connected.
//!
//! [`run`] connects over WebSocket to one of the configured edge nodes,
//! reports what arrives, and reconnects when the connection ends: at once
//! (to the next node) when the server asked for it (drain, lifetime), after
//! a jittered exponential backoff otherwise (full jitter, so a crowd of
//! clients whose node died does not return in one wave).
//!
//! Resume: with a [`PullSource`], after every (re)connect the client reads
//! the member's notifications from the pull store since its cursor, and
//! once more shortly after (a notification routed while the registry still
//! pointed elsewhere is neither pushed nor in the first read), so a durable
//! message pushed while it was offline is not lost. Durable messages seen
//! both ways are reported once (by id).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::frame::{Frame, MAX_FRAME, Message, ReconnectReason};

/// Where missed durable messages are read from: the notification
/// service's pull API (`GET /v1/members/{m}/notifications?since=`).
#[derive(Clone, Debug)]
pub struct PullSource {
    /// `host:port` of the notification service's HTTP API.
    pub addr: String,
    /// The member.
    pub member: String,
    /// Only notifications targeting this device type.
    pub device_type: Option<String>,
    /// Cursor to start from (0: everything).
    pub since: u64,
}

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Edge nodes, `host:port`; tried in turn.
    pub edges: Vec<String>,
    /// The device's token.
    pub token: String,
    /// Broadcast topic to subscribe to.
    pub topic: Option<String>,
    /// Catch-up source for durable messages.
    pub pull: Option<PullSource>,
    /// First backoff step.
    pub backoff_min: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// After a connect's catch-up, when to read the pull store once more.
    pub catch_up_again: Duration,
}

impl ClientConfig {
    /// Defaults: backoff 100 ms doubling to 10 s, no topic, no pull,
    /// second catch-up 2 s after a connect.
    #[must_use]
    pub fn new(edges: Vec<String>, token: String) -> Self {
        Self {
            edges,
            token,
            topic: None,
            pull: None,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            catch_up_again: Duration::from_secs(2),
        }
    }
}

/// How a message reached the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Pushed over the connection.
    Push,
    /// Read from the pull store after a (re)connect.
    Pull,
}

/// What the client reports.
#[derive(Debug)]
pub enum ClientEvent {
    /// Connected and registered (the `hello` arrived).
    Connected {
        /// The edge address.
        edge: String,
        /// The node id.
        node: String,
    },
    /// A message.
    Message {
        /// The message.
        message: Message,
        /// How it came.
        via: Via,
    },
    /// The connection ended or could not be made.
    Disconnected {
        /// What happened.
        reason: String,
        /// When the next attempt is made.
        retry_in: Duration,
    },
}

/// Remembers the ids of recent durable messages.
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    const CAPACITY: usize = 100_000;

    /// Whether `id` is new (and remembers it).
    fn first(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Full-jitter backoff: uniform in `[min, min(max, min·2^attempt)]`.
#[must_use]
pub fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = min
        .saturating_mul(1u32 << attempt.min(20))
        .min(max)
        .max(min);
    min + (cap - min).mul_f64(crate::unit_random())
}

/// Runs the client until `events` is closed.
pub async fn run(config: ClientConfig, events: mpsc::Sender<ClientEvent>) {
    let mut seen = Seen::default();
    let mut cursor = config.pull.as_ref().map_or(0, |p| p.since);
    let mut attempt = 0u32;
    let start = (eventlog::envelope::random_u128() as usize) % config.edges.len().max(1);
    let mut next = start;
    loop {
        if events.is_closed() || config.edges.is_empty() {
            return;
        }
        let edge = config.edges[next % config.edges.len()].clone();
        next += 1;
        let (reason, asked) = session(
            &config,
            &edge,
            &events,
            &mut seen,
            &mut cursor,
            &mut attempt,
        )
        .await;
        let retry_in = if asked {
            Duration::from_millis(10)
        } else {
            attempt = attempt.saturating_add(1);
            backoff(config.backoff_min, config.backoff_max, attempt)
        };
        if events
            .send(ClientEvent::Disconnected { reason, retry_in })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// One connection; returns why it ended and whether the server asked for
/// the reconnect (drain, lifetime: reconnect at once).
async fn session(
    config: &ClientConfig,
    edge: &str,
    events: &mpsc::Sender<ClientEvent>,
    seen: &mut Seen,
    cursor: &mut u64,
    attempt: &mut u32,
) -> (String, bool) {
    let mut url = format!("ws://{edge}/v1/ws?token={}", config.token);
    if let Some(t) = &config.topic {
        url.push_str(&format!("&topic={t}"));
    }
    let connect = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    );
    let mut ws = match connect.await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return (format!("connecting to {edge}: {e}"), false),
        Err(_) => return (format!("connecting to {edge}: timed out"), false),
    };
    // Catch-up runs after the hello and once more `catch_up_again` later:
    // a message routed while the registry copies still had the old route
    // (or none) is neither pushed here nor in the first pull.
    let mut catch_up_at: Option<tokio::time::Instant> = None;
    loop {
        let due = catch_up_at;
        let msg = tokio::select! {
            msg = ws.next() => msg,
            () = async { tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)).await }, if due.is_some() => {
                catch_up_at = None;
                if let Some(pull) = &config.pull
                    && let Err(e) = catch_up(pull, cursor, seen, events).await
                {
                    tracing::warn!("catch-up from the pull store failed: {e}");
                }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        let text = match msg {
            Ok(WsMessage::Text(t)) => t,
            Ok(WsMessage::Ping(p)) => {
                let _ = ws.send(WsMessage::Pong(p)).await;
                continue;
            }
            Ok(WsMessage::Close(c)) => return (format!("closed by {edge}: {c:?}"), false),
            Ok(_) => continue,
            Err(e) => return (format!("{edge}: {e}"), false),
        };
        if text.len() > MAX_FRAME {
            return (format!("{edge}: oversized frame"), false);
        }
        match Frame::decode(&text) {
            Ok(Frame::Hello { node, .. }) => {
                *attempt = 0;
                if events
                    .send(ClientEvent::Connected {
                        edge: edge.to_owned(),
                        node,
                    })
                    .await
                    .is_err()
                {
                    return ("client closed".into(), false);
                }
                if let Some(pull) = &config.pull {
                    if let Err(e) = catch_up(pull, cursor, seen, events).await {
                        tracing::warn!("catch-up from the pull store failed: {e}");
                    }
                    catch_up_at = Some(tokio::time::Instant::now() + config.catch_up_again);
                }
            }
            Ok(Frame::Push(m)) => {
                if m.durable && m.id != 0 && !seen.first(m.id) {
                    continue;
                }
                if events
                    .send(ClientEvent::Message {
                        message: m,
                        via: Via::Push,
                    })
                    .await
                    .is_err()
                {
                    return ("client closed".into(), false);
                }
            }
            Ok(Frame::Reconnect { reason }) => {
                // Drain and lifetime: go now. Replaced: another client
                // uses this device's token; back off.
                let asked = reason != ReconnectReason::Replaced;
                return (format!("{edge} asked to reconnect: {reason:?}"), asked);
            }
            Err(e) => tracing::warn!("ignoring an unreadable frame from {edge}: {e}"),
        }
    }
    (format!("{edge} closed the connection"), false)
}

/// Reads notifications since `cursor` from the pull store.
async fn catch_up(
    pull: &PullSource,
    cursor: &mut u64,
    seen: &mut Seen,
    events: &mpsc::Sender<ClientEvent>,
) -> Result<(), String> {
    loop {
        let mut path = format!(
            "/v1/members/{}/notifications?since={}&limit=500",
            pull.member, cursor
        );
        if let Some(t) = &pull.device_type {
            path.push_str(&format!("&device_type={t}"));
        }
        let body = http_get(&pull.addr, &path).await?;
        let page: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        for change in page["changes"].as_array().into_iter().flatten() {
            if change["change"] != "notified" {
                continue;
            }
            let id = change["id"].as_u64().unwrap_or(0);
            if id == 0 || !seen.first(id) {
                continue;
            }
            let body =
                serde_json::value::to_raw_value(&change["body"]).map_err(|e| e.to_string())?;
            let message = Message {
                id,
                kind: change["type"].as_str().unwrap_or_default().to_owned(),
                durable: true,
                sent_ns: change["created_ns"].as_i64().unwrap_or(0),
                body,
            };
            if events
                .send(ClientEvent::Message {
                    message,
                    via: Via::Pull,
                })
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        *cursor = page["cursor"].as_u64().unwrap_or(*cursor);
        if page["more"] != true {
            return Ok(());
        }
    }
}

/// A plain HTTP/1.1 GET (loopback pull API: `Connection: close`, body read
/// to the end, at most 16 MiB); the body of a 200 answer.
async fn http_get(addr: &str, path: &str) -> Result<Vec<u8>, String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        (&mut s)
            .take(16 << 20)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no HTTP header end")?;
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "GET {path}: {}",
                head.lines().next().unwrap_or_default()
            ));
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Err("chunked responses are not supported".into());
        }
        Ok(buf[split + 4..].to_vec())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("GET {path} on {addr}: timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_in_its_window_and_seen_is_bounded() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..40 {
            let b = backoff(min, max, attempt);
            assert!(b >= min && b <= max, "{b:?}");
        }
        let mut s = Seen::default();
        assert!(s.first(1));
        assert!(!s.first(1));
        for i in 2..(Seen::CAPACITY as u64 + 10) {
            s.first(i);
        }
        assert!(s.set.len() <= Seen::CAPACITY);
        assert!(s.first(1), "the oldest id was forgotten");
    }
}
