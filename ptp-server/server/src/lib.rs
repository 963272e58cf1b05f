//! # ptp-server — a ptp4u-style unicast PTP grandmaster serving a Time Card
//!
//! IEEE 1588-2019 unicast over UDP in the style of Meta's ptp4u: clients
//! negotiate Announce, Sync and Delay_Resp streams with Signaling TLVs and
//! get two-step Sync/Follow_Up, Announce and Delay_Resp; stateless SPTP
//! requests (a Delay_Req flagged `UNICAST | PROFILE_SPECIFIC_1`) are answered
//! with Sync + Announce as ptp4u does.
//!
//! - [`subscriptions`] and [`quality`] are pure: negotiation, the per-worker
//!   subscription table, and the c4u-style clockClass/clockAccuracy.
//! - [`timemap`] maps kernel timestamps (host `CLOCK_REALTIME`) to card time;
//!   [`source`] samples the card through the driver to keep it current and
//!   runs the driver's supervisor.
//! - [`net`] is the Linux socket layer (`SO_TIMESTAMPING`, error-queue TX
//!   timestamps, `SO_REUSEPORT`, DSCP); [`receiver`] and [`worker`] are the
//!   receive and send threads; [`server`] wires them with [`monitor`]
//!   (JSON/Prometheus), drain control and graceful shutdown; [`config`] is the
//!   TOML configuration.

pub mod config;
pub mod monitor;
pub mod net;
pub mod quality;
pub mod receiver;
pub mod server;
pub mod source;
pub mod stats;
pub mod subscriptions;
pub mod timemap;
pub mod worker;

pub use config::Config;
pub use server::Server;
pub use source::{CardSource, TimeSource};
