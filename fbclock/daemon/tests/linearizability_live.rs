//! The linearizability harness, live: in-process daemons over loopback SPTP
//! against an in-process ptp-server on a real-time simulated Time Card
//! ([`fbclockd::live`]). Three scenarios (no fault, GNSS loss, server
//! restart) run one after the other: the machines this runs on may have
//! only two CPUs, and the reader threads spin.

use std::sync::Arc;

use fbclockd::live::{self, LiveConfig, LiveFault, LiveReport};
use ptp_server::CardSource;
use ptp_server::quality::QualityConfig;

/// Simulated card → driver → card source, as the `ptp-server` binary does.
fn run_scenario(fault: LiveFault, seconds: f64) -> LiveReport {
    let sim = timecard_sim::Sim::new(&timecard_sim::SimConfig {
        mode: timecard_sim::ClockMode::Realtime { acceleration: 1.0 },
        ..timecard_sim::SimConfig::default()
    })
    .unwrap();
    let card = timecard_driver::device::open_sim(sim.clone()).unwrap();
    card.init(timecard_driver::InitOptions::default()).unwrap();
    let source = CardSource::spawn(
        Arc::new(card),
        Some(timecard_driver::supervisor::Supervisor::new()),
        QualityConfig {
            window: 3,
            ..QualityConfig::default()
        },
    );
    let cfg = LiveConfig {
        seconds,
        fault,
        ..LiveConfig::default()
    };
    let report = live::run(&cfg, &sim, source.source()).unwrap();
    eprintln!("{report}");
    report
}

#[test]
fn live_truetime_is_linearizable_through_gnss_loss_and_server_restart() {
    let t0 = std::time::Instant::now();
    let reports = [
        run_scenario(LiveFault::None, 20.0),
        run_scenario(
            LiveFault::GnssLoss {
                at_s: 5.0,
                for_s: 8.0,
            },
            20.0,
        ),
        run_scenario(
            LiveFault::ServerRestart {
                at_s: 8.0,
                down_s: 4.0,
            },
            20.0,
        ),
    ];
    let checks: u64 = reports.iter().map(|r| r.checks).sum();
    let secs: f64 = reports.iter().map(|r| r.run_time.as_secs_f64()).sum();
    eprintln!(
        "total: {checks} checks in {secs:.1} s of runs ({:.0}/s), wall {:?}",
        checks as f64 / secs,
        t0.elapsed()
    );
    for r in &reports {
        assert_eq!(r.violations, 0, "{r}");
        assert_eq!(r.order_violations, 0, "{r}");
        assert!(r.transactions > 1000, "{r}");
        assert_eq!(r.model_resets, 0, "{r}");
    }
    // Measured on a 2-CPU machine, debug build, six spinning readers per
    // scenario: ~0.58 M checks/s/host, ~210 M over the three runs.
    assert!(checks >= 10_000_000, "only {checks} checks");
    // While the server is down the daemons hold over: the bound grows.
    let restart = &reports[2];
    assert!(
        restart.phases[1].p50_ns > restart.phases[0].p50_ns,
        "{restart}"
    );
}
