//! The configuration file: regions plus optional strategy, health, failover, timeout and
//! caller tables.
//!
//! ```toml
//! api_key_env = "OPENAI_API_KEY"   # optional; this is the default
//!
//! [[region]]
//! id = "ap-northeast-2"
//! name = "Seoul"
//! url = "http://127.0.0.1:8080/v1"
//! lat = 37.56
//! lon = 126.97
//! weight = 100
//! max_concurrency = 48             # optional: calls it serves at once (default: learned from 429s)
//! api_key_env = "SEOUL_KEY"        # optional, per region
//! zone = "ap"                      # optional residency zone
//! models = ["gpt-4o-mini"]         # optional; overrides the region's /models list
//! headers = { "OpenAI-Project" = "proj_x" }   # optional extra headers
//!
//! [[region]]
//! id = "azure-eu"
//! url = "https://NAME.openai.azure.com/openai"
//! lat = 52.37
//! lon = 4.90
//! provider = "azure"               # "openai" (default) or "azure"
//! api_version = "2024-10-21"
//! deployments = { "gpt-4o-mini" = "mini-eu" }
//! api_key_env = "AZURE_EU_KEY"
//!
//! # Any other OpenAI-compatible server that wants its key in another header:
//! # auth = { header = "x-api-key" }
//! # A region that gets each caller's own key instead of a configured one (`sluice serve`
//! # reads it from the caller's api-key, x-api-key or Authorization: Bearer header):
//! # pass_caller_key = true
//!
//! [models]
//! aliases = { fast = "gpt-4o-mini" }
//! fallbacks = { "gpt-4o" = ["gpt-4o-mini"] }
//! not_found_ttl = "5m"
//!
//! [strategy]
//! name = "locality"               # the default
//!
//! [health.probe]
//! interval = "1s"
//!
//! [health.outlier]
//! consecutive_failures = 5
//!
//! [failover]
//! max_attempts = 3
//!
//! [timeouts]
//! total = "180s"
//!
//! [caller]
//! lat = 37.56
//! lon = 126.97
//!
//! [fleet]                          # optional: share health with other replicas via Redis
//! redis_url = "redis://10.0.0.5:6379/0"
//! replica_id = "serve-1"           # optional; random by default
//! password_env = "REDIS_PASSWORD"  # optional; SLUICE_REDIS_PASSWORD is read when set
//! shared_retry_budget = true       # optional: one retry budget for the whole fleet
//!
//! [fleet.region_limits]            # optional: requests per minute from the whole fleet
//! eu-west = 600
//! ```
//!
//! Unknown keys are errors. Keys are never read from the file, only from environment
//! variables. Every setting left out keeps the library's own default.

use std::{collections::BTreeMap, fmt, ops::Range, path::Path, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, de};
use sluice_client::{
    ApiKey, Client, ClientBuilder, FailoverPolicy, GeoPoint, HedgePolicy, ModelRouting, Provider, Region, Timeouts,
};
use sluice_fleet::{FleetBuilder, FleetError};
use sluice_health::{OutlierConfig, ProbeConfig};
use sluice_region_model::{Snapshot, SnapshotError};
use toml::Spanned;

use crate::{CliError, StrategyKind, error::chain};

/// The environment variable read for the API key when the file names none.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// A configuration file, parsed and checked.
///
/// Everything that can be checked without the environment has been: the regions form a valid
/// snapshot and every health, failover and timeout setting is in range.
pub struct Config {
    path: String,
    regions: Vec<RegionSpec>,
    /// The global key variable, and whether the file named it.
    api_key_env: (String, bool),
    strategy: StrategyKind,
    seed: Option<u64>,
    probing: bool,
    probe: ProbeConfig,
    outlier: OutlierConfig,
    failover: FailoverPolicy,
    timeouts: Timeouts,
    caller: Option<GeoPoint>,
    model_routing: ModelRouting,
    /// Fleet mode, checked except for the credentials (read from the environment at start).
    fleet: Option<FleetBuilder>,
    server: crate::server_config::ServerSettings,
}

/// One region as configured, with the name of its key variable (never the key).
#[derive(Debug, Clone)]
struct RegionSpec {
    region: Region,
    api_key_env: Option<String>,
    /// A provider other than the default.
    provider: Option<Provider>,
    /// Configured models, overriding `/models`.
    models: Option<Vec<String>>,
}

/// Why a configuration file was refused: where, in which region, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// Line and column (from 1), when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The region concerned, when there is one.
    pub region: Option<String>,
    /// What is wrong.
    pub message: String,
}

// ===== raw file shape =====

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api_key_env: Option<Spanned<String>>,
    #[serde(default)]
    region: Vec<Spanned<RawRegion>>,
    strategy: Option<Spanned<RawStrategy>>,
    health: Option<RawHealth>,
    failover: Option<Spanned<RawFailover>>,
    timeouts: Option<Spanned<RawTimeouts>>,
    caller: Option<Spanned<RawCaller>>,
    models: Option<Spanned<RawModels>>,
    fleet: Option<Spanned<RawFleet>>,
    server: Option<Spanned<crate::server_config::RawServer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    id: Spanned<String>,
    name: Option<String>,
    url: Spanned<String>,
    lat: Spanned<f64>,
    lon: Spanned<f64>,
    weight: Option<u32>,
    max_concurrency: Option<Spanned<i64>>,
    api_key_env: Option<String>,
    provider: Option<Spanned<String>>,
    api_version: Option<String>,
    deployments: Option<BTreeMap<String, String>>,
    auth: Option<RawAuth>,
    headers: Option<BTreeMap<String, String>>,
    models: Option<Vec<String>>,
    zone: Option<String>,
    pass_caller_key: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    header: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    #[serde(default)]
    fallbacks: BTreeMap<String, Vec<String>>,
    not_found_ttl: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStrategy {
    name: Spanned<String>,
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    probe: Option<Spanned<RawProbe>>,
    outlier: Option<Spanned<RawOutlier>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    enabled: Option<bool>,
    interval: Option<Dur>,
    jitter: Option<Dur>,
    initial_jitter: Option<Dur>,
    timeout: Option<Dur>,
    rise: Option<u32>,
    fall: Option<u32>,
    unhealthy_interval: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutlier {
    consecutive_failures: Option<u32>,
    failure_rate_threshold: Option<f64>,
    failure_rate_window: Option<Dur>,
    failure_rate_min_requests: Option<u32>,
    base_ejection: Option<Dur>,
    max_ejection: Option<Dur>,
    ejection_decay: Option<Dur>,
    max_ejection_percent: Option<u8>,
    retry_after_cap: Option<Dur>,
    slow_start_window: Option<Dur>,
    slow_start_floor: Option<f64>,
    error_penalty: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    max_attempts: Option<u32>,
    retry_ratio: Option<f64>,
    retry_min_per_sec: Option<u32>,
    retry_budget_ttl: Option<Dur>,
    retry_after_cap: Option<Dur>,
    rescue: Option<bool>,
    retry_on_timeout: Option<bool>,
    max_wait: Option<Dur>,
    credentials_exclusion: Option<Dur>,
    hedge_delay: Option<Dur>,
    hedge_percentile: Option<f64>,
    hedge_fallback: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Dur>,
    attempt: Option<Dur>,
    first_chunk: Option<Dur>,
    total: Option<Dur>,
    idle: Option<Dur>,
    streams_outlive_total: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    redis_url: Spanned<String>,
    namespace: Option<String>,
    replica_id: Option<String>,
    lease: Option<Dur>,
    op_timeout: Option<Dur>,
    password_env: Option<String>,
    username_env: Option<String>,
    shared_retry_budget: Option<bool>,
    region_limits: Option<BTreeMap<String, u32>>,
    limit_window: Option<Dur>,
    limit_batch: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    lat: f64,
    lon: f64,
}

/// A duration written with a unit: `"250ms"`, `"2s"`, `"1.5s"`, `"5m"`, `"1h"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dur(pub(crate) Duration);

/// The message of a client build error, without the region prefix the config error adds.
fn error_message(e: &sluice_client::BuildError) -> String {
    match e {
        sluice_client::BuildError::Routing { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

// ===== impl Config =====

impl Config {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`CliError::Config`] (exit code 2) for a file that cannot be read, is not valid TOML,
    /// has unknown keys, or has values out of range, with the line and column and the region
    /// where there is one.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Config(ConfigError {
                path: shown.clone(),
                position: None,
                region: None,
                message: format!("cannot read the file: {e}"),
            })
        })?;
        Self::parse(&shown, &text).map_err(CliError::Config)
    }

    /// Parses and checks configuration text; `path` is only used in messages.
    ///
    /// # Errors
    /// As for [`Config::load`].
    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        let fail = |span: Option<Range<usize>>, region: Option<String>, message: String| ConfigError {
            path: path.to_owned(),
            position: span.map(|s| line_col(text, s.start)),
            region,
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let region = span.as_ref().and_then(|s| region_at(text, s.start));
            fail(span, region, e.message().trim().to_owned())
        })?;

        let mut regions = Vec::with_capacity(raw.region.len());
        for spanned in &raw.region {
            let span = spanned.span();
            let r = spanned.get_ref();
            if let Some(env) = &r.api_key_env {
                check_env_name(env).map_err(|m| fail(Some(span.clone()), Some(r.id.get_ref().clone()), m))?;
            }
            let location = GeoPoint::new(*r.lat.get_ref(), *r.lon.get_ref());
            let mut region = Region::new(r.id.get_ref().clone(), r.url.get_ref().clone(), location);
            if let Some(name) = &r.name {
                region = region.with_name(name.clone());
            }
            if let Some(w) = r.weight {
                region = region.with_weight(w);
            }
            if let Some(limit) = &r.max_concurrency {
                let n = u32::try_from(*limit.get_ref()).ok().filter(|&n| n > 0).ok_or_else(|| {
                    fail(
                        Some(limit.span()),
                        Some(r.id.get_ref().clone()),
                        format!(
                            "max_concurrency must be a whole number from 1 to {}, got {}; leave it out to learn the limit from 429s",
                            u32::MAX,
                            limit.get_ref()
                        ),
                    )
                })?;
                region = region.with_max_concurrency(Some(n));
            }
            if let Some(zone) = &r.zone {
                region = region.with_zone(zone.clone());
            }
            let id = r.id.get_ref();
            let in_region = |m: String| fail(Some(span.clone()), Some(id.clone()), m);
            let provider = match r.provider.as_ref().map(|p| p.get_ref().as_str()) {
                None | Some("openai") => Provider::openai(),
                Some("azure") => Provider::azure(),
                Some(other) => {
                    return Err(in_region(format!("unknown provider `{other}` (expected `openai` or `azure`)")));
                }
            };
            let mut provider = provider;
            if let Some(v) = &r.api_version {
                provider = provider.api_version(v.clone());
            }
            for (model, deployment) in r.deployments.iter().flatten() {
                provider = provider.deployment(model.clone(), deployment.clone());
            }
            if r.deployments.as_ref().is_some_and(BTreeMap::is_empty) {
                return Err(in_region("deployments is empty".to_owned()));
            }
            if let Some(auth) = &r.auth {
                provider = provider.auth_header(auth.header.clone());
            }
            for (name, value) in r.headers.iter().flatten() {
                provider = provider.header(name.clone(), value.clone());
            }
            if r.pass_caller_key == Some(true) {
                provider = provider.pass_caller_key();
            }
            provider.check(id, r.url.get_ref()).map_err(|e| in_region(error_message(&e)))?;
            if let Some(models) = &r.models
                && (models.is_empty() || models.iter().any(String::is_empty))
            {
                return Err(in_region("models must name at least one model, none empty".to_owned()));
            }
            regions.push(RegionSpec {
                region,
                api_key_env: r.api_key_env.clone(),
                provider: (provider != Provider::openai()).then_some(provider),
                models: r.models.clone(),
            });
        }
        if regions.is_empty() {
            return Err(fail(None, None, "no regions: add at least one [[region]] table".to_owned()));
        }
        // The region model checks ids, coordinates, urls and weights; point at the region.
        if let Err(e) = Snapshot::new(regions.iter().map(|r| r.region.clone())) {
            let (region, span) = match snapshot_error_region(&e, &raw.region) {
                Some((id, span)) => (Some(id), Some(span)),
                None => (None, None),
            };
            return Err(fail(span, region, e.to_string()));
        }

        let api_key_env = match &raw.api_key_env {
            Some(s) => {
                check_env_name(s.get_ref()).map_err(|m| fail(Some(s.span()), None, m))?;
                (s.get_ref().clone(), true)
            }
            None => (DEFAULT_API_KEY_ENV.to_owned(), false),
        };

        let (strategy, seed) = match &raw.strategy {
            Some(s) => {
                let name = &s.get_ref().name;
                let kind =
                    StrategyKind::from_str(name.get_ref()).map_err(|e| fail(Some(name.span()), None, e.to_string()))?;
                (kind, s.get_ref().seed)
            }
            None => (StrategyKind::default(), None),
        };

        let mut probing = true;
        let mut probe = ProbeConfig::default();
        let mut outlier = OutlierConfig::default();
        if let Some(health) = &raw.health {
            if let Some(p) = &health.probe {
                let span = p.span();
                let p = p.get_ref();
                probing = p.enabled.unwrap_or(true);
                let mut b = ProbeConfig::builder();
                b = set(b, p.interval, |b, d| b.interval(d.0));
                b = set(b, p.jitter, |b, d| b.jitter(d.0));
                b = set(b, p.initial_jitter, |b, d| b.initial_jitter(d.0));
                b = set(b, p.timeout, |b, d| b.timeout(d.0));
                b = set(b, p.rise, |b, n| b.rise(n));
                b = set(b, p.fall, |b, n| b.fall(n));
                b = set(b, p.unhealthy_interval, |b, d| b.unhealthy_interval(d.0));
                probe = b.build().map_err(|e| fail(Some(span), None, format!("[health.probe]: {e}")))?;
            }
            if let Some(o) = &health.outlier {
                let span = o.span();
                let o = o.get_ref();
                let mut b = OutlierConfig::builder();
                b = set(b, o.consecutive_failures, |b, n| b.consecutive_failures(n));
                b = set(b, o.failure_rate_threshold, |b, x| b.failure_rate_threshold(x));
                b = set(b, o.failure_rate_window, |b, d| b.failure_rate_window(d.0));
                b = set(b, o.failure_rate_min_requests, |b, n| b.failure_rate_min_requests(n));
                b = set(b, o.base_ejection, |b, d| b.base_ejection(d.0));
                b = set(b, o.max_ejection, |b, d| b.max_ejection(d.0));
                b = set(b, o.ejection_decay, |b, d| b.ejection_decay(d.0));
                b = set(b, o.max_ejection_percent, |b, n| b.max_ejection_percent(n));
                b = set(b, o.retry_after_cap, |b, d| b.retry_after_cap(d.0));
                b = set(b, o.slow_start_window, |b, d| b.slow_start_window(d.0));
                b = set(b, o.slow_start_floor, |b, x| b.slow_start_floor(x));
                b = set(b, o.error_penalty, |b, d| b.error_penalty(d.0));
                outlier = b.build().map_err(|e| fail(Some(span), None, format!("[health.outlier]: {e}")))?;
            }
        }

        let mut failover = FailoverPolicy::default();
        if let Some(f) = &raw.failover {
            let span = f.span();
            let f = f.get_ref();
            let bad = |m: &str| fail(Some(span.clone()), None, format!("[failover]: {m}"));
            if let Some(n) = f.max_attempts {
                if n == 0 {
                    return Err(bad("max_attempts must be at least 1"));
                }
                failover = failover.max_attempts(n);
            }
            let ratio = f.retry_ratio.unwrap_or(failover.retry_ratio);
            if !ratio.is_finite() || ratio < 0.0 {
                return Err(bad("retry_ratio must be a finite number >= 0"));
            }
            let ttl = f.retry_budget_ttl.map_or(failover.retry_budget_ttl, |d| d.0);
            if ttl.is_zero() {
                return Err(bad("retry_budget_ttl must be greater than zero"));
            }
            let min = f.retry_min_per_sec.unwrap_or(failover.retry_min_per_sec);
            failover = failover.retry_budget(ratio, min, ttl);
            if let Some(cap) = f.retry_after_cap {
                failover = failover.retry_after_cap(cap.0);
            }
            if let Some(on) = f.rescue {
                failover = failover.rescue(on);
            }
            if let Some(on) = f.retry_on_timeout {
                failover = failover.retry_on_timeout(on);
            }
            if let Some(d) = f.max_wait {
                failover = failover.max_wait(d.0);
            }
            if let Some(d) = f.credentials_exclusion {
                failover = failover.credentials_exclusion(d.0);
            }
            let hedge = match (f.hedge_delay, f.hedge_percentile) {
                (Some(_), Some(_)) => return Err(bad("set hedge_delay or hedge_percentile, not both")),
                (Some(d), None) if d.0.is_zero() => return Err(bad("hedge_delay must be greater than zero")),
                (Some(d), None) => Some(HedgePolicy::Fixed(d.0)),
                (None, Some(p)) => {
                    if !(p > 0.0 && p <= 100.0) {
                        return Err(bad("hedge_percentile must be in (0, 100]"));
                    }
                    let fallback = f.hedge_fallback.map_or(Duration::from_secs(2), |d| d.0);
                    if fallback.is_zero() {
                        return Err(bad("hedge_fallback must be greater than zero"));
                    }
                    Some(HedgePolicy::Percentile { percentile: p, fallback })
                }
                (None, None) if f.hedge_fallback.is_some() => {
                    return Err(bad("hedge_fallback needs hedge_percentile"));
                }
                (None, None) => None,
            };
            failover = failover.hedge(hedge);
        }

        let mut timeouts = Timeouts::default();
        if let Some(t) = &raw.timeouts {
            let span = t.span();
            let t = t.get_ref();
            timeouts = set(timeouts, t.connect, |t, d| t.connect(d.0));
            timeouts = set(timeouts, t.attempt, |t, d| t.attempt(d.0));
            timeouts = set(timeouts, t.first_chunk, |t, d| t.first_chunk(d.0));
            timeouts = set(timeouts, t.total, |t, d| t.total(d.0));
            timeouts = set(timeouts, t.idle, |t, d| t.idle(d.0));
            timeouts = set(timeouts, t.streams_outlive_total, Timeouts::streams_outlive_total);
            for (name, d) in [
                ("connect", timeouts.connect),
                ("attempt", timeouts.attempt),
                ("first_chunk", timeouts.first_chunk),
                ("total", timeouts.total),
                ("idle", timeouts.idle),
            ] {
                if d.is_zero() {
                    return Err(fail(Some(span), None, format!("[timeouts]: {name} must be greater than zero")));
                }
            }
        }

        let caller = match &raw.caller {
            Some(c) => {
                let point = GeoPoint::new(c.get_ref().lat, c.get_ref().lon);
                if !point.is_valid() {
                    return Err(fail(
                        Some(c.span()),
                        None,
                        "[caller]: lat must be within -90..=90 and lon within -180..=180".to_owned(),
                    ));
                }
                Some(point)
            }
            None => None,
        };

        let mut model_routing = ModelRouting::new();
        if let Some(m) = &raw.models {
            let span = m.span();
            let m = m.get_ref();
            for (alias, model) in &m.aliases {
                model_routing = model_routing.alias(alias.clone(), model.clone());
            }
            for (model, list) in &m.fallbacks {
                model_routing = model_routing.fallbacks(model.clone(), list.clone());
            }
            if let Some(ttl) = m.not_found_ttl {
                model_routing = model_routing.not_found_ttl(ttl.0);
            }
            model_routing.check().map_err(|e| fail(Some(span), None, error_message(&e)))?;
        }
        let fleet = match &raw.fleet {
            Some(f) => {
                let span = f.span();
                let f = f.get_ref();
                let bad = |m: String| fail(Some(span.clone()), None, format!("[fleet]: {m}"));
                let url = f.redis_url.get_ref();
                // Credentials come from the environment only, like API keys.
                let authority = url.split_once("://").map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
                if authority.contains('@') {
                    return Err(bad(
                        "redis_url must not carry credentials: name their variables with password_env and username_env"
                            .to_owned(),
                    ));
                }
                let mut b = FleetBuilder::new(url.clone());
                if let Some(ns) = &f.namespace {
                    b = b.namespace(ns.clone());
                }
                if let Some(id) = &f.replica_id {
                    b = b.replica_id(id.clone());
                }
                b = set(b, f.lease, |b, d| b.lease(d.0));
                b = set(b, f.op_timeout, |b, d| b.op_timeout(d.0));
                for var in [&f.password_env, &f.username_env].into_iter().flatten() {
                    check_env_name(var).map_err(&bad)?;
                }
                if let Some(var) = &f.password_env {
                    b = b.password_env(var.clone());
                }
                if let Some(var) = &f.username_env {
                    b = b.username_env(var.clone());
                }
                if let Some(on) = f.shared_retry_budget {
                    b = b.shared_retry_budget(on);
                }
                for (region, per_minute) in f.region_limits.iter().flatten() {
                    if !regions.iter().any(|r| r.region.id() == region.as_str()) {
                        return Err(bad(format!("region_limits: no region `{region}` in this file")));
                    }
                    b = b.region_limit(region.clone(), *per_minute);
                }
                b = set(b, f.limit_window, |b, d| b.limit_window(d.0));
                b = set(b, f.limit_batch, FleetBuilder::limit_batch);
                match b.clone().build() {
                    Ok(_) | Err(FleetError::MissingCredential { .. }) => {}
                    Err(e) => return Err(bad(chain(&e))),
                }
                Some(b)
            }
            None => None,
        };

        let server = crate::server_config::ServerSettings::from_raw(raw.server.as_ref())
            .map_err(|(span, m)| fail(Some(span), None, m))?;

        Ok(Self {
            model_routing,
            server,
            path: path.to_owned(),
            regions,
            api_key_env,
            strategy,
            seed,
            probing,
            probe,
            outlier,
            failover,
            timeouts,
            caller,
            fleet,
        })
    }

    /// Fleet mode settings, if the file has a `[fleet]` table. Build them at start: the
    /// credentials come from the environment.
    pub fn fleet(&self) -> Option<&FleetBuilder> {
        self.fleet.as_ref()
    }

    /// The file this came from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The regions, without keys.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().map(|r| &r.region)
    }

    /// The region ids, in file order.
    pub fn region_ids(&self) -> Vec<&str> {
        self.regions.iter().map(|r| r.region.id()).collect()
    }

    /// The strategy.
    pub fn strategy(&self) -> StrategyKind {
        self.strategy
    }

    /// Whether active probing is on.
    pub fn probing(&self) -> bool {
        self.probing
    }

    /// Active-probe settings.
    pub fn probe_config(&self) -> &ProbeConfig {
        &self.probe
    }

    /// The `[server]` settings of `sluice serve`, defaults filled in.
    pub fn server(&self) -> &crate::server_config::ServerSettings {
        &self.server
    }

    /// The default caller location, if configured.
    pub fn caller(&self) -> Option<GeoPoint> {
        self.caller
    }

    /// Where each key comes from, for `check-config`: `(region id, variable, is set)`.
    pub fn key_sources(&self) -> Vec<(String, String, bool)> {
        self.regions
            .iter()
            .map(|r| {
                let var = r.api_key_env.clone().unwrap_or_else(|| self.api_key_env.0.clone());
                let set = env_key(&var).is_some();
                (r.region.id().to_owned(), var, set)
            })
            .collect()
    }

    /// The regions with their keys read from the environment, plus the global key.
    ///
    /// # Errors
    /// A variable that the file names explicitly and that is unset or empty.
    pub fn resolve_keys(&self) -> Result<(Vec<Region>, Option<ApiKey>), CliError> {
        let (global_var, explicit) = &self.api_key_env;
        let global = env_key(global_var);
        let mut regions = Vec::with_capacity(self.regions.len());
        let mut global_needed = false;
        for spec in &self.regions {
            match &spec.api_key_env {
                Some(var) => match env_key(var) {
                    Some(key) => regions.push(spec.region.clone().with_api_key(key)),
                    None => {
                        return Err(CliError::Usage(format!(
                            "region `{}`: environment variable {var} (its api_key_env) is not set",
                            spec.region.id()
                        )));
                    }
                },
                None => {
                    global_needed = true;
                    regions.push(spec.region.clone());
                }
            }
        }
        if global_needed && *explicit && global.is_none() {
            return Err(CliError::Usage(format!("environment variable {global_var} (api_key_env) is not set")));
        }
        Ok((regions, global))
    }

    /// A client builder with every setting of the file and the keys from the environment.
    ///
    /// # Errors
    /// As for [`Config::resolve_keys`].
    pub fn client_builder(&self) -> Result<ClientBuilder, CliError> {
        let (regions, key) = self.resolve_keys()?;
        let mut b = Client::builder()
            .regions(regions)
            .strategy(match self.seed {
                Some(seed) => self.strategy.build_seeded(seed),
                None => self.strategy.build(),
            })
            .probe_config(self.probe.clone())
            .active_probing(self.probing)
            .outlier_config(self.outlier.clone())
            .failover(self.failover.clone())
            .timeouts(self.timeouts);
        if let Some(seed) = self.seed {
            b = b.seed(seed);
        }
        if let Some(k) = key {
            b = b.api_key(k);
        }
        if let Some(c) = self.caller {
            b = b.default_caller(c);
        }
        for (id, p) in self.providers() {
            b = b.provider(id, p);
        }
        for (id, m) in self.region_models() {
            b = b.region_models(id, m);
        }
        Ok(b.model_routing(self.model_routing.clone()))
    }

    /// Each region's provider, where the file sets one.
    pub fn providers(&self) -> Vec<(String, Provider)> {
        self.regions.iter().filter_map(|spec| Some((spec.region.id().to_owned(), spec.provider.clone()?))).collect()
    }

    /// Each region's configured models, where the file sets them.
    pub fn region_models(&self) -> Vec<(String, Vec<String>)> {
        self.regions.iter().filter_map(|spec| Some((spec.region.id().to_owned(), spec.models.clone()?))).collect()
    }

    /// A one-paragraph description for `check-config`.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{}: ok: {} region(s), strategy {}, active probing {}\n",
            self.path,
            self.regions.len(),
            self.strategy,
            if self.probing { "on" } else { "off" }
        );
        for (id, var, set) in self.key_sources() {
            let r = self.regions.iter().find(|r| r.region.id() == id).map(|r| &r.region);
            let (name, url) = r.map_or(("", ""), |r| (r.name(), r.endpoint()));
            out.push_str(&format!(
                "  {id:<18} {name:<12} {url}  key from {var} ({})\n",
                if set { "set" } else { "not set" }
            ));
        }
        out
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("regions", &self.regions)
            .field("api_key_env", &self.api_key_env.0)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

// ===== impl ConfigError =====

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": ")?;
        // Region-model messages already name the region.
        if let Some(region) = &self.region
            && !self.message.contains(&format!("`{region}`"))
        {
            write!(f, "region `{region}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

// ===== impl Dur =====

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid duration `{s}`: write a number and a unit, such as \"500ms\", \"2s\" or \"5m\"");
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let secs = value * scale;
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(bad());
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

// ===== helpers =====

/// Applies `f` to `target` when `value` is set.
fn set<T, V>(target: T, value: Option<V>, f: impl FnOnce(T, V) -> T) -> T {
    match value {
        Some(v) => f(target, v),
        None => target,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut end = offset;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The id of the `[[region]]` table that contains a byte offset, found by reading the text
/// (used for syntax errors, when there is no parsed file to ask).
fn region_at(text: &str, offset: usize) -> Option<String> {
    let mut current: Option<(bool, Option<String>)> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > offset {
            break;
        }
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let is_region = trimmed.trim_start_matches('[').trim_end_matches(']').trim() == "region";
            current = Some((is_region, None));
        } else if let Some((true, id @ None)) = &mut current
            && let Some(rest) = trimmed.strip_prefix("id")
            && let Some(value) = rest.trim_start().strip_prefix('=')
        {
            *id = Some(value.trim().trim_matches('"').to_owned());
        }
        pos += line.len();
    }
    // Look ahead for the id when the error comes before the `id` line.
    if let Some((true, None)) = current {
        let rest = &text[pos.min(text.len())..];
        for line in rest.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                break;
            }
            if let Some(v) = trimmed.strip_prefix("id").and_then(|r| r.trim_start().strip_prefix('=')) {
                return Some(v.trim().trim_matches('"').to_owned());
            }
        }
    }
    match current {
        Some((true, id)) => id.or_else(|| Some("?".to_owned())).filter(|s| s != "?"),
        _ => None,
    }
}

/// The region a snapshot error is about, with the span of the offending value.
fn snapshot_error_region(e: &SnapshotError, raw: &[Spanned<RawRegion>]) -> Option<(String, Range<usize>)> {
    let find = |id: &str| raw.iter().map(Spanned::get_ref).find(|r| r.id.get_ref() == id);
    let found = match e {
        SnapshotError::EmptyId { index } => {
            return raw.get(*index).map(|r| ("(empty id)".to_owned(), r.get_ref().id.span()));
        }
        // Point at the second occurrence.
        SnapshotError::DuplicateId { region } => {
            raw.iter().map(Spanned::get_ref).filter(|r| r.id.get_ref() == region).nth(1).map(|r| (r, r.id.span()))
        }
        SnapshotError::NotFinite { region, field } => {
            find(region).map(|r| (r, if *field == "latitude" { r.lat.span() } else { r.lon.span() }))
        }
        SnapshotError::LatitudeOutOfRange { region, .. } => find(region).map(|r| (r, r.lat.span())),
        SnapshotError::LongitudeOutOfRange { region, .. } => find(region).map(|r| (r, r.lon.span())),
        SnapshotError::InvalidUrl { region, .. }
        | SnapshotError::UnsupportedScheme { region, .. }
        | SnapshotError::CredentialsInUrl { region } => find(region).map(|r| (r, r.url.span())),
        _ => None,
    };
    found.map(|(r, span)| (r.id.get_ref().clone(), span))
}

fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "api_key_env must name an environment variable (letters, digits, `_`), got `{name}`; keys are never written in the file"
        ))
    }
}

/// A key from the environment; unset and empty are the same.
fn env_key(var: &str) -> Option<ApiKey> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty()).map(|v| ApiKey::new(v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[region]]
id = "ap-northeast-2"
name = "Seoul"
url = "http://127.0.0.1:8080/v1"
lat = 37.56
lon = 126.97
weight = 100

[[region]]
id = "us-east-1"
name = "Virginia"
url = "http://127.0.0.1:8081/v1"
lat = 38.9
lon = -77.0
"#;

    fn check_err(text: &str, expect: &str) {
        let err = Config::parse("c.toml", text).expect_err("should fail");
        let shown = err.to_string();
        assert!(shown.contains(expect), "`{shown}` does not contain `{expect}`");
    }

    #[test]
    fn the_documented_shape_parses() {
        let c = Config::parse("c.toml", GOOD).unwrap();
        assert_eq!(c.region_ids(), ["ap-northeast-2", "us-east-1"]);
        assert_eq!(c.strategy(), StrategyKind::Locality);
        assert!(c.probing());
        assert_eq!(c.regions().next().unwrap().name(), "Seoul");
    }

    #[test]
    fn max_concurrency_reaches_the_region_and_zero_is_refused() {
        let c = Config::parse("c.toml", GOOD).unwrap();
        assert!(c.regions().all(|r| r.max_concurrency().is_none()), "unset: learned from 429s");
        let text = GOOD.replace("weight = 100", "weight = 100\nmax_concurrency = 48");
        let c = Config::parse("c.toml", &text).unwrap();
        let limits: Vec<Option<u32>> = c.regions().map(|r| r.max_concurrency()).collect();
        assert_eq!(limits, [Some(48), None]);
        for bad in ["0", "-3", "5000000000"] {
            let text = GOOD.replace("weight = 100", &format!("weight = 100\nmax_concurrency = {bad}"));
            let err = Config::parse("c.toml", &text).expect_err(bad).to_string();
            assert!(err.contains("max_concurrency must be a whole number from 1"), "{bad}: {err}");
            assert!(err.contains("ap-northeast-2"), "{bad}: names the region: {err}");
            assert!(err.contains(&format!("got {bad}")), "{bad}: {err}");
        }
        // A value of the wrong type is a TOML error at its position, in its region.
        check_err(&GOOD.replace("weight = 100", "weight = 100\nmax_concurrency = \"many\""), "c.toml:9:");
    }

    #[test]
    fn every_table_parses() {
        let text = format!(
            "api_key_env = \"MY_KEY\"\n{GOOD}\n[strategy]\nname = \"geo\"\nseed = 7\n[health.probe]\nenabled = false\ninterval = \"250ms\"\ntimeout = \"1.5s\"\nrise = 3\n[health.outlier]\nconsecutive_failures = 3\nslow_start_window = \"5s\"\n[failover]\nmax_attempts = 2\nrescue = false\nretry_on_timeout = true\nhedge_percentile = 95.0\n[timeouts]\ntotal = \"2m\"\nidle = \"45s\"\nattempt = \"90s\"\n[caller]\nlat = 1.0\nlon = 2.0\n"
        );
        let c = Config::parse("c.toml", &text).unwrap();
        assert_eq!(c.strategy(), StrategyKind::GeoNearest);
        assert!(!c.probing());
        assert_eq!(c.probe_config().interval(), Duration::from_millis(250));
        assert_eq!(c.timeouts.total, Duration::from_secs(120));
        assert_eq!(c.timeouts.idle, Duration::from_secs(45));
        assert_eq!(c.timeouts.attempt, Duration::from_secs(90));
        assert!(c.failover.retry_on_timeout);
        assert_eq!(c.failover.max_attempts, 2);
        assert!(c.caller().is_some());
        assert_eq!(c.key_sources()[0].1, "MY_KEY");
    }

    #[test]
    fn fleet_table_parses_and_keeps_credentials_out_of_the_file() {
        let c = Config::parse("c.toml", GOOD).unwrap();
        assert!(c.fleet().is_none());
        let text = format!(
            "{GOOD}\n[fleet]\nredis_url = \"redis://127.0.0.1:6379/0\"\nreplica_id = \"serve-1\"\nlease = \"2s\"\n"
        );
        let c = Config::parse("c.toml", &text).unwrap();
        let fleet = c.fleet().expect("[fleet]").clone().build().expect("valid");
        assert_eq!(fleet.replica_id(), "serve-1");
        assert_eq!(fleet.lease(), Duration::from_secs(2));
        check_err(&format!("{GOOD}\n[fleet]\nredis_url = \"redis://u:secret@h:6379\"\n"), "must not carry credentials");
        check_err(&format!("{GOOD}\n[fleet]\nredis_url = \"http://h\"\n"), "[fleet]: invalid redis url");
        check_err(&format!("{GOOD}\n[fleet]\nredis_url = \"redis://h\"\nlease = \"1ms\"\n"), "lease");
        check_err(&format!("{GOOD}\n[fleet]\nredis_url = \"redis://h\"\nreplica = \"x\"\n"), "unknown field `replica`");
        let region = c.regions[0].region.id().to_owned();
        let limited = Config::parse(
            "c.toml",
            &format!("{GOOD}\n[fleet]\nredis_url = \"redis://h\"\nshared_retry_budget = true\nlimit_window = \"2s\"\n[fleet.region_limits]\n\"{region}\" = 600\n"),
        )
        .expect("valid");
        let fleet = limited.fleet().expect("[fleet]").clone().build().expect("valid");
        assert!(fleet.shared_retry_budget());
        assert_eq!((fleet.region_limit(&region), fleet.limit_window()), (Some(600), Duration::from_secs(2)));
        check_err(
            &format!("{GOOD}\n[fleet]\nredis_url = \"redis://h\"\n[fleet.region_limits]\nnowhere = 5\n"),
            "no region `nowhere`",
        );
        check_err(&format!("{GOOD}\n[fleet]\nredis_url = \"redis://h\"\nlimit_batch = 0\n"), "limit_batch");
        // A named credential variable that is unset is checked at start, not here.
        let text =
            format!("{GOOD}\n[fleet]\nredis_url = \"redis://h\"\npassword_env = \"SLUICE_CLI_TEST_SURELY_UNSET\"\n");
        let c = Config::parse("c.toml", &text).unwrap();
        assert!(c.fleet().expect("[fleet]").clone().build().is_err());
    }

    #[test]
    fn errors_have_position_and_region() {
        // Unknown key inside a region.
        check_err(
            &GOOD.replace("weight = 100", "wieght = 100"),
            "c.toml:8:1: region `ap-northeast-2`: unknown field `wieght`",
        );
        // Syntax error.
        check_err(&GOOD.replace("lat = 38.9", "lat = 38.9.9"), "region `us-east-1`");
        // Region-model errors name the region and point at its table.
        check_err(&GOOD.replace("lat = 38.9", "lat = 95.0"), "c.toml:14:7: region `us-east-1`: latitude 95 is outside");
        check_err(&GOOD.replace("http://127.0.0.1:8081/v1", "ftp://x"), "region `us-east-1`: endpoint scheme `ftp`");
        check_err(&GOOD.replace("us-east-1", "ap-northeast-2"), "duplicate region id `ap-northeast-2`");
        // Unknown top-level keys and tables.
        check_err(&format!("{GOOD}\n[retry]\nx = 1\n"), "unknown field `retry`");
        check_err(&format!("api_key = \"sk-1\"\n{GOOD}"), "c.toml:1:1: unknown field `api_key`");
        // Values.
        check_err(&format!("{GOOD}\n[strategy]\nname = \"fastest\"\n"), "unknown strategy `fastest`");
        check_err(&format!("{GOOD}\n[timeouts]\ntotal = \"10\"\n"), "invalid duration `10`");
        check_err(&format!("{GOOD}\n[health.probe]\nrise = 0\n"), "[health.probe]");
        check_err(&format!("{GOOD}\n[failover]\nmax_attempts = 0\n"), "max_attempts must be at least 1");
        check_err(&format!("{GOOD}\n[caller]\nlat = 100.0\nlon = 0.0\n"), "[caller]");
        check_err("", "no regions");
        check_err(&GOOD.replace("lat = 37.56\n", ""), "missing field `lat`");
        check_err(&GOOD.replace("weight = 100", "weight = -1"), "region `ap-northeast-2`");
        check_err(
            &GOOD.replace("weight = 100", "weight = 100\napi_key_env = \"sk-123\""),
            "api_key_env must name an environment variable",
        );
    }

    const ROUTED: &str = r#"
[[region]]
id = "openai-us"
url = "https://api.openai.com/v1?team=a"
lat = 38.9
lon = -77.0
zone = "us"
models = ["gpt-4o", "gpt-4o-mini"]
headers = { "OpenAI-Project" = "proj_x" }

[[region]]
id = "azure-eu"
url = "https://name.openai.azure.com/openai"
lat = 52.37
lon = 4.90
zone = "eu"
provider = "azure"
api_version = "2024-10-21"
deployments = { "gpt-4o-mini" = "mini-eu" }

[[region]]
id = "other"
url = "http://127.0.0.1:9000/v1"
lat = 1.0
lon = 2.0
auth = { header = "x-api-key" }
pass_caller_key = true

[models]
aliases = { fast = "gpt-4o-mini" }
fallbacks = { "gpt-4o" = ["fast"] }
not_found_ttl = "2m"
"#;

    #[test]
    fn providers_models_and_zones_parse() {
        let c = Config::parse("c.toml", ROUTED).unwrap();
        let zones: Vec<_> = c.regions().map(|r| r.zone()).collect();
        assert_eq!(zones, [Some("us"), Some("eu"), None]);
        assert_eq!(c.regions[0].models.as_deref(), Some(&["gpt-4o".to_owned(), "gpt-4o-mini".to_owned()][..]));
        assert_eq!(c.regions[0].provider, Some(Provider::openai().header("OpenAI-Project", "proj_x")));
        assert_eq!(
            c.regions[1].provider,
            Some(Provider::azure().api_version("2024-10-21").deployment("gpt-4o-mini", "mini-eu"))
        );
        assert_eq!(c.regions[2].provider, Some(Provider::openai().auth_header("x-api-key").pass_caller_key()));
        assert!(!c.regions[0].provider.as_ref().is_some_and(Provider::passes_caller_key));
        assert_eq!(c.model_routing.resolve("fast"), "gpt-4o-mini");
        assert_eq!(c.model_routing.fallbacks_of("gpt-4o").collect::<Vec<_>>(), ["gpt-4o-mini"]);
    }

    #[test]
    fn bad_provider_settings_name_the_region() {
        let region = |extra: &str| {
            format!(
                "[[region]]\nid = \"az\"\nurl = \"https://n.openai.azure.com/openai\"\nlat = 1.0\nlon = 2.0\n{extra}\n"
            )
        };
        check_err(&region("provider = \"bedrock\""), "unknown provider `bedrock`");
        check_err(&region("provider = \"azure\""), "api_version");
        check_err(&region("auth = { header = \"bad header\" }"), "auth header");
        check_err(&region("headers = { \"x\" = \"a\\nb\" }"), "invalid value");
        check_err(&region("models = []"), "at least one model");
        check_err(&region("provider = \"azure\"\napi_version = \"v\"\ndeployments = {}"), "deployments is empty");
        check_err(&region("auth = { header = \"x\", scheme = \"y\" }"), "unknown field");
        let with_models = |models: &str| format!("{}\n[models]\n{models}\n", region(""));
        check_err(&with_models("aliases = { a = \"a\" }"), "names itself");
        check_err(&with_models("fallbacks = { m = [\"m\"] }"), "own fallbacks");
        check_err(&with_models("colour = 1"), "unknown field");
        for (text, region) in
            [(region("provider = \"bedrock\""), Some("az")), (with_models("aliases = { a = \"a\" }"), None)]
        {
            assert_eq!(Config::parse("c.toml", &text).unwrap_err().region.as_deref(), region);
        }
    }

    #[tokio::test]
    async fn the_client_gets_providers_models_and_routing() {
        let c = Config::parse("c.toml", ROUTED).unwrap();
        let client = c.client_builder().unwrap().active_probing(false).build().unwrap();
        let models = client.region_models();
        assert_eq!(models[0].1.as_deref(), Some(&["gpt-4o".to_owned(), "gpt-4o-mini".to_owned()][..]));
        assert_eq!(models[1].1.as_deref(), Some(&["gpt-4o-mini".to_owned()][..]), "the deployment table");
        assert_eq!(models[2].1, None);
        assert_eq!(client.resolve_model("fast"), "gpt-4o-mini");
    }

    #[test]
    fn readme_examples_parse_and_show_the_defaults() {
        for md in [include_str!("../README.md"), include_str!("../../../README.md")] {
            let block = md.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
            let c = Config::parse("README.md", block).unwrap_or_else(|e| panic!("{e}"));
            assert!(!c.region_ids().is_empty());
        }
        let c = Config::parse(
            "README.md",
            include_str!("../README.md").split("```toml\n").nth(1).unwrap().split("```").next().unwrap(),
        )
        .unwrap();
        assert_eq!(c.probe, ProbeConfig::default());
        assert_eq!(c.outlier, OutlierConfig::default());
        assert_eq!(c.failover, FailoverPolicy::default());
        assert_eq!(c.timeouts, Timeouts::default());
    }

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<Dur>().map(|d| d.0);
        assert_eq!(d("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(d("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(d("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(d(" 1h ").unwrap(), Duration::from_secs(3600));
        for bad in ["", "10", "s", "1x", "-1s", "1e3s", "NaNs"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("a\nbc\nd", 0), (1, 1));
        assert_eq!(line_col("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_col("a\nbc\nd", 5), (3, 1));
        assert_eq!(line_col("a", 99), (1, 2));
    }

    proptest::proptest! {
        /// No file text makes the config loader panic: it loads or says why not.
        #[test]
        fn fuzz_config_loader(
            noise in "[\\[\\]a-z_=\"0-9.,{} \n#-]{0,200}",
            cut in 0usize..400,
        ) {
            let _ = Config::parse("fuzz.toml", &noise);
            // Truncated and spliced valid configs reach deeper than noise alone.
            let good = format!("{GOOD}\n[failover]\nmax_wait = \"5s\"\n[timeouts]\nidle = \"1s\"\n");
            let at = good.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(good.len());
            let _ = Config::parse("fuzz.toml", &good[..at]);
            let _ = Config::parse("fuzz.toml", &format!("{}{noise}", &good[..at]));
        }
    }
}
