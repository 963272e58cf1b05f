//! `timecard watch`: follow a card live, with the driver's supervisor running.
//!
//! A card whose clock source reads NONE (the FPGA's reset state) has not been
//! brought up by any driver since power-on, so it is initialised first, as
//! `ptp_ocp`'s probe would; any other card is left as it is.

use std::io::Write;

use anyhow::{Context as _, Result};
use timecard_driver::{DeviceSpec, InitOptions};
use timecard_hw::regs::ClockSource;

use crate::cli::WatchArgs;
use crate::device;
use crate::live::{self, Limits};

/// Opens `spec` and runs the live view until `--count` or Ctrl-C.
///
/// # Errors
/// A missing or dead device (exit 69), driver errors, or a failed write.
pub fn run(spec: &DeviceSpec, args: &WatchArgs, terminal: bool, out: &mut dyn Write) -> Result<()> {
    let opened = device::open(spec)?;
    let card = &opened.card;
    if card.clock_source().context("reading the clock source")? == Some(ClockSource::None) {
        tracing::warn!(
            device = %spec,
            "clock source is NONE (not initialised since power-on or reset); initialising the card as ptp_ocp's probe does"
        );
        card.init(InitOptions::default())
            .context("initialising the card")?;
    }
    live::run(
        card,
        live::Supervision::own(card),
        opened.truth.as_ref(),
        live::Extras::default(),
        &args.live,
        Limits {
            count: args.count,
            until: None,
        },
        terminal,
        out,
    )?;
    Ok(())
}
