//! # timecard-hw
//!
//! The OCP Time Card as data: PCI identities, BAR0 block layouts per board,
//! every register the Linux `ptp_ocp` driver and the NetTimeLogic FPGA cores
//! define (offsets, bitfields, the sign-magnitude convention), the `OCPC`
//! firmware image header with its CRC-16, and the NMEA 0183 sentences the
//! card's GNSS UART carries.
//!
//! No I/O happens here: the simulator (`timecard-sim`) and the driver
//! (`timecard-driver`) both build on these definitions, so a register means
//! the same thing on both sides of the MMIO seam.
//!
//! - [`pci`]: vendor/device IDs and the [`pci::Board`] models.
//! - [`layout`]: where each block sits in BAR0, per board.
//! - [`regs`]: offsets and bitfields inside each block, plus decoders
//!   (clock source, UTC status, frequency readings, firmware version).
//! - [`sign_magnitude`]: the bit-31-sign encoding several registers use.
//! - [`firmware`]: the `OCPC` image header, CRC-16 and the driver's checks.
//! - [`spi`]: the SPI flash controller and the NOR command set behind it.
//! - [`civil`]: calendar arithmetic and [`civil::UtcDateTime`].
//! - [`nmea`]: NMEA 0183 generation and parsing for the GNSS UART.
#![forbid(unsafe_code)]

pub mod civil;
pub mod firmware;
pub mod layout;
pub mod nmea;
pub mod pci;
pub mod regs;
pub mod sign_magnitude;
pub mod spi;
