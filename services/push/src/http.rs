//! The HTTP surface of an edge process.
//!
//! | method | path | what |
//! |---|---|---|
//! | `GET` | `/v1/ws?token=…[&topic=…]` | WebSocket connection (token also as `Authorization: Bearer`) |
//! | `GET` | `/v1/sse?token=…[&topic=…]` | Server-Sent Events connection |
//! | `POST` | `/v1/push` | publish (publisher token): one message object or an array of up to 1 000 |
//! | `GET` | `/v1/status` | node status (JSON) |
//! | `GET` | `/metrics` | Prometheus text, `timecard_push_*` |
//!
//! A publish names `member` (and optionally `device`) for unicast, or
//! `topic` for a broadcast, plus `kind`, `body` (JSON), `durable` and `id`.

use std::convert::Infallible;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use operate::metrics::{CONTENT_TYPE, Exposition};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::edge::{EdgeNode, Refused};
use crate::frame::{Frame, Message};
use crate::processor::Processor;
use crate::token::{Claims, PUBLISHER};

/// Most messages in one publish request.
pub const MAX_PUBLISH_BATCH: usize = 1_000;
/// Largest publish request body.
pub const MAX_PUBLISH_BYTES: usize = 4 << 20;

/// Query of a connection request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectQuery {
    token: Option<String>,
    topic: Option<String>,
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({"error": msg.to_string()}))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Authenticates a device connection request and attaches it.
async fn admit(
    node: &EdgeNode,
    headers: &HeaderMap,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<crate::edge::Attached, Response> {
    let q = query
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?
        .0;
    let token = bearer(headers).or(q.token.as_deref());
    let claims: Claims = node
        .authenticate(token)
        .map_err(|e| error(StatusCode::UNAUTHORIZED, e))?;
    if claims.device_type == PUBLISHER {
        return Err(error(
            StatusCode::FORBIDDEN,
            "a publisher token cannot open a device connection",
        ));
    }
    if let Some(t) = &q.topic
        && !claims.topics.contains(t)
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "the token does not allow topic {:?}",
                t.chars().take(128).collect::<String>()
            ),
        ));
    }
    node.attach(&claims, q.topic.as_deref())
        .await
        .map_err(|e| match e {
            Refused::Registry(_) => error(StatusCode::SERVICE_UNAVAILABLE, e),
            Refused::Draining | Refused::Full(_) => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                r
            }
        })
}

async fn websocket(
    State(p): State<Processor>,
    headers: HeaderMap,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
    request: axum::extract::Request,
) -> Response {
    let Some(node) = p.local().cloned() else {
        return error(StatusCode::NOT_FOUND, "no edge node in this process");
    };
    let (mut parts, _) = request.into_parts();
    // Check the upgrade request first: a plain GET gets a clear 4xx
    // without being registered.
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let attached = match admit(&node, &headers, query).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    node.count_accept(true);
    upgrade
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .max_message_size(16 * 1024)
        .max_frame_size(16 * 1024)
        .on_upgrade(move |socket| async move { node.run_websocket(socket, attached).await })
}

async fn sse(
    State(p): State<Processor>,
    headers: HeaderMap,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(node) = p.local().cloned() else {
        return error(StatusCode::NOT_FOUND, "no edge node in this process");
    };
    let attached = match admit(&node, &headers, query).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    node.count_accept(false);
    let heartbeat = node.config().heartbeat;
    let events = node
        .sse_frames(attached)
        .map(|f| Ok::<_, Infallible>(Event::default().data(f.as_str())));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response()
}

/// One message to publish.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    member: Option<String>,
    device: Option<String>,
    topic: Option<String>,
    kind: String,
    body: Box<RawValue>,
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    id: u64,
    #[serde(default)]
    sent_ns: Option<i64>,
}

/// One message or a batch.
#[derive(Debug)]
enum PublishBody {
    One(Publish),
    Many(Vec<Publish>),
}

impl PublishBody {
    /// Parses an object or an array of objects (untagged enums cannot
    /// hold raw JSON bodies, so the first byte decides).
    fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            serde_json::from_slice(body).map(Self::Many)
        } else {
            serde_json::from_slice(body).map(Self::One)
        }
    }
}

async fn publish_one(p: &Processor, m: Publish) -> serde_json::Value {
    let target = match (&m.member, &m.topic) {
        (Some(member), None) if crate::token::valid_name(member) => Ok(()),
        (None, Some(topic)) if crate::token::valid_name(topic) => Ok(()),
        (Some(_), Some(_)) => Err("give member (unicast) or topic (broadcast), not both"),
        (None, None) => Err("give member (unicast) or topic (broadcast)"),
        _ => Err("member and topic must be 1 to 128 characters from [A-Za-z0-9_-]"),
    };
    if let Err(e) = target {
        return serde_json::json!({"error": e});
    }
    if m.kind.is_empty() || m.kind.len() > 128 {
        return serde_json::json!({"error": "kind must be 1 to 128 bytes"});
    }
    let frame = Frame::Push(Message {
        id: m.id,
        kind: m.kind,
        durable: m.durable,
        sent_ns: m.sent_ns.unwrap_or_else(crate::frame::unix_now_ns),
        body: m.body,
    })
    .encode();
    if frame.bytes().len() > crate::frame::MAX_FRAME {
        return serde_json::json!({"error": format!(
            "frame of {} bytes exceeds the {} byte limit of a push", frame.bytes().len(), crate::frame::MAX_FRAME
        )});
    }
    let routed = match (&m.member, &m.topic) {
        (Some(member), _) => Ok(p.unicast(member, m.device.as_deref(), &frame).await),
        (_, Some(topic)) => p.broadcast(topic, &frame).await,
        _ => unreachable!("checked above"),
    };
    match routed {
        Ok(r) => {
            serde_json::json!({"local": r.local, "forwarded": r.forwarded, "offline": r.offline})
        }
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}

async fn publish(
    State(p): State<Processor>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(node) = p.local() else {
        return error(StatusCode::NOT_FOUND, "no edge node in this process");
    };
    match node.authenticate(bearer(&headers)) {
        Ok(c) if c.device_type == PUBLISHER => {}
        Ok(_) => return error(StatusCode::FORBIDDEN, "publishing needs a publisher token"),
        Err(e) => return error(StatusCode::UNAUTHORIZED, e),
    }
    let parsed = match PublishBody::parse(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad publish request: {e}")),
    };
    match parsed {
        PublishBody::One(m) => Json(publish_one(&p, m).await).into_response(),
        PublishBody::Many(ms) if ms.len() > MAX_PUBLISH_BATCH => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} messages; at most {MAX_PUBLISH_BATCH} per request",
                ms.len()
            ),
        ),
        PublishBody::Many(ms) => {
            let mut results = Vec::with_capacity(ms.len());
            for m in ms {
                results.push(publish_one(&p, m).await);
            }
            Json(serde_json::json!({"results": results})).into_response()
        }
    }
}

async fn status(State(p): State<Processor>) -> Response {
    Json(p.status()).into_response()
}

async fn metrics(State(p): State<Processor>) -> Response {
    match p.local() {
        Some(node) => {
            let mut m = Exposition::new("push", env!("CARGO_PKG_VERSION"));
            node.write_metrics(&mut m);
            ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.finish()).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no edge node in this process"),
    }
}

/// Only the device-connection routes (`/v1/ws`, `/v1/sse`), to merge into
/// another service's API (the notification service hosts a node this way).
pub fn device_routes<S>(processor: Processor) -> Router<S> {
    Router::new()
        .route("/v1/ws", get(websocket))
        .route("/v1/sse", get(sse))
        .with_state(processor)
}

/// The routes of an edge process, served by `processor` (whose local node
/// holds the connections).
pub fn router(processor: Processor) -> Router {
    api_routes(processor.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(processor),
    )
}

/// The routes of [`router`] but `/metrics`, for a process that serves its
/// own metrics there (the `timecard up` dashboard writes its node's among them).
pub fn api_routes(processor: Processor) -> Router {
    Router::new()
        .route("/v1/push", post(publish))
        .route("/v1/status", get(status))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_PUBLISH_BYTES))
        .with_state(processor.clone())
        .merge(device_routes(processor))
}
