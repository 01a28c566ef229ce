//! The client and its failover loop.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures_util::{StreamExt, stream::FuturesUnordered};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use parking_lot::Mutex;
use sluice_balancer::{Caller, PickView, Strategy};
use sluice_health::{
    HealthMonitor, Outcome, ProberHandle, Selection,
    classify::{Verdict, classify_status},
};
use sluice_region_model::{ApiKey, GeoPoint, InFlightGuard, NodeId, Snapshot};
use tracing::{Instrument, field::Empty};

use crate::{
    AttemptFailure, ChatCompletion, ChatCompletionRequest, ChatStream, ClientBuilder, Error, ErrorKind, FailedAttempt,
    FailoverPolicy, HedgePolicy, ModelList, RawBody, RawRequest, RawResponse, Response, ResponseMeta, Timeouts,
    budget::RetryBudget,
    credentials::CredentialBlocks,
    latency::LatencyHistogram,
    provider::same_origin,
    rescue::{RescueHub, now},
    routing::{CallRoute, Routes},
    stream::{open_chat, open_raw},
    telemetry::{self, CALL_MODEL, Instruments, ModelLabels},
    trace::TraceParent,
};

/// Largest error body kept from an upstream answer.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Routes OpenAI-compatible calls across regions and fails over between them.
///
/// Cheap to clone (one `Arc`); share it across tasks. Dropping the last clone stops its
/// health probes.
///
/// The regions can change while calls run ([`update_regions`](Self::update_regions)): each
/// call runs on the regions it started with.
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<crate::reload::Shared>,
}

/// One membership of the client: what a call runs on, start to end.
pub(crate) struct Inner {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) regions: Box<[Arc<str>]>,
    pub(crate) health: HealthMonitor,
    pub(crate) strategy: Arc<dyn Strategy>,
    pub(crate) http: reqwest::Client,
    /// Per node: the key sent, and a small id that is equal for equal keys.
    pub(crate) keys: Box<[(Option<ApiKey>, u32)]>,
    pub(crate) policy: FailoverPolicy,
    pub(crate) timeouts: Timeouts,
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) rescue: Arc<RescueHub>,
    pub(crate) latencies: Arc<LatencyHistogram>,
    pub(crate) entropy: AtomicU64,
    pub(crate) default_caller: Option<Caller>,
    pub(crate) prober: Mutex<Option<ProberHandle>>,
    pub(crate) models: Arc<ModelLabels>,
    /// Metric handles by label values, shared by every generation of this state.
    pub(crate) instruments: Arc<Instruments>,
    /// Providers, models and zones per node, and the model routing tables.
    pub(crate) routes: Arc<Routes>,
    /// Nodes that refused our key recently.
    pub(crate) credentials: CredentialBlocks,
}

/// Per-call options: a preferred region, the caller's location, a deadline, the model and
/// the zones the call may use.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    preferred: Option<String>,
    caller: Option<GeoPoint>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) body_model: Option<Arc<str>>,
    pub(crate) zones: Option<Arc<[Box<str>]>>,
    only: Option<String>,
    deliver_once: bool,
    /// Whether a raw call's body asks for a stream, when the caller already knows.
    streams: Option<bool>,
    pub(crate) trace: Option<TraceParent>,
    /// Shared, so that each attempt's route copies a pointer, not the key.
    pub(crate) caller_key: Option<Arc<ApiKey>>,
}

// ===== impl CallOptions =====

impl CallOptions {
    /// No preference, the client's default location, the client's total timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the call to this region (by id) while it is eligible; otherwise the strategy
    /// chooses as usual.
    pub fn prefer_region(mut self, region: impl Into<String>) -> Self {
        self.preferred = Some(region.into());
        self
    }

    /// The caller's location, for geo-aware strategies.
    pub fn caller(mut self, location: GeoPoint) -> Self {
        self.caller = Some(location);
        self
    }

    /// A deadline for the whole call, measured from its start; the client's total timeout
    /// still applies if shorter.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The model the call is for (typed calls take it from the request; raw calls need it
    /// here to be routed by model). Aliases resolve, only regions that serve the model are
    /// used, and fallback models are tried after its regions fail. A model that no region
    /// serves fails the call with [`ErrorKind::ModelNotFound`] without sending it. The model
    /// each attempt used is also the `model` label of metrics and spans.
    ///
    /// For [`Client::raw`], set it to the model the body names: a JSON body's `model` field
    /// is rewritten when the model sent differs (an alias, a fallback, an Azure `/v1`
    /// deployment), and a call whose body cannot be rewritten then fails over.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(Arc::from(model.into()));
        self
    }

    /// Restricts the call to regions in these zones (for data residency): failover never
    /// leaves them, and when none of their regions can serve, the call fails with
    /// [`ErrorKind::NoRegionInZones`] or [`ErrorKind::NoEligibleRegion`]. Regions without a
    /// zone are excluded. An empty list lifts the restriction.
    pub fn zones(mut self, zones: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let zones: Vec<Box<str>> = zones.into_iter().map(|z| z.into().into_boxed_str()).collect();
        self.zones = if zones.is_empty() { None } else { Some(zones.into()) };
        self
    }

    /// The model set with [`model`](Self::model).
    pub fn model_name(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The zones set with [`zones`](Self::zones).
    pub fn zone_list(&self) -> &[Box<str>] {
        self.zones.as_deref().unwrap_or(&[])
    }
}

impl CallOptions {
    /// Sends the call to this region (by id) and to no other: for calls whose state lives
    /// there (a stored response, a file). When the region cannot take the call it fails
    /// with [`ErrorKind::NoEligibleRegion`] instead of failing over.
    pub fn only_region(mut self, region: impl Into<String>) -> Self {
        self.only = Some(region.into());
        self
    }

    /// Never re-sends the call once a region may have received it: only attempts that could
    /// not connect, or that were refused with a 429, are tried elsewhere. For calls whose
    /// effect is unknown (a proxy passing through an unknown endpoint).
    pub fn deliver_once(mut self) -> Self {
        self.deliver_once = true;
        self
    }

    /// Tells [`Client::raw`] whether the body asks for a stream (`"stream": true`), for a
    /// caller that has parsed the body already: the client then does not read it again (a
    /// large body costs a whole JSON scan). Without it, the client reads the flag itself.
    /// A wrong value is trusted: a streamed call said not to stream may be hedged.
    pub fn body_streams(mut self, streams: bool) -> Self {
        self.streams = Some(streams);
        self
    }

    /// The caller's own key: sent, instead of the configured key, to regions whose provider
    /// passes callers' keys ([`Provider::pass_caller_key`](crate::Provider::pass_caller_key)),
    /// and to no other region.
    pub fn caller_key(mut self, key: ApiKey) -> Self {
        self.caller_key = Some(Arc::new(key));
        self
    }

    /// Joins the call to a W3C trace (an incoming `traceparent`): the call span records its
    /// trace id, and every attempt sends a `traceparent` with that trace id upstream (see
    /// [`TraceParent`]).
    pub fn trace_parent(mut self, parent: TraceParent) -> Self {
        self.trace = Some(parent);
        self
    }
}

/// What an attempt produced, before the driver decides what to do with it.
pub(crate) enum AttemptError {
    Connect(reqwest::Error),
    Timeout,
    Status {
        status: u16,
        verdict: Verdict,
        body: Bytes,
        /// The answer's headers (empty for a refusal of our own).
        headers: HeaderMap,
    },
    FirstChunk(Option<Box<dyn std::error::Error + Send + Sync>>),
    Invalid(Box<dyn std::error::Error + Send + Sync>),
    /// A success whose body does not parse: the answer was generated, so it is not retried.
    Decode(Box<dyn std::error::Error + Send + Sync>),
    /// A plain answer whose body broke after its success head: the answer was generated, so
    /// it is not retried either.
    Cut(reqwest::Error),
    Rescued,
}

/// Everything one attempt needs.
pub(crate) struct Attempt {
    pub(crate) inner: Arc<Inner>,
    pub(crate) node: NodeId,
    pub(crate) guard: InFlightGuard,
    pub(crate) deadline: tokio::time::Instant,
    /// When the attempt started.
    pub(crate) started: Instant,
    pub(crate) route: CallRoute,
}

type AttemptFuture<T> = Pin<Box<dyn Future<Output = (NodeId, Instant, Result<T, AttemptError>)> + Send>>;

enum Disposition {
    Retry,
    Credentials,
    Fatal,
}

// ===== impl Client =====

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>, rebuild: crate::reload::Rebuild) -> Self {
        Self { shared: crate::reload::Shared::new(inner, rebuild) }
    }

    /// The current membership.
    pub(crate) fn inner(&self) -> Arc<Inner> {
        self.shared.current()
    }

    /// The regions, as validated (the current ones, after any
    /// [`update_regions`](Self::update_regions)).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.inner().snapshot)
    }

    /// The health monitor of the current regions: status, events, passive state. Its event
    /// channel stays the same across [`update_regions`](Self::update_regions).
    pub fn health(&self) -> HealthMonitor {
        self.inner().health.clone()
    }

    /// The strategy's name.
    pub fn strategy_name(&self) -> &'static str {
        self.inner().strategy.name()
    }

    /// Retries the budget would grant right now.
    pub fn retry_budget_available(&self) -> u64 {
        self.inner().budget.available(now())
    }

    /// The retry budget itself, shared by every clone of this client (and kept across
    /// reloads), so that fleet mode can make it fleet-wide (`sluice_fleet::Fleet::start_with_budget`).
    pub fn retry_budget(&self) -> Arc<RetryBudget> {
        Arc::clone(&self.inner().budget)
    }

    /// Stops the active prober and waits for its tasks to end. Calls keep working on
    /// passive health alone, and later region updates start no prober.
    pub async fn shutdown_probing(&self) {
        let handle = self.shared.stop_probing();
        if let Some(h) = handle {
            h.shutdown().await;
        }
    }

    /// `POST /chat/completions`, non-streaming.
    pub async fn chat_completions(&self, request: ChatCompletionRequest) -> Result<Response<ChatCompletion>, Error> {
        self.chat_completions_with(request, &CallOptions::new()).await
    }

    /// `POST /chat/completions`, non-streaming, with per-call options.
    pub async fn chat_completions_with(
        &self,
        mut request: ChatCompletionRequest,
        options: &CallOptions,
    ) -> Result<Response<ChatCompletion>, Error> {
        request.stream = None;
        let options = &with_model(options, &request.model);
        let body = Bytes::from(
            serde_json::to_vec(&request).map_err(|e| Error::new(ErrorKind::InvalidRequest).with_source(e))?,
        );
        let inner = self.inner();
        let hedge = inner.policy.hedge;
        inner
            .run_routed(options, CallKind::Once, hedge, move |a| {
                let body = body.clone();
                Box::pin(a.json::<ChatCompletion>(Method::POST, "chat/completions", body))
            })
            .await
    }

    /// `POST /chat/completions` with `stream: true`: a stream of typed chunks.
    ///
    /// Failover applies until the first chunk arrives (connect errors, error statuses, and a
    /// first chunk slower than the first-chunk timeout). From the first chunk on, the call is
    /// committed: a stream cut later yields an [`ErrorKind::StreamInterrupted`] item and is
    /// reported to health; it never ends as if complete. `[DONE]` ends it cleanly.
    pub async fn chat_completions_stream(&self, request: ChatCompletionRequest) -> Result<ChatStream, Error> {
        self.chat_completions_stream_with(request, &CallOptions::new()).await
    }

    /// [`chat_completions_stream`](Self::chat_completions_stream) with per-call options.
    pub async fn chat_completions_stream_with(
        &self,
        mut request: ChatCompletionRequest,
        options: &CallOptions,
    ) -> Result<ChatStream, Error> {
        request.stream = Some(true);
        let options = &with_model(options, &request.model);
        let body = Bytes::from(
            serde_json::to_vec(&request).map_err(|e| Error::new(ErrorKind::InvalidRequest).with_source(e))?,
        );
        let inner = self.inner();
        let response = inner
            .run_routed(options, CallKind::Resendable, None, move |a| {
                let body = body.clone();
                Box::pin(async move {
                    let mut headers = HeaderMap::new();
                    headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
                    let resp = a.send(Method::POST, "chat/completions", headers, body).await?;
                    let opened = open_chat(resp, a.inner.timeouts.first_chunk).await?;
                    Ok((opened, a.guard, a.deadline))
                })
            })
            .await?;
        let ((opened, guard, deadline), meta) = response.into_parts();
        Ok(ChatStream::new(inner, meta, opened, guard, deadline))
    }

    /// `GET /models`.
    pub async fn models(&self) -> Result<Response<ModelList>, Error> {
        self.models_with(&CallOptions::new()).await
    }

    /// `GET /models` with per-call options.
    pub async fn models_with(&self, options: &CallOptions) -> Result<Response<ModelList>, Error> {
        let inner = self.inner();
        inner
            .run_routed(options, CallKind::Resendable, inner.policy.hedge, |a| {
                Box::pin(a.json::<ModelList>(Method::GET, "models", Bytes::new()))
            })
            .await
    }

    /// Any call, bytes unchanged: for proxies.
    ///
    /// `request.path` is relative to each region's endpoint (`chat/completions` against
    /// `https://host/v1` reaches `https://host/v1/chat/completions`). Hop-by-hop headers, `host`,
    /// `content-length` and `authorization` are dropped; the region's key is sent instead.
    /// Failover applies until the first body chunk arrives (within the first-chunk timeout);
    /// from then on the body streams through. An error status that is not retried comes
    /// back as an [`ErrorKind::Status`] carrying the upstream body.
    pub async fn raw(&self, request: RawRequest, options: &CallOptions) -> Result<RawResponse, Error> {
        let RawRequest { method, path, headers, body } = request;
        let headers = Arc::new(sanitize_headers(headers));
        let path: Arc<str> = Arc::from(path.trim_start_matches('/'));
        let stream = options.streams.unwrap_or_else(|| is_stream_request(&body));
        let kind = if method == Method::GET || stream { CallKind::Resendable } else { CallKind::Once };
        let inner = self.inner();
        // Hedging applies as for typed calls: not to streams, nor to calls that must not be
        // sent twice.
        let hedge = if options.deliver_once || stream { None } else { inner.policy.hedge };
        let response = inner
            .run_routed(options, kind, hedge, move |a| {
                let (method, path, headers, body) =
                    (method.clone(), Arc::clone(&path), Arc::clone(&headers), body.clone());
                Box::pin(async move {
                    let resp = a.send(method, &path, (*headers).clone(), body).await?;
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let opened = open_raw(resp, &path, a.inner.timeouts.first_chunk).await?;
                    Ok((status, headers, opened, a.guard, a.deadline))
                })
            })
            .await?;
        let ((status, headers, opened, guard, deadline), meta) = response.into_parts();
        let body = RawBody::commit(inner, meta.clone(), opened, guard, deadline);
        Ok(RawResponse { status, headers, body, meta })
    }
}

impl Client {
    /// The models each region is known to serve, by region id: `None` while a region's list
    /// is unknown (it then serves every model). Lists come from configuration, an Azure
    /// deployment table, or the region's `/models` answer, minus models it recently
    /// answered `model_not_found` for.
    pub fn region_models(&self) -> Vec<(Arc<str>, Option<Vec<String>>)> {
        self.inner().routes.known_models(now())
    }

    /// The model a requested name stands for, aliases resolved.
    pub fn resolve_model(&self, model: &str) -> String {
        self.inner().routes.routing.resolve(model).to_owned()
    }
}

/// The options with the request's model, unless they name one.
fn with_model(options: &CallOptions, model: &str) -> CallOptions {
    let mut options = options.clone();
    if options.model.is_none() && !model.is_empty() {
        options.model = Some(Arc::from(model));
    }
    options
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct("Client")
            .field("regions", &inner.regions)
            .field("strategy", &inner.strategy.name())
            .field("policy", &inner.policy)
            .field("timeouts", &inner.timeouts)
            .finish_non_exhaustive()
    }
}

/// Whether a JSON request body asks for a stream (`"stream": true`).
fn is_stream_request(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Flag {
        #[serde(default)]
        stream: Option<bool>,
    }
    serde_json::from_slice::<Flag>(body).ok().and_then(|f| f.stream).unwrap_or(false)
}

fn sanitize_headers(mut headers: HeaderMap) -> HeaderMap {
    const DROPPED: [HeaderName; 12] = [
        header::HOST,
        header::CONTENT_LENGTH,
        header::AUTHORIZATION,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
        header::ACCEPT_ENCODING,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ];
    // One pass over the (few) names first: most calls carry none of these.
    if headers.keys().any(|k| DROPPED.contains(k)) {
        for name in DROPPED {
            headers.remove(name);
        }
    }
    headers
}

// ===== impl Attempt =====

impl Attempt {
    /// A plain call: sends, reads the whole body and parses it as `T`. The in-flight guard is
    /// released with the attempt, once the body has been read.
    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        self,
        method: Method,
        path: &'static str,
        body: Bytes,
    ) -> Result<T, AttemptError> {
        let resp = self.send(method, path, HeaderMap::new(), body).await?;
        let bytes = resp.bytes().await.map_err(AttemptError::Cut)?;
        serde_json::from_slice(&bytes).map_err(|e| AttemptError::Decode(e.into()))
    }

    /// Sends the request and returns the answer if its status is a success.
    ///
    /// Until the answer's head arrives the attempt can be rescued.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, AttemptError> {
        let inner = &*self.inner;
        let node = inner.snapshot.node(self.node);
        let upstream = &inner.routes.node(self.node).upstream;
        let url = upstream.url(path, self.route.model.as_deref());
        if !same_origin(&url, node.endpoint()) {
            return Err(AttemptError::Invalid("the url left the region's host".into()));
        }
        let key = if upstream.passes_caller_key() {
            self.route.caller_key.as_deref()
        } else {
            inner.keys[self.node.index()].0.as_ref()
        };
        upstream.authorize(&mut headers, key).map_err(|e| AttemptError::Invalid(Box::new(e)))?;
        let body = match self.route.rewrite_for(upstream) {
            Some(model) if !body.is_empty() => {
                let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                // A body whose model cannot be set would fail everywhere: a 400 of our own,
                // never sent and never blamed on the region.
                crate::models::rewrite_model(&body, content_type, model).ok_or_else(|| AttemptError::Status {
                    status: 400,
                    verdict: Verdict::Fatal,
                    body: crate::models::unrewritable_body(model),
                    headers: HeaderMap::new(),
                })?
            }
            _ => body,
        };
        if !body.is_empty() {
            headers.entry(header::CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
        }
        if let Some(trace) = self.route.trace
            && let Ok(value) = HeaderValue::from_str(&trace.to_string())
        {
            headers.insert(TraceParent::HEADER, value);
        }
        let request = inner.http.request(method, url).headers(headers).body(body).send();
        let rescued = async {
            if inner.policy.rescue {
                inner.rescue.rescued(self.node, self.started, &inner.budget).await
            } else {
                std::future::pending().await
            }
        };
        let mut response = tokio::select! {
            // A connect timeout means nothing was delivered: it is a connect error.
            r = request => r.map_err(|e| if e.is_timeout() && !e.is_connect() { AttemptError::Timeout } else { AttemptError::Connect(e) })?,
            () = rescued => return Err(AttemptError::Rescued),
        };
        let status = response.status();
        let mut verdict = classify_status(status, response.headers(), SystemTime::now());
        if verdict == Verdict::Credentials && upstream.passes_caller_key() {
            // The caller's own key was refused, not the region: the caller gets the answer,
            // the region stays in service, and no region with another key is tried.
            verdict = Verdict::Fatal;
        }
        if verdict == Verdict::Success {
            return Ok(response);
        }
        // Taken, not copied: the body's decoding was settled when the response was made.
        let headers = std::mem::take(response.headers_mut());
        let body = read_limited(response).await;
        Err(AttemptError::Status { status: status.as_u16(), verdict, body, headers })
    }
}

async fn read_limited(mut response: reqwest::Response) -> Bytes {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Bytes::from(buf)
}

// ===== impl Inner =====

/// State of one call across its attempts.
struct CallState {
    tried: Vec<NodeId>,
    rejected_keys: Vec<u32>,
    failed: Vec<FailedAttempt>,
    attempts: u32,
    rescues: u32,
    hedged: bool,
    first_node: Option<NodeId>,
    last_error: Option<Error>,
    /// A fatal answer that ends the call once no other attempt runs.
    fatal: Option<Error>,
    route: CallRoute,
}

/// What kind of call a failover loop runs, for the rules that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// A call whose timed-out attempt may have generated the answer: a plain completion.
    Once,
    /// A call that an attempt ending in a timeout cannot have served: a stream (committed at
    /// its first content, so an attempt that ends earlier delivered nothing), or a `GET`.
    Resendable,
}

impl Inner {
    fn entropy(&self) -> u64 {
        self.entropy.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
    }

    /// Chooses the node for the next attempt.
    fn choose(
        &self,
        state: &CallState,
        preferred: Option<NodeId>,
        caller: Option<Caller>,
        at: Instant,
    ) -> Result<NodeId, Option<Instant>> {
        let mut candidates = Vec::with_capacity(self.snapshot.len());
        let skip = |id: NodeId| {
            state.tried.contains(&id)
                || state.rejected_keys.contains(&self.keys[id.index()].1)
                || !self.routes.admits(id, &state.route, at)
                || self.credentials.excluded(id.index(), at).is_some()
        };
        let selection = self.health.select(at, skip, &mut candidates);
        if let Selection::Unavailable { retry_at } = selection {
            return Err(retry_at);
        }
        if matches!(selection, Selection::Eligible)
            && let Some(p) = preferred
            && candidates.contains(&p)
        {
            return Ok(p);
        }
        let view = PickView::new(&self.snapshot, &candidates, at, self.entropy()).with_caller_opt(caller);
        self.strategy.pick(&view).ok_or(None)
    }

    fn start<T, F>(
        self: &Arc<Self>,
        route: &CallRoute,
        node: NodeId,
        deadline: tokio::time::Instant,
        attempt: &F,
    ) -> AttemptFuture<T>
    where
        F: Fn(Attempt) -> Pin<Box<dyn Future<Output = Result<T, AttemptError>> + Send>>,
        T: Send + 'static,
    {
        let guard = self.snapshot.node(node).metrics().start_request();
        let started = now();
        let region = Arc::clone(&self.regions[node.index()]);
        let span = tracing::info_span!("sluice.attempt", region = %region, outcome = Empty, span_id = Empty);
        let route = match route.trace {
            Some(trace) => {
                CallRoute { trace: Some(telemetry::attempt_trace(&span, trace, self.entropy())), ..route.clone() }
            }
            None => route.clone(),
        };
        let fut = attempt(Attempt { inner: Arc::clone(self), node, guard, deadline, started, route });
        let limit = self.timeouts.attempt;
        let instruments = Arc::clone(&self.instruments);
        Box::pin(
            async move {
                let watch = telemetry::AttemptWatch::new(instruments, region, started);
                let result = match tokio::time::timeout(limit, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(AttemptError::Timeout),
                };
                watch.finish(result.as_ref().map(|_| ()));
                (node, started, result)
            }
            .instrument(span),
        )
    }

    /// Feeds an attempt's outcome to passive health.
    fn record(&self, node: NodeId, started: Instant, result: Result<(), &AttemptError>) {
        let at = now();
        let outcome = match result {
            Ok(()) => {
                let latency = at.saturating_duration_since(started);
                self.latencies.record(latency);
                Outcome::Success { latency }
            }
            Err(AttemptError::Connect(_) | AttemptError::Cut(_)) => Outcome::ConnectError,
            Err(AttemptError::Timeout | AttemptError::FirstChunk(_)) => Outcome::Timeout,
            Err(AttemptError::Invalid(_) | AttemptError::Decode(_)) => {
                Outcome::ServerError { status: 502, retry_after: None }
            }
            Err(AttemptError::Status { status, verdict: Verdict::Credentials, .. }) => {
                // A key problem, not a health problem: keep this region out of new calls for a
                // while, and say so once per spell rather than on every call.
                let window = self.policy.credentials_exclusion;
                if self.credentials.exclude(node.index(), *status, at, window) {
                    tracing::error!(region = %self.regions[node.index()], status, excluded_for = ?window,
                        "region rejected the api key; excluded for this key");
                }
                return;
            }
            Err(AttemptError::Status { status, verdict, .. }) => {
                // Client errors say nothing about the region.
                let Some(outcome) = http::StatusCode::from_u16(*status).ok().and_then(|s| verdict.outcome(s)) else {
                    return;
                };
                outcome
            }
            // A rescue was already judged.
            Err(AttemptError::Rescued) => return,
        };
        self.health.record(node, outcome, at);
    }

    fn hedge_delay(&self) -> Option<Duration> {
        match self.policy.hedge? {
            HedgePolicy::Fixed(d) => Some(d),
            HedgePolicy::Percentile { percentile, fallback } => {
                Some(self.latencies.percentile(percentile, 20).unwrap_or(fallback))
            }
        }
    }

    /// Every call: the failover loop inside the call's span, and its metrics.
    pub(crate) async fn run<T, F>(
        self: &Arc<Self>,
        options: &CallOptions,
        kind: CallKind,
        hedge: Option<HedgePolicy>,
        attempt: F,
    ) -> Result<Response<T>, Error>
    where
        F: Fn(Attempt) -> Pin<Box<dyn Future<Output = Result<T, AttemptError>> + Send>>,
        T: Send + 'static,
    {
        let model = self.models.label(options.model.as_deref());
        let span = tracing::info_span!(
            "sluice.call",
            model = %model,
            region = Empty,
            attempts = Empty,
            outcome = Empty,
            trace_id = Empty
        );
        if let Some(trace) = options.trace {
            telemetry::join_trace(&span, trace);
        }
        let started = now();
        let fut = self.run_attempts(options, kind, hedge, attempt).instrument(span.clone());
        let result = CALL_MODEL.scope(Arc::clone(&model), fut).await;
        telemetry::call_done(&self.instruments, &span, &model, result.as_ref().map(|r| &r.meta), started);
        result
    }

    /// The node of a region named by the caller, or `UnknownRegion` listing the known ones.
    fn find_region(&self, id: &str) -> Result<NodeId, Error> {
        self.snapshot.find(id).ok_or_else(|| {
            Error::new(ErrorKind::UnknownRegion { region: id.to_owned(), known: self.regions.join(", ") })
        })
    }

    /// The failover loop shared by every call.
    async fn run_attempts<T, F>(
        self: &Arc<Self>,
        options: &CallOptions,
        kind: CallKind,
        hedge: Option<HedgePolicy>,
        attempt: F,
    ) -> Result<Response<T>, Error>
    where
        F: Fn(Attempt) -> Pin<Box<dyn Future<Output = Result<T, AttemptError>> + Send>>,
        T: Send + 'static,
    {
        let start = now();
        let start_tokio = tokio::time::Instant::now();
        let total = options.timeout.map_or(self.timeouts.total, |t| t.min(self.timeouts.total));
        let deadline = start_tokio + total;
        let preferred = options.preferred.as_deref().map(|id| self.find_region(id)).transpose()?;
        let caller = options.caller.map(Caller::new).or(self.default_caller);
        let only = options.only.as_deref().map(|id| self.find_region(id)).transpose()?;
        self.budget.deposit(start);

        let mut state = CallState {
            tried: Vec::new(),
            rejected_keys: Vec::new(),
            failed: Vec::new(),
            attempts: 0,
            rescues: 0,
            hedged: false,
            first_node: None,
            last_error: None,
            fatal: None,
            route: CallRoute::of(options),
        };
        if let Some(only) = only {
            // Every other region counts as tried, so none is ever chosen.
            state.tried.extend(self.snapshot.ids().iter().copied().filter(|id| *id != only));
        }
        let mut inflight: FuturesUnordered<AttemptFuture<T>> = FuturesUnordered::new();
        // Nothing eligible only because of cooldowns: wait for the earliest to end, if that
        // is within both the call's deadline and `max_wait`.
        let wait_limit = deadline.min(start_tokio + self.policy.max_wait);
        let node = loop {
            match self.choose(&state, preferred, caller, now()) {
                Ok(node) => break node,
                Err(Some(retry_at)) if tokio::time::Instant::from_std(retry_at) <= wait_limit => {
                    tracing::debug!(wait = ?retry_at.saturating_duration_since(now()), "no region eligible; waiting for a cooldown to end");
                    // Wake a little after the end, so that the node is eligible by then.
                    tokio::time::sleep_until(tokio::time::Instant::from_std(retry_at) + Duration::from_millis(1)).await;
                }
                Err(retry_at) => {
                    let credentials = if retry_at.is_none() { self.credentials_error(now()) } else { None };
                    return Err(credentials.unwrap_or_else(|| Error::new(ErrorKind::NoEligibleRegion { retry_at })));
                }
            }
        };
        state.tried.push(node);
        state.first_node = Some(node);
        state.attempts = 1;
        inflight.push(self.start(&state.route, node, deadline, &attempt));
        let hedge_at = hedge.and_then(|_| self.hedge_delay()).map(|d| start_tokio + d);
        let mut hedge_armed = hedge_at.is_some();

        loop {
            let hedge_sleep = async {
                match hedge_at {
                    Some(at) if hedge_armed => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => {
                    // Dropping `inflight` cancels the requests and releases their guards.
                    let error = Error::new(ErrorKind::DeadlineExceeded);
                    let error = match state.fatal.take().or_else(|| state.last_error.take()) {
                        Some(last) => error.with_source(last),
                        None => error,
                    };
                    return Err(error.with_attempts(state.failed));
                }
                Some((node, started, result)) = inflight.next() => {
                    let result = match result {
                        Ok(value) => {
                            self.record(node, started, Ok(()));
                            let region = Arc::clone(&self.regions[node.index()]);
                            for other in &state.tried {
                                if *other != node && !state.failed.iter().any(|f| f.node == *other) {
                                    state.failed.push(FailedAttempt {
                                        region: Arc::clone(&self.regions[other.index()]),
                                        node: *other,
                                        failure: AttemptFailure::Cancelled,
                                        elapsed: now().saturating_duration_since(start),
                                    });
                                }
                            }
                            let meta = ResponseMeta {
                                region,
                                node,
                                attempts: state.attempts,
                                failed_over: state.first_node != Some(node),
                                failed_attempts: state.failed,
                                latency: now().saturating_duration_since(start),
                                rescues: state.rescues,
                                hedged: state.hedged,
                                model: state.route.model.clone(),
                            };
                            return Ok(Response { body: value, meta });
                        }
                        Err(e) => e,
                    };
                    self.record(node, started, Err(&result));
                    let model_gone = self.routes.observe(node, &state.route, &result, now());
                    let region = Arc::clone(&self.regions[node.index()]);
                    let (failure, mut disposition, error) = self.judge(&region, result, kind == CallKind::Resendable);
                    if options.deliver_once
                        && matches!(disposition, Disposition::Retry)
                        && !matches!(failure, AttemptFailure::Connect | AttemptFailure::Status { status: 429, .. })
                    {
                        disposition = Disposition::Fatal;
                    }
                    if model_gone {
                        // The region lacks the model: another region may have it.
                        disposition = Disposition::Retry;
                    }
                    tracing::debug!(region = %region, failure = %failure, "attempt failed");
                    if matches!(failure, AttemptFailure::Rescued) {
                        state.rescues += 1;
                    }
                    state.failed.push(FailedAttempt {
                        region,
                        node,
                        failure: failure.clone(),
                        elapsed: now().saturating_duration_since(started),
                    });
                    match disposition {
                        // A fatal answer ends the call, but only once no other attempt (a
                        // hedge, or the primary a hedge raced) may still succeed.
                        Disposition::Fatal if inflight.is_empty() => return Err(error.with_attempts(state.failed)),
                        Disposition::Fatal => {
                            state.fatal = Some(error);
                            continue;
                        }
                        Disposition::Credentials => {
                            let key = self.keys[node.index()].1;
                            if !state.rejected_keys.contains(&key) {
                                state.rejected_keys.push(key);
                            }
                        }
                        Disposition::Retry => {}
                    }
                    state.last_error = Some(error);
                    // Rescues already paid the budget when they fired.
                    let paid = matches!(failure, AttemptFailure::Rescued);
                    let next = if state.fatal.is_none() {
                        self.next_attempt(&mut state, preferred, caller, deadline, paid, &attempt)
                    } else {
                        None
                    };
                    if let Some(fut) = next {
                        inflight.push(fut);
                    } else if inflight.is_empty() {
                        let error = state.fatal.take().or_else(|| state.last_error.take()).unwrap_or_else(|| Error::new(ErrorKind::NoEligibleRegion { retry_at: None }));
                        return Err(error.with_attempts(state.failed));
                    }
                }
                () = hedge_sleep => {
                    hedge_armed = false;
                    if inflight.len() == 1 && (self.budget.try_withdraw(now()) || telemetry::budget_refused("hedge"))
                        && let Some(fut) = self.next_attempt(&mut state, preferred, caller, deadline, true, &attempt)
                    {
                        state.hedged = true;
                        if let Some(to) = state.tried.last() {
                            self.instruments.region_event(telemetry::HEDGES_TOTAL, &self.regions[to.index()]);
                        }
                        inflight.push(fut);
                    }
                }
            }
        }
    }

    /// When nothing else is left because regions refused our key: the error naming one.
    fn credentials_error(&self, at: Instant) -> Option<Error> {
        (0..self.regions.len()).find_map(|i| {
            let status = self.credentials.excluded(i, at)?;
            Some(Error::new(ErrorKind::Credentials { region: Arc::clone(&self.regions[i]), status }))
        })
    }

    /// Starts the next attempt if attempts, candidates and (unless `paid`) the budget allow.
    fn next_attempt<T, F>(
        self: &Arc<Self>,
        state: &mut CallState,
        preferred: Option<NodeId>,
        caller: Option<Caller>,
        deadline: tokio::time::Instant,
        paid: bool,
        attempt: &F,
    ) -> Option<AttemptFuture<T>>
    where
        F: Fn(Attempt) -> Pin<Box<dyn Future<Output = Result<T, AttemptError>> + Send>>,
        T: Send + 'static,
    {
        if state.attempts >= self.policy.max_attempts {
            return None;
        }
        let at = now();
        let node = self.choose(state, preferred, caller, at).ok()?;
        if !paid && !self.budget.try_withdraw(at) {
            tracing::debug!("retry budget exhausted; returning the last error");
            telemetry::budget_refused("retry");
            return None;
        }
        state.tried.push(node);
        state.attempts += 1;
        Some(self.start(&state.route, node, deadline, attempt))
    }

    /// Classifies a failed attempt: what to report, whether to go on, and the error to return
    /// if this is the last one.
    ///
    /// `safe` says whether a timed-out attempt can be re-sent without risk of generating the
    /// answer twice (streams, whose attempts end before their first chunk).
    fn judge(&self, region: &Arc<str>, error: AttemptError, safe: bool) -> (AttemptFailure, Disposition, Error) {
        let region = Arc::clone(region);
        match error {
            AttemptError::Connect(e) => {
                (AttemptFailure::Connect, Disposition::Retry, Error::new(ErrorKind::Connect { region }).with_source(e))
            }
            AttemptError::Timeout => {
                // The request was delivered: re-sending it may generate (and bill) the answer
                // twice, unless nothing was generated yet (a stream before its first content)
                // or the caller opted in.
                let again = safe || self.policy.retry_on_timeout;
                let disposition = if again { Disposition::Retry } else { Disposition::Fatal };
                (AttemptFailure::Timeout, disposition, Error::new(ErrorKind::Timeout { region }))
            }
            AttemptError::FirstChunk(source) => {
                let error = match source {
                    Some(e) => Error::new(ErrorKind::Connect { region }).with_source(e),
                    None => Error::new(ErrorKind::Timeout { region }),
                };
                (AttemptFailure::FirstChunk, Disposition::Retry, error)
            }
            AttemptError::Invalid(e) => (
                AttemptFailure::InvalidResponse,
                Disposition::Retry,
                Error::new(ErrorKind::InvalidResponse { region }).with_source(e),
            ),
            AttemptError::Decode(e) => (
                AttemptFailure::InvalidResponse,
                Disposition::Fatal,
                Error::new(ErrorKind::Decode { region }).with_source(e),
            ),
            // The region generated the answer and then lost it on the way: re-sending would
            // generate (and bill) it a second time.
            AttemptError::Cut(e) => (
                AttemptFailure::Connect,
                Disposition::Fatal,
                Error::new(ErrorKind::StreamInterrupted { region }).with_source(e),
            ),
            AttemptError::Rescued => {
                (AttemptFailure::Rescued, Disposition::Retry, Error::new(ErrorKind::Rescued { region }))
            }
            AttemptError::Status { status, verdict, body, headers } => {
                let retry_after = verdict.retry_after().map(|d| d.min(self.policy.retry_after_cap));
                let failure = AttemptFailure::Status { status, retry_after };
                let error = || {
                    Error::new(ErrorKind::Status { region: Arc::clone(&region), status, body, retry_after })
                        .with_headers(headers)
                };
                match verdict {
                    Verdict::Credentials => {
                        (failure, Disposition::Credentials, Error::new(ErrorKind::Credentials { region, status }))
                    }
                    v if v.is_retryable() => (failure, Disposition::Retry, error()),
                    _ => (failure, Disposition::Fatal, error()),
                }
            }
        }
    }
}
