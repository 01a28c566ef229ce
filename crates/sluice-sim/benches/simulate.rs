//! Simulating one million calls over five regions, per contender.
//!
//! The world is the built-in `steady` scenario with ten times the capacity, at 2,000 calls/s
//! for 500 simulated seconds: about 1,000,000 user calls per iteration.

use std::{hint::black_box, time::Duration};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice_balancer::StrategyKind;
use sluice_sim::{Contender, Scenario, simulate};

/// The million-call world.
fn million() -> Scenario {
    let mut s = Scenario::builtin("steady").expect("built-in");
    s.name = "million".to_owned();
    s.rate_per_s = 2_000.0;
    s.duration_s = 500.0;
    for r in &mut s.regions {
        r.capacity *= 10;
    }
    s
}

fn one_million_calls(c: &mut Criterion) {
    let scenario = million();
    let mut group = c.benchmark_group("simulate-1M-calls");
    group.sample_size(10).warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(12));
    for contender in [
        Contender::Oracle,
        Contender::Strategy(StrategyKind::Adaptive),
        Contender::Strategy(StrategyKind::WeightedRoundRobin),
    ] {
        group.bench_with_input(BenchmarkId::new(contender.name(), "5-regions"), &scenario, |b, s| {
            b.iter(|| {
                let report = simulate(black_box(s), contender).expect("valid scenario");
                assert!(report.calls > 950_000, "{} calls", report.calls);
                black_box(report)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, one_million_calls);
criterion_main!(benches);
