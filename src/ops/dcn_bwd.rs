//! Backward of the deformable, modulated im2col ([`super::dcn::DeformIm2col`]), docs/model.md §3.
//!
//! Given the gradient G of the columns (N, C·9, Ho·Wo), two custom ops give
//!
//! * [`DeformCol2im`]: ∂/∂x, scattering m·w_q·G to the four bilinear corners of every sample;
//! * [`DeformCol2imCoord`]: ∂/∂offset and ∂/∂mask, one sum over the channels per sample, packed
//!   as (N, 27, Ho, Wo): channels 2k / 2k+1 the (dy, dx) of tap k, channel 18 + k its mask.
//!
//! The weight and bias of a deformable conv get their gradients from the ordinary matmul and add
//! that follow the im2col in [`super::dcn::modulated_deform_conv2d`].
//!
//! Gradient rules (torchvision's `deform_conv2d` CPU/CUDA backward, which our training reference
//! uses):
//!
//! * mask: Σ_c G·v_c, with v_c the forward's bilinear value (0 for samples with y ≤ −1, x ≤ −1,
//!   y ≥ H or x ≥ W).
//! * offsets: with y₀ = ⌊y⌋, x₀ = ⌊x⌋, l_y = y − y₀, l_x = x − x₀ and corners outside the image
//!   read as 0,
//!   ∂v/∂y = l_x·(v(y₀+1, x₀+1) − v(y₀, x₀+1)) + (1 − l_x)·(v(y₀+1, x₀) − v(y₀, x₀)) and
//!   ∂v/∂x = l_y·(v(y₀+1, x₀+1) − v(y₀+1, x₀)) + (1 − l_y)·(v(y₀, x₀+1) − v(y₀, x₀)),
//!   each times m·G and summed over the channels. At integer positions (every position at step 0,
//!   where the offsets are 0) this is the floor-based forward difference.
//! * samples exactly on −1 (top row / left column with padding 1 and zero offsets): the formula
//!   above applies without any inside test, so ∂/∂Δy there is v(0, x) − 0, as torchvision;
//!   DCNv2's original CUDA code returns 0 for every position ≤ −1, which we do not follow.
//! * input: m·w_q·G to each corner q inside the image (corners with weight 0 add 0).
//! * non-finite coordinates (a NaN offset) contribute nothing to the offset gradient.
//!
//! The CPU ops are deterministic (each output element is summed in one fixed order). The CUDA
//! input gradient (kernels/dcn.cu `deform_col2im_*`) accumulates with atomicAdd, so its f32
//! rounding depends on the order the GPU runs the threads in; the offset/mask kernel is
//! deterministic.

use candle_core::{backend::BackendStorage, bail, CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::dcn_sample::{build_samples, contig, Geometry, CH_BLOCK, K, PAD, TAPS};
use super::Acc;

/// Gradient of the input from the columns' gradient: (grad_cols, offset, mask) -> (N, C, H, W).
#[derive(Debug, Clone, Copy)]
pub struct DeformCol2im {
    pub stride: usize,
    /// The input's spatial size (not recoverable from the output size under stride 2).
    pub h: usize,
    pub w: usize,
}

/// Gradient of the offsets and the mask: (x, offset‖mask (N, 27, Ho, Wo), grad_cols) ->
/// (N, 27, Ho, Wo) as [∂offset (18) | ∂mask (9)].
#[derive(Debug, Clone, Copy)]
pub struct DeformCol2imCoord {
    pub stride: usize,
}

/// Sizes of one backward: the forward's geometry from the columns' gradient and the input size.
fn geometry_from_cols(
    cols: &[usize],
    offset: &[usize],
    mask: &[usize],
    (h, w): (usize, usize),
    stride: usize,
) -> Result<Geometry> {
    let (n, rows) = match *cols {
        [n, rows, _] => (n, rows),
        _ => bail!("deform col2im: grad must be (N, C·9, Ho·Wo), got {cols:?}"),
    };
    if rows % TAPS != 0 {
        bail!("deform col2im: grad rows {rows} are not a multiple of {TAPS}");
    }
    let g = Geometry::new(&[n, rows / TAPS, h, w], offset, mask, stride)?;
    if cols[2] != g.ho * g.wo {
        bail!(
            "deform col2im: grad has {} columns, the geometry {}x{}",
            cols[2],
            g.ho,
            g.wo
        );
    }
    Ok(g)
}

/// ∂x: each channel's plane gathers from its own nine column rows, so channel blocks run in
/// parallel without atomics, and every element is summed in (tap, pixel) order.
fn col2im<A: Acc + Default>(gcol: &[A], off: &[A], mask: &[A], g: &Geometry) -> Vec<A> {
    let p = g.ho * g.wo;
    let plane = g.h * g.w;
    let mut gx = vec![A::ZERO; g.n * g.c * plane];
    for b in 0..g.n {
        let samples = build_samples(off, mask, g, b);
        let gcol_img = &gcol[b * g.c * TAPS * p..(b + 1) * g.c * TAPS * p];
        let gx_img = &mut gx[b * g.c * plane..(b + 1) * g.c * plane];
        gx_img
            .par_chunks_mut(CH_BLOCK * plane)
            .zip(gcol_img.par_chunks(CH_BLOCK * TAPS * p))
            .for_each(|(out, gc)| {
                for (gxp, rows) in out.chunks_mut(plane).zip(gc.chunks(TAPS * p)) {
                    for (s, &gv) in samples.iter().zip(rows) {
                        // Outside corners have weight 0 and index 0: they add an exact 0.
                        for q in 0..4 {
                            gxp[s.idx[q] as usize] = gxp[s.idx[q] as usize] + s.m * s.wt[q] * gv;
                        }
                    }
                }
            });
    }
    gx
}

/// ∂offset and ∂mask of image `b`, tap `k`, output pixel `pix`: (∂dy, ∂dx, ∂m).
fn coord_grad<A: Acc>(
    x_img: &[A],
    gcol_img: &[A],
    (dy, dx, m): (A, A, A),
    g: &Geometry,
    (k, pix): (usize, usize),
) -> (A, A, A) {
    let p = g.ho * g.wo;
    let plane = g.h * g.w;
    let (i, j) = (k / K, k % K);
    let (oy, ox) = (pix / g.wo, pix % g.wo);
    let y = A::from_isize((oy * g.stride + i) as isize - PAD as isize) + dy;
    let x = A::from_isize((ox * g.stride + j) as isize - PAD as isize) + dx;
    let (h, w) = (g.h as isize, g.w as isize);
    let neg_one = A::ZERO - A::ONE;
    // Outside [-1, H) x [-1, W) every corner is outside the image, so all three gradients are 0;
    // the comparisons also reject NaN.
    if !(y >= neg_one && x >= neg_one && y < A::from_isize(h) && x < A::from_isize(w)) {
        return (A::ZERO, A::ZERO, A::ZERO);
    }
    // The forward's value rule: exactly -1 reads nothing.
    let inside = y > neg_one && x > neg_one;
    let (y0, x0) = (y.floor_isize(), x.floor_isize());
    let ly = y - A::from_isize(y0);
    let lx = x - A::from_isize(x0);
    let (hy, hx) = (A::ONE - ly, A::ONE - lx);
    let at = |cy: isize, cx: isize| -> Option<usize> {
        (cy >= 0 && cx >= 0 && cy < h && cx < w).then(|| (cy * w + cx) as usize)
    };
    let corners = [
        at(y0, x0),
        at(y0, x0 + 1),
        at(y0 + 1, x0),
        at(y0 + 1, x0 + 1),
    ];
    let (mut gdy, mut gdx, mut gm) = (A::ZERO, A::ZERO, A::ZERO);
    for c in 0..g.c {
        let xp = &x_img[c * plane..(c + 1) * plane];
        let read = |q: usize| corners[q].map_or(A::ZERO, |o| xp[o]);
        let (v00, v01, v10, v11) = (read(0), read(1), read(2), read(3));
        let gv = gcol_img[(c * TAPS + k) * p + pix];
        if inside {
            let v = hy * hx * v00 + hy * lx * v01 + ly * hx * v10 + ly * lx * v11;
            gm = gm + gv * v;
        }
        let wy = lx * (v11 - v01) + hx * (v10 - v00);
        let wx = ly * (v11 - v10) + hy * (v01 - v00);
        gdy = gdy + m * wy * gv;
        gdx = gdx + m * wx * gv;
    }
    (gdy, gdx, gm)
}

/// ∂offset‖∂mask for every image, (N, 27, Ho, Wo).
fn col2im_coord<A: Acc + Default>(x: &[A], offmask: &[A], gcol: &[A], g: &Geometry) -> Vec<A> {
    let p = g.ho * g.wo;
    let plane = g.h * g.w;
    let mut out = vec![A::ZERO; g.n * 3 * TAPS * p];
    for b in 0..g.n {
        let x_img = &x[b * g.c * plane..(b + 1) * g.c * plane];
        let gcol_img = &gcol[b * g.c * TAPS * p..(b + 1) * g.c * TAPS * p];
        let om = &offmask[b * 3 * TAPS * p..(b + 1) * 3 * TAPS * p];
        let grads: Vec<(A, A, A)> = (0..TAPS * p)
            .into_par_iter()
            .map(|kp| {
                let (k, pix) = (kp / p, kp % p);
                let inputs = (
                    om[2 * k * p + pix],
                    om[(2 * k + 1) * p + pix],
                    om[(2 * TAPS + k) * p + pix],
                );
                coord_grad(x_img, gcol_img, inputs, g, (k, pix))
            })
            .collect();
        let o = &mut out[b * 3 * TAPS * p..(b + 1) * 3 * TAPS * p];
        for (kp, &(gdy, gdx, gm)) in grads.iter().enumerate() {
            let (k, pix) = (kp / p, kp % p);
            o[2 * k * p + pix] = gdy;
            o[(2 * k + 1) * p + pix] = gdx;
            o[(2 * TAPS + k) * p + pix] = gm;
        }
    }
    out
}

/// Splits a packed (N, 27, Ho, Wo) offset‖mask shape into the forward's two shapes.
fn split_offmask(om: &[usize]) -> Result<([usize; 4], [usize; 4])> {
    match *om {
        [n, ch, ho, wo] if ch == 3 * TAPS => Ok(([n, 2 * TAPS, ho, wo], [n, TAPS, ho, wo])),
        _ => bail!("deform col2im coord: offset‖mask must be (N, 27, Ho, Wo), got {om:?}"),
    }
}

fn dtype_error(op: &str, a: &CpuStorage, b: &CpuStorage, c: &CpuStorage) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{op}: operands must all be f32 or all f64, got {:?}, {:?}, {:?}",
        a.dtype(),
        b.dtype(),
        c.dtype()
    ))
}

impl CustomOp3 for DeformCol2im {
    fn name(&self) -> &'static str {
        "deform-col2im-3x3"
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
        let g = geometry_from_cols(
            l1.dims(),
            l2.dims(),
            l3.dims(),
            (self.h, self.w),
            self.stride,
        )?;
        if g.h * g.w > u32::MAX as usize {
            bail!("deform col2im: plane {}x{} too large", g.h, g.w);
        }
        let ((gs, go), (os, oo), (ms, mo)) = (contig(s1, l1)?, contig(s2, l2)?, contig(s3, l3)?);
        let out = match (gs.as_ref(), os.as_ref(), ms.as_ref()) {
            (CpuStorage::F32(gc), CpuStorage::F32(o), CpuStorage::F32(m)) => {
                CpuStorage::F32(col2im(&gc[go..], &o[oo..], &m[mo..], &g))
            }
            (CpuStorage::F64(gc), CpuStorage::F64(o), CpuStorage::F64(m)) => {
                CpuStorage::F64(col2im(&gc[go..], &o[oo..], &m[mo..], &g))
            }
            _ => return Err(dtype_error("deform col2im", s1, s2, s3)),
        };
        Ok((out, Shape::from((g.n, g.c, g.h, g.w))))
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
        let g = geometry_from_cols(
            l1.dims(),
            l2.dims(),
            l3.dims(),
            (self.h, self.w),
            self.stride,
        )?;
        let out = crate::cuda::ops::deform_col2im(dims(&g), (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from((g.n, g.c, g.h, g.w))))
    }
}

impl CustomOp3 for DeformCol2imCoord {
    fn name(&self) -> &'static str {
        "deform-col2im-coord-3x3"
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
        let (od, md) = split_offmask(l2.dims())?;
        let g = Geometry::new(l1.dims(), &od, &md, self.stride)?;
        if l3.dims() != [g.n, g.c * TAPS, g.ho * g.wo] {
            bail!(
                "deform col2im coord: grad must be ({}, {}, {}), got {:?}",
                g.n,
                g.c * TAPS,
                g.ho * g.wo,
                l3.dims()
            );
        }
        let ((xs, xo), (os, oo), (gs, go)) = (contig(s1, l1)?, contig(s2, l2)?, contig(s3, l3)?);
        let out = match (xs.as_ref(), os.as_ref(), gs.as_ref()) {
            (CpuStorage::F32(x), CpuStorage::F32(o), CpuStorage::F32(gc)) => {
                CpuStorage::F32(col2im_coord(&x[xo..], &o[oo..], &gc[go..], &g))
            }
            (CpuStorage::F64(x), CpuStorage::F64(o), CpuStorage::F64(gc)) => {
                CpuStorage::F64(col2im_coord(&x[xo..], &o[oo..], &gc[go..], &g))
            }
            _ => return Err(dtype_error("deform col2im coord", s1, s2, s3)),
        };
        Ok((out, Shape::from((g.n, 3 * TAPS, g.ho, g.wo))))
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
        let (od, md) = split_offmask(l2.dims())?;
        let g = Geometry::new(l1.dims(), &od, &md, self.stride)?;
        if l3.dims() != [g.n, g.c * TAPS, g.ho * g.wo] {
            bail!(
                "deform col2im coord: grad must be ({}, {}, {}), got {:?}",
                g.n,
                g.c * TAPS,
                g.ho * g.wo,
                l3.dims()
            );
        }
        let out = crate::cuda::ops::deform_col2im_coord(dims(&g), (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from((g.n, 3 * TAPS, g.ho, g.wo))))
    }
}

#[cfg(feature = "cuda")]
fn dims(g: &Geometry) -> crate::cuda::ops::DeformDims {
    crate::cuda::ops::DeformDims {
        n: g.n,
        c: g.c,
        h: g.h,
        w: g.w,
        ho: g.ho,
        wo: g.wo,
        stride: g.stride,
    }
}
