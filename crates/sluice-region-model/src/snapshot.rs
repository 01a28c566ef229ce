//! The immutable, validated set of nodes.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use url::Url;

use crate::{DEFAULT_METRICS_DECAY, Node, NodeId, NodeMetrics, Region, SnapshotError};

/// An immutable, validated list of [`Node`]s, shared through `Arc`.
///
/// Membership never changes inside a snapshot; a change builds a new one.
/// Node ids are dense: node `i` has `NodeId::from_index(i)`.
#[derive(Debug)]
pub struct Snapshot {
    nodes: Box<[Node]>,
    ids: Box<[NodeId]>,
    /// Every node's location as a unit vector, contiguous, for cache-friendly distance scans.
    unit_vectors: Box<[[f64; 3]]>,
    epoch: Instant,
    generation: u64,
}

/// Source of [`Snapshot::generation`] values.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Options for building a [`Snapshot`]. Get one from [`Snapshot::builder`].
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    epoch: Option<Instant>,
    decay: Duration,
    reuse: Option<Arc<Snapshot>>,
}

// ===== impl Snapshot =====

impl Snapshot {
    /// Validates `regions` and builds a snapshot with default options and the current
    /// instant as epoch.
    ///
    /// # Errors
    /// A [`SnapshotError`] naming the first offending region: an empty list, an empty or
    /// duplicate id, a NaN or out-of-range coordinate, an endpoint that is not an absolute
    /// http(s) URL or that carries credentials, or all weights zero.
    pub fn new(regions: impl IntoIterator<Item = Region>) -> Result<Self, SnapshotError> {
        Self::builder().build(regions)
    }

    /// Options: the epoch for stored instants, the decay of moving estimates, and metrics to
    /// carry over from a previous snapshot.
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder { epoch: None, decay: DEFAULT_METRICS_DECAY, reuse: None }
    }

    /// All nodes, indexed by [`NodeId::index`].
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every node id in ascending order: a ready-made "all eligible" candidate list.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// The node with this id.
    ///
    /// # Panics
    /// If `id` did not come from this snapshot (its index is out of range).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The node with this id, or `None` if it is out of range.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index())
    }

    /// Every node's location as a unit vector (see [`GeoPoint::unit_vector`](crate::GeoPoint::unit_vector)),
    /// indexed by [`NodeId::index`] and stored contiguously, so that ranking hundreds of nodes
    /// by distance reads a few kilobytes instead of every node.
    pub fn unit_vectors(&self) -> &[[f64; 3]] {
        &self.unit_vectors
    }

    /// Finds a node by region id.
    pub fn find(&self, region_id: &str) -> Option<NodeId> {
        self.nodes.iter().find(|n| n.region().id() == region_id).map(Node::id)
    }

    /// Number of nodes; never zero.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always `false`: an empty snapshot cannot be built. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The instant that node metrics measure stored times from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// `now` as nanoseconds since [`epoch`](Self::epoch) (0 before it): the form the `*_at`
    /// accessors of `NodeMetrics` take, so a pick converts the time once for every node.
    #[inline]
    pub fn nanos_since_epoch(&self, now: Instant) -> u64 {
        crate::metrics::nanos_since(self.epoch, now)
    }

    /// A number unique to this snapshot within the process.
    ///
    /// Strategies that precompute tables per membership key their cache on it.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

// ===== impl SnapshotBuilder =====

impl SnapshotBuilder {
    /// Sets the epoch. Async callers running on a paused tokio clock pass
    /// `tokio::time::Instant::now().into_std()` so that virtual time flows through.
    /// Defaults to `Instant::now()` at build.
    pub fn epoch(mut self, epoch: Instant) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Sets the decay τ of latency and error estimates. Defaults to [`DEFAULT_METRICS_DECAY`].
    pub fn metrics_decay(mut self, decay: Duration) -> Self {
        self.decay = decay;
        self
    }

    /// Carries metrics over from `previous` for regions whose id is unchanged, so that a
    /// membership change keeps in-flight counts, estimates and health. The epoch is taken
    /// from `previous` as well.
    pub fn reuse_metrics(mut self, previous: Arc<Snapshot>) -> Self {
        self.reuse = Some(previous);
        self
    }

    /// Validates `regions` and builds the snapshot.
    ///
    /// # Errors
    /// See [`Snapshot::new`].
    pub fn build(self, regions: impl IntoIterator<Item = Region>) -> Result<Snapshot, SnapshotError> {
        let regions: Vec<Region> = regions.into_iter().collect();
        if regions.is_empty() {
            return Err(SnapshotError::Empty);
        }
        if u32::try_from(regions.len()).is_err() {
            return Err(SnapshotError::TooMany { count: regions.len() });
        }
        let mut seen = HashSet::with_capacity(regions.len());
        let mut endpoints = Vec::with_capacity(regions.len());
        for (index, region) in regions.iter().enumerate() {
            endpoints.push(validate(index, region, &mut seen)?);
        }
        if regions.iter().all(|r| r.weight() == 0) {
            return Err(SnapshotError::AllWeightsZero { count: regions.len() });
        }
        let epoch = match (&self.reuse, self.epoch) {
            (Some(prev), _) => prev.epoch,
            (None, Some(e)) => e,
            (None, None) => Instant::now(),
        };
        let nodes: Box<[Node]> = regions
            .into_iter()
            .zip(endpoints)
            .enumerate()
            .map(|(i, (region, endpoint))| {
                let metrics = self
                    .reuse
                    .as_ref()
                    .and_then(|prev| prev.find(region.id()).map(|id| Arc::clone(prev.node(id).metrics())))
                    .unwrap_or_else(|| Arc::new(NodeMetrics::new(epoch, self.decay)));
                metrics.set_max_concurrency(region.max_concurrency());
                Node::new(NodeId::from_index(i as u32), region, endpoint, metrics)
            })
            .collect();
        let ids = (0..nodes.len() as u32).map(NodeId::from_index).collect();
        let unit_vectors = nodes.iter().map(Node::unit_vector).collect();
        Ok(Snapshot { nodes, ids, unit_vectors, epoch, generation: GENERATION.fetch_add(1, Ordering::Relaxed) })
    }
}

fn validate<'a>(index: usize, region: &'a Region, seen: &mut HashSet<&'a str>) -> Result<Url, SnapshotError> {
    let id = region.id();
    if id.trim().is_empty() {
        return Err(SnapshotError::EmptyId { index });
    }
    if !seen.insert(id) {
        return Err(SnapshotError::DuplicateId { region: id.to_owned() });
    }
    let loc = region.location();
    for (field, v) in [("latitude", loc.lat()), ("longitude", loc.lon())] {
        if !v.is_finite() {
            return Err(SnapshotError::NotFinite { region: id.to_owned(), field });
        }
    }
    if !(-90.0..=90.0).contains(&loc.lat()) {
        return Err(SnapshotError::LatitudeOutOfRange { region: id.to_owned(), lat: loc.lat() });
    }
    if !(-180.0..=180.0).contains(&loc.lon()) {
        return Err(SnapshotError::LongitudeOutOfRange { region: id.to_owned(), lon: loc.lon() });
    }
    let url = Url::parse(region.endpoint()).map_err(|source| SnapshotError::InvalidUrl {
        region: id.to_owned(),
        url: region.endpoint().to_owned(),
        source,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SnapshotError::UnsupportedScheme { region: id.to_owned(), scheme: url.scheme().to_owned() });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SnapshotError::InvalidUrl {
            region: id.to_owned(),
            url: region.endpoint().to_owned(),
            source: url::ParseError::EmptyHost,
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SnapshotError::CredentialsInUrl { region: id.to_owned() });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GeoPoint;

    fn region(id: &str) -> Region {
        Region::new(id, format!("http://127.0.0.1:9/{id}/v1"), GeoPoint::new(1.0, 2.0))
    }

    fn check(regions: Vec<Region>, expect: &str) {
        let err = Snapshot::new(regions).unwrap_err();
        assert_eq!(err.to_string(), expect);
    }

    #[test]
    fn valid_snapshot_has_dense_ids() {
        let s = Snapshot::new([region("a"), region("b"), region("c")]).unwrap();
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        assert_eq!(s.ids(), &[NodeId::from_index(0), NodeId::from_index(1), NodeId::from_index(2)]);
        assert_eq!(s.find("b"), Some(NodeId::from_index(1)));
        assert_eq!(s.find("z"), None);
        assert_eq!(s.node(NodeId::from_index(2)).region().id(), "c");
        assert!(s.get(NodeId::from_index(3)).is_none());
        assert_eq!(s.node(NodeId::from_index(0)).endpoint().as_str(), "http://127.0.0.1:9/a/v1");
    }

    #[test]
    fn invalid_inputs_name_the_region() {
        check(vec![], "no regions given");
        check(vec![region("a"), region("a")], "duplicate region id `a`");
        check(vec![region(" ")], "region #0 has an empty id");
        check(
            vec![Region::new("n", "http://h/v1", GeoPoint::new(91.0, 0.0))],
            "region `n`: latitude 91 is outside -90..=90",
        );
        check(
            vec![Region::new("n", "http://h/v1", GeoPoint::new(-90.5, 0.0))],
            "region `n`: latitude -90.5 is outside -90..=90",
        );
        check(
            vec![Region::new("w", "http://h/v1", GeoPoint::new(0.0, -181.0))],
            "region `w`: longitude -181 is outside -180..=180",
        );
        check(
            vec![Region::new("nan", "http://h/v1", GeoPoint::new(f64::NAN, 0.0))],
            "region `nan`: latitude is not a finite number",
        );
        check(
            vec![Region::new("inf", "http://h/v1", GeoPoint::new(0.0, f64::INFINITY))],
            "region `inf`: longitude is not a finite number",
        );
        check(
            vec![Region::new("u", "not a url", GeoPoint::new(0.0, 0.0))],
            "region `u`: invalid endpoint url `not a url`",
        );
        check(
            vec![Region::new("f", "ftp://h/v1", GeoPoint::new(0.0, 0.0))],
            "region `f`: endpoint scheme `ftp` is not http or https",
        );
        check(
            vec![Region::new("c", "https://user:pw@h/v1", GeoPoint::new(0.0, 0.0))],
            "region `c`: endpoint url must not contain credentials",
        );
        check(vec![region("a").with_weight(0), region("b").with_weight(0)], "all 2 regions have weight 0");
    }

    #[test]
    fn some_zero_weights_are_fine() {
        assert!(Snapshot::new([region("a").with_weight(0), region("b")]).is_ok());
    }

    #[test]
    fn reuse_keeps_metrics_of_unchanged_regions() {
        let first = Arc::new(Snapshot::new([region("a"), region("b")]).unwrap());
        let a = first.node(first.find("a").unwrap()).metrics();
        let _guard = a.start_request();
        let second = Snapshot::builder().reuse_metrics(Arc::clone(&first)).build([region("c"), region("a")]).unwrap();
        let a2 = second.node(second.find("a").unwrap()).metrics();
        assert!(Arc::ptr_eq(a, a2));
        assert_eq!(a2.in_flight(), 1);
        assert_eq!(second.node(second.find("c").unwrap()).metrics().in_flight(), 0);
        assert_eq!(second.epoch(), first.epoch());
        assert_ne!(second.generation(), first.generation());
    }

    #[test]
    fn max_concurrency_reaches_the_metrics_and_follows_the_config() {
        let first = Arc::new(Snapshot::new([region("a").with_max_concurrency(Some(48)), region("b")]).unwrap());
        let a = first.node(first.find("a").unwrap()).metrics();
        assert_eq!(a.concurrency_limit(), Some(48.0));
        assert_eq!(first.node(first.find("b").unwrap()).metrics().concurrency_limit(), None);
        // A new configuration sets the limit on reused metrics too; zero means none.
        let second = Snapshot::builder()
            .reuse_metrics(Arc::clone(&first))
            .build([region("a").with_max_concurrency(Some(0))])
            .unwrap();
        assert!(Arc::ptr_eq(a, second.node(second.find("a").unwrap()).metrics()));
        assert_eq!(a.concurrency_limit(), None);
    }
}
