//! Hooks for sharing verdicts between replicas (fleet mode, see `sluice-fleet`).
//!
//! A [`HealthHook`] attached with [`HealthMonitor::set_hook`] hears every local verdict as a
//! [`SharedVerdict`], and gates the prober so that a region whose probe lease another replica
//! holds is not probed here in full. Verdicts heard from other replicas come back in through
//! [`HealthMonitor::apply_shared`], which writes them into `NodeMetrics` without calling the
//! hook again, so a verdict never echoes around the fleet.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use sluice_region_model::{HealthState, NodeId};

use crate::{HealthEventKind, HealthMonitor};

/// A verdict one replica shares with the others.
///
/// It carries durations, never instants: each replica turns "for 9.8 s from now" into its own
/// deadline, so a skewed clock on one host can neither extend nor cut a cooldown elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SharedVerdict {
    /// Active probes found the node down.
    Down,
    /// Active probes found the node up again.
    Up,
    /// Passive outlier detection ejected the node for `remaining`.
    Ejected {
        /// How long the ejection still runs.
        remaining: Duration,
    },
    /// A probe saw the ejected node recover and ended its ejection early.
    EjectionEnded,
    /// A Retry-After answer asked every caller to keep away for `remaining`.
    Cooldown {
        /// How long the cooldown still runs.
        remaining: Duration,
    },
}

/// What the monitor tells fleet mode, and asks it, beside the call path.
///
/// Implementations: the Redis-backed fleet in `sluice-fleet`, and (feature `test-util`) the
/// in-process `test_util::FleetHub`.
pub trait HealthHook: Send + Sync + fmt::Debug {
    /// A verdict reached here about `node`, to be shared with the other replicas.
    ///
    /// Called from [`HealthMonitor::record`] (that is, on the call path, when an outcome ejects
    /// a node or starts a cooldown) and from the prober. It must return at once: no IO, no
    /// await, no lock held across IO. Queue the verdict and send it from a task.
    fn on_verdict(&self, node: NodeId, verdict: SharedVerdict);

    /// Whether this replica probes `node` in full now; `false` while another replica holds the
    /// node's probe lease, so that each region is probed once per interval across the fleet.
    ///
    /// A prober that is told `false` keeps a low-rate probe ([`GATED_RTT_PROBE_EVERY`]) that
    /// only measures the round trip, because nearness is per host. Return `true` whenever the
    /// fleet cannot vouch for another prober (shared store unreachable, lease state unknown).
    fn may_probe(&self, _node: NodeId) -> bool {
        true
    }
}

/// While another replica probes a node, this prober still probes it once every this many
/// intervals, for the round trip only (its verdict is not used).
pub const GATED_RTT_PROBE_EVERY: u32 = 10;

// ===== impl SharedVerdict =====

impl SharedVerdict {
    /// The verdict a local event shares, if it shares one (credential refusals stay local).
    pub(crate) fn from_event(kind: &HealthEventKind, at: Instant) -> Option<Self> {
        Some(match kind {
            HealthEventKind::BecameHealthy => Self::Up,
            HealthEventKind::BecameUnhealthy { .. } => Self::Down,
            HealthEventKind::Ejected { until } => Self::Ejected { remaining: until.saturating_duration_since(at) },
            HealthEventKind::EjectionEnded => Self::EjectionEnded,
            HealthEventKind::CooldownStarted { until } => {
                Self::Cooldown { remaining: until.saturating_duration_since(at) }
            }
            _ => return None,
        })
    }
}

// ===== impl HealthMonitor (hooks) =====

impl HealthMonitor {
    /// Attaches `hook`; a monitor takes one hook, once. Probers spawned before or after pick it
    /// up at their next round. Returns the hook back if one was already attached.
    pub fn set_hook(&self, hook: Arc<dyn HealthHook>) -> Result<(), Arc<dyn HealthHook>> {
        self.inner().hook.set(hook)
    }

    /// The attached hook, if any.
    pub fn hook(&self) -> Option<&Arc<dyn HealthHook>> {
        self.inner().hook.get()
    }

    /// Applies a verdict another replica reached about `node`, at `now`.
    ///
    /// It goes into the node's `NodeMetrics` as a local verdict would, and out on the event
    /// channel (so rescues and observers see it), but not to the hook.
    /// * `Down` / `Up` set the health state; a comeback starts slow start.
    /// * `Ejected` extends the node's exclusion by `remaining`, capped at
    ///   [`max_ejection`](crate::OutlierConfig::max_ejection). It takes no local ejection slot.
    /// * `EjectionEnded` lifts an exclusion, keeping any local ejection or cooldown.
    /// * `Cooldown` extends the node's Retry-After cooldown by `remaining`, capped at
    ///   [`retry_after_cap`](crate::OutlierConfig::retry_after_cap); panic mode never offers
    ///   the node meanwhile, exactly as for a local 429.
    ///
    /// An id from another snapshot is ignored. Not for the call path: it may allocate.
    pub fn apply_shared(&self, node: NodeId, verdict: SharedVerdict, now: Instant) {
        let inner = &**self.inner();
        let Some(n) = inner.snapshot.get(node) else { return };
        let metrics = n.metrics();
        let now_ns = inner.nanos(now);
        match verdict {
            SharedVerdict::Down => {
                if metrics.set_health(HealthState::Unhealthy) != HealthState::Unhealthy {
                    tracing::warn!(node = %node, region = %inner.regions[node.index()], "node down (fleet verdict)");
                    let reason = "reported down by another replica".to_owned();
                    inner.emit(node, HealthEventKind::BecameUnhealthy { reason, silent: false }, now);
                }
            }
            SharedVerdict::Up => {
                let before = metrics.set_health(HealthState::Healthy);
                if before != HealthState::Healthy {
                    if before == HealthState::Unhealthy {
                        inner.begin_slow_start_now(metrics, now);
                    }
                    tracing::info!(node = %node, region = %inner.regions[node.index()], "node up (fleet verdict)");
                    inner.emit(node, HealthEventKind::BecameHealthy, now);
                }
            }
            SharedVerdict::Ejected { remaining } => {
                let until = now + remaining.min(inner.config.max_ejection());
                if remaining.is_zero() || metrics.excluded_until().is_some_and(|u| u >= until) {
                    return;
                }
                metrics.extend_exclusion(until);
                inner.schedule_slow_start(metrics);
                tracing::info!(node = %node, region = %inner.regions[node.index()], ejected_for = ?remaining,
                    "node ejected (fleet verdict)");
                inner.emit(node, HealthEventKind::Ejected { until }, now);
            }
            SharedVerdict::EjectionEnded => {
                if !metrics.is_excluded(now) {
                    return;
                }
                let state = &inner.nodes[node.index()];
                let keep = state.eject_until.load(Ordering::Acquire).max(state.cooldown_until.load(Ordering::Acquire));
                metrics.set_excluded_until((keep > now_ns).then(|| inner.instant(keep)));
                inner.begin_slow_start_now(metrics, now);
                tracing::info!(node = %node, region = %inner.regions[node.index()], "ejection ended (fleet verdict)");
                inner.emit(node, HealthEventKind::EjectionEnded, now);
            }
            SharedVerdict::Cooldown { remaining } => inner.cooldown(node, remaining, now_ns, now, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_region_model::{GeoPoint, Region, Snapshot};

    use super::*;
    use crate::{Outcome, OutlierConfig};

    #[derive(Debug, Default)]
    struct Recorder(parking_lot::Mutex<Vec<(NodeId, SharedVerdict)>>);

    impl HealthHook for Recorder {
        fn on_verdict(&self, node: NodeId, verdict: SharedVerdict) {
            self.0.lock().push((node, verdict));
        }
    }

    fn monitor(t0: Instant) -> HealthMonitor {
        let regions = ["a", "b"].map(|id| Region::new(id, format!("http://{id}.invalid/v1"), GeoPoint::new(0.0, 0.0)));
        let snapshot = Snapshot::builder().epoch(t0).build(regions).expect("valid regions");
        HealthMonitor::new(Arc::new(snapshot), OutlierConfig::default())
    }

    #[test]
    fn local_verdicts_reach_the_hook_and_shared_ones_do_not_echo() {
        let t0 = Instant::now();
        let m = monitor(t0);
        let hook = Arc::new(Recorder::default());
        m.set_hook(hook.clone()).expect("first hook");
        assert!(m.set_hook(hook.clone()).is_err(), "a second hook is refused");
        let a = NodeId::from_index(0);
        let b = NodeId::from_index(1);
        m.record(a, Outcome::RateLimited { retry_after: Some(Duration::from_secs(10)) }, t0);
        assert_eq!(*hook.0.lock(), [(a, SharedVerdict::Cooldown { remaining: Duration::from_secs(10) })]);

        let mut events = m.subscribe();
        m.apply_shared(b, SharedVerdict::Cooldown { remaining: Duration::from_secs(5) }, t0);
        m.apply_shared(b, SharedVerdict::Down, t0);
        assert_eq!(hook.0.lock().len(), 1, "applied verdicts are not re-shared");
        assert!(matches!(events.try_recv().map(|e| e.kind), Ok(HealthEventKind::CooldownStarted { .. })));
        assert!(matches!(events.try_recv().map(|e| e.kind), Ok(HealthEventKind::BecameUnhealthy { .. })));
        let status = m.status(b, t0).expect("in range");
        assert_eq!(status.cooldown_until, Some(t0 + Duration::from_secs(5)));
        assert_eq!(status.health, HealthState::Unhealthy);
        // A cooled-down node is never offered, not even in panic mode.
        let mut out = Vec::new();
        assert!(matches!(m.select(t0, |_| false, &mut out), crate::Selection::Unavailable { .. }));
        assert_eq!(m.select(t0 + Duration::from_secs(11), |_| false, &mut out), crate::Selection::Eligible);
        assert_eq!(out, [a], "b is still down");
    }

    #[test]
    fn shared_ejections_and_their_end() {
        let t0 = Instant::now();
        let m = monitor(t0);
        let a = NodeId::from_index(0);
        let metrics = m.snapshot().node(a).metrics().clone();
        m.apply_shared(a, SharedVerdict::Ejected { remaining: Duration::from_secs(30) }, t0);
        assert!(metrics.is_excluded(t0 + Duration::from_secs(29)));
        // Capped at max_ejection.
        m.apply_shared(a, SharedVerdict::Ejected { remaining: Duration::from_secs(1_000_000) }, t0);
        assert!(!metrics.is_excluded(t0 + m.config().max_ejection() + Duration::from_secs(1)));
        m.apply_shared(a, SharedVerdict::EjectionEnded, t0 + Duration::from_secs(1));
        assert!(!metrics.is_excluded(t0 + Duration::from_secs(1)));
        // A local cooldown survives a shared end of ejection.
        m.record(a, Outcome::RateLimited { retry_after: Some(Duration::from_secs(10)) }, t0 + Duration::from_secs(2));
        m.apply_shared(a, SharedVerdict::Ejected { remaining: Duration::from_secs(60) }, t0 + Duration::from_secs(2));
        m.apply_shared(a, SharedVerdict::EjectionEnded, t0 + Duration::from_secs(3));
        assert!(metrics.is_excluded(t0 + Duration::from_secs(11)));
        assert!(!metrics.is_excluded(t0 + Duration::from_secs(13)));
        // Out-of-range ids are ignored.
        m.apply_shared(NodeId::from_index(7), SharedVerdict::Down, t0);
    }

    #[test]
    fn events_map_to_shared_verdicts() {
        let t0 = Instant::now();
        let s = Duration::from_secs(3);
        let check = |kind: HealthEventKind, expect: Option<SharedVerdict>| {
            assert_eq!(SharedVerdict::from_event(&kind, t0), expect, "{kind:?}");
        };
        check(HealthEventKind::BecameHealthy, Some(SharedVerdict::Up));
        check(HealthEventKind::BecameUnhealthy { reason: String::new(), silent: true }, Some(SharedVerdict::Down));
        check(HealthEventKind::Ejected { until: t0 + s }, Some(SharedVerdict::Ejected { remaining: s }));
        check(HealthEventKind::CooldownStarted { until: t0 + s }, Some(SharedVerdict::Cooldown { remaining: s }));
        check(HealthEventKind::EjectionEnded, Some(SharedVerdict::EjectionEnded));
        check(HealthEventKind::CredentialsRejected { status: 401 }, None);
    }
}
