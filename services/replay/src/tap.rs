//! The capture tap: a layer in a service's HTTP request path that copies
//! each exchange (request, response, TrueTime at arrival and departure,
//! lineage) into a bounded buffer; a background task hands batches to a
//! [`CaptureSink`] (the capture stream).
//!
//! It never blocks or fails the primary request: a full buffer, a sink
//! that is down or slow, a body too large to copy, or a streaming response
//! (Server-Sent Events, WebSocket upgrades) means the exchange is not
//! captured, and is counted. A body is only copied when its exact length
//! is known and fits; otherwise it passes through untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use eventlog::TimeSource;
use tokio::sync::mpsc;

use crate::record::{
    Exchange, Interval, Lineage, Request as CapturedRequest, Response as CapturedResponse,
    SCHEMA_VERSION,
};

/// Most exchanges handed to the sink at once.
pub const MAX_BATCH: usize = 512;
/// How long the writer gathers exchanges before a write.
pub const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// Where captured exchanges go (an event log, a stream…).
pub trait CaptureSink: Send + 'static {
    /// Writes a batch and says how many of its exchanges were kept (the
    /// rest, e.g. records too large for the stream, count as sink errors);
    /// an error drops the whole batch (counted), never retried into the
    /// request path.
    fn write(
        &mut self,
        batch: Vec<Exchange>,
    ) -> impl std::future::Future<Output = Result<usize, String>> + Send;
}

/// Counters of a tap.
#[derive(Debug, Default)]
pub struct TapStats {
    /// Exchanges queued for the sink.
    pub captured: AtomicU64,
    /// Not captured: the buffer was full.
    pub dropped_full: AtomicU64,
    /// Not captured: a body was too large or the response streams.
    pub skipped: AtomicU64,
    /// Not captured: left out by sampling.
    pub unsampled: AtomicU64,
    /// Written by the sink.
    pub written: AtomicU64,
    /// Lost because the sink failed.
    pub sink_errors: AtomicU64,
}

/// Header a replayer puts on its requests: the tap never captures them, so
/// replayed traffic is not captured again (a capturing candidate, or
/// production replayed to itself, would otherwise feed a loop).
pub const REPLAY_HEADER: &str = "x-timecard-replay";
/// Most body bytes waiting in the buffer at once; beyond, exchanges are
/// dropped (counted) whatever the buffer's count.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// The tap (cheap to clone).
#[derive(Clone, Debug)]
pub struct CaptureTap {
    tx: mpsc::Sender<Pending>,
    stats: Arc<TapStats>,
    queued_bytes: Arc<AtomicUsize>,
    clock: TimeSource,
    max_body: usize,
    /// Capture a request when a uniform draw in [0, 2^32) is below this.
    sample_below: u64,
}

impl CaptureTap {
    /// A tap with a buffer of `capacity` exchanges, writing to `sink` in
    /// batches (up to [`MAX_BATCH`], gathered over [`BATCH_WINDOW`]) from its
    /// own thread at idle priority; bodies up to
    /// `max_body` bytes are copied; every request is captured (see
    /// [`CaptureTap::sampled`]).
    pub fn start(
        mut sink: impl CaptureSink,
        capacity: usize,
        max_body: usize,
        lineage: Lineage,
        clock: TimeSource,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending>(capacity.max(1));
        let stats = Arc::new(TapStats::default());
        let writer_stats = stats.clone();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued_bytes.clone();
        let writer = async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // Gather for a moment: one sink write per window instead of
                // one per request keeps the writer's wake-ups and system
                // calls from competing with the request path.
                if batch.len() < MAX_BATCH {
                    tokio::time::sleep(BATCH_WINDOW).await;
                    while batch.len() < MAX_BATCH {
                        let Ok(e) = rx.try_recv() else { break };
                        batch.push(e);
                    }
                }
                // Text, identity and lineage are made here, off the request path.
                let freed: usize = batch.iter().map(Pending::bytes).sum();
                writer_queued.fetch_sub(freed, Ordering::Relaxed);
                let exchanges: Vec<Exchange> =
                    batch.drain(..).map(|p| p.into_exchange(&lineage)).collect();
                let n = exchanges.len() as u64;
                match sink.write(exchanges).await {
                    Ok(kept) => {
                        let kept = (kept as u64).min(n);
                        writer_stats.written.fetch_add(kept, Ordering::Relaxed);
                        writer_stats
                            .sink_errors
                            .fetch_add(n - kept, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::debug!("capture sink: {e}");
                        writer_stats.sink_errors.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        };
        // The writer (batching, encoding, handing to the sink) runs on its
        // own thread at idle priority: it only gets CPU production does not
        // want; when it falls behind, the buffer fills and the tap drops.
        let spawned = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || {
                run_at_idle_priority();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer),
                    Err(e) => tracing::error!("capture writer runtime: {e}; capturing nothing"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!("capture writer thread: {e}; capturing nothing");
        }
        Self {
            tx,
            stats,
            queued_bytes,
            clock,
            max_body,
            sample_below: 1 << 32,
        }
    }

    /// The same tap capturing only a `fraction` (0 to 1) of requests, drawn
    /// at random per request.
    #[must_use]
    pub fn sampled(mut self, fraction: f64) -> Self {
        self.sample_below = (fraction.clamp(0.0, 1.0) * f64::from(1u32 << 31) * 2.0) as u64;
        self
    }

    fn sampled_out(&self) -> bool {
        if self.sample_below >= 1 << 32 {
            return false;
        }
        let draw = (eventlog::envelope::random_u128() as u64) >> 32;
        let out = draw >= self.sample_below;
        if out {
            self.stats.unsampled.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &TapStats {
        &self.stats
    }

    /// Now; an empty interval when the clock cannot tell (the record
    /// shows it).
    fn stamp(&self) -> Interval {
        self.clock.now().map(Interval::from).unwrap_or_default()
    }

    fn skip(&self) {
        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
    }

    fn offer(&self, pending: Pending) {
        let bytes = pending.bytes();
        if self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(pending) {
            Ok(()) => self.stats.captured.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.stats.dropped_full.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// An exchange as the request path hands it over: shared references to
/// what the request and response already hold (no copies, no text), made
/// into an [`Exchange`] by the writer.
#[derive(Debug)]
struct Pending {
    method: axum::http::Method,
    uri: axum::http::Uri,
    endpoint: Option<MatchedPath>,
    request_body: axum::body::Bytes,
    status: axum::http::StatusCode,
    response_body: axum::body::Bytes,
    started: Interval,
    finished: Interval,
}

impl Pending {
    /// Body bytes held.
    fn bytes(&self) -> usize {
        self.request_body.len() + self.response_body.len()
    }

    fn into_exchange(self, lineage: &Lineage) -> Exchange {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Exchange {
            schema: SCHEMA_VERSION,
            id: format!("{:032x}", eventlog::envelope::random_u128()),
            request: CapturedRequest {
                method: self.method.to_string(),
                path: self
                    .uri
                    .path_and_query()
                    .map_or_else(|| self.uri.path().to_owned(), ToString::to_string),
                // A path no route matched is not an endpoint (unbounded names).
                endpoint: self
                    .endpoint
                    .map_or_else(|| UNMATCHED.to_owned(), |m| m.as_str().to_owned()),
                body: text(&self.request_body),
            },
            response: CapturedResponse {
                status: self.status.as_u16(),
                body: text(&self.response_body),
            },
            started: self.started,
            finished: self.finished,
            lineage: lineage.clone(),
        }
    }
}

/// The endpoint of requests no route matched.
pub const UNMATCHED: &str = "(unmatched)";

/// Moves the calling thread to `SCHED_IDLE` (Linux): it runs only when no
/// other thread of the machine wants the CPU. Failure is logged and ignored.
fn run_at_idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialized
    // sched_param that outlives the call; no memory is handed over.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(
            "capture writer stays at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Whether a body is known to be at most `max` bytes (an exact size hint:
/// a streaming body of unknown length is not copied).
fn fits(body: &Body, max: usize) -> bool {
    use axum::body::HttpBody as _;
    body.size_hint().exact().is_some_and(|n| n <= max as u64)
}

/// The middleware: `router.layer(axum::middleware::from_fn_with_state(tap, replay::tap::capture))`.
pub async fn capture(State(tap): State<CaptureTap>, request: Request, next: Next) -> Response {
    if tap.sampled_out() {
        return next.run(request).await;
    }
    let started = tap.stamp();
    let headers = request.headers();
    let not_captured = headers.contains_key(header::UPGRADE) || headers.contains_key(REPLAY_HEADER);
    if not_captured || !fits(request.body(), tap.max_body) {
        tap.skip();
        return next.run(request).await;
    }
    let endpoint = request.extensions().get::<MatchedPath>().cloned();
    let (parts, body) = request.into_parts();
    // Bounded by the Content-Length check above. A body that breaks off
    // is answered 400, as the service's own extractors would.
    let Ok(request_body) = axum::body::to_bytes(body, tap.max_body).await else {
        tap.skip();
        return Response::builder()
            .status(axum::http::StatusCode::BAD_REQUEST)
            .body(Body::from("request body could not be read"))
            .unwrap_or_default();
    };
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let response = next
        .run(Request::from_parts(parts, Body::from(request_body.clone())))
        .await;
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // A call refused for want of a token is not traffic: replayed with the
    // replayer's token it would be carried out.
    let refused = response.status() == axum::http::StatusCode::UNAUTHORIZED;
    if streaming || refused || !fits(response.body(), tap.max_body) {
        tap.skip();
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(response_body) = axum::body::to_bytes(body, tap.max_body).await else {
        // The body said it fits; a failing body is the service's error.
        tap.skip();
        return Response::builder()
            .status(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from("response body failed"))
            .unwrap_or_default();
    };
    tap.offer(Pending {
        method,
        uri,
        endpoint,
        request_body,
        status: parts.status,
        response_body: response_body.clone(),
        started,
        finished: tap.stamp(),
    });
    Response::from_parts(parts, Body::from(response_body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    /// A sink that keeps what it gets, fails, or hangs.
    #[derive(Clone, Default)]
    struct Memory {
        got: Arc<std::sync::Mutex<Vec<Exchange>>>,
        fail: bool,
        hang: bool,
    }

    impl CaptureSink for Memory {
        async fn write(&mut self, batch: Vec<Exchange>) -> Result<usize, String> {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail {
                return Err("sink down".into());
            }
            let n = batch.len();
            self.got.lock().unwrap().extend(batch);
            Ok(n)
        }
    }

    fn app(tap: CaptureTap) -> Router {
        Router::new()
            .route(
                "/v1/echo/{x}",
                post(|body: String| async move { format!("{{\"echo\":{body}}}") }),
            )
            .route(
                "/v1/stream",
                get(|| async { ([(header::CONTENT_TYPE, "text/event-stream")], "data: 1\n\n") }),
            )
            .layer(axum::middleware::from_fn_with_state(tap, capture))
    }

    fn lineage() -> Lineage {
        Lineage {
            service: "test".into(),
            version: "1".into(),
            ..Lineage::default()
        }
    }

    async fn call(app: &Router, method: &str, path: &str, body: &str) -> (u16, String) {
        let r = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::from(body.to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Waits until the idle-priority writer has handled `written` exchanges
    /// (it may be starved for a while on a busy machine).
    async fn settle(tap: &CaptureTap, written: u64) {
        for _ in 0..6_000 {
            let s = tap.stats();
            if s.written.load(Ordering::Relaxed) + s.sink_errors.load(Ordering::Relaxed) >= written
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the writer did not finish: {:?}", tap.stats());
    }

    #[tokio::test]
    async fn exchanges_are_captured_and_the_primary_answer_is_unchanged() {
        let sink = Memory::default();
        let tap = CaptureTap::start(sink.clone(), 16, 1024, lineage(), TimeSource::system(1_000));
        let app = app(tap.clone());
        assert_eq!(
            call(&app, "POST", "/v1/echo/7?a=b", "[1,2]").await,
            (200, r#"{"echo":[1,2]}"#.into())
        );
        // Too large to copy: passes through whole, not captured.
        let big = format!("\"{}\"", "x".repeat(2_000));
        let (status, body) = call(&app, "POST", "/v1/echo/8", &big).await;
        assert_eq!((status, body.len()), (200, big.len() + 9));
        // A stream is not buffered.
        assert_eq!(
            call(&app, "GET", "/v1/stream", "").await,
            (200, "data: 1\n\n".into())
        );
        // Replayed requests and paths no route matches.
        let replayed = app
            .clone()
            .oneshot(
                Request::builder()
                    .method("POST")
                    .uri("/v1/echo/9")
                    .header(REPLAY_HEADER, "1")
                    .body(Body::from("1"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(replayed.status(), 200);
        assert_eq!(call(&app, "GET", "/nowhere/x1", "").await.0, 404);
        settle(&tap, 2).await;
        let got = sink.got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].request.endpoint, UNMATCHED);
        let e = &got[0];
        assert_eq!(
            (e.request.method.as_str(), e.request.path.as_str()),
            ("POST", "/v1/echo/7?a=b")
        );
        assert_eq!(e.request.endpoint, "/v1/echo/{x}");
        assert_eq!((e.request.body.as_str(), e.response.status), ("[1,2]", 200));
        assert_eq!(e.response.body, r#"{"echo":[1,2]}"#);
        assert!(e.started.earliest_ns > 0 && e.finished.latest_ns >= e.started.earliest_ns);
        assert_eq!(e.lineage.service, "test");
        assert_eq!(Exchange::decode(&e.encode()).unwrap(), *e);
        assert_eq!(tap.stats().skipped.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_full_buffer_or_a_failing_sink_drops_and_counts_never_fails_the_request() {
        let sink = Memory {
            fail: true,
            ..Memory::default()
        };
        let tap = CaptureTap::start(sink, 1, 1024, lineage(), TimeSource::system(1_000));
        let app = app(tap.clone());
        for i in 0..200 {
            let (status, body) = call(&app, "POST", "/v1/echo/1", &i.to_string()).await;
            assert_eq!((status, body), (200, format!(r#"{{"echo":{i}}}"#)));
        }
        let s = tap.stats();
        let (captured, dropped) = (
            s.captured.load(Ordering::Relaxed),
            s.dropped_full.load(Ordering::Relaxed),
        );
        assert_eq!(captured + dropped, 200);
        settle(&tap, captured).await;
        assert_eq!(s.sink_errors.load(Ordering::Relaxed), captured);
        assert_eq!(s.written.load(Ordering::Relaxed), 0);

        // A sink that hangs: the buffer fills, the rest is dropped, every
        // request still answered at once.
        let hung = Memory {
            hang: true,
            ..Memory::default()
        };
        let tap = CaptureTap::start(hung, 4, 1024, lineage(), TimeSource::system(1_000));
        let hung_app = super::tests::app(tap.clone());
        let started = std::time::Instant::now();
        for i in 0..200 {
            assert_eq!(
                call(&hung_app, "POST", "/v1/echo/1", &i.to_string())
                    .await
                    .0,
                200
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let s = tap.stats();
        // The stuck writer took what it could; the rest was dropped.
        let captured = s.captured.load(Ordering::Relaxed);
        assert!(s.dropped_full.load(Ordering::Relaxed) > 0, "{s:?}");
        assert_eq!(s.dropped_full.load(Ordering::Relaxed), 200 - captured);
    }
}
