//! What the capture tap costs production: the primary's latency with the
//! tap off and on, with the replay service following the capture, and
//! after that replay service is killed (SIGKILL), in one run.
//!
//! Two counter services run side by side (same configuration, one with
//! `--capture`), loaded in alternation by the same closed-loop client, so
//! each "on" figure has its "off" baseline measured next to it.
//!
//! A first stage measures two servers without the tap against each other:
//! the noise floor of the comparison on this machine.
//!
//! `cargo bench -p timecard-replayer --bench overhead [-- --requests N --rounds R --concurrency C]`
//! (each stage: R rounds of N requests to each server, alternating, so
//! slow drifts such as rollups and log growth fall on both alike).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use counter::cli::{Running, ServeArgs, start};
use replayer::client::HttpClient;

fn args(dir: &std::path::Path, capture: bool) -> ServeArgs {
    let mut a = ServeArgs {
        namespaces: vec!["views=eventual".into()],
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        ..ServeArgs::defaults()
    };
    a.common.backend = format!("embedded:{}", dir.display());
    a.common.system_clock_bound_us = 1_000;
    a.common.no_fsync = true;
    a.capture.capture = capture;
    a.access = access::AccessArgs::insecure();
    a
}

/// Latencies (µs) and errors of one phase.
struct Phase {
    micros: Vec<f64>,
    errors: usize,
}

impl Phase {
    fn quantile(&mut self, q: f64) -> f64 {
        self.micros.sort_by(f64::total_cmp);
        let i = ((self.micros.len() as f64 - 1.0) * q).round() as usize;
        self.micros.get(i).copied().unwrap_or(f64::NAN)
    }
}

/// `n` requests (adds and reads alternating over 16 counters) with
/// `concurrency` in flight.
async fn load(client: &HttpClient, base: &str, n: usize, concurrency: usize) -> Phase {
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut micros = Vec::with_capacity(n / concurrency);
            let mut errors = 0;
            for i in (worker..n).step_by(concurrency) {
                let key = format!("{base}/v1/counters/views/k{}", i % 16);
                let t = Instant::now();
                let r = if i % 2 == 0 {
                    client
                        .call(
                            "POST",
                            &format!("{key}/add"),
                            "{\"delta\": 1}".into(),
                            Duration::from_secs(5),
                        )
                        .await
                } else {
                    client
                        .call("GET", &key, String::new(), Duration::from_secs(5))
                        .await
                };
                micros.push(t.elapsed().as_secs_f64() * 1e6);
                if !r.is_ok_and(|a| a.status == 200) {
                    errors += 1;
                }
            }
            (micros, errors)
        }));
    }
    let mut phase = Phase {
        micros: Vec::with_capacity(n),
        errors: 0,
    };
    for t in tasks {
        let (m, e) = t.await.expect("load task");
        phase.micros.extend(m);
        phase.errors += e;
    }
    phase
}

fn flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Replayer(Child);

impl Drop for Replayer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let requests = flag("--requests", 1_000);
    let rounds = flag("--rounds", 24);
    // 4 in flight keeps both cores busy (the load generator takes one);
    // 1 leaves them mostly idle, as production servers run.
    let concurrency = flag("--concurrency", 4).max(1);
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let loader = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let up = |name: &str, capture: bool| -> Running {
        servers
            .block_on(start(&args(&dir.path().join(name), capture)))
            .expect("counter")
    };
    let (off, on, candidate) = (up("off", false), up("on", true), up("candidate", false));
    let url = |r: &Running| format!("http://{}", r.http);
    let client = HttpClient::new();
    loader.block_on(async {
        load(&client, &url(&off), 1_000, concurrency).await;
        load(&client, &url(&on), 1_000, concurrency).await;
    });
    println!(
        "capture tap overhead: {requests} requests per phase (adds and reads alternating, {concurrency} in flight), {rounds} rounds per stage, off/on alternating"
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>7}",
        "stage",
        "off p50",
        "off p99",
        "off p999",
        "on p50",
        "on p99",
        "on p999",
        "p50 on/off",
        "p99 on/off",
        "errors"
    );
    let mut replayer: Option<Replayer> = None;
    // The first stage compares the baseline with a second server without
    // the tap (the candidate, before the replay service uses it): the
    // noise floor of this measurement.
    for stage in [
        "no tap (A/A: noise floor)",
        "tap on",
        "tap on, replay service running",
        "tap on, replay service killed",
    ] {
        match stage {
            "tap on, replay service running" => {
                let child = Command::new(env!("CARGO_BIN_EXE_timecard-replay"))
                    .args([
                        "run",
                        "--follow",
                        "--no-table",
                        "--rate",
                        "0",
                        "--rules",
                        "counter",
                        "--source",
                    ])
                    .arg(url(&on))
                    .arg("--candidate")
                    .arg(url(&candidate))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("timecard-replay");
                replayer = Some(Replayer(child));
                std::thread::sleep(Duration::from_millis(500));
            }
            "tap on, replay service killed" => {
                if let Some(mut r) = replayer.take() {
                    // SIGKILL: no goodbye to the service.
                    let _ = r.0.kill();
                    let _ = r.0.wait();
                }
            }
            _ => {}
        }
        let mut base = Phase {
            micros: Vec::new(),
            errors: 0,
        };
        let mut tapped = Phase {
            micros: Vec::new(),
            errors: 0,
        };
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for capture in order {
                let target = match (capture, stage) {
                    (false, _) => url(&off),
                    (true, "no tap (A/A: noise floor)") => url(&candidate),
                    (true, _) => url(&on),
                };
                let p = loader.block_on(load(&client, &target, requests, concurrency));
                let into = if capture { &mut tapped } else { &mut base };
                into.micros.extend(p.micros);
                into.errors += p.errors;
            }
        }
        let (b50, b99, b999) = (
            base.quantile(0.5),
            base.quantile(0.99),
            base.quantile(0.999),
        );
        let (t50, t99, t999) = (
            tapped.quantile(0.5),
            tapped.quantile(0.99),
            tapped.quantile(0.999),
        );
        println!(
            "{stage:<34} {b50:>8.0}µ {b99:>8.0}µ {b999:>8.0}µ {t50:>8.0}µ {t99:>8.0}µ {t999:>8.0}µ {:>9.3}× {:>9.3}× {:>7}",
            t50 / b50,
            t99 / b99,
            base.errors + tapped.errors
        );
    }
    let stats = loader
        .block_on(client.call(
            "GET",
            &format!("{}/v1/capture/stats", url(&on)),
            String::new(),
            Duration::from_secs(5),
        ))
        .map(|a| a.body)
        .unwrap_or_default();
    println!("tap counters: {stats}");
    for r in [&off, &on, &candidate] {
        r.stop();
    }
}
