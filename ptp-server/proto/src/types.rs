//! Basic PTP data types (IEEE 1588-2019 §5.3): identities, timestamps, time
//! intervals, message types, flags and clock quality.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

use crate::message::ParseError;
use crate::write::WriteError;

/// An 8-octet `ClockIdentity` (IEEE 1588-2019 §5.3.4, §7.5.2.2).
///
/// Displayed like linuxptp: `aabbcc.fffe.ddeeff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClockIdentity(pub [u8; 8]);

impl ClockIdentity {
    /// All-ones identity, used (with port number `0xFFFF`) as the wildcard
    /// target of signaling and management messages.
    pub const ALL_ONES: Self = Self([0xFF; 8]);

    /// Builds the EUI-64 identity from an EUI-48 MAC address by inserting
    /// `FF FE` between the OUI and the NIC-specific part (as linuxptp and
    /// ptp4u do; the universal/local bit is *not* flipped).
    #[must_use]
    pub const fn from_mac(mac: [u8; 6]) -> Self {
        Self([mac[0], mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]])
    }

    /// The identity as a big-endian integer (handy as a hash/map key).
    #[must_use]
    pub const fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// Builds an identity from a big-endian integer.
    #[must_use]
    pub const fn from_u64(v: u64) -> Self {
        Self(v.to_be_bytes())
    }
}

impl fmt::Display for ClockIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

/// A `PortIdentity` (§5.3.5): clock identity plus port number, 10 octets on
/// the wire. Displayed like linuxptp: `aabbcc.fffe.ddeeff-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortIdentity {
    /// Identity of the clock that owns the port.
    pub clock_identity: ClockIdentity,
    /// Port number, 1-based for real ports.
    pub port_number: u16,
}

impl PortIdentity {
    /// Encoded size in octets.
    pub const LEN: usize = 10;

    /// The wildcard port identity (all ones), e.g. the `targetPortIdentity`
    /// ptp4l puts in REQUEST_UNICAST_TRANSMISSION signaling.
    pub const ALL_ONES: Self = Self {
        clock_identity: ClockIdentity::ALL_ONES,
        port_number: 0xFFFF,
    };

    /// Creates a port identity.
    #[must_use]
    pub const fn new(clock_identity: ClockIdentity, port_number: u16) -> Self {
        Self {
            clock_identity,
            port_number,
        }
    }

    pub(crate) fn read(b: &[u8; 10]) -> Self {
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[..8]);
        Self {
            clock_identity: ClockIdentity(id),
            port_number: u16::from_be_bytes([b[8], b[9]]),
        }
    }

    pub(crate) fn write(&self, b: &mut [u8; 10]) {
        b[..8].copy_from_slice(&self.clock_identity.0);
        b[8..].copy_from_slice(&self.port_number.to_be_bytes());
    }
}

impl fmt::Display for PortIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.clock_identity, self.port_number)
    }
}

/// A PTP `Timestamp` (§5.3.3): 48-bit seconds and 32-bit nanoseconds.
///
/// The timescale is whatever the message carries (TAI for the PTP timescale);
/// this type does not convert. A valid timestamp has
/// `nanoseconds < 1_000_000_000` and `seconds <= Timestamp::MAX_SECONDS`;
/// parsing rejects the former, writing rejects both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the epoch (only the low 48 bits go on the wire).
    pub seconds: u64,
    /// Nanoseconds within the second, `< 1_000_000_000`.
    pub nanoseconds: u32,
}

impl Timestamp {
    /// Encoded size in octets.
    pub const LEN: usize = 10;
    /// Largest encodable seconds value (2^48 - 1).
    pub const MAX_SECONDS: u64 = (1 << 48) - 1;
    /// Zero timestamp (what two-step Sync carries as `originTimestamp`).
    pub const ZERO: Self = Self {
        seconds: 0,
        nanoseconds: 0,
    };

    /// Creates a timestamp, or `None` when a field is out of range.
    #[must_use]
    pub const fn new(seconds: u64, nanoseconds: u32) -> Option<Self> {
        let t = Self {
            seconds,
            nanoseconds,
        };
        if t.is_valid() { Some(t) } else { None }
    }

    /// True when `nanoseconds < 1e9` and `seconds < 2^48`.
    #[must_use]
    pub const fn is_valid(&self) -> bool {
        self.nanoseconds < 1_000_000_000 && self.seconds <= Self::MAX_SECONDS
    }

    /// Timestamp from nanoseconds since the epoch (always representable).
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Self {
        Self {
            seconds: nanos / 1_000_000_000,
            // Always < 1e9, so the cast is lossless.
            nanoseconds: (nanos % 1_000_000_000) as u32,
        }
    }

    /// Timestamp from signed nanoseconds; `None` if negative or beyond 2^48 s.
    #[must_use]
    pub fn try_from_nanos(nanos: i128) -> Option<Self> {
        if nanos < 0 {
            return None;
        }
        let seconds = u64::try_from(nanos / 1_000_000_000).ok()?;
        let nanoseconds = u32::try_from(nanos % 1_000_000_000).ok()?;
        Self::new(seconds, nanoseconds)
    }

    /// Nanoseconds since the epoch (exact for any field values).
    #[must_use]
    pub const fn to_nanos(&self) -> i128 {
        self.seconds as i128 * 1_000_000_000 + self.nanoseconds as i128
    }

    /// Reads 10 octets; rejects `nanoseconds >= 1e9`.
    pub(crate) fn read(b: &[u8; 10]) -> Result<Self, ParseError> {
        let seconds = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
        let nanoseconds = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
        if nanoseconds >= 1_000_000_000 {
            return Err(ParseError::BadTimestamp);
        }
        Ok(Self {
            seconds,
            nanoseconds,
        })
    }

    /// Writes 10 octets; rejects invalid timestamps.
    pub(crate) fn write(&self, b: &mut [u8; 10]) -> Result<(), WriteError> {
        if !self.is_valid() {
            return Err(WriteError::InvalidField("timestamp"));
        }
        b[..6].copy_from_slice(&self.seconds.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&self.nanoseconds.to_be_bytes());
        Ok(())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.seconds, self.nanoseconds)
    }
}

/// A `TimeInterval` (§5.3.2): signed nanoseconds scaled by 2^16, as carried by
/// the header `correctionField`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeInterval(pub i64);

impl TimeInterval {
    /// Zero interval.
    pub const ZERO: Self = Self(0);
    /// The value 1588 uses for "too big to represent" (`0x7FFF_FFFF_FFFF_FFFF`).
    pub const TOO_BIG: Self = Self(i64::MAX);

    /// From whole nanoseconds (saturating at the i64 range of the scaled value).
    #[must_use]
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos.saturating_mul(1 << 16))
    }

    /// From fractional nanoseconds (saturating; NaN gives zero).
    #[must_use]
    pub fn from_nanos_f64(nanos: f64) -> Self {
        // `as` from f64 saturates and maps NaN to 0, which is what we want.
        #[allow(clippy::cast_possible_truncation)]
        Self((nanos * 65536.0) as i64)
    }

    /// The interval in (fractional) nanoseconds.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn nanos_f64(self) -> f64 {
        self.0 as f64 / 65536.0
    }

    /// The interval in whole nanoseconds, rounded towards negative infinity.
    #[must_use]
    pub const fn whole_nanos(self) -> i64 {
        self.0 >> 16
    }

    /// Saturating sum, e.g. to add a residence time to a correction.
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }
}

/// PTP `messageType` (§13.3.2.2, Table 36), the low nibble of octet 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Sync (event).
    Sync = 0x0,
    /// Delay_Req (event).
    DelayReq = 0x1,
    /// Pdelay_Req (event).
    PDelayReq = 0x2,
    /// Pdelay_Resp (event).
    PDelayResp = 0x3,
    /// Follow_Up (general).
    FollowUp = 0x8,
    /// Delay_Resp (general).
    DelayResp = 0x9,
    /// Pdelay_Resp_Follow_Up (general).
    PDelayRespFollowUp = 0xA,
    /// Announce (general).
    Announce = 0xB,
    /// Signaling (general).
    Signaling = 0xC,
    /// Management (general).
    Management = 0xD,
}

impl MessageType {
    /// Decodes a 4-bit message type; `None` for reserved values (4..=7, 0xE,
    /// 0xF) and anything above 0xF.
    #[must_use]
    pub const fn from_nibble(nibble: u8) -> Option<Self> {
        Some(match nibble {
            0x0 => Self::Sync,
            0x1 => Self::DelayReq,
            0x2 => Self::PDelayReq,
            0x3 => Self::PDelayResp,
            0x8 => Self::FollowUp,
            0x9 => Self::DelayResp,
            0xA => Self::PDelayRespFollowUp,
            0xB => Self::Announce,
            0xC => Self::Signaling,
            0xD => Self::Management,
            _ => return None,
        })
    }

    /// The 4-bit wire value.
    #[must_use]
    pub const fn to_nibble(self) -> u8 {
        self as u8
    }

    /// True for event messages (sent to port 319 and timestamped).
    #[must_use]
    pub const fn is_event(self) -> bool {
        (self as u8) < 0x8
    }

    /// Length of the fixed body that follows the 34-octet header.
    #[must_use]
    pub const fn body_len(self) -> usize {
        match self {
            Self::Sync | Self::DelayReq | Self::FollowUp => 10,
            Self::PDelayReq | Self::PDelayResp | Self::PDelayRespFollowUp | Self::DelayResp => 20,
            Self::Announce => 30,
            Self::Signaling => 10,
            Self::Management => 14,
        }
    }

    /// Minimum `messageLength` for this type (header + fixed body).
    #[must_use]
    pub const fn min_len(self) -> usize {
        crate::header::HEADER_LEN + self.body_len()
    }

    /// Name as used by 1588 / Wireshark, e.g. `Delay_Req`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sync => "Sync",
            Self::DelayReq => "Delay_Req",
            Self::PDelayReq => "Pdelay_Req",
            Self::PDelayResp => "Pdelay_Resp",
            Self::FollowUp => "Follow_Up",
            Self::DelayResp => "Delay_Resp",
            Self::PDelayRespFollowUp => "Pdelay_Resp_Follow_Up",
            Self::Announce => "Announce",
            Self::Signaling => "Signaling",
            Self::Management => "Management",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The header `flagField` (§13.3.2.8, Table 37) as a big-endian `u16`:
/// octet 0 is the high byte, octet 1 the low byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// Octet 0 bit 0: alternateMasterFlag.
    pub const ALTERNATE_MASTER: Self = Self(0x0100);
    /// Octet 0 bit 1: twoStepFlag.
    pub const TWO_STEP: Self = Self(0x0200);
    /// Octet 0 bit 2: unicastFlag.
    pub const UNICAST: Self = Self(0x0400);
    /// Octet 0 bit 5: PTP profile specific 1 (SPTP marks its Delay_Req with it).
    pub const PROFILE_SPECIFIC_1: Self = Self(0x2000);
    /// Octet 0 bit 6: PTP profile specific 2.
    pub const PROFILE_SPECIFIC_2: Self = Self(0x4000);
    /// Octet 1 bit 0: leap61.
    pub const LEAP_61: Self = Self(0x0001);
    /// Octet 1 bit 1: leap59.
    pub const LEAP_59: Self = Self(0x0002);
    /// Octet 1 bit 2: currentUtcOffsetValid.
    pub const CURRENT_UTC_OFFSET_VALID: Self = Self(0x0004);
    /// Octet 1 bit 3: ptpTimescale.
    pub const PTP_TIMESCALE: Self = Self(0x0008);
    /// Octet 1 bit 4: timeTraceable.
    pub const TIME_TRACEABLE: Self = Self(0x0010);
    /// Octet 1 bit 5: frequencyTraceable.
    pub const FREQUENCY_TRACEABLE: Self = Self(0x0020);
    /// Octet 1 bit 6: synchronizationUncertain (new in 1588-2019).
    pub const SYNCHRONIZATION_UNCERTAIN: Self = Self(0x0040);
    /// The exact flag value ptp4u treats as an SPTP Delay_Req:
    /// `UNICAST | PROFILE_SPECIFIC_1`.
    pub const SPTP_REQUEST: Self = Self(0x0400 | 0x2000);

    /// No flags set.
    #[must_use]
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Raw bits.
    #[must_use]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// True if every bit of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Union of both flag sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: Self) {
        self.0 &= !other.0;
    }
}

impl BitOr for Flags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Flags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl Not for Flags {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0)
    }
}

/// `ClockQuality` (§5.3.7), 4 octets on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClockQuality {
    /// clockClass, see [`clock_class`].
    pub clock_class: u8,
    /// clockAccuracy enumeration, see [`clock_accuracy`].
    pub clock_accuracy: u8,
    /// offsetScaledLogVariance (ptp4u sends 0x59E0 = 23008).
    pub offset_scaled_log_variance: u16,
}

impl ClockQuality {
    /// Encoded size in octets.
    pub const LEN: usize = 4;

    pub(crate) fn read(b: &[u8; 4]) -> Self {
        Self {
            clock_class: b[0],
            clock_accuracy: b[1],
            offset_scaled_log_variance: u16::from_be_bytes([b[2], b[3]]),
        }
    }

    pub(crate) fn write(&self, b: &mut [u8; 4]) {
        b[0] = self.clock_class;
        b[1] = self.clock_accuracy;
        b[2..].copy_from_slice(&self.offset_scaled_log_variance.to_be_bytes());
    }
}

/// `timeSource` enumeration (§7.6.2.8, Table 6) carried in Announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TimeSource(pub u8);

impl TimeSource {
    /// ATOMIC_CLOCK.
    pub const ATOMIC: Self = Self(0x10);
    /// GNSS (what ptp4u announces).
    pub const GNSS: Self = Self(0x20);
    /// TERRESTRIAL_RADIO.
    pub const TERRESTRIAL_RADIO: Self = Self(0x30);
    /// SERIAL_TIME_CODE.
    pub const SERIAL_TIME_CODE: Self = Self(0x39);
    /// PTP.
    pub const PTP: Self = Self(0x40);
    /// NTP.
    pub const NTP: Self = Self(0x50);
    /// HAND_SET.
    pub const HAND_SET: Self = Self(0x60);
    /// OTHER.
    pub const OTHER: Self = Self(0x90);
    /// INTERNAL_OSCILLATOR.
    pub const INTERNAL_OSCILLATOR: Self = Self(0xA0);
}

/// `clockClass` values used by ptp4u/c4u (§7.6.2.5; RFC 8173 §7.6.2.4).
pub mod clock_class {
    /// Locked to a primary reference (e.g. GNSS) — c4u "LOCK".
    pub const LOCK: u8 = 6;
    /// Holdover, within spec — c4u "HOLDOVER".
    pub const HOLDOVER: u8 = 7;
    /// Application-specific time source; c4u uses it for "CALIBRATING".
    pub const CALIBRATING: u8 = 13;
    /// Degraded / out of holdover spec; c4u uses it for "UNCALIBRATED".
    pub const UNCALIBRATED: u8 = 52;
    /// Default clock class for an unsynchronised ordinary clock.
    pub const DEFAULT: u8 = 248;
    /// Slave-only clock.
    pub const SLAVE_ONLY: u8 = 255;
}

/// `clockAccuracy` enumeration values (§7.6.2.6, Table 5).
pub mod clock_accuracy {
    /// Within 25 ns.
    pub const NS_25: u8 = 0x20;
    /// Within 100 ns (ptp4u's default).
    pub const NS_100: u8 = 0x21;
    /// Within 250 ns.
    pub const NS_250: u8 = 0x22;
    /// Within 1 µs.
    pub const US_1: u8 = 0x23;
    /// Within 2.5 µs.
    pub const US_2_5: u8 = 0x24;
    /// Within 10 µs.
    pub const US_10: u8 = 0x25;
    /// Within 25 µs.
    pub const US_25: u8 = 0x26;
    /// Within 100 µs.
    pub const US_100: u8 = 0x27;
    /// Within 250 µs.
    pub const US_250: u8 = 0x28;
    /// Within 1 ms.
    pub const MS_1: u8 = 0x29;
    /// Within 2.5 ms.
    pub const MS_2_5: u8 = 0x2A;
    /// Within 10 ms.
    pub const MS_10: u8 = 0x2B;
    /// Within 25 ms.
    pub const MS_25: u8 = 0x2C;
    /// Within 100 ms.
    pub const MS_100: u8 = 0x2D;
    /// Within 250 ms.
    pub const MS_250: u8 = 0x2E;
    /// Within 1 s.
    pub const S_1: u8 = 0x2F;
    /// Within 10 s.
    pub const S_10: u8 = 0x30;
    /// Greater than 10 s.
    pub const GREATER_THAN_10_S: u8 = 0x31;
    /// Unknown.
    pub const UNKNOWN: u8 = 0xFE;
}

/// Upper bounds (ns) of the 1588-2019 accuracy enumeration from 0x17 (1 ps)
/// to 0x30 (10 s), indexed by `value - 0x17`.
const ACCURACY_BOUNDS_NS: [f64; 26] = [
    0.001, 0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, // 0x17..=0x1F
    25.0, 100.0, 250.0, // 0x20..=0x22
    1e3, 2.5e3, 10e3, 25e3, 100e3, 250e3, // 0x23..=0x28
    1e6, 2.5e6, 10e6, 25e6, 100e6, 250e6, // 0x29..=0x2E
    1e9, 10e9, // 0x2F, 0x30
];

/// Maps an offset (ns, either sign) to a `clockAccuracy` value exactly like
/// facebook/time `ClockAccuracyFromOffset` (used by c4u): the smallest class
/// from 25 ns (0x20) to 10 s (0x30) whose bound is `>= |offset|`, else 0x31.
/// NaN maps to [`clock_accuracy::UNKNOWN`] (0xFE).
#[must_use]
pub fn clock_accuracy_from_offset_ns(offset_ns: f64) -> u8 {
    if offset_ns.is_nan() {
        return clock_accuracy::UNKNOWN;
    }
    let abs = offset_ns.abs();
    // Entries 9.. are 0x20..=0x30; c4u never emits the sub-25 ns classes.
    for (value, bound) in (0x20u8..).zip(&ACCURACY_BOUNDS_NS[9..]) {
        if abs <= *bound {
            return value;
        }
    }
    clock_accuracy::GREATER_THAN_10_S
}

/// Upper bound (ns) of the range a `clockAccuracy` value denotes, for
/// 0x17 (1 ps) ..= 0x30 (10 s). `None` when there is no finite bound:
/// 0x31 (> 10 s), 0xFE (unknown) and reserved values.
#[must_use]
pub fn clock_accuracy_to_ns(accuracy: u8) -> Option<f64> {
    let idx = usize::from(accuracy.checked_sub(0x17)?);
    ACCURACY_BOUNDS_NS.get(idx).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn clock_identity_display_and_mac() {
        let id = ClockIdentity::from_mac([0xf6, 0x33, 0xac, 0xce, 0x54, 0x98]);
        assert_eq!(id.to_string(), "f633ac.fffe.ce5498");
        assert_eq!(ClockIdentity::from_u64(id.to_u64()), id);
        assert_eq!(PortIdentity::new(id, 1).to_string(), "f633ac.fffe.ce5498-1");
    }

    #[test]
    fn timestamp_nanos() {
        let t = Timestamp::from_nanos(1_795_627_303_123_456_789);
        assert_eq!(t.seconds, 1_795_627_303);
        assert_eq!(t.nanoseconds, 123_456_789);
        assert_eq!(t.to_nanos(), 1_795_627_303_123_456_789);
        assert_eq!(Timestamp::try_from_nanos(t.to_nanos()), Some(t));
        assert_eq!(Timestamp::try_from_nanos(-1), None);
        let max = Timestamp::new(Timestamp::MAX_SECONDS, 999_999_999).unwrap();
        assert_eq!(Timestamp::try_from_nanos(max.to_nanos()), Some(max));
        assert_eq!(Timestamp::try_from_nanos(max.to_nanos() + 1), None);
        assert_eq!(Timestamp::new(0, 1_000_000_000), None);
        assert_eq!(t.to_string(), "1795627303.123456789");
    }

    #[test]
    fn time_interval() {
        let t = TimeInterval::from_nanos(-3);
        assert_eq!(t.0, -3 * 65536);
        assert!((t.nanos_f64() + 3.0).abs() < f64::EPSILON);
        assert_eq!(TimeInterval::from_nanos_f64(1.5).0, 98304);
        assert_eq!(TimeInterval::from_nanos_f64(-0.5).whole_nanos(), -1);
        assert_eq!(TimeInterval::from_nanos(i64::MAX), TimeInterval::TOO_BIG);
        assert_eq!(TimeInterval::from_nanos_f64(f64::NAN), TimeInterval::ZERO);
    }

    #[test]
    fn message_type_nibbles() {
        for n in 0u8..=255 {
            if let Some(t) = MessageType::from_nibble(n) {
                assert_eq!(t.to_nibble(), n);
                assert_eq!(t.is_event(), n < 4);
            } else {
                assert!(matches!(n, 4..=7 | 0xE..));
            }
        }
    }

    #[test]
    fn flags_layout() {
        // linuxptp msg.h: flagField[0] bits 0..2, flagField[1] bits 0..5.
        let all = [
            (Flags::ALTERNATE_MASTER, [0x01, 0x00]),
            (Flags::TWO_STEP, [0x02, 0x00]),
            (Flags::UNICAST, [0x04, 0x00]),
            (Flags::PROFILE_SPECIFIC_1, [0x20, 0x00]),
            (Flags::PROFILE_SPECIFIC_2, [0x40, 0x00]),
            (Flags::LEAP_61, [0x00, 0x01]),
            (Flags::LEAP_59, [0x00, 0x02]),
            (Flags::CURRENT_UTC_OFFSET_VALID, [0x00, 0x04]),
            (Flags::PTP_TIMESCALE, [0x00, 0x08]),
            (Flags::TIME_TRACEABLE, [0x00, 0x10]),
            (Flags::FREQUENCY_TRACEABLE, [0x00, 0x20]),
        ];
        for (f, octets) in all {
            assert_eq!(f.0.to_be_bytes(), octets);
        }
        let mut f = Flags::UNICAST | Flags::TWO_STEP;
        assert!(f.contains(Flags::UNICAST));
        f.remove(Flags::UNICAST);
        assert_eq!(f, Flags::TWO_STEP);
        assert_eq!(
            Flags::SPTP_REQUEST,
            Flags::UNICAST | Flags::PROFILE_SPECIFIC_1
        );
    }

    #[test]
    fn accuracy_table_matches_c4u() {
        let cases = [
            (-8.0, 0x20),
            (25.0, 0x20),
            (25.1, 0x21),
            (42.0, 0x21),
            (-242.0, 0x22),
            (567.0, 0x23),
            (2_000.0, 0x24),
            (8_000.0, 0x25),
            (11_000.0, 0x26),
            (-42_000.0, 0x27),
            (123_000.0, 0x28),
            (678_000.0, 0x29),
            (2_499_000.0, 0x2A),
            (-8e6, 0x2B),
            (24e6, 0x2C),
            (69e6, 0x2D),
            (222e6, 0x2E),
            (1e9, 0x2F),
            (9e9, 0x30),
            (10e9, 0x30),
            (10.1e9, 0x31),
            (f64::INFINITY, 0x31),
            (f64::NAN, 0xFE),
        ];
        for (ns, want) in cases {
            assert_eq!(clock_accuracy_from_offset_ns(ns), want, "{ns}");
        }
        assert_eq!(clock_accuracy_to_ns(0x20), Some(25.0));
        assert_eq!(clock_accuracy_to_ns(0x21), Some(100.0));
        assert_eq!(clock_accuracy_to_ns(0x30), Some(10e9));
        assert_eq!(clock_accuracy_to_ns(0x17), Some(0.001));
        assert_eq!(clock_accuracy_to_ns(0x1F), Some(10.0));
        assert_eq!(clock_accuracy_to_ns(0x31), None);
        assert_eq!(clock_accuracy_to_ns(0xFE), None);
        assert_eq!(clock_accuracy_to_ns(0x16), None);
        assert_eq!(clock_accuracy_to_ns(0x00), None);
        // Round trip: the bound of a class maps back to that class.
        for v in 0x20..=0x30u8 {
            assert_eq!(
                clock_accuracy_from_offset_ns(clock_accuracy_to_ns(v).unwrap()),
                v
            );
        }
    }
}
