//! Live region updates: one snapshot swap under running calls, probes and metrics.

use std::sync::{Arc, atomic::AtomicU64, atomic::Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use sluice_health::{Probe, ProbeConfig};
use sluice_region_model::{ApiKey, Region, Snapshot};

use crate::{
    BuildError, Client, ModelRouting, Provider, client::Inner, credentials::CredentialBlocks, probe::RouteProbe,
    rescue::RescueHub, routing::Routes,
};

/// What a region update changed, by region id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionChanges {
    /// Regions that came: `Unknown` (eligible) and probed at once.
    pub added: Vec<String>,
    /// Regions that went: calls in flight there finish, no new attempt goes there.
    pub removed: Vec<String>,
    /// Regions that stayed, with their health, estimates, ejection state and in-flight counts.
    pub kept: Vec<String>,
}

/// Providers and configured models, by region id.
type RegionSettings = (Vec<(String, Provider)>, Vec<(String, Vec<String>)>);

/// The client's cell: the current membership, and what a region update needs to build the
/// next one.
pub(crate) struct Shared {
    current: ArcSwap<Inner>,
    rebuild: Mutex<Rebuild>,
}

/// Settings from the builder that a region update reuses.
pub(crate) struct Rebuild {
    /// The key for regions that bring none.
    pub(crate) api_key: Option<ApiKey>,
    /// While probing is on: the caller's probe (`None`: the default, rebuilt for the new
    /// regions) and the probe settings.
    pub(crate) probing: Option<(Option<Arc<dyn Probe>>, ProbeConfig)>,
    /// Providers per region id.
    pub(crate) providers: Vec<(String, Provider)>,
    /// Configured models per region id.
    pub(crate) region_models: Vec<(String, Vec<String>)>,
    /// Aliases and fallbacks.
    pub(crate) model_routing: ModelRouting,
}

// ===== impl Shared =====

impl Shared {
    pub(crate) fn new(inner: Arc<Inner>, rebuild: Rebuild) -> Arc<Self> {
        Arc::new(Self { current: ArcSwap::new(inner), rebuild: Mutex::new(rebuild) })
    }

    pub(crate) fn current(&self) -> Arc<Inner> {
        self.current.load_full()
    }

    /// Turns probing off for good and hands back the running prober, if any.
    pub(crate) fn stop_probing(&self) -> Option<sluice_health::ProberHandle> {
        self.rebuild.lock().probing = None;
        self.current.load().prober.lock().take()
    }
}

// ===== impl Client (regions) =====

impl Client {
    /// Replaces the regions while calls run: the one snapshot swap behind live reload.
    ///
    /// The new list is validated as [`ClientBuilder::build`](crate::ClientBuilder::build)
    /// does; on error nothing changes. On success, atomically for new calls:
    /// * regions that kept their id keep their metrics (health, latency estimates, ejection
    ///   and cooldown state, in-flight counts), through `SnapshotBuilder::reuse_metrics` and
    ///   `HealthMonitor::successor`; an updated endpoint or key takes effect for new calls;
    /// * new regions are `Unknown`, hence eligible, until their first verdict, and probed at
    ///   once;
    /// * removed regions drain: calls in flight there finish, and no new attempt goes there;
    /// * the strategy sees a snapshot with a new generation, so its tables are rebuilt.
    ///
    /// Calls that started before keep running on the regions they started with; only their
    /// removed regions are no longer offered to their retries.
    ///
    /// # Errors
    /// [`BuildError::Regions`] for an invalid list (empty, duplicate ids, bad endpoints...),
    /// [`BuildError::Routing`] for providers or models that do not fit the new regions,
    /// [`BuildError::NoRuntime`] outside a Tokio runtime.
    ///
    /// Providers and configured models stay those given to the builder (or to the last
    /// [`update_regions_with`](Self::update_regions_with)) for the regions that remain; a new
    /// region gets the OpenAI provider and the models it lists.
    pub fn update_regions(&self, regions: impl IntoIterator<Item = Region>) -> Result<RegionChanges, BuildError> {
        self.update(regions, None)
    }

    /// As [`update_regions`](Self::update_regions), and replaces every region's provider and
    /// configured models (as [`ClientBuilder::provider`](crate::ClientBuilder::provider) and
    /// [`ClientBuilder::region_models`](crate::ClientBuilder::region_models) set them): what a
    /// configuration reload needs, so that an added Azure region speaks Azure.
    ///
    /// # Errors
    /// As for [`update_regions`](Self::update_regions); also a provider or models for an id
    /// that is not in `regions`.
    pub fn update_regions_with(
        &self,
        regions: impl IntoIterator<Item = Region>,
        providers: impl IntoIterator<Item = (String, Provider)>,
        models: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Result<RegionChanges, BuildError> {
        self.update(regions, Some((providers.into_iter().collect(), models.into_iter().collect())))
    }

    /// The one swap: the regions, and the providers and models when given.
    fn update(
        &self,
        regions: impl IntoIterator<Item = Region>,
        settings: Option<RegionSettings>,
    ) -> Result<RegionChanges, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        // One update at a time; calls never take this lock.
        let mut rebuild = self.shared.rebuild.lock();
        let old = self.shared.current();
        let snapshot = Arc::new(Snapshot::builder().reuse_metrics(Arc::clone(&old.snapshot)).build(regions)?);
        // Without new settings, those of the regions that remain.
        let (providers, region_models) = settings.unwrap_or_else(|| {
            let kept = |id: &String| snapshot.find(id).is_some();
            (
                rebuild.providers.iter().filter(|(id, _)| kept(id)).cloned().collect(),
                rebuild.region_models.iter().filter(|(id, _)| kept(id)).cloned().collect(),
            )
        });
        let regions = region_ids(&snapshot);
        let mut changes = RegionChanges::default();
        for id in &regions {
            let list = if old.snapshot.find(id).is_some() { &mut changes.kept } else { &mut changes.added };
            list.push(id.to_string());
        }
        changes.removed =
            old.regions.iter().filter(|id| snapshot.find(id).is_none()).map(|id| id.to_string()).collect();
        let routes =
            Routes::new(&snapshot, &providers, &region_models, rebuild.api_key.as_ref(), rebuild.model_routing.clone())
                .map_err(|(region, message)| BuildError::Routing { region, message })?;
        let routes = Arc::new(routes);
        let probe = match &rebuild.probing {
            Some((Some(probe), config)) => Some((Arc::clone(probe), config)),
            Some((None, config)) => {
                let probe: Arc<dyn Probe> = Arc::new(RouteProbe::new(Arc::clone(&routes), config.timeout())?);
                Some((probe, config))
            }
            None => None,
        };
        // Last, since it retires the regions that left: nothing may fail after it.
        let health = old.health.successor(Arc::clone(&snapshot))?;
        let prober = probe.map(|(probe, config)| {
            let _enter = runtime.enter();
            health.spawn_prober(probe, config.clone())
        });
        let next = Inner {
            credentials: CredentialBlocks::new(snapshot.len(), old.snapshot.epoch()),
            routes,
            keys: node_keys(&snapshot, rebuild.api_key.as_ref()),
            rescue: RescueHub::start(&runtime, &regions, &health),
            snapshot,
            regions,
            health,
            strategy: Arc::clone(&old.strategy),
            http: old.http.clone(),
            policy: old.policy.clone(),
            timeouts: old.timeouts,
            budget: Arc::clone(&old.budget),
            latencies: Arc::clone(&old.latencies),
            entropy: AtomicU64::new(old.entropy.load(Ordering::Relaxed) ^ 0x5851_F42D_4C95_7F2D),
            default_caller: old.default_caller,
            prober: Mutex::new(prober),
            models: Arc::clone(&old.models),
            instruments: Arc::clone(&old.instruments),
        };
        self.shared.current.store(Arc::new(next));
        rebuild.providers = providers;
        rebuild.region_models = region_models;
        // The old membership is probed no more; calls still on it finish on shared metrics.
        drop(old.prober.lock().take());
        drop(rebuild);
        tracing::info!(added = ?changes.added, removed = ?changes.removed, kept = changes.kept.len(), "regions updated");
        Ok(changes)
    }
}

/// Per node: the key sent, and a small id that is equal for equal keys.
pub(crate) fn node_keys(snapshot: &Snapshot, default: Option<&ApiKey>) -> Box<[(Option<ApiKey>, u32)]> {
    let mut distinct: Vec<Option<&str>> = Vec::new();
    snapshot
        .nodes()
        .iter()
        .map(|n| {
            let key = n.region().api_key().or(default).cloned();
            // Ids only compare keys; they never reveal them.
            let text = n.region().api_key().or(default).map(ApiKey::expose_secret);
            let id = distinct.iter().position(|k| *k == text).unwrap_or_else(|| {
                distinct.push(text);
                distinct.len() - 1
            });
            (key, id as u32)
        })
        .collect()
}

/// The region id of every node, in node order.
pub(crate) fn region_ids(snapshot: &Snapshot) -> Box<[Arc<str>]> {
    snapshot.nodes().iter().map(|n| Arc::from(n.region().id())).collect()
}
