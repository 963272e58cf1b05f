//! Card time for kernel timestamps.
//!
//! With software timestamping the kernel stamps packets with the host's
//! `CLOCK_REALTIME`; the server must put the card's time on the wire. A
//! sampler thread reads the card (`gettimex64`-style, with the host bracket)
//! several times a second and fits `card = host + offset + rate·(host − h0)`
//! over recent samples; every packet timestamp is mapped through the latest
//! fit. The fit is published with a single-writer seqlock of atomics, so the
//! send and receive paths never take a lock.
//!
//! With hardware timestamping the same map applies to the NIC's PHC once the
//! PHC is slaved to the card (ts2phc from the card's PPS, as Meta's time
//! appliances do), since the PHC then reads card time; the offset the
//! sampler measures is then between host and card, and the PHC→card step is
//! the identity. A map that has not been refreshed for [`MAX_AGE_NS`] is
//! stale: the server stops answering rather than serve extrapolated time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How long a fit may be used without a fresh sample, ns.
pub const MAX_AGE_NS: i64 = 2_000_000_000;
/// Samples kept for the rate fit.
const WINDOW: usize = 16;

/// The published fit: `card(h) = card0 + (h − host0)·(1 + rate)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fit {
    /// Host time of the anchor, ns.
    pub host0: i64,
    /// Card time at the anchor, ns.
    pub card0: i64,
    /// Card rate relative to the host, fractional.
    pub rate: f64,
}

impl Fit {
    /// Card time for host time `h`.
    #[must_use]
    pub fn card(&self, h: i64) -> i64 {
        let dt = h - self.host0;
        self.card0 + dt + (dt as f64 * self.rate).round() as i64
    }
}

/// Lock-free published time map (one writer, many readers).
#[derive(Debug, Default)]
pub struct TimeMap {
    seq: AtomicU64,
    host0: AtomicI64,
    card0: AtomicI64,
    rate_bits: AtomicU64,
}

impl TimeMap {
    /// An empty map (no fit yet: every lookup is `None`).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes a new fit. Only one thread may call this.
    pub fn publish(&self, fit: Fit) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.host0.store(fit.host0, Ordering::Relaxed);
        self.card0.store(fit.card0, Ordering::Relaxed);
        self.rate_bits.store(fit.rate.to_bits(), Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }

    /// Marks the map unusable (card unreadable).
    pub fn invalidate(&self) {
        self.publish(Fit::default());
    }

    /// The current fit, if any.
    #[must_use]
    pub fn fit(&self) -> Option<Fit> {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let fit = Fit {
                host0: self.host0.load(Ordering::Relaxed),
                card0: self.card0.load(Ordering::Relaxed),
                rate: f64::from_bits(self.rate_bits.load(Ordering::Relaxed)),
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (fit.host0 != 0).then_some(fit);
            }
        }
    }

    /// Card time for host timestamp `host_ns`, if the fit is fresh enough.
    #[must_use]
    pub fn card_time(&self, host_ns: i64) -> Option<i64> {
        let fit = self.fit()?;
        ((host_ns - fit.host0).abs() <= MAX_AGE_NS).then(|| fit.card(host_ns))
    }
}

/// Least-squares fit of card offset against host time over recent samples.
#[derive(Debug, Default)]
pub struct Fitter {
    /// `(host midpoint, card, half bracket width)`.
    samples: Vec<(i64, i64, i64)>,
    /// Uncertainty of the last fit, ns.
    uncertainty: i64,
}

impl Fitter {
    /// A fitter with no samples.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every sample (after a card step).
    pub fn reset(&mut self) {
        self.samples.clear();
    }

    /// How far a card time from the last fit can be off, ns: the widest
    /// half bracket in the window (a read latches somewhere inside its
    /// bracket, not necessarily at the midpoint) plus the largest residual
    /// of the samples from the fitted line.
    #[must_use]
    pub fn uncertainty_ns(&self) -> i64 {
        self.uncertainty
    }

    /// Adds a sample (host midpoint, card time, half the read's bracket
    /// width) and returns the fit anchored at it.
    pub fn add(&mut self, host: i64, card: i64, half_width: i64) -> Fit {
        if self.samples.len() == WINDOW {
            self.samples.remove(0);
        }
        self.samples.push((host, card, half_width.max(0)));
        let n = self.samples.len() as f64;
        let (h0, _, _) = self.samples[0];
        let xs = self.samples.iter().map(|(h, _, _)| (h - h0) as f64);
        let ys = self.samples.iter().map(|(h, c, _)| (c - h) as f64);
        let mx = xs.clone().sum::<f64>() / n;
        let my = ys.clone().sum::<f64>() / n;
        let sxx: f64 = xs.clone().map(|x| (x - mx) * (x - mx)).sum();
        let sxy: f64 = xs.zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let rate = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let x_last = (host - h0) as f64;
        let offset = my + rate * (x_last - mx);
        let widest = self.samples.iter().map(|s| s.2).max().unwrap_or(0);
        let residual = self
            .samples
            .iter()
            .map(|(h, c, _)| ((c - h) as f64 - (my + rate * ((h - h0) as f64 - mx))).abs())
            .fold(0.0, f64::max);
        self.uncertainty = widest + residual.ceil() as i64;
        Fit {
            host0: host,
            card0: host + offset.round() as i64,
            rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_tracks_offset_and_rate() {
        let mut f = Fitter::new();
        let rate = 2e-7;
        let mut fit = Fit::default();
        for i in 0..16i64 {
            let h = 1_000_000_000_000 + i * 100_000_000;
            let c = h
                + 37_000_000_000
                + (((h - 1_000_000_000_000) as f64) * rate) as i64
                + if i % 2 == 0 { 50 } else { -50 };
            fit = f.add(h, c, 0);
        }
        assert!((fit.rate - rate).abs() < 3e-8, "{}", fit.rate);
        let h = fit.host0 + 500_000_000;
        let truth = h + 37_000_000_000 + (((h - 1_000_000_000_000) as f64) * rate) as i64;
        assert!((fit.card(h) - truth).abs() < 100, "{}", fit.card(h) - truth);
    }

    #[test]
    fn uncertainty_covers_the_bracket_and_the_residual() {
        let mut f = Fitter::new();
        for i in 0..16i64 {
            let h = 1_000_000_000_000 + i * 100_000_000;
            let jitter = if i % 2 == 0 { 50 } else { -50 };
            f.add(
                h,
                h + 37_000_000_000 + jitter,
                if i == 3 { 900 } else { 300 },
            );
        }
        let u = f.uncertainty_ns();
        assert!(
            (950..=1000).contains(&u),
            "widest half bracket 900 + residual ~50: {u}"
        );
        // The wide read leaves the window: the bound shrinks back.
        for i in 16..32i64 {
            let h = 1_000_000_000_000 + i * 100_000_000;
            f.add(h, h + 37_000_000_000, 300);
        }
        assert!(f.uncertainty_ns() <= 400, "{}", f.uncertainty_ns());
    }

    #[test]
    fn map_refuses_stale_or_empty_fits() {
        let m = TimeMap::new();
        assert_eq!(m.card_time(5), None);
        m.publish(Fit {
            host0: 1_000_000_000_000,
            card0: 1_037_000_000_000,
            rate: 0.0,
        });
        assert_eq!(m.card_time(1_000_000_000_100), Some(1_037_000_000_100));
        assert_eq!(m.card_time(1_000_000_000_000 + MAX_AGE_NS + 1), None);
        m.invalidate();
        assert_eq!(m.card_time(1_000_000_000_000), None);
    }

    #[test]
    fn concurrent_readers_never_see_a_torn_fit() {
        use std::sync::Arc;
        let m = Arc::new(TimeMap::new());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(f) = m.fit() {
                            assert_eq!(f.card0 - f.host0, 37, "torn: {f:?}");
                            assert_eq!(f.rate, f.host0 as f64);
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        for i in 1..200_000i64 {
            m.publish(Fit {
                host0: i,
                card0: i + 37,
                rate: i as f64,
            });
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}
