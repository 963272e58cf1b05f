//! What the daemon reports about itself (gRPC `Status`, `timecard up`, logs).

use serde::Serialize;

/// Synchronisation state of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    /// No accepted exchange yet.
    Unsynced,
    /// Exchanges are being accepted at the configured interval.
    Synced,
    /// No accepted exchange for two intervals: the bound grows with time.
    Holdover,
}

/// A snapshot of the daemon's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DaemonStatus {
    /// Sync state.
    pub state: SyncState,
    /// Grandmaster clock identity (`aabbcc.fffe.ddeeff`), if known.
    pub gm_identity: Option<String>,
    /// Grandmaster clockClass from its Announce.
    pub gm_clock_class: Option<u8>,
    /// Grandmaster clockAccuracy from its Announce.
    pub gm_clock_accuracy: Option<u8>,
    /// Server address.
    pub server: String,
    /// Last measured offset (local − TAI), ns.
    pub last_offset_ns: Option<i64>,
    /// Last measured mean path delay, ns.
    pub last_path_delay_ns: Option<i64>,
    /// Recent offsets (newest last), ns.
    pub recent_offsets_ns: Vec<i64>,
    /// Published error bound at the last exchange, ns.
    pub error_bound_ns: u32,
    /// Published bound growth, ns per second.
    pub holdover_ns_per_s: f64,
    /// Exchanges attempted, accepted, rejected (filters), lost (timeouts).
    pub exchanges: ExchangeCounters,
}

/// Exchange counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExchangeCounters {
    /// Exchanges started.
    pub attempted: u64,
    /// Exchanges accepted into the model.
    pub accepted: u64,
    /// Exchanges rejected by a filter (delay spike, bad correction field).
    pub rejected: u64,
    /// Exchanges without an answer in time.
    pub lost: u64,
}

/// Something that can report the daemon's status (the gRPC service reads it).
pub trait StatusSource: Send + Sync {
    /// The current status.
    fn status(&self) -> DaemonStatus;
}
