//! [`BalanceBuilder`]: options and the three ways to get regions in.

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    sync::Arc,
    task::Context,
    time::Duration,
};

use sluice_balancer::{Caller, Locality, Strategy};
use sluice_health::OutlierConfig;
use sluice_region_model::{GeoPoint, Region, Snapshot};
use tower::{Service, discover::Discover};

use crate::{
    Balance, BoxError, BuildError, DEFAULT_REFRESH, HttpClassify, Regional,
    balance::{BoxDiscover, Options, live, making},
};

/// Options for a [`Balance`], and the constructors that give it its regions:
/// [`build`](Self::build) (a snapshot and one service per region),
/// [`make`](Self::make) (a snapshot and a `MakeService` that makes a service per region), or
/// [`discover`](Self::discover) (a `tower::discover::Discover` stream).
///
/// Defaults: the `Locality` strategy (the one `sluice-client` uses by default),
/// [`HttpClassify`], `OutlierConfig::default()`, [`DEFAULT_REFRESH`], no default caller
/// location, and a random seed.
pub struct BalanceBuilder<C = HttpClassify> {
    strategy: Option<Arc<dyn Strategy>>,
    classify: C,
    outlier: OutlierConfig,
    decay: Option<Duration>,
    refresh: Duration,
    caller: Option<GeoPoint>,
    seed: Option<u64>,
}

// ===== impl BalanceBuilder =====

impl Default for BalanceBuilder {
    fn default() -> Self {
        Self {
            strategy: None,
            classify: HttpClassify,
            outlier: OutlierConfig::default(),
            decay: None,
            refresh: DEFAULT_REFRESH,
            caller: None,
            seed: None,
        }
    }
}

impl<C> BalanceBuilder<C> {
    /// Picks with `strategy` (any of `sluice-balancer`'s, or your own).
    pub fn strategy(mut self, strategy: Box<dyn Strategy>) -> Self {
        self.strategy = Some(Arc::from(strategy));
        self
    }

    /// Judges outcomes with `classify` instead of [`HttpClassify`].
    pub fn classify<C2>(self, classify: C2) -> BalanceBuilder<C2> {
        BalanceBuilder {
            strategy: self.strategy,
            classify,
            outlier: self.outlier,
            decay: self.decay,
            refresh: self.refresh,
            caller: self.caller,
            seed: self.seed,
        }
    }

    /// Passive health: ejection thresholds, Retry-After cap, slow start.
    pub fn outlier(mut self, config: OutlierConfig) -> Self {
        self.outlier = config;
        self
    }

    /// The decay of latency and error estimates for snapshots that discovery builds.
    pub fn metrics_decay(mut self, decay: Duration) -> Self {
        self.decay = Some(decay);
        self
    }

    /// How long the eligible set may go without a check when no health event arrives.
    /// Defaults to [`DEFAULT_REFRESH`].
    pub fn refresh(mut self, interval: Duration) -> Self {
        self.refresh = interval;
        self
    }

    /// The caller's location for requests without a [`GeoPoint`] extension.
    pub fn caller(mut self, location: GeoPoint) -> Self {
        self.caller = Some(location);
        self
    }

    /// Seeds the per-pick randomness, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A balancer over `snapshot` with `services[i]` serving node `i`.
    ///
    /// # Errors
    /// [`BuildError::ServiceCount`] when the counts differ; [`BuildError::ZeroRefresh`].
    pub fn build<S>(
        self,
        snapshot: Arc<Snapshot>,
        services: impl IntoIterator<Item = S>,
    ) -> Result<Balance<S, C>, BuildError> {
        let services: Vec<_> = services.into_iter().map(live).collect();
        if services.len() != snapshot.len() {
            return Err(BuildError::ServiceCount { regions: snapshot.len(), services: services.len() });
        }
        let mut balance = self.finish(None)?;
        balance.install(snapshot, services);
        Ok(balance)
    }

    /// A balancer over `snapshot` whose services `make` builds, one per region, from the
    /// [`Region`]. They are made concurrently, driven by `poll_ready`; a region takes calls
    /// once its service is made and ready. A region whose service cannot be made is retired
    /// and recorded as a connection failure.
    ///
    /// # Errors
    /// [`BuildError::ZeroRefresh`].
    pub fn make<M>(self, snapshot: Arc<Snapshot>, make: M) -> Result<Balance<M::Response, C>, BuildError>
    where
        M: Service<Region> + Clone + Send + 'static,
        M::Future: Send,
        M::Error: Into<BoxError>,
    {
        let services = snapshot
            .nodes()
            .iter()
            .map(|node| {
                let mut make = make.clone();
                let region = node.region().clone();
                making(Box::pin(async move {
                    std::future::poll_fn(|cx: &mut Context<'_>| make.poll_ready(cx)).await.map_err(Into::into)?;
                    make.call(region).await.map_err(Into::into)
                }))
            })
            .collect();
        let mut balance = self.finish(None)?;
        balance.install(snapshot, services);
        Ok(balance)
    }

    /// A balancer whose regions come from `discover`: each `Change::Insert` carries a
    /// [`Regional`] (the region and its service), each `Change::Remove` a key that is the
    /// region id. Every batch of changes builds a new snapshot with
    /// `SnapshotBuilder::apply`, so regions that stay keep their metrics (load, latency,
    /// exclusions) and their service; requests in flight on a removed region finish.
    ///
    /// Until the first insert, `poll_ready` is pending.
    ///
    /// # Errors
    /// [`BuildError::ZeroRefresh`].
    pub fn discover<D, S>(self, discover: D) -> Result<Balance<S, C>, BuildError>
    where
        D: Discover<Service = Regional<S>> + Send + 'static,
        D::Key: AsRef<str>,
        D::Error: Into<BoxError>,
    {
        let mut discover = Box::pin(discover);
        let boxed: BoxDiscover<S> = Box::new(move |cx| {
            discover.as_mut().poll_discover(cx).map(|change| {
                change.map(|change| {
                    change.map_err(Into::into).map(|change| match change {
                        tower::discover::Change::Insert(key, service) => {
                            tower::discover::Change::Insert(key.as_ref().to_owned(), service)
                        }
                        tower::discover::Change::Remove(key) => {
                            tower::discover::Change::Remove(key.as_ref().to_owned())
                        }
                    })
                })
            })
        });
        self.finish(Some(boxed))
    }

    pub(crate) fn check(&self) -> Result<(), BuildError> {
        if self.refresh.is_zero() {
            return Err(BuildError::ZeroRefresh);
        }
        Ok(())
    }

    fn finish<S>(self, discover: Option<BoxDiscover<S>>) -> Result<Balance<S, C>, BuildError> {
        self.check()?;
        let strategy = self.strategy.unwrap_or_else(|| Arc::new(Locality::new()));
        let seed = self.seed.unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        let options = Options {
            outlier: self.outlier,
            decay: self.decay,
            refresh: self.refresh,
            caller: self.caller.map(Caller::new),
        };
        Ok(Balance::from_parts(strategy, self.classify, options, seed, discover))
    }
}

impl<C: Clone> Clone for BalanceBuilder<C> {
    fn clone(&self) -> Self {
        Self {
            strategy: self.strategy.clone(),
            classify: self.classify.clone(),
            outlier: self.outlier.clone(),
            decay: self.decay,
            refresh: self.refresh,
            caller: self.caller,
            seed: self.seed,
        }
    }
}

impl<C> fmt::Debug for BalanceBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceBuilder")
            .field("strategy", &self.strategy.as_ref().map(|s| s.name()))
            .field("refresh", &self.refresh)
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}
