//! Opening the card a command works on, from `--device`.
//!
//! `pci:` and `sim:PATH` go through the driver's [`timecard_driver::device::open`];
//! the embedded simulator (`sim`, the default) is created here, because the
//! command owns it. Every failure to reach a device carries
//! [`DeviceUnavailable`], so it exits with code 69.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use timecard_driver::{DeviceSpec, InitOptions, TimeCard, device};
use timecard_sim::{ClockMode, Sim, SimConfig};

use crate::exit::DeviceUnavailable;

/// A card opened for a command, with the simulator behind it when there is one.
#[derive(Debug)]
pub struct Opened {
    /// The driver's handle on the card.
    pub card: TimeCard,
    /// The simulator behind the card, for ground truth only (`None` on real hardware).
    pub truth: Option<Sim>,
}

/// Marks a failure to reach `spec` (exit code 69).
fn unavailable(spec: &DeviceSpec) -> DeviceUnavailable {
    DeviceUnavailable {
        device: spec.to_string(),
    }
}

/// Opens `spec`. The embedded simulator is created in real time with the
/// default configuration and initialised as `ptp_ocp`'s probe does; other
/// devices are attached without changing anything.
///
/// # Errors
/// [`DeviceUnavailable`] with the driver's explanation, or an init failure.
pub fn open(spec: &DeviceSpec) -> Result<Opened> {
    match spec {
        DeviceSpec::Embedded => {
            let sim = Sim::new(&SimConfig {
                mode: ClockMode::Realtime { acceleration: 1.0 },
                ..SimConfig::default()
            })
            .context("creating the embedded simulator")?;
            let card = open_simulator(&sim, None)?;
            card.init(InitOptions::default())
                .context("initialising the embedded simulator's card")?;
            Ok(Opened {
                card,
                truth: Some(sim),
            })
        }
        DeviceSpec::SimFile(path) => {
            let card = device::open(spec).with_context(|| unavailable(spec))?;
            let truth = Sim::open_file(path).with_context(|| unavailable(spec))?;
            Ok(Opened {
                card,
                truth: Some(truth),
            })
        }
        DeviceSpec::Pci(_) => Ok(Opened {
            card: device::open(spec).with_context(|| unavailable(spec))?,
            truth: None,
        }),
    }
}

/// Opens the driver on a simulator this process runs, recording where its
/// GNSS receiver's NMEA can be read.
///
/// # Errors
/// [`DeviceUnavailable`] if the simulated card does not answer (a removed card).
pub fn open_simulator(sim: &Sim, gnss: Option<PathBuf>) -> Result<TimeCard> {
    let card = device::open_sim(sim.clone()).with_context(|| DeviceUnavailable {
        device: sim.describe(),
    })?;
    Ok(match gnss {
        Some(path) => card.with_gnss_serial(path),
        None => card,
    })
}
