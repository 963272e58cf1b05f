//! Reading the GNSS receiver's NMEA stream from its serial port.
//!
//! Bytes arrive in arbitrary chunks; [`NmeaStream`] reassembles lines with a
//! bounded buffer (an endless line without a newline is discarded, not
//! accumulated) and parses each with `timecard_hw::nmea`, counting what it
//! rejects. [`NmeaReader`] adds the non-blocking serial port.

use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use timecard_hw::civil::UtcDateTime;
use timecard_hw::nmea::{self, Sentence};

/// Longest line kept while waiting for its end (NMEA allows 82 characters).
const MAX_LINE: usize = 256;

/// The latest time of day the receiver reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GnssTime {
    /// UTC label of the second (23:59:60 possible).
    pub utc: UtcDateTime,
    /// Whether the receiver flagged its fix as valid (RMC `A`).
    pub valid: bool,
}

/// Counters of the NMEA stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NmeaStats {
    /// Sentences parsed.
    pub sentences: u64,
    /// Lines rejected (checksum, syntax, range).
    pub rejected: u64,
    /// Over-long lines discarded.
    pub overflows: u64,
}

/// Line reassembly and parsing of an NMEA byte stream.
#[derive(Debug, Default)]
pub struct NmeaStream {
    line: Vec<u8>,
    discarding: bool,
    stats: NmeaStats,
    valid_fix: bool,
}

impl NmeaStream {
    /// Feeds bytes; returns the time reports they completed (RMC and ZDA).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<GnssTime> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.discarding && !self.line.is_empty() {
                    let line = std::mem::take(&mut self.line);
                    if let Some(t) = self.parse_line(&line) {
                        out.push(t);
                    }
                }
                self.line.clear();
                self.discarding = false;
            } else if !self.discarding {
                if self.line.len() >= MAX_LINE {
                    self.stats.overflows += 1;
                    self.line.clear();
                    self.discarding = true;
                } else {
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn parse_line(&mut self, line: &[u8]) -> Option<GnssTime> {
        let Ok(text) = std::str::from_utf8(line) else {
            self.stats.rejected += 1;
            return None;
        };
        match nmea::parse(text) {
            Ok(sentence) => {
                self.stats.sentences += 1;
                match &sentence {
                    Sentence::Rmc(r) => {
                        self.valid_fix = r.valid;
                        sentence.utc().map(|utc| GnssTime {
                            utc,
                            valid: r.valid,
                        })
                    }
                    Sentence::Zda(_) => sentence.utc().map(|utc| GnssTime {
                        utc,
                        valid: self.valid_fix,
                    }),
                    _ => None,
                }
            }
            Err(_) => {
                self.stats.rejected += 1;
                None
            }
        }
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> NmeaStats {
        self.stats
    }
}

/// A non-blocking NMEA reader on a serial port or pseudo-terminal.
pub struct NmeaReader {
    port: Box<dyn serialport::SerialPort>,
    stream: NmeaStream,
}

impl std::fmt::Debug for NmeaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NmeaReader")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl NmeaReader {
    /// Opens `path` at `baud` (8N1), as the card's GNSS UART is configured (115200).
    ///
    /// # Errors
    /// The serial port's error, with the path.
    pub fn open(path: &Path, baud: u32) -> io::Result<Self> {
        let port = serialport::new(path.to_string_lossy(), baud)
            .timeout(Duration::from_millis(1))
            .open()
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        Ok(Self {
            port,
            stream: NmeaStream::default(),
        })
    }

    /// Reads whatever is buffered and returns the time reports completed.
    pub fn poll(&mut self) -> Vec<GnssTime> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match self.port.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend(self.stream.push(&buf[..n])),
                Err(_) => break,
            }
        }
        out
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> NmeaStats {
        self.stream.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RMC: &str = "$GNRMC,120000.00,A,3729.0820,N,12208.8620,W,0.000,0.00,251126,,,A*";

    fn framed(body: &str) -> String {
        nmea::frame(body.trim_start_matches('$').trim_end_matches('*'))
    }

    #[test]
    fn reassembles_split_lines_and_rejects_garbage() {
        let mut s = NmeaStream::default();
        let line = framed(RMC);
        let (a, b) = line.as_bytes().split_at(20);
        assert!(s.push(a).is_empty());
        let got = s.push(b);
        assert_eq!(got.len(), 1, "{line}");
        assert!(got[0].valid);
        assert_eq!((got[0].utc.hour, got[0].utc.day), (12, 25));
        assert!(s.push(b"$GNRMC,garbage*00\r\n\xff\xfe\r\n").is_empty());
        assert_eq!(s.stats().rejected, 2);
        let long = vec![b'A'; 10_000];
        assert!(s.push(&long).is_empty());
        assert_eq!(s.stats().overflows, 1);
        assert!(s.push(b"tail of the runaway line\r\n").is_empty());
        assert_eq!(
            s.push(line.as_bytes()).len(),
            1,
            "recovers after an overflow"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut s = NmeaStream::default();
            for c in &chunks {
                let _ = s.push(c);
            }
            prop_assert!(s.line.len() <= MAX_LINE);
        }
    }
}
