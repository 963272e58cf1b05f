//! The embedded event log's segment files after a crash, a bad disk or a
//! stray write: any bytes as the last segment either open (a torn tail cut
//! off) or are refused as corrupt, never a panic; a log that opens reads
//! back exactly its records, numbered 1, 2, 3, ... with nothing skipped.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use eventlog::segment::{SegmentLog, SegmentOptions};
use libfuzzer_sys::fuzz_target;

/// One scratch directory per fuzzing process, reused by every input.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("timecard-fuzz-segment-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a scratch directory");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("a scratch directory");
    std::fs::write(dir.join(format!("{:020}.seg", 1)), data).expect("the segment is written");
    let options = SegmentOptions {
        fsync: false,
        ..SegmentOptions::default()
    };
    let Ok(log) = SegmentLog::open(dir, options) else {
        return;
    };
    let end = log.end();
    let records = log.read(1, usize::MAX).expect("an opened log reads");
    assert_eq!(records.len() as u64, end - 1);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
    }
});
