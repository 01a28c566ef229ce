//! Committed streams: typed chat chunks and raw bodies.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use sluice_health::Outcome;
use sluice_region_model::InFlightGuard;
use tokio::time::Sleep;

use crate::{
    ChatCompletionChunk, Error, ErrorKind, ResponseMeta,
    client::{AttemptError, Inner},
    rescue::now,
};

type BoxError = Box<dyn StdError + Send + Sync>;
type EventItem = Result<Event, EventStreamError<reqwest::Error>>;
type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// SSE events of one upstream answer.
pub(crate) struct EventStream(Pin<Box<dyn Stream<Item = EventItem> + Send>>);

impl EventStream {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        Self(Box::pin(response.bytes_stream().eventsource()))
    }
}

/// What one SSE event means for a chat stream.
enum Parsed {
    Chunk(Box<ChatCompletionChunk>),
    Done,
    Failed(BoxError),
}

fn parse_event(event: &Event) -> Parsed {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Parsed::Done;
    }
    match serde_json::from_str::<serde_json::Value>(data) {
        Ok(v) if v.get("error").is_some() => Parsed::Failed(format!("error event: {}", v["error"]).into()),
        Ok(v) => match serde_json::from_value::<ChatCompletionChunk>(v) {
            Ok(chunk) => Parsed::Chunk(Box::new(chunk)),
            Err(e) => Parsed::Failed(e.into()),
        },
        Err(e) => Parsed::Failed(e.into()),
    }
}

/// Waits for the first chunk (or `[DONE]`), within `limit`. Anything else fails the attempt,
/// which is then retried elsewhere: nothing has reached the caller yet.
pub(crate) async fn first_event(
    events: &mut EventStream,
    limit: Duration,
) -> Result<Option<ChatCompletionChunk>, AttemptError> {
    let next = tokio::time::timeout(limit, events.0.next()).await.map_err(|_| AttemptError::FirstChunk(None))?;
    match next {
        None => Err(AttemptError::FirstChunk(Some("stream ended before its first chunk".into()))),
        Some(Err(e)) => Err(AttemptError::FirstChunk(Some(e.into()))),
        Some(Ok(event)) => match parse_event(&event) {
            Parsed::Chunk(chunk) => Ok(Some(*chunk)),
            Parsed::Done => Ok(None),
            Parsed::Failed(e) => Err(AttemptError::FirstChunk(Some(e))),
        },
    }
}

/// Reports a committed stream's failure to health and builds the error item.
fn cut(inner: &Inner, meta: &ResponseMeta, kind: ErrorKind, outcome: Outcome, source: Option<BoxError>) -> Error {
    inner.health.record(meta.node, outcome, now());
    tracing::warn!(region = %meta.region, "stream cut after its first chunk");
    let error = Error::new(kind);
    match source {
        Some(s) => error.with_source(s),
        None => error,
    }
}

/// A committed chat completion stream: typed chunks until `[DONE]`.
///
/// A stream cut before `[DONE]` (the connection drops, an error event arrives, a chunk does
/// not parse, or the call's deadline passes) yields one [`ErrorKind::StreamInterrupted`] (or
/// [`ErrorKind::DeadlineExceeded`]) item, is reported to health, and then ends. The node's
/// in-flight count is held until the stream ends or is dropped.
pub struct ChatStream {
    inner: Arc<Inner>,
    meta: ResponseMeta,
    events: EventStream,
    first: Option<ChatCompletionChunk>,
    guard: Option<InFlightGuard>,
    deadline: Pin<Box<Sleep>>,
    done: bool,
}

impl ChatStream {
    pub(crate) fn new(
        inner: Arc<Inner>,
        meta: ResponseMeta,
        events: EventStream,
        first: Option<ChatCompletionChunk>,
        guard: InFlightGuard,
        deadline: tokio::time::Instant,
    ) -> Self {
        let done = first.is_none();
        Self {
            inner,
            meta,
            events,
            first,
            guard: (!done).then_some(guard),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done,
        }
    }

    /// How the stream was set up: region, attempts, time to first chunk.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    fn fail(
        &mut self,
        kind: ErrorKind,
        outcome: Outcome,
        source: Option<BoxError>,
    ) -> Poll<Option<Result<ChatCompletionChunk, Error>>> {
        self.done = true;
        self.guard = None;
        Poll::Ready(Some(Err(cut(&self.inner, &self.meta, kind, outcome, source))))
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatCompletionChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return self.fail(ErrorKind::DeadlineExceeded, Outcome::Timeout, None);
        }
        let region = Arc::clone(&self.meta.region);
        match ready!(self.events.0.as_mut().poll_next(cx)) {
            Some(Ok(event)) => match parse_event(&event) {
                Parsed::Chunk(chunk) => Poll::Ready(Some(Ok(*chunk))),
                Parsed::Done => {
                    self.done = true;
                    self.guard = None;
                    Poll::Ready(None)
                }
                Parsed::Failed(e) => self.fail(
                    ErrorKind::StreamInterrupted { region },
                    Outcome::ServerError { status: 502, retry_after: None },
                    Some(e),
                ),
            },
            Some(Err(e)) => self.fail(ErrorKind::StreamInterrupted { region }, Outcome::ConnectError, Some(e.into())),
            None => self.fail(
                ErrorKind::StreamInterrupted { region },
                Outcome::ConnectError,
                Some("stream ended without [DONE]".into()),
            ),
        }
    }
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream").field("meta", &self.meta).field("done", &self.done).finish_non_exhaustive()
    }
}

/// A raw call: method, path relative to the region's endpoint, headers, body.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The method.
    pub method: http::Method,
    /// The path relative to the endpoint, such as `chat/completions`; may carry a query.
    pub path: String,
    /// Headers to forward (hop-by-hop ones and `authorization` are dropped).
    pub headers: HeaderMap,
    /// The body, sent unchanged.
    pub body: Bytes,
}

/// The answer to a [`RawRequest`]: upstream status, headers and a streaming body.
#[derive(Debug)]
pub struct RawResponse {
    /// The upstream status (a success; error statuses come back as [`Error`]s).
    pub status: StatusCode,
    /// The upstream headers.
    pub headers: HeaderMap,
    /// The body, streamed.
    pub body: RawBody,
    /// How the call was served.
    pub meta: ResponseMeta,
}

/// The streaming body of a [`RawResponse`], bytes unchanged.
///
/// If the upstream breaks off, the stream yields one [`ErrorKind::StreamInterrupted`] item
/// and ends; for `text/event-stream` answers the same happens when the body ends without a
/// `data: [DONE]` line. Failures are reported to health. The node's in-flight count is held
/// until the body ends or is dropped.
pub struct RawBody {
    inner: Option<Arc<Inner>>,
    meta: Option<ResponseMeta>,
    stream: ByteStream,
    first: Option<Bytes>,
    guard: Option<InFlightGuard>,
    deadline: Option<Pin<Box<Sleep>>>,
    sse: bool,
    saw_done: bool,
    tail: Vec<u8>,
    done: bool,
}

const DONE_MARK: &[u8] = b"[DONE]";

impl RawBody {
    pub(crate) fn upstream(response: reqwest::Response) -> Self {
        let sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        Self {
            inner: None,
            meta: None,
            stream: Box::pin(response.bytes_stream()),
            first: None,
            guard: None,
            deadline: None,
            sse,
            saw_done: false,
            tail: Vec::new(),
            done: false,
        }
    }

    /// Reads the next upstream chunk before the call is committed; `None` at the end.
    pub(crate) async fn next_upstream(&mut self) -> Result<Option<Bytes>, BoxError> {
        match self.stream.next().await {
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(e.into()),
            None => Ok(None),
        }
    }

    pub(crate) fn commit(
        mut self,
        inner: Arc<Inner>,
        meta: ResponseMeta,
        first: Option<Bytes>,
        guard: InFlightGuard,
        deadline: tokio::time::Instant,
    ) -> Self {
        self.inner = Some(inner);
        self.meta = Some(meta);
        self.done = first.is_none() && !self.sse;
        if let Some(b) = &first {
            self.scan_done(b);
        }
        self.first = first;
        self.guard = (!self.done).then_some(guard);
        self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
        self
    }

    /// Whether the body is `text/event-stream`.
    pub fn is_event_stream(&self) -> bool {
        self.sse
    }

    /// Reads the whole body.
    pub async fn collect(mut self) -> Result<Bytes, Error> {
        let mut buf = Vec::new();
        while let Some(chunk) = self.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(buf))
    }

    fn scan_done(&mut self, chunk: &[u8]) {
        if !self.sse || self.saw_done {
            return;
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.windows(DONE_MARK.len()).any(|w| w == DONE_MARK) {
            self.saw_done = true;
        }
        let keep = self.tail.len().saturating_sub(DONE_MARK.len() - 1);
        self.tail.drain(..keep);
    }

    fn fail(
        &mut self,
        kind: ErrorKind,
        outcome: Outcome,
        source: Option<BoxError>,
    ) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        self.guard = None;
        let error = match (&self.inner, &self.meta) {
            (Some(inner), Some(meta)) => cut(inner, meta, kind, outcome, source),
            _ => Error::new(kind),
        };
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for RawBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if let Some(d) = self.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            return self.fail(ErrorKind::DeadlineExceeded, Outcome::Timeout, None);
        }
        let region = self.meta.as_ref().map_or_else(|| Arc::from(""), |m| Arc::clone(&m.region));
        match ready!(self.stream.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => {
                self.scan_done(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => self.fail(ErrorKind::StreamInterrupted { region }, Outcome::ConnectError, Some(e.into())),
            None if self.sse && !self.saw_done => self.fail(
                ErrorKind::StreamInterrupted { region },
                Outcome::ConnectError,
                Some("event stream ended without [DONE]".into()),
            ),
            None => {
                self.done = true;
                self.guard = None;
                Poll::Ready(None)
            }
        }
    }
}

impl fmt::Debug for RawBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawBody").field("sse", &self.sse).field("done", &self.done).finish_non_exhaustive()
    }
}
