use std::time::Duration;

use async_openai::{
    Client,
    config::OpenAIConfig,
    types::chat::{ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs},
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{FAST_PROBES, Serve, chat_body, eventually, http, mocks, temp_dir, write_config};

fn openai(serve: &Serve) -> Client<OpenAIConfig> {
    Client::with_config(OpenAIConfig::new().with_api_base(serve.base()).with_api_key("caller-key"))
}

fn request(stream: bool) -> async_openai::types::chat::CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("gpt-4o-mini")
        .messages([ChatCompletionRequestUserMessageArgs::default().content("Hello there").build().unwrap().into()])
        .stream(stream)
        .build()
        .unwrap()
}

async fn stream_text(client: &Client<OpenAIConfig>) -> String {
    let mut stream = client.chat().create_stream(request(true)).await.expect("stream starts");
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        let chunk = item.expect("chunk");
        for choice in chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
        }
    }
    text
}

#[tokio::test]
async fn async_openai_calls_through_the_proxy() {
    let regions = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    let dir = temp_dir("serve-openai");
    let config = write_config(&dir, &[&regions[0], &regions[1]], FAST_PROBES);
    let serve = Serve::start(&config, &[], &[("SLUICE_TEST_UNUSED", "1")]).await;
    let client = openai(&serve);

    let response = client.chat().create(request(false)).await.expect("plain call");
    let text = response.choices[0].message.content.clone().unwrap_or_default();
    assert!(text.starts_with("Hello from ") && text.ends_with("You said: Hello there"), "{text}");

    let text = stream_text(&client).await;
    assert!(text.starts_with("Hello from ") && text.ends_with("You said: Hello there"), "{text}");

    let models = client.models().list().await.expect("models");
    assert!(models.data.iter().any(|m| m.id == "gpt-4o-mini"));

    // The preferred region, through a header that async-openai can send.
    let tokyo = Client::with_config(
        OpenAIConfig::new().with_api_base(serve.base()).with_header("x-sluice-region", "ap-northeast-1").unwrap(),
    );
    let response = tokyo.chat().create(request(false)).await.expect("plain call");
    assert!(response.choices[0].message.content.as_deref().unwrap_or("").contains("Tokyo"));
    assert!(stream_text(&tokyo).await.contains("Tokyo"));

    // The caller's key never reaches the region (no key is configured upstream).
    assert_eq!(regions[0].last_authorization(), None);
}

#[tokio::test]
async fn headers_errors_and_passthrough() {
    let regions = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    let dir = temp_dir("serve-headers");
    let config = write_config(&dir, &[&regions[0], &regions[1]], "");
    // A top-level key goes before the first table.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("api_key_env = \"SLUICE_E2E_UPSTREAM\"\n{text}")).unwrap();
    let serve = Serve::start(&config, &[], &[("SLUICE_E2E_UPSTREAM", "upstream-secret")]).await;
    let http = http();
    let url = serve.url("/v1/chat/completions");

    // Headers name the region and the attempts; a preferred region is honoured.
    let r = http.post(&url).header("x-sluice-region", "ap-northeast-1").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-region"], "ap-northeast-1");
    assert_eq!(r.headers()["x-sluice-attempts"], "1");
    assert_eq!(regions[1].last_authorization().as_deref(), Some("Bearer upstream-secret"));

    // A location picks nothing wrong and is accepted.
    let r = http.post(&url).header("x-sluice-location", "37.5,127.0").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-sluice-region"));

    // Unknown JSON fields pass through byte for byte.
    let raw = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi","x_custom":{"a":[1,2]}}],"vendor_extension":{"keep":true},"temperature":0.25}"#;
    let r = http.post(&url).header("content-type", "application/json").body(raw).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let served = r.headers()["x-sluice-region"].to_str().unwrap().to_owned();
    let mock = regions.iter().find(|m| m.id() == served).unwrap();
    assert_eq!(mock.last_body().unwrap(), raw.as_bytes());

    // Bad input: 400 in OpenAI's shape, never forwarded.
    let hits: u64 = regions.iter().map(|m| m.chat_hits()).sum();
    let check_400 = |body: Value, code: &str| {
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    let r = http.post(&url).header("content-type", "application/json").body("{\"model\": ").send().await.unwrap();
    assert_eq!(r.status(), 400);
    check_400(r.json().await.unwrap(), "invalid_json");
    let r = http.post(&url).header("x-sluice-location", "north pole").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    check_400(r.json().await.unwrap(), "invalid_location");
    let r = http.post(&url).header("x-sluice-location", "91,0").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.post(&url).header("x-sluice-region", "mars-1").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("ap-northeast-2, ap-northeast-1"), "{body}");
    assert_eq!(regions.iter().map(|m| m.chat_hits()).sum::<u64>(), hits, "bad requests were forwarded");

    // An upstream client error comes back unchanged, with its status, and is not retried
    // elsewhere: another region would refuse it the same way.
    let hits: u64 = regions.iter().map(|m| m.chat_hits()).sum();
    // (A model the regions list: an unlisted one would be refused by Sluice itself with a 404
    // once the first probe round has read the lists.)
    let r = http.post(&url).json(&json!({"model": "gpt-4o-mini", "messages": "not a list"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-sluice-attempts"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["message"], "'messages' must be an array", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(regions.iter().map(|m| m.chat_hits()).sum::<u64>(), hits + 1, "one upstream attempt");
    // Other methods and paths under /v1 pass through to a region (OpenAI lists stored chat
    // completions at GET /v1/chat/completions); the mock has no such route.
    let r = http.get(&url).send().await.unwrap();
    assert!(r.headers().contains_key("x-sluice-attempts"), "{:?}", r.headers());
    assert!(r.headers().contains_key("x-sluice-request-id"), "{:?}", r.headers());
    let r = http.get(serve.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());

    // Models.
    let r = http.get(serve.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-sluice-region"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");

    // The key never shows in the logs.
    assert!(!serve.stderr().contains("upstream-secret"));
}

#[tokio::test]
async fn fails_over_when_a_region_is_killed_mid_test() {
    let regions = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    regions[1].set_latency(Duration::from_millis(15));
    let dir = temp_dir("serve-failover");
    let config = write_config(&dir, &[&regions[0], &regions[1]], FAST_PROBES);
    let serve = Serve::start(&config, &[], &[]).await;
    let client = openai(&serve);
    let http = http();
    let url = serve.url("/v1/chat/completions");

    // Seoul serves while it is up.
    let r = http.post(&url).header("x-sluice-region", "ap-northeast-2").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.headers()["x-sluice-region"], "ap-northeast-2");

    regions[0].set_down(true);
    // Every call still succeeds, now from Tokyo, through async-openai and plain HTTP alike.
    for _ in 0..5 {
        let response = client.chat().create(request(false)).await.expect("call after the kill");
        assert!(response.choices[0].message.content.as_deref().unwrap_or("").contains("Tokyo"));
        assert!(stream_text(&client).await.contains("Tokyo"));
    }
    let r = http.post(&url).header("x-sluice-region", "ap-northeast-2").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-region"], "ap-northeast-1");

    // Health notices; /healthz and /metrics say so.
    let metrics = eventually("seoul marked out in /metrics", || {
        let http = http.clone();
        let url = serve.url("/metrics");
        async move {
            let text = http.get(url).send().await.ok()?.text().await.ok()?;
            text.contains("sluice_region_eligible{region=\"ap-northeast-2\"} 0").then_some(text)
        }
    })
    .await;
    for needle in [
        "sluice_requests_total{region=\"ap-northeast-1\"}",
        "sluice_errors_total{region=\"ap-northeast-2\"}",
        "sluice_request_duration_seconds_bucket{region=\"ap-northeast-1\",le=",
        // Every duration is a histogram (buckets), none a summary (quantiles).
        "sluice_attempt_duration_seconds_bucket{region=\"ap-northeast-1\",",
        "sluice_region_health_state{region=\"ap-northeast-2\"}",
        "sluice_region_ejections_total{region=\"ap-northeast-2\"}",
        "sluice_region_eligible{region=\"ap-northeast-1\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    assert!(!metrics.contains("quantile="), "a duration exported as a summary:\n{metrics}");
    let r = http.get(serve.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let seoul = body["regions"]["ap-northeast-2"].as_str().unwrap_or("");
    assert!(seoul.starts_with("unhealthy") || seoul.starts_with("ejected"), "{body}");

    // Both down: 503 with Retry-After, in OpenAI's shape.
    regions[1].set_down(true);
    let r = eventually("503 once everything is down", || {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http.post(url).json(&chat_body(false)).send().await.ok()?;
            (r.status() == 503).then_some(r)
        }
    })
    .await;
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_eligible_region", "{body}");
}

#[tokio::test]
async fn rate_limit_cools_down_then_503_with_retry_after() {
    let regions = mocks(&[("ap-northeast-2", "Seoul")]).await;
    regions[0].set_rate_limited(Some(Duration::from_secs(30)));
    let dir = temp_dir("serve-429");
    let config = write_config(&dir, &[&regions[0]], "");
    let serve = Serve::start(&config, &[], &[]).await;
    let http = http();
    let url = serve.url("/v1/chat/completions");
    let r = http.post(&url).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    let r = http.post(&url).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&after), "{after}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_eligible_region");
}

#[tokio::test]
async fn cut_stream_ends_with_an_error_event() {
    let regions = mocks(&[("ap-northeast-2", "Seoul")]).await;
    regions[0].set_stream(6, Duration::from_millis(5));
    regions[0].set_cut_after(Some(3));
    let dir = temp_dir("serve-cut");
    let config = write_config(&dir, &[&regions[0]], "");
    let serve = Serve::start(&config, &[], &[]).await;
    let r = http().post(serve.url("/v1/chat/completions")).json(&chat_body(true)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let mut broke = false;
    while let Some(item) = body.next().await {
        match item {
            Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(text.contains("\"code\":\"stream_interrupted\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(broke, "the connection should be aborted after the error event");
}

#[tokio::test]
async fn inbound_auth_is_required_when_configured() {
    let regions = mocks(&[("ap-northeast-2", "Seoul")]).await;
    let dir = temp_dir("serve-auth");
    let config = write_config(&dir, &[&regions[0]], "");
    let serve =
        Serve::start(&config, &["--require-key-env", "SLUICE_E2E_INBOUND"], &[("SLUICE_E2E_INBOUND", "let-me-in")])
            .await;
    let http = http();
    let url = serve.url("/v1/chat/completions");
    let r = http.post(&url).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
    let r = http.post(&url).bearer_auth("wrong").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.post(&url).bearer_auth("let-me-in").json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The inbound key is not sent upstream.
    assert_eq!(regions[0].last_authorization(), None);
    // async-openai with the right key works.
    let client = Client::with_config(OpenAIConfig::new().with_api_base(serve.base()).with_api_key("let-me-in"));
    client.chat().create(request(false)).await.expect("authorized call");
    assert_eq!(regions[0].chat_hits(), 2);
}

#[tokio::test]
async fn drains_in_flight_streams_on_sigterm() {
    let regions = mocks(&[("ap-northeast-2", "Seoul")]).await;
    // About 1.2 s of streaming.
    regions[0].set_stream(8, Duration::from_millis(150));
    let dir = temp_dir("serve-drain");
    let config = write_config(&dir, &[&regions[0]], "");
    let mut serve = Serve::start(&config, &[], &[]).await;
    let http = http();
    let r = http.post(serve.url("/v1/chat/completions")).json(&chat_body(true)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("ok chunk");
    let mut text = String::from_utf8_lossy(&first).into_owned();

    serve.terminate().await;
    // New calls are refused while the stream finishes.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(10)).build().unwrap();
    let refused = eventually("new calls refused", || {
        let fresh = fresh.clone();
        let url = serve.url("/v1/chat/completions");
        async move {
            match fresh.post(url).json(&chat_body(false)).send().await {
                Err(_) => Some("connection refused".to_owned()),
                Ok(r) if r.status() == 503 => Some("503".to_owned()),
                Ok(_) => None,
            }
        }
    })
    .await;
    // Once refusing, it keeps refusing, and no new call reaches the region: only the
    // in-flight stream is still served.
    let hits = regions[0].chat_hits();
    for _ in 0..3 {
        match fresh.post(serve.url("/v1/chat/completions")).json(&chat_body(false)).send().await {
            Err(_) => {}
            Ok(r) => assert_eq!(r.status(), 503, "after a {refused} refusal, a new call was served"),
        }
    }
    assert_eq!(regions[0].chat_hits(), hits, "a call reached the region while draining");

    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the in-flight stream finishes")));
    }
    assert!(text.contains("data: [DONE]"), "{text}");
    let status = tokio::time::timeout(crate::support::PATIENCE, serve.child.wait()).await.expect("exit").unwrap();
    assert!(status.success(), "{status:?}: {}", serve.stderr());
    assert!(serve.stderr().contains("drained"), "{}", serve.stderr());
}

#[tokio::test]
async fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let regions = mocks(&[("ap-northeast-2", "Seoul")]).await;
    let dir = temp_dir("serve-port");
    let config = write_config(&dir, &[&regions[0]], "");
    let listen = format!("127.0.0.1:{port}");
    let out = crate::support::run(&["serve", "--config", config.to_str().unwrap(), "--listen", &listen], &[]).await;
    let (_, stderr) = crate::support::texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already in use") && stderr.contains(&listen), "{stderr}");
    drop(taken);
}
