//! The balancer's error type.

use std::{sync::Arc, time::Instant};

/// A boxed error, as tower services return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request through [`Balance`](crate::Balance) failed.
///
/// Errors of an inner service are wrapped in [`Error::Region`] with the region that produced
/// them; the original error is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No region may take the request: every region is drained, cooling down after a
    /// Retry-After, failed, or already tried by this request.
    #[error("no region can take the request")]
    Unavailable {
        /// When the earliest cooldown or ejection ends, if one will.
        retry_at: Option<Instant>,
    },
    /// The region's inner service failed the request.
    #[error("region `{region}` failed the request")]
    Region {
        /// The region id.
        region: Arc<str>,
        /// The inner service's error.
        #[source]
        source: BoxError,
    },
    /// The discovery stream failed; the balancer keeps serving the regions it has.
    #[error("service discovery failed")]
    Discover {
        /// The discovery error.
        #[source]
        source: BoxError,
    },
    /// `call` was used without a successful `poll_ready` before it, which breaks the
    /// `tower::Service` contract.
    #[error("balance called before it was ready")]
    NotReady,
}

// ===== impl Error =====

impl Error {
    /// The region an inner error came from, if this is one.
    pub fn region(&self) -> Option<&str> {
        match self {
            Error::Region { region, .. } => Some(region),
            _ => None,
        }
    }
}

/// Why a [`BalanceBuilder`](crate::BalanceBuilder) refused to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The number of services differs from the number of regions in the snapshot.
    #[error("{services} services for {regions} regions; give one service per region, in snapshot order")]
    ServiceCount {
        /// Regions in the snapshot.
        regions: usize,
        /// Services given.
        services: usize,
    },
    /// The refresh interval is zero.
    #[error("refresh interval must be greater than zero")]
    ZeroRefresh,
}
