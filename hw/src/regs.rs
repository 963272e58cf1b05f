//! Register maps inside each BAR0 block.
//!
//! One submodule per block type. Every register is a 32-bit little-endian
//! word; the `pub const` offsets are byte offsets from the block base
//! (see [`crate::layout`] for the bases), and the remaining constants are
//! bit masks, shifts or IP defaults. Offsets and bits follow the Linux
//! `ptp_ocp` driver's register structs, refined with the NetTimeLogic FPGA
//! cores where the driver leaves gaps; places where neither source defines
//! a layout say so.
//!
//! Registers holding signed values use sign-magnitude, see
//! [`crate::sign_magnitude`].

/// Splits an IP-core version word into `(major, minor, patch)`.
///
/// Layout: major in bits 31:24, minor in bits 23:16, patch in bits 15:0, as
/// the driver prints `Version a.b.c`.
#[must_use]
pub const fn ip_version(reg: u32) -> (u8, u8, u16) {
    ((reg >> 24) as u8, (reg >> 16) as u8, reg as u16)
}

pub use clock::ClockSource;

pub mod clock {
    //! Adjustable Clock (`ocp_reg`): the card's PHC, its source selector and
    //! the servo gains.
    //!
    //! Commands are written to [`CTRL`] together with [`CTRL_ENABLE`]; the
    //! adjust/servo bits self-clear, [`CTRL_READ_TIME_REQ`] latches the time
    //! into [`TIME_NS`]/[`TIME_SEC`] and sets [`CTRL_READ_TIME_DONE`].

    use std::fmt;
    use std::str::FromStr;

    use serde::{Deserialize, Serialize};

    pub use super::ip_version;

    /// Control/command register.
    pub const CTRL: u32 = 0x00;
    /// Status register ([`STATUS_IN_SYNC`], [`STATUS_IN_HOLDOVER`]).
    pub const STATUS: u32 = 0x04;
    /// Source select: requested source in bits 7:0, active one in 23:16.
    pub const SELECT: u32 = 0x08;
    /// IP core version (see [`ip_version`]).
    pub const VERSION: u32 = 0x0C;
    /// Latched time, nanoseconds.
    pub const TIME_NS: u32 = 0x10;
    /// Latched time, seconds (TAI).
    pub const TIME_SEC: u32 = 0x14;
    /// Time to set, nanoseconds.
    pub const ADJUST_NS: u32 = 0x20;
    /// Time to set, seconds.
    pub const ADJUST_SEC: u32 = 0x24;
    /// Phase offset step in sign-magnitude nanoseconds.
    pub const OFFSET_NS: u32 = 0x30;
    /// Interval over which the offset is slewed, nanoseconds.
    pub const OFFSET_WINDOW_NS: u32 = 0x34;
    /// Drift correction in sign-magnitude nanoseconds per window.
    pub const DRIFT_NS: u32 = 0x40;
    /// Interval of the drift correction, nanoseconds.
    pub const DRIFT_WINDOW_NS: u32 = 0x44;
    /// In-sync threshold in nanoseconds (IP register, absent from the driver struct).
    pub const IN_SYNC_THRESHOLD: u32 = 0x50;
    /// Servo offset proportional factor (16.16 fixed point).
    pub const SERVO_OFFSET_P: u32 = 0x60;
    /// Servo offset integral factor (16.16 fixed point).
    pub const SERVO_OFFSET_I: u32 = 0x64;
    /// Servo drift proportional factor (16.16 fixed point).
    pub const SERVO_DRIFT_P: u32 = 0x68;
    /// Servo drift integral factor (16.16 fixed point).
    pub const SERVO_DRIFT_I: u32 = 0x6C;
    /// Last applied offset adjustment, sign-magnitude ns (read-only).
    pub const STATUS_OFFSET: u32 = 0x70;
    /// Accumulated drift, sign-magnitude ns (read-only).
    pub const STATUS_DRIFT: u32 = 0x74;

    /// CTRL: clock enabled (0 resets the clock).
    pub const CTRL_ENABLE: u32 = 1 << 0;
    /// CTRL: load ADJUST_SEC/ADJUST_NS into the clock (self-clearing).
    pub const CTRL_ADJUST_TIME: u32 = 1 << 1;
    /// CTRL: slew OFFSET_NS over OFFSET_WINDOW_NS (self-clearing).
    pub const CTRL_ADJUST_OFFSET: u32 = 1 << 2;
    /// CTRL: apply DRIFT_NS over DRIFT_WINDOW_NS (self-clearing).
    pub const CTRL_ADJUST_DRIFT: u32 = 1 << 3;
    /// CTRL: latch the four servo factor registers (self-clearing).
    pub const CTRL_ADJUST_SERVO: u32 = 1 << 8;
    /// CTRL: request a time latch into TIME_SEC/TIME_NS.
    pub const CTRL_READ_TIME_REQ: u32 = 1 << 30;
    /// CTRL: set by hardware when the time latch is complete.
    pub const CTRL_READ_TIME_DONE: u32 = 1 << 31;
    /// CTRL: bits the IP implements.
    pub const CTRL_MASK: u32 = 0xC000_010F;

    /// STATUS: the clock is synchronised to its source.
    pub const STATUS_IN_SYNC: u32 = 1 << 0;
    /// STATUS: the clock was in sync and has lost its corrections.
    pub const STATUS_IN_HOLDOVER: u32 = 1 << 1;
    /// STATUS: bits the IP implements.
    pub const STATUS_MASK: u32 = 0x3;

    /// SELECT: writable bits (requested source and its readback copy).
    pub const SELECT_WRITE_MASK: u32 = 0x00FF_00FF;

    /// IP default of the in-sync threshold, nanoseconds.
    pub const IN_SYNC_THRESHOLD_DEFAULT_NS: u32 = 20;
    /// IP default holdover timeout, seconds.
    pub const HOLDOVER_TIMEOUT_DEFAULT_S: u32 = 3;
    /// Period of the clock's system tick (50 MHz), nanoseconds.
    pub const CLOCK_PERIOD_NS: u32 = 20;
    /// Version word of the Adjustable Clock IP (v0.1.0).
    pub const IP_VERSION: u32 = 0x0001_0000;

    /// The active source id from a SELECT read (bits 23:16).
    #[must_use]
    pub const fn select_active(reg: u32) -> u8 {
        (reg >> 16) as u8
    }

    /// A clock source id as written to [`SELECT`].
    ///
    /// Serialises as the driver's sysfs name (`"TOD"`, `"REGS"`, ...).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "UPPERCASE")]
    #[repr(u8)]
    pub enum ClockSource {
        /// No source: free running.
        None = 0,
        /// TOD slave (GNSS time of day plus PPS).
        Tod = 1,
        /// IRIG-B slave.
        Irig = 2,
        /// PPS slave.
        Pps = 3,
        /// PTP.
        Ptp = 4,
        /// Real-time clock.
        Rtc = 5,
        /// DCF77 slave.
        Dcf = 6,
        /// Register control by software (the driver selects this to step or slew).
        Regs = 0xFE,
        /// External source.
        Ext = 0xFF,
    }

    impl ClockSource {
        /// Every source, in sysfs `available_clock_sources` order.
        pub const ALL: [ClockSource; 9] = [
            ClockSource::None,
            ClockSource::Tod,
            ClockSource::Irig,
            ClockSource::Pps,
            ClockSource::Ptp,
            ClockSource::Rtc,
            ClockSource::Dcf,
            ClockSource::Regs,
            ClockSource::Ext,
        ];

        /// The source with this id, if any.
        #[must_use]
        pub const fn from_u8(id: u8) -> Option<Self> {
            Some(match id {
                0 => ClockSource::None,
                1 => ClockSource::Tod,
                2 => ClockSource::Irig,
                3 => ClockSource::Pps,
                4 => ClockSource::Ptp,
                5 => ClockSource::Rtc,
                6 => ClockSource::Dcf,
                0xFE => ClockSource::Regs,
                0xFF => ClockSource::Ext,
                _ => return Option::None,
            })
        }

        /// The id written to the SELECT register.
        #[must_use]
        pub const fn as_u8(self) -> u8 {
            self as u8
        }

        /// The driver's sysfs name.
        #[must_use]
        pub const fn name(self) -> &'static str {
            match self {
                ClockSource::None => "NONE",
                ClockSource::Tod => "TOD",
                ClockSource::Irig => "IRIG",
                ClockSource::Pps => "PPS",
                ClockSource::Ptp => "PTP",
                ClockSource::Rtc => "RTC",
                ClockSource::Dcf => "DCF",
                ClockSource::Regs => "REGS",
                ClockSource::Ext => "EXT",
            }
        }
    }

    impl fmt::Display for ClockSource {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.name())
        }
    }

    /// A string that names no clock source.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    #[error("unknown clock source {input:?}; valid names: NONE TOD IRIG PPS PTP RTC DCF REGS EXT")]
    pub struct ParseClockSourceError {
        /// The rejected input.
        pub input: String,
    }

    impl FromStr for ClockSource {
        type Err = ParseClockSourceError;

        /// Case-insensitive; surrounding whitespace (a sysfs newline) is ignored.
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            let t = s.trim();
            ClockSource::ALL
                .into_iter()
                .find(|c| c.name().eq_ignore_ascii_case(t))
                .ok_or_else(|| ParseClockSourceError {
                    input: s.to_owned(),
                })
        }
    }
}

pub mod tod {
    //! TOD slave (`tod_reg`): parses the GNSS receiver's messages, reports
    //! UTC offset and leap-second state. The NMEA output block (TOD master)
    //! uses the same offsets.

    use serde::{Deserialize, Serialize};

    /// Control register.
    pub const CTRL: u32 = 0x00;
    /// Status register (write-1-to-clear error bits).
    pub const STATUS: u32 = 0x04;
    /// UART input polarity.
    pub const UART_POLARITY: u32 = 0x08;
    /// IP core version.
    pub const VERSION: u32 = 0x0C;
    /// Seconds correction, sign-magnitude (TAI−UTC on TOD masters).
    pub const ADJ_SEC: u32 = 0x10;
    /// UART baud-rate code (see [`baud_from_code`]).
    pub const UART_BAUD: u32 = 0x20;
    /// UTC offset and leap flags (see [`UtcStatus`]).
    pub const UTC_STATUS: u32 = 0x30;
    /// Signed seconds to the next leap second.
    pub const LEAP: u32 = 0x34;
    /// Antenna / fix / interference flags (IP register, our own bit layout).
    pub const ANTENNA_STATUS: u32 = 0x40;
    /// Satellites seen and used (IP register, our own bit layout).
    pub const SAT_NUMBER: u32 = 0x44;

    /// CTRL: enable.
    pub const CTRL_ENABLE: u32 = 1 << 0;
    /// CTRL: disable message format B (bit 16); also the low format-select bit.
    pub const CTRL_DISABLE_FMT_B: u32 = 1 << 16;
    /// CTRL: disable message format A (bit 17); also the high format-select bit.
    pub const CTRL_DISABLE_FMT_A: u32 = 1 << 17;
    /// CTRL: shift of the GNSS constellation field.
    pub const CTRL_GNSS_SHIFT: u32 = 24;
    /// CTRL: GNSS constellation field (bits 27:24).
    pub const CTRL_GNSS_MASK: u32 = 0xF << CTRL_GNSS_SHIFT;
    /// CTRL: protocol flag (set = UBX family, clear = NMEA family).
    pub const CTRL_PROTOCOL: u32 = 1 << 28;
    /// CTRL: bits the TOD slave IP implements.
    pub const CTRL_MASK: u32 = 0x3F1F_F801;

    /// STATUS: message parser error.
    pub const STATUS_PARSER_ERROR: u32 = 1 << 0;
    /// STATUS: message checksum error.
    pub const STATUS_CHECKSUM_ERROR: u32 = 1 << 1;
    /// STATUS: UART framing error.
    pub const STATUS_UART_ERROR: u32 = 1 << 2;

    /// UTC_STATUS: TAI−UTC in seconds (bits 7:0).
    pub const UTC_OFFSET_MASK: u32 = 0xFF;
    /// UTC_STATUS: the UTC offset is valid.
    pub const UTC_VALID: u32 = 1 << 8;
    /// UTC_STATUS: a leap second is announced.
    pub const LEAP_ANNOUNCE: u32 = 1 << 12;
    /// UTC_STATUS: the announced leap minute has 59 seconds.
    pub const LEAP_59: u32 = 1 << 13;
    /// UTC_STATUS: the announced leap minute has 61 seconds.
    pub const LEAP_61: u32 = 1 << 14;
    /// UTC_STATUS: the leap information is valid.
    pub const LEAP_VALID: u32 = 1 << 16;
    /// UTC_STATUS: bits the IP implements.
    pub const UTC_STATUS_MASK: u32 = 0x0001_71FF;

    /// ANTENNA_STATUS: antenna OK. *Our layout*: the IP's bit layout is only
    /// published as images, so this crate defines its own.
    pub const ANTENNA_OK: u32 = 1 << 0;
    /// ANTENNA_STATUS: antenna short circuit (our layout).
    pub const ANTENNA_SHORT: u32 = 1 << 1;
    /// ANTENNA_STATUS: antenna open circuit (our layout).
    pub const ANTENNA_OPEN: u32 = 1 << 2;
    /// ANTENNA_STATUS: receiver has a valid fix (our layout).
    pub const FIX_OK: u32 = 1 << 8;
    /// ANTENNA_STATUS: jamming detected (our layout).
    pub const JAMMING: u32 = 1 << 12;
    /// ANTENNA_STATUS: spoofing detected (our layout; note bit 13 lies
    /// outside the real IP's read mask `0x37FF1FFF`).
    pub const SPOOFING: u32 = 1 << 13;
    /// SAT_NUMBER: satellites seen, bits 7:0 (our layout).
    pub const SAT_SEEN_MASK: u32 = 0xFF;
    /// SAT_NUMBER: shift of satellites used, bits 15:8 (our layout).
    pub const SAT_USED_SHIFT: u32 = 8;
    /// SAT_NUMBER: satellites used field (our layout).
    pub const SAT_USED_MASK: u32 = 0xFF << SAT_USED_SHIFT;

    /// Decoded UTC_STATUS register.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct UtcStatus {
        /// TAI−UTC in seconds.
        pub offset_s: u8,
        /// The offset is valid.
        pub utc_valid: bool,
        /// A leap second is announced.
        pub leap_announce: bool,
        /// The leap minute will have 59 seconds.
        pub leap_59: bool,
        /// The leap minute will have 61 seconds.
        pub leap_61: bool,
        /// The leap information is valid.
        pub leap_valid: bool,
    }

    impl UtcStatus {
        /// Decodes a register value; unknown bits are ignored.
        #[must_use]
        pub const fn from_reg(reg: u32) -> Self {
            Self {
                offset_s: (reg & UTC_OFFSET_MASK) as u8,
                utc_valid: reg & UTC_VALID != 0,
                leap_announce: reg & LEAP_ANNOUNCE != 0,
                leap_59: reg & LEAP_59 != 0,
                leap_61: reg & LEAP_61 != 0,
                leap_valid: reg & LEAP_VALID != 0,
            }
        }

        /// Encodes the register value.
        #[must_use]
        pub const fn to_reg(&self) -> u32 {
            let mut r = self.offset_s as u32;
            if self.utc_valid {
                r |= UTC_VALID;
            }
            if self.leap_announce {
                r |= LEAP_ANNOUNCE;
            }
            if self.leap_59 {
                r |= LEAP_59;
            }
            if self.leap_61 {
                r |= LEAP_61;
            }
            if self.leap_valid {
                r |= LEAP_VALID;
            }
            r
        }
    }

    /// Baud rates by UART_BAUD code (driver's NMEA-out table).
    const BAUDS: [u32; 13] = [
        1200, 2400, 4800, 9600, 19200, 38400, 57600, 115_200, 230_400, 460_800, 921_600, 1_000_000,
        2_000_000,
    ];

    /// Baud rate of a UART_BAUD code (0 = 1200 … 12 = 2000000).
    #[must_use]
    pub fn baud_from_code(code: u32) -> Option<u32> {
        BAUDS.get(usize::try_from(code).ok()?).copied()
    }

    /// UART_BAUD code of a baud rate, if the table has it.
    #[must_use]
    pub fn code_from_baud(baud: u32) -> Option<u32> {
        BAUDS
            .iter()
            .position(|&b| b == baud)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Message protocol named by a CTRL value, as the driver's debugfs decodes it.
    ///
    /// Index = (PROTOCOL ? 4 : 0) + bits 17:16.
    #[must_use]
    pub const fn protocol_name(ctrl: u32) -> &'static str {
        const NAMES: [&str; 8] = [
            "NMEA",
            "NMEA_ZDA",
            "NMEA_RMC",
            "NMEA_none",
            "UBX",
            "UBX_UTC",
            "UBX_LS",
            "UBX_none",
        ];
        let base = if ctrl & CTRL_PROTOCOL != 0 { 4 } else { 0 };
        NAMES[base + ((ctrl >> 16) & 3) as usize]
    }

    /// GNSS constellation named by CTRL bits 27:24 ("Unknown" above 5).
    #[must_use]
    pub const fn gnss_name(ctrl: u32) -> &'static str {
        const NAMES: [&str; 7] = [
            "ALL", "COMBINED", "GPS", "GLONASS", "GALILEO", "BEIDOU", "Unknown",
        ];
        let i = ((ctrl & CTRL_GNSS_MASK) >> CTRL_GNSS_SHIFT) as usize;
        if i < NAMES.len() {
            NAMES[i]
        } else {
            NAMES[NAMES.len() - 1]
        }
    }
}

pub mod ts {
    //! Signal timestamper (`ts_reg`): latches the clock time on an input edge.
    //!
    //! A pending event sits in [`TIME_SEC`]/[`TIME_NS`] until software writes
    //! 1 to [`INTR`]; events arriving meanwhile are dropped and set
    //! [`ERROR_DROP`].

    /// Enable (write 1 / 0).
    pub const ENABLE: u32 = 0x00;
    /// Error / status (write-1-to-clear).
    pub const ERROR: u32 = 0x04;
    /// Input polarity (1 = rising edge).
    pub const POLARITY: u32 = 0x08;
    /// IP core version.
    pub const VERSION: u32 = 0x0C;
    /// Cable delay compensation, nanoseconds.
    pub const CABLE_DELAY: u32 = 0x20;
    /// Interrupt pending (write 1 to acknowledge).
    pub const INTR: u32 = 0x30;
    /// Interrupt enable mask.
    pub const INTR_MASK: u32 = 0x34;
    /// Number of events seen while enabled.
    pub const EVENT_COUNT: u32 = 0x38;
    /// Sequence number of the latched event.
    pub const TS_COUNT: u32 = 0x40;
    /// Latched event time, nanoseconds.
    pub const TIME_NS: u32 = 0x44;
    /// Latched event time, seconds.
    pub const TIME_SEC: u32 = 0x48;
    /// Data width (unused, reads 0).
    pub const DATA_WIDTH: u32 = 0x4C;
    /// Data (unused, reads 0).
    pub const DATA: u32 = 0x50;

    /// ERROR: an event was dropped because the previous one was not acknowledged.
    pub const ERROR_DROP: u32 = 1 << 0;
}

pub mod pps {
    //! PPS generator and PPS slave (`pps_reg`).

    /// Control (bit 0 enable).
    pub const CTRL: u32 = 0x00;
    /// Status (write-1-to-clear).
    pub const STATUS: u32 = 0x04;
    /// Polarity.
    pub const POLARITY: u32 = 0x08;
    /// IP core version.
    pub const VERSION: u32 = 0x0C;
    /// Pulse width in milliseconds (measured on the slave, fixed on the generator).
    pub const PULSE_WIDTH: u32 = 0x10;
    /// Cable delay compensation, nanoseconds.
    pub const CABLE_DELAY: u32 = 0x20;

    /// CTRL: enable.
    pub const CTRL_ENABLE: u32 = 1 << 0;
    /// STATUS: PPS period outside 1 s ± 100 ms.
    pub const STATUS_FILTER_ERR: u32 = 1 << 0;
    /// STATUS: PPS supervision lost (pulse-width error); the driver's "GNSS lost".
    pub const STATUS_SUPERV_ERR: u32 = 1 << 1;
}

pub mod signal {
    //! Signal generator (`signal_reg`): periodic pulses from a start time.

    /// Control.
    pub const CTRL: u32 = 0x00;
    /// CTRL: enable.
    pub const CTRL_ENABLE: u32 = 1 << 0;
    /// CTRL: the new configuration is valid (the driver writes ENABLE|VALID).
    pub const CTRL_VALID: u32 = 1 << 1;
    /// Status (write-1-to-clear; nonzero = stopped with error).
    pub const STATUS: u32 = 0x04;
    /// STATUS: generation error (start in the past, limit reached, clock invalid).
    pub const STATUS_ERROR: u32 = 1 << 0;
    /// STATUS: the clock jumped.
    pub const STATUS_TIME_JUMP: u32 = 1 << 1;
    /// Polarity (1 = active-high pulse).
    pub const POLARITY: u32 = 0x08;
    /// IP core version.
    pub const VERSION: u32 = 0x0C;
    /// Cable delay compensation, nanoseconds.
    pub const CABLE_DELAY: u32 = 0x20;
    /// Interrupt pending.
    pub const INTR: u32 = 0x30;
    /// Interrupt enable mask.
    pub const INTR_MASK: u32 = 0x34;
    /// Start time, nanoseconds.
    pub const START_NS: u32 = 0x40;
    /// Start time, seconds.
    pub const START_SEC: u32 = 0x44;
    /// Pulse width, nanoseconds part.
    pub const PULSE_NS: u32 = 0x48;
    /// Pulse width, seconds part.
    pub const PULSE_SEC: u32 = 0x4C;
    /// Period, nanoseconds part.
    pub const PERIOD_NS: u32 = 0x50;
    /// Period, seconds part.
    pub const PERIOD_SEC: u32 = 0x54;
    /// Number of pulses (0 = forever).
    pub const REPEAT_COUNT: u32 = 0x58;
}

pub mod freq {
    //! Frequency counter (`frequency_reg`): counts edges over a gate of N
    //! seconds aligned to the clock's second boundaries.

    use serde::{Deserialize, Serialize};

    /// Control: enable and gate time.
    pub const CTRL: u32 = 0x00;
    /// Status: flags and measured frequency.
    pub const STATUS: u32 = 0x04;

    /// CTRL: enable.
    pub const CTRL_ENABLE: u32 = 1 << 0;
    /// CTRL: shift of the gate time in seconds.
    pub const CTRL_SECONDS_SHIFT: u32 = 8;
    /// CTRL: gate time field (bits 15:8).
    pub const CTRL_SECONDS_MASK: u32 = 0xFF00;
    /// STATUS: a measurement is available.
    pub const STATUS_VALID: u32 = 1 << 31;
    /// STATUS: measurement error (above 10 MHz).
    pub const STATUS_ERROR: u32 = 1 << 30;
    /// STATUS: counter overrun.
    pub const STATUS_OVERRUN: u32 = 1 << 29;
    /// STATUS: measured frequency in Hz (bits 23:0).
    pub const STATUS_VALUE_MASK: u32 = 0x00FF_FFFF;

    /// CTRL value for a gate of `seconds` seconds; 0 switches the counter off.
    #[must_use]
    pub const fn ctrl_for_seconds(seconds: u8) -> u32 {
        if seconds == 0 {
            0
        } else {
            ((seconds as u32) << CTRL_SECONDS_SHIFT) | CTRL_ENABLE
        }
    }

    /// Gate time configured in a CTRL value (0 when disabled), as sysfs shows it.
    #[must_use]
    pub const fn seconds_from_ctrl(ctrl: u32) -> u8 {
        if ctrl & CTRL_ENABLE == 0 {
            0
        } else {
            ((ctrl & CTRL_SECONDS_MASK) >> CTRL_SECONDS_SHIFT) as u8
        }
    }

    /// What a frequency counter reports.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum FreqReading {
        /// The counter is disabled.
        Off,
        /// Enabled, no measurement yet.
        Pending,
        /// A measurement, in Hz.
        Hz(u32),
        /// The input exceeded the measurable range.
        Error,
        /// The counter overran.
        Overrun,
    }

    /// Decodes a counter's registers with sysfs precedence:
    /// disabled, then ERROR, then OVERRUN, then VALID.
    #[must_use]
    pub const fn decode_status(ctrl: u32, status: u32) -> FreqReading {
        if ctrl & CTRL_ENABLE == 0 {
            FreqReading::Off
        } else if status & STATUS_ERROR != 0 {
            FreqReading::Error
        } else if status & STATUS_OVERRUN != 0 {
            FreqReading::Overrun
        } else if status & STATUS_VALID != 0 {
            FreqReading::Hz(status & STATUS_VALUE_MASK)
        } else {
            FreqReading::Pending
        }
    }
}

pub mod image {
    //! FPGA image version (`img_reg`): one word, decoded the way `ptp_ocp`
    //! derives the devlink "fw"/"loader" version and the capability set.

    use std::fmt;

    use serde::{Deserialize, Serialize};

    /// The version word.
    pub const VERSION: u32 = 0x00;

    /// Optional driver features a firmware supports beyond the basics.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct Capabilities {
        /// Signal generators (sysfs `genN`).
        pub signal: bool,
        /// Frequency counters (sysfs `freqN`).
        pub freq: bool,
    }

    /// A decoded image version.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct FirmwareVersion {
        /// The register value as read.
        pub raw: u32,
        /// The golden/loader image is running (low 16 bits were zero).
        pub loader: bool,
        /// Firmware tag: nonzero = FPGA firmware, zero = SOM firmware.
        pub tag: u8,
        /// Firmware version number.
        pub version: u16,
    }

    impl FirmwareVersion {
        /// Decodes with the fb/Celestica rule: low half zero means loader and
        /// the upper half is used; then tag = bits 15 and up (truncated to
        /// `u8`), version = bits 14:0.
        #[must_use]
        pub const fn decode_fb(raw: u32) -> Self {
            let loader = raw & 0xFFFF == 0;
            let v = if loader { raw >> 16 } else { raw };
            Self {
                raw,
                loader,
                tag: (v >> 15) as u8,
                version: (v & 0x7FFF) as u16,
            }
        }

        /// Decodes with the ADVA rule: same loader detection, tag forced to 1,
        /// version = low 16 bits.
        #[must_use]
        pub const fn decode_adva(raw: u32) -> Self {
            let loader = raw & 0xFFFF == 0;
            let v = if loader { raw >> 16 } else { raw };
            Self {
                raw,
                loader,
                tag: 1,
                version: (v & 0xFFFF) as u16,
            }
        }

        /// FPGA firmware (as opposed to SOM firmware).
        #[must_use]
        pub const fn is_fpga(&self) -> bool {
            self.tag != 0
        }

        /// Driver capability gating: FPGA firmware has both features
        /// (its version test always passes); SOM firmware gets signal
        /// generators from version 19 and frequency counters from 20.
        #[must_use]
        pub const fn capabilities(&self) -> Capabilities {
            if self.is_fpga() {
                Capabilities {
                    signal: true,
                    freq: true,
                }
            } else {
                Capabilities {
                    signal: self.version >= 19,
                    freq: self.version >= 20,
                }
            }
        }
    }

    impl fmt::Display for FirmwareVersion {
        /// `<tag>.<version>` in decimal, as devlink shows it.
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}.{}", self.tag, self.version)
        }
    }
}

pub mod gpio {
    //! Generic GPIO-style block (`gpio_reg`) used by the clock detector and
    //! both SMA selector slaves.

    /// First word (`gpio1`; SMA selectors: input select, see [`super::sma`]).
    pub const GPIO1: u32 = 0x00;
    /// Second word (`gpio2`; SMA selectors: output select).
    pub const GPIO2: u32 = 0x08;
}

pub mod sma {
    //! SMA selector codes (fb-style cards).
    //!
    //! Each GPIO word packs two connectors: odd-numbered SMA in bits 15:0,
    //! even-numbered in bits 31:16. Within a half, bits 14:0 select the
    //! signal (one-hot; inputs may be OR'ed) and bit 15 is [`SMA_ENABLE`].
    //! Input selects: sma1/sma2 in `sma_map1.gpio1`, sma3/sma4 in
    //! `sma_map2.gpio1`; output selects: sma1/sma2 in `sma_map2.gpio2`,
    //! sma3/sma4 in `sma_map1.gpio2`.

    /// Input: 10 MHz reference (no source bit).
    pub const IN_10MHZ: u32 = 0x0000;
    /// Input: external PPS 1.
    pub const IN_PPS1: u32 = 0x0001;
    /// Input: external PPS 2.
    pub const IN_PPS2: u32 = 0x0002;
    /// Input: timestamper 1.
    pub const IN_TS1: u32 = 0x0004;
    /// Input: timestamper 2.
    pub const IN_TS2: u32 = 0x0008;
    /// Input: IRIG-B slave.
    pub const IN_IRIG: u32 = 0x0010;
    /// Input: DCF77 slave.
    pub const IN_DCF: u32 = 0x0020;
    /// Input: timestamper 3.
    pub const IN_TS3: u32 = 0x0040;
    /// Input: timestamper 4.
    pub const IN_TS4: u32 = 0x0080;
    /// Input: frequency counter 1.
    pub const IN_FREQ1: u32 = 0x0100;
    /// Input: frequency counter 2.
    pub const IN_FREQ2: u32 = 0x0200;
    /// Input: frequency counter 3.
    pub const IN_FREQ3: u32 = 0x0400;
    /// Input: frequency counter 4.
    pub const IN_FREQ4: u32 = 0x0800;

    /// Output: 10 MHz (no source bit).
    pub const OUT_10MHZ: u32 = 0x0000;
    /// Output: the card's PPS (PHC).
    pub const OUT_PHC: u32 = 0x0001;
    /// Output: atomic clock (MAC) PPS.
    pub const OUT_MAC: u32 = 0x0002;
    /// Output: GNSS1 PPS.
    pub const OUT_GNSS1: u32 = 0x0004;
    /// Output: GNSS2 PPS.
    pub const OUT_GNSS2: u32 = 0x0008;
    /// Output: IRIG-B master.
    pub const OUT_IRIG: u32 = 0x0010;
    /// Output: DCF77 master.
    pub const OUT_DCF: u32 = 0x0020;
    /// Output: signal generator 1.
    pub const OUT_GEN1: u32 = 0x0040;
    /// Output: signal generator 2.
    pub const OUT_GEN2: u32 = 0x0080;
    /// Output: signal generator 3.
    pub const OUT_GEN3: u32 = 0x0100;
    /// Output: signal generator 4.
    pub const OUT_GEN4: u32 = 0x0200;
    /// Output: driven low.
    pub const OUT_GND: u32 = 0x2000;
    /// Output: driven high.
    pub const OUT_VCC: u32 = 0x4000;

    /// Bit 15 of a half: the selection is active (direction-changeable firmware).
    pub const SMA_ENABLE: u32 = 0x8000;
    /// Bits 14:0 of a half: the signal selection.
    pub const SELECT_MASK: u32 = 0x7FFF;

    /// Input functions by driver name, as `available_sma_inputs` lists them.
    pub const INPUTS: [(&str, u32); 13] = [
        ("10Mhz", IN_10MHZ),
        ("PPS1", IN_PPS1),
        ("PPS2", IN_PPS2),
        ("TS1", IN_TS1),
        ("TS2", IN_TS2),
        ("IRIG", IN_IRIG),
        ("DCF", IN_DCF),
        ("TS3", IN_TS3),
        ("TS4", IN_TS4),
        ("FREQ1", IN_FREQ1),
        ("FREQ2", IN_FREQ2),
        ("FREQ3", IN_FREQ3),
        ("FREQ4", IN_FREQ4),
    ];

    /// Output functions by driver name, as `available_sma_outputs` lists them.
    pub const OUTPUTS: [(&str, u32); 13] = [
        ("10Mhz", OUT_10MHZ),
        ("PHC", OUT_PHC),
        ("MAC", OUT_MAC),
        ("GNSS1", OUT_GNSS1),
        ("GNSS2", OUT_GNSS2),
        ("IRIG", OUT_IRIG),
        ("DCF", OUT_DCF),
        ("GEN1", OUT_GEN1),
        ("GEN2", OUT_GEN2),
        ("GEN3", OUT_GEN3),
        ("GEN4", OUT_GEN4),
        ("GND", OUT_GND),
        ("VCC", OUT_VCC),
    ];
}

pub mod irig {
    //! IRIG-B master and slave (driver use only; IP semantics not researched).

    /// Control (bit 0 enable; master: IRIG-B mode in bits 18:16).
    pub const CTRL: u32 = 0x00;
    /// Status (nonzero = error).
    pub const STATUS: u32 = 0x04;
    /// IP core version.
    pub const VERSION: u32 = 0x0C;
    /// Seconds correction (TAI−UTC on the master).
    pub const ADJ_SEC: u32 = 0x10;
    /// Mode control.
    pub const MODE_CTRL: u32 = 0x14;
    /// CTRL: enable.
    pub const CTRL_ENABLE: u32 = 1 << 0;
    /// CTRL (master): shift of the IRIG-B mode field.
    pub const CTRL_MODE_SHIFT: u32 = 16;
    /// CTRL (master): IRIG-B mode field, 0..7.
    pub const CTRL_MODE_MASK: u32 = 0x7 << CTRL_MODE_SHIFT;
}

pub mod dcf {
    //! DCF77 master and slave (driver use only).

    /// Control (bit 0 enable).
    pub const CTRL: u32 = 0x00;
    /// Status (nonzero = error).
    pub const STATUS: u32 = 0x04;
    /// IP core version.
    pub const VERSION: u32 = 0x0C;
    /// Seconds correction (TAI−UTC on the master).
    pub const ADJ_SEC: u32 = 0x10;
    /// CTRL: enable.
    pub const CTRL_ENABLE: u32 = 1 << 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn version_split() {
        assert_eq!(ip_version(0x0001_0000), (0, 1, 0));
        assert_eq!(ip_version(0x0102_0304), (1, 2, 0x0304));
        assert_eq!(clock::ip_version(clock::IP_VERSION), (0, 1, 0));
    }

    #[test]
    fn clock_offsets_and_bits() {
        use clock::*;
        let offs = [
            (CTRL, 0x00),
            (STATUS, 0x04),
            (SELECT, 0x08),
            (VERSION, 0x0C),
            (TIME_NS, 0x10),
            (TIME_SEC, 0x14),
            (ADJUST_NS, 0x20),
            (ADJUST_SEC, 0x24),
            (OFFSET_NS, 0x30),
            (OFFSET_WINDOW_NS, 0x34),
            (DRIFT_NS, 0x40),
            (DRIFT_WINDOW_NS, 0x44),
            (IN_SYNC_THRESHOLD, 0x50),
            (SERVO_OFFSET_P, 0x60),
            (SERVO_OFFSET_I, 0x64),
            (SERVO_DRIFT_P, 0x68),
            (SERVO_DRIFT_I, 0x6C),
            (STATUS_OFFSET, 0x70),
            (STATUS_DRIFT, 0x74),
        ];
        for (got, want) in offs {
            assert_eq!(got, want);
        }
        assert_eq!(CTRL_ENABLE, 0x1);
        assert_eq!(CTRL_ADJUST_TIME, 0x2);
        assert_eq!(CTRL_ADJUST_OFFSET, 0x4);
        assert_eq!(CTRL_ADJUST_DRIFT, 0x8);
        assert_eq!(CTRL_ADJUST_SERVO, 0x100);
        assert_eq!(CTRL_READ_TIME_REQ, 0x4000_0000);
        assert_eq!(CTRL_READ_TIME_DONE, 0x8000_0000);
        let all = CTRL_ENABLE
            | CTRL_ADJUST_TIME
            | CTRL_ADJUST_OFFSET
            | CTRL_ADJUST_DRIFT
            | CTRL_ADJUST_SERVO
            | CTRL_READ_TIME_REQ
            | CTRL_READ_TIME_DONE;
        assert_eq!(all, CTRL_MASK);
        assert_eq!(CTRL_MASK, 0xC000_010F);
        assert_eq!(STATUS_IN_SYNC, 1);
        assert_eq!(STATUS_IN_HOLDOVER, 2);
        assert_eq!(SELECT_WRITE_MASK, 0x00FF_00FF);
        assert_eq!(IN_SYNC_THRESHOLD_DEFAULT_NS, 20);
        assert_eq!(HOLDOVER_TIMEOUT_DEFAULT_S, 3);
        assert_eq!(CLOCK_PERIOD_NS, 20);
        assert_eq!(IP_VERSION, 0x0001_0000);
        assert_eq!(select_active(0x00FE_00FE), 0xFE);
        assert_eq!(select_active(0xFF03_0001), 0x03);
    }

    #[test]
    fn clock_source_names_ids_and_parsing() {
        use clock::ClockSource;
        let names: Vec<&str> = ClockSource::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.join(" "), "NONE TOD IRIG PPS PTP RTC DCF REGS EXT");
        let ids: Vec<u8> = ClockSource::ALL.iter().map(|c| c.as_u8()).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5, 6, 0xFE, 0xFF]);
        for c in ClockSource::ALL {
            assert_eq!(ClockSource::from_u8(c.as_u8()), Some(c));
            assert_eq!(c.to_string().parse::<ClockSource>(), Ok(c));
            assert_eq!(c.name().to_lowercase().parse::<ClockSource>(), Ok(c));
        }
        assert_eq!("  Regs\n".parse::<ClockSource>(), Ok(ClockSource::Regs));
        assert_eq!(ClockSource::from_u8(7), None);
        assert_eq!(ClockSource::from_u8(0xFD), None);
        let err = "GPS".parse::<ClockSource>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"GPS\""), "{msg}");
        for c in ClockSource::ALL {
            assert!(msg.contains(c.name()), "{msg}");
        }
    }

    #[test]
    fn tod_offsets_and_bits() {
        use tod::*;
        assert_eq!(
            [
                CTRL,
                STATUS,
                UART_POLARITY,
                VERSION,
                ADJ_SEC,
                UART_BAUD,
                UTC_STATUS,
                LEAP,
                ANTENNA_STATUS,
                SAT_NUMBER
            ],
            [0x00, 0x04, 0x08, 0x0C, 0x10, 0x20, 0x30, 0x34, 0x40, 0x44]
        );
        assert_eq!(CTRL_ENABLE, 1);
        assert_eq!(CTRL_DISABLE_FMT_B, 0x1_0000);
        assert_eq!(CTRL_DISABLE_FMT_A, 0x2_0000);
        assert_eq!(CTRL_GNSS_SHIFT, 24);
        assert_eq!(CTRL_GNSS_MASK, 0x0F00_0000);
        assert_eq!(CTRL_PROTOCOL, 0x1000_0000);
        let driver_bits =
            CTRL_ENABLE | CTRL_DISABLE_FMT_A | CTRL_DISABLE_FMT_B | CTRL_GNSS_MASK | CTRL_PROTOCOL;
        assert_eq!(driver_bits & !CTRL_MASK, 0);
        assert_eq!(
            (
                STATUS_PARSER_ERROR,
                STATUS_CHECKSUM_ERROR,
                STATUS_UART_ERROR
            ),
            (1, 2, 4)
        );
        assert_eq!(UTC_OFFSET_MASK, 0xFF);
        assert_eq!(UTC_VALID, 0x100);
        assert_eq!(LEAP_ANNOUNCE, 0x1000);
        assert_eq!(LEAP_59, 0x2000);
        assert_eq!(LEAP_61, 0x4000);
        assert_eq!(LEAP_VALID, 0x1_0000);
        assert_eq!(
            UTC_OFFSET_MASK | UTC_VALID | LEAP_ANNOUNCE | LEAP_59 | LEAP_61 | LEAP_VALID,
            UTC_STATUS_MASK
        );
        assert_eq!(
            (
                ANTENNA_OK,
                ANTENNA_SHORT,
                ANTENNA_OPEN,
                FIX_OK,
                JAMMING,
                SPOOFING
            ),
            (1, 2, 4, 0x100, 0x1000, 0x2000)
        );
        assert_eq!(
            (SAT_SEEN_MASK, SAT_USED_SHIFT, SAT_USED_MASK),
            (0xFF, 8, 0xFF00)
        );
    }

    #[test]
    fn utc_status_round_trip() {
        use tod::UtcStatus;
        let s = UtcStatus::from_reg(37 | tod::UTC_VALID | tod::LEAP_VALID);
        assert_eq!(
            s,
            UtcStatus {
                offset_s: 37,
                utc_valid: true,
                leap_valid: true,
                ..UtcStatus::default()
            }
        );
        assert_eq!(s.to_reg(), 0x1_0125);
        let all = UtcStatus {
            offset_s: 0xFF,
            utc_valid: true,
            leap_announce: true,
            leap_59: true,
            leap_61: true,
            leap_valid: true,
        };
        assert_eq!(all.to_reg(), tod::UTC_STATUS_MASK);
        assert_eq!(UtcStatus::from_reg(0xFFFF_FFFF), all);
    }

    #[test]
    fn baud_table() {
        use tod::{baud_from_code, code_from_baud};
        let table = [
            1200, 2400, 4800, 9600, 19200, 38400, 57600, 115_200, 230_400, 460_800, 921_600,
            1_000_000, 2_000_000,
        ];
        for (code, baud) in (0u32..).zip(table) {
            assert_eq!(baud_from_code(code), Some(baud));
            assert_eq!(code_from_baud(baud), Some(code));
        }
        assert_eq!(baud_from_code(7), Some(115_200));
        assert_eq!(baud_from_code(13), None);
        assert_eq!(baud_from_code(u32::MAX), None);
        assert_eq!(code_from_baud(14_400), None);
    }

    #[test]
    fn tod_debugfs_names() {
        use tod::*;
        assert_eq!(protocol_name(0), "NMEA");
        assert_eq!(protocol_name(CTRL_DISABLE_FMT_B), "NMEA_ZDA");
        assert_eq!(protocol_name(CTRL_DISABLE_FMT_A), "NMEA_RMC");
        assert_eq!(
            protocol_name(CTRL_DISABLE_FMT_A | CTRL_DISABLE_FMT_B),
            "NMEA_none"
        );
        assert_eq!(protocol_name(CTRL_PROTOCOL | CTRL_ENABLE), "UBX");
        assert_eq!(protocol_name(CTRL_PROTOCOL | CTRL_DISABLE_FMT_B), "UBX_UTC");
        assert_eq!(protocol_name(CTRL_PROTOCOL | CTRL_DISABLE_FMT_A), "UBX_LS");
        assert_eq!(protocol_name(0xFFFF_FFFF), "UBX_none");
        let gnss: Vec<&str> = (0..16).map(|i| gnss_name(i << CTRL_GNSS_SHIFT)).collect();
        assert_eq!(
            &gnss[..7],
            [
                "ALL", "COMBINED", "GPS", "GLONASS", "GALILEO", "BEIDOU", "Unknown"
            ]
        );
        assert!(gnss[6..].iter().all(|n| *n == "Unknown"));
    }

    #[test]
    fn ts_pps_signal_offsets() {
        assert_eq!(
            [
                ts::ENABLE,
                ts::ERROR,
                ts::POLARITY,
                ts::VERSION,
                ts::CABLE_DELAY,
                ts::INTR,
                ts::INTR_MASK,
                ts::EVENT_COUNT,
                ts::TS_COUNT,
                ts::TIME_NS,
                ts::TIME_SEC,
                ts::DATA_WIDTH,
                ts::DATA
            ],
            [
                0x00, 0x04, 0x08, 0x0C, 0x20, 0x30, 0x34, 0x38, 0x40, 0x44, 0x48, 0x4C, 0x50
            ]
        );
        assert_eq!(ts::ERROR_DROP, 1);
        assert_eq!(
            [
                pps::CTRL,
                pps::STATUS,
                pps::POLARITY,
                pps::VERSION,
                pps::PULSE_WIDTH,
                pps::CABLE_DELAY
            ],
            [0x00, 0x04, 0x08, 0x0C, 0x10, 0x20]
        );
        assert_eq!((pps::STATUS_FILTER_ERR, pps::STATUS_SUPERV_ERR), (1, 2));
        assert_eq!(
            [
                signal::CTRL,
                signal::STATUS,
                signal::POLARITY,
                signal::VERSION,
                signal::CABLE_DELAY,
                signal::INTR,
                signal::INTR_MASK,
                signal::START_NS,
                signal::START_SEC,
                signal::PULSE_NS,
                signal::PULSE_SEC,
                signal::PERIOD_NS,
                signal::PERIOD_SEC,
                signal::REPEAT_COUNT
            ],
            [
                0x00, 0x04, 0x08, 0x0C, 0x20, 0x30, 0x34, 0x40, 0x44, 0x48, 0x4C, 0x50, 0x54, 0x58
            ]
        );
        assert_eq!(signal::CTRL_ENABLE | signal::CTRL_VALID, 3);
        assert_eq!((signal::STATUS_ERROR, signal::STATUS_TIME_JUMP), (1, 2));
        assert_eq!(
            [
                irig::CTRL,
                irig::STATUS,
                irig::VERSION,
                irig::ADJ_SEC,
                irig::MODE_CTRL
            ],
            [0x00, 0x04, 0x0C, 0x10, 0x14]
        );
        assert_eq!(irig::CTRL_MODE_MASK, 0x7_0000);
        assert_eq!(
            [dcf::CTRL, dcf::STATUS, dcf::VERSION, dcf::ADJ_SEC],
            [0x00, 0x04, 0x0C, 0x10]
        );
        assert_eq!((gpio::GPIO1, gpio::GPIO2), (0x00, 0x08));
    }

    #[test]
    fn freq_ctrl_and_status() {
        use freq::*;
        assert_eq!((CTRL, STATUS), (0, 4));
        assert_eq!(CTRL_ENABLE, 1);
        assert_eq!((CTRL_SECONDS_SHIFT, CTRL_SECONDS_MASK), (8, 0xFF00));
        assert_eq!(STATUS_VALID, 0x8000_0000);
        assert_eq!(STATUS_ERROR, 0x4000_0000);
        assert_eq!(STATUS_OVERRUN, 0x2000_0000);
        assert_eq!(STATUS_VALUE_MASK, 0x00FF_FFFF);
        assert_eq!(ctrl_for_seconds(0), 0);
        assert_eq!(ctrl_for_seconds(1), 0x101);
        assert_eq!(ctrl_for_seconds(255), 0xFF01);
        for s in 0..=255u8 {
            assert_eq!(seconds_from_ctrl(ctrl_for_seconds(s)), s);
        }
        assert_eq!(seconds_from_ctrl(0xFF00), 0);
        let on = ctrl_for_seconds(1);
        assert_eq!(decode_status(0, STATUS_VALID | 5), FreqReading::Off);
        assert_eq!(decode_status(on, 0), FreqReading::Pending);
        assert_eq!(
            decode_status(on, STATUS_VALID | 10_000_000),
            FreqReading::Hz(10_000_000)
        );
        assert_eq!(
            decode_status(on, STATUS_VALID | 0x0F00_0001),
            FreqReading::Hz(1)
        );
        assert_eq!(
            decode_status(on, STATUS_VALID | STATUS_ERROR),
            FreqReading::Error
        );
        assert_eq!(
            decode_status(on, STATUS_VALID | STATUS_OVERRUN),
            FreqReading::Overrun
        );
        assert_eq!(
            decode_status(on, STATUS_ERROR | STATUS_OVERRUN),
            FreqReading::Error
        );
    }

    #[test]
    fn firmware_version_examples() {
        use image::{Capabilities, FirmwareVersion};
        assert_eq!(image::VERSION, 0);

        // Golden image as the FPGA docs show it: low half zero.
        let golden = FirmwareVersion::decode_fb(0x0001_0000);
        assert_eq!(
            golden,
            FirmwareVersion {
                raw: 0x0001_0000,
                loader: true,
                tag: 0,
                version: 1
            }
        );
        assert_eq!(golden.to_string(), "0.1");
        assert!(!golden.is_fpga());

        let regular = FirmwareVersion::decode_fb(0x0000_0003);
        assert!(!regular.loader);
        assert_eq!((regular.tag, regular.version), (0, 3));
        assert_eq!(
            regular.capabilities(),
            Capabilities {
                signal: false,
                freq: false
            }
        );

        // Golden bits above bit 15 leak into the tag.
        let both = FirmwareVersion::decode_fb(0x0001_0003);
        assert_eq!((both.loader, both.tag, both.version), (false, 2, 3));
        assert_eq!(both.to_string(), "2.3");
        assert!(both.is_fpga());
        assert_eq!(
            both.capabilities(),
            Capabilities {
                signal: true,
                freq: true
            }
        );

        let fpga = FirmwareVersion::decode_fb(0x0000_8007);
        assert_eq!((fpga.tag, fpga.version), (1, 7));
        let zero = FirmwareVersion::decode_fb(0);
        assert_eq!((zero.loader, zero.tag, zero.version), (true, 0, 0));
        let big = FirmwareVersion::decode_fb(0xFFFF_0000);
        assert_eq!((big.loader, big.tag, big.version), (true, 1, 0x7FFF));

        let som = |v| FirmwareVersion::decode_fb(v).capabilities();
        assert_eq!(
            som(18),
            Capabilities {
                signal: false,
                freq: false
            }
        );
        assert_eq!(
            som(19),
            Capabilities {
                signal: true,
                freq: false
            }
        );
        assert_eq!(
            som(20),
            Capabilities {
                signal: true,
                freq: true
            }
        );

        let adva = FirmwareVersion::decode_adva(0x0000_1234);
        assert_eq!((adva.loader, adva.tag, adva.version), (false, 1, 0x1234));
        assert_eq!(adva.to_string(), "1.4660");
        let adva_loader = FirmwareVersion::decode_adva(0xABCD_0000);
        assert_eq!(
            (adva_loader.loader, adva_loader.tag, adva_loader.version),
            (true, 1, 0xABCD)
        );
        assert_eq!(
            adva_loader.capabilities(),
            Capabilities {
                signal: true,
                freq: true
            }
        );
    }

    #[test]
    fn sma_codes() {
        use sma::*;
        let inputs = [
            IN_10MHZ, IN_PPS1, IN_PPS2, IN_TS1, IN_TS2, IN_IRIG, IN_DCF, IN_TS3, IN_TS4, IN_FREQ1,
            IN_FREQ2, IN_FREQ3, IN_FREQ4,
        ];
        assert_eq!(
            inputs,
            [
                0, 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
            ]
        );
        let outputs = [
            OUT_10MHZ, OUT_PHC, OUT_MAC, OUT_GNSS1, OUT_GNSS2, OUT_IRIG, OUT_DCF, OUT_GEN1,
            OUT_GEN2, OUT_GEN3, OUT_GEN4, OUT_GND, OUT_VCC,
        ];
        assert_eq!(
            outputs,
            [
                0, 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100, 0x200, 0x2000, 0x4000
            ]
        );
        assert_eq!(SMA_ENABLE, 0x8000);
        assert_eq!(SELECT_MASK | SMA_ENABLE, 0xFFFF);
        assert_eq!(INPUTS.map(|(_, c)| c), inputs);
        assert_eq!(OUTPUTS.map(|(_, c)| c), outputs);
        for (_, c) in INPUTS.iter().chain(OUTPUTS.iter()) {
            assert!(c.count_ones() <= 1 && c & !SELECT_MASK == 0);
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(reg: u32, ctrl: u32) {
            let _ = ip_version(reg);
            let _ = clock::select_active(reg);
            let _ = clock::ClockSource::from_u8(clock::select_active(reg));
            let _ = tod::protocol_name(ctrl);
            let _ = tod::gnss_name(ctrl);
            let _ = tod::baud_from_code(reg);
            let s = tod::UtcStatus::from_reg(reg);
            prop_assert_eq!(s.to_reg(), reg & tod::UTC_STATUS_MASK);
            let _ = freq::decode_status(ctrl, reg);
            let fb = image::FirmwareVersion::decode_fb(reg);
            let _ = (fb.capabilities(), fb.to_string());
            prop_assert!(fb.version <= 0x7FFF);
            prop_assert_eq!(fb.loader, reg & 0xFFFF == 0);
            let adva = image::FirmwareVersion::decode_adva(reg);
            let _ = (adva.capabilities(), adva.to_string());
            prop_assert!(adva.is_fpga());
        }

        #[test]
        fn clock_source_from_str_never_panics(s in ".{0,12}") {
            if let Ok(c) = s.parse::<clock::ClockSource>() {
                prop_assert!(c.name().eq_ignore_ascii_case(s.trim()));
            }
        }
    }
}
