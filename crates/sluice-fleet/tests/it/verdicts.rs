//! Every kind of verdict over a real Redis: down and up from the probing replica, ejections
//! with their end time, catch-up by a replica that starts late, and hostile messages.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sluice_fleet::{Fleet, FleetBuilder};
use sluice_health::{
    HealthEvent, HealthEventKind, HealthMonitor, Outcome, OutlierConfig, Probe, ProbeConfig, ProbeError, ProberHandle,
    async_trait,
};
use sluice_region_model::{GeoPoint, HealthState, Node, NodeId, Region, Snapshot};
use tokio::sync::broadcast;

use crate::support::{PATIENCE, RedisServer, now};

const REGIONS: [&str; 2] = ["g0", "g1"];
const LEASE: Duration = Duration::from_millis(600);

/// A probe whose verdict for region `g0` the test flips.
#[derive(Debug, Default)]
struct SwitchProbe {
    g0_down: AtomicBool,
}

#[async_trait]
impl Probe for SwitchProbe {
    async fn probe(&self, node: &Node) -> Result<Duration, ProbeError> {
        if node.region().id() == "g0" && self.g0_down.load(Ordering::SeqCst) {
            Err(ProbeError::connect(std::io::Error::other("switched off")))
        } else {
            Ok(Duration::from_millis(1))
        }
    }
}

struct Member {
    monitor: HealthMonitor,
    fleet: Fleet,
    _prober: Option<ProberHandle>,
}

fn monitor() -> HealthMonitor {
    let regions =
        REGIONS.iter().map(|r| Region::new(*r, format!("http://127.0.0.1:9/{r}/v1"), GeoPoint::new(0.0, 0.0)));
    // Every region may be ejected at once here: the tests eject one of two.
    let outlier = OutlierConfig::builder().consecutive_failures(3).max_ejection_percent(100).build().unwrap();
    HealthMonitor::new(Arc::new(Snapshot::new(regions).expect("valid regions")), outlier)
}

async fn member(redis: &RedisServer, namespace: &str, name: &str, probe: Option<&Arc<SwitchProbe>>) -> Member {
    let monitor = monitor();
    let config = FleetBuilder::new(redis.url())
        .namespace(namespace)
        .replica_id(name)
        .lease(LEASE)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .build()
        .expect("valid fleet config");
    let fleet = Fleet::start(&config, &monitor).expect("fleet starts");
    assert!(tokio::time::timeout(PATIENCE, fleet.wait_connected(true)).await.is_ok(), "{name} connects");
    let prober = probe.map(|p| {
        let config = ProbeConfig::builder()
            .interval(Duration::from_millis(100))
            .jitter(Duration::ZERO)
            .initial_jitter(Duration::ZERO)
            .unhealthy_interval(Duration::from_millis(100))
            .fall(1)
            .rise(1)
            .build()
            .expect("valid probe config");
        monitor.spawn_prober(Arc::clone(p) as Arc<dyn Probe>, config)
    });
    Member { monitor, fleet, _prober: prober }
}

/// Waits (bounded) for the first event about `node` that `want` accepts.
async fn heard(rx: &mut broadcast::Receiver<HealthEvent>, node: NodeId, want: impl Fn(&HealthEventKind) -> bool) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(e) if e.node == node && want(&e.kind) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event channel: {e}"),
            }
        }
    })
    .await
    .expect("the verdict arrives");
}

const G0: NodeId = NodeId::from_index(0);

fn health(m: &Member) -> HealthState {
    m.monitor.status(G0, now()).expect("g0").health
}

/// Only the lease holder probes `g0`; when its probes fail, every replica marks it down, and
/// when they pass again, every replica marks it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_and_up_verdicts_reach_every_replica() {
    let redis = RedisServer::start().await;
    let probe = Arc::new(SwitchProbe::default());
    let mut members = Vec::new();
    for name in ["d1", "d2", "d3"] {
        members.push(member(&redis, "updown", name, Some(&probe)).await);
    }
    // Wait until g0 has a holder and every replica saw it healthy.
    let holder = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(h) = members.iter().position(|m| m.fleet.holds_lease("g0"))
                && members.iter().all(|m| health(m) == HealthState::Healthy)
            {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("g0 gets a lease holder and is healthy everywhere");

    let mut rx: Vec<_> = members.iter().map(|m| m.monitor.subscribe()).collect();
    probe.g0_down.store(true, Ordering::SeqCst);
    for (i, rx) in rx.iter_mut().enumerate() {
        heard(rx, G0, |k| matches!(k, HealthEventKind::BecameUnhealthy { .. })).await;
        assert_eq!(health(&members[i]), HealthState::Unhealthy, "d{} marks g0 down", i + 1);
    }
    probe.g0_down.store(false, Ordering::SeqCst);
    for (i, rx) in rx.iter_mut().enumerate() {
        heard(rx, G0, |k| matches!(k, HealthEventKind::BecameHealthy)).await;
        assert_eq!(health(&members[i]), HealthState::Healthy, "d{} marks g0 up", i + 1);
    }
    let others: u64 =
        members.iter().enumerate().filter(|(i, _)| *i != holder).map(|(_, m)| m.fleet.stats().applied).sum();
    assert!(others >= 2, "the other replicas took the verdicts from the channel: {others}");
    assert!(members.iter().all(|m| m.fleet.stats().malformed == 0));
}

/// Replica 1 ejects `g0` after its own failures; the others exclude it too, until about the
/// same end time (carried as a duration, so no clock crosses hosts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_reaches_every_replica_with_its_end_time() {
    let redis = RedisServer::start().await;
    let mut members = Vec::new();
    for name in ["e1", "e2", "e3"] {
        members.push(member(&redis, "eject", name, None).await);
    }
    let mut rx: Vec<_> = members[1..].iter().map(|m| m.monitor.subscribe()).collect();
    let t0 = now();
    for _ in 0..3 {
        members[0].monitor.record(G0, Outcome::ConnectError, now());
    }
    let until = members[0].monitor.status(G0, now()).expect("g0").ejected_until.expect("replica 1 ejected g0");
    let local = until.saturating_duration_since(t0);
    for (i, rx) in rx.iter_mut().enumerate() {
        heard(rx, G0, |k| matches!(k, HealthEventKind::Ejected { .. })).await;
        let status = members[i + 1].monitor.status(G0, now()).expect("g0");
        let excluded = members[i + 1].monitor.snapshot().node(G0).metrics().excluded_until().expect("excluded");
        let left = excluded.saturating_duration_since(now());
        // The same end within the time the message took (and a loaded machine's slack).
        assert!(
            left <= local && left + Duration::from_secs(3) >= local,
            "e{} excludes g0 for {left:?} of {local:?}",
            i + 2
        );
        assert_eq!(status.health, HealthState::Unknown, "an ejection is not a probe verdict");
    }
}

/// A replica that starts after a cooldown and an ejection were published catches up from the
/// keyed records, with the time left as Redis counts it (PTTL), not as any replica's clock does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_replica_catches_up_from_the_keyed_records() {
    let redis = RedisServer::start().await;
    let early = member(&redis, "late", "l1", None).await;
    let g1 = NodeId::from_index(1);
    let t0 = now();
    early.monitor.record(G0, Outcome::RateLimited { retry_after: Some(Duration::from_secs(30)) }, t0);
    for _ in 0..3 {
        early.monitor.record(g1, Outcome::ConnectError, now());
    }
    // Published: the early replica's own counter says so.
    tokio::time::timeout(PATIENCE, async {
        while early.fleet.stats().published < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both verdicts are published");

    let late = member(&redis, "late", "l2", None).await;
    let caught_up = tokio::time::timeout(PATIENCE, async {
        loop {
            let (a, b) = (late.monitor.status(G0, now()).expect("g0"), late.monitor.status(g1, now()).expect("g1"));
            let excluded = late.monitor.snapshot().node(g1).metrics().excluded_until();
            if let (Some(cool), Some(ejected)) = (a.cooldown_until, excluded) {
                return (cool, ejected, b);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the late replica applies the records");
    let (cool, _ejected, _) = caught_up;
    let left = cool.saturating_duration_since(now());
    let elapsed = t0.elapsed();
    // The cooldown ends about 30 s after the 429, give or take the time the record took to be
    // written (a loaded machine's slack both ways).
    let end = left + elapsed;
    assert!(
        end >= Duration::from_secs(28) && end <= Duration::from_secs(33),
        "the late replica cools g0 for {left:?}, {elapsed:?} after a 30 s Retry-After"
    );
}

/// Hostile or broken messages on the channel are ignored and counted; the link stays up and a
/// well-formed message after them still applies. Nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_counted_and_ignored() {
    let redis = RedisServer::start().await;
    let target = member(&redis, "hostile", "h1", None).await;
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let long = format!("v1|down|0|x|{}", "g".repeat(2000));
    let bad: Vec<Vec<u8>> = vec![
        b"\xff\xfe\xfd".to_vec(),
        b"".to_vec(),
        b"v2|down|0|intruder|g0".to_vec(),
        b"v1|explode|0|intruder|g0".to_vec(),
        b"v1|cool|99999999999|intruder|g0".to_vec(),
        b"v1|cool|-5|intruder|g0".to_vec(),
        b"v1|down|0|bad replica|g0".to_vec(),
        b"v1|down|0|intruder|g0\x07".to_vec(),
        b"v1|down".to_vec(),
        long.into_bytes(),
    ];
    for payload in &bad {
        let _: i64 = redis::cmd("PUBLISH").arg("hostile:events").arg(payload).query_async(&mut conn).await.unwrap();
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg("hostile:events")
        .arg("v1|down|0|intruder|nowhere")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut rx = target.monitor.subscribe();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("hostile:events")
        .arg("v1|cool|5000|intruder|g0")
        .query_async(&mut conn)
        .await
        .unwrap();
    heard(&mut rx, G0, |k| matches!(k, HealthEventKind::CooldownStarted { .. })).await;
    let stats = target.fleet.stats();
    assert_eq!(stats.malformed, bad.len() as u64, "{stats:?}");
    assert_eq!(stats.unknown_region, 1, "{stats:?}");
    assert!(stats.connected);
    assert_eq!(health(&target), HealthState::Unknown, "no garbage was taken for a verdict");
    let cool = target.monitor.status(G0, now()).expect("g0").cooldown_until.expect("the good message applied");
    assert!(cool.saturating_duration_since(Instant::now()) <= Duration::from_secs(5));
}

/// A reload swaps the monitor for a successor whose node ids differ (here the regions come in
/// the other order). Fleet mode started anew on the successor publishes a 429 under the region
/// that sent it: the other replica cools `g0`, not `g1`. (The successor no longer inherits the
/// old hook, which spoke of the old node ids.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_restarted_on_a_successor_monitor_names_the_right_regions() {
    let redis = RedisServer::start().await;
    let other = member(&redis, "succ", "s2", None).await;
    let first = member(&redis, "succ", "s1", None).await;
    let old = first.monitor.snapshot();
    let reordered =
        REGIONS.iter().rev().map(|r| Region::new(*r, format!("http://127.0.0.1:9/{r}/v1"), GeoPoint::new(0.0, 0.0)));
    let next = Arc::new(Snapshot::builder().reuse_metrics(Arc::clone(old)).build(reordered).expect("valid regions"));
    let successor = first.monitor.successor(Arc::clone(&next)).expect("same epoch");
    assert!(successor.hook().is_none(), "a hook speaks of the old node ids");
    first.fleet.shutdown().await;
    let config = FleetBuilder::new(redis.url()).namespace("succ").replica_id("s1").lease(LEASE).build().unwrap();
    let fleet = Fleet::start(&config, &successor).expect("fleet mode starts on the successor");
    assert!(tokio::time::timeout(PATIENCE, fleet.wait_connected(true)).await.is_ok());

    let g0_there = next.find("g0").expect("g0");
    assert_eq!(g0_there.index(), 1, "g0 is node 1 after the reload");
    let mut rx = other.monitor.subscribe();
    successor.record(g0_there, Outcome::RateLimited { retry_after: Some(Duration::from_secs(20)) }, now());
    heard(&mut rx, G0, |k| matches!(k, HealthEventKind::CooldownStarted { .. })).await;
    let g1 = NodeId::from_index(1);
    assert!(other.monitor.status(G0, now()).expect("g0").cooldown_until.is_some(), "g0 cools down");
    assert!(other.monitor.status(g1, now()).expect("g1").cooldown_until.is_none(), "g1 was never throttled");
}
