//! Where truth time comes from: a manual clock stepped by the caller, or
//! the host's monotonic clock scaled by an acceleration factor.

/// Time source of a simulation (plain data, shared between processes).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct TimeBase {
    /// Real-time mode: truth follows `CLOCK_MONOTONIC`; otherwise it only moves by `advance`.
    pub realtime: bool,
    /// Simulated seconds per wall second in real-time mode.
    pub acceleration: f64,
    /// Monotonic time of the anchor, ns.
    pub anchor_mono_ns: i64,
    /// Truth time at the anchor, ns.
    pub anchor_truth_ns: i64,
}

impl TimeBase {
    /// A manual clock: truth moves only when the caller advances it.
    #[must_use]
    pub fn manual() -> Self {
        Self {
            realtime: false,
            acceleration: 1.0,
            anchor_mono_ns: 0,
            anchor_truth_ns: 0,
        }
    }

    /// A real-time clock anchored so that truth is `truth_ns` now.
    #[must_use]
    pub fn realtime(truth_ns: i64, acceleration: f64) -> Self {
        Self {
            realtime: true,
            acceleration,
            anchor_mono_ns: monotonic_ns(),
            anchor_truth_ns: truth_ns,
        }
    }

    /// Truth time now, or `None` for a manual clock (whose time is the state's).
    #[must_use]
    pub fn now(&self) -> Option<i64> {
        self.realtime.then(|| {
            let wall = (monotonic_ns() - self.anchor_mono_ns) as f64;
            self.anchor_truth_ns + (wall * self.acceleration) as i64
        })
    }

    /// Moves truth forward by `ns` (a manual step, or a jump of the real-time anchor).
    pub fn skip(&mut self, ns: i64) {
        self.anchor_truth_ns += ns;
    }
}

/// The host's `CLOCK_MONOTONIC`, ns. Shared by all processes on the machine,
/// which is what lets several processes agree on a real-time simulation.
#[must_use]
pub fn monotonic_ns() -> i64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The host's `CLOCK_REALTIME`, ns since the Unix epoch.
#[must_use]
pub fn realtime_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(id, &raw mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime cannot fail for a standard clock id");
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}
