//! Modulated deformable convolution (DCNv2), docs/model.md §3.
//!
//! Split in two so that only the gather needs a device kernel: [`DeformIm2col`] builds the
//! modulated columns as a custom op, and the GEMM + bias use ordinary candle ops, which already run
//! on every device.

use candle_core::{
    backend::BackendStorage, bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use super::dcn_bwd::{DeformCol2im, DeformCol2imCoord};
use super::dcn_sample::{build_samples, contig, Geometry, CH_BLOCK, K, SAMPLE_BLOCK, TAPS};
use super::Acc;

/// out = bias + weight · deform_im2col(x, offset, mask)
///
/// * `x`: (N, C, H, W); `offset`: (N, 18, Ho, Wo) interleaved (dy, dx) per tap; `mask`: (N, 9, Ho, Wo),
///   already passed through a sigmoid; `weight`: (O, C, 3, 3); `bias`: (O,).
/// * kernel 3x3, padding 1, dilation 1, `stride` >= 1; Ho = (H - 1) / stride + 1.
/// * f32 or f64 on the CPU (x, offset and mask of one dtype); other devices need a `cuda_fwd`.
/// * differentiable in x, offset, mask, weight and bias (backward rules: [`super::dcn_bwd`]);
///   operands that track no gradient (inference) record nothing.
///
/// Out-of-image samples are computed as 0 · x[0], so a non-finite x[0] (a broken input anyway)
/// leaks NaN where the reference kernels give 0.
pub fn modulated_deform_conv2d(
    x: &Tensor,
    offset: &Tensor,
    mask: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
) -> Result<Tensor> {
    let geo = Geometry::new(x.dims(), offset.dims(), mask.dims(), stride)?;
    let (o, wc, kh, kw) = match *weight.dims() {
        [o, c, kh, kw] => (o, c, kh, kw),
        _ => bail!(
            "modulated_deform_conv2d: weight must be (O, C, 3, 3), got {:?}",
            weight.dims()
        ),
    };
    if wc != geo.c || kh != K || kw != K {
        bail!(
            "modulated_deform_conv2d: weight {:?} does not fit input channels {} and a 3x3 kernel",
            weight.dims(),
            geo.c
        );
    }
    if bias.dims() != [o] {
        bail!(
            "modulated_deform_conv2d: bias must be ({o},), got {:?}",
            bias.dims()
        );
    }
    // The device kernel reads packed buffers; `offset` and `mask` are usually channel slices.
    let (x, offset, mask) = if x.device().is_cpu() {
        (x.clone(), offset.clone(), mask.clone())
    } else {
        (x.contiguous()?, offset.contiguous()?, mask.contiguous()?)
    };
    let cols = x.apply_op3(&offset, &mask, DeformIm2col { stride })?;
    let wmat = weight.reshape((o, geo.c * TAPS))?;
    // One GEMM per image keeps the weight un-broadcast (N is 1 in practice).
    let per_image = (0..geo.n)
        .map(|b| wmat.matmul(&cols.get(b)?))
        .collect::<Result<Vec<_>>>()?;
    let out = Tensor::stack(&per_image, 0)?;
    out.broadcast_add(&bias.reshape((1, o, 1))?)?
        .reshape((geo.n, o, geo.ho, geo.wo))
}

/// Deformable, modulated im2col: (x, offset, mask) -> columns (N, C·9, Ho·Wo), row c·9 + k.
///
/// Sampling rule (docs/model.md §3): tap k = i·3 + j reads x at
/// h = ho·s − 1 + i + Δy, w = wo·s − 1 + j + Δx bilinearly, with zero outside (h ≤ −1, w ≤ −1,
/// h ≥ H, w ≥ W) and per-corner zero padding, and multiplies by mask[k].
#[derive(Debug, Clone, Copy)]
pub struct DeformIm2col {
    pub stride: usize,
}

/// Columns for one dtype whose storage type is also its arithmetic type.
fn im2col<A: Acc + Default>(x: &[A], off: &[A], mask: &[A], g: &Geometry) -> Vec<A> {
    let p = g.ho * g.wo;
    let plane = g.h * g.w;
    let mut cols = vec![A::ZERO; g.n * g.c * TAPS * p];
    for b in 0..g.n {
        let samples = build_samples(off, mask, g, b);
        let x_img = &x[b * g.c * plane..(b + 1) * g.c * plane];
        let cols_img = &mut cols[b * g.c * TAPS * p..(b + 1) * g.c * TAPS * p];
        // Rows c·9 .. c·9+9 of one channel are contiguous, so a group of channels is one chunk.
        // Within a group, a block of samples is reused for every channel while it is in L1.
        cols_img
            .par_chunks_mut(CH_BLOCK * TAPS * p)
            .zip(x_img.par_chunks(CH_BLOCK * plane))
            .for_each(|(out, xs)| {
                let mut start = 0;
                while start < samples.len() {
                    let end = (start + SAMPLE_BLOCK).min(samples.len());
                    let block = &samples[start..end];
                    for (och, xp) in out.chunks_mut(TAPS * p).zip(xs.chunks(plane)) {
                        for (o, s) in och[start..end].iter_mut().zip(block) {
                            // Zero-weight corners point at index 0, which always exists.
                            let v = s.wt[0] * xp[s.idx[0] as usize]
                                + s.wt[1] * xp[s.idx[1] as usize]
                                + s.wt[2] * xp[s.idx[2] as usize]
                                + s.wt[3] * xp[s.idx[3] as usize];
                            *o = s.m * v;
                        }
                    }
                    start = end;
                }
            });
    }
    cols
}

impl CustomOp3 for DeformIm2col {
    fn name(&self) -> &'static str {
        "deform-im2col-3x3"
    }

    /// Gradients of x, offset and mask (rules in [`super::dcn_bwd`]).
    fn bwd(
        &self,
        x: &Tensor,
        offset: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, w) = x.dims4()?;
        let stride = self.stride;
        let grad = grad.contiguous()?;
        let (offset, mask) = (offset.contiguous()?, mask.contiguous()?);
        let gx = grad.apply_op3_no_bwd(&offset, &mask, &DeformCol2im { stride, h, w })?;
        // The offset/mask gradient needs four operands; offset and mask travel as one.
        let offmask = Tensor::cat(&[&offset, &mask], 1)?;
        let gom =
            x.contiguous()?
                .apply_op3_no_bwd(&offmask, &grad, &DeformCol2imCoord { stride })?;
        Ok((
            Some(gx),
            Some(gom.narrow(1, 0, 2 * TAPS)?),
            Some(gom.narrow(1, 2 * TAPS, TAPS)?),
        ))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), l3.dims(), self.stride)?;
        if g.h * g.w > u32::MAX as usize {
            bail!("deform conv: plane {}x{} too large", g.h, g.w);
        }
        let shape = Shape::from((g.n, g.c * TAPS, g.ho * g.wo));
        let ((xs, xo), (os, oo), (ms, mo)) = (contig(s1, l1)?, contig(s2, l2)?, contig(s3, l3)?);
        let out = match (xs.as_ref(), os.as_ref(), ms.as_ref()) {
            (CpuStorage::F32(x), CpuStorage::F32(o), CpuStorage::F32(m)) => {
                CpuStorage::F32(im2col(&x[xo..], &o[oo..], &m[mo..], &g))
            }
            (CpuStorage::F64(x), CpuStorage::F64(o), CpuStorage::F64(m)) => {
                CpuStorage::F64(im2col(&x[xo..], &o[oo..], &m[mo..], &g))
            }
            _ => bail!(
                "deform conv: x, offset and mask must all be f32 or all f64, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), l3.dims(), self.stride)?;
        let dims = crate::cuda::ops::DeformDims {
            n: g.n,
            c: g.c,
            h: g.h,
            w: g.w,
            ho: g.ho,
            wo: g.wo,
            stride: g.stride,
        };
        let out = crate::cuda::ops::deform_im2col(dims, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from((g.n, g.c * TAPS, g.ho * g.wo))))
    }
}
