//! Launchers behind the `cuda_fwd` of the custom ops in [`crate::ops`].

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result};

use super::runtime::{as_i32, contiguous_view, func, grid_for};
use super::sources::{DCN, DCN_CHANNEL_BLOCK, RESIZE};

/// Sizes of one deformable im2col: x (n, c, h, w) -> cols (n, c·9, ho·wo).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeformDims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
    pub stride: usize,
}

/// Deformable modulated im2col on the device (kernels/dcn.cu); x, offset and mask of one dtype.
pub(crate) fn deform_im2col(
    d: DeformDims,
    (xs, xl): (&CudaStorage, &Layout),
    (os, ol): (&CudaStorage, &Layout),
    (ms, ml): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = xs.device.clone();
    let slice = match (&xs.slice, &os.slice, &ms.slice) {
        (CudaStorageSlice::F32(x), CudaStorageSlice::F32(o), CudaStorageSlice::F32(m)) => {
            CudaStorageSlice::F32(deform_t(
                &dev,
                "deform_im2col_f32",
                d,
                (x, xl),
                (o, ol),
                (m, ml),
            )?)
        }
        (CudaStorageSlice::F16(x), CudaStorageSlice::F16(o), CudaStorageSlice::F16(m)) => {
            CudaStorageSlice::F16(deform_t(
                &dev,
                "deform_im2col_f16",
                d,
                (x, xl),
                (o, ol),
                (m, ml),
            )?)
        }
        (CudaStorageSlice::BF16(x), CudaStorageSlice::BF16(o), CudaStorageSlice::BF16(m)) => {
            CudaStorageSlice::BF16(deform_t(
                &dev,
                "deform_im2col_bf16",
                d,
                (x, xl),
                (o, ol),
                (m, ml),
            )?)
        }
        (CudaStorageSlice::F64(x), CudaStorageSlice::F64(o), CudaStorageSlice::F64(m)) => {
            CudaStorageSlice::F64(deform_t(
                &dev,
                "deform_im2col_f64",
                d,
                (x, xl),
                (o, ol),
                (m, ml),
            )?)
        }
        _ => bail!(
            "deform conv: x, offset and mask must share one float dtype, got {:?}, {:?}, {:?}",
            xs.dtype(),
            os.dtype(),
            ms.dtype()
        ),
    };
    Ok(CudaStorage { slice, device: dev })
}

fn deform_t<T: DeviceRepr>(
    dev: &CudaDevice,
    entry: &str,
    d: DeformDims,
    (x, xl): (&CudaSlice<T>, &Layout),
    (o, ol): (&CudaSlice<T>, &Layout),
    (m, ml): (&CudaSlice<T>, &Layout),
) -> Result<CudaSlice<T>> {
    let x = contiguous_view(x, xl, "deform conv x")?;
    let o = contiguous_view(o, ol, "deform conv offset")?;
    let m = contiguous_view(m, ml, "deform conv mask")?;
    let p = d.ho * d.wo;
    let out_len = d.n * d.c * 9 * p;
    let threads = d.n * d.c.div_ceil(DCN_CHANNEL_BLOCK) * 9 * p;
    let f = func(dev, &DCN, entry)?;
    // SAFETY: the kernel writes every one of the out_len elements.
    let out = unsafe { dev.alloc::<T>(out_len)? };
    if out_len == 0 {
        return Ok(out);
    }
    let ints = [
        as_i32(d.n, "batch")?,
        as_i32(d.c, "channels")?,
        as_i32(d.h, "height")?,
        as_i32(d.w, "width")?,
        as_i32(d.ho, "output height")?,
        as_i32(d.wo, "output width")?,
        as_i32(d.stride, "stride")?,
    ];
    // Plane offsets inside the kernel are int.
    as_i32(d.h * d.w, "plane size")?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(&x).arg(&o).arg(&m).arg(&out);
    for v in &ints {
        b.arg(v);
    }
    // SAFETY: argument list matches DEFORM(...) in kernels/dcn.cu; buffers sized above.
    unsafe { b.launch(grid_for(threads)) }.w()?;
    Ok(out)
}

/// Bilinear resize (align_corners=False) of contiguous (planes, h, w) data to (planes, oh, ow).
pub(crate) fn resize_bilinear(
    s: &CudaStorage,
    l: &Layout,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Result<CudaStorage> {
    let dev = s.device.clone();
    let slice = match &s.slice {
        CudaStorageSlice::F32(v) => CudaStorageSlice::F32(resize_t(
            &dev,
            "resize_bilinear_f32",
            v,
            l,
            planes,
            (h, w),
            (oh, ow),
        )?),
        CudaStorageSlice::F16(v) => CudaStorageSlice::F16(resize_t(
            &dev,
            "resize_bilinear_f16",
            v,
            l,
            planes,
            (h, w),
            (oh, ow),
        )?),
        CudaStorageSlice::BF16(v) => CudaStorageSlice::BF16(resize_t(
            &dev,
            "resize_bilinear_bf16",
            v,
            l,
            planes,
            (h, w),
            (oh, ow),
        )?),
        CudaStorageSlice::F64(v) => CudaStorageSlice::F64(resize_t(
            &dev,
            "resize_bilinear_f64",
            v,
            l,
            planes,
            (h, w),
            (oh, ow),
        )?),
        _ => bail!(
            "resize_bilinear: unsupported dtype {:?} (float types only)",
            s.dtype()
        ),
    };
    Ok(CudaStorage { slice, device: dev })
}

fn resize_t<T: DeviceRepr>(
    dev: &CudaDevice,
    entry: &str,
    src: &CudaSlice<T>,
    l: &Layout,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Result<CudaSlice<T>> {
    let src = contiguous_view(src, l, "resize_bilinear")?;
    let n = planes * oh * ow;
    let f = func(dev, &RESIZE, entry)?;
    // SAFETY: the kernel writes every one of the n elements.
    let out = unsafe { dev.alloc::<T>(n)? };
    if n == 0 {
        return Ok(out);
    }
    let planes = planes as i64;
    let dims = [
        as_i32(h, "height")?,
        as_i32(w, "width")?,
        as_i32(oh, "output height")?,
        as_i32(ow, "output width")?,
    ];
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(&src).arg(&out).arg(&planes);
    for v in &dims {
        b.arg(v);
    }
    // SAFETY: argument list matches RESIZE(...) in kernels/resize.cu.
    unsafe { b.launch(grid_for(n)) }.w()?;
    Ok(out)
}
