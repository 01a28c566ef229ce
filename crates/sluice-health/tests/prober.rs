//! The active prober under paused tokio time, with scripted probes.

use std::{sync::Arc, time::Duration};

use sluice_health::{
    HealthEventKind, HealthMonitor, Outcome, OutlierConfig, ProbeConfig, Selection,
    test_util::{Reply, ScriptedProbe},
};
use sluice_region_model::{Availability, GeoPoint, HealthState, NodeId, Region, Snapshot};
use tokio::time::{Instant, sleep, sleep_until};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn monitor(n: usize, outlier: OutlierConfig) -> HealthMonitor {
    let regions =
        (0..n).map(|i| Region::new(format!("r{i}"), format!("http://127.0.0.1:9/r{i}/v1"), GeoPoint::new(0.0, 0.0)));
    let snapshot = Snapshot::builder().epoch(Instant::now().into_std()).build(regions).unwrap();
    HealthMonitor::new(Arc::new(snapshot), outlier)
}

/// No jitter, first probe at once: probe instants are exact.
fn exact(fall: u32, rise: u32) -> ProbeConfig {
    ProbeConfig::builder()
        .interval(S)
        .jitter(Duration::ZERO)
        .initial_jitter(Duration::ZERO)
        .unhealthy_interval(500 * MS)
        .timeout(S)
        .fall(fall)
        .rise(rise)
        .build()
        .unwrap()
}

fn id(i: u32) -> NodeId {
    NodeId::from_index(i)
}

fn health(m: &HealthMonitor, node: u32) -> HealthState {
    m.snapshot().node(id(node)).metrics().health()
}

fn kinds(rx: &mut tokio::sync::broadcast::Receiver<sluice_health::HealthEvent>) -> Vec<(u32, HealthEventKind)> {
    std::iter::from_fn(|| rx.try_recv().ok()).map(|e| (e.node.index() as u32, e.kind)).collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn thresholds_are_respected_exactly() {
    let m = monitor(1, OutlierConfig::default());
    let mut events = m.subscribe();
    let probe = Arc::new(ScriptedProbe::new());
    probe.push(id(0), [Reply::Ok(MS), Reply::Refused, Reply::Refused, Reply::Refused, Reply::Ok(MS), Reply::Ok(MS)]);
    let start = Instant::now();
    let _prober = m.spawn_prober(probe.clone(), exact(3, 2));
    assert_eq!(health(&m, 0), HealthState::Unknown);
    // t=0 success: Unknown -> Healthy at once.
    sleep_until(start + 100 * MS).await;
    assert_eq!(health(&m, 0), HealthState::Healthy);
    // Failures at t=1 and t=2 stay below fall = 3.
    sleep_until(start + 2900 * MS).await;
    assert_eq!(health(&m, 0), HealthState::Healthy);
    // The third, at t=3, flips.
    sleep_until(start + 3100 * MS).await;
    assert_eq!(health(&m, 0), HealthState::Unhealthy);
    // Unhealthy: probes every 500 ms. One success at t=3.5 stays below rise = 2 ...
    sleep_until(start + 3900 * MS).await;
    assert_eq!(health(&m, 0), HealthState::Unhealthy);
    // ... the second, at t=4, flips back and starts slow start.
    sleep_until(start + 4100 * MS).await;
    assert_eq!(health(&m, 0), HealthState::Healthy);
    let calls: Vec<Duration> = probe.calls(id(0)).iter().map(|t| *t - start.into_std()).collect();
    assert_eq!(calls, [Duration::ZERO, 1000 * MS, 2000 * MS, 3000 * MS, 3500 * MS, 4000 * MS]);
    assert_eq!(
        kinds(&mut events),
        [
            (0, HealthEventKind::BecameHealthy),
            (
                0,
                HealthEventKind::BecameUnhealthy {
                    reason: "connection failed: connection refused".into(),
                    silent: true
                }
            ),
            (0, HealthEventKind::BecameHealthy),
        ]
    );
    // The probe round trip was recorded.
    assert_eq!(m.snapshot().node(id(0)).metrics().probe_rtt(), Some(MS));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn slow_start_ramps_after_recovery() {
    let m = monitor(1, OutlierConfig::default());
    let probe = Arc::new(ScriptedProbe::new());
    probe.push(id(0), [Reply::Refused, Reply::Refused, Reply::Ok(MS), Reply::Ok(MS)]);
    let start = Instant::now();
    let _prober = m.spawn_prober(probe.clone(), exact(2, 2));
    // Failures at t=0 and t=1, successes at t=1.5 and t=2: healthy again at t=2.
    sleep_until(start + 2100 * MS).await;
    assert_eq!(health(&m, 0), HealthState::Healthy);
    let metrics = Arc::clone(m.snapshot().node(id(0)).metrics());
    let back = (start + 2 * S).into_std();
    // Linear ramp from the 10 % floor to full weight over 30 s.
    for (after, factor) in [(0, 0.10), (3, 0.19), (15, 0.55), (27, 0.91), (30, 1.0), (60, 1.0)] {
        let f = metrics.weight_factor(back + after * S);
        assert!((f - factor).abs() < 1e-9, "after {after} s: {f} vs {factor}");
    }
    // No slow start at process start: a node that was Unknown is not ramped.
    let m = monitor(1, OutlierConfig::default());
    let _prober = m.spawn_prober(Arc::new(ScriptedProbe::new()), exact(2, 2));
    sleep(100 * MS).await;
    assert_eq!(health(&m, 0), HealthState::Healthy);
    assert_eq!(m.snapshot().node(id(0)).metrics().weight_factor(Instant::now().into_std()), 1.0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn jitter_stays_in_range_and_unhealthy_interval_is_used() {
    let m = monitor(3, OutlierConfig::default());
    let probe = Arc::new(ScriptedProbe::new());
    probe.set_default(id(2), Reply::Refused);
    let config = ProbeConfig::builder()
        .interval(S)
        .jitter(100 * MS)
        .initial_jitter(S)
        .unhealthy_interval(500 * MS)
        .fall(2)
        .seed(42)
        .build()
        .unwrap();
    let start = Instant::now();
    let _prober = m.spawn_prober(probe.clone(), config);
    sleep(60 * S).await;
    let mut firsts = Vec::new();
    for node in 0..2 {
        let calls = probe.calls(id(node));
        assert!(calls.len() >= 50, "{}", calls.len());
        let first = calls[0] - start.into_std();
        assert!(first <= S, "initial jitter {first:?}");
        firsts.push(first);
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        for gap in &gaps {
            assert!((900 * MS..=1100 * MS).contains(gap), "gap {gap:?}");
        }
        // Jitter really varies the gaps.
        assert!(gaps.iter().any(|g| *g < 990 * MS) && gaps.iter().any(|g| *g > 1010 * MS), "{gaps:?}");
    }
    assert_ne!(firsts[0], firsts[1], "first probes are spread");
    // Node 2 fails: after its second probe it is unhealthy and probed every 500 ± 50 ms.
    assert_eq!(health(&m, 2), HealthState::Unhealthy);
    let calls = probe.calls(id(2));
    assert!((900 * MS..=1100 * MS).contains(&(calls[1] - calls[0])));
    for w in calls[1..].windows(2) {
        let gap = w[1] - w[0];
        assert!((450 * MS..=550 * MS).contains(&gap), "unhealthy gap {gap:?}");
    }
    assert!(calls.len() >= 110, "{}", calls.len());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hanging_node_delays_no_other_node() {
    let m = monitor(2, OutlierConfig::default());
    let mut events = m.subscribe();
    let probe = Arc::new(ScriptedProbe::new());
    probe.set_default(id(0), Reply::Hang);
    let start = Instant::now();
    let _prober = m.spawn_prober(probe.clone(), exact(2, 2));
    sleep_until(start + 10 * S + 100 * MS).await;
    let healthy: Vec<Duration> = probe.calls(id(1)).iter().map(|t| *t - start.into_std()).collect();
    assert_eq!(healthy, (0..=10).map(|i| i * S).collect::<Vec<_>>());
    // The hanging node times out after 1 s twice, then is unhealthy at t=2.
    assert_eq!(health(&m, 0), HealthState::Unhealthy);
    // Each timeout overruns the 500 ms unhealthy interval: the next probe follows at once,
    // with no burst of catch-up probes.
    let hanging: Vec<Duration> = probe.calls(id(0)).iter().map(|t| *t - start.into_std()).collect();
    assert_eq!(hanging, (0..=10).map(|i| i * S).collect::<Vec<_>>());
    assert_eq!(health(&m, 1), HealthState::Healthy);
    let ev: Vec<_> = kinds(&mut events).into_iter().filter(|(n, _)| *n == 0).collect();
    assert_eq!(ev, [(0, HealthEventKind::BecameUnhealthy { reason: "probe timed out".into(), silent: true })]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn credentials_errors_are_reported_once_and_distinctly() {
    let m = monitor(2, OutlierConfig::default());
    let mut events = m.subscribe();
    let probe = Arc::new(ScriptedProbe::new());
    probe.set_default(id(0), Reply::Status(401));
    let _prober = m.spawn_prober(probe.clone(), exact(2, 2));
    sleep(5 * S + 100 * MS).await;
    assert!(probe.calls(id(0)).len() > 5);
    assert_eq!(
        kinds(&mut events).into_iter().filter(|(n, _)| *n == 0).collect::<Vec<_>>(),
        [
            (0, HealthEventKind::CredentialsRejected { status: 401 }),
            (
                0,
                HealthEventKind::BecameUnhealthy {
                    reason: "credentials rejected with http status 401".into(),
                    silent: false
                }
            ),
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_probe_ends_an_ejection_only_after_seeing_the_node_fail() {
    let outlier = OutlierConfig::builder().max_ejection_percent(100).build().unwrap();
    let m = monitor(2, outlier);
    let probe = Arc::new(ScriptedProbe::new());
    let start = Instant::now();
    let _prober = m.spawn_prober(probe.clone(), exact(2, 2));
    // Both nodes are ejected at t=0.5; node 1 also got a 30 s Retry-After.
    sleep_until(start + 500 * MS).await;
    let now = Instant::now().into_std();
    for node in 0..2 {
        for _ in 0..5 {
            m.record(id(node), Outcome::ServerError { status: 502, retry_after: None }, now);
        }
    }
    m.record(id(1), Outcome::RateLimited { retry_after: Some(30 * S) }, now);
    let mut events = m.subscribe();
    // Probes at t=1 and t=2 pass, but the outage they would recover from was never seen by
    // them (say /models works while completions fail): the ejection stands.
    sleep_until(start + 2500 * MS).await;
    assert!(m.status(id(0), Instant::now().into_std()).unwrap().ejected_until.is_some());
    // A failed probe at t=3, then a pass at t=4, ends it early.
    probe.push(id(0), [Reply::Refused, Reply::Ok(MS)]);
    probe.push(id(1), [Reply::Refused, Reply::Ok(MS)]);
    sleep_until(start + 3500 * MS).await;
    assert!(m.status(id(0), Instant::now().into_std()).unwrap().ejected_until.is_some());
    sleep_until(start + 4 * S + MS).await;
    let now = Instant::now().into_std();
    let status = m.status(id(0), now).unwrap();
    assert_eq!(status.ejected_until, None);
    assert!((status.weight_factor - 0.1).abs() < 1e-3, "{}", status.weight_factor);
    let mut out = Vec::new();
    assert_eq!(m.select(now, |_| false, &mut out), Selection::Eligible);
    assert_eq!(out, [id(0)]);
    // Node 1's ejection ended too, but its Retry-After cooldown still runs to its end.
    let metrics = m.snapshot().node(id(1)).metrics();
    assert_eq!(m.status(id(1), now).unwrap().ejected_until, None);
    assert_eq!(metrics.availability(now), Availability::Excluded { until: (start + 30500 * MS).into_std() });
    assert_eq!(kinds(&mut events), [(0, HealthEventKind::EjectionEnded), (1, HealthEventKind::EjectionEnded)]);
    sleep_until(start + 30500 * MS).await;
    assert!(metrics.is_eligible(Instant::now().into_std()));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shutdown_leaves_no_task() {
    let m = monitor(5, OutlierConfig::default());
    let probe = Arc::new(ScriptedProbe::new());
    for node in 0..5 {
        probe.set_default(id(node), Reply::Hang);
    }
    let prober = m.spawn_prober(probe.clone(), exact(2, 2));
    assert_eq!(prober.len(), 5);
    sleep(1500 * MS).await;
    assert_eq!(m.probe_tasks(), 5);
    // Tasks are mid-probe (hanging) when shut down.
    prober.shutdown().await;
    assert_eq!(m.probe_tasks(), 0);
    assert_eq!(Arc::strong_count(&probe), 1, "every task dropped its probe");
    let calls = probe.total_calls();
    sleep(10 * S).await;
    assert_eq!(probe.total_calls(), calls, "nothing probes after shutdown");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_handle_stops_every_task() {
    let m = monitor(4, OutlierConfig::default());
    let probe = Arc::new(ScriptedProbe::new());
    let prober = m.spawn_prober(probe.clone(), ProbeConfig::default());
    let second = m.spawn_prober(probe.clone(), ProbeConfig::default());
    sleep(3 * S).await;
    assert_eq!(m.probe_tasks(), 8);
    drop(prober);
    // Aborted tasks are dropped at the runtime's next turn.
    tokio::task::yield_now().await;
    assert_eq!(m.probe_tasks(), 4);
    drop(second);
    tokio::task::yield_now().await;
    assert_eq!(m.probe_tasks(), 0);
    assert_eq!(Arc::strong_count(&probe), 1);
}

/// Two monitors in one in-process fleet: the lease holder probes and the other takes its
/// verdict, probing only now and then for its own round trip; a takeover starts from the
/// shared verdict.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_fleet_probes_each_node_once_and_shares_the_verdict() {
    use sluice_health::{GATED_RTT_PROBE_EVERY, test_util::FleetHub};

    let (a, b) = (monitor(1, OutlierConfig::default()), monitor(1, OutlierConfig::default()));
    let hub = FleetHub::new();
    let (ia, ib) = (hub.join(&a), hub.join(&b));
    hub.set_prober(id(0), Some(ia));
    let (probe_a, probe_b) = (Arc::new(ScriptedProbe::new()), Arc::new(ScriptedProbe::new()));
    // A sees the node fail from t = 2 on; B's own probe would still pass.
    probe_a.push(id(0), [Reply::Ok(MS), Reply::Ok(MS)]);
    probe_a.set_default(id(0), Reply::Refused);
    let start = Instant::now();
    let (_pa, _pb) = (a.spawn_prober(probe_a.clone(), exact(3, 2)), b.spawn_prober(probe_b.clone(), exact(3, 2)));
    sleep_until(start + 4100 * MS).await;
    assert_eq!(health(&a, 0), HealthState::Unhealthy, "A's probes failed three times");
    assert_eq!(health(&b, 0), HealthState::Unhealthy, "B took A's verdict");
    // B probed once (round trip only) in its first round, not every second.
    assert_eq!(probe_b.calls(id(0)).len(), 1);
    assert!(b.snapshot().node(id(0)).metrics().probe_rtt().is_some(), "B keeps its own round trip");
    sleep_until(start + GATED_RTT_PROBE_EVERY * S + 100 * MS).await;
    assert_eq!(probe_b.calls(id(0)).len(), 2, "one round-trip probe every {GATED_RTT_PROBE_EVERY} rounds");
    assert_eq!(health(&b, 0), HealthState::Unhealthy, "a round-trip probe carries no verdict");

    // A dies; B takes the lease over and starts from the shared verdict: rise = 2 passes.
    drop(_pa);
    hub.set_prober(id(0), Some(ib));
    let takeover = Instant::now();
    sleep(1100 * MS).await;
    assert_eq!(health(&b, 0), HealthState::Unhealthy, "one pass is below rise = 2");
    sleep_until(takeover + 2600 * MS).await;
    assert_eq!(health(&b, 0), HealthState::Healthy);
    assert_eq!(health(&a, 0), HealthState::Healthy, "A took B's verdict");
}

/// A 503's cooldown ends at the first successful probe that started after the 503; a 429's
/// cooldown runs its course, since probes cannot see a rate limit.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_probe_after_a_503_ends_its_cooldown_but_not_a_429s() {
    let m = monitor(2, OutlierConfig::default());
    let probe = Arc::new(ScriptedProbe::new());
    let start = Instant::now();
    let _prober = m.spawn_prober(probe.clone(), exact(3, 2));
    // Probes at t=0, 1, 2... all pass. At t=0.5 node 0 answers 503 and node 1 answers 429,
    // each with Retry-After 30 s.
    sleep_until(start + 500 * MS).await;
    let now = Instant::now().into_std();
    m.record(id(0), Outcome::ServerError { status: 503, retry_after: Some(30 * S) }, now);
    m.record(id(1), Outcome::RateLimited { retry_after: Some(30 * S) }, now);
    let mut events = m.subscribe();
    let mut out = Vec::new();
    assert!(matches!(m.select(now, |_| false, &mut out), Selection::Unavailable { .. }));
    // The probe at t=1 started after the 503: node 0 is back, node 1 still cools down.
    sleep_until(start + 1100 * MS).await;
    let now = Instant::now().into_std();
    assert_eq!(m.status(id(0), now).unwrap().cooldown_until, None, "{:?}", m.status(id(0), now));
    assert!(m.status(id(1), now).unwrap().cooldown_until.is_some());
    assert_eq!(m.select(now, |_| false, &mut out), Selection::Eligible);
    assert_eq!(out, [id(0)]);
    assert_eq!(kinds(&mut events), [(0, HealthEventKind::CooldownEnded)]);
}
