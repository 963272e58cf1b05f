//! Bulkheads: isolation between channels, the breaker's recovery, bounded
//! queues and exactly one outcome per queued push.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Outcomes, bounded, hex_token, push, wait_until};
use outbound::standin::{ApnsStandin, FcmStandin, Mode};
use outbound::{
    Adapter, ApnsAdapter, ApnsConfig, BreakerState, Bulkhead, BulkheadConfig, Channel, FcmAdapter,
    FcmConfig, FnAdapter, Outcome, Push, Refused, SendError,
};

const LIMIT: Duration = Duration::from_secs(30);

fn apns(s: &ApnsStandin) -> ApnsAdapter {
    ApnsAdapter::new(ApnsConfig {
        endpoint: s.endpoint(),
        topic: "com.example.timecard".into(),
        bearer_token: None,
        connections: 2,
    })
    .unwrap()
}

/// Submits, yielding while the queue is full; panics on other refusals.
async fn submit_all(b: &Bulkhead, pushes: impl IntoIterator<Item = Push>) {
    for p in pushes {
        loop {
            match b.try_submit(p.clone()) {
                Ok(()) => break,
                Err(Refused::QueueFull) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_apns_does_not_slow_fcm_or_edge() {
    bounded(async {
        let apns_standin = ApnsStandin::spawn().await;
        apns_standin.set_mode(Mode::Stall);
        let fcm_standin = FcmStandin::spawn("p").await;
        let (apns_out, fcm_out, edge_out) = (
            Outcomes::default(),
            Outcomes::default(),
            Outcomes::default(),
        );
        let apns_b = Bulkhead::start(
            apns(&apns_standin),
            BulkheadConfig {
                queue_capacity: 100,
                concurrency: 8,
                timeout: Duration::from_millis(200),
                failure_threshold: 3,
                open_for: Duration::from_secs(3600),
            },
            apns_out.sink(),
        );
        let fcm_b = Bulkhead::start(
            FcmAdapter::new(FcmConfig {
                endpoint: fcm_standin.endpoint(),
                project_id: "p".into(),
                bearer_token: None,
                connections: 2,
            })
            .unwrap(),
            BulkheadConfig {
                queue_capacity: 500,
                concurrency: 32,
                ..BulkheadConfig::default()
            },
            fcm_out.sink(),
        );
        let edge_b = Bulkhead::start(
            FnAdapter::new(Channel::Edge, |_: &Push| Ok(())),
            BulkheadConfig::default(),
            edge_out.sink(),
        );
        assert_eq!(
            (apns_b.channel(), fcm_b.channel(), edge_b.channel()),
            (Channel::Apns, Channel::Fcm, Channel::Edge)
        );

        const N: u64 = 2_000;
        let mut apns_accepted = 0u64;
        let mut apns_refused = 0u64;
        for i in 0..N {
            match apns_b.try_submit(push(i, &hex_token(i))) {
                Ok(()) => apns_accepted += 1,
                Err(Refused::QueueFull | Refused::BreakerOpen) => apns_refused += 1,
                Err(Refused::Closed) => unreachable!(),
            }
            assert!(apns_b.stats().queued <= 100, "APNs queue stays bounded");
            submit_all(&fcm_b, [push(i, &format!("fcm-{i}"))]).await;
            submit_all(&edge_b, [push(i, "edge")]).await;
        }
        wait_until("FCM and edge deliveries", LIMIT, || {
            fcm_b.stats().delivered == N && edge_b.stats().delivered == N
        })
        .await;
        assert_eq!(fcm_standin.delivered(), N as usize);
        assert_eq!(fcm_out.count(|o| *o == Outcome::Delivered), N as usize);
        assert_eq!(edge_out.count(|o| *o == Outcome::Delivered), N as usize);

        wait_until("the APNs breaker to open", LIMIT, || {
            apns_b.stats().breaker == BreakerState::Open
        })
        .await;
        for i in N..N + 100 {
            assert_eq!(
                apns_b.try_submit(push(i, &hex_token(i))),
                Err(Refused::BreakerOpen)
            );
        }
        wait_until("APNs outcomes for every queued push", LIMIT, || {
            apns_out.total() as u64 == apns_accepted
        })
        .await;
        let st = apns_b.stats();
        assert!(st.queued <= 100);
        assert_eq!(st.delivered, 0);
        assert!(st.timeouts >= 3, "{st:?}");
        assert!(st.breaker_opened >= 1);
        assert_eq!(
            st.shed_queue_full + st.shed_breaker_open,
            apns_refused + 100
        );
        assert!(st.shed_breaker_open >= 100);
        assert_eq!(st.failed + st.dropped_breaker_open, apns_accepted);
        assert!(apns_out.duplicates().is_empty());

        for b in [&apns_b, &fcm_b, &edge_b] {
            b.shutdown(Duration::from_secs(5)).await;
        }
        apns_standin.set_mode(Mode::Normal);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_half_opens_and_recovers() {
    bounded(async {
        let s = ApnsStandin::spawn().await;
        s.set_mode(Mode::Stall);
        let out = Outcomes::default();
        let b = Bulkhead::start(
            apns(&s),
            BulkheadConfig {
                queue_capacity: 50,
                concurrency: 4,
                timeout: Duration::from_millis(200),
                failure_threshold: 3,
                open_for: Duration::from_millis(300),
            },
            out.sink(),
        );
        let mut id = 0u64;
        let mut accepted = 0usize;
        let mut submit = |b: &Bulkhead| {
            id += 1;
            let r = b.try_submit(push(id, &hex_token(id)));
            if r.is_ok() {
                accepted += 1;
            }
            r
        };
        for _ in 0..4 {
            submit(&b).unwrap();
        }
        wait_until("the breaker to open", LIMIT, || {
            b.stats().breaker_opened >= 1
        })
        .await;
        // Still stalled: the half-open probe times out and the breaker opens again.
        wait_until("a failed probe to reopen the breaker", LIMIT, || {
            let _ = submit(&b);
            b.stats().breaker_opened >= 2
        })
        .await;
        s.set_mode(Mode::Normal);
        wait_until("deliveries to resume", LIMIT, || {
            let _ = submit(&b);
            b.stats().delivered >= 10
        })
        .await;
        let st = b.stats();
        assert_eq!(st.breaker, BreakerState::Closed);
        assert!(st.timeouts >= 3);
        b.shutdown(Duration::from_secs(5)).await;
        assert_eq!(out.total(), accepted);
        assert!(out.duplicates().is_empty());
        assert!(s.delivered() >= 10);
    })
    .await;
}

/// Answers odd ids at once, hangs forever on multiples of 10, sleeps 1 ms otherwise.
struct Mixed;

impl Adapter for Mixed {
    fn channel(&self) -> Channel {
        Channel::Edge
    }

    async fn send(&self, push: &Push) -> Result<(), SendError> {
        if push.notification_id % 2 == 1 {
            return Ok(());
        }
        if push.notification_id.is_multiple_of(10) {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_queued_push_gets_exactly_one_outcome_across_shutdown() {
    bounded(async {
        let out = Outcomes::default();
        let b = Bulkhead::start(
            Mixed,
            BulkheadConfig {
                queue_capacity: 2_000,
                concurrency: 4,
                timeout: Duration::from_secs(3600),
                ..BulkheadConfig::default()
            },
            out.sink(),
        );
        let mut accepted = Vec::new();
        for i in 0..2_000u64 {
            if b.try_submit(push(i, "t")).is_ok() {
                accepted.push(i);
            }
        }
        assert!(accepted.len() >= 1_000);
        b.shutdown(Duration::from_millis(300)).await;
        assert_eq!(b.try_submit(push(9_999, "t")), Err(Refused::Closed));
        assert_eq!(out.total(), accepted.len());
        assert!(out.duplicates().is_empty());
        assert!(accepted.iter().all(|i| out.has(*i)));
        let cut = out.count(|o| *o == Outcome::Failed(SendError::Transient("shutdown".into())));
        assert!(cut >= 4, "the hanging pushes were cut off ({cut})");
        let st = b.stats();
        assert_eq!((st.queued, st.in_flight), (0, 0));
        assert_eq!(st.delivered + st.failed, accepted.len() as u64);
        // A second shutdown is harmless.
        b.shutdown(Duration::from_millis(10)).await;
        assert_eq!(out.total(), accepted.len());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue_within_the_deadline() {
    bounded(async {
        let out = Outcomes::default();
        let sent = Arc::new(AtomicU64::new(0));
        let s2 = Arc::clone(&sent);
        let b = Bulkhead::start(
            FnAdapter::new(Channel::Edge, move |_: &Push| {
                s2.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }),
            BulkheadConfig {
                concurrency: 3,
                ..BulkheadConfig::default()
            },
            out.sink(),
        );
        for i in 0..5_000 {
            b.try_submit(push(i, "t")).unwrap();
        }
        b.shutdown(Duration::from_secs(30)).await;
        assert_eq!(out.count(|o| *o == Outcome::Delivered), 5_000);
        assert_eq!(sent.load(Ordering::Relaxed), 5_000);
        assert_eq!(b.stats().delivered, 5_000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_is_bounded_and_sheds() {
    bounded(async {
        let out = Outcomes::default();
        let b = Bulkhead::start(
            FnAdapter::new(Channel::Edge, |_: &Push| Ok(())),
            BulkheadConfig::default(),
            out.sink(),
        );
        drop(b);
        // The same with an adapter that never answers.
        let b = Bulkhead::start(
            Mixed,
            BulkheadConfig {
                queue_capacity: 10,
                concurrency: 2,
                timeout: Duration::from_secs(3600),
                ..BulkheadConfig::default()
            },
            out.sink(),
        );
        let mut accepted = 0u64;
        for i in 0..50u64 {
            if b.try_submit(push(i * 10, "t")).is_ok() {
                accepted += 1;
            }
            tokio::task::yield_now().await;
        }
        let st = b.stats();
        assert!(st.queued <= 10, "{st:?}");
        assert!(
            accepted <= 10 + 2,
            "capacity plus one in flight per worker ({accepted})"
        );
        assert_eq!(st.shed_queue_full, 50 - accepted);
        b.shutdown(Duration::from_millis(100)).await;
        assert_eq!(out.total() as u64, accepted);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_errors_do_not_open_the_breaker() {
    bounded(async {
        let out = Outcomes::default();
        let b = Bulkhead::start(
            FnAdapter::new(Channel::Fcm, |p: &Push| match p.notification_id % 2 {
                0 => Err(SendError::Unregistered),
                _ => Err(SendError::Rejected("bad".into())),
            }),
            BulkheadConfig {
                failure_threshold: 2,
                ..BulkheadConfig::default()
            },
            out.sink(),
        );
        submit_all(&b, (0..1_000).map(|i| push(i, "t"))).await;
        b.shutdown(Duration::from_secs(10)).await;
        let st = b.stats();
        assert_eq!(st.breaker, BreakerState::Closed);
        assert_eq!(st.breaker_opened, 0);
        assert_eq!(st.failed, 1_000);
        assert_eq!(st.unregistered, 500);
        assert_eq!(out.total(), 1_000);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["channel"], "fcm");
        assert_eq!(json["breaker"], "closed");
    })
    .await;
}

/// Hangs on push 0, delivers everything else at once.
struct HangsOnZero;

impl Adapter for HangsOnZero {
    fn channel(&self) -> Channel {
        Channel::Edge
    }

    fn send(&self, push: &Push) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        let hang = push.notification_id == 0;
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_off_a_hung_worker_after_others_finished() {
    // Which worker takes the hanging push is up to the scheduler; over
    // several rounds some finished workers come before the hung one in the
    // join order (that once panicked: a finished JoinHandle polled again).
    bounded(async {
        for _ in 0..8 {
            let outcomes = Outcomes::default();
            let config = BulkheadConfig {
                concurrency: 4,
                timeout: Duration::from_secs(3_600),
                ..BulkheadConfig::default()
            };
            let b = Bulkhead::start(HangsOnZero, config, outcomes.sink());
            b.try_submit(push(0, "t")).unwrap();
            submit_all(&b, (1..50).map(|i| push(i, "t"))).await;
            b.shutdown(Duration::from_millis(100)).await;
            assert_eq!(outcomes.total(), 50, "one outcome per push");
            assert!(outcomes.duplicates().is_empty());
            let cut = outcomes.count(|o| {
                matches!(o, Outcome::Failed(SendError::Transient(r)) if r == outbound::SHUTDOWN_REASON)
            });
            assert!(cut >= 1 && outcomes.has(0), "the hung push is cut off");
        }
    })
    .await;
}
