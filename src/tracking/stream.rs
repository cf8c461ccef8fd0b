//! One camera stream's tracker and metrics behind a single call per frame.

use super::metrics::{MetricsConfig, StabilityMetrics, StabilityReport};
use super::tracker::{TrackInput, Tracker, TrackerConfig};
use crate::error::Result;
use crate::output::detection::Detection;

/// What a node or a replay needs per camera stream: IDs for the messages and the stability report.
#[derive(Debug, Clone)]
pub struct StreamStability {
    tracker: Tracker,
    metrics: StabilityMetrics,
}

impl StreamStability {
    pub fn new(tracker: TrackerConfig, metrics: MetricsConfig) -> Result<Self> {
        Ok(StreamStability {
            tracker: Tracker::new(tracker)?,
            metrics: StabilityMetrics::new(metrics)?,
        })
    }

    /// Tracks one frame and feeds the metrics; returns a track ID per input.
    pub fn update(&mut self, stamp: f64, inputs: &[TrackInput]) -> Result<Vec<u32>> {
        let assoc = self.tracker.update_detailed(stamp, inputs)?;
        self.metrics.observe(assoc);
        Ok(assoc.observations.iter().map(|o| o.track_id).collect())
    }

    /// As [`StreamStability::update`], from the pipeline's detections.
    pub fn update_detections(&mut self, stamp: f64, detections: &[Detection]) -> Result<Vec<u32>> {
        let inputs = detections
            .iter()
            .map(TrackInput::try_from)
            .collect::<Result<Vec<_>>>()?;
        self.update(stamp, &inputs)
    }

    /// After a time jump (stamp going backwards): drops the tracks and restarts the window; the
    /// whole-run totals continue.
    pub fn reset(&mut self) {
        self.tracker.reset();
        self.metrics.on_tracker_reset();
    }

    pub fn snapshot(&self) -> StabilityReport {
        self.metrics.snapshot()
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn metrics(&self) -> &StabilityMetrics {
        &self.metrics
    }
}
