//! The fused stages of the CUDA path around the network: image -> input tensor in one kernel,
//! and soft masks -> cropped masks -> image-size binary masks with one copy to the host.
//!
//! Each is the device twin of a CPU stage (src/engine/preprocess.rs, src/post/masks.rs) with the same
//! arithmetic; tests/it/cuda_emu.rs checks the kernels bit for bit against those stages on the CPU
//! emulator, tests/cuda_gpu.rs on a GPU.

use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Shape, Storage, Tensor};
use image::RgbImage;

use super::host::{with_f32_ptrs, CudaHost};
use super::plan::{self, Normalize};
use crate::config::YolactConfig;
use crate::engine::preprocess::check_size;
use crate::error::{Error, Result};

fn cuda_device(device: &Device) -> Result<&CudaDevice> {
    match device {
        Device::Cuda(d) => Ok(d),
        other => Err(Error::Invalid(format!(
            "fused CUDA stage called on {other:?}"
        ))),
    }
}

/// A tensor over a device buffer that a kernel has filled completely.
fn wrap<T: CudaDType>(s: CudaSlice<T>, dev: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(s, dev.clone()));
    Tensor::from_storage(storage, shape, BackpropOp::none(), false)
}

/// FastBaseTransform on the device: the image's bytes go up once and one kernel writes the
/// (1, 3, S, S) input in `dtype` (f32, f16 or bf16).
pub fn preprocess(
    img: &RgbImage,
    cfg: &YolactConfig,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let dev = cuda_device(device)?;
    let (w, h) = img.dimensions();
    check_size(w, h).map_err(Error::Image)?;
    let (h, w, s) = (h as usize, w as usize, cfg.max_size);
    let bytes: CudaSlice<u8> = dev.clone_htod(img.as_raw().as_slice())?;
    let norm = Normalize::for_transform(cfg.transform);
    let n = 3 * s * s;
    let mut host = CudaHost::new(dev);
    let src = host.ptr_of(&bytes);
    macro_rules! run {
        ($t:ty, $entry:literal) => {{
            // SAFETY: the kernel writes all n elements.
            let out = unsafe { dev.alloc::<$t>(n)? };
            let dst = host.ptr_of(&out);
            plan::preprocess_image(&mut host, $entry, (src, dst), (h, w), (s, s), norm)?;
            wrap(out, dev, (1, 3, s, s))
        }};
    }
    Ok(match dtype {
        DType::F32 => run!(f32, "preprocess_rgb_f32"),
        DType::F16 => run!(half::f16, "preprocess_rgb_f16"),
        DType::BF16 => run!(half::bf16, "preprocess_rgb_bf16"),
        other => {
            return Err(Error::Invalid(format!(
                "preprocess: no kernel for {other:?} inputs"
            )))
        }
    })
}

/// sigmoid(proto @ coefsᵀ), cropped to each box when `crop`: proto (hp, wp, d), coefs (n, d),
/// relative boxes (n, 4), all on one CUDA device -> (n, hp, wp) f32. The GEMM is candle's
/// (cuBLAS); sigmoid, transpose and crop are one kernel.
pub fn assemble_crop(proto: &Tensor, coefs: &Tensor, boxes: &Tensor, crop: bool) -> Result<Tensor> {
    let dev = cuda_device(proto.device())?;
    let (hp, wp, d) = proto.dims3()?;
    let (n, dc) = coefs.dims2()?;
    if d != dc || boxes.dims() != [n, 4] {
        return Err(Error::Invalid(format!(
            "assemble masks: proto {:?}, coefs {:?}, boxes {:?}",
            proto.dims(),
            coefs.dims(),
            boxes.dims()
        )));
    }
    if n * hp * wp == 0 {
        // On the host: a zero-element CUDA tensor is a 0-byte allocation, which the driver
        // rejects (CUDA_ERROR_INVALID_VALUE).
        return Ok(Tensor::zeros((n, hp, wp), DType::F32, &Device::Cpu)?);
    }
    let lin = proto
        .to_dtype(DType::F32)?
        .reshape((hp * wp, d))?
        .matmul(&coefs.to_dtype(DType::F32)?.t()?)?;
    with_f32_ptrs(
        [(&lin, "mask GEMM"), (boxes, "boxes")],
        |host, [lin, boxes]| {
            // SAFETY: the kernel writes all n * hp * wp elements.
            let out = unsafe { dev.alloc::<f32>(n * hp * wp)? };
            let ptrs = (lin, boxes, host.ptr_of(&out));
            plan::mask_sigmoid_crop(host, ptrs, n, (hp, wp), crop)?;
            Ok(wrap(out, dev, (n, hp, wp)))
        },
    )
}

/// Soft masks (n, hp, wp) f32 on a CUDA device, resized to (h, w) and thresholded at 0.5 there:
/// n·h·w bytes (0/1) copied to the host once.
pub fn upsample_threshold(masks: &Tensor, h: usize, w: usize) -> Result<Vec<u8>> {
    let dev = cuda_device(masks.device())?;
    let (n, hp, wp) = masks.dims3()?;
    if n == 0 || h == 0 || w == 0 {
        return Ok(Vec::new());
    }
    with_f32_ptrs([(masks, "masks")], |host, [src]| {
        // SAFETY: the kernel writes all n * h * w bytes.
        let out = unsafe { dev.alloc::<u8>(n * h * w)? };
        let ptrs = (src, host.ptr_of(&out));
        plan::resize_threshold(host, ptrs, n, (hp, wp), (h, w), 0.5)?;
        Ok(dev.cuda_stream().clone_dtoh(&out).w()?)
    })
}

/// SSD decoding on the device: `loc` and `priors` (P, 4) on one CUDA device -> (P, 4) boxes, one
/// kernel.
pub fn decode_boxes(loc: &Tensor, priors: &Tensor) -> Result<Tensor> {
    let dev = cuda_device(loc.device())?;
    let p = loc.dim(0)?;
    if p == 0 {
        // On the host, as in assemble_crop: no 0-byte device allocation.
        return Ok(Tensor::zeros((0, 4), DType::F32, &Device::Cpu)?);
    }
    with_f32_ptrs([(loc, "loc"), (priors, "priors")], |host, [loc, priors]| {
        // SAFETY: the kernel writes all 4 * p elements.
        let out = unsafe { dev.alloc::<f32>(4 * p)? };
        let ptrs = (loc, priors, host.ptr_of(&out));
        plan::decode_boxes(host, ptrs, p)?;
        Ok(wrap(out, dev, (p, 4)))
    })
}
