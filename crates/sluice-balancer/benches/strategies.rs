//! Per-pick cost of every strategy at 5, 50 and 500 nodes, a contended run with two threads on
//! one shared strategy, and the naive design as an in-run baseline.
//!
//! The naive baseline reproduces what many gateways do: one `Mutex` over a map keyed by
//! region name, a linear scan, and `random.choices`-style sampling that builds a fresh
//! cumulative-weights vector per pick.

use std::{
    collections::HashMap,
    hint::black_box,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use sluice_balancer::{
    Caller, PickView, Strategy, StrategyKind, WeightedRoundRobin,
    test_util::{EntropySource, snapshot_spread},
};
use sluice_region_model::{GeoPoint, Snapshot};

const SIZES: [usize; 3] = [5, 50, 500];
const SEOUL: GeoPoint = GeoPoint::new(37.56, 126.97);

/// The caller's location, converted once (as a client does per call).
fn seoul() -> Caller {
    Caller::new(SEOUL)
}

/// A snapshot whose nodes carry latencies, errors and load, read at an instant 3 s after the
/// last update so that every estimate read pays its decay.
fn world(n: usize) -> (Snapshot, Instant, Vec<sluice_region_model::InFlightGuard>) {
    let t0 = Instant::now();
    let snapshot = snapshot_spread(n);
    let mut guards = Vec::new();
    for (i, node) in snapshot.nodes().iter().enumerate() {
        node.metrics().record_success(Duration::from_millis(20 + (i as u64 * 7) % 200), t0);
        if i % 5 == 0 {
            node.metrics().record_failure(t0);
        }
        for _ in 0..(i % 4) {
            guards.push(node.metrics().start_request());
        }
    }
    (snapshot, t0 + Duration::from_secs(3), guards)
}

fn strategy(kind: StrategyKind, snapshot: &Snapshot) -> Box<dyn Strategy> {
    if kind == StrategyKind::WeightedRoundRobin {
        let wrr = WeightedRoundRobin::with_seed(1);
        wrr.prepare(snapshot);
        Box::new(wrr)
    } else {
        kind.build_seeded(1)
    }
}

// ===== naive baseline =====

struct NaiveNode {
    weight: f64,
    mean_latency_ms: f64,
    healthy: bool,
}

struct Naive {
    nodes: Mutex<HashMap<String, NaiveNode>>,
    rng: Mutex<SmallRng>,
}

impl Naive {
    fn new(n: usize) -> Self {
        let nodes = (0..n)
            .map(|i| {
                let node = NaiveNode { weight: 1.0, mean_latency_ms: 20.0 + ((i * 7) % 200) as f64, healthy: true };
                (format!("region-{i}"), node)
            })
            .collect();
        Self { nodes: Mutex::new(nodes), rng: Mutex::new(SmallRng::seed_from_u64(1)) }
    }

    /// Response-time weighted choice, the naive way.
    fn pick(&self) -> Option<String> {
        let nodes = self.nodes.lock();
        let mut names = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for (name, node) in nodes.iter() {
            if node.healthy {
                total += node.weight / node.mean_latency_ms;
                names.push(name);
                cumulative.push(total);
            }
        }
        if names.is_empty() {
            return None;
        }
        let x = self.rng.lock().random::<f64>() * total;
        let i = cumulative.partition_point(|&c| c <= x).min(names.len() - 1);
        Some(names[i].clone())
    }
}

// ===== benches =====

fn single_thread(c: &mut Criterion) {
    for kind in StrategyKind::ALL {
        let mut group = c.benchmark_group(kind.name());
        for n in SIZES {
            let (snapshot, now, _guards) = world(n);
            let s = strategy(kind, &snapshot);
            let mut entropy = EntropySource::new(7);
            let caller = seoul();
            group.bench_with_input(BenchmarkId::new("nodes", n), &n, |b, _| {
                b.iter(|| {
                    let view = PickView::all(&snapshot, now, entropy.next_u64()).with_caller(caller);
                    black_box(s.pick(black_box(&view)))
                })
            });
        }
        group.finish();
    }
    // Adaptive compares every node up to 8 candidates; this is its pure-P2C setting, for the
    // cost of that choice.
    let mut group = c.benchmark_group("adaptive-p2c-only");
    for n in SIZES {
        let (snapshot, now, _guards) = world(n);
        let s = sluice_balancer::Adaptive::builder().full_scan_max(0).build().expect("valid");
        let mut entropy = EntropySource::new(7);
        group.bench_with_input(BenchmarkId::new("nodes", n), &n, |b, _| {
            b.iter(|| black_box(s.pick(black_box(&PickView::all(&snapshot, now, entropy.next_u64())))))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("naive-baseline");
    for n in SIZES {
        let naive = Naive::new(n);
        group.bench_with_input(BenchmarkId::new("nodes", n), &n, |b, _| b.iter(|| black_box(naive.pick())));
    }
    group.finish();
}

/// Two threads pick from one shared strategy at once; reports time per pick per thread.
fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended-2-threads");
    for kind in StrategyKind::ALL {
        let (snapshot, now, _guards) = world(5);
        let snapshot = Arc::new(snapshot);
        let s: Arc<dyn Strategy> = Arc::from(strategy(kind, &snapshot));
        group.bench_function(BenchmarkId::new(kind.name(), 5), |b| {
            b.iter_custom(|iters| {
                run_two(iters, |seed| {
                    let (s, snapshot) = (Arc::clone(&s), Arc::clone(&snapshot));
                    move |iters| {
                        let mut entropy = EntropySource::new(seed);
                        for _ in 0..iters {
                            let view = PickView::all(&snapshot, now, entropy.next_u64()).with_caller(seoul());
                            black_box(s.pick(black_box(&view)));
                        }
                    }
                })
            })
        });
    }
    let naive = Arc::new(Naive::new(5));
    group.bench_function(BenchmarkId::new("naive-baseline", 5), |b| {
        b.iter_custom(|iters| {
            run_two(iters, |_| {
                let naive = Arc::clone(&naive);
                move |iters| {
                    for _ in 0..iters {
                        black_box(naive.pick());
                    }
                }
            })
        })
    });
    group.finish();
}

/// Runs `make(seed)(iters)` on two threads started together; returns the mean of the two
/// threads' own elapsed times, so the figure is the per-thread cost of one pick × iters.
fn run_two<F, W>(iters: u64, make: F) -> Duration
where
    F: Fn(u64) -> W,
    W: FnOnce(u64) + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            let work = make(t + 1);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                work(iters);
                start.elapsed()
            })
        })
        .collect();
    let total: Duration = handles.into_iter().map(|h| h.join().expect("bench thread")).sum();
    total / 2
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = single_thread, contended
}
criterion_main!(benches);
