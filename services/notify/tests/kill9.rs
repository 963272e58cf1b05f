//! The pipeline as a process, killed with SIGKILL three times while
//! producers publish and the processors run, restarted on the same data
//! directory. Producers retry unacknowledged events with the same
//! idempotency key, as a real producer does. In the end every acknowledged
//! event is in its member's store exactly once: nothing lost, and the
//! retries of events that were durable before the kill are caught by the
//! de-duplication window rebuilt from the log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventlog::testkit::spawn_service;
use eventlog::{IdempotencyToken, TimeSource};
use notify::pb::notify_client::NotifyClient;
use notify::pb::{Event, PublishRequest, PullRequest, publish_result};

const MEMBERS: u64 = 100;
const WRITERS: u64 = 6;
const PER_WRITER: u64 = 800;
const BATCH: u64 = 20;

struct Server {
    child: Child,
    grpc: SocketAddr,
}

impl Drop for Server {
    /// A failing assertion must not leave the server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, port: u16) -> Server {
    let (child, grpc) = spawn_service(
        Command::new(env!("CARGO_BIN_EXE_timecard-notify"))
            .args(["serve", "--insecure", "--shards", "2", "--backend"])
            .arg(format!("embedded:{}", dir.display()))
            .args([
                "--grpc",
                &format!("127.0.0.1:{port}"),
                "--http",
                "127.0.0.1:0",
            ]),
    );
    Server { child, grpc }
}

async fn connect(addr: SocketAddr) -> NotifyClient<tonic::transport::Channel> {
    for _ in 0..1_000 {
        if let Ok(c) = NotifyClient::connect(format!("http://{addr}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot reach {addr}");
}

fn event(key: &str, n: u64) -> Event {
    Event {
        r#type: "my-list".into(),
        member: format!("m{}", n % MEMBERS),
        body: format!(r#"{{"key":"{key}"}}"#).into_bytes(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event_and_delivers_retries_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), 0);
    let addr = first.grpc;
    let server = Arc::new(Mutex::new(first));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let clock = TimeSource::system(1_000_000);

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (acked, clock) = (acked.clone(), clock.clone());
        writers.push(tokio::spawn(async move {
            let now = clock.now().unwrap().latest_ns;
            let mut pending: Vec<(String, u64)> = (0..PER_WRITER)
                .map(|i| {
                    let key = IdempotencyToken {
                        event_time_ns: now,
                        nonce: u128::from(w << 32 | i),
                    };
                    (key.to_string(), w * PER_WRITER + i)
                })
                .collect();
            let mut client = connect(addr).await;
            let mut attempts = 0u64;
            while !pending.is_empty() {
                attempts += 1;
                assert!(attempts < 20_000, "writer {w} cannot finish");
                let batch: Vec<(String, u64)> =
                    pending.iter().take(BATCH as usize).cloned().collect();
                let request = PublishRequest {
                    events: batch.iter().map(|(k, n)| event(k, *n)).collect(),
                };
                match client.publish(request).await {
                    Ok(reply) => {
                        let results = reply.into_inner().results;
                        let mut done = Vec::new();
                        for ((k, _), r) in batch.iter().zip(results) {
                            if let Some(publish_result::Outcome::Accepted(_)) = r.outcome {
                                done.push(k.clone());
                            }
                        }
                        pending.retain(|(k, _)| !done.contains(k));
                        acked.lock().unwrap().extend(done);
                    }
                    Err(_) => {
                        // The server is down: the batch may or may not be
                        // durable. Retry it, same keys.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        client = connect(addr).await;
                    }
                }
            }
        }));
    }

    let total = WRITERS * PER_WRITER;
    for kill in 1..=3u64 {
        // Let a share of the events through, then kill mid-stream.
        loop {
            let n = acked.lock().unwrap().len() as u64;
            if n >= total * kill / 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut s = server.lock().unwrap();
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        *s = start(dir.path(), addr.port());
    }
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len() as u64, total);

    // Every member's store, pulled to the end.
    let mut client = connect(addr).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        seen.clear();
        for m in 0..MEMBERS {
            let mut since = 0;
            loop {
                let reply = client
                    .pull(PullRequest {
                        member: format!("m{m}"),
                        since,
                        limit: 1_000,
                        device_type: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                for c in &reply.changes {
                    let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
                    *seen
                        .entry(body["key"].as_str().unwrap().to_owned())
                        .or_default() += 1;
                }
                since = reply.cursor;
                if !reply.more {
                    break;
                }
            }
        }
        if seen.len() as u64 >= total || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing: Vec<&String> = acked.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let doubled: Vec<(&String, &u32)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} events stored twice, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(3)]
    );
    assert_eq!(
        seen.len() as u64,
        total,
        "events stored that nobody published?"
    );
}
