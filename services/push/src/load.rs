//! Load generation: many WebSocket connections from one process.
//!
//! Connections are opened from a range of loopback source addresses
//! (`127.0.0.1`, `127.0.0.2`, …) so their number is not limited by one
//! address's ephemeral ports (about 28 000 per source address with the
//! default port range). Every connection gets a token for member
//! `<prefix><n>`, device `d0`, and records the delivery latency of each push
//! (receive time minus the `sent_ns` the publisher stamped, both on this
//! machine's clock) in a shared histogram.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::token::{Claims, TokenKey};

/// Sub-buckets per power of two in [`Histogram`].
const SUB: usize = 16;
/// Buckets: powers of two up to 2^40 µs.
const BUCKETS: usize = 41 * SUB;

/// A lock-free log-linear histogram of microseconds (about 6 % resolution).
#[derive(Debug)]
pub struct Histogram {
    counts: Vec<AtomicU64>,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn index(us: u64) -> usize {
        if us < SUB as u64 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as usize; // >= 4
        let sub = ((us >> (exp - 4)) as usize) & (SUB - 1);
        ((exp - 3) * SUB + sub).min(BUCKETS - 1)
    }

    fn lower_bound(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let exp = i / SUB + 3;
        ((SUB + i % SUB) as u64) << (exp - 4)
    }

    /// Records one value.
    pub fn record(&self, us: u64) {
        self.counts[Self::index(us)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    /// Values recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1), as its bucket's lower bound; 0 if empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Self::lower_bound(i);
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    /// The largest value.
    #[must_use]
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// Forgets everything.
    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        self.max.store(0, Ordering::Relaxed);
    }
}

/// What a load run does.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Edge address.
    pub target: SocketAddr,
    /// Connections to open.
    pub connections: usize,
    /// First member number (members are `<prefix><first>`…).
    pub first: usize,
    /// Member name prefix.
    pub prefix: String,
    /// Source addresses: connection `i` uses `sources[i % len]`; empty: the
    /// address is picked by member number (`(first + i) / 25 000`), so
    /// load processes with different `first` ranges never share one.
    pub sources: Vec<Ipv4Addr>,
    /// Key to mint the tokens with.
    pub key: TokenKey,
    /// Broadcast topic every connection subscribes to.
    pub topic: Option<String>,
    /// Connection attempts in flight at once.
    pub concurrency: usize,
}

/// Counters of a load run.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Connections that got their `hello`.
    pub connected: AtomicU64,
    /// Connection attempts that failed.
    pub failed: AtomicU64,
    /// Connections that ended after being established.
    pub closed: AtomicU64,
    /// Pushes received.
    pub received: AtomicU64,
    /// Delivery latency of pushes.
    pub latency: Histogram,
}

/// Loopback addresses from 127.0.0.1 on, skipping .0 and .255 in each /24.
fn loopback_addresses() -> impl Iterator<Item = Ipv4Addr> {
    (0u32..0x00ff_fffe)
        .map(|i| Ipv4Addr::from(0x7f00_0001 + i))
        .filter(|a| a.octets()[3] != 0 && a.octets()[3] != 255)
}

/// The first `n` (at least one) of the loopback source addresses.
#[must_use]
pub fn loopback_sources(n: usize) -> Vec<Ipv4Addr> {
    loopback_addresses().take(n.max(1)).collect()
}

/// Connections per loopback source address (the default ephemeral port
/// range has about 28 000 ports).
pub const PER_SOURCE: usize = 25_000;

/// The source address of member number `n` when none are given.
#[must_use]
pub fn source_for_member(n: usize) -> Ipv4Addr {
    loopback_addresses()
        .nth(n / PER_SOURCE)
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

/// The `sent_ns` of a push frame, found without a full parse.
fn sent_ns(text: &str) -> Option<i64> {
    let at = text.find("\"sent_ns\":")? + "\"sent_ns\":".len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

/// Opens the connections (at most `concurrency` attempts at a time) and
/// keeps them reading until they close; returns when all attempts were
/// made. Each connection runs on its own task.
pub async fn open(config: LoadConfig, stats: Arc<LoadStats>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let expires = crate::token::unix_now_s() + 86_400;
    for i in 0..config.connections {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let n = config.first + i;
        let claims = Claims {
            member: format!("{}{n}", config.prefix),
            device: "d0".into(),
            device_type: "tv".into(),
            topics: config.topic.iter().cloned().collect(),
            expires_unix_s: expires,
        };
        let Ok(token) = config.key.issue(&claims) else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let source = if config.sources.is_empty() {
            source_for_member(n)
        } else {
            config.sources[i % config.sources.len()]
        };
        let (target, topic, stats) = (config.target, config.topic.clone(), stats.clone());
        tokio::spawn(async move {
            match connect(source, target, &token, topic.as_deref()).await {
                Ok(ws) => {
                    drop(permit);
                    read(ws, &stats).await;
                }
                Err(e) => {
                    drop(permit);
                    if stats.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            "load connection failed (first failure; others counted): {e}"
                        );
                    }
                }
            }
        });
    }
    // Wait for the last attempts.
    let _ = permits.acquire_many(config.concurrency.max(1) as u32).await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(
    source: Ipv4Addr,
    target: SocketAddr,
    token: &str,
    topic: Option<&str>,
) -> Result<Ws, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| format!("binding {source}: {e}"))?;
    let stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(target))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut url = format!("ws://{target}/v1/ws?token={token}");
    if let Some(t) = topic {
        url.push_str(&format!("&topic={t}"));
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn read(mut ws: Ws, stats: &LoadStats) {
    let mut hello = false;
    while let Some(Ok(msg)) = ws.next().await {
        let WsMessage::Text(text) = msg else { continue };
        if !hello {
            hello = true;
            stats.connected.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some(sent) = sent_ns(&text) {
            stats.received.fetch_add(1, Ordering::Relaxed);
            stats
                .latency
                .record((crate::frame::unix_now_ns().saturating_sub(sent).max(0) / 1_000) as u64);
        }
    }
    if hello {
        stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
    stats.closed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((4_600..=5_000).contains(&p50), "{p50}");
        assert!((9_200..=9_900).contains(&p99), "{p99}");
        assert_eq!(h.max(), 10_000);
        for i in 0..BUCKETS {
            assert_eq!(Histogram::index(Histogram::lower_bound(i)), i);
        }
        h.reset();
        assert_eq!(h.count(), 0);
    }

    #[test]
    fn sources_skip_network_and_broadcast_addresses() {
        let s = loopback_sources(300);
        assert_eq!(s[0], Ipv4Addr::new(127, 0, 0, 1));
        assert!(s.iter().all(|a| a.octets()[3] != 0 && a.octets()[3] != 255));
        assert_eq!(source_for_member(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_for_member(24_999), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_for_member(25_000), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_for_member(199_999), Ipv4Addr::new(127, 0, 0, 8));
        assert_eq!(
            sent_ns(r#"{"type":"push","id":0,"kind":"k","durable":false,"sent_ns":123,"body":{}}"#),
            Some(123)
        );
    }
}
