//! Fewest in-flight calls per unit of weight.

use sluice_region_model::{Node, NodeId};

use crate::{PickView, Strategy, rng::PickRng, select};

/// Views up to this size are scanned in full by default; larger ones use power of two choices.
pub const DEFAULT_FULL_SCAN_MAX: usize = 8;

/// Least connections: the node with the lowest `(in_flight + 1) / weight`.
///
/// The `+ 1` is HAProxy's: among idle nodes the heavier one wins, and a node's load counts the
/// call about to be placed.
/// Weight includes the slow-start factor; a zero-weight node has infinite cost and is chosen
/// only when every candidate has zero weight.
///
/// # Selection
/// * Up to [`DEFAULT_FULL_SCAN_MAX`] candidates: a full scan returns an arg-min, ties broken
///   uniformly at random (not by list order, which would herd all clients onto the first node).
/// * Above: power of two choices over a *distinct* random pair (as tower, Finagle and Linkerd
///   draw it), so the strictly most loaded node is never chosen and the cost stays O(1).
#[derive(Debug, Clone)]
pub struct LeastConnections {
    full_scan_max: usize,
}

// ===== impl LeastConnections =====

impl LeastConnections {
    /// With default settings.
    pub fn new() -> Self {
        Self { full_scan_max: DEFAULT_FULL_SCAN_MAX }
    }

    /// Sets the largest view that is scanned in full; `0` means always P2C.
    pub fn with_full_scan_max(mut self, n: usize) -> Self {
        self.full_scan_max = n;
        self
    }

    /// The cost this strategy ranks by: `(in_flight + 1) / effective weight`, at `now_ns`
    /// (nanoseconds since the snapshot's epoch; see `PickView::now_nanos`).
    pub fn cost(node: &Node, now_ns: u64) -> f64 {
        Self::cost_for_weight(node, select::effective_weight_ns(node, now_ns))
    }

    #[inline]
    fn cost_for_weight(node: &Node, w: f64) -> f64 {
        let load = f64::from(node.metrics().in_flight()) + 1.0;
        if w > 0.0 { load / w } else { f64::INFINITY }
    }
}

impl Default for LeastConnections {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for LeastConnections {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        let mut rng = PickRng::new(view.entropy());
        let cost = |id| {
            let node = view.node(id);
            Self::cost_for_weight(node, select::effective_weight(node, view))
        };
        if view.len() <= self.full_scan_max {
            select::argmin(view, &mut rng, cost)
        } else {
            select::p2c(view, &mut rng, cost)
        }
    }

    fn name(&self) -> &'static str {
        "least-connections"
    }
}
