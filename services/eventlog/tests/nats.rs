//! The NATS JetStream backends against a real `nats-server` (single node and
//! a 3-node cluster that loses its stream leader mid-write).
//!
//! Run: `cargo test -p timecard-eventlog --features testkit --test nats`.
//! Needs `nats-server` (see `eventlog::testkit::NATS_INSTALL_HINT`); without
//! it every test fails, unless `TIMECARD_SKIP_NATS=1`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eventlog::backend::{BackendOptions, BackendSpec};
use eventlog::nats::{NatsKv, NatsLog, NatsOptions, connect};
use eventlog::testkit::{NatsCluster, NatsNode, nats_server_or_skip};
use eventlog::{Backend, Envelope, EventLog, IdempotencyToken, Kv, KvError, Stored};
use fbclock::TrueTime;

/// The server binary, `None` to skip; panics (fails the test) with install
/// instructions when there is none and skipping was not asked for.
fn server_or_skip() -> Option<PathBuf> {
    match nats_server_or_skip() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn envelope(key: &str, i: i64) -> Envelope {
    Envelope::new(
        key,
        IdempotencyToken::fresh(1_700_000_000_000_000_000 + i),
        TrueTime {
            earliest_ns: i,
            latest_ns: i + 10,
        },
        format!("payload {key} {i}").into_bytes(),
    )
    .unwrap()
}

fn options(replicas: usize) -> NatsOptions {
    NatsOptions {
        replicas,
        max_age: Duration::from_secs(3600),
        request_timeout: Duration::from_secs(2),
    }
}

/// Reads `from..end` completely.
async fn read_all(log: &EventLog, from: u64) -> Vec<Stored> {
    let end = log.end().await.unwrap();
    let mut out: Vec<Stored> = Vec::new();
    let mut next = from;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next < end {
        assert!(
            Instant::now() < deadline,
            "reading {from}..{end} stuck at {next}"
        );
        let got = log
            .read(next, 4096, Duration::from_millis(500))
            .await
            .unwrap();
        let Some(last) = got.last() else { break };
        next = last.seq + 1;
        out.extend(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_log_appends_reads_dedups_skips_garbage_and_trims() {
    let Some(bin) = server_or_skip() else { return };
    let t0 = Instant::now();
    let node = NatsNode::start_with(&bin).unwrap();
    let client = connect(&node.urls(), Duration::from_secs(5)).await.unwrap();
    let log = EventLog::Nats(NatsLog::open(&client, "svc", &options(1)).await.unwrap());

    assert_eq!(log.end().await.unwrap(), 1);
    assert_eq!(log.append(vec![]).await.unwrap(), 0);
    assert!(
        log.read(1, 10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );

    let a: Vec<Envelope> = (0..5).map(|i| envelope("ns/a", i)).collect();
    let b: Vec<Envelope> = (0..7).map(|i| envelope("ns/b", i)).collect();
    assert_eq!(log.append(a.clone()).await.unwrap(), 5);
    assert_eq!(log.append(b.clone()).await.unwrap(), 12);
    assert_eq!(log.end().await.unwrap(), 13);
    assert_eq!(log.append(vec![]).await.unwrap(), 12);

    // In order, across calls of any size.
    let first = log.read(1, 3, Duration::from_millis(100)).await.unwrap();
    assert_eq!(first.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let rest = read_all(&log, 4).await;
    let all: Vec<Stored> = first.into_iter().chain(rest).collect();
    assert_eq!(
        all.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    let want: Vec<Envelope> = a.iter().chain(&b).cloned().collect();
    assert_eq!(
        all.iter().map(|s| s.envelope.clone()).collect::<Vec<_>>(),
        want
    );
    // Re-reading from an earlier position works too.
    let again = log.read(2, 2, Duration::from_millis(100)).await.unwrap();
    assert_eq!(again.iter().map(|s| s.seq).collect::<Vec<_>>(), [2, 3]);

    // The same event again is deduplicated: its first sequence, no new record.
    assert_eq!(log.append(vec![a[2].clone()]).await.unwrap(), 3);
    assert_eq!(
        log.append(vec![a[4].clone(), b[0].clone()]).await.unwrap(),
        6
    );
    assert_eq!(log.end().await.unwrap(), 13);

    // Tailing: nothing yet → returns after `wait`; a record appended while
    // waiting is returned promptly.
    let t = Instant::now();
    assert!(
        log.read(13, 10, Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            log.append(vec![envelope("ns/c", 1)]).await
        })
    };
    let t = Instant::now();
    let got = log.read(13, 10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].seq, 13);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "tail latency {:?}",
        t.elapsed()
    );
    assert_eq!(writer.await.unwrap().unwrap(), 13);

    // A message that is not an envelope, published straight into the stream,
    // is skipped (no panic, no error) and reading goes on past it.
    let js = async_nats::jetstream::new(client.clone());
    let ack = js
        .publish("tc.svc.junk", "not an envelope".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, 14);
    assert_eq!(log.append(vec![envelope("ns/c", 2)]).await.unwrap(), 15);
    let got = log.read(14, 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [15]);
    let ack = js
        .publish("tc.svc.junk", vec![1u8, 0, 0].into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, 16);
    assert!(
        log.read(16, 10, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(log.append(vec![envelope("ns/c", 3)]).await.unwrap(), 17);
    let got = log.read(16, 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [17]);
    let seqs: Vec<u64> = read_all(&log, 1).await.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (1..=13).chain([15, 17]).collect::<Vec<_>>());

    // Trimming drops records below the sequence only.
    log.trim_before(10).await.unwrap();
    let seqs: Vec<u64> = read_all(&log, 1).await.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [10, 11, 12, 13, 15, 17]);
    assert_eq!(log.end().await.unwrap(), 18);
    // Past the end: everything goes, numbering goes on.
    log.trim_before(1_000).await.unwrap();
    assert_eq!(log.end().await.unwrap(), 18);
    assert!(
        log.read(1, 10, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(log.append(vec![envelope("ns/d", 1)]).await.unwrap(), 18);

    // Opening again, even with other settings, uses the existing stream.
    let other = NatsOptions {
        max_age: Duration::from_secs(60),
        ..options(1)
    };
    let log2 = EventLog::Nats(NatsLog::open(&client, "svc", &other).await.unwrap());
    assert_eq!(log2.end().await.unwrap(), 19);
    let got = log2.read(1, 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [18]);
    println!("single node log test: {:.2?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_kv_puts_gets_deletes_and_scans() {
    let Some(bin) = server_or_skip() else { return };
    let t0 = Instant::now();
    let node = NatsNode::start_with(&bin).unwrap();
    let client = connect(&node.urls(), Duration::from_secs(5)).await.unwrap();
    let kv = Kv::Nats(NatsKv::open(&client, "svc", &options(1)).await.unwrap());

    assert_eq!(kv.get("a/1").await.unwrap(), None);
    assert!(kv.scan("").await.unwrap().is_empty());
    let pairs = [
        ("a/1", "x"),
        ("a/2", "y"),
        ("b", "z"),
        ("a.x.1", "w"),
        ("a.x=2", "v"),
        ("a.y.1", "u"),
        ("counter/ns1/c.x=1", "t"),
    ];
    kv.put_all(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(kv.get("a/1").await.unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(
        kv.get("counter/ns1/c.x=1").await.unwrap().as_deref(),
        Some(&b"t"[..])
    );
    kv.delete("a/2").await.unwrap();
    assert_eq!(kv.get("a/2").await.unwrap(), None);
    kv.delete("never-written").await.unwrap();
    kv.put("a/1", b"x2".to_vec()).await.unwrap();
    assert_eq!(kv.get("a/1").await.unwrap().as_deref(), Some(&b"x2"[..]));

    let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        kv.scan("a/").await.unwrap(),
        vec![("a/1".to_owned(), b"x2".to_vec())]
    );
    assert_eq!(
        keys(kv.scan("").await.unwrap()),
        ["a.x.1", "a.x=2", "a.y.1", "a/1", "b", "counter/ns1/c.x=1"]
    );
    assert_eq!(keys(kv.scan("a.x").await.unwrap()), ["a.x.1", "a.x=2"]);
    assert_eq!(keys(kv.scan("a.x.").await.unwrap()), ["a.x.1"]);
    assert_eq!(
        keys(kv.scan("a.").await.unwrap()),
        ["a.x.1", "a.x=2", "a.y.1"]
    );
    assert!(kv.scan("zzz").await.unwrap().is_empty());
    assert!(matches!(kv.get("a b").await, Err(KvError::BadKey(_))));

    // Reopening sees the same bucket.
    let kv2 = Kv::Nats(NatsKv::open(&client, "svc", &options(1)).await.unwrap());
    assert_eq!(kv2.get("b").await.unwrap().as_deref(), Some(&b"z"[..]));
    println!("single node kv test: {:.2?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_restart_keeps_the_log_and_outage_errors_are_clear() {
    let Some(bin) = server_or_skip() else { return };
    let t0 = Instant::now();
    let mut node = NatsNode::start_with(&bin).unwrap();
    let client = connect(&node.urls(), Duration::from_secs(5)).await.unwrap();
    let opts = NatsOptions {
        request_timeout: Duration::from_millis(500),
        ..options(1)
    };
    let log = EventLog::Nats(NatsLog::open(&client, "dur", &opts).await.unwrap());
    let kv = Kv::Nats(NatsKv::open(&client, "dur", &opts).await.unwrap());
    let events: Vec<Envelope> = (0..3).map(|i| envelope("ns/x", i)).collect();
    assert_eq!(log.append(events.clone()).await.unwrap(), 3);
    kv.put("ck", b"3".to_vec()).await.unwrap();
    assert_eq!(
        log.read(1, 10, Duration::from_secs(1)).await.unwrap().len(),
        3
    );

    node.kill().unwrap();
    let t = Instant::now();
    let unsure = envelope("ns/x", 9);
    let e = log
        .append(vec![unsure.clone()])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("tc.dur.ev") && e.contains("attempt"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        t.elapsed()
    );
    assert!(
        kv.get("ck")
            .await
            .unwrap_err()
            .to_string()
            .contains("tc_dur")
    );
    println!("while down: {e}");

    tokio::task::block_in_place(|| node.restart()).unwrap();
    // The client reconnects by itself; the data survived (file storage).
    let deadline = Instant::now() + Duration::from_secs(10);
    let end = loop {
        match log.end().await {
            Ok(end) => break end,
            Err(e) => assert!(Instant::now() < deadline, "no reconnect: {e}"),
        }
    };
    // A failed append has an unknown outcome: the client may have flushed
    // the publishes it buffered while disconnected (deduplicated to one).
    assert!(end == 4 || end == 5, "end {end}");
    assert_eq!(kv.get("ck").await.unwrap().as_deref(), Some(&b"3"[..]));
    // Retrying the same event is safe either way: it is stored exactly once.
    assert_eq!(log.append(vec![unsure.clone()]).await.unwrap(), 4);
    assert_eq!(log.end().await.unwrap(), 5);
    let got = read_all(&log, 1).await;
    let want: Vec<Envelope> = events.into_iter().chain([unsure]).collect();
    assert_eq!(
        got.into_iter().map(|s| s.envelope).collect::<Vec<_>>(),
        want
    );
    println!("single node restart test: {:.2?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_big_batches_and_impossible_settings() {
    let Some(bin) = server_or_skip() else { return };
    let t0 = Instant::now();
    let node = NatsNode::start_with(&bin).unwrap();
    let client = connect(&node.urls(), Duration::from_secs(5)).await.unwrap();

    // More records in one append than acks may be in flight at once.
    let log = EventLog::Nats(NatsLog::open(&client, "big", &options(1)).await.unwrap());
    let events: Vec<Envelope> = (0..10_000).map(|i| envelope("ns/big", i)).collect();
    let t = Instant::now();
    assert_eq!(log.append(events.clone()).await.unwrap(), 10_000);
    println!("appended 10000 in one batch in {:.2?}", t.elapsed());
    // Two appenders at once, overlapping events: still each stored once.
    let (l1, l2) = (log.clone(), log.clone());
    let (e1, e2) = (events[..6000].to_vec(), events[4000..].to_vec());
    let (r1, r2) = tokio::join!(l1.append(e1), l2.append(e2));
    assert_eq!((r1.unwrap(), r2.unwrap()), (6000, 10_000));
    assert_eq!(log.end().await.unwrap(), 10_001);
    let t = Instant::now();
    let got = read_all(&log, 1).await;
    println!("read 10000 in {:.2?}", t.elapsed());
    assert_eq!(
        got.into_iter().map(|s| s.envelope).collect::<Vec<_>>(),
        events
    );

    // Three replicas on a single server: a clear error, without retrying.
    let t = Instant::now();
    let e = NatsLog::open(&client, "r3", &options(3))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("TC_R3") && e.contains("10074"), "{e}");
    let e = NatsKv::open(&client, "r3", &options(3))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("tc_r3") && e.contains("10074"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    println!("impossible settings: {e}");
    println!("big batch test: {:.2?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_opens_nats_from_its_spec() {
    let Some(bin) = server_or_skip() else { return };
    let node = NatsNode::start_with(&bin).unwrap();
    let spec: BackendSpec = node.url().parse().unwrap();
    let opts = BackendOptions {
        nats: Some(options(1)),
        ..BackendOptions::default()
    };
    let backend = Backend::open(&spec, "counter", &opts).await.unwrap();
    assert!(
        backend.description.contains("NATS"),
        "{}",
        backend.description
    );
    assert_eq!(backend.log.append(vec![envelope("k", 1)]).await.unwrap(), 1);
    backend.kv.put("checkpoint", b"1".to_vec()).await.unwrap();
    assert_eq!(
        backend.kv.get("checkpoint").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_names_the_servers() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let t = Instant::now();
    let e = connect(std::slice::from_ref(&url), Duration::from_millis(800))
        .await
        .unwrap_err();
    assert!(e.contains(&url), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let e = connect(&["http//bad url".to_owned()], Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(e.contains("bad url"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_every_acknowledged_event_exactly_once_across_leader_loss() {
    let Some(bin) = server_or_skip() else { return };
    let t0 = Instant::now();
    let mut cluster = NatsCluster::start_with(&bin, 3).unwrap();
    println!("cluster up in {:.2?}", t0.elapsed());
    let client = connect(&cluster.urls(), Duration::from_secs(10))
        .await
        .unwrap();
    let opts = options(3);
    let log = EventLog::Nats(NatsLog::open(&client, "ha", &opts).await.unwrap());
    let kv = Kv::Nats(NatsKv::open(&client, "ha", &opts).await.unwrap());

    const BATCHES: usize = 300;
    const BATCH: usize = 10;
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (log, progress) = (log.clone(), progress.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut acked: Vec<Envelope> = Vec::new();
            let (mut failures, mut slowest) = (0usize, Duration::ZERO);
            for b in 0..BATCHES {
                let batch: Vec<Envelope> = (0..BATCH)
                    .map(|j| envelope(&format!("k/{b}"), (b * BATCH + j) as i64))
                    .collect();
                let t = Instant::now();
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "writer: batch {b} not acknowledged within the 60 s bound"
                    );
                    match log.append(batch.clone()).await {
                        Ok(_) => break,
                        Err(e) => {
                            failures += 1;
                            println!("append of batch {b} failed (retrying): {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                slowest = slowest.max(t.elapsed());
                acked.extend(batch);
                progress.store(b + 1, Ordering::SeqCst);
            }
            (acked, failures, slowest)
        })
    };

    // A reader tails the log the way services do, through the failover.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tailer = {
        let (log, done) = (log.clone(), done.clone());
        tokio::spawn(async move {
            let mut got: Vec<Stored> = Vec::new();
            let (mut next, mut errors) = (1u64, 0usize);
            let deadline = Instant::now() + Duration::from_secs(100);
            loop {
                assert!(Instant::now() < deadline, "tailer stuck at {next}");
                match log.read(next, 4096, Duration::from_millis(100)).await {
                    Ok(batch) => {
                        if let Some(last) = batch.last() {
                            next = last.seq + 1;
                        } else if done.load(Ordering::SeqCst) && got.len() >= BATCHES * BATCH {
                            return (got, errors);
                        }
                        got.extend(batch);
                    }
                    Err(e) => {
                        errors += 1;
                        println!("tailer read at {next} failed (retrying): {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };

    // Kill the stream leader once about a third has been written.
    while progress.load(Ordering::SeqCst) < BATCHES / 3 {
        assert!(!writer.is_finished(), "writer ended early");
        assert!(t0.elapsed() < Duration::from_secs(60), "writer too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let js = async_nats::jetstream::new(client.clone());
    let leader = js.get_stream("TC_HA").await.ok().and_then(|s| {
        s.cached_info()
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
    });
    let victim = leader
        .as_deref()
        .and_then(|l| cluster.index_of(l))
        .unwrap_or(0);
    let killed_at = Instant::now();
    cluster.kill(victim).unwrap();
    println!(
        "killed stream leader {:?} (node {victim}) after {} batches, {:.2?} in",
        leader,
        progress.load(Ordering::SeqCst),
        t0.elapsed()
    );

    let (acked, failures, slowest) = tokio::time::timeout(Duration::from_secs(75), writer)
        .await
        .expect("writer did not finish in time")
        .unwrap();
    println!(
        "writer done {:.2?} after the kill: {} events acknowledged, {failures} failed append(s), slowest batch {slowest:.2?}",
        killed_at.elapsed(),
        acked.len()
    );
    assert_eq!(acked.len(), BATCHES * BATCH);

    // The survivors serve every acknowledged event exactly once.
    let t = Instant::now();
    let all = read_all(&log, 1).await;
    let mut seen: HashMap<(String, IdempotencyToken), u32> = HashMap::new();
    for s in &all {
        *seen
            .entry((s.envelope.key.clone(), s.envelope.token))
            .or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{} duplicated events, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    let missing = acked
        .iter()
        .filter(|e| !seen.contains_key(&(e.key.clone(), e.token)))
        .count();
    assert_eq!(missing, 0, "{missing} acknowledged events lost");
    let acked_ids: HashSet<_> = acked.iter().map(|e| (e.key.clone(), e.token)).collect();
    assert_eq!(
        all.len(),
        acked_ids.len(),
        "events stored that were never appended"
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    println!("read back {} events in {:.2?}", all.len(), t.elapsed());

    // The tailer, reading through the failover, saw the same sequence.
    done.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let (tailed, tail_errors) = tokio::time::timeout(Duration::from_secs(60), tailer)
        .await
        .expect("tailer did not catch up in time")
        .unwrap();
    println!(
        "tailer caught up {:.2?} after the writer ({tail_errors} failed read(s))",
        t.elapsed()
    );
    assert_eq!(tailed, all);

    // The KV bucket works on the two survivors too.
    kv.put("after/kill", b"ok".to_vec()).await.unwrap();
    assert_eq!(
        kv.get("after/kill").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );

    let t = Instant::now();
    tokio::task::block_in_place(|| cluster.restart(victim)).unwrap();
    println!("node {victim} restarted and healthy in {:.2?}", t.elapsed());
    assert_eq!(
        log.append(vec![envelope("k/after", 1)]).await.unwrap(),
        log.end().await.unwrap() - 1
    );
    println!("cluster test total: {:.2?}", t0.elapsed());
}
