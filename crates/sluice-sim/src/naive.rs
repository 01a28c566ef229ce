//! The naive baseline: a model of the routing many gateways do, kept here as the in-run
//! reference that the real strategies must beat.

use std::{fmt, time::Duration};

use parking_lot::Mutex;
use sluice_balancer::{PickView, Strategy};
use sluice_region_model::NodeId;

/// How often the baseline probes every region: once a minute.
pub const NAIVE_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// Failed probes in a row after which the baseline stops using a region: three.
pub const NAIVE_STRIKES: u32 = 3;

/// Latency the baseline assumes for a region it has no sample of yet.
const NAIVE_COLD_LATENCY_NS: f64 = 50e6;

/// The naive baseline: response-time weighted random choice over a plain mean, with health
/// from a 60 s probe and three strikes, and no passive detection.
///
/// * **Latency** is the plain mean of every successful call's latency since the start, so it
///   reacts to a change in proportion to how little history there is, and a region that was
///   fast for ten minutes stays "fast" long after it degraded.
/// * **Health** comes only from the probe: every [`NAIVE_PROBE_INTERVAL`] each region is
///   probed, and [`NAIVE_STRIKES`] failed probes in a row mark it down; one success marks it
///   up. Failed calls change nothing.
/// * **Choice**: probability proportional to `weight / mean latency`, as a
///   `random.choices(regions, weights)` router does.
///
/// It implements [`Strategy`] so that the simulator drives it like the real ones, but it
/// keeps its own health view: the simulator asks [`NaiveBaseline::candidates`] instead of the
/// `HealthMonitor` for the candidate list.
pub struct NaiveBaseline {
    nodes: Mutex<Vec<NaiveNode>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct NaiveNode {
    sum_ns: f64,
    count: u64,
    strikes: u32,
    down: bool,
}

// ===== impl NaiveBaseline =====

impl NaiveBaseline {
    /// A baseline for `nodes` regions, all up, no samples.
    pub fn new(nodes: usize) -> Self {
        Self { nodes: Mutex::new(vec![NaiveNode::default(); nodes]) }
    }

    /// Records a successful call's latency; failures are ignored (no passive detection).
    pub fn observe_success(&self, node: NodeId, latency: Duration) {
        if let Some(n) = self.nodes.lock().get_mut(node.index()) {
            n.sum_ns += latency.as_nanos() as f64;
            n.count += 1;
        }
    }

    /// Records one probe result of `node`.
    pub fn observe_probe(&self, node: NodeId, ok: bool) {
        if let Some(n) = self.nodes.lock().get_mut(node.index()) {
            if ok {
                n.strikes = 0;
                n.down = false;
            } else {
                n.strikes += 1;
                if n.strikes >= NAIVE_STRIKES {
                    n.down = true;
                }
            }
        }
    }

    /// Whether the baseline currently believes `node` is up.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes.lock().get(node.index()).is_some_and(|n| !n.down)
    }

    /// Fills `out` (ascending) with the nodes the baseline believes up and `skip` does not
    /// exclude; if that is empty, with every node `skip` does not exclude.
    pub fn candidates(&self, skip: impl Fn(NodeId) -> bool, out: &mut Vec<NodeId>) {
        out.clear();
        let nodes = self.nodes.lock();
        let ids = || (0..nodes.len() as u32).map(NodeId::from_index).filter(|&id| !skip(id));
        out.extend(ids().filter(|id| !nodes[id.index()].down));
        if out.is_empty() {
            out.extend(ids());
        }
    }

    fn mean_ns(n: &NaiveNode) -> f64 {
        if n.count == 0 { NAIVE_COLD_LATENCY_NS } else { (n.sum_ns / n.count as f64).max(1.0) }
    }
}

impl Strategy for NaiveBaseline {
    fn pick(&self, view: &PickView<'_>) -> Option<NodeId> {
        let nodes = self.nodes.lock();
        let weight = |id: NodeId| {
            let w = f64::from(view.node(id).weight());
            nodes.get(id.index()).map_or(0.0, |n| w / Self::mean_ns(n))
        };
        let total: f64 = view.candidates().iter().map(|&id| weight(id)).sum();
        if total.is_nan() || total <= 0.0 {
            return view.candidates().first().copied();
        }
        // 53 random bits from the view's entropy, as `random.random()` would give.
        let mut x = (view.entropy() >> 11) as f64 / (1u64 << 53) as f64 * total;
        for &id in view.candidates() {
            x -= weight(id);
            if x < 0.0 {
                return Some(id);
            }
        }
        view.candidates().last().copied()
    }

    fn name(&self) -> &'static str {
        "naive-baseline"
    }
}

impl fmt::Debug for NaiveBaseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NaiveBaseline").field("nodes", &self.nodes.lock().len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use sluice_region_model::{GeoPoint, Region, Snapshot};

    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot::new((0..3).map(|i| Region::new(format!("r{i}"), "https://r.invalid/v1", GeoPoint::new(0.0, 0.0))))
            .unwrap()
    }

    #[test]
    fn three_strikes_and_one_success() {
        let naive = NaiveBaseline::new(3);
        let id = NodeId::from_index(1);
        naive.observe_probe(id, false);
        naive.observe_probe(id, false);
        assert!(naive.is_up(id));
        naive.observe_probe(id, false);
        assert!(!naive.is_up(id));
        let mut out = Vec::new();
        naive.candidates(|_| false, &mut out);
        assert_eq!(out, [NodeId::from_index(0), NodeId::from_index(2)]);
        naive.candidates(|i| i != id, &mut out);
        assert_eq!(out, [id], "falls back to down nodes when nothing else is left");
        naive.observe_probe(id, true);
        assert!(naive.is_up(id));
    }

    #[test]
    fn prefers_the_lower_mean() {
        let s = snapshot();
        let naive = NaiveBaseline::new(3);
        naive.observe_success(NodeId::from_index(0), Duration::from_millis(100));
        naive.observe_success(NodeId::from_index(1), Duration::from_millis(1000));
        naive.observe_success(NodeId::from_index(2), Duration::from_millis(1000));
        let now = std::time::Instant::now();
        let mut counts = [0u32; 3];
        let mut e = 0x1234_5678_u64;
        for _ in 0..12_000 {
            e = e.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            counts[naive.pick(&PickView::all(&s, now, e)).unwrap().index()] += 1;
        }
        // Expected shares 10/12, 1/12, 1/12.
        assert!((9_500..10_500).contains(&counts[0]), "{counts:?}");
    }
}
