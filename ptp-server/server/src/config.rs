//! Server configuration: a TOML file, every field overridable by a flag.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::subscriptions::Limits;

/// Timestamping choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timestamping {
    /// Kernel software timestamps (`CLOCK_REALTIME`), mapped to card time.
    Software,
    /// NIC hardware timestamps (the NIC's PHC must be slaved to the card).
    Hardware,
}

/// Everything the server needs to know.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to serve on (must belong to `interface` for hardware timestamping).
    pub ip: IpAddr,
    /// Network interface (for hardware timestamping and the clock identity).
    pub interface: Option<String>,
    /// Event port (319).
    pub event_port: u16,
    /// General port (320).
    pub general_port: u16,
    /// Port on the client that Sync is sent to (319; tests use another).
    pub client_event_port: u16,
    /// PTP domain.
    pub domain: u8,
    /// DSCP of every packet sent (0–63).
    pub dscp: u8,
    /// Send workers.
    pub workers: usize,
    /// Receive sockets per port (`SO_REUSEPORT`).
    pub recv_workers: usize,
    /// Commands queued per worker before new work is dropped.
    pub queue: usize,
    /// Timestamping.
    pub timestamping: Timestamping,
    /// Fastest interval granted, log2 s.
    pub min_log_interval: i8,
    /// Slowest interval granted, log2 s.
    pub max_log_interval: i8,
    /// Longest grant, s.
    pub max_duration_s: u32,
    /// Most live streams (over all clients).
    pub max_streams: u64,
    /// grandmasterPriority1.
    pub priority1: u8,
    /// grandmasterPriority2.
    pub priority2: u8,
    /// Clock identity as `aabbcc.fffe.ddeeff` (default: from the interface MAC, else random-stable).
    pub clock_identity: Option<String>,
    /// Monitoring HTTP listener (`/` JSON, `/metrics` Prometheus); empty = off.
    pub monitoring: Option<String>,
    /// While this file exists the server drains.
    pub drain_file: Option<PathBuf>,
    /// While this file exists the server is never drained by the drain file.
    pub undrain_file: Option<PathBuf>,
    /// How long to wait for one TX timestamp poll, µs.
    pub txts_timeout_us: u64,
    /// TX timestamp polls before a Sync's Follow_Up is given up.
    pub txts_attempts: u32,
    /// Quality window (samples at 1 Hz; c4u: 600).
    pub quality_window: usize,
    /// chronyd's `refclock SOCK` socket to feed from the card once a second
    /// (none: no feed).
    pub chrony_sock: Option<PathBuf>,
    /// Keep feeding chronyd this long after the card was last seen locked
    /// to GNSS, s.
    pub chrony_max_holdover_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            ip: IpAddr::from([127, 0, 0, 1]),
            interface: None,
            event_port: ptp_proto::EVENT_PORT,
            general_port: ptp_proto::GENERAL_PORT,
            client_event_port: ptp_proto::EVENT_PORT,
            domain: 0,
            dscp: 0,
            workers: 2,
            recv_workers: 2,
            queue: 65_536,
            timestamping: Timestamping::Software,
            min_log_interval: l.min_log_interval,
            max_log_interval: l.max_log_interval,
            max_duration_s: l.max_duration_s,
            max_streams: 3_000_000,
            priority1: 128,
            priority2: 128,
            clock_identity: None,
            monitoring: Some("127.0.0.1:8888".into()),
            drain_file: None,
            undrain_file: None,
            txts_timeout_us: 1000,
            txts_attempts: 100,
            quality_window: 600,
            chrony_sock: None,
            chrony_max_holdover_s: 3600,
        }
    }
}

/// A configuration problem, with its place in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped field.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file (missing fields take their defaults).
    ///
    /// # Errors
    /// Unreadable file, syntax errors and unknown fields (with line numbers), bad values.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let c: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges that the types do not.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.dscp > 63 {
            return bad(format!("dscp {} is not in 0..=63", self.dscp));
        }
        if self.workers == 0 || self.workers > 1024 {
            return bad(format!("workers {} is not in 1..=1024", self.workers));
        }
        if self.recv_workers == 0 || self.recv_workers > 256 {
            return bad(format!(
                "recv_workers {} is not in 1..=256",
                self.recv_workers
            ));
        }
        if self.queue == 0 {
            return bad("queue must be at least 1".into());
        }
        if self.min_log_interval > self.max_log_interval {
            return bad(format!(
                "min_log_interval {} is above max_log_interval {}",
                self.min_log_interval, self.max_log_interval
            ));
        }
        if self.timestamping == Timestamping::Hardware && self.interface.is_none() {
            return bad("hardware timestamping needs `interface`".into());
        }
        if let Some(id) = &self.clock_identity {
            parse_clock_identity(id).map_err(ConfigError::Invalid)?;
        }
        if let Some(sock) = &self.chrony_sock
            && (sock.as_os_str().is_empty() || sock.as_os_str().len() >= 108)
        {
            return bad(format!(
                "chrony_sock {sock:?} is not a Unix socket path (1 to 107 bytes)"
            ));
        }
        Ok(())
    }

    /// Negotiation limits.
    #[must_use]
    pub fn limits(&self) -> Limits {
        Limits {
            min_log_interval: self.min_log_interval,
            max_log_interval: self.max_log_interval,
            max_duration_s: self.max_duration_s,
        }
    }

    /// How long chronyd is fed from a card in holdover.
    #[must_use]
    pub fn chrony_max_holdover(&self) -> Duration {
        Duration::from_secs(self.chrony_max_holdover_s)
    }

    /// TX timestamp poll timeout.
    #[must_use]
    pub fn txts_timeout(&self) -> Duration {
        Duration::from_micros(self.txts_timeout_us)
    }
}

/// Parses `aabbcc.fffe.ddeeff` or 16 hex digits.
///
/// # Errors
/// A message describing the expected form.
pub fn parse_clock_identity(s: &str) -> Result<ptp_proto::ClockIdentity, String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != '.' && *c != ':' && *c != '-')
        .collect();
    if hex.len() != 16 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "clock identity {s:?} must be 8 bytes of hex, e.g. 3cfdfe.fffe.000001"
        ));
    }
    let mut b = [0u8; 8];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(ptp_proto::ClockIdentity(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_the_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "workers = 4\ndscp = 46\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!((c.workers, c.dscp, c.domain), (4, 46, 0));
        std::fs::write(&p, "workers = 4\nwrokers = 5\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("wrokers"), "{e}");
        std::fs::write(&p, "dscp = 99\n").unwrap();
        assert!(
            Config::load(&p)
                .unwrap_err()
                .to_string()
                .contains("dscp 99")
        );
        std::fs::write(&p, "ip = \"not an ip\"\n").unwrap();
        assert!(Config::load(&p).unwrap_err().to_string().contains("line 1"));
        assert!(Config::load(&dir.path().join("missing.toml")).is_err());
        std::fs::write(&p, "chrony_sock = \"/run/chrony/timecard.sock\"\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(
            c.chrony_sock.as_deref(),
            Some(Path::new("/run/chrony/timecard.sock"))
        );
        assert_eq!(c.chrony_max_holdover(), Duration::from_secs(3600));
        std::fs::write(&p, "chrony_sock = \"\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("chrony_sock"), "{e}");
    }

    #[test]
    fn clock_identities_parse() {
        assert_eq!(
            parse_clock_identity("3cfdfe.fffe.000001").unwrap().0,
            [0x3c, 0xfd, 0xfe, 0xff, 0xfe, 0, 0, 1]
        );
        assert!(parse_clock_identity("xyz").is_err());
    }
}
