//! Scenarios for providers, models per region, aliases and fallbacks, and zones, against
//! loopback servers that play OpenAI, Azure and other OpenAI-compatible regions.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sluice_client::{
    CallOptions, ChatCompletionRequest, ChatMessage, Client, ClientBuilder, ErrorKind, FailoverPolicy, GeoPoint,
    ModelRouting, ProbeConfig, Provider, RawRequest, Region,
};
use tokio::{net::TcpListener, sync::Notify};

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

/// One request a mock region received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
    raw: Bytes,
}

type Answer = Box<dyn Fn(&Seen) -> (u16, Value) + Send + Sync>;

struct MockState {
    seen: Mutex<Vec<Seen>>,
    /// The `/models` list; `None` answers 404.
    models: Option<Vec<&'static str>>,
    answer: Answer,
    model_hits: AtomicUsize,
    hit: Notify,
}

/// A loopback region.
struct Mock {
    addr: SocketAddr,
    state: Arc<MockState>,
}

impl Mock {
    async fn start(
        models: Option<Vec<&'static str>>,
        answer: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(MockState {
            seen: Mutex::new(Vec::new()),
            models,
            answer: Box::new(answer),
            model_hits: AtomicUsize::new(0),
            hit: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    /// A region that answers every call with a completion naming the model it was sent.
    async fn ok(models: Option<Vec<&'static str>>) -> Self {
        Self::start(models, |_| (200, Value::Null)).await
    }

    /// A region that answers every call with `status`.
    async fn failing(models: Option<Vec<&'static str>>, status: u16) -> Self {
        Self::start(models, move |_| (status, json!({"error": {"message": "mock", "type": "mock", "code": "mock"}})))
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Calls (not `/models` probes) received.
    fn calls(&self) -> Vec<Seen> {
        self.state.seen.lock().iter().filter(|s| !s.path.ends_with("/models")).cloned().collect()
    }

    fn probes(&self) -> Vec<Seen> {
        self.state.seen.lock().iter().filter(|s| s.path.ends_with("/models")).cloned().collect()
    }

    /// Every credential-looking header value this region ever received.
    fn credentials(&self) -> Vec<String> {
        let seen = self.state.seen.lock();
        seen.iter()
            .flat_map(|s| {
                ["authorization", "api-key", "x-api-key"]
                    .into_iter()
                    .filter_map(|h| s.headers.get(h).map(|v| v.to_str().unwrap().to_owned()))
            })
            .collect()
    }

    /// Waits until `/models` has been answered `n` times.
    async fn wait_model_hits(&self, n: usize) {
        tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.state.hit.notified();
                if self.state.model_hits.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("the probe never came");
    }
}

async fn handle(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body,
    };
    state.seen.lock().push(seen.clone());
    let response = if seen.path.ends_with("/models") {
        match &state.models {
            Some(list) => {
                let data: Vec<Value> = list.iter().map(|m| json!({"id": m, "object": "model"})).collect();
                (StatusCode::OK, axum::Json(json!({"object": "list", "data": data}))).into_response()
            }
            None => {
                (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"message": "no models here"}}))).into_response()
            }
        }
    } else {
        let (status, value) = (state.answer)(&seen);
        let value = if value.is_null() {
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": seen.body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]
            })
        } else {
            value
        };
        (StatusCode::from_u16(status).unwrap(), axum::Json(value)).into_response()
    };
    if seen.path.ends_with("/models") {
        state.model_hits.fetch_add(1, Ordering::SeqCst);
    }
    state.hit.notify_waiters();
    response
}

fn region(id: &str, url: String) -> Region {
    Region::new(id, url, GeoPoint::new(50.0, 8.0))
}

/// A client without active probing (model lists stay as configured), seeded.
fn quiet() -> ClientBuilder {
    Client::builder().active_probing(false).seed(7)
}

/// A client whose probes run every 50 ms from the start.
fn probing() -> ClientBuilder {
    let probe = ProbeConfig::builder()
        .interval(Duration::from_millis(50))
        .jitter(Duration::ZERO)
        .initial_jitter(Duration::ZERO)
        .timeout(Duration::from_secs(5))
        .seed(1)
        .build()
        .unwrap();
    Client::builder().probe_config(probe).seed(7)
}

fn chat(model: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new(model, vec![ChatMessage::user("hello")])
}

// ===== providers =====

#[tokio::test]
async fn azure_classic_region_gets_api_key_api_version_and_deployment_path() {
    let azure = Mock::start(Some(vec!["gpt-4o-mini", "gpt-4o"]), |s| {
        if s.path == "/openai/deployments/mini-eu/chat/completions" {
            (200, Value::Null)
        } else {
            (404, json!({"error": {"code": "DeploymentNotFound", "message": s.path}}))
        }
    })
    .await;
    let client = probing()
        .region(region("azure-eu", azure.url("/openai")).with_api_key("az-key-1"))
        .provider("azure-eu", Provider::azure().api_version("2024-10-21").deployment("gpt-4o-mini", "mini-eu"))
        .build()
        .unwrap();
    azure.wait_model_hits(1).await;

    let response = client.chat_completions(chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(response.meta.region.as_ref(), "azure-eu");
    assert_eq!(response.meta.model.as_deref(), Some("gpt-4o-mini"));
    let calls = azure.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.path, "/openai/deployments/mini-eu/chat/completions");
    assert_eq!(call.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(call.headers["api-key"], "az-key-1");
    assert!(call.headers.get("authorization").is_none(), "azure gets no bearer header");

    // The probe used the same provider: api-key and api-version on the models list.
    let probe = &azure.probes()[0];
    assert_eq!(probe.path, "/openai/models");
    assert_eq!(probe.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(probe.headers["api-key"], "az-key-1");

    // The deployment table is the region's exact model list: gpt-4o is listed by /models
    // but has no deployment, so it is not sent.
    let error = client.chat_completions(chat("gpt-4o")).await.unwrap_err();
    assert_eq!(error.kind(), &ErrorKind::ModelNotFound { model: "gpt-4o".into() });
    assert_eq!(azure.calls().len(), 1, "a model no region serves is never forwarded");
}

#[tokio::test]
async fn azure_v1_region_sends_the_deployment_as_the_model() {
    let azure = Mock::ok(None).await;
    let client = quiet()
        .region(region("azure-v1", azure.url("/openai/v1")).with_api_key("az-key-2"))
        .provider("azure-v1", Provider::azure().deployment("gpt-4o", "prod-4o"))
        .build()
        .unwrap();
    let response = client.chat_completions(chat("gpt-4o")).await.unwrap();
    assert_eq!(response.meta.model.as_deref(), Some("gpt-4o"));
    let call = &azure.calls()[0];
    assert_eq!(call.path, "/openai/v1/chat/completions");
    assert_eq!(call.query, None);
    assert_eq!(call.body["model"], "prod-4o");
    assert_eq!(call.body["messages"][0]["content"], "hello", "the rest of the body is unchanged");
    assert_eq!(call.headers["api-key"], "az-key-2");
}

#[tokio::test]
async fn custom_auth_header_extra_headers_and_the_base_query_are_sent() {
    let upstream = Mock::ok(None).await;
    let client = quiet()
        .region(region("gw", upstream.url("/v1?team=alpha")).with_api_key("gw-key"))
        .provider("gw", Provider::openai().auth_header("x-api-key").header("OpenAI-Project", "proj_x"))
        .build()
        .unwrap();
    client.chat_completions(chat("m")).await.unwrap();

    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", "callers-own-key".parse().unwrap());
    headers.insert("openai-project", "callers-project".parse().unwrap());
    let raw = RawRequest { method: Method::GET, path: "files?limit=2".into(), headers, body: Bytes::new() };
    let response = client.raw(raw, &CallOptions::new()).await.unwrap();
    assert_eq!(response.status, 200);
    drop(response);

    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].path.as_str(), calls[0].query.as_deref()), ("/v1/chat/completions", Some("team=alpha")));
    assert_eq!((calls[1].path.as_str(), calls[1].query.as_deref()), ("/v1/files", Some("team=alpha&limit=2")));
    for call in &calls {
        assert_eq!(call.headers["x-api-key"], "gw-key", "the region's key replaces the caller's");
        assert_eq!(call.headers["openai-project"], "proj_x");
        assert!(call.headers.get("authorization").is_none());
    }
}

#[tokio::test]
async fn a_key_never_reaches_another_regions_host() {
    let a = Mock::failing(Some(vec!["m"]), 500).await;
    let b = Mock::ok(Some(vec!["m"])).await;
    let c = Mock::ok(Some(vec!["m"])).await;
    let client = probing()
        .region(region("a", a.url("/v1")).with_api_key("key-a"))
        .region(region("b", b.url("/v1")).with_api_key("key-b"))
        .region(region("c", c.url("/openai")).with_api_key("key-c"))
        .provider("c", Provider::azure().api_version("2024-10-21"))
        .api_key("key-default")
        .failover(FailoverPolicy::default().max_attempts(3))
        .build()
        .unwrap();
    for _ in 0..4 {
        let response = client.chat_completions_with(chat("m"), &CallOptions::new().prefer_region("a")).await.unwrap();
        assert_ne!(response.meta.region.as_ref(), "a");
    }
    a.wait_model_hits(2).await;
    b.wait_model_hits(2).await;
    c.wait_model_hits(2).await;
    assert_eq!(a.calls().len(), 4, "every call tried the preferred region first");
    assert!(a.credentials().iter().all(|k| k == "Bearer key-a"), "{:?}", a.credentials());
    assert!(b.credentials().iter().all(|k| k == "Bearer key-b"), "{:?}", b.credentials());
    assert!(c.credentials().iter().all(|k| k == "key-c"), "{:?}", c.credentials());
    assert!(!c.credentials().is_empty() && !b.credentials().is_empty());
}

// ===== models per region =====

#[tokio::test]
async fn the_first_probe_round_learns_each_regions_models_and_calls_follow_them() {
    let a = Mock::ok(Some(vec!["gpt-4o"])).await;
    let b = Mock::ok(Some(vec!["gpt-4o-mini", "text-embedding-3-small"])).await;
    let client = probing().region(region("a", a.url("/v1"))).region(region("b", b.url("/v1"))).build().unwrap();
    // The second probe of a node starts only after the first one's answer was recorded.
    a.wait_model_hits(2).await;
    b.wait_model_hits(2).await;
    let models = client.region_models();
    assert_eq!(models[0], ("a".into(), Some(vec!["gpt-4o".to_owned()])));
    assert_eq!(models[1].1.as_ref().map(Vec::len), Some(2));

    // Even when `a` is the preferred region, a model it does not serve never goes there.
    for _ in 0..5 {
        let r =
            client.chat_completions_with(chat("gpt-4o-mini"), &CallOptions::new().prefer_region("a")).await.unwrap();
        assert_eq!(r.meta.region.as_ref(), "b");
        assert_eq!(r.meta.attempts, 1);
    }
    let r = client.chat_completions_with(chat("gpt-4o"), &CallOptions::new().prefer_region("b")).await.unwrap();
    assert_eq!(r.meta.region.as_ref(), "a");
    assert_eq!((a.calls().len(), b.calls().len()), (1, 5));

    // A model no region lists is a 404 model_not_found, not forwarded.
    let error = client.chat_completions(chat("gpt-5-nope")).await.unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::ModelNotFound { model } if model == "gpt-5-nope"), "{error}");
    assert_eq!((a.calls().len(), b.calls().len()), (1, 5));
}

#[tokio::test]
async fn configured_models_override_and_an_unknown_list_serves_everything() {
    let a = Mock::ok(None).await;
    let b = Mock::ok(None).await;
    let client = quiet()
        .region(region("a", a.url("/v1")))
        .region(region("b", b.url("/v1")))
        .region_models("a", ["gpt-4o"])
        .build()
        .unwrap();
    assert_eq!(client.region_models()[1], ("b".into(), None), "never fetched: unknown");
    for _ in 0..4 {
        let r = client.chat_completions_with(chat("llama-3"), &CallOptions::new().prefer_region("a")).await.unwrap();
        assert_eq!(r.meta.region.as_ref(), "b");
    }
    let r = client.chat_completions_with(chat("gpt-4o"), &CallOptions::new().prefer_region("a")).await.unwrap();
    assert_eq!(r.meta.region.as_ref(), "a");
    assert_eq!((a.calls().len(), b.calls().len()), (1, 4));
}

#[tokio::test]
async fn a_model_not_found_answer_takes_the_model_off_the_region_and_fails_over() {
    let a = Mock::start(None, |_| {
        (404, json!({"error": {"message": "The model does not exist", "type": "invalid_request_error", "code": "model_not_found"}}))
    })
    .await;
    let b = Mock::ok(None).await;
    let client = quiet().region(region("a", a.url("/v1"))).region(region("b", b.url("/v1"))).build().unwrap();
    let prefer_a = CallOptions::new().prefer_region("a");
    let r = client.chat_completions_with(chat("gpt-4o"), &prefer_a).await.unwrap();
    assert_eq!(r.meta.region.as_ref(), "b");
    assert_eq!(r.meta.failed_attempts.len(), 1);
    for _ in 0..3 {
        let r = client.chat_completions_with(chat("gpt-4o"), &prefer_a).await.unwrap();
        assert_eq!((r.meta.region.as_ref(), r.meta.attempts), ("b", 1));
    }
    assert_eq!(a.calls().len(), 1, "the model stays off the region");
    // Other models still go there.
    let r = client.chat_completions_with(chat("gpt-4o-mini"), &prefer_a).await.unwrap();
    assert_eq!((r.meta.region.as_ref(), r.meta.attempts), ("b", 2));
    assert_eq!(a.calls().len(), 2);
}

// ===== aliases and fallbacks =====

#[tokio::test]
async fn a_fallback_model_serves_after_every_region_of_the_first_model_failed() {
    let a = Mock::failing(None, 503).await;
    let b = Mock::failing(None, 500).await;
    let c = Mock::ok(None).await;
    let routing =
        ModelRouting::new().alias("smart", "gpt-4o").fallbacks("gpt-4o", ["fast"]).alias("fast", "gpt-4o-mini");
    let client = quiet()
        .region(region("a", a.url("/v1")))
        .region(region("b", b.url("/v1")))
        .region(region("c", c.url("/v1")))
        .region_models("a", ["gpt-4o"])
        .region_models("b", ["gpt-4o"])
        .region_models("c", ["gpt-4o-mini"])
        .model_routing(routing)
        .failover(FailoverPolicy::default().max_attempts(3))
        .build()
        .unwrap();
    let r = client.chat_completions(chat("smart")).await.unwrap();
    assert_eq!(r.meta.region.as_ref(), "c");
    assert_eq!(r.meta.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(r.meta.attempts, 3);
    assert!(r.meta.failed_over);
    assert_eq!(r.meta.failed_attempts.iter().map(|f| f.region.as_ref()).collect::<Vec<_>>().len(), 2);
    assert_eq!(a.calls()[0].body["model"], "gpt-4o", "the alias is resolved in the body");
    assert_eq!(b.calls()[0].body["model"], "gpt-4o");
    assert_eq!(c.calls()[0].body["model"], "gpt-4o-mini", "the fallback model is sent");
    assert_eq!(r.body.model, "gpt-4o-mini");
    assert_eq!((a.calls().len(), b.calls().len(), c.calls().len()), (1, 1, 1));
}

#[tokio::test]
async fn a_request_error_does_not_fall_back() {
    let a = Mock::failing(None, 400).await;
    let c = Mock::ok(None).await;
    let client = quiet()
        .region(region("a", a.url("/v1")))
        .region(region("c", c.url("/v1")))
        .region_models("a", ["gpt-4o"])
        .region_models("c", ["gpt-4o-mini"])
        .model_routing(ModelRouting::new().fallbacks("gpt-4o", ["gpt-4o-mini"]))
        .build()
        .unwrap();
    let error = client.chat_completions(chat("gpt-4o")).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert_eq!(c.calls().len(), 0);
}

#[tokio::test]
async fn raw_calls_are_routed_and_rewritten_by_model() {
    let a = Mock::ok(None).await;
    let client = quiet()
        .region(region("a", a.url("/v1")))
        .model_routing(ModelRouting::new().alias("fast", "gpt-4o-mini"))
        .build()
        .unwrap();
    let body = Bytes::from_static(br#"{"model":"fast","input":"hello","dimensions":8}"#);
    let raw = RawRequest { method: Method::POST, path: "embeddings".into(), headers: HeaderMap::new(), body };
    let r = client.raw(raw, &CallOptions::new().model("fast")).await.unwrap();
    assert_eq!(r.meta.model.as_deref(), Some("gpt-4o-mini"));
    drop(r);
    let call = &a.calls()[0];
    assert_eq!(call.body, json!({"model": "gpt-4o-mini", "input": "hello", "dimensions": 8}));
}

// ===== zones =====

#[tokio::test]
async fn failover_never_leaves_the_allowed_zones() {
    let eu1 = Mock::failing(None, 500).await;
    let eu2 = Mock::failing(None, 503).await;
    let us = Mock::ok(None).await;
    let client = quiet()
        .region(region("eu-1", eu1.url("/v1")).with_zone("eu"))
        .region(region("eu-2", eu2.url("/v1")).with_zone("eu"))
        .region(region("us-1", us.url("/v1")).with_zone("us"))
        .failover(FailoverPolicy::default().max_attempts(3))
        .build()
        .unwrap();
    let eu = CallOptions::new().zones(["eu"]).prefer_region("us-1");
    let error = client.chat_completions_with(chat("m"), &eu).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert_eq!(error.failed_attempts().len(), 2);
    assert_eq!(us.calls().len(), 0, "neither failover nor the preferred region leaves the zone");
    assert_eq!((eu1.calls().len(), eu2.calls().len()), (1, 1));

    let error = client.chat_completions_with(chat("m"), &CallOptions::new().zones(["ap"])).await.unwrap_err();
    assert_eq!(error.kind(), &ErrorKind::NoRegionInZones { zones: "ap".into(), model: Some("m".into()) });
    assert_eq!(us.calls().len() + eu1.calls().len() + eu2.calls().len(), 2, "nothing sent");

    let r = client.chat_completions_with(chat("m"), &CallOptions::new().zones(["eu", "us"])).await.unwrap();
    assert_eq!(r.meta.region.as_ref(), "us-1");
}

#[tokio::test]
async fn bad_routing_settings_are_refused_at_build() {
    let build =
        |b: ClientBuilder| b.region(region("a", "http://127.0.0.1:9/openai".into())).build().unwrap_err().to_string();
    assert!(build(quiet().provider("a", Provider::azure())).contains("api_version"));
    assert!(build(quiet().provider("nope", Provider::openai())).contains("nope"));
    assert!(build(quiet().region_models("a", Vec::<String>::new())).contains("models"));
    assert!(build(quiet().model_routing(ModelRouting::new().alias("x", "x"))).contains("names itself"));
}

#[tokio::test]
async fn errors_and_debug_never_show_keys() {
    let a = Mock::failing(None, 401).await;
    let client = quiet()
        .region(region("a", a.url("/openai")).with_api_key("sk-very-secret-9"))
        .provider("a", Provider::azure().api_version("v1").header("x-extra", "hidden-value"))
        .build()
        .unwrap();
    let error = client.chat_completions(chat("m")).await.unwrap_err();
    let text = format!("{error} {error:?} {client:?}");
    assert!(!text.contains("sk-very-secret") && !text.contains("hidden-value"), "{text}");
}

#[tokio::test]
async fn a_multipart_upload_is_routed_by_model_and_its_model_part_rewritten() {
    let a = Mock::start(None, |_| (200, json!({"text": "hello"}))).await;
    let b = Mock::ok(None).await;
    let client = quiet()
        .region(region("a", a.url("/v1")))
        .region(region("b", b.url("/v1")))
        .region_models("a", ["whisper-1"])
        .region_models("b", ["gpt-4o"])
        .model_routing(ModelRouting::new().alias("stt", "whisper-1"))
        .build()
        .unwrap();
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF....\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nstt\r\n--XyZ--\r\n";
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "multipart/form-data; boundary=XyZ".parse().unwrap());
    let upload = |headers: HeaderMap, body: &'static str| RawRequest {
        method: Method::POST,
        path: "audio/transcriptions".into(),
        headers,
        body: Bytes::from_static(body.as_bytes()),
    };
    let r = client.raw(upload(headers.clone(), body), &CallOptions::new().model("stt")).await.unwrap();
    assert_eq!((r.meta.region.as_ref(), r.meta.model.as_deref()), ("a", Some("whisper-1")));
    drop(r);
    assert_eq!(b.calls().len(), 0);
    let seen = a.state.seen.lock()[0].clone();
    assert_eq!(seen.path, "/v1/audio/transcriptions");
    assert_eq!(seen.headers["content-type"], "multipart/form-data; boundary=XyZ");
    assert_eq!(
        seen.raw,
        body.replace("\r\n\r\nstt\r\n", "\r\n\r\nwhisper-1\r\n").as_bytes(),
        "only the model part changed"
    );

    // A body without a model part cannot be sent under another model: a 400 of our own,
    // nothing sent, no region blamed.
    let no_model = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nRIFF\r\n--XyZ--\r\n";
    let error = client.raw(upload(headers, no_model), &CallOptions::new().model("stt")).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert_eq!(a.state.seen.lock().len(), 1);
    assert_eq!(client.snapshot().nodes()[0].metrics().consecutive_failures(), 0);
}

#[tokio::test]
async fn a_region_that_takes_callers_keys_stays_up_when_its_keyless_probe_is_refused() {
    // `/models` refuses a call without a key, as OpenAI does; calls carry the caller's key.
    let models_hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let (hits, s) = (Arc::clone(&models_hits), Arc::clone(&seen));
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let (hits, s) = (Arc::clone(&hits), Arc::clone(&s));
        async move {
            let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
            if uri.path().ends_with("/models") {
                hits.fetch_add(1, Ordering::SeqCst);
                let body = json!({"error": {"message": "You didn't provide an API key.", "code": null}});
                return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            }
            s.lock().push(auth);
            let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let other = Mock::ok(None).await;
    let client = probing()
        .region(region("byok", url))
        .region(region("other", other.url("/v1")).with_api_key("sk-other"))
        .provider("byok", Provider::openai().pass_caller_key())
        .build()
        .unwrap();
    // Several probe rounds, each refused: more than enough to mark a region down.
    tokio::time::timeout(WAIT, async {
        while models_hits.load(Ordering::SeqCst) < 6 {
            other.wait_model_hits(other.probes().len() + 1).await;
        }
    })
    .await
    .expect("probes kept coming");
    let options = CallOptions::new().prefer_region("byok").caller_key(sluice_client::ApiKey::new("sk-caller"));
    let r = client.chat_completions_with(chat("m"), &options).await.unwrap();
    assert_eq!(r.meta.region.as_ref(), "byok", "the refused keyless probes took the region out");
    assert_eq!(seen.lock().as_slice(), &[Some("Bearer sk-caller".to_owned())]);
    assert!(other.calls().is_empty());
    assert!(other.credentials().iter().all(|c| c == "Bearer sk-other"), "{:?}", other.credentials());
}
