//! NATS JetStream backends: the event log as a stream, the key-value store
//! as a KV bucket (`async-nats`).
//!
//! # Mapping
//!
//! For service `name` (letters, digits, `-`, `_`; used lowercased):
//!
//! - **Event log** → stream `TC_<NAME>` (uppercased) capturing subjects
//!   `tc.<name>.>`; records are published to `tc.<name>.ev`. File storage,
//!   [`NatsOptions::replicas`] replicas, limits retention with
//!   [`NatsOptions::max_age`] (discard old). The message body is
//!   [`Envelope::encode`]; the record's sequence number is the stream
//!   sequence.
//! - **Deduplication**: every record carries `Nats-Msg-Id` =
//!   `hex(key):token`, so the server drops an identical event published again
//!   within the stream's duplicate window (two minutes, or `max_age` if
//!   shorter) and acknowledges it with the original sequence. This is what
//!   makes retried appends safe.
//! - **Key-value store** → KV bucket `tc_<name>` (history 1, file storage,
//!   the same replica count). Reads go through the stream leader
//!   (`STREAM.MSG.GET`), so a reader sees its own writes even on a cluster.
//!
//! Streams and buckets are created if missing; an existing one is used as it
//! is, even if its settings differ (a warning is logged).
//!
//! # Failures and retries
//!
//! Each JetStream request is bounded by [`NatsOptions::request_timeout`].
//! While a cluster elects a new leader (about 5–10 s after the old one died)
//! requests time out or find no responders; every operation here therefore
//! retries transient failures (timeouts, no responders, "cluster not
//! available", dropped connections) with a short backoff for about twice the
//! request timeout before it reports [`LogError::Nats`] / [`KvError::Nats`].
//! The connection itself reconnects to any listed (or discovered) server
//! forever.
//!
//! A retried publish is deduplicated by the server, so an append never
//! stores an event twice; but a record whose acknowledgement was lost and
//! had to be re-sent may land after later records of the same batch.
//!
//! A failed append has an unknown outcome: some records may be stored, and
//! the client also sends publishes it buffered while disconnected once it
//! reconnects. Appending the *same* envelopes again within the duplicate
//! window is always safe and returns their sequence numbers.
//!
//! # Reading
//!
//! [`NatsLog::read`] keeps ordered (ephemeral, R1, unacknowledged) pull
//! consumers positioned at the next expected sequence, so a caller tailing
//! the log with `read(next, …)` costs no API request per call; reading from
//! anywhere else creates one with `DeliverPolicy::ByStartSequence`. Up to
//! four idle ones are kept per log (concurrent readers at different
//! positions each use their own); older ones are deleted.
//! Messages in the stream that are not envelopes (published there by
//! something else) are skipped with a warning.

use std::collections::BTreeMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::context::{Context, ContextBuilder, PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::envelope::Envelope;
use crate::kv::KvError;
use crate::log::{LogError, Stored};

/// Longest duplicate window (the JetStream default).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// First pause between retries; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Records of one append published before their acks are awaited.
const APPEND_CHUNK: usize = 1024;
/// Publishes awaiting their ack, per context.
const MAX_ACKS_IN_FLIGHT: usize = 8 * APPEND_CHUNK;
/// Server error codes that retrying cannot fix: replicas > 1 on a server
/// that is not clustered; JetStream not enabled (for the account).
const PERMANENT_API_ERRORS: [&str; 3] = [
    "error code 10074)",
    "error code 10076)",
    "error code 10039)",
];

/// How streams and buckets are created.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Replicas of the stream and bucket (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// How long the stream keeps records (whole-stream retention).
    pub max_age: Duration,
    /// Timeout of one JetStream request (publish ack, fetch, KV op).
    pub request_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_age: Duration::from_secs(7 * 86_400),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsOptions {
    /// How long an operation keeps retrying transient failures.
    fn retry_window(&self) -> Duration {
        self.request_timeout.saturating_mul(2)
    }

    fn context(&self, client: &async_nats::Client) -> Context {
        // Without backpressure a publish beyond the in-flight limit fails
        // at once (and is retried) instead of waiting for a permit that
        // only this task's own unawaited acks could free.
        ContextBuilder::new()
            .timeout(self.request_timeout)
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .backpressure_on_inflight(false)
            .build(client.clone())
    }
}

/// Connects to the first reachable server of `urls` (the client then knows
/// the whole cluster and reconnects on its own).
///
/// Keeps trying all servers until `timeout` has passed; once connected, the
/// client reconnects without limit.
pub async fn connect(urls: &[String], timeout: Duration) -> Result<async_nats::Client, String> {
    if urls.is_empty() {
        return Err("no NATS server URL given".into());
    }
    let listed = urls.join(",");
    let addrs = urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| format!("invalid NATS server URL {u:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let options = async_nats::ConnectOptions::new()
            .name("timecard-eventlog")
            .max_reconnects(None)
            .connection_timeout(left.clamp(Duration::from_millis(200), Duration::from_secs(5)));
        let last = match tokio::time::timeout(
            left.max(Duration::from_millis(200)),
            options.connect(addrs.clone()),
        )
        .await
        {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connection attempt timed out".to_owned(),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no NATS server of {listed} answered within {timeout:?} ({attempts} attempt(s); last error: {last})"
            ));
        }
        tracing::debug!(urls = %listed, error = %last, "NATS connect failed, retrying");
        tokio::time::sleep(Duration::from_millis(250).min(deadline - now)).await;
    }
}

/// Checks a service name and returns it lowercased.
fn service_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!(
            "service name {:?} must be 1 to 64 characters from [A-Za-z0-9_-]",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// Runs `op` until it succeeds, `permanent` says its error will not go away,
/// or `window` has passed (pausing with a growing backoff in between).
async fn retrying<T, E, Fut>(
    what: &str,
    window: Duration,
    mut op: impl FnMut() -> Fut,
    permanent: impl Fn(&E) -> bool,
) -> Result<T, String>
where
    Fut: Future<Output = Result<T, E>>,
    E: fmt::Display,
{
    let started = Instant::now();
    let deadline = started + window;
    let mut pause = FIRST_BACKOFF;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let now = Instant::now();
                if permanent(&e) || now >= deadline {
                    let elapsed = started.elapsed();
                    return Err(if attempts == 1 {
                        format!("{what}: {e}")
                    } else {
                        format!("{what}: {e} (gave up after {attempts} attempts in {elapsed:.1?})")
                    });
                }
                tracing::debug!(%what, error = %e, attempt = attempts, "transient NATS failure, retrying");
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Whether a JetStream API error (as text) will not go away by retrying.
fn permanent_api_error(e: &impl fmt::Display) -> bool {
    let text = e.to_string();
    PERMANENT_API_ERRORS.iter().any(|c| text.contains(c))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// The `Nats-Msg-Id` of an envelope: its identity `(key, token)`, with the
/// key hex-encoded so any key is a valid header value.
fn message_id(envelope: &Envelope) -> String {
    format!("{}:{}", hex(envelope.key.as_bytes()), envelope.token)
}

/// Idle readers kept per log (one per position being read from).
const MAX_TAILS: usize = 4;

/// A reader's pull consumer and its position (see [`NatsLog::read`]).
/// Dropping it deletes the consumer on the server in the background.
struct Tail {
    /// Sequence the next delivered message will have at least.
    next: u64,
    /// Lowest `from` this position serves: nothing in `floor..next` is a
    /// record a caller could get (skipped garbage, gaps).
    floor: u64,
    /// Messages the server reported as still to come after the last one.
    pending: u64,
    messages: Ordered,
    /// For deleting the consumer: its first name, the stream, a context.
    consumer: String,
    stream: String,
    js: Context,
}

impl Tail {
    fn serves(&self, from: u64) -> bool {
        self.floor <= from && from <= self.next
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Best effort: a consumer the client re-created has another name,
        // and every one expires on the server when idle anyway.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (js, consumer, stream) = (
                self.js.clone(),
                std::mem::take(&mut self.consumer),
                std::mem::take(&mut self.stream),
            );
            runtime.spawn(async move {
                let _ = js.delete_consumer_from_stream(&consumer, &stream).await;
            });
        }
    }
}

struct LogInner {
    js: Context,
    stream: stream::Stream,
    stream_name: String,
    subject: String,
    options: NatsOptions,
    /// Idle readers, most recently used last.
    tails: std::sync::Mutex<Vec<Tail>>,
}

impl LogInner {
    fn idle_tails(&self) -> std::sync::MutexGuard<'_, Vec<Tail>> {
        // The list stays consistent even if a holder panicked.
        self.tails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the idle reader positioned for `from`, if there is one.
    fn take_tail(&self, from: u64) -> Option<Tail> {
        let mut tails = self.idle_tails();
        let i = tails.iter().rposition(|t| t.serves(from))?;
        Some(tails.remove(i))
    }

    /// Keeps a reader for the next call, dropping the least recently used
    /// beyond [`MAX_TAILS`].
    fn put_tail(&self, tail: Tail) {
        let evicted: Vec<Tail> = {
            let mut tails = self.idle_tails();
            tails.push(tail);
            let excess = tails.len().saturating_sub(MAX_TAILS);
            tails.drain(..excess).collect()
        };
        drop(evicted);
    }
}

/// The event log as a JetStream stream.
#[derive(Clone)]
pub struct NatsLog {
    inner: Arc<LogInner>,
}

impl fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsLog({})", self.inner.stream_name)
    }
}

/// Outcome of one publish attempt: an ack to await, or why it failed.
type Sent = Result<PublishAckFuture, async_nats::jetstream::context::PublishError>;

impl NatsLog {
    /// Opens (creating if needed) the stream for service `name`.
    pub async fn open(
        client: &async_nats::Client,
        name: &str,
        options: &NatsOptions,
    ) -> Result<Self, LogError> {
        let name = service_name(name).map_err(LogError::Nats)?;
        let stream_name = format!("TC_{}", name.to_ascii_uppercase());
        let pattern = format!("tc.{name}.>");
        let js = options.context(client);
        let duplicate_window = if options.max_age.is_zero() {
            DUPLICATE_WINDOW
        } else {
            DUPLICATE_WINDOW.min(options.max_age)
        };
        let config = stream::Config {
            name: stream_name.clone(),
            description: Some(format!("timecard event log of service {name}")),
            subjects: vec![pattern.clone()],
            storage: stream::StorageType::File,
            num_replicas: options.replicas.max(1),
            max_age: options.max_age,
            duplicate_window,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let stream = retrying(
            &format!("opening stream {stream_name}"),
            options.retry_window(),
            || js.get_or_create_stream(config.clone()),
            |e: &async_nats::jetstream::context::CreateStreamError| {
                permanent_api_error(e)
                    || matches!(
                        e.kind(),
                        async_nats::jetstream::context::CreateStreamErrorKind::InvalidStreamName
                            | async_nats::jetstream::context::CreateStreamErrorKind::EmptyStreamName
                    )
            },
        )
        .await
        .map_err(LogError::Nats)?;
        let existing = &stream.cached_info().config;
        if !existing.subjects.contains(&pattern) {
            tracing::warn!(stream = %stream_name, subjects = ?existing.subjects,
                "existing stream does not capture {pattern}; appends may fail");
        }
        if existing.num_replicas != options.replicas.max(1) {
            tracing::warn!(stream = %stream_name, have = existing.num_replicas, want = options.replicas,
                "existing stream has a different replica count; using it as it is");
        }
        Ok(Self {
            inner: Arc::new(LogInner {
                js,
                stream,
                stream_name,
                subject: format!("tc.{name}.ev"),
                options: options.clone(),
                tails: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    async fn publish(&self, id: &str, body: &Bytes) -> Sent {
        self.inner
            .js
            .send_publish(
                self.inner.subject.clone(),
                PublishMessage::build().payload(body.clone()).message_id(id),
            )
            .await
    }

    /// Appends; returns the last record's stream sequence once all are acknowledged.
    ///
    /// More precisely the largest sequence acknowledged for the batch: an
    /// event the stream already held (a retry) counts with its original
    /// sequence. An empty batch returns `end() − 1`.
    ///
    /// On error some of the records may have been stored (or be stored
    /// later, when the client reconnects); retry with the same envelopes.
    pub async fn append(&self, envelopes: Vec<Envelope>) -> Result<u64, LogError> {
        if envelopes.is_empty() {
            return Ok(self.end().await?.saturating_sub(1));
        }
        let window = self.inner.options.retry_window();
        let started = Instant::now();
        let mut last = 0u64;
        for chunk in envelopes.chunks(APPEND_CHUNK) {
            let deadline = Instant::now() + window;
            let items: Vec<(String, Bytes)> = chunk
                .iter()
                .map(|e| (message_id(e), Bytes::from(e.encode())))
                .collect();
            // Publish the chunk first so the acks come back pipelined.
            let mut sent = Vec::with_capacity(items.len());
            for (id, body) in &items {
                sent.push(self.publish(id, body).await);
            }
            for ((id, body), first) in items.iter().zip(sent) {
                let seq = self
                    .acknowledged(id, body, first, deadline, started)
                    .await?;
                last = last.max(seq);
            }
        }
        Ok(last)
    }

    /// Awaits the ack of one publish, re-publishing (same message id, so
    /// the server deduplicates) after transient failures until `deadline`.
    async fn acknowledged(
        &self,
        id: &str,
        body: &Bytes,
        first: Sent,
        deadline: Instant,
        started: Instant,
    ) -> Result<u64, LogError> {
        let mut attempt = first;
        let mut attempts = 1u32;
        let mut pause = FIRST_BACKOFF;
        loop {
            let outcome = match attempt {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let e = match outcome {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(
                            seq = ack.sequence,
                            "duplicate event acknowledged with its first sequence"
                        );
                    }
                    return Ok(ack.sequence);
                }
                Err(e) => e,
            };
            let permanent = matches!(
                e.kind(),
                PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastMessageId
                    | PublishErrorKind::WrongLastSequence
            );
            let now = Instant::now();
            if permanent || now >= deadline {
                let e = if e.kind() == PublishErrorKind::StreamNotFound {
                    "no responders: no stream leader takes the subject (leader election in progress, \
                     no quorum, or the stream was deleted)"
                        .to_owned()
                } else {
                    e.to_string()
                };
                return Err(LogError::Nats(format!(
                    "append to {} (stream {}): {e} (after {attempts} attempt(s) in {:.1?})",
                    self.inner.subject,
                    self.inner.stream_name,
                    started.elapsed()
                )));
            }
            tracing::debug!(error = %e, attempt = attempts, "publish not acknowledged, retrying");
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_BACKOFF);
            attempts += 1;
            attempt = self.publish(id, body).await;
        }
    }

    /// Creates the cached consumer at `from`.
    async fn open_tail(&self, from: u64) -> Result<Tail, LogError> {
        let deliver_policy = if from <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: from,
            }
        };
        let what = format!(
            "creating a reader of stream {} at {from}",
            self.inner.stream_name
        );
        let (consumer, pending, messages) = retrying(
            &what,
            self.inner.options.retry_window(),
            || async {
                let consumer = self
                    .inner
                    .stream
                    .create_consumer(OrderedConfig {
                        deliver_policy,
                        description: Some("timecard eventlog reader".into()),
                        // The client's pull expiry, and so its idle heartbeat
                        // (half of it), follow this; two missed heartbeats
                        // make it re-create a consumer whose server died.
                        // Defaults (30 s) would take a minute to notice.
                        max_expires: self
                            .inner
                            .options
                            .request_timeout
                            .clamp(Duration::from_secs(2), Duration::from_secs(30)),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let info = consumer.cached_info();
                let (name, pending) = (info.name.clone(), info.num_pending);
                let messages = consumer.messages().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((name, pending, messages))
            },
            |_| false,
        )
        .await
        .map_err(LogError::Nats)?;
        Ok(Tail {
            next: from,
            floor: from,
            pending,
            messages,
            consumer,
            stream: self.inner.stream_name.clone(),
            js: self.inner.js.clone(),
        })
    }

    /// Up to `max` records from `from` on, waiting up to `wait` for the first.
    ///
    /// When records at `from` or later already exist, this waits for them
    /// (up to the request timeout) even if `wait` is shorter. After the first
    /// record it returns what has arrived, continuing only while the server
    /// reports more messages available, so a batch is never held back to
    /// fill `max`. Messages that are not envelopes are skipped with a
    /// warning (their sequence numbers are simply absent).
    pub async fn read(
        &self,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Stored>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let first_deadline = Instant::now() + wait;
        let request_timeout = self.inner.options.request_timeout;
        let mut next = from.max(1);
        // Taken out of the pool for this call: concurrent readers at other
        // positions use their own; if this call is cancelled, it is dropped.
        let mut tail = self.inner.take_tail(next);
        let mut out: Vec<Stored> = Vec::new();
        let mut rewinds = 0u32;
        while out.len() < max {
            if tail.is_none() {
                match self.open_tail(next).await {
                    Ok(t) => tail = Some(t),
                    Err(e) if out.is_empty() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "stream reader lost; returning a partial batch");
                        break;
                    }
                }
            }
            let Some(t) = tail.as_mut() else { break };
            let until_first = first_deadline.saturating_duration_since(Instant::now());
            let limit = match (out.is_empty(), t.pending > 0) {
                (true, false) => until_first,
                // Records are known to exist: wait for them as for any
                // request, however short `wait` (or however long creating
                // the consumer took).
                (true, true) => until_first.max(request_timeout),
                (false, true) => request_timeout,
                (false, false) => Duration::ZERO,
            };
            // `timeout` polls the stream once before looking at the clock, so
            // a zero limit still takes a message that has already arrived.
            let failure = match tokio::time::timeout(limit, t.messages.next()).await {
                Err(_elapsed) => break,
                Ok(Some(Ok(message))) => match message.info() {
                    Ok(info) => {
                        let (seq, pending) = (info.stream_sequence, info.pending);
                        if seq < t.next {
                            // The client re-created the consumer from the
                            // start of the stream (it does so when it fails
                            // before delivering anything): start over here.
                            rewinds += 1;
                            tail = None;
                            if rewinds > 3 {
                                Some(format!("keeps restarting below sequence {next}"))
                            } else {
                                continue;
                            }
                        } else {
                            t.next = seq + 1;
                            t.pending = pending;
                            next = seq + 1;
                            match Envelope::decode(&message.payload) {
                                Ok(envelope) => {
                                    t.floor = seq + 1;
                                    out.push(Stored { seq, envelope });
                                }
                                Err(e) => tracing::warn!(
                                    stream = %self.inner.stream_name, seq, subject = %message.subject,
                                    error = %e, "skipping a message that is not an event envelope"
                                ),
                            }
                            None
                        }
                    }
                    Err(e) => Some(format!("message without JetStream metadata: {e}")),
                },
                Ok(Some(Err(e))) => Some(e.to_string()),
                Ok(None) => Some("the consumer ended unexpectedly".to_owned()),
            };
            if let Some(e) = failure {
                tail = None;
                let e = format!("reading stream {} at {next}: {e}", self.inner.stream_name);
                if out.is_empty() {
                    return Err(LogError::Nats(e));
                }
                tracing::warn!(error = %e, "returning a partial batch");
                break;
            }
        }
        if let Some(t) = tail {
            self.inner.put_tail(t);
        }
        Ok(out)
    }

    /// One past the stream's last sequence.
    pub async fn end(&self) -> Result<u64, LogError> {
        let info = retrying(
            &format!("stream info of {}", self.inner.stream_name),
            self.inner.options.retry_window(),
            || self.inner.stream.get_info(),
            |_| false,
        )
        .await
        .map_err(LogError::Nats)?;
        Ok(info.state.last_sequence + 1)
    }

    /// Purges records below `seq`.
    ///
    /// `seq` is capped at [`end`](Self::end), so a purge never moves the
    /// stream's next sequence number.
    pub async fn trim_before(&self, seq: u64) -> Result<(), LogError> {
        if seq <= 1 {
            return Ok(());
        }
        let seq = seq.min(self.end().await?);
        if seq <= 1 {
            return Ok(());
        }
        let stream = &self.inner.stream;
        retrying(
            &format!("purging stream {} below {seq}", self.inner.stream_name),
            self.inner.options.retry_window(),
            || stream.purge().sequence(seq).into_future(),
            |_| false,
        )
        .await
        .map_err(LogError::Nats)?;
        Ok(())
    }
}

struct KvInner {
    js: Context,
    store: kv::Store,
    bucket: String,
    options: NatsOptions,
}

/// The key-value store as a JetStream KV bucket.
#[derive(Clone)]
pub struct NatsKv {
    inner: Arc<KvInner>,
}

impl fmt::Debug for NatsKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsKv({})", self.inner.bucket)
    }
}

/// Whether a KV message is a delete or purge marker rather than a value.
fn is_tombstone(headers: Option<&HeaderMap>) -> bool {
    let Some(h) = headers else { return false };
    if let Some(op) = h.get("KV-Operation") {
        return matches!(op.as_str(), "DEL" | "PURGE");
    }
    h.get("Nats-Marker-Reason").is_some()
}

fn kv_err(e: String) -> KvError {
    KvError::Nats(e)
}

impl NatsKv {
    /// Opens (creating if needed) the bucket for service `name`.
    pub async fn open(
        client: &async_nats::Client,
        name: &str,
        options: &NatsOptions,
    ) -> Result<Self, KvError> {
        let name = service_name(name).map_err(KvError::Nats)?;
        let bucket = format!("tc_{name}");
        let js = options.context(client);
        let config = kv::Config {
            bucket: bucket.clone(),
            description: format!("timecard state of service {name}"),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: options.replicas.max(1),
            ..Default::default()
        };
        let store = retrying(
            &format!("opening KV bucket {bucket}"),
            options.retry_window(),
            || async {
                match js.get_stream(format!("KV_{bucket}")).await {
                    Ok(_) => js
                        .get_key_value(bucket.clone())
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) if is_not_found(&e.kind()) => js
                        .create_key_value(config.clone())
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
            permanent_api_error,
        )
        .await
        .map_err(kv_err)?;
        Ok(Self {
            inner: Arc::new(KvInner {
                js,
                store,
                bucket,
                options: options.clone(),
            }),
        })
    }

    fn subject(&self, key: &str) -> String {
        format!("$KV.{}.{key}", self.inner.bucket)
    }

    /// The value of `key`.
    ///
    /// `None` when the key was never written, was deleted or purged.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        crate::kv::check_key(key)?;
        let subject = self.subject(key);
        let stream = &self.inner.store.stream;
        let found = retrying(
            &format!("KV get {key:?} from bucket {}", self.inner.bucket),
            self.inner.options.retry_window(),
            || async {
                match stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(m) => Ok(Some(m)),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    Err(e) => Err(e),
                }
            },
            |e| e.kind() == LastRawMessageErrorKind::InvalidSubject,
        )
        .await
        .map_err(kv_err)?;
        Ok(found
            .filter(|m| !is_tombstone(Some(&m.headers)))
            .map(|m| m.payload.to_vec()))
    }

    /// Writes the pairs; the last one only after all the others are
    /// acknowledged.
    ///
    /// All but the last are published back to back and their
    /// acknowledgements awaited together (one round trip for the lot, not
    /// one per key); any that failed are retried one by one. So a writer
    /// that puts its checkpoint last never has a checkpoint without the data
    /// it covers. A failure leaves some of the earlier ones written.
    pub async fn put_all(&self, mut items: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        for (key, _) in &items {
            crate::kv::check_key(key)?;
        }
        let Some(last) = items.pop() else {
            return Ok(());
        };
        let mut pending = Vec::with_capacity(items.len());
        for (key, value) in items {
            let value = Bytes::from(value);
            let ack = self
                .inner
                .js
                .publish(self.subject(&key), value.clone())
                .await
                .ok();
            pending.push((key, value, ack));
        }
        for (key, value, ack) in pending {
            let acked = match ack {
                Some(ack) => ack.await.is_ok(),
                None => false,
            };
            if !acked {
                self.put_one(&key, value).await?;
            }
        }
        self.put_one(&last.0, Bytes::from(last.1)).await
    }

    async fn put_one(&self, key: &str, value: Bytes) -> Result<(), KvError> {
        retrying(
            &format!("KV put {key:?} into bucket {}", self.inner.bucket),
            self.inner.options.retry_window(),
            || self.inner.store.put(key, value.clone()),
            |e| e.kind() == kv::PutErrorKind::InvalidKey,
        )
        .await
        .map_err(kv_err)?;
        Ok(())
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        crate::kv::check_key(key)?;
        retrying(
            &format!("KV delete {key:?} from bucket {}", self.inner.bucket),
            self.inner.options.retry_window(),
            || self.inner.store.delete(key),
            |e| e.kind() == kv::DeleteErrorKind::InvalidKey,
        )
        .await
        .map_err(kv_err)
    }

    /// Pairs whose key starts with `prefix`, in key order.
    ///
    /// One pass over the bucket's latest values (an ordered consumer with
    /// `DeliverPolicy::LastPerSubject`, narrowed to the prefix's complete
    /// `.`-separated tokens); the rest of the prefix is matched here.
    pub async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, KvError> {
        let key_prefix = format!("$KV.{}.", self.inner.bucket);
        let filter = match prefix.rfind('.') {
            // Keys starting with "a.b.c" are subjects under "a.b." at least.
            Some(dot) if dot > 0 && crate::kv::check_key(&prefix[..dot]).is_ok() => {
                format!("{key_prefix}{}.>", &prefix[..dot])
            }
            _ => format!("{key_prefix}>"),
        };
        let values = retrying(
            &format!(
                "KV scan of bucket {} for prefix {prefix:?}",
                self.inner.bucket
            ),
            self.inner.options.retry_window(),
            || self.scan_once(&filter, &key_prefix),
            |_| false,
        )
        .await
        .map_err(kv_err)?;
        Ok(values
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, v)| v.map(|v| (k, v.to_vec())))
            .collect())
    }

    async fn scan_once(
        &self,
        filter: &str,
        key_prefix: &str,
    ) -> Result<BTreeMap<String, Option<Bytes>>, String> {
        let consumer = self
            .inner
            .store
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: filter.to_owned(),
                deliver_policy: DeliverPolicy::LastPerSubject,
                description: Some("timecard kv scan".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let name = consumer.cached_info().name.clone();
        let mut pending = consumer.cached_info().num_pending;
        let mut values = BTreeMap::new();
        if pending > 0 {
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            while pending > 0 {
                let message =
                    match tokio::time::timeout(self.inner.options.request_timeout, messages.next())
                        .await
                    {
                        Err(_) => {
                            return Err(format!("stalled with {pending} value(s) still to come"));
                        }
                        Ok(None) => return Err("the consumer ended early".into()),
                        Ok(Some(Err(e))) => return Err(e.to_string()),
                        Ok(Some(Ok(m))) => m,
                    };
                pending = message.info().map_err(|e| e.to_string())?.pending;
                let Some(key) = message.subject.as_str().strip_prefix(key_prefix) else {
                    continue;
                };
                let value =
                    (!is_tombstone(message.headers.as_ref())).then(|| message.payload.clone());
                values.insert(key.to_owned(), value);
            }
        }
        let js = self.inner.store.stream.clone();
        tokio::spawn(async move {
            let _ = js.delete_consumer(&name).await;
        });
        Ok(values)
    }
}

fn is_not_found(kind: &async_nats::jetstream::context::GetStreamErrorKind) -> bool {
    match kind {
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(e) => {
            e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND || e.code() == 404
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_header_safe_and_distinct() {
        let t = crate::envelope::IdempotencyToken {
            event_time_ns: 5,
            nonce: 0xab,
        };
        let tt = fbclock::TrueTime {
            earliest_ns: 0,
            latest_ns: 0,
        };
        let a = Envelope::new("ns/c\r\nX: y", t, tt, vec![]).unwrap();
        let b = Envelope::new("ns/d", t, tt, vec![]).unwrap();
        let id = message_id(&a);
        assert!(id.bytes().all(|c| c.is_ascii_graphic()), "{id}");
        assert_ne!(id, message_id(&b));
        assert!(id.ends_with(":5:000000000000000000000000000000ab"), "{id}");
    }

    #[test]
    fn service_names_are_checked() {
        assert_eq!(service_name("Counter-1").unwrap(), "counter-1");
        for bad in ["", "a.b", "a b", "a*", "x>"] {
            assert!(service_name(bad).is_err(), "{bad:?}");
        }
    }
}
