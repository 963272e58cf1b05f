//! Replay testing, in the style of Netflix's dedicated replay service: a
//! candidate deployment answers the same requests as production and the
//! two answers are compared after normalization, so only real behaviour
//! changes show up as differences.
//!
//! This crate holds the pure parts: the captured exchange with its lineage
//! ([`record`]) and the normalization rules and structural diff
//! ([`normalize`]). The capture tap in the services, the replayer and the
//! Iceberg sink build on them.

pub mod normalize;
pub mod record;
pub mod tap;
