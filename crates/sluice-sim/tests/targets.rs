//! The locality targets of issue 10 that hold on every seed measured, checked on the full-length
//! built-in scenarios for the default strategy: seed 1, and seeds 1–5 for the two targets that
//! once missed on some seeds (throttle share, recover's last fifth). Virtual time only; the
//! full table over seeds 1–5 is in docs/benchmarks.md (`cargo xtask bench`).

use sluice_balancer::StrategyKind;
use sluice_sim::{Contender, RunReport, Scenario, simulate};

/// Seeds over which docs/benchmarks.md checks the targets.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=5;

fn run_seed(name: &str, contender: Contender, seed: u64) -> RunReport {
    let scenario = Scenario::builtin(name).expect("built-in").with_seed(seed);
    simulate(&scenario, contender).expect("valid scenario")
}

fn run(name: &str, contender: Contender) -> RunReport {
    run_seed(name, contender, 1)
}

fn default_run_seed(name: &str, seed: u64) -> RunReport {
    let r = run_seed(name, Contender::Strategy(StrategyKind::default()), seed);
    assert!(r.default, "the default strategy's run is marked as such");
    r
}

fn default_run(name: &str) -> RunReport {
    default_run_seed(name, 1)
}

/// Share of `group` in the attempts of buckets `from..to` (seconds, 1 s buckets).
fn share(run: &RunReport, group: &str, from: usize, to: usize) -> f64 {
    run.share.share(group, from, to).expect("group")
}

#[test]
fn steady_stays_in_seoul() {
    let (r, oracle) = (default_run("steady"), run("steady", Contender::Oracle));
    let seoul = share(&r, "seoul", 0, usize::MAX);
    assert!(seoul >= 0.95, "Seoul carried {:.1} % of attempts, target ≥ 95 %", seoul * 100.0);
    assert!(
        r.latency_ms.p50 <= 1.05 * oracle.latency_ms.p50,
        "p50 {:?} vs oracle {:?}",
        r.latency_ms,
        oracle.latency_ms
    );
    assert_eq!(r.success_rate, 1.0);
}

#[test]
fn throttle_has_no_sawtooth() {
    let (r, oracle) = (default_run("throttle"), run("throttle", Contender::Oracle));
    // ≤ 2 % of calls answered 429: every 429 costs one retry, so retries per call bound it.
    assert!(r.retries_per_call <= 0.02, "{} retries per call, target ≤ 0.02", r.retries_per_call);
    assert!(r.success_rate >= 0.999, "{}", r.success_rate);
    assert!(
        r.latency_ms.p50 <= 1.05 * oracle.latency_ms.p50,
        "p50 {:?} vs oracle {:?}",
        r.latency_ms,
        oracle.latency_ms
    );
    assert!(
        r.latency_ms.p99 <= 1.2 * oracle.latency_ms.p99,
        "p99 {:?} vs oracle {:?}",
        r.latency_ms,
        oracle.latency_ms
    );
    // Seoul keeps carrying what it can while it throttles (40–140 s): far from none.
    let seoul = share(&r, "seoul", 40, 140);
    assert!(seoul >= 0.1, "Seoul carried {:.1} % while throttling", seoul * 100.0);
}

#[test]
fn throttle_keeps_seoul_near_the_oracles_share() {
    for seed in SEEDS {
        let (r, oracle) = (default_run_seed("throttle", seed), run_seed("throttle", Contender::Oracle, seed));
        let (mine, best) = (share(&r, "seoul", 0, usize::MAX), share(&oracle, "seoul", 0, usize::MAX));
        assert!(
            mine >= 0.85 * best,
            "seed {seed}: Seoul carried {:.1} % of attempts, the oracle {:.1} % ({:.3}×, target ≥ 0.85×)",
            mine * 100.0,
            best * 100.0,
            mine / best
        );
    }
}

#[test]
fn fast_fail_region_is_left_after_detection() {
    let r = default_run("fast-fail");
    let f = &r.failures[0];
    let after = f.first_attempt_share_after_detection.expect("the failure is detected");
    assert!(after <= 0.01, "{:.2} % of first attempts went to Tokyo after detection", after * 100.0);
    assert!(r.retries_per_call <= 0.05, "{} retries per call", r.retries_per_call);
    assert!(r.success_rate >= 0.999, "{}", r.success_rate);
}

#[test]
fn recover_comes_back_to_seoul() {
    for seed in SEEDS {
        let r = default_run_seed("recover", seed);
        // Seoul is down 60–90 s of a 180 s run; the last fifth is 144–180 s.
        let last = share(&r, "seoul", 144, 180);
        assert!(last >= 0.9, "seed {seed}: Seoul carried {:.1} % over the last fifth", last * 100.0);
        // Within 45 s of recovery, some 5 s bucket is back to ≥ 90 %.
        let back = (90..130).step_by(5).any(|b| share(&r, "seoul", b, b + 5) >= 0.9);
        assert!(back, "seed {seed}: Seoul never back to 90 % within 45 s of recovery");
        assert_eq!(r.success_rate, 1.0);
    }
}

#[test]
fn overload_spills_in_nearness_order() {
    let r = default_run("overload");
    let (tokyo, singapore, virginia) = (
        share(&r, "tokyo", 0, usize::MAX),
        share(&r, "singapore", 0, usize::MAX),
        share(&r, "virginia", 0, usize::MAX),
    );
    assert!(
        tokyo > singapore && singapore >= virginia,
        "tokyo {tokyo:.3}, singapore {singapore:.3}, virginia {virginia:.3}"
    );
    assert!(r.success_rate >= 0.999, "{}", r.success_rate);
}
