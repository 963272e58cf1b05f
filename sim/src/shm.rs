//! The simulated card as a shared-memory file.
//!
//! `timecard sim` creates the file; any process that maps it (the driver's
//! `sim:PATH` backend, a control command, a test) runs the same register
//! semantics on the same state, serialised by a lock word in the header.
//!
//! Layout (all native-endian, page-aligned sections):
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 4096 | [`Header`]: magic `TCSIMSHM`, layout version, section sizes, lock |
//! | 4096 | `core_len` | [`Core`]: time base and [`CardState`](crate::card::CardState) |
//! | `flash_offset` | 32 MiB | SPI flash cells (stored inverted; sparse when erased) |

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::Core;
use crate::card::FLASH_LEN;

/// File magic.
pub const MAGIC: [u8; 8] = *b"TCSIMSHM";
/// Layout version; bump when [`Core`] changes shape.
pub const LAYOUT_VERSION: u32 = 2;
const PAGE: usize = 4096;

/// Header at the start of the file.
#[repr(C)]
pub struct Header {
    magic: [u8; 8],
    version: u32,
    core_len: u32,
    flash_offset: u64,
    flash_len: u64,
    lock: AtomicU32,
    lock_owner: AtomicI32,
}

/// Why a simulator file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// The file could not be opened, sized or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a simulator file of this build.
    #[error(
        "{path} is not a timecard simulator file of this version ({reason}); start one with `timecard sim --bar {path}`"
    )]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
}

fn core_len() -> usize {
    std::mem::size_of::<Core>().next_multiple_of(PAGE)
}

fn file_len() -> usize {
    PAGE + core_len() + FLASH_LEN
}

/// A mapped simulator file.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    path: PathBuf,
    /// This process's id, recorded as the lock owner. Taken once at mapping
    /// time (`getpid` is a system call, and a flash tool takes the lock once
    /// per register access); a mapping is not meant to be used across `fork`.
    pid: i32,
}

// SAFETY: the mapping is only reached through `lock()`, which serialises all
// access to the mutable sections across threads and processes.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

/// Wraps an OS error with the file it concerns.
fn io_error(path: &Path) -> impl Fn(io::Error) -> ShmError + Copy + '_ {
    move |source| ShmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Mapping {
    /// Creates (or truncates) the file at `path` and initialises it with `core`.
    ///
    /// # Errors
    /// I/O errors with the path.
    pub fn create(path: &Path, core: &Core) -> Result<Self, ShmError> {
        let io_err = io_error(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        file.set_len(file_len() as u64).map_err(io_err)?;
        let map = Self::map(&file, path)?;
        // SAFETY: the file was just created and sized; nobody else has a valid
        // header yet, so writing the sections without the lock is exclusive.
        unsafe {
            map.core_ptr().write(*core);
            map.header_ptr().write(Header {
                magic: MAGIC,
                version: LAYOUT_VERSION,
                core_len: core_len() as u32,
                flash_offset: (PAGE + core_len()) as u64,
                flash_len: FLASH_LEN as u64,
                lock: AtomicU32::new(0),
                lock_owner: AtomicI32::new(0),
            });
        }
        Ok(map)
    }

    /// Opens an existing simulator file.
    ///
    /// # Errors
    /// I/O errors, or [`ShmError::BadFile`] when the header does not match this build.
    pub fn open(path: &Path) -> Result<Self, ShmError> {
        let io_err = io_error(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let bad = |reason: String| ShmError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        if len != file_len() as u64 {
            return Err(bad(format!("size {len}, expected {}", file_len())));
        }
        let map = Self::map(&file, path)?;
        // SAFETY: the mapping is at least one page, so the header fields are in bounds;
        // magic and version are plain integers readable in any state.
        let (magic, version, cl, fo, fl) = unsafe {
            let h = map.header_ptr();
            (
                (*h).magic,
                (*h).version,
                (*h).core_len,
                (*h).flash_offset,
                (*h).flash_len,
            )
        };
        if magic != MAGIC {
            return Err(bad("bad magic".into()));
        }
        if version != LAYOUT_VERSION
            || cl as usize != core_len()
            || fo as usize != PAGE + core_len()
            || fl as usize != FLASH_LEN
        {
            return Err(bad(format!(
                "layout version {version}, this build speaks {LAYOUT_VERSION}"
            )));
        }
        Ok(map)
    }

    fn map(file: &File, path: &Path) -> Result<Self, ShmError> {
        let len = file_len();
        // SAFETY: mapping a regular file we opened read-write, shared, whole length.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io_error(path)(io::Error::last_os_error()));
        }
        Ok(Self {
            base: NonNull::new(ptr.cast()).expect("mmap returned a non-null pointer"),
            len,
            path: path.to_path_buf(),
            pid: std::process::id() as i32,
        })
    }

    /// The file this mapping came from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn header_ptr(&self) -> *mut Header {
        self.base.as_ptr().cast()
    }

    fn core_ptr(&self) -> *mut Core {
        // SAFETY: PAGE is within the mapping, which is longer than PAGE + core_len.
        unsafe { self.base.as_ptr().add(PAGE).cast() }
    }

    fn header(&self) -> &Header {
        // SAFETY: the header lies in the mapping; its shared fields are atomics.
        unsafe { &*self.header_ptr() }
    }

    /// Runs `f` with exclusive access to the core and the flash cells.
    pub fn with<R>(&self, f: impl FnOnce(&mut Core, &mut [u8]) -> R) -> R {
        let guard = LockGuard::acquire(self.header(), self.pid);
        // SAFETY: the lock gives this thread exclusive access to the core and flash
        // sections until `guard` drops; both lie within the mapping.
        let (core, flash) = unsafe {
            (
                &mut *self.core_ptr(),
                std::slice::from_raw_parts_mut(
                    self.base.as_ptr().add(PAGE + core_len()),
                    FLASH_LEN,
                ),
            )
        };
        let r = f(core, flash);
        drop(guard);
        r
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; nothing borrows the mapping now.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Cross-process spin lock with dead-owner recovery.
struct LockGuard<'a> {
    header: &'a Header,
}

impl<'a> LockGuard<'a> {
    /// Takes the lock for process `me`. The uncontended path is one
    /// compare-and-swap and one store: no system call, no clock read.
    fn acquire(header: &'a Header, me: i32) -> Self {
        let mut start = None;
        let mut spins = 0u32;
        loop {
            if header
                .lock
                .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                header.lock_owner.store(me, Ordering::Relaxed);
                return Self { header };
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
                continue;
            }
            std::thread::yield_now();
            if start.get_or_insert_with(Instant::now).elapsed() > Duration::from_millis(500) {
                let owner = header.lock_owner.load(Ordering::Relaxed);
                if owner > 0 && owner != me && !process_alive(owner) {
                    // The holder died mid-update; take the lock over. The card state
                    // is plain data, so the worst case is one half-applied register write.
                    header.lock_owner.store(me, Ordering::Relaxed);
                    return Self { header };
                }
            }
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.header.lock.store(0, Ordering::Release);
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
