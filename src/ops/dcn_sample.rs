//! What the deformable im2col and its backward share (docs/model.md §3): the geometry of one
//! call, and the per-sample bilinear corners and weights of the forward's sampling rule.

use candle_core::{bail, CpuStorage, Layout, Result};
use rayon::prelude::*;

use super::{copy_contiguous, Acc};

/// Kernel size, padding and number of taps of the only DCN variant YOLACT++ uses.
pub(super) const K: usize = 3;
pub(super) const PAD: usize = 1;
pub(super) const TAPS: usize = K * K;
/// Channels per parallel task, and samples per cache block (36 B each: 9 KiB).
pub(super) const CH_BLOCK: usize = 8;
pub(super) const SAMPLE_BLOCK: usize = 256;

/// Validated sizes shared by the wrapper and the custom op.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
    pub stride: usize,
}

impl Geometry {
    pub(super) fn new(
        x: &[usize],
        offset: &[usize],
        mask: &[usize],
        stride: usize,
    ) -> Result<Self> {
        let (n, c, h, w) = match *x {
            [n, c, h, w] => (n, c, h, w),
            _ => bail!("deform conv: x must be (N, C, H, W), got {x:?}"),
        };
        if stride == 0 {
            bail!("deform conv: stride must be >= 1");
        }
        if h == 0 || w == 0 {
            bail!("deform conv: empty spatial size {h}x{w}");
        }
        let ho = (h + 2 * PAD - K) / stride + 1;
        let wo = (w + 2 * PAD - K) / stride + 1;
        if offset != [n, 2 * TAPS, ho, wo] {
            bail!(
                "deform conv: offset must be ({n}, {}, {ho}, {wo}) for x {x:?} and stride {stride}, got {offset:?}",
                2 * TAPS
            );
        }
        if mask != [n, TAPS, ho, wo] {
            bail!(
                "deform conv: mask must be ({n}, {TAPS}, {ho}, {wo}) for x {x:?} and stride {stride}, got {mask:?}"
            );
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            ho,
            wo,
            stride,
        })
    }
}

/// One bilinear sample, shared by every channel: four plane offsets and their weights (zero for
/// corners outside the image), plus the modulation scalar.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample<A> {
    pub idx: [u32; 4],
    pub wt: [A; 4],
    pub m: A,
}

/// Sampling positions and weights for all (tap, output pixel) pairs of image `b`, in row-major
/// (k, ho, wo) order, i.e. the column order within one channel.
pub(super) fn build_samples<A: Acc>(
    off: &[A],
    mask: &[A],
    g: &Geometry,
    b: usize,
) -> Vec<Sample<A>> {
    let p = g.ho * g.wo;
    let (h, w) = (g.h as isize, g.w as isize);
    let off = &off[b * 2 * TAPS * p..(b + 1) * 2 * TAPS * p];
    let mask = &mask[b * TAPS * p..(b + 1) * TAPS * p];
    (0..TAPS * p)
        .into_par_iter()
        .map(|kp| {
            let (k, pix) = (kp / p, kp % p);
            let (i, j) = (k / K, k % K);
            let (oy, ox) = (pix / g.wo, pix % g.wo);
            let dy = off[2 * k * p + pix];
            let dx = off[(2 * k + 1) * p + pix];
            let m = mask[k * p + pix];
            // Integer part first, then the offset, as the reference kernels do.
            let y = A::from_isize((oy * g.stride + i) as isize - PAD as isize) + dy;
            let x = A::from_isize((ox * g.stride + j) as isize - PAD as isize) + dx;
            let mut s = Sample {
                idx: [0; 4],
                wt: [A::ZERO; 4],
                m,
            };
            let neg_one = A::ZERO - A::ONE;
            // Written so that NaN coordinates fall through to the zero sample too.
            let inside = y > neg_one && x > neg_one && y < A::from_isize(h) && x < A::from_isize(w);
            if !inside {
                return s;
            }
            let y0 = y.floor_isize();
            let x0 = x.floor_isize();
            let ly = y - A::from_isize(y0);
            let lx = x - A::from_isize(x0);
            let (hy, hx) = (A::ONE - ly, A::ONE - lx);
            let corners = [
                (y0, x0, hy * hx),
                (y0, x0 + 1, hy * lx),
                (y0 + 1, x0, ly * hx),
                (y0 + 1, x0 + 1, ly * lx),
            ];
            for (q, &(cy, cx, cw)) in corners.iter().enumerate() {
                if cy >= 0 && cx >= 0 && cy < h && cx < w {
                    // The plane is at most u32::MAX elements (checked by the caller).
                    s.idx[q] = (cy * w + cx) as u32;
                    s.wt[q] = cw;
                }
            }
            s
        })
        .collect()
}

/// A contiguous version of a CPU operand and the start offset of its data.
pub(super) fn contig<'a>(
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<(std::borrow::Cow<'a, CpuStorage>, usize)> {
    match l.contiguous_offsets() {
        Some((start, _)) => Ok((std::borrow::Cow::Borrowed(s), start)),
        None => Ok((std::borrow::Cow::Owned(copy_contiguous(s, l)?.0), 0)),
    }
}
