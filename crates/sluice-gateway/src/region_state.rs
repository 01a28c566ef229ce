//! What a region's health status means for traffic, in one word.

use std::time::{Duration, Instant};

use sluice_health::NodeStatus;
use sluice_region_model::{AdminState, HealthState};

/// What a region's status means for traffic, in one word, plus a detail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegionState {
    /// Not probed yet; takes calls.
    Unknown,
    /// Healthy; takes calls.
    Healthy,
    /// Back from an outage, ramping up; the weight factor so far.
    SlowStart(f64),
    /// Cooling down after a Retry-After; the time left.
    Cooldown(Duration),
    /// Ejected as an outlier; the time left.
    Ejected(Duration),
    /// Failed its probes.
    Unhealthy,
    /// Taken out of rotation by an operator.
    Drained,
}

impl RegionState {
    /// The state of a region from its health status at `now`.
    pub fn of(status: &NodeStatus, now: Instant) -> Self {
        let left = |t: Option<Instant>| t.filter(|t| *t > now).map(|t| t.duration_since(now));
        if status.admin == AdminState::Drained {
            return RegionState::Drained;
        }
        if let Some(d) = left(status.cooldown_until) {
            return RegionState::Cooldown(d);
        }
        if let Some(d) = left(status.ejected_until) {
            return RegionState::Ejected(d);
        }
        match status.health {
            HealthState::Unhealthy => RegionState::Unhealthy,
            _ if status.weight_factor < 0.999 => RegionState::SlowStart(status.weight_factor),
            HealthState::Healthy => RegionState::Healthy,
            _ => RegionState::Unknown,
        }
    }

    /// A number for the `sluice_region_health_state` gauge.
    pub fn code(self) -> f64 {
        match self {
            RegionState::Unknown => 0.0,
            RegionState::Healthy => 1.0,
            RegionState::SlowStart(_) => 2.0,
            RegionState::Cooldown(_) => 3.0,
            RegionState::Ejected(_) => 4.0,
            RegionState::Unhealthy => 5.0,
            RegionState::Drained => 6.0,
        }
    }

    /// Whether new calls may go there.
    pub fn is_serving(self) -> bool {
        matches!(self, RegionState::Unknown | RegionState::Healthy | RegionState::SlowStart(_))
    }

    /// One word (and a detail) for tables and `/healthz`.
    pub fn label(self) -> String {
        match self {
            RegionState::Unknown => "unknown".to_owned(),
            RegionState::Healthy => "healthy".to_owned(),
            RegionState::SlowStart(f) => format!("slow start {:.0}%", f * 100.0),
            RegionState::Cooldown(d) => format!("cooldown {:.1}s", d.as_secs_f64()),
            RegionState::Ejected(d) => format!("ejected {:.1}s", d.as_secs_f64()),
            RegionState::Unhealthy => "unhealthy".to_owned(),
            RegionState::Drained => "drained".to_owned(),
        }
    }
}

/// The clock `sluice-health` uses.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
