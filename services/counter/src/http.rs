//! The HTTP/JSON mirror of the gRPC API (axum).
//!
//! | method | path | body |
//! |---|---|---|
//! | `POST` | `/v1/counters/{ns}/{counter}/add` | `{"delta": 1, "idempotency_token": "EVENT_TIME_NS:NONCE"}` |
//! | `POST` | `/v1/counters/{ns}/{counter}/add-and-get` | as above |
//! | `GET`  | `/v1/counters/{ns}/{counter}` | — |
//! | `POST` | `/v1/counters/{ns}/{counter}/clear` | `{"idempotency_token": …}` (optional) |
//! | `GET`  | `/v1/status` | — |
//! | `GET`  | `/metrics` | Prometheus text, `timecard_counter_*` ([`crate::metrics`]); never captured for replay |
//! | `GET`  | `/v1/lineage`, `/v1/capture`… | replay testing ([`replay::capture`]) |
//!
//! `POST`s and `/v1/capture` need `Authorization: Bearer TOKEN` unless the
//! service runs `--insecure` ([`access`]); refused calls get 401.
//!
//! Replies are the [`Reply`] as JSON; errors are `{"error": "...", "code":
//! "..."}` with 400 (bad input), 404 (unknown namespace), 413 (body over
//! [`MAX_BODY`]), 422 (int64 overflow) or 503 (backend unavailable, retry).

use std::future::Future;

use access::Access;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use eventlog::IdempotencyToken;
use operate::metrics::{CONTENT_TYPE, Exposition};
use replay::capture::ReplaySupport;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::service::{CounterError, CounterService, Reply};

/// Largest request body, bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// Body of add / add-and-get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    delta: i64,
    #[serde(default)]
    idempotency_token: Option<String>,
}

/// Body of clear.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearBody {
    #[serde(default)]
    idempotency_token: Option<String>,
}

struct ApiError(StatusCode, String, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(serde_json::json!({"error": self.1, "code": self.2})),
        )
            .into_response()
    }
}

impl From<CounterError> for ApiError {
    fn from(e: CounterError) -> Self {
        let (status, code) = match &e {
            CounterError::UnknownNamespace(..) => (StatusCode::NOT_FOUND, "not_found"),
            CounterError::BadName { .. }
            | CounterError::BadToken(_)
            | CounterError::TokenOutOfWindow(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            CounterError::Overflow { .. } | CounterError::OutOfRange(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "out_of_range")
            }
            CounterError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        Self(status, e.to_string(), code)
    }
}

fn json_error(r: JsonRejection) -> ApiError {
    // Every malformed body is a 400 (axum says 422 for well-formed JSON of
    // the wrong shape); only an oversized one is a 413.
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(StatusCode::PAYLOAD_TOO_LARGE, r.body_text(), "too_large")
    } else {
        ApiError(StatusCode::BAD_REQUEST, r.body_text(), "invalid_argument")
    }
}

fn parse_token(t: Option<String>) -> Result<Option<IdempotencyToken>, ApiError> {
    t.map(|s| {
        s.parse::<IdempotencyToken>()
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string(), "invalid_argument"))
    })
    .transpose()
}

type ApiResult = Result<Json<Reply>, ApiError>;

async fn add_inner(
    svc: CounterService,
    ns: String,
    counter: String,
    body: Result<Json<AddBody>, JsonRejection>,
    and_get: bool,
) -> ApiResult {
    let Json(b) = body.map_err(json_error)?;
    let t = parse_token(b.idempotency_token)?;
    Ok(Json(svc.add(&ns, &counter, b.delta, t, and_get).await?))
}

async fn add(
    State(svc): State<CounterService>,
    Path((ns, c)): Path<(String, String)>,
    body: Result<Json<AddBody>, JsonRejection>,
) -> ApiResult {
    add_inner(svc, ns, c, body, false).await
}

async fn add_and_get(
    State(svc): State<CounterService>,
    Path((ns, c)): Path<(String, String)>,
    body: Result<Json<AddBody>, JsonRejection>,
) -> ApiResult {
    add_inner(svc, ns, c, body, true).await
}

async fn get_count(
    State(svc): State<CounterService>,
    Path((ns, c)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(svc.get(&ns, &c).await?))
}

async fn clear(
    State(svc): State<CounterService>,
    Path((ns, c)): Path<(String, String)>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let body = body.map_err(|r| {
        let (status, code) = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        } else {
            (StatusCode::BAD_REQUEST, "invalid_argument")
        };
        ApiError(status, r.body_text(), code)
    })?;
    // The body is optional: no body clears with a fresh token.
    let b: ClearBody = if body.iter().all(u8::is_ascii_whitespace) {
        ClearBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON body: {e}"),
                "invalid_argument",
            )
        })?
    };
    let t = parse_token(b.idempotency_token)?;
    Ok(Json(svc.clear(&ns, &c, t).await?))
}

async fn status(State(svc): State<CounterService>) -> Json<crate::service::Status> {
    Json(svc.status())
}

async fn metrics(State(svc): State<CounterService>) -> Response {
    let mut m = Exposition::new("counter", env!("CARGO_PKG_VERSION"));
    svc.write_metrics(&mut m);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.finish()).into_response()
}

/// The router; the state-changing routes (add, add-and-get, clear) need a
/// token from `access`.
pub fn router(svc: CounterService, access: &Access) -> Router {
    let writes = access.guard(
        Router::new()
            .route("/v1/counters/{ns}/{counter}/add", post(add))
            .route("/v1/counters/{ns}/{counter}/add-and-get", post(add_and_get))
            .route("/v1/counters/{ns}/{counter}/clear", post(clear)),
    );
    Router::new()
        .route("/v1/counters/{ns}/{counter}", get(get_count))
        .route("/v1/status", get(status))
        .merge(writes)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(svc)
}

/// Serves HTTP on `listener` until `shutdown` resolves, with the replay
/// endpoints and (when capturing) the API behind the capture tap.
pub async fn serve(
    listener: TcpListener,
    svc: CounterService,
    access: &Access,
    replay: &ReplaySupport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Scrapes stay outside the capture tap: they are not API traffic to replay.
    let scrapes = Router::new()
        .route("/metrics", get(metrics))
        .with_state(svc.clone());
    let app = replay.wrap(router(svc, access), access).merge(scrapes);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
