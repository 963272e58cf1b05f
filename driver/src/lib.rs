//! # timecard-driver
//!
//! A userspace driver for the OCP Time Card. One [`TimeCard`] API runs over
//! any [`Bar`] (32-bit MMIO window onto BAR0):
//!
//! - [`vfio`]: a real card bound to `vfio-pci` (feature `vfio`), with
//!   preflight checks that say what to fix ([`discover`]);
//! - [`simbar`]: the simulator, in-process or in a shared-memory file
//!   (feature `sim`).
//!
//! The register sequences are those of Linux's `ptp_ocp`; on top sit a dead
//! card check, a time continuity guard and a 1 Hz [`supervisor::Supervisor`]
//! that watches GNSS loss, UTC offset changes and GNSS time jumps. The GNSS
//! receiver's NMEA stream is read by [`gnss`]. [`flash`] reads and writes
//! the FPGA image in the card's SPI flash, never touching the golden image.
//! [`chrony`] feeds the card's time to `chronyd` as a `SOCK` refclock.

pub mod bar;
pub mod card;
pub mod chrony;
pub mod device;
pub mod discover;
pub mod flash;
pub mod gnss;
pub mod hostclock;
#[cfg(feature = "sim")]
pub mod simbar;
pub mod supervisor;
#[cfg(feature = "vfio")]
pub mod vfio;

pub use bar::{Bar, BarError};
pub use card::{CardError, CardStatus, Identity, InitOptions, TimeCard, TimeReading};
pub use device::DeviceSpec;
pub use hostclock::{HostClock, SystemClock};
