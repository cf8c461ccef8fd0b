//! A binary mask stored only over its tight bounding box, bit-packed.
//!
//! Full-frame bitmaps would make every IoU cost O(H*W); tracking 100 instances at 720p needs the cost
//! to scale with the overlap of two masks instead. Each row is packed into 64-bit words aligned to
//! *absolute* image columns (word `k` holds columns `64k..64k+63`), so two masks at different x
//! offsets are intersected word by word with a plain AND and popcount, without shifting.

use crate::error::{Error, Result};
use crate::output::detection::Mask;

const WORD: u32 = 64;

/// A binary mask cropped to the tight bounds of its set pixels.
///
/// Invariants (kept by every constructor): bits outside `[x0, x1) x [y0, y1)` are zero, `area`
/// equals the number of set bits, and an empty mask has `x0 == x1`, `y0 == y1` and no words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxMask {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    /// Index of the first stored word in each row (`x0 / 64`).
    first_word: u32,
    words_per_row: u32,
    bits: Vec<u64>,
    area: u64,
}

impl Default for BoxMask {
    fn default() -> Self {
        Self::empty()
    }
}

impl BoxMask {
    /// A mask with no pixels; its IoU with anything is 0.
    pub fn empty() -> Self {
        BoxMask {
            x0: 0,
            y0: 0,
            x1: 0,
            y1: 0,
            first_word: 0,
            words_per_row: 0,
            bits: Vec::new(),
            area: 0,
        }
    }

    /// Builds a mask from a predicate over the pixel rectangle `[x0, x0+width) x [y0, y0+height)`;
    /// pixels outside that rectangle are unset. The result is trimmed to its tight bounds.
    pub fn from_fn(
        x0: u32,
        y0: u32,
        width: u32,
        height: u32,
        mut pixel: impl FnMut(u32, u32) -> bool,
    ) -> Result<Self> {
        let x_end = x0
            .checked_add(width)
            .ok_or_else(|| Error::Invalid("mask region exceeds u32 columns".into()))?;
        let y_end = y0
            .checked_add(height)
            .ok_or_else(|| Error::Invalid("mask region exceeds u32 rows".into()))?;
        // First pass finds the tight bounds so that the packed storage is no larger than needed.
        let (mut bx0, mut by0, mut bx1, mut by1) = (u32::MAX, u32::MAX, 0u32, 0u32);
        for y in y0..y_end {
            for x in x0..x_end {
                if pixel(x, y) {
                    bx0 = bx0.min(x);
                    bx1 = bx1.max(x + 1);
                    by0 = by0.min(y);
                    by1 = by1.max(y + 1);
                }
            }
        }
        if bx0 == u32::MAX {
            return Ok(Self::empty());
        }
        Ok(Self::pack(bx0, by0, bx1, by1, pixel))
    }

    /// A filled axis-aligned rectangle `[x0, x1) x [y0, y1)`.
    pub fn rect(x0: u32, y0: u32, x1: u32, y1: u32) -> Self {
        if x1 <= x0 || y1 <= y0 {
            return Self::empty();
        }
        Self::pack(x0, y0, x1, y1, |_, _| true)
    }

    /// Crops a full-frame mask to the tight bounds of its set pixels. Scans the whole frame, so it
    /// costs O(H*W); see [`BoxMask::from_mask_in_box`] for the cheaper scan.
    pub fn from_mask(mask: &Mask) -> Result<Self> {
        check_mask(mask)?;
        Ok(Self::from_mask_region(mask, 0, 0, mask.width, mask.height))
    }

    /// Crops a full-frame mask, scanning only the box `[x1, y1, x2, y2]` widened by one pixel on
    /// each side (clamped to the frame). YOLACT crops its masks to the predicted box, so nothing is
    /// lost for its detections; set pixels outside the widened box are ignored.
    pub fn from_mask_in_box(mask: &Mask, bbox: [f32; 4]) -> Result<Self> {
        check_mask(mask)?;
        if bbox.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!("non-finite box {bbox:?}")));
        }
        let clamp = |v: f32, hi: usize| -> usize { (v.max(0.0) as usize).min(hi) };
        let sx0 = clamp(bbox[0].floor() - 1.0, mask.width);
        let sy0 = clamp(bbox[1].floor() - 1.0, mask.height);
        let sx1 = clamp(bbox[2].ceil() + 1.0, mask.width);
        let sy1 = clamp(bbox[3].ceil() + 1.0, mask.height);
        Ok(Self::from_mask_region(mask, sx0, sy0, sx1, sy1))
    }

    /// Packs the region `[sx0, sx1) x [sy0, sy1)` of a checked full-frame mask in one pass, eight
    /// bytes at a time, then trims to the tight bounds. This conversion, not the tracking, is the
    /// main per-frame cost when masks arrive as full-frame bitmaps.
    fn from_mask_region(mask: &Mask, sx0: usize, sy0: usize, sx1: usize, sy1: usize) -> Self {
        if sx1 <= sx0 || sy1 <= sy0 {
            return Self::empty();
        }
        let w = WORD as usize;
        let first_word = sx0 / w;
        let wpr = (sx1 - 1) / w - first_word + 1;
        let rows = sy1 - sy0;
        let mut bits = vec![0u64; rows * wpr];
        let mut col_or = vec![0u64; wpr];
        let (mut ry0, mut ry1) = (usize::MAX, 0usize);
        // One full-width row at a time: the mask stores only its window.
        let mut row = vec![0u8; mask.width];
        for (r, out) in bits.chunks_exact_mut(wpr).enumerate() {
            let y = sy0 + r;
            row.fill(0);
            if let Some((x0, bytes)) = mask.row(y) {
                row[x0..x0 + bytes.len()].copy_from_slice(bytes);
            }
            let mut any = 0u64;
            for (k, word) in out.iter_mut().enumerate() {
                let start = (first_word + k) * w;
                let c0 = start.max(sx0);
                let c1 = (start + w).min(sx1);
                let v = if c0 == start && c1 == start + w {
                    pack_word(&row[start..start + w])
                } else {
                    let mut v = 0u64;
                    for (c, &b) in row[c0..c1].iter().enumerate() {
                        v |= u64::from(b != 0) << ((c0 + c) - start);
                    }
                    v
                };
                *word = v;
                col_or[k] |= v;
                any |= v;
            }
            if any != 0 {
                ry0 = ry0.min(r);
                ry1 = r + 1;
            }
        }
        if ry0 == usize::MAX {
            return Self::empty();
        }
        // Tight column bounds from the OR of all rows.
        let k0 = col_or.iter().position(|&v| v != 0).unwrap_or(0);
        let k1 = col_or.iter().rposition(|&v| v != 0).unwrap_or(k0);
        let x0 = (first_word + k0) * w + col_or[k0].trailing_zeros() as usize;
        let x1 = (first_word + k1) * w + w - col_or[k1].leading_zeros() as usize;
        let new_wpr = k1 - k0 + 1;
        let mut trimmed = Vec::with_capacity((ry1 - ry0) * new_wpr);
        let mut area = 0u64;
        for r in ry0..ry1 {
            let src = &bits[r * wpr + k0..r * wpr + k1 + 1];
            area += src.iter().map(|v| u64::from(v.count_ones())).sum::<u64>();
            trimmed.extend_from_slice(src);
        }
        // check_mask guaranteed the frame's dimensions fit in u32.
        BoxMask {
            x0: x0 as u32,
            y0: (sy0 + ry0) as u32,
            x1: x1 as u32,
            y1: (sy0 + ry1) as u32,
            first_word: (first_word + k0) as u32,
            words_per_row: new_wpr as u32,
            bits: trimmed,
            area,
        }
    }

    /// Packs pixels of `[x0, x1) x [y0, y1)` (non-empty); the bounds are taken as given.
    fn pack(x0: u32, y0: u32, x1: u32, y1: u32, mut pixel: impl FnMut(u32, u32) -> bool) -> Self {
        let first_word = x0 / WORD;
        let words_per_row = (x1 - 1) / WORD - first_word + 1;
        let rows = (y1 - y0) as usize;
        let mut bits = vec![0u64; rows * words_per_row as usize];
        let mut area = 0u64;
        for y in y0..y1 {
            let row =
                &mut bits[(y - y0) as usize * words_per_row as usize..][..words_per_row as usize];
            for x in x0..x1 {
                if pixel(x, y) {
                    row[(x / WORD - first_word) as usize] |= 1u64 << (x % WORD);
                    area += 1;
                }
            }
        }
        let mut m = BoxMask {
            x0,
            y0,
            x1,
            y1,
            first_word,
            words_per_row,
            bits,
            area,
        };
        if area == 0 {
            m = Self::empty();
        }
        m
    }

    /// Number of set pixels.
    pub fn area(&self) -> u64 {
        self.area
    }

    pub fn is_empty(&self) -> bool {
        self.area == 0
    }

    /// Tight pixel bounds `[x0, y0, x1, y1]`, end-exclusive; all zero for an empty mask.
    pub fn bounds(&self) -> [u32; 4] {
        [self.x0, self.y0, self.x1, self.y1]
    }

    /// Whether pixel `(x, y)` (absolute image coordinates) is set.
    pub fn get(&self, x: u32, y: u32) -> bool {
        if x < self.x0 || x >= self.x1 || y < self.y0 || y >= self.y1 {
            return false;
        }
        let word = self.bits[(y - self.y0) as usize * self.words_per_row as usize
            + (x / WORD - self.first_word) as usize];
        (word >> (x % WORD)) & 1 == 1
    }

    /// Number of pixels set in both masks. Only the rows and words shared by both bounding boxes
    /// are visited.
    pub fn intersection(&self, other: &BoxMask) -> u64 {
        if self.is_empty() || other.is_empty() {
            return 0;
        }
        let y0 = self.y0.max(other.y0);
        let y1 = self.y1.min(other.y1);
        if y1 <= y0 || self.x1.min(other.x1) <= self.x0.max(other.x0) {
            return 0;
        }
        let w0 = self.first_word.max(other.first_word);
        let w1 = (self.first_word + self.words_per_row).min(other.first_word + other.words_per_row);
        let n = (w1 - w0) as usize;
        let a_off = (w0 - self.first_word) as usize;
        let b_off = (w0 - other.first_word) as usize;
        let a_stride = self.words_per_row as usize;
        let b_stride = other.words_per_row as usize;
        let rows = (y1 - y0) as usize;
        let a_rows = self
            .bits
            .chunks_exact(a_stride)
            .skip((y0 - self.y0) as usize);
        let b_rows = other
            .bits
            .chunks_exact(b_stride)
            .skip((y0 - other.y0) as usize);
        let mut total = 0u64;
        for (a, b) in a_rows.zip(b_rows).take(rows) {
            total += a[a_off..a_off + n]
                .iter()
                .zip(&b[b_off..b_off + n])
                .map(|(p, q)| u64::from((p & q).count_ones()))
                .sum::<u64>();
        }
        total
    }

    /// Intersection over union; 0 when both masks are empty.
    pub fn iou(&self, other: &BoxMask) -> f64 {
        let inter = self.intersection(other);
        let union = self.area + other.area - inter;
        if union == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        }
    }

    /// An upper bound on [`BoxMask::iou`] from the boxes and areas alone, for cheap gating:
    /// the intersection is at most the smaller area and at most the boxes' overlap, and the union
    /// is at least the larger area.
    pub fn iou_upper_bound(&self, other: &BoxMask) -> f64 {
        let ow = self.x1.min(other.x1).saturating_sub(self.x0.max(other.x0)) as u64;
        let oh = self.y1.min(other.y1).saturating_sub(self.y0.max(other.y0)) as u64;
        let max_area = self.area.max(other.area);
        if max_area == 0 {
            return 0.0;
        }
        let inter = (ow * oh).min(self.area.min(other.area));
        inter as f64 / max_area as f64
    }
}

/// Packs 64 bytes into a word, bit i set when byte i is non-zero: per 8-byte lane, set each
/// byte's high bit if it is non-zero, move it to the byte's low bit, and gather the eight low bits
/// into the top byte with one multiplication.
fn pack_word(bytes: &[u8]) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const GATHER: u64 = 0x0102_0408_1020_4080;
    let mut out = 0u64;
    for (i, lane) in bytes.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(lane);
        let x = u64::from_le_bytes(b);
        let nonzero = (((x & LOW7).wrapping_add(LOW7)) | x) & HIGH;
        let gathered = (nonzero >> 7).wrapping_mul(GATHER) >> 56;
        out |= gathered << (8 * i);
    }
    out
}

fn check_mask(mask: &Mask) -> Result<()> {
    let fits = mask
        .x0
        .checked_add(mask.cols)
        .is_some_and(|x| x <= mask.width)
        && mask
            .y0
            .checked_add(mask.rows)
            .is_some_and(|y| y <= mask.height);
    if !fits || mask.cols.checked_mul(mask.rows) != Some(mask.data.len()) {
        return Err(Error::Invalid(format!(
            "mask {}x{} has a {}x{} window at ({}, {}) of {} bytes",
            mask.width,
            mask.height,
            mask.cols,
            mask.rows,
            mask.x0,
            mask.y0,
            mask.data.len()
        )));
    }
    if u32::try_from(mask.width).is_err() || u32::try_from(mask.height).is_err() {
        return Err(Error::Invalid("mask dimensions exceed u32".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bits (xorshift) so tests need no extra crate.
    fn lcg(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn random_mask(seed: u64, w: usize, h: usize) -> Mask {
        let mut s = seed | 1;
        let (cx0, cy0) = (
            (lcg(&mut s) % w as u64) as usize,
            (lcg(&mut s) % h as u64) as usize,
        );
        let (cw, ch) = (
            1 + (lcg(&mut s) % 150) as usize,
            1 + (lcg(&mut s) % 90) as usize,
        );
        let mut data = vec![0u8; w * h];
        for y in cy0..(cy0 + ch).min(h) {
            for x in cx0..(cx0 + cw).min(w) {
                // Any non-zero byte counts as set.
                data[y * w + x] = [0u8, 1, 255, 128, 2, 127][(lcg(&mut s) % 6) as usize];
            }
        }
        Mask::full(h, w, data)
    }

    fn naive_iou(a: &Mask, b: &Mask) -> f64 {
        let (mut i, mut u) = (0u64, 0u64);
        for (p, q) in a.data.iter().zip(&b.data) {
            let (p, q) = (*p != 0, *q != 0);
            i += (p && q) as u64;
            u += (p || q) as u64;
        }
        if u == 0 {
            0.0
        } else {
            i as f64 / u as f64
        }
    }

    #[test]
    fn iou_matches_full_frame_reference() {
        let (w, h) = (301, 170);
        for seed in 1..40u64 {
            let a = random_mask(seed * 7919, w, h);
            let b = random_mask(seed * 104_729 + 3, w, h);
            let ba = BoxMask::from_mask(&a).unwrap();
            let bb = BoxMask::from_mask(&b).unwrap();
            assert_eq!(ba.area(), a.area() as u64);
            let [x0, y0, x1, y1] = ba.bounds();
            let boxed = BoxMask::from_mask_in_box(&a, [x0 as f32, y0 as f32, x1 as f32, y1 as f32]);
            assert_eq!(boxed.unwrap(), ba, "seed {seed}");
            let want = naive_iou(&a, &b);
            assert!((ba.iou(&bb) - want).abs() < 1e-12, "seed {seed}");
            assert!((ba.iou(&ba) - if a.area() > 0 { 1.0 } else { 0.0 }).abs() < 1e-12);
            assert!(ba.iou_upper_bound(&bb) + 1e-12 >= want);
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(ba.get(x as u32, y as u32), a.data[y * w + x] != 0);
                }
            }
        }
    }

    #[test]
    fn in_box_scan_equals_full_scan_for_cropped_masks() {
        let mut m = Mask::full(50, 200, vec![0; 200 * 50]);
        for y in 10..30 {
            for x in 60..140 {
                m.data[y * 200 + x] = ((x + y) % 5 != 0) as u8;
            }
        }
        let full = BoxMask::from_mask(&m).unwrap();
        let boxed = BoxMask::from_mask_in_box(&m, [60.2, 10.0, 139.6, 29.9]).unwrap();
        assert_eq!(full, boxed);
        assert_eq!(full.bounds(), [60, 10, 140, 30]);
    }

    #[test]
    fn rect_iou_and_disjoint() {
        let a = BoxMask::rect(0, 0, 10, 10);
        let b = BoxMask::rect(5, 0, 15, 10);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-12);
        let c = BoxMask::rect(100, 100, 110, 110);
        assert_eq!(a.intersection(&c), 0);
        assert_eq!(a.iou_upper_bound(&c), 0.0);
        assert_eq!(BoxMask::empty().iou(&BoxMask::empty()), 0.0);
        assert!(BoxMask::rect(3, 3, 3, 9).is_empty());
    }

    #[test]
    fn bad_mask_is_an_error() {
        let m = Mask::full(4, 4, vec![0; 15]);
        assert!(BoxMask::from_mask(&m).is_err());
        let ok = Mask::full(4, 4, vec![0; 16]);
        assert!(BoxMask::from_mask_in_box(&ok, [f32::NAN, 0.0, 1.0, 1.0]).is_err());
    }
}
