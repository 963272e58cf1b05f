//! The `fbclockd` command line: [`Args`] and the daemon [`Config`] they
//! describe. Public so that `timecard config check` can validate an
//! `fbclockd` config file against the same flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::estimator::ArbTimescale;
use crate::{Config, Mode};

/// TrueTime daemon: keeps a model of TAI against this host's
/// CLOCK_MONOTONIC_RAW from PTP exchanges with a grandmaster and publishes
/// it, with a strict error bound, in shared memory for fbclock clients.
///
/// Clients get [earliest, latest] with one clock_gettime: the bound is
/// half the measured round trip (valid for any path asymmetry) plus the
/// grandmaster's announced accuracy plus timestamping error, growing between
/// exchanges by --max-drift-ppb plus the rate fit's uncertainty. The daemon
/// never adjusts any clock.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "\
Examples:
  fbclockd --server 10.0.0.1:319                      SPTP to ptp4u / ptp-server
  fbclockd --mode unicast --server 10.0.0.1:319       negotiated unicast to ptp4l (binds 319/320)
  fbclockd --server 127.0.0.1:3190 --general-port 3191 --shm /tmp/fbclock --interval 250ms

Read it: fbclock::FbClock::open(PATH)?.now() (Rust), fbclock_gettime() (C).
The bound holds as long as the local oscillator's frequency stays within
--max-drift-ppb of its recent average and the grandmaster is within its
announced clockAccuracy; an unknown accuracy (0xFE) publishes no data.
SIGTERM/SIGINT stop the daemon; the record then goes stale for readers."
)]
pub struct Args {
    /// `--config FILE`: these flags from a TOML file.
    #[command(flatten)]
    pub config_file: operate::config::ConfigFile,
    /// The grandmaster's event address (IP:port, normally port 319). SPTP
    /// sends its Delay_Req here; negotiated unicast sends Delay_Req here and
    /// Signaling to the same IP at --general-port.
    #[arg(long, default_value = "127.0.0.1:319")]
    pub server: SocketAddr,
    /// The grandmaster's general port (320): unicast negotiation goes there.
    #[arg(long, default_value_t = 320)]
    pub general_port: u16,
    /// `sptp`: one Delay_Req, answered by Sync + Announce (ptp4u, ptp-server).
    /// `unicast`: IEEE 1588 negotiated unicast with Sync/Follow_Up and
    /// Delay_Req/Delay_Resp (linuxptp ptp4l as master; binds local 319/320
    /// because ptp4l always sends there).
    #[arg(long, value_enum, default_value_t = CliMode::Sptp)]
    pub mode: CliMode,
    /// Shared-memory file to publish (world-readable, 128 bytes).
    #[arg(long, default_value = fbclock::DEFAULT_PATH)]
    pub shm: PathBuf,
    /// Exchange interval: `1s`, `250ms`, `1/16s`, `0.5` (seconds); 1/16 s to
    /// 64 s. Negotiated unicast rounds it to a power of two.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Assumed bound on how far the local oscillator's frequency wanders from
    /// its recent average, ppb (= ns of extra error per second without an
    /// exchange). 20000 (20 ppm) covers ordinary crystals with temperature
    /// swings; lower it only for a stabilised oscillator.
    #[arg(long, default_value_t = 20_000.0)]
    pub max_drift_ppb: f64,
    /// Assumed bound on the local oscillator's frequency error before a rate
    /// is measured, ppb (500 ppm: the kernel's limit for CLOCK_REALTIME).
    #[arg(long, default_value_t = 500_000.0)]
    pub max_frequency_error_ppb: f64,
    /// Timestamping error beyond added delay (clock read granularity, the
    /// CLOCK_REALTIME to CLOCK_MONOTONIC_RAW mapping), ns.
    #[arg(long, default_value_t = 1_000.0)]
    pub timestamp_error_ns: f64,
    /// Time error growth of a grandmaster in holdover (clockClass 7), ppb;
    /// PTP does not announce it.
    #[arg(long, default_value_t = 100.0)]
    pub gm_holdover_ppb: f64,
    /// Accepted exchanges in the least-squares rate fit.
    #[arg(long, default_value_t = 8)]
    pub rate_window: usize,
    /// A round trip within this many ns of the recent minimum is never
    /// rejected as a spike (the filter rejects above 3x the minimum; with
    /// software timestamps the minimum is a few µs and jitter of a few µs
    /// is not congestion). 0 = pure 3x rule.
    #[arg(long, default_value_t = 10_000.0)]
    pub spike_floor_ns: f64,
    /// The grandmaster's ARB (non-PTP) timescale is UTC, as with linuxptp's
    /// `ptp4l -S` serving CLOCK_REALTIME: add its currentUtcOffset to get
    /// TAI. Without this flag ARB time is published as it is.
    #[arg(long)]
    pub arb_is_utc: bool,
    /// PTP domain.
    #[arg(long, default_value_t = 0)]
    pub domain: u8,
    /// Local address to bind (default: any, of the server's family).
    #[arg(long)]
    pub local_ip: Option<IpAddr>,
    /// Local event port (default: ephemeral for SPTP, 319 for unicast).
    #[arg(long)]
    pub local_event_port: Option<u16>,
    /// Local general port (default: none for SPTP, 320 for unicast).
    #[arg(long)]
    pub local_general_port: Option<u16>,
    /// Our portNumber (default 256 for SPTP, so the Announce comes back to
    /// the event socket; 1 for unicast).
    #[arg(long)]
    pub port_number: Option<u16>,
    /// How long to wait for the answers to one request: `200ms`.
    #[arg(long, default_value = "200ms", value_parser = parse_interval_any)]
    pub exchange_timeout: Duration,
    /// Unicast grant duration to request, s (renewed at half).
    #[arg(long, default_value_t = 60)]
    pub unicast_duration: u32,
    /// Stop after this many seconds (tests, demos).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Serve Prometheus metrics (`timecard_fbclockd_*`) on http://ADDR/metrics;
    /// `off` disables.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS)]
    pub metrics: operate::metrics::http::ListenAddr,
    /// Serve the gRPC API (`timecard.fbclock.v1.FbClock`: GetTime,
    /// WaitUntil commit-wait, Status, Watch; read-only) on ADDR, for clients
    /// that cannot map the shared memory (other languages, other hosts);
    /// `off` disables. Loopback by default.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_GRPC)]
    pub grpc: operate::metrics::http::ListenAddr,
    /// `--log-level` (default info) and `--log-format`.
    #[command(flatten)]
    pub log: operate::logging::LogArgs,
}

/// Where fbclockd serves its metrics unless told otherwise.
pub const DEFAULT_METRICS: &str = "127.0.0.1:7331";
/// Where fbclockd serves its gRPC API unless told otherwise.
pub const DEFAULT_GRPC: &str = "127.0.0.1:7330";

/// `--mode`: how to talk to the grandmaster.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CliMode {
    /// Stateless SPTP (ptp4u, ptp-server).
    Sptp,
    /// IEEE 1588 negotiated unicast (ptp4l as master).
    Unicast,
}

/// `1s`, `250ms`, `500us`, `1/16s`, `0.5` (s).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value = match num.split_once('/') {
        Some((a, b)) => {
            let a: f64 = a.trim().parse().map_err(|e| format!("{s}: {e}"))?;
            let b: f64 = b.trim().parse().map_err(|e| format!("{s}: {e}"))?;
            a / b
        }
        None => num.trim().parse().map_err(|e| format!("{s}: {e}"))?,
    };
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        other => return Err(format!("{s}: unknown unit {other:?} (s, ms, us)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s}: must be positive"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < crate::daemon::MIN_INTERVAL || d > Duration::from_secs(64) {
        return Err(format!("{s}: the interval must be between 1/16 s and 64 s"));
    }
    Ok(d)
}

fn parse_interval_any(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

impl Args {
    /// The daemon configuration these arguments describe.
    #[must_use]
    pub fn config(&self) -> Config {
        let a = self;
        let mode = match a.mode {
            CliMode::Sptp => Mode::Sptp,
            CliMode::Unicast => Mode::Unicast,
        };
        let mut c = Config::new(mode, a.server);
        let t = &mut c.transport;
        t.server_general_port = a.general_port;
        t.local_ip = a.local_ip;
        if let Some(p) = a.local_event_port {
            t.local_event_port = p;
        }
        if let Some(p) = a.local_general_port {
            t.local_general_port = Some(p);
        }
        if let Some(p) = a.port_number {
            t.port_identity.port_number = p;
        }
        t.domain = a.domain;
        t.unicast_duration_s = a.unicast_duration;
        t.response_timeout = a.exchange_timeout;
        c.interval = a.interval;
        c.exchange_timeout = a.exchange_timeout;
        let e = &mut c.estimator;
        e.max_drift_ppb = a.max_drift_ppb;
        e.max_frequency_error_ppb = a.max_frequency_error_ppb;
        e.timestamp_error_ns = a.timestamp_error_ns;
        e.gm_holdover_ppb = a.gm_holdover_ppb;
        e.rate_window = a.rate_window;
        e.spike_floor_ns = a.spike_floor_ns;
        e.arb_timescale = if a.arb_is_utc {
            ArbTimescale::Utc
        } else {
            ArbTimescale::AsIs
        };
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1/16s"), Ok(Duration::from_micros(62_500)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_interval("1/32s").is_err());
        assert!(parse_interval("1/16s").is_ok());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::parse_from(["fbclockd", "--mode", "unicast", "--server", "10.0.0.1:319"]);
        let c = a.config();
        assert_eq!(c.mode, Mode::Unicast);
        assert_eq!(c.transport.local_general_port, Some(320));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_config_file_sets_flags_and_later_flags_override_it() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fbclockd.toml");
        std::fs::write(
            &path,
            "server = \"10.0.0.1:319\"\nmode = \"unicast\"\ninterval = \"2s\"\narb-is-utc = true\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let expand = |argv: &[&str]| {
            operate::config::expand_args(argv.iter().copied(), &Args::command())
                .map(Args::parse_from)
                .map_err(|e| e.to_string())
        };
        let a = expand(&["fbclockd", "--config", p]).unwrap();
        assert_eq!(a.server, "10.0.0.1:319".parse().unwrap());
        assert_eq!(a.interval, Duration::from_secs(2));
        assert!(matches!(a.mode, CliMode::Unicast) && a.arb_is_utc);
        assert_eq!(a.config_file.config.as_deref(), Some(path.as_path()));
        let a = expand(&["fbclockd", "--config", p, "--interval", "4s"]).unwrap();
        assert_eq!(a.interval, Duration::from_secs(4));
        assert_eq!(a.config().mode, Mode::Unicast);

        std::fs::write(&path, "server = \"10.0.0.1:319\"\ninterval = \"1h\"\n").unwrap();
        let e = expand(&["fbclockd", "--config", p]).unwrap_err();
        assert!(
            e.starts_with(&format!("{p}:2:12: `interval`: invalid value '1h'")),
            "{e}"
        );
    }
}
