//! The host's clocks, as the driver brackets card reads with them.
//!
//! The kernel's `gettimex64` brackets a PHC read with system timestamps; we
//! do the same through [`HostClock`], so that a simulated card running on a
//! manual or accelerated clock can supply a simulated host clock to match.

use std::fmt;

/// Nanoseconds per second.
pub const NS_PER_S: i64 = 1_000_000_000;

/// A host clock pair: wall time (UTC) and a monotonic clock.
pub trait HostClock: Send + Sync + fmt::Debug {
    /// Wall-clock time, ns since the Unix epoch (UTC, `CLOCK_REALTIME`).
    fn realtime_ns(&self) -> i64;
    /// A clock that never steps (`CLOCK_MONOTONIC_RAW`), ns.
    fn monotonic_ns(&self) -> i64;
}

/// The machine's own clocks via `clock_gettime` (vDSO, no system call).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl HostClock for SystemClock {
    fn realtime_ns(&self) -> i64 {
        clock_ns(libc::CLOCK_REALTIME)
    }

    fn monotonic_ns(&self) -> i64 {
        clock_ns(libc::CLOCK_MONOTONIC_RAW)
    }
}

/// Reads one POSIX clock, ns.
#[must_use]
pub fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and `id` a clock id; the call only writes `ts`.
    let rc = unsafe { libc::clock_gettime(id, &raw mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime on a standard clock cannot fail");
    ts.tv_sec * NS_PER_S + ts.tv_nsec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_moves_forward() {
        let c = SystemClock;
        let (a, b) = (c.monotonic_ns(), c.monotonic_ns());
        assert!(b >= a);
        assert!(c.realtime_ns() > 1_700_000_000 * NS_PER_S);
    }
}
