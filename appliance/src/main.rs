//! `timecard`: the operator's entry point for an OCP Time Card.
//!
//! Subcommands: `list` (cards on the PCI bus), `status` (one card, once),
//! `watch` (live, with the driver's supervisor), `sim` (a simulated card as
//! its own process, its faults and ground truth) and `up` (the appliance in
//! one process). The binary is thin: parsing in [`cli`], one module per
//! subcommand in [`cmd`], and the pieces they share beside them.
//!
//! Exit codes are described in [`exit`]: 0 ok, 1 runtime error, 2 usage,
//! 69 device missing or dead.
#![deny(unsafe_code)]

mod cli;
mod cmd;
mod dashboard;
mod device;
mod duration;
mod exit;
mod live;
mod metrics;
mod render;
mod signals;
mod simulator;

use std::process::ExitCode;

/// Parses the command line, sets up logging and Ctrl-C, runs the command and maps errors to exit codes.
fn main() -> ExitCode {
    let cli: cli::Cli = operate::config::parse();
    if let Err(e) = cli.log.init("warn") {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = signals::install() {
        tracing::warn!(error = %e, "cannot install the Ctrl-C handler; Ctrl-C will end the process abruptly");
    }
    let stdout = std::io::stdout();
    let result = cmd::run(cli, &mut stdout.lock());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let outcome = exit::classify(&e);
            if outcome.report {
                eprintln!("error: {}", exit::message(&e));
            }
            if outcome.code == exit::EX_USAGE {
                eprintln!("\nFor more information, try '--help'.");
            }
            ExitCode::from(outcome.code)
        }
    }
}
