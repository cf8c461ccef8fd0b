//! The one seam between the host and a device for the stages of a frame outside the network.
//!
//! The network's own device-specific ops are candle custom ops with a `cpu_fwd` and a `cuda_fwd`
//! ([`crate::ops`]); everything around it that a device does its own way (the input transform,
//! box decoding, the NMS selection, mask assembly and the mask upsample) is a method of
//! [`Backend`]. The engine chooses one implementation once, when it is built
//! ([`crate::engine::backend_for`]): [`crate::engine::cpu::Cpu`] (the host stages of
//! [`crate::engine::preprocess`] and [`crate::post`]; they accept tensors on any device and copy
//! to the host where they must) or, in `cuda` builds on a CUDA device, `crate::cuda::backend::Cuda`
//! (our kernels). No stage tests the device of its tensors to pick a path.
//!
//! This file holds only the contract, so that [`crate::post::masks::postprocess`], which drives
//! the mask stages, and both implementations import it without importing each other.

use std::fmt::Debug;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::config::YolactConfig;
use crate::error::Result;
use crate::output::detection::Mask;
use crate::post::types::{Dets, Kept, NmsOptions};

/// The device-specific stages of a frame around the network. Both implementations give the same
/// results (bit for bit, or within the tolerances tests/cuda_gpu.rs states); they differ in where
/// the work runs and how much is copied to the host.
pub trait Backend: Debug + Send + Sync {
    /// Stable name for messages ("cpu", "cuda").
    fn name(&self) -> &'static str;

    /// FastBaseTransform of `img` to the (1, 3, S, S) network input on `device`, in `dtype`.
    fn preprocess(
        &self,
        img: &RgbImage,
        cfg: &YolactConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor>;

    /// Raw regressions `loc` (P, 4) against `priors` (P, 4) -> (P, 4) relative boxes
    /// (see [`crate::post::decode::decode_boxes`]).
    fn decode_boxes(&self, loc: &Tensor, priors: &Tensor) -> Result<Tensor>;

    /// Candidate filter, the selected NMS and the global cap of one image (see
    /// [`crate::post::fast_nms::detect`]).
    fn detect(
        &self,
        boxes: &Tensor,
        conf: &Tensor,
        coefs: &Tensor,
        opts: &NmsOptions,
    ) -> Result<Dets>;

    /// Class-wise Fast NMS of candidates alone: `scores` (C, n), `boxes` (n, 4) -> per class, the
    /// kept candidates in rank order (see [`crate::post::fast_nms::fast_nms_keep_tensor`]).
    fn fast_nms_keep(
        &self,
        scores: &Tensor,
        boxes: &Tensor,
        top_k: usize,
        iou_thresh: f32,
    ) -> Result<Vec<Vec<Kept>>>;

    /// sigmoid(proto @ coefsᵀ), cropped to each box when `crop`: (n, Hp, Wp) f32 soft masks (see
    /// [`crate::post::masks::assemble_crop`]).
    fn assemble_crop(
        &self,
        proto: &Tensor,
        coefs: &Tensor,
        boxes: &Tensor,
        crop: bool,
    ) -> Result<Tensor>;

    /// Soft masks (n, Hp, Wp) resized to (h, w) and thresholded at 0.5 (see
    /// [`crate::post::masks::upsample_threshold`]).
    fn upsample_threshold(&self, masks: &Tensor, h: usize, w: usize) -> Result<Vec<Mask>>;
}
