//! The HTTP/JSON API (axum).
//!
//! | method | path | body / query |
//! |---|---|---|
//! | `POST` | `/v1/events` | one event, or `{"events": [...]}` (at most [`MAX_EVENTS`]) |
//! | `GET` | `/v1/members/{m}/notifications` | `?since=CURSOR&limit=N&device_type=tv` |
//! | `GET` | `/v1/members/{m}/state` | `?at_ns=TAI_NS` (default: now) |
//! | `POST` | `/v1/members/{m}/notifications/{id}/read` or `/dismiss` | — |
//! | `PUT` | `/v1/members/{m}/devices/{d}` | `{"type":"phone","channel":"apns","token":"…"}` (register or heartbeat) |
//! | `DELETE` | `/v1/members/{m}/devices/{d}` | — |
//! | `GET` | `/v1/ws`, `/v1/sse` | `?token=T` — edge devices connect (push edge, see `push::http`) |
//! | `GET` | `/v1/status` | — |
//! | `GET` | `/metrics` | — (Prometheus text, `timecard_notify_*` and the edge's `timecard_push_*`; never captured for replay) |
//!
//! An event is `{"type": "new-episode", "member": "m1", "priority": "high",
//! "targets": ["tv"], "body": {…}, "idempotency_key": "NS:NONCE"}` (priority,
//! targets and key optional). One event answers 202 with the accepted event,
//! or its error: 400 invalid, 413 too large, 429 overloaded (retry with the
//! same key), 503 unavailable. A batch answers 200 with one result per event.
//! Errors are `{"error": "...", "kind": "..."}`.
//!
//! `POST`, `PUT`, `DELETE` and `/v1/capture` need `Authorization: Bearer
//! TOKEN` unless the service runs `--insecure` ([`access`]); refused calls
//! get 401 `{"error": "...", "code": "unauthenticated"}`.

use std::future::Future;
use std::sync::Arc;

use access::Access;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use replay::capture::ReplaySupport;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::grpc::{MAX_EVENTS, kind_of};
use crate::registry::Registration;
use crate::service::{IncomingEvent, NotifyError, NotifyService};
use crate::store::{Change, MemberEvent};

/// Largest request body, bytes.
pub const MAX_BODY: usize = 1024 * 1024;

type Svc = Arc<NotifyService>;

struct ApiError(StatusCode, String, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.1, "kind": self.2});
        (self.0, Json(body)).into_response()
    }
}

fn http_status(e: &NotifyError) -> StatusCode {
    match e {
        NotifyError::Invalid(crate::model::ModelError::BodyTooLarge { .. }) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        NotifyError::Overloaded(..) => StatusCode::TOO_MANY_REQUESTS,
        NotifyError::NotFound(_) => StatusCode::NOT_FOUND,
        NotifyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        NotifyError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> Self {
        Self(http_status(&e), e.to_string(), kind_of(&e))
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into(), "invalid")
}

/// An event as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJson {
    #[serde(rename = "type")]
    kind: String,
    member: String,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    body: Box<serde_json::value::RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

impl From<EventJson> for IncomingEvent {
    fn from(e: EventJson) -> Self {
        Self {
            kind: e.kind,
            priority: e.priority,
            member: e.member,
            targets: e.targets,
            body: e.body.get().as_bytes().to_vec(),
            idempotency_key: e.idempotency_key,
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

async fn publish(State(svc): State<Svc>, body: Bytes) -> Result<Response, ApiError> {
    // One pass to tell a batch from a single event (and catch malformed
    // JSON), one to decode; bodies stay byte for byte as sent.
    let probe: Probe = parse_json(&body)?;
    let invalid = |e: serde_json::Error| bad(format!("invalid event: {e}"));
    if probe.events.is_none() {
        let event: EventJson = serde_json::from_slice(&body).map_err(invalid)?;
        return match svc.publish(vec![event.into()]).await.pop() {
            Some(Ok(a)) => Ok((StatusCode::ACCEPTED, Json(a)).into_response()),
            Some(Err(e)) => Err(e.into()),
            None => Err(bad("no event")),
        };
    }
    let events = serde_json::from_slice::<BatchJson>(&body)
        .map_err(invalid)?
        .events;
    if events.len() > MAX_EVENTS {
        return Err(bad(format!(
            "{} events in one request; send at most {MAX_EVENTS}",
            events.len()
        )));
    }
    let results = svc
        .publish(events.into_iter().map(Into::into).collect())
        .await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.len() - accepted;
    let results: Vec<serde_json::Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(a) => serde_json::json!({"accepted": a}),
            Err(e) => serde_json::json!({"error": e.to_string(), "kind": kind_of(&e)}),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "accepted": accepted, "refused": refused, "results": results
    }))
    .into_response())
}

/// Just enough of a request to see whether it is a batch.
#[derive(Debug, Deserialize)]
struct Probe {
    #[serde(default)]
    events: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchJson {
    events: Vec<EventJson>,
}

/// A member event as JSON.
#[must_use]
pub fn change_json(e: &MemberEvent) -> serde_json::Value {
    let mut json = serde_json::json!({
        "seq": e.seq, "change": e.change_name(), "id": e.notification_id(),
        "stored": [e.at.earliest_ns, e.at.latest_ns],
    });
    if let Change::Notified {
        kind,
        priority,
        targets,
        created_ns,
        body,
    } = &e.change
    {
        let body = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
        json["type"] = kind.as_str().into();
        json["priority"] = priority.as_str().into();
        json["targets"] = targets.names().into();
        json["created_ns"] = (*created_ns).into();
        json["body"] = body;
    }
    json
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    device_type: Option<String>,
}

fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|e| bad(e.body_text()))
}

async fn pull(
    State(svc): State<Svc>,
    Path(member): Path<String>,
    q: Result<Query<PullQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    let device = q
        .device_type
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: crate::model::ModelError| bad(e.to_string()))?;
    let p = svc
        .pull(&member, q.since, q.limit.unwrap_or(100), device)
        .await?;
    Ok(Json(serde_json::json!({
        "changes": p.changes.iter().map(change_json).collect::<Vec<_>>(),
        "cursor": p.cursor,
        "more": p.more,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    #[serde(default)]
    at_ns: Option<i64>,
}

async fn state(
    State(svc): State<Svc>,
    Path(member): Path<String>,
    q: Result<Query<StateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::store::MemberState>, ApiError> {
    let at = match query(q)?.at_ns {
        Some(at) => at,
        None => {
            svc.clock()
                .now()
                .map_err(|e| NotifyError::Unavailable(e.to_string()))?
                .latest_ns
        }
    };
    Ok(Json(svc.state_at(&member, at).await?))
}

async fn mark(
    State(svc): State<Svc>,
    Path((member, id, action)): Path<(String, u64, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dismiss = match action.as_str() {
        "read" => false,
        "dismiss" => true,
        other => {
            return Err(bad(format!(
                "unknown action {other:?}: use read or dismiss"
            )));
        }
    };
    let seq = svc.mark(&member, id, dismiss).await?;
    Ok(Json(serde_json::json!({"seq": seq})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceJson {
    #[serde(rename = "type")]
    device_type: String,
    channel: String,
    #[serde(default)]
    token: Option<String>,
}

async fn register(
    State(svc): State<Svc>,
    Path((member, device)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d: DeviceJson = parse_json(&body)?;
    let registration = Registration {
        token: d.token.unwrap_or_else(|| device.clone()),
        id: device,
        device_type: d
            .device_type
            .parse()
            .map_err(|e: crate::model::ModelError| bad(e.to_string()))?,
        channel: d
            .channel
            .parse()
            .map_err(|e: outbound::UnknownChannel| bad(e.to_string()))?,
    };
    svc.register_device(&member, registration)?;
    Ok(Json(
        serde_json::json!({"ttl_s": svc.registry().ttl().as_secs()}),
    ))
}

async fn unregister(
    State(svc): State<Svc>,
    Path((member, device)): Path<(String, String)>,
) -> StatusCode {
    if svc.unregister_device(&member, &device) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn status(State(svc): State<Svc>) -> Json<serde_json::Value> {
    Json(svc.status())
}

async fn metrics(State(svc): State<Svc>) -> impl IntoResponse {
    (
        [("content-type", operate::metrics::CONTENT_TYPE)],
        svc.prometheus(),
    )
}

fn too_large_or_bad(status: StatusCode, text: String) -> ApiError {
    let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too-large"
    } else {
        "invalid"
    };
    ApiError(status, text, kind)
}

/// The API router (without the edge's device routes, which [`serve`] adds
/// outside the capture tap); the state-changing routes (publish, mark,
/// device registration) need a token from `access`.
pub fn router(svc: Svc, access: &Access) -> Router {
    let writes = access.guard(
        Router::new()
            .route("/v1/events", post(publish))
            .route("/v1/members/{m}/notifications/{id}/{action}", post(mark))
            .route(
                "/v1/members/{m}/devices/{d}",
                put(register).delete(unregister),
            ),
    );
    Router::new()
        .route("/v1/members/{m}/notifications", get(pull))
        .route("/v1/members/{m}/state", get(state))
        .route("/v1/status", get(status))
        .merge(writes)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(map_body_errors))
        .with_state(svc)
}

/// Turns axum's plain-text body rejections (413, 400) into our JSON errors.
async fn map_body_errors(r: Response) -> Response {
    let is_json = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = r.status();
    if is_json || !(status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST) {
        return r;
    }
    let text = match axum::body::to_bytes(r.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => status.to_string(),
    };
    too_large_or_bad(status, text).into_response()
}

/// Serves HTTP on `listener` until `shutdown` resolves, with the replay
/// endpoints and (when capturing) the API behind the capture tap (writes that stall
/// for the edge node's write timeout fail, so a device that stops reading
/// its SSE stream is disconnected).
pub async fn serve(
    listener: TcpListener,
    svc: Svc,
    access: Access,
    replay: ReplaySupport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = svc
        .edge()
        .local()
        .map_or(push::edge::EdgeConfig::default().write_timeout, |n| {
            n.config().write_timeout
        });
    let listener = push::net::TimeoutListener::new(listener, timeout);
    // Scrapes and device connections stay outside the capture tap: they are
    // not API traffic to replay, and device URLs carry device tokens.
    let scrapes = Router::new()
        .route("/metrics", get(metrics))
        .with_state(svc.clone());
    let devices = push::http::device_routes(svc.edge().clone());
    let app = replay
        .wrap(router(svc, &access), &access)
        .merge(scrapes)
        .merge(devices);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
