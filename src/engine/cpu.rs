//! The host implementation of [`Backend`]: the stages of [`crate::engine::preprocess`] and
//! [`crate::post`] as they are. It is the backend of every device without one of its own; its
//! stages accept tensors on any device and copy to the host where they must.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::config::YolactConfig;
use crate::engine::backend::Backend;
use crate::engine::preprocess::preprocess;
use crate::error::Result;
use crate::output::detection::Mask;
use crate::post::types::{Dets, Kept, NmsOptions};
use crate::post::{decode, fast_nms, masks};

/// The host stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn preprocess(
        &self,
        img: &RgbImage,
        cfg: &YolactConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let x = preprocess(img, cfg, device)?;
        Ok(if dtype == DType::F32 {
            x
        } else {
            x.to_dtype(dtype)?
        })
    }

    fn decode_boxes(&self, loc: &Tensor, priors: &Tensor) -> Result<Tensor> {
        decode::decode_boxes(loc, priors)
    }

    fn detect(
        &self,
        boxes: &Tensor,
        conf: &Tensor,
        coefs: &Tensor,
        opts: &NmsOptions,
    ) -> Result<Dets> {
        fast_nms::detect(boxes, conf, coefs, opts)
    }

    fn fast_nms_keep(
        &self,
        scores: &Tensor,
        boxes: &Tensor,
        top_k: usize,
        iou_thresh: f32,
    ) -> Result<Vec<Vec<Kept>>> {
        fast_nms::fast_nms_keep_tensor(scores, boxes, top_k, iou_thresh)
    }

    fn assemble_crop(
        &self,
        proto: &Tensor,
        coefs: &Tensor,
        boxes: &Tensor,
        crop: bool,
    ) -> Result<Tensor> {
        masks::assemble_crop(proto, coefs, boxes, crop)
    }

    fn upsample_threshold(&self, masks: &Tensor, h: usize, w: usize) -> Result<Vec<Mask>> {
        masks::upsample_threshold(masks, h, w)
    }
}
