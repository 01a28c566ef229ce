//! `sluice serve` operating limits and its own metrics, seen from a caller and from the
//! upstream: token and cost counters, `max_concurrent_calls`, `header_read_timeout`, the
//! body limit, and a caller who goes away (the upstream call is dropped and counted).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Semaphore,
};

use crate::support::{PATIENCE, Serve, chat_body, eventually, http, temp_dir};

/// A mock region whose chat answers are scripted per test.
#[derive(Clone)]
struct Upstream {
    /// Chat calls received.
    hits: Arc<AtomicUsize>,
    /// Plain chat answers wait for a permit here (tests add permits to release them).
    gate: Arc<Semaphore>,
    /// Answers (handlers or stream bodies) that were dropped before they finished: the
    /// upstream saw its connection go.
    dropped: Arc<AtomicUsize>,
    /// Whether plain chat answers wait at the gate.
    hold: bool,
    /// Whether streams never end (until the connection goes).
    endless: bool,
}

/// Counts one drop of an unfinished answer.
struct DropFlag {
    dropped: Arc<AtomicUsize>,
    finished: bool,
}

impl DropFlag {
    /// The answer finished: not a drop.
    fn done(mut self) {
        self.finished = true;
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.finished {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

const USAGE: &str = r#"{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":200}}"#;

impl Upstream {
    async fn start(hold: bool, endless: bool) -> (Self, String) {
        let up =
            Self { hits: Arc::default(), gate: Arc::new(Semaphore::new(0)), dropped: Arc::default(), hold, endless };
        let state = up.clone();
        let app = Router::new()
            .route("/v1/models", get(|| async { json!({"object": "list", "data": []}).to_string() }))
            .route(
                "/v1/chat/completions",
                post(move |headers: HeaderMap, body: Bytes| {
                    let up = state.clone();
                    async move { up.chat(headers, body).await }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("mock serves") });
        (up, url)
    }

    async fn chat(&self, _headers: HeaderMap, body: Bytes) -> Response {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let model = request["model"].as_str().unwrap_or("").to_owned();
        if request["stream"] == true {
            let named = model.clone();
            let chunk = move |content: &str| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "c", "object": "chat.completion.chunk", "model": named,
                        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
                )
            };
            let mut events = vec![chunk("Hello"), chunk(" there")];
            if request["stream_options"]["include_usage"] == true {
                events.push(format!(
                    "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[],\"usage\":{USAGE}}}\n\n"
                ));
            }
            events.push("data: [DONE]\n\n".to_owned());
            let endless = self.endless;
            let flag = DropFlag { dropped: Arc::clone(&self.dropped), finished: false };
            // An endless stream sends a chunk every 50 ms, at most for 2,400 chunks (120 s),
            // so that a write fails soon after its reader went away.
            let body = futures_util::stream::unfold((0usize, flag), move |(i, flag)| {
                let next = if endless { (i < 2_400).then(|| chunk(".")) } else { events.get(i).cloned() };
                async move {
                    match next {
                        Some(bytes) => {
                            if endless && i > 0 {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), (i + 1, flag)))
                        }
                        None => {
                            flag.done();
                            None
                        }
                    }
                }
            });
            return ([("content-type", "text/event-stream")], Body::from_stream(body)).into_response();
        }
        if self.hold {
            let flag = DropFlag { dropped: Arc::clone(&self.dropped), finished: false };
            self.gate.acquire().await.expect("gate open").forget();
            flag.done();
        }
        let answer = format!(
            r#"{{"id":"c","object":"chat.completion","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"usage":{USAGE}}}"#
        );
        ([("content-type", "application/json")], answer).into_response()
    }
}

/// Starts `sluice serve` in front of one mock region, with `extra` config.
async fn serve(url: &str, extra: &str) -> Serve {
    let dir = temp_dir("serve-limits");
    let config = format!(
        "[[region]]\nid = \"seoul\"\nurl = \"{url}\"\nlat = 37.56\nlon = 126.97\n\n[health.probe]\nenabled = false\n\n{extra}"
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config).expect("write config");
    Serve::start(&path, &[], &[]).await
}

/// The value of the series `name{labels...}` in a Prometheus text page.
fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        if !(rest.is_empty() || rest.starts_with('{')) {
            return None;
        }
        labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}

/// Waits (bounded) until the series is exactly `want`.
async fn metric_reaches(serve: &Serve, name: &str, labels: &[(&str, &str)], want: f64) {
    eventually(&format!("{name}{labels:?} == {want}"), || {
        let url = serve.url("/metrics");
        async move {
            let page = http().get(url).send().await.ok()?.text().await.ok()?;
            (metric(&page, name, labels)? == want).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn token_and_cost_counters_count_plain_and_streamed_answers() {
    let (up, url) = Upstream::start(false, false).await;
    let serve = serve(
        &url,
        "[server]\nmodels = [\"gpt-4o-mini\"]\n\n[[server.price]]\nmodel = \"gpt-4o-mini\"\ninput = 0.15\noutput = 0.60\ncached_input = 0.075\n",
    )
    .await;
    let http = http();
    let chat = serve.url("/v1/chat/completions");
    let r = http.post(&chat).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    // A stream whose caller did not ask for usage: Sluice asks upstream and hides the chunk.
    let r = http.post(&chat).json(&chat_body(true)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]") && !text.contains("\"usage\""), "{text}");
    // A model nobody configured: counted under `other`, not under its own name.
    let r = http.post(&chat).json(&json!({"model": "made-up-9000", "messages": []})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);

    let series = |kind| [("region", "seoul"), ("model", "gpt-4o-mini"), ("kind", kind)];
    metric_reaches(&serve, "sluice_tokens_total", &series("input"), 2000.0).await;
    metric_reaches(&serve, "sluice_tokens_total", &series("output"), 1000.0).await;
    metric_reaches(&serve, "sluice_tokens_total", &series("cached_input"), 400.0).await;
    // Per call: 800 uncached input × 0.15 + 200 cached × 0.075 + 500 output × 0.60 = 435
    // millionths; two calls.
    metric_reaches(&serve, "sluice_cost_micros_total", &[("region", "seoul"), ("model", "gpt-4o-mini")], 870.0).await;
    metric_reaches(&serve, "sluice_tokens_total", &[("model", "other"), ("kind", "input")], 1000.0).await;
    let page = http.get(serve.url("/metrics")).send().await.unwrap().text().await.unwrap();
    // The gateway's series take only configured models (the library's own `sluice_calls_total`
    // keeps the first 64 names it sees; that bound is the library's).
    let gateway_series = ["sluice_proxy_", "sluice_tokens_total", "sluice_cost_micros_total"];
    for line in page.lines().filter(|l| gateway_series.iter().any(|s| l.starts_with(s))) {
        assert!(!line.contains("made-up-9000"), "a caller's model name became a label: {line}");
    }
    assert_eq!(
        metric(
            &page,
            "sluice_proxy_calls_total",
            &[("endpoint", "chat.completions"), ("model", "gpt-4o-mini"), ("status", "200")]
        ),
        Some(2.0),
        "{page}"
    );
}

#[tokio::test]
async fn beyond_max_concurrent_calls_an_early_503_with_retry_after() {
    let (up, url) = Upstream::start(true, false).await;
    let serve = serve(&url, "[server]\nmax_concurrent_calls = 2\n").await;
    let chat = serve.url("/v1/chat/completions");
    let running: Vec<_> = (0..2)
        .map(|_| {
            let chat = chat.clone();
            tokio::spawn(async move { http().post(chat).json(&chat_body(false)).send().await.unwrap().status() })
        })
        .collect();
    eventually("both calls reach the upstream", || {
        let hits = up.hits.load(Ordering::SeqCst);
        async move { (hits == 2).then_some(()) }
    })
    .await;

    let r = http().post(&chat).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "overloaded");
    assert_eq!(up.hits.load(Ordering::SeqCst), 2, "the refused call reached the upstream");
    metric_reaches(&serve, "sluice_proxy_overloaded_total", &[], 1.0).await;

    up.gate.add_permits(3);
    for call in running {
        assert_eq!(call.await.unwrap(), 200);
    }
    // Room again once they ended.
    let r = http().post(&chat).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_client_that_sends_half_a_head_is_dropped() {
    let (up, url) = Upstream::start(false, false).await;
    let serve = serve(&url, "[server]\nheader_read_timeout = \"1s\"\n").await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(serve.addr).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Type: appl").await.unwrap();
        slow.push(s);
    }
    // Meanwhile whole calls are served.
    let r = http().post(serve.url("/v1/chat/completions")).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Every slow client is disconnected (its read ends), well within the test's patience.
    for mut s in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a half-sent head was held for {PATIENCE:?}");
        let text = String::from_utf8_lossy(&buf);
        assert!(!text.contains("200 OK"), "{text}");
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 1, "a half-sent call reached the upstream");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_and_never_sent() {
    let (up, url) = Upstream::start(false, false).await;
    let serve = serve(&url, "[server]\nmax_body_bytes = 2048\n").await;
    let chat = serve.url("/v1/chat/completions");
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(4000)}]}).to_string();

    // Declared by Content-Length: refused before it is read.
    let r = http().post(&chat).header("content-type", "application/json").body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "body_too_large");
    // Chunked, with no length: refused once the limit is crossed.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        big.as_bytes().chunks(500).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let r = http()
        .post(&chat)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(up.hits.load(Ordering::SeqCst), 0, "a body over the limit reached the upstream");
    // Under the limit: served.
    let r = http().post(&chat).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_caller_who_goes_away_cancels_the_upstream_call() {
    let (up, url) = Upstream::start(true, true).await;
    let serve = serve(&url, "").await;
    let chat = serve.url("/v1/chat/completions");

    // Mid answer: the caller reads the first chunk of an endless stream, then hangs up.
    let r = http().post(&chat).json(&chat_body(true)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    body.next().await.expect("a first chunk").expect("ok chunk");
    drop(body);
    eventually("the upstream stream is dropped", || {
        let n = up.dropped.load(Ordering::SeqCst);
        async move { (n == 1).then_some(()) }
    })
    .await;
    metric_reaches(&serve, "sluice_proxy_disconnects_total", &[("stage", "mid_answer")], 1.0).await;
    metric_reaches(&serve, "sluice_proxy_in_flight", &[], 0.0).await;

    // Before the answer: the upstream holds a plain call; the caller gives up.
    let call = tokio::spawn({
        let chat = chat.clone();
        async move { http().post(chat).json(&chat_body(false)).send().await }
    });
    eventually("the plain call reaches the upstream", || {
        let hits = up.hits.load(Ordering::SeqCst);
        async move { (hits == 2).then_some(()) }
    })
    .await;
    call.abort();
    assert!(call.await.is_err_and(|e| e.is_cancelled()));
    eventually("the upstream call is dropped", || {
        let n = up.dropped.load(Ordering::SeqCst);
        async move { (n == 2).then_some(()) }
    })
    .await;
    metric_reaches(&serve, "sluice_proxy_disconnects_total", &[("stage", "before_answer")], 1.0).await;
    metric_reaches(&serve, "sluice_proxy_in_flight", &[], 0.0).await;
    let page = http().get(serve.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        metric(&page, "sluice_proxy_calls_total", &[("endpoint", "chat.completions"), ("status", "disconnected")]),
        Some(2.0),
        "{page}"
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 2, "a cancelled call was re-sent");
}
