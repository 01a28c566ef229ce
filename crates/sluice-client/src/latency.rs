//! A lock-free latency histogram, for percentile hedging.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Quarter-octave buckets from 1 µs: bucket `i` covers up to `2^(i/4)` µs; 128 buckets reach
/// past 3 hours.
const BUCKETS: usize = 128;

/// Counts of successful call latencies, by bucket. Cumulative.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn new() -> Self {
        Self { counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(), total: AtomicU64::new(0) }
    }

    fn bucket(d: Duration) -> usize {
        let us = d.as_secs_f64() * 1e6;
        if us <= 1.0 { 0 } else { ((us.log2() * 4.0).ceil() as usize).min(BUCKETS - 1) }
    }

    fn upper(i: usize) -> Duration {
        Duration::from_secs_f64(2f64.powf(i as f64 / 4.0) / 1e6)
    }

    pub(crate) fn record(&self, d: Duration) {
        self.counts[Self::bucket(d)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound of the bucket holding the `p`-th percentile, if at least `min` samples.
    pub(crate) fn percentile(&self, p: f64, min: u64) -> Option<Duration> {
        let total = self.total.load(Ordering::Relaxed);
        if total < min.max(1) {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(Self::upper(i));
            }
        }
        Some(Self::upper(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_land_in_the_right_bucket() {
        let h = LatencyHistogram::new();
        assert_eq!(h.percentile(50.0, 1), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.percentile(50.0, 20).unwrap();
        assert!(p50 >= Duration::from_millis(50) && p50 < Duration::from_millis(60), "{p50:?}");
        let p95 = h.percentile(95.0, 20).unwrap();
        assert!(p95 >= Duration::from_millis(95) && p95 < Duration::from_millis(114), "{p95:?}");
        assert_eq!(h.percentile(95.0, 101), None);
    }
}
