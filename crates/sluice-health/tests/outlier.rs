//! Passive outlier detection, cooldowns, selection and panic mode.
//!
//! Time is injected: every test works on instants derived from the snapshot epoch.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sluice_health::{EjectionReason, HealthEventKind, HealthMonitor, Outcome, OutlierConfig, Selection};
use sluice_region_model::{AdminState, GeoPoint, HealthState, NodeId, Region, Snapshot};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn snapshot(n: usize) -> (Arc<Snapshot>, Instant) {
    let t0 = tokio::time::Instant::now().into_std();
    let regions =
        (0..n).map(|i| Region::new(format!("r{i}"), format!("http://127.0.0.1:9/r{i}/v1"), GeoPoint::new(0.0, 0.0)));
    (Arc::new(Snapshot::builder().epoch(t0).build(regions).unwrap()), t0)
}

fn monitor(n: usize, config: OutlierConfig) -> (HealthMonitor, Instant) {
    let (snap, t0) = snapshot(n);
    (HealthMonitor::new(snap, config), t0)
}

fn id(i: u32) -> NodeId {
    NodeId::from_index(i)
}

fn fail(m: &HealthMonitor, node: u32, times: usize, now: Instant) {
    for _ in 0..times {
        m.record(id(node), Outcome::ConnectError, now);
    }
}

fn eligible(m: &HealthMonitor, now: Instant) -> Vec<u32> {
    let mut out = Vec::new();
    let sel = m.select(now, |_| false, &mut out);
    assert!(matches!(sel, Selection::Eligible) || out.is_empty() || sel == Selection::Panic);
    if sel == Selection::Eligible { out.iter().map(|n| n.index() as u32).collect() } else { Vec::new() }
}

#[test]
fn consecutive_failures_eject_exactly_at_the_threshold() {
    let (m, t0) = monitor(3, OutlierConfig::default());
    let mut events = m.subscribe();
    fail(&m, 0, 4, t0);
    assert_eq!(eligible(&m, t0), [0, 1, 2], "4 failures must not eject");
    // A success of a call that started after those failures resets the count.
    m.record(id(0), Outcome::Success { latency: 20 * MS }, t0 + 30 * MS);
    fail(&m, 0, 4, t0 + 30 * MS);
    assert_eq!(eligible(&m, t0), [0, 1, 2]);
    m.record(id(0), Outcome::Timeout, t0);
    assert_eq!(eligible(&m, t0), [1, 2], "the 5th failure in a row ejects");
    let ev = events.try_recv().unwrap();
    assert_eq!(ev.node, id(0));
    assert_eq!(&*ev.region, "r0");
    assert_eq!(ev.kind, HealthEventKind::Ejected { until: t0 + 10 * S });
    let status = m.status(id(0), t0).unwrap();
    assert_eq!(status.last_ejection_reason, Some(EjectionReason::ConsecutiveFailures { count: 5 }));
    assert_eq!(status.ejection_multiplier, 1);
    // The ejection ends on time, and its slot is given back.
    assert_eq!(eligible(&m, t0 + 10 * S - MS), [1, 2]);
    assert_eq!(m.ejected_count(), 1);
    assert_eq!(eligible(&m, t0 + 10 * S), [0, 1, 2]);
    assert_eq!(m.ejected_count(), 0);
}

/// A draining node finishes the calls it accepted before it broke: their successes must not
/// hide the failures of new calls.
#[test]
fn successes_of_calls_started_before_the_failures_do_not_reset_the_count() {
    let (m, t0) = monitor(3, OutlierConfig::default());
    let t = t0 + 10 * S;
    fail(&m, 0, 4, t);
    // Finished now, but sent 2 s ago, before the failures.
    m.record(id(0), Outcome::Success { latency: 2 * S }, t + MS);
    assert_eq!(m.status(id(0), t + MS).unwrap().consecutive_failures, 4);
    m.record(id(0), Outcome::ConnectError, t + 2 * MS);
    assert_eq!(eligible(&m, t + 2 * MS), [1, 2], "the fifth failure still ejects");
    // Control: a call sent after the failures does reset the count.
    let (m, t0) = monitor(3, OutlierConfig::default());
    let t = t0 + 10 * S;
    fail(&m, 0, 4, t);
    m.record(id(0), Outcome::Success { latency: 5 * MS }, t + 10 * MS);
    assert_eq!(m.status(id(0), t + 10 * MS).unwrap().consecutive_failures, 0);
}

#[test]
fn recording_updates_node_metrics() {
    let (m, t0) = monitor(2, OutlierConfig::default());
    let metrics = Arc::clone(m.snapshot().node(id(1)).metrics());
    m.record(id(1), Outcome::Success { latency: 40 * MS }, t0);
    m.record(id(1), Outcome::ConnectError, t0);
    m.record(id(1), Outcome::ServerError { status: 500, retry_after: None }, t0);
    assert_eq!(metrics.successes(), 1);
    assert_eq!(metrics.failures(), 2);
    assert_eq!(metrics.consecutive_failures(), 2);
    assert!(metrics.error_rate(t0) > 0.0);
    // The 500 recorded a latency peak of the error penalty.
    assert_eq!(metrics.latency_estimate(t0), Some(5 * S));
    // A 429 is neither a failure nor a latency penalty: it lowers the learned concurrency
    // limit.
    let _in_flight: Vec<_> = (0..10).map(|_| metrics.start_request()).collect();
    m.record(id(1), Outcome::RateLimited { retry_after: None }, t0);
    assert_eq!(metrics.failures(), 2);
    assert_eq!(metrics.latency_estimate(t0), Some(5 * S));
    assert_eq!(metrics.concurrency_limit(), Some(9.0));
    // A connect error is expensive: it records the penalty too, even on a node that never
    // succeeded (which keeps it, having no baseline to decay to).
    let fresh = Arc::clone(m.snapshot().node(id(0)).metrics());
    m.record(id(0), Outcome::ConnectError, t0);
    assert_eq!(fresh.latency_estimate(t0 + 600 * S), Some(5 * S));
    m.record(id(0), Outcome::Timeout, t0);
    assert_eq!(fresh.failures(), 2);
    // Ids from another snapshot are ignored.
    m.record(id(7), Outcome::Timeout, t0);
}

#[test]
fn failure_rate_ejects_only_with_enough_volume() {
    let config = OutlierConfig::builder().consecutive_failures(100).build().unwrap();
    let (m, t0) = monitor(3, config);
    let ok = Outcome::Success { latency: 10 * MS };
    // 4 failures out of 8: below the minimum volume of 10.
    for i in 0..8 {
        m.record(id(0), if i % 2 == 0 { Outcome::Timeout } else { ok }, t0 + i * MS);
    }
    assert_eq!(eligible(&m, t0 + 10 * MS), [0, 1, 2]);
    // 10 calls, 5 failed: 50 % is not above the threshold.
    m.record(id(0), ok, t0 + 9 * MS);
    m.record(id(0), Outcome::Timeout, t0 + 10 * MS);
    assert_eq!(eligible(&m, t0 + 11 * MS), [0, 1, 2]);
    // 6 of 11 failed: ejected.
    let mut events = m.subscribe();
    m.record(id(0), Outcome::Timeout, t0 + 11 * MS);
    assert_eq!(eligible(&m, t0 + 12 * MS), [1, 2]);
    assert!(matches!(events.try_recv().unwrap().kind, HealthEventKind::Ejected { .. }));
    assert_eq!(
        m.status(id(0), t0).unwrap().last_ejection_reason,
        Some(EjectionReason::FailureRate { failures: 6, total: 11 })
    );
}

#[test]
fn failure_rate_window_slides() {
    let config = OutlierConfig::builder().consecutive_failures(100).build().unwrap();
    let (m, t0) = monitor(3, config);
    // 9 failures long ago ...
    fail(&m, 0, 9, t0);
    // ... have left the 10 s window when the next ones come.
    let later = t0 + 11 * S;
    for _ in 0..5 {
        m.record(id(0), Outcome::Success { latency: MS }, later);
    }
    fail(&m, 0, 4, later);
    assert_eq!(eligible(&m, later), [0, 1, 2]);
}

#[test]
fn ejection_backoff_grows_caps_and_decays() {
    let config =
        OutlierConfig::builder().base_ejection(10 * S).max_ejection(35 * S).ejection_decay(30 * S).build().unwrap();
    let (m, t0) = monitor(2, config);
    let mut events = m.subscribe();
    let mut now = t0;
    let mut eject = |now: Instant| -> (Duration, u32) {
        fail(&m, 0, 5, now);
        match events.try_recv().unwrap().kind {
            HealthEventKind::Ejected { until } => (until - now, m.status(id(0), now).unwrap().ejection_multiplier),
            other => panic!("{other:?}"),
        }
    };
    // Ejected again right after each ejection ends: 10, 20, 30, then the 35 s cap.
    for (len, mult) in [(10, 1), (20, 2), (30, 3), (35, 4), (35, 4)] {
        let (got, got_mult) = eject(now);
        assert_eq!((got, got_mult), (len * S, mult));
        now += got;
    }
    // 60 s of good behaviour take two steps off: 4 → 2, so the next ejection is 3 × 10 s.
    now += 60 * S;
    assert_eq!(eject(now), (30 * S, 3));
    // Long good behaviour resets it completely.
    now += 30 * S + 10 * 60 * S;
    assert_eq!(eject(now), (10 * S, 1));
    let status = m.status(id(0), now).unwrap();
    assert_eq!(status.ejection_multiplier, 1);
    assert_eq!(status.ejected_until, Some(now + 10 * S));
}

#[test]
fn outcomes_while_ejected_do_not_extend_the_ejection() {
    let (m, t0) = monitor(2, OutlierConfig::default());
    fail(&m, 0, 5, t0);
    // Late failures of calls that were in flight.
    fail(&m, 0, 20, t0 + S);
    assert_eq!(m.status(id(0), t0).unwrap().ejected_until, Some(t0 + 10 * S));
    assert_eq!(eligible(&m, t0 + 10 * S), [0, 1]);
    // Old failures were forgotten: 4 more do not eject again.
    fail(&m, 0, 4, t0 + 10 * S);
    assert_eq!(eligible(&m, t0 + 10 * S), [0, 1]);
}

#[test]
fn max_ejection_percent_holds() {
    // 50 % of 5 nodes: at most 2 ejected at once.
    let (m, t0) = monitor(5, OutlierConfig::default());
    for node in 0..5 {
        fail(&m, node, 5, t0);
    }
    assert_eq!(m.ejected_count(), 2);
    assert_eq!(eligible(&m, t0), [2, 3, 4]);
    // Keep failing: still capped.
    for node in 2..5 {
        fail(&m, node, 10, t0 + S);
    }
    assert_eq!(eligible(&m, t0 + S), [2, 3, 4]);
    // When the first ejections end, the next failing node may take a slot, without any
    // select() call in between to reclaim the old ones.
    let later = t0 + 10 * S;
    fail(&m, 3, 5, later);
    assert_eq!(m.ejected_count(), 1);
    assert_eq!(eligible(&m, later), [0, 1, 2, 4]);
}

#[test]
fn a_lone_node_is_never_ejected_and_zero_percent_disables() {
    let (m, t0) = monitor(1, OutlierConfig::default());
    fail(&m, 0, 50, t0);
    assert_eq!(eligible(&m, t0), [0]);
    let (m, t0) = monitor(4, OutlierConfig::builder().max_ejection_percent(0).build().unwrap());
    fail(&m, 0, 50, t0);
    assert_eq!(eligible(&m, t0), [0, 1, 2, 3]);
    // With few nodes, one may still be ejected (Envoy's always_eject_one_host).
    let (m, t0) = monitor(3, OutlierConfig::builder().max_ejection_percent(10).build().unwrap());
    fail(&m, 0, 5, t0);
    fail(&m, 1, 5, t0);
    assert_eq!(eligible(&m, t0), [1, 2]);
}

#[test]
fn retry_after_cooldown_ends_on_time_and_is_capped() {
    let (m, t0) = monitor(3, OutlierConfig::default());
    let mut events = m.subscribe();
    m.record(id(0), Outcome::RateLimited { retry_after: Some(7 * S) }, t0);
    assert_eq!(events.try_recv().unwrap().kind, HealthEventKind::CooldownStarted { until: t0 + 7 * S });
    assert_eq!(eligible(&m, t0 + 7 * S - MS), [1, 2]);
    assert_eq!(eligible(&m, t0 + 7 * S), [0, 1, 2]);
    // A provider asking for a day is capped at 60 s.
    m.record(id(1), Outcome::RateLimited { retry_after: Some(86_400 * S) }, t0);
    assert_eq!(m.status(id(1), t0).unwrap().cooldown_until, Some(t0 + 60 * S));
    assert_eq!(eligible(&m, t0 + 60 * S), [0, 1, 2]);
    // 503 with Retry-After cools down too; a shorter later one never shortens it.
    m.record(id(2), Outcome::ServerError { status: 503, retry_after: Some(5 * S) }, t0);
    m.record(id(2), Outcome::ServerError { status: 503, retry_after: Some(S) }, t0);
    assert_eq!(m.status(id(2), t0).unwrap().cooldown_until, Some(t0 + 5 * S));
    // Retry-After on other 5xx is not a cooldown.
    let (m, t0) = monitor(2, OutlierConfig::default());
    m.record(id(0), Outcome::ServerError { status: 500, retry_after: Some(5 * S) }, t0);
    assert_eq!(eligible(&m, t0), [0, 1]);
}

#[test]
fn rate_limits_never_eject() {
    let (m, t0) = monitor(2, OutlierConfig::default());
    for _ in 0..50 {
        m.record(id(0), Outcome::RateLimited { retry_after: None }, t0);
    }
    assert_eq!(eligible(&m, t0), [0, 1]);
    assert_eq!(m.ejected_count(), 0);
}

#[test]
fn slow_start_follows_an_ejection() {
    let (m, t0) = monitor(2, OutlierConfig::default());
    fail(&m, 0, 5, t0);
    let metrics = m.snapshot().node(id(0)).metrics();
    let back = t0 + 10 * S;
    assert!((metrics.weight_factor(back) - 0.10).abs() < 1e-9);
    assert!((metrics.weight_factor(back + 15 * S) - 0.55).abs() < 1e-9);
    assert_eq!(metrics.weight_factor(back + 30 * S), 1.0);
}

#[test]
fn a_cooldown_does_not_restart_slow_start() {
    let (m, t0) = monitor(2, OutlierConfig::default());
    fail(&m, 0, 5, t0);
    let metrics = m.snapshot().node(id(0)).metrics();
    let back = t0 + 10 * S;
    // Halfway up the ramp, a 429 with Retry-After pauses the node...
    let mid = back + 15 * S;
    m.record(id(0), Outcome::RateLimited { retry_after: Some(2 * S) }, mid);
    assert_eq!(eligible(&m, mid + S), [1]);
    // ...and when the pause ends the ramp is where the clock says, not back at the floor.
    assert!((metrics.weight_factor(mid + 2 * S) - 0.61).abs() < 1e-9);
    assert_eq!(metrics.weight_factor(back + 30 * S), 1.0);
    // A 429 on a node that is not ramping starts no ramp.
    m.record(id(1), Outcome::RateLimited { retry_after: Some(2 * S) }, t0);
    assert_eq!(m.snapshot().node(id(1)).metrics().weight_factor(t0 + 2 * S), 1.0);
}

#[test]
fn panic_mode_offers_the_least_bad_nodes() {
    let (m, t0) = monitor(4, OutlierConfig::builder().max_ejection_percent(100).build().unwrap());
    let nodes = m.snapshot().nodes();
    let mut out = vec![id(99)];
    // Node 0 ejected only, node 1 unhealthy only, node 2 both, node 3 drained.
    fail(&m, 0, 5, t0);
    nodes[1].metrics().set_health(HealthState::Unhealthy);
    nodes[2].metrics().set_health(HealthState::Unhealthy);
    fail(&m, 2, 5, t0);
    nodes[3].metrics().set_admin(AdminState::Drained);
    assert_eq!(m.select(t0, |_| false, &mut out), Selection::Panic);
    assert_eq!(out, [id(0)]);
    // Skipping node 0 leaves the unhealthy-only one.
    assert_eq!(m.select(t0, |n| n == id(0), &mut out), Selection::Panic);
    assert_eq!(out, [id(1)]);
    assert_eq!(m.select(t0, |n| n.index() < 2, &mut out), Selection::Panic);
    assert_eq!(out, [id(2)]);
    // Nothing left but the drained node: unavailable, with no known end.
    assert_eq!(m.select(t0, |n| n.index() < 3, &mut out), Selection::Unavailable { retry_at: None });
    assert!(out.is_empty());
}

#[test]
fn cooldowns_are_not_offered_in_panic_mode() {
    let (m, t0) = monitor(3, OutlierConfig::default());
    let mut out = Vec::new();
    m.record(id(0), Outcome::RateLimited { retry_after: Some(8 * S) }, t0);
    m.record(id(1), Outcome::RateLimited { retry_after: Some(3 * S) }, t0);
    m.snapshot().node(id(2)).metrics().set_health(HealthState::Unhealthy);
    assert_eq!(m.select(t0, |_| false, &mut out), Selection::Panic);
    assert_eq!(out, [id(2)]);
    assert_eq!(m.select(t0, |n| n == id(2), &mut out), Selection::Unavailable { retry_at: Some(t0 + 3 * S) });
    // Node 1's cooldown is over: it is eligible again.
    assert_eq!(m.select(t0 + 3 * S, |n| n == id(2), &mut out), Selection::Eligible);
    assert_eq!(out, [id(1)]);
}

#[test]
fn select_skips_and_reuses_the_buffer() {
    let (m, t0) = monitor(3, OutlierConfig::default());
    let mut out = Vec::with_capacity(3);
    assert_eq!(m.select(t0, |n| n == id(1), &mut out), Selection::Eligible);
    assert_eq!(out, [id(0), id(2)]);
    assert_eq!(m.select(t0, |_| true, &mut out), Selection::Unavailable { retry_at: None });
    assert!(out.is_empty());
}

#[test]
fn monitor_is_cheap_to_clone_and_thread_safe() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<HealthMonitor>();
    let (m, t0) = monitor(4, OutlierConfig::default());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..1000u32 {
                    m.record(id((i + t) % 4), Outcome::Success { latency: MS }, t0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total: u64 = m.snapshot().nodes().iter().map(|n| n.metrics().successes()).sum();
    assert_eq!(total, 2000);
    assert!(format!("{m:?}").contains("HealthMonitor"));
}

#[test]
fn the_ejection_cap_holds_under_concurrent_recording() {
    // 8 nodes, 50 %: never more than 4 ejected, whatever the interleaving.
    let config = OutlierConfig::builder().base_ejection(Duration::from_millis(30)).max_ejection(S).build().unwrap();
    let (m, t0) = monitor(8, config);
    // One clock for all threads, 50 µs per outcome.
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let m = m.clone();
            let clock = Arc::clone(&clock);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..20_000u64 {
                    let tick = clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let now = t0 + Duration::from_micros(tick * 50);
                    let node = ((i * 7 + t * 3) % 8) as u32;
                    let outcome = if (i + t) % 5 == 0 { Outcome::Success { latency: MS } } else { Outcome::Timeout };
                    m.record(id(node), outcome, now);
                    if i % 64 == 0 {
                        m.select(now, |_| false, &mut out);
                    }
                    // Every ejected node holds a slot until it is reclaimed after its end.
                    assert!(m.ejected_count() <= 4, "{} slots held", m.ejected_count());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(m.ejected_count() <= 4);
    let end = t0 + Duration::from_micros(clock.load(std::sync::atomic::Ordering::Relaxed) * 50);
    let ejected = (0..8).filter(|n| m.status(id(*n), end).unwrap().ejected_until.is_some()).count();
    assert!(ejected <= 4, "{ejected} ejected at the end");
    // Something was ejected at all.
    assert!((0..8).any(|n| m.status(id(n), t0).unwrap().ejection_multiplier > 0));
}

proptest::proptest! {
    /// Passive hysteresis: a node is ejected exactly when its run of failures reaches the
    /// threshold, never earlier, whatever the sequence of outcomes.
    #[test]
    fn ejection_never_comes_before_the_consecutive_threshold(
        threshold in 1u32..8,
        outcomes in proptest::collection::vec(proptest::bool::ANY, 0..64),
    ) {
        let config = OutlierConfig::builder()
            .consecutive_failures(threshold)
            .failure_rate_min_requests(u32::MAX)
            .build()
            .unwrap();
        let (m, t0) = monitor(2, config);
        let mut run = 0;
        for (i, failed) in outcomes.into_iter().enumerate() {
            let now = t0 + MS * i as u32;
            let outcome = if failed { Outcome::Timeout } else { Outcome::Success { latency: MS } };
            m.record(id(0), outcome, now);
            run = if failed { run + 1 } else { 0 };
            let ejected = m.status(id(0), now).unwrap().ejected_until.is_some();
            proptest::prop_assert_eq!(ejected, run >= threshold, "after outcome {} (run {})", i, run);
            if ejected {
                break;
            }
        }
    }
}

#[test]
fn a_successor_keeps_the_state_of_regions_that_stay_and_retires_the_rest() {
    let (snap, t0) = snapshot(3);
    let config = OutlierConfig::builder().max_ejection_percent(100).build().unwrap();
    let m = HealthMonitor::new(Arc::clone(&snap), config);
    let mut events = m.subscribe();
    fail(&m, 1, 5, t0);
    fail(&m, 2, 3, t0);
    assert_eq!(eligible(&m, t0), [0, 2]);
    // r0 leaves, r3 comes; r1 and r2 stay (at new indexes 0 and 1).
    let regions =
        ["r1", "r2", "r3"].map(|id| Region::new(id, format!("http://127.0.0.1:9/{id}/v1"), GeoPoint::new(0.0, 0.0)));
    let next = Arc::new(Snapshot::builder().reuse_metrics(Arc::clone(&snap)).build(regions).unwrap());
    let m2 = m.successor(Arc::clone(&next)).unwrap();
    assert!(Arc::ptr_eq(m2.snapshot(), &next));
    // r1 is still ejected, until the same instant; r2 still counts its 3 failures.
    let r1 = m2.status(id(0), t0).unwrap();
    assert_eq!(r1.ejected_until, Some(t0 + 10 * S));
    assert_eq!(r1.last_ejection_reason, Some(EjectionReason::ConsecutiveFailures { count: 5 }));
    assert_eq!(m2.status(id(1), t0).unwrap().consecutive_failures, 3);
    assert_eq!(m2.ejected_count(), 1);
    // The new region is unknown, hence eligible.
    assert_eq!(next.node(id(2)).metrics().health(), HealthState::Unknown);
    assert_eq!(eligible(&m2, t0), [1, 2]);
    // Two more failures recorded by a call still on the old monitor eject r2 in both.
    fail(&m, 2, 2, t0);
    assert_eq!(eligible(&m2, t0), [2]);
    // The old monitor never offers the region that left, even in panic mode.
    assert_eq!(eligible(&m, t0), Vec::<u32>::new(), "r0 is healthy but retired; r1 and r2 are ejected");
    let mut out = Vec::new();
    let sel = m.select(t0, |_| false, &mut out);
    assert!(!out.contains(&id(0)), "{sel:?} {out:?}");
    // Subscribers of the old monitor hear the successor's events.
    while events.try_recv().is_ok() {}
    fail(&m2, 2, 5, t0);
    assert_eq!(&*events.try_recv().unwrap().region, "r3");
    // A snapshot from elsewhere (another epoch) is refused.
    let (foreign, _) = snapshot(2);
    assert!(m.successor(foreign).is_err());
}
