//! Launchers behind the `cuda_fwd` of the custom ops in [`crate::ops`].

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
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

/// Elementwise binary cross-entropy of probabilities against targets (kernels/loss.cu), f32.
pub(crate) fn bce(
    (ps, pl): (&CudaStorage, &Layout),
    (ts, tl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = ps.device.clone();
    let (CudaStorageSlice::F32(p), CudaStorageSlice::F32(t)) = (&ps.slice, &ts.slice) else {
        bail!(
            "binary_cross_entropy: f32 operands only, got {:?} and {:?}",
            ps.dtype(),
            ts.dtype()
        );
    };
    let n = pl.shape().elem_count();
    let p = contiguous_view(p, pl, "binary_cross_entropy prediction")?;
    let t = contiguous_view(t, tl, "binary_cross_entropy target")?;
    // SAFETY: the kernel writes every one of the n elements; at least one, as in deform_t.
    let out = unsafe { dev.alloc::<f32>(n.max(1))? };
    let mut host = CudaHost::new(&dev);
    let ptrs = (host.ptr_of(&p), host.ptr_of(&t), host.ptr_of(&out));
    plan::bce(&mut host, ptrs, n).map_err(to_candle)?;
    Ok(CudaStorage {
        slice: CudaStorageSlice::F32(out),
        device: dev,
    })
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

/// Which plan a deformable backward launch uses.
#[derive(Clone, Copy)]
enum DeformBwd {
    /// ∂x, (n, c, h, w), accumulated into a zeroed buffer.
    Input,
    /// ∂offset‖∂mask, (n, 27, ho, wo), every element written.
    Coord,
}

/// Input gradient of the deformable im2col on the device: (grad_cols, offset, mask) -> ∂x.
pub(crate) fn deform_col2im(
    d: DeformDims,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    c: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    deform_bwd(DeformBwd::Input, d, a, b, c)
}

/// Offset and mask gradients on the device: (x, offset‖mask, grad_cols) -> (n, 27, ho, wo).
pub(crate) fn deform_col2im_coord(
    d: DeformDims,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    c: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    deform_bwd(DeformBwd::Coord, d, a, b, c)
}

fn deform_bwd(
    kind: DeformBwd,
    d: DeformDims,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
    (s3, l3): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = s1.device.clone();
    let slice = match (&s1.slice, &s2.slice, &s3.slice) {
        (CudaStorageSlice::F32(a), CudaStorageSlice::F32(b), CudaStorageSlice::F32(c)) => {
            let entry = match kind {
                DeformBwd::Input => "deform_col2im_f32",
                DeformBwd::Coord => "deform_col2im_coord_f32",
            };
            CudaStorageSlice::F32(deform_bwd_t(
                &dev,
                kind,
                entry,
                d,
                (a, l1),
                (b, l2),
                (c, l3),
            )?)
        }
        (CudaStorageSlice::F64(a), CudaStorageSlice::F64(b), CudaStorageSlice::F64(c)) => {
            let entry = match kind {
                DeformBwd::Input => "deform_col2im_f64",
                DeformBwd::Coord => "deform_col2im_coord_f64",
            };
            CudaStorageSlice::F64(deform_bwd_t(
                &dev,
                kind,
                entry,
                d,
                (a, l1),
                (b, l2),
                (c, l3),
            )?)
        }
        _ => bail!(
            "deform conv backward: operands must all be f32 or all f64 (training dtypes), got \
             {:?}, {:?}, {:?}",
            s1.dtype(),
            s2.dtype(),
            s3.dtype()
        ),
    };
    Ok(CudaStorage { slice, device: dev })
}

fn deform_bwd_t<T: DeviceRepr + ValidAsZeroBits>(
    dev: &CudaDevice,
    kind: DeformBwd,
    entry: &str,
    d: DeformDims,
    (a, al): (&CudaSlice<T>, &Layout),
    (b, bl): (&CudaSlice<T>, &Layout),
    (c, cl): (&CudaSlice<T>, &Layout),
) -> Result<CudaSlice<T>> {
    let a = contiguous_view(a, al, "deform conv backward operand 1")?;
    let b = contiguous_view(b, bl, "deform conv backward operand 2")?;
    let c = contiguous_view(c, cl, "deform conv backward operand 3")?;
    let mut host = CudaHost::new(dev);
    let ptrs = (host.ptr_of(&a), host.ptr_of(&b), host.ptr_of(&c));
    let out = match kind {
        DeformBwd::Input => {
            // Atomic adds accumulate into it; at least one element, as in deform_t.
            let out = dev.alloc_zeros::<T>((d.n * d.c * d.h * d.w).max(1))?;
            let out_ptr = host.ptr_of(&out);
            plan::deform_col2im(&mut host, entry, d, ptrs, out_ptr).map_err(to_candle)?;
            out
        }
        DeformBwd::Coord => {
            // SAFETY: the kernel writes every one of the n·27·ho·wo elements.
            let out = unsafe { dev.alloc::<T>((d.n * 27 * d.ho * d.wo).max(1))? };
            let out_ptr = host.ptr_of(&out);
            plan::deform_col2im_coord(&mut host, entry, d, ptrs, out_ptr).map_err(to_candle)?;
            out
        }
    };
    Ok(out)
}
