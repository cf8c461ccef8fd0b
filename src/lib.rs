//! yolact_ros2: YOLACT / YOLACT++ instance segmentation in Rust.
//!
//! Data flows one way, and the folders name the stages:
//! image -> [`engine`] (preprocess, priors, the [`engine::Engine`]) -> [`model`] (backbone, FPN,
//! protonet, heads; custom ops in [`ops`]) -> [`post`] (decode, Fast NMS, masks, mask-IoU rescoring)
//! -> [`output`] (detections, RLE, overlay) -> messages ([`msgs`], [`node`], [`replay`]).
//! [`eval`] scores detections against COCO annotations; [`weights`] reads checkpoints.
//! Each stage is a pure function over tensors so a device-specific kernel can replace one stage at a
//! time.

pub mod bag;
pub mod config;
pub mod cuda;
pub mod depth;
pub mod engine;
pub mod error;
pub mod eval;
pub mod model;
pub mod msgs;
pub mod node;
pub mod ops;
pub mod output;
pub mod post;
pub mod replay;
pub mod scenes;
pub mod tracking;
pub mod train;
pub mod weights;

pub use config::YolactConfig;

/// The log filter when `RUST_LOG` is unset: this package (library `yolact_ros2`, binary `yolact`)
/// at info, every dependency at warn; the DDS stack alone logs ~150 INFO lines while discovering.
pub const DEFAULT_LOG_FILTER: &str = "warn,yolact_ros2=info,yolact=info";
pub use error::{Error, Result};
