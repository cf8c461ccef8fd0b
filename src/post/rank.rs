//! The score orderings every suppression shares: a stable descending order that is total over
//! NaN and -0, its top-k prefix, and the class merge with its global cap.

use std::cmp::Ordering;

use crate::post::types::Kept;

/// Sort key that is total and treats NaN as the lowest score and -0 as +0.
fn key(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x + 0.0
    }
}

/// Descending by score, ascending by position on ties: what a stable descending sort gives.
fn desc(scores: &[f32], a: usize, b: usize) -> Ordering {
    key(scores[b])
        .total_cmp(&key(scores[a]))
        .then_with(|| a.cmp(&b))
}

/// Indices of `scores` in stable descending order.
pub fn stable_desc_order(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| desc(scores, a, b));
    idx
}

/// The first `k` indices of [`stable_desc_order`] without sorting the tail.
pub fn stable_desc_top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, |&a, &b| desc(scores, a, b));
    }
    idx.truncate(k);
    idx.sort_unstable_by(|&a, &b| desc(scores, a, b));
    idx
}

/// Flattens per-class keep lists class-major, sorts them stably by score descending and keeps the
/// first `max_det` (docs/model.md §6.3 step 7).
pub fn merge_top(per_class: Vec<Vec<Kept>>, max_det: usize) -> Vec<Kept> {
    let flat: Vec<Kept> = per_class.into_iter().flatten().collect();
    let scores: Vec<f32> = flat.iter().map(|k| k.score).collect();
    stable_desc_top_k(&scores, max_det.min(flat.len()))
        .into_iter()
        .map(|i| flat[i])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_the_prefix_of_the_full_stable_order() {
        let mut x = 12345u64;
        for len in [0usize, 1, 2, 7, 50, 300] {
            let s: Vec<f32> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    match x >> 61 {
                        0 => f32::NAN,
                        1 => -0.0,
                        2 => 0.0,
                        v => (v as f32) / 8.0, // few distinct values: many ties
                    }
                })
                .collect();
            let full = stable_desc_order(&s);
            // Independent check of the full order: descending, NaN last, ties by index.
            for w in full.windows(2) {
                let (a, b) = (key(s[w[0]]), key(s[w[1]]));
                assert!(a > b || (a == b && w[0] < w[1]), "{s:?}");
            }
            for k in [0, 1, 3, len / 2, len, len + 5] {
                assert_eq!(stable_desc_top_k(&s, k), full[..k.min(len)].to_vec());
            }
        }
    }
}
