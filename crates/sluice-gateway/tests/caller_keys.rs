//! Scenario test: a region that takes each caller's own key (`pass_caller_key`).
//! The gateway is served on loopback in front of two loopback mock regions.

mod common;

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sluice_client::{Client, GeoPoint, Provider, Region};
use sluice_gateway::Gateway;

/// The credential headers each call brought, in order.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// A region that accepts only the keys in `valid` (as `Authorization: Bearer`).
async fn region(name: &'static str, valid: &'static [&'static str]) -> (Seen, String) {
    let seen = Seen::default();
    let s = Arc::clone(&seen);
    let app = Router::new()
        .route("/v1/models", get(|| async { json!({"object": "list", "data": []}).to_string() }))
        .route(
            "/v1/chat/completions",
            post(move |headers: HeaderMap| {
                let s = Arc::clone(&s);
                async move {
                    let get = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
                    let auth = get("authorization");
                    s.lock().push((auth.clone(), get("api-key")));
                    let ok = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).is_some_and(|k| valid.contains(&k));
                    if !ok {
                        let e = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}});
                        return (StatusCode::UNAUTHORIZED, e.to_string());
                    }
                    let body = json!({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": name}, "finish_reason": "stop"}]});
                    (StatusCode::OK, body.to_string())
                }
            }),
        );
    let url = common::upstream(app).await;
    (seen, url)
}

#[tokio::test]
async fn a_caller_key_goes_only_to_its_region_and_its_refusal_excludes_nothing() {
    // `byok` (nearest) takes callers' keys and has none of its own; `pooled` has the team's key.
    let (byok, byok_url) = region("byok", &["sk-caller-good"]).await;
    let (pooled, pooled_url) = region("pooled", &["sk-pooled"]).await;
    let client = Client::builder()
        .region(Region::new("byok", byok_url, GeoPoint::new(37.56, 126.97)))
        .region(Region::new("pooled", pooled_url, GeoPoint::new(35.68, 139.69)).with_api_key("sk-pooled"))
        .provider("byok", Provider::openai().pass_caller_key())
        .active_probing(false)
        .build()
        .unwrap();
    let base = common::serve(Gateway::builder(client).build()).await;
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap();
    let call = |key: &str, region: &str| {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-sluice-region", region)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };

    // The caller's key goes to the region that takes callers' keys...
    let r = call("sk-caller-good", "byok").await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-sluice-region"].to_str().unwrap()), (200, "byok"));
    // ... and never to another one: that one gets the team's key.
    let r = call("sk-caller-good", "pooled").await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-sluice-region"].to_str().unwrap()), (200, "pooled"));

    // A refused caller key is the caller's answer: a 401 with the upstream's body, from one
    // attempt; the call is not moved to the region holding the team's key.
    let pooled_before = pooled.lock().len();
    for _ in 0..3 {
        let r = call("sk-caller-bad", "byok").await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["x-sluice-region"], "byok");
        assert_eq!(r.headers()["x-sluice-attempts"], "1");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
    }
    assert_eq!(pooled.lock().len(), pooled_before, "a refused caller key was retried with the team's key");

    // The region stays in service for everyone else.
    for _ in 0..3 {
        let r = call("sk-caller-good", "byok").await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["x-sluice-region"].to_str().unwrap()), (200, "byok"));
    }
    // A caller in Seoul with no preference is served by the nearest region, byok, too. (Without
    // a location and without probes nearness is unknown, and either region may serve.)
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .header("api-key", "sk-caller-good")
        .header("x-sluice-location", "37.56,126.97")
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-sluice-region"].to_str().unwrap()), (200, "byok"));

    let byok_auth: Vec<Option<String>> = byok.lock().iter().map(|(a, _)| a.clone()).collect();
    let expected =
        [["Bearer sk-caller-good"; 1].as_slice(), &["Bearer sk-caller-bad"; 3], &["Bearer sk-caller-good"; 4]]
            .concat()
            .into_iter()
            .map(|s| Some(s.to_owned()))
            .collect::<Vec<_>>();
    assert_eq!(byok_auth, expected);
    assert!(byok.lock().iter().all(|(_, k)| k.is_none()), "the caller's api-key header was forwarded as is");
    for (auth, api_key) in pooled.lock().iter() {
        assert_eq!(auth.as_deref(), Some("Bearer sk-pooled"), "a caller's key reached the pooled region");
        assert!(api_key.is_none());
    }
}
