//! Exit codes (sysexits-style) and the error kinds that select them.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also when stdout is closed early, e.g. `timecard watch \| head`) |
//! | 1 | runtime error |
//! | 2 | usage error: bad flags or arguments (clap's own errors use 2 as well) |
//! | 69 | `EX_UNAVAILABLE`: the device is missing, cannot be opened, or does not respond |

use std::fmt;

use timecard_driver::CardError;

/// Runtime error.
pub const EX_SOFTWARE: u8 = 1;
/// Usage error.
pub const EX_USAGE: u8 = 2;
/// The device is missing or dead (`EX_UNAVAILABLE` in sysexits.h).
pub const EX_UNAVAILABLE: u8 = 69;

/// Context marking an error as "this device cannot be used" (exit code 69).
#[derive(Debug)]
pub struct DeviceUnavailable {
    /// The device as the user named it.
    pub device: String,
}

impl fmt::Display for DeviceUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot use device {}", self.device)
    }
}

/// A mistake in the command line that clap cannot see (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// What `main` does with an error: the exit code, and whether to print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Process exit code.
    pub code: u8,
    /// Print the error on stderr (not for a closed stdout pipe).
    pub report: bool,
}

/// The error and its causes on one line, skipping a cause whose text the
/// previous message already ends with (errors that print their source too).
#[must_use]
pub fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.ends_with(&text) {
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

/// Classifies an error by the first cause in its chain that decides the exit code.
#[must_use]
pub fn classify(err: &anyhow::Error) -> Outcome {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return Outcome {
                code: EX_USAGE,
                report: true,
            };
        }
        if matches!(cause.downcast_ref::<CardError>(), Some(CardError::CardGone)) {
            return Outcome {
                code: EX_UNAVAILABLE,
                report: true,
            };
        }
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return Outcome {
                code: 0,
                report: false,
            };
        }
    }
    let code = if err.downcast_ref::<DeviceUnavailable>().is_some() {
        EX_UNAVAILABLE
    } else {
        EX_SOFTWARE
    };
    Outcome { code, report: true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn codes_follow_the_cause() {
        let gone = anyhow::Error::new(CardError::CardGone).context("reading status");
        assert_eq!(classify(&gone).code, EX_UNAVAILABLE);
        let missing: anyhow::Result<()> =
            Err(std::io::Error::from(std::io::ErrorKind::NotFound).into());
        let missing = missing
            .context(DeviceUnavailable {
                device: "sim:/x".into(),
            })
            .unwrap_err();
        assert_eq!(classify(&missing).code, EX_UNAVAILABLE);
        assert!(message(&missing).starts_with("cannot use device sim:/x: "));
        let usage = anyhow::Error::new(UsageError("bad".into()));
        assert_eq!(classify(&usage).code, EX_USAGE);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(
            classify(&pipe),
            Outcome {
                code: 0,
                report: false
            }
        );
        assert_eq!(classify(&anyhow::anyhow!("other")).code, EX_SOFTWARE);
    }

    /// An error whose text repeats its source, as some library errors do.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl fmt::Display for Repeats {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "/x: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn messages_do_not_repeat_causes() {
        let e = anyhow::Error::new(Repeats(std::io::Error::other("gone"))).context("opening");
        assert_eq!(message(&e), "opening: /x: gone");
    }
}
