//! The active-probe extension point.
//!
//! Implementations:
//! * [`HttpProbe`](crate::HttpProbe): `GET {endpoint}/models` over reqwest (feature `http`).
//! * [`ScriptedProbe`](crate::test_util::ScriptedProbe): scripted answers for tests (feature
//!   `test-util`).
//! * `MockProbe`: a mockall mock (feature `mock`).

use std::{fmt, time::Duration};

use async_trait::async_trait;
use sluice_region_model::Node;

use crate::ProbeError;

/// Checks whether one node can serve, without costing tokens.
///
/// Called by the prober once per node and interval, concurrently across nodes. The prober
/// enforces its own timeout around each call, so an implementation that hangs delays only
/// its own node.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Probe: Send + Sync + fmt::Debug {
    /// Probes one node; `Ok(latency)` on success.
    async fn probe(&self, node: &Node) -> Result<Duration, ProbeError>;
}
