//! `timecard config check`: validates daemon config files as the daemons
//! will read them, with `FILE:LINE:COL: message` for each problem.
//!
//! ptp-server files go through ptp-server's own loader (serde, unknown
//! fields refused, then its range checks); the other daemons' files are
//! checked by [`operate::config::check`] against the daemon's own flags, the
//! same ones `--config FILE` expands into.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use clap::{Args as _, Command, CommandFactory as _};
use operate::config::Diagnostic;

use crate::cli::{ConfigCheckArgs, Daemon};
use crate::exit::UsageError;

/// Checks every file and prints its problems or `FILE: ok`.
///
/// # Errors
/// A file whose daemon cannot be inferred (a usage error, before any file
/// is read); a file that cannot be read or has a problem (after all files
/// were checked); writing the output failed.
pub fn run(args: &ConfigCheckArgs, out: &mut dyn Write) -> Result<()> {
    let mut daemons = Vec::with_capacity(args.files.len());
    for file in &args.files {
        match args.daemon.or_else(|| daemon_of(file)) {
            Some(d) => daemons.push(d),
            None => {
                return Err(UsageError(format!(
                    "{}: cannot tell which daemon this file is for from its name; \
                     name it ptp-server.toml, fbclockd.toml, counter.toml, notify.toml or \
                     push.toml, or use --for",
                    file.display()
                ))
                .into());
            }
        }
    }
    let mut bad = 0;
    for (file, daemon) in args.files.iter().zip(daemons) {
        let problems = match std::fs::read_to_string(file) {
            Ok(text) => check(daemon, &text),
            Err(e) => {
                writeln!(out, "{}: cannot read: {e}", file.display())?;
                bad += 1;
                continue;
            }
        };
        if problems.is_empty() {
            writeln!(out, "{}: ok", file.display())?;
        } else {
            bad += 1;
            for d in &problems {
                writeln!(out, "{}:{d}", file.display())?;
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} config file(s) have problems", args.files.len());
    }
    Ok(())
}

/// The daemon a file is for, from its name (`ptp-server.toml` …).
fn daemon_of(file: &Path) -> Option<Daemon> {
    match file.file_stem()?.to_str()? {
        "ptp-server" => Some(Daemon::PtpServer),
        "fbclockd" => Some(Daemon::Fbclockd),
        "counter" => Some(Daemon::Counter),
        "notify" => Some(Daemon::Notify),
        "push" => Some(Daemon::Push),
        _ => None,
    }
}

/// Every problem of `text` as `daemon`'s config file.
#[must_use]
pub fn check(daemon: Daemon, text: &str) -> Vec<Diagnostic> {
    // `serve`'s own flags plus the logging flags every daemon takes (global
    // on the daemons' command lines, so `--config` accepts them too).
    let serve = |name: &'static str, augment: fn(Command) -> Command| {
        operate::logging::LogArgs::augment_args(augment(Command::new(name)))
    };
    let cmd = match daemon {
        Daemon::PtpServer => return check_ptp_server(text),
        Daemon::Fbclockd => fbclockd::cli::Args::command(),
        Daemon::Counter => serve(
            "timecard-counter serve",
            counter::cli::ServeArgs::augment_args,
        ),
        Daemon::Notify => serve(
            "timecard-notify serve",
            notify::cli::ServeArgs::augment_args,
        ),
        Daemon::Push => serve("timecard-push serve", push::cli::ServeArgs::augment_args),
    };
    operate::config::check(text, &cmd)
}

/// A ptp-server file through ptp-server's loader. Its range checks name the
/// field in their message but carry no position: the problem is put at the
/// key the message names first (1:1 when it names none in the file).
fn check_ptp_server(text: &str) -> Vec<Diagnostic> {
    let config = match operate::config::deserialize::<ptp_server::config::Config>(text) {
        Ok(c) => c,
        Err(d) => return vec![d],
    };
    let Err(e) = config.validate() else {
        return Vec::new();
    };
    let message = match e {
        ptp_server::config::ConfigError::Invalid(m) => m,
        other => other.to_string(),
    };
    let (line, column) = operate::config::keys(text)
        .into_iter()
        .filter_map(|(key, line, column)| {
            let found = message
                .find(key.as_str())
                .or_else(|| message.find(&key.replace('_', " ")))?;
            Some((found, line, column))
        })
        .min()
        .map_or((1, 1), |(_, line, column)| (line, column));
    vec![Diagnostic {
        line,
        column,
        message,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(d: &[Diagnostic]) -> Vec<(usize, usize)> {
        d.iter().map(|d| (d.line, d.column)).collect()
    }

    #[test]
    fn daemons_come_from_file_names() {
        assert_eq!(
            daemon_of(Path::new("/etc/timecard/ptp-server.toml")),
            Some(Daemon::PtpServer)
        );
        assert_eq!(daemon_of(Path::new("push.toml")), Some(Daemon::Push));
        assert_eq!(daemon_of(Path::new("other.toml")), None);
    }

    #[test]
    fn ptp_server_problems_land_on_their_key() {
        assert!(check(Daemon::PtpServer, "workers = 4\ndscp = 46\n").is_empty());
        let d = check(Daemon::PtpServer, "workers = 4\nwrokers = 5\n");
        assert_eq!(at(&d), [(2, 1)]);
        assert!(d[0].message.contains("unknown field `wrokers`"), "{d:?}");
        let d = check(Daemon::PtpServer, "workers = 4\n\ndscp = 99\n");
        assert_eq!(at(&d), [(3, 1)]);
        assert_eq!(d[0].message, "dscp 99 is not in 0..=63");
        let d = check(Daemon::PtpServer, "clock_identity = \"xyz\"\n");
        assert_eq!(at(&d), [(1, 1)]);
        let d = check(
            Daemon::PtpServer,
            "workers = 2\ntimestamping = \"hardware\"\n",
        );
        assert_eq!(at(&d), [(2, 1)], "{d:?}");
    }

    #[test]
    fn every_flag_daemon_checks_against_its_own_flags() {
        for (daemon, good, bad) in [
            (
                Daemon::Fbclockd,
                "log-level = \"info\"\n",
                "interval = \"1h\"\n",
            ),
            (
                Daemon::Counter,
                "grpc = \"127.0.0.1:7340\"\n",
                "grpc = \"nowhere\"\n",
            ),
            (
                Daemon::Notify,
                "http = \"127.0.0.1:7351\"\n",
                "htp = \"127.0.0.1:1\"\n",
            ),
            (
                Daemon::Push,
                "log-format = \"json\"\n",
                "heartbeat = \"30 parsecs\"\n",
            ),
        ] {
            assert!(
                check(daemon, good).is_empty(),
                "{daemon:?}: {:?}",
                check(daemon, good)
            );
            let d = check(daemon, bad);
            assert_eq!(d.len(), 1, "{daemon:?}: {d:?}");
            assert_eq!(d[0].line, 1);
        }
    }

    #[test]
    fn the_packaged_configs_and_their_commented_defaults_are_valid() {
        for (daemon, text) in [
            (
                Daemon::PtpServer,
                include_str!("../../../packaging/etc/ptp-server.toml"),
            ),
            (
                Daemon::Fbclockd,
                include_str!("../../../packaging/etc/fbclockd.toml"),
            ),
            (
                Daemon::Counter,
                include_str!("../../../packaging/etc/counter.toml"),
            ),
            (
                Daemon::Notify,
                include_str!("../../../packaging/etc/notify.toml"),
            ),
            (
                Daemon::Push,
                include_str!("../../../packaging/etc/push.toml"),
            ),
        ] {
            assert_eq!(check(daemon, text), [], "{daemon:?}");
            // Every `# key = value` line, uncommented, is a valid setting.
            let uncommented: String = text
                .lines()
                .map(|l| match l.strip_prefix("# ") {
                    Some(rest)
                        if rest.split_once(" = ").is_some_and(|(k, _)| {
                            !k.is_empty()
                                && k.chars()
                                    .all(|c| c.is_ascii_lowercase() || "_-".contains(c))
                        }) =>
                    {
                        rest
                    }
                    _ => l,
                })
                .collect::<Vec<_>>()
                .join("\n");
            assert_ne!(uncommented, text, "{daemon:?}: no commented defaults");
            assert_eq!(check(daemon, &uncommented), [], "{daemon:?}");
        }
    }
}
