//! Per-region routing facts (provider, models, zone) and the per-call route: which regions a
//! call may use, and the fallback models it moves on to.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Instant};

use sluice_region_model::{ApiKey, NodeId, Snapshot};

use crate::{
    CallOptions, Error, ErrorKind, FailedAttempt, HedgePolicy, ModelRouting, Provider, Response,
    client::{Attempt, AttemptError, CallKind, Inner},
    models::RegionModels,
    provider::Upstream,
    rescue::now,
};

/// What the client knows about each node beyond the region model, indexed by node.
pub(crate) struct Routes {
    nodes: Box<[NodeRoute]>,
    pub(crate) routing: ModelRouting,
}

/// One node's provider, models, zone and key.
pub(crate) struct NodeRoute {
    pub(crate) region: Arc<str>,
    pub(crate) upstream: Upstream,
    pub(crate) models: RegionModels,
    pub(crate) zone: Option<Box<str>>,
    pub(crate) key: Option<ApiKey>,
}

/// The routing part of one call (or one fallback stage of it).
#[derive(Clone, Default)]
pub(crate) struct CallRoute {
    /// The model this stage asks for, aliases resolved.
    pub(crate) model: Option<Arc<str>>,
    /// The model named in the request body, when the body must be rewritten for another.
    pub(crate) body_model: Option<Arc<str>>,
    /// The zones the call may use; `None` = all.
    pub(crate) zones: Option<Arc<[Box<str>]>>,
    /// The call's trace context; an attempt's copy names the attempt as the parent.
    pub(crate) trace: Option<crate::TraceParent>,
    /// The caller's own key, for regions that pass it ([`crate::Provider::pass_caller_key`]).
    pub(crate) caller_key: Option<Arc<ApiKey>>,
}

// ===== impl Routes =====

impl Routes {
    /// Resolves every region's provider against its endpoint.
    pub(crate) fn new(
        snapshot: &Snapshot,
        providers: &[(String, Provider)],
        models: &[(String, Vec<String>)],
        default_key: Option<&ApiKey>,
        routing: ModelRouting,
    ) -> Result<Self, (String, String)> {
        known_ids(
            snapshot,
            providers.iter().map(|(id, _)| id.as_str()).chain(models.iter().map(|(id, _)| id.as_str())),
        )?;
        let openai = Provider::openai();
        let nodes = snapshot
            .nodes()
            .iter()
            .map(|node| {
                let region = node.region();
                let id = region.id();
                let fail = |m: String| (id.to_owned(), m);
                let provider = providers.iter().rev().find(|(r, _)| r == id).map_or(&openai, |(_, p)| p);
                let upstream = provider.resolve(node.endpoint()).map_err(fail)?;
                let configured = models.iter().rev().find(|(r, _)| r == id).map(|(_, m)| m.clone());
                if configured.as_ref().is_some_and(|m| m.is_empty() || m.iter().any(String::is_empty)) {
                    return Err(fail("models must name at least one model, none empty".to_owned()));
                }
                let fixed = configured.or_else(|| upstream.deployment_models().map(|d| d.map(str::to_owned).collect()));
                if region.zone().is_some_and(str::is_empty) {
                    return Err(fail("zone is empty".to_owned()));
                }
                Ok(NodeRoute {
                    region: Arc::from(id),
                    upstream,
                    models: RegionModels::new(fixed),
                    zone: region.zone().map(Box::from),
                    key: region.api_key().or(default_key).cloned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        routing.validate().map_err(|m| ("[models]".to_owned(), m))?;
        Ok(Self { nodes: nodes.into_boxed_slice(), routing })
    }

    pub(crate) fn node(&self, node: NodeId) -> &NodeRoute {
        &self.nodes[node.index()]
    }

    /// The node of a region id.
    pub(crate) fn by_region(&self, id: &str) -> Option<&NodeRoute> {
        self.nodes.iter().find(|n| &*n.region == id)
    }

    /// Whether a call with this route may go to `node` at `now` (health aside). Lock-free and
    /// allocation-free: it runs for every candidate of every pick.
    pub(crate) fn admits(&self, node: NodeId, call: &CallRoute, now: Instant) -> bool {
        let n = &self.nodes[node.index()];
        if let Some(zones) = &call.zones {
            match &n.zone {
                Some(zone) if zones.iter().any(|z| z == zone) => {}
                _ => return false,
            }
        }
        call.model.as_deref().is_none_or(|m| n.models.serves(m, now))
    }

    /// Whether any region serves `model` (zones and health aside).
    pub(crate) fn served_anywhere(&self, model: &str, now: Instant) -> bool {
        self.nodes.iter().any(|n| n.models.serves(model, now))
    }

    /// Whether any region admits the call (health aside).
    fn admitted_anywhere(&self, call: &CallRoute, now: Instant) -> bool {
        (0..self.nodes.len()).any(|i| self.admits(NodeId::from_index(i as u32), call, now))
    }

    /// Takes the call's model off `node` for a while if the answer says it does not exist
    /// there. Returns whether it did.
    pub(crate) fn observe(&self, node: NodeId, call: &CallRoute, error: &AttemptError, now: Instant) -> bool {
        let (AttemptError::Status { status, body, .. }, Some(model)) = (error, &call.model) else {
            return false;
        };
        if !crate::models::is_model_not_found(*status, body) {
            return false;
        }
        let n = &self.nodes[node.index()];
        tracing::warn!(region = %n.region, model = %model, "region does not serve the model; taking it off for a while");
        n.models.remove(model, now, now + self.routing.ttl());
        true
    }

    /// The models each region is known to serve (`None`: unknown, so every model).
    pub(crate) fn known_models(&self, now: Instant) -> Vec<(Arc<str>, Option<Vec<String>>)> {
        self.nodes.iter().map(|n| (Arc::clone(&n.region), n.models.known(now))).collect()
    }
}

fn known_ids<'a>(snapshot: &Snapshot, ids: impl Iterator<Item = &'a str>) -> Result<(), (String, String)> {
    for id in ids {
        if snapshot.find(id).is_none() {
            return Err((id.to_owned(), "no region has this id".to_owned()));
        }
    }
    Ok(())
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes").field("regions", &self.nodes.len()).field("routing", &self.routing).finish()
    }
}

// ===== impl CallRoute =====

impl CallRoute {
    pub(crate) fn of(options: &CallOptions) -> Self {
        Self {
            model: options.model.clone(),
            body_model: options.body_model.clone(),
            zones: options.zones.clone(),
            trace: options.trace,
            caller_key: options.caller_key.clone(),
        }
    }

    /// The model to put in the body for `upstream`, when it differs from the body's.
    pub(crate) fn rewrite_for<'a>(&'a self, upstream: &'a Upstream) -> Option<&'a str> {
        let model = self.model.as_deref()?;
        let wire = upstream.wire_model(model);
        let body = self.body_model.as_deref().unwrap_or(model);
        (wire != body).then_some(wire)
    }
}

// ===== impl Inner =====

impl Inner {
    /// Runs a call through its model's regions, then through each fallback model while the
    /// failure is one another model may not have.
    pub(crate) async fn run_routed<T, F>(
        self: &Arc<Self>,
        options: &CallOptions,
        kind: CallKind,
        hedge: Option<HedgePolicy>,
        attempt: F,
    ) -> Result<Response<T>, Error>
    where
        F: Fn(Attempt) -> Pin<Box<dyn Future<Output = Result<T, AttemptError>> + Send>>,
        T: Send + 'static,
    {
        let at = now();
        let Some(asked) = options.model.clone() else {
            self.check_zones(&CallRoute::of(options), at)?;
            return self.run(options, kind, hedge, attempt).await;
        };
        let routing = &self.routes.routing;
        let first = routing.resolve(&asked);
        if !self.routes.served_anywhere(first, at) {
            return Err(Error::new(ErrorKind::ModelNotFound { model: asked.to_string() }));
        }
        let total = options.timeout.map_or(self.timeouts.total, |t| t.min(self.timeouts.total));
        let deadline = tokio::time::Instant::now() + total;
        let mut earlier: Vec<FailedAttempt> = Vec::new();
        let mut last: Option<Error> = None;
        for (i, model) in std::iter::once(first).chain(routing.fallbacks_of(first)).enumerate() {
            let mut stage = options.clone();
            stage.model = Some(if model == &*asked { Arc::clone(&asked) } else { Arc::from(model) });
            stage.body_model = Some(Arc::clone(&asked));
            let route = CallRoute::of(&stage);
            if i > 0 && !self.routes.served_anywhere(model, now()) {
                continue;
            }
            if let Err(e) = self.check_zones(&route, now()) {
                last = Some(e);
                continue;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                last = Some(Error::new(ErrorKind::DeadlineExceeded));
                break;
            }
            stage.timeout = Some(remaining);
            match self.run(&stage, kind, hedge, &attempt).await {
                Ok(mut response) => {
                    if !earlier.is_empty() {
                        response.meta.attempts += earlier.len() as u32;
                        response.meta.failed_over = true;
                        earlier.append(&mut response.meta.failed_attempts);
                        response.meta.failed_attempts = earlier;
                    }
                    return Ok(response);
                }
                Err(e) => {
                    earlier.extend(e.failed_attempts().iter().cloned());
                    if !falls_back(&e, kind) {
                        return Err(e.with_attempts(earlier));
                    }
                    tracing::debug!(model = %model, error = %e, "every region of the model failed; trying its fallback");
                    last = Some(e);
                }
            }
        }
        let error = last.unwrap_or_else(|| Error::new(ErrorKind::NoEligibleRegion { retry_at: None }));
        Err(error.with_attempts(earlier))
    }

    /// Refuses a call restricted to zones where no region can serve it.
    fn check_zones(&self, route: &CallRoute, at: Instant) -> Result<(), Error> {
        match &route.zones {
            Some(zones) if !self.routes.admitted_anywhere(route, at) => Err(Error::new(ErrorKind::NoRegionInZones {
                zones: zones.join(","),
                model: route.model.as_deref().map(str::to_owned),
            })),
            _ => Ok(()),
        }
    }
}

/// Whether a failed first model lets the call move on to a fallback model: only failures of
/// the regions themselves (none eligible, unreachable, overloaded, failing), never a request
/// error, a credentials fault or a deadline, and a timeout only for calls that a timed-out
/// attempt cannot have served (the answer may have been generated).
fn falls_back(error: &Error, kind: CallKind) -> bool {
    match error.kind() {
        ErrorKind::NoEligibleRegion { .. }
        | ErrorKind::NoRegionInZones { .. }
        | ErrorKind::Connect { .. }
        | ErrorKind::Rescued { .. } => true,
        ErrorKind::Timeout { .. } => kind == CallKind::Resendable,
        ErrorKind::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
        _ => false,
    }
}
