//! Every daemon's Prometheus endpoint, scraped from a running `timecard up`
//! on loopback (the PTP server's monitor, the counter's and notify's HTTP
//! ports, the dashboard with the card, fbclockd and its push edge node):
//!
//! - the names follow `timecard_<daemon>_<name>_<unit>` and every endpoint
//!   says which daemons it speaks for in `timecard_build_info`;
//! - the reference parser, Python's `prometheus_client`, reads every sample
//!   of every endpoint with our types, and round-trips escaped label values
//!   and histograms written by the same writer;
//! - every metric the Grafana dashboard (`packaging/grafana/timecard.json`)
//!   queries is exported by one of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use operate::metrics::{Exposition, Histogram, Kind, check_name};

mod common;
use common::{Killed, http_get, lines_of};

/// The address in `line` right after `marker` (`http://ADDR/…`).
fn addr_after(line: &str, marker: &str) -> String {
    let rest = &line[line
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {line}"))
        + marker.len()..];
    rest.split('/').next().unwrap().to_owned()
}

/// One scrape's families: name → type, from the `# TYPE` lines, checked
/// against the naming rules; and the daemons its `timecard_build_info` names.
fn families(endpoint: &str, body: &str) -> (BTreeMap<String, Kind>, BTreeSet<String>) {
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let kind = match kind {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            other => panic!("{endpoint}: type {other} of {name}"),
        };
        check_name(name, kind).unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        assert!(
            out.insert(name.to_owned(), kind).is_none(),
            "{endpoint}: {name} twice"
        );
    }
    let daemons: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("timecard_build_info{daemon=\""))
        .map(|l| l.split('"').next().unwrap().to_owned())
        .collect();
    for name in out.keys().filter(|n| *n != "timecard_build_info") {
        assert!(
            daemons
                .iter()
                .any(|d| name.starts_with(&format!("timecard_{d}_"))),
            "{endpoint}: {name} belongs to none of {daemons:?}"
        );
    }
    (out, daemons)
}

/// The value of the sample `series` (name and labels as written) in `body`.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Parses each file with `prometheus_client` and prints, per file, the
/// families with their samples as JSON (values that are not finite as
/// Python spells them: `inf`, `nan`).
const PARSE: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8").read()
    fams = []
    for f in text_string_to_metric_families(text):
        fams.append({"name": f.name, "type": f.type, "documentation": f.documentation,
                     "samples": [[s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)]
                                 for s in f.samples]})
    out.append(fams)
print(json.dumps(out))
"#;

/// The reference parser's reading of `texts`.
fn reference_parse(dir: &Path, texts: &[&str]) -> Vec<serde_json::Value> {
    let python = eventlog::testkit::python_venv(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-prometheus-client"),
        &["prometheus_client"],
        "prometheus_client",
    );
    let mut args = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let p = dir.join(format!("scrape-{i}.txt"));
        std::fs::write(&p, t).unwrap();
        args.push(p);
    }
    let out = Command::new(python)
        .arg("-c")
        .arg(PARSE)
        .args(&args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "prometheus_client refused a scrape:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the parser")
}

/// Checks that the reference parser read every family and sample of `text`
/// with the type we wrote.
fn parsed_alike(
    endpoint: &str,
    text: &str,
    ours: &BTreeMap<String, Kind>,
    theirs: &serde_json::Value,
) {
    let theirs = theirs.as_array().unwrap();
    assert_eq!(theirs.len(), ours.len(), "{endpoint}: families");
    for f in theirs {
        let name = f["name"].as_str().unwrap();
        let kind = f["type"].as_str().unwrap();
        // The parser names a counter family without its `_total`.
        let full = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        let ours = ours
            .get(&full)
            .unwrap_or_else(|| panic!("{endpoint}: parser saw {full}"));
        assert_eq!(kind, ours.as_str(), "{endpoint}: {full}");
        assert!(
            !f["documentation"].as_str().unwrap().is_empty(),
            "{endpoint}: {full} has no help"
        );
    }
    let samples: usize = theirs
        .iter()
        .map(|f| f["samples"].as_array().unwrap().len())
        .sum();
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(samples, lines, "{endpoint}: samples read");
}

#[test]
fn every_daemon_serves_metrics_the_reference_parser_reads_and_the_dashboard_uses() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("scratch directory");
    let data = format!("embedded:{}", dir.path().join("data").display());
    let any = "127.0.0.1:0";
    let mut child = Command::new(env!("CARGO_BIN_EXE_timecard"))
        .args(["up", "--duration", "90s", "--ptp-port", "0"])
        .args(["--ptp-monitoring", any, "--ptp-quality-window", "3"])
        .arg("--fbclock-shm")
        .arg(dir.path().join("fbclock"))
        .args(["--counter-grpc", any, "--counter-http", any])
        .args(["--counter-backend", &data])
        .args(["--notify-grpc", any, "--notify-http", any])
        .args(["--notify-backend", &data])
        .args(["--dashboard", any])
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap())
        .spawn()
        .expect("spawn timecard up");
    let lines = lines_of(child.stdout.take().unwrap());
    let _up = Killed(child);

    // The banner names every listener.
    let mut endpoints: BTreeMap<&str, String> = BTreeMap::new();
    while endpoints.len() < 4 {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("banner incomplete: {endpoints:?}"));
        let word = line.split_whitespace().next().unwrap_or_default();
        match word {
            "ptp-server" => endpoints.insert("ptp-server", addr_after(&line, "stats http://")),
            "counter" => endpoints.insert("counter", addr_after(&line, "HTTP http://")),
            "notify" => endpoints.insert("notify", addr_after(&line, "HTTP http://")),
            "dashboard" => endpoints.insert("dashboard", addr_after(&line, "http://")),
            _ => None,
        };
    }

    // Wait for the card to lock and TrueTime to follow, so that the values
    // mean something (about 20 s on the simulator).
    let dashboard = endpoints["dashboard"].clone();
    let synced = loop {
        let (_, body) = http_get(&dashboard, "/metrics");
        if value(&body, "timecard_fbclockd_sync_state{state=\"synced\"}") == Some(1.0)
            && value(&body, "timecard_appliance_truetime_contains_truth").is_some()
        {
            break body;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never synced:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(value(&synced, "timecard_appliance_card_up"), Some(1.0));
    assert_eq!(value(&synced, "timecard_appliance_gnss_lock"), Some(1.0));
    assert_eq!(
        value(
            &synced,
            "timecard_appliance_card_sync_state{state=\"in_sync\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&synced, "timecard_appliance_card_holdover"),
        Some(0.0)
    );
    let error =
        value(&synced, "timecard_appliance_card_truth_error_seconds").expect("simulator truth");
    assert!(error.abs() < 1e-6, "card error {error} s");
    assert_eq!(
        value(&synced, "timecard_appliance_truetime_contains_truth"),
        Some(1.0)
    );
    let wou = value(&synced, "timecard_fbclockd_window_of_uncertainty_seconds").unwrap();
    assert!(wou > 0.0 && wou < 1e-3, "WoU {wou} s");

    // One read through the counter's HTTP API, to be counted and timed.
    let (head, _) = http_get(&endpoints["counter"], "/v1/counters/views/metrics-test");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let mut exported = BTreeSet::new();
    let mut texts = Vec::new();
    let mut kinds = Vec::new();
    for (endpoint, addr) in &endpoints {
        let (head, body) = http_get(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{endpoint}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{endpoint}: {head}"
        );
        let (fams, daemons) = families(endpoint, &body);
        let expected: &[&str] = match *endpoint {
            "ptp-server" => &["ptp_server"],
            "counter" => &["counter"],
            "notify" => &["notify", "push"],
            _ => &["appliance", "fbclockd", "push"],
        };
        assert_eq!(
            daemons,
            expected.iter().map(|d| d.to_string()).collect(),
            "{endpoint}"
        );
        for (name, kind) in &fams {
            if *kind == Kind::Histogram {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            } else {
                exported.insert(name.clone());
            }
        }
        texts.push(body);
        kinds.push((endpoint.to_string(), fams));
    }
    let ptp = &texts[kinds.iter().position(|(e, _)| e == "ptp-server").unwrap()];
    assert!(
        value(ptp, "timecard_ptp_server_sptp_exchanges_total").unwrap() > 0.0,
        "{ptp}"
    );
    assert_eq!(value(ptp, "timecard_ptp_server_clock_class"), Some(6.0));
    let counter = &texts[kinds.iter().position(|(e, _)| e == "counter").unwrap()];
    let get_ok = "timecard_counter_operations_total{op=\"get\",outcome=\"ok\"}";
    assert_eq!(value(counter, get_ok), Some(1.0), "{counter}");
    let timed = "timecard_counter_operation_duration_seconds_count{op=\"get\"}";
    assert_eq!(value(counter, timed), Some(1.0), "{counter}");

    // What the writer emits beyond the daemons' plain labels: escaped
    // label values and a histogram with observations.
    let h = Histogram::default();
    for us in [5, 40, 700, 3_000, 20_000_000] {
        h.record(Duration::from_micros(us));
    }
    let tricky = "quote \" backslash \\ newline \n µs";
    let mut m = Exposition::new("counter", "9.9.9");
    m.counter(
        "operations_total",
        "Help with a backslash \\ and\na newline.",
    )
    .sample(&[("op", tricky), ("outcome", "ok")], 7u64);
    m.gauge("offset_seconds", "Negative and special values.")
        .sample(&[("x", "a")], -1.5e-7)
        .sample(&[("x", "b")], f64::INFINITY)
        .sample(&[("x", "c")], f64::NAN);
    m.histogram("operation_duration_seconds", "A histogram.")
        .sample(&[("op", "add")], &h);
    let synthetic = m.finish();
    let (synthetic_kinds, _) = families("synthetic", &synthetic);

    let mut all: Vec<&str> = texts.iter().map(String::as_str).collect();
    all.push(&synthetic);
    let parsed = reference_parse(dir.path(), &all);
    for (i, (endpoint, fams)) in kinds.iter().enumerate() {
        parsed_alike(endpoint, &texts[i], fams, &parsed[i]);
    }
    let theirs = &parsed[texts.len()];
    parsed_alike("synthetic", &synthetic, &synthetic_kinds, theirs);
    let sample = |family: &str, name: &str, le: Option<&str>| -> (serde_json::Value, f64) {
        let f = theirs
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == family)
            .unwrap();
        let s = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s[0] == name && le.is_none_or(|le| s[1]["le"] == le))
            .unwrap_or_else(|| panic!("no {name} {le:?} in {f}"));
        (s[1].clone(), s[2].as_f64().unwrap())
    };
    let offsets = theirs
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "timecard_counter_offset_seconds")
        .unwrap();
    let values: Vec<String> = offsets["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[2].to_string())
        .collect();
    assert_eq!(values, ["-1.5e-7", "\"inf\"", "\"nan\""]);
    let (labels, v) = sample(
        "timecard_counter_operations",
        "timecard_counter_operations_total",
        None,
    );
    assert_eq!(labels["op"], tricky);
    assert_eq!(v, 7.0);
    let f = theirs
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "timecard_counter_operations")
        .unwrap();
    assert_eq!(
        f["documentation"],
        "Help with a backslash \\ and\na newline."
    );
    let hist = "timecard_counter_operation_duration_seconds";
    assert_eq!(
        sample(hist, &format!("{hist}_bucket"), Some("0.00001")).1,
        1.0
    );
    assert_eq!(
        sample(hist, &format!("{hist}_bucket"), Some("0.001")).1,
        3.0
    );
    assert_eq!(sample(hist, &format!("{hist}_bucket"), Some("10")).1, 4.0);
    assert_eq!(sample(hist, &format!("{hist}_bucket"), Some("+Inf")).1, 5.0);
    assert_eq!(sample(hist, &format!("{hist}_count"), None).1, 5.0);
    assert!((sample(hist, &format!("{hist}_sum"), None).1 - 20.003745).abs() < 1e-9);

    // The dashboard queries only what the daemons export.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/timecard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap() >= 36,
        "Grafana 10 schema"
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource")
    );
    let mut queried = BTreeSet::new();
    let mut panels_per_daemon: BTreeMap<String, usize> = BTreeMap::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}");
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .match_indices("timecard_")
                .map(|(i, _)| {
                    let rest = &expr[i..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    &rest[..end]
                })
                .collect();
            assert!(!names.is_empty(), "no metric in {expr}");
            for n in names {
                assert!(
                    exported.contains(n),
                    "the dashboard queries {n}, which nothing exports"
                );
                queried.insert(n.to_owned());
                let daemon = [
                    "appliance",
                    "ptp_server",
                    "fbclockd",
                    "counter",
                    "notify",
                    "push",
                    "build",
                ]
                .into_iter()
                .find(|d| n.starts_with(&format!("timecard_{d}_")))
                .unwrap();
                *panels_per_daemon.entry(daemon.to_owned()).or_default() += 1;
            }
        }
    }
    assert_eq!(panels_per_daemon.len(), 7, "{panels_per_daemon:?}");
    eprintln!(
        "{} metric names exported, {} queried by the dashboard; took {:?}",
        exported.len(),
        queried.len(),
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(80));
}
