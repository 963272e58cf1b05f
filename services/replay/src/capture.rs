//! Capture in a service: the `--capture` flags, the capture stream (the
//! service's own event log `capture`: `<data>/<service>/capture/` embedded,
//! stream `TC_<SERVICE>-CAPTURE` on NATS JetStream) and the HTTP endpoints
//! a replayer reads:
//!
//! | method | path | what |
//! |---|---|---|
//! | `GET` | `/v1/lineage` | the service's [`Lineage`] (version, build, config hash, store) |
//! | `GET` | `/v1/capture?from=SEQ&max=N&wait_ms=MS` | captured exchanges as NDJSON, one `{"seq":…,"record":{…}}` per line (`"unreadable"` instead of `"record"` when the stored bytes are not JSON); header `x-capture-end` is one past the last sequence |
//! | `GET` | `/v1/capture/stats` | the tap's counters |
//!
//! The endpoints are added outside the tap, so reading the capture is
//! never captured itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use eventlog::{Backend, BackendError, Envelope, EventLog, IdempotencyToken, TimeSource};
use serde::Deserialize;
use sha2::Digest as _;

use crate::record::{Exchange, Lineage};
use crate::tap::{CaptureSink, CaptureTap};

/// The git commit this was built from (or `unknown`).
pub const BUILD: &str = env!("TIMECARD_BUILD");
/// Name of the capture log next to the service's own.
pub const CAPTURE_LOG: &str = "capture";
/// Largest `max` a capture read returns at once.
pub const MAX_READ: usize = 1_000;
/// Longest a capture read waits for new records.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// Largest body copy allowed (a record must fit one event of the log).
pub const MAX_BODY_LIMIT: usize = 24 * 1024;

/// Capture flags of a service.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// Capture the HTTP API's exchanges for replay testing (read by
    /// `timecard-replay` at GET /v1/capture). Off by default.
    #[arg(long)]
    pub capture: bool,
    /// Fraction of requests captured, 0 to 1.
    #[arg(long, default_value_t = 1.0, value_name = "FRACTION")]
    pub capture_sample: f64,
    /// Exchanges buffered between the request path and the capture log;
    /// beyond it they are dropped and counted, never waited for.
    #[arg(long, default_value_t = 4096)]
    pub capture_buffer: usize,
    /// Largest request or response body copied, bytes (larger exchanges
    /// are skipped and counted).
    #[arg(long, default_value_t = 16 * 1024)]
    pub capture_max_body: usize,
    /// Records kept in the capture log; older ones are trimmed.
    #[arg(long, default_value_t = 1_000_000)]
    pub capture_keep: u64,
}

impl Default for CaptureArgs {
    fn default() -> Self {
        Self {
            capture: false,
            capture_sample: 1.0,
            capture_buffer: 4096,
            capture_max_body: 16 * 1024,
            capture_keep: 1_000_000,
        }
    }
}

impl CaptureArgs {
    /// Checks the values clap cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.capture_sample) {
            return Err(format!(
                "--capture-sample {}: must be between 0 and 1",
                self.capture_sample
            ));
        }
        if !(1..=1_000_000).contains(&self.capture_buffer) {
            return Err(format!(
                "--capture-buffer {}: must be between 1 and 1000000",
                self.capture_buffer
            ));
        }
        if self.capture_max_body > MAX_BODY_LIMIT {
            return Err(format!(
                "--capture-max-body {}: at most {MAX_BODY_LIMIT} (a record must fit one log event)",
                self.capture_max_body
            ));
        }
        if self.capture_keep == 0 {
            return Err("--capture-keep 0: keep at least one record".into());
        }
        Ok(())
    }
}

/// A short hash of a service's effective configuration (the caller passes
/// a canonical text: sorted, without listen addresses or paths).
#[must_use]
fn config_hash(canonical: &str) -> String {
    let digest = sha2::Sha256::digest(canonical.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The lineage of `service` at `version` with configuration hash
/// `config_hash`, running on `backend` with `clock` and changing the
/// external systems `effects` (name, address): build, backend, store
/// identity and effects (what the replayer compares to keep writes away
/// from production's data) and clock source.
fn lineage(
    service: &str,
    version: &str,
    config_hash: String,
    effects: &[(&str, String)],
    backend: &Backend,
    clock: &TimeSource,
) -> Lineage {
    let store = match (backend.data_dir(), backend.nats_client()) {
        // An embedded store is a directory on a host: the same path on
        // another host is another store.
        (Some(d), _) => {
            let d = std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("embedded:{}:{}", host.trim(), d.display())
        }
        // On NATS the streams are named by service: the same cluster (or
        // server) and JetStream domain means the same store, however its
        // URLs are spelled.
        (None, Some(client)) => {
            let info = client.server_info();
            format!(
                "nats:{}/{}:TC_{}",
                info.cluster.unwrap_or(info.server_id),
                info.domain.unwrap_or_default(),
                service.to_ascii_uppercase()
            )
        }
        (None, None) => backend.description.clone(),
    };
    let kind = if backend.nats_client().is_some() {
        "nats-jetstream"
    } else {
        "embedded"
    };
    let mut dependencies: std::collections::BTreeMap<String, String> = [
        ("backend".to_owned(), kind.to_owned()),
        ("store".to_owned(), store),
        ("clock".to_owned(), clock.describe()),
        (
            "timecard-replay".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ]
    .into();
    for (name, address) in effects {
        dependencies.insert(format!("{EFFECT_PREFIX}{name}"), address.clone());
    }
    Lineage {
        service: service.to_owned(),
        version: version.to_owned(),
        build: format!(
            "{BUILD}{}",
            if cfg!(debug_assertions) {
                " (debug)"
            } else {
                ""
            }
        ),
        config_hash,
        dependencies,
    }
}

/// Prefix of the lineage dependencies that name external systems a write
/// changes besides the store (memcached, push providers): a replayed write
/// must not reach the same one.
pub const EFFECT_PREFIX: &str = "effect:";

/// The capture sink over an event log: one event per exchange, trimmed to
/// the newest `keep`.
#[derive(Clone, Debug)]
pub struct LogSink {
    log: EventLog,
    keep: u64,
}

impl LogSink {
    /// A sink appending to `log`, keeping about `keep` records.
    #[must_use]
    pub fn new(log: EventLog, keep: u64) -> Self {
        Self { log, keep }
    }
}

impl CaptureSink for LogSink {
    async fn write(&mut self, batch: Vec<Exchange>) -> Result<usize, String> {
        let envelopes: Vec<Envelope> = batch
            .iter()
            .filter_map(|e| {
                let accepted = e.finished.into();
                // A record whose escaped bodies outgrow one event is lost
                // (counted by the tap as a sink error).
                Envelope::new(
                    CAPTURE_LOG,
                    IdempotencyToken::fresh(e.started.latest_ns),
                    accepted,
                    e.encode(),
                )
                .ok()
            })
            .collect();
        let kept = envelopes.len();
        if kept == 0 {
            return Ok(0);
        }
        let last = self
            .log
            .append(envelopes)
            .await
            .map_err(|e| e.to_string())?;
        // Trim in steps of a thousand records past the limit.
        if last > self.keep + 1_000 && last % 1_000 < kept as u64 {
            let _ = self.log.trim_before(last + 1 - self.keep).await;
        }
        Ok(kept)
    }
}

/// What a service adds for replay testing: its lineage endpoint, and with
/// `--capture` the tap and the capture stream.
#[derive(Clone, Debug)]
pub struct ReplaySupport {
    lineage: Arc<Lineage>,
    capture: Option<(CaptureTap, EventLog)>,
}

impl ReplaySupport {
    /// The replay support of `service` at `version`, whose answer-shaping
    /// configuration is `canonical_config` (sorted text without addresses,
    /// paths or secrets; hashed into the lineage) and whose writes also
    /// change `effects` (external systems: name, address): opens the
    /// capture log of `backend` and starts the tap when `args.capture` is
    /// set.
    pub async fn open(
        args: &CaptureArgs,
        service: &str,
        version: &str,
        canonical_config: &str,
        effects: &[(&str, String)],
        backend: &Backend,
        clock: &TimeSource,
    ) -> Result<Self, BackendError> {
        let lineage = lineage(
            service,
            version,
            config_hash(canonical_config),
            effects,
            backend,
            clock,
        );
        let capture = if args.capture {
            let log = backend.open_log(CAPTURE_LOG).await?;
            let tap = CaptureTap::start(
                LogSink::new(log.clone(), args.capture_keep),
                args.capture_buffer,
                args.capture_max_body,
                lineage.clone(),
                clock.clone(),
            )
            .sampled(args.capture_sample);
            Some((tap, log))
        } else {
            None
        };
        Ok(Self {
            lineage: Arc::new(lineage),
            capture,
        })
    }

    /// The service's lineage.
    #[must_use]
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// The tap, when capturing.
    #[must_use]
    pub fn tap(&self) -> Option<&CaptureTap> {
        self.capture.as_ref().map(|(t, _)| t)
    }

    /// `api` behind the tap (when capturing), plus the lineage and capture
    /// endpoints (outside the tap). Reading the capture needs a token from
    /// `access`: it holds request bodies.
    pub fn wrap(&self, api: Router, access: &access::Access) -> Router {
        let api = match &self.capture {
            Some((tap, _)) => api.layer(axum::middleware::from_fn_with_state(
                tap.clone(),
                crate::tap::capture,
            )),
            None => api,
        };
        let capture = access.guard(Router::new().route("/v1/capture", get(read_capture)));
        api.merge(
            Router::new()
                .route("/v1/lineage", get(lineage_json))
                .route("/v1/capture/stats", get(capture_stats))
                .merge(capture)
                .with_state(self.clone()),
        )
    }

    /// The tap's counters as JSON (`null` without capture).
    #[must_use]
    pub fn stats_json(&self) -> serde_json::Value {
        self.tap().map_or(serde_json::Value::Null, |t| {
            let s = t.stats();
            serde_json::json!({
                "captured": s.captured.load(Ordering::Relaxed),
                "written": s.written.load(Ordering::Relaxed),
                "dropped_full": s.dropped_full.load(Ordering::Relaxed),
                "skipped": s.skipped.load(Ordering::Relaxed),
                "unsampled": s.unsampled.load(Ordering::Relaxed),
                "sink_errors": s.sink_errors.load(Ordering::Relaxed),
            })
        })
    }
}

async fn lineage_json(State(s): State<ReplaySupport>) -> Json<Lineage> {
    Json((*s.lineage).clone())
}

async fn capture_stats(State(s): State<ReplaySupport>) -> Json<serde_json::Value> {
    Json(s.stats_json())
}

/// Query of `GET /v1/capture`.
#[derive(Debug, Deserialize)]
struct ReadQuery {
    #[serde(default = "one")]
    from: u64,
    #[serde(default = "hundred")]
    max: usize,
    #[serde(default)]
    wait_ms: u64,
}

fn one() -> u64 {
    1
}

fn hundred() -> usize {
    100
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// One line of the capture stream for the stored `payload` at `seq`.
#[must_use]
pub fn capture_line(seq: u64, payload: &[u8]) -> String {
    match std::str::from_utf8(payload)
        .ok()
        .and_then(|s| serde_json::from_str::<&serde_json::value::RawValue>(s).ok())
    {
        Some(raw) => format!("{{\"seq\":{seq},\"record\":{}}}\n", raw.get()),
        None => format!(
            "{}\n",
            serde_json::json!({"seq": seq, "unreadable": String::from_utf8_lossy(payload)})
        ),
    }
}

async fn read_capture(
    State(s): State<ReplaySupport>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some((_, log)) = &s.capture else {
        return error(
            StatusCode::NOT_FOUND,
            "capture is off: start the service with --capture".into(),
        );
    };
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query: from=SEQ (≥ 1), max=N (1–1000), wait_ms=MS".into(),
        );
    };
    if q.from == 0 || q.max == 0 || q.max > MAX_READ {
        return error(
            StatusCode::BAD_REQUEST,
            format!("from must be ≥ 1 and max between 1 and {MAX_READ}"),
        );
    }
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    let records = match log.read(q.from, q.max, wait).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let end = match log.end().await {
        Ok(e) => e,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let body: String = records
        .iter()
        .map(|r| capture_line(r.seq, &r.envelope.payload))
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                header::HeaderName::from_static("x-capture-end"),
                end.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}
