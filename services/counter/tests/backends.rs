//! The counter on real engines: NATS JetStream (one node; a 3-node cluster
//! losing a node under load) and memcached (stopped: best-effort degrades,
//! the other types do not notice). Needs `nats-server` and `memcached`
//! (`./scripts/test.sh` installs them); without them the tests fail with
//! install instructions unless `TIMECARD_SKIP_NATS=1` /
//! `TIMECARD_SKIP_MEMCACHED=1`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use counter::{CounterConfig, CounterError, CounterService, Kind};
use eventlog::backend::{Backend, BackendOptions, BackendSpec};
use eventlog::testkit::{Memcached, NatsCluster, NatsNode, memcached_or_skip, nats_server_or_skip};
use eventlog::{IdempotencyToken, TimeSource};

fn config(accept_ms: u64, grace_ms: u64, memcached: Option<std::net::SocketAddr>) -> CounterConfig {
    let mut namespaces = HashMap::new();
    namespaces.insert("ev".to_owned(), Kind::Eventual);
    namespaces.insert("acc".to_owned(), Kind::Accurate);
    namespaces.insert("fast".to_owned(), Kind::BestEffort { ttl_s: 60 });
    CounterConfig {
        namespaces,
        accept_limit: Duration::from_millis(accept_ms),
        grace: Duration::from_millis(grace_ms),
        rollup_interval: Duration::from_millis(20),
        memcached,
        ..CounterConfig::default()
    }
}

async fn service(urls: Vec<String>, cfg: CounterConfig) -> CounterService {
    let backend = Backend::open(
        &BackendSpec::Nats { urls },
        "counter",
        &BackendOptions::default(),
    )
    .await
    .unwrap();
    CounterService::start(cfg, TimeSource::system(1_000_000), backend)
        .await
        .unwrap()
}

/// Adds from `tasks` writers until each has `per_task` acknowledged adds;
/// failed adds are retried with the same token. Returns the true sums.
async fn load(
    svc: &CounterService,
    ns: &'static str,
    tasks: usize,
    per_task: usize,
) -> HashMap<String, i64> {
    let mut hs = Vec::new();
    for t in 0..tasks {
        let svc = svc.clone();
        hs.push(tokio::spawn(async move {
            let clock = TimeSource::system(1_000_000);
            let mut sums: HashMap<String, i64> = HashMap::new();
            for i in 0..per_task {
                let c = format!("k{}", (t + i) % 20);
                let delta = (i % 9) as i64 - 3;
                let tok = IdempotencyToken::fresh(clock.now().unwrap().latest_ns);
                let t0 = Instant::now();
                let mut sent = 0;
                loop {
                    match svc.add(ns, &c, delta, Some(tok), false).await {
                        Ok(_) => sent += 1,
                        Err(CounterError::Unavailable(e)) => {
                            assert!(
                                t0.elapsed() < Duration::from_secs(25),
                                "add not accepted for 25 s: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    }
                    // Every 10th add is retried once more after its ack.
                    if i % 10 != 0 || sent > 1 {
                        break;
                    }
                }
                *sums.entry(c).or_default() += delta;
            }
            sums
        }));
    }
    let mut total = HashMap::new();
    for h in hs {
        for (k, v) in h.await.unwrap() {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

async fn expect(svc: &CounterService, ns: &str, want: &HashMap<String, i64>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut bad = Vec::new();
        for (c, w) in want {
            let got = svc.get(ns, c).await.map(|r| r.count);
            if got != Ok(Some(*w)) {
                bad.push(format!("{ns}/{c}: {got:?} != {w}"));
            }
        }
        if bad.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{bad:?}\n{:?}", svc.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_counts_are_exact_with_retries_and_after_restart() {
    let Some(bin) = nats_server_or_skip().unwrap() else {
        return;
    };
    let node = NatsNode::start_with(&bin).unwrap();
    let svc = service(node.urls(), config(300, 1500, None)).await;
    let (ev, acc) = tokio::join!(load(&svc, "ev", 16, 1500), load(&svc, "acc", 16, 1500));
    expect(&svc, "acc", &acc, Duration::from_secs(10)).await;
    expect(&svc, "ev", &ev, Duration::from_secs(20)).await;
    let st = svc.status();
    assert_eq!(st.late, 0, "{st:?}");
    svc.shutdown();
    // A new process on the same stream and bucket rebuilds the same counts.
    let svc = service(node.urls(), config(300, 1500, None)).await;
    expect(&svc, "acc", &acc, Duration::from_secs(10)).await;
    expect(&svc, "ev", &ev, Duration::from_secs(10)).await;
    svc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_node_killed_under_load_loses_no_accepted_add() {
    let Some(bin) = nats_server_or_skip().unwrap() else {
        return;
    };
    let mut cluster = NatsCluster::start_with(&bin, 3).unwrap();
    // Long accept limit: clients retry through a leader election (~10 s)
    // with their original tokens.
    let svc = service(cluster.urls(), config(40_000, 4000, None)).await;
    let loader = {
        let svc = svc.clone();
        tokio::spawn(async move { load(&svc, "acc", 16, 800).await })
    };
    // Kill once the load is under way (a count, not a sleep: on an idle
    // machine a fixed sleep outlasted the whole load).
    let started = Instant::now();
    while svc.status().appended < 500 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = svc.status().appended;
    assert!(
        before > 0 && !loader.is_finished(),
        "load too short to be interrupted: {before}"
    );
    // Kill the node that leads the stream (else node 0).
    let leader = (0..3)
        .find(|i| {
            cluster.jsz(*i).is_ok_and(|j| {
                j.contains("\"TC_COUNTER\"")
                    && j.contains(&format!(
                        "\"leader\":\"{}\"",
                        cluster.name(*i).unwrap_or("")
                    ))
            })
        })
        .unwrap_or(0);
    cluster.kill(leader).unwrap();
    let acc = tokio::time::timeout(Duration::from_secs(120), loader)
        .await
        .expect("load finished")
        .unwrap();
    eprintln!(
        "killed node {leader} after {before} appends; status {:?}",
        svc.status()
    );
    expect(&svc, "acc", &acc, Duration::from_secs(30)).await;
    assert_eq!(svc.status().late, 0);
    svc.shutdown();
    cluster.restart(leader).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_down_degrades_best_effort_only() {
    if !memcached_or_skip().unwrap() {
        return;
    }
    let mut mc = Memcached::spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(
        &BackendSpec::Embedded {
            dir: dir.path().into(),
        },
        "counter",
        &BackendOptions::default(),
    )
    .await
    .unwrap();
    let svc = CounterService::start(
        config(300, 500, Some(mc.addr())),
        TimeSource::system(1_000_000),
        backend,
    )
    .await
    .unwrap();
    let tok = IdempotencyToken::fresh(TimeSource::system(1).now().unwrap().latest_ns);
    assert_eq!(
        svc.add("fast", "x", 3, Some(tok), true)
            .await
            .unwrap()
            .count,
        Some(3)
    );
    // Same token again: counted once (the marker lives for the TTL).
    let r = svc.add("fast", "x", 3, Some(tok), true).await.unwrap();
    assert_eq!((r.count, r.duplicate), (Some(3), true));
    assert_eq!(
        svc.add("fast", "x", -5, None, true).await.unwrap().count,
        Some(0),
        "memcached decr stops at 0"
    );
    assert!(!svc.status().best_effort_degraded);

    mc.stop();
    let e = svc.add("fast", "x", 1, None, false).await.unwrap_err();
    assert!(
        matches!(&e, CounterError::Unavailable(m) if m.contains("degraded") && m.contains("unreachable")),
        "{e}"
    );
    assert!(svc.status().best_effort_degraded);
    // The durable types do not notice.
    assert_eq!(
        svc.add("acc", "y", 2, None, true).await.unwrap().count,
        Some(2)
    );
    svc.add("ev", "y", 2, None, false).await.unwrap();

    mc.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while svc.status().best_effort_degraded {
        assert!(
            Instant::now() < deadline,
            "still degraded after memcached came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A restarted memcached lost everything (no durability): starts from 0.
    assert_eq!(
        svc.add("fast", "x", 1, None, true).await.unwrap().count,
        Some(1)
    );
    svc.shutdown();
}
