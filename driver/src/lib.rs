//! # timecard-driver
//!
//! Userspace driver for the OCP Time Card (work in progress).

pub mod bar;
pub use bar::{Bar, BarError};
