//! # fbclock — TrueTime for applications
//!
//! `fbclockd` keeps a model of TAI against the host's clock and publishes it,
//! with an error bound and its growth rate, in a 128-byte shared-memory file
//! (layout in `fbclock/PROTOCOL.md`). This library maps the file read-only and
//! answers [`FbClock::now`] with an interval `[earliest, latest]` that contains
//! true time, using one `clock_gettime` and a lock-free seqlock read:
//!
//! ```no_run
//! let clock = fbclock::FbClock::open(fbclock::DEFAULT_PATH)?;
//! let tt = clock.now()?;              // TAI
//! let ts = tt.latest_ns;              // a commit timestamp
//! clock.commit_wait(ts)?;             // returns once earliest > ts
//! # Ok::<(), fbclock::Error>(())
//! ```
//!
//! A C ABI ([`capi`], header `include/fbclock.h`) serves C, Go and Python.

pub mod capi;
pub mod layout;
pub mod shm;
pub mod truetime;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use layout::Snapshot;
pub use truetime::{Error, TrueTime};

/// Where `fbclockd` publishes by default.
pub const DEFAULT_PATH: &str = "/run/timecard/fbclock";

/// Reads one POSIX clock, ns.
#[must_use]
pub fn clock_ns(clock_id: u32) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    unsafe { libc::clock_gettime(clock_id as libc::clockid_t, &raw mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// A client of the shared TrueTime record (clones share the mapping).
#[derive(Debug, Clone)]
pub struct FbClock {
    map: Arc<shm::Mapping>,
    clock_id: u32,
    max_wou_ns: Option<i64>,
}

impl FbClock {
    /// Maps the daemon's file.
    ///
    /// # Errors
    /// [`Error::Map`] (e.g. `ENOENT` when fbclockd is not running) or [`Error::BadFile`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self::from_mapping(Arc::new(shm::Mapping::open(
            path.as_ref(),
        )?)))
    }

    /// A client over an existing mapping (in-process use, simulations, tests).
    #[must_use]
    pub fn from_mapping(map: Arc<shm::Mapping>) -> Self {
        let clock_id = map.shared().header.clock_id;
        Self {
            map,
            clock_id,
            max_wou_ns: None,
        }
    }

    /// Refuse intervals wider than `max` (`Error::WouTooBig`).
    #[must_use]
    pub fn with_max_wou(mut self, max: Duration) -> Self {
        self.max_wou_ns = Some(i64::try_from(max.as_nanos()).unwrap_or(i64::MAX));
        self
    }

    /// The consistent record as published.
    ///
    /// # Errors
    /// [`Error::NoData`] if never written, [`Error::Seqlock`] if every read was torn.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        self.map
            .shared()
            .read()
            .map_err(|()| Error::Seqlock)?
            .ok_or(Error::NoData)
    }

    /// TAI TrueTime now.
    ///
    /// # Errors
    /// No data, stale data, WOU too big, torn reads.
    pub fn now(&self) -> Result<TrueTime, Error> {
        let s = self.snapshot()?;
        truetime::compute(&s, clock_ns(self.clock_id), self.max_wou_ns)
    }

    /// TAI TrueTime at a given reading of the local clock (for simulations that
    /// supply their own clock).
    ///
    /// # Errors
    /// As [`FbClock::now`].
    pub fn at(&self, t_sys: i64) -> Result<TrueTime, Error> {
        let s = self.snapshot()?;
        truetime::compute(&s, t_sys, self.max_wou_ns)
    }

    /// UTC TrueTime now (leap-second aware).
    ///
    /// # Errors
    /// As [`FbClock::now`].
    pub fn now_utc(&self) -> Result<TrueTime, Error> {
        let s = self.snapshot()?;
        let tai = truetime::compute(&s, clock_ns(self.clock_id), self.max_wou_ns)?;
        Ok(truetime::to_utc(&s, tai))
    }

    /// Commit-wait: returns once `earliest > ts` (TAI ns), i.e. once `ts` is
    /// certainly in the past everywhere. Sleeps for most of the wait and spins
    /// for the last microseconds.
    ///
    /// # Errors
    /// As [`FbClock::now`], if TrueTime becomes unavailable while waiting.
    pub fn commit_wait(&self, ts: i64) -> Result<TrueTime, Error> {
        loop {
            let tt = self.now()?;
            if tt.earliest_ns > ts {
                return Ok(tt);
            }
            let left = ts - tt.earliest_ns;
            if left > 200_000 {
                std::thread::sleep(Duration::from_nanos(
                    u64::try_from(left - 100_000).unwrap_or(0),
                ));
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// The grandmaster's identity and (clockClass, clockAccuracy).
    #[must_use]
    pub fn grandmaster(&self) -> (u64, u8, u8) {
        use std::sync::atomic::Ordering::Relaxed;
        let h = &self.map.shared().header;
        let q = h.gm_quality.load(Relaxed);
        (h.gm_identity.load(Relaxed), q as u8, (q >> 8) as u8)
    }
}

/// The daemon side: publishes snapshots.
#[derive(Debug)]
pub struct Publisher {
    map: Arc<shm::Mapping>,
}

impl Publisher {
    /// Creates the file at `path` (world-readable) for `clock_id` anchors.
    ///
    /// # Errors
    /// The OS error with the path.
    pub fn create(path: impl AsRef<Path>, clock_id: u32) -> std::io::Result<Self> {
        Ok(Self {
            map: Arc::new(shm::Mapping::create(path.as_ref(), clock_id)?),
        })
    }

    /// A publisher with an in-memory record (no file), for in-process use.
    #[must_use]
    pub fn in_memory(clock_id: u32) -> Self {
        Self {
            map: Arc::new(shm::Mapping::in_memory(clock_id)),
        }
    }

    /// A client reading this publisher's record in-process.
    #[must_use]
    pub fn client(&self) -> FbClock {
        FbClock::from_mapping(self.map.clone())
    }

    /// Publishes one snapshot.
    pub fn publish(&self, s: &Snapshot) {
        self.map.shared().write(s);
    }

    /// Records the grandmaster's identity and quality.
    pub fn set_grandmaster(&self, identity: u64, clock_class: u8, clock_accuracy: u8) {
        use std::sync::atomic::Ordering::Relaxed;
        let h = &self.map.shared().header;
        h.gm_identity.store(identity, Relaxed);
        h.gm_quality.store(
            u32::from(clock_class) | u32::from(clock_accuracy) << 8,
            Relaxed,
        );
    }

    /// The shared record, to read back (tests, in-process clients).
    #[must_use]
    pub fn shared(&self) -> &layout::Shared {
        self.map.shared()
    }
}
