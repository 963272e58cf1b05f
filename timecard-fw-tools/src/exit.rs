//! Exit codes of `timecard-fw` (sysexits-style) and which error selects which.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (`inspect`: a header could be parsed, whatever the verdict) |
//! | 1 | runtime error |
//! | 2 | usage error: bad flags or arguments (clap's own errors use 2 as well) |
//! | 3 | not an OCPC image: empty file, shorter than the 16-byte header, or no `OCPC` magic |
//! | 4 | the image is for another board (compatibility check) |
//! | 5 | size check failed: payload truncated or with extra bytes |
//! | 6 | CRC-16 mismatch |
//! | 66 | `EX_NOINPUT`: input file missing, unreadable, a directory or special file, or over the 64 MiB read limit |
//! | 69 | `EX_UNAVAILABLE`: the device is missing, cannot be opened, or does not respond |
//! | 73 | `EX_CANTCREAT`: the output file cannot be created (or exists, without `--force`) |
//! | 74 | `EX_IOERR`: flash I/O or read-back verify failure (reserved for `flash`/`dump`) |
//! | 75 | refused to flash: protected region, or wrong board without `--force` (reserved for `flash`) |
//!
//! Errors carry their code: [`code_of`] finds it for any error of this
//! crate, so a binary walks its error chain and exits with the first code found.

use std::fmt;

/// Success.
pub const EX_OK: u8 = 0;
/// Runtime error.
pub const EX_SOFTWARE: u8 = 1;
/// Usage error (bad flags or arguments).
pub const EX_USAGE: u8 = 2;
/// Not an OCPC image: empty, shorter than a header, or no magic.
pub const EX_NOT_IMAGE: u8 = 3;
/// The image is built for another board.
pub const EX_INCOMPATIBLE: u8 = 4;
/// The header's payload size disagrees with the file.
pub const EX_SIZE: u8 = 5;
/// The payload's CRC-16 disagrees with the header.
pub const EX_CRC: u8 = 6;
/// An input file is missing or unreadable (`EX_NOINPUT` in sysexits.h).
pub const EX_NOINPUT: u8 = 66;
/// The device is missing or dead (`EX_UNAVAILABLE`).
pub const EX_UNAVAILABLE: u8 = 69;
/// An output file cannot be created (`EX_CANTCREAT`).
pub const EX_CANTCREAT: u8 = 73;
/// Flash I/O or read-back verify failure (`EX_IOERR`); reserved for `flash` and `dump`.
pub const EX_IOERR: u8 = 74;
/// Refused to flash (protected region, wrong board without `--force`); reserved for `flash`.
pub const EX_REFUSED: u8 = 75;

/// The exit code table, as `--help` prints it.
pub const HELP_TABLE: &str = "\
Exit codes:
  0    success (inspect: the header could be parsed, whatever the verdict)
  1    runtime error
  2    usage error (bad flags or arguments)
  3    not an OCPC image (empty file, shorter than the 16-byte header, no OCPC magic)
  4    the image is for another board (compatibility check)
  5    size check failed (payload truncated, or extra bytes after it)
  6    CRC-16 mismatch
  66   input file missing, unreadable, a directory or special file, or over 64 MiB (EX_NOINPUT)
  69   the device is missing, cannot be opened, or does not respond (EX_UNAVAILABLE)
  73   cannot create the output file, or it exists and --force was not given (EX_CANTCREAT)
  74   flash I/O or read-back verify failure (EX_IOERR)
  75   refused to flash (protected region, or wrong board without --force)";

/// A mistake in the command line that clap cannot see (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error with an explicit exit code, for callers whose failure has no
/// dedicated type (e.g. [`EX_IOERR`] or [`EX_REFUSED`] from device commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Process exit code.
    pub code: u8,
    /// One-line message.
    pub message: String,
}

impl Failure {
    /// An error that exits with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code an error of this crate (or a firmware check error) selects,
/// or `None` for a foreign error.
#[must_use]
pub fn code_of(err: &(dyn std::error::Error + 'static)) -> Option<u8> {
    use timecard_hw::firmware::ImageError;
    if err.is::<UsageError>() {
        return Some(EX_USAGE);
    }
    if let Some(e) = err.downcast_ref::<Failure>() {
        return Some(e.code);
    }
    if let Some(e) = err.downcast_ref::<crate::input::InputError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = err.downcast_ref::<crate::check::CheckFailed>() {
        return Some(image_error_code(&e.error));
    }
    if let Some(e) = err.downcast_ref::<ImageError>() {
        return Some(image_error_code(e));
    }
    if let Some(e) = err.downcast_ref::<crate::output::OutputError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = err.downcast_ref::<crate::pack::PackError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = err.downcast_ref::<crate::device::DeviceError>() {
        return Some(e.exit_code());
    }
    None
}

/// The exit code for a failed `ptp_ocp` image check.
#[must_use]
pub const fn image_error_code(err: &timecard_hw::firmware::ImageError) -> u8 {
    use timecard_hw::firmware::ImageError;
    match err {
        ImageError::TooShort { .. } | ImageError::NoHeader => EX_NOT_IMAGE,
        ImageError::Incompatible { .. } => EX_INCOMPATIBLE,
        ImageError::SizeMismatch { .. } | ImageError::PayloadTooLarge { .. } => EX_SIZE,
        ImageError::CrcMismatch { .. } => EX_CRC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecard_hw::firmware::ImageError;
    use timecard_hw::pci::Board;

    #[test]
    fn image_errors_map_in_check_order() {
        let codes = [
            ImageError::TooShort { len: 0 },
            ImageError::NoHeader,
            ImageError::Incompatible {
                image: Board::Meta.id(),
                target: Board::Celestica.id(),
            },
            ImageError::SizeMismatch {
                header: 1,
                actual: 2,
            },
            ImageError::PayloadTooLarge { len: 0 },
            ImageError::CrcMismatch {
                header: 1,
                computed: 2,
            },
        ]
        .map(|e| code_of(&e).unwrap());
        assert_eq!(codes, [3, 3, 4, 5, 5, 6]);
    }

    #[test]
    fn explicit_codes_and_foreign_errors() {
        assert_eq!(code_of(&UsageError("x".into())), Some(EX_USAGE));
        assert_eq!(code_of(&Failure::new(EX_IOERR, "read-back")), Some(74));
        assert_eq!(code_of(&std::io::Error::other("x")), None);
    }

    #[test]
    fn help_table_lists_every_code() {
        for code in [
            EX_OK,
            EX_SOFTWARE,
            EX_USAGE,
            EX_NOT_IMAGE,
            EX_INCOMPATIBLE,
            EX_SIZE,
            EX_CRC,
            EX_NOINPUT,
            EX_UNAVAILABLE,
            EX_CANTCREAT,
            EX_IOERR,
            EX_REFUSED,
        ] {
            assert!(
                HELP_TABLE.contains(&format!("\n  {code:<4} ")),
                "code {code} missing from the help table"
            );
        }
    }
}
