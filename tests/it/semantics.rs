//! Failure semantics: calls never panic, hang, fail closed or run twice by accident.
//!
//! Each test here reproduces a defect seen against loopback upstreams; it failed before its fix.

use std::{error::Error as _, time::Duration};

use sluice_client::{AttemptFailure, CallOptions, ErrorKind, FailoverPolicy, HedgePolicy, ProbeConfig, Timeouts};
use sluice_health::HealthEventKind;
use sluice_integration::{MockRegion, Reply};
use sluice_region_model::HealthState;

use crate::{SEOUL, TOKYO, builder, request};

fn prefer(id: &str) -> CallOptions {
    CallOptions::new().prefer_region(id)
}

/// The whole cause chain of an error, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Defect 1: `retry-after-ms: 99999999999999999999999` panicked the call. Now the region cools
/// down (capped) and the call fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_fails_over_instead_of_panicking() {
    let limited = MockRegion::start("seoul").await;
    limited.always(Reply::Status(429, vec![("retry-after-ms", "99999999999999999999999".into())]));
    let good = MockRegion::start("tokyo").await;
    let client = builder().regions([limited.region(SEOUL), good.region(TOKYO)]).build().unwrap();
    let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
    assert_eq!(&*resp.meta.region, "tokyo");
    let AttemptFailure::Status { status: 429, retry_after: Some(after) } = resp.meta.failed_attempts[0].failure else {
        panic!("{:?}", resp.meta.failed_attempts)
    };
    assert_eq!(after, sluice_client::DEFAULT_RETRY_AFTER_CAP);
    assert_eq!((limited.chat_hits(), good.chat_hits()), (1, 1));
    assert!(client.snapshot().nodes().iter().all(|n| n.metrics().in_flight() == 0));
}

/// Defect 2: one region whose `/models` answers 500 while chat works. Panic mode offers it;
/// rescue must not drop the attempt for a health verdict that predates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_never_fails_closed_in_panic_mode() {
    let region = MockRegion::start("seoul").await;
    region.models_always(Reply::Status(500, vec![]));
    let client = builder()
        .region(region.region(SEOUL))
        .active_probing(true)
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
        .build()
        .unwrap();
    let mut events = client.health().subscribe();
    let node = client.snapshot().nodes()[0].id();
    if client.snapshot().nodes()[0].metrics().health() != HealthState::Unhealthy {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let e = events.recv().await.unwrap();
                if e.node == node && matches!(e.kind, HealthEventKind::BecameUnhealthy { .. }) {
                    return;
                }
            }
        })
        .await
        .expect("the prober marks the region down");
    }
    let resp = client.chat_completions(request()).await.unwrap();
    assert_eq!(&*resp.meta.region, "seoul");
    assert_eq!(resp.meta.rescues, 0);
    assert_eq!(region.chat_hits(), 1);
}

/// Defect 3: a non-streaming answer slower than the attempt timeout was generated again
/// elsewhere. By default a delivered call is not re-sent after a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_non_streaming_answer_is_not_generated_twice() {
    let slow = MockRegion::start("seoul").await;
    slow.always(Reply::Delay(Duration::from_secs(3), Box::new(Reply::Ok)));
    let other = MockRegion::start("tokyo").await;
    other.always(Reply::Delay(Duration::from_secs(3), Box::new(Reply::Ok)));
    let client = builder()
        .regions([slow.region(SEOUL), other.region(TOKYO)])
        .timeouts(Timeouts::default().attempt(Duration::from_millis(500)).total(Duration::from_secs(60)))
        .build()
        .unwrap();
    let err = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Timeout { region } if &**region == "seoul"), "{err:?}");
    assert_eq!((slow.chat_hits(), other.chat_hits()), (1, 0));
}

/// Retry on timeout is an opt-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_timeout_is_opt_in() {
    let hang = MockRegion::start("seoul").await;
    hang.always(Reply::Hang);
    let good = MockRegion::start("tokyo").await;
    let client = builder()
        .regions([hang.region(SEOUL), good.region(TOKYO)])
        .timeouts(Timeouts::default().attempt(Duration::from_millis(500)).total(Duration::from_secs(60)))
        .failover(FailoverPolicy::default().retry_on_timeout(true))
        .build()
        .unwrap();
    let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
    assert_eq!(&*resp.meta.region, "tokyo");
    assert_eq!(resp.meta.failed_attempts[0].failure, AttemptFailure::Timeout);
    assert_eq!((hang.chat_hits(), good.chat_hits()), (1, 1));
}

/// Defect 7: a 400 from the hedge ended the call while the primary was about to succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_status_from_a_hedge_ends_only_the_hedge() {
    let primary = MockRegion::start("seoul").await;
    primary.always(Reply::Delay(Duration::from_millis(1500), Box::new(Reply::Ok)));
    let hedge = MockRegion::start("tokyo").await;
    hedge.always(Reply::Status(404, vec![]));
    let client = builder()
        .regions([primary.region(SEOUL), hedge.region(TOKYO)])
        .failover(FailoverPolicy::default().hedge(Some(HedgePolicy::Fixed(Duration::from_millis(100)))))
        .build()
        .unwrap();
    let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
    assert_eq!(&*resp.meta.region, "seoul");
    assert!(resp.meta.hedged);
    assert_eq!(resp.meta.failed_attempts[0].failure, AttemptFailure::Status { status: 404, retry_after: None });
    assert_eq!((primary.chat_hits(), hedge.chat_hits()), (1, 1));
}

/// When every attempt ends, a fatal status from a hedge is what the caller gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_status_is_returned_once_nothing_else_runs() {
    let primary = MockRegion::start("seoul").await;
    primary.always(Reply::Delay(Duration::from_millis(600), Box::new(Reply::Status(500, vec![]))));
    let hedge = MockRegion::start("tokyo").await;
    hedge.always(Reply::Status(422, vec![]));
    let client = builder()
        .regions([primary.region(SEOUL), hedge.region(TOKYO)])
        .failover(FailoverPolicy::default().hedge(Some(HedgePolicy::Fixed(Duration::from_millis(100)))))
        .build()
        .unwrap();
    let err = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap_err();
    assert_eq!(err.status(), Some(422), "{err:?}");
    assert_eq!((primary.chat_hits(), hedge.chat_hits()), (1, 1));
}

/// Defect 8: a 200 whose body does not parse was retried, generating the answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_that_does_not_parse_is_a_decode_error_not_a_retry() {
    let odd = MockRegion::start("seoul").await;
    odd.always(Reply::Raw { status: 200, content_type: "application/json", body: "{\"choices\": 7".into() });
    let good = MockRegion::start("tokyo").await;
    let client = builder().regions([odd.region(SEOUL), good.region(TOKYO)]).build().unwrap();
    let err = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Decode { region } if &**region == "seoul"), "{err:?}");
    assert!(err.source().is_some(), "the parse error is kept");
    assert!(!err.is_retryable());
    assert_eq!((odd.chat_hits(), good.chat_hits()), (1, 0));
}

/// A plain answer whose body breaks after its 200 head was generated already: re-sending it
/// elsewhere would generate (and bill) it twice, so the call fails explicitly instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_answer_cut_after_its_head_is_not_generated_twice() {
    let cut = MockRegion::start("seoul").await;
    cut.always(Reply::BodyCut);
    let good = MockRegion::start("tokyo").await;
    let client = builder().regions([cut.region(SEOUL), good.region(TOKYO)]).build().unwrap();
    let err = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::StreamInterrupted { region } if &**region == "seoul"), "{err:?}");
    assert!(err.source().is_some(), "the transport error is kept");
    assert_eq!((cut.chat_hits(), good.chat_hits()), (1, 0));
    // Charged to the region.
    assert_eq!(client.snapshot().nodes()[0].metrics().failures(), 1);
}

/// Defect 11: a 429 followed by a hang was reported as a bare deadline error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_error_keeps_the_last_upstream_error() {
    let limited = MockRegion::start("seoul").await;
    limited.always(Reply::Status(429, vec![]));
    let hang = MockRegion::start("tokyo").await;
    hang.always(Reply::Hang);
    let client = builder().regions([limited.region(SEOUL), hang.region(TOKYO)]).build().unwrap();
    let options = prefer("seoul").timeout(Duration::from_millis(800));
    let err = client.chat_completions_with(request(), &options).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::DeadlineExceeded);
    let text = chain(&err);
    assert!(text.contains("region `seoul` answered http 429"), "{text}");
    assert_eq!((limited.chat_hits(), hang.chat_hits()), (1, 1));
}

/// Defect 9: every region answered 503 with Retry-After, then healed; calls during the
/// cooldown failed at once instead of waiting for it to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_the_earliest_cooldown_within_max_wait() {
    let regions = [MockRegion::start("seoul").await, MockRegion::start("tokyo").await];
    for r in &regions {
        r.script([Reply::Status(503, vec![("retry-after", "1".into())])]);
    }
    let client = builder().regions([regions[0].region(SEOUL), regions[1].region(TOKYO)]).build().unwrap();
    let err = client.chat_completions(request()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    // Both cool down for a second; the next call waits for that instead of failing.
    let resp = client.chat_completions(request()).await.unwrap();
    assert_eq!(resp.meta.attempts, 1);
    assert_eq!(regions.iter().map(MockRegion::chat_hits).sum::<usize>(), 3);
    // With no wait allowed, the same situation fails at once, naming the wait.
    let client = builder()
        .regions([regions[0].region(SEOUL), regions[1].region(TOKYO)])
        .failover(FailoverPolicy::default().max_wait(Duration::ZERO))
        .build()
        .unwrap();
    for r in &regions {
        r.script([Reply::Status(503, vec![("retry-after", "1".into())])]);
    }
    assert_eq!(client.chat_completions(request()).await.unwrap_err().status(), Some(503));
    let err = client.chat_completions(request()).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::NoEligibleRegion { retry_at: Some(_) }), "{err:?}");
}

/// Defect 10: a region that revoked our key kept getting every call (and an error log each).
/// Now it is left out for that key for a while; health is not blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_refuses_the_key_is_left_out_for_a_while() {
    let revoked = MockRegion::start("seoul").await;
    revoked.always(Reply::Status(401, vec![]));
    let good = MockRegion::start("tokyo").await;
    let client =
        builder().regions([revoked.region(SEOUL), good.region(TOKYO).with_api_key("sk-tokyo-key")]).build().unwrap();
    for _ in 0..5 {
        let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
        assert_eq!(&*resp.meta.region, "tokyo");
    }
    assert_eq!((revoked.chat_hits(), good.chat_hits()), (1, 5));
    assert_eq!(client.snapshot().nodes()[0].metrics().failures(), 0, "a key problem is not a health problem");

    // Alone, the region's refusal is the answer, without asking it again.
    let alone = builder().region(revoked.region(SEOUL)).build().unwrap();
    for _ in 0..3 {
        let err = alone.chat_completions(request()).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Credentials { region: "seoul".into(), status: 401 });
    }
    assert_eq!(revoked.chat_hits(), 2);
}
