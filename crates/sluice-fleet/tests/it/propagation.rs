use std::time::Duration;

use sluice_health::{HealthEventKind, Outcome};
use sluice_region_model::NodeId;

use crate::support::{Mode, PATIENCE, RedisServer, Replica, Upstream, all_connected, now, quantile};

/// Region A answers 429 with Retry-After 10 s to replica 1 only. Replicas 2 and 3 learn it
/// through Redis and send A nothing more, while A would still have served them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replicas_429_spares_the_region_the_others_calls() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let regions = ["a", "b"];
    let replicas: Vec<Replica> =
        ["r1", "r2", "r3"].iter().map(|name| Replica::new(name, &upstream, &regions, Some(&redis))).collect();
    all_connected(&replicas.iter().collect::<Vec<_>>(), true).await;

    // Before: every replica reaches A when it prefers it.
    for r in &replicas {
        assert_eq!(r.call("a").await, "a");
        assert_eq!(upstream.calls("a", &r.name), 1);
    }
    upstream.set("a", Mode::Throttle { retry_after_s: 10, only: vec!["r1".into()] });
    let a = NodeId::from_index(0);
    let mut events: Vec<_> = replicas[1..].iter().map(|r| r.client.health().subscribe()).collect();

    let sent = now();
    assert_eq!(replicas[0].call("a").await, "b", "replica 1 is throttled by A and fails over");
    for (rx, r) in events.iter_mut().zip(&replicas[1..]) {
        let heard = tokio::time::timeout(PATIENCE, async {
            loop {
                match rx.recv().await {
                    Ok(e) if e.node == a && matches!(e.kind, HealthEventKind::CooldownStarted { .. }) => return now(),
                    Ok(_) => {}
                    Err(e) => panic!("event channel: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} never heard of A's cooldown", r.name));
        eprintln!("{} applied A's cooldown {:?} after replica 1's call began", r.name, heard - sent);
        let status = r.client.health().status(a, now()).expect("node a");
        let left = status.cooldown_until.expect("A cools down").saturating_duration_since(now());
        assert!(left > Duration::from_secs(8) && left <= Duration::from_secs(10), "{} cools A for {left:?}", r.name);
    }
    for r in &replicas[1..] {
        for _ in 0..20 {
            assert_eq!(r.call("a").await, "b", "{} keeps away from A", r.name);
        }
        assert_eq!(upstream.calls("a", &r.name), 1, "{} sent A nothing after the 429", r.name);
    }
    assert_eq!(upstream.throttled("a"), 1, "A had to say 429 once for the whole fleet");
    for r in &replicas {
        let stats = r.fleet().stats();
        assert_eq!(stats.malformed, 0);
        assert!(stats.connected);
    }
    assert!(replicas[0].fleet().stats().published >= 1);
    assert!(replicas[1].fleet().stats().applied >= 1);
}

/// Propagation latency over many verdicts: replica 1 records a 429 on one region after
/// another; the time until replicas 2 and 3 emit the cooldown is measured. Printed, not
/// asserted against a clock (CI is loaded); every verdict must arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_latency_p50_p99() {
    const TRIALS: usize = 200;
    let redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let names: Vec<String> = (0..TRIALS).map(|i| format!("p{i}")).collect();
    let regions: Vec<&str> = names.iter().map(String::as_str).collect();
    let replicas: Vec<Replica> =
        ["q1", "q2", "q3"].iter().map(|name| Replica::new(name, &upstream, &regions, Some(&redis))).collect();
    all_connected(&replicas.iter().collect::<Vec<_>>(), true).await;
    let mut rx: Vec<_> = replicas[1..].iter().map(|r| r.client.health().subscribe()).collect();
    let mut samples = Vec::with_capacity(TRIALS * 2);
    for i in 0..TRIALS {
        let node = NodeId::from_index(i as u32);
        let t0 = now();
        let outcome = Outcome::RateLimited { retry_after: Some(Duration::from_secs(30)) };
        replicas[0].client.health().record(node, outcome, t0);
        for rx in &mut rx {
            let heard = tokio::time::timeout(PATIENCE, async {
                loop {
                    match rx.recv().await {
                        Ok(e) if e.node == node && matches!(e.kind, HealthEventKind::CooldownStarted { .. }) => {
                            return now();
                        }
                        Ok(_) => {}
                        Err(e) => panic!("event channel: {e}"),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("verdict {i} never arrived"));
            samples.push(heard - t0);
        }
    }
    let p50 = quantile(&mut samples, 0.5);
    let p99 = quantile(&mut samples, 0.99);
    let max = quantile(&mut samples, 1.0);
    eprintln!("fleet propagation over {} deliveries: p50 {p50:?}, p99 {p99:?}, max {max:?}", samples.len());
}
