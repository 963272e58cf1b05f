//! Durations on the command line: `500ms`, `10s`, `1.5s`, `2m`, `1h`.
//!
//! A number (digits with an optional decimal point) followed by one unit.
//! There is no default unit, so `--interval 5` is an error that says what to
//! write instead, rather than a silent guess between seconds and milliseconds.

use std::fmt;
use std::time::Duration;

/// The longest duration accepted (100 years), so deadlines never overflow.
const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Why a duration did not parse; the message lists the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The text as given.
    input: String,
    /// What is wrong with it.
    reason: &'static str,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a duration ({}); write a number and a unit, e.g. 500ms, 10s, 1.5s, 2m or 1h",
            self.input, self.reason
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`.
///
/// # Errors
/// [`DurationError`] for a missing or unknown unit, a malformed number, or a
/// duration too large to represent.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| err("no unit"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("no number before the unit"));
    }
    let value: f64 = number.parse().map_err(|_| err("malformed number"))?;
    let seconds_per_unit = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(err("unknown unit")),
    };
    match Duration::try_from_secs_f64(value * seconds_per_unit) {
        Ok(d) if d <= MAX => Ok(d),
        _ => Err(err("too large: at most 100 years")),
    }
}

/// Like [`parse_duration`], but refuses zero (for intervals and periods).
///
/// # Errors
/// As [`parse_duration`], or a zero duration.
pub fn parse_positive_duration(input: &str) -> Result<Duration, DurationError> {
    match parse_duration(input)? {
        d if d.is_zero() => Err(DurationError {
            input: input.to_owned(),
            reason: "must be longer than zero",
        }),
        d => Ok(d),
    }
}

/// Formats a duration the way [`parse_duration`] reads it back (`1.5s`, `200ms`, `2m`).
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}s", d.as_secs_f64())
    } else if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms > 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_unit_and_fractions() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3min"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_with_a_message_that_teaches() {
        for (input, reason) in [
            ("5", "no unit"),
            ("", "no unit"),
            ("s", "no number"),
            ("10x", "unknown unit"),
            ("10 s", "unknown unit"),
            ("1.2.3s", "no number"),
            ("-1s", "no number"),
            ("1e9h", "unknown unit"),
            ("99999999999999999999999h", "too large"),
            ("876001h", "too large"),
        ] {
            let e = parse_duration(input).unwrap_err().to_string();
            assert!(e.contains(reason), "{input:?}: {e}");
            assert!(e.contains("500ms, 10s"), "{input:?}: {e}");
        }
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(
            parse_positive_duration("200ms"),
            Ok(Duration::from_millis(200))
        );
    }

    #[test]
    fn formats_round_trip() {
        for s in ["200ms", "1s", "1.5s", "2m", "1h", "90s", "1.5ms", "0s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }
}
