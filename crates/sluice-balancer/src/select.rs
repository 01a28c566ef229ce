//! Selection mechanisms shared by the strategies: weighted sampling, arg-min with random
//! tie-breaking, and power-of-two-choices.

use sluice_region_model::{Node, NodeId};

use crate::{PickView, rng::PickRng};

/// Weight × slow-start factor, as `f64`, at the view's time. Zero for zero-weight nodes.
#[inline]
pub(crate) fn effective_weight(node: &Node, view: &PickView<'_>) -> f64 {
    // Convert the time only for a ramping node.
    if node.metrics().in_slow_start() { effective_weight_ns(node, view.now_nanos()) } else { f64::from(node.weight()) }
}

/// [`effective_weight`] with the time already converted.
#[inline]
pub(crate) fn effective_weight_ns(node: &Node, now_ns: u64) -> f64 {
    let w = f64::from(node.weight());
    if node.metrics().in_slow_start() { w * node.metrics().weight_factor_at(now_ns) } else { w }
}

/// Weights are computed a chunk at a time into a stack buffer of this size.
const CHUNK: usize = 64;

/// Samples one candidate with probability proportional to `weight(id)`, exactly, in one pass.
///
/// Weights are computed a chunk of 64 at a time into a stack buffer. Across chunks it is
/// streaming weighted sampling: chunk `c`, with total `T_c` and running total `R`, replaces the
/// choice so far with probability `T_c / R`, and the replacement is drawn within the chunk in
/// proportion to its weights. One random draw per chunk, not per node.
///
/// Non-finite and negative weights count as zero. When every weight is zero the choice is
/// uniform, so a non-empty view always yields a node.
#[inline]
pub(crate) fn weighted_random(
    view: &PickView<'_>,
    rng: &mut PickRng,
    mut weight: impl FnMut(NodeId) -> f64,
) -> Option<NodeId> {
    let mut buf = [0.0f64; CHUNK];
    let mut running = 0.0;
    let mut chosen = None;
    for ids in view.candidates().chunks(CHUNK) {
        let mut total = 0.0;
        for (slot, &id) in buf.iter_mut().zip(ids) {
            let w = weight(id);
            let w = if w.is_finite() && w > 0.0 { w } else { 0.0 };
            *slot = w;
            total += w;
        }
        if total <= 0.0 {
            continue;
        }
        running += total;
        if chosen.is_some() && rng.unit() * running >= total {
            continue;
        }
        let mut x = rng.unit() * total;
        for (&w, &id) in buf.iter().zip(ids) {
            if w > 0.0 {
                chosen = Some(id);
                if x < w {
                    break;
                }
                x -= w;
            }
        }
    }
    if running.is_finite() && chosen.is_some() { chosen } else { uniform(view, rng) }
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
