//! `timecard linearizability`: the TrueTime harness against ground truth.

use std::io::Write;

use anyhow::{Result, bail};
use fbclockd::harness::{self, HarnessConfig, Scenario};

use crate::cli::LinearizabilityArgs;
use crate::exit::UsageError;

/// Runs the selected scenarios and prints one row (or JSON object) each.
///
/// # Errors
/// Unknown scenario names (usage), write errors, or a violation inside the
/// documented assumptions.
pub fn run(args: &LinearizabilityArgs, out: &mut dyn Write) -> Result<()> {
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|name| {
                Scenario::ALL
                    .into_iter()
                    .find(|s| s.name() == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                        UsageError(format!(
                            "unknown scenario {name:?}; choose from: {}",
                            names.join(", ")
                        ))
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let cfg = HarnessConfig {
        seed: args.seed,
        hosts: usize::try_from(args.hosts).unwrap_or(16),
        duration_s: args.seconds,
        ..HarnessConfig::default()
    };
    let mut failed = Vec::new();
    let mut total = 0u64;
    for s in scenarios {
        let r = harness::run(s, &cfg);
        if args.json {
            serde_json::to_writer(&mut *out, &r)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{r}")?;
        }
        out.flush()?;
        if r.in_claim {
            total += r.checks;
            if r.violations + r.utc_violations + r.order_violations > 0 {
                failed.push(s.name());
            }
        }
    }
    if !args.json {
        writeln!(out, "intervals checked inside the assumptions: {total}")?;
    }
    if !failed.is_empty() {
        bail!(
            "TrueTime missed true time or commit order in: {}",
            failed.join(", ")
        );
    }
    Ok(())
}
