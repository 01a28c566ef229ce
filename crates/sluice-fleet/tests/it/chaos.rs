use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::support::{Mode, RedisServer, Replica, Upstream, all_connected, now};

const THROTTLED: [&str; 3] = ["a", "b", "c"];
const CALLS_PER_REPLICA: usize = 800;

/// Three replicas call three rate-limited regions (and a fourth that never throttles) in a
/// seeded random order, once as independent replicas and once in a fleet. Replica `i` sends
/// 80 % of its calls to its near region `i` and 10 % to each of the others. Each region allows
/// 10 calls per 200 ms from everyone together; the call over the limit and every call in the
/// next two seconds get 429 with Retry-After 2 s. Independent replicas each need their own 429 to
/// keep away; in a fleet the first 429 spares the region the others' later calls (calls
/// already in flight when it trips still get theirs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_takes_fewer_429s_than_independent_replicas() {
    let redis = RedisServer::start().await;
    let (independent, t_independent) = run(None).await;
    let (fleet, t_fleet) = run(Some(&redis)).await;
    // Throttle episodes are bounded in time (Retry-After), and a loaded machine stretches one
    // run more than the other: compare 429s per second of run.
    let rate = |n: usize, t: Duration| n as f64 / t.as_secs_f64();
    let (mut sum_independent, mut sum_fleet) = (0, 0);
    for (i, region) in THROTTLED.iter().enumerate() {
        eprintln!(
            "region {region}: {:.2} 429/s from 3 independent replicas, {:.2} from a fleet of 3 (ratio {:.2})",
            rate(independent[i], t_independent),
            rate(fleet[i], t_fleet),
            rate(fleet[i], t_fleet) / rate(independent[i].max(1), t_independent)
        );
        sum_independent += independent[i];
        sum_fleet += fleet[i];
    }
    let (r_independent, r_fleet) = (rate(sum_independent, t_independent), rate(sum_fleet, t_fleet));
    eprintln!(
        "all regions: {sum_independent} 429s in {t_independent:?} vs {sum_fleet} in {t_fleet:?}: \
         {r_independent:.2} vs {r_fleet:.2} per second (fleet / independent = {:.2})",
        r_fleet / r_independent.max(f64::MIN_POSITIVE)
    );
    assert!(sum_independent > 0, "the scenario throttles");
    assert!(r_fleet < r_independent, "a fleet takes fewer 429s per second: {r_fleet:.2} vs {r_independent:.2}");
}

/// One run; returns the 429s each throttled region sent, and how long the calls took.
async fn run(redis: Option<&RedisServer>) -> (Vec<usize>, Duration) {
    let upstream = Upstream::start().await;
    for region in THROTTLED {
        upstream.set(
            region,
            Mode::RateLimit {
                per_window: 10,
                window: Duration::from_millis(200),
                retry_after_s: 2,
                latency: Duration::from_millis(2),
            },
        );
    }
    // The spare region never throttles but is as slow, so the run lasts several Retry-Afters.
    upstream.set(
        "d",
        Mode::RateLimit {
            per_window: usize::MAX,
            window: Duration::from_secs(1),
            retry_after_s: 2,
            latency: Duration::from_millis(2),
        },
    );
    let regions = ["a", "b", "c", "d"];
    let tag = if redis.is_some() { "f" } else { "i" };
    let replicas: Vec<Replica> =
        (1..=3).map(|i| Replica::new(&format!("{tag}{i}"), &upstream, &regions, redis)).collect();
    if redis.is_some() {
        all_connected(&replicas.iter().collect::<Vec<_>>(), true).await;
    }
    let started = now();
    let load = replicas.iter().enumerate().map(|(i, r)| async move {
        let mut rng = SmallRng::seed_from_u64(i as u64 + 1);
        let mut failed = 0;
        for _ in 0..CALLS_PER_REPLICA {
            let roll = rng.random_range(0..10);
            let region = match roll {
                0 => THROTTLED[(i + 1) % 3],
                1 => THROTTLED[(i + 2) % 3],
                _ => THROTTLED[i],
            };
            failed += usize::from(r.try_call(region).await.is_err());
        }
        failed
    });
    let failed: usize = futures_util::future::join_all(load).await.into_iter().sum();
    let took = now() - started;
    eprintln!(
        "{} run of {} calls took {:?}; {failed} calls failed (every attempt throttled)",
        if redis.is_some() { "fleet" } else { "independent" },
        3 * CALLS_PER_REPLICA,
        took
    );
    (THROTTLED.iter().map(|region| upstream.throttled(region)).collect(), took)
}
