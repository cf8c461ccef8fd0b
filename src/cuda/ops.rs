//! Launchers behind the `cuda_fwd` of the custom ops in [`crate::ops`].

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr};
use candle_core::cuda_backend::CudaStorageSlice;
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result};

use super::host::{to_candle, CudaHost};
use super::plan;
pub(crate) use super::plan::DeformDims;
use super::runtime::contiguous_view;

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
    // SAFETY: the kernel writes every one of the cols_len elements. At least one element: a
    // custom op must return device storage, and a 0-byte allocation is a driver error.
    let out = unsafe { dev.alloc::<T>(d.cols_len().max(1))? };
    let mut host = CudaHost::new(dev);
    let ptrs = (host.ptr_of(&x), host.ptr_of(&o), host.ptr_of(&m));
    let out_ptr = host.ptr_of(&out);
    plan::deform_im2col(&mut host, entry, d, ptrs, out_ptr).map_err(to_candle)?;
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
    // SAFETY: the kernel writes every one of the planes * oh * ow elements; at least one, as in
    // deform_t.
    let out = unsafe { dev.alloc::<T>((planes * oh * ow).max(1))? };
    let mut host = CudaHost::new(dev);
    let ptrs = (host.ptr_of(&src), host.ptr_of(&out));
    plan::resize_bilinear(&mut host, entry, ptrs, planes, (h, w), (oh, ow)).map_err(to_candle)?;
    Ok(out)
}
