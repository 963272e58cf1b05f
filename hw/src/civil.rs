//! Calendar arithmetic for UTC timestamps (proleptic Gregorian calendar).
//!
//! Days are counted from 1970-01-01 (day 0). The conversions use the
//! well-known era decomposition (400-year eras of 146 097 days, years
//! starting on 1 March so the leap day falls at the end), which is exact
//! for every `i32` year.
//!
//! Unix time has no leap seconds; [`UtcDateTime`] can still show second
//! 60 so that NMEA output can render `23:59:60` during a positive leap
//! second (see [`UtcDateTime::from_unix_leap`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// TAI − UTC in seconds since 2017-01-01 (the latest leap second so far).
pub const TAI_UTC_2017: i32 = 37;

/// Seconds per day.
const DAY_S: i64 = 86_400;
/// Days per 400-year era.
const ERA_DAYS: i64 = 146_097;
/// Days from 0000-03-01 to 1970-01-01.
const EPOCH_SHIFT: i64 = 719_468;

/// Days since 1970-01-01 of a calendar date.
///
/// `month` must be 1..=12 and `day` 1..=31 for a meaningful result; other
/// values give a defined but unspecified day number (no panic). Days past
/// the end of a month roll into the next one (`(2023, 2, 29)` = 1 March).
#[must_use]
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let m = i64::from(month);
    // Years start on 1 March: January and February belong to the previous one.
    let y = i64::from(year) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400; // 0..=399
    let month_from_march = (m + 9) % 12; // March = 0 .. February = 11
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * ERA_DAYS + day_of_era - EPOCH_SHIFT
}

/// Calendar date `(year, month, day)` of a day number since 1970-01-01.
///
/// Exact while the year fits an `i32`; beyond that the year saturates.
#[must_use]
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    // i128 keeps the shift and the era arithmetic overflow-free for any i64.
    let z = i128::from(days) + i128::from(EPOCH_SHIFT);
    let era = z.div_euclid(i128::from(ERA_DAYS));
    let day_of_era = z - era * i128::from(ERA_DAYS); // 0..=146096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    let year = i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX });
    // month is 1..=12 and day 1..=31 by construction.
    (year, month as u8, day as u8)
}

/// A UTC calendar date and time with nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UtcDateTime {
    /// Year (proleptic Gregorian, astronomical numbering).
    pub year: i32,
    /// Month 1..=12.
    pub month: u8,
    /// Day of month 1..=31.
    pub day: u8,
    /// Hour 0..=23.
    pub hour: u8,
    /// Minute 0..=59.
    pub minute: u8,
    /// Second 0..=60 (60 only during a leap second).
    pub second: u8,
    /// Nanoseconds 0..=999 999 999.
    pub nanos: u32,
}

impl UtcDateTime {
    /// The UTC time of a Unix timestamp (never second 60).
    ///
    /// `nanos` of a second or more carry into `secs` (saturating).
    #[must_use]
    pub fn from_unix(secs: i64, nanos: u32) -> Self {
        let secs = secs.saturating_add(i64::from(nanos / 1_000_000_000));
        let nanos = nanos % 1_000_000_000;
        let (year, month, day) = civil_from_days(secs.div_euclid(DAY_S));
        let sod = secs.rem_euclid(DAY_S);
        // sod < 86400, so every field fits its type.
        Self {
            year,
            month,
            day,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            nanos,
        }
    }

    /// Like [`from_unix`](Self::from_unix), but when `in_leap_second` is set
    /// and `secs` is a midnight, renders the inserted second `23:59:60` of
    /// the preceding day.
    ///
    /// During a positive leap second, Unix time already reads the next
    /// midnight; this shows it the way UTC does. If `secs` is not a midnight
    /// the flag is ignored (leap seconds only occur at the end of a UTC day).
    #[must_use]
    pub fn from_unix_leap(secs: i64, nanos: u32, in_leap_second: bool) -> Self {
        if in_leap_second && secs.rem_euclid(DAY_S) == 0 {
            let mut t = Self::from_unix(secs.saturating_sub(1), nanos % 1_000_000_000);
            t.second = 60;
            t
        } else {
            Self::from_unix(secs, nanos)
        }
    }

    /// Unix seconds of this time (nanoseconds are not included).
    ///
    /// Plain field arithmetic, so second 60 of 23:59 yields the Unix second
    /// of the following midnight — the value [`from_unix_leap`](Self::from_unix_leap)
    /// was given. Out-of-range fields roll over the same way.
    #[must_use]
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * DAY_S
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

impl fmt::Display for UtcDateTime {
    /// RFC 3339 with nanoseconds, e.g. `2016-12-31T23:59:60.500000000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.nanos
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_leap(y: i32) -> bool {
        (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
    }

    fn month_len(y: i32, m: u8) -> u8 {
        match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2017, 1, 1), 17_167);
        assert_eq!(days_from_civil(0, 3, 1), -EPOCH_SHIFT);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(i64::MAX).0, i32::MAX);
        assert_eq!(civil_from_days(i64::MIN).0, i32::MIN);
        let (y, m, d) = civil_from_days(days_from_civil(i32::MAX, 12, 31));
        assert_eq!((y, m, d), (i32::MAX, 12, 31));
        let (y, m, d) = civil_from_days(days_from_civil(i32::MIN, 1, 1));
        assert_eq!((y, m, d), (i32::MIN, 1, 1));
    }

    #[test]
    fn walk_consecutive_days() {
        // Every day from 1600-01-01 to 2400-12-31 follows its predecessor.
        let mut expect = (1600, 1u8, 1u8);
        let start = days_from_civil(1600, 1, 1);
        let end = days_from_civil(2400, 12, 31);
        for n in start..=end {
            assert_eq!(civil_from_days(n), expect);
            let (y, m, d) = expect;
            expect = if d < month_len(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn unix_conversions() {
        let t = UtcDateTime::from_unix(1_483_228_799, 5);
        assert_eq!(
            t,
            UtcDateTime {
                year: 2016,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59,
                nanos: 5
            }
        );
        assert_eq!(t.to_unix(), 1_483_228_799);
        assert_eq!(t.to_string(), "2016-12-31T23:59:59.000000005Z");
        let before_epoch = UtcDateTime::from_unix(-1, 0);
        assert_eq!(before_epoch.to_string(), "1969-12-31T23:59:59.000000000Z");
        assert_eq!(
            UtcDateTime::from_unix(0, 2_500_000_000),
            UtcDateTime::from_unix(2, 500_000_000)
        );
    }

    #[test]
    fn leap_second_rendering() {
        // 2017-01-01T00:00:00Z; the leap second 2016-12-31T23:59:60 precedes it.
        let midnight = 1_483_228_800;
        let leap = UtcDateTime::from_unix_leap(midnight, 250_000_000, true);
        assert_eq!(leap.to_string(), "2016-12-31T23:59:60.250000000Z");
        assert_eq!(leap.to_unix(), midnight);
        assert_eq!(
            UtcDateTime::from_unix_leap(midnight, 0, false).to_string(),
            "2017-01-01T00:00:00.000000000Z"
        );
        // Not a midnight: flag ignored.
        assert_eq!(
            UtcDateTime::from_unix_leap(midnight + 5, 0, true),
            UtcDateTime::from_unix(midnight + 5, 0)
        );
        assert_eq!(TAI_UTC_2017, 37);
    }

    proptest! {
        #[test]
        fn civil_round_trip(days in -1_000_000i64..=1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m));
            prop_assert!(d >= 1 && d <= month_len(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn civil_round_trip_from_dates(y in -400_000i32..=400_000, m in 1u8..=12, d in 1u8..=31) {
            let d = d.min(month_len(y, m));
            prop_assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }

        #[test]
        fn unix_round_trip(secs in -100_000_000_000i64..=100_000_000_000, nanos in 0u32..1_000_000_000) {
            let t = UtcDateTime::from_unix(secs, nanos);
            prop_assert!(t.hour < 24 && t.minute < 60 && t.second < 60);
            prop_assert_eq!(t.nanos, nanos);
            prop_assert_eq!(t.to_unix(), secs);
            let l = UtcDateTime::from_unix_leap(secs, nanos, true);
            prop_assert_eq!(l.to_unix(), secs);
        }

        #[test]
        fn never_panics(days: i64, secs: i64, nanos: u32, leap: bool, y: i32, m: u8, d: u8) {
            let _ = civil_from_days(days);
            let _ = days_from_civil(y, m, d);
            let t = UtcDateTime::from_unix_leap(secs, nanos, leap);
            let _ = t.to_string();
        }
    }
}
