//! TrueTime linearizability: every scenario of [`fbclockd::harness`], zero
//! violations, at least 10 million interval checks in total.
//!
//! Sizes are chosen so that the debug build (`cargo test --workspace`) fits
//! in about a minute on two cores; the release build runs more checks:
//! `cargo test -p fbclockd --test linearizability --release -- --nocapture`.

use fbclockd::harness::{HarnessConfig, Report, Scenario, run};

#[test]
fn truetime_is_linearizable_in_every_scenario() {
    let cfg = if cfg!(debug_assertions) {
        HarnessConfig {
            duration_s: 900,
            checks_per_step: 2,
            ..HarnessConfig::default()
        }
    } else {
        HarnessConfig {
            duration_s: 1800,
            checks_per_step: 4,
            ..HarnessConfig::default()
        }
    };
    let reports: Vec<Report> = Scenario::ALL.iter().map(|&s| run(s, &cfg)).collect();
    println!("{}", Report::header());
    for r in &reports {
        println!("{r}");
    }
    for r in &reports {
        println!("{}", serde_json::to_string(r).unwrap());
    }
    let total: u64 = reports
        .iter()
        .filter(|r| r.in_claim)
        .map(|r| r.checks)
        .sum();
    println!("total checks in the claim: {total}");
    for r in reports.iter().filter(|r| r.in_claim) {
        assert_eq!(r.violations, 0, "{}: TAI violations", r.scenario);
        assert_eq!(r.utc_violations, 0, "{}: UTC violations", r.scenario);
        assert_eq!(
            r.order_violations, 0,
            "{}: external consistency",
            r.scenario
        );
        assert!(
            r.transactions > 1000,
            "{}: too few transactions",
            r.scenario
        );
        assert!(r.checks > 500_000, "{}: too few checks", r.scenario);
    }
    assert!(total >= 10_000_000, "only {total} checks");
    for name in ["gnss-loss-10min", "gm-restart-60s"] {
        let r = reports.iter().find(|r| r.scenario == name).unwrap();
        let during = r.wou_during_fault_p50_ns.unwrap();
        let after = r.wou_after_recovery_p50_ns.unwrap();
        assert!(
            during > r.wou_before_p50_ns,
            "{name}: WOU did not grow during the fault"
        );
        assert!(
            after <= 2 * r.wou_before_p50_ns,
            "{name}: WOU did not recover"
        );
    }
}
