//! The embedded event log on disk: order, restart, `kill -9`-style torn
//! tails, corruption that must not be papered over, trimming, and one
//! owner per directory.

use std::io::Write;
use std::time::Duration;

use eventlog::segment::{SegmentLog, SegmentOptions};
use eventlog::{Envelope, EventLog, IdempotencyToken, LogError};
use fbclock::TrueTime;

fn env(i: u64) -> Envelope {
    Envelope::new(
        format!("k/{}", i % 7),
        IdempotencyToken {
            event_time_ns: i as i64,
            nonce: u128::from(i),
        },
        TrueTime {
            earliest_ns: 0,
            latest_ns: 1,
        },
        i.to_le_bytes().to_vec(),
    )
    .unwrap()
}

fn opts(max_bytes: u64) -> SegmentOptions {
    SegmentOptions {
        fsync: false,
        span: Duration::from_secs(3600),
        max_bytes,
    }
}

async fn read_all(log: &EventLog) -> Vec<u64> {
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        let got = log
            .read(next, 1000, Duration::from_millis(1))
            .await
            .unwrap();
        if got.is_empty() {
            return out;
        }
        for s in got {
            assert_eq!(s.envelope, env(s.seq - 1), "record {} intact", s.seq);
            out.push(s.seq);
            next = s.seq + 1;
        }
    }
}

#[tokio::test]
async fn appends_read_back_in_order_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::Embedded(SegmentLog::open(dir.path(), opts(16 * 1024)).unwrap());
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    log.append(vec![env(t)]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            log.end().await.unwrap(),
            401,
            "concurrent appends: consecutive sequence numbers"
        );
    }
    // Rewrite deterministically: a fresh log with known contents.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), opts(16 * 1024)).unwrap();
        for i in 0..2000u64 {
            log.append(vec![env(i)]).await.unwrap();
        }
        assert!(log.segments() > 5, "small segments rotate");
    }
    let log = EventLog::Embedded(SegmentLog::open(dir.path(), opts(16 * 1024)).unwrap());
    assert_eq!(read_all(&log).await, (1..=2000).collect::<Vec<_>>());
    // Reads from the middle use the sparse index.
    let mid = log.read(1500, 3, Duration::ZERO).await.unwrap();
    assert_eq!(
        mid.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![1500, 1501, 1502]
    );
    // Appending after a restart continues the sequence.
    assert_eq!(log.append(vec![env(2000)]).await.unwrap(), 2001);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_corruption_elsewhere_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), opts(8 * 1024)).unwrap();
        for i in 0..500u64 {
            log.append(vec![env(i)]).await.unwrap();
        }
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    // A crash mid-write: half a record at the end of the last segment.
    let last = segs.last().unwrap().clone();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[40, 0, 0, 0, 1, 2, 3])
        .unwrap();
    let log = EventLog::Embedded(SegmentLog::open(dir.path(), opts(8 * 1024)).unwrap());
    assert_eq!(
        read_all(&log).await.len(),
        500,
        "nothing acknowledged was lost"
    );
    assert_eq!(log.append(vec![env(500)]).await.unwrap(), 501);
    drop(log);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A flipped byte in the middle of the last segment is not a torn tail:
    // cutting there would drop acknowledged records, so opening refuses.
    let mut segs_now: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs_now.sort();
    let newest = segs_now.last().unwrap().clone();
    let before = std::fs::read(&newest).unwrap();
    let mut bytes = before.clone();
    bytes[12] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    assert!(matches!(
        SegmentLog::open(dir.path(), opts(8 * 1024)),
        Err(LogError::Corrupt(_))
    ));
    std::fs::write(&newest, before).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A flipped byte in an older segment is corruption: refuse, name it.
    let first = &segs[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(first, bytes).unwrap();
    match SegmentLog::open(dir.path(), opts(8 * 1024)) {
        Err(LogError::Corrupt(m)) => assert!(m.contains(&first.display().to_string()), "{m}"),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn trim_drops_whole_segments_only_and_one_owner_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(dir.path(), opts(4 * 1024)).unwrap();
    for i in 0..600u64 {
        log.append(vec![env(i)]).await.unwrap();
    }
    let before = log.segments();
    let removed = log.trim_before(300).unwrap();
    assert!(removed > 0 && log.segments() == before - removed);
    let first = log.read(1, 1).unwrap()[0].seq;
    assert!(
        first <= 300 && first > 1,
        "kept from a segment boundary at or before 300: {first}"
    );
    match SegmentLog::open(dir.path(), opts(4 * 1024)) {
        Err(LogError::Io(m)) => assert!(m.contains("in use"), "{m}"),
        other => panic!("a second owner must be refused: {other:?}"),
    }
}
