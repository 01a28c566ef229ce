//! The shared health monitor: passive recording, selection and the event channel.

use std::{
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sluice_region_model::{AdminState, HealthState, NodeId, NodeMetrics, Snapshot};
use tokio::sync::broadcast;

use crate::{
    EjectionReason, HealthEvent, HealthEventKind, HealthHook, OutlierConfig, SharedVerdict,
    outlier::{BUCKETS, NodeState, next_multiplier},
};

/// Capacity of the event channel. A subscriber that falls further behind gets
/// `RecvError::Lagged` and misses the oldest events.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// A cooldown extension shorter than this is not published as a new event.
const COOLDOWN_EVENT_STEP_NS: u64 = 1_000_000_000;

/// Decides which nodes may take traffic, from real call outcomes (passive) and from the
/// active prober, and writes its verdicts into the snapshot's [`NodeMetrics`].
///
/// Cheap to clone (one `Arc`), `Send + Sync`. See the crate docs for the rules.
#[derive(Clone)]
pub struct HealthMonitor {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) config: OutlierConfig,
    /// Shared with the successor monitor for regions that stay (see
    /// [`HealthMonitor::successor`]).
    pub(crate) nodes: Box<[Arc<NodeState>]>,
    pub(crate) regions: Box<[Arc<str>]>,
    pub(crate) events: broadcast::Sender<HealthEvent>,
    /// Nodes holding an ejection slot.
    ejected: AtomicUsize,
    max_ejected: usize,
    bucket_ns: u64,
    /// Live probe tasks of every prober spawned from this monitor and its successors.
    pub(crate) probe_tasks: Arc<AtomicUsize>,
    /// Nodes that a prober should probe at once rather than after the initial jitter: regions
    /// that a successor monitor added.
    pub(crate) probe_now: Box<[bool]>,
    /// Fleet mode's hook, if attached (see `hook.rs`).
    pub(crate) hook: OnceLock<Arc<dyn HealthHook>>,
}

/// The outcome of one call, as the client reports it to [`HealthMonitor::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The call succeeded.
    Success {
        /// Time to the complete answer (or to the first byte, for streams; the client decides,
        /// consistently).
        latency: Duration,
    },
    /// The call timed out.
    Timeout,
    /// The connection could not be set up or broke.
    ConnectError,
    /// The node answered with a server error (5xx).
    ServerError {
        /// The HTTP status.
        status: u16,
        /// The parsed Retry-After, if the answer carried one. Honoured on 503 only.
        retry_after: Option<Duration>,
    },
    /// The node answered 429 Too Many Requests.
    RateLimited {
        /// The parsed Retry-After, if the answer carried one.
        retry_after: Option<Duration>,
    },
}

/// What [`HealthMonitor::select`] put into the candidate list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selection {
    /// The list holds every eligible, not skipped node (and is not empty).
    Eligible,
    /// No node was eligible: the list holds the least-bad ones (panic mode, see the crate
    /// docs) and is not empty.
    Panic,
    /// No node may be tried; the list is empty.
    Unavailable {
        /// The earliest instant at which a cooldown or ejection of a node that was not
        /// skipped ends, if any will.
        retry_at: Option<Instant>,
    },
}

/// The passive and active state of one node, for inspection and alerting.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The verdict of active probing.
    pub health: HealthState,
    /// The operator's switch.
    pub admin: AdminState,
    /// End of the current ejection, if the node is ejected.
    pub ejected_until: Option<Instant>,
    /// End of the current Retry-After cooldown, if one runs.
    pub cooldown_until: Option<Instant>,
    /// Backoff multiplier of the last ejection (0 if never ejected).
    pub ejection_multiplier: u32,
    /// The rule behind the last ejection, if there was one.
    pub last_ejection_reason: Option<EjectionReason>,
    /// Failed calls in a row.
    pub consecutive_failures: u32,
    /// The slow-start weight factor (1.0 when not ramping).
    pub weight_factor: f64,
}

// ===== impl HealthMonitor =====

impl HealthMonitor {
    /// A monitor for the nodes of `snapshot`.
    ///
    /// Passive state (failure counts, ejections, cooldowns) lives in the monitor; when
    /// membership changes, build a new monitor for the new snapshot.
    pub fn new(snapshot: Arc<Snapshot>, config: OutlierConfig) -> Self {
        let n = snapshot.len();
        let nodes = (0..n).map(|_| Arc::default()).collect();
        let regions = snapshot.nodes().iter().map(|node| Arc::from(node.region().id())).collect();
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let bucket_ns = duration_ns(config.failure_rate_window() / BUCKETS as u32).max(1);
        let max_ejected = config.max_ejected(n);
        let inner = Inner {
            snapshot,
            config,
            nodes,
            regions,
            events,
            ejected: AtomicUsize::new(0),
            max_ejected,
            bucket_ns,
            probe_tasks: Arc::default(),
            probe_now: vec![false; n].into_boxed_slice(),
            hook: OnceLock::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The monitor that follows this one after a membership change: the live-reload and
    /// discovery primitive.
    ///
    /// `next` must be built from this monitor's snapshot with `SnapshotBuilder::reuse_metrics`
    /// or `SnapshotBuilder::apply`, so that regions that stay share their `NodeMetrics`
    /// (health, latency estimates, exclusion, in-flight counts) and the epoch.
    /// The successor also shares, for those regions, the passive state (failure window,
    /// ejection and its backoff, cooldown), and with this monitor the event channel (so
    /// subscribers keep receiving; match events by region id, since node ids differ between
    /// the two) and the probe-task count.
    ///
    /// It does **not** take this monitor's [hook](Self::set_hook): a hook speaks of node ids,
    /// and node ids differ between memberships, so a verdict on the successor's node 1 would
    /// reach the fleet under this monitor's region 1. Attach a hook to the successor anew
    /// (fleet mode: start a `Fleet` on it).
    ///
    /// Regions that left are retired here: [`select`](Self::select) on this monitor never
    /// offers them again, so calls still running on it finish without new attempts there.
    /// Regions that came are `Unknown` (eligible) until their first verdict, and a prober
    /// spawned on the successor probes them at once.
    ///
    /// # Errors
    /// [`ConfigError::ForeignSnapshot`](crate::ConfigError::ForeignSnapshot) if `next` has
    /// another epoch.
    pub fn successor(&self, next: Arc<Snapshot>) -> Result<Self, crate::ConfigError> {
        let old = &*self.inner;
        if next.epoch() != old.snapshot.epoch() {
            return Err(crate::ConfigError::ForeignSnapshot);
        }
        let n = next.len();
        let mut probe_now = vec![false; n];
        let nodes = next
            .nodes()
            .iter()
            .zip(&mut probe_now)
            .map(|(node, fresh)| match old.snapshot.find(node.region().id()) {
                Some(kept) => Arc::clone(&old.nodes[kept.index()]),
                None => {
                    *fresh = true;
                    Arc::default()
                }
            })
            .collect::<Box<[Arc<NodeState>]>>();
        for node in old.snapshot.nodes() {
            if next.find(node.region().id()).is_none() {
                old.nodes[node.id().index()].retired.store(true, Ordering::Relaxed);
            }
        }
        let ejected = nodes.iter().filter(|s| s.holds_slot.load(Ordering::Acquire)).count();
        let regions = next.nodes().iter().map(|node| Arc::from(node.region().id())).collect();
        let inner = Inner {
            max_ejected: old.config.max_ejected(n),
            snapshot: next,
            config: old.config.clone(),
            nodes,
            regions,
            events: old.events.clone(),
            ejected: AtomicUsize::new(ejected),
            bucket_ns: old.bucket_ns,
            probe_tasks: Arc::clone(&old.probe_tasks),
            probe_now: probe_now.into_boxed_slice(),
            hook: OnceLock::new(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The snapshot whose nodes this monitor judges.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.inner.snapshot
    }

    /// The outlier settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.inner.config
    }

    /// Records the outcome of one call to `node` at `now`.
    ///
    /// Updates the node's [`NodeMetrics`] (counters, latency and error estimates) and the
    /// passive outlier state; may eject the node or start a cooldown.
    /// O(1), lock-free apart from the node's own estimate lock in [`NodeMetrics`], and
    /// allocation-free. The rare call that ejects a node while the ejection cap is full
    /// also scans the nodes (one atomic load each) for ejections that have ended.
    /// An id from another snapshot (out of range) is ignored.
    ///
    /// * `Success`: `record_success`; resets the consecutive-failure count, unless the call
    ///   started (`now - latency`) before the latest counted failure: such a call was accepted
    ///   before the node broke, so its success says nothing about the node now.
    /// * `Timeout`, `ConnectError`, `ServerError`: `record_failure` and a latency penalty
    ///   ([`error_penalty`](OutlierConfig::error_penalty)), so that a node that fails fast
    ///   looks expensive, not cheap; counts towards ejection. A 503 with Retry-After also
    ///   starts a cooldown.
    /// * `RateLimited`: `record_throttle`, which lowers the node's learned concurrency limit,
    ///   and a cooldown if Retry-After is present. Not a failure: the node works, we are only
    ///   asked to slow down, so a 429 never ejects, does not raise the error rate, adds no
    ///   latency penalty, and its cooldown does not restart the slow-start ramp.
    ///
    /// Outcomes that arrive while the node is ejected (calls that were in flight) update the
    /// metrics but not the ejection counters.
    pub fn record(&self, node: NodeId, outcome: Outcome, now: Instant) {
        let inner = &*self.inner;
        let Some(n) = inner.snapshot.get(node) else { return };
        let metrics = n.metrics();
        let state = &inner.nodes[node.index()];
        let now_ns = inner.nanos(now);
        match outcome {
            Outcome::Success { latency } => {
                let counted = !state.is_ejected(now_ns);
                if counted {
                    state.roll(now_ns, inner.bucket_ns, metrics);
                }
                metrics.record_success(latency, now);
                // Skip the write when there is nothing to reset: keeps the line shared
                // between threads recording successes for one node. A call that started
                // before the latest failure was already on its way (a draining node still
                // finishes what it accepted), so it proves nothing about the node now.
                let started = now_ns.saturating_sub(duration_ns(latency));
                if counted
                    && state.consecutive.load(Ordering::Relaxed) != 0
                    && started >= state.last_failure.load(Ordering::Relaxed).saturating_sub(1)
                {
                    state.consecutive.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Timeout | Outcome::ConnectError => {
                let counted = !state.is_ejected(now_ns);
                if counted {
                    state.roll(now_ns, inner.bucket_ns, metrics);
                }
                metrics.record_failure(now);
                let penalty = inner.config.error_penalty();
                if !penalty.is_zero() {
                    metrics.record_penalty(penalty, now);
                }
                if counted {
                    inner.on_failure(node, now_ns, now);
                }
            }
            Outcome::ServerError { status, retry_after } => {
                let counted = !state.is_ejected(now_ns);
                if counted {
                    state.roll(now_ns, inner.bucket_ns, metrics);
                }
                metrics.record_failure(now);
                let penalty = inner.config.error_penalty();
                if !penalty.is_zero() {
                    metrics.record_penalty(penalty, now);
                }
                if status == 503
                    && let Some(after) = retry_after
                {
                    state.unavailable_at.fetch_max(now_ns.max(1), Ordering::AcqRel);
                    inner.cooldown(node, after, now_ns, now, true);
                }
                if counted {
                    inner.on_failure(node, now_ns, now);
                }
            }
            Outcome::RateLimited { retry_after } => {
                metrics.record_throttle(now);
                if let Some(after) = retry_after {
                    let capped = after.min(inner.config.retry_after_cap());
                    state.throttled_until.fetch_max(now_ns.saturating_add(duration_ns(capped)), Ordering::AcqRel);
                    inner.cooldown(node, after, now_ns, now, true);
                }
            }
        }
    }

    /// Fills `out` (cleared first) with the nodes a new attempt may use, leaving out those
    /// for which `skip(id)` is true (typically: already tried by this call).
    ///
    /// * Normally `out` gets every eligible node (region-model
    ///   [`availability`](NodeMetrics::availability): enabled, not unhealthy, not excluded)
    ///   and the result is [`Selection::Eligible`].
    /// * **Panic mode:** when no node that is not skipped is eligible, `out` gets the least-bad
    ///   ones and the result is [`Selection::Panic`]. Drained nodes and nodes inside a
    ///   Retry-After cooldown are never offered. Of the rest, the best class present is taken:
    ///   first nodes that are only ejected (probes still pass), then nodes that are only
    ///   unhealthy, then nodes that are both.
    /// * When even that is empty the result is [`Selection::Unavailable`] with the earliest
    ///   end of a cooldown or ejection among the nodes not skipped (`None` if there is none,
    ///   e.g. when every node is drained or skipped).
    ///
    /// O(n) in the number of nodes; no lock, and no allocation once `out` has grown.
    pub fn select(&self, now: Instant, skip: impl Fn(NodeId) -> bool, out: &mut Vec<NodeId>) -> Selection {
        let inner = &*self.inner;
        let now_ns = inner.nanos(now);
        out.clear();
        for node in inner.snapshot.nodes() {
            let id = node.id();
            inner.reclaim_slot(id, now_ns);
            if !skip(id) && !inner.nodes[id.index()].is_retired() && node.metrics().is_eligible(now) {
                out.push(id);
            }
        }
        if !out.is_empty() {
            return Selection::Eligible;
        }
        // Panic mode: rank 0 = only excluded, 1 = only unhealthy, 2 = both.
        let mut best_rank = u8::MAX;
        let mut retry_at: Option<u64> = None;
        let mut earliest = |until: u64| retry_at = Some(retry_at.map_or(until, |r| r.min(until)));
        for node in inner.snapshot.nodes() {
            let id = node.id();
            let m = node.metrics();
            if skip(id) || m.admin() == AdminState::Drained || inner.nodes[id.index()].is_retired() {
                continue;
            }
            let state = &inner.nodes[id.index()];
            if state.in_cooldown(now_ns) {
                earliest(state.cooldown_until.load(Ordering::Relaxed));
                continue;
            }
            let rank = match (m.health().is_serving(), m.is_excluded(now)) {
                (true, _) => 0,
                (false, false) => 1,
                (false, true) => 2,
            };
            if rank < best_rank {
                best_rank = rank;
                out.clear();
            }
            if rank == best_rank {
                out.push(id);
            }
        }
        if !out.is_empty() {
            tracing::debug!(candidates = out.len(), "no eligible node; panic mode");
            return Selection::Panic;
        }
        Selection::Unavailable { retry_at: retry_at.map(|ns| inner.instant(ns)) }
    }

    /// A receiver of every [`HealthEvent`] sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// The passive and active state of `node` at `now`, or `None` for an id out of range.
    pub fn status(&self, node: NodeId, now: Instant) -> Option<NodeStatus> {
        let inner = &*self.inner;
        let m = inner.snapshot.get(node)?.metrics();
        let state = &inner.nodes[node.index()];
        let now_ns = inner.nanos(now);
        let until = |ns: u64| (now_ns < ns).then(|| inner.instant(ns));
        Some(NodeStatus {
            health: m.health(),
            admin: m.admin(),
            ejected_until: until(state.eject_until.load(Ordering::Relaxed)),
            cooldown_until: until(state.cooldown_until.load(Ordering::Relaxed)),
            ejection_multiplier: state.multiplier.load(Ordering::Relaxed),
            last_ejection_reason: EjectionReason::unpack(state.last_reason.load(Ordering::Relaxed)),
            consecutive_failures: state.consecutive.load(Ordering::Relaxed),
            weight_factor: m.weight_factor(now),
        })
    }

    /// Nodes currently counted as ejected against the cap (ejections that ended are
    /// reclaimed lazily, by [`select`](Self::select) and by later ejections).
    pub fn ejected_count(&self) -> usize {
        self.inner.ejected.load(Ordering::Relaxed)
    }

    /// Probe tasks currently alive, across every prober spawned from this monitor.
    /// Drops to zero once the [`ProberHandle`](crate::ProberHandle)s are dropped or shut down.
    pub fn probe_tasks(&self) -> usize {
        self.inner.probe_tasks.load(Ordering::Relaxed)
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    #[cfg(feature = "test-util")]
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("nodes", &self.inner.snapshot.len())
            .field("ejected", &self.ejected_count())
            .field("max_ejected", &self.inner.max_ejected)
            .field("probe_tasks", &self.probe_tasks())
            .finish_non_exhaustive()
    }
}

// ===== impl Inner =====

impl Inner {
    #[inline]
    pub(crate) fn nanos(&self, t: Instant) -> u64 {
        duration_ns(t.saturating_duration_since(self.snapshot.epoch()))
    }

    #[inline]
    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.snapshot.epoch() + Duration::from_nanos(ns)
    }

    pub(crate) fn metrics(&self, node: NodeId) -> &Arc<NodeMetrics> {
        self.snapshot.node(node).metrics()
    }

    /// Counts a failure that `record` already added to the metrics; may eject.
    fn on_failure(&self, node: NodeId, now_ns: u64, now: Instant) {
        let state = &self.nodes[node.index()];
        state.last_failure.fetch_max(now_ns.saturating_add(1), Ordering::Relaxed);
        let consecutive = state.consecutive.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if consecutive >= self.config.consecutive_failures() {
            self.eject(node, EjectionReason::ConsecutiveFailures { count: consecutive }, now_ns, now);
            return;
        }
        let w = state.window(now_ns, self.bucket_ns, self.metrics(node));
        let total = w.successes + w.failures;
        if total >= self.config.failure_rate_min_requests()
            && f64::from(w.failures) > self.config.failure_rate_threshold() * f64::from(total)
        {
            self.eject(node, EjectionReason::FailureRate { failures: w.failures, total }, now_ns, now);
        }
    }

    /// Releases `node`'s ejection slot if its ejection has ended.
    #[inline]
    fn reclaim_slot(&self, node: NodeId, now_ns: u64) {
        let state = &self.nodes[node.index()];
        // `eject_until` is stored before `holds_slot` is set (release), so a slot holder seen
        // here with an ejection in the past really is done.
        if state.holds_slot.load(Ordering::Acquire)
            && now_ns >= state.eject_until.load(Ordering::Acquire)
            && state.holds_slot.compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.ejected.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Takes one slot under the cap; lock-free.
    fn reserve_slot(&self) -> bool {
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < self.max_ejected).then_some(n + 1))
            .is_ok()
    }

    fn eject(&self, node: NodeId, reason: EjectionReason, now_ns: u64, now: Instant) {
        let state = &self.nodes[node.index()];
        // One ejection decision per node at a time; losers simply return.
        if state.ejecting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.try_eject(node, state, reason, now_ns, now);
        state.ejecting.store(false, Ordering::Release);
    }

    fn try_eject(&self, node: NodeId, state: &NodeState, reason: EjectionReason, now_ns: u64, now: Instant) {
        self.reclaim_slot(node, now_ns);
        if state.holds_slot.load(Ordering::Acquire) {
            return;
        }
        if !self.reserve_slot() {
            // Ejections that ended may still hold slots: reclaim them, then try once more.
            for other in self.snapshot.ids() {
                self.reclaim_slot(*other, now_ns);
            }
            if !self.reserve_slot() {
                tracing::debug!(node = %node, region = %self.regions[node.index()], %reason,
                    max_ejected = self.max_ejected, "not ejecting: max_ejection_percent reached");
                return;
            }
        }
        let c = &self.config;
        let base = duration_ns(c.base_ejection()).max(1);
        let cap_ns = duration_ns(c.max_ejection()).max(base);
        let cap_multiplier = u32::try_from(cap_ns.div_ceil(base)).unwrap_or(u32::MAX);
        let multiplier = next_multiplier(
            state.multiplier.load(Ordering::Relaxed),
            state.eject_until.load(Ordering::Relaxed),
            now_ns,
            duration_ns(c.ejection_decay()),
            cap_multiplier,
        );
        let until_ns = now_ns.saturating_add(base.saturating_mul(u64::from(multiplier)).min(cap_ns)).max(1);
        state.multiplier.store(multiplier, Ordering::Relaxed);
        state.last_reason.store(reason.pack(), Ordering::Relaxed);
        state.probe_failed_since_eject.store(false, Ordering::Relaxed);
        state.eject_until.store(until_ns, Ordering::Release);
        state.holds_slot.store(true, Ordering::Release);
        state.clear_window();
        let until = self.instant(until_ns);
        let metrics = self.metrics(node);
        metrics.extend_exclusion(until);
        self.schedule_slow_start(metrics);
        tracing::warn!(node = %node, region = %self.regions[node.index()], %reason, multiplier,
            ejected_for = ?until.saturating_duration_since(now), "node ejected");
        self.publish(node, HealthEventKind::Ejected { until }, now);
    }

    /// Starts or extends a Retry-After cooldown; `share` = false for one another replica shared
    /// (it goes on the event channel but not back to the hook).
    pub(crate) fn cooldown(&self, node: NodeId, after: Duration, now_ns: u64, now: Instant, share: bool) {
        let after = after.min(self.config.retry_after_cap());
        if after.is_zero() {
            return;
        }
        let state = &self.nodes[node.index()];
        let until_ns = now_ns.saturating_add(duration_ns(after));
        let prev = state.cooldown_until.fetch_max(until_ns, Ordering::AcqRel);
        if until_ns <= prev {
            return;
        }
        let until = self.instant(until_ns);
        // No slow start: the node works and asked for a pause; ramping it again after every
        // 429 would cut its share in a sawtooth.
        self.metrics(node).extend_exclusion(until);
        if prev <= now_ns || until_ns - prev >= COOLDOWN_EVENT_STEP_NS {
            tracing::info!(node = %node, region = %self.regions[node.index()], retry_after = ?after, shared = !share,
                "node cooling down after retry-after");
            let kind = HealthEventKind::CooldownStarted { until };
            if share { self.publish(node, kind, now) } else { self.emit(node, kind, now) }
        }
    }

    /// Starts the slow-start ramp at the end of the node's exclusion, so that it ramps up
    /// when it comes back on its own.
    pub(crate) fn schedule_slow_start(&self, metrics: &NodeMetrics) {
        let window = self.config.slow_start_window();
        if let (false, Some(from)) = (window.is_zero(), metrics.excluded_until()) {
            metrics.begin_slow_start(from, window, self.config.slow_start_floor());
        }
    }

    /// Called by the prober on every successful probe: ends an ejection early when probes
    /// had seen the node fail during it. Returns whether it did.
    pub(crate) fn probe_succeeded(&self, node: NodeId, now: Instant) -> bool {
        let state = &self.nodes[node.index()];
        let now_ns = self.nanos(now);
        if !state.is_ejected(now_ns) || !state.probe_failed_since_eject.load(Ordering::Relaxed) {
            return false;
        }
        state.eject_until.store(now_ns.max(1), Ordering::Release);
        self.reclaim_slot(node, now_ns);
        let metrics = self.metrics(node);
        // Keep a running cooldown: it is the server's explicit request.
        let cooldown = state.cooldown_until.load(Ordering::Acquire);
        metrics.set_excluded_until((cooldown > now_ns).then(|| self.instant(cooldown)));
        // A cooldown that started meanwhile wins over the reset above.
        let cooldown_again = state.cooldown_until.load(Ordering::Acquire);
        if cooldown_again > now_ns {
            metrics.extend_exclusion(self.instant(cooldown_again));
        }
        self.begin_slow_start_now(metrics, now);
        tracing::info!(node = %node, region = %self.regions[node.index()], "probe passed; ejection ended early");
        self.publish(node, HealthEventKind::EjectionEnded, now);
        true
    }

    /// Called by the prober when a probe that began at `started` succeeded: ends a cooldown
    /// that a 503 started before the probe, keeping any part a 429 asked for.
    pub(crate) fn probe_passed_since(&self, node: NodeId, started: Instant, now: Instant) {
        let state = &self.nodes[node.index()];
        let now_ns = self.nanos(now);
        let since = state.unavailable_at.load(Ordering::Acquire);
        if since == 0 || self.nanos(started) <= since || !state.in_cooldown(now_ns) {
            return;
        }
        let keep = state.throttled_until.load(Ordering::Acquire).max(now_ns);
        let prev = state.cooldown_until.load(Ordering::Acquire);
        if keep >= prev
            || state.cooldown_until.compare_exchange(prev, keep, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            // Nothing to shorten, or a new answer extended the cooldown meanwhile: it wins.
            return;
        }
        state.unavailable_at.store(0, Ordering::Release);
        let metrics = self.metrics(node);
        let eject = state.eject_until.load(Ordering::Acquire);
        let until = keep.max(eject);
        metrics.set_excluded_until((until > now_ns).then(|| self.instant(until)));
        tracing::info!(node = %node, region = %self.regions[node.index()], "probe passed after a 503; cooldown ended early");
        self.publish(node, HealthEventKind::CooldownEnded, now);
    }

    /// Called by the prober on every failed probe.
    pub(crate) fn probe_failed(&self, node: NodeId, now: Instant) {
        let state = &self.nodes[node.index()];
        if state.is_ejected(self.nanos(now)) {
            state.probe_failed_since_eject.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn begin_slow_start_now(&self, metrics: &NodeMetrics, now: Instant) {
        let window = self.config.slow_start_window();
        if !window.is_zero() {
            let from = metrics.excluded_until().filter(|t| *t > now).unwrap_or(now);
            metrics.begin_slow_start(from, window, self.config.slow_start_floor());
        }
    }

    /// Shares a local verdict with the hook (fleet mode), then emits it.
    pub(crate) fn publish(&self, node: NodeId, kind: HealthEventKind, at: Instant) {
        if let Some(hook) = self.hook.get()
            && let Some(verdict) = SharedVerdict::from_event(&kind, at)
        {
            hook.on_verdict(node, verdict);
        }
        self.emit(node, kind, at);
    }

    /// Whether this replica probes `node` in full (no hook: always).
    pub(crate) fn may_probe(&self, node: NodeId) -> bool {
        self.hook.get().is_none_or(|hook| hook.may_probe(node))
    }

    /// Sends an event on the channel and to no hook.
    pub(crate) fn emit(&self, node: NodeId, kind: HealthEventKind, at: Instant) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let event = HealthEvent { node, region: Arc::clone(&self.regions[node.index()]), kind, at };
        // An error only means every receiver was dropped meanwhile.
        let _ = self.events.send(event);
    }
}

pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
