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
            Ok(text) => check_file(daemon, file, &text),
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
    if daemon == Daemon::PtpServer {
        return check_ptp_server(text);
    }
    operate::config::check(text, &serve_command(daemon))
}

/// The command line `daemon` parses (ptp-server has its own file format).
fn serve_command(daemon: Daemon) -> Command {
    // `serve`'s own flags plus the logging flags every daemon takes (global
    // on the daemons' command lines, so `--config` accepts them too).
    let serve = |name: &'static str, augment: fn(Command) -> Command| {
        operate::logging::LogArgs::augment_args(augment(Command::new(name)))
    };
    match daemon {
        Daemon::PtpServer | Daemon::Fbclockd => fbclockd::cli::Args::command(),
        Daemon::Counter => serve(
            "timecard-counter serve",
            counter::cli::ServeArgs::augment_args,
        ),
        Daemon::Notify => serve(
            "timecard-notify serve",
            notify::cli::ServeArgs::augment_args,
        ),
        Daemon::Push => serve("timecard-push serve", push::cli::ServeArgs::augment_args),
    }
}

/// As [`check`], then, when the file is clean, the daemon's own validation
/// of the settings it expands into (what it checks at start beyond each
/// flag's parser: counter namespaces and ranges, notify types, fbclockd's
/// bounds), so that `ok` means the daemon starts.
fn check_file(daemon: Daemon, file: &Path, text: &str) -> Vec<Diagnostic> {
    let problems = check(daemon, text);
    if !problems.is_empty() || daemon == Daemon::PtpServer {
        return problems;
    }
    match daemon_validation(daemon, file) {
        Ok(()) => Vec::new(),
        Err(message) => vec![at_key_named(text, message)],
    }
}

/// Parses `--config FILE` as `daemon` does and runs its start-up checks.
fn daemon_validation(daemon: Daemon, file: &Path) -> Result<(), String> {
    use clap::FromArgMatches as _;
    if matches!(daemon, Daemon::Push | Daemon::PtpServer) {
        // Nothing beyond the flags' parsers (push's key file comes from its unit).
        return Ok(());
    }
    let cmd = serve_command(daemon);
    let argv = [
        std::ffi::OsString::from("check"),
        "--config".into(),
        file.into(),
    ];
    let expanded = operate::config::expand_args(argv, &cmd).map_err(|e| e.to_string())?;
    let matches = cmd.try_get_matches_from(expanded).map_err(|e| {
        let text = e.to_string();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take_while(|l| !l.starts_with("Usage:"))
            .collect();
        lines.join(" ").trim_start_matches("error: ").to_owned()
    })?;
    let fail = |e: &dyn std::fmt::Display| format!("{e:#}");
    match daemon {
        Daemon::Fbclockd => fbclockd::cli::Args::from_arg_matches(&matches)
            .map_err(|e| fail(&e))?
            .config()
            .validate()
            .map_err(|e| fail(&e)),
        Daemon::Counter => counter::cli::ServeArgs::from_arg_matches(&matches)
            .map_err(|e| fail(&e))?
            .config()
            .map(drop)
            .map_err(|e| fail(&e)),
        Daemon::Notify => notify::cli::ServeArgs::from_arg_matches(&matches)
            .map_err(|e| fail(&e))?
            .config()
            .map(drop)
            .map_err(|e| fail(&e)),
        Daemon::Push | Daemon::PtpServer => Ok(()),
    }
}

/// `message` at the key of `text` it names first (1:1 when it names none).
fn at_key_named(text: &str, message: String) -> Diagnostic {
    let (line, column) = operate::config::keys(text)
        .into_iter()
        .filter_map(|(key, line, column)| {
            let found = message
                .find(key.as_str())
                .or_else(|| message.find(&key.replace(['_', '-'], " ")))?;
            Some((found, line, column))
        })
        .min()
        .map_or((1, 1), |(_, line, column)| (line, column));
    Diagnostic {
        line,
        column,
        message,
    }
}

/// A ptp-server file through ptp-server's loader. Its range checks name the
/// field in their message but carry no position: the problem is put at the
/// key the message names first.
fn check_ptp_server(text: &str) -> Vec<Diagnostic> {
    let config = match operate::config::deserialize::<ptp_server::config::Config>(text) {
        Ok(c) => c,
        Err(d) => return vec![d],
    };
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(ptp_server::config::ConfigError::Invalid(m)) => vec![at_key_named(text, m)],
        Err(other) => vec![at_key_named(text, other.to_string())],
    }
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
    fn ok_means_the_daemon_accepts_the_settings_at_start() {
        let dir = tempfile::tempdir().unwrap();
        for (daemon, good, bad, line, says) in [
            (
                Daemon::Counter,
                "namespace = [\"views=eventual\", \"likes=accurate\"]\n",
                "grpc = \"127.0.0.1:7340\"\nnamespace = [\"views=eventual\", \"views=accurate\"]\n",
                2,
                "given twice",
            ),
            (
                Daemon::Counter,
                "accept-limit-ms = 5000\n",
                "grace-ms = 10\naccept-limit-ms = 0\n",
                2,
                "--accept-limit-ms 0",
            ),
            (
                Daemon::Fbclockd,
                "exchange-timeout = \"200ms\"\n",
                "max-drift-ppb = -1.0\n",
                1,
                "must be non-negative",
            ),
        ] {
            let file = dir.path().join("x.toml");
            std::fs::write(&file, good).unwrap();
            let d = check_file(daemon, &file, good);
            assert!(d.is_empty(), "{daemon:?} {good:?}: {d:?}");
            std::fs::write(&file, bad).unwrap();
            // The flags' own parsers accept it; the daemon would not start.
            assert!(
                check(daemon, bad).is_empty(),
                "{daemon:?} {bad:?}: {:?}",
                check(daemon, bad)
            );
            let d = check_file(daemon, &file, bad);
            assert_eq!(at(&d), [(line, 1)], "{daemon:?} {bad:?}: {d:?}");
            assert!(d[0].message.contains(says), "{d:?}");
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
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("shipped.toml");
            std::fs::write(&file, text).unwrap();
            assert_eq!(check_file(daemon, &file, text), [], "{daemon:?}");
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
            // (As flags: some name files that exist only on an appliance.)
            assert_eq!(check(daemon, &uncommented), [], "{daemon:?}");
        }
    }
}
