//! The pipeline in process against the embedded backend and a manual
//! TrueTime clock: gates (stale, duplicate, targeting, online), hybrid
//! push/pull, event-sourced state with time travel, priority and channel
//! isolation, bad input and overload.

use std::sync::Arc;
use std::time::Duration;

use eventlog::backend::{Backend, BackendOptions, BackendSpec};
use eventlog::{IdempotencyToken, ManualClock, TimeSource};
use notify::model::{DeviceType, Priority};
use notify::registry::Registration;
use notify::service::{IncomingEvent, NotifyConfig, NotifyError, NotifyService};
use notify::store::{Change, Status};
use outbound::Channel;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * S;

async fn start(
    dir: &std::path::Path,
    clock: TimeSource,
    tweak: impl FnOnce(&mut NotifyConfig),
) -> Arc<NotifyService> {
    let backend = Backend::open(
        &BackendSpec::Embedded { dir: dir.into() },
        "notify",
        &BackendOptions::default(),
    )
    .await
    .unwrap();
    let mut config = NotifyConfig::with_shards(2);
    tweak(&mut config);
    NotifyService::start(config, &backend, clock).await.unwrap()
}

fn event(kind: &str, member: &str, targets: &[&str], key: Option<String>) -> IncomingEvent {
    IncomingEvent {
        kind: kind.into(),
        priority: None,
        member: member.into(),
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        body: format!(r#"{{"key":"{}"}}"#, key.clone().unwrap_or_default()).into_bytes(),
        idempotency_key: key,
    }
}

fn key(t: i64, nonce: u128) -> String {
    IdempotencyToken {
        event_time_ns: t,
        nonce,
    }
    .to_string()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn device(id: &str, t: DeviceType, c: Channel) -> Registration {
    Registration {
        id: id.into(),
        device_type: t,
        channel: c,
        token: id.into(),
    }
}

/// Connects an edge device to the service's in-process edge node.
async fn edge_device(
    svc: &NotifyService,
    member: &str,
    id: &str,
    t: DeviceType,
) -> push::edge::Attached {
    let node = svc.edge().local().unwrap();
    node.attach_local(member, id, t.as_str()).await.unwrap()
}

fn processed(s: &NotifyService) -> u64 {
    Priority::ALL
        .iter()
        .map(|p| s.metrics().processed.get(*p))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_push_pull_and_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0, 1_000_000);
    let svc = start(dir.path(), TimeSource::Manual(clock.clone()), |_| {}).await;
    let mut tv1 = edge_device(&svc, "m1", "tv1", DeviceType::Tv).await;
    let mut phone1 = edge_device(&svc, "m1", "phone1", DeviceType::Phone).await;

    let fresh = key(T0, 1);
    let results = svc
        .publish(vec![
            event("new-episode", "m1", &["tv"], Some(fresh.clone())),
            // A retry of the same event (same key): delivered once.
            event("new-episode", "m1", &["tv"], Some(fresh.clone())),
            // Created 700 s ago: certainly older than new-episode's 600 s.
            event("new-episode", "m1", &[], Some(key(T0 - 700 * S, 2))),
            // Created 599.9 s ago: within 600 s give or take the 1 ms WOU.
            event("new-episode", "m1", &[], Some(key(T0 - 599_900_000_000, 3))),
            // A member with no device online: stored for pull only.
            event("my-list", "m2", &[], Some(key(T0, 4))),
        ])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    wait_for("5 records processed", || processed(&svc) == 5).await;
    let m = svc.metrics();
    assert_eq!(m.duplicate.get(Priority::Medium), 1);
    assert_eq!(m.stale.get(Priority::Medium), 1);
    assert_eq!(
        m.stored.get(Priority::Medium) + m.stored.get(Priority::Low),
        3
    );
    assert_eq!(m.offline.get(Priority::Low), 1);
    wait_for("4 edge pushes", || m.delivered.get(Channel::Edge) == 3).await;

    // Targeting: the tv got both m1 notifications, the phone only the untargeted one.
    let tv = tv1.drain_messages();
    let phone = phone1.drain_messages();
    assert_eq!(tv.len(), 2, "{tv:?}");
    assert_eq!(phone.len(), 1, "{phone:?}");
    assert!(
        tv.iter()
            .all(|m| m.durable && m.id > 0 && m.kind == "new-episode")
    );
    assert!(
        tv.iter()
            .any(|m| m.body.get() == format!(r#"{{"key":"{fresh}"}}"#))
    );

    // Pull: the offline member converges; a phone does not see tv-only.
    let p = svc.pull("m2", 0, 100, None).await.unwrap();
    assert_eq!(p.changes.len(), 1);
    assert!(!p.more);
    let again = svc.pull("m2", p.cursor, 100, None).await.unwrap();
    assert!(again.changes.is_empty());
    let phone_view = svc
        .pull("m1", 0, 100, Some(DeviceType::Phone))
        .await
        .unwrap();
    assert_eq!(phone_view.changes.len(), 1);
    let all = svc.pull("m1", 0, 1, None).await.unwrap();
    assert_eq!(all.changes.len(), 1);
    assert!(all.more);

    // Event sourcing: read one notification later, then travel in time.
    let first_id = svc.pull("m1", 0, 100, None).await.unwrap().changes[0].seq;
    let stored_at = svc.state_at("m1", T0 + 10 * S).await.unwrap();
    assert_eq!(stored_at.notifications.len(), 2);
    clock.advance(5 * S);
    let read_seq = svc.mark("m1", first_id, false).await.unwrap();
    assert!(matches!(
        svc.mark("m1", 999_999, false).await,
        Err(NotifyError::NotFound(999_999))
    ));
    let before = svc.state_at("m1", T0 + 2 * S).await.unwrap();
    let after = svc.state_at("m1", T0 + 10 * S).await.unwrap();
    let during = svc.state_at("m1", T0 + 5 * S).await.unwrap();
    let status_of = |s: &notify::store::MemberState| {
        s.notifications
            .iter()
            .find(|n| n.id == first_id)
            .map(|n| n.status)
    };
    assert_eq!(status_of(&before), Some(Status::Unread));
    assert_eq!(status_of(&after), Some(Status::Read));
    assert_eq!(
        during.uncertain,
        [read_seq],
        "inside the read's TrueTime interval"
    );
    assert_eq!(status_of(&during), Some(Status::Unread));
    let changes = svc.pull("m1", 0, 100, None).await.unwrap().changes;
    assert!(matches!(changes.last().unwrap().change, Change::Read { id } if id == first_id));

    // Metrics endpoint text.
    let text = svc.prometheus();
    assert!(
        text.contains("timecard_notify_stale_total{priority=\"medium\"} 1"),
        "{text}"
    );
    assert!(text.contains("timecard_notify_delivered_total{channel=\"edge\"} 3"));
    svc.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_floods_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TimeSource::Manual(ManualClock::new(T0, 1_000_000));
    let svc = start(dir.path(), clock, |c| {
        c.admission = 50;
        c.max_body = 256;
    })
    .await;
    let mut bad = vec![
        event("no-such-type", "m", &[], None),
        event("my-list", "bad member!", &[], None),
        event("my-list", "m", &["toaster"], None),
        event("my-list", "m", &[], Some("not-a-key".into())),
        event("my-list", "m", &[], Some(key(T0 + 3_600 * S, 1))),
    ];
    let mut e = event("my-list", "m", &[], None);
    e.priority = Some("urgent".into());
    bad.push(e);
    let mut e = event("my-list", "m", &[], None);
    e.body = b"[1,2]".to_vec();
    bad.push(e);
    let mut e = event("my-list", "m", &[], None);
    e.body = format!(r#"{{"x":"{}"}}"#, "y".repeat(300)).into_bytes();
    bad.push(e);
    let results = svc.publish(bad).await;
    let errors: Vec<String> = results
        .iter()
        .map(|r| r.as_ref().unwrap_err().to_string())
        .collect();
    for (i, want) in [
        "unknown notification type",
        "member id",
        "unknown device type",
        "idempotency token",
        "in the future",
        "unknown priority",
        "JSON object",
        "exceeds the limit",
    ]
    .iter()
    .enumerate()
    {
        assert!(errors[i].contains(want), "{i}: {}", errors[i]);
    }
    // A flood into one shard beyond the admission limit: refused as
    // overloaded, nothing half-written, and the next small batch passes.
    let flood: Vec<IncomingEvent> = (0..200).map(|_| event("my-list", "m", &[], None)).collect();
    let results = svc.publish(flood).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(NotifyError::Overloaded(Priority::Low, _))))
    );
    let ok = svc.publish(vec![event("my-list", "m", &[], None)]).await;
    assert!(ok[0].is_ok());
    wait_for("the good event", || processed(&svc) == 1).await;
    assert_eq!(svc.metrics().refused_overload.get(Priority::Low), 200);
    // Registrations: unknown channel configuration; edge devices register
    // by connecting, not through the registry.
    assert!(matches!(
        svc.register_device("m", device("p", DeviceType::Phone, Channel::Apns)),
        Err(NotifyError::ChannelOff(Channel::Apns))
    ));
    let edge = svc
        .register_device("m", device("tv", DeviceType::Tv, Channel::Edge))
        .unwrap_err();
    assert!(edge.to_string().contains("/v1/ws"), "{edge}");
    svc.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_priority_backlog_does_not_hold_back_high_priority() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), TimeSource::system(1_000_000), |c| {
        c.read_batch = 256;
        c.reconcile_every = Duration::from_millis(10);
        c.pools[Priority::Low.index()].lag_per_worker = 5_000;
    })
    .await;
    let _vip = edge_device(&svc, "vip", "tv", DeviceType::Tv).await;
    // A burst of low-priority events to many offline members…
    let total_low = 40_000u64;
    for chunk in 0..(total_low / 1_000) {
        let batch = (0..1_000)
            .map(|i| event("my-list", &format!("m{}", chunk * 1_000 + i), &[], None))
            .collect();
        assert!(svc.publish(batch).await.iter().all(Result::is_ok));
    }
    // …then high-priority events: all delivered while the low backlog is
    // still being worked off.
    let highs = 50u64;
    let batch = (0..highs)
        .map(|_| event("live-event", "vip", &[], None))
        .collect();
    assert!(svc.publish(batch).await.iter().all(Result::is_ok));
    let m = svc.metrics().clone();
    wait_for("high-priority deliveries", || {
        m.delivered.get(Channel::Edge) == highs
    })
    .await;
    let low_done = m.processed.get(Priority::Low);
    let low_lag = svc.lag().await[Priority::Low.index()];
    assert!(
        low_done < total_low && low_lag > 0,
        "low priority was drained first ({low_done} of {total_low} processed); the test shows nothing"
    );
    println!("high delivered with {low_lag} low events still queued ({low_done} processed)");
    // The reconciler saw the backlog and scaled the low pool up to its
    // maximum (2 workers, one per shard), as goal and as running workers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let low = loop {
        let low = svc.pools()[Priority::Low.index()].clone();
        if low.goal == 2 && low.running == 2 {
            break low;
        }
        assert!(tokio::time::Instant::now() < deadline, "{low:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(low.reason.contains("scale up 1 -> 2"), "{low:?}");
    svc.shutdown(Duration::from_secs(1)).await;
}
