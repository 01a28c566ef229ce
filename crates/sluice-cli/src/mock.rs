//! OpenAI-compatible mock regions on loopback, for the demo, the benchmark and tests.
//!
//! A [`MockRegion`] answers `POST /v1/chat/completions` (plain and streamed) and
//! `GET /v1/models` after a configurable round trip, and can be switched at run time:
//! down (connections are dropped, open ones included), rate limited (429 with
//! Retry-After), or cutting streams after some chunks.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::stream;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A loopback HTTP server playing one OpenAI-compatible region.
///
/// Dropping it stops the server.
#[derive(Debug)]
pub struct MockRegion {
    id: String,
    name: String,
    addr: SocketAddr,
    state: Arc<MockState>,
    task: JoinHandle<()>,
}

/// The switches and counters of one mock region.
#[derive(Debug)]
struct MockState {
    id: String,
    name: String,
    latency_us: AtomicU64,
    chunks: AtomicUsize,
    chunk_interval_us: AtomicU64,
    down: AtomicBool,
    epoch: AtomicU64,
    rate_limit_secs: AtomicU64,
    cut_after: AtomicUsize,
    chat_hits: AtomicU64,
    model_hits: AtomicU64,
    last_body: Mutex<Option<Bytes>>,
    last_auth: Mutex<Option<String>>,
    last_traceparent: Mutex<Option<String>>,
}

// ===== impl MockRegion =====

impl MockRegion {
    /// Starts a region on `127.0.0.1` (a free port) that answers after `latency`.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(id: &str, name: &str, latency: Duration) -> io::Result<Self> {
        Self::start_on(id, name, latency, "127.0.0.1:0".parse().expect("valid address")).await
    }

    /// Starts a region on a given address (used to bring a region back on its old port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start_on(id: &str, name: &str, latency: Duration, addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState {
            id: id.to_owned(),
            name: name.to_owned(),
            latency_us: AtomicU64::new(duration_us(latency)),
            chunks: AtomicUsize::new(4),
            chunk_interval_us: AtomicU64::new(2_000),
            down: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            rate_limit_secs: AtomicU64::new(0),
            cut_after: AtomicUsize::new(0),
            chat_hits: AtomicU64::new(0),
            model_hits: AtomicU64::new(0),
            last_body: Mutex::new(None),
            last_auth: Mutex::new(None),
            last_traceparent: Mutex::new(None),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state(Arc::clone(&state));
        let listener = KillableListener { inner: listener, state: Arc::clone(&state) };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { id: id.to_owned(), name: name.to_owned(), addr, state, task })
    }

    /// The region id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint base URL, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Takes the region down (every connection, open or new, is dropped) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Whether the region is down.
    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// Answers chat calls with 429 and `Retry-After: secs` (models calls still succeed), or
    /// stops doing so with `None`.
    pub fn set_rate_limited(&self, retry_after: Option<Duration>) {
        let secs = retry_after.map_or(0, |d| d.as_secs().max(1));
        self.state.rate_limit_secs.store(secs, Ordering::SeqCst);
    }

    /// Sets the simulated round trip, applied before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_us.store(duration_us(latency), Ordering::SeqCst);
    }

    /// Sets how streams are sent: `chunks` content chunks, `interval` apart.
    pub fn set_stream(&self, chunks: usize, interval: Duration) {
        self.state.chunks.store(chunks.max(1), Ordering::SeqCst);
        self.state.chunk_interval_us.store(duration_us(interval), Ordering::SeqCst);
    }

    /// Cuts every stream after `chunks` chunks, without `[DONE]`; `None` turns that off.
    pub fn set_cut_after(&self, chunks: Option<usize>) {
        self.state.cut_after.store(chunks.map_or(0, |c| c.max(1)), Ordering::SeqCst);
    }

    /// Chat calls received.
    pub fn chat_hits(&self) -> u64 {
        self.state.chat_hits.load(Ordering::SeqCst)
    }

    /// Models calls received (active probes land here).
    pub fn model_hits(&self) -> u64 {
        self.state.model_hits.load(Ordering::SeqCst)
    }

    /// The body of the last chat call, unchanged.
    pub fn last_body(&self) -> Option<Bytes> {
        self.state.last_body.lock().clone()
    }

    /// The `authorization` header of the last chat call.
    pub fn last_authorization(&self) -> Option<String> {
        self.state.last_auth.lock().clone()
    }

    /// The `traceparent` header of the last chat call.
    pub fn last_traceparent(&self) -> Option<String> {
        self.state.last_traceparent.lock().clone()
    }
}

impl Drop for MockRegion {
    fn drop(&mut self) {
        self.set_down(true);
        self.task.abort();
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// ===== handlers =====

type AppState = Arc<MockState>;

async fn pause(state: &MockState) {
    let us = state.latency_us.load(Ordering::Relaxed);
    if us > 0 {
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn chat(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    state.chat_hits.fetch_add(1, Ordering::Relaxed);
    *state.last_auth.lock() = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    *state.last_traceparent.lock() = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    *state.last_body.lock() = Some(body.clone());
    pause(&state).await;
    let retry = state.rate_limit_secs.load(Ordering::Relaxed);
    if retry > 0 {
        let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "mock region is rate limited");
        resp.headers_mut().insert(header::RETRY_AFTER, retry.into());
        return resp;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error(StatusCode::BAD_REQUEST, "invalid_request_error", "body is not a JSON object"),
    };
    // As OpenAI does, a request without a list of messages is the caller's error.
    if !request.get("messages").is_some_and(Value::is_array) {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "'messages' must be an array");
    }
    let model = request.get("model").and_then(Value::as_str).unwrap_or("mock-model").to_owned();
    let prompt = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let short: String = prompt.chars().take(60).collect();
    let answer = format!("Hello from {} ({}). You said: {short}", state.name, state.id);
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream_answer(&state, model, answer);
    }
    let body = json!({
        "id": "chatcmpl-sluice-mock",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model,
        "system_fingerprint": "fp_sluice_mock",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn chunk_event(model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    let v = json!({
        "id": "chatcmpl-sluice-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": model,
        "system_fingerprint": "fp_sluice_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    });
    Bytes::from(format!("data: {v}\n\n"))
}

fn stream_answer(state: &MockState, model: String, answer: String) -> Response {
    let n = state.chunks.load(Ordering::Relaxed).max(1);
    let interval = Duration::from_micros(state.chunk_interval_us.load(Ordering::Relaxed));
    let cut = state.cut_after.load(Ordering::Relaxed);
    // Split the answer into `n` pieces on word boundaries.
    let words: Vec<&str> = answer.split_inclusive(' ').collect();
    let per = words.len().div_ceil(n).max(1);
    let mut events: Vec<Bytes> = vec![chunk_event(&model, json!({"role": "assistant", "content": ""}), None)];
    for piece in words.chunks(per) {
        events.push(chunk_event(&model, json!({"content": piece.concat()}), None));
    }
    events.push(chunk_event(&model, json!({}), Some("stop")));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let cut_at = (cut > 0).then_some(cut);
    let body =
        stream::unfold((events.into_iter().enumerate(), cut_at, interval), |(mut it, cut_at, interval)| async move {
            let (i, event) = it.next()?;
            if cut_at == Some(i) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Some((Err(io::Error::other("mock stream cut")), (it, None, interval)));
            }
            if i > 1 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            Some((Ok(event), (it, cut_at, interval)))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("a valid response")
}

async fn models(State(state): State<AppState>) -> Response {
    state.model_hits.fetch_add(1, Ordering::Relaxed);
    pause(&state).await;
    let body = json!({
        "object": "list",
        "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000u64, "owned_by": state.id},
            {"id": "sluice-mock-1", "object": "model", "created": 1_700_000_000u64, "owned_by": state.id}
        ]
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

// ===== the killable listener =====

/// Accepts connections unless the region is down; hands out streams that fail once the
/// region goes down, so that open keep-alive connections die with it.
struct KillableListener {
    inner: TcpListener,
    state: Arc<MockState>,
}

struct KillableIo {
    inner: TcpStream,
    state: Arc<MockState>,
    epoch: u64,
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if self.state.down.load(Ordering::SeqCst) {
                        // Refuse: close at once.
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let epoch = self.state.epoch.load(Ordering::SeqCst);
                    return (KillableIo { inner: stream, state: Arc::clone(&self.state), epoch }, addr);
                }
                // Out of file descriptors and the like: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl KillableIo {
    fn check(&self) -> io::Result<()> {
        if self.state.epoch.load(Ordering::Relaxed) != self.epoch && self.state.down.load(Ordering::Relaxed) {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "mock region is down"))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
