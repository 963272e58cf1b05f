//! Local stand-ins for APNs and FCM (feature `standin`), for tests and
//! benches.
//!
//! Each listens on `127.0.0.1:0`, validates requests like the real service
//! (answering with the real status codes and error bodies), records every
//! valid request ([`Received`]) and answers according to its [`Mode`].
//! Dropping a stand-in stops it; stalled requests are then answered 503.

mod apns;
mod fcm;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use apns::ApnsStandin;
pub use fcm::FcmStandin;

/// How a stand-in answers valid requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Like the real service: 200, or the unregistered answer for marked tokens.
    #[default]
    Normal,
    /// Accept requests and never answer until the mode changes.
    Stall,
    /// Answer every valid request with this HTTP status and the service's error body for it.
    Fail(u16),
}

/// One valid request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// APNs: the token from the path; FCM: `message.token`.
    pub device_token: String,
    /// The request path.
    pub path: String,
    /// All request headers (`apns-topic`, `apns-priority`, `authorization`...).
    pub headers: HeaderMap,
    /// The parsed JSON body.
    pub body: serde_json::Value,
}

impl Received {
    /// A header's value as text.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State common to both stand-ins.
struct Common {
    mode: watch::Sender<Mode>,
    closed: AtomicBool,
    received: Mutex<Vec<Received>>,
    delivered: AtomicUsize,
    unregistered: Mutex<std::collections::HashSet<String>>,
    bearer_token: Option<String>,
}

impl Common {
    fn new(bearer_token: Option<String>) -> Self {
        Common {
            mode: watch::Sender::new(Mode::Normal),
            closed: AtomicBool::new(false),
            received: Mutex::new(Vec::new()),
            delivered: AtomicUsize::new(0),
            unregistered: Mutex::new(std::collections::HashSet::new()),
            bearer_token,
        }
    }

    fn record(&self, r: Received) {
        lock(&self.received).push(r);
    }

    fn is_unregistered(&self, token: &str) -> bool {
        lock(&self.unregistered).contains(token)
    }

    /// The mode to answer with, waiting while it is `Stall`.
    async fn answer_mode(&self) -> Mode {
        let mut rx = self.mode.subscribe();
        loop {
            let m = *rx.borrow_and_update();
            if self.closed.load(Ordering::Relaxed) {
                return Mode::Fail(503);
            }
            if m != Mode::Stall {
                return m;
            }
            if rx.changed().await.is_err() {
                return Mode::Fail(503);
            }
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.mode.send_modify(|_| {});
    }
}

/// What every stand-in offers: where it listens, what it received, and
/// how it answers. [`ApnsStandin`] and
/// [`FcmStandin`] dereference to it.
pub struct Standin {
    common: Arc<Common>,
    server: Server,
}

impl Standin {
    /// `http://127.0.0.1:<port>/`, for the adapter's `endpoint`.
    #[must_use]
    pub fn endpoint(&self) -> Uri {
        self.server.endpoint()
    }

    /// The listening address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Every valid request so far, in arrival order, whatever was answered.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        lock(&self.common.received).clone()
    }

    /// How many valid requests have arrived.
    #[must_use]
    pub fn count(&self) -> usize {
        lock(&self.common.received).len()
    }

    /// How many requests were answered 200.
    #[must_use]
    pub fn delivered(&self) -> usize {
        self.common.delivered.load(Ordering::Relaxed)
    }

    /// Changes how valid requests are answered (wakes stalled ones).
    pub fn set_mode(&self, mode: Mode) {
        self.common.mode.send_replace(mode);
    }

    /// From now on, answer requests to `token` as the provider does for a
    /// dead token (APNs 410 `Unregistered`, FCM 404 `UNREGISTERED`).
    pub fn mark_unregistered(&self, token: &str) {
        lock(&self.common.unregistered).insert(token.to_owned());
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.common.close();
    }
}

/// A running listener; dropping it stops accepting and closes connections.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    async fn spawn<F, Fut>(addr: SocketAddr, h2_only: bool, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("stand-in: bind {addr}: {e}"));
        let addr = listener.local_addr().expect("stand-in: local address");
        let task = tokio::spawn(accept_loop(listener, h2_only, handler));
        Server { addr, task }
    }

    fn endpoint(&self) -> Uri {
        Uri::builder()
            .scheme("http")
            .authority(self.addr.to_string())
            .path_and_query("/")
            .build()
            .expect("stand-in: endpoint URI")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, h2_only: bool, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::debug!(error = %e, "stand-in accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let io = TokioIo::new(tcp);
        if h2_only {
            conns.spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1000)
                    .serve_connection(io, service)
                    .await;
            });
        } else {
            conns.spawn(async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().max_concurrent_streams(1000);
                let _ = builder.serve_connection(io, service).await;
            });
        }
        while conns.try_join_next().is_some() {}
    }
}

/// Reads a request body of at most `limit` bytes (`None`: too large or broken).
async fn read_body(body: Incoming, limit: usize) -> Option<Bytes> {
    Limited::new(body, limit)
        .collect()
        .await
        .ok()
        .map(http_body_util::Collected::to_bytes)
}

fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
