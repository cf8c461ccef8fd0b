//! Training data: COCO-format annotation files with an image folder, the reference's
//! deterministic transform and `SSDAugmentation`, and a multi-threaded loader.

pub mod sample;

pub use sample::{Batch, GroundTruth, Sample, Truth};
