//! The bulkhead: a bounded queue, `concurrency` worker tasks, a per-request
//! timeout and a circuit breaker in front of one adapter.
//!
//! The queue is a `VecDeque` behind a short-held std mutex plus a
//! [`tokio::sync::Notify`]; idle workers sleep on the notify and are woken
//! only when the queue goes from empty to non-empty (a worker that leaves
//! items behind wakes the next). Workers take several pushes per lock when
//! the queue is long. Nothing is allocated or spawned per push.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::breaker::{Breaker, BreakerState, Permit};
use crate::{Adapter, Channel, Outcome, Push, SendError};

/// Most pushes a worker takes from the queue per lock.
const MAX_BATCH: usize = 32;

/// The [`SendError::Transient`] reason reported for pushes cut off by the
/// shutdown deadline (or by the runtime going away).
pub const SHUTDOWN_REASON: &str = "shutdown";

/// Sizing and failure policy of one bulkhead.
#[derive(Clone, Debug)]
pub struct BulkheadConfig {
    /// Most pushes waiting (not yet being sent); default 10 000.
    pub queue_capacity: usize,
    /// Worker tasks, i.e. most requests in flight; default 64.
    pub concurrency: usize,
    /// Per-request timeout; default 5 s.
    pub timeout: Duration,
    /// Consecutive Transient/Timeout failures that open the breaker; default 5.
    pub failure_threshold: u32,
    /// Cool-down before one half-open probe; default 10 s.
    pub open_for: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            queue_capacity: 10_000,
            concurrency: 64,
            timeout: Duration::from_secs(5),
            failure_threshold: 5,
            open_for: Duration::from_secs(10),
        }
    }
}

/// Why a push was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue holds `queue_capacity` pushes.
    #[error("queue full")]
    QueueFull,
    /// The channel's circuit breaker is open.
    #[error("circuit breaker open")]
    BreakerOpen,
    /// The bulkhead is shutting down or shut down.
    #[error("bulkhead closed")]
    Closed,
}

/// Receives the outcome of every queued push, once, on a worker task (keep it quick).
pub type OutcomeSink = Arc<dyn Fn(&Push, &Outcome) + Send + Sync>;

/// Counters and state of one bulkhead.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BulkheadStats {
    /// Channel name.
    pub channel: &'static str,
    /// Pushes queued and not yet started.
    pub queued: usize,
    /// Requests being sent.
    pub in_flight: usize,
    /// Outcome `Delivered`.
    pub delivered: u64,
    /// Outcome `Failed(_)`, all kinds (timeouts and unregistered included).
    pub failed: u64,
    /// Outcome `Failed(Timeout)`.
    pub timeouts: u64,
    /// Outcome `Failed(Unregistered)`.
    pub unregistered: u64,
    /// Refused by `try_submit` with `QueueFull`.
    pub shed_queue_full: u64,
    /// Refused by `try_submit` with `BreakerOpen`.
    pub shed_breaker_open: u64,
    /// Queued pushes completed with `Outcome::BreakerOpen` (not sent).
    pub dropped_breaker_open: u64,
    /// Breaker state now.
    pub breaker: BreakerState,
    /// Times the breaker has opened.
    pub breaker_opened: u64,
}

/// One channel's bulkhead. Cheap to clone; when the last clone is dropped
/// the queue closes and the workers finish what is queued, then exit.
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    workers: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

struct Queue {
    items: VecDeque<Push>,
    closed: bool,
}

struct Shared {
    channel: Channel,
    capacity: usize,
    workers: usize,
    timeout: Duration,
    queue: Mutex<Queue>,
    /// Mirrors `queue.closed` for a lock-free check.
    closed: AtomicBool,
    notify: Notify,
    /// Queued and not yet started (shared queue plus workers' local batches).
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    breaker: Mutex<Breaker>,
    /// Mirrors `breaker.is_clean()` so the common case takes no lock.
    breaker_clean: AtomicBool,
    on_outcome: OutcomeSink,
    delivered: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
    unregistered: AtomicU64,
    shed_queue_full: AtomicU64,
    shed_breaker_open: AtomicU64,
    dropped_breaker_open: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Bulkhead {
    /// Spawns `config.concurrency` (at least 1) worker tasks on the current
    /// tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start<A: Adapter>(adapter: A, config: BulkheadConfig, on_outcome: OutcomeSink) -> Self {
        let workers = config.concurrency.max(1);
        let shared = Arc::new(Shared {
            channel: adapter.channel(),
            capacity: config.queue_capacity,
            workers,
            timeout: config.timeout,
            queue: Mutex::new(Queue {
                items: VecDeque::with_capacity(config.queue_capacity.min(65_536)),
                closed: false,
            }),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            breaker: Mutex::new(Breaker::new(config.failure_threshold, config.open_for)),
            breaker_clean: AtomicBool::new(true),
            on_outcome,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            unregistered: AtomicU64::new(0),
            shed_queue_full: AtomicU64::new(0),
            shed_breaker_open: AtomicU64::new(0),
            dropped_breaker_open: AtomicU64::new(0),
        });
        let adapter = Arc::new(adapter);
        let handles = (0..workers)
            .map(|_| tokio::spawn(worker(Arc::clone(&shared), Arc::clone(&adapter))))
            .collect();
        tracing::debug!(channel = %shared.channel, workers, capacity = shared.capacity, "bulkhead started");
        Bulkhead {
            inner: Arc::new(Handle {
                shared,
                workers: tokio::sync::Mutex::new(handles),
            }),
        }
    }

    /// The adapter's channel.
    #[must_use]
    pub fn channel(&self) -> Channel {
        self.inner.shared.channel
    }

    /// Never blocks, never awaits: queues the push or refuses it (queue full /
    /// breaker open / closed). A refused push is not reported to the sink.
    ///
    /// # Errors
    ///
    /// [`Refused`] says why the push was not queued.
    pub fn try_submit(&self, push: Push) -> Result<(), Refused> {
        self.inner.shared.try_submit(push)
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> BulkheadStats {
        let s = &self.inner.shared;
        let (breaker, breaker_opened) = {
            let b = lock(&s.breaker);
            (b.state_at(Instant::now()), b.opened_count())
        };
        BulkheadStats {
            channel: s.channel.as_str(),
            queued: s.queued.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            unregistered: s.unregistered.load(Ordering::Relaxed),
            shed_queue_full: s.shed_queue_full.load(Ordering::Relaxed),
            shed_breaker_open: s.shed_breaker_open.load(Ordering::Relaxed),
            dropped_breaker_open: s.dropped_breaker_open.load(Ordering::Relaxed),
            breaker,
            breaker_opened,
        }
    }

    /// Stops accepting, lets workers finish queued pushes up to `deadline`,
    /// then stops them. Pushes still queued or in flight at the deadline are
    /// reported as `Failed(Transient("shutdown"))`. Returns when every worker
    /// has stopped; concurrent and repeated calls are harmless.
    pub async fn shutdown(&self, deadline: Duration) {
        let shared = &self.inner.shared;
        shared.close();
        let mut workers = self.inner.workers.lock().await;
        let mut handles = std::mem::take(&mut *workers);
        // Workers awaited to completion so far (a finished JoinHandle must
        // not be polled again).
        let mut joined = 0;
        let drained = tokio::time::timeout(deadline, async {
            for h in &mut handles {
                let _ = h.await;
                joined += 1;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(channel = %shared.channel, "shutdown deadline reached; cutting off remaining pushes");
            let rest: Vec<JoinHandle<()>> = handles.into_iter().skip(joined).collect();
            for h in &rest {
                h.abort();
            }
            // Aborted workers report their local pushes as they are dropped.
            for h in rest {
                let _ = h.await;
            }
        }
        // Anything the workers never took.
        let rest = std::mem::take(&mut lock(&shared.queue).items);
        for push in rest {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            shared.report(
                &push,
                &Outcome::Failed(SendError::Transient(SHUTDOWN_REASON.into())),
            );
        }
        tracing::debug!(channel = %shared.channel, "bulkhead stopped");
    }
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("channel", &self.channel())
            .finish_non_exhaustive()
    }
}

enum Fill {
    Got,
    Empty,
    Closed,
}

impl Shared {
    fn try_submit(&self, push: Push) -> Result<(), Refused> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Refused::Closed);
        }
        if !self.breaker_clean.load(Ordering::Relaxed)
            && !self.with_breaker(|b| b.admits(Instant::now()))
        {
            self.shed_breaker_open.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::BreakerOpen);
        }
        let was_empty = {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(Refused::Closed);
            }
            if self.queued.load(Ordering::Relaxed) >= self.capacity {
                drop(q);
                self.shed_queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::QueueFull);
            }
            self.queued.fetch_add(1, Ordering::Relaxed);
            q.items.push_back(push);
            q.items.len() == 1
        };
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        lock(&self.queue).closed = true;
        self.closed.store(true, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    fn fill(&self, out: &mut VecDeque<Push>) -> Fill {
        let more = {
            let mut q = lock(&self.queue);
            let len = q.items.len();
            if len == 0 {
                return if q.closed { Fill::Closed } else { Fill::Empty };
            }
            let n = (len / self.workers).clamp(1, MAX_BATCH);
            out.extend(q.items.drain(..n));
            len > n
        };
        if more {
            self.notify.notify_one();
        }
        Fill::Got
    }

    fn with_breaker<R>(&self, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let mut b = lock(&self.breaker);
        let before = b.state();
        let r = f(&mut b);
        self.breaker_clean.store(b.is_clean(), Ordering::Relaxed);
        let after = b.state();
        if before != after {
            let channel = self.channel.as_str();
            match after {
                BreakerState::Open => {
                    tracing::warn!(channel, opened = b.opened_count(), "circuit breaker opened");
                }
                BreakerState::HalfOpen => {
                    tracing::info!(channel, "circuit breaker half-open: sending a probe")
                }
                BreakerState::Closed => tracing::info!(channel, "circuit breaker closed"),
            }
        }
        r
    }

    fn acquire(&self) -> Option<Permit> {
        if self.breaker_clean.load(Ordering::Relaxed) {
            Some(Permit::Normal)
        } else {
            self.with_breaker(|b| b.acquire(Instant::now()))
        }
    }

    fn record(&self, permit: Permit, result: &Result<(), SendError>) {
        if result.is_ok() && permit == Permit::Normal && self.breaker_clean.load(Ordering::Relaxed)
        {
            return;
        }
        self.with_breaker(|b| b.record(permit, result, Instant::now()));
    }

    fn report(&self, push: &Push, outcome: &Outcome) {
        match outcome {
            Outcome::Delivered => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::BreakerOpen => {
                self.dropped_breaker_open.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                match e {
                    SendError::Timeout => {
                        self.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    SendError::Unregistered => {
                        self.unregistered.fetch_add(1, Ordering::Relaxed);
                    }
                    SendError::Rejected(_) | SendError::Transient(_) => {}
                }
            }
        }
        (self.on_outcome)(push, outcome);
    }
}

/// A worker's local batch. Dropping it (task aborted at the shutdown
/// deadline, or the runtime going away) reports every push in it that has
/// not been reported yet, so each push gets exactly one outcome.
struct Local {
    shared: Arc<Shared>,
    items: VecDeque<Push>,
    /// The front item has been started (counted in flight, not queued).
    front_started: bool,
}

impl Drop for Local {
    fn drop(&mut self) {
        for (i, push) in self.items.drain(..).enumerate() {
            if i == 0 && self.front_started {
                self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            } else {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            }
            self.shared.report(
                &push,
                &Outcome::Failed(SendError::Transient(SHUTDOWN_REASON.into())),
            );
        }
    }
}

async fn worker<A: Adapter>(shared: Arc<Shared>, adapter: Arc<A>) {
    let mut local = Local {
        shared: Arc::clone(&shared),
        items: VecDeque::with_capacity(MAX_BATCH),
        front_started: false,
    };
    loop {
        match shared.fill(&mut local.items) {
            Fill::Got => {}
            Fill::Closed => return,
            Fill::Empty => {
                let mut notified = pin!(shared.notify.notified());
                notified.as_mut().enable();
                match shared.fill(&mut local.items) {
                    Fill::Got => {}
                    Fill::Closed => return,
                    Fill::Empty => {
                        notified.await;
                        continue;
                    }
                }
            }
        }
        while let Some(push) = local.items.front() {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            local.front_started = true;
            let outcome = process(&shared, &*adapter, push).await;
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            local.front_started = false;
            shared.report(push, &outcome);
            local.items.pop_front();
        }
    }
}

async fn process<A: Adapter>(shared: &Shared, adapter: &A, push: &Push) -> Outcome {
    let Some(permit) = shared.acquire() else {
        return Outcome::BreakerOpen;
    };
    let result = send_with_timeout(adapter, push, shared.timeout).await;
    shared.record(permit, &result);
    match result {
        Ok(()) => Outcome::Delivered,
        Err(e) => Outcome::Failed(e),
    }
}

/// Polls the send once before arming the timer, so an adapter that answers
/// at once (in-process) costs no timer registration.
async fn send_with_timeout<A: Adapter>(
    adapter: &A,
    push: &Push,
    timeout: Duration,
) -> Result<(), SendError> {
    let mut fut = pin!(adapter.send(push));
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(r) => r,
        Poll::Pending => tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Err(SendError::Timeout)),
    }
}
