//! Per-pick cost of every strategy at 5, 50 and 500 nodes, a contended run with two threads on
//! one shared strategy, and two in-run baselines.
//!
//! * `naive-baseline` reproduces what many gateways do: one `Mutex` over a map keyed by
//!   region name, a linear scan, and `random.choices`-style sampling that builds a fresh
//!   cumulative-weights vector per pick.
//! * `plain-vec-scan/<strategy>` is the same choice as `<strategy>` done the plain way, and
//!   not a strawman: a `Vec` of plain structs, no lock, no allocation, one linear scan per
//!   pick. `plain-vec-scan/locality` takes the nearest node with room (largest dot product of
//!   unit vectors, so no trigonometry); `plain-vec-scan/response-time` draws in proportion to
//!   weight / latency (two passes over the `Vec`).
//!
//! The clock advances by [`STEP`] per pick (1 µs: a million picks per second), so time-based
//! state behaves as it does under load: `response-time` rebuilds its table every 10 ms of
//! that clock, i.e. once per 10,000 picks. `response-time-rebuild-every-pick` steps the clock
//! by 11 ms instead, the cost when calls are sparse and each pick finds the table stale.

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

/// How far the clock moves per pick.
const STEP: Duration = Duration::from_micros(1);

/// A clock that moves by a fixed step on every read, from the world's `now`.
#[derive(Clone, Copy)]
struct Clock {
    at: Instant,
    step: Duration,
}

impl Clock {
    fn new(at: Instant, step: Duration) -> Self {
        Self { at, step }
    }

    #[inline]
    fn tick(&mut self) -> Instant {
        self.at += self.step;
        self.at
    }
}

/// The caller's location, converted once (as a client does per call).
fn seoul() -> Caller {
    Caller::new(SEOUL)
}

/// A snapshot whose nodes carry latencies (established: more than the 200 answers after
/// which `locality` compares service times), errors and load, read from an instant 3 s after
/// the last update so that every estimate read pays its decay.
fn world(n: usize) -> (Snapshot, Instant, Vec<sluice_region_model::InFlightGuard>) {
    let t0 = Instant::now();
    let snapshot = snapshot_spread(n);
    let mut guards = Vec::new();
    for (i, node) in snapshot.nodes().iter().enumerate() {
        for _ in 0..=sluice_balancer::ESTABLISHED_SAMPLES {
            node.metrics().record_success(Duration::from_millis(20 + (i as u64 * 7) % 200), t0);
        }
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

// ===== plain Vec baselines =====

/// One node of the plain baseline: plain fields, no atomics.
struct PlainNode {
    unit: [f64; 3],
    weight: f64,
    latency_ms: f64,
    in_flight: u32,
    limit: u32,
    healthy: bool,
}

/// The baselines' nodes, as in [`world`]: same places, latencies, failures and load.
fn plain(n: usize) -> Vec<PlainNode> {
    snapshot_spread(n)
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| PlainNode {
            unit: node.unit_vector(),
            weight: 1.0,
            latency_ms: 20.0 + ((i * 7) % 200) as f64,
            in_flight: (i % 4) as u32,
            limit: 100,
            healthy: true,
        })
        .collect()
}

/// The nearest healthy node with room, by one scan.
#[inline]
fn plain_nearest(nodes: &[PlainNode], caller: [f64; 3]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, n) in nodes.iter().enumerate() {
        if !n.healthy || n.in_flight >= n.limit {
            continue;
        }
        let dot = n.unit[0] * caller[0] + n.unit[1] * caller[1] + n.unit[2] * caller[2];
        if best.is_none_or(|(_, b)| dot > b) {
            best = Some((i, dot));
        }
    }
    best.map(|(i, _)| i)
}

/// A draw in proportion to weight / latency, by two scans.
#[inline]
fn plain_weighted(nodes: &[PlainNode], entropy: u64) -> Option<usize> {
    let w = |n: &PlainNode| if n.healthy { n.weight / n.latency_ms } else { 0.0 };
    let total: f64 = nodes.iter().map(w).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = (entropy >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (i, n) in nodes.iter().enumerate() {
        x -= w(n);
        if x < 0.0 {
            return Some(i);
        }
    }
    nodes.iter().rposition(|n| w(n) > 0.0)
}

// ===== benches =====

fn single_thread(c: &mut Criterion) {
    for kind in StrategyKind::ALL {
        let mut group = c.benchmark_group(kind.name());
        for n in SIZES {
            let (snapshot, now, _guards) = world(n);
            let s = strategy(kind, &snapshot);
            let mut entropy = EntropySource::new(7);
            let mut clock = Clock::new(now, STEP);
            let caller = seoul();
            group.bench_with_input(BenchmarkId::new("nodes", n), &n, |b, _| {
                b.iter(|| {
                    let view = PickView::all(&snapshot, clock.tick(), entropy.next_u64()).with_caller(caller);
                    black_box(s.pick(black_box(&view)))
                })
            });
        }
        group.finish();
    }
    // Sparse calls: every pick finds the response-time table older than its 10 ms refresh.
    let mut group = c.benchmark_group("response-time-rebuild-every-pick");
    for n in SIZES {
        let (snapshot, now, _guards) = world(n);
        let s = strategy(StrategyKind::ResponseTime, &snapshot);
        let mut entropy = EntropySource::new(7);
        let mut clock = Clock::new(now, Duration::from_millis(11));
        group.bench_with_input(BenchmarkId::new("nodes", n), &n, |b, _| {
            b.iter(|| black_box(s.pick(black_box(&PickView::all(&snapshot, clock.tick(), entropy.next_u64())))))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("plain-vec-scan");
    for n in SIZES {
        let nodes = plain(n);
        let caller = SEOUL.unit_vector();
        group.bench_with_input(BenchmarkId::new("locality", n), &n, |b, _| {
            b.iter(|| black_box(plain_nearest(black_box(&nodes), black_box(caller))))
        });
        let mut entropy = EntropySource::new(7);
        group.bench_with_input(BenchmarkId::new("response-time", n), &n, |b, _| {
            b.iter(|| black_box(plain_weighted(black_box(&nodes), entropy.next_u64())))
        });
    }
    group.finish();
    // Adaptive compares every node up to 8 candidates; this is its pure-P2C setting, for the
    // cost of that choice.
    let mut group = c.benchmark_group("adaptive-p2c-only");
    for n in SIZES {
        let (snapshot, now, _guards) = world(n);
        let s = sluice_balancer::Adaptive::builder().full_scan_max(0).build().expect("valid");
        let mut entropy = EntropySource::new(7);
        let mut clock = Clock::new(now, STEP);
        group.bench_with_input(BenchmarkId::new("nodes", n), &n, |b, _| {
            b.iter(|| black_box(s.pick(black_box(&PickView::all(&snapshot, clock.tick(), entropy.next_u64())))))
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
                        let mut clock = Clock::new(now, STEP);
                        for _ in 0..iters {
                            let view = PickView::all(&snapshot, clock.tick(), entropy.next_u64()).with_caller(seoul());
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
