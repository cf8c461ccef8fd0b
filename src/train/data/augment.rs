//! The reference's `SSDAugmentation` random steps, in its order and with its draws in its order:
//! PhotometricDistort, Expand, RandomSampleCrop and RandomMirror, applied to a [`Work`] between
//! ToAbsoluteCoords and Resize. RandomFlip / RandomRot90 are off in every config and not ported.
//!
//! Each sample draws from its own ChaCha8 stream keyed by (seed, epoch, dataset index), so a
//! sample's augmentation does not depend on which worker thread makes it or when. numpy's
//! `uniform(low, high)` is low + (high − low)·U with U uniform in [0, 1); it is written out that
//! way here so the quirks that depend on the formula (the crop's `uniform(W − w)`) keep their
//! distribution. Exact numpy stream parity is not a goal (the reference sets no seed at all).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::transform::{means_bgr, Work};

/// The streams' tags (the key's last word): one set of streams per purpose.
pub mod stream {
    /// A sample's augmentation draws.
    pub const AUGMENT: u64 = 0;
    /// The replacement draws of a sample left with only crowds.
    pub const RESAMPLE: u64 = 1;
    /// An epoch's permutation.
    pub const ORDER: u64 = 2;
}

/// The sample's random stream: the 32-byte ChaCha key is (seed, epoch, index, tag), so no two
/// (seed, epoch, index) share a stream.
pub fn sample_rng(seed: u64, epoch: u64, index: u64, tag: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (i, v) in [seed, epoch, index, tag].into_iter().enumerate() {
        key[i * 8..(i + 1) * 8].copy_from_slice(&v.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// numpy's `uniform(low, high)`: low + (high − low)·U. With high < low it lies in (high, low].
pub fn uniform(rng: &mut impl Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

/// numpy's `randint(2)`.
fn coin(rng: &mut impl Rng) -> bool {
    rng.random_range(0..2u32) == 1
}

/// Which steps run (the config's `augment_*` flags; all four are on in the six configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AugmentFlags {
    pub photometric_distort: bool,
    pub expand: bool,
    pub random_sample_crop: bool,
    pub random_mirror: bool,
}

impl Default for AugmentFlags {
    fn default() -> Self {
        Self {
            photometric_distort: true,
            expand: true,
            random_sample_crop: true,
            random_mirror: true,
        }
    }
}

/// SSDAugmentation's random steps 3-6, in the reference's order.
pub fn augment(work: &mut Work, flags: AugmentFlags, rng: &mut impl Rng) {
    if flags.photometric_distort {
        photometric_distort(&mut work.image, rng);
    }
    if flags.expand {
        expand(work, rng);
    }
    if flags.random_sample_crop {
        random_sample_crop(work, rng);
    }
    if flags.random_mirror {
        random_mirror(work, rng);
    }
}

/// FLT_EPSILON, which OpenCV adds to both divisions of its float BGR→HSV.
const FLT_EPS: f32 = f32::EPSILON;

/// OpenCV's float32 BGR→HSV (`cv2.cvtColor`, `COLOR_BGR2HSV`): H in degrees [0, 360), S = d / (|V| + ε), V unscaled.
pub fn bgr_to_hsv(px: [f32; 3]) -> [f32; 3] {
    let [b, g, r] = px;
    let v = b.max(g).max(r);
    let d = v - b.min(g).min(r);
    let s = d / (v.abs() + FLT_EPS);
    // OpenCV divides in double (`60.` is a double literal) and casts back.
    let k = (60.0 / f64::from(d + FLT_EPS)) as f32;
    let mut h = if v == r {
        (g - b) * k
    } else if v == g {
        (b - r) * k + 120.0
    } else {
        (r - g) * k + 240.0
    };
    if h < 0.0 {
        h += 360.0;
    }
    [h, s, v]
}

/// OpenCV's float32 HSV→BGR (`COLOR_HSV2BGR`).
pub fn hsv_to_bgr(px: [f32; 3]) -> [f32; 3] {
    let [h, s, v] = px;
    if s == 0.0 {
        return [v, v, v];
    }
    const SECTORS: [[usize; 3]; 6] = [
        [1, 3, 0],
        [1, 0, 2],
        [3, 0, 1],
        [0, 2, 1],
        [0, 1, 3],
        [2, 1, 0],
    ];
    let mut hh = h * (6.0 / 360.0);
    // Wrap into [0, 6) the way OpenCV does: 6 added or subtracted until inside. A non-finite or
    // huge hue would not terminate (or not move); it falls to OpenCV's "bad sector" case below.
    if hh.abs() < 1e6 {
        while hh < 0.0 {
            hh += 6.0;
        }
        while hh >= 6.0 {
            hh -= 6.0;
        }
    }
    let mut sector = hh.floor();
    let mut f = hh - sector;
    if !(0.0..6.0).contains(&sector) {
        (sector, f) = (0.0, 0.0);
    }
    let t = [
        v,
        v * (1.0 - s),
        v * (1.0 - s * f),
        v * (1.0 - s * (1.0 - f)),
    ];
    let [a, b, c] = SECTORS[sector as usize];
    [t[a], t[b], t[c]]
}

/// PhotometricDistort on an HWC BGR image: brightness, then contrast before or after the HSV
/// saturation / hue steps. Nothing is clamped (the reference does not clamp either).
pub fn photometric_distort(image: &mut [f32], rng: &mut impl Rng) {
    if coin(rng) {
        let delta = uniform(rng, -32.0, 32.0) as f32;
        image.iter_mut().for_each(|v| *v += delta);
    }
    let contrast_first = coin(rng);
    if contrast_first {
        random_contrast(image, rng);
    }
    // ConvertColor BGR→HSV, RandomSaturation, RandomHue, ConvertColor HSV→BGR. The draws happen
    // between the conversions; drawing both first and converting once is the same computation.
    let saturation = coin(rng).then(|| uniform(rng, 0.5, 1.5) as f32);
    let hue = coin(rng).then(|| uniform(rng, -18.0, 18.0) as f32);
    for px in image.chunks_exact_mut(3) {
        let mut hsv = bgr_to_hsv([px[0], px[1], px[2]]);
        if let Some(s) = saturation {
            hsv[1] *= s;
        }
        if let Some(d) = hue {
            hsv[0] += d;
            // One wrap each way, as the reference's two masked updates.
            if hsv[0] > 360.0 {
                hsv[0] -= 360.0;
            }
            if hsv[0] < 0.0 {
                hsv[0] += 360.0;
            }
        }
        px.copy_from_slice(&hsv_to_bgr(hsv));
    }
    if !contrast_first {
        random_contrast(image, rng);
    }
}

fn random_contrast(image: &mut [f32], rng: &mut impl Rng) {
    if coin(rng) {
        let alpha = uniform(rng, 0.5, 1.5) as f32;
        image.iter_mut().for_each(|v| *v *= alpha);
    }
}

/// Expand: with probability 1/2 (when the draw is 0) a mean-filled canvas `ratio` ∈ [1, 4) times
/// larger, the image pasted at the truncated (left, top); boxes move by the truncated offsets.
pub fn expand(work: &mut Work, rng: &mut impl Rng) {
    if coin(rng) {
        return;
    }
    let (h, w) = (work.h, work.w);
    let ratio = uniform(rng, 1.0, 4.0);
    let left = uniform(rng, 0.0, w as f64 * ratio - w as f64);
    let top = uniform(rng, 0.0, h as f64 * ratio - h as f64);
    let (nh, nw) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
    // int(top) + h <= int(h * ratio) since top < h*ratio - h; min() only guards an upward
    // rounding of the uniform draw to its upper end.
    let (l, t) = ((left as usize).min(nw - w), (top as usize).min(nh - h));
    let mean = means_bgr();
    let mut image: Vec<f32> = std::iter::repeat_n(mean, nh * nw).flatten().collect();
    for r in 0..h {
        let dst = ((t + r) * nw + l) * 3;
        image[dst..dst + w * 3].copy_from_slice(&work.image[r * w * 3..(r + 1) * w * 3]);
    }
    let n = work.len();
    let mut masks = vec![0u8; n * nh * nw];
    for i in 0..n {
        for r in 0..h {
            let src = &work.masks[(i * h + r) * w..(i * h + r + 1) * w];
            let dst = (i * nh + t + r) * nw + l;
            masks[dst..dst + w].copy_from_slice(src);
        }
    }
    for b in &mut work.boxes {
        b[0] += l as f64;
        b[2] += l as f64;
        b[1] += t as f64;
        b[3] += t as f64;
    }
    work.image = image;
    work.masks = masks;
    work.h = nh;
    work.w = nw;
}

/// The crop rectangle (x1, y1, x2, y2) of one RandomSampleCrop trial, or `None` when the trial
/// is rejected by the aspect-ratio test. Public so its distribution can be tested on its own.
pub fn crop_trial(rng: &mut impl Rng, w: usize, h: usize) -> Option<[usize; 4]> {
    let (wf, hf) = (w as f64, h as f64);
    let cw = uniform(rng, 0.3 * wf, wf);
    let ch = uniform(rng, 0.3 * hf, hf);
    if ch / cw < 0.5 || ch / cw > 2.0 {
        return None;
    }
    // The reference's `uniform(W - w)` is numpy's uniform(low = W - w, high = 1.0): kept.
    let left = uniform(rng, wf - cw, 1.0);
    let top = uniform(rng, hf - ch, 1.0);
    // left + cw < W + 1 in both branches, so int(left + cw) <= W; min() only guards rounding.
    Some([
        left as usize,
        top as usize,
        ((left + cw) as usize).min(w),
        ((top + ch) as usize).min(h),
    ])
}

/// RandomSampleCrop. The mode draw picks one of 6 options; option 0 means "no crop",
/// and the other five behave identically because the reference's IoU test can never reject (its
/// max IoU is always +inf), so the IoU is not computed at all.
pub fn random_sample_crop(work: &mut Work, rng: &mut impl Rng) {
    loop {
        if rng.random_range(0..6u32) == 0 {
            return;
        }
        for _ in 0..50 {
            let Some(rect) = crop_trial(rng, work.w, work.h) else {
                continue;
            };
            if apply_crop(work, rect) {
                return;
            }
        }
    }
}

/// Crops to `rect` if at least one non-crowd box has its centre strictly inside; returns whether
/// it did. Boxes are clipped to the rectangle, masks and the image sliced the same way.
pub fn apply_crop(work: &mut Work, rect: [usize; 4]) -> bool {
    let [x1, y1, x2, y2] = rect.map(|v| v as f64);
    let n = work.len();
    let first_crowd = n - work.num_crowds.min(n);
    let keep: Vec<bool> = work
        .boxes
        .iter()
        .map(|b| {
            let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
            x1 < cx && y1 < cy && x2 > cx && y2 > cy
        })
        .collect();
    if !keep[..first_crowd].iter().any(|&k| k) {
        return false;
    }
    let kept_crowds = keep[first_crowd..].iter().filter(|&&k| k).count();
    let (ow, oh) = (work.w, work.h);
    let (cw, ch) = (rect[2] - rect[0], rect[3] - rect[1]);
    let mut image = Vec::with_capacity(ch * cw * 3);
    for r in rect[1]..rect[3] {
        image.extend_from_slice(&work.image[(r * ow + rect[0]) * 3..(r * ow + rect[2]) * 3]);
    }
    work.retain(&keep);
    let kept = work.len();
    let mut masks = Vec::with_capacity(kept * ch * cw);
    for i in 0..kept {
        for r in rect[1]..rect[3] {
            let row = (i * oh + r) * ow;
            masks.extend_from_slice(&work.masks[row + rect[0]..row + rect[2]]);
        }
    }
    for b in &mut work.boxes {
        b[0] = b[0].max(x1) - x1;
        b[1] = b[1].max(y1) - y1;
        b[2] = b[2].min(x2) - x1;
        b[3] = b[3].min(y2) - y1;
    }
    work.image = image;
    work.masks = masks;
    work.h = ch;
    work.w = cw;
    work.num_crowds = kept_crowds;
    true
}

/// RandomMirror: with probability 1/2 flips image and masks horizontally; x1' = W − x2,
/// x2' = W − x1 (pixel boxes, no −1).
pub fn random_mirror(work: &mut Work, rng: &mut impl Rng) {
    if !coin(rng) {
        return;
    }
    mirror(work);
}

/// The flip itself.
pub fn mirror(work: &mut Work) {
    let w = work.w;
    if w == 0 {
        return;
    }
    for row in work.image.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
    for row in work.masks.chunks_exact_mut(w) {
        row.reverse();
    }
    let wf = w as f64;
    for b in &mut work.boxes {
        (b[0], b[2]) = (wf - b[2], wf - b[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_of_primaries_and_the_round_trip() {
        let [h, s, v] = bgr_to_hsv([0.0, 0.0, 255.0]);
        assert!(h.abs() < 1e-4 && (s - 1.0).abs() < 1e-6 && v == 255.0);
        let [h, ..] = bgr_to_hsv([255.0, 0.0, 0.0]);
        assert!((h - 240.0).abs() < 1e-3);
        let grey = bgr_to_hsv([10.0, 10.0, 10.0]);
        assert_eq!(grey, [0.0, 0.0, 10.0]);
        assert_eq!(hsv_to_bgr(grey), [10.0, 10.0, 10.0]);
    }

    #[test]
    fn crowd_only_crops_are_refused() {
        let img = image::RgbImage::new(10, 10);
        let mut w = Work::from_rgb(
            &img,
            vec![0; 200],
            &[[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]],
            vec![3, -1],
            1,
        );
        // Only the crowd's centre (7, 7) is inside.
        assert!(!apply_crop(&mut w, [5, 5, 10, 10]));
        assert_eq!((w.w, w.len()), (10, 2));
        assert!(apply_crop(&mut w, [0, 0, 10, 10]));
        assert_eq!(w.num_crowds, 1);
    }
}
