//! Picks the backends from one configuration string, so the choice is made
//! by configuration and never by code edits:
//!
//! - `embedded` or `embedded:DIR` — segment-file log and `redb` store under
//!   `DIR/<service>/` (default `DIR`: `./timecard-data`);
//! - `nats://HOST:PORT[,nats://HOST:PORT…]` — JetStream stream
//!   `TC_<SERVICE>` and KV bucket `tc_<service>` (replicas: 3 when three or
//!   more servers are listed, else 1).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::kv::{Kv, RedbKv};
use crate::log::EventLog;
use crate::nats::{NatsKv, NatsLog, NatsOptions};
use crate::segment::{SegmentLog, SegmentOptions};

/// Why a backend could not be chosen or opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The configuration string is not understood.
    #[error("backend {0:?}: expected `embedded`, `embedded:DIR` or `nats://HOST:PORT[,…]`")]
    Spec(String),
    /// A log name that is not 1–32 characters of `[A-Za-z0-9_-]` (or is
    /// the reserved `log`).
    #[error("log name {0:?}: use 1 to 32 characters from [A-Za-z0-9_-], not `log`")]
    LogName(String),
    /// Opening the log failed.
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    /// Opening the store failed.
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
    /// No NATS server answered.
    #[error("cannot connect to NATS at {urls}: {cause}")]
    Connect {
        /// The servers tried.
        urls: String,
        /// The last error.
        cause: String,
    },
}

/// Which backend, parsed from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// Local disk.
    Embedded {
        /// Data directory.
        dir: PathBuf,
    },
    /// NATS JetStream.
    Nats {
        /// Server URLs.
        urls: Vec<String>,
    },
}

impl FromStr for BackendSpec {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "embedded" {
            return Ok(Self::Embedded {
                dir: PathBuf::from("timecard-data"),
            });
        }
        if let Some(dir) = s.strip_prefix("embedded:") {
            if dir.is_empty() {
                return Err(BackendError::Spec(s.into()));
            }
            return Ok(Self::Embedded { dir: dir.into() });
        }
        if s.starts_with("nats://") {
            let urls: Vec<String> = s.split(',').map(|u| u.trim().to_owned()).collect();
            let valid = urls.iter().all(|u| {
                u.strip_prefix("nats://").is_some_and(|hp| {
                    hp.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                })
            });
            if valid {
                return Ok(Self::Nats { urls });
            }
        }
        Err(BackendError::Spec(s.chars().take(120).collect()))
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded { dir } => write!(f, "embedded:{}", dir.display()),
            Self::Nats { urls } => f.write_str(&urls.join(",")),
        }
    }
}

/// An opened log and store for one service.
#[derive(Clone, Debug)]
pub struct Backend {
    /// The event log.
    pub log: EventLog,
    /// The key-value store.
    pub kv: Kv,
    /// What was opened, for status output.
    pub description: String,
    /// Where further logs of this service go ([`Backend::open_log`]).
    extra: ExtraLogs,
}

/// What [`Backend::open_log`] needs to open more logs next to the first.
#[derive(Clone, Debug)]
enum ExtraLogs {
    Embedded {
        root: PathBuf,
        segments: SegmentOptions,
    },
    Nats {
        client: async_nats::Client,
        service: String,
        options: NatsOptions,
    },
}

/// Options for [`Backend::open`].
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Embedded log options.
    pub segments: SegmentOptions,
    /// JetStream options (replicas are derived from the URL count unless set).
    pub nats: Option<NatsOptions>,
}

impl Backend {
    /// The NATS connection of a NATS backend (for other uses of the same
    /// servers, e.g. a push registry).
    #[must_use]
    pub fn nats_client(&self) -> Option<&async_nats::Client> {
        match &self.extra {
            ExtraLogs::Nats { client, .. } => Some(client),
            ExtraLogs::Embedded { .. } => None,
        }
    }

    /// The service's own directory of an embedded backend (`<dir>/<service>`).
    #[must_use]
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        match &self.extra {
            ExtraLogs::Embedded { root, .. } => Some(root),
            ExtraLogs::Nats { .. } => None,
        }
    }

    /// Opens the backend of `spec` for service `service` (a short lowercase name).
    pub async fn open(
        spec: &BackendSpec,
        service: &str,
        options: &BackendOptions,
    ) -> Result<Self, BackendError> {
        match spec {
            BackendSpec::Embedded { dir } => {
                let root = dir.join(service);
                // Opening the log creates `root` too.
                let log = SegmentLog::open(root.join("log"), options.segments.clone())?;
                let kv = RedbKv::open(root.join("state.redb"))?;
                Ok(Self {
                    log: EventLog::Embedded(log),
                    kv: Kv::Embedded(kv),
                    description: format!("embedded ({})", root.display()),
                    extra: ExtraLogs::Embedded {
                        root,
                        segments: options.segments.clone(),
                    },
                })
            }
            BackendSpec::Nats { urls } => {
                let opts = options.nats.clone().unwrap_or_else(|| NatsOptions {
                    replicas: if urls.len() >= 3 { 3 } else { 1 },
                    ..NatsOptions::default()
                });
                let client = crate::nats::connect(urls, Duration::from_secs(10))
                    .await
                    .map_err(|cause| BackendError::Connect {
                        urls: urls.join(","),
                        cause,
                    })?;
                let log = NatsLog::open(&client, service, &opts).await?;
                let kv = NatsKv::open(&client, service, &opts).await?;
                Ok(Self {
                    log: EventLog::Nats(log),
                    kv: Kv::Nats(kv),
                    description: format!("NATS JetStream {} (R{})", urls.join(","), opts.replicas),
                    extra: ExtraLogs::Nats {
                        client,
                        service: service.to_owned(),
                        options: opts,
                    },
                })
            }
        }
    }

    /// Opens the backend named by the configuration string `spec` for
    /// `service`, with fsync per group commit of the embedded logs on or off
    /// (what a service's `--backend` and `--no-fsync` flags say).
    pub async fn open_spec(spec: &str, service: &str, fsync: bool) -> Result<Self, BackendError> {
        let options = BackendOptions {
            segments: SegmentOptions {
                fsync,
                ..SegmentOptions::default()
            },
            nats: None,
        };
        Self::open(&spec.parse()?, service, &options).await
    }

    /// Opens another log of the same service, named `name` (letters,
    /// digits, `-`, `_`): directory `<service>/<name>/` in the embedded
    /// backend, stream `TC_<SERVICE>-<NAME>` on NATS. A service that shards
    /// its events (one log per priority and shard) opens one per shard.
    pub async fn open_log(&self, name: &str) -> Result<EventLog, BackendError> {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid || name == "log" {
            return Err(BackendError::LogName(name.chars().take(40).collect()));
        }
        match &self.extra {
            ExtraLogs::Embedded { root, segments } => Ok(EventLog::Embedded(SegmentLog::open(
                root.join(name),
                segments.clone(),
            )?)),
            ExtraLogs::Nats {
                client,
                service,
                options,
            } => Ok(EventLog::Nats(
                NatsLog::open(client, &format!("{service}-{name}"), options).await?,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_explain() {
        assert_eq!(
            "embedded:/var/lib/timecard".parse::<BackendSpec>().unwrap(),
            BackendSpec::Embedded {
                dir: "/var/lib/timecard".into()
            }
        );
        assert_eq!(
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223"
                .parse::<BackendSpec>()
                .unwrap(),
            BackendSpec::Nats {
                urls: vec![
                    "nats://127.0.0.1:4222".into(),
                    "nats://127.0.0.1:4223".into()
                ]
            }
        );
        for bad in [
            "",
            "embedded:",
            "redis://x:1",
            "nats://",
            "nats://host",
            "nats://h:99999",
        ] {
            let e = bad.parse::<BackendSpec>().unwrap_err().to_string();
            assert!(e.contains("expected"), "{bad}: {e}");
        }
    }
}
