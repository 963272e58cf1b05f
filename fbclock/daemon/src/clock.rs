//! Local clocks: what the daemon models TAI against.
//!
//! The published record anchors TAI on one POSIX clock ([`LocalClock::clock_id`],
//! stamped into the shared-memory header); clients read that clock and
//! extrapolate. Packet timestamps come from the kernel as `CLOCK_REALTIME`
//! (software timestamping) and are mapped onto the local clock with
//! [`LocalClock::from_kernel_ns`].
//!
//! - [`SystemClock`]: `CLOCK_MONOTONIC_RAW`, the host's oscillator, never
//!   stepped or slewed by NTP — the clock `fbclock` readers use.
//! - [`DriftingClock`]: a simulated host oscillator on top of the system
//!   clock, with its own frequency error that can be changed at run time, so
//!   that several simulated hosts on one machine each drift their own way.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// A clock the daemon can model TAI against.
pub trait LocalClock: Send + Sync + fmt::Debug {
    /// The POSIX clock id stamped into the shared-memory header (readers
    /// call `clock_gettime` on it).
    fn clock_id(&self) -> u32;

    /// The clock now, ns.
    fn now_ns(&self) -> i64;

    /// Maps a kernel software timestamp (`CLOCK_REALTIME` ns) onto this
    /// clock. Call it promptly: the mapping is exact only for recent stamps.
    #[allow(clippy::wrong_self_convention)]
    fn from_kernel_ns(&self, realtime_ns: i64) -> i64;
}

/// One `(CLOCK_REALTIME, clock)` pair read back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bracket {
    /// `CLOCK_REALTIME`, ns.
    pub realtime_ns: i64,
    /// The other clock at the same instant (midpoint of its two reads), ns.
    pub clock_ns: i64,
    /// Width of the bracket (the other clock's second read minus its first), ns.
    pub width_ns: i64,
}

/// Reads `clock` / `CLOCK_REALTIME` / `clock` three times and keeps the
/// narrowest bracket.
#[must_use]
pub fn bracket(clock_id: u32) -> Bracket {
    let rt = libc::CLOCK_REALTIME as u32;
    let mut best: Option<Bracket> = None;
    for _ in 0..3 {
        let a = fbclock::clock_ns(clock_id);
        let r = fbclock::clock_ns(rt);
        let b = fbclock::clock_ns(clock_id);
        let cand = Bracket {
            realtime_ns: r,
            clock_ns: a + (b - a) / 2,
            width_ns: b - a,
        };
        if best.is_none_or(|x| cand.width_ns < x.width_ns) {
            best = Some(cand);
        }
    }
    // The loop runs three times, so `best` is set.
    best.unwrap_or(Bracket {
        realtime_ns: 0,
        clock_ns: 0,
        width_ns: 0,
    })
}

/// The host's `CLOCK_MONOTONIC_RAW`.
///
/// Kernel timestamps are mapped with a fresh bracketed `(CLOCK_REALTIME,
/// CLOCK_MONOTONIC_RAW)` sample taken at each conversion, i.e. at every
/// exchange, so NTP's steering of `CLOCK_REALTIME` only matters over the
/// microseconds between the packet and the conversion.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl LocalClock for SystemClock {
    fn clock_id(&self) -> u32 {
        libc::CLOCK_MONOTONIC_RAW as u32
    }

    fn now_ns(&self) -> i64 {
        fbclock::clock_ns(libc::CLOCK_MONOTONIC_RAW as u32)
    }

    fn from_kernel_ns(&self, realtime_ns: i64) -> i64 {
        let b = bracket(libc::CLOCK_MONOTONIC_RAW as u32);
        b.clock_ns + (realtime_ns - b.realtime_ns)
    }
}

/// One piece of a drifting clock's history: `local = local0 + (base − base0)·(1 + f)`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Segment {
    base0: i64,
    local0: i64,
    frequency: f64,
}

impl Segment {
    fn map(&self, base: i64) -> i64 {
        let d = base - self.base0;
        self.local0 + d + (d as f64 * self.frequency).round() as i64
    }
}

#[derive(Debug)]
struct DriftState {
    current: Segment,
    previous: Option<Segment>,
}

impl DriftState {
    fn map(&self, base: i64) -> i64 {
        match self.previous {
            Some(p) if base < self.current.base0 => p.map(base),
            _ => self.current.map(base),
        }
    }
}

/// A simulated host oscillator: the system clock (`CLOCK_MONOTONIC_RAW`)
/// run through its own frequency error and phase.
///
/// Its [`clock_id`](LocalClock::clock_id) is `CLOCK_MONOTONIC_RAW` (that is
/// what it is built on), but its readings are *not* that clock's: readers of
/// a record published against a `DriftingClock` must call
/// `fbclock::FbClock::at(drifting.now_ns())`, never `FbClock::now()`.
/// Kernel timestamps go through the same transform, so the daemon sees
/// exactly what a host with this oscillator would see.
#[derive(Debug, Clone)]
pub struct DriftingClock {
    base: SystemClock,
    state: Arc<Mutex<DriftState>>,
}

/// Changes a [`DriftingClock`]'s frequency while it runs (from a test or a
/// simulation driver). Cloneable; all clones steer the same clock.
#[derive(Debug, Clone)]
pub struct DriftHandle {
    base: SystemClock,
    state: Arc<Mutex<DriftState>>,
}

impl DriftingClock {
    /// A clock that starts `phase_ns` ahead of `CLOCK_MONOTONIC_RAW` and runs
    /// fast by `frequency_offset` (e.g. `25e-6` = 25 ppm fast).
    #[must_use]
    pub fn new(frequency_offset: f64, phase_ns: i64) -> Self {
        let base = SystemClock;
        let now = base.now_ns();
        Self {
            base,
            state: Arc::new(Mutex::new(DriftState {
                current: Segment {
                    base0: now,
                    local0: now + phase_ns,
                    frequency: frequency_offset,
                },
                previous: None,
            })),
        }
    }

    /// A handle to change the frequency at run time.
    #[must_use]
    pub fn handle(&self) -> DriftHandle {
        DriftHandle {
            base: self.base,
            state: self.state.clone(),
        }
    }

    fn map(&self, base: i64) -> i64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(base)
    }
}

impl DriftHandle {
    /// Steps the frequency offset (fractional: `1e-6` = 1 ppm fast) from now
    /// on; the clock's reading stays continuous.
    pub fn set_frequency_offset(&self, frequency_offset: f64) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.base.now_ns();
        let local = s.map(now);
        s.previous = Some(s.current);
        s.current = Segment {
            base0: now,
            local0: local,
            frequency: frequency_offset,
        };
    }

    /// The current frequency offset.
    #[must_use]
    pub fn frequency_offset(&self) -> f64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .frequency
    }
}

impl LocalClock for DriftingClock {
    fn clock_id(&self) -> u32 {
        self.base.clock_id()
    }

    fn now_ns(&self) -> i64 {
        self.map(self.base.now_ns())
    }

    fn from_kernel_ns(&self, realtime_ns: i64) -> i64 {
        self.map(self.base.from_kernel_ns(realtime_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_maps_realtime_onto_monotonic_raw() {
        let c = SystemClock;
        let rt = fbclock::clock_ns(libc::CLOCK_REALTIME as u32);
        let before = c.now_ns();
        let mapped = c.from_kernel_ns(rt);
        let after = c.now_ns();
        // `rt` was read before `before`, within a few µs (scheduling aside).
        assert!(mapped <= after, "{mapped} > {after}");
        assert!(before - mapped < 5_000_000, "{}", before - mapped);
        assert_eq!(c.clock_id(), libc::CLOCK_MONOTONIC_RAW as u32);
        let b = bracket(c.clock_id());
        assert!(b.width_ns >= 0 && b.width_ns < 1_000_000, "{b:?}");
    }

    #[test]
    fn drifting_clock_drifts_and_steps_continuously() {
        let d = DriftingClock::new(100e-6, 5_000_000_000);
        let sys = SystemClock;
        let b0 = sys.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let b1 = sys.now_ns();
        let gained = (d.map(b1) - d.map(b0)) - (b1 - b0);
        // 100 ppm of the elapsed time, to the rounding.
        let expect = (b1 - b0) as f64 * 100e-6;
        assert!(
            (gained as f64 - expect).abs() <= 1.0,
            "{gained} vs {expect}"
        );
        assert!(d.map(b0) - b0 > 4_999_000_000);
        assert!(d.now_ns() - sys.now_ns() > 4_999_000_000);
        let h = d.handle();
        let before = d.now_ns();
        h.set_frequency_offset(-100e-6);
        let after = d.now_ns();
        assert!(after >= before && after - before < 1_000_000);
        assert!((h.frequency_offset() + 100e-6).abs() < f64::EPSILON);
        // Kernel stamps go through the same transform.
        let rt = fbclock::clock_ns(libc::CLOCK_REALTIME as u32);
        let mapped = d.from_kernel_ns(rt);
        assert!((d.now_ns() - mapped).abs() < 5_000_000);
        assert_eq!(d.clock_id(), libc::CLOCK_MONOTONIC_RAW as u32);
    }
}
