//! `timecard chrony`: feeds chronyd's `refclock SOCK` from the card, once a
//! second, in a process of its own (the sample format and the trust policy
//! are [`timecard_driver::chrony`]'s). With a card behind `vfio-pci`, whose
//! one owner is the PTP server, run the feed there instead (`timecard up
//! --chrony-sock`, `ptp-server --chrony-sock`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use timecard_driver::DeviceSpec;
use timecard_driver::chrony::{ChronyFeed, Fed};

use crate::cli::ChronyArgs;
use crate::{device, render, signals};

/// Opens `spec` and feeds chronyd once a second until Ctrl-C, SIGTERM or
/// `--duration`, printing a line whenever what it does changes.
///
/// # Errors
/// A device that cannot be opened (exit 69), a socket that cannot be
/// created, or a failed write.
pub fn run(spec: &DeviceSpec, args: &ChronyArgs, out: &mut dyn Write) -> Result<()> {
    let opened = device::open(spec)?;
    let card = &opened.card;
    let mut feed = ChronyFeed::new(args.sock.clone(), args.max_holdover)
        .context("creating a Unix datagram socket")?;
    writeln!(
        out,
        "timecard chrony: {spec} -> chronyd `refclock SOCK {}` once a second (holdover up to {})",
        args.sock.display(),
        crate::duration::format_duration(args.max_holdover)
    )?;
    out.flush()?;
    let end = args.duration.map(|d| Instant::now() + d);
    let mut next = Instant::now();
    let mut state = String::new();
    while !signals::stop_requested() && end.is_none_or(|e| Instant::now() < e) {
        let fed = feed.tick(card);
        let now = fed.state(feed.sock());
        if now != state {
            let detail = match &fed {
                Fed::Sent { sample, .. } => format!(
                    " (offset {}, {} sent)",
                    render::signed_ns((sample.offset * 1e9).round() as i64),
                    feed.sent()
                ),
                other => other.detail().map_or(String::new(), |d| format!(" ({d})")),
            };
            writeln!(
                out,
                "{} {now}{detail}",
                render::utc_clock(card.host().realtime_ns())
            )?;
            out.flush()?;
            state = now;
        }
        next += Duration::from_secs(1);
        if !signals::sleep_until(next) {
            break;
        }
    }
    writeln!(
        out,
        "timecard chrony: stopped, {} samples sent",
        feed.sent()
    )?;
    Ok(())
}
