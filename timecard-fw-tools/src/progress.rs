//! A progress bar for long flash operations, drawn on stderr.
//!
//! On a terminal the bar is redrawn in place (`\r`) at most ten times a
//! second; otherwise (`--progress always` into a pipe or log) one line is
//! printed every 10 % so logs stay short. Rate and ETA come from the bytes
//! done so far and the elapsed wall time.

use std::io::Write;
use std::time::{Duration, Instant};

/// Width of the bar in characters.
const BAR_WIDTH: usize = 30;
/// Minimum time between two terminal redraws.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Bytes in human units: `512 B`, `4.0 KiB`, `3.25 MiB`.
#[must_use]
pub fn bytes(n: f64) -> String {
    if n < 1024.0 {
        format!("{n:.0} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{:.2} MiB", n / (1024.0 * 1024.0))
    }
}

/// One progress line: label, bar, percentage, bytes, rate and ETA.
#[must_use]
pub fn line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let bar: String = "#".repeat(filled) + &".".repeat(BAR_WIDTH - filled);
    let secs = elapsed.as_secs_f64();
    // Too early for a meaningful rate: the first block says nothing yet.
    let rate = if secs >= 0.2 { done as f64 / secs } else { 0.0 };
    let eta = if rate > 0.0 && done < total {
        format!("ETA {:.0}s", (total - done) as f64 / rate)
    } else if done >= total {
        format!("in {secs:.1}s")
    } else {
        "ETA --".to_string()
    };
    let rate = if rate > 0.0 {
        format!("{}/s", bytes(rate))
    } else {
        "--/s".to_string()
    };
    format!(
        "{label:<8} [{bar}] {:>3.0}%  {} / {}  {rate}  {eta}",
        fraction * 100.0,
        bytes(done as f64),
        bytes(total as f64),
    )
}

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Redraw in place (stderr is a terminal).
    Terminal,
    /// A line every 10 %.
    Lines,
    /// Nothing.
    Off,
}

/// A progress display for one phase after another.
#[derive(Debug)]
pub struct Bar {
    mode: Mode,
    label: &'static str,
    start: Instant,
    last_draw: Option<Instant>,
    last_decile: Option<u64>,
}

impl Bar {
    /// A display in `mode`.
    #[must_use]
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            label: "",
            start: Instant::now(),
            last_draw: None,
            last_decile: None,
        }
    }

    /// Reports `done` of `total` bytes of the phase `label`.
    pub fn update(&mut self, label: &'static str, done: u64, total: u64) {
        if self.mode == Mode::Off {
            return;
        }
        if label != self.label {
            self.finish_line();
            self.label = label;
            self.start = Instant::now();
            self.last_draw = None;
            self.last_decile = None;
        }
        let text = line(label, done, total, self.start.elapsed());
        let mut err = std::io::stderr().lock();
        match self.mode {
            Mode::Terminal => {
                let due = self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY);
                if due || done >= total {
                    let _ = write!(err, "\r{text}");
                    let _ = err.flush();
                    self.last_draw = Some(Instant::now());
                }
            }
            Mode::Lines => {
                let decile = done.saturating_mul(10) / total.max(1);
                if self.last_decile != Some(decile) {
                    let _ = writeln!(err, "{text}");
                    self.last_decile = Some(decile);
                }
            }
            Mode::Off => {}
        }
    }

    /// Ends a terminal line so later output starts on a fresh one.
    pub fn finish_line(&mut self) {
        if self.mode == Mode::Terminal && self.last_draw.is_some() {
            eprintln!();
            self.last_draw = None;
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish_line();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_fraction_rate_and_eta() {
        let l = line("writing", 1 << 20, 4 << 20, Duration::from_secs(2));
        assert!(l.starts_with("writing  [########"), "{l}");
        assert!(l.contains(" 25%"), "{l}");
        assert!(l.contains("1.00 MiB / 4.00 MiB"), "{l}");
        assert!(l.contains("512.0 KiB/s"), "{l}");
        assert!(l.contains("ETA 6s"), "{l}");
        let done = line("verify", 10, 10, Duration::from_millis(500));
        assert!(done.contains("100%") && done.contains("in 0.5s"), "{done}");
        let start = line("reading", 0, 0, Duration::ZERO);
        assert!(start.contains("100%"), "{start}");
        let early = line("writing", 4096, 1 << 20, Duration::from_millis(3));
        assert!(
            early.contains("--/s") && early.contains("ETA --"),
            "{early}"
        );
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(4096.0), "4.0 KiB");
    }
}
