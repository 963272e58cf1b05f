//! Hot-path benchmarks of the card stack, each against a baseline measured in
//! the same run:
//!
//! - `TimeCard::read_time` through the shared-memory simulator backend (what
//!   another process sees of `timecard sim`) and the in-process backend, vs.
//!   `clock_gettime(CLOCK_REALTIME)` (vDSO);
//! - simulated seconds per wall second at maximum acceleration (manual clock),
//!   per oscillator preset;
//! - flash throughput: `Flash::write_image` (erase + program + read-back
//!   verify through the SPI controller's registers) and `Flash::read` of a
//!   4 MiB image, in-process and through the shared-memory backend, vs.
//!   programming the same bytes straight into the simulator's flash cells.
//!
//! Run: `cargo bench -p timecard-driver --bench timecard`. Prints a table;
//! results are recorded in `docs/benchmarks.md`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::ops::ControlFlow;

use timecard_driver::hostclock::clock_ns;
use timecard_driver::simbar::SimBar;
use timecard_driver::{InitOptions, SystemClock, TimeCard};
use timecard_hw::firmware;
use timecard_hw::pci::Board;
use timecard_sim::card::make_bitstream;
use timecard_sim::flash::SECTOR;
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

    flash_throughput();
}

/// Flash write and read rates (MiB/s) through the driver, against writing
/// the cells directly.
fn flash_throughput() {
    const MIB: f64 = 1024.0 * 1024.0;
    let image =
        firmware::pack(&make_bitstream(0x8015, 4 << 20), Board::Meta.id(), 1).expect("pack");
    let start = Board::Meta.layout().flash_start as usize;
    let mut go = |_| ControlFlow::Continue(());
    let best_of = |n: usize, f: &mut dyn FnMut()| {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let direct_sim = Sim::new(&SimConfig::default()).expect("sim");
    let direct = best_of(5, &mut || {
        direct_sim.with(|_, mut cells| {
            for (i, block) in image.chunks(SECTOR).enumerate() {
                cells.erase_sector(start + i * SECTOR).expect("erase");
                cells.program(start + i * SECTOR, block).expect("program");
            }
        });
    });
    let mib = image.len() as f64 / MIB;
    println!();
    println!("| flash, {mib:.2} MiB image | MiB/s | ratio vs direct cell writes |");
    println!("|---|---:|---:|");
    println!(
        "| erase + program straight into the simulator's cells (baseline) | {:.1} | 1.00 |",
        mib / direct
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flash.bar");
    let _owner = Sim::create_file(&path, &SimConfig::default()).expect("create sim file");
    for (name, sim) in [
        (
            "in-process sim",
            Sim::new(&SimConfig::default()).expect("sim"),
        ),
        (
            "shared-memory sim",
            Sim::open_file(&path).expect("open sim file"),
        ),
    ] {
        let card = TimeCard::open(Arc::new(SimBar::new(sim)), Arc::new(SystemClock)).expect("open");
        let flash = card.flash().expect("flash");
        let write = best_of(2, &mut || {
            flash.write_image(&image, &mut go).expect("write")
        });
        let read = best_of(2, &mut || {
            black_box(
                flash
                    .read(start as u32, image.len(), &mut go)
                    .expect("read"),
            );
        });
        println!(
            "| write_image ({name}: erase, program, read-back verify) | {:.1} | {:.4} |",
            mib / write,
            direct / write
        );
        println!(
            "| read ({name}) | {:.1} | {:.4} |",
            mib / read,
            direct / read
        );
    }
}
