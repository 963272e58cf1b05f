//! The flags every service's `serve` shares: where its data lives and where
//! it reads TrueTime (`#[command(flatten)]` them into a service's own
//! arguments).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Backend, BackendError};
use crate::clock::TimeSource;

/// Largest assumed system-clock error, µs (one hour).
const MAX_SYSTEM_BOUND_US: i64 = 3_600_000_000;

/// Backend and clock flags of a service.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Event log and KV backend: `embedded:DIR` or `nats://HOST:PORT[,…]`.
    #[arg(long, default_value = "embedded:timecard-data")]
    pub backend: String,
    /// fbclock shared memory file (fbclockd's --shm). Given, the service
    /// waits up to --fbclock-wait for it and refuses to start without it
    /// (under systemd, Restart= tries again). Not given: the default
    /// /run/timecard/fbclock if it opens, else the system clock with
    /// --system-clock-bound-us (an assumed bound, not TrueTime).
    #[arg(long)]
    pub fbclock: Option<PathBuf>,
    /// How long to wait for the --fbclock file at start, seconds (without
    /// --fbclock nothing is waited for).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub fbclock_wait: u64,
    /// Assumed error of the system clock when no fbclockd runs, µs.
    #[arg(long, default_value_t = 10_000)]
    pub system_clock_bound_us: i64,
    /// Do not fsync the embedded logs (survives kill -9, not power loss).
    #[arg(long)]
    pub no_fsync: bool,
}

impl ServiceArgs {
    /// Checks the values clap cannot.
    pub fn check(&self) -> Result<(), String> {
        if (0..=MAX_SYSTEM_BOUND_US).contains(&self.system_clock_bound_us) {
            Ok(())
        } else {
            Err(format!(
                "--system-clock-bound-us {}: must be between 0 and one hour",
                self.system_clock_bound_us
            ))
        }
    }

    /// The TrueTime source a `serve` command runs on: the `--fbclock` file,
    /// waited for up to `--fbclock-wait`; without the flag, [`Self::clock`].
    ///
    /// # Errors
    /// `--fbclock` was given and the file did not open in time: running on
    /// an assumed bound instead would quietly weaken every timestamp.
    pub async fn open_clock(&self) -> Result<TimeSource, String> {
        let Some(path) = &self.fbclock else {
            return Ok(self.clock());
        };
        let deadline = Instant::now() + Duration::from_secs(self.fbclock_wait);
        loop {
            match fbclock::FbClock::open(path) {
                Ok(c) => return Ok(TimeSource::Fbclock(Arc::new(c))),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "--fbclock {}: {e} (waited {} s): start fbclockd (it publishes \
                         there with --shm), or leave --fbclock out to run on the system \
                         clock with an assumed --system-clock-bound-us",
                        path.display(),
                        self.fbclock_wait
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The TrueTime source without waiting: fbclock if given and readable,
    /// else the system clock with the assumed bound (for embedders that
    /// choose themselves; `serve` uses [`Self::open_clock`]).
    #[must_use]
    pub fn clock(&self) -> TimeSource {
        TimeSource::fbclock_or_system(
            self.fbclock.as_deref(),
            self.system_clock_bound_us.saturating_mul(1000),
        )
    }

    /// Opens the backend for `service`.
    pub async fn backend(&self, service: &str) -> Result<Backend, BackendError> {
        Backend::open_spec(&self.backend, service, !self.no_fsync).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServiceArgs,
    }

    #[test]
    fn defaults_and_checks() {
        let a = Cli::parse_from(["x"]).args;
        assert_eq!(a.backend, "embedded:timecard-data");
        assert!(a.check().is_ok());
        assert!(
            a.clock().describe().contains("ASSUMED") || a.clock().describe().contains("fbclock")
        );
        let bad = Cli::parse_from(["x", "--system-clock-bound-us=-5"]).args;
        assert!(bad.check().unwrap_err().contains("between 0 and one hour"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_explicit_fbclock_is_waited_for_and_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fbclock");
        let p = path.to_str().unwrap();
        let a = Cli::parse_from(["x", "--fbclock", p, "--fbclock-wait", "2"]).args;
        let e = a.open_clock().await.unwrap_err();
        assert!(
            e.contains("waited 2 s") && e.contains("start fbclockd"),
            "{e}"
        );
        // Published while the service waits: it runs on TrueTime.
        let publisher = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                fbclock::Publisher::create(&path, libc::CLOCK_MONOTONIC_RAW as u32).unwrap()
            })
        };
        let clock = a.open_clock().await.unwrap();
        assert!(clock.describe().starts_with("fbclock"), "{clock:?}");
        drop(publisher.await.unwrap());
    }
}

/// A listener that could not be bound (its source is the `io::Error`, so
/// callers can tell an address in use from other failures).
#[derive(Debug, thiserror::Error)]
#[error("{what} listen on {addr}")]
pub struct ListenError {
    /// Which listener (`gRPC`, `HTTP`).
    pub what: &'static str,
    /// The address.
    pub addr: std::net::SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds a service's gRPC and HTTP listeners. Services bind before they
/// open their data, so a port in use costs nothing (and a retry on other
/// ports does not find the data still open).
///
/// # Errors
/// Either address cannot be bound.
pub async fn bind_listeners(
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener), ListenError> {
    let bind = |what, addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError { what, addr, source })
    };
    Ok((bind("gRPC", grpc).await?, bind("HTTP", http).await?))
}
