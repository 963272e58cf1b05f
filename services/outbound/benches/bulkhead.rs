//! Throughput of a bulkhead with a no-op in-process adapter against a bare
//! tokio mpsc channel carrying the same pushes, measured in the same run.
//!
//! `CARGO_TARGET_DIR=/work/target-outbound cargo bench -p timecard-outbound`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use outbound::{Bulkhead, BulkheadConfig, Channel, FnAdapter, Outcome, Push, Refused};
use tokio::sync::{Notify, mpsc};

const PUSHES: u64 = 2_000_000;
const ROUNDS: usize = 3;

fn template() -> Push {
    Push {
        notification_id: 0,
        member: Arc::from("member-1"),
        device_id: Arc::from("device-1"),
        device_token: Arc::from("device-1"),
        urgent: true,
        kind: Arc::from("new-episode"),
        body: Bytes::from_static(br#"{"episode":42}"#),
        expires_at_unix_s: 0,
        created: Instant::now(),
    }
}

fn push(t: &Push, i: u64) -> Push {
    let mut p = t.clone();
    p.notification_id = i;
    p
}

async fn baseline(capacity: usize) -> Duration {
    let (tx, mut rx) = mpsc::channel::<Push>(capacity);
    let consumer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(64);
        let mut n = 0u64;
        while rx.recv_many(&mut buf, 64).await > 0 {
            for p in buf.drain(..) {
                black_box(&p);
                n += 1;
            }
        }
        n
    });
    let t = template();
    let start = Instant::now();
    for i in 0..PUSHES {
        let mut p = push(&t, i);
        loop {
            match tx.try_send(p) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    p = back;
                    tokio::task::yield_now().await;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => unreachable!(),
            }
        }
    }
    drop(tx);
    let n = consumer.await.unwrap();
    let took = start.elapsed();
    assert_eq!(n, PUSHES);
    took
}

async fn bulkhead(config: BulkheadConfig) -> Duration {
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(Notify::new());
    let (d, f) = (Arc::clone(&done), Arc::clone(&finished));
    let sink: outbound::OutcomeSink = Arc::new(move |p: &Push, o: &Outcome| {
        black_box((p, o));
        if d.fetch_add(1, Ordering::Relaxed) + 1 == PUSHES {
            f.notify_one();
        }
    });
    let adapter = FnAdapter::new(Channel::Edge, |p: &Push| {
        black_box(p);
        Ok(())
    });
    let b = Bulkhead::start(adapter, config, sink);
    let t = template();
    let start = Instant::now();
    for i in 0..PUSHES {
        let mut p = push(&t, i);
        loop {
            match b.try_submit(p) {
                Ok(()) => break,
                Err(Refused::QueueFull) => {
                    p = push(&t, i);
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("refused: {e}"),
            }
        }
    }
    finished.notified().await;
    let took = start.elapsed();
    let stats = b.stats();
    assert_eq!(stats.delivered, PUSHES);
    b.shutdown(Duration::from_secs(5)).await;
    took
}

fn rate(d: Duration) -> f64 {
    PUSHES as f64 / d.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut base = 0.0f64;
        for _ in 0..ROUNDS {
            base = base.max(rate(tokio::spawn(baseline(10_000)).await.unwrap()));
        }
        println!("bare tokio mpsc (cap 10000, recv_many 64): {base:>12.0} pushes/s (best of {ROUNDS}, {PUSHES} pushes)");
        for concurrency in [64, 8, 2] {
            let config = BulkheadConfig {
                concurrency,
                ..BulkheadConfig::default()
            };
            let mut best = 0.0f64;
            for _ in 0..ROUNDS {
                best = best.max(rate(tokio::spawn(bulkhead(config.clone())).await.unwrap()));
            }
            println!(
                "bulkhead no-op adapter (concurrency {concurrency:>2}):    {best:>12.0} pushes/s  ratio to mpsc {:.2}",
                best / base
            );
        }
    });
}
