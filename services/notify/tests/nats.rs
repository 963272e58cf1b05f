//! The pipeline on NATS JetStream (a real `nats-server`): one stream per
//! priority and shard, the member store in a KV bucket. Every event is
//! published twice under its key and stored once; a restarted service
//! resumes from the KV checkpoint without storing anything again.

use std::collections::HashMap;
use std::time::Duration;

use eventlog::backend::{Backend, BackendOptions, BackendSpec};
use eventlog::testkit::{NatsNode, nats_server_or_skip};
use eventlog::{IdempotencyToken, TimeSource};
use notify::model::Priority;
use notify::service::{IncomingEvent, NotifyConfig, NotifyService};

const MEMBERS: usize = 20;

async fn service(urls: Vec<String>) -> std::sync::Arc<NotifyService> {
    let backend = Backend::open(
        &BackendSpec::Nats { urls },
        "notify",
        &BackendOptions::default(),
    )
    .await
    .unwrap();
    NotifyService::start(
        NotifyConfig::with_shards(2),
        &backend,
        TimeSource::system(1_000_000),
    )
    .await
    .unwrap()
}

async fn again_lag(svc: &NotifyService) -> u64 {
    svc.lag().await.iter().sum()
}

async fn everything(svc: &NotifyService) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for m in 0..MEMBERS {
        let mut since = 0;
        loop {
            let p = svc
                .pull(&format!("m{m}"), since, 1_000, None)
                .await
                .unwrap();
            for c in &p.changes {
                if let notify::store::Change::Notified { body, .. } = &c.change {
                    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                    *seen.entry(v["k"].as_str().unwrap().to_owned()).or_default() += 1;
                }
            }
            since = p.cursor;
            if !p.more {
                break;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_duplicates_deliver_once_and_restarts_resume() {
    let Some(bin) = nats_server_or_skip().unwrap() else {
        return;
    };
    let node = NatsNode::start_with(&bin).unwrap();
    let svc = service(node.urls()).await;
    let now = TimeSource::system(0).now().unwrap().latest_ns;
    let total = 600usize;
    let events: Vec<IncomingEvent> = (0..total)
        .map(|i| {
            let key = IdempotencyToken {
                event_time_ns: now,
                nonce: i as u128,
            }
            .to_string();
            IncomingEvent {
                kind: ["live-event", "new-episode", "my-list"][i % 3].into(),
                member: format!("m{}", i % MEMBERS),
                body: format!(r#"{{"k":"{key}"}}"#).into_bytes(),
                idempotency_key: Some(key),
                ..IncomingEvent::default()
            }
        })
        .collect();
    for chunk in events.chunks(100) {
        let mut twice = chunk.to_vec();
        twice.extend_from_slice(chunk);
        let r = svc.publish(twice).await;
        assert!(
            r.iter().all(Result::is_ok),
            "{:?}",
            r.iter().find(|r| r.is_err())
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let processed = |s: &NotifyService| -> u64 {
        Priority::ALL
            .iter()
            .map(|p| s.metrics().processed.get(*p))
            .sum()
    };
    // JetStream itself drops a re-published event (same Nats-Msg-Id) within
    // its two-minute duplicate window, so the log holds each event once;
    // the gate's window covers re-publications after that.
    while processed(&svc) < total as u64 {
        assert!(tokio::time::Instant::now() < deadline, "{:#}", svc.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingested: u64 = Priority::ALL
        .iter()
        .map(|p| svc.metrics().ingested.get(*p))
        .sum();
    assert_eq!(ingested, 2 * total as u64, "both copies acknowledged");
    assert_eq!(again_lag(&svc).await, 0);
    let seen = everything(&svc).await;
    assert_eq!(seen.len(), total);
    assert!(seen.values().all(|n| *n == 1));
    svc.shutdown(Duration::from_millis(200)).await;
    drop(svc);

    // A new process on the same streams and bucket: resumes at the
    // checkpoint, processes nothing again.
    let again = service(node.urls()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(processed(&again), 0, "{:#}", again.status());
    assert_eq!(again_lag(&again).await, 0);
    let seen = everything(&again).await;
    assert_eq!(seen.len(), total);
    assert!(seen.values().all(|n| *n == 1));
}
