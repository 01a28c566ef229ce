//! The access log: one line per call to `/v1/*`, in the application's log output (JSON lines
//! when its subscriber writes JSON, as `sluice serve --log-format json` does), at `info` under
//! the tracing target [`TARGET`]. Turned on with [`GatewayBuilder::access_log`](crate::GatewayBuilder::access_log).
//!
//! Fields: `method`, `path`, `model`, `region`, `attempts`, `status`, `latency_ms` (to the
//! end of the answer's body), `first_chunk_ms` (to the answer's head, which the gateway sends
//! at the first upstream chunk), `tokens` (when the gateway read the usage), `request_id`,
//! `trace_id` (of an incoming W3C `traceparent`).
//! `body` says how the answer's body ended: `complete`, `error`, or `ended` (dropped early: the
//! caller left, or the server stopped at a body end it knew). Never a key, a header value
//! other than these, or a body. The time is the log line's own.

use std::{
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::Request,
    http::{HeaderMap, HeaderName},
    middleware::Next,
    response::Response,
};
use http_body::{Frame, SizeHint};

/// The tracing target of access-log lines (`RUST_LOG=sluice::access=off` silences them).
pub const TARGET: &str = "sluice::access";

/// What the gateway learns about a call that the answer's head does not say: the model asked
/// for (also when the call fails) and the total tokens (at the end of the body). Found in the
/// request's extensions while the access log is on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notes(Arc<NotesInner>);

#[derive(Debug, Default)]
struct NotesInner {
    /// Total tokens plus one; 0 while unknown.
    tokens: AtomicU64,
    model: OnceLock<String>,
}

impl Notes {
    /// Records the call's total tokens.
    pub(crate) fn set_tokens(&self, tokens: u64) {
        self.0.tokens.store(tokens.saturating_add(1), Ordering::Relaxed);
    }

    /// Records the model the call asked for (the first one set stays).
    pub(crate) fn set_model(&self, model: &str) {
        let _ = self.0.model.set(model.chars().take(128).collect());
    }

    fn tokens(&self) -> Option<u64> {
        self.0.tokens.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// The axum middleware the gateway layers on `/v1/*` when the access log is on.
pub(crate) async fn layer(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let incoming_id = header(request.headers(), "x-request-id");
    let trace_id = request
        .headers()
        .get(sluice_client::TraceParent::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(sluice_client::TraceParent::parse)
        .map(|t| t.trace_id_hex());
    let notes = Notes::default();
    request.extensions_mut().insert(notes.clone());
    let response = next.run(request).await;
    let head = response.headers();
    let line = Line {
        method,
        path,
        model: header(head, "x-sluice-model").or_else(|| notes.0.model.get().cloned()),
        region: header(head, "x-sluice-region"),
        attempts: header(head, "x-sluice-attempts"),
        status: response.status().as_u16(),
        request_id: header(head, "x-sluice-request-id").or_else(|| header(head, "x-request-id")).or(incoming_id),
        first_chunk_ms: ms(started),
        trace_id,
        started,
        notes,
        logged: false,
    };
    let left = head.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::new(Logged { body, line, left }))
}

fn header(headers: &HeaderMap, name: &'static str) -> Option<String> {
    headers.get(HeaderName::from_static(name)).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(128).collect())
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

struct Line {
    method: String,
    path: String,
    model: Option<String>,
    region: Option<String>,
    attempts: Option<String>,
    status: u16,
    request_id: Option<String>,
    first_chunk_ms: f64,
    trace_id: Option<String>,
    started: Instant,
    notes: Notes,
    logged: bool,
}

impl Line {
    fn emit(&mut self, outcome: &'static str) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = %self.path,
            model = %dash(&self.model),
            region = %dash(&self.region),
            attempts = %dash(&self.attempts),
            status = self.status,
            latency_ms = ms(self.started),
            first_chunk_ms = self.first_chunk_ms,
            tokens = self.notes.tokens(),
            request_id = %dash(&self.request_id),
            trace_id = %dash(&self.trace_id),
            body = outcome,
            "access"
        );
    }
}

/// The response body, passed through; logs the line when it ends, fails or is dropped.
struct Logged {
    body: Body,
    line: Line,
    /// Bytes still to send when the answer has a `content-length`: the server stops polling
    /// at that length, so a drop at zero is a complete body.
    left: Option<u64>,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(left)) = (&polled, self.left.as_mut())
            && let Some(data) = frame.data_ref()
        {
            *left = left.saturating_sub(data.len() as u64);
        }
        match &polled {
            Poll::Ready(None) => self.line.emit("complete"),
            Poll::Ready(Some(Err(_))) => self.line.emit("error"),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // Dropped without a final poll: the server stopped at the body's known end, or the
        // caller left.
        let how = if self.body.is_end_stream() || self.left == Some(0) { "complete" } else { "ended" };
        self.line.emit(how);
    }
}
