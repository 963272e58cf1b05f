//! The daemon: an exchange loop and a 100 Hz publisher around the pure
//! [`Estimator`].
//!
//! [`Daemon::spawn`] opens the transport and starts two threads:
//!
//! - **exchange**: runs one PTP exchange per interval (SPTP) or per Sync the
//!   grandmaster sends at the granted interval (negotiated unicast), feeds
//!   the estimator, and publishes right after every exchange;
//! - **publisher**: re-anchors the record on the local clock every
//!   [`Config::publish_interval`] (10 ms) so clients never extrapolate far.
//!
//! Both publish under the estimator's lock, so the seqlock keeps its single
//! writer. [`DaemonHandle`] reports [`DaemonStatus`] ([`StatusSource`])
//! and Prometheus metrics ([`DaemonMetrics`]), hands out in-process
//! [`fbclock::FbClock`] readers and stops gracefully.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fbclock::{FbClock, Publisher};
use operate::metrics::Exposition;
use ptp_proto::{ClockIdentity, PortIdentity};

use crate::client::{
    Loss, Outcome, SptpClient, Transport, TransportConfig, TransportCounters, TransportError,
    TransportStats, UnicastClient,
};
use crate::clock::LocalClock;
use crate::estimator::{Estimator, EstimatorConfig, NS_PER_S, Verdict};
use crate::status::{DaemonStatus, StatusSource, SyncState};

/// Shortest exchange interval (1/16 s).
pub const MIN_INTERVAL: Duration = Duration::from_micros(62_500);

/// How the daemon talks to the grandmaster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Simple PTP (ptp4u, our `ptp-server`).
    #[default]
    Sptp,
    /// IEEE 1588 negotiated unicast (linuxptp `ptp4l` as master).
    Unicast,
}

/// Everything the daemon needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Transport mode.
    pub mode: Mode,
    /// Sockets, addresses and identities.
    pub transport: TransportConfig,
    /// Exchange interval (1/16 s ..= 64 s; negotiated unicast rounds it to a
    /// power of two).
    pub interval: Duration,
    /// How long an exchange may take before it counts as lost (SPTP; capped
    /// at the interval).
    pub exchange_timeout: Duration,
    /// How often the record is re-anchored.
    pub publish_interval: Duration,
    /// Estimator tunables (its `interval_ns` is set from `interval`).
    pub estimator: EstimatorConfig,
}

impl Config {
    /// Defaults for `mode` against `server` (its event address): SPTP binds
    /// an ephemeral event port and uses port number 0x100, so the Announce
    /// comes back to it; negotiated unicast binds 319 and 320 (ptp4l sends
    /// there), port number 1.
    #[must_use]
    pub fn new(mode: Mode, server: SocketAddr) -> Self {
        let identity = default_clock_identity();
        let (local_event_port, local_general_port, port_number) = match mode {
            Mode::Sptp => (0, None, 0x100),
            Mode::Unicast => (ptp_proto::EVENT_PORT, Some(ptp_proto::GENERAL_PORT), 1),
        };
        Self {
            mode,
            transport: TransportConfig {
                server,
                server_general_port: ptp_proto::GENERAL_PORT,
                local_ip: None,
                local_event_port,
                local_general_port,
                port_identity: PortIdentity::new(identity, port_number),
                domain: 0,
                log_interval: 0,
                unicast_duration_s: 60,
                response_timeout: Duration::from_millis(200),
            },
            interval: Duration::from_secs(1),
            exchange_timeout: Duration::from_millis(200),
            publish_interval: Duration::from_millis(10),
            estimator: EstimatorConfig::default(),
        }
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`DaemonError::Config`] naming the field.
    pub fn validate(&self) -> Result<(), DaemonError> {
        let bad = |m: &str| Err(DaemonError::Config(m.into()));
        if self.interval < MIN_INTERVAL || self.interval > Duration::from_secs(64) {
            return bad("interval must be between 1/16 s and 64 s");
        }
        if self.exchange_timeout.is_zero() {
            return bad("exchange timeout must be positive");
        }
        if self.publish_interval.is_zero() || self.publish_interval > Duration::from_secs(1) {
            return bad("publish interval must be between 0 and 1 s");
        }
        let e = &self.estimator;
        if !(e.max_drift_ppb >= 0.0
            && e.max_frequency_error_ppb > 0.0
            && e.timestamp_error_ns >= 0.0)
        {
            return bad("max drift, max frequency error and timestamp error must be non-negative");
        }
        if self.mode == Mode::Unicast && self.transport.local_general_port.is_none() {
            return bad("negotiated unicast needs a local general port");
        }
        Ok(())
    }

    /// log2 of the interval, rounded (what negotiated unicast requests).
    #[must_use]
    pub fn log_interval(&self) -> i8 {
        let l = self.interval.as_secs_f64().log2().round();
        l.clamp(-7.0, 6.0) as i8
    }
}

/// A clock identity for this host: EUI-64 from the machine id (or the pid
/// and time), locally administered.
#[must_use]
pub fn default_clock_identity() -> ClockIdentity {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::read_to_string("/etc/machine-id") {
        Ok(id) => id.trim().hash(&mut h),
        Err(_) => {
            std::process::id().hash(&mut h);
            Instant::now().hash(&mut h);
        }
    }
    "fbclockd".hash(&mut h);
    let b = h.finish().to_be_bytes();
    // Locally administered, unicast MAC-48 turned EUI-64.
    ClockIdentity::from_mac([(b[0] | 0x02) & 0xFE, b[1], b[2], b[3], b[4], b[5]])
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The transport could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A thread could not be started.
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
}

/// State shared by the threads and the handle.
#[derive(Debug)]
struct Shared {
    config: Config,
    clock: Arc<dyn LocalClock>,
    publisher: Publisher,
    estimator: Mutex<Estimator>,
    counters: Arc<TransportCounters>,
    stop: AtomicBool,
    /// Wakes sleeping threads on stop.
    wake: (Mutex<()>, Condvar),
    /// The grandmaster last written to the header.
    gm_written: Mutex<Option<(u64, u8, u8)>>,
    /// Records written to shared memory.
    shm_writes: AtomicU64,
}

impl Shared {
    /// Sleeps until `deadline` or stop; true if stopping.
    fn sleep_until(&self, deadline: Instant) -> bool {
        let (m, cv) = &self.wake;
        let mut g = m.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Publishes the model at the local clock's now (caller holds the lock).
    fn publish(&self, est: &Estimator) {
        let now = self.clock.now_ns();
        self.publisher.publish(&est.snapshot(now));
        self.shm_writes.fetch_add(1, Ordering::Relaxed);
        if let Some(gm) = est.grandmaster() {
            let q = (gm.identity, gm.clock_class, gm.clock_accuracy);
            let mut w = self
                .gm_written
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *w != Some(q) {
                self.publisher.set_grandmaster(q.0, q.1, q.2);
                *w = Some(q);
            }
        }
    }

    /// The daemon's status now.
    fn status(&self) -> DaemonStatus {
        let est = self.estimator();
        let now = self.clock.now_ns();
        let gm = est.grandmaster();
        let last = est.last();
        let snap = est.snapshot(now);
        DaemonStatus {
            state: est.state(now),
            gm_identity: gm.map(|g| ClockIdentity::from_u64(g.identity).to_string()),
            gm_clock_class: gm.map(|g| g.clock_class),
            gm_clock_accuracy: gm.map(|g| g.clock_accuracy),
            server: self.config.transport.server.to_string(),
            last_offset_ns: last.map(|(m, _)| m.offset_ns),
            last_path_delay_ns: last.map(|(m, _)| (m.delay_ns / 2.0).round() as i64),
            recent_offsets_ns: est.recent_offsets_ns(),
            error_bound_ns: snap.error_bound_ns,
            holdover_ns_per_s: if snap.flags == 0 {
                0.0
            } else {
                snap.holdover_ns_per_s
            },
            exchanges: est.counters(),
        }
    }

    fn estimator(&self) -> std::sync::MutexGuard<'_, Estimator> {
        self.estimator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts daemons.
#[derive(Debug)]
pub struct Daemon;

impl Daemon {
    /// Opens the transport described by `config` and starts the exchange and
    /// publisher threads, modelling TAI against `clock` and publishing
    /// through `publisher` (whose clock id must be `clock.clock_id()`).
    ///
    /// # Errors
    /// Invalid configuration, sockets that cannot be bound (e.g. 319/320
    /// without privileges or in use), threads that cannot be started.
    pub fn spawn(
        mut config: Config,
        clock: Arc<dyn LocalClock>,
        publisher: Publisher,
    ) -> Result<DaemonHandle, DaemonError> {
        config.validate()?;
        config.estimator.interval_ns =
            i64::try_from(config.interval.as_nanos()).unwrap_or(NS_PER_S);
        config.transport.log_interval = config.log_interval();
        let transport: Box<dyn Transport> = match config.mode {
            Mode::Sptp => Box::new(SptpClient::open(config.transport.clone(), clock.clone())?),
            Mode::Unicast => Box::new(UnicastClient::open(
                config.transport.clone(),
                clock.clone(),
            )?),
        };
        let shared = Arc::new(Shared {
            estimator: Mutex::new(Estimator::new(config.estimator)),
            counters: transport.counters(),
            config,
            clock,
            publisher,
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            gm_written: Mutex::new(None),
            shm_writes: AtomicU64::new(0),
        });
        shared.publish(&shared.estimator());
        let s = shared.clone();
        let exchange = std::thread::Builder::new()
            .name("fbclockd-exchange".into())
            .spawn(move || exchange_loop(&s, transport))
            .map_err(DaemonError::Thread)?;
        let s = shared.clone();
        let publisher = std::thread::Builder::new()
            .name("fbclockd-publish".into())
            .spawn(move || publish_loop(&s));
        let publisher = match publisher {
            Ok(t) => t,
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                let _ = exchange.join();
                return Err(DaemonError::Thread(e));
            }
        };
        Ok(DaemonHandle {
            shared,
            threads: vec![exchange, publisher],
        })
    }
}

fn exchange_loop(s: &Shared, mut transport: Box<dyn Transport>) {
    let c = &s.config;
    let server = c.transport.server;
    let paced = transport.server_paced();
    let timeout = if paced {
        // Wait for the next Sync (one interval), with slack for a lost one.
        2 * c.interval + c.transport.response_timeout
    } else {
        c.exchange_timeout.min(c.interval)
    };
    let mut next = Instant::now();
    let mut last_state = SyncState::Unsynced;
    let mut last_gm = None;
    while !s.stop.load(Ordering::Relaxed) {
        let outcome = transport.exchange(timeout, &s.stop);
        if outcome == Outcome::Lost(Loss::Stopped) {
            break;
        }
        if let Outcome::Complete(x) = &outcome
            && last_gm != Some(x.gm)
        {
            let g = x.gm;
            tracing::info!(
                identity = %ClockIdentity::from_u64(g.identity),
                class = g.clock_class,
                accuracy = format_args!("{:#04x}", g.clock_accuracy),
                timescale = if g.ptp_timescale { "PTP" } else { "ARB" },
                utc_offset_s = g.utc_offset_s,
                utc_offset_valid = g.utc_offset_valid,
                leap61 = g.leap61,
                leap59 = g.leap59,
                "grandmaster announce"
            );
            last_gm = Some(g);
        }
        let mut est = s.estimator();
        match outcome {
            Outcome::Complete(x) => match est.feed(&x) {
                Verdict::Accepted {
                    measurement: m,
                    bound_ns,
                    reset,
                } => {
                    if reset {
                        tracing::warn!(%server, offset_ns = m.offset_ns, "exchange contradicts the model (new grandmaster, step or drift beyond the assumption): model restarted");
                    }
                    tracing::debug!(
                        offset_ns = m.offset_ns,
                        delay_ns = m.delay_ns,
                        bound_ns,
                        "exchange accepted"
                    );
                }
                Verdict::Rejected(r) => tracing::debug!(reason = %r, "exchange rejected"),
            },
            Outcome::Lost(l) => {
                est.lost();
                tracing::debug!(%server, reason = %l, "exchange lost");
            }
        }
        s.publish(&est);
        let state = est.state(s.clock.now_ns());
        if state != last_state {
            match state {
                SyncState::Synced => {
                    tracing::info!(%server, bound_ns = ?est.last().map(|l| l.1), "synced")
                }
                SyncState::Holdover => {
                    tracing::warn!(%server, "holdover: no exchange accepted for two intervals")
                }
                SyncState::Unsynced => tracing::warn!(%server, "unsynced"),
            }
            last_state = state;
        }
        drop(est);
        if !paced {
            next += c.interval;
            let now = Instant::now();
            if next < now {
                next = now;
            }
            if s.sleep_until(next) {
                break;
            }
        }
    }
}

fn publish_loop(s: &Shared) {
    let mut next = Instant::now();
    loop {
        next += s.config.publish_interval;
        let now = Instant::now();
        if next < now {
            next = now + s.config.publish_interval;
        }
        if s.sleep_until(next) {
            return;
        }
        let est = s.estimator();
        s.publish(&est);
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct DaemonHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl DaemonHandle {
    /// An in-process reader of the published record (`FbClock::now` reads
    /// the clock id in the header; with a simulated clock use `FbClock::at`).
    #[must_use]
    pub fn client(&self) -> FbClock {
        self.shared.publisher.client()
    }

    /// The local clock the model is against.
    #[must_use]
    pub fn clock(&self) -> Arc<dyn LocalClock> {
        self.shared.clock.clone()
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Packet-level counters of the transport.
    #[must_use]
    pub fn transport_stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }

    /// The daemon's Prometheus metrics, for scrapes from any thread.
    #[must_use]
    pub fn metrics(&self) -> DaemonMetrics {
        DaemonMetrics {
            shared: self.shared.clone(),
        }
    }

    /// The daemon's status for readers on other threads (the gRPC API).
    #[must_use]
    pub fn status_source(&self) -> Arc<dyn StatusSource> {
        Arc::new(SharedStatus(self.shared.clone()))
    }

    /// How often the model restarted (new grandmaster, contradiction).
    #[must_use]
    pub fn model_resets(&self) -> u64 {
        self.shared.estimator().resets()
    }

    /// Stops both threads (the exchange in flight finishes or times out
    /// first) and waits for them. The record stays as last published: its
    /// bound keeps growing for readers, who see `Stale` 10 s later.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let _g = self
                .shared
                .wake
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.1.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl StatusSource for DaemonHandle {
    fn status(&self) -> DaemonStatus {
        self.shared.status()
    }
}

/// [`DaemonHandle::status_source`]: the status of a daemon that may stop.
struct SharedStatus(Arc<Shared>);

impl StatusSource for SharedStatus {
    fn status(&self) -> DaemonStatus {
        self.0.status()
    }
}

/// The daemon's Prometheus metrics (`timecard_fbclockd_*`): a cheap handle
/// for scrapes from any thread, from [`DaemonHandle::metrics`].
#[derive(Clone, Debug)]
pub struct DaemonMetrics {
    shared: Arc<Shared>,
}

impl DaemonMetrics {
    /// Writes fbclockd's families into `m` (under fbclockd's names, whoever
    /// else `m` is for).
    pub fn write(&self, m: &mut Exposition) {
        let s = &self.shared;
        let st = s.status();
        let t = s.counters.snapshot();
        let seconds = |ns: i64| ns as f64 / 1e9;
        m.daemon("fbclockd", env!("CARGO_PKG_VERSION"));
        let mut f = m.gauge(
            "sync_state",
            "1 for the daemon's sync state (unsynced, synced, holdover), 0 for the others.",
        );
        for (state, name) in [
            (SyncState::Unsynced, "unsynced"),
            (SyncState::Synced, "synced"),
            (SyncState::Holdover, "holdover"),
        ] {
            f.sample(&[("state", name)], st.state == state);
        }
        let mut f = m.gauge(
            "window_of_uncertainty_seconds",
            "Width of the published TrueTime interval (latest - earliest) now; none while unsynced.",
        );
        if st.state != SyncState::Unsynced {
            f.value(2.0 * f64::from(st.error_bound_ns) / 1e9);
        }
        let mut f = m.gauge(
            "offset_seconds",
            "Last measured offset of the local clock from TAI (local - TAI).",
        );
        if let Some(o) = st.last_offset_ns {
            f.value(seconds(o));
        }
        let mut f = m.gauge("path_delay_seconds", "Last measured mean path delay.");
        if let Some(d) = st.last_path_delay_ns {
            f.value(seconds(d));
        }
        let mut f = m.gauge(
            "grandmaster_clock_class",
            "The grandmaster's clockClass from its Announce.",
        );
        if let Some(c) = st.gm_clock_class {
            f.value(c);
        }
        let e = st.exchanges;
        m.counter("exchange_attempts_total", "PTP exchanges started.")
            .value(e.attempted);
        m.counter(
            "exchanges_total",
            "PTP exchanges finished: accepted into the model, rejected by a filter, lost (no answer in time).",
        )
        .sample(&[("result", "accepted")], e.accepted)
        .sample(&[("result", "rejected")], e.rejected)
        .sample(&[("result", "lost")], e.lost);
        m.counter(
            "model_resets_total",
            "Times the model restarted (new grandmaster, contradiction).",
        )
        .value(s.estimator().resets());
        m.counter("shm_writes_total", "Records written to shared memory.")
            .value(s.shm_writes.load(Ordering::Relaxed));
        for (name, help, v) in [
            ("received_packets_total", "Datagrams received.", t.received),
            (
                "malformed_packets_total",
                "Malformed datagrams.",
                t.malformed,
            ),
            (
                "unmatched_packets_total",
                "Messages matching no pending exchange.",
                t.unmatched,
            ),
            (
                "tx_timestamps_missing_total",
                "Missing TX timestamps.",
                t.tx_timestamp_missing,
            ),
            ("send_errors_total", "Failed sends.", t.send_errors),
            ("unicast_grants_total", "Unicast grants received.", t.grants),
            (
                "unicast_denials_total",
                "Unicast denials received.",
                t.denials,
            ),
            (
                "unicast_cancels_total",
                "Unicast cancels received.",
                t.cancels,
            ),
        ] {
            m.counter(name, help).value(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c = Config::new(Mode::Sptp, "127.0.0.1:319".parse().unwrap());
        assert!(c.validate().is_ok());
        assert_eq!(c.transport.port_identity.port_number, 0x100);
        assert_eq!(c.log_interval(), 0);
        let mut u = Config::new(Mode::Unicast, "10.0.0.1:319".parse().unwrap());
        assert_eq!(u.transport.local_event_port, 319);
        assert_eq!(u.transport.local_general_port, Some(320));
        u.interval = Duration::from_millis(62);
        assert!(u.validate().is_err());
        u.interval = MIN_INTERVAL;
        assert!(u.validate().is_ok());
        assert_eq!(u.log_interval(), -4);
        u.interval = Duration::from_millis(300);
        assert_eq!(u.log_interval(), -2);
        u.transport.local_general_port = None;
        assert!(u.validate().is_err());
        let id = default_clock_identity();
        assert_eq!(id.0[3..5], [0xFF, 0xFE]);
        assert_eq!(id, default_clock_identity());
    }
}
