//! Real-time runner: keeps a simulation moving and feeds its GNSS UART.
//!
//! In real-time mode nobody needs to poll the card for it to advance (every
//! access brings it up to date), but the NMEA stream has to leave on time: the
//! runner wakes every few milliseconds, brings the card to now and writes the
//! sentences of any new second to the pseudo-terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Sim;
use crate::pty::GnssPty;

/// A running real-time runner; stops when dropped.
#[derive(Debug)]
pub struct Runner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<GnssPty>>,
}

impl Runner {
    /// Starts a runner thread for `sim`, writing NMEA to `pty` every `tick`.
    #[must_use]
    pub fn spawn(sim: Sim, mut pty: GnssPty, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sim-runner".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let lines = sim.take_nmea();
                    pty.write_sentences(&lines);
                    std::thread::sleep(tick);
                }
                pty
            })
            .expect("spawn runner thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the runner and returns the pty.
    #[must_use]
    pub fn stop(mut self) -> Option<GnssPty> {
        self.halt()
    }

    fn halt(&mut self) -> Option<GnssPty> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}
