//! The append-only event log, over one of two backends.
//!
//! Records are [`Envelope`]s with sequence numbers assigned by the log
//! (consecutive from 1 in the embedded log; the stream sequence in
//! JetStream). An append returns once the records are durable; readers
//! consume in sequence order from any position, so a service that rebuilds
//! its state after a restart reads exactly what it read live.

use std::time::Duration;

use crate::envelope::Envelope;
use crate::nats::NatsLog;
use crate::segment::SegmentLog;

/// A record with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Sequence number.
    pub seq: u64,
    /// The event.
    pub envelope: Envelope,
}

/// Why the log failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// A file system error (path and cause).
    #[error("event log I/O: {0}")]
    Io(String),
    /// Stored data failed its checks; nothing was dropped silently.
    #[error("event log corrupt: {0}")]
    Corrupt(String),
    /// The log's writer is gone (shutting down).
    #[error("event log closed")]
    Closed,
    /// The NATS backend failed (server unreachable, no quorum, timeout…).
    #[error("NATS JetStream: {0}")]
    Nats(String),
}

/// The event log (cheap to clone).
#[derive(Clone, Debug)]
pub enum EventLog {
    /// Segment files on local disk.
    Embedded(SegmentLog),
    /// A JetStream stream.
    Nats(NatsLog),
}

impl EventLog {
    /// Appends `envelopes`; returns the sequence number of the last one once
    /// all are durable. An empty batch returns `end() − 1`.
    pub async fn append(&self, envelopes: Vec<Envelope>) -> Result<u64, LogError> {
        let n = envelopes.len() as u64;
        match self {
            Self::Embedded(l) => {
                if n == 0 {
                    return Ok(l.end() - 1);
                }
                Ok(l.append(envelopes).await? + n - 1)
            }
            Self::Nats(l) => l.append(envelopes).await,
        }
    }

    /// Up to `max` records with sequence ≥ `from`, in order; waits up to
    /// `wait` for the first one when there is none yet.
    pub async fn read(
        &self,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Stored>, LogError> {
        match self {
            Self::Embedded(l) => {
                l.wait_past(from, wait).await;
                let l = l.clone();
                tokio::task::spawn_blocking(move || l.read(from, max))
                    .await
                    .map_err(|_| LogError::Closed)?
            }
            Self::Nats(l) => l.read(from, max, wait).await,
        }
    }

    /// One past the last sequence number.
    pub async fn end(&self) -> Result<u64, LogError> {
        match self {
            Self::Embedded(l) => Ok(l.end()),
            Self::Nats(l) => l.end().await,
        }
    }

    /// Lets the log drop records below `seq` (whole segments / stream purge).
    pub async fn trim_before(&self, seq: u64) -> Result<(), LogError> {
        match self {
            Self::Embedded(l) => l.trim_before(seq).map(drop),
            Self::Nats(l) => l.trim_before(seq).await,
        }
    }
}
