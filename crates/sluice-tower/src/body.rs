//! Responses that keep counting as in flight until their body ends.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sluice_health::Outcome;
use sluice_region_model::{InFlightGuard, NodeId};

use crate::balance::{Shared, now};

pin_project! {
    /// A response body that holds its region's [`InFlightGuard`] until the body ends, fails or
    /// is dropped, so that a long stream counts as load for its whole length.
    ///
    /// An error in the middle of the body is recorded against the region as a broken
    /// connection, as `sluice-client` records a cut stream.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        done: Option<Done>,
    }
}

/// What a body releases when it ends.
struct Done {
    _guard: InFlightGuard,
    shared: Arc<Shared>,
    node: NodeId,
}

// ===== impl GuardedBody =====

impl<B: Body> GuardedBody<B> {
    pub(crate) fn new(inner: B, guard: InFlightGuard, shared: Arc<Shared>, node: NodeId) -> Self {
        // An empty or fully known body is over already: stop counting at once.
        let done = (!inner.is_end_stream()).then_some(Done { _guard: guard, shared, node });
        Self { inner, done }
    }

    /// Whether the body still counts as in flight.
    pub fn in_flight(&self) -> bool {
        self.done.is_some()
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(None) => *this.done = None,
            Poll::Ready(Some(Err(_))) => {
                if let Some(done) = this.done.take() {
                    done.shared.record(done.node, Outcome::ConnectError, now());
                }
            }
            Poll::Ready(Some(Ok(_))) => {
                // Not every body reports its end with a `None` frame.
                if this.done.is_some() && this.inner.is_end_stream() {
                    *this.done = None;
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> std::fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedBody").field("in_flight", &self.done.is_some()).finish_non_exhaustive()
    }
}
