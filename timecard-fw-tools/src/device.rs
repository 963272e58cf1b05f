//! Opening the card named by `--device`, for commands that need one.
//!
//! `pci:ADDRESS` (a card bound to vfio-pci) and `sim:PATH` (a simulator
//! started with `timecard sim --bar PATH`) are opened with the driver. The
//! embedded simulator (`sim`) is refused: it would be created by this command
//! and die with it, so checking or flashing it would change nothing anyone
//! can see.

use timecard_driver::device::{self, OpenError};
use timecard_driver::{CardError, DeviceSpec, Identity, TimeCard};

use crate::exit::{EX_UNAVAILABLE, EX_USAGE};

/// Why a device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `--device sim`: an embedded simulator.
    #[error(
        "--device sim names a simulator embedded in this command, which would end with the command; \
         start one with `timecard sim --bar PATH` and use --device sim:PATH"
    )]
    Embedded,
    /// The driver could not open it.
    #[error("cannot use device {device}: {source}")]
    Open {
        /// The device as given.
        device: String,
        /// The driver's reason.
        source: OpenError,
    },
    /// It opened but did not answer.
    #[error("cannot identify device {device}: {source}")]
    Identify {
        /// The device as given.
        device: String,
        /// The driver's reason.
        source: CardError,
    },
}

impl DeviceError {
    /// 2 for the embedded simulator (a usage mistake), else 69 (`EX_UNAVAILABLE`).
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            DeviceError::Embedded => EX_USAGE,
            _ => EX_UNAVAILABLE,
        }
    }
}

/// Opens the card `spec` names (not the embedded simulator).
///
/// # Errors
/// [`DeviceError`].
pub fn open_card(spec: &DeviceSpec) -> Result<TimeCard, DeviceError> {
    if *spec == DeviceSpec::Embedded {
        return Err(DeviceError::Embedded);
    }
    device::open(spec).map_err(|source| DeviceError::Open {
        device: spec.to_string(),
        source,
    })
}

/// Opens the card and reads its identity (board, PCI ID, running firmware).
///
/// # Errors
/// [`DeviceError`].
pub fn identify(spec: &DeviceSpec) -> Result<Identity, DeviceError> {
    open_card(spec)?
        .identify()
        .map_err(|source| DeviceError::Identify {
            device: spec.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_is_a_usage_error_and_missing_files_are_unavailable() {
        let e = identify(&DeviceSpec::Embedded).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("timecard sim --bar PATH"));
        let dir = tempfile::tempdir().unwrap();
        let spec = DeviceSpec::SimFile(dir.path().join("none.bar"));
        let e = identify(&spec).unwrap_err();
        assert_eq!(e.exit_code(), 69);
        assert!(e.to_string().contains("none.bar"), "{e}");
    }
}
