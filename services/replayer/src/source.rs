//! Where captured traffic comes from: a service's capture stream over HTTP
//! (`GET /v1/capture`, see `replay::capture`) or an NDJSON file exported
//! from one. Lines are parsed here; a line that is not a readable record
//! becomes a [`Captured::Bad`] with the reason, never an error that stops
//! the replay.

use std::path::PathBuf;
use std::time::Duration;

use replay::record::{Exchange, RecordError};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};

use crate::client::{HttpClient, preview};

/// Records read per HTTP request.
const PAGE: usize = 500;
/// Largest capture page read (500 records of up to a log event each).
const MAX_PAGE_BYTES: usize = 64 << 20;
/// Longest line of an exported file; longer ones are bad records.
const MAX_LINE: usize = 2 * replay::record::MAX_RECORD;

/// Why a captured record could not be replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadRecord {
    /// Not a record (bad JSON, missing fields, not UTF-8).
    Corrupt(String),
    /// Written by a newer capture schema than this replayer reads.
    SchemaDrift(String),
    /// This many records were trimmed from the capture log before they
    /// could be read.
    Missing(u64),
}

/// One item of the capture stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Captured {
    /// A record.
    Exchange {
        /// Sequence number in the capture stream.
        seq: u64,
        /// The exchange.
        exchange: Box<Exchange>,
    },
    /// A record that cannot be replayed.
    Bad {
        /// Sequence number (0 when even that is unreadable).
        seq: u64,
        /// Why.
        problem: BadRecord,
    },
}

impl Captured {
    /// The sequence number.
    #[must_use]
    pub fn seq(&self) -> u64 {
        match self {
            Self::Exchange { seq, .. } | Self::Bad { seq, .. } => *seq,
        }
    }
}

/// One line of the stream: `{"seq":N,"record":{…}}`, `{"seq":N,"unreadable":"…"}`,
/// or (written by this reader) `{"seq":N,"missing":COUNT}` for a gap.
#[derive(Deserialize)]
struct Line<'a> {
    seq: u64,
    #[serde(borrow, default)]
    record: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    unreadable: Option<String>,
    #[serde(default)]
    missing: Option<u64>,
}

/// The line that stands for `count` records missing from `seq` on.
fn gap_line(seq: u64, count: u64) -> String {
    format!("{{\"seq\":{seq},\"missing\":{count}}}")
}

/// The sequence number of a capture line (0 when unreadable), without
/// decoding its record (paging needs only that).
fn line_seq(line: &str) -> u64 {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_str::<Seq>(line).map_or(0, |s| s.seq)
}

/// Parses one line of a capture stream.
#[must_use]
pub fn parse_line(line: &str) -> Captured {
    let Ok(l) = serde_json::from_str::<Line<'_>>(line) else {
        return Captured::Bad {
            seq: 0,
            problem: BadRecord::Corrupt(format!("not a capture line: {}", preview(line, 80))),
        };
    };
    if let Some(count) = l.missing {
        return Captured::Bad {
            seq: l.seq,
            problem: BadRecord::Missing(count),
        };
    }
    let Some(raw) = l.record else {
        return Captured::Bad {
            seq: l.seq,
            problem: BadRecord::Corrupt(format!(
                "stored bytes are not JSON: {}",
                preview(l.unreadable.as_deref().unwrap_or(""), 80)
            )),
        };
    };
    match Exchange::decode(raw.get().as_bytes()) {
        Ok(e) => Captured::Exchange {
            seq: l.seq,
            exchange: Box::new(e),
        },
        Err(e @ RecordError::NewerSchema(_)) => Captured::Bad {
            seq: l.seq,
            problem: BadRecord::SchemaDrift(e.to_string()),
        },
        Err(e) => Captured::Bad {
            seq: l.seq,
            problem: BadRecord::Corrupt(e.to_string()),
        },
    }
}

/// Why the source failed (the replay stops; bad records do not).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The capture endpoint could not be read.
    #[error("reading the capture stream at {url}: {cause}")]
    Http {
        /// What was asked.
        url: String,
        /// Why it failed.
        cause: String,
    },
    /// The file could not be read.
    #[error("reading {path}: {cause}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

/// A capture stream being read.
pub enum Source {
    /// A service's `GET /v1/capture`.
    Http {
        /// Client.
        client: HttpClient,
        /// The service's base URL (`http://host:port`).
        base: String,
        /// Next sequence number to read.
        next: u64,
        /// Stop here (the end when the replay started), or follow forever.
        stop_at: Option<u64>,
    },
    /// An NDJSON export.
    File {
        /// The file's path.
        path: PathBuf,
        /// Its contents.
        reader: tokio::io::BufReader<tokio::fs::File>,
    },
}

impl Source {
    /// The capture stream of the service at `base` from sequence `from`; up
    /// to its end at this moment, or on and on with `follow`; `token` is
    /// sent with every request (reading a capture needs one unless the
    /// service runs `--insecure`).
    pub async fn http(
        base: &str,
        from: u64,
        follow: bool,
        token: Option<access::ClientToken>,
    ) -> Result<Self, SourceError> {
        let client = HttpClient::with_limit(MAX_PAGE_BYTES).with_token(token);
        let base = base.trim_end_matches('/').to_owned();
        let stop_at = if follow {
            None
        } else {
            Some(capture_end(&client, &base).await?)
        };
        Ok(Self::Http {
            client,
            base,
            next: from.max(1),
            stop_at,
        })
    }

    /// An exported file.
    pub async fn file(path: PathBuf) -> Result<Self, SourceError> {
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|cause| SourceError::File {
                path: path.clone(),
                cause,
            })?;
        Ok(Self::File {
            path,
            reader: tokio::io::BufReader::new(f),
        })
    }

    /// The next lines, raw (empty: the stream is done).
    pub async fn next_lines(&mut self) -> Result<Vec<String>, SourceError> {
        match self {
            Self::Http {
                client,
                base,
                next,
                stop_at,
            } => {
                if stop_at.is_some_and(|end| *next >= end) {
                    return Ok(Vec::new());
                }
                let max = stop_at.map_or(PAGE, |end| PAGE.min((end - *next) as usize));
                let wait = if stop_at.is_some() { 0 } else { 5_000 };
                loop {
                    let url = format!("{base}/v1/capture?from={next}&max={max}&wait_ms={wait}");
                    let body = get_ok(client, &url).await?.body;
                    let lines: Vec<String> = body
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(str::to_owned)
                        .collect();
                    // Sequence numbers are consecutive: a jump means records
                    // were trimmed before we read them, and says so.
                    if let Some(first) = lines.first().map(|l| line_seq(l))
                        && first > *next
                    {
                        let gap = gap_line(*next, first - *next);
                        *next = first;
                        return Ok(vec![gap]);
                    }
                    if let Some(last) = lines.last().map(|l| line_seq(l)) {
                        *next = (*next + lines.len() as u64).max(last + 1);
                        return Ok(lines);
                    }
                    if stop_at.is_some() {
                        // Trimmed away before we read it.
                        let end = capture_end(client, base).await?;
                        if end > *next {
                            let gap = gap_line(*next, end - *next);
                            *next = end;
                            return Ok(vec![gap]);
                        }
                        return Ok(Vec::new());
                    }
                }
            }
            Self::File { path, reader } => {
                let mut out = Vec::new();
                let mut line = Vec::new();
                while out.len() < PAGE {
                    line.clear();
                    let read = (&mut *reader)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut line)
                        .await
                        .map_err(|cause| SourceError::File {
                            path: path.clone(),
                            cause,
                        })?;
                    if read == 0 {
                        break;
                    }
                    if line.last() != Some(&b'\n') && read == MAX_LINE {
                        // Too long to be a record: skip the rest of it.
                        let mut rest = Vec::new();
                        reader.read_until(b'\n', &mut rest).await.map_err(|cause| {
                            SourceError::File {
                                path: path.clone(),
                                cause,
                            }
                        })?;
                        out.push(format!(
                            "line over {MAX_LINE} bytes ({} bytes)",
                            read + rest.len()
                        ));
                        continue;
                    }
                    // Invalid UTF-8 stays visible (and unparsable), not fatal.
                    let text = String::from_utf8_lossy(&line);
                    if !text.trim().is_empty() {
                        out.push(text.trim_end().to_owned());
                    }
                }
                Ok(out)
            }
        }
    }

    /// The next items (empty: the stream is done).
    pub async fn next_batch(&mut self) -> Result<Vec<Captured>, SourceError> {
        Ok(self
            .next_lines()
            .await?
            .iter()
            .map(|l| parse_line(l))
            .collect())
    }
}

/// Longest wait for one capture page (the server long-polls up to 10 s).
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET url` of the capture endpoint, which must answer 200.
async fn get_ok(client: &HttpClient, url: &str) -> Result<crate::client::Answer, SourceError> {
    client
        .get_ok(url, PAGE_TIMEOUT)
        .await
        .map_err(|cause| SourceError::Http {
            url: url.to_owned(),
            cause,
        })
}

/// One past the last sequence number of the capture stream at `base`.
async fn capture_end(client: &HttpClient, base: &str) -> Result<u64, SourceError> {
    let url = format!("{base}/v1/capture?from=1&max=1");
    get_ok(client, &url)
        .await?
        .capture_end
        .ok_or_else(|| SourceError::Http {
            url,
            cause: "no x-capture-end header (not a capture endpoint?)".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_records_or_typed_bad_records() {
        let e = Exchange {
            schema: 1,
            id: "x".into(),
            ..Exchange::default()
        };
        let line = replay::capture::capture_line(7, &e.encode());
        assert_eq!(
            parse_line(line.trim()),
            Captured::Exchange {
                seq: 7,
                exchange: Box::new(e.clone())
            }
        );
        let garbage = replay::capture::capture_line(8, b"\x00\xffnot json");
        assert!(matches!(
            parse_line(&garbage),
            Captured::Bad {
                seq: 8,
                problem: BadRecord::Corrupt(_)
            }
        ));
        let mut newer = serde_json::to_value(&e).unwrap();
        newer["schema"] = 9.into();
        let line = replay::capture::capture_line(9, newer.to_string().as_bytes());
        assert!(matches!(
            parse_line(&line),
            Captured::Bad {
                seq: 9,
                problem: BadRecord::SchemaDrift(_)
            }
        ));
        let missing = replay::capture::capture_line(10, br#"{"schema":1,"id":"y"}"#);
        assert!(matches!(
            parse_line(&missing),
            Captured::Bad {
                seq: 10,
                problem: BadRecord::Corrupt(_)
            }
        ));
        assert_eq!((line_seq(&line), line_seq("{{{")), (9, 0));
        assert_eq!(
            parse_line(&gap_line(11, 3)),
            Captured::Bad {
                seq: 11,
                problem: BadRecord::Missing(3)
            }
        );
        assert!(matches!(
            parse_line("{{{"),
            Captured::Bad {
                seq: 0,
                problem: BadRecord::Corrupt(_)
            }
        ));
    }
}
