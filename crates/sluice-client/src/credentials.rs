//! Regions that refused our key: kept out of new calls for a while, logged once per spell.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Per node: until when it is excluded because it refused our key, and with which status.
///
/// Lock-free: a pick reads one atomic per candidate.
#[derive(Debug)]
pub(crate) struct CredentialBlocks {
    epoch: Instant,
    nodes: Box<[Block]>,
}

#[derive(Debug, Default)]
struct Block {
    /// Nanoseconds after `epoch`; 0 = never excluded.
    until_ns: AtomicU64,
    status: AtomicU32,
}

impl CredentialBlocks {
    pub(crate) fn new(n: usize, epoch: Instant) -> Self {
        Self { epoch, nodes: (0..n).map(|_| Block::default()).collect() }
    }

    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Excludes node `index` for `window` from `at`. Returns true when this starts a new
    /// spell (the node was not excluded at `at`): the caller logs only then.
    pub(crate) fn exclude(&self, index: usize, status: u16, at: Instant, window: Duration) -> bool {
        let Some(block) = self.nodes.get(index) else { return false };
        let now = self.ns(at);
        let until = now.saturating_add(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX)).max(1);
        block.status.store(u32::from(status), Ordering::Relaxed);
        let prev = block.until_ns.fetch_max(until, Ordering::AcqRel);
        prev <= now
    }

    /// The status that excludes node `index` at `at`, if it is excluded.
    pub(crate) fn excluded(&self, index: usize, at: Instant) -> Option<u16> {
        let block = self.nodes.get(index)?;
        (self.ns(at) < block.until_ns.load(Ordering::Acquire))
            .then(|| u16::try_from(block.status.load(Ordering::Relaxed)).unwrap_or(401))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spell_starts_once_and_ends() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let b = CredentialBlocks::new(2, t0);
        assert_eq!(b.excluded(0, t0), None);
        assert!(b.exclude(0, 401, t0, 60 * s), "a new spell");
        assert!(!b.exclude(0, 403, t0 + s, 60 * s), "the same spell: logged once");
        assert_eq!(b.excluded(0, t0 + 30 * s), Some(403));
        assert_eq!(b.excluded(1, t0 + 30 * s), None);
        assert_eq!(b.excluded(0, t0 + 61 * s), None);
        assert!(b.exclude(0, 401, t0 + 62 * s, 60 * s), "a later spell is logged again");
        assert_eq!(b.excluded(7, t0), None);
    }
}
