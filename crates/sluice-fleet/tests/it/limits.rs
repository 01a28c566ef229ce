use std::{
    collections::BTreeMap,
    time::{Duration, UNIX_EPOCH},
};

use sluice_client::{ClientBuilder, FailoverPolicy};
use sluice_health::OutlierConfig;

use crate::support::{Mode, PATIENCE, RedisServer, Replica, Upstream, all_connected};

const RATIO: f64 = 0.1;
const MIN_PER_SEC: u32 = 1;
/// Long enough that every run stays inside one budget window, even on a loaded machine.
const BUDGET_TTL: Duration = Duration::from_secs(60);
const CALLS_PER_REPLICA: usize = 100;

/// A client that may retry each call twice within a budget of 10 % of calls plus 1/s over a
/// minute (a floor of 60), and never ejects (so every call reaches the upstream).
fn budgeted(c: ClientBuilder) -> ClientBuilder {
    c.failover(FailoverPolicy::default().max_attempts(3).retry_budget(RATIO, MIN_PER_SEC, BUDGET_TTL))
        .outlier_config(OutlierConfig::builder().max_ejection_percent(0).build().expect("valid outlier config"))
}

/// Three replicas call three regions that fail every call (500), once with independent
/// retry budgets and once with one budget shared by the fleet. Retries are counted at the
/// upstream: chat calls received minus calls made.
///
/// Independent budgets allow 3 × (floor + 10 % of each one's calls) = 3 × (60 + 10) = 210.
/// The shared one allows floor + 10 % of the fleet's calls = 60 + 30 = 90: claims are atomic
/// in Redis and a retry is spent only from a claim, so the only slack is one retry per
/// replica racing a renewal (documented in the crate README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_retry_budget_holds_the_fleet_to_one_budget() {
    let redis = RedisServer::start().await;
    let independent = retries(None).await;
    let (shared, outages) = retries_with_outages(Some(&redis)).await;
    let calls = 3 * CALLS_PER_REPLICA;
    let floor = u64::from(MIN_PER_SEC) * BUDGET_TTL.as_secs();
    let bound = floor as f64 + RATIO * calls as f64 + 3.0;
    eprintln!(
        "retries for {calls} failing calls: {independent} with 3 independent budgets, {shared} with a shared one \
         (bound {bound}; shared / independent = {:.2})",
        shared as f64 / independent.max(1) as f64
    );
    assert_eq!(outages, 0, "redis stayed up, so the shared budget applied throughout");
    assert!(independent >= 3 * floor, "independent budgets each allow their own floor: {independent}");
    assert!(shared as f64 <= bound, "fleet-wide retries {shared} stay within {bound}");
    assert!(
        (shared as f64) < 0.6 * independent as f64,
        "a shared budget allows measurably fewer retries: {shared} vs {independent}"
    );
}

async fn retries(redis: Option<&RedisServer>) -> u64 {
    retries_with_outages(redis).await.0
}

/// Runs the failing calls; returns the retries the upstream saw and the fleet's outages.
async fn retries_with_outages(redis: Option<&RedisServer>) -> (u64, u64) {
    let upstream = Upstream::start().await;
    let regions = ["a", "b", "c"];
    for region in regions {
        upstream.set(region, Mode::Status(500));
    }
    let tag = if redis.is_some() { "s" } else { "i" };
    let replicas: Vec<Replica> = (1..=3)
        .map(|i| {
            Replica::custom(&format!("{tag}{i}"), &upstream, &regions, redis, budgeted, |f| {
                f.shared_retry_budget(true).op_timeout(Duration::from_secs(5))
            })
        })
        .collect();
    if redis.is_some() {
        all_connected(&replicas.iter().collect::<Vec<_>>(), true).await;
    }
    let load = replicas.iter().map(|r| async move {
        for i in 0..CALLS_PER_REPLICA {
            let result = r.try_call(regions[i % regions.len()]).await;
            assert!(result.is_err(), "every region fails, so every call does");
        }
    });
    let ran = tokio::time::timeout(PATIENCE * 3, futures_util::future::join_all(load)).await;
    assert!(ran.is_ok(), "the calls finish in time");
    let hits: usize = regions.iter().map(|g| upstream.region_calls(g)).sum();
    let calls = 3 * CALLS_PER_REPLICA;
    assert!(hits >= calls, "every call reached the upstream at least once: {hits} < {calls}");
    let outages = replicas.iter().filter_map(|r| r.fleet.as_ref()).map(|f| f.stats().outages).sum();
    ((hits - calls) as u64, outages)
}

const LIMIT: u32 = 20;
const BATCH: u32 = 4;
const WINDOW: Duration = Duration::from_secs(1);

/// Three replicas prefer region A, limited to 20 calls per one-second window for the whole
/// fleet (claimed 4 at a time); B is unlimited. Calls arrive at A faster than that (each takes
/// 20 ms, so each replica alone could send 50 per second). In every window A receives at most
/// the limit plus one batch and a few calls per replica (the check period's slack), every
/// call succeeds, and the overflow spills to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_limit_is_shared_by_the_fleet_and_spills_over() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let slow = Mode::RateLimit {
        per_window: usize::MAX,
        window: Duration::from_secs(1),
        retry_after_s: 1,
        latency: Duration::from_millis(20),
    };
    upstream.set("a", slow.clone());
    upstream.set("b", slow);
    let regions = ["a", "b"];
    let replicas: Vec<Replica> = (1..=3)
        .map(|i| {
            Replica::custom(
                &format!("l{i}"),
                &upstream,
                &regions,
                Some(&redis),
                |c| c,
                |f| {
                    f.region_limit("a", LIMIT)
                        .limit_window(WINDOW)
                        .limit_batch(BATCH)
                        .op_timeout(Duration::from_secs(5))
                },
            )
        })
        .collect();
    all_connected(&replicas.iter().collect::<Vec<_>>(), true).await;

    let run_for = Duration::from_millis(3500);
    let load = replicas.iter().map(|r| async move {
        let started = tokio::time::Instant::now();
        let mut served = 0;
        // Bounded in count and time.
        for _ in 0..1000 {
            if started.elapsed() >= run_for {
                break;
            }
            r.call("a").await;
            served += 1;
        }
        served
    });
    let served = tokio::time::timeout(PATIENCE * 2, futures_util::future::join_all(load)).await.expect("in time");
    let total: usize = served.iter().sum();

    // A's calls by fleet window (Redis runs on this host: same clock).
    let mut per_window: BTreeMap<u128, u32> = BTreeMap::new();
    for at in upstream.arrivals("a") {
        let ms = at.duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
        *per_window.entry(ms / WINDOW.as_millis()).or_default() += 1;
    }
    let (a, b) = (upstream.region_calls("a"), upstream.region_calls("b"));
    let slack = 3 * (BATCH + 8);
    let stats: Vec<_> = replicas.iter().map(|r| r.fleet().stats()).collect();
    eprintln!(
        "{total} calls: A {a}, B {b}; A per window {:?} (limit {LIMIT} + slack {slack}); claimed {:?}, exhausted {:?}",
        per_window.values().collect::<Vec<_>>(),
        stats.iter().map(|s| s.limit_claimed).collect::<Vec<_>>(),
        stats.iter().map(|s| s.limit_exhausted).collect::<Vec<_>>(),
    );
    assert_eq!(a + b, total, "every call was served, once");
    assert!(b > 0, "the overflow spilled to B");
    assert!(stats.iter().any(|s| s.limit_exhausted > 0), "the fleet's window was spent");
    for (window, n) in &per_window {
        assert!(*n <= LIMIT + slack, "window {window}: A got {n} calls, over {LIMIT} + {slack}");
    }
    assert!(per_window.values().any(|n| *n >= LIMIT / 2), "A served its share: {per_window:?}");
}

/// Redis is killed: calls keep succeeding, the region limit is no longer enforced (A takes
/// every call, far beyond its limit) and the retry budget is each replica's own again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_limits_are_off_and_calls_go_on() {
    let mut redis = RedisServer::start().await;
    let upstream = Upstream::start().await;
    let regions = ["a", "b"];
    let replicas: Vec<Replica> = (1..=2)
        .map(|i| {
            Replica::custom(&format!("d{i}"), &upstream, &regions, Some(&redis), budgeted, |f| {
                f.shared_retry_budget(true).region_limit("a", 5)
            })
        })
        .collect();
    let refs: Vec<&Replica> = replicas.iter().collect();
    all_connected(&refs, true).await;
    redis.kill().await;
    all_connected(&refs, false).await;
    for r in &replicas {
        for _ in 0..30 {
            assert_eq!(r.call("a").await, "a", "no limit applies while Redis is down");
        }
        let budget = r.client.retry_budget();
        assert_eq!(budget.shared_allowance(), 0, "the fleet grant is dropped");
        assert!(r.client.retry_budget_available() >= budget.reserve(), "the local budget applies");
    }
    assert_eq!(upstream.region_calls("a"), 60);
}
