//! Pick probability inversely proportional to latency.

use std::time::Duration;

use sluice_region_model::{Node, NodeId};

use crate::{ConfigError, PickView, Strategy, error::check_positive, rng::PickRng, select};

/// Latency assumed for a node with no sample yet: optimistic, so that a new node is tried.
pub const DEFAULT_COLD_START_LATENCY: Duration = Duration::from_millis(50);

/// Estimates below this are raised to it, so that a near-zero estimate cannot take all traffic.
pub const LATENCY_FLOOR: Duration = Duration::from_micros(100);

/// Response-time weighted: each candidate is chosen with probability proportional to
/// `weight / latency`.
///
/// The latency is the node's peak-EWMA estimate (Finagle's `PeakEwma`, as in tower), kept by
/// `NodeMetrics` and decayed to the pick's `now`. It is not a mean of recent samples: a slow
/// answer raises it at once, and it falls back over the decay time.
/// Recording a penalty with `NodeMetrics::record_penalty` after a 429 or 5xx makes a node look
/// slow in the same way.
///
/// A node with no sample yet uses the cold-start latency ([`DEFAULT_COLD_START_LATENCY`]):
/// optimistic, so it is tried and not starved; its first real sample then replaces it.
///
/// # Cost
/// O(n): exact sampling reads every candidate once (one atomic read and at most one `exp` per
/// node, plus one random draw).
#[derive(Debug, Clone)]
pub struct ResponseTimeWeighted {
    cold_start_ns: f64,
}

// ===== impl ResponseTimeWeighted =====

impl ResponseTimeWeighted {
    /// With default settings.
    pub fn new() -> Self {
        Self { cold_start_ns: DEFAULT_COLD_START_LATENCY.as_nanos() as f64 }
    }

    /// Sets the latency assumed for nodes with no sample.
    ///
    /// # Errors
    /// If `latency` is zero.
    pub fn with_cold_start(mut self, latency: Duration) -> Result<Self, ConfigError> {
        self.cold_start_ns = check_positive("cold_start_latency", latency.as_nanos() as f64)?;
        Ok(self)
    }

    /// The latency used for `node` at `now_ns` (nanoseconds since the snapshot's epoch), in
    /// nanoseconds: its estimate, or the cold-start value, never below [`LATENCY_FLOOR`].
    pub fn latency_ns(&self, node: &Node, now_ns: u64) -> f64 {
        latency_or(node.metrics().latency_estimate_ns_at(now_ns), self.cold_start_ns)
    }

    /// The relative pick weight of `node` at `now_ns`: effective weight / latency.
    pub fn pick_weight(&self, node: &Node, now_ns: u64) -> f64 {
        select::effective_weight_ns(node, now_ns) / self.latency_ns(node, now_ns)
    }
}

pub(crate) fn latency_or(estimate: Option<f64>, cold_ns: f64) -> f64 {
    match estimate {
        Some(est) if est.is_finite() => est.max(LATENCY_FLOOR.as_nanos() as f64),
        Some(_) => f64::INFINITY,
        None => cold_ns,
    }
}

impl Default for ResponseTimeWeighted {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for ResponseTimeWeighted {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        let mut rng = PickRng::new(view.entropy());
        let now = view.now_nanos();
        select::weighted_random(view, &mut rng, |id| self.pick_weight(view.node(id), now))
    }

    fn name(&self) -> &'static str {
        "response-time"
    }
}
