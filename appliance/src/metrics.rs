//! `timecard up`'s Prometheus metrics, served on the dashboard's `/metrics`
//! ([`crate::dashboard`]): the card, the driver's supervisor and, on a
//! simulated card, the error against ground truth (`timecard_appliance_*`),
//! then fbclockd running inside `up` (`timecard_fbclockd_*`) and the
//! dashboard's own push edge node (`timecard_push_*`). The PTP server, the
//! counter and notify keep their own endpoints (`--ptp-monitoring`,
//! `--counter-http`, `--notify-http`). Names follow [`operate::metrics`].

use std::time::Instant;

use operate::metrics::Exposition;
use push::edge::EdgeNode;

use crate::dashboard::Sources;
use crate::live::{self, SyncState};

/// The whole exposition of `up`'s dashboard endpoint.
pub(crate) fn render(sources: &Sources, node: &EdgeNode, started: Instant) -> String {
    let mut m = Exposition::new("appliance", env!("CARGO_PKG_VERSION"));
    write_card(&mut m, sources, started);
    if let Some(f) = &sources.fbclockd {
        f.write(&mut m);
    }
    node.write_metrics(&mut m);
    m.finish()
}

/// The card's families, from one live sample.
fn write_card(m: &mut Exposition, s: &Sources, started: Instant) {
    m.gauge(
        "uptime_seconds",
        "Time since `timecard up` started its dashboard.",
    )
    .value(started.elapsed().as_secs_f64());
    let state = s
        .supervisor
        .as_ref()
        .map(|source| source.report().supervisor)
        .unwrap_or_default();
    let extras = live::Extras {
        ptp: None,
        truetime: s.truetime.as_ref(),
    };
    let sample = live::sample(
        &s.card,
        &state,
        s.truth.as_ref(),
        extras,
        Vec::new(),
        started.elapsed(),
    );
    let sample = match sample {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "metrics: the card cannot be read");
            m.gauge("card_up", "1 when the card answers.").value(false);
            return;
        }
    };
    m.gauge("card_up", "1 when the card answers.").value(true);
    let mut f = m.gauge(
        "card_sync_state",
        "1 for the card's state (unsynced, in_sync, holdover), 0 for the others.",
    );
    for (st, name) in [
        (SyncState::Unsynced, "unsynced"),
        (SyncState::InSync, "in_sync"),
        (SyncState::Holdover, "holdover"),
    ] {
        f.sample(&[("state", name)], sample.sync == st);
    }
    m.gauge(
        "card_holdover",
        "1 while the card is in holdover (IN_HOLDOVER).",
    )
    .value(sample.in_holdover);
    m.gauge(
        "card_clock_source",
        "1 for the card's active clock source (ptp_ocp's clock_source).",
    )
    .sample(&[("source", &sample.clock_source)], 1u64);
    m.gauge(
        "gnss_lock",
        "1 while the supervisor sees GNSS in sync (gnss_sync SYNC).",
    )
    .value(sample.gnss_sync == "SYNC");
    m.gauge("gnss_fix", "1 while the receiver reports a fix.")
        .value(sample.gnss_fix);
    m.gauge(
        "gnss_trusted",
        "1 while the supervisor trusts GNSS (0 after a rejected time jump).",
    )
    .value(sample.gnss_trusted);
    m.gauge("gnss_satellites_used", "Satellites used in the fix.")
        .value(sample.satellites_used);
    m.gauge("gnss_satellites_seen", "Satellites seen.")
        .value(sample.satellites_seen);
    m.gauge(
        "servo_offset_seconds",
        "The FPGA servo's last phase offset (clock_status_offset).",
    )
    .value(sample.servo_offset_ns as f64 / 1e9);
    m.gauge(
        "utc_offset_seconds",
        "TAI - UTC in use (from the card, else assumed).",
    )
    .value(sample.utc_tai_offset);
    let mut f = m.gauge(
        "card_minus_host_seconds",
        "Card UTC minus the host's CLOCK_REALTIME.",
    );
    if let Some(ns) = sample.card_minus_host_ns {
        f.value(ns as f64 / 1e9);
    }
    let mut f = m.gauge(
        "card_truth_error_seconds",
        "Card time minus true time: simulator ground truth, absent on real hardware.",
    );
    if let Some(ns) = sample.sim_truth_card_error_ns {
        f.value(ns as f64 / 1e9);
    }
    let mut f = m.gauge(
        "truetime_contains_truth",
        "1 when the TrueTime interval a client reads contains true time (simulator ground truth only).",
    );
    if let Some(contains) = sample.truetime.and_then(|t| t.contains_truth) {
        f.value(contains);
    }
}
