//! # timecard-sim
//!
//! A software OCP Time Card that stands in for the hardware everywhere.
//!
//! - [`card`]: the card itself: BAR0 register semantics of the clock, TOD,
//!   timestampers, PPS, signal generators, frequency counters and image
//!   blocks, the FPGA's PPS servo, SPI flash and boot.
//! - [`spi`]: the configuration-flash path behind BAR0's `spi_flash` block:
//!   a Xilinx AXI Quad SPI controller and a Micron SPI NOR chip with block
//!   protection over the golden image. Its registers answer without moving
//!   simulated time, so a flash tool can push megabytes through them.
//! - [`oscillator`]: the 10 MHz reference with aging and noise, presets for an
//!   OCXO and atomic clocks, disciplined to GNSS and coasting in holdover.
//! - [`gnss`]: the receiver: PPS with jitter, NMEA with the leap-second
//!   offset, faults.
//! - [`Sim`]: a handle on one card, in-process or in a shared-memory file
//!   ([`shm`]), with ground truth, fault injection and time control (a manual
//!   clock for deterministic tests, or real time with acceleration).
//! - [`pty`] and [`runner`]: the GNSS UART as a real pseudo-terminal, fed in
//!   real time.
//!
//! Ground truth (true TAI time) is visible here and to tests only; the driver
//! sees nothing but registers.

pub mod card;
pub mod flash;
pub mod gnss;
pub mod oscillator;
pub mod pty;
pub mod rng;
pub mod runner;
pub mod shm;
pub mod spi;
pub mod timebase;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timecard_hw::firmware;
use timecard_hw::pci::Board;
use timecard_hw::regs::ClockSource;

use crate::card::{BootState, CardParams, CardState, FLASH_LEN, GOLDEN_VERSION};
use crate::flash::{FlashMut, FlashRef};
use crate::gnss::{GnssStatus, NS_PER_S};
use crate::oscillator::Preset;
use crate::timebase::TimeBase;

pub use crate::card::DEFAULT_FIRMWARE_VERSION;

/// TAI − UTC in force since 2017-01-01.
pub const TAI_UTC_NOW: i32 = 37;

/// How truth time advances.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClockMode {
    /// Truth moves only through [`Sim::advance`]: deterministic, as fast as the CPU allows.
    Manual,
    /// Truth follows the host's monotonic clock, scaled by `acceleration`.
    Realtime {
        /// Simulated seconds per wall second.
        acceleration: f64,
    },
}

/// Configuration of a new simulated card.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Board model; must be one with the fb layout (Meta, Celestica, ADVA X1).
    pub board: Board,
    /// Oscillator preset.
    pub preset: Preset,
    /// Noise seed.
    pub seed: u64,
    /// Truth TAI time at power-on, ns; `None` takes the host's clock (UTC + 37 s).
    pub start_tai_ns: Option<i64>,
    /// Time mode.
    pub mode: ClockMode,
    /// GNSS time to first fix, seconds.
    pub ttff_s: f64,
    /// GNSS PPS jitter, 1-sigma ns.
    pub pps_jitter_ns: f64,
    /// TAI − UTC at power-on.
    pub tai_utc_s: i32,
    /// EEPROM serial number.
    pub serial: [u8; 6],
    /// Image-version register value of the firmware image written to flash at manufacture.
    pub firmware_version: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            board: Board::Meta,
            preset: Preset::Rubidium,
            seed: 1,
            start_tai_ns: None,
            mode: ClockMode::Manual,
            ttff_s: 2.0,
            pps_jitter_ns: 3.0,
            tai_utc_s: TAI_UTC_NOW,
            serial: [0x3c, 0xfd, 0xfe, 0x00, 0x00, 0x01],
            firmware_version: DEFAULT_FIRMWARE_VERSION,
        }
    }
}

/// Errors from creating or opening a simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The board model does not use the fb layout the simulator implements.
    #[error("the simulator implements the Meta/fb register layout; {0} is not supported")]
    UnsupportedBoard(Board),
    /// A path does not fit the shared state.
    #[error("path {0} is longer than 127 bytes")]
    PathTooLong(std::path::PathBuf),
    /// Shared-memory file problem.
    #[error(transparent)]
    Shm(#[from] shm::ShmError),
}

/// The unit of shared state: time base, card and NMEA bookkeeping (plain data).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Core {
    /// Where truth time comes from.
    pub timebase: TimeBase,
    /// The card.
    pub card: CardState,
    /// Next TAI second whose NMEA sentences have not been taken yet.
    pub nmea_next_second: i64,
    /// Path of the GNSS pseudo-terminal serving this card (NUL-padded), if any.
    pub gnss_pty: [u8; 128],
}

impl Core {
    /// Brings the card up to the time base's current truth time.
    pub fn sync(&mut self) {
        if let Some(now) = self.timebase.now() {
            self.card.advance_to(now);
        }
    }
}

/// A fault to inject at run time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// GNSS signals lost: no PPS, NMEA status V.
    GnssLoss,
    /// GNSS signals back; the receiver reacquires after a hot start (1 s).
    GnssRestore,
    /// Antenna open circuit: like a loss, and the antenna status says so.
    AntennaFault,
    /// Antenna repaired.
    AntennaRestore,
    /// Spoofing-like jump: PPS and time of day suddenly `seconds` away from truth.
    TimeJump {
        /// Whole seconds of offset in the reported time of day.
        seconds: i64,
    },
    /// Spoofing-like PPS phase step, ns.
    PpsPhaseJump {
        /// Phase offset of every PPS edge from true seconds.
        ns: i64,
    },
    /// Spoofing ends: time of day and PPS phase true again.
    ClearSpoofing,
    /// Schedule a leap second at the end of the UTC day that ends at `midnight_unix_s`.
    LeapSecond {
        /// Unix time of the UTC midnight at which the leap takes effect.
        midnight_unix_s: i64,
        /// +1 inserts 23:59:60, −1 deletes 23:59:59.
        delta: i32,
    },
    /// Oscillator frequency step (fractional).
    FrequencyStep {
        /// Added to the oscillator's fractional frequency offset.
        fractional: f64,
    },
    /// The card stops responding: reads return all-ones as a removed PCIe device does.
    CardRemoved,
    /// The card answers again.
    CardRestored,
    /// An external PPS appears on the SMA inputs (timestampers 1–4), or goes away.
    ExternalPps {
        /// Offset from true seconds in ns, or `None` to remove the signal.
        offset_ns: Option<i64>,
    },
    /// PCIe reset / power cycle of the FPGA: registers reset, image rebooted from flash.
    ResetFpga,
}

/// Ground truth and internal state, for tests, status and the dashboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimSnapshot {
    /// True TAI time, ns since the epoch.
    pub truth_tai_ns: i64,
    /// Card time, ns since the epoch.
    pub card_ns: i64,
    /// Card time minus truth, ns.
    pub card_error_ns: i64,
    /// Clock status IN_SYNC.
    pub in_sync: bool,
    /// Clock status IN_HOLDOVER.
    pub in_holdover: bool,
    /// Active clock source, by name.
    pub clock_source: String,
    /// Oscillator preset parameters' 24 h holdover spec, ns.
    pub holdover_spec_24h_ns: f64,
    /// Oscillator fractional frequency offset now.
    pub oscillator_freq_offset: f64,
    /// GNSS receiver state.
    pub gnss: GnssStatus,
    /// Whether the card answers on the bus.
    pub card_removed: bool,
    /// Running image version register.
    pub image_version: u32,
    /// Whether the regular image booted (false: golden fallback, reflash needed).
    pub regular_image: bool,
    /// How the FPGA booted and why: `regular`, `golden-fallback` (the regular
    /// image is missing or invalid) or `no-image` (neither image is valid; the
    /// card does not answer).
    #[serde(default)]
    pub boot: String,
    /// Simulation mode.
    pub mode: ClockMode,
    /// Integration steps taken so far.
    pub steps: u64,
}

#[derive(Debug)]
enum Backend {
    Local(Box<Mutex<(Core, Vec<u8>)>>),
    Shared(shm::Mapping),
}

/// A handle on one simulated card; cheap to clone, shareable between threads.
#[derive(Clone, Debug)]
pub struct Sim {
    backend: Arc<Backend>,
}

fn build_core(cfg: &SimConfig, flash: &mut [u8]) -> Result<Core, SimError> {
    if !matches!(cfg.board, Board::Meta | Board::Celestica | Board::AdvaX1) {
        return Err(SimError::UnsupportedBoard(cfg.board));
    }
    // Manufacture: the golden image at 0, the regular image at flash_start.
    // (`CardState::power_on` write-protects the golden region.)
    let pack = |version: u32| {
        firmware::pack(&card::make_bitstream(version, 64 * 1024), cfg.board.id(), 1)
            .expect("a 64 KiB image always packs")
    };
    let mut cells = FlashMut::new(flash);
    cells
        .program(0, &pack(GOLDEN_VERSION))
        .expect("golden image fits in flash");
    cells
        .program(
            cfg.board.layout().flash_start as usize,
            &pack(cfg.firmware_version),
        )
        .expect("image fits in flash");
    // Truth and the real-time anchor are taken together, so a simulation that
    // starts "now" agrees with the host's clock to within a microsecond.
    let start = cfg
        .start_tai_ns
        .unwrap_or_else(|| timebase::realtime_ns() + i64::from(cfg.tai_utc_s) * NS_PER_S);
    let timebase = match cfg.mode {
        ClockMode::Manual => TimeBase::manual(),
        ClockMode::Realtime { acceleration } => TimeBase::realtime(start, acceleration),
    };
    let params = CardParams {
        board: cfg.board,
        oscillator: cfg.preset.params(),
        seed: cfg.seed,
        start_tai_ns: start,
        ttff_s: cfg.ttff_s,
        pps_jitter_ns: cfg.pps_jitter_ns,
        tai_utc_s: cfg.tai_utc_s,
        serial: cfg.serial,
    };
    let card = CardState::power_on(&params, FlashRef::new(flash));
    Ok(Core {
        timebase,
        card,
        nmea_next_second: start.div_euclid(NS_PER_S) + 1,
        gnss_pty: [0; 128],
    })
}

impl Sim {
    /// A new in-process card.
    ///
    /// # Errors
    /// [`SimError::UnsupportedBoard`] for boards without the fb layout.
    pub fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        let mut flash = vec![0u8; FLASH_LEN];
        let core = build_core(cfg, &mut flash)?;
        Ok(Self {
            backend: Arc::new(Backend::Local(Box::new(Mutex::new((core, flash))))),
        })
    }

    /// A new card in a shared-memory file at `path` (created or replaced).
    ///
    /// # Errors
    /// Unsupported board or file errors.
    pub fn create_file(path: &Path, cfg: &SimConfig) -> Result<Self, SimError> {
        let mut scratch = vec![0u8; FLASH_LEN];
        let core = build_core(cfg, &mut scratch)?;
        let map = shm::Mapping::create(path, &core)?;
        map.with(|_, flash| flash.copy_from_slice(&scratch));
        Ok(Self {
            backend: Arc::new(Backend::Shared(map)),
        })
    }

    /// Attaches to a card that `timecard sim` (or [`Sim::create_file`]) made.
    ///
    /// # Errors
    /// File errors, or a file from another build.
    pub fn open_file(path: &Path) -> Result<Self, SimError> {
        Ok(Self {
            backend: Arc::new(Backend::Shared(shm::Mapping::open(path)?)),
        })
    }

    /// Where the card lives, for status output.
    #[must_use]
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Local(_) => "sim (in-process)".into(),
            Backend::Shared(m) => format!("sim:{}", m.path().display()),
        }
    }

    /// Runs `f` on the card brought up to the current truth time, with its flash.
    pub fn with<R>(&self, f: impl FnOnce(&mut Core, FlashMut<'_>) -> R) -> R {
        self.with_unsynced(|core, flash| {
            core.sync();
            f(core, flash)
        })
    }

    /// Runs `f` on the card as it is, without bringing it up to the current
    /// truth time (for accesses that do not depend on time, such as the SPI
    /// flash block), with its flash.
    pub fn with_unsynced<R>(&self, f: impl FnOnce(&mut Core, FlashMut<'_>) -> R) -> R {
        let run = |core: &mut Core, flash: &mut [u8]| f(core, FlashMut::new(flash));
        match &*self.backend {
            Backend::Local(m) => {
                let mut g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (core, flash) = &mut *g;
                run(core, flash)
            }
            Backend::Shared(map) => map.with(run),
        }
    }

    /// Reads a BAR register, as the card would answer a PCIe read now.
    /// The SPI flash block answers without advancing simulated time.
    #[must_use]
    pub fn read32(&self, offset: u32) -> u32 {
        self.with_unsynced(|c, _| {
            if c.card.spi_offset(offset).is_none() {
                c.sync();
            }
            c.card.read(offset)
        })
    }

    /// Writes a BAR register. Writes to the SPI flash block reach the flash
    /// chip and do not advance simulated time.
    pub fn write32(&self, offset: u32, value: u32) {
        self.with_unsynced(|c, flash| {
            if c.card.spi_offset(offset).is_none() {
                c.sync();
            }
            c.card.write_with_flash(offset, value, flash);
        });
    }

    /// Moves truth time forward by `d`, running the card through it. In real-time
    /// mode this jumps the time base forward as well.
    pub fn advance(&self, d: Duration) {
        let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX / 4);
        self.with(|c, _| {
            let target = c.card.truth_ns + ns;
            if c.timebase.realtime {
                c.timebase.skip(ns);
            }
            c.card.advance_to(target);
        });
    }

    /// True TAI time now, ns since the epoch.
    #[must_use]
    pub fn truth_tai_ns(&self) -> i64 {
        self.with(|c, _| c.card.truth_ns)
    }

    /// Ground truth and internal state now.
    #[must_use]
    pub fn snapshot(&self) -> SimSnapshot {
        self.with(|c, _| {
            let k = &c.card;
            let g = &k.gnss;
            SimSnapshot {
                truth_tai_ns: k.truth_ns,
                card_ns: k.card_time_ns(),
                card_error_ns: k.card_time_ns() - k.truth_ns,
                in_sync: k.in_sync(),
                in_holdover: k.in_holdover(),
                clock_source: k
                    .clock_source()
                    .map_or_else(|| "unknown".into(), |s| s.name().into()),
                holdover_spec_24h_ns: k.osc.params.holdover_spec_24h_ns,
                oscillator_freq_offset: k.osc.freq_offset(),
                gnss: GnssStatus {
                    fix: g.has_fix(k.truth_ns),
                    signal_lost: g.signal_lost,
                    antenna_fault: g.antenna_fault,
                    tod_offset_s: g.tod_offset_s,
                    pps_offset_ns: g.pps_offset_ns,
                    tai_utc_s: g.tai_utc_s,
                    leap_delta: g.leap_delta,
                    seconds_to_leap: g.seconds_to_leap(k.truth_ns.div_euclid(NS_PER_S)),
                },
                card_removed: k.faults.card_removed,
                image_version: k.image_version,
                regular_image: k.boot == BootState::Regular,
                boot: k.boot.name().into(),
                mode: if c.timebase.realtime {
                    ClockMode::Realtime {
                        acceleration: c.timebase.acceleration,
                    }
                } else {
                    ClockMode::Manual
                },
                steps: k.steps,
            }
        })
    }

    /// Injects a fault now.
    pub fn inject(&self, fault: &Fault) {
        self.with(|c, flash| {
            let now = c.card.truth_ns;
            let k = &mut c.card;
            match *fault {
                Fault::GnssLoss => k.gnss.signal_lost = true,
                Fault::GnssRestore => {
                    if k.gnss.signal_lost {
                        k.gnss.signal_lost = false;
                        k.gnss.fix_from_ns = now + NS_PER_S;
                    }
                }
                Fault::AntennaFault => k.gnss.antenna_fault = true,
                Fault::AntennaRestore => {
                    if k.gnss.antenna_fault {
                        k.gnss.antenna_fault = false;
                        k.gnss.fix_from_ns = now + NS_PER_S;
                    }
                }
                Fault::TimeJump { seconds } => k.gnss.tod_offset_s = seconds,
                Fault::PpsPhaseJump { ns } => k.gnss.pps_offset_ns = ns,
                Fault::ClearSpoofing => {
                    k.gnss.tod_offset_s = 0;
                    k.gnss.pps_offset_ns = 0;
                }
                Fault::LeapSecond {
                    midnight_unix_s,
                    delta,
                } => k.gnss.schedule_leap(midnight_unix_s, delta),
                Fault::FrequencyStep { fractional } => k.osc.step_frequency(fractional),
                Fault::CardRemoved => k.faults.card_removed = true,
                Fault::CardRestored => k.faults.card_removed = false,
                Fault::ExternalPps { offset_ns } => {
                    k.faults.ext_pps = offset_ns.is_some();
                    k.faults.ext_pps_offset_ns = offset_ns.unwrap_or(0);
                }
                Fault::ResetFpga => k.reset_fpga(flash.as_ref()),
            }
            k.gnss_changed();
        });
    }

    /// NMEA sentences for the GNSS seconds that began since the last call
    /// (at most the two most recent seconds, so an accelerated run does not flood).
    #[must_use]
    pub fn take_nmea(&self) -> Vec<String> {
        self.with(|c, _| {
            let now_s = c.card.truth_ns.div_euclid(NS_PER_S);
            let first = c.nmea_next_second.max(now_s - 1);
            let mut out = Vec::new();
            for s in first..=now_s {
                out.extend(c.card.gnss.nmea_for_second(s));
            }
            c.nmea_next_second = now_s + 1;
            out
        })
    }

    /// Records the path where the GNSS UART of this card can be read.
    ///
    /// # Errors
    /// Paths longer than 127 bytes are refused.
    pub fn set_gnss_pty_path(&self, path: &Path) -> Result<(), SimError> {
        let bytes = path.as_os_str().as_encoded_bytes();
        if bytes.len() >= 128 {
            return Err(SimError::PathTooLong(path.to_path_buf()));
        }
        self.with(|c, _| {
            c.gnss_pty = [0; 128];
            c.gnss_pty[..bytes.len()].copy_from_slice(bytes);
        });
        Ok(())
    }

    /// The GNSS UART's path, if a runner serves one.
    #[must_use]
    pub fn gnss_pty_path(&self) -> Option<std::path::PathBuf> {
        self.with(|c, _| {
            let len = c.gnss_pty.iter().position(|b| *b == 0).unwrap_or(128);
            (len > 0).then(|| {
                std::path::PathBuf::from(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                        &c.gnss_pty[..len],
                    ),
                )
            })
        })
    }

    /// Active clock source as the card reports it.
    #[must_use]
    pub fn clock_source(&self) -> Option<ClockSource> {
        self.with(|c, _| c.card.clock_source())
    }
}

#[cfg(test)]
mod tests;
