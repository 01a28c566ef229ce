//! Per-node passive state: the failure window, ejection backoff and cooldown, as atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use sluice_region_model::NodeMetrics;

/// Buckets in the failure-rate window.
pub(crate) const BUCKETS: usize = 10;

/// The passive state of one node. Every field is an atomic, so recording never locks.
///
/// Instants are nanoseconds since the snapshot epoch; 0 means "none".
/// Cache-line aligned so that threads recording for different nodes never share a line.
///
/// # The failure-rate window
/// The node's [`NodeMetrics`] already count successes and failures. The window keeps, for
/// each of its [`BUCKETS`] time buckets, a snapshot of those two counters taken when the
/// bucket's first outcome arrived (before counting it). The window's counts are the current
/// counters minus the oldest snapshot still inside the window. So recording a call only
/// *reads* one atomic, except for the first call of each bucket, which stores a snapshot.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct NodeState {
    /// Failed calls since the last success or ejection.
    pub(crate) consecutive: AtomicU32,
    /// When the latest counted failure was recorded (nanoseconds since the epoch, plus one;
    /// 0 = none). A success of a call that started before it does not reset `consecutive`.
    pub(crate) last_failure: AtomicU64,
    /// End of the current bucket; 0 when the window is empty.
    bucket_end: AtomicU64,
    /// Ring of bucket snapshots.
    snapshots: [Snapshot; BUCKETS],
    /// End of the current or last ejection.
    pub(crate) eject_until: AtomicU64,
    /// Backoff multiplier of the last ejection.
    pub(crate) multiplier: AtomicU32,
    /// Whether this node currently counts against the ejection cap.
    pub(crate) holds_slot: AtomicBool,
    /// Set while one thread decides on ejecting this node.
    pub(crate) ejecting: AtomicBool,
    /// Whether an active probe failed since the current ejection began.
    pub(crate) probe_failed_since_eject: AtomicBool,
    /// The rule of the last ejection, packed by `EjectionReason::pack`.
    pub(crate) last_reason: AtomicU64,
    /// End of the current or last Retry-After cooldown.
    pub(crate) cooldown_until: AtomicU64,
    /// End of the part of the cooldown that 429s asked for: a probe cannot see a rate limit,
    /// so it never shortens this part.
    pub(crate) throttled_until: AtomicU64,
    /// When the latest 503 with Retry-After was recorded (0 = never): a probe that starts
    /// after it and succeeds ends the rest of the cooldown.
    pub(crate) unavailable_at: AtomicU64,
    /// The region left the membership (a successor monitor took over): never offered again.
    pub(crate) retired: AtomicBool,
}

/// The metrics counters when one bucket began.
#[derive(Debug, Default)]
struct Snapshot {
    /// Bucket index plus one; 0 = empty.
    seq: AtomicU64,
    /// `successes:32 | failures:32`, each the low 32 bits of the cumulative counter.
    counts: AtomicU64,
}

/// Successes and failures in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowCounts {
    pub(crate) successes: u32,
    pub(crate) failures: u32,
}

// ===== impl NodeState =====

impl NodeState {
    /// Whether the node is ejected at `now_ns`.
    #[inline]
    pub(crate) fn is_ejected(&self, now_ns: u64) -> bool {
        now_ns < self.eject_until.load(Ordering::Relaxed)
    }

    /// Whether the node's region left the membership.
    #[inline]
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Whether the node is in a Retry-After cooldown at `now_ns`.
    #[inline]
    pub(crate) fn in_cooldown(&self, now_ns: u64) -> bool {
        now_ns < self.cooldown_until.load(Ordering::Relaxed)
    }

    /// Starts a new bucket if `now_ns` is past the current one. Call it *before* counting
    /// the outcome in `metrics`. One atomic load on the common path.
    #[inline]
    pub(crate) fn roll(&self, now_ns: u64, bucket_ns: u64, metrics: &NodeMetrics) {
        if now_ns < self.bucket_end.load(Ordering::Relaxed) {
            return;
        }
        self.start_bucket(now_ns, bucket_ns, metrics);
    }

    #[cold]
    fn start_bucket(&self, now_ns: u64, bucket_ns: u64, metrics: &NodeMetrics) {
        let index = now_ns / bucket_ns;
        let end = index.saturating_add(1).saturating_mul(bucket_ns);
        // Whoever moves the end forward takes the snapshot; racing threads see it moved.
        if self.bucket_end.fetch_max(end, Ordering::AcqRel) >= end {
            return;
        }
        let slot = &self.snapshots[(index % BUCKETS as u64) as usize];
        slot.counts.store(pack(metrics.successes(), metrics.failures()), Ordering::Relaxed);
        slot.seq.store(index + 1, Ordering::Release);
    }

    /// The outcomes counted by `metrics` since the oldest bucket of the window that ends at
    /// `now_ns`.
    pub(crate) fn window(&self, now_ns: u64, bucket_ns: u64, metrics: &NodeMetrics) -> WindowCounts {
        let index = now_ns / bucket_ns;
        let mut oldest: Option<(u64, u64)> = None;
        for slot in &self.snapshots {
            let seq = slot.seq.load(Ordering::Acquire);
            let Some(i) = seq.checked_sub(1) else { continue };
            if i <= index && index - i < BUCKETS as u64 && oldest.is_none_or(|(o, _)| i < o) {
                oldest = Some((i, slot.counts.load(Ordering::Relaxed)));
            }
        }
        let Some((_, counts)) = oldest else { return WindowCounts { successes: 0, failures: 0 } };
        let (s0, f0) = unpack(counts);
        let (s1, f1) = unpack(pack(metrics.successes(), metrics.failures()));
        WindowCounts { successes: s1.wrapping_sub(s0), failures: f1.wrapping_sub(f0) }
    }

    /// Forgets every outcome (after an ejection, so that old failures do not eject again).
    pub(crate) fn clear_window(&self) {
        for slot in &self.snapshots {
            slot.seq.store(0, Ordering::Relaxed);
        }
        self.bucket_end.store(0, Ordering::Release);
        self.consecutive.store(0, Ordering::Relaxed);
    }
}

fn pack(successes: u64, failures: u64) -> u64 {
    (successes & 0xFFFF_FFFF) << 32 | (failures & 0xFFFF_FFFF)
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// The multiplier of a new ejection at `now_ns`: the last one's, minus one per full `decay_ns`
/// since the last ejection ended, plus one; at most `cap`.
pub(crate) fn next_multiplier(last: u32, last_end_ns: u64, now_ns: u64, decay_ns: u64, cap: u32) -> u32 {
    let forgiven =
        if last_end_ns == 0 { u64::from(last) } else { now_ns.saturating_sub(last_end_ns) / decay_ns.max(1) };
    let decayed = u64::from(last).saturating_sub(forgiven);
    (decayed as u32).saturating_add(1).min(cap.max(1))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const B: u64 = 1_000;

    /// Records like `HealthMonitor::record` does: roll, then count in the metrics.
    fn outcome(s: &NodeState, m: &NodeMetrics, now_ns: u64, failure: bool) {
        s.roll(now_ns, B, m);
        let now = m.epoch() + Duration::from_nanos(now_ns);
        if failure { m.record_failure(now) } else { m.record_success(Duration::from_millis(1), now) }
    }

    #[test]
    fn window_counts_and_slides() {
        let m = NodeMetrics::new(Instant::now(), Duration::from_secs(10));
        let s = NodeState::default();
        assert_eq!(s.window(0, B, &m), WindowCounts { successes: 0, failures: 0 });
        outcome(&s, &m, 0, false);
        outcome(&s, &m, 10, true);
        outcome(&s, &m, 5 * B, true);
        assert_eq!(s.window(5 * B, B, &m), WindowCounts { successes: 1, failures: 2 });
        // Bucket 0 leaves the window once index 10 is reached: the window then starts at
        // bucket 5.
        assert_eq!(s.window(10 * B, B, &m), WindowCounts { successes: 0, failures: 1 });
        outcome(&s, &m, 10 * B, false);
        assert_eq!(s.window(10 * B, B, &m), WindowCounts { successes: 1, failures: 1 });
        // A window with no bucket left is empty, and the next outcome starts a new one.
        assert_eq!(s.window(30 * B, B, &m), WindowCounts { successes: 0, failures: 0 });
        outcome(&s, &m, 30 * B, true);
        assert_eq!(s.window(30 * B, B, &m), WindowCounts { successes: 0, failures: 1 });
        s.clear_window();
        assert_eq!(s.window(30 * B, B, &m), WindowCounts { successes: 0, failures: 0 });
        outcome(&s, &m, 30 * B + 1, false);
        assert_eq!(s.window(30 * B + 1, B, &m), WindowCounts { successes: 1, failures: 0 });
    }

    #[test]
    fn counters_wrap_cleanly() {
        assert_eq!(unpack(pack(u64::from(u32::MAX) + 3, 7)), (2, 7));
        let (s0, _) = unpack(pack(u64::from(u32::MAX), 0));
        let (s1, _) = unpack(pack(u64::from(u32::MAX) + 5, 0));
        assert_eq!(s1.wrapping_sub(s0), 5);
    }

    #[test]
    fn multiplier_grows_decays_and_caps() {
        let d = 30;
        assert_eq!(next_multiplier(0, 0, 100, d, 30), 1);
        assert_eq!(next_multiplier(1, 100, 100, d, 30), 2);
        assert_eq!(next_multiplier(2, 100, 129, d, 30), 3);
        assert_eq!(next_multiplier(2, 100, 130, d, 30), 2);
        assert_eq!(next_multiplier(3, 100, 190, d, 30), 1);
        assert_eq!(next_multiplier(30, 100, 100, d, 30), 30);
        assert_eq!(next_multiplier(u32::MAX, 100, 100, d, 0), 1);
    }
}
