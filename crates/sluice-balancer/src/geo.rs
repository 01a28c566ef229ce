//! Nearest region by great-circle distance.

use std::time::Duration;

use sluice_region_model::{EARTH_RADIUS_KM, Node, NodeId};

use crate::{
    ConfigError, PickView, Strategy,
    error::{check_non_negative, check_positive},
    rng::PickRng,
    select,
};

/// A farther region is considered only if it is at most this much farther than the nearest.
pub const DEFAULT_SLACK_KM: f64 = 1500.0;

/// "Clearly faster": the farther region's latency must be at most this share of the nearest's.
pub const DEFAULT_FASTER_RATIO: f64 = 0.6;

/// "Clearly faster": and at least this much lower in absolute terms.
pub const DEFAULT_MIN_GAIN: Duration = Duration::from_millis(20);

/// Geo-nearest: the candidate closest to the caller by great-circle distance.
///
/// # The rule
/// 1. With a caller location, take the nearest candidate (ties at random).
/// 2. If that node has a measured latency `L0`, look at candidates no more than `slack_km`
///    farther than it (default 1,500 km). One whose measured latency `L` is *clearly faster*,
///    meaning `L ≤ faster_ratio × L0` (default 0.6) **and** `L0 − L ≥ min_gain` (default 20 ms),
///    is preferred; among several, the fastest.
///    This catches a nearby region that is overloaded or badly peered without ever sending a
///    Seoul caller to Virginia.
/// 3. Without a caller location, take the candidate with the lowest measured latency; nodes
///    with no measurement rank last, and if none is measured the choice is uniform.
///
/// "Measured latency" is the active-probe round trip when there is one (it is comparable
/// across regions), else the call-latency estimate.
/// Weights are ignored: distance decides.
///
/// # Cost
/// O(n): one dot product per candidate against unit vectors precomputed in the snapshot (no
/// trigonometry per node), and a second pass of the same cost only when rule 2 applies.
#[derive(Debug, Clone)]
pub struct GeoNearest {
    slack_km: f64,
    /// The slack as an angle, with its cosine and sine, computed once.
    slack: (f64, f64, f64),
    faster_ratio: f64,
    min_gain_ns: f64,
}

// ===== impl GeoNearest =====

impl GeoNearest {
    /// With default settings.
    pub fn new() -> Self {
        Self {
            slack_km: DEFAULT_SLACK_KM,
            slack: slack_angle(DEFAULT_SLACK_KM),
            faster_ratio: DEFAULT_FASTER_RATIO,
            min_gain_ns: DEFAULT_MIN_GAIN.as_nanos() as f64,
        }
    }

    /// Sets the rule-2 thresholds.
    ///
    /// # Errors
    /// If `slack_km` is negative or not finite, or `faster_ratio` is not in `(0, 1]`.
    pub fn with_preference(
        mut self,
        slack_km: f64,
        faster_ratio: f64,
        min_gain: Duration,
    ) -> Result<Self, ConfigError> {
        self.slack_km = check_non_negative("slack_km", slack_km)?;
        self.slack = slack_angle(self.slack_km);
        self.faster_ratio = check_positive("faster_ratio", faster_ratio)?;
        if self.faster_ratio > 1.0 {
            return Err(ConfigError::OutOfRange {
                setting: "faster_ratio",
                expected: "in (0, 1]",
                value: faster_ratio.to_string(),
            });
        }
        self.min_gain_ns = min_gain.as_nanos() as f64;
        Ok(self)
    }

    /// The latency rule 2 compares, in nanoseconds: probe RTT, else the call-latency estimate.
    /// `now_ns` is nanoseconds since the snapshot's epoch (see `PickView::now_nanos`).
    pub fn measured_latency_ns(node: &Node, now_ns: u64) -> Option<f64> {
        let m = node.metrics();
        m.probe_rtt_ns().or_else(|| m.latency_estimate_ns_at(now_ns)).filter(|v| v.is_finite())
    }
}

impl Default for GeoNearest {
    fn default() -> Self {
        Self::new()
    }
}

fn slack_angle(km: f64) -> (f64, f64, f64) {
    let s = (km / EARTH_RADIUS_KM).min(std::f64::consts::PI);
    (s, s.cos(), s.sin())
}

#[inline]
fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

impl Strategy for GeoNearest {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        let mut rng = PickRng::new(view.entropy());
        let now = view.now_nanos();
        let Some(caller) = view.caller() else {
            return select::argmin(view, &mut rng, |id| {
                Self::measured_latency_ns(view.node(id), now).unwrap_or(f64::INFINITY)
            });
        };
        let c = caller.unit_vector();
        let units = view.snapshot().unit_vectors();
        let unit = |id: NodeId| units[id.index()];
        // Larger dot product = smaller angle = nearer; rank by its negation.
        let nearest = select::argmin(view, &mut rng, |id| -dot(c, unit(id)))?;
        let Some(l0) = Self::measured_latency_ns(view.node(nearest), now) else {
            return Some(nearest);
        };
        // Candidates within angle d0 + s of the caller: dot ≥ cos(d0 + s)
        // = cos d0 · cos s − sin d0 · sin s, with cos d0 the nearest's dot product.
        let cos_d0 = dot(c, unit(nearest)).clamp(-1.0, 1.0);
        let sin_d0 = (1.0 - cos_d0 * cos_d0).sqrt();
        let (s, cos_s, sin_s) = self.slack;
        let min_dot = if cos_d0 < 0.0 && s + cos_d0.acos() >= std::f64::consts::PI {
            -1.0
        } else {
            cos_d0 * cos_s - sin_d0 * sin_s
        };
        let bar = (l0 * self.faster_ratio).min(l0 - self.min_gain_ns);
        let mut best = nearest;
        let mut best_latency = f64::INFINITY;
        for &id in view.candidates() {
            if id == nearest || dot(c, unit(id)) < min_dot {
                continue;
            }
            if let Some(l) = Self::measured_latency_ns(view.node(id), now)
                && l <= bar
                && l < best_latency
            {
                best = id;
                best_latency = l;
            }
        }
        Some(best)
    }

    fn name(&self) -> &'static str {
        "geo-nearest"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sluice_region_model::{GeoPoint, Region, Snapshot};

    use super::*;

    const SEOUL: GeoPoint = GeoPoint::new(37.56, 126.97);

    fn five() -> Snapshot {
        Snapshot::new([
            Region::new("seoul", "http://127.0.0.1:9/v1", SEOUL),
            Region::new("tokyo", "http://127.0.0.1:9/v1", GeoPoint::new(35.68, 139.69)),
            Region::new("singapore", "http://127.0.0.1:9/v1", GeoPoint::new(1.35, 103.82)),
            Region::new("frankfurt", "http://127.0.0.1:9/v1", GeoPoint::new(50.11, 8.68)),
            Region::new("virginia", "http://127.0.0.1:9/v1", GeoPoint::new(38.9, -77.0)),
        ])
        .unwrap()
    }

    fn pick(s: &Snapshot, caller: Option<GeoPoint>) -> &str {
        let view = PickView::all(s, Instant::now(), 7).with_caller_opt(caller);
        s.node(GeoNearest::new().pick(&view).unwrap()).region().id()
    }

    fn probe(s: &Snapshot, id: &str, ms: u64) {
        s.node(s.find(id).unwrap()).metrics().record_probe_rtt(Duration::from_millis(ms));
    }

    #[test]
    fn nearest_without_measurements() {
        let s = five();
        assert_eq!(pick(&s, Some(SEOUL)), "seoul");
        assert_eq!(pick(&s, Some(GeoPoint::new(48.85, 2.35))), "frankfurt");
        assert_eq!(pick(&s, Some(GeoPoint::new(40.7, -74.0))), "virginia");
    }

    #[test]
    fn slightly_farther_and_clearly_faster_wins() {
        let s = five();
        probe(&s, "seoul", 200);
        probe(&s, "tokyo", 40);
        assert_eq!(pick(&s, Some(SEOUL)), "tokyo");
    }

    #[test]
    fn not_clearly_faster_keeps_the_nearest() {
        let s = five();
        probe(&s, "seoul", 30);
        probe(&s, "tokyo", 25); // faster, but not by 40 % and 20 ms
        assert_eq!(pick(&s, Some(SEOUL)), "seoul");
    }

    #[test]
    fn far_regions_are_never_preferred() {
        let s = five();
        probe(&s, "seoul", 500);
        probe(&s, "virginia", 10); // clearly faster, but 11,000 km away
        assert_eq!(pick(&s, Some(SEOUL)), "seoul");
    }

    #[test]
    fn without_caller_falls_back_to_latency() {
        let s = five();
        probe(&s, "seoul", 80);
        probe(&s, "frankfurt", 30);
        probe(&s, "virginia", 60);
        assert_eq!(pick(&s, None), "frankfurt");
    }
}
