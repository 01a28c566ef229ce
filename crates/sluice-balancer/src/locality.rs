//! Locality first: the nearest healthy region with room, spilling outwards only when it must.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use sluice_region_model::{EARTH_RADIUS_KM, GeoPoint, NodeId, Snapshot};

use crate::{
    ConfigError, PickView, Strategy,
    error::{check_non_negative, check_positive},
    rng::PickRng,
    select,
};

/// Regions whose distance from the caller is within this much of the nearest one's form one
/// tier: 500 km, a metro area or a small country. Seoul and Tokyo (1,150 km apart) are two
/// tiers for a caller in Seoul.
pub const DEFAULT_TIER_KM: f64 = 500.0;

/// Without a caller location, regions whose measured round trip is within this much of the
/// nearest one's form one tier: 3 ms (Seoul at 23 ms and Tokyo at 28 ms are two tiers).
pub const DEFAULT_TIER_RTT: Duration = Duration::from_millis(3);

/// "Clearly slower": a near region is left for the next tier when its latency exceeds the
/// next tier's by more than this share, plus the round-trip gap between them.
pub const DEFAULT_SLOWER_MARGIN: f64 = 0.25;

/// Successful answers after which a region's usual latency counts as known: 200. LLM answer
/// times vary by ±80 % from call to call, so a mean of a few dozen answers is still off by
/// 10 % or more; "clearly slower" compares two regions only when both are known.
pub const ESTABLISHED_SAMPLES: u64 = 200;

/// Capacity assumed, for sharing load within a tier, for a region with neither a configured
/// nor a learned concurrency limit. It only scales `in_flight` (least-request); no call is
/// ever held back by it.
pub const DEFAULT_ASSUMED_LIMIT: f64 = 100.0;

/// Caller locations are rounded to a grid of this many degrees (about 28 km of latitude) to
/// key the cache of nearness orders.
pub const DEFAULT_LOCATION_CELL_DEG: f64 = 0.25;

/// Slots of the cache of nearness orders (direct-mapped by caller cell).
pub const LOCATION_CACHE_SLOTS: usize = 64;

/// Without a caller location, how long a nearness order built from measured round trips is
/// used before a pick rebuilds it (for views above [`STACK_NODES`] nodes).
pub const DEFAULT_RTT_REFRESH: Duration = Duration::from_secs(1);

/// Views up to this size are ranked by round trip on the stack, per pick.
pub const STACK_NODES: usize = 64;

/// Tiers up to this size are drawn from in one pass (their usable members kept on the stack).
const TIER_STACK: usize = 32;

/// Round trip per kilometre of great-circle distance: light in fibre covers about 200 km per
/// millisecond, there and back.
const RTT_NS_PER_KM: f64 = 10_000.0;

/// A region that looks fine only because its slow value faded gets at most this many calls
/// at once until fresh answers settle it.
pub const EXPLORE_CALLS: f64 = 4.0;

/// Key of the round-trip order in the cache.
const NO_CALLER_KEY: u64 = u64::MAX;

/// The default strategy: nearest healthy region with room first, in the spirit of Envoy's
/// locality-weighted priorities with spillover and of tower's P2C.
///
/// # The rule
/// 1. **Nearness** ranks regions, apart from how fast they answer. With a caller location it
///    is the great-circle distance from the caller; without one, the round trip this process
///    measured itself (`NodeMetrics::probe_rtt`: active probes and connect times). Regions
///    without a measured round trip rank after those with one.
/// 2. Regions of about equal nearness form a **tier**: within [`DEFAULT_TIER_KM`] (500 km) of
///    the tier's nearest, or within [`DEFAULT_TIER_RTT`] (3 ms) without a caller location.
/// 3. Within a tier, the choice is **P2C** over `in_flight / (limit × weight)`: the less
///    loaded of two random members, relative to capacity (least-request).
/// 4. The chosen region takes the call unless it must **spill** to the next tier because it
///    * is **at its limit**: `in_flight ≥ concurrency_limit` (configured `max_concurrency`, or
///      learned from 429s; see `NodeMetrics`);
///    * is **ramping up** after a recovery: with a slow-start factor `f`, it takes the call
///      with probability `f` only;
///    * is **failing** (`NodeMetrics::is_failing`: three failures in a row, or nothing but
///      failures, within the last 10 s);
///    * is **clearly slower**: its usual latency × (1 + error rate) exceeds the next tier's by
///      more than [`DEFAULT_SLOWER_MARGIN`] (25 %) plus the round-trip gap between the two
///      (probe RTTs, or 10 µs per km of distance).
///      The usual latency is `NodeMetrics`' baseline, a mean of successful calls, so the
///      ±80 % noise of one answer does not move it, and two regions are compared only once
///      both baselines rest on [`ESTABLISHED_SAMPLES`] answers (until then a region is
///      "like its peers": cold start). Each side's value fades towards the other's while it
///      gets no calls, so a region avoided as slow is tried again, [`EXPLORE_CALLS`] calls at
///      a time, until it proves fast.
///
///    Unhealthy, ejected and throttled regions (a Retry-After cooldown) never reach the view.
/// 5. **Limits are soft.** When no tier can take the call, it goes to the region with the
///    lowest `in_flight / limit` among those that are not failing (nearest first on ties);
///    a call is never refused because of a limit.
///
/// Weights scale a region's share within its tier only; they never move traffic across tiers.
///
/// # Cost
/// With a caller location, the nearness order of every node is computed once per snapshot and
/// caller cell ([`DEFAULT_LOCATION_CELL_DEG`], about 28 km) and kept in a bounded,
/// direct-mapped cache of [`LOCATION_CACHE_SLOTS`] entries read through `ArcSwap` (lock-free).
/// A pick then walks the tiers from the nearest and usually stops at the first: O(1) in the
/// number of nodes. The first pick for a new cell (or a new snapshot) sorts the nodes once,
/// O(n log n), and allocates its order; every later pick from that cell allocates nothing.
/// Without a caller location, up to [`STACK_NODES`] candidates are ranked by round trip on
/// the stack per pick (no allocation); larger views use a cached order rebuilt every
/// [`DEFAULT_RTT_REFRESH`].
#[derive(Debug)]
pub struct Locality {
    tier_km: f64,
    tier_rtt_ns: f64,
    margin: f64,
    assumed_limit: f64,
    cell_deg: f64,
    rtt_refresh_ns: u64,
    cache: Box<[ArcSwapOption<Order>]>,
}

/// Settings for [`Locality`]. Get one from [`Locality::builder`].
#[derive(Debug, Clone)]
pub struct LocalityBuilder {
    tier_km: f64,
    tier_rtt: Duration,
    margin: f64,
    assumed_limit: f64,
    cell_deg: f64,
    rtt_refresh: Duration,
}

/// The nodes of one snapshot in nearness order, for one caller cell.
#[derive(Debug)]
struct Order {
    generation: u64,
    key: u64,
    /// When it was built (nanoseconds since the epoch); only the round-trip order expires.
    built_ns: u64,
    /// Node indices, nearest first.
    nodes: Box<[u32]>,
    /// Per position: one past the last position of its tier.
    tier_end: Box<[u32]>,
    /// Per position: the node's round trip (measured, or derived from distance), nanoseconds.
    rtt_ns: Box<[f64]>,
}

/// An order, either borrowed from the cache or just built.
enum OrderGuard {
    Cached(arc_swap::Guard<Option<Arc<Order>>>),
    Built(Arc<Order>),
}

impl std::ops::Deref for OrderGuard {
    type Target = Order;

    fn deref(&self) -> &Order {
        match self {
            OrderGuard::Cached(g) => g.as_deref().expect("checked on load"),
            OrderGuard::Built(o) => o,
        }
    }
}

/// One ranking of the candidates: positions into `nodes`, tiers, round trips.
struct Ranking<'a> {
    nodes: &'a [u32],
    tier_end: &'a [u32],
    rtt_ns: &'a [f64],
    /// Whether `nodes` holds only candidates (no membership check needed).
    filtered: bool,
}

/// What [`Locality::load`] reads.
#[derive(Debug, Clone, Copy)]
struct Load {
    in_flight: f64,
    limit: f64,
    ratio: f64,
    cost: f64,
}

/// A node passed over, kept in case no tier can take the call.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Fallback {
    failing: bool,
    load: f64,
    id: NodeId,
}

// ===== impl Locality =====

impl Locality {
    /// With default settings.
    pub fn new() -> Self {
        Self::builder().build().expect("defaults are valid")
    }

    /// Settings, starting from the defaults.
    pub fn builder() -> LocalityBuilder {
        LocalityBuilder {
            tier_km: DEFAULT_TIER_KM,
            tier_rtt: DEFAULT_TIER_RTT,
            margin: DEFAULT_SLOWER_MARGIN,
            assumed_limit: DEFAULT_ASSUMED_LIMIT,
            cell_deg: DEFAULT_LOCATION_CELL_DEG,
            rtt_refresh: DEFAULT_RTT_REFRESH,
        }
    }

    /// `id`'s load: calls in flight, its limit (infinite if unknown), `in_flight / capacity`
    /// (capacity: the limit, or the assumed one) and the P2C cost
    /// `(in_flight + 1) / (capacity × effective weight)`.
    #[inline]
    fn load(&self, view: &PickView<'_>, id: NodeId, now_ns: u64) -> Load {
        let node = view.node(id);
        let m = node.metrics();
        let limit = m.concurrency_limit_or_inf();
        let capacity = if limit.is_finite() { limit } else { self.assumed_limit };
        let w = select::effective_weight_ns(node, now_ns) / f64::from(sluice_region_model::DEFAULT_WEIGHT);
        let in_flight = f64::from(m.in_flight());
        Load { in_flight, limit, ratio: in_flight / capacity, cost: (in_flight + 1.0) / (capacity * w) }
    }

    fn fallback(&self, view: &PickView<'_>, id: NodeId, now_ns: u64, failing: bool) -> Fallback {
        Fallback { failing, load: self.load(view, id, now_ns).ratio, id }
    }

    /// Whether the cheaper of `c` (at position `pc`) is clearly slower than `n` (at `pn`).
    /// Returns `(slower now, slower by the last values before fading)`.
    #[inline]
    fn slower(&self, view: &PickView<'_>, c: NodeId, n: NodeId, gap_ns: f64, now_ns: u64) -> (bool, bool) {
        let (mc, mn) = (view.node(c).metrics(), view.node(n).metrics());
        let (Some(bc), Some(bn)) = (mc.latency_baseline_ns(), mn.latency_baseline_ns()) else {
            // Cold start is "like the peers": never clearly slower.
            return (false, false);
        };
        if mc.successes().min(mn.successes()) < ESTABLISHED_SAMPLES {
            return (false, false);
        }
        // Bounds first, so that the usual case pays for no decay or one: each faded value
        // lies between the two baselines, decay only lowers an error rate, and the next
        // tier's `1 + error rate` is at least 1. Regions serving the same model pass here.
        let (ec_max, m1) = (1.0 + mc.error_rate_bound(), 1.0 + self.margin);
        let c_max = bc.max(bn) * ec_max;
        if c_max <= bc.min(bn) * m1 + gap_ns {
            return (false, false);
        }
        let faded_n = mn.baseline_toward(now_ns, bc).unwrap_or(bn);
        if bc * ec_max <= bn * m1 + gap_ns && c_max <= faded_n * m1 + gap_ns {
            return (false, false);
        }
        let (ec, en) = (1.0 + mc.error_rate_at(now_ns), 1.0 + mn.error_rate_at(now_ns));
        let bar = |c: f64, n: f64| c * ec > n * en * m1 + gap_ns;
        let faded_c = mc.baseline_toward(now_ns, bn).unwrap_or(bc);
        (bar(faded_c, faded_n), bar(bc, bn))
    }

    fn choose(&self, view: &PickView<'_>, r: &Ranking<'_>, rng: &mut PickRng) -> Option<NodeId> {
        let now_ns = view.now_nanos();
        let in_view = |pos: usize| r.filtered || view.contains(NodeId::from_index(r.nodes[pos]));
        let mut fallback: Option<Fallback> = None;
        let mut keep = |f: Fallback| {
            if fallback.is_none_or(|b| (f.failing, f.load) < (b.failing, b.load)) {
                fallback = Some(f);
            }
        };
        let mut start = 0;
        while start < r.nodes.len() {
            let end = r.tier_end[start] as usize;
            let Some((pos, load)) = self.pick_in_tier(view, r, start, end, rng, now_ns, &in_view, &mut keep) else {
                start = end;
                continue;
            };
            let mut id = NodeId::from_index(r.nodes[pos]);
            let mut load = load;
            if load.in_flight >= load.limit && end - start > 1 {
                // The pair drawn was full; another member of the tier may have room.
                if let Some((other, l)) = self.least_loaded(view, r, start, end, now_ns, &in_view) {
                    (id, load) = (other, l);
                }
            }
            let Load { in_flight, limit, ratio, .. } = load;
            let here = Fallback { failing: false, load: ratio, id };
            if in_flight >= limit {
                keep(here);
                start = end;
                continue;
            }
            let m = view.node(id).metrics();
            let factor = if m.in_slow_start() { m.weight_factor_at(now_ns) } else { 1.0 };
            if factor < 1.0 {
                // Ramping in after a recovery: its estimates predate the recovery, so only the
                // ramp decides, once, over the slow-start window.
                if rng.unit() < factor {
                    return Some(id);
                }
                keep(here);
                start = end;
                continue;
            }
            // The next tier's nearest usable node, to compare service times with.
            let next = (end..r.nodes.len())
                .find(|&p| in_view(p) && !view.node(NodeId::from_index(r.nodes[p])).metrics().is_failing_at(now_ns));
            if let Some(p) = next {
                let gap = (r.rtt_ns[p] - r.rtt_ns[pos]).max(0.0);
                let (slower, was_slower) = self.slower(view, id, NodeId::from_index(r.nodes[p]), gap, now_ns);
                // A region that was slow and only looks fine because its value faded is
                // tried by a few calls at a time until fresh answers settle it.
                if slower || (was_slower && in_flight >= EXPLORE_CALLS) {
                    keep(here);
                    start = end;
                    continue;
                }
            }
            return Some(id);
        }
        fallback.map(|f| f.id)
    }

    /// The usable member of positions `start..end` with the lowest P2C cost.
    fn least_loaded(
        &self,
        view: &PickView<'_>,
        r: &Ranking<'_>,
        start: usize,
        end: usize,
        now_ns: u64,
        in_view: &impl Fn(usize) -> bool,
    ) -> Option<(NodeId, Load)> {
        let mut best: Option<(NodeId, Load)> = None;
        for pos in start..end {
            let id = NodeId::from_index(r.nodes[pos]);
            if !in_view(pos) || view.node(id).metrics().is_failing_at(now_ns) {
                continue;
            }
            let l = self.load(view, id, now_ns);
            if best.is_none_or(|(_, b)| l.cost < b.cost) {
                best = Some((id, l));
            }
        }
        best
    }

    /// P2C within positions `start..end`: the less loaded of two random usable members.
    /// Failing members go to `keep` and are not chosen; `None` if no member is usable.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn pick_in_tier(
        &self,
        view: &PickView<'_>,
        r: &Ranking<'_>,
        start: usize,
        end: usize,
        rng: &mut PickRng,
        now_ns: u64,
        in_view: &impl Fn(usize) -> bool,
        keep: &mut impl FnMut(Fallback),
    ) -> Option<(usize, Load)> {
        let usable = |pos: usize| {
            let id = NodeId::from_index(r.nodes[pos]);
            in_view(pos) && !view.node(id).metrics().is_failing_at(now_ns)
        };
        let load_at = |pos: usize| self.load(view, NodeId::from_index(r.nodes[pos]), now_ns);
        if end - start == 1 {
            if usable(start) {
                return Some((start, load_at(start)));
            }
            if in_view(start) {
                keep(self.fallback(view, NodeId::from_index(r.nodes[start]), now_ns, true));
            }
            return None;
        }
        // Usable positions, remembered on the stack for tiers of up to `TIER_STACK` members.
        let mut found = [0u32; TIER_STACK];
        let mut count = 0usize;
        for pos in start..end {
            if usable(pos) {
                if count < TIER_STACK {
                    found[count] = pos as u32;
                }
                count += 1;
            } else if in_view(pos) {
                keep(self.fallback(view, NodeId::from_index(r.nodes[pos]), now_ns, true));
            }
        }
        let nth = |k: usize| {
            if count <= TIER_STACK {
                found[k] as usize
            } else {
                (start..end).filter(|&p| usable(p)).nth(k).expect("counted")
            }
        };
        match count {
            0 => None,
            1 => Some((nth(0), load_at(nth(0)))),
            n => {
                let (a, b) = rng.distinct_pair(n);
                let (a, b) = (nth(a), nth(b));
                let (la, lb) = (load_at(a), load_at(b));
                Some(if lb.cost < la.cost || (lb.cost == la.cost && rng.next_u64() & 1 == 0) {
                    (b, lb)
                } else {
                    (a, la)
                })
            }
        }
    }

    /// The cached order for `key`, built by `build` and stored on a miss. The hit path is
    /// one lock-free `ArcSwap` load, without touching the `Arc`'s count.
    fn cached(&self, snapshot: &Snapshot, key: u64, now_ns: u64, build: impl FnOnce() -> Order) -> OrderGuard {
        let slot = &self.cache[slot_of(key, snapshot.generation())];
        let fresh = |o: &Order| {
            o.generation == snapshot.generation()
                && o.key == key
                && (key != NO_CALLER_KEY || now_ns.saturating_sub(o.built_ns) < self.rtt_refresh_ns)
        };
        let guard = slot.load();
        if guard.as_deref().is_some_and(fresh) {
            return OrderGuard::Cached(guard);
        }
        drop(guard);
        let order = Arc::new(build());
        slot.store(Some(Arc::clone(&order)));
        OrderGuard::Built(order)
    }

    /// The order of every node of `snapshot` by distance from the centre of `caller`'s cell.
    fn build_geo(&self, snapshot: &Snapshot, key: u64, centre: GeoPoint) -> Order {
        let unit = centre.unit_vector();
        let km: Vec<f64> = snapshot
            .unit_vectors()
            .iter()
            .map(|u| (u[0] * unit[0] + u[1] * unit[1] + u[2] * unit[2]).clamp(-1.0, 1.0).acos() * EARTH_RADIUS_KM)
            .collect();
        let mut nodes: Vec<u32> = (0..snapshot.len() as u32).collect();
        nodes.sort_by(|&a, &b| km[a as usize].total_cmp(&km[b as usize]).then(a.cmp(&b)));
        let sorted: Vec<f64> = nodes.iter().map(|&i| km[i as usize]).collect();
        let tier_end = tiers(&sorted, self.tier_km);
        let rtt_ns = sorted.iter().map(|k| k * RTT_NS_PER_KM).collect();
        Order {
            generation: snapshot.generation(),
            key,
            built_ns: 0,
            nodes: nodes.into(),
            tier_end: tier_end.into(),
            rtt_ns,
        }
    }

    /// The order of every node of `snapshot` by measured round trip, unmeasured last.
    fn build_rtt(&self, snapshot: &Snapshot, now_ns: u64) -> Order {
        let rtt: Vec<f64> =
            snapshot.nodes().iter().map(|n| n.metrics().probe_rtt_ns().unwrap_or(f64::INFINITY)).collect();
        let mut nodes: Vec<u32> = (0..snapshot.len() as u32).collect();
        nodes.sort_by(|&a, &b| rtt[a as usize].total_cmp(&rtt[b as usize]).then(a.cmp(&b)));
        let sorted: Vec<f64> = nodes.iter().map(|&i| rtt[i as usize]).collect();
        let tier_end = tiers(&sorted, self.tier_rtt_ns);
        Order {
            generation: snapshot.generation(),
            key: NO_CALLER_KEY,
            built_ns: now_ns,
            nodes: nodes.into(),
            tier_end: tier_end.into(),
            rtt_ns: sorted.into_iter().map(finite_or_zero).collect(),
        }
    }

    /// Without a caller location and at most [`STACK_NODES`] candidates: rank them by round
    /// trip on the stack.
    fn pick_small_by_rtt(&self, view: &PickView<'_>, rng: &mut PickRng) -> Option<NodeId> {
        let n = view.len();
        let mut nodes = [0u32; STACK_NODES];
        let mut rtt = [0.0f64; STACK_NODES];
        for (i, &id) in view.candidates().iter().enumerate() {
            nodes[i] = id.index() as u32;
            rtt[i] = view.node(id).metrics().probe_rtt_ns().unwrap_or(f64::INFINITY);
        }
        // Insertion sort by round trip: n ≤ 64, and usually 5.
        for i in 1..n {
            let mut j = i;
            while j > 0 && rtt[j - 1] > rtt[j] {
                rtt.swap(j - 1, j);
                nodes.swap(j - 1, j);
                j -= 1;
            }
        }
        let mut tier_end = [0u32; STACK_NODES];
        fill_tiers(&rtt[..n], self.tier_rtt_ns, &mut tier_end[..n]);
        for r in &mut rtt[..n] {
            *r = finite_or_zero(*r);
        }
        let ranking = Ranking { nodes: &nodes[..n], tier_end: &tier_end[..n], rtt_ns: &rtt[..n], filtered: true };
        self.choose(view, &ranking, rng)
    }
}

impl Default for Locality {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for Locality {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        if view.is_empty() {
            return None;
        }
        let mut rng = PickRng::new(view.entropy());
        let snapshot = view.snapshot();
        let order = match view.caller() {
            Some(caller) => {
                let p = caller.point();
                let (qlat, qlon) = (round(p.lat() / self.cell_deg), round(p.lon() / self.cell_deg));
                let key = (u64::from(qlat as i32 as u32) << 32) | u64::from(qlon as i32 as u32);
                self.cached(snapshot, key, 0, || {
                    let centre = GeoPoint::new(
                        (qlat * self.cell_deg).clamp(-90.0, 90.0),
                        (qlon * self.cell_deg).clamp(-180.0, 180.0),
                    );
                    self.build_geo(snapshot, key, centre)
                })
            }
            None if view.len() <= STACK_NODES => return self.pick_small_by_rtt(view, &mut rng),
            None => {
                let now_ns = view.now_nanos();
                self.cached(snapshot, NO_CALLER_KEY, now_ns, || self.build_rtt(snapshot, now_ns))
            }
        };
        let ranking =
            Ranking { nodes: &order.nodes, tier_end: &order.tier_end, rtt_ns: &order.rtt_ns, filtered: false };
        let picked = self.choose(view, &ranking, &mut rng);
        // Belt and braces: the order covers the snapshot, so a pick is always a candidate; if
        // the view's ids were not of this snapshot, fall back to a uniform choice.
        match picked {
            Some(id) if view.contains(id) => Some(id),
            _ => select::uniform(view, &mut rng),
        }
    }

    fn name(&self) -> &'static str {
        "locality"
    }
}

// ===== impl LocalityBuilder =====

impl LocalityBuilder {
    /// Width of a tier by distance. Default [`DEFAULT_TIER_KM`].
    pub fn tier_km(mut self, km: f64) -> Self {
        self.tier_km = km;
        self
    }

    /// Width of a tier by round trip, without a caller location. Default [`DEFAULT_TIER_RTT`].
    pub fn tier_rtt(mut self, rtt: Duration) -> Self {
        self.tier_rtt = rtt;
        self
    }

    /// How much slower (as a share) a near region must be to spill. Default
    /// [`DEFAULT_SLOWER_MARGIN`].
    pub fn slower_margin(mut self, margin: f64) -> Self {
        self.margin = margin;
        self
    }

    /// Capacity assumed for a region without a known limit. Default [`DEFAULT_ASSUMED_LIMIT`].
    pub fn assumed_limit(mut self, limit: f64) -> Self {
        self.assumed_limit = limit;
        self
    }

    /// Grid of the location cache, in degrees. Default [`DEFAULT_LOCATION_CELL_DEG`].
    pub fn location_cell_deg(mut self, deg: f64) -> Self {
        self.cell_deg = deg;
        self
    }

    /// Lifetime of a round-trip order. Default [`DEFAULT_RTT_REFRESH`].
    pub fn rtt_refresh(mut self, refresh: Duration) -> Self {
        self.rtt_refresh = refresh;
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    /// A negative or non-finite tier width or margin, a non-positive assumed limit, or a
    /// location cell outside `(0, 10]` degrees.
    pub fn build(self) -> Result<Locality, ConfigError> {
        let cell_deg = check_positive("location_cell_deg", self.cell_deg)?;
        if cell_deg > 10.0 {
            return Err(ConfigError::OutOfRange {
                setting: "location_cell_deg",
                expected: "in (0, 10]",
                value: cell_deg.to_string(),
            });
        }
        Ok(Locality {
            tier_km: check_non_negative("tier_km", self.tier_km)?,
            tier_rtt_ns: self.tier_rtt.as_nanos() as f64,
            margin: check_non_negative("slower_margin", self.margin)?,
            assumed_limit: check_positive("assumed_limit", self.assumed_limit)?,
            cell_deg,
            rtt_refresh_ns: u64::try_from(self.rtt_refresh.as_nanos()).unwrap_or(u64::MAX),
            cache: (0..LOCATION_CACHE_SLOTS).map(|_| ArcSwapOption::empty()).collect(),
        })
    }
}

// ===== helpers =====

/// Tier ends for nearness values sorted ascending: a tier runs while a value is within
/// `width` of the tier's first. Infinite values (unmeasured) form one last tier.
fn tiers(sorted: &[f64], width: f64) -> Vec<u32> {
    let mut out = vec![0u32; sorted.len()];
    fill_tiers(sorted, width, &mut out);
    out
}

fn fill_tiers(sorted: &[f64], width: f64, out: &mut [u32]) {
    let mut start = 0;
    while start < sorted.len() {
        let first = sorted[start];
        let mut end = start + 1;
        while end < sorted.len() && (sorted[end] - first <= width || (first.is_infinite() && sorted[end].is_infinite()))
        {
            end += 1;
        }
        for slot in &mut out[start..end] {
            *slot = end as u32;
        }
        start = end;
    }
}

/// `x.round()` (half away from zero) for the small values of a location grid, without the
/// libm call `f64::round` compiles to on baseline x86-64.
#[inline]
fn round(x: f64) -> f64 {
    // A saturating cast truncates towards zero; NaN becomes 0.
    let t = x as i64 as f64;
    let f = x - t;
    if f >= 0.5 {
        t + 1.0
    } else if f <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// The cache slot of a caller cell in a snapshot generation (a SplitMix64 finaliser).
fn slot_of(key: u64, generation: u64) -> usize {
    let mut z = key ^ generation.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % LOCATION_CACHE_SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::round;

    #[test]
    fn grid_rounding_matches_f64_round() {
        for i in -4000..=4000 {
            let x = f64::from(i) * 0.125 + 0.01 * f64::from(i % 7);
            assert_eq!(round(x), x.round(), "{x}");
        }
        for x in [0.5, -0.5, 1.5, -1.5, 0.49999, -0.49999, 719.5, -720.0] {
            assert_eq!(round(x), x.round(), "{x}");
        }
    }
}
