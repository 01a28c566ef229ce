//! One cost from latency, load, errors and weight.

use std::time::Duration;

use sluice_region_model::{Node, NodeId};

use crate::{
    ConfigError, PickView, Strategy,
    error::{check_non_negative, check_positive},
    response_time::{DEFAULT_COLD_START_LATENCY, latency_or},
    rng::PickRng,
    select,
};

/// How much a node's error rate inflates its cost: an error rate `e` multiplies the cost by
/// `1 + 10·e`, so 10 % errors doubles it.
pub const DEFAULT_ERROR_PENALTY: f64 = 10.0;

/// Views up to this size are compared in full by default (see [`Adaptive`]).
pub const DEFAULT_ADAPTIVE_FULL_SCAN_MAX: usize = 8;

/// The adaptive strategy: power of two choices over one cost that combines everything the
/// node metrics know.
///
/// ```text
/// cost = latency × (in_flight + 1) × (1 + error_penalty × error_rate) / effective_weight
/// ```
///
/// * `latency × (in_flight + 1)` is the peak-EWMA load of Finagle and tower: the expected wait
///   if the calls in flight were served one after another. A slow answer raises `latency` at
///   once (peak), and it decays back over the metrics' decay time, so a recovered region is
///   tried again without a probe.
/// * `1 + error_penalty × error_rate` prices failures: a failed attempt costs a retry
///   elsewhere, so a node that fails a share `e` of calls is worth proportionally less. The
///   error rate is an EWMA that decays, so old errors are forgiven.
/// * Dividing by the effective weight (configured weight × slow-start factor) lets operators
///   skew traffic and ramps recovered nodes in.
///
/// Why this shape: every factor is a multiplier around a latency, so the cost stays in
/// nanoseconds and the terms compose without tuning relative scales, which sums of
/// differently-scaled terms would need. Nodes without a latency sample use the cold-start
/// latency ([`DEFAULT_COLD_START_LATENCY`]), optimistic so that they get tried.
///
/// # Selection
/// Above [`DEFAULT_ADAPTIVE_FULL_SCAN_MAX`] candidates: the cheaper of a *distinct* random pair
/// (P2C), O(1), never the most expensive node. At or below it every candidate is compared
/// ("power of n choices"): with five regions whose latencies differ several-fold, P2C would
/// send a fifth of traffic to the second-slowest region, while the in-flight term already
/// spreads load among the fast ones. Ties break at random.
#[derive(Debug, Clone)]
pub struct Adaptive {
    cold_start_ns: f64,
    error_penalty: f64,
    full_scan_max: usize,
}

/// Settings for [`Adaptive`]. Get one from [`Adaptive::builder`].
#[derive(Debug, Clone)]
pub struct AdaptiveBuilder {
    cold_start: Duration,
    error_penalty: f64,
    full_scan_max: usize,
}

// ===== impl Adaptive =====

impl Adaptive {
    /// With default settings.
    pub fn new() -> Self {
        Self::builder().build().expect("defaults are valid")
    }

    /// Settings, starting from the defaults.
    pub fn builder() -> AdaptiveBuilder {
        AdaptiveBuilder {
            cold_start: DEFAULT_COLD_START_LATENCY,
            error_penalty: DEFAULT_ERROR_PENALTY,
            full_scan_max: DEFAULT_ADAPTIVE_FULL_SCAN_MAX,
        }
    }

    /// The cost of sending a call to `node` at `now_ns` (nanoseconds since the snapshot's
    /// epoch; see `PickView::now_nanos`). Lower is better.
    #[inline]
    pub fn cost(&self, node: &Node, now_ns: u64) -> f64 {
        let m = node.metrics();
        let w = select::effective_weight_ns(node, now_ns);
        if w <= 0.0 {
            return f64::INFINITY;
        }
        let (latency, error) = m.latency_and_error_at(now_ns);
        let latency = latency_or(latency, self.cold_start_ns);
        let load = f64::from(m.in_flight()) + 1.0;
        latency * load * (1.0 + self.error_penalty * error) / w
    }
}

impl Default for Adaptive {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for Adaptive {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        let mut rng = PickRng::new(view.entropy());
        let now = view.now_nanos();
        let cost = |id| self.cost(view.node(id), now);
        if view.len() <= self.full_scan_max {
            select::argmin(view, &mut rng, cost)
        } else {
            select::p2c(view, &mut rng, cost)
        }
    }

    fn name(&self) -> &'static str {
        "adaptive"
    }
}

// ===== impl AdaptiveBuilder =====

impl AdaptiveBuilder {
    /// Latency assumed for nodes with no sample. Default [`DEFAULT_COLD_START_LATENCY`].
    pub fn cold_start(mut self, latency: Duration) -> Self {
        self.cold_start = latency;
        self
    }

    /// Cost multiplier per unit of error rate. Default [`DEFAULT_ERROR_PENALTY`].
    pub fn error_penalty(mut self, penalty: f64) -> Self {
        self.error_penalty = penalty;
        self
    }

    /// Largest view compared in full; `0` means always P2C.
    /// Default [`DEFAULT_ADAPTIVE_FULL_SCAN_MAX`].
    pub fn full_scan_max(mut self, n: usize) -> Self {
        self.full_scan_max = n;
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    /// A zero cold-start latency, or an error penalty that is negative or not finite.
    pub fn build(self) -> Result<Adaptive, ConfigError> {
        Ok(Adaptive {
            cold_start_ns: check_positive("cold_start_latency", self.cold_start.as_nanos() as f64)?,
            error_penalty: check_non_negative("error_penalty", self.error_penalty)?,
            full_scan_max: self.full_scan_max,
        })
    }
}
