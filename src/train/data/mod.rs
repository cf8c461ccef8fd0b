//! Training data: COCO-format annotation files with an image folder, the reference's
//! deterministic transform and `SSDAugmentation`, and a multi-threaded loader.
//!
//! [`dataset`] (which images, labels, crowds; checks) -> [`transform`] (the reference's steps on
//! one image) with [`augment`] (the random steps) and [`resize`] (OpenCV's bilinear) ->
//! [`sample`] (what the loss gets) <- [`loader`] (threads, epochs, order, resume).

pub mod augment;
pub mod dataset;
pub mod loader;
pub mod resize;
pub mod sample;
pub mod transform;

pub use augment::AugmentFlags;
pub use dataset::{Skipped, TrainSet};
pub use loader::{Loader, LoaderOptions};
pub use sample::{Batch, GroundTruth, Sample, Truth};
