//! The push edge end to end on loopback: a Python `websockets` client (an
//! implementation nobody here wrote), authentication refusals, a slow
//! consumer that must not slow anyone else, drain and lifetime reconnects
//! with the Rust client.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use push::client::{ClientConfig, ClientEvent};
use push::edge::{EdgeConfig, EdgeNode};
use push::frame::{Frame, Message};
use push::processor::Processor;
use push::registry::Registry;
use push::token::{Claims, TokenKey};

fn token(key: &TokenKey, member: &str, device: &str, device_type: &str, ttl_s: u64) -> String {
    key.issue(&Claims {
        member: member.into(),
        device: device.into(),
        device_type: device_type.into(),
        topics: vec!["all".into()],
        expires_unix_s: push::token::unix_now_s() + ttl_s,
    })
    .unwrap()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` a request; (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/test.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A venv with `websockets` (made once per target directory); its python.
fn python_with_websockets() -> PathBuf {
    eventlog::testkit::python_venv(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("push-pyvenv"),
        &["websockets"],
        "websockets",
    )
}

/// Starts `timecard-push serve`; returns it and its address.
fn serve(key_file: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let (child, addr) = eventlog::testkit::spawn_announced(
        Command::new(env!("CARGO_BIN_EXE_timecard-push"))
            .args(["serve", "--listen", "127.0.0.1:0", "--key-file"])
            .arg(key_file)
            .args(extra),
        "listening",
    );
    (Proc(child), addr)
}

#[test]
fn a_python_websockets_client_authenticates_and_receives_pushes() {
    let python = python_with_websockets();
    let dir = tempfile::tempdir().unwrap();
    let key = TokenKey::generate().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, key.to_hex()).unwrap();
    let (_server, addr) = serve(&key_file, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ws_client.py");
    let run_client = |tok: &str, count: &str| {
        Command::new(&python)
            .arg(&script)
            .arg(format!("ws://{addr}/v1/ws?token={tok}"))
            .arg(count)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Refused before the upgrade: forged, expired, publisher tokens.
    let mut forged = token(&key, "m1", "py", "tv", 600);
    forged.replace_range(4..6, "m9");
    let expired = key
        .issue(&Claims {
            member: "m1".into(),
            device: "py".into(),
            device_type: "tv".into(),
            topics: Vec::new(),
            expires_unix_s: 1,
        })
        .unwrap();
    for (bad, status) in [
        (forged.as_str(), "401"),
        (expired.as_str(), "401"),
        ("nonsense", "401"),
        (&token(&key, "ops", "p", "publisher", 600), "403"),
    ] {
        let out = run_client(bad, "1").wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("REFUSED {status}"),
            "token {bad:?}"
        );
    }

    // A good token: hello, then the pushes published over HTTP.
    let mut client = run_client(&token(&key, "m1", "py", "tv", 600), "2");
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let hello: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello", "{hello}");
    assert!(
        hello["node"].as_str().unwrap().starts_with("edge-"),
        "{hello}"
    );
    let publisher = token(&key, "ops", "pub", "publisher", 600);
    let auth = format!("Authorization: Bearer {publisher}");
    let url = format!("http://{addr}/v1/push");
    let (code, body) = curl(&[
        "-H",
        &auth,
        "-d",
        r#"{"member":"m1","kind":"greeting","body":{"text":"héllo"},"durable":true,"id":7}"#,
        &url,
    ]);
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"forwarded":0,"local":1,"offline":0}"#)
    );
    let (code, body) = curl(&[
        "-H",
        &auth,
        "-d",
        r#"[{"member":"nobody","kind":"k","body":1},{"member":"m1","device":"py","kind":"second","body":[1,2]}]"#,
        &url,
    ]);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(r#"{"forwarded":0,"local":0,"offline":1}"#),
        "{body}"
    );
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (
            &first["kind"],
            &first["body"]["text"],
            &first["id"],
            &first["durable"]
        ),
        (&"greeting".into(), &"héllo".into(), &7.into(), &true.into())
    );
    assert_eq!(second["body"], serde_json::json!([1, 2]));
    assert!(client.wait().unwrap().success());

    // Topics are in the signed token: others are refused.
    let sse = |topic: &str| {
        format!(
            "http://{addr}/v1/sse?token={}&topic={topic}",
            token(&key, "m1", "s", "tv", 600)
        )
    };
    let (code, body) = curl(&[&sse("secret")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("does not allow topic"), "{body}");

    // Publishing needs a publisher token; bad requests get clear errors.
    let device = format!(
        "Authorization: Bearer {}",
        token(&key, "m1", "x", "tv", 600)
    );
    for (args, want, says) in [
        (vec!["-d", "{}", url.as_str()], 401, "no token"),
        (
            vec!["-H", device.as_str(), "-d", "{}", url.as_str()],
            403,
            "publisher",
        ),
        (
            vec!["-H", auth.as_str(), "-d", "{", url.as_str()],
            400,
            "bad publish request",
        ),
        (
            vec![
                "-H",
                auth.as_str(),
                "-d",
                r#"{"kind":"k","body":1}"#,
                url.as_str(),
            ],
            200,
            "member (unicast) or topic",
        ),
    ] {
        let (code, body) = curl(&args);
        assert_eq!(code, want, "{args:?}: {body}");
        assert!(body.contains(says), "{args:?}: {body}");
    }
    let (code, status) = curl(&[&format!("http://{addr}/v1/status")]);
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["refused"]["auth"].as_u64() >= Some(3), "{status}");
    // The same counters on /metrics, under the push edge's names.
    let (code, metrics) = curl(&[&format!("http://{addr}/metrics")]);
    assert_eq!(code, 200);
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(value("timecard_push_refused_total{reason=\"auth\"}") >= 3.0);
    assert!(value("timecard_push_accepted_total{transport=\"websocket\"}") >= 1.0);
    assert!(value("timecard_push_frames_written_total") >= 1.0);
    assert!(metrics.contains("# TYPE timecard_push_connections gauge\n"));
    assert!(metrics.contains(&format!(
        "timecard_build_info{{daemon=\"push\",version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    )));
}

/// An edge node served in process on loopback.
async fn node_on_loopback(
    id: &str,
    key: &TokenKey,
    registry: &Registry,
    tweak: impl FnOnce(&mut EdgeConfig),
) -> (EdgeNode, SocketAddr) {
    let mut config = EdgeConfig {
        node_id: id.into(),
        ..EdgeConfig::default()
    };
    tweak(&mut config);
    let node = EdgeNode::new(config, key.clone(), registry.clone()).unwrap();
    let app = push::http::router(Processor::new(registry.clone(), Some(node.clone()), None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let timeout = node.config().write_timeout;
    let listener = push::net::TimeoutListener::new(listener, timeout);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (node, addr)
}

fn frame(kind: &str, body: &str) -> push::frame::Encoded {
    Frame::Push(Message {
        id: 0,
        kind: kind.into(),
        durable: false,
        sent_ns: 0,
        body: serde_json::value::RawValue::from_string(body.into()).unwrap(),
    })
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_dropped_and_does_not_slow_the_others() {
    let key = TokenKey::generate().unwrap();
    let registry = Registry::embedded(Duration::from_secs(30));
    let (node, addr) = node_on_loopback("e1", &key, &registry, |c| {
        c.send_buffer = 16;
        c.write_timeout = Duration::from_secs(2);
    })
    .await;
    // The slow device completes the handshake, then never reads.
    let url = |m: &str| {
        format!(
            "ws://{addr}/v1/ws?token={}&topic=all",
            token(&key, m, "d", "tv", 600)
        )
    };
    let (_slow, _) = tokio_tungstenite::connect_async(url("slow")).await.unwrap();
    let (fast_tx, mut fast) = tokio::sync::mpsc::channel(1024);
    let fast_url = url("fast");
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let (mut ws, _) = tokio_tungstenite::connect_async(fast_url).await.unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if m.is_text() && fast_tx.send(m.into_text().unwrap()).await.is_err() {
                break;
            }
        }
    });
    let hello = tokio::time::timeout(Duration::from_secs(10), fast.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(hello.contains("hello"));
    // Broadcasts of 4 KiB, paced at what the fast device reads, until the
    // slow device (whose socket buffers fill up first) is dropped, and 4 000
    // more: the fast one gets every frame. Bounded at 64 MiB.
    let body = format!("\"{}\"", "x".repeat(4_096));
    let f = frame("bulk", &body);
    let stats = node.stats();
    let (mut sent, mut got, mut after_drop) = (0u64, 0u64, 0u64);
    while after_drop < 4_000 && sent < 16_384 {
        for _ in 0..8 {
            node.broadcast("all", &f);
        }
        sent += 8;
        if stats.dropped_slow.load(Ordering::Relaxed) > 0 {
            after_drop += 8;
        }
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_secs(10), fast.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => break,
            }
        }
    }
    assert_eq!(got, sent, "the fast device lost frames");
    assert!(
        after_drop >= 4_000,
        "the slow device was never dropped: {}",
        node.status()
    );
    assert_eq!(
        stats.dropped_slow.load(Ordering::Relaxed),
        1,
        "{}",
        node.status()
    );
    // Its socket goes too: the write it is stuck in times out (2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.status()["open_sockets"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the slow socket stayed open: {}",
            node.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        registry.lookup("slow", "d").is_none(),
        "the slow device's route is gone"
    );
    assert!(registry.lookup("fast", "d").is_some());
}

async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<ClientEvent>, what: &str) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap()
}

async fn connected(rx: &mut tokio::sync::mpsc::Receiver<ClientEvent>) -> String {
    loop {
        if let ClientEvent::Connected { node, .. } = next_event(rx, "a connection").await {
            return node;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_and_lifetimes_move_clients_to_another_node() {
    let key = TokenKey::generate().unwrap();
    let registry = Registry::embedded(Duration::from_secs(30));
    let tweak = |c: &mut EdgeConfig| {
        c.drain_period = Duration::from_millis(200);
        // Long enough that the lifetime cannot end the first connection
        // before the drain does on a loaded machine (CI saw that at 2 s).
        c.max_lifetime = Duration::from_secs(5);
    };
    let (a, a_addr) = node_on_loopback("a", &key, &registry, tweak).await;
    let (b, b_addr) = node_on_loopback("b", &key, &registry, tweak).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let config = ClientConfig::new(
        vec![a_addr.to_string(), b_addr.to_string()],
        token(&key, "m1", "tv", "tv", 600),
    );
    let client = tokio::spawn(push::client::run(config, tx));
    let first = connected(&mut rx).await;
    let (here, there) = if first == "a" { (&a, &b) } else { (&b, &a) };
    assert_eq!(registry.lookup("m1", "tv").unwrap().node, *here.id());
    // A message through the node holding the client.
    assert_eq!(here.deliver("m1", None, &frame("k", "1")), 1);
    loop {
        if let ClientEvent::Message { message, .. } = next_event(&mut rx, "the message").await {
            assert_eq!(message.body.get(), "1");
            break;
        }
    }
    // Drain that node: it tells the client to go and refuses it after.
    here.drain().await;
    assert!(here.is_draining());
    assert_eq!(connected(&mut rx).await, **there.id());
    // The drained node's bookkeeping of the closed socket can trail the
    // client's reconnect on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (here.stats().closed_drain.load(Ordering::Relaxed) == 0 || here.connections() > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(here.stats().closed_drain.load(Ordering::Relaxed), 1);
    assert_eq!(here.connections(), 0);
    assert_eq!(registry.lookup("m1", "tv").unwrap().node, *there.id());
    // The lifetime (3.75 to 5 s) ends the connection on the other node;
    // the client comes back to it (the drained node refuses).
    let t0 = Instant::now();
    let mut reasons = Vec::new();
    loop {
        match next_event(&mut rx, "a lifetime reconnect").await {
            ClientEvent::Disconnected { reason, .. } => reasons.push(reason),
            ClientEvent::Connected { node, .. } if !reasons.is_empty() => {
                assert_eq!(node, **there.id());
                break;
            }
            _ => {}
        }
    }
    assert!(reasons[0].contains("Lifetime"), "{reasons:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{reasons:?}");
    assert_eq!(there.stats().closed_lifetime.load(Ordering::Relaxed), 1);
    // Any attempt on the drained node in between was refused with 503.
    let refused = reasons.iter().filter(|r| r.contains("503")).count() as u64;
    assert_eq!(
        here.stats().refused_busy.load(Ordering::Relaxed),
        refused,
        "{reasons:?}"
    );
    assert_eq!(registry.lookup("m1", "tv").unwrap().node, *there.id());
    client.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_three_missed_heartbeats() {
    use futures_util::StreamExt;
    let key = TokenKey::generate().unwrap();
    let registry = Registry::embedded(Duration::from_secs(30));
    let (node, addr) = node_on_loopback("e1", &key, &registry, |c| {
        c.heartbeat = Duration::from_millis(200);
    })
    .await;
    let url = |m: &str| format!("ws://{addr}/v1/ws?token={}", token(&key, m, "d", "tv", 600));
    // Never reads, so never answers a ping.
    let (_silent, _) = tokio_tungstenite::connect_async(url("silent"))
        .await
        .unwrap();
    // Reads (tungstenite answers pings while reading).
    let (mut alive, _) = tokio_tungstenite::connect_async(url("alive"))
        .await
        .unwrap();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = alive.next().await {} });
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.stats().closed_idle.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the silent client was never closed: {}",
            node.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(node.stats().closed_idle.load(Ordering::Relaxed), 1);
    assert_eq!(node.connections(), 1, "{}", node.status());
    assert!(registry.lookup("silent", "d").is_none());
    assert!(registry.lookup("alive", "d").is_some());
    reader.abort();
}
