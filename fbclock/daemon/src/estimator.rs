//! The TrueTime estimator: PTP exchanges in, a model of TAI against the local
//! clock with a strict error bound out. Pure: no clocks, sockets or threads;
//! every instant is passed in by the caller.
//!
//! # One exchange
//!
//! An [`Exchange`] carries two timestamps on the local clock — `t3`
//! (Delay_Req TX) and `t2` (Sync RX) — and two on the grandmaster's clock —
//! `t4` (Delay_Req RX) and `t1` (Sync TX) — plus the two correction fields
//! (transparent clocks' residence times). With `θ = local − TAI`:
//!
//! ```text
//! θ̂ = ((t2 − t1 − cf_sync) − (t4 − t3 − cf_req)) / 2        offset estimate
//! δ  = (t2 − t3) − (t1 − t4) − cf_sync − cf_req               round trip
//! ```
//!
//! Because each one-way delay is ≥ 0, the Sync proves `θ ≤ t2 − t1 − cf_sync`
//! and the Delay_Req proves `θ ≥ t3 − t4 + cf_req`: the true offset lies in
//! `[θ̂ − δ/2, θ̂ + δ/2]` for *any* path asymmetry (the NTP argument). The two
//! proofs hold at different instants (`t3`, `t2`), so the local clock's rate
//! error `R` over `|t2 − t3|` widens the interval by `R·|t2 − t3|/2`.
//!
//! # The bound published at an exchange
//!
//! ```text
//! W = δ/2 + R·|t2 − t3|/2 + gm_accuracy + timestamp_error + 1 ns (rounding)
//! ```
//!
//! - `gm_accuracy`: the upper end of the grandmaster's announced
//!   clockAccuracy range ([`ptp_proto::clock_accuracy_to_ns`]). Unknown
//!   (0xFE), "> 10 s" (0x31) or reserved: the exchange is refused
//!   ([`Reject::GmAccuracyUnknown`]) — no bound can be given.
//! - `timestamp_error`: what the timestamps can be wrong by beyond adding
//!   delay ([`EstimatorConfig::timestamp_error_ns`], 1 µs for kernel software
//!   timestamps). Software timestamps are late on receive and early on
//!   transmit, which only adds one-way delay and is covered by the argument
//!   above; this term covers clock reading granularity and the mapping of
//!   kernel `CLOCK_REALTIME` stamps onto the local clock.
//! - `R` = `|coef|` + the bound growth below once a rate is known, else
//!   [`EstimatorConfig::max_frequency_error_ppb`].
//!
//! # The model and its growth
//!
//! `TAI(t) = tai_anchor + (t − t_anchor)·(1 + coef)`: the anchor is the last
//! accepted exchange's midpoint (`(t2 + t3)/2` on the local clock, TAI =
//! midpoint − θ̂) and `coef` is the least-squares rate of the last
//! [`EstimatorConfig::rate_window`] accepted exchanges (TAI seconds per local
//! second, minus 1). Between exchanges the bound grows by
//!
//! ```text
//! holdover_ns_per_s = max_drift_ppb + rate_uncertainty_ppb + (gm_holdover_ppb if GM class 7)
//! ```
//!
//! - `max_drift_ppb` (default 20 000 = 20 ppm) is an **assumption** about
//!   the local oscillator: its frequency against TAI stays within that much
//!   of its average over the rate window for as long as the model is
//!   extrapolated (temperature, ageing, `adjtimex` on `CLOCK_REALTIME`;
//!   `CLOCK_MONOTONIC_RAW` is never steered).
//! - `rate_uncertainty_ppb` is the worst-case error of the fitted rate given
//!   the samples' bounds: the least-squares slope is `Σ wᵢ·θᵢ` with
//!   `wᵢ = (xᵢ − x̄)/Σ(xⱼ − x̄)²`, so an error of at most `Wᵢ` in each sample
//!   moves it by at most `Σ |wᵢ|·Wᵢ`. With two samples that is the sum of the
//!   end samples' bounds divided by their separation. If that exceeds
//!   `max_frequency_error_ppb`, the fit is not used (`coef = 0`, uncertainty
//!   `max_frequency_error_ppb`).
//! - `gm_holdover_ppb`: a grandmaster in holdover (clockClass 7) drifts from
//!   TAI and the fitted rate follows it; PTP does not carry that drift rate,
//!   so it is configured ([`EstimatorConfig::gm_holdover_ppb`]).
//!
//! A client then computes `WOU(t) = W + holdover_ns_per_s · (t − ingress)/1 s`
//! around `TAI(t)` (see `fbclock/PROTOCOL.md`).
//!
//! Until two exchanges have been accepted (no rate yet), nothing is
//! published as synced: clients get `NoData`.
//!
//! # Filters
//!
//! An exchange is rejected (counted, the model keeps extrapolating with its
//! growing bound) when a correction field is negative or above 10 s (a broken
//! transparent clock), when `δ < 0`, when the grandmaster's accuracy is
//! unknown, or when `δ` exceeds [`EstimatorConfig::spike_factor`] (3) times
//! the minimum `δ` of the last [`EstimatorConfig::delay_window`] (32)
//! measured exchanges (a queueing spike) by more than
//! [`EstimatorConfig::spike_floor_ns`]. An exchange whose interval does not
//! intersect the model's prediction proves an assumption wrong (the
//! grandmaster stepped, or the local clock drifted faster than assumed): the
//! rate history is dropped and the model restarts from it
//! ([`Verdict::Accepted`] with `reset`). A new grandmaster identity restarts
//! the model as well.

use std::collections::VecDeque;

use fbclock::Snapshot;
use fbclock::layout::{FLAG_GM_HOLDOVER, FLAG_HOLDOVER, FLAG_SYNCED};
use ptp_proto::{AnnounceBody, Flags, Header, TimeInterval, clock_accuracy, clock_class};

use crate::status::{ExchangeCounters, SyncState};

/// Nanoseconds per second.
pub const NS_PER_S: i64 = 1_000_000_000;
/// Largest correction field accepted (10 s), ns.
pub const MAX_CORRECTION_NS: i64 = 10 * NS_PER_S;
/// How many offsets [`Estimator::recent_offsets_ns`] keeps.
pub const RECENT_OFFSETS: usize = 16;
/// A leap announcement that is still flagged this long after the instant it
/// was computed for keeps that instant (the grandmaster has not caught up yet).
const LEAP_STICKY_NS: i64 = 3600 * NS_PER_S;

/// What the grandmaster announces about itself (from its Announce).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GmInfo {
    /// grandmasterIdentity as a big-endian integer.
    pub identity: u64,
    /// grandmasterClockQuality.clockClass.
    pub clock_class: u8,
    /// grandmasterClockQuality.clockAccuracy.
    pub clock_accuracy: u8,
    /// currentUtcOffset (TAI − UTC), s.
    pub utc_offset_s: i16,
    /// Flag `currentUtcOffsetValid`.
    pub utc_offset_valid: bool,
    /// Flag `ptpTimescale`: the grandmaster's timestamps are TAI. Without it
    /// the timescale is ARB (arbitrary).
    pub ptp_timescale: bool,
    /// Flag `leap61`: the last minute of the current UTC day has 61 s.
    pub leap61: bool,
    /// Flag `leap59`: the last minute of the current UTC day has 59 s.
    pub leap59: bool,
}

impl Default for GmInfo {
    /// Nothing announced yet: accuracy unknown, so no bound can be given.
    fn default() -> Self {
        Self {
            identity: 0,
            clock_class: clock_class::DEFAULT,
            clock_accuracy: clock_accuracy::UNKNOWN,
            utc_offset_s: 0,
            utc_offset_valid: false,
            ptp_timescale: false,
            leap61: false,
            leap59: false,
        }
    }
}

impl GmInfo {
    /// From an Announce message's header flags and body.
    #[must_use]
    pub fn from_announce(header: &Header, body: &AnnounceBody) -> Self {
        let f = header.flags;
        Self {
            identity: body.grandmaster_identity.to_u64(),
            clock_class: body.grandmaster_clock_quality.clock_class,
            clock_accuracy: body.grandmaster_clock_quality.clock_accuracy,
            utc_offset_s: body.current_utc_offset,
            utc_offset_valid: f.contains(Flags::CURRENT_UTC_OFFSET_VALID),
            ptp_timescale: f.contains(Flags::PTP_TIMESCALE),
            leap61: f.contains(Flags::LEAP_61),
            leap59: f.contains(Flags::LEAP_59),
        }
    }

    /// Upper bound of the announced accuracy, ns; `None` when unknown.
    #[must_use]
    pub fn accuracy_ns(&self) -> Option<f64> {
        ptp_proto::clock_accuracy_to_ns(self.clock_accuracy)
    }

    /// The grandmaster announces holdover (clockClass 7).
    #[must_use]
    pub fn in_holdover(&self) -> bool {
        self.clock_class == clock_class::HOLDOVER
    }
}

/// One completed PTP exchange, in either mode (SPTP or negotiated unicast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// Sync TX on the grandmaster (its timescale), ns.
    pub t1: i64,
    /// Sync RX on the local clock, ns.
    pub t2: i64,
    /// Delay_Req TX on the local clock, ns.
    pub t3: i64,
    /// Delay_Req RX on the grandmaster (its timescale), ns.
    pub t4: i64,
    /// Correction of the Sync direction (Sync + Follow_Up correctionField).
    pub cf_sync: TimeInterval,
    /// Correction of the Delay_Req direction (the Delay_Req's correction as
    /// echoed in the SPTP Announce or the Delay_Resp).
    pub cf_req: TimeInterval,
    /// The grandmaster's latest Announce.
    pub gm: GmInfo,
}

/// Numbers derived from one exchange.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// θ̂ = local − TAI, ns (rounded).
    pub offset_ns: i64,
    /// δ, the round trip without the grandmaster's turnaround, ns.
    pub delay_ns: f64,
    /// Local clock at the exchange midpoint `(t2 + t3)/2`, ns.
    pub local_ns: i64,
    /// TAI at the midpoint, `local_ns − offset_ns`.
    pub tai_ns: i64,
    /// `|t2 − t3|`, ns.
    pub span_ns: i64,
    /// `δ/2 + gm_accuracy + timestamp_error + 1`, ns (W without the rate term).
    pub base_bound_ns: f64,
}

/// Why an exchange was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// A correction field is negative or larger than 10 s.
    #[error("correction field negative or above 10 s (broken transparent clock)")]
    BadCorrection,
    /// δ < 0: the timestamps contradict each other.
    #[error("negative round-trip delay")]
    NegativeDelay,
    /// The grandmaster's clockAccuracy is unknown or unbounded.
    #[error("grandmaster clockAccuracy {0:#04x} gives no bound")]
    GmAccuracyUnknown(u8),
    /// δ is a spike against the recent minimum.
    #[error("delay spike: {delay_ns} ns against a recent minimum of {min_ns} ns")]
    DelaySpike {
        /// This exchange's δ, ns.
        delay_ns: i64,
        /// The recent minimum δ, ns.
        min_ns: i64,
    },
    /// The timestamps do not fit in an i64, or the round trip exceeds 10 s
    /// (absurd values).
    #[error("timestamps out of range")]
    OutOfRange,
}

/// What [`Estimator::feed`] did with an exchange.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Used in the model.
    Accepted {
        /// The exchange's numbers.
        measurement: Measurement,
        /// Its bound W, ns.
        bound_ns: f64,
        /// The model was restarted from this exchange (new grandmaster, or the
        /// exchange contradicted the model's prediction).
        reset: bool,
    },
    /// Not used.
    Rejected(Reject),
}

/// What to do with a grandmaster whose Announce lacks the PTP timescale flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ArbTimescale {
    /// Publish its time as it is (the published "TAI" is then the
    /// grandmaster's ARB time) with a UTC offset of 0.
    #[default]
    AsIs,
    /// Its ARB time is UTC (linuxptp's `ptp4l -S` serving `CLOCK_REALTIME`):
    /// add its currentUtcOffset to obtain TAI.
    Utc,
}

/// Tunables of the estimator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EstimatorConfig {
    /// Assumed bound on the local oscillator's frequency change, ppb (ns/s).
    pub max_drift_ppb: f64,
    /// Assumed bound on the local oscillator's frequency error against TAI,
    /// ppb, used before a rate is known (500 ppm: the kernel's adjtimex limit).
    pub max_frequency_error_ppb: f64,
    /// Timestamping error beyond added delay, ns (1 µs for software stamps).
    pub timestamp_error_ns: f64,
    /// Accepted exchanges in the rate fit.
    pub rate_window: usize,
    /// Measured exchanges whose minimum δ the spike filter compares with.
    pub delay_window: usize,
    /// δ above this multiple of the recent minimum is a spike…
    pub spike_factor: f64,
    /// …unless it is within this many ns of the minimum (default 10 µs:
    /// software-timestamp jitter on a quiet path, where the minimum is a few
    /// µs, is not a queueing spike; such an exchange still tightens the
    /// bound more than extrapolating would).
    pub spike_floor_ns: f64,
    /// Time error growth of a grandmaster in holdover (class 7), ppb.
    pub gm_holdover_ppb: f64,
    /// Handling of ARB-timescale grandmasters.
    pub arb_timescale: ArbTimescale,
    /// Exchange interval, ns: holdover starts after two intervals without an
    /// accepted exchange.
    pub interval_ns: i64,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        Self {
            max_drift_ppb: 20_000.0,
            max_frequency_error_ppb: 500_000.0,
            timestamp_error_ns: 1_000.0,
            rate_window: 8,
            delay_window: 32,
            spike_factor: 3.0,
            spike_floor_ns: 10_000.0,
            gm_holdover_ppb: 100.0,
            arb_timescale: ArbTimescale::AsIs,
            interval_ns: NS_PER_S,
        }
    }
}

/// One accepted exchange in the rate window.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    local_ns: i64,
    offset_ns: i64,
    bound_ns: f64,
}

/// The rate fit over the window.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rate {
    /// TAI rate against the local clock, minus 1.
    coef: f64,
    /// Worst-case error of `coef`, ppb.
    uncertainty_ppb: f64,
}

/// UTC offset and leap second as published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Leap {
    leap_tai_ns: i64,
    pre: i16,
    post: i16,
}

/// The estimator state. Feed it exchanges ([`Estimator::feed`]) and lost
/// exchanges ([`Estimator::lost`]); ask it for a [`Snapshot`] at any local
/// instant ([`Estimator::snapshot`]).
#[derive(Clone, Debug)]
pub struct Estimator {
    config: EstimatorConfig,
    samples: VecDeque<Sample>,
    delays: VecDeque<f64>,
    rate: Option<Rate>,
    last: Option<(Measurement, f64)>,
    gm: Option<GmInfo>,
    leap: Leap,
    recent: VecDeque<i64>,
    counters: ExchangeCounters,
    resets: u64,
}

impl Estimator {
    /// A fresh estimator (unsynced).
    #[must_use]
    pub fn new(config: EstimatorConfig) -> Self {
        Self {
            config: EstimatorConfig {
                rate_window: config.rate_window.max(2),
                delay_window: config.delay_window.max(1),
                ..config
            },
            samples: VecDeque::new(),
            delays: VecDeque::new(),
            rate: None,
            last: None,
            gm: None,
            leap: Leap::default(),
            recent: VecDeque::new(),
            counters: ExchangeCounters::default(),
            resets: 0,
        }
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &EstimatorConfig {
        &self.config
    }

    /// θ̂, δ and the midpoint of an exchange, after the timescale policy
    /// (no filtering).
    ///
    /// # Errors
    /// [`Reject::OutOfRange`] for timestamps whose differences overflow.
    pub fn measure(&self, x: &Exchange) -> Result<Measurement, Reject> {
        let arb_shift = if !x.gm.ptp_timescale && self.config.arb_timescale == ArbTimescale::Utc {
            i128::from(x.gm.utc_offset_s) * i128::from(NS_PER_S)
        } else {
            0
        };
        let (t1, t2, t3, t4) = (
            i128::from(x.t1) + arb_shift,
            i128::from(x.t2),
            i128::from(x.t3),
            i128::from(x.t4) + arb_shift,
        );
        let (cf_s, cf_r) = (i128::from(x.cf_sync.0), i128::from(x.cf_req.0));
        const S: i128 = 1 << 16;
        // Scaled nanoseconds (× 2^16), exact in i128.
        let theta2 = (t2 - t1) * S - cf_s - ((t4 - t3) * S - cf_r);
        let delta = ((t2 - t3) - (t1 - t4)) * S - cf_s - cf_r;
        // θ̂ = theta2 / 2 / 2^16, rounded to the nearest ns.
        let offset = (theta2 + S).div_euclid(2 * S);
        let offset_ns = i64::try_from(offset).map_err(|_| Reject::OutOfRange)?;
        let delay_ns = delta as f64 / S as f64;
        let local = (t2 + t3).div_euclid(2);
        let local_ns = i64::try_from(local).map_err(|_| Reject::OutOfRange)?;
        let tai_ns = i64::try_from(local - offset).map_err(|_| Reject::OutOfRange)?;
        let span_ns = i64::try_from((t2 - t3).abs()).map_err(|_| Reject::OutOfRange)?;
        let gm_acc = x.gm.accuracy_ns().unwrap_or(f64::INFINITY);
        Ok(Measurement {
            offset_ns,
            delay_ns,
            local_ns,
            tai_ns,
            span_ns,
            base_bound_ns: delay_ns / 2.0 + gm_acc + self.config.timestamp_error_ns + 1.0,
        })
    }

    /// Feeds one exchange; `now` is not needed: every instant is in it.
    pub fn feed(&mut self, x: &Exchange) -> Verdict {
        let v = self.judge(x);
        self.counters.attempted += 1;
        match v {
            Verdict::Accepted { .. } => self.counters.accepted += 1,
            Verdict::Rejected(_) => self.counters.rejected += 1,
        }
        v
    }

    /// Records an exchange that got no (complete) answer.
    pub fn lost(&mut self) {
        self.counters.attempted += 1;
        self.counters.lost += 1;
    }

    fn judge(&mut self, x: &Exchange) -> Verdict {
        let cf_ok = |cf: TimeInterval| (0..=MAX_CORRECTION_NS << 16).contains(&cf.0);
        if !cf_ok(x.cf_sync) || !cf_ok(x.cf_req) {
            return Verdict::Rejected(Reject::BadCorrection);
        }
        let m = match self.measure(x) {
            Ok(m) => m,
            Err(r) => return Verdict::Rejected(r),
        };
        if m.delay_ns < 0.0 {
            return Verdict::Rejected(Reject::NegativeDelay);
        }
        if m.delay_ns > MAX_CORRECTION_NS as f64 {
            return Verdict::Rejected(Reject::OutOfRange);
        }
        if self.delays.len() == self.config.delay_window {
            self.delays.pop_front();
        }
        self.delays.push_back(m.delay_ns);
        if x.gm.accuracy_ns().is_none() {
            return Verdict::Rejected(Reject::GmAccuracyUnknown(x.gm.clock_accuracy));
        }
        let min = self.delays.iter().copied().fold(f64::INFINITY, f64::min);
        if m.delay_ns > self.config.spike_factor * min
            && m.delay_ns > min + self.config.spike_floor_ns
        {
            return Verdict::Rejected(Reject::DelaySpike {
                delay_ns: m.delay_ns as i64,
                min_ns: min as i64,
            });
        }

        let mut reset = false;
        if self.gm.is_some_and(|g| g.identity != x.gm.identity) {
            reset = true;
        }
        let mut bound = m.base_bound_ns + self.rate_bound_ppb() * 1e-9 * m.span_ns as f64 / 2.0;
        if !reset && let Some((tai, w)) = self.predict(m.local_ns) {
            // Intervals [tai ± w] and [m.tai ± bound] must intersect.
            if ((m.tai_ns - tai) as f64).abs() > w + bound {
                reset = true;
            }
        }
        if reset {
            self.samples.clear();
            self.rate = None;
            self.resets += 1;
            bound = m.base_bound_ns
                + self.config.max_frequency_error_ppb * 1e-9 * m.span_ns as f64 / 2.0;
        }
        if self.samples.len() == self.config.rate_window {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            local_ns: m.local_ns,
            offset_ns: m.offset_ns,
            bound_ns: bound,
        });
        self.rate = self.fit();
        self.last = Some((m, bound));
        self.gm = Some(x.gm);
        self.leap = self.leap_for(&x.gm, m.tai_ns);
        if self.recent.len() == RECENT_OFFSETS {
            self.recent.pop_front();
        }
        self.recent.push_back(m.offset_ns);
        Verdict::Accepted {
            measurement: m,
            bound_ns: bound,
            reset,
        }
    }

    /// The least-squares rate and its worst-case error over the window.
    fn fit(&self) -> Option<Rate> {
        let n = self.samples.len();
        if n < 2 {
            return None;
        }
        let last = *self.samples.back()?;
        let xs: Vec<f64> = self
            .samples
            .iter()
            .map(|s| (s.local_ns - last.local_ns) as f64)
            .collect();
        let ys: Vec<f64> = self
            .samples
            .iter()
            .map(|s| (s.offset_ns - last.offset_ns) as f64)
            .collect();
        let xm = xs.iter().sum::<f64>() / n as f64;
        let ym = ys.iter().sum::<f64>() / n as f64;
        let sxx: f64 = xs.iter().map(|x| (x - xm) * (x - xm)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - xm) * (y - ym)).sum();
        let slope = sxy / sxx;
        let unc: f64 = xs
            .iter()
            .zip(&self.samples)
            .map(|(x, s)| ((x - xm) / sxx).abs() * s.bound_ns)
            .sum();
        let unc_ppb = unc * 1e9;
        // The fit is no better than what we assume anyway.
        if unc_ppb >= self.config.max_frequency_error_ppb {
            return None;
        }
        // θ = local − TAI grows by `slope` per local ns, so TAI advances by
        // 1 − slope per local ns.
        Some(Rate {
            coef: -slope,
            uncertainty_ppb: unc_ppb,
        })
    }

    /// Bound on |true rate − coef| now, ppb: the published growth.
    #[must_use]
    pub fn holdover_ppb(&self) -> f64 {
        let rate_unc = self
            .rate
            .map_or(self.config.max_frequency_error_ppb, |r| r.uncertainty_ppb);
        let gm = if self.gm.is_some_and(|g| g.in_holdover()) {
            self.config.gm_holdover_ppb
        } else {
            0.0
        };
        self.config.max_drift_ppb + rate_unc + gm
    }

    /// Bound on the local clock's absolute rate error R, ppb (transport of
    /// the two half-exchange proofs to the midpoint).
    fn rate_bound_ppb(&self) -> f64 {
        match self.rate {
            Some(r) => r.coef.abs() * 1e9 + self.holdover_ppb(),
            None => self.config.max_frequency_error_ppb,
        }
    }

    /// The model's TAI and bound at local time `t`, if a model exists.
    fn predict(&self, t: i64) -> Option<(i64, f64)> {
        let (m, w) = self.last?;
        let coef = self.rate.map_or(0.0, |r| r.coef);
        let d = t - m.local_ns;
        let tai = m.tai_ns + d + (d as f64 * coef).round() as i64;
        let growth = self.holdover_ppb();
        Some((tai, w + growth * 1e-9 * d.unsigned_abs() as f64))
    }

    /// Leap information for an exchange at TAI `tai_ns` with `gm`'s Announce.
    fn leap_for(&self, gm: &GmInfo, tai_ns: i64) -> Leap {
        if !gm.ptp_timescale && self.config.arb_timescale == ArbTimescale::AsIs {
            return Leap::default();
        }
        let pre = gm.utc_offset_s;
        let post = if gm.leap61 {
            pre.saturating_add(1)
        } else if gm.leap59 {
            pre.saturating_sub(1)
        } else {
            return Leap {
                leap_tai_ns: 0,
                pre,
                post: pre,
            };
        };
        let prev = self.leap;
        if prev.leap_tai_ns != 0
            && prev.pre == pre
            && prev.post == post
            && tai_ns < prev.leap_tai_ns + LEAP_STICKY_NS
        {
            return prev;
        }
        let utc_s = (tai_ns - i64::from(pre) * NS_PER_S).div_euclid(NS_PER_S);
        let midnight_s = (utc_s.div_euclid(86_400) + 1) * 86_400;
        // Positive leap: at UTC midnight (old offset) the clock goes back to
        // 23:59:59 (repeated). Negative: 23:59:59 is skipped.
        let at_utc_s = if gm.leap61 {
            midnight_s
        } else {
            midnight_s - 1
        };
        Leap {
            leap_tai_ns: (at_utc_s + i64::from(pre)) * NS_PER_S,
            pre,
            post,
        }
    }

    /// The record to publish at local time `now`: re-anchored at `now`.
    #[must_use]
    pub fn snapshot(&self, now: i64) -> Snapshot {
        let (Some((m, w)), Some(rate)) = (self.last, self.rate) else {
            return Snapshot {
                anchor_sys_ns: now,
                ..Snapshot::default()
            };
        };
        let d = now - m.local_ns;
        let mut flags = FLAG_SYNCED;
        if self.in_holdover(now) {
            flags |= FLAG_HOLDOVER;
        }
        if self.gm.is_some_and(|g| g.in_holdover()) {
            flags |= FLAG_GM_HOLDOVER;
        }
        let bound = w.ceil();
        Snapshot {
            anchor_sys_ns: now,
            anchor_tai_ns: m.tai_ns + d + (d as f64 * rate.coef).round() as i64,
            coef: rate.coef,
            ingress_sys_ns: m.local_ns,
            error_bound_ns: if bound >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                (bound as u32).max(1)
            },
            holdover_ns_per_s: self.holdover_ppb(),
            leap_tai_ns: self.leap.leap_tai_ns,
            utc_pre_s: self.leap.pre,
            utc_post_s: self.leap.post,
            flags,
        }
    }

    fn in_holdover(&self, now: i64) -> bool {
        self.last
            .is_some_and(|(m, _)| now - m.local_ns > 2 * self.config.interval_ns)
    }

    /// Sync state at local time `now`.
    #[must_use]
    pub fn state(&self, now: i64) -> SyncState {
        if self.last.is_none() || self.rate.is_none() {
            SyncState::Unsynced
        } else if self.in_holdover(now) {
            SyncState::Holdover
        } else {
            SyncState::Synced
        }
    }

    /// The last accepted exchange's numbers and bound W.
    #[must_use]
    pub fn last(&self) -> Option<(Measurement, f64)> {
        self.last
    }

    /// The grandmaster of the last accepted exchange.
    #[must_use]
    pub fn grandmaster(&self) -> Option<GmInfo> {
        self.gm
    }

    /// The fitted rate (`coef`) and its uncertainty (ppb), once known.
    #[must_use]
    pub fn rate(&self) -> Option<(f64, f64)> {
        self.rate.map(|r| (r.coef, r.uncertainty_ppb))
    }

    /// Recent accepted offsets (local − TAI), oldest first, ns.
    #[must_use]
    pub fn recent_offsets_ns(&self) -> Vec<i64> {
        self.recent.iter().copied().collect()
    }

    /// Exchange counters.
    #[must_use]
    pub fn counters(&self) -> ExchangeCounters {
        self.counters
    }

    /// How often the model was restarted (new grandmaster, contradiction).
    #[must_use]
    pub fn resets(&self) -> u64 {
        self.resets
    }
}

#[cfg(test)]
mod tests;
