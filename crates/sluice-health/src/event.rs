//! Health transitions, as published on the event channel.

use std::{fmt, sync::Arc, time::Instant};

use sluice_region_model::NodeId;

/// One health transition of one node.
///
/// Sent on the channel returned by [`HealthMonitor::subscribe`](crate::HealthMonitor::subscribe)
/// and, with the same content, as a `tracing` event.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    /// The node concerned.
    pub node: NodeId,
    /// The node's region id.
    pub region: Arc<str>,
    /// What happened.
    pub kind: HealthEventKind,
    /// When it happened.
    pub at: Instant,
}

/// What happened to a node.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HealthEventKind {
    /// Active probes turned the node healthy. When it was unhealthy before, slow start began.
    BecameHealthy,
    /// Active probes turned the node unhealthy; it takes no new calls (outside panic mode).
    BecameUnhealthy {
        /// The last probe error, as text.
        reason: String,
    },
    /// The node refused our credentials (HTTP 401/403). A configuration fault, also logged at
    /// `error` level. Sent when a node starts refusing, not on every probe.
    CredentialsRejected {
        /// The HTTP status, 401 or 403.
        status: u16,
    },
    /// Passive outlier detection ejected the node.
    Ejected {
        /// When the ejection ends, unless a probe ends it early.
        until: Instant,
        /// Which rule fired.
        reason: EjectionReason,
        /// The backoff multiplier of this ejection (1 for a first ejection).
        multiplier: u32,
    },
    /// An active probe saw the ejected node recover and ended the ejection early; slow start
    /// began.
    EjectionEnded,
    /// A Retry-After answer (429, or 503) started or extended a cooldown by a second or more.
    CooldownStarted {
        /// When the cooldown ends.
        until: Instant,
    },
}

/// The outlier rule that ejected a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EjectionReason {
    /// `count` consecutive failures.
    ConsecutiveFailures {
        /// The failures in a row.
        count: u32,
    },
    /// Too many failures in the sliding window.
    FailureRate {
        /// Failed calls in the window.
        failures: u32,
        /// All calls in the window.
        total: u32,
    },
}

// ===== impl EjectionReason =====

impl fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConsecutiveFailures { count } => write!(f, "{count} consecutive failures"),
            Self::FailureRate { failures, total } => write!(f, "{failures} of {total} calls failed"),
        }
    }
}
