//! The simulated card: register file, FPGA clock, PPS servo and GNSS wiring.
//!
//! [`CardState`] is plain data (`#[repr(C)]`, `Copy`, no pointers) so that it
//! can live in a shared-memory file and be driven by several processes. All
//! behaviour is in methods that take the state and, where needed, the SPI
//! flash bytes. Time only moves when [`CardState::advance_to`] is called with
//! a later truth time; the caller (in-process handle, shared-memory handle or
//! real-time runner) decides where truth time comes from.
//!
//! Semantics follow the NetTimeLogic IP cores of the Time Card as `ptp_ocp`
//! drives them (see `docs/simulator.md` for where we had to choose):
//! - clock `select`: `TOD` disciplines phase from the GNSS PPS and whole
//!   seconds from the GNSS time of day; `PPS` disciplines phase only; `REGS`,
//!   `NONE` and the rest free-run on the oscillator. Register adjustments
//!   (time, offset, drift) take effect only while `REGS` is selected, which is
//!   why the driver selects it around them.
//! - the PPS slave runs a PI servo with the 16.16 gains from the clock's servo
//!   registers, spreading each correction over one second;
//! - `IN_SYNC` after four consecutive offsets within the threshold (20 ns),
//!   `IN_HOLDOVER` while in sync with no correction for 3 s;
//! - PPS supervision sets `SUPERV_ERR` when a pulse is more than 1.1 s late.

use timecard_hw::firmware;
use timecard_hw::layout::Layout;
use timecard_hw::pci::Board;
use timecard_hw::regs::{self, ClockSource};
use timecard_hw::sign_magnitude;
use timecard_hw::spi::nor;

use crate::flash::{FlashMut, FlashRef};
use crate::gnss::{Gnss, NS_PER_S};
use crate::oscillator::{Oscillator, OscillatorParams};
use crate::rng::Rng;
use crate::spi::{self, SpiFlashPort};

/// Number of timestampers: ts0..ts4 and the PHC PPS timestamper (index 5).
pub const TIMESTAMPERS: usize = 6;
/// Index of the PHC PPS timestamper (`TS5`, the `pps` block).
pub const TS_PHC_PPS: usize = 5;
/// Index of the GNSS PPS timestamper (ts0).
pub const TS_GNSS_PPS: usize = 0;
/// Size of the simulated SPI NOR flash.
pub const FLASH_LEN: usize = 32 << 20;
/// Image version of the golden (loader) image written at flash address 0 at
/// manufacture, which the FPGA falls back to when the regular image is bad.
pub const GOLDEN_VERSION: u32 = 0x0001_0000;
/// Image-version register value while no image booted (the card does not answer).
pub const NO_IMAGE_VERSION: u32 = u32::MAX;
/// Magic that starts a simulated bitstream; followed by the u32 LE image-version register value.
pub const SIM_BITSTREAM_MAGIC: [u8; 8] = *b"TCSIMBIT";
/// Image version of the regular image a new simulated card ships with (FPGA tag 1, version 20).
pub const DEFAULT_FIRMWARE_VERSION: u32 = 0x0000_8014;
/// How late (ns of truth time) a PPS may be before supervision flags it.
const PPS_SUPERVISION_NS: i64 = 1_100_000_000;
/// While not in sync, a PPS phase error above this is stepped out, not slewed, ns.
const PHASE_STEP_THRESHOLD_NS: f64 = 1_000.0;
/// Consecutive in-threshold offsets needed for `IN_SYNC`.
const IN_SYNC_COUNT: u32 = 4;
/// Seconds without a correction before `IN_HOLDOVER`.
const HOLDOVER_TIMEOUT_S: u32 = regs::clock::HOLDOVER_TIMEOUT_DEFAULT_S;
/// Nominal external reference frequency on SMA1, Hz.
const EXT_REF_HZ: f64 = 10_000_000.0;

/// How the card booted its FPGA image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BootState {
    /// The regular image at `flash_start` verified and runs.
    Regular = 0,
    /// The regular image is missing or invalid; the golden loader runs: reflash.
    GoldenFallback = 1,
    /// Neither image is valid: the FPGA never configured and the card does
    /// not answer on the bus (every read all-ones). Bricked; only possible by
    /// damaging the golden image, which block protection forbids over SPI.
    NoImage = 2,
}

impl BootState {
    /// Short name for status output: `regular`, `golden-fallback`, `no-image`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::GoldenFallback => "golden-fallback",
            Self::NoImage => "no-image",
        }
    }
}

/// Fault switches (plain data).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct Faults {
    /// The card dropped off the bus: reads return all-ones, writes are lost.
    pub card_removed: bool,
    /// External PPS on the SMA inputs (timestampers 1..4) present.
    pub ext_pps: bool,
    /// Offset of the external PPS from true seconds, ns.
    pub ext_pps_offset_ns: i64,
}

/// One signal timestamper (`ts_reg`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct Timestamper {
    enable: u32,
    error: u32,
    polarity: u32,
    cable_delay: u32,
    intr: u32,
    intr_mask: u32,
    event_count: u32,
    ts_count: u32,
    time_ns: u32,
    time_sec: u32,
}

impl Timestamper {
    fn event(&mut self, card_ns: i64) {
        if self.enable & 1 == 0 {
            return;
        }
        self.event_count = self.event_count.wrapping_add(1);
        if self.intr & 1 != 0 {
            self.error |= regs::ts::ERROR_DROP;
            return;
        }
        let t = card_ns + i64::from(self.cable_delay & 0xFFFF);
        self.ts_count = self.event_count;
        self.time_sec = t.div_euclid(NS_PER_S) as u32;
        self.time_ns = t.rem_euclid(NS_PER_S) as u32;
        self.intr = 1;
    }

    fn read(&self, off: u32) -> u32 {
        use regs::ts::*;
        match off {
            ENABLE => self.enable,
            ERROR => self.error,
            POLARITY => self.polarity,
            VERSION => regs::clock::IP_VERSION,
            CABLE_DELAY => self.cable_delay,
            INTR => self.intr,
            INTR_MASK => self.intr_mask,
            EVENT_COUNT => self.event_count,
            TS_COUNT => self.ts_count,
            TIME_NS => self.time_ns,
            TIME_SEC => self.time_sec,
            DATA_WIDTH | DATA => 0,
            _ => u32::MAX,
        }
    }

    fn write(&mut self, off: u32, v: u32) {
        use regs::ts::*;
        match off {
            ENABLE => {
                self.enable = v & 1;
                if self.enable == 0 {
                    self.intr = 0;
                    self.event_count = 0;
                    self.ts_count = 0;
                    self.error = 0;
                }
            }
            ERROR => self.error &= !v,
            POLARITY => self.polarity = v & 1,
            CABLE_DELAY => self.cable_delay = v & 0xFFFF,
            INTR => self.intr &= !v,
            INTR_MASK => self.intr_mask = v & 1,
            _ => {}
        }
    }
}

/// One signal generator (`signal_reg`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct SignalGen {
    ctrl: u32,
    status: u32,
    polarity: u32,
    cable_delay: u32,
    intr: u32,
    intr_mask: u32,
    start_ns: u32,
    start_sec: u32,
    pulse_ns: u32,
    pulse_sec: u32,
    period_ns: u32,
    period_sec: u32,
    repeat_count: u32,
    running: bool,
    pulses: u64,
}

impl SignalGen {
    fn start_time(&self) -> i64 {
        i64::from(self.start_sec) * NS_PER_S + i64::from(self.start_ns)
    }

    fn period(&self) -> i64 {
        i64::from(self.period_sec) * NS_PER_S + i64::from(self.period_ns)
    }

    fn stop(&mut self, status: u32) {
        self.running = false;
        self.status |= status;
        self.intr = 1;
    }

    /// Updates the pulse count at card time `card_ns`; stops when the repeat limit is reached.
    fn tick(&mut self, card_ns: i64) {
        if !self.running || card_ns < self.start_time() || self.period() <= 0 {
            return;
        }
        self.pulses = ((card_ns - self.start_time()) / self.period() + 1) as u64;
        if self.repeat_count != 0 && self.pulses >= u64::from(self.repeat_count) {
            self.pulses = u64::from(self.repeat_count);
            self.stop(0);
        }
    }

    fn read(&self, off: u32) -> u32 {
        use regs::signal::*;
        match off {
            CTRL => self.ctrl,
            STATUS => self.status,
            POLARITY => self.polarity,
            VERSION => regs::clock::IP_VERSION,
            CABLE_DELAY => self.cable_delay,
            INTR => self.intr,
            INTR_MASK => self.intr_mask,
            START_NS => self.start_ns,
            START_SEC => self.start_sec,
            PULSE_NS => self.pulse_ns,
            PULSE_SEC => self.pulse_sec,
            PERIOD_NS => self.period_ns,
            PERIOD_SEC => self.period_sec,
            REPEAT_COUNT => self.repeat_count,
            _ => u32::MAX,
        }
    }

    fn write(&mut self, off: u32, v: u32, card_ns: i64) {
        use regs::signal::*;
        match off {
            CTRL => {
                self.ctrl = v & 3;
                if v & CTRL_ENABLE == 0 {
                    self.running = false;
                } else if v & CTRL_VALID != 0 {
                    let pulse = i64::from(self.pulse_sec) * NS_PER_S + i64::from(self.pulse_ns);
                    if self.start_time() <= card_ns || self.period() <= 0 || pulse <= 0 {
                        self.stop(STATUS_ERROR);
                    } else {
                        self.running = true;
                        self.pulses = 0;
                    }
                }
            }
            STATUS => self.status &= !v,
            POLARITY => self.polarity = v & 1,
            CABLE_DELAY => self.cable_delay = v & 0xFFFF,
            INTR => self.intr = 0,
            INTR_MASK => self.intr_mask = v & 1,
            START_NS => self.start_ns = v,
            START_SEC => self.start_sec = v,
            PULSE_NS => self.pulse_ns = v,
            PULSE_SEC => self.pulse_sec = v,
            PERIOD_NS => self.period_ns = v,
            PERIOD_SEC => self.period_sec = v,
            REPEAT_COUNT => self.repeat_count = v,
            _ => {}
        }
    }
}

/// One frequency counter (`frequency_reg`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct FreqCounter {
    ctrl: u32,
    status: u32,
    elapsed_s: u32,
}

/// The FPGA's adjustable clock (`ocp_reg`) and the PPS slave's servo state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct ClockBlock {
    enabled: bool,
    read_done: bool,
    select: u32,
    /// Card time, ns since the epoch (whole part).
    pub card_ns: i64,
    /// Sub-nanosecond remainder of the card time.
    pub card_frac: f64,
    latched_ns: u32,
    latched_sec: u32,
    adjust_ns: u32,
    adjust_sec: u32,
    offset_reg: u32,
    offset_window: u32,
    drift_reg: u32,
    drift_window: u32,
    in_sync_threshold: u32,
    servo_regs: [u32; 4],
    servo_gains: [u32; 4],
    status_offset: u32,
    status_drift: u32,
    /// Offset still to slew, ns of card time.
    slew_remaining: f64,
    /// Slew rate, ns per ns of truth time.
    slew_rate: f64,
    /// Drift correction, fractional frequency.
    drift_rate: f64,
    servo_integral: f64,
    drift_integral: f64,
    good_offsets: u32,
    in_sync: bool,
    in_holdover: bool,
    seconds_since_correction: u32,
}

/// PPS slave (`pps_to_clk`) and PPS generator (`pps_to_ext`) registers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct PpsBlock {
    ctrl: u32,
    status: u32,
    polarity: u32,
    cable_delay: u32,
}

/// TOD slave registers (`tod_reg`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct TodBlock {
    ctrl: u32,
    status: u32,
    polarity: u32,
    adj_sec: u32,
    baud: u32,
}

/// Small register file for blocks that only store what is written (IRIG, DCF,
/// NMEA out, SMA maps, clock detector).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct Scratch {
    entries: [(u32, u32); 32],
    len: u32,
}

impl Scratch {
    fn get(&self, addr: u32) -> u32 {
        self.entries[..self.len as usize]
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(0, |(_, v)| *v)
    }

    fn set(&mut self, addr: u32, value: u32) {
        let n = self.len as usize;
        if let Some(e) = self.entries[..n].iter_mut().find(|(a, _)| *a == addr) {
            e.1 = value;
        } else if n < self.entries.len() {
            self.entries[n] = (addr, value);
            self.len += 1;
        }
    }
}

/// Static identity of the simulated card.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Identity {
    /// Board model code (index into [`Board::ALL`]).
    pub board_index: u32,
    /// EEPROM serial number (a MAC address).
    pub serial: [u8; 6],
}

impl Identity {
    /// The board model.
    #[must_use]
    pub fn board(&self) -> Board {
        Board::ALL
            .get(self.board_index as usize)
            .copied()
            .unwrap_or(Board::Meta)
    }
}

/// Whole simulated card state; plain data.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct CardState {
    /// Board identity.
    pub identity: Identity,
    /// Random source for noise.
    pub rng: Rng,
    /// Ground-truth TAI time the state has been advanced to, ns since the epoch.
    pub truth_ns: i64,
    /// Oscillator.
    pub osc: Oscillator,
    /// GNSS receiver.
    pub gnss: Gnss,
    /// Adjustable clock and servo.
    pub clock: ClockBlock,
    pps_slave: PpsBlock,
    pps_gen: PpsBlock,
    tod: TodBlock,
    ts: [Timestamper; TIMESTAMPERS],
    signal: [SignalGen; 4],
    freq: [FreqCounter; 4],
    scratch: Scratch,
    /// Image version register value of the running FPGA image.
    pub image_version: u32,
    /// How the FPGA booted.
    pub boot: BootState,
    /// The configuration-flash controller and chip (`spi_flash` block).
    pub spi: SpiFlashPort,
    /// Fault switches.
    pub faults: Faults,
    /// Truth time of the next GNSS PPS edge (ns), 0 = to be computed.
    next_pps_edge_ns: i64,
    /// TAI second that edge marks.
    next_pps_second: i64,
    /// Jitter (s) of that edge, for the oscillator discipline loop.
    next_pps_jitter_s: f64,
    /// Truth time of the last GNSS PPS edge the card saw.
    last_pps_edge_ns: i64,
    /// Card time at the last GNSS PPS edge, for the period filter.
    last_pps_card_ns: i64,
    /// Truth time of the next external PPS edge.
    next_ext_edge_ns: i64,
    /// Number of integration steps taken (performance statistics).
    pub steps: u64,
}

/// Parameters for a new card.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CardParams {
    /// Board model (must use the fb layout: Meta, Celestica, ADVA X1).
    pub board: Board,
    /// Oscillator parameters.
    pub oscillator: OscillatorParams,
    /// Noise seed.
    pub seed: u64,
    /// Truth TAI time at power-on, ns.
    pub start_tai_ns: i64,
    /// GNSS time to first fix, s.
    pub ttff_s: f64,
    /// PPS jitter 1-sigma, ns.
    pub pps_jitter_ns: f64,
    /// TAI − UTC at power-on.
    pub tai_utc_s: i32,
    /// EEPROM serial.
    pub serial: [u8; 6],
}

impl CardState {
    /// Powers on a card: the clock is enabled but free-running from time 0 with
    /// source `NONE` (the FPGA's reset configuration), the GNSS receiver
    /// acquiring, and the image booted from `flash`.
    #[must_use]
    pub fn power_on(p: &CardParams, flash: FlashRef<'_>) -> Self {
        let board_index = Board::ALL.iter().position(|b| *b == p.board).unwrap_or(0) as u32;
        let mut s = Self {
            identity: Identity {
                board_index,
                serial: p.serial,
            },
            rng: Rng::new(p.seed),
            truth_ns: p.start_tai_ns,
            osc: Oscillator::new(p.oscillator),
            gnss: Gnss::new(p.start_tai_ns, p.ttff_s, p.pps_jitter_ns, p.tai_utc_s),
            clock: ClockBlock::default(),
            pps_slave: PpsBlock::default(),
            pps_gen: PpsBlock::default(),
            tod: TodBlock::default(),
            ts: [Timestamper::default(); TIMESTAMPERS],
            signal: [SignalGen::default(); 4],
            freq: [FreqCounter::default(); 4],
            scratch: Scratch::default(),
            image_version: GOLDEN_VERSION,
            boot: BootState::GoldenFallback,
            // Manufacture: the golden region below flash_start is write-protected.
            spi: SpiFlashPort::new(
                nor::bottom_protection(p.board.layout().flash_start).unwrap_or(0),
            ),
            faults: Faults::default(),
            next_pps_edge_ns: 0,
            next_pps_second: 0,
            next_pps_jitter_s: 0.0,
            last_pps_edge_ns: p.start_tai_ns,
            last_pps_card_ns: 0,
            next_ext_edge_ns: 0,
            steps: 0,
        };
        s.reset_fpga(flash);
        s
    }

    /// Reconfigures the FPGA from flash, as a PCIe reset or power cycle does:
    /// registers return to their reset values, the SPI flash controller too
    /// (a command the chip was receiving is abandoned uncommitted), and the
    /// image is booted again.
    pub fn reset_fpga(&mut self, flash: FlashRef<'_>) {
        let layout = self.layout();
        self.spi.power_cut();
        self.clock = ClockBlock {
            enabled: true,
            in_sync_threshold: regs::clock::IN_SYNC_THRESHOLD_DEFAULT_NS,
            select: 0,
            servo_regs: [
                layout.servo.offset_p,
                layout.servo.offset_i,
                layout.servo.drift_p,
                layout.servo.drift_i,
            ],
            servo_gains: [0xC000, 0x3000, 0xC000, 0x3000],
            ..ClockBlock::default()
        };
        self.pps_slave = PpsBlock {
            ctrl: 1,
            polarity: 1,
            ..PpsBlock::default()
        };
        self.pps_gen = PpsBlock {
            ctrl: 1,
            polarity: 1,
            ..PpsBlock::default()
        };
        self.tod = TodBlock {
            baud: 7,
            ..TodBlock::default()
        };
        self.ts = [Timestamper::default(); TIMESTAMPERS];
        // ConfMaster: GNSS PPS timestamper enabled with interrupt, high polarity.
        self.ts[TS_GNSS_PPS].enable = 1;
        self.ts[TS_GNSS_PPS].polarity = 1;
        self.ts[TS_GNSS_PPS].intr_mask = 1;
        self.signal = [SignalGen::default(); 4];
        self.freq = [FreqCounter::default(); 4];
        self.scratch = Scratch::default();
        let (boot, version) = boot_image(self.identity.board(), flash);
        self.boot = boot;
        self.image_version = version;
    }

    /// The BAR layout of this card.
    #[must_use]
    pub fn layout(&self) -> &'static Layout {
        self.identity.board().layout()
    }

    /// Card time at the current truth time, ns (whole part).
    #[must_use]
    pub fn card_time_ns(&self) -> i64 {
        self.clock.card_ns
    }

    /// Active clock source (the select readback).
    #[must_use]
    pub fn clock_source(&self) -> Option<ClockSource> {
        ClockSource::from_u8(regs::clock::select_active(self.clock.select))
    }

    /// Status bits as the clock's status register shows them.
    #[must_use]
    pub fn in_sync(&self) -> bool {
        self.clock.in_sync
    }

    /// Whether the clock reports holdover.
    #[must_use]
    pub fn in_holdover(&self) -> bool {
        self.clock.in_holdover
    }

    /// Forces the next PPS edge to be recomputed (after a GNSS fault changes it).
    pub fn gnss_changed(&mut self) {
        self.next_pps_edge_ns = 0;
    }

    fn rate(&self) -> f64 {
        1.0 + self.osc.freq_offset() + self.clock.drift_rate
    }

    fn ensure_next_pps(&mut self) {
        if self.next_pps_edge_ns != 0 {
            return;
        }
        let offset = self.gnss.pps_offset_ns;
        let second = (self.truth_ns - offset).div_euclid(NS_PER_S) + 1;
        self.schedule_pps(second, offset);
    }

    fn schedule_pps(&mut self, second: i64, offset: i64) {
        let jitter_ns = self.gnss.pps_jitter_ns * self.rng.normal();
        self.next_pps_second = second;
        self.next_pps_jitter_s = jitter_ns * 1e-9;
        self.next_pps_edge_ns = second * NS_PER_S + offset + jitter_ns.round() as i64;
    }

    fn next_card_rollover(&self) -> i64 {
        let c = self.clock.card_ns;
        let boundary = (c.div_euclid(NS_PER_S) + 1) * NS_PER_S;
        let rate = self.rate() + self.clock.slew_rate;
        let dt = ((boundary - c) as f64 - self.clock.card_frac) / rate.max(0.5);
        self.truth_ns + (dt.ceil() as i64).max(1)
    }

    fn next_ext_edge(&mut self) -> i64 {
        if !self.faults.ext_pps {
            return i64::MAX;
        }
        if self.next_ext_edge_ns <= self.truth_ns {
            let off = self.faults.ext_pps_offset_ns;
            self.next_ext_edge_ns =
                ((self.truth_ns - off).div_euclid(NS_PER_S) + 1) * NS_PER_S + off;
        }
        self.next_ext_edge_ns
    }

    /// Integrates the clock from the current truth time to `t` (no events inside).
    fn integrate(&mut self, t: i64) {
        let dt_ns = t - self.truth_ns;
        if dt_ns <= 0 {
            return;
        }
        self.steps += 1;
        let dt = dt_ns as f64;
        let gained = self.osc.advance(dt * 1e-9, &mut self.rng) * 1e9;
        let mut advance = dt + gained + dt * self.clock.drift_rate;
        if self.clock.slew_remaining != 0.0 {
            let step = self.clock.slew_rate * dt;
            let step = if step.abs() >= self.clock.slew_remaining.abs() {
                let all = self.clock.slew_remaining;
                self.clock.slew_rate = 0.0;
                all
            } else {
                step
            };
            self.clock.slew_remaining -= step;
            advance += step;
        }
        if self.clock.enabled {
            let total = self.clock.card_frac + advance;
            let whole = total.floor();
            self.clock.card_ns += whole as i64;
            self.clock.card_frac = total - whole;
        }
        self.truth_ns = t;
    }

    /// Advances the whole card to truth time `t` (ns), handling every PPS edge,
    /// second roll-over and timer in between. Times in the past are ignored.
    pub fn advance_to(&mut self, t: i64) {
        while self.truth_ns < t {
            self.ensure_next_pps();
            let rollover = self.next_card_rollover();
            let ext = self.next_ext_edge();
            let next = t.min(self.next_pps_edge_ns).min(rollover).min(ext);
            self.integrate(next);
            if next == self.next_pps_edge_ns {
                self.on_gnss_pps_edge();
            }
            if next >= rollover {
                self.on_card_second();
            }
            if next == ext {
                let c = self.clock.card_ns;
                for ts in &mut self.ts[1..5] {
                    ts.event(c);
                }
            }
        }
        self.gnss.settle_leap(self.truth_ns.div_euclid(NS_PER_S));
    }

    fn on_gnss_pps_edge(&mut self) {
        let second = self.next_pps_second;
        let jitter = self.next_pps_jitter_s;
        let offset = self.gnss.pps_offset_ns;
        let edge_truth = self.truth_ns;
        self.schedule_pps(second + 1, offset);
        if !self.gnss.has_fix(edge_truth) {
            return;
        }
        self.gnss.ever_fixed = true;
        self.gnss.settle_leap(second);
        let card = self.clock.card_ns;
        self.ts[TS_GNSS_PPS].event(card);
        // Period filter on the measured PPS period in card time.
        let period = card - self.last_pps_card_ns;
        if self.last_pps_card_ns != 0 && (period - NS_PER_S).abs() > 100_000_000 {
            self.pps_slave.status |= regs::pps::STATUS_FILTER_ERR;
        }
        self.last_pps_edge_ns = edge_truth;
        self.last_pps_card_ns = card;
        if self.pps_slave.ctrl & 1 == 0 || !self.clock.enabled {
            return;
        }
        let source = self.clock_source();
        if !matches!(source, Some(ClockSource::Tod | ClockSource::Pps)) {
            return;
        }
        self.osc.discipline(jitter);
        if source == Some(ClockSource::Tod) {
            // TOD slave: align whole seconds to the receiver's time of day.
            let reported = second + self.gnss.tod_offset_s;
            let card_second = (card + NS_PER_S / 2).div_euclid(NS_PER_S);
            if reported != card_second {
                self.clock.card_ns += (reported - card_second) * NS_PER_S;
                self.clock.slew_remaining = 0.0;
                self.clock.slew_rate = 0.0;
                self.clock.servo_integral = 0.0;
                self.clock_time_jumped();
                self.last_pps_card_ns = self.clock.card_ns;
                return;
            }
        }
        let phase = (card + NS_PER_S / 2).rem_euclid(NS_PER_S) - NS_PER_S / 2;
        let e = phase as f64 + self.clock.card_frac;
        if !self.clock.in_sync && e.abs() > PHASE_STEP_THRESHOLD_NS {
            // Acquisition: step the phase instead of slewing a large error.
            self.clock.card_ns -= phase;
            self.clock.slew_remaining = 0.0;
            self.clock.slew_rate = 0.0;
            self.clock.servo_integral = 0.0;
            self.clock.status_offset = sign_magnitude::encode(phase);
            self.clock.good_offsets = 0;
            self.last_pps_card_ns = self.clock.card_ns;
            return;
        }
        self.servo_correct(e);
    }

    /// The PPS slave's PI servo on measured phase error `e` (ns, card minus PPS).
    fn servo_correct(&mut self, e: f64) {
        let c = &mut self.clock;
        let gain = |reg: u32| f64::from(reg) / 65_536.0;
        let [op, oi, dp, di] = c.servo_regs;
        c.servo_integral += e;
        let correction = -(gain(op) * e + gain(oi) * c.servo_integral);
        // Spread over one second, as the IP does with the offset interval.
        c.slew_remaining = correction;
        c.slew_rate = correction / NS_PER_S as f64;
        if dp != 0 || di != 0 {
            c.drift_integral += e;
            c.drift_rate = -(gain(dp) * e + gain(di) * c.drift_integral) * 1e-9;
        }
        c.status_offset = sign_magnitude::encode(e.round() as i64);
        c.status_drift = sign_magnitude::encode((c.drift_rate * 1e9).round() as i64);
        if e.abs() <= f64::from(c.in_sync_threshold) {
            c.good_offsets = c.good_offsets.saturating_add(1);
            if c.good_offsets >= IN_SYNC_COUNT {
                c.in_sync = true;
            }
        } else {
            c.good_offsets = 0;
            c.in_sync = false;
        }
        c.in_holdover = false;
        c.seconds_since_correction = 0;
    }

    fn clock_time_jumped(&mut self) {
        let c = &mut self.clock;
        c.in_sync = false;
        c.in_holdover = false;
        c.good_offsets = 0;
        for g in &mut self.signal {
            if g.running {
                g.stop(regs::signal::STATUS_TIME_JUMP);
            }
        }
    }

    fn on_card_second(&mut self) {
        let card = self.clock.card_ns;
        // The FPGA's own PPS (PHC PPS) at the card's second boundary.
        let boundary = card.div_euclid(NS_PER_S) * NS_PER_S;
        self.ts[TS_PHC_PPS].event(boundary);
        let c = &mut self.clock;
        c.seconds_since_correction = c.seconds_since_correction.saturating_add(1);
        if c.in_sync && c.seconds_since_correction >= HOLDOVER_TIMEOUT_S {
            c.in_holdover = true;
        }
        if self.truth_ns - self.last_pps_edge_ns > PPS_SUPERVISION_NS {
            self.pps_slave.status |= regs::pps::STATUS_SUPERV_ERR;
        }
        for g in &mut self.signal {
            g.tick(card);
        }
        let hz = (EXT_REF_HZ * (1.0 - self.osc.freq_offset())).round() as u32;
        let sma_inputs = self.scratch.get(self.layout().sma_map1.unwrap_or(0));
        for (i, f) in self.freq.iter_mut().enumerate() {
            let gate = (f.ctrl & regs::freq::CTRL_SECONDS_MASK) >> regs::freq::CTRL_SECONDS_SHIFT;
            if f.ctrl & regs::freq::CTRL_ENABLE == 0 || gate == 0 {
                continue;
            }
            f.elapsed_s += 1;
            if f.elapsed_s >= gate {
                f.elapsed_s = 0;
                let routed = sma_inputs & (regs::sma::IN_FREQ1 << i) != 0
                    || (sma_inputs >> 16) & (regs::sma::IN_FREQ1 << i) != 0;
                let value = if routed { hz } else { 0 };
                f.status = regs::freq::STATUS_VALID | (value & regs::freq::STATUS_VALUE_MASK);
            }
        }
    }

    /// Whether the card answers on the bus: it is present and its FPGA configured.
    #[must_use]
    pub fn answers(&self) -> bool {
        !self.faults.card_removed && self.boot != BootState::NoImage
    }

    /// The offset inside the SPI flash controller's block, if BAR offset
    /// `addr` falls in it. Accesses there do not depend on time.
    #[must_use]
    pub fn spi_offset(&self, addr: u32) -> Option<u32> {
        let base = self.layout().spi_flash?;
        let off = addr.checked_sub(base)?;
        (off < spi::BLOCK_LEN).then_some(off)
    }

    /// Reads a 32-bit register at BAR offset `addr` (the SPI flash block included).
    pub fn read(&mut self, addr: u32) -> u32 {
        if !self.answers() {
            return u32::MAX;
        }
        if let Some(off) = self.spi_offset(addr) {
            return self.spi.read(off);
        }
        let l = self.layout();
        let (base, off) = (addr & !0xFFFF, addr & 0xFFFF);
        let at = |o: Option<u32>| o == Some(base);
        if base == l.clock {
            return self.read_clock(off);
        }
        if at(l.tod) {
            return self.read_tod(off);
        }
        if at(l.pps_ts) {
            return self.ts[TS_PHC_PPS].read(off);
        }
        if let Some(i) = l.ts.iter().position(|b| *b == Some(base)) {
            return self.ts[i].read(off);
        }
        if at(l.pps_to_clk) {
            return read_pps(&self.pps_slave, off, 100);
        }
        if at(l.pps_to_ext) {
            return read_pps(&self.pps_gen, off, 500);
        }
        if let Some(i) = l.signal.iter().position(|b| *b == Some(base)) {
            return self.signal[i].read(off);
        }
        if let Some(i) = l.freq.iter().position(|b| *b == Some(base)) {
            return match off {
                regs::freq::CTRL => self.freq[i].ctrl,
                regs::freq::STATUS => self.freq[i].status,
                _ => u32::MAX,
            };
        }
        if at(l.image) && off == regs::image::VERSION {
            return self.image_version;
        }
        if at(l.pps_select) && off == regs::gpio::GPIO1 {
            // Clock detector: PPS source currently selected is GNSS1.
            return 0x4;
        }
        if self.is_scratch_block(base) {
            return self.scratch.get(addr);
        }
        u32::MAX
    }

    fn is_scratch_block(&self, base: u32) -> bool {
        let l = self.layout();
        [
            l.irig_in,
            l.irig_out,
            l.dcf_in,
            l.dcf_out,
            l.nmea_out,
            l.sma_map1,
            l.sma_map2,
            l.pps_select,
        ]
        .contains(&Some(base))
    }

    /// Writes a 32-bit register at BAR offset `addr`, with the flash cells at
    /// hand for the SPI flash block (bytes shifted to the chip may program or
    /// erase them).
    pub fn write_with_flash(&mut self, addr: u32, value: u32, flash: FlashMut<'_>) {
        if !self.answers() {
            return;
        }
        match self.spi_offset(addr) {
            Some(off) => self.spi.write(off, value, flash),
            None => self.write(addr, value),
        }
    }

    /// Writes a 32-bit register at BAR offset `addr`. Writes to the SPI flash
    /// block need the flash cells and are dropped here: use
    /// [`write_with_flash`](Self::write_with_flash) for those.
    pub fn write(&mut self, addr: u32, value: u32) {
        if !self.answers() || self.spi_offset(addr).is_some() {
            return;
        }
        let l = self.layout();
        let (base, off) = (addr & !0xFFFF, addr & 0xFFFF);
        let at = |o: Option<u32>| o == Some(base);
        let card = self.clock.card_ns;
        if base == l.clock {
            self.write_clock(off, value);
        } else if at(l.tod) {
            self.write_tod(off, value);
        } else if at(l.pps_ts) {
            self.ts[TS_PHC_PPS].write(off, value);
        } else if let Some(i) = l.ts.iter().position(|b| *b == Some(base)) {
            self.ts[i].write(off, value);
        } else if at(l.pps_to_clk) {
            write_pps(&mut self.pps_slave, off, value);
        } else if at(l.pps_to_ext) {
            write_pps(&mut self.pps_gen, off, value);
        } else if let Some(i) = l.signal.iter().position(|b| *b == Some(base)) {
            self.signal[i].write(off, value, card);
        } else if let Some(i) = l.freq.iter().position(|b| *b == Some(base)) {
            if off == regs::freq::CTRL {
                self.freq[i] = FreqCounter {
                    ctrl: value & 0xFF01,
                    ..FreqCounter::default()
                };
            }
        } else if self.is_scratch_block(base) {
            self.scratch.set(addr, value);
        }
    }

    fn read_clock(&mut self, off: u32) -> u32 {
        use regs::clock::*;
        let c = &self.clock;
        match off {
            CTRL => u32::from(c.enabled) | if c.read_done { CTRL_READ_TIME_DONE } else { 0 },
            STATUS => {
                (if c.in_sync { STATUS_IN_SYNC } else { 0 })
                    | if c.in_holdover { STATUS_IN_HOLDOVER } else { 0 }
            }
            SELECT => c.select,
            VERSION => IP_VERSION,
            TIME_NS => c.latched_ns,
            TIME_SEC => c.latched_sec,
            ADJUST_NS => c.adjust_ns,
            ADJUST_SEC => c.adjust_sec,
            OFFSET_NS => c.offset_reg,
            OFFSET_WINDOW_NS => c.offset_window,
            DRIFT_NS => c.drift_reg,
            DRIFT_WINDOW_NS => c.drift_window,
            IN_SYNC_THRESHOLD => c.in_sync_threshold,
            SERVO_OFFSET_P => c.servo_gains[0],
            SERVO_OFFSET_I => c.servo_gains[1],
            SERVO_DRIFT_P => c.servo_gains[2],
            SERVO_DRIFT_I => c.servo_gains[3],
            STATUS_OFFSET => c.status_offset,
            STATUS_DRIFT => c.status_drift,
            _ => u32::MAX,
        }
    }

    fn write_clock(&mut self, off: u32, v: u32) {
        use regs::clock::*;
        match off {
            CTRL => self.clock_command(v),
            SELECT => {
                let s = v & 0xFF;
                self.clock.select = s | (s << 16);
            }
            ADJUST_NS => self.clock.adjust_ns = v,
            ADJUST_SEC => self.clock.adjust_sec = v,
            OFFSET_NS => self.clock.offset_reg = v,
            OFFSET_WINDOW_NS => self.clock.offset_window = v,
            DRIFT_NS => self.clock.drift_reg = v,
            DRIFT_WINDOW_NS => self.clock.drift_window = v,
            IN_SYNC_THRESHOLD => self.clock.in_sync_threshold = v,
            SERVO_OFFSET_P => self.clock.servo_gains[0] = v,
            SERVO_OFFSET_I => self.clock.servo_gains[1] = v,
            SERVO_DRIFT_P => self.clock.servo_gains[2] = v,
            SERVO_DRIFT_I => self.clock.servo_gains[3] = v,
            _ => {}
        }
    }

    fn clock_command(&mut self, v: u32) {
        use regs::clock::*;
        let v = v & CTRL_MASK;
        let regs_selected = self.clock_source() == Some(ClockSource::Regs);
        self.clock.read_done = false;
        if v & CTRL_ENABLE == 0 {
            // Disable is a reset of the clock core.
            let keep = (
                self.clock.select,
                self.clock.servo_gains,
                self.clock.in_sync_threshold,
            );
            self.clock = ClockBlock::default();
            (
                self.clock.select,
                self.clock.servo_gains,
                self.clock.in_sync_threshold,
            ) = keep;
            return;
        }
        self.clock.enabled = true;
        if v & CTRL_ADJUST_TIME != 0 && regs_selected {
            let c = &mut self.clock;
            c.card_ns =
                i64::from(c.adjust_sec) * NS_PER_S + i64::from(c.adjust_ns.min(999_999_999));
            c.card_frac = 0.0;
            c.slew_remaining = 0.0;
            c.slew_rate = 0.0;
            c.servo_integral = 0.0;
            self.clock_time_jumped();
        }
        if v & CTRL_ADJUST_OFFSET != 0 && regs_selected {
            let c = &mut self.clock;
            let offset = sign_magnitude::decode(c.offset_reg) as f64;
            if c.offset_window == 0 {
                let total = c.card_frac + offset;
                c.card_ns += total.floor() as i64;
                c.card_frac = total - total.floor();
            } else {
                c.slew_remaining += offset;
                c.slew_rate = c.slew_remaining / f64::from(c.offset_window);
            }
        }
        if v & CTRL_ADJUST_DRIFT != 0 && regs_selected {
            let c = &mut self.clock;
            let drift = sign_magnitude::decode(c.drift_reg);
            if drift == 0 {
                c.drift_rate = 0.0;
                c.drift_integral = 0.0;
            } else {
                let window = if c.drift_window == 0 {
                    NS_PER_S as f64
                } else {
                    f64::from(c.drift_window)
                };
                c.drift_rate += drift as f64 / window;
            }
            c.status_drift = sign_magnitude::encode((c.drift_rate * 1e9).round() as i64);
        }
        if v & CTRL_ADJUST_SERVO != 0 {
            self.clock.servo_regs = self.clock.servo_gains;
        }
        if v & CTRL_READ_TIME_REQ != 0 {
            let t = self.clock.card_ns;
            self.clock.latched_sec = t.div_euclid(NS_PER_S) as u32;
            self.clock.latched_ns = t.rem_euclid(NS_PER_S) as u32;
            self.clock.read_done = true;
        }
    }

    fn read_tod(&self, off: u32) -> u32 {
        use regs::tod::*;
        let now_s = self.truth_ns.div_euclid(NS_PER_S);
        let g = &self.gnss;
        match off {
            CTRL => self.tod.ctrl,
            STATUS => self.tod.status,
            UART_POLARITY => self.tod.polarity,
            VERSION => regs::clock::IP_VERSION,
            ADJ_SEC => self.tod.adj_sec,
            UART_BAUD => self.tod.baud,
            UTC_STATUS => {
                if !g.ever_fixed {
                    return 0;
                }
                UtcStatus {
                    offset_s: g.tai_utc_s.clamp(0, 255) as u8,
                    utc_valid: true,
                    leap_announce: g.leap_pending(),
                    leap_59: g.leap_pending() && g.leap_delta < 0,
                    leap_61: g.leap_pending() && g.leap_delta > 0,
                    leap_valid: true,
                }
                .to_reg()
            }
            LEAP => g
                .seconds_to_leap(now_s)
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32 as u32,
            ANTENNA_STATUS => {
                let mut v = if g.antenna_fault {
                    ANTENNA_OPEN
                } else {
                    ANTENNA_OK
                };
                if g.has_fix(self.truth_ns) {
                    v |= FIX_OK;
                }
                if g.tod_offset_s != 0 || g.pps_offset_ns != 0 {
                    v |= SPOOFING;
                }
                v
            }
            SAT_NUMBER => {
                let seen: u32 = if g.antenna_fault || g.signal_lost {
                    0
                } else {
                    20
                };
                let used = if g.has_fix(self.truth_ns) {
                    u32::from(g.satellites)
                } else {
                    0
                };
                seen | (used << SAT_USED_SHIFT)
            }
            _ => u32::MAX,
        }
    }

    fn write_tod(&mut self, off: u32, v: u32) {
        use regs::tod::*;
        match off {
            CTRL => self.tod.ctrl = v,
            STATUS => self.tod.status &= !v,
            UART_POLARITY => self.tod.polarity = v & 1,
            ADJ_SEC => self.tod.adj_sec = v,
            UART_BAUD => self.tod.baud = v & 0xF,
            _ => {}
        }
    }
}

fn read_pps(b: &PpsBlock, off: u32, pulse_ms: u32) -> u32 {
    use regs::pps::*;
    match off {
        CTRL => b.ctrl,
        STATUS => b.status,
        POLARITY => b.polarity,
        VERSION => regs::clock::IP_VERSION,
        PULSE_WIDTH => pulse_ms,
        CABLE_DELAY => b.cable_delay,
        _ => u32::MAX,
    }
}

fn write_pps(b: &mut PpsBlock, off: u32, v: u32) {
    use regs::pps::*;
    match off {
        CTRL => b.ctrl = v & 3,
        STATUS => b.status &= !v,
        POLARITY => b.polarity = v & 1,
        CABLE_DELAY => b.cable_delay = v & 0xFFFF,
        _ => {}
    }
}

/// Decides what the FPGA boots, as Xilinx multiboot does: the regular image
/// at `flash_start` if it is a valid `OCPC` image for this board whose
/// payload is a simulated bitstream; else the golden image at address 0 if
/// that one is valid; else nothing ([`BootState::NoImage`],
/// [`NO_IMAGE_VERSION`]). Returns the boot state and the image-version
/// register value the bitstream carries.
#[must_use]
pub fn boot_image(board: Board, flash: FlashRef<'_>) -> (BootState, u32) {
    if let Some(v) = image_version_at(board, flash, board.layout().flash_start as usize) {
        return (BootState::Regular, v);
    }
    if let Some(v) = image_version_at(board, flash, 0) {
        return (BootState::GoldenFallback, v);
    }
    (BootState::NoImage, NO_IMAGE_VERSION)
}

/// The image version of the simulated bitstream in the `OCPC` image for
/// `board` at flash address `start`, if there is a valid one.
fn image_version_at(board: Board, flash: FlashRef<'_>, start: usize) -> Option<u32> {
    let head = flash.read(start, firmware::HEADER_LEN).ok()?;
    let header = firmware::ImageHeader::parse(&head).ok()?;
    let image = flash
        .read(start, firmware::HEADER_LEN + header.image_size as usize)
        .ok()?;
    firmware::verify(&image, Some(board.id())).ok()?;
    bitstream_version(firmware::payload(&image))
}

/// The image-version word a simulated bitstream carries, if it is one.
#[must_use]
pub fn bitstream_version(payload: &[u8]) -> Option<u32> {
    let magic = payload.get(..8)?;
    let word = payload.get(8..12)?;
    (magic == SIM_BITSTREAM_MAGIC).then(|| u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

/// Builds a simulated bitstream that boots with image version `version`,
/// padded to `len` bytes with a deterministic pattern.
#[must_use]
pub fn make_bitstream(version: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(12));
    v.extend_from_slice(&SIM_BITSTREAM_MAGIC);
    v.extend_from_slice(&version.to_le_bytes());
    let mut x = version ^ 0x9E37_79B9;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}
