//! Scenarios: regions, load and the phases that disturb them, as TOML.

use serde::{Deserialize, Serialize};

use crate::SimError;

/// A simulated world: where the caller is, which regions serve it, how much load arrives and
/// what goes wrong when.
///
/// Times are in seconds of simulated time from the start of the run, latencies in
/// milliseconds. Load a scenario from TOML with [`Scenario::from_toml`], or take one of the
/// [`Scenario::builtin`] ones.
///
/// ```toml
/// name = "outage"
/// duration_s = 180.0
/// rate_per_s = 100.0
/// caller = { lat = 37.5665, lon = 126.978 }
///
/// [[regions]]
/// id = "seoul"
/// lat = 37.5665
/// lon = 126.978
/// rtt_ms = 23.0
/// capacity = 48
/// service_median_ms = 400.0
/// service_sigma = 0.6
///
/// [[phases]]
/// kind = "down"
/// target = "seoul"
/// start_s = 60.0
/// end_s = 120.0
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Scenario {
    /// Short name, used in reports and file names.
    pub name: String,
    /// One line on what the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Length of the run in simulated seconds. Calls arrive during it; the run then drains.
    pub duration_s: f64,
    /// Seed of every random choice; the same seed gives the same run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Mean arrival rate of user calls (Poisson), before `load` phases scale it.
    pub rate_per_s: f64,
    /// Where every call comes from (the geo-aware strategies read it).
    pub caller: Location,
    /// Attempts per user call, the first included; failed attempts are retried on a region
    /// not yet tried by that call.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The client gives up on an attempt after this long and counts a timeout.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_s: f64,
    /// Width of one bucket of the traffic-share series.
    #[serde(default = "default_bucket")]
    pub bucket_s: f64,
    /// The regions (or nodes).
    pub regions: Vec<RegionSpec>,
    /// What happens over time.
    #[serde(default)]
    pub phases: Vec<Phase>,
}

/// A point on Earth in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Latitude, north positive.
    pub lat: f64,
    /// Longitude, east positive.
    pub lon: f64,
}

/// One simulated region (a node of the snapshot).
///
/// An attempt travels half the round trip to the region, waits for one of `capacity` slots
/// (first come, first served), is served for a lognormal time and travels back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RegionSpec {
    /// Region id, unique.
    pub id: String,
    /// Group for reports (traffic share is reported per group); defaults to the id.
    #[serde(default)]
    pub group: Option<String>,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Network round trip from the caller.
    pub rtt_ms: f64,
    /// Calls served at once; more wait in a first-come, first-served queue.
    pub capacity: u32,
    /// Median service time of one call.
    pub service_median_ms: f64,
    /// σ of the lognormal service time: 0 is constant, 0.6 gives p99 ≈ 4 × median.
    pub service_sigma: f64,
    /// Configured balancer weight.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The concurrency limit the client is configured with for this region
    /// (`Region::with_max_concurrency`), if any. It is what the operator knows and tells
    /// Sluice, not a property of the world: the region serves `capacity` calls at once
    /// whatever this says. Strategies that read limits (the default, `locality`) spill at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// A disturbance during `start_s..end_s`.
///
/// `target` names a region id or a group; every matching region is affected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Phase {
    /// The arrival rate is multiplied by a factor that moves linearly from `from` to `to`.
    Load {
        /// Start of the phase.
        start_s: f64,
        /// End of the phase.
        end_s: f64,
        /// Factor at the start.
        from: f64,
        /// Factor at the end.
        to: f64,
    },
    /// Service times of the target are multiplied by `factor`.
    Slow {
        /// Start of the phase.
        start_s: f64,
        /// End of the phase.
        end_s: f64,
        /// Region id or group.
        target: String,
        /// Service-time multiplier.
        factor: f64,
    },
    /// The target fails hard: every new attempt fails with a connect error after one round
    /// trip. What happens to the calls it was already serving is set by `in_flight`.
    Down {
        /// Start of the phase.
        start_s: f64,
        /// End of the phase.
        end_s: f64,
        /// Region id or group.
        target: String,
        /// The fate of calls the target was serving when the phase began.
        #[serde(default)]
        in_flight: InFlight,
    },
    /// The target answers 429 with `Retry-After` to attempts that find `max_in_flight` or more
    /// calls already queued or in service there.
    Throttle {
        /// Start of the phase.
        start_s: f64,
        /// End of the phase.
        end_s: f64,
        /// Region id or group.
        target: String,
        /// Load at or above which attempts are refused.
        max_in_flight: u32,
        /// The Retry-After sent with each 429.
        retry_after_s: f64,
    },
    /// A share `rate` of the target's attempts fail with a server error (`status`) after one
    /// round trip.
    Errors {
        /// Start of the phase.
        start_s: f64,
        /// End of the phase.
        end_s: f64,
        /// Region id or group.
        target: String,
        /// Share of attempts that fail, `0.0..=1.0`.
        rate: f64,
        /// The HTTP status, such as 500 or 503.
        status: u16,
    },
}

/// What a region that goes down does with the calls it was serving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InFlight {
    /// They break (a crash or a lost network path): each fails with a connect error, seen by
    /// the client half a round trip after the phase begins.
    #[default]
    Fail,
    /// They finish normally; only new connections are refused (a drain, or a front door that
    /// stopped accepting).
    Finish,
}

/// The five regions of the built-in scenarios: name, latitude, longitude, round trip from
/// Seoul in milliseconds and capacity (concurrent calls).
const FIVE: [(&str, f64, f64, f64, u32); 5] = [
    ("seoul", 37.5665, 126.978, 23.0, 48),
    ("tokyo", 35.6762, 139.6503, 28.0, 48),
    ("singapore", 1.3521, 103.8198, 45.0, 32),
    ("frankfurt", 50.1109, 8.6821, 120.0, 24),
    ("virginia", 38.9072, -77.0369, 150.0, 24),
];

/// Median service time of one call in the built-in scenarios.
const SERVICE_MEDIAN_MS: f64 = 400.0;
/// σ of the built-in lognormal service time: p99 ≈ 1.6 s, p99.9 ≈ 2.5 s for a 400 ms median.
const SERVICE_SIGMA: f64 = 0.6;
/// The caller of the built-in scenarios: Seoul.
const SEOUL: Location = Location { lat: 37.5665, lon: 126.978 };

/// The concurrency limit the built-in scenarios configure for a region serving `capacity`
/// calls at once: exactly that, as an operator who knows the deployment's concurrency.
fn configured_limit(capacity: u32) -> u32 {
    capacity
}

fn default_seed() -> u64 {
    1
}
fn default_max_attempts() -> u32 {
    3
}
fn default_attempt_timeout() -> f64 {
    30.0
}
fn default_bucket() -> f64 {
    1.0
}
fn default_weight() -> u32 {
    100
}

// ===== impl Scenario =====

impl Scenario {
    /// The names of the built-in scenarios, in report order.
    pub const BUILTIN: [&'static str; 10] = [
        "steady",
        "degrade",
        "outage",
        "outage-drain",
        "throttle",
        "hot-spot",
        "many-nodes",
        "overload",
        "recover",
        "fast-fail",
    ];

    /// Parses and validates a scenario.
    ///
    /// # Errors
    /// [`SimError::Toml`] for a syntax or schema error, [`SimError::InvalidScenario`] for
    /// values that make no sense (see [`Scenario::validate`]).
    pub fn from_toml(text: &str) -> Result<Self, SimError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| SimError::Toml(e.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The scenario as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a scenario always serializes")
    }

    /// A built-in scenario by name (see [`Scenario::BUILTIN`]).
    ///
    /// All but `many-nodes` use five regions, Seoul, Tokyo, Singapore, Frankfurt and Virginia,
    /// 23, 28, 45, 120 and 150 ms away from a caller in Seoul, with capacities of 48, 48, 32,
    /// 24 and 24 concurrent calls and a lognormal service time (median 400 ms, σ 0.6).
    ///
    /// * `steady`: 80 calls/s for 120 s (Seoul alone could carry about 100), nothing goes wrong.
    /// * `degrade`: 100 calls/s; Seoul's service time rises 10× from 60 s to 120 s.
    /// * `outage`: 100 calls/s; Seoul fails hard from 60 s to 120 s: new attempts get a
    ///   connect error and the calls it was serving break ([`InFlight::Fail`]).
    /// * `outage-drain`: the same, but the calls Seoul was serving finish
    ///   ([`InFlight::Finish`]); only new connections are refused.
    /// * `throttle`: 150 calls/s; from 40 s to 140 s Seoul answers 429 (Retry-After 2 s) when
    ///   16 or more calls are already there.
    /// * `hot-spot`: load ramps from 40 to 300 calls/s over 180 s; Seoul saturates near
    ///   100 calls/s, the whole set near 360.
    /// * `many-nodes`: 200 nodes, 40 at each of the five locations, with capacities of 1, 2,
    ///   4 or 8 (equal weights), at 500 calls/s for 60 s.
    /// * `overload`: 200 calls/s for 120 s, twice what Seoul can serve; nothing fails.
    /// * `recover`: 80 calls/s for 180 s; Seoul fails hard from 60 s to 90 s, then serves
    ///   again for the 90 s left.
    /// * `fast-fail`: 100 calls/s for 120 s; Tokyo refuses every connection at once for the
    ///   whole run.
    ///
    /// In every built-in scenario the client is configured with each region's concurrency
    /// (`max_concurrency`), as an operator who knows the deployments would.
    pub fn builtin(name: &str) -> Option<Scenario> {
        let base = |name: &str, description: &str, duration_s: f64, rate_per_s: f64| Scenario {
            name: name.to_owned(),
            description: description.to_owned(),
            duration_s,
            seed: default_seed(),
            rate_per_s,
            caller: SEOUL,
            max_attempts: default_max_attempts(),
            attempt_timeout_s: default_attempt_timeout(),
            bucket_s: default_bucket(),
            regions: FIVE
                .iter()
                .map(|&(id, lat, lon, rtt_ms, capacity)| RegionSpec {
                    id: id.to_owned(),
                    group: None,
                    lat,
                    lon,
                    rtt_ms,
                    capacity,
                    service_median_ms: SERVICE_MEDIAN_MS,
                    service_sigma: SERVICE_SIGMA,
                    weight: default_weight(),
                    max_concurrency: Some(configured_limit(capacity)),
                })
                .collect(),
            phases: Vec::new(),
        };
        let seoul = || "seoul".to_owned();
        let scenario = match name {
            "steady" => base("steady", "five regions, steady load, nothing fails", 120.0, 80.0),
            "degrade" => Scenario {
                phases: vec![Phase::Slow { start_s: 60.0, end_s: 120.0, target: seoul(), factor: 10.0 }],
                ..base("degrade", "Seoul's service time rises 10x from 60 s to 120 s", 180.0, 100.0)
            },
            "outage" => Scenario {
                phases: vec![Phase::Down { start_s: 60.0, end_s: 120.0, target: seoul(), in_flight: InFlight::Fail }],
                ..base("outage", "Seoul, the nearest region, fails hard from 60 s to 120 s", 180.0, 100.0)
            },
            "outage-drain" => Scenario {
                phases: vec![Phase::Down { start_s: 60.0, end_s: 120.0, target: seoul(), in_flight: InFlight::Finish }],
                ..base(
                    "outage-drain",
                    "Seoul refuses new connections from 60 s to 120 s; calls it accepted finish",
                    180.0,
                    100.0,
                )
            },
            "throttle" => Scenario {
                phases: vec![Phase::Throttle {
                    start_s: 40.0,
                    end_s: 140.0,
                    target: seoul(),
                    max_in_flight: 16,
                    retry_after_s: 2.0,
                }],
                ..base("throttle", "Seoul answers 429 (Retry-After 2 s) above 16 calls in flight", 180.0, 150.0)
            },
            "hot-spot" => Scenario {
                phases: vec![Phase::Load { start_s: 0.0, end_s: 180.0, from: 1.0, to: 7.5 }],
                ..base("hot-spot", "load ramps from 40 to 300 calls/s until the nearest regions saturate", 180.0, 40.0)
            },
            "many-nodes" => {
                let mut s = base("many-nodes", "200 nodes at five locations, capacities 1 to 8", 60.0, 500.0);
                s.regions = (0..200)
                    .map(|i| {
                        let (group, lat, lon, rtt_ms, _) = FIVE[i % 5];
                        RegionSpec {
                            id: format!("{group}-{:02}", i / 5),
                            group: Some(group.to_owned()),
                            // Spread the nodes of one location over a few kilometres.
                            lat: lat + (i / 5) as f64 * 0.001,
                            lon,
                            rtt_ms,
                            capacity: [1, 2, 4, 8][(i / 5) % 4],
                            service_median_ms: SERVICE_MEDIAN_MS,
                            service_sigma: SERVICE_SIGMA,
                            weight: default_weight(),
                            max_concurrency: Some(configured_limit([1, 2, 4, 8][(i / 5) % 4])),
                        }
                    })
                    .collect();
                s
            }
            "overload" => base("overload", "200 calls/s, twice what Seoul can serve", 120.0, 200.0),
            "recover" => Scenario {
                phases: vec![Phase::Down { start_s: 60.0, end_s: 90.0, target: seoul(), in_flight: InFlight::Fail }],
                ..base("recover", "Seoul fails hard from 60 s to 90 s, then serves again for 90 s", 180.0, 80.0)
            },
            "fast-fail" => Scenario {
                phases: vec![Phase::Down {
                    start_s: 0.0,
                    end_s: 120.0,
                    target: "tokyo".to_owned(),
                    in_flight: InFlight::Fail,
                }],
                ..base("fast-fail", "Tokyo refuses every connection at once for the whole run", 120.0, 100.0)
            },
            _ => return None,
        };
        Some(scenario)
    }

    /// Every built-in scenario, in [`Scenario::BUILTIN`] order.
    pub fn builtins() -> Vec<Scenario> {
        Self::BUILTIN.iter().filter_map(|n| Self::builtin(n)).collect()
    }

    /// A copy with every time (duration, phase bounds) multiplied by `factor`: the reduced form
    /// of a scenario for tests. Rates, latencies and Retry-After stay as they are.
    pub fn time_scaled(&self, factor: f64) -> Scenario {
        let mut s = self.clone();
        s.duration_s *= factor;
        for phase in &mut s.phases {
            let (start, end) = phase.bounds_mut();
            *start *= factor;
            *end *= factor;
        }
        s
    }

    /// A copy with another seed.
    pub fn with_seed(mut self, seed: u64) -> Scenario {
        self.seed = seed;
        self
    }

    /// The group of each region, in region order.
    pub fn groups_of_regions(&self) -> Vec<String> {
        self.regions.iter().map(|r| r.group.clone().unwrap_or_else(|| r.id.clone())).collect()
    }

    /// The distinct groups, in order of first appearance.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in self.groups_of_regions() {
            if !out.contains(&g) {
                out.push(g);
            }
        }
        out
    }

    /// Checks that every value makes sense.
    ///
    /// # Errors
    /// [`SimError::InvalidScenario`] naming the first bad field: no regions, a non-positive
    /// duration, rate, capacity, round trip or median, a negative σ, a duplicate region id,
    /// zero attempts, a phase whose target matches nothing or whose bounds are reversed.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |what: String| Err(SimError::InvalidScenario { scenario: self.name.clone(), reason: what });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.regions.is_empty() {
            return bad("no regions".into());
        }
        if !positive(self.duration_s) || !positive(self.rate_per_s) || !positive(self.bucket_s) {
            return bad("duration_s, rate_per_s and bucket_s must be positive".into());
        }
        if !positive(self.attempt_timeout_s) || self.max_attempts == 0 {
            return bad("attempt_timeout_s must be positive and max_attempts at least 1".into());
        }
        let loc_ok = |lat: f64, lon: f64| (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
        if !loc_ok(self.caller.lat, self.caller.lon) {
            return bad("caller location out of range".into());
        }
        for (i, r) in self.regions.iter().enumerate() {
            if self.regions[..i].iter().any(|o| o.id == r.id) {
                return bad(format!("duplicate region id `{}`", r.id));
            }
            if !positive(r.rtt_ms) || !positive(r.service_median_ms) || r.capacity == 0 {
                return bad(format!("region `{}`: rtt_ms, service_median_ms and capacity must be positive", r.id));
            }
            if !(r.service_sigma.is_finite() && r.service_sigma >= 0.0 && loc_ok(r.lat, r.lon)) {
                return bad(format!("region `{}`: bad service_sigma or location", r.id));
            }
        }
        if self.regions.iter().all(|r| r.weight == 0) {
            return bad("all weights are zero".into());
        }
        let groups = self.groups_of_regions();
        for phase in &self.phases {
            let (start, end) = phase.bounds();
            if !(start.is_finite() && end.is_finite() && start >= 0.0 && end >= start) {
                return bad(format!("phase {phase:?}: bounds must satisfy 0 <= start_s <= end_s"));
            }
            if let Some(target) = phase.target()
                && !self.regions.iter().zip(&groups).any(|(r, g)| r.id == target || g == target)
            {
                return bad(format!("phase target `{target}` matches no region or group"));
            }
            let ok = match phase {
                Phase::Load { from, to, .. } => from.is_finite() && to.is_finite() && *from >= 0.0 && *to >= 0.0,
                Phase::Slow { factor, .. } => positive(*factor),
                Phase::Throttle { retry_after_s, .. } => retry_after_s.is_finite() && *retry_after_s >= 0.0,
                Phase::Errors { rate, .. } => (0.0..=1.0).contains(rate),
                Phase::Down { .. } => true,
            };
            if !ok {
                return bad(format!("phase {phase:?}: bad parameter"));
            }
        }
        Ok(())
    }
}

// ===== impl Phase =====

impl Phase {
    /// `(start_s, end_s)`.
    pub fn bounds(&self) -> (f64, f64) {
        match *self {
            Phase::Load { start_s, end_s, .. }
            | Phase::Slow { start_s, end_s, .. }
            | Phase::Down { start_s, end_s, .. }
            | Phase::Throttle { start_s, end_s, .. }
            | Phase::Errors { start_s, end_s, .. } => (start_s, end_s),
        }
    }

    fn bounds_mut(&mut self) -> (&mut f64, &mut f64) {
        match self {
            Phase::Load { start_s, end_s, .. }
            | Phase::Slow { start_s, end_s, .. }
            | Phase::Down { start_s, end_s, .. }
            | Phase::Throttle { start_s, end_s, .. }
            | Phase::Errors { start_s, end_s, .. } => (start_s, end_s),
        }
    }

    /// The region id or group the phase affects; `None` for `load`.
    pub fn target(&self) -> Option<&str> {
        match self {
            Phase::Load { .. } => None,
            Phase::Slow { target, .. }
            | Phase::Down { target, .. }
            | Phase::Throttle { target, .. }
            | Phase::Errors { target, .. } => Some(target),
        }
    }

    /// The phase's kind as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            Phase::Load { .. } => "load",
            Phase::Slow { .. } => "slow",
            Phase::Down { .. } => "down",
            Phase::Throttle { .. } => "throttle",
            Phase::Errors { .. } => "errors",
        }
    }

    /// Whether the phase makes its target fail calls (a `down` or `errors` phase), so that
    /// the report measures when traffic stopped and resumed.
    pub fn is_failure(&self) -> bool {
        matches!(self, Phase::Down { .. } | Phase::Errors { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_round_trip_through_toml() {
        for s in Scenario::builtins() {
            s.validate().unwrap();
            let back = Scenario::from_toml(&s.to_toml()).unwrap();
            assert_eq!(back, s, "{}", s.name);
        }
        assert_eq!(Scenario::builtins().len(), Scenario::BUILTIN.len());
        assert!(Scenario::builtin("nope").is_none());
    }

    #[test]
    fn bad_scenarios_are_refused() {
        let mut s = Scenario::builtin("outage").unwrap();
        s.phases.push(Phase::Down { start_s: 1.0, end_s: 2.0, target: "mars".into(), in_flight: InFlight::Fail });
        assert!(s.validate().unwrap_err().to_string().contains("mars"));
        let mut s = Scenario::builtin("steady").unwrap();
        s.regions[1].id = "seoul".into();
        assert!(s.validate().unwrap_err().to_string().contains("duplicate"));
        assert!(matches!(Scenario::from_toml("name = 1"), Err(SimError::Toml(_))));
    }

    #[test]
    fn time_scaling_moves_phases() {
        let s = Scenario::builtin("outage").unwrap().time_scaled(0.5);
        assert_eq!(s.duration_s, 90.0);
        assert_eq!(s.phases[0].bounds(), (30.0, 60.0));
    }
}
