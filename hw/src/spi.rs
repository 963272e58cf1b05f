//! The card's configuration-flash path: BAR0's `spi_flash` block is a Xilinx
//! AXI Quad SPI controller (driven by Linux's `spi-xilinx` under `ptp_ocp`),
//! and behind it sits a 32 MiB SPI NOR flash holding the golden image at 0 and
//! the regular image at the board's `flash_start`.
//!
//! - [`xspi`]: the controller's registers and bits (standard SPI mode,
//!   8-bit transfers, manual slave select, 256-byte FIFOs).
//! - [`nor`]: the SPI NOR command set the flash tools use (4-byte-address
//!   opcodes, 4 KiB sub-sector erase, 256-byte page program), the status
//!   register with Micron's block-protect bits, and the chips we know.

pub mod xspi {
    //! Xilinx AXI Quad SPI (PG153) in standard mode: byte offsets from the
    //! block base.

    /// Device global interrupt enable.
    pub const DGIER: u32 = 0x1C;
    /// IP interrupt status (write one to clear).
    pub const IPISR: u32 = 0x20;
    /// IP interrupt enable.
    pub const IPIER: u32 = 0x28;
    /// Software reset: write [`SRR_RESET`].
    pub const SRR: u32 = 0x40;
    /// Control register.
    pub const CR: u32 = 0x60;
    /// Status register (read-only).
    pub const SR: u32 = 0x64;
    /// Transmit data: writing pushes one byte into the TX FIFO.
    pub const DTR: u32 = 0x68;
    /// Receive data: reading pops one byte from the RX FIFO.
    pub const DRR: u32 = 0x6C;
    /// Slave select, active low: bit 0 is the flash.
    pub const SSR: u32 = 0x70;
    /// TX FIFO occupancy minus one (meaningful when not empty).
    pub const TX_OCCUPANCY: u32 = 0x74;
    /// RX FIFO occupancy minus one (meaningful when not empty).
    pub const RX_OCCUPANCY: u32 = 0x78;

    /// The value that resets the core when written to [`SRR`].
    pub const SRR_RESET: u32 = 0x0A;

    /// CR: loopback.
    pub const CR_LOOP: u32 = 1 << 0;
    /// CR: SPI system enable.
    pub const CR_SPE: u32 = 1 << 1;
    /// CR: master mode.
    pub const CR_MASTER: u32 = 1 << 2;
    /// CR: clock polarity.
    pub const CR_CPOL: u32 = 1 << 3;
    /// CR: clock phase.
    pub const CR_CPHA: u32 = 1 << 4;
    /// CR: TX FIFO reset (self-clearing).
    pub const CR_TXFIFO_RESET: u32 = 1 << 5;
    /// CR: RX FIFO reset (self-clearing).
    pub const CR_RXFIFO_RESET: u32 = 1 << 6;
    /// CR: slave select follows [`SSR`] instead of each transfer.
    pub const CR_MANUAL_SS: u32 = 1 << 7;
    /// CR: master transaction inhibit: the FIFO fills but nothing is shifted.
    pub const CR_INHIBIT: u32 = 1 << 8;
    /// CR: LSB first.
    pub const CR_LSB_FIRST: u32 = 1 << 9;
    /// CR: writable bits.
    pub const CR_MASK: u32 = 0x3FF;

    /// SR: RX FIFO empty.
    pub const SR_RX_EMPTY: u32 = 1 << 0;
    /// SR: RX FIFO full.
    pub const SR_RX_FULL: u32 = 1 << 1;
    /// SR: TX FIFO empty.
    pub const SR_TX_EMPTY: u32 = 1 << 2;
    /// SR: TX FIFO full.
    pub const SR_TX_FULL: u32 = 1 << 3;
    /// SR: mode fault.
    pub const SR_MODF: u32 = 1 << 4;

    /// IPISR: a byte arrived while the RX FIFO was full and was lost.
    pub const IPISR_DRR_OVERRUN: u32 = 1 << 5;
    /// IPISR: a byte was written while the TX FIFO was full and was lost.
    pub const IPISR_DTR_OVERRUN: u32 = 1 << 6;

    /// SSR value with no slave selected.
    pub const SSR_NONE: u32 = 0xFFFF_FFFF;
    /// SSR value selecting the flash (slave 0).
    pub const SSR_FLASH: u32 = !1;

    /// Depth of each FIFO, bytes.
    pub const FIFO_DEPTH: usize = 256;
}

pub mod nor {
    //! SPI NOR commands, status bits and the flash chips the tools accept.

    use std::ops::Range;

    /// Write status register.
    pub const WRSR: u8 = 0x01;
    /// Page program, 3-byte address.
    pub const PP: u8 = 0x02;
    /// Read, 3-byte address.
    pub const READ: u8 = 0x03;
    /// Write disable.
    pub const WRDI: u8 = 0x04;
    /// Read status register.
    pub const RDSR: u8 = 0x05;
    /// Write enable (sets WEL; every program or erase needs it).
    pub const WREN: u8 = 0x06;
    /// Page program, 4-byte address.
    pub const PP_4B: u8 = 0x12;
    /// Read, 4-byte address.
    pub const READ_4B: u8 = 0x13;
    /// 4 KiB sub-sector erase, 3-byte address.
    pub const SE_4K: u8 = 0x20;
    /// 4 KiB sub-sector erase, 4-byte address.
    pub const SE_4K_4B: u8 = 0x21;
    /// Chip erase.
    pub const CHIP_ERASE: u8 = 0xC7;
    /// Chip erase (alternative opcode).
    pub const CHIP_ERASE_ALT: u8 = 0x60;
    /// Read JEDEC identification.
    pub const RDID: u8 = 0x9F;
    /// 64 KiB sector erase, 3-byte address.
    pub const SE_64K: u8 = 0xD8;
    /// 64 KiB sector erase, 4-byte address.
    pub const SE_64K_4B: u8 = 0xDC;

    /// Read flag status register (Micron).
    pub const RDFSR: u8 = 0x70;
    /// Clear flag status register (Micron).
    pub const CLFSR: u8 = 0x50;

    /// Flag status: ready (no program or erase running).
    pub const FSR_READY: u8 = 1 << 7;
    /// Flag status: the last erase failed or was refused.
    pub const FSR_ERASE_ERROR: u8 = 1 << 5;
    /// Flag status: the last program failed or was refused.
    pub const FSR_PROGRAM_ERROR: u8 = 1 << 4;
    /// Flag status: the last program or erase hit a protected area.
    pub const FSR_PROTECTION_ERROR: u8 = 1 << 1;

    /// Status: write (program/erase) in progress.
    pub const SR_WIP: u8 = 1 << 0;
    /// Status: write enable latch.
    pub const SR_WEL: u8 = 1 << 1;
    /// Status: block-protect bits 2..0.
    pub const SR_BP_LOW: u8 = 0x1C;
    /// Status: protected area is at the bottom (low addresses) of the array.
    pub const SR_TB: u8 = 1 << 5;
    /// Status: block-protect bit 3.
    pub const SR_BP3: u8 = 1 << 6;
    /// Status: status register write disable (with W# low the register is frozen).
    pub const SR_SRWD: u8 = 1 << 7;

    /// Program page size, bytes.
    pub const PAGE: usize = 256;
    /// Sub-sector (the erase unit `ptp_ocp` uses), bytes.
    pub const SUBSECTOR: usize = 4096;
    /// Sector (the block-protect unit), bytes.
    pub const SECTOR: usize = 65536;

    /// A flash chip the tools know how to drive safely.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Chip {
        /// JEDEC manufacturer, memory type, capacity bytes (`RDID`).
        pub jedec_id: [u8; 3],
        /// Part name.
        pub name: &'static str,
        /// Capacity, bytes.
        pub size: u32,
    }

    /// Chips with Micron's 4-bit block protection and 4-byte opcodes.
    pub const CHIPS: [Chip; 3] = [
        Chip {
            jedec_id: [0x20, 0xBA, 0x19],
            name: "Micron MT25QL256",
            size: 32 << 20,
        },
        Chip {
            jedec_id: [0x20, 0xBB, 0x19],
            name: "Micron MT25QU256",
            size: 32 << 20,
        },
        Chip {
            jedec_id: [0x20, 0xBA, 0x18],
            name: "Micron MT25QL128",
            size: 16 << 20,
        },
    ];

    /// The known chip with this JEDEC ID.
    #[must_use]
    pub fn chip_by_id(id: [u8; 3]) -> Option<&'static Chip> {
        CHIPS.iter().find(|c| c.jedec_id == id)
    }

    /// The 4-bit block-protect value in a status byte.
    #[must_use]
    pub const fn block_protect(status: u8) -> u8 {
        ((status & SR_BP_LOW) >> 2) | if status & SR_BP3 != 0 { 8 } else { 0 }
    }

    /// The address range that Micron's block-protect bits in `status` make
    /// read-only on a chip of `size` bytes: BP = n ≥ 1 protects 2^(n−1)
    /// 64 KiB sectors (capped at the whole chip), at the bottom if TB is set,
    /// else at the top. Empty when BP = 0.
    #[must_use]
    pub fn protected_range(status: u8, size: u32) -> Range<u32> {
        let bp = block_protect(status);
        if bp == 0 {
            return 0..0;
        }
        let len = (SECTOR as u64)
            .checked_shl(u32::from(bp - 1))
            .unwrap_or(u64::MAX)
            .min(u64::from(size)) as u32;
        if status & SR_TB != 0 {
            0..len
        } else {
            size - len..size
        }
    }

    /// Status bits (BP3..0 and TB, plus SRWD) that protect exactly the bottom
    /// `len` bytes, if `len` is a power-of-two number of 64 KiB sectors.
    #[must_use]
    pub fn bottom_protection(len: u32) -> Option<u8> {
        let sectors = len as usize / SECTOR;
        if sectors == 0 || !sectors.is_power_of_two() || sectors * SECTOR != len as usize {
            return None;
        }
        let bp = sectors.trailing_zeros() as u8 + 1;
        if bp > 15 {
            return None;
        }
        let bits = ((bp & 7) << 2) | if bp & 8 != 0 { SR_BP3 } else { 0 };
        Some(bits | SR_TB | SR_SRWD)
    }
}

#[cfg(test)]
mod tests {
    use super::nor::*;

    #[test]
    fn golden_region_protection_round_trips() {
        let size = 32 << 20;
        for len in [4u32 << 20, 16 << 20, 64 << 10] {
            let st = bottom_protection(len).unwrap();
            assert_eq!(protected_range(st, size), 0..len);
            assert_ne!(st & SR_SRWD, 0);
        }
        // fb golden region: 4 MiB = 64 sectors, BP = 7.
        assert_eq!(bottom_protection(4 << 20), Some(0x80 | 0x20 | 0x1C));
        assert_eq!(bottom_protection(3 << 20), None);
        assert_eq!(bottom_protection(0), None);
        assert_eq!(protected_range(0, size), 0..0);
        // Top protection, and a BP larger than the chip covers all of it.
        assert_eq!(protected_range(1 << 2, size), size - (64 << 10)..size);
        assert_eq!(protected_range(0x5C | SR_TB, size), 0..size);
    }

    #[test]
    fn known_chips() {
        assert_eq!(chip_by_id([0x20, 0xBA, 0x19]).unwrap().size, 32 << 20);
        assert!(chip_by_id([0xFF, 0xFF, 0xFF]).is_none());
    }
}
