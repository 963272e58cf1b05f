//! `timecard-fw flash`, `dump` and `info` end to end against a simulated card
//! in a shared-memory file (what `timecard sim --bar PATH` serves): the new
//! image boots after a reset, every rejected image leaves the flash exactly
//! as it was, the golden image is never touched, and a flash killed part-way
//! (SIGKILL) or stopped (SIGINT) leaves a card that reports "image invalid,
//! reflash" and recovers with a second flash.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use timecard_driver::device::open_sim;
use timecard_hw::firmware;
use timecard_hw::pci::Board;
use timecard_sim::card::{FLASH_LEN, GOLDEN_VERSION, make_bitstream};
use timecard_sim::{DEFAULT_FIRMWARE_VERSION, Fault, Sim, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_timecard-fw");
const FLASH_START: usize = 0x40_0000;

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run timecard-fw")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// A simulated card in a file, and a scratch directory.
struct Card {
    dir: tempfile::TempDir,
    sim: Sim,
    spec: String,
}

impl Card {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bar = dir.path().join("card.bar");
        let sim = Sim::create_file(&bar, &SimConfig::default()).unwrap();
        Self {
            spec: format!("sim:{}", bar.display()),
            dir,
            sim,
        }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn flash_cells(&self) -> Vec<u8> {
        self.sim.with(|_, f| f.as_ref().read(0, FLASH_LEN).unwrap())
    }

    fn reset(&self) {
        self.sim.inject(&Fault::ResetFpga);
    }

    fn version(&self) -> u32 {
        self.sim.snapshot().image_version
    }
}

fn image(version: u32, len: usize, board: Board) -> Vec<u8> {
    firmware::pack(&make_bitstream(version, len), board.id(), 1).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn flash_reports_versions_and_the_card_boots_the_image_after_a_reset() {
    let card = Card::new();
    let golden_before = card.flash_cells()[..FLASH_START].to_vec();
    let new = image(0x0000_0013, 64 * 1024, Board::Meta);
    let path = card.file("som19.img", &new);
    let o = run(&["flash", s(&path), "--device", &card.spec, "--json"]);
    assert_code(&o, 0);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["verified"], true);
    assert_eq!(r["running"]["version"], "1.20");
    assert_eq!(r["flashed"]["boots"], "fw 0.19");
    assert_eq!(r["golden_protected"], true);
    assert_eq!(r["flash_range"], "0x400000..0x410010");
    // Flashed, not yet running.
    assert_eq!(card.version(), DEFAULT_FIRMWARE_VERSION);
    let cells = card.flash_cells();
    assert_eq!(&cells[FLASH_START..FLASH_START + new.len()], &new[..]);
    assert_eq!(
        cells[..FLASH_START],
        golden_before[..],
        "golden region untouched"
    );
    card.reset();
    let id = open_sim(card.sim.clone()).unwrap().identify().unwrap();
    assert_eq!(id.firmware.raw, 0x0000_0013);
    assert_eq!(id.firmware.to_string(), "0.19");
    assert!(
        id.capabilities.signal && !id.capabilities.freq,
        "SOM fw 19: signal only"
    );
    let o = run(&["info", "--device", &card.spec, "--json"]);
    assert_code(&o, 0);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["running"]["version"], "0.19");
    assert_eq!(info["regular"]["valid"], true);
    assert_eq!(info["golden"]["valid"], true);
    assert_eq!(info["protected"], "0x000000..0x400000");
    assert_eq!(info["protection_locked"], true);
    assert!(info["action"].is_null());
}

#[test]
fn every_rejected_image_leaves_the_flash_untouched() {
    let card = Card::new();
    let before = card.flash_cells();
    let good = image(0x8015, 4096, Board::Meta);
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_crc = good.clone();
    bad_crc[100] ^= 0x40;
    let mut oversized = good.clone();
    oversized.extend_from_slice(&[0; 9]);
    let cases: Vec<(&str, PathBuf, i32, &str)> = vec![
        (
            "bad magic",
            card.file("magic.img", &bad_magic),
            3,
            "No firmware header found",
        ),
        (
            "wrong board",
            card.file("cel.img", &image(0x8015, 4096, Board::Celestica)),
            4,
            "compatibility check failed",
        ),
        (
            "truncated",
            card.file("trunc.img", &good[..good.len() - 1]),
            5,
            "size check failed",
        ),
        (
            "oversized",
            card.file("over.img", &oversized),
            5,
            "size check failed",
        ),
        ("crc", card.file("crc.img", &bad_crc), 6, "CRC check failed"),
        ("empty", card.file("empty.img", &[]), 3, "empty"),
        ("directory", card.dir.path().to_path_buf(), 66, "directory"),
        ("missing", card.dir.path().join("nope.img"), 66, "nope.img"),
    ];
    for (what, path, code, needle) in cases {
        let o = run(&["flash", s(&path), "--device", &card.spec]);
        assert_code(&o, code);
        let err = text(&o.stderr);
        assert!(err.contains(needle), "{what}: {err}");
        assert!(o.stdout.is_empty(), "{what}: nothing reported as written");
    }
    // A dry run checks everything and writes nothing.
    let good_path = card.file("good.img", &good);
    let o = run(&["flash", s(&good_path), "--device", &card.spec, "--dry-run"]);
    assert_code(&o, 0);
    assert!(
        text(&o.stdout).contains("would write"),
        "{}",
        text(&o.stdout)
    );
    assert!(
        card.flash_cells() == before,
        "no rejected or dry-run flash wrote anything"
    );
}

#[test]
fn another_boards_image_needs_force_and_then_falls_back_to_golden() {
    let card = Card::new();
    let path = card.file("cel.img", &image(0x8015, 8192, Board::Celestica));
    let o = run(&["flash", s(&path), "--device", &card.spec, "--force"]);
    assert_code(&o, 0);
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    card.reset();
    let snap = card.sim.snapshot();
    assert_eq!(snap.image_version, GOLDEN_VERSION);
    assert_eq!(snap.boot, "golden-fallback");
}

#[test]
fn device_errors_have_their_codes() {
    let card = Card::new();
    let img = card.file("ok.img", &image(0x8015, 4096, Board::Meta));
    let o = run(&["flash", s(&img), "--device", "sim"]);
    assert_code(&o, 2);
    let missing = format!("sim:{}", card.dir.path().join("none.bar").display());
    for args in [
        vec!["flash", s(&img), "--device", &missing],
        vec!["info", "--device", &missing],
        vec!["dump", "--device", &missing, "-o", "/tmp/never-written.img"],
    ] {
        let o = run(&args);
        assert_code(&o, 69);
        assert!(text(&o.stderr).contains("none.bar"), "{}", text(&o.stderr));
    }
    assert!(!Path::new("/tmp/never-written.img").exists());
    card.sim.inject(&Fault::CardRemoved);
    let o = run(&["info", "--device", &card.spec]);
    assert_code(&o, 69);
}

#[test]
fn dump_reads_back_each_region() {
    let card = Card::new();
    let new = image(0x8016, 20_000, Board::Meta);
    let path = card.file("new.img", &new);
    assert_code(&run(&["flash", s(&path), "--device", &card.spec]), 0);
    let out = card.dir.path().join("dump.img");
    assert_code(&run(&["dump", "--device", &card.spec, "-o", s(&out)]), 0);
    assert_eq!(std::fs::read(&out).unwrap(), new);
    // No clobbering without --force.
    let o = run(&[
        "dump",
        "--device",
        &card.spec,
        "-o",
        s(&out),
        "--region",
        "golden",
    ]);
    assert_code(&o, 73);
    assert_code(
        &run(&[
            "dump",
            "--device",
            &card.spec,
            "-o",
            s(&out),
            "--region",
            "golden",
            "--force",
        ]),
        0,
    );
    let golden = std::fs::read(&out).unwrap();
    assert_eq!(
        firmware::verify(&golden, Some(Board::Meta.id())).map(|_| ()),
        Ok(())
    );
    let all = card.dir.path().join("all.img");
    assert_code(
        &run(&[
            "dump",
            "--device",
            &card.spec,
            "-o",
            s(&all),
            "--region",
            "all",
        ]),
        0,
    );
    assert_eq!(std::fs::read(&all).unwrap(), card.flash_cells());
}

/// Starts a flash of a 2 MiB image, waits for its first 10 % progress line, and returns the child.
fn flash_until_ten_percent(card: &Card, path: &Path) -> std::process::Child {
    let mut child = Command::new(BIN)
        .args([
            "flash",
            s(path),
            "--device",
            &card.spec,
            "--progress",
            "always",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        if line.contains(" 10%") {
            // Keep draining stderr so the child never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return child;
        }
        assert!(Instant::now() < deadline, "no progress within 60 s");
    }
    panic!("flash ended before 10 %: {:?}", child.wait_with_output());
}

#[test]
fn a_killed_flash_leaves_image_invalid_reflash_and_a_second_flash_recovers() {
    let card = Card::new();
    let golden_before = card.flash_cells()[..FLASH_START].to_vec();
    let new = image(0x8017, 2 << 20, Board::Meta);
    let path = card.file("big.img", &new);
    let mut child = flash_until_ten_percent(&card, &path);
    child.kill().unwrap();
    child.wait().unwrap();
    // The card keeps running its old image until the FPGA reconfigures.
    assert_eq!(card.version(), DEFAULT_FIRMWARE_VERSION);
    card.reset();
    assert_eq!(card.sim.snapshot().boot, "golden-fallback");
    let o = run(&["info", "--device", &card.spec]);
    assert_code(&o, 0);
    let out = text(&o.stdout);
    assert!(out.contains("image invalid, reflash"), "{out}");
    assert!(out.contains("regular image  0x400000: INVALID"), "{out}");
    assert_eq!(card.flash_cells()[..FLASH_START], golden_before[..]);
    let o = run(&["flash", s(&path), "--device", &card.spec]);
    assert_code(&o, 0);
    assert!(
        text(&o.stdout).contains("running       loader"),
        "{}",
        text(&o.stdout)
    );
    card.reset();
    assert_eq!(card.version(), 0x8017);
    assert_eq!(card.sim.snapshot().boot, "regular");
}

#[test]
fn ctrl_c_stops_a_flash_cleanly_with_exit_74() {
    let card = Card::new();
    let path = card.file("big.img", &image(0x8018, 2 << 20, Board::Meta));
    let child = flash_until_ten_percent(&card, &path);
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process, which has not been reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(74), "{o:?}");
    card.reset();
    assert_eq!(card.version(), GOLDEN_VERSION);
}
