//! Helpers shared by the integration tests (included with `mod common;`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use outbound::{Outcome, OutcomeSink, Push};

/// A 64-hex-digit APNs-style token derived from `n`.
pub fn hex_token(n: u64) -> String {
    format!("{n:064x}")
}

pub fn push(id: u64, token: &str) -> Push {
    Push {
        notification_id: id,
        member: Arc::from("member-7"),
        device_id: Arc::from(format!("device-{id}").as_str()),
        device_token: Arc::from(token),
        urgent: true,
        kind: Arc::from("new-episode"),
        body: Bytes::from_static(br#"{"show":"The Clock","episode":42}"#),
        expires_at_unix_s: 0,
        created: Instant::now(),
    }
}

/// Counts outcomes per notification id.
#[derive(Clone, Default)]
pub struct Outcomes {
    inner: Arc<Mutex<HashMap<u64, Vec<Outcome>>>>,
}

impl Outcomes {
    pub fn sink(&self) -> OutcomeSink {
        let inner = Arc::clone(&self.inner);
        Arc::new(move |p: &Push, o: &Outcome| {
            inner
                .lock()
                .unwrap()
                .entry(p.notification_id)
                .or_default()
                .push(o.clone());
        })
    }

    pub fn total(&self) -> usize {
        self.inner.lock().unwrap().values().map(Vec::len).sum()
    }

    pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.inner
            .lock()
            .unwrap()
            .values()
            .flatten()
            .filter(|o| pred(o))
            .count()
    }

    /// Ids with more than one outcome.
    pub fn duplicates(&self) -> Vec<u64> {
        let m = self.inner.lock().unwrap();
        m.iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, _)| *k)
            .collect()
    }

    pub fn has(&self, id: u64) -> bool {
        self.inner.lock().unwrap().contains_key(&id)
    }
}

/// Polls `cond` every 10 ms until it holds; panics after `limit` (a hang guard, not a timing assertion).
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a test body with a generous overall bound so it cannot hang.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test exceeded 60 s")
}
