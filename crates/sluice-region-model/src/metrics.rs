//! Live per-node metrics, as atomics.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::{AdminState, Availability, HealthState, InFlightGuard};

/// Time constant τ of the latency and error-rate estimates: an old observation's weight
/// falls to 1/e after τ without new ones. Ten seconds, as in Finagle and tower.
pub const DEFAULT_METRICS_DECAY: Duration = Duration::from_secs(10);

/// Weight of one outcome in the error-rate estimate: each success or failure moves the
/// estimate a tenth of the way towards 0 or 1.
pub const DEFAULT_ERROR_ALPHA: f64 = 0.1;

/// Weight of one sample in the probe round-trip estimate.
const PROBE_RTT_ALPHA: f64 = 0.3;

/// Smallest weight of one successful call's latency in the baseline (the node's usual
/// latency, which the latency estimate decays towards): one answer in 200, the number after
/// which the locality strategy counts a baseline as established. The first samples weigh
/// `1/n` (a plain mean).
///
/// The weight is per answer, so the baseline's memory is a number of answers, not a time: a
/// region answering 100 calls a second with a weight of 0.02 forgot everything older than
/// half a second, and a handful of slow answers from the long tail of LLM answer times (or
/// the slowest calls, which are the last to finish once a region stops getting new ones)
/// moved it by a quarter, enough to pass for "clearly slower" than the next region.
pub const DEFAULT_BASELINE_ALPHA: f64 = 0.005;

/// Multiplicative decrease of the learned concurrency limit on a 429 (AIMD, as Netflix's
/// concurrency-limits `AIMDLimit`).
pub const DEFAULT_LIMIT_BACKOFF: f64 = 0.9;

/// How long the learned concurrency limit takes to grow back to where it was at the last
/// 429 (the `K` of TCP CUBIC, RFC 9438): 20 s. It regrows along a cubic, fast at first, flat
/// near the old limit, then faster again beyond it, so a region that throttles at a fixed
/// level is probed about once per 20 s instead of in a sawtooth.
pub const DEFAULT_LIMIT_REGROWTH: Duration = Duration::from_secs(20);

/// Past the old limit, the learned limit doubles every this long (see
/// [`DEFAULT_LIMIT_REGROWTH`]): 2 s. A region that still throttles answers the first call
/// above the old limit with a 429 whatever the pace, so the pace only matters once the
/// throttle has ended, when every second spent below the region's real capacity sends calls
/// farther away.
pub const LIMIT_PROBE_DOUBLING: Duration = Duration::from_secs(2);

/// A 429 that meets at most this many calls in flight at the node (the throttled call's own
/// included, if its guard is still held) is a **lone call**: it says nothing about how many
/// calls the node serves at once (see [`NodeMetrics::record_throttle`]).
pub const LONE_CALLS: u32 = 1;

/// 429s within this long of the one that lowered the limit belong to the same overload (the
/// calls that were already on their way) and lower it only once.
pub const LIMIT_DROP_WINDOW: Duration = Duration::from_secs(1);

/// The learned limit never falls below this.
pub const MIN_CONCURRENCY_LIMIT: f64 = 1.0;

/// Failures in a row from which a node counts as failing (see [`NodeMetrics::is_failing`]).
pub const FAILING_STREAK: u32 = 3;

/// How long a failing node stays failing without a new failure (see
/// [`NodeMetrics::is_failing`]).
pub const FAILING_HOLD: Duration = Duration::from_secs(10);

/// Bits of an `f64` NaN, used as "no sample yet".
const NO_SAMPLE: u64 = 0x7ff8_0000_0000_0000;

/// Below this much elapsed time the decay factor is taken as 1, which spares an `exp` on the
/// read path of busy nodes (relative error under 1e-4 with the default τ).
const DECAY_SKIP_NS: u64 = 1_000_000;

/// Live measurements and state of one node.
///
/// Readers (the balancer's pick path) only load atomics: no lock, no allocation.
/// Writers (call completions, probes) update counters with atomics; the two moving estimates
/// are updated under a per-node lock, so nodes never contend with one another.
///
/// Time is passed in. Instants are stored as nanoseconds since the snapshot's epoch, and an
/// instant before the epoch counts as the epoch itself.
///
/// # Estimates
/// * **Latency** is a peak-EWMA (Finagle's `PeakEwma`, also in tower): a sample above the
///   estimate replaces it at once; otherwise the estimate moves towards the sample with weight
///   `1 - d`, `d = exp(-Δt/τ)` over the time since the last update.
///   Over time without samples the estimate decays towards a **baseline**, never towards 0:
///   the baseline is a plain EWMA (weight [`DEFAULT_BASELINE_ALPHA`]) of successful calls'
///   latencies, so a peak (a slow answer, a penalty) fades back to the node's usual latency
///   and an idle far region never looks faster than it is. A node that has never succeeded
///   has no baseline and keeps its penalty until it succeeds.
///   [`latency_toward`](Self::latency_toward) decays towards a baseline of the caller's
///   choice instead, such as the latency of the peer a strategy compares the node with.
/// * **Error rate** is an EWMA of failure indicators with weight [`DEFAULT_ERROR_ALPHA`] per
///   outcome, decaying towards 0 on read in the same way.
/// * **Probe RTT** is a plain EWMA of active-probe round trips and connect times, kept apart
///   from call latency because a chat completion and a `GET /models` differ by orders of
///   magnitude. It is this process's own measure of nearness.
///
/// # Concurrency limit
/// How many calls the node serves at once: a configured limit
/// ([`set_max_concurrency`](Self::set_max_concurrency), from `Region::with_max_concurrency`),
/// and a limit learned from 429s, with multiplicative decrease as in AIMD (Netflix
/// concurrency-limits) and a cubic regrowth as in TCP CUBIC: unknown until the first 429,
/// which sets it to [`DEFAULT_LIMIT_BACKOFF`] × the calls then in flight; each later 429
/// (one per [`LIMIT_DROP_WINDOW`]) sets it to [`DEFAULT_LIMIT_BACKOFF`] × the smaller of
/// itself and the calls in flight. "The calls in flight" is never taken below the most calls
/// the node served successfully at once since the previous drop, counting only calls that
/// started after that drop (a call accepted before it proves nothing about the node since).
/// When it served none, a 429 that meets a lone call ([`LONE_CALLS`]) only backs the limit
/// off: a quota, or the first call after a Retry-After cooldown, says nothing about
/// concurrency; one that meets several calls in flight sets the limit from them, so a region
/// whose capacity fell (48 to 16) is learned in two or three drops, not ten. Successes let
/// it regrow along `W(t) = W_max · (1 + (1 − backoff) · ((t − K) / K)³)` up to `t = K`
/// (CUBIC's concave approach), where `W_max` is the limit before the last 429, `t` the time
/// since and `K` = [`DEFAULT_LIMIT_REGROWTH`], and past it double every
/// [`LIMIT_PROBE_DOUBLING`].
/// The learned limit never exceeds the configured one. [`concurrency_limit`](Self::concurrency_limit) is the smaller of the two.
/// Limits are advice for strategies (soft): nothing here refuses a call.
///
/// # Layout
/// The fields a pick reads come first in a cache-line-aligned `repr(C)` struct, so reading a
/// node costs one cache line; counters only written on completion follow.
#[repr(C, align(64))]
pub struct NodeMetrics {
    // ----- read on the pick path: first cache line -----
    latency_bits: AtomicU64,
    /// EWMA of successful latencies, the target of the latency decay; NaN = none.
    baseline_bits: AtomicU64,
    /// When the baseline last moved, nanoseconds since the epoch.
    baseline_at: AtomicU64,
    updated_at: AtomicU64,
    /// `1 / decay_ns`, so that the read path multiplies instead of dividing.
    inv_decay_ns: f64,
    /// Nanoseconds since epoch, plus one, when slow start began; 0 = none.
    slow_start_from: AtomicU64,
    /// The effective concurrency limit as `f64` bits; infinity = none.
    limit_bits: AtomicU64,
    probe_rtt_bits: AtomicU64,
    pub(crate) in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    // ----- the rest -----
    health: AtomicU8,
    admin: AtomicU8,
    error_bits: AtomicU64,
    /// Nanoseconds since epoch until which the node is excluded; 0 = not excluded.
    excluded_until: AtomicU64,
    /// Nanoseconds since epoch, plus one, of the latest failure; 0 = none.
    last_failure: AtomicU64,
    /// The configured limit; 0 = none.
    configured_limit: AtomicU32,
    /// The learned limit as `f64` bits; NaN = none. Written under `estimate_lock`.
    learned_limit_bits: AtomicU64,
    /// The limit before the last 429 (`W_max`), as `f64` bits.
    limit_max_bits: AtomicU64,
    /// When the last 429 lowered the limit, nanoseconds since the epoch plus one; 0 = never.
    limit_drop_at: AtomicU64,
    /// The most calls in flight at the success of a call that started after the last 429
    /// lowered the limit (or ever, before the first): what the node has shown it serves.
    /// Written under `estimate_lock`.
    served_peak: AtomicU32,
    successes: AtomicU64,
    failures: AtomicU64,
    /// Calls started ([`start_request`](Self::start_request)) so far.
    started: AtomicU64,
    slow_start_window_ns: AtomicU64,
    slow_start_floor_bits: AtomicU64,
    decay_ns: f64,
    epoch: Instant,
    estimate_lock: Mutex<()>,
}

// ===== impl NodeMetrics =====

impl NodeMetrics {
    /// Fresh metrics: nothing in flight, no samples, health unknown, enabled.
    ///
    /// `decay` is the τ of the moving estimates (see [`DEFAULT_METRICS_DECAY`]); a zero decay
    /// is treated as one nanosecond.
    pub fn new(epoch: Instant, decay: Duration) -> Self {
        Self {
            epoch,
            decay_ns: (decay.as_nanos() as f64).max(1.0),
            inv_decay_ns: 1.0 / (decay.as_nanos() as f64).max(1.0),
            in_flight: AtomicU32::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            started: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            health: AtomicU8::new(HealthState::Unknown.to_u8()),
            admin: AtomicU8::new(AdminState::Enabled.to_u8()),
            excluded_until: AtomicU64::new(0),
            slow_start_from: AtomicU64::new(0),
            slow_start_window_ns: AtomicU64::new(0),
            slow_start_floor_bits: AtomicU64::new(1.0f64.to_bits()),
            latency_bits: AtomicU64::new(NO_SAMPLE),
            baseline_bits: AtomicU64::new(NO_SAMPLE),
            baseline_at: AtomicU64::new(0),
            limit_bits: AtomicU64::new(f64::INFINITY.to_bits()),
            last_failure: AtomicU64::new(0),
            configured_limit: AtomicU32::new(0),
            learned_limit_bits: AtomicU64::new(NO_SAMPLE),
            limit_max_bits: AtomicU64::new(NO_SAMPLE),
            limit_drop_at: AtomicU64::new(0),
            served_peak: AtomicU32::new(0),
            error_bits: AtomicU64::new(0.0f64.to_bits()),
            updated_at: AtomicU64::new(0),
            probe_rtt_bits: AtomicU64::new(NO_SAMPLE),
            estimate_lock: Mutex::new(()),
        }
    }

    /// The instant that stored times are measured from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    fn nanos(&self, t: Instant) -> u64 {
        nanos_since(self.epoch, t)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    #[inline]
    fn decay_factor(&self, now_ns: u64, since_ns: u64) -> f64 {
        let elapsed = now_ns.saturating_sub(since_ns);
        if elapsed < DECAY_SKIP_NS {
            return 1.0;
        }
        let x = elapsed as f64 * self.inv_decay_ns;
        // Busy nodes were updated a moment ago: a second-order series is exact to 4e-5 there.
        if x < 1.0 / 16.0 { 1.0 - x + 0.5 * x * x } else { exp_neg(x) }
    }

    // ----- in flight -----

    /// Counts one call as in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlightGuard::new(Arc::clone(self))
    }

    /// Calls started ([`start_request`](Self::start_request)) so far, whatever their outcome;
    /// fleet mode reads it beside the call path to spend shared request limits.
    pub fn requests_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Calls currently in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    // ----- outcomes -----

    /// Records a successful call and its latency. Raises a learned concurrency limit that the
    /// calls in flight nearly reach (see the type docs).
    pub fn record_success(&self, latency: Duration, now: Instant) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        self.update_estimates(now, Some(latency.as_nanos() as f64), Some(0.0), true);
    }

    /// Records a failed call. The latency estimate is left alone; use
    /// [`record_penalty`](Self::record_penalty) to make the node look slow as well.
    pub fn record_failure(&self, now: Instant) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        self.last_failure.fetch_max(self.nanos(now).saturating_add(1), Ordering::Relaxed);
        self.update_estimates(now, None, Some(1.0), false);
    }

    /// Records a 429 (Too Many Requests): the learned concurrency limit drops by
    /// [`DEFAULT_LIMIT_BACKOFF`], starting from the calls in flight if none was learned yet;
    /// 429s within [`LIMIT_DROP_WINDOW`] of that drop do not lower it again.
    ///
    /// Nothing else changes: a 429 is not a failure (the node works; it asks us to slow down),
    /// so neither the error rate nor the latency estimate moves. A Retry-After cooldown is the
    /// health monitor's business.
    pub fn record_throttle(&self, now: Instant) {
        let now_ns = self.nanos(now);
        let _lock = self.estimate_lock.lock();
        let dropped = self.limit_drop_at.load(Ordering::Relaxed);
        if dropped != 0 && now_ns.saturating_sub(dropped - 1) < duration_nanos(LIMIT_DROP_WINDOW) {
            return;
        }
        let learned = f64::from_bits(self.learned_limit_bits.load(Ordering::Relaxed));
        let configured = self.configured_limit.load(Ordering::Relaxed);
        // A 429 with `n` calls in flight says the node's limit is about `n`. (Whether the
        // throttled call's own guard is still held changes `n` by one, which the backoff
        // covers.) But not below what it served successfully since the last drop: a 429 that
        // meets one lone call (a quota or rate limit, or the first call after a Retry-After
        // cooldown drained the node) says nothing about how many calls it serves at once.
        let served = self.served_peak.swap(0, Ordering::Relaxed);
        let now_in_flight = self.in_flight();
        let in_flight = f64::from(now_in_flight.max(served).max(1));
        let configured_or_inf = if configured == 0 { f64::INFINITY } else { f64::from(configured) };
        let current = match (learned.is_nan(), served) {
            (true, _) => in_flight,
            // Nothing served since the last drop and a lone call: it tells nothing new, so the
            // learned limit only backs off.
            (false, 0) if now_in_flight <= LONE_CALLS => learned,
            (false, _) => learned.min(in_flight),
        }
        .min(configured_or_inf);
        let next = (current * DEFAULT_LIMIT_BACKOFF).max(MIN_CONCURRENCY_LIMIT);
        self.limit_max_bits.store(current.to_bits(), Ordering::Relaxed);
        self.limit_drop_at.store(now_ns.saturating_add(1), Ordering::Relaxed);
        self.store_learned_limit(next, configured);
    }

    /// The learned limit's regrowth target `t_ns` after the last drop (see the type docs).
    fn regrown_limit(&self, t_ns: u64) -> f64 {
        let w_max = f64::from_bits(self.limit_max_bits.load(Ordering::Relaxed));
        let k = DEFAULT_LIMIT_REGROWTH.as_nanos() as f64;
        let x = (t_ns as f64 - k) / k;
        if x < 0.0 {
            // Concave back up to the old limit: CUBIC's curve.
            return w_max * (1.0 + (1.0 - DEFAULT_LIMIT_BACKOFF) * x * x * x);
        }
        // Then probing beyond it, doubling every `LIMIT_PROBE_DOUBLING`, so that a region that
        // stopped throttling gets its share back within seconds; one that still throttles
        // answers the probe with a 429 as soon as the old limit is passed.
        let doublings = (t_ns as f64 - k) / LIMIT_PROBE_DOUBLING.as_nanos() as f64;
        w_max * doublings.min(60.0).exp2()
    }

    /// Sets the configured concurrency limit (`None` or 0: none). A learned limit above it
    /// is lowered to it.
    pub fn set_max_concurrency(&self, limit: Option<u32>) {
        let _lock = self.estimate_lock.lock();
        let configured = limit.unwrap_or(0);
        self.configured_limit.store(configured, Ordering::Relaxed);
        let learned = f64::from_bits(self.learned_limit_bits.load(Ordering::Relaxed));
        self.store_learned_limit(learned, configured);
    }

    /// The configured concurrency limit, if any.
    pub fn max_concurrency(&self) -> Option<u32> {
        Some(self.configured_limit.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// The learned concurrency limit, if a 429 taught one.
    pub fn learned_limit(&self) -> Option<f64> {
        let v = f64::from_bits(self.learned_limit_bits.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }

    /// The effective concurrency limit: the smaller of the configured and the learned one,
    /// or `None` when neither is known.
    pub fn concurrency_limit(&self) -> Option<f64> {
        let v = self.concurrency_limit_or_inf();
        v.is_finite().then_some(v)
    }

    /// [`concurrency_limit`](Self::concurrency_limit) for the pick path: one atomic load,
    /// infinity when no limit is known.
    #[inline]
    pub fn concurrency_limit_or_inf(&self) -> f64 {
        f64::from_bits(self.limit_bits.load(Ordering::Relaxed))
    }

    /// Forgets the learned limit (the configured one stays).
    pub fn reset_learned_limit(&self) {
        let _lock = self.estimate_lock.lock();
        self.store_learned_limit(f64::NAN, self.configured_limit.load(Ordering::Relaxed));
    }

    /// Stores a learned limit (capped by `configured`) and the effective limit. Call under
    /// `estimate_lock`.
    fn store_learned_limit(&self, learned: f64, configured: u32) {
        let learned = if configured > 0 && !learned.is_nan() { learned.min(f64::from(configured)) } else { learned };
        self.learned_limit_bits.store(learned.to_bits(), Ordering::Relaxed);
        let configured = if configured == 0 { f64::INFINITY } else { f64::from(configured) };
        let effective = if learned.is_nan() { configured } else { learned.min(configured) };
        self.limit_bits.store(effective.to_bits(), Ordering::Relaxed);
    }

    /// Raises the latency estimate to at least `penalty`, as a peak sample would.
    ///
    /// Meant for 429 and 5xx answers (Linkerd's load biaser records such a peak): the node
    /// looks slow for a while and then decays back like any other peak.
    pub fn record_penalty(&self, penalty: Duration, now: Instant) {
        self.update_estimates(now, Some(penalty.as_nanos() as f64), None, false);
    }

    /// `success`: the sample is a successful call's latency, which also moves the baseline and
    /// may raise the learned limit.
    fn update_estimates(&self, now: Instant, latency_ns: Option<f64>, error: Option<f64>, success: bool) {
        let now_ns = self.nanos(now);
        let _lock = self.estimate_lock.lock();
        let last = self.updated_at.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(last) as f64;
        let decay = exp_neg(elapsed / self.decay_ns);
        let sample = latency_ns.filter(|s| s.is_finite() && *s >= 0.0);
        let old_base = f64::from_bits(self.baseline_bits.load(Ordering::Relaxed));
        if success && let Some(sample) = sample {
            // Every answer weighs the same, however long since the last: weighting answers
            // after a pause more would bias a rarely used node (noise in one direction would
            // stick).
            let alpha = DEFAULT_BASELINE_ALPHA.max(1.0 / self.successes().max(1) as f64);
            let base = if old_base.is_nan() { sample } else { old_base + alpha * (sample - old_base) };
            self.baseline_bits.store(base.to_bits(), Ordering::Relaxed);
            self.baseline_at.fetch_max(now_ns, Ordering::Relaxed);
        }
        // Decay the stored estimate towards the baseline over the elapsed time, then blend a
        // real sample in with the weight that interval carries, or take it as a peak.
        let stored = f64::from_bits(self.latency_bits.load(Ordering::Relaxed));
        let decayed = if old_base.is_nan() { stored } else { old_base + (stored - old_base) * decay };
        let latency = match sample {
            Some(sample) if decayed.is_nan() || sample > decayed => sample,
            Some(sample) => decayed + (sample - decayed) * (1.0 - decay),
            None => decayed,
        };
        self.latency_bits.store(latency.to_bits(), Ordering::Relaxed);
        let dropped = self.limit_drop_at.load(Ordering::Relaxed);
        // What the node served at once, counting only calls that started after the last drop:
        // the calls it was serving when its capacity fell finish after the drop, and the
        // number still in flight then says nothing about the capacity now.
        // Both writers of `served_peak` hold `estimate_lock`: a load and a store suffice.
        if success && (dropped == 0 || now_ns.saturating_sub(sample.unwrap_or(0.0) as u64) >= dropped - 1) {
            let in_flight = self.in_flight();
            if in_flight > self.served_peak.load(Ordering::Relaxed) {
                self.served_peak.store(in_flight, Ordering::Relaxed);
            }
        }
        if success && dropped != 0 {
            let learned = f64::from_bits(self.learned_limit_bits.load(Ordering::Relaxed));
            let target = self.regrown_limit(now_ns.saturating_sub(dropped - 1));
            if !learned.is_nan() && target.is_finite() && target > learned {
                self.store_learned_limit(target, self.configured_limit.load(Ordering::Relaxed));
            }
        }
        let err = f64::from_bits(self.error_bits.load(Ordering::Relaxed)) * decay;
        let err = match error {
            Some(x) => err * (1.0 - DEFAULT_ERROR_ALPHA) + x * DEFAULT_ERROR_ALPHA,
            None => err,
        };
        self.error_bits.store(err.to_bits(), Ordering::Relaxed);
        self.updated_at.store(now_ns.max(last), Ordering::Relaxed);
    }

    /// Records the time a new connection to the node took to set up (TCP connect: one round
    /// trip). It feeds the same nearness estimate as [`record_probe_rtt`](Self::record_probe_rtt).
    pub fn record_connect_time(&self, connect: Duration) {
        self.record_probe_rtt(connect);
    }

    /// Records an active-probe round trip. Does not touch call counters or the call latency.
    pub fn record_probe_rtt(&self, rtt: Duration) {
        let sample = rtt.as_nanos() as f64;
        let _lock = self.estimate_lock.lock();
        let old = f64::from_bits(self.probe_rtt_bits.load(Ordering::Relaxed));
        let new = if old.is_nan() { sample } else { old + PROBE_RTT_ALPHA * (sample - old) };
        self.probe_rtt_bits.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Successful calls recorded so far.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Failed calls recorded so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Whether the node is failing at `now_ns` (nanoseconds since the epoch): its latest
    /// failure is less than [`FAILING_HOLD`] old, and either it has failed
    /// [`FAILING_STREAK`] times in a row or it has never succeeded.
    ///
    /// A strategy should not prefer a failing node while another one is not failing. The hold
    /// makes the verdict lapse, so that a node that stopped getting calls is tried again.
    #[inline]
    pub fn is_failing_at(&self, now_ns: u64) -> bool {
        let streak = self.consecutive_failures.load(Ordering::Relaxed);
        if streak == 0 || (streak < FAILING_STREAK && self.successes() != 0) {
            return false;
        }
        let last = self.last_failure.load(Ordering::Relaxed);
        last != 0 && now_ns.saturating_sub(last - 1) < duration_nanos(FAILING_HOLD)
    }

    /// [`is_failing_at`](Self::is_failing_at) at an `Instant`.
    pub fn is_failing(&self, now: Instant) -> bool {
        self.is_failing_at(self.nanos(now))
    }

    /// The decayed latency estimate in nanoseconds at `now`, or `None` before the first sample.
    ///
    /// This is the pick-path accessor: a few atomic loads and at most one `exp`.
    #[inline]
    pub fn latency_estimate_ns(&self, now: Instant) -> Option<f64> {
        self.latency_estimate_ns_at(self.nanos(now))
    }

    /// [`latency_estimate_ns`](Self::latency_estimate_ns) with `now` given as nanoseconds since
    /// the epoch ([`Snapshot::nanos_since_epoch`](crate::Snapshot::nanos_since_epoch)), which a
    /// pick converts once for all nodes.
    #[inline]
    pub fn latency_estimate_ns_at(&self, now_ns: u64) -> Option<f64> {
        let est = f64::from_bits(self.latency_bits.load(Ordering::Relaxed));
        if est.is_nan() {
            return None;
        }
        let base = f64::from_bits(self.baseline_bits.load(Ordering::Relaxed));
        if base.is_nan() {
            return Some(est);
        }
        Some(base + (est - base) * self.decay_factor(now_ns, self.updated_at.load(Ordering::Relaxed)))
    }

    /// The latency estimate in nanoseconds at `now_ns`, decayed towards `target` instead of
    /// the node's own baseline; `None` before the first sample.
    ///
    /// With `target` the latency of a peer, a node that has had no traffic for a while looks
    /// more and more like that peer, so it is tried again; with the node's own baseline it
    /// would stay as slow as it last was.
    #[inline]
    pub fn latency_toward(&self, now_ns: u64, target: f64) -> Option<f64> {
        let est = f64::from_bits(self.latency_bits.load(Ordering::Relaxed));
        if est.is_nan() {
            return None;
        }
        Some(target + (est - target) * self.decay_factor(now_ns, self.updated_at.load(Ordering::Relaxed)))
    }

    /// The baseline the latency estimate decays towards (EWMA of successful calls), in
    /// nanoseconds; `None` before the first success.
    #[inline]
    pub fn latency_baseline_ns(&self) -> Option<f64> {
        let v = f64::from_bits(self.baseline_bits.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }

    /// The baseline at `now_ns`, decayed towards `target` over the time since it last moved:
    /// `target + (baseline - target) · exp(-Δt/τ)`; `None` before the first success.
    ///
    /// The usual latency of a node that gets no calls fades towards `target` (a peer's), so a
    /// region avoided as slow is tried again after a while instead of never.
    #[inline]
    pub fn baseline_toward(&self, now_ns: u64, target: f64) -> Option<f64> {
        let base = f64::from_bits(self.baseline_bits.load(Ordering::Relaxed));
        if base.is_nan() {
            return None;
        }
        Some(target + (base - target) * self.decay_factor(now_ns, self.baseline_at.load(Ordering::Relaxed)))
    }

    /// The error rate as last updated, before any decay: at least
    /// [`error_rate_at`](Self::error_rate_at) for any time since. One atomic load, for pick
    /// paths that can rule a case out with a bound before paying for the decay.
    #[inline]
    pub fn error_rate_bound(&self) -> f64 {
        f64::from_bits(self.error_bits.load(Ordering::Relaxed))
    }

    /// The decayed error rate at `now_ns` (nanoseconds since the epoch).
    #[inline]
    pub fn error_rate_at(&self, now_ns: u64) -> f64 {
        let err = f64::from_bits(self.error_bits.load(Ordering::Relaxed));
        if err == 0.0 {
            return 0.0;
        }
        err * self.decay_factor(now_ns, self.updated_at.load(Ordering::Relaxed))
    }

    /// [`latency_estimate_ns`](Self::latency_estimate_ns) as a `Duration`.
    pub fn latency_estimate(&self, now: Instant) -> Option<Duration> {
        self.latency_estimate_ns(now).map(|ns| Duration::from_nanos(ns as u64))
    }

    /// The decayed error rate in `0.0..=1.0` at `now`; 0 before any outcome.
    #[inline]
    pub fn error_rate(&self, now: Instant) -> f64 {
        let err = f64::from_bits(self.error_bits.load(Ordering::Relaxed));
        if err == 0.0 {
            return 0.0;
        }
        err * self.decay_factor(self.nanos(now), self.updated_at.load(Ordering::Relaxed))
    }

    /// Latency and error rate at `now` with one shared decay factor: the cheapest read for
    /// strategies that need both.
    #[inline]
    pub fn latency_and_error(&self, now: Instant) -> (Option<f64>, f64) {
        self.latency_and_error_at(self.nanos(now))
    }

    /// [`latency_and_error`](Self::latency_and_error) with `now` as nanoseconds since the epoch.
    #[inline]
    pub fn latency_and_error_at(&self, now_ns: u64) -> (Option<f64>, f64) {
        let est = f64::from_bits(self.latency_bits.load(Ordering::Relaxed));
        let base = f64::from_bits(self.baseline_bits.load(Ordering::Relaxed));
        let err = f64::from_bits(self.error_bits.load(Ordering::Relaxed));
        let d = self.decay_factor(now_ns, self.updated_at.load(Ordering::Relaxed));
        let latency = if base.is_nan() { est } else { base + (est - base) * d };
        ((!est.is_nan()).then_some(latency), err * d)
    }

    /// The probe round-trip estimate, or `None` before the first probe.
    pub fn probe_rtt(&self) -> Option<Duration> {
        let v = f64::from_bits(self.probe_rtt_bits.load(Ordering::Relaxed));
        (!v.is_nan()).then(|| Duration::from_nanos(v as u64))
    }

    /// [`probe_rtt`](Self::probe_rtt) in nanoseconds, for the pick path.
    #[inline]
    pub fn probe_rtt_ns(&self) -> Option<f64> {
        let v = f64::from_bits(self.probe_rtt_bits.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }

    // ----- state -----

    /// Current health verdict.
    pub fn health(&self) -> HealthState {
        HealthState::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Sets the health verdict and returns the previous one.
    pub fn set_health(&self, state: HealthState) -> HealthState {
        HealthState::from_u8(self.health.swap(state.to_u8(), Ordering::Relaxed))
    }

    /// Current administrative state.
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Enables or drains the node. Health is unaffected.
    pub fn set_admin(&self, state: AdminState) {
        self.admin.store(state.to_u8(), Ordering::Relaxed);
    }

    /// Excludes the node from new calls until `until` (an ejection or a Retry-After cooldown),
    /// or lifts the exclusion with `None`.
    pub fn set_excluded_until(&self, until: Option<Instant>) {
        let v = until.map_or(0, |t| self.nanos(t).max(1));
        self.excluded_until.store(v, Ordering::Relaxed);
    }

    /// Extends the exclusion to at least `until`; never shortens it.
    pub fn extend_exclusion(&self, until: Instant) {
        self.excluded_until.fetch_max(self.nanos(until).max(1), Ordering::Relaxed);
    }

    /// The end of the current or last exclusion, if one was set.
    pub fn excluded_until(&self) -> Option<Instant> {
        match self.excluded_until.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.instant(ns)),
        }
    }

    /// Whether the node is excluded at `now`.
    pub fn is_excluded(&self, now: Instant) -> bool {
        let until = self.excluded_until.load(Ordering::Relaxed);
        until != 0 && self.nanos(now) < until
    }

    /// Whether the node may take a new call at `now`, and if not, why.
    ///
    /// Order of precedence: drained, then unhealthy, then excluded.
    pub fn availability(&self, now: Instant) -> Availability {
        if self.admin() == AdminState::Drained {
            return Availability::Drained;
        }
        if !self.health().is_serving() {
            return Availability::Unhealthy;
        }
        let until = self.excluded_until.load(Ordering::Relaxed);
        if until != 0 && self.nanos(now) < until {
            return Availability::Excluded { until: self.instant(until) };
        }
        Availability::Eligible
    }

    /// Shortcut for `availability(now).is_eligible()`.
    #[inline]
    pub fn is_eligible(&self, now: Instant) -> bool {
        self.availability(now).is_eligible()
    }

    // ----- slow start -----

    /// Starts ramping the node's effective weight from `floor` (clamped to `0.0..=1.0`) at
    /// `now` linearly up to full weight at `now + window`.
    pub fn begin_slow_start(&self, now: Instant, window: Duration, floor: f64) {
        let floor = if floor.is_nan() { 1.0 } else { floor.clamp(0.0, 1.0) };
        self.slow_start_window_ns.store(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.slow_start_floor_bits.store(floor.to_bits(), Ordering::Relaxed);
        self.slow_start_from.store(self.nanos(now).saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a slow start was begun and not ended (it may have run its full window).
    /// A cheap check that spares callers converting the time when no node is ramping.
    #[inline]
    pub fn in_slow_start(&self) -> bool {
        self.slow_start_from.load(Ordering::Relaxed) != 0
    }

    /// Ends any slow start at once.
    pub fn end_slow_start(&self) {
        self.slow_start_from.store(0, Ordering::Relaxed);
    }

    /// The slow-start multiplier for the node's weight at `now`, in `floor..=1.0`; 1.0 when the
    /// node is not ramping.
    ///
    /// `floor + (1 - floor) · elapsed / window`, the linear ramp HAProxy uses; Envoy's default
    /// aggression of 1.0 gives the same curve.
    #[inline]
    pub fn weight_factor(&self, now: Instant) -> f64 {
        if self.slow_start_from.load(Ordering::Relaxed) == 0 {
            return 1.0;
        }
        self.weight_factor_at(self.nanos(now))
    }

    /// [`weight_factor`](Self::weight_factor) with `now` as nanoseconds since the epoch.
    #[inline]
    pub fn weight_factor_at(&self, now_ns: u64) -> f64 {
        let from = self.slow_start_from.load(Ordering::Relaxed);
        if from == 0 {
            return 1.0;
        }
        let window = self.slow_start_window_ns.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(from - 1);
        if elapsed >= window {
            return 1.0;
        }
        let floor = f64::from_bits(self.slow_start_floor_bits.load(Ordering::Relaxed));
        floor + (1.0 - floor) * (elapsed as f64 / window as f64)
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds from `epoch` to `t`, 0 if `t` is earlier, saturating at `u64::MAX`.
#[inline]
pub(crate) fn nanos_since(epoch: Instant, t: Instant) -> u64 {
    let d = t.saturating_duration_since(epoch);
    d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
}

/// `e^(-x)` for `x ≥ 0`, to about 2e-5 relative error, without a libm call.
///
/// Splits `e^(-x) = 2^k · 2^f` with integer `k` and `f ∈ [0, 1)`, and evaluates `2^f` with a
/// degree-6 Taylor series of `e^(f·ln 2)`. The read path of every strategy that decays
/// estimates runs this once per node, so it matters at hundreds of nodes.
#[inline]
pub(crate) fn exp_neg(x: f64) -> f64 {
    if x.is_nan() || x > 700.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let y = -x * std::f64::consts::LOG2_E;
    let mut k = y as i64; // truncates towards zero: ceil for negative y
    if (k as f64) > y {
        k -= 1;
    }
    let t = (y - k as f64) * std::f64::consts::LN_2;
    let p =
        1.0 + t * (1.0 + t * (1.0 / 2.0 + t * (1.0 / 6.0 + t * (1.0 / 24.0 + t * (1.0 / 120.0 + t * (1.0 / 720.0))))));
    // k ≥ -1010 here since x ≤ 700, so 2^k is a normal number.
    p * f64::from_bits(((k + 1023) as u64) << 52)
}

impl fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeMetrics")
            .field("in_flight", &self.in_flight())
            .field("successes", &self.successes())
            .field("failures", &self.failures())
            .field("consecutive_failures", &self.consecutive_failures())
            .field("health", &self.health())
            .field("admin", &self.admin())
            .field("excluded_until", &self.excluded_until())
            .field("concurrency_limit", &self.concurrency_limit())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (Arc<NodeMetrics>, Instant) {
        let t0 = Instant::now();
        (Arc::new(NodeMetrics::new(t0, DEFAULT_METRICS_DECAY)), t0)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exp_neg_matches_std() {
        let mut x = 0.0;
        while x < 700.0 {
            let (fast, exact) = (exp_neg(x), (-x).exp());
            assert!((fast - exact).abs() <= exact * 2e-5 + 1e-300, "x={x}: {fast} vs {exact}");
            x = x * 1.01 + 1e-4;
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-1.0), 1.0);
        assert_eq!(exp_neg(1e6), 0.0);
        assert_eq!(exp_neg(f64::NAN), 0.0);
        assert_eq!(exp_neg(f64::INFINITY), 0.0);
    }

    #[test]
    fn guard_counts_in_flight() {
        let (m, _) = metrics();
        let a = m.start_request();
        let b = m.start_request();
        assert_eq!(m.in_flight(), 2);
        drop(a);
        assert_eq!(m.in_flight(), 1);
        drop(b);
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn peak_ewma_takes_peaks_at_once_and_decays_to_the_baseline() {
        let (m, t0) = metrics();
        assert_eq!(m.latency_estimate(t0), None);
        m.record_success(100 * MS, t0);
        assert_eq!(m.latency_estimate(t0), Some(100 * MS));
        // A peak replaces the estimate immediately.
        m.record_success(500 * MS, t0);
        assert_eq!(m.latency_estimate(t0), Some(500 * MS));
        // A lower sample at the same instant barely moves it (weight 1 - e^0 = 0).
        m.record_success(10 * MS, t0);
        assert_eq!(m.latency_estimate(t0), Some(500 * MS));
        // The baseline is the plain mean of the first samples.
        let base = (100e6 + 500e6 + 10e6) / 3.0;
        assert!((m.latency_baseline_ns().unwrap() - base).abs() < 1.0);
        // After τ, the estimate read alone has decayed by 1/e towards the baseline.
        let t1 = t0 + DEFAULT_METRICS_DECAY;
        let d = (-1.0f64).exp();
        let est = m.latency_estimate_ns(t1).unwrap();
        let expect = base + (500e6 - base) * d;
        assert!((est - expect).abs() < expect * 1e-4, "{est} vs {expect}");
        // Long idle: the estimate settles at the baseline, never at zero.
        let idle = m.latency_estimate_ns(t0 + 100 * DEFAULT_METRICS_DECAY).unwrap();
        assert!((idle - base).abs() < 1.0, "{idle} vs {base}");
        // Towards another target (a peer's latency) instead.
        let toward = m.latency_toward(m.nanos(t0 + 100 * DEFAULT_METRICS_DECAY), 42e6).unwrap();
        assert!((toward - 42e6).abs() < 1.0);
        // A low sample after τ blends in with weight 1 - 1/e.
        m.record_success(10 * MS, t1);
        let blended = expect * d + 10e6 * (1.0 - d);
        let est = m.latency_estimate_ns(t1).unwrap();
        assert!((est - blended).abs() < blended * 1e-4, "{est} vs {blended}");
    }

    #[test]
    fn baseline_is_a_mean_then_an_ewma_and_a_fresh_sample_wins_after_quiet() {
        let (m, t0) = metrics();
        // A plain mean until `1/n` falls to the EWMA weight.
        let n = (1.0 / DEFAULT_BASELINE_ALPHA) as u32;
        for i in 0..n {
            m.record_success(if i % 2 == 0 { 100 * MS } else { 300 * MS }, t0 + i * MS);
        }
        let base = m.latency_baseline_ns().unwrap();
        assert!((base - 200e6).abs() < 10e6, "{base}");
        // One outlier moves it by the EWMA weight only.
        let at = t0 + n * MS;
        m.record_success(2200 * MS, at);
        let moved = m.latency_baseline_ns().unwrap() - base;
        assert!(moved > 0.0 && moved <= DEFAULT_BASELINE_ALPHA * 2100e6, "{moved}");
        // Decays towards a peer's value while idle.
        let later = m.nanos(at + 10 * DEFAULT_METRICS_DECAY);
        assert!((m.baseline_toward(later, 50e6).unwrap() - 50e6).abs() < 2e4);
        // After a long quiet spell a sample weighs no more than usual, either way.
        for (ms, k) in [(5000, 10), (40, 20)] {
            let before = m.latency_baseline_ns().unwrap();
            m.record_success(ms * MS, at + k * DEFAULT_METRICS_DECAY);
            let moved = (m.latency_baseline_ns().unwrap() - before).abs();
            assert!(moved <= DEFAULT_BASELINE_ALPHA * 5000e6, "{moved}");
        }
    }

    #[test]
    fn a_penalty_without_successes_does_not_decay() {
        let (m, t0) = metrics();
        m.record_failure(t0);
        m.record_penalty(5000 * MS, t0);
        assert_eq!(m.latency_estimate(t0 + 100 * DEFAULT_METRICS_DECAY), Some(5000 * MS));
    }

    #[test]
    fn learned_limit_is_aimd_and_capped_by_the_configured_one() {
        let (m, t0) = metrics();
        assert_eq!(m.concurrency_limit(), None);
        assert_eq!(m.concurrency_limit_or_inf(), f64::INFINITY);
        // No limit is learned from successes alone.
        m.record_success(100 * MS, t0);
        assert_eq!(m.learned_limit(), None);
        // The first 429 starts from the calls in flight.
        let guards: Vec<_> = (0..20).map(|_| m.start_request()).collect();
        m.record_throttle(t0);
        assert!((m.learned_limit().unwrap() - 18.0).abs() < 1e-9);
        // The other calls of the same overload do not lower it again...
        m.record_throttle(t0 + LIMIT_DROP_WINDOW / 2);
        assert!((m.learned_limit().unwrap() - 18.0).abs() < 1e-9);
        // ...a later 429 does.
        m.record_throttle(t0 + LIMIT_DROP_WINDOW);
        assert!((m.learned_limit().unwrap() - 16.2).abs() < 1e-9);
        let t0 = t0 + LIMIT_DROP_WINDOW;
        assert_eq!(m.concurrency_limit(), m.learned_limit());
        // Successes let it regrow along the cubic: flat near the old limit, past it later.
        let k = DEFAULT_LIMIT_REGROWTH;
        m.record_success(100 * MS, t0 + k / 2);
        let half = m.learned_limit().unwrap();
        assert!(half > 16.2 && half < 18.0, "{half}");
        m.record_success(100 * MS, t0 + k);
        assert!((m.learned_limit().unwrap() - 18.0).abs() < 1e-3);
        m.record_success(100 * MS, t0 + k + 2 * LIMIT_PROBE_DOUBLING);
        let probed = m.learned_limit().unwrap();
        assert!((probed - 18.0 * 4.0).abs() < 1e-3, "{probed}");
        // A 429 is neither a failure nor a latency peak.
        assert_eq!(m.failures(), 0);
        assert_eq!(m.error_rate(t0), 0.0);
        assert_eq!(m.latency_estimate(t0), Some(100 * MS));
        // The configured limit caps the learned one.
        m.set_max_concurrency(Some(10));
        assert_eq!(m.max_concurrency(), Some(10));
        assert_eq!(m.concurrency_limit(), Some(10.0));
        m.record_throttle(t0 + 10 * k);
        assert_eq!(m.concurrency_limit(), Some(9.0));
        m.reset_learned_limit();
        assert_eq!(m.concurrency_limit(), Some(10.0));
        m.set_max_concurrency(None);
        assert_eq!(m.concurrency_limit(), None);
        // A 429 with few calls in flight bounds the limit by them.
        drop(guards);
        m.record_throttle(t0 + 12 * k);
        assert_eq!(m.concurrency_limit(), Some(MIN_CONCURRENCY_LIMIT));
        // Never below the floor.
        for i in 0..100 {
            m.record_throttle(t0 + 11 * k + i * LIMIT_DROP_WINDOW);
        }
        assert_eq!(m.concurrency_limit(), Some(MIN_CONCURRENCY_LIMIT));
    }

    #[test]
    fn a_429_meeting_a_lone_call_keeps_what_the_node_served() {
        let (m, t0) = metrics();
        // The node served 8 calls at once...
        let guards: Vec<_> = (0..8).map(|_| m.start_request()).collect();
        m.record_success(100 * MS, t0);
        drop(guards);
        // ...then a quota 429 meets one lone call: the limit starts from the 8, not from 1.
        let lone = m.start_request();
        m.record_throttle(t0);
        assert!((m.learned_limit().unwrap() - 7.2).abs() < 1e-9, "{:?}", m.learned_limit());
        // After a cooldown the next lone call meets another 429: nothing was served since, so
        // the limit only backs off.
        m.record_throttle(t0 + 2 * LIMIT_DROP_WINDOW);
        assert!((m.learned_limit().unwrap() - 6.48).abs() < 1e-9, "{:?}", m.learned_limit());
        // Served 3 at once since: a 429 then bounds the limit by those 3.
        let two: Vec<_> = (0..2).map(|_| m.start_request()).collect();
        m.record_success(100 * MS, t0 + 3 * LIMIT_DROP_WINDOW);
        drop(two);
        m.record_throttle(t0 + 4 * LIMIT_DROP_WINDOW);
        assert!((m.learned_limit().unwrap() - 2.7).abs() < 1e-9, "{:?}", m.learned_limit());
        drop(lone);
    }

    #[test]
    fn a_capacity_drop_is_learned_from_new_calls_not_from_those_draining() {
        let (m, t0) = metrics();
        // The node serves 48 at once...
        let mut old: Vec<_> = (0..48).map(|_| m.start_request()).collect();
        m.record_success(400 * MS, t0);
        // ...then its capacity falls to 16: the first 429 meets the 48 it was serving.
        let t1 = t0 + 10 * LIMIT_DROP_WINDOW;
        m.record_throttle(t1);
        assert!((m.learned_limit().unwrap() - 43.2).abs() < 1e-9, "{:?}", m.learned_limit());
        // During the Retry-After cooldown the calls accepted before the drop finish, many
        // still in flight: they prove nothing about the capacity now.
        for i in 0..8 {
            old.pop();
            m.record_success(1500 * MS, t1 + (i + 1) * 100 * MS);
        }
        // After the cooldown 16 new calls are on their way and the 17th meets a 429: the
        // limit comes from those 16, not from the 40 that were draining.
        old.truncate(0);
        let new: Vec<_> = (0..16).map(|_| m.start_request()).collect();
        m.record_throttle(t1 + 2 * LIMIT_DROP_WINDOW);
        assert!((m.learned_limit().unwrap() - 14.4).abs() < 1e-9, "{:?}", m.learned_limit());
        // Calls that started after that drop do count: 10 served at once bound the next drop,
        // even when the 429 meets a lone call.
        let t2 = t1 + 2 * LIMIT_DROP_WINDOW;
        drop(new);
        let served: Vec<_> = (0..10).map(|_| m.start_request()).collect();
        m.record_success(400 * MS, t2 + 500 * MS);
        drop(served);
        let lone = m.start_request();
        m.record_throttle(t2 + 2 * LIMIT_DROP_WINDOW);
        assert!((m.learned_limit().unwrap() - 9.0).abs() < 1e-9, "{:?}", m.learned_limit());
        drop(lone);
    }

    #[test]
    fn failing_needs_a_streak_or_no_success_and_lapses() {
        let (m, t0) = metrics();
        assert!(!m.is_failing(t0));
        // Only failures: failing from the first one.
        m.record_failure(t0);
        assert!(m.is_failing(t0));
        assert!(m.is_failing(t0 + FAILING_HOLD - MS));
        assert!(!m.is_failing(t0 + FAILING_HOLD));
        // A node that has succeeded needs a streak.
        m.record_success(MS, t0);
        m.record_failure(t0);
        m.record_failure(t0);
        assert!(!m.is_failing(t0));
        m.record_failure(t0);
        assert!(m.is_failing(t0));
        m.record_success(MS, t0);
        assert!(!m.is_failing(t0));
    }

    #[test]
    fn penalty_raises_and_never_lowers() {
        let (m, t0) = metrics();
        m.record_success(200 * MS, t0);
        m.record_penalty(50 * MS, t0);
        assert_eq!(m.latency_estimate(t0), Some(200 * MS));
        m.record_penalty(5000 * MS, t0);
        assert_eq!(m.latency_estimate(t0), Some(5000 * MS));
        assert_eq!(m.successes(), 1);
        assert_eq!(m.failures(), 0);
    }

    #[test]
    fn error_rate_moves_by_alpha_and_decays() {
        let (m, t0) = metrics();
        assert_eq!(m.error_rate(t0), 0.0);
        m.record_failure(t0);
        assert!((m.error_rate(t0) - 0.1).abs() < 1e-12);
        m.record_failure(t0);
        assert!((m.error_rate(t0) - 0.19).abs() < 1e-12);
        assert_eq!(m.consecutive_failures(), 2);
        m.record_success(MS, t0);
        assert_eq!(m.consecutive_failures(), 0);
        assert!((m.error_rate(t0) - 0.171).abs() < 1e-12);
        let later = t0 + 3 * DEFAULT_METRICS_DECAY;
        assert!((m.error_rate(later) - 0.171 * (-3.0f64).exp()).abs() < 0.171 * (-3.0f64).exp() * 1e-4);
        let (lat, err) = m.latency_and_error(later);
        assert!(lat.is_some());
        assert!((err - m.error_rate(later)).abs() < 1e-15);
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        let (m, t0) = metrics();
        m.record_success(Duration::MAX, t0);
        let est = m.latency_estimate_ns(t0).unwrap();
        assert!(est.is_finite());
    }

    #[test]
    fn availability_precedence() {
        let (m, t0) = metrics();
        assert_eq!(m.availability(t0), Availability::Eligible);
        m.set_excluded_until(Some(t0 + 5 * MS));
        assert_eq!(m.availability(t0), Availability::Excluded { until: t0 + 5 * MS });
        assert!(m.is_eligible(t0 + 5 * MS));
        m.extend_exclusion(t0 + MS);
        assert_eq!(m.excluded_until(), Some(t0 + 5 * MS));
        m.set_health(HealthState::Unhealthy);
        assert_eq!(m.availability(t0), Availability::Unhealthy);
        m.set_admin(AdminState::Drained);
        assert_eq!(m.availability(t0), Availability::Drained);
        m.set_admin(AdminState::Enabled);
        assert_eq!(m.set_health(HealthState::Healthy), HealthState::Unhealthy);
        m.set_excluded_until(None);
        assert!(m.is_eligible(t0));
    }

    #[test]
    fn slow_start_ramps_linearly() {
        let (m, t0) = metrics();
        assert_eq!(m.weight_factor(t0), 1.0);
        let window = Duration::from_secs(30);
        m.begin_slow_start(t0, window, 0.1);
        assert!((m.weight_factor(t0) - 0.1).abs() < 1e-12);
        assert!((m.weight_factor(t0 + window / 2) - 0.55).abs() < 1e-9);
        assert_eq!(m.weight_factor(t0 + window), 1.0);
        m.begin_slow_start(t0, window, 0.1);
        m.end_slow_start();
        assert_eq!(m.weight_factor(t0), 1.0);
    }

    #[test]
    fn probe_rtt_is_separate() {
        let (m, t0) = metrics();
        m.record_probe_rtt(20 * MS);
        m.record_connect_time(30 * MS);
        assert_eq!(m.probe_rtt(), Some(Duration::from_nanos(23_000_000)));
        assert_eq!(m.latency_estimate(t0), None);
        assert_eq!(m.successes(), 0);
    }
}
