//! `timecard-fw`: inspect, verify, pack and flash OCPC firmware images for
//! the OCP Time Card.
//!
//! The binary is thin: parsing in [`cli`], the offline commands in
//! [`commands`], the device commands in [`device_cmds`]; the image logic is
//! the `timecard_fw_tools` library. Errors print once on stderr as
//! `timecard-fw: <message>` and exit with the code their type carries (see
//! `timecard_fw_tools::exit` for the table).
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod device_cmds;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use timecard_fw_tools::exit::{self, EX_SOFTWARE};

use crate::cli::{Cli, Command};

/// Parses the command line, runs the command and maps errors to exit codes.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = run(&cli, &mut out).and_then(|()| out.flush().map_err(Into::into));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, report) = classify(&e);
            if report {
                eprintln!("timecard-fw: {}", message(&e));
            }
            ExitCode::from(code)
        }
    }
}

/// Runs one subcommand.
fn run(cli: &Cli, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    match &cli.command {
        Command::Inspect(a) => commands::inspect(a, out),
        Command::Verify(a) => commands::verify(a, out),
        Command::Pack(a) => commands::pack(a, out),
        Command::SimBitstream(a) => commands::sim_bitstream_cmd(a, out),
        Command::Flash(a) => device_cmds::flash(a, out),
        Command::Dump(a) => device_cmds::dump(a, out),
        Command::Info(a) => device_cmds::info(a, out),
    }
}

/// The exit code for an error, and whether to print it: the first cause
/// that carries a code decides; a closed stdout (`| head`) is a quiet success.
fn classify(err: &anyhow::Error) -> (u8, bool) {
    for cause in err.chain() {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return (exit::EX_OK, false);
        }
        if let Some(code) = exit::code_of(cause) {
            return (code, true);
        }
    }
    (EX_SOFTWARE, true)
}

/// The error and its causes on one line, skipping a cause whose text the
/// previous message already ends with (errors that print their source too).
fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.ends_with(&text) {
            previous = text;
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        previous = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecard_fw_tools::exit::Failure;

    #[test]
    fn codes_follow_the_first_coded_cause() {
        let e = anyhow::Error::new(Failure::new(74, "read-back differs")).context("flashing");
        assert_eq!(classify(&e), (74, true));
        assert_eq!(message(&e), "flashing: read-back differs");
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(classify(&pipe), (0, false));
        assert_eq!(classify(&anyhow::anyhow!("other")), (1, true));
    }

    #[test]
    fn messages_do_not_repeat_sources() {
        let io = std::io::Error::other("denied");
        let e = timecard_fw_tools::input::InputError::Unreadable {
            path: "/x".into(),
            source: io,
        };
        let e = anyhow::Error::new(e);
        assert_eq!(message(&e), "cannot read /x: denied");
        assert_eq!(classify(&e), (66, true));
    }
}
