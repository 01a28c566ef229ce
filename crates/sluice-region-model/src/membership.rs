//! Membership changes: the one way to go from a snapshot to the next one.
//!
//! Service discovery (`sluice-tower`) and live reload both turn "these regions came, these
//! went" into a new [`Snapshot`] through [`SnapshotBuilder::apply`], so that every path keeps
//! the metrics of regions that stay.

use std::sync::Arc;

use crate::{Region, Snapshot, SnapshotBuilder, SnapshotError};

/// One change to the set of regions.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Adds the region, or replaces the region with the same id (its metrics are kept).
    Upsert(Region),
    /// Removes the region with this id; a missing id is ignored.
    Remove(String),
}

// ===== impl SnapshotBuilder =====

impl SnapshotBuilder {
    /// Builds the snapshot that follows `previous` after `changes`, applied in order.
    ///
    /// Regions keep their order in `previous`; new ones are appended in the order they came.
    /// Metrics of every region whose id stays are carried over, as with
    /// [`reuse_metrics`](Self::reuse_metrics), and so is the epoch.
    ///
    /// # Errors
    /// What [`build`](Self::build) returns for the resulting list, for example
    /// [`SnapshotError::Empty`] when the last region is removed; `previous` is then still valid.
    pub fn apply(
        self,
        previous: &Arc<Snapshot>,
        changes: impl IntoIterator<Item = MembershipChange>,
    ) -> Result<Snapshot, SnapshotError> {
        let mut regions: Vec<Region> = previous.nodes().iter().map(|n| n.region().clone()).collect();
        for change in changes {
            match change {
                MembershipChange::Upsert(region) => match regions.iter_mut().find(|r| r.id() == region.id()) {
                    Some(slot) => *slot = region,
                    None => regions.push(region),
                },
                MembershipChange::Remove(id) => regions.retain(|r| r.id() != id),
            }
        }
        self.reuse_metrics(Arc::clone(previous)).build(regions)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::GeoPoint;

    fn region(id: &str) -> Region {
        Region::new(id, format!("http://{id}.example.com"), GeoPoint::new(10.0, 20.0))
    }

    fn ids(s: &Snapshot) -> Vec<&str> {
        s.nodes().iter().map(|n| n.region().id()).collect()
    }

    #[test]
    fn insert_and_remove_keep_metrics_of_regions_that_stay() {
        let first = Arc::new(Snapshot::new([region("a"), region("b"), region("c")]).unwrap());
        let b_metrics = Arc::clone(first.node(first.find("b").unwrap()).metrics());
        let guard = b_metrics.start_request();
        let changes = [
            MembershipChange::Remove("a".into()),
            MembershipChange::Upsert(region("d")),
            MembershipChange::Remove("x".into()),
        ];
        let next = Snapshot::builder().apply(&first, changes).unwrap();
        assert_eq!(ids(&next), ["b", "c", "d"]);
        let b = next.node(next.find("b").unwrap()).metrics();
        assert!(Arc::ptr_eq(b, &b_metrics), "b keeps its metrics");
        assert_eq!(b.in_flight(), 1);
        assert_eq!(next.node(next.find("d").unwrap()).metrics().in_flight(), 0);
        assert_eq!(next.epoch(), first.epoch());
        assert_ne!(next.generation(), first.generation());
        drop(guard);
    }

    #[test]
    fn upsert_replaces_in_place() {
        let first = Arc::new(Snapshot::builder().epoch(Instant::now()).build([region("a"), region("b")]).unwrap());
        let next = Snapshot::builder().apply(&first, [MembershipChange::Upsert(region("a").with_weight(7))]).unwrap();
        assert_eq!(ids(&next), ["a", "b"]);
        assert_eq!(next.node(next.find("a").unwrap()).weight(), 7);
    }

    #[test]
    fn removing_everything_is_an_error_and_leaves_previous_alone() {
        let first = Arc::new(Snapshot::new([region("a")]).unwrap());
        let err = Snapshot::builder().apply(&first, [MembershipChange::Remove("a".into())]).unwrap_err();
        assert!(matches!(err, SnapshotError::Empty));
        assert_eq!(ids(&first), ["a"]);
    }
}
