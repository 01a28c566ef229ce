use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use sluice_fleet::{Fleet, FleetBuilder};
use sluice_health::{HealthMonitor, OutlierConfig, Probe, ProbeConfig, ProbeError, ProberHandle, async_trait};
use sluice_region_model::{GeoPoint, Node, Region, Snapshot};

use crate::support::{PATIENCE, RedisServer, now};

const REGIONS: usize = 5;
const INTERVAL: Duration = Duration::from_millis(100);
const LEASE: Duration = Duration::from_millis(600);

/// Counts probes per (replica, region index).
#[derive(Debug, Default)]
struct Counts(Mutex<HashMap<(usize, usize), usize>>);

#[derive(Debug)]
struct CountingProbe {
    replica: usize,
    counts: Arc<Counts>,
}

#[async_trait]
impl Probe for CountingProbe {
    async fn probe(&self, node: &Node) -> Result<Duration, ProbeError> {
        *self.counts.0.lock().entry((self.replica, node.id().index())).or_default() += 1;
        Ok(Duration::from_millis(1))
    }
}

struct Member {
    monitor: HealthMonitor,
    fleet: Option<Fleet>,
    prober: Option<ProberHandle>,
}

fn member(redis: &RedisServer, i: usize) -> Member {
    let regions = (0..REGIONS)
        .map(|r| Region::new(format!("g{r}"), format!("http://127.0.0.1:9/g{r}/v1"), GeoPoint::new(0.0, 0.0)));
    let snapshot = Snapshot::new(regions).expect("valid regions");
    let monitor = HealthMonitor::new(Arc::new(snapshot), OutlierConfig::default());
    let config = FleetBuilder::new(redis.url())
        .namespace("split")
        .replica_id(format!("m{i}"))
        .lease(LEASE)
        .build()
        .expect("valid fleet config");
    let fleet = Fleet::start(&config, &monitor).expect("fleet starts");
    Member { monitor, fleet: Some(fleet), prober: None }
}

fn holder(members: &[Member], region: &str) -> Option<usize> {
    members.iter().position(|m| m.fleet.as_ref().is_some_and(|f| f.holds_lease(region)))
}

/// With 3 replicas and 5 regions, the leases spread over the replicas and each region is
/// probed about once per interval (by its lease holder) instead of three times; the others probe it only now and then for their own
/// round trip. When the holder dies without releasing its leases, another replica takes its
/// regions over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_is_probed_by_one_replica_and_taken_over_when_it_dies() {
    let redis = RedisServer::start().await;
    let mut members: Vec<Member> = (0..3).map(|i| member(&redis, i)).collect();
    for m in &members {
        let connected = tokio::time::timeout(PATIENCE, m.fleet.as_ref().expect("fleet").wait_connected(true)).await;
        assert!(connected.is_ok(), "fleet did not connect");
    }
    let counts = Arc::new(Counts::default());
    let config = ProbeConfig::builder()
        .interval(INTERVAL)
        .jitter(Duration::ZERO)
        .initial_jitter(Duration::ZERO)
        .timeout(Duration::from_secs(1))
        .build()
        .expect("valid probe config");
    for (i, m) in members.iter_mut().enumerate() {
        let probe = Arc::new(CountingProbe { replica: i, counts: Arc::clone(&counts) });
        m.prober = Some(m.monitor.spawn_prober(probe, config.clone()));
    }
    // Leases spread: with 3 replicas and 5 regions each holds its fair share (at most 2)
    // within a few lease rounds.
    let mut spread = false;
    let mut last = Vec::new();
    for _ in 0..(PATIENCE.as_millis() / 20) {
        let all_held = (0..REGIONS).all(|r| holder(&members, &format!("g{r}")).is_some());
        let shares: Vec<u64> = members.iter().map(|m| m.fleet.as_ref().expect("fleet").stats().leases_held).collect();
        if all_held && shares.iter().all(|n| (1..=2).contains(n)) {
            eprintln!("leases per replica: {shares:?}");
            spread = true;
            break;
        }
        last = shares;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(spread, "every region gets a holder and every replica a fair share of the leases: {last:?}");

    // A measurement window of about 20 probe intervals.
    let window = INTERVAL * 20;
    counts.0.lock().clear();
    let started = now();
    tokio::time::sleep(window).await;
    let elapsed = now() - started;
    let snapshot = counts.0.lock().clone();
    let intervals = elapsed.as_secs_f64() / INTERVAL.as_secs_f64();
    for r in 0..REGIONS {
        let h = holder(&members, &format!("g{r}")).expect("held");
        let by = |m: usize| snapshot.get(&(m, r)).copied().unwrap_or(0);
        let others: usize = (0..3).filter(|m| *m != h).map(by).sum();
        let total = by(h) + others;
        eprintln!(
            "region g{r}: {:.2} probes per interval across 3 replicas (holder m{h}: {}, others: {others}); \
             independent replicas would send 3.00",
            total as f64 / intervals,
            by(h)
        );
        assert!(by(h) >= 5, "the holder probes region g{r} regularly: {}", by(h));
        assert!(others * 2 <= by(h), "the others only probe g{r} for their round trip: {others} vs {}", by(h));
    }

    // Kill the holder of g0 as a crash would: no lease release, no more probes.
    let dead = holder(&members, "g0").expect("held");
    let killed = now();
    members[dead].prober.take();
    members[dead].fleet.take();
    let mut taken_over = None;
    for _ in 0..(PATIENCE.as_millis() / 20) {
        if let Some(h) = holder(&members, "g0") {
            taken_over = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = taken_over.expect("another replica takes region g0 over");
    assert_ne!(new, dead);
    eprintln!(
        "g0 taken over by m{new} {:?} after m{dead} died (lease {LEASE:?}, interval {INTERVAL:?})",
        now() - killed
    );
    let before = counts.0.lock().get(&(new, 0)).copied().unwrap_or(0);
    tokio::time::sleep(INTERVAL * 10).await;
    let after = counts.0.lock().get(&(new, 0)).copied().unwrap_or(0);
    assert!(after - before >= 5, "the new holder probes g0 regularly: {} probes in 10 intervals", after - before);
}
