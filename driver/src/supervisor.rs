//! The 1 Hz watchdog: GNSS loss, UTC offset, and GNSS time jumps.
//!
//! `ptp_ocp` runs a 1 Hz watchdog that notices GNSS loss through the PPS
//! slave's supervision error, clears the drift when the loss starts, and
//! distributes UTC offset changes. [`Supervisor`] does that, and guards
//! against a GNSS receiver that starts lying: when the card's time jumps
//! against the host's monotonic clock while the card is in sync and follows
//! GNSS (a spoofed
//! time of day that the FPGA's TOD slave applied), the supervisor switches the
//! card to `REGS` (free-running on its oscillator, i.e. holdover), steps the
//! jump back out (exactly, when it is a whole number of seconds) and marks
//! GNSS untrusted. GNSS is trusted again only after its reported time agrees
//! with the card for [`AGREE_SECONDS`] consecutive seconds (read from the
//! receiver's NMEA stream) or an operator says so.

use serde::Serialize;
use timecard_hw::regs::ClockSource;

use crate::card::{CardError, Result, TimeCard};
use crate::gnss::{GnssTime, NmeaReader};
use crate::hostclock::NS_PER_S;

/// Consecutive agreeing seconds before a distrusted GNSS is used again.
pub const AGREE_SECONDS: u32 = 10;
/// A jump this close to a whole number of seconds is a whole-second jump.
const WHOLE_SECOND_SLACK_NS: i64 = 1_000_000;

/// Why GNSS is not being followed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Distrust {
    /// Human-readable reason.
    pub reason: String,
    /// The jump that was detected, ns.
    pub jump_ns: i64,
    /// Host time of detection, ns since the Unix epoch.
    pub since_ns: i64,
}

/// Something the supervisor noticed or did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// GNSS PPS lost; drift cleared.
    GnssLost,
    /// GNSS PPS back.
    GnssRestored,
    /// TAI − UTC changed (leap second passed, or first learned).
    UtcOffsetChanged {
        /// Previous offset, if known.
        old: Option<i32>,
        /// New offset.
        new: i32,
    },
    /// Card time jumped while following GNSS; the card was put in holdover and the jump undone.
    TimeJumpRejected {
        /// Size of the jump, ns.
        jump_ns: i64,
        /// The correction applied, ns.
        corrected_ns: i64,
    },
    /// Card time jumped while not following GNSS (someone stepped it); accepted.
    TimeJumpAccepted {
        /// Size of the jump, ns.
        jump_ns: i64,
    },
    /// GNSS agrees with the card again and is followed again.
    GnssTrusted,
}

/// Supervisor state, for status output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SupervisorState {
    /// Host time when the GNSS PPS was lost (`gnss_sync` "LOST @ …"), ns.
    pub gnss_lost_since_ns: Option<i64>,
    /// TAI − UTC as last distributed.
    pub utc_offset_s: Option<i32>,
    /// Set while GNSS is not trusted.
    pub distrust: Option<Distrust>,
    /// Source to return to once GNSS is trusted again.
    pub preferred_source: Option<ClockSource>,
    /// Consecutive seconds of GNSS/card agreement while distrusted.
    pub agreeing_seconds: u32,
    /// Jumps rejected so far.
    pub jumps_rejected: u64,
    /// Latest GNSS time of day seen on the serial port.
    pub last_gnss_time: Option<GnssTime>,
    /// Whether the card reported `IN_SYNC` at the previous round.
    pub was_in_sync: bool,
}

/// The watchdog. Call [`Supervisor::tick`] about once a second.
#[derive(Debug, Default)]
pub struct Supervisor {
    state: SupervisorState,
    nmea: Option<NmeaReader>,
}

impl Supervisor {
    /// A supervisor without access to the GNSS serial stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A supervisor that also reads the receiver's NMEA (to re-trust GNSS after a jump).
    #[must_use]
    pub fn with_nmea(nmea: NmeaReader) -> Self {
        Self {
            state: SupervisorState::default(),
            nmea: Some(nmea),
        }
    }

    /// Current state.
    #[must_use]
    pub fn state(&self) -> &SupervisorState {
        &self.state
    }

    /// Operator override: trust GNSS again now and return to the preferred source.
    ///
    /// # Errors
    /// Access errors.
    pub fn trust_gnss(&mut self, card: &TimeCard) -> Result<()> {
        if self.state.distrust.take().is_some() {
            card.set_clock_source(self.state.preferred_source.unwrap_or(ClockSource::Tod))?;
        }
        self.state.agreeing_seconds = 0;
        Ok(())
    }

    /// One watchdog round.
    ///
    /// # Errors
    /// [`CardError::CardGone`] and access errors.
    pub fn tick(&mut self, card: &TimeCard) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.check_gnss_loss(card, &mut events)?;
        self.check_utc_offset(card, &mut events)?;
        self.check_time_jump(card, &mut events)?;
        self.check_retrust(card, &mut events)?;
        self.state.was_in_sync = card.status()?.in_sync;
        Ok(events)
    }

    fn check_gnss_loss(&mut self, card: &TimeCard, events: &mut Vec<Event>) -> Result<()> {
        let errors = card.clear_pps_errors()?;
        if errors & timecard_hw::regs::pps::STATUS_SUPERV_ERR != 0 {
            if self.state.gnss_lost_since_ns.is_none() {
                self.state.gnss_lost_since_ns = Some(card.host().realtime_ns());
                card.clear_drift()?;
                events.push(Event::GnssLost);
            }
        } else if self.state.gnss_lost_since_ns.take().is_some() {
            events.push(Event::GnssRestored);
        }
        Ok(())
    }

    fn check_utc_offset(&mut self, card: &TimeCard, events: &mut Vec<Event>) -> Result<()> {
        let utc = card.status()?.utc;
        if utc.utc_valid {
            let new = i32::from(utc.offset_s);
            if self.state.utc_offset_s != Some(new) {
                card.distribute_utc_offset(new)?;
                events.push(Event::UtcOffsetChanged {
                    old: self.state.utc_offset_s,
                    new,
                });
                self.state.utc_offset_s = Some(new);
            }
        }
        Ok(())
    }

    fn check_time_jump(&mut self, card: &TimeCard, events: &mut Vec<Event>) -> Result<()> {
        let jump_ns = match card.read_time() {
            Ok(_) => return Ok(()),
            Err(CardError::TimeJump { jump_ns }) => jump_ns,
            Err(e) => return Err(e),
        };
        let source = card.clock_source()?;
        // A card that is still acquiring (or not following GNSS) moves on purpose.
        if !self.state.was_in_sync || !matches!(source, Some(ClockSource::Tod | ClockSource::Pps)) {
            card.reanchor();
            events.push(Event::TimeJumpAccepted { jump_ns });
            return Ok(());
        }
        // Stop following GNSS first, then undo what it did.
        card.set_clock_source(ClockSource::Regs)?;
        let whole = (jump_ns as f64 / NS_PER_S as f64).round() as i64 * NS_PER_S;
        let correction = if whole != 0 && (jump_ns - whole).abs() < WHOLE_SECOND_SLACK_NS {
            -whole
        } else {
            -jump_ns
        };
        card.step(correction)?;
        card.read_time()?;
        self.state.preferred_source = source;
        self.state.agreeing_seconds = 0;
        self.state.jumps_rejected += 1;
        self.state.distrust = Some(Distrust {
            reason: format!(
                "card time jumped {:.9} s while following GNSS ({}); holding over on the oscillator",
                jump_ns as f64 / NS_PER_S as f64,
                source.map_or("?", ClockSource::name)
            ),
            jump_ns,
            since_ns: card.host().realtime_ns(),
        });
        events.push(Event::TimeJumpRejected {
            jump_ns,
            corrected_ns: correction,
        });
        Ok(())
    }

    fn check_retrust(&mut self, card: &TimeCard, events: &mut Vec<Event>) -> Result<()> {
        let Some(reader) = self.nmea.as_mut() else {
            return Ok(());
        };
        let Some(latest) = reader.poll().into_iter().rev().find(|t| t.valid) else {
            return Ok(());
        };
        self.state.last_gnss_time = Some(latest);
        if self.state.distrust.is_none() {
            return Ok(());
        }
        let offset = i64::from(self.state.utc_offset_s.unwrap_or(37));
        let gnss_tai_s = latest.utc.to_unix() + offset;
        let card_s = card.read_time()?.card_tai_ns.div_euclid(NS_PER_S);
        // The sentence describes the second that began at the last PPS.
        if (0..=1).contains(&(card_s - gnss_tai_s)) {
            self.state.agreeing_seconds += 1;
        } else {
            self.state.agreeing_seconds = 0;
        }
        if self.state.agreeing_seconds >= AGREE_SECONDS {
            self.trust_gnss(card)?;
            events.push(Event::GnssTrusted);
        }
        Ok(())
    }
}
