//! Seeded statistical checks: 100,000 picks against analytic expectations, within ±1
//! percentage point.

use std::time::{Duration, Instant};

use sluice_balancer::{
    Adaptive, GeoNearest, LeastConnections, PickView, ResponseTimeWeighted, Strategy, WeightedRoundRobin,
    test_util::{EntropySource, set_latencies, snapshot_with_weights},
};
use sluice_region_model::{GeoPoint, Region, Snapshot};

const PICKS: usize = 100_000;

/// Picks `PICKS` times and compares each node's share with `expected` (fractions).
fn check(strategy: &dyn Strategy, snapshot: &Snapshot, now: Instant, caller: Option<GeoPoint>, expected: &[f64]) {
    let mut entropy = EntropySource::new(0xC0FFEE);
    let mut counts = vec![0usize; snapshot.len()];
    for _ in 0..PICKS {
        let view = PickView::all(snapshot, now, entropy.next_u64()).with_caller_opt(caller);
        counts[strategy.pick(&view).unwrap().index()] += 1;
    }
    for (i, (&c, &e)) in counts.iter().zip(expected).enumerate() {
        let share = c as f64 / PICKS as f64;
        assert!(
            (share - e).abs() <= 0.01,
            "{}: node {i} got {share:.4}, expected {e:.4} (counts {counts:?})",
            strategy.name()
        );
    }
}

fn hold(snapshot: &Snapshot, loads: &[u32]) -> Vec<sluice_region_model::InFlightGuard> {
    snapshot.nodes().iter().zip(loads).flat_map(|(n, &k)| (0..k).map(|_| n.metrics().start_request())).collect()
}

#[test]
fn wrr_matches_weights() {
    let s = snapshot_with_weights(&[5, 1, 1]);
    check(&WeightedRoundRobin::with_seed(9), &s, Instant::now(), None, &[5.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0]);
}

#[test]
fn wrr_slow_start_scales_share_by_factor() {
    // Node 0 ramps at factor 0.5 (floor 0.5, window long): expected shares ∝ 0.5·1 : 1 : 1.
    let t0 = Instant::now();
    let s = snapshot_with_weights(&[1, 1, 1]);
    s.nodes()[0].metrics().begin_slow_start(t0, Duration::from_secs(3600), 0.5);
    // Accept-with-probability over a round-robin cycle: node 0 is taken w.p. 0.5 when its turn
    // comes, otherwise the next node in the cycle is. Shares: 1/5·... derived: 0.5/(0.5+1+1)?
    // Per cycle a,b,c: a taken half the time; when skipped, b takes its slot and the cursor
    // moves on, so in the long run a : b : c = 0.5 : 1 : 1 of *cycles*, i.e. 0.2, 0.4, 0.4.
    check(&WeightedRoundRobin::with_seed(1), &s, t0, None, &[0.2, 0.4, 0.4]);
}

#[test]
fn least_connections_p2c_matches_rank_formula() {
    // Distinct-pair P2C over 4 nodes with distinct loads: the node of rank r (0 = least
    // loaded) wins when it is in the pair with a worse one: (n - 1 - r) / C(n, 2).
    let s = snapshot_with_weights(&[1, 1, 1, 1]);
    let _g = hold(&s, &[0, 1, 2, 3]);
    let lc = LeastConnections::new().with_full_scan_max(0);
    check(&lc, &s, Instant::now(), None, &[3.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0, 0.0]);
}

#[test]
fn least_connections_full_scan_breaks_ties_uniformly() {
    let s = snapshot_with_weights(&[1, 1, 1, 1]);
    let _g = hold(&s, &[0, 0, 0, 5]);
    check(&LeastConnections::new(), &s, Instant::now(), None, &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0]);
}

#[test]
fn least_connections_weighs_load() {
    // Costs (in_flight + 1) / w: node 0: 3/3 = 1, node 1: 1/1 = 1, node 2: 2/1 = 2: tie 0/1.
    let s = snapshot_with_weights(&[3, 1, 1]);
    let _g = hold(&s, &[2, 0, 1]);
    check(&LeastConnections::new(), &s, Instant::now(), None, &[0.5, 0.5, 0.0]);
}

#[test]
fn response_time_is_inverse_to_latency() {
    let t0 = Instant::now();
    let s = snapshot_with_weights(&[1, 1, 1]);
    set_latencies(&s, &[Duration::from_millis(10), Duration::from_millis(20), Duration::from_millis(40)], t0);
    check(&ResponseTimeWeighted::new(), &s, t0, None, &[4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0]);
}

#[test]
fn response_time_cold_start_node_gets_its_share() {
    // Node 2 has no sample: it counts as the 50 ms cold-start latency.
    let t0 = Instant::now();
    let s = snapshot_with_weights(&[1, 1, 1]);
    set_latencies(&s, &[Duration::from_millis(50), Duration::from_millis(100)], t0);
    check(&ResponseTimeWeighted::new(), &s, t0, None, &[0.4, 0.2, 0.4]);
}

#[test]
fn adaptive_p2c_matches_rank_formula() {
    let t0 = Instant::now();
    let s = snapshot_with_weights(&[1, 1, 1, 1]);
    set_latencies(&s, &[10, 20, 30, 40].map(Duration::from_millis), t0);
    let a = Adaptive::builder().full_scan_max(0).build().unwrap();
    check(&a, &s, t0, None, &[3.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0, 0.0]);
}

#[test]
fn adaptive_full_scan_spreads_by_load() {
    // Costs: 10 ms × (3 + 1) = 40 vs 20 ms × (1 + 1) = 40 vs 40 ms × 1 = 40: a three-way tie.
    let t0 = Instant::now();
    let s = snapshot_with_weights(&[1, 1, 1]);
    set_latencies(&s, &[10, 20, 40].map(Duration::from_millis), t0);
    let _g = hold(&s, &[3, 1, 0]);
    check(&Adaptive::new(), &s, t0, None, &[1.0 / 3.0; 3]);
}

#[test]
fn geo_splits_exact_ties() {
    let s = Snapshot::new([
        Region::new("east", "http://127.0.0.1:9/v1", GeoPoint::new(0.0, 10.0)),
        Region::new("west", "http://127.0.0.1:9/v1", GeoPoint::new(0.0, -10.0)),
        Region::new("far", "http://127.0.0.1:9/v1", GeoPoint::new(0.0, 90.0)),
    ])
    .unwrap();
    check(&GeoNearest::new(), &s, Instant::now(), Some(GeoPoint::new(0.0, 0.0)), &[0.5, 0.5, 0.0]);
}
