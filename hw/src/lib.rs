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
#![forbid(unsafe_code)]

pub mod civil;
pub mod firmware;
pub mod layout;
pub mod nmea;
pub mod pci;
pub mod regs;
pub mod sign_magnitude;
