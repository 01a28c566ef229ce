//! Health and administrative state of a node.

use std::time::Instant;

/// What health checking currently believes about a node.
///
/// Written by `sluice-health`; read when building the eligible set.
/// A node starts [`HealthState::Unknown`], which counts as eligible so that a freshly built
/// client can serve before its first probe round completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthState {
    /// No verdict yet. Eligible.
    Unknown,
    /// Passing its checks. Eligible.
    Healthy,
    /// Failing its checks. Not eligible.
    Unhealthy,
}

/// The operator's switch, kept apart from [`HealthState`].
///
/// A drained node is healthy as far as checks go but takes no new calls;
/// calls already running on it finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdminState {
    /// Takes traffic when healthy.
    Enabled,
    /// Takes no new traffic.
    Drained,
}

/// Whether a node may take a new call at some instant, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Availability {
    /// May take a call.
    Eligible,
    /// Drained by the operator.
    Drained,
    /// Marked unhealthy by health checks.
    Unhealthy,
    /// Ejected or cooling down (outlier detection, Retry-After) until the given instant.
    Excluded {
        /// When the exclusion ends.
        until: Instant,
    },
}

// ===== impl HealthState =====

impl HealthState {
    pub(crate) const fn to_u8(self) -> u8 {
        match self {
            HealthState::Unknown => 0,
            HealthState::Healthy => 1,
            HealthState::Unhealthy => 2,
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            1 => HealthState::Healthy,
            2 => HealthState::Unhealthy,
            _ => HealthState::Unknown,
        }
    }

    /// Whether this state lets a node take traffic.
    pub const fn is_serving(self) -> bool {
        !matches!(self, HealthState::Unhealthy)
    }
}

// ===== impl AdminState =====

impl AdminState {
    pub(crate) const fn to_u8(self) -> u8 {
        match self {
            AdminState::Enabled => 0,
            AdminState::Drained => 1,
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Drained,
            _ => AdminState::Enabled,
        }
    }
}

// ===== impl Availability =====

impl Availability {
    /// Whether the node may take a call.
    pub const fn is_eligible(&self) -> bool {
        matches!(self, Availability::Eligible)
    }
}
