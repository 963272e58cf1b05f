//! The foundation every `timecard` service stands on.
//!
//! - [`clock`]: where services get TrueTime — `fbclockd`'s shared memory,
//!   or the system clock with a configured error bound where no daemon runs
//!   (stated in status output), or a manual clock in tests.
//! - [`envelope`]: the event envelope: key, idempotency token (event time +
//!   nonce), the TrueTime interval at which the service accepted it, payload.
//! - [`log`]: an append-only, durable event log. Backends: embedded segment
//!   files on local disk (survive `kill -9`; fsync per group commit) and NATS
//!   JetStream streams.
//! - [`kv`]: a key-value store for checkpoints and state. Backends: embedded
//!   `redb` and JetStream KV.
//! - [`backend`]: picks the backends from one configuration string
//!   (`embedded:DIR` or `nats://HOST:PORT[,…]`).
//! - [`args`]: the backend and clock flags every service's `serve` shares.
//! - `testkit` (feature `testkit`): test helpers that start real
//!   `nats-server` and `memcached` processes on loopback ports.
//!
//! Everything here is I/O at the edge; the services' state machines stay
//! pure and take these as inputs.

pub mod args;
pub mod backend;
pub mod clock;
pub mod envelope;
pub mod kv;
pub mod log;
pub mod nats;
pub mod segment;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use backend::{Backend, BackendError};
pub use clock::{ClockError, ManualClock, TimeSource};
pub use envelope::{Envelope, EnvelopeError, IdempotencyToken, TokenError};
pub use kv::{Kv, KvError};
pub use log::{EventLog, LogError, Stored};
