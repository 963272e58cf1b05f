//! The distributed counter, in the spirit of Netflix's Distributed Counter
//! Abstraction, on the `timecard` service foundation ([`eventlog`]).
//!
//! - [`state`]: the pure state machine (pending events per token, rollup,
//!   checkpoints, restart position).
//! - [`service`]: the three counter types, ingest validation against
//!   TrueTime, the log tailer and the rollup pipeline.
//! - [`memcache`]: the memcached client behind best-effort counters.
//! - [`metrics`]: operations, their latency and the status, for `/metrics`.
//! - [`grpc`] and [`http`]: the gRPC API (`timecard.counter.v1.Counter`) and
//!   its HTTP/JSON mirror.
//! - [`cli`]: `serve`, `add`, `get`, `clear`, `status` (also under
//!   `timecard counter`).

pub mod cli;
pub mod grpc;
pub mod http;
pub mod memcache;
pub mod metrics;
pub mod service;
pub mod state;

pub use service::{CounterConfig, CounterError, CounterService, Kind, Reply, Status};

/// Generated protobuf/gRPC code for `proto/counter.proto`.
#[allow(missing_docs, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("timecard.counter.v1");
}
