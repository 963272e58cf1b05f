//! fbclockd in negotiated-unicast mode against linuxptp's `ptp4l` as a
//! unicast master, across a veth pair between two network namespaces.
//!
//! ptp4l has no SPTP, so the daemon negotiates Announce, Sync and Delay_Resp
//! (REQUEST_UNICAST_TRANSMISSION) and runs Sync/Follow_Up + Delay_Req/
//! Delay_Resp. ptp4l sends to the client's ports 319/320, so the daemon
//! binds them inside its own namespace.
//!
//! What ptp4l serves (linuxptp 3.1.1, `-S`, software timestamping): the
//! master's clock is `CLOCK_REALTIME` and, because it is the system clock,
//! ptp4l sets `utc_timescale` and announces **without** the PTP-timescale
//! and UTC-offset-valid flags (ARB timescale), with `currentUtcOffset` 37:
//! its timestamps are UTC numbers. So:
//!
//! - by default fbclockd publishes ARB time as it is (UTC offset 0), and the
//!   truth its intervals must contain is host `CLOCK_REALTIME`;
//! - with `--arb-is-utc` it adds the announced 37 s, and the truth is host
//!   `CLOCK_REALTIME` + 37 s (and `now_utc()` contains `CLOCK_REALTIME`).
//!
//! Needs root (network namespaces, ports 319/320) and linuxptp: without
//! them the test says loudly that it skipped — unless `CI` is set, then it
//! fails. ptp4l runs with CAP_SYS_TIME removed (`setpriv`), so nothing can
//! touch the host clock.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fbclock::{FbClock, TrueTime};

fn realtime_ns() -> i64 {
    fbclock::clock_ns(libc::CLOCK_REALTIME as u32)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the test can run; skips loudly (or fails under CI).
fn environment_ok() -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    for t in ["ip", "ptp4l", "setpriv"] {
        if !have(t) {
            missing.push(t.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "ptp4l unicast test needs {} (apt-get install -y linuxptp; run as root)",
        missing.join(", ")
    );
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct NetnsPair {
    a: String,
    b: String,
}

impl NetnsPair {
    fn new(tag: u32) -> (Self, String, String) {
        let (a, b) = (format!("fbcA{tag}"), format!("fbcB{tag}"));
        let (va, vb) = (format!("fbcvA{tag}"), format!("fbcvB{tag}"));
        let net = format!("10.79.{}", tag % 250);
        let pair = Self {
            a: a.clone(),
            b: b.clone(),
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &a]);
        ip(&["link", "set", &vb, "netns", &b]);
        ip(&["-n", &a, "addr", "add", &format!("{net}.1/24"), "dev", &va]);
        ip(&["-n", &b, "addr", "add", &format!("{net}.2/24"), "dev", &vb]);
        for (n, v) in [(&a, &va), (&b, &vb)] {
            ip(&["-n", n, "link", "set", "lo", "up"]);
            ip(&["-n", n, "link", "set", v, "up"]);
        }
        (pair, va, format!("{net}.1"))
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A child process, SIGTERMed and reaped on drop.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Self {
        let child = cmd
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name, child }
    }

    /// SIGTERM, then wait up to `grace`; SIGKILL after. Returns whether it
    /// exited successfully by itself.
    fn terminate(&mut self, grace: Duration) -> bool {
        if let Ok(Some(s)) = self.child.try_wait() {
            return s.success();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM; killing", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(2));
    }
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

#[track_caller]
fn assert_contains(tt: &TrueTime, lo: i64, hi: i64, what: &str) {
    assert!(
        tt.earliest_ns <= hi && tt.latest_ns >= lo,
        "{what}: truth [{lo}, {hi}] outside [{}, {}] (midpoint off by {} ns, WOU {} ns)",
        tt.earliest_ns,
        tt.latest_ns,
        tt.midpoint_ns() - (lo + hi) / 2,
        tt.wou_ns()
    );
}

/// Starts fbclockd in namespace `ns`, waits for data and checks `reads`
/// readings against `CLOCK_REALTIME + truth_offset_ns`; returns the WOUs.
fn run_daemon(
    ns: &str,
    server_ip: &str,
    dir: &Path,
    name: &str,
    extra: &[&str],
    truth_offset_ns: i64,
    reads: usize,
) -> (Vec<i64>, fbclock::Snapshot, PathBuf) {
    let shm = dir.join(format!("{name}.shm"));
    let log = dir.join(format!("{name}.log"));
    let mut d = Proc::spawn(
        "fbclockd",
        Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_fbclockd")])
            .args(["--mode", "unicast", "--server", &format!("{server_ip}:319")])
            .args(["--shm", shm.to_str().unwrap(), "--interval", "1s"])
            .args(["--unicast-duration", "10", "--log-level", "fbclockd=debug"])
            .args(["--metrics", "off"])
            .args(extra),
        &log,
    );
    let err_log = log.with_extension("err");
    let t0 = Instant::now();
    let clock = loop {
        if let Ok(c) = FbClock::open(&shm) {
            break c;
        }
        if let Ok(Some(s)) = d.child.try_wait() {
            panic!("fbclockd exited: {s:?}\n{}", tail(&err_log));
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no shm file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let check = |what: &str| {
        let before = realtime_ns();
        let tt = clock.now();
        let after = realtime_ns();
        if let Ok(tt) = &tt {
            assert_contains(tt, before + truth_offset_ns, after + truth_offset_ns, what);
        }
        tt
    };
    loop {
        if check("first sync").is_ok() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(25),
            "{name}: never synced\n{}",
            tail(&err_log)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("{name}: synced after {:?}", t0.elapsed());
    let mut wous = Vec::with_capacity(reads);
    for i in 0..reads {
        let tt = check(&format!("{name} read {i}")).expect("synced reads");
        wous.push(tt.wou_ns());
        // Spread over a few exchanges (and a grant renewal).
        std::thread::sleep(Duration::from_millis(3));
    }
    let snap = clock.snapshot().unwrap();
    let (gm, class, acc) = clock.grandmaster();
    eprintln!("{name}: GM {gm:016x} class {class} accuracy {acc:#04x}, record {snap:?}");
    assert_eq!((class, acc), (6, 0x21));
    if truth_offset_ns != 0 {
        // UTC via the published offset.
        let before = realtime_ns();
        let u = clock.now_utc().unwrap();
        let after = realtime_ns();
        assert_contains(&u, before, after, "now_utc");
    }
    assert!(
        d.terminate(Duration::from_secs(5)),
        "fbclockd did not stop cleanly on SIGTERM\n{}",
        tail(&err_log)
    );
    let logged = std::fs::read_to_string(&err_log).unwrap_or_default();
    assert!(logged.contains("synced"), "{logged}");
    (wous, snap, err_log)
}

#[test]
fn fbclockd_unicast_against_ptp4l_master_in_netns() {
    if !environment_ok() {
        return;
    }
    let t0 = Instant::now();
    let tag = std::process::id() % 100_000;
    let dir = tempfile::tempdir().unwrap();
    let (ns, veth_a, server_ip) = NetnsPair::new(tag);
    let cfg = dir.path().join("master.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[global]
masterOnly              1
unicast_listen          1
inhibit_multicast_service 1
free_running            1
time_stamping           software
network_transport       UDPv4
domainNumber            0
priority1               100
clockClass              6
clockAccuracy           0x21
utc_offset              37
logAnnounceInterval     0
announceReceiptTimeout  2
uds_address             {}
logging_level           6
",
            dir.path().join("master.sock").display()
        ),
    )
    .unwrap();
    let master_log = dir.path().join("ptp4l.log");
    let _master = Proc::spawn(
        "ptp4l",
        Command::new("ip")
            .args(["netns", "exec", &ns.a])
            .args([
                "setpriv",
                "--bounding-set",
                "-sys_time",
                "--inh-caps",
                "-sys_time",
            ])
            .args([
                "ptp4l",
                "-f",
                cfg.to_str().unwrap(),
                "-i",
                &veth_a,
                "-S",
                "-m",
            ]),
        &master_log,
    );

    // Default: ARB time published as it is → truth = CLOCK_REALTIME.
    let (mut wous, snap, log) = run_daemon(&ns.b, &server_ip, dir.path(), "as-is", &[], 0, 1000);
    assert_eq!(
        (snap.utc_pre_s, snap.utc_post_s),
        (0, 0),
        "ARB published with offset 0"
    );
    wous.sort_unstable();
    eprintln!(
        "ptp4l over veth, 1000 reads: WOU min {} / median {} / p99 {} / max {} ns",
        wous[0], wous[500], wous[990], wous[999]
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // What ptp4l announces (documented in the module docs).
    let announce = text
        .lines()
        .find(|l| l.contains("grandmaster announce"))
        .unwrap_or_default();
    eprintln!("{announce}");
    assert!(announce.contains("ARB"), "{announce}");
    eprintln!(
        "exchanges accepted {}, rejected {} (daemon log lines)",
        text.matches("exchange accepted").count(),
        text.matches("exchange rejected").count()
    );

    // --arb-is-utc: + currentUtcOffset (37) → truth = CLOCK_REALTIME + 37 s.
    let (_, snap, _) = run_daemon(
        &ns.b,
        &server_ip,
        dir.path(),
        "arb-is-utc",
        &["--arb-is-utc"],
        37_000_000_000,
        300,
    );
    assert_eq!((snap.utc_pre_s, snap.utc_post_s), (37, 37));
    let master = std::fs::read_to_string(&master_log).unwrap_or_default();
    assert!(
        master.contains("assuming the grand master role"),
        "{master}"
    );
    eprintln!("total {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(60));
}
