//! Fast NMS on the device (kernels/fast_nms.cu), end to end: candidate filter and sort keys, per
//! class top-k + IoU + keep, global top-k, with the only device-to-host copy at the very end.
//!
//! The launches themselves are [`super::plan::fast_nms_detect`] / [`super::plan::fast_nms_keep`];
//! this file only hands them candle's buffers. Same results as the host stages in
//! [`crate::post::fast_nms`] (asserted on the emulator by tests/it/cuda_emu.rs and on a GPU by
//! tests/cuda_gpu.rs): the ordering is the host's stable descending sort, and the IoU is
//! evaluated with unfused f32 arithmetic.

use candle_core::Tensor;

use super::host::with_f32_ptrs;
use super::plan;
use crate::error::{Error, Result};
use crate::post::types::{Kept, NmsOptions};

/// Device version of the candidate filter + class-wise or cross-class Fast NMS + global cap of
/// [`crate::post::fast_nms::detect`]: `boxes` (P, 4) and `conf` (P, 1 + C) on a CUDA device. Returns
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
    with_f32_ptrs([(conf, "conf"), (boxes, "boxes")], |h, [conf, boxes]| {
        plan::fast_nms_detect(h, conf, boxes, p, c1, opts)
    })
}

/// Device version of [`crate::post::fast_nms::fast_nms_keep_tensor`]: `scores` (C, n) and `boxes`
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
    with_f32_ptrs([(scores, "scores"), (boxes, "boxes")], |h, [s, b]| {
        plan::fast_nms_keep(h, s, b, nc, n, top_k, iou_thresh)
    })
}
