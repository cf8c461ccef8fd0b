//! Instances in 3D from an aligned (registered) depth image: each mask becomes the depth camera's
//! points under it, a centroid, an axis-aligned and an oriented box, in the depth camera's optical
//! frame (x right, y down, z forward, metres).
//!
//! One job per module, all pure functions over plain data so the node and the replay share them:
//! [`camera`] (pinhole intrinsics from `CameraInfo`, colour <-> depth pixel mapping), [`image`]
//! (16UC1 / 32FC1 decoding to metres), [`mask`] (erosion by a margin), [`robust`] (median + MAD
//! rejection along the ray), [`geometry`] (centroid, boxes, PCA), [`instance`] (one mask to one
//! [`Instance3d`] or "not enough depth"), [`frame`] (a colour frame's detections and its depth
//! frame to the 3D outputs, for the node and the replay) and [`pairing`] (colour/depth stamp
//! pairing).

pub mod camera;
pub mod frame;
pub mod geometry;
pub mod image;
pub mod instance;
pub mod mask;
pub mod pairing;
pub mod robust;

pub use camera::CameraModel;
pub use frame::{locate_frame, Frame3d};
pub use geometry::{Aabb, OrientedBox, PointStats};
pub use image::{DepthEncoding, DepthImage};
pub use instance::{instance_3d, Depth3dOptions, Instance3d, Instance3dResult};
pub use pairing::{Pair, PairerStats, StampPairer};

/// The `CameraInfo` topic a driver publishes next to an image topic: `camera_info` in the same
/// namespace (`/camera/aligned_depth_to_color/image_raw` -> `/camera/aligned_depth_to_color/camera_info`).
pub fn camera_info_next_to(image_topic: &str) -> String {
    match image_topic.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/camera_info"),
        None => "camera_info".to_string(),
    }
}

/// What can be wrong with depth input. Every variant names the offending value, so a diagnostic
/// can be shown as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DepthError {
    /// A focal length that is zero, negative or not finite (a `CameraInfo` never filled in).
    #[error("camera_info: focal length fx = {fx}, fy = {fy}; both must be finite and > 0")]
    FocalLength { fx: f64, fy: f64 },
    /// A principal point that is not finite.
    #[error("camera_info: principal point ({cx}, {cy}) is not finite")]
    PrincipalPoint { cx: f64, cy: f64 },
    /// `K` must hold 9 values (row-major 3x3).
    #[error("camera_info: K has {0} values, expected 9")]
    KLength(usize),
    /// A zero image size in `CameraInfo` or the depth image.
    #[error("{what}: size {width}x{height} is empty")]
    EmptySize {
        what: &'static str,
        width: u32,
        height: u32,
    },
    /// The depth image and its `CameraInfo` disagree on the size.
    #[error("depth image is {image_w}x{image_h} but its camera_info says {info_w}x{info_h}")]
    SizeMismatch {
        image_w: u32,
        image_h: u32,
        info_w: u32,
        info_h: u32,
    },
    /// A depth encoding other than 16UC1 (mono16) or 32FC1.
    #[error("depth encoding `{0}` is not supported (16UC1 / mono16 in units, 32FC1 in metres)")]
    Encoding(String),
    /// `step` or `data` too short for the size and encoding.
    #[error("depth image: {0}")]
    Layout(String),
    /// A units scale that is zero, negative or not finite.
    #[error("depth scale {0} must be finite and > 0")]
    Scale(f64),
    /// Options that contradict each other (min depth above max depth, ...).
    #[error("depth options: {0}")]
    Options(String),
    /// A depth message that does not decode (CDR).
    #[error("depth image: {0}")]
    Message(String),
    /// A mask whose size is not the colour camera's.
    #[error("mask is {mask_w}x{mask_h} but the colour image is {colour_w}x{colour_h}")]
    MaskSize {
        mask_w: usize,
        mask_h: usize,
        colour_w: u32,
        colour_h: u32,
    },
}
