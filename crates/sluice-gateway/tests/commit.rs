//! The gateway's stream commit rule, as a caller sees it: a streamed answer is committed to a
//! region at its first event that carries content. Whatever a region sends before that (an
//! empty body, keep-alive comments, a role-only delta) and then loses fails over invisibly;
//! a cut after content ends explicitly, with the `stream_interrupted` event and no `[DONE]`.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, extract::State, response::Response, routing::post};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::json;
use sluice_client::{Client, GeoPoint, Region};
use sluice_gateway::Gateway;

/// How a mock region answers a streamed chat call.
#[derive(Clone, Copy)]
enum Answer {
    /// A 200 event stream with no event at all.
    Empty,
    /// A keep-alive comment and a role-only delta, then the connection breaks.
    PreambleThenCut,
    /// One content event, then the connection breaks.
    ContentThenCut,
    /// A whole answer ending in `[DONE]`.
    Whole,
}

#[derive(Clone)]
struct Mock {
    answer: Answer,
    hits: Arc<AtomicUsize>,
}

fn event(delta: serde_json::Value) -> Bytes {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
    Bytes::from(format!("data: {chunk}\n\n"))
}

async fn chat(State(m): State<Mock>) -> Response {
    m.hits.fetch_add(1, Ordering::SeqCst);
    let ok = |b: &'static [u8]| Ok::<_, std::io::Error>(Bytes::from_static(b));
    let cut = || Err(std::io::Error::other("region died"));
    let parts: Vec<Result<Bytes, std::io::Error>> = match m.answer {
        Answer::Empty => vec![],
        Answer::PreambleThenCut => vec![ok(b": PROCESSING\n\n"), Ok(event(json!({"role": "assistant"}))), cut()],
        Answer::ContentThenCut => vec![Ok(event(json!({"content": "half an"}))), cut()],
        Answer::Whole => vec![
            Ok(event(json!({"role": "assistant"}))),
            Ok(event(json!({"content": "whole answer"}))),
            ok(b"data: [DONE]\n\n"),
        ],
    };
    // Parts go out 50 ms apart, so that a cut never overtakes the bytes before it.
    let body = stream::iter(parts).then(|part| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        part
    });
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(body)).unwrap()
}

async fn start(answer: Answer) -> (Arc<AtomicUsize>, String) {
    let mock = Mock { answer, hits: Arc::default() };
    let hits = Arc::clone(&mock.hits);
    let app = Router::new().route("/v1/chat/completions", post(chat)).with_state(mock);
    let url = common::upstream(app).await;
    (hits, url)
}

/// Seoul answers as `first`, Virginia answers whole; the caller prefers Seoul.
/// Returns the region that served, the attempts, the body and the hits per region.
async fn call(first: Answer) -> (String, String, String, (usize, usize)) {
    let (seoul_hits, seoul) = start(first).await;
    let (virginia_hits, virginia) = start(Answer::Whole).await;
    let client = Client::builder()
        .region(Region::new("seoul", seoul, GeoPoint::new(37.56, 126.97)))
        .region(Region::new("virginia", virginia, GeoPoint::new(38.9, -77.0)))
        .api_key("sk-region-key")
        .active_probing(false)
        .build()
        .unwrap();
    let base = common::serve(Gateway::builder(client).build()).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .header("x-sluice-region", "seoul")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (region, attempts) = (header("x-sluice-region"), header("x-sluice-attempts"));
    // A cut shows as an aborted body after the explicit error event: keep what arrived.
    let mut body = Vec::new();
    let mut r = r;
    while let Ok(Some(chunk)) = r.chunk().await {
        body.extend_from_slice(&chunk);
    }
    let body = String::from_utf8(body).unwrap();
    (region, attempts, body, (seoul_hits.load(Ordering::SeqCst), virginia_hits.load(Ordering::SeqCst)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_event_stream_fails_over_invisibly() {
    let (region, attempts, body, hits) = call(Answer::Empty).await;
    assert_eq!((region.as_str(), attempts.as_str()), ("virginia", "2"));
    assert!(body.contains("whole answer") && body.ends_with("data: [DONE]\n\n"), "{body}");
    assert_eq!(hits, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_before_any_content_fails_over_invisibly() {
    let (region, attempts, body, hits) = call(Answer::PreambleThenCut).await;
    assert_eq!((region.as_str(), attempts.as_str()), ("virginia", "2"));
    // Nothing of Seoul's preamble reached the caller: one role delta, Virginia's.
    assert!(!body.contains("PROCESSING"), "{body}");
    assert_eq!(body.matches("\"role\"").count(), 1, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert_eq!(hits, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_after_content_ends_explicitly_and_is_not_resent() {
    let (region, attempts, body, hits) = call(Answer::ContentThenCut).await;
    assert_eq!((region.as_str(), attempts.as_str()), ("seoul", "1"));
    assert!(body.contains("half an"), "{body}");
    assert!(body.contains("\"code\":\"stream_interrupted\""), "{body}");
    assert!(!body.contains("[DONE]"), "a cut stream must not look complete: {body}");
    assert_eq!(hits, (1, 0), "a committed stream is never re-sent");
}
