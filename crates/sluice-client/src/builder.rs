//! Building a client.

use std::{
    fmt,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use parking_lot::Mutex;
use sluice_balancer::{Caller, Locality, Strategy};
use sluice_health::{HealthMonitor, OutlierConfig, Probe, ProbeConfig};
use sluice_region_model::{ApiKey, GeoPoint, Region, Snapshot};

use crate::{
    BuildError, Client, FailoverPolicy, HedgePolicy, ModelRouting, Provider, Timeouts,
    budget::RetryBudget,
    client::Inner,
    credentials::CredentialBlocks,
    latency::LatencyHistogram,
    probe::RouteProbe,
    rescue::{RescueHub, now},
    routing::Routes,
};

/// Configures a [`Client`]. Every setting is checked by [`build`](Self::build).
///
/// Defaults: the [`Locality`] strategy (nearest healthy region with room); active probing with `GET {endpoint}/models` through
/// each region's [`Provider`] (which also learns the models each region lists) and default
/// [`ProbeConfig`]; every region an OpenAI-style [`Provider`], no aliases or fallbacks; default [`OutlierConfig`]; [`FailoverPolicy::default`]
/// (3 attempts, 20 % retry budget plus 10/s, rescue on, no hedging); [`Timeouts::default`].
pub struct ClientBuilder {
    regions: Vec<Region>,
    strategy: Option<Box<dyn Strategy>>,
    api_key: Option<ApiKey>,
    probe: Option<Arc<dyn Probe>>,
    probe_config: ProbeConfig,
    probing: bool,
    outlier: OutlierConfig,
    policy: FailoverPolicy,
    timeouts: Timeouts,
    default_caller: Option<GeoPoint>,
    seed: Option<u64>,
    providers: Vec<(String, Provider)>,
    region_models: Vec<(String, Vec<String>)>,
    model_routing: ModelRouting,
}

// ===== impl ClientBuilder =====

impl ClientBuilder {
    pub(crate) fn new() -> Self {
        Self {
            regions: Vec::new(),
            strategy: None,
            api_key: None,
            probe: None,
            probe_config: ProbeConfig::default(),
            probing: true,
            outlier: OutlierConfig::default(),
            policy: FailoverPolicy::default(),
            timeouts: Timeouts::default(),
            default_caller: None,
            seed: None,
            providers: Vec::new(),
            region_models: Vec::new(),
            model_routing: ModelRouting::new(),
        }
    }

    /// Adds one region.
    pub fn region(mut self, region: Region) -> Self {
        self.regions.push(region);
        self
    }

    /// Adds regions.
    pub fn regions(mut self, regions: impl IntoIterator<Item = Region>) -> Self {
        self.regions.extend(regions);
        self
    }

    /// The balancing strategy. Default: [`Locality`].
    pub fn strategy(mut self, strategy: Box<dyn Strategy>) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// The API key for regions that have none of their own.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The active probe. Default: `HttpProbe` (`GET {endpoint}/models`, no tokens spent).
    pub fn probe(mut self, probe: Arc<dyn Probe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Active-probe settings.
    pub fn probe_config(mut self, config: ProbeConfig) -> Self {
        self.probe_config = config;
        self
    }

    /// Turns active probing off (passive outlier detection still runs).
    pub fn active_probing(mut self, on: bool) -> Self {
        self.probing = on;
        self
    }

    /// Passive outlier-detection settings.
    pub fn outlier_config(mut self, config: OutlierConfig) -> Self {
        self.outlier = config;
        self
    }

    /// The failover policy.
    pub fn failover(mut self, policy: FailoverPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The caller location used when a call brings none.
    pub fn default_caller(mut self, location: GeoPoint) -> Self {
        self.default_caller = Some(location);
        self
    }

    /// Seeds the randomness handed to the strategy, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How the region with this id is addressed and authenticated. Default:
    /// [`Provider::openai`].
    pub fn provider(mut self, region: impl Into<String>, provider: Provider) -> Self {
        self.providers.push((region.into(), provider));
        self
    }

    /// The models the region with this id serves, overriding its `/models` list and its
    /// provider's deployment table. Calls for other models never go there.
    pub fn region_models(
        mut self,
        region: impl Into<String>,
        models: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.region_models.push((region.into(), models.into_iter().map(Into::into).collect()));
        self
    }

    /// Model aliases and fallbacks.
    pub fn model_routing(mut self, routing: ModelRouting) -> Self {
        self.model_routing = routing;
        self
    }

    /// Validates everything and starts the client's background tasks (the prober and the
    /// rescue watcher) on the current Tokio runtime.
    ///
    /// # Errors
    /// Invalid regions, out-of-range settings, no Tokio runtime, or an HTTP client that cannot
    /// be created.
    pub fn build(self) -> Result<Client, BuildError> {
        let p = &self.policy;
        let t = &self.timeouts;
        check(p.max_attempts >= 1, "max_attempts", "at least 1")?;
        check(p.retry_ratio.is_finite() && p.retry_ratio >= 0.0, "retry_ratio", "finite and >= 0")?;
        check(!p.retry_budget_ttl.is_zero(), "retry_budget_ttl", "greater than zero")?;
        for (name, d) in [
            ("connect", t.connect),
            ("attempt", t.attempt),
            ("first_chunk", t.first_chunk),
            ("total", t.total),
            ("idle", t.idle),
        ] {
            check(!d.is_zero(), name, "a timeout greater than zero")?;
        }
        match p.hedge {
            Some(HedgePolicy::Fixed(d)) => check(!d.is_zero(), "hedge delay", "greater than zero")?,
            Some(HedgePolicy::Percentile { percentile, fallback }) => {
                check(percentile > 0.0 && percentile <= 100.0, "hedge percentile", "in (0, 100]")?;
                check(!fallback.is_zero(), "hedge fallback delay", "greater than zero")?;
            }
            None => {}
        }
        if let Some(c) = self.default_caller {
            check(c.is_valid(), "default caller location", "a valid latitude and longitude")?;
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;

        let epoch = now();
        let snapshot = Arc::new(Snapshot::builder().epoch(epoch).build(self.regions)?);
        let keys = crate::reload::node_keys(&snapshot, self.api_key.as_ref());
        let regions = crate::reload::region_ids(&snapshot);
        let routes = Routes::new(
            &snapshot,
            &self.providers,
            &self.region_models,
            self.api_key.as_ref(),
            self.model_routing.clone(),
        )
        .map_err(|(region, message)| BuildError::Routing { region, message })?;
        let routes = Arc::new(routes);
        let health = HealthMonitor::new(Arc::clone(&snapshot), self.outlier);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .use_rustls_tls()
            .build()
            .map_err(|e| BuildError::Http(e.into()))?;
        let probe = if self.probing {
            let probe: Arc<dyn Probe> = match &self.probe {
                Some(p) => Arc::clone(p),
                None => Arc::new(RouteProbe::new(Arc::clone(&routes), self.probe_config.timeout())?),
            };
            Some((probe, self.probe_config.clone()))
        } else {
            None
        };
        let prober = probe.as_ref().map(|(probe, config)| {
            let _enter = runtime.enter();
            health.spawn_prober(Arc::clone(probe), config.clone())
        });
        let rescue = RescueHub::start(&runtime, &regions, &health);
        let instruments: Arc<crate::telemetry::Instruments> = Arc::default();
        runtime.spawn(crate::telemetry::watch_health(Arc::clone(&instruments), health.subscribe()));
        let seed = self.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(epoch)
        });
        let snapshot_len = snapshot.len();
        let inner = Inner {
            budget: Arc::new(RetryBudget::new(p.retry_budget_ttl, p.retry_min_per_sec, p.retry_ratio, epoch)),
            snapshot,
            regions,
            health,
            strategy: self.strategy.map_or_else(|| Arc::new(Locality::new()) as Arc<dyn Strategy>, Arc::from),
            http,
            keys,
            policy: self.policy,
            timeouts: self.timeouts,
            rescue,
            latencies: Arc::new(LatencyHistogram::new()),
            entropy: AtomicU64::new(seed),
            default_caller: self.default_caller.map(Caller::new),
            prober: Mutex::new(prober),
            models: Arc::default(),
            instruments,
            routes,
            credentials: CredentialBlocks::new(snapshot_len, epoch),
        };
        let rebuild = crate::reload::Rebuild {
            api_key: self.api_key,
            probing: self.probing.then_some((self.probe, self.probe_config)),
            providers: self.providers,
            region_models: self.region_models,
            model_routing: self.model_routing,
        };
        Ok(Client::from_inner(Arc::new(inner), rebuild))
    }
}

fn check(ok: bool, setting: &'static str, expected: &'static str) -> Result<(), BuildError> {
    if ok { Ok(()) } else { Err(BuildError::Setting { setting, expected }) }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("regions", &self.regions)
            .field("strategy", &self.strategy)
            .field("api_key", &self.api_key)
            .field("probing", &self.probing)
            .field("policy", &self.policy)
            .field("timeouts", &self.timeouts)
            .field("providers", &self.providers)
            .field("region_models", &self.region_models)
            .field("model_routing", &self.model_routing)
            .finish_non_exhaustive()
    }
}
