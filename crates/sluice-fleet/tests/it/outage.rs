use sluice_health::HealthEventKind;
use sluice_region_model::NodeId;

use crate::support::{Mode, PATIENCE, RedisServer, Replica, Upstream, all_connected, now};

/// Kill redis-server mid-run: calls keep succeeding and each replica runs on local health;
/// a 429 learnt meanwhile stays local. Restart it: the replicas resync and the cooldown
/// reaches the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_a_redis_outage_and_the_fleet_resyncs_after() {
    let mut redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let regions = ["a", "b"];
    let r1 = Replica::new("o1", &upstream, &regions, Some(&redis));
    let r2 = Replica::new("o2", &upstream, &regions, Some(&redis));
    all_connected(&[&r1, &r2], true).await;

    // Calls in flight while Redis dies.
    let during = async {
        for _ in 0..50 {
            r1.call("b").await;
            r2.call("b").await;
        }
    };
    let kill = async {
        redis.kill().await;
        all_connected(&[&r1, &r2], false).await;
    };
    tokio::join!(during, kill);

    // While Redis is down: replica 1 is throttled by A; only it knows.
    upstream.set("a", Mode::Throttle { retry_after_s: 10, only: vec!["o1".into()] });
    assert_eq!(r1.call("a").await, "b");
    let a = NodeId::from_index(0);
    assert!(r2.client.health().status(a, now()).expect("a").cooldown_until.is_none(), "nothing shared while down");
    for _ in 0..10 {
        assert_eq!(r2.call("b").await, "b");
    }
    assert_eq!(r1.fleet().stats().outages, 1);

    let mut events = r2.client.health().subscribe();
    redis.restart().await;
    all_connected(&[&r1, &r2], true).await;
    let heard = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(e) if e.node == a && matches!(e.kind, HealthEventKind::CooldownStarted { .. }) => return,
                Ok(_) => {}
                Err(e) => panic!("event channel: {e}"),
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "replica 2 learns the cooldown after the resync");
    let before = upstream.calls("a", "o2");
    assert_eq!(r2.call("a").await, "b", "replica 2 keeps away from A");
    assert_eq!(upstream.calls("a", "o2"), before);
    assert!(r1.fleet().stats().resyncs >= 1 && r2.fleet().stats().resyncs >= 1);
}

/// A hung Redis (SIGSTOP) is as good as a dead one: the operation timeout notices, calls
/// keep succeeding; resumed (SIGCONT), the fleet reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_falls_back_to_local_health() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let regions = ["a", "b"];
    let r1 = Replica::new("h1", &upstream, &regions, Some(&redis));
    all_connected(&[&r1], true).await;
    redis.signal("STOP");
    let calls = async {
        for _ in 0..30 {
            assert_eq!(r1.call("a").await, "a");
        }
    };
    let (_, waited) = tokio::join!(calls, tokio::time::timeout(PATIENCE, r1.fleet().wait_connected(false)));
    assert!(waited.is_ok(), "a hung redis is noticed");
    let started = now();
    for _ in 0..30 {
        assert_eq!(r1.call("a").await, "a");
    }
    eprintln!("30 calls with redis hung took {:?}", now() - started);
    redis.signal("CONT");
    all_connected(&[&r1], true).await;
    assert!(r1.fleet().stats().resyncs >= 1);
}
