//! # timecard-sim
//!
//! A software OCP Time Card (work in progress).
