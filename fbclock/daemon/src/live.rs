//! Live linearizability harness: the simulated checks of [`crate::harness`],
//! run over real sockets in real time.
//!
//! One in-process `ptp-server` on 127.0.0.1 (ephemeral ports) serves a
//! simulated Time Card in real-time mode; several in-process daemons
//! ([`Daemon::spawn`], SPTP, in-memory publishers), each against its own
//! [`DriftingClock`], follow it. One reader thread per host loops as fast as
//! it can: read the host clock, ask the daemon's client for the interval at
//! that instant and check it against the simulator's truth TAI, bracketed by
//! two reads of the simulator's [`TimeBase`] (truth is a fixed function of
//! `CLOCK_MONOTONIC` in real-time mode, so no lock is taken). Every ~10 ms
//! each host also runs a commit-wait transaction; transactions of all hosts
//! are checked for external consistency.
//!
//! The card side (driver, [`ptp_server::CardSource`]) is built by the caller
//! (this crate does not depend on the driver), which hands [`run`] the
//! [`Sim`] and the resulting [`TimeSource`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ptp_server::config::Config as ServerConfig;
use ptp_server::{Server, TimeSource};
use timecard_sim::timebase::TimeBase;
use timecard_sim::{Fault, Sim};

use crate::status::{StatusSource, SyncState};
use crate::{Config, Daemon, DaemonHandle, DriftingClock, LocalClock, Mode};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const NS_PER_S: f64 = 1e9;
/// One successful read in this many has its WOU kept for percentiles.
const WOU_SAMPLE_EVERY: u64 = 16;
/// Commit-wait transactions per host, period.
const TX_PERIOD_NS: i64 = 10_000_000;

/// A fault injected during a live run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LiveFault {
    /// No fault.
    None,
    /// GNSS signals lost at `at_s` for `for_s` seconds (card holdover; the
    /// server announces clock class 7).
    GnssLoss {
        /// Seconds into the run.
        at_s: f64,
        /// Duration of the loss.
        for_s: f64,
    },
    /// The server stops at `at_s` and a new one starts on the same ports
    /// `down_s` later.
    ServerRestart {
        /// Seconds into the run.
        at_s: f64,
        /// Outage duration.
        down_s: f64,
    },
}

impl LiveFault {
    /// The fault's window `[start, end)` in seconds into the run, if any.
    #[must_use]
    pub fn window(&self) -> Option<(f64, f64)> {
        match *self {
            Self::None => None,
            Self::GnssLoss { at_s, for_s } => Some((at_s, at_s + for_s)),
            Self::ServerRestart { at_s, down_s } => Some((at_s, at_s + down_s)),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Simulated hosts (daemon + drifting clock + reader thread each).
    pub hosts: usize,
    /// Length of the checked run, after all hosts synced.
    pub seconds: f64,
    /// The fault to inject.
    pub fault: LiveFault,
    /// How long the hosts may take to sync (the card locks first, ~7 s).
    pub sync_timeout: Duration,
    /// Frequency step applied to host 0 half way through (fractional;
    /// within the daemon's default max drift of 20 ppm).
    pub frequency_step: f64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            hosts: 6,
            seconds: 25.0,
            fault: LiveFault::None,
            sync_timeout: Duration::from_secs(45),
            frequency_step: 15e-6,
        }
    }
}

/// WOU distribution of one set of reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WouStats {
    /// Successful reads.
    pub reads: u64,
    /// Median WOU (of the sampled reads), ns.
    pub p50_ns: i64,
    /// 99th percentile, ns.
    pub p99_ns: i64,
    /// Maximum over all reads, ns.
    pub max_ns: i64,
}

impl fmt::Display for WouStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reads, WOU p50 {} / p99 {} / max {} ns",
            self.reads, self.p50_ns, self.p99_ns, self.max_ns
        )
    }
}

/// Outcome of a live run.
#[derive(Clone, Debug)]
pub struct LiveReport {
    /// The fault injected.
    pub fault: LiveFault,
    /// Hosts.
    pub hosts: usize,
    /// Time from start to all hosts synced.
    pub sync_time: Duration,
    /// Length of the checked run.
    pub run_time: Duration,
    /// Reads checked against truth (successful reads).
    pub checks: u64,
    /// Reads whose interval did not contain truth.
    pub violations: u64,
    /// Largest distance of truth outside an interval, ns (0 if none).
    pub worst_violation_ns: i64,
    /// Where the worst violation happened: seconds of truth into the run,
    /// the host, and the interval's WOU, ns.
    pub worst_violation_at: Option<(f64, usize, i64)>,
    /// Violations before, during and after the fault.
    pub phase_violations: [u64; 3],
    /// First and last violation, seconds of truth into the run.
    pub violation_span: Option<(f64, f64)>,
    /// Reads answered with an error (no data, stale, WOU too large).
    pub unavailable: u64,
    /// Completed commit-wait transactions.
    pub transactions: u64,
    /// Transactions abandoned (the run ended while waiting).
    pub aborted_transactions: u64,
    /// Commit-wait violations: truth at commit not after the timestamp, or
    /// a transaction committed (in truth) before another started without a
    /// smaller timestamp.
    pub order_violations: u64,
    /// Longest commit wait, ns of truth.
    pub max_commit_wait_ns: i64,
    /// All successful reads.
    pub wou: WouStats,
    /// Before, during and after the fault (everything is "before" without one).
    pub phases: [WouStats; 3],
    /// Model resets over all daemons.
    pub model_resets: u64,
}

impl LiveReport {
    /// Checked reads per second per host.
    #[must_use]
    pub fn rate_per_host(&self) -> f64 {
        self.checks as f64 / self.run_time.as_secs_f64() / self.hosts.max(1) as f64
    }
}

impl fmt::Display for LiveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "live {:?}: {} hosts, synced after {:.1} s, run {:.1} s",
            self.fault,
            self.hosts,
            self.sync_time.as_secs_f64(),
            self.run_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "  checks {} ({:.0}/s/host), violations {} (worst {} ns), unavailable {}",
            self.checks,
            self.rate_per_host(),
            self.violations,
            self.worst_violation_ns,
            self.unavailable
        )?;
        if let Some((at, host, wou)) = self.worst_violation_at {
            writeln!(
                f,
                "  worst violation at {at:.3} s on host {host} (WOU {wou} ns); by phase {:?}; span {:.3?}",
                self.phase_violations, self.violation_span
            )?;
        }
        writeln!(
            f,
            "  transactions {} (aborted {}), order violations {}, max commit wait {} ns, model resets {}",
            self.transactions,
            self.aborted_transactions,
            self.order_violations,
            self.max_commit_wait_ns,
            self.model_resets
        )?;
        write!(f, "  overall: {}", self.wou)?;
        for (name, p) in ["before", "during", "after"].iter().zip(&self.phases) {
            if p.reads > 0 {
                write!(f, "\n  {name}: {p}")?;
            }
        }
        Ok(())
    }
}

fn server_config(event_port: u16, general_port: u16) -> ServerConfig {
    ServerConfig {
        ip: LOCALHOST,
        event_port,
        general_port,
        monitoring: None,
        quality_window: 3,
        workers: 2,
        recv_workers: 1,
        ..ServerConfig::default()
    }
}

/// Per-phase accumulator of one reader.
#[derive(Default)]
struct PhaseAcc {
    reads: u64,
    violations: u64,
    max: i64,
    samples: Vec<i64>,
}

/// One commit-wait transaction.
#[derive(Clone, Copy)]
struct Tx {
    s: i64,
    truth_start: i64,
    truth_commit: i64,
}

struct Reader {
    clock: DriftingClock,
    client: fbclock::FbClock,
    tb: TimeBase,
    /// Truth at which the fault window starts and ends.
    phase_edges: (i64, i64),
    checks: u64,
    worst: i64,
    /// Truth and WOU of the worst violation.
    worst_at: (i64, i64),
    /// Truth of the first and last violation.
    violation_span: Option<(i64, i64)>,
    unavailable: u64,
    phases: [PhaseAcc; 3],
    txs: Vec<Tx>,
    aborted: u64,
    commit_violations: u64,
    max_commit_wait: i64,
}

impl Reader {
    fn truth(&self) -> i64 {
        self.tb.now().expect("real-time simulation")
    }

    /// One checked read: the interval and truth before / after.
    fn read(&mut self) -> Option<(fbclock::TrueTime, i64, i64)> {
        let before = self.truth();
        let local = self.clock.now_ns();
        let after = self.truth();
        let Ok(tt) = self.client.at(local) else {
            self.unavailable += 1;
            return None;
        };
        self.checks += 1;
        let phase = if before < self.phase_edges.0 {
            0
        } else if before < self.phase_edges.1 {
            1
        } else {
            2
        };
        let p = &mut self.phases[phase];
        p.reads += 1;
        let w = tt.wou_ns();
        let outside = (before - tt.latest_ns).max(tt.earliest_ns - after);
        if outside > 0 {
            p.violations += 1;
            let (first, _) = self.violation_span.unwrap_or((before, before));
            self.violation_span = Some((first, before));
            if outside > self.worst {
                self.worst = outside;
                self.worst_at = (before, w);
            }
        }
        p.max = p.max.max(w);
        if self.checks.is_multiple_of(WOU_SAMPLE_EVERY) {
            p.samples.push(w);
        }
        Some((tt, before, after))
    }

    fn commit_wait(&mut self, stop: &AtomicBool) {
        let Some((tt, truth_start, _)) = self.read() else {
            return;
        };
        let s = tt.latest_ns;
        loop {
            if stop.load(Ordering::Relaxed) {
                self.aborted += 1;
                return;
            }
            if let Some((tt, _, after)) = self.read()
                && tt.earliest_ns > s
            {
                if after <= s {
                    self.commit_violations += 1;
                }
                self.max_commit_wait = self.max_commit_wait.max(after - truth_start);
                self.txs.push(Tx {
                    s,
                    truth_start,
                    truth_commit: after,
                });
                return;
            }
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut next_tx = self.truth();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let r = self.read();
            if n.is_multiple_of(64) {
                let now = r.map_or_else(|| self.truth(), |(_, b, _)| b);
                if now >= next_tx {
                    next_tx = now + TX_PERIOD_NS;
                    self.commit_wait(stop);
                }
            }
        }
    }
}

/// Pairs (A, B) with A committed (in truth) before B started but
/// `s_A >= s_B`.
fn order_violations(txs: &[Tx]) -> u64 {
    let mut by_commit: Vec<Tx> = txs.to_vec();
    by_commit.sort_unstable_by_key(|t| t.truth_commit);
    let mut by_start: Vec<Tx> = txs.to_vec();
    by_start.sort_unstable_by_key(|t| t.truth_start);
    let mut i = 0;
    let mut max_s = i64::MIN;
    let mut bad = 0;
    for b in &by_start {
        while i < by_commit.len() && by_commit[i].truth_commit < b.truth_start {
            max_s = max_s.max(by_commit[i].s);
            i += 1;
        }
        if max_s >= b.s {
            bad += 1;
        }
    }
    bad
}

fn stats(reads: u64, max: i64, samples: &mut [i64]) -> WouStats {
    samples.sort_unstable();
    let pick = |q: f64| {
        if samples.is_empty() {
            0
        } else {
            samples[((samples.len() - 1) as f64 * q) as usize]
        }
    };
    WouStats {
        reads,
        p50_ns: pick(0.5),
        p99_ns: pick(0.99),
        max_ns: max,
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Runs the live harness against `sim` (a real-time simulated card) served
/// through `source` (normally a [`ptp_server::CardSource`] over that card).
///
/// # Errors
/// The simulation is not in real-time mode, the server or a daemon does not
/// start, or the hosts do not sync within [`LiveConfig::sync_timeout`].
pub fn run(cfg: &LiveConfig, sim: &Sim, source: Arc<dyn TimeSource>) -> anyhow::Result<LiveReport> {
    let t0 = Instant::now();
    let tb = sim.with(|c, _| c.timebase);
    if tb.now().is_none() {
        bail!("the simulation must run in real time");
    }
    let server = Server::start(&server_config(0, 0), source.clone()).context("server")?;
    let (event_port, general_port) = (server.event_addr().port(), server.general_addr().port());
    let mut server = Some(server);
    let server_addr = SocketAddr::new(LOCALHOST, event_port);

    let n = cfg.hosts.max(1);
    let mut hosts: Vec<(DriftingClock, DaemonHandle)> = Vec::with_capacity(n);
    for i in 0..n {
        // Frequencies spread over ±40 ppm, phases over ±5 s.
        let frac = if n == 1 {
            0.5
        } else {
            i as f64 / (n - 1) as f64
        };
        let clock = DriftingClock::new(-40e-6 + 80e-6 * frac, (-5e9 + 10e9 * frac) as i64);
        let mut c = Config::new(Mode::Sptp, server_addr);
        c.transport.local_ip = Some(LOCALHOST);
        c.transport.port_identity.port_number = 0x100 + i as u16;
        c.interval = Duration::from_millis(250);
        let publisher = fbclock::Publisher::in_memory(clock.clock_id());
        let h = Daemon::spawn(c, Arc::new(clock.clone()), publisher).context("daemon")?;
        hosts.push((clock, h));
    }

    while !hosts
        .iter()
        .all(|(c, h)| h.status().state == SyncState::Synced && h.client().at(c.now_ns()).is_ok())
    {
        if t0.elapsed() > cfg.sync_timeout {
            let st: Vec<_> = hosts.iter().map(|(_, h)| h.status().state).collect();
            for (_, h) in hosts {
                h.stop();
            }
            if let Some(s) = server.take() {
                s.shutdown();
            }
            bail!("not synced after {:?}: {st:?}", cfg.sync_timeout);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let sync_time = t0.elapsed();

    let start = Instant::now();
    let truth_start = tb.now().expect("real time");
    let edges = cfg.fault.window().map_or((i64::MAX, i64::MAX), |(a, b)| {
        (
            truth_start + (a * NS_PER_S) as i64,
            truth_start + (b * NS_PER_S) as i64,
        )
    });
    let at = |s: f64| start + Duration::from_secs_f64(s.max(0.0));
    let stop = AtomicBool::new(false);

    let readers: Vec<Reader> = std::thread::scope(|scope| {
        let workers: Vec<_> = hosts
            .iter()
            .map(|(clock, h)| {
                let mut r = Reader {
                    clock: clock.clone(),
                    client: h.client(),
                    tb,
                    phase_edges: edges,
                    checks: 0,
                    worst: 0,
                    worst_at: (0, 0),
                    violation_span: None,
                    unavailable: 0,
                    phases: Default::default(),
                    txs: Vec::new(),
                    aborted: 0,
                    commit_violations: 0,
                    max_commit_wait: 0,
                };
                let stop = &stop;
                scope.spawn(move || {
                    r.run(stop);
                    r
                })
            })
            .collect();

        // The controller: frequency step, fault, end.
        let mut events: Vec<(f64, u8)> = vec![(cfg.seconds / 2.0, 0)];
        if let Some((a, b)) = cfg.fault.window() {
            events.push((a, 1));
            events.push((b, 2));
        }
        events.sort_by(|x, y| x.0.total_cmp(&y.0));
        for (t, what) in events {
            sleep_until(at(t.min(cfg.seconds)));
            match (what, cfg.fault) {
                (0, _) => {
                    let h = hosts[0].0.handle();
                    h.set_frequency_offset(h.frequency_offset() + cfg.frequency_step);
                }
                (1, LiveFault::GnssLoss { .. }) => sim.inject(&Fault::GnssLoss),
                (2, LiveFault::GnssLoss { .. }) => sim.inject(&Fault::GnssRestore),
                (1, LiveFault::ServerRestart { .. }) => {
                    if let Some(s) = server.take() {
                        s.shutdown();
                    }
                }
                (2, LiveFault::ServerRestart { .. }) => {
                    // The ports were just released; retry briefly.
                    for attempt in 0.. {
                        match Server::start(
                            &server_config(event_port, general_port),
                            source.clone(),
                        ) {
                            Ok(s) => {
                                server = Some(s);
                                break;
                            }
                            Err(e) if attempt < 50 => {
                                tracing::warn!("restart: {e}");
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(e) => panic!("server restart failed: {e}"),
                        }
                    }
                }
                _ => {}
            }
        }
        sleep_until(at(cfg.seconds));
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().expect("reader thread"))
            .collect()
    });
    let run_time = start.elapsed();

    let model_resets = hosts.iter().map(|(_, h)| h.model_resets()).sum();
    for (_, h) in hosts {
        h.stop();
    }
    if let Some(s) = server.take() {
        s.shutdown();
    }

    let mut all = PhaseAcc::default();
    let mut phases: [PhaseAcc; 3] = Default::default();
    let mut txs = Vec::new();
    let mut report = LiveReport {
        fault: cfg.fault,
        hosts: n,
        sync_time,
        run_time,
        checks: 0,
        violations: 0,
        worst_violation_ns: 0,
        worst_violation_at: None,
        phase_violations: [0; 3],
        violation_span: None,
        unavailable: 0,
        transactions: 0,
        aborted_transactions: 0,
        order_violations: 0,
        max_commit_wait_ns: 0,
        wou: WouStats::default(),
        phases: Default::default(),
        model_resets,
    };
    let secs = |t: i64| (t - truth_start) as f64 / NS_PER_S;
    for (host, r) in readers.into_iter().enumerate() {
        report.checks += r.checks;
        if r.worst > report.worst_violation_ns {
            report.worst_violation_ns = r.worst;
            let (truth, wou) = r.worst_at;
            report.worst_violation_at = Some((secs(truth), host, wou));
        }
        if let Some((a, b)) = r.violation_span {
            let (lo, hi) = report.violation_span.unwrap_or((f64::MAX, f64::MIN));
            report.violation_span = Some((lo.min(secs(a)), hi.max(secs(b))));
        }
        report.unavailable += r.unavailable;
        report.aborted_transactions += r.aborted;
        report.order_violations += r.commit_violations;
        report.max_commit_wait_ns = report.max_commit_wait_ns.max(r.max_commit_wait);
        txs.extend(r.txs);
        for ((acc, p), v) in phases
            .iter_mut()
            .zip(r.phases)
            .zip(&mut report.phase_violations)
        {
            *v += p.violations;
            for a in [&mut all, acc] {
                a.reads += p.reads;
                a.max = a.max.max(p.max);
                a.samples.extend_from_slice(&p.samples);
            }
        }
    }
    report.violations = report.phase_violations.iter().sum();
    report.transactions = txs.len() as u64;
    report.order_violations += order_violations(&txs);
    report.wou = stats(all.reads, all.max, &mut all.samples);
    for (out, mut p) in report.phases.iter_mut().zip(phases) {
        *out = stats(p.reads, p.max, &mut p.samples);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_check_finds_inversions() {
        let tx = |s, a, b| Tx {
            s,
            truth_start: a,
            truth_commit: b,
        };
        // B starts after A committed with a larger timestamp: fine.
        assert_eq!(order_violations(&[tx(10, 0, 20), tx(30, 25, 40)]), 0);
        // Overlapping: no constraint.
        assert_eq!(order_violations(&[tx(10, 0, 20), tx(5, 15, 40)]), 0);
        // B starts after A committed but has a smaller timestamp.
        assert_eq!(order_violations(&[tx(10, 0, 20), tx(9, 25, 40)]), 1);
    }
}
