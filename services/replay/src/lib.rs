//! Replay testing, in the style of Netflix's dedicated replay service: a
//! candidate deployment answers the same requests as production and the
//! two answers are compared after normalization, so only real behaviour
//! changes show up as differences.
//!
//! This crate holds what a service embeds and what the replayer shares: the
//! captured exchange with its lineage ([`record`]), the capture tap
//! ([`tap`]), the capture stream and its endpoints ([`capture`]), and the
//! normalization rules and structural diff ([`normalize`]). The replay
//! service itself (pacing, candidate calls, the Iceberg sink) is the
//! `timecard-replayer` crate.

pub mod capture;
pub mod normalize;
pub mod record;
pub mod tap;
