//! The APNs adapter against the APNs stand-in.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{bounded, hex_token, push};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outbound::standin::{ApnsStandin, Mode};
use outbound::{
    Adapter, ApnsAdapter, ApnsConfig, Channel, ConfigError, EndpointError, SendError, apns,
};

fn adapter(s: &ApnsStandin, token: Option<&str>, connections: usize) -> ApnsAdapter {
    ApnsAdapter::new(ApnsConfig {
        endpoint: s.endpoint(),
        topic: "com.example.timecard".into(),
        bearer_token: token.map(str::to_owned),
        connections,
    })
    .unwrap()
}

#[tokio::test]
async fn delivers_with_the_apns_headers_and_payload() {
    bounded(async {
        let s = ApnsStandin::spawn_with_token("jwt-1").await;
        let a = adapter(&s, Some("jwt-1"), 1);
        assert_eq!(a.channel(), Channel::Apns);
        let mut p = push(0x0102_0304_0506_0708, &hex_token(1));
        p.urgent = false;
        p.expires_at_unix_s = 1_900_000_000;
        assert_eq!(a.send(&p).await, Ok(()));
        assert_eq!(s.count(), 1);
        assert_eq!(s.delivered(), 1);
        let r = &s.received()[0];
        assert_eq!(r.device_token, hex_token(1));
        assert_eq!(r.path, format!("/3/device/{}", hex_token(1)));
        assert_eq!(r.header("apns-topic"), Some("com.example.timecard"));
        assert_eq!(r.header("apns-push-type"), Some("alert"));
        assert_eq!(r.header("apns-priority"), Some("5"));
        assert_eq!(r.header("apns-expiration"), Some("1900000000"));
        assert_eq!(
            r.header("apns-id"),
            Some(apns::apns_id(0x0102_0304_0506_0708).as_str())
        );
        assert_eq!(
            r.header("apns-id"),
            Some("01020304-0506-0708-0000-000000000000")
        );
        assert_eq!(r.header("authorization"), Some("bearer jwt-1"));
        assert_eq!(r.body["aps"]["alert"]["title"], "new-episode");
        assert_eq!(r.body["aps"]["content-available"], 1);
        assert_eq!(r.body["timecard"]["id"], 0x0102_0304_0506_0708_u64);
        assert_eq!(r.body["timecard"]["member"], "member-7");
        assert_eq!(r.body["timecard"]["body"]["episode"], 42);

        let mut p = push(2, &hex_token(2));
        p.urgent = true;
        assert_eq!(a.send(&p).await, Ok(()));
        let r = &s.received()[1];
        assert_eq!(r.header("apns-priority"), Some("10"));
        assert_eq!(r.header("apns-expiration"), Some("0"));
    })
    .await;
}

#[tokio::test]
async fn unregistered_rejected_and_transient_answers() {
    bounded(async {
        let s = ApnsStandin::spawn().await;
        let a = adapter(&s, None, 2);
        s.mark_unregistered(&hex_token(9));
        assert_eq!(
            a.send(&push(1, &hex_token(9))).await,
            Err(SendError::Unregistered)
        );
        assert_eq!(
            a.send(&push(2, "not-a-hex-token")).await,
            Err(SendError::Rejected("BadDeviceToken".into()))
        );
        s.set_mode(Mode::Fail(503));
        assert_eq!(
            a.send(&push(3, &hex_token(3))).await,
            Err(SendError::Transient("ServiceUnavailable".into()))
        );
        s.set_mode(Mode::Fail(429));
        assert_eq!(
            a.send(&push(4, &hex_token(4))).await,
            Err(SendError::Transient("TooManyRequests".into()))
        );
        s.set_mode(Mode::Fail(500));
        assert!(matches!(
            a.send(&push(5, &hex_token(5))).await,
            Err(SendError::Transient(_))
        ));
        s.set_mode(Mode::Normal);
        assert_eq!(a.send(&push(6, &hex_token(6))).await, Ok(()));
        assert_eq!(s.delivered(), 1);
    })
    .await;
}

#[tokio::test]
async fn oversize_payload_and_unusable_tokens_are_refused_locally() {
    bounded(async {
        let s = ApnsStandin::spawn().await;
        let a = adapter(&s, None, 1);
        let mut p = push(1, &hex_token(1));
        p.body = Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(4096)));
        assert_eq!(
            a.send(&p).await,
            Err(SendError::Rejected("PayloadTooLarge".into()))
        );
        p.body = Bytes::from_static(b"[not an object]");
        assert_eq!(
            a.send(&p).await,
            Err(SendError::Rejected("InvalidBody".into()))
        );
        assert_eq!(s.count(), 0, "nothing was sent");
    })
    .await;
}

#[tokio::test]
async fn provider_token_is_checked() {
    bounded(async {
        let s = ApnsStandin::spawn_with_token("right").await;
        let wrong = adapter(&s, Some("wrong"), 1);
        assert_eq!(
            wrong.send(&push(1, &hex_token(1))).await,
            Err(SendError::Transient("InvalidProviderToken".into()))
        );
        let missing = adapter(&s, None, 1);
        assert_eq!(
            missing.send(&push(1, &hex_token(1))).await,
            Err(SendError::Transient("MissingProviderToken".into()))
        );
        assert_eq!(s.count(), 0);
    })
    .await;
}

#[test]
fn https_endpoint_is_a_construction_error() {
    let err = ApnsAdapter::new(ApnsConfig {
        endpoint: "https://api.push.apple.com".parse().unwrap(),
        topic: "t".into(),
        bearer_token: None,
        connections: 1,
    })
    .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Endpoint(EndpointError::TlsNotBuiltIn(_))
    ));
    assert!(
        err.to_string()
            .contains("TLS not built in; put a TLS-terminating proxy in front")
    );
}

#[tokio::test]
async fn stalled_request_can_be_cancelled_and_the_connection_reused() {
    bounded(async {
        let s = ApnsStandin::spawn().await;
        let a = adapter(&s, None, 1);
        s.set_mode(Mode::Stall);
        let r =
            tokio::time::timeout(Duration::from_millis(200), a.send(&push(1, &hex_token(1)))).await;
        assert!(r.is_err(), "a stalled stand-in does not answer");
        s.set_mode(Mode::Normal);
        assert_eq!(a.send(&push(2, &hex_token(2))).await, Ok(()));
    })
    .await;
}

#[tokio::test]
async fn multiplexes_concurrent_requests_over_few_connections() {
    bounded(async {
        let s = ApnsStandin::spawn().await;
        let a = std::sync::Arc::new(adapter(&s, None, 2));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..300 {
            let a = a.clone();
            set.spawn(async move { a.send(&push(i, &hex_token(i))).await });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), Ok(()));
        }
        assert_eq!(s.delivered(), 300);
    })
    .await;
}

#[tokio::test]
async fn reconnects_after_the_server_goes_away() {
    bounded(async {
        let s = ApnsStandin::spawn().await;
        let addr = s.addr();
        let a = adapter(&s, None, 1);
        assert_eq!(a.send(&push(1, &hex_token(1))).await, Ok(()));
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(
            a.send(&push(2, &hex_token(2))).await,
            Err(SendError::Transient(_))
        ));
        let s2 = ApnsStandin::spawn_on(addr, None).await;
        let mut ok = false;
        for i in 0..50 {
            if a.send(&push(10 + i, &hex_token(3))).await == Ok(()) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "the adapter reconnects");
        assert!(s2.delivered() >= 1);
    })
    .await;
}

/// method, path, headers, body, expected status, expected reason
type Case = (
    Method,
    String,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    u16,
    &'static str,
);

/// Sends one raw HTTP/2 request to the stand-in.
async fn raw(
    s: &ApnsStandin,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    let tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", s.addr()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    assert!(resp.headers().contains_key("apns-id"));
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}

#[tokio::test]
async fn stand_in_validates_like_apns() {
    bounded(async {
        let s = ApnsStandin::spawn().await;
        let tok = hex_token(1);
        let path = format!("/3/device/{tok}");
        let good: &[(&str, &str)] = &[
            ("apns-topic", "t"),
            ("apns-push-type", "alert"),
            ("apns-priority", "10"),
        ];
        let body = br#"{"aps":{"alert":"hi"}}"#;
        let cases: Vec<Case> = vec![
            (
                Method::POST,
                "/4/device/ab".into(),
                good.to_vec(),
                body.to_vec(),
                404,
                "BadPath",
            ),
            (
                Method::GET,
                path.clone(),
                good.to_vec(),
                body.to_vec(),
                405,
                "MethodNotAllowed",
            ),
            (
                Method::POST,
                "/3/device/".into(),
                good.to_vec(),
                body.to_vec(),
                400,
                "MissingDeviceToken",
            ),
            (
                Method::POST,
                "/3/device/xyz".into(),
                good.to_vec(),
                body.to_vec(),
                400,
                "BadDeviceToken",
            ),
            (
                Method::POST,
                path.clone(),
                good[1..].to_vec(),
                body.to_vec(),
                400,
                "MissingTopic",
            ),
            (
                Method::POST,
                path.clone(),
                vec![("apns-topic", "t"), ("apns-push-type", "shout")],
                body.to_vec(),
                400,
                "InvalidPushType",
            ),
            (
                Method::POST,
                path.clone(),
                vec![("apns-topic", "t"), ("apns-priority", "7")],
                body.to_vec(),
                400,
                "BadPriority",
            ),
            (
                Method::POST,
                path.clone(),
                vec![("apns-topic", "t"), ("apns-expiration", "soon")],
                body.to_vec(),
                400,
                "BadExpirationDate",
            ),
            (
                Method::POST,
                path.clone(),
                vec![("apns-topic", "t"), ("apns-id", "not-a-uuid")],
                body.to_vec(),
                400,
                "BadMessageId",
            ),
            (
                Method::POST,
                path.clone(),
                good.to_vec(),
                Vec::new(),
                400,
                "PayloadEmpty",
            ),
            (
                Method::POST,
                path.clone(),
                good.to_vec(),
                vec![b' '; 5000],
                413,
                "PayloadTooLarge",
            ),
            (
                Method::POST,
                path.clone(),
                good.to_vec(),
                b"{\"alert\":1}".to_vec(),
                400,
                "BadPayload",
            ),
            (
                Method::POST,
                path.clone(),
                good.to_vec(),
                b"{nope".to_vec(),
                400,
                "BadPayload",
            ),
        ];
        for (method, path, headers, body, status, reason) in cases {
            let (st, json) = raw(&s, method, &path, &headers, &body).await;
            assert_eq!(st.as_u16(), status, "{path} {headers:?} -> {reason}");
            assert_eq!(json["reason"], reason);
        }
        assert_eq!(s.count(), 0, "invalid requests are not recorded");
        let (st, json) = raw(&s, Method::POST, &path, good, body).await;
        assert_eq!((st, json), (StatusCode::OK, serde_json::Value::Null));
        s.mark_unregistered(&tok);
        let (st, json) = raw(&s, Method::POST, &path, good, body).await;
        assert_eq!(st.as_u16(), 410);
        assert_eq!(json["reason"], "Unregistered");
        assert!(json["timestamp"].as_u64().unwrap() > 0);
        assert_eq!(s.count(), 2);
    })
    .await;
}
