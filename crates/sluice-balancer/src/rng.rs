//! Turning a view's entropy into the few random numbers one pick needs.

/// SplitMix64 (Steele, Lea and Flood), seeded with a view's entropy.
///
/// Each output is a full-avalanche mix of a counter, so consecutive draws are independent
/// even when callers pass sequential entropy values.
#[derive(Debug, Clone)]
pub(crate) struct PickRng(u64);

impl PickRng {
    #[inline]
    pub(crate) fn new(entropy: u64) -> Self {
        Self(entropy)
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` by Lemire's multiply-shift; `n` must be > 0.
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)` with 53 bits.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Two distinct indices in `0..n` (n ≥ 2), uniformly over unordered pairs.
    #[inline]
    pub(crate) fn distinct_pair(&mut self, n: usize) -> (usize, usize) {
        let a = self.below(n);
        let mut b = self.below(n - 1);
        if b >= a {
            b += 1;
        }
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = PickRng::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            seen[rng.below(5)] += 1;
        }
        assert!(seen.iter().all(|&c| (1800..2200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn pairs_are_distinct() {
        let mut rng = PickRng::new(1);
        for n in 2..20 {
            for _ in 0..1000 {
                let (a, b) = rng.distinct_pair(n);
                assert!(a < n && b < n && a != b);
            }
        }
    }

    #[test]
    fn unit_is_in_range() {
        let mut rng = PickRng::new(3);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
