//! Operating the gateway: the admin API (key, regions, drain, reload), reload under load,
//! and the access log. Real loopback servers on both sides.

mod common;

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::HeaderMap,
    response::IntoResponse,
    routing::{get, post},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sluice_client::{Client, GeoPoint, ProbeConfig, Region};
use sluice_gateway::{
    Gateway,
    admin::{AdminOptions, Reloader},
};

const ADMIN_KEY: &str = "admin-key-0123456789";
const PATIENCE: Duration = Duration::from_secs(60);

/// One mock region: counts chat calls, remembers their headers, answers after `delay`.
#[derive(Clone)]
struct Mock {
    id: &'static str,
    url: String,
    hits: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

#[derive(Clone)]
struct MockState {
    id: &'static str,
    delay: Duration,
    hits: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn models(State(m): State<MockState>) -> String {
    m.probes.fetch_add(1, Ordering::SeqCst);
    json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}).to_string()
}

async fn chat(State(m): State<MockState>, headers: HeaderMap) -> impl IntoResponse {
    m.seen.lock().push(headers);
    tokio::time::sleep(m.delay).await;
    m.hits.fetch_add(1, Ordering::SeqCst);
    let body = json!({"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": m.id}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}});
    ([("content-type", "application/json")], body.to_string())
}

async fn start_mock(id: &'static str, delay: Duration) -> Mock {
    let state = MockState { id, delay, hits: Arc::default(), probes: Arc::default(), seen: Arc::default() };
    let (hits, probes, seen) = (Arc::clone(&state.hits), Arc::clone(&state.probes), Arc::clone(&state.seen));
    let app =
        Router::new().route("/v1/chat/completions", post(chat)).route("/v1/models", get(models)).with_state(state);
    let url = common::upstream(app).await;
    Mock { id, url, hits, probes, seen }
}

impl Mock {
    fn region(&self, lat: f64, lon: f64) -> Region {
        Region::new(self.id, &self.url, GeoPoint::new(lat, lon)).with_api_key(format!("sk-upstream-{}", self.id))
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn models_hits(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }
}

fn fast_probes() -> ProbeConfig {
    ProbeConfig::builder()
        .interval(Duration::from_millis(50))
        .jitter(Duration::from_millis(5))
        .initial_jitter(Duration::ZERO)
        .timeout(Duration::from_secs(2))
        .unhealthy_interval(Duration::from_millis(50))
        .build()
        .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(PATIENCE).build().unwrap()
}

fn chat_body() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a private prompt"}]})
}

/// Sends a chat call preferring `region`; returns the region that served it.
async fn served_by(base: &str, region: &str) -> String {
    let resp = http()
        .post(format!("{base}/v1/chat/completions"))
        .header("x-sluice-region", region)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["x-sluice-region"].to_str().unwrap().to_owned()
}

async fn admin(base: &str, method: reqwest::Method, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = http().request(method, format!("{base}{path}"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

fn ids(regions: &Value) -> Vec<String> {
    regions["regions"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

/// A reloader that swaps in the regions that `next` holds at the time, or refuses with its
/// message when it holds an error.
fn reloader(next: Arc<Mutex<Result<Vec<Region>, String>>>) -> Reloader {
    Arc::new(move |client: &Client| {
        let regions = next.lock().clone()?;
        let changes = client.update_regions(regions).map_err(|e| e.to_string())?;
        Ok(format!("added {:?}, removed {:?}", changes.added, changes.removed))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_key_and_reports_drains_and_reloads() {
    let (seoul, tokyo, singapore) = (
        start_mock("seoul", Duration::ZERO).await,
        start_mock("tokyo", Duration::ZERO).await,
        start_mock("singapore", Duration::ZERO).await,
    );
    let client = Client::builder()
        .regions([seoul.region(37.56, 126.97), tokyo.region(35.68, 139.69)])
        .probe_config(fast_probes())
        .build()
        .unwrap();
    let next = Arc::new(Mutex::new(Err("not set".to_owned())));
    let gateway = Gateway::builder(client.clone())
        .admin(AdminOptions::new(ADMIN_KEY).reload(reloader(Arc::clone(&next))))
        .build();
    let base = common::serve(gateway).await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // Every admin route refuses a missing or wrong key, and changes nothing then.
    for (method, path) in [
        (&get, "/admin/regions"),
        (&post, "/admin/regions/tokyo/drain"),
        (&post, "/admin/regions/tokyo/undrain"),
        (&post, "/admin/reload"),
    ] {
        for key in [None, Some("wrong"), Some("admin-key-012345678"), Some("admin-key-01234567890")] {
            let (status, body) = admin(&base, method.clone(), path, key).await;
            assert_eq!(status, 401, "{method} {path} with {key:?}: {body}");
            assert!(!body.to_string().contains(ADMIN_KEY));
        }
    }
    assert_eq!(served_by(&base, "tokyo").await, "tokyo");

    // Region state: every listed field is present.
    let (status, regions) = admin(&base, get.clone(), "/admin/regions", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&regions), ["seoul", "tokyo"]);
    let first = &regions["regions"][0];
    for field in [
        "state",
        "health",
        "admin",
        "eligible",
        "cooldown",
        "ejection",
        "in_flight",
        "latency_ms",
        "probe_rtt_ms",
        "concurrency_limit",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
    assert_eq!(first["admin"], "enabled");
    assert_eq!(first["eligible"], true);

    // Drain tokyo: calls that prefer it go elsewhere, and health checks that find it healthy
    // do not undo the operator's switch.
    let (status, body) = admin(&base, post.clone(), "/admin/regions/tokyo/drain", Some(ADMIN_KEY)).await;
    assert_eq!((status, &body["admin"]), (200, &json!("drained")), "{body}");
    let tokyo_hits = tokyo.hits();
    for _ in 0..5 {
        assert_eq!(served_by(&base, "tokyo").await, "seoul");
    }
    // Wait until probes have found tokyo healthy (it answers them), whatever it was before.
    let health = client.health();
    let tokyo_node = client.snapshot().find("tokyo").unwrap();
    let probes_before = tokyo.models_hits();
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            let healthy = health
                .status(tokyo_node, sluice_gateway::now())
                .is_some_and(|s| s.health == sluice_region_model::HealthState::Healthy);
            if healthy && tokyo.models_hits() >= probes_before + 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "tokyo was not probed healthy");
    let (_, regions) = admin(&base, get.clone(), "/admin/regions", Some(ADMIN_KEY)).await;
    let tokyo_row = &regions["regions"][1];
    assert_eq!(
        (&tokyo_row["admin"], &tokyo_row["eligible"], &tokyo_row["state"]),
        (&json!("drained"), &json!(false), &json!("drained"))
    );
    assert_eq!(served_by(&base, "tokyo").await, "seoul");
    assert_eq!(tokyo.hits(), tokyo_hits, "a drained region got calls");
    let (status, _) = admin(&base, post.clone(), "/admin/regions/mars/drain", Some(ADMIN_KEY)).await;
    assert_eq!(status, 404);
    let (status, _) = admin(&base, post.clone(), "/admin/regions/tokyo/undrain", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(served_by(&base, "tokyo").await, "tokyo");

    // A refused reload answers 422 with the reason and keeps the running regions.
    *next.lock() = Err("sluice.toml:9:1: region `broken`: missing field `url`".to_owned());
    let (status, body) = admin(&base, post.clone(), "/admin/reload", Some(ADMIN_KEY)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("missing field `url`"), "{body}");
    *next.lock() = Ok(vec![seoul.region(37.56, 126.97), seoul.region(37.56, 126.97)]);
    let (status, body) = admin(&base, post.clone(), "/admin/reload", Some(ADMIN_KEY)).await;
    assert_eq!(status, 422, "a duplicate id is refused: {body}");
    let (_, regions) = admin(&base, get.clone(), "/admin/regions", Some(ADMIN_KEY)).await;
    assert_eq!(ids(&regions), ["seoul", "tokyo"]);

    // A good one swaps in: tokyo leaves, singapore takes calls at once.
    *next.lock() = Ok(vec![seoul.region(37.56, 126.97), singapore.region(1.35, 103.82)]);
    let (status, body) = admin(&base, post.clone(), "/admin/reload", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{body}");
    let (_, regions) = admin(&base, get.clone(), "/admin/regions", Some(ADMIN_KEY)).await;
    assert_eq!(ids(&regions), ["seoul", "singapore"]);
    assert_eq!(served_by(&base, "singapore").await, "singapore");
    let tokyo_hits = tokyo.hits();
    let resp = http()
        .post(format!("{base}/v1/chat/completions"))
        .header("x-sluice-region", "tokyo")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a removed region is an unknown one");
    for _ in 0..4 {
        let resp = http().post(format!("{base}/v1/chat/completions")).json(&chat_body()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(tokyo.hits(), tokyo_hits, "a removed region got calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_off_without_a_key_and_reload_needs_a_reloader() {
    let seoul = start_mock("seoul", Duration::ZERO).await;
    let client = Client::builder().region(seoul.region(37.56, 126.97)).active_probing(false).build().unwrap();
    let base = common::serve(Gateway::builder(client.clone()).build()).await;
    let (status, _) = admin(&base, reqwest::Method::GET, "/admin/regions", Some(ADMIN_KEY)).await;
    assert_eq!(status, 404, "no admin API without a key");

    let base = common::serve(Gateway::builder(client).admin(AdminOptions::new(ADMIN_KEY)).build()).await;
    let (status, body) = admin(&base, reqwest::Method::POST, "/admin/reload", Some(ADMIN_KEY)).await;
    assert_eq!(status, 501, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_through_the_admin_api_under_load_fails_no_call() {
    const WORKERS: usize = 8;
    const CALLS: usize = 20;
    let delay = Duration::from_millis(20);
    let (seoul, tokyo, singapore) =
        (start_mock("seoul", delay).await, start_mock("tokyo", delay).await, start_mock("singapore", delay).await);
    let client = Client::builder()
        .regions([seoul.region(37.56, 126.97), tokyo.region(35.68, 139.69)])
        .probe_config(fast_probes())
        .build()
        .unwrap();
    let next = Arc::new(Mutex::new(Err("not set".to_owned())));
    let gateway =
        Gateway::builder(client).admin(AdminOptions::new(ADMIN_KEY).reload(reloader(Arc::clone(&next)))).build();
    let base = common::serve(gateway).await;

    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (base, done) = (base.clone(), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..CALLS {
                let stream = (w + i) % 3 == 0;
                let mut body = chat_body();
                body["stream"] = json!(stream);
                match http().post(format!("{base}/v1/chat/completions")).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        if let Err(e) = r.bytes().await {
                            failures.push(format!("body: {e}"));
                        }
                    }
                    Ok(r) => failures.push(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    let lists = [
        vec![seoul.region(37.56, 126.97), singapore.region(1.35, 103.82)],
        vec![tokyo.region(35.68, 139.69)],
        vec![seoul.region(37.56, 126.97), tokyo.region(35.68, 139.69), singapore.region(1.35, 103.82)],
    ];
    let reloads = async {
        for (i, list) in lists.into_iter().enumerate() {
            // Swap while calls run: after a share of the load has finished, not before.
            while done.load(Ordering::SeqCst) < (i + 1) * WORKERS * CALLS / 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            *next.lock() = Ok(list);
            let (status, body) = admin(&base, reqwest::Method::POST, "/admin/reload", Some(ADMIN_KEY)).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), reloads).await.expect("the reloads ran");
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(failures.is_empty(), "calls failed across reloads: {failures:?}");
    assert_eq!(done.load(Ordering::SeqCst), WORKERS * CALLS);
    assert_eq!(seoul.hits() + tokyo.hits() + singapore.hits(), WORKERS * CALLS, "one generation per call");
    assert!(singapore.hits() > 0, "the added region took calls");
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The access log's JSON lines so far.
fn access_lines(buffer: &Buffer) -> Vec<Value> {
    let text = String::from_utf8_lossy(&buffer.0.lock()).into_owned();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == sluice_gateway::access_log::TARGET)
        .collect()
}

// Current-thread runtime: the subscriber set for this thread sees every task.
#[tokio::test]
async fn access_log_writes_one_line_per_call_without_keys_or_bodies() {
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let seoul = start_mock("seoul", Duration::ZERO).await;
    let client = Client::builder().region(seoul.region(37.56, 126.97)).active_probing(false).build().unwrap();
    let gateway = Gateway::builder(client.clone()).require_key("gw-caller-key-42").access_log(true).build();
    let base = common::serve(gateway).await;
    let call = |stream: bool, key: &'static str| {
        let base = base.clone();
        async move {
            let mut body = chat_body();
            body["stream"] = json!(stream);
            let resp = http()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-request-id", "caller-req-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let _ = resp.bytes().await.unwrap();
            status
        }
    };
    assert_eq!(call(false, "gw-caller-key-42").await, 200);
    assert_eq!(call(true, "gw-caller-key-42").await, 200);
    assert_eq!(call(false, "gw-wrong-key").await, 401);
    // Not a call: no line.
    assert_eq!(http().get(format!("{base}/healthz")).send().await.unwrap().status(), 200);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while access_lines(&buffer).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no access lines: {:?}", access_lines(&buffer));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = access_lines(&buffer);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        for field in [
            "timestamp",
            "method",
            "path",
            "model",
            "region",
            "attempts",
            "status",
            "latency_ms",
            "first_chunk_ms",
            "request_id",
        ] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        assert_eq!(line["path"], "/v1/chat/completions");
    }
    let (plain, stream, refused) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!((&plain["status"], &plain["region"], &plain["attempts"]), (&json!(200), &json!("seoul"), &json!("1")));
    assert_eq!(plain["tokens"], 7, "{plain}");
    assert_eq!(plain["body"], "complete");
    assert!(plain["request_id"].as_str().unwrap().starts_with("sluice-"), "{plain}");
    assert_eq!(plain["model"], "gpt-4o-mini");
    assert_eq!(stream["model"], "gpt-4o-mini");
    assert_eq!(stream["status"], 200);
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["region"], "-");

    for headers in seoul.seen.lock().iter() {
        assert_eq!(headers["authorization"], "Bearer sk-upstream-seoul", "the caller's key went upstream");
    }
    let all = String::from_utf8_lossy(&buffer.0.lock()).into_owned();
    for secret in ["gw-caller-key-42", "gw-wrong-key", "sk-upstream-seoul", "a private prompt"] {
        assert!(!all.contains(secret), "{secret:?} reached the log");
    }
}

// Current-thread runtime: the subscriber set for this thread sees every span.
#[tokio::test]
async fn traceparent_is_joined_and_sent_upstream_under_the_attempt() {
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let seoul = start_mock("seoul", Duration::ZERO).await;
    let client = Client::builder().region(seoul.region(37.56, 126.97)).active_probing(false).build().unwrap();
    let base = common::serve(Gateway::builder(client).access_log(true).build()).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (traceparent, stream) in
        [(Some(incoming), false), (Some(incoming), true), (Some("00-nonsense"), false), (None, false)]
    {
        let mut body = chat_body();
        body["stream"] = json!(stream);
        let mut req = http().post(format!("{base}/v1/chat/completions")).json(&body);
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await.unwrap();
    }

    let seen: Vec<Option<String>> =
        seoul.seen.lock().iter().map(|h| h.get("traceparent").map(|v| v.to_str().unwrap().to_owned())).collect();
    assert_eq!(seen.len(), 4);
    assert_eq!((&seen[2], &seen[3]), (&None, &None), "an invalid or missing traceparent sends none");
    let mut parents = Vec::new();
    for sent in &seen[..2] {
        let sent = sent.as_deref().expect("a traceparent went upstream");
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts.len(), 4, "{sent}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"), "{sent}");
        assert_ne!(parts[2], "00f067aa0ba902b7", "the attempt is the upstream's parent, not the caller's span");
        assert_eq!(parts[2].len(), 16);
        parents.push(parts[2].to_owned());
    }
    assert_ne!(parents[0], parents[1], "each attempt has its own span id");

    // The call spans carry the trace id; the attempt spans carry the ids sent upstream.
    let text = String::from_utf8_lossy(&buffer.0.lock()).into_owned();
    let closed: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    let spans = |name: &str| -> Vec<Value> {
        closed.iter().filter(|v| v["span"]["name"] == name).map(|v| v["span"].clone()).collect()
    };
    let calls = spans("sluice.call");
    assert_eq!(calls.len(), 4, "{text}");
    let traced: Vec<&Value> = calls.iter().filter(|s| s.get("trace_id").is_some()).collect();
    assert_eq!(traced.len(), 2, "{calls:?}");
    assert!(traced.iter().all(|s| s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"), "{calls:?}");
    let attempt_ids: Vec<String> =
        spans("sluice.attempt").iter().filter_map(|s| s["span_id"].as_str().map(str::to_owned)).collect();
    assert_eq!(attempt_ids, parents, "the attempt span ids are the parents sent upstream");
    let access: Vec<Value> =
        closed.iter().filter(|v| v["target"] == sluice_gateway::access_log::TARGET).cloned().collect();
    assert_eq!(access.len(), 4);
    assert_eq!(access[0]["fields"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{:?}", access[0]);
    assert_eq!(access[3]["fields"]["trace_id"], "-");
}

/// A reload replaces providers too: a removed region's provider goes with it, and an added
/// region speaks its own provider from its first call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_carries_each_regions_provider() {
    use sluice_client::{CallOptions, ChatCompletionRequest, ChatMessage, Provider};
    let (seoul, tokyo, singapore) = (
        start_mock("seoul", Duration::ZERO).await,
        start_mock("tokyo", Duration::ZERO).await,
        start_mock("singapore", Duration::ZERO).await,
    );
    let client = Client::builder()
        .regions([seoul.region(37.56, 126.97), tokyo.region(35.68, 139.69)])
        .provider("tokyo", Provider::openai().header("x-region-tag", "tokyo"))
        .active_probing(false)
        .build()
        .unwrap();
    // Removing the region that has a provider of its own.
    let changes = client.update_regions([seoul.region(37.56, 126.97)]).unwrap();
    assert_eq!(changes.removed, ["tokyo"]);
    // Adding one with its own provider.
    client
        .update_regions_with(
            [seoul.region(37.56, 126.97), singapore.region(1.35, 103.82)],
            [("singapore".to_owned(), Provider::openai().header("x-region-tag", "sg"))],
            [],
        )
        .unwrap();
    let request = || ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")]);
    let answer = client.chat_completions_with(request(), &CallOptions::new().prefer_region("singapore")).await.unwrap();
    assert_eq!(&*answer.meta.region, "singapore");
    assert_eq!(singapore.seen.lock()[0]["x-region-tag"], "sg");
    // A provider for a region the list does not hold is refused, and nothing changes.
    let refused = client.update_regions_with(
        [seoul.region(37.56, 126.97)],
        [("mars".to_owned(), Provider::openai())],
        Vec::<(String, Vec<String>)>::new(),
    );
    assert!(refused.is_err());
    assert_eq!(client.snapshot().nodes().len(), 2);
    // The plain update keeps singapore's provider.
    client.update_regions([singapore.region(1.35, 103.82)]).unwrap();
    client.chat_completions_with(request(), &CallOptions::new()).await.unwrap();
    assert_eq!(singapore.seen.lock()[1]["x-region-tag"], "sg");
}
