//! The plain data the post-processing stages pass between them, in a module of its own so the CPU
//! stages ([`crate::post::fast_nms`], [`crate::post::nms`]) and the device plans
//! ([`crate::cuda::plan`]) import it without importing each other.

use candle_core::{DType, Device, Tensor};

use crate::config::YolactConfig;
use crate::error::{Error, Result};

/// Which suppression the reference's eval flags select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NmsKind {
    /// `--fast_nms=True` (default): class-wise Fast NMS.
    Fast,
    /// `--fast_nms=True --cross_class_nms=True`.
    FastCrossClass,
    /// `--fast_nms=False`: greedy per-class NMS in pixels with the +1 convention.
    Traditional,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsOptions {
    pub kind: NmsKind,
    /// A prior is a candidate iff its best foreground score is strictly above this.
    pub conf_thresh: f32,
    pub iou_thresh: f32,
    /// Candidates per class (per image for cross-class) entering the IoU matrix.
    pub top_k: usize,
    /// Global cap after merging classes (not applied by cross-class Fast NMS).
    pub max_num_detections: usize,
    /// Box scale for traditional NMS, whose +1-pixel areas only make sense in pixels.
    pub max_size: usize,
}

impl NmsOptions {
    pub fn from_config(cfg: &YolactConfig) -> Self {
        NmsOptions {
            kind: NmsKind::Fast,
            conf_thresh: cfg.nms_conf_thresh,
            iou_thresh: cfg.nms_thresh,
            top_k: cfg.nms_top_k,
            max_num_detections: cfg.max_num_detections,
            max_size: cfg.max_size,
        }
    }
}

impl From<&YolactConfig> for NmsOptions {
    fn from(cfg: &YolactConfig) -> Self {
        Self::from_config(cfg)
    }
}

impl Default for NmsOptions {
    fn default() -> Self {
        NmsOptions {
            kind: NmsKind::Fast,
            conf_thresh: 0.05,
            iou_thresh: 0.5,
            top_k: 200,
            max_num_detections: 100,
            max_size: 550,
        }
    }
}

/// Detections after NMS, sorted by score descending.
#[derive(Debug, Clone)]
pub struct Dets {
    /// (n, 4) x1 y1 x2 y2, relative to the image.
    pub boxes: Tensor,
    /// (n, mask_dim) mask coefficients.
    pub coefs: Tensor,
    /// 0-based foreground class.
    pub classes: Vec<u32>,
    /// Softmax probability of `classes[i]`.
    pub scores: Vec<f32>,
}

impl Dets {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// No detections. The empty tensors are on the host whatever the frame's device: on CUDA a
    /// zero-element tensor is a 0-byte `cuMemAlloc(Async)`, which the driver rejects with
    /// CUDA_ERROR_INVALID_VALUE, and nothing downstream reads an empty tensor's device.
    pub fn empty(mask_dim: usize) -> candle_core::Result<Self> {
        Ok(Dets {
            boxes: Tensor::zeros((0, 4), DType::F32, &Device::Cpu)?,
            coefs: Tensor::zeros((0, mask_dim), DType::F32, &Device::Cpu)?,
            classes: Vec::new(),
            scores: Vec::new(),
        })
    }

    /// Keeps the rows listed in `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Result<Self> {
        if idx.is_empty() {
            return Ok(Dets::empty(self.coefs.dim(1)?)?);
        }
        let mut classes = Vec::with_capacity(idx.len());
        let mut scores = Vec::with_capacity(idx.len());
        for &i in idx {
            match (self.classes.get(i), self.scores.get(i)) {
                (Some(&c), Some(&s)) => {
                    classes.push(c);
                    scores.push(s);
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "Dets::select: row {i} out of range"
                    )))
                }
            }
        }
        let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let rows = Tensor::from_vec(rows, idx.len(), self.boxes.device())?;
        Ok(Dets {
            boxes: self.boxes.index_select(&rows, 0)?,
            coefs: self.coefs.index_select(&rows, 0)?,
            classes,
            scores,
        })
    }
}

/// One kept (prior, class) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kept {
    /// Index into the candidate list (the P' axis).
    pub cand: usize,
    pub class: u32,
    pub score: f32,
}

/// Host copy of the candidates: `scores` is (C, P') row-major.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// Original prior index of each candidate, ascending.
    pub priors: Vec<u32>,
    pub num_classes: usize,
    pub scores: Vec<f32>,
}

impl Candidates {
    pub fn len(&self) -> usize {
        self.priors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.priors.is_empty()
    }

    pub fn class_scores(&self, c: usize) -> &[f32] {
        let n = self.priors.len();
        &self.scores[c * n..(c + 1) * n]
    }
}
