//! End-to-end notification benchmark: ingest → durable log → gates →
//! member store → outbound, on this machine.
//!
//! `cargo bench -p timecard-notify [-- --events N --quick]`
//!
//! 1. Baseline: the same events appended straight to the segment logs (no
//!    validation, no processing), the ceiling the pipeline is measured against.
//! 2. Throughput, embedded backend: closed loop, every event to an online
//!    edge device; events/s from first publish to last delivery.
//! 3. Latency at a fixed offered rate (open loop): p50/p99 ingest → delivered.
//! 4. The same on NATS JetStream (if `nats-server` is found).
//! 5. Ingest over gRPC from clients on loopback (same machine, same cores).
//! 6. Isolation: high-priority p99 alone and under a 10× low-priority burst.
//! 7. Bulkheads: FCM/edge delivery p99 with APNs healthy and with APNs stalled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventlog::TimeSource;
use eventlog::backend::{Backend, BackendOptions, BackendSpec};
use notify::model::{DeviceType, Priority};
use notify::registry::Registration;
use notify::service::{IncomingEvent, NotifyConfig, NotifyService, Providers};
use outbound::standin::{ApnsStandin, FcmStandin, Mode};
use outbound::{ApnsConfig, Channel, FcmConfig};

const BATCH: usize = 500;

struct Opts {
    events: u64,
    members: u64,
    rate: u64,
    nats: bool,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    Opts {
        events: value("--events").unwrap_or(if quick { 100_000 } else { 1_500_000 }),
        members: 20_000,
        rate: value("--rate").unwrap_or(150_000),
        nats: !args.iter().any(|a| a == "--no-nats"),
    }
}

async fn open(spec: BackendSpec, config: NotifyConfig) -> Arc<NotifyService> {
    let backend = Backend::open(&spec, "notify", &BackendOptions::default())
        .await
        .expect("backend");
    NotifyService::start(config, &backend, TimeSource::system(1_000_000))
        .await
        .expect("start")
}

fn config() -> NotifyConfig {
    let mut c = NotifyConfig::with_shards(2);
    // 1.5 M new-episode events land within its 600 s window on 2 shards:
    // room for all of them, so de-duplication stays exact (status says so).
    c.dedup_capacity = 12_000_000;
    for b in &mut c.bulkheads {
        b.queue_capacity = 200_000;
        b.concurrency = 2;
    }
    c
}

/// Connects member `m`'s tv to the in-process edge node, with a task
/// that reads what arrives (a device that keeps up).
async fn connect_tv(svc: &NotifyService, member: &str) {
    let node = svc.edge().local().expect("in-process edge node");
    let mut tv = node.attach_local(member, "tv", "tv").await.expect("attach");
    tokio::spawn(async move { while tv.recv().await.is_some() {} });
}

fn event(kind: &str, member: u64) -> IncomingEvent {
    IncomingEvent {
        kind: kind.into(),
        member: format!("m{member}"),
        body: br#"{"title":"S2E3 is out","show":81234}"#.to_vec(),
        ..IncomingEvent::default()
    }
}

/// Publishes `n` events of `kind` from `producers` tasks, at `rate`/s in all
/// (0: as fast as the service takes them). Returns the publish time.
async fn produce(
    svc: &Arc<NotifyService>,
    kind: &'static str,
    n: u64,
    rate: u64,
    producers: u64,
    members: u64,
) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mine = n / producers;
            let mut sent = 0u64;
            let mut member = p;
            let per_batch = if rate == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(BATCH as f64 * producers as f64 / rate as f64)
            };
            let mut next = tokio::time::Instant::now();
            while sent < mine {
                let k = (mine - sent).min(BATCH as u64);
                let first = member;
                loop {
                    member = first;
                    let batch: Vec<IncomingEvent> = (0..k)
                        .map(|_| {
                            member = (member + producers) % members;
                            event(kind, member)
                        })
                        .collect();
                    let results = svc.publish(batch).await;
                    if results.iter().all(Result::is_ok) {
                        break;
                    }
                    // Overloaded: back off and retry (these keys are fresh,
                    // so a retry is a new event; only full refusals retry).
                    assert!(results.iter().all(Result::is_err), "partial refusal");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                sent += k;
                if !per_batch.is_zero() {
                    next += per_batch;
                    tokio::time::sleep_until(next).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
    start.elapsed()
}

async fn wait_delivered(svc: &NotifyService, channel: Channel, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while svc.metrics().delivered.get(channel) < n {
        assert!(Instant::now() < deadline, "stuck: {:#}", svc.status());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
}

async fn register_members(svc: &NotifyService, members: u64) {
    for m in 0..members {
        connect_tv(svc, &format!("m{m}")).await;
    }
}

/// Closed-loop throughput and open-loop latency on one backend.
async fn end_to_end(
    name: &str,
    spec: BackendSpec,
    o: &Opts,
    events: u64,
    baseline: Option<f64>,
) -> f64 {
    let svc = open(spec.clone(), config()).await;
    register_members(&svc, o.members).await;
    let start = Instant::now();
    let publish = produce(&svc, "new-episode", events, 0, 4, o.members).await;
    wait_delivered(&svc, Channel::Edge, events).await;
    let elapsed = start.elapsed();
    let rate = events as f64 / elapsed.as_secs_f64();
    let h = svc.metrics().delivery(Channel::Edge, false);
    println!(
        "{name:<10} closed loop: {events} events in {:.2} s = {:>9.0} events/s end to end (publish done at {:.2} s){}",
        elapsed.as_secs_f64(),
        rate,
        publish.as_secs_f64(),
        baseline.map_or(String::new(), |b| format!(
            "  ratio to durable-ingest baseline {:.2}",
            rate / b
        ))
    );
    println!(
        "{name:<10}   latency under saturation: p50 {} p99 {}; de-duplication window {}",
        ms(h.quantile(0.5)),
        ms(h.quantile(0.99)),
        svc.status()["dedup"]["state"]
    );
    // Open loop at the offered rate (or below what this backend sustains).
    let offered = o.rate.min((rate * 0.9) as u64).max(1_000);
    h.reset();
    svc.metrics().stored_latency[Priority::Medium.index()].reset();
    let n = (offered * 4).min(events);
    let before = svc.metrics().delivered.get(Channel::Edge);
    produce(&svc, "new-episode", n, offered, 4, o.members).await;
    wait_delivered(&svc, Channel::Edge, before + n).await;
    let stored = &svc.metrics().stored_latency[Priority::Medium.index()];
    println!(
        "{name:<10} open loop at {offered} events/s: ingest→delivered p50 {} p99 {} (ingest→stored p99 {})",
        ms(h.quantile(0.5)),
        ms(h.quantile(0.99)),
        ms(stored.quantile(0.99)),
    );
    svc.shutdown(Duration::from_secs(1)).await;
    rate
}

/// The ceiling: the same envelopes appended straight to as many segment
/// logs as the pipeline has (3 priorities × 2 shards; 4 producers, batches
/// of 500, fsync per group commit), no validation, no processing.
async fn baseline(dir: &std::path::Path, events: u64) -> f64 {
    let backend = Backend::open(
        &BackendSpec::Embedded {
            dir: dir.join("baseline"),
        },
        "notify",
        &BackendOptions::default(),
    )
    .await
    .expect("backend");
    let mut logs = Vec::new();
    for i in 0..6 {
        logs.push(backend.open_log(&format!("shard-{i}")).await.expect("log"));
    }
    let clock = TimeSource::system(1_000_000);
    let payload = notify::model::Notification {
        kind: "new-episode".into(),
        priority: Priority::Medium,
        targets: notify::model::Targets::ALL,
        body: event("new-episode", 0).body,
    }
    .encode();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..4u64 {
        let (logs, clock, payload) = (logs.clone(), clock.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < events / 4 {
                let now = clock.now().expect("clock");
                let batch: Vec<eventlog::Envelope> = (0..BATCH as u64)
                    .map(|i| {
                        eventlog::Envelope::new(
                            format!("m{}", p + 4 * (sent + i)),
                            eventlog::IdempotencyToken::fresh(now.latest_ns),
                            now,
                            payload.clone(),
                        )
                        .expect("envelope")
                    })
                    .collect();
                logs[((sent / BATCH as u64 + p) % 6) as usize]
                    .append(batch)
                    .await
                    .expect("append");
                sent += BATCH as u64;
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    println!(
        "baseline   durable append only (6 segment logs, fsync per group commit): {rate:>9.0} events/s"
    );
    rate
}

/// Ingest over gRPC (the service's listener on loopback, 4 client tasks on
/// 2 HTTP/2 connections, batches of 500), closed loop, end to end.
async fn over_grpc(dir: &std::path::Path, events: u64, members: u64) {
    let mut args = notify::cli::ServeArgs::defaults();
    args.common.backend = format!("embedded:{}", dir.join("grpc").display());
    args.grpc = "127.0.0.1:0".parse().expect("addr");
    args.http = "127.0.0.1:0".parse().expect("addr");
    args.access = access::AccessArgs::insecure();
    let run = notify::cli::start_with_clock(&args, TimeSource::system(1_000_000))
        .await
        .expect("serve");
    register_members(&run.service, members).await;
    let mut connections = Vec::new();
    for _ in 0..2 {
        connections.push(
            notify::pb::notify_client::NotifyClient::connect(format!("http://{}", run.grpc))
                .await
                .expect("connect")
                .max_encoding_message_size(notify::grpc::MAX_MESSAGE),
        );
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..4u64 {
        let mut client = connections[(p % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while sent < events / 4 {
                let batch: Vec<notify::pb::Event> = (0..BATCH as u64)
                    .map(|i| notify::pb::Event {
                        r#type: "new-episode".into(),
                        member: format!("m{}", (p + 4 * (sent + i)) % members),
                        body: event("new-episode", 0).body,
                        ..Default::default()
                    })
                    .collect();
                let reply = client
                    .publish(notify::pb::PublishRequest { events: batch })
                    .await
                    .expect("publish")
                    .into_inner();
                let accepted = reply
                    .results
                    .iter()
                    .filter(|r| {
                        matches!(
                            r.outcome,
                            Some(notify::pb::publish_result::Outcome::Accepted(_))
                        )
                    })
                    .count() as u64;
                sent += accepted;
                if accepted == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let total = run.service.metrics().ingested.get(Priority::Medium);
    wait_delivered(&run.service, Channel::Edge, total).await;
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let h = run.service.metrics().delivery(Channel::Edge, false);
    println!(
        "grpc       closed loop: {total} events over gRPC = {rate:>9.0} events/s end to end (p50 {} p99 {} under saturation)",
        ms(h.quantile(0.5)),
        ms(h.quantile(0.99))
    );
    run.stop().await;
}

async fn isolation(dir: &std::path::Path, members: u64) {
    let svc = open(
        BackendSpec::Embedded {
            dir: dir.join("isolation"),
        },
        config(),
    )
    .await;
    register_members(&svc, members).await;
    let high_rate = 5_000;
    let h = svc.metrics().delivery(Channel::Edge, true);
    produce(&svc, "live-event", high_rate * 3, high_rate, 1, members).await;
    wait_delivered(&svc, Channel::Edge, high_rate * 3).await;
    let (alone50, alone99) = (h.quantile(0.5), h.quantile(0.99));
    h.reset();
    let low_rate = 10 * high_rate;
    let delivered = svc.metrics().delivered.get(Channel::Edge);
    let burst = {
        let svc = svc.clone();
        tokio::spawn(
            async move { produce(&svc, "my-list", low_rate * 3, low_rate, 2, members).await },
        )
    };
    produce(&svc, "live-event", high_rate * 3, high_rate, 1, members).await;
    burst.await.unwrap();
    wait_delivered(
        &svc,
        Channel::Edge,
        delivered + high_rate * 3 + low_rate * 3,
    )
    .await;
    let low = svc.metrics().delivery(Channel::Edge, false);
    println!(
        "isolation  high {high_rate}/s alone: p50 {} p99 {}; with a 10x low burst ({low_rate}/s): p50 {} p99 {} (low p99 {})",
        ms(alone50),
        ms(alone99),
        ms(h.quantile(0.5)),
        ms(h.quantile(0.99)),
        ms(low.quantile(0.99)),
    );
    svc.shutdown(Duration::from_secs(1)).await;
}

async fn bulkheads(dir: &std::path::Path) {
    let members = 2_000u64;
    let mut results = Vec::new();
    for stalled in [false, true] {
        let (apns, fcm) = (ApnsStandin::spawn().await, FcmStandin::spawn("bench").await);
        if stalled {
            apns.set_mode(Mode::Stall);
        }
        let mut c = config();
        for b in &mut c.bulkheads {
            b.concurrency = 64;
            b.timeout = Duration::from_millis(500);
            b.queue_capacity = 20_000;
        }
        c.providers = Providers {
            apns: Some(ApnsConfig {
                endpoint: apns.endpoint(),
                topic: "com.example.bench".into(),
                bearer_token: None,
                connections: 2,
            }),
            fcm: Some(FcmConfig {
                endpoint: fcm.endpoint(),
                project_id: "bench".into(),
                bearer_token: None,
                connections: 2,
            }),
        };
        let svc = open(
            BackendSpec::Embedded {
                dir: dir.join(format!("bulkheads-{stalled}")),
            },
            c,
        )
        .await;
        for m in 0..members {
            let member = format!("m{m}");
            connect_tv(&svc, &member).await;
            for (id, t, ch, token) in [
                (
                    "phone",
                    DeviceType::Phone,
                    Channel::Apns,
                    format!("{m:064x}"),
                ),
                (
                    "tablet",
                    DeviceType::Tablet,
                    Channel::Fcm,
                    format!("fcm{m}"),
                ),
            ] {
                svc.register_device(
                    &member,
                    Registration {
                        id: id.into(),
                        device_type: t,
                        channel: ch,
                        token,
                    },
                )
                .unwrap();
            }
        }
        let (rate, n) = (2_000u64, 6_000u64);
        produce(&svc, "new-episode", n, rate, 1, members).await;
        wait_delivered(&svc, Channel::Fcm, n).await;
        wait_delivered(&svc, Channel::Edge, n).await;
        let m = svc.metrics();
        results.push((
            stalled,
            m.delivery(Channel::Fcm, false).quantile(0.99),
            m.delivery(Channel::Edge, false).quantile(0.99),
            m.delivered.get(Channel::Apns),
            m.shed_breaker_open.get(Channel::Apns) + m.shed_queue_full.get(Channel::Apns),
        ));
        svc.shutdown(Duration::from_millis(100)).await;
    }
    for (stalled, fcm, edge, apns_ok, apns_shed) in results {
        println!(
            "bulkheads  APNs {:<8} FCM p99 {} edge p99 {} (APNs delivered {apns_ok}, shed {apns_shed}) at 2000 events/s x 3 devices",
            if stalled { "stalled" } else { "healthy" },
            ms(fcm),
            ms(edge),
        );
    }
}

fn main() {
    let o = opts();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        println!(
            "notify bench: {} events, {} members with one edge device each, 2 shards per priority, 2 runtime threads",
            o.events, o.members
        );
        let base = baseline(dir.path(), o.events).await;
        end_to_end(
            "embedded",
            BackendSpec::Embedded {
                dir: dir.path().join("e2e"),
            },
            &o,
            o.events,
            Some(base),
        )
        .await;
        if o.nats {
            match eventlog::testkit::nats_server_binary() {
                Some(bin) => {
                    let node = eventlog::testkit::NatsNode::start_with(&bin).expect("nats-server");
                    end_to_end("nats", BackendSpec::Nats { urls: node.urls() }, &o, o.events / 5, Some(base))
                        .await;
                }
                None => println!("nats       SKIPPED: no nats-server (set NATS_SERVER or run scripts/test.sh once)"),
            }
        }
        over_grpc(dir.path(), o.events / 3, o.members).await;
        isolation(dir.path(), o.members).await;
        bulkheads(dir.path()).await;
    });
}
