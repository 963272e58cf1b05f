//! A small HTTP/1.1 client (hyper, pooled connections) with a deadline
//! per call and a cap on the answer's size: a candidate that hangs or
//! floods is an outcome to record, not a stuck or exhausted replayer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer body read from a candidate, bytes.
pub const MAX_ANSWER: usize = 1 << 20;

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body (UTF-8, invalid bytes replaced).
    pub body: String,
    /// The `x-capture-end` header, when present and numeric.
    pub capture_end: Option<u64>,
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No complete answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The answer was larger than the client's limit.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The request could not be built (bad URL or method).
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// The client (cheap to clone).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    max_answer: usize,
    marks_replays: bool,
    token: Option<std::sync::Arc<access::ClientToken>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client with a connection pool reading answers up to [`MAX_ANSWER`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_limit(MAX_ANSWER)
    }

    /// A client reading answers up to `max_answer` bytes.
    #[must_use]
    pub fn with_limit(max_answer: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            inner: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            max_answer,
            marks_replays: false,
            token: None,
        }
    }

    /// The same client marking every request as replayed
    /// ([`replay::tap::REPLAY_HEADER`]): a capturing service does not
    /// capture it again.
    #[must_use]
    pub fn marking_replays(mut self) -> Self {
        self.marks_replays = true;
        self
    }

    /// The same client sending `token` (if any) as `Authorization: Bearer`
    /// on every request.
    #[must_use]
    pub fn with_token(mut self, token: Option<access::ClientToken>) -> Self {
        self.token = token.map(std::sync::Arc::new);
        self
    }

    /// `GET url`, which must answer 200 within `timeout`: the answer, or
    /// why not in one line.
    pub async fn get_ok(&self, url: &str, timeout: Duration) -> Result<Answer, String> {
        let answer = self
            .call("GET", url, String::new(), timeout)
            .await
            .map_err(|e| e.to_string())?;
        if answer.status == 200 {
            Ok(answer)
        } else {
            Err(format!(
                "HTTP {}: {}",
                answer.status,
                preview(&answer.body, 80)
            ))
        }
    }

    /// `method url` with `body` (JSON when not empty), answered within `timeout`.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        body: String,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let mut request = http::Request::builder()
            .method(
                http::Method::from_bytes(method.as_bytes())
                    .map_err(|e| CallError::BadRequest(e.to_string()))?,
            )
            .uri(url);
        if self.marks_replays {
            request = request.header(replay::tap::REPLAY_HEADER, "1");
        }
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, token.header_value().clone());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::BadRequest(e.to_string()))?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| CallError::Transport(error_chain(&e)))?;
            let status = response.status().as_u16();
            let capture_end = response
                .headers()
                .get("x-capture-end")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let bytes = Limited::new(response.into_body(), self.max_answer)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        CallError::TooLarge(self.max_answer)
                    } else {
                        CallError::Transport(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
                capture_end,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(timeout))?
    }
}

/// The first `max` characters of `s` (with `…` when cut), for messages.
#[must_use]
pub fn preview(s: &str, max: usize) -> String {
    let mut p: String = s.chars().take(max).collect();
    if p.len() < s.len() {
        p.push('…');
    }
    p
}

/// An error and its causes, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
