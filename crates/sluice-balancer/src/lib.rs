#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adaptive;
mod error;
mod generation;
mod geo;
mod least_connections;
mod locality;
mod response_time;
mod rng;
mod select;
mod strategy;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
mod view;
mod weighted_round_robin;

#[doc(inline)]
pub use self::{
    adaptive::{Adaptive, AdaptiveBuilder, DEFAULT_ADAPTIVE_FULL_SCAN_MAX, DEFAULT_ERROR_PENALTY},
    error::ConfigError,
    geo::{DEFAULT_FASTER_RATIO, DEFAULT_MIN_GAIN, DEFAULT_SLACK_KM, GeoNearest},
    least_connections::{DEFAULT_FULL_SCAN_MAX, LeastConnections},
    locality::{
        DEFAULT_ASSUMED_LIMIT, DEFAULT_LOCATION_CELL_DEG, DEFAULT_RTT_REFRESH, DEFAULT_SLOWER_MARGIN, DEFAULT_TIER_KM,
        DEFAULT_TIER_RTT, ESTABLISHED_SAMPLES, EXPLORE_CALLS, LOCATION_CACHE_SLOTS, Locality, LocalityBuilder,
        STACK_NODES,
    },
    response_time::{DEFAULT_COLD_START_LATENCY, DEFAULT_REFRESH, LATENCY_FLOOR, ResponseTimeWeighted},
    strategy::{Strategy, StrategyKind},
    view::{Caller, PickView},
    weighted_round_robin::{MAX_CYCLE, WeightedRoundRobin},
};
