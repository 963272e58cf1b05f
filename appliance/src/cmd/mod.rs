//! The subcommands, one module each, and the dispatch from the parsed command line.

pub mod chrony;
pub mod config;
pub mod doctor;
pub mod linearizability;
pub mod list;
pub mod sim;
pub mod status;
pub mod up;
pub mod watch;

use std::io::{IsTerminal as _, Write};

use anyhow::Result;
use timecard_driver::DeviceSpec;

use crate::cli::{Cli, Command};
use crate::exit::UsageError;

/// Runs the parsed command, writing its output to `out`.
///
/// # Errors
/// Whatever the command fails with; [`crate::exit::classify`] picks the exit code.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    let device = cli.device;
    let terminal = std::io::stdout().is_terminal();
    match cli.command {
        Command::List(args) => {
            refuse_device(device.as_ref(), "list", "it scans the PCI bus")?;
            list::run(&timecard_driver::discover::Sysfs::system(), &args, out)
        }
        Command::Chrony(args) => chrony::run(&device.unwrap_or(DeviceSpec::Embedded), &args, out),
        Command::Status(args) => status::run(&device.unwrap_or(DeviceSpec::Embedded), &args, out),
        Command::Watch(args) => watch::run(
            &device.unwrap_or(DeviceSpec::Embedded),
            &args,
            terminal,
            out,
        ),
        Command::Sim(args) => {
            refuse_device(
                device.as_ref(),
                "sim",
                "the simulator file is given with --bar PATH",
            )?;
            sim::run(args, out)
        }
        Command::Up(args) => up::run(device.as_ref(), &args, terminal, out),
        Command::Config(crate::cli::ConfigCommand::Check(args)) => {
            refuse_device(device.as_ref(), "config", "it checks files")?;
            config::run(&args, out)
        }
        Command::Doctor(args) => {
            refuse_device(
                device.as_ref(),
                "doctor",
                "it checks the whole machine; `--card DEV` compares a card's clock with the system's",
            )?;
            doctor::run(&args, out)
        }
        Command::Linearizability(args) => {
            refuse_device(
                device.as_ref(),
                "linearizability",
                "it simulates its own card",
            )?;
            linearizability::run(&args, out)
        }
        Command::Counter(cmd) => {
            refuse_device(
                device.as_ref(),
                "counter",
                "the counter does not open a card",
            )?;
            service_runtime()?.block_on(counter::cli::run(cmd))
        }
        Command::Notify(cmd) => {
            refuse_device(
                device.as_ref(),
                "notify",
                "the notification pipeline does not open a card",
            )?;
            service_runtime()?.block_on(notify::cli::run(cmd))
        }
    }
}

/// The runtime a service command runs on.
fn service_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// A usage error for `--device` given to a command that does not open a device.
fn refuse_device(device: Option<&DeviceSpec>, command: &str, why: &str) -> Result<()> {
    match device {
        Some(d) => Err(UsageError(format!(
            "--device {d} does not apply to `timecard {command}`: {why}"
        ))
        .into()),
        None => Ok(()),
    }
}
