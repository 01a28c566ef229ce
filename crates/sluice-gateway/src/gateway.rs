//! The gateway: its configuration (a builder), its shared state, and the axum `Router`.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sluice_client::{Client, GeoPoint};
use sluice_health::HealthEventKind;
use tokio::sync::Semaphore;

use crate::{
    HeaderPolicy, access_log,
    admin::{self, AdminOptions},
    idempotency::{DEFAULT_IDEMPOTENCY_BYTES, DEFAULT_IDEMPOTENCY_KEYS, DEFAULT_IDEMPOTENCY_TTL, IdempotencyStore},
    metrics::{GatewayMetrics, Prices},
    proxy,
    region_state::{RegionState, now},
    state_map::{DEFAULT_STATE_CAPACITY, DEFAULT_STATE_TTL, StateMap},
};

/// Default `max_concurrent_calls`: calls beyond it get an early 503 with Retry-After.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 1024;
/// Default largest request body (images inline as base64 make chat bodies large; audio
/// uploads are up to 25 MB).
pub const DEFAULT_MAX_BODY: usize = 64 << 20;
/// Bodies larger than this are checked on the blocking pool, not on the event loop.
pub(crate) const OFFLOAD_BODY: usize = 256 << 10;

/// Configures a [`Gateway`].
#[derive(Debug)]
pub struct GatewayBuilder {
    client: Client,
    required_key: Option<String>,
    max_concurrent_calls: usize,
    max_body: usize,
    headers: HeaderPolicy,
    state_capacity: usize,
    state_ttl: Duration,
    idempotency: (Duration, usize, usize),
    stream_usage: bool,
    prices: Prices,
    models: Vec<String>,
    prometheus: Option<PrometheusHandle>,
    caller: Option<GeoPoint>,
    access_log: bool,
    admin: Option<AdminOptions>,
}

/// An OpenAI-compatible gateway over a [`Client`]. Cheap to clone.
///
/// [`router`](Gateway::router) is an axum `Router` (a tower `Service`) to serve or mount.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// State shared by every call.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) draining: AtomicBool,
    pub(crate) required_key: Option<String>,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) headers: HeaderPolicy,
    pub(crate) states: StateMap,
    pub(crate) idempotency: Arc<IdempotencyStore>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) max_body: usize,
    pub(crate) stream_usage: bool,
    pub(crate) prices: Prices,
    pub(crate) prometheus: Option<PrometheusHandle>,
    pub(crate) caller: Option<GeoPoint>,
    access_log: bool,
    admin: Option<AdminOptions>,
    request_ids: AtomicU64,
    request_prefix: u32,
}

// ===== impl GatewayBuilder =====

impl GatewayBuilder {
    /// Requires `Authorization: Bearer <key>` on `/v1/*`.
    pub fn require_key(mut self, key: impl Into<String>) -> Self {
        self.required_key = Some(key.into());
        self
    }

    /// Calls beyond this many at once get an early 503 with Retry-After (default 1,024).
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.max_concurrent_calls = n.max(1);
        self
    }

    /// Largest request body, in bytes (default 64 MiB); larger ones get a 413.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Which headers cross the gateway in each direction.
    pub fn header_policy(mut self, policy: HeaderPolicy) -> Self {
        self.headers = policy;
        self
    }

    /// How many object ids (responses, files, batches, vector stores) are remembered with
    /// their region, and for how long (default 100,000 for 24 h).
    pub fn state_map(mut self, capacity: usize, ttl: Duration) -> Self {
        self.state_capacity = capacity;
        self.state_ttl = ttl;
        self
    }

    /// How long an `Idempotency-Key` is honoured, and the bounds of the store (default
    /// 10 min, 10,000 keys, 64 MiB of answers).
    pub fn idempotency(mut self, ttl: Duration, max_keys: usize, max_bytes: usize) -> Self {
        self.idempotency = (ttl, max_keys, max_bytes);
        self
    }

    /// Asks upstreams for usage on streams (`stream_options.include_usage`) so that tokens
    /// are counted; callers who did not ask do not see the extra chunk. Default on.
    pub fn stream_usage(mut self, on: bool) -> Self {
        self.stream_usage = on;
        self
    }

    /// Prices for the cost counter.
    pub fn prices(mut self, prices: Prices) -> Self {
        self.prices = prices;
        self
    }

    /// Models that may appear as a `model` metric label (beside the ones regions list).
    pub fn models(mut self, models: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.models.extend(models.into_iter().map(Into::into));
        self
    }

    /// Serves `/metrics` from this Prometheus recorder.
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// The location used to order regions nearest first when an object's region is unknown
    /// and the call brings no `x-sluice-location`.
    pub fn default_caller(mut self, location: GeoPoint) -> Self {
        self.caller = Some(location);
        self
    }

    /// Writes one access-log line per call to `/v1/*` (see [`access_log`](crate::access_log));
    /// off by default for library users, on in `sluice serve`.
    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// Serves the admin API under `/admin/` (see [`admin`](crate::admin)); off by default.
    pub fn admin(mut self, options: AdminOptions) -> Self {
        self.admin = Some(options);
        self
    }

    /// Builds the gateway. Inside a tokio runtime, this starts its background work
    /// (health event counters, metric upkeep), which ends when the gateway is dropped.
    pub fn build(self) -> Gateway {
        let metrics = GatewayMetrics::new(&self.client);
        metrics.models().add(self.models.iter().map(String::as_str));
        metrics.models().add(self.prices.models());
        let (ttl, keys, bytes) = self.idempotency;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        let shared = Arc::new(Shared {
            client: self.client,
            draining: AtomicBool::new(false),
            required_key: self.required_key,
            metrics,
            headers: self.headers,
            states: StateMap::new(self.state_capacity, self.state_ttl),
            idempotency: IdempotencyStore::new(ttl, keys, bytes),
            permits: Arc::new(Semaphore::new(self.max_concurrent_calls)),
            max_body: self.max_body,
            stream_usage: self.stream_usage,
            prices: self.prices,
            prometheus: self.prometheus,
            caller: self.caller,
            access_log: self.access_log,
            admin: self.admin,
            request_ids: AtomicU64::new(0),
            request_prefix: seed ^ std::process::id().rotate_left(16),
        });
        shared.learn_models();
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(background(Arc::downgrade(&shared)));
        }
        Gateway { shared }
    }
}

// ===== impl Gateway =====

impl Gateway {
    /// Starts configuring a gateway over `client`.
    pub fn builder(client: Client) -> GatewayBuilder {
        GatewayBuilder {
            client,
            required_key: None,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_body: DEFAULT_MAX_BODY,
            headers: HeaderPolicy::default(),
            state_capacity: DEFAULT_STATE_CAPACITY,
            state_ttl: DEFAULT_STATE_TTL,
            idempotency: (DEFAULT_IDEMPOTENCY_TTL, DEFAULT_IDEMPOTENCY_KEYS, DEFAULT_IDEMPOTENCY_BYTES),
            stream_usage: true,
            prices: Prices::new(),
            models: Vec::new(),
            prometheus: None,
            caller: None,
            access_log: false,
            admin: None,
        }
    }

    /// The routes: `/v1/*`, `/metrics`, `/healthz`, `/readyz`, and `/admin/*` when the admin
    /// API is on. Mount it or serve it.
    pub fn router(&self) -> Router {
        let v1 = any(proxy::v1);
        let v1 = if self.shared.access_log { v1.layer(axum::middleware::from_fn(access_log::layer)) } else { v1 };
        let router = Router::new()
            .route("/v1/{*path}", v1)
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .fallback(not_found)
            .with_state(Arc::clone(&self.shared));
        match &self.shared.admin {
            Some(options) => router.merge(admin::router(self.shared.client.clone(), options.clone())),
            None => router,
        }
    }

    /// Refuses new calls from now on (503 with `Connection: close`); calls in flight go on.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// The client the gateway routes through.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Regions that take new calls right now.
    pub fn serving_regions(&self) -> usize {
        self.shared.serving_regions()
    }
}

// ===== impl Shared =====

impl Shared {
    /// Regions that take new calls right now.
    pub(crate) fn serving_regions(&self) -> usize {
        let at = now();
        let health = self.client.health();
        self.client
            .snapshot()
            .nodes()
            .iter()
            .filter(|n| health.status(n.id(), at).is_some_and(|s| RegionState::of(&s, at).is_serving()))
            .count()
    }

    fn refresh_gauges(&self) {
        let at = now();
        let health = self.client.health();
        let snapshot = self.client.snapshot();
        for node in snapshot.nodes() {
            if let Some(status) = health.status(node.id(), at) {
                let s = RegionState::of(&status, at);
                self.metrics.with_region(node.id(), node.region().id(), |m| {
                    m.state.set(s.code());
                    m.eligible.set(if s.is_serving() { 1.0 } else { 0.0 });
                });
            }
        }
        // A region a reload removed serves no more.
        for m in self.metrics.regions().iter() {
            if !snapshot.nodes().iter().any(|n| n.region().id() == &*m.id) {
                m.eligible.set(0.0);
            }
        }
    }

    /// Adds the models regions list (from configuration or their `/models` answers) to the
    /// `model` label values, up to the label bound.
    fn learn_models(&self) {
        let lists = self.client.region_models();
        self.metrics.models().add(lists.iter().filter_map(|(_, m)| m.as_ref()).flatten().map(String::as_str));
    }

    /// A new request id, unique within the process and unlikely to repeat across restarts.
    pub(crate) fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("sluice-{:08x}{:08x}", self.request_prefix, n)
    }
}

/// Counts ejections and cooldowns from the health event channel; folds histogram samples in.
async fn background(shared: Weak<Shared>) {
    let (mut events, upkeep) = match shared.upgrade() {
        Some(s) => (s.client.health().subscribe(), s.prometheus.clone()),
        None => return,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let Some(s) = shared.upgrade() else { return };
                    s.metrics.with_region(event.node, &event.region, |m| match event.kind {
                        HealthEventKind::Ejected { .. } => m.ejections.increment(1),
                        HealthEventKind::CooldownStarted { .. } => m.cooldowns.increment(1),
                        _ => {}
                    });
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let Some(s) = shared.upgrade() else { return };
                // The exporter's upkeep drains every histogram sample recorded since the last
                // one: on a blocking thread, so that a busy gateway's event loop never waits
                // for it, and every second, so that each drain stays small.
                if let Some(h) = &upkeep {
                    let h = h.clone();
                    let _ = tokio::task::spawn_blocking(move || h.run_upkeep()).await;
                }
                if ticks.is_multiple_of(5) {
                    s.learn_models();
                }
                ticks += 1;
            }
        }
    }
}

// ===== handlers =====

async fn metrics_text(State(state): State<Arc<Shared>>) -> Response {
    state.refresh_gauges();
    match &state.prometheus {
        Some(h) => {
            // Rendering drains and formats every series: off the event loop.
            let h = h.clone();
            match tokio::task::spawn_blocking(move || h.render()).await {
                Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        None => proxy::openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            "no metrics recorder",
        ),
    }
}

/// Liveness: 200 while the gateway can answer, even when no region is eligible (it then
/// answers 503s quickly, which is serving). 503 only while draining.
async fn healthz(State(state): State<Arc<Shared>>) -> Response {
    let (serving, regions) = region_states(&state);
    if state.draining.load(Ordering::SeqCst) {
        return proxy::json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "draining", "regions": regions}),
        );
    }
    let word = if serving == 0 { "ok, no region eligible" } else { "ok" };
    proxy::json_response(StatusCode::OK, &json!({"status": word, "regions": regions}))
}

/// Readiness: 200 when a region is eligible and the gateway is not draining.
async fn readyz(State(state): State<Arc<Shared>>) -> Response {
    let (serving, regions) = region_states(&state);
    let draining = state.draining.load(Ordering::SeqCst);
    let (status, word) = match (draining, serving) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        (false, 0) => (StatusCode::SERVICE_UNAVAILABLE, "no region eligible"),
        _ => (StatusCode::OK, "ok"),
    };
    proxy::json_response(status, &json!({"status": word, "regions": regions}))
}

/// Regions serving now, and each region's state in words.
fn region_states(state: &Shared) -> (usize, serde_json::Map<String, serde_json::Value>) {
    let at = now();
    let health = state.client.health();
    let mut regions = serde_json::Map::new();
    let mut serving = 0;
    for node in state.client.snapshot().nodes() {
        let s = health.status(node.id(), at).map(|s| RegionState::of(&s, at));
        if s.is_some_and(RegionState::is_serving) {
            serving += 1;
        }
        regions.insert(node.region().id().to_owned(), json!(s.map_or("unknown".to_owned(), RegionState::label)));
    }
    (serving, regions)
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    proxy::openai_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("not_found"),
        &format!("sluice serves /v1/*, /metrics, /healthz and /readyz, not {method} {}", uri.path()),
    )
}
