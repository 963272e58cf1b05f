//! A small pool of cleartext HTTP/2 (h2c, prior knowledge) connections
//! shared by the APNs and FCM adapters.
//!
//! Requests go round-robin over `connections` slots; each slot holds one
//! multiplexed HTTP/2 connection, opened on first use and reopened after it
//! fails. Response bodies are read up to [`MAX_RESPONSE_BODY`] bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::SendError;

/// Most bytes of a response body that are read.
pub(crate) const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Bound on opening one connection (TCP connect plus HTTP/2 preface).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An endpoint the adapters cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// An `https://` endpoint.
    #[error(
        "endpoint {0}: TLS not built in; put a TLS-terminating proxy in front or use http:// to a local relay"
    )]
    TlsNotBuiltIn(String),
    /// No scheme, no host, or a scheme other than http/https.
    #[error("endpoint {0}: expected http://host[:port][/prefix]")]
    Invalid(String),
}

/// Why an [`crate::ApnsAdapter`] or [`crate::FcmAdapter`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The endpoint is unusable (e.g. `https://`).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A configured value (named) cannot be put into a request.
    #[error("{0} cannot be sent in an HTTP request (empty, or invalid characters)")]
    BadValue(&'static str),
}

/// The answer to one request: status and (possibly truncated-away) body.
pub(crate) struct Answer {
    pub status: StatusCode,
    /// `None` when the body could not be read or exceeded [`MAX_RESPONSE_BODY`].
    pub body: Option<Bytes>,
}

type Slot = tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>;

pub(crate) struct H2Pool {
    scheme: Scheme,
    authority: Authority,
    /// `host:port` to connect to.
    addr: String,
    /// Path prefix of the endpoint without trailing `/` (usually empty).
    prefix: String,
    slots: Box<[Slot]>,
    next: AtomicUsize,
}

impl H2Pool {
    pub(crate) fn new(endpoint: &Uri, connections: usize) -> Result<Self, EndpointError> {
        let shown = endpoint.to_string();
        match endpoint.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(EndpointError::TlsNotBuiltIn(shown)),
            _ => return Err(EndpointError::Invalid(shown)),
        }
        let Some(authority) = endpoint.authority().cloned() else {
            return Err(EndpointError::Invalid(shown));
        };
        if authority.host().is_empty() {
            return Err(EndpointError::Invalid(shown));
        }
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let prefix = endpoint.path().trim_end_matches('/').to_owned();
        let slots = (0..connections.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        Ok(H2Pool {
            scheme: Scheme::HTTP,
            authority,
            addr,
            prefix,
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// The absolute URI of `path` (which starts with `/`) under the endpoint.
    pub(crate) fn uri(&self, path: &str) -> Option<Uri> {
        let pq = format!("{}{}", self.prefix, path);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .ok()
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        *slot = None;
        let s = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Transient(format!(
                    "connect to {}: timed out",
                    self.addr
                )))
            })?;
        *slot = Some(s.clone());
        Ok(s)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| SendError::Transient(format!("connect to {}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| {
                SendError::Transient(format!("HTTP/2 handshake with {}: {e}", self.addr))
            })?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "HTTP/2 connection ended");
            }
        });
        tracing::debug!(addr = %self.addr, "HTTP/2 connection opened");
        Ok(sender)
    }

    /// Sends `req` and reads the answer; connection and protocol errors are
    /// [`SendError::Transient`].
    pub(crate) async fn send(
        &self,
        req: Request<Full<Bytes>>,
        want_body: bool,
    ) -> Result<Answer, SendError> {
        let mut sender = self.sender().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| SendError::Transient(format!("HTTP/2 request: {e}")))?;
        let status = resp.status();
        let body = if want_body {
            Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await
                .ok()
                .map(http_body_util::Collected::to_bytes)
        } else {
            None
        };
        Ok(Answer { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let tls = H2Pool::new(&"https://api.push.apple.com".parse().unwrap(), 1)
            .err()
            .unwrap();
        assert!(matches!(tls, EndpointError::TlsNotBuiltIn(_)));
        assert!(tls.to_string().contains("TLS not built in"));
        assert!(H2Pool::new(&"/just/a/path".parse().unwrap(), 1).is_err());
        assert!(H2Pool::new(&"ftp://host".parse().unwrap(), 1).is_err());
        let p = H2Pool::new(&"http://127.0.0.1:8080/relay/".parse().unwrap(), 0).unwrap();
        assert_eq!(p.addr, "127.0.0.1:8080");
        assert_eq!(p.slots.len(), 1);
        assert_eq!(
            p.uri("/3/device/ab").unwrap().to_string(),
            "http://127.0.0.1:8080/relay/3/device/ab"
        );
        let p = H2Pool::new(&"http://localhost".parse().unwrap(), 4).unwrap();
        assert_eq!(p.addr, "localhost:80");
        assert_eq!(p.slots.len(), 4);
    }
}
