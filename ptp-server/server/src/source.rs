//! The card as the server's time source.
//!
//! [`CardSource`] runs one thread that owns the card for the server: ten
//! times a second it reads the card's time with its host bracket and
//! refreshes the [`TimeMap`] (host timestamp → card time); once a second it
//! runs the driver's [`Supervisor`] (GNSS loss, UTC offset, time jumps) and
//! feeds the card's status into the c4u-style [`QualityEstimator`]. A card in
//! holdover is therefore served as holdover time with class 7, live. Given a
//! [`ChronyFeed`], the same thread also hands chronyd one sample a second
//! from those readings (the card's owner feeds the host clock: a card behind
//! `vfio-pci` cannot be opened by a second process).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ptp_proto::Flags;
use timecard_driver::card::CardError;
use timecard_driver::chrony::{ChronyFeed, Fed, Skip};
use timecard_driver::supervisor::{Event, Supervisor, SupervisorState};
use timecard_driver::{CardStatus, HostClock, TimeCard, TimeReading};

use crate::quality::{CardSample, QualityConfig, QualityEstimator, Served};
use crate::timemap::{Fitter, TimeMap};

/// What the send and receive paths need from a clock.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// Card (TAI) time for a kernel timestamp in host `CLOCK_REALTIME` ns.
    fn card_time(&self, host_ns: i64) -> Option<i64>;
    /// The clock quality to announce.
    fn served(&self) -> Served;
    /// Host `CLOCK_REALTIME` now, ns.
    fn host_now_ns(&self) -> i64;
}

/// Packs [`Served`] into one atomic word.
fn pack(s: Served) -> u64 {
    u64::from(s.clock_class)
        | u64::from(s.clock_accuracy) << 8
        | u64::from(s.utc_offset_s as u16) << 16
        | u64::from(s.flags.0) << 32
        | u64::from(s.offset_scaled_log_variance) << 48
}

fn unpack(v: u64) -> Served {
    Served {
        clock_class: v as u8,
        clock_accuracy: (v >> 8) as u8,
        utc_offset_s: (v >> 16) as u16 as i16,
        flags: Flags((v >> 32) as u16),
        offset_scaled_log_variance: (v >> 48) as u16,
    }
}

/// Supervisor state, for status displays.
#[derive(Clone, Debug, Default)]
pub struct CardReport {
    /// The supervisor's state.
    pub supervisor: SupervisorState,
    /// Last card error, if the card could not be read.
    pub error: Option<String>,
}

/// Supervisor events kept for [`CardSource::take_events`] when nobody collects them.
const MAX_PENDING_EVENTS: usize = 256;

/// The card, sampled for the server.
pub struct CardSource {
    map: TimeMap,
    served: AtomicU64,
    host: Arc<dyn HostClock>,
    report: Mutex<CardReport>,
    events: Mutex<Vec<Event>>,
    stop: AtomicBool,
}

impl fmt::Debug for CardSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardSource")
            .field("served", &self.served())
            .finish_non_exhaustive()
    }
}

impl TimeSource for CardSource {
    fn card_time(&self, host_ns: i64) -> Option<i64> {
        self.map.card_time(host_ns)
    }

    fn served(&self) -> Served {
        unpack(self.served.load(Ordering::Relaxed))
    }

    fn host_now_ns(&self) -> i64 {
        self.host.realtime_ns()
    }
}

/// Handle of the sampling thread; stops it when dropped.
#[derive(Debug)]
pub struct SourceThread {
    source: Arc<CardSource>,
    thread: Option<JoinHandle<()>>,
}

impl SourceThread {
    /// The time source.
    #[must_use]
    pub fn source(&self) -> Arc<CardSource> {
        self.source.clone()
    }
}

impl Drop for SourceThread {
    fn drop(&mut self) {
        self.source.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Samples per second of the card's time.
const SAMPLES_PER_S: u32 = 10;

impl CardSource {
    /// Starts sampling `card`. If `supervisor` is given, this thread runs it
    /// (the only supervisor of the card in this process).
    #[must_use]
    pub fn spawn(
        card: Arc<TimeCard>,
        supervisor: Option<Supervisor>,
        quality: QualityConfig,
    ) -> SourceThread {
        Self::spawn_feeding(card, supervisor, quality, None)
    }

    /// [`CardSource::spawn`], also feeding chronyd once a second when
    /// `chrony` is given (what it does is logged whenever it changes).
    #[must_use]
    pub fn spawn_feeding(
        card: Arc<TimeCard>,
        supervisor: Option<Supervisor>,
        quality: QualityConfig,
        chrony: Option<ChronyFeed>,
    ) -> SourceThread {
        let source = Arc::new(CardSource {
            map: TimeMap::new(),
            served: AtomicU64::new(pack(Served::default())),
            host: card.host().clone(),
            report: Mutex::new(CardReport::default()),
            events: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = source.clone();
        let thread = std::thread::Builder::new()
            .name("ptp-card".into())
            .spawn(move || s.run(&card, supervisor, quality, chrony))
            .expect("spawn card sampler");
        SourceThread {
            source,
            thread: Some(thread),
        }
    }

    /// Supervisor state and the last card error.
    #[must_use]
    pub fn report(&self) -> CardReport {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Supervisor events since the last call (oldest first; beyond a bound the
    /// oldest are dropped if nobody collects them).
    #[must_use]
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn run(
        &self,
        card: &TimeCard,
        mut supervisor: Option<Supervisor>,
        quality: QualityConfig,
        mut chrony: Option<ChronyFeed>,
    ) {
        let mut fitter = Fitter::new();
        let mut estimator = QualityEstimator::new(quality);
        let mut tick = 0u32;
        let mut chrony_state = String::new();
        while !self.stop.load(Ordering::Relaxed) {
            let read = best_of_three(card);
            match &read {
                Ok((mid, card_ns, half_width)) => {
                    self.map.publish(fitter.add(*mid, *card_ns, *half_width));
                }
                Err(CardError::TimeJump { .. }) => fitter.reset(),
                Err(_) => {
                    fitter.reset();
                    self.map.invalidate();
                }
            }
            if tick.is_multiple_of(SAMPLES_PER_S) {
                let (mut sample, status, report, events) = self.observe(card, supervisor.as_mut());
                if let Some(feed) = chrony.as_mut() {
                    let status = status.map(|st| as_supervised(st, &report.supervisor));
                    feed_chrony(feed, &read, status.as_ref(), card, &mut chrony_state);
                }
                sample.timestamp_uncertainty_ns = fitter.uncertainty_ns() as f64;
                if !events.is_empty() {
                    let mut q = self
                        .events
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    q.extend(events);
                    let excess = q.len().saturating_sub(MAX_PENDING_EVENTS);
                    q.drain(..excess);
                }
                let served = estimator.push(sample);
                self.served.store(pack(served), Ordering::Relaxed);
                *self
                    .report
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = report;
            }
            tick = tick.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(u64::from(1000 / SAMPLES_PER_S)));
        }
    }

    fn observe(
        &self,
        card: &TimeCard,
        supervisor: Option<&mut Supervisor>,
    ) -> (CardSample, Option<CardStatus>, CardReport, Vec<Event>) {
        let mut report = CardReport::default();
        let mut events = Vec::new();
        let mut distrusted = false;
        let mut gnss_lost = false;
        if let Some(sup) = supervisor {
            match sup.tick(card) {
                Ok(e) => events = e,
                Err(e) => report.error = Some(e.to_string()),
            }
            report.supervisor = sup.state().clone();
            distrusted = report.supervisor.distrust.is_some();
            gnss_lost = report.supervisor.gnss_lost_since_ns.is_some();
        }
        let status = card.status();
        let sample = match &status {
            Ok(st) => CardSample {
                readable: true,
                in_sync: st.in_sync,
                holdover: st.in_holdover || distrusted || (gnss_lost && st.in_sync),
                servo_offset_ns: st.servo_offset_ns as f64,
                utc_offset_s: st.utc.utc_valid.then_some(i16::from(st.utc.offset_s)),
                seconds_to_leap: i64::from(st.seconds_to_leap),
                leap: if st.utc.leap_61 {
                    1
                } else if st.utc.leap_59 {
                    -1
                } else {
                    0
                },
                timestamp_uncertainty_ns: 0.0,
            },
            Err(e) => {
                report.error = Some(e.to_string());
                CardSample {
                    readable: false,
                    in_sync: false,
                    holdover: false,
                    servo_offset_ns: 0.0,
                    utc_offset_s: None,
                    seconds_to_leap: 0,
                    leap: 0,
                    timestamp_uncertainty_ns: 0.0,
                }
            }
        };
        (sample, status.ok(), report, events)
    }
}

/// The card's status as the supervisor judges it: its tick clears the PPS
/// error flag it reads, so a GNSS loss it saw is carried into `pps_lost`,
/// and time it distrusts (a spoofed GNSS jump) is not locked either: the
/// feed treats both as holdover, as the announced clockClass does.
fn as_supervised(mut status: CardStatus, supervisor: &SupervisorState) -> CardStatus {
    if supervisor.gnss_lost_since_ns.is_some() || supervisor.distrust.is_some() {
        status.pps_lost = true;
    }
    status
}

/// Offers chronyd this second's reading (the narrowest of the three, as a
/// bracket around its midpoint) and logs what the feed does when it changes.
fn feed_chrony(
    feed: &mut ChronyFeed,
    read: &Result<(i64, i64, i64), CardError>,
    status: Option<&CardStatus>,
    card: &TimeCard,
    last_state: &mut String,
) {
    let fed = match (read, status) {
        (Ok((mid, card_tai_ns, half_width)), Some(status)) => {
            let reading = TimeReading {
                card_tai_ns: *card_tai_ns,
                pre_ns: mid - half_width,
                post_ns: mid + half_width,
            };
            feed.offer(status, &reading, card.host().monotonic_ns())
        }
        (Err(e), _) => Fed::Skipped(Skip::Unreadable(e.to_string())),
        (Ok(_), None) => Fed::Skipped(Skip::Unreadable("status registers unreadable".into())),
    };
    let state = fed.state(feed.sock());
    if state != *last_state {
        let detail = fed.detail().unwrap_or_default();
        match fed {
            Fed::Sent { .. } => tracing::info!(sent = feed.sent(), "chrony: {state}"),
            _ => tracing::warn!(sent = feed.sent(), detail, "chrony: {state}"),
        }
        *last_state = state;
    }
}

/// The narrowest of three card reads: (host midpoint, card time, half the
/// bracket width — how far the latch can be from the midpoint).
fn best_of_three(card: &TimeCard) -> Result<(i64, i64, i64), CardError> {
    let mut best: Option<(i64, i64, i64)> = None;
    for _ in 0..3 {
        let r = card.read_time()?;
        let width = (r.post_ns - r.pre_ns).max(0);
        if best.is_none_or(|(w, _, _)| width < w) {
            best = Some((width, r.pre_ns + width / 2, r.card_tai_ns));
        }
    }
    let (w, mid, c) = best.expect("three reads");
    Ok((mid, c, (w + 1) / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gnss_loss_the_supervisor_saw_is_not_a_lock() {
        let card = timecard_driver::device::open_sim(
            timecard_sim::Sim::new(&timecard_sim::SimConfig::default()).unwrap(),
        )
        .unwrap();
        let status = card.status().unwrap();
        assert!(!status.pps_lost);
        let mut sup = SupervisorState::default();
        assert!(!as_supervised(status.clone(), &sup).pps_lost);
        sup.gnss_lost_since_ns = Some(1);
        assert!(as_supervised(status, &sup).pps_lost);
    }

    #[test]
    fn served_packs_losslessly() {
        let s = Served {
            clock_class: 7,
            clock_accuracy: 0x23,
            offset_scaled_log_variance: 0x59E0,
            utc_offset_s: -5,
            flags: Flags::PTP_TIMESCALE | Flags::LEAP_61,
        };
        assert_eq!(unpack(pack(s)), s);
    }
}
