//! Node id claims on a real nats-server: two edge nodes sharing a NATS
//! registry can never hold the same node id at once; a claim is renewed
//! while its holder lives, given back on release or drop, taken over at
//! once from a process of this host that has exited, and from any other
//! holder only once it stopped renewing; a node whose claim another takes
//! over is told so.

use std::time::{Duration, Instant};

use eventlog::testkit::{NatsNode, nats_server_or_skip};
use push::registry::{DEFAULT_BUCKET, Registry, RegistryError, unix_now_ms};

const TTL: Duration = Duration::from_secs(2);

async fn registry(url: &str) -> (async_nats::Client, Registry) {
    let client = async_nats::connect(url).await.unwrap();
    let r = Registry::nats(&client, DEFAULT_BUCKET, TTL, 1)
        .await
        .unwrap();
    (client, r)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ids_are_claimed_renewed_released_and_taken_over() {
    let Some(bin) = nats_server_or_skip().unwrap() else {
        return;
    };
    let nats = NatsNode::start_with(&bin).unwrap();
    let (_ca, a) = registry(&nats.url()).await;
    let (cb, b) = registry(&nats.url()).await;
    let kv = async_nats::jetstream::new(cb.clone())
        .get_key_value(DEFAULT_BUCKET)
        .await
        .unwrap();

    // One holder at a time, told apart by host:pid in the refusal.
    let claim = a.claim_node("edge-1").await.unwrap();
    let err = b.claim_node("edge-1").await.unwrap_err();
    match &err {
        RegistryError::NodeInUse {
            node,
            holder,
            expires_in_ms,
        } => {
            assert_eq!(node, "edge-1");
            let process = format!("{}:{}/", host_name(), std::process::id());
            assert!(holder.starts_with(&process), "{holder}");
            assert!(
                expires_in_ms.is_some_and(|ms| ms <= TTL.as_millis() as u64),
                "{err}"
            );
        }
        other => panic!("expected NodeInUse, got {other}"),
    }
    assert!(err.to_string().contains("--node-id"), "{err}");
    // Renewed while held: still refused well past the TTL.
    tokio::time::sleep(TTL * 5 / 2).await;
    assert!(matches!(
        b.claim_node("edge-1").await,
        Err(RegistryError::NodeInUse { .. })
    ));
    // Released: free at once.
    claim.release().await;
    let taken = b.claim_node("edge-1").await.unwrap();

    // Dropped inside a runtime: given back well before it would expire.
    drop(taken);
    let deadline = Instant::now() + TTL / 2;
    let again = loop {
        match a.claim_node("edge-1").await {
            Ok(c) => break c,
            Err(RegistryError::NodeInUse { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("a dropped claim was not given back: {e}"),
        }
    };
    again.release().await;

    // A process of this host that has exited (a crash, then a restart):
    // taken over at once, though its record has not expired.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let exited = child.id();
    child.wait().unwrap();
    let crashed = format!("{} {}:{exited}", unix_now_ms() + 60_000, host_name());
    kv.put("n.edge-2", crashed.into()).await.unwrap();
    let started = Instant::now();
    let two = b.claim_node("edge-2").await.unwrap();
    assert!(started.elapsed() < TTL / 2, "{:?}", started.elapsed());

    // Another host's expired claim that nobody renews, and garbage: taken
    // over after watching them for a renewal period and a half. A live one
    // of another host is refused, even if its clock makes it look expired:
    // its renewals show it is alive.
    let stale = format!("{} ghost:1", unix_now_ms() - 1);
    kv.put("n.edge-3", stale.into()).await.unwrap();
    kv.put("n.edge-4", "not a claim".into()).await.unwrap();
    let three = b.claim_node("edge-3").await.unwrap();
    let four = b.claim_node("edge-4").await.unwrap();
    let live = format!("{} other-host:7", unix_now_ms() + 60_000);
    kv.put("n.edge-5", live.into()).await.unwrap();
    let err = b.claim_node("edge-5").await.unwrap_err();
    assert!(err.to_string().contains("other-host:7"), "{err}");
    let renewer = {
        let kv = kv.clone();
        tokio::spawn(async move {
            loop {
                // A holder whose clock is a minute behind ours.
                let v = format!("{} skewed-host:9", unix_now_ms() - 60_000);
                kv.put("n.edge-6", v.into()).await.unwrap();
                tokio::time::sleep(TTL / 3).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = b.claim_node("edge-6").await.unwrap_err();
    assert!(err.to_string().contains("skewed-host:9"), "{err}");
    renewer.abort();

    // The taken-over claims are now renewed by their new holder.
    tokio::time::sleep(TTL * 3 / 2).await;
    for id in ["edge-2", "edge-3", "edge-4"] {
        assert!(a.claim_node(id).await.is_err(), "{id}");
    }

    // A record that vanished behind a live claim's back (the bucket drops
    // records nobody could rewrite during a long outage) is written again.
    kv.delete("n.edge-3").await.unwrap();
    tokio::time::sleep(TTL).await;
    let entry = kv.entry("n.edge-3").await.unwrap().unwrap();
    assert_eq!(entry.operation, async_nats::jetstream::kv::Operation::Put);
    assert!(a.claim_node("edge-3").await.is_err());
    assert!(!*three.lost().borrow());

    // A claim another node took over (this one could not renew it) says so.
    let mut lost = two.lost();
    assert!(!*lost.borrow());
    kv.put(
        "n.edge-2",
        format!("{} usurper:3", unix_now_ms() + 60_000).into(),
    )
    .await
    .unwrap();
    tokio::time::timeout(TTL, lost.wait_for(|l| *l))
        .await
        .expect("the loss is noticed within a renewal period")
        .unwrap();
    // Released after the loss: the usurper's record stays.
    two.release().await;
    let entry = kv.entry("n.edge-2").await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&entry.value).ends_with("usurper:3"));
    three.release().await;
    four.release().await;
}
