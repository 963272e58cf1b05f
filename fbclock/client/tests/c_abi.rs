//! The C example, compiled with the system C compiler against the cdylib,
//! reads a record published from Rust.

use std::process::Command;

use fbclock::layout::FLAG_SYNCED;
use fbclock::{Publisher, Snapshot};

#[test]
fn c_example_reads_truetime_and_commit_waits() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // target/<profile>/deps/c_abi-… → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let lib = profile_dir.join("libfbclock.so");
    assert!(
        lib.exists(),
        "cdylib not built at {}: run `cargo build -p fbclock --lib` first (scripts/test.sh does)",
        lib.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = dir.path().join("example");
    let out = Command::new("cc")
        .arg(crate_dir.join("examples/c/example.c"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-L")
        .arg(&profile_dir)
        .arg("-lfbclock")
        .arg(format!("-Wl,-rpath,{}", profile_dir.display()))
        .arg("-o")
        .arg(&bin)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let path = dir.path().join("fbclock");
    let clock_id = libc::CLOCK_MONOTONIC_RAW as u32;
    let publisher = Publisher::create(&path, clock_id).unwrap();
    let now = fbclock::clock_ns(clock_id);
    publisher.publish(&Snapshot {
        anchor_sys_ns: now,
        anchor_tai_ns: 1_800_000_000_000_000_000,
        coef: 0.0,
        ingress_sys_ns: now,
        error_bound_ns: 2_000,
        holdover_ns_per_s: 50.0,
        leap_tai_ns: 0,
        utc_pre_s: 37,
        utc_post_s: 37,
        flags: FLAG_SYNCED,
    });
    let out = Command::new(&bin).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("commit_wait ok"), "{text}");
    let wou: i64 = text
        .split("wou ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((4_000..5_000).contains(&wou), "{text}");

    // A missing file is a clean error code, not a crash.
    let out = Command::new(&bin)
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot map"));
}
