//! Selection mechanisms shared by the strategies: weighted sampling, arg-min with random
//! tie-breaking, and power-of-two-choices.

use sluice_region_model::{Node, NodeId};

use crate::{PickView, rng::PickRng};

/// Weight × slow-start factor, as `f64`, at `now_ns` (nanoseconds since the epoch). Zero for
/// zero-weight nodes.
#[inline]
pub(crate) fn effective_weight(node: &Node, now_ns: u64) -> f64 {
    f64::from(node.weight()) * node.metrics().weight_factor_at(now_ns)
}

/// Views up to this size are sampled in two passes with the weights kept on the stack; larger
/// ones in one streaming pass with a random draw per node.
const STACK_WEIGHTS: usize = 512;

/// Samples one candidate with probability proportional to `weight(id)`, in one pass.
///
/// Non-finite and negative weights count as zero. When every weight is zero the choice is
/// uniform, so a non-empty view always yields a node.
#[inline]
pub(crate) fn weighted_random(
    view: &PickView<'_>,
    rng: &mut PickRng,
    mut weight: impl FnMut(NodeId) -> f64,
) -> Option<NodeId> {
    let candidates = view.candidates();
    if candidates.len() <= STACK_WEIGHTS {
        let mut weights = [0.0f64; STACK_WEIGHTS];
        let mut total = 0.0;
        for (slot, &id) in weights.iter_mut().zip(candidates) {
            let w = weight(id);
            let w = if w.is_finite() && w > 0.0 { w } else { 0.0 };
            *slot = w;
            total += w;
        }
        if !(total > 0.0 && total.is_finite()) {
            return uniform(view, rng);
        }
        let mut x = rng.unit() * total;
        let mut last = None;
        for (&w, &id) in weights.iter().zip(candidates) {
            if w > 0.0 {
                if x < w {
                    return Some(id);
                }
                x -= w;
                last = Some(id);
            }
        }
        // Rounding left x just above the sum: the last weighted node takes it.
        return last;
    }
    let mut total = 0.0;
    let mut chosen = None;
    for &id in candidates {
        let w = weight(id);
        if !(w.is_finite() && w > 0.0) {
            continue;
        }
        total += w;
        // Keep the running choice with probability 1 - w/total (streaming weighted sampling).
        if rng.unit() * total < w {
            chosen = Some(id);
        }
    }
    chosen.or_else(|| uniform(view, rng))
}

/// A uniformly random candidate.
#[inline]
pub(crate) fn uniform(view: &PickView<'_>, rng: &mut PickRng) -> Option<NodeId> {
    let candidates = view.candidates();
    if candidates.is_empty() { None } else { Some(candidates[rng.below(candidates.len())]) }
}

/// The candidate with the lowest `cost`, ties broken uniformly at random.
///
/// NaN costs count as +∞; if every cost is +∞ the choice is uniform among all.
#[inline]
pub(crate) fn argmin(view: &PickView<'_>, rng: &mut PickRng, mut cost: impl FnMut(NodeId) -> f64) -> Option<NodeId> {
    let mut best = None;
    let mut best_cost = f64::INFINITY;
    let mut ties = 0u32;
    for &id in view.candidates() {
        let c = sanitize(cost(id));
        if best.is_none() || c < best_cost {
            best = Some(id);
            best_cost = c;
            ties = 1;
        } else if c == best_cost {
            // Reservoir sampling over the tied set.
            ties += 1;
            if rng.below(ties as usize) == 0 {
                best = Some(id);
            }
        }
    }
    best
}

/// Power of two choices: the cheaper of two distinct random candidates (ties at random).
#[inline]
pub(crate) fn p2c(view: &PickView<'_>, rng: &mut PickRng, mut cost: impl FnMut(NodeId) -> f64) -> Option<NodeId> {
    let candidates = view.candidates();
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let (a, b) = rng.distinct_pair(n);
            let (a, b) = (candidates[a], candidates[b]);
            let (ca, cb) = (sanitize(cost(a)), sanitize(cost(b)));
            Some(if ca < cb {
                a
            } else if cb < ca {
                b
            } else if rng.next_u64() & 1 == 0 {
                a
            } else {
                b
            })
        }
    }
}

#[inline]
fn sanitize(c: f64) -> f64 {
    if c.is_nan() { f64::INFINITY } else { c }
}
