//! Writing an output file atomically.
//!
//! [`write_atomic`] writes to a temporary file in the destination's
//! directory, syncs it, then moves it into place: with `force` by `rename`
//! (replacing an existing file), without it by `link`, which fails if the
//! destination appeared meanwhile, so an existing file is never clobbered.
//! On any error the temporary file is removed: no partial output is left.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why an output file was not written (exit code 73, `EX_CANTCREAT`).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The destination exists and `--force` was not given.
    #[error("{} already exists; pass --force to replace it", path.display())]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// The destination is a directory.
    #[error("{} is a directory; give a file name for the output", path.display())]
    IsDirectory {
        /// The destination.
        path: PathBuf,
    },
    /// Creating, writing or moving the file failed.
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The destination.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
}

impl OutputError {
    /// Always 73 (`EX_CANTCREAT`).
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        crate::exit::EX_CANTCREAT
    }
}

/// Checks up front that `path` can be written: not a directory, and absent
/// unless `force`. ([`write_atomic`] checks again when it moves the file in.)
///
/// # Errors
/// [`OutputError`].
pub fn check_output(path: &Path, force: bool) -> Result<(), OutputError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(OutputError::IsDirectory {
            path: path.to_owned(),
        }),
        Ok(_) if force => match fs::metadata(path) {
            // A symlink to a directory is refused too.
            Ok(m) if m.is_dir() => Err(OutputError::IsDirectory {
                path: path.to_owned(),
            }),
            _ => Ok(()),
        },
        Ok(_) => Err(OutputError::Exists {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(OutputError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A temporary file's name, removed on drop (after a rename it is already gone).
struct TempFile {
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Distinguishes temporary files of one process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Writes `data` to `path` atomically (see the module doc).
///
/// # Errors
/// [`OutputError`]; nothing is left behind.
pub fn write_atomic(path: &Path, data: &[u8], force: bool) -> Result<(), OutputError> {
    check_output(path, force)?;
    let create = |source| OutputError::Create {
        path: path.to_owned(),
        source,
    };
    let name = path.file_name().ok_or_else(|| {
        create(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (mut file, tmp) = create_temp(dir, name).map_err(create)?;
    file.write_all(data).map_err(create)?;
    file.sync_all().map_err(create)?;
    drop(file);
    if force {
        fs::rename(&tmp.path, path).map_err(create)?;
    } else {
        match fs::hard_link(&tmp.path, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(OutputError::Exists {
                    path: path.to_owned(),
                });
            }
            // Filesystems without hard links: fall back to a checked rename.
            Err(_) => {
                check_output(path, false)?;
                fs::rename(&tmp.path, path).map_err(create)?;
            }
        }
    }
    // After a link the temporary name still exists: drop removes it.
    drop(tmp);
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates a fresh hidden temporary file next to the destination.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(File, TempFile)> {
    let pid = std::process::id();
    let mut last = None;
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{pid}-{n}"));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => {
                return Ok((f, TempFile { path: tmp }));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_refuses_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.img");
        write_atomic(&out, b"one", false).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"one");
        let e = write_atomic(&out, b"two", false).unwrap_err();
        assert!(matches!(e, OutputError::Exists { .. }), "{e}");
        assert!(e.to_string().contains("--force"));
        assert_eq!(fs::read(&out).unwrap(), b"one");
        write_atomic(&out, b"two", true).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"two");
        assert_eq!(entries(dir.path()), ["a.img"]);
    }

    #[test]
    fn failures_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_atomic(dir.path(), b"x", true).unwrap_err();
        assert!(matches!(e, OutputError::IsDirectory { .. }), "{e}");
        let e = write_atomic(&dir.path().join("no/such/dir/a.img"), b"x", false).unwrap_err();
        assert!(matches!(e, OutputError::Create { .. }), "{e}");
        assert_eq!(e.exit_code(), 73);
        assert!(entries(dir.path()).is_empty());
    }
}
