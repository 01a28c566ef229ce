//! Smooth weighted round-robin (nginx).

use std::{
    cell::Cell,
    fmt,
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicUsize, Ordering},
};

use crossbeam_utils::CachePadded;
use sluice_region_model::{NodeId, Snapshot};

use crate::{
    PickView, Strategy,
    generation::{GenerationTable, Generational},
    rng::PickRng,
    select,
};

/// The longest precomputed cycle. Larger weight sums are scaled down to fit, which keeps
/// shares within one part in 65,536 of exact instead of exact.
pub const MAX_CYCLE: usize = 1 << 16;

/// Cursors are striped so that threads do not contend on one counter.
const STRIPES: usize = 16;

/// How many table entries a pick may skip (nodes outside the view, or slow-start rejections)
/// before it falls back to weighted random sampling over the view.
const MAX_SKIPS: usize = 64;

/// Smooth weighted round-robin, as nginx does it (`ngx_http_upstream_get_peer`).
///
/// Weights 5, 1, 1 interleave as `a a b a c a a`, not `a a a a a b c`, and over every full
/// cycle of `Σw / gcd(w)` picks each node is chosen exactly `w / gcd(w)` times.
///
/// # Cost
/// O(1) per pick. The interleaved cycle is computed once per snapshot (O(cycle · n), keyed on
/// [`Snapshot::generation`]) and a pick reads the next entry. Build it ahead of the first pick
/// with [`WeightedRoundRobin::prepare`]; a pick that meets a newer snapshot builds its table,
/// which allocates once. The first snapshot's table is read with a single atomic load; a
/// later one's through an `ArcSwap`. Picks over an older snapshot than the newest seen (calls
/// still running on a membership that was replaced) use weighted random sampling instead, so
/// a swap never makes picks thrash between tables.
///
/// # Concurrency
/// Each thread advances its own cache-padded cursor (16 stripes), so two threads picking from
/// one shared strategy do not bounce a cache line. Each stripe follows the exact cycle; shares
/// are exact per stripe. Every cursor starts at a random offset, so that many clients started
/// together do not all send their first call to the same node (Envoy's first-pick problem).
///
/// # Views that are not full
/// Entries for nodes outside the view are skipped, which keeps the interleaving of the rest.
/// A node in slow start is taken with probability equal to its weight factor.
/// After 64 skips the pick falls back to weighted random sampling over the view, so the cost
/// stays bounded when only a light node is left.
/// Zero-weight nodes are not in the cycle; they are chosen only when the view holds nothing else.
pub struct WeightedRoundRobin {
    seed: u64,
    /// The first snapshot's table (the common case, read with one atomic load) and the
    /// newest later one's.
    tables: GenerationTable<Table>,
}

struct Table {
    generation: u64,
    cycle: Box<[NodeId]>,
    cursors: Box<[CachePadded<AtomicUsize>]>,
}

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

fn stripe() -> usize {
    STRIPE.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
        s.set(v);
        v
    })
}

// ===== impl WeightedRoundRobin =====

impl WeightedRoundRobin {
    /// A strategy with a random seed for its start offsets.
    pub fn new() -> Self {
        Self::with_seed(RandomState::new().hash_one(0x5eed_u64))
    }

    /// A strategy whose start offsets derive from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self { seed, tables: GenerationTable::new(Table::empty()) }
    }

    /// Precomputes the cycle for `snapshot`, so that picks on it never allocate (unless a
    /// newer snapshot has been seen).
    pub fn prepare(&self, snapshot: &Snapshot) {
        self.with_table(snapshot, |_| ());
    }

    /// Runs `f` on the table for `snapshot`, building it if it is the newest snapshot seen
    /// and has none yet; `None` for an older snapshot.
    fn with_table<R>(&self, snapshot: &Snapshot, f: impl FnOnce(&Table) -> R) -> Option<R> {
        self.tables.with(snapshot.generation(), || Table::build(snapshot, self.seed), f)
    }

    /// The precomputed cycle for `snapshot`: one full round of picks over a full view,
    /// starting from offset 0.
    pub fn cycle(&self, snapshot: &Snapshot) -> Vec<NodeId> {
        self.with_table(snapshot, |table| table.cycle.to_vec())
            .unwrap_or_else(|| Table::build(snapshot, self.seed).cycle.to_vec())
    }

    /// A pick from `table`'s cycle; weighted random sampling without a table (an older
    /// snapshot), or when the cycle yields nothing in the view.
    fn pick_in(table: Option<&Table>, view: &PickView<'_>) -> Option<NodeId> {
        let mut rng = PickRng::new(view.entropy());
        if let Some(table) = table.filter(|t| !t.cycle.is_empty()) {
            let len = table.cycle.len();
            let cursor = &table.cursors[stripe()];
            // Only this thread advances this stripe, so a plain load/store pair is enough; a
            // collision between threads sharing a stripe costs fairness, never safety.
            let mut i = cursor.load(Ordering::Relaxed);
            if i >= len {
                i = 0;
            }
            for _ in 0..MAX_SKIPS.min(len) {
                let id = table.cycle[i];
                i += 1;
                if i == len {
                    i = 0;
                }
                if view.contains(id) {
                    let metrics = view.node(id).metrics();
                    if !metrics.in_slow_start() || rng.unit() < metrics.weight_factor_at(view.now_nanos()) {
                        cursor.store(i, Ordering::Relaxed);
                        return Some(id);
                    }
                }
            }
            cursor.store(i, Ordering::Relaxed);
        }
        select::weighted_random(view, &mut rng, |id| select::effective_weight(view.node(id), view))
    }
}

impl Default for WeightedRoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for WeightedRoundRobin {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        if view.is_empty() {
            return None;
        }
        self.with_table(view.snapshot(), |table| Self::pick_in(Some(table), view))
            .unwrap_or_else(|| Self::pick_in(None, view))
    }

    fn name(&self) -> &'static str {
        "weighted-round-robin"
    }
}

impl fmt::Debug for WeightedRoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedRoundRobin")
            .field("seed", &self.seed)
            .field("first_generation", &self.tables.generations().0)
            .field("later_generation", &self.tables.generations().1)
            .finish()
    }
}

// ===== impl Table =====

impl Generational for Table {
    fn generation(&self) -> u64 {
        self.generation
    }
}

impl Table {
    fn empty() -> Self {
        Self { generation: 0, cycle: Box::new([]), cursors: Box::new([]) }
    }

    fn build(snapshot: &Snapshot, seed: u64) -> Self {
        let weights = scaled_weights(snapshot.nodes().iter().map(|n| u64::from(n.weight())));
        let cycle = smooth_cycle(&weights);
        let mut rng = PickRng::new(seed ^ snapshot.generation().rotate_left(17));
        let cursors = (0..STRIPES)
            .map(|_| CachePadded::new(AtomicUsize::new(if cycle.is_empty() { 0 } else { rng.below(cycle.len()) })))
            .collect();
        Self { generation: snapshot.generation(), cycle, cursors }
    }
}

/// Divides weights by their gcd and, if the sum still exceeds [`MAX_CYCLE`], scales them down
/// proportionally (keeping every non-zero weight at least 1).
fn scaled_weights(weights: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut w: Vec<u64> = weights.collect();
    let g = w.iter().copied().fold(0, gcd);
    if g > 1 {
        w.iter_mut().for_each(|x| *x /= g);
    }
    let sum: u64 = w.iter().sum();
    if sum as usize > MAX_CYCLE {
        let nonzero = w.iter().filter(|&&x| x > 0).count() as u64;
        let budget = (MAX_CYCLE as u64).saturating_sub(nonzero).max(1);
        for x in &mut w {
            if *x > 0 {
                *x = 1 + (u128::from(*x) * u128::from(budget) / u128::from(sum)) as u64;
            }
        }
    }
    w
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One full cycle of nginx's smooth WRR over `weights`: each step adds every weight to its
/// node's current value, takes the largest (first on ties) and subtracts the total from it.
fn smooth_cycle(weights: &[u64]) -> Box<[NodeId]> {
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        cycle.push(NodeId::from_index(best as u32));
    }
    cycle.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::test_util::snapshot_with_weights;

    fn letters(cycle: &[NodeId]) -> String {
        cycle.iter().map(|id| (b'a' + id.index() as u8) as char).collect()
    }

    #[test]
    fn table_follows_the_newest_snapshot() {
        let first = Arc::new(snapshot_with_weights(&[1, 1]));
        let s = WeightedRoundRobin::with_seed(3);
        s.prepare(&first);
        // A membership change: n1 leaves, n2 (weight 3) comes.
        let regions = [("n0", 1), ("n2", 3)].map(|(id, w)| {
            sluice_region_model::Region::new(
                id,
                format!("http://127.0.0.1:9/{id}/v1"),
                sluice_region_model::GeoPoint::new(0.0, 0.0),
            )
            .with_weight(w)
        });
        let next = Snapshot::builder().reuse_metrics(Arc::clone(&first)).build(regions).unwrap();
        let now = std::time::Instant::now();
        let mut counts = [0usize; 2];
        for i in 0..400u64 {
            counts[s.pick(&PickView::all(&next, now, i)).unwrap().index()] += 1;
        }
        // Exact shares of the new set over whole cycles: 1 : 3.
        assert_eq!(counts, [100, 300]);
        assert!(format!("{s:?}").contains(&format!("later_generation: {}", next.generation())));
        // A pick over the replaced snapshot (a call that started before) does not take the
        // table back.
        assert!(s.pick(&PickView::all(&first, now, 1)).is_some());
        assert!(format!("{s:?}").contains(&format!("later_generation: {}", next.generation())));
    }

    #[test]
    fn nginx_interleaving() {
        let s = snapshot_with_weights(&[5, 1, 1]);
        assert_eq!(letters(&WeightedRoundRobin::with_seed(0).cycle(&s)), "aabacaa");
        let s = snapshot_with_weights(&[1, 1, 1]);
        assert_eq!(letters(&WeightedRoundRobin::with_seed(0).cycle(&s)), "abc");
        // gcd reduction: 100, 50 is 2:1.
        let s = snapshot_with_weights(&[100, 50]);
        assert_eq!(letters(&WeightedRoundRobin::with_seed(0).cycle(&s)), "aba");
        // Zero weights are left out of the cycle.
        let s = snapshot_with_weights(&[0, 2, 1]);
        assert_eq!(letters(&WeightedRoundRobin::with_seed(0).cycle(&s)), "bcb");
    }

    #[test]
    fn picks_follow_the_cycle_from_a_random_offset() {
        let s = snapshot_with_weights(&[5, 1, 1]);
        let wrr = WeightedRoundRobin::with_seed(42);
        let picked: Vec<NodeId> =
            (0..14).map(|e| wrr.pick(&PickView::all(&s, std::time::Instant::now(), e)).unwrap()).collect();
        let got = letters(&picked);
        // Two full cycles, starting somewhere inside "aabacaa".
        let doubled = "aabacaa".repeat(3);
        assert!(doubled.contains(&got), "{got}");
        // A view without `a` keeps interleaving the rest.
        let view_ids = [NodeId::from_index(1), NodeId::from_index(2)];
        let rest: Vec<NodeId> =
            (0..4).map(|e| wrr.pick(&PickView::new(&s, &view_ids, std::time::Instant::now(), e)).unwrap()).collect();
        let rest = letters(&rest);
        assert!(rest == "bcbc" || rest == "cbcb", "{rest}");
    }

    #[test]
    fn different_seeds_start_at_different_offsets() {
        let s = snapshot_with_weights(&[1; 16]);
        let firsts: std::collections::HashSet<NodeId> = (0..32)
            .map(|seed| {
                WeightedRoundRobin::with_seed(seed).pick(&PickView::all(&s, std::time::Instant::now(), 0)).unwrap()
            })
            .collect();
        assert!(firsts.len() > 4, "first picks cluster: {firsts:?}");
    }

    #[test]
    fn huge_weights_are_scaled_into_the_cap() {
        let w = scaled_weights([u32::MAX as u64, 1, (u32::MAX / 2) as u64].into_iter());
        assert!(w.iter().sum::<u64>() as usize <= MAX_CYCLE + 3);
        assert!(w.iter().all(|&x| x >= 1));
        assert!(w[0] > w[2] && w[2] > w[1]);
    }
}
