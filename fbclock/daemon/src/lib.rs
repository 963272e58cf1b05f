//! # fbclockd — the TrueTime daemon
//!
//! A PTP client that turns exchanges with a grandmaster into a model of TAI
//! against the host's clock with a strict error bound, published in shared
//! memory for `fbclock` clients and over gRPC.
//!
//! ## Layers
//!
//! - [`estimator`] — pure: [`Exchange`]s in (four timestamps, corrections,
//!   the grandmaster's Announce), a [`fbclock::Snapshot`] out for any local
//!   instant. The bound and its growth are documented there, with the
//!   assumptions they rest on.
//! - [`clock`] — the local clock the model is against ([`SystemClock`] =
//!   `CLOCK_MONOTONIC_RAW`; [`DriftingClock`] for simulated hosts) and the
//!   mapping of kernel `CLOCK_REALTIME` packet timestamps onto it.
//! - [`client`] — the I/O edge: SPTP ([`client::SptpClient`]) or IEEE 1588
//!   negotiated unicast ([`client::UnicastClient`]), both producing
//!   [`Exchange`]s.
//! - [`daemon`] — threads: [`Daemon::spawn`] runs the exchange loop and a
//!   100 Hz publisher; the [`DaemonHandle`] reports [`status::DaemonStatus`]
//!   and Prometheus metrics ([`DaemonMetrics`], `timecard_fbclockd_*`) and
//!   stops gracefully.
//! - [`harness`] — a deterministic simulation of a grandmaster on a
//!   simulated Time Card and many hosts, checking that every published
//!   interval contains true time (linearizability, commit wait).
//!
//! ```no_run
//! use std::sync::Arc;
//! use fbclockd::{Config, Daemon, LocalClock, Mode, SystemClock};
//!
//! let clock = Arc::new(SystemClock);
//! let publisher = fbclock::Publisher::create(fbclock::DEFAULT_PATH, clock.clock_id())?;
//! let daemon = Daemon::spawn(Config::new(Mode::Sptp, "10.0.0.1:319".parse()?), clock, publisher)?;
//! let tt = daemon.client().now()?; // [earliest, latest] TAI, once synced
//! daemon.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cli;
pub mod client;
pub mod clock;
pub mod daemon;
pub mod estimator;
pub mod grpc;
pub mod harness;
pub mod live;
pub mod status;

pub use clock::{DriftHandle, DriftingClock, LocalClock, SystemClock};
pub use daemon::{Config, Daemon, DaemonError, DaemonHandle, DaemonMetrics, Mode};
pub use estimator::{Estimator, EstimatorConfig, Exchange};
