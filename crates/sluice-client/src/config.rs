//! Timeouts and failover settings.

use std::time::Duration;

/// Attempts per call, counting the first.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one attempt: to the full body for plain calls, to the response head and
/// first chunk for streams.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed from the response head to the first streamed chunk (time to first token).
pub const DEFAULT_FIRST_CHUNK_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest gap between two chunks of a committed stream (comments count as chunks).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for a whole call, all attempts and (for streams) the whole stream included.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(180);
/// Share of calls that may be retried, on top of the floor.
pub const DEFAULT_RETRY_RATIO: f64 = 0.2;
/// Retries per second always allowed, so that a quiet client can still fail over.
pub const DEFAULT_RETRY_MIN_PER_SEC: u32 = 10;
/// Window over which the retry budget counts calls and retries.
pub const DEFAULT_RETRY_BUDGET_TTL: Duration = Duration::from_secs(10);
/// Longest a call waits for a cooldown to end when no region is eligible only because of
/// cooldowns (within its deadline).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10);
/// How long a region that refused our key (401 or 403) is kept out of new calls.
pub const DEFAULT_CREDENTIALS_EXCLUSION: Duration = Duration::from_secs(60);
/// Longest Retry-After honoured; longer ones are cut to this (Azure has sent a day).
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Timeouts. Every call is bounded by `total`: no call outlives its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect: Duration,
    /// See [`DEFAULT_ATTEMPT_TIMEOUT`].
    pub attempt: Duration,
    /// See [`DEFAULT_FIRST_CHUNK_TIMEOUT`].
    pub first_chunk: Duration,
    /// See [`DEFAULT_TOTAL_TIMEOUT`]; a per-call deadline may shorten it.
    pub total: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle: Duration,
    /// Whether a committed stream that keeps flowing may run past `total`. Off by default:
    /// `total` bounds every call. When on, `total` bounds a stream only until its first
    /// content; after that only the idle timeout ends it (a long answer is not a failure).
    pub streams_outlive_total: bool,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            attempt: DEFAULT_ATTEMPT_TIMEOUT,
            first_chunk: DEFAULT_FIRST_CHUNK_TIMEOUT,
            total: DEFAULT_TOTAL_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            streams_outlive_total: false,
        }
    }
}

impl Timeouts {
    /// Sets the connect timeout.
    pub fn connect(mut self, d: Duration) -> Self {
        self.connect = d;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn attempt(mut self, d: Duration) -> Self {
        self.attempt = d;
        self
    }

    /// Sets the first-chunk (time to first token) timeout.
    pub fn first_chunk(mut self, d: Duration) -> Self {
        self.first_chunk = d;
        self
    }

    /// Sets the idle timeout between the chunks of a committed stream.
    pub fn idle(mut self, d: Duration) -> Self {
        self.idle = d;
        self
    }

    /// Sets the whole-call timeout.
    pub fn total(mut self, d: Duration) -> Self {
        self.total = d;
        self
    }

    /// Lets a committed stream that keeps flowing run past `total` (see the field).
    pub fn streams_outlive_total(mut self, on: bool) -> Self {
        self.streams_outlive_total = on;
        self
    }
}

/// When and how a call moves to another region.
///
/// See the crate docs for the rules; these are the knobs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FailoverPolicy {
    /// Attempts per call, the first included. See [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// Share of calls that may be retried. See [`DEFAULT_RETRY_RATIO`].
    pub retry_ratio: f64,
    /// Retries per second always allowed. See [`DEFAULT_RETRY_MIN_PER_SEC`].
    pub retry_min_per_sec: u32,
    /// Window of the retry budget. See [`DEFAULT_RETRY_BUDGET_TTL`].
    pub retry_budget_ttl: Duration,
    /// Cap on honoured Retry-After values. See [`DEFAULT_RETRY_AFTER_CAP`].
    pub retry_after_cap: Duration,
    /// Re-send calls still waiting for their answer's head on a region whose probes find it
    /// silent (no answer at all) after the attempt started. On by default.
    ///
    /// A rescued call was already sent once; if the first region was merely slow rather than
    /// dead, it may still process (and bill) it. Turn this off for calls that must never be
    /// sent twice.
    pub rescue: bool,
    /// Hedging for non-streaming calls; off by default.
    pub hedge: Option<HedgePolicy>,
    /// Re-send a non-streaming call whose attempt timed out. Off by default: the request was
    /// delivered, so the first region may still generate (and bill) the answer.
    pub retry_on_timeout: bool,
    /// How long a call may wait for the earliest cooldown to end when no region is eligible
    /// only because of cooldowns. See [`DEFAULT_MAX_WAIT`]; zero fails such calls at once.
    pub max_wait: Duration,
    /// How long a region that refused our key is kept out of new calls; its error is logged
    /// once per such spell. See [`DEFAULT_CREDENTIALS_EXCLUSION`].
    pub credentials_exclusion: Duration,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_ratio: DEFAULT_RETRY_RATIO,
            retry_min_per_sec: DEFAULT_RETRY_MIN_PER_SEC,
            retry_budget_ttl: DEFAULT_RETRY_BUDGET_TTL,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            rescue: true,
            hedge: None,
            retry_on_timeout: false,
            max_wait: DEFAULT_MAX_WAIT,
            credentials_exclusion: DEFAULT_CREDENTIALS_EXCLUSION,
        }
    }
}

impl FailoverPolicy {
    /// Sets the attempts per call (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the retry budget: `ratio` retries per call plus `min_per_sec`, over `ttl`.
    pub fn retry_budget(mut self, ratio: f64, min_per_sec: u32, ttl: Duration) -> Self {
        self.retry_ratio = ratio;
        self.retry_min_per_sec = min_per_sec;
        self.retry_budget_ttl = ttl;
        self
    }

    /// Sets the Retry-After cap.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }

    /// Turns in-flight rescue on or off.
    pub fn rescue(mut self, on: bool) -> Self {
        self.rescue = on;
        self
    }

    /// Re-sends non-streaming calls whose attempt timed out (off by default; see
    /// [`FailoverPolicy::retry_on_timeout`]).
    pub fn retry_on_timeout(mut self, on: bool) -> Self {
        self.retry_on_timeout = on;
        self
    }

    /// Sets how long a call may wait for a cooldown to end (see
    /// [`FailoverPolicy::max_wait`]).
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Sets how long a region that refused our key stays out of new calls.
    pub fn credentials_exclusion(mut self, d: Duration) -> Self {
        self.credentials_exclusion = d;
        self
    }

    /// Turns hedging on with `policy`, or off with `None`.
    pub fn hedge(mut self, policy: Option<HedgePolicy>) -> Self {
        self.hedge = policy;
        self
    }
}

/// Hedging: if a non-streaming call has not answered after a delay, a second attempt goes to
/// another region; the first success wins and the other is cancelled. Each hedge spends from
/// the retry budget.
///
/// A hedge doubles the work (and possibly the bill) for the calls it fires on; keep the delay
/// near the tail (p95) so that only slow calls are hedged.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum HedgePolicy {
    /// Hedge after a fixed delay.
    Fixed(Duration),
    /// Hedge after the given percentile (0–100) of this client's recent successful call
    /// latencies; `fallback` until 20 calls have been seen.
    Percentile {
        /// The percentile, such as 95.0.
        percentile: f64,
        /// Delay used before enough calls were seen.
        fallback: Duration,
    },
}
