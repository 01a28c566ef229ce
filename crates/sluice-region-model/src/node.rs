//! A validated region inside a snapshot.

use std::{fmt, sync::Arc};

use url::Url;

use crate::{GeoPoint, NodeMetrics, Region};

/// Dense index of a node within its [`Snapshot`](crate::Snapshot): `0..snapshot.len()`.
///
/// Ids are only meaningful for the snapshot that issued them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

/// A region that passed validation, with its parsed endpoint and live metrics.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    region: Region,
    endpoint: Url,
    unit: [f64; 3],
    metrics: Arc<NodeMetrics>,
}

// ===== impl NodeId =====

impl NodeId {
    /// Builds an id from an index. Meaningful only if `index < snapshot.len()`.
    pub const fn from_index(index: u32) -> Self {
        Self(index)
    }

    /// The index into [`Snapshot::nodes`](crate::Snapshot::nodes).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

// ===== impl Node =====

impl Node {
    pub(crate) fn new(id: NodeId, region: Region, endpoint: Url, metrics: Arc<NodeMetrics>) -> Self {
        let unit = region.location().unit_vector();
        Self { id, region, endpoint, unit, metrics }
    }

    /// This node's id within its snapshot.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configured region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The parsed endpoint base URL.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Shortcut for `region().weight()`.
    pub fn weight(&self) -> u32 {
        self.region.weight()
    }

    /// Shortcut for `region().location()`.
    pub fn location(&self) -> GeoPoint {
        self.region.location()
    }

    /// The location as a unit vector, computed once (see [`GeoPoint::unit_vector`]).
    pub fn unit_vector(&self) -> [f64; 3] {
        self.unit
    }

    /// Live metrics, shared with every clone of the snapshot and with in-flight guards.
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }
}
