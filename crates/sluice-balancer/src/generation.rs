//! A strategy's precomputed table per snapshot membership, shared by the strategies that
//! keep one.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

/// A table built for one snapshot generation.
pub(crate) trait Generational {
    /// The generation of the snapshot it was built for.
    fn generation(&self) -> u64;
}

/// The table of the first snapshot a strategy meets (set once, so picks on it never
/// allocate) and of the newest later one (after a membership change, swapped in once).
/// Calls still running on an older snapshot than the newest seen get no table.
pub(crate) struct GenerationTable<T> {
    first: OnceLock<T>,
    later: ArcSwap<T>,
}

impl<T: Generational> GenerationTable<T> {
    /// Empty; `placeholder` (generation 0) stands for "no later table yet".
    pub(crate) fn new(placeholder: T) -> Self {
        Self { first: OnceLock::new(), later: ArcSwap::from_pointee(placeholder) }
    }

    /// Runs `f` on the table of `generation`, building it with `build` when it is the newest
    /// generation seen and has none yet; `None` for an older generation.
    pub(crate) fn with<R>(&self, generation: u64, build: impl Fn() -> T, f: impl FnOnce(&T) -> R) -> Option<R> {
        let first = self.first.get_or_init(&build);
        if first.generation() == generation {
            return Some(f(first));
        }
        let later = self.later.load();
        if later.generation() == generation {
            return Some(f(&later));
        }
        if later.generation() > generation || first.generation() > generation {
            return None;
        }
        drop(later);
        let fresh = Arc::new(build());
        self.later.store(Arc::clone(&fresh));
        Some(f(&fresh))
    }

    /// The generations of the first and the later table, for `Debug`.
    pub(crate) fn generations(&self) -> (Option<u64>, u64) {
        (self.first.get().map(T::generation), self.later.load().generation())
    }
}
