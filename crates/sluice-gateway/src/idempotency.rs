//! `Idempotency-Key` on non-streaming calls: a repeat within the TTL gets the stored answer,
//! or waits for the first call while it runs; the call is never generated twice.
//!
//! Memory is bounded by a count of keys and a total of stored bytes. An answer too large to
//! keep leaves a marker, so a repeat is refused clearly instead of generating again.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use tokio::sync::watch;

/// How long a key is honoured.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);
/// How many keys are kept.
pub const DEFAULT_IDEMPOTENCY_KEYS: usize = 10_000;
/// How many answer bytes are kept in total.
pub const DEFAULT_IDEMPOTENCY_BYTES: usize = 64 << 20;

/// A finished answer.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// Its status.
    pub(crate) status: StatusCode,
    /// Its headers (already filtered for the caller).
    pub(crate) headers: HeaderMap,
    /// Its body, or `None` when it was too large to keep.
    pub(crate) body: Option<Bytes>,
}

/// What a call with a key should do.
#[derive(Debug)]
pub(crate) enum Claim {
    /// This call is the first: run it, then [`Slot::finish`] it.
    First(Slot),
    /// Another call with the key runs: wait for its answer.
    Wait(watch::Receiver<Option<Arc<Stored>>>),
    /// The answer is stored.
    Done(Arc<Stored>),
    /// The key was used with another request body.
    Mismatch,
}

/// The first call's duty to publish its answer. Dropped unfinished, it frees the key so that
/// a repeat runs the call (nothing was stored, so nothing can be replayed).
#[derive(Debug)]
pub(crate) struct Slot {
    store: Arc<IdempotencyStore>,
    key: Arc<str>,
    tx: Option<watch::Sender<Option<Arc<Stored>>>>,
}

#[derive(Debug)]
enum Entry {
    Running { fingerprint: u64, rx: watch::Receiver<Option<Arc<Stored>>> },
    Done { fingerprint: u64, stored: Arc<Stored>, size: usize },
}

/// The store of keys and answers.
#[derive(Debug)]
pub(crate) struct IdempotencyStore {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_keys: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Arc<str>, (Entry, Instant)>,
    order: VecDeque<(Arc<str>, Instant)>,
    bytes: usize,
}

impl IdempotencyStore {
    /// A store honouring keys for `ttl`, with at most `max_keys` keys and `max_bytes` bytes.
    pub(crate) fn new(ttl: Duration, max_keys: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Self { inner: Mutex::new(Inner::default()), ttl, max_keys: max_keys.max(1), max_bytes })
    }

    /// Claims `key` for a request whose body hashes to `fingerprint`.
    pub(crate) fn claim(self: &Arc<Self>, key: &str, fingerprint: u64, now: Instant) -> Claim {
        let mut inner = self.inner.lock();
        self.sweep(&mut inner, now);
        if let Some((entry, at)) = inner.entries.get(key)
            && now.saturating_duration_since(*at) <= self.ttl
        {
            return match entry {
                Entry::Running { fingerprint: f, .. } | Entry::Done { fingerprint: f, .. } if *f != fingerprint => {
                    Claim::Mismatch
                }
                Entry::Running { rx, .. } => Claim::Wait(rx.clone()),
                Entry::Done { stored, .. } => Claim::Done(Arc::clone(stored)),
            };
        }
        let (tx, rx) = watch::channel(None);
        let key: Arc<str> = Arc::from(key);
        if let Some((Entry::Done { size, .. }, _)) =
            inner.entries.insert(Arc::clone(&key), (Entry::Running { fingerprint, rx }, now))
        {
            inner.bytes -= size;
        }
        inner.order.push_back((Arc::clone(&key), now));
        Claim::First(Slot { store: Arc::clone(self), key, tx: Some(tx) })
    }

    fn sweep(&self, inner: &mut Inner, now: Instant) {
        while let Some((key, at)) = inner.order.front() {
            let expired = now.saturating_duration_since(*at) > self.ttl;
            if !(expired || inner.entries.len() > self.max_keys || inner.bytes > self.max_bytes) {
                break;
            }
            let (key, at) = (Arc::clone(key), *at);
            inner.order.pop_front();
            let current =
                inner.entries.get(&key).is_some_and(|(e, stamp)| *stamp == at && matches!(e, Entry::Done { .. }));
            if current && let Some((Entry::Done { size, .. }, _)) = inner.entries.remove(&key) {
                inner.bytes -= size;
            } else if inner.entries.get(&key).is_some_and(|(_, stamp)| *stamp == at) && expired {
                // A call still running past the TTL: its waiters keep their receiver.
                inner.entries.remove(&key);
            }
        }
    }

    /// Keys held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Answer bytes held now.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

impl Slot {
    /// Publishes the answer to waiters and keeps it for repeats. A body larger than a quarter
    /// of the byte budget is not kept; repeats then get a clear refusal.
    pub(crate) fn finish(mut self, mut stored: Stored) -> Arc<Stored> {
        let size = stored.body.as_ref().map_or(0, Bytes::len);
        let keep = size <= self.store.max_bytes / 4;
        let published = Arc::new(stored.clone());
        if !keep {
            stored.body = None;
        }
        let kept = Arc::new(stored);
        let now = Instant::now();
        let mut inner = self.store.inner.lock();
        if let Some((entry, stamp)) = inner.entries.get_mut(&self.key)
            && let Entry::Running { fingerprint, .. } = entry
        {
            let fingerprint = *fingerprint;
            let size = if keep { size } else { 0 };
            *entry = Entry::Done { fingerprint, stored: Arc::clone(&kept), size };
            // The key is honoured for the TTL from the answer on.
            *stamp = now;
            inner.bytes += size;
            inner.order.push_back((Arc::clone(&self.key), now));
        }
        drop(inner);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(Arc::clone(&published)));
        }
        published
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let mut inner = self.store.inner.lock();
            if matches!(inner.entries.get(&self.key), Some((Entry::Running { .. }, _))) {
                inner.entries.remove(&self.key);
            }
        }
    }
}

/// A fast 64-bit fingerprint of a request body (FNV-1a).
pub(crate) fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static str) -> Stored {
        Stored { status: StatusCode::OK, headers: HeaderMap::new(), body: Some(Bytes::from_static(body.as_bytes())) }
    }

    #[tokio::test]
    async fn first_runs_repeat_waits_then_replays() {
        let store = IdempotencyStore::new(Duration::from_secs(600), 10, 1 << 20);
        let t0 = Instant::now();
        let Claim::First(slot) = store.claim("k", 1, t0) else { panic!("first") };
        let Claim::Wait(mut rx) = store.claim("k", 1, t0) else { panic!("wait") };
        assert!(matches!(store.claim("k", 2, t0), Claim::Mismatch));
        slot.finish(answer("{}"));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().as_ref().unwrap().body.as_deref(), Some(&b"{}"[..]));
        assert!(matches!(store.claim("k", 1, t0), Claim::Done(_)));
        assert!(matches!(store.claim("k", 1, t0 + Duration::from_secs(601)), Claim::First(_)));
    }

    #[test]
    fn an_abandoned_first_call_frees_the_key() {
        let store = IdempotencyStore::new(Duration::from_secs(600), 10, 1 << 20);
        let t0 = Instant::now();
        let Claim::First(slot) = store.claim("k", 1, t0) else { panic!() };
        drop(slot);
        assert!(matches!(store.claim("k", 1, t0), Claim::First(_)));
    }

    #[test]
    fn bounded_in_keys_and_bytes() {
        let store = IdempotencyStore::new(Duration::from_secs(600), 5, 64);
        let t0 = Instant::now();
        for i in 0..50 {
            if let Claim::First(slot) = store.claim(&format!("k{i}"), 1, t0) {
                slot.finish(answer("0123456789abcdef"));
            }
        }
        assert!(store.len() <= 6, "{}", store.len());
        assert!(store.bytes() <= 64 + 16);
        let Claim::First(slot) = store.claim("big", 1, t0) else { panic!() };
        let big = Stored { body: Some(Bytes::from(vec![b'x'; 1000])), ..answer("") };
        assert_eq!(slot.finish(big).body.as_ref().unwrap().len(), 1000, "the first caller gets it all");
        let Claim::Done(kept) = store.claim("big", 1, t0) else { panic!() };
        assert!(kept.body.is_none(), "too large to keep");
    }
}
