//! The client's overhead over a direct reqwest call to the same loopback mock, in one run.
//!
//! Two passes:
//! * criterion measures the median of each path (`direct` vs `sluice`), non-streaming and
//!   streaming to the first chunk;
//! * an HDR-histogram pass runs 20,000 calls of each path, interleaved, and prints p50, p99
//!   and p99.9 of both and their difference (the overhead), which criterion's median does not
//!   show.
//!
//! The mock runs on its own runtime thread so that it does not share the caller's worker.

use std::{
    hint::black_box,
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{Router, body::Body, response::Response, routing::post};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use sluice_client::{ChatCompletion, ChatCompletionRequest, ChatMessage, Client, Region};
use sluice_region_model::GeoPoint;

const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
const CHUNK: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n";

async fn chat(body: Bytes) -> Response {
    if body.windows(13).any(|w| w == b"\"stream\":true") {
        Response::builder().header("content-type", "text/event-stream").body(Body::from(CHUNK)).expect("response")
    } else {
        Response::builder().header("content-type", "application/json").body(Body::from(COMPLETION)).expect("response")
    }
}

/// Starts the mock on a dedicated thread with its own runtime.
fn start_mock() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send addr");
            axum::serve(listener, Router::new().route("/v1/chat/completions", post(chat))).await.expect("serve");
        });
    });
    rx.recv().expect("mock address")
}

struct Paths {
    client: Client,
    direct: reqwest::Client,
    url: String,
    plain: Bytes,
    stream: Bytes,
}

impl Paths {
    fn new(addr: SocketAddr) -> Self {
        let client = Client::builder()
            .region(Region::new("local", format!("http://{addr}/v1"), GeoPoint::new(37.5, 127.0)))
            .api_key("sk-bench")
            .active_probing(false)
            .build()
            .expect("client");
        let direct = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .expect("reqwest");
        let mut req = request();
        let plain = Bytes::from(serde_json::to_vec(&req).expect("json"));
        req.stream = Some(true);
        let stream = Bytes::from(serde_json::to_vec(&req).expect("json"));
        Self { client, direct, url: format!("http://{addr}/v1/chat/completions"), plain, stream }
    }

    async fn direct_plain(&self) -> ChatCompletion {
        let resp = self
            .direct
            .post(&self.url)
            .bearer_auth("sk-bench")
            .header("content-type", "application/json")
            .body(self.plain.clone())
            .send()
            .await
            .expect("send");
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("parse")
    }

    async fn sluice_plain(&self) -> ChatCompletion {
        self.client.chat_completions(request()).await.expect("call").body
    }

    async fn direct_first_chunk(&self) -> Bytes {
        let resp = self
            .direct
            .post(&self.url)
            .bearer_auth("sk-bench")
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(self.stream.clone())
            .send()
            .await
            .expect("send");
        let mut body = resp.bytes_stream();
        let first = body.next().await.expect("chunk").expect("chunk");
        while body.next().await.is_some() {}
        first
    }

    async fn sluice_first_chunk(&self) -> usize {
        let mut stream = self.client.chat_completions_stream(request()).await.expect("stream");
        let first = stream.next().await.expect("chunk").expect("chunk");
        while stream.next().await.is_some() {}
        first.choices.len()
    }
}

fn request() -> ChatCompletionRequest {
    ChatCompletionRequest::new("m", vec![ChatMessage::user("hi")])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn medians(c: &mut Criterion) {
    let rt = runtime();
    let paths = rt.block_on(async { Paths::new(start_mock()) });
    let mut group = c.benchmark_group("client-overhead");
    group.bench_function("direct/plain", |b| b.to_async(&rt).iter(|| async { black_box(paths.direct_plain().await) }));
    group.bench_function("sluice/plain", |b| b.to_async(&rt).iter(|| async { black_box(paths.sluice_plain().await) }));
    group.bench_function("direct/first-chunk", |b| {
        b.to_async(&rt).iter(|| async { black_box(paths.direct_first_chunk().await) })
    });
    group.bench_function("sluice/first-chunk", |b| {
        b.to_async(&rt).iter(|| async { black_box(paths.sluice_first_chunk().await) })
    });
    group.finish();
}

const TAIL_CALLS: u64 = 20_000;

/// The HDR pass: interleaves the two paths call by call so that both see the same machine.
fn tails(_: &mut Criterion) {
    let rt = runtime();
    let paths = rt.block_on(async { Paths::new(start_mock()) });
    for (name, streaming) in [("plain", false), ("first-chunk", true)] {
        let mut direct = Histogram::<u64>::new(3).expect("histogram");
        let mut sluice = Histogram::<u64>::new(3).expect("histogram");
        rt.block_on(async {
            // Warm the pools.
            for _ in 0..500 {
                paths.direct_plain().await;
                paths.sluice_plain().await;
            }
            for _ in 0..TAIL_CALLS {
                let t = Instant::now();
                if streaming {
                    black_box(paths.direct_first_chunk().await);
                } else {
                    black_box(paths.direct_plain().await);
                }
                direct.record(t.elapsed().as_nanos() as u64).expect("record");
                let t = Instant::now();
                if streaming {
                    black_box(paths.sluice_first_chunk().await);
                } else {
                    black_box(paths.sluice_plain().await);
                }
                sluice.record(t.elapsed().as_nanos() as u64).expect("record");
            }
        });
        println!("client-overhead-tail/{name}: {TAIL_CALLS} calls each, interleaved");
        println!("  percentile     direct      sluice    overhead   ratio");
        for p in [50.0, 99.0, 99.9] {
            let (d, s) = (direct.value_at_quantile(p / 100.0), sluice.value_at_quantile(p / 100.0));
            println!(
                "  p{p:<5}    {:>8.1}µs  {:>8.1}µs  {:>8.1}µs   {:.2}x",
                d as f64 / 1e3,
                s as f64 / 1e3,
                (s as f64 - d as f64) / 1e3,
                s as f64 / d as f64
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = medians, tails
}
criterion_main!(benches);
