//! The futures a [`Balance`](crate::Balance) returns.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use pin_project_lite::pin_project;
use sluice_health::{Outcome, classify::Verdict};
use sluice_region_model::{InFlightGuard, NodeId};

use crate::{
    BoxError, Classify, Error, GuardedBody,
    balance::{Shared, now},
};

/// A service being made for a region (by a `MakeService`).
pub(crate) type MakeFuture<S> = Pin<Box<dyn Future<Output = Result<S, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`Balance`](crate::Balance): the inner service's future, plus
    /// what it takes to judge and record the outcome when it resolves.
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: FutureState<F, C>,
    }
}

pin_project! {
    #[project = FutureStateProj]
    enum FutureState<F, C> {
        Running {
            #[pin]
            future: F,
            attempt: Option<Attempt<C>>,
        },
        Failed { error: Option<Error> },
    }
}

struct Attempt<C> {
    shared: Arc<Shared>,
    node: NodeId,
    guard: InFlightGuard,
    started: Instant,
    classify: C,
}

// ===== impl ResponseFuture =====

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(
        future: F,
        shared: Arc<Shared>,
        node: NodeId,
        guard: InFlightGuard,
        started: Instant,
        classify: C,
    ) -> Self {
        let attempt = Some(Attempt { shared, node, guard, started, classify });
        Self { state: FutureState::Running { future, attempt } }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self { state: FutureState::Failed { error: Some(error) } }
    }
}

impl<F, C, RB, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    E: Into<BoxError>,
    RB: http_body::Body,
    C: Classify<http::Response<RB>, E>,
{
    type Output = Result<http::Response<GuardedBody<RB>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            FutureStateProj::Failed { error } => Poll::Ready(Err(error.take().unwrap_or(Error::NotReady))),
            FutureStateProj::Running { future, attempt } => {
                let result = ready!(future.poll(cx));
                let Attempt { shared, node, guard, started, classify } =
                    attempt.take().expect("ResponseFuture polled after completion");
                let now = now();
                let verdict = classify.classify(result.as_ref());
                let outcome = match (&result, verdict) {
                    (_, Verdict::Success) => Some(Outcome::Success { latency: now.saturating_duration_since(started) }),
                    (Ok(response), verdict) => verdict.outcome(response.status()),
                    (Err(_), verdict) if verdict.is_retryable() => Some(Outcome::ConnectError),
                    (Err(_), _) => None,
                };
                if let Some(outcome) = outcome {
                    shared.record(node, outcome, now);
                }
                Poll::Ready(match result {
                    Ok(response) => Ok(response.map(|body| GuardedBody::new(body, guard, shared, node))),
                    Err(e) => Err(Error::Region { region: Arc::clone(shared.region(node)), source: e.into() }),
                })
            }
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
