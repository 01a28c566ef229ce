//! Pick probability inversely proportional to latency.

use std::{
    fmt,
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use sluice_region_model::{Node, NodeId};

use crate::{
    ConfigError, PickView, Strategy,
    error::check_positive,
    generation::{GenerationTable, Generational},
    rng::PickRng,
    select,
};

/// Latency assumed for a node with no sample yet: optimistic, so that a new node is tried.
pub const DEFAULT_COLD_START_LATENCY: Duration = Duration::from_millis(50);

/// Estimates below this are raised to it, so that a near-zero estimate cannot take all traffic.
pub const LATENCY_FLOOR: Duration = Duration::from_micros(100);

/// How long a table of pick weights is used before a pick rebuilds it.
pub const DEFAULT_REFRESH: Duration = Duration::from_millis(10);

/// Rejected draws (nodes outside the view) before a pick falls back to an exact scan.
const MAX_REJECTIONS: usize = 4;

/// Response-time weighted: each candidate is chosen with probability proportional to
/// `weight / latency`.
///
/// The latency is the node's peak-EWMA estimate (Finagle's `PeakEwma`, as in tower), kept by
/// `NodeMetrics` and decayed to the pick's `now`. It is not a mean of recent samples: a slow
/// answer raises it at once, and it falls back over the decay time.
/// Recording a penalty with `NodeMetrics::record_penalty` after a 429 or 5xx makes a node look
/// slow in the same way.
///
/// A node with no sample yet uses the cold-start latency ([`DEFAULT_COLD_START_LATENCY`]):
/// optimistic, so it is tried and not starved; its first real sample then replaces it.
///
/// # Cost
/// Exact sampling over live estimates is O(n): every node's estimate must be read and
/// decayed. So, as gRPC's weighted round-robin rebuilds its scheduler periodically, the
/// strategy keeps a table of cumulative pick weights over every node of the snapshot, rebuilt
/// by whichever pick finds it older than [`DEFAULT_REFRESH`] (10 ms; O(n), no allocation,
/// no lock: a flag lets one pick rebuild while others keep reading the current table).
/// A pick is then a binary search, O(log n), plus a membership check; a draw outside the view
/// is redrawn (rejection keeps the shares among the view's nodes exact), and after four
/// rejections the pick falls back to an exact O(n) scan over the view.
/// Shares are therefore those of weights at most 10 ms old.
///
/// The table follows the newest snapshot the instance sees, keyed on its generation: the
/// first one's is read with a single atomic load, a later one's (after a membership change)
/// through an `ArcSwap`; each is allocated once, by the first pick that meets its snapshot.
/// Picks over an older snapshot (calls still running on a membership that was replaced) use
/// the exact scan, so a swap never makes picks thrash between tables.
pub struct ResponseTimeWeighted {
    cold_start_ns: f64,
    refresh_ns: u64,
    /// The first snapshot's table and the newest later one's.
    tables: GenerationTable<Table>,
}

/// Cumulative weights over all nodes of one snapshot, double-buffered.
struct Table {
    generation: u64,
    /// Two buffers of `f64` bits; readers use `buffers[active]`.
    buffers: [Box<[AtomicU64]>; 2],
    active: AtomicUsize,
    /// When the active buffer was built, nanoseconds since the epoch plus one; 0 = never.
    built_at: AtomicU64,
    building: AtomicBool,
}

// ===== impl ResponseTimeWeighted =====

impl ResponseTimeWeighted {
    /// With default settings.
    pub fn new() -> Self {
        Self {
            cold_start_ns: DEFAULT_COLD_START_LATENCY.as_nanos() as f64,
            refresh_ns: DEFAULT_REFRESH.as_nanos() as u64,
            tables: GenerationTable::new(Table::new(0, 0)),
        }
    }

    /// Sets the latency assumed for nodes with no sample.
    ///
    /// # Errors
    /// If `latency` is zero.
    pub fn with_cold_start(mut self, latency: Duration) -> Result<Self, ConfigError> {
        self.cold_start_ns = check_positive("cold_start_latency", latency.as_nanos() as f64)?;
        Ok(self)
    }

    /// Sets how long a table of pick weights is used; zero rebuilds it on every pick (exact,
    /// and O(n)).
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh_ns = u64::try_from(refresh.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// The latency used for `node` at `now_ns` (nanoseconds since the snapshot's epoch), in
    /// nanoseconds: its estimate, or the cold-start value, never below [`LATENCY_FLOOR`].
    pub fn latency_ns(&self, node: &Node, now_ns: u64) -> f64 {
        latency_or(node.metrics().latency_estimate_ns_at(now_ns), self.cold_start_ns)
    }

    /// The relative pick weight of `node` at `now_ns`: effective weight / latency.
    pub fn pick_weight(&self, node: &Node, now_ns: u64) -> f64 {
        let w = select::effective_weight_ns(node, now_ns) / self.latency_ns(node, now_ns);
        if w.is_finite() && w > 0.0 { w } else { 0.0 }
    }

    fn exact(&self, view: &PickView<'_>, rng: &mut PickRng) -> Option<NodeId> {
        let now = view.now_nanos();
        select::weighted_random(view, rng, |id| self.pick_weight(view.node(id), now))
    }

    /// Runs `f` on the table for `view`'s snapshot, fresh enough; `None` for an older
    /// snapshot than the newest seen, or before the table has weights.
    fn with_table<R>(&self, view: &PickView<'_>, f: impl FnOnce(&Table) -> R) -> Option<R> {
        let snapshot = view.snapshot();
        let generation = snapshot.generation();
        self.tables
            .with(generation, || Table::new(snapshot.len(), generation), |t| self.refreshed(t, view).map(f))
            .flatten()
    }

    /// `table`, rebuilt first if it is older than the refresh interval.
    fn refreshed<'t>(&self, table: &'t Table, view: &PickView<'_>) -> Option<&'t Table> {
        let snapshot = view.snapshot();
        let now = view.now_nanos();
        let built = table.built_at.load(Ordering::Acquire);
        let stale = built == 0 || now.saturating_sub(built - 1) >= self.refresh_ns || now < built - 1;
        if stale && !table.building.swap(true, Ordering::Acquire) {
            let next = 1 - table.active.load(Ordering::Relaxed);
            let mut sum = 0.0;
            for (slot, node) in table.buffers[next].iter().zip(snapshot.nodes()) {
                sum += self.pick_weight(node, now);
                slot.store(sum.to_bits(), Ordering::Relaxed);
            }
            table.active.store(next, Ordering::Release);
            table.built_at.store(now.saturating_add(1), Ordering::Release);
            table.building.store(false, Ordering::Release);
        }
        (table.built_at.load(Ordering::Acquire) != 0).then_some(table)
    }
}

impl Generational for Table {
    fn generation(&self) -> u64 {
        self.generation
    }
}

impl Table {
    fn new(n: usize, generation: u64) -> Self {
        let buffer = || (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[AtomicU64]>>();
        Self {
            generation,
            buffers: [buffer(), buffer()],
            active: AtomicUsize::new(0),
            built_at: AtomicU64::new(0),
            building: AtomicBool::new(false),
        }
    }

    /// Draws a node index with probability proportional to its weight, or `None` if every
    /// weight is zero.
    fn draw(&self, rng: &mut PickRng) -> Option<usize> {
        let cumulative = &self.buffers[self.active.load(Ordering::Acquire)];
        let total = f64::from_bits(cumulative.last()?.load(Ordering::Relaxed));
        if !(total.is_finite() && total > 0.0) {
            return None;
        }
        let x = rng.unit() * total;
        // First index whose cumulative weight exceeds x. A concurrent rebuild may mix
        // entries of two builds; the index stays in range, only its odds shift for this draw.
        let (mut lo, mut hi) = (0, cumulative.len() - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if f64::from_bits(cumulative[mid].load(Ordering::Relaxed)) > x {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(lo)
    }
}

impl Clone for ResponseTimeWeighted {
    fn clone(&self) -> Self {
        Self {
            cold_start_ns: self.cold_start_ns,
            refresh_ns: self.refresh_ns,
            tables: GenerationTable::new(Table::new(0, 0)),
        }
    }
}

impl fmt::Debug for ResponseTimeWeighted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseTimeWeighted")
            .field("cold_start_ns", &self.cold_start_ns)
            .field("refresh_ns", &self.refresh_ns)
            .field("table_generation", &self.tables.generations().0)
            .field("later_generation", &self.tables.generations().1)
            .finish()
    }
}

pub(crate) fn latency_or(estimate: Option<f64>, cold_ns: f64) -> f64 {
    match estimate {
        Some(est) if est.is_finite() => est.max(LATENCY_FLOOR.as_nanos() as f64),
        Some(_) => f64::INFINITY,
        None => cold_ns,
    }
}

impl Default for ResponseTimeWeighted {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for ResponseTimeWeighted {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        let mut rng = PickRng::new(view.entropy());
        if view.is_empty() {
            return None;
        }
        if self.refresh_ns > 0
            && let Some(Some(id)) = self.with_table(view, |table| {
                for _ in 0..MAX_REJECTIONS {
                    match table.draw(&mut rng) {
                        Some(i) if view.contains(NodeId::from_index(i as u32)) => {
                            return Some(NodeId::from_index(i as u32));
                        }
                        Some(_) => continue,
                        None => break,
                    }
                }
                None
            })
        {
            return Some(id);
        }
        self.exact(view, &mut rng)
    }

    fn name(&self) -> &'static str {
        "response-time"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::test_util::{EntropySource, set_latencies, snapshot_with_weights};

    fn shares(
        s: &ResponseTimeWeighted,
        snapshot: &sluice_region_model::Snapshot,
        ids: &[NodeId],
        now: Instant,
    ) -> Vec<f64> {
        let mut e = EntropySource::new(3);
        let mut counts = vec![0usize; snapshot.len()];
        for _ in 0..20_000 {
            counts[s.pick(&PickView::new(snapshot, ids, now, e.next_u64())).unwrap().index()] += 1;
        }
        counts.iter().map(|&c| c as f64 / 20_000.0).collect()
    }

    #[test]
    fn table_follows_latency_after_refresh_and_respects_the_view() {
        let t0 = Instant::now();
        let snapshot = snapshot_with_weights(&[1, 1, 1]);
        set_latencies(&snapshot, &[10, 20, 40].map(Duration::from_millis), t0);
        let s = ResponseTimeWeighted::new();
        let got = shares(&s, &snapshot, snapshot.ids(), t0);
        assert!((got[0] - 4.0 / 7.0).abs() < 0.02, "{got:?}");
        // Node 0 slows down; within the refresh period the table still holds the old weights.
        snapshot.nodes()[0].metrics().record_success(Duration::from_millis(40), t0);
        let got = shares(&s, &snapshot, snapshot.ids(), t0 + Duration::from_millis(1));
        assert!((got[0] - 4.0 / 7.0).abs() < 0.02, "{got:?}");
        // After the refresh period the new weights apply: 40, 20, 40 ms → 1/4, 1/2, 1/4.
        let later = t0 + DEFAULT_REFRESH + Duration::from_millis(1);
        let got = shares(&s, &snapshot, snapshot.ids(), later);
        assert!((got[1] - 0.5).abs() < 0.02, "{got:?}");
        // A view without node 1 keeps the others' proportions exact (1 : 1).
        let view = [NodeId::from_index(0), NodeId::from_index(2)];
        let got = shares(&s, &snapshot, &view, later);
        assert_eq!(got[1], 0.0);
        assert!((got[0] - 0.5).abs() < 0.02, "{got:?}");
    }

    #[test]
    fn table_follows_the_newest_snapshot_and_older_ones_scan() {
        let t0 = Instant::now();
        let first = std::sync::Arc::new(snapshot_with_weights(&[1, 1]));
        set_latencies(&first, &[10, 10].map(Duration::from_millis), t0);
        let s = ResponseTimeWeighted::new();
        let got = shares(&s, &first, first.ids(), t0);
        assert!((got[0] - 0.5).abs() < 0.02, "{got:?}");
        // A membership change: n1 leaves, n2 and n3 come; n0 keeps its metrics.
        let regions = ["n0", "n2", "n3"].map(|id| {
            sluice_region_model::Region::new(
                id,
                format!("http://127.0.0.1:9/{id}/v1"),
                sluice_region_model::GeoPoint::new(0.0, 0.0),
            )
        });
        let next = sluice_region_model::Snapshot::builder()
            .reuse_metrics(std::sync::Arc::clone(&first))
            .build(regions)
            .unwrap();
        set_latencies(&next, &[10, 20, 40].map(Duration::from_millis), t0);
        // The new set, by weight / latency: 10, 20, 40 ms → 4/7, 2/7, 1/7; from the table.
        let got = shares(&s, &next, next.ids(), t0);
        assert!((got[0] - 4.0 / 7.0).abs() < 0.02 && (got[2] - 1.0 / 7.0).abs() < 0.02, "{got:?}");
        let debug = format!("{s:?}");
        assert!(debug.contains(&format!("later_generation: {}", next.generation())), "{debug}");
        // Picks over the replaced snapshot still work, and leave the newer table in place.
        let got = shares(&s, &first, first.ids(), t0);
        assert!(got[0] > 0.0 && got[1] > 0.0, "{got:?}");
        assert!(format!("{s:?}").contains(&format!("later_generation: {}", next.generation())));
    }
}
