//! What flows through the pipeline: priorities, device types, notification
//! types with their staleness thresholds, and the event as it is validated at
//! ingest and stored in a priority shard's log.
//!
//! An event in the log is an [`Envelope`] whose key is the member id, whose
//! token is the idempotency key (creation time + nonce) and whose payload is
//! [`Notification::encode`]. Everything here is pure and checks its input:
//! garbage gives a [`ModelError`], never a panic.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use eventlog::Envelope;

/// Longest member id, bytes.
pub const MAX_MEMBER_LEN: usize = 64;
/// Longest notification type name, bytes.
pub const MAX_KIND_LEN: usize = 48;

/// Why an event or a setting was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The priority is not `high`, `medium` or `low`.
    #[error("unknown priority {0:?}: use high, medium or low")]
    Priority(String),
    /// The device type is not one we deliver to.
    #[error("unknown device type {0:?}: use tv, phone, tablet or browser")]
    DeviceType(String),
    /// The notification type is not configured.
    #[error("unknown notification type {0:?} (configured: {1})")]
    UnknownType(String, String),
    /// A member id that is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("member id {0:?} must be 1 to {MAX_MEMBER_LEN} characters from [A-Za-z0-9_-]")]
    Member(String),
    /// The body is not a JSON object.
    #[error("body must be a JSON object: {0}")]
    Body(String),
    /// The body is larger than the limit.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A type specification that does not parse.
    #[error(
        "notification type {0:?}: expected NAME=STALENESS_S[:PRIORITY], e.g. new-episode=600:medium"
    )]
    TypeSpec(String),
    /// A stored record that does not decode.
    #[error("corrupt notification record: {0}")]
    Corrupt(&'static str),
}

/// Delivery priority: each has its own queues and processing pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// User-visible and urgent (e.g. a live event starting).
    High,
    /// The default.
    Medium,
    /// Background updates (e.g. a list changed on another device).
    Low,
}

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Self; 3] = [Self::High, Self::Medium, Self::Low];

    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }

    /// Position in [`Priority::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ModelError::Priority(s.chars().take(40).collect()))
    }
}

/// A kind of device a member uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceType {
    /// A television or set-top box.
    Tv,
    /// A phone.
    Phone,
    /// A tablet.
    Tablet,
    /// A web browser.
    Browser,
}

impl DeviceType {
    /// Every device type.
    pub const ALL: [Self; 4] = [Self::Tv, Self::Phone, Self::Tablet, Self::Browser];

    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tv => "tv",
            Self::Phone => "phone",
            Self::Tablet => "tablet",
            Self::Browser => "browser",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceType {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ModelError::DeviceType(s.chars().take(40).collect()))
    }
}

/// A set of device types; empty means "every device".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Targets(u8);

impl Targets {
    /// Every device type.
    pub const ALL: Self = Self(0);

    /// The set of `types` (empty: every device).
    #[must_use]
    pub fn of(types: &[DeviceType]) -> Self {
        Self(types.iter().fold(0, |m, t| m | t.bit()))
    }

    /// Parses names (empty: every device).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, ModelError> {
        let types = names
            .iter()
            .map(|n| n.as_ref().parse())
            .collect::<Result<Vec<DeviceType>, _>>()?;
        Ok(Self::of(&types))
    }

    /// Whether a device of type `t` is targeted.
    #[must_use]
    pub fn includes(self, t: DeviceType) -> bool {
        self.0 == 0 || self.0 & t.bit() != 0
    }

    /// The targeted types by name (empty: every device).
    #[must_use]
    pub fn names(self) -> Vec<&'static str> {
        if self.0 == 0 {
            return Vec::new();
        }
        DeviceType::ALL
            .into_iter()
            .filter(|t| self.0 & t.bit() != 0)
            .map(DeviceType::as_str)
            .collect()
    }

    fn from_bits(bits: u8) -> Option<Self> {
        (bits < 1 << DeviceType::ALL.len()).then_some(Self(bits))
    }
}

/// A configured notification type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSpec {
    /// Name, e.g. `new-episode`.
    pub name: String,
    /// Older than this (by TrueTime, certainly) it is dropped, not delivered.
    pub staleness: Duration,
    /// Priority when the event names none.
    pub priority: Priority,
}

impl FromStr for TypeSpec {
    type Err = ModelError;

    /// `NAME=STALENESS_S[:PRIORITY]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ModelError::TypeSpec(s.chars().take(80).collect());
        let (name, rest) = s.trim().split_once('=').ok_or_else(bad)?;
        let (secs, priority) = match rest.split_once(':') {
            Some((secs, p)) => (secs, p.parse()?),
            None => (rest, Priority::Medium),
        };
        let secs: u64 = secs.parse().map_err(|_| bad())?;
        if !valid_name(name, MAX_KIND_LEN) || secs == 0 || secs > 7 * 86_400 {
            return Err(bad());
        }
        Ok(Self {
            name: name.to_owned(),
            staleness: Duration::from_secs(secs),
            priority,
        })
    }
}

/// The default notification types (RENO's kinds of member-facing updates).
#[must_use]
pub fn default_types() -> Vec<TypeSpec> {
    [
        "live-event=30:high",
        "viewing-activity=60:medium",
        "new-episode=600:medium",
        "my-list=300:low",
        "profile-update=300:low",
    ]
    .iter()
    .map(|s| s.parse().expect("default types are valid"))
    .collect()
}

/// Whether `s` is 1..=`max` characters of `[A-Za-z0-9_-]`.
#[must_use]
pub fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a member id.
pub fn check_member(member: &str) -> Result<(), ModelError> {
    if valid_name(member, MAX_MEMBER_LEN) {
        Ok(())
    } else {
        Err(ModelError::Member(member.chars().take(80).collect()))
    }
}

/// Checks that `body` is one JSON object of at most `limit` bytes.
pub fn check_body(body: &[u8], limit: usize) -> Result<(), ModelError> {
    if body.len() > limit {
        return Err(ModelError::BodyTooLarge {
            size: body.len(),
            limit,
        });
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ModelError::Body("not an object".into()));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map(drop)
        .map_err(|e| ModelError::Body(e.to_string()))
}

/// One notification event as the pipeline carries it (the log payload;
/// the member and idempotency key live in the envelope).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The type name.
    pub kind: String,
    /// Its priority.
    pub priority: Priority,
    /// Device types to deliver to.
    pub targets: Targets,
    /// A JSON object.
    pub body: Vec<u8>,
}

const VERSION: u8 = 1;

impl Notification {
    /// The log payload: `version | priority | targets | kind_len u8 | kind | body`.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.kind.len() + self.body.len());
        encode_fields(
            &self.kind,
            self.priority,
            self.targets,
            &self.body,
            &mut out,
        );
        out
    }

    /// Decodes a log payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, ModelError> {
        let [version, priority, targets, kind_len, rest @ ..] = bytes else {
            return Err(ModelError::Corrupt("short header"));
        };
        if *version != VERSION {
            return Err(ModelError::Corrupt("unknown version"));
        }
        let priority = Priority::from_u8(*priority).ok_or(ModelError::Corrupt("priority"))?;
        let targets = Targets::from_bits(*targets).ok_or(ModelError::Corrupt("targets"))?;
        let (kind, body) = rest
            .split_at_checked(usize::from(*kind_len))
            .ok_or(ModelError::Corrupt("kind length"))?;
        let kind = std::str::from_utf8(kind).map_err(|_| ModelError::Corrupt("kind utf-8"))?;
        Ok(Self {
            kind: kind.to_owned(),
            priority,
            targets,
            body: body.to_vec(),
        })
    }

    /// Decodes the notification in a log record.
    pub fn from_envelope(envelope: &Envelope) -> Result<Self, ModelError> {
        Self::decode(&envelope.payload)
    }
}

/// Appends [`Notification::encode`]'s form of these fields to `out`.
pub fn encode_fields(
    kind: &str,
    priority: Priority,
    targets: Targets,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    let kind = &kind.as_bytes()[..kind.len().min(usize::from(u8::MAX))];
    out.extend_from_slice(&[VERSION, priority as u8, targets.0, kind.len() as u8]);
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
}

/// A stable shard of `member` among `shards` (FNV-1a; the same in every
/// process and release, so a member's events always land in one shard).
#[must_use]
pub fn shard_of(member: &str, shards: usize) -> usize {
    let hash = member.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_parse_and_explain() {
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
        assert!(
            "urgent"
                .parse::<Priority>()
                .unwrap_err()
                .to_string()
                .contains("high, medium or low")
        );
        assert_eq!("tv".parse::<DeviceType>().unwrap(), DeviceType::Tv);
        assert!("fridge".parse::<DeviceType>().is_err());
        let t: TypeSpec = "new-episode=600:low".parse().unwrap();
        assert_eq!(t.staleness, Duration::from_secs(600));
        assert_eq!(t.priority, Priority::Low);
        for bad in [
            "x",
            "x=",
            "x=0",
            "=5",
            "a b=5",
            "x=5:urgent",
            "x=-1",
            "x=999999999",
        ] {
            assert!(bad.parse::<TypeSpec>().is_err(), "{bad}");
        }
        assert_eq!(default_types().len(), 5);
    }

    #[test]
    fn targets_select_devices() {
        let all = Targets::parse::<&str>(&[]).unwrap();
        assert!(DeviceType::ALL.iter().all(|t| all.includes(*t)));
        let tv = Targets::parse(&["tv", "browser"]).unwrap();
        assert!(tv.includes(DeviceType::Tv) && tv.includes(DeviceType::Browser));
        assert!(!tv.includes(DeviceType::Phone));
        assert_eq!(tv.names(), ["tv", "browser"]);
        assert!(Targets::parse(&["toaster"]).is_err());
    }

    #[test]
    fn bodies_must_be_small_json_objects() {
        assert!(check_body(br#" {"a":[1,2]} "#, 100).is_ok());
        for bad in [&b"[1]"[..], b"{", b"", b"\"x\"", b"{} {}", b"{\"a\":}"] {
            assert!(check_body(bad, 100).is_err(), "{bad:?}");
        }
        assert!(matches!(
            check_body(b"{}", 1),
            Err(ModelError::BodyTooLarge { size: 2, limit: 1 })
        ));
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("member-1", 4), shard_of("member-1", 4));
        let mut seen = [0usize; 4];
        for i in 0..4000 {
            seen[shard_of(&format!("m{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 800), "{seen:?}");
    }

    proptest! {
        #[test]
        fn notifications_round_trip(kind in "[a-z-]{1,48}", p in 0u8..3, t in 0u8..16, body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let n = Notification { kind, priority: Priority::from_u8(p).unwrap(), targets: Targets(t), body };
            prop_assert_eq!(Notification::decode(&n.encode()).unwrap(), n);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Notification::decode(&bytes);
        }
    }
}
