//! A running simulated card: the card (in this process or in a shared-memory
//! file), its GNSS receiver's pseudo-terminal, and the runner thread that
//! feeds NMEA to it in real time.
//!
//! `timecard sim` runs one on its own; `timecard up` runs one as a component.
//! Dropping a [`Simulator`] stops the runner and removes the files it made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use timecard_hw::pci::Board;
use timecard_sim::oscillator::Preset;
use timecard_sim::pty::GnssPty;
use timecard_sim::runner::Runner;
use timecard_sim::{ClockMode, Sim, SimConfig};

use crate::cli::SimParams;

/// How often the runner brings the card up to date and writes NMEA.
const RUNNER_TICK: Duration = Duration::from_millis(20);

/// A simulated card with its GNSS pty and runner; stops and cleans up on drop.
#[derive(Debug)]
pub struct Simulator {
    /// The card.
    sim: Sim,
    /// Feeds the GNSS pty; `None` only while starting and after stopping.
    runner: Option<Runner>,
    /// The pty's slave device.
    tty: PathBuf,
    /// The stable symlink to the tty, if one was made.
    link: Option<PathBuf>,
    /// The shared-memory file, if the card lives in one (removed on drop).
    bar: Option<PathBuf>,
    /// Board model.
    board: Board,
    /// Oscillator preset.
    preset: Preset,
    /// Time mode.
    mode: ClockMode,
}

impl Simulator {
    /// Starts a real-time simulated card made of `params`: in the shared-memory
    /// file `bar` if given (refusing to replace a file that is not a simulator
    /// file), else in this process; with its GNSS pty symlinked at `link` if given.
    ///
    /// # Errors
    /// File, pty or configuration errors, each naming what to fix.
    pub fn start(params: &SimParams, bar: Option<&Path>, link: Option<&Path>) -> Result<Self> {
        let mode = ClockMode::Realtime {
            acceleration: params.acceleration,
        };
        let cfg = SimConfig {
            board: params.board.into(),
            preset: params.preset.into(),
            seed: params.seed,
            mode,
            ttff_s: params.ttff,
            ..SimConfig::default()
        };
        let sim = match bar {
            Some(path) => {
                if path.exists() && Sim::open_file(path).is_err() {
                    bail!(
                        "{} exists and is not a timecard simulator file of this version; \
                         refusing to replace it (remove it, or choose another --bar path)",
                        path.display()
                    );
                }
                Sim::create_file(path, &cfg)
                    .with_context(|| format!("creating the simulator file {}", path.display()))?
            }
            None => Sim::new(&cfg).context("creating the simulator")?,
        };
        // From here on, a failure must not leave the file behind.
        let mut this = Self {
            sim,
            runner: None,
            tty: PathBuf::new(),
            link: None,
            bar: bar.map(Path::to_path_buf),
            board: cfg.board,
            preset: cfg.preset,
            mode,
        };
        let pty = GnssPty::open(link).with_context(|| match link {
            Some(l) => format!(
                "opening a pseudo-terminal for the GNSS receiver, linked at {}",
                l.display()
            ),
            None => "opening a pseudo-terminal for the GNSS receiver".to_owned(),
        })?;
        this.tty = pty.slave_path().to_path_buf();
        this.link = pty.link().map(Path::to_path_buf);
        this.sim
            .set_gnss_pty_path(this.gnss_path())
            .context("recording the GNSS tty in the simulator")?;
        this.runner = Some(Runner::spawn(this.sim.clone(), pty, RUNNER_TICK));
        Ok(this)
    }

    /// The simulator handle.
    #[must_use]
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Where the GNSS receiver's NMEA can be read: the symlink if there is one, else the tty.
    #[must_use]
    pub fn gnss_path(&self) -> &Path {
        self.link.as_deref().unwrap_or(&self.tty)
    }

    /// The pty's slave device (`/dev/pts/N`).
    #[must_use]
    pub fn tty(&self) -> &Path {
        &self.tty
    }

    /// The shared-memory file, if the card lives in one.
    #[must_use]
    pub fn bar(&self) -> Option<&Path> {
        self.bar.as_deref()
    }

    /// One line: board, oscillator, time mode.
    #[must_use]
    pub fn describe(&self) -> String {
        let speed = match self.mode {
            ClockMode::Realtime { acceleration } if (acceleration - 1.0).abs() < f64::EPSILON => {
                "real time".to_owned()
            }
            ClockMode::Realtime { acceleration } => format!("{acceleration}x real time"),
            ClockMode::Manual => "manual clock".to_owned(),
        };
        format!(
            "simulated {} ({} oscillator, {speed})",
            self.board, self.preset
        )
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // Stopping the runner hands back the pty, whose drop removes the link.
        if let Some(runner) = self.runner.take() {
            drop(runner.stop());
        }
        if let Some(bar) = &self.bar
            && let Err(e) = std::fs::remove_file(bar)
        {
            tracing::warn!(path = %bar.display(), error = %e, "could not remove the simulator file");
        }
    }
}
