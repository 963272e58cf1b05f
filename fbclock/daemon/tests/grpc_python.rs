//! Cross-language check of the gRPC API: a Python client (grpcio, stubs
//! generated from `proto/fbclock.proto` by `grpc_tools.protoc`) against the
//! server started in-process on port 0.
//!
//! The venv lives under `target/tmp/` keyed by a hash of the Python version
//! and the package list (or at `$FBCLOCK_TEST_VENV`), and is reused. Without network access to PyPI the
//! test is skipped loudly, unless `CI` is set, in which case it fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fbclock::layout::FLAG_SYNCED;
use fbclock::{Publisher, Snapshot, clock_ns};
use fbclockd::grpc;
use fbclockd::status::{DaemonStatus, ExchangeCounters, StatusSource, SyncState};

const PACKAGES: &[&str] = &["grpcio", "grpcio-tools"];
const CLOCK_MONOTONIC_RAW: u32 = libc::CLOCK_MONOTONIC_RAW as u32;

struct FakeStatus;

impl StatusSource for FakeStatus {
    fn status(&self) -> DaemonStatus {
        DaemonStatus {
            state: SyncState::Synced,
            gm_identity: Some("aabbcc.fffe.ddeeff".into()),
            gm_clock_class: Some(6),
            gm_clock_accuracy: Some(0x21),
            server: "127.0.0.1:319".into(),
            last_offset_ns: Some(-17),
            last_path_delay_ns: Some(2_500),
            recent_offsets_ns: vec![5, -3, -17],
            error_bound_ns: 800,
            holdover_ns_per_s: 25.0,
            exchanges: ExchangeCounters {
                attempted: 100,
                accepted: 97,
                rejected: 2,
                lost: 1,
            },
        }
    }
}

fn snapshot() -> Snapshot {
    let now = clock_ns(CLOCK_MONOTONIC_RAW);
    Snapshot {
        anchor_sys_ns: now,
        anchor_tai_ns: clock_ns(libc::CLOCK_REALTIME as u32) + 37_000_000_000,
        coef: 0.0,
        ingress_sys_ns: now,
        error_bound_ns: 800,
        holdover_ns_per_s: 0.0,
        leap_tai_ns: 0,
        utc_pre_s: 37,
        utc_post_s: 37,
        flags: FLAG_SYNCED,
    }
}

/// Skips (returns None) or, under CI, fails.
fn unavailable(what: &str) -> Option<PathBuf> {
    assert!(
        std::env::var_os("CI").is_none(),
        "grpc_python: {what} (CI is set: failing instead of skipping)"
    );
    // Straight to stderr: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED grpc_python: {what}\n*** (set CI=1 to make this a failure) ***\n"
    );
    None
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A venv with grpcio and grpcio-tools; its python, or None when skipping.
fn venv() -> Option<PathBuf> {
    let version = match run(Command::new("python3").arg("--version")) {
        Ok(v) => v,
        Err(e) => return unavailable(&format!("no python3: {e}")),
    };
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (version.trim(), PACKAGES).hash(&mut h);
        h.finish()
    };
    let dir = std::env::var_os("FBCLOCK_TEST_VENV").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fbclock-pyvenv-{key:016x}")),
        PathBuf::from,
    );
    let python = dir.join("bin/python");
    let ready = dir.join(".ready");
    if ready.exists() {
        eprintln!("grpc_python: reusing venv {}", dir.display());
        return Some(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let t0 = Instant::now();
    if let Err(e) = run(Command::new("python3").arg("-m").arg("venv").arg(&dir)) {
        return unavailable(&format!("cannot create a venv: {e}"));
    }
    if let Err(e) = run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "--timeout",
            "30",
        ])
        .args(PACKAGES))
    {
        return unavailable(&format!(
            "pip cannot install {PACKAGES:?} (no network?): {e}"
        ));
    }
    std::fs::write(&ready, version).unwrap();
    eprintln!(
        "grpc_python: created venv {} in {:.1?}",
        dir.display(),
        t0.elapsed()
    );
    Some(python)
}

#[test]
fn python_client_talks_to_the_server() {
    let Some(python) = venv() else { return };

    // Stubs from the same proto the server is built from.
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stubs = tempfile::tempdir().unwrap();
    run(Command::new(&python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", crate_dir.join("proto").display()))
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg("fbclock.proto"))
    .unwrap();
    assert!(stubs.path().join("fbclock_pb2_grpc.py").exists());

    // The server, with a publisher re-anchoring at 100 Hz like the daemon.
    let publisher = Arc::new(Publisher::in_memory(CLOCK_MONOTONIC_RAW));
    publisher.publish(&snapshot());
    let done = Arc::new(AtomicBool::new(false));
    let republisher = {
        let (publisher, done) = (publisher.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                publisher.publish(&snapshot());
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let server = grpc::spawn(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(publisher.client()),
        Arc::new(FakeStatus),
    )
    .unwrap();
    let addr = server.local_addr();

    let t0 = Instant::now();
    let out = run(Command::new(&python)
        .arg(crate_dir.join("tests/python/client.py"))
        .arg(addr.to_string())
        .env("PYTHONPATH", stubs.path()))
    .unwrap();
    eprintln!("grpc_python: client ran in {:.1?}: {out}", t0.elapsed());
    server.stop().unwrap();
    done.store(true, Ordering::Relaxed);
    republisher.join().unwrap();

    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let i = |x: &serde_json::Value| x.as_i64().unwrap();

    let got = &v["get_time"];
    assert!(i(&got["earliest_ns"]) <= i(&got["latest_ns"]), "{got}");
    assert_eq!(
        i(&got["wou_ns"]),
        i(&got["latest_ns"]) - i(&got["earliest_ns"])
    );
    assert_eq!(i(&got["wou_ns"]), 2 * 801);
    assert_eq!(got["state"], "SYNC_STATE_SYNCED");

    let waited = &v["wait_until"];
    assert_eq!(i(&waited["ts_ns"]), i(&got["latest_ns"]));
    assert!(i(&waited["earliest_ns"]) > i(&waited["ts_ns"]), "{waited}");
    assert!(i(&waited["earliest_ns"]) <= i(&waited["latest_ns"]));

    // UTC is TAI − 37 s here.
    let utc = &v["get_time_utc"];
    assert!(utc["utc"].as_bool().unwrap());
    let utc_shift = i(&waited["earliest_ns"]) - i(&utc["earliest_ns"]);
    assert!(
        (36_000_000_000..=38_000_000_000).contains(&utc_shift),
        "{utc_shift}"
    );

    assert_eq!(v["far_wait_until"], "DEADLINE_EXCEEDED");

    let st = &v["status"];
    assert_eq!(st["state"], "SYNC_STATE_SYNCED");
    assert_eq!(st["gm_identity"], "aabbcc.fffe.ddeeff");
    assert_eq!(i(&st["gm_clock_class"]), 6);
    assert_eq!(i(&st["gm_clock_accuracy"]), 0x21);
    assert_eq!(st["server"], "127.0.0.1:319");
    assert_eq!(i(&st["last_offset_ns"]), -17);
    assert_eq!(i(&st["last_path_delay_ns"]), 2_500);
    assert_eq!(st["recent_offsets_ns"], serde_json::json!([5, -3, -17]));
    assert_eq!(i(&st["error_bound_ns"]), 800);
    assert!((st["holdover_ns_per_s"].as_f64().unwrap() - 25.0).abs() < 1e-9);
    assert_eq!(
        st["exchanges"],
        serde_json::json!({"attempted": 100, "accepted": 97, "rejected": 2, "lost": 1})
    );

    let events = v["watch_earliest_ns"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.windows(2).all(|w| i(&w[0]) < i(&w[1])), "{events:?}");
}
