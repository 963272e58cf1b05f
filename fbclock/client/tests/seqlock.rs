//! Readers on every core while the writer updates never see a torn record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fbclock::layout::FLAG_SYNCED;
use fbclock::{Publisher, Snapshot};

/// A snapshot whose fields are all derived from `i`, so a mix of two writes is detectable.
fn snap(i: i64) -> Snapshot {
    Snapshot {
        anchor_sys_ns: i,
        anchor_tai_ns: i * 3,
        coef: i as f64,
        ingress_sys_ns: i * 5,
        error_bound_ns: (i as u32).wrapping_mul(7) | 1,
        holdover_ns_per_s: f64::from((i % 1000) as u32),
        leap_tai_ns: i * 11,
        utc_pre_s: (i % 100) as i16,
        utc_post_s: (i % 100) as i16 + 1,
        flags: FLAG_SYNCED,
    }
}

fn consistent(s: &Snapshot) -> bool {
    let i = s.anchor_sys_ns;
    *s == snap(i)
}

fn hammer(publish_every: Option<Duration>, run_for: Duration) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fbclock");
    let publisher = Publisher::create(&path, libc::CLOCK_MONOTONIC_RAW as u32).unwrap();
    publisher.publish(&snap(1));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|_| {
            let (stop, reads, path) = (stop.clone(), reads.clone(), path.clone());
            std::thread::spawn(move || {
                let client = fbclock::FbClock::open(&path).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match client.snapshot() {
                        Ok(s) => assert!(consistent(&s), "torn record: {s:?}"),
                        Err(fbclock::Error::Seqlock) => {}
                        Err(e) => panic!("{e}"),
                    }
                    n += 1;
                }
                reads.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    let mut writes = 0u64;
    let mut i = 2i64;
    while start.elapsed() < run_for {
        publisher.publish(&snap(i));
        i += 1;
        writes += 1;
        if let Some(p) = publish_every {
            std::thread::sleep(p);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    (writes, reads.load(Ordering::Relaxed))
}

#[test]
fn readers_never_see_torn_records_at_100_hz() {
    let (writes, reads) = hammer(Some(Duration::from_millis(10)), Duration::from_secs(2));
    assert!(writes >= 100, "{writes}");
    assert!(reads > 100_000, "{reads}");
    println!("100 Hz writer: {writes} writes, {reads} consistent reads");
}

#[test]
fn readers_never_see_torn_records_under_a_tight_writer() {
    let (writes, reads) = hammer(None, Duration::from_secs(2));
    assert!(writes > 10_000, "{writes}");
    println!("tight writer: {writes} writes, {reads} reads, none torn");
}
