//! The confidence term C (the reference's `ohem_conf_loss`): cross-entropy over the positives and
//! the hardest negatives, three per positive, mined per image (OHEM).
//!
//! The mining is a selection, not differentiable, and runs on host values. It ranks negatives by
//! the reference's `log_sum_exp`, which subtracts one max over the *whole batch* rather than per
//! row; the same formula keeps near ties at the cut in the same order.

use candle_core::{bail, DType, Result, Tensor, D};

use super::matching::NEUTRAL;

/// The ranking value of every prior row of `logits` ((rows, classes), row-major):
/// `ln(sum_k exp(x_k - m)) + m - x_0` with m the max of all entries, i.e. the background
/// cross-entropy.
pub fn rank_values(logits: &[f32], classes: usize) -> Result<Vec<f32>> {
    if classes == 0 || logits.len() % classes != 0 {
        bail!(
            "{} logits do not form rows of {classes} classes",
            logits.len()
        );
    }
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    Ok(logits
        .chunks_exact(classes)
        .map(|row| {
            let s: f32 = row.iter().map(|&x| (x - m).exp()).sum();
            s.ln() + m - row[0]
        })
        .collect())
}

/// Per image the hard negatives: of the priors that are neither positive nor neutral, the
/// `min(ratio * positives, P - 1)` with the highest ranking value (`rank` and `conf` of one
/// image, `P` entries each). Returns a mask over the priors.
///
/// Ties are broken by the lower index (a stable sort); PyTorch's unstable sort may order them
/// differently, which for true ties changes no loss value, only which prior gets the gradient.
pub fn hard_negatives(rank: &[f32], conf: &[i64], ratio: usize) -> Result<Vec<bool>> {
    let p = rank.len();
    if conf.len() != p {
        bail!("{p} ranking values for {} class targets", conf.len());
    }
    let num_pos = conf.iter().filter(|&&c| c > 0).count();
    let num_neg = (ratio * num_pos).min(p.saturating_sub(1));
    // Positives and neutrals rank as 0, as in the reference (they sink, and are removed again).
    let val: Vec<f32> = rank
        .iter()
        .zip(conf)
        .map(|(&v, &c)| if c != 0 { 0.0 } else { v })
        .collect();
    let mut order: Vec<usize> = (0..p).collect();
    // Descending; NaN (a broken row) ranks first, like PyTorch's sort puts NaN as the largest.
    order.sort_by(|&a, &b| {
        let (x, y) = (val[a], val[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ => y.total_cmp(&x),
        }
    });
    let mut neg = vec![false; p];
    for &j in order.iter().take(num_neg) {
        neg[j] = conf[j] == 0;
    }
    Ok(neg)
}

/// log-softmax over the last dim with the max detached: its gradient cancels exactly in the
/// formula, so detaching keeps candle from routing a rounding residue through the max.
fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let d = x.broadcast_sub(&max)?;
    let lse = d.exp()?.sum_keepdim(D::Minus1)?.log()?;
    d.broadcast_sub(&lse)
}

/// Sum over `rows` of the cross-entropy of `logits` (N, classes) rows against `targets`
/// (class indices, one per row).
pub fn cross_entropy_sum(logits: &Tensor, rows: &[u32], targets: &[u32]) -> Result<Tensor> {
    if rows.len() != targets.len() {
        bail!("{} rows but {} targets", rows.len(), targets.len());
    }
    let dev = logits.device();
    if rows.is_empty() {
        return Tensor::zeros((), DType::F32, dev);
    }
    let idx = Tensor::from_slice(rows, rows.len(), dev)?;
    let sel = logits.index_select(&idx, 0)?;
    let t = Tensor::from_slice(targets, (targets.len(), 1), dev)?;
    log_softmax(&sel)?.gather(&t, 1)?.sum_all()?.neg()
}

/// Rows (flattened `image * P + prior`) and class targets of the C term: positives and hard
/// negatives of every image, in ascending row order (the reference's boolean-mask order).
pub fn selected_rows(
    logits: &[f32],
    classes: usize,
    confs: &[Vec<i64>],
    ratio: usize,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let rank = rank_values(logits, classes)?;
    let p = confs.first().map_or(0, Vec::len);
    if rank.len() != p * confs.len() {
        bail!(
            "{} prior rows for {} images of {p} priors",
            rank.len(),
            confs.len()
        );
    }
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (b, conf) in confs.iter().enumerate() {
        let neg = hard_negatives(&rank[b * p..(b + 1) * p], conf, ratio)?;
        for j in 0..p {
            if conf[j] > 0 || neg[j] {
                let row = u32::try_from(b * p + j)
                    .map_err(|_| candle_core::Error::Msg("too many prior rows".into()))?;
                rows.push(row);
                // Positives carry label + 1, negatives 0; neutrals never get here.
                debug_assert!(conf[j] != NEUTRAL);
                targets.push(conf[j].max(0) as u32);
            }
        }
    }
    Ok((rows, targets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn three_negatives_per_positive_hardest_first_neutrals_and_positives_excluded() {
        // 10 priors, 2 positives, 1 neutral: 6 negatives wanted out of 7 background priors.
        let conf = [0, 3, 0, NEUTRAL, 0, 0, 1, 0, 0, 0];
        let rank = [0.5, 9.0, 0.1, 9.0, 0.7, 0.2, 9.0, 0.3, 0.6, 0.4];
        let neg = hard_negatives(&rank, &conf, 3).unwrap();
        let got: Vec<usize> = (0..10).filter(|&j| neg[j]).collect();
        // The background priors by value: 4 (0.7), 8, 0, 9, 7, 5 (0.2); 2 (0.1) is left out.
        assert_eq!(got, vec![0, 4, 5, 7, 8, 9]);
        // More wanted than there are negatives: all 7, never the positives or the neutral.
        let neg = hard_negatives(&rank, &conf, 10).unwrap();
        assert_eq!(neg.iter().filter(|&&n| n).count(), 7);
        assert!(!neg[1] && !neg[3] && !neg[6]);
    }

    #[test]
    fn ranking_uses_one_global_max() {
        // Row 1's own max is 1, the global max 200: exp(1 - 200) underflows to 0 in f32, so the
        // global-max form gives ln(0) + 200 - 1 = -inf for it (a per-row form would give ~0.47).
        let logits = [200.0, 0.0, 1.0, 0.5];
        let r = rank_values(&logits, 2).unwrap();
        assert_eq!(r[0], 0.0);
        assert_eq!(r[1], f32::NEG_INFINITY);
    }

    #[test]
    fn cross_entropy_value_and_gradient_are_softmax_minus_onehot() {
        let x = Var::from_vec(vec![1f32, 2.0, 3.0, 0.0, 0.0, 0.0], (2, 3), &Device::Cpu).unwrap();
        let l = cross_entropy_sum(x.as_tensor(), &[0, 1], &[2, 0]).unwrap();
        let lse0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        let want = (lse0 - 3.0) + 3f32.ln();
        assert!((l.to_scalar::<f32>().unwrap() - want).abs() < 1e-6);
        let g = l.backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let s2 = 3f32.exp() / lse0.exp();
        assert!((g[0][2] - (s2 - 1.0)).abs() < 1e-6);
        assert!((g[1][0] - (1.0 / 3.0 - 1.0)).abs() < 1e-6 && (g[1][1] - 1.0 / 3.0).abs() < 1e-6);
    }
}
