//! Temporal stability: a per-stream instance tracker and the stability metrics computed from it.
//!
//! [`Tracker`] gives each instance a stable `track_id` by optimal (Kuhn-Munkres) mask-IoU matching
//! against the previous frames' tracks; [`StabilityMetrics`] turns its per-frame
//! [`FrameAssociation`]s into the numbers of `docs/stability.md`; [`MotEvaluator`] counts ID
//! switches and fragmentation where ground-truth identities are known; [`StreamStability`] bundles a
//! tracker and its metrics for one camera stream.

pub mod mask_region;
pub mod metrics;
pub mod mot;
pub mod stream;
pub mod tracker;

pub use mask_region::BoxMask;
pub use metrics::{
    MetricsConfig, MetricsWindow, StabilityMetrics, StabilityReport, StabilityStats,
};
pub use mot::{MotEvaluator, MotReport};
pub use stream::StreamStability;
pub use tracker::{FrameAssociation, TrackInput, TrackObservation, Tracker, TrackerConfig};
