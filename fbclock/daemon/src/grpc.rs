//! The gRPC API of the daemon: service `timecard.fbclock.v1.FbClock`
//! (`proto/fbclock.proto`).
//!
//! * `GetTime` — TrueTime now (TAI, or UTC on request), computed with the same
//!   client library applications use ([`FbClock::now`] / [`FbClock::now_utc`]).
//! * `WaitUntil` — commit-wait on the server: answers once `earliest > ts`,
//!   `DEADLINE_EXCEEDED` after `max_wait_ms` (at most [`MAX_WAIT`]). The wait
//!   runs on tokio timers, never blocking a runtime thread.
//! * `Status` — the daemon's [`DaemonStatus`].
//! * `Watch` — TrueTime and status every `interval_ms` until the client leaves.
//!
//! [`serve`] runs the server on the caller's tokio runtime; [`spawn`] runs it
//! on its own runtime and thread (the daemon itself is thread-based) and
//! returns a [`GrpcHandle`] with the bound address and a stop method.
//!
//! Errors of the client library map to gRPC codes with [`code_for`]:
//! no data, stale data and torn reads are `UNAVAILABLE` (retry later), a
//! window of uncertainty too big is `FAILED_PRECONDITION`, an unusable shared
//! memory file is `INTERNAL`. The message is the library error's text.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fbclock::layout::{FLAG_GM_HOLDOVER, FLAG_HOLDOVER};
use fbclock::{Error, FbClock, TrueTime};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response};

use crate::status::{DaemonStatus, StatusSource, SyncState};

/// Code generated from `proto/fbclock.proto` (messages, client, server).
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
pub mod pb {
    tonic::include_proto!("timecard.fbclock.v1");
}

pub use pb::fb_clock_client::FbClockClient;
pub use pb::fb_clock_server::FbClockServer;

/// Longest server-side commit-wait; larger `max_wait_ms` values are capped.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// `Watch` period when the request gives none.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest `Watch` period.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);
/// Longest `Watch` period.
pub const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(3600);

/// Below this gap `WaitUntil` stops sleeping on the timer (1 ms resolution)
/// and polls, yielding to the runtime between polls.
const POLL_GAP_NS: i64 = 1_500_000;

/// The gRPC status code for a client-library error.
#[must_use]
pub fn code_for(err: &Error) -> Code {
    match err {
        Error::NoData | Error::Stale { .. } | Error::Seqlock | Error::Map(_) => Code::Unavailable,
        Error::WouTooBig { .. } => Code::FailedPrecondition,
        Error::BadFile(_) => Code::Internal,
    }
}

/// A client-library error as a gRPC status (code from [`code_for`], the
/// error's text as message).
#[must_use]
pub fn to_status(err: &Error) -> tonic::Status {
    tonic::Status::new(code_for(err), err.to_string())
}

impl From<SyncState> for pb::SyncState {
    fn from(s: SyncState) -> Self {
        match s {
            SyncState::Unsynced => Self::Unsynced,
            SyncState::Synced => Self::Synced,
            SyncState::Holdover => Self::Holdover,
        }
    }
}

impl From<&DaemonStatus> for pb::StatusResponse {
    fn from(s: &DaemonStatus) -> Self {
        Self {
            state: pb::SyncState::from(s.state).into(),
            gm_identity: s.gm_identity.clone(),
            gm_clock_class: s.gm_clock_class.map(u32::from),
            gm_clock_accuracy: s.gm_clock_accuracy.map(u32::from),
            server: s.server.clone(),
            last_offset_ns: s.last_offset_ns,
            last_path_delay_ns: s.last_path_delay_ns,
            recent_offsets_ns: s.recent_offsets_ns.clone(),
            error_bound_ns: s.error_bound_ns,
            holdover_ns_per_s: s.holdover_ns_per_s,
            exchanges: Some(pb::ExchangeCounters {
                attempted: s.exchanges.attempted,
                accepted: s.exchanges.accepted,
                rejected: s.exchanges.rejected,
                lost: s.exchanges.lost,
            }),
        }
    }
}

impl From<pb::TrueTimeResponse> for TrueTime {
    fn from(r: pb::TrueTimeResponse) -> Self {
        Self {
            earliest_ns: r.earliest_ns,
            latest_ns: r.latest_ns,
        }
    }
}

/// The service implementation over a TrueTime client and a status source.
#[derive(Clone)]
pub struct FbClockService {
    clock: Arc<FbClock>,
    status: Arc<dyn StatusSource>,
    /// Becomes true when the server shuts down (ends `Watch` streams).
    closing: watch::Receiver<bool>,
}

impl std::fmt::Debug for FbClockService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FbClockService")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl FbClockService {
    /// A service answering from `clock` and `status` (its `Watch` streams
    /// end only when their clients leave; [`serve`] also ends them at shutdown).
    #[must_use]
    pub fn new(clock: Arc<FbClock>, status: Arc<dyn StatusSource>) -> Self {
        Closing::new(clock, status).0
    }

    /// The tonic server wrapping this service.
    #[must_use]
    pub fn into_server(self) -> FbClockServer<Self> {
        FbClockServer::new(self)
    }

    /// TrueTime now in the requested time scale.
    fn now(&self, utc: bool) -> Result<TrueTime, Error> {
        if utc {
            self.clock.now_utc()
        } else {
            self.clock.now()
        }
    }

    /// A response for `tt`, with the state from the published flags.
    fn response(&self, tt: TrueTime, utc: bool) -> pb::TrueTimeResponse {
        let flags = self.clock.snapshot().map(|s| s.flags).unwrap_or(0);
        let state = if flags & FLAG_HOLDOVER != 0 {
            pb::SyncState::Holdover
        } else {
            pb::SyncState::Synced
        };
        pb::TrueTimeResponse {
            earliest_ns: tt.earliest_ns,
            latest_ns: tt.latest_ns,
            wou_ns: tt.wou_ns(),
            status: Some(pb::TimeStatus {
                state: state.into(),
                gm_holdover: flags & FLAG_GM_HOLDOVER != 0,
                utc,
            }),
        }
    }

    fn get_time(&self, utc: bool) -> Result<pb::TrueTimeResponse, tonic::Status> {
        let tt = self.now(utc).map_err(|e| to_status(&e))?;
        Ok(self.response(tt, utc))
    }

    /// Commit-wait without blocking a runtime thread: sleep on the timer for
    /// most of the gap, then poll (yielding) for the last stretch.
    async fn wait_until(
        &self,
        ts: i64,
        max_wait: Duration,
        utc: bool,
    ) -> Result<pb::TrueTimeResponse, tonic::Status> {
        let deadline = Instant::now() + max_wait;
        loop {
            let tt = self.now(utc).map_err(|e| to_status(&e))?;
            if tt.earliest_ns > ts {
                return Ok(self.response(tt, utc));
            }
            // How far earliest still has to go (it advances at ~1 ns/ns).
            let gap = ts.saturating_sub(tt.earliest_ns).saturating_add(1);
            let now = Instant::now();
            if now >= deadline {
                return Err(tonic::Status::deadline_exceeded(format!(
                    "earliest {} ns is still {gap} ns short of {ts} ns after {} ms",
                    tt.earliest_ns,
                    max_wait.as_millis()
                )));
            }
            if gap > POLL_GAP_NS {
                // Wake ~1 ms early: the timer rounds up to its 1 ms tick.
                let nap = Duration::from_nanos(u64::try_from(gap - 1_000_000).unwrap_or(0));
                let wake = now.checked_add(nap).map_or(deadline, |t| t.min(deadline));
                tokio::time::sleep_until(wake).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    fn watch_event(&self, utc: bool) -> pb::WatchEvent {
        let status = Some(pb::StatusResponse::from(&self.status.status()));
        match self.now(utc) {
            Ok(tt) => pb::WatchEvent {
                truetime: Some(self.response(tt, utc)),
                status,
                error: String::new(),
                error_code: 0,
            },
            Err(e) => pb::WatchEvent {
                truetime: None,
                status,
                error: e.to_string(),
                error_code: code_for(&e) as i32,
            },
        }
    }
}

/// The `Watch` stream type.
pub type WatchStream = ReceiverStream<Result<pb::WatchEvent, tonic::Status>>;

#[tonic::async_trait]
impl pb::fb_clock_server::FbClock for FbClockService {
    async fn get_time(
        &self,
        req: Request<pb::GetTimeRequest>,
    ) -> Result<Response<pb::TrueTimeResponse>, tonic::Status> {
        self.get_time(req.get_ref().utc).map(Response::new)
    }

    async fn wait_until(
        &self,
        req: Request<pb::WaitUntilRequest>,
    ) -> Result<Response<pb::TrueTimeResponse>, tonic::Status> {
        let r = req.into_inner();
        let max_wait = match r.max_wait_ms {
            0 => MAX_WAIT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_WAIT),
        };
        self.wait_until(r.ts_ns, max_wait, r.utc)
            .await
            .map(Response::new)
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, tonic::Status> {
        Ok(Response::new(pb::StatusResponse::from(
            &self.status.status(),
        )))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, tonic::Status> {
        let r = req.into_inner();
        let period = match r.interval_ms {
            0 => DEFAULT_WATCH_INTERVAL,
            ms => {
                Duration::from_millis(u64::from(ms)).clamp(MIN_WATCH_INTERVAL, MAX_WATCH_INTERVAL)
            }
        };
        let (tx, rx) = mpsc::channel(4);
        let svc = self.clone();
        let mut closing = self.closing.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    _ = closing.wait_for(|c| *c) => break,
                    _ = ticks.tick() => {}
                }
                // A full channel means a slow client: wait for it (or for it to leave).
                if tx.send(Ok(svc.watch_event(r.utc))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the API on `addr` until `shutdown` completes, on the current tokio
/// runtime.
///
/// At shutdown the server stops accepting, ends `Watch` streams and lets
/// in-flight calls finish for up to [`SHUTDOWN_GRACE`]; then it returns and
/// drops whatever is left (a client that does not read its connection cannot
/// hold the daemon).
///
/// # Errors
/// Binding or serving failed.
pub async fn serve(
    addr: SocketAddr,
    clock: Arc<FbClock>,
    status: Arc<dyn StatusSource>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (svc, closing) = Closing::new(clock, status);
    let signal = closing.signal(shutdown);
    // One service: no router needed (tonic's `router` feature pulls in axum).
    let server =
        tonic::transport::Server::builder().serve_with_shutdown(addr, svc.into_server(), signal);
    closing.bounded(server).await
}

/// As [`serve`], on an already-bound listener (port 0 in tests: read the
/// address from the listener first).
///
/// # Errors
/// Serving failed.
pub async fn serve_listener(
    listener: TcpListener,
    clock: Arc<FbClock>,
    status: Arc<dyn StatusSource>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (svc, closing) = Closing::new(clock, status);
    let signal = closing.signal(shutdown);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder().serve_with_incoming_shutdown(
        svc.into_server(),
        incoming,
        signal,
    );
    closing.bounded(server).await
}

/// How long a stopping server waits for in-flight calls and connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The shutdown fan-out: the caller's signal ends `Watch` streams and starts
/// the grace timer.
struct Closing {
    tx: watch::Sender<bool>,
}

impl Closing {
    fn new(clock: Arc<FbClock>, status: Arc<dyn StatusSource>) -> (FbClockService, Self) {
        let (tx, rx) = watch::channel(false);
        let svc = FbClockService {
            clock,
            status,
            closing: rx,
        };
        (svc, Self { tx })
    }

    /// The server's shutdown signal: the caller's, then tell the streams.
    fn signal<F: Future<Output = ()>>(&self, shutdown: F) -> impl Future<Output = ()> + use<F> {
        let tx = self.tx.clone();
        async move {
            shutdown.await;
            let _ = tx.send(true);
        }
    }

    /// Runs `server`, giving up on stragglers [`SHUTDOWN_GRACE`] after shutdown.
    async fn bounded(
        self,
        server: impl Future<Output = Result<(), tonic::transport::Error>>,
    ) -> Result<(), tonic::transport::Error> {
        let mut closed = self.tx.subscribe();
        let grace = async move {
            if closed.wait_for(|c| *c).await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = server => r,
            () = grace => {
                tracing::warn!("gRPC server: connections still open {SHUTDOWN_GRACE:?} after shutdown; dropping them");
                Ok(())
            }
        }
    }
}

/// A server running on its own runtime and thread (see [`spawn`]).
#[derive(Debug)]
pub struct GrpcHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl GrpcHandle {
    /// The address the server listens on (the real port when bound to 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server (in-flight calls are cancelled, streams end) and
    /// waits for its thread.
    ///
    /// # Errors
    /// What the server returned, if it failed.
    pub fn stop(mut self) -> Result<(), tonic::transport::Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), tonic::transport::Error> {
        let _ = self.stop.send(true);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Ok(()),
        }
    }
}

impl Drop for GrpcHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("gRPC server: {e}");
        }
    }
}

/// Worker threads of [`spawn`]'s runtime: the machine's cores, at most 4
/// (a TrueTime answer costs microseconds; the daemon's own threads come first).
fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

/// Binds `addr` and serves the API on a new thread with its own multi-thread
/// tokio runtime, until [`GrpcHandle::stop`] (or drop).
///
/// # Errors
/// Creating the runtime or binding the address failed.
pub fn spawn(
    addr: SocketAddr,
    clock: Arc<FbClock>,
    status: Arc<dyn StatusSource>,
) -> std::io::Result<GrpcHandle> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .thread_name("fbclock-grpc")
        .enable_io()
        .enable_time()
        .build()?;
    let listener = rt.block_on(TcpListener::bind(addr))?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("fbclock-grpc".into())
        .spawn(move || {
            let r = rt.block_on(serve_listener(listener, clock, status, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            // Do not wait for leftover tasks (e.g. a Watch producer blocked on a
            // slow client): they are cancelled with the runtime.
            rt.shutdown_background();
            r
        })?;
    tracing::info!(%addr, "gRPC API listening");
    Ok(GrpcHandle {
        addr,
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ExchangeCounters;
    use fbclock::layout::FLAG_SYNCED;
    use fbclock::{Publisher, Snapshot, clock_ns};

    const CLOCK_MONOTONIC_RAW: u32 = libc::CLOCK_MONOTONIC_RAW as u32;
    const BOUND_NS: u32 = 1_000;

    struct FakeStatus;

    impl StatusSource for FakeStatus {
        fn status(&self) -> DaemonStatus {
            DaemonStatus {
                state: SyncState::Synced,
                gm_identity: Some("aabbcc.fffe.ddeeff".into()),
                gm_clock_class: Some(6),
                gm_clock_accuracy: Some(0x21),
                server: "[::1]:319".into(),
                last_offset_ns: Some(-42),
                last_path_delay_ns: Some(1_234),
                recent_offsets_ns: vec![-40, 3, -42],
                error_bound_ns: BOUND_NS,
                holdover_ns_per_s: 50.0,
                exchanges: ExchangeCounters {
                    attempted: 10,
                    accepted: 8,
                    rejected: 1,
                    lost: 1,
                },
            }
        }
    }

    /// A synced snapshot anchored at CLOCK_MONOTONIC_RAW now.
    fn synced() -> Snapshot {
        let now = clock_ns(CLOCK_MONOTONIC_RAW);
        Snapshot {
            anchor_sys_ns: now,
            anchor_tai_ns: clock_ns(libc::CLOCK_REALTIME as u32) + 37_000_000_000,
            coef: 0.0,
            ingress_sys_ns: now,
            error_bound_ns: BOUND_NS,
            holdover_ns_per_s: 0.0,
            leap_tai_ns: 0,
            utc_pre_s: 37,
            utc_post_s: 37,
            flags: FLAG_SYNCED,
        }
    }

    struct Fixture {
        publisher: Publisher,
        clock: Arc<FbClock>,
        client: FbClockClient<tonic::transport::Channel>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    }

    impl Fixture {
        async fn new() -> Self {
            let publisher = Publisher::in_memory(CLOCK_MONOTONIC_RAW);
            let clock = Arc::new(publisher.client());
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve_listener(
                listener,
                clock.clone(),
                Arc::new(FakeStatus),
                async {
                    let _ = stopped.await;
                },
            ));
            let client = FbClockClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            Self {
                publisher,
                clock,
                client,
                stop: Some(stop),
                server,
            }
        }

        async fn shutdown(mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.server.await.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_time_matches_the_client_library() {
        let mut f = Fixture::new().await;
        f.publisher.publish(&synced());
        for utc in [false, true] {
            let lib = |c: &FbClock| if utc { c.now_utc() } else { c.now() }.unwrap();
            let before = lib(&f.clock);
            let r = f
                .client
                .get_time(pb::GetTimeRequest { utc })
                .await
                .unwrap()
                .into_inner();
            let after = lib(&f.clock);
            assert!(
                before.earliest_ns <= r.earliest_ns && r.earliest_ns <= after.earliest_ns,
                "{before:?} {r:?} {after:?}"
            );
            assert_eq!(r.wou_ns, before.wou_ns());
            assert_eq!(r.wou_ns, 2 * (i64::from(BOUND_NS) + 1));
            assert_eq!(r.latest_ns - r.earliest_ns, r.wou_ns);
            let st = r.status.unwrap();
            assert_eq!(st.state(), pb::SyncState::Synced);
            assert_eq!(st.utc, utc);
        }
        let mut held = synced();
        held.flags |= FLAG_HOLDOVER | FLAG_GM_HOLDOVER;
        f.publisher.publish(&held);
        let st = f
            .client
            .get_time(pb::GetTimeRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(st.state(), pb::SyncState::Holdover);
        assert!(st.gm_holdover);
        f.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_until_returns_after_the_timestamp() {
        let mut f = Fixture::new().await;
        f.publisher.publish(&synced());
        let ts = f.clock.now().unwrap().latest_ns + 50_000_000;
        let t0 = std::time::Instant::now();
        let r = f
            .client
            .wait_until(pb::WaitUntilRequest {
                ts_ns: ts,
                max_wait_ms: 5_000,
                utc: false,
            })
            .await
            .unwrap()
            .into_inner();
        let took = t0.elapsed();
        assert!(r.earliest_ns > ts);
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        // Already in the past: immediate.
        let r = f
            .client
            .wait_until(pb::WaitUntilRequest {
                ts_ns: ts,
                max_wait_ms: 1,
                utc: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.earliest_ns > ts);
        f.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_until_far_timestamp_hits_the_deadline() {
        let mut f = Fixture::new().await;
        f.publisher.publish(&synced());
        let ts = f.clock.now().unwrap().latest_ns + 3_600_000_000_000;
        let t0 = std::time::Instant::now();
        let e = f
            .client
            .wait_until(pb::WaitUntilRequest {
                ts_ns: ts,
                max_wait_ms: 10,
                utc: false,
            })
            .await
            .unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        assert!(
            took >= Duration::from_millis(10) && took < Duration::from_millis(500),
            "{took:?}"
        );
        // Extremes do not overflow.
        for (ts_ns, ok) in [(i64::MAX, false), (i64::MIN, true)] {
            let r = f
                .client
                .wait_until(pb::WaitUntilRequest {
                    ts_ns,
                    max_wait_ms: 10,
                    utc: false,
                })
                .await;
            assert_eq!(r.is_ok(), ok, "{r:?}");
        }
        f.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_map_to_codes() {
        let mut f = Fixture::new().await;
        // Never published: NoData.
        let e = f
            .client
            .get_time(pb::GetTimeRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(e.message(), Error::NoData.to_string());
        let e = f
            .client
            .wait_until(pb::WaitUntilRequest {
                ts_ns: 0,
                max_wait_ms: 10,
                utc: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        // Published but not synced: NoData.
        let mut s = synced();
        s.flags = 0;
        f.publisher.publish(&s);
        assert_eq!(
            f.client
                .get_time(pb::GetTimeRequest::default())
                .await
                .unwrap_err()
                .code(),
            Code::Unavailable
        );
        // Anchor 20 s old: Stale.
        let mut s = synced();
        s.anchor_sys_ns -= 20_000_000_000;
        f.publisher.publish(&s);
        let e = f
            .client
            .get_time(pb::GetTimeRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().contains("stale"), "{e:?}");
        // Saturated bound: WouTooBig.
        let mut s = synced();
        s.error_bound_ns = u32::MAX;
        f.publisher.publish(&s);
        assert_eq!(
            f.client
                .get_time(pb::GetTimeRequest::default())
                .await
                .unwrap_err()
                .code(),
            Code::FailedPrecondition
        );
        f.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_mirrors_the_daemon() {
        let mut f = Fixture::new().await;
        let s = f
            .client
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s, pb::StatusResponse::from(&FakeStatus.status()));
        assert_eq!(s.state(), pb::SyncState::Synced);
        assert_eq!(s.gm_identity.as_deref(), Some("aabbcc.fffe.ddeeff"));
        assert_eq!(s.exchanges.unwrap().accepted, 8);
        assert_eq!(s.recent_offsets_ns, vec![-40, 3, -42]);
        f.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_streams_until_the_client_leaves() {
        let mut f = Fixture::new().await;
        f.publisher.publish(&synced());
        let t0 = std::time::Instant::now();
        let mut stream = f
            .client
            .watch(pb::WatchRequest {
                interval_ms: 20,
                utc: false,
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = i64::MIN;
        for _ in 0..5 {
            let ev = stream.message().await.unwrap().unwrap();
            let tt = ev.truetime.unwrap();
            assert!(tt.earliest_ns > last);
            last = tt.earliest_ns;
            assert_eq!(ev.status.unwrap().server, "[::1]:319");
        }
        // First tick is immediate, then every 20 ms.
        assert!(
            t0.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t0.elapsed()
        );
        // An error is an event, not the end of the stream.
        let mut s = synced();
        s.flags = 0;
        f.publisher.publish(&s);
        let ev = loop {
            let ev = stream.message().await.unwrap().unwrap();
            if ev.truetime.is_none() {
                break ev;
            }
        };
        assert_eq!(ev.error_code, Code::Unavailable as i32);
        drop(stream);
        // Default and minimum interval.
        let mut fast = f
            .client
            .watch(pb::WatchRequest {
                interval_ms: 1,
                utc: true,
            })
            .await
            .unwrap()
            .into_inner();
        let t0 = std::time::Instant::now();
        for _ in 0..3 {
            fast.message().await.unwrap().unwrap();
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(20),
            "{:?}",
            t0.elapsed()
        );
        drop(fast);
        f.shutdown().await;
    }

    fn spawned() -> (Publisher, GrpcHandle) {
        let publisher = Publisher::in_memory(CLOCK_MONOTONIC_RAW);
        publisher.publish(&synced());
        let h = spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(publisher.client()),
            Arc::new(FakeStatus),
        )
        .unwrap();
        (publisher, h)
    }

    #[test]
    fn spawn_binds_port_zero_and_stops() {
        let (_publisher, h) = spawned();
        let addr = h.local_addr();
        assert_ne!(addr.port(), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = FbClockClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let r = c
                .get_time(pb::GetTimeRequest::default())
                .await
                .unwrap()
                .into_inner();
            assert!(r.earliest_ns <= r.latest_ns);
        });
        drop(rt);
        let t0 = std::time::Instant::now();
        h.stop().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[test]
    fn stop_ends_watch_streams() {
        let (_publisher, h) = spawned();
        let addr = h.local_addr();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = rt.spawn(async move {
            let mut c = FbClockClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let mut s = c
                .watch(pb::WatchRequest {
                    interval_ms: 10,
                    utc: false,
                })
                .await
                .unwrap()
                .into_inner();
            let mut n = 0;
            while let Ok(Some(_)) = s.message().await {
                n += 1;
                if n == 1 {
                    first_tx.send(()).unwrap();
                }
            }
            n
        });
        first_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let t0 = std::time::Instant::now();
        h.stop().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        let n = rt.block_on(reader).unwrap();
        assert!(n >= 1);
    }

    #[test]
    fn stop_is_bounded_when_a_client_is_stuck() {
        let (_publisher, h) = spawned();
        let addr = h.local_addr();
        // A client whose runtime is no longer driven: it never answers GOAWAY.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _client = rt.block_on(async {
            let mut c = FbClockClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            c.get_time(pb::GetTimeRequest::default()).await.unwrap();
            c
        });
        let t0 = std::time::Instant::now();
        h.stop().unwrap();
        let took = t0.elapsed();
        assert!(took < SHUTDOWN_GRACE + Duration::from_secs(1), "{took:?}");
    }
}
