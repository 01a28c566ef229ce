//! Scenario tests: the gateway served on loopback in front of loopback mock regions.

mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sluice_client::{Client, GeoPoint, Region};
use sluice_gateway::Gateway;

/// One mock region: remembers the headers it saw and the responses it created.
#[derive(Clone, Default)]
struct Mock {
    id: &'static str,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    created: Arc<Mutex<HashSet<String>>>,
}

async fn start_mock(id: &'static str) -> (Mock, String) {
    let mock = Mock { id, ..Mock::default() };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(create_response))
        .route("/v1/responses/{id}", get(get_response))
        .route("/v1/models", get(|| async { json!({"object": "list", "data": []}).to_string() }))
        .with_state(mock.clone());
    let url = common::upstream(app).await;
    (mock, url)
}

fn upstream_headers(id: &str) -> [(&'static str, String); 5] {
    [
        ("x-request-id", format!("req_{id}_1")),
        ("openai-processing-ms", "17".to_owned()),
        ("x-ratelimit-remaining-requests", "99".to_owned()),
        ("set-cookie", "session=secret".to_owned()),
        ("content-type", "application/json".to_owned()),
    ]
}

async fn chat(State(m): State<Mock>, headers: HeaderMap) -> impl IntoResponse {
    m.seen.lock().push(headers);
    let mut h = HeaderMap::new();
    for (k, v) in upstream_headers(m.id) {
        h.insert(k, v.parse().unwrap());
    }
    let body = json!({"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": m.id}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
    (h, body.to_string())
}

async fn create_response(State(m): State<Mock>, headers: HeaderMap, body: String) -> impl IntoResponse {
    m.seen.lock().push(headers);
    let v: Value = serde_json::from_str(&body).unwrap();
    if let Some(prev) = v["previous_response_id"].as_str()
        && !m.created.lock().contains(prev)
    {
        let e = json!({"error": {"message": "not found", "type": "invalid_request_error", "code": "previous_response_not_found"}});
        return (StatusCode::NOT_FOUND, e.to_string());
    }
    let id = format!("resp_{}_{}", m.id, m.created.lock().len());
    m.created.lock().insert(id.clone());
    (
        StatusCode::OK,
        json!({"id": id, "object": "response", "output": [], "usage": {"input_tokens": 2, "output_tokens": 1}})
            .to_string(),
    )
}

async fn get_response(State(m): State<Mock>, Path(id): Path<String>) -> impl IntoResponse {
    m.seen.lock().push(HeaderMap::new());
    if m.created.lock().contains(&id) {
        (StatusCode::OK, json!({"id": id, "object": "response"}).to_string())
    } else {
        (
            StatusCode::NOT_FOUND,
            json!({"error": {"message": "no such response", "type": "invalid_request_error", "code": null}})
                .to_string(),
        )
    }
}

/// Two mock regions (Seoul, Virginia) and a gateway in front of them.
async fn setup() -> (Vec<Mock>, String) {
    let (a, url_a) = start_mock("seoul").await;
    let (b, url_b) = start_mock("virginia").await;
    let client = Client::builder()
        .region(Region::new("seoul", url_a, GeoPoint::new(37.56, 126.97)))
        .region(Region::new("virginia", url_b, GeoPoint::new(38.9, -77.0)))
        .api_key("sk-region-key")
        .active_probing(false)
        .build()
        .unwrap();
    let gateway = Gateway::builder(client).build();
    let base = common::serve(gateway).await;
    (vec![a, b], base)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

#[tokio::test]
async fn nothing_on_the_deny_side_reaches_an_upstream_or_comes_back() {
    let (mocks, base) = setup().await;
    let r = http()
        .post(format!("{base}/v1/chat/completions"))
        .header("authorization", "Bearer caller-secret")
        .header("api-key", "caller-secret")
        .header("x-api-key", "caller-secret")
        .header("cookie", "a=b")
        .header("openai-organization", "org-caller")
        .header("openai-project", "proj-caller")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("x-unlisted", "1")
        .header("openai-beta", "assistants=v2")
        .header("x-sluice-region", "seoul")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["x-sluice-region"], "seoul");
    assert_eq!(h["x-sluice-attempts"], "1");
    assert_eq!(h["x-sluice-model"], "gpt-4o-mini");
    assert!(h["x-sluice-request-id"].to_str().unwrap().starts_with("sluice-"));
    assert_eq!(h["x-request-id"], "req_seoul_1", "the upstream's request id passes unchanged");
    assert_eq!(h["openai-processing-ms"], "17");
    assert_eq!(h["x-ratelimit-remaining-requests"], "99");
    assert!(!h.contains_key("set-cookie"), "set-cookie never comes back");

    let seen = mocks[0].seen.lock().clone();
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert_eq!(upstream["authorization"], "Bearer sk-region-key", "the region's key replaces the caller's");
    for denied in [
        "api-key",
        "x-api-key",
        "cookie",
        "openai-organization",
        "openai-project",
        "x-hop",
        "x-unlisted",
        "x-sluice-region",
    ] {
        assert!(!upstream.contains_key(denied), "{denied} reached the upstream: {upstream:?}");
    }
    assert!(upstream.get_all("connection").iter().all(|v| !v.to_str().unwrap_or("").contains("x-hop")), "{upstream:?}");
    assert_eq!(upstream["openai-beta"], "assistants=v2", "allowlisted headers pass");
    assert!(mocks[1].seen.lock().is_empty());
}

#[tokio::test]
async fn stored_responses_stay_in_the_region_that_created_them() {
    let (mocks, base) = setup().await;
    let http = http();
    // Created in Virginia.
    let r = http
        .post(format!("{base}/v1/responses"))
        .header("x-sluice-region", "virginia")
        .json(&json!({"model": "gpt-4o-mini", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-region"], "virginia");
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // A follow-up that prefers Seoul still goes to Virginia, where the state lives.
    let r = http
        .post(format!("{base}/v1/responses"))
        .header("x-sluice-region", "seoul")
        .json(&json!({"model": "gpt-4o-mini", "input": "more", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-region"], "virginia");
    let follow_up = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r = http.get(format!("{base}/v1/responses/{follow_up}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-region"], "virginia");
    assert!(mocks[0].seen.lock().is_empty(), "Seoul never saw the state");

    // An id nobody knows: each region is asked once, nearest first; both say 404.
    let before: Vec<usize> = mocks.iter().map(|m| m.seen.lock().len()).collect();
    let r = http.get(format!("{base}/v1/responses/resp_unknown")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let after: Vec<usize> = mocks.iter().map(|m| m.seen.lock().len()).collect();
    assert_eq!((after[0] - before[0], after[1] - before[1]), (1, 1));

    // An id the gateway never saw (another replica made it) is found and then remembered.
    mocks[0].created.lock().insert("resp_elsewhere".to_owned());
    for _ in 0..2 {
        let r = http.get(format!("{base}/v1/responses/resp_elsewhere")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-sluice-region"], "seoul");
    }
}

#[tokio::test]
async fn idempotency_key_runs_a_call_once() {
    let (mocks, base) = setup().await;
    let http = http();
    let send = |body: Value| {
        http.post(format!("{base}/v1/chat/completions")).header("idempotency-key", "key-1").json(&body).send()
    };
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "once"}]});
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let first_text = first.text().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["x-sluice-idempotent-replay"], "true");
    assert_eq!(again.text().await.unwrap(), first_text);
    let hits: usize = mocks.iter().map(|m| m.seen.lock().len()).sum();
    assert_eq!(hits, 1, "generated once");
    let other = send(json!({"model": "gpt-4o-mini", "messages": []})).await.unwrap();
    assert_eq!(other.status(), 422);
}

/// A region that refuses: 429 with rate-limit headers for model `limited` (both Retry-After
/// forms) or `limited-long` (`retry-after: 120` only), 400 otherwise.
async fn refusing_region() -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|body: String| async move {
            let long = body.contains("\"limited-long\"");
            let limited = long || body.contains("\"limited\"");
            let status = if limited { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::BAD_REQUEST };
            let mut h = HeaderMap::new();
            h.insert("x-request-id", "req_refused_7".parse().unwrap());
            h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
            h.insert("x-ratelimit-reset-requests", "1.234s".parse().unwrap());
            h.insert("openai-processing-ms", "3".parse().unwrap());
            h.insert("set-cookie", "session=secret".parse().unwrap());
            h.insert("content-type", "text/plain".parse().unwrap());
            if long {
                h.insert("retry-after", "120".parse().unwrap());
            } else if limited {
                h.insert("retry-after-ms", "1234".parse().unwrap());
                h.insert("retry-after", "2".parse().unwrap());
            }
            let e = json!({"error": {"message": "refused", "type": "requests", "code": if limited { "rate_limit_exceeded" } else { "bad" }}});
            (status, h, e.to_string())
        }),
    );
    common::upstream(app).await
}

#[tokio::test]
async fn upstream_headers_come_back_on_error_answers() {
    let url = refusing_region().await;
    let client = Client::builder()
        .region(Region::new("seoul", url, GeoPoint::new(37.56, 126.97)))
        .active_probing(false)
        .build()
        .unwrap();
    let base = common::serve(Gateway::builder(client).build()).await;
    let http = http();
    let call = |model: &str| {
        http.post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };

    // A 400: the upstream's answer, with its request id and rate-limit state.
    let r = call("gpt-4o-mini").await.unwrap();
    assert_eq!(r.status(), 400);
    let h = r.headers().clone();
    assert_eq!(h["x-request-id"], "req_refused_7");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    assert_eq!(h["x-ratelimit-reset-requests"], "1.234s");
    assert_eq!(h["openai-processing-ms"], "3");
    assert_eq!(h["content-type"], "application/json", "the body's type is the gateway's");
    assert!(!h.contains_key("set-cookie"));
    assert!(h["x-sluice-request-id"].to_str().unwrap().starts_with("sluice-"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "bad");

    // A 429: the same, and the exact Retry-After in both forms, as the upstream sent them.
    let r = call("limited").await.unwrap();
    assert_eq!(r.status(), 429);
    let h = r.headers();
    assert_eq!(h["x-request-id"], "req_refused_7");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    assert_eq!(h["retry-after-ms"], "1234");
    assert_eq!(h["retry-after"], "2");
    assert_eq!(h.get_all("retry-after-ms").iter().count(), 1);
    assert_eq!(h["x-sluice-region"], "seoul");

    // Only `retry-after: 120` upstream: the caller gets exactly that, never beside a
    // `retry-after-ms` of the gateway's capped reading (60 s), which would disagree with it.
    let r = call("limited-long").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "120");
    assert!(!r.headers().contains_key("retry-after-ms"), "{:?}", r.headers());
}
