//! What the grandmaster announces about itself, derived from the card the way
//! Meta's c4u derives it for ptp4u.
//!
//! Every second the server feeds one [`CardSample`] (sync/holdover bits, the
//! FPGA servo's last phase offset, UTC offset and leap flags). Over a sliding
//! window the estimator computes:
//! - **clockClass** = the 99th percentile of the per-sample class (so a few
//!   bad seconds degrade it quickly, and it recovers only once the window is
//!   clean): `6` locked to GNSS, `7` holdover, `52` uncalibrated (never locked,
//!   acquiring, or the card unreadable);
//! - **clockAccuracy** = the 1588 enum of `|mean(offset)| + 3·stddev(offset)`
//!   with c4u's floors: never better than 100 ns when locked, 1 µs in holdover
//!   (growing with time in holdover at the configured drift rate), unknown
//!   (`0xFE`) when uncalibrated — **plus** the server's own timestamp
//!   uncertainty ([`CardSample::timestamp_uncertainty_ns`]): with software
//!   timestamps every `t1`/`t4` goes through the host→card time map, whose
//!   error (half the bracket of the card reads behind it, plus the fit's
//!   residual) is part of what a client's offset can be wrong by;
//! - UTC offset, `currentUtcOffsetValid`, `leap61`/`leap59` (set in the last
//!   12 hours before an announced leap, as linuxptp does), time/frequency
//!   traceability.

use std::collections::VecDeque;

use ptp_proto::{Flags, clock_accuracy_from_offset_ns, clock_class};

/// One observation of the card.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CardSample {
    /// The card could be read at all.
    pub readable: bool,
    /// Clock status `IN_SYNC`.
    pub in_sync: bool,
    /// Clock status `IN_HOLDOVER`, or GNSS lost / distrusted by the supervisor.
    pub holdover: bool,
    /// Last phase offset of the FPGA servo, ns.
    pub servo_offset_ns: f64,
    /// TAI − UTC from the card's TOD block, if valid.
    pub utc_offset_s: Option<i16>,
    /// Seconds to an announced leap second (positive: insertion ahead), 0 if none.
    pub seconds_to_leap: i64,
    /// +1 insertion or −1 deletion announced, 0 if none.
    pub leap: i8,
    /// How far the server's card timestamps can be off, ns: the host→card
    /// map's uncertainty ([`crate::timemap::Fitter::uncertainty_ns`]); 0 for
    /// hardware timestamps taken by the card's own clock.
    pub timestamp_uncertainty_ns: f64,
}

/// Tunables of the estimator (c4u's flags).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualityConfig {
    /// Samples in the sliding window (c4u: 600 at 1 Hz).
    pub window: usize,
    /// Accuracy floor while locked, ns (c4u `-lockBaseLine`: 100 ns).
    pub lock_floor_ns: f64,
    /// Accuracy floor in holdover, ns (c4u: 1 µs).
    pub holdover_floor_ns: f64,
    /// Expected time error growth in holdover, ns per second (1 µs/day ≈ 0.0116).
    pub holdover_drift_ns_per_s: f64,
    /// TAI − UTC to announce when the card does not know it.
    pub default_utc_offset_s: i16,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            window: 600,
            lock_floor_ns: 100.0,
            holdover_floor_ns: 1000.0,
            holdover_drift_ns_per_s: 1000.0 / 86_400.0,
            default_utc_offset_s: 37,
        }
    }
}

/// What the Announce messages carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// grandmasterClockQuality.clockClass.
    pub clock_class: u8,
    /// grandmasterClockQuality.clockAccuracy.
    pub clock_accuracy: u8,
    /// grandmasterClockQuality.offsetScaledLogVariance (ptp4u's constant).
    pub offset_scaled_log_variance: u16,
    /// currentUtcOffset.
    pub utc_offset_s: i16,
    /// Announce flag bits (UTC offset valid, PTP timescale, leap, traceability).
    pub flags: Flags,
}

impl Default for Served {
    fn default() -> Self {
        Self {
            clock_class: clock_class::UNCALIBRATED,
            clock_accuracy: 0xFE,
            offset_scaled_log_variance: OFFSET_SCALED_LOG_VARIANCE,
            utc_offset_s: 37,
            flags: Flags::PTP_TIMESCALE,
        }
    }
}

/// ptp4u announces this offsetScaledLogVariance.
pub const OFFSET_SCALED_LOG_VARIANCE: u16 = 0x59E0;
/// linuxptp raises the leap flags this long before the event.
const LEAP_FLAG_WINDOW_S: i64 = 12 * 3600;

/// Sliding-window estimator of the served clock quality.
#[derive(Clone, Debug)]
pub struct QualityEstimator {
    config: QualityConfig,
    classes: VecDeque<u8>,
    offsets: VecDeque<f64>,
    holdover_s: u64,
    last_locked_accuracy_ns: f64,
    served: Served,
}

impl QualityEstimator {
    /// A fresh estimator: uncalibrated until the first samples arrive.
    #[must_use]
    pub fn new(config: QualityConfig) -> Self {
        Self {
            config: QualityConfig {
                window: config.window.max(1),
                ..config
            },
            classes: VecDeque::new(),
            offsets: VecDeque::new(),
            holdover_s: 0,
            last_locked_accuracy_ns: config.lock_floor_ns,
            served: Served::default(),
        }
    }

    /// The quality currently served.
    #[must_use]
    pub fn served(&self) -> Served {
        self.served
    }

    /// Adds one 1-second sample and returns the quality to serve now.
    pub fn push(&mut self, s: CardSample) -> Served {
        let class = if !s.readable {
            clock_class::UNCALIBRATED
        } else if s.holdover {
            clock_class::HOLDOVER
        } else if s.in_sync {
            clock_class::LOCK
        } else {
            clock_class::UNCALIBRATED
        };
        push_bounded(&mut self.classes, class, self.config.window);
        if class == clock_class::LOCK {
            push_bounded(&mut self.offsets, s.servo_offset_ns, self.config.window);
            self.holdover_s = 0;
        } else if class == clock_class::HOLDOVER {
            self.holdover_s += 1;
        }
        let served_class = percentile_99(&self.classes);
        let accuracy_ns = match served_class {
            clock_class::LOCK => {
                let (mean, sd) = mean_stddev(&self.offsets);
                let acc = (mean.abs() + 3.0 * sd).max(self.config.lock_floor_ns);
                self.last_locked_accuracy_ns = acc;
                Some(acc)
            }
            clock_class::HOLDOVER => Some(
                (self.last_locked_accuracy_ns
                    + self.config.holdover_drift_ns_per_s * self.holdover_s as f64)
                    .max(self.config.holdover_floor_ns),
            ),
            _ => None,
        }
        .map(|card| card + s.timestamp_uncertainty_ns.max(0.0));
        let mut flags = Flags::PTP_TIMESCALE;
        if s.utc_offset_s.is_some() {
            flags |= Flags::CURRENT_UTC_OFFSET_VALID;
        }
        if served_class == clock_class::LOCK || served_class == clock_class::HOLDOVER {
            flags |= Flags::TIME_TRACEABLE | Flags::FREQUENCY_TRACEABLE;
        }
        if s.leap != 0 && (0..=LEAP_FLAG_WINDOW_S).contains(&s.seconds_to_leap) {
            flags |= if s.leap > 0 {
                Flags::LEAP_61
            } else {
                Flags::LEAP_59
            };
        }
        self.served = Served {
            clock_class: served_class,
            clock_accuracy: accuracy_ns.map_or(0xFE, clock_accuracy_from_offset_ns),
            offset_scaled_log_variance: OFFSET_SCALED_LOG_VARIANCE,
            utc_offset_s: s.utc_offset_s.unwrap_or(self.config.default_utc_offset_s),
            flags,
        };
        self.served
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(v);
}

/// The 99th percentile (nearest rank) of the window's classes.
fn percentile_99(classes: &VecDeque<u8>) -> u8 {
    let mut v: Vec<u8> = classes.iter().copied().collect();
    if v.is_empty() {
        return clock_class::UNCALIBRATED;
    }
    v.sort_unstable();
    let rank = (v.len() * 99).div_ceil(100).max(1);
    v[rank - 1]
}

fn mean_stddev(v: &VecDeque<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(offset: f64) -> CardSample {
        CardSample {
            readable: true,
            in_sync: true,
            holdover: false,
            servo_offset_ns: offset,
            utc_offset_s: Some(37),
            seconds_to_leap: 0,
            leap: 0,
            timestamp_uncertainty_ns: 0.0,
        }
    }

    #[test]
    fn starts_uncalibrated_then_locks_with_floor() {
        let mut q = QualityEstimator::new(QualityConfig {
            window: 20,
            ..QualityConfig::default()
        });
        assert_eq!(q.served().clock_class, 52);
        assert_eq!(q.served().clock_accuracy, 0xFE);
        for i in 0..20 {
            q.push(locked(if i % 2 == 0 { 3.0 } else { -3.0 }));
        }
        let s = q.served();
        assert_eq!(s.clock_class, 6);
        assert_eq!(s.clock_accuracy, 0x21, "100 ns floor while locked");
        assert!(
            s.flags
                .contains(Flags::CURRENT_UTC_OFFSET_VALID | Flags::TIME_TRACEABLE)
        );
    }

    #[test]
    fn noisy_offsets_widen_accuracy() {
        let mut q = QualityEstimator::new(QualityConfig::default());
        for i in 0..600 {
            q.push(locked(if i % 2 == 0 { 200.0 } else { -200.0 }));
        }
        assert_eq!(q.served().clock_accuracy, 0x23, "600 ns → within 1 µs");
    }

    #[test]
    fn the_servers_timestamp_uncertainty_is_part_of_the_accuracy() {
        let mut q = QualityEstimator::new(QualityConfig {
            window: 3,
            ..QualityConfig::default()
        });
        let mut s = locked(1.0);
        s.timestamp_uncertainty_ns = 700.0;
        for _ in 0..3 {
            q.push(s);
        }
        assert_eq!(
            q.served().clock_accuracy,
            0x23,
            "100 ns floor + 700 ns → within 1 µs"
        );
        s.timestamp_uncertainty_ns = 0.0;
        q.push(s);
        assert_eq!(q.served().clock_accuracy, 0x21);
    }

    #[test]
    fn holdover_degrades_quickly_and_recovers_after_a_clean_window() {
        let mut q = QualityEstimator::new(QualityConfig {
            window: 100,
            ..QualityConfig::default()
        });
        for _ in 0..100 {
            q.push(locked(1.0));
        }
        let hold = CardSample {
            holdover: true,
            ..locked(0.0)
        };
        let mut first7 = None;
        for i in 0..10 {
            if q.push(hold).clock_class == 7 && first7.is_none() {
                first7 = Some(i);
            }
        }
        assert_eq!(first7, Some(1), "2 of 100 samples move the 99th percentile");
        assert_eq!(q.served().clock_accuracy, 0x23, "1 µs floor in holdover");
        for _ in 0..100_000 {
            q.push(hold);
        }
        assert!(
            q.served().clock_accuracy >= 0x24,
            "holdover error grows: {:#x}",
            q.served().clock_accuracy
        );
        let mut back = 0;
        while q.push(locked(1.0)).clock_class != 6 {
            back += 1;
        }
        assert_eq!(back, 98, "class 6 once 99 % of the window is locked");
    }

    #[test]
    fn leap_flags_only_in_the_last_12_hours() {
        let mut q = QualityEstimator::new(QualityConfig::default());
        let mut s = locked(0.0);
        s.leap = 1;
        s.seconds_to_leap = 13 * 3600;
        assert!(!q.push(s).flags.contains(Flags::LEAP_61));
        s.seconds_to_leap = 3600;
        assert!(q.push(s).flags.contains(Flags::LEAP_61));
        s.leap = -1;
        assert!(q.push(s).flags.contains(Flags::LEAP_59));
    }

    #[test]
    fn unreadable_card_is_uncalibrated() {
        let mut q = QualityEstimator::new(QualityConfig {
            window: 1,
            ..QualityConfig::default()
        });
        q.push(locked(0.0));
        let s = q.push(CardSample {
            readable: false,
            utc_offset_s: None,
            ..locked(0.0)
        });
        assert_eq!((s.clock_class, s.clock_accuracy), (52, 0xFE));
        assert!(!s.flags.contains(Flags::CURRENT_UTC_OFFSET_VALID));
    }
}
