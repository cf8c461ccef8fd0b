//! Prior matching (the reference's `match`): which prior learns which ground-truth box, and which
//! are background or neutral.
//!
//! Everything is f32 in the reference's operation order: tiny boxes often have
//! mathematically equal IoUs with several anchors, and the rounding of this exact order decides the
//! forced prior. Ties go to the lowest index, as PyTorch's `max(dim)` does on the CPU.

use candle_core::{bail, Result};

use super::encode::encode;

/// A prior's class target: `NEUTRAL` is ignored by the class loss, `BACKGROUND` is a negative,
/// `c + 1` is a positive of class index `c`.
pub const NEUTRAL: i64 = -1;
pub const BACKGROUND: i64 = 0;

/// The thresholds of one match.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub pos: f32,
    pub neg: f32,
    pub crowd: f32,
}

/// One image's match over all priors.
#[derive(Debug, Clone)]
pub struct Matched {
    /// Per prior: [`NEUTRAL`], [`BACKGROUND`] or label + 1.
    pub conf: Vec<i64>,
    /// Per prior: the index of its (best or forced) ground-truth box among the non-crowd boxes.
    pub gt: Vec<usize>,
    /// Per prior: its box target, encoded against the prior ([`encode`]); used for positives.
    pub loc: Vec<[f32; 4]>,
}

impl Matched {
    /// Indices of the positive priors, ascending (the reference's boolean-mask order).
    pub fn positives(&self) -> Vec<usize> {
        (0..self.conf.len()).filter(|&j| self.conf[j] > 0).collect()
    }
}

/// (cx, cy, w, h) -> (x1, y1, x2, y2) as `cx - w/2`, `cx + w/2`, not clipped.
pub fn point_form(p: [f32; 4]) -> [f32; 4] {
    [
        p[0] - p[2] / 2.0,
        p[1] - p[3] / 2.0,
        p[0] + p[2] / 2.0,
        p[1] + p[3] / 2.0,
    ]
}

fn area(b: [f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

fn intersection(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    w * h
}

/// IoU of a ground-truth box with a prior (both point form): inter / ((area_gt + area_prior) -
/// inter).
pub fn iou(gt: [f32; 4], prior: [f32; 4]) -> f32 {
    let inter = intersection(gt, prior);
    inter / (area(gt) + area(prior) - inter)
}

/// Intersection over the *prior's* area (the crowd test).
pub fn ioa(prior: [f32; 4], crowd: [f32; 4]) -> f32 {
    intersection(prior, crowd) / area(prior)
}

/// Matches the priors (cx, cy, w, h) of one image against its non-crowd boxes `truths`
/// (x1, y1, x2, y2, relative) with labels 0.., and its crowd boxes.
///
/// An image without a non-crowd box is an error: the reference's `match` raises `IndexError` on
/// it; a trainer should skip or resample such an image.
pub fn match_priors(
    truths: &[[f32; 4]],
    labels: &[i64],
    crowds: &[[f32; 4]],
    priors: &[[f32; 4]],
    th: Thresholds,
) -> Result<Matched> {
    if truths.is_empty() {
        bail!(
            "an image with no non-crowd ground truth ({} crowd boxes) cannot be matched \
             (the reference raises IndexError in match); skip or resample it",
            crowds.len()
        );
    }
    if labels.len() != truths.len() {
        bail!("{} boxes but {} labels", truths.len(), labels.len());
    }
    if let Some(&l) = labels.iter().find(|&&l| l < 0) {
        bail!("non-crowd label {l}: crowd rows must come last and be counted as crowds");
    }
    let n = priors.len();
    if n == 0 {
        bail!("no priors to match");
    }
    let pf: Vec<[f32; 4]> = priors.iter().map(|&p| point_form(p)).collect();
    let g = truths.len();
    // overlaps[gi * n + j]
    let mut overlaps = Vec::with_capacity(g * n);
    for &t in truths {
        overlaps.extend(pf.iter().map(|&p| iou(t, p)));
    }
    let mut best_ov = vec![f32::NEG_INFINITY; n];
    let mut best_gt = vec![0usize; n];
    for gi in 0..g {
        let row = &overlaps[gi * n..(gi + 1) * n];
        for j in 0..n {
            // Strictly greater: the first (lowest) ground truth wins ties. The first row always
            // wins against -inf, also for a NaN-free row of zeros.
            if gi == 0 || row[j] > best_ov[j] {
                best_ov[j] = row[j];
                best_gt[j] = gi;
            }
        }
    }
    // Force each ground truth to own its best prior, best remaining overlap first.
    for _ in 0..g {
        let mut pick: Option<(usize, usize, f32)> = None; // (gt, prior, overlap)
        for gi in 0..g {
            let row = &overlaps[gi * n..(gi + 1) * n];
            let (mut bj, mut bv) = (0usize, row[0]);
            for (j, &v) in row.iter().enumerate().skip(1) {
                if v > bv {
                    bj = j;
                    bv = v;
                }
            }
            if pick.is_none_or(|(_, _, pv)| bv > pv) {
                pick = Some((gi, bj, bv));
            }
        }
        let Some((gi, j, _)) = pick else { break };
        for gk in 0..g {
            overlaps[gk * n + j] = -1.0;
        }
        overlaps[gi * n..(gi + 1) * n].fill(-1.0);
        best_ov[j] = 2.0;
        best_gt[j] = gi;
    }
    let mut conf: Vec<i64> = best_gt.iter().map(|&gi| labels[gi] + 1).collect();
    for j in 0..n {
        if best_ov[j] < th.pos {
            conf[j] = NEUTRAL;
        }
        if best_ov[j] < th.neg {
            conf[j] = BACKGROUND;
        }
    }
    if !crowds.is_empty() && th.crowd < 1.0 {
        for j in 0..n {
            if conf[j] > 0 {
                continue;
            }
            // max over crowds, then a strict test; NaN never passes.
            let best = crowds
                .iter()
                .map(|&c| ioa(pf[j], c))
                .fold(f32::NEG_INFINITY, f32::max);
            if best > th.crowd {
                conf[j] = NEUTRAL;
            }
        }
    }
    let loc = (0..n)
        .map(|j| encode(truths[best_gt[j]], priors[j]))
        .collect();
    Ok(Matched {
        conf,
        gt: best_gt,
        loc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds {
        pos: 0.5,
        neg: 0.4,
        crowd: 0.7,
    };

    /// A prior (cx, cy, w, h) from its point form (exact for the dyadic values used here).
    fn prior(b: [f32; 4]) -> [f32; 4] {
        [
            (b[0] + b[2]) / 2.0,
            (b[1] + b[3]) / 2.0,
            b[2] - b[0],
            b[3] - b[1],
        ]
    }

    #[test]
    fn iou_thresholds_exactly_half_is_positive_exactly_point_four_is_neutral() {
        // GT [0, 0, 0.5, 0.5] (area 1/4). Prior A [0, 0, 0.5, 0.25]: IoU 1/2 exactly. Prior B
        // [0, 0, 0.5, 0.2]: inter 0.1, union 0.25 -> IoU 0.4 (as f32 arithmetic gives it).
        let gt = [0.0, 0.0, 0.5, 0.5];
        let a = [0.0, 0.0, 0.5, 0.25];
        let b = [0.0, 0.0, 0.5, 0.2];
        let far = [0.75, 0.75, 1.0, 1.0];
        // An exact-fit prior takes the forced match, so A and B keep their own IoUs.
        let priors = [prior(gt), prior(a), prior(b), prior(far)];
        let iou_b = iou(gt, point_form(priors[2]));
        assert_eq!(iou(gt, point_form(priors[1])), 0.5);
        let m = match_priors(&[gt], &[6], &[], &priors, Thresholds { neg: iou_b, ..TH }).unwrap();
        assert_eq!(m.conf, vec![7, 7, NEUTRAL, BACKGROUND]);
    }

    #[test]
    fn forced_prior_below_the_negative_threshold_stays_positive() {
        // A tiny box whose best prior has IoU 1/16 < 0.4.
        let gt = [0.0, 0.0, 0.125, 0.125];
        let priors = [prior([0.0, 0.0, 0.5, 0.5]), prior([0.5, 0.5, 1.0, 1.0])];
        let m = match_priors(&[gt], &[2], &[], &priors, TH).unwrap();
        assert_eq!(m.conf, vec![3, BACKGROUND]);
        assert_eq!(m.gt, vec![0, 0]);
    }

    #[test]
    fn ties_go_to_the_lowest_index() {
        // Two identical priors: the forced step picks prior 0 (both have IoU 1/4 < 0.4).
        let gt = [0.0, 0.0, 0.25, 0.25];
        let p = prior([0.0, 0.0, 0.5, 0.5]);
        let m = match_priors(&[gt], &[0], &[], &[p, p], TH).unwrap();
        assert_eq!(m.conf, vec![1, BACKGROUND]);
        // Two identical ground truths: every prior's best is the first; the forcing loop gives
        // the first GT prior 0 (its best), then the second GT its best remaining, prior 1.
        let m = match_priors(&[gt, gt], &[4, 9], &[], &[p, p, p], TH).unwrap();
        assert_eq!(m.gt, vec![0, 1, 0]);
        assert_eq!(m.conf, vec![5, 10, BACKGROUND]);
    }

    #[test]
    fn crowd_ioa_is_strict_and_never_touches_positives() {
        let gt = [0.0, 0.0, 0.25, 0.25];
        // Prior 1 lies 70 % inside the crowd: exactly 0.7 in f32 stays background.
        let crowd = [0.5, 0.0, 1.0, 1.0];
        let p_at = |x1: f32| prior([x1, 0.0, x1 + 0.25, 0.25]);
        let x_exact = 0.5 - 0.075; // inside fraction (x1 + 0.25 - 0.5) / 0.25
        let priors = [prior(gt), p_at(x_exact), p_at(0.45), p_at(0.0)];
        let f = ioa(point_form(priors[1]), crowd);
        let m = match_priors(
            &[gt],
            &[0],
            &[crowd],
            &priors,
            Thresholds { crowd: f, ..TH },
        )
        .unwrap();
        // IoA of prior 1 equals the threshold (not above): background; prior 2 (80 %) is above:
        // neutral; prior 0 is the positive and prior 3 (IoU 1 with the GT too) stays positive.
        assert!(ioa(point_form(priors[2]), crowd) > f);
        assert_eq!(m.conf, vec![1, BACKGROUND, NEUTRAL, 1]);
        // A crowd covering the positive leaves it positive.
        let m = match_priors(&[gt], &[0], &[[0.0, 0.0, 1.0, 1.0]], &priors, TH).unwrap();
        assert_eq!(m.conf, vec![1, NEUTRAL, NEUTRAL, 1]);
    }

    #[test]
    fn crowd_only_image_is_a_clear_error() {
        let priors = [prior([0.0, 0.0, 0.5, 0.5])];
        let err = match_priors(&[], &[], &[[0.0, 0.0, 1.0, 1.0]], &priors, TH).unwrap_err();
        assert!(err.to_string().contains("no non-crowd"), "{err}");
    }
}
