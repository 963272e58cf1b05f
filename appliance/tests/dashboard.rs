//! The web dashboard of `timecard up` in a real browser: headless Chromium
//! loads the page `up` serves on the simulator and shows the snapshots pushed
//! to it.
//!
//! How a headless Chromium can watch a page that is fed by a push stream:
//!
//! - `--dump-dom` and `--screenshot` with `--virtual-time-budget` fast-forward
//!   the page's clock. An open WebSocket does not hold virtual time back, so
//!   the budget (whatever its size) runs out about a second after load: the
//!   page has its `hello` frame but not yet a snapshot (they come every
//!   500 ms). `--timeout` does not help: it only stops loading.
//! - An SSE stream is a pending fetch, and a pending fetch stops virtual time:
//!   Chromium waits, in real time, for as long as the stream stays open
//!   (forever, on its own).
//! - So the DOM and the screenshot are taken with
//!   `?transport=sse&stop-after=N`: the page takes N snapshots over SSE in
//!   real time, closes the stream and keeps them on screen; virtual time
//!   resumes, and Chromium dumps.
//! - WebSocket, the page's default transport, is watched in real time: a
//!   Chromium with `--remote-debugging-port=0` keeps the page open, and the
//!   page's title (the sync state and the window of uncertainty once a
//!   snapshot is rendered) is read from DevTools' `/json/list` over HTTP.
//!
//! Chromium must be installed (`apt-get install -y chromium`; scripts/test.sh
//! does it): without it this test fails and says so.

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

mod common;
use common::{Killed, http_get, lines_of};

/// The browser.
const CHROMIUM: &str = "chromium";

/// Fails the test, clearly, when Chromium is missing.
fn require_chromium() {
    match Command::new(CHROMIUM).arg("--version").output() {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("Chromium") => {}
        Ok(o) => panic!(
            "`{CHROMIUM} --version` does not look like Chromium: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "this test needs a headless browser, and `{CHROMIUM}` cannot be run ({e}): \
             install it with `apt-get install -y chromium` (scripts/test.sh does)"
        ),
    }
}

/// Headless Chromium with a profile of its own in `profile` (as root it
/// refuses to start without `--no-sandbox`).
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new(CHROMIUM);
    c.args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Runs `cmd` to completion within `limit` (killing it after), returning stdout.
fn run_within(mut cmd: Command, limit: Duration, what: &str) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut child = Killed(child);
    let mut stdout = child.0.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    while child.0.try_wait().expect("wait for chromium").is_none() {
        assert!(
            Instant::now() < deadline,
            "{what} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("stdout reader")
}

/// Text of the element with `id` in serialized HTML.
fn text_of(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} in:\n{dom}"));
    let start = at + dom[at..].find('>').expect("end of tag") + 1;
    let end = start + dom[start..].find('<').expect("end of text");
    dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `timecard up` on the simulator, every listener on an ephemeral port.
struct Up {
    /// The process.
    child: Killed,
    /// Its stdout, line by line.
    lines: Receiver<String>,
    /// Lines read so far.
    seen: Vec<String>,
    /// Where its log (stderr) goes.
    log: PathBuf,
}

impl Up {
    /// Starts `up` with its dashboard asked for on `dashboard`.
    fn start(dir: &Path, dashboard: SocketAddr) -> Self {
        let log = dir.join("up.log");
        let data = format!("embedded:{}", dir.join("data").display());
        let any = "127.0.0.1:0";
        let mut child = Command::new(env!("CARGO_BIN_EXE_timecard"))
            .args(["up", "--duration", "120s", "--ptp-port", "0"])
            .args(["--ptp-monitoring", "off", "--ptp-quality-window", "3"])
            .arg("--fbclock-shm")
            .arg(dir.join("fbclock"))
            .args(["--counter-grpc", any, "--counter-http", any])
            .args(["--counter-backend", &data])
            .args(["--notify-grpc", any, "--notify-http", any])
            .args(["--notify-backend", &data])
            .args(["--dashboard", &dashboard.to_string()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn timecard up");
        let lines = lines_of(child.stdout.take().expect("piped stdout"));
        Self {
            child: Killed(child),
            lines,
            seen: Vec::new(),
            log,
        }
    }

    /// The first line (from now on) for which `pred` holds.
    fn wait_for(&mut self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    panic!(
                        "timecard up: no {what} within {limit:?}\nstdout:\n{}\nstderr (last lines, newest first):\n{}",
                        self.seen.join("\n"),
                        tail.join("\n")
                    );
                }
            }
        }
    }
}

/// The page title of the dashboard in a Chromium with DevTools on `devtools`.
fn page_title(devtools: &str, url: &str) -> Option<String> {
    let (_, body) = http_get(devtools, "/json/list");
    let targets: serde_json::Value = serde_json::from_str(&body).ok()?;
    targets.as_array()?.iter().find_map(|t| {
        (t["type"] == "page" && t["url"].as_str()?.starts_with(url))
            .then(|| t["title"].as_str().map(str::to_owned))?
    })
}

/// Width and height of a PNG.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[test]
fn a_browser_shows_the_live_dashboard() {
    require_chromium();
    let dir = tempfile::tempdir().expect("scratch directory");
    // Ask for a port that is taken: `up` falls back to an ephemeral one and says so.
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to occupy");
    let busy = taken.local_addr().unwrap();
    let mut up = Up::start(dir.path(), busy);

    let line = up.wait_for("dashboard banner line", Duration::from_secs(30), |l| {
        l.trim_start().starts_with("dashboard ")
    });
    assert!(
        line.contains(&format!("({busy} in use: ephemeral port)")),
        "{line}"
    );
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line}"))
        .to_owned();
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert_ne!(host, busy.to_string());
    assert!(up.seen[0].contains("+ dashboard running"), "{}", up.seen[0]);

    // The page: compiled in, a fresh viewer token in place of the placeholder, not cached.
    let (head, page) = http_get(&host, "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    assert!(page.contains("tc1.dashboard.browser-"), "no viewer token");
    assert!(!page.contains("{{VIEWER_TOKEN}}"));
    let (_, again) = http_get(&host, "/");
    assert_ne!(page, again, "every page has a token of its own");
    let (_, token) = http_get(&host, "/token");
    assert!(
        token.starts_with("tc1.dashboard.browser-3.browser."),
        "{token}"
    );

    // TrueTime comes about 10 s after start (IN SYNC, then class 6).
    up.wait_for("TrueTime", Duration::from_secs(40), |l| {
        l.contains("truetime wou")
    });

    // WebSocket, in real time: the page's title follows the snapshots.
    let mut browser = chromium(&dir.path().join("profile-ws"));
    let mut browser = Killed(
        browser
            .arg("--remote-debugging-port=0")
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium"),
    );
    let stderr = lines_of(browser.0.stderr.take().expect("piped stderr"));
    let devtools = loop {
        let l = stderr
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium prints its DevTools address");
        if let Some(ws) = l.strip_prefix("DevTools listening on ws://") {
            break ws.split('/').next().expect("host:port").to_owned();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let title = loop {
        let title = page_title(&devtools, &url);
        if let Some(t) = title.as_ref().filter(|t| t.contains(" · WOU ")) {
            break t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot rendered over WebSocket; title {title:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(title.starts_with("IN SYNC · WOU "), "{title}");
    drop(browser);

    // SSE, the fallback, until 4 snapshots: the DOM has every live value.
    let mut dump = chromium(&dir.path().join("profile-dom"));
    dump.args(["--virtual-time-budget=8000", "--dump-dom"])
        .arg(format!("{url}?transport=sse&stop-after=4"));
    let dom = run_within(dump, Duration::from_secs(60), "chromium --dump-dom");
    assert_eq!(text_of(&dom, "updates"), "4", "{dom}");
    assert!(text_of(&dom, "conn-status").contains("(SSE)"), "{dom}");
    assert_eq!(text_of(&dom, "sync-state"), "IN SYNC");
    assert_eq!(text_of(&dom, "clock-class"), "6");
    assert_eq!(text_of(&dom, "gnss-fix"), "yes");
    let wou: i64 = text_of(&dom, "wou-ns")
        .parse()
        .unwrap_or_else(|_| panic!("WOU is not a number: {}", text_of(&dom, "wou-ns")));
    assert!((1..1_000_000).contains(&wou), "WOU {wou} ns");
    text_of(&dom, "ptp-clients")
        .parse::<u64>()
        .expect("PTP clients is a number");
    let sptp: f64 = text_of(&dom, "ptp-sptp-rate")
        .parse()
        .expect("SPTP rate is a number");
    assert!(sptp > 0.0, "fbclockd exchanges SPTP with the server");
    assert!(
        text_of(&dom, "counter-clock").starts_with("fbclock"),
        "{dom}"
    );
    assert!(
        text_of(&dom, "notify-clock").starts_with("fbclock"),
        "{dom}"
    );

    // A screenshot for people (kept as a build artifact).
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory")
        .join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts directory");
    let png = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let mut shot = chromium(&dir.path().join("profile-png"));
    shot.arg(format!("--screenshot={}", png.display()))
        .args(["--window-size=1280,900", "--virtual-time-budget=8000"])
        .arg(format!("{url}?transport=sse&stop-after=6"));
    run_within(shot, Duration::from_secs(60), "chromium --screenshot");
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(png_size(&bytes), (1280, 900));
    // A blank page of that size is a few kB; the dashboard is over 100 kB.
    assert!(bytes.len() > 40_000, "{} bytes: a blank page?", bytes.len());

    // The edge node counted both transports.
    let (_, status) = http_get(&host, "/v1/status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert!(
        status["accepted"]["websocket"].as_u64() >= Some(1),
        "{status}"
    );
    assert!(status["accepted"]["sse"].as_u64() >= Some(2), "{status}");

    // Ctrl-C (SIGTERM here) stops `up`, dashboard included, promptly.
    let pid = up.child.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let stopped = Instant::now();
    up.wait_for("stop message", Duration::from_secs(15), |l| {
        l.starts_with("timecard up: stopping")
    });
    loop {
        if let Some(status) = up.child.0.try_wait().expect("wait for timecard up") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "timecard up did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(taken);
}
