//! The APIs as a client sees them: HTTP/JSON driven by `curl` (a client we
//! did not write) and gRPC through the generated client, each with every
//! class of bad input.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use eventlog::TimeSource;
use notify::cli::{Running, ServeArgs, start_with_clock};
use notify::pb::notify_client::NotifyClient;
use notify::pb::{self, publish_result};
use tonic::Code;

async fn start(dir: &std::path::Path) -> Running {
    start_as(dir, access::AccessArgs::insecure(), false).await
}

async fn start_as(dir: &std::path::Path, access: access::AccessArgs, capture: bool) -> Running {
    let mut args = ServeArgs::defaults();
    args.common.backend = format!("embedded:{}", dir.display());
    args.grpc = "127.0.0.1:0".parse().unwrap();
    args.http = "127.0.0.1:0".parse().unwrap();
    args.shards = 2;
    args.capture.capture = capture;
    args.access = access;
    start_with_clock(&args, TimeSource::system(1_000_000))
        .await
        .unwrap()
}

/// `curl` a request; (status, body).
fn curl(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
    curl_with(addr, method, path, body, &[])
}

/// `curl` a request with extra headers; (status, body).
fn curl_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[&str],
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.args([
        "-sS",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        "--max-time",
        "20",
    ])
    .arg(format!("http://{addr}{path}"));
    if body.is_some() {
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl is installed by scripts/test.sh");
    if let Some(b) = body {
        child.stdin.take().unwrap().write_all(b).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

async fn curl_async(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, String) {
    let (method, path) = (method.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || curl(addr, &method, &path, body.as_deref()))
        .await
        .unwrap()
}

/// `curl -N` reading an SSE stream in the background (killed on drop).
struct SseCurl {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl SseCurl {
    fn start(url: &str) -> Self {
        let mut child = Command::new("curl")
            .args(["-sN", "--max-time", "60", url])
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl is installed by scripts/test.sh");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The `push` frames received until `n` arrived or `limit` passed.
    fn wait_for_pushes(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + limit;
        let mut pushes = Vec::new();
        while pushes.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            if let Some(data) = line.strip_prefix("data: ") {
                let v = json(data);
                if v["type"] == "push" {
                    pushes.push(v);
                }
            }
        }
        pushes
    }
}

impl Drop for SseCurl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_with_curl() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path()).await;
    let h = run.http;
    // An edge device: `curl -N` on the SSE endpoint with a token minted
    // with the service's key file.
    let key = push::token::TokenKey::from_file(&run.push_key_file).unwrap();
    let token = key
        .issue(&push::token::Claims {
            member: "m1".into(),
            device: "tv1".into(),
            device_type: "tv".into(),
            topics: Vec::new(),
            expires_unix_s: push::token::unix_now_s() + 600,
        })
        .unwrap();
    let sse = SseCurl::start(&format!("http://{h}/v1/sse?token={token}"));
    for _ in 0..500 {
        if run.service.edge().registry().lookup("m1", "tv1").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        run.service.edge().registry().lookup("m1", "tv1").is_some(),
        "SSE device registered"
    );
    let event = br#"{"type":"new-episode","member":"m1","targets":["tv"],"body":{"show":"Dark","episode":3}}"#;
    let (code, body) = curl_async(h, "POST", "/v1/events", Some(event.to_vec())).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(json(&body)["priority"], "medium");
    let batch = br#"{"events":[{"type":"live-event","member":"m1","body":{}},{"type":"nope","member":"m1","body":{}}]}"#;
    let (code, body) = curl_async(h, "POST", "/v1/events", Some(batch.to_vec())).await;
    assert_eq!(code, 200);
    let v = json(&body);
    assert_eq!(
        (v["accepted"].as_u64(), v["refused"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["results"][1]["kind"], "invalid");

    // Pull until both arrived; the edge mailbox got both pushes.
    let mut changes = Vec::new();
    for _ in 0..500 {
        let (code, body) = curl_async(h, "GET", "/v1/members/m1/notifications?since=0", None).await;
        assert_eq!(code, 200);
        changes = json(&body)["changes"].as_array().unwrap().clone();
        if changes.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(changes.len(), 2);
    let episode = changes.iter().find(|c| c["type"] == "new-episode").unwrap();
    assert_eq!(episode["body"]["show"], "Dark");
    assert_eq!(episode["targets"], serde_json::json!(["tv"]));
    let (_, body) = curl_async(
        h,
        "GET",
        "/v1/members/m1/notifications?since=0&device_type=phone",
        None,
    )
    .await;
    assert_eq!(
        json(&body)["changes"].as_array().unwrap().len(),
        1,
        "tv-only is hidden from phones"
    );
    // Both arrived over SSE too, as durable pushes with their ids.
    let pushes = sse.wait_for_pushes(2, Duration::from_secs(20));
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert!(
        pushes
            .iter()
            .all(|p| p["durable"] == true && p["id"].as_u64() > Some(0))
    );
    assert!(pushes.iter().any(|p| p["body"]["show"] == "Dark"));
    let id = episode["id"].as_u64().unwrap();
    let (code, _) = curl_async(
        h,
        "POST",
        &format!("/v1/members/m1/notifications/{id}/read"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (_, body) = curl_async(h, "GET", "/v1/members/m1/state", None).await;
    let state = json(&body);
    let n = state["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(n["status"], "read", "{state}");
    let (_, body) = curl_async(h, "GET", "/v1/members/m1/state?at_ns=0", None).await;
    assert!(json(&body)["notifications"].as_array().unwrap().is_empty());

    // Bad input: each with its status and a JSON error.
    let big_body = format!(
        r#"{{"type":"my-list","member":"m","body":{{"x":"{}"}}}}"#,
        "y".repeat(4_000)
    );
    let huge = vec![b' '; 2 * 1024 * 1024];
    let too_many = format!(
        r#"{{"events":[{}]}}"#,
        vec![r#"{"type":"my-list","member":"m","body":{}}"#; 1_001].join(",")
    );
    for (method, path, body, want, says) in [
        (
            "POST",
            "/v1/events",
            Some(b"{not json".to_vec()),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/v1/events",
            Some(br#"{"type":"my-list","member":"m","body":{},"colour":"red"}"#.to_vec()),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/v1/events",
            Some(br#"{"type":"my-list","member":"m","body":[1]}"#.to_vec()),
            400,
            "JSON object",
        ),
        (
            "POST",
            "/v1/events",
            Some(br#"{"type":"my-list","member":"m","priority":"urgent","body":{}}"#.to_vec()),
            400,
            "unknown priority",
        ),
        (
            "POST",
            "/v1/events",
            Some(br#"{"type":"my-list","member":"m","body":{},"idempotency_key":"x"}"#.to_vec()),
            400,
            "idempotency token",
        ),
        (
            "POST",
            "/v1/events",
            Some(big_body.into_bytes()),
            413,
            "exceeds the limit",
        ),
        ("POST", "/v1/events", Some(huge), 413, "length limit"),
        (
            "POST",
            "/v1/events",
            Some(too_many.into_bytes()),
            400,
            "at most 1000",
        ),
        (
            "GET",
            "/v1/members/m1/notifications?device_type=fridge",
            None,
            400,
            "unknown device type",
        ),
        (
            "GET",
            "/v1/members/m1/notifications?since=-1",
            None,
            400,
            "since",
        ),
        ("GET", "/v1/members/bad%20id/state", None, 400, "member id"),
        (
            "POST",
            "/v1/members/m1/notifications/1/burn",
            None,
            400,
            "read or dismiss",
        ),
        (
            "POST",
            "/v1/members/m1/notifications/99999/read",
            None,
            404,
            "no notification",
        ),
        (
            "PUT",
            "/v1/members/m1/devices/p1",
            Some(br#"{"type":"phone","channel":"pigeon"}"#.to_vec()),
            400,
            "pigeon",
        ),
        (
            "PUT",
            "/v1/members/m1/devices/p1",
            Some(br#"{"type":"phone","channel":"apns","token":"ab"}"#.to_vec()),
            400,
            "not configured",
        ),
        ("GET", "/v1/sse", None, 401, "no token"),
        (
            "GET",
            "/v1/sse?token=tc1.m.d.tv.1.00",
            None,
            401,
            "malformed",
        ),
        (
            "PUT",
            "/v1/members/m1/devices/tv9",
            Some(br#"{"type":"tv","channel":"edge"}"#.to_vec()),
            400,
            "/v1/ws",
        ),
    ] {
        let (code, text) = curl_async(h, method, path, body).await;
        assert_eq!(code, want, "{method} {path}: {text}");
        let v = json(&text);
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{method} {path}: {text}"
        );
    }
    let (code, text) = curl_async(h, "GET", "/metrics", None).await;
    assert_eq!(code, 200);
    assert!(
        text.contains("timecard_notify_ingested_total{priority=\"medium\"} 1"),
        "{text}"
    );
    assert!(text.contains("timecard_notify_refused_invalid_total"));
    let (_, status) = curl_async(h, "GET", "/v1/status", None).await;
    let status = json(&status);
    assert_eq!(status["pools"].as_array().unwrap().len(), 3);
    assert!(status["clock"].as_str().unwrap().contains("ASSUMED"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_publish_pull_state_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path()).await;
    let mut c = NotifyClient::connect(format!("http://{}", run.grpc))
        .await
        .unwrap();
    let err = c
        .register_device(pb::RegisterDeviceRequest {
            member: "m".into(),
            device_id: "d".into(),
            device_type: "tv".into(),
            channel: "smoke-signal".into(),
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let ev = |kind: &str, key: &str| pb::Event {
        r#type: kind.into(),
        member: "g1".into(),
        body: br#"{"n":1}"#.to_vec(),
        idempotency_key: key.into(),
        ..Default::default()
    };
    let key = "1700000000000000000:abc";
    let r = c
        .publish(pb::PublishRequest {
            events: vec![
                ev("my-list", ""),
                ev("unknown", ""),
                ev("my-list", "bad"),
                ev("my-list", key),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let kinds: Vec<&str> = r
        .iter()
        .map(|r| match &r.outcome {
            Some(publish_result::Outcome::Accepted(_)) => "ok",
            _ => r.error_kind.as_str(),
        })
        .collect();
    assert_eq!(kinds, ["ok", "invalid", "invalid", "ok"]);
    let err = c
        .publish(pb::PublishRequest {
            events: vec![ev("my-list", ""); 1_001],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The key from 2023 is stale for my-list (300 s): only one arrives.
    let mut pulled = Vec::new();
    for _ in 0..500 {
        pulled = c
            .pull(pb::PullRequest {
                member: "g1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .changes;
        if !pulled.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].change, "notified");
    let err = c
        .mark(pb::MarkRequest {
            member: "g1".into(),
            notification_id: 424_242,
            dismiss: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    c.mark(pb::MarkRequest {
        member: "g1".into(),
        notification_id: pulled[0].notification_id,
        dismiss: true,
    })
    .await
    .unwrap();
    let s = c
        .state_at(pb::StateAtRequest {
            member: "g1".into(),
            at_ns: i64::MAX,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.notifications.len(), 1);
    assert_eq!(s.notifications[0].status, "dismissed");

    // Malformed protobuf in a well-formed gRPC frame, sent by curl over
    // HTTP/2: a gRPC error in the trailers, and the server keeps serving.
    let garbage = [0u8, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let addr = run.grpc;
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("curl")
            .args(["-sS", "-i", "--http2-prior-knowledge", "--max-time", "20"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .args(["--data-binary", "@-"])
            .arg(format!("http://{addr}/timecard.notify.v1.Notify/Publish"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&garbage).unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    })
    .await
    .unwrap();
    assert!(
        out.contains("grpc-status: 13") || out.contains("grpc-status: 3"),
        "{out}"
    );
    assert!(out.contains("decode"), "{out}");
    let again = c
        .pull(pb::PullRequest {
            member: "g1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again.into_inner().changes.len(), 2);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_calls_need_the_api_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("api-token");
    access::ensure_token_file(&token_path).unwrap();
    let secret = std::fs::read_to_string(&token_path).unwrap();
    let good = format!("Authorization: Bearer {}", secret.trim());
    let run = start_as(
        &dir.path().join("data"),
        access::AccessArgs::token_file(&token_path),
        true,
    )
    .await;
    let h = run.http;
    let event = br#"{"type":"live-event","member":"m1","body":{"n":1}}"#;
    let device = br#"{"type":"phone","channel":"apns","token":"abc"}"#;
    let writes: [(&str, &str, Option<&[u8]>); 5] = [
        ("POST", "/v1/events", Some(event)),
        ("POST", "/v1/members/m1/notifications/1/read", None),
        ("PUT", "/v1/members/m1/devices/d1", Some(device)),
        ("DELETE", "/v1/members/m1/devices/d1", None),
        ("GET", "/v1/capture", None),
    ];
    for (method, path, body) in writes {
        for headers in [
            &[][..],
            &["Authorization: Bearer not-the-token-0123456789"][..],
            &["Authorization: Basic dXNlcjpwYXNz"][..],
        ] {
            let (status, answer) =
                tokio::task::spawn_blocking(move || curl_with(h, method, path, body, headers))
                    .await
                    .unwrap();
            assert_eq!(status, 401, "{method} {path} {headers:?}: {answer}");
            assert!(answer.contains("unauthenticated"), "{answer}");
        }
    }
    // Reads stay open, and nothing refused was published.
    let (status, answer) = curl_async(h, "GET", "/v1/members/m1/notifications", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(json(&answer)["changes"], serde_json::json!([]));
    let accepted = {
        let good = good.clone();
        tokio::task::spawn_blocking(move || {
            curl_with(h, "POST", "/v1/events", Some(event), &[good.as_str()])
        })
        .await
        .unwrap()
    };
    assert_eq!(accepted.0, 202, "{}", accepted.1);

    // gRPC: Publish, RegisterDevice and Mark answer UNAUTHENTICATED.
    let mut c = NotifyClient::connect(format!("http://{}", run.grpc))
        .await
        .unwrap();
    let publish = || pb::PublishRequest {
        events: vec![pb::Event {
            r#type: "live-event".into(),
            member: "m2".into(),
            body: b"{}".to_vec(),
            ..Default::default()
        }],
    };
    let refused = [
        c.publish(publish()).await.unwrap_err(),
        c.register_device(pb::RegisterDeviceRequest {
            member: "m2".into(),
            device_id: "d".into(),
            device_type: "tv".into(),
            channel: "apns".into(),
            token: String::new(),
        })
        .await
        .unwrap_err(),
        c.mark(pb::MarkRequest {
            member: "m1".into(),
            notification_id: 1,
            dismiss: false,
        })
        .await
        .unwrap_err(),
    ];
    for status in refused {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let pulled = c
        .pull(pb::PullRequest {
            member: "m2".into(),
            since: 0,
            limit: 10,
            device_type: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pulled.changes.is_empty());
    let mut request = tonic::Request::new(publish());
    access::ClientToken::from_file(&token_path)
        .unwrap()
        .authorize(&mut request);
    c.publish(request).await.unwrap();
    run.stop().await;
}
