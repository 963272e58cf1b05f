//! The FCM adapter against the FCM stand-in.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{bounded, push};
use outbound::standin::{FcmStandin, Mode};
use outbound::{Adapter, Channel, FcmAdapter, FcmConfig, SendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROJECT: &str = "timecard-test";
const TOKEN: &str = "fcm-token:APA91b_xyz-1";

fn adapter(s: &FcmStandin, project: &str, token: Option<&str>) -> FcmAdapter {
    FcmAdapter::new(FcmConfig {
        endpoint: s.endpoint(),
        project_id: project.into(),
        bearer_token: token.map(str::to_owned),
        connections: 2,
    })
    .unwrap()
}

#[tokio::test]
async fn delivers_an_http_v1_message() {
    bounded(async {
        let s = FcmStandin::spawn_with_token(PROJECT, "ya29.token").await;
        let a = adapter(&s, PROJECT, Some("ya29.token"));
        assert_eq!(a.channel(), Channel::Fcm);
        let mut p = push(77, TOKEN);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        p.expires_at_unix_s = now + 3600;
        assert_eq!(a.send(&p).await, Ok(()));
        assert_eq!(s.delivered(), 1);
        let r = &s.received()[0];
        assert_eq!(r.path, format!("/v1/projects/{PROJECT}/messages:send"));
        assert_eq!(r.device_token, TOKEN);
        assert_eq!(r.header("authorization"), Some("Bearer ya29.token"));
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
        let m = &r.body["message"];
        assert_eq!(m["token"], TOKEN);
        assert_eq!(m["data"]["kind"], "new-episode");
        assert_eq!(m["data"]["id"], "77");
        assert_eq!(m["data"]["member"], "member-7");
        let inner: serde_json::Value =
            serde_json::from_str(m["data"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(inner["episode"], 42);
        assert_eq!(m["android"]["priority"], "HIGH");
        let ttl: i64 = m["android"]["ttl"]
            .as_str()
            .unwrap()
            .strip_suffix('s')
            .unwrap()
            .parse()
            .unwrap();
        assert!((3500..=3600).contains(&ttl), "ttl {ttl}");

        p.urgent = false;
        p.expires_at_unix_s = 0;
        assert_eq!(a.send(&p).await, Ok(()));
        let m = &s.received()[1].body["message"];
        assert_eq!(m["android"]["priority"], "NORMAL");
        assert!(m["android"].get("ttl").is_none());
    })
    .await;
}

#[tokio::test]
async fn unregistered_rejected_and_transient_answers() {
    bounded(async {
        let s = FcmStandin::spawn(PROJECT).await;
        let a = adapter(&s, PROJECT, None);
        s.mark_unregistered("dead-token");
        assert_eq!(
            a.send(&push(1, "dead-token")).await,
            Err(SendError::Unregistered)
        );
        match a.send(&push(2, "bad token!")).await {
            Err(SendError::Rejected(m)) => {
                assert!(m.contains("not a valid FCM registration token"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        s.set_mode(Mode::Fail(503));
        assert_eq!(
            a.send(&push(3, TOKEN)).await,
            Err(SendError::Transient("UNAVAILABLE".into()))
        );
        s.set_mode(Mode::Fail(429));
        assert_eq!(
            a.send(&push(4, TOKEN)).await,
            Err(SendError::Transient("QUOTA_EXCEEDED".into()))
        );
        s.set_mode(Mode::Fail(500));
        assert!(matches!(
            a.send(&push(5, TOKEN)).await,
            Err(SendError::Transient(_))
        ));
        s.set_mode(Mode::Fail(404));
        assert_eq!(a.send(&push(6, TOKEN)).await, Err(SendError::Unregistered));
        s.set_mode(Mode::Normal);
        assert_eq!(a.send(&push(7, TOKEN)).await, Ok(()));
        let mut p = push(8, TOKEN);
        p.body = Bytes::from_static(b"\"a string\"");
        assert_eq!(
            a.send(&p).await,
            Err(SendError::Rejected("InvalidBody".into()))
        );
    })
    .await;
}

#[tokio::test]
async fn auth_and_project_errors_are_channel_failures() {
    bounded(async {
        let s = FcmStandin::spawn_with_token(PROJECT, "right").await;
        assert_eq!(
            adapter(&s, PROJECT, Some("wrong"))
                .send(&push(1, TOKEN))
                .await,
            Err(SendError::Transient("UNAUTHENTICATED".into()))
        );
        assert_eq!(
            adapter(&s, PROJECT, None).send(&push(1, TOKEN)).await,
            Err(SendError::Transient("UNAUTHENTICATED".into()))
        );
        assert!(matches!(
            adapter(&s, "other-project", Some("right"))
                .send(&push(1, TOKEN))
                .await,
            Err(SendError::Transient(_))
        ));
        assert_eq!(s.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn stalled_request_can_be_cancelled() {
    bounded(async {
        let s = FcmStandin::spawn(PROJECT).await;
        let a = adapter(&s, PROJECT, None);
        s.set_mode(Mode::Stall);
        let r = tokio::time::timeout(Duration::from_millis(200), a.send(&push(1, TOKEN))).await;
        assert!(r.is_err());
        s.set_mode(Mode::Normal);
        assert_eq!(a.send(&push(2, TOKEN)).await, Ok(()));
        assert_eq!(s.count(), 2);
    })
    .await;
}

/// One HTTP/1.1 request over a raw socket; returns the status line and body.
async fn http1(s: &FcmStandin, auth: &str, body: &str) -> (String, serde_json::Value) {
    let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let req = format!(
        "POST /v1/projects/{PROJECT}/messages:send HTTP/1.1\r\nhost: fcm\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    let status = out.lines().next().unwrap().to_owned();
    let json = out
        .split("\r\n\r\n")
        .nth(1)
        .map(|b| serde_json::from_str(b).unwrap())
        .unwrap();
    (status, json)
}

#[tokio::test]
async fn stand_in_speaks_http1_and_validates_like_fcm() {
    bounded(async {
        let s = FcmStandin::spawn_with_token(PROJECT, "tok").await;
        let ok = r#"{"message":{"token":"abc:123","data":{"k":"v"},"android":{"priority":"HIGH","ttl":"30s"}}}"#;
        let (status, json) = http1(&s, "Bearer tok", ok).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(json["name"].as_str().unwrap().starts_with(&format!("projects/{PROJECT}/messages/")));
        let (status, json) = http1(&s, "Bearer nope", ok).await;
        assert!(status.starts_with("HTTP/1.1 401"));
        assert_eq!(json["error"]["status"], "UNAUTHENTICATED");
        let bad = [
            r#"{"message":{"token":"abc","data":{"n":1}}}"#,
            r#"{"message":{"data":{"k":"v"}}}"#,
            r#"{"message":{"token":"abc","data":{"from":"x"}}}"#,
            r#"{"message":{"token":"abc","android":{"priority":"URGENT"}}}"#,
            r#"{"message":{"token":"abc","android":{"ttl":"60"}}}"#,
            r#"{"message":"#,
        ];
        for b in bad {
            let (status, json) = http1(&s, "Bearer tok", b).await;
            assert!(status.starts_with("HTTP/1.1 400"), "{b}: {status}");
            assert_eq!(json["error"]["status"], "INVALID_ARGUMENT", "{b}");
        }
        s.mark_unregistered("abc:123");
        let (status, json) = http1(&s, "Bearer tok", ok).await;
        assert!(status.starts_with("HTTP/1.1 404"));
        assert_eq!(json["error"]["details"][0]["errorCode"], "UNREGISTERED");
        assert_eq!(s.count(), 2);
    })
    .await;
}
