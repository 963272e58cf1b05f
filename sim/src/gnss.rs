//! GNSS timing receiver model (u-blox ZED-F9T class).
//!
//! The receiver knows true time, so its PPS edges sit on true TAI second
//! boundaries plus white jitter, and its time-of-day messages label each
//! second in UTC with the current leap-second offset. Faults make it lose the
//! fix (no PPS; NMEA status `V`), report an antenna fault, or lie (a
//! spoofing-like time-of-day offset and PPS phase jump). A scheduled leap
//! second is announced and then inserted (23:59:60) or deleted.

use serde::{Deserialize, Serialize};
use timecard_hw::civil::UtcDateTime;
use timecard_hw::nmea::{self, Fix, Talker};

/// Nanoseconds per second.
pub const NS_PER_S: i64 = 1_000_000_000;

/// Receiver state (plain data).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Gnss {
    /// Truth time (TAI ns) from which the receiver has a fix, unless faulted.
    pub fix_from_ns: i64,
    /// GNSS signals lost (fault): no fix, no PPS.
    pub signal_lost: bool,
    /// Antenna fault (open circuit): no fix, no PPS, antenna status reports it.
    pub antenna_fault: bool,
    /// Whether the receiver ever had a fix (it then knows the UTC offset).
    pub ever_fixed: bool,
    /// Spoofing: time of day reported this many seconds away from truth.
    pub tod_offset_s: i64,
    /// Spoofing: PPS edges shifted by this many ns from true second boundaries.
    pub pps_offset_ns: i64,
    /// White PPS jitter, 1-sigma, ns.
    pub pps_jitter_ns: f64,
    /// Current TAI − UTC, seconds.
    pub tai_utc_s: i32,
    /// First TAI second (since the epoch) at which `tai_utc_s + leap_delta` applies; 0 = none.
    pub leap_at_tai_s: i64,
    /// Scheduled leap: +1 inserts 23:59:60, −1 deletes 23:59:59.
    pub leap_delta: i32,
    /// Antenna position (degrees, metres).
    pub latitude_deg: f64,
    /// Antenna longitude, degrees.
    pub longitude_deg: f64,
    /// Antenna altitude above mean sea level, metres.
    pub altitude_m: f64,
    /// Satellites used in the timing solution when fixed.
    pub satellites: u8,
}

impl Gnss {
    /// A receiver that gets its fix `ttff_s` seconds after `now_ns`.
    #[must_use]
    pub fn new(now_ns: i64, ttff_s: f64, pps_jitter_ns: f64, tai_utc_s: i32) -> Self {
        Self {
            fix_from_ns: now_ns + (ttff_s * 1e9) as i64,
            signal_lost: false,
            antenna_fault: false,
            ever_fixed: false,
            tod_offset_s: 0,
            pps_offset_ns: 0,
            pps_jitter_ns,
            tai_utc_s,
            leap_at_tai_s: 0,
            leap_delta: 0,
            latitude_deg: 37.4847,
            longitude_deg: -122.1477,
            altitude_m: 12.0,
            satellites: 12,
        }
    }

    /// Whether the receiver has a usable fix at truth time `now_ns`.
    #[must_use]
    pub fn has_fix(&self, now_ns: i64) -> bool {
        !self.signal_lost && !self.antenna_fault && now_ns >= self.fix_from_ns
    }

    /// Whether a leap second is scheduled.
    #[must_use]
    pub fn leap_pending(&self) -> bool {
        self.leap_at_tai_s != 0 && self.leap_delta != 0
    }

    /// Schedules a leap second at the end of the UTC day that ends at
    /// `midnight_unix_s` (a UTC midnight), inserting (`+1`) or deleting (`−1`) one second.
    pub fn schedule_leap(&mut self, midnight_unix_s: i64, delta: i32) {
        self.leap_delta = delta.signum();
        self.leap_at_tai_s =
            midnight_unix_s + i64::from(self.tai_utc_s) + i64::from(self.leap_delta);
    }

    /// Folds a leap second that truth has passed into the current offset.
    pub fn settle_leap(&mut self, now_tai_s: i64) {
        if self.leap_pending() && now_tai_s >= self.leap_at_tai_s {
            self.tai_utc_s += self.leap_delta;
            self.leap_at_tai_s = 0;
            self.leap_delta = 0;
        }
    }

    /// TAI − UTC in effect at TAI second `tai_s`.
    #[must_use]
    pub fn tai_utc_at(&self, tai_s: i64) -> i32 {
        if self.leap_pending() && tai_s >= self.leap_at_tai_s {
            self.tai_utc_s + self.leap_delta
        } else {
            self.tai_utc_s
        }
    }

    /// UTC broken-down time of TAI instant (`tai_s`, `nanos`), rendering an
    /// inserted leap second as 23:59:60.
    #[must_use]
    pub fn utc_of(&self, tai_s: i64, nanos: u32) -> UtcDateTime {
        if self.leap_pending() && self.leap_delta > 0 && tai_s == self.leap_at_tai_s - 1 {
            // The inserted second: unix time of the following midnight.
            let midnight = tai_s - i64::from(self.tai_utc_s);
            return UtcDateTime::from_unix_leap(midnight, nanos, true);
        }
        UtcDateTime::from_unix(tai_s - i64::from(self.tai_utc_at(tai_s)), nanos)
    }

    /// Seconds from TAI second `now_tai_s` to the scheduled leap (0 if none).
    #[must_use]
    pub fn seconds_to_leap(&self, now_tai_s: i64) -> i64 {
        if self.leap_pending() {
            self.leap_at_tai_s - now_tai_s
        } else {
            0
        }
    }

    /// The NMEA sentences (RMC, GGA, GSA, ZDA) the receiver emits right after
    /// the PPS of true TAI second `tai_s`, as they leave the UART.
    #[must_use]
    pub fn nmea_for_second(&self, tai_s: i64) -> [String; 4] {
        let now_ns = tai_s.saturating_mul(NS_PER_S);
        let valid = self.has_fix(now_ns);
        // A spoofed receiver labels the second wrongly.
        let label = tai_s + self.tod_offset_s;
        let mut used_prns = [0u8; 12];
        let n = if valid { self.satellites.min(12) } else { 0 };
        for (i, prn) in used_prns.iter_mut().enumerate().take(usize::from(n)) {
            *prn = [2, 5, 7, 9, 13, 15, 18, 20, 23, 26, 29, 30][i];
        }
        let fix = Fix {
            talker: Talker::Gn,
            time: self.utc_of(label, 0),
            valid,
            latitude_deg: self.latitude_deg,
            longitude_deg: self.longitude_deg,
            altitude_m: self.altitude_m,
            geoid_sep_m: -32.0,
            satellites_used: n,
            hdop: if valid { 0.7 } else { 99.9 },
            pdop: if valid { 1.2 } else { 99.9 },
            vdop: if valid { 1.0 } else { 99.9 },
            used_prns,
        };
        [
            nmea::rmc(&fix),
            nmea::gga(&fix),
            nmea::gsa(&fix),
            nmea::zda(&fix),
        ]
    }
}

/// Snapshot of the receiver for status and control output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GnssStatus {
    /// Fix usable now.
    pub fix: bool,
    /// Signal-loss fault active.
    pub signal_lost: bool,
    /// Antenna fault active.
    pub antenna_fault: bool,
    /// Spoofed time-of-day offset, seconds.
    pub tod_offset_s: i64,
    /// Spoofed PPS phase offset, ns.
    pub pps_offset_ns: i64,
    /// TAI − UTC now.
    pub tai_utc_s: i32,
    /// Scheduled leap (+1/−1) or 0.
    pub leap_delta: i32,
    /// Seconds until the scheduled leap (0 if none).
    pub seconds_to_leap: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecard_hw::civil;

    fn midnight_2026_12_31() -> i64 {
        civil::days_from_civil(2027, 1, 1) * 86_400
    }

    #[test]
    fn inserted_leap_second_renders_as_60() {
        let m = midnight_2026_12_31();
        let mut g = Gnss::new(0, 0.0, 3.0, 37);
        g.schedule_leap(m, 1);
        let tai_before = m - 1 + 37; // 23:59:59 UTC
        let t = g.utc_of(tai_before, 0);
        assert_eq!((t.hour, t.minute, t.second), (23, 59, 59));
        let t = g.utc_of(tai_before + 1, 0);
        assert_eq!((t.day, t.hour, t.minute, t.second), (31, 23, 59, 60));
        let t = g.utc_of(tai_before + 2, 0);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.second),
            (2027, 1, 1, 0, 0)
        );
        assert_eq!(g.tai_utc_at(tai_before + 2), 38);
        g.settle_leap(tai_before + 2);
        assert_eq!(g.tai_utc_s, 38);
        assert!(!g.leap_pending());
    }

    #[test]
    fn deleted_leap_second_skips_59() {
        let m = midnight_2026_12_31();
        let mut g = Gnss::new(0, 0.0, 3.0, 37);
        g.schedule_leap(m, -1);
        let tai_58 = m - 2 + 37;
        assert_eq!(g.utc_of(tai_58, 0).second, 58);
        let next = g.utc_of(tai_58 + 1, 0);
        assert_eq!((next.year, next.hour, next.second), (2027, 0, 0));
    }

    #[test]
    fn nmea_is_valid_and_labels_truth() {
        let g = Gnss::new(0, 0.0, 3.0, 37);
        let tai = civil::days_from_civil(2026, 11, 25) * 86_400 + 37 + 3600;
        for line in g.nmea_for_second(tai) {
            let s = nmea::parse(&line).expect("own sentence parses");
            if let Some(utc) = s.utc() {
                assert_eq!(utc.to_unix(), tai - 37);
            }
        }
    }
}
