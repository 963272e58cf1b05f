//! Counter benchmarks, all in one run (`cargo bench -p timecard-counter`):
//! AddCount/s on one hot counter with many concurrent callers (10% of the
//! adds retried with the same token) and GetCount latency, for each counter
//! type and backend, against a naive baseline: one durable row updated by
//! compare-and-swap (the design Netflix rejected first). Every run also
//! checks that the count is exact.
//!
//! Environment: `COUNTER_BENCH_ADDS` (default 400000 per case),
//! `COUNTER_BENCH_QUICK=1` (a smoke run). memcached and nats-server cases
//! run when the binaries are found (see `eventlog::testkit`), else say why
//! they were skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use counter::{CounterConfig, CounterService, Kind};
use eventlog::backend::{Backend, BackendOptions, BackendSpec};
use eventlog::segment::SegmentOptions;
use eventlog::{IdempotencyToken, TimeSource};

const CALLERS: usize = 256;

struct Row {
    name: String,
    adds_per_s: f64,
    get_p50_us: f64,
    get_p99_us: f64,
    exact: String,
}

fn config(kind: Kind, memcached: Option<std::net::SocketAddr>) -> CounterConfig {
    let mut namespaces = HashMap::new();
    namespaces.insert("b".to_owned(), kind);
    CounterConfig {
        namespaces,
        accept_limit: Duration::from_millis(500),
        grace: Duration::from_millis(1500),
        rollup_interval: Duration::from_millis(50),
        memcached,
        ..CounterConfig::default()
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// Hot-key load through the service API, then GetCount latency, then the exactness check.
async fn run_service(name: &str, svc: CounterService, adds: usize, exact_check: bool) -> Row {
    let clock = TimeSource::system(1_000_000);
    let per = adds / CALLERS;
    let retries = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CALLERS {
        let svc = svc.clone();
        let clock = clock.clone();
        let retries = retries.clone();
        tasks.push(tokio::spawn(async move {
            let mut sum = 0i64;
            for i in 0..per {
                let delta = ((c + i) % 5) as i64 + 1;
                let tok = IdempotencyToken::fresh(clock.now().map(|t| t.latest_ns).unwrap_or(0));
                svc.add("b", "hot", delta, Some(tok), false)
                    .await
                    .expect("add");
                if i % 10 == 0 {
                    svc.add("b", "hot", delta, Some(tok), false)
                        .await
                        .expect("retry");
                    retries.fetch_add(1, Ordering::Relaxed);
                }
                sum += delta;
            }
            sum
        }));
    }
    let mut truth = 0i64;
    for t in tasks {
        truth += t.await.expect("caller");
    }
    let took = t0.elapsed();
    let requests = (per * CALLERS) as f64 + retries.load(Ordering::Relaxed) as f64;
    // GetCount latency: 8 concurrent readers.
    let mut lat = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..8 {
        let svc = svc.clone();
        readers.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(2000);
            for _ in 0..2000 {
                let t = Instant::now();
                let _ = svc.get("b", "hot").await.expect("get");
                v.push(t.elapsed().as_secs_f64() * 1e6);
            }
            v
        }));
    }
    for r in readers {
        lat.extend(r.await.expect("reader"));
    }
    let exact = if exact_check {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = svc.get("b", "hot").await.expect("get").count;
            if got == Some(truth) {
                break format!("yes ({truth})");
            }
            if Instant::now() > deadline {
                break format!("NO: {got:?} != {truth}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        "n/a (best-effort)".into()
    };
    svc.shutdown();
    Row {
        name: name.into(),
        adds_per_s: requests / took.as_secs_f64(),
        get_p50_us: percentile(&mut lat, 0.5),
        get_p99_us: percentile(&mut lat, 0.99),
        exact,
    }
}

/// The baseline: one durable redb row, read-modify-write per add, under
/// the same hot-key concurrency (transactions serialize).
async fn run_cas(dir: &std::path::Path, seconds: f64) -> Row {
    let kv = Backend::open(
        &BackendSpec::Embedded { dir: dir.into() },
        "cas",
        &BackendOptions::default(),
    )
    .await
    .expect("kv")
    .kv;
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (kv, lock, done) = (kv.clone(), lock.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                // Compare-and-swap on the row: read, compare, write, commit.
                let _g = lock.lock().await;
                let cur = kv
                    .get("hot")
                    .await
                    .expect("get")
                    .map_or(0, |v| i64::from_le_bytes(v.try_into().unwrap_or_default()));
                kv.put("hot", (cur + 1).to_le_bytes().to_vec())
                    .await
                    .expect("put");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("cas task");
    }
    let took = t0.elapsed();
    let n = done.load(Ordering::Relaxed);
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let _ = kv.get("hot").await;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let got = kv
        .get("hot")
        .await
        .ok()
        .flatten()
        .map_or(0, |v| i64::from_le_bytes(v.try_into().unwrap_or_default()));
    Row {
        name: "baseline: single-row CAS (redb, durable)".into(),
        adds_per_s: n as f64 / took.as_secs_f64(),
        get_p50_us: percentile(&mut lat, 0.5),
        get_p99_us: percentile(&mut lat, 0.99),
        exact: if got == n as i64 {
            format!("yes ({n})")
        } else {
            format!("NO: {got} != {n}")
        },
    }
}

async fn embedded(dir: &std::path::Path, kind: Kind, fsync: bool) -> CounterService {
    let options = BackendOptions {
        segments: SegmentOptions {
            fsync,
            ..SegmentOptions::default()
        },
        nats: None,
    };
    let backend = Backend::open(
        &BackendSpec::Embedded { dir: dir.into() },
        "counter",
        &options,
    )
    .await
    .expect("backend");
    CounterService::start(config(kind, None), TimeSource::system(1_000_000), backend)
        .await
        .expect("service")
}

async fn nats(urls: Vec<String>, kind: Kind, tag: &str) -> CounterService {
    let backend = Backend::open(
        &BackendSpec::Nats { urls },
        &format!("bench{tag}"),
        &BackendOptions::default(),
    )
    .await
    .expect("nats backend");
    CounterService::start(config(kind, None), TimeSource::system(1_000_000), backend)
        .await
        .expect("service")
}

/// AddCount over gRPC from `callers` tasks on `connections` HTTP/2 connections (hot key, eventual, embedded).
async fn run_grpc(dir: &std::path::Path, adds: usize, connections: usize, callers: usize) -> Row {
    let mut args = counter::cli::ServeArgs {
        namespaces: vec!["b=eventual".into()],
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        accept_limit_ms: 500,
        grace_ms: 1500,
        rollup_interval_ms: 50,
        ..counter::cli::ServeArgs::defaults()
    };
    args.common.backend = format!("embedded:{}", dir.display());
    args.common.system_clock_bound_us = 1000;
    args.access = access::AccessArgs::insecure();
    let run = counter::cli::start(&args).await.expect("serve");
    let url = format!("http://{}", run.grpc);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(
            counter::pb::counter_client::CounterClient::connect(url.clone())
                .await
                .expect("connect"),
        );
    }
    let per = adds / callers;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        // Callers share a connection (HTTP/2 streams) when there are fewer.
        let mut cl = channels[c % connections].clone();
        tasks.push(tokio::spawn(async move {
            let mut sum = 0;
            for i in 0..per {
                let delta = ((c + i) % 5) as i64 + 1;
                cl.add_count(counter::pb::AddCountRequest {
                    namespace: "b".into(),
                    counter: "hot".into(),
                    delta,
                    idempotency_token: None,
                })
                .await
                .expect("grpc add");
                sum += delta;
            }
            sum
        }));
    }
    let mut truth = 0;
    for t in tasks {
        truth += t.await.expect("client");
    }
    let took = t0.elapsed();
    let mut cl = counter::pb::counter_client::CounterClient::connect(url)
        .await
        .expect("connect");
    let mut lat = Vec::new();
    for _ in 0..4000 {
        let t = Instant::now();
        let _ = cl
            .get_count(counter::pb::GetCountRequest {
                namespace: "b".into(),
                counter: "hot".into(),
            })
            .await;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let exact = loop {
        let got = run.service.get("b", "hot").await.expect("get").count;
        if got == Some(truth) {
            break format!("yes ({truth})");
        }
        if Instant::now() > deadline {
            break format!("NO: {got:?} != {truth}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    run.stop();
    Row {
        name: format!(
            "eventual, embedded, over gRPC ({callers} callers on {connections} connections)"
        ),
        adds_per_s: (per * callers) as f64 / took.as_secs_f64(),
        get_p50_us: percentile(&mut lat, 0.5),
        get_p99_us: percentile(&mut lat, 0.99),
        exact,
    }
}

fn main() {
    let quick = std::env::var("COUNTER_BENCH_QUICK").is_ok_and(|v| v == "1");
    let adds: usize = std::env::var("COUNTER_BENCH_ADDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 400_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut rows = Vec::new();
        rows.push(run_cas(&tmp.path().join("cas"), if quick { 0.5 } else { 3.0 }).await);
        for (name, kind, fsync) in [
            ("eventual, embedded (fsync per group commit)", Kind::Eventual, true),
            ("accurate, embedded (fsync per group commit)", Kind::Accurate, true),
            ("eventual, embedded (no fsync)", Kind::Eventual, false),
        ] {
            let dir = tmp.path().join(name.replace([' ', ',', '(', ')'], "_"));
            rows.push(run_service(name, embedded(&dir, kind, fsync).await, adds, true).await);
        }
        match eventlog::testkit::Memcached::spawn() {
            Ok(mc) => {
                let backend = Backend::open(&BackendSpec::Embedded { dir: tmp.path().join("be") }, "counter", &BackendOptions::default()).await.expect("backend");
                let svc = CounterService::start(config(Kind::BestEffort { ttl_s: 600 }, Some(mc.addr())), TimeSource::system(1_000_000), backend).await.expect("svc");
                rows.push(run_service("best-effort, memcached", svc, adds, false).await);
            }
            Err(e) => eprintln!("best-effort, memcached: SKIPPED ({e})"),
        }
        match eventlog::testkit::NatsNode::start() {
            Ok(node) => {
                for (name, kind, tag) in [("eventual, NATS JetStream (R1)", Kind::Eventual, "e"), ("accurate, NATS JetStream (R1)", Kind::Accurate, "a")] {
                    rows.push(run_service(name, nats(node.urls(), kind, tag).await, adds / 4, true).await);
                }
            }
            Err(e) => eprintln!("NATS: SKIPPED ({e})"),
        }
        rows.push(run_grpc(&tmp.path().join("grpc"), adds / 4, 64, 64).await);
        rows.push(run_grpc(&tmp.path().join("grpc-mux"), adds / 4, 4, 256).await);

        let base = rows[0].adds_per_s;
        println!("\nCounter: {CALLERS} concurrent callers on one hot counter, 10% of adds retried with the same token");
        println!("| case | AddCount/s | vs baseline | GetCount p50 µs | GetCount p99 µs | exact |");
        println!("|---|---:|---:|---:|---:|---|");
        for r in &rows {
            println!(
                "| {} | {:.0} | {:.1}x | {:.1} | {:.1} | {} |",
                r.name,
                r.adds_per_s,
                r.adds_per_s / base,
                r.get_p50_us,
                r.get_p99_us,
                r.exact
            );
        }
        if rows.iter().any(|r| r.exact.starts_with("NO")) {
            eprintln!("a count was not exact");
            std::process::exit(1);
        }
    });
}
