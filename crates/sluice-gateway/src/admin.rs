//! The admin API under `/admin/`, guarded by its own key: region state, the operator's drain
//! switch, and live reload. Off unless [`GatewayBuilder::admin`](crate::GatewayBuilder::admin)
//! gives it a key.
//!
//! * `GET /admin/regions`: every region's state, health, admin switch, eligibility, cooldown
//!   and ejection (reason, seconds left, end as a Unix time), in-flight calls, latency
//!   estimate, probe round trip, error rate and concurrency limit.
//! * `POST /admin/regions/{id}/drain` and `/undrain`: the operator's switch. Health checking
//!   never changes it. With a [`Switch`] (fleet mode), the switch goes through it, so that
//!   every replica drains.
//! * `POST /admin/reload`: runs the [`Reloader`]; 422 with its errors when it refuses, and the
//!   running configuration stays.
//!
//! Every request must carry `Authorization: Bearer <admin key>`; the key is compared in
//! constant time and never logged.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{Path, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use serde_json::{Value, json};
use sluice_client::Client;
use sluice_region_model::AdminState;

use crate::{
    proxy::json_response,
    region_state::{RegionState, now},
};

/// Re-reads the configuration and applies it to the client; returns a one-line summary, or
/// the reasons the new configuration was refused (the running one then stays).
pub type Reloader = Arc<dyn Fn(&Client) -> Result<String, String> + Send + Sync>;

/// Sets a region's admin switch somewhere beyond this process (fleet mode: on every replica).
/// Returns an error message when it could not.
pub type Switch =
    Arc<dyn Fn(String, AdminState) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The admin API's settings, for [`GatewayBuilder::admin`](crate::GatewayBuilder::admin).
#[derive(Clone)]
pub struct AdminOptions {
    key: Arc<str>,
    reload: Option<Reloader>,
    switch: Option<Switch>,
}

impl AdminOptions {
    /// The admin API, guarded by `key` (sent as `Authorization: Bearer <key>`).
    pub fn new(key: impl Into<String>) -> Self {
        Self { key: Arc::from(key.into()), reload: None, switch: None }
    }

    /// What `POST /admin/reload` runs; without it, the endpoint answers 501.
    pub fn reload(mut self, reload: Reloader) -> Self {
        self.reload = Some(reload);
        self
    }

    /// Drains and undrains through `switch` instead of this process's region metrics alone.
    pub fn switch(mut self, switch: Switch) -> Self {
        self.switch = Some(switch);
        self
    }
}

impl fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminOptions")
            .field("key", &"<redacted>")
            .field("reload", &self.reload.is_some())
            .field("switch", &self.switch.is_some())
            .finish()
    }
}

#[derive(Clone)]
struct AdminApp {
    client: Client,
    options: AdminOptions,
}

/// The admin routes, to merge into the gateway's router.
pub(crate) fn router(client: Client, options: AdminOptions) -> Router {
    let state = AdminApp { client, options };
    Router::new()
        .route("/admin/regions", get(regions))
        .route("/admin/regions/{id}/drain", post(drain))
        .route("/admin/regions/{id}/undrain", post(undrain))
        .route("/admin/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn authorize(State(state): State<AdminApp>, request: Request, next: Next) -> Response {
    if !crate::proxy::authorized(request.headers(), &state.options.key) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "admin key required (Authorization: Bearer <admin key>)"}),
        );
    }
    next.run(request).await
}

/// The state of every region, as JSON: what `GET /admin/regions` answers.
pub fn regions_json(client: &Client) -> Value {
    let at = now();
    let wall = SystemTime::now();
    let health = client.health();
    let snapshot = client.snapshot();
    let end = |until: Option<Instant>| {
        until.filter(|t| *t > at).map(|t| {
            let left = t.duration_since(at);
            let unix = (wall + left).duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
            json!({ "in_s": round3(left.as_secs_f64()), "at_unix_s": round3(unix.as_secs_f64()) })
        })
    };
    let ms = |d: Option<Duration>| d.map(|d| round3(d.as_secs_f64() * 1000.0));
    let regions: Vec<Value> = snapshot
        .nodes()
        .iter()
        .map(|node| {
            let m = node.metrics();
            let status = health.status(node.id(), at);
            let state = status.map(|s| RegionState::of(&s, at));
            json!({
                "id": node.region().id(),
                "state": state.map_or("unknown".to_owned(), RegionState::label),
                "health": format!("{:?}", m.health()).to_lowercase(),
                "admin": if m.admin() == AdminState::Drained { "drained" } else { "enabled" },
                "eligible": m.is_eligible(at),
                "cooldown": status.and_then(|s| end(s.cooldown_until)),
                "ejection": status.and_then(|s| end(s.ejected_until).map(|mut e| {
                    e["reason"] = json!(s.last_ejection_reason.map(|r| r.to_string()));
                    e
                })),
                "consecutive_failures": status.map(|s| s.consecutive_failures),
                "in_flight": m.in_flight(),
                "latency_ms": ms(m.latency_estimate(at)),
                "probe_rtt_ms": ms(m.probe_rtt()),
                "error_rate": round3(m.error_rate(at)),
                "concurrency_limit": m.concurrency_limit(),
                "weight_factor": status.map(|s| round3(s.weight_factor)),
            })
        })
        .collect();
    json!({ "strategy": client.strategy_name(), "regions": regions })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn regions(State(state): State<AdminApp>) -> Response {
    json_response(StatusCode::OK, &regions_json(&state.client))
}

async fn drain(State(state): State<AdminApp>, Path(id): Path<String>) -> Response {
    switch(&state, id, AdminState::Drained).await
}

async fn undrain(State(state): State<AdminApp>, Path(id): Path<String>) -> Response {
    switch(&state, id, AdminState::Enabled).await
}

async fn switch(state: &AdminApp, id: String, to: AdminState) -> Response {
    let snapshot = state.client.snapshot();
    let Some(node) = snapshot.find(&id) else {
        let known: Vec<&str> = snapshot.nodes().iter().map(|n| n.region().id()).collect();
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("unknown region {id:?}; known: {}", known.join(", "))}),
        );
    };
    let word = if to == AdminState::Drained { "drained" } else { "enabled" };
    // Here first, so that this replica obeys even when the fleet cannot be told.
    snapshot.node(node).metrics().set_admin(to);
    let fleet = match &state.options.switch {
        Some(switch) => match switch(id.clone(), to).await {
            Ok(()) => Some(true),
            Err(error) => {
                tracing::error!(region = %id, admin = word, %error, "operator switch: the fleet was not told");
                return json_response(
                    StatusCode::BAD_GATEWAY,
                    &json!({"region": id, "admin": word, "fleet": false,
                        "error": format!("set here, but the fleet was not told: {error}")}),
                );
            }
        },
        None => None,
    };
    tracing::warn!(region = %id, admin = word, fleet = fleet.is_some(), "operator switch");
    json_response(StatusCode::OK, &json!({"region": id, "admin": word, "fleet": fleet.is_some()}))
}

async fn reload(State(state): State<AdminApp>) -> Response {
    let Some(reloader) = &state.options.reload else {
        return json_response(
            StatusCode::NOT_IMPLEMENTED,
            &json!({"error": "this server has no configuration file to reload"}),
        );
    };
    // Reading and checking a file is blocking work.
    let (reloader, client) = (Arc::clone(reloader), state.client.clone());
    let result = match tokio::task::spawn_blocking(move || reloader(&client)).await {
        Ok(r) => r,
        Err(e) => Err(format!("the reload task failed: {e}")),
    };
    match result {
        Ok(summary) => {
            tracing::info!(%summary, "admin: configuration reloaded");
            json_response(StatusCode::OK, &json!({"reloaded": true, "summary": summary}))
        }
        Err(errors) => {
            tracing::error!(%errors, "admin: configuration refused; the running one stays");
            json_response(StatusCode::UNPROCESSABLE_ENTITY, &json!({"reloaded": false, "error": errors}))
        }
    }
}
