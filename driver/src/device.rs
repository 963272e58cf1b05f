//! Choosing a card: `--device pci:0000:01:00.0`, `--device sim:PATH`, or the
//! embedded simulator.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::bar::Bar;
use crate::card::{CardError, TimeCard};
use crate::discover::{PciAddress, Sysfs};
use crate::hostclock::{HostClock, SystemClock};

/// Which card to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A real card through VFIO.
    Pci(PciAddress),
    /// A simulator running in another process (`timecard sim --bar PATH`).
    SimFile(PathBuf),
    /// A simulator inside this process.
    Embedded,
}

/// A device string that is not one of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unrecognised device {0:?}: use `pci:0000:01:00.0` for a card bound to vfio-pci, \
     `sim:/path/to/card.bar` for a running `timecard sim`, or `sim` for an embedded simulator"
)]
pub struct DeviceSpecError(String);

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DeviceSpecError(s.to_string());
        if s == "sim" || s == "embedded" {
            return Ok(DeviceSpec::Embedded);
        }
        if let Some(path) = s.strip_prefix("sim:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(DeviceSpec::SimFile(PathBuf::from(path)));
        }
        let addr = s.strip_prefix("pci:").unwrap_or(s);
        addr.parse().map(DeviceSpec::Pci).map_err(|_| bad())
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Pci(a) => write!(f, "pci:{a}"),
            DeviceSpec::SimFile(p) => write!(f, "sim:{}", p.display()),
            DeviceSpec::Embedded => f.write_str("sim"),
        }
    }
}

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// VFIO preconditions or open failed.
    #[cfg(feature = "vfio")]
    #[error(transparent)]
    Vfio(#[from] crate::vfio::VfioError),
    /// The simulator file could not be attached.
    #[cfg(feature = "sim")]
    #[error(transparent)]
    Sim(#[from] timecard_sim::SimError),
    /// The card did not answer as a Time Card.
    #[error(transparent)]
    Card(#[from] CardError),
    /// This build lacks the backend.
    #[error("this build of timecard has no {0} backend")]
    NoBackend(&'static str),
}

/// Opens a real card or a simulator file (not [`DeviceSpec::Embedded`], which
/// the caller builds itself because it owns the simulation).
///
/// # Errors
/// [`OpenError`] with a message that says what to do.
pub fn open(spec: &DeviceSpec) -> Result<TimeCard, OpenError> {
    match spec {
        #[cfg(feature = "vfio")]
        DeviceSpec::Pci(addr) => {
            let bar = crate::vfio::VfioBar::open(&Sysfs::system(), *addr)?;
            let card = TimeCard::open(Arc::new(bar), Arc::new(SystemClock))?;
            let gnss = Sysfs::system()
                .find_cards()
                .ok()
                .and_then(|cards| cards.into_iter().find(|c| c.address == *addr))
                .and_then(|c| c.gnss_tty);
            Ok(match gnss {
                Some(tty) => card.with_gnss_serial(tty),
                None => card,
            })
        }
        #[cfg(not(feature = "vfio"))]
        DeviceSpec::Pci(_) => {
            let _ = Sysfs::system();
            Err(OpenError::NoBackend("VFIO"))
        }
        #[cfg(feature = "sim")]
        DeviceSpec::SimFile(path) => {
            let sim = timecard_sim::Sim::open_file(path)?;
            let gnss = sim.gnss_pty_path();
            let card = open_sim(sim)?;
            Ok(match gnss {
                Some(p) => card.with_gnss_serial(p),
                None => card,
            })
        }
        #[cfg(not(feature = "sim"))]
        DeviceSpec::SimFile(_) => Err(OpenError::NoBackend("simulator")),
        DeviceSpec::Embedded => Err(OpenError::NoBackend(
            "embedded simulator (build it with open_sim)",
        )),
    }
}

/// Opens a [`TimeCard`] on a simulator handle, with the host clock that matches
/// its time mode: the system clock for a real-time, unaccelerated simulation,
/// otherwise a host clock that lives in simulated time.
///
/// # Errors
/// [`CardError`] if the simulated card does not answer.
#[cfg(feature = "sim")]
pub fn open_sim(sim: timecard_sim::Sim) -> Result<TimeCard, CardError> {
    let realtime = matches!(
        sim.snapshot().mode,
        timecard_sim::ClockMode::Realtime { acceleration } if (acceleration - 1.0).abs() < f64::EPSILON
    );
    let host: Arc<dyn HostClock> = if realtime {
        Arc::new(SystemClock)
    } else {
        Arc::new(crate::simbar::SimHostClock::new(sim.clone(), 0))
    };
    let bar: Arc<dyn Bar> = Arc::new(crate::simbar::SimBar::new(sim));
    TimeCard::open(bar, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_explains_errors() {
        assert_eq!("sim".parse(), Ok(DeviceSpec::Embedded));
        assert_eq!(
            "sim:/run/tc.bar".parse(),
            Ok(DeviceSpec::SimFile("/run/tc.bar".into()))
        );
        let pci: DeviceSpec = "pci:0000:01:00.0".parse().unwrap();
        assert_eq!(pci.to_string(), "pci:0000:01:00.0");
        assert_eq!("01:00.0".parse::<DeviceSpec>().unwrap(), pci);
        let err = "usb:3".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(
            err.contains("pci:0000:01:00.0") && err.contains("sim:"),
            "{err}"
        );
        assert!("sim:".parse::<DeviceSpec>().is_err());
    }
}
