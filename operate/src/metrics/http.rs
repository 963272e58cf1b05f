//! A tiny HTTP/1.1 server on one std thread, for daemons without an HTTP
//! stack of their own: `GET` (and `HEAD`) of the pages a closure knows,
//! `404` for the others.
//!
//! It serves one connection at a time and closes it after the answer. A
//! request head is at most [`MAX_REQUEST`] bytes and must arrive within
//! [`CLIENT_TIMEOUT`], which also bounds how long a slow (or hostile) client
//! can hold the server, and its shutdown. Garbage gets a `400`, never a panic.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest request head accepted, bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head, and to take the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle server looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A `--metrics` flag's value: `IP:PORT` to serve there, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("{s}: {e} (IP:PORT, or off)"))
    }
}

/// An answer to a `GET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its body.
    pub body: String,
}

impl Page {
    /// A Prometheus scrape's answer.
    #[must_use]
    pub fn metrics(text: String) -> Self {
        Self {
            content_type: super::CONTENT_TYPE,
            body: text,
        }
    }

    /// A JSON document.
    #[must_use]
    pub fn json(body: String) -> Self {
        Self {
            content_type: "application/json",
            body,
        }
    }
}

/// Serves `pages` (path without the query → page, `None` for 404) on
/// `listener` from a thread named `name` until `stop` is set.
///
/// # Errors
/// The listener cannot be made non-blocking, or the thread cannot start.
pub fn spawn<F>(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    name: &str,
    pages: F,
) -> std::io::Result<JoinHandle<()>>
where
    F: Fn(&str) -> Option<Page> + Send + 'static,
{
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = serve(stream, &pages) {
                            tracing::debug!(error = %e, "metrics client");
                        }
                    }
                    // Nobody waiting (or out of descriptors): look again soon.
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        })
}

/// True once `head` holds a whole request head.
fn complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// Reads a request head; `None` when the client was too slow.
fn read_head(stream: &TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !complete(&head) && head.len() <= MAX_REQUEST {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match (&*stream).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(head))
}

/// What to answer to a request head.
fn answer<F>(head: &[u8], pages: &F) -> (&'static str, Option<Page>, bool)
where
    F: Fn(&str) -> Option<Page>,
{
    let text = |t: &str| {
        Some(Page {
            content_type: "text/plain; charset=utf-8",
            body: format!("{t}\n"),
        })
    };
    if head.len() > MAX_REQUEST {
        return (
            "431 Request Header Fields Too Large",
            text("request head too large"),
            true,
        );
    }
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or_default()
        .trim_end_matches('\r');
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return ("400 Bad Request", text("bad request line"), true);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return ("400 Bad Request", text("bad request line"), true);
    }
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", text("only GET"), true);
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match pages(path) {
        Some(page) => ("200 OK", Some(page), with_body),
        None => ("404 Not Found", text("not found; try /metrics"), with_body),
    }
}

/// Answers one connection.
fn serve<F>(stream: TcpStream, pages: &F) -> std::io::Result<()>
where
    F: Fn(&str) -> Option<Page>,
{
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let Some(head) = read_head(&stream)? else {
        return Ok(()); // too slow: hang up
    };
    if head.is_empty() {
        return Ok(()); // connected and closed
    }
    let (status, page, with_body) = answer(&head, pages);
    let page = page.unwrap_or_else(|| Page {
        content_type: "text/plain",
        body: String::new(),
    });
    let mut out = stream;
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        page.content_type,
        page.body.len()
    )?;
    if with_body {
        out.write_all(page.body.as_bytes())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `request` and reads the answer until the server closes.
    fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    proptest::proptest! {
        #[test]
        fn any_request_head_gets_an_answer(
            head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..(MAX_REQUEST + 64)),
        ) {
            let pages = |p: &str| (p == "/metrics").then(|| Page::metrics(String::new()));
            let (status, page, _) = answer(&head, &pages);
            proptest::prop_assert!(
                ["200", "400", "404", "405", "431"].contains(&&status[..3]),
                "{}", status
            );
            proptest::prop_assert!(page.is_some());
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!("off".parse(), Ok(ListenAddr(None)));
        assert_eq!(
            "127.0.0.1:7331".parse(),
            Ok(ListenAddr(Some(SocketAddr::from(([127, 0, 0, 1], 7331)))))
        );
        assert!("localhost".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn serves_pages_refuses_the_rest_and_survives_garbage() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn(listener, stop.clone(), "test-metrics", |path| {
            (path == "/metrics").then(|| Page::metrics("timecard_x_y 1\n".into()))
        })
        .unwrap();

        let ok = exchange(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.ends_with("\r\n\r\ntimecard_x_y 1\n"), "{ok}");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.0\n\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(head.contains("Content-Length: 15\r\n"), "{head}");
        let missing = exchange(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"),
            "{post}"
        );
        for garbage in [
            &b"\x00\xff\xfe garbage\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"\r\n\r\n",
        ] {
            let r = exchange(addr, garbage);
            assert!(r.starts_with("HTTP/1.1 400 "), "{garbage:?}: {r}");
        }
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_REQUEST + 100, b'x');
        let r = exchange(addr, &long);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

        // A client that sends nothing holds the server for CLIENT_TIMEOUT at most.
        let silent = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
        assert!(
            t.elapsed() < CLIENT_TIMEOUT + Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        drop(silent);

        stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        thread.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
