//! RAII in-flight counting.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
};

use crate::NodeMetrics;

/// Counts one call as in flight on a node until dropped.
///
/// Create it with [`NodeMetrics::start_request`].
/// Hold it until the response body has been read or the stream has ended, not just until the
/// headers arrive, so that least-loaded strategies see long streams as load.
#[must_use = "the call stops counting as in flight as soon as the guard is dropped"]
pub struct InFlightGuard {
    metrics: Arc<NodeMetrics>,
}

// ===== impl InFlightGuard =====

impl InFlightGuard {
    pub(crate) fn new(metrics: Arc<NodeMetrics>) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { metrics }
    }

    /// The metrics this guard counts against.
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard").field("in_flight", &self.metrics.in_flight()).finish()
    }
}
