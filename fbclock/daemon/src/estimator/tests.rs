//! Synthetic exchanges against a known truth: a local oscillator with a
//! frequency error (and steps of it), asymmetric and spiky paths, and a
//! grandmaster with a known error. Every published interval must contain
//! true TAI.

use super::*;
use fbclock::truetime;
use ptp_proto::clock_accuracy;

const US: i64 = 1_000;
const MS: i64 = 1_000_000;
/// True TAI at the start of the simulation (2026-ish).
const TAI0: i64 = 1_795_627_303 * NS_PER_S;

fn locked_gm() -> GmInfo {
    GmInfo {
        identity: 0x3cfd_fefe_ff00_a0b0,
        clock_class: clock_class::LOCK,
        clock_accuracy: clock_accuracy::NS_100,
        utc_offset_s: 37,
        utc_offset_valid: true,
        ptp_timescale: true,
        leap61: false,
        leap59: false,
    }
}

/// A local clock `L(τ) = L0 + ∫(1 + f)` of true time τ (TAI ns), with
/// frequency steps.
#[derive(Clone, Debug)]
struct Osc {
    /// (true time of the segment start, local time there, fractional frequency)
    segs: Vec<(i64, i64, f64)>,
}

impl Osc {
    fn new(l0: i64, f: f64) -> Self {
        Self {
            segs: vec![(TAI0, l0, f)],
        }
    }

    fn at(&self, tau: i64) -> i64 {
        let &(t0, l0, f) = self
            .segs
            .iter()
            .rev()
            .find(|s| s.0 <= tau)
            .unwrap_or(&self.segs[0]);
        let d = tau - t0;
        l0 + d + (d as f64 * f).round() as i64
    }

    fn step(&mut self, tau: i64, f: f64) {
        let l = self.at(tau);
        self.segs.push((tau, l, f));
    }
}

/// One exchange starting at true time `tau`: Delay_Req up (`up` ns), server
/// turnaround, Sync down (`down` ns); the GM's clock is off by `gm_err`.
fn exchange(osc: &Osc, tau: i64, up: i64, down: i64, gm_err: i64, gm: GmInfo) -> Exchange {
    let turnaround = 30 * US;
    let t3 = osc.at(tau);
    let t4 = tau + up + gm_err;
    let t1 = tau + up + turnaround + gm_err;
    let t2 = osc.at(tau + up + turnaround + down);
    Exchange {
        t1,
        t2,
        t3,
        t4,
        cf_sync: TimeInterval::ZERO,
        cf_req: TimeInterval::ZERO,
        gm,
    }
}

fn config() -> EstimatorConfig {
    EstimatorConfig {
        interval_ns: NS_PER_S,
        ..EstimatorConfig::default()
    }
}

/// Checks that the snapshot published at `pub_tau` and read at `read_tau`
/// contains true TAI; returns the half-width.
#[track_caller]
fn check(est: &Estimator, osc: &Osc, pub_tau: i64, read_tau: i64) -> Option<i64> {
    let snap = est.snapshot(osc.at(pub_tau));
    match truetime::compute(&snap, osc.at(read_tau), None) {
        Ok(tt) => {
            assert!(
                tt.contains(read_tau),
                "truth {read_tau} outside [{}, {}] (off by {} ns, half-width {} ns) {snap:?}",
                tt.earliest_ns,
                tt.latest_ns,
                tt.midpoint_ns() - read_tau,
                tt.wou_ns() / 2
            );
            Some(tt.wou_ns() / 2)
        }
        // No rate yet, or a rate so uncertain that the growth saturates the
        // record (> 65.5 µs/s): nothing usable, which is honest.
        Err(truetime::Error::NoData | truetime::Error::WouTooBig { .. }) => None,
        Err(e) => panic!("unexpected {e:?} for {snap:?}"),
    }
}

/// Runs exchanges every second from `from` for `n` seconds with a path
/// function; checks the truth at several instants after each one. Returns
/// the largest half-width seen.
fn run(
    est: &mut Estimator,
    osc: &Osc,
    from: i64,
    n: i64,
    mut path: impl FnMut(i64) -> (i64, i64),
    gm_err: i64,
) -> i64 {
    let mut worst = 0;
    for i in 0..n {
        let tau = from + i * NS_PER_S;
        let (up, down) = path(i);
        let v = est.feed(&exchange(osc, tau, up, down, gm_err, locked_gm()));
        assert!(!matches!(v, Verdict::Rejected(Reject::NegativeDelay)));
        for frac in [1, 250, 500, 999] {
            let t = tau + frac * MS;
            if let Some(h) = check(est, osc, t - 5 * MS, t) {
                worst = worst.max(h);
            }
        }
    }
    worst
}

#[test]
fn symmetric_exchange_gives_exact_offset_and_the_documented_bound() {
    let osc = Osc::new(123 * NS_PER_S, 0.0);
    let mut est = Estimator::new(config());
    let x = exchange(&osc, TAI0, 10 * US, 10 * US, 0, locked_gm());
    let Verdict::Accepted {
        measurement: m,
        bound_ns,
        reset,
    } = est.feed(&x)
    else {
        panic!("rejected")
    };
    assert!(!reset);
    assert_eq!(m.offset_ns, 123 * NS_PER_S - TAI0);
    assert!((m.delay_ns - 20_000.0).abs() < 1e-9);
    // Midpoint TAI is exact with symmetric paths.
    assert_eq!(m.tai_ns, TAI0 + 25 * US);
    assert_eq!(m.span_ns, 50 * US);
    // W = δ/2 + 100 ns + 1 µs + 1 ns + 500 ppm · 50 µs / 2 (no rate yet).
    let expect = 10_000.0 + 100.0 + 1_000.0 + 1.0 + 500e-6 * 50_000.0 / 2.0;
    assert!((bound_ns - expect).abs() < 1e-6, "{bound_ns} vs {expect}");
    // One exchange: no rate, nothing published as synced.
    assert_eq!(est.state(osc.at(TAI0)), SyncState::Unsynced);
    assert_eq!(est.snapshot(osc.at(TAI0)).flags, 0);
    est.feed(&exchange(
        &osc,
        TAI0 + NS_PER_S,
        10 * US,
        10 * US,
        0,
        locked_gm(),
    ));
    assert_eq!(est.state(osc.at(TAI0 + NS_PER_S)), SyncState::Synced);
    let s = est.snapshot(osc.at(TAI0 + NS_PER_S + 10 * MS));
    assert_eq!(s.flags, FLAG_SYNCED);
    assert!(s.coef.abs() < 1e-9, "{}", s.coef);
    // Growth: 20 ppm assumed drift + the fit's worst case ((W0 + W1) / 1 s).
    let (_, unc) = est.rate().unwrap();
    assert!((s.holdover_ns_per_s - 20_000.0 - unc).abs() < 1e-3);
    assert!(unc > 22_000.0 && unc < 23_000.0, "{unc}");
}

#[test]
fn correction_fields_are_subtracted() {
    let osc = Osc::new(0, 0.0);
    let est = Estimator::new(config());
    let mut x = exchange(&osc, TAI0, 10 * US, 30 * US, 0, locked_gm());
    // A transparent clock accounted for 20 µs of the Sync's path.
    x.cf_sync = TimeInterval::from_nanos(20 * US);
    let m = est.measure(&x).unwrap();
    assert!((m.delay_ns - 20_000.0).abs() < 1e-9);
    assert_eq!(m.offset_ns, -TAI0);
}

#[test]
fn truth_stays_inside_with_asymmetric_delays() {
    for (up, down) in [(US, 200 * US), (200 * US, US), (0, 50 * US), (50 * US, 0)] {
        let osc = Osc::new(5_000 * NS_PER_S, 37e-6);
        let mut est = Estimator::new(config());
        let worst = run(&mut est, &osc, TAI0, 20, |_| (up, down), 0);
        // The estimate is off by (down − up)/2 but the bound holds it.
        assert!(worst > (up - down).abs() / 2, "{worst}");
        assert_eq!(est.counters().accepted, 20);
    }
}

#[test]
fn random_asymmetric_paths_with_gm_error_never_escape() {
    // xorshift, deterministic
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let osc = Osc::new(77 * NS_PER_S, -80e-6);
    let mut est = Estimator::new(config());
    // GM error 90 ns, inside its announced 100 ns.
    let worst = run(
        &mut est,
        &osc,
        TAI0,
        60,
        |_| {
            let up = 2 * US + (rnd() % 40_000) as i64;
            let down = 2 * US + (rnd() % 40_000) as i64;
            (up, down)
        },
        90,
    );
    assert!(worst < 300 * US, "{worst}");
    assert!(est.counters().accepted > 10, "{:?}", est.counters());
}

#[test]
fn delay_spikes_are_rejected_and_the_model_extrapolates() {
    let osc = Osc::new(0, 12e-6);
    let mut est = Estimator::new(config());
    run(&mut est, &osc, TAI0, 10, |_| (8 * US, 8 * US), 0);
    let before = est.counters();
    // A queue builds up on the way back: 2 ms one way (asymmetric spike).
    let tau = TAI0 + 10 * NS_PER_S;
    let v = est.feed(&exchange(&osc, tau, 8 * US, 2 * MS, 0, locked_gm()));
    assert!(
        matches!(v, Verdict::Rejected(Reject::DelaySpike { .. })),
        "{v:?}"
    );
    assert_eq!(est.counters().rejected, before.rejected + 1);
    // Still inside, and the bound keeps growing from the last accepted exchange.
    let h1 = check(&est, &osc, tau + 5 * MS, tau + 10 * MS).unwrap();
    let h2 = check(&est, &osc, tau + 900 * MS, tau + 900 * MS).unwrap();
    assert!(h2 > h1);
    // Normal exchanges are accepted again.
    run(&mut est, &osc, tau + NS_PER_S, 5, |_| (8 * US, 9 * US), 0);
    assert_eq!(est.counters().rejected, before.rejected + 1);
}

#[test]
fn a_lasting_delay_change_is_accepted_after_the_delay_window() {
    let osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    run(&mut est, &osc, TAI0, 5, |_| (5 * US, 5 * US), 0);
    // The route changes: 100 µs each way from now on.
    let mut accepted_at = None;
    for i in 0..40 {
        let tau = TAI0 + (5 + i) * NS_PER_S;
        if let Verdict::Accepted { .. } =
            est.feed(&exchange(&osc, tau, 100 * US, 100 * US, 0, locked_gm()))
        {
            accepted_at.get_or_insert(i);
        }
        // Long holdover is honest, never wrong.
        let _ = check(&est, &osc, tau + MS, tau + 2 * MS);
    }
    // Once the last short delay has left the 32-exchange window.
    assert_eq!(accepted_at, Some(31));
}

#[test]
fn frequency_step_within_max_drift_keeps_truth_inside() {
    let mut osc = Osc::new(1_000 * NS_PER_S, 25e-6);
    let mut est = Estimator::new(config());
    run(&mut est, &osc, TAI0, 12, |_| (10 * US, 10 * US), 0);
    // +19 ppm step (max_drift is 20 ppm) just after an exchange; then the
    // daemon loses three exchanges in a row.
    let tau = TAI0 + 12 * NS_PER_S;
    osc.step(tau - NS_PER_S + 2 * MS, 44e-6);
    for ms in [10, 500, 1_000, 2_000, 3_000, 3_900] {
        check(
            &est,
            &osc,
            tau - NS_PER_S + ms * MS,
            tau - NS_PER_S + ms * MS,
        );
        est.lost();
    }
    let worst = run(
        &mut est,
        &osc,
        tau + 3 * NS_PER_S,
        15,
        |_| (10 * US, 10 * US),
        0,
    );
    assert!(worst < 150 * US, "{worst}");
    assert_eq!(est.counters().lost, 6);
    assert_eq!(est.resets(), 0);
    // The rate converged on the new frequency: coef ≈ −44 ppm (TAI per local).
    let (coef, _) = est.rate().unwrap();
    assert!((coef + 44e-6 / (1.0 + 44e-6)).abs() < 2e-6, "{coef}");
}

#[test]
fn frequency_step_beyond_the_assumption_is_detected() {
    let mut osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    run(&mut est, &osc, TAI0, 10, |_| (10 * US, 10 * US), 0);
    // 300 ppm step, far beyond 20 ppm, then 20 s without exchanges.
    let tau = TAI0 + 10 * NS_PER_S;
    osc.step(tau, 300e-6);
    let next = tau + 20 * NS_PER_S;
    let v = est.feed(&exchange(&osc, next, 10 * US, 10 * US, 0, locked_gm()));
    assert!(matches!(v, Verdict::Accepted { reset: true, .. }), "{v:?}");
    assert_eq!(est.resets(), 1);
    // Restarted: no rate until the next exchange.
    assert_eq!(est.state(osc.at(next)), SyncState::Unsynced);
}

#[test]
fn grandmaster_accuracy_enters_the_bound_and_unknown_refuses() {
    let osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    let mut gm = locked_gm();
    gm.clock_accuracy = clock_accuracy::UNKNOWN;
    for i in 0..3 {
        let v = est.feed(&exchange(
            &osc,
            TAI0 + i * NS_PER_S,
            10 * US,
            10 * US,
            0,
            gm,
        ));
        assert_eq!(v, Verdict::Rejected(Reject::GmAccuracyUnknown(0xFE)));
    }
    assert_eq!(est.snapshot(osc.at(TAI0 + 3 * NS_PER_S)).flags, 0);
    assert_eq!(est.state(0), SyncState::Unsynced);
    gm.clock_accuracy = clock_accuracy::GREATER_THAN_10_S;
    assert!(matches!(
        est.feed(&exchange(
            &osc,
            TAI0 + 3 * NS_PER_S,
            10 * US,
            10 * US,
            0,
            gm
        )),
        Verdict::Rejected(Reject::GmAccuracyUnknown(0x31))
    ));
    // 10 µs accuracy, and the GM is really 9.9 µs off: still inside.
    gm.clock_accuracy = clock_accuracy::US_10;
    for i in 4..20 {
        let tau = TAI0 + i * NS_PER_S;
        let v = est.feed(&exchange(&osc, tau, 10 * US, 10 * US, 9_900, gm));
        if let Verdict::Accepted { bound_ns, .. } = v {
            assert!(bound_ns > 10_000.0 + 10_000.0 + 1_000.0);
        }
        check(&est, &osc, tau + MS, tau + 500 * MS);
    }
    let (_, w) = est.last().unwrap();
    assert!(w < 22_000.0, "{w}");
}

#[test]
fn gm_holdover_is_flagged_and_grows_the_bound() {
    let osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    run(&mut est, &osc, TAI0, 5, |_| (10 * US, 10 * US), 0);
    let growth = est.holdover_ppb();
    let mut gm = locked_gm();
    gm.clock_class = clock_class::HOLDOVER;
    gm.clock_accuracy = clock_accuracy::US_1;
    let tau = TAI0 + 5 * NS_PER_S;
    est.feed(&exchange(&osc, tau, 10 * US, 10 * US, 0, gm));
    let s = est.snapshot(osc.at(tau));
    assert_eq!(s.flags, FLAG_SYNCED | FLAG_GM_HOLDOVER);
    let (_, unc) = est.rate().unwrap();
    assert!((est.holdover_ppb() - (20_000.0 + unc + 100.0)).abs() < 1e-6);
    assert!(growth > 20_000.0);
    assert_eq!(est.grandmaster().unwrap().clock_class, 7);
}

#[test]
fn local_holdover_after_two_intervals() {
    let osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    run(&mut est, &osc, TAI0, 4, |_| (10 * US, 10 * US), 0);
    let last = TAI0 + 3 * NS_PER_S;
    assert_eq!(est.state(osc.at(last + 1_900 * MS)), SyncState::Synced);
    assert_eq!(est.state(osc.at(last + 2_100 * MS)), SyncState::Holdover);
    let s = est.snapshot(osc.at(last + 2_100 * MS));
    assert_eq!(s.flags, FLAG_SYNCED | FLAG_HOLDOVER);
    // The bound at 9 s: W + growth · 9 s, still containing the truth.
    check(
        &est,
        &osc,
        last + 9 * NS_PER_S,
        last + 9 * NS_PER_S + 900 * MS,
    );
}

#[test]
fn broken_corrections_and_negative_delays_are_rejected() {
    let osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    let mut x = exchange(&osc, TAI0, 10 * US, 10 * US, 0, locked_gm());
    x.cf_req = TimeInterval::from_nanos(-1);
    assert_eq!(est.feed(&x), Verdict::Rejected(Reject::BadCorrection));
    x.cf_req = TimeInterval::from_nanos(11 * NS_PER_S);
    assert_eq!(est.feed(&x), Verdict::Rejected(Reject::BadCorrection));
    x.cf_req = TimeInterval::ZERO;
    x.t2 = x.t3 - 5;
    assert_eq!(est.feed(&x), Verdict::Rejected(Reject::NegativeDelay));
    x.t1 = i64::MIN;
    x.t2 = i64::MAX;
    assert!(matches!(est.feed(&x), Verdict::Rejected(_)));
    let c = est.counters();
    assert_eq!((c.attempted, c.rejected, c.accepted), (4, 4, 0));
}

#[test]
fn a_new_grandmaster_restarts_the_model() {
    let osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    run(&mut est, &osc, TAI0, 3, |_| (10 * US, 10 * US), 0);
    let mut gm = locked_gm();
    gm.identity = 42;
    let v = est.feed(&exchange(
        &osc,
        TAI0 + 3 * NS_PER_S,
        10 * US,
        10 * US,
        0,
        gm,
    ));
    assert!(matches!(v, Verdict::Accepted { reset: true, .. }));
}

#[test]
fn leap_seconds_from_the_announce() {
    let osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    // 2016-12-31 12:00:00 UTC = 1483185600 POSIX; TAI = UTC + 36 then.
    let tai = (1_483_185_600 + 36) * NS_PER_S;
    let mut gm = locked_gm();
    gm.utc_offset_s = 36;
    gm.leap61 = true;
    for i in 0..3 {
        est.feed(&exchange(&osc, tai + i * NS_PER_S, 10 * US, 10 * US, 0, gm));
    }
    let s = est.snapshot(osc.at(tai + 3 * NS_PER_S));
    // 2017-01-01 00:00:00 UTC = 1483228800; the clock goes back to 23:59:59
    // at TAI 1483228800 + 36.
    assert_eq!(s.leap_tai_ns, (1_483_228_800 + 36) * NS_PER_S);
    assert_eq!((s.utc_pre_s, s.utc_post_s), (36, 37));
    // Flags still up just after the leap (GM late): the instant stays.
    let after = (1_483_228_800 + 37 + 5) * NS_PER_S;
    est.feed(&exchange(&osc, after, 10 * US, 10 * US, 0, gm));
    assert_eq!(
        est.snapshot(osc.at(after)).leap_tai_ns,
        (1_483_228_800 + 36) * NS_PER_S
    );
    // The GM switched: no leap pending, offset 37.
    gm.leap61 = false;
    gm.utc_offset_s = 37;
    est.feed(&exchange(&osc, after + NS_PER_S, 10 * US, 10 * US, 0, gm));
    let s = est.snapshot(osc.at(after + NS_PER_S));
    assert_eq!((s.leap_tai_ns, s.utc_pre_s, s.utc_post_s), (0, 37, 37));

    // A negative leap: 23:59:59 is skipped.
    let mut est = Estimator::new(config());
    gm.leap59 = true;
    for i in 0..2 {
        est.feed(&exchange(&osc, tai + i * NS_PER_S, 10 * US, 10 * US, 0, gm));
    }
    let s = est.snapshot(osc.at(tai + 2 * NS_PER_S));
    assert_eq!(s.leap_tai_ns, (1_483_228_800 - 1 + 37) * NS_PER_S);
    assert_eq!((s.utc_pre_s, s.utc_post_s), (37, 36));
}

#[test]
fn arb_timescale_policies() {
    let osc = Osc::new(0, 0.0);
    let mut gm = locked_gm();
    gm.ptp_timescale = false;
    // The GM serves UTC numbers (ptp4l -S): its "time" is TAI − 37 s.
    let utc_exchange = |tau: i64| {
        let mut x = exchange(&osc, tau, 10 * US, 10 * US, 0, gm);
        x.t1 -= 37 * NS_PER_S;
        x.t4 -= 37 * NS_PER_S;
        x
    };
    let mut as_is = Estimator::new(config());
    let mut utc = Estimator::new(EstimatorConfig {
        arb_timescale: ArbTimescale::Utc,
        ..config()
    });
    for i in 0..3 {
        as_is.feed(&utc_exchange(TAI0 + i * NS_PER_S));
        utc.feed(&utc_exchange(TAI0 + i * NS_PER_S));
    }
    let t = TAI0 + 3 * NS_PER_S;
    let a = truetime::compute(&as_is.snapshot(osc.at(t)), osc.at(t), None).unwrap();
    assert!(a.contains(t - 37 * NS_PER_S));
    assert_eq!(as_is.snapshot(osc.at(t)).utc_pre_s, 0);
    let s = utc.snapshot(osc.at(t));
    let b = truetime::compute(&s, osc.at(t), None).unwrap();
    assert!(b.contains(t));
    assert_eq!(s.utc_pre_s, 37);
    assert!(truetime::to_utc(&s, b).contains(t - 37 * NS_PER_S));
}

#[test]
fn hopeless_bounds_publish_no_rate() {
    // A grandmaster that only promises 1 s: two exchanges a second apart say
    // nothing about the local rate (worse than the 500 ppm assumed anyway).
    let osc = Osc::new(0, 0.0);
    let mut est = Estimator::new(config());
    let mut gm = locked_gm();
    gm.clock_accuracy = clock_accuracy::S_1;
    for i in 0..3 {
        assert!(matches!(
            est.feed(&exchange(
                &osc,
                TAI0 + i * NS_PER_S,
                10 * US,
                10 * US,
                0,
                gm
            )),
            Verdict::Accepted { .. }
        ));
    }
    assert_eq!(est.rate(), None);
    assert_eq!(est.snapshot(osc.at(TAI0 + 3 * NS_PER_S)).flags, 0);
}
