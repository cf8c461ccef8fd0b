//! What the data stage hands the loss: one transformed image with its ground truth, and a batch of
//! them. Layouts follow the reference's `pull_item` / `detection_collate`.

use std::path::PathBuf;

use candle_core::{Device, Result, Tensor};

/// One image after the transform, as the reference's `pull_item` returns it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// (3, size, size) CHW, normalised as the config's transform says, channels RGB.
    pub image: Vec<f32>,
    /// The square input side (the config's `max_size`).
    pub size: usize,
    pub truth: Truth,
    pub image_id: u64,
    pub file: PathBuf,
}

/// The ground truth of one image in the network's input frame. Crowd rows come last (the loss
/// splits them off by count), as in the reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Truth {
    /// Relative (x1, y1, x2, y2) over the input image, not clipped.
    pub boxes: Vec<[f32; 4]>,
    /// Contiguous class index 0..num_classes-1 (the label map applied); -1 for crowds.
    pub labels: Vec<i64>,
    /// (K, size, size) 0/1 masks, row-major, in the order of `boxes`.
    pub masks: Vec<u8>,
    pub num_crowds: usize,
}

impl Truth {
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}

/// [`Truth`] as tensors on the training device.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    /// (K, 4) f32 relative x1y1x2y2, crowds last.
    pub boxes: Tensor,
    /// Length K; -1 for crowds.
    pub labels: Vec<i64>,
    /// (K, S, S) f32 0/1.
    pub masks: Tensor,
    pub num_crowds: usize,
}

impl GroundTruth {
    pub fn new(truth: &Truth, size: usize, device: &Device) -> Result<Self> {
        let k = truth.len();
        if truth.labels.len() != k || truth.masks.len() != k * size * size || truth.num_crowds > k {
            candle_core::bail!(
                "ground truth of {k} boxes has {} labels, {} mask pixels (want {}) and {} crowds",
                truth.labels.len(),
                truth.masks.len(),
                k * size * size,
                truth.num_crowds
            );
        }
        let flat: Vec<f32> = truth.boxes.iter().flatten().copied().collect();
        let masks: Vec<f32> = truth.masks.iter().map(|&m| f32::from(m)).collect();
        Ok(Self {
            boxes: Tensor::from_vec(flat, (k, 4), device)?,
            labels: truth.labels.clone(),
            masks: Tensor::from_vec(masks, (k, size, size), device)?,
            num_crowds: truth.num_crowds,
        })
    }
}

/// A training batch: the stacked images and each image's ground truth.
#[derive(Debug, Clone)]
pub struct Batch {
    /// (B, 3, S, S) f32.
    pub images: Tensor,
    pub truths: Vec<GroundTruth>,
    /// The dataset image ids, in batch order.
    pub image_ids: Vec<u64>,
}

impl Batch {
    pub fn from_samples(samples: &[Sample], device: &Device) -> Result<Self> {
        let Some(first) = samples.first() else {
            candle_core::bail!("a batch needs at least one sample");
        };
        let s = first.size;
        let mut images = Vec::with_capacity(samples.len() * 3 * s * s);
        let mut truths = Vec::with_capacity(samples.len());
        for sample in samples {
            if sample.size != s || sample.image.len() != 3 * s * s {
                candle_core::bail!(
                    "image {} is {} values of side {}, the batch's side is {s}",
                    sample.file.display(),
                    sample.image.len(),
                    sample.size
                );
            }
            images.extend_from_slice(&sample.image);
            truths.push(GroundTruth::new(&sample.truth, s, device)?);
        }
        Ok(Self {
            images: Tensor::from_vec(images, (samples.len(), 3, s, s), device)?,
            truths,
            image_ids: samples.iter().map(|x| x.image_id).collect(),
        })
    }
}
