//! `--config FILE` for daemons whose settings are command-line flags.
//!
//! The file is TOML whose keys are the daemon's long flag names (kebab-case,
//! as `--help` prints them) and whose values are strings, integers, floats,
//! booleans or arrays:
//!
//! ```toml
//! server = "10.0.0.1:319"     # --server=10.0.0.1:319
//! interval = "250ms"          # --interval=250ms
//! arb-is-utc = true           # --arb-is-utc (false: omitted)
//! namespace = ["views=eventual", "likes=accurate"]   # --namespace=… twice
//! ```
//!
//! [`expand_args`] replaces `--config FILE` on a command line with
//! `--config=FILE` followed by those flags, before clap parses it: one
//! implementation for every daemon, driven by the daemon's own
//! [`clap::Command`] (from [`clap::CommandFactory`] or [`clap::Args`]), so a
//! file can set exactly what a flag can, with the same value parsers. A flag
//! that is also given on the command line (before or after `--config`) wins
//! over the file's setting of it; for a repeated flag the command line's
//! values replace the file's.
//!
//! [`check`] validates a file against a command and returns every problem
//! with its line and column: TOML syntax, unknown keys (with a suggestion),
//! wrong value types, values the flag's own parser rejects, switches given a
//! non-boolean. [`deserialize`] does the same mapping of positions for files
//! read through serde (such as `ptp-server`'s).
//!
//! A daemon opts in by flattening [`ConfigFile`] into the arguments of the
//! command that runs it and parsing with [`parse`] instead of
//! [`clap::Parser::parse`].

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, Command};
use toml::de::{DeTable, DeValue};

/// The long name of the flag that names a config file.
const CONFIG_FLAG: &str = "config";

/// The `--config FILE` flag; `#[command(flatten)]` it into a daemon's arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigFile {
    /// TOML file of settings: keys are this command's long flag names
    /// (`interval = "250ms"`, `arb-is-utc = true`, arrays for repeated
    /// flags). Flags on the command line override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// One problem in a config file, at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl Diagnostic {
    /// A diagnostic at byte offset `offset` of `text`.
    #[must_use]
    pub fn at(text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, offset);
        Self {
            line,
            column,
            message: message.into(),
        }
    }
}

/// Why a command line with `--config` could not be expanded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has problems, each at its line.
    #[error("{}", render(path, diagnostics))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
    /// `--config` was given more than once.
    #[error("--config may be given only once")]
    Repeated,
}

/// `PATH:LINE:COL: message` lines, like a compiler's.
fn render(path: &Path, diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("{}:{d}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// 1-based line and character column of byte `offset` in `text` (clamped
/// to the text; an offset inside a character counts as that character).
#[must_use]
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The top-level keys of a TOML document with the position of each, in file
/// order; empty if the document does not parse.
#[must_use]
pub fn keys(text: &str) -> Vec<(String, usize, usize)> {
    let Ok(table) = DeTable::parse(text) else {
        return Vec::new();
    };
    let mut keys: Vec<(String, Range<usize>)> = table
        .get_ref()
        .iter()
        .map(|(k, _)| (k.get_ref().to_string(), k.span()))
        .collect();
    keys.sort_by_key(|(_, span)| span.start);
    keys.into_iter()
        .map(|(k, span)| {
            let (line, column) = line_column(text, span.start);
            (k, line, column)
        })
        .collect()
}

/// Deserializes `text` as TOML into `T` (serde), mapping the error to its
/// line and column.
///
/// # Errors
/// The first syntax error, unknown field (`deny_unknown_fields`) or
/// mistyped value, at its position (1:1 when the parser gives none).
pub fn deserialize<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Diagnostic> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        Diagnostic::at(text, offset, e.message().trim_end())
    })
}

/// Every problem of `text` as a config file for `cmd` (empty when it is
/// fine), in file order.
///
/// `cmd` is the command whose flags the keys name (for a subcommand, that
/// subcommand's `Command`). Never panics, whatever the input.
#[must_use]
pub fn check(text: &str, cmd: &Command) -> Vec<Diagnostic> {
    match settings(text, cmd) {
        Ok(_) => Vec::new(),
        Err(d) => d,
    }
}

/// One key of a file turned into flags.
#[derive(Debug)]
struct Setting {
    /// The clap id of the flag.
    id: String,
    /// The flag's long name.
    long: String,
    /// Where the key is in the file (byte offset).
    at: usize,
    /// The flags (`--name=value` or `--name`), in order.
    flags: Vec<OsString>,
}

/// The file's settings as flags, or every problem found.
fn settings(text: &str, cmd: &Command) -> Result<Vec<Setting>, Vec<Diagnostic>> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let mut d: Vec<Diagnostic> = errors
            .iter()
            .map(|e| {
                let offset = e.span().map_or(0, |s| s.start);
                Diagnostic::at(text, offset, e.message().trim_end())
            })
            .collect();
        sort(&mut d);
        return Err(d);
    }
    // Values from the environment are not this file's: without them an
    // invalid `RUST_LOG`, say, cannot be blamed on the file's keys.
    let mut cmd = cmd.clone().mut_args(|a| a.env(None));
    cmd.build();
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut settings = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in entries {
        let name = key.get_ref().as_ref();
        let at = |span: Range<usize>, m: String| Diagnostic::at(text, span.start, m);
        let Some(arg) = find_long(&cmd, name) else {
            let mut m = format!("unknown key `{name}`");
            if let Some(s) = suggest(name, &cmd) {
                m.push_str(&format!(" (did you mean `{s}`?)"));
            }
            problems.push(at(key.span(), m));
            continue;
        };
        let long = arg.get_long().unwrap_or(name);
        if long == CONFIG_FLAG {
            problems.push(at(
                key.span(),
                "a config file cannot name another config file".into(),
            ));
            continue;
        }
        match flags(long, arg, value.get_ref(), value.span()) {
            Err((span, m)) => problems.push(at(span, format!("`{name}`: {m}"))),
            Ok(flags) => {
                if let Some(m) = rejected(&cmd, &flags) {
                    problems.push(at(value.span(), format!("`{name}`: {m}")));
                } else {
                    settings.push(Setting {
                        id: arg.get_id().to_string(),
                        long: long.to_owned(),
                        at: key.span().start,
                        flags,
                    });
                }
            }
        }
    }
    if problems.is_empty() {
        problems.extend(conflict(text, &cmd, &settings));
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        sort(&mut problems);
        Err(problems)
    }
}

/// Settings that are fine alone but conflict with each other (clap's
/// `conflicts_with`): the problem is put at the later key of the pair.
fn conflict(text: &str, cmd: &Command, settings: &[Setting]) -> Option<Diagnostic> {
    let argv = std::iter::once(OsString::from(cmd.get_name()))
        .chain(settings.iter().flat_map(|s| s.flags.iter().cloned()));
    let e = cmd.clone().try_get_matches_from(argv).err()?;
    if e.kind() != ErrorKind::ArgumentConflict {
        return None;
    }
    let message = clap_message(&e);
    let named = |s: &&Setting| {
        let flag = format!("--{}", s.long);
        message.match_indices(&flag).any(|(i, _)| {
            !message[i + flag.len()..].starts_with(|c: char| c == '-' || c.is_ascii_alphanumeric())
        })
    };
    let at = settings
        .iter()
        .filter(named)
        .map(|s| s.at)
        .max()
        .unwrap_or(0);
    Some(Diagnostic::at(text, at, message))
}

fn sort(d: &mut [Diagnostic]) {
    d.sort_by_key(|d| (d.line, d.column));
}

/// The argument of `cmd` with long name (or alias) `name`.
fn find_long<'c>(cmd: &'c Command, name: &str) -> Option<&'c Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(name)
            || a.get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })
}

/// The argument of `cmd` with short name `c`.
fn find_short(cmd: &Command, c: char) -> Option<&Arg> {
    cmd.get_arguments().find(|a| {
        a.get_short() == Some(c)
            || a.get_all_short_aliases()
                .is_some_and(|aliases| aliases.contains(&c))
    })
}

/// The closest long flag name to a misspelt `name`, if one is close.
fn suggest(name: &str, cmd: &Command) -> Option<String> {
    let wanted = name.replace('_', "-").to_lowercase();
    cmd.get_arguments()
        .filter_map(Arg::get_long)
        .filter(|l| !matches!(*l, "help" | "version" | CONFIG_FLAG))
        .map(|l| (distance(&wanted, l), l))
        .filter(|(d, l)| *d <= 2.max(l.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, l)| l.to_owned())
}

/// Levenshtein distance in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The flags a TOML value stands for, or the span and text of the problem.
fn flags(
    long: &str,
    arg: &Arg,
    value: &DeValue<'_>,
    span: Range<usize>,
) -> Result<Vec<OsString>, (Range<usize>, String)> {
    let bare = || OsString::from(format!("--{long}"));
    let with = |v: String| OsString::from(format!("--{long}={v}"));
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            DeValue::Boolean(true) => Ok(vec![bare()]),
            DeValue::Boolean(false) => Ok(Vec::new()),
            other => Err((
                span,
                format!(
                    "a switch takes true or false, not {} {}",
                    article(other),
                    other.type_str()
                ),
            )),
        },
        ArgAction::Count => match value {
            DeValue::Boolean(b) => Ok(if *b { vec![bare()] } else { Vec::new() }),
            DeValue::Integer(i) => match integer(i) {
                Some(n) if (0..=255).contains(&n) => Ok(vec![bare(); n as usize]),
                _ => Err((span, "a count must be between 0 and 255".into())),
            },
            other => Err((
                span,
                format!("a count takes an integer, not {}", other.type_str()),
            )),
        },
        ArgAction::Set => match value {
            DeValue::Array(_) => Err((
                span,
                "takes one value, not an array (the flag cannot be repeated)".into(),
            )),
            other => scalar(other).map(|v| vec![with(v)]).map_err(|m| (span, m)),
        },
        ArgAction::Append => match value {
            DeValue::Array(items) => items
                .iter()
                .map(|item| {
                    scalar(item.get_ref())
                        .map(with)
                        .map_err(|m| (item.span(), format!("in the array: {m}")))
                })
                .collect(),
            other => scalar(other).map(|v| vec![with(v)]).map_err(|m| (span, m)),
        },
        _ => Err((span, "is not a setting".into())),
    }
}

fn article(v: &DeValue<'_>) -> &'static str {
    if matches!(v, DeValue::Integer(_) | DeValue::Array(_)) {
        "an"
    } else {
        "a"
    }
}

/// A TOML integer's value (any radix).
fn integer(i: &toml::de::DeInteger<'_>) -> Option<i128> {
    i128::from_str_radix(i.as_str(), i.radix()).ok()
}

/// A scalar TOML value as the text of a flag's value.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => integer(i)
            .map(|n| n.to_string())
            .ok_or_else(|| format!("integer {} is out of range", i.as_str())),
        DeValue::Float(f) => Ok(f.as_str().to_owned()),
        DeValue::Boolean(b) => Ok(b.to_string()),
        DeValue::Datetime(_) => Err("dates are not supported: quote the value".into()),
        DeValue::Array(_) => Err("arrays cannot be nested".into()),
        DeValue::Table(_) => {
            Err("tables are not supported: write `key = value` lines at the top level".into())
        }
    }
}

/// Whether `cmd`'s own parsers reject these flags: the problem, if any.
///
/// Errors that are not about the flags' values (a required flag missing,
/// a subcommand missing) are not this file's problem.
fn rejected(cmd: &Command, flags: &[OsString]) -> Option<String> {
    let argv = std::iter::once(OsString::from(cmd.get_name())).chain(flags.iter().cloned());
    let e = cmd.clone().try_get_matches_from(argv).err()?;
    match e.kind() {
        ErrorKind::InvalidValue
        | ErrorKind::ValueValidation
        | ErrorKind::InvalidUtf8
        | ErrorKind::TooManyValues
        | ErrorKind::TooFewValues
        | ErrorKind::WrongNumberOfValues
        | ErrorKind::NoEquals
        | ErrorKind::UnknownArgument => Some(clap_message(&e)),
        _ => None,
    }
}

/// A clap error as one line: without the `error: ` prefix, the usage and
/// the `--help` hint.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.strip_prefix("error: ").unwrap_or(line).to_owned());
        }
    }
    parts.join("; ")
}

/// Expands `--config FILE` (or `--config=FILE`) in a command line for `root`
/// into `--config=FILE` followed by the file's settings as flags.
///
/// `--config` is recognised only where the (sub)command being parsed has a
/// `--config` flag (see [`ConfigFile`]); subcommands are followed by name.
/// Settings whose flag is also on the command line for that command are
/// left out, so the command line wins. Without `--config` the arguments come
/// back unchanged; a `--config` without a value is left for clap to report.
///
/// # Errors
/// [`ConfigError::Read`] for an unreadable file, [`ConfigError::Invalid`]
/// with every [`check`] problem, [`ConfigError::Repeated`].
pub fn expand_args<I, T>(args: I, root: &Command) -> Result<Vec<OsString>, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut root = root.clone();
    root.build();
    let Some(found) = scan(&args, &root) else {
        return Ok(args);
    };
    let config = found.config.ok_or(ConfigError::Repeated)?;
    let Some((index, path)) = config else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let settings = settings(&text, found.cmd).map_err(|diagnostics| ConfigError::Invalid {
        path: path.clone(),
        diagnostics,
    })?;
    let mut out = args[..index.start].to_vec();
    let mut flag = OsString::from(format!("--{CONFIG_FLAG}="));
    flag.push(path.as_os_str());
    out.push(flag);
    for s in settings {
        if !found.given.contains(&s.id) {
            out.extend(s.flags);
        }
    }
    out.extend_from_slice(&args[index.end..]);
    Ok(out)
}

/// What [`scan`] found on a command line.
struct Scan<'c> {
    /// The innermost (sub)command named.
    cmd: &'c Command,
    /// `None` if `--config` is repeated; else the argument range of the
    /// `--config` flag and its value, with the path, if present.
    config: Option<Option<(Range<usize>, PathBuf)>>,
    /// Ids of the flags given for `cmd` on the command line.
    given: HashSet<String>,
}

/// Walks a command line the way clap will parse it: follows subcommands,
/// skips flag values, notes the flags given and where `--config` is.
/// `None` when the innermost command has no `--config` flag.
fn scan<'c>(args: &[OsString], root: &'c Command) -> Option<Scan<'c>> {
    let mut cmd = root;
    let mut config: Option<Option<(Range<usize>, PathBuf)>> = Some(None);
    let mut given = HashSet::new();
    let mut i = 1;
    while i < args.len() {
        let Some(token) = args[i].to_str() else {
            i += 1;
            continue;
        };
        if token == "--" {
            break;
        }
        if let Some(long) = token.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            if let Some(arg) = find_long(cmd, name) {
                let takes_value = arg.get_action().takes_values();
                if name == CONFIG_FLAG {
                    let value = if attached {
                        Some((i..i + 1, PathBuf::from(&long[CONFIG_FLAG.len() + 1..])))
                    } else {
                        args.get(i + 1)
                            .map(|v| (i..i + 2, PathBuf::from(OsStr::new(v))))
                    };
                    config = match config {
                        Some(None) => Some(value),
                        _ => None,
                    };
                } else {
                    given.insert(arg.get_id().to_string());
                }
                if takes_value && !attached {
                    i += 1;
                }
            }
        } else if let Some(shorts) = token.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (at, c) in shorts.char_indices() {
                let Some(arg) = find_short(cmd, c) else {
                    break;
                };
                given.insert(arg.get_id().to_string());
                if arg.get_action().takes_values() {
                    if at + c.len_utf8() == shorts.len() {
                        i += 1;
                    }
                    break;
                }
            }
        } else if let Some(sub) = cmd.find_subcommand(token) {
            // Global flags given before the subcommand still count as given.
            given.retain(|id| {
                cmd.get_arguments()
                    .any(|a| a.is_global_set() && a.get_id().as_str() == id.as_str())
            });
            cmd = sub;
            config = Some(None);
        }
        i += 1;
    }
    find_long(cmd, CONFIG_FLAG)?;
    Some(Scan { cmd, config, given })
}

/// Parses the process's command line into `P` like [`clap::Parser::parse`],
/// after expanding `--config` (see [`expand_args`]).
///
/// On a config file problem prints `FILE:LINE:COL: message` lines (other
/// errors prefixed with the command's name) to stderr and exits with status
/// 2, as clap does for usage errors.
#[must_use]
pub fn parse<P: clap::Parser>() -> P {
    let cmd = P::command();
    match expand_args(std::env::args_os(), &cmd) {
        Ok(args) => P::parse_from(args),
        Err(e) => {
            if matches!(e, ConfigError::Invalid { .. }) {
                eprintln!("{e}");
            } else {
                eprintln!("{}: {e}", cmd.get_name());
            }
            std::process::exit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};
    use std::net::SocketAddr;
    use std::time::Duration;

    fn parse_secs(s: &str) -> Result<Duration, String> {
        let n = s
            .strip_suffix('s')
            .ok_or_else(|| format!("{s:?}: needs a unit (s)"))?;
        n.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("{s:?}: {e}"))
    }

    #[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
    enum Mode {
        Sptp,
        Unicast,
    }

    /// A daemon.
    #[derive(Debug, Parser)]
    #[command(name = "daemon", version)]
    struct Daemon {
        #[command(flatten)]
        config: ConfigFile,
        /// Server.
        #[arg(long, default_value = "127.0.0.1:319")]
        server: SocketAddr,
        /// Interval.
        #[arg(short, long, default_value = "1s", value_parser = parse_secs)]
        interval: Duration,
        /// Mode.
        #[arg(long, value_enum, default_value_t = Mode::Sptp)]
        mode: Mode,
        /// A switch.
        #[arg(long)]
        arb_is_utc: bool,
        /// Repeated.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// A float.
        #[arg(long, default_value_t = 20_000.0)]
        max_drift_ppb: f64,
        /// Signed.
        #[arg(long, default_value_t = 0)]
        offset: i64,
        /// Required on the command line or in the file.
        #[arg(long)]
        key_file: PathBuf,
        /// Verbosity.
        #[arg(short, long, action = ArgAction::Count)]
        verbose: u8,
    }

    /// A tool with a `serve` subcommand.
    #[derive(Debug, Parser)]
    #[command(name = "tool")]
    struct Tool {
        #[command(subcommand)]
        command: ToolCommand,
        /// A global flag (like the daemons' --log-level).
        #[arg(long, global = true, default_value = "warn")]
        level: String,
    }

    #[derive(Debug, Subcommand)]
    enum ToolCommand {
        /// Serve.
        Serve(ServeArgs),
        /// Something else.
        Get {
            /// A positional that may look like a subcommand name.
            name: String,
        },
    }

    #[derive(Debug, clap::Args)]
    struct ServeArgs {
        #[command(flatten)]
        config: ConfigFile,
        /// Port.
        #[arg(long, default_value_t = 7340)]
        port: u16,
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn daemon(args: &[&str]) -> Result<Daemon, String> {
        let argv: Vec<&str> = std::iter::once("daemon")
            .chain(args.iter().copied())
            .collect();
        let expanded = expand_args(argv, &Daemon::command()).map_err(|e| e.to_string())?;
        Daemon::try_parse_from(expanded).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"# a comment
server = "10.0.0.1:319"
interval = "5s"
mode = "unicast"
arb-is-utc = true
namespace = ["a=x", "b=y"]
max-drift-ppb = 1e3
offset = -7
key-file = "/etc/k"
verbose = 2
"#;

    #[test]
    fn a_file_sets_every_kind_of_flag() {
        let (_d, path) = file(GOOD);
        let p = path.to_str().unwrap();
        assert!(check(GOOD, &Daemon::command()).is_empty());
        let d = daemon(&["--config", p]).unwrap();
        assert_eq!(d.config.config.as_deref(), Some(path.as_path()));
        assert_eq!(d.server, "10.0.0.1:319".parse().unwrap());
        assert_eq!(d.interval, Duration::from_secs(5));
        assert_eq!(d.mode, Mode::Unicast);
        assert!(d.arb_is_utc);
        assert_eq!(d.namespaces, ["a=x", "b=y"]);
        assert_eq!(d.max_drift_ppb, 1000.0);
        assert_eq!(d.offset, -7);
        assert_eq!(d.key_file, Path::new("/etc/k"));
        assert_eq!(d.verbose, 2);
    }

    #[test]
    fn the_command_line_overrides_the_file_before_or_after_it() {
        let (_d, path) = file(GOOD);
        let p = path.to_str().unwrap();
        let d = daemon(&["--config", p, "--interval", "9s", "--namespace", "c=z"]).unwrap();
        assert_eq!(d.interval, Duration::from_secs(9));
        assert_eq!(
            d.namespaces,
            ["c=z"],
            "the command line replaces a repeated flag"
        );
        assert_eq!(d.mode, Mode::Unicast, "the rest still comes from the file");
        let d = daemon(&["-i", "8s", &format!("--config={p}"), "--mode=sptp"]).unwrap();
        assert_eq!((d.interval, d.mode), (Duration::from_secs(8), Mode::Sptp));
        let d = daemon(&["--config", p, "-vvv"]).unwrap();
        assert_eq!(d.verbose, 3);
    }

    #[test]
    fn without_config_the_arguments_are_untouched() {
        let argv = ["daemon", "--key-file", "/k", "--interval", "2s"];
        let out = expand_args(argv, &Daemon::command()).unwrap();
        assert_eq!(out, argv.map(OsString::from));
        let out = expand_args(["daemon", "--config"], &Daemon::command()).unwrap();
        assert_eq!(out, ["daemon", "--config"].map(OsString::from));
    }

    #[test]
    fn a_bad_value_in_the_file_fails_naming_the_file_line_and_key() {
        let (_d, path) = file("key-file = \"/k\"\ninterval = \"1h\"\n");
        let e = daemon(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(
            e.starts_with(&format!("{}:2:12: `interval`: ", path.display())),
            "{e}"
        );
        assert!(e.contains("needs a unit"), "{e}");
        let missing = daemon(&["--config", "/nonexistent/x.toml"]).unwrap_err();
        assert!(missing.starts_with("/nonexistent/x.toml: "), "{missing}");
        let (_d2, p2) = file("");
        let p2 = p2.to_str().unwrap();
        let twice = daemon(&["--config", p2, "--config", p2]).unwrap_err();
        assert_eq!(twice, "--config may be given only once");
    }

    #[test]
    fn subcommands_are_followed_to_the_one_with_config() {
        let (_d, path) = file("port = 9000\n");
        let p = path.to_str().unwrap();
        let parse = |argv: &[&str]| {
            let out = expand_args(argv.iter().copied(), &Tool::command()).unwrap();
            Tool::try_parse_from(out).unwrap()
        };
        let ToolCommand::Serve(s) = parse(&["tool", "serve", "--config", p]).command else {
            panic!("serve");
        };
        assert_eq!(s.port, 9000);
        let ToolCommand::Serve(s) = parse(&["tool", "serve", "--port", "1", "--config", p]).command
        else {
            panic!("serve");
        };
        assert_eq!(s.port, 1);
        // A global flag before the subcommand wins over the file too.
        let (_d3, p3) = file("port = 9000\nlevel = \"info\"\n");
        let p3 = p3.to_str().unwrap();
        assert_eq!(parse(&["tool", "serve", "--config", p3]).level, "info");
        assert_eq!(
            parse(&["tool", "--level", "debug", "serve", "--config", p3]).level,
            "debug"
        );
        // `get` has no --config: its arguments pass through untouched.
        let out = expand_args(["tool", "get", "serve"], &Tool::command()).unwrap();
        assert_eq!(out, ["tool", "get", "serve"].map(OsString::from));
    }

    #[test]
    fn check_reports_each_problem_at_its_line() {
        let text = "\
server = \"10.0.0.1:319\"
intervall = \"2s\"
max_drift_ppb = 5.0
arb-is-utc = \"yes\"
mode = \"fast\"
namespace = [\"ok\", 3.5, [1]]
interval = [\"1s\", \"2s\"]
help = true
[table]
x = 1
";
        let d = check(text, &Daemon::command());
        let at: Vec<(usize, usize)> = d.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(
            at,
            [
                (2, 1),
                (3, 1),
                (4, 14),
                (5, 8),
                (6, 25),
                (7, 12),
                (8, 8),
                (9, 2)
            ],
            "{d:#?}"
        );
        assert_eq!(
            d[0].message,
            "unknown key `intervall` (did you mean `interval`?)"
        );
        assert_eq!(
            d[1].message,
            "unknown key `max_drift_ppb` (did you mean `max-drift-ppb`?)"
        );
        assert_eq!(
            d[2].message,
            "`arb-is-utc`: a switch takes true or false, not a string"
        );
        assert!(
            d[3].message
                .starts_with("`mode`: invalid value 'fast' for '--mode <MODE>'"),
            "{}",
            d[3]
        );
        assert!(
            d[3].message.contains("possible values: sptp, unicast"),
            "{}",
            d[3]
        );
        assert_eq!(
            d[4].message,
            "`namespace`: in the array: arrays cannot be nested"
        );
        assert!(
            d[5].message.contains("takes one value, not an array"),
            "{}",
            d[5]
        );
        assert_eq!(d[6].message, "`help`: is not a setting");
        assert!(d[7].message.starts_with("unknown key `table`"), "{}", d[7]);
    }

    #[test]
    fn check_rejects_a_config_key_and_reports_syntax_errors() {
        let d = check("config = \"x.toml\"\n", &Daemon::command());
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].column), (1, 1));
        let d = check("server = \"a\"\n\ninterval = = 3\n", &Daemon::command());
        assert!(!d.is_empty());
        assert_eq!(d[0].line, 3, "{d:?}");
        let d = check("a = \"unterminated\nb = 1\n", &Daemon::command());
        assert_eq!(d[0].line, 1, "{d:?}");
        assert!(check("", &Daemon::command()).is_empty());
    }

    #[test]
    fn conflicting_settings_are_reported_at_the_later_key() {
        #[derive(Debug, Parser)]
        struct Access {
            /// Token file.
            #[arg(long, conflicts_with = "insecure")]
            token_file: Option<PathBuf>,
            /// Anyone.
            #[arg(long)]
            insecure: bool,
            /// Unrelated.
            #[arg(long)]
            token: Option<String>,
        }
        let cmd = Access::command();
        let d = check(
            "insecure = true\ntoken = \"x\"\ntoken-file = \"/t\"\n",
            &cmd,
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].line, d[0].column), (3, 1), "{d:?}");
        assert!(d[0].message.contains("cannot be used with"), "{}", d[0]);
        assert!(check("insecure = false\ntoken-file = \"/t\"\n", &cmd).is_empty());
    }

    #[test]
    fn values_the_flag_parser_rejects_and_ranges() {
        let d = check(
            "server = \"nowhere\"\nverbose = 1000\noffset = 1.5\n",
            &Daemon::command(),
        );
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!((d[0].line, d[0].column), (1, 10));
        assert!(
            d[0].message
                .starts_with("`server`: invalid value 'nowhere'"),
            "{}",
            d[0]
        );
        assert_eq!(d[1].message, "`verbose`: a count must be between 0 and 255");
        assert!(
            d[2].message.starts_with("`offset`: invalid value '1.5'"),
            "{}",
            d[2]
        );
    }

    #[test]
    fn positions_count_characters_and_clamp() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é = 1\nx", 3), (1, 3));
        assert_eq!(line_column("é", 1), (1, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
        assert_eq!(
            keys("b = 1\n a = 2\n"),
            [("b".to_owned(), 1, 1), ("a".to_owned(), 2, 2)]
        );
        assert!(keys("= =").is_empty());
    }

    #[test]
    fn serde_errors_get_a_line_and_column() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            workers: u32,
        }
        let d = deserialize::<S>("workers = 4\nwrokers = 5\n").unwrap_err();
        assert_eq!((d.line, d.column), (2, 1));
        assert!(d.message.contains("unknown field `wrokers`"), "{d}");
        let d = deserialize::<S>("workers = \"four\"\n").unwrap_err();
        assert_eq!((d.line, d.column), (1, 11));
        assert!(deserialize::<S>("workers = 4\n").is_ok());
    }

    #[test]
    fn distances() {
        assert_eq!(distance("interval", "interval"), 0);
        assert_eq!(distance("intervall", "interval"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(text in "\\PC{0,200}") {
            let cmd = Daemon::command();
            let _ = check(&text, &cmd);
            let _ = keys(&text);
            let _ = deserialize::<std::collections::BTreeMap<String, i64>>(&text);
        }

        #[test]
        fn toml_like_garbage_never_panics(
            lines in proptest::collection::vec(
                "(server|interval|mode|arb-is-utc|namespace|verbose|offset|[a-z_-]{1,8}|\\[t\\]) ?= ?(\"[^\"\\n]{0,8}\"|-?[0-9]{1,40}|[0-9.e+-]{1,6}|true|false|\\[[0-9\", ]{0,12}\\]|\\{[a-z =0-9]{0,10}\\}|1979-05-27)?",
                0..8,
            ),
        ) {
            let text = lines.join("\n");
            let cmd = Daemon::command();
            let _ = check(&text, &cmd);
        }

        #[test]
        fn argument_garbage_never_panics(args in proptest::collection::vec("(--?[a-z-]{0,10}(=[a-z0-9]{0,4})?|serve|[a-z0-9]{0,5})", 0..8)) {
            let argv = std::iter::once("tool".to_owned()).chain(args);
            let _ = expand_args(argv, &Tool::command());
        }
    }
}
