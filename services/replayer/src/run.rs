//! The replay engine: reads captured exchanges in capture order, sends each
//! one that is safe to the candidate (paced by a rate limit and optionally
//! by the original spacing, time-scaled), and compares the candidate's
//! answer with production's under the normalization rules.
//!
//! Safety: reads (`GET`, `HEAD`, `OPTIONS`) are always replayed; a write is
//! replayed only when the two lineages say the candidate's store is another
//! one (embedded: another host or directory; NATS: another cluster or
//! domain) and it shares none of the external systems the record's service
//! writes to (memcached, push providers), and never with `--reads-only`. Writes are barriers: every read sent before
//! a write is answered before it, and it is answered before anything after
//! it is sent, so the candidate sees the same order of state changes.

use std::time::Duration;

use tokio::time::Instant;

use replay::normalize::{DiffKind, Difference, Rules, TimeWindow, diff};
use replay::record::{Exchange, Interval, Lineage};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::client::{CallError, HttpClient, preview};
use crate::source::{BadRecord, Captured, Source, SourceError};

/// How a replay is run.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The candidate's base URL (`http://host:port`).
    pub candidate: String,
    /// Normalization rules.
    pub rules: Rules,
    /// Largest request rate to the candidate, per second (0: unlimited).
    pub rate: f64,
    /// Keep the original spacing of requests, sped up by this factor (0:
    /// send as fast as the rate allows).
    pub speed: f64,
    /// Reads in flight at once.
    pub concurrency: usize,
    /// Deadline of one candidate call.
    pub timeout: Duration,
    /// Never replay writes.
    pub reads_only: bool,
    /// The candidate's lineage (from its `/v1/lineage`), when known.
    pub candidate_lineage: Option<Lineage>,
}

/// What came of one captured record.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Equal after normalization.
    Match,
    /// Different after normalization.
    Mismatch(Vec<Difference>),
    /// The candidate did not answer in time.
    CandidateTimeout(String),
    /// The candidate could not be reached or broke the connection.
    CandidateError(String),
    /// The candidate answered something that is not the expected format.
    CandidateGarbage(String),
    /// The record could not be read.
    CorruptRecord(String),
    /// The record was written by a newer capture schema.
    SchemaDrift(String),
    /// A write not replayed (the candidate's store is not isolated).
    SkippedUnsafe,
    /// Records trimmed from the capture log before they were read (how many).
    MissingRecords(u64),
}

impl Outcome {
    /// The outcome's name (as in the diff table and the report).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Mismatch(_) => "mismatch",
            Self::CandidateTimeout(_) => "candidate_timeout",
            Self::CandidateError(_) => "candidate_error",
            Self::CandidateGarbage(_) => "candidate_garbage",
            Self::CorruptRecord(_) => "corrupt_record",
            Self::SchemaDrift(_) => "schema_drift",
            Self::SkippedUnsafe => "skipped_unsafe",
            Self::MissingRecords(_) => "missing_records",
        }
    }
}

/// One record's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Compared {
    /// Capture sequence number.
    pub seq: u64,
    /// The captured exchange, when readable.
    pub exchange: Option<Box<Exchange>>,
    /// The candidate's status, when it answered.
    pub candidate_status: Option<u16>,
    /// What came of it.
    pub outcome: Outcome,
}

/// Whether `method` only reads.
#[must_use]
pub fn is_read(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Whether replaying `exchange`'s write to a candidate with `candidate`
/// lineage is safe: the candidate's store is known and differs from the
/// store that produced the record, and no external system the record's
/// service changes (its `effect:` dependencies: memcached, push providers)
/// is the candidate's too.
#[must_use]
pub fn write_is_isolated(exchange: &Exchange, candidate: Option<&Lineage>) -> bool {
    let Some(candidate) = candidate else {
        return false;
    };
    let production = &exchange.lineage.dependencies;
    let store = |d: &std::collections::BTreeMap<String, String>| d.get("store").cloned();
    let stores_differ = matches!(
        (store(production), store(&candidate.dependencies)),
        (Some(p), Some(c)) if p != c
    );
    let shares_an_effect = production.iter().any(|(k, v)| {
        k.starts_with(replay::capture::EFFECT_PREFIX) && candidate.dependencies.get(k) == Some(v)
    });
    stores_differ && !shares_an_effect
}

/// Compares production's answer with the candidate's (status and body;
/// JSON bodies under `rules`, other bodies byte for byte).
#[must_use]
pub fn compare(
    original: &Exchange,
    status: u16,
    body: &str,
    rules: &Rules,
    window: TimeWindow,
) -> Outcome {
    let mut differences = Vec::new();
    if original.response.status != status {
        differences.push(Difference {
            path: "@status".into(),
            kind: DiffKind::Value,
            original: Some(original.response.status.into()),
            candidate: Some(status.into()),
        });
    }
    let parse = |s: &str| -> Option<Value> {
        if s.trim().is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_str(s).ok()
        }
    };
    match parse(&original.response.body) {
        Some(a) => match parse(body) {
            Some(b) => differences.extend(diff(&a, &b, rules, window)),
            None => {
                return Outcome::CandidateGarbage(format!(
                    "HTTP {status}, not JSON: {:?}",
                    preview(body, 120)
                ));
            }
        },
        None if original.response.body != body => differences.push(Difference {
            path: String::new(),
            kind: DiffKind::Value,
            original: Some(original.response.body.clone().into()),
            candidate: Some(body.into()),
        }),
        None => {}
    }
    if differences.is_empty() {
        Outcome::Match
    } else {
        Outcome::Mismatch(differences)
    }
}

/// Spaces requests: a rate limit and the original timing, time-scaled.
struct Pacer {
    gap: Option<Duration>,
    speed: f64,
    start: Instant,
    first_ns: Option<i64>,
    next_slot: Instant,
}

impl Pacer {
    fn new(rate: f64, speed: f64) -> Self {
        let now = Instant::now();
        Self {
            gap: (rate > 0.0)
                .then(|| Duration::try_from_secs_f64(1.0 / rate).unwrap_or(MAX_PACING_WAIT)),
            speed,
            start: now,
            first_ns: None,
            next_slot: now,
        }
    }

    async fn wait(&mut self, original_ns: i64) {
        let mut at = self.next_slot;
        // A record without a time (its clock failed) is paced by the rate only.
        if self.speed > 0.0 && original_ns > 0 {
            let first = *self.first_ns.get_or_insert(original_ns);
            let offset_ns = original_ns.saturating_sub(first).max(0);
            let offset = Duration::from_nanos(offset_ns as u64).div_f64(self.speed);
            let target = self.start + offset;
            // A gap longer than a minute (a quiet night, a bad clock) is not
            // waited out: the schedule moves on from here.
            if target > Instant::now() + MAX_PACING_WAIT {
                self.first_ns = Some(original_ns);
                self.start = Instant::now();
            } else {
                at = at.max(target);
            }
        }
        tokio::time::sleep_until(at).await;
        if let Some(gap) = self.gap {
            self.next_slot = at.max(Instant::now()) + gap;
        }
    }
}

/// Longest wait for one request's original spacing.
const MAX_PACING_WAIT: Duration = Duration::from_secs(60);

/// The replayer's clock: TrueTime around each candidate call.
pub type Clock = eventlog::TimeSource;

fn stamp(clock: &Clock) -> Interval {
    clock.now().map(Interval::from).unwrap_or_default()
}

/// Sends one exchange to the candidate and compares.
async fn replay_one(
    seq: u64,
    exchange: Box<Exchange>,
    config: std::sync::Arc<ReplayConfig>,
    client: HttpClient,
    clock: Clock,
) -> Compared {
    let url = format!(
        "{}{}",
        config.candidate.trim_end_matches('/'),
        exchange.request.path
    );
    let started = stamp(&clock);
    let answer = client
        .call(
            &exchange.request.method,
            &url,
            exchange.request.body.clone(),
            config.timeout,
        )
        .await;
    let finished = stamp(&clock);
    let (candidate_status, outcome) = match answer {
        Ok(a) => (
            Some(a.status),
            compare(
                &exchange,
                a.status,
                &a.body,
                &config.rules,
                TimeWindow::between(&exchange, (started, finished)),
            ),
        ),
        Err(e @ CallError::Timeout(_)) => (None, Outcome::CandidateTimeout(e.to_string())),
        Err(e @ CallError::TooLarge(_)) => (None, Outcome::CandidateGarbage(e.to_string())),
        Err(e) => (None, Outcome::CandidateError(e.to_string())),
    };
    Compared {
        seq,
        exchange: Some(exchange),
        candidate_status,
        outcome,
    }
}

/// Replays everything `source` yields (until it is done), handing each
/// result to `on_result` as it completes (reads may complete out of
/// order). Stops early only if the source fails.
pub async fn run(
    source: &mut Source,
    config: ReplayConfig,
    client: &HttpClient,
    clock: &Clock,
    mut on_result: impl FnMut(Compared),
) -> Result<(), SourceError> {
    let config = std::sync::Arc::new(config);
    let mut pacer = Pacer::new(config.rate, config.speed);
    let mut in_flight: JoinSet<Compared> = JoinSet::new();
    let concurrency = config.concurrency.max(1);
    let ended = loop {
        let batch = match source.next_batch().await {
            Ok(b) if b.is_empty() => break Ok(()),
            Ok(b) => b,
            Err(e) => break Err(e),
        };
        for item in batch {
            let (seq, exchange) = match item {
                Captured::Exchange { seq, exchange } => (seq, exchange),
                Captured::Bad { seq, problem } => {
                    on_result(Compared {
                        seq,
                        exchange: None,
                        candidate_status: None,
                        outcome: match problem {
                            BadRecord::Corrupt(why) => Outcome::CorruptRecord(why),
                            BadRecord::SchemaDrift(why) => Outcome::SchemaDrift(why),
                            BadRecord::Missing(count) => Outcome::MissingRecords(count),
                        },
                    });
                    continue;
                }
            };
            let read = is_read(&exchange.request.method);
            if !read
                && (config.reads_only
                    || !write_is_isolated(&exchange, config.candidate_lineage.as_ref()))
            {
                on_result(Compared {
                    seq,
                    exchange: Some(exchange),
                    candidate_status: None,
                    outcome: Outcome::SkippedUnsafe,
                });
                continue;
            }
            // A write waits for every read before it; a read waits for a slot.
            while (!read && !in_flight.is_empty()) || in_flight.len() >= concurrency {
                if let Some(Ok(done)) = in_flight.join_next().await {
                    on_result(done);
                }
            }
            pacer.wait(exchange.started.earliest_ns).await;
            let task = replay_one(seq, exchange, config.clone(), client.clone(), clock.clone());
            if read {
                in_flight.spawn(task);
            } else {
                on_result(task.await);
            }
            while let Some(r) = in_flight.try_join_next() {
                if let Ok(done) = r {
                    on_result(done);
                }
            }
        }
    };
    // What is in flight is still answered and reported, also when the
    // source failed.
    while let Some(r) = in_flight.join_next().await {
        if let Ok(done) = r {
            on_result(done);
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use replay::record::Response;

    fn exchange(status: u16, body: &str) -> Exchange {
        Exchange {
            schema: 1,
            response: Response {
                status,
                body: body.into(),
            },
            ..Exchange::default()
        }
    }

    #[test]
    fn compare_reports_status_body_and_garbage() {
        let rules = Rules::from_json(r#"{"ids": ["/token"]}"#).unwrap();
        let w = TimeWindow::within(0);
        let e = exchange(200, r#"{"count": 3, "token": "a"}"#);
        assert_eq!(
            compare(&e, 200, r#"{"token": "b", "count": 3}"#, &rules, w),
            Outcome::Match
        );
        let Outcome::Mismatch(d) = compare(&e, 500, r#"{"count": 4, "token": "c"}"#, &rules, w)
        else {
            panic!("expected a mismatch");
        };
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["@status", "/count"]);
        assert!(matches!(
            compare(&e, 200, "<html>oops", &rules, w),
            Outcome::CandidateGarbage(_)
        ));
        // Plain-text answers compare as text; empty bodies are equal.
        let text = exchange(404, "no such route");
        assert_eq!(
            compare(&text, 404, "no such route", &rules, w),
            Outcome::Match
        );
        assert!(matches!(
            compare(&text, 404, "other", &rules, w),
            Outcome::Mismatch(_)
        ));
        assert_eq!(
            compare(&exchange(204, ""), 204, "", &rules, w),
            Outcome::Match
        );
    }

    #[test]
    fn writes_go_only_to_a_provably_different_store() {
        let with_store = |s: &str| Lineage {
            dependencies: [("store".to_owned(), s.to_owned())].into(),
            ..Lineage::default()
        };
        let mut e = exchange(200, "{}");
        e.lineage = with_store("embedded:/prod");
        assert!(write_is_isolated(
            &e,
            Some(&with_store("embedded:/candidate"))
        ));
        assert!(!write_is_isolated(&e, Some(&with_store("embedded:/prod"))));
        assert!(!write_is_isolated(&e, None));
        assert!(!write_is_isolated(&e, Some(&Lineage::default())));
        e.lineage = Lineage::default();
        assert!(!write_is_isolated(
            &e,
            Some(&with_store("embedded:/candidate"))
        ));
        assert!(is_read("GET") && !is_read("POST") && !is_read("DELETE"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_the_rate_and_the_scaled_spacing() {
        let mut p = Pacer::new(10.0, 0.0);
        let t0 = tokio::time::Instant::now();
        for _ in 0..5 {
            p.wait(0).await;
        }
        // Five requests at 10/s: the fifth leaves 400 ms after the first.
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
        let mut p = Pacer::new(0.0, 2.0);
        let t0 = tokio::time::Instant::now();
        p.wait(1_000_000_000).await;
        p.wait(3_000_000_000).await; // 2 s later originally, 1 s at double speed
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        // A jump of a day is not waited out; a record without time is not paced.
        p.wait(3_000_000_000 + 86_400_000_000_000).await;
        p.wait(0).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
    }
}
