//! Firebase Cloud Messaging adapter (HTTP v1 API).
//!
//! `POST /v1/projects/<project_id>/messages:send` with
//! `authorization: Bearer <OAuth2 access token>` and
//!
//! ```json
//! {"message":{"token":"<registration token>",
//!   "data":{"kind":"<kind>","id":"<notification_id>","member":"<member>","body":"<body JSON as a string>"},
//!   "android":{"priority":"HIGH"|"NORMAL","ttl":"<seconds left>s"}}}
//! ```
//!
//! (`ttl` is left out when the push has no expiry.) Data values are strings,
//! as FCM requires.
//!
//! Answers: 200 → delivered; errorCode `UNREGISTERED`, or 404 with a
//! `NOT_FOUND` FCM error → [`SendError::Unregistered`]; 400
//! (`INVALID_ARGUMENT`) and 403 `SENDER_ID_MISMATCH` →
//! [`SendError::Rejected`] with Google's message; 429 (`QUOTA_EXCEEDED`),
//! 5xx, 401 (`UNAUTHENTICATED`, `THIRD_PARTY_AUTH_ERROR`), other 403s and
//! a 404 without an FCM error body (wrong endpoint) →
//! [`SendError::Transient`], since they fail the whole channel.
//!
//! Requests go over cleartext HTTP/2 (h2c with prior knowledge); only
//! `http://` endpoints are supported.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::apns::json_object;
use crate::transport::{ConfigError, H2Pool};
use crate::{Adapter, Channel, Push, SendError};

/// Configuration of an [`FcmAdapter`].
#[derive(Clone, Debug)]
pub struct FcmConfig {
    /// `http://host:port[/prefix]` of FCM or a relay (production is `https://fcm.googleapis.com`, which needs a TLS relay).
    pub endpoint: Uri,
    /// The Firebase project id.
    pub project_id: String,
    /// OAuth2 access token, sent as `authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// HTTP/2 connections to multiplex requests over (at least 1).
    pub connections: usize,
}

/// The FCM adapter.
pub struct FcmAdapter {
    pool: H2Pool,
    uri: Uri,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for FcmAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmAdapter")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl FcmAdapter {
    /// Builds the adapter; connections are opened on first use.
    ///
    /// # Errors
    ///
    /// An `https://` or malformed endpoint, a project id that does not fit
    /// in a path, or a token that is not a valid header value.
    pub fn new(config: FcmConfig) -> Result<Self, ConfigError> {
        let pool = H2Pool::new(&config.endpoint, config.connections)?;
        let uri = pool
            .uri(&format!("/v1/projects/{}/messages:send", config.project_id))
            .filter(|_| !config.project_id.is_empty() && !config.project_id.contains('/'))
            .ok_or(ConfigError::BadValue("project_id"))?;
        let authorization = config
            .bearer_token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| ConfigError::BadValue("bearer_token"))?;
        Ok(FcmAdapter {
            pool,
            uri,
            authorization,
        })
    }

    async fn deliver(&self, push: &Push) -> Result<(), SendError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let body = message(push, now)?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json; charset=UTF-8");
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Rejected(format!("request: {e}")))?;
        let answer = self.pool.send(req, true).await?;
        classify(answer.status, answer.body.as_deref())
    }
}

impl Adapter for FcmAdapter {
    fn channel(&self) -> Channel {
        Channel::Fcm
    }

    fn send(&self, push: &Push) -> impl Future<Output = Result<(), SendError>> + Send {
        self.deliver(push)
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    data: Data<'a>,
    android: Android,
}

#[derive(Serialize)]
struct Data<'a> {
    kind: &'a str,
    id: String,
    member: &'a str,
    body: &'a str,
}

#[derive(Serialize)]
struct Android {
    priority: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

/// The JSON request body for `push` at `now_unix_s` (see the module docs).
///
/// # Errors
///
/// `Rejected("InvalidBody")` when the push body is not a JSON object.
pub fn message(push: &Push, now_unix_s: i64) -> Result<Vec<u8>, SendError> {
    let invalid = || SendError::Rejected("InvalidBody".into());
    let body = json_object(&push.body).ok_or_else(invalid)?;
    let body = std::str::from_utf8(body).map_err(|_| invalid())?;
    let ttl = (push.expires_at_unix_s > 0)
        .then(|| format!("{}s", (push.expires_at_unix_s - now_unix_s).max(0)));
    let envelope = Envelope {
        message: Message {
            token: &push.device_token,
            data: Data {
                kind: &push.kind,
                id: push.notification_id.to_string(),
                member: &push.member,
                body,
            },
            android: Android {
                priority: if push.urgent { "HIGH" } else { "NORMAL" },
                ttl,
            },
        },
    };
    serde_json::to_vec(&envelope).map_err(|e| SendError::Rejected(format!("encode: {e}")))
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorStatus,
}

#[derive(Deserialize)]
struct ErrorStatus {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
}

/// Maps an FCM answer to the adapter's result (see the module docs).
///
/// # Errors
///
/// Every status but 200.
pub fn classify(status: StatusCode, body: Option<&[u8]>) -> Result<(), SendError> {
    if status == StatusCode::OK {
        return Ok(());
    }
    let code = status.as_u16();
    let Some(err) = body.and_then(|b| serde_json::from_slice::<ErrorEnvelope>(b).ok()) else {
        return Err(match code {
            400..=499 if code != 401 && code != 404 && code != 429 => {
                SendError::Rejected(format!("HTTP {code}"))
            }
            404 => SendError::Transient(
                "HTTP 404 without an FCM error (wrong endpoint or project?)".into(),
            ),
            _ => SendError::Transient(format!("HTTP {code}")),
        });
    };
    let e = err.error;
    let fcm_code = e
        .details
        .into_iter()
        .find_map(|d| d.error_code)
        .unwrap_or_default();
    let label = [fcm_code.as_str(), e.status.as_str()]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or_else(|| format!("HTTP {code}"), str::to_owned);
    if fcm_code == "UNREGISTERED" || (code == 404 && e.status == "NOT_FOUND") {
        return Err(SendError::Unregistered);
    }
    Err(match code {
        403 if fcm_code == "SENDER_ID_MISMATCH" => SendError::Rejected(label),
        400..=499 if !matches!(code, 401 | 403 | 404 | 429) => {
            SendError::Rejected(if e.message.is_empty() {
                label
            } else {
                e.message
            })
        }
        _ => SendError::Transient(label),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn message_shape() {
        let mut p = Push {
            notification_id: 42,
            member: Arc::from("m1"),
            device_id: Arc::from("d1"),
            device_token: Arc::from("tok:1"),
            urgent: false,
            kind: Arc::from("new-episode"),
            body: Bytes::from_static(br#"{"a":"b"}"#),
            expires_at_unix_s: 0,
            created: Instant::now(),
        };
        let v: serde_json::Value = serde_json::from_slice(&message(&p, 1000).unwrap()).unwrap();
        let m = &v["message"];
        assert_eq!(m["token"], "tok:1");
        assert_eq!(m["data"]["id"], "42");
        assert_eq!(m["data"]["kind"], "new-episode");
        assert_eq!(m["data"]["member"], "m1");
        assert_eq!(m["data"]["body"], r#"{"a":"b"}"#);
        assert_eq!(m["android"]["priority"], "NORMAL");
        assert!(m["android"].get("ttl").is_none());
        p.urgent = true;
        p.expires_at_unix_s = 1060;
        let v: serde_json::Value = serde_json::from_slice(&message(&p, 1000).unwrap()).unwrap();
        assert_eq!(v["message"]["android"]["priority"], "HIGH");
        assert_eq!(v["message"]["android"]["ttl"], "60s");
        p.expires_at_unix_s = 10;
        let v: serde_json::Value = serde_json::from_slice(&message(&p, 1000).unwrap()).unwrap();
        assert_eq!(v["message"]["android"]["ttl"], "0s");
    }

    #[test]
    fn answers() {
        let st = |c| StatusCode::from_u16(c).unwrap();
        let err = |code: u16, status: &str, fcm: &str, msg: &str| {
            format!(
                r#"{{"error":{{"code":{code},"message":"{msg}","status":"{status}","details":[{{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"{fcm}"}}]}}}}"#
            )
        };
        assert_eq!(classify(st(200), Some(b"not json")), Ok(()));
        let b = err(
            404,
            "NOT_FOUND",
            "UNREGISTERED",
            "Requested entity was not found.",
        );
        assert_eq!(
            classify(st(404), Some(b.as_bytes())),
            Err(SendError::Unregistered)
        );
        let b = err(400, "INVALID_ARGUMENT", "UNREGISTERED", "x");
        assert_eq!(
            classify(st(400), Some(b.as_bytes())),
            Err(SendError::Unregistered)
        );
        let b = err(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "bad token");
        assert_eq!(
            classify(st(400), Some(b.as_bytes())),
            Err(SendError::Rejected("bad token".into()))
        );
        let b = err(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "slow down");
        assert_eq!(
            classify(st(429), Some(b.as_bytes())),
            Err(SendError::Transient("QUOTA_EXCEEDED".into()))
        );
        let b = r#"{"error":{"code":503,"message":"x","status":"UNAVAILABLE"}}"#;
        assert_eq!(
            classify(st(503), Some(b.as_bytes())),
            Err(SendError::Transient("UNAVAILABLE".into()))
        );
        let b = r#"{"error":{"code":401,"message":"x","status":"UNAUTHENTICATED"}}"#;
        assert!(matches!(
            classify(st(401), Some(b.as_bytes())),
            Err(SendError::Transient(_))
        ));
        let b = err(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "x");
        assert_eq!(
            classify(st(403), Some(b.as_bytes())),
            Err(SendError::Rejected("SENDER_ID_MISMATCH".into()))
        );
        assert!(matches!(
            classify(st(404), Some(b"<html>")),
            Err(SendError::Transient(_))
        ));
        assert!(matches!(
            classify(st(500), None),
            Err(SendError::Transient(_))
        ));
        assert_eq!(
            classify(st(400), Some(b"{")),
            Err(SendError::Rejected("HTTP 400".into()))
        );
    }
}
