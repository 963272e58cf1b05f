//! End to end: a counter service captures real traffic; `timecard-replay`
//! replays it to an identical candidate (zero differences after
//! normalization, writes reach the candidate's own store), to a candidate
//! with seeded bugs behind a proxy (each seeded mismatch, timeout and
//! garbage answer is found; corrupt and newer-schema capture records are
//! recorded and the replay goes on), and to production itself (writes are
//! refused). pyiceberg, another Iceberg implementation, reads the diff
//! table and finds exactly the seeded mismatches.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use counter::cli::{Running, ServeArgs, start};
use replay::record::Exchange;
use replayer::client::HttpClient;
use serde_json::Value;

/// The counter named by requests the buggy candidate answers one too high.
const SEEDED: &str = "/v1/counters/likes/seeded";
const SLOW: &str = "/v1/counters/likes/slow";
const GARBAGE: &str = "/v1/counters/likes/garbage";

fn counter_args(dir: &Path, capture: bool) -> ServeArgs {
    let mut args = ServeArgs {
        namespaces: vec!["likes=accurate".into()],
        grpc: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        ..ServeArgs::defaults()
    };
    args.common.backend = format!("embedded:{}", dir.display());
    args.common.system_clock_bound_us = 1_000;
    args.capture.capture = capture;
    args.access = access::AccessArgs::insecure();
    args
}

/// A token file (mode 0600) in `dir`, and a client sending its token.
fn token_file(dir: &Path, name: &str) -> (String, HttpClient) {
    let path = dir.join(name);
    access::ensure_token_file(&path).unwrap();
    let token = access::ClientToken::from_file(&path).unwrap();
    (
        path.display().to_string(),
        HttpClient::new().with_token(Some(token)),
    )
}

async fn call(client: &HttpClient, method: &str, url: &str, body: &str) -> (u16, String) {
    let a = client
        .call(method, url, body.to_owned(), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    (a.status, a.body)
}

/// `method base+path` must answer `status`.
async fn expect(client: &HttpClient, method: &str, url: String, body: &str, status: u16) {
    let (s, answer) = call(client, method, &url, body).await;
    assert_eq!(s, status, "{method} {url}: {answer}");
}

/// Production traffic: adds, add-and-gets, reads, a clear, errors.
/// Returns how many requests were made and how many were writes.
async fn traffic(client: &HttpClient, base: &str) -> (usize, usize) {
    let counter = |name: &str| format!("{base}/v1/counters/likes/{name}");
    let mut requests = 0;
    let mut writes = 0;
    for round in 0..6 {
        for name in ["a", "b", "seeded"] {
            let delta = format!("{{\"delta\": {}}}", round + 1);
            expect(client, "POST", counter(name) + "/add", &delta, 200).await;
            expect(client, "GET", counter(name), "", 200).await;
            requests += 2;
            writes += 1;
        }
        expect(
            client,
            "POST",
            counter("b") + "/add-and-get",
            "{\"delta\": -1}",
            200,
        )
        .await;
        requests += 1;
        writes += 1;
    }
    for path in [SLOW, GARBAGE, SLOW] {
        expect(client, "GET", format!("{base}{path}"), "", 200).await;
        requests += 1;
    }
    expect(client, "POST", counter("a") + "/clear", "", 200).await;
    // Errors are answers too: bad JSON, unknown namespace.
    expect(client, "POST", counter("a") + "/add", "{\"delta\":", 400).await;
    expect(client, "GET", format!("{base}/v1/counters/nope/x"), "", 404).await;
    requests += 3;
    writes += 2;
    (requests, writes)
}

/// The candidate with seeded bugs: a proxy in front of a correct counter
/// that adds one to every count of [`SEEDED`], stalls [`SLOW`] and answers
/// [`GARBAGE`] with HTML.
async fn buggy_proxy(State(backend): State<String>, request: Request) -> Response {
    let client = HttpClient::new();
    let method = request.method().as_str().to_owned();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), ToString::to_string);
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    if path == GARBAGE {
        return Response::new(Body::from("<html>502 Bad Gateway</html>"));
    }
    if path == SLOW {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let answer = client
        .call(
            &method,
            &format!("{backend}{path}"),
            String::from_utf8_lossy(&body).into_owned(),
            Duration::from_secs(10),
        )
        .await
        .expect("the real candidate answers");
    let mut out = answer.body;
    if path == SEEDED && method == "GET" {
        let mut v: Value = serde_json::from_str(&out).unwrap();
        v["count"] = (v["count"].as_i64().unwrap() + 1).into();
        out = v.to_string();
    }
    Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .body(Body::from(out))
        .unwrap()
}

fn replay_bin(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_timecard-replay"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), summary, stderr)
}

fn total(summary: &Value, field: &str) -> u64 {
    summary["total"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no total.{field} in {summary:#}"))
}

/// Reads the diff table with pyiceberg: per run id, the rows as
/// (seq, outcome, diff_path) and the partition spec.
fn pyiceberg_rows(warehouse: &Path) -> Value {
    let python = eventlog::testkit::python_venv(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-pyiceberg"),
        &["pyiceberg[sql-sqlite,pyarrow]"],
        "pyiceberg, pyarrow, sqlalchemy",
    );
    let script = r#"
import json, sys
from pyiceberg.catalog.sql import SqlCatalog
wh = sys.argv[1]
cat = SqlCatalog("timecard", uri=f"sqlite:///{wh}/catalog.db", warehouse=f"file://{wh}/warehouse")
t = cat.load_table("replay.diffs")
rows = t.scan(selected_fields=("run_id", "seq", "outcome", "diff_path", "endpoint")).to_arrow().to_pylist()
spec = [(f.name, str(f.transform)) for f in t.spec().fields]
mismatches = t.scan(row_filter="outcome == 'mismatch'").to_arrow().num_rows
print(json.dumps({"rows": rows, "spec": spec, "mismatch_rows": mismatches}))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(warehouse)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyiceberg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn replay_finds_exactly_the_seeded_bugs_and_nothing_else() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // Production and the identical candidate need tokens (their own each).
    let (prod_token, client) = token_file(dir.path(), "prod-token");
    let (same_token, same_client) = token_file(dir.path(), "same-token");
    let url = |r: &Running| format!("http://{}", r.http);
    let mut prod_args = counter_args(&dir.path().join("prod"), true);
    prod_args.access = access::AccessArgs::token_file(&prod_token);
    let prod = rt.block_on(start(&prod_args)).unwrap();
    let prod_url = url(&prod);
    let (requests, writes) = rt.block_on(traffic(&client, &prod_url));

    // The tap writes asynchronously: wait until every exchange is in the log.
    let captured_all = |n: usize| wait_captured(&rt, &client, &prod_url, n);
    captured_all(requests);
    let warehouse = dir.path().join("diffs");
    let wh = warehouse.to_str().unwrap();

    // 1. An identical candidate with its own store: nothing differs, and
    // the writes reached its store.
    let mut same_args = counter_args(&dir.path().join("same"), false);
    same_args.access = access::AccessArgs::token_file(&same_token);
    let same = rt.block_on(start(&same_args)).unwrap();
    // Without a token production does not hand out its capture.
    let (code, _, stderr) = replay_bin(&[
        "run",
        "--source",
        &prod_url,
        "--candidate",
        &url(&same),
        "--no-table",
    ]);
    assert!(code == 1 && stderr.contains("401"), "{code} {stderr}");
    let (code, summary, stderr) = replay_bin(&[
        "run",
        "--source",
        &prod_url,
        "--api-token-file",
        &prod_token,
        "--candidate-api-token-file",
        &same_token,
        "--candidate",
        &url(&same),
        "--rules",
        "counter",
        "--warehouse",
        wh,
        "--run-id",
        "identical",
        "--json",
        "--rate",
        "0",
        "--fail-on-diff",
    ]);
    assert_eq!(code, 0, "{summary:#}\n{stderr}");
    assert_eq!(total(&summary, "records"), requests as u64);
    assert_eq!(total(&summary, "replayed"), requests as u64);
    assert_eq!(total(&summary, "matched"), requests as u64, "{summary:#}");
    assert_eq!(total(&summary, "skipped_unsafe"), 0);
    let count = |base: &str, name: &str| {
        let (_, body) = rt.block_on(call(
            &client,
            "GET",
            &format!("{base}/v1/counters/likes/{name}"),
            "",
        ));
        serde_json::from_str::<Value>(&body).unwrap()["count"].clone()
    };
    for name in ["a", "b", "seeded"] {
        assert_eq!(count(&url(&same), name), count(&prod_url, name), "{name}");
    }
    let lineage = &summary["production_lineages"][0];
    assert_eq!(lineage["service"], "counter");
    assert!(
        lineage["dependencies"]["store"]
            .as_str()
            .unwrap()
            .contains("prod")
    );
    assert_eq!(
        summary["candidate_lineage"]["config_hash"],
        lineage["config_hash"]
    );

    // 2. The capture exported to a file, with bad records added; replayed
    // to the buggy candidate.
    // Those three reads of production were captured too.
    let requests = requests + 3;
    captured_all(requests);
    let export = dir.path().join("capture.ndjson");
    let (code, _, stderr) = replay_bin(&[
        "export",
        "--source",
        &prod_url,
        "--api-token-file",
        &prod_token,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&export).unwrap();
    let captured: Vec<(u64, Exchange)> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                serde_json::from_value(v["record"].clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(captured.len(), requests);
    let seqs_of = |path: &str| -> BTreeSet<u64> {
        captured
            .iter()
            .filter(|(_, e)| e.request.method == "GET" && e.request.path == path)
            .map(|(s, _)| *s)
            .collect()
    };
    let (seeded, slow, garbage) = (seqs_of(SEEDED), seqs_of(SLOW), seqs_of(GARBAGE));
    // Six rounds of traffic and the comparison of counts above.
    assert_eq!((seeded.len(), slow.len(), garbage.len()), (7, 2, 1));
    let mut newer: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    newer["seq"] = 9_001.into();
    newer["record"]["schema"] = 2.into();
    newer["record"]["headers"] = serde_json::json!({"x": "y"});
    let bad_lines = [
        r#"{"seq":9000,"unreadable":"\u0000\u00ff half a record"}"#.to_owned(),
        newer.to_string(),
        "this is not a capture line".to_owned(),
        r#"{"seq":9002,"record":{"schema":1,"id":"cut short"}}"#.to_owned(),
    ];
    std::fs::write(&export, format!("{text}{}\n", bad_lines.join("\n"))).unwrap();

    let real = rt
        .block_on(start(&counter_args(&dir.path().join("buggy"), false)))
        .unwrap();
    let proxy = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = l.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(buggy_proxy)
            .with_state(url(&real));
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    });
    let (code, summary, stderr) = replay_bin(&[
        "run",
        "--source",
        export.to_str().unwrap(),
        "--candidate",
        &format!("http://{proxy}"),
        "--rules",
        "counter",
        "--warehouse",
        wh,
        "--run-id",
        "seeded",
        "--json",
        "--rate",
        "0",
        "--timeout-ms",
        "4000",
        "--fail-on-diff",
    ]);
    assert_eq!(
        code, 3,
        "differences must fail the run: {summary:#}\n{stderr}"
    );
    assert_eq!(total(&summary, "records"), requests as u64 + 4);
    assert_eq!(
        total(&summary, "mismatched"),
        seeded.len() as u64,
        "{summary:#}"
    );
    assert_eq!(total(&summary, "differences"), seeded.len() as u64);
    assert_eq!(total(&summary, "candidate_timeout"), slow.len() as u64);
    assert_eq!(total(&summary, "candidate_garbage"), garbage.len() as u64);
    assert_eq!(total(&summary, "corrupt_record"), 3);
    assert_eq!(total(&summary, "schema_drift"), 1);
    assert_eq!(
        total(&summary, "matched"),
        (requests - seeded.len() - slow.len() - garbage.len()) as u64
    );

    // The recorded differences, read back through the CLI.
    let out = Command::new(env!("CARGO_BIN_EXE_timecard-replay"))
        .args([
            "diffs",
            "--warehouse",
            wh,
            "--run-id",
            "seeded",
            "--outcome",
            "mismatch",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: BTreeSet<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(listed, seeded);

    // 3. Production itself as the candidate: reads only, its store untouched.
    let before: Vec<Value> = ["a", "b", "seeded"]
        .iter()
        .map(|n| count(&prod_url, n))
        .collect();
    let (code, summary, stderr) = replay_bin(&[
        "run",
        "--source",
        &prod_url,
        "--api-token-file",
        &prod_token,
        "--candidate",
        &prod_url,
        "--rules",
        "counter",
        "--no-table",
        "--json",
        "--rate",
        "0",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(total(&summary, "skipped_unsafe"), writes as u64);
    let after: Vec<Value> = ["a", "b", "seeded"]
        .iter()
        .map(|n| count(&prod_url, n))
        .collect();
    assert_eq!(before, after);
    // Replayed requests carry the replay header: production did not capture
    // them again (the six count reads around it were captured).
    let requests = requests + 6;
    captured_all(requests);
    std::thread::sleep(Duration::from_millis(300));
    captured_all(requests);

    // Bad requests get clear answers, never a replay of something unproven.
    let (s, body) = rt.block_on(call(
        &client,
        "GET",
        &format!("{prod_url}/v1/capture?from=0"),
        "",
    ));
    assert_eq!(s, 400, "{body}");
    let (s, body) = rt.block_on(call(
        &same_client,
        "GET",
        &format!("{}/v1/capture", url(&same)),
        "",
    ));
    assert!(s == 404 && body.contains("--capture"), "{s} {body}");
    let (code, _, stderr) = replay_bin(&[
        "run",
        "--source",
        &prod_url,
        "--candidate",
        "http://127.0.0.1:1",
        "--no-table",
    ]);
    assert!(
        code == 1 && stderr.contains("--reads-only"),
        "{code} {stderr}"
    );
    let (code, _, stderr) = replay_bin(&[
        "run",
        "--source",
        "nats://127.0.0.1:4222",
        "--candidate",
        &url(&same),
        "--no-table",
    ]);
    assert!(code == 1 && stderr.contains("http://"), "{code} {stderr}");

    // 4. pyiceberg finds exactly the seeded mismatches (and nothing for
    // the identical candidate), in a table partitioned by day and endpoint.
    let table = pyiceberg_rows(&warehouse);
    let rows = table["rows"].as_array().unwrap();
    assert!(
        rows.iter().all(|r| r["run_id"] == "seeded"),
        "the identical run wrote rows: {rows:#?}"
    );
    let of = |outcome: &str| -> BTreeSet<(u64, String)> {
        rows.iter()
            .filter(|r| r["outcome"] == outcome)
            .map(|r| {
                (
                    r["seq"].as_u64().unwrap(),
                    r["diff_path"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let expected: BTreeSet<(u64, String)> =
        seeded.iter().map(|s| (*s, "/count".to_owned())).collect();
    assert_eq!(of("mismatch"), expected);
    assert_eq!(table["mismatch_rows"], seeded.len());
    let seqs =
        |set: BTreeSet<(u64, String)>| set.into_iter().map(|(s, _)| s).collect::<BTreeSet<_>>();
    assert_eq!(seqs(of("candidate_timeout")), slow);
    assert_eq!(seqs(of("candidate_garbage")), garbage);
    assert_eq!(seqs(of("schema_drift")), BTreeSet::from([9_001]));
    assert_eq!(
        seqs(of("corrupt_record")),
        BTreeSet::from([0, 9_000, 9_002])
    );
    assert_eq!(rows.len(), seeded.len() + slow.len() + garbage.len() + 4);
    let spec = table["spec"].to_string();
    assert!(spec.contains("day") && spec.contains("identity"), "{spec}");

    for r in [&prod, &same, &real] {
        r.stop();
    }
}

fn notify_args(dir: &Path, capture: bool) -> notify::cli::ServeArgs {
    let mut args = notify::cli::ServeArgs::defaults();
    args.common.backend = format!("embedded:{}", dir.display());
    args.common.system_clock_bound_us = 1_000;
    args.grpc = "127.0.0.1:0".parse().unwrap();
    args.http = "127.0.0.1:0".parse().unwrap();
    args.capture.capture = capture;
    args.access = access::AccessArgs::insecure();
    args
}

#[test]
fn notify_traffic_replays_to_an_identical_candidate_without_differences() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let client = HttpClient::new();
    let start = |name: &str, capture: bool| {
        let args = notify_args(&dir.path().join(name), capture);
        rt.block_on(notify::cli::start_with_clock(&args, args.common.clock()))
            .unwrap()
    };
    let prod = start("prod", true);
    let base = format!("http://{}", prod.http);
    let mut requests = 0;
    rt.block_on(async {
        for i in 0..4 {
            let event = format!(
                r#"{{"type":"new-episode","member":"m1","targets":["tv"],"body":{{"episode":{i}}}}}"#
            );
            assert_eq!(call(&client, "POST", &format!("{base}/v1/events"), &event).await.0, 202);
        }
        let batch = r#"{"events":[{"type":"live-event","member":"m1","body":{}},{"type":"nope","member":"m1","body":{}}]}"#;
        assert_eq!(call(&client, "POST", &format!("{base}/v1/events"), batch).await.0, 200);
        requests += 5;
        // Let the pipeline store them before members read.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (s, body) = call(&client, "GET", &format!("{base}/v1/members/m1/notifications?since=0"), "").await;
        assert_eq!(s, 200);
        let changes: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(changes["changes"].as_array().unwrap().len(), 5, "{changes}");
        let state = call(&client, "GET", &format!("{base}/v1/members/m1/state"), "").await;
        assert_eq!(state.0, 200);
        let bad = call(&client, "GET", &format!("{base}/v1/members/m1/notifications?since=x"), "").await;
        assert_eq!(bad.0, 400);
        requests += 3;
    });
    wait_captured(&rt, &client, &base, requests);
    let candidate = start("candidate", false);
    let (code, summary, stderr) = replay_bin(&[
        "run",
        "--source",
        &base,
        "--candidate",
        &format!("http://{}", candidate.http),
        "--rules",
        "notify",
        "--speed",
        "1",
        "--json",
        "--no-table",
        "--fail-on-diff",
    ]);
    assert_eq!(code, 0, "{summary:#}\n{stderr}");
    assert_eq!(total(&summary, "records"), requests as u64);
    assert_eq!(total(&summary, "matched"), requests as u64, "{summary:#}");
    assert_eq!(summary["endpoints"]["/v1/events"]["replayed"], 5);
    rt.block_on(async {
        prod.stop().await;
        candidate.stop().await;
    });
}

/// Waits (up to a minute: the tap's writer runs at idle priority) until
/// the service at `base` has written exactly `n` captured exchanges.
fn wait_captured(rt: &tokio::runtime::Runtime, client: &HttpClient, base: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stats) = rt.block_on(call(client, "GET", &format!("{base}/v1/capture/stats"), ""));
        let stats: Value = serde_json::from_str(&stats).unwrap();
        if stats["written"].as_u64() == Some(n as u64) {
            return;
        }
        assert!(Instant::now() < deadline, "capture incomplete: {stats}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runtime the services under test run on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
