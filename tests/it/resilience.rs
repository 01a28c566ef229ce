use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream};
use sluice_client::{AttemptFailure, CallOptions, ErrorKind, FailoverPolicy, HedgePolicy, ProbeConfig, Timeouts};
use sluice_health::{OutlierConfig, Probe, ProbeError, async_trait};
use sluice_integration::{MockRegion, Reply};
use sluice_region_model::Node;

use crate::{SEOUL, SINGAPORE, TOKYO, builder, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_to_a_faster_region_wins() {
    let slow = MockRegion::start("seoul").await;
    slow.always(Reply::Delay(Duration::from_secs(20), Box::new(Reply::Ok)));
    let fast = MockRegion::start("tokyo").await;
    let client = builder()
        .regions([slow.region(SEOUL), fast.region(TOKYO)])
        .failover(FailoverPolicy::default().hedge(Some(HedgePolicy::Fixed(Duration::from_millis(200)))))
        .timeouts(Timeouts::default().attempt(Duration::from_secs(60)).total(Duration::from_secs(15)))
        .build()
        .unwrap();
    let resp = client.chat_completions_with(request(), &CallOptions::new().prefer_region("seoul")).await.unwrap();
    assert_eq!(&*resp.meta.region, "tokyo");
    assert!(resp.meta.hedged);
    assert_eq!(resp.meta.attempts, 2);
    assert_eq!(resp.meta.failed_attempts[0].failure, AttemptFailure::Cancelled);
    assert_eq!((slow.chat_hits(), fast.chat_hits()), (1, 1));
    // The loser was cancelled: nothing stays in flight.
    assert!(client.snapshot().nodes().iter().all(|n| n.metrics().in_flight() == 0));
}

/// Starts a plain call that prefers Seoul and waits (bounded) until `seoul` has it.
async fn parked_on_seoul(
    client: &sluice_client::Client,
    seoul: &MockRegion,
) -> tokio::task::JoinHandle<Result<sluice_client::Response<sluice_client::ChatCompletion>, sluice_client::Error>> {
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client.chat_completions_with(request(), &CallOptions::new().prefer_region("seoul")).await
        })
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        while seoul.chat_hits() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the call reached seoul");
    call
}

/// A probe whose verdict for one region the test flips.
#[derive(Debug)]
struct SwitchProbe {
    down: &'static str,
    flipped: Arc<AtomicBool>,
}

#[async_trait]
impl Probe for SwitchProbe {
    async fn probe(&self, node: &Node) -> Result<Duration, ProbeError> {
        if node.region().id() == self.down && self.flipped.load(Ordering::SeqCst) {
            Err(ProbeError::connect(std::io::Error::other("switched off")))
        } else {
            Ok(Duration::from_millis(1))
        }
    }
}

/// A region accepts the call and never answers; the prober then marks it down. The call is
/// re-sent elsewhere at once, long before its attempt timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_call_is_rescued_when_its_region_is_marked_down() {
    let hang = MockRegion::start("seoul").await;
    hang.always(Reply::Hang);
    let good = MockRegion::start("tokyo").await;
    let flipped = Arc::new(AtomicBool::new(false));
    let client = builder()
        .regions([hang.region(SEOUL), good.region(TOKYO)])
        .active_probing(true)
        .probe(Arc::new(SwitchProbe { down: "seoul", flipped: Arc::clone(&flipped) }))
        .probe_config(
            ProbeConfig::builder()
                .interval(Duration::from_millis(100))
                .jitter(Duration::ZERO)
                .initial_jitter(Duration::ZERO)
                .unhealthy_interval(Duration::from_millis(100))
                .fall(2)
                .rise(1)
                .build()
                .unwrap(),
        )
        // The attempt timeout is far beyond the deadline: only a rescue can save the call.
        .timeouts(Timeouts::default().attempt(Duration::from_secs(120)).total(Duration::from_secs(20)))
        .build()
        .unwrap();
    // Wait until the call is parked on the hanging region, then turn its probe red.
    let call = parked_on_seoul(&client, &hang).await;
    flipped.store(true, Ordering::SeqCst);
    let resp = call.await.unwrap().expect("rescued call succeeds");
    assert_eq!(&*resp.meta.region, "tokyo");
    assert_eq!(resp.meta.rescues, 1);
    assert_eq!(resp.meta.failed_attempts[0].failure, AttemptFailure::Rescued);
    assert_eq!((hang.chat_hits(), good.chat_hits()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_can_be_turned_off() {
    let hang = MockRegion::start("seoul").await;
    hang.always(Reply::Hang);
    let good = MockRegion::start("tokyo").await;
    // Seoul's probe stays green until the call is parked there, so the test does not depend on
    // when the first probe happens to run.
    let flipped = Arc::new(AtomicBool::new(false));
    let client = builder()
        .regions([hang.region(SEOUL), good.region(TOKYO)])
        .active_probing(true)
        .probe(Arc::new(SwitchProbe { down: "seoul", flipped: Arc::clone(&flipped) }))
        .probe_config(
            ProbeConfig::builder()
                .interval(Duration::from_millis(50))
                .jitter(Duration::ZERO)
                .initial_jitter(Duration::ZERO)
                .unhealthy_interval(Duration::from_millis(50))
                .fall(1)
                .build()
                .unwrap(),
        )
        .failover(FailoverPolicy::default().rescue(false))
        .timeouts(Timeouts::default().attempt(Duration::from_secs(120)).total(Duration::from_secs(3)))
        .build()
        .unwrap();
    let call = parked_on_seoul(&client, &hang).await;
    // Health now marks Seoul down while the call waits there; with rescue off it is not re-sent.
    flipped.store(true, Ordering::SeqCst);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::DeadlineExceeded);
    assert_eq!((hang.chat_hits(), good.chat_hits()), (1, 0));
}

/// A passive ejection is inferred from other calls' answers: the ejected region is alive and
/// will still answer the calls it holds. A plain call waiting there is not re-sent (that would
/// generate it twice); it gets its answer from the region that has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_does_not_rescue_a_call_its_region_is_generating() {
    let seoul = MockRegion::start("seoul").await;
    // The first call takes a while to generate; the next three fail fast.
    seoul.script([
        Reply::Delay(Duration::from_secs(2), Box::new(Reply::Ok)),
        Reply::Status(500, vec![]),
        Reply::Status(500, vec![]),
        Reply::Status(500, vec![]),
    ]);
    let tokyo = MockRegion::start("tokyo").await;
    let singapore = MockRegion::start("singapore").await;
    let client = builder()
        .regions([seoul.region(SEOUL), tokyo.region(TOKYO), singapore.region(SINGAPORE)])
        .outlier_config(OutlierConfig::builder().consecutive_failures(3).build().unwrap())
        .build()
        .unwrap();
    let slow = parked_on_seoul(&client, &seoul).await;
    // Three calls fail in Seoul (and are served elsewhere): Seoul is ejected while the first
    // call is still being generated there.
    for _ in 0..3 {
        let resp = client.chat_completions_with(request(), &CallOptions::new().prefer_region("seoul")).await.unwrap();
        assert_ne!(&*resp.meta.region, "seoul");
    }
    assert!(client.snapshot().nodes()[0].metrics().excluded_until().is_some(), "seoul was ejected");
    let resp = slow.await.unwrap().expect("the slow call is answered");
    assert_eq!(&*resp.meta.region, "seoul", "served by the region that generated it");
    assert_eq!(resp.meta.rescues, 0);
    // Four calls, four generations: the slow one was never re-sent.
    assert_eq!(seoul.chat_hits() + tokyo.chat_hits() + singapore.chat_hits(), 4 + 3);
    assert_eq!(tokyo.chat_hits() + singapore.chat_hits(), 3);
}

/// Under a total outage, retries stay within the budget: about 20 % of calls plus the floor,
/// instead of three attempts per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_under_total_failure_stay_within_the_budget() {
    let regions =
        [MockRegion::start("seoul").await, MockRegion::start("tokyo").await, MockRegion::start("singapore").await];
    for r in &regions {
        r.always(Reply::Status(500, vec![]));
    }
    let client = builder()
        .regions([regions[0].region(SEOUL), regions[1].region(TOKYO), regions[2].region(SINGAPORE)])
        // Floor 1/s over 10 s: a reserve of 10 retries.
        .failover(FailoverPolicy::default().retry_budget(0.2, 1, Duration::from_secs(10)))
        // Keep every region in play so that only the budget limits attempts.
        .outlier_config(
            OutlierConfig::builder()
                .consecutive_failures(1_000_000)
                .failure_rate_min_requests(1_000_000)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    const CALLS: usize = 1000;
    let failures = stream::iter(0..CALLS)
        .map(|_| {
            let client = client.clone();
            async move { client.chat_completions(request()).await.is_err() }
        })
        .buffer_unordered(16)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    assert_eq!(failures, CALLS);
    let attempts: usize = regions.iter().map(MockRegion::chat_hits).sum();
    // 1000 first attempts + 20 % + the reserve of 10, plus up to 16 racing for the last token.
    let bound = CALLS + CALLS / 5 + 10 + 16;
    assert!(attempts <= bound, "{attempts} upstream attempts for {CALLS} calls (bound {bound})");
    assert!(attempts > CALLS, "some retries happened: {attempts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_regions_down_gives_a_typed_error_with_a_time() {
    let regions = [MockRegion::start("seoul").await, MockRegion::start("tokyo").await];
    for r in &regions {
        r.always(Reply::Status(429, vec![("retry-after", "30".into())]));
    }
    let client = builder().regions([regions[0].region(SEOUL), regions[1].region(TOKYO)]).build().unwrap();
    // The first call tries both and returns the last 429.
    let err = client.chat_completions(request()).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.failed_attempts().len(), 2);
    // Both now cool down: the next call fails at once with the time the earliest ends.
    let err = client.chat_completions(request()).await.unwrap_err();
    let ErrorKind::NoEligibleRegion { retry_at: Some(_) } = err.kind() else { panic!("{err:?}") };
    let after = err.retry_after().unwrap();
    assert!(after > Duration::from_secs(25) && after <= Duration::from_secs(30), "{after:?}");
    assert!(err.to_string().starts_with("no region is eligible; the earliest cooldown ends in"), "{err}");
    assert_eq!(regions.iter().map(MockRegion::chat_hits).sum::<usize>(), 2);
}

/// Percentile hedging: once the client has seen enough fast calls, a call slower than their
/// p90 is hedged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percentile_hedge_fires_after_enough_history() {
    let slow = MockRegion::start("seoul").await;
    let fast = MockRegion::start("tokyo").await;
    let client = builder()
        .regions([slow.region(SEOUL), fast.region(TOKYO)])
        .failover(FailoverPolicy::default().hedge(Some(HedgePolicy::Percentile {
            percentile: 90.0,
            // Far beyond the deadline: only the learned percentile can fire the hedge.
            fallback: Duration::from_secs(600),
        })))
        .timeouts(Timeouts::default().attempt(Duration::from_secs(60)).total(Duration::from_secs(15)))
        .build()
        .unwrap();
    // Twenty-five fast calls teach the client its latency distribution.
    for _ in 0..25 {
        client.chat_completions_with(request(), &CallOptions::new().prefer_region("tokyo")).await.unwrap();
    }
    slow.always(Reply::Delay(Duration::from_secs(30), Box::new(Reply::Ok)));
    let resp = client.chat_completions_with(request(), &CallOptions::new().prefer_region("seoul")).await.unwrap();
    assert_eq!(&*resp.meta.region, "tokyo");
    assert!(resp.meta.hedged);
    assert_eq!((slow.chat_hits(), fast.chat_hits()), (1, 26));
}
