//! A retry budget: retries may be at most a share of recent calls, plus a small floor.
//!
//! It lives here rather than in `sluice-client` so that fleet mode can reach it; the client re-exports it.

use std::{
    fmt,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::{Duration, Instant},
};

const SLOTS: usize = 10;

/// Caps retries (failovers, hedges and rescues) to a share of recent calls.
///
/// The design follows Finagle's `RetryBudget` and tower's `TpsBudget`: every call deposits
/// one token, every retry withdraws `1 / ratio` tokens, and a reserve of
/// `min_per_sec × ttl` retries is always available. Deposits and withdrawals expire after
/// `ttl`, kept in ten rotating one-tenth-of-ttl slots.
///
/// Unlike tower's, it takes no lock: slots are atomics and a slot that has aged out is reset
/// by the first caller to notice. Two callers racing for the last token may both get it, so
/// the bound can be exceeded by the number of concurrent retries at that instant.
pub struct RetryBudget {
    epoch: Instant,
    slot_ns: u64,
    /// Tokens per deposit, scaled by 1000 (ratio 0.2 → 200 milli-tokens; a retry costs 1000).
    deposit_milli: i64,
    reserve_milli: i64,
    /// Per slot: the slot's generation (index of its time window) and its token balance.
    generation: [AtomicU64; SLOTS],
    balance: [AtomicI64; SLOTS],
    /// Calls recorded since creation (for fleet mode's reports).
    calls: AtomicU64,
    /// Retries granted since creation.
    retries: AtomicU64,
    /// Nanoseconds since `epoch` until which the fleet grant applies; 0 = local budget.
    shared_until: AtomicU64,
    /// Retries the fleet granted and this replica has not spent yet (may dip below 0 by what
    /// was spent while a grant was being renewed).
    shared: AtomicI64,
}

// ===== impl RetryBudget =====

impl RetryBudget {
    /// A budget allowing `ratio` retries per call (0.2 = 20 %) plus `min_per_sec` per second,
    /// measured over `ttl`. `epoch` is the time origin (any instant not after the first use).
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f64, epoch: Instant) -> Self {
        let ttl = ttl.max(Duration::from_millis(SLOTS as u64));
        Self {
            epoch,
            slot_ns: (ttl.as_nanos() / SLOTS as u128).max(1) as u64,
            deposit_milli: (ratio.clamp(0.0, 1000.0) * 1000.0).round() as i64,
            reserve_milli: i64::from(min_per_sec).saturating_mul(ttl.as_secs().max(1) as i64).saturating_mul(1000),
            generation: Default::default(),
            balance: Default::default(),
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            shared_until: AtomicU64::new(0),
            shared: AtomicI64::new(0),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn slot(&self, now: Instant) -> (usize, u64) {
        let ns = self.nanos(now);
        let generation = ns / self.slot_ns + 1;
        let i = (generation % SLOTS as u64) as usize;
        if self.generation[i].load(Ordering::Acquire) != generation {
            // First touch of this slot in a new window: forget what it held.
            let old = self.generation[i].swap(generation, Ordering::AcqRel);
            if old != generation {
                self.balance[i].store(0, Ordering::Release);
            }
        }
        (i, generation)
    }

    fn total(&self, generation: u64) -> i64 {
        (0..SLOTS)
            .filter(|&i| {
                let g = self.generation[i].load(Ordering::Acquire);
                g != 0 && g + SLOTS as u64 > generation
            })
            .map(|i| self.balance[i].load(Ordering::Acquire))
            .sum()
    }

    /// Records one call.
    pub fn deposit(&self, now: Instant) {
        let (i, _) = self.slot(now);
        self.balance[i].fetch_add(self.deposit_milli, Ordering::AcqRel);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry if the budget allows; `false` means the retry must not happen.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let (i, generation) = self.slot(now);
        if self.is_shared(now) {
            let taken = self.shared.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n >= 1).then(|| n - 1));
            if taken.is_err() {
                return false;
            }
        } else if self.reserve_milli + self.total(generation) < 1000 {
            return false;
        }
        // Also kept in the local balance, so that falling back to it stays truthful.
        self.balance[i].fetch_sub(1000, Ordering::AcqRel);
        self.retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn is_shared(&self, now: Instant) -> bool {
        self.nanos(now) < self.shared_until.load(Ordering::Acquire)
    }

    /// Retries currently available (from the fleet grant while one applies).
    pub fn available(&self, now: Instant) -> u64 {
        if self.is_shared(now) {
            return self.shared.load(Ordering::Acquire).max(0) as u64;
        }
        let (_, generation) = self.slot(now);
        ((self.reserve_milli + self.total(generation)).max(0) / 1000) as u64
    }

    /// Calls recorded ([`deposit`](Self::deposit)) since the budget was made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Retries granted ([`try_withdraw`](Self::try_withdraw) returned `true`) since the budget was made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The window over which calls and retries count.
    pub fn ttl(&self) -> Duration {
        Duration::from_nanos(self.slot_ns.saturating_mul(SLOTS as u64))
    }

    /// Retries allowed per call, in thousandths (0.2 → 200).
    pub fn ratio_milli(&self) -> i64 {
        self.deposit_milli
    }

    /// The floor: retries always allowed within one window (`min_per_sec × ttl`).
    pub fn reserve(&self) -> u64 {
        (self.reserve_milli / 1000).max(0) as u64
    }

    /// Fleet mode: adds `delta` retries (negative to take back what was returned to the fleet)
    /// to the fleet grant, and makes the grant apply until `until`.
    pub fn grant_shared(&self, delta: i64, until: Instant) {
        self.shared.fetch_add(delta, Ordering::AcqRel);
        self.shared_until.store(self.nanos(until).max(1), Ordering::Release);
    }

    /// Fleet mode: the fleet grant not spent yet (negative while a renewal is in flight and
    /// more was spent meanwhile).
    pub fn shared_allowance(&self) -> i64 {
        self.shared.load(Ordering::Acquire)
    }

    /// Fleet mode: drops the fleet grant; the local budget alone applies again.
    pub fn end_shared(&self) {
        self.shared_until.store(0, Ordering::Release);
        self.shared.store(0, Ordering::Release);
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("deposit_milli", &self.deposit_milli)
            .field("reserve_milli", &self.reserve_milli)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_then_ratio() {
        let t0 = Instant::now();
        // Reserve: 1/s over 10 s = 10 retries.
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.2, t0);
        assert_eq!(b.available(t0), 10);
        let granted = (0..50).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 10);
        // 100 calls earn 20 retries.
        for _ in 0..100 {
            b.deposit(t0);
        }
        assert_eq!((0..50).filter(|_| b.try_withdraw(t0)).count(), 20);
        assert!(!b.try_withdraw(t0));
    }

    #[test]
    fn tokens_expire_after_ttl() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(10), 0, 0.5, t0);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert_eq!(b.available(t0), 5);
        assert_eq!(b.available(t0 + Duration::from_secs(5)), 5);
        assert_eq!(b.available(t0 + Duration::from_secs(11)), 0);
        // Withdrawals expire too: spending now does not hurt the next window.
        assert!(b.try_withdraw(t0 + Duration::from_secs(1)));
        assert_eq!(b.available(t0 + Duration::from_secs(2)), 4);
    }

    #[test]
    fn a_fleet_grant_replaces_the_local_balance_until_it_lapses() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.2, t0);
        assert_eq!((b.ttl(), b.reserve(), b.ratio_milli()), (Duration::from_secs(10), 10, 200));
        b.grant_shared(2, t0 + Duration::from_secs(1));
        assert_eq!(b.available(t0), 2);
        assert_eq!((0..5).filter(|_| b.try_withdraw(t0)).count(), 2, "only the grant, not the local floor");
        b.deposit(t0);
        assert_eq!((b.calls(), b.retries(), b.shared_allowance()), (1, 2, 0));
        // A renewal that returned 1 unspent retry while 1 more was spent nets out below zero.
        b.grant_shared(-1, t0 + Duration::from_secs(1));
        assert!(!b.try_withdraw(t0));
        // Lapsed: the local floor (10, minus the 2 spent) applies again.
        assert_eq!(b.available(t0 + Duration::from_secs(2)), 8);
        b.grant_shared(5, t0 + Duration::from_secs(3));
        b.end_shared();
        assert_eq!(b.available(t0 + Duration::from_secs(2)), 8);
    }

    #[test]
    fn zero_ratio_and_zero_floor_allows_nothing() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(10), 0, 0.0, t0);
        b.deposit(t0);
        assert!(!b.try_withdraw(t0));
    }
}
