//! Mapping the shared file: read-only for clients, read-write for the daemon.
//!
//! All `unsafe` of the crate that concerns memory mapping is here.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use crate::layout::{SIZE, Shared};
use crate::truetime::Error;

/// A mapping of an fbclock file (or an in-memory one for tests).
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<Shared>,
    mapped: bool,
}

// SAFETY: `Shared` consists of atomics and immutable header fields; sharing
// references between threads is sound, and the mapping lives as long as self.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `path` read-only and checks its header.
    ///
    /// # Errors
    /// [`Error::Map`] with errno, or [`Error::BadFile`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| Error::Map(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let len = file
            .metadata()
            .map_err(|e| Error::Map(e.raw_os_error().unwrap_or(libc::EIO)))?
            .len();
        if len < u64::from(SIZE) {
            return Err(Error::BadFile("file shorter than the fbclock layout"));
        }
        let m = Self::map(&file, libc::PROT_READ)
            .map_err(|e| Error::Map(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if !m.shared().header_ok() {
            return Err(Error::BadFile(
                "magic, version or size do not match fbclock layout 1",
            ));
        }
        Ok(m)
    }

    /// Creates (or replaces) `path` world-readable and maps it read-write for the daemon.
    ///
    /// # Errors
    /// The OS error, with the path.
    pub fn create(path: &Path, clock_id: u32) -> io::Result<Self> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(with_path)?;
        }
        // Write a fresh file aside and rename it in, so readers never see a half header.
        let tmp: PathBuf = path.with_extension("tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(with_path)?;
        file.set_len(u64::from(SIZE)).map_err(with_path)?;
        let m = Self::map(&file, libc::PROT_READ | libc::PROT_WRITE).map_err(with_path)?;
        // SAFETY: the mapping is SIZE bytes, exclusively ours until renamed into place.
        unsafe { m.ptr.as_ptr().write(Shared::new(clock_id)) };
        std::fs::rename(&tmp, path).map_err(with_path)?;
        Ok(m)
    }

    /// An in-memory record for tests and simulations (no file).
    #[must_use]
    pub fn in_memory(clock_id: u32) -> Self {
        let b = Box::new(Shared::new(clock_id));
        Self {
            ptr: NonNull::from(Box::leak(b)),
            mapped: false,
        }
    }

    fn map(file: &std::fs::File, prot: i32) -> io::Result<Self> {
        // SAFETY: mapping SIZE bytes of a regular file we hold open; MAP_SHARED so
        // the daemon's writes are visible to every reader.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE as usize,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            mapped: true,
        })
    }

    /// The shared structure.
    #[must_use]
    pub fn shared(&self) -> &Shared {
        // SAFETY: ptr points at a live, suitably aligned (page or Box) Shared for
        // the lifetime of self; all mutable state in it is atomic.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: ptr/SIZE are what mmap returned; no references outlive self.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), SIZE as usize) };
        } else {
            // SAFETY: ptr came from Box::leak in `in_memory` and is freed once.
            drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
        }
    }
}
