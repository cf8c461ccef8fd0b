//! COCO run-length encoding, bit-compatible with pycocotools (`maskApi.c`).
//!
//! Runs are counted in column-major (Fortran) order and alternate starting with a run of zeros,
//! which may be empty.

use crate::error::{Error, Result};
use crate::output::detection::Mask;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    /// [height, width], as in COCO's `size`.
    pub size: [usize; 2],
    pub counts: Vec<u32>,
}

/// Runs of a column-major 0/1 sequence, starting with zeros.
fn runs(len: usize, value_at: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut counts = Vec::new();
    let mut cur = false;
    let mut run = 0u32;
    for i in 0..len {
        let v = value_at(i);
        if v != cur {
            counts.push(run);
            run = 0;
            cur = v;
        }
        run += 1;
    }
    counts.push(run);
    counts
}

/// Runs built from (value, length) pieces, merged as they come.
struct Runs {
    counts: Vec<u32>,
    cur: bool,
}

impl Runs {
    fn new() -> Self {
        Runs {
            counts: vec![0],
            cur: false,
        }
    }

    fn push(&mut self, v: bool, n: usize) {
        if n == 0 {
            return;
        }
        if v != self.cur {
            self.counts.push(0);
            self.cur = v;
        }
        if let Some(last) = self.counts.last_mut() {
            *last += n as u32;
        }
    }
}

/// Encodes a mask (any non-zero byte is foreground). Columns and column parts outside the
/// mask's window are added as whole runs of background, so the cost is the window's area.
pub fn encode(mask: &Mask) -> Rle {
    let (h, w) = (mask.height, mask.width);
    if h * w == 0 {
        return Rle {
            size: [h, w],
            counts: vec![],
        };
    }
    let mut runs = Runs::new();
    // Rows of the window that lie inside the image (a window is checked at construction, but
    // the fields are public).
    let (y0, y1) = (mask.y0.min(h), (mask.y0 + mask.rows).min(h));
    for x in 0..w {
        if x < mask.x0 || x >= mask.x0 + mask.cols || y0 == y1 {
            runs.push(false, h);
            continue;
        }
        runs.push(false, y0);
        for y in y0..y1 {
            runs.push(mask.get(x, y), 1);
        }
        runs.push(false, h - y1);
    }
    Rle {
        size: [h, w],
        counts: runs.counts,
    }
}

/// Encodes the window [x0, x0 + cw) x [y0, y0 + ch) of `mask` (clipped to the mask), for compact
/// messages: the result's `size` is the window's.
pub fn encode_cropped(mask: &Mask, x0: usize, y0: usize, cw: usize, ch: usize) -> Rle {
    let x0 = x0.min(mask.width);
    let y0 = y0.min(mask.height);
    let cw = cw.min(mask.width - x0);
    let ch = ch.min(mask.height - y0);
    let counts = if cw * ch == 0 {
        vec![]
    } else {
        runs(cw * ch, |i| {
            let (x, y) = (x0 + i / ch, y0 + i % ch);
            mask.get(x, y)
        })
    };
    Rle {
        size: [ch, cw],
        counts,
    }
}

/// Decodes back to a row-major 0/1 mask. Fails when the runs do not cover exactly h x w pixels.
pub fn decode(rle: &Rle) -> Result<Mask> {
    let [h, w] = rle.size;
    let total: u64 = rle.counts.iter().map(|&c| c as u64).sum();
    if total != (h * w) as u64 {
        return Err(Error::Invalid(format!(
            "RLE covers {total} pixels, size is {h}x{w}"
        )));
    }
    let mut data = vec![0u8; h * w];
    let mut i = 0usize;
    for (k, &c) in rle.counts.iter().enumerate() {
        if k % 2 == 1 {
            for j in i..i + c as usize {
                data[(j % h) * w + j / h] = 1;
            }
        }
        i += c as usize;
    }
    Ok(Mask::full(h, w, data))
}

/// Foreground pixel count.
pub fn area(rle: &Rle) -> u64 {
    rle.counts
        .iter()
        .skip(1)
        .step_by(2)
        .map(|&c| c as u64)
        .sum()
}

/// pycocotools' compressed string (`rleToString`): each count, minus the count two places back
/// from the third on, as 5-bit little-endian groups with a continuation bit, offset by '0'.
/// ```
/// use yolact_ros2::output::{detection::Mask, rle};
/// // 2x3 mask, row-major; COCO RLE runs are column-major, starting with background.
/// let mask = Mask::full(2, 3, vec![0, 1, 1, 0, 1, 0]);
/// let r = rle::encode(&mask);
/// assert_eq!(r.counts, vec![2, 3, 1]);
/// assert_eq!(rle::from_string(&rle::to_string(&r.counts))?, r.counts);
/// # Ok::<(), yolact_ros2::Error>(())
/// ```
pub fn to_string(counts: &[u32]) -> String {
    let mut s = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let mut x = c as i64;
        if i > 2 {
            x -= counts[i - 2] as i64;
        }
        loop {
            let mut ch = (x & 0x1f) as u8;
            x >>= 5;
            let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                ch |= 0x20;
            }
            s.push((ch + 48) as char);
            if !more {
                break;
            }
        }
    }
    s
}

/// Inverse of [`to_string`] (`rleFrString`).
pub fn from_string(s: &str) -> Result<Vec<u32>> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k = 0;
        loop {
            let Some(&b) = bytes.get(p) else {
                return Err(Error::Invalid("RLE string ends inside a count".into()));
            };
            if !(48..48 + 64).contains(&b) || k > 12 {
                return Err(Error::Invalid(format!("bad RLE string byte {b} at {p}")));
            }
            let c = (b - 48) as i64;
            x |= (c & 0x1f) << (5 * k);
            p += 1;
            k += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        let m = counts.len();
        if m > 2 {
            x += counts[m - 2] as i64;
        }
        let v = u32::try_from(x)
            .map_err(|_| Error::Invalid(format!("RLE count {x} out of range at {p}")))?;
        counts.push(v);
    }
    Ok(counts)
}

/// Intersection of two run lists over the same pixel count.
fn intersection(a: &[u32], b: &[u32]) -> u64 {
    // Walk both run lists; each run is (end position, is-foreground).
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut ea, mut eb) = (
        a.first().copied().unwrap_or(0) as u64,
        b.first().copied().unwrap_or(0) as u64,
    );
    let mut pos = 0u64;
    let mut inter = 0u64;
    while ia < a.len() && ib < b.len() {
        let end = ea.min(eb);
        if ia % 2 == 1 && ib % 2 == 1 {
            inter += end - pos;
        }
        pos = end;
        if ea == end {
            ia += 1;
            ea += a.get(ia).copied().unwrap_or(0) as u64;
        }
        if eb == end {
            ib += 1;
            eb += b.get(ib).copied().unwrap_or(0) as u64;
        }
    }
    inter
}

/// pycocotools `iou` for one pair: intersection over union, or over `dt`'s area when `gt` is a
/// crowd region. Masks of different sizes are an error; two empty masks give 0.
pub fn iou(dt: &Rle, gt: &Rle, gt_is_crowd: bool) -> Result<f64> {
    if dt.size != gt.size {
        return Err(Error::Invalid(format!(
            "RLE sizes differ: {:?} vs {:?}",
            dt.size, gt.size
        )));
    }
    let inter = intersection(&dt.counts, &gt.counts) as f64;
    let (ad, ag) = (area(dt) as f64, area(gt) as f64);
    let denom = if gt_is_crowd { ad } else { ad + ag - inter };
    Ok(if denom > 0.0 { inter / denom } else { 0.0 })
}
