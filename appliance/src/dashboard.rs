//! The live web dashboard of `timecard up`.
//!
//! `up` serves one page on `--dashboard` (default [`DEFAULT_ADDR`]) from a
//! push edge node of its own (crate `timecard-push`):
//!
//! | method | path | what |
//! |---|---|---|
//! | `GET` | `/` | the page (compiled into the binary), with a freshly signed viewer token |
//! | `GET` | `/token` | a fresh viewer token (the page renews its own with it after `up` restarted, or before it expires) |
//! | `GET` | `/v1/ws?token=…&topic=dashboard` | snapshots over WebSocket |
//! | `GET` | `/v1/sse?token=…&topic=dashboard` | the same over Server-Sent Events (the page's fallback) |
//! | `GET` | `/v1/status` | the edge node's connections and counters |
//! | `GET` | `/metrics` | Prometheus: the card, supervisor, fbclockd and this edge node ([`crate::metrics`]) |
//!
//! While anyone watches, a sampler takes a snapshot every [`PERIOD`] and
//! broadcasts it on the topic [`TOPIC`] as one push frame of kind
//! `dashboard`. A snapshot is what `up` runs, sampled with the live view's
//! own functions ([`live::sample`], [`live::PtpSample::from_stats`],
//! [`live::TrueTimeSample::read`]) and the services' status:
//!
//! ```text
//! {"seq": 17, "uptime_s": 8.5, "viewers": 1,
//!  "card":    {"sync": "IN SYNC", "clock_source": "TOD", "clock_class": 6, "gnss_fix": true,
//!              "satellites_used": 9, "antenna": ["antenna OK", "fix"], …},   // `watch --json` fields
//!  "ptp":     {"clock_class": 6, "sync_clients": 0, "sptp_per_s": 4.0, "syncs_per_s": 4.0, …},
//!  "fbclock": {"wou_ns": 23104, "error": null},
//!  "counter": {…},                                                    // its /v1/status
//!  "notify":  {…}}                                                    // its /v1/status
//! ```
//!
//! A part that does not run (`--no-ptp`, `--no-fbclock`, `--no-counter`,
//! `--no-notify`) is `null`; a card that cannot be read is
//! `{"error": "…"}`. The token key is generated at start and never leaves
//! the process: a page's token is good for 12 hours against this process.
//!
//! The page takes `?transport=sse` (Server-Sent Events from the start, for a
//! proxy that breaks WebSocket) and `?stop-after=N` (disconnect after N
//! snapshots and keep them on screen: a still for screenshots; the headless
//! browser test in `tests/dashboard.rs` needs it, and says why).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use ptp_server::CardSource;
use ptp_server::stats::Stats;
use push::edge::{EdgeConfig, EdgeNode};
use push::frame::{Frame, Message};
use push::processor::Processor;
use push::registry::Registry;
use push::token::{Claims, TokenKey};
use serde_json::{Value, json};
use timecard_driver::TimeCard;
use timecard_sim::Sim;

use crate::cmd::up::{ServiceComponent, StatusFn, start_service};
use crate::live::{self, PtpSample, TrueTimeSample};

/// Where the dashboard listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7380";
/// The push topic the page subscribes to.
pub const TOPIC: &str = "dashboard";
/// Time between snapshots.
pub const PERIOD: Duration = Duration::from_millis(500);

/// The page, with [`TOKEN_PLACEHOLDER`] where the viewer token goes.
const PAGE: &str = include_str!("../assets/dashboard.html");
/// Replaced by a viewer token in every page served.
const TOKEN_PLACEHOLDER: &str = "{{VIEWER_TOKEN}}";
/// How long a viewer token is good for.
const VIEWER_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Lifetime of the edge node's registry records (refreshed while connected).
const REGISTRY_TTL: Duration = Duration::from_secs(60);
/// Longest the dashboard waits for viewers to be told to reconnect when `up` stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// What the dashboard shows: the parts of `up` that run (`None` for the others).
pub struct Sources {
    /// The card.
    pub card: Arc<TimeCard>,
    /// The simulator behind it, for its ground truth.
    pub truth: Option<Sim>,
    /// The PTP server's card sampler, which runs the supervisor (without
    /// it the live view runs its own, and the supervisor's GNSS verdicts
    /// are `null` here).
    pub supervisor: Option<Arc<CardSource>>,
    /// The PTP server's statistics.
    pub ptp: Option<Arc<Stats>>,
    /// TrueTime as fbclockd publishes it.
    pub truetime: Option<fbclock::FbClock>,
    /// fbclockd's metrics.
    pub fbclockd: Option<fbclockd::DaemonMetrics>,
    /// The counter service's status.
    pub counter: Option<StatusFn>,
    /// The notification service's status.
    pub notify: Option<StatusFn>,
}

/// Signs a token for each page served.
struct Viewers {
    /// The edge node's key.
    key: TokenKey,
    /// Number of the next viewer (device `browser-<n>`).
    next: AtomicU64,
}

impl Viewers {
    /// A token for a new viewer: member `dashboard`, device `browser-<n>`, type `browser`.
    fn token(&self) -> Result<String, push::token::TokenError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.key.issue(&Claims {
            member: "dashboard".into(),
            device: format!("browser-{n}"),
            device_type: "browser".into(),
            topics: vec![TOPIC.into()],
            expires_unix_s: push::token::unix_now_s() + VIEWER_TOKEN_LIFETIME.as_secs(),
        })
    }
}

/// `GET /`: the page with a fresh viewer token (not to be cached: the token is in it).
async fn page(State(viewers): State<Arc<Viewers>>) -> Response {
    match viewers.token() {
        Ok(token) => (
            [(header::CACHE_CONTROL, "no-store")],
            Html(PAGE.replace(TOKEN_PLACEHOLDER, &token)),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /token`: a fresh viewer token, as text.
async fn token(State(viewers): State<Arc<Viewers>>) -> Response {
    match viewers.token() {
        Ok(token) => ([(header::CACHE_CONTROL, "no-store")], token).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /metrics`: what `up` runs, as Prometheus text.
async fn metrics(
    State((sources, node, started)): State<(Arc<Sources>, EdgeNode, Instant)>,
) -> Response {
    // Reading the card takes microseconds: no need to leave the runtime.
    let text = crate::metrics::render(&sources, &node, started);
    (
        [(header::CONTENT_TYPE, operate::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// Takes the snapshots.
struct Sampler {
    /// What to sample.
    sources: Arc<Sources>,
    /// When the dashboard started.
    started: Instant,
    /// The previous PTP sample, for message rates.
    previous_ptp: Option<(Instant, PtpSample)>,
    /// Snapshots taken.
    seq: u64,
}

impl Sampler {
    /// Nobody watches: forget the previous sample (rates restart).
    fn idle(&mut self) {
        self.previous_ptp = None;
    }

    /// The card part of a snapshot.
    fn card(&self, now: Instant, ptp: Option<&PtpSample>) -> Value {
        let s = &self.sources;
        let state = s
            .supervisor
            .as_ref()
            .map(|source| source.report().supervisor);
        let sample = live::sample(
            &s.card,
            &state.clone().unwrap_or_default(),
            s.truth.as_ref(),
            live::Extras::default(),
            Vec::new(),
            now - self.started,
        );
        let mut card = match sample.and_then(|x| Ok(serde_json::to_value(&x)?)) {
            Ok(v) => v,
            Err(e) => return json!({ "error": format!("{e:#}") }),
        };
        if let Some(obj) = card.as_object_mut() {
            obj.remove("events");
            obj.remove("elapsed_s");
            obj.insert("clock_class".into(), json!(ptp.map(|p| p.clock_class)));
            if state.is_none() {
                // The live view runs the supervisor: its verdicts are not known here.
                obj.insert("gnss_sync".into(), Value::Null);
                obj.insert("gnss_trusted".into(), Value::Null);
            }
        }
        card
    }

    /// The PTP part of a snapshot, with message rates since the previous one.
    fn ptp(&mut self, now: Instant, ptp: Option<PtpSample>) -> Value {
        let Some(p) = ptp else {
            return Value::Null;
        };
        let previous = self
            .previous_ptp
            .replace((now, p))
            .filter(|(at, _)| now > *at);
        let mut v = serde_json::to_value(p).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            // Per second since the previous snapshot; null for the first.
            let rate = |count: fn(&PtpSample) -> u64| {
                previous.map(|(at, q)| {
                    count(&p).saturating_sub(count(&q)) as f64 / (now - at).as_secs_f64()
                })
            };
            obj.insert("syncs_per_s".into(), json!(rate(|p| p.syncs_sent)));
            obj.insert(
                "delay_resps_per_s".into(),
                json!(rate(|p| p.delay_resps_sent)),
            );
            obj.insert("sptp_per_s".into(), json!(rate(|p| p.sptp_exchanges)));
        }
        v
    }

    /// One snapshot.
    fn snapshot(&mut self, viewers: u64) -> Value {
        let now = Instant::now();
        self.seq += 1;
        let ptp = self.sources.ptp.as_deref().map(PtpSample::from_stats);
        let card = self.card(now, ptp.as_ref());
        let s = &self.sources;
        let fbclock = s
            .truetime
            .as_ref()
            .map(|c| TrueTimeSample::read(c, s.truth.as_ref()));
        let counter = s.counter.as_ref().map(|f| f());
        let notify = s.notify.as_ref().map(|f| f());
        json!({
            "seq": self.seq,
            "uptime_s": (now - self.started).as_secs_f64(),
            "viewers": viewers,
            "card": card,
            "ptp": self.ptp(now, ptp),
            "fbclock": fbclock,
            "counter": counter,
            "notify": notify,
        })
    }
}

/// Broadcasts a snapshot every [`PERIOD`] while anyone is connected.
async fn broadcast_snapshots(node: EdgeNode, mut sampler: Sampler) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let viewers = node.connections();
        if viewers == 0 {
            sampler.idle();
            continue;
        }
        let body = match serde_json::value::to_raw_value(&sampler.snapshot(viewers)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard snapshot not serializable");
                continue;
            }
        };
        let frame = Frame::Push(Message {
            id: 0,
            kind: TOPIC.into(),
            durable: false,
            sent_ns: push::frame::unix_now_ns(),
            body,
        });
        node.broadcast(TOPIC, &frame.encode());
    }
}

/// Starts the dashboard on `addr` (on an ephemeral port when that one is in
/// use, and the banner says so), showing `sources`.
///
/// # Errors
/// No randomness for the token key, or the server could not listen.
pub fn start(addr: SocketAddr, sources: Sources) -> Result<ServiceComponent> {
    let key = TokenKey::generate().context("generating the dashboard's token key")?;
    let config = EdgeConfig {
        node_id: "dashboard".into(),
        heartbeat: Duration::from_secs(15),
        // Tell viewers to reconnect promptly when `up` stops.
        drain_period: Duration::from_millis(200),
        max_connections: 1_000,
        ..EdgeConfig::default()
    };
    let (runtime, listener, fallback) = start_service("dashboard", |rt, ephemeral| {
        let mut at = addr;
        if ephemeral {
            at.set_port(0);
        }
        rt.block_on(tokio::net::TcpListener::bind(at))
            .with_context(|| format!("listening on {at}"))
    })?;
    let bound = listener
        .local_addr()
        .context("the dashboard's listening address")?;
    let processor = runtime.block_on(Processor::hosting(
        config,
        key.clone(),
        Registry::embedded(REGISTRY_TTL),
    ))?;
    let node = processor
        .local()
        .cloned()
        .context("the dashboard's edge node")?;
    let viewers = Arc::new(Viewers {
        key,
        next: AtomicU64::new(1),
    });
    let sources = Arc::new(sources);
    let started = Instant::now();
    let scrape = (sources.clone(), node.clone(), started);
    let app = Router::new()
        .route("/", get(page))
        .route("/token", get(token))
        .with_state(viewers)
        .merge(
            Router::new()
                .route("/metrics", get(metrics))
                .with_state(scrape),
        )
        .merge(push::http::api_routes(processor));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let write_timeout = node.config().write_timeout;
    runtime.spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        let listener = push::net::TimeoutListener::new(listener, write_timeout);
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "dashboard server");
        }
    });
    let sampler = runtime.spawn(broadcast_snapshots(
        node.clone(),
        Sampler {
            sources,
            started,
            previous_ptp: None,
            seq: 0,
        },
    ));
    let status = node.clone();
    Ok(ServiceComponent {
        name: "dashboard",
        runtime: Some(runtime),
        summary: Box::new(move || {
            let mut s =
                format!("http://{bound}/ live in a browser (pushed over WebSocket, SSE fallback)");
            if fallback {
                s.push_str(&format!(" ({addr} in use: ephemeral port)"));
            }
            if bound.ip().is_loopback() {
                s.push_str("; this host only (--dashboard 0.0.0.0:PORT for others)");
            }
            s
        }),
        stop: Box::new(move |rt| {
            sampler.abort();
            rt.block_on(async {
                // Viewers are told to reconnect (they retry with backoff).
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, node.drain()).await;
            });
            // The server stops taking connections; the runtime's shutdown ends the rest.
            let _ = stop_tx.send(true);
        }),
        status: Arc::new(move || status.status()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_takes_one_token() {
        assert_eq!(PAGE.matches(TOKEN_PLACEHOLDER).count(), 1);
        for external in ["src=\"http", "href=\"http", "@import", "url(http", "<link"] {
            assert!(!PAGE.contains(external), "external resource: {external}");
        }
        for id in [
            "conn-status",
            "updates",
            "sync-state",
            "clock-source",
            "clock-class",
            "ptp-clients",
            "ptp-sptp-rate",
            "wou-ns",
            "wou-chart",
            "counter-clock",
            "notify-ingested",
        ] {
            assert!(PAGE.contains(&format!("id=\"{id}\"")), "no element {id}");
        }
    }

    #[test]
    fn viewer_tokens_verify_and_name_distinct_browsers() {
        let viewers = Viewers {
            key: TokenKey::generate().unwrap(),
            next: AtomicU64::new(1),
        };
        let (a, b) = (viewers.token().unwrap(), viewers.token().unwrap());
        let now = push::token::unix_now_s();
        let claims = viewers.key.verify(&a, now).unwrap();
        assert_eq!(
            (
                claims.member.as_str(),
                claims.device.as_str(),
                claims.device_type.as_str()
            ),
            ("dashboard", "browser-1", "browser")
        );
        assert_eq!(viewers.key.verify(&b, now).unwrap().device, "browser-2");
        assert!(claims.expires_unix_s >= now + 12 * 3600 - 1);
        // Safe inside a JavaScript string literal and a URL query.
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        );
    }
}
