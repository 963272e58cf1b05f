//! Bulkheaded outbound through the whole pipeline, against local APNs and
//! FCM stand-ins that speak and validate the providers' protocols: a stalled
//! APNs does not slow FCM or edge delivery (its breaker opens, its queue
//! stays bounded, the notifications stay pullable), and a token the provider
//! calls dead is removed from the registry.

use std::sync::Arc;
use std::time::Duration;

use eventlog::TimeSource;
use eventlog::backend::{Backend, BackendOptions, BackendSpec};
use notify::model::{DeviceType, Priority};
use notify::registry::Registration;
use notify::service::{IncomingEvent, NotifyConfig, NotifyService, Providers};
use outbound::standin::{ApnsStandin, FcmStandin, Mode};
use outbound::{ApnsConfig, BulkheadConfig, Channel, FcmConfig};

async fn start(dir: &std::path::Path, apns: &ApnsStandin, fcm: &FcmStandin) -> Arc<NotifyService> {
    let backend = Backend::open(
        &BackendSpec::Embedded { dir: dir.into() },
        "notify",
        &BackendOptions::default(),
    )
    .await
    .unwrap();
    let mut config = NotifyConfig::with_shards(2);
    let bulkhead = BulkheadConfig {
        queue_capacity: 1_000,
        concurrency: 8,
        timeout: Duration::from_millis(300),
        failure_threshold: 3,
        open_for: Duration::from_secs(3_600),
    };
    config.bulkheads = [bulkhead.clone(), bulkhead.clone(), bulkhead];
    config.providers = Providers {
        apns: Some(ApnsConfig {
            endpoint: apns.endpoint(),
            topic: "com.example.timecard".into(),
            bearer_token: None,
            connections: 2,
        }),
        fcm: Some(FcmConfig {
            endpoint: fcm.endpoint(),
            project_id: "timecard-test".into(),
            bearer_token: None,
            connections: 2,
        }),
    };
    NotifyService::start(config, &backend, TimeSource::system(1_000_000))
        .await
        .unwrap()
}

fn apns_token(i: u64) -> String {
    format!("{i:064x}")
}

/// Registers an APNs phone and an FCM tablet, and connects a tv to the
/// edge (kept connected while the returned value lives).
async fn register_three(svc: &NotifyService, m: u64) -> push::edge::Attached {
    let member = format!("m{m}");
    for (id, t, c, token) in [
        ("phone", DeviceType::Phone, Channel::Apns, apns_token(m + 1)),
        (
            "tablet",
            DeviceType::Tablet,
            Channel::Fcm,
            format!("fcm-{m}"),
        ),
    ] {
        svc.register_device(
            &member,
            Registration {
                id: id.into(),
                device_type: t,
                channel: c,
                token,
            },
        )
        .unwrap();
    }
    let node = svc.edge().local().unwrap();
    node.attach_local(&member, "tv", "tv").await.unwrap()
}

fn event(m: u64, kind: &str) -> IncomingEvent {
    IncomingEvent {
        kind: kind.into(),
        member: format!("m{m}"),
        body: br#"{"title":"hello"}"#.to_vec(),
        ..IncomingEvent::default()
    }
}

async fn wait_for(svc: &NotifyService, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:#}",
            svc.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_apns_does_not_slow_fcm_or_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let (apns, fcm) = (
        ApnsStandin::spawn().await,
        FcmStandin::spawn("timecard-test").await,
    );
    apns.set_mode(Mode::Stall);
    let svc = start(dir.path(), &apns, &fcm).await;
    let members = 100u64;
    let mut tvs = Vec::new();
    for m in 0..members {
        tvs.push(register_three(&svc, m).await);
    }
    let rounds = 6u64;
    for _ in 0..rounds {
        let batch = (0..members).map(|m| event(m, "new-episode")).collect();
        assert!(svc.publish(batch).await.iter().all(Result::is_ok));
    }
    let n = members * rounds;
    let m = svc.metrics().clone();
    wait_for(&svc, "FCM and edge deliveries", || {
        m.delivered.get(Channel::Fcm) == n && m.delivered.get(Channel::Edge) == n
    })
    .await;
    assert_eq!(fcm.delivered(), n as usize);
    assert_eq!(m.delivered.get(Channel::Apns), 0);
    // Meanwhile APNs times out until its breaker opens; what it had queued
    // fails fast, and new pushes are refused at the door.
    let apns_stats = || {
        svc.status()["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "apns")
            .unwrap()
            .clone()
    };
    wait_for(&svc, "the APNs breaker to open", || {
        apns_stats()["breaker"] == "open"
    })
    .await;
    assert!(apns_stats()["queued"].as_u64().unwrap() <= 1_000);
    let batch = (0..members).map(|m| event(m, "new-episode")).collect();
    assert!(svc.publish(batch).await.iter().all(Result::is_ok));
    wait_for(&svc, "the next round on FCM", || {
        m.delivered.get(Channel::Fcm) == n + members
    })
    .await;
    wait_for(&svc, "APNs refusals", || {
        m.shed_breaker_open.get(Channel::Apns) == members
    })
    .await;
    assert_eq!(m.delivered.get(Channel::Apns), 0);
    assert!(
        apns_stats()["timeouts"].as_u64().unwrap() >= 3,
        "{}",
        apns_stats()
    );
    // Every notification is still in the store for the phone to pull.
    let pulled = svc
        .pull("m7", 0, 100, Some(DeviceType::Phone))
        .await
        .unwrap();
    assert_eq!(pulled.changes.len() as u64, rounds + 1);
    svc.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_get_their_wire_format_and_dead_tokens_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (apns, fcm) = (
        ApnsStandin::spawn().await,
        FcmStandin::spawn("timecard-test").await,
    );
    let svc = start(dir.path(), &apns, &fcm).await;
    let _tv1 = register_three(&svc, 1).await;
    let _tv2 = register_three(&svc, 2).await;
    fcm.mark_unregistered("fcm-2");
    let results = svc
        .publish(vec![event(1, "live-event"), event(2, "my-list")])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let m = svc.metrics().clone();
    wait_for(&svc, "both APNs pushes", || {
        m.delivered.get(Channel::Apns) == 2
    })
    .await;
    wait_for(&svc, "the FCM outcomes", || {
        m.delivered.get(Channel::Fcm) + m.failed.get(Channel::Fcm) == 2
    })
    .await;
    let got = apns.received();
    let live = got
        .iter()
        .find(|r| r.device_token == apns_token(2))
        .expect("m1's phone got the live event");
    assert_eq!(
        live.header("apns-priority"),
        Some("10"),
        "high priority is urgent"
    );
    assert_eq!(live.header("apns-topic"), Some("com.example.timecard"));
    assert_eq!(live.body["timecard"]["body"]["title"], "hello");
    let list = got
        .iter()
        .find(|r| r.device_token == apns_token(3))
        .unwrap();
    assert_eq!(list.header("apns-priority"), Some("5"));
    // FCM said m2's tablet token is dead: it is gone from the registry.
    assert_eq!(m.failed.get(Channel::Fcm), 1);
    let mut left = Vec::new();
    svc.registry()
        .for_each_online("m2", |d| left.push(d.id.to_string()));
    assert_eq!(left, ["phone"]);
    // The edge device is in the push registry, untouched by FCM's answer.
    assert!(svc.edge().registry().lookup("m2", "tv").is_some());
    assert_eq!(m.stored.get(Priority::High), 1);
    svc.shutdown(Duration::from_millis(500)).await;
}
