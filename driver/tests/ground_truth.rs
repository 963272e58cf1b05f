//! The driver against the simulator, compared with the simulator's ground truth.
//!
//! Every test runs a deterministic manual-clock simulation: truth time moves
//! only when the test advances it, so a card reading and the truth it is
//! compared with are taken at the same instant.

use std::sync::Arc;
use std::time::Duration;

use timecard_driver::card::{CardError, SignalRequest};
use timecard_driver::simbar::{SimBar, SimHostClock};
use timecard_driver::supervisor::{Event, Supervisor};
use timecard_driver::{InitOptions, TimeCard};
use timecard_hw::civil;
use timecard_hw::regs::ClockSource;
use timecard_hw::regs::freq::FreqReading;
use timecard_sim::oscillator::Preset;
use timecard_sim::{ClockMode, Fault, Sim, SimConfig};

const NS: i64 = 1_000_000_000;

/// 2026-11-25 12:00:00 UTC as TAI ns.
fn noon_tai() -> i64 {
    (civil::days_from_civil(2026, 11, 25) * 86_400 + 12 * 3600 + 37) * NS
}

fn rig(preset: Preset, start_tai_ns: i64, host_offset_ns: i64) -> (Sim, TimeCard) {
    let sim = Sim::new(&SimConfig {
        preset,
        seed: 11,
        start_tai_ns: Some(start_tai_ns),
        mode: ClockMode::Manual,
        ..SimConfig::default()
    })
    .unwrap();
    let card = TimeCard::open(
        Arc::new(SimBar::new(sim.clone())),
        Arc::new(SimHostClock::new(sim.clone(), host_offset_ns)),
    )
    .unwrap();
    card.init(InitOptions::default()).unwrap();
    (sim, card)
}

/// Card time minus truth, read through the driver.
fn error_ns(sim: &Sim, card: &TimeCard) -> i64 {
    card.read_time().unwrap().card_tai_ns - sim.truth_tai_ns()
}

/// Advances `seconds` one second at a time with a supervisor round each second.
fn run(sim: &Sim, card: &TimeCard, sup: &mut Supervisor, seconds: u64) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..seconds {
        sim.advance(Duration::from_secs(1));
        events.extend(sup.tick(card).unwrap());
    }
    events
}

fn lock(sim: &Sim, card: &TimeCard, sup: &mut Supervisor, preset: Preset) {
    let settle = (12.0 * preset.params().discipline_tau_s).max(600.0) as u64;
    run(sim, card, sup, settle);
    assert!(
        card.status().unwrap().in_sync,
        "{preset}: not in sync after {settle} s"
    );
}

#[test]
fn locked_card_tracks_truth_within_tens_of_ns() {
    // The host clock is 250 µs off; init seeds from it, GNSS pulls the card in.
    let (sim, card) = rig(Preset::Rubidium, noon_tai(), 250_000);
    let mut sup = Supervisor::new();
    assert!(
        error_ns(&sim, &card).abs() > 200_000,
        "seeded from the (wrong) host clock"
    );
    lock(&sim, &card, &mut sup, Preset::Rubidium);
    let mut worst = 0i64;
    for _ in 0..120 {
        sim.advance(Duration::from_millis(1000));
        worst = worst.max(error_ns(&sim, &card).abs());
        sup.tick(&card).unwrap();
    }
    let status = card.status().unwrap();
    assert!(
        status.in_sync && !status.in_holdover && !status.pps_lost,
        "{status:?}"
    );
    assert_eq!(status.clock_source, Some(ClockSource::Tod));
    assert!(worst < 50, "locked error up to {worst} ns");
    assert!(status.servo_offset_ns.abs() < 30, "{status:?}");
    println!("locked: worst |card - truth| over 120 s = {worst} ns");
}

fn holdover(preset: Preset) {
    let (sim, card) = rig(preset, noon_tai(), 0);
    let mut sup = Supervisor::new();
    lock(&sim, &card, &mut sup, preset);
    let p = preset.params();
    let start_err = error_ns(&sim, &card);
    sim.inject(&Fault::GnssLoss);
    let events = run(&sim, &card, &mut sup, 5);
    assert!(events.contains(&Event::GnssLost), "{events:?}");
    assert!(sup.state().gnss_lost_since_ns.is_some());
    let status = card.status().unwrap();
    assert!(status.in_holdover, "{status:?}");
    let mut elapsed = 5u64;
    for (label, until) in [("1 h", 3600u64), ("24 h", 86_400)] {
        // Coarse steps: the card still processes every second inside.
        while elapsed < until {
            let step = (until - elapsed).min(600);
            sim.advance(Duration::from_secs(step));
            elapsed += step;
            sup.tick(&card).unwrap();
        }
        let err = error_ns(&sim, &card);
        let bound = p.holdover_bound_ns(until as f64);
        println!(
            "{preset} holdover {label}: error {err} ns (start {start_err} ns), bound {bound:.0} ns"
        );
        assert!(
            (err as f64).abs() <= bound,
            "{preset}: holdover error {err} ns after {label} exceeds {bound:.0} ns"
        );
        let st = card.status().unwrap();
        assert!(st.in_holdover, "{st:?}");
        assert!(sup.state().gnss_lost_since_ns.is_some(), "gnss_sync LOST");
    }
    assert!(p.holdover_bound_ns(86_400.0) <= p.holdover_spec_24h_ns);
    // GNSS returns: the card relocks to truth and leaves holdover.
    sim.inject(&Fault::GnssRestore);
    let events = run(&sim, &card, &mut sup, 120);
    assert!(events.contains(&Event::GnssRestored), "{events:?}");
    let st = card.status().unwrap();
    assert!(st.in_sync && !st.in_holdover, "{st:?}");
    let err = error_ns(&sim, &card);
    assert!(err.abs() < 100, "{preset}: after recovery {err} ns");
}

#[test]
fn holdover_ocxo_within_preset_bound_for_24h_and_recovers() {
    holdover(Preset::Ocxo);
}

#[test]
fn holdover_rubidium_within_preset_bound_for_24h_and_recovers() {
    holdover(Preset::Rubidium);
}

#[test]
fn holdover_csac_within_preset_bound_for_24h_and_recovers() {
    holdover(Preset::Csac);
}

#[test]
fn gnss_time_jump_is_detected_and_not_followed() {
    let (sim, card) = rig(Preset::Rubidium, noon_tai(), 0);
    let mut sup = Supervisor::new();
    lock(&sim, &card, &mut sup, Preset::Rubidium);
    sim.inject(&Fault::TimeJump { seconds: 5 });
    sim.advance(Duration::from_millis(1500));
    // The FPGA's TOD slave applied the jump; the driver refuses to return it.
    match card.read_time() {
        Err(CardError::TimeJump { jump_ns }) => assert!((jump_ns - 5 * NS).abs() < 1_000_000),
        other => panic!("expected a time jump error, got {other:?}"),
    }
    let events = sup.tick(&card).unwrap();
    assert!(
        events.iter().any(|e| matches!(e, Event::TimeJumpRejected { corrected_ns, .. } if *corrected_ns == -5 * NS)),
        "{events:?}"
    );
    assert_eq!(card.clock_source().unwrap(), Some(ClockSource::Regs));
    assert!(sup.state().distrust.is_some());
    assert!(error_ns(&sim, &card).abs() < 100, "jump undone exactly");
    // The spoofer keeps lying for a minute: the card holds over on its oscillator.
    let events = run(&sim, &card, &mut sup, 60);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::TimeJumpRejected { .. })),
        "{events:?}"
    );
    let err = error_ns(&sim, &card);
    assert!(err.abs() < 200, "followed the spoofer? error {err} ns");
    // Operator confirms GNSS is fine again after the spoofing ends.
    sim.inject(&Fault::ClearSpoofing);
    sup.trust_gnss(&card).unwrap();
    assert_eq!(card.clock_source().unwrap(), Some(ClockSource::Tod));
    run(&sim, &card, &mut sup, 30);
    assert!(card.status().unwrap().in_sync);
    assert!(error_ns(&sim, &card).abs() < 50);
}

#[test]
fn gnss_is_trusted_again_from_nmea_after_spoofing_ends() {
    use timecard_driver::gnss::NmeaReader;
    use timecard_sim::pty::GnssPty;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gnss");
    let mut pty = GnssPty::open(Some(&link)).unwrap();
    let (sim, card) = rig(Preset::Rubidium, noon_tai(), 0);
    let mut sup = Supervisor::with_nmea(NmeaReader::open(&link, 115_200).unwrap());
    let mut step = |sup: &mut Supervisor, secs: u64| {
        let mut ev = Vec::new();
        for _ in 0..secs {
            sim.advance(Duration::from_secs(1));
            pty.write_sentences(&sim.take_nmea());
            ev.extend(sup.tick(&card).unwrap());
        }
        ev
    };
    step(&mut sup, 400);
    sim.inject(&Fault::TimeJump { seconds: -3 });
    let ev = step(&mut sup, 20);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::TimeJumpRejected { .. })),
        "{ev:?}"
    );
    assert!(!ev.contains(&Event::GnssTrusted), "GNSS still lies: {ev:?}");
    sim.inject(&Fault::ClearSpoofing);
    let ev = step(&mut sup, 15);
    assert!(ev.contains(&Event::GnssTrusted), "{ev:?}");
    assert_eq!(card.clock_source().unwrap(), Some(ClockSource::Tod));
    step(&mut sup, 20);
    assert!(error_ns(&sim, &card).abs() < 50);
    assert!(sup.state().last_gnss_time.is_some());
}

#[test]
fn leap_second_is_announced_inserted_and_time_stays_continuous() {
    // Start at 23:58:00 UTC on 2026-12-31, with a leap second at midnight.
    let midnight = civil::days_from_civil(2027, 1, 1) * 86_400;
    let start = (midnight - 120 + 37) * NS;
    let (sim, card) = rig(Preset::Rubidium, start - 600 * NS, 0);
    let mut sup = Supervisor::new();
    run(&sim, &card, &mut sup, 600);
    sim.inject(&Fault::LeapSecond {
        midnight_unix_s: midnight,
        delta: 1,
    });
    sim.advance(Duration::from_secs(1));
    let st = card.status().unwrap();
    assert!(
        st.utc.leap_announce && st.utc.leap_61 && !st.utc.leap_59,
        "{st:?}"
    );
    assert_eq!(st.utc.offset_s, 37);
    assert!(
        (100..=120).contains(&st.seconds_to_leap),
        "{}",
        st.seconds_to_leap
    );
    let _ = sim.take_nmea();
    let mut saw_60 = false;
    let mut events = Vec::new();
    for _ in 0..240 {
        sim.advance(Duration::from_secs(1));
        saw_60 |= sim
            .take_nmea()
            .iter()
            .any(|l| l.starts_with("$GNZDA,235960"));
        assert!(
            error_ns(&sim, &card).abs() < 50,
            "TAI stays continuous through the leap"
        );
        events.extend(sup.tick(&card).unwrap());
    }
    assert!(saw_60, "the receiver labelled 23:59:60");
    let st = card.status().unwrap();
    assert_eq!(st.utc.offset_s, 38);
    assert!(!st.utc.leap_announce);
    assert!(
        events.contains(&Event::UtcOffsetChanged {
            old: Some(37),
            new: 38
        }),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(
        e,
        Event::TimeJumpRejected { .. } | Event::TimeJumpAccepted { .. }
    )));
    assert!(st.in_sync);
}

#[test]
fn dead_card_is_reported_never_garbage_time() {
    let (sim, card) = rig(Preset::Ocxo, noon_tai(), 0);
    sim.inject(&Fault::CardRemoved);
    assert!(matches!(card.read_time(), Err(CardError::CardGone)));
    assert!(matches!(card.status(), Err(CardError::CardGone)));
    assert!(matches!(card.identify(), Err(CardError::CardGone)));
    let msg = card.read_time().unwrap_err().to_string();
    assert!(msg.contains("0xFFFFFFFF") && msg.contains("lspci"), "{msg}");
    let reopen = TimeCard::open(
        Arc::new(SimBar::new(sim.clone())),
        Arc::new(SimHostClock::new(sim.clone(), 0)),
    );
    assert!(matches!(reopen, Err(CardError::CardGone)));
    sim.inject(&Fault::CardRestored);
    card.reanchor();
    assert!(card.read_time().is_ok());
}

#[test]
fn set_step_slew_and_adjtime_move_the_card_exactly() {
    let (sim, card) = rig(Preset::Rubidium, noon_tai(), 0);
    card.set_clock_source(ClockSource::Regs).unwrap();
    let t = noon_tai() + 123_456_789;
    card.set_time(t).unwrap();
    assert_eq!(card.read_time().unwrap().card_tai_ns, t);
    card.step(3_500_000_000).unwrap();
    assert_eq!(card.read_time().unwrap().card_tai_ns, t + 3_500_000_000);
    card.step(-7_000_000_001).unwrap();
    assert_eq!(card.read_time().unwrap().card_tai_ns, t - 3_500_000_001);
    let before = card.read_time().unwrap().card_tai_ns - sim.truth_tai_ns();
    card.slew(500_000, 1_000_000_000).unwrap();
    sim.advance(Duration::from_millis(1200));
    let after = card.read_time().unwrap().card_tai_ns - sim.truth_tai_ns();
    assert!(
        (after - before - 500_000).abs() < 100,
        "slewed {} ns",
        after - before
    );
    assert_eq!(
        card.clock_source().unwrap(),
        Some(ClockSource::Regs),
        "source restored"
    );
    let before = error_ns(&sim, &card);
    card.adjtime(2 * NS).unwrap();
    assert!((error_ns(&sim, &card) - before - 2 * NS).abs() < 1000);
    assert!(card.slew(1 << 40, 1).is_err());
    assert!(card.set_time(-1).is_err());
}

#[test]
fn timestampers_capture_gnss_phc_and_external_pps() {
    let (sim, card) = rig(Preset::Rubidium, noon_tai(), 0);
    let mut sup = Supervisor::new();
    lock(&sim, &card, &mut sup, Preset::Rubidium);
    card.enable_extts(0, true).unwrap();
    card.enable_extts(5, true).unwrap();
    card.enable_extts(1, true).unwrap();
    sim.inject(&Fault::ExternalPps {
        offset_ns: Some(250_000_000),
    });
    sim.advance(Duration::from_millis(1100));
    let gnss = card.poll_extts(0).unwrap().expect("GNSS PPS event");
    let phc = card.poll_extts(5).unwrap().expect("PHC PPS event");
    let ext = card.poll_extts(1).unwrap().expect("external PPS event");
    assert!(
        (gnss.card_tai_ns.rem_euclid(NS) - NS / 2).abs() > NS / 2 - 50,
        "{gnss:?}"
    );
    assert_eq!(phc.card_tai_ns % NS, 0, "{phc:?}");
    assert!(
        (ext.card_tai_ns.rem_euclid(NS) - 250_000_000).abs() < 100,
        "{ext:?}"
    );
    assert!(card.poll_extts(0).unwrap().is_none(), "acknowledged");
    assert!(matches!(card.poll_extts(9), Err(CardError::NotPresent(_))));
}

#[test]
fn signal_generators_and_frequency_counters() {
    let (sim, card) = rig(Preset::Rubidium, noon_tai(), 0);
    let req = SignalRequest {
        period_ns: NS,
        duty_percent: 50,
        phase_ns: 0,
        active_high: true,
        start_ns: None,
    };
    let st = card.start_signal(0, req).unwrap();
    assert!(
        st.running && st.pulse_ns == NS / 2 && st.start_ns % NS == 0,
        "{st:?}"
    );
    assert!(matches!(
        card.start_signal(
            0,
            SignalRequest {
                duty_percent: 0,
                ..req
            }
        ),
        Err(CardError::InvalidArgument(_))
    ));
    let past = SignalRequest {
        start_ns: Some(1),
        ..req
    };
    assert!(matches!(
        card.start_signal(1, past),
        Err(CardError::InvalidArgument(_))
    ));
    // Setting the time stops a running generator with TIME_JUMP.
    card.set_time(card.read_time().unwrap().card_tai_ns + 2 * NS)
        .unwrap();
    let st = card.signal_status(0).unwrap();
    assert!(!st.running, "{st:?}");
    card.stop_signal(0).unwrap();
    // Frequency counter 1 on SMA1 (10 MHz reference) with a 1 s gate.
    card.set_sma_inputs(timecard_hw::regs::sma::IN_FREQ1)
        .unwrap();
    card.set_freq_gate(0, 1).unwrap();
    sim.advance(Duration::from_millis(2500));
    match card.read_freq(0).unwrap() {
        FreqReading::Hz(hz) => assert!((9_999_990..=10_000_010).contains(&hz), "{hz}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn identify_reports_firmware_and_capabilities() {
    let (_sim, card) = rig(Preset::Ocxo, noon_tai(), 0);
    let id = card.identify().unwrap();
    assert_eq!(id.board, timecard_hw::pci::Board::Meta);
    assert_eq!(id.pci_id.to_string(), "1d9b:0400");
    assert_eq!(id.firmware.to_string(), "1.20");
    assert_eq!(id.firmware_kind, "fw");
    assert!(id.capabilities.signal && id.capabilities.freq);
    assert_eq!(id.clock_ip_version, (0, 1, 0));
}
