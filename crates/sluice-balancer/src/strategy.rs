//! The `Strategy` trait and the catalogue of built-in strategies.

use std::{fmt, str::FromStr};

use sluice_region_model::NodeId;

use crate::{
    Adaptive, ConfigError, GeoNearest, LeastConnections, Locality, PickView, ResponseTimeWeighted, WeightedRoundRobin,
};

/// Chooses a node for one call.
///
/// Runs on the request path: it must not block, await, take a lock shared across nodes, or
/// allocate. Health, administrative state and already-tried nodes are filtered out before the
/// call, so a strategy only ranks what it is given.
///
/// Implementations in this crate:
/// * [`Locality`] (the default): the nearest healthy region with room, spilling to the next
///   tier of nearness only when it is at its limit, ramping up, failing or clearly slower;
///   P2C within a tier, O(1) from a per-caller-location cache.
/// * [`WeightedRoundRobin`]: smooth (nginx) weighted round-robin, O(1).
/// * [`LeastConnections`]: fewest in-flight calls per unit of weight; full scan for small views,
///   power of two choices above, O(1).
/// * [`ResponseTimeWeighted`]: probability inversely proportional to a peak-EWMA latency,
///   O(log n) from a cumulative-weight table rebuilt every 10 ms.
/// * [`Adaptive`]: one cost from latency, load, error rate and weight, picked by P2C, O(1).
/// * [`GeoNearest`]: nearest by great-circle distance, preferring a slightly farther region that
///   is clearly faster, O(n).
///
/// The trait is object safe: the client holds a `Box<dyn Strategy>` or `Arc<dyn Strategy>`.
pub trait Strategy: Send + Sync + fmt::Debug {
    /// Returns one of `view.candidates()`, or `None` only when the view is empty.
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId>;

    /// A stable name for logs, metrics and benchmark ids, such as `"adaptive"`.
    fn name(&self) -> &'static str;
}

impl<S: Strategy + ?Sized> Strategy for Box<S> {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        (**self).pick(view)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}

impl<S: Strategy + ?Sized> Strategy for std::sync::Arc<S> {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        (**self).pick(view)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}

/// The built-in strategies by name, for configuration files and command lines.
///
/// Names: `locality` (the default, [`StrategyKind::default`]), `weighted-round-robin`,
/// `least-connections`, `response-time`, `adaptive`, `geo-nearest` (also `wrr`, `least-conn`,
/// `rt`, `geo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StrategyKind {
    /// [`Locality`], the default.
    #[default]
    Locality,
    /// [`WeightedRoundRobin`].
    WeightedRoundRobin,
    /// [`LeastConnections`].
    LeastConnections,
    /// [`ResponseTimeWeighted`].
    ResponseTime,
    /// [`Adaptive`].
    Adaptive,
    /// [`GeoNearest`].
    GeoNearest,
}

// ===== impl StrategyKind =====

impl StrategyKind {
    /// Every built-in strategy, in documentation order.
    pub const ALL: [StrategyKind; 6] = [
        StrategyKind::Locality,
        StrategyKind::WeightedRoundRobin,
        StrategyKind::LeastConnections,
        StrategyKind::ResponseTime,
        StrategyKind::Adaptive,
        StrategyKind::GeoNearest,
    ];

    const NAMES: &'static str =
        "locality, weighted-round-robin, least-connections, response-time, adaptive, geo-nearest";

    /// The canonical name, equal to the built strategy's [`Strategy::name`].
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Locality => "locality",
            StrategyKind::WeightedRoundRobin => "weighted-round-robin",
            StrategyKind::LeastConnections => "least-connections",
            StrategyKind::ResponseTime => "response-time",
            StrategyKind::Adaptive => "adaptive",
            StrategyKind::GeoNearest => "geo-nearest",
        }
    }

    /// Builds the strategy with its default settings.
    pub fn build(self) -> Box<dyn Strategy> {
        match self {
            StrategyKind::Locality => Box::new(Locality::new()),
            StrategyKind::WeightedRoundRobin => Box::new(WeightedRoundRobin::new()),
            StrategyKind::LeastConnections => Box::new(LeastConnections::new()),
            StrategyKind::ResponseTime => Box::new(ResponseTimeWeighted::new()),
            StrategyKind::Adaptive => Box::new(Adaptive::new()),
            StrategyKind::GeoNearest => Box::new(GeoNearest::new()),
        }
    }

    /// Builds the strategy with default settings and a fixed seed for any start-up randomness,
    /// for reproducible runs.
    pub fn build_seeded(self, seed: u64) -> Box<dyn Strategy> {
        match self {
            StrategyKind::WeightedRoundRobin => Box::new(WeightedRoundRobin::with_seed(seed)),
            other => other.build(),
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "locality" | "locality-first" | "default" => StrategyKind::Locality,
            "weighted-round-robin" | "wrr" | "round-robin" => StrategyKind::WeightedRoundRobin,
            "least-connections" | "least-conn" | "least-request" => StrategyKind::LeastConnections,
            "response-time" | "response-time-weighted" | "rt" | "peak-ewma" => StrategyKind::ResponseTime,
            "adaptive" => StrategyKind::Adaptive,
            "geo-nearest" | "geo" | "nearest" => StrategyKind::GeoNearest,
            _ => return Err(ConfigError::UnknownStrategy { name: s.to_owned(), expected: Self::NAMES }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in StrategyKind::ALL {
            assert_eq!(kind.name().parse::<StrategyKind>().unwrap(), kind);
            assert_eq!(kind.build().name(), kind.name());
            assert_eq!(kind.build_seeded(1).name(), kind.name());
        }
        assert_eq!("WRR".parse::<StrategyKind>().unwrap(), StrategyKind::WeightedRoundRobin);
        assert_eq!(StrategyKind::default(), StrategyKind::Locality);
        assert_eq!("default".parse::<StrategyKind>().unwrap(), StrategyKind::default());
        let err = "fastest".parse::<StrategyKind>().unwrap_err();
        assert!(err.to_string().starts_with("unknown strategy `fastest`"), "{err}");
    }
}
