//! The monitoring endpoint: `GET /` (ptp4u's flat JSON map) and
//! `GET /metrics` (Prometheus text) over plain HTTP/1.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stats::Stats;

/// Serves `stats` on `listener` until `stop` is set.
pub fn spawn(
    listener: TcpListener,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("ptp-monitor".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream, &stats);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
}

/// Longest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head, and to take the answer. The
/// monitor serves one connection at a time, so this also bounds how long a
/// slow (or hostile) client can hold it, and shutdown with it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

fn serve(stream: TcpStream, stats: &Stats) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() >= MAX_REQUEST {
            return Ok(()); // too slow or too long: hang up
        }
        stream.set_read_timeout(Some(left))?;
        let n = (&stream).read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or_default();
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/" | "/stats" => ("200 OK", "application/json", stats.to_json()),
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", stats.to_prometheus()),
        _ => (
            "404 Not Found",
            "text/plain",
            "try / or /metrics\n".to_string(),
        ),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}
