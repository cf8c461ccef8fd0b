//! The CUDA implementation of [`Backend`]: our kernels for the stages around the network, on the
//! one device the engine runs on. Each method is the device twin of the host stage it names in
//! [`crate::engine::cpu::Cpu`], with the same results (asserted by tests/cuda_gpu.rs on a GPU and,
//! for the kernels' arithmetic, by tests/it/cuda_emu.rs on the CPU emulator). Where the kernels
//! do not cover the options (traditional NMS, top-k above what they hold) the host stage runs on
//! the device's tensors, as it always has.
//!
//! The inputs must live on a CUDA device: a host tensor is an error, not a silent host run.

use candle_core::{CudaDevice, DType, Device, Tensor};
use image::RgbImage;

use super::{fused, nms};
use crate::config::YolactConfig;
use crate::engine::backend::Backend;
use crate::error::Result;
use crate::output::detection::Mask;
use crate::post::types::{Dets, Kept, NmsOptions};
use crate::post::{decode, fast_nms, masks};

/// The CUDA stages on one device.
#[derive(Debug, Clone)]
pub struct Cuda {
    device: CudaDevice,
}

impl Cuda {
    pub fn new(device: &CudaDevice) -> Self {
        Cuda {
            device: device.clone(),
        }
    }

    /// The device these stages run on.
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }
}

impl Backend for Cuda {
    fn name(&self) -> &'static str {
        "cuda"
    }

    /// One kernel does the whole transform and writes the network's dtype directly.
    fn preprocess(
        &self,
        img: &RgbImage,
        cfg: &YolactConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        fused::preprocess(img, cfg, device, dtype)
    }

    fn decode_boxes(&self, loc: &Tensor, priors: &Tensor) -> Result<Tensor> {
        decode::check_shapes(loc, priors)?;
        fused::decode_boxes(loc, priors)
    }

    /// The whole filter + NMS + cap on the device; only the kept rows come back.
    fn detect(
        &self,
        boxes: &Tensor,
        conf: &Tensor,
        coefs: &Tensor,
        opts: &NmsOptions,
    ) -> Result<Dets> {
        let (p, mask_dim) = fast_nms::detect_dims(boxes, conf, coefs)?;
        if p == 0 {
            return Ok(Dets::empty(mask_dim)?);
        }
        let Some(kept) = nms::detect_keep(boxes, conf, opts)? else {
            return fast_nms::detect(boxes, conf, coefs, opts);
        };
        if kept.is_empty() {
            return Ok(Dets::empty(mask_dim)?);
        }
        let rows: Vec<u32> = kept.iter().map(|k| k.cand as u32).collect();
        let n = rows.len();
        let rows_t = Tensor::from_vec(rows, n, boxes.device())?;
        Ok(Dets {
            boxes: boxes.to_dtype(DType::F32)?.index_select(&rows_t, 0)?,
            coefs: coefs.index_select(&rows_t, 0)?,
            classes: kept.iter().map(|k| k.class).collect(),
            scores: kept.iter().map(|k| k.score).collect(),
        })
    }

    fn fast_nms_keep(
        &self,
        scores: &Tensor,
        boxes: &Tensor,
        top_k: usize,
        iou_thresh: f32,
    ) -> Result<Vec<Vec<Kept>>> {
        match nms::fast_nms_keep(scores, boxes, top_k, iou_thresh)? {
            Some(kept) => Ok(kept),
            None => fast_nms::fast_nms_keep_tensor(scores, boxes, top_k, iou_thresh),
        }
    }

    fn assemble_crop(
        &self,
        proto: &Tensor,
        coefs: &Tensor,
        boxes: &Tensor,
        crop: bool,
    ) -> Result<Tensor> {
        fused::assemble_crop(proto, coefs, boxes, crop)
    }

    /// The resize and threshold on the device; the bytes come back as full planes, each then cut
    /// to its foreground.
    fn upsample_threshold(&self, m: &Tensor, h: usize, w: usize) -> Result<Vec<Mask>> {
        if !masks::upsample_has_work(m, h, w)? {
            return Ok(Vec::new());
        }
        let bin = fused::upsample_threshold(m, h, w)?;
        Ok(bin.chunks(h * w).map(|p| masks::tight(h, w, p)).collect())
    }
}
