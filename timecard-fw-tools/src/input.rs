//! Reading an image or bitstream file safely.
//!
//! [`read_input`] refuses, each with a one-line message naming the file:
//! a missing file, a path through a non-directory, a directory, a special
//! file (FIFO, socket, device: opening one could block or never end), an
//! unreadable file, a file over [`MAX_INPUT_LEN`] (from its metadata, before
//! reading), and an empty file. The read itself is bounded, so a file that
//! grows while it is read cannot exhaust memory.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

/// Largest file any command reads: 64 MiB, twice the card's 32 MiB flash.
pub const MAX_INPUT_LEN: u64 = 64 << 20;

/// What the file is supposed to hold (for messages and exit codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// An `OCPC` firmware image (header + bitstream).
    Image,
    /// A raw FPGA bitstream, to be packed.
    Bitstream,
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputKind::Image => "firmware image",
            InputKind::Bitstream => "bitstream",
        })
    }
}

/// Why an input file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Nothing at that path.
    #[error("{}: no such file", path.display())]
    Missing {
        /// The path as given.
        path: PathBuf,
    },
    /// A component of the path is a file, not a directory.
    #[error("{}: a component of the path is not a directory", path.display())]
    NotADirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// The path is a directory.
    #[error("{} is a directory, not a {kind} file", path.display())]
    IsDirectory {
        /// The path as given.
        path: PathBuf,
        /// What was expected.
        kind: InputKind,
    },
    /// The path is a FIFO, socket or device.
    #[error("{} is a {what}, not a regular {kind} file", path.display())]
    Special {
        /// The path as given.
        path: PathBuf,
        /// What it is instead ("FIFO", "socket", ...).
        what: &'static str,
        /// What was expected.
        kind: InputKind,
    },
    /// Opening or reading failed (permission denied, I/O error).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The path as given.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The file is larger than the read limit.
    #[error(
        "{} is {len} bytes, over the {limit}-byte (64 MiB) limit: too large for a Time Card {kind}",
        path.display()
    )]
    TooLarge {
        /// The path as given.
        path: PathBuf,
        /// Its size (or how much was read before giving up).
        len: u64,
        /// The limit.
        limit: u64,
        /// What was expected.
        kind: InputKind,
    },
    /// The file has no bytes.
    #[error("{} is empty: {}", path.display(), match kind {
        InputKind::Image => "not an OCPC image (no 16-byte header)",
        InputKind::Bitstream => "nothing to pack",
    })]
    Empty {
        /// The path as given.
        path: PathBuf,
        /// What was expected.
        kind: InputKind,
    },
}

impl InputError {
    /// The exit code: 3 for an empty image (it is not an OCPC image), 1 for
    /// an empty bitstream (pack refuses it), otherwise 66 (`EX_NOINPUT`).
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            InputError::Empty {
                kind: InputKind::Image,
                ..
            } => crate::exit::EX_NOT_IMAGE,
            InputError::Empty {
                kind: InputKind::Bitstream,
                ..
            } => crate::exit::EX_SOFTWARE,
            _ => crate::exit::EX_NOINPUT,
        }
    }
}

/// Reads `path` whole, refusing what is not a plausible input (see the module doc).
///
/// # Errors
/// [`InputError`], naming the file.
pub fn read_input(path: &Path, kind: InputKind) -> Result<Vec<u8>, InputError> {
    read_input_limited(path, kind, MAX_INPUT_LEN)
}

/// [`read_input`] with another size limit.
///
/// # Errors
/// [`InputError`], naming the file.
pub fn read_input_limited(path: &Path, kind: InputKind, limit: u64) -> Result<Vec<u8>, InputError> {
    let meta = std::fs::metadata(path).map_err(|e| open_error(path, e))?;
    check_type(path, kind, &meta)?;
    if meta.len() > limit {
        return Err(InputError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
            limit,
            kind,
        });
    }
    let file = File::open(path).map_err(|e| open_error(path, e))?;
    // The path may have been replaced between the two looks: check what was opened.
    let opened = file.metadata().map_err(|e| open_error(path, e))?;
    check_type(path, kind, &opened)?;
    let capacity = usize::try_from(opened.len().min(limit)).unwrap_or(0);
    let mut buf = Vec::with_capacity(capacity);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| InputError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
    let read = buf.len() as u64;
    if read > limit {
        return Err(InputError::TooLarge {
            path: path.to_owned(),
            len: read,
            limit,
            kind,
        });
    }
    if buf.is_empty() {
        return Err(InputError::Empty {
            path: path.to_owned(),
            kind,
        });
    }
    Ok(buf)
}

/// Refuses directories and special files.
fn check_type(path: &Path, kind: InputKind, meta: &std::fs::Metadata) -> Result<(), InputError> {
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(InputError::IsDirectory {
            path: path.to_owned(),
            kind,
        });
    }
    if ft.is_file() {
        return Ok(());
    }
    let what = if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "special file"
    };
    Err(InputError::Special {
        path: path.to_owned(),
        what,
        kind,
    })
}

/// Names the common reasons a path cannot be opened.
fn open_error(path: &Path, e: io::Error) -> InputError {
    let path = path.to_owned();
    match e.kind() {
        io::ErrorKind::NotFound => InputError::Missing { path },
        io::ErrorKind::NotADirectory => InputError::NotADirectory { path },
        _ => InputError::Unreadable { path, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.img");
        let e = read_input(&missing, InputKind::Image).unwrap_err();
        assert!(matches!(e, InputError::Missing { .. }));
        assert!(e.to_string().contains("nope.img: no such file"), "{e}");
        assert_eq!(e.exit_code(), 66);

        let e = read_input(dir.path(), InputKind::Image).unwrap_err();
        assert!(matches!(e, InputError::IsDirectory { .. }), "{e}");
        assert!(e.to_string().contains("is a directory"));

        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let e = read_input(&empty, InputKind::Image).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("empty.img is empty"), "{e}");
        let e = read_input(&empty, InputKind::Bitstream).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("nothing to pack"), "{e}");

        let through = empty.join("x.img");
        let e = read_input(&through, InputKind::Image).unwrap_err();
        assert!(matches!(e, InputError::NotADirectory { .. }), "{e}");

        let e = read_input(Path::new("/dev/null"), InputKind::Image).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
    }

    #[test]
    fn size_limit_is_checked_before_and_while_reading() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.img");
        std::fs::write(&f, [7u8; 100]).unwrap();
        let e = read_input_limited(&f, InputKind::Image, 99).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::TooLarge {
                    len: 100,
                    limit: 99,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            read_input_limited(&f, InputKind::Image, 100).unwrap().len(),
            100
        );
    }
}
