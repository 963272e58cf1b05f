//! The event envelope every service writes to its log.
//!
//! An [`Envelope`] is one immutable event: the key it belongs to (a counter,
//! a member), an [`IdempotencyToken`] (the event time the caller chose plus a
//! nonce, so a retried or hedged request names the *same* event), the
//! TrueTime interval at which the service accepted it, and an opaque payload.
//! `(key, token)` is the event's identity.
//!
//! The binary form is versioned and length-checked: decoding garbage gives
//! an [`EnvelopeError`], never a panic.

use std::fmt;
use std::str::FromStr;

use fbclock::TrueTime;

/// Largest key, bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest payload, bytes.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;
const VERSION: u8 = 1;

/// Why a token string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `EVENT_TIME_NS:NONCE`.
    #[error(
        "idempotency token must be EVENT_TIME_NS:NONCE (e.g. 1732600000000000000:9f86d081884c7d65), got {0:?}"
    )]
    Format(String),
    /// The event time is not a decimal integer of nanoseconds.
    #[error("idempotency token event time {0:?} is not an integer number of nanoseconds")]
    EventTime(String),
    /// The nonce is not 1 to 32 hex digits (dashes allowed, as in a UUID).
    #[error("idempotency token nonce {0:?} must be 1 to 32 hex digits (a UUID is fine)")]
    Nonce(String),
}

/// Names one event across retries and hedged requests: the event time the
/// caller assigned (TAI ns) and a random nonce of up to 128 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyToken {
    /// When the event happened, TAI ns (the caller's TrueTime, usually `latest`).
    pub event_time_ns: i64,
    /// Random part.
    pub nonce: u128,
}

impl IdempotencyToken {
    /// A fresh token at `event_time_ns` with a random nonce.
    #[must_use]
    pub fn fresh(event_time_ns: i64) -> Self {
        Self {
            event_time_ns,
            nonce: random_u128(),
        }
    }

    /// Parses a nonce: 1–32 hex digits, dashes ignored.
    pub fn parse_nonce(s: &str) -> Result<u128, TokenError> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.is_empty() || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(TokenError::Nonce(s.chars().take(80).collect()));
        }
        u128::from_str_radix(&hex, 16).map_err(|_| TokenError::Nonce(s.into()))
    }
}

impl fmt::Display for IdempotencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:032x}", self.event_time_ns, self.nonce)
    }
}

impl FromStr for IdempotencyToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = || s.chars().take(80).collect::<String>();
        let (t, n) = s
            .split_once(':')
            .ok_or_else(|| TokenError::Format(short()))?;
        let event_time_ns = t
            .parse::<i64>()
            .map_err(|_| TokenError::EventTime(t.chars().take(40).collect()))?;
        Ok(Self {
            event_time_ns,
            nonce: Self::parse_nonce(n)?,
        })
    }
}

/// 128 bits read once from the kernel (`getrandom`), or the clock and pid
/// if that fails.
fn process_seed() -> u128 {
    static SEED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let mut buf = [0u8; 16];
        // SAFETY: `buf` is a valid, writable 16-byte buffer for the whole call.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == 16 {
            return u128::from_le_bytes(buf);
        }
        let t = fbclock::clock_ns(libc::CLOCK_REALTIME as u32) as u64;
        (u128::from(t) << 64) | u128::from(std::process::id())
    })
}

/// A fresh nonce: unique, not secret. The high 64 bits are random per
/// process (kernel entropy, read once); the low 64 bits are a per-process
/// counter mixed by SplitMix64 (a bijection, so they never repeat within a
/// process). One relaxed atomic add, no system call.
#[must_use]
pub fn random_u128() -> u128 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = process_seed();
    let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut z = c
        .wrapping_add(seed as u64)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (seed & (u128::from(u64::MAX) << 64)) | u128::from(z)
}

/// Why an envelope could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The key is empty or longer than [`MAX_KEY_LEN`].
    #[error("key must be 1 to {MAX_KEY_LEN} bytes, got {0}")]
    KeyLength(usize),
    /// The payload is longer than [`MAX_PAYLOAD_LEN`].
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD_LEN}")]
    PayloadTooLarge(usize),
    /// The bytes are not an envelope of a known version.
    #[error("corrupt envelope: {0}")]
    Corrupt(&'static str),
}

/// One immutable event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// What the event belongs to (e.g. `namespace/counter`).
    pub key: String,
    /// Identity across retries.
    pub token: IdempotencyToken,
    /// TrueTime when the service accepted the event.
    pub accepted: TrueTime,
    /// Service-defined body.
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Builds an envelope, checking the size limits.
    pub fn new(
        key: impl Into<String>,
        token: IdempotencyToken,
        accepted: TrueTime,
        payload: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let key = key.into();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(EnvelopeError::KeyLength(key.len()));
        }
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(EnvelopeError::PayloadTooLarge(payload.len()));
        }
        Ok(Self {
            key,
            token,
            accepted,
            payload,
        })
    }

    /// The event time (the token's).
    #[must_use]
    pub fn event_time_ns(&self) -> i64 {
        self.token.event_time_ns
    }

    /// Appends the binary form to `out`:
    /// `version u8 | event_time i64 | nonce u128 | earliest i64 | latest i64 |
    /// key_len u16 | key | payload_len u32 | payload` (little endian).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(VERSION);
        out.extend_from_slice(&self.token.event_time_ns.to_le_bytes());
        out.extend_from_slice(&self.token.nonce.to_le_bytes());
        out.extend_from_slice(&self.accepted.earliest_ns.to_le_bytes());
        out.extend_from_slice(&self.accepted.latest_ns.to_le_bytes());
        // Lengths were checked in `new`; a hand-built oversized envelope is
        // truncated to what the length field can say and fails to decode.
        out.extend_from_slice(&(self.key.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The binary form.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Size of the binary form.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        1 + 8 + 16 + 8 + 8 + 2 + self.key.len() + 4 + self.payload.len()
    }

    /// Decodes the binary form (the whole slice).
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut r = Reader(bytes);
        if r.take(1)?[0] != VERSION {
            return Err(EnvelopeError::Corrupt("unknown version"));
        }
        let event_time_ns = i64::from_le_bytes(r.array()?);
        let nonce = u128::from_le_bytes(r.array()?);
        let earliest_ns = i64::from_le_bytes(r.array()?);
        let latest_ns = i64::from_le_bytes(r.array()?);
        let key_len = usize::from(u16::from_le_bytes(r.array()?));
        let key = std::str::from_utf8(r.take(key_len)?)
            .map_err(|_| EnvelopeError::Corrupt("key is not UTF-8"))?
            .to_owned();
        let payload_len = u32::from_le_bytes(r.array()?) as usize;
        let payload = r.take(payload_len)?.to_vec();
        if !r.0.is_empty() {
            return Err(EnvelopeError::Corrupt("trailing bytes"));
        }
        Self::new(
            key,
            IdempotencyToken {
                event_time_ns,
                nonce,
            },
            TrueTime {
                earliest_ns,
                latest_ns,
            },
            payload,
        )
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.0.len() < n {
            return Err(EnvelopeError::Corrupt("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nonces_are_unique_and_share_the_process_prefix() {
        let n: std::collections::HashSet<u128> = (0..10_000).map(|_| random_u128()).collect();
        assert_eq!(n.len(), 10_000);
        assert!(n.iter().all(|v| v >> 64 == process_seed() >> 64));
    }

    use super::*;
    use proptest::prelude::*;

    fn tt(e: i64, l: i64) -> TrueTime {
        TrueTime {
            earliest_ns: e,
            latest_ns: l,
        }
    }

    #[test]
    fn token_round_trips_and_accepts_uuids() {
        let t: IdempotencyToken = "1732600000000000000:550e8400-e29b-41d4-a716-446655440000"
            .parse()
            .unwrap();
        assert_eq!(t.event_time_ns, 1_732_600_000_000_000_000);
        assert_eq!(t.nonce, 0x550e8400e29b41d4a716446655440000);
        assert_eq!(t.to_string().parse::<IdempotencyToken>().unwrap(), t);
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        for (s, want) in [
            ("", "EVENT_TIME_NS:NONCE"),
            ("12345", "EVENT_TIME_NS:NONCE"),
            ("abc:ff", "event time"),
            ("99999999999999999999:ff", "event time"),
            ("1:", "nonce"),
            ("1:xyz", "nonce"),
            ("1:000000000000000000000000000000000", "nonce"),
        ] {
            let e = s.parse::<IdempotencyToken>().unwrap_err().to_string();
            assert!(e.contains(want), "{s:?}: {e}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let t = IdempotencyToken::fresh(1);
        assert_eq!(
            Envelope::new("", t, tt(0, 0), vec![]).unwrap_err(),
            EnvelopeError::KeyLength(0)
        );
        assert_eq!(
            Envelope::new("k", t, tt(0, 0), vec![0; MAX_PAYLOAD_LEN + 1]).unwrap_err(),
            EnvelopeError::PayloadTooLarge(MAX_PAYLOAD_LEN + 1)
        );
    }

    proptest! {
        #[test]
        fn envelopes_round_trip(key in "[a-z/]{1,40}", time: i64, nonce: u128, e: i64, l: i64,
                                payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let env = Envelope::new(key, IdempotencyToken { event_time_ns: time, nonce }, tt(e, l), payload).unwrap();
            let bytes = env.encode();
            prop_assert_eq!(bytes.len(), env.encoded_len());
            prop_assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Envelope::decode(&bytes);
        }

        #[test]
        fn truncation_is_always_detected(cut in 0usize..60) {
            let env = Envelope::new("ns/c", IdempotencyToken::fresh(5), tt(1, 2), vec![7; 9]).unwrap();
            let bytes = env.encode();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(Envelope::decode(&bytes[..cut]).is_err());
        }
    }
}
