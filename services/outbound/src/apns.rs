//! Apple Push Notification service adapter (HTTP/2 provider API).
//!
//! `POST /3/device/<device_token>` with the headers `apns-topic`,
//! `apns-push-type: alert`, `apns-priority: 10|5`, `apns-expiration`,
//! `apns-id` and (when configured) `authorization: bearer <JWT>`, and the JSON
//! payload
//!
//! ```json
//! {"aps":{"alert":{"title":"<kind>"},"content-available":1},
//!  "timecard":{"id":<notification_id>,"member":"<member>","body":<body object>}}
//! ```
//!
//! Payloads over 4096 bytes are refused locally (`Rejected("PayloadTooLarge")`).
//!
//! Answers: 200 → delivered; 410 → [`SendError::Unregistered`]; 429 and 5xx →
//! [`SendError::Transient`]; 403 with a provider-authentication reason
//! (`InvalidProviderToken`, `ExpiredProviderToken`, `MissingProviderToken`,
//! `BadCertificate`, `BadCertificateEnvironment`, `Forbidden`) →
//! [`SendError::Transient`] because it fails every push of the channel and
//! should open the breaker; other 4xx → [`SendError::Rejected`] with Apple's
//! reason. `BadDeviceToken` and `DeviceTokenNotForTopic` stay `Rejected`, not
//! `Unregistered`: they also appear when the environment (sandbox vs
//! production) or topic is misconfigured, and must not make the caller delete
//! healthy devices.
//!
//! Only `http://` endpoints (h2c with prior knowledge) are supported; put a
//! TLS-terminating relay in front of `https://api.push.apple.com`.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;

use crate::transport::{ConfigError, H2Pool};
use crate::{Adapter, Channel, Push, SendError};

/// Largest payload APNs accepts for a regular (non-VoIP) notification.
pub const MAX_PAYLOAD: usize = 4096;

/// Configuration of an [`ApnsAdapter`].
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    /// `http://host:port[/prefix]` of APNs or a relay (production is `https://api.push.apple.com`, which needs a TLS relay).
    pub endpoint: Uri,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Provider authentication token (JWT, generated outside), sent as `authorization: bearer <token>`.
    pub bearer_token: Option<String>,
    /// HTTP/2 connections to multiplex requests over (at least 1).
    pub connections: usize,
}

/// The APNs adapter.
pub struct ApnsAdapter {
    pool: H2Pool,
    topic: HeaderValue,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for ApnsAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsAdapter")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ApnsAdapter {
    /// Builds the adapter; connections are opened on first use.
    ///
    /// # Errors
    ///
    /// An `https://` or malformed endpoint, or a topic / token that is not a
    /// valid header value.
    pub fn new(config: ApnsConfig) -> Result<Self, ConfigError> {
        let pool = H2Pool::new(&config.endpoint, config.connections)?;
        let topic =
            HeaderValue::from_str(&config.topic).map_err(|_| ConfigError::BadValue("topic"))?;
        let authorization = config
            .bearer_token
            .map(|t| HeaderValue::from_str(&format!("bearer {t}")))
            .transpose()
            .map_err(|_| ConfigError::BadValue("bearer_token"))?;
        Ok(ApnsAdapter {
            pool,
            topic,
            authorization,
        })
    }

    async fn deliver(&self, push: &Push) -> Result<(), SendError> {
        let payload = payload(push)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(SendError::Rejected("PayloadTooLarge".into()));
        }
        let token = &*push.device_token;
        if token.is_empty() {
            return Err(SendError::Rejected("MissingDeviceToken".into()));
        }
        // Anything but unreserved URI characters could change the path or add a query.
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err(SendError::Rejected("BadDeviceToken".into()));
        }
        let uri = self
            .pool
            .uri(&format!("/3/device/{}", push.device_token))
            .ok_or_else(|| SendError::Rejected("BadDeviceToken".into()))?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("apns-topic", self.topic.clone())
            .header("apns-push-type", "alert")
            .header("apns-priority", if push.urgent { "10" } else { "5" })
            .header("apns-expiration", push.expires_at_unix_s.max(0))
            .header("apns-id", apns_id(push.notification_id))
            .header(CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| SendError::Rejected(format!("request: {e}")))?;
        let answer = self.pool.send(req, true).await?;
        classify(answer.status, answer.body.as_deref())
    }
}

impl Adapter for ApnsAdapter {
    fn channel(&self) -> Channel {
        Channel::Apns
    }

    fn send(&self, push: &Push) -> impl Future<Output = Result<(), SendError>> + Send {
        self.deliver(push)
    }
}

/// The `apns-id` (UUID-shaped, lower-case hex) carrying `notification_id`:
/// `hhhhhhhh-mmmm-llll-0000-000000000000` from its high 32, middle 16 and low 16 bits.
#[must_use]
pub fn apns_id(notification_id: u64) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-0000-000000000000",
        notification_id >> 32,
        (notification_id >> 16) & 0xffff,
        notification_id & 0xffff
    )
}

/// The JSON payload of `push` (see the module docs).
///
/// # Errors
///
/// `Rejected("InvalidBody")` when the push body is not a JSON object.
pub fn payload(push: &Push) -> Result<Vec<u8>, SendError> {
    let body = json_object(&push.body).ok_or_else(|| SendError::Rejected("InvalidBody".into()))?;
    let mut out = Vec::with_capacity(96 + push.kind.len() + push.member.len() + body.len());
    out.extend_from_slice(br#"{"aps":{"alert":{"title":"#);
    write_json_str(&mut out, &push.kind);
    out.extend_from_slice(br#"},"content-available":1},"timecard":{"id":"#);
    out.extend_from_slice(push.notification_id.to_string().as_bytes());
    out.extend_from_slice(br#","member":"#);
    write_json_str(&mut out, &push.member);
    out.extend_from_slice(br#","body":"#);
    out.extend_from_slice(body);
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// `body` trimmed, if it is one valid JSON object.
pub(crate) fn json_object(body: &[u8]) -> Option<&[u8]> {
    let trimmed = body.trim_ascii();
    if trimmed.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).ok()?;
    Some(trimmed)
}

pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

const PROVIDER_AUTH_REASONS: [&str; 6] = [
    "InvalidProviderToken",
    "ExpiredProviderToken",
    "MissingProviderToken",
    "BadCertificate",
    "BadCertificateEnvironment",
    "Forbidden",
];

/// Maps an APNs answer to the adapter's result (see the module docs).
///
/// # Errors
///
/// Every status but 200.
pub fn classify(status: StatusCode, body: Option<&[u8]>) -> Result<(), SendError> {
    if status == StatusCode::OK {
        return Ok(());
    }
    let reason = body
        .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
        .and_then(|e| e.reason)
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    match status.as_u16() {
        410 => Err(SendError::Unregistered),
        429 | 500..=599 => Err(SendError::Transient(reason)),
        403 if PROVIDER_AUTH_REASONS.contains(&reason.as_str()) => {
            Err(SendError::Transient(reason))
        }
        400..=499 => Err(SendError::Rejected(reason)),
        other => Err(SendError::Transient(format!(
            "unexpected HTTP status {other}"
        ))),
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    fn push(body: &'static str) -> Push {
        Push {
            notification_id: 0x0123_4567_89ab_cdef,
            member: Arc::from("m\"1"),
            device_id: Arc::from("d1"),
            device_token: Arc::from("ab"),
            urgent: true,
            kind: Arc::from("new-episode"),
            body: Bytes::from_static(body.as_bytes()),
            expires_at_unix_s: 0,
            created: Instant::now(),
        }
    }

    #[test]
    fn payload_shape() {
        let p = payload(&push(" {\"x\": [1, 2]} ")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["aps"]["alert"]["title"], "new-episode");
        assert_eq!(v["aps"]["content-available"], 1);
        assert_eq!(v["timecard"]["id"], 0x0123_4567_89ab_cdef_u64);
        assert_eq!(v["timecard"]["member"], "m\"1");
        assert_eq!(v["timecard"]["body"]["x"][1], 2);
        assert_eq!(
            payload(&push("[1]")),
            Err(SendError::Rejected("InvalidBody".into()))
        );
        assert!(payload(&push("{\"x\":")).is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(
            apns_id(0x0123_4567_89ab_cdef),
            "01234567-89ab-cdef-0000-000000000000"
        );
        assert_eq!(apns_id(1), "00000000-0000-0001-0000-000000000000");
    }

    #[test]
    fn answers() {
        let st = |c| StatusCode::from_u16(c).unwrap();
        assert_eq!(classify(st(200), Some(b"junk")), Ok(()));
        assert_eq!(classify(st(410), None), Err(SendError::Unregistered));
        assert_eq!(
            classify(st(400), Some(br#"{"reason":"BadDeviceToken"}"#)),
            Err(SendError::Rejected("BadDeviceToken".into()))
        );
        assert_eq!(
            classify(st(400), Some(b"<html>")),
            Err(SendError::Rejected("HTTP 400".into()))
        );
        assert_eq!(
            classify(st(403), Some(br#"{"reason":"ExpiredProviderToken"}"#)),
            Err(SendError::Transient("ExpiredProviderToken".into()))
        );
        assert_eq!(
            classify(st(503), Some(br#"{"reason":"ServiceUnavailable"}"#)),
            Err(SendError::Transient("ServiceUnavailable".into()))
        );
        assert!(matches!(
            classify(st(302), None),
            Err(SendError::Transient(_))
        ));
    }
}
