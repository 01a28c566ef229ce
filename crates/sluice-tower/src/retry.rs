//! Failover to a region the request has not tried: [`FailoverPolicy`] for `tower::retry`, and
//! [`FailoverLayer`], which sets it up.

use std::{
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use parking_lot::Mutex;
use sluice_health::RetryBudget;
use sluice_region_model::NodeId;
use tower::{
    Layer, Service,
    retry::{Policy, Retry},
};

use crate::{BoxError, Classify, Error, GuardedBody, HttpClassify, balance::now};

/// Attempts per request, the first included, unless set otherwise; the same as
/// `sluice-client`'s default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The regions one request was sent to, in order: a request extension shared by every attempt
/// of the request.
///
/// [`Balance`](crate::Balance) never sends a request to a region in its `Tried` again and
/// appends the region it picks. [`Failover`] inserts a fresh one into every request;
/// insert your own to learn which region served a request.
#[derive(Debug, Clone, Default)]
pub struct Tried(Arc<Mutex<Vec<Arc<str>>>>);

/// A `tower::retry::Policy` that fails over to a region the request has not tried, with the
/// failure rules of `sluice-client` (the shared `sluice_health::classify` rules):
///
/// * a 2xx is done; a 4xx other than 401, 403, 408 and 429 is returned as is, never retried;
/// * 408, 5xx, 429, 401/403 and errors of the inner service are retried at another region;
/// * a Retry-After is not slept on: [`Balance`](crate::Balance) already recorded it as a
///   cooldown of that region, so the retry goes elsewhere at once;
/// * [`Error::Unavailable`] (no region left) ends the request.
///
/// Attempts are bounded by [`max_attempts`](Self::max_attempts) and, if set, a shared
/// [`RetryBudget`]. The request must carry a [`Tried`] extension, which [`FailoverLayer`]
/// adds; without one the policy does not retry. Bodies are cloned for each retry, so `B:
/// Clone` (use a buffered body such as `Full<Bytes>` or `String`).
#[derive(Debug, Clone)]
pub struct FailoverPolicy<C = HttpClassify> {
    max_attempts: u32,
    budget: Option<Arc<RetryBudget>>,
    classify: C,
}

/// Wraps a service (a [`Balance`](crate::Balance)) in `tower::retry::Retry` with a
/// [`FailoverPolicy`], and gives every request its [`Tried`] extension.
#[derive(Debug, Clone)]
pub struct FailoverLayer<C = HttpClassify> {
    policy: FailoverPolicy<C>,
}

/// The service [`FailoverLayer`] builds.
#[derive(Debug, Clone)]
pub struct Failover<S, C = HttpClassify> {
    inner: Retry<FailoverPolicy<C>, S>,
    budget: Option<Arc<RetryBudget>>,
}

// ===== impl Tried =====

impl Tried {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The regions tried so far, in order.
    pub fn regions(&self) -> Vec<Arc<str>> {
        self.0.lock().clone()
    }

    /// The region of the latest attempt.
    pub fn last(&self) -> Option<Arc<str>> {
        self.0.lock().last().cloned()
    }

    /// Number of attempts so far.
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Whether no attempt was made yet.
    pub fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }

    pub(crate) fn push(&self, region: Arc<str>) {
        self.0.lock().push(region);
    }

    /// Copies the ids of `from` whose region was not tried into `out`.
    pub(crate) fn exclude(&self, from: &[NodeId], regions: &[Arc<str>], out: &mut Vec<NodeId>) {
        let tried = self.0.lock();
        out.clear();
        out.extend(from.iter().copied().filter(|id| !tried.contains(&regions[id.index()])));
    }

    /// Drops the ids whose region was tried.
    pub(crate) fn retain_untried(&self, list: &mut Vec<NodeId>, regions: &[Arc<str>]) {
        let tried = self.0.lock();
        list.retain(|id| !tried.contains(&regions[id.index()]));
    }
}

// ===== impl FailoverPolicy =====

impl FailoverPolicy {
    /// [`DEFAULT_MAX_ATTEMPTS`] attempts, no budget, [`HttpClassify`].
    pub fn new() -> Self {
        Self { max_attempts: DEFAULT_MAX_ATTEMPTS, budget: None, classify: HttpClassify }
    }
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> FailoverPolicy<C> {
    /// Attempts per request, the first included; at least 1 (1 disables retries).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Retries spend from `budget`; every request deposits into it. Share one budget among
    /// the balancers of a process, as `sluice-client` does.
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Judges results with `classify` instead of [`HttpClassify`].
    pub fn classify<C2>(self, classify: C2) -> FailoverPolicy<C2> {
        FailoverPolicy { max_attempts: self.max_attempts, budget: self.budget, classify }
    }
}

impl<C> FailoverPolicy<C> {
    /// Whether to try again after `result`; `error` is the balancer's error, if it is one.
    fn should_retry<RB, B>(
        &self,
        request: &http::Request<B>,
        result: Result<&http::Response<GuardedBody<RB>>, Option<&Error>>,
    ) -> Option<Ready<()>>
    where
        C: Classify<http::Response<GuardedBody<RB>>, Error>,
    {
        let verdict = match result {
            Ok(response) => self.classify.classify(Ok(response)),
            Err(Some(e @ Error::Region { .. })) => self.classify.classify(Err(e)),
            // No region left, a broken contract, or an error from a layer in between (a closed
            // buffer): another attempt would fail the same way.
            Err(_) => return None,
        };
        if !verdict.is_retryable() {
            return None;
        }
        let tried = request.extensions().get::<Tried>()?;
        if tried.len() >= self.max_attempts as usize {
            return None;
        }
        if let Some(budget) = &self.budget
            && !budget.try_withdraw(now())
        {
            tracing::debug!("retry budget exhausted; not failing over");
            return None;
        }
        tracing::debug!(tried = ?tried.regions(), ?verdict, "failing over to another region");
        Some(ready(()))
    }
}

/// Clones a request for another attempt: same method, URI, version, headers, extensions
/// (the [`Tried`] handle included) and body.
fn clone_request<B: Clone>(request: &http::Request<B>) -> http::Request<B> {
    let mut clone = http::Request::new(request.body().clone());
    *clone.method_mut() = request.method().clone();
    *clone.uri_mut() = request.uri().clone();
    *clone.version_mut() = request.version();
    *clone.headers_mut() = request.headers().clone();
    *clone.extensions_mut() = request.extensions().clone();
    clone
}

/// Directly over a [`Balance`](crate::Balance) (behind a cloneable wrapper that keeps its
/// error type).
impl<B, RB, C> Policy<http::Request<B>, http::Response<GuardedBody<RB>>, Error> for FailoverPolicy<C>
where
    B: Clone,
    C: Classify<http::Response<GuardedBody<RB>>, Error> + Clone,
{
    type Future = Ready<()>;

    fn retry(
        &mut self,
        request: &mut http::Request<B>,
        result: &mut Result<http::Response<GuardedBody<RB>>, Error>,
    ) -> Option<Self::Future> {
        self.should_retry(request, result.as_ref().map_err(Some))
    }

    fn clone_request(&mut self, request: &http::Request<B>) -> Option<http::Request<B>> {
        Some(clone_request(request))
    }
}

/// Over a [`Balance`](crate::Balance) behind `tower::buffer::Buffer`, whose errors are boxed.
impl<B, RB, C> Policy<http::Request<B>, http::Response<GuardedBody<RB>>, BoxError> for FailoverPolicy<C>
where
    B: Clone,
    C: Classify<http::Response<GuardedBody<RB>>, Error> + Clone,
{
    type Future = Ready<()>;

    fn retry(
        &mut self,
        request: &mut http::Request<B>,
        result: &mut Result<http::Response<GuardedBody<RB>>, BoxError>,
    ) -> Option<Self::Future> {
        self.should_retry(request, result.as_ref().map_err(|e| e.downcast_ref::<Error>()))
    }

    fn clone_request(&mut self, request: &http::Request<B>) -> Option<http::Request<B>> {
        Some(clone_request(request))
    }
}

// ===== impl FailoverLayer =====

impl<C> FailoverLayer<C> {
    /// Retries with `policy`.
    pub fn new(policy: FailoverPolicy<C>) -> Self {
        Self { policy }
    }
}

impl<S, C: Clone> Layer<S> for FailoverLayer<C> {
    type Service = Failover<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Failover { budget: self.policy.budget.clone(), inner: Retry::new(self.policy.clone(), inner) }
    }
}

// ===== impl Failover =====

impl<S, C, B> Service<http::Request<B>> for Failover<S, C>
where
    Retry<FailoverPolicy<C>, S>: Service<http::Request<B>>,
{
    type Response = <Retry<FailoverPolicy<C>, S> as Service<http::Request<B>>>::Response;
    type Error = <Retry<FailoverPolicy<C>, S> as Service<http::Request<B>>>::Error;
    type Future = <Retry<FailoverPolicy<C>, S> as Service<http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if request.extensions().get::<Tried>().is_none() {
            request.extensions_mut().insert(Tried::new());
        }
        if let Some(budget) = &self.budget {
            budget.deposit(now());
        }
        self.inner.call(request)
    }
}
