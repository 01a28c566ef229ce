//! Per-node passive state: the failure window, ejection backoff and cooldown, as atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Buckets in the failure-rate window.
pub(crate) const BUCKETS: usize = 10;

const SEQ_SHIFT: u32 = 40;
const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Bucket sequence numbers are kept modulo this (24 bits); 0 marks an empty bucket.
const SEQ_MOD: u64 = (1 << 24) - 1;

/// The passive state of one node. Every field is an atomic, so recording never locks.
///
/// Instants are nanoseconds since the snapshot epoch; 0 means "none".
/// Cache-line aligned so that threads recording for different nodes never share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct NodeState {
    /// Failed calls since the last success or ejection.
    pub(crate) consecutive: AtomicU32,
    /// Ring of time buckets; each packs `seq:24 | failures:20 | successes:20`.
    buckets: [AtomicU64; BUCKETS],
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

    /// Whether the node is in a Retry-After cooldown at `now_ns`.
    #[inline]
    pub(crate) fn in_cooldown(&self, now_ns: u64) -> bool {
        now_ns < self.cooldown_until.load(Ordering::Relaxed)
    }

    /// Adds one outcome to bucket number `index` (time since epoch / bucket length).
    /// Lock-free: one CAS loop on one word.
    #[inline]
    pub(crate) fn count(&self, index: u64, failure: bool) {
        let seq = seq_of(index);
        let slot = &self.buckets[(index % BUCKETS as u64) as usize];
        let inc = if failure { 1 << COUNT_BITS } else { 1 };
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let counts = if cur >> SEQ_SHIFT == seq { cur & (COUNT_MASK << COUNT_BITS | COUNT_MASK) } else { 0 };
            // Saturate each 20-bit count instead of carrying into its neighbour.
            let full = if failure { (counts >> COUNT_BITS) & COUNT_MASK } else { counts & COUNT_MASK } == COUNT_MASK;
            let new = seq << SEQ_SHIFT | if full { counts } else { counts + inc };
            match slot.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sums the buckets of the window that ends in bucket number `index`.
    #[inline]
    pub(crate) fn window(&self, index: u64) -> WindowCounts {
        let cur = seq_of(index);
        let mut counts = WindowCounts { successes: 0, failures: 0 };
        for slot in &self.buckets {
            let v = slot.load(Ordering::Relaxed);
            let seq = v >> SEQ_SHIFT;
            // Age in buckets, modulo the sequence space; empty slots (seq 0) never match.
            let age = (cur + SEQ_MOD - seq) % SEQ_MOD;
            if seq != 0 && age < BUCKETS as u64 && age <= index {
                counts.successes += (v & COUNT_MASK) as u32;
                counts.failures += ((v >> COUNT_BITS) & COUNT_MASK) as u32;
            }
        }
        counts
    }

    /// Forgets every outcome (after an ejection, so that old failures do not eject again).
    pub(crate) fn clear_window(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.consecutive.store(0, Ordering::Relaxed);
    }
}

/// The sequence number stored for bucket `index`: never 0, which marks an empty slot.
#[inline]
fn seq_of(index: u64) -> u64 {
    index % SEQ_MOD + 1
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
    use super::*;

    #[test]
    fn window_counts_and_slides() {
        let s = NodeState::default();
        s.count(0, false);
        s.count(0, true);
        s.count(5, true);
        assert_eq!(s.window(5), WindowCounts { successes: 1, failures: 2 });
        // Bucket 0 leaves the window once index 10 is reached.
        assert_eq!(s.window(10), WindowCounts { successes: 0, failures: 1 });
        // A bucket reused ten slots later starts from zero.
        s.count(10, false);
        assert_eq!(s.window(10), WindowCounts { successes: 1, failures: 1 });
        assert_eq!(s.window(30), WindowCounts { successes: 0, failures: 0 });
        s.count(30, true);
        s.clear_window();
        assert_eq!(s.window(30), WindowCounts { successes: 0, failures: 0 });
    }

    #[test]
    fn window_survives_sequence_wrap_and_saturates() {
        let s = NodeState::default();
        let base = SEQ_MOD - 3;
        for i in 0..6 {
            s.count(base + i, i % 2 == 0);
        }
        assert_eq!(s.window(base + 5), WindowCounts { successes: 3, failures: 3 });
        let one = NodeState::default();
        for _ in 0..(COUNT_MASK + 5) {
            one.count(7, true);
        }
        one.count(7, false);
        assert_eq!(one.window(7), WindowCounts { successes: 1, failures: COUNT_MASK as u32 });
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
