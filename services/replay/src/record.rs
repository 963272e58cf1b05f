//! A captured exchange: one request, the response production gave, when
//! (TrueTime), and what produced it (lineage), so a difference found later
//! can be attributed to a version, a build or a configuration.
//!
//! Records are JSON with a schema version; a reader refuses what it cannot
//! read with a typed error (a corrupt or newer record is reported and
//! skipped, never guessed at).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The record schema this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest encoded record accepted.
pub const MAX_RECORD: usize = 1 << 20;

/// What produced one side of an exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Service name, e.g. `notify`.
    pub service: String,
    /// Service version (crate version or release tag).
    pub version: String,
    /// Build identifier (e.g. git commit).
    pub build: String,
    /// Hash of the effective configuration.
    pub config_hash: String,
    /// Versions of the dependencies that shaped the answer (backend, clock…).
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
}

/// A TrueTime interval, ns (TAI).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    /// Earliest.
    pub earliest_ns: i64,
    /// Latest.
    pub latest_ns: i64,
}

impl From<fbclock::TrueTime> for Interval {
    fn from(t: fbclock::TrueTime) -> Self {
        Self {
            earliest_ns: t.earliest_ns,
            latest_ns: t.latest_ns,
        }
    }
}

impl From<Interval> for fbclock::TrueTime {
    fn from(i: Interval) -> Self {
        Self {
            earliest_ns: i.earliest_ns,
            latest_ns: i.latest_ns,
        }
    }
}

impl Interval {
    /// The window of uncertainty, ns.
    #[must_use]
    pub fn width_ns(&self) -> i64 {
        self.latest_ns.saturating_sub(self.earliest_ns)
    }
}

/// One HTTP request as captured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Route template (the endpoint, e.g. `/v1/members/{m}/notifications`).
    pub endpoint: String,
    /// Body (UTF-8 text; JSON for our APIs).
    #[serde(default)]
    pub body: String,
}

/// One HTTP response as captured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body (UTF-8 text).
    #[serde(default)]
    pub body: String,
}

/// A captured exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// Unique id of the capture.
    pub id: String,
    /// The request.
    pub request: Request,
    /// What production answered.
    pub response: Response,
    /// When the request arrived.
    pub started: Interval,
    /// When the response left.
    pub finished: Interval,
    /// What produced the response.
    pub lineage: Lineage,
}

/// Why a record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Larger than [`MAX_RECORD`].
    #[error("record of {0} bytes exceeds {MAX_RECORD}")]
    TooLarge(usize),
    /// Not a record (bad JSON, missing fields).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Written by a newer schema.
    #[error("record schema {0} is newer than {SCHEMA_VERSION}; upgrade the replayer")]
    NewerSchema(u32),
}

impl Exchange {
    /// The record as JSON.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record.
    ///
    /// # Errors
    /// Too large, corrupt, or of a newer schema.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        // The schema first, so a newer record says so instead of "corrupt".
        #[derive(Deserialize)]
        struct Head {
            schema: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Corrupt(e.to_string()))?;
        if head.schema > SCHEMA_VERSION {
            return Err(RecordError::NewerSchema(head.schema));
        }
        serde_json::from_slice(bytes).map_err(|e| RecordError::Corrupt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Exchange {
        Exchange {
            schema: SCHEMA_VERSION,
            id: "c-1".into(),
            request: Request {
                method: "GET".into(),
                path: "/v1/members/m1/notifications?since=0".into(),
                endpoint: "/v1/members/{m}/notifications".into(),
                body: String::new(),
            },
            response: Response {
                status: 200,
                body: r#"{"changes":[],"cursor":0}"#.into(),
            },
            started: Interval {
                earliest_ns: 10,
                latest_ns: 30,
            },
            finished: Interval {
                earliest_ns: 40,
                latest_ns: 60,
            },
            lineage: Lineage {
                service: "notify".into(),
                version: "0.1.0".into(),
                build: "87237b2".into(),
                config_hash: "ab12".into(),
                dependencies: [("backend".into(), "embedded".into())].into(),
            },
        }
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_typed_errors() {
        let e = sample();
        assert_eq!(Exchange::decode(&e.encode()).unwrap(), e);
        assert_eq!(e.started.width_ns(), 20);
        let mut newer = serde_json::to_value(&e).unwrap();
        newer["schema"] = 2.into();
        newer["new_field"] = "x".into();
        assert_eq!(
            Exchange::decode(newer.to_string().as_bytes()),
            Err(RecordError::NewerSchema(2))
        );
        assert!(matches!(
            Exchange::decode(b"{\"schema\":1}"),
            Err(RecordError::Corrupt(_))
        ));
        assert!(matches!(
            Exchange::decode(b"\xff"),
            Err(RecordError::Corrupt(_))
        ));
        assert_eq!(
            Exchange::decode(&vec![b' '; MAX_RECORD + 1]),
            Err(RecordError::TooLarge(MAX_RECORD + 1))
        );
        // An older record without the optional fields still reads.
        let mut older = serde_json::to_value(&e).unwrap();
        older["lineage"]
            .as_object_mut()
            .unwrap()
            .remove("dependencies");
        older["request"].as_object_mut().unwrap().remove("body");
        assert!(Exchange::decode(older.to_string().as_bytes()).is_ok());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Exchange::decode(&bytes);
        }
    }
}
