//! Which region holds an object (a stored response, a file, a batch, a vector store): a
//! bounded id → region map with a time to live.
//!
//! Entries are kept in insertion order; the oldest goes when the map is full, and an entry
//! older than the TTL is a miss.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// Default number of ids remembered.
pub const DEFAULT_STATE_CAPACITY: usize = 100_000;
/// Default time an id is remembered.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(24 * 3600);

/// A bounded id → region map with a TTL. Cheap to share: one lock, short critical sections.
#[derive(Debug)]
pub(crate) struct StateMap {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Box<str>, (Arc<str>, Instant)>,
    order: VecDeque<(Box<str>, Instant)>,
}

impl StateMap {
    /// A map of at most `capacity` ids, each kept for `ttl`.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity: capacity.max(1), ttl }
    }

    /// Remembers that `id` lives in `region`.
    pub(crate) fn insert(&self, id: &str, region: Arc<str>, now: Instant) {
        if id.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        inner.map.insert(id.into(), (region, now));
        inner.order.push_back((id.into(), now));
        // Drop what has expired or overflows; a re-inserted id has a newer stamp than its
        // old queue entry, which then removes nothing.
        while let Some((old, at)) = inner.order.front() {
            let expired = now.saturating_duration_since(*at) > self.ttl;
            if !(expired || inner.map.len() > self.capacity || inner.order.len() > 2 * self.capacity) {
                break;
            }
            let (old, at) = (old.clone(), *at);
            inner.order.pop_front();
            if inner.map.get(&old).is_some_and(|(_, stamp)| *stamp == at) {
                inner.map.remove(&old);
            }
        }
    }

    /// The region that holds `id`, if known and not expired.
    pub(crate) fn get(&self, id: &str, now: Instant) -> Option<Arc<str>> {
        let inner = self.inner.lock();
        let (region, at) = inner.map.get(id)?;
        (now.saturating_duration_since(*at) <= self.ttl).then(|| Arc::clone(region))
    }

    /// Forgets `id` (it was deleted).
    pub(crate) fn remove(&self, id: &str) {
        self.inner.lock().map.remove(id);
    }

    /// Ids remembered now, expired ones included until they are swept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether no id is remembered.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let t0 = Instant::now();
        let m = StateMap::new(3, Duration::from_secs(10));
        let r: Arc<str> = Arc::from("eu");
        for i in 0..10 {
            m.insert(&format!("id{i}"), Arc::clone(&r), t0);
        }
        assert_eq!(m.len(), 3);
        assert!(m.get("id0", t0).is_none());
        assert_eq!(m.get("id9", t0).as_deref(), Some("eu"));
        assert!(m.get("id9", t0 + Duration::from_secs(11)).is_none());
        m.insert("late", Arc::clone(&r), t0 + Duration::from_secs(20));
        assert_eq!(m.len(), 1, "expired ids are swept on insert");
        m.remove("late");
        assert!(m.is_empty());
    }

    #[test]
    fn reinsert_keeps_the_newest() {
        let t0 = Instant::now();
        let m = StateMap::new(2, Duration::from_secs(10));
        m.insert("a", Arc::from("x"), t0);
        m.insert("a", Arc::from("y"), t0 + Duration::from_secs(1));
        m.insert("b", Arc::from("x"), t0 + Duration::from_secs(2));
        assert_eq!(m.get("a", t0 + Duration::from_secs(2)).as_deref(), Some("y"));
        for i in 0..100 {
            m.insert("c", Arc::from("z"), t0 + Duration::from_secs(3) + Duration::from_millis(i));
        }
        assert!(m.len() <= 2);
    }
}
