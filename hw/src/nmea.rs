//! NMEA 0183 sentences as a GNSS timing receiver emits them on the card's
//! GNSS UART: RMC, GGA, ZDA and GSA.
//!
//! Generation ([`rmc`], [`gga`], [`zda`], [`gsa`]) turns a [`Fix`] into a
//! framed line (`$...*HH\r\n`, at most 82 characters). Times print as
//! `hhmmss.ss` (centiseconds, truncated) and may show second 60 during a
//! leap second. Out-of-range numbers are clamped so a line always stays
//! within the 82-character limit, and non-finite ones print as empty fields.
//!
//! Parsing ([`parse`]) checks framing and checksum, then decodes the four
//! sentence types with range validation; other sentence types come back
//! as [`Sentence::Other`]. Two-digit RMC years pivot at 80: `80..=99` are
//! 1980–1999, `00..=79` are 2000–2079.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::civil::{UtcDateTime, civil_from_days, days_from_civil};

/// Longest legal sentence, including `$` and the trailing CR LF.
pub const MAX_LEN: usize = 82;

/// Time of day as parsed: `(hour, minute, second, nanos)`.
pub type TimeOfDay = (u8, u8, u8, u32);
/// Calendar date as parsed: `(year, month, day)`.
pub type Date = (i32, u8, u8);

/// XOR of the bytes between `$` and `*`.
#[must_use]
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0, |acc, b| acc ^ b)
}

/// Frames a sentence body: `"$" + body + "*HH\r\n"` with an uppercase hex checksum.
#[must_use]
pub fn frame(body: &str) -> String {
    format!("${body}*{:02X}\r\n", checksum(body.as_bytes()))
}

/// The talker ID: which constellation(s) a sentence describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Talker {
    /// GPS.
    Gp,
    /// Combined GNSS.
    Gn,
    /// GLONASS.
    Gl,
    /// Galileo.
    Ga,
    /// BeiDou.
    Gb,
}

impl Talker {
    /// Every talker.
    pub const ALL: [Talker; 5] = [Talker::Gp, Talker::Gn, Talker::Gl, Talker::Ga, Talker::Gb];

    /// The two-letter talker ID (`"GP"`, ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Talker::Gp => "GP",
            Talker::Gn => "GN",
            Talker::Gl => "GL",
            Talker::Ga => "GA",
            Talker::Gb => "GB",
        }
    }

    /// The talker with this two-letter ID, if known.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Talker> {
        Talker::ALL.into_iter().find(|t| t.as_str() == code)
    }
}

/// Everything the generated sentences report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// Talker ID of the generated sentences.
    pub talker: Talker,
    /// UTC time of the fix (second may be 60).
    pub time: UtcDateTime,
    /// The receiver has a valid 3D fix.
    pub valid: bool,
    /// Latitude, degrees north (negative = south).
    pub latitude_deg: f64,
    /// Longitude, degrees east (negative = west).
    pub longitude_deg: f64,
    /// Altitude above mean sea level, metres.
    pub altitude_m: f64,
    /// Geoid separation, metres.
    pub geoid_sep_m: f64,
    /// Satellites used in the fix.
    pub satellites_used: u8,
    /// Horizontal dilution of precision.
    pub hdop: f32,
    /// Position dilution of precision.
    pub pdop: f32,
    /// Vertical dilution of precision.
    pub vdop: f32,
    /// PRNs of the satellites used, one per GSA slot; 0 = empty slot.
    pub used_prns: [u8; 12],
}

/// `hhmmss.ss`; fields clamped to two digits.
fn fmt_time(t: &UtcDateTime) -> String {
    format!(
        "{:02}{:02}{:02}.{:02}",
        t.hour.min(99),
        t.minute.min(99),
        t.second.min(99),
        (t.nanos / 10_000_000).min(99)
    )
}

/// `ddmm.mmmmm,N` (or `dddmm.mmmmm,E`); `","` for a non-finite value.
fn fmt_coord(value: f64, max_deg: f64, deg_width: usize, hemis: [char; 2]) -> String {
    // Work in integer units of 1e-5 arc-minutes so rounding carries properly.
    const UNITS_PER_DEG: u64 = 6_000_000;
    if !value.is_finite() {
        return ",".to_owned();
    }
    let magnitude = value.abs().min(max_deg);
    let units = (magnitude * UNITS_PER_DEG as f64).round() as u64;
    let deg = units / UNITS_PER_DEG;
    let rem = units % UNITS_PER_DEG;
    let hemi = if value < 0.0 && units != 0 {
        hemis[1]
    } else {
        hemis[0]
    };
    format!(
        "{deg:0deg_width$}{:02}.{:05},{hemi}",
        rem / 100_000,
        rem % 100_000
    )
}

/// Fixed-point decimal clamped to `[min, max]`; empty if not finite.
fn fmt_num(value: f64, decimals: usize, min: f64, max: f64) -> String {
    if value.is_finite() {
        // `+ 0.0` turns -0.0 into 0.0 so a zero never prints as "-0.00".
        format!("{:.decimals$}", value.clamp(min, max) + 0.0)
    } else {
        String::new()
    }
}

fn fmt_dop(value: f32) -> String {
    fmt_num(f64::from(value), 2, 0.0, 99.99)
}

/// RMC (recommended minimum): time, status A/V, position, speed 0, date, mode A/N.
#[must_use]
pub fn rmc(fix: &Fix) -> String {
    let t = &fix.time;
    let (status, mode) = if fix.valid { ('A', 'A') } else { ('V', 'N') };
    frame(&format!(
        "{}RMC,{},{status},{},{},0.00,,{:02}{:02}{:02},,,{mode}",
        fix.talker.as_str(),
        fmt_time(t),
        fmt_coord(fix.latitude_deg, 90.0, 2, ['N', 'S']),
        fmt_coord(fix.longitude_deg, 180.0, 3, ['E', 'W']),
        t.day.min(99),
        t.month.min(99),
        t.year.rem_euclid(100),
    ))
}

/// GGA (fix data): time, position, quality 1/0, satellites, HDOP, altitude, geoid separation.
#[must_use]
pub fn gga(fix: &Fix) -> String {
    frame(&format!(
        "{}GGA,{},{},{},{},{:02},{},{},M,{},M,,",
        fix.talker.as_str(),
        fmt_time(&fix.time),
        fmt_coord(fix.latitude_deg, 90.0, 2, ['N', 'S']),
        fmt_coord(fix.longitude_deg, 180.0, 3, ['E', 'W']),
        u8::from(fix.valid),
        fix.satellites_used.min(99),
        fmt_dop(fix.hdop),
        fmt_num(fix.altitude_m, 1, -9_999.9, 99_999.9),
        fmt_num(fix.geoid_sep_m, 1, -999.9, 999.9),
    ))
}

/// ZDA (time and date): time, day, month, four-digit year, local zone 00,00.
#[must_use]
pub fn zda(fix: &Fix) -> String {
    let t = &fix.time;
    frame(&format!(
        "{}ZDA,{},{:02},{:02},{:04},00,00",
        fix.talker.as_str(),
        fmt_time(t),
        t.day.min(99),
        t.month.min(99),
        t.year.rem_euclid(10_000),
    ))
}

/// GSA (DOP and active satellites): mode A, fix type 3 (valid) or 1, 12 PRN slots, PDOP/HDOP/VDOP.
#[must_use]
pub fn gsa(fix: &Fix) -> String {
    let mut prns = String::new();
    for p in fix.used_prns {
        prns.push(',');
        if p != 0 {
            let _ = write!(prns, "{p:02}");
        }
    }
    frame(&format!(
        "{}GSA,A,{}{prns},{},{},{}",
        fix.talker.as_str(),
        if fix.valid { 3 } else { 1 },
        fmt_dop(fix.pdop),
        fmt_dop(fix.hdop),
        fmt_dop(fix.vdop),
    ))
}

/// Why a line is not an acceptable sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NmeaError {
    /// More than 82 characters including CR LF.
    #[error("sentence is longer than 82 characters including CR LF")]
    TooLong,
    /// Contains bytes outside ASCII.
    #[error("sentence contains non-ASCII characters")]
    NotAscii,
    /// Does not start with `$`.
    #[error("sentence does not start with '$'")]
    MissingDollar,
    /// No `*` checksum delimiter.
    #[error("sentence has no '*' checksum delimiter")]
    MissingChecksum,
    /// The checksum is not exactly two hex digits.
    #[error("checksum is not two hex digits")]
    BadChecksumDigits,
    /// The checksum does not match the body.
    #[error("checksum mismatch: body gives {expected:02X}, sentence says {found:02X}")]
    ChecksumMismatch {
        /// Checksum computed over the body.
        expected: u8,
        /// Checksum written in the sentence.
        found: u8,
    },
    /// A field is missing, malformed or out of range.
    #[error("{kind} field {index}: {reason}")]
    Field {
        /// Sentence type (`"RMC"`, ...), or `"address"` for the first field.
        kind: &'static str,
        /// Field index; 0 is the address field.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Nothing but line terminators.
    #[error("empty line")]
    Empty,
}

/// Decoded RMC sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rmc {
    /// UTC time of day.
    pub time: Option<TimeOfDay>,
    /// Status `A` (and mode not `N`).
    pub valid: bool,
    /// UTC date (two-digit year pivoted at 80).
    pub date: Option<Date>,
    /// Latitude, degrees north.
    pub latitude_deg: Option<f64>,
    /// Longitude, degrees east.
    pub longitude_deg: Option<f64>,
}

/// Decoded GGA sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gga {
    /// UTC time of day.
    pub time: Option<TimeOfDay>,
    /// Fix quality (0 = invalid, 1 = GNSS fix, ...).
    pub quality: u8,
    /// Satellites used.
    pub satellites: u8,
    /// Horizontal dilution of precision.
    pub hdop: Option<f32>,
    /// Altitude above mean sea level, metres.
    pub altitude_m: Option<f64>,
    /// Latitude, degrees north.
    pub latitude_deg: Option<f64>,
    /// Longitude, degrees east.
    pub longitude_deg: Option<f64>,
}

/// Decoded ZDA sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zda {
    /// UTC time of day.
    pub time: Option<TimeOfDay>,
    /// UTC date.
    pub date: Option<Date>,
}

/// Decoded GSA sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gsa {
    /// Selection mode: `A` automatic or `M` manual.
    pub mode: char,
    /// Fix type: 1 none, 2 2D, 3 3D.
    pub fix_type: u8,
    /// PRNs of the non-empty slots, in slot order.
    pub prns: Vec<u8>,
    /// Position dilution of precision.
    pub pdop: Option<f32>,
    /// Horizontal dilution of precision.
    pub hdop: Option<f32>,
    /// Vertical dilution of precision.
    pub vdop: Option<f32>,
}

/// A parsed sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Sentence {
    /// Recommended minimum data.
    Rmc(Rmc),
    /// Fix data.
    Gga(Gga),
    /// Time and date.
    Zda(Zda),
    /// DOP and active satellites.
    Gsa(Gsa),
    /// A well-framed sentence of another type (proprietary ones have talker `"P"`).
    Other {
        /// Talker ID.
        talker: String,
        /// Sentence type.
        kind: String,
    },
}

impl Sentence {
    /// Full UTC date and time, for RMC and ZDA sentences that carry both.
    #[must_use]
    pub fn utc(&self) -> Option<UtcDateTime> {
        let (time, date) = match self {
            Sentence::Rmc(r) => (r.time?, r.date?),
            Sentence::Zda(z) => (z.time?, z.date?),
            _ => return None,
        };
        let (hour, minute, second, nanos) = time;
        let (year, month, day) = date;
        Some(UtcDateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanos,
        })
    }
}

/// Parses one line, with or without its trailing CR/LF.
///
/// # Errors
/// Framing errors in the order: [`NmeaError::Empty`], [`NmeaError::TooLong`],
/// [`NmeaError::NotAscii`], [`NmeaError::MissingDollar`],
/// [`NmeaError::MissingChecksum`], [`NmeaError::BadChecksumDigits`],
/// [`NmeaError::ChecksumMismatch`]; then [`NmeaError::Field`] for the first
/// bad field.
pub fn parse(line: &str) -> Result<Sentence, NmeaError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() {
        return Err(NmeaError::Empty);
    }
    if line.len() + 2 > MAX_LEN {
        return Err(NmeaError::TooLong);
    }
    if !line.is_ascii() {
        return Err(NmeaError::NotAscii);
    }
    let Some(rest) = line.strip_prefix('$') else {
        return Err(NmeaError::MissingDollar);
    };
    let Some((body, sum)) = rest.split_once('*') else {
        return Err(NmeaError::MissingChecksum);
    };
    let found = match sum.as_bytes() {
        [h, l] => match (hex_digit(*h), hex_digit(*l)) {
            (Some(h), Some(l)) => (h << 4) | l,
            _ => return Err(NmeaError::BadChecksumDigits),
        },
        _ => return Err(NmeaError::BadChecksumDigits),
    };
    let expected = checksum(body.as_bytes());
    if expected != found {
        return Err(NmeaError::ChecksumMismatch { expected, found });
    }

    let fields: Vec<&str> = body.split(',').collect();
    let address = fields[0];
    let addr_err = |reason| NmeaError::Field {
        kind: "address",
        index: 0,
        reason,
    };
    if !address.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(addr_err("not alphanumeric"));
    }
    let (talker, kind) = if address.len() >= 2 && address.starts_with('P') {
        address.split_at(1)
    } else if address.len() >= 3 {
        address.split_at(2)
    } else {
        return Err(addr_err("too short"));
    };
    if talker == "P" {
        return Ok(other(talker, kind));
    }
    match kind {
        "RMC" => parse_rmc(&Fields {
            fields,
            kind: "RMC",
        })
        .map(Sentence::Rmc),
        "GGA" => parse_gga(&Fields {
            fields,
            kind: "GGA",
        })
        .map(Sentence::Gga),
        "ZDA" => parse_zda(&Fields {
            fields,
            kind: "ZDA",
        })
        .map(Sentence::Zda),
        "GSA" => parse_gsa(&Fields {
            fields,
            kind: "GSA",
        })
        .map(Sentence::Gsa),
        _ => Ok(other(talker, kind)),
    }
}

fn other(talker: &str, kind: &str) -> Sentence {
    Sentence::Other {
        talker: talker.to_owned(),
        kind: kind.to_owned(),
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The comma-separated fields of one sentence, for error reporting.
struct Fields<'a> {
    fields: Vec<&'a str>,
    kind: &'static str,
}

impl<'a> Fields<'a> {
    fn err(&self, index: usize, reason: &'static str) -> NmeaError {
        NmeaError::Field {
            kind: self.kind,
            index,
            reason,
        }
    }

    /// Field `i`, which must exist (it may be empty).
    fn get(&self, i: usize) -> Result<&'a str, NmeaError> {
        self.fields
            .get(i)
            .copied()
            .ok_or_else(|| self.err(i, "missing"))
    }

    /// Field `i` if the sentence has that many fields.
    fn opt(&self, i: usize) -> Option<&'a str> {
        self.fields.get(i).copied()
    }

    fn time(&self, i: usize) -> Result<Option<TimeOfDay>, NmeaError> {
        parse_time(self.get(i)?).map_err(|r| self.err(i, r))
    }

    fn coord(&self, i: usize, max_deg: f64, hemis: [&str; 2]) -> Result<Option<f64>, NmeaError> {
        let value = self.get(i)?;
        let hemi = self.get(i + 1)?;
        match (value.is_empty(), hemi.is_empty()) {
            (true, true) => return Ok(None),
            (false, true) => return Err(self.err(i + 1, "missing hemisphere")),
            (true, false) => return Err(self.err(i, "missing coordinate")),
            (false, false) => {}
        }
        let sign = if hemi == hemis[0] {
            1.0
        } else if hemi == hemis[1] {
            -1.0
        } else {
            return Err(self.err(i + 1, "bad hemisphere"));
        };
        let deg = parse_coord(value, max_deg).map_err(|r| self.err(i, r))?;
        Ok(Some(sign * deg))
    }

    fn u8_or(&self, i: usize, empty: Option<u8>) -> Result<u8, NmeaError> {
        let s = self.get(i)?;
        if s.is_empty() {
            return empty.ok_or_else(|| self.err(i, "empty"));
        }
        parse_u8(s).ok_or_else(|| self.err(i, "bad number"))
    }

    fn decimal(&self, i: usize, signed: bool) -> Result<Option<f64>, NmeaError> {
        let s = self.get(i)?;
        if s.is_empty() {
            return Ok(None);
        }
        parse_decimal(s, signed)
            .map(Some)
            .ok_or_else(|| self.err(i, "bad number"))
    }

    fn dop(&self, i: usize) -> Result<Option<f32>, NmeaError> {
        Ok(self.decimal(i, false)?.map(|v| v as f32))
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_u8(s: &str) -> Option<u8> {
    if all_digits(s) { s.parse().ok() } else { None }
}

/// `[+-]digits[.digits]` (sign only if `signed`); at least one digit.
fn parse_decimal(s: &str, signed: bool) -> Option<f64> {
    let digits = if signed {
        s.strip_prefix(['-', '+']).unwrap_or(s)
    } else {
        s
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = (all_digits(int) || int.is_empty())
        && (all_digits(frac) || frac.is_empty())
        && !(int.is_empty() && frac.is_empty());
    if ok { s.parse().ok() } else { None }
}

/// `hhmmss[.f{0,9}]`; empty = no time.
fn parse_time(s: &str) -> Result<Option<TimeOfDay>, &'static str> {
    if s.is_empty() {
        return Ok(None);
    }
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    if hms.len() != 6 || !all_digits(hms) {
        return Err("bad time");
    }
    if frac.len() > 9 || !(frac.is_empty() || all_digits(frac)) {
        return Err("bad time fraction");
    }
    let two = |i: usize| hms[i..i + 2].parse::<u8>().unwrap_or(u8::MAX);
    let (h, m, sec) = (two(0), two(2), two(4));
    if h >= 24 || m >= 60 || sec > 60 {
        return Err("time out of range");
    }
    // A leap second is inserted at the end of a UTC day only.
    if sec == 60 && (h, m) != (23, 59) {
        return Err("second 60 outside 23:59");
    }
    let mut nanos = 0u32;
    for (i, b) in frac.bytes().enumerate() {
        let exp = u32::try_from(8 - i).unwrap_or(0);
        nanos += u32::from(b - b'0') * 10u32.pow(exp);
    }
    Ok(Some((h, m, sec, nanos)))
}

/// A calendar date that exists (30 February does not).
fn check_date(year: i32, month: u8, day: u8) -> Result<Date, &'static str> {
    if (1..=12).contains(&month)
        && day >= 1
        && civil_from_days(days_from_civil(year, month, day)) == (year, month, day)
    {
        Ok((year, month, day))
    } else {
        Err("date out of range")
    }
}

/// `ddmmyy` with the 80 pivot; empty = no date.
fn parse_ddmmyy(s: &str) -> Result<Option<Date>, &'static str> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() != 6 || !all_digits(s) {
        return Err("bad date");
    }
    let two = |i: usize| s[i..i + 2].parse::<u8>().unwrap_or(u8::MAX);
    let yy = i32::from(two(4));
    let year = if yy >= 80 { 1900 + yy } else { 2000 + yy };
    check_date(year, two(2), two(0)).map(Some)
}

/// `d*mm.m*` → degrees; the last two integer digits are minutes.
fn parse_coord(s: &str, max_deg: f64) -> Result<f64, &'static str> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.len() < 2 || int.len() > 5 || !all_digits(int) || !(frac.is_empty() || all_digits(frac))
    {
        return Err("bad coordinate");
    }
    let (deg, min_int) = int.split_at(int.len() - 2);
    let deg: f64 = if deg.is_empty() {
        0.0
    } else {
        deg.parse().map_err(|_| "bad coordinate")?
    };
    let minutes: f64 = if frac.is_empty() {
        min_int.parse()
    } else {
        format!("{min_int}.{frac}").parse()
    }
    .map_err(|_| "bad coordinate")?;
    if minutes >= 60.0 {
        return Err("minutes out of range");
    }
    let value = deg + minutes / 60.0;
    if value > max_deg {
        return Err("coordinate out of range");
    }
    Ok(value)
}

fn parse_rmc(f: &Fields) -> Result<Rmc, NmeaError> {
    let time = f.time(1)?;
    let mut valid = match f.get(2)? {
        "A" => true,
        "V" => false,
        _ => return Err(f.err(2, "bad status")),
    };
    let latitude_deg = f.coord(3, 90.0, ["N", "S"])?;
    let longitude_deg = f.coord(5, 180.0, ["E", "W"])?;
    let date = parse_ddmmyy(f.get(9)?).map_err(|r| f.err(9, r))?;
    if let Some(mode) = f.opt(12) {
        if mode.len() > 1 || !mode.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(f.err(12, "bad mode"));
        }
        valid &= mode != "N";
    }
    Ok(Rmc {
        time,
        valid,
        date,
        latitude_deg,
        longitude_deg,
    })
}

fn parse_gga(f: &Fields) -> Result<Gga, NmeaError> {
    let time = f.time(1)?;
    let latitude_deg = f.coord(2, 90.0, ["N", "S"])?;
    let longitude_deg = f.coord(4, 180.0, ["E", "W"])?;
    let quality = f.u8_or(6, None)?;
    let satellites = f.u8_or(7, Some(0))?;
    let hdop = f.dop(8)?;
    let altitude_m = f.decimal(9, true)?;
    Ok(Gga {
        time,
        quality,
        satellites,
        hdop,
        altitude_m,
        latitude_deg,
        longitude_deg,
    })
}

fn parse_zda(f: &Fields) -> Result<Zda, NmeaError> {
    let time = f.time(1)?;
    let (d, m, y) = (f.get(2)?, f.get(3)?, f.get(4)?);
    let date = if d.is_empty() && m.is_empty() && y.is_empty() {
        None
    } else {
        let day = parse_u8(d).ok_or_else(|| f.err(2, "bad day"))?;
        let month = parse_u8(m).ok_or_else(|| f.err(3, "bad month"))?;
        if y.len() != 4 || !all_digits(y) {
            return Err(f.err(4, "bad year"));
        }
        let year: i32 = y.parse().map_err(|_| f.err(4, "bad year"))?;
        if !(1..=12).contains(&month) {
            return Err(f.err(3, "month out of range"));
        }
        Some(check_date(year, month, day).map_err(|r| f.err(2, r))?)
    };
    Ok(Zda { time, date })
}

fn parse_gsa(f: &Fields) -> Result<Gsa, NmeaError> {
    let mode = match f.get(1)? {
        "A" => 'A',
        "M" => 'M',
        _ => return Err(f.err(1, "bad mode")),
    };
    let fix_type = f.u8_or(2, None)?;
    if !(1..=3).contains(&fix_type) {
        return Err(f.err(2, "fix type out of range"));
    }
    let mut prns = Vec::new();
    for i in 3..15 {
        let s = f.get(i)?;
        if !s.is_empty() {
            prns.push(parse_u8(s).ok_or_else(|| f.err(i, "bad PRN"))?);
        }
    }
    Ok(Gsa {
        mode,
        fix_type,
        prns,
        pdop: f.dop(15)?,
        hdop: f.dop(16)?,
        vdop: f.dop(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_fix() -> Fix {
        Fix {
            talker: Talker::Gn,
            time: UtcDateTime {
                year: 2016,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 60,
                nanos: 123_456_789,
            },
            valid: true,
            latitude_deg: 48.117_3,
            longitude_deg: -11.516_666_7,
            altitude_m: 545.4,
            geoid_sep_m: 46.9,
            satellites_used: 8,
            hdop: 0.9,
            pdop: 2.5,
            vdop: 2.1,
            used_prns: [4, 5, 0, 9, 12, 0, 0, 24, 0, 0, 0, 0],
        }
    }

    #[test]
    fn checksum_and_frame() {
        // Widely published example sentence body.
        let body = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,";
        assert_eq!(checksum(body.as_bytes()), 0x47);
        assert_eq!(frame(body), format!("${body}*47\r\n"));
        assert_eq!(frame(""), "$*00\r\n");
    }

    #[test]
    fn generated_sentences_look_right() {
        let fix = sample_fix();
        assert_eq!(
            rmc(&fix),
            frame("GNRMC,235960.12,A,4807.03800,N,01131.00000,W,0.00,,311216,,,A")
        );
        assert_eq!(
            gga(&fix),
            frame("GNGGA,235960.12,4807.03800,N,01131.00000,W,1,08,0.90,545.4,M,46.9,M,,")
        );
        assert_eq!(zda(&fix), frame("GNZDA,235960.12,31,12,2016,00,00"));
        assert_eq!(
            gsa(&fix),
            frame("GNGSA,A,3,04,05,,09,12,,,24,,,,,2.50,0.90,2.10")
        );
        let invalid = Fix {
            valid: false,
            ..fix
        };
        assert!(rmc(&invalid).contains(",V,") && rmc(&invalid).contains(",,,N*"));
        assert!(gga(&invalid).contains(",0,08,"));
        assert!(gsa(&invalid).starts_with("$GNGSA,A,1,"));
        for t in Talker::ALL {
            assert_eq!(Talker::from_code(t.as_str()), Some(t));
        }
    }

    #[test]
    fn parses_a_real_world_style_sentence() {
        let s = parse("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47").unwrap();
        let Sentence::Gga(g) = s else {
            panic!("not GGA: {s:?}")
        };
        assert_eq!(g.time, Some((12, 35, 19, 0)));
        assert_eq!((g.quality, g.satellites), (1, 8));
        assert_eq!(g.hdop, Some(0.9));
        assert_eq!(g.altitude_m, Some(545.4));
        assert!((g.latitude_deg.unwrap() - 48.1173).abs() < 1e-9);
        assert!((g.longitude_deg.unwrap() - 11.516_666_666).abs() < 1e-6);
    }

    #[test]
    fn utc_from_rmc_and_zda() {
        let fix = sample_fix();
        let want = UtcDateTime {
            nanos: 120_000_000,
            ..fix.time
        };
        assert_eq!(parse(&rmc(&fix)).unwrap().utc(), Some(want));
        assert_eq!(parse(&zda(&fix)).unwrap().utc(), Some(want));
        assert_eq!(parse(&gga(&fix)).unwrap().utc(), None);
        let no_date = frame("GPZDA,120000.00,,,,,");
        assert_eq!(
            parse(&no_date).unwrap(),
            Sentence::Zda(Zda {
                time: Some((12, 0, 0, 0)),
                date: None
            })
        );
        assert_eq!(parse(&no_date).unwrap().utc(), None);
        // Two-digit year pivot.
        let r = parse(&frame("GPRMC,000000,A,,,,,,,010180,,,A")).unwrap();
        assert_eq!(r.utc().unwrap().year, 1980);
        let r = parse(&frame("GPRMC,000000,A,,,,,,,010179,,,A")).unwrap();
        assert_eq!(r.utc().unwrap().year, 2079);
    }

    #[test]
    fn framing_errors() {
        assert_eq!(parse(""), Err(NmeaError::Empty));
        assert_eq!(parse("\r\n"), Err(NmeaError::Empty));
        let long = frame(&format!("GPTXT,{}", "x".repeat(80)));
        assert_eq!(parse(&long), Err(NmeaError::TooLong));
        assert_eq!(parse("$GPZDA,é*00"), Err(NmeaError::NotAscii));
        assert_eq!(parse("GPZDA,*00"), Err(NmeaError::MissingDollar));
        assert_eq!(parse("$GPZDA,,,,,,"), Err(NmeaError::MissingChecksum));
        assert_eq!(parse("$GPZDA,,,,,,*4"), Err(NmeaError::BadChecksumDigits));
        assert_eq!(parse("$GPZDA,,,,,,*4G"), Err(NmeaError::BadChecksumDigits));
        assert_eq!(parse("$GPZDA,,,,,,*123"), Err(NmeaError::BadChecksumDigits));
        let good = frame("GPZDA,,,,,,");
        let sum = checksum(b"GPZDA,,,,,,");
        assert!(parse(&good).is_ok());
        assert!(parse(good.trim_end()).is_ok());
        assert!(parse(&good.to_lowercase().replace("$gpzda", "$GPZDA")).is_ok());
        let wrong = format!("$GPZDA,,,,,,*{:02X}", sum ^ 1);
        assert_eq!(
            parse(&wrong),
            Err(NmeaError::ChecksumMismatch {
                expected: sum,
                found: sum ^ 1
            })
        );
        // An 82-character line is fine, 83 is not.
        let body80 = format!("GPTXT,{}", "y".repeat(70));
        assert_eq!(frame(&body80).len(), 82);
        assert!(parse(&frame(&body80)).is_ok());
        let body81 = format!("GPTXT,{}", "y".repeat(71));
        assert_eq!(parse(&frame(&body81)), Err(NmeaError::TooLong));
    }

    #[test]
    fn field_errors() {
        let field = |body: &str| match parse(&frame(body)) {
            Err(NmeaError::Field { kind, index, .. }) => Some((kind, index)),
            _ => None,
        };
        assert_eq!(field("G,1"), Some(("address", 0)));
        assert_eq!(field("GP-RMC,1"), Some(("address", 0)));
        assert_eq!(field("GPRMC,240000,A,,,,,,,010120"), Some(("RMC", 1)));
        assert_eq!(field("GPRMC,235960,A,,,,,,,010120"), None); // leap second is legal
        assert_eq!(field("GPRMC,236000,A,,,,,,,010120"), Some(("RMC", 1)));
        assert_eq!(
            field("GPRMC,120000.1234567890,A,,,,,,,010120"),
            Some(("RMC", 1))
        );
        assert_eq!(field("GPRMC,235961,A,,,,,,,010120"), Some(("RMC", 1)));
        // Second 60 only ends a UTC day; dates must exist.
        assert_eq!(field("GPRMC,120060,A,,,,,,,010120"), Some(("RMC", 1)));
        assert_eq!(field("GPGGA,235860,,,,,0,00,,,M,,M,,"), Some(("GGA", 1)));
        assert_eq!(field("GPRMC,120000,A,,,,,,,300220"), Some(("RMC", 9)));
        assert_eq!(field("GPRMC,120000,A,,,,,,,290220"), None); // 2020 is a leap year
        assert_eq!(field("GPRMC,120000,A,,,,,,,290221"), Some(("RMC", 9)));
        assert_eq!(field("GPRMC,120000,A,,,,,,,310420"), Some(("RMC", 9)));
        assert_eq!(field("GPZDA,120000,31,06,2020,00,00"), Some(("ZDA", 2)));
        assert_eq!(field("GPZDA,235960,31,12,2016,00,00"), None);
        assert_eq!(field("GPRMC,120000,X,,,,,,,010120"), Some(("RMC", 2)));
        assert_eq!(
            field("GPRMC,120000,A,9100.0,N,,,,,010120"),
            Some(("RMC", 3))
        );
        assert_eq!(
            field("GPRMC,120000,A,4560.0,N,,,,,010120"),
            Some(("RMC", 3))
        );
        assert_eq!(
            field("GPRMC,120000,A,4500.0,X,,,,,010120"),
            Some(("RMC", 4))
        );
        assert_eq!(field("GPRMC,120000,A,4500.0,,,,,,010120"), Some(("RMC", 4)));
        assert_eq!(
            field("GPRMC,120000,A,,,18000.1,E,,,010120"),
            Some(("RMC", 5))
        );
        assert_eq!(field("GPRMC,120000,A,,,,,,,011320"), Some(("RMC", 9)));
        assert_eq!(field("GPRMC,120000,A,,,,,,,320120"), Some(("RMC", 9)));
        assert_eq!(field("GPRMC,120000,A,,,,,,,000120"), Some(("RMC", 9)));
        assert_eq!(field("GPRMC,120000,A,,,,,,"), Some(("RMC", 9)));
        assert_eq!(field("GPGGA,120000,,,,,,"), Some(("GGA", 6)));
        assert_eq!(field("GPGGA,120000,,,,,1,300,,"), Some(("GGA", 7)));
        assert_eq!(field("GPGGA,120000,,,,,1,08,1e3,"), Some(("GGA", 8)));
        assert_eq!(field("GPGGA,120000,,,,,1,08,,inf"), Some(("GGA", 9)));
        assert_eq!(field("GPZDA,120000,01,13,2020,00,00"), Some(("ZDA", 3)));
        assert_eq!(field("GPZDA,120000,00,12,2020,00,00"), Some(("ZDA", 2)));
        assert_eq!(field("GPZDA,120000,01,12,20,00,00"), Some(("ZDA", 4)));
        assert_eq!(field("GPGSA,X,3,,,,,,,,,,,,,,,"), Some(("GSA", 1)));
        assert_eq!(field("GPGSA,A,4,,,,,,,,,,,,,,,"), Some(("GSA", 2)));
        assert_eq!(field("GPGSA,A,3,x,,,,,,,,,,,,,,"), Some(("GSA", 3)));
        assert_eq!(field("GPGSA,A,3,,,,,,,,,,,,,,"), Some(("GSA", 17)));
        assert_eq!(
            parse(&frame("PUBX,00,foo")),
            Ok(Sentence::Other {
                talker: "P".into(),
                kind: "UBX".into()
            })
        );
        assert_eq!(
            parse(&frame("GPGSV,1,1,00")),
            Ok(Sentence::Other {
                talker: "GP".into(),
                kind: "GSV".into()
            })
        );
        let e = NmeaError::Field {
            kind: "RMC",
            index: 9,
            reason: "bad date",
        };
        assert_eq!(e.to_string(), "RMC field 9: bad date");
    }

    /// Range invariants every successful parse must satisfy.
    fn check_invariants(s: &Sentence) {
        let time_ok = |t: &Option<TimeOfDay>| {
            t.is_none_or(|(h, m, s, n)| {
                h < 24 && m < 60 && (s < 60 || (h, m, s) == (23, 59, 60)) && n < 1_000_000_000
            })
        };
        let date_ok = |d: &Option<Date>| {
            d.is_none_or(|(y, m, d)| civil_from_days(days_from_civil(y, m, d)) == (y, m, d))
        };
        let lat_ok = |v: &Option<f64>| v.is_none_or(|v| v.is_finite() && v.abs() <= 90.0);
        let lon_ok = |v: &Option<f64>| v.is_none_or(|v| v.is_finite() && v.abs() <= 180.0);
        match s {
            Sentence::Rmc(r) => {
                assert!(time_ok(&r.time) && date_ok(&r.date), "{r:?}");
                assert!(lat_ok(&r.latitude_deg) && lon_ok(&r.longitude_deg), "{r:?}");
            }
            Sentence::Gga(g) => {
                assert!(time_ok(&g.time), "{g:?}");
                assert!(lat_ok(&g.latitude_deg) && lon_ok(&g.longitude_deg), "{g:?}");
            }
            Sentence::Zda(z) => assert!(time_ok(&z.time) && date_ok(&z.date), "{z:?}"),
            Sentence::Gsa(g) => {
                assert!((1..=3).contains(&g.fix_type) && g.prns.len() <= 12, "{g:?}");
            }
            Sentence::Other { .. } => {}
        }
        if let Some(u) = s.utc() {
            // A real instant: back from Unix time to the same label.
            let back = UtcDateTime::from_unix_leap(u.to_unix(), u.nanos, u.second == 60);
            assert_eq!(back, u);
        }
    }

    fn fix_strategy() -> impl Strategy<Value = Fix> {
        let time = (
            1980i32..=2079,
            1u8..=12,
            1u8..=31,
            0u8..24,
            0u8..60,
            0u8..=60,
            0u32..1_000_000_000,
        )
            .prop_map(|(year, month, day, hour, minute, second, nanos)| {
                // Second 60 exists at 23:59 only.
                let (hour, minute) = if second == 60 {
                    (23, 59)
                } else {
                    (hour, minute)
                };
                UtcDateTime {
                    year,
                    month,
                    day: day.min(28),
                    hour,
                    minute,
                    second,
                    nanos,
                }
            });
        (
            (
                prop::sample::select(Talker::ALL.to_vec()),
                time,
                any::<bool>(),
                -90.0f64..=90.0,
                -180.0f64..=180.0,
                -9_000.0f64..90_000.0,
                -900.0f64..900.0,
            ),
            (
                0u8..=99,
                0.0f32..99.0,
                0.0f32..99.0,
                0.0f32..99.0,
                any::<[u8; 12]>(),
            ),
        )
            .prop_map(
                |(
                    (talker, time, valid, lat, lon, alt, sep),
                    (sats, hdop, pdop, vdop, used_prns),
                )| Fix {
                    talker,
                    time,
                    valid,
                    latitude_deg: lat,
                    longitude_deg: lon,
                    altitude_m: alt,
                    geoid_sep_m: sep,
                    satellites_used: sats,
                    hdop,
                    pdop,
                    vdop,
                    used_prns,
                },
            )
    }

    fn printed_time(t: &UtcDateTime) -> Option<TimeOfDay> {
        Some((
            t.hour,
            t.minute,
            t.second,
            t.nanos / 10_000_000 * 10_000_000,
        ))
    }

    fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= tol)
    }

    fn close32(a: Option<f32>, b: f32) -> bool {
        a.is_some_and(|a| (a - b).abs() <= 0.005 + 1e-4)
    }

    /// xorshift64*: a tiny deterministic generator for the mutation test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn f64(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn random_fix(rng: &mut Rng) -> Fix {
        let secs = (rng.next() % 4_000_000_000) as i64;
        Fix {
            talker: Talker::ALL[rng.below(5)],
            time: UtcDateTime::from_unix_leap(
                secs,
                (rng.next() % 1_000_000_000) as u32,
                rng.below(8) == 0,
            ),
            valid: rng.below(2) == 0,
            latitude_deg: rng.f64() * 180.0 - 90.0,
            longitude_deg: rng.f64() * 360.0 - 180.0,
            altitude_m: rng.f64() * 10_000.0 - 500.0,
            geoid_sep_m: rng.f64() * 200.0 - 100.0,
            satellites_used: rng.below(40) as u8,
            hdop: rng.f64() as f32 * 10.0,
            pdop: rng.f64() as f32 * 10.0,
            vdop: rng.f64() as f32 * 10.0,
            used_prns: std::array::from_fn(|_| rng.below(200) as u8),
        }
    }

    #[test]
    fn deterministic_mutation_fuzz() {
        const ALPHABET: &[u8] = b"0123456789,.-+*$ANSEWVMPGRCZDL \x7f\r\nx";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut ok = 0usize;
        for _ in 0..20_000 {
            let fix = random_fix(&mut rng);
            let line = match rng.below(4) {
                0 => rmc(&fix),
                1 => gga(&fix),
                2 => zda(&fix),
                _ => gsa(&fix),
            };
            assert!(line.len() <= MAX_LEN);
            check_invariants(&parse(&line).expect("generated sentence parses"));
            // Mutate the body, then re-frame most of the time so the field
            // parsers (not just the checksum) see the damage.
            let star = line.rfind('*').unwrap();
            let mut body = line.as_bytes()[1..star].to_vec();
            for _ in 0..=rng.below(4) {
                let c = ALPHABET[rng.below(ALPHABET.len())];
                match rng.below(5) {
                    0 if !body.is_empty() => {
                        let i = rng.below(body.len());
                        body.remove(i);
                    }
                    1 => {
                        let i = rng.below(body.len() + 1);
                        body.insert(i, c);
                    }
                    2 => {
                        let i = rng.below(body.len() + 1);
                        body.truncate(i);
                    }
                    _ if !body.is_empty() => {
                        let i = rng.below(body.len());
                        body[i] = c;
                    }
                    _ => body.push(c),
                }
            }
            let body = String::from_utf8_lossy(&body);
            let mutated = if rng.below(8) == 0 {
                format!("${body}{}", &line[star..])
            } else {
                frame(&body)
            };
            if let Ok(s) = parse(&mutated) {
                check_invariants(&s);
                ok += 1;
            }
        }
        // Some mutations hit ignored fields and still parse.
        assert!(ok > 0);
    }

    proptest! {
        #[test]
        fn round_trip(fix in fix_strategy()) {
            let t = &fix.time;
            let date = Some((t.year, t.month, t.day));
            let lines = [rmc(&fix), gga(&fix), zda(&fix), gsa(&fix)];
            for l in &lines {
                prop_assert!(l.len() <= MAX_LEN, "{}", l);
                let prefix = format!("${}", fix.talker.as_str());
                prop_assert!(l.starts_with(&prefix));
            }
            let tol = 1e-6;
            match parse(&lines[0]).unwrap() {
                Sentence::Rmc(r) => {
                    prop_assert_eq!(r.time, printed_time(t));
                    prop_assert_eq!(r.date, date);
                    prop_assert_eq!(r.valid, fix.valid);
                    prop_assert!(close(r.latitude_deg, fix.latitude_deg, tol), "{:?}", r);
                    prop_assert!(close(r.longitude_deg, fix.longitude_deg, tol), "{:?}", r);
                }
                other => prop_assert!(false, "{:?}", other),
            }
            match parse(&lines[1]).unwrap() {
                Sentence::Gga(g) => {
                    prop_assert_eq!(g.time, printed_time(t));
                    prop_assert_eq!(g.quality, u8::from(fix.valid));
                    prop_assert_eq!(g.satellites, fix.satellites_used);
                    prop_assert!(close32(g.hdop, fix.hdop), "{:?}", g);
                    prop_assert!(close(g.altitude_m, fix.altitude_m, 0.05 + 1e-6), "{:?}", g);
                    prop_assert!(close(g.latitude_deg, fix.latitude_deg, tol), "{:?}", g);
                    prop_assert!(close(g.longitude_deg, fix.longitude_deg, tol), "{:?}", g);
                }
                other => prop_assert!(false, "{:?}", other),
            }
            let z = parse(&lines[2]).unwrap();
            prop_assert_eq!(
                &z,
                &Sentence::Zda(Zda { time: printed_time(t), date })
            );
            let want_utc = UtcDateTime { nanos: t.nanos / 10_000_000 * 10_000_000, ..*t };
            prop_assert_eq!(z.utc(), Some(want_utc));
            prop_assert_eq!(parse(&lines[0]).unwrap().utc(), Some(want_utc));
            match parse(&lines[3]).unwrap() {
                Sentence::Gsa(g) => {
                    prop_assert_eq!(g.mode, 'A');
                    prop_assert_eq!(g.fix_type, if fix.valid { 3 } else { 1 });
                    let prns: Vec<u8> = fix.used_prns.iter().copied().filter(|p| *p != 0).collect();
                    prop_assert_eq!(&g.prns, &prns);
                    prop_assert!(close32(g.pdop, fix.pdop), "{:?}", g);
                    prop_assert!(close32(g.hdop, fix.hdop), "{:?}", g);
                    prop_assert!(close32(g.vdop, fix.vdop), "{:?}", g);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn lines_stay_short_for_any_values(
            lat in prop::num::f64::ANY,
            lon in prop::num::f64::ANY,
            alt in prop::num::f64::ANY,
            sep in prop::num::f64::ANY,
            dops in any::<(f32, f32, f32)>(),
            sats: u8,
            prns: [u8; 12],
            raw in any::<(i32, u8, u8, u8, u8, u8, u32)>(),
            valid: bool,
        ) {
            let (year, month, day, hour, minute, second, nanos) = raw;
            let fix = Fix {
                talker: Talker::Gb,
                time: UtcDateTime { year, month, day, hour, minute, second, nanos },
                valid,
                latitude_deg: lat,
                longitude_deg: lon,
                altitude_m: alt,
                geoid_sep_m: sep,
                satellites_used: sats,
                hdop: dops.0,
                pdop: dops.1,
                vdop: dops.2,
                used_prns: prns,
            };
            for l in [rmc(&fix), gga(&fix), zda(&fix), gsa(&fix)] {
                prop_assert!(l.len() <= MAX_LEN, "{} chars: {}", l.len(), l);
                prop_assert!(l.is_ascii());
                // Whatever the inputs, the line is well framed.
                let r = parse(&l);
                prop_assert!(
                    !matches!(
                        r,
                        Err(NmeaError::TooLong
                            | NmeaError::NotAscii
                            | NmeaError::MissingDollar
                            | NmeaError::MissingChecksum
                            | NmeaError::BadChecksumDigits
                            | NmeaError::ChecksumMismatch { .. })
                    ),
                    "{:?} for {}", r, l
                );
                if let Ok(s) = r {
                    check_invariants(&s);
                }
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,100}") {
            if let Ok(x) = parse(&s) {
                check_invariants(&x);
            }
        }

        #[test]
        fn nmea_like_strings_never_panic(s in "\\$[A-Z]{0,6}(,[0-9A-Z.+-]{0,12}){0,20}(\\*[0-9A-Fa-f]{0,3})?\r?\n?") {
            if let Ok(x) = parse(&s) {
                check_invariants(&x);
            }
            // And with a correct checksum, so field parsing is reached.
            let body = s.trim_start_matches('$').split('*').next().unwrap_or("").trim_end();
            if let Ok(x) = parse(&frame(body)) {
                check_invariants(&x);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(x) = parse(&s) {
                check_invariants(&x);
            }
        }

        #[test]
        fn flipping_a_body_character(
            fix in fix_strategy(),
            which in 0usize..4,
            pos: prop::sample::Index,
            c in 0x20u8..0x7f,
        ) {
            let line = [rmc, gga, zda, gsa][which](&fix);
            prop_assert!(parse(&line).is_ok());
            let star = line.rfind('*').unwrap();
            let i = 1 + pos.index(star - 1);
            let mut bytes = line.clone().into_bytes();
            prop_assume!(bytes[i] != c);
            bytes[i] = c;
            let flipped = String::from_utf8(bytes).unwrap();
            // The checksum catches any single-character change.
            prop_assert!(parse(&flipped).is_err());
            // Re-framed, the damage reaches the field parsers: an error or a
            // valid parse, never a panic.
            let body = &flipped[1..star];
            match parse(&frame(body)) {
                Ok(s) => check_invariants(&s),
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
}
