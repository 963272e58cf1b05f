//! Push edge failover across processes, on a real nats-server: two edge
//! processes (`timecard-push serve`) share the NATS KV push registry with
//! the notification service, which routes pushes to them over NATS. One
//! edge node is killed with SIGKILL: its registry records expire, its
//! client reconnects to the other node, and the durable notifications
//! published meanwhile are fetched from the pull store: none is lost, none
//! is reported twice. A third edge given a live node's id refuses to start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use eventlog::TimeSource;
use eventlog::testkit::{NatsNode, nats_server_or_skip};
use notify::service::IncomingEvent;
use push::client::{ClientConfig, ClientEvent, PullSource, Via};
use push::token::{Claims, TokenKey};

/// An edge process, killed on drop.
struct Edge {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `timecard-push`, built beside this test by `cargo test --workspace`.
fn push_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("timecard-push");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p timecard-push` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

fn start_edge(id: &str, key_file: &Path, nats: &str) -> Edge {
    let (child, addr) = eventlog::testkit::spawn_announced(
        Command::new(push_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--node-id",
                id,
                "--registry",
                nats,
            ])
            .args(["--registry-ttl", "3s", "--key-file"])
            .arg(key_file),
        "listening",
    );
    Edge { child, addr }
}

/// Starts an edge that must refuse to start; its error output.
fn refused_edge(id: &str, key_file: &Path, nats: &str) -> String {
    let mut child = Command::new(push_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--node-id", id])
        .args(["--registry", nats, "--registry-ttl", "3s", "--key-file"])
        .arg(key_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second edge with node id {id} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}

fn event(member: &str, n: u32) -> IncomingEvent {
    IncomingEvent {
        kind: "live-event".into(),
        member: member.into(),
        body: format!(r#"{{"n":{n}}}"#).into_bytes(),
        ..IncomingEvent::default()
    }
}

fn config(key: &TokenKey, member: &str, edges: &[&Edge], pull: Option<SocketAddr>) -> ClientConfig {
    let token = key
        .issue(&Claims {
            member: member.into(),
            device: "tv".into(),
            device_type: "tv".into(),
            topics: vec!["news".into()],
            expires_unix_s: push::token::unix_now_s() + 600,
        })
        .unwrap();
    let mut c = ClientConfig::new(edges.iter().map(|e| e.addr.to_string()).collect(), token);
    c.topic = Some("news".into());
    // The first retry comes after at least a second: the notifications
    // published right after the kill are processed while the client is
    // away, so they can only come from the pull store.
    c.backoff_min = Duration::from_secs(1);
    c.backoff_max = Duration::from_secs(2);
    c.pull = pull.map(|addr| PullSource {
        addr: addr.to_string(),
        member: member.into(),
        device_type: Some("tv".into()),
        since: 0,
    });
    c
}

/// Collects client events until `done` says so (or panics after 30 s).
async fn until(
    rx: &mut tokio::sync::mpsc::Receiver<ClientEvent>,
    what: &str,
    mut done: impl FnMut(&ClientEvent) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap();
        if done(&e) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_edge_node_loses_no_durable_notification() {
    let Some(bin) = nats_server_or_skip().unwrap() else {
        return;
    };
    let nats = NatsNode::start_with(&bin).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = TokenKey::generate().unwrap();
    let key_file = dir.path().join("push.key");
    std::fs::write(&key_file, key.to_hex()).unwrap();
    let mut args = notify::cli::ServeArgs::defaults();
    args.common.backend = nats.url();
    args.grpc = "127.0.0.1:0".parse().unwrap();
    args.http = "127.0.0.1:0".parse().unwrap();
    args.push_key_file = Some(key_file.clone());
    args.access = access::AccessArgs::insecure();
    let run = notify::cli::start_with_clock(&args, TimeSource::system(1_000_000))
        .await
        .unwrap();
    let svc = run.service.clone();
    let a = start_edge("a", &key_file, &nats.url());
    let b = start_edge("b", &key_file, &nats.url());
    // A third node given a live node's id is refused: it would receive the
    // pushes routed to that node and find none of its connections.
    let err = refused_edge("a", &key_file, &nats.url());
    assert!(err.contains("node id \"a\" is in use"), "{err}");

    // m1's tv resumes from the pull store; m2's tv sits on node a and is
    // never started again (its record must expire).
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let client = tokio::spawn(push::client::run(
        config(&key, "m1", &[&a, &b], Some(run.http)),
        tx,
    ));
    let mut first = String::new();
    until(&mut rx, "m1 connected", |e| match e {
        ClientEvent::Connected { node, .. } => {
            first = node.clone();
            true
        }
        _ => false,
    })
    .await;
    let (victim, survivor) = if first == "a" { (a, b) } else { (b, a) };
    let (tx2, mut rx2) = tokio::sync::mpsc::channel(16);
    let stranded = tokio::spawn(push::client::run(config(&key, "m2", &[&victim], None), tx2));
    until(&mut rx2, "m2 connected", |e| {
        matches!(e, ClientEvent::Connected { .. })
    })
    .await;
    let registry = svc.edge().registry().clone();
    for m in ["m1", "m2"] {
        for _ in 0..200 {
            if registry.lookup(m, "tv").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            registry.lookup(m, "tv").map(|r| r.node.to_string()),
            Some(first.clone()),
            "{m}"
        );
    }

    // Five notifications pushed through the node over NATS.
    let mut got: BTreeMap<u64, (String, Via)> = BTreeMap::new();
    let record = |e: &ClientEvent, got: &mut BTreeMap<u64, (String, Via)>| {
        if let ClientEvent::Message { message, via } = e {
            let dup = got.insert(message.id, (message.body.get().to_owned(), *via));
            assert!(dup.is_none(), "notification {} reported twice", message.id);
        }
    };
    let published = svc.publish((0..5).map(|n| event("m1", n)).collect()).await;
    assert!(published.iter().all(Result::is_ok));
    until(&mut rx, "5 pushes", |e| {
        record(e, &mut got);
        got.len() == 5
    })
    .await;
    assert!(got.values().all(|(_, via)| *via == Via::Push), "{got:?}");

    // SIGKILL the node; stop m2's client so it cannot come back.
    stranded.abort();
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let killed = Instant::now();
    // Published while m1 is cut off: durable, so not lost.
    let published = svc.publish((5..10).map(|n| event("m1", n)).collect()).await;
    assert!(published.iter().all(Result::is_ok));
    until(&mut rx, "m1 on the surviving node with all 10", |e| {
        record(e, &mut got);
        got.len() == 10
    })
    .await;
    let route = registry.lookup("m1", "tv").expect("m1 is routable again");
    assert_ne!(route.node.to_string(), first, "m1 moved off the dead node");
    // m2's record expires within the TTL (3 s) of its last refresh.
    while registry.lookup("m2", "tv").is_some() {
        assert!(
            killed.elapsed() < Duration::from_secs(8),
            "m2's phantom record outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And pushes flow through the survivor.
    let published = svc
        .publish((10..13).map(|n| event("m1", n)).collect())
        .await;
    assert!(published.iter().all(Result::is_ok));
    until(&mut rx, "3 more", |e| {
        record(e, &mut got);
        got.len() == 13
    })
    .await;
    let bodies: Vec<String> = got.values().map(|(b, _)| b.clone()).collect();
    let mut want: Vec<String> = (0..13).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let mut sorted = bodies.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "every notification exactly once");
    // A broadcast from the notification process reaches the client on the
    // edge process over NATS.
    let news = push::frame::Frame::Push(push::frame::Message {
        id: 0,
        kind: "news".into(),
        durable: false,
        sent_ns: 0,
        body: serde_json::value::RawValue::from_string(r#"{"headline":"x"}"#.into()).unwrap(),
    })
    .encode();
    let routed = svc.edge().broadcast("news", &news).await.unwrap();
    assert_eq!((routed.local, routed.forwarded), (0, 1));
    until(
        &mut rx,
        "the broadcast",
        |e| matches!(e, ClientEvent::Message { message, .. } if message.kind == "news"),
    )
    .await;
    let pulled = got.values().filter(|(_, v)| *v == Via::Pull).count();
    assert!(pulled >= 1, "nothing came from the pull store: {got:?}");
    eprintln!(
        "failover: {} by push, {} from the pull store after the kill",
        got.values().filter(|(_, v)| *v == Via::Push).count(),
        got.values().filter(|(_, v)| *v == Via::Pull).count()
    );
    client.abort();
    drop(survivor);
    run.stop().await;
}
