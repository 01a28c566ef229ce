//! Helpers for tests and benchmarks (feature `test-util`).

use std::time::{Duration, Instant};

use sluice_region_model::{GeoPoint, Region, Snapshot};

/// A snapshot of nodes named `n0`, `n1`, … with the given weights, all at (0, 0), with
/// endpoints on an unroutable loopback port.
pub fn snapshot_with_weights(weights: &[u32]) -> Snapshot {
    Snapshot::new(weights.iter().enumerate().map(|(i, &w)| {
        Region::new(format!("n{i}"), format!("http://127.0.0.1:9/n{i}/v1"), GeoPoint::new(0.0, 0.0)).with_weight(w)
    }))
    .expect("valid test snapshot")
}

/// A snapshot of `n` equally weighted nodes spread over the globe.
pub fn snapshot_spread(n: usize) -> Snapshot {
    Snapshot::new((0..n).map(|i| {
        let lat = ((i * 37) % 170) as f64 - 85.0;
        let lon = ((i * 73) % 350) as f64 - 175.0;
        Region::new(format!("n{i}"), format!("http://127.0.0.1:9/n{i}/v1"), GeoPoint::new(lat, lon))
    }))
    .expect("valid test snapshot")
}

/// Sets each node's latency estimate to the given value by recording one success at `now`.
pub fn set_latencies(snapshot: &Snapshot, latencies: &[Duration], now: Instant) {
    for (node, &l) in snapshot.nodes().iter().zip(latencies) {
        node.metrics().record_success(l, now);
    }
}

/// A deterministic stream of entropy values for views, from a seed (SplitMix64).
#[derive(Debug, Clone)]
pub struct EntropySource(crate::rng::PickRng);

impl EntropySource {
    /// Seeds the stream.
    pub fn new(seed: u64) -> Self {
        Self(crate::rng::PickRng::new(seed))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}
