use bytes::Bytes;
use sluice_balancer::GeoNearest;
use sluice_client::{CallOptions, ErrorKind, RawRequest};
use sluice_integration::{MockRegion, Reply};
use sluice_region_model::GeoPoint;

use crate::{SEOUL, SINGAPORE, TOKYO, builder, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preferred_region_is_used_while_healthy_and_skipped_after_it_fails() {
    let a = MockRegion::start("seoul").await;
    let b = MockRegion::start("tokyo").await;
    let client = builder().regions([a.region(SEOUL), b.region(TOKYO)]).build().unwrap();
    let prefer_b = CallOptions::new().prefer_region("tokyo");
    for _ in 0..5 {
        let resp = client.chat_completions_with(request(), &prefer_b).await.unwrap();
        assert_eq!(&*resp.meta.region, "tokyo");
        assert!(!resp.meta.failed_over);
    }
    assert_eq!((a.chat_hits(), b.chat_hits()), (0, 5));
    // Tokyo breaks: calls fail over, and once it is ejected it is not even tried.
    b.always(Reply::Status(502, vec![]));
    for _ in 0..10 {
        let resp = client.chat_completions_with(request(), &prefer_b).await.unwrap();
        assert_eq!(&*resp.meta.region, "seoul");
    }
    assert_eq!(b.chat_hits(), 5 + 5, "ejected after five consecutive failures");
    assert_eq!(a.chat_hits(), 10);
    // An unknown preference is a clear error listing the known regions.
    let err = client.chat_completions_with(request(), &CallOptions::new().prefer_region("mars")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::UnknownRegion { region: "mars".into(), known: "seoul, tokyo".into() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_nearest_from_seoul_picks_seoul() {
    let regions =
        [MockRegion::start("singapore").await, MockRegion::start("tokyo").await, MockRegion::start("seoul").await];
    let client = builder()
        .regions([regions[0].region(SINGAPORE), regions[1].region(TOKYO), regions[2].region(SEOUL)])
        .strategy(Box::new(GeoNearest::new()))
        .build()
        .unwrap();
    let resp =
        client.chat_completions_with(request(), &CallOptions::new().caller(GeoPoint::new(37.5, 127.0))).await.unwrap();
    assert_eq!(&*resp.meta.region, "seoul");
    // From Singapore, Singapore.
    let resp =
        client.chat_completions_with(request(), &CallOptions::new().caller(GeoPoint::new(1.3, 103.8))).await.unwrap();
    assert_eq!(&*resp.meta.region, "singapore");
    assert_eq!(regions.iter().map(MockRegion::chat_hits).collect::<Vec<_>>(), [1, 0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_calls_pass_bytes_through_unchanged() {
    let a = MockRegion::start("seoul").await;
    let client = builder().region(a.region(SEOUL)).build().unwrap();
    let body = Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"x_vendor":1}"#);
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", "Bearer caller-key-must-not-leak".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    let resp = client
        .raw(
            RawRequest { method: http::Method::POST, path: "/chat/completions".into(), headers, body: body.clone() },
            &CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(&*resp.meta.region, "seoul");
    let bytes = resp.body.collect().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["system_fingerprint"], "fp-mock");
    assert_eq!(a.state.bodies.lock()[0], body, "request bytes unchanged");
    assert_eq!(a.state.auth.lock()[0], "Bearer sk-test-secret-key", "the region's key replaces the caller's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_unknown_fields() {
    let a = MockRegion::start("seoul").await;
    let client = builder().region(a.region(SEOUL)).build().unwrap();
    let models = client.models().await.unwrap();
    assert_eq!(models.body.data[0].id, "mock-1");
    assert_eq!(a.model_hits(), 1);
    let mut req = request();
    req.extra.insert("response_format".into(), serde_json::json!({"type": "json_object"}));
    let resp = client.chat_completions(req).await.unwrap();
    assert_eq!(resp.body.extra["system_fingerprint"], "fp-mock");
    let sent: serde_json::Value = serde_json::from_slice(&a.state.bodies.lock()[0]).unwrap();
    assert_eq!(sent["response_format"]["type"], "json_object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_shows_in_debug_or_errors() {
    let a = MockRegion::start("seoul").await;
    a.always(Reply::Status(500, vec![]));
    let client = builder().region(a.region(SEOUL).with_api_key("sk-region-secret")).build().unwrap();
    let err = client.chat_completions(request()).await.unwrap_err();
    let shown = format!("{client:?} {err} {err:?} {:?}", client.snapshot());
    for secret in ["sk-region-secret", "sk-test-secret-key"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}
