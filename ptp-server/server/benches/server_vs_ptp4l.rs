//! Capacity benchmark: our `ptp-server` against linuxptp's `ptp4l` as a
//! unicast master, with the same load generator (`ptp-loadgen`) and the same
//! ramp of simulated clients. Run by hand, as root:
//!
//! ```text
//! cargo bench -p ptp-server --bench server_vs_ptp4l
//! ```
//!
//! Topology (created here, deleted on exit, also on panic):
//!
//! ```text
//!  netns S: the server under test on 10.250.0.1 (ports 319/320)
//!     | veth
//!  netns C: ptp-loadgen; 10.64.0.0/10 is routed to C and local there
//!           ("AnyIP"), so every simulated client has its own address
//! ```
//!
//! Every client gets its own address (`--per-ip 1`) because ptp4l's unicast
//! service keys clients by IP address alone. Each system runs alone, on the
//! same ports, restarted before every ramp step. A step is sustained when
//! every client got its three grants, at most 0.1 % of the expected Syncs are
//! missing, at least 99.9 % of Delay_Req are answered and the p99 Follow_Up
//! latency is at most 50 ms. The ramp stops at the first step that is not
//! sustained and then bisects twice between the last good and the first bad
//! client count.
//!
//! Systems: `ours` (2 send workers, 2 receive workers, embedded simulated
//! card), `ptp4l` (3.1.1: masterOnly, unicast_listen, inhibit_multicast_service,
//! software timestamps, CAP_SYS_TIME dropped), and `ours-1core` (ours pinned to
//! CPU 0, the load generator to CPU 1).
//!
//! Environment: `PTP_BENCH_RAMP` (default `1000,2000,5000,10000,20000,50000,100000`),
//! `PTP_BENCH_WINDOW` (s, default 10), `PTP_BENCH_BISECT` (default 2),
//! `PTP_BENCH_SYSTEMS` (default `ours,ptp4l,ours-1core`). The whole run is
//! bounded to about 10 minutes; results go to stdout as a Markdown table and
//! to `target/ptp-bench/results.jsonl`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_IP: &str = "10.250.0.1";
const CLIENT_IP: &str = "10.250.0.2";
const CLIENT_NET: &str = "10.64.0.0/10";
const FIRST_CLIENT: &str = "10.64.0.1";
const BUDGET: Duration = Duration::from_secs(570);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------

struct Netns {
    s: String,
    c: String,
    veth_s: String,
}

impl Netns {
    fn create() -> Self {
        let pid = std::process::id();
        let me = Self {
            s: format!("ptpbS{pid}"),
            c: format!("ptpbC{pid}"),
            veth_s: format!("pbs{pid}"),
        };
        let veth_c = format!("pbc{pid}");
        ip(&["netns", "add", &me.s]);
        ip(&["netns", "add", &me.c]);
        ip(&[
            "link", "add", &me.veth_s, "type", "veth", "peer", "name", &veth_c,
        ]);
        ip(&["link", "set", &me.veth_s, "netns", &me.s]);
        ip(&["link", "set", &veth_c, "netns", &me.c]);
        ip(&[
            "-n",
            &me.s,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            &me.veth_s,
        ]);
        ip(&[
            "-n",
            &me.c,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            &veth_c,
        ]);
        for (ns, dev) in [(&me.s, &me.veth_s), (&me.c, &veth_c)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&[
            "-n", &me.c, "route", "add", "local", CLIENT_NET, "dev", "lo",
        ]);
        ip(&["-n", &me.s, "route", "add", CLIENT_NET, "via", CLIENT_IP]);
        me
    }

    /// UDP RcvbufErrors of a namespace (datagrams dropped on full sockets).
    fn rcvbuf_errors(ns: &str) -> Option<u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
            .output()
            .ok()?;
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        let mut udp = t.lines().filter(|l| l.starts_with("Udp: "));
        let names: Vec<&str> = udp.next()?.split_whitespace().collect();
        let values: Vec<&str> = udp.next()?.split_whitespace().collect();
        let i = names.iter().position(|n| *n == "RcvbufErrors")?;
        values.get(i)?.parse().ok()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.s, &self.c] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

struct Proc(Option<Child>);

impl Proc {
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe { libc::kill(i32::try_from(c.id()).expect("pid"), libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let out = File::create(log).expect("log");
    let err = out.try_clone().expect("log");
    Proc(Some(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn"),
    ))
}

fn wait_log(log: &Path, needle: &str, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if read(log).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Ours,
    Ptp4l,
    OursOneCore,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Ptp4l => "ptp4l",
            Self::OursOneCore => "ours-1core",
        }
    }
    fn pinned(self) -> bool {
        self == Self::OursOneCore
    }
}

struct Bench {
    net: Netns,
    dir: PathBuf,
    server_bin: String,
    loadgen_bin: String,
    window: u64,
    started: Instant,
    seed: u8,
    results: File,
}

#[derive(Debug, Clone)]
struct Step {
    clients: u32,
    ok: bool,
    json: serde_json::Value,
    server_rcvbuf_errors: Option<u64>,
    server_stats: Option<serde_json::Value>,
    server_notes: Vec<String>,
    secs: f64,
}

impl Step {
    fn f(&self, k: &str) -> f64 {
        self.json
            .get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    }
    fn why(&self) -> String {
        let j = &self.json;
        if j.is_null() {
            return "load generator failed".into();
        }
        let mut v = Vec::new();
        if self.f("granted") < f64::from(self.clients) {
            v.push(format!("granted {}/{}", self.f("granted"), self.clients));
        }
        if self.f("sync_missed_ratio") > 0.001 {
            v.push(format!(
                "Sync missed {:.1} %",
                self.f("sync_missed_ratio") * 100.0
            ));
        }
        if self.f("delay_resp_ratio") < 0.999 {
            v.push(format!(
                "Delay_Resp {:.1} %",
                self.f("delay_resp_ratio") * 100.0
            ));
        }
        if self.f("fu_latency_p99_ms").is_nan() || self.f("fu_latency_p99_ms") > 50.0 {
            v.push(format!("FU p99 {} ms", j["fu_latency_p99_ms"]));
        }
        if j["loadgen_limited"].as_bool() == Some(true) {
            v.push("load generator saturated".into());
        }
        if let Some(e) = self.server_rcvbuf_errors.filter(|e| *e > 0) {
            v.push(format!("{e} datagrams dropped on full server sockets"));
        }
        v.extend(self.server_notes.iter().cloned());
        v.join(", ")
    }
}

impl Bench {
    fn start_system(&self, sys: System, tag: &str) -> Option<Proc> {
        let log = self.dir.join(format!("{tag}.server.log"));
        match sys {
            System::Ours | System::OursOneCore => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &self.net.s]);
                if sys.pinned() {
                    cmd.args(["taskset", "-c", "0"]);
                }
                cmd.arg(&self.server_bin).args([
                    "--ip",
                    SERVER_IP,
                    "--workers",
                    "2",
                    "--recv-workers",
                    "2",
                    "--monitoring",
                    "127.0.0.1:8888",
                    "--duration",
                    "300",
                    "--log-level",
                    "warn",
                ]);
                let p = spawn(&mut cmd, &log);
                wait_log(&log, "ptp-server: serving", Duration::from_secs(10)).then_some(p)
            }
            System::Ptp4l => {
                let cfg = self.dir.join("ptp4l-master.cfg");
                std::fs::write(
                    &cfg,
                    format!(
                        "[global]\nmasterOnly 1\nunicast_listen 1\ninhibit_multicast_service 1\n\
                         free_running 1\ntime_stamping software\nnetwork_transport UDPv4\n\
                         domainNumber 0\nlogging_level 6\nuds_address {}\n",
                        self.dir.join("ptp4l.sock").display()
                    ),
                )
                .expect("ptp4l cfg");
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &self.net.s])
                    .args([
                        "setpriv",
                        "--bounding-set",
                        "-sys_time",
                        "--inh-caps",
                        "-sys_time",
                    ])
                    .arg("ptp4l")
                    .arg("-f")
                    .arg(&cfg)
                    .args(["-i", &self.net.veth_s, "-S", "-m"]);
                let p = spawn(&mut cmd, &log);
                let up = wait_log(
                    &log,
                    "assuming the grand master role",
                    Duration::from_secs(20),
                );
                // The host clock is safe: ptp4l must not hold CAP_SYS_TIME.
                let pid = p.0.as_ref().map(Child::id).unwrap_or(0);
                let bnd = sh(&format!("grep CapBnd /proc/{pid}/status | cut -f2"));
                let cap = u64::from_str_radix(bnd.trim(), 16).unwrap_or(u64::MAX);
                assert_eq!(cap & (1 << 25), 0, "ptp4l runs with CAP_SYS_TIME; aborting");
                up.then_some(p)
            }
        }
    }

    fn step(&mut self, sys: System, clients: u32) -> Step {
        let t = Instant::now();
        self.seed = self.seed.wrapping_add(1).max(1);
        let tag = format!("{}-{clients}", sys.name());
        let Some(mut server) = self.start_system(sys, &tag) else {
            eprintln!(
                "  {tag}: the server did not come up (see {})",
                self.dir.display()
            );
            return Step {
                clients,
                ok: false,
                json: serde_json::Value::Null,
                server_rcvbuf_errors: None,
                server_stats: None,
                server_notes: vec!["server did not start".into()],
                secs: t.elapsed().as_secs_f64(),
            };
        };
        let before = Netns::rcvbuf_errors(&self.net.s);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.net.c]);
        if sys.pinned() {
            cmd.args(["taskset", "-c", "1"]);
        }
        cmd.arg(&self.loadgen_bin).args([
            "--server",
            SERVER_IP,
            "--first-ip",
            FIRST_CLIENT,
            "--per-ip",
            "1",
            "--clients",
            &clients.to_string(),
            "--duration",
            &self.window.to_string(),
            "--warmup",
            "3",
            "--id-seed",
            &self.seed.to_string(),
            "--label",
            &tag,
        ]);
        let lg_log = self.dir.join(format!("{tag}.loadgen.log"));
        let out = cmd
            .stderr(Stdio::from(File::create(&lg_log).expect("log")))
            .output()
            .expect("running ptp-loadgen");
        let after = Netns::rcvbuf_errors(&self.net.s);
        let server_stats: Option<serde_json::Value> = (sys != System::Ptp4l)
            .then(|| {
                let o = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &self.net.s,
                        "curl",
                        "-s",
                        "--max-time",
                        "3",
                    ])
                    .arg("http://127.0.0.1:8888/")
                    .output()
                    .ok()?;
                serde_json::from_slice(&o.stdout).ok()
            })
            .flatten();
        server.stop();
        let mut server_notes = Vec::new();
        let slog = read(&self.dir.join(format!("{tag}.server.log")));
        let txts = slog
            .matches("timed out while polling for tx timestamp")
            .count();
        if txts > 0 {
            server_notes.push(format!(
                "ptp4l: {txts}x \"timed out while polling for tx timestamp\""
            ));
        }
        if slog.contains("to FAULTY") {
            server_notes.push("ptp4l port went FAULTY".into());
        }
        if let Some(st) = &server_stats {
            for k in ["queue.drops", "txts.missing", "rxdrops", "tx.errors"] {
                if let Some(v) = st[k].as_u64().filter(|v| *v > 0) {
                    server_notes.push(format!("server {k} {v}"));
                }
            }
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json: serde_json::Value = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null);
        let ok = json["ok"].as_bool() == Some(true);
        let step = Step {
            clients,
            ok,
            server_rcvbuf_errors: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
            server_stats,
            server_notes,
            json,
            secs: t.elapsed().as_secs_f64(),
        };
        eprintln!(
            "  {:<11} {:>7} clients: {} — Sync {:.4}/client/s, missed {:.3} %, FU p99 {} ms, \
             Delay_Resp {:.2} %{} ({:.0} s)",
            sys.name(),
            clients,
            if ok { "SUSTAINED" } else { "not sustained" },
            step.f("sync_per_client_per_s"),
            step.f("sync_missed_ratio") * 100.0,
            step.json["fu_latency_p99_ms"],
            step.f("delay_resp_ratio") * 100.0,
            if ok {
                String::new()
            } else {
                format!(" [{}]", step.why())
            },
            step.secs,
        );
        let line = serde_json::json!({
            "system": sys.name(),
            "clients": clients,
            "ok": ok,
            "loadgen": step.json,
            "server_rcvbuf_errors": step.server_rcvbuf_errors,
            "server_stats": step.server_stats,
            "server_notes": step.server_notes,
            "seconds": step.secs,
        });
        use std::io::Write;
        let _ = writeln!(self.results, "{line}");
        step
    }

    /// Rough duration of a step, for the time budget.
    fn estimate(sys: System, clients: u32, window: u64) -> Duration {
        let start = if sys == System::Ptp4l { 9.0 } else { 1.0 };
        Duration::from_secs_f64(
            start + f64::from(clients) / 20_000.0 * 1.5 + 5.0 + window as f64 + 3.0,
        )
    }

    fn ramp(&mut self, sys: System, ramp: &[u32], bisect: u32) -> Vec<Step> {
        eprintln!("{}:", sys.name());
        let mut steps: Vec<Step> = Vec::new();
        let mut good: Option<u32> = None;
        let mut bad: Option<u32> = None;
        for &n in ramp {
            if self.started.elapsed() + Self::estimate(sys, n, self.window) > BUDGET {
                eprintln!("  (time budget reached; ramp stops before {n})");
                return steps;
            }
            let s = self.step(sys, n);
            let ok = s.ok;
            steps.push(s);
            if ok {
                good = Some(n);
            } else {
                bad = Some(n);
                break;
            }
        }
        if let (Some(mut lo), Some(mut hi)) = (good, bad) {
            for _ in 0..bisect {
                let mid = round2((lo + hi) / 2);
                if mid <= lo || mid >= hi {
                    break;
                }
                if self.started.elapsed() + Self::estimate(sys, mid, self.window) > BUDGET {
                    eprintln!("  (time budget reached; no more bisection)");
                    break;
                }
                let s = self.step(sys, mid);
                if s.ok {
                    lo = mid;
                } else {
                    hi = mid;
                }
                steps.push(s);
            }
        }
        steps
    }
}

/// Rounds to two significant digits (readable client counts).
fn round2(n: u32) -> u32 {
    let mut p = 1;
    while n / p >= 100 {
        p *= 10;
    }
    (n / p) * p
}

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // must not start a 7-minute benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("server_vs_ptp4l: run with `cargo bench -p ptp-server --bench server_vs_ptp4l`");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = ["ip", "ptp4l", "setpriv", "taskset", "curl"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !root || !missing.is_empty() {
        eprintln!(
            "\n*** SKIPPED server_vs_ptp4l: needs root and {:?} (missing: {missing:?}) ***\n",
            ["ip", "ptp4l", "setpriv", "taskset", "curl"]
        );
        return;
    }
    let ramp: Vec<u32> = env_or("PTP_BENCH_RAMP", "1000,2000,5000,10000,20000,50000,100000")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let window: u64 = env_or("PTP_BENCH_WINDOW", "10").parse().unwrap_or(10);
    let bisect: u32 = env_or("PTP_BENCH_BISECT", "2").parse().unwrap_or(2);
    let systems: Vec<System> = env_or("PTP_BENCH_SYSTEMS", "ours,ptp4l,ours-1core")
        .split(',')
        .filter_map(|s| match s.trim() {
            "ours" => Some(System::Ours),
            "ptp4l" => Some(System::Ptp4l),
            "ours-1core" => Some(System::OursOneCore),
            _ => None,
        })
        .collect();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ptp-bench");
    std::fs::create_dir_all(&target).expect("target/ptp-bench");
    let dir = tempfile::tempdir().expect("tempdir");

    let machine = format!(
        "{} CPUs ({}), kernel {}, {}, ptp4l {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(),
        sh("uname -r"),
        sh("free -g | awk '/Mem:/ {print $2 \" GiB RAM\"}'"),
        sh("ptp4l -v 2>&1"),
    );
    eprintln!("server_vs_ptp4l: {machine}; ramp {ramp:?}, window {window} s");

    let mut b = Bench {
        net: Netns::create(),
        dir: dir.path().to_path_buf(),
        server_bin: env!("CARGO_BIN_EXE_ptp-server").into(),
        loadgen_bin: env!("CARGO_BIN_EXE_ptp-loadgen").into(),
        window,
        started: Instant::now(),
        seed: 0,
        results: File::create(target.join("results.jsonl")).expect("results file"),
    };
    let mut summary = Vec::new();
    for sys in systems {
        let steps = b.ramp(sys, &ramp, bisect);
        let best = steps
            .iter()
            .filter(|s| s.ok)
            .max_by_key(|s| s.clients)
            .cloned();
        let first_bad = steps
            .iter()
            .filter(|s| !s.ok)
            .min_by_key(|s| s.clients)
            .cloned();
        summary.push((sys, best, first_bad));
    }
    let total = b.started.elapsed();
    drop(b);

    println!(
        "\n## Results ({machine}; window {window} s; total {:.0} s)\n",
        total.as_secs_f64()
    );
    println!(
        "| system | largest N sustained | Sync/client/s | missed Syncs | FU latency p50 / p99 | Delay_Resp answered | DR RTT p99 | first N not sustained | why |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (sys, best, bad) in &summary {
        let (n, rate, missed, lat, dr, rtt) = best.as_ref().map_or(
            (
                "none".to_string(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ),
            |s| {
                (
                    s.clients.to_string(),
                    format!("{:.4}", s.f("sync_per_client_per_s")),
                    format!(
                        "{} ({:.3} %)",
                        s.json["sync_missed"],
                        s.f("sync_missed_ratio") * 100.0
                    ),
                    format!(
                        "{} / {} ms",
                        s.json["fu_latency_p50_ms"], s.json["fu_latency_p99_ms"]
                    ),
                    format!("{:.2} %", s.f("delay_resp_ratio") * 100.0),
                    format!("{} ms", s.json["delay_resp_rtt_p99_ms"]),
                )
            },
        );
        let (bn, why) = bad.as_ref().map_or(("—".to_string(), String::new()), |s| {
            (s.clients.to_string(), s.why())
        });
        println!(
            "| {} | {n} | {rate} | {missed} | {lat} | {dr} | {rtt} | {bn} | {why} |",
            sys.name()
        );
    }
    let best = |name: &str| {
        summary
            .iter()
            .find(|(s, _, _)| s.name() == name)
            .and_then(|(_, b, _)| b.as_ref().map(|s| s.clients))
    };
    if let (Some(o), Some(p)) = (best("ours"), best("ptp4l")) {
        println!(
            "\nours / ptp4l = {o} / {p} = {:.1}x",
            f64::from(o) / f64::from(p)
        );
    }
    if let (Some(o), Some(p)) = (best("ours-1core"), best("ptp4l")) {
        println!(
            "ours-1core / ptp4l = {o} / {p} = {:.1}x",
            f64::from(o) / f64::from(p)
        );
    }
    println!("\nPer-step JSON: target/ptp-bench/results.jsonl");
}
