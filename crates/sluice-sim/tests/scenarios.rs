//! Each built-in scenario in reduced form (half the simulated time), asserting outcomes that
//! must hold whatever the tuning. Virtual time only: nothing here reads the clock.

use sluice_balancer::StrategyKind;
use sluice_sim::{Contender, RunReport, Scenario, ScenarioReport, simulate};

/// Runs every contender over the reduced built-in `name`.
fn run(name: &str) -> ScenarioReport {
    let scenario = Scenario::builtin(name).expect("built-in").time_scaled(0.5);
    ScenarioReport::run(&scenario, &Contender::all(), &mut |_, _| {}).expect("valid scenario")
}

fn get<'a>(report: &'a ScenarioReport, name: &str) -> &'a RunReport {
    report.run_of(name).unwrap_or_else(|| panic!("no run of {name}"))
}

/// The oracle is never worse than the naive baseline: median, p99, success.
fn check_oracle_beats_baseline(report: &ScenarioReport) {
    let (oracle, naive) = (get(report, "oracle"), get(report, "naive-baseline"));
    let ctx = format!("{}: oracle {:?} vs naive {:?}", report.scenario, oracle.latency_ms, naive.latency_ms);
    assert!(oracle.latency_ms.p50 <= naive.latency_ms.p50, "{ctx}");
    assert!(oracle.latency_ms.p99 <= naive.latency_ms.p99, "{ctx}");
    assert!(oracle.success_rate >= naive.success_rate, "{ctx}");
}

/// Attempts to `group` in bucket `b` of a run.
fn attempts(run: &RunReport, group: &str, b: usize) -> u32 {
    let g = run.share.groups.iter().position(|x| x == group).expect("group");
    run.share.attempts.get(b).map_or(0, |row| row[g])
}

/// Share of `group` in the attempts of buckets `from..to`.
fn share(run: &RunReport, group: &str, from: usize, to: usize) -> f64 {
    run.share.share(group, from, to).expect("group")
}

#[test]
fn steady() {
    let report = run("steady");
    check_oracle_beats_baseline(&report);
    for r in &report.runs {
        assert!(r.calls > 4_000, "{}: {} calls", r.strategy, r.calls);
        assert_eq!(r.success_rate, 1.0, "{}: nothing fails in steady", r.strategy);
        assert_eq!(r.retries_per_call, 0.0, "{}", r.strategy);
    }
    // The oracle sends most traffic to the two nearest regions.
    let oracle = get(&report, "oracle");
    assert!(share(oracle, "seoul", 0, 60) + share(oracle, "tokyo", 0, 60) > 0.9);
}

#[test]
fn degrade() {
    let report = run("degrade");
    check_oracle_beats_baseline(&report);
    // Seoul is slow from 30 s to 60 s. The latency-aware strategies move traffic away:
    // Seoul's share in the second half of the slow spell is under half its share before.
    for name in ["oracle", "adaptive", "response-time", "least-connections"] {
        let r = get(&report, name);
        let (before, during) = (share(r, "seoul", 20, 30), share(r, "seoul", 45, 60));
        assert!(during < before / 2.0, "{name}: seoul share {before:.3} before, {during:.3} during");
    }
    // Round-robin cannot: it keeps Seoul's fifth, and pays for it in the tail.
    let wrr = get(&report, "weighted-round-robin");
    assert!((share(wrr, "seoul", 45, 60) - 0.2).abs() < 0.02);
    assert!(get(&report, "adaptive").latency_ms.p99 < wrr.latency_ms.p99);
}

#[test]
fn outage() {
    check_outage(run("outage"));
}

#[test]
fn outage_drain() {
    check_outage(run("outage-drain"));
}

/// Outcomes that hold whether the calls Seoul was serving break or finish.
fn check_outage(report: ScenarioReport) {
    check_oracle_beats_baseline(&report);
    // Seoul refuses connections from 30 s to 60 s.
    for kind in StrategyKind::ALL {
        let r = get(&report, kind.name());
        let f = &r.failures[0];
        assert_eq!((f.kind.as_str(), f.target.as_str()), ("down", "seoul"));
        // Traffic stops: a quiet spell starts within a few seconds of the outage.
        let stop = f.time_to_stop_s.unwrap_or_else(|| panic!("{}: never stopped sending to seoul", r.strategy));
        assert!(stop < 3.0, "{}: stopped after {stop} s", r.strategy);
        // Seoul's share drops to zero: some whole second during the outage gets no attempt.
        assert!((31..60).any(|b| attempts(r, "seoul", b) == 0), "{}: seoul never went quiet", r.strategy);
        // Retries land elsewhere, so no user call fails.
        assert_eq!(f.failed_calls, 0, "{}", r.strategy);
        assert_eq!(r.success_rate, 1.0, "{}", r.strategy);
        // And traffic comes back after the outage.
        assert!(f.time_to_first_success_s.is_some(), "{}: seoul never came back", r.strategy);
    }
    // The oracle knows at once: it sends nothing new to Seoul.
    assert_eq!(get(&report, "oracle").failures[0].time_to_stop_s, Some(0.0));
    // The baseline has no passive detection and its three 60 s strikes never fit into a
    // 30 s outage: it keeps sending to Seoul throughout.
    let naive = &get(&report, "naive-baseline").failures[0];
    assert_eq!(naive.time_to_stop_s, None);
    assert!(naive.failed_attempts > 100, "{naive:?}");
}

#[test]
fn throttle() {
    let report = run("throttle");
    check_oracle_beats_baseline(&report);
    // 429s are retried elsewhere; every strategy that honours Retry-After keeps every call.
    for kind in StrategyKind::ALL {
        let r = get(&report, kind.name());
        assert!(r.success_rate > 0.999, "{}: {}", r.strategy, r.success_rate);
    }
    // The oracle never gets a 429: it knows the limit.
    assert_eq!(get(&report, "oracle").retries_per_call, 0.0);
}

#[test]
fn hot_spot() {
    let report = run("hot-spot");
    check_oracle_beats_baseline(&report);
    // As load rises, the oracle spills from Seoul to the other regions.
    let oracle = get(&report, "oracle");
    let (early, late) = (share(oracle, "seoul", 0, 10), share(oracle, "seoul", 80, 90));
    assert!(late < early, "seoul share {early:.3} early, {late:.3} late");
    assert!(get(&report, "adaptive").latency_ms.p99 <= get(&report, "weighted-round-robin").latency_ms.p99);
}

#[test]
fn many_nodes() {
    let report = run("many-nodes");
    check_oracle_beats_baseline(&report);
    let r = get(&report, "adaptive");
    assert_eq!(r.share.groups, ["seoul", "tokyo", "singapore", "frankfurt", "virginia"]);
    assert!(r.calls > 10_000);
    // Capacity-blind round-robin overloads the small nodes; load-aware adaptive does not.
    assert!(r.latency_ms.p99 < get(&report, "weighted-round-robin").latency_ms.p99);
}

#[test]
fn same_seed_gives_identical_json() {
    for name in ["outage", "throttle"] {
        let scenario = Scenario::builtin(name).unwrap().time_scaled(0.25);
        let json = |s: &Scenario| {
            sluice_sim::Report::run(std::slice::from_ref(s), &Contender::all(), &mut |_, _, _| {}).unwrap().to_json()
        };
        let (a, b) = (json(&scenario), json(&scenario));
        assert!(a == b, "{name}: two runs with seed {} differ", scenario.seed);
        let other = json(&scenario.clone().with_seed(2));
        assert_ne!(a, other, "{name}: the seed has no effect");
    }
}

#[test]
fn scenario_from_toml_runs() {
    let scenario = Scenario::from_toml(
        r#"
        name = "two-regions"
        duration_s = 20.0
        rate_per_s = 50.0
        caller = { lat = 37.5665, lon = 126.978 }

        [[regions]]
        id = "near"
        lat = 37.5
        lon = 127.0
        rtt_ms = 10.0
        capacity = 8
        service_median_ms = 200.0
        service_sigma = 0.5

        [[regions]]
        id = "far"
        lat = 38.9
        lon = -77.0
        rtt_ms = 150.0
        capacity = 64
        service_median_ms = 200.0
        service_sigma = 0.5

        [[phases]]
        kind = "errors"
        target = "near"
        start_s = 5.0
        end_s = 10.0
        rate = 1.0
        status = 500
        "#,
    )
    .unwrap();
    let r = simulate(&scenario, Contender::Strategy(StrategyKind::Adaptive)).unwrap();
    assert!(r.calls > 800);
    assert_eq!(r.success_rate, 1.0, "errors are retried on the other region");
    let f = &r.failures[0];
    assert_eq!(f.kind, "errors");
    assert!(f.failed_attempts > 0 && f.time_to_stop_s.is_some(), "{f:?}");
}

#[test]
fn a_custom_strategy_runs_through_the_same_path() {
    let scenario = Scenario::builtin("degrade").unwrap().time_scaled(0.2);
    let built_in = simulate(&scenario, Contender::Strategy(StrategyKind::Adaptive)).unwrap();
    let custom =
        sluice_sim::simulate_strategy(&scenario, Box::new(sluice_balancer::Adaptive::new()), &mut |_| {}).unwrap();
    assert_eq!(custom, built_in);
    // A different setting is a different run.
    let tuned = sluice_balancer::Adaptive::builder().full_scan_max(0).build().unwrap();
    let tuned = sluice_sim::simulate_strategy(&scenario, Box::new(tuned), &mut |_| {}).unwrap();
    assert_ne!(tuned, built_in);
}
