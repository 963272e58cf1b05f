//! End-to-end tests of the `timecard` binary: each runs the built executable
//! as an operator would, against simulated cards (embedded, or a `timecard
//! sim` process in the background).

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Killed, Scratch, wait_for};

/// A `timecard` command.
fn timecard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_timecard"))
}

/// Runs `timecard ARGS` to completion.
fn run(args: &[&str]) -> Output {
    timecard().args(args).output().expect("run timecard")
}

/// Stdout of a finished command as text.
fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of a finished command as text.
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether this process runs as root (can switch to another user).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().next())
        == Some("0")
}

#[test]
fn help_mentions_every_subcommand_and_the_exit_codes() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for cmd in ["list", "status", "watch", "sim", "up"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "{cmd} missing from:\n{text}"
        );
    }
    assert!(text.contains("69"), "{text}");
    let o = run(&["sim", "fault", "--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("leap-second"), "{}", stdout(&o));
}

#[test]
fn status_json_of_the_embedded_simulator() {
    let o = run(&["status", "--json", "--device", "sim"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status is JSON");
    assert_eq!(v["board"], "Meta", "{v}");
    let fw = v["firmware"].as_str().expect("firmware is a string");
    assert!(fw.contains('.'), "firmware {fw:?} is <tag>.<version>");
    assert_eq!(v["status"]["clock_source"], "TOD");
    assert!(v["status"]["gnss_sync"].is_string());
    assert!(v["simulator_ground_truth"]["truth_tai_ns"].is_i64(), "{v}");
}

#[test]
fn watch_prints_one_line_per_sample() {
    let o = run(&[
        "watch",
        "--device",
        "sim",
        "--count",
        "2",
        "--interval",
        "200ms",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("card-host") && text.contains("UNSYNCED"),
        "{text}"
    );

    let o = run(&["watch", "--count", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON sample");
    assert_eq!(v["sync"], "UNSYNCED");
    assert!(v["card_tai_ns"].is_i64(), "{v}");
}

#[test]
fn list_explains_how_to_check_when_there_is_no_card() {
    let o = run(&["list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    if text.contains("No Time Card found") {
        assert!(text.contains("lspci -d 1d9b:"), "{text}");
        assert!(text.contains("--device sim"), "{text}");
    } else {
        assert!(text.starts_with("ADDRESS"), "{text}");
    }
}

#[test]
fn usage_errors_exit_2_and_explain() {
    let o = run(&["status", "--device", "usb:1"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("pci:0000:01:00.0") && err.contains("sim:"),
        "{err}"
    );
    let o = run(&["watch", "--interval", "5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("500ms, 10s"), "{}", stderr(&o));
    let o = run(&["--device", "sim", "sim", "--bar", "/tmp/never.bar"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--bar"), "{}", stderr(&o));
}

#[test]
fn a_missing_simulator_file_is_unavailable() {
    let o = run(&["status", "--device", "sim:/nonexistent/card.bar"]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot use device sim:/nonexistent/card.bar"),
        "{}",
        stderr(&o)
    );
}

/// `timecard status --json --device sim:BAR`, parsed.
fn status_json(bar: &Path) -> serde_json::Value {
    let device = format!("sim:{}", bar.display());
    let o = run(&["status", "--json", "--device", &device]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("status is JSON")
}

#[test]
fn a_simulator_process_serves_status_faults_and_cleans_up() {
    let dir = Scratch::new("sim");
    let bar = dir.path("card.bar");
    let link = dir.path("card.gnss");
    let bar_arg = bar.to_str().expect("utf-8 temp path");
    let mut child = timecard()
        .args(["sim", "--bar", bar_arg, "--duration", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start timecard sim");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    // The banner is printed once the card and its GNSS tty are ready.
    let banner: Vec<String> = lines
        .by_ref()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("Stops after"))
        .collect();
    assert!(banner.iter().any(|l| l.contains("GNSS tty")), "{banner:?}");
    assert!(bar.exists() && link.exists());
    // Fault injection is writing to the card's file: only its owner may.
    let mode = std::fs::metadata(&bar).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the simulator's file is private");
    if running_as_root() {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_timecard"))
            .args(["sim", "fault", "--bar", bar_arg, "gnss-loss"])
            .output()
            .expect("setpriv (util-linux, installed by scripts/test.sh)");
        assert!(
            !o.status.success() && stderr(&o).contains("Permission denied"),
            "another user injected a fault: {}",
            stderr(&o)
        );
    } else {
        eprintln!("not root: cannot try fault injection as another user");
    }

    let v = status_json(&bar);
    assert_eq!(v["device"], format!("sim:{bar_arg}"));
    assert_eq!(v["simulator_ground_truth"]["gnss"]["signal_lost"], false);
    assert_eq!(v["gnss_serial"], link.to_str().expect("utf-8"));

    let o = run(&["sim", "fault", "--bar", bar_arg, "gnss-loss"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("gnss-loss"), "{}", stdout(&o));
    let v = status_json(&bar);
    assert_eq!(
        v["simulator_ground_truth"]["gnss"]["signal_lost"], true,
        "{v}"
    );

    let device = format!("sim:{bar_arg}");
    let o = run(&["sim", "fault", "--bar", bar_arg, "card-removed"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["status", "--device", &device]);
    assert_eq!(o.status.code(), Some(69));
    assert!(stderr(&o).contains("does not respond"), "{}", stderr(&o));

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for timecard sim") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("timecard sim did not stop after --duration 3s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("stopped; removed")),
        "{rest:?}"
    );
    assert!(!bar.exists(), "BAR file removed");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "GNSS link removed"
    );
}

#[test]
fn up_goes_from_unsynced_to_in_sync() {
    // Real time, as a newcomer runs it: GNSS fix after 2 s, the first PPS
    // steps the phase, four good PPS later the card reports IN_SYNC; the PTP
    // server then announces class 6 and fbclockd publishes TrueTime.
    let dir = Scratch::new("up");
    let shm = dir.path("fbclock").display().to_string();
    let ports: Vec<u16> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let grpc = format!("127.0.0.1:{}", ports[0]);
    let notify_grpc = format!("127.0.0.1:{}", ports[2]);
    let data = format!("embedded:{}", dir.path("data").display());
    // `up` creates the API token file; the CLI clients read it.
    let token = dir.path("api-token").display().to_string();
    let child = timecard()
        .args([
            "up",
            "--api-token-file",
            &token,
            "--duration",
            "18s",
            "--ptp-port",
            "0",
            "--ptp-monitoring",
            "off",
            "--ptp-quality-window",
            "3",
            "--fbclock-shm",
            &shm,
            "--counter-grpc",
            &grpc,
            "--counter-http",
            &format!("127.0.0.1:{}", ports[1]),
            "--counter-backend",
            &data,
            "--notify-grpc",
            &notify_grpc,
            "--notify-http",
            &format!("127.0.0.1:{}", ports[3]),
            "--notify-backend",
            &data,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn timecard up");
    // The counter answers once fbclockd gives TrueTime: add through the CLI.
    let t0 = Instant::now();
    let added = loop {
        let a = run(&[
            "counter",
            "add",
            "likes",
            "up-test",
            "2",
            "--get",
            "--server",
            &grpc,
            "--api-token-file",
            &token,
        ]);
        if a.status.success() {
            break stdout(&a);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(17),
            "counter never accepted an add: {}",
            stderr(&a)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(added.starts_with("2 (accurate)"), "{added}");
    // Without the token state-changing calls are refused, and not counted.
    let refused = run(&["counter", "add", "likes", "up-test", "5", "--server", &grpc]);
    assert!(
        !refused.status.success() && stderr(&refused).contains("Authorization: Bearer"),
        "{}",
        stderr(&refused)
    );
    let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the generated token file is private");
    let got = run(&["counter", "get", "likes", "up-test", "--server", &grpc]);
    assert_eq!(stdout(&got).trim(), "2 (accurate)", "{}", stderr(&got));
    // The notification pipeline: an event, the member's device pulls it.
    let published = run(&[
        "notify",
        "publish",
        "--type",
        "live-event",
        "--member",
        "m1",
        "--body",
        r#"{"match":"final"}"#,
        "--server",
        &notify_grpc,
        "--api-token-file",
        &token,
    ]);
    assert!(
        stdout(&published).contains("accepted: priority high"),
        "{}",
        stderr(&published)
    );
    let pulled = loop {
        let p = run(&["notify", "pull", "m1", "--server", &notify_grpc]);
        if stdout(&p).contains("live-event") {
            break stdout(&p);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(17),
            "never pulled: {}",
            stderr(&p)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(pulled.contains(r#"{"match":"final"}"#), "{pulled}");
    let bad = run(&["counter", "get", "nope", "x", "--server", &grpc]);
    assert!(
        !bad.status.success() && stderr(&bad).contains("unknown namespace"),
        "{}",
        stderr(&bad)
    );
    let o = child.wait_with_output().expect("timecard up");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("Ctrl-C"), "{text}");
    let samples: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("card-host") && !l.starts_with("timecard up:"))
        .collect();
    assert!(samples.len() >= 8, "{text}");
    assert!(samples[0].contains("UNSYNCED"), "{text}");
    assert!(
        samples[samples.len() - 1].contains("IN SYNC"),
        "not locked at the end:\n{text}"
    );
    assert!(
        lines[lines.len() - 1].contains("last state IN SYNC"),
        "{text}"
    );
    assert!(
        text.contains("ptp-server") && text.contains("unicast PTP on 127.0.0.1:"),
        "banner names the PTP server:\n{text}"
    );
    assert!(
        samples[0].contains("ptp class 52"),
        "uncalibrated at start:\n{text}"
    );
    assert!(
        // Class 6; the accuracy is the card's (100 ns floor) plus the
        // server's software-timestamp map uncertainty (~1 µs in a debug
        // build): "within 250 ns" to "within 2.5 µs".
        ["0x21", "0x22", "0x23", "0x24"]
            .iter()
            .any(|a| samples[samples.len() - 1].contains(&format!("ptp class 6 acc {a}"))),
        "announces class 6 once locked:\n{text}"
    );
    assert!(
        samples[samples.len() - 1].contains("truetime wou"),
        "fbclockd publishes TrueTime:\n{text}"
    );
    assert!(
        text.contains("fbclockd") && text.contains("TrueTime from SPTP"),
        "{text}"
    );
    assert!(
        text.contains(&format!("counter    gRPC {grpc}")) && text.contains("clock: fbclock"),
        "banner names the counter and its TrueTime source:\n{text}"
    );
    assert!(
        text.contains(&format!("notify     gRPC {notify_grpc}")) && text.contains("+ notify"),
        "banner names the notification pipeline:\n{text}"
    );
    assert!(
        !std::path::Path::new(&shm).exists(),
        "shared memory removed on exit"
    );
}

#[test]
fn linearizability_runs_a_scenario_and_rejects_unknown_ones() {
    let o = run(&[
        "linearizability",
        "--scenario",
        "baseline",
        "--hosts",
        "2",
        "--seconds",
        "60",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["violations"], 0, "{v}");
    assert!(v["checks"].as_u64().unwrap() > 1000, "{v}");
    let o = run(&["linearizability", "--scenario", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("baseline"), "{}", stderr(&o));
}

/// After an interrupted update the card runs its golden image and `timecard
/// status` says to reflash; after a flash and an FPGA reset it shows the new
/// firmware and the capabilities that version implies.
#[test]
fn status_reports_golden_fallback_and_the_flashed_firmware() {
    use std::ops::ControlFlow;
    use timecard_sim::{Fault, Sim, SimConfig};

    let dir = Scratch::new("fw");
    let bar = dir.path("card.bar");
    let sim = Sim::create_file(&bar, &SimConfig::default()).expect("sim file");
    let start = timecard_hw::pci::Board::Meta.layout().flash_start as usize;
    // An update that died after erasing the header block.
    sim.with(|_, mut flash| flash.erase_sector(start).expect("erase"));
    sim.inject(&Fault::ResetFpga);
    let device = format!("sim:{}", bar.display());
    let o = run(&["status", "--device", &device]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("firmware       loader"), "{text}");
    assert!(text.contains("image invalid, reflash"), "{text}");
    let v = status_json(&bar);
    assert_eq!(v["firmware_kind"], "loader");
    assert!(
        v["firmware_action"]
            .as_str()
            .is_some_and(|a| a.contains("timecard-fw flash"))
    );

    // SOM firmware 19: signal generators but no frequency counters.
    let image = timecard_hw::firmware::pack(
        &timecard_sim::card::make_bitstream(0x0000_0013, 8192),
        timecard_hw::pci::Board::Meta.id(),
        1,
    )
    .expect("pack");
    let card = timecard_driver::device::open_sim(sim.clone()).expect("open");
    card.flash()
        .expect("flash")
        .write_image(&image, &mut |_| ControlFlow::Continue(()))
        .expect("write");
    sim.inject(&Fault::ResetFpga);
    let v = status_json(&bar);
    assert_eq!(v["firmware"], "0.19");
    assert_eq!(v["firmware_kind"], "fw");
    assert_eq!(v["capabilities"]["signal"], true);
    assert_eq!(v["capabilities"]["freq"], false);
    assert!(v.get("firmware_action").is_none(), "{v}");
}

#[test]
fn doctor_gives_one_line_per_check_with_a_fix() {
    let o = run(&["doctor", "--fbclock", "/nonexistent/timecard-fbclock"]);
    let text = stdout(&o);
    let names = [
        "time card",
        "driver binding",
        "gnss",
        "vfio",
        "ptp ports",
        "hardware timestamping",
        "fbclock",
        "card vs system",
        "ptp vs system",
    ];
    for name in names {
        assert!(
            text.lines()
                .any(|l| l.len() > 5 && l[5..].starts_with(name)),
            "no {name} line in:\n{text}"
        );
    }
    for line in text.lines() {
        let status = &line[..4];
        assert!(["ok  ", "WARN", "FAIL", "skip"].contains(&status), "{line}");
        if status == "WARN" || status == "FAIL" {
            assert!(line.contains(" — fix: "), "no fix on: {line}");
        }
    }
    let fbclock = text.lines().find(|l| l.contains("fbclock ")).unwrap();
    assert!(
        fbclock.starts_with("WARN") && fbclock.contains("start fbclockd"),
        "{fbclock}"
    );
    let failed = text.lines().any(|l| l.starts_with("FAIL"));
    assert_eq!(
        o.status.code(),
        Some(if failed { 1 } else { 0 }),
        "{}",
        stderr(&o)
    );
    if text.contains("no Time Card on the PCI bus") {
        // A machine without a card (CI): the card checks say so and point
        // at the simulator; the others still run.
        assert!(text.contains("timecard up"), "{text}");
        assert!(stderr(&o).contains("check(s) failed"), "{}", stderr(&o));
        for name in ["driver binding", "gnss"] {
            let line = text.lines().find(|l| l.contains(name)).unwrap();
            assert!(line.starts_with("skip"), "{line}");
        }
    }
    // Without --card and without TrueTime the clock comparisons say why not.
    for name in ["card vs system", "ptp vs system"] {
        let line = text.lines().find(|l| l.contains(name)).unwrap();
        assert!(line.starts_with("skip"), "{line}");
    }
    // Every non-loopback interface is named with what it timestamps.
    let hw = text
        .lines()
        .find(|l| l.contains("hardware timestamping"))
        .unwrap();
    for iface in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let name = iface.file_name().to_string_lossy().into_owned();
        if name != "lo" {
            assert!(hw.contains(&format!("{name}: ")), "{name} missing: {hw}");
        }
    }
    assert!(
        hw.starts_with("ok") == hw.contains("hardware TX+RX, PHC /dev/ptp"),
        "{hw}"
    );
    let o = run(&[
        "doctor",
        "--json",
        "--fbclock",
        "/nonexistent/timecard-fbclock",
    ]);
    let checks: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let checks = checks.as_array().unwrap();
    assert_eq!(checks.len(), text.lines().count());
    assert!(
        checks
            .iter()
            .all(|c| ["ok", "warn", "fail", "skip"].contains(&c["status"].as_str().unwrap()))
    );
}

/// Starts `timecard sim --bar BAR` (output beside it) and waits for its banner.
fn start_sim(bar: &Path, duration: &str) -> Killed {
    let log = bar.with_extension("out");
    let child = timecard()
        .args([
            "sim",
            "--bar",
            bar.to_str().unwrap(),
            "--duration",
            duration,
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start timecard sim");
    let child = Killed(child);
    wait_for(Duration::from_secs(20), "the simulator's banner", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("Stops after").then_some(())
    });
    child
}

/// The doctor's line for check `name`.
fn doctor_line(o: &Output, name: &str) -> String {
    stdout(o)
        .lines()
        .find(|l| l.len() > 5 && l[5..].starts_with(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{}", stdout(o)))
        .to_owned()
}

#[test]
fn doctor_compares_the_card_and_ptp_clocks_with_the_system() {
    let dir = Scratch::new("doctor-clocks");
    let bar = dir.path("card.bar");
    let _sim = start_sim(&bar, "60s");
    let device = format!("sim:{}", bar.display());
    // Bring the card up once (init, as ptp_ocp's probe), then leave it alone.
    let o = run(&["watch", "--device", &device, "--count", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let truth = timecard_sim::Sim::open_file(&bar).expect("open the simulator");
    wait_for(Duration::from_secs(30), "the card in sync", || {
        truth.snapshot().in_sync.then_some(())
    });
    let fb = dir.path("fbclock");
    let fb_arg = fb.to_str().unwrap();
    let o = run(&["doctor", "--card", &device, "--fbclock", fb_arg]);
    let line = doctor_line(&o, "card vs system");
    assert!(line.starts_with("ok"), "{line}");
    assert!(
        line.contains("TAI − 37 s") && line.contains("card in sync"),
        "{line}"
    );

    // PTP: a TrueTime record on CLOCK_REALTIME, 10 µs bound, agreeing with the system.
    let publisher = fbclock::Publisher::create(&fb, libc::CLOCK_REALTIME as u32).unwrap();
    let publish = |offset_ns: i64| {
        let now = fbclock::clock_ns(libc::CLOCK_REALTIME as u32);
        publisher.publish(&fbclock::Snapshot {
            anchor_sys_ns: now,
            anchor_tai_ns: now + 37_000_000_000 + offset_ns,
            ingress_sys_ns: now,
            error_bound_ns: 10_000,
            utc_pre_s: 37,
            utc_post_s: 37,
            flags: fbclock::layout::FLAG_SYNCED,
            ..fbclock::Snapshot::default()
        });
    };
    publish(0);
    let o = run(&["doctor", "--card", &device, "--fbclock", fb_arg]);
    let line = doctor_line(&o, "ptp vs system");
    assert!(
        line.starts_with("ok") && line.contains("inside TrueTime"),
        "{line}"
    );
    // PTP says the system clock is 5 ms off: outside the window, WARN with a fix.
    publish(5_000_000);
    let o = run(&["doctor", "--card", &device, "--fbclock", fb_arg]);
    let line = doctor_line(&o, "ptp vs system");
    assert!(
        line.starts_with("WARN") && line.contains(" — fix: "),
        "{line}"
    );

    // GNSS time of day jumps 5 s and nothing supervises the card: the FPGA
    // follows it, and the doctor fails the comparison.
    let o = run(&[
        "sim",
        "fault",
        "--bar",
        bar.to_str().unwrap(),
        "time-jump",
        "--seconds",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for(Duration::from_secs(10), "the card 5 s off", || {
        let e = truth.snapshot().card_error_ns;
        ((e - 5_000_000_000).abs() < 1_000_000).then_some(())
    });
    let o = run(&["doctor", "--card", &device, "--fbclock", fb_arg]);
    let line = doctor_line(&o, "card vs system");
    // About +5 s (the card was in sync with its error in ns before the jump).
    assert!(
        line.starts_with("FAIL")
            && (line.contains("card − system +4.99") || line.contains("card − system +5.00")),
        "{line}"
    );
    assert!(line.contains("whole seconds"), "{line}");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}

#[test]
fn config_check_prints_ok_or_each_problem_at_its_line() {
    let dir = Scratch::new("config-check");
    let good = dir.path("fbclockd.toml");
    std::fs::write(
        &good,
        "# fbclockd\nserver = \"127.0.0.1:319\"\ninterval = \"1s\"\narb-is-utc = false\n",
    )
    .unwrap();
    let ptp = dir.path("ptp-server.toml");
    std::fs::write(&ptp, "ip = \"127.0.0.1\"\nworkers = 2\n").unwrap();
    let o = run(&[
        "config",
        "check",
        good.to_str().unwrap(),
        ptp.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{}: ok\n{}: ok\n", good.display(), ptp.display())
    );

    // A syntax error, an unknown key and a bad value, each on its own line.
    let bad = dir.path("counter.toml");
    std::fs::write(
        &bad,
        "# counter\ngrpc = \"127.0.0.1:7340\"\nhttp = \"127.0.0.1:7341\"\n\
         namespase = [\"views=eventual\"]\naccept-limit-ms = \"soon\"\ngrace-ms = = 5\n",
    )
    .unwrap();
    let o = run(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let b = bad.display();
    // TOML syntax is checked first: only the syntax errors are reported.
    let text = stdout(&o);
    assert!(text.starts_with(&format!("{b}:6:12: extra `=`")), "{text}");
    assert!(
        text.lines().all(|l| l.starts_with(&format!("{b}:6:"))),
        "{text}"
    );
    std::fs::write(
        &bad,
        "# counter\ngrpc = \"127.0.0.1:7340\"\nhttp = \"127.0.0.1:7341\"\n\
         namespase = [\"views=eventual\"]\naccept-limit-ms = \"soon\"\n",
    )
    .unwrap();
    let o = run(&[
        "config",
        "check",
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        format!("{b}:4:1: unknown key `namespase` (did you mean `namespace`?)")
    );
    assert!(
        lines[1].starts_with(&format!(
            "{b}:5:19: `accept-limit-ms`: invalid value 'soon'"
        )),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], format!("{}: ok", good.display()));
    assert!(
        stderr(&o).contains("1 of 2 config file(s) have problems"),
        "{}",
        stderr(&o)
    );

    // ptp-server files go through ptp-server's own loader.
    std::fs::write(&ptp, "ip = \"127.0.0.1\"\nwrokers = 2\n").unwrap();
    let o = run(&["config", "check", ptp.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let p = ptp.display();
    assert!(
        stdout(&o).starts_with(&format!("{p}:2:1: unknown field `wrokers`")),
        "{}",
        stdout(&o)
    );

    // The daemon comes from the name, or from --for.
    let other = dir.path("staging.toml");
    std::fs::write(&other, "heartbeat = \"30s\"\n").unwrap();
    let o = run(&["config", "check", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--for"), "{}", stderr(&o));
    let o = run(&["config", "check", "--for", "push", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_service_with_a_bad_config_value_stops_at_its_line_before_starting() {
    let dir = Scratch::new("config-serve");
    let file = dir.path("counter.toml");
    std::fs::write(&file, "insecure = true\ngrpc = \"nowhere\"\n").unwrap();
    let o = run(&["counter", "serve", "--config", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "{}:2:8: `grpc`: invalid value 'nowhere'",
            file.display()
        )),
        "{}",
        stderr(&o)
    );
}
