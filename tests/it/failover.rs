use std::time::Duration;

use sluice_client::{AttemptFailure, CallOptions, ErrorKind, Timeouts};
use sluice_integration::{MockRegion, Reply, closed_port};
use sluice_region_model::Region;

use crate::{SEOUL, TOKYO, builder, request};

fn prefer(id: &str) -> CallOptions {
    CallOptions::new().prefer_region(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_fails_over() {
    let dead = closed_port().await;
    let good = MockRegion::start("tokyo").await;
    let client = builder()
        .region(Region::new("seoul", format!("http://{dead}/v1"), SEOUL))
        .region(good.region(TOKYO))
        .build()
        .unwrap();
    let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
    assert_eq!(&*resp.meta.region, "tokyo");
    assert_eq!(resp.meta.attempts, 2);
    assert!(resp.meta.failed_over);
    assert_eq!(resp.meta.failed_attempts[0].failure, AttemptFailure::Connect);
    assert_eq!(&*resp.meta.failed_attempts[0].region, "seoul");
    assert_eq!(resp.body.text(), Some("hello from tokyo"));
    assert_eq!(good.chat_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_never_answers_cannot_outlive_the_deadline() {
    let hang = MockRegion::start("seoul").await;
    hang.always(Reply::Hang);
    let client = builder()
        .region(hang.region(SEOUL))
        .timeouts(Timeouts::default().attempt(Duration::from_secs(60)).total(Duration::from_secs(60)))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = client
        .chat_completions_with(request(), &CallOptions::new().timeout(Duration::from_millis(800)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::DeadlineExceeded);
    assert!(err.is_timeout());
    // The attempt timeout is a minute: only the deadline can have ended the call.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(hang.chat_hits(), 1);
    // The in-flight count was released when the attempt was cancelled.
    assert_eq!(client.snapshot().nodes()[0].metrics().in_flight(), 0);
}

// A hanging region and the attempt timeout: see `semantics::retry_on_timeout_is_opt_in`.

/// 429 in each Retry-After form: the call moves on at once, and the region cools down for
/// the time given, so the next call does not touch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_in_every_retry_after_form_cool_the_region_down() {
    let date = httpdate_in(Duration::from_secs(40));
    let forms: [(&str, String, u64); 4] = [
        ("retry-after", "30".into(), 30),
        ("retry-after", date, 40),
        ("retry-after-ms", "20000".into(), 20),
        ("x-ms-retry-after-ms", "25000".into(), 25),
    ];
    for (header, value, secs) in forms {
        let limited = MockRegion::start("seoul").await;
        limited.always(Reply::Status(429, vec![(header, value.clone())]));
        let good = MockRegion::start("tokyo").await;
        let client = builder().regions([limited.region(SEOUL), good.region(TOKYO)]).build().unwrap();
        let started = std::time::Instant::now();
        let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
        assert_eq!(&*resp.meta.region, "tokyo", "{header}: {value}");
        match &resp.meta.failed_attempts[0].failure {
            AttemptFailure::Status { status: 429, retry_after: Some(after) } => {
                assert!(after.as_secs() + 2 >= secs && after.as_secs() <= secs + 1, "{header}: {after:?}");
            }
            other => panic!("{header}: {other:?}"),
        }
        // The call did not sleep on the Retry-After.
        assert!(started.elapsed() < Duration::from_secs(15));
        let status = client.health().status(client.snapshot().find("seoul").unwrap(), now()).unwrap();
        let until = status.cooldown_until.expect("cooldown set");
        let left = until.saturating_duration_since(now());
        assert!(left > Duration::from_secs(secs - 3) && left <= Duration::from_secs(secs + 1), "{header}: {left:?}");
        // While it cools down, even the preferred region is skipped.
        let again = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
        assert_eq!(&*again.meta.region, "tokyo");
        assert_eq!(again.meta.attempts, 1);
        assert_eq!((limited.chat_hits(), good.chat_hits()), (1, 2), "{header}");
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn httpdate_in(d: Duration) -> String {
    // Seconds resolution: add one second so that rounding down still leaves `d`.
    let at = std::time::SystemTime::now() + d + Duration::from_millis(999);
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    fmt_http_date(secs)
}

/// Formats Unix seconds as an IMF-fixdate, without pulling a date crate into the fixtures.
fn fmt_http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs / 86_400;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{}, {d:02} {} {year} {h:02}:{m:02}:{s:02} GMT", DAYS[(days % 7) as usize], MONTHS[(month - 1) as usize])
}

#[test]
fn http_date_formatting() {
    assert_eq!(fmt_http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(fmt_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_fails_over() {
    let down = MockRegion::start("seoul").await;
    down.always(Reply::Status(503, vec![]));
    let good = MockRegion::start("tokyo").await;
    let client = builder().regions([down.region(SEOUL), good.region(TOKYO)]).build().unwrap();
    let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
    assert_eq!(&*resp.meta.region, "tokyo");
    assert_eq!(resp.meta.failed_attempts[0].failure, AttemptFailure::Status { status: 503, retry_after: None });
    assert_eq!((down.chat_hits(), good.chat_hits()), (1, 1));
}

/// Five 500s in a row eject the region; later calls stop reaching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500s_ejects_the_region() {
    let bad = MockRegion::start("seoul").await;
    bad.always(Reply::Status(500, vec![]));
    let good = MockRegion::start("tokyo").await;
    let client = builder().regions([bad.region(SEOUL), good.region(TOKYO)]).build().unwrap();
    for i in 0..12 {
        let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
        assert_eq!(&*resp.meta.region, "tokyo", "call {i}");
    }
    assert_eq!(bad.chat_hits(), 5, "ejected after the fifth consecutive failure");
    assert_eq!(good.chat_hits(), 12);
    let status = client.health().status(client.snapshot().find("seoul").unwrap(), now()).unwrap();
    assert!(status.ejected_until.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_sent_exactly_once() {
    for code in [400, 404, 413, 422] {
        let a = MockRegion::start("seoul").await;
        a.always(Reply::Status(code, vec![]));
        let b = MockRegion::start("tokyo").await;
        let client = builder().regions([a.region(SEOUL), b.region(TOKYO)]).build().unwrap();
        let err = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap_err();
        assert_eq!(err.status(), Some(code));
        assert!(!err.is_retryable());
        let ErrorKind::Status { body, region, .. } = err.kind() else { panic!("{err:?}") };
        assert_eq!(&**region, "seoul");
        assert!(String::from_utf8_lossy(body).contains(&format!("mock {code}")));
        assert_eq!((a.chat_hits(), b.chat_hits()), (1, 0), "http {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_are_returned_unless_another_key_exists() {
    // Same key everywhere: returned at once, naming the region.
    let a = MockRegion::start("seoul").await;
    a.always(Reply::Status(401, vec![]));
    let b = MockRegion::start("tokyo").await;
    let client = builder().regions([a.region(SEOUL), b.region(TOKYO)]).build().unwrap();
    let err = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Credentials { region: "seoul".into(), status: 401 });
    assert_eq!((a.chat_hits(), b.chat_hits()), (1, 0));
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("sk-test-secret-key"), "{shown}");

    // Tokyo has its own key: it is tried.
    let client = builder().regions([a.region(SEOUL), b.region(TOKYO).with_api_key("sk-tokyo-key")]).build().unwrap();
    let resp = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap();
    assert_eq!(&*resp.meta.region, "tokyo");
    assert_eq!((a.chat_hits(), b.chat_hits()), (2, 1));
    assert_eq!(b.state.auth.lock().last().unwrap(), "Bearer sk-tokyo-key");
    assert_eq!(a.state.auth.lock().last().unwrap(), "Bearer sk-test-secret-key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_stop_at_max_attempts() {
    let mut regions = Vec::new();
    for id in ["seoul", "tokyo", "singapore", "frankfurt"] {
        let r = MockRegion::start(id).await;
        r.always(Reply::Status(502, vec![]));
        regions.push(r);
    }
    let client = builder()
        .regions(regions.iter().enumerate().map(|(i, r)| r.region(sluice_region_model::GeoPoint::new(i as f64, 0.0))))
        .failover(sluice_client::FailoverPolicy::default().max_attempts(3))
        .build()
        .unwrap();
    let err = client.chat_completions(request()).await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(err.failed_attempts().len(), 3);
    assert_eq!(regions.iter().map(MockRegion::chat_hits).sum::<usize>(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_a_credentials_error_too() {
    let a = MockRegion::start("seoul").await;
    a.always(Reply::Status(403, vec![]));
    let b = MockRegion::start("tokyo").await;
    let client = builder().regions([a.region(SEOUL), b.region(TOKYO)]).build().unwrap();
    let err = client.chat_completions_with(request(), &prefer("seoul")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Credentials { region: "seoul".into(), status: 403 });
    assert_eq!((a.chat_hits(), b.chat_hits()), (1, 0));
}

/// A redirect is not followed: the key must never reach a host we were not configured with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let elsewhere = MockRegion::start("elsewhere").await;
    let a = MockRegion::start("seoul").await;
    a.always(Reply::Status(307, vec![("location", format!("{}/chat/completions", elsewhere.url()))]));
    let client = builder().region(a.region(SEOUL)).build().unwrap();
    let err = client.chat_completions(request()).await.unwrap_err();
    assert_eq!(err.status(), Some(307));
    assert_eq!((a.chat_hits(), elsewhere.chat_hits()), (1, 0));
    assert!(elsewhere.state.auth.lock().is_empty());
}
