//! APNs stand-in: HTTP/2 cleartext (prior knowledge) only, like the real
//! provider API behind its TLS.
//!
//! Validation, in order, with Apple's status codes and reasons: path
//! `/3/device/<token>` (404 `BadPath`), method POST (405
//! `MethodNotAllowed`), provider token when configured (403
//! `InvalidProviderToken` / `MissingProviderToken`), token present and hex
//! (400 `MissingDeviceToken` / `BadDeviceToken`), `apns-topic` (400
//! `MissingTopic`), `apns-push-type` (400 `InvalidPushType`),
//! `apns-priority` 1|5|10 (400 `BadPriority`), `apns-expiration` integer (400
//! `BadExpirationDate`), `apns-id` UUID (400 `BadMessageId`), body non-empty
//! (400 `PayloadEmpty`), at most 4096 bytes (413 `PayloadTooLarge`), a JSON
//! object with an `aps` object (400 `BadPayload`: Apple documents no reason
//! for a malformed payload, this one is ours).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{Common, Mode, Received, Server, Standin, any_port, read_body, response, unix_ms};

const PUSH_TYPES: [&str; 9] = [
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
];

/// A local APNs look-alike.
pub struct ApnsStandin {
    /// Kept alive with the listener.
    _state: Arc<State>,
    handle: Standin,
}

struct State {
    common: Arc<Common>,
    ids: AtomicU64,
}

impl ApnsStandin {
    /// Starts a stand-in that accepts any (or no) provider token.
    ///
    /// # Panics
    ///
    /// If it cannot listen on 127.0.0.1, or outside a tokio runtime.
    pub async fn spawn() -> Self {
        Self::spawn_on(any_port(), None).await
    }

    /// Starts a stand-in that requires `authorization: bearer <token>`
    /// (403 `MissingProviderToken` / `InvalidProviderToken` otherwise).
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    pub async fn spawn_with_token(token: impl Into<String>) -> Self {
        Self::spawn_on(any_port(), Some(token.into())).await
    }

    /// Starts a stand-in on `addr` (e.g. the address of a stopped one, to
    /// test reconnection), requiring `bearer_token` when given.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    pub async fn spawn_on(addr: SocketAddr, bearer_token: Option<String>) -> Self {
        let token = bearer_token;
        let state = Arc::new(State {
            common: Arc::new(Common::new(token)),
            ids: AtomicU64::new(1),
        });
        let s = Arc::clone(&state);
        let server = Server::spawn(addr, true, move |req| Arc::clone(&s).handle(req)).await;
        ApnsStandin {
            handle: Standin {
                common: Arc::clone(&state.common),
                server,
            },
            _state: state,
        }
    }
}

impl std::ops::Deref for ApnsStandin {
    type Target = Standin;

    /// The accessors every stand-in shares (endpoint, received, mode…).
    fn deref(&self) -> &Standin {
        &self.handle
    }
}

fn reason(status: u16, apns_id: &str, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "reason": reason }).to_string();
    with_id(
        response(status, "application/json; charset=utf-8", body),
        apns_id,
    )
}

fn with_id(mut r: Response<Full<Bytes>>, apns_id: &str) -> Response<Full<Bytes>> {
    if let Ok(v) = http::HeaderValue::from_str(apns_id) {
        r.headers_mut().insert("apns-id", v);
    }
    r
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn fail_reason(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "BadPath",
        405 => "MethodNotAllowed",
        410 => "Unregistered",
        413 => "PayloadTooLarge",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

impl State {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        };
        let id = match header("apns-id") {
            Some(id) => id.to_owned(),
            None => {
                let n = self.ids.fetch_add(1, Ordering::Relaxed);
                format!("5eed0000-0000-4000-8000-{n:012x}")
            }
        };
        let Some(token) = parts.uri.path().strip_prefix("/3/device/") else {
            return reason(404, &id, "BadPath");
        };
        if parts.method != Method::POST {
            return reason(405, &id, "MethodNotAllowed");
        }
        if let Some(expected) = &self.common.bearer_token {
            match header("authorization") {
                None => return reason(403, &id, "MissingProviderToken"),
                Some(a)
                    if a.strip_prefix("bearer ")
                        .or_else(|| a.strip_prefix("Bearer "))
                        != Some(expected) =>
                {
                    return reason(403, &id, "InvalidProviderToken");
                }
                Some(_) => {}
            }
        }
        if token.is_empty() {
            return reason(400, &id, "MissingDeviceToken");
        }
        if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return reason(400, &id, "BadDeviceToken");
        }
        if header("apns-topic").is_none_or(str::is_empty) {
            return reason(400, &id, "MissingTopic");
        }
        if header("apns-push-type").is_some_and(|t| !PUSH_TYPES.contains(&t)) {
            return reason(400, &id, "InvalidPushType");
        }
        if header("apns-priority").is_some_and(|p| !matches!(p, "1" | "5" | "10")) {
            return reason(400, &id, "BadPriority");
        }
        if header("apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()) {
            return reason(400, &id, "BadExpirationDate");
        }
        if header("apns-id").is_some_and(|i| !is_uuid(i)) {
            return reason(400, &id, "BadMessageId");
        }
        let token = token.to_owned();
        let path = parts.uri.path().to_owned();
        let Some(bytes) = read_body(body, 64 * 1024).await else {
            return reason(413, &id, "PayloadTooLarge");
        };
        if bytes.is_empty() {
            return reason(400, &id, "PayloadEmpty");
        }
        if bytes.len() > crate::apns::MAX_PAYLOAD {
            return reason(413, &id, "PayloadTooLarge");
        }
        let json = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) if v.get("aps").is_some_and(serde_json::Value::is_object) => v,
            _ => return reason(400, &id, "BadPayload"),
        };
        self.common.record(Received {
            device_token: token.clone(),
            path,
            headers: parts.headers.clone(),
            body: json,
        });
        match self.common.answer_mode().await {
            Mode::Fail(status) => reason(status, &id, fail_reason(status)),
            Mode::Normal | Mode::Stall if self.common.is_unregistered(&token) => {
                let body = serde_json::json!({ "reason": "Unregistered", "timestamp": unix_ms() })
                    .to_string();
                with_id(response(410, "application/json; charset=utf-8", body), &id)
            }
            Mode::Normal | Mode::Stall => {
                self.common.delivered.fetch_add(1, Ordering::Relaxed);
                with_id(response(200, "application/json", Bytes::new()), &id)
            }
        }
    }
}
