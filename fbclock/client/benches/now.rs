//! `FbClock::now()` against `clock_gettime(CLOCK_REALTIME)` in the same run,
//! and commit-wait latency against the window of uncertainty.
//!
//! Run: `cargo bench -p fbclock --bench now` (results in `docs/benchmarks.md`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use fbclock::layout::FLAG_SYNCED;
use fbclock::{Publisher, Snapshot, clock_ns};

fn per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget / 5 {
            for _ in 0..256 {
                f();
            }
            n += 256;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn publish(p: &Publisher, clock_id: u32, error_bound_ns: u32) {
    let now = clock_ns(clock_id);
    p.publish(&Snapshot {
        anchor_sys_ns: now,
        anchor_tai_ns: clock_ns(libc::CLOCK_REALTIME as u32) + 37_000_000_000,
        coef: 1e-7,
        ingress_sys_ns: now,
        error_bound_ns,
        holdover_ns_per_s: 20.0,
        leap_tai_ns: 0,
        utc_pre_s: 37,
        utc_post_s: 37,
        flags: FLAG_SYNCED,
    });
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fbclock");
    let clock_id = libc::CLOCK_MONOTONIC_RAW as u32;
    let publisher = Publisher::create(&path, clock_id).expect("publisher");
    publish(&publisher, clock_id, 1_000);
    let clock = fbclock::FbClock::open(&path).expect("client");
    let budget = Duration::from_millis(1500);

    println!("| benchmark | ns/op | ratio vs clock_gettime(REALTIME) |");
    println!("|---|---:|---:|");
    let base = per_call(budget, || {
        black_box(clock_ns(libc::CLOCK_REALTIME as u32));
    });
    println!("| clock_gettime(CLOCK_REALTIME) (baseline) | {base:.1} | 1.00 |");
    let raw = per_call(budget, || {
        black_box(clock_ns(clock_id));
    });
    println!(
        "| clock_gettime(CLOCK_MONOTONIC_RAW) | {raw:.1} | {:.2} |",
        raw / base
    );
    let now = per_call(budget, || {
        black_box(clock.now().expect("now"));
    });
    println!(
        "| FbClock::now() (seqlock read + 1 clock_gettime) | {now:.1} | {:.2} |",
        now / base
    );
    let utc = per_call(budget, || {
        black_box(clock.now_utc().expect("now_utc"));
    });
    println!("| FbClock::now_utc() | {utc:.1} | {:.2} |", utc / base);

    println!();
    println!("| commit-wait with error bound | WOU (ns) | wait p50 (µs) | wait max (µs) |");
    println!("|---|---:|---:|---:|");
    for bound in [1_000u32, 10_000, 100_000, 1_000_000] {
        publish(&publisher, clock_id, bound);
        let mut waits = Vec::new();
        for _ in 0..50 {
            let tt = clock.now().expect("now");
            let start = Instant::now();
            clock.commit_wait(tt.latest_ns).expect("commit_wait");
            waits.push(start.elapsed().as_secs_f64() * 1e6);
        }
        waits.sort_by(f64::total_cmp);
        let wou = clock.now().expect("now").wou_ns();
        println!(
            "| {bound} ns | {wou} | {:.1} | {:.1} |",
            waits[waits.len() / 2],
            waits[waits.len() - 1]
        );
    }
}
