//! Cost of `HealthMonitor::record`, single-threaded and with two threads.
//!
//! Target: ≤ 100 ns per outcome.
//! On a shared machine, compare with the `baseline_*` id: the region-model update that every
//! `record(Success)` includes.

use std::{
    hint::black_box,
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_health::{HealthMonitor, Outcome, OutlierConfig};
use sluice_region_model::{GeoPoint, NodeId, Region, Snapshot};

const NODES: usize = 16;

fn monitor(config: OutlierConfig) -> (HealthMonitor, Instant) {
    let t0 = Instant::now();
    let regions = (0..NODES)
        .map(|i| Region::new(format!("r{i}"), format!("http://127.0.0.1:9/r{i}/v1"), GeoPoint::new(0.0, 0.0)));
    let snapshot = Snapshot::builder().epoch(t0).build(regions).unwrap();
    (HealthMonitor::new(Arc::new(snapshot), config), t0)
}

/// Failures are counted but never reach an ejection threshold, so the steady-state path is
/// measured rather than the rare ejection.
fn never_eject() -> OutlierConfig {
    OutlierConfig::builder().consecutive_failures(u32::MAX).failure_rate_min_requests(u32::MAX).build().unwrap()
}

/// The instant of the `i`-th call: 1 µs apart, as under heavy load.
#[inline]
fn at(t0: Instant, i: u64) -> Instant {
    t0 + Duration::from_micros(i)
}

/// Runs `f(i)` for `iters` values of `i` and returns the time taken.
fn run(iters: u64, mut f: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    start.elapsed()
}

type Case = (&'static str, fn(u64) -> Outcome, OutlierConfig);

fn cases() -> Vec<Case> {
    vec![
        ("success", |_| Outcome::Success { latency: Duration::from_millis(800) }, never_eject()),
        ("connect_error", |_| Outcome::ConnectError, never_eject()),
        (
            "server_error_503_retry_after",
            |_| Outcome::ServerError { status: 503, retry_after: Some(Duration::from_secs(2)) },
            never_eject(),
        ),
        ("rate_limited", |_| Outcome::RateLimited { retry_after: None }, never_eject()),
        (
            "rate_limited_retry_after",
            |_| Outcome::RateLimited { retry_after: Some(Duration::from_secs(2)) },
            never_eject(),
        ),
        (
            "mix_7_success_1_failure",
            |i| {
                if i % 8 == 7 {
                    Outcome::ConnectError
                } else {
                    Outcome::Success { latency: Duration::from_millis(500) }
                }
            },
            OutlierConfig::default(),
        ),
    ]
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("record/1_thread");
    for (name, outcome, config) in cases() {
        let (m, t0) = monitor(config);
        let node = NodeId::from_index(3);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| run(iters, |i| m.record(black_box(node), black_box(outcome(i)), at(t0, i))))
        });
    }
    // Baseline: the region-model update alone, which `record(Success)` includes.
    let (m, t0) = monitor(never_eject());
    let metrics = Arc::clone(m.snapshot().node(NodeId::from_index(3)).metrics());
    g.bench_function("baseline_node_metrics_record_success", |b| {
        b.iter_custom(|iters| run(iters, |i| metrics.record_success(black_box(Duration::from_millis(800)), at(t0, i))))
    });
    let (m, t0) = monitor(OutlierConfig::default());
    let mut out = Vec::with_capacity(NODES);
    g.bench_function("select_16_nodes", |b| {
        b.iter_custom(|iters| {
            run(iters, |i| {
                black_box(m.select(at(t0, i), |id| id.index() == 0, &mut out));
            })
        })
    });
    g.finish();
}

/// Two threads record concurrently (7 successes, then a failure); the reported time is per
/// outcome per thread: the slower thread's time for `iters` outcomes.
fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("record/2_threads");
    for (name, same_node) in [("distinct_nodes", false), ("same_node", true)] {
        let (m, t0) = monitor(OutlierConfig::default());
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let barrier = Arc::new(Barrier::new(2));
                let handles: Vec<_> = (0..2u32)
                    .map(|t| {
                        let m = m.clone();
                        let barrier = Arc::clone(&barrier);
                        let node = NodeId::from_index(if same_node { 5 } else { t * 7 });
                        thread::spawn(move || {
                            barrier.wait();
                            run(iters, |i| {
                                let outcome = if i % 8 == 7 {
                                    Outcome::ConnectError
                                } else {
                                    Outcome::Success { latency: Duration::from_millis(500) }
                                };
                                m.record(black_box(node), black_box(outcome), at(t0, i));
                            })
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).max().unwrap()
            })
        });
    }
    g.finish();
    // Wall time above counts the time a thread waits for a core, which dominates on a shared
    // machine. Thread CPU time per outcome is the figure that does not depend on other load.
    for (name, same_node) in [("distinct_nodes", false), ("same_node", true)] {
        let (m, t0) = monitor(OutlierConfig::default());
        let per_thread: Vec<f64> = (0..2u32)
            .map(|t| {
                let m = m.clone();
                let node = NodeId::from_index(if same_node { 5 } else { t * 7 });
                thread::spawn(move || cpu_ns_per_outcome(&m, node, t0))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        if per_thread.iter().all(|ns| *ns > 0.0) {
            eprintln!(
                "record/2_threads/{name}: thread cpu time {:.1} ns and {:.1} ns per outcome",
                per_thread[0], per_thread[1]
            );
        }
    }
}

/// Thread CPU time (`/proc/thread-self/schedstat`, Linux) per outcome over 5 M outcomes;
/// 0 where schedstat is missing.
fn cpu_ns_per_outcome(m: &HealthMonitor, node: NodeId, t0: Instant) -> f64 {
    fn cpu_ns() -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
    }
    const N: u64 = 5_000_000;
    let Some(start) = cpu_ns() else { return 0.0 };
    run(N, |i| {
        let outcome =
            if i % 8 == 7 { Outcome::ConnectError } else { Outcome::Success { latency: Duration::from_millis(500) } };
        m.record(black_box(node), black_box(outcome), at(t0, i));
    });
    cpu_ns().map_or(0.0, |end| end.saturating_sub(start) as f64 / N as f64)
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = single_thread, two_threads
}
criterion_main!(benches);
