//! The results of a replay run: rows for the diff table (one per
//! difference, one per record that could not be compared) and the summary
//! report per endpoint (a table for people, JSON for tools).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use replay::record::Lineage;
use serde::Serialize;

use crate::run::{Compared, Outcome};
use crate::table::DiffRow;

/// The endpoint name used for records that could not be read.
pub const UNREADABLE: &str = "(unreadable)";

/// Counts of one endpoint (or all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Records read.
    pub records: u64,
    /// Sent to the candidate.
    pub replayed: u64,
    /// Equal after normalization.
    pub matched: u64,
    /// Different after normalization.
    pub mismatched: u64,
    /// Differences found in the mismatched ones.
    pub differences: u64,
    /// Candidate too slow.
    pub candidate_timeout: u64,
    /// Candidate unreachable or broke the connection.
    pub candidate_error: u64,
    /// Candidate answered garbage.
    pub candidate_garbage: u64,
    /// Records not readable.
    pub corrupt_record: u64,
    /// Records of a newer schema.
    pub schema_drift: u64,
    /// Writes not replayed (store not isolated).
    pub skipped_unsafe: u64,
    /// Records trimmed from the capture log before they were read.
    pub missing_records: u64,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        // A gap stands for records never read: counted as missing only.
        self.records += u64::from(!matches!(outcome, Outcome::MissingRecords(_)));
        let sent = !matches!(
            outcome,
            Outcome::CorruptRecord(_)
                | Outcome::SchemaDrift(_)
                | Outcome::SkippedUnsafe
                | Outcome::MissingRecords(_)
        );
        self.replayed += u64::from(sent);
        match outcome {
            Outcome::Match => self.matched += 1,
            Outcome::Mismatch(d) => {
                self.mismatched += 1;
                self.differences += d.len() as u64;
            }
            Outcome::CandidateTimeout(_) => self.candidate_timeout += 1,
            Outcome::CandidateError(_) => self.candidate_error += 1,
            Outcome::CandidateGarbage(_) => self.candidate_garbage += 1,
            Outcome::CorruptRecord(_) => self.corrupt_record += 1,
            Outcome::SchemaDrift(_) => self.schema_drift += 1,
            Outcome::SkippedUnsafe => self.skipped_unsafe += 1,
            Outcome::MissingRecords(n) => self.missing_records += n,
        }
    }

    /// Records that did not compare equal (anything but a match or a
    /// deliberately skipped write).
    #[must_use]
    pub fn problems(&self) -> u64 {
        (self.records - self.matched - self.skipped_unsafe) + self.missing_records
    }
}

/// The summary of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Run id (also in every table row).
    pub run_id: String,
    /// Where the capture came from.
    pub source: String,
    /// The candidate's base URL.
    pub candidate: String,
    /// The candidate's lineage, when it told.
    pub candidate_lineage: Option<Lineage>,
    /// Lineages of production seen in the records (by build and config).
    pub production_lineages: Vec<Lineage>,
    /// Seconds the run took.
    pub seconds: f64,
    /// Per endpoint.
    pub endpoints: BTreeMap<String, Counts>,
    /// All endpoints.
    pub total: Counts,
    /// Where the differences were written (`catalog uri` + table), if anywhere.
    pub table: Option<String>,
}

impl Summary {
    /// Counts one result.
    pub fn add(&mut self, c: &Compared) {
        let endpoint = c
            .exchange
            .as_ref()
            .map_or(UNREADABLE, |e| e.request.endpoint.as_str());
        if let Some(e) = &c.exchange
            && !self.production_lineages.contains(&e.lineage)
            && self.production_lineages.len() < 16
        {
            self.production_lineages.push(e.lineage.clone());
        }
        self.endpoints
            .entry(endpoint.to_owned())
            .or_default()
            .add(&c.outcome);
        self.total.add(&c.outcome);
    }

    /// The report as a text table.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replay {} → {} (run {}, {:.1} s)",
            self.source, self.candidate, self.run_id, self.seconds
        );
        if let Some(l) = &self.candidate_lineage {
            let _ = writeln!(
                out,
                "candidate: {} {} build {} config {}",
                l.service, l.version, l.build, l.config_hash
            );
        }
        for l in &self.production_lineages {
            let _ = writeln!(
                out,
                "production: {} {} build {} config {}",
                l.service, l.version, l.build, l.config_hash
            );
        }
        let header = [
            "endpoint", "records", "replayed", "match", "mismatch", "diffs", "timeout", "error",
            "garbage", "corrupt", "drift", "unsafe", "missing",
        ];
        let row = |name: &str, c: &Counts| -> Vec<String> {
            vec![
                name.to_owned(),
                c.records.to_string(),
                c.replayed.to_string(),
                c.matched.to_string(),
                c.mismatched.to_string(),
                c.differences.to_string(),
                c.candidate_timeout.to_string(),
                c.candidate_error.to_string(),
                c.candidate_garbage.to_string(),
                c.corrupt_record.to_string(),
                c.schema_drift.to_string(),
                c.skipped_unsafe.to_string(),
                c.missing_records.to_string(),
            ]
        };
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
        rows.extend(self.endpoints.iter().map(|(n, c)| row(n, c)));
        rows.push(row("total", &self.total));
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, w))| {
                    if i == 0 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        if let Some(t) = &self.table {
            let _ = writeln!(out, "differences: {t}");
        }
        out
    }
}

/// Microseconds since the Unix epoch of a TAI-or-UTC ns timestamp (the
/// day partition does not care about the 37 s between them).
fn micros(ns: i64) -> i64 {
    ns.div_euclid(1_000)
}

/// The diff-table rows of one result (none for a match or a skipped write).
#[must_use]
pub fn rows(
    run_id: &str,
    c: &Compared,
    candidate_lineage: Option<&str>,
    now_us: i64,
) -> Vec<DiffRow> {
    let base = DiffRow {
        run_id: run_id.to_owned(),
        seq: i64::try_from(c.seq).unwrap_or(i64::MAX),
        exchange_id: c.exchange.as_ref().map(|e| e.id.clone()),
        captured_at_us: c
            .exchange
            .as_ref()
            .map_or(now_us, |e| micros(e.started.earliest_ns)),
        endpoint: c
            .exchange
            .as_ref()
            .map_or_else(|| UNREADABLE.to_owned(), |e| e.request.endpoint.clone()),
        method: c.exchange.as_ref().map(|e| e.request.method.clone()),
        path: c.exchange.as_ref().map(|e| e.request.path.clone()),
        outcome: c.outcome.name().to_owned(),
        diff_path: None,
        diff_kind: None,
        original: None,
        candidate: None,
        original_status: c.exchange.as_ref().map(|e| i32::from(e.response.status)),
        candidate_status: c.candidate_status.map(i32::from),
        original_lineage: c
            .exchange
            .as_ref()
            .and_then(|e| serde_json::to_string(&e.lineage).ok()),
        candidate_lineage: candidate_lineage.map(str::to_owned),
        detail: None,
    };
    let text = |v: &Option<serde_json::Value>| v.as_ref().map(ToString::to_string);
    match &c.outcome {
        Outcome::Match | Outcome::SkippedUnsafe => Vec::new(),
        Outcome::Mismatch(differences) => differences
            .iter()
            .map(|d| DiffRow {
                diff_path: Some(d.path.clone()),
                diff_kind: serde_json::to_value(d.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned)),
                original: text(&d.original),
                candidate: text(&d.candidate),
                ..base.clone()
            })
            .collect(),
        Outcome::CandidateTimeout(why)
        | Outcome::CandidateError(why)
        | Outcome::CandidateGarbage(why)
        | Outcome::CorruptRecord(why)
        | Outcome::SchemaDrift(why) => vec![DiffRow {
            detail: Some(why.clone()),
            ..base
        }],
        Outcome::MissingRecords(n) => vec![DiffRow {
            detail: Some(format!(
                "{n} records from sequence {} were trimmed from the capture log before they were read",
                c.seq
            )),
            ..base
        }],
    }
}
