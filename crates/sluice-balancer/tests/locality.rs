//! Invariants of the default strategy, `Locality`, with proptest: light load stays in the
//! nearest tier, spill follows nearness, and a region that only failed is never preferred.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use sluice_balancer::{DEFAULT_TIER_KM, Locality, PickView, Strategy as Balancer};
use sluice_region_model::{GeoPoint, InFlightGuard, NodeId, Region, Snapshot};

/// Slack for the caller's location being rounded to a 0.25° cell: half a cell's diagonal is
/// under 25 km.
const CELL_SLACK_KM: f64 = 25.0;

fn place() -> impl Strategy<Value = (f64, f64)> {
    (-80.0f64..=80.0, -180.0f64..=180.0)
}

/// A snapshot of nodes at `places`, each with a concurrency limit of `limit` and one success
/// of `latency_ms` (so each has a baseline, not established).
fn world(places: &[(f64, f64)], limit: u32, t0: Instant) -> Snapshot {
    let snapshot = Snapshot::builder()
        .epoch(t0)
        .build(places.iter().enumerate().map(|(i, &(lat, lon))| {
            Region::new(format!("n{i}"), format!("http://127.0.0.1:9/{i}"), GeoPoint::new(lat, lon))
                .with_max_concurrency(Some(limit))
        }))
        .unwrap();
    for (i, node) in snapshot.nodes().iter().enumerate() {
        node.metrics().record_success(Duration::from_millis(100 + (i as u64 * 37) % 900), t0);
    }
    snapshot
}

fn km(snapshot: &Snapshot, id: NodeId, caller: GeoPoint) -> f64 {
    snapshot.node(id).location().distance_km(caller)
}

fn fill(snapshot: &Snapshot, id: NodeId, n: u32) -> Vec<InFlightGuard> {
    (0..n).map(|_| snapshot.node(id).metrics().start_request()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Under light load (nothing in flight, nothing failing) every pick goes to the nearest
    /// tier: within the tier width of the nearest candidate.
    #[test]
    fn light_load_stays_in_the_nearest_tier(
        places in prop::collection::vec(place(), 1..30),
        caller in place(),
        mask in any::<u64>(),
        entropy in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let snapshot = world(&places, 8, t0);
        let mut candidates: Vec<NodeId> =
            snapshot.ids().iter().copied().filter(|id| mask & (1 << (id.index() % 64)) != 0).collect();
        if candidates.is_empty() {
            candidates = snapshot.ids().to_vec();
        }
        let caller = GeoPoint::new(caller.0, caller.1);
        let nearest = candidates.iter().map(|&id| km(&snapshot, id, caller)).fold(f64::INFINITY, f64::min);
        let strategy = Locality::new();
        for k in 0..20u64 {
            let view = PickView::new(&snapshot, &candidates, t0, entropy.wrapping_add(k)).with_caller(caller);
            let id = strategy.pick(&view).unwrap();
            prop_assert!(candidates.contains(&id));
            let d = km(&snapshot, id, caller);
            prop_assert!(d <= nearest + DEFAULT_TIER_KM + 2.0 * CELL_SLACK_KM, "picked {d} km, nearest {nearest} km");
        }
    }

    /// Spill follows nearness: with the nearest regions at their limit, the pick is a region
    /// with room, and no region with room is a tier nearer than it.
    #[test]
    fn spill_follows_nearness(
        places in prop::collection::vec(place(), 2..20),
        caller in place(),
        full in 1usize..20,
        entropy in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let snapshot = world(&places, 2, t0);
        let caller = GeoPoint::new(caller.0, caller.1);
        let mut by_distance: Vec<NodeId> = snapshot.ids().to_vec();
        by_distance.sort_by(|&a, &b| km(&snapshot, a, caller).total_cmp(&km(&snapshot, b, caller)));
        let full = full.min(snapshot.len() - 1);
        let _guards: Vec<_> = by_distance[..full].iter().flat_map(|&id| fill(&snapshot, id, 2)).collect();
        let has_room = |id: NodeId| snapshot.node(id).metrics().in_flight() < 2;
        let nearest_with_room = by_distance.iter().copied().find(|&id| has_room(id)).unwrap();
        let bound = km(&snapshot, nearest_with_room, caller) + DEFAULT_TIER_KM + 2.0 * CELL_SLACK_KM;
        let strategy = Locality::new();
        for k in 0..20u64 {
            let id = strategy.pick(&PickView::all(&snapshot, t0, entropy.wrapping_add(k)).with_caller(caller)).unwrap();
            prop_assert!(has_room(id), "picked a full region while one had room");
            prop_assert!(km(&snapshot, id, caller) <= bound, "skipped a nearer tier with room");
        }
    }

    /// When every region is at its limit, the call still goes somewhere (limits are soft):
    /// to a region with the lowest in-flight / limit ratio.
    #[test]
    fn limits_are_soft(
        places in prop::collection::vec(place(), 1..12),
        extra in prop::collection::vec(0u32..3, 12),
        caller in place(),
        entropy in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let snapshot = world(&places, 2, t0);
        let _guards: Vec<_> = snapshot.ids().iter().flat_map(|&id| fill(&snapshot, id, 2 + extra[id.index()])).collect();
        let caller = GeoPoint::new(caller.0, caller.1);
        let least = snapshot.ids().iter().map(|&id| snapshot.node(id).metrics().in_flight()).min().unwrap();
        let id = Locality::new().pick(&PickView::all(&snapshot, t0, entropy).with_caller(caller)).unwrap();
        prop_assert_eq!(snapshot.node(id).metrics().in_flight(), least);
    }

    /// A region whose every call failed is never picked while another region is not failing,
    /// wherever the two are.
    #[test]
    fn a_region_with_only_failures_is_never_picked_while_a_healthy_one_exists(
        places in prop::collection::vec(place(), 2..16),
        bad in any::<prop::sample::Index>(),
        failures in 1u32..6,
        caller in proptest::option::of(place()),
        load in 0u32..4,
        entropy in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let snapshot = Snapshot::builder()
            .epoch(t0)
            .build(places.iter().enumerate().map(|(i, &(lat, lon))| {
                Region::new(format!("n{i}"), format!("http://127.0.0.1:9/{i}"), GeoPoint::new(lat, lon))
                    .with_max_concurrency(Some(2))
            }))
            .unwrap();
        let bad = NodeId::from_index(bad.index(places.len()) as u32);
        for _ in 0..failures {
            snapshot.node(bad).metrics().record_failure(t0);
        }
        // The others are busy, up to and past their limits.
        let _guards: Vec<_> =
            snapshot.ids().iter().filter(|&&id| id != bad).flat_map(|&id| fill(&snapshot, id, load)).collect();
        let strategy = Locality::new();
        let now = t0 + Duration::from_millis(500);
        for k in 0..20u64 {
            let view = PickView::all(&snapshot, now, entropy.wrapping_add(k))
                .with_caller_opt(caller.map(|(lat, lon)| GeoPoint::new(lat, lon)));
            prop_assert_ne!(strategy.pick(&view), Some(bad));
        }
    }
}

#[test]
fn a_seoul_caller_stays_in_seoul_and_spills_to_tokyo_first() {
    let t0 = Instant::now();
    let places = [(37.5665, 126.978), (35.6762, 139.6503), (1.3521, 103.8198), (50.1109, 8.6821), (38.9072, -77.0369)];
    let snapshot = world(&places, 4, t0);
    let seoul = GeoPoint::new(37.5665, 126.978);
    let strategy = Locality::new();
    let pick = |e: u64| strategy.pick(&PickView::all(&snapshot, t0, e).with_caller(seoul)).unwrap().index();
    assert!((0..100).all(|e| pick(e) == 0));
    let _seoul = fill(&snapshot, NodeId::from_index(0), 4);
    assert!((0..100).all(|e| pick(e) == 1));
    let _tokyo = fill(&snapshot, NodeId::from_index(1), 4);
    assert!((0..100).all(|e| pick(e) == 2));
    // Without a caller location, the measured round trips rank the regions.
    for (i, rtt) in [23u64, 28, 45, 120, 150].into_iter().enumerate() {
        snapshot.nodes()[i].metrics().record_probe_rtt(Duration::from_millis(rtt));
    }
    let by_rtt = |e: u64| strategy.pick(&PickView::all(&snapshot, t0, e)).unwrap().index();
    assert!((0..100).all(|e| by_rtt(e) == 2));
}

#[test]
fn a_ramping_region_takes_its_slow_start_share() {
    let t0 = Instant::now();
    let places = [(37.5665, 126.978), (35.6762, 139.6503)];
    let snapshot = world(&places, 100, t0);
    snapshot.nodes()[0].metrics().begin_slow_start(t0, Duration::from_secs(30), 0.1);
    let seoul = GeoPoint::new(37.5665, 126.978);
    let strategy = Locality::new();
    let share = |at: Instant| {
        (0..10_000u64)
            .filter(|&e| strategy.pick(&PickView::all(&snapshot, at, e).with_caller(seoul)).unwrap().index() == 0)
            .count() as f64
            / 10_000.0
    };
    assert!((share(t0) - 0.1).abs() < 0.02);
    assert!((share(t0 + Duration::from_secs(15)) - 0.55).abs() < 0.02);
    assert_eq!(share(t0 + Duration::from_secs(30)), 1.0);
}

#[test]
fn a_clearly_slower_near_region_spills_and_is_tried_again_later() {
    let t0 = Instant::now();
    let places = [(37.5665, 126.978), (35.6762, 139.6503)];
    let snapshot = world(&places, 100, t0);
    let (seoul, tokyo) = (snapshot.nodes()[0].metrics(), snapshot.nodes()[1].metrics());
    // Established baselines: Seoul answers in 4 s, Tokyo in 400 ms.
    for _ in 0..300 {
        seoul.record_success(Duration::from_secs(4), t0);
        tokyo.record_success(Duration::from_millis(400), t0);
    }
    let caller = GeoPoint::new(37.5665, 126.978);
    let strategy = Locality::new();
    let pick =
        |at: Instant, e: u64| strategy.pick(&PickView::all(&snapshot, at, e).with_caller(caller)).unwrap().index();
    assert!((0..100).all(|e| pick(t0, e) == 1));
    // Only slightly slower (within the 25 % margin): stays.
    for _ in 0..2000 {
        seoul.record_success(Duration::from_millis(450), t0);
    }
    assert!((0..100).all(|e| pick(t0, e) == 0));
    // Slow again, then idle: its value fades towards Tokyo's and it is tried again.
    for _ in 0..2000 {
        seoul.record_success(Duration::from_secs(4), t0);
    }
    assert!((0..100).all(|e| pick(t0, e) == 1));
    assert!((0..100).all(|e| pick(t0 + Duration::from_secs(60), e) == 0));
}
