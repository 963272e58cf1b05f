//! `timecard chrony` against the real chronyd: Debian's chrony 4.3, extracted
//! from the package without installing it (`~/.cache/timecard/chrony`, as
//! `scripts/test.sh` does; the test does it itself when missing), run with
//! `-x` (never touches the clock) under `setpriv --bounding-set -sys_time`
//! (the kernel refuses every clock change anyway), in a private 0700
//! directory with its command socket there and no network ports.
//!
//! Two feeders of chronyd's `refclock SOCK`: `timecard chrony`, beside a
//! simulated card (`timecard sim`) brought up and supervised by `timecard
//! watch`; and `timecard up --chrony-sock`, the card's owner feeding chronyd
//! from its PTP server's card sampler (as it must for a card behind
//! vfio-pci, which one process owns). The test asserts that chronyd selects the refclock, that
//! chronyd's estimate of the system clock's offset (`chronyc tracking`'s
//! "System time", the correction chronyd would apply) equals the card's UTC
//! minus the system clock as the simulator's ground truth has it, with a
//! known 400 µs PPS phase offset injected into the card, and that the card's
//! leap-second announcement reaches chronyd. Finally, the kernel's clock
//! discipline state (read-only `adjtimex`) is as before.
//!
//! Without chronyd the test fails, unless `TIMECARD_SKIP_CHRONY=1` says to
//! skip it (and it says so on stderr).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use timecard_sim::Sim;

mod common;
use common::{Killed, Scratch, wait_for};

/// chronyd's estimate and ground truth must agree this closely, s. The
/// exporter's samples are card latches bracketed by the system clock (a few
/// µs through the shared-memory file), the ground truth is a snapshot
/// bracketed the same way, and chronyd's median filter and regression
/// smooth the scheduling noise of a loaded 2-core CI machine; 50 µs is
/// well above that noise and well below the 400 µs offset injected.
const TOLERANCE_S: f64 = 50e-6;
/// The PPS phase offset injected into the simulated GNSS receiver, ns.
const INJECTED_NS: i64 = 400_000;

/// chronyd and chronyc: `$TIMECARD_CHRONYD`/`$TIMECARD_CHRONYC`, or Debian's
/// package extracted (not installed) into `~/.cache/timecard/chrony`.
/// `None` only when `TIMECARD_SKIP_CHRONY=1`.
fn chrony() -> Option<(PathBuf, PathBuf)> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let cache = home.join(".cache/timecard/chrony");
    let chronyd = std::env::var_os("TIMECARD_CHRONYD")
        .map_or_else(|| cache.join("x/usr/sbin/chronyd"), PathBuf::from);
    let chronyc = std::env::var_os("TIMECARD_CHRONYC")
        .map_or_else(|| cache.join("x/usr/bin/chronyc"), PathBuf::from);
    if !chronyd.exists() && std::env::var_os("TIMECARD_CHRONYD").is_none() {
        // The same idempotent step as scripts/test.sh: download, extract, never install.
        let _ = std::fs::create_dir_all(&cache);
        let script = "rm -f chrony_*.deb && timeout 120 apt-get download chrony && dpkg-deb -x chrony_*.deb x";
        let o = Command::new("sh")
            .args(["-c", script])
            .current_dir(&cache)
            .output();
        if let Ok(o) = &o
            && !o.status.success()
        {
            eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    if chronyd.exists() && chronyc.exists() {
        return Some((chronyd, chronyc));
    }
    assert!(
        std::env::var("TIMECARD_SKIP_CHRONY").as_deref() == Ok("1"),
        "chronyd not found at {} (chronyc {}): run scripts/test.sh, or `apt-get download chrony && \
         dpkg-deb -x chrony_*.deb x` in {}, or set TIMECARD_CHRONYD/TIMECARD_CHRONYC; \
         TIMECARD_SKIP_CHRONY=1 skips this test",
        chronyd.display(),
        chronyc.display(),
        cache.display()
    );
    eprintln!("SKIPPED: chronyd not available and TIMECARD_SKIP_CHRONY=1");
    None
}

/// The kernel's clock discipline state, read only (`adjtimex` with modes 0).
fn kernel_clock() -> (i64, i64, i32, i64) {
    // SAFETY: timex is plain data, all-zero is valid (modes 0 = read only).
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid, writable timex; modes 0 asks the kernel to change nothing.
    let rc = unsafe { libc::adjtimex(&raw mut t) };
    assert!(rc >= 0, "adjtimex: {}", std::io::Error::last_os_error());
    (t.offset, t.freq, t.status, t.tick)
}

/// `chronyc -h SOCK -n -c ARGS`.
fn chronyc(chronyc: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new(chronyc)
        .arg("-h")
        .arg(sock)
        .args(["-n", "-c"])
        .args(args)
        .output()
        .expect("run chronyc")
}

/// `chronyc tracking` as CSV fields.
fn tracking(bin: &Path, sock: &Path) -> Vec<String> {
    let o = chronyc(bin, sock, &["tracking"]);
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Ground truth: the card's UTC minus the system clock now, s.
fn truth_offset(sim: &Sim) -> f64 {
    let before = realtime_ns();
    let s = sim.snapshot();
    let after = realtime_ns();
    let card_utc = s.card_ns - i64::from(s.gnss.tai_utc_s) * 1_000_000_000;
    (card_utc - (before + after) / 2) as f64 / 1e9
}

fn realtime_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_nanos()).unwrap()
}

/// Waits until chronyd's "System time" correction agrees with ground truth;
/// returns (chrony's, truth's, seconds waited).
fn agree(bin: &Path, sock: &Path, sim: &Sim, limit: Duration) -> (f64, f64, f64) {
    let start = Instant::now();
    let mut last = (f64::NAN, f64::NAN);
    loop {
        let t = tracking(bin, sock);
        let truth = truth_offset(sim);
        if let Some(Ok(chrony)) = t.get(4).map(|s| s.parse::<f64>()) {
            last = (chrony, truth);
            if t[1] == "TCRD" && (chrony - truth).abs() <= TOLERANCE_S {
                return (chrony, truth, start.elapsed().as_secs_f64());
            }
        }
        assert!(
            start.elapsed() < limit,
            "chronyd's System time {:+.9} s never came within {TOLERANCE_S} s of the truth {:+.9} s in {limit:?}; tracking: {t:?}",
            last.0,
            last.1
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Who feeds chronyd in a test.
#[derive(Clone, Copy, Debug)]
enum Feeder {
    /// `timecard chrony`, a process of its own, while `timecard watch`
    /// owns and supervises the card (a simulator process).
    Separate,
    /// `timecard up --chrony-sock`: the card's one owner (simulator, PTP
    /// server and supervisor in one process) feeds chronyd itself, as it
    /// must for a card behind vfio-pci.
    Owner,
}

#[test]
fn chronyd_selects_the_card_fed_by_timecard_chrony_and_agrees_with_ground_truth() {
    chronyd_follows_the_card(Feeder::Separate);
}

#[test]
fn chronyd_selects_the_card_fed_by_its_owner_timecard_up_and_agrees_with_ground_truth() {
    chronyd_follows_the_card(Feeder::Owner);
}

/// Brings up the card, injects a known offset, starts chronyd and the
/// feeder, and checks selection, agreement with ground truth and the leap
/// announcement.
fn chronyd_follows_the_card(feeder: Feeder) {
    let Some((chronyd, chronyc_bin)) = chrony() else {
        return;
    };
    let kernel_before = kernel_clock();
    let dir = Scratch::private(match feeder {
        Feeder::Separate => "chrony-separate",
        Feeder::Owner => "chrony-owner",
    });
    let bar = dir.path("card.bar");
    let bar_arg = bar.to_str().unwrap().to_owned();
    let device = format!("sim:{bar_arg}");
    let timecard = env!("CARGO_BIN_EXE_timecard");
    let refclock = dir.path("timecard.sock");
    let cmdsock = dir.path("chronyd.sock");

    // The card: a simulator process supervised by `watch`, or `up`.
    let card_out = dir.path("card.out");
    let card_procs: Vec<Killed> = match feeder {
        Feeder::Separate => {
            let sim = Killed(
                Command::new(timecard)
                    .args(["sim", "--bar", &bar_arg, "--duration", "170s"])
                    .stdout(std::fs::File::create(&card_out).unwrap())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start timecard sim"),
            );
            wait_for(Duration::from_secs(20), "the simulator", || {
                let text = std::fs::read_to_string(&card_out).unwrap_or_default();
                text.contains("Stops after").then_some(())
            });
            let owner = Killed(
                Command::new(timecard)
                    .args(["watch", "--device", &device])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start timecard watch"),
            );
            vec![sim, owner]
        }
        Feeder::Owner => {
            let up = Killed(
                Command::new(timecard)
                    .args(["--log-level", "warn,ptp_server::source=info"])
                    .args(["up", "--bar", &bar_arg, "--duration", "170s"])
                    .args([
                        "--no-fbclock",
                        "--no-counter",
                        "--no-notify",
                        "--no-dashboard",
                    ])
                    .args(["--ptp-port", "0", "--ptp-monitoring", "off", "--json"])
                    .arg("--chrony-sock")
                    .arg(&refclock)
                    .stdout(std::fs::File::create(&card_out).unwrap())
                    .stderr(std::fs::File::create(dir.path("up.log")).unwrap())
                    .spawn()
                    .expect("start timecard up"),
            );
            wait_for(Duration::from_secs(20), "timecard up", || {
                // With --json the banner goes to stderr, the live view to stdout.
                let text = std::fs::read_to_string(dir.path("up.log")).unwrap_or_default();
                (bar.exists() && text.contains("feeding chronyd's refclock SOCK")).then_some(())
            });
            vec![up]
        }
    };
    let sim = Sim::open_file(&bar).expect("open the simulator's file");
    wait_for(Duration::from_secs(30), "the card in sync", || {
        sim.snapshot().in_sync.then_some(())
    });

    // A known offset: the GNSS PPS, and so the card once it has locked to it
    // again, 400 µs late. Injected before chronyd starts, so chronyd sees a
    // card steadily 400 µs behind the system clock (a step while chronyd runs
    // with -x contaminates its frequency estimate for minutes).
    let o = Command::new(timecard)
        .args(["sim", "fault", "--bar", &bar_arg, "pps-phase-jump", "--ns"])
        .arg(INJECTED_NS.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(
        Duration::from_secs(30),
        "the card to follow the PPS",
        || {
            let s = sim.snapshot();
            (s.in_sync && (s.card_error_ns + INJECTED_NS).abs() < 1_000).then_some(())
        },
    );

    // chronyd: -x, CAP_SYS_TIME out of the bounding set, private directory, no ports.
    let conf = dir.path("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "refclock SOCK {} refid TCRD poll 0 precision 1e-7\n\
             pidfile {}\nbindcmdaddress {}\ncmdport 0\nport 0\nlogdir {}\nlog refclocks tracking\n",
            refclock.display(),
            dir.path("chronyd.pid").display(),
            cmdsock.display(),
            dir.path("").display()
        ),
    )
    .unwrap();
    let chronyd_log = dir.path("chronyd.log");
    let started = Instant::now();
    let chronyd_proc = Killed(
        Command::new("setpriv")
            .args(["--bounding-set", "-sys_time", "--inh-caps", "-sys_time"])
            .arg(&chronyd)
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&chronyd_log).unwrap())
            .spawn()
            .expect("start chronyd under setpriv"),
    );
    wait_for(Duration::from_secs(10), "chronyd's refclock socket", || {
        (refclock.exists() && cmdsock.exists()).then_some(())
    });
    let log = std::fs::read_to_string(&chronyd_log).unwrap();
    assert!(log.contains("Disabled control of system clock"), "{log}");
    // setpriv exec'd chronyd: its bounding set lacks CAP_SYS_TIME (bit 25).
    let status = std::fs::read_to_string(format!("/proc/{}/status", chronyd_proc.0.id())).unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .expect("CapBnd in /proc/PID/status");
    assert_eq!(
        bounding & (1 << 25),
        0,
        "chronyd may set the clock: CapBnd {bounding:#x}"
    );

    // The feeder: `timecard chrony`, or `up`'s card sampler, already running
    // (it found nobody listening until now and said so).
    let feeder_out = dir.path("chrony.out");
    let feeder_proc = match feeder {
        Feeder::Separate => Some(Killed(
            Command::new(timecard)
                .args(["chrony", "--device", &device, "--sock"])
                .arg(&refclock)
                .stdout(std::fs::File::create(&feeder_out).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .expect("start timecard chrony"),
        )),
        Feeder::Owner => None,
    };
    // What the feeder says it does: `timecard chrony`'s output, or the
    // card sampler's log lines on `up`'s stderr.
    let feeder_says = || match feeder {
        Feeder::Separate => std::fs::read_to_string(&feeder_out).unwrap_or_default(),
        Feeder::Owner => std::fs::read_to_string(dir.path("up.log")).unwrap_or_default(),
    };

    // chronyd selects our refclock.
    let selected = wait_for(Duration::from_secs(60), "chronyd to select TCRD", || {
        let o = chronyc(&chronyc_bin, &cmdsock, &["sources"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with("#,*,TCRD,"))
            .then(|| started.elapsed())
    });
    eprintln!(
        "{feeder:?}: chronyd selected TCRD {:.1} s after it started",
        selected.as_secs_f64()
    );
    let said = feeder_says();
    assert!(
        said.contains("sending: card locked to GNSS, leap none"),
        "{said}"
    );

    // Its offset agrees with ground truth, which is the injected offset
    // plus the simulator's start-up misalignment with the system clock (µs).
    let (chrony, truth, waited) = agree(&chronyc_bin, &cmdsock, &sim, Duration::from_secs(30));
    eprintln!(
        "{feeder:?}: chronyd System time {:+.3} µs, truth card−system {:+.3} µs, difference {:.3} µs ({waited:.1} s after selection)",
        chrony * 1e6,
        truth * 1e6,
        (chrony - truth) * 1e6
    );
    assert!(
        (truth * 1e9 + INJECTED_NS as f64).abs() < 20_000.0,
        "the card is not {INJECTED_NS} ns behind the system clock: {truth:+.9} s"
    );

    // A leap second announced by GNSS reaches chronyd as "insert" samples.
    let o = Command::new(timecard)
        .args([
            "sim",
            "fault",
            "--bar",
            &bar_arg,
            "leap-second",
            "--delta",
            "+1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(
        Duration::from_secs(15),
        "insert-leap samples in refclocks.log",
        || {
            let log = std::fs::read_to_string(dir.path("refclocks.log")).unwrap_or_default();
            // Date Time Refid DP L P Raw Cooked Disp: L is chrony's leap status (N, +, -).
            log.lines()
                .any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() >= 6 && f[2] == "TCRD" && f[4] == "+" && f[3] != "-"
                })
                .then_some(())
        },
    );
    let said = feeder_says();
    assert!(said.contains("leap insert second"), "{said}");
    // chronyd accepts a leap only on the last day of June or December (its
    // is_leap_second_day, on the system clock); on other days it stays Normal.
    let t = tracking(&chronyc_bin, &cmdsock);
    let day = {
        let o = Command::new("date")
            .args(["-u", "+%m-%d"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let expected = if day == "06-30" || day == "12-31" {
        "Insert second"
    } else {
        "Normal"
    };
    assert_eq!(t.get(13).map(String::as_str), Some(expected), "{t:?}");

    drop(feeder_proc);
    drop(chronyd_proc);
    drop(card_procs);
    assert_eq!(
        kernel_clock(),
        kernel_before,
        "the kernel's clock discipline changed (offset, freq, status, tick)"
    );
}
