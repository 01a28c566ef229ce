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
        /// Whether that probe got no answer at all: it timed out, or its connection was
        /// refused or broke ([`ProbeError::is_silence`](crate::ProbeError::is_silence)). Calls
        /// waiting on a silent node may never be answered; a node that answered with an error
        /// status is alive and will answer the calls it holds. In-flight rescue in
        /// `sluice-client` acts only on silence. A verdict heard from another replica is never
        /// silence here: that replica's network path says nothing about this one's.
        silent: bool,
    },
    /// The node refused our credentials (HTTP 401/403). A configuration fault, also logged at
    /// `error` level. Sent when a node starts refusing, not on every probe.
    CredentialsRejected {
        /// The HTTP status, 401 or 403.
        status: u16,
    },
    /// Passive outlier detection ejected the node.
    ///
    /// The rule that fired and the backoff multiplier are in the `warn` log line and in
    /// [`NodeStatus`](crate::NodeStatus).
    Ejected {
        /// When the ejection ends, unless a probe ends it early.
        until: Instant,
    },
    /// An active probe saw the ejected node recover and ended the ejection early; slow start
    /// began.
    EjectionEnded,
    /// A Retry-After answer (429, or 503) started or extended a cooldown by a second or more.
    CooldownStarted {
        /// When the cooldown ends.
        until: Instant,
    },
    /// A probe that started after a 503's Retry-After was recorded succeeded, so the rest of
    /// that cooldown was dropped. A 429's cooldown is never ended early: probes cannot see a
    /// rate limit.
    CooldownEnded,
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

const KIND_SHIFT: u32 = 62;
const FIELD_BITS: u32 = 31;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

impl EjectionReason {
    /// Packs the reason into one word for an atomic: `kind:2 | a:31 | b:31`; 0 is "none".
    pub(crate) fn pack(self) -> u64 {
        let (kind, a, b) = match self {
            Self::ConsecutiveFailures { count } => (1, count, 0),
            Self::FailureRate { failures, total } => (2, failures, total),
        };
        let field = |v: u32| u64::from(v).min(FIELD_MASK);
        kind << KIND_SHIFT | field(a) << FIELD_BITS | field(b)
    }

    /// The inverse of [`pack`](Self::pack).
    pub(crate) fn unpack(v: u64) -> Option<Self> {
        let a = ((v >> FIELD_BITS) & FIELD_MASK) as u32;
        let b = (v & FIELD_MASK) as u32;
        match v >> KIND_SHIFT {
            1 => Some(Self::ConsecutiveFailures { count: a }),
            2 => Some(Self::FailureRate { failures: a, total: b }),
            _ => None,
        }
    }
}

impl fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConsecutiveFailures { count } => write!(f, "{count} consecutive failures"),
            Self::FailureRate { failures, total } => write!(f, "{failures} of {total} calls failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_pack_and_unpack() {
        for r in [
            EjectionReason::ConsecutiveFailures { count: 5 },
            EjectionReason::FailureRate { failures: 6, total: 11 },
            EjectionReason::FailureRate { failures: 0, total: u32::MAX >> 1 },
        ] {
            assert_eq!(EjectionReason::unpack(r.pack()), Some(r));
        }
        assert_eq!(EjectionReason::unpack(0), None);
        assert_eq!(EjectionReason::ConsecutiveFailures { count: 5 }.to_string(), "5 consecutive failures");
        assert_eq!(EjectionReason::FailureRate { failures: 6, total: 11 }.to_string(), "6 of 11 calls failed");
    }
}
