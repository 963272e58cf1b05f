//! A small memcached client (text protocol) for the best-effort counters:
//! `incr`/`decr` with TTL, `add` for idempotency markers, `get`, `delete`.
//!
//! memcached counters are unsigned 64-bit: `decr` stops at zero, as EVCache
//! counters do. Connections are pooled; a broken connection is dropped and
//! the error reported, so the caller can mark the namespace degraded.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const POOL_MAX: usize = 32;
const MAX_LINE: usize = 1024;

/// Why a memcached call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McError {
    /// Could not reach the server or the connection broke.
    #[error("memcached at {addr} unreachable: {cause}")]
    Unreachable {
        /// Server address.
        addr: SocketAddr,
        /// The I/O error.
        cause: String,
    },
    /// The server answered something unexpected.
    #[error("memcached protocol: {0}")]
    Protocol(String),
}

type Conn = BufReader<TcpStream>;

/// A pooled client for one server.
#[derive(Debug)]
pub struct Memcache {
    addr: SocketAddr,
    timeout: Duration,
    pool: Mutex<Vec<Conn>>,
}

impl Memcache {
    /// A client for `addr`; connects lazily.
    #[must_use]
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr,
            timeout,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// The server address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> McError {
        McError::Unreachable {
            addr: self.addr,
            cause: e.to_string(),
        }
    }

    async fn conn(&self) -> Result<Conn, McError> {
        if let Some(c) = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return Ok(c);
        }
        let s = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| self.unreachable("connect timed out"))?
            .map_err(|e| self.unreachable(e))?;
        let _ = s.set_nodelay(true);
        Ok(BufReader::new(s))
    }

    fn put_back(&self, c: Conn) {
        let mut p = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if p.len() < POOL_MAX {
            p.push(c);
        }
    }

    /// Sends `req` and reads `lines` reply lines (the connection returns to
    /// the pool only after a complete exchange).
    async fn call(&self, req: &[u8], until_end: bool) -> Result<Vec<String>, McError> {
        let mut c = self.conn().await?;
        let work = async {
            c.get_mut().write_all(req).await?;
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                let n = (&mut c).take(MAX_LINE as u64).read_line(&mut line).await?;
                if n == 0 || !line.ends_with("\r\n") {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed mid-reply",
                    ));
                }
                line.truncate(line.len() - 2);
                let done = !until_end
                    || line == "END"
                    || line.starts_with("SERVER_ERROR")
                    || line == "ERROR";
                lines.push(line);
                if done {
                    return Ok(lines);
                }
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(lines)) => {
                self.put_back(c);
                Ok(lines)
            }
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(_) => Err(self.unreachable("request timed out")),
        }
    }

    fn one(lines: Vec<String>) -> Result<String, McError> {
        lines
            .into_iter()
            .next()
            .ok_or_else(|| McError::Protocol("empty reply".into()))
    }

    /// `version`: a liveness check.
    pub async fn version(&self) -> Result<String, McError> {
        Self::one(self.call(b"version\r\n", false).await?)
    }

    /// Stores `value` under `key` only if absent; `true` if stored.
    pub async fn add(&self, key: &str, value: &[u8], ttl_s: u32) -> Result<bool, McError> {
        let mut req = format!("add {key} 0 {ttl_s} {}\r\n", value.len()).into_bytes();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        match Self::one(self.call(&req, false).await?)?.as_str() {
            "STORED" => Ok(true),
            "NOT_STORED" => Ok(false),
            other => Err(McError::Protocol(format!("add: {other}"))),
        }
    }

    /// Adds `delta` (negative: `decr`, stopping at 0) to the counter at
    /// `key`, creating it with TTL `ttl_s`; returns the new value.
    pub async fn incr(&self, key: &str, delta: i64, ttl_s: u32) -> Result<u64, McError> {
        for _ in 0..3 {
            let cmd = if delta >= 0 { "incr" } else { "decr" };
            let req = format!("{cmd} {key} {}\r\n", delta.unsigned_abs());
            let line = Self::one(self.call(req.as_bytes(), false).await?)?;
            if line == "NOT_FOUND" {
                // Create at 0 (racing creators: one wins, all then incr).
                let _ = self.add(key, b"0", ttl_s).await?;
                continue;
            }
            return line
                .parse::<u64>()
                .map_err(|_| McError::Protocol(format!("{cmd}: {line}")));
        }
        Err(McError::Protocol(format!(
            "incr {key}: counter vanished repeatedly"
        )))
    }

    /// The counter at `key` (None if absent).
    pub async fn get_counter(&self, key: &str) -> Result<Option<u64>, McError> {
        let lines = self.call(format!("get {key}\r\n").as_bytes(), true).await?;
        match lines.as_slice() {
            [end] if end == "END" => Ok(None),
            [head, value, end] if head.starts_with("VALUE ") && end == "END" => value
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| McError::Protocol(format!("get {key}: not a number: {value}"))),
            other => Err(McError::Protocol(format!("get {key}: {other:?}"))),
        }
    }

    /// Deletes `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), McError> {
        match Self::one(
            self.call(format!("delete {key}\r\n").as_bytes(), false)
                .await?,
        )?
        .as_str()
        {
            "DELETED" | "NOT_FOUND" => Ok(()),
            other => Err(McError::Protocol(format!("delete: {other}"))),
        }
    }
}
