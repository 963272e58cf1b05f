//! Prometheus metrics in one naming scheme, written as text exposition
//! format 0.0.4.
//!
//! Every metric a timecard daemon exports is named
//! `timecard_<daemon>_<name>_<unit>`: the daemon (`ptp_server`, `fbclockd`,
//! `counter`, `notify`, `push`, `appliance`), what is measured, and its base
//! unit (`seconds`, `bytes`, `ratio`; never milli-, micro- or kilo-); counters
//! end in `_total`. Plain counts of things (clients, subscriptions) carry no
//! unit. Every exposition also has `timecard_build_info{daemon,version} 1`,
//! one sample per daemon in it. [`check_name`] states the rules as code.
//!
//! Daemons count with atomics on their hot paths and format only when
//! scraped: a scrape builds an [`Exposition`] family by family and serves
//! [`Exposition::finish`]. Latencies go into a [`Histogram`] (atomic, fixed
//! memory). Daemons without an HTTP stack serve it with [`http::spawn`].
//!
//! ```
//! use operate::metrics::Exposition;
//! let mut m = Exposition::new("counter", "0.1.0");
//! m.counter("ops_total", "Operations served.")
//!     .sample(&[("op", "add")], 3u64)
//!     .sample(&[("op", "get")], 5u64);
//! m.gauge("pending_events", "Events not yet rolled up.").value(2u64);
//! let text = m.finish();
//! assert!(text.contains("timecard_counter_ops_total{op=\"add\"} 3\n"));
//! assert!(text.contains("timecard_build_info{daemon=\"counter\",version=\"0.1.0\"} 1\n"));
//! ```

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

mod histogram;
pub mod http;

pub use histogram::{Histogram, LATENCY_BOUNDS_S};

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metric every daemon exports once, labelled with its name and version.
pub const BUILD_INFO: &str = "timecard_build_info";

/// Unit words that are not base units (the part of a name between `_`s).
const NOT_BASE_UNITS: [&str; 22] = [
    "ms",
    "us",
    "ns",
    "msec",
    "usec",
    "nsec",
    "millis",
    "micros",
    "nanos",
    "milliseconds",
    "microseconds",
    "nanoseconds",
    "minutes",
    "hours",
    "days",
    "kb",
    "mb",
    "gb",
    "kilobytes",
    "megabytes",
    "percent",
    "ppb",
];

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (and back to 0 when the daemon restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative `le` buckets, with their sum and count.
    Histogram,
}

impl Kind {
    /// The word on the `# TYPE` line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A metric or label name that breaks the naming rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not `timecard_…`.
    #[error("{0:?} does not start with timecard_")]
    Prefix(String),
    /// A character outside `[a-z0-9_]`, or an empty part between `_`s.
    #[error("{0:?} is not lowercase words of [a-z0-9] joined by single '_'")]
    Charset(String),
    /// A counter whose name does not end in `_total`.
    #[error("counter {0:?} does not end in _total")]
    CounterSuffix(String),
    /// `_total` on something that is not a counter.
    #[error("{0:?} ends in _total but is not a counter")]
    NotCounter(String),
    /// A histogram of durations not in seconds.
    #[error("histogram {0:?} does not end in _seconds")]
    HistogramUnit(String),
    /// A unit that is not a base unit.
    #[error("{name:?} uses the unit {unit:?}; use base units (seconds, bytes, ratio)")]
    Unit {
        /// The metric.
        name: String,
        /// The offending word.
        unit: String,
    },
    /// A label name Prometheus does not accept (or reserves).
    #[error("label name {0:?} is not [a-zA-Z_][a-zA-Z0-9_]* or starts with __")]
    Label(String),
}

/// Checks a full metric name (`timecard_<daemon>_<name>_<unit>`) against
/// the naming rules for a family of `kind`.
///
/// # Errors
/// The first rule the name breaks.
pub fn check_name(name: &str, kind: Kind) -> Result<(), NameError> {
    let Some(rest) = name.strip_prefix("timecard_") else {
        return Err(NameError::Prefix(name.to_owned()));
    };
    let words: Vec<&str> = rest.split('_').collect();
    if words.iter().any(|w| {
        w.is_empty()
            || !w
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }) {
        return Err(NameError::Charset(name.to_owned()));
    }
    if let Some(unit) = words.iter().find(|w| NOT_BASE_UNITS.contains(w)) {
        return Err(NameError::Unit {
            name: name.to_owned(),
            unit: (*unit).to_owned(),
        });
    }
    let total = name.ends_with("_total");
    match kind {
        Kind::Counter if !total => Err(NameError::CounterSuffix(name.to_owned())),
        Kind::Gauge | Kind::Histogram if total => Err(NameError::NotCounter(name.to_owned())),
        Kind::Histogram if !name.ends_with("_seconds") => {
            Err(NameError::HistogramUnit(name.to_owned()))
        }
        _ => Ok(()),
    }
}

/// Checks a label name.
///
/// # Errors
/// [`NameError::Label`] when Prometheus would not accept it.
pub fn check_label(name: &str) -> Result<(), NameError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') && !name.starts_with("__")
    {
        Ok(())
    } else {
        Err(NameError::Label(name.to_owned()))
    }
}

/// A sample's value: integers are written exactly, floats as Prometheus
/// spells them (`NaN`, `+Inf`, `-Inf`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Value(Repr);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Repr {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self(Repr::Unsigned(v))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self(Repr::Unsigned(v.into()))
    }
}

impl From<u8> for Value {
    fn from(v: u8) -> Self {
        Self(Repr::Unsigned(v.into()))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Self(Repr::Unsigned(u64::try_from(v).unwrap_or(u64::MAX)))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self(Repr::Signed(v))
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Self(Repr::Signed(v.into()))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self(Repr::Unsigned(u64::from(v)))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self(Repr::Float(v))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::Unsigned(v) => write!(f, "{v}"),
            Repr::Signed(v) => write!(f, "{v}"),
            Repr::Float(v) if v.is_nan() => f.write_str("NaN"),
            Repr::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Repr::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Repr::Float(v) => write!(f, "{v}"),
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes `# HELP` text: backslash and line feed.
fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes `{a="x",b="y"}` (nothing without labels), `le` last if given.
fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|v| ("le", v)));
    for (i, (k, v)) in all.enumerate() {
        debug_assert_eq!(check_label(k), Ok(()));
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    out.push('}');
}

/// One scrape's text, built family by family.
#[derive(Debug)]
pub struct Exposition {
    /// The text so far.
    out: String,
    /// `timecard_<daemon>_` of the daemon whose families come next.
    prefix: String,
    /// The daemons in this exposition, with their versions, for `timecard_build_info`.
    daemons: Vec<(String, String)>,
    /// Families written, to catch a family written twice.
    families: BTreeSet<String>,
}

impl Exposition {
    /// An exposition of `daemon` (`ptp_server`, `fbclockd`, …) at `version`
    /// (its crate's `CARGO_PKG_VERSION`).
    #[must_use]
    pub fn new(daemon: &str, version: &str) -> Self {
        let mut e = Self {
            out: String::with_capacity(4096),
            prefix: String::new(),
            daemons: Vec::new(),
            families: BTreeSet::new(),
        };
        e.daemon(daemon, version);
        e
    }

    /// The families that follow are `daemon`'s: a process hosting another
    /// daemon's parts (notify hosting a push edge node, `timecard up`
    /// running fbclockd) exports them under that daemon's names.
    pub fn daemon(&mut self, daemon: &str, version: &str) {
        debug_assert_eq!(
            check_name(&format!("timecard_{daemon}_x"), Kind::Gauge),
            Ok(())
        );
        self.prefix = format!("timecard_{daemon}_");
        if !self.daemons.iter().any(|(d, _)| d == daemon) {
            self.daemons.push((daemon.to_owned(), version.to_owned()));
        }
    }

    /// Starts a family: `# HELP` and `# TYPE`; returns its full name.
    fn begin(&mut self, full: String, help: &str, kind: Kind) -> String {
        debug_assert_eq!(check_name(&full, kind), Ok(()));
        let fresh = self.families.insert(full.clone());
        debug_assert!(fresh, "{full} written twice");
        let _ = write!(self.out, "# HELP {full} ");
        escape_help(&mut self.out, help);
        let _ = writeln!(self.out, "\n# TYPE {full} {}", kind.as_str());
        full
    }

    /// A counter family `timecard_<daemon>_<name>` (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str) -> Family<'_> {
        let full = self.begin(format!("{}{name}", self.prefix), help, Kind::Counter);
        Family {
            out: &mut self.out,
            name: full,
        }
    }

    /// A gauge family `timecard_<daemon>_<name>`.
    pub fn gauge(&mut self, name: &str, help: &str) -> Family<'_> {
        let full = self.begin(format!("{}{name}", self.prefix), help, Kind::Gauge);
        Family {
            out: &mut self.out,
            name: full,
        }
    }

    /// A histogram family `timecard_<daemon>_<name>` (`name` ends in
    /// `_seconds`: [`Histogram`]s hold durations).
    pub fn histogram(&mut self, name: &str, help: &str) -> HistogramFamily<'_> {
        let full = self.begin(format!("{}{name}", self.prefix), help, Kind::Histogram);
        HistogramFamily {
            out: &mut self.out,
            name: full,
        }
    }

    /// The text to serve, ending with `timecard_build_info`.
    #[must_use]
    pub fn finish(mut self) -> String {
        let daemons = std::mem::take(&mut self.daemons);
        let full = self.begin(
            BUILD_INFO.to_owned(),
            "Which timecard daemons this process runs, and their versions; always 1.",
            Kind::Gauge,
        );
        for (daemon, version) in &daemons {
            self.out.push_str(&full);
            write_labels(
                &mut self.out,
                &[("daemon", daemon), ("version", version)],
                None,
            );
            self.out.push_str(" 1\n");
        }
        self.out
    }
}

/// The samples of one counter or gauge family.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl Family<'_> {
    /// Adds a sample with `labels` (names `[a-zA-Z_][a-zA-Z0-9_]*`; values
    /// are escaped).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        self.out.push_str(&self.name);
        write_labels(self.out, labels, None);
        let _ = writeln!(self.out, " {}", value.into());
        self
    }

    /// Adds the one sample of an unlabelled family.
    pub fn value(&mut self, value: impl Into<Value>) -> &mut Self {
        self.sample(&[], value)
    }
}

/// The samples of one histogram family.
#[derive(Debug)]
pub struct HistogramFamily<'a> {
    out: &'a mut String,
    name: String,
}

impl HistogramFamily<'_> {
    /// Adds `histogram` with `labels`: its cumulative buckets at
    /// [`LATENCY_BOUNDS_S`] and `+Inf`, its sum (seconds) and its count.
    pub fn sample(&mut self, labels: &[(&str, &str)], histogram: &Histogram) -> &mut Self {
        let snapshot = histogram.snapshot();
        let mut le = String::new();
        for (bound, count) in snapshot.buckets() {
            le.clear();
            if bound.is_finite() {
                let _ = write!(le, "{bound}");
            } else {
                le.push_str("+Inf");
            }
            let _ = write!(self.out, "{}_bucket", self.name);
            write_labels(self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{}_sum", self.name);
        write_labels(self.out, labels, None);
        let _ = writeln!(self.out, " {}", Value::from(snapshot.sum_s()));
        let _ = write!(self.out, "{}_count", self.name);
        write_labels(self.out, labels, None);
        let _ = writeln!(self.out, " {}", snapshot.count());
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_follow_the_scheme() {
        assert_eq!(
            check_name("timecard_ptp_server_tx_messages_total", Kind::Counter),
            Ok(())
        );
        assert_eq!(
            check_name("timecard_fbclockd_offset_seconds", Kind::Gauge),
            Ok(())
        );
        assert_eq!(check_name(BUILD_INFO, Kind::Gauge), Ok(()));
        assert!(matches!(
            check_name("ptp_server_rx_total", Kind::Counter),
            Err(NameError::Prefix(_))
        ));
        assert!(matches!(
            check_name("timecard_counter_ops", Kind::Counter),
            Err(NameError::CounterSuffix(_))
        ));
        assert!(matches!(
            check_name("timecard_counter_ops_total", Kind::Gauge),
            Err(NameError::NotCounter(_))
        ));
        assert!(matches!(
            check_name("timecard_fbclockd_offset_ns", Kind::Gauge),
            Err(NameError::Unit { .. })
        ));
        assert!(matches!(
            check_name("timecard_counter_latency_ms", Kind::Histogram),
            Err(NameError::Unit { .. })
        ));
        assert!(matches!(
            check_name("timecard_counter_latency", Kind::Histogram),
            Err(NameError::HistogramUnit(_))
        ));
        for bad in [
            "timecard_Counter_x",
            "timecard_counter__x",
            "timecard_counter_x_",
            "timecard_counter.x",
        ] {
            assert!(
                matches!(check_name(bad, Kind::Gauge), Err(NameError::Charset(_))),
                "{bad}"
            );
        }
        assert_eq!(check_label("le"), Ok(()));
        assert_eq!(check_label("_x1"), Ok(()));
        assert!(check_label("1x").is_err());
        assert!(check_label("__name__").is_err());
        assert!(check_label("").is_err());
        assert!(check_label("a-b").is_err());
    }

    #[test]
    fn exposition_text_is_exact() {
        let h = Histogram::default();
        h.record(Duration::from_micros(30));
        h.record(Duration::from_millis(2));
        let mut m = Exposition::new("counter", "1.2.3");
        m.counter("ops_total", "Operations.\nBy op \\ outcome.")
            .sample(&[("op", "add"), ("outcome", "ok")], 3u64)
            .sample(&[("op", "a\"b\\c\nd")], 0u64);
        m.gauge("offset_seconds", "Offset.")
            .value(-0.000_012_5)
            .sample(&[("x", "nan")], f64::NAN)
            .sample(&[("x", "inf")], f64::INFINITY)
            .sample(&[("x", "neg")], f64::NEG_INFINITY)
            .sample(&[("x", "int")], -7i64);
        m.histogram("op_latency_seconds", "Latency.")
            .sample(&[("op", "add")], &h);
        m.daemon("push", "1.2.4");
        m.gauge("connections", "Connections.").value(true);
        let text = m.finish();
        let expected_head = "\
# HELP timecard_counter_ops_total Operations.\\nBy op \\\\ outcome.
# TYPE timecard_counter_ops_total counter
timecard_counter_ops_total{op=\"add\",outcome=\"ok\"} 3
timecard_counter_ops_total{op=\"a\\\"b\\\\c\\nd\"} 0
# HELP timecard_counter_offset_seconds Offset.
# TYPE timecard_counter_offset_seconds gauge
timecard_counter_offset_seconds -0.0000125
timecard_counter_offset_seconds{x=\"nan\"} NaN
timecard_counter_offset_seconds{x=\"inf\"} +Inf
timecard_counter_offset_seconds{x=\"neg\"} -Inf
timecard_counter_offset_seconds{x=\"int\"} -7
# HELP timecard_counter_op_latency_seconds Latency.
# TYPE timecard_counter_op_latency_seconds histogram
timecard_counter_op_latency_seconds_bucket{op=\"add\",le=\"0.00001\"} 0
timecard_counter_op_latency_seconds_bucket{op=\"add\",le=\"0.000025\"} 0
timecard_counter_op_latency_seconds_bucket{op=\"add\",le=\"0.00005\"} 1
";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(
            text.contains(
                "timecard_counter_op_latency_seconds_bucket{op=\"add\",le=\"0.001\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "timecard_counter_op_latency_seconds_bucket{op=\"add\",le=\"0.0025\"} 2\n"
            )
        );
        assert!(
            text.contains("timecard_counter_op_latency_seconds_bucket{op=\"add\",le=\"+Inf\"} 2\n")
        );
        assert!(text.contains("timecard_counter_op_latency_seconds_sum{op=\"add\"} 0.00203\n"));
        assert!(text.contains("timecard_counter_op_latency_seconds_count{op=\"add\"} 2\n"));
        let expected_tail = "\
# HELP timecard_push_connections Connections.
# TYPE timecard_push_connections gauge
timecard_push_connections 1
# HELP timecard_build_info Which timecard daemons this process runs, and their versions; always 1.
# TYPE timecard_build_info gauge
timecard_build_info{daemon=\"counter\",version=\"1.2.3\"} 1
timecard_build_info{daemon=\"push\",version=\"1.2.4\"} 1
";
        assert!(text.ends_with(expected_tail), "{text}");
    }

    #[test]
    #[should_panic(expected = "written twice")]
    #[cfg(debug_assertions)]
    fn a_family_written_twice_is_a_bug() {
        let mut m = Exposition::new("counter", "1");
        m.gauge("x", "x").value(1u64);
        m.gauge("x", "x").value(1u64);
    }
}
