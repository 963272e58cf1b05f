//! SPI NOR flash cells.
//!
//! NOR flash reads `0xFF` when erased. The cells are stored inverted so that
//! zero-filled memory (a fresh allocation or a sparse shared-memory file) is
//! an erased chip without touching every page.

use std::ops::Range;

/// Size of one erase sector, bytes (the 4 KiB sub-sector `ptp_ocp` erases).
pub const SECTOR: usize = 4096;

/// Read-only view of the flash cells.
#[derive(Clone, Copy, Debug)]
pub struct FlashRef<'a> {
    cells: &'a [u8],
}

/// Mutable view of the flash cells with NOR semantics.
#[derive(Debug)]
pub struct FlashMut<'a> {
    cells: &'a mut [u8],
}

/// Why a flash operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlashError {
    /// The range is outside the chip.
    #[error("flash range {start:#x}..{end:#x} is outside the {len:#x}-byte chip")]
    OutOfRange {
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: usize,
        /// Chip size.
        len: usize,
    },
    /// Erase must start on a sector boundary.
    #[error("erase at {0:#x} is not on a 4 KiB sector boundary")]
    Unaligned(usize),
}

fn check(len: usize, start: usize, n: usize) -> Result<Range<usize>, FlashError> {
    let end = start
        .checked_add(n)
        .filter(|e| *e <= len)
        .ok_or(FlashError::OutOfRange {
            start,
            end: start.saturating_add(n),
            len,
        })?;
    Ok(start..end)
}

impl<'a> FlashRef<'a> {
    /// Wraps raw (inverted) cells.
    #[must_use]
    pub fn new(cells: &'a [u8]) -> Self {
        Self { cells }
    }

    /// Chip size in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the chip has no cells.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Reads `n` bytes at `start`.
    ///
    /// # Errors
    /// [`FlashError::OutOfRange`] if the range leaves the chip.
    pub fn read(&self, start: usize, n: usize) -> Result<Vec<u8>, FlashError> {
        let r = check(self.cells.len(), start, n)?;
        Ok(self.cells[r].iter().map(|c| !c).collect())
    }
}

impl<'a> FlashMut<'a> {
    /// Wraps raw (inverted) cells.
    pub fn new(cells: &'a mut [u8]) -> Self {
        Self { cells }
    }

    /// A read-only view.
    #[must_use]
    pub fn as_ref(&self) -> FlashRef<'_> {
        FlashRef::new(self.cells)
    }

    /// Erases the 4 KiB sector starting at `start` to `0xFF`.
    ///
    /// # Errors
    /// Unaligned or out-of-range sectors are refused.
    pub fn erase_sector(&mut self, start: usize) -> Result<(), FlashError> {
        if !start.is_multiple_of(SECTOR) {
            return Err(FlashError::Unaligned(start));
        }
        let r = check(self.cells.len(), start, SECTOR)?;
        self.cells[r].fill(0);
        Ok(())
    }

    /// Programs bytes at `start`. As on NOR flash, programming can only clear
    /// bits: the result is the AND of the old and new contents.
    ///
    /// # Errors
    /// [`FlashError::OutOfRange`] if the range leaves the chip.
    pub fn program(&mut self, start: usize, data: &[u8]) -> Result<(), FlashError> {
        let r = check(self.cells.len(), start, data.len())?;
        for (cell, byte) in self.cells[r].iter_mut().zip(data) {
            // Stored inverted: clearing a bit of the value sets it in the cell.
            *cell |= !byte;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_cells_read_erased_and_program_ands() {
        let mut cells = vec![0u8; 2 * SECTOR];
        let mut f = FlashMut::new(&mut cells);
        assert_eq!(f.as_ref().read(0, 4).unwrap(), vec![0xFF; 4]);
        f.program(1, &[0x0F, 0xA5]).unwrap();
        f.program(1, &[0xF3, 0xFF]).unwrap();
        assert_eq!(f.as_ref().read(0, 4).unwrap(), vec![0xFF, 0x03, 0xA5, 0xFF]);
        f.erase_sector(0).unwrap();
        assert_eq!(f.as_ref().read(0, 4).unwrap(), vec![0xFF; 4]);
        assert_eq!(f.erase_sector(5), Err(FlashError::Unaligned(5)));
        assert!(f.program(2 * SECTOR - 1, &[0, 0]).is_err());
        assert!(f.as_ref().read(usize::MAX, 2).is_err());
    }
}
