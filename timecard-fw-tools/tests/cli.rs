//! End-to-end tests of the `timecard-fw` binary: messages, exit codes, files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use timecard_hw::firmware::{self, HEADER_LEN};
use timecard_hw::pci::{Board, PciId};
use timecard_sim::card::make_bitstream;
use timecard_sim::{Sim, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_timecard-fw");

/// Runs the binary with `args`.
fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run timecard-fw")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, and that stderr is one `timecard-fw: ` line containing every `needle`.
#[track_caller]
fn assert_fails(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr: {err}\nstdout: {}",
        stdout(o)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got {err:?}");
    assert!(lines[0].starts_with("timecard-fw: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr {err:?} lacks {n:?}");
    }
}

/// A directory with a Meta image of a simulator bitstream in it.
struct Fixture {
    dir: tempfile::TempDir,
    image: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = firmware::pack(&make_bitstream(0x8015, 5000), Board::Meta.id(), 2).unwrap();
        Self { dir, image }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to `name` and returns its path.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---- verify: each rejection, message and code ----

#[test]
fn verify_accepts_a_good_image_and_says_compatibility_was_skipped() {
    let f = Fixture::new();
    let img = f.file("good.img", &f.image);
    let o = run(&["verify", s(&img)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("compatibility  skipped"), "{out}");
    assert!(out.contains("compatibility not checked"), "{out}");
    assert!(stderr(&o).is_empty());

    let o = run(&["verify", s(&img), "--board", "meta", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["target"]["board"], "meta");
    let statuses: Vec<_> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["ok", "ok", "ok", "ok"]);
}

#[test]
fn verify_bad_magic_exits_3() {
    let f = Fixture::new();
    let mut bad = f.image.clone();
    bad[..4].copy_from_slice(b"OCPX");
    let p = f.file("bad-magic.img", &bad);
    let o = run(&["verify", s(&p)]);
    assert_fails(&o, 3, &["bad-magic.img", "No firmware header found"]);
    assert!(stdout(&o).contains("magic          FAIL"), "{}", stdout(&o));
}

#[test]
fn verify_shorter_than_a_header_exits_3() {
    let f = Fixture::new();
    let p = f.file("short.img", b"OCPC\x1d\x9b");
    assert_fails(
        &run(&["verify", s(&p)]),
        3,
        &["short.img", "6 bytes", "16-byte OCPC header"],
    );
}

#[test]
fn verify_wrong_board_exits_4() {
    let f = Fixture::new();
    let p = f.file("meta.img", &f.image);
    let o = run(&["verify", s(&p), "--board", "celestica"]);
    assert_fails(
        &o,
        4,
        &[
            "meta.img",
            "Firmware image compatibility check failed",
            "1d9b:0400",
            "18d4:1008",
        ],
    );
    let out = stdout(&o);
    assert!(out.contains("compatibility  FAIL"), "{out}");
    assert!(out.contains("size           not run"), "{out}");
    // Same with a raw PCI ID.
    assert_fails(
        &run(&["verify", s(&p), "--pci-id", "18d4:1008"]),
        4,
        &["compatibility"],
    );
}

#[test]
fn verify_truncated_exits_5() {
    let f = Fixture::new();
    let p = f.file("trunc.img", &f.image[..f.image.len() - 100]);
    assert_fails(
        &run(&["verify", s(&p), "--board", "meta"]),
        5,
        &[
            "trunc.img",
            "Firmware image size check failed",
            "header says 5000",
            "payload is 4900",
        ],
    );
}

#[test]
fn verify_trailing_bytes_exit_5() {
    let f = Fixture::new();
    let mut big = f.image.clone();
    big.extend_from_slice(&[0xFF; 3]);
    let p = f.file("over.img", &big);
    assert_fails(
        &run(&["verify", s(&p)]),
        5,
        &[
            "over.img",
            "Firmware image size check failed",
            "payload is 5003",
        ],
    );
}

#[test]
fn verify_crc_mismatch_exits_6() {
    let f = Fixture::new();
    let mut bad = f.image.clone();
    bad[HEADER_LEN + 1234] ^= 0x10;
    let p = f.file("crc.img", &bad);
    let o = run(&["verify", s(&p), "--json"]);
    assert_fails(&o, 6, &["crc.img", "Firmware image CRC check failed"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 6);
    assert_eq!(v["checks"][3]["status"], "fail");
}

#[test]
fn empty_file_exits_3() {
    let f = Fixture::new();
    let p = f.file("empty.img", b"");
    for cmd in ["verify", "inspect"] {
        assert_fails(
            &run(&[cmd, s(&p)]),
            3,
            &["empty.img", "is empty", "not an OCPC image"],
        );
    }
}

#[test]
fn directory_exits_66() {
    let f = Fixture::new();
    for cmd in ["verify", "inspect"] {
        assert_fails(
            &run(&[cmd, s(f.dir.path())]),
            66,
            &[s(f.dir.path()), "is a directory"],
        );
    }
}

#[test]
fn missing_file_exits_66() {
    let f = Fixture::new();
    let p = f.path("nope.img");
    for cmd in ["verify", "inspect"] {
        assert_fails(&run(&[cmd, s(&p)]), 66, &["nope.img", "no such file"]);
    }
}

#[test]
fn path_through_a_file_exits_66() {
    let f = Fixture::new();
    let file = f.file("plain", b"x");
    let p = file.join("image.img");
    assert_fails(
        &run(&["verify", s(&p)]),
        66,
        &["plain/image.img", "not a directory"],
    );
}

#[test]
fn special_files_are_refused_without_blocking() {
    // A FIFO would block a naive reader forever; it is refused from its metadata.
    let f = Fixture::new();
    let fifo = f.path("pipe.img");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        assert_fails(&run(&["inspect", s(&fifo)]), 66, &["pipe.img", "is a FIFO"]);
    } else {
        eprintln!("SKIPPED the FIFO case: mkfifo is not available");
    }
    assert_fails(
        &run(&["verify", "/dev/null"]),
        66,
        &["/dev/null", "character device"],
    );
}

#[test]
fn unreadable_file_exits_66() {
    use std::os::unix::fs::PermissionsExt as _;
    let f = Fixture::new();
    let p = f.file("secret.img", &f.image);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&p).is_ok() {
        // root (CAP_DAC_OVERRIDE) reads it anyway: the FIFO, /dev/null and
        // path-through-a-file cases cover the other refusals.
        eprintln!(
            "SKIPPED unreadable_file_exits_66: running with permission to read mode-000 files (root)"
        );
        return;
    }
    assert_fails(
        &run(&["verify", s(&p)]),
        66,
        &["secret.img", "Permission denied"],
    );
}

#[test]
fn files_over_64_mib_are_refused_before_reading() {
    let f = Fixture::new();
    let p = f.path("huge.img");
    let file = fs::File::create(&p).unwrap();
    // Sparse: no disk space used.
    file.set_len((64 << 20) + 1).unwrap();
    assert_fails(&run(&["inspect", s(&p)]), 66, &["huge.img", "64 MiB"]);
    assert_fails(
        &run(&[
            "pack",
            s(&p),
            "--board",
            "meta",
            "-o",
            s(&f.path("out.img")),
        ]),
        66,
        &["huge.img", "64 MiB"],
    );
    assert!(!f.path("out.img").exists());
}

// ---- inspect ----

#[test]
fn inspect_reports_a_bad_crc_but_exits_0() {
    let f = Fixture::new();
    let mut bad = f.image.clone();
    bad[HEADER_LEN] ^= 1;
    let p = f.file("crc.img", &bad);
    let o = run(&["inspect", s(&p)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("MISMATCH"), "{out}");
    assert!(
        out.contains("verdict            Firmware image CRC check failed"),
        "{out}"
    );

    let mut bad = f.image.clone();
    bad[0] = b'X';
    let p = f.file("nomagic.img", &bad);
    assert_fails(
        &run(&["inspect", s(&p)]),
        3,
        &["nomagic.img", "No firmware header found"],
    );
}

#[test]
fn inspect_names_unknown_devices() {
    let f = Fixture::new();
    let img = firmware::pack(b"bits", PciId::new(0x8086, 0x1533), 0).unwrap();
    let p = f.file("intel.img", &img);
    let o = run(&["inspect", s(&p)]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("8086:1533 (unknown device)"), "{out}");
    assert!(
        out.contains("FPGA bitstream (not a simulator one)"),
        "{out}"
    );
}

// ---- pack ----

#[test]
fn sim_bitstream_pack_inspect_round_trip() {
    let f = Fixture::new();
    let bit = f.path("sim.bit");
    let img = f.path("sim.img");
    let o = run(&[
        "sim-bitstream",
        "--image-version",
        "1.21",
        "--size",
        "8K",
        "-o",
        s(&bit),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("simulator only"), "{}", stdout(&o));
    assert_eq!(fs::metadata(&bit).unwrap().len(), 8192);

    let o = run(&[
        "pack",
        s(&bit),
        "--vendor",
        "0x18d4",
        "--device",
        "1008",
        "--hw-rev",
        "0x0a",
        "-o",
        s(&img),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("boots fw 1.21"), "{}", stdout(&o));

    let bytes = fs::read(&img).unwrap();
    let h = firmware::verify(&bytes, Some(Board::Celestica.id())).unwrap();
    assert_eq!(firmware::payload(&bytes), fs::read(&bit).unwrap());

    let o = run(&["inspect", s(&img)]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for want in [
        "magic              OCPC".to_owned(),
        "PCI vendor:device  18d4:1008 (Celestica Time Card)".to_owned(),
        "payload size       header 8192 bytes, actual 8192 bytes: match".to_owned(),
        "hw revision        10".to_owned(),
        format!(
            "CRC-16             header 0x{0:04x}, computed 0x{0:04x}: match",
            h.crc
        ),
        "boots fw 1.21 (raw 0x00008015)".to_owned(),
        "capabilities       basic, signal generators, frequency counters".to_owned(),
        "verdict            valid OCPC image for Celestica Time Card".to_owned(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }

    let o = run(&["inspect", s(&img), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["magic"], "OCPC");
    assert_eq!(v["pci_id"], "18d4:1008");
    assert_eq!(v["vendor"], "0x18d4");
    assert_eq!(v["device"], "0x1008");
    assert_eq!(v["board"], "celestica");
    assert_eq!(v["board_name"], "Celestica Time Card");
    assert_eq!(v["payload_size"]["header"], 8192);
    assert_eq!(v["payload_size"]["actual"], 8192);
    assert_eq!(v["payload_size"]["matches"], true);
    assert_eq!(v["hw_revision"], 10);
    assert_eq!(v["crc"]["header"], format!("0x{:04x}", h.crc));
    assert_eq!(v["crc"]["computed"], format!("0x{:04x}", h.crc));
    assert_eq!(v["crc"]["matches"], true);
    assert_eq!(v["simulator_bitstream"]["boots"], "fw 1.21");
    assert_eq!(v["simulator_bitstream"]["capabilities"]["freq"], true);
    assert_eq!(v["valid"], true);
    assert_eq!(v["verdict"], "valid OCPC image for Celestica Time Card");
    assert_eq!(f.names(), ["sim.bit", "sim.img"]);
}

#[test]
fn pack_refuses_an_existing_output_without_force() {
    let f = Fixture::new();
    let bit = f.file("top.bit", b"raw bitstream");
    let out = f.file("out.img", b"precious");
    assert_fails(
        &run(&["pack", s(&bit), "--board", "meta", "-o", s(&out)]),
        73,
        &["out.img", "already exists", "--force"],
    );
    assert_eq!(fs::read(&out).unwrap(), b"precious");
    assert_eq!(f.names(), ["out.img", "top.bit"]);

    let o = run(&["pack", s(&bit), "--board", "meta", "-o", s(&out), "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(firmware::verify(&fs::read(&out).unwrap(), Some(Board::Meta.id())).is_ok());
    assert_eq!(f.names(), ["out.img", "top.bit"]);
}

#[test]
fn pack_refuses_an_unknown_device_without_force() {
    let f = Fixture::new();
    let bit = f.file("top.bit", b"raw bitstream");
    let out = f.path("out.img");
    assert_fails(
        &run(&[
            "pack",
            s(&bit),
            "--vendor",
            "8086",
            "--device",
            "0x1533",
            "-o",
            s(&out),
        ]),
        2,
        &["8086:1533", "not a Time Card", "--force"],
    );
    assert!(!out.exists());
    let o = run(&[
        "pack",
        s(&bit),
        "--vendor",
        "8086",
        "--device",
        "0x1533",
        "-o",
        s(&out),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning"), "{}", stderr(&o));
    assert!(firmware::verify(&fs::read(&out).unwrap(), Some(PciId::new(0x8086, 0x1533))).is_ok());
}

#[test]
fn pack_refuses_an_already_packed_input_without_force() {
    let f = Fixture::new();
    let img = f.file("already.img", &f.image);
    let out = f.path("twice.img");
    assert_fails(
        &run(&["pack", s(&img), "--board", "meta", "-o", s(&out)]),
        1,
        &["already.img", "already starts with OCPC"],
    );
    assert!(!out.exists());
    assert_eq!(f.names(), ["already.img"]);
}

#[test]
fn pack_refuses_an_empty_bitstream() {
    let f = Fixture::new();
    let bit = f.file("empty.bit", b"");
    let out = f.path("out.img");
    for force in [false, true] {
        let mut args = vec!["pack", s(&bit), "--board", "meta", "-o", s(&out)];
        if force {
            args.push("--force");
        }
        assert_fails(&run(&args), 1, &["empty.bit", "empty", "nothing to pack"]);
        assert!(!out.exists());
    }
    assert_eq!(f.names(), ["empty.bit"]);
}

#[test]
fn pack_missing_input_and_uncreatable_output() {
    let f = Fixture::new();
    assert_fails(
        &run(&[
            "pack",
            s(&f.path("no.bit")),
            "--board",
            "meta",
            "-o",
            s(&f.path("o.img")),
        ]),
        66,
        &["no.bit", "no such file"],
    );
    let bit = f.file("top.bit", b"bits");
    assert_fails(
        &run(&[
            "pack",
            s(&bit),
            "--board",
            "meta",
            "-o",
            s(&f.path("no/dir/o.img")),
        ]),
        73,
        &["cannot create", "o.img"],
    );
    assert_fails(
        &run(&[
            "pack",
            s(&bit),
            "--board",
            "meta",
            "-o",
            s(f.dir.path()),
            "--force",
        ]),
        73,
        &["is a directory"],
    );
    assert_eq!(f.names(), ["top.bit"]);
}

#[test]
fn usage_errors_exit_2() {
    let f = Fixture::new();
    let bit = f.file("top.bit", b"bits");
    let o = run(&[
        "pack",
        s(&bit),
        "--vendor",
        "zz",
        "--device",
        "1",
        "-o",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("0x1d9b"), "{}", stderr(&o));
    let o = run(&[
        "verify",
        s(&bit),
        "--board",
        "meta",
        "--pci-id",
        "1d9b:0400",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["sim-bitstream", "--image-version", "0x10000", "-o", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("loader"), "{}", stderr(&o));
    let o = run(&[
        "sim-bitstream",
        "--image-version",
        "1.2",
        "--size",
        "4",
        "-o",
        s(&f.path("s.bit")),
    ]);
    assert_fails(&o, 2, &["12 bytes"]);
    assert!(!f.path("s.bit").exists());
}

#[test]
fn help_lists_the_exit_codes() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for code in [
        "0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "66", "69", "73", "74", "75",
    ] {
        assert!(
            out.contains(&format!("\n  {code}")),
            "help lacks exit code {code}:\n{out}"
        );
    }
    for sub in [
        "inspect",
        "verify",
        "pack",
        "sim-bitstream",
        "flash",
        "dump",
        "info",
    ] {
        assert!(out.contains(sub), "{out}");
    }
    let o = run(&["sim-bitstream", "--help"]);
    assert!(stdout(&o).contains("simulator"), "{}", stdout(&o));
}

// ---- verify --device ----

#[test]
fn verify_against_a_simulator_file() {
    let f = Fixture::new();
    let bar = f.path("card.bar");
    let _sim = Sim::create_file(&bar, &SimConfig::default()).unwrap();
    let dev = format!("sim:{}", s(&bar));

    let meta = f.file("meta.img", &f.image);
    let o = run(&["verify", s(&meta), "--device", &dev]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "Meta OCP Time Card (1d9b:0400), from --device {dev}"
        )),
        "{out}"
    );
    assert!(out.contains("compatibility  ok"), "{out}");
    assert!(out.contains("running fw 1.20"), "{out}");
    let o = run(&["verify", s(&meta), "--device", &dev, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["target"]["from"], format!("--device {dev}"));
    assert_eq!(v["target"]["running_firmware"], "fw 1.20");

    let cel = firmware::pack(&make_bitstream(0x8015, 100), Board::Celestica.id(), 0).unwrap();
    let cel = f.file("celestica.img", &cel);
    assert_fails(
        &run(&["verify", s(&cel), "--device", &dev]),
        4,
        &[
            "celestica.img",
            "compatibility check failed",
            "18d4:1008",
            "1d9b:0400",
        ],
    );
}

#[test]
fn verify_against_a_missing_or_embedded_simulator() {
    let f = Fixture::new();
    let meta = f.file("meta.img", &f.image);
    let dev = format!("sim:{}", s(&f.path("gone.bar")));
    assert_fails(
        &run(&["verify", s(&meta), "--device", &dev]),
        69,
        &["cannot use device", "gone.bar"],
    );
    assert_fails(
        &run(&["verify", s(&meta), "--device", "sim"]),
        2,
        &["embedded", "timecard sim --bar PATH", "sim:PATH"],
    );
}
