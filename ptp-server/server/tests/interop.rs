//! Interoperability with software nobody here wrote: linuxptp's `ptp4l`
//! (3.1.1) as a unicast client, and Wireshark's dissector (`tshark`).
//!
//! One session, two network namespaces joined by a veth pair:
//!
//! ```text
//!  netns A: ptp-server --device sim:CARD --ip 10.x.y.1      (event 319, general 320)
//!  netns B: ptp4l (unicast client, software timestamps, servo on,
//!           CAP_SYS_TIME dropped with setpriv) + tshark capturing on the veth
//! ```
//!
//! The simulated card lives in a shared-memory file created by this test
//! (`Sim::create_file`) and is brought up with the driver first, as
//! `ptp_ocp`'s probe (or `timecard watch`) would. The test then checks what
//! ptp4l makes of the server (SLAVE, offsets and path delay, parent and time
//! properties data sets over `pmc`), injects a GNSS loss into the card and
//! waits for ptp4l to see clockClass 7, and finally decodes the capture with
//! tshark (message types, negotiation TLVs, no malformed packets, plausible
//! fields).
//!
//! Needs root (network namespaces), `ip`, `ptp4l`, `pmc`, `setpriv` and
//! `tshark`. Without them the test is skipped loudly, unless the environment
//! variable `CI` is set, in which case it fails. The host clock is never
//! adjusted: ptp4l runs without CAP_SYS_TIME in its bounding set, so every
//! clock adjustment it attempts fails with EPERM (it logs that and carries
//! on), and the test checks the capability is really gone.
//!
//! ptp4l client configuration notes (linuxptp 3.1.1):
//! - `logQueryInterval` is ptp4l's default 2 (4 s unicast timer; override with
//!   `PTP_INTEROP_LOG_QUERY_INTERVAL`). With `unicast_req_duration 10`, ptp4l
//!   3.1.1 sends no Announce renewal while it waits for its Sync/Delay_Resp
//!   grants, so its first Announce grant can run out before the first
//!   renewal. The server therefore expires grants silently after a 1 s grace,
//!   as linuxptp's grantor does; a CANCEL on expiry (ptp4u's behaviour) left
//!   ptp4l SLAVE without ever asking for Sync/Delay_Resp again.
//! - Every wait is bounded; the whole test takes about 35 s.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timecard_driver::InitOptions;
use timecard_sim::{ClockMode, Fault, Sim, SimConfig};

const TAI_UTC_S: f64 = 37.0;

// ---------------------------------------------------------------------------
// Environment checks.

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the test can run here; skips loudly (or fails under `CI`).
fn environment_ok(tools: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    let problem = if !root {
        Some("not running as root (network namespaces need CAP_NET_ADMIN)".to_string())
    } else if !missing.is_empty() {
        Some(format!(
            "missing tools: {} (apt-get install linuxptp tshark iproute2 util-linux)",
            missing.join(", ")
        ))
    } else {
        None
    };
    match problem {
        None => true,
        Some(p) if std::env::var_os("CI").is_some() => panic!("interop test cannot run: {p}"),
        Some(p) => {
            eprintln!("\n*** SKIPPED interop test: {p} ***\n");
            false
        }
    }
}

// ---------------------------------------------------------------------------
// Guards: processes are killed and reaped, namespaces deleted, even on panic.

struct Proc {
    name: &'static str,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Self {
        let out = File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self {
            name,
            child: Some(child),
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).expect("pid fits")
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGINT/SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
    fn stop(&mut self, sig: i32, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if matches!(c.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe { libc::kill(i32::try_from(c.id()).expect("pid"), sig) };
            let end = Instant::now() + grace;
            while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("{} did not stop on signal {sig}; killing it", self.name);
                let _ = c.kill();
            }
        }
        let _ = c.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM, Duration::from_secs(2));
    }
}

struct Netns {
    names: Vec<String>,
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

impl Netns {
    /// Two namespaces joined by a veth pair: `a` gets `.1`, `b` gets `.2`.
    fn pair(a: &str, b: &str, veth_a: &str, veth_b: &str, net: &str) -> Self {
        let mut me = Self { names: vec![] };
        ip(&["netns", "add", a]);
        me.names.push(a.into());
        ip(&["netns", "add", b]);
        me.names.push(b.into());
        ip(&[
            "link", "add", veth_a, "type", "veth", "peer", "name", veth_b,
        ]);
        ip(&["link", "set", veth_a, "netns", a]);
        ip(&["link", "set", veth_b, "netns", b]);
        ip(&[
            "-n",
            a,
            "addr",
            "add",
            &format!("{net}.1/24"),
            "dev",
            veth_a,
        ]);
        ip(&[
            "-n",
            b,
            "addr",
            "add",
            &format!("{net}.2/24"),
            "dev",
            veth_b,
        ]);
        for (ns, dev) in [(a, veth_a), (b, veth_b)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        me
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth pair, and with it the peer.
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers.

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Polls `f` every 250 ms until it returns `Some`, or `timeout`.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `pmc -u -b 0 -s SOCK 'GET WHAT'` as a key → value map (first value wins).
fn pmc(sock: &Path, what: &str) -> BTreeMap<String, String> {
    let out = Command::new("timeout")
        .args(["5", "pmc", "-u", "-b", "0", "-s"])
        .arg(sock)
        .arg(format!("GET {what}"))
        .output()
        .expect("running pmc");
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            m.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    m
}

/// "master offset O sN freq F path delay D" lines of a ptp4l log.
#[derive(Debug, Clone, Copy)]
struct Sample {
    offset_ns: i64,
    state: u8,
    path_delay_ns: i64,
}

fn samples(log: &str) -> Vec<Sample> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("master offset")? + "master offset".len()..];
            let w: Vec<&str> = rest.split_whitespace().collect();
            // [offset, sN, "freq", F, "path", "delay", D]
            if w.len() < 7 || w[4] != "path" || w[5] != "delay" {
                return None;
            }
            Some(Sample {
                offset_ns: w[0].parse().ok()?,
                state: w[1].strip_prefix('s')?.parse().ok()?,
                path_delay_ns: w[6].parse().ok()?,
            })
        })
        .collect()
}

/// CapBnd of a process has CAP_SYS_TIME (bit 25)?
fn has_cap_sys_time(pid: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let bnd = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    let v = u64::from_str_radix(bnd.trim(), 16).ok()?;
    Some(v & (1 << 25) != 0)
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// One decoded packet of the capture.
#[derive(Debug)]
struct Pkt {
    time: f64,
    src: String,
    msg_type: String,
    tlv_types: Vec<String>,
    gm_class: Option<u8>,
    fu_seconds: Option<f64>,
    clock_identity: String,
    expert: String,
}

fn tshark_fields(pcap: &Path) -> Vec<Pkt> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "aggregator=,",
            "-E",
            "occurrence=a",
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.src",
            "-e",
            "ptp.v2.messagetype",
            "-e",
            "ptp.v2.sig.tlv.tlvType",
            "-e",
            "ptp.v2.an.grandmasterclockclass",
            "-e",
            "ptp.v2.fu.preciseorigintimestamp.seconds",
            "-e",
            "ptp.v2.clockidentity",
            "-e",
            "_ws.expert.message",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("running tshark -r");
    assert!(out.status.success(), "tshark -r failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(8, '|').collect();
            if f.len() < 8 {
                return None;
            }
            Some(Pkt {
                time: f[0].parse().ok()?,
                src: f[1].to_string(),
                msg_type: f[2].to_string(),
                tlv_types: f[3]
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                gm_class: f[4].parse().ok(),
                fu_seconds: f[5].parse().ok(),
                clock_identity: f[6].to_string(),
                expert: f[7].to_string(),
            })
        })
        .collect()
}

fn tshark_count(pcap: &Path, filter: &str) -> usize {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", filter])
        .stderr(Stdio::null())
        .output()
        .expect("running tshark -r -Y");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

// ---------------------------------------------------------------------------

#[test]
fn ptp4l_unicast_client_and_tshark_against_ptp_server() {
    if !environment_ok(&["ip", "ptp4l", "pmc", "setpriv", "tshark", "timeout"]) {
        return;
    }
    let started = Instant::now();
    let pid = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns_a, ns_b) = (format!("ptpiA{pid}"), format!("ptpiB{pid}"));
    let (veth_a, veth_b) = (format!("pia{pid}"), format!("pib{pid}"));
    let net = format!("10.{}.{}", 100 + (pid >> 8) % 100, pid % 250);
    let server_ip = format!("{net}.1");
    // A clock identity of our own, so the test does not depend on how the
    // server derives one.
    let identity = format!(
        "02{:04x}.fffe.{:06x}",
        (pid >> 24) & 0xffff,
        pid & 0xff_ffff
    );
    let identity_plain = identity.replace('.', "");

    // Safety net for the host clock: setpriv really removes CAP_SYS_TIME.
    let probe = Command::new("setpriv")
        .args(["--bounding-set", "-sys_time", "--inh-caps", "-sys_time"])
        .args(["grep", "CapBnd", "/proc/self/status"])
        .output()
        .expect("setpriv");
    let bnd = String::from_utf8_lossy(&probe.stdout);
    let bnd = u64::from_str_radix(bnd.trim_start_matches("CapBnd:").trim(), 16)
        .expect("CapBnd from setpriv");
    assert_eq!(bnd & (1 << 25), 0, "setpriv did not drop CAP_SYS_TIME");

    // The card: a real-time simulator in a shared-memory file, brought up
    // with the driver as ptp_ocp's probe would (the server only serves it).
    let bar = dir.path().join("card.bar");
    let sim = Sim::create_file(
        &bar,
        &SimConfig {
            mode: ClockMode::Realtime { acceleration: 1.0 },
            ..SimConfig::default()
        },
    )
    .expect("simulator file");
    let card_created = Instant::now();
    {
        let card = timecard_driver::device::open_sim(sim.clone()).expect("driver on the sim");
        card.init(InitOptions::default()).expect("card init");
    }

    let netns = Netns::pair(&ns_a, &ns_b, &veth_a, &veth_b, &net);

    // Server in A.
    let server_log = dir.path().join("server.log");
    let mut server = Proc::spawn(
        "ptp-server",
        Command::new("ip")
            .args(["netns", "exec", &ns_a, env!("CARGO_BIN_EXE_ptp-server")])
            .arg("--device")
            .arg(format!("sim:{}", bar.display()))
            .args(["--ip", &server_ip, "--monitoring", "127.0.0.1:0"])
            .args(["--quality-window", "3", "--clock-identity", &identity])
            .args(["--duration", "85"]),
        &server_log,
    );
    let banner = wait_for(Duration::from_secs(10), || {
        read(&server_log)
            .lines()
            .find(|l| l.starts_with("ptp-server: serving"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("server did not start:\n{}", read(&server_log)));
    assert!(
        banner.contains(&format!("clock identity {identity}")),
        "{banner}"
    );
    let monitor = banner
        .split("stats on http://")
        .nth(1)
        .map(|s| s.trim_end_matches('/').to_string());

    // Capture in B, started before the client so the negotiation is in it.
    let pcap = dir.path().join("session.pcap");
    let tshark_log = dir.path().join("tshark.log");
    let mut tshark = Proc::spawn(
        "tshark",
        Command::new("ip")
            .args(["netns", "exec", &ns_b, "tshark", "-i", &veth_b])
            .args([
                "-f",
                "udp port 319 or udp port 320",
                "-a",
                "duration:85",
                "-w",
            ])
            .arg(&pcap),
        &tshark_log,
    );
    wait_for(Duration::from_secs(15), || {
        read(&tshark_log).contains("Capturing on").then_some(())
    })
    .unwrap_or_else(|| panic!("tshark did not start:\n{}", read(&tshark_log)));

    // ptp4l client in B, with ptp4l's default unicast timer (see the top).
    let log_query_interval: i32 = std::env::var("PTP_INTEROP_LOG_QUERY_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let uds = dir.path().join("ptp4l.sock");
    let cfg = dir.path().join("client.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[global]\n\
             slaveOnly               1\n\
             free_running            0\n\
             time_stamping           software\n\
             network_transport       UDPv4\n\
             domainNumber            0\n\
             uds_address             {uds}\n\
             logging_level           6\n\
             unicast_req_duration    10\n\
             pi_proportional_const   0.7\n\
             pi_integral_const       0.3\n\
             \n\
             [unicast_master_table]\n\
             table_id                1\n\
             logQueryInterval        {log_query_interval}\n\
             UDPv4                   {server_ip}\n\
             \n\
             [{veth_b}]\n\
             unicast_master_table    1\n",
            uds = uds.display()
        ),
    )
    .expect("client.cfg");
    let client_log = dir.path().join("ptp4l.log");
    let mut client = Proc::spawn(
        "ptp4l",
        Command::new("ip")
            .args(["netns", "exec", &ns_b])
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
            .args(["-i", &veth_b, "-S", "-m"]),
        &client_log,
    );
    // Once exec'd into ptp4l, the process must lack CAP_SYS_TIME.
    let cpid = client.pid();
    let exec_seen = wait_for(Duration::from_secs(5), || {
        (comm(cpid) == "ptp4l").then_some(())
    });
    assert!(
        exec_seen.is_some(),
        "ptp4l did not start: {}",
        read(&client_log)
    );
    assert_eq!(
        has_cap_sys_time(cpid),
        Some(false),
        "ptp4l must run without CAP_SYS_TIME"
    );

    let diag = |what: &str| -> String {
        format!(
            "{what}\n--- ptp4l log ---\n{}\n--- server log ---\n{}",
            read(&client_log)
                .lines()
                .filter(|l| !l.contains("Operation not permitted"))
                .collect::<Vec<_>>()
                .join("\n"),
            read(&server_log)
        )
    };

    // 1. ptp4l locks onto the server: SLAVE, offsets with a positive path delay.
    let slave = wait_for(Duration::from_secs(30), || {
        let log = read(&client_log);
        let s2 = samples(&log).iter().filter(|s| s.state == 2).count();
        (log.contains("UNCALIBRATED to SLAVE") && s2 >= 3).then_some(())
    });
    assert!(slave.is_some(), "{}", diag("ptp4l did not reach SLAVE"));
    let t_slave = started.elapsed();
    assert!(client.running(), "{}", diag("ptp4l exited"));
    let port = pmc(&uds, "PORT_DATA_SET");
    assert_eq!(
        port.get("portState").map(String::as_str),
        Some("SLAVE"),
        "{port:?}"
    );

    // 2. Parent and time properties data sets describe our server, and once
    //    the card is locked (about 7 s after power-on) it is clockClass 6.
    let locked = wait_for(Duration::from_secs(20), || {
        let p = pmc(&uds, "PARENT_DATA_SET");
        (p.get("gm.ClockClass").map(String::as_str) == Some("6")).then_some(p)
    });
    let t_locked = card_created.elapsed();
    let parent = locked.unwrap_or_else(|| {
        panic!(
            "{}",
            diag(&format!(
                "gm.ClockClass never became 6: {:?}",
                pmc(&uds, "PARENT_DATA_SET")
            ))
        )
    });
    assert_eq!(
        parent
            .get("grandmasterIdentity")
            .map(|s| s.replace('.', "")),
        Some(identity_plain.clone()),
        "{parent:?}"
    );
    assert_eq!(
        parent.get("parentPortIdentity").map(String::as_str),
        Some(format!("{identity}-1").as_str()),
        "{parent:?}"
    );
    let tp = pmc(&uds, "TIME_PROPERTIES_DATA_SET");
    for (k, v) in [
        ("currentUtcOffset", "37"),
        ("currentUtcOffsetValid", "1"),
        ("ptpTimescale", "1"),
    ] {
        assert_eq!(tp.get(k).map(String::as_str), Some(v), "{k} in {tp:?}");
    }
    let current = pmc(&uds, "CURRENT_DATA_SET");
    assert_eq!(current.get("stepsRemoved").map(String::as_str), Some("1"));

    // Offsets: the card is anchored to the host clock, which ptp4l also uses,
    // so the measured offset is the server's timestamp mapping error (µs).
    let log = read(&client_log);
    let s: Vec<Sample> = samples(&log);
    assert!(
        s.iter().all(|x| x.path_delay_ns > 0),
        "{}",
        diag("path delay not positive")
    );
    let mut offs: Vec<i64> = s
        .iter()
        .filter(|x| x.state == 2)
        .map(|x| x.offset_ns.abs())
        .collect();
    offs.sort_unstable();
    let median_offset = offs[offs.len() / 2];
    assert!(
        median_offset < 100_000,
        "{}",
        diag(&format!("median |master offset| {median_offset} ns"))
    );

    // 3. GNSS lost: the card goes into holdover; ptp4l sees clockClass 7.
    let loss_at = Instant::now();
    sim.inject(&Fault::GnssLoss);
    let holdover = wait_for(Duration::from_secs(25), || {
        (pmc(&uds, "PARENT_DATA_SET")
            .get("gm.ClockClass")
            .map(String::as_str)
            == Some("7"))
        .then_some(())
    });
    assert!(
        holdover.is_some(),
        "{}",
        diag(&format!(
            "gm.ClockClass did not become 7 after GNSS loss: {:?}",
            pmc(&uds, "PARENT_DATA_SET")
        ))
    );
    let t_holdover = loss_at.elapsed();
    // A few more seconds of traffic in holdover, then the client still syncs.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        client.running() && server.running(),
        "{}",
        diag("a process died")
    );
    let s_after = samples(&read(&client_log)).len();
    assert!(s_after > s.len(), "{}", diag("no samples in holdover"));
    // Grants were renewed in time all along: the server never had to cancel one.
    assert!(
        !read(&client_log).contains("server unilaterally canceled"),
        "{}",
        diag("the server cancelled a grant while ptp4l was using it")
    );

    // Server statistics, if a client for its monitoring port is available.
    let stats = monitor.as_deref().and_then(|m| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns_a, "curl", "-s", "--max-time", "3"])
            .arg(format!("http://{m}/"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });

    // Stop everything (capture last so it holds the CANCELs of the shutdown).
    client.stop(libc::SIGTERM, Duration::from_secs(3));
    server.stop(libc::SIGTERM, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    tshark.stop(libc::SIGINT, Duration::from_secs(5));
    let server_out = read(&server_log);
    assert!(
        server_out.contains("cancelling subscriptions and stopping"),
        "server did not shut down cleanly:\n{server_out}"
    );

    if let Some(j) = &stats {
        eprintln!("server stats: {j}");
        for k in [
            "\"rx.malformed\":0",
            "\"txts.missing\":0",
            "\"tx.errors\":0",
        ] {
            assert!(j.contains(k), "{k} expected in {j}");
        }
    } else {
        eprintln!("(no curl in netns: server statistics not checked)");
    }

    // 4. tshark decodes every packet of the session.
    let pkts = tshark_fields(&pcap);
    assert!(pkts.len() > 20, "capture too small: {} packets", pkts.len());
    let from_server: Vec<&Pkt> = pkts.iter().filter(|p| p.src == server_ip).collect();
    let from_client: Vec<&Pkt> = pkts.iter().filter(|p| p.src != server_ip).collect();
    let types = |v: &[&Pkt]| -> BTreeSet<String> { v.iter().map(|p| p.msg_type.clone()).collect() };
    let (st, ct) = (types(&from_server), types(&from_client));
    for t in ["0x00", "0x08", "0x09", "0x0b", "0x0c"] {
        assert!(st.contains(t), "server sent no messagetype {t}: {st:?}");
    }
    for t in ["0x01", "0x0c"] {
        assert!(ct.contains(t), "client sent no messagetype {t}: {ct:?}");
    }
    let tlvs = |v: &[&Pkt]| -> BTreeSet<String> {
        v.iter()
            .filter(|p| p.msg_type == "0x0c")
            .flat_map(|p| p.tlv_types.clone())
            .collect()
    };
    assert!(tlvs(&from_client).contains("4"), "no REQUEST TLV decoded");
    assert!(tlvs(&from_server).contains("5"), "no GRANT TLV decoded");
    // The display filter works (positive control), and finds nothing malformed.
    assert_eq!(
        tshark_count(&pcap, "ptp"),
        pkts.len(),
        "every packet is PTP"
    );
    let malformed = tshark_count(&pcap, "_ws.malformed");
    assert_eq!(malformed, 0, "tshark found malformed packets");
    let expert: BTreeSet<&str> = pkts
        .iter()
        .map(|p| p.expert.as_str())
        .filter(|e| !e.is_empty())
        .collect();
    eprintln!("tshark expert messages: {expert:?}");
    // Server packets carry our clock identity.
    let want_id = format!("0x{identity_plain}");
    assert!(
        from_server.iter().all(|p| p.clock_identity == want_id),
        "server packets with another clockIdentity than {want_id}"
    );
    // Announce clockClass: 6 while locked, 7 in holdover.
    let classes: BTreeSet<u8> = from_server.iter().filter_map(|p| p.gm_class).collect();
    assert!(classes.contains(&6) && classes.contains(&7), "{classes:?}");
    // Follow_Up preciseOriginTimestamp: TAI, i.e. capture time + 37 s.
    let fus: Vec<(f64, f64)> = from_server
        .iter()
        .filter_map(|p| p.fu_seconds.map(|s| (p.time, s)))
        .collect();
    assert!(fus.len() >= 5, "too few Follow_Up: {}", fus.len());
    for (t, s) in &fus {
        assert!(
            (s - (t + TAI_UTC_S)).abs() < 5.0,
            "Follow_Up preciseOriginTimestamp {s} s vs capture time {t} + 37 s"
        );
    }
    assert!((now_s() - fus[0].0).abs() < 120.0);

    drop(netns);
    eprintln!(
        "interop: SLAVE after {:.1} s, clockClass 6 {:.1} s after card power-on, clockClass 7 {:.1} s after GNSS loss, \
         median |offset| {median_offset} ns, {} packets decoded, total {:.1} s",
        t_slave.as_secs_f64(),
        t_locked.as_secs_f64(),
        t_holdover.as_secs_f64(),
        pkts.len(),
        started.elapsed().as_secs_f64()
    );
}
