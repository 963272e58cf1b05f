//! Helpers the appliance's end-to-end tests share: scratch directories,
//! children killed on drop, bounded waits, line readers and a plain HTTP GET.
//! (Each test binary uses some of them.)
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// A scratch directory, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory named after the test and this process.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    /// As [`Scratch::new`], readable by this user only (0700: chronyd wants
    /// that of its socket's directory).
    pub fn private(name: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = Self::new(name);
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))
            .expect("chmod scratch dir");
        dir
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped on drop, whatever the test did.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Lines of a child's output, read by a thread of their own.
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `GET path` on `addr` with HTTP/1.1; the response head and body (by
/// Content-Length when given: DevTools keeps the connection open).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    let mut length = None;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("read the response head");
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
        head.push_str(&line);
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).expect("read the response body");
        }
        None => {
            r.read_to_end(&mut body).expect("read the response body");
        }
    }
    (head, String::from_utf8_lossy(&body).into_owned())
}
