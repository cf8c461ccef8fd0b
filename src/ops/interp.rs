//! Bilinear resize as PyTorch's `align_corners=False` without antialias (docs/model.md §9.3).
//!
//! candle's own `upsample_bilinear2d` is not guaranteed to follow PyTorch's half-pixel rule, edge
//! clamping and rounding order, and the mask threshold at 0.5 is sensitive to all three, so the
//! formula is written out here as a custom op.

use candle_core::{
    backend::BackendStorage, bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape,
    Tensor, WithDType,
};
use rayon::prelude::*;

use super::{copy_contiguous, Acc};

/// Resizes an (N, C, H, W) tensor to (N, C, out_h, out_w) exactly like
/// `F.interpolate(x, size=(out_h, out_w), mode='bilinear', align_corners=False)`.
///
/// f32 and f64 are computed in their own precision; f16 and bf16 are computed in f32 and rounded
/// once, as PyTorch's opmath does.
///
/// Agreement with PyTorch is to about 1 ulp, not bit-exact: its CPU build picks a different kernel
/// by layout and thread count, and its AVX2 variant contracts parts of the formula into FMAs
/// (measured: max |Δ| 1.2e-6 on inputs in [-2, 2), see tests/it/ops.rs).
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    if x.rank() != 4 {
        bail!(
            "resize_bilinear: expected an (N, C, H, W) tensor, got shape {:?}",
            x.dims()
        );
    }
    if out_h == 0 || out_w == 0 {
        bail!("resize_bilinear: output size must be positive, got {out_h}x{out_w}");
    }
    let (_, _, h, w) = x.dims4()?;
    if h == 0 || w == 0 {
        bail!("resize_bilinear: input has an empty spatial size {h}x{w}");
    }
    let op = ResizeBilinear { out_h, out_w };
    if x.device().is_cpu() {
        x.apply_op1(op)
    } else {
        // The device kernel reads packed planes.
        x.contiguous()?.apply_op1(op)
    }
}

/// Resizes `src`, contiguous (h, w) f32 planes, to (out_h, out_w) and returns `value > threshold`
/// as 0/1 bytes, plane after plane. The same arithmetic as [`resize_bilinear`], without the f32
/// output buffer: for full-frame masks that buffer's memory traffic costs more than the maths.
pub fn resize_threshold_planes(
    src: &[f32],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    threshold: f32,
) -> Result<Vec<u8>> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 || src.len() % (h * w) != 0 {
        bail!(
            "resize_threshold_planes: {} values do not form {h}x{w} planes, or an empty size \
             ({out_h}x{out_w})",
            src.len()
        );
    }
    Ok(resize_planes::<f32, u8, f32>(
        src,
        h,
        w,
        out_h,
        out_w,
        |v| v,
        |a| u8::from(a > threshold),
    ))
}

/// (x0, y0, cols, rows) of an output window.
pub type Window = (usize, usize, usize, usize);

/// Below this a soft-mask value cannot lift a bilinear sample above a 0.5 threshold: a sample
/// is a convex combination of four values, so if all four are at most 0.25 it is at most
/// 0.25 (1 + a few ulps). Only source pixels above it can make foreground.
const SUPPORT_LEVEL: f32 = 0.25;

/// [`resize_threshold_planes`] for one (h, w) plane, computing only the window of the output
/// whose bilinear taps reach a source pixel above 0.25 (a threshold of at least 0.5 keeps this
/// exact: outside the window every sample is below it). Returns the window (x0, y0, cols,
/// rows) and its rows*cols bytes, which are bit-identical to the same pixels of the full resize;
/// an empty window when no pixel can pass.
pub fn resize_threshold_window(
    plane: &[f32],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    threshold: f32,
) -> Result<(Window, Vec<u8>)> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 || plane.len() != h * w {
        bail!(
            "resize_threshold_window: {} values are not one {h}x{w} plane, or an empty size \
             ({out_h}x{out_w})",
            plane.len()
        );
    }
    // Written so that a NaN threshold is refused too.
    if threshold
        .partial_cmp(&(2.0 * SUPPORT_LEVEL))
        .is_none_or(|o| o.is_lt())
    {
        bail!("resize_threshold_window: threshold {threshold} is below 0.5");
    }
    // Bounding box of the source pixels above the support level.
    let (mut sy0, mut sy1, mut sx0, mut sx1) = (usize::MAX, 0, usize::MAX, 0);
    for (r, row) in plane.chunks(w).enumerate() {
        let above = |v: &f32| *v > SUPPORT_LEVEL;
        if let (Some(first), Some(last)) = (row.iter().position(above), row.iter().rposition(above))
        {
            sy0 = sy0.min(r);
            sy1 = r;
            sx0 = sx0.min(first);
            sx1 = sx1.max(last);
        }
    }
    if sy0 == usize::MAX {
        return Ok(((0, 0, 0, 0), Vec::new()));
    }
    let ys = axis_taps::<f32>(h, out_h);
    let xs = axis_taps::<f32>(w, out_w);
    // Output coordinates with a tap in [lo, hi]; taps never decrease along an axis, so this is
    // one interval.
    let span = |taps: &[Tap<f32>], lo: usize, hi: usize| {
        let hits = |t: &Tap<f32>| (lo..=hi).contains(&t.i0) || (lo..=hi).contains(&t.i1);
        let a = taps.iter().position(hits).unwrap_or(0);
        let b = taps.iter().rposition(hits).map_or(a, |b| b + 1);
        (a, b)
    };
    let (oy0, oy1) = span(&ys, sy0, sy1);
    let (ox0, ox1) = span(&xs, sx0, sx1);
    let cols = ox1 - ox0;
    let mut out = vec![0u8; (oy1 - oy0) * cols];
    let mut rows = RowCache::new(cols);
    for (out_row, ty) in out.chunks_mut(cols.max(1)).zip(&ys[oy0..oy1]) {
        let fill = |row: usize, buf: &mut [f32]| {
            let r = &plane[row * w..(row + 1) * w];
            for (b, tx) in buf.iter_mut().zip(&xs[ox0..ox1]) {
                *b = r[tx.i0] * tx.l0 + r[tx.i1] * tx.l1;
            }
        };
        let (t0, t1) = rows.pair(ty.i0, ty.i1, fill);
        for ((o, &a), &b) in out_row.iter_mut().zip(t0).zip(t1) {
            *o = u8::from(a * ty.l0 + b * ty.l1 > threshold);
        }
    }
    Ok(((ox0, oy0, cols, oy1 - oy0), out))
}

/// The custom op behind [`resize_bilinear`]; exposed so a device kernel can be added later without
/// touching callers.
#[derive(Debug, Clone, Copy)]
pub struct ResizeBilinear {
    pub out_h: usize,
    pub out_w: usize,
}

/// Source indices and weights for one output coordinate along one axis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tap<A> {
    pub i0: usize,
    pub i1: usize,
    pub l0: A,
    pub l1: A,
}

/// Per-axis source taps, PyTorch's `area_pixel_compute_scale` / `area_pixel_compute_source_index`
/// / `guard_index_and_lambda` for `align_corners=False` in size mode:
/// scale = in / out (in the opmath type), src = max(scale·(dst + 0.5) − 0.5, 0),
/// i0 = min(⌊src⌋, in − 1), i1 = i0 + (i0 < in − 1), λ1 = clamp(src − i0, 0, 1), λ0 = 1 − λ1.
pub(crate) fn axis_taps<A: Acc>(in_size: usize, out_size: usize) -> Vec<Tap<A>> {
    let scale = A::from_usize(in_size) / A::from_usize(out_size);
    (0..out_size)
        .map(|dst| {
            let src = scale * (A::from_usize(dst) + A::HALF) - A::HALF;
            let src = if src < A::ZERO { A::ZERO } else { src };
            let i0 = src.floor_index().min(in_size - 1);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            let mut l1 = src - A::from_usize(i0);
            if l1 < A::ZERO {
                l1 = A::ZERO;
            }
            if l1 > A::ONE {
                l1 = A::ONE;
            }
            Tap {
                i0,
                i1,
                l0: A::ONE - l1,
                l1,
            }
        })
        .collect()
}

/// [`resize_bilinear`] of packed (h, w) byte planes (an image's channels) to f32 planes, the
/// same arithmetic as on their f32 values: the preprocessing of a frame in one pass per plane
/// instead of a conversion, a copy and a resize.
pub fn resize_u8_planes(
    src: &[u8],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Result<Vec<f32>> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 || src.len() % (h * w) != 0 {
        bail!(
            "resize_u8_planes: {} bytes do not form {h}x{w} planes, or an empty size \
             ({out_h}x{out_w})",
            src.len()
        );
    }
    Ok(resize_planes::<u8, f32, f32>(
        src,
        h,
        w,
        out_h,
        out_w,
        f32::from,
        |a| a,
    ))
}

/// Resizes `planes` contiguous (h, w) planes from `src` into a new buffer of
/// planes × out_h × out_w, converting each element to the accumulation type `A` and back.
fn resize_planes<T, U, A>(
    src: &[T],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    to: impl Fn(T) -> A + Sync,
    from: impl Fn(A) -> U + Sync,
) -> Vec<U>
where
    T: Copy + Send + Sync,
    U: Copy + Send + Sync + Default,
    A: Acc,
{
    let ys = axis_taps::<A>(h, out_h);
    let xs = axis_taps::<A>(w, out_w);
    let mut dst = vec![U::default(); (src.len() / (h * w)) * out_h * out_w];
    dst.par_chunks_mut(out_h * out_w)
        .zip(src.par_chunks(h * w))
        .for_each(|(out, plane)| {
            // The x-interpolated source rows do not depend on the output row, so the two in use
            // are cached; the arithmetic (and so the rounding) is unchanged.
            let mut rows = RowCache::new(out_w);
            for (out_row, ty) in out.chunks_mut(out_w).zip(ys.iter()) {
                let fill = |row: usize, buf: &mut [A]| {
                    let r = &plane[row * w..(row + 1) * w];
                    for (b, tx) in buf.iter_mut().zip(xs.iter()) {
                        *b = to(r[tx.i0]) * tx.l0 + to(r[tx.i1]) * tx.l1;
                    }
                };
                let (t0, t1) = rows.pair(ty.i0, ty.i1, fill);
                for ((o, &a), &b) in out_row.iter_mut().zip(t0).zip(t1) {
                    *o = from(a * ty.l0 + b * ty.l1);
                }
            }
        });
    dst
}

/// Two x-interpolated source rows, keyed by source row index.
struct RowCache<A> {
    key: [usize; 2],
    buf: [Vec<A>; 2],
}

impl<A: Acc> RowCache<A> {
    fn new(len: usize) -> Self {
        Self {
            key: [usize::MAX; 2],
            buf: [vec![A::ZERO; len], vec![A::ZERO; len]],
        }
    }

    /// Rows `r0` and `r1` (r0 <= r1), computing missing ones with `fill`.
    fn pair(&mut self, r0: usize, r1: usize, fill: impl Fn(usize, &mut [A])) -> (&[A], &[A]) {
        let s0 = match self.key.iter().position(|&k| k == r0) {
            Some(s) => s,
            None => {
                // Evict the slot that does not hold r1, so r1 survives when it is cached.
                let s = if self.key[0] == r1 { 1 } else { 0 };
                fill(r0, &mut self.buf[s]);
                self.key[s] = r0;
                s
            }
        };
        let s1 = if r1 == r0 {
            s0
        } else if self.key[1 - s0] == r1 {
            1 - s0
        } else {
            fill(r1, &mut self.buf[1 - s0]);
            self.key[1 - s0] = r1;
            1 - s0
        };
        (&self.buf[s0], &self.buf[s1])
    }
}

/// Returns the contiguous slice of a CPU buffer described by `layout`, or an error for strided
/// layouts (the public wrapper makes the input contiguous first).
fn contiguous_slice<'a, T: WithDType>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("resize_bilinear: input must be contiguous"),
    }
}

/// The (out, in) matrix of one axis's interpolation: row `dst` holds λ0 at i0 and λ1 at i1 (summed
/// when they coincide), with the forward's own taps, in the accumulation type of `dtype`.
fn axis_matrix(in_size: usize, out_size: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f64; out_size * in_size];
    let mut put = |dst: usize, i0: usize, i1: usize, l0: f64, l1: f64| {
        m[dst * in_size + i0] += l0;
        m[dst * in_size + i1] += l1;
    };
    if dtype == DType::F64 {
        for (d, t) in axis_taps::<f64>(in_size, out_size).iter().enumerate() {
            put(d, t.i0, t.i1, t.l0, t.l1);
        }
    } else {
        for (d, t) in axis_taps::<f32>(in_size, out_size).iter().enumerate() {
            put(d, t.i0, t.i1, t.l0 as f64, t.l1 as f64);
        }
    }
    let acc = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    Tensor::from_vec(m, (out_size, in_size), device)?.to_dtype(acc)
}

/// The resize is y = Ry · x · Rxᵀ per plane, so its adjoint is dx = Ryᵀ · dy · Rx: two matmuls
/// on any device, with the forward's taps (so it is the exact transpose of what the forward did,
/// up to the summation order).
fn resize_bilinear_bwd(grad: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (n, c, oh, ow) = grad.dims4()?;
    let (dtype, device) = (grad.dtype(), grad.device());
    let ry = axis_matrix(h, oh, dtype, device)?;
    let rx = axis_matrix(w, ow, dtype, device)?;
    let acc = ry.dtype();
    let g = grad.to_dtype(acc)?.reshape((n * c * oh, ow))?.matmul(&rx)?; // (NC·oh, w)
    let g = g
        .reshape((n * c, oh, w))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n * c * w, oh))?
        .matmul(&ry)?; // (NC·w, h)
    g.reshape((n, c, w, h))?
        .transpose(2, 3)?
        .contiguous()?
        .to_dtype(dtype)
}

impl CustomOp1 for ResizeBilinear {
    fn name(&self) -> &'static str {
        "resize-bilinear-half-pixel"
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(resize_bilinear_bwd(grad_res, h, w)?))
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (self.out_h, self.out_w);
        if h == 0 || w == 0 || oh == 0 || ow == 0 {
            bail!("resize_bilinear: empty size {h}x{w} -> {oh}x{ow}");
        }
        let shape = Shape::from((n, c, oh, ow));
        // The op reads the buffer as packed planes, so strided views are copied once up front.
        let owned;
        let (storage, layout) = if layout.is_contiguous() {
            (storage, layout)
        } else {
            owned = copy_contiguous(storage, layout)?;
            (&owned.0, &owned.1)
        };
        let out = match storage {
            CpuStorage::F32(v) => {
                let s = contiguous_slice(v, layout)?;
                CpuStorage::F32(resize_planes::<f32, f32, f32>(
                    s,
                    h,
                    w,
                    oh,
                    ow,
                    |x| x,
                    |x| x,
                ))
            }
            CpuStorage::F64(v) => {
                let s = contiguous_slice(v, layout)?;
                CpuStorage::F64(resize_planes::<f64, f64, f64>(
                    s,
                    h,
                    w,
                    oh,
                    ow,
                    |x| x,
                    |x| x,
                ))
            }
            CpuStorage::F16(v) => {
                let s = contiguous_slice(v, layout)?;
                CpuStorage::F16(resize_planes::<half::f16, half::f16, f32>(
                    s,
                    h,
                    w,
                    oh,
                    ow,
                    |x| x.to_f32(),
                    half::f16::from_f32,
                ))
            }
            CpuStorage::BF16(v) => {
                let s = contiguous_slice(v, layout)?;
                CpuStorage::BF16(resize_planes::<half::bf16, half::bf16, f32>(
                    s,
                    h,
                    w,
                    oh,
                    ow,
                    |x| x.to_f32(),
                    half::bf16::from_f32,
                ))
            }
            other => bail!(
                "resize_bilinear: unsupported dtype {:?} (float types only)",
                other.dtype()
            ),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (self.out_h, self.out_w);
        if h == 0 || w == 0 || oh == 0 || ow == 0 {
            bail!("resize_bilinear: empty size {h}x{w} -> {oh}x{ow}");
        }
        let out = crate::cuda::ops::resize_bilinear(storage, layout, n * c, (h, w), (oh, ow))?;
        Ok((out, Shape::from((n, c, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Independent float64 evaluation of the docs/model.md §9.3 formula, with the scale and source
    /// index rounded to f32 at the same points PyTorch does for f32 tensors.
    fn naive(x: &[f32], n_planes: usize, h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
        let src_index = |dst: usize, insz: usize, outsz: usize| -> (usize, usize, f64) {
            let scale = insz as f32 / outsz as f32;
            let s = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(insz - 1);
            let i1 = if i0 + 1 < insz { i0 + 1 } else { i0 };
            (i0, i1, (s - i0 as f32) as f64)
        };
        let mut out = Vec::with_capacity(n_planes * oh * ow);
        for p in 0..n_planes {
            for oy in 0..oh {
                let (y0, y1, ly) = src_index(oy, h, oh);
                for ox in 0..ow {
                    let (x0, x1, lx) = src_index(ox, w, ow);
                    let at = |y: usize, xx: usize| x[p * h * w + y * w + xx] as f64;
                    let v = (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1))
                        + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
                    out.push(v);
                }
            }
        }
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    fn check(n: usize, c: usize, h: usize, w: usize, oh: usize, ow: usize) {
        let data = pseudo_random(n * c * h * w, (h * 131 + w) as u64);
        let x = Tensor::from_vec(data.clone(), (n, c, h, w), &Device::Cpu).unwrap();
        let y = resize_bilinear(&x, oh, ow).unwrap();
        assert_eq!(y.dims(), &[n, c, oh, ow]);
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = naive(&data, n * c, h, w, oh, ow);
        let max = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(max <= 4e-6 * 4.0, "{h}x{w}->{oh}x{ow}: max diff {max}");
    }

    #[test]
    fn matches_naive_up_down_and_odd_sizes() {
        check(2, 3, 18, 18, 35, 35);
        check(1, 2, 35, 35, 69, 69);
        check(1, 2, 69, 69, 138, 138);
        check(1, 3, 48, 64, 55, 55);
        check(1, 1, 7, 9, 13, 4);
        check(1, 1, 1, 1, 3, 5);
        check(1, 2, 5, 3, 5, 3);
        check(1, 1, 10, 11, 1, 1);
    }

    #[test]
    fn identity_when_same_size() {
        let data = pseudo_random(2 * 7 * 9, 3);
        let x = Tensor::from_vec(data.clone(), (1, 2, 7, 9), &Device::Cpu).unwrap();
        let y = resize_bilinear(&x, 7, 9).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), data);
    }

    #[test]
    fn strided_input_and_f64() {
        let data = pseudo_random(2 * 6 * 8, 5);
        let x = Tensor::from_vec(data, (1, 2, 6, 8), &Device::Cpu).unwrap();
        let xt = x.transpose(2, 3).unwrap(); // (1,2,8,6), non-contiguous
        let a = resize_bilinear(&xt, 11, 5).unwrap();
        let b = resize_bilinear(&xt.contiguous().unwrap(), 11, 5).unwrap();
        let d = (a - &b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0);
        let c = resize_bilinear(&xt.to_dtype(DType::F64).unwrap(), 11, 5).unwrap();
        let d = (c.to_dtype(DType::F32).unwrap() - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "f64 vs f32 {d}");
    }

    #[test]
    fn half_types_round_once_from_f32() {
        let data = pseudo_random(3 * 9 * 7, 9);
        let x = Tensor::from_vec(data, (1, 3, 9, 7), &Device::Cpu).unwrap();
        for dt in [DType::F16, DType::BF16] {
            // Inputs exactly representable in the half type, so only the output rounding differs.
            let xh = x.to_dtype(dt).unwrap();
            let want = resize_bilinear(&xh.to_dtype(DType::F32).unwrap(), 16, 5)
                .unwrap()
                .to_dtype(dt)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let got = resize_bilinear(&xh, 16, 5).unwrap();
            assert_eq!(got.dtype(), dt);
            let d = (got.to_dtype(DType::F32).unwrap() - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{dt:?}");
        }
    }

    /// The backward against float64 central differences of sum(r · resize(x)), every input
    /// element, up- and down-sampling, edge clamping, a 1-pixel axis and the identity size.
    #[test]
    fn backward_matches_float64_finite_differences() {
        let dev = Device::Cpu;
        for (h, w, oh, ow) in [
            (3, 4, 7, 5),
            (7, 9, 4, 3),
            (5, 5, 10, 10),
            (1, 3, 4, 2),
            (4, 6, 4, 6),
            (6, 4, 13, 1),
        ] {
            let (n, c) = (2, 2);
            let xs: Vec<f64> = pseudo_random(n * c * h * w, (h * 7 + w) as u64)
                .iter()
                .map(|&v| v as f64)
                .collect();
            let r = Tensor::randn(0f64, 1.0, (n, c, oh, ow), &dev).unwrap();
            let loss = |v: &[f64]| -> Tensor {
                let x = Tensor::from_slice(v, (n, c, h, w), &dev).unwrap();
                (resize_bilinear(&x, oh, ow).unwrap() * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            let var = candle_core::Var::from_slice(&xs, (n, c, h, w), &dev).unwrap();
            let l = (resize_bilinear(var.as_tensor(), oh, ow).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = l.backward().unwrap();
            let g = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let eps = 1e-3;
            for i in 0..xs.len() {
                let (mut p, mut m) = (xs.clone(), xs.clone());
                p[i] += eps;
                m[i] -= eps;
                let fd = (loss(&p).to_scalar::<f64>().unwrap()
                    - loss(&m).to_scalar::<f64>().unwrap())
                    / (2.0 * eps);
                assert!(
                    (g[i] - fd).abs() < 1e-9,
                    "{h}x{w}->{oh}x{ow} element {i}: {} vs {fd}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn backward_in_f32_matches_f64() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(pseudo_random(2 * 5 * 6, 11), (1, 2, 5, 6), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (1, 2, 9, 11), &dev).unwrap();
        let grad = |dt: DType| {
            let v = candle_core::Var::from_tensor(&x.to_dtype(dt).unwrap()).unwrap();
            let l = (resize_bilinear(v.as_tensor(), 9, 11).unwrap() * r.to_dtype(dt).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let g = l.backward().unwrap();
            let g = g.get(v.as_tensor()).unwrap().clone();
            assert_eq!(g.dtype(), dt);
            g.to_dtype(DType::F64).unwrap()
        };
        let d = (grad(DType::F32) - grad(DType::F64))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-5, "f32 vs f64 gradient {d}");
    }

    #[test]
    fn rejects_bad_input() {
        let x = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(resize_bilinear(&x, 4, 4).is_err());
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(resize_bilinear(&x, 0, 4).is_err());
        let x = Tensor::zeros((1, 1, 4, 4), DType::U8, &Device::Cpu).unwrap();
        assert!(resize_bilinear(&x, 2, 2).is_err());
    }

    #[test]
    fn the_threshold_window_equals_the_full_resize_and_holds_all_foreground() {
        // Soft masks as YOLACT makes them: sigmoid values, zero outside a crop box, plus an
        // uncropped one, values near 0.5 included, sizes up and down.
        let (h, w) = (23, 31);
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for (case, (oh, ow)) in [(97, 203), (480, 640), (11, 9), (23, 31)]
            .into_iter()
            .enumerate()
        {
            for crop in [
                Some((3, 5, 12, 9)),
                Some((0, 0, 31, 1)),
                Some((30, 22, 31, 23)),
                None,
            ] {
                let plane: Vec<f32> = (0..h * w)
                    .map(|i| {
                        let (r, q) = (i / w, i % w);
                        let inside = crop.is_none_or(|(x0, y0, x1, y1)| {
                            (x0..x1).contains(&q) && (y0..y1).contains(&r)
                        });
                        if inside {
                            0.35 + 0.3 * rnd()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let full = resize_threshold_planes(&plane, h, w, oh, ow, 0.5).unwrap();
                let ((x0, y0, cols, rows), win) =
                    resize_threshold_window(&plane, h, w, oh, ow, 0.5).unwrap();
                assert!(x0 + cols <= ow && y0 + rows <= oh, "case {case}");
                assert_eq!(win.len(), cols * rows);
                let mut rebuilt = vec![0u8; oh * ow];
                for r in 0..rows {
                    rebuilt[(y0 + r) * ow + x0..][..cols].copy_from_slice(&win[r * cols..][..cols]);
                }
                assert_eq!(rebuilt, full, "case {case} crop {crop:?}");
                // Upsampled, every crop but the one-pixel one keeps some foreground (downsampling
                // may mix a thin strip below 0.5).
                let upsampled = oh * ow > h * w;
                assert!(
                    full.contains(&1) || !upsampled || crop == Some((30, 22, 31, 23)),
                    "case {case} {crop:?}: a test with no foreground"
                );
                if crop.is_some() && upsampled {
                    assert!(
                        cols * rows < oh * ow,
                        "case {case} {crop:?}: window is the whole image"
                    );
                }
            }
        }
        let blank = vec![0.2f32; h * w];
        let (win, data) = resize_threshold_window(&blank, h, w, 50, 60, 0.5).unwrap();
        assert_eq!((win, data.len()), ((0, 0, 0, 0), 0));
        assert!(resize_threshold_window(&blank, h, w, 50, 60, 0.3).is_err());
    }
}
