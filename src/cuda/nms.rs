//! Fast NMS on the device (kernels/fast_nms.cu), end to end: candidate filter and sort keys, per
//! class top-k + IoU + keep, global top-k, with the only device-to-host copy at the very end.
//!
//! The launches themselves are [`super::plan::fast_nms_detect`] / [`super::plan::fast_nms_keep`];
//! this file only hands them candle's buffers. Same results as the host stages in
//! [`crate::fast_nms`] (asserted on the emulator by tests/cuda_emu.rs and on a GPU by
//! tests/cuda_gpu.rs): the ordering is the host's stable descending sort, and the IoU is
//! evaluated with unfused f32 arithmetic.

use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::{CudaDevice, DType, Storage, Tensor};

use super::host::CudaHost;
use super::plan::{self, DevPtr};
use crate::error::{Error, Result};
use crate::fast_nms::{Kept, NmsOptions};

/// Runs `f` on the f32 device buffer of a contiguous CUDA tensor.
fn with_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaDevice, CudaView<'_, f32>) -> Result<R>,
) -> Result<R> {
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        return Err(Error::Invalid(format!("{what}: not a CUDA tensor")));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Invalid(format!("{what}: not contiguous")))?;
    let view = s.as_cuda_slice::<f32>()?.slice(start..end);
    f(&s.device, view)
}

/// Runs a plan on the f32 device buffers of two CUDA tensors.
fn with_two<R>(
    (a, a_what): (&Tensor, &str),
    (b, b_what): (&Tensor, &str),
    f: impl FnOnce(&mut CudaHost<'_>, DevPtr, DevPtr) -> Result<R>,
) -> Result<R> {
    with_f32(a, a_what, |dev, av| {
        with_f32(b, b_what, |_, bv| {
            let mut host = CudaHost::new(dev);
            let (ap, bp) = (host.ptr_of(&av), host.ptr_of(&bv));
            f(&mut host, ap, bp)
        })
    })
}

/// Device version of the candidate filter + class-wise or cross-class Fast NMS + global cap of
/// [`crate::fast_nms::detect`]: `boxes` (P, 4) and `conf` (P, 1 + C) on a CUDA device. Returns
/// the kept detections best first, with [`Kept::cand`] the **prior** index; `None` when the
/// options are outside what the kernels hold (traditional NMS, top-k above 1024), so the caller
/// uses the host path.
pub fn detect_keep(boxes: &Tensor, conf: &Tensor, opts: &NmsOptions) -> Result<Option<Vec<Kept>>> {
    let (p, c1) = conf.dims2()?;
    if c1 < 2 || boxes.dims() != [p, 4] {
        return Err(Error::Invalid(format!(
            "fast_nms: boxes {:?} and conf {:?}",
            boxes.dims(),
            conf.dims()
        )));
    }
    with_two((conf, "conf"), (boxes, "boxes"), |h, conf, boxes| {
        plan::fast_nms_detect(h, conf, boxes, p, c1, opts)
    })
}

/// Device version of [`crate::fast_nms::fast_nms_keep_tensor`]: `scores` (C, n) and `boxes`
/// (n, 4) on a CUDA device; per class, the kept candidates in rank order. `None` when top-k is
/// above what the kernels hold.
pub fn fast_nms_keep(
    scores: &Tensor,
    boxes: &Tensor,
    top_k: usize,
    iou_thresh: f32,
) -> Result<Option<Vec<Vec<Kept>>>> {
    let (nc, n) = scores.dims2()?;
    if boxes.dims() != [n, 4] {
        return Err(Error::Invalid(format!(
            "fast_nms: scores {:?} and boxes {:?}",
            scores.dims(),
            boxes.dims()
        )));
    }
    with_two((scores, "scores"), (boxes, "boxes"), |h, s, b| {
        plan::fast_nms_keep(h, s, b, nc, n, top_k, iou_thresh)
    })
}
