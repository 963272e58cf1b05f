//! The service as a process, killed with SIGKILL while clients add and the
//! rollup runs every 10 ms, restarted on the same data directory: clients
//! retry unacknowledged adds with the same token (as a real client does),
//! and every counter ends exactly at the sum of the adds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use counter::pb::counter_client::CounterClient;
use counter::pb::{AddCountRequest, GetCountRequest, IdempotencyToken};
use eventlog::TimeSource;
use eventlog::testkit::spawn_service;

struct Server {
    child: Child,
    grpc: SocketAddr,
}

/// Starts the service on `dir`; returns once it printed its addresses.
fn start(dir: &std::path::Path, grpc_port: u16) -> Server {
    let (child, grpc) = spawn_service(
        Command::new(env!("CARGO_BIN_EXE_timecard-counter"))
            .args(["serve", "--insecure", "--backend"])
            .arg(format!("embedded:{}", dir.display()))
            .args(["--namespace", "ev=eventual", "--namespace", "acc=accurate"])
            .args([
                "--grpc",
                &format!("127.0.0.1:{grpc_port}"),
                "--http",
                "127.0.0.1:0",
            ])
            .args([
                "--rollup-interval-ms",
                "10",
                "--accept-limit-ms",
                "5000",
                "--grace-ms",
                "500",
            ]),
    );
    Server { child, grpc }
}

async fn connect(addr: SocketAddr) -> CounterClient<tonic::transport::Channel> {
    loop {
        if let Ok(c) = CounterClient::connect(format!("http://{addr}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_and_rollups_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), 0);
    let addr = first.grpc;
    let server = Arc::new(std::sync::Mutex::new(first));
    let done = Arc::new(AtomicBool::new(false));
    let clock = TimeSource::system(1_000_000);

    let mut writers = Vec::new();
    for w in 0..32u64 {
        let clock = clock.clone();
        writers.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let mut sums: HashMap<(String, String), i64> = HashMap::new();
            let mut retries = 0u64;
            for i in 0..600u64 {
                let ns = if i % 2 == 0 { "ev" } else { "acc" };
                let counter = format!("k{}", (w * 31 + i) % 400);
                let delta = (i % 7) as i64 - 2;
                let tok = eventlog::IdempotencyToken::fresh(clock.now().unwrap().latest_ns);
                let req = AddCountRequest {
                    namespace: ns.into(),
                    counter: counter.clone(),
                    delta,
                    idempotency_token: Some(IdempotencyToken {
                        event_time_ns: tok.event_time_ns,
                        nonce: format!("{:x}", tok.nonce),
                    }),
                };
                let t0 = Instant::now();
                loop {
                    match c.add_count(req.clone()).await {
                        Ok(_) => break,
                        Err(s) => {
                            assert!(
                                t0.elapsed() < Duration::from_secs(4),
                                "add not accepted for 4 s: {s}"
                            );
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            c = connect(addr).await;
                        }
                    }
                }
                *sums.entry((ns.to_owned(), counter)).or_default() += delta;
            }
            (sums, retries)
        }));
    }

    // Three SIGKILLs, restarts on the same port and directory.
    let killer = {
        let server = server.clone();
        let done = done.clone();
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut kills = 0;
            for pause_ms in [700u64, 900, 1100] {
                std::thread::sleep(Duration::from_millis(pause_ms));
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let mut s = server.lock().unwrap();
                s.child.kill().unwrap();
                s.child.wait().unwrap();
                kills += 1;
                *s = start(&dir, addr.port());
            }
            kills
        })
    };
    let mut truth: HashMap<(String, String), i64> = HashMap::new();
    let mut retries = 0;
    for w in writers {
        let (s, r) = w.await.unwrap();
        retries += r;
        for (k, v) in s {
            *truth.entry(k).or_default() += v;
        }
    }
    done.store(true, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    eprintln!(
        "kills {kills}, client retries {retries}, counters {}",
        truth.len()
    );
    assert!(kills >= 2, "the load ended before the kills");

    let mut c = connect(addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut wrong = Vec::new();
        for ((ns, counter), want) in &truth {
            let r = c
                .get_count(GetCountRequest {
                    namespace: ns.clone(),
                    counter: counter.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if r.count != *want {
                wrong.push(format!("{ns}/{counter}: {} != {want}", r.count));
            }
        }
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} wrong, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut s = server.lock().unwrap();
    let _ = s.child.kill();
    let _ = s.child.wait();
}
