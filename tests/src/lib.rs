//! Shared fixtures for the workspace integration tests: loopback HTTP servers that play
//! OpenAI-compatible regions, with scripted answers and hit counters.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::{StreamExt, stream};
use parking_lot::Mutex;
use sluice_region_model::{GeoPoint, Region};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

/// How a mock region answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A normal answer: a completion, a stream ending in `[DONE]` (3 chunks), or a model list.
    Ok,
    /// An error status with an OpenAI error body and the given extra headers.
    Status(u16, Vec<(&'static str, String)>),
    /// Accept the request and never answer.
    Hang,
    /// Wait, then answer as the inner reply.
    Delay(Duration, Box<Reply>),
    /// Stream `chunks` chunks, then cut the connection without `[DONE]`.
    StreamCut {
        /// Chunks sent before the cut.
        chunks: usize,
    },
    /// Send the stream head, then close without any chunk.
    StreamEmptyCut,
    /// A 200 JSON head and the first half of a completion, then the connection breaks.
    BodyCut,
    /// Send the stream head at once, then wait before the first chunk.
    StreamSlowFirst(Duration),
    /// Any status, content type and body, bytes unchanged.
    Raw {
        /// The status.
        status: u16,
        /// The `content-type`.
        content_type: &'static str,
        /// The body.
        body: String,
    },
    /// A `text/event-stream` answer made of these raw parts (each sent as one write, 20 ms
    /// apart), then ended as `end` says.
    Sse {
        /// The raw parts, such as `"data: {...}\n\n"` or `": keep-alive\n\n"`.
        parts: Vec<String>,
        /// How the body ends after the parts.
        end: SseEnd,
    },
}

/// How a [`Reply::Sse`] body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseEnd {
    /// A clean end of the body.
    Close,
    /// The connection is aborted.
    Cut,
    /// Nothing more is ever sent.
    Stall,
}

/// One chat chunk event carrying `text` as content, as `data: {...}\n\n`.
pub fn content_event(text: &str) -> String {
    let v = serde_json::json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "mock",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
    });
    format!("data: {v}\n\n")
}

/// One chat chunk event with only the assistant role and no content.
pub fn role_event() -> String {
    let v = serde_json::json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "mock",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}],
    });
    format!("data: {v}\n\n")
}

/// Counts and script of one mock region.
#[derive(Debug, Default)]
pub struct MockState {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    models_default: Mutex<Option<Reply>>,
    chat_hits: AtomicUsize,
    model_hits: AtomicUsize,
    /// Authorization headers seen.
    pub auth: Mutex<Vec<String>>,
    /// Request bodies seen on `/chat/completions`.
    pub bodies: Mutex<Vec<Bytes>>,
    /// Notified on every request.
    pub hit: Notify,
}

/// A loopback server playing one region.
#[derive(Debug)]
pub struct MockRegion {
    /// The region id (also used in answers).
    pub id: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Shared counters and script.
    pub state: Arc<MockState>,
    task: JoinHandle<()>,
}

impl MockRegion {
    /// Starts a region that answers `Ok` unless scripted otherwise.
    pub async fn start(id: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(MockState::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state((id, Arc::clone(&state)));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { id, addr, state, task }
    }

    /// The endpoint base URL, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A `Region` for this server at `location`.
    pub fn region(&self, location: GeoPoint) -> Region {
        Region::new(self.id, self.url(), location).with_name(self.id)
    }

    /// Queues replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().extend(replies);
    }

    /// Sets the reply used when the script is empty.
    pub fn always(&self, reply: Reply) {
        *self.state.default.lock() = Some(reply);
    }

    /// Sets how `/models` answers from now on (otherwise it follows the chat script).
    pub fn models_always(&self, reply: Reply) {
        *self.state.models_default.lock() = Some(reply);
    }

    /// Requests to `/chat/completions` so far.
    pub fn chat_hits(&self) -> usize {
        self.state.chat_hits.load(Ordering::SeqCst)
    }

    /// Requests to `/models` so far.
    pub fn model_hits(&self) -> usize {
        self.state.model_hits.load(Ordering::SeqCst)
    }

    /// Stops serving: new connections are refused. Open connections are dropped.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for MockRegion {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on which nothing listens: connections are refused.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr
}

type AppState = (&'static str, Arc<MockState>);

fn next_reply(state: &MockState) -> Reply {
    state.script.lock().pop_front().or_else(|| state.default.lock().clone()).unwrap_or(Reply::Ok)
}

async fn chat(State((id, state)): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    state.chat_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        state.auth.lock().push(auth.to_owned());
    }
    state.bodies.lock().push(body.clone());
    state.hit.notify_waiters();
    let streaming = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("stream").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    let reply = next_reply(&state);
    answer(id, reply, streaming).await
}

async fn models(State((id, state)): State<AppState>) -> Response {
    state.model_hits.fetch_add(1, Ordering::SeqCst);
    state.hit.notify_waiters();
    let reply = state.models_default.lock().clone().unwrap_or_else(|| next_reply(&state));
    match reply {
        Reply::Ok => json(
            StatusCode::OK,
            serde_json::json!({"object": "list", "data": [{"id": "mock-1", "object": "model", "owned_by": id}]}),
        ),
        other => Box::pin(answer(id, other, false)).await,
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, [("content-type", "application/json")], v.to_string()).into_response()
}

fn chunk(id: &str, i: usize) -> String {
    let v = serde_json::json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "mock",
        "choices": [{"index": 0, "delta": {"content": format!("{id}-{i} ")}, "finish_reason": null}],
    });
    format!("data: {v}\n\n")
}

fn sse(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("valid response")
}

async fn answer(id: &'static str, reply: Reply, streaming: bool) -> Response {
    match reply {
        Reply::Ok if streaming => {
            let mut parts: Vec<Result<Bytes, Infallible>> = (0..3).map(|i| Ok(Bytes::from(chunk(id, i)))).collect();
            parts.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
            sse(Body::from_stream(stream::iter(parts)))
        }
        Reply::Ok => json(
            StatusCode::OK,
            serde_json::json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "mock",
                "system_fingerprint": "fp-mock",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("hello from {id}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            }),
        ),
        Reply::Status(code, headers) => {
            let status = StatusCode::from_u16(code).expect("valid status");
            let mut resp = json(
                status,
                serde_json::json!({"error": {"message": format!("mock {code}"), "type": "mock_error", "code": code}}),
            );
            for (k, v) in headers {
                resp.headers_mut().insert(HeaderName::from_static(k), HeaderValue::from_str(&v).expect("header value"));
            }
            resp
        }
        Reply::Hang => std::future::pending().await,
        Reply::Delay(d, inner) => {
            tokio::time::sleep(d).await;
            Box::pin(answer(id, *inner, streaming)).await
        }
        Reply::StreamCut { chunks } => {
            // Pause before the cut so that the head and the chunks are on the wire first.
            let parts = stream::iter((0..chunks).map(move |i| Ok::<_, std::io::Error>(Bytes::from(chunk(id, i)))));
            sse(Body::from_stream(parts.chain(cut_later())))
        }
        Reply::StreamSlowFirst(wait) => {
            let first = stream::once(async move {
                tokio::time::sleep(wait).await;
                Ok::<_, Infallible>(Bytes::from(chunk(id, 0)))
            });
            let rest = stream::iter([Ok(Bytes::from_static(b"data: [DONE]\n\n"))]);
            sse(Body::from_stream(first.chain(rest)))
        }
        Reply::StreamEmptyCut => sse(Body::from_stream(cut_later())),
        Reply::BodyCut => {
            let half = stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"{\"id\":\"chatcmpl-cut\",\"choices\":["))
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(half.chain(cut_later())))
                .expect("valid response")
        }
        Reply::Raw { status, content_type, body } => Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("valid response"),
        Reply::Sse { parts, end } => {
            let parts = stream::iter(parts).then(|p| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(Bytes::from(p))
            });
            match end {
                SseEnd::Close => sse(Body::from_stream(parts)),
                SseEnd::Cut => sse(Body::from_stream(parts.chain(cut_later()))),
                SseEnd::Stall => sse(Body::from_stream(parts.chain(stream::pending()))),
            }
        }
    }
}

/// A body stream that fails after a pause, aborting the connection mid-body.
fn cut_later() -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    stream::once(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(std::io::Error::other("cut"))
    })
}
