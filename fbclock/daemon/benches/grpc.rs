//! GetTime over gRPC vs in-process `FbClock::now()`.
//!
//! The server (its own 2-worker runtime, as the daemon runs it) and N
//! concurrent tonic clients (each its own connection, on a second 2-worker
//! runtime) share the machine; the baseline is a loop of `FbClock::now()` on
//! one thread in the same run. Prints ns/op, requests/s, latency
//! percentiles and the ratio to the baseline.
//!
//! `cargo bench -p fbclockd --bench grpc` (env `BENCH_SECS`, default 2 per level;
//! `BENCH_CLIENTS`, default `1,8,64`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fbclock::layout::FLAG_SYNCED;
use fbclock::{FbClock, Publisher, Snapshot, clock_ns};
use fbclockd::grpc::{self, FbClockClient, pb};
use fbclockd::status::{DaemonStatus, ExchangeCounters, StatusSource, SyncState};

const CLOCK_MONOTONIC_RAW: u32 = libc::CLOCK_MONOTONIC_RAW as u32;

struct FakeStatus;

impl StatusSource for FakeStatus {
    fn status(&self) -> DaemonStatus {
        DaemonStatus {
            state: SyncState::Synced,
            gm_identity: Some("aabbcc.fffe.ddeeff".into()),
            gm_clock_class: Some(6),
            gm_clock_accuracy: Some(0x21),
            server: "127.0.0.1:319".into(),
            last_offset_ns: Some(0),
            last_path_delay_ns: Some(1_000),
            recent_offsets_ns: Vec::new(),
            error_bound_ns: 1_000,
            holdover_ns_per_s: 0.0,
            exchanges: ExchangeCounters::default(),
        }
    }
}

fn snapshot() -> Snapshot {
    let now = clock_ns(CLOCK_MONOTONIC_RAW);
    Snapshot {
        anchor_sys_ns: now,
        anchor_tai_ns: clock_ns(libc::CLOCK_REALTIME as u32) + 37_000_000_000,
        coef: 1e-7,
        ingress_sys_ns: now,
        error_bound_ns: 1_000,
        holdover_ns_per_s: 10.0,
        leap_tai_ns: 0,
        utc_pre_s: 37,
        utc_post_s: 37,
        flags: FLAG_SYNCED,
    }
}

fn baseline(clock: &FbClock, dur: Duration) -> f64 {
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut sink = 0i64;
    while t0.elapsed() < dur {
        for _ in 0..1024 {
            sink ^= std::hint::black_box(clock.now().unwrap()).earliest_ns;
        }
        n += 1024;
    }
    std::hint::black_box(sink);
    t0.elapsed().as_nanos() as f64 / n as f64
}

struct Level {
    requests: u64,
    ns_per_op: f64,
    p50_us: f64,
    p99_us: f64,
}

fn grpc_level(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    clients: usize,
    dur: Duration,
) -> Level {
    rt.block_on(async {
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            conns.push(
                FbClockClient::connect(format!("http://{addr}"))
                    .await
                    .unwrap(),
            );
        }
        // Warm-up.
        for c in &mut conns {
            c.get_time(pb::GetTimeRequest::default()).await.unwrap();
        }
        let t0 = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(1 << 16);
                    while t0.elapsed() < dur {
                        let s = Instant::now();
                        let r = c
                            .get_time(pb::GetTimeRequest::default())
                            .await
                            .unwrap()
                            .into_inner();
                        std::hint::black_box(r);
                        lat.push(s.elapsed().as_nanos() as u32);
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let wall = t0.elapsed();
        lat.sort_unstable();
        let pct = |p: f64| f64::from(lat[((lat.len() - 1) as f64 * p) as usize]) / 1e3;
        Level {
            requests: lat.len() as u64,
            ns_per_op: wall.as_nanos() as f64 / lat.len() as f64,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
        }
    })
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let dur = Duration::from_secs_f64(secs);
    let levels: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 64]);

    let publisher = Arc::new(Publisher::in_memory(CLOCK_MONOTONIC_RAW));
    publisher.publish(&snapshot());
    let done = Arc::new(AtomicBool::new(false));
    let republisher = {
        let (publisher, done) = (publisher.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                publisher.publish(&snapshot());
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let clock = Arc::new(publisher.client());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);

    let base = baseline(&clock, dur);
    println!(
        "fbclockd gRPC GetTime bench ({cores} cores, {secs} s per level; server and clients share the cores)"
    );
    println!(
        "  in-process FbClock::now(): {base:8.1} ns/op  ({:.1} M/s)",
        1e3 / base
    );

    let server = grpc::spawn(
        "127.0.0.1:0".parse().unwrap(),
        clock.clone(),
        Arc::new(FakeStatus),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "  {:>8} {:>12} {:>12} {:>10} {:>10} {:>14}",
        "clients", "ns/op", "req/s", "p50 µs", "p99 µs", "× in-process"
    );
    for &n in &levels {
        let l = grpc_level(&rt, server.local_addr(), n, dur);
        println!(
            "  {n:>8} {:>12.0} {:>12.0} {:>10.1} {:>10.1} {:>14.0}   ({} requests)",
            l.ns_per_op,
            1e9 / l.ns_per_op,
            l.p50_us,
            l.p99_us,
            l.ns_per_op / base,
            l.requests
        );
    }
    let base2 = baseline(&clock, dur);
    println!("  in-process FbClock::now() again: {base2:8.1} ns/op");
    drop(rt);
    server.stop().unwrap();
    done.store(true, Ordering::Relaxed);
    republisher.join().unwrap();
}
