//! `timecard sim`: run a simulated card as its own process, inject faults
//! into a running one, or print its ground truth.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use timecard_hw::civil::days_from_civil;
use timecard_sim::{Fault, Sim};

use crate::cli::{FaultArgs, FaultCommand, SimAction, SimArgs, SimRunArgs, TruthArgs};
use crate::duration::format_duration;
use crate::exit::{DeviceUnavailable, UsageError};
use crate::simulator::Simulator;
use crate::{render, signals};

/// Nanoseconds per second.
const NS_PER_S: i64 = 1_000_000_000;
/// Seconds per day.
const DAY_S: i64 = 86_400;

/// Runs `timecard sim` and its subcommands.
///
/// # Errors
/// Usage errors, an unreachable simulator file (exit 69), file or pty errors.
pub fn run(args: SimArgs, out: &mut dyn Write) -> Result<()> {
    match args.action {
        Some(SimAction::Fault(f)) => fault(&f, out),
        Some(SimAction::Truth(t)) => truth(&t, out),
        None => serve(&args.run, out),
    }
}

/// Runs a simulator until a signal or `--duration`, then removes its files.
fn serve(args: &SimRunArgs, out: &mut dyn Write) -> Result<()> {
    let bar = args
        .bar
        .clone()
        .ok_or_else(|| UsageError("`timecard sim` needs --bar PATH".into()))?;
    let link = args
        .gnss_link
        .clone()
        .unwrap_or_else(|| bar.with_extension("gnss"));
    if link == bar {
        return Err(UsageError(format!(
            "--gnss-link and --bar are both {}; give the GNSS link another name",
            bar.display()
        ))
        .into());
    }
    let simulator = Simulator::start(&args.params, Some(&bar), Some(&link))?;
    let bar_arg = bar.display();
    let link_arg = link.display();
    writeln!(out, "timecard sim: {}", simulator.describe())?;
    writeln!(out, "  BAR file   {bar_arg}")?;
    writeln!(
        out,
        "  GNSS tty   {link_arg} -> {} (NMEA, 115200 8N1)",
        simulator.tty().display()
    )?;
    writeln!(out, "Use it from another shell:")?;
    for (command, what) in [
        (
            format!("timecard status --device sim:{bar_arg}"),
            "identity, time, status, ground truth",
        ),
        (
            format!("timecard watch --device sim:{bar_arg}"),
            "live, with the driver's supervisor (initialises the card)",
        ),
        (
            format!("timecard sim fault --bar {bar_arg} gnss-loss"),
            "inject a fault (see `timecard sim fault --help`)",
        ),
        (format!("cat {link_arg}"), "raw NMEA"),
        (
            format!("gpsd -N -n {link_arg} & gpspipe -w"),
            "the receiver through gpsd",
        ),
    ] {
        writeln!(out, "  {command}\n      {what}")?;
    }
    match args.duration {
        Some(d) => writeln!(
            out,
            "Stops after {} or on Ctrl-C / SIGTERM; the files are removed then.",
            format_duration(d)
        )?,
        None => writeln!(
            out,
            "Stops on Ctrl-C / SIGTERM; the files are removed then."
        )?,
    }
    out.flush()?;
    match args.duration {
        Some(d) => {
            let _ = signals::sleep_until(Instant::now() + d);
        }
        None => while signals::sleep_until(Instant::now() + Duration::from_secs(3600)) {},
    }
    drop(simulator);
    writeln!(
        out,
        "timecard sim: stopped; removed {bar_arg} and {link_arg}"
    )?;
    Ok(())
}

/// Opens a running simulator's file.
fn attach(bar: &Path) -> Result<Sim> {
    Sim::open_file(bar).with_context(|| DeviceUnavailable {
        device: format!("sim:{}", bar.display()),
    })
}

/// The simulated card's UTC now, Unix seconds.
fn sim_utc_now_s(sim: &Sim) -> i64 {
    let s = sim.snapshot();
    s.truth_tai_ns.div_euclid(NS_PER_S) - i64::from(s.gnss.tai_utc_s)
}

/// Turns a fault command into the simulator's [`Fault`]; `now_utc_s` is the
/// simulated card's UTC time (for the default leap-second day and checks).
///
/// # Errors
/// [`UsageError`] for a leap second whose day is already over.
pub fn to_fault(cmd: &FaultCommand, now_utc_s: i64) -> Result<Fault, UsageError> {
    Ok(match *cmd {
        FaultCommand::GnssLoss => Fault::GnssLoss,
        FaultCommand::GnssRestore => Fault::GnssRestore,
        FaultCommand::AntennaFault => Fault::AntennaFault,
        FaultCommand::AntennaRestore => Fault::AntennaRestore,
        FaultCommand::TimeJump { seconds } => Fault::TimeJump { seconds },
        FaultCommand::PpsPhaseJump { ns } => Fault::PpsPhaseJump { ns },
        FaultCommand::ClearSpoofing => Fault::ClearSpoofing,
        FaultCommand::LeapSecond { delta, at } => {
            let midnight_unix_s = match at {
                Some(d) => (days_from_civil(d.year, d.month, d.day) + 1) * DAY_S,
                None => (now_utc_s.div_euclid(DAY_S) + 1) * DAY_S,
            };
            // The last second of the day must still be ahead.
            if midnight_unix_s - 1 <= now_utc_s {
                return Err(UsageError(format!(
                    "that day is already over for the simulated card (its UTC time is {}); \
                     give a later --at YYYY-MM-DD",
                    render::utc(now_utc_s.saturating_mul(NS_PER_S))
                )));
            }
            Fault::LeapSecond {
                midnight_unix_s,
                delta,
            }
        }
        FaultCommand::FrequencyStep { fractional } => Fault::FrequencyStep { fractional },
        FaultCommand::CardRemoved => Fault::CardRemoved,
        FaultCommand::CardRestored => Fault::CardRestored,
        FaultCommand::ExternalPps { offset_ns, off } => Fault::ExternalPps {
            offset_ns: if off {
                None
            } else {
                Some(offset_ns.unwrap_or(0))
            },
        },
        FaultCommand::ResetFpga => Fault::ResetFpga,
    })
}

/// `timecard sim fault`.
fn fault(args: &FaultArgs, out: &mut dyn Write) -> Result<()> {
    let bar: &PathBuf = args.bar.as_ref().ok_or_else(|| {
        UsageError(
            "`timecard sim fault` needs --bar PATH, the file of a running `timecard sim --bar PATH`"
                .into(),
        )
    })?;
    let sim = attach(bar)?;
    let fault = to_fault(&args.fault, sim_utc_now_s(&sim))?;
    sim.inject(&fault);
    writeln!(
        out,
        "injected {} into sim:{} at truth {}",
        serde_json::to_string(&fault)?,
        bar.display(),
        render::tai(sim.truth_tai_ns())
    )?;
    Ok(())
}

/// `timecard sim truth`.
fn truth(args: &TruthArgs, out: &mut dyn Write) -> Result<()> {
    let snapshot = attach(&args.bar)?.snapshot();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &snapshot)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Simulator ground truth of sim:{} (not visible on real hardware)",
            args.bar.display()
        )?;
        write!(out, "{}", render::truth_section(&snapshot))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Date;

    /// 2026-11-25T12:00:00Z.
    fn noon() -> i64 {
        days_from_civil(2026, 11, 25) * DAY_S + 12 * 3600
    }

    #[test]
    fn simple_faults_map_one_to_one() {
        assert_eq!(
            to_fault(&FaultCommand::GnssLoss, 0).unwrap(),
            Fault::GnssLoss
        );
        assert_eq!(
            to_fault(&FaultCommand::TimeJump { seconds: -3 }, 0).unwrap(),
            Fault::TimeJump { seconds: -3 }
        );
        assert_eq!(
            to_fault(
                &FaultCommand::ExternalPps {
                    offset_ns: None,
                    off: false
                },
                0
            )
            .unwrap(),
            Fault::ExternalPps { offset_ns: Some(0) }
        );
        assert_eq!(
            to_fault(
                &FaultCommand::ExternalPps {
                    offset_ns: None,
                    off: true
                },
                0
            )
            .unwrap(),
            Fault::ExternalPps { offset_ns: None }
        );
    }

    #[test]
    fn leap_seconds_default_to_the_end_of_the_cards_day() {
        let end_of_today = days_from_civil(2026, 11, 26) * DAY_S;
        assert_eq!(
            to_fault(&FaultCommand::LeapSecond { delta: 1, at: None }, noon()).unwrap(),
            Fault::LeapSecond {
                midnight_unix_s: end_of_today,
                delta: 1
            }
        );
        let new_year = Date {
            year: 2026,
            month: 12,
            day: 31,
        };
        assert_eq!(
            to_fault(
                &FaultCommand::LeapSecond {
                    delta: -1,
                    at: Some(new_year)
                },
                noon()
            )
            .unwrap(),
            Fault::LeapSecond {
                midnight_unix_s: days_from_civil(2027, 1, 1) * DAY_S,
                delta: -1
            }
        );
        let past = Date {
            year: 2026,
            month: 11,
            day: 24,
        };
        let e = to_fault(
            &FaultCommand::LeapSecond {
                delta: 1,
                at: Some(past),
            },
            noon(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("already over"), "{e}");
    }
}
