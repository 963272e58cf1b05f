//! The `TimeCard` API: every operation `ptp_ocp` performs, over a [`Bar`].
//!
//! Register sequences follow the Linux driver (see `../shared/timecard-hw.md`
//! §3–§6): latched time reads with `READ_TIME_REQ`/`DONE`, set time and
//! offsets with the `REGS` source selected, drift clear, servo gains,
//! timestamper enable/ack, signal generator programming, frequency counters.
//!
//! Two safety nets sit on top:
//! - **dead card**: a removed or hung PCIe device reads all-ones. Any
//!   all-ones read is cross-checked against the clock's version register,
//!   and a dead card is reported as [`CardError::CardGone`], never as time.
//! - **continuity guard**: each time read is compared with the previous one
//!   against the host's monotonic clock. A discontinuity larger than 1 ms +
//!   100 ppm (a GNSS time jump the FPGA followed, someone else stepping the
//!   card) is returned as [`CardError::TimeJump`] until the
//!   [`Supervisor`](crate::supervisor::Supervisor) has dealt with it or 3 s
//!   have passed, so no consumer serves a jumped time unknowingly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use timecard_hw::layout::Layout;
use timecard_hw::pci::{Board, PciId};
use timecard_hw::regs::image::{Capabilities, FirmwareVersion};
use timecard_hw::regs::tod::UtcStatus;
use timecard_hw::regs::{self, ClockSource, clock, freq, pps, signal, tod, ts};
use timecard_hw::sign_magnitude;

use crate::bar::{Bar, BarError};
use crate::hostclock::{HostClock, NS_PER_S};

/// How many times the driver polls for `READ_TIME_DONE` (as `ptp_ocp`).
pub const READ_TIME_POLLS: u32 = 100;
/// Largest offset one immediate offset adjustment can carry (31-bit magnitude).
const MAX_OFFSET_STEP: i64 = 0x7FFF_FFFF;
/// Continuity tolerance: fixed part, ns.
const JUMP_TOLERANCE_NS: i64 = 1_000_000;
/// Continuity tolerance: rate part (100 ppm of the elapsed host time).
const JUMP_TOLERANCE_RATE: i64 = 10_000;
/// A discontinuity that lasts this long is accepted as the new timeline.
const JUMP_ACCEPT_AFTER_NS: i64 = 3 * NS_PER_S;

/// Driver errors.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// All-ones reads: the device dropped off the bus.
    #[error(
        "the Time Card does not respond: registers read 0xFFFFFFFF as a removed or hung PCIe device does; \
         check `lspci -d 1d9b:` and `dmesg` for AER errors, then reset or reseat the card"
    )]
    CardGone,
    /// Transport error.
    #[error(transparent)]
    Bar(#[from] BarError),
    /// The latch never completed.
    #[error("the card did not latch its time after {0} polls (READ_TIME_DONE never set)")]
    ReadTimeout(u32),
    /// The clock core stayed disabled.
    #[error("the card's clock is not enabled after init (ctrl reads {0:#010x})")]
    NotEnabled(u32),
    /// The latched time is not a time.
    #[error("the card returned an invalid time ({sec} s, {ns} ns)")]
    InvalidTime {
        /// Seconds register.
        sec: u32,
        /// Nanoseconds register (must be < 1e9).
        ns: u32,
    },
    /// Card time moved discontinuously.
    #[error(
        "card time jumped by {jump_ns} ns against the host's monotonic clock; not serving it until the \
         supervisor has checked the GNSS reference"
    )]
    TimeJump {
        /// Size of the discontinuity, ns (card minus expectation).
        jump_ns: i64,
    },
    /// The block does not exist on this board.
    #[error("{0} is not present on this board")]
    NotPresent(&'static str),
    /// Bad argument from the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The BAR's PCI ID is not a known Time Card.
    #[error("PCI device {0} is not a Time Card this driver knows")]
    UnknownBoard(PciId),
}

/// Result alias for the driver.
pub type Result<T, E = CardError> = std::result::Result<T, E>;

/// One time read with its host bracket, as `gettimex64` returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TimeReading {
    /// Card time (TAI), ns since the epoch.
    pub card_tai_ns: i64,
    /// Host `CLOCK_REALTIME` just before the latch request, ns.
    pub pre_ns: i64,
    /// Host `CLOCK_REALTIME` after the latch completed, minus `ts_window_adjust`, ns.
    pub post_ns: i64,
}

/// What the card says it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Identity {
    /// Board model.
    pub board: Board,
    /// PCI vendor/device.
    pub pci_id: PciId,
    /// Backend (`vfio:…`, `sim:…`).
    pub backend: String,
    /// Running firmware image.
    pub firmware: FirmwareVersion,
    /// `ptp_ocp`'s naming: "fw" or "loader" (golden image).
    pub firmware_kind: &'static str,
    /// Capabilities the firmware version implies.
    pub capabilities: Capabilities,
    /// Clock IP core version (major, minor, patch).
    pub clock_ip_version: (u8, u8, u16),
}

/// Card state as `ptp_ocp`'s sysfs and debugfs expose it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CardStatus {
    /// `IN_SYNC` bit of the clock status.
    pub in_sync: bool,
    /// `IN_HOLDOVER` bit of the clock status.
    pub in_holdover: bool,
    /// Active clock source (`clock_source`), `None` for an unknown code.
    pub clock_source: Option<ClockSource>,
    /// PPS supervision error: GNSS PPS missing (`gnss_sync` LOST).
    pub pps_lost: bool,
    /// PPS period filter error.
    pub pps_filter_error: bool,
    /// TOD UTC status (offset, validity, leap flags).
    pub utc: UtcStatus,
    /// Seconds to the announced leap second (TOD `leap` register), 0 if none.
    pub seconds_to_leap: i32,
    /// Last servo offset (`clock_status_offset`), ns.
    pub servo_offset_ns: i64,
    /// Servo drift (`clock_status_drift`).
    pub servo_drift: i64,
    /// GNSS antenna and fix bits (TOD antenna status).
    pub antenna_status: u32,
    /// Satellites used / seen.
    pub satellites: (u8, u8),
    /// TOD parser status (nonzero = errors).
    pub tod_status: u32,
    /// TOD protocol name.
    pub tod_protocol: &'static str,
    /// `ts_window_adjust`, ns.
    pub ts_window_adjust_ns: i64,
}

/// An external timestamp event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExtTimestamp {
    /// Timestamper index (0–4, 5 = PHC PPS).
    pub index: usize,
    /// Event time (card, TAI), ns.
    pub card_tai_ns: i64,
    /// Sequence number of the event.
    pub count: u32,
    /// Events dropped because an earlier one was not acknowledged.
    pub dropped: bool,
}

/// Signal generator request (sysfs `genN/signal`: period, duty, phase, polarity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalRequest {
    /// Period, ns.
    pub period_ns: i64,
    /// Duty cycle, percent (1–99).
    pub duty_percent: u8,
    /// Phase offset from the period boundary, ns.
    pub phase_ns: i64,
    /// Active-high output.
    pub active_high: bool,
    /// Start time (card TAI ns), or `None` for the next period boundary after now + 1 ms.
    pub start_ns: Option<i64>,
}

/// State of one signal generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SignalStatus {
    /// Enabled and without error.
    pub running: bool,
    /// Raw status register.
    pub status: u32,
    /// Programmed start, period and pulse width, ns.
    pub start_ns: i64,
    /// Period, ns.
    pub period_ns: i64,
    /// Pulse width, ns.
    pub pulse_ns: i64,
}

/// Options for [`TimeCard::init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Clock source to select after init (`None` leaves the firmware's choice).
    pub source: Option<ClockSource>,
    /// If the card is not in sync, set it from the host's TAI as `ptp_ocp` does.
    pub seed_time_from_host: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            source: Some(ClockSource::Tod),
            seed_time_from_host: true,
        }
    }
}

#[derive(Debug, Default)]
struct Continuity {
    /// The previous read: host monotonic just before its latch request and
    /// just after it completed, and the card time latched in between.
    last: Option<(i64, i64, i64)>,
    suspect_since: Option<i64>,
}

impl Continuity {
    /// Checks `card`, latched between host monotonic `pre` and `post`,
    /// against the previous read. Both latches are only known to lie
    /// within their brackets, so a reader that was preempted around its
    /// latch widens the window instead of looking like a jump.
    fn check(&mut self, pre: i64, post: i64, card: i64) -> Result<(), i64> {
        if let Some((p0, q0, c0)) = self.last {
            let (shortest, longest) = (pre - q0, post - p0);
            if (0..10 * NS_PER_S).contains(&longest) {
                let tolerance = JUMP_TOLERANCE_NS + longest / JUMP_TOLERANCE_RATE;
                let elapsed = card - c0;
                let dev = if elapsed < shortest - tolerance {
                    elapsed - shortest
                } else if elapsed > longest + tolerance {
                    elapsed - longest
                } else {
                    0
                };
                if dev != 0 {
                    let since = *self.suspect_since.get_or_insert(post);
                    if post - since < JUMP_ACCEPT_AFTER_NS {
                        return Err(dev);
                    }
                }
            }
        }
        self.last = Some((pre, post, card));
        self.suspect_since = None;
        Ok(())
    }
}

/// A Time Card behind a BAR.
#[derive(Debug)]
pub struct TimeCard {
    bar: Arc<dyn Bar>,
    board: Board,
    layout: &'static Layout,
    host: Arc<dyn HostClock>,
    ts_window_adjust_ns: AtomicI64,
    continuity: Mutex<Continuity>,
    /// Serializes the clock block's multi-register sequences (latch and
    /// read the time; select REGS, write, adjust, restore), as `ptp_ocp`'s
    /// `bp->lock` does: two readers racing would read each other's latch,
    /// or seconds and nanoseconds of two different latches.
    clock_lock: Mutex<()>,
    gnss_serial: Option<PathBuf>,
}

impl TimeCard {
    /// Attaches to the card behind `bar`: checks that the PCI ID is a Time Card
    /// and that the card answers. Does not change any register (see [`TimeCard::init`]).
    ///
    /// # Errors
    /// [`CardError::UnknownBoard`], [`CardError::CardGone`] or a transport error.
    pub fn open(bar: Arc<dyn Bar>, host: Arc<dyn HostClock>) -> Result<Self> {
        let id = bar.pci_id();
        let board = Board::from_id(id).ok_or(CardError::UnknownBoard(id))?;
        let card = Self {
            bar,
            board,
            layout: board.layout(),
            host,
            ts_window_adjust_ns: AtomicI64::new(0),
            continuity: Mutex::new(Continuity::default()),
            clock_lock: Mutex::new(()),
            gnss_serial: None,
        };
        card.check_alive()?;
        Ok(card)
    }

    /// Records where the GNSS receiver's serial output can be read.
    #[must_use]
    pub fn with_gnss_serial(mut self, path: impl Into<PathBuf>) -> Self {
        self.gnss_serial = Some(path.into());
        self
    }

    /// The GNSS receiver's serial port, if known (a tty or the simulator's pty).
    #[must_use]
    pub fn gnss_serial(&self) -> Option<&Path> {
        self.gnss_serial.as_deref()
    }

    /// Board model.
    #[must_use]
    pub fn board(&self) -> Board {
        self.board
    }

    /// The board's BAR0 layout.
    #[must_use]
    pub fn layout(&self) -> &'static Layout {
        self.layout
    }

    /// The host clock used for brackets and continuity.
    #[must_use]
    pub fn host(&self) -> &Arc<dyn HostClock> {
        &self.host
    }

    /// The BAR backend description.
    #[must_use]
    pub fn backend(&self) -> String {
        self.bar.describe()
    }

    fn check_alive(&self) -> Result<()> {
        match self.bar.read32(self.layout.clock + clock::VERSION)? {
            u32::MAX => Err(CardError::CardGone),
            _ => Ok(()),
        }
    }

    pub(crate) fn rd(&self, addr: u32) -> Result<u32> {
        let v = self.bar.read32(addr)?;
        if v == u32::MAX {
            self.check_alive()?;
        }
        Ok(v)
    }

    pub(crate) fn wr(&self, addr: u32, v: u32) -> Result<()> {
        Ok(self.bar.write32(addr, v)?)
    }

    fn clk(&self, off: u32) -> u32 {
        self.layout.clock + off
    }

    fn block(&self, base: Option<u32>, what: &'static str) -> Result<u32> {
        base.ok_or(CardError::NotPresent(what))
    }

    /// Brings the clock up as `ptp_ocp`'s probe does: enable, servo gains,
    /// check enabled, measure PCI read timing, TOD and NMEA-out setup, seed
    /// the time from the host when not in sync, and select the source.
    ///
    /// # Errors
    /// [`CardError::NotEnabled`] if the clock does not come up, or access errors.
    pub fn init(&self, opts: InitOptions) -> Result<()> {
        self.wr(self.clk(clock::CTRL), clock::CTRL_ENABLE)?;
        let g = self.layout.servo;
        self.wr(self.clk(clock::SERVO_OFFSET_P), g.offset_p)?;
        self.wr(self.clk(clock::SERVO_OFFSET_I), g.offset_i)?;
        self.wr(self.clk(clock::SERVO_DRIFT_P), g.drift_p)?;
        self.wr(self.clk(clock::SERVO_DRIFT_I), g.drift_i)?;
        self.wr(
            self.clk(clock::CTRL),
            clock::CTRL_ADJUST_SERVO | clock::CTRL_ENABLE,
        )?;
        let ctrl = self.rd(self.clk(clock::CTRL))?;
        if ctrl & clock::CTRL_ENABLE == 0 {
            return Err(CardError::NotEnabled(ctrl));
        }
        self.estimate_pci_timing()?;
        if let Some(base) = self.layout.tod {
            let c = self.rd(base + tod::CTRL)?;
            let c = (c | tod::CTRL_PROTOCOL | tod::CTRL_ENABLE)
                & !(tod::CTRL_DISABLE_FMT_A | tod::CTRL_DISABLE_FMT_B);
            self.wr(base + tod::CTRL, c)?;
        }
        if let Some(base) = self.layout.nmea_out {
            self.wr(base + tod::CTRL, 0)?;
            self.wr(base + tod::UART_BAUD, 7)?;
            self.wr(base + tod::CTRL, 1)?;
        }
        let status = self.rd(self.clk(clock::STATUS))?;
        if status & clock::STATUS_IN_SYNC == 0 && opts.seed_time_from_host {
            let offset = self
                .utc_status()?
                .filter(|u| u.utc_valid)
                .map_or(37, |u| i64::from(u.offset_s));
            self.set_time(self.host.realtime_ns() + offset * NS_PER_S)?;
        }
        if let Some(src) = opts.source {
            self.set_clock_source(src)?;
        }
        Ok(())
    }

    /// Holds the clock block for one multi-register sequence.
    fn lock_clock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.clock_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `ts_window_adjust` as `ptp_ocp` estimates it: 3/32 of one PCI read after a latch request.
    fn estimate_pci_timing(&self) -> Result<()> {
        let _clock = self.lock_clock();
        self.wr(
            self.clk(clock::CTRL),
            clock::CTRL_READ_TIME_REQ | clock::CTRL_ENABLE,
        )?;
        let start = self.host.monotonic_ns();
        self.rd(self.clk(clock::CTRL))?;
        let delay = (self.host.monotonic_ns() - start).max(0);
        self.ts_window_adjust_ns
            .store((delay >> 5) * 3, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the card's time with a host bracket (`gettimex64`).
    ///
    /// # Errors
    /// [`CardError::CardGone`], [`CardError::ReadTimeout`], [`CardError::InvalidTime`],
    /// [`CardError::TimeJump`] or transport errors; never a garbage time.
    pub fn read_time(&self) -> Result<TimeReading> {
        let _clock = self.lock_clock();
        self.read_time_locked()
    }

    /// [`Self::read_time`] with the clock lock already held.
    fn read_time_locked(&self) -> Result<TimeReading> {
        let pre = self.host.realtime_ns();
        let mono_pre = self.host.monotonic_ns();
        self.wr(
            self.clk(clock::CTRL),
            clock::CTRL_READ_TIME_REQ | clock::CTRL_ENABLE,
        )?;
        let mut done = false;
        for _ in 0..READ_TIME_POLLS {
            let ctrl = self.rd(self.clk(clock::CTRL))?;
            if ctrl & clock::CTRL_READ_TIME_DONE != 0 {
                done = true;
                break;
            }
        }
        if !done {
            return Err(CardError::ReadTimeout(READ_TIME_POLLS));
        }
        let post = self.host.realtime_ns() - self.ts_window_adjust_ns.load(Ordering::Relaxed);
        let mono = self.host.monotonic_ns();
        let ns = self.rd(self.clk(clock::TIME_NS))?;
        let sec = self.rd(self.clk(clock::TIME_SEC))?;
        if ns >= 1_000_000_000 {
            return Err(CardError::InvalidTime { sec, ns });
        }
        let card = i64::from(sec) * NS_PER_S + i64::from(ns);
        self.continuity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(mono_pre, mono, card)
            .map_err(|jump_ns| CardError::TimeJump { jump_ns })?;
        Ok(TimeReading {
            card_tai_ns: card,
            pre_ns: pre,
            post_ns: post,
        })
    }

    /// Forgets the continuity anchor (after a deliberate step of the card's time).
    pub fn reanchor(&self) {
        self.continuity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last = None;
    }

    /// Runs `f` with the `REGS` source selected, restoring the previous source after.
    fn with_regs_selected(&self, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let _clock = self.lock_clock();
        self.regs_selected_locked(f)
    }

    /// [`Self::with_regs_selected`] with the clock lock already held.
    fn regs_selected_locked(&self, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let saved = self.rd(self.clk(clock::SELECT))?;
        self.wr(
            self.clk(clock::SELECT),
            u32::from(ClockSource::Regs.as_u8()),
        )?;
        let r = f();
        self.wr(self.clk(clock::SELECT), saved >> 16)?;
        r
    }

    /// Like [`Self::with_regs_selected`] for an adjustment that moves the card's
    /// time on purpose: the continuity guard starts afresh afterwards.
    /// The continuity guard is re-anchored before the lock is released,
    /// so no reader sees the deliberate step as a time jump.
    fn adjusting_time(&self, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let _clock = self.lock_clock();
        self.adjusting_time_locked(f)
    }

    /// [`Self::adjusting_time`] with the clock lock already held.
    fn adjusting_time_locked(&self, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let r = self.regs_selected_locked(f);
        self.reanchor();
        r
    }

    /// Sets the card's time (TAI ns since the epoch), `settime64`.
    ///
    /// # Errors
    /// A negative time or one past 2106 is refused; access errors.
    pub fn set_time(&self, tai_ns: i64) -> Result<()> {
        let (sec, ns) = Self::time_registers(tai_ns)?;
        self.adjusting_time(|| self.write_time(sec, ns))
    }

    /// The seconds and nanoseconds registers for a TAI time.
    fn time_registers(tai_ns: i64) -> Result<(u32, u32)> {
        let sec = u32::try_from(tai_ns.div_euclid(NS_PER_S)).map_err(|_| {
            CardError::InvalidArgument(format!(
                "time {tai_ns} ns does not fit the 32-bit seconds register"
            ))
        })?;
        Ok((sec, tai_ns.rem_euclid(NS_PER_S) as u32))
    }

    /// Writes and applies a time (REGS selected, clock lock held).
    fn write_time(&self, sec: u32, ns: u32) -> Result<()> {
        self.wr(self.clk(clock::ADJUST_NS), ns)?;
        self.wr(self.clk(clock::ADJUST_SEC), sec)?;
        self.wr(
            self.clk(clock::CTRL),
            clock::CTRL_ADJUST_TIME | clock::CTRL_ENABLE,
        )
    }

    /// Steps the time by `delta_ns` at once, exactly: one immediate offset
    /// adjustment per ±2.147 s, so no read-modify-write latency creeps in.
    ///
    /// # Errors
    /// Access errors.
    pub fn step(&self, delta_ns: i64) -> Result<()> {
        self.adjusting_time(|| {
            let mut left = delta_ns;
            while left != 0 {
                let chunk = left.clamp(-MAX_OFFSET_STEP, MAX_OFFSET_STEP);
                self.wr(self.clk(clock::OFFSET_NS), sign_magnitude::encode(chunk))?;
                self.wr(self.clk(clock::OFFSET_WINDOW_NS), 0)?;
                self.wr(
                    self.clk(clock::CTRL),
                    clock::CTRL_ADJUST_OFFSET | clock::CTRL_ENABLE,
                )?;
                left -= chunk;
            }
            Ok(())
        })
    }

    /// Slews the time by `delta_ns` spread over `window_ns` (`adjtime` of
    /// `ptp_ocp` uses a 1 s window for |delta| ≤ 1 s).
    ///
    /// # Errors
    /// |delta| beyond the 31-bit register or a zero window is refused.
    pub fn slew(&self, delta_ns: i64, window_ns: u32) -> Result<()> {
        if delta_ns.abs() > MAX_OFFSET_STEP || window_ns == 0 {
            return Err(CardError::InvalidArgument(format!(
                "slew of {delta_ns} ns over {window_ns} ns: magnitude must be < 2^31 ns and the window > 0"
            )));
        }
        self.adjusting_time(|| {
            self.wr(self.clk(clock::OFFSET_NS), sign_magnitude::encode(delta_ns))?;
            self.wr(self.clk(clock::OFFSET_WINDOW_NS), window_ns)?;
            self.wr(
                self.clk(clock::CTRL),
                clock::CTRL_ADJUST_OFFSET | clock::CTRL_ENABLE,
            )
        })
    }

    /// `adjtime` exactly as `ptp_ocp`: coarse read-add-set beyond 1 s, else a 1 s slew.
    ///
    /// # Errors
    /// Access errors.
    pub fn adjtime(&self, delta_ns: i64) -> Result<()> {
        if delta_ns.abs() > NS_PER_S {
            // Read, add and set under one hold of the lock, as ptp_ocp.
            let _clock = self.lock_clock();
            let now = self.read_time_locked()?.card_tai_ns;
            let (sec, ns) = Self::time_registers(now + delta_ns)?;
            self.adjusting_time_locked(|| self.write_time(sec, ns))
        } else {
            self.slew(delta_ns, 1_000_000_000)
        }
    }

    /// Clears the FPGA's drift correction (done on GNSS loss).
    ///
    /// # Errors
    /// Access errors.
    pub fn clear_drift(&self) -> Result<()> {
        self.with_regs_selected(|| {
            self.wr(self.clk(clock::DRIFT_NS), 0)?;
            self.wr(
                self.clk(clock::CTRL),
                clock::CTRL_ADJUST_DRIFT | clock::CTRL_ENABLE,
            )
        })
    }

    /// Active clock source (`None` for a code the driver does not know).
    ///
    /// # Errors
    /// Access errors.
    pub fn clock_source(&self) -> Result<Option<ClockSource>> {
        Ok(ClockSource::from_u8(clock::select_active(
            self.rd(self.clk(clock::SELECT))?,
        )))
    }

    /// Selects the clock source.
    ///
    /// # Errors
    /// Access errors.
    pub fn set_clock_source(&self, src: ClockSource) -> Result<()> {
        let _clock = self.lock_clock();
        self.wr(self.clk(clock::SELECT), u32::from(src.as_u8()))?;
        Ok(())
    }

    fn utc_status(&self) -> Result<Option<UtcStatus>> {
        self.layout
            .tod
            .map(|b| self.rd(b + tod::UTC_STATUS).map(UtcStatus::from_reg))
            .transpose()
    }

    /// Firmware image version and what it implies.
    ///
    /// # Errors
    /// Access errors; `NotPresent` on boards without an image block.
    pub fn identify(&self) -> Result<Identity> {
        let raw = self.rd(self.block(self.layout.image, "image version block")?)?;
        let firmware = match self.board {
            Board::Adva | Board::AdvaX1 => FirmwareVersion::decode_adva(raw),
            _ => FirmwareVersion::decode_fb(raw),
        };
        Ok(Identity {
            board: self.board,
            pci_id: self.bar.pci_id(),
            backend: self.bar.describe(),
            firmware_kind: if firmware.loader { "loader" } else { "fw" },
            capabilities: firmware.capabilities(),
            firmware,
            clock_ip_version: regs::clock::ip_version(self.rd(self.clk(clock::VERSION))?),
        })
    }

    /// Card status: sync, holdover, GNSS, UTC/leap, servo.
    ///
    /// # Errors
    /// [`CardError::CardGone`] and access errors.
    pub fn status(&self) -> Result<CardStatus> {
        let st = self.rd(self.clk(clock::STATUS))?;
        let (pps_lost, pps_filter_error) = match self.layout.pps_to_clk {
            Some(b) => {
                let s = self.rd(b + pps::STATUS)?;
                (
                    s & pps::STATUS_SUPERV_ERR != 0,
                    s & pps::STATUS_FILTER_ERR != 0,
                )
            }
            None => (false, false),
        };
        let (utc, leap, antenna, sats, tod_status, tod_ctrl) = match self.layout.tod {
            Some(b) => {
                let sat = self.rd(b + tod::SAT_NUMBER)?;
                (
                    UtcStatus::from_reg(self.rd(b + tod::UTC_STATUS)?),
                    self.rd(b + tod::LEAP)? as i32,
                    self.rd(b + tod::ANTENNA_STATUS)?,
                    (
                        (sat >> tod::SAT_USED_SHIFT) as u8,
                        (sat & tod::SAT_SEEN_MASK) as u8,
                    ),
                    self.rd(b + tod::STATUS)?,
                    self.rd(b + tod::CTRL)?,
                )
            }
            None => (UtcStatus::default(), 0, 0, (0, 0), 0, 0),
        };
        Ok(CardStatus {
            in_sync: st & clock::STATUS_IN_SYNC != 0,
            in_holdover: st & clock::STATUS_IN_HOLDOVER != 0,
            clock_source: self.clock_source()?,
            pps_lost,
            pps_filter_error,
            utc,
            seconds_to_leap: leap,
            servo_offset_ns: sign_magnitude::decode(self.rd(self.clk(clock::STATUS_OFFSET))?),
            servo_drift: sign_magnitude::decode(self.rd(self.clk(clock::STATUS_DRIFT))?),
            antenna_status: antenna,
            satellites: sats,
            tod_status,
            tod_protocol: tod::protocol_name(tod_ctrl),
            ts_window_adjust_ns: self.ts_window_adjust_ns.load(Ordering::Relaxed),
        })
    }

    /// Clears the PPS slave's sticky error bits (write-one-to-clear), returning what was set.
    ///
    /// # Errors
    /// Access errors.
    pub fn clear_pps_errors(&self) -> Result<u32> {
        let Some(b) = self.layout.pps_to_clk else {
            return Ok(0);
        };
        let s = self.rd(b + pps::STATUS)?;
        if s != 0 {
            self.wr(b + pps::STATUS, s)?;
        }
        Ok(s)
    }

    /// Writes the UTC−TAI offset to the outputs that carry UTC (IRIG, DCF, NMEA out), as `ptp_ocp` does.
    ///
    /// # Errors
    /// Access errors.
    pub fn distribute_utc_offset(&self, tai_utc_s: i32) -> Result<()> {
        for base in [
            self.layout.irig_out,
            self.layout.dcf_out,
            self.layout.nmea_out,
        ]
        .into_iter()
        .flatten()
        {
            self.wr(base + tod::ADJ_SEC, tai_utc_s as u32)?;
        }
        Ok(())
    }

    fn ts_base(&self, index: usize) -> Result<u32> {
        let base = if index == 5 {
            self.layout.pps_ts
        } else {
            self.layout.ts.get(index).copied().flatten()
        };
        base.ok_or(CardError::NotPresent("timestamper"))
    }

    /// Enables or disables external timestamper `index` (0–4; 5 = PHC PPS).
    ///
    /// # Errors
    /// `NotPresent` or access errors.
    pub fn enable_extts(&self, index: usize, enable: bool) -> Result<()> {
        let b = self.ts_base(index)?;
        if enable {
            self.wr(b + ts::ENABLE, 1)?;
            self.wr(b + ts::INTR_MASK, 1)?;
            self.wr(b + ts::INTR, 1)
        } else {
            self.wr(b + ts::INTR_MASK, 0)?;
            self.wr(b + ts::ENABLE, 0)
        }
    }

    /// Takes the pending event of timestamper `index`, if any, and acknowledges it.
    ///
    /// # Errors
    /// `NotPresent` or access errors.
    pub fn poll_extts(&self, index: usize) -> Result<Option<ExtTimestamp>> {
        let b = self.ts_base(index)?;
        if self.rd(b + ts::INTR)? & 1 == 0 {
            return Ok(None);
        }
        let sec = self.rd(b + ts::TIME_SEC)?;
        let ns = self.rd(b + ts::TIME_NS)?;
        let count = self.rd(b + ts::TS_COUNT)?;
        let err = self.rd(b + ts::ERROR)?;
        if err != 0 {
            self.wr(b + ts::ERROR, err)?;
        }
        self.wr(b + ts::INTR, 1)?;
        if ns >= 1_000_000_000 {
            return Err(CardError::InvalidTime { sec, ns });
        }
        Ok(Some(ExtTimestamp {
            index,
            card_tai_ns: i64::from(sec) * NS_PER_S + i64::from(ns),
            count,
            dropped: err & ts::ERROR_DROP != 0,
        }))
    }

    fn signal_base(&self, index: usize) -> Result<u32> {
        self.layout
            .signal
            .get(index)
            .copied()
            .flatten()
            .ok_or(CardError::NotPresent("signal generator"))
    }

    /// Programs and starts signal generator `index` with `ptp_ocp`'s validation.
    ///
    /// # Errors
    /// [`CardError::InvalidArgument`] for a duty outside 1–99 %, a non-positive
    /// period, or a start earlier than now + 1 ms; access errors.
    pub fn start_signal(&self, index: usize, req: SignalRequest) -> Result<SignalStatus> {
        let b = self.signal_base(index)?;
        if !(1..=99).contains(&req.duty_percent) || req.period_ns <= 0 {
            return Err(CardError::InvalidArgument(format!(
                "signal period {} ns / duty {} %: period must be > 0 and duty 1..99",
                req.period_ns, req.duty_percent
            )));
        }
        let pulse = req.period_ns * i64::from(req.duty_percent) / 100;
        let now = self.read_time()?.card_tai_ns;
        let earliest = now + 1_000_000;
        let start = match req.start_ns {
            Some(s) if s < earliest => {
                return Err(CardError::InvalidArgument(format!(
                    "start {s} ns is before now + 1 ms ({earliest} ns)"
                )));
            }
            Some(s) => s,
            None => {
                (earliest / req.period_ns + 1) * req.period_ns
                    + req.phase_ns.rem_euclid(req.period_ns)
            }
        };
        let split = |t: i64| ((t / NS_PER_S) as u32, (t % NS_PER_S) as u32);
        self.wr(b + signal::INTR_MASK, 0)?;
        self.wr(b + signal::CTRL, 0)?;
        let (s, n) = split(start);
        self.wr(b + signal::START_SEC, s)?;
        self.wr(b + signal::START_NS, n)?;
        let (s, n) = split(req.period_ns);
        self.wr(b + signal::PERIOD_SEC, s)?;
        self.wr(b + signal::PERIOD_NS, n)?;
        let (s, n) = split(pulse);
        self.wr(b + signal::PULSE_SEC, s)?;
        self.wr(b + signal::PULSE_NS, n)?;
        self.wr(b + signal::POLARITY, u32::from(req.active_high))?;
        self.wr(b + signal::REPEAT_COUNT, 0)?;
        self.wr(b + signal::INTR, 0)?;
        self.wr(b + signal::INTR_MASK, 1)?;
        self.wr(b + signal::CTRL, signal::CTRL_ENABLE | signal::CTRL_VALID)?;
        self.signal_status(index)
    }

    /// Stops signal generator `index`.
    ///
    /// # Errors
    /// `NotPresent` or access errors.
    pub fn stop_signal(&self, index: usize) -> Result<()> {
        let b = self.signal_base(index)?;
        self.wr(b + signal::INTR_MASK, 0)?;
        self.wr(b + signal::CTRL, 0)
    }

    /// State of signal generator `index`.
    ///
    /// # Errors
    /// `NotPresent` or access errors.
    pub fn signal_status(&self, index: usize) -> Result<SignalStatus> {
        let b = self.signal_base(index)?;
        let pair = |s: u32, n: u32| -> Result<i64> {
            Ok(i64::from(self.rd(b + s)?) * NS_PER_S + i64::from(self.rd(b + n)?))
        };
        let ctrl = self.rd(b + signal::CTRL)?;
        let status = self.rd(b + signal::STATUS)?;
        Ok(SignalStatus {
            running: ctrl & signal::CTRL_ENABLE != 0 && status == 0,
            status,
            start_ns: pair(signal::START_SEC, signal::START_NS)?,
            period_ns: pair(signal::PERIOD_SEC, signal::PERIOD_NS)?,
            pulse_ns: pair(signal::PULSE_SEC, signal::PULSE_NS)?,
        })
    }

    fn freq_base(&self, index: usize) -> Result<u32> {
        self.layout
            .freq
            .get(index)
            .copied()
            .flatten()
            .ok_or(CardError::NotPresent("frequency counter"))
    }

    /// Sets the gate time of frequency counter `index` (0 turns it off).
    ///
    /// # Errors
    /// `NotPresent` or access errors.
    pub fn set_freq_gate(&self, index: usize, seconds: u8) -> Result<()> {
        let b = self.freq_base(index)?;
        self.wr(b + freq::CTRL, freq::ctrl_for_seconds(seconds))
    }

    /// Latest reading of frequency counter `index`.
    ///
    /// # Errors
    /// `NotPresent` or access errors.
    pub fn read_freq(&self, index: usize) -> Result<freq::FreqReading> {
        let b = self.freq_base(index)?;
        Ok(freq::decode_status(
            self.rd(b + freq::CTRL)?,
            self.rd(b + freq::STATUS)?,
        ))
    }

    /// Routes SMA inputs: writes the input-select word of SMA map 1 (SMA1 low half, SMA2 high half).
    ///
    /// # Errors
    /// `NotPresent` or access errors.
    pub fn set_sma_inputs(&self, word: u32) -> Result<()> {
        let b = self.block(self.layout.sma_map1, "SMA selector")?;
        self.wr(b + regs::gpio::GPIO1, word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_accepts_steady_time_and_flags_jumps() {
        let mut c = Continuity::default();
        let at = |c: &mut Continuity, mono: i64, card: i64| c.check(mono, mono, card);
        assert!(at(&mut c, 0, 1000).is_ok());
        assert!(
            at(&mut c, NS_PER_S, NS_PER_S + 1000 + 50_000).is_ok(),
            "50 µs within tolerance"
        );
        let jump = at(&mut c, 2 * NS_PER_S, 7 * NS_PER_S).unwrap_err();
        assert!((jump - 5 * NS_PER_S).abs() < 100_000);
        // Persisting for 3 s makes it the new timeline.
        assert!(at(&mut c, 3 * NS_PER_S, 8 * NS_PER_S).is_err());
        assert!(at(&mut c, 5 * NS_PER_S + 1, 10 * NS_PER_S).is_ok());
        assert!(at(&mut c, 6 * NS_PER_S + 1, 11 * NS_PER_S).is_ok());
    }

    #[test]
    fn a_reader_preempted_around_its_latch_is_not_a_jump() {
        let mut c = Continuity::default();
        assert!(c.check(0, 10_000, 0).is_ok());
        // Latched right after `pre`, then 20 ms off the CPU before `post`:
        // the card moved 1 ms while `post` moved 21 ms.
        assert!(c.check(1_000_000, 21_000_000, 1_000_000).is_ok());
        // The same 20 ms gap with no bracket to explain it is a jump.
        let mut d = Continuity::default();
        assert!(d.check(0, 0, 0).is_ok());
        assert!(d.check(21_000_000, 21_000_000, 1_000_000).is_err());
        // A 5 s step is still caught however wide the bracket.
        assert!(
            c.check(1_100_000_000, 1_150_000_000, 6_100_000_000)
                .is_err()
        );
    }
}
