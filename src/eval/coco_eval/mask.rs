//! COCO run-length masks as pycocotools' `maskApi.c` handles them, restricted to what evaluation
//! needs: decoding the compressed string, polygon rasterisation (`frPoly`), union of parts, area,
//! bounding box and IoU. Kept local to the evaluator so it can be checked against pycocotools on
//! its own; `crate::output::rle` is the general-purpose codec.

use crate::{Error, Result};

/// Polygon coordinates beyond this many pixels are rejected: the edge walk is linear in the
/// coordinate range, so absurd values would otherwise mean absurd time and memory.
const MAX_POLY_COORD: f64 = 1e6;
/// Upper bound on the points of one densely walked polygon boundary.
const MAX_BOUNDARY_POINTS: u64 = 50_000_000;

/// Pixel count of an h x w mask; counts are u32 in the reference, so larger masks are refused.
pub fn pixel_count(h: u32, w: u32) -> Result<u32> {
    h.checked_mul(w)
        .ok_or_else(|| Error::Invalid(format!("mask size {h}x{w} is too large")))
}

/// Column-major run lengths, starting with a run of zeros (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalRle {
    pub h: u32,
    pub w: u32,
    pub counts: Vec<u32>,
}

impl EvalRle {
    /// Uncompressed counts; the runs must add up to `h * w` so later run walks stay in bounds.
    pub fn from_counts(h: u32, w: u32, counts: Vec<u32>) -> Result<Self> {
        let total: u64 = counts.iter().map(|&c| c as u64).sum();
        if total != pixel_count(h, w)? as u64 {
            return Err(Error::Invalid(format!(
                "RLE counts sum to {total}, expected {h}x{w} = {}",
                h as u64 * w as u64
            )));
        }
        Ok(Self { h, w, counts })
    }

    /// Decodes the compressed string form (`rleFrString`, see [`crate::output::rle::from_string`]).
    pub fn from_compressed(h: u32, w: u32, s: &str) -> Result<Self> {
        Self::from_counts(h, w, crate::output::rle::from_string(s)?)
    }

    /// Decodes to a row-major 0/1 byte mask of h x w (`rleDecode`, transposed), for training,
    /// which needs the pixels. The counts were checked to cover h x w when this RLE was built.
    pub fn to_row_major(&self) -> Vec<u8> {
        let (h, w) = (self.h as usize, self.w as usize);
        let mut out = vec![0u8; h * w];
        let mut i = 0usize;
        for (k, &c) in self.counts.iter().enumerate() {
            let end = (i + c as usize).min(h * w);
            if k % 2 == 1 {
                for j in i..end {
                    out[(j % h) * w + j / h] = 1;
                }
            }
            i = end;
        }
        out
    }

    /// Number of foreground pixels (`rleArea`).
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| c as u64)
            .sum()
    }

    /// `rleToBbox`: [x, y, w, h] of the foreground. Walks the counts as given (a trailing
    /// unpaired run is dropped, as the reference does).
    pub fn to_bbox(&self) -> [f64; 4] {
        let (h, w) = (self.h as u64, self.w as u64);
        let m = (self.counts.len() / 2) * 2;
        if m == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u64, 0u64);
        let mut cc = 0u64;
        let mut xp = 0u64;
        for j in 0..m {
            cc += self.counts[j] as u64;
            // The end of a foreground run is the last pixel inside it, hence -1 for odd j.
            let t = (cc as i64 - (j % 2) as i64).max(0) as u64;
            let y = t % h;
            let x = (t - y) / h;
            if j % 2 == 0 {
                xp = x;
            } else if xp < x {
                // The run wraps to another column: it spans the full height.
                ys = 0;
                ye = h - 1;
            }
            xs = xs.min(x);
            xe = xe.max(x);
            ys = ys.min(y);
            ye = ye.max(y);
        }
        [
            xs as f64,
            ys as f64,
            (xe as f64) - (xs as f64) + 1.0,
            (ye as f64) - (ys as f64) + 1.0,
        ]
    }

    /// Rasterises one polygon exactly as `rleFrPoly`: vertices are scaled by 5 and rounded,
    /// edges are walked densely, crossings of pixel-column centres are collected and turned into
    /// run boundaries.
    pub fn from_polygon(xy: &[f64], h: u32, w: u32) -> Result<Self> {
        if xy
            .iter()
            .any(|v| !v.is_finite() || v.abs() > MAX_POLY_COORD)
        {
            return Err(Error::Invalid(format!(
                "polygon coordinate is not finite or beyond +-{MAX_POLY_COORD}"
            )));
        }
        let n_pixels = pixel_count(h, w)?;
        let k = xy.len() / 2;
        if k == 0 {
            return Self::from_counts(h, w, vec![n_pixels]);
        }
        const SCALE: f64 = 5.0;
        // C's (int)(v + .5) truncates toward zero; `as i64` does the same.
        let mut x: Vec<i64> = (0..k).map(|j| (SCALE * xy[2 * j] + 0.5) as i64).collect();
        let mut y: Vec<i64> = (0..k)
            .map(|j| (SCALE * xy[2 * j + 1] + 0.5) as i64)
            .collect();
        x.push(x[0]);
        y.push(y[0]);
        let walk: u64 = (0..k)
            .map(|j| {
                (x[j] - x[j + 1])
                    .unsigned_abs()
                    .max((y[j] - y[j + 1]).unsigned_abs())
                    + 1
            })
            .sum();
        if walk > MAX_BOUNDARY_POINTS {
            return Err(Error::Invalid(format!(
                "polygon boundary too long to rasterise ({walk} points)"
            )));
        }
        let mut u: Vec<i64> = Vec::with_capacity(walk as usize);
        let mut v: Vec<i64> = Vec::with_capacity(walk as usize);
        for j in 0..k {
            let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
            let dx = (xe - xs).abs();
            let dy = (ys - ye).abs();
            let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
            if flip {
                std::mem::swap(&mut xs, &mut xe);
                std::mem::swap(&mut ys, &mut ye);
            }
            if dx >= dy {
                let s = if dx == 0 {
                    0.0
                } else {
                    (ye - ys) as f64 / dx as f64
                };
                for d in 0..=dx {
                    let t = if flip { dx - d } else { d };
                    u.push(t + xs);
                    v.push((ys as f64 + s * t as f64 + 0.5) as i64);
                }
            } else {
                let s = (xe - xs) as f64 / dy as f64;
                for d in 0..=dy {
                    let t = if flip { dy - d } else { d };
                    v.push(t + ys);
                    u.push((xs as f64 + s * t as f64 + 0.5) as i64);
                }
            }
        }
        // Points where the boundary crosses a pixel-column centre, downsampled back.
        let (hf, wf) = (h as f64, w as f64);
        let mut a: Vec<u64> = Vec::new();
        for j in 1..u.len() {
            if u[j] == u[j - 1] {
                continue;
            }
            let xd = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 } as f64;
            let xd = (xd + 0.5) / SCALE - 0.5;
            if xd.floor() != xd || xd < 0.0 || xd > wf - 1.0 {
                continue;
            }
            let yd = if v[j] < v[j - 1] { v[j] } else { v[j - 1] } as f64;
            let yd = ((yd + 0.5) / SCALE - 0.5).clamp(0.0, hf).ceil();
            a.push(xd as u64 * h as u64 + yd as u64);
        }
        a.push(n_pixels as u64);
        a.sort_unstable();
        let mut prev = 0u64;
        for val in a.iter_mut() {
            let t = *val;
            *val -= prev;
            prev = t;
        }
        // A zero-length run (two equal boundaries) joins its neighbours into one run.
        let mut b: Vec<u32> = Vec::with_capacity(a.len());
        let mut j = 0;
        b.push(a[j] as u32);
        j += 1;
        while j < a.len() {
            if a[j] > 0 {
                b.push(a[j] as u32);
                j += 1;
            } else {
                j += 1;
                if j < a.len() {
                    if let Some(last) = b.last_mut() {
                        *last += a[j] as u32;
                    }
                    j += 1;
                }
            }
        }
        Ok(Self { h, w, counts: b })
    }

    /// `frBbox`: a box [x, y, w, h] rasterised as its 4-corner polygon.
    pub fn from_bbox(bb: &[f64; 4], h: u32, w: u32) -> Result<Self> {
        let (xs, ys, xe, ye) = (bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3]);
        Self::from_polygon(&[xs, ys, xs, ye, xe, ye, xe, ys], h, w)
    }

    /// Union of several masks of one size (`rleMerge` with intersect = 0). Parts of a different
    /// size make the reference return an empty 0x0 mask; we report an error instead.
    pub fn merge(parts: &[EvalRle]) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Ok(Self {
                h: 0,
                w: 0,
                counts: Vec::new(),
            });
        };
        if parts.len() == 1 {
            return Ok(first.clone());
        }
        let (h, w) = (first.h, first.w);
        if parts.iter().any(|p| p.h != h || p.w != w) {
            return Err(Error::Invalid(
                "cannot merge mask parts of different sizes".into(),
            ));
        }
        let mut acc = first.counts.clone();
        for part in &parts[1..] {
            acc = union_counts(&acc, &part.counts);
        }
        Ok(Self { h, w, counts: acc })
    }
}

/// Iterates (run length, value) of two RLEs in lockstep and emits a canonical RLE of `a OR b`.
fn union_counts(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut ra, mut rb) = (
        a.first().copied().unwrap_or(0),
        b.first().copied().unwrap_or(0),
    );
    let (mut va, mut vb) = (false, false);
    let mut cur = false;
    let mut run = 0u32;
    loop {
        // Skip exhausted runs, flipping the value each time.
        while ra == 0 && ia + 1 < a.len() {
            ia += 1;
            ra = a[ia];
            va = !va;
        }
        while rb == 0 && ib + 1 < b.len() {
            ib += 1;
            rb = b[ib];
            vb = !vb;
        }
        if ra == 0 && rb == 0 {
            break;
        }
        let c = match (ra, rb) {
            (0, r) | (r, 0) => r,
            (x, y) => x.min(y),
        };
        let v = (va && ra > 0) || (vb && rb > 0);
        if v != cur {
            out.push(run);
            run = 0;
            cur = v;
        }
        run += c;
        ra = ra.saturating_sub(c);
        rb = rb.saturating_sub(c);
    }
    out.push(run);
    out
}

/// Intersection in pixels of two equally sized RLEs.
fn intersection(a: &EvalRle, b: &EvalRle) -> u64 {
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut ra, mut rb) = (
        a.counts.first().copied().unwrap_or(0),
        b.counts.first().copied().unwrap_or(0),
    );
    let (mut va, mut vb) = (false, false);
    let mut inter = 0u64;
    loop {
        while ra == 0 && ia + 1 < a.counts.len() {
            ia += 1;
            ra = a.counts[ia];
            va = !va;
        }
        while rb == 0 && ib + 1 < b.counts.len() {
            ib += 1;
            rb = b.counts[ib];
            vb = !vb;
        }
        if ra == 0 || rb == 0 {
            break;
        }
        let c = ra.min(rb);
        if va && vb {
            inter += c as u64;
        }
        ra -= c;
        rb -= c;
    }
    inter
}

/// `bbIou` for one pair: [x, y, w, h] boxes without the +1 convention. For a crowd ground truth
/// the union is the detection's area alone.
pub fn bbox_iou(dt: &[f64; 4], gt: &[f64; 4], gt_crowd: bool) -> f64 {
    let w = (dt[0] + dt[2]).min(gt[0] + gt[2]) - dt[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (dt[1] + dt[3]).min(gt[1] + gt[3]) - dt[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = dt[2] * dt[3];
    let u = if gt_crowd { da } else { gt[2] * gt[3] + da - i };
    i / u
}

/// `rleIou` for one pair, given both masks' bounding boxes (the reference skips pairs whose
/// boxes do not overlap and marks masks of different sizes with -1).
pub fn mask_iou(
    dt: &EvalRle,
    dt_box: &[f64; 4],
    gt: &EvalRle,
    gt_box: &[f64; 4],
    gt_crowd: bool,
) -> f64 {
    if bbox_iou(dt_box, gt_box, false) <= 0.0 {
        return 0.0;
    }
    if dt.h != gt.h || dt.w != gt.w {
        return -1.0;
    }
    let i = intersection(dt, gt);
    if i == 0 {
        return 0.0;
    }
    let u = if gt_crowd {
        dt.area()
    } else {
        dt.area() + gt.area() - i
    };
    i as f64 / u as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(r: &EvalRle) -> Vec<bool> {
        let mut out = Vec::new();
        let mut v = false;
        for &c in &r.counts {
            out.extend(std::iter::repeat_n(v, c as usize));
            v = !v;
        }
        out
    }

    #[test]
    fn compressed_decode_known_string() {
        // Counts [1, 2, 3] are "123": no delta before the fourth value.
        let r = EvalRle::from_compressed(2, 3, "123").unwrap();
        assert_eq!(r.counts, vec![1, 2, 3]);
        // Fourth value is a delta on the second: '1' is +1 -> 3.
        let r = EvalRle::from_compressed(3, 3, "1231").unwrap();
        assert_eq!(r.counts, vec![1, 2, 3, 3]);
        // 'O' (79-48=31: 0x1f with sign bit 0x10) decodes to -1.
        let r = EvalRle::from_compressed(3, 3, "133O").unwrap();
        assert_eq!(r.counts, vec![1, 3, 3, 2]);
    }

    #[test]
    fn malformed_compressed_is_error() {
        assert!(EvalRle::from_compressed(2, 2, "1j").is_err()); // continuation then end
        assert!(EvalRle::from_compressed(2, 2, " ").is_err());
        assert!(EvalRle::from_compressed(2, 2, "5").is_err()); // sums to 5 != 4
    }

    #[test]
    fn union_and_intersection_match_dense() {
        let a = EvalRle::from_counts(4, 5, vec![0, 3, 5, 4, 8]).unwrap();
        let b = EvalRle::from_counts(4, 5, vec![2, 6, 1, 1, 10]).unwrap();
        let u = EvalRle::merge(&[a.clone(), b.clone()]).unwrap();
        let (da, db, du) = (dense(&a), dense(&b), dense(&u));
        for i in 0..20 {
            assert_eq!(du[i], da[i] || db[i], "pixel {i}");
        }
        let inter = da.iter().zip(&db).filter(|(x, y)| **x && **y).count() as u64;
        assert_eq!(intersection(&a, &b), inter);
        assert_eq!(u.area(), du.iter().filter(|x| **x).count() as u64);
    }

    /// Random masks: RLE IoU (plain and crowd) against a dense f64 count.
    #[test]
    fn mask_iou_matches_dense_count() {
        let (h, w) = (7u32, 9u32);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let mut make = || {
                let p = next() % 100;
                let bits: Vec<bool> = (0..h * w).map(|_| next() % 100 < p).collect();
                let mut counts = Vec::new();
                let (mut cur, mut run) = (false, 0u32);
                for &b in &bits {
                    if b != cur {
                        counts.push(run);
                        run = 0;
                        cur = b;
                    }
                    run += 1;
                }
                counts.push(run);
                (EvalRle::from_counts(h, w, counts).unwrap(), bits)
            };
            let (a, da) = make();
            let (b, db) = make();
            assert_eq!(dense(&a), da);
            let inter = da.iter().zip(&db).filter(|(x, y)| **x && **y).count() as f64;
            let na = da.iter().filter(|x| **x).count() as f64;
            let nb = db.iter().filter(|x| **x).count() as f64;
            let want = if inter == 0.0 {
                0.0
            } else {
                inter / (na + nb - inter)
            };
            let want_crowd = if inter == 0.0 { 0.0 } else { inter / na };
            let (ba, bb) = (a.to_bbox(), b.to_bbox());
            assert!((mask_iou(&a, &ba, &b, &bb, false) - want).abs() < 1e-12);
            assert!((mask_iou(&a, &ba, &b, &bb, true) - want_crowd).abs() < 1e-12);
        }
    }

    #[test]
    fn bbox_of_column_spanning_run() {
        // 3x4 mask; foreground from index 2 (col 0, row 2) to index 6 (col 2, row 0).
        let r = EvalRle::from_counts(3, 4, vec![2, 5, 5]).unwrap();
        assert_eq!(r.to_bbox(), [0.0, 0.0, 3.0, 3.0]);
        let r = EvalRle::from_counts(3, 4, vec![4, 1, 7]).unwrap();
        assert_eq!(r.to_bbox(), [1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn box_iou_plain_and_crowd() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [5.0, 5.0, 10.0, 10.0];
        assert!((bbox_iou(&a, &b, false) - 25.0 / 175.0).abs() < 1e-15);
        assert!((bbox_iou(&a, &b, true) - 25.0 / 100.0).abs() < 1e-15);
        assert_eq!(bbox_iou(&a, &[10.0, 0.0, 5.0, 5.0], false), 0.0);
    }
}
