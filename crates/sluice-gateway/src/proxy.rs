//! `sluice serve`: an OpenAI-compatible proxy that routes through `sluice-client`.
//!
//! Bodies pass through unchanged in both directions ([`Client::raw`]); the proxy only checks
//! that a request body is JSON, reads its own `x-sluice-*` headers, and turns routing errors
//! into OpenAI-shaped error answers.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::ListenerExt,
};
use futures_util::{Stream, StreamExt};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use sluice_client::{CallOptions, Client, Error, ErrorKind, GeoPoint, RawBody, RawRequest};
use sluice_health::HealthEventKind;
use tokio::{net::TcpListener, sync::watch, time::Sleep};

use crate::{
    ServeError as CliError,
    error::chain,
    region_state::{RegionState, now},
};

/// Header naming the region that served a call (response), or the preferred one (request).
pub const REGION_HEADER: &str = "x-sluice-region";
/// Response header: attempts made for the call.
pub const ATTEMPTS_HEADER: &str = "x-sluice-attempts";
/// Request header: the caller's location, `LAT,LON` in degrees.
pub const LOCATION_HEADER: &str = "x-sluice-location";

/// Largest request body accepted (images inline as base64 make chat bodies large).
const MAX_BODY: usize = 64 << 20;

/// Buckets of the latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// How the proxy runs.
#[derive(Debug)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Environment variable holding the key callers must send as `Authorization: Bearer`.
    pub require_key_env: Option<String>,
    /// Longest wait for in-flight calls and streams on shutdown.
    pub drain_timeout: Duration,
}

struct AppState {
    client: Client,
    /// Known region ids, comma-separated, for error messages.
    known: String,
    draining: AtomicBool,
    required_key: Option<String>,
    metrics: ProxyMetrics,
}

/// Per-region instruments, registered once so that the request path only bumps atomics.
struct RegionMetrics {
    requests: Counter,
    errors: Counter,
    latency: Histogram,
    ejections: Counter,
    cooldowns: Counter,
    state: Gauge,
    eligible: Gauge,
}

struct ProxyMetrics {
    handle: PrometheusHandle,
    regions: Vec<RegionMetrics>,
    in_flight: Gauge,
    rejected: Counter,
}

/// Runs the proxy until SIGTERM or Ctrl-C, then drains.
pub async fn run(client: Client, options: ServeOptions) -> Result<ExitCode, CliError> {
    let required_key = match &options.require_key_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
            _ => {
                return Err(CliError::Usage(format!(
                    "--require-key-env {var}: environment variable {var} is not set or empty"
                )));
            }
        },
        None => None,
    };
    let listener = TcpListener::bind(options.listen).await.map_err(|e| {
        let addr = options.listen;
        if e.kind() == io::ErrorKind::AddrInUse {
            CliError::Failed(format!("cannot listen on {addr}: the address is already in use"))
        } else {
            CliError::Failed(format!("cannot listen on {addr}: {e}"))
        }
    })?;
    let addr = listener.local_addr().map_err(|e| CliError::Failed(format!("cannot read the bound address: {e}")))?;
    if !addr.ip().is_loopback() && required_key.is_none() {
        tracing::warn!(
            %addr,
            "listening beyond loopback without --require-key-env: anyone who can reach this port can spend your keys"
        );
    }
    let metrics = ProxyMetrics::install(&client)?;
    let snapshot = client.snapshot();
    let ids: Vec<&str> = snapshot.nodes().iter().map(|n| n.region().id()).collect();
    let state = Arc::new(AppState {
        known: ids.join(", "),
        client: client.clone(),
        draining: AtomicBool::new(false),
        required_key,
        metrics,
    });
    tokio::spawn(count_health_events(Arc::clone(&state)));
    // Histogram samples are buffered until upkeep folds them in; keep memory flat.
    let upkeep = state.metrics.handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });

    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::clone(&state));

    let signal = shutdown_signal()?;
    println!(
        "sluice serve: listening on http://{addr} ({} region(s): {}; strategy {})",
        ids.len(),
        state.known,
        client.strategy_name()
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let (signalled_tx, mut signalled_rx) = watch::channel(false);
    let shutdown_state = Arc::clone(&state);
    let shutdown = async move {
        signal.await;
        shutdown_state.draining.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: refusing new calls, draining in-flight calls and streams");
        let _ = signalled_tx.send(true);
    };
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    let drain_limit = async {
        while !*signalled_rx.borrow_and_update() {
            if signalled_rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        tokio::time::sleep(options.drain_timeout).await;
    };
    let drained = tokio::select! {
        r = server => {
            r.map_err(|e| CliError::Failed(format!("server error: {e}")))?;
            true
        }
        () = drain_limit => false,
    };
    client.shutdown_probing().await;
    if drained {
        eprintln!("sluice serve: drained, bye");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("sluice serve: drain timeout passed with calls still running; exiting");
        Ok(ExitCode::from(1))
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered at once so that a signal sent right after the
/// "listening" line is not lost to the default action.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let register = |kind: SignalKind| {
        signal(kind).map_err(|e| CliError::Failed(format!("cannot listen for shutdown signals: {e}")))
    };
    let (mut term, mut int) = (register(SignalKind::terminate())?, register(SignalKind::interrupt())?);
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Counts ejections and cooldowns from the health event channel.
async fn count_health_events(state: Arc<AppState>) {
    let mut events = state.client.health().subscribe();
    loop {
        match events.recv().await {
            Ok(event) => {
                let Some(m) = state.metrics.regions.get(event.node.index()) else { continue };
                match event.kind {
                    HealthEventKind::Ejected { .. } => m.ejections.increment(1),
                    HealthEventKind::CooldownStarted { .. } => m.cooldowns.increment(1),
                    _ => {}
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

// ===== handlers =====

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => proxy(&state, Method::POST, "chat/completions", headers, body).await,
        Err(rejection) => {
            state.metrics.rejected.increment(1);
            let code =
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "invalid_body" };
            openai_error(rejection.status(), "invalid_request_error", Some(code), &rejection.body_text())
        }
    }
}

async fn list_models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    proxy(&state, Method::GET, "models", headers, Bytes::new()).await
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    state.refresh_gauges();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.handle.render()).into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let at = now();
    let health = state.client.health();
    let snapshot = state.client.snapshot();
    let mut regions = serde_json::Map::new();
    let mut serving = 0;
    for node in snapshot.nodes() {
        let s = health.status(node.id(), at).map(|s| RegionState::of(&s, at));
        if s.is_some_and(RegionState::is_serving) {
            serving += 1;
        }
        regions.insert(node.region().id().to_owned(), json!(s.map_or("unknown".to_owned(), RegionState::label)));
    }
    let draining = state.draining.load(Ordering::SeqCst);
    let (status, word) = match (draining, serving) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        (false, 0) => (StatusCode::SERVICE_UNAVAILABLE, "no region eligible"),
        _ => (StatusCode::OK, "ok"),
    };
    json_response(status, &json!({"status": word, "regions": regions}))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    openai_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        Some("method_not_allowed"),
        &format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("not_found"),
        &format!("sluice serves POST /v1/chat/completions and GET /v1/models, not {method} {}", uri.path()),
    )
}

// ===== the proxy =====

async fn proxy(state: &AppState, method: Method, path: &str, headers: HeaderMap, body: Bytes) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        state.metrics.rejected.increment(1);
        let mut r = openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("shutting_down"),
            "sluice is shutting down and takes no new calls",
        );
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    if let Some(required) = &state.required_key
        && !authorized(&headers, required)
    {
        state.metrics.rejected.increment(1);
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "missing or wrong api key for this sluice proxy (send Authorization: Bearer <key>)",
        );
    }
    let options = match call_options(&headers, state) {
        Ok(o) => o,
        Err(r) => {
            state.metrics.rejected.increment(1);
            return *r;
        }
    };
    if method == Method::POST
        && let Err(message) = check_json(&body)
    {
        state.metrics.rejected.increment(1);
        return openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("invalid_json"), &message);
    }

    let mut forward = headers;
    forward.remove(REGION_HEADER);
    forward.remove(LOCATION_HEADER);
    forward.remove(header::COOKIE);
    let request = RawRequest { method, path: path.to_owned(), headers: forward, body };
    state.metrics.in_flight.increment(1.0);
    let result = state.client.raw(request, &options).await;
    match result {
        Ok(resp) => {
            let meta = &resp.meta;
            for failed in &meta.failed_attempts {
                if let Some(m) = state.metrics.regions.get(failed.node.index()) {
                    m.requests.increment(1);
                    m.errors.increment(1);
                }
            }
            let region = state.metrics.regions.get(meta.node.index());
            if let Some(m) = region {
                m.requests.increment(1);
                m.latency.record(meta.latency.as_secs_f64());
            }
            let mut out_headers = HeaderMap::with_capacity(resp.headers.len() + 2);
            let sse = resp.body.is_event_stream();
            for (name, value) in &resp.headers {
                if is_hop_by_hop(name) || (sse && name == header::CONTENT_LENGTH) {
                    continue;
                }
                out_headers.append(name.clone(), value.clone());
            }
            if let Ok(v) = HeaderValue::from_str(&meta.region) {
                out_headers.insert(REGION_HEADER, v);
            }
            out_headers.insert(ATTEMPTS_HEADER, HeaderValue::from(meta.attempts));
            let body = ProxyBody {
                inner: resp.body,
                sse,
                errors: region.map(|m| m.errors.clone()),
                in_flight: Some(state.metrics.in_flight.clone()),
                abort: None,
                done: false,
            };
            let mut response = Response::new(Body::from_stream(body));
            *response.status_mut() = resp.status;
            *response.headers_mut() = out_headers;
            response
        }
        Err(e) => {
            state.metrics.in_flight.decrement(1.0);
            for failed in e.failed_attempts() {
                if let Some(m) = state.metrics.regions.get(failed.node.index()) {
                    m.requests.increment(1);
                    m.errors.increment(1);
                }
            }
            // Every region refused or timed out and health agrees they are all out: that is
            // "no eligible region" for the caller, not one bad gateway.
            let all_out = matches!(e.kind(), ErrorKind::Connect { .. } | ErrorKind::Timeout { .. })
                && state.serving_regions() == 0;
            error_response(&e, all_out)
        }
    }
}

/// Reads `x-sluice-region` and `x-sluice-location`.
fn call_options(headers: &HeaderMap, state: &AppState) -> Result<CallOptions, Box<Response>> {
    let mut options = CallOptions::new();
    if let Some(v) = headers.get(REGION_HEADER) {
        let id = v.to_str().unwrap_or("").trim();
        if !id.is_empty() {
            if state.client.snapshot().find(id).is_none() {
                return Err(Box::new(openai_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("unknown_region"),
                    &format!("{REGION_HEADER}: unknown region `{id}` (known: {})", state.known),
                )));
            }
            options = options.prefer_region(id);
        }
    }
    if let Some(v) = headers.get(LOCATION_HEADER) {
        match v.to_str().ok().and_then(parse_location) {
            Some(point) => options = options.caller(point),
            None => {
                return Err(Box::new(openai_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("invalid_location"),
                    &format!(
                        "{LOCATION_HEADER} must be `LAT,LON` in degrees (lat within -90..=90, lon within -180..=180), got `{}`",
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                )));
            }
        }
    }
    Ok(options)
}

/// `LAT,LON` in decimal degrees.
pub fn parse_location(s: &str) -> Option<GeoPoint> {
    let (lat, lon) = s.split_once(',')?;
    let point = GeoPoint::new(lat.trim().parse().ok()?, lon.trim().parse().ok()?);
    point.is_valid().then_some(point)
}

/// The body must be one JSON object.
fn check_json(body: &[u8]) -> Result<(), String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err("the request body is empty; send a JSON object".to_owned()),
        Some(b'{') => {}
        Some(_) => return Err("the request body must be a JSON object".to_owned()),
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map(|_| ())
        .map_err(|e| format!("the request body is not valid JSON: {e}"))
}

fn authorized(headers: &HeaderMap, required: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    else {
        return false;
    };
    // Compare in time independent of where the first difference is.
    let (a, b) = (given.trim().as_bytes(), required.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
fn openai_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    json_response(status, &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
}

/// Maps a routing error to an answer with the right status.
fn error_response(e: &Error, all_out: bool) -> Response {
    let message = e.to_string();
    let mut response = match e.kind() {
        _ if all_out => {
            let mut r = openai_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("no_eligible_region"),
                &format!("no region is eligible: every region is down ({message})"),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        ErrorKind::NoEligibleRegion { .. } => {
            let mut r =
                openai_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("no_eligible_region"), &message);
            let secs = e.retry_after().map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        ErrorKind::Status { status, body, retry_after, .. } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            let passthrough = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .is_some_and(|v| v.get("error").is_some_and(serde_json::Value::is_object));
            let mut r = if passthrough {
                (code, [(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
            } else {
                let kind = if code.is_client_error() { "invalid_request_error" } else { "server_error" };
                openai_error(code, kind, None, &message)
            };
            if let Some(after) = retry_after {
                let secs = after.as_secs_f64().ceil().max(1.0) as u64;
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            r
        }
        ErrorKind::Credentials { .. } => {
            openai_error(StatusCode::BAD_GATEWAY, "server_error", Some("upstream_credentials_rejected"), &message)
        }
        ErrorKind::Timeout { .. } | ErrorKind::DeadlineExceeded => {
            openai_error(StatusCode::GATEWAY_TIMEOUT, "server_error", Some("upstream_timeout"), &message)
        }
        ErrorKind::UnknownRegion { .. } => {
            openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("unknown_region"), &message)
        }
        ErrorKind::InvalidRequest => {
            openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("invalid_request"), &message)
        }
        _ => openai_error(StatusCode::BAD_GATEWAY, "server_error", Some("upstream_error"), &message),
    };
    if let Some(region) = e.region()
        && let Ok(v) = HeaderValue::from_str(region)
    {
        response.headers_mut().insert(REGION_HEADER, v);
    }
    response.headers_mut().insert(ATTEMPTS_HEADER, HeaderValue::from(e.failed_attempts().len()));
    response
}

/// The upstream body, bytes unchanged. A break turns into an SSE error event (for event
/// streams) and then an aborted connection, so a cut answer never looks complete.
struct ProxyBody {
    inner: RawBody,
    sse: bool,
    errors: Option<Counter>,
    in_flight: Option<Gauge>,
    abort: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl ProxyBody {
    fn finish(&mut self) {
        if let Some(g) = self.in_flight.take() {
            g.decrement(1.0);
        }
    }
}

impl Stream for ProxyBody {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
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
            Some(Ok(bytes)) => Poll::Ready(Some(Ok(bytes))),
            Some(Err(e)) => {
                self.finish();
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
                    Poll::Ready(Some(Ok(Bytes::from(format!("data: {event}\n\n")))))
                } else {
                    self.done = true;
                    Poll::Ready(Some(Err(io::Error::other(e.to_string()))))
                }
            }
            None => {
                self.finish();
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.finish();
    }
}

// ===== impl AppState =====

impl AppState {
    /// Regions that take new calls right now.
    fn serving_regions(&self) -> usize {
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
        for (node, m) in self.client.snapshot().nodes().iter().zip(&self.metrics.regions) {
            if let Some(status) = health.status(node.id(), at) {
                let s = RegionState::of(&status, at);
                m.state.set(s.code());
                m.eligible.set(if s.is_serving() { 1.0 } else { 0.0 });
            }
        }
    }
}

// ===== impl ProxyMetrics =====

impl ProxyMetrics {
    fn install(client: &Client) -> Result<Self, CliError> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("sluice_request_duration_seconds".to_owned()), LATENCY_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(|e| CliError::Failed(format!("cannot set up metrics: {e}")))?;
        metrics::describe_counter!("sluice_requests_total", "Attempts sent to a region (failed ones included).");
        metrics::describe_counter!("sluice_errors_total", "Failed attempts and broken streams, per region.");
        metrics::describe_histogram!(
            "sluice_request_duration_seconds",
            metrics::Unit::Seconds,
            "Time from the call's start to the answer's head (first chunk for streams), per serving region."
        );
        metrics::describe_gauge!(
            "sluice_region_health_state",
            "0 unknown, 1 healthy, 2 slow start, 3 cooldown, 4 ejected, 5 unhealthy, 6 drained."
        );
        metrics::describe_gauge!("sluice_region_eligible", "1 when the region takes new calls.");
        metrics::describe_counter!("sluice_region_ejections_total", "Passive outlier ejections.");
        metrics::describe_counter!("sluice_region_cooldowns_total", "Retry-After cooldowns started.");
        metrics::describe_gauge!("sluice_proxy_in_flight", "Calls and streams in progress.");
        metrics::describe_counter!("sluice_proxy_rejected_total", "Calls refused by the proxy itself (400, 401, 503).");
        let regions = client
            .snapshot()
            .nodes()
            .iter()
            .map(|n| {
                let id = n.region().id().to_owned();
                let m = RegionMetrics {
                    requests: metrics::counter!("sluice_requests_total", "region" => id.clone()),
                    errors: metrics::counter!("sluice_errors_total", "region" => id.clone()),
                    latency: metrics::histogram!("sluice_request_duration_seconds", "region" => id.clone()),
                    ejections: metrics::counter!("sluice_region_ejections_total", "region" => id.clone()),
                    cooldowns: metrics::counter!("sluice_region_cooldowns_total", "region" => id.clone()),
                    state: metrics::gauge!("sluice_region_health_state", "region" => id.clone()),
                    eligible: metrics::gauge!("sluice_region_eligible", "region" => id),
                };
                // Make every series visible from the first scrape.
                for c in [&m.requests, &m.errors, &m.ejections, &m.cooldowns] {
                    c.increment(0);
                }
                m.eligible.set(1.0);
                m
            })
            .collect();
        let in_flight = metrics::gauge!("sluice_proxy_in_flight");
        in_flight.set(0.0);
        let rejected = metrics::counter!("sluice_proxy_rejected_total");
        rejected.increment(0);
        Ok(Self { handle, regions, in_flight, rejected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert!(parse_location("37.56,126.97").is_some());
        assert!(parse_location(" -33.9 , 151.2 ").is_some());
        for bad in ["", "37.56", "37.56;126.97", "x,y", "95,0", "0,181", "NaN,0", "1,2,3"] {
            assert!(parse_location(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn json_bodies() {
        assert!(check_json(br#"{"model":"m","messages":[],"extra":{"a":1}}"#).is_ok());
        for bad in [&b""[..], b"  ", b"[1]", b"{\"a\":", b"{} {}", b"null"] {
            assert!(check_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bearer_keys() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        assert!(authorized(&h, "k1"));
        assert!(!authorized(&h, "k12"));
        assert!(!authorized(&h, "k"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic k1"));
        assert!(!authorized(&h, "k1"));
    }
}
