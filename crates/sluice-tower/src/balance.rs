//! The balancer: one inner service per region, a ready cache, and the eligible set.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use sluice_balancer::{Caller, PickView, Strategy};
use sluice_health::{HealthMonitor, Outcome, Selection};
use sluice_region_model::{Availability, GeoPoint, MembershipChange, NodeId, Region, Snapshot};
use tower::{Service, discover::Change};

use crate::{
    BalanceBuilder, BoxError, Classify, Error, GuardedBody, HttpClassify, Tried,
    future::{MakeFuture, ResponseFuture},
};

/// How long the eligible set may go unchecked when no health event arrives: a safety net for
/// changes made behind the monitor's back, such as an operator draining a node.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// A `tower::Service` that spreads requests over one inner service per region.
///
/// Per request it picks with a [`Strategy`] among the regions that are both **eligible**
/// (enabled, healthy, not ejected, not cooling down after a Retry-After) and **ready** (their
/// inner service's `poll_ready` said so), takes an [`InFlightGuard`](sluice_region_model::InFlightGuard)
/// that lives until the response body ends, and records the outcome, as judged by a
/// [`Classify`], into the region's health.
///
/// # Readiness
/// `poll_ready` drives the readiness of every inner service that is not known to be ready (a
/// ready cache, as in tower's `p2c::Balance`): after a call, only the service that took it is
/// polled again. The balancer is ready when any eligible region is ready; a region whose
/// service is not ready is skipped, never awaited. An inner `poll_ready` error retires that
/// service (it is recorded as a connection failure) until discovery replaces it.
///
/// When no region is eligible, it falls back to the least-bad ones as
/// [`HealthMonitor::select`] defines them (panic mode); when not even those exist, it is
/// ready and every call fails at once with [`Error::Unavailable`].
///
/// # Cost
/// The eligible and ready candidates are kept as a sorted list, updated when readiness or
/// health changes (health events, own outcome records, the end of the earliest exclusion),
/// not rebuilt per request. A request costs one pick, O(1) bookkeeping and one outcome
/// record; it takes no lock and allocates nothing of its own.
///
/// # Caller location
/// A [`GeoPoint`] in the request's extensions is the caller's location for geo-aware
/// strategies; without one, the builder's [`caller`](BalanceBuilder::caller) is used.
pub struct Balance<S, C = HttpClassify> {
    state: Option<State>,
    slots: Vec<Slot<S>>,
    /// Eligible, ready, live slots, ascending.
    candidates: Vec<NodeId>,
    /// Slots that are not known to be ready (just called, pending, or being made).
    to_poll: Vec<usize>,
    /// Panic-mode candidates, and the filtered list for requests that exclude regions.
    scratch: Vec<NodeId>,
    mode: Mode,
    ready: bool,
    strategy: Arc<dyn Strategy>,
    classify: C,
    options: Options,
    changes: Arc<AtomicU64>,
    seen_changes: u64,
    refresh_at: Instant,
    rng: u64,
    last_caller: Option<Caller>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    discover: Option<BoxDiscover<S>>,
}

/// A region and its inner service, as a discovery stream inserts them.
///
/// The discovery key of a [`Change`] is the region id (anything that is `AsRef<str>`).
#[derive(Debug, Clone)]
pub struct Regional<S> {
    region: Region,
    service: S,
}

/// Per-snapshot state shared with the response futures.
pub(crate) struct Shared {
    monitor: HealthMonitor,
    regions: Box<[Arc<str>]>,
    changes: Arc<AtomicU64>,
}

/// Builder options that outlive one snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) outlier: sluice_health::OutlierConfig,
    pub(crate) decay: Option<Duration>,
    pub(crate) refresh: Duration,
    pub(crate) caller: Option<Caller>,
}

pub(crate) type BoxDiscover<S> =
    Box<dyn FnMut(&mut Context<'_>) -> Poll<Option<Result<Change<String, Regional<S>>, BoxError>>> + Send>;

struct State {
    snapshot: Arc<Snapshot>,
    shared: Arc<Shared>,
}

struct Slot<S> {
    service: Inner<S>,
    /// Polled ready since its last call.
    ready: bool,
    /// Eligible at the last refresh.
    eligible: bool,
    /// In `candidates`.
    listed: bool,
}

pub(crate) enum Inner<S> {
    Making(MakeFuture<S>),
    Live(S),
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Pick among `candidates`.
    Normal,
    /// Pick among `scratch`, the least-bad ready regions.
    Panic,
    /// Fail calls at once.
    Unavailable { retry_at: Option<Instant> },
}

/// The current instant, from tokio's clock so that a paused test clock flows through.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

// ===== impl Balance =====

impl Balance<()> {
    /// A builder with every option at its default: the default strategy (`Locality`),
    /// [`HttpClassify`], default outlier detection and [`DEFAULT_REFRESH`]. The builder's
    /// constructors decide the inner service type.
    pub fn builder() -> BalanceBuilder {
        BalanceBuilder::default()
    }
}

impl<S, C> Balance<S, C> {
    pub(crate) fn from_parts(
        strategy: Arc<dyn Strategy>,
        classify: C,
        options: Options,
        seed: u64,
        discover: Option<BoxDiscover<S>>,
    ) -> Self {
        Self {
            state: None,
            slots: Vec::new(),
            candidates: Vec::new(),
            to_poll: Vec::new(),
            scratch: Vec::new(),
            mode: Mode::Unavailable { retry_at: None },
            ready: false,
            strategy,
            classify,
            options,
            changes: Arc::new(AtomicU64::new(0)),
            seen_changes: 0,
            refresh_at: now(),
            rng: seed,
            last_caller: None,
            timer: None,
            discover,
        }
    }

    /// Installs `snapshot` with one slot per node (`services[i]` for node `i`) and a fresh
    /// health monitor.
    pub(crate) fn install(&mut self, snapshot: Arc<Snapshot>, services: Vec<Inner<S>>) {
        let monitor = HealthMonitor::new(Arc::clone(&snapshot), self.options.outlier.clone());
        watch(&monitor, &self.changes);
        self.install_with(snapshot, services, monitor);
    }

    /// Installs `snapshot` with `monitor` (a fresh one, or the successor of the current one,
    /// which shares its event channel and so the watcher already running).
    fn install_with(&mut self, snapshot: Arc<Snapshot>, services: Vec<Inner<S>>, monitor: HealthMonitor) {
        debug_assert_eq!(snapshot.len(), services.len());
        let regions = snapshot.nodes().iter().map(|n| Arc::from(n.region().id())).collect();
        let shared = Arc::new(Shared { monitor, regions, changes: Arc::clone(&self.changes) });
        self.slots = services
            .into_iter()
            .map(|service| Slot { service, ready: false, eligible: false, listed: false })
            .collect();
        self.to_poll = (0..self.slots.len()).collect();
        self.state = Some(State { snapshot, shared });
        self.candidates.clear();
        self.refresh(now());
    }

    /// The current snapshot, or `None` while discovery has produced no region.
    pub fn snapshot(&self) -> Option<&Arc<Snapshot>> {
        self.state.as_ref().map(|s| &s.snapshot)
    }

    /// The health monitor of the current snapshot: spawn a prober on it for active checks, or
    /// read a region's status. A membership change replaces it with its successor, which keeps
    /// the passive health of the regions that stay.
    pub fn health(&self) -> Option<&HealthMonitor> {
        self.state.as_ref().map(|s| &s.shared.monitor)
    }

    /// The strategy's name, for logs.
    pub fn strategy_name(&self) -> &'static str {
        self.strategy.name()
    }

    /// Number of regions whose service is ready and that are eligible right now, as of the
    /// last `poll_ready`.
    pub fn ready_len(&self) -> usize {
        self.candidates.len()
    }

    /// The caller for `point`, converted once per distinct location in a row (callers of one
    /// balancer mostly share theirs).
    fn caller(&mut self, point: GeoPoint) -> Caller {
        match self.last_caller {
            Some(caller) if caller.point() == point => caller,
            _ => {
                let caller = Caller::new(point);
                self.last_caller = Some(caller);
                caller
            }
        }
    }

    fn next_entropy(&mut self) -> u64 {
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Recomputes every slot's eligibility and the candidate list. O(n); runs on health
    /// changes, membership changes and the refresh deadline, never per request.
    fn refresh(&mut self, now: Instant) {
        self.seen_changes = self.changes.load(Ordering::Acquire);
        let Some(state) = &self.state else {
            self.candidates.clear();
            return;
        };
        let mut next = now + self.options.refresh;
        self.candidates.clear();
        for (node, slot) in state.snapshot.nodes().iter().zip(&mut self.slots) {
            let availability = node.metrics().availability(now);
            if let Availability::Excluded { until } = availability {
                next = next.min(until);
            }
            slot.eligible = availability.is_eligible() && !matches!(slot.service, Inner::Failed);
            slot.listed = slot.eligible && slot.ready;
            if slot.listed {
                self.candidates.push(node.id());
            }
        }
        self.refresh_at = next;
    }

    fn list(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if slot.listed || !slot.eligible || !slot.ready {
            return;
        }
        slot.listed = true;
        let id = NodeId::from_index(index as u32);
        if let Err(at) = self.candidates.binary_search(&id) {
            self.candidates.insert(at, id);
        }
    }

    fn unlist(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if !slot.listed {
            return;
        }
        slot.listed = false;
        let id = NodeId::from_index(index as u32);
        if let Ok(at) = self.candidates.binary_search(&id) {
            self.candidates.remove(at);
        }
    }

    /// Applies a batch of discovery changes: builds the next snapshot (regions that stay keep
    /// their metrics and their service) and the successor of the current monitor (regions that
    /// stay keep their passive health: failure streaks, ejections, cooldowns), the same swap a
    /// live reload of `sluice-client` makes.
    fn apply(&mut self, batch: Vec<Change<String, Regional<S>>>) {
        let mut changes = Vec::with_capacity(batch.len());
        let mut inserted: HashMap<String, S> = HashMap::new();
        for change in batch {
            match change {
                Change::Insert(_, Regional { region, service }) => {
                    if let Err(e) = Snapshot::builder().build([region.clone()]) {
                        tracing::error!(region = region.id(), error = %e, "discovery: ignoring an invalid region");
                        continue;
                    }
                    inserted.insert(region.id().to_owned(), service);
                    changes.push(MembershipChange::Upsert(region));
                }
                Change::Remove(id) => {
                    inserted.remove(&id);
                    changes.push(MembershipChange::Remove(id));
                }
            }
        }
        let mut builder = Snapshot::builder();
        if let Some(decay) = self.options.decay {
            builder = builder.metrics_decay(decay);
        }
        let next = match &self.state {
            Some(state) => builder.apply(&state.snapshot, changes),
            None => builder.epoch(now()).build(changes.into_iter().filter_map(|c| match c {
                MembershipChange::Upsert(r) => Some(r),
                _ => None,
            })),
        };
        let next = match next {
            Ok(next) => Arc::new(next),
            Err(sluice_region_model::SnapshotError::Empty) => {
                tracing::info!("discovery removed every region");
                self.state = None;
                self.slots.clear();
                self.to_poll.clear();
                self.candidates.clear();
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "discovery: change rejected, keeping the current regions");
                return;
            }
        };
        let successor = self.state.as_ref().and_then(|state| match state.shared.monitor.successor(Arc::clone(&next)) {
            Ok(monitor) => Some(monitor),
            Err(e) => {
                tracing::warn!(error = %e, "discovery: passive health starts afresh");
                None
            }
        });
        let mut old: HashMap<Arc<str>, Slot<S>> = match self.state.take() {
            Some(state) => state.shared.regions.iter().cloned().zip(self.slots.drain(..)).collect(),
            None => HashMap::new(),
        };
        let services = next
            .nodes()
            .iter()
            .map(|node| {
                let id = node.region().id();
                match inserted.remove(id) {
                    Some(service) => Inner::Live(service),
                    None => old.remove(id).map_or(Inner::Failed, |slot| slot.service),
                }
            })
            .collect();
        tracing::debug!(regions = next.len(), generation = next.generation(), "discovery: new snapshot");
        match successor {
            Some(monitor) => self.install_with(next, services, monitor),
            None => self.install(next, services),
        }
    }

    /// Polls discovery until it has nothing more; applies what it yielded.
    fn poll_discover(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let Some(discover) = &mut self.discover else { return Ok(()) };
        let mut batch = Vec::new();
        let mut failed = None;
        loop {
            match discover(cx) {
                Poll::Ready(Some(Ok(change))) => batch.push(change),
                Poll::Ready(Some(Err(source))) => {
                    failed = Some(source);
                    break;
                }
                Poll::Ready(None) => {
                    self.discover = None;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !batch.is_empty() {
            self.apply(batch);
        }
        match failed {
            Some(source) => Err(Error::Discover { source }),
            None => Ok(()),
        }
    }
}

impl<S, C> Balance<S, C> {
    /// Drives the readiness of every slot in `to_poll`.
    fn poll_slots<B>(&mut self, cx: &mut Context<'_>)
    where
        S: Service<http::Request<B>>,
        S::Error: Into<BoxError>,
    {
        let mut i = 0;
        while i < self.to_poll.len() {
            let index = self.to_poll[i];
            let slot = &mut self.slots[index];
            let polled = match &mut slot.service {
                Inner::Making(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok(service)) => {
                        slot.service = Inner::Live(service);
                        continue; // poll the new service's readiness right away
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                },
                Inner::Live(service) => service.poll_ready(cx).map_err(Into::into),
                Inner::Failed => Poll::Ready(Err(BoxError::from("retired"))),
            };
            match polled {
                Poll::Ready(Ok(())) => {
                    slot.ready = true;
                    self.to_poll.swap_remove(i);
                    self.list(index);
                }
                Poll::Ready(Err(e)) => {
                    self.to_poll.swap_remove(i);
                    self.retire(index, &e);
                }
                Poll::Pending => {
                    slot.ready = false;
                    self.unlist(index);
                    i += 1;
                }
            }
        }
    }

    fn retire(&mut self, index: usize, error: &BoxError) {
        self.unlist(index);
        let slot = &mut self.slots[index];
        let was_failed = matches!(slot.service, Inner::Failed);
        slot.service = Inner::Failed;
        slot.ready = false;
        slot.eligible = false;
        if let (false, Some(state)) = (was_failed, &self.state) {
            let node = NodeId::from_index(index as u32);
            tracing::warn!(region = %state.shared.regions[index], %error, "inner service failed; retired");
            state.shared.record(node, Outcome::ConnectError, now());
        }
    }

    /// Chooses the mode once the slots were polled and the set is fresh.
    fn decide(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.candidates.is_empty() {
            self.mode = Mode::Normal;
            return Poll::Ready(());
        }
        if self.state.is_none() {
            if self.discover.is_some() {
                return Poll::Pending;
            }
            self.mode = Mode::Unavailable { retry_at: None };
            return Poll::Ready(());
        }
        let now = now();
        if now >= self.refresh_at {
            self.refresh(now);
            if !self.candidates.is_empty() {
                self.mode = Mode::Normal;
                return Poll::Ready(());
            }
        }
        if self.slots.iter().any(|s| s.eligible) {
            // Eligible regions exist but none is ready: their services wake us when they are,
            // and the timer when an exclusion ends or the set is due for a check.
            return self.wait(cx);
        }
        match self.fall_back(now) {
            Some(mode) => {
                self.mode = mode;
                Poll::Ready(())
            }
            None => self.wait(cx),
        }
    }

    /// With no eligible region: the least-bad ready ones ([`HealthMonitor::select`]'s panic
    /// mode) in `scratch` and `Some(Mode::Panic)`; `Some(Mode::Unavailable)` when there are
    /// none at all; `None` when there are some but none is ready yet.
    fn fall_back(&mut self, now: Instant) -> Option<Mode> {
        let state = self.state.as_ref()?;
        let slots = &self.slots;
        let selection = state.shared.monitor.select(
            now,
            |id| matches!(slots[id.index()].service, Inner::Failed | Inner::Making(_)),
            &mut self.scratch,
        );
        if let Selection::Unavailable { retry_at } = selection {
            return Some(Mode::Unavailable { retry_at });
        }
        self.scratch.retain(|id| slots[id.index()].ready);
        if self.scratch.is_empty() {
            return None;
        }
        tracing::debug!(candidates = self.scratch.len(), "no eligible region; panic mode");
        Some(Mode::Panic)
    }

    /// Pending until a service wakes us or the refresh deadline passes (the latter only on a
    /// tokio runtime with a timer; elsewhere only services wake us).
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if tokio::runtime::Handle::try_current().is_ok() {
            let deadline = tokio::time::Instant::from_std(self.refresh_at);
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                // Already due: have the task poll again at once, which refreshes.
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

impl<S, C, B, RB> Service<http::Request<B>> for Balance<S, C>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: Into<BoxError>,
    RB: http_body::Body,
    C: Classify<http::Response<RB>, S::Error> + Clone,
{
    type Response = http::Response<GuardedBody<RB>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let discovered = self.poll_discover(cx);
        self.poll_slots::<B>(cx);
        // Health changes are checked here; the refresh deadline is checked by `call`, which
        // reads the clock anyway, so that a ready service costs no clock read here.
        if self.changes.load(Ordering::Acquire) != self.seen_changes {
            self.refresh(now());
        }
        let decided = self.decide(cx);
        if let Err(e) = discovered {
            tracing::warn!(error = %e, "discovery failed; serving the regions known so far");
        }
        self.ready = decided.is_ready();
        decided.map(Ok)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !std::mem::take(&mut self.ready) {
            return ResponseFuture::failed(Error::NotReady);
        }
        let now = now();
        if now >= self.refresh_at {
            self.refresh(now);
        }
        let tried = request.extensions().get::<Tried>();
        let caller = match request.extensions().get::<GeoPoint>() {
            Some(point) => Some(self.caller(*point)),
            None => self.options.caller,
        };
        let id = match self.pick(now, caller, tried) {
            Ok(id) => id,
            Err(e) => return ResponseFuture::failed(e),
        };
        let Some(state) = &self.state else { return ResponseFuture::failed(Error::NotReady) };
        let shared = &state.shared;
        let index = id.index();
        if let Some(tried) = tried {
            tried.push(Arc::clone(&shared.regions[index]));
        }
        tracing::trace!(node = %id, region = %shared.regions[index], strategy = self.strategy.name(), "picked");
        let slot = &mut self.slots[index];
        let Inner::Live(service) = &mut slot.service else {
            return ResponseFuture::failed(Error::NotReady);
        };
        let guard = state.snapshot.node(id).metrics().start_request();
        let future = service.call(request);
        slot.ready = false;
        self.to_poll.push(index);
        ResponseFuture::new(future, Arc::clone(shared), id, guard, now, self.classify.clone())
    }
}

impl<S, C> Balance<S, C> {
    /// Picks a ready region for one request: an eligible one when there is any, a least-bad
    /// one in panic mode, never one in `tried`.
    fn pick(&mut self, now: Instant, caller: Option<Caller>, tried: Option<&Tried>) -> Result<NodeId, Error> {
        if let Mode::Unavailable { retry_at } = self.mode {
            return Err(Error::Unavailable { retry_at });
        }
        for round in 0..2 {
            // In panic mode, and when the set turned out stale, look again first: a region may
            // have become eligible (or stopped being) without an event reaching us.
            if self.mode == Mode::Panic || round == 1 {
                self.refresh(now);
                if !self.candidates.is_empty() {
                    self.mode = Mode::Normal;
                } else if self.mode == Mode::Normal {
                    match self.fall_back(now) {
                        Some(Mode::Unavailable { retry_at }) => return Err(Error::Unavailable { retry_at }),
                        Some(mode) => self.mode = mode,
                        None => break,
                    }
                }
            }
            let entropy = self.next_entropy();
            let Some(state) = &self.state else { break };
            let list: &[NodeId] = match (self.mode, tried) {
                (Mode::Normal, Some(tried)) if !tried.is_empty() => {
                    tried.exclude(&self.candidates, &state.shared.regions, &mut self.scratch);
                    &self.scratch
                }
                (Mode::Normal, _) => &self.candidates,
                (_, tried) => {
                    if let Some(tried) = tried {
                        tried.retain_untried(&mut self.scratch, &state.shared.regions);
                    }
                    &self.scratch
                }
            };
            let view = PickView::new(&state.snapshot, list, now, entropy).with_caller_opt(caller);
            match self.strategy.pick(&view) {
                Some(id) if self.mode != Mode::Normal || state.snapshot.node(id).metrics().is_eligible(now) => {
                    return Ok(id);
                }
                Some(_) => self.changes.fetch_add(1, Ordering::Release),
                None => break,
            };
        }
        let retry_at = match &self.state {
            Some(state) => match state.shared.monitor.select(now, |_| false, &mut self.scratch) {
                Selection::Unavailable { retry_at } => retry_at,
                _ => None,
            },
            None => None,
        };
        Err(Error::Unavailable { retry_at })
    }
}

impl<S, C> fmt::Debug for Balance<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("regions", &self.slots.len())
            .field("ready", &self.candidates.len())
            .field("strategy", &self.strategy.name())
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

// ===== impl Regional =====

impl<S> Regional<S> {
    /// Pairs a region with the service that reaches it.
    pub fn new(region: Region, service: S) -> Self {
        Self { region, service }
    }

    /// The region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }
}

// ===== impl Shared =====

impl Shared {
    /// Records an outcome; when it made the node ineligible, tells the balancer to refresh.
    pub(crate) fn record(&self, node: NodeId, outcome: Outcome, now: Instant) {
        self.monitor.record(node, outcome, now);
        if !matches!(outcome, Outcome::Success { .. })
            && let Some(n) = self.monitor.snapshot().get(node)
            && !n.metrics().is_eligible(now)
        {
            self.changes.fetch_add(1, Ordering::Release);
        }
    }

    pub(crate) fn region(&self, node: NodeId) -> &Arc<str> {
        &self.regions[node.index()]
    }
}

pub(crate) fn live<S>(service: S) -> Inner<S> {
    Inner::Live(service)
}

pub(crate) fn making<S>(future: MakeFuture<S>) -> Inner<S> {
    Inner::Making(future)
}

/// Bumps `changes` on every health event of `monitor`, from a task on the current tokio
/// runtime; without a runtime the refresh deadline alone keeps the set fresh. The task ends
/// when the monitor is dropped.
fn watch(monitor: &HealthMonitor, changes: &Arc<AtomicU64>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    let mut events = monitor.subscribe();
    let changes = Arc::clone(changes);
    handle.spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        while let Ok(_) | Err(RecvError::Lagged(_)) = events.recv().await {
            changes.fetch_add(1, Ordering::Release);
        }
    });
}
