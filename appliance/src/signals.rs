//! Ctrl-C and `kill`: SIGINT and SIGTERM ask long-running commands to stop.
//!
//! The handler only sets an atomic flag (the one thing a signal handler may
//! safely do); loops poll [`stop_requested`] between short sleeps and then
//! clean up normally, so files are removed and the terminal is left tidy.
//! The handler is installed with `SA_RESETHAND`: a second Ctrl-C while the
//! command is shutting down gets the default action and ends the process.
//!
//! This is the crate's only `unsafe` code.
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by the signal handler.
static STOP: AtomicBool = AtomicBool::new(false);

/// The handler: records that a stop was requested.
extern "C" fn on_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT and SIGTERM handlers.
///
/// # Errors
/// The OS error if `sigaction` fails.
pub fn install() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sigaction` is plain data; all-zero is a valid empty value
        // (no flags, empty mask) that is completed below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
        // SAFETY: `action.sa_mask` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&raw mut action.sa_mask) };
        // SAFETY: `action` is fully initialised and outlives the call; the
        // handler is async-signal-safe (one atomic store); the old action is
        // not wanted (null).
        let rc = unsafe { libc::sigaction(signal, &raw const action, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived.
#[must_use]
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps until `until`, waking early (returning `false`) when a stop is requested.
#[must_use]
pub fn sleep_until(until: Instant) -> bool {
    const SLICE: Duration = Duration::from_millis(50);
    loop {
        if stop_requested() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(SLICE));
    }
}
