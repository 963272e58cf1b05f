//! Ctrl-C and `kill`: SIGINT and SIGTERM ask long-running commands to stop.
//!
//! The handler only sets an atomic flag; loops poll [`stop_requested`]
//! between short sleeps and then clean up normally, so files are removed and
//! the terminal is left tidy. A second signal while the command is shutting
//! down gets the default action and ends the process.

use std::io;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by the signal handler.
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the SIGINT and SIGTERM handlers.
///
/// # Errors
/// The OS error if a handler cannot be registered.
pub fn install() -> io::Result<()> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // First signal: exit the process if the flag is already set (second Ctrl-C).
        signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone())?;
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived.
#[must_use]
pub fn stop_requested() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::SeqCst))
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
