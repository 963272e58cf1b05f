//! Interoperability: the real `gpsd` daemon reads the simulator's GNSS
//! pseudo-terminal, and `gpspipe -w` shows the fix and the time it decoded.
//!
//! Needs the Debian packages `gpsd` and `gpsd-clients` (and `setpriv` from
//! util-linux, `timeout` from coreutils). Without them the test is skipped
//! loudly, or fails when `CI` is set. gpsd runs with `CAP_SYS_TIME` removed so
//! it can never touch the host clock.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use timecard_sim::pty::GnssPty;
use timecard_sim::runner::Runner;
use timecard_sim::{ClockMode, Sim, SimConfig, TAI_UTC_NOW};

const NS_PER_S: i64 = 1_000_000_000;
/// Runner tick: NMEA for a second leaves at most this long after the second begins.
const TICK: Duration = Duration::from_millis(20);
/// Budget up to the fix; every wait is bounded by it, and teardown adds at
/// most ~6 s (2 s SIGTERM grace each for gpspipe and gpsd, 2 s for the reader).
const BUDGET: Duration = Duration::from_secs(22);
/// Linux capability number of `CAP_SYS_TIME`.
const CAP_SYS_TIME: u32 = 25;
/// Linux capability number of `CAP_SETPCAP` (needed to shrink the bounding set).
const CAP_SETPCAP: u32 = 8;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// gpsd's ISO 8601 UTC time (`2026-11-25T17:24:43.000Z`) → Unix ns.
fn parse_iso8601_utc(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let m: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if t.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>().ok()? * 10_i64.pow(9 - frac.len() as u32)
    };
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec;
    Some(secs * NS_PER_S + frac_ns)
}

/// An executable on `PATH` or in the sbin directories (gpsd lives in /usr/sbin).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A capability mask line (`CapEff:`, `CapBnd:`) of `/proc/<pid>/status`.
fn cap_mask(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

fn has_cap(mask: u64, cap: u32) -> bool {
    mask & (1 << cap) != 0
}

/// System V shared-memory keys gpsd creates when run as root: "NTP0".."NTP7"
/// (NTP refclock feed) and "GPSD" (client export). They outlive gpsd, which
/// cannot remove them after dropping privileges.
const GPSD_SHM_KEYS: [libc::key_t; 9] = [
    0x4e54_5030,
    0x4e54_5031,
    0x4e54_5032,
    0x4e54_5033,
    0x4e54_5034,
    0x4e54_5035,
    0x4e54_5036,
    0x4e54_5037,
    0x4750_5344,
];

fn shm_id(key: libc::key_t) -> Option<libc::c_int> {
    // SAFETY: shmget with size 0 and no flags only looks the key up.
    let id = unsafe { libc::shmget(key, 0, 0) };
    (id >= 0).then_some(id)
}

/// On drop (after gpsd is gone, however the test ends) removes the gpsd
/// segments that did not exist when it was made and that nobody has attached,
/// leaving anyone else's alone.
struct ShmCleanup {
    existed: [bool; GPSD_SHM_KEYS.len()],
}

impl ShmCleanup {
    fn new() -> Self {
        Self {
            existed: GPSD_SHM_KEYS.map(|k| shm_id(k).is_some()),
        }
    }
}

impl Drop for ShmCleanup {
    fn drop(&mut self) {
        remove_new_gpsd_shm(&self.existed);
    }
}

fn remove_new_gpsd_shm(existed: &[bool]) {
    for (key, existed) in GPSD_SHM_KEYS.iter().zip(existed) {
        let Some(id) = shm_id(*key).filter(|_| !existed) else {
            continue;
        };
        // SAFETY: shmid_ds is plain data; IPC_STAT fills it for a valid id.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is valid and writable for the duration of the call.
        let stat = unsafe { libc::shmctl(id, libc::IPC_STAT, &raw mut ds) };
        if stat == 0 && ds.shm_nattch == 0 {
            // SAFETY: IPC_RMID takes no buffer; it only marks the segment for removal.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

/// A child process that is killed and reaped however the test ends.
struct Reaped(Option<Child>);

impl Reaped {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until drop")
    }

    /// Stops the child if still running (SIGTERM, which `timeout` forwards to
    /// gpspipe; SIGKILL after 2 s) and reaps it. Returns whether it had
    /// already exited by itself.
    fn kill_and_wait(&mut self) -> bool {
        let Some(mut child) = self.0.take() else {
            return false;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) has no memory effects; `pid` is our own unreaped
            // child, so the id cannot have been recycled.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// What the reader thread saw: a gpspipe line with truth UTC at the moment it was read.
enum Event {
    Line { json: String, truth_utc_ns: i64 },
    Eof,
}

#[test]
fn gpsd_decodes_simulator_time_from_the_pty() {
    let started = Instant::now();
    let deadline = started + BUDGET;

    let programs = ["gpsd", "gpspipe", "setpriv", "timeout"].map(|p| (p, find_program(p)));
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(_, path)| path.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "{} not found; install the Debian packages gpsd and gpsd-clients \
             (setpriv: util-linux, timeout: coreutils)",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            panic!("CI must install gpsd for this test: {msg}");
        }
        // Written to the stderr handle directly: libtest captures eprintln!
        // of passing tests, and a skip must be visible without --nocapture.
        let banner = "=".repeat(72);
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n{banner}\nSKIPPED: gpsd not installed ({msg})\n{banner}\n"
        );
        return;
    }
    let [gpsd, gpspipe, setpriv, timeout] = programs.map(|(_, p)| p.expect("checked above"));

    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("gnss0");
    let control = dir.path().join("gpsd.sock");
    let gpsd_log = dir.path().join("gpsd.log");

    let sim = Sim::new(&SimConfig {
        mode: ClockMode::Realtime { acceleration: 1.0 },
        ..SimConfig::default()
    })
    .expect("sim");
    let pty = GnssPty::open(Some(&link)).expect("open pty");
    let runner = Runner::spawn(sim.clone(), pty, TICK);

    // Never let gpsd near the host clock: drop CAP_SYS_TIME from its bounding
    // set (needs CAP_SETPCAP, i.e. root); an unprivileged caller cannot hold
    // CAP_SYS_TIME anyway, and no_new_privs stops it gaining it on exec.
    let own = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let can_drop_bounding = cap_mask(&own, "CapEff:").is_some_and(|m| has_cap(m, CAP_SETPCAP));
    let cap_args: &[&str] = if can_drop_bounding {
        &["--bounding-set", "-sys_time", "--inh-caps", "-sys_time"]
    } else {
        &["--no-new-privs", "--inh-caps", "-sys_time"]
    };

    // Start gpsd on a free port; retry if another process grabbed the port in between.
    // Declared before the gpsd handle, so it is dropped after gpsd is reaped.
    let _shm_cleanup = ShmCleanup::new();
    let gpsd_spawned = Instant::now();
    let mut daemon = None;
    for attempt in 1..=3 {
        let port = free_tcp_port();
        let log = File::create(&gpsd_log).expect("gpsd log file");
        let mut child = Reaped(Some(
            Command::new(&setpriv)
                .args(cap_args)
                .arg(&gpsd)
                .args(["-N", "-n", "-D", "2", "-F"])
                .arg(&control)
                .arg("-S")
                .arg(port.to_string())
                .arg(&link)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("spawn setpriv gpsd"),
        ));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listen_by = (Instant::now() + Duration::from_secs(5)).min(deadline);
        let up = loop {
            if let Ok(Some(status)) = child.child().try_wait() {
                eprintln!(
                    "gpsd attempt {attempt} on port {port} exited early ({status}):\n{}",
                    log_tail(&gpsd_log)
                );
                break false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break true;
            }
            if Instant::now() >= listen_by {
                panic!(
                    "gpsd did not listen on {addr} within 5 s:\n{}",
                    log_tail(&gpsd_log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if up {
            daemon = Some((child, port));
            break;
        }
    }
    let (mut gpsd_child, port) = daemon.expect("gpsd failed to start three times");
    let gpsd_startup = gpsd_spawned.elapsed();
    let gpsd_pid = gpsd_child.child().id();

    // gpspipe prints JSON reports; a thread stamps each line with truth UTC as
    // soon as it arrives, so the comparison does not depend on our scheduling.
    let mut pipe = Reaped(Some(
        Command::new(&timeout)
            .arg("20")
            .arg(&gpspipe)
            .args(["-w", "-n", "12"])
            .arg(format!("localhost:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gpspipe"),
    ));
    let stdout = pipe.child().stdout.take().expect("gpspipe stdout");
    let (tx, rx) = mpsc::channel();
    let stamper = {
        let sim = sim.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(json) = line else { break };
                let truth_utc_ns = sim.truth_tai_ns() - i64::from(TAI_UTC_NOW) * NS_PER_S;
                if tx.send(Event::Line { json, truth_utc_ns }).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Eof);
        })
    };

    let mut transcript = Vec::new();
    let mut nmea_driver = false;
    let mut tpv: Option<(Value, i64)> = None;
    while !(nmea_driver && tpv.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match rx.recv_timeout(left) {
            Ok(e) => e,
            Err(_) => Event::Eof,
        };
        let Event::Line { json, truth_utc_ns } = event else {
            panic!(
                "gpspipe ended (or the {BUDGET:?} budget ran out) before a fix and a \
                 NMEA0183 device were reported; nmea_driver={nmea_driver}, tpv={tpv:?}\n\
                 gpspipe:\n{}\ngpsd log:\n{}",
                transcript.join("\n"),
                log_tail(&gpsd_log)
            );
        };
        transcript.push(json.clone());
        let v: Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("gpspipe printed non-JSON {json:?}: {e}"));
        let devices: Vec<&Value> = match v["class"].as_str() {
            Some("DEVICE") => vec![&v],
            Some("DEVICES") => v["devices"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for d in devices {
            if d["driver"].as_str() == Some("NMEA0183") {
                assert_eq!(
                    d["path"].as_str(),
                    link.to_str(),
                    "device path should be the pty link: {json}"
                );
                nmea_driver = true;
            }
        }
        if tpv.is_none()
            && v["class"] == "TPV"
            && v["mode"].as_i64().is_some_and(|m| m >= 2)
            && v["time"].is_string()
        {
            tpv = Some((v, truth_utc_ns));
        }
    }

    let (tpv, truth_utc_ns) = tpv.expect("loop exits only with a TPV");
    let time = tpv["time"].as_str().expect("time is a string");
    let tpv_ns = parse_iso8601_utc(time).unwrap_or_else(|| panic!("bad TPV time {time:?}"));
    let diff_ns = truth_utc_ns - tpv_ns;
    assert!(
        diff_ns.abs() < NS_PER_S,
        "gpsd TPV time {time} is {:.3} s from the simulator's truth UTC\nTPV: {tpv}",
        diff_ns as f64 / 1e9
    );
    assert_eq!(tpv["device"].as_str(), link.to_str(), "TPV device: {tpv}");

    // Safety net check: the daemon (setpriv exec'd it, same pid) really runs
    // without CAP_SYS_TIME.
    let status =
        std::fs::read_to_string(format!("/proc/{gpsd_pid}/status")).expect("gpsd still running");
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Name:", "gpsd"])),
        "pid {gpsd_pid} is not gpsd:\n{status}"
    );
    let cap_eff = cap_mask(&status, "CapEff:").expect("CapEff in status");
    let cap_bnd = cap_mask(&status, "CapBnd:").expect("CapBnd in status");
    assert!(!has_cap(cap_eff, CAP_SYS_TIME), "gpsd holds CAP_SYS_TIME");
    if can_drop_bounding {
        assert!(
            !has_cap(cap_bnd, CAP_SYS_TIME),
            "CAP_SYS_TIME still in gpsd's bounding set"
        );
    }

    // Teardown: gpspipe, then gpsd, each stopped through its Child and reaped;
    // then the sim.
    pipe.kill_and_wait();
    assert!(
        !gpsd_child.kill_and_wait(),
        "gpsd exited on its own:\n{}",
        log_tail(&gpsd_log)
    );
    drop(rx);
    let until = Instant::now() + Duration::from_secs(2);
    while !stamper.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if stamper.is_finished() {
        stamper.join().expect("stamper thread");
    }
    drop(runner);
    let dir_path = dir.path().to_path_buf();
    dir.close().expect("remove tempdir");
    assert!(!dir_path.exists());
    eprintln!(
        "gpsd interop ok: TPV {time} mode {} is {:.3} s behind truth; gpsd listening after \
         {:.2} s (CapEff {cap_eff:016x}, CapBnd {cap_bnd:016x}); {} gpspipe lines; {:.1} s",
        tpv["mode"],
        diff_ns as f64 / 1e9,
        gpsd_startup.as_secs_f64(),
        transcript.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn iso8601_parser() {
    let base = days_from_civil(2026, 11, 25) * 86_400 + 17 * 3600 + 24 * 60 + 43;
    assert_eq!(
        parse_iso8601_utc("2026-11-25T17:24:43.000Z"),
        Some(base * NS_PER_S)
    );
    assert_eq!(
        parse_iso8601_utc("2026-11-25T17:24:43.25Z"),
        Some(base * NS_PER_S + 250_000_000)
    );
    assert_eq!(
        parse_iso8601_utc("2026-11-25T17:24:43Z"),
        Some(base * NS_PER_S)
    );
    assert_eq!(parse_iso8601_utc("2026-11-25T17:24:43.000"), None);
    assert_eq!(parse_iso8601_utc("2026-13-25T17:24:43Z"), None);
    // 2026-11-25 is 20_782 days after the epoch (cross-checked with `date -d`).
    assert_eq!(days_from_civil(2026, 11, 25), 20_782);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
}
