//! `COCOeval.accumulate` (interpolated precision per recall threshold, final recall) and
//! `summarize` (the twelve means over valid entries).

use super::matching::EvalImg;

/// `np.spacing(1)`: keeps 0/0 precision at 0.
const EPS: f64 = f64::EPSILON;

/// `np.linspace(start, stop, num)`: `i * step + start`, with the last point set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// Precision `[t][r][k][a][m]` and recall `[t][k][a][m]`, -1 where a cell has no data.
#[derive(Debug, Clone)]
pub struct Accumulated {
    pub t_n: usize,
    pub r_n: usize,
    pub k_n: usize,
    pub a_n: usize,
    pub m_n: usize,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
}

impl Accumulated {
    pub fn p_index(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> usize {
        (((t * self.r_n + r) * self.k_n + k) * self.a_n + a) * self.m_n + m
    }
    pub fn r_index(&self, t: usize, k: usize, a: usize, m: usize) -> usize {
        ((t * self.k_n + k) * self.a_n + a) * self.m_n + m
    }
}

/// `evals[k][a][i]` holds the per-image entries (images in sorted id order).
pub fn accumulate(
    evals: &[Vec<Vec<Option<&EvalImg>>>],
    t_n: usize,
    rec_thrs: &[f64],
    max_dets: &[usize],
    a_n: usize,
) -> Accumulated {
    let k_n = evals.len();
    let r_n = rec_thrs.len();
    let m_n = max_dets.len();
    let mut acc = Accumulated {
        t_n,
        r_n,
        k_n,
        a_n,
        m_n,
        precision: vec![-1.0; t_n * r_n * k_n * a_n * m_n],
        recall: vec![-1.0; t_n * k_n * a_n * m_n],
    };
    for (k, per_area) in evals.iter().enumerate() {
        for (a, per_img) in per_area.iter().enumerate().take(a_n) {
            let entries: Vec<&EvalImg> = per_img.iter().flatten().copied().collect();
            if entries.is_empty() {
                continue;
            }
            let npig = entries
                .iter()
                .flat_map(|e| e.gt_ignore.iter())
                .filter(|&&ig| !ig)
                .count();
            if npig == 0 {
                continue;
            }
            for (m, &max_det) in max_dets.iter().enumerate() {
                // (score, image entry, detection index) of the first max_det of each image.
                let mut dets: Vec<(f64, &EvalImg, usize)> = Vec::new();
                for e in &entries {
                    let n = e.dt_scores.len().min(max_det);
                    dets.extend((0..n).map(|d| (e.dt_scores[d], *e, d)));
                }
                // Stable: equal scores keep image order, then detection order.
                dets.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal));
                let nd = dets.len();
                for t in 0..t_n {
                    let mut tp = 0.0f64;
                    let mut fp = 0.0f64;
                    let mut rc = Vec::with_capacity(nd);
                    let mut pr = Vec::with_capacity(nd);
                    for &(_, e, d) in &dets {
                        let n_d = e.dt_scores.len();
                        let i = t * n_d + d;
                        if !e.dt_ignore[i] {
                            if e.dt_matches[i] != 0 {
                                tp += 1.0;
                            } else {
                                fp += 1.0;
                            }
                        }
                        rc.push(tp / npig as f64);
                        pr.push(tp / (fp + tp + EPS));
                    }
                    let ri = acc.r_index(t, k, a, m);
                    acc.recall[ri] = rc.last().copied().unwrap_or(0.0);
                    // Precision envelope: make it non-increasing from the right.
                    for i in (1..nd).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (r, &thr) in rec_thrs.iter().enumerate() {
                        // searchsorted(rc, thr, side='left') on a non-decreasing rc.
                        let pi = rc.partition_point(|&x| x < thr);
                        let q = if pi < nd { pr[pi] } else { 0.0 };
                        let idx = acc.p_index(t, r, k, a, m);
                        acc.precision[idx] = q;
                    }
                }
            }
        }
    }
    acc
}

/// Mean of the entries > -1, or -1 when there are none (`_summarize`).
fn mean_valid(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.filter(|&v| v > -1.0) {
        sum += v;
        n += 1;
    }
    if n == 0 {
        -1.0
    } else {
        sum / n as f64
    }
}

/// Which slice of the accumulated arrays one summary number averages.
pub struct Selector<'a> {
    /// IoU threshold to pick by exact equality (as `np.where(iouThr == p.iouThrs)`); None = all.
    pub iou_thr: Option<f64>,
    pub area: usize,
    pub max_det: usize,
    pub iou_thrs: &'a [f64],
}

impl Accumulated {
    fn thresholds(&self, sel: &Selector) -> Vec<usize> {
        (0..self.t_n)
            .filter(|&t| sel.iou_thr.is_none_or(|x| sel.iou_thrs.get(t) == Some(&x)))
            .collect()
    }

    pub fn mean_precision(&self, sel: &Selector) -> f64 {
        let ts = self.thresholds(sel);
        let it = ts.into_iter().flat_map(|t| {
            (0..self.r_n).flat_map(move |r| {
                (0..self.k_n)
                    .map(move |k| self.precision[self.p_index(t, r, k, sel.area, sel.max_det)])
            })
        });
        mean_valid(it)
    }

    pub fn mean_recall(&self, sel: &Selector) -> f64 {
        let ts = self.thresholds(sel);
        let it = ts.into_iter().flat_map(|t| {
            (0..self.k_n).map(move |k| self.recall[self.r_index(t, k, sel.area, sel.max_det)])
        });
        mean_valid(it)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_endpoints() {
        let v = linspace(0.5, 0.95, 10);
        assert_eq!(v.len(), 10);
        assert_eq!(v[0], 0.5);
        assert_eq!(v[9], 0.95);
        assert!((v[5] - 0.75).abs() < 1e-15);
    }

    /// One image, one category, one threshold: dets ranked TP, FP, TP against 2 GTs.
    /// Hand-computed: rc = [.5, .5, 1], pr = [1, .5, 2/3] -> envelope [1, 2/3, 2/3];
    /// recall thresholds 0..=0.5 take 1, the rest 2/3.
    #[test]
    fn precision_envelope_by_hand() {
        let e = EvalImg {
            dt_scores: vec![0.9, 0.8, 0.7],
            dt_matches: vec![1, 0, 2],
            dt_ignore: vec![false; 3],
            gt_ignore: vec![false, false],
        };
        let evals = vec![vec![vec![Some(&e)]]];
        let rec = linspace(0.0, 1.0, 101);
        let acc = accumulate(&evals, 1, &rec, &[100], 1);
        assert_eq!(acc.recall[0], 1.0);
        for (r, &thr) in rec.iter().enumerate() {
            let want = if thr <= 0.5 { 1.0 } else { 2.0 / 3.0 };
            let got = acc.precision[acc.p_index(0, r, 0, 0, 0)];
            assert!((got - want).abs() < 1e-12, "r={thr}: {got} vs {want}");
        }
    }
}
