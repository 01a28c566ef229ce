//! Settings of the active prober and of passive outlier detection.

use std::time::Duration;

use crate::ConfigError;

// ----- active probing -----

/// Time between two probes of a healthy (or not yet judged) node: one second.
///
/// With [`DEFAULT_FALL`] = 2 a node that starts refusing connections is marked unhealthy
/// after two probes, i.e. within about 1–2.2 s of the outage; one that hangs needs one more
/// [`DEFAULT_PROBE_TIMEOUT`], about 2–3.2 s.
/// One `GET /models` per second per client is far below any provider's rate limit and costs
/// no tokens.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Random spread around each probe interval: ±100 ms (10 %), so that many clients started
/// together do not probe in lock step.
pub const DEFAULT_PROBE_JITTER: Duration = Duration::from_millis(100);

/// Upper bound of the random delay before a node's first probe: one interval, so that the
/// first round is spread over the first second instead of firing all at once.
pub const DEFAULT_INITIAL_JITTER: Duration = Duration::from_secs(1);

/// How long one probe may take: one second.
///
/// `GET /models` is a cheap metadata call; over a kept-alive connection it answers within
/// one intercontinental round trip (≤ 300 ms), so a second means the node is in trouble.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Consecutive successful probes that turn an unhealthy node healthy again: 2.
pub const DEFAULT_RISE: u32 = 2;

/// Consecutive failed probes that turn a node unhealthy: 2.
///
/// One failure is too twitchy (a single lost packet would flap the node); 3 at one second
/// would push detection past the 2 s goal.
pub const DEFAULT_FALL: u32 = 2;

/// Time between two probes of an unhealthy node: 500 ms, so that with [`DEFAULT_RISE`] = 2 a
/// recovery is seen within about one second.
pub const DEFAULT_UNHEALTHY_INTERVAL: Duration = Duration::from_millis(500);

/// Grid that probe start instants are aligned to: 50 ms.
///
/// Without alignment, 1,000 nodes probed once a second with random jitter wake the runtime
/// about 1,000 times a second, one probe at a time. The `probe_round` bench measured the
/// prober side at about 10 % of a core that way, 6.5 % with a 10 ms grid and 4.5 % with this
/// 50 ms grid, where the probes that fall into the same 50 ms share one wake-up.
/// 50 ms is noise next to the ~2 s detection time, and jitter and initial jitter are still
/// drawn in whole steps of it (±100 ms gives five choices, the first probe 21).
pub const DEFAULT_TIMER_GRANULARITY: Duration = Duration::from_millis(50);

// ----- passive outlier detection -----

/// Consecutive failed calls that eject a node: 5 (Envoy's `consecutive_5xx`).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;

/// Failure share over the window above which a node is ejected: 50 %.
///
/// Envoy's failure-percentage rule uses 85 % and ships disabled; LLM regions are few and a
/// region failing every other call is not worth keeping, so the bar is lower here.
pub const DEFAULT_FAILURE_RATE_THRESHOLD: f64 = 0.5;

/// Length of the sliding window of the failure-rate rule: 10 s (gRPC A50's interval).
pub const DEFAULT_FAILURE_RATE_WINDOW: Duration = Duration::from_secs(10);

/// Calls the window must hold before the failure-rate rule applies: 10.
pub const DEFAULT_FAILURE_RATE_MIN_REQUESTS: u32 = 10;

/// Length of a first ejection: 10 s. Repeated ejections last `base × multiplier`.
///
/// Shorter than Envoy's 30 s because a region set is small: keeping a good region out costs
/// a large share of capacity, and the active prober can end an ejection early anyway.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(10);

/// Cap of the ejection time: 300 s, as in Envoy and gRPC A50.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);

/// Good behaviour that takes one step off the ejection multiplier: 30 s without being
/// ejected.
pub const DEFAULT_EJECTION_DECAY: Duration = Duration::from_secs(30);

/// Largest share of nodes that may be ejected at once: 50 %.
///
/// Envoy's 10 % would never eject anything in a set of fewer than ten regions.
/// See [`OutlierConfig`] for the "at least one" rule.
pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 50;

/// Cap on a Retry-After cooldown: 60 s. Some providers send hours; the client should fail
/// over instead of waiting that long.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Duration of the slow-start ramp after a node comes back: 30 s (Envoy's example value).
pub const DEFAULT_SLOW_START_WINDOW: Duration = Duration::from_secs(30);

/// Weight factor at the start of the slow-start ramp: 10 % (Envoy's `min_weight_percent`).
pub const DEFAULT_SLOW_START_FLOOR: f64 = 0.10;

/// Latency peak recorded for a failed call (connect error, timeout, 5xx): 5 s, as Linkerd's load
/// biaser does. A 429 records none: it lowers the concurrency limit instead.
///
/// It makes latency-aware strategies avoid the node for a while; the peak decays like any
/// other sample.
pub const DEFAULT_ERROR_PENALTY: Duration = Duration::from_secs(5);

/// Settings of the active prober. Build with [`ProbeConfig::builder`] or take the
/// [`Default`].
///
/// | setting | default |
/// |---|---|
/// | `interval` | [`DEFAULT_PROBE_INTERVAL`] (1 s) |
/// | `jitter` | [`DEFAULT_PROBE_JITTER`] (±100 ms) |
/// | `initial_jitter` | [`DEFAULT_INITIAL_JITTER`] (up to 1 s) |
/// | `timeout` | [`DEFAULT_PROBE_TIMEOUT`] (1 s) |
/// | `rise` | [`DEFAULT_RISE`] (2) |
/// | `fall` | [`DEFAULT_FALL`] (2) |
/// | `unhealthy_interval` | [`DEFAULT_UNHEALTHY_INTERVAL`] (500 ms) |
/// | `timer_granularity` | [`DEFAULT_TIMER_GRANULARITY`] (50 ms) |
///
/// The delay between the starts of two probes of one node is drawn uniformly from
/// `interval ± jitter`. While the node is unhealthy, `unhealthy_interval` is used and the
/// jitter is scaled by the same ratio (`jitter × unhealthy_interval / interval`).
/// The first probe of each node starts after a delay drawn from `0..=initial_jitter`.
/// Both random parts are drawn in whole steps of `timer_granularity` (when the jitter is at
/// least one step), so that probe starts line up on a grid and share runtime wake-ups.
/// A probe that overruns its interval (a timeout longer than the interval) is followed by
/// the next one at the next grid point, never by a burst of catch-up probes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    interval: Duration,
    jitter: Duration,
    initial_jitter: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
    unhealthy_interval: Duration,
    timer_granularity: Duration,
    seed: Option<u64>,
}

/// Builder of [`ProbeConfig`]; starts from the defaults.
#[derive(Debug, Clone)]
pub struct ProbeConfigBuilder {
    config: ProbeConfig,
}

/// Settings of passive outlier detection, Retry-After cooldowns and slow start.
/// Build with [`OutlierConfig::builder`] or take the [`Default`].
///
/// | setting | default |
/// |---|---|
/// | `consecutive_failures` | [`DEFAULT_CONSECUTIVE_FAILURES`] (5) |
/// | `failure_rate_threshold` | [`DEFAULT_FAILURE_RATE_THRESHOLD`] (0.5) |
/// | `failure_rate_window` | [`DEFAULT_FAILURE_RATE_WINDOW`] (10 s) |
/// | `failure_rate_min_requests` | [`DEFAULT_FAILURE_RATE_MIN_REQUESTS`] (10) |
/// | `base_ejection` | [`DEFAULT_BASE_EJECTION`] (10 s) |
/// | `max_ejection` | [`DEFAULT_MAX_EJECTION`] (300 s) |
/// | `ejection_decay` | [`DEFAULT_EJECTION_DECAY`] (30 s) |
/// | `max_ejection_percent` | [`DEFAULT_MAX_EJECTION_PERCENT`] (50) |
/// | `retry_after_cap` | [`DEFAULT_RETRY_AFTER_CAP`] (60 s) |
/// | `slow_start_window` | [`DEFAULT_SLOW_START_WINDOW`] (30 s) |
/// | `slow_start_floor` | [`DEFAULT_SLOW_START_FLOOR`] (0.10) |
/// | `error_penalty` | [`DEFAULT_ERROR_PENALTY`] (5 s) |
///
/// **Ejection time** is `min(base_ejection × multiplier, max_ejection)`. The multiplier
/// grows by one with each ejection and shrinks by one for each full `ejection_decay` that
/// passed since the last ejection ended (gRPC A50 / Envoy).
///
/// **Ejection cap:** at most `⌊n × max_ejection_percent / 100⌋` of the `n` nodes are ejected
/// at once, but at least one when `n ≥ 2` and the percentage is not zero (Envoy's
/// `always_eject_one_host`): with a 50 % cap and 3 regions one may be ejected, with 2
/// regions one. A lone node is never ejected, since there is nowhere else to go.
/// `max_ejection_percent = 0` turns ejection off. Retry-After cooldowns are an explicit
/// request of the server and are not counted against the cap.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    consecutive_failures: u32,
    failure_rate_threshold: f64,
    failure_rate_window: Duration,
    failure_rate_min_requests: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    ejection_decay: Duration,
    max_ejection_percent: u8,
    retry_after_cap: Duration,
    slow_start_window: Duration,
    slow_start_floor: f64,
    error_penalty: Duration,
}

/// Builder of [`OutlierConfig`]; starts from the defaults.
#[derive(Debug, Clone)]
pub struct OutlierConfigBuilder {
    config: OutlierConfig,
}

// ===== impl ProbeConfig =====

impl ProbeConfig {
    /// A builder starting from the defaults listed on [`ProbeConfig`].
    pub fn builder() -> ProbeConfigBuilder {
        ProbeConfigBuilder { config: Self::default() }
    }

    /// Time between probes of a node that is not unhealthy.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Random spread (±) around `interval`.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// Upper bound of the random delay before a node's first probe.
    pub fn initial_jitter(&self) -> Duration {
        self.initial_jitter
    }

    /// Time limit of one probe.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Consecutive successes that turn an unhealthy node healthy.
    pub fn rise(&self) -> u32 {
        self.rise
    }

    /// Consecutive failures that turn a node unhealthy.
    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// Time between probes of an unhealthy node.
    pub fn unhealthy_interval(&self) -> Duration {
        self.unhealthy_interval
    }

    /// Grid that probe start instants are aligned to.
    pub fn timer_granularity(&self) -> Duration {
        self.timer_granularity
    }

    /// Seed of the jitter random numbers, if fixed.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The jitter that applies to a base interval: `jitter` scaled by `base / interval`.
    pub(crate) fn jitter_for(&self, base: Duration) -> Duration {
        if base == self.interval {
            return self.jitter;
        }
        let scaled = self.jitter.as_nanos() * base.as_nanos() / self.interval.as_nanos().max(1);
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_PROBE_INTERVAL,
            jitter: DEFAULT_PROBE_JITTER,
            initial_jitter: DEFAULT_INITIAL_JITTER,
            timeout: DEFAULT_PROBE_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            unhealthy_interval: DEFAULT_UNHEALTHY_INTERVAL,
            timer_granularity: DEFAULT_TIMER_GRANULARITY,
            seed: None,
        }
    }
}

// ===== impl ProbeConfigBuilder =====

impl ProbeConfigBuilder {
    /// Time between probes of a node that is not unhealthy. Must be greater than zero.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self
    }

    /// Random spread (±) around the interval. Must be less than `interval`.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// Upper bound of the random delay before each node's first probe; zero probes at once.
    pub fn initial_jitter(mut self, initial_jitter: Duration) -> Self {
        self.config.initial_jitter = initial_jitter;
        self
    }

    /// Time limit of one probe. Must be greater than zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Consecutive successes that turn an unhealthy node healthy. At least 1.
    pub fn rise(mut self, rise: u32) -> Self {
        self.config.rise = rise;
        self
    }

    /// Consecutive failures that turn a node unhealthy. At least 1.
    pub fn fall(mut self, fall: u32) -> Self {
        self.config.fall = fall;
        self
    }

    /// Time between probes of an unhealthy node. Must be greater than zero.
    pub fn unhealthy_interval(mut self, unhealthy_interval: Duration) -> Self {
        self.config.unhealthy_interval = unhealthy_interval;
        self
    }

    /// Grid that probe start instants are aligned to; zero turns alignment off.
    pub fn timer_granularity(mut self, granularity: Duration) -> Self {
        self.config.timer_granularity = granularity;
        self
    }

    /// Fixes the seed of the jitter random numbers, for reproducible tests.
    /// Each node's generator is seeded with this value mixed with the node index.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Validates and returns the config.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when an interval or the timeout is zero, `rise` or `fall` is
    /// zero, or the jitter is not below the interval.
    pub fn build(self) -> Result<ProbeConfig, ConfigError> {
        let c = self.config;
        if c.interval.is_zero() {
            return Err(ConfigError::invalid("interval", "must be greater than zero"));
        }
        if c.unhealthy_interval.is_zero() {
            return Err(ConfigError::invalid("unhealthy_interval", "must be greater than zero"));
        }
        if c.timeout.is_zero() {
            return Err(ConfigError::invalid("timeout", "must be greater than zero"));
        }
        if c.jitter >= c.interval {
            return Err(ConfigError::invalid("jitter", "must be less than the interval"));
        }
        if c.rise == 0 {
            return Err(ConfigError::invalid("rise", "must be at least 1"));
        }
        if c.fall == 0 {
            return Err(ConfigError::invalid("fall", "must be at least 1"));
        }
        Ok(c)
    }
}

// ===== impl OutlierConfig =====

impl OutlierConfig {
    /// A builder starting from the defaults listed on [`OutlierConfig`].
    pub fn builder() -> OutlierConfigBuilder {
        OutlierConfigBuilder { config: Self::default() }
    }

    /// Consecutive failed calls that eject a node.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Failure share above which a node is ejected.
    pub fn failure_rate_threshold(&self) -> f64 {
        self.failure_rate_threshold
    }

    /// Length of the failure-rate window.
    pub fn failure_rate_window(&self) -> Duration {
        self.failure_rate_window
    }

    /// Calls the window must hold before the failure-rate rule applies.
    pub fn failure_rate_min_requests(&self) -> u32 {
        self.failure_rate_min_requests
    }

    /// Length of a first ejection.
    pub fn base_ejection(&self) -> Duration {
        self.base_ejection
    }

    /// Cap of the ejection time.
    pub fn max_ejection(&self) -> Duration {
        self.max_ejection
    }

    /// Time without ejection that takes one step off the ejection multiplier.
    pub fn ejection_decay(&self) -> Duration {
        self.ejection_decay
    }

    /// Largest share of nodes, in percent, that may be ejected at once.
    pub fn max_ejection_percent(&self) -> u8 {
        self.max_ejection_percent
    }

    /// Cap on a Retry-After cooldown.
    pub fn retry_after_cap(&self) -> Duration {
        self.retry_after_cap
    }

    /// Duration of the slow-start ramp.
    pub fn slow_start_window(&self) -> Duration {
        self.slow_start_window
    }

    /// Weight factor at the start of the slow-start ramp.
    pub fn slow_start_floor(&self) -> f64 {
        self.slow_start_floor
    }

    /// Latency peak recorded for a connect error, timeout or 5xx answer.
    pub fn error_penalty(&self) -> Duration {
        self.error_penalty
    }

    /// How many of `nodes` may be ejected at once.
    pub(crate) fn max_ejected(&self, nodes: usize) -> usize {
        if self.max_ejection_percent == 0 || nodes < 2 {
            return 0;
        }
        (nodes * usize::from(self.max_ejection_percent) / 100).max(1)
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            failure_rate_threshold: DEFAULT_FAILURE_RATE_THRESHOLD,
            failure_rate_window: DEFAULT_FAILURE_RATE_WINDOW,
            failure_rate_min_requests: DEFAULT_FAILURE_RATE_MIN_REQUESTS,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            ejection_decay: DEFAULT_EJECTION_DECAY,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            slow_start_window: DEFAULT_SLOW_START_WINDOW,
            slow_start_floor: DEFAULT_SLOW_START_FLOOR,
            error_penalty: DEFAULT_ERROR_PENALTY,
        }
    }
}

// ===== impl OutlierConfigBuilder =====

impl OutlierConfigBuilder {
    /// Consecutive failed calls that eject a node. At least 1.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = n;
        self
    }

    /// Failure share in `(0, 1]` above which a node is ejected.
    pub fn failure_rate_threshold(mut self, threshold: f64) -> Self {
        self.config.failure_rate_threshold = threshold;
        self
    }

    /// Length of the failure-rate window; at least 10 ms.
    /// The window is kept as ten buckets of a tenth of its length each.
    pub fn failure_rate_window(mut self, window: Duration) -> Self {
        self.config.failure_rate_window = window;
        self
    }

    /// Calls the window must hold before the failure-rate rule applies. At least 1;
    /// `u32::MAX` turns the rule off in practice.
    pub fn failure_rate_min_requests(mut self, n: u32) -> Self {
        self.config.failure_rate_min_requests = n;
        self
    }

    /// Length of a first ejection. Must be greater than zero.
    pub fn base_ejection(mut self, base: Duration) -> Self {
        self.config.base_ejection = base;
        self
    }

    /// Cap of the ejection time. Must not be below `base_ejection`.
    pub fn max_ejection(mut self, max: Duration) -> Self {
        self.config.max_ejection = max;
        self
    }

    /// Time without ejection that takes one step off the ejection multiplier. Must be
    /// greater than zero.
    pub fn ejection_decay(mut self, decay: Duration) -> Self {
        self.config.ejection_decay = decay;
        self
    }

    /// Largest share of nodes, in percent (`0..=100`), that may be ejected at once; 0 turns
    /// ejection off.
    pub fn max_ejection_percent(mut self, percent: u8) -> Self {
        self.config.max_ejection_percent = percent;
        self
    }

    /// Cap on a Retry-After cooldown; zero ignores Retry-After.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.config.retry_after_cap = cap;
        self
    }

    /// Duration of the slow-start ramp; zero turns slow start off.
    pub fn slow_start_window(mut self, window: Duration) -> Self {
        self.config.slow_start_window = window;
        self
    }

    /// Weight factor in `0.0..=1.0` at the start of the slow-start ramp.
    pub fn slow_start_floor(mut self, floor: f64) -> Self {
        self.config.slow_start_floor = floor;
        self
    }

    /// Latency peak recorded for a connect error, timeout or 5xx answer; zero records none.
    pub fn error_penalty(mut self, penalty: Duration) -> Self {
        self.config.error_penalty = penalty;
        self
    }

    /// Validates and returns the config.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first field out of range (see each setter).
    pub fn build(self) -> Result<OutlierConfig, ConfigError> {
        let c = self.config;
        if c.consecutive_failures == 0 {
            return Err(ConfigError::invalid("consecutive_failures", "must be at least 1"));
        }
        if !(c.failure_rate_threshold > 0.0 && c.failure_rate_threshold <= 1.0) {
            return Err(ConfigError::invalid("failure_rate_threshold", "must be in (0, 1]"));
        }
        if c.failure_rate_window < Duration::from_millis(10) {
            return Err(ConfigError::invalid("failure_rate_window", "must be at least 10 ms"));
        }
        if c.failure_rate_min_requests == 0 {
            return Err(ConfigError::invalid("failure_rate_min_requests", "must be at least 1"));
        }
        if c.base_ejection.is_zero() {
            return Err(ConfigError::invalid("base_ejection", "must be greater than zero"));
        }
        if c.max_ejection < c.base_ejection {
            return Err(ConfigError::invalid("max_ejection", "must not be below base_ejection"));
        }
        if c.ejection_decay.is_zero() {
            return Err(ConfigError::invalid("ejection_decay", "must be greater than zero"));
        }
        if c.max_ejection_percent > 100 {
            return Err(ConfigError::invalid("max_ejection_percent", "must be at most 100"));
        }
        if !(0.0..=1.0).contains(&c.slow_start_floor) {
            return Err(ConfigError::invalid("slow_start_floor", "must be in 0.0..=1.0"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert_eq!(ProbeConfig::builder().build().unwrap(), ProbeConfig::default());
        assert_eq!(OutlierConfig::builder().build().unwrap(), OutlierConfig::default());
    }

    fn probe_err(b: ProbeConfigBuilder) -> String {
        b.build().unwrap_err().to_string()
    }

    fn outlier_err(b: OutlierConfigBuilder) -> String {
        b.build().unwrap_err().to_string()
    }

    #[test]
    fn probe_config_is_validated() {
        let b = ProbeConfig::builder;
        assert_eq!(probe_err(b().interval(Duration::ZERO)), "invalid interval: must be greater than zero");
        assert_eq!(
            probe_err(b().unhealthy_interval(Duration::ZERO)),
            "invalid unhealthy_interval: must be greater than zero"
        );
        assert_eq!(probe_err(b().timeout(Duration::ZERO)), "invalid timeout: must be greater than zero");
        assert_eq!(probe_err(b().jitter(Duration::from_secs(1))), "invalid jitter: must be less than the interval");
        assert_eq!(probe_err(b().rise(0)), "invalid rise: must be at least 1");
        assert_eq!(probe_err(b().fall(0)), "invalid fall: must be at least 1");
        let c = b().seed(7).initial_jitter(Duration::ZERO).build().unwrap();
        assert_eq!(c.seed(), Some(7));
        assert_eq!(c.initial_jitter(), Duration::ZERO);
    }

    #[test]
    fn outlier_config_is_validated() {
        let b = OutlierConfig::builder;
        assert_eq!(outlier_err(b().consecutive_failures(0)), "invalid consecutive_failures: must be at least 1");
        assert_eq!(outlier_err(b().failure_rate_threshold(0.0)), "invalid failure_rate_threshold: must be in (0, 1]");
        assert_eq!(
            outlier_err(b().failure_rate_threshold(f64::NAN)),
            "invalid failure_rate_threshold: must be in (0, 1]"
        );
        assert_eq!(
            outlier_err(b().failure_rate_window(Duration::from_millis(1))),
            "invalid failure_rate_window: must be at least 10 ms"
        );
        assert_eq!(
            outlier_err(b().failure_rate_min_requests(0)),
            "invalid failure_rate_min_requests: must be at least 1"
        );
        assert_eq!(outlier_err(b().base_ejection(Duration::ZERO)), "invalid base_ejection: must be greater than zero");
        assert_eq!(
            outlier_err(b().max_ejection(Duration::from_secs(1))),
            "invalid max_ejection: must not be below base_ejection"
        );
        assert_eq!(
            outlier_err(b().ejection_decay(Duration::ZERO)),
            "invalid ejection_decay: must be greater than zero"
        );
        assert_eq!(outlier_err(b().max_ejection_percent(101)), "invalid max_ejection_percent: must be at most 100");
        assert_eq!(outlier_err(b().slow_start_floor(1.5)), "invalid slow_start_floor: must be in 0.0..=1.0");
    }

    #[test]
    fn ejection_cap_keeps_at_least_one_but_never_a_lone_node() {
        let check = |percent: u8, nodes: usize, expect: usize| {
            let c = OutlierConfig::builder().max_ejection_percent(percent).build().unwrap();
            assert_eq!(c.max_ejected(nodes), expect, "{percent}% of {nodes}");
        };
        check(50, 1, 0);
        check(50, 2, 1);
        check(50, 3, 1);
        check(50, 10, 5);
        check(10, 3, 1);
        check(100, 4, 4);
        check(0, 10, 0);
    }

    #[test]
    fn jitter_scales_with_the_interval() {
        let c = ProbeConfig::default();
        assert_eq!(c.jitter_for(c.interval()), DEFAULT_PROBE_JITTER);
        assert_eq!(c.jitter_for(c.unhealthy_interval()), Duration::from_millis(50));
    }
}
