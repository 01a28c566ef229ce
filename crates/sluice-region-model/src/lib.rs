#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod geo;
mod health_state;
mod in_flight;
mod membership;
mod metrics;
mod node;
mod region;
mod snapshot;

#[doc(inline)]
pub use self::{
    error::SnapshotError,
    geo::{EARTH_RADIUS_KM, GeoPoint},
    health_state::{AdminState, Availability, HealthState},
    in_flight::InFlightGuard,
    membership::MembershipChange,
    metrics::{
        DEFAULT_BASELINE_ALPHA, DEFAULT_ERROR_ALPHA, DEFAULT_LIMIT_BACKOFF, DEFAULT_LIMIT_REGROWTH,
        DEFAULT_METRICS_DECAY, FAILING_HOLD, FAILING_STREAK, LIMIT_DROP_WINDOW, LIMIT_PROBE_DOUBLING, LONE_CALLS,
        MIN_CONCURRENCY_LIMIT, NodeMetrics,
    },
    node::{Node, NodeId},
    region::{ApiKey, DEFAULT_WEIGHT, Region},
    snapshot::{Snapshot, SnapshotBuilder},
};
