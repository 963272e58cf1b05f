//! Register-level tests of the simulated card (no driver involved).

use std::time::Duration;

use timecard_hw::layout::FB;
use timecard_hw::regs::{clock, pps, ts};
use timecard_hw::sign_magnitude;

use super::*;

const T0: i64 = 1_800_000_000 * NS_PER_S;

fn sim(preset: Preset) -> Sim {
    Sim::new(&SimConfig {
        preset,
        start_tai_ns: Some(T0),
        ..SimConfig::default()
    })
    .unwrap()
}

fn reg(block: u32, off: u32) -> u32 {
    block + off
}

fn latch(s: &Sim) -> i64 {
    s.write32(
        reg(FB.clock, clock::CTRL),
        clock::CTRL_READ_TIME_REQ | clock::CTRL_ENABLE,
    );
    assert_ne!(
        s.read32(reg(FB.clock, clock::CTRL)) & clock::CTRL_READ_TIME_DONE,
        0
    );
    let ns = s.read32(reg(FB.clock, clock::TIME_NS));
    let sec = s.read32(reg(FB.clock, clock::TIME_SEC));
    i64::from(sec) * NS_PER_S + i64::from(ns)
}

fn set_time(s: &Sim, t: i64) {
    s.write32(
        reg(FB.clock, clock::SELECT),
        u32::from(ClockSource::Regs.as_u8()),
    );
    s.write32(reg(FB.clock, clock::ADJUST_NS), (t % NS_PER_S) as u32);
    s.write32(reg(FB.clock, clock::ADJUST_SEC), (t / NS_PER_S) as u32);
    s.write32(
        reg(FB.clock, clock::CTRL),
        clock::CTRL_ADJUST_TIME | clock::CTRL_ENABLE,
    );
}

fn select(s: &Sim, src: ClockSource) {
    s.write32(reg(FB.clock, clock::SELECT), u32::from(src.as_u8()));
}

#[test]
fn power_on_free_runs_from_zero_and_latches() {
    let s = sim(Preset::Rubidium);
    assert!(latch(&s) < NS_PER_S);
    s.advance(Duration::from_millis(1500));
    let t = latch(&s);
    assert!((t - 1_500_000_000).abs() < 10_000, "{t}");
    assert_eq!(s.clock_source(), Some(ClockSource::None));
    assert_eq!(s.snapshot().image_version, DEFAULT_FIRMWARE_VERSION);
    assert!(s.snapshot().regular_image);
}

#[test]
fn select_mirrors_low_byte_into_upper_half() {
    let s = sim(Preset::Ocxo);
    s.write32(reg(FB.clock, clock::SELECT), 0xABCD_0001);
    assert_eq!(s.read32(reg(FB.clock, clock::SELECT)), 0x0001_0001);
}

#[test]
fn register_adjustments_need_regs_selected() {
    let s = sim(Preset::Ocxo);
    s.write32(reg(FB.clock, clock::ADJUST_SEC), 1000);
    s.write32(
        reg(FB.clock, clock::CTRL),
        clock::CTRL_ADJUST_TIME | clock::CTRL_ENABLE,
    );
    assert!(latch(&s) < NS_PER_S, "ignored while NONE is selected");
    set_time(&s, T0);
    assert!((latch(&s) - T0).abs() < 1000);
    // Offset step of -250 ns applied immediately (window 0).
    s.write32(
        reg(FB.clock, clock::OFFSET_NS),
        sign_magnitude::encode(-250),
    );
    s.write32(reg(FB.clock, clock::OFFSET_WINDOW_NS), 0);
    s.write32(
        reg(FB.clock, clock::CTRL),
        clock::CTRL_ADJUST_OFFSET | clock::CTRL_ENABLE,
    );
    assert!((latch(&s) - (T0 - 250)).abs() < 50);
}

#[test]
fn gnss_discipline_locks_card_to_truth() {
    let s = sim(Preset::Ocxo);
    set_time(&s, T0 + 300_000); // 300 µs off
    select(&s, ClockSource::Tod);
    s.advance(Duration::from_secs(600));
    let snap = s.snapshot();
    assert!(snap.in_sync, "{snap:?}");
    assert!(!snap.in_holdover);
    assert!(snap.card_error_ns.abs() < 50, "{snap:?}");
    let status = s.read32(reg(FB.clock, clock::STATUS));
    assert_eq!(status & clock::STATUS_IN_SYNC, clock::STATUS_IN_SYNC);
}

#[test]
fn tod_source_fixes_whole_seconds_pps_source_does_not() {
    let s = sim(Preset::Rubidium);
    set_time(&s, T0 + 5 * NS_PER_S);
    select(&s, ClockSource::Pps);
    s.advance(Duration::from_secs(30));
    let e = s.snapshot().card_error_ns;
    assert!(
        (e - 5 * NS_PER_S).abs() < 1000,
        "PPS keeps whole seconds: {e}"
    );
    select(&s, ClockSource::Tod);
    s.advance(Duration::from_secs(30));
    assert!(s.snapshot().card_error_ns.abs() < 1000);
}

#[test]
fn gnss_loss_gives_supervision_error_and_holdover() {
    let s = sim(Preset::Rubidium);
    set_time(&s, T0);
    select(&s, ClockSource::Tod);
    s.advance(Duration::from_secs(120));
    assert!(s.snapshot().in_sync);
    s.inject(&Fault::GnssLoss);
    s.advance(Duration::from_secs(5));
    let st = s.read32(reg(FB.pps_to_clk.unwrap(), pps::STATUS));
    assert_ne!(st & pps::STATUS_SUPERV_ERR, 0);
    assert!(s.snapshot().in_holdover);
    // Write-one-to-clear, re-set while the PPS stays away.
    s.write32(reg(FB.pps_to_clk.unwrap(), pps::STATUS), st);
    assert_eq!(
        s.read32(reg(FB.pps_to_clk.unwrap(), pps::STATUS)) & pps::STATUS_SUPERV_ERR,
        0
    );
    s.advance(Duration::from_secs(2));
    assert_ne!(
        s.read32(reg(FB.pps_to_clk.unwrap(), pps::STATUS)) & pps::STATUS_SUPERV_ERR,
        0
    );
    s.inject(&Fault::GnssRestore);
    s.advance(Duration::from_secs(30));
    let snap = s.snapshot();
    assert!(snap.in_sync && !snap.in_holdover, "{snap:?}");
}

#[test]
fn gnss_pps_timestamper_latches_and_drops_unacked() {
    let s = sim(Preset::Rubidium);
    set_time(&s, T0);
    select(&s, ClockSource::Tod);
    let base = FB.ts[0].unwrap();
    s.advance(Duration::from_secs(60));
    s.write32(base + ts::INTR, 1);
    s.advance(Duration::from_millis(1000));
    assert_eq!(s.read32(base + ts::INTR), 1);
    let ns = s.read32(base + ts::TIME_NS);
    assert!(
        !(50..=999_999_950).contains(&ns),
        "PPS edge near the second: {ns}"
    );
    s.advance(Duration::from_millis(2000));
    assert_ne!(s.read32(base + ts::ERROR) & ts::ERROR_DROP, 0);
}

#[test]
fn dead_card_reads_all_ones() {
    let s = sim(Preset::Ocxo);
    s.inject(&Fault::CardRemoved);
    assert_eq!(s.read32(reg(FB.clock, clock::STATUS)), u32::MAX);
    assert_eq!(s.read32(reg(FB.image.unwrap(), 0)), u32::MAX);
    s.inject(&Fault::CardRestored);
    assert_ne!(s.read32(reg(FB.image.unwrap(), 0)), u32::MAX);
}

#[test]
fn corrupt_flash_boots_golden_image() {
    let s = sim(Preset::Ocxo);
    s.with(|_, mut flash| {
        let start = FB.flash_start as usize + 100;
        flash.erase_sector(start - start % 4096).unwrap();
    });
    s.inject(&Fault::ResetFpga);
    let snap = s.snapshot();
    assert!(!snap.regular_image);
    assert_eq!(snap.boot, "golden-fallback");
    assert_eq!(snap.image_version, card::GOLDEN_VERSION);
}

#[test]
fn spi_block_accesses_do_not_advance_time() {
    let s = Sim::new(&SimConfig {
        mode: ClockMode::Realtime { acceleration: 1.0 },
        ..SimConfig::default()
    })
    .unwrap();
    let spi = FB.spi_flash.unwrap();
    let truth = || s.with_unsynced(|c, _| c.card.truth_ns);
    let before = s.truth_tai_ns();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        s.read32(spi + timecard_hw::spi::xspi::CR),
        spi::CR_RESET,
        "controller at reset values"
    );
    s.write32(spi + timecard_hw::spi::xspi::DTR, 0x9F);
    assert_eq!(truth(), before, "SPI accesses leave the card where it was");
    let _ = s.read32(reg(FB.clock, clock::STATUS));
    assert!(
        truth() >= before + 20_000_000,
        "other blocks bring it up to date"
    );
}

#[test]
fn shared_file_is_one_card_for_two_handles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.bar");
    let cfg = SimConfig {
        start_tai_ns: Some(T0),
        ..SimConfig::default()
    };
    let a = Sim::create_file(&path, &cfg).unwrap();
    let b = Sim::open_file(&path).unwrap();
    set_time(&a, T0);
    a.advance(Duration::from_secs(3));
    assert!((latch(&b) - (T0 + 3 * NS_PER_S)).abs() < 10_000);
    assert_eq!(b.snapshot().image_version, DEFAULT_FIRMWARE_VERSION);
    std::fs::write(dir.path().join("junk"), b"not a card").unwrap();
    let err = Sim::open_file(&dir.path().join("junk")).unwrap_err();
    assert!(
        err.to_string().contains("not a timecard simulator file"),
        "{err}"
    );
}

#[test]
fn realtime_mode_follows_the_host_clock() {
    let s = Sim::new(&SimConfig {
        mode: ClockMode::Realtime { acceleration: 1.0 },
        ..SimConfig::default()
    })
    .unwrap();
    let a = s.truth_tai_ns();
    std::thread::sleep(Duration::from_millis(50));
    let b = s.truth_tai_ns();
    assert!((40_000_000..1_000_000_000).contains(&(b - a)), "{}", b - a);
    let host_tai = timebase::realtime_ns() + 37 * NS_PER_S;
    assert!((b - host_tai).abs() < 1_000_000_000);
}

#[test]
fn nmea_follows_truth_seconds() {
    let s = sim(Preset::Rubidium);
    let _ = s.take_nmea();
    s.advance(Duration::from_secs(1));
    let lines = s.take_nmea();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let truth_s = s.truth_tai_ns() / NS_PER_S;
    let zda = lines.iter().find(|l| l.starts_with("$GNZDA")).unwrap();
    let utc = timecard_hw::nmea::parse(zda).unwrap().utc().unwrap();
    assert_eq!(utc.to_unix(), truth_s - 37);
}
