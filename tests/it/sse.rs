//! Stream commit and end rules, the same for the typed stream and raw (proxied) calls.
//!
//! Each test here reproduces a defect; it failed before its fix.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sluice_client::{CallOptions, Client, ErrorKind, RawRequest, Timeouts};
use sluice_integration::{MockRegion, Reply, SseEnd, content_event, role_event};

use crate::{SEOUL, TOKYO, builder, request};

fn prefer(id: &str) -> CallOptions {
    CallOptions::new().prefer_region(id)
}

fn sse(parts: &[String], end: SseEnd) -> Reply {
    Reply::Sse { parts: parts.to_vec(), end }
}

/// Two regions: `seoul` answers with `first`, `tokyo` normally.
async fn pair(first: Reply) -> (MockRegion, MockRegion, Client) {
    let a = MockRegion::start("seoul").await;
    a.always(first);
    let b = MockRegion::start("tokyo").await;
    let client = builder()
        .regions([a.region(SEOUL), b.region(TOKYO)])
        .timeouts(
            Timeouts::default()
                .attempt(Duration::from_secs(30))
                .total(Duration::from_secs(60))
                .idle(Duration::from_millis(500)),
        )
        .build()
        .unwrap();
    (a, b, client)
}

/// A raw streaming chat call, collected: the bytes, or the error the body ended with.
async fn raw_stream(client: &Client) -> (String, Result<String, sluice_client::Error>) {
    let body = Bytes::from_static(br#"{"model":"m","messages":[],"stream":true}"#);
    let request = RawRequest {
        method: http::Method::POST,
        path: "chat/completions".into(),
        headers: http::HeaderMap::new(),
        body,
    };
    let resp = client.raw(request, &prefer("seoul")).await.unwrap();
    let region = resp.meta.region.to_string();
    let mut body = resp.body;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return (region, Err(e)),
        }
    }
    (region, Ok(String::from_utf8(out).unwrap()))
}

/// The typed stream's text, or its error.
async fn typed_stream(client: &Client) -> (String, Result<String, sluice_client::Error>) {
    let mut stream = client.chat_completions_stream_with(request(), &prefer("seoul")).await.unwrap();
    let region = stream.meta().region.to_string();
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => text.push_str(chunk.text().unwrap_or_default()),
            Err(e) => return (region, Err(e)),
        }
    }
    (region, Ok(text))
}

/// Defect 5: an empty 200 event stream committed a raw call (and so the proxy) to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_event_stream_fails_over() {
    let (a, b, client) = pair(sse(&[], SseEnd::Close)).await;
    let (region, body) = raw_stream(&client).await;
    assert_eq!(region, "tokyo");
    assert!(body.unwrap().ends_with("data: [DONE]\n\n"));
    let (region, text) = typed_stream(&client).await;
    assert_eq!(region, "tokyo");
    assert_eq!(text.unwrap(), "tokyo-0 tokyo-1 tokyo-2 ");
    assert_eq!((a.chat_hits(), b.chat_hits()), (2, 2));
}

/// Defect 5: a first keep-alive comment committed the call; the cut after it was final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_comment_does_not_commit() {
    let (a, b, client) = pair(sse(&[": PROCESSING\n\n".into()], SseEnd::Cut)).await;
    let (region, body) = raw_stream(&client).await;
    assert_eq!(region, "tokyo");
    assert!(body.is_ok());
    let (region, text) = typed_stream(&client).await;
    assert_eq!((region.as_str(), text.unwrap().as_str()), ("tokyo", "tokyo-0 tokyo-1 tokyo-2 "));
    assert_eq!((a.chat_hits(), b.chat_hits()), (2, 2));
}

/// A role-only first delta carries no content: a cut after it still fails over unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_only_delta_does_not_commit() {
    let (a, b, client) = pair(sse(&[role_event()], SseEnd::Cut)).await;
    let (region, body) = raw_stream(&client).await;
    assert_eq!(region, "tokyo");
    assert!(!body.unwrap().contains("\"role\""), "the held-back delta of seoul never reaches the caller");
    let (region, text) = typed_stream(&client).await;
    assert_eq!((region.as_str(), text.unwrap().as_str()), ("tokyo", "tokyo-0 tokyo-1 tokyo-2 "));
    assert_eq!((a.chat_hits(), b.chat_hits()), (2, 2));
}

/// Held-back events are delivered, in order, once content commits the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_back_events_come_first_once_committed() {
    let parts = [role_event(), ": ping\n\n".into(), content_event("hi"), "data: [DONE]\n\n".into()];
    let (a, b, client) = pair(sse(&parts, SseEnd::Close)).await;
    let (region, body) = raw_stream(&client).await;
    assert_eq!(region, "seoul");
    assert_eq!(body.unwrap(), parts.concat(), "bytes unchanged");
    let (_, text) = typed_stream(&client).await;
    assert_eq!(text.unwrap(), "hi");
    assert_eq!((a.chat_hits(), b.chat_hits()), (2, 0));
}

/// Defect 6: model text containing `[DONE]`, then a clean close, looked complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_inside_the_text_is_not_the_end() {
    let (a, b, client) = pair(sse(&[content_event("say [DONE] now")], SseEnd::Close)).await;
    let (region, body) = raw_stream(&client).await;
    assert_eq!(region, "seoul");
    let err = body.expect_err("a stream without its end event is interrupted");
    assert_eq!(err.kind(), &ErrorKind::StreamInterrupted { region: "seoul".into() });
    let (_, text) = typed_stream(&client).await;
    assert!(matches!(text.unwrap_err().kind(), ErrorKind::StreamInterrupted { .. }));
    // Committed at the content: never re-sent.
    assert_eq!((a.chat_hits(), b.chat_hits()), (2, 0));
}

/// Defect 4: a stream that stalls after its first content hung until the total deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_after_content_ends_at_the_idle_timeout() {
    let (a, b, client) = pair(sse(&[content_event("a")], SseEnd::Stall)).await;
    let (_, body) = raw_stream(&client).await;
    let err = body.expect_err("a stalled stream fails");
    assert_eq!(err.kind(), &ErrorKind::StreamInterrupted { region: "seoul".into() });
    let (_, text) = typed_stream(&client).await;
    assert!(matches!(text.unwrap_err().kind(), ErrorKind::StreamInterrupted { .. }));
    // Charged to the region, once per stream.
    assert_eq!(client.snapshot().nodes()[0].metrics().failures(), 2);
    assert_eq!((a.chat_hits(), b.chat_hits()), (2, 0));
}

/// Keep-alive comments reset the idle timer: a slow but living stream completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_keep_a_slow_stream_alive() {
    let mut parts = vec![content_event("a")];
    parts.extend((0..40).map(|_| ": keep-alive\n\n".to_owned()));
    parts.push(content_event("b"));
    parts.push("data: [DONE]\n\n".into());
    // 42 parts 20 ms apart: longer than the 500 ms idle timeout, no gap near it.
    let (a, b, client) = pair(sse(&parts, SseEnd::Close)).await;
    let (_, text) = typed_stream(&client).await;
    assert_eq!(text.unwrap(), "ab");
    assert_eq!((a.chat_hits(), b.chat_hits()), (1, 0));
}

/// A long answer is not a failure: with `streams_outlive_total`, a stream that keeps flowing
/// runs past `total` (only the idle timeout can end it); without it, `total` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flowing_stream_may_outlive_total_when_allowed() {
    // 100 content parts 20 ms apart: two seconds, well past a 1 s total (which leaves ample
    // time for the first part to commit the stream).
    let mut parts: Vec<String> = (0..100).map(|_| content_event("x")).collect();
    parts.push("data: [DONE]\n\n".into());
    let region = MockRegion::start("seoul").await;
    region.always(sse(&parts, SseEnd::Close));
    let client = |outlive: bool| {
        builder()
            .regions([region.region(SEOUL)])
            .timeouts(
                Timeouts::default()
                    .total(Duration::from_secs(1))
                    .idle(Duration::from_secs(20))
                    .streams_outlive_total(outlive),
            )
            .build()
            .unwrap()
    };
    let bounded = client(false);
    let (_, text) = typed_stream(&bounded).await;
    assert_eq!(text.unwrap_err().kind(), &ErrorKind::DeadlineExceeded, "total bounds a stream by default");
    let (_, body) = raw_stream(&bounded).await;
    assert_eq!(body.unwrap_err().kind(), &ErrorKind::DeadlineExceeded);

    let allowed = client(true);
    let (_, text) = typed_stream(&allowed).await;
    assert_eq!(text.unwrap(), "x".repeat(100));
    let (_, body) = raw_stream(&allowed).await;
    assert!(body.unwrap().ends_with("data: [DONE]\n\n"));
    // A stall still ends it, at the idle timeout (past `total`: a deadline error would mean
    // `total` ended it).
    let stalled = MockRegion::start("seoul").await;
    stalled.always(sse(&[content_event("a")], SseEnd::Stall));
    let client = builder()
        .regions([stalled.region(SEOUL)])
        .timeouts(
            Timeouts::default()
                .total(Duration::from_secs(1))
                .idle(Duration::from_millis(1500))
                .streams_outlive_total(true),
        )
        .build()
        .unwrap();
    let (_, text) = typed_stream(&client).await;
    assert!(matches!(text.unwrap_err().kind(), ErrorKind::StreamInterrupted { .. }));
}
