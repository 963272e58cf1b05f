//! The MMIO seam: a 32-bit register window onto the card's BAR0.
//!
//! Everything the driver does goes through [`Bar`]. The VFIO backend implements
//! it over a real PCI BAR, the simulator backends over a software card; the
//! driver logic above cannot tell them apart.

use std::fmt;

use timecard_hw::pci::PciId;

/// Why a register access failed at the transport level.
#[derive(Debug, thiserror::Error)]
pub enum BarError {
    /// The offset is outside the BAR or not 4-byte aligned.
    #[error("register offset {offset:#x} is outside the {len:#x}-byte BAR or unaligned")]
    OutOfRange {
        /// Byte offset that was requested.
        offset: u32,
        /// Length of the BAR in bytes.
        len: u64,
    },
    /// The underlying transport (pread/pwrite on a VFIO fd, shared memory) failed.
    #[error("BAR access failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A 32-bit little-endian MMIO window (BAR0 of a Time Card).
///
/// Implementations must be usable from several threads; each access is a single
/// 32-bit read or write with the side effects the hardware gives it.
#[allow(clippy::len_without_is_empty)] // a BAR is never empty
pub trait Bar: Send + Sync + fmt::Debug {
    /// Reads the 32-bit register at byte `offset`.
    fn read32(&self, offset: u32) -> Result<u32, BarError>;
    /// Writes the 32-bit register at byte `offset`.
    fn write32(&self, offset: u32, value: u32) -> Result<(), BarError>;
    /// Length of the window in bytes.
    fn len(&self) -> u64;
    /// Short description of the backend for status output (e.g. `vfio:0000:01:00.0`).
    fn describe(&self) -> String;
    /// PCI vendor/device ID from the function's config space.
    fn pci_id(&self) -> PciId;
}

/// Checks that a 32-bit access at `offset` lies inside a `len`-byte BAR and is
/// 4-byte aligned; returns the offset as `usize`.
///
/// # Errors
/// [`BarError::OutOfRange`] otherwise.
pub fn check_access(offset: u32, len: u64) -> Result<usize, BarError> {
    let out_of_range = BarError::OutOfRange { offset, len };
    if !offset.is_multiple_of(4) || u64::from(offset) + 4 > len {
        return Err(out_of_range);
    }
    usize::try_from(offset).map_err(|_| out_of_range)
}
