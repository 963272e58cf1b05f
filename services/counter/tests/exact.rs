//! Exactness of eventually consistent and accurate counters on the embedded
//! backend: many concurrent adds, 10% of them retried with the same token
//! (as a client whose reply was lost would), clears, restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use counter::{CounterConfig, CounterError, CounterService, Kind};
use eventlog::backend::{Backend, BackendOptions, BackendSpec};
use eventlog::{IdempotencyToken, TimeSource};

fn config() -> CounterConfig {
    let mut namespaces = HashMap::new();
    namespaces.insert("ev".to_owned(), Kind::Eventual);
    namespaces.insert("acc".to_owned(), Kind::Accurate);
    CounterConfig {
        namespaces,
        accept_limit: Duration::from_millis(2000),
        grace: Duration::from_millis(1000),
        rollup_interval: Duration::from_millis(20),
        ..CounterConfig::default()
    }
}

async fn open(dir: &std::path::Path) -> CounterService {
    let spec = BackendSpec::Embedded { dir: dir.into() };
    let backend = Backend::open(&spec, "counter", &BackendOptions::default())
        .await
        .unwrap();
    CounterService::start(config(), TimeSource::system(1_000_000), backend)
        .await
        .unwrap()
}

/// Waits until the eventual count of every counter equals `want`.
async fn converge(svc: &CounterService, ns: &str, want: &HashMap<String, i64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut ok = true;
        for (c, w) in want {
            let r = svc.get(ns, c).await.unwrap();
            if r.count != Some(*w) {
                ok = false;
                if Instant::now() > deadline {
                    panic!("{ns}/{c}: {:?} != {w}; status {:?}", r.count, svc.status());
                }
            }
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tasks` writers add to `counters` counters; every 10th add is sent twice.
async fn load(
    svc: &CounterService,
    ns: &'static str,
    tasks: usize,
    per_task: usize,
    counters: usize,
) -> HashMap<String, i64> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let svc = svc.clone();
        handles.push(tokio::spawn(async move {
            let mut sums: HashMap<String, i64> = HashMap::new();
            let mut retried = 0;
            for i in 0..per_task {
                let c = format!("c{}", (t * 7 + i) % counters);
                let delta = ((i % 13) as i64) - 4;
                let tt = TimeSource::system(1_000_000).now().unwrap();
                let tok = IdempotencyToken::fresh(tt.latest_ns);
                // A client retries what was not confirmed (an fsync stall on a
                // loaded machine can outlast `grace`) with the same token,
                // and every 10th add once more after its confirmation.
                let mut confirmed = 0;
                while confirmed < 1 + usize::from(i % 10 == 0) {
                    match svc.add(ns, &c, delta, Some(tok), false).await {
                        Ok(_) => confirmed += 1,
                        Err(CounterError::Unavailable(_)) => retried += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                retried += usize::from(i % 10 == 0);
                *sums.entry(c).or_default() += delta;
            }
            (sums, retried)
        }));
    }
    let mut total: HashMap<String, i64> = HashMap::new();
    for h in handles {
        let (s, _) = h.await.unwrap();
        for (k, v) in s {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_with_retries_count_exactly_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path()).await;
    let t0 = Instant::now();
    let (ev, acc) = tokio::join!(
        load(&svc, "ev", 8, 25_000, 50),
        load(&svc, "acc", 8, 25_000, 50)
    );
    let took = t0.elapsed();
    let n = 2 * 8 * 25_000;
    eprintln!(
        "{n} adds (+10% retries) in {took:?}: {:.0}/s; {:?}",
        n as f64 / took.as_secs_f64(),
        svc.status()
    );
    // Accurate is exact immediately.
    for (c, w) in &acc {
        assert_eq!(svc.get("acc", c).await.unwrap().count, Some(*w), "acc/{c}");
    }
    // Eventual converges once the windows are rolled up.
    converge(&svc, "ev", &ev).await;
    converge(&svc, "acc", &acc).await;
    let st = svc.status();
    assert_eq!(st.late, 0, "{st:?}");
    assert!(st.duplicates >= (n / 10) as u64, "{st:?}");
    svc.shutdown();
    drop(svc);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Restart from the checkpoints and the log: same counts.
    let svc = open(dir.path()).await;
    converge(&svc, "ev", &ev).await;
    converge(&svc, "acc", &acc).await;
    svc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_resets_at_its_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path()).await;
    let clock = TimeSource::system(1_000_000);
    for _ in 0..5 {
        svc.add("acc", "x", 2, None, false).await.unwrap();
    }
    let r = svc.clear("acc", "x", None).await.unwrap();
    assert_eq!(r.count, Some(0));
    let tok = IdempotencyToken::fresh(clock.now().unwrap().latest_ns);
    assert_eq!(
        svc.add("acc", "x", 3, Some(tok), true).await.unwrap().count,
        Some(3)
    );
    let want: HashMap<String, i64> = [("x".to_owned(), 3)].into();
    converge(&svc, "acc", &want).await;
    svc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path()).await;
    let clock = TimeSource::system(1_000_000);
    let now = clock.now().unwrap();
    let e = svc
        .add("nope", "x", 1, None, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown namespace \"nope\"") && e.contains("acc, ev"),
        "{e}"
    );
    for bad in ["", "a b", "-x", &"x".repeat(65), "x/y"] {
        let e = svc
            .add("ev", bad, 1, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("counter name"), "{bad:?}: {e}");
    }
    let old = IdempotencyToken::fresh(now.latest_ns - 10_000_000_000);
    let e = svc
        .add("ev", "x", 1, Some(old), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("older than the accept limit"), "{e}");
    let ancient = IdempotencyToken {
        event_time_ns: i64::MIN,
        nonce: 1,
    };
    let e = svc
        .add("ev", "x", 1, Some(ancient), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("older than the accept limit"), "{e}");
    let far = IdempotencyToken {
        event_time_ns: i64::MAX,
        nonce: 1,
    };
    let e = svc
        .add("ev", "x", 1, Some(far), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("in the future"), "{e}");
    let future = IdempotencyToken::fresh(now.latest_ns + 60_000_000_000);
    let e = svc
        .add("ev", "x", 1, Some(future), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("in the future"), "{e}");
    svc.add("acc", "big", i64::MAX, None, true).await.unwrap();
    let e = svc
        .add("acc", "big", 1, None, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("overflow"), "{e}");
    assert_eq!(svc.get("acc", "big").await.unwrap().count, Some(i64::MAX));
    svc.shutdown();
    let _ = Arc::new(());
}
