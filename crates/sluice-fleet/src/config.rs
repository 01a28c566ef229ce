//! Fleet settings: [`FleetBuilder`] and the validated [`FleetConfig`].

use std::{fmt, time::Duration};

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::{FleetError, message::valid_replica};

/// Default key and channel prefix.
pub const DEFAULT_NAMESPACE: &str = "sluice";
/// Default probe lease: a replica that dies stops blocking its regions' probes after this.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);
/// Default bound on one Redis round trip; a slower Redis counts as down.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(500);
/// Default first delay between reconnection attempts; it doubles up to [`DEFAULT_RECONNECT_MAX`].
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Default longest delay between reconnection attempts.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(2);
/// The environment variable read for the Redis password unless another is named.
pub const DEFAULT_PASSWORD_ENV: &str = "SLUICE_REDIS_PASSWORD";
/// The environment variable read for the Redis ACL user name unless another is named.
pub const DEFAULT_USERNAME_ENV: &str = "SLUICE_REDIS_USERNAME";
/// Verdicts queued for sending at most; beyond, new ones are dropped and counted.
pub const QUEUE_CAPACITY: usize = 1024;
/// Default window of the per-region request limits ([`FleetBuilder::region_limit`]).
pub const DEFAULT_LIMIT_WINDOW: Duration = Duration::from_secs(60);

const MIN_LEASE: Duration = Duration::from_millis(30);
const MIN_LIMIT_WINDOW: Duration = Duration::from_millis(100);

/// Builds a [`FleetConfig`].
///
/// Defaults: namespace [`DEFAULT_NAMESPACE`], a random replica id, lease [`DEFAULT_LEASE`],
/// operation timeout [`DEFAULT_OP_TIMEOUT`], reconnection backoff from
/// [`DEFAULT_RECONNECT_MIN`] to [`DEFAULT_RECONNECT_MAX`], and credentials from
/// [`DEFAULT_USERNAME_ENV`] / [`DEFAULT_PASSWORD_ENV`] when those variables are set.
#[derive(Clone)]
pub struct FleetBuilder {
    url: String,
    namespace: String,
    replica_id: Option<String>,
    lease: Duration,
    op_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    password_env: Option<String>,
    username_env: Option<String>,
    shared_retry_budget: bool,
    region_limits: Vec<(String, u32)>,
    limit_window: Duration,
    limit_batch: Option<u32>,
}

/// Validated fleet settings; start fleet mode with [`Fleet::start`](crate::Fleet::start).
///
/// `Debug` shows the Redis host and port, never credentials.
#[derive(Clone)]
pub struct FleetConfig {
    pub(crate) connection: ConnectionInfo,
    pub(crate) namespace: String,
    pub(crate) replica_id: String,
    pub(crate) lease: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) shared_retry_budget: bool,
    /// Per region: the fleet-wide request limit per window, and the batch a replica claims.
    pub(crate) region_limits: Vec<RegionLimit>,
    pub(crate) limit_window: Duration,
}

/// A fleet-wide request limit on one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegionLimit {
    pub(crate) region: String,
    pub(crate) per_window: u32,
    pub(crate) batch: u32,
}

// ===== impl FleetBuilder =====

impl FleetBuilder {
    /// Fleet mode over the Redis at `redis_url` (`redis://host:port/db` or `rediss://…`).
    ///
    /// Prefer passing credentials through the environment (see [`password_env`](Self::password_env))
    /// over writing them into the URL.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            url: redis_url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            replica_id: None,
            lease: DEFAULT_LEASE,
            op_timeout: DEFAULT_OP_TIMEOUT,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            password_env: None,
            username_env: None,
            shared_retry_budget: false,
            region_limits: Vec::new(),
            limit_window: DEFAULT_LIMIT_WINDOW,
            limit_batch: None,
        }
    }

    /// Makes the client's retry budget fleet-wide (off by default): retries across the fleet
    /// stay within `ratio × fleet calls + floor` over the budget's window, instead of each
    /// replica allowing that on its own. Start the fleet with
    /// [`Fleet::start_with_budget`](crate::Fleet::start_with_budget). While Redis is
    /// unreachable each replica's local budget applies.
    pub fn shared_retry_budget(mut self, on: bool) -> Self {
        self.shared_retry_budget = on;
        self
    }

    /// Limits `region` to `requests_per_minute` calls from the whole fleet (per
    /// [`limit_window`](Self::limit_window), a minute by default). When the fleet's window is
    /// spent the region is held in cooldown for the rest of it, as after a 429, so calls spill
    /// to the next region; no call fails because of the limit. Calling it again for the same
    /// region replaces the limit. Not enforced fleet-wide while Redis is unreachable.
    pub fn region_limit(mut self, region: impl Into<String>, requests_per_minute: u32) -> Self {
        let region = region.into();
        self.region_limits.retain(|(r, _)| *r != region);
        self.region_limits.push((region, requests_per_minute));
        self
    }

    /// The window of the per-region limits ([`DEFAULT_LIMIT_WINDOW`]; at least 100 ms). The
    /// limit given to [`region_limit`](Self::region_limit) applies per window.
    pub fn limit_window(mut self, window: Duration) -> Self {
        self.limit_window = window;
        self
    }

    /// Tokens a replica claims from a region's fleet-wide limit at a time (default: a
    /// twentieth of the limit, at least 1). Larger batches mean fewer Redis round trips and a
    /// larger overshoot bound (one batch per replica per window).
    pub fn limit_batch(mut self, batch: u32) -> Self {
        self.limit_batch = Some(batch);
        self
    }

    /// Prefix of every key and of the channel; replicas that share state use the same one.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// This replica's id (1 to 64 of `A-Z a-z 0-9 . _ : -`); random when unset. Must be
    /// unique in the fleet.
    pub fn replica_id(mut self, id: impl Into<String>) -> Self {
        self.replica_id = Some(id.into());
        self
    }

    /// How long a probe lease lasts without renewal (at least 30 ms). Leases are renewed and
    /// sought every third of it, so a dead holder's regions are taken over within about
    /// 1⅓ leases plus one probe interval.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Bound on each Redis round trip; a slower Redis is treated as down.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Bounds of the exponential backoff between reconnection attempts.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// Reads the Redis password (AUTH) from this environment variable, which must be set.
    /// Without this call, [`DEFAULT_PASSWORD_ENV`] is used when set.
    pub fn password_env(mut self, var: impl Into<String>) -> Self {
        self.password_env = Some(var.into());
        self
    }

    /// Reads the Redis ACL user name from this environment variable, which must be set.
    /// Without this call, [`DEFAULT_USERNAME_ENV`] is used when set.
    pub fn username_env(mut self, var: impl Into<String>) -> Self {
        self.username_env = Some(var.into());
        self
    }

    /// Validates every setting and reads the credentials.
    pub fn build(self) -> Result<FleetConfig, FleetError> {
        let connection =
            self.url.as_str().into_connection_info().map_err(|e| FleetError::InvalidUrl { source: e.into() })?;
        if matches!(connection.addr(), ConnectionAddr::TcpTls { .. }) && !cfg!(feature = "tls") {
            return Err(FleetError::TlsDisabled);
        }
        let mut redis = connection.redis_settings().clone();
        if let Some(user) = credential(self.username_env.as_deref(), DEFAULT_USERNAME_ENV)? {
            redis = redis.set_username(user);
        }
        if let Some(password) = credential(self.password_env.as_deref(), DEFAULT_PASSWORD_ENV)? {
            redis = redis.set_password(password);
        }
        let connection = connection.set_redis_settings(redis);
        if self.namespace.is_empty() || !valid_replica(&self.namespace) {
            return Err(FleetError::InvalidSetting {
                name: "namespace",
                reason: "must be 1 to 64 of A-Z a-z 0-9 . _ : -",
            });
        }
        let replica_id = match self.replica_id {
            Some(id) if valid_replica(&id) => id,
            Some(_) => {
                return Err(FleetError::InvalidSetting {
                    name: "replica_id",
                    reason: "must be 1 to 64 of A-Z a-z 0-9 . _ : -",
                });
            }
            None => {
                use rand::{Rng, SeedableRng};
                format!("replica-{:016x}", rand::rngs::SmallRng::from_os_rng().random::<u64>())
            }
        };
        if self.lease < MIN_LEASE {
            return Err(FleetError::InvalidSetting { name: "lease", reason: "must be at least 30 ms" });
        }
        if self.op_timeout.is_zero() {
            return Err(FleetError::InvalidSetting { name: "op_timeout", reason: "must not be zero" });
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(FleetError::InvalidSetting {
                name: "reconnect_backoff",
                reason: "min must not be zero and max must be at least min",
            });
        }
        if self.limit_window < MIN_LIMIT_WINDOW {
            return Err(FleetError::InvalidSetting { name: "limit_window", reason: "must be at least 100 ms" });
        }
        if self.limit_batch == Some(0) {
            return Err(FleetError::InvalidSetting { name: "limit_batch", reason: "must be at least 1" });
        }
        let mut region_limits = Vec::with_capacity(self.region_limits.len());
        for (region, per_window) in self.region_limits {
            if region.is_empty() || region.contains(char::is_whitespace) {
                return Err(FleetError::InvalidSetting { name: "region_limit", reason: "needs a region id" });
            }
            if per_window == 0 {
                return Err(FleetError::InvalidSetting {
                    name: "region_limit",
                    reason: "must allow at least 1 request per window (drain a region to close it)",
                });
            }
            let batch = self.limit_batch.unwrap_or((per_window / 20).max(1)).min(per_window);
            region_limits.push(RegionLimit { region, per_window, batch });
        }
        Ok(FleetConfig {
            connection,
            namespace: self.namespace,
            replica_id,
            lease: self.lease,
            op_timeout: self.op_timeout,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            shared_retry_budget: self.shared_retry_budget,
            region_limits,
            limit_window: self.limit_window,
        })
    }
}

/// The value of `named` (which must be set), else of `default` if set.
fn credential(named: Option<&str>, default: &str) -> Result<Option<String>, FleetError> {
    match named {
        Some(name) => {
            std::env::var(name).map(Some).map_err(|_| FleetError::MissingCredential { name: name.to_owned() })
        }
        None => Ok(std::env::var(default).ok()),
    }
}

impl fmt::Debug for FleetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBuilder")
            .field("namespace", &self.namespace)
            .field("replica_id", &self.replica_id)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

// ===== impl FleetConfig =====

impl FleetConfig {
    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// The key and channel prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The probe lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether the retry budget is shared by the fleet ([`FleetBuilder::shared_retry_budget`]).
    pub fn shared_retry_budget(&self) -> bool {
        self.shared_retry_budget
    }

    /// The fleet-wide request limit of `region` per [`limit_window`](Self::limit_window), if any.
    pub fn region_limit(&self, region: &str) -> Option<u32> {
        self.region_limits.iter().find(|l| l.region == region).map(|l| l.per_window)
    }

    /// The window of the per-region request limits.
    pub fn limit_window(&self) -> Duration {
        self.limit_window
    }

    /// `host:port` of the Redis server (with `rediss` marked), for logs; never credentials.
    pub fn server(&self) -> String {
        match self.connection.addr() {
            ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}"),
            ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}"),
            other => format!("{other}"),
        }
    }

    /// Whether credentials will be sent (AUTH), without revealing them.
    pub fn has_credentials(&self) -> bool {
        self.connection.redis_settings().password().is_some()
    }
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("server", &self.server())
            .field("auth", &self.has_credentials())
            .field("namespace", &self.namespace)
            .field("replica_id", &self.replica_id)
            .field("lease", &self.lease)
            .field("op_timeout", &self.op_timeout)
            .field("shared_retry_budget", &self.shared_retry_budget)
            .field("region_limits", &self.region_limits)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_settings_are_validated() {
        let config = FleetBuilder::new("redis://127.0.0.1:6390/0").replica_id("r1").build().expect("valid");
        assert_eq!(config.replica_id(), "r1");
        assert_eq!(config.server(), "redis://127.0.0.1:6390");
        assert!(matches!(FleetBuilder::new("http://x").build(), Err(FleetError::InvalidUrl { .. })));
        assert!(matches!(
            FleetBuilder::new("redis://h").replica_id("a b").build(),
            Err(FleetError::InvalidSetting { name: "replica_id", .. })
        ));
        assert!(matches!(
            FleetBuilder::new("redis://h").lease(Duration::from_millis(5)).build(),
            Err(FleetError::InvalidSetting { name: "lease", .. })
        ));
        assert!(matches!(
            FleetBuilder::new("redis://h").password_env("SLUICE_FLEET_TEST_SURELY_UNSET").build(),
            Err(FleetError::MissingCredential { name }) if name == "SLUICE_FLEET_TEST_SURELY_UNSET"
        ));
        let random = FleetBuilder::new("redis://h").build().expect("valid");
        assert!(valid_replica(random.replica_id()));
    }

    #[test]
    fn limits_are_validated() {
        let config = FleetBuilder::new("redis://h")
            .shared_retry_budget(true)
            .region_limit("a", 100)
            .region_limit("b", 10)
            .region_limit("a", 600)
            .build()
            .expect("valid");
        assert!(config.shared_retry_budget());
        assert_eq!(
            (config.region_limit("a"), config.region_limit("b"), config.region_limit("c")),
            (Some(600), Some(10), None)
        );
        let batches: Vec<u32> = config.region_limits.iter().map(|l| l.batch).collect();
        assert_eq!(batches, [1, 30], "a twentieth of the limit, at least 1");
        let capped = FleetBuilder::new("redis://h").region_limit("a", 5).limit_batch(50).build().expect("valid");
        assert_eq!(capped.region_limits[0].batch, 5, "never more than the limit");
        for bad in [
            FleetBuilder::new("redis://h").region_limit("a", 0),
            FleetBuilder::new("redis://h").region_limit("", 5),
            FleetBuilder::new("redis://h").limit_batch(0),
            FleetBuilder::new("redis://h").limit_window(Duration::from_millis(10)),
        ] {
            assert!(matches!(bad.build(), Err(FleetError::InvalidSetting { .. })));
        }
        assert!(!FleetBuilder::new("redis://h").build().expect("valid").shared_retry_budget(), "off by default");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let config = FleetBuilder::new("redis://user:hunter2@127.0.0.1:6390").build().expect("valid");
        assert!(config.has_credentials());
        let text = format!("{config:?} {:?} {}", FleetBuilder::new("redis://user:hunter2@h"), config.server());
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn rediss_urls_are_accepted_with_tls() {
        let config = FleetBuilder::new("rediss://127.0.0.1:6390").build().expect("valid");
        assert_eq!(config.server(), "rediss://127.0.0.1:6390");
    }
}
