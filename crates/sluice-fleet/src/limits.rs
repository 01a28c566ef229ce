//! The arithmetic of the fleet-wide limits, kept apart from Redis so that it can be tested
//! alone: the shared retry budget's rounds and the per-region request tokens.

use std::time::{Duration, Instant};

use sluice_health::RetryBudget;
use sluice_region_model::NodeId;

/// Buckets the shared retry budget's window is split into in Redis (as the local budget's).
pub(crate) const BUDGET_BUCKETS: u64 = 10;

/// How often the limited regions' local tokens are checked: a two-hundredth of the window,
/// between 5 ms and 100 ms. Reading the counters is a few atomic loads; Redis is asked only
/// when a region runs low.
pub(crate) fn tick(window: Duration) -> Duration {
    (window / 200).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

// ===== shared retry budget =====

/// What one replica has told the fleet's retry budget so far.
#[derive(Debug, Default)]
pub(crate) struct BudgetRound {
    /// The budget's call count at the last answered round.
    reported_calls: u64,
    /// The Redis bucket of the last claim, where unspent retries go back.
    pub(crate) bucket: i64,
}

/// The numbers one round sends.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BudgetAsk {
    /// Calls made since the last answered round.
    pub(crate) calls: u64,
    /// Granted retries not spent, given back (they are claimed anew with the fleet's share).
    pub(crate) returned: i64,
    /// Width of one bucket.
    pub(crate) bucket_ms: u64,
}

impl BudgetRound {
    /// The round to send for `budget`, whose call count is now `calls`.
    pub(crate) fn ask(&self, budget: &RetryBudget, calls: u64) -> BudgetAsk {
        BudgetAsk {
            calls: calls.saturating_sub(self.reported_calls),
            returned: budget.shared_allowance().max(0),
            bucket_ms: (budget.ttl().as_millis() as u64 / BUDGET_BUCKETS).max(1),
        }
    }

    /// The fleet answered: `calls` are reported, and `granted` retries were claimed in `bucket`.
    pub(crate) fn answered(&mut self, calls: u64, bucket: i64, granted: i64) {
        self.reported_calls = calls;
        if granted > 0 {
            self.bucket = bucket;
        }
    }
}

// ===== per-region request limits =====

/// One limited region's local tokens.
#[derive(Debug)]
pub(crate) struct LimitState {
    pub(crate) node: NodeId,
    pub(crate) per_window: u32,
    batch: u32,
    /// The node's started-calls counter at the last look.
    seen: u64,
    /// Claimed and not spent; negative when more calls started than were claimed (that
    /// deficit is charged with the next claim).
    tokens: i64,
    /// The fleet window the tokens belong to (`None` before the first claim).
    window: Option<i64>,
    /// The fleet's window is spent until then: no claims, the region is in cooldown.
    spent_until: Option<Instant>,
}

impl LimitState {
    pub(crate) fn new(node: NodeId, per_window: u32, batch: u32, started: u64) -> Self {
        Self { node, per_window, batch: batch.max(1), seen: started, tokens: 0, window: None, spent_until: None }
    }

    /// Spends the calls started since the last look; returns how many tokens to claim, if the
    /// region is running low (under half a batch) and its fleet window is not known spent.
    pub(crate) fn spend(&mut self, started: u64, now: Instant) -> Option<u32> {
        let spent = started.saturating_sub(self.seen);
        self.seen = started;
        self.tokens = self.tokens.saturating_sub(i64::try_from(spent).unwrap_or(i64::MAX));
        if let Some(until) = self.spent_until {
            if now < until {
                return None;
            }
            self.spent_until = None;
        }
        let low = i64::from((self.batch / 2).max(1));
        if self.tokens >= low {
            return None;
        }
        let deficit = u32::try_from(self.tokens.min(0).unsigned_abs()).unwrap_or(u32::MAX);
        Some(self.batch.saturating_add(deficit))
    }

    /// The fleet granted `granted` of the `want` tokens asked, in `window`, which ends after
    /// `left`. Returns whether the window is now spent (the caller cools the region down).
    pub(crate) fn claimed(&mut self, want: u32, granted: i64, window: i64, left: Duration, now: Instant) -> bool {
        if self.window != Some(window) {
            // Tokens left from an earlier window are not this window's to spend.
            self.window = Some(window);
            self.tokens = self.tokens.min(0);
        }
        if granted < i64::from(want) {
            // Spent fleet-wide: forfeit what is left here, for the rest of the window.
            self.tokens = 0;
            self.spent_until = Some(now + left);
            return true;
        }
        self.tokens = self.tokens.saturating_add(granted);
        false
    }

    #[cfg(test)]
    fn tokens(&self) -> i64 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_window_within_bounds() {
        assert_eq!(tick(Duration::from_secs(60)), Duration::from_millis(100));
        assert_eq!(tick(Duration::from_secs(10)), Duration::from_millis(50));
        assert_eq!(tick(Duration::from_millis(100)), Duration::from_millis(5));
    }

    #[test]
    fn budget_rounds_report_new_calls_and_return_unspent_grants() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.2, t0);
        let mut round = BudgetRound::default();
        for _ in 0..7 {
            budget.deposit(t0);
        }
        let ask = round.ask(&budget, budget.calls());
        assert_eq!(ask, BudgetAsk { calls: 7, returned: 0, bucket_ms: 1000 });
        round.answered(7, 42, 4);
        budget.grant_shared(4 - ask.returned, t0 + Duration::from_secs(1));
        assert!(budget.try_withdraw(t0));
        budget.deposit(t0);
        let ask = round.ask(&budget, budget.calls());
        assert_eq!((ask.calls, ask.returned), (1, 3), "one new call; three retries unspent");
        // One more retry is spent while the round is in flight; the new grant of 2 nets out.
        assert!(budget.try_withdraw(t0));
        round.answered(8, 43, 2);
        budget.grant_shared(2 - ask.returned, t0 + Duration::from_secs(1));
        assert_eq!(budget.shared_allowance(), 1, "2 granted, less the one spent meanwhile");
        assert_eq!(round.bucket, 43);
        round.answered(8, 44, 0);
        assert_eq!(round.bucket, 43, "a round that claimed nothing keeps the bucket to return to");
    }

    #[test]
    fn tokens_are_claimed_in_batches_before_they_run_out() {
        let t0 = Instant::now();
        let node = NodeId::from_index(0);
        let mut s = LimitState::new(node, 100, 10, 50);
        // Nothing claimed yet: claim a batch.
        assert_eq!(s.spend(50, t0), Some(10));
        assert!(!s.claimed(10, 10, 7, Duration::from_secs(30), t0));
        assert_eq!(s.spend(54, t0), None, "6 left, above half a batch");
        assert_eq!(s.spend(56, t0), Some(10), "4 left: claim the next batch before running out");
        assert!(!s.claimed(10, 10, 7, Duration::from_secs(30), t0));
        assert_eq!(s.tokens(), 14);
        // A burst beyond the tokens is charged with the next claim.
        assert_eq!(s.spend(76, t0), Some(16), "a batch plus the 6 spent beyond the claims");
        assert!(!s.claimed(16, 16, 7, Duration::from_secs(30), t0));
        assert_eq!(s.tokens(), 10);
    }

    #[test]
    fn a_spent_window_cools_the_region_until_it_ends() {
        let t0 = Instant::now();
        let mut s = LimitState::new(NodeId::from_index(1), 20, 10, 0);
        assert_eq!(s.spend(0, t0), Some(10));
        assert!(s.claimed(10, 3, 5, Duration::from_secs(2), t0), "3 of 10: the fleet's window is spent");
        assert_eq!(s.tokens(), 0, "what was granted is forfeited");
        assert_eq!(s.spend(1, t0 + Duration::from_secs(1)), None, "no claims until the window ends");
        // The next window: the call started meanwhile is charged with the first claim.
        assert_eq!(s.spend(1, t0 + Duration::from_secs(2)), Some(11));
        assert!(!s.claimed(11, 11, 6, Duration::from_secs(1), t0 + Duration::from_secs(2)));
        assert_eq!(s.tokens(), 10);
    }

    #[test]
    fn leftovers_of_an_earlier_window_are_dropped() {
        let t0 = Instant::now();
        let mut s = LimitState::new(NodeId::from_index(0), 100, 4, 0);
        assert_eq!(s.spend(0, t0), Some(4));
        assert!(!s.claimed(4, 4, 1, Duration::from_secs(1), t0));
        assert_eq!(s.spend(3, t0), Some(4), "1 left, under half a batch");
        assert!(!s.claimed(4, 4, 2, Duration::from_secs(1), t0));
        assert_eq!(s.tokens(), 4, "the 1 left from window 1 is not carried into window 2");
    }
}
