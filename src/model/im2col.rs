//! Convolution as one im2col + GEMM per image. candle's CPU conv re-lays the input as NHWC and
//! gathers small tiles per call; building the (C·k·k, Ho·Wo) column matrix with row-slice copies and
//! handing it to a single large matmul keeps the GEMM in its efficient regime and writes NCHW
//! output directly.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Column matrix of one NCHW tensor: (N, C·k·k, Ho·Wo), row c·k·k + ky·k + kx (OIHW weight order).
struct Im2Col {
    k: usize,
    stride: usize,
    pad: usize,
}

impl Im2Col {
    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.pad - self.k) / self.stride + 1,
            (w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }

    /// Fills the k·k rows of one input channel plane.
    fn fill_channel(&self, plane: &[f32], h: usize, w: usize, rows: &mut [f32]) {
        let (ho, wo) = self.out_hw(h, w);
        let (k, s, p) = (self.k, self.stride, self.pad as isize);
        for (t, row) in rows.chunks_exact_mut(ho * wo).enumerate() {
            let (ky, kx) = ((t / k) as isize, (t % k) as isize);
            for oy in 0..ho {
                let dst = &mut row[oy * wo..(oy + 1) * wo];
                let iy = (oy * s) as isize + ky - p;
                if iy < 0 || iy >= h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                // Output columns whose input column ox·s + kx - p falls inside [0, w).
                let lo = if kx >= p {
                    0
                } else {
                    ((p - kx) as usize).div_ceil(s)
                };
                let hi_excl = {
                    let lim = w as isize - kx + p; // need ox·s < lim
                    if lim <= 0 {
                        0
                    } else {
                        ((lim as usize).div_ceil(s)).min(wo)
                    }
                };
                let lo = lo.min(hi_excl);
                dst[..lo].fill(0.0);
                dst[hi_excl..].fill(0.0);
                if s == 1 {
                    let start = (lo as isize + kx - p) as usize;
                    dst[lo..hi_excl].copy_from_slice(&src[start..start + hi_excl - lo]);
                } else {
                    for (ox, d) in dst[lo..hi_excl].iter_mut().enumerate() {
                        *d = src[((ox + lo) * s) + kx as usize - p as usize];
                    }
                }
            }
        }
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        if h == 0
            || w == 0
            || h + 2 * self.pad < self.k
            || w + 2 * self.pad < self.k
            || self.stride == 0
        {
            candle_core::bail!("im2col: input {h}x{w} too small for kernel {}", self.k);
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("im2col: only f32 is supported");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("im2col: input must be contiguous");
        };
        let data = &data[start..end];
        let (ho, wo) = self.out_hw(h, w);
        let kk = self.k * self.k;
        let mut out = vec![0f32; n * c * kk * ho * wo];
        out.par_chunks_exact_mut(kk * ho * wo)
            .zip(data.par_chunks_exact(h * w))
            .for_each(|(rows, plane)| self.fill_channel(plane, h, w, rows));
        Ok((CpuStorage::F32(out), Shape::from((n, c * kk, ho * wo))))
    }
}

/// conv2d(x, weight) for NCHW f32 `x` and OIHW `weight` (dilation 1, groups 1), no bias.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (o, ci, k, k2) = weight.dims4()?;
    if ci != c || k != k2 {
        candle_core::bail!(
            "conv2d: weight {:?} does not fit input {:?}",
            weight.dims(),
            x.dims()
        );
    }
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return x.conv2d(weight, pad, stride, 1, 1);
    }
    let op = Im2Col { k, stride, pad };
    let (ho, wo) = op.out_hw(h, w);
    let w2 = weight.reshape((o, c * k * k))?;
    let y = if k == 1 && stride == 1 && pad == 0 {
        // A 1x1 conv is already a GEMM over the contiguous (C, H·W) planes.
        w2.broadcast_matmul(&x.contiguous()?.reshape((n, c, h * w))?)?
    } else if n == 1 {
        let cols = x.contiguous()?.apply_op1_no_bwd(&op)?;
        w2.broadcast_matmul(&cols)?
    } else {
        // One image at a time: the column matrix is k·k times the input (175 MB for the 138x138
        // protonet conv), so a whole batch of them would multiply the peak memory.
        let per_image = (0..n)
            .map(|i| {
                let cols = x.narrow(0, i, 1)?.contiguous()?.apply_op1_no_bwd(&op)?;
                w2.broadcast_matmul(&cols)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&per_image, 0)?
    };
    y.reshape((n, o, ho, wo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd};

    #[test]
    fn im2col_conv_matches_naive_conv_for_all_geometries() {
        for &(k, s, p, h, w) in &[
            (3, 1, 1, 7, 9),
            (3, 2, 1, 7, 9),
            (3, 2, 1, 8, 6),
            (3, 2, 0, 9, 11),
            (7, 2, 3, 13, 10),
            (1, 1, 0, 5, 4),
            (1, 2, 0, 5, 7),
            (3, 1, 1, 1, 1),
            (3, 2, 1, 1, 2),
        ] {
            let x = tu::rand_input(2, 3, h, w);
            let wt = tu::rand_input(5, 3, k, k);
            let got = conv2d(&x, &wt, s, p).unwrap();
            let want = tu::conv(&Nd::from_tensor(&x), &Nd::from_tensor(&wt), None, s, p);
            assert_eq!(
                got.dims(),
                &[2, 5, want.h, want.w],
                "k{k} s{s} p{p} {h}x{w}"
            );
            let err = tu::rel_err(&got, &want);
            assert!(err < 1e-5, "k{k} s{s} p{p} {h}x{w}: {err}");
        }
    }
}
