//! The shared-memory layout, version 1 (see `fbclock/PROTOCOL.md`).
//!
//! [`Shared`] is the whole 128-byte file. The header is written once; the
//! record sits on its own cache line behind a single-writer seqlock.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering, fence};

/// File magic.
pub const MAGIC: [u8; 8] = *b"TCFBCLK\0";
/// Layout version.
pub const VERSION: u32 = 1;
/// File and struct size.
pub const SIZE: u32 = 128;
/// How often a reader retries a torn read before giving up.
pub const READ_RETRIES: u32 = 1000;
/// Fixed-point scale of `holdover_ns_per_s`.
pub const HOLDOVER_SCALE: f64 = 65_536.0;

/// Record flag: at least one exchange was accepted.
pub const FLAG_SYNCED: u32 = 1;
/// Record flag: no exchange accepted for two intervals (the bound is growing).
pub const FLAG_HOLDOVER: u32 = 2;
/// Record flag: the grandmaster announces holdover (clockClass 7).
pub const FLAG_GM_HOLDOVER: u32 = 4;

/// Static part of the file.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: u32,
    /// [`SIZE`].
    pub size: u32,
    /// Grandmaster clock identity.
    pub gm_identity: AtomicU64,
    /// Grandmaster clockClass and clockAccuracy (low two bytes).
    pub gm_quality: AtomicU32,
    /// POSIX clock id of the anchors.
    pub clock_id: u32,
    reserved: [u64; 4],
}

/// The seqlock-protected record; every field an atomic so that concurrent
/// reads are defined behaviour (the seqlock makes them consistent).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Record {
    /// Sequence: odd while being written, 0 = never written.
    pub seq: AtomicU64,
    anchor_sys_ns: AtomicI64,
    anchor_tai_ns: AtomicI64,
    coef: AtomicU64,
    ingress_sys_ns: AtomicI64,
    error_bound_ns: AtomicU32,
    holdover_ns_per_s: AtomicU32,
    leap_tai_ns: AtomicI64,
    utc: AtomicU32,
    flags: AtomicU32,
}

/// The whole shared file.
#[repr(C)]
#[derive(Debug)]
pub struct Shared {
    /// Static part.
    pub header: Header,
    /// The record.
    pub record: Record,
}

const _: () = assert!(std::mem::size_of::<Shared>() == SIZE as usize);
const _: () = assert!(std::mem::size_of::<Record>() == 64);
const _: () = assert!(std::mem::offset_of!(Shared, record) == 64);

/// A consistent copy of the record.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// Local clock at the anchor, ns.
    pub anchor_sys_ns: i64,
    /// TAI at the anchor, ns.
    pub anchor_tai_ns: i64,
    /// TAI rate relative to the local clock, minus 1.
    pub coef: f64,
    /// Local clock at the last accepted exchange, ns.
    pub ingress_sys_ns: i64,
    /// Error bound at the last exchange, ns (`u32::MAX` = saturated).
    pub error_bound_ns: u32,
    /// Bound growth, ns per second (unscaled).
    pub holdover_ns_per_s: f64,
    /// TAI instant of the announced UTC offset change, 0 = none.
    pub leap_tai_ns: i64,
    /// TAI − UTC before `leap_tai_ns`.
    pub utc_pre_s: i16,
    /// TAI − UTC from `leap_tai_ns` on.
    pub utc_post_s: i16,
    /// Flags (`FLAG_*`).
    pub flags: u32,
}

impl Shared {
    /// A zeroed file image with the header set (the writer's starting point).
    #[must_use]
    pub fn new(clock_id: u32) -> Self {
        Self {
            header: Header {
                magic: MAGIC,
                version: VERSION,
                size: SIZE,
                gm_identity: AtomicU64::new(0),
                gm_quality: AtomicU32::new(0),
                clock_id,
                reserved: [0; 4],
            },
            record: Record {
                seq: AtomicU64::new(0),
                anchor_sys_ns: AtomicI64::new(0),
                anchor_tai_ns: AtomicI64::new(0),
                coef: AtomicU64::new(0),
                ingress_sys_ns: AtomicI64::new(0),
                error_bound_ns: AtomicU32::new(0),
                holdover_ns_per_s: AtomicU32::new(0),
                leap_tai_ns: AtomicI64::new(0),
                utc: AtomicU32::new(0),
                flags: AtomicU32::new(0),
            },
        }
    }

    /// Whether the header is one this library reads.
    #[must_use]
    pub fn header_ok(&self) -> bool {
        self.header.magic == MAGIC && self.header.version == VERSION && self.header.size == SIZE
    }

    /// Publishes `s` (single writer only).
    pub fn write(&self, s: &Snapshot) {
        let r = &self.record;
        let seq = r.seq.load(Ordering::Relaxed);
        let odd = if seq.is_multiple_of(2) {
            seq.wrapping_add(1)
        } else {
            seq
        };
        r.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        r.anchor_sys_ns.store(s.anchor_sys_ns, Ordering::Relaxed);
        r.anchor_tai_ns.store(s.anchor_tai_ns, Ordering::Relaxed);
        r.coef.store(s.coef.to_bits(), Ordering::Relaxed);
        r.ingress_sys_ns.store(s.ingress_sys_ns, Ordering::Relaxed);
        r.error_bound_ns.store(s.error_bound_ns, Ordering::Relaxed);
        let h = (s.holdover_ns_per_s * HOLDOVER_SCALE).clamp(0.0, f64::from(u32::MAX)) as u32;
        r.holdover_ns_per_s.store(h, Ordering::Relaxed);
        r.leap_tai_ns.store(s.leap_tai_ns, Ordering::Relaxed);
        r.utc.store(
            u32::from(s.utc_pre_s as u16) | u32::from(s.utc_post_s as u16) << 16,
            Ordering::Relaxed,
        );
        r.flags.store(s.flags, Ordering::Relaxed);
        let mut next = odd.wrapping_add(1);
        if next == 0 {
            next = 2;
        }
        r.seq.store(next, Ordering::Release);
    }

    /// Reads a consistent snapshot: `Ok(None)` if never written, `Err(())`
    /// if every retry saw a write in progress.
    #[allow(clippy::result_unit_err)]
    pub fn read(&self) -> Result<Option<Snapshot>, ()> {
        let r = &self.record;
        for _ in 0..READ_RETRIES {
            let s1 = r.seq.load(Ordering::Acquire);
            if s1 == 0 {
                return Ok(None);
            }
            if !s1.is_multiple_of(2) {
                std::hint::spin_loop();
                continue;
            }
            let utc = r.utc.load(Ordering::Relaxed);
            let snap = Snapshot {
                anchor_sys_ns: r.anchor_sys_ns.load(Ordering::Relaxed),
                anchor_tai_ns: r.anchor_tai_ns.load(Ordering::Relaxed),
                coef: f64::from_bits(r.coef.load(Ordering::Relaxed)),
                ingress_sys_ns: r.ingress_sys_ns.load(Ordering::Relaxed),
                error_bound_ns: r.error_bound_ns.load(Ordering::Relaxed),
                holdover_ns_per_s: f64::from(r.holdover_ns_per_s.load(Ordering::Relaxed))
                    / HOLDOVER_SCALE,
                leap_tai_ns: r.leap_tai_ns.load(Ordering::Relaxed),
                utc_pre_s: utc as u16 as i16,
                utc_post_s: (utc >> 16) as u16 as i16,
                flags: r.flags.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if r.seq.load(Ordering::Relaxed) == s1 {
                return Ok(Some(snap));
            }
        }
        Err(())
    }
}
