//! Outbound push delivery with one bulkhead per channel.
//!
//! The notification pipeline hands individual [`Push`]es to delivery
//! channels ([`Channel::Apns`], [`Channel::Fcm`], [`Channel::Edge`]). Each
//! channel runs behind its own [`Bulkhead`]: a bounded queue, a fixed number
//! of worker tasks (the concurrency limit), a per-request timeout and a
//! circuit [`breaker`], so a stalled provider never slows the others and
//! memory stays bounded.
//!
//! # Contract
//!
//! * The caller starts one [`Bulkhead`] per channel with an [`Adapter`]
//!   ([`apns::ApnsAdapter`], [`fcm::FcmAdapter`], or its own in-process one,
//!   e.g. [`FnAdapter`]) and an [`OutcomeSink`].
//! * [`Bulkhead::try_submit`] never waits: it queues the push or refuses it
//!   ([`Refused`]); refused pushes are the caller's to count.
//! * Every queued push is reported to the sink exactly once with an
//!   [`Outcome`], also across [`Bulkhead::shutdown`] (pushes cut off by the
//!   shutdown deadline are reported as `Failed(Transient(SHUTDOWN_REASON))`).
//! * The breaker (see [`breaker`]) opens after consecutive Transient/Timeout
//!   failures; while open, `try_submit` refuses and queued pushes complete
//!   with [`Outcome::BreakerOpen`] without reaching the adapter. While
//!   half-open, pushes queued beside the single probe also complete with
//!   `BreakerOpen`.
//!
//! The adapters speak the providers' wire protocols (APNs HTTP/2 JSON, FCM
//! HTTP v1) over cleartext HTTP/2 only (no TLS is built in). With the
//! `standin` feature, [`standin`] provides local APNs / FCM look-alikes that
//! validate requests like the real services.

#![forbid(unsafe_code)]

pub mod apns;
pub mod breaker;
mod bulkhead;
pub mod fcm;
#[cfg(feature = "standin")]
pub mod standin;
mod transport;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

pub use apns::{ApnsAdapter, ApnsConfig};
pub use breaker::BreakerState;
pub use bulkhead::{
    Bulkhead, BulkheadConfig, BulkheadStats, OutcomeSink, Refused, SHUTDOWN_REASON,
};
pub use fcm::{FcmAdapter, FcmConfig};
pub use transport::{ConfigError, EndpointError};

/// Delivery channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging.
    Fcm,
    /// Our own push edge (in-process).
    Edge,
}

impl Channel {
    /// Every channel, in a fixed order.
    pub const ALL: [Channel; 3] = [Channel::Apns, Channel::Fcm, Channel::Edge];

    /// Lower-case name: `"apns"`, `"fcm"`, `"edge"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Apns => "apns",
            Channel::Fcm => "fcm",
            Channel::Edge => "edge",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel name that is not `apns`, `fcm` or `edge`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel {0:?} (expected apns, fcm or edge)")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "apns" => Ok(Channel::Apns),
            "fcm" => Ok(Channel::Fcm),
            "edge" => Ok(Channel::Edge),
            other => Err(UnknownChannel(other.to_owned())),
        }
    }
}

/// One push to one device.
#[derive(Clone, Debug)]
pub struct Push {
    /// The notification this push belongs to.
    pub notification_id: u64,
    /// The member the device belongs to.
    pub member: Arc<str>,
    /// Our id of the device.
    pub device_id: Arc<str>,
    /// APNs device token (hex) / FCM registration token / edge: device id.
    pub device_token: Arc<str>,
    /// APNs `apns-priority` 10 (true) vs 5; FCM `android.priority` HIGH vs NORMAL.
    pub urgent: bool,
    /// Notification type, e.g. `"new-episode"`.
    pub kind: Arc<str>,
    /// A JSON object given at ingest (already validated as JSON by the caller).
    pub body: Bytes,
    /// Unix seconds after which the push is useless; 0 = no expiry.
    pub expires_at_unix_s: i64,
    /// When the pipeline accepted it (for latency).
    pub created: Instant,
}

/// Why one send failed (returned by adapters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The device token is dead (APNs 410, FCM `UNREGISTERED`): remove the device.
    #[error("device token unregistered")]
    Unregistered,
    /// Permanent refusal of this push (bad token, payload too large...) with the provider's reason.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Provider or network trouble (5xx, 429, connection errors, protocol errors); counts for the breaker.
    #[error("transient failure: {0}")]
    Transient(String),
    /// No answer within the bulkhead's timeout; counts for the breaker.
    #[error("timed out")]
    Timeout,
}

impl SendError {
    /// Whether this failure is the channel's fault (counts toward opening the breaker).
    #[must_use]
    pub fn is_channel_failure(&self) -> bool {
        matches!(self, SendError::Transient(_) | SendError::Timeout)
    }
}

/// What happened to a push (reported for every queued push exactly once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the push.
    Delivered,
    /// The adapter failed (or the request timed out, or shutdown cut it off).
    Failed(SendError),
    /// The breaker was open when a worker took the push: not sent.
    BreakerOpen,
}

/// A channel adapter: sends one push.
pub trait Adapter: Send + Sync + 'static {
    /// The channel this adapter delivers to.
    fn channel(&self) -> Channel;
    /// Sends one push; the bulkhead bounds it with its timeout.
    fn send(&self, push: &Push) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// An in-process adapter from a synchronous function (for the edge channel, tests and benches).
pub struct FnAdapter<F> {
    channel: Channel,
    f: F,
}

impl<F> FnAdapter<F>
where
    F: Fn(&Push) -> Result<(), SendError> + Send + Sync + 'static,
{
    /// Wraps `f` as the adapter of `channel`.
    pub fn new(channel: Channel, f: F) -> Self {
        FnAdapter { channel, f }
    }
}

impl<F> Adapter for FnAdapter<F>
where
    F: Fn(&Push) -> Result<(), SendError> + Send + Sync + 'static,
{
    fn channel(&self) -> Channel {
        self.channel
    }

    fn send(&self, push: &Push) -> impl Future<Output = Result<(), SendError>> + Send {
        std::future::ready((self.f)(push))
    }
}

impl<A: Adapter> Adapter for Arc<A> {
    fn channel(&self) -> Channel {
        (**self).channel()
    }

    fn send(&self, push: &Push) -> impl Future<Output = Result<(), SendError>> + Send {
        (**self).send(push)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        for c in Channel::ALL {
            assert_eq!(c.to_string().parse::<Channel>(), Ok(c));
        }
        assert!("sms".parse::<Channel>().is_err());
    }
}
