//! What a strategy sees for one pick.

use std::{cell::Cell, fmt, time::Instant};

use sluice_region_model::{GeoPoint, Node, NodeId, Snapshot};

/// A caller's location, with its unit vector computed once.
///
/// Build it once per call (or once per process, for a fixed caller) and reuse it across the
/// attempts of that call; `PickView::with_caller` accepts a plain [`GeoPoint`] too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Caller {
    point: GeoPoint,
    unit: [f64; 3],
}

impl Caller {
    /// Precomputes the unit vector of `point`.
    pub fn new(point: GeoPoint) -> Self {
        Self { point, unit: point.unit_vector() }
    }

    /// The location.
    pub fn point(&self) -> GeoPoint {
        self.point
    }

    /// The location as a unit vector.
    pub fn unit_vector(&self) -> [f64; 3] {
        self.unit
    }
}

impl From<GeoPoint> for Caller {
    fn from(point: GeoPoint) -> Self {
        Self::new(point)
    }
}

/// The eligible nodes for one pick, plus the inputs a strategy may use: the time, a random
/// value and the caller's location.
///
/// The caller builds the view after filtering out unhealthy, drained, excluded and
/// already-tried nodes, so strategies never look at health or retry state.
/// Building a view allocates nothing.
///
/// # Candidates
/// `candidates` must be ids of `snapshot`, in ascending order, without duplicates.
/// [`Snapshot::ids`] is such a list with every node.
/// Strategies never return an id that is not in `candidates`, even if this precondition is
/// broken; they may then pick less well.
///
/// # Randomness
/// Randomness is injected: `entropy` is a fresh random `u64` per pick, from whatever generator
/// the caller owns (a seeded one in tests).
/// Strategies derive every random choice from it, so a pick is a pure function of the view and
/// the strategy's own state.
#[derive(Clone)]
pub struct PickView<'a> {
    snapshot: &'a Snapshot,
    candidates: &'a [NodeId],
    now: Instant,
    /// `now` in nanoseconds since the snapshot's epoch, converted on first use (`u64::MAX`
    /// until then): strategies that read no estimates never pay for the conversion.
    now_ns: Cell<u64>,
    entropy: u64,
    caller: Option<Caller>,
}

// ===== impl PickView =====

impl<'a> PickView<'a> {
    /// A view over `candidates` (ascending ids of `snapshot`, no duplicates).
    pub fn new(snapshot: &'a Snapshot, candidates: &'a [NodeId], now: Instant, entropy: u64) -> Self {
        debug_assert!(candidates.windows(2).all(|w| w[0] < w[1]), "candidates must be ascending and unique");
        Self { snapshot, candidates, now, now_ns: Cell::new(u64::MAX), entropy, caller: None }
    }

    /// A view in which every node of `snapshot` is a candidate.
    pub fn all(snapshot: &'a Snapshot, now: Instant, entropy: u64) -> Self {
        Self::new(snapshot, snapshot.ids(), now, entropy)
    }

    /// Sets the caller's location, used by geo-aware strategies.
    pub fn with_caller(mut self, location: impl Into<Caller>) -> Self {
        self.caller = Some(location.into());
        self
    }

    /// Sets or clears the caller's location.
    pub fn with_caller_opt(mut self, location: Option<impl Into<Caller>>) -> Self {
        self.caller = location.map(Into::into);
        self
    }

    /// The snapshot the candidates belong to.
    pub fn snapshot(&self) -> &'a Snapshot {
        self.snapshot
    }

    /// The eligible node ids, ascending.
    pub fn candidates(&self) -> &'a [NodeId] {
        self.candidates
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// [`now`](Self::now) as nanoseconds since the snapshot's epoch, for the `*_at` accessors
    /// of `NodeMetrics`.
    #[inline]
    pub fn now_nanos(&self) -> u64 {
        let v = self.now_ns.get();
        if v != u64::MAX {
            return v;
        }
        let v = self.snapshot.nanos_since_epoch(self.now).min(u64::MAX - 1);
        self.now_ns.set(v);
        v
    }

    /// This pick's random value.
    pub fn entropy(&self) -> u64 {
        self.entropy
    }

    /// The caller's location, if given.
    pub fn caller(&self) -> Option<Caller> {
        self.caller
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The node behind a candidate id.
    ///
    /// # Panics
    /// If `id` is not an id of this view's snapshot.
    #[inline]
    pub fn node(&self, id: NodeId) -> &'a Node {
        self.snapshot.node(id)
    }

    /// Whether every node of the snapshot is a candidate.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.candidates.len() == self.snapshot.len()
    }

    /// Whether `id` is a candidate: O(1) for a full view, O(log n) otherwise.
    #[inline]
    pub fn contains(&self, id: NodeId) -> bool {
        if self.is_full() && id.index() < self.snapshot.len() {
            return true;
        }
        self.candidates.binary_search(&id).is_ok()
    }
}

impl fmt::Debug for PickView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickView")
            .field("candidates", &self.candidates)
            .field("now", &self.now)
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}
