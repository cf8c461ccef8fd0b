//! yolact_ros2: YOLACT / YOLACT++ instance segmentation in Rust.
//!
//! Data flows one way: image -> [`preprocess`] -> [`model`] (backbone, FPN, protonet, heads) ->
//! [`decode`] / [`fast_nms`] -> [`postprocess`] (masks, crop, mask-IoU rescoring) -> [`detection`].
//! Each stage is a pure function over tensors so a device-specific kernel can replace one stage at a
//! time.

pub mod bag;
pub mod coco;
pub mod coco_eval;
pub mod coco_export;
pub mod config;
pub mod cuda;
pub mod decode;
pub mod detection;
pub mod error;
pub mod fast_nms;
pub mod model;
pub mod msgs;
pub mod nms;
pub mod node;
pub mod ops;
pub mod overlay;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod priors;
pub mod replay;
pub mod rle;
pub mod synth;
pub mod tracking;
pub mod weights;

pub use config::YolactConfig;
pub use error::{Error, Result};
