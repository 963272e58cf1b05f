//! Several threads reading the card's time at once (the PTP server's
//! sampler, the live view and the dashboard do): every reading is of its
//! own latch, so it lies inside its own host-clock bracket, as with
//! `ptp_ocp`, whose `gettimex64` holds the device lock.

use timecard_driver::device::open_sim;
use timecard_sim::{ClockMode, Sim, SimConfig};

#[test]
fn concurrent_reads_each_see_their_own_latch() {
    let sim = Sim::new(&SimConfig {
        mode: ClockMode::Realtime { acceleration: 1.0 },
        ..SimConfig::default()
    })
    .unwrap();
    let card = open_sim(sim).unwrap();
    // The card's offset from the host clock, from quiet reads.
    let offset = (0..100)
        .map(|_| {
            let r = card.read_time().unwrap();
            r.card_tai_ns - r.pre_ns
        })
        .min()
        .unwrap();
    // Slack for the card's free-running drift against the host during the
    // test (ppm over about a second) and the bracket adjustment.
    let slack = 200_000;
    let outside: Vec<String> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut bad = Vec::new();
                    for _ in 0..20_000 {
                        // A mixed-up reading shows as a false time jump
                        // (the continuity guard) or outside the bracket.
                        match card.read_time() {
                            Ok(r) => {
                                let (lo, hi) =
                                    (r.pre_ns + offset - slack, r.post_ns + offset + slack);
                                if r.card_tai_ns < lo || r.card_tai_ns > hi {
                                    bad.push(format!(
                                        "{} ns outside [pre, post] ({} ns wide)",
                                        (r.card_tai_ns - hi).max(lo - r.card_tai_ns),
                                        r.post_ns - r.pre_ns
                                    ));
                                }
                            }
                            Err(e) => bad.push(e.to_string()),
                        }
                    }
                    bad
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert!(
        outside.is_empty(),
        "{} of 80 000 readings wrong, e.g. {:?}",
        outside.len(),
        &outside[..outside.len().min(5)]
    );
}

#[test]
fn readers_never_take_a_deliberate_step_for_a_time_jump() {
    let sim = Sim::new(&SimConfig {
        mode: ClockMode::Realtime { acceleration: 1.0 },
        ..SimConfig::default()
    })
    .unwrap();
    let card = open_sim(sim).unwrap();
    let errors: Vec<String> = std::thread::scope(|s| {
        let stepper = s.spawn(|| {
            // 5 ms steps (beyond the guard's 1 ms) and coarse adjtimes.
            for i in 0..200 {
                let delta = if i % 2 == 0 { 5_000_000 } else { -5_000_000 };
                card.step(delta).unwrap();
                card.adjtime(if i % 2 == 0 {
                    2_000_000_000
                } else {
                    -2_000_000_000
                })
                .unwrap();
            }
        });
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    (0..20_000)
                        .filter_map(|_| card.read_time().err().map(|e| e.to_string()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        stepper.join().unwrap();
        readers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert!(
        errors.is_empty(),
        "{} reads failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
}
