//! The `/v1/*` handler: reads the call, picks how it is routed (by model with failover, to
//! the region holding its object, or passed through once), and turns the client's answer or
//! error into an HTTP answer.

use std::{sync::Arc, time::Instant};

use axum::{
    Extension,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use sluice_client::{CallOptions, Error, ErrorKind, GeoPoint, RawRequest, RawResponse, TraceParent};

use crate::{
    access_log::Notes,
    body::{CallGuard, Findings, ProxyBody},
    gateway::{OFFLOAD_BODY, Shared},
    idempotency::{Claim, Stored, fingerprint},
    metrics::status_label,
    routes::{BodyFields, BodyKind, Route, multipart_model, route},
};

/// Header naming the region that served a call (response), or the preferred one (request).
pub const REGION_HEADER: &str = "x-sluice-region";
/// Response header: attempts made for the call.
pub const ATTEMPTS_HEADER: &str = "x-sluice-attempts";
/// Request header: the caller's location, `LAT,LON` in degrees.
pub const LOCATION_HEADER: &str = "x-sluice-location";
/// Request header: the residency zones the call may use, comma-separated (`eu` or `eu,uk`).
pub const ZONES_HEADER: &str = "x-sluice-zones";
/// Response header: Sluice's id for the call (the upstream's `x-request-id` passes unchanged).
pub const REQUEST_ID_HEADER: &str = "x-sluice-request-id";
/// Response header: the model that served the call.
pub const MODEL_HEADER: &str = "x-sluice-model";
/// Response header: `true` when the answer is a stored one replayed for an `Idempotency-Key`.
pub const REPLAY_HEADER: &str = "x-sluice-idempotent-replay";

/// The names Sluice sets on answers, built at compile time: inserting by `&str` parses the
/// name and copies it into a new allocation on every call.
mod names {
    use axum::http::HeaderName;

    pub(super) const REGION: HeaderName = HeaderName::from_static(super::REGION_HEADER);
    pub(super) const ATTEMPTS: HeaderName = HeaderName::from_static(super::ATTEMPTS_HEADER);
    pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static(super::REQUEST_ID_HEADER);
    pub(super) const MODEL: HeaderName = HeaderName::from_static(super::MODEL_HEADER);
    pub(super) const REPLAY: HeaderName = HeaderName::from_static(super::REPLAY_HEADER);
    pub(super) const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
}

/// One call as the gateway sends it.
struct Call {
    route: Route,
    request: RawRequest,
    options: CallOptions,
    fields: BodyFields,
    hide_usage_chunk: bool,
    request_id: String,
    caller: Option<GeoPoint>,
    /// The access log's notes, while it is on.
    notes: Option<Notes>,
}

/// `/v1/*`.
pub(crate) async fn v1(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    notes: Option<Extension<Notes>>,
    body: Body,
) -> Response {
    let request_id = shared.request_id();
    let notes = notes.map(|Extension(n)| n);
    let mut response = handle(&shared, method, uri, headers, body, &request_id, notes).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(names::REQUEST_ID, v);
    }
    response
}

async fn handle(
    shared: &Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    request_id: &str,
    notes: Option<Notes>,
) -> Response {
    if shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        shared.metrics.rejected.increment(1);
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
    if let Some(required) = &shared.required_key
        && !authorized(&headers, required)
    {
        shared.metrics.rejected.increment(1);
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "missing or wrong api key for this sluice gateway (send Authorization: Bearer <key>)",
        );
    }
    let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() else {
        shared.metrics.overloaded.increment(1);
        let mut r = openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("overloaded"),
            "sluice is at max_concurrent_calls; retry shortly",
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let path = uri.path().strip_prefix("/v1/").unwrap_or("").to_owned();
    let route = route(&method, &path);
    let model_label = shared.metrics.models().label(None);
    let mut guard = CallGuard::new(Arc::clone(shared), route.endpoint, model_label, permit);

    let body = match read_body(shared, &headers, body).await {
        Ok(b) => b,
        Err(r) => {
            shared.metrics.rejected.increment(1);
            guard.finish(status_label(r.status().as_u16()));
            return r;
        }
    };
    let mut options = match call_options(&headers, shared) {
        Ok(o) => o,
        Err(r) => {
            shared.metrics.rejected.increment(1);
            guard.finish(status_label(r.status().as_u16()));
            return *r;
        }
    };
    let (fields, body) = match inspect(&route, &headers, body).await {
        Ok(x) => x,
        Err(message) => {
            shared.metrics.rejected.increment(1);
            guard.finish("400");
            return openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("invalid_json"), &message);
        }
    };
    guard.set_model(shared.metrics.models().label(fields.model.as_deref()));
    if let Some(model) = &fields.model {
        if let Some(notes) = &notes {
            notes.set_model(model);
        }
        options = options.model(model.clone());
    }
    if route.deliver_once {
        options = options.deliver_once();
    }
    if fields.read {
        // Known from the check above: the client need not parse the body again.
        options = options.body_streams(fields.streams());
    }
    if let Some(key) = caller_key(&headers, shared.required_key.is_some()) {
        options = options.caller_key(key);
    }
    // Ask for stream usage on the caller's behalf, and hide the extra chunk from them.
    let (body, hide_usage_chunk) = if shared.stream_usage
        && matches!(route.endpoint, "chat.completions" | "completions")
        && fields.streams()
        && fields.stream_options.as_ref().and_then(|o| o.include_usage) != Some(true)
    {
        match with_include_usage(&body) {
            Some(b) => (b, true),
            None => (body, false),
        }
    } else {
        (body, false)
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let request = RawRequest { method, path: path_and_query, headers: shared.headers.upstream(&headers), body };
    let caller = headers.get(LOCATION_HEADER).and_then(|v| v.to_str().ok()).and_then(parse_location);
    let call =
        Call { route, request, options, fields, hide_usage_chunk, request_id: request_id.to_owned(), caller, notes };

    let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).filter(|k| !k.is_empty());
    match idempotency_key {
        Some(key) if !call.fields.streams() && call.request.method != Method::GET => {
            Box::pin(idempotent(shared, call, guard, key, &headers)).await
        }
        // Boxed: the call's state machine is kilobytes, and the handler's future is moved
        // through several layers before it first runs; one allocation beats the copies.
        _ => Box::pin(dispatch(shared, call, guard)).await,
    }
}

/// Reads the body, up to the limit.
async fn read_body(shared: &Shared, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let too_large = || {
        openai_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("body_too_large"),
            &format!("the request body is larger than the gateway's limit of {} bytes", shared.max_body),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_body as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, shared.max_body).await.map_err(|e| {
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("invalid_body"), &e.to_string())
    })
}

/// Reads what routing needs from the body: a JSON object's fields, or a form's `model`.
/// Large bodies are read on the blocking pool so that other calls keep moving.
async fn inspect(route: &Route, headers: &HeaderMap, body: Bytes) -> Result<(BodyFields, Bytes), String> {
    let kind = route.body;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let json = kind == BodyKind::Json || (kind == BodyKind::Opaque && content_type.starts_with("application/json"));
    let multipart = kind == BodyKind::Multipart || content_type.starts_with("multipart/form-data");
    if !json && !multipart {
        return Ok((BodyFields::default(), body));
    }
    let work = move || {
        if multipart && !content_type.starts_with("application/json") {
            let model = multipart_model(&content_type, &body);
            return Ok((BodyFields { model, read: true, ..BodyFields::default() }, body));
        }
        if kind == BodyKind::Opaque && body.is_empty() {
            return Ok((BodyFields::default(), body));
        }
        check_json(&body).map(|fields| (fields, body))
    };
    if route_body_len(headers) > OFFLOAD_BODY {
        tokio::task::spawn_blocking(work).await.map_err(|e| format!("could not check the body: {e}"))?
    } else {
        work()
    }
}

fn route_body_len(headers: &HeaderMap) -> usize {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(usize::MAX)
}

/// The body must be one JSON object; returns the fields routing needs.
fn check_json(body: &[u8]) -> Result<BodyFields, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err("the request body is empty; send a JSON object".to_owned()),
        Some(b'{') => {}
        Some(_) => return Err("the request body must be a JSON object".to_owned()),
    }
    let mut fields =
        serde_json::from_slice::<BodyFields>(body).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    fields.read = true;
    Ok(fields)
}

/// The body with `stream_options.include_usage = true`.
fn with_include_usage(body: &[u8]) -> Option<Bytes> {
    let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let options = value.entry("stream_options").or_insert_with(|| json!({}));
    options.as_object_mut()?.insert("include_usage".to_owned(), json!(true));
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

// ===== sending =====

/// Sends the call the way its route says, and answers.
async fn dispatch(shared: &Arc<Shared>, mut call: Call, guard: CallGuard) -> Response {
    let object = call.route.object.clone().or_else(|| call.fields.reference().map(str::to_owned));
    let result = match object {
        Some(id) => send_stateful(shared, &call, &id).await,
        // Sent once from here: the request moves to the client (the answer needs the rest).
        None => {
            let request = std::mem::take(&mut call.request);
            shared.client.raw(request, &call.options).await.map_err(|e| (e, None))
        }
    };
    match result {
        Ok(resp) => answer(shared, &call, resp, guard),
        Err((e, note)) => {
            let all_out = matches!(e.kind(), ErrorKind::Connect { .. } | ErrorKind::Timeout { .. })
                && shared.serving_regions() == 0;
            count_failed(shared, e.failed_attempts());
            let mut r = error_response(&e, all_out, note.as_deref());
            upstream_error_headers(&shared.headers, &e, &mut r);
            guard.finish(status_label(r.status().as_u16()));
            if let Ok(v) = HeaderValue::from_str(&call.request_id) {
                r.headers_mut().insert(names::REQUEST_ID, v);
            }
            r
        }
    }
}

/// A call whose state lives in one region: there if known, else each region nearest first
/// until one knows the object (a 404 for an unknown id generates nothing).
async fn send_stateful(shared: &Shared, call: &Call, id: &str) -> Result<RawResponse, (Error, Option<String>)> {
    let client = &shared.client;
    if let Some(region) = shared.states.get(id, Instant::now()) {
        let options = call.options.clone().only_region(region.to_string());
        return client.raw(call.request.clone(), &options).await.map_err(|e| {
            let note = (!delivered_answer(&e)).then(|| {
                format!("`{id}` lives in region {region}, which cannot take the call now; it was not sent elsewhere")
            });
            (e, note)
        });
    }
    let mut unreachable = Vec::new();
    let mut last = None;
    for region in nearest_regions(shared, call) {
        let options = call.options.clone().only_region(region.to_string());
        match client.raw(call.request.clone(), &options).await {
            Ok(resp) => {
                shared.states.insert(id, region, Instant::now());
                return Ok(resp);
            }
            Err(e) if e.status() == Some(404) => {
                count_failed(shared, e.failed_attempts());
                last = Some(e);
            }
            Err(e) if !delivered_answer(&e) => {
                count_failed(shared, e.failed_attempts());
                unreachable.push(region);
                last = Some(e);
            }
            Err(e) => return Err((e, None)),
        }
    }
    let Some(e) = last else {
        // No region at all to ask (an empty snapshot cannot be built; be safe anyway).
        return client.raw(call.request.clone(), &call.options).await.map_err(|e| (e, None));
    };
    let note = (!unreachable.is_empty()).then(|| {
        let names: Vec<&str> = unreachable.iter().map(|r| &**r).collect();
        format!(
            "`{id}` was not found in the regions that answered; it may live in {}, which could not be asked now",
            names.join(", ")
        )
    });
    Err((e, note))
}

/// Whether the error is an upstream's own answer (as opposed to no answer at all).
fn delivered_answer(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Status { .. } | ErrorKind::Credentials { .. })
}

/// Region ids nearest first: by distance from the caller when a location is known, else
/// by the latest probe round trip, else in configured order.
fn nearest_regions(shared: &Shared, call: &Call) -> Vec<Arc<str>> {
    let snapshot = shared.client.snapshot();
    let caller = call.caller.or(shared.caller);
    let mut nodes: Vec<(f64, Arc<str>)> = snapshot
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let key = match caller {
                Some(c) => n.location().distance_km(c),
                None => n.metrics().probe_rtt().map_or(1e12 + i as f64, |d| d.as_secs_f64()),
            };
            (key, Arc::from(n.region().id()))
        })
        .collect();
    nodes.sort_by(|a, b| a.0.total_cmp(&b.0));
    nodes.into_iter().map(|(_, id)| id).collect()
}

fn count_failed(shared: &Shared, failed: &[sluice_client::FailedAttempt]) {
    for f in failed {
        shared.metrics.with_region(f.node, &f.region, |m| {
            m.requests.increment(1);
            m.errors.increment(1);
        });
    }
}

/// Turns a successful client answer into the caller's answer.
fn answer(shared: &Arc<Shared>, call: &Call, resp: RawResponse, mut guard: CallGuard) -> Response {
    let meta = &resp.meta;
    count_failed(shared, &meta.failed_attempts);
    let mut region_errors = None;
    shared.metrics.with_region(meta.node, &meta.region, |m| {
        m.requests.increment(1);
        m.latency.record(meta.latency.as_secs_f64());
        region_errors = Some(m.errors.clone());
    });
    let sse = resp.body.is_event_stream();
    let mut headers = shared.headers.downstream(&resp.headers, sse || call.hide_usage_chunk);
    if let Ok(v) = HeaderValue::from_str(&meta.region) {
        headers.insert(names::REGION, v);
    }
    headers.insert(names::ATTEMPTS, HeaderValue::from(meta.attempts));
    let served_model = meta.model.as_deref().map(str::to_owned).or_else(|| call.fields.model.clone());
    if let Some(model) = &served_model
        && let Ok(v) = HeaderValue::from_str(model)
    {
        headers.insert(names::MODEL, v);
        guard.set_model(shared.metrics.models().label(Some(model)));
    }
    let status = resp.status;
    guard.answered(status_label(status.as_u16()));
    let on_end = {
        let shared = Arc::clone(shared);
        let region: Arc<str> = Arc::clone(&meta.region);
        let route = call.route.clone();
        let model = served_model.unwrap_or_default();
        let notes = call.notes.clone();
        Box::new(move |found: Findings| {
            if let Some(usage) = found.usage {
                if let Some(notes) = &notes {
                    notes.set_tokens(usage.input.saturating_add(usage.output));
                }
                let label = shared.metrics.models().label(Some(&model));
                shared.metrics.usage(&region, &label, usage, &shared.prices, &model);
            }
            if status.is_success()
                && route.deletes
                && let Some(id) = &route.object
            {
                shared.states.remove(id);
            }
        })
    };
    let keep_whole = call.route.creates && !sse;
    let on_id: Option<crate::body::OnId> = (call.route.creates && status.is_success()).then(|| {
        let shared = Arc::clone(shared);
        let region: Arc<str> = Arc::clone(&meta.region);
        Box::new(move |id: &str| shared.states.insert(id, region, Instant::now())) as crate::body::OnId
    });
    let expected = resp
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .filter(|_| !sse && !call.hide_usage_chunk);
    let body = ProxyBody::new(
        resp.body,
        sse,
        call.hide_usage_chunk,
        keep_whole,
        region_errors,
        guard,
        on_end,
        on_id,
        expected,
    );
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

// ===== idempotency =====

/// A non-streaming call with an `Idempotency-Key`: run once, in a task of its own so that a
/// caller who gives up (an SDK timeout) does not cancel it; repeats get its answer.
async fn idempotent(shared: &Arc<Shared>, call: Call, guard: CallGuard, key: &str, headers: &HeaderMap) -> Response {
    let who = headers.get(header::AUTHORIZATION).map_or(&[][..], HeaderValue::as_bytes);
    let scope = fingerprint(&[who]);
    let store_key = format!("{scope:016x} {} {} {key}", call.request.method, call.request.path);
    let print = fingerprint(&[&call.request.body]);
    loop {
        match shared.idempotency.claim(&store_key, print, Instant::now()) {
            Claim::Done(stored) => {
                guard.finish(status_label(stored.status.as_u16()));
                return replay(&stored, true);
            }
            Claim::Mismatch => {
                guard.finish("422");
                return openai_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request_error",
                    Some("idempotency_key_reused"),
                    "this Idempotency-Key was used with a different request body within the last 10 minutes",
                );
            }
            Claim::Wait(mut rx) => loop {
                if let Some(stored) = rx.borrow_and_update().clone() {
                    guard.finish(status_label(stored.status.as_u16()));
                    return replay(&stored, true);
                }
                if rx.changed().await.is_err() {
                    // The first call ended without an answer to keep: claim again.
                    break;
                }
            },
            Claim::First(slot) => {
                let shared = Arc::clone(shared);
                let task = tokio::spawn(async move {
                    let response = dispatch(&shared, call, guard).await;
                    let (parts, body) = response.into_parts();
                    let body = axum::body::to_bytes(body, usize::MAX).await.ok();
                    let stored = Stored { status: parts.status, headers: parts.headers, body };
                    let status = stored.status.as_u16();
                    // Keep what may have generated something; free the key after a refusal
                    // that generated nothing, so that a retry runs the call.
                    if stored.body.is_some() && !matches!(status, 429 | 502 | 503) {
                        slot.finish(stored)
                    } else {
                        drop(slot);
                        Arc::new(stored)
                    }
                });
                return match task.await {
                    Ok(stored) => replay(&stored, false),
                    Err(e) => openai_error(StatusCode::BAD_GATEWAY, "server_error", Some("internal"), &e.to_string()),
                };
            }
        }
    }
}

fn replay(stored: &Stored, repeat: bool) -> Response {
    let Some(body) = &stored.body else {
        return openai_error(
            StatusCode::CONFLICT,
            "invalid_request_error",
            Some("idempotent_answer_not_kept"),
            "a call with this Idempotency-Key was answered, but its answer was too large to keep; it is not run again",
        );
    };
    let mut r = Response::new(Body::from(body.clone()));
    *r.status_mut() = stored.status;
    *r.headers_mut() = stored.headers.clone();
    if repeat {
        r.headers_mut().insert(names::REPLAY, HeaderValue::from_static("true"));
    }
    r
}

// ===== options and checks =====

/// Reads `x-sluice-region` and `x-sluice-location`.
fn call_options(headers: &HeaderMap, shared: &Shared) -> Result<CallOptions, Box<Response>> {
    let mut options = CallOptions::new();
    if let Some(v) = headers.get(REGION_HEADER) {
        let id = v.to_str().unwrap_or("").trim();
        if !id.is_empty() {
            let snapshot = shared.client.snapshot();
            if snapshot.find(id).is_none() {
                // The current regions: a reload may have changed them.
                let known = snapshot.nodes().iter().map(|n| n.region().id()).collect::<Vec<_>>().join(", ");
                return Err(Box::new(openai_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("unknown_region"),
                    &format!("{REGION_HEADER}: unknown region `{id}` (known: {known})"),
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
    if let Some(v) = headers.get(ZONES_HEADER) {
        let Ok(text) = v.to_str() else {
            return Err(Box::new(openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("invalid_zones"),
                &format!("{ZONES_HEADER} must be a comma-separated list of zone names"),
            )));
        };
        let zones: Vec<&str> = text.split(',').map(str::trim).filter(|z| !z.is_empty()).collect();
        if !zones.is_empty() {
            options = options.zones(zones);
        }
    }
    // W3C trace context: the call joins the caller's trace; an invalid one is ignored.
    if let Some(trace) = headers.get(TraceParent::HEADER).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse) {
        options = options.trace_parent(trace);
    }
    Ok(options)
}

/// `LAT,LON` in decimal degrees.
pub fn parse_location(s: &str) -> Option<GeoPoint> {
    let (lat, lon) = s.split_once(',')?;
    let point = GeoPoint::new(lat.trim().parse().ok()?, lon.trim().parse().ok()?);
    point.is_valid().then_some(point)
}

/// The caller's own upstream key, for regions that pass callers' keys: `api-key`, else
/// `x-api-key`, else `Authorization: Bearer` (unless that is the gateway's own inbound key).
/// The client sends it to those regions only.
fn caller_key(headers: &HeaderMap, gateway_auth: bool) -> Option<sluice_client::ApiKey> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let bearer = || if gateway_auth { None } else { bearer(headers) };
    value("api-key").or_else(|| value("x-api-key")).or_else(bearer).map(sluice_client::ApiKey::new)
}

/// The token of an `Authorization: Bearer <token>` header, trimmed; `None` when absent or empty.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Whether the call carries `required` as its bearer token, compared in constant time.
pub(crate) fn authorized(headers: &HeaderMap, required: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(bearer(headers).unwrap_or("").as_bytes().ct_eq(required.as_bytes()))
}

// ===== answers =====

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn openai_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    json_response(status, &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
}

/// Puts the upstream's own headers of an error answer (its `x-request-id`, `x-ratelimit-*`,
/// exact `retry-after`/`retry-after-ms`...) on the caller's answer, by the response allowlist.
/// The body's own headers (`content-*`) are the gateway's, since the body may be its own.
fn upstream_error_headers(policy: &crate::HeaderPolicy, e: &Error, response: &mut Response) {
    // Only an answer that passes the upstream's status through carries its headers (not, for
    // instance, the 503 a 404 becomes when an object's region cannot be reached).
    let Some(upstream) = e.upstream_headers() else { return };
    if !matches!(e.kind(), ErrorKind::Status { status, .. } if *status == response.status().as_u16()) {
        return;
    }
    let allowed = policy.downstream(upstream, true);
    // Retry-After comes from one source: when the upstream sent either form, the pair the
    // gateway wrote from its parsed (capped) value goes, so the two never disagree.
    if allowed.contains_key(header::RETRY_AFTER) || allowed.contains_key(&names::RETRY_AFTER_MS) {
        response.headers_mut().remove(header::RETRY_AFTER);
        response.headers_mut().remove(&names::RETRY_AFTER_MS);
    }
    for name in allowed.keys() {
        if name.as_str().starts_with("content-") {
            continue;
        }
        response.headers_mut().remove(name);
        for value in allowed.get_all(name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
}

/// Maps a routing error to an answer with the right status. `note` explains a call that was
/// kept in its object's region.
fn error_response(e: &Error, all_out: bool, note: Option<&str>) -> Response {
    let message = match note {
        Some(n) => format!("{n} ({e})"),
        None => e.to_string(),
    };
    let retry_after = |r: &mut Response, after: std::time::Duration| {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        r.headers_mut().insert(names::RETRY_AFTER_MS, HeaderValue::from(after.as_millis() as u64));
    };
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
        ErrorKind::Status { status: 404, .. } if note.is_some() => {
            openai_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("object_region_unavailable"), &message)
        }
        ErrorKind::NoEligibleRegion { .. } => {
            let code = if note.is_some() { "object_region_unavailable" } else { "no_eligible_region" };
            let mut r = openai_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some(code), &message);
            retry_after(&mut r, e.retry_after().unwrap_or(std::time::Duration::from_secs(1)));
            r
        }
        ErrorKind::Status { status, body, retry_after: after, .. } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            let passthrough = note.is_none()
                && serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .is_some_and(|v| v.get("error").is_some_and(serde_json::Value::is_object));
            let mut r = if passthrough {
                (code, [(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
            } else {
                let kind = if code.is_client_error() { "invalid_request_error" } else { "server_error" };
                openai_error(code, kind, None, &message)
            };
            if let Some(after) = after {
                retry_after(&mut r, *after);
            }
            r
        }
        ErrorKind::Credentials { .. } => {
            openai_error(StatusCode::BAD_GATEWAY, "server_error", Some("upstream_credentials_rejected"), &message)
        }
        ErrorKind::Timeout { .. } | ErrorKind::DeadlineExceeded => {
            openai_error(StatusCode::GATEWAY_TIMEOUT, "server_error", Some("upstream_timeout"), &message)
        }
        ErrorKind::ModelNotFound { .. } => {
            openai_error(StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found"), &message)
        }
        ErrorKind::NoRegionInZones { .. } => {
            let mut r =
                openai_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("no_region_in_zones"), &message);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        ErrorKind::UnknownRegion { .. } => {
            openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("unknown_region"), &message)
        }
        ErrorKind::InvalidRequest => {
            openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("invalid_request"), &message)
        }
        _ => {
            let code = if note.is_some() { "object_region_unavailable" } else { "upstream_error" };
            let status = if note.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_GATEWAY };
            openai_error(status, "server_error", Some(code), &message)
        }
    };
    if let Some(region) = e.region()
        && let Ok(v) = HeaderValue::from_str(region)
    {
        response.headers_mut().insert(names::REGION, v);
    }
    response.headers_mut().insert(names::ATTEMPTS, HeaderValue::from(e.failed_attempts().len()));
    response
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
    fn include_usage_is_added() {
        let b = with_include_usage(br#"{"model":"m","stream":true,"stream_options":{"x":1}}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["stream_options"], json!({"x": 1, "include_usage": true}));
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

    proptest::proptest! {
        /// No header value makes `x-sluice-location` parsing panic; what it accepts is valid.
        #[test]
        fn fuzz_location(text in "[-+0-9., eEinfINFaN]{0,40}", bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            for s in [text, String::from_utf8_lossy(&bytes).into_owned()] {
                if let Some(p) = parse_location(&s) {
                    proptest::prop_assert!(p.is_valid());
                }
            }
        }
    }
}
