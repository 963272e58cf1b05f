//! Hot-path benchmarks of the card stack, each against a baseline measured in
//! the same run:
//!
//! - `TimeCard::read_time` through the shared-memory simulator backend (what
//!   another process sees of `timecard sim`) and the in-process backend, vs.
//!   `clock_gettime(CLOCK_REALTIME)` (vDSO);
//! - simulated seconds per wall second at maximum acceleration (manual clock),
//!   per oscillator preset.
//!
//! Run: `cargo bench -p timecard-driver --bench timecard`. Prints a table;
//! results are recorded in `docs/benchmarks.md`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timecard_driver::hostclock::clock_ns;
use timecard_driver::simbar::SimBar;
use timecard_driver::{InitOptions, SystemClock, TimeCard};
use timecard_sim::oscillator::Preset;
use timecard_sim::{ClockMode, Sim, SimConfig};

/// Runs `f` repeatedly for about `budget` and returns ns per call (best of 5 rounds).
fn per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let mut n = 0u64;
        let start = Instant::now();
        while start.elapsed() < budget / 5 {
            for _ in 0..64 {
                f();
            }
            n += 64;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn realtime_card(sim: Sim) -> TimeCard {
    let card = TimeCard::open(Arc::new(SimBar::new(sim)), Arc::new(SystemClock)).expect("open");
    card.init(InitOptions::default()).expect("init");
    card
}

fn main() {
    let budget = Duration::from_millis(1500);
    println!(
        "# timecard benchmarks ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!();
    println!("| benchmark | ns/op | ratio vs baseline |");
    println!("|---|---:|---:|");

    let vdso = per_call(budget, || {
        black_box(clock_ns(libc::CLOCK_REALTIME));
    });
    println!("| clock_gettime(CLOCK_REALTIME) (baseline) | {vdso:.1} | 1.00 |");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.bar");
    let cfg = SimConfig {
        mode: ClockMode::Realtime { acceleration: 1.0 },
        ..SimConfig::default()
    };
    let _owner = Sim::create_file(&path, &cfg).expect("create sim file");
    let shm = realtime_card(Sim::open_file(&path).expect("open sim file"));
    let t = per_call(budget, || {
        black_box(shm.read_time().expect("read"));
    });
    println!(
        "| TimeCard::read_time, shared-memory sim backend | {t:.1} | {:.1} |",
        t / vdso
    );

    let local = realtime_card(Sim::new(&cfg).expect("sim"));
    let t = per_call(budget, || {
        black_box(local.read_time().expect("read"));
    });
    println!(
        "| TimeCard::read_time, in-process sim backend | {t:.1} | {:.1} |",
        t / vdso
    );

    println!();
    println!("| simulation at maximum acceleration | simulated s per wall s |");
    println!("|---|---:|");
    for preset in Preset::ALL {
        let sim = Sim::new(&SimConfig {
            preset,
            start_tai_ns: Some(1_800_000_000_000_000_000),
            ..SimConfig::default()
        })
        .expect("sim");
        let card = TimeCard::open(Arc::new(SimBar::new(sim.clone())), Arc::new(SystemClock))
            .expect("open");
        card.init(InitOptions {
            seed_time_from_host: false,
            ..InitOptions::default()
        })
        .expect("init");
        let simulated = 86_400u64;
        let start = Instant::now();
        for _ in 0..simulated / 600 {
            sim.advance(Duration::from_secs(600));
        }
        let wall = start.elapsed().as_secs_f64();
        println!(
            "| {preset} (GNSS locked, 1 PPS/s, servo + oscillator noise) | {:.0} |",
            simulated as f64 / wall
        );
    }
}
