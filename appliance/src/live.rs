//! The live view shared by `timecard watch` and `timecard up`.
//!
//! Each interval: run the driver's [`Supervisor`] (at most about once a
//! second, its design rate, whatever the interval), read the card's time and
//! status, and print a [`Sample`]: one line, one JSON object, or a block
//! redrawn in place when stdout is a terminal. Stops after a count, at a
//! deadline, or on SIGINT/SIGTERM.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;
use std::sync::Arc;

use ptp_proto::MessageType;
use ptp_server::CardSource;
use ptp_server::stats::Stats;
use timecard_driver::gnss::NmeaReader;
use timecard_driver::supervisor::{Event, Supervisor, SupervisorState};
use timecard_driver::{CardError, TimeCard};
use timecard_hw::civil::TAI_UTC_2017;
use timecard_hw::regs::tod;
use timecard_sim::Sim;

use crate::cli::LiveArgs;
use crate::{render, signals};

/// Nanoseconds per second.
const NS_PER_S: i64 = 1_000_000_000;
/// The supervisor runs when at least this long has passed since its last round.
const SUPERVISOR_PERIOD: Duration = Duration::from_millis(950);
/// GNSS serial speed of the card's receiver UART.
const GNSS_BAUD: u32 = 115_200;
/// Supervisor events kept in the terminal view.
const RECENT_EVENTS: usize = 5;

/// When a live view ends (besides Ctrl-C).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stop after this many samples.
    pub count: Option<u64>,
    /// Stop at this instant.
    pub until: Option<Instant>,
}

/// The card's overall state, as the live view labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SyncState {
    /// Not locked to a reference.
    #[serde(rename = "UNSYNCED")]
    Unsynced,
    /// Locked (the clock's `IN_SYNC` bit).
    #[serde(rename = "IN SYNC")]
    InSync,
    /// Was locked, no corrections for a while (the clock's `IN_HOLDOVER` bit).
    #[serde(rename = "HOLDOVER")]
    Holdover,
}

impl SyncState {
    /// The label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            SyncState::Unsynced => "UNSYNCED",
            SyncState::InSync => "IN SYNC",
            SyncState::Holdover => "HOLDOVER",
        }
    }
}

/// One sample of the live view.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the view started (wall clock).
    pub elapsed_s: f64,
    /// Card time (TAI), ns since the epoch; `None` when the read was refused.
    pub card_tai_ns: Option<i64>,
    /// Card time as UTC (RFC 3339).
    pub card_utc: Option<String>,
    /// TAI − UTC used for `card_utc`, seconds.
    pub utc_tai_offset: i32,
    /// Whether that offset came from the card (else it is assumed, 37 s).
    pub utc_tai_offset_valid: bool,
    /// Card UTC minus the midpoint of the host clock's bracket, ns.
    pub card_minus_host_ns: Option<i64>,
    /// Why the time could not be read (a time jump being checked).
    pub time_error: Option<String>,
    /// Overall state.
    pub sync: SyncState,
    /// `IN_SYNC` bit.
    pub in_sync: bool,
    /// `IN_HOLDOVER` bit.
    pub in_holdover: bool,
    /// Active clock source (sysfs `clock_source`).
    pub clock_source: String,
    /// `gnss_sync` as the supervisor sees it: "SYNC" or "LOST".
    pub gnss_sync: &'static str,
    /// The receiver reports a fix.
    pub gnss_fix: bool,
    /// Satellites used.
    pub satellites_used: u8,
    /// Satellites seen.
    pub satellites_seen: u8,
    /// TOD antenna-status flags that are set ("antenna OK", "fix", "jamming"…).
    pub antenna: Vec<&'static str>,
    /// GNSS trusted by the supervisor (false after a rejected time jump).
    pub gnss_trusted: bool,
    /// Servo offset (`clock_status_offset`), ns.
    pub servo_offset_ns: i64,
    /// Servo drift (`clock_status_drift`).
    pub servo_drift: i64,
    /// What the supervisor noticed this round.
    pub events: Vec<Event>,
    /// Simulator ground truth: card minus true time, ns (not on real hardware).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_truth_card_error_ns: Option<i64>,
    /// The PTP server, when one runs on the card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ptp: Option<PtpSample>,
    /// TrueTime from fbclockd, when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truetime: Option<TrueTimeSample>,
}

/// Components beside the card that the live view reports on.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extras<'a> {
    /// The PTP server's statistics.
    pub ptp: Option<&'a Stats>,
    /// TrueTime as fbclockd publishes it.
    pub truetime: Option<&'a fbclock::FbClock>,
}

/// TrueTime as an application on this host sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TrueTimeSample {
    /// Window of uncertainty (latest − earliest), ns, when available.
    pub wou_ns: Option<i64>,
    /// Why there is no TrueTime, if there is none.
    pub error: Option<String>,
    /// Simulator ground truth: whether the interval contains true time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains_truth: Option<bool>,
}

/// What the PTP server is doing.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PtpSample {
    /// Announced clockClass.
    pub clock_class: u64,
    /// Announced clockAccuracy.
    pub clock_accuracy: u64,
    /// Live Sync subscriptions (clients).
    pub sync_clients: u64,
    /// Live Announce subscriptions.
    pub announce_clients: u64,
    /// Syncs sent so far.
    pub syncs_sent: u64,
    /// Delay_Resp sent so far.
    pub delay_resps_sent: u64,
    /// SPTP exchanges answered so far (SPTP clients, like fbclockd, hold no subscription).
    pub sptp_exchanges: u64,
}

impl TrueTimeSample {
    /// Reads TrueTime now from `clock`; with `truth`, checks it against the simulator.
    #[must_use]
    pub fn read(clock: &fbclock::FbClock, truth: Option<&Sim>) -> Self {
        match clock.now() {
            Ok(tt) => Self {
                wou_ns: Some(tt.wou_ns()),
                error: None,
                contains_truth: truth.map(|s| tt.contains(s.truth_tai_ns())),
            },
            Err(e) => Self {
                wou_ns: None,
                error: Some(e.to_string()),
                contains_truth: None,
            },
        }
    }
}

impl PtpSample {
    /// The server's state now, from its statistics.
    #[must_use]
    pub fn from_stats(s: &Stats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        Self {
            clock_class: s.clock_class.load(Relaxed),
            clock_accuracy: s.clock_accuracy.load(Relaxed),
            sync_clients: s.subscriptions(MessageType::Sync),
            announce_clients: s.subscriptions(MessageType::Announce),
            syncs_sent: s.tx.get(MessageType::Sync),
            delay_resps_sent: s.tx.get(MessageType::DelayResp),
            sptp_exchanges: s.sptp.load(Relaxed),
        }
    }
}

/// Who supervises the card while the live view runs.
#[derive(Debug)]
pub enum Supervision {
    /// The view runs the driver's supervisor itself (`watch`).
    Own(Supervisor),
    /// Another component runs it (the PTP server's card sampler in `up`); the
    /// view shows its state and events.
    Shared(Arc<CardSource>),
}

impl Supervision {
    /// A supervisor of the view's own for `card`, reading the GNSS NMEA when its serial port is known.
    #[must_use]
    pub fn own(card: &TimeCard) -> Self {
        let Some(path) = card.gnss_serial() else {
            return Self::Own(Supervisor::new());
        };
        Self::Own(match NmeaReader::open(path, GNSS_BAUD) {
            Ok(reader) => Supervisor::with_nmea(reader),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the GNSS receiver's NMEA; supervising without it");
                Supervisor::new()
            }
        })
    }

    /// One round: runs the own supervisor if `due`, or collects the shared one's events.
    fn round(&mut self, card: &TimeCard, due: bool) -> Result<(Vec<Event>, SupervisorState)> {
        match self {
            Self::Own(sup) => {
                let events = if due {
                    sup.tick(card).context("supervising the card")?
                } else {
                    Vec::new()
                };
                Ok((events, sup.state().clone()))
            }
            Self::Shared(source) => Ok((source.take_events(), source.report().supervisor)),
        }
    }
}

/// Takes one sample (the supervisor has already run, and produced `events`).
///
/// Besides the live view, the web dashboard samples with it (with the shared
/// supervisor's state and no events, which stay for the live view).
///
/// # Errors
/// The card's status or time could not be read (other than a time jump,
/// which the sample reports).
pub fn sample(
    card: &TimeCard,
    state: &SupervisorState,
    truth: Option<&Sim>,
    extras: Extras<'_>,
    events: Vec<Event>,
    elapsed: Duration,
) -> Result<Sample> {
    let truetime = extras.truetime.map(|c| TrueTimeSample::read(c, truth));
    let status = card.status().context("reading the card's status")?;
    let (utc_tai_offset, utc_tai_offset_valid) = if status.utc.utc_valid {
        (i32::from(status.utc.offset_s), true)
    } else {
        (TAI_UTC_2017, false)
    };
    let (reading, time_error) = match card.read_time() {
        Ok(r) => (Some(r), None),
        Err(CardError::TimeJump { jump_ns }) => (
            None,
            Some(format!(
                "card time jumped {}; not served until checked",
                render::signed_ns(jump_ns)
            )),
        ),
        Err(e) => return Err(e).context("reading the card's time"),
    };
    let card_utc_ns = reading.map(|r| r.card_tai_ns - i64::from(utc_tai_offset) * NS_PER_S);
    let sync = if status.in_holdover {
        SyncState::Holdover
    } else if status.in_sync {
        SyncState::InSync
    } else {
        SyncState::Unsynced
    };
    Ok(Sample {
        elapsed_s: elapsed.as_secs_f64(),
        card_tai_ns: reading.map(|r| r.card_tai_ns),
        card_utc: card_utc_ns.map(render::utc),
        utc_tai_offset,
        utc_tai_offset_valid,
        card_minus_host_ns: reading
            .zip(card_utc_ns)
            .map(|(r, u)| u - (r.pre_ns + (r.post_ns - r.pre_ns) / 2)),
        time_error,
        sync,
        in_sync: status.in_sync,
        in_holdover: status.in_holdover,
        clock_source: status
            .clock_source
            .map_or_else(|| "unknown".to_owned(), |s| s.name().to_owned()),
        gnss_sync: if state.gnss_lost_since_ns.is_some() {
            "LOST"
        } else {
            "SYNC"
        },
        gnss_fix: status.antenna_status & tod::FIX_OK != 0,
        satellites_used: status.satellites.0,
        satellites_seen: status.satellites.1,
        antenna: render::antenna_flags(status.antenna_status),
        gnss_trusted: state.distrust.is_none(),
        servo_offset_ns: status.servo_offset_ns,
        servo_drift: status.servo_drift,
        events,
        sim_truth_card_error_ns: truth.map(|s| s.snapshot().card_error_ns),
        ptp: extras.ptp.map(PtpSample::from_stats),
        truetime,
    })
}

/// The GNSS part of a sample in a few words.
fn gnss_words(s: &Sample) -> String {
    if !s.gnss_trusted {
        "UNTRUSTED (time jump)".to_owned()
    } else if s.gnss_sync == "LOST" {
        "LOST".to_owned()
    } else if s.gnss_fix {
        format!("SYNC fix {}/{}", s.satellites_used, s.satellites_seen)
    } else {
        "SYNC no fix".to_owned()
    }
}

/// The time part of a sample.
fn time_words(s: &Sample) -> String {
    match (&s.card_utc, &s.time_error) {
        (Some(utc), _) => utc.clone(),
        (None, Some(e)) => e.clone(),
        (None, None) => "-".to_owned(),
    }
}

/// One line per sample, for logs and pipes.
#[must_use]
pub fn line(s: &Sample) -> String {
    let mut out = format!(
        "{}  card-host {:>11}  {:<8}  source {:<4}  gnss {}  servo {}",
        time_words(s),
        s.card_minus_host_ns
            .map_or_else(|| "-".to_owned(), render::signed_ns),
        s.sync.label(),
        s.clock_source,
        gnss_words(s),
        render::signed_ns(s.servo_offset_ns),
    );
    if let Some(p) = &s.ptp {
        out.push_str(&format!(
            "  ptp class {} acc {:#04x} clients {}",
            p.clock_class, p.clock_accuracy, p.sync_clients
        ));
    }
    if let Some(t) = &s.truetime {
        match t.wou_ns {
            Some(w) => out.push_str(&format!(
                "  truetime wou {}",
                render::signed_ns(w).trim_start_matches('+')
            )),
            None => out.push_str("  truetime -"),
        }
    }
    if let Some(err) = s.sim_truth_card_error_ns {
        out.push_str(&format!(
            "  [sim truth: card error {}]",
            render::signed_ns(err)
        ));
    }
    for e in &s.events {
        out.push_str(" | ");
        out.push_str(&render::event(e));
    }
    out
}

/// The terminal view: a block of lines, redrawn in place.
fn block(s: &Sample, recent: &VecDeque<(String, String)>) -> Vec<String> {
    let mut lines = vec![
        format!(
            "card time    {}  (TAI-UTC {} s{})",
            time_words(s),
            s.utc_tai_offset,
            if s.utc_tai_offset_valid {
                ""
            } else {
                ", assumed"
            }
        ),
        format!(
            "card - host  {}",
            s.card_minus_host_ns
                .map_or_else(|| "-".to_owned(), render::signed_ns)
        ),
        format!(
            "sync         {}  (source {}, servo offset {}, drift {})",
            s.sync.label(),
            s.clock_source,
            render::signed_ns(s.servo_offset_ns),
            s.servo_drift
        ),
        format!("gnss         {}", gnss_words(s)),
    ];
    if let Some(p) = &s.ptp {
        lines.push(format!(
            "ptp server   clockClass {}, clockAccuracy {:#04x}, {} Sync / {} Announce clients, {} Sync and {} Delay_Resp sent",
            p.clock_class, p.clock_accuracy, p.sync_clients, p.announce_clients, p.syncs_sent, p.delay_resps_sent
        ));
    }
    if let Some(t) = &s.truetime {
        lines.push(match (t.wou_ns, &t.error) {
            (Some(w), _) => format!(
                "truetime     window of uncertainty {}{}",
                render::signed_ns(w).trim_start_matches('+'),
                match t.contains_truth {
                    Some(true) => " (contains true time)",
                    Some(false) => " (DOES NOT CONTAIN TRUE TIME)",
                    None => "",
                }
            ),
            (None, Some(e)) => format!("truetime     {e}"),
            (None, None) => "truetime     -".to_owned(),
        });
    }
    if let Some(err) = s.sim_truth_card_error_ns {
        lines.push(format!(
            "sim truth    card error {}  (simulator only: not visible on real hardware)",
            render::signed_ns(err)
        ));
    }
    if recent.is_empty() {
        lines.push("events       none yet".to_owned());
    }
    for (i, (at, text)) in recent.iter().enumerate() {
        let label = if i == 0 { "events" } else { "" };
        lines.push(format!("{label:<12} {at} {text}"));
    }
    lines
}

/// Runs the live view on `card` until `limits` or a stop signal; returns the last sample.
///
/// # Errors
/// A card that stops responding ([`CardError::CardGone`]), other driver
/// errors, or a failed write to `out`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    card: &TimeCard,
    mut supervision: Supervision,
    truth: Option<&Sim>,
    extras: Extras<'_>,
    args: &LiveArgs,
    limits: Limits,
    terminal: bool,
    out: &mut dyn Write,
) -> Result<Option<Sample>> {
    let start = Instant::now();
    let mut next = start;
    let mut last_round: Option<Instant> = None;
    let mut taken = 0u64;
    let mut last = None;
    let mut recent = VecDeque::new();
    let mut drawn = 0usize;
    while !signals::stop_requested() && limits.until.is_none_or(|u| Instant::now() < u) {
        let now = Instant::now();
        let due = last_round.is_none_or(|t| now - t >= SUPERVISOR_PERIOD);
        if due {
            last_round = Some(now);
        }
        let (events, state) = supervision.round(card, due)?;
        let s = sample(card, &state, truth, extras, events, now - start)?;
        if args.json {
            serde_json::to_writer(&mut *out, &s)?;
            writeln!(out)?;
        } else if terminal {
            for e in &s.events {
                recent.push_front((
                    render::utc_clock(card.host().realtime_ns()),
                    render::event(e),
                ));
            }
            recent.truncate(RECENT_EVENTS);
            if drawn > 0 {
                // Up over the previous block, and clear to the end of the screen.
                write!(out, "\x1b[{drawn}A\x1b[J")?;
            }
            let lines = block(&s, &recent);
            drawn = lines.len();
            for l in lines {
                writeln!(out, "{l}")?;
            }
        } else {
            writeln!(out, "{}", line(&s))?;
        }
        out.flush()?;
        last = Some(s);
        taken += 1;
        if limits.count.is_some_and(|c| taken >= c) {
            break;
        }
        // Keep the cadence, but never try to catch up on missed samples.
        next = (next + args.interval).max(Instant::now());
        let wake = limits.until.map_or(next, |u| u.min(next));
        if !signals::sleep_until(wake) {
            break;
        }
    }
    Ok(last)
}
