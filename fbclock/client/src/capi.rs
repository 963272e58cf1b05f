//! C ABI (header: `include/fbclock.h`). Error codes are negative `int`s.

use std::ffi::{CStr, c_char, c_int};

use crate::{Error, FbClock, TrueTime};

/// Success.
pub const FBCLOCK_OK: c_int = 0;
/// The file could not be mapped.
pub const FBCLOCK_E_MAP: c_int = -1;
/// Not an fbclock file of this version.
pub const FBCLOCK_E_BAD_FILE: c_int = -2;
/// No data yet.
pub const FBCLOCK_E_NO_DATA: c_int = -5;
/// WOU saturated or above the cap.
pub const FBCLOCK_E_WOU_TOO_BIG: c_int = -6;
/// Torn reads persisted.
pub const FBCLOCK_E_SEQLOCK: c_int = -8;
/// Data stale.
pub const FBCLOCK_E_STALE: c_int = -9;
/// Bad argument (null pointer, bad path).
pub const FBCLOCK_E_INVALID: c_int = -22;

/// `struct fbclock_truetime` of the header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FbclockTruetime {
    /// Earliest, ns since the epoch of the time scale.
    pub earliest_ns: i64,
    /// Latest.
    pub latest_ns: i64,
}

fn code(e: &Error) -> c_int {
    match e {
        Error::NoData => FBCLOCK_E_NO_DATA,
        Error::Stale { .. } => FBCLOCK_E_STALE,
        Error::WouTooBig { .. } => FBCLOCK_E_WOU_TOO_BIG,
        Error::Seqlock => FBCLOCK_E_SEQLOCK,
        Error::BadFile(_) => FBCLOCK_E_BAD_FILE,
        Error::Map(_) => FBCLOCK_E_MAP,
    }
}

fn put(out: *mut FbclockTruetime, r: Result<TrueTime, Error>) -> c_int {
    if out.is_null() {
        return FBCLOCK_E_INVALID;
    }
    match r {
        Ok(tt) => {
            // SAFETY: `out` is non-null and the caller passes a writable struct.
            unsafe {
                out.write(FbclockTruetime {
                    earliest_ns: tt.earliest_ns,
                    latest_ns: tt.latest_ns,
                });
            }
            FBCLOCK_OK
        }
        Err(e) => code(&e),
    }
}

/// Opens the shared file at `path` (NULL: the default path). Returns a handle
/// or NULL (then `*err`, if not NULL, holds the error code).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `err` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fbclock_open(path: *const c_char, err: *mut c_int) -> *mut FbClock {
    let set = |c: c_int| {
        if !err.is_null() {
            // SAFETY: the caller promises `err` is writable when non-null.
            unsafe { err.write(c) };
        }
    };
    let path = if path.is_null() {
        crate::DEFAULT_PATH.to_owned()
    } else {
        // SAFETY: the caller promises a NUL-terminated string.
        match unsafe { CStr::from_ptr(path) }.to_str() {
            Ok(p) => p.to_owned(),
            Err(_) => {
                set(FBCLOCK_E_INVALID);
                return std::ptr::null_mut();
            }
        }
    };
    match FbClock::open(path) {
        Ok(c) => {
            set(FBCLOCK_OK);
            Box::into_raw(Box::new(c))
        }
        Err(e) => {
            set(code(&e));
            std::ptr::null_mut()
        }
    }
}

/// Closes a handle from `fbclock_open` (NULL is ignored).
///
/// # Safety
/// `clock` came from `fbclock_open` and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fbclock_close(clock: *mut FbClock) {
    if !clock.is_null() {
        // SAFETY: created by Box::into_raw in fbclock_open, closed once.
        drop(unsafe { Box::from_raw(clock) });
    }
}

/// TAI TrueTime now.
///
/// # Safety
/// `clock` is a live handle; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fbclock_gettime(
    clock: *const FbClock,
    out: *mut FbclockTruetime,
) -> c_int {
    // SAFETY: the caller passes a live handle or NULL.
    match unsafe { clock.as_ref() } {
        Some(c) => put(out, c.now()),
        None => FBCLOCK_E_INVALID,
    }
}

/// UTC TrueTime now.
///
/// # Safety
/// As `fbclock_gettime`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fbclock_gettime_utc(
    clock: *const FbClock,
    out: *mut FbclockTruetime,
) -> c_int {
    // SAFETY: the caller passes a live handle or NULL.
    match unsafe { clock.as_ref() } {
        Some(c) => put(out, c.now_utc()),
        None => FBCLOCK_E_INVALID,
    }
}

/// Commit-wait: returns once earliest > `ts_ns` (TAI).
///
/// # Safety
/// As `fbclock_gettime`; `out` may be NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fbclock_commit_wait(
    clock: *const FbClock,
    ts_ns: i64,
    out: *mut FbclockTruetime,
) -> c_int {
    // SAFETY: the caller passes a live handle or NULL.
    let Some(c) = (unsafe { clock.as_ref() }) else {
        return FBCLOCK_E_INVALID;
    };
    match c.commit_wait(ts_ns) {
        Ok(tt) if out.is_null() => {
            let _ = tt;
            FBCLOCK_OK
        }
        r => put(out, r),
    }
}

/// A static description of an error code.
#[unsafe(no_mangle)]
pub extern "C" fn fbclock_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        FBCLOCK_OK => c"ok",
        FBCLOCK_E_MAP => c"cannot map the shared memory file (is fbclockd running?)",
        FBCLOCK_E_BAD_FILE => c"not an fbclock shared memory file of this version",
        FBCLOCK_E_NO_DATA => c"no data: fbclockd has not synchronised yet",
        FBCLOCK_E_WOU_TOO_BIG => c"window of uncertainty too big",
        FBCLOCK_E_SEQLOCK => c"could not read a consistent record",
        FBCLOCK_E_STALE => c"stale data: fbclockd stopped updating",
        FBCLOCK_E_INVALID => c"invalid argument",
        _ => c"unknown error",
    };
    s.as_ptr()
}
