//! `verify`: the checks `ptp_ocp`'s devlink flash makes, one by one.
//!
//! The driver checks, in order: the `OCPC` magic, the vendor/device against
//! the card being flashed, the payload size, the CRC-16. [`VerifyReport::new`]
//! runs [`timecard_hw::firmware::verify`] and lays its outcome out per check:
//! passed, failed (with the driver's words), skipped (compatibility without a
//! target) or not run (after a failure). [`VerifyReport::result`] turns it
//! into a [`CheckFailed`] error whose exit code ([`crate::exit::image_error_code`])
//! says which check failed.

use std::io::{self, Write};

use serde::Serialize;
use timecard_hw::firmware::{self, ImageError, ImageHeader};
use timecard_hw::pci::{Board, PciId};

use crate::exit::{EX_OK, image_error_code};
use crate::inspect::board_name;
use crate::parse::board_key;

/// The card an image is checked against, and where that came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// PCI ID, `vvvv:dddd`.
    #[serde(serialize_with = "ser_display")]
    pub pci_id: PciId,
    /// Board short name, `null` if unknown.
    pub board: Option<&'static str>,
    /// Board full name or `unknown device`.
    pub board_name: &'static str,
    /// Where the target came from: `--device sim:/x`, `--board meta`, `--pci-id …`.
    pub from: String,
    /// For a card: the firmware it runs (`fw 1.20`, `loader 2.0`).
    pub running_firmware: Option<String>,
}

impl Target {
    /// A target with this PCI ID, described as coming `from` somewhere.
    #[must_use]
    pub fn new(pci_id: PciId, from: impl Into<String>) -> Self {
        Self {
            pci_id,
            board: Board::from_id(pci_id).map(board_key),
            board_name: board_name(pci_id),
            from: from.into(),
            running_firmware: None,
        }
    }

    /// The same target, noting the firmware the card runs.
    #[must_use]
    pub fn with_running_firmware(mut self, firmware: impl Into<String>) -> Self {
        self.running_firmware = Some(firmware.into());
        self
    }
}

/// Serializes with `Display`.
fn ser_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One of the driver's checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// `OCPC` magic (and at least a header's worth of bytes).
    Magic,
    /// Vendor/device against the target card.
    Compatibility,
    /// Header size field against the payload length.
    Size,
    /// CRC-16 of the payload against the header.
    Crc,
}

impl Check {
    /// All checks in the driver's order.
    pub const ORDER: [Check; 4] = [Check::Magic, Check::Compatibility, Check::Size, Check::Crc];

    /// Lower-case name, as in JSON.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Check::Magic => "magic",
            Check::Compatibility => "compatibility",
            Check::Size => "size",
            Check::Crc => "crc",
        }
    }

    /// The check an error comes from.
    #[must_use]
    pub const fn of(err: &ImageError) -> Check {
        match err {
            ImageError::TooShort { .. } | ImageError::NoHeader => Check::Magic,
            ImageError::Incompatible { .. } => Check::Compatibility,
            ImageError::SizeMismatch { .. } | ImageError::PayloadTooLarge { .. } => Check::Size,
            ImageError::CrcMismatch { .. } => Check::Crc,
        }
    }
}

/// How a check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Passed.
    Ok,
    /// Failed: the image would be refused.
    Fail,
    /// Not applicable (compatibility without a target).
    Skipped,
    /// Not reached: an earlier check failed, and the driver stops there.
    NotRun,
}

impl Status {
    /// Word for the human table.
    #[must_use]
    pub const fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
            Status::NotRun => "not run",
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Which check.
    pub check: Check,
    /// How it went.
    pub status: Status,
    /// What it found (the driver's message for a failure).
    pub detail: String,
}

/// Every check's outcome for one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The file, as named on the command line.
    pub file: String,
    /// The card checked against, if any.
    pub target: Option<Target>,
    /// The checks in the driver's order.
    pub checks: Vec<CheckResult>,
    /// Whether every check that ran passed.
    pub valid: bool,
    /// One-line verdict.
    pub verdict: String,
    /// The exit code `timecard-fw verify` uses for this outcome.
    pub exit_code: u8,
    /// The header, when it could be parsed.
    #[serde(skip)]
    pub header: Option<ImageHeader>,
    /// The first failing check's error.
    #[serde(skip)]
    pub error: Option<ImageError>,
}

/// An image failed a check: the error names the file and the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {error}")]
pub struct CheckFailed {
    /// The file, as named on the command line.
    pub file: String,
    /// The driver's reason.
    pub error: ImageError,
}

impl CheckFailed {
    /// The exit code for this failure (3 to 6).
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        image_error_code(&self.error)
    }
}

impl VerifyReport {
    /// Runs the driver's checks on `image` (named `file`) against `target`.
    #[must_use]
    pub fn new(file: &str, image: &[u8], target: Option<Target>) -> Self {
        let result = firmware::verify(image, target.as_ref().map(|t| t.pci_id));
        let header = ImageHeader::parse(image).ok();
        let body_len = firmware::payload(image).len();
        let failed = result.as_ref().err().map(Check::of);
        let mut reached = true;
        let checks = Check::ORDER
            .into_iter()
            .map(|check| {
                let (status, detail) = if !reached {
                    (
                        Status::NotRun,
                        "not run: an earlier check failed".to_owned(),
                    )
                } else if failed == Some(check) {
                    reached = false;
                    let e = result
                        .as_ref()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    (Status::Fail, e)
                } else {
                    pass_detail(check, header.as_ref(), body_len, target.as_ref())
                };
                CheckResult {
                    check,
                    status,
                    detail,
                }
            })
            .collect();
        let (valid, verdict, error, exit_code) = match &result {
            Ok(h) => {
                let verdict = match &target {
                    Some(t) => format!(
                        "valid: ptp_ocp would accept this image for {} ({})",
                        t.board_name, t.pci_id
                    ),
                    None => format!(
                        "{} (compatibility not checked: no target card given)",
                        crate::inspect::valid_verdict(h.id())
                    ),
                };
                (true, verdict, None, EX_OK)
            }
            Err(e) => (
                false,
                format!("invalid: {e}"),
                Some(e.clone()),
                image_error_code(e),
            ),
        };
        Self {
            file: file.to_owned(),
            target,
            checks,
            valid,
            verdict,
            exit_code,
            header: result.ok().or(header),
            error,
        }
    }

    /// The header if every check passed, else the first failure.
    ///
    /// # Errors
    /// [`CheckFailed`] naming the file and the failed check.
    pub fn result(&self) -> Result<ImageHeader, CheckFailed> {
        match (&self.error, self.header) {
            (None, Some(h)) => Ok(h),
            (Some(e), _) => Err(CheckFailed {
                file: self.file.clone(),
                error: e.clone(),
            }),
            // verify() succeeded, so the header parsed; unreachable in practice.
            (None, None) => Err(CheckFailed {
                file: self.file.clone(),
                error: ImageError::NoHeader,
            }),
        }
    }

    /// Writes the aligned human-readable form.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        let target = match &self.target {
            Some(t) => {
                let mut line = format!("{} ({}), from {}", t.board_name, t.pci_id, t.from);
                if let Some(fw) = &t.running_firmware {
                    line.push_str(&format!(", running {fw}"));
                }
                line
            }
            None => "none: the compatibility check is skipped (give --device, --board or --pci-id)"
                .to_owned(),
        };
        writeln!(out, "image    {}", self.file)?;
        writeln!(out, "target   {target}")?;
        let name_w = Check::ORDER
            .iter()
            .map(|c| c.name().len())
            .max()
            .unwrap_or(0);
        let status_w = "not run".len();
        for c in &self.checks {
            writeln!(
                out,
                "  {:<name_w$}  {:<status_w$}  {}",
                c.check.name(),
                c.status.word(),
                c.detail
            )?;
        }
        writeln!(out, "verdict  {}", self.verdict)
    }
}

/// What a passed (or skipped) check says.
fn pass_detail(
    check: Check,
    header: Option<&ImageHeader>,
    body_len: usize,
    target: Option<&Target>,
) -> (Status, String) {
    let Some(h) = header else {
        return (Status::Ok, String::new());
    };
    let image_for = format!("{} ({})", h.id(), board_name(h.id()));
    match check {
        Check::Magic => (Status::Ok, "OCPC header present".to_owned()),
        Check::Compatibility => match target {
            Some(_) => (
                Status::Ok,
                format!("image is for {image_for}, as is the target"),
            ),
            None => (
                Status::Skipped,
                format!("no target card given; image is for {image_for}"),
            ),
        },
        Check::Size => (
            Status::Ok,
            format!("payload is {body_len} bytes, as the header says"),
        ),
        Check::Crc => (
            Status::Ok,
            format!("CRC-16 0x{:04x} matches the payload", h.crc),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(r: &VerifyReport) -> Vec<Status> {
        r.checks.iter().map(|c| c.status).collect()
    }

    #[test]
    fn passes_and_skips() {
        let img = firmware::pack(b"bits", Board::Meta.id(), 0).unwrap();
        let r = VerifyReport::new("a.img", &img, None);
        assert!(r.valid);
        assert_eq!(r.exit_code, 0);
        assert_eq!(
            statuses(&r),
            [Status::Ok, Status::Skipped, Status::Ok, Status::Ok]
        );
        assert!(r.verdict.contains("compatibility not checked"));
        assert_eq!(r.result().unwrap().image_size, 4);

        let t = Target::new(Board::Meta.id(), "--board meta");
        let r = VerifyReport::new("a.img", &img, Some(t));
        assert_eq!(statuses(&r), [Status::Ok; 4]);
        assert!(r.verdict.contains("Meta OCP Time Card (1d9b:0400)"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["target"]["pci_id"], "1d9b:0400");
        assert_eq!(json["target"]["board"], "meta");
        assert_eq!(json["checks"][1]["check"], "compatibility");
        assert_eq!(json["checks"][1]["status"], "ok");
    }

    #[test]
    fn stops_at_the_first_failure_with_its_code() {
        let img = firmware::pack(b"bits", Board::Meta.id(), 0).unwrap();
        let t = Target::new(Board::Celestica.id(), "--board celestica");
        let r = VerifyReport::new("a.img", &img, Some(t));
        assert_eq!(
            statuses(&r),
            [Status::Ok, Status::Fail, Status::NotRun, Status::NotRun]
        );
        assert_eq!(r.exit_code, 4);
        let e = r.result().unwrap_err();
        assert_eq!(e.exit_code(), 4);
        assert!(
            e.to_string()
                .starts_with("a.img: Firmware image compatibility check failed")
        );

        let r = VerifyReport::new("b.img", b"OCPC", None);
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.checks[0].status, Status::Fail);
        assert_eq!(r.checks[1].status, Status::NotRun);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][3]["status"], "not-run");
    }
}
