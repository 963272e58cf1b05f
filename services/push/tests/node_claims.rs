//! Node id claims on a real nats-server: two edge nodes sharing a NATS
//! registry can never hold the same node id at once; a claim is renewed
//! while its holder lives, given back on release or drop, and taken over
//! once its holder stops renewing it (a crash) for the registry TTL.

use std::time::{Duration, Instant};

use eventlog::testkit::{NatsNode, nats_server_or_skip};
use push::registry::{DEFAULT_BUCKET, Registry, RegistryError, unix_now_ms};

const TTL: Duration = Duration::from_secs(1);

async fn registry(url: &str) -> (async_nats::Client, Registry) {
    let client = async_nats::connect(url).await.unwrap();
    let r = Registry::nats(&client, DEFAULT_BUCKET, TTL, 1)
        .await
        .unwrap();
    (client, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ids_are_claimed_renewed_released_and_taken_over() {
    let Some(bin) = nats_server_or_skip().unwrap() else {
        return;
    };
    let nats = NatsNode::start_with(&bin).unwrap();
    let (_ca, a) = registry(&nats.url()).await;
    let (cb, b) = registry(&nats.url()).await;

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
            assert!(
                holder.ends_with(&format!(":{}", std::process::id())),
                "{holder}"
            );
            assert!(*expires_in_ms <= TTL.as_millis() as u64, "{err}");
        }
        other => panic!("expected NodeInUse, got {other}"),
    }
    // Renewed while held: still refused well past the TTL.
    tokio::time::sleep(TTL * 5 / 2).await;
    assert!(matches!(
        b.claim_node("edge-1").await,
        Err(RegistryError::NodeInUse { .. })
    ));
    // Released: free at once.
    claim.release().await;
    let taken = b.claim_node("edge-1").await.unwrap();

    // Dropped inside a runtime: given back shortly after.
    drop(taken);
    let deadline = Instant::now() + Duration::from_secs(5);
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

    // A crashed holder's record (not renewed, expired) and a garbage record
    // are taken over; a live one written by another process is not.
    let kv = async_nats::jetstream::new(cb.clone())
        .get_key_value(DEFAULT_BUCKET)
        .await
        .unwrap();
    let stale = format!("{} ghost:1", unix_now_ms() - 1);
    kv.put("n.edge-2", stale.into()).await.unwrap();
    kv.put("n.edge-3", "not a claim".into()).await.unwrap();
    let live = format!("{} other-host:7", unix_now_ms() + 60_000);
    kv.put("n.edge-4", live.into()).await.unwrap();
    let two = b.claim_node("edge-2").await.unwrap();
    let three = b.claim_node("edge-3").await.unwrap();
    let err = b.claim_node("edge-4").await.unwrap_err();
    assert!(err.to_string().contains("other-host:7"), "{err}");
    // The taken-over claims are now renewed by their new holder.
    tokio::time::sleep(TTL * 2).await;
    assert!(a.claim_node("edge-2").await.is_err());
    assert!(a.claim_node("edge-3").await.is_err());
    two.release().await;
    three.release().await;
}
