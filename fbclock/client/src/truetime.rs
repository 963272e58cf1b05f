//! TrueTime from a snapshot and one local clock reading. Pure.

use serde::Serialize;

use crate::layout::{FLAG_SYNCED, Snapshot};

/// Nanoseconds per second.
pub const NS_PER_S: i64 = 1_000_000_000;
/// Largest extrapolation from the anchor before the data counts as stale
/// (the daemon re-anchors at 100 Hz), ns.
pub const MAX_EXTRAPOLATION_NS: i64 = 10 * NS_PER_S;

/// An interval that contains true time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TrueTime {
    /// True time is not before this (ns since the epoch of the time scale).
    pub earliest_ns: i64,
    /// True time is not after this.
    pub latest_ns: i64,
}

impl TrueTime {
    /// Window of uncertainty: `latest − earliest`, ns.
    #[must_use]
    pub fn wou_ns(&self) -> i64 {
        self.latest_ns - self.earliest_ns
    }

    /// Midpoint (not "the time": true time is anywhere in the interval).
    #[must_use]
    pub fn midpoint_ns(&self) -> i64 {
        self.earliest_ns + self.wou_ns() / 2
    }

    /// Whether `t` lies in the interval.
    #[must_use]
    pub fn contains(&self, t: i64) -> bool {
        (self.earliest_ns..=self.latest_ns).contains(&t)
    }
}

/// Why no TrueTime could be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Error {
    /// The daemon has not published a synchronised state yet.
    #[error("no data: fbclockd has not synchronised yet")]
    NoData,
    /// The published anchor is too old (daemon stopped?) or in the future.
    #[error("stale data: the last update is {age_ms} ms old (fbclockd not running?)")]
    Stale {
        /// Age of the anchor, ms (negative: in the future).
        age_ms: i64,
    },
    /// The bound is saturated or larger than the caller accepts.
    #[error("window of uncertainty too big ({wou_ns} ns)")]
    WouTooBig {
        /// The window, ns (`i64::MAX` when saturated).
        wou_ns: i64,
    },
    /// Reads kept overlapping writes.
    #[error("could not read a consistent record (writer busy)")]
    Seqlock,
    /// The file is not an fbclock file of this version.
    #[error("bad shared memory file: {0}")]
    BadFile(&'static str),
    /// The file could not be opened or mapped.
    #[error("cannot map the shared memory file (errno {0})")]
    Map(i32),
}

/// TAI TrueTime at local clock reading `t_sys` (ns of the record's clock).
///
/// # Errors
/// [`Error::NoData`], [`Error::Stale`], [`Error::WouTooBig`] (saturated, or
/// above `max_wou_ns` when given).
pub fn compute(s: &Snapshot, t_sys: i64, max_wou_ns: Option<i64>) -> Result<TrueTime, Error> {
    if s.flags & FLAG_SYNCED == 0 || s.error_bound_ns == 0 {
        return Err(Error::NoData);
    }
    let d = t_sys - s.anchor_sys_ns;
    if !(-1_000_000..=MAX_EXTRAPOLATION_NS).contains(&d) {
        return Err(Error::Stale {
            age_ms: d / 1_000_000,
        });
    }
    if s.error_bound_ns == u32::MAX
        || s.holdover_ns_per_s >= f64::from(u32::MAX) / crate::layout::HOLDOVER_SCALE
    {
        return Err(Error::WouTooBig { wou_ns: i64::MAX });
    }
    let t = s.anchor_tai_ns + d + (d as f64 * s.coef).round() as i64;
    let since_s = (t_sys - s.ingress_sys_ns).max(0) as f64 / NS_PER_S as f64;
    // Round the bound up: never narrower than the arithmetic says.
    let wou = (f64::from(s.error_bound_ns) + s.holdover_ns_per_s * since_s).ceil() as i64 + 1;
    if let Some(cap) = max_wou_ns
        && 2 * wou > cap
    {
        return Err(Error::WouTooBig { wou_ns: 2 * wou });
    }
    Ok(TrueTime {
        earliest_ns: t - wou,
        latest_ns: t + wou,
    })
}

/// Converts a TAI interval to UTC with the published leap information. Each
/// end is converted on its own, so an interval straddling a leap second
/// widens rather than misleads.
#[must_use]
pub fn to_utc(s: &Snapshot, tai: TrueTime) -> TrueTime {
    let offset = |t: i64| {
        let off = if s.leap_tai_ns != 0 && t >= s.leap_tai_ns {
            s.utc_post_s
        } else {
            s.utc_pre_s
        };
        i64::from(off) * NS_PER_S
    };
    TrueTime {
        earliest_ns: tai.earliest_ns - offset(tai.earliest_ns).max(offset(tai.latest_ns)),
        latest_ns: tai.latest_ns - offset(tai.earliest_ns).min(offset(tai.latest_ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            anchor_sys_ns: 1_000 * NS_PER_S,
            anchor_tai_ns: 2_000 * NS_PER_S,
            coef: 1e-6,
            ingress_sys_ns: 1_000 * NS_PER_S,
            error_bound_ns: 500,
            holdover_ns_per_s: 100.0,
            leap_tai_ns: 0,
            utc_pre_s: 37,
            utc_post_s: 37,
            flags: FLAG_SYNCED,
        }
    }

    #[test]
    fn extrapolates_with_rate_and_grows_the_bound() {
        let s = snap();
        let tt = compute(&s, 1_002 * NS_PER_S, None).unwrap();
        // 2 s later: TAI advanced 2 s + 2 µs; bound 500 + 200 (+1 rounding).
        assert_eq!(tt.midpoint_ns(), 2_002 * NS_PER_S + 2_000);
        assert_eq!(tt.wou_ns(), 2 * 701);
        assert!(matches!(
            compute(&s, 1_011 * NS_PER_S, None),
            Err(Error::Stale { .. })
        ));
        assert!(matches!(
            compute(&s, 1_002 * NS_PER_S, Some(1000)),
            Err(Error::WouTooBig { .. })
        ));
        let mut n = s;
        n.flags = 0;
        assert_eq!(compute(&n, 1_000 * NS_PER_S, None), Err(Error::NoData));
        n = s;
        n.error_bound_ns = u32::MAX;
        assert!(matches!(
            compute(&n, 1_000 * NS_PER_S, None),
            Err(Error::WouTooBig { .. })
        ));
    }

    #[test]
    fn utc_straddling_a_leap_widens() {
        let mut s = snap();
        s.leap_tai_ns = 5_000 * NS_PER_S;
        s.utc_post_s = 38;
        let before = TrueTime {
            earliest_ns: 4_000 * NS_PER_S,
            latest_ns: 4_000 * NS_PER_S + 10,
        };
        assert_eq!(to_utc(&s, before).earliest_ns, 3_963 * NS_PER_S);
        let straddle = TrueTime {
            earliest_ns: 5_000 * NS_PER_S - 5,
            latest_ns: 5_000 * NS_PER_S + 5,
        };
        let u = to_utc(&s, straddle);
        assert_eq!(u.earliest_ns, 5_000 * NS_PER_S - 5 - 38 * NS_PER_S);
        assert_eq!(u.latest_ns, 5_000 * NS_PER_S + 5 - 37 * NS_PER_S);
    }
}
