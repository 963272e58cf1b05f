//! FCM HTTP v1 stand-in: HTTP/1.1 and HTTP/2 cleartext on one port.
//!
//! Validation with Google's status codes and error bodies
//! (`{"error":{"code","message","status","details":[FcmError]}}`): path
//! `/v1/projects/<project>/messages:send` and POST (404 / 405 HTML pages, as
//! Google's front end), bearer token when configured (401
//! `UNAUTHENTICATED`), a JSON body with `message.token` a valid-looking
//! registration token, `data` values all strings and no reserved keys,
//! `android.priority` HIGH|NORMAL, `android.ttl` a duration like `"60s"`,
//! and data at most 4096 bytes (400 `INVALID_ARGUMENT`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Common, Mode, Received, Server, Standin, any_port, read_body, response, unix_ms};

const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// A local FCM look-alike.
pub struct FcmStandin {
    /// Kept alive with the listener.
    _state: Arc<State>,
    handle: Standin,
}

struct State {
    common: Arc<Common>,
    path: String,
    project_id: String,
    ids: AtomicU64,
}

impl FcmStandin {
    /// Starts a stand-in for `project_id` that accepts any (or no) bearer token.
    ///
    /// # Panics
    ///
    /// If it cannot listen on 127.0.0.1, or outside a tokio runtime.
    pub async fn spawn(project_id: impl Into<String>) -> Self {
        Self::spawn_on(any_port(), project_id, None).await
    }

    /// Starts a stand-in that requires `authorization: Bearer <token>`
    /// (401 `UNAUTHENTICATED` otherwise).
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    pub async fn spawn_with_token(project_id: impl Into<String>, token: impl Into<String>) -> Self {
        Self::spawn_on(any_port(), project_id, Some(token.into())).await
    }

    /// Starts a stand-in on `addr` (e.g. the address of a stopped one, to
    /// test reconnection), requiring `bearer_token` when given.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    pub async fn spawn_on(
        addr: SocketAddr,
        project_id: impl Into<String>,
        bearer_token: Option<String>,
    ) -> Self {
        let (project_id, token) = (project_id.into(), bearer_token);
        let state = Arc::new(State {
            common: Arc::new(Common::new(token)),
            path: format!("/v1/projects/{project_id}/messages:send"),
            project_id,
            ids: AtomicU64::new(1),
        });
        let s = Arc::clone(&state);
        let server = Server::spawn(addr, false, move |req| Arc::clone(&s).handle(req)).await;
        FcmStandin {
            handle: Standin {
                common: Arc::clone(&state.common),
                server,
            },
            _state: state,
        }
    }
}

impl std::ops::Deref for FcmStandin {
    type Target = Standin;

    /// The accessors every stand-in shares (endpoint, received, mode…).
    fn deref(&self) -> &Standin {
        &self.handle
    }
}

fn error(
    code: u16,
    status: &str,
    error_code: Option<&str>,
    message: &str,
) -> Response<Full<Bytes>> {
    let mut err = json!({ "code": code, "message": message, "status": status });
    if let Some(ec) = error_code {
        err["details"] = json!([{ "@type": FCM_ERROR_TYPE, "errorCode": ec }]);
    }
    response(
        code,
        "application/json; charset=UTF-8",
        json!({ "error": err }).to_string(),
    )
}

fn invalid(message: &str) -> Response<Full<Bytes>> {
    error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), message)
}

fn html(code: u16, what: &str) -> Response<Full<Bytes>> {
    response(
        code,
        "text/html; charset=UTF-8",
        format!(
            "<!DOCTYPE html>\n<html lang=en><title>Error {code} ({what})!!1</title><p><b>{code}.</b> <ins>That's an error.</ins>"
        ),
    )
}

fn fail(code: u16) -> Response<Full<Bytes>> {
    match code {
        400 => invalid("Request contains an invalid argument."),
        401 => error(
            401,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials.",
        ),
        403 => error(
            403,
            "PERMISSION_DENIED",
            Some("SENDER_ID_MISMATCH"),
            "SenderId mismatch",
        ),
        404 => error(
            404,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            "Requested entity was not found.",
        ),
        429 => error(
            429,
            "RESOURCE_EXHAUSTED",
            Some("QUOTA_EXCEEDED"),
            "Quota exceeded for quota metric 'Send requests'.",
        ),
        500 => error(
            500,
            "INTERNAL",
            Some("INTERNAL"),
            "Internal error encountered.",
        ),
        503 => error(
            503,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
            "The service is currently unavailable.",
        ),
        other => error(
            other,
            "UNKNOWN",
            Some("UNSPECIFIED_ERROR"),
            "Unknown error.",
        ),
    }
}

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b))
}

fn valid_duration(s: &str) -> bool {
    let Some(num) = s.strip_suffix('s') else {
        return false;
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, "0"));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && !frac.is_empty()
        && frac.len() <= 9
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// Checks the message like FCM; `Err` is the 400 message.
fn validate(v: &Value) -> Result<String, String> {
    let Some(message) = v.get("message").and_then(Value::as_object) else {
        return Err("Request contains an invalid argument.".into());
    };
    let token = match message.get("token") {
        None => return Err("Recipient of the message is not set.".into()),
        Some(Value::String(t)) if valid_token(t) => t.clone(),
        Some(Value::String(_)) => {
            return Err("The registration token is not a valid FCM registration token".into());
        }
        Some(other) => {
            return Err(format!(
                "Invalid value at 'message.token' (TYPE_STRING), {other}"
            ));
        }
    };
    if let Some(data) = message.get("data") {
        let Some(data) = data.as_object() else {
            return Err(format!(
                "Invalid value at 'message.data' (type.googleapis.com/google.firebase.fcm.v1.Message.DataEntry), {data}"
            ));
        };
        let mut size = 0;
        for (i, (k, val)) in data.iter().enumerate() {
            let Some(s) = val.as_str() else {
                return Err(format!(
                    "Invalid value at 'message.data[{i}].value' (TYPE_STRING), {val}"
                ));
            };
            if matches!(k.as_str(), "from" | "notification" | "message_type")
                || k.starts_with("google")
                || k.starts_with("gcm")
            {
                return Err(format!("Invalid data payload key: {k}"));
            }
            size += k.len() + s.len();
        }
        if size > 4096 {
            return Err("Android message is too big".into());
        }
    }
    if let Some(android) = message.get("android") {
        if let Some(p) = android.get("priority")
            && !matches!(p.as_str(), Some("HIGH" | "NORMAL"))
        {
            return Err(format!(
                "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {p}"
            ));
        }
        if let Some(t) = android.get("ttl")
            && !t.as_str().is_some_and(valid_duration)
        {
            return Err(format!(
                "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {t}"
            ));
        }
    }
    Ok(token)
}

impl State {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        if parts.uri.path() != self.path {
            return html(404, "Not Found");
        }
        if parts.method != Method::POST {
            return html(405, "Method Not Allowed");
        }
        if let Some(expected) = &self.common.bearer_token {
            let auth = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            match auth {
                None => {
                    return error(
                        401,
                        "UNAUTHENTICATED",
                        None,
                        "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                    );
                }
                Some(a)
                    if a.strip_prefix("Bearer ")
                        .or_else(|| a.strip_prefix("bearer "))
                        != Some(expected) =>
                {
                    return error(
                        401,
                        "UNAUTHENTICATED",
                        None,
                        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                    );
                }
                Some(_) => {}
            }
        }
        let Some(bytes) = read_body(body, 64 * 1024).await else {
            return error(
                413,
                "INVALID_ARGUMENT",
                None,
                "Request payload size exceeds the limit.",
            );
        };
        let json = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    400,
                    "INVALID_ARGUMENT",
                    None,
                    &format!("Invalid JSON payload received. {e}"),
                );
            }
        };
        let token = match validate(&json) {
            Ok(t) => t,
            Err(msg) => return invalid(&msg),
        };
        self.common.record(Received {
            device_token: token.clone(),
            path: parts.uri.path().to_owned(),
            headers: parts.headers.clone(),
            body: json,
        });
        match self.common.answer_mode().await {
            Mode::Fail(code) => fail(code),
            Mode::Normal | Mode::Stall if self.common.is_unregistered(&token) => error(
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "Requested entity was not found.",
            ),
            Mode::Normal | Mode::Stall => {
                self.common.delivered.fetch_add(1, Ordering::Relaxed);
                let n = self.ids.fetch_add(1, Ordering::Relaxed);
                let name = format!(
                    "projects/{}/messages/0:{}%{n:016x}",
                    self.project_id,
                    unix_ms()
                );
                response(
                    200,
                    "application/json; charset=UTF-8",
                    json!({ "name": name }).to_string(),
                )
            }
        }
    }
}
