//! The gateway's own HTTP metrics, through the `metrics` facade: calls per endpoint, model
//! and status, in flight, refused, disconnected, tokens and cost. Per-region instruments are
//! registered once so that the request path only bumps atomics.

use std::{collections::HashSet, sync::Arc};

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram};
use parking_lot::RwLock;
use sluice_client::{Client, telemetry::LabelCache};
use sluice_region_model::NodeId;

use crate::usage::Usage;

/// Most distinct `model` label values; everything else is `other`.
pub const MAX_MODEL_LABELS: usize = 256;

/// Per-region instruments.
#[derive(Debug, Clone)]
pub(crate) struct RegionMetrics {
    /// The region id, the `region` label.
    pub(crate) id: Arc<str>,
    pub(crate) requests: Counter,
    pub(crate) errors: Counter,
    pub(crate) latency: Histogram,
    pub(crate) ejections: Counter,
    pub(crate) cooldowns: Counter,
    pub(crate) state: Gauge,
    pub(crate) eligible: Gauge,
}

/// The gateway's instruments.
#[derive(Debug)]
pub(crate) struct GatewayMetrics {
    /// Per region, in the node order of the client's snapshot at build time; regions a reload
    /// adds are appended when first seen. Looked up by region id, so that a reload that
    /// removes or reorders regions never mislabels a series.
    regions: ArcSwap<Vec<RegionMetrics>>,
    pub(crate) in_flight: Gauge,
    pub(crate) rejected: Counter,
    pub(crate) overloaded: Counter,
    pub(crate) disconnect_before_answer: Counter,
    pub(crate) disconnect_mid_answer: Counter,
    models: ModelLabels,
    /// `sluice_proxy_calls_total` by endpoint, model and status.
    calls: LabelCache<(&'static str, Arc<str>, &'static str), Counter>,
    /// `sluice_tokens_total` by region, model and kind.
    tokens: LabelCache<(Arc<str>, Arc<str>, &'static str), Counter>,
    /// `sluice_cost_micros_total` by region and model.
    cost: LabelCache<(Arc<str>, Arc<str>), Counter>,
}

/// The models that may appear as a `model` label.
#[derive(Debug)]
pub(crate) struct ModelLabels {
    known: RwLock<HashSet<Arc<str>>>,
    none: Arc<str>,
    other: Arc<str>,
}

impl Default for ModelLabels {
    fn default() -> Self {
        Self { known: RwLock::default(), none: Arc::from("none"), other: Arc::from("other") }
    }
}

/// A price per million tokens, in the currency the operator chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
    /// Per million cached input tokens (defaults to the input price).
    pub cached_input: Option<f64>,
}

/// Prices by model, optionally per region.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    entries: Vec<(Option<String>, String, Price)>,
}

impl Prices {
    /// No prices: no cost counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A price for `model` in every region (`region = None`) or in one.
    pub fn set(mut self, region: Option<&str>, model: &str, price: Price) -> Self {
        self.entries.push((region.map(str::to_owned), model.to_owned(), price));
        self
    }

    /// The price of `model` in `region`: the region's own first, then the general one.
    pub fn get(&self, region: &str, model: &str) -> Option<Price> {
        let mut general = None;
        for (r, m, p) in &self.entries {
            if m == model {
                match r {
                    Some(r) if r == region => return Some(*p),
                    None => general = Some(*p),
                    _ => {}
                }
            }
        }
        general
    }

    /// The models priced, for the `model` label.
    pub(crate) fn models(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, m, _)| m.as_str())
    }

    /// Whether no price is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl ModelLabels {
    pub(crate) fn add<'a>(&self, models: impl IntoIterator<Item = &'a str>) {
        let mut known = self.known.write();
        for m in models {
            if known.len() >= MAX_MODEL_LABELS {
                break;
            }
            if !m.is_empty() && !known.contains(m) {
                known.insert(Arc::from(m));
            }
        }
    }

    /// The label for `model`: itself when known, else `other`.
    pub(crate) fn label(&self, model: Option<&str>) -> Arc<str> {
        match model {
            None | Some("") => Arc::clone(&self.none),
            Some(m) => Arc::clone(self.known.read().get(m).unwrap_or(&self.other)),
        }
    }
}

impl RegionMetrics {
    /// Registers the instruments of region `id`, every series visible from the first scrape.
    fn register(id: &str) -> Self {
        let label = id.to_owned();
        let m = Self {
            id: Arc::from(id),
            requests: metrics::counter!("sluice_requests_total", "region" => label.clone()),
            errors: metrics::counter!("sluice_errors_total", "region" => label.clone()),
            latency: metrics::histogram!("sluice_request_duration_seconds", "region" => label.clone()),
            ejections: metrics::counter!("sluice_region_ejections_total", "region" => label.clone()),
            cooldowns: metrics::counter!("sluice_region_cooldowns_total", "region" => label.clone()),
            state: metrics::gauge!("sluice_region_health_state", "region" => label.clone()),
            eligible: metrics::gauge!("sluice_region_eligible", "region" => label),
        };
        for c in [&m.requests, &m.errors, &m.ejections, &m.cooldowns] {
            c.increment(0);
        }
        m.eligible.set(1.0);
        m
    }
}

impl GatewayMetrics {
    /// Runs `f` on the instruments of region `id` (node `node` of the snapshot the call used,
    /// a hint). No lock and no allocation on the common path; a region a reload added is
    /// registered once, the first time it is seen.
    pub(crate) fn with_region(&self, node: NodeId, id: &str, f: impl FnOnce(&RegionMetrics)) {
        let table = self.regions.load();
        let hit = table.get(node.index()).filter(|m| &*m.id == id).or_else(|| table.iter().find(|m| &*m.id == id));
        if let Some(m) = hit {
            f(m);
            return;
        }
        drop(table);
        let added = RegionMetrics::register(id);
        f(&added);
        self.regions.rcu(|t| {
            let mut t = Vec::clone(t);
            if !t.iter().any(|m| &*m.id == id) {
                t.push(added.clone());
            }
            t
        });
    }

    /// Every region's instruments, those of regions a reload removed included.
    pub(crate) fn regions(&self) -> arc_swap::Guard<Arc<Vec<RegionMetrics>>> {
        self.regions.load()
    }

    /// Registers the instruments with the installed `metrics` recorder.
    pub(crate) fn new(client: &Client) -> Self {
        describe();
        let regions = client.snapshot().nodes().iter().map(|n| RegionMetrics::register(n.region().id())).collect();
        let in_flight = metrics::gauge!("sluice_proxy_in_flight");
        in_flight.set(0.0);
        let rejected = metrics::counter!("sluice_proxy_rejected_total");
        rejected.increment(0);
        let overloaded = metrics::counter!("sluice_proxy_overloaded_total");
        overloaded.increment(0);
        let disconnect_before_answer = metrics::counter!("sluice_proxy_disconnects_total", "stage" => "before_answer");
        let disconnect_mid_answer = metrics::counter!("sluice_proxy_disconnects_total", "stage" => "mid_answer");
        disconnect_before_answer.increment(0);
        disconnect_mid_answer.increment(0);
        Self {
            regions: ArcSwap::from_pointee(regions),
            in_flight,
            rejected,
            overloaded,
            disconnect_before_answer,
            disconnect_mid_answer,
            models: ModelLabels::default(),
            calls: LabelCache::default(),
            tokens: LabelCache::default(),
            cost: LabelCache::default(),
        }
    }

    pub(crate) fn models(&self) -> &ModelLabels {
        &self.models
    }

    /// Counts one finished call.
    pub(crate) fn call(&self, endpoint: &'static str, model: &Arc<str>, status: &'static str) {
        self.calls
            .get((endpoint, Arc::clone(model), status), |(endpoint, model, status)| {
                metrics::counter!("sluice_proxy_calls_total", "endpoint" => *endpoint, "model" => Arc::clone(model), "status" => *status)
            })
            .increment(1);
    }

    /// Counts the tokens (and the cost, when priced) of one answer.
    pub(crate) fn usage(&self, region: &Arc<str>, model: &Arc<str>, usage: Usage, prices: &Prices, price_model: &str) {
        for (kind, n) in [("input", usage.input), ("output", usage.output), ("cached_input", usage.cached)] {
            if n > 0 {
                self.tokens
                    .get((Arc::clone(region), Arc::clone(model), kind), |(r, m, kind)| {
                        metrics::counter!("sluice_tokens_total", "region" => Arc::clone(r), "model" => Arc::clone(m), "kind" => *kind)
                    })
                    .increment(n);
            }
        }
        if let Some(p) = prices.get(region, price_model) {
            let cached = usage.cached.min(usage.input);
            let cost = (usage.input - cached) as f64 * p.input
                + cached as f64 * p.cached_input.unwrap_or(p.input)
                + usage.output as f64 * p.output;
            // Per million tokens, counted in millionths of the currency unit: the token
            // count times the price is already in millionths.
            self.cost
                .get((Arc::clone(region), Arc::clone(model)), |(r, m)| {
                    metrics::counter!("sluice_cost_micros_total", "region" => Arc::clone(r), "model" => Arc::clone(m))
                })
                .increment(cost.round() as u64);
        }
    }
}

/// The `status` label: a fixed set of values.
pub(crate) fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

fn describe() {
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
    metrics::describe_counter!(
        "sluice_proxy_rejected_total",
        "Calls refused by the gateway itself (400, 401, 413, 503)."
    );
    metrics::describe_counter!(
        "sluice_proxy_overloaded_total",
        "Calls refused because max_concurrent_calls were running."
    );
    metrics::describe_counter!(
        "sluice_proxy_disconnects_total",
        "Callers that went away; their upstream call was cancelled. stage: before_answer or mid_answer."
    );
    metrics::describe_counter!(
        "sluice_proxy_calls_total",
        "Finished calls by endpoint, model (configured or listed models, else other) and status."
    );
    metrics::describe_counter!(
        "sluice_tokens_total",
        "Tokens by region, model and kind (input, output, cached_input)."
    );
    metrics::describe_counter!(
        "sluice_cost_micros_total",
        "Cost in millionths of the price currency, by region and model, from [prices]."
    );
}
