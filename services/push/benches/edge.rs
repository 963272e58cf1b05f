//! Push edge benchmark: held connections, memory, broadcast and unicast
//! through real `timecard-push serve` processes over loopback WebSockets.
//!
//! `cargo bench -p timecard-push --bench edge [-- --connections N | --quick]`
//!
//! 0. Baseline (same run, no sockets): connections attached in process
//!    with `EdgeNode::attach`, broadcast and unicast through the edge table
//!    and per-connection queues (`EdgeNode::broadcast`, `Processor::unicast`),
//!    drained with `try_recv`. The ceiling the socket path is compared to.
//! 1. Unicast: one edge process (its own port), 10 000 connections from one
//!    load process; batches of 1 000 unicast pushes at fixed offered rates
//!    and closed loop; achieved msgs/s and delivery latency.
//! 2. Held connections + memory: E = ceil(N / 16 000) edge processes
//!    sharing one port (SO_REUSEPORT), W load processes of at most 16 000
//!    connections each (the per-process open-files limit is 20 000); edge
//!    RSS growth per connection, load RSS per connection, kernel socket
//!    memory, time to connect.
//! 3. Broadcast to all N connections: paced rounds one second apart, then
//!    a burst of rounds back to back; msgs/s and delivery latency.
//!
//! Every child process is killed when the benchmark ends, panics, or dies
//! (a drop guard, plus `PR_SET_PDEATHSIG`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use push::edge::{EdgeConfig, EdgeNode};
use push::frame::{Frame, Message};
use push::processor::Processor;
use push::registry::Registry;
use push::token::{Claims, TokenKey};

const BIN: &str = env!("CARGO_BIN_EXE_timecard-push");
/// Connections per process (edge or load), under the 20 000 open files.
const PER_PROCESS: usize = 16_000;
/// Loopback source addresses every load process spreads over
/// (127.0.0.1 to .32: about 28 000 ephemeral ports each).
const SOURCES: usize = 32;
/// Unicast messages per publish request.
const BATCH: usize = 1_000;
/// Whole-run budget; later phases are skipped past it.
const BUDGET: Duration = Duration::from_secs(290);

struct Opts {
    connections: usize,
    rounds: u64,
    unicast_conns: usize,
    rates: Vec<u64>,
    phase: Duration,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let connections = value("--connections")
        .unwrap_or(if quick { 20_000 } else { 200_000 })
        .clamp(1, 20 * PER_PROCESS);
    Opts {
        connections,
        rounds: 5,
        unicast_conns: 10_000.min(PER_PROCESS),
        rates: vec![20_000, 50_000],
        phase: Duration::from_secs(5),
    }
}

/// A child that dies with this process (the thread that spawned it: only
/// the main thread spawns).
fn spawn(mut cmd: Command) -> Child {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec here.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("spawning timecard-push")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------- HTTP

/// One HTTP/1.1 request with `Connection: close`; (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let auth = bearer.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)
        .map_err(|e| format!("write {addr}: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| format!("read {addr}: {e}"))?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no HTTP header in {} bytes", resp.len()))?;
    let header = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
    let status = header
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = resp[end + 4..].to_vec();
    if header.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < i + 2 + n {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[(i + 4 + n).min(b.len())..];
    }
    out
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

fn status_connections(admin: SocketAddr) -> Option<u64> {
    let (code, body) = http(admin, "GET", "/v1/status", None, b"").ok()?;
    (code == 200).then(|| json(&body)["connections"].as_u64())?
}

// ---------------------------------------------------------------- children

struct Edge {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Edge {
    fn start(
        dir: &Path,
        key: &Path,
        id: &str,
        listen: SocketAddr,
        reuse_port: bool,
        admin: bool,
    ) -> Edge {
        let log = dir.join(format!("{id}.log"));
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg("--key-file").arg(key).args([
            "--listen",
            &listen.to_string(),
            "--node-id",
            id,
        ]);
        if reuse_port {
            cmd.arg("--reuse-port");
        }
        if admin {
            cmd.args(["--admin-listen", "127.0.0.1:0"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("edge log"));
        let mut child = spawn(cmd);
        let stdout = child.stdout.take().expect("edge stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("edge {id} did not start: {}", tail(&log, 20));
        };
        // edge N listening ADDR admin ADDR registry embedded max-connections M
        let w: Vec<&str> = line.split_whitespace().collect();
        let addr = |i: usize| -> SocketAddr {
            w.get(i)
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("unexpected edge line {line:?}"))
        };
        Edge {
            listen: addr(3),
            admin: addr(5),
            child,
            log,
        }
    }

    fn rss(&self) -> u64 {
        push::rss_of(&self.child.id().to_string())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The latest stats line of a load process.
#[derive(Clone, Copy, Debug, Default)]
struct LoadLine {
    connected: u64,
    failed: u64,
    closed: u64,
    received: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

struct Shared {
    last: LoadLine,
    at: Option<Instant>,
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    shared: Arc<Mutex<Shared>>,
    log: PathBuf,
}

impl Worker {
    fn start(
        dir: &Path,
        key: &Path,
        target: SocketAddr,
        connections: usize,
        first: usize,
        prefix: &str,
        topic: Option<&str>,
    ) -> Worker {
        let log = dir.join(format!("load-{prefix}{first}.log"));
        let mut cmd = Command::new(BIN);
        cmd.arg("load")
            .arg("--key-file")
            .arg(key)
            .args(["--target", &target.to_string()])
            .args(["--connections", &connections.to_string()])
            .args(["--first", &first.to_string(), "--prefix", prefix])
            .args(["--sources", &SOURCES.to_string()]);
        if let Some(t) = topic {
            cmd.args(["--topic", t]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("load log"));
        let mut child = spawn(cmd);
        let stdout = child.stdout.take().expect("load stdout");
        let shared = Arc::new(Mutex::new(Shared {
            last: LoadLine::default(),
            at: None,
        }));
        let s = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let g = |k: &str| v[k].as_u64().unwrap_or(0);
                let l = LoadLine {
                    connected: g("connected"),
                    failed: g("failed"),
                    closed: g("closed"),
                    received: g("received"),
                    p50_us: g("p50_us"),
                    p99_us: g("p99_us"),
                    max_us: g("max_us"),
                };
                let mut sh = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                sh.last = l;
                sh.at = Some(Instant::now());
            }
        });
        Worker {
            stdin: child.stdin.take(),
            child,
            shared,
            log,
        }
    }

    fn last(&self) -> (LoadLine, Option<Instant>) {
        let sh = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (sh.last, sh.at)
    }

    fn reset(&mut self) {
        if let Some(s) = &mut self.stdin {
            let _ = s.write_all(b"reset\n");
            let _ = s.flush();
        }
    }

    fn rss(&self) -> u64 {
        push::rss_of(&self.child.id().to_string())
    }

    fn kill(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Edges and load processes of a phase; torn down edges first (so the
/// server sides hold the TIME_WAITs, not the loopback source ports).
struct Fleet {
    edges: Vec<Edge>,
    workers: Vec<Worker>,
}

impl Fleet {
    fn shutdown(&mut self) {
        for e in &mut self.edges {
            e.kill();
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10)
            && self.workers.iter().any(|w| w.last().0.connected > 0)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.edges.clear();
        self.workers.clear();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Latency and counts over several load processes.
#[derive(Clone, Copy, Debug, Default)]
struct Agg {
    received: u64,
    connected: u64,
    failed: u64,
    closed: u64,
    /// Largest per-process p50 (an upper bound of the pooled p50).
    p50_us: u64,
    /// Largest per-process p99 (an upper bound of the pooled p99).
    p99_us: u64,
    max_us: u64,
}

fn aggregate(workers: &[Worker]) -> Agg {
    let mut a = Agg::default();
    for w in workers {
        let (l, _) = w.last();
        a.received += l.received;
        a.connected += l.connected;
        a.failed += l.failed;
        a.closed += l.closed;
        a.p50_us = a.p50_us.max(l.p50_us);
        a.p99_us = a.p99_us.max(l.p99_us);
        a.max_us = a.max_us.max(l.max_us);
    }
    a
}

/// Waits until every worker printed a line after `after` and together they
/// received `expect`; the aggregate then (or at the timeout).
fn wait_received(workers: &[Worker], expect: u64, after: Instant, timeout: Duration) -> Agg {
    let t = Instant::now();
    loop {
        let fresh = workers
            .iter()
            .all(|w| w.last().1.is_some_and(|at| at > after));
        let a = aggregate(workers);
        if (fresh && a.received >= expect) || t.elapsed() > timeout {
            return a;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reset_all(workers: &mut [Worker]) {
    for w in workers.iter_mut() {
        w.reset();
    }
    // `reset` is applied as soon as the load process reads it.
    std::thread::sleep(Duration::from_millis(300));
}

// ---------------------------------------------------------------- system

/// `/proc/net/sockstat` TCP (inuse, tw, mem pages).
fn sockstat() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("TCP:")).unwrap_or("");
    let w: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        w.iter()
            .position(|x| *x == name)
            .and_then(|i| w.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("inuse"), field("tw"), field("mem"))
}

/// `/proc/meminfo` Slab in bytes.
fn slab_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Slab:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds of the whole machine so far (`/proc/stat`): busy outside
/// interrupts (user, nice, system, steal) and in interrupts (irq, softirq:
/// loopback TCP is processed there; with tick-based accounting a tick in
/// softirq also counts in the system time of the process it interrupted).
fn machine_busy_s() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64;
    ((at(0) + at(1) + at(2) + at(7)) / hz, (at(5) + at(6)) / hz)
}

/// CPU seconds of this process plus its reaped children.
fn own_cpu_s() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: an all-zero rusage is valid, and getrusage fills it in.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `u` is a valid rusage to write.
        if unsafe { libc::getrusage(who, &mut u) } == 0 {
            for t in [u.ru_utime, u.ru_stime] {
                total += t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            }
        }
    }
    total
}

/// CPU seconds (user + system) a live process used so far.
fn cpu_of(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command: state is field 3; utime
    // and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64;
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / hz
}

/// CPU seconds so far of (edges, load processes, softirq).
fn cpu_split(fleet: &Fleet) -> (f64, f64, f64) {
    (
        fleet.edges.iter().map(|e| cpu_of(e.child.id())).sum(),
        fleet.workers.iter().map(|w| cpu_of(w.child.id())).sum(),
        machine_busy_s().1,
    )
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64
}

// ---------------------------------------------------------------- phase 0

struct Baseline {
    attached: usize,
    bytes_per_conn: f64,
    broadcast_msgs_s: f64,
    unicast_msgs_s: f64,
}

fn push_frame(kind: &str, body: String, sent_ns: i64) -> push::frame::Encoded {
    Frame::Push(Message {
        id: 0,
        kind: kind.into(),
        durable: false,
        sent_ns,
        body: serde_json::value::RawValue::from_string(body).expect("raw json"),
    })
    .encode()
}

fn baseline(key: &TokenKey, n: usize, rounds: u64, unicast_conns: usize) -> Baseline {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let node = EdgeNode::new(
            EdgeConfig {
                node_id: "inproc".into(),
                max_connections: n + 1,
                ..EdgeConfig::default()
            },
            key.clone(),
            Registry::embedded(Duration::from_secs(600)),
        )
        .expect("node");
        let rss0 = push::rss_bytes();
        let expires = push::token::unix_now_s() + 3_600;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let claims = Claims {
                member: format!("m{i}"),
                device: "d0".into(),
                device_type: "tv".into(),
                topics: Vec::new(),
                expires_unix_s: expires,
            };
            conns.push(node.attach(&claims, Some("all")).await.expect("attach"));
        }
        let bytes_per_conn = push::rss_bytes().saturating_sub(rss0) as f64 / n as f64;

        // Broadcast: queue each round to every connection, then drain.
        let t = Instant::now();
        let mut got = 0u64;
        for r in 0..rounds {
            let frame = push_frame(
                "bench",
                format!("{{\"round\":{r}}}"),
                push::frame::unix_now_ns(),
            );
            node.broadcast("all", &frame);
            for c in &mut conns {
                while c.try_recv().is_some() {
                    got += 1;
                }
            }
        }
        let broadcast_msgs_s = got as f64 / t.elapsed().as_secs_f64();
        assert_eq!(got, n as u64 * rounds, "in-process broadcast lost frames");

        // Unicast through the processor (registry lookup + edge table),
        // one frame encoded per message as the HTTP path does.
        let processor = Processor::new(node.registry().clone(), Some(node.clone()), None);
        let members = unicast_conns.min(n);
        let total = 200_000usize;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let t = Instant::now();
        let mut delivered = 0u64;
        for _ in 0..total / BATCH {
            for k in 0..BATCH {
                let m = rng.below(members);
                let frame = push_frame(
                    "bench",
                    format!("{{\"k\":{k}}}"),
                    push::frame::unix_now_ns(),
                );
                delivered += processor
                    .unicast(&format!("m{m}"), None, &frame)
                    .await
                    .local as u64;
            }
            for c in conns.iter_mut().take(members) {
                while c.try_recv().is_some() {}
            }
        }
        let unicast_msgs_s = delivered as f64 / t.elapsed().as_secs_f64();
        assert_eq!(delivered, total as u64, "in-process unicast lost frames");
        drop(conns);
        Baseline {
            attached: n,
            bytes_per_conn,
            broadcast_msgs_s,
            unicast_msgs_s,
        }
    })
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

// ---------------------------------------------------------------- phase 1

struct UnicastRow {
    label: String,
    posted: u64,
    delivered: u64,
    achieved_msgs_s: f64,
    agg: Agg,
}

/// Posts unicast batches for `dur` at `rate` msgs/s (open loop, `sent_ns`
/// = the scheduled time) or back to back (`None`, `sent_ns` = send time).
/// Returns (messages posted, queued locally per the responses, seconds
/// from the start until the last message was stamped, at most `dur` for a
/// fixed rate).
fn post_unicast(
    addr: SocketAddr,
    token: &str,
    members: usize,
    rate: Option<u64>,
    dur: Duration,
) -> (u64, u64, f64) {
    let threads = if rate.is_some() { 4 } else { 2 };
    let next = Arc::new(AtomicU64::new(0));
    let posted = Arc::new(AtomicU64::new(0));
    let local = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let unix0 = push::frame::unix_now_ns();
    let interval = rate.map(|r| Duration::from_secs_f64(BATCH as f64 / r as f64));
    let batches = interval.map(|i| (dur.as_secs_f64() / i.as_secs_f64()) as u64);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (next, posted, local, token) =
                (next.clone(), posted.clone(), local.clone(), token.to_owned());
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678_9abc_def1 ^ ((t as u64 + 1) << 32));
                let mut last = 0i64;
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let sent_ns = match (interval, batches) {
                        (Some(i), Some(b)) => {
                            if k >= b {
                                break;
                            }
                            let due = i * k as u32;
                            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                                std::thread::sleep(wait);
                            }
                            unix0 + due.as_nanos() as i64
                        }
                        _ => {
                            if t0.elapsed() >= dur {
                                break;
                            }
                            push::frame::unix_now_ns()
                        }
                    };
                    let mut body = String::with_capacity(BATCH * 80);
                    body.push('[');
                    for j in 0..BATCH {
                        if j > 0 {
                            body.push(',');
                        }
                        let m = rng.below(members);
                        body.push_str(&format!(
                            "{{\"member\":\"u{m}\",\"kind\":\"bench\",\"body\":{{\"k\":{k},\"j\":{j}}},\"sent_ns\":{sent_ns}}}"
                        ));
                    }
                    body.push(']');
                    match http(addr, "POST", "/v1/push", Some(&token), body.as_bytes()) {
                        Ok((200, resp)) => {
                            let v = json(&resp);
                            let n: u64 = v["results"]
                                .as_array()
                                .map(|rs| rs.iter().filter_map(|r| r["local"].as_u64()).sum())
                                .unwrap_or(0);
                            posted.fetch_add(BATCH as u64, Ordering::Relaxed);
                            local.fetch_add(n, Ordering::Relaxed);
                        }
                        Ok((code, resp)) => {
                            eprintln!("  push: HTTP {code}: {}", String::from_utf8_lossy(&resp));
                        }
                        Err(e) => eprintln!("  push: {e}"),
                    }
                    last = last.max(sent_ns - unix0);
                }
                last
            })
        })
        .collect();
    let mut last = 0i64;
    for h in handles {
        last = last.max(h.join().unwrap_or(0));
    }
    (
        posted.load(Ordering::Relaxed),
        local.load(Ordering::Relaxed),
        last as f64 / 1e9,
    )
}

fn unicast_phase(dir: &Path, key: &Path, publisher: &str, o: &Opts) -> (Vec<UnicastRow>, u64) {
    let edge = Edge::start(
        dir,
        key,
        "uni",
        "127.0.0.1:0".parse().expect("addr"),
        false,
        false,
    );
    let c = o.unicast_conns;
    let mut fleet = Fleet {
        workers: vec![Worker::start(dir, key, edge.listen, c, 0, "u", None)],
        edges: vec![edge],
    };
    let t = Instant::now();
    while aggregate(&fleet.workers).connected < c as u64 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = status_connections(fleet.edges[0].admin).unwrap_or(0);
    eprintln!(
        "unicast: {held} connections on one edge after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    let modes: Vec<Option<u64>> = o.rates.iter().copied().map(Some).chain([None]).collect();
    for rate in modes {
        reset_all(&mut fleet.workers);
        let (posted, local, last_sent) =
            post_unicast(fleet.edges[0].admin, publisher, c, rate, o.phase);
        let after = Instant::now();
        let agg = wait_received(&fleet.workers, local, after, Duration::from_secs(20));
        // Every message was stamped by `last_sent` and none took longer
        // than max: an upper bound of the time to deliver them all.
        let secs = o
            .phase
            .as_secs_f64()
            .max(last_sent + agg.max_us as f64 / 1e6);
        let label = rate.map_or_else(|| "closed loop".to_owned(), |r| format!("{r} msgs/s"));
        eprintln!(
            "unicast {label}: posted {posted}, queued {local}, received {} in {secs:.2} s; p50 {} p99 {} max {} µs",
            agg.received, agg.p50_us, agg.p99_us, agg.max_us
        );
        rows.push(UnicastRow {
            label,
            posted,
            delivered: agg.received,
            achieved_msgs_s: agg.received as f64 / secs,
            agg,
        });
    }
    fleet.shutdown();
    (rows, held)
}

// ---------------------------------------------------------------- phase 2/3

struct Held {
    target: usize,
    edges: usize,
    workers: usize,
    held_edges: u64,
    per_edge: (u64, u64),
    held_workers: u64,
    failed: u64,
    connect_s: f64,
    stop_reason: String,
    edge_idle_rss: u64,
    edge_rss: u64,
    edge_bytes_per_conn: f64,
    load_bytes_per_conn: f64,
    sock_mem_pages: (u64, u64),
    slab_per_conn: f64,
    paced: Option<Bcast>,
    burst: Option<Bcast>,
}

struct Bcast {
    rounds: u64,
    /// CPU seconds of the edges, the load processes and softirq meanwhile.
    cpu: (f64, f64, f64),
    queued: u64,
    agg: Agg,
    secs: f64,
    msgs_s: f64,
}

/// Posts one broadcast round to every edge concurrently; frames queued.
fn broadcast_round(admins: &[SocketAddr], token: &str, round: u64, sent_ns: i64) -> u64 {
    let body = format!(
        "{{\"topic\":\"all\",\"kind\":\"bench\",\"body\":{{\"round\":{round}}},\"sent_ns\":{sent_ns}}}"
    );
    let handles: Vec<_> = admins
        .iter()
        .map(|&a| {
            let (token, body) = (token.to_owned(), body.clone());
            std::thread::spawn(move || {
                match http(a, "POST", "/v1/push", Some(&token), body.as_bytes()) {
                    Ok((200, resp)) => json(&resp)["local"].as_u64().unwrap_or(0),
                    Ok((code, resp)) => {
                        eprintln!(
                            "  broadcast {a}: HTTP {code}: {}",
                            String::from_utf8_lossy(&resp)
                        );
                        0
                    }
                    Err(e) => {
                        eprintln!("  broadcast {a}: {e}");
                        0
                    }
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}

fn held_phase(dir: &Path, key: &Path, publisher: &str, o: &Opts, start: Instant) -> Held {
    let n = o.connections;
    let e_count = n.div_ceil(PER_PROCESS);
    let w_count = n.div_ceil(PER_PROCESS);
    let mut fleet = Fleet {
        edges: Vec::new(),
        workers: Vec::new(),
    };
    let first = Edge::start(
        dir,
        key,
        "e0",
        "127.0.0.1:0".parse().expect("addr"),
        true,
        true,
    );
    let port = first.listen;
    fleet.edges.push(first);
    for i in 1..e_count {
        fleet
            .edges
            .push(Edge::start(dir, key, &format!("e{i}"), port, true, true));
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle: Vec<u64> = fleet.edges.iter().map(Edge::rss).collect();
    let edge_idle_rss: u64 = idle.iter().sum();

    // The RSS of a load process holding nothing.
    let load_idle = {
        let w = Worker::start(dir, key, port, 0, 0, "idle", None);
        let t = Instant::now();
        while w.last().1.is_none() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        w.rss()
    };
    let (_, _, mem0) = sockstat();
    let slab0 = slab_bytes();

    eprintln!("held: {e_count} edges on {port}, {w_count} load processes, {n} connections");
    let t = Instant::now();
    let mut first_conn = 0;
    for i in 0..w_count {
        let count = n / w_count + usize::from(i < n % w_count);
        fleet.workers.push(Worker::start(
            dir,
            key,
            port,
            count,
            first_conn,
            "m",
            Some("all"),
        ));
        first_conn += count;
    }
    let timeout = Duration::from_secs(30 + (n / 2_000) as u64);
    let mut last_progress = (0u64, Instant::now());
    let mut last_print = Instant::now();
    let (stop_reason, connect_s) = loop {
        std::thread::sleep(Duration::from_millis(100));
        let a = aggregate(&fleet.workers);
        if a.connected >= n as u64 {
            break ("all connected".to_owned(), t.elapsed().as_secs_f64());
        }
        if a.connected > last_progress.0 {
            last_progress = (a.connected, Instant::now());
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {:.0} s: connected {} failed {} closed {}",
                t.elapsed().as_secs_f64(),
                a.connected,
                a.failed,
                a.closed
            );
            last_print = Instant::now();
        }
        if a.connected + a.failed >= n as u64 && last_progress.1.elapsed() > Duration::from_secs(3)
        {
            break (
                format!("{} attempts failed", a.failed),
                t.elapsed().as_secs_f64(),
            );
        }
        if last_progress.1.elapsed() > Duration::from_secs(20) {
            break ("no progress for 20 s".to_owned(), t.elapsed().as_secs_f64());
        }
        if t.elapsed() > timeout || start.elapsed() > BUDGET {
            break ("timed out".to_owned(), t.elapsed().as_secs_f64());
        }
    };
    // Let the stats lines and the edges' tables catch up, then measure.
    std::thread::sleep(Duration::from_millis(2_000));
    let per_edge: Vec<u64> = fleet
        .edges
        .iter()
        .map(|e| status_connections(e.admin).unwrap_or(0))
        .collect();
    let held_edges: u64 = per_edge.iter().sum();
    let a = aggregate(&fleet.workers);
    let edge_rss: u64 = fleet.edges.iter().map(Edge::rss).sum();
    let load_rss: u64 = fleet.workers.iter().map(Worker::rss).sum();
    let (_, _, mem1) = sockstat();
    let slab1 = slab_bytes();
    let per = |bytes: u64, conns: u64| bytes as f64 / conns.max(1) as f64;
    let load_growth = load_rss.saturating_sub(load_idle * w_count as u64);
    eprintln!(
        "held: edges {held_edges}, load {} (failed {}) in {connect_s:.1} s ({stop_reason}); edge RSS {} -> {} MiB",
        a.connected,
        a.failed,
        edge_idle_rss >> 20,
        edge_rss >> 20
    );
    if a.failed > 0 || held_edges < n as u64 {
        for w in fleet.workers.iter().take(2) {
            eprintln!("  load log {}:\n{}", w.log.display(), tail(&w.log, 5));
        }
        for e in fleet.edges.iter().take(2) {
            eprintln!("  edge log {}:\n{}", e.log.display(), tail(&e.log, 5));
        }
    }
    let mut held = Held {
        target: n,
        edges: e_count,
        workers: w_count,
        held_edges,
        per_edge: (
            per_edge.iter().copied().min().unwrap_or(0),
            per_edge.iter().copied().max().unwrap_or(0),
        ),
        held_workers: a.connected,
        failed: a.failed,
        connect_s,
        stop_reason,
        edge_idle_rss,
        edge_rss,
        edge_bytes_per_conn: per(edge_rss.saturating_sub(edge_idle_rss), held_edges),
        load_bytes_per_conn: per(load_growth, a.connected),
        sock_mem_pages: (mem0, mem1),
        slab_per_conn: per(slab1.saturating_sub(slab0), held_edges),
        paced: None,
        burst: None,
    };
    let admins: Vec<SocketAddr> = fleet.edges.iter().map(|e| e.admin).collect();

    // Paced: one round a second.
    if start.elapsed() < BUDGET {
        reset_all(&mut fleet.workers);
        let cpu0 = cpu_split(&fleet);
        let t0 = Instant::now();
        let mut queued = 0;
        let mut last_post = 0.0;
        for r in 0..o.rounds {
            let due = Duration::from_secs(r);
            if let Some(w) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(w);
            }
            last_post = t0.elapsed().as_secs_f64();
            queued += broadcast_round(&admins, publisher, r, push::frame::unix_now_ns());
        }
        let agg = wait_received(
            &fleet.workers,
            queued,
            Instant::now(),
            Duration::from_secs(60),
        );
        // Every frame was sent by the last post's start, and none took
        // longer than max: an upper bound of the completion time.
        let secs = last_post + agg.max_us as f64 / 1e6;
        let cpu1 = cpu_split(&fleet);
        eprintln!(
            "broadcast paced: queued {queued}, received {}; p50 {} p99 {} max {} µs",
            agg.received, agg.p50_us, agg.p99_us, agg.max_us
        );
        held.paced = Some(Bcast {
            rounds: o.rounds,
            cpu: (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1, cpu1.2 - cpu0.2),
            queued,
            agg,
            secs,
            msgs_s: agg.received as f64 / secs,
        });
    }
    // Burst: rounds back to back, all stamped with the burst's start.
    if start.elapsed() < BUDGET {
        reset_all(&mut fleet.workers);
        let cpu0 = cpu_split(&fleet);
        let sent = push::frame::unix_now_ns();
        let handles: Vec<_> = admins
            .iter()
            .map(|&a| {
                let token = publisher.to_owned();
                let rounds = o.rounds;
                std::thread::spawn(move || {
                    (0..rounds)
                        .map(|r| broadcast_round(&[a], &token, 100 + r, sent))
                        .sum::<u64>()
                })
            })
            .collect();
        let queued: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        let agg = wait_received(
            &fleet.workers,
            queued,
            Instant::now(),
            Duration::from_secs(60),
        );
        let secs = agg.max_us as f64 / 1e6;
        let cpu1 = cpu_split(&fleet);
        eprintln!(
            "broadcast burst: queued {queued}, received {}; p50 {} p99 {} max {} µs",
            agg.received, agg.p50_us, agg.p99_us, agg.max_us
        );
        held.burst = Some(Bcast {
            rounds: o.rounds,
            cpu: (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1, cpu1.2 - cpu0.2),
            queued,
            agg,
            secs,
            msgs_s: agg.received as f64 / secs.max(1e-9),
        });
    }
    fleet.shutdown();
    held
}

// ---------------------------------------------------------------- main

fn kb(b: f64) -> String {
    format!("{:.1} KB", b / 1024.0)
}

fn main() {
    let o = opts();
    let start = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("push-bench")
        .tempdir()
        .expect("tempdir");
    let key = TokenKey::generate().expect("key");
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, key.to_hex()).expect("key file");
    let publisher = key
        .issue(&Claims {
            member: "ops".into(),
            device: "pub".into(),
            device_type: "publisher".into(),
            topics: Vec::new(),
            expires_unix_s: push::token::unix_now_s() + 3_600,
        })
        .expect("publisher token");
    let (_, tw0, _) = sockstat();
    let loadavg0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let busy0 = machine_busy_s();
    eprintln!(
        "push edge bench: {} connections, {} cores, TIME_WAIT sockets at start: {tw0}, loadavg {}",
        o.connections,
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg0.trim()
    );

    let base = baseline(&key, o.connections, o.rounds, o.unicast_conns);
    eprintln!(
        "baseline (in process): {:.0} B/conn, broadcast {:.0} msgs/s, unicast {:.0} msgs/s",
        base.bytes_per_conn, base.broadcast_msgs_s, base.unicast_msgs_s
    );
    let (uni, uni_held) = unicast_phase(dir.path(), &key_path, &publisher, &o);
    let held = held_phase(dir.path(), &key_path, &publisher, &o, start);

    // ------------------------------------------------------------ summary
    let page = page_size() as f64;
    let wall = start.elapsed().as_secs_f64();
    let (busy1, irq1) = machine_busy_s();
    let (busy, irq) = (busy1 - busy0.0, irq1 - busy0.1);
    let own = own_cpu_s();
    println!();
    println!(
        "## timecard-push edge: {} connections target ({wall:.0} s total)",
        o.connections
    );
    println!();
    println!(
        "CPU over {wall:.0} s: this benchmark and its processes {own:.0} core-s, irq/softirq \
         (loopback TCP, partly inside the former) {irq:.0} core-s, everything else on the machine {:.0} core-s ({:.0} % of the {} cores); \
         loadavg at start {}",
        (busy + irq - own).max(0.0),
        (busy + irq - own).max(0.0)
            / wall
            / std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
            * 100.0,
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg0.trim()
    );
    println!();
    println!("| measure | value | baseline (in process, same run) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| connections held (edges' /v1/status; load processes' `connected`) | {} / {} of {} ({} edges holding {}..{} each, {} load processes; {}) | {} attached | |",
        held.held_edges,
        held.held_workers,
        held.target,
        held.edges,
        held.per_edge.0,
        held.per_edge.1,
        held.workers,
        held.stop_reason,
        base.attached
    );
    println!(
        "| time to connect | {:.1} s ({:.0} conn/s; {} failed) | | |",
        held.connect_s,
        held.held_workers as f64 / held.connect_s.max(1e-9),
        held.failed
    );
    println!(
        "| edge RSS growth per connection | {} (RSS {} MiB idle -> {} MiB) | {} (table + queue + registry, no socket) | {:.2}x |",
        kb(held.edge_bytes_per_conn),
        held.edge_idle_rss >> 20,
        held.edge_rss >> 20,
        kb(base.bytes_per_conn),
        held.edge_bytes_per_conn / base.bytes_per_conn.max(1.0)
    );
    println!(
        "| load-side RSS per connection | {} | | |",
        kb(held.load_bytes_per_conn)
    );
    println!(
        "| kernel TCP buffer memory (sockstat mem) | {} -> {} pages ({:.0} B/conn, both ends) | | |",
        held.sock_mem_pages.0,
        held.sock_mem_pages.1,
        held.sock_mem_pages.1.saturating_sub(held.sock_mem_pages.0) as f64 * page
            / held.held_edges.max(1) as f64
    );
    println!(
        "| kernel slab growth (system-wide, both ends) | {} per connection | | |",
        kb(held.slab_per_conn)
    );
    for (name, b) in [("paced, 1 round/s", &held.paced), ("burst", &held.burst)] {
        if let Some(b) = b {
            println!(
                "| broadcast {name}: {} rounds x {} conns | {:.0} msgs/s ({} of {} delivered in {:.2} s); p50 <= {} µs, p99 <= {} µs, max {} µs | {:.0} msgs/s | {:.3} |",
                b.rounds,
                b.queued / b.rounds.max(1),
                b.msgs_s,
                b.agg.received,
                b.queued,
                b.secs,
                b.agg.p50_us,
                b.agg.p99_us,
                b.agg.max_us,
                base.broadcast_msgs_s,
                b.msgs_s / base.broadcast_msgs_s.max(1.0)
            );
        }
    }
    for (name, b) in [("paced", &held.paced), ("burst", &held.burst)] {
        if let Some(b) = b {
            let (e, l, i) = b.cpu;
            println!(
                "| CPU during the {name} broadcast (until the last delivery was seen) | edges {e:.1} core-s ({:.1} µs/msg), load processes {l:.1} core-s ({:.1} µs/msg); softirq {i:.1} core-s (loopback TCP, mostly counted in the process times already) | | |",
                e * 1e6 / b.agg.received.max(1) as f64,
                l * 1e6 / b.agg.received.max(1) as f64,
            );
        }
    }
    for r in &uni {
        println!(
            "| unicast {} ({} conns, one edge, batches of {BATCH}) | {:.0} msgs/s ({} of {} delivered); p50 {} µs, p99 {} µs, max {} µs | {:.0} msgs/s | {:.3} |",
            r.label,
            uni_held,
            r.achieved_msgs_s,
            r.delivered,
            r.posted,
            r.agg.p50_us,
            r.agg.p99_us,
            r.agg.max_us,
            base.unicast_msgs_s,
            r.achieved_msgs_s / base.unicast_msgs_s.max(1.0)
        );
    }
    println!();
    println!(
        "Latency = receive time in the load process - sent_ns stamped by the publisher \
         (the scheduled send time for fixed-rate unicast, the burst start for the broadcast burst); \
         p50/p99 over several load processes are the largest per-process values (upper bounds)."
    );
}
