//! Text formatting shared by the commands: times, signed nanoseconds,
//! supervisor events, antenna bits, and the simulator's ground truth.

use std::fmt::Write as _;

use timecard_driver::supervisor::Event;
use timecard_hw::civil::UtcDateTime;
use timecard_hw::regs::tod;
use timecard_sim::{ClockMode, SimSnapshot};

/// Nanoseconds per second.
const NS_PER_S: i64 = 1_000_000_000;

/// Splits ns since an epoch into (seconds, nanoseconds), flooring.
fn split(ns: i64) -> (i64, u32) {
    // rem_euclid of NS_PER_S is in 0..1e9, which fits u32.
    (ns.div_euclid(NS_PER_S), ns.rem_euclid(NS_PER_S) as u32)
}

/// A TAI instant as a calendar time labelled TAI: `2026-11-25T12:00:37.123456789 TAI`.
#[must_use]
pub fn tai(ns: i64) -> String {
    let (s, n) = split(ns);
    let t = UtcDateTime::from_unix(s, n);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09} TAI",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.nanos
    )
}

/// A UTC instant (ns since the Unix epoch) in RFC 3339: `2026-11-25T12:00:00.123456789Z`.
#[must_use]
pub fn utc(ns: i64) -> String {
    let (s, n) = split(ns);
    UtcDateTime::from_unix(s, n).to_string()
}

/// The wall-clock part of a UTC instant, to the millisecond: `12:00:00.123`.
#[must_use]
pub fn utc_clock(ns: i64) -> String {
    let (s, n) = split(ns);
    let t = UtcDateTime::from_unix(s, n);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.hour,
        t.minute,
        t.second,
        t.nanos / 1_000_000
    )
}

/// A signed time difference with a readable unit: `+12 ns`, `-1.234 µs`, `+5.000000 s`.
#[must_use]
pub fn signed_ns(ns: i64) -> String {
    let sign = if ns < 0 { '-' } else { '+' };
    let a = ns.unsigned_abs();
    if a < 1_000 {
        format!("{sign}{a} ns")
    } else if a < 1_000_000 {
        format!("{sign}{:.3} µs", a as f64 / 1e3)
    } else if a < 1_000_000_000 {
        format!("{sign}{:.3} ms", a as f64 / 1e6)
    } else {
        format!("{sign}{:.6} s", a as f64 / 1e9)
    }
}

/// One supervisor event in words.
#[must_use]
pub fn event(e: &Event) -> String {
    match e {
        Event::GnssLost => "GNSS PPS lost: drift cleared".into(),
        Event::GnssRestored => "GNSS back".into(),
        Event::UtcOffsetChanged { old: None, new } => format!("TAI-UTC is {new} s"),
        Event::UtcOffsetChanged {
            old: Some(old),
            new,
        } => {
            format!("TAI-UTC changed {old} -> {new} s")
        }
        Event::TimeJumpRejected {
            jump_ns,
            corrected_ns,
        } => format!(
            "card time jumped {} while following GNSS: rejected (stepped {}), holding over",
            signed_ns(*jump_ns),
            signed_ns(*corrected_ns)
        ),
        Event::TimeJumpAccepted { jump_ns } => {
            format!(
                "card time stepped {} (not from GNSS): accepted",
                signed_ns(*jump_ns)
            )
        }
        Event::GnssTrusted => "GNSS agrees with the card again: following it".into(),
    }
}

/// Names of the TOD antenna-status bits that are set.
#[must_use]
pub fn antenna_flags(status: u32) -> Vec<&'static str> {
    [
        (tod::ANTENNA_OK, "antenna OK"),
        (tod::ANTENNA_SHORT, "antenna short circuit"),
        (tod::ANTENNA_OPEN, "antenna open circuit"),
        (tod::FIX_OK, "fix"),
        (tod::JAMMING, "jamming"),
        (tod::SPOOFING, "spoofing"),
    ]
    .into_iter()
    .filter(|(bit, _)| status & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// The faults a simulator snapshot shows, in words (empty: none).
#[must_use]
pub fn gnss_faults(s: &SimSnapshot) -> Vec<String> {
    let g = &s.gnss;
    let mut out = Vec::new();
    if g.signal_lost {
        out.push("signal lost".to_owned());
    }
    if g.antenna_fault {
        out.push("antenna fault".to_owned());
    }
    if g.tod_offset_s != 0 {
        out.push(format!("time of day spoofed by {:+} s", g.tod_offset_s));
    }
    if g.pps_offset_ns != 0 {
        out.push(format!(
            "PPS phase spoofed by {}",
            signed_ns(g.pps_offset_ns)
        ));
    }
    out
}

/// The simulator's ground truth as an indented text section.
#[must_use]
pub fn truth_section(s: &SimSnapshot) -> String {
    let mut out = String::new();
    let faults = gnss_faults(s);
    let mode = match s.mode {
        ClockMode::Manual => "manual clock".to_owned(),
        ClockMode::Realtime { acceleration } => format!("real time x{acceleration}"),
    };
    let _ = writeln!(out, "  truth time         {}", tai(s.truth_tai_ns));
    let _ = writeln!(
        out,
        "  card error         {}  (card {} minus truth)",
        signed_ns(s.card_error_ns),
        tai(s.card_ns)
    );
    let _ = writeln!(
        out,
        "  card state         in_sync {}, in_holdover {}, source {}{}",
        s.in_sync,
        s.in_holdover,
        s.clock_source,
        if s.card_removed {
            ", REMOVED from the bus"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  gnss               fix {}, faults: {}",
        s.gnss.fix,
        if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join(", ")
        }
    );
    if s.gnss.leap_delta != 0 {
        let _ = writeln!(
            out,
            "  leap second        {:+} scheduled in {} s (TAI-UTC now {} s)",
            s.gnss.leap_delta, s.gnss.seconds_to_leap, s.gnss.tai_utc_s
        );
    }
    let _ = writeln!(
        out,
        "  oscillator         frequency offset {:+.3e}, 24 h holdover spec {} ns",
        s.oscillator_freq_offset, s.holdover_spec_24h_ns
    );
    let _ = writeln!(
        out,
        "  firmware           image {:#010x} ({})",
        s.image_version,
        if s.regular_image {
            "regular image"
        } else {
            "golden fallback image"
        }
    );
    let _ = writeln!(out, "  time base          {mode}, {} steps", s.steps);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_offsets_read_well() {
        assert_eq!(tai(37 * NS_PER_S + 5), "1970-01-01T00:00:37.000000005 TAI");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(utc_clock(3_723_456_000_000), "01:02:03.456");
        assert_eq!(signed_ns(-12), "-12 ns");
        assert_eq!(signed_ns(0), "+0 ns");
        assert_eq!(signed_ns(1234), "+1.234 µs");
        assert_eq!(signed_ns(-2_500_000), "-2.500 ms");
        assert_eq!(signed_ns(5 * NS_PER_S), "+5.000000 s");
        assert_eq!(signed_ns(i64::MIN).chars().next(), Some('-'));
    }

    #[test]
    fn antenna_bits_are_named() {
        assert_eq!(
            antenna_flags(tod::ANTENNA_OK | tod::FIX_OK),
            ["antenna OK", "fix"]
        );
        assert!(antenna_flags(0).is_empty());
    }
}
