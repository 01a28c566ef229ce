//! Committed streams: typed chat chunks and raw bodies.
//!
//! Both read upstream bytes through one [`Upstream`] reader (idle timer, SSE parser) and share
//! one commit rule: an attempt commits at the first event that carries content (see
//! [`sse::Meaning`]); events before it are held back, so a stream cut before any content fails
//! over unseen. A committed stream ends cleanly only at its endpoint's end event.

use std::{
    collections::VecDeque,
    error::Error as StdError,
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, StatusCode};
use sluice_health::Outcome;
use sluice_region_model::InFlightGuard;
use tokio::time::Sleep;

use crate::{
    ChatCompletionChunk, Error, ErrorKind, ResponseMeta,
    client::{AttemptError, Inner},
    rescue::now,
    sse::{Endpoint, Frame, Meaning, Parser},
};

type BoxError = Box<dyn StdError + Send + Sync>;
/// An event's name (if any) and data.
type NamedData = (Option<String>, String);
type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Why reading upstream stopped.
pub(crate) enum ReadError {
    /// No byte arrived within the idle timeout.
    Idle(Duration),
    /// The body broke, or its event stream could not be parsed.
    Body(BoxError),
}

impl ReadError {
    fn into_parts(self) -> (Outcome, BoxError) {
        match self {
            Self::Idle(d) => (Outcome::Timeout, format!("no data from upstream for {d:?}").into()),
            Self::Body(e) => (Outcome::ConnectError, e),
        }
    }
}

/// Upstream body bytes, with the idle timer and (for event streams) the SSE parser.
pub(crate) struct Upstream {
    bytes: ByteStream,
    parser: Option<(Parser, Endpoint)>,
    frames: VecDeque<Frame>,
    scratch: Vec<Frame>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Upstream {
    pub(crate) fn new(response: reqwest::Response, endpoint: Option<Endpoint>) -> Self {
        Self {
            bytes: Box::pin(response.bytes_stream()),
            parser: endpoint.map(|e| (Parser::default(), e)),
            frames: VecDeque::new(),
            scratch: Vec::new(),
            idle: None,
        }
    }

    /// From now on, a gap longer than `limit` between two chunks fails the read.
    fn arm_idle(&mut self, limit: Duration) {
        self.idle = Some((limit, Box::pin(tokio::time::sleep(limit))));
    }

    /// The next chunk, fed to the parser on the way.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ReadError>>> {
        match self.bytes.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some((limit, sleep)) = &mut self.idle {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *limit);
                }
                if let Some((parser, _)) = &mut self.parser {
                    if let Err(e) = parser.feed(&chunk, &mut self.scratch) {
                        return Poll::Ready(Some(Err(ReadError::Body(e.into()))));
                    }
                    self.frames.extend(self.scratch.drain(..));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ReadError::Body(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match &mut self.idle {
                Some((limit, sleep)) => match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ReadError::Idle(*limit)))),
                    Poll::Pending => Poll::Pending,
                },
                None => Poll::Pending,
            },
        }
    }

    /// The next event (comments skipped), reading as needed.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<NamedData, ReadError>>> {
        loop {
            while let Some(frame) = self.frames.pop_front() {
                if let Frame::Event { name, data } = frame {
                    return Poll::Ready(Some(Ok((name, data))));
                }
            }
            match ready!(self.poll_chunk(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            }
        }
    }
}

fn parse_chunk(data: &str) -> Result<ChatCompletionChunk, BoxError> {
    Ok(serde_json::from_str(data)?)
}

/// What a typed stream holds at its commit.
pub(crate) struct OpenedChat {
    upstream: Upstream,
    held: VecDeque<ChatCompletionChunk>,
    ended: bool,
}

/// Reads a chat stream up to its first content event (or its end), within `limit`.
///
/// Chunks without content are held back. Anything else (an error event, unparseable data, a
/// cut, the end of the body, the timeout) fails the attempt, which is then retried elsewhere:
/// nothing has reached the caller yet.
pub(crate) async fn open_chat(response: reqwest::Response, limit: Duration) -> Result<OpenedChat, AttemptError> {
    let mut upstream = Upstream::new(response, Some(Endpoint::Chat));
    let mut held = VecDeque::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, poll_fn(|cx| upstream.poll_event(cx)))
            .await
            .map_err(|_| AttemptError::FirstChunk(None))?;
        let (name, data) = match next {
            None => return Err(AttemptError::FirstChunk(Some("stream ended before its first content".into()))),
            Some(Err(e)) => return Err(AttemptError::FirstChunk(Some(e.into_parts().1))),
            Some(Ok(event)) => event,
        };
        match Endpoint::Chat.meaning(name.as_deref(), &data) {
            Meaning::End => return Ok(OpenedChat { upstream, held, ended: true }),
            Meaning::Failed(m) => return Err(AttemptError::FirstChunk(Some(m.into()))),
            Meaning::Preamble => held.push_back(parse_chunk(&data).map_err(|e| AttemptError::FirstChunk(Some(e)))?),
            Meaning::Content => {
                held.push_back(parse_chunk(&data).map_err(|e| AttemptError::FirstChunk(Some(e)))?);
                return Ok(OpenedChat { upstream, held, ended: false });
            }
        }
    }
}

/// What a raw call holds at its commit.
pub(crate) struct OpenedRaw {
    upstream: Upstream,
    held: VecDeque<Bytes>,
    sse: bool,
    saw_end: bool,
}

/// Reads a raw answer up to its commit point, within `limit`: the first body chunk, or for an
/// event stream the first event that carries content (or the end event). Bytes read before
/// are held back and sent first once committed. A failure before the commit fails the
/// attempt, which is retried elsewhere.
pub(crate) async fn open_raw(
    response: reqwest::Response,
    path: &str,
    limit: Duration,
) -> Result<OpenedRaw, AttemptError> {
    let sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let endpoint = Endpoint::of_path(path);
    let mut upstream = Upstream::new(response, sse.then_some(endpoint));
    let mut held = VecDeque::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, poll_fn(|cx| upstream.poll_chunk(cx)))
            .await
            .map_err(|_| AttemptError::FirstChunk(None))?;
        match next {
            Some(Ok(chunk)) => held.push_back(chunk),
            Some(Err(e)) => return Err(AttemptError::FirstChunk(Some(e.into_parts().1))),
            None if sse => {
                return Err(AttemptError::FirstChunk(Some("event stream ended before its first content".into())));
            }
            None => return Ok(OpenedRaw { upstream, held, sse, saw_end: true }),
        }
        if !sse {
            return Ok(OpenedRaw { upstream, held, sse, saw_end: false });
        }
        let (mut commit, mut saw_end) = (false, false);
        while let Some(frame) = upstream.frames.pop_front() {
            let Frame::Event { name, data } = frame else { continue };
            match endpoint.meaning(name.as_deref(), &data) {
                Meaning::Failed(m) if !commit => return Err(AttemptError::FirstChunk(Some(m.into()))),
                Meaning::Preamble | Meaning::Failed(_) => {}
                Meaning::Content => commit = true,
                Meaning::End => (commit, saw_end) = (true, true),
            }
        }
        if commit {
            return Ok(OpenedRaw { upstream, held, sse, saw_end });
        }
    }
}

/// Reports a committed stream's failure to health and builds the error item.
fn cut(inner: &Inner, meta: &ResponseMeta, kind: ErrorKind, outcome: Outcome, source: Option<BoxError>) -> Error {
    inner.health.record(meta.node, outcome, now());
    tracing::warn!(region = %meta.region, "stream cut after its first content");
    let error = Error::new(kind);
    match source {
        Some(s) => error.with_source(s),
        None => error,
    }
}

/// The deadline a committed body keeps: the call's, unless it is an event stream and
/// [`Timeouts::streams_outlive_total`](crate::Timeouts::streams_outlive_total) lets a stream
/// that keeps flowing run past it (the idle timeout still ends a stalled one).
fn committed_deadline(inner: &Inner, deadline: tokio::time::Instant, sse: bool) -> Option<Pin<Box<Sleep>>> {
    (!(sse && inner.timeouts.streams_outlive_total)).then(|| Box::pin(tokio::time::sleep_until(deadline)))
}

/// A committed chat completion stream: typed chunks until `[DONE]`.
///
/// A stream cut before `[DONE]` (the connection drops, an error event arrives, a chunk does
/// not parse, no byte arrives within the idle timeout, or the stream's deadline passes) yields
/// one [`ErrorKind::StreamInterrupted`] (or [`ErrorKind::DeadlineExceeded`]) item, is reported
/// to health, and then ends. A body that ends without `[DONE]` is interrupted too. The node's
/// in-flight count is held until the stream ends or is dropped.
pub struct ChatStream {
    inner: Arc<Inner>,
    meta: ResponseMeta,
    upstream: Upstream,
    held: VecDeque<ChatCompletionChunk>,
    ended: bool,
    guard: Option<InFlightGuard>,
    /// The call's deadline; `None` when a flowing stream may outlive it.
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl ChatStream {
    pub(crate) fn new(
        inner: Arc<Inner>,
        meta: ResponseMeta,
        opened: OpenedChat,
        guard: InFlightGuard,
        deadline: tokio::time::Instant,
    ) -> Self {
        let OpenedChat { mut upstream, held, ended } = opened;
        upstream.arm_idle(inner.timeouts.idle);
        Self {
            meta,
            upstream,
            held,
            ended,
            deadline: committed_deadline(&inner, deadline, true),
            inner,
            guard: Some(guard),
            done: false,
        }
    }

    /// How the stream was set up: region, attempts, time to first content.
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

    fn finish(&mut self) -> Poll<Option<Result<ChatCompletionChunk, Error>>> {
        self.done = true;
        self.guard = None;
        Poll::Ready(None)
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatCompletionChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(chunk) = self.held.pop_front() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if self.ended {
            return self.finish();
        }
        if self.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
            return self.fail(ErrorKind::DeadlineExceeded, Outcome::Timeout, None);
        }
        let region = Arc::clone(&self.meta.region);
        match ready!(self.upstream.poll_event(cx)) {
            Some(Ok((_, data))) if data.trim() == "[DONE]" => self.finish(),
            Some(Ok((name, data))) => match Endpoint::Chat.meaning(name.as_deref(), &data) {
                Meaning::Failed(m) => self.fail(
                    ErrorKind::StreamInterrupted { region },
                    Outcome::ServerError { status: 502, retry_after: None },
                    Some(m.into()),
                ),
                _ => match parse_chunk(&data) {
                    Ok(chunk) => Poll::Ready(Some(Ok(chunk))),
                    Err(e) => self.fail(
                        ErrorKind::StreamInterrupted { region },
                        Outcome::ServerError { status: 502, retry_after: None },
                        Some(e),
                    ),
                },
            },
            Some(Err(e)) => {
                let (outcome, source) = e.into_parts();
                self.fail(ErrorKind::StreamInterrupted { region }, outcome, Some(source))
            }
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
#[derive(Debug, Clone, Default)]
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
/// If the upstream breaks off, or sends nothing for the idle timeout, the stream yields one
/// [`ErrorKind::StreamInterrupted`] item and ends; for `text/event-stream` answers the same
/// happens when the body ends without its endpoint's end event (`data: [DONE]` for chat and
/// completions, `response.completed` for the Responses API). Failures are reported to health.
/// The node's in-flight count is held until the body ends or is dropped.
pub struct RawBody {
    inner: Arc<Inner>,
    meta: ResponseMeta,
    upstream: Upstream,
    held: VecDeque<Bytes>,
    guard: Option<InFlightGuard>,
    /// The call's deadline; `None` when a flowing stream may outlive it.
    deadline: Option<Pin<Box<Sleep>>>,
    sse: bool,
    saw_end: bool,
    done: bool,
}

impl RawBody {
    pub(crate) fn commit(
        inner: Arc<Inner>,
        meta: ResponseMeta,
        opened: OpenedRaw,
        guard: InFlightGuard,
        deadline: tokio::time::Instant,
    ) -> Self {
        let OpenedRaw { mut upstream, held, sse, saw_end } = opened;
        upstream.arm_idle(inner.timeouts.idle);
        Self {
            deadline: committed_deadline(&inner, deadline, sse),
            inner,
            meta,
            upstream,
            held,
            guard: Some(guard),
            sse,
            saw_end,
            done: false,
        }
    }

    /// Whether the body is `text/event-stream`.
    pub fn is_event_stream(&self) -> bool {
        self.sse
    }

    /// Reads the whole body.
    pub async fn collect(mut self) -> Result<Bytes, Error> {
        use futures_util::StreamExt as _;
        let mut buf = Vec::new();
        while let Some(chunk) = self.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(buf))
    }

    fn fail(
        &mut self,
        kind: ErrorKind,
        outcome: Outcome,
        source: Option<BoxError>,
    ) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        self.guard = None;
        Poll::Ready(Some(Err(cut(&self.inner, &self.meta, kind, outcome, source))))
    }
}

impl Stream for RawBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(chunk) = self.held.pop_front() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if self.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
            return self.fail(ErrorKind::DeadlineExceeded, Outcome::Timeout, None);
        }
        let region = Arc::clone(&self.meta.region);
        match ready!(self.upstream.poll_chunk(cx)) {
            Some(Ok(chunk)) => {
                let this = &mut *self;
                if let Some((_, endpoint)) = &this.upstream.parser {
                    let endpoint = *endpoint;
                    for frame in this.upstream.frames.drain(..) {
                        if let Frame::Event { name, data } = frame
                            && endpoint.is_end(name.as_deref(), &data)
                        {
                            this.saw_end = true;
                        }
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => {
                let (outcome, source) = e.into_parts();
                self.fail(ErrorKind::StreamInterrupted { region }, outcome, Some(source))
            }
            None if self.sse && !self.saw_end => self.fail(
                ErrorKind::StreamInterrupted { region },
                Outcome::ConnectError,
                Some("event stream ended without its end event".into()),
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
