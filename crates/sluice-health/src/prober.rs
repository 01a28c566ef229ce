//! The active prober: one task per node.

use std::{fmt, sync::Arc, sync::atomic::Ordering, time::Duration};

use rand::{Rng, SeedableRng, rngs::SmallRng};
use sluice_region_model::{HealthState, NodeId};
use tokio::{task::JoinSet, time::Instant as TokioInstant};

use crate::{
    GATED_RTT_PROBE_EVERY, HealthEventKind, HealthMonitor, Probe, ProbeConfig, ProbeError, hysteresis::Hysteresis,
    monitor::Inner,
};

/// Owns the probe tasks started by [`HealthMonitor::spawn_prober`].
///
/// Dropping it aborts every task; [`shutdown`](Self::shutdown) aborts them and waits until
/// they are gone. Either way no task outlives the handle (tasks that are mid-probe are
/// dropped at their next poll).
#[must_use = "dropping the handle stops the prober"]
pub struct ProberHandle {
    tasks: JoinSet<()>,
    monitor: HealthMonitor,
}

/// Keeps the monitor's live-task count honest: decrements when the task's future is dropped,
/// whether it finished or was aborted.
struct LiveTask(HealthMonitor);

// ===== impl HealthMonitor (prober) =====

impl HealthMonitor {
    /// Starts probing every node of the snapshot with `probe`, one task per node, on the
    /// current tokio runtime.
    ///
    /// Results go through the rise/fall hysteresis of `config` and are written into each
    /// node's [`HealthState`]; transitions are published as [`HealthEvent`](crate::HealthEvent)s.
    /// A successful probe also records its round trip with `NodeMetrics::record_probe_rtt`,
    /// and may end a passive ejection early (see the crate docs).
    ///
    /// Spawn one prober per monitor: two probers would each keep their own hysteresis and
    /// overwrite each other's verdicts.
    ///
    /// # Panics
    /// If called outside a tokio runtime.
    pub fn spawn_prober(&self, probe: Arc<dyn Probe>, config: ProbeConfig) -> ProberHandle {
        let mut tasks = JoinSet::new();
        let origin = TokioInstant::now();
        let seed = config.seed();
        let config = Arc::new(config);
        for id in self.snapshot().ids() {
            let mut rng = match seed {
                // SplitMix-style mixing so that neighbouring nodes get unrelated streams.
                Some(s) => {
                    SmallRng::seed_from_u64(s ^ (u64::from(id.index() as u32) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                }
                None => SmallRng::from_os_rng(),
            };
            let initial = if self.inner().probe_now[id.index()] {
                Duration::ZERO
            } else {
                random_steps(&mut rng, config.initial_jitter(), config.timer_granularity())
            };
            self.inner().probe_tasks.fetch_add(1, Ordering::Relaxed);
            let live = LiveTask(self.clone());
            let task = NodeProber {
                monitor: self.clone(),
                probe: Arc::clone(&probe),
                config: Arc::clone(&config),
                node: *id,
                rng,
                hysteresis: Hysteresis::new(config.rise(), config.fall())
                    .starting_at(self.snapshot().node(*id).metrics().health()),
                credentials_failing: false,
                gated_rounds: 0,
            };
            tasks.spawn(async move {
                let _live = live;
                task.run(origin, initial).await;
            });
        }
        ProberHandle { tasks, monitor: self.clone() }
    }
}

// ===== impl ProberHandle =====

impl ProberHandle {
    /// Probe tasks of this prober that are still running (or not yet reaped).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task is left.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The monitor this prober reports to.
    pub fn monitor(&self) -> &HealthMonitor {
        &self.monitor
    }

    /// Stops every probe task and waits until all are gone.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl fmt::Debug for ProberHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProberHandle").field("tasks", &self.tasks.len()).finish_non_exhaustive()
    }
}

impl Drop for ProberHandle {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.inner().probe_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

// ===== NodeProber =====

struct NodeProber {
    monitor: HealthMonitor,
    probe: Arc<dyn Probe>,
    config: Arc<ProbeConfig>,
    node: NodeId,
    rng: SmallRng,
    hysteresis: Hysteresis,
    credentials_failing: bool,
    /// Rounds skipped in a row because another replica holds this node's probe lease.
    gated_rounds: u32,
}

impl NodeProber {
    async fn run(mut self, origin: TokioInstant, initial: Duration) {
        let grid = self.config.timer_granularity();
        let mut deadline = origin + initial;
        loop {
            tokio::time::sleep_until(deadline).await;
            if self.monitor.inner().may_probe(self.node) {
                if self.gated_rounds > 0 {
                    // Taking over from another replica: start from the verdict it shared.
                    self.gated_rounds = 0;
                    let shared = self.monitor.snapshot().node(self.node).metrics().health();
                    self.hysteresis = Hysteresis::new(self.config.rise(), self.config.fall()).starting_at(shared);
                }
                let started = TokioInstant::now().into_std();
                let span = tracing::debug_span!("sluice.probe", node = %self.node, outcome = tracing::field::Empty);
                let result = tracing::Instrument::instrument(self.probe_once(), span.clone()).await;
                span.record("outcome", if result.is_ok() { "ok" } else { "failed" });
                let _entered = span.enter();
                self.handle(result, started);
            } else {
                // Another replica probes this node; keep measuring our own round trip, rarely.
                self.gated_rounds = self.gated_rounds.wrapping_add(1);
                if self.gated_rounds % GATED_RTT_PROBE_EVERY == 1
                    && let Ok(rtt) = self.probe_once().await
                {
                    self.monitor.snapshot().node(self.node).metrics().record_probe_rtt(rtt);
                }
            }
            let base = if self.hysteresis.state() == HealthState::Unhealthy {
                self.config.unhealthy_interval()
            } else {
                self.config.interval()
            };
            deadline += jittered_steps(&mut self.rng, base, self.config.jitter_for(base), grid);
            let now = TokioInstant::now();
            if deadline < now {
                // The probe overran its interval: go again at the next grid point.
                deadline = align_up(origin, now, grid);
            }
        }
    }

    async fn probe_once(&self) -> Result<Duration, ProbeError> {
        let node = self.monitor.snapshot().node(self.node);
        match tokio::time::timeout(self.config.timeout(), self.probe.probe(node)).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout),
        }
    }

    fn handle(&mut self, result: Result<Duration, ProbeError>, started: std::time::Instant) {
        let now = TokioInstant::now().into_std();
        let inner: &Inner = self.monitor.inner();
        let id = self.node;
        let region = &inner.regions[id.index()];
        let metrics = inner.metrics(id);
        match result {
            Ok(rtt) => {
                metrics.record_probe_rtt(rtt);
                self.credentials_failing = false;
                inner.probe_succeeded(id, now);
                inner.probe_passed_since(id, started, now);
                let before = self.hysteresis.state();
                if let Some(HealthState::Healthy) = self.hysteresis.observe(true) {
                    metrics.set_health(HealthState::Healthy);
                    // HAProxy never slow-starts at process start: only a comeback ramps.
                    if before == HealthState::Unhealthy {
                        inner.begin_slow_start_now(metrics, now);
                    }
                    tracing::info!(node = %id, region = %region, from = ?before, "node became healthy");
                    inner.publish(id, HealthEventKind::BecameHealthy, now);
                }
            }
            Err(error) => {
                inner.probe_failed(id, now);
                if let ProbeError::Credentials { status } = error {
                    if !self.credentials_failing {
                        self.credentials_failing = true;
                        tracing::error!(node = %id, region = %region, status,
                            "probe credentials rejected: check the api key of this region (configuration fault, not an outage)");
                        inner.publish(id, HealthEventKind::CredentialsRejected { status }, now);
                    }
                } else {
                    self.credentials_failing = false;
                }
                tracing::debug!(node = %id, region = %region, error = %error, "probe failed");
                if let Some(HealthState::Unhealthy) = self.hysteresis.observe(false) {
                    metrics.set_health(HealthState::Unhealthy);
                    let reason = error_chain(&error);
                    tracing::warn!(node = %id, region = %region, reason = %reason, "node became unhealthy");
                    let silent = error.is_silence();
                    inner.publish(id, HealthEventKind::BecameUnhealthy { reason, silent }, now);
                }
            }
        }
    }
}

/// `error: source: source…` in one line.
fn error_chain(error: &ProbeError) -> String {
    use std::{error::Error, fmt::Write};
    let mut s = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let _ = write!(s, ": {e}");
        source = e.source();
    }
    s
}

/// A duration drawn uniformly from `0..=max`.
fn random_up_to(rng: &mut SmallRng, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..=crate::monitor::duration_ns(max)))
}

/// A duration drawn uniformly from `0..=max` in whole steps of `step` (or freely when `max`
/// is below one step).
fn random_steps(rng: &mut SmallRng, max: Duration, step: Duration) -> Duration {
    let step_ns = crate::monitor::duration_ns(step);
    let max_ns = crate::monitor::duration_ns(max);
    if step_ns == 0 || max_ns < step_ns {
        return random_up_to(rng, max);
    }
    Duration::from_nanos(rng.random_range(0..=max_ns / step_ns) * step_ns)
}

/// A duration drawn uniformly from `base - jitter ..= base + jitter` (jitter capped at base),
/// in whole steps of `step` when the jitter is at least one step.
pub(crate) fn jittered_steps(rng: &mut SmallRng, base: Duration, jitter: Duration, step: Duration) -> Duration {
    let jitter = jitter.min(base);
    let step_ns = crate::monitor::duration_ns(step);
    let jitter_ns = crate::monitor::duration_ns(jitter);
    if step_ns == 0 || jitter_ns < step_ns {
        return base - jitter + random_up_to(rng, jitter * 2);
    }
    // Whole steps on either side of `base`.
    let steps = jitter_ns / step_ns;
    let k = rng.random_range(0..=2 * steps);
    base - Duration::from_nanos(steps * step_ns) + Duration::from_nanos(k * step_ns)
}

/// The first instant `origin + k × step` at or after `now`.
fn align_up(origin: TokioInstant, now: TokioInstant, step: Duration) -> TokioInstant {
    let step_ns = u128::from(crate::monitor::duration_ns(step));
    if step_ns == 0 {
        return now;
    }
    let since = now.saturating_duration_since(origin).as_nanos();
    let steps = since.div_ceil(step_ns);
    origin + Duration::from_nanos(u64::try_from(steps * step_ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let mut rng = SmallRng::seed_from_u64(1);
        let base = Duration::from_secs(1);
        let j = 100 * MS;
        for step in [Duration::ZERO, MS, 10 * MS, 30 * MS, 200 * MS] {
            let (mut min, mut max) = (Duration::MAX, Duration::ZERO);
            for _ in 0..10_000 {
                let d = jittered_steps(&mut rng, base, j, step);
                assert!(d >= base - j && d <= base + j, "{d:?} with step {step:?}");
                if step >= MS && step <= j {
                    let off = (d.as_nanos() + 100 * step.as_nanos() - base.as_nanos()) % step.as_nanos();
                    assert_eq!(off, 0, "{d:?} off grid");
                }
                min = min.min(d);
                max = max.max(d);
            }
            // The extremes are reached up to the part of the jitter that is not a whole step.
            let slack = if step <= j {
                Duration::from_nanos((j.as_nanos() % step.as_nanos().max(1)) as u64) + MS
            } else {
                5 * MS
            };
            assert!(min < base - j + slack, "{min:?} with step {step:?}");
            assert!(max + slack > base + j, "{max:?} with step {step:?}");
        }
        assert_eq!(jittered_steps(&mut rng, base, Duration::ZERO, 10 * MS), base);
        // Scaled jitter that is not a whole number of steps stays inside its range.
        for _ in 0..1000 {
            let d = jittered_steps(&mut rng, 500 * MS, 55 * MS, 10 * MS);
            assert!(d >= 445 * MS && d <= 555 * MS, "{d:?}");
        }
    }

    #[test]
    fn initial_delay_is_on_the_grid() {
        let mut rng = SmallRng::seed_from_u64(2);
        for _ in 0..1000 {
            let d = random_steps(&mut rng, Duration::from_secs(1), 10 * MS);
            assert!(d <= Duration::from_secs(1));
            assert_eq!(d.as_nanos() % (10 * MS).as_nanos(), 0);
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn align_up_finds_the_next_grid_point() {
        let origin = TokioInstant::now();
        assert_eq!(align_up(origin, origin, 10 * MS), origin);
        assert_eq!(align_up(origin, origin + MS, 10 * MS), origin + 10 * MS);
        assert_eq!(align_up(origin, origin + 10 * MS, 10 * MS), origin + 10 * MS);
        assert_eq!(align_up(origin, origin + 3 * MS, Duration::ZERO), origin + 3 * MS);
    }

    #[test]
    fn error_chain_joins_sources() {
        let e = ProbeError::connect(std::io::Error::other("reset by peer"));
        assert_eq!(error_chain(&e), "connection failed: reset by peer");
    }
}
