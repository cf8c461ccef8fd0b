//! Per image and category: IoU matrix and the greedy matching of `COCOeval.evaluateImg`.

use super::mask::{bbox_iou, mask_iou, EvalRle};

/// What a ground truth or detection is compared by.
#[derive(Debug, Clone)]
pub enum Geometry {
    Box([f64; 4]),
    /// A mask with its `rleToBbox` box (used to skip pairs that cannot overlap).
    Mask(EvalRle, [f64; 4]),
}

#[derive(Debug, Clone)]
pub struct GtObj {
    pub id: i64,
    pub area: f64,
    pub crowd: bool,
    pub geom: Geometry,
}

#[derive(Debug, Clone)]
pub struct DtObj {
    pub id: i64,
    pub area: f64,
    pub score: f64,
    pub geom: Geometry,
}

/// One `evalImgs` entry. Matrices are threshold-major: index `t * n_dt + d`.
#[derive(Debug, Clone)]
pub struct EvalImg {
    pub dt_scores: Vec<f64>,
    /// Id of the matched ground truth, 0 when unmatched (an id of 0 therefore reads as
    /// unmatched, exactly as in the reference).
    pub dt_matches: Vec<i64>,
    pub dt_ignore: Vec<bool>,
    pub gt_ignore: Vec<bool>,
}

fn iou(d: &Geometry, g: &Geometry, crowd: bool) -> f64 {
    match (d, g) {
        (Geometry::Box(db), Geometry::Box(gb)) => bbox_iou(db, gb, crowd),
        (Geometry::Mask(dm, db), Geometry::Mask(gm, gb)) => mask_iou(dm, db, gm, gb, crowd),
        // Mixed kinds never occur: both sides are prepared for the same IoU type.
        _ => 0.0,
    }
}

/// Indices of `dts` by descending score; a stable sort, like `argsort(-s, kind='mergesort')`.
pub fn score_order(scores: impl Iterator<Item = f64>) -> Vec<usize> {
    let s: Vec<f64> = scores.collect();
    let mut idx: Vec<usize> = (0..s.len()).collect();
    // partial_cmp keeps -0.0 == 0.0 as numpy does; scores are checked finite on load.
    idx.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap_or(std::cmp::Ordering::Equal));
    idx
}

/// Evaluates one (image, category) pair for every area range. `None` where the pair has
/// neither ground truth nor detections, as the reference does.
pub fn evaluate_pair(
    gts: &[GtObj],
    dts: &[DtObj],
    area_rngs: &[(f64, f64)],
    iou_thrs: &[f64],
    max_det: usize,
) -> Vec<Option<EvalImg>> {
    if gts.is_empty() && dts.is_empty() {
        return vec![None; area_rngs.len()];
    }
    let mut order = score_order(dts.iter().map(|d| d.score));
    order.truncate(max_det);
    let dts: Vec<&DtObj> = order.iter().map(|&i| &dts[i]).collect();
    let (n_d, n_g) = (dts.len(), gts.len());
    // ious[d * n_g + g], ground truths in their original order.
    let mut ious = vec![0.0; n_d * n_g];
    for (d, dt) in dts.iter().enumerate() {
        for (g, gt) in gts.iter().enumerate() {
            ious[d * n_g + g] = iou(&dt.geom, &gt.geom, gt.crowd);
        }
    }
    area_rngs
        .iter()
        .map(|&rng| Some(match_area(gts, &dts, &ious, rng, iou_thrs)))
        .collect()
}

fn match_area(
    gts: &[GtObj],
    dts: &[&DtObj],
    ious: &[f64],
    (lo, hi): (f64, f64),
    iou_thrs: &[f64],
) -> EvalImg {
    let n_g = gts.len();
    let n_d = dts.len();
    let ignored: Vec<bool> = gts
        .iter()
        .map(|g| g.crowd || g.area < lo || g.area > hi)
        .collect();
    // Not-ignored ground truths first, original order otherwise (stable).
    let mut gt_order: Vec<usize> = (0..n_g).collect();
    gt_order.sort_by_key(|&g| ignored[g]);
    let gt_ignore: Vec<bool> = gt_order.iter().map(|&g| ignored[g]).collect();
    let t_n = iou_thrs.len();
    let mut gt_matched = vec![false; t_n * n_g];
    let mut dt_matches = vec![0i64; t_n * n_d];
    let mut dt_ignore = vec![false; t_n * n_d];
    for (t, &thr) in iou_thrs.iter().enumerate() {
        for d in 0..n_d {
            let mut best = thr.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for (gi, &g) in gt_order.iter().enumerate() {
                if gt_matched[t * n_g + gi] && !gts[g].crowd {
                    continue;
                }
                // Once a regular ground truth is matched, ignored ones cannot take over.
                if let Some(mm) = m {
                    if !gt_ignore[mm] && gt_ignore[gi] {
                        break;
                    }
                }
                let v = ious[d * n_g + g];
                if v < best {
                    continue;
                }
                best = v;
                m = Some(gi);
            }
            if let Some(mm) = m {
                dt_ignore[t * n_d + d] = gt_ignore[mm];
                dt_matches[t * n_d + d] = gts[gt_order[mm]].id;
                gt_matched[t * n_g + mm] = true;
            }
        }
    }
    for (d, dt) in dts.iter().enumerate() {
        let out_of_range = dt.area < lo || dt.area > hi;
        for t in 0..t_n {
            let i = t * n_d + d;
            dt_ignore[i] = dt_ignore[i] || (dt_matches[i] == 0 && out_of_range);
        }
    }
    EvalImg {
        dt_scores: dts.iter().map(|d| d.score).collect(),
        dt_matches,
        dt_ignore,
        gt_ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(id: i64, b: [f64; 4], crowd: bool) -> GtObj {
        GtObj {
            id,
            area: b[2] * b[3],
            crowd,
            geom: Geometry::Box(b),
        }
    }
    fn dt(id: i64, b: [f64; 4], score: f64) -> DtObj {
        DtObj {
            id,
            area: b[2] * b[3],
            score,
            geom: Geometry::Box(b),
        }
    }

    #[test]
    fn stable_descending_order() {
        assert_eq!(
            score_order([0.5, 0.9, 0.5, 0.9, 0.1].into_iter()),
            vec![1, 3, 0, 2, 4]
        );
    }

    #[test]
    fn duplicate_is_false_positive_and_crowd_absorbs() {
        let gts = [
            gt(1, [0.0, 0.0, 10.0, 10.0], false),
            gt(2, [50.0, 50.0, 20.0, 20.0], true),
        ];
        let dts = [
            dt(1, [0.0, 0.0, 10.0, 10.0], 0.9),
            dt(2, [0.0, 0.0, 10.0, 10.0], 0.8),
            dt(3, [55.0, 55.0, 5.0, 5.0], 0.7),
            dt(4, [56.0, 56.0, 5.0, 5.0], 0.6),
        ];
        let r = evaluate_pair(&gts, &dts, &[(0.0, 1e10)], &[0.5], 100);
        let e = r[0].as_ref().unwrap();
        assert_eq!(e.dt_matches, vec![1, 0, 2, 2]);
        assert_eq!(e.dt_ignore, vec![false, false, true, true]);
        assert_eq!(e.gt_ignore, vec![false, true]);
    }

    #[test]
    fn empty_pair_is_none_and_max_det_cuts_lowest() {
        assert!(evaluate_pair(&[], &[], &[(0.0, 1e10)], &[0.5], 100)[0].is_none());
        let dts: Vec<DtObj> = (0..5)
            .map(|i| dt(i + 1, [0.0, 0.0, 1.0, 1.0], i as f64))
            .collect();
        let r = evaluate_pair(&[], &dts, &[(0.0, 1e10)], &[0.5], 3);
        assert_eq!(r[0].as_ref().unwrap().dt_scores, vec![4.0, 3.0, 2.0]);
    }
}
