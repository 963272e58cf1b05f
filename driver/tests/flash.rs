//! The flash API against the simulated card: identify the chip, read the
//! golden and regular images, write a new image that boots after a reset,
//! refuse what could brick the card, and survive a power cut at any register
//! access with a card that still boots and a second flash that recovers.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use timecard_driver::bar::{Bar, BarError};
use timecard_driver::device::open_sim;
use timecard_driver::flash::{FlashError, Phase};
use timecard_driver::simbar::{SimBar, SimHostClock};
use timecard_driver::{SystemClock, TimeCard};
use timecard_hw::firmware;
use timecard_hw::pci::{Board, PciId};
use timecard_sim::card::{GOLDEN_VERSION, make_bitstream};
use timecard_sim::{Fault, Sim, SimConfig};

const FLASH_START: u32 = 0x40_0000;

fn sim() -> Sim {
    Sim::new(&SimConfig::default()).unwrap()
}

fn image(version: u32, len: usize) -> Vec<u8> {
    firmware::pack(&make_bitstream(version, len), Board::Meta.id(), 1).unwrap()
}

fn go(_: timecard_driver::flash::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn running_version(card: &TimeCard) -> u32 {
    card.identify().unwrap().firmware.raw
}

#[test]
fn identifies_chip_protection_and_both_images() {
    let sim = sim();
    let card = open_sim(sim).unwrap();
    let flash = card.flash().unwrap();
    assert_eq!(flash.chip().jedec_id, [0x20, 0xBA, 0x19]);
    assert_eq!(flash.chip().size, 32 << 20);
    assert_eq!(flash.protected(), 0..FLASH_START);
    assert!(flash.protection_locked());
    assert_eq!(flash.golden_region(), 0..FLASH_START);
    assert_eq!(flash.image_region(), FLASH_START..32 << 20);
    let golden = flash.image_at(0).unwrap();
    assert_eq!(golden.check, Ok(()));
    assert_eq!(golden.header.unwrap().id(), Board::Meta.id());
    let regular = flash.image_at(FLASH_START).unwrap();
    assert_eq!(regular.check, Ok(()));
    assert_eq!(
        timecard_sim::card::bitstream_version(firmware::payload(&regular.bytes)),
        Some(timecard_sim::DEFAULT_FIRMWARE_VERSION)
    );
}

#[test]
fn flashed_image_boots_after_reset() {
    let sim = sim();
    let card = open_sim(sim.clone()).unwrap();
    let new = image(0x0000_8015, 300 * 1024 + 17);
    let mut phases = Vec::new();
    card.flash()
        .unwrap()
        .write_image(&new, &mut |p| {
            phases.push(p.phase);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(phases.first(), Some(&Phase::Write));
    assert_eq!(phases.last(), Some(&Phase::Verify));
    // Still running the old image until the FPGA reconfigures.
    assert_eq!(
        running_version(&card),
        timecard_sim::DEFAULT_FIRMWARE_VERSION
    );
    let flashed = card.flash().unwrap().image_at(FLASH_START).unwrap();
    assert_eq!(flashed.check, Ok(()));
    assert_eq!(flashed.bytes, new);
    sim.inject(&Fault::ResetFpga);
    let id = card.identify().unwrap();
    assert_eq!(id.firmware.raw, 0x0000_8015);
    assert_eq!(id.firmware.to_string(), "1.21");
    assert!(!id.firmware.loader);
}

#[test]
fn refuses_images_larger_than_the_region_and_leaves_flash_alone() {
    let sim = sim();
    let card = open_sim(sim.clone()).unwrap();
    let flash = card.flash().unwrap();
    let before = flash.image_at(FLASH_START).unwrap();
    let huge = vec![0u8; (32 << 20) - FLASH_START as usize + 1];
    assert!(matches!(
        flash.write_image(&huge, &mut go),
        Err(FlashError::TooLarge { .. })
    ));
    assert_eq!(flash.image_at(FLASH_START).unwrap(), before);
    assert!(matches!(
        flash.read(32 << 20, 1, &mut go),
        Err(FlashError::OutOfRange { .. })
    ));
}

#[test]
fn an_interrupted_flash_boots_golden_and_a_second_flash_recovers() {
    let sim = sim();
    let card = open_sim(sim.clone()).unwrap();
    let new = image(0x0000_8016, 256 * 1024);
    let mut blocks = 0;
    let err = card
        .flash()
        .unwrap()
        .write_image(&new, &mut |_| {
            blocks += 1;
            if blocks == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, FlashError::Interrupted { .. }), "{err}");
    assert!(err.to_string().contains("flash again"));
    let half = card.flash().unwrap().image_at(FLASH_START).unwrap();
    assert_eq!(half.header, None, "no header survives an interrupted flash");
    sim.inject(&Fault::ResetFpga);
    let id = card.identify().unwrap();
    assert!(id.firmware.loader, "golden fallback: {id:?}");
    assert_eq!(id.firmware.raw, GOLDEN_VERSION);
    card.flash().unwrap().write_image(&new, &mut go).unwrap();
    sim.inject(&Fault::ResetFpga);
    assert_eq!(running_version(&card), 0x0000_8016);
}

/// A BAR that loses power after a number of register accesses: the FPGA
/// resets (the SPI transaction in flight is lost) and every later access fails.
#[derive(Debug)]
struct PowerCutBar {
    inner: SimBar,
    left: AtomicU64,
}

impl PowerCutBar {
    fn tick(&self) -> Result<(), BarError> {
        match self.left.fetch_sub(1, Ordering::SeqCst) {
            0 => Err(BarError::Io(std::io::Error::other("power lost"))),
            1 => {
                self.inner.sim().inject(&Fault::ResetFpga);
                self.left.store(0, Ordering::SeqCst);
                Err(BarError::Io(std::io::Error::other("power lost")))
            }
            _ => Ok(()),
        }
    }
}

impl Bar for PowerCutBar {
    fn read32(&self, offset: u32) -> Result<u32, BarError> {
        self.tick()?;
        self.inner.read32(offset)
    }

    fn write32(&self, offset: u32, value: u32) -> Result<(), BarError> {
        self.tick()?;
        self.inner.write32(offset, value)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn describe(&self) -> String {
        "power-cut".into()
    }

    fn pci_id(&self) -> PciId {
        self.inner.pci_id()
    }
}

/// Register accesses one flash of a 40 KiB image takes, measured.
fn accesses_for_one_flash(new: &[u8]) -> u64 {
    let sim = sim();
    let bar = Arc::new(PowerCutBar {
        inner: SimBar::new(sim.clone()),
        left: AtomicU64::new(u64::MAX / 2),
    });
    let card = TimeCard::open(bar.clone(), Arc::new(SystemClock)).unwrap();
    card.flash().unwrap().write_image(new, &mut go).unwrap();
    u64::MAX / 2 - bar.left.load(Ordering::SeqCst)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Power cut at any register access of a flash: the card always boots
    /// (old image, golden fallback or the new image, never nothing), the
    /// golden image is intact, and a second flash always recovers.
    #[test]
    fn power_cut_anywhere_never_bricks(fraction in 0.0f64..1.0) {
        let new = image(0x0000_8017, 40 * 1024);
        let total = accesses_for_one_flash(&new);
        let cut_at = 1 + (fraction * total as f64) as u64;
        let sim = sim();
        let golden_before = open_sim(sim.clone()).unwrap().flash().unwrap().image_at(0).unwrap();
        let bar = Arc::new(PowerCutBar { inner: SimBar::new(sim.clone()), left: AtomicU64::new(cut_at) });
        let result = TimeCard::open(bar, Arc::new(SimHostClock::new(sim.clone(), 0)))
            .map_err(FlashError::from)
            .and_then(|card| card.flash()?.write_image(&new, &mut go));
        prop_assert!(result.is_err(), "the cut at {cut_at}/{total} interrupts the flash");
        // The power cut reset the FPGA; a fresh driver sees what it booted.
        let card = open_sim(sim.clone()).unwrap();
        let id = card.identify().unwrap();
        prop_assert!(
            [timecard_sim::DEFAULT_FIRMWARE_VERSION, GOLDEN_VERSION, 0x0000_8017].contains(&id.firmware.raw),
            "booted {:#x}", id.firmware.raw
        );
        let flash = card.flash().unwrap();
        prop_assert_eq!(flash.image_at(0).unwrap(), golden_before);
        flash.write_image(&new, &mut go).unwrap();
        sim.inject(&Fault::ResetFpga);
        prop_assert_eq!(running_version(&card), 0x0000_8017);
    }
}

/// A BAR whose SPI receive data is corrupted now and then (a flaky bus).
#[derive(Debug)]
struct FlakyBar {
    inner: SimBar,
    state: AtomicU64,
    one_in: u64,
}

impl Bar for FlakyBar {
    fn read32(&self, offset: u32) -> Result<u32, BarError> {
        let v = self.inner.read32(offset)?;
        let spi = Board::Meta.layout().spi_flash.unwrap_or(0);
        if offset != spi + timecard_hw::spi::xspi::DRR {
            return Ok(v);
        }
        let mut x = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Ok(if x.is_multiple_of(self.one_in) {
            v ^ (x >> 40) as u32 & 0xFF
        } else {
            v
        })
    }

    fn write32(&self, offset: u32, value: u32) -> Result<(), BarError> {
        self.inner.write32(offset, value)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn describe(&self) -> String {
        "flaky".into()
    }

    fn pci_id(&self) -> PciId {
        self.inner.pci_id()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Corrupted reads never panic, never report a wrong flash as verified,
    /// and never cost the golden image.
    #[test]
    fn corrupted_reads_are_errors_not_panics(seed in any::<u64>(), one_in in 200u64..20_000) {
        let sim = sim();
        let golden = open_sim(sim.clone()).unwrap().flash().unwrap().image_at(0).unwrap();
        let bar = Arc::new(FlakyBar { inner: SimBar::new(sim.clone()), state: AtomicU64::new(seed), one_in });
        let card = TimeCard::open(bar, Arc::new(SimHostClock::new(sim.clone(), 0))).unwrap();
        let new = image(0x0000_8019, 16 * 1024);
        if let Ok(flash) = card.flash() {
            let _ = flash.image_at(0);
            let _ = flash.image_at(FLASH_START);
            let _ = flash.read(0, 70_000, &mut go);
            if flash.write_image(&new, &mut go).is_ok() {
                // Verified means the cells really hold the image.
                let clean = open_sim(sim.clone()).unwrap();
                let stored = clean.flash().unwrap().image_at(FLASH_START).unwrap();
                prop_assert_eq!(stored.bytes, new);
            }
        }
        let clean = open_sim(sim.clone()).unwrap();
        prop_assert_eq!(clean.flash().unwrap().image_at(0).unwrap(), golden);
    }
}
