//! The rise/fall state machine of active health checking.

use sluice_region_model::HealthState;

/// Turns a stream of probe results into health verdicts, with hysteresis.
///
/// Pingora's `observe_health` rule: a result that disagrees with the current state increments
/// a counter, and the state flips when the counter reaches its threshold; a result that agrees
/// with the current state resets the counter.
///
/// * `Unknown` (the start state) becomes `Healthy` on the first success, as Envoy does at
///   startup, and `Unhealthy` after `fall` consecutive failures.
/// * `Healthy` becomes `Unhealthy` after `fall` consecutive failures.
/// * `Unhealthy` becomes `Healthy` after `rise` consecutive successes.
#[derive(Debug, Clone)]
pub(crate) struct Hysteresis {
    rise: u32,
    fall: u32,
    state: HealthState,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

// ===== impl Hysteresis =====

impl Hysteresis {
    /// A fresh machine in `Unknown`. `rise` and `fall` of 0 count as 1.
    pub(crate) fn new(rise: u32, fall: u32) -> Self {
        Self { rise: rise.max(1), fall: fall.max(1), state: HealthState::Unknown, streak: 0 }
    }

    /// Starts from `state` instead of `Unknown` (a node whose metrics carried a verdict over).
    pub(crate) fn starting_at(mut self, state: HealthState) -> Self {
        self.state = state;
        self
    }

    /// The current verdict.
    pub(crate) fn state(&self) -> HealthState {
        self.state
    }

    /// Feeds one probe result; returns the new state if it changed.
    pub(crate) fn observe(&mut self, success: bool) -> Option<HealthState> {
        let (threshold, target) = match (self.state, success) {
            (HealthState::Healthy, true) | (HealthState::Unhealthy, false) => {
                self.streak = 0;
                return None;
            }
            (HealthState::Unhealthy, true) => (self.rise, HealthState::Healthy),
            (_, false) => (self.fall, HealthState::Unhealthy),
            // Unknown, and any state added later: one success is enough.
            (_, true) => (1, HealthState::Healthy),
        };
        self.streak += 1;
        if self.streak < threshold {
            return None;
        }
        self.streak = 0;
        self.state = target;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Runs `results` and returns the state after each one, as letters: `?` unknown,
    /// `H` healthy, `U` unhealthy.
    fn run(rise: u32, fall: u32, results: &str) -> String {
        let mut h = Hysteresis::new(rise, fall);
        results
            .chars()
            .map(|c| {
                h.observe(c == '+');
                match h.state() {
                    HealthState::Healthy => 'H',
                    HealthState::Unhealthy => 'U',
                    _ => '?',
                }
            })
            .collect()
    }

    #[test]
    fn thresholds_are_exact() {
        let check = |rise, fall, results: &str, expect: &str| assert_eq!(run(rise, fall, results), expect, "{results}");
        check(2, 2, "+", "H");
        check(2, 2, "-", "?");
        check(2, 2, "--", "?U");
        check(2, 2, "-+", "?H");
        check(2, 2, "+-+--", "HHHHU");
        check(2, 3, "+---", "HHHU");
        check(2, 3, "+--+---", "HHHHHHU");
        check(2, 2, "--++", "?UUH");
        check(3, 1, "-+-+++", "UUUUUH");
        check(1, 1, "-+-+", "UHUH");
    }

    /// The reference rule: a flip happens exactly when the run of results disagreeing with
    /// the state since the last flip reaches its threshold.
    fn expected_flip(state: HealthState, run: u32, success: bool, rise: u32, fall: u32) -> bool {
        match (state, success) {
            (HealthState::Unknown, true) => true,
            (HealthState::Unhealthy, true) => run >= rise,
            (HealthState::Healthy | HealthState::Unknown, false) => run >= fall,
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn hysteresis_never_flips_before_its_threshold(
            rise in 1u32..6,
            fall in 1u32..6,
            results in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let mut h = Hysteresis::new(rise, fall);
            // Length of the trailing run of identical results since the last flip.
            let mut run = 0u32;
            let mut last: Option<bool> = None;
            for success in results {
                run = if last == Some(success) { run + 1 } else { 1 };
                last = Some(success);
                let before = h.state();
                let flipped = h.observe(success);
                let expect = expected_flip(before, run, success, rise, fall);
                prop_assert_eq!(flipped.is_some(), expect, "state {:?} run {} success {}", before, run, success);
                if let Some(new) = flipped {
                    prop_assert_eq!(new, if success { HealthState::Healthy } else { HealthState::Unhealthy });
                    // A flip starts a new count.
                    run = 0;
                    last = None;
                }
            }
        }
    }
}
