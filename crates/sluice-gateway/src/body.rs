//! The answer's body on its way back: bytes unchanged (one optional chunk hidden), usage and
//! the new object's id read on the way, and a clean account of how the call ended.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use metrics::Counter;
use serde_json::json;
use sluice_client::RawBody;
use tokio::time::Sleep;

use crate::{
    error::chain,
    gateway::Shared,
    routes::{answer_id, event_response_id},
    usage::{Usage, is_usage_only_chunk},
};

/// Largest answer kept whole to read its `id`.
const MAX_KEPT: usize = 8 << 20;
/// Bytes of a JSON answer's tail searched for `usage`.
const TAIL: usize = 16 << 10;
/// Longest stretch of an event stream without an event boundary before it is passed on as is.
const MAX_PENDING: usize = 1 << 20;

/// What the body learned by the time it ended.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) usage: Option<Usage>,
    pub(crate) id: Option<String>,
}

/// Called once when the body ends cleanly.
pub(crate) type OnEnd = Box<dyn FnOnce(Findings) + Send>;
/// Called once when the new object's id is known (before the body ends, so that a caller's
/// follow-up right after the answer finds it).
pub(crate) type OnId = Box<dyn FnOnce(&str) + Send>;

/// Counts a call once, however it ends: in flight while alive; a drop before the end is a
/// caller who went away (the upstream call is dropped with it).
pub(crate) struct CallGuard {
    shared: Arc<Shared>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    endpoint: &'static str,
    model: Arc<str>,
    status: Option<&'static str>,
    done: bool,
}

impl CallGuard {
    pub(crate) fn new(
        shared: Arc<Shared>,
        endpoint: &'static str,
        model: Arc<str>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        shared.metrics.in_flight.increment(1.0);
        Self { shared, _permit: permit, endpoint, model, status: None, done: false }
    }

    pub(crate) fn set_model(&mut self, model: Arc<str>) {
        self.model = model;
    }

    /// The answer's head was sent with this status label.
    pub(crate) fn answered(&mut self, status: &'static str) {
        self.status = Some(status);
    }

    /// The call ended as it should (answer sent whole, or an error answer).
    pub(crate) fn finish(mut self, status: &'static str) {
        self.status = Some(status);
        self.done = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let m = &self.shared.metrics;
        m.in_flight.decrement(1.0);
        if !self.done {
            if self.status.is_some() { &m.disconnect_mid_answer } else { &m.disconnect_before_answer }.increment(1);
        }
        m.call(self.endpoint, &self.model, if self.done { self.status.unwrap_or("none") } else { "disconnected" });
    }
}

/// The upstream body with its taps. A break turns into an SSE error event (for event streams)
/// and then an aborted connection, so a cut answer never looks complete.
pub(crate) struct ProxyBody {
    inner: RawBody,
    sse: bool,
    hide_usage_chunk: bool,
    keep_whole: bool,
    errors: Option<Counter>,
    guard: Option<CallGuard>,
    on_end: Option<OnEnd>,
    on_id: Option<OnId>,
    expected: Option<usize>,
    seen: usize,
    pending: BytesMut,
    kept: Vec<u8>,
    tail: Vec<u8>,
    findings: Findings,
    abort: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl ProxyBody {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: RawBody,
        sse: bool,
        hide_usage_chunk: bool,
        keep_whole: bool,
        errors: Option<Counter>,
        guard: CallGuard,
        on_end: OnEnd,
        on_id: Option<OnId>,
        expected: Option<usize>,
    ) -> Self {
        Self {
            inner,
            sse,
            hide_usage_chunk,
            keep_whole,
            errors,
            guard: Some(guard),
            on_end: Some(on_end),
            on_id,
            expected,
            seen: 0,
            pending: BytesMut::new(),
            kept: Vec::new(),
            tail: Vec::new(),
            findings: Findings::default(),
            abort: None,
            done: false,
        }
    }

    /// Looks at one complete event; false hides it.
    fn event(&mut self, event: &[u8]) -> bool {
        let mut show = true;
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(data) = line.strip_prefix(b"data:") else { continue };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if data.first() != Some(&b'{') {
                continue;
            }
            if self.findings.id.is_none() && crate::usage::contains(data, b"\"response\"") {
                self.findings.id = event_response_id(data);
                if let (Some(id), Some(f)) = (&self.findings.id, self.on_id.take()) {
                    f(id);
                }
            }
            if has_usage_object(data) {
                if let Some(u) = Usage::find_last(data) {
                    self.findings.usage = Some(u);
                }
                if self.hide_usage_chunk && is_usage_only_chunk(data) {
                    show = false;
                }
            }
        }
        show
    }

    /// Frames `chunk` into whole events and returns those to show.
    fn frame(&mut self, chunk: &Bytes) -> Option<Bytes> {
        if self.pending.is_empty() && ends_with_boundary(chunk) && !self.hide_usage_chunk {
            // The common case: whole events, nothing to hide. Look, then pass the same bytes.
            let mut rest = &chunk[..];
            while let Some(end) = boundary(rest) {
                let (event, tail) = rest.split_at(end);
                self.event(event);
                rest = skip_boundary(tail);
            }
            return Some(chunk.clone());
        }
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = boundary(&self.pending) {
            let event = self.pending.split_to(end);
            let sep_len = self.pending.len() - skip_boundary(&self.pending).len();
            let sep = self.pending.split_to(sep_len);
            if self.event(&event) {
                out.extend_from_slice(&event);
                out.extend_from_slice(&sep);
            }
        }
        if self.pending.len() > MAX_PENDING {
            out.extend_from_slice(&self.pending.split());
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    fn look(&mut self, chunk: &Bytes) {
        if self.keep_whole && self.kept.len() + chunk.len() <= MAX_KEPT {
            self.kept.extend_from_slice(chunk);
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 2 * TAIL {
            let cut = self.tail.len() - TAIL;
            self.tail.drain(..cut);
        }
    }

    fn end(&mut self) {
        if !self.sse {
            self.findings.usage = Usage::find_last(&self.tail);
            if self.keep_whole {
                self.findings.id = answer_id(&self.kept);
                if let (Some(id), Some(f)) = (&self.findings.id, self.on_id.take()) {
                    f(id);
                }
            }
        }
        if let Some(f) = self.on_end.take() {
            f(std::mem::take(&mut self.findings));
        }
        if let Some(g) = self.guard.take() {
            let status = g.status.unwrap_or("200");
            g.finish(status);
        }
    }

    fn broke(&mut self) {
        self.on_end = None;
        if let Some(g) = self.guard.take() {
            let status = g.status.unwrap_or("502");
            g.finish(status);
        }
    }
}

fn has_usage_object(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some(i) = rest.windows(7).position(|w| w == b"\"usage\"") {
        let after = &rest[i + 7..];
        let after = after.iter().skip_while(|b| b.is_ascii_whitespace() || **b == b':').copied().next();
        if after == Some(b'{') {
            return true;
        }
        rest = &rest[i + 7..];
    }
    false
}

/// The end of the first event in `s` (before its blank line).
fn boundary(s: &[u8]) -> Option<usize> {
    let lf = s.windows(2).position(|w| w == b"\n\n");
    let crlf = s.windows(4).position(|w| w == b"\r\n\r\n");
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn skip_boundary(s: &[u8]) -> &[u8] {
    s.strip_prefix(b"\r\n\r\n").or_else(|| s.strip_prefix(b"\n\n")).unwrap_or(s)
}

fn ends_with_boundary(s: &[u8]) -> bool {
    s.ends_with(b"\n\n")
}

impl Stream for ProxyBody {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(sleep) = self.abort.as_mut() {
                // Give the error event time to reach the socket before the abort.
                ready!(sleep.as_mut().poll(cx));
                self.abort = None;
                self.done = true;
                return Poll::Ready(Some(Err(io::Error::other("upstream stream interrupted"))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(self.inner.poll_next_unpin(cx)) {
                Some(Ok(bytes)) => {
                    if self.sse {
                        match self.frame(&bytes) {
                            Some(out) => return Poll::Ready(Some(Ok(out))),
                            None => continue,
                        }
                    }
                    self.look(&bytes);
                    self.seen += bytes.len();
                    if self.expected == Some(self.seen) && self.on_end.is_some() {
                        // The whole answer is here: account for it before the caller can act.
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Some(Err(e)) => {
                    self.broke();
                    if let Some(c) = &self.errors {
                        c.increment(1);
                    }
                    tracing::warn!(error = %chain(&e), "upstream body broke mid-answer");
                    if self.sse {
                        let event = json!({"error": {
                            "message": e.to_string(),
                            "type": "server_error",
                            "param": null,
                            "code": "stream_interrupted",
                        }});
                        self.abort = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                        return Poll::Ready(Some(Ok(Bytes::from(format!("data: {event}\n\n")))));
                    }
                    self.done = true;
                    return Poll::Ready(Some(Err(io::Error::other(e.to_string()))));
                }
                None if self.on_end.is_none() && self.guard.is_none() => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                None => {
                    // A last event without its blank line.
                    let rest = std::mem::take(&mut self.pending).freeze();
                    let rest = (!rest.is_empty() && self.event(&rest)).then_some(rest);
                    self.end();
                    self.done = true;
                    if let Some(rest) = rest {
                        return Poll::Ready(Some(Ok(rest)));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_usage_objects() {
        assert_eq!(boundary(b"data: 1\n\ndata: 2\n\n"), Some(7));
        assert_eq!(boundary(b"data: 1\r\n\r\n"), Some(7));
        assert_eq!(boundary(b"data: 1\n"), None);
        assert!(has_usage_object(br#"{"usage": {"a":1}}"#));
        assert!(!has_usage_object(br#"{"usage":null}"#));
    }
}
