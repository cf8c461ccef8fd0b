//! The pipeline's output: one instance per detection, in input-image pixels.

use serde::Serialize;

/// A binary mask of the full input image, row-major, 0/1 bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Mask {
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }
}

/// One detected instance.
#[derive(Debug, Clone)]
pub struct Detection {
    /// 0-based foreground class (0 = person).
    pub class_id: usize,
    /// Final score: class_score x mask_iou for YOLACT++, class_score for YOLACT.
    pub score: f32,
    /// Softmax probability of the class.
    pub class_score: f32,
    /// Predicted mask IoU (YOLACT++ only).
    pub mask_iou: Option<f32>,
    /// [x1, y1, x2, y2] in input pixels, clamped to the image, not truncated.
    pub bbox: [f32; 4],
    pub mask: Mask,
}

/// Per-image result.
#[derive(Debug, Clone)]
pub struct Detections {
    pub width: usize,
    pub height: usize,
    pub config: String,
    /// Sorted by `score`, descending.
    pub items: Vec<Detection>,
}

/// JSON form of one detection (the `yolact infer --json` contract).
#[derive(Debug, Serialize)]
pub struct DetectionJson {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
    pub class_score: f32,
    pub mask_iou: Option<f32>,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub mask: RleJson,
}

#[derive(Debug, Serialize)]
pub struct RleJson {
    pub size: [usize; 2],
    pub counts: String,
}
