//! Structured logs, the same way in every timecard binary.
//!
//! Each binary flattens [`LogArgs`] into its command line and calls
//! [`LogArgs::init`] first thing in `main`, with its own default filter:
//!
//! ```no_run
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     log: operate::logging::LogArgs,
//! }
//! let cli = <Cli as clap::Parser>::parse();
//! cli.log.init("warn")?;
//! # Ok::<(), operate::logging::LogError>(())
//! ```
//!
//! Diagnostics go to stderr (stdout stays the command's output). The filter is
//! `--log-level`, else `RUST_LOG`, else the binary's default; the format is
//! `--log-format`, else `TIMECARD_LOG_FORMAT`, else `text`. `json` writes one
//! object per line, as `tracing-subscriber`'s JSON formatter does:
//! `{"timestamp":…,"level":"INFO","fields":{"message":…,…},"target":…}`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The logging flags every binary shares.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LogArgs {
    /// Log filter for diagnostics on stderr: error, warn, info, debug, trace,
    /// or directives such as `timecard_driver=debug,warn` [default: the
    /// binary's own: info for ptp-server and fbclockd,
    /// warn,timecard_push=info for timecard-push, warn for the others]
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        value_name = "FILTER",
        value_parser = parse_filter
    )]
    pub log_level: Option<String>,
    /// Format of the diagnostics on stderr: `text`, or `json` (one object per line)
    #[arg(
        long,
        global = true,
        env = "TIMECARD_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("log filter {filter:?}: {source}")]
    Filter {
        /// The filter given.
        filter: String,
        /// What is wrong with it.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging is already set up: {0}")]
    AlreadySet(#[from] tracing_subscriber::util::TryInitError),
}

/// Checks that a log filter parses, so that a typo is a usage error and not silence.
fn parse_filter(s: &str) -> Result<String, String> {
    EnvFilter::try_new(s).map(|_| s.to_owned()).map_err(|e| {
        format!(
            "{e}; use error, warn, info, debug or trace, optionally per crate: timecard_driver=debug,warn"
        )
    })
}

impl LogArgs {
    /// The filter in force: `--log-level`, else `RUST_LOG`, else `default`.
    #[must_use]
    pub fn filter<'a>(&'a self, default: &'a str) -> &'a str {
        self.log_level.as_deref().unwrap_or(default)
    }

    /// Installs the global subscriber writing to stderr, with `default` as
    /// the filter unless one was given.
    ///
    /// # Errors
    /// The filter does not parse (only `default` can get here: the flag is
    /// checked while parsing), or logging was set up before.
    pub fn init(&self, default: &str) -> Result<(), LogError> {
        let ansi = self.log_format == LogFormat::Text && std::io::stderr().is_terminal();
        subscriber(self.log_format, self.filter(default), std::io::stderr, ansi)?.try_init()?;
        Ok(())
    }
}

/// A subscriber writing `format` through `writer`, filtered by `filter`.
fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, LogError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).map_err(|source| LogError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    Ok(match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().with_ansi(false).finish()),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex, PoisonError};

    use clap::Parser as _;

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture(format: LogFormat, filter: &str) -> String {
        let out = Capture::default();
        let writer = out.clone();
        let sub = subscriber(format, filter, move || writer.clone(), false).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "timecard_test", clients = 3, addr = "127.0.0.1:319", "serving");
            tracing::warn!(target: "timecard_test", error = "quote \" and\nnewline", "trouble");
            tracing::debug!(target: "timecard_test", "filtered out");
            tracing::info!(target: "other_crate", "filtered out by directive");
        });
        out.text()
    }

    #[test]
    fn json_is_one_object_per_line_with_level_target_and_fields() {
        let text = capture(LogFormat::Json, "warn,timecard_test=info");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let events: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(events[0]["level"], "INFO");
        assert_eq!(events[0]["target"], "timecard_test");
        assert_eq!(events[0]["fields"]["message"], "serving");
        assert_eq!(events[0]["fields"]["clients"], 3);
        assert_eq!(events[0]["fields"]["addr"], "127.0.0.1:319");
        assert!(events[0]["timestamp"].is_string());
        assert_eq!(events[1]["level"], "WARN");
        assert_eq!(events[1]["fields"]["error"], "quote \" and\nnewline");
    }

    #[test]
    fn text_is_plain_lines() {
        let text = capture(LogFormat::Text, "info,other_crate=warn");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.contains(" INFO timecard_test: serving clients=3"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no colour into a capture: {text}");
        assert!(serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap()).is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn flags_parse_and_bad_filters_are_usage_errors() {
        let c = Cli::try_parse_from(["x", "--log-format", "json", "--log-level", "debug"]).unwrap();
        assert_eq!(c.log.log_format, LogFormat::Json);
        assert_eq!(c.log.filter("warn"), "debug");
        let e = Cli::try_parse_from(["x", "--log-level", "[[["]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
        assert!(matches!(
            subscriber(LogFormat::Text, "[[[", std::io::sink, false),
            Err(LogError::Filter { .. })
        ));
    }
}
