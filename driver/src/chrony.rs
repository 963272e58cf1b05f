//! The card as a reference clock for `chronyd`, through chrony's `SOCK`
//! refclock: the sample format, the trust policy and [`ChronyFeed`], which
//! sends them. `timecard chrony` runs a feed on its own; `ptp-server
//! --chrony-sock` and `timecard up --chrony-sock` run one beside the PTP
//! server, in the process that owns the card (a card behind `vfio-pci` has
//! one owner).
//!
//! chronyd creates a Unix datagram socket for `refclock SOCK PATH`; a
//! client sends it one `struct sock_sample` per measurement
//! (`refclock_sock.c`):
//!
//! ```c
//! struct sock_sample {
//!   struct timeval tv;  /* system time of the measurement */
//!   double offset;      /* reference (card) time minus system time at tv, s */
//!   int pulse;          /* 0: a full time sample; 1: a PPS edge (fraction only) */
//!   int leap;           /* 0 normal, 1 insert leap second, 2 delete leap second */
//!   int _pad;
//!   int magic;          /* 0x534f434b ("SOCK") */
//! };
//! ```
//!
//! 40 bytes on 64-bit Linux, native byte order. chronyd drops datagrams of
//! another length or magic.
//!
//! **One sample per second.** Each second (the feed's caller keeps the pace) the card's time is latched with a
//! host bracket (the driver's `gettimex64`); `tv` is the bracket's midpoint
//! truncated to the microsecond `timeval` carries, and the offset is taken
//! against that truncated instant, so nothing is lost to the truncation.
//!
//! **Timescale.** The card's clock keeps TAI (the driver's
//! [`TimeReading::card_tai_ns`](crate::TimeReading::card_tai_ns)); chrony wants UTC, so the card's own TAI−UTC
//! (TOD block, learned from GNSS) is subtracted. Without a valid TAI−UTC no
//! sample is sent: a guessed offset would be whole seconds wrong after the
//! next leap second.
//!
//! **Trust.** Samples are sent while the card is locked (`IN_SYNC`, following
//! GNSS through the TOD or PPS source, PPS present), and in holdover (the card
//! was locked and its status still says in sync or holdover: GNSS lost, or
//! the driver's supervisor rejected a spoofed GNSS time and switched to
//! `REGS`) for at most `--max-holdover` after this process last saw it
//! locked. A card in holdover whose lock this process never saw has a
//! holdover of unknown age and is not used. Nothing is sent while the card
//! is acquiring, uninitialised (clock source `NONE`), unreadable (a time
//! jump the driver's continuity guard rejects, a card that does not
//! respond), around a leap second (the two seconds before it and three after
//! TAI−UTC changes, when card and receiver may disagree about the offset);
//! chronyd then coasts on its own estimate and marks the source unreachable
//! when the gap lasts.
//!
//! **Leap seconds.** The `leap` field carries the card's announcement (TOD
//! `leap_announce` with `leap_61` → insert, `leap_59` → delete). chronyd
//! applies it only on the last day of June or December.
//!
//! A feed only reads the card (a time latch and status registers); whoever
//! owns the card keeps initialising and supervising it.

use std::fmt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use timecard_hw::regs::ClockSource;

use crate::{CardStatus, TimeCard, TimeReading};

/// `sock_sample.magic`.
pub const SOCK_MAGIC: i32 = 0x534f_434b;
/// Size of `struct sock_sample` on 64-bit Linux.
pub const SOCK_SAMPLE_LEN: usize = 40;
/// Nanoseconds per second.
const NS_PER_S: i64 = 1_000_000_000;
/// No samples this long after TAI−UTC changed (a leap second passed).
const AFTER_LEAP_NS: i64 = 3 * NS_PER_S;
/// No samples while the leap second is this close (seconds, TOD `leap` register).
const BEFORE_LEAP_S: i32 = 2;

/// The leap-second announcement in a sample (`sock_sample.leap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leap {
    /// No leap second announced.
    Normal = 0,
    /// 23:59:60 will be inserted.
    Insert = 1,
    /// 23:59:59 will be deleted.
    Delete = 2,
}

impl fmt::Display for Leap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Normal => "none",
            Self::Insert => "insert second",
            Self::Delete => "delete second",
        })
    }
}

/// One measurement for chronyd (`struct sock_sample`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SockSample {
    /// System time of the measurement, whole seconds since the Unix epoch.
    pub tv_sec: i64,
    /// System time of the measurement, microseconds (0..1e6).
    pub tv_usec: i64,
    /// Reference (card, UTC) time minus system time at `tv`, seconds.
    pub offset: f64,
    /// The leap-second announcement.
    pub leap: Leap,
}

impl SockSample {
    /// The datagram: `struct sock_sample` in native byte order (`pulse` 0).
    #[must_use]
    pub fn to_bytes(self) -> [u8; SOCK_SAMPLE_LEN] {
        let mut b = [0u8; SOCK_SAMPLE_LEN];
        b[0..8].copy_from_slice(&self.tv_sec.to_ne_bytes());
        b[8..16].copy_from_slice(&self.tv_usec.to_ne_bytes());
        b[16..24].copy_from_slice(&self.offset.to_ne_bytes());
        b[24..28].copy_from_slice(&0i32.to_ne_bytes());
        b[28..32].copy_from_slice(&(self.leap as i32).to_ne_bytes());
        b[32..36].copy_from_slice(&0i32.to_ne_bytes());
        b[36..40].copy_from_slice(&SOCK_MAGIC.to_ne_bytes());
        b
    }
}

/// Why no sample was sent this second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Clock source `NONE`: no driver brought the card up since power-on.
    NotInitialised,
    /// Acquiring: neither locked nor in holdover.
    NotLocked,
    /// In holdover, but this process never saw the card locked.
    HoldoverUnknownAge,
    /// In holdover for longer than `--max-holdover`.
    HoldoverExpired {
        /// Seconds since the card was last seen locked.
        seconds: i64,
    },
    /// The card does not know TAI−UTC.
    UtcUnknown,
    /// A leap second is imminent or has just passed.
    LeapSecond,
    /// The card could not be read.
    Unreadable(String),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInitialised => f.write_str(
                "card not initialised (clock source NONE); start the appliance (`timecard up`) that owns it",
            ),
            Self::NotLocked => f.write_str("card not locked to GNSS and not in holdover"),
            Self::HoldoverUnknownAge => {
                f.write_str("card in holdover since before this process saw it locked")
            }
            Self::HoldoverExpired { seconds } => write!(
                f,
                "card in holdover for {seconds} s, beyond --max-holdover"
            ),
            Self::UtcUnknown => f.write_str("card does not know TAI-UTC yet"),
            Self::LeapSecond => f.write_str("leap second in progress"),
            Self::Unreadable(e) => write!(f, "card unreadable: {e}"),
        }
    }
}

/// What to do with one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Send this sample; `holdover` when the card is coasting.
    Send {
        /// The sample.
        sample: SockSample,
        /// The card is in holdover, not locked.
        holdover: bool,
    },
    /// Send nothing.
    Skip(Skip),
}

/// The trust policy and the sample maths, fed one reading per second.
#[derive(Debug, Clone)]
pub struct Exporter {
    max_holdover_ns: i64,
    /// Host monotonic time the card was last seen locked.
    last_locked_ns: Option<i64>,
    /// TAI−UTC last seen, and the host monotonic time it last changed.
    utc: Option<(i32, Option<i64>)>,
}

impl Exporter {
    /// An exporter that trusts holdover for at most `max_holdover`.
    #[must_use]
    pub fn new(max_holdover: Duration) -> Self {
        Self {
            max_holdover_ns: i64::try_from(max_holdover.as_nanos()).unwrap_or(i64::MAX),
            last_locked_ns: None,
            utc: None,
        }
    }

    /// Judges a card reading taken at host monotonic time `mono_ns`.
    #[must_use]
    pub fn assess(&mut self, status: &CardStatus, reading: &TimeReading, mono_ns: i64) -> Verdict {
        let following = matches!(
            status.clock_source,
            Some(ClockSource::Tod | ClockSource::Pps)
        );
        if status.clock_source == Some(ClockSource::None) {
            return Verdict::Skip(Skip::NotInitialised);
        }
        let locked = status.in_sync && !status.in_holdover && following && !status.pps_lost;
        let holdover = if locked {
            self.last_locked_ns = Some(mono_ns);
            false
        } else if status.in_sync || status.in_holdover {
            let Some(since) = self.last_locked_ns else {
                return Verdict::Skip(Skip::HoldoverUnknownAge);
            };
            if mono_ns - since > self.max_holdover_ns {
                return Verdict::Skip(Skip::HoldoverExpired {
                    seconds: (mono_ns - since) / NS_PER_S,
                });
            }
            true
        } else {
            return Verdict::Skip(Skip::NotLocked);
        };
        if !status.utc.utc_valid {
            return Verdict::Skip(Skip::UtcUnknown);
        }
        let tai_utc = i32::from(status.utc.offset_s);
        let changed_at = match self.utc {
            Some((old, at)) if old == tai_utc => at,
            Some(_) => Some(mono_ns),
            None => None,
        };
        self.utc = Some((tai_utc, changed_at));
        let announced = status.utc.leap_announce && status.utc.leap_valid;
        if changed_at.is_some_and(|t| mono_ns - t < AFTER_LEAP_NS)
            || (announced && (1..=BEFORE_LEAP_S).contains(&status.seconds_to_leap))
        {
            return Verdict::Skip(Skip::LeapSecond);
        }
        let leap = match (announced, status.utc.leap_61, status.utc.leap_59) {
            (true, true, _) => Leap::Insert,
            (true, false, true) => Leap::Delete,
            _ => Leap::Normal,
        };
        Verdict::Send {
            sample: sample(reading, tai_utc, leap),
            holdover,
        }
    }
}

/// The sample for a reading: system time at the bracket's midpoint (to the
/// microsecond) and the card's UTC minus that instant.
#[must_use]
pub fn sample(reading: &TimeReading, tai_utc_s: i32, leap: Leap) -> SockSample {
    let mid = reading.pre_ns + (reading.post_ns - reading.pre_ns) / 2;
    let tv_us = mid.div_euclid(1_000);
    let card_utc = reading.card_tai_ns - i64::from(tai_utc_s) * NS_PER_S;
    // Offsets are small in practice; f64 keeps ns resolution up to ~100 days.
    #[allow(clippy::cast_precision_loss)]
    let offset = (card_utc - tv_us * 1_000) as f64 / 1e9;
    SockSample {
        tv_sec: tv_us.div_euclid(1_000_000),
        tv_usec: tv_us.rem_euclid(1_000_000),
        offset,
        leap,
    }
}

/// What one [`ChronyFeed::offer`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Fed {
    /// chronyd got this sample.
    Sent {
        /// The sample.
        sample: SockSample,
        /// The card is in holdover, not locked.
        holdover: bool,
    },
    /// Nothing was sent, for this reason.
    Skipped(Skip),
    /// The sample could not be delivered: chronyd not running (or its socket
    /// elsewhere), no permission to send to it, or its queue full.
    Undelivered {
        /// What kind of failure.
        kind: std::io::ErrorKind,
        /// The OS error.
        error: String,
    },
}

impl Fed {
    /// One line saying what the feed is doing, without the figures that
    /// change each second (print it when it changes, with [`Fed::detail`]).
    #[must_use]
    pub fn state(&self, sock: &Path) -> String {
        let sock = sock.display();
        match self {
            Self::Sent { sample, holdover } => {
                let what = if *holdover {
                    "card in holdover"
                } else {
                    "card locked to GNSS"
                };
                format!("sending: {what}, leap {}", sample.leap)
            }
            Self::Skipped(Skip::HoldoverExpired { .. }) => {
                "not sending: card in holdover beyond --max-holdover".into()
            }
            Self::Skipped(Skip::Unreadable(_)) => "not sending: card unreadable".into(),
            Self::Skipped(why) => format!("not sending: {why}"),
            Self::Undelivered { kind, .. } => match kind {
                std::io::ErrorKind::WouldBlock => {
                    format!(
                        "chronyd's queue on {sock} is full (chronyd not reading): samples dropped"
                    )
                }
                std::io::ErrorKind::PermissionDenied => format!(
                    "no permission to send to {sock} (chronyd makes it root's, mode 0755: give this user write access)"
                ),
                _ => format!("chronyd not listening on {sock}"),
            },
        }
    }

    /// The figures [`Fed::state`] leaves out: the holdover's age, why the
    /// card was unreadable, the OS error of a failed send.
    #[must_use]
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Skipped(why @ (Skip::HoldoverExpired { .. } | Skip::Unreadable(_))) => {
                Some(why.to_string())
            }
            Self::Undelivered { error, .. } => Some(error.clone()),
            Self::Sent { .. } | Self::Skipped(_) => None,
        }
    }
}

/// A feed of chronyd's `refclock SOCK PATH`: the [`Exporter`] and the
/// datagram socket, offered one card reading a second by its caller.
#[derive(Debug)]
pub struct ChronyFeed {
    sock: PathBuf,
    socket: UnixDatagram,
    exporter: Exporter,
    sent: u64,
}

impl ChronyFeed {
    /// A feed of chronyd's socket at `sock` (chronyd creates it; it need not
    /// exist yet), trusting holdover for at most `max_holdover`.
    ///
    /// # Errors
    /// The process cannot create a Unix datagram socket.
    pub fn new(sock: PathBuf, max_holdover: Duration) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        // Never wait for chronyd: a chronyd that stops reading fills the
        // socket's queue, and a blocking send would then stall the caller
        // (the PTP server's card sampler). A full queue loses the sample.
        socket.set_nonblocking(true)?;
        Ok(Self {
            sock,
            socket,
            exporter: Exporter::new(max_holdover),
            sent: 0,
        })
    }

    /// chronyd's socket path.
    #[must_use]
    pub fn sock(&self) -> &Path {
        &self.sock
    }

    /// Samples delivered so far.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Reads `card` (status, then a time latch) and offers the reading.
    pub fn tick(&mut self, card: &TimeCard) -> Fed {
        match card.status().and_then(|st| Ok((st, card.read_time()?))) {
            Ok((status, reading)) => self.offer(&status, &reading, card.host().monotonic_ns()),
            Err(e) => Fed::Skipped(Skip::Unreadable(e.to_string())),
        }
    }

    /// Judges a reading taken at host monotonic time `mono_ns` and sends its
    /// sample when the card is trusted.
    pub fn offer(&mut self, status: &CardStatus, reading: &TimeReading, mono_ns: i64) -> Fed {
        match self.exporter.assess(status, reading, mono_ns) {
            Verdict::Send { sample, holdover } => match self.send(&sample) {
                Ok(()) => {
                    self.sent += 1;
                    Fed::Sent { sample, holdover }
                }
                Err(e) => Fed::Undelivered {
                    kind: e.kind(),
                    error: e.to_string(),
                },
            },
            Verdict::Skip(why) => Fed::Skipped(why),
        }
    }

    fn send(&self, sample: &SockSample) -> std::io::Result<()> {
        let n = self.socket.send_to(&sample.to_bytes(), &self.sock)?;
        if n == SOCK_SAMPLE_LEN {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "short send: {n} of {SOCK_SAMPLE_LEN} bytes"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecard_hw::regs::tod::UtcStatus;

    fn locked() -> CardStatus {
        CardStatus {
            in_sync: true,
            in_holdover: false,
            clock_source: Some(ClockSource::Tod),
            pps_lost: false,
            pps_filter_error: false,
            utc: UtcStatus {
                offset_s: 37,
                utc_valid: true,
                leap_announce: false,
                leap_59: false,
                leap_61: false,
                leap_valid: true,
            },
            seconds_to_leap: 0,
            servo_offset_ns: 0,
            servo_drift: 0,
            antenna_status: 0,
            satellites: (8, 12),
            tod_status: 0,
            tod_protocol: "NMEA",
            ts_window_adjust_ns: 0,
        }
    }

    /// A reading whose card UTC is `card_minus_host_ns` ahead of the host at `host_ns`.
    fn reading(host_ns: i64, card_minus_host_ns: i64) -> TimeReading {
        TimeReading {
            card_tai_ns: host_ns + 37 * NS_PER_S + card_minus_host_ns,
            pre_ns: host_ns - 1_000,
            post_ns: host_ns + 1_000,
        }
    }

    #[test]
    fn datagram_matches_struct_sock_sample() {
        // 64-bit Linux: timeval 16 bytes, then double, then four ints.
        assert_eq!(std::mem::size_of::<libc::timeval>(), 16);
        let s = SockSample {
            tv_sec: 1_795_000_000,
            tv_usec: 123_456,
            offset: -0.5,
            leap: Leap::Insert,
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), 40);
        assert_eq!(
            i64::from_ne_bytes(b[0..8].try_into().unwrap()),
            1_795_000_000
        );
        assert_eq!(i64::from_ne_bytes(b[8..16].try_into().unwrap()), 123_456);
        assert_eq!(f64::from_ne_bytes(b[16..24].try_into().unwrap()), -0.5);
        assert_eq!(
            i32::from_ne_bytes(b[24..28].try_into().unwrap()),
            0,
            "pulse"
        );
        assert_eq!(i32::from_ne_bytes(b[28..32].try_into().unwrap()), 1, "leap");
        assert_eq!(&b[36..40], &0x534f_434bi32.to_ne_bytes());
    }

    #[test]
    fn offset_is_card_utc_minus_the_truncated_system_time() {
        let host = 1_795_000_000 * NS_PER_S + 123_456_789;
        let s = sample(&reading(host, 2_500), 37, Leap::Normal);
        assert_eq!((s.tv_sec, s.tv_usec), (1_795_000_000, 123_456));
        // 789 ns lost to the timeval's truncation come back in the offset.
        assert!((s.offset - 3.289e-6).abs() < 1e-12, "{}", s.offset);
        // TAI is not UTC: a card 37 s "ahead" in TAI agrees with the host.
        let s = sample(&reading(host, 0), 37, Leap::Normal);
        assert!(s.offset.abs() < 1e-6);
    }

    #[test]
    fn sends_when_locked_and_in_young_holdover_only() {
        let mut e = Exporter::new(Duration::from_secs(10));
        let host = 1_795_000_000 * NS_PER_S;
        let r = reading(host, 0);
        // Holdover before this process saw a lock: unknown age.
        let mut hold = locked();
        hold.in_holdover = true;
        hold.pps_lost = true;
        assert_eq!(
            e.assess(&hold, &r, 0),
            Verdict::Skip(Skip::HoldoverUnknownAge)
        );
        assert!(matches!(
            e.assess(&locked(), &r, NS_PER_S),
            Verdict::Send {
                holdover: false,
                ..
            }
        ));
        assert!(matches!(
            e.assess(&hold, &r, 5 * NS_PER_S),
            Verdict::Send { holdover: true, .. }
        ));
        // The supervisor's REGS holdover after a rejected jump: in sync, not following GNSS.
        let mut regs = locked();
        regs.clock_source = Some(ClockSource::Regs);
        assert!(matches!(
            e.assess(&regs, &r, 6 * NS_PER_S),
            Verdict::Send { holdover: true, .. }
        ));
        assert_eq!(
            e.assess(&hold, &r, 12 * NS_PER_S),
            Verdict::Skip(Skip::HoldoverExpired { seconds: 11 })
        );
        let mut acquiring = locked();
        acquiring.in_sync = false;
        assert_eq!(
            e.assess(&acquiring, &r, 13 * NS_PER_S),
            Verdict::Skip(Skip::NotLocked)
        );
        let mut fresh = acquiring.clone();
        fresh.clock_source = Some(ClockSource::None);
        assert_eq!(
            e.assess(&fresh, &r, 14 * NS_PER_S),
            Verdict::Skip(Skip::NotInitialised)
        );
        let mut no_utc = locked();
        no_utc.utc.utc_valid = false;
        assert_eq!(
            e.assess(&no_utc, &r, 15 * NS_PER_S),
            Verdict::Skip(Skip::UtcUnknown)
        );
    }

    #[test]
    fn leap_seconds_are_announced_and_their_edges_skipped() {
        let mut e = Exporter::new(Duration::from_secs(10));
        let host = 1_795_000_000 * NS_PER_S;
        let mut st = locked();
        st.utc.leap_announce = true;
        st.utc.leap_61 = true;
        st.seconds_to_leap = 100;
        let Verdict::Send { sample, .. } = e.assess(&st, &reading(host, 0), 0) else {
            panic!("not sent");
        };
        assert_eq!(sample.leap, Leap::Insert);
        assert_eq!(sample.to_bytes()[28], 1);
        st.utc.leap_61 = false;
        st.utc.leap_59 = true;
        let Verdict::Send { sample, .. } = e.assess(&st, &reading(host, 0), NS_PER_S) else {
            panic!("not sent");
        };
        assert_eq!(sample.leap, Leap::Delete);
        st.seconds_to_leap = 1;
        assert_eq!(
            e.assess(&st, &reading(host, 0), 2 * NS_PER_S),
            Verdict::Skip(Skip::LeapSecond)
        );
        // Past it: TAI-UTC is 38, skipped for three seconds, then sent as UTC.
        let mut after = locked();
        after.utc.offset_s = 38;
        let r = TimeReading {
            card_tai_ns: host + 38 * NS_PER_S,
            ..reading(host, 0)
        };
        assert_eq!(
            e.assess(&after, &r, 4 * NS_PER_S),
            Verdict::Skip(Skip::LeapSecond)
        );
        let Verdict::Send { sample, .. } = e.assess(&after, &r, 7 * NS_PER_S) else {
            panic!("not sent");
        };
        assert!(sample.offset.abs() < 1e-6, "{}", sample.offset);
        assert_eq!(sample.leap, Leap::Normal);
    }

    #[test]
    fn a_feed_delivers_trusted_samples_to_the_socket_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chronyd.sock");
        let mut feed = ChronyFeed::new(path.clone(), Duration::from_secs(10)).unwrap();
        let host = 1_795_000_000 * NS_PER_S;
        // Nobody listening yet: reported, not counted.
        let fed = feed.offer(&locked(), &reading(host, 0), 0);
        assert!(matches!(fed, Fed::Undelivered { .. }), "{fed:?}");
        assert!(fed.state(&path).starts_with("chronyd not listening on "));
        assert!(fed.detail().is_some_and(|d| d.contains("No such file")));
        let chronyd = UnixDatagram::bind(&path).unwrap();
        let fed = feed.offer(&locked(), &reading(host, 2_000), NS_PER_S);
        assert_eq!(fed.state(&path), "sending: card locked to GNSS, leap none");
        let mut buf = [0u8; 64];
        let n = chronyd.recv(&mut buf).unwrap();
        assert_eq!(n, SOCK_SAMPLE_LEN);
        let Fed::Sent { sample, .. } = fed else {
            panic!("{fed:?}")
        };
        assert_eq!(&buf[..n], &sample.to_bytes());
        assert_eq!(feed.sent(), 1);
        let mut acquiring = locked();
        acquiring.in_sync = false;
        let fed = feed.offer(&acquiring, &reading(host, 0), 2 * NS_PER_S);
        assert_eq!(
            fed.state(&path),
            "not sending: card not locked to GNSS and not in holdover"
        );
        assert_eq!(feed.sent(), 1);
        // An expired holdover is one state however long it lasts; its age
        // is the detail.
        let mut hold = locked();
        hold.in_holdover = true;
        hold.pps_lost = true;
        let a = feed.offer(&hold, &reading(host, 0), 20 * NS_PER_S);
        let b = feed.offer(&hold, &reading(host, 0), 21 * NS_PER_S);
        assert_eq!(
            a.state(&path),
            "not sending: card in holdover beyond --max-holdover"
        );
        assert_eq!(a.state(&path), b.state(&path));
        assert_eq!(
            a.detail().as_deref(),
            Some("card in holdover for 19 s, beyond --max-holdover")
        );
        assert_ne!(a.detail(), b.detail());
    }

    #[test]
    fn a_chronyd_that_stops_reading_never_blocks_the_feed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chronyd.sock");
        let _chronyd = UnixDatagram::bind(&path).unwrap();
        let mut feed = ChronyFeed::new(path.clone(), Duration::from_secs(10)).unwrap();
        let host = 1_795_000_000 * NS_PER_S;
        // Nobody reads: the queue fills within a few hundred datagrams, then
        // each offer returns at once, reporting the loss.
        let mut lost = 0;
        for i in 0..2_000 {
            let fed = feed.offer(&locked(), &reading(host, 0), i * NS_PER_S);
            if let Fed::Undelivered { .. } = fed {
                assert!(fed.state(&path).contains("is full"), "{fed:?}");
                lost += 1;
            }
        }
        assert!(lost > 0 && feed.sent() < 2_000, "sent {}", feed.sent());
    }
}
