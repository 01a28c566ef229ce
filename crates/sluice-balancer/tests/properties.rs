//! Invariants of every strategy, checked through `Box<dyn Balancer>` with proptest.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use sluice_balancer::{
    Adaptive, GeoNearest, LeastConnections, PickView, ResponseTimeWeighted, Strategy as Balancer, StrategyKind,
    WeightedRoundRobin, test_util::EntropySource,
};
use sluice_region_model::{GeoPoint, NodeId, Region, Snapshot};

#[derive(Debug, Clone)]
struct NodeSpec {
    weight: u32,
    latency_ms: Option<u32>,
    in_flight: u32,
    errors: u8,
    lat: f64,
    lon: f64,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (0u32..10, proptest::option::of(1u32..2000), 0u32..12, 0u8..4, -90.0f64..=90.0, -180.0f64..=180.0).prop_map(
        |(weight, latency_ms, in_flight, errors, lat, lon)| NodeSpec {
            weight,
            latency_ms,
            in_flight,
            errors,
            lat,
            lon,
        },
    )
}

/// A snapshot plus guards that hold the requested in-flight counts.
struct World {
    snapshot: Snapshot,
    _guards: Vec<sluice_region_model::InFlightGuard>,
    now: Instant,
}

fn world(specs: &[NodeSpec]) -> World {
    let mut specs = specs.to_vec();
    if specs.iter().all(|s| s.weight == 0) {
        specs[0].weight = 1;
    }
    let t0 = Instant::now();
    let snapshot = Snapshot::builder()
        .epoch(t0)
        .build(specs.iter().enumerate().map(|(i, s)| {
            Region::new(format!("n{i}"), format!("http://127.0.0.1:9/{i}"), GeoPoint::new(s.lat, s.lon))
                .with_weight(s.weight)
        }))
        .unwrap();
    let mut guards = Vec::new();
    for (node, s) in snapshot.nodes().iter().zip(&specs) {
        if let Some(ms) = s.latency_ms {
            node.metrics().record_success(Duration::from_millis(u64::from(ms)), t0);
        }
        for _ in 0..s.errors {
            node.metrics().record_failure(t0);
        }
        for _ in 0..s.in_flight {
            guards.push(node.metrics().start_request());
        }
    }
    World { snapshot, _guards: guards, now: t0 + Duration::from_millis(500) }
}

fn all_strategies(seed: u64) -> Vec<Box<dyn Balancer>> {
    StrategyKind::ALL.iter().map(|k| k.build_seeded(seed)).collect()
}

/// Candidate subset from a bitmask, ascending.
fn subset(snapshot: &Snapshot, mask: u64) -> Vec<NodeId> {
    snapshot.ids().iter().copied().filter(|id| mask & (1 << (id.index() % 64)) != 0).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pick_is_in_view_and_none_only_when_empty(
        specs in prop::collection::vec(node_spec(), 1..40),
        mask in any::<u64>(),
        entropy in any::<u64>(),
        seed in any::<u64>(),
        caller in proptest::option::of((-90.0f64..=90.0, -180.0f64..=180.0)),
    ) {
        let w = world(&specs);
        let candidates = subset(&w.snapshot, mask);
        for strategy in all_strategies(seed) {
            let mut view = PickView::new(&w.snapshot, &candidates, w.now, entropy);
            if let Some((lat, lon)) = caller {
                view = view.with_caller(GeoPoint::new(lat, lon));
            }
            // Several picks, so that stateful strategies move.
            for k in 0..5u64 {
                let view = PickView::new(&w.snapshot, &candidates, w.now, entropy.wrapping_add(k)).with_caller_opt(view.caller());
                match strategy.pick(&view) {
                    Some(id) => prop_assert!(candidates.contains(&id), "{} picked {id:?} outside {candidates:?}", strategy.name()),
                    None => prop_assert!(candidates.is_empty(), "{} returned None for a non-empty view", strategy.name()),
                }
            }
        }
    }

    #[test]
    fn wrr_shares_over_whole_cycles_equal_the_weights(
        weights in prop::collection::vec(1u32..10, 1..24),
        cycles in 1usize..4,
        seed in any::<u64>(),
    ) {
        let snapshot = Snapshot::new(weights.iter().enumerate().map(|(i, &w)| {
            Region::new(format!("n{i}"), "http://127.0.0.1:9/v1", GeoPoint::new(0.0, 0.0)).with_weight(w)
        })).unwrap();
        let g = weights.iter().copied().fold(0, gcd);
        let cycle: u32 = weights.iter().map(|w| w / g).sum();
        let strategy: Box<dyn Balancer> = Box::new(WeightedRoundRobin::with_seed(seed));
        let now = Instant::now();
        let mut counts = vec![0u32; weights.len()];
        let mut entropy = EntropySource::new(seed);
        for _ in 0..cycle as usize * cycles {
            let id = strategy.pick(&PickView::all(&snapshot, now, entropy.next_u64())).unwrap();
            counts[id.index()] += 1;
        }
        let expected: Vec<u32> = weights.iter().map(|w| w / g * cycles as u32).collect();
        prop_assert_eq!(counts, expected);
    }

    #[test]
    fn least_connections_full_scan_returns_an_argmin(
        specs in prop::collection::vec(node_spec(), 1..=8),
        entropy in any::<u64>(),
    ) {
        let w = world(&specs);
        let strategy: Box<dyn Balancer> = Box::new(LeastConnections::new().with_full_scan_max(64));
        let view = PickView::all(&w.snapshot, w.now, entropy);
        let id = strategy.pick(&view).unwrap();
        let now_ns = w.snapshot.nanos_since_epoch(w.now);
        let cost = |id: NodeId| LeastConnections::cost(w.snapshot.node(id), now_ns);
        let min = w.snapshot.ids().iter().map(|&i| cost(i)).fold(f64::INFINITY, f64::min);
        prop_assert_eq!(cost(id), min);
    }

    #[test]
    fn p2c_never_picks_the_strictly_most_loaded(
        specs in prop::collection::vec(node_spec(), 2..40),
        entropy in any::<u64>(),
    ) {
        let w = world(&specs);
        let now_ns = w.snapshot.nanos_since_epoch(w.now);
        let p2c: Vec<(Box<dyn Balancer>, CostFn<'_>)> = vec![
            (Box::new(LeastConnections::new().with_full_scan_max(0)), { let snapshot = &w.snapshot; Box::new(move |id| LeastConnections::cost(snapshot.node(id), now_ns)) }),
            (Box::new(Adaptive::builder().full_scan_max(0).build().unwrap()), {
                let (a, snapshot, now) = (Adaptive::new(), &w.snapshot, now_ns);
                Box::new(move |id| a.cost(snapshot.node(id), now))
            }),
        ];
        for (strategy, cost) in &p2c {
            let costs: Vec<f64> = w.snapshot.ids().iter().map(|&id| cost(id)).collect();
            let max = costs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let at_max = costs.iter().filter(|&&c| c == max).count();
            let id = strategy.pick(&PickView::all(&w.snapshot, w.now, entropy)).unwrap();
            if at_max == 1 {
                prop_assert!(costs[id.index()] < max, "{} picked the strictly most loaded node", strategy.name());
            }
        }
    }

    #[test]
    fn response_time_share_does_not_grow_with_latency(
        specs in prop::collection::vec(node_spec(), 2..12),
        target in any::<prop::sample::Index>(),
        slower_ms in 1u32..5000,
        seed in any::<u64>(),
    ) {
        let mut specs = specs;
        let k = target.index(specs.len());
        specs[k].weight = specs[k].weight.max(1);
        let base = specs[k].latency_ms.unwrap_or(50);
        specs[k].latency_ms = Some(base);
        let fast = world(&specs);
        specs[k].latency_ms = Some(base + slower_ms);
        let slow = world(&specs);
        let share = |w: &World| {
            // A fresh instance per world, so both use the same sampling path.
            let strategy: Box<dyn Balancer> = Box::new(ResponseTimeWeighted::new());
            let mut entropy = EntropySource::new(seed);
            (0..500).filter(|_| strategy.pick(&PickView::all(&w.snapshot, w.now, entropy.next_u64())).unwrap().index() == k).count()
        };
        let (f, s) = (share(&fast), share(&slow));
        prop_assert!(s <= f, "share grew from {f} to {s} when latency rose");
    }

    #[test]
    fn geo_nearest_returns_the_nearest(
        specs in prop::collection::vec(node_spec(), 1..40),
        lat in -90.0f64..=90.0,
        lon in -180.0f64..=180.0,
        entropy in any::<u64>(),
    ) {
        // No latency measurements: the pure distance rule applies.
        let specs: Vec<NodeSpec> = specs.into_iter().map(|s| NodeSpec { latency_ms: None, ..s }).collect();
        let w = world(&specs);
        let caller = GeoPoint::new(lat, lon);
        let strategy: Box<dyn Balancer> = Box::new(GeoNearest::new());
        let id = strategy.pick(&PickView::all(&w.snapshot, w.now, entropy).with_caller(caller)).unwrap();
        let d = |id: NodeId| w.snapshot.node(id).location().distance_km(caller);
        let min = w.snapshot.ids().iter().map(|&i| d(i)).fold(f64::INFINITY, f64::min);
        prop_assert!(d(id) <= min + 1e-6, "picked {} km, nearest is {} km", d(id), min);
    }
}

/// A strategy's cost function, for checking its choice.
type CostFn<'a> = Box<dyn Fn(NodeId) -> f64 + 'a>;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[test]
fn strategies_survive_nan_infinite_and_zero_inputs() {
    // Zero weights everywhere but one, huge latencies, a NaN-free but extreme world.
    let t0 = Instant::now();
    let snapshot = Snapshot::builder()
        .epoch(t0)
        .build((0..6).map(|i| {
            Region::new(format!("n{i}"), "http://127.0.0.1:9/v1", GeoPoint::new(0.0, 0.0))
                .with_weight(u32::from(i == 5))
        }))
        .unwrap();
    snapshot.nodes()[0].metrics().record_success(Duration::MAX, t0);
    snapshot.nodes()[1].metrics().record_success(Duration::ZERO, t0);
    snapshot.nodes()[2].metrics().record_penalty(Duration::from_secs(1 << 40), t0);
    for strategy in all_strategies(3) {
        for e in 0..100 {
            let view = PickView::all(&snapshot, t0, e).with_caller(GeoPoint::new(10.0, 10.0));
            assert!(strategy.pick(&view).is_some(), "{}", strategy.name());
            // A view of zero-weight nodes only still yields a node.
            let zero_only = &snapshot.ids()[..5];
            assert!(strategy.pick(&PickView::new(&snapshot, zero_only, t0, e)).is_some(), "{}", strategy.name());
            assert_eq!(strategy.pick(&PickView::new(&snapshot, &[], t0, e)), None);
        }
    }
}
