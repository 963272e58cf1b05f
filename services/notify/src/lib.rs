//! Rapid event notification in the style of Netflix's RENO, ordered by
//! TrueTime.
//!
//! Events enter through one ingestion API (gRPC and HTTP/JSON), become
//! durable in a log per priority and member shard, pass gates (staleness
//! by TrueTime, de-duplication, targeting, online check), land in a
//! per-member store that devices pull from, and are pushed to online
//! devices through one bulkhead per channel (APNs, FCM, the push edge).
//!
//! - [`model`]: priorities, device types, notification types, the event.
//! - [`gates`]: staleness and de-duplication, pure.
//! - [`pool`]: lag-driven pool sizing as goal state, pure.
//! - [`store`]: the event-sourced member store and `state_at`.
//! - [`registry`]: the push registry (online devices, TTL).
//! - [`edge`]: the in-process push-edge channel.
//! - [`metrics`]: per-stage counters and histograms (Prometheus text).
//! - [`service`]: the pipeline wired together.
//! - [`http`], [`grpc`]: the APIs; [`cli`]: `serve` and client commands.

pub mod cli;
pub mod edge;
pub mod gates;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod registry;
pub mod service;
pub mod store;

/// Generated gRPC types (`proto/notify.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("timecard.notify.v1");
}

pub use service::{IncomingEvent, NotifyConfig, NotifyError, NotifyService};
