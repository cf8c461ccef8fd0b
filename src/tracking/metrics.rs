//! Temporal-stability numbers computed from the tracker's per-frame associations, over a sliding
//! window and over the whole run. The user-facing explanation is `docs/stability.md`.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::tracker::FrameAssociation;
use crate::error::{Error, Result};

/// The extent of the sliding window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricsWindow {
    /// The last `n` frames (n >= 1).
    Frames(usize),
    /// Frames whose stamp is less than `t` seconds older than the newest frame's (t > 0).
    Seconds(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub window: MetricsWindow,
    /// A reappearance after 1..=`flicker_max_gap` missed frames counts as one flicker event.
    pub flicker_max_gap: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            window: MetricsWindow::Frames(30),
            flicker_max_gap: 3,
        }
    }
}

/// The stability numbers over one span of frames. Means over zero samples are NaN (JSON `null`);
/// the `*_samples` / `*_tracks` counts say how many samples a mean rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StabilityStats {
    /// Frames in the span.
    pub frames: u64,
    /// Newest stamp minus oldest stamp in the span, seconds.
    pub duration_s: f64,
    /// Mean number of instances per frame.
    pub instances_per_frame_mean: f64,
    /// Population standard deviation of the number of instances per frame.
    pub instances_per_frame_std: f64,
    /// Track-frames: instances that received a track ID, summed over frames.
    pub track_frames: u64,
    /// Mask stability: mean, over every instance whose track was also matched in the immediately
    /// preceding frame, of the IoU between its mask and that track's mask in the preceding frame.
    /// 1.0 means pixel-identical masks from frame to frame.
    pub mask_stability_mean: f64,
    /// Number of IoU samples behind `mask_stability_mean`.
    pub mask_stability_samples: u64,
    /// Box centre jitter: mean, over the same consecutive-frame samples, of
    /// `|c_t - c_{t-1}| / sqrt(w_{t-1} * h_{t-1})` where `c` is the box centre (Euclidean
    /// distance) and `w`, `h` the previous box's size. Samples with a degenerate previous box are
    /// skipped.
    pub box_centre_jitter_mean: f64,
    /// Box size jitter: mean of `|s_t - s_{t-1}| / s_{t-1}` with `s = sqrt(w * h)`, over the same
    /// samples as the centre jitter.
    pub box_size_jitter_mean: f64,
    /// Number of samples behind the two box jitter means.
    pub box_jitter_samples: u64,
    /// Score jitter: for each track with at least two instances in the span, the population
    /// standard deviation of its `score`; then the mean over those tracks. (Over the whole run a
    /// track's deviation is over its whole life.)
    pub score_std_mean: f64,
    /// Number of tracks behind `score_std_mean`.
    pub score_std_tracks: u64,
    /// Flicker events: instances whose track reappears after 1..=k missed frames
    /// (k = `MetricsConfig::flicker_max_gap`).
    pub flicker_events: u64,
    /// `100 * flicker_events / track_frames`.
    pub flicker_per_100_track_frames: f64,
    /// New track IDs issued in the span.
    pub births: u64,
    /// Tracks dropped in the span after exceeding the tracker's `max_misses`.
    pub deaths: u64,
    /// `births / frames`.
    pub births_per_frame: f64,
    /// `deaths / frames`.
    pub deaths_per_frame: f64,
}

/// Window and whole-run statistics; the payload of the diagnostics and replay reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StabilityReport {
    pub window: StabilityStats,
    pub run: StabilityStats,
}

/// Per-frame samples kept for the sliding window.
#[derive(Debug, Clone, Default)]
struct FrameSample {
    stamp: f64,
    instances: u64,
    births: u64,
    deaths: u64,
    ious: Vec<f64>,
    centre: Vec<f64>,
    size: Vec<f64>,
    scores: Vec<(u32, f64)>,
    flicker: u64,
}

/// Running mean and variance (Welford), so the whole-run numbers need O(1) memory per quantity.
#[derive(Debug, Clone, Copy, Default)]
struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    fn mean(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.mean
        }
    }
    fn std(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            (self.m2 / self.n as f64).max(0.0).sqrt()
        }
    }
}

#[derive(Debug, Clone, Default)]
struct RunTotals {
    frames: u64,
    first_stamp: Option<f64>,
    last_stamp: f64,
    instances: Welford,
    ious: Welford,
    centre: Welford,
    size: Welford,
    /// Score statistics of live tracks; folded into `score_std_done` when a track dies so memory
    /// stays bounded by the number of live tracks.
    live_scores: HashMap<u32, Welford>,
    score_std_done: Welford,
    flicker: u64,
    births: u64,
    deaths: u64,
    track_frames: u64,
}

/// Accumulates [`FrameAssociation`]s of one stream into stability statistics.
#[derive(Debug, Clone)]
pub struct StabilityMetrics {
    cfg: MetricsConfig,
    window: VecDeque<FrameSample>,
    run: RunTotals,
}

impl StabilityMetrics {
    pub fn new(cfg: MetricsConfig) -> Result<Self> {
        match cfg.window {
            MetricsWindow::Frames(0) => {
                return Err(Error::Config("metrics window must hold >= 1 frame".into()))
            }
            MetricsWindow::Seconds(t) if !(t > 0.0 && t.is_finite()) => {
                return Err(Error::Config(format!(
                    "metrics window must be > 0 s, got {t}"
                )))
            }
            _ => {}
        }
        Ok(StabilityMetrics {
            cfg,
            window: VecDeque::new(),
            run: RunTotals::default(),
        })
    }

    /// Forgets everything, window and run.
    pub fn reset(&mut self) {
        self.window.clear();
        self.run = RunTotals::default();
    }

    /// Call after [`super::Tracker::reset`]: the tracker's live tracks ended without a recorded
    /// death, so their score statistics are closed here and the window restarts.
    pub fn on_tracker_reset(&mut self) {
        for (_, w) in self.run.live_scores.drain() {
            if w.n >= 2 {
                self.run.score_std_done.push(w.std());
            }
        }
        self.window.clear();
    }

    /// Adds one frame's association. A stamp older than the newest windowed frame (or not finite)
    /// means a time jump, so the window restarts; the run totals continue.
    pub fn observe(&mut self, frame: &FrameAssociation) {
        if self
            .window
            .back()
            .is_some_and(|b| !frame.stamp.is_finite() || frame.stamp < b.stamp)
        {
            self.window.clear();
        }
        let k = u64::from(self.cfg.flicker_max_gap);
        let mut s = FrameSample {
            stamp: frame.stamp,
            instances: frame.observations.len() as u64,
            deaths: frame.deaths.len() as u64,
            ..Default::default()
        };
        for o in &frame.observations {
            let score = f64::from(o.score);
            s.scores.push((o.track_id, score));
            self.run
                .live_scores
                .entry(o.track_id)
                .or_default()
                .push(score);
            match o.frames_since_seen {
                0 => s.births += 1,
                1 => {
                    if let Some(iou) = o.iou_with_last {
                        s.ious.push(iou);
                    }
                    if let Some(prev) = o.last_bbox {
                        if let Some((c, z)) = box_jitter(&prev, &o.bbox) {
                            s.centre.push(c);
                            s.size.push(z);
                        }
                    }
                }
                gap => {
                    if gap - 1 <= k {
                        s.flicker += 1;
                    }
                }
            }
        }
        for id in &frame.deaths {
            if let Some(w) = self.run.live_scores.remove(id) {
                if w.n >= 2 {
                    self.run.score_std_done.push(w.std());
                }
            }
        }

        let r = &mut self.run;
        r.frames += 1;
        r.first_stamp.get_or_insert(frame.stamp);
        r.last_stamp = frame.stamp;
        r.instances.push(s.instances as f64);
        s.ious.iter().for_each(|&v| r.ious.push(v));
        s.centre.iter().for_each(|&v| r.centre.push(v));
        s.size.iter().for_each(|&v| r.size.push(v));
        r.flicker += s.flicker;
        r.births += s.births;
        r.deaths += s.deaths;
        r.track_frames += s.instances;

        self.window.push_back(s);
        match self.cfg.window {
            MetricsWindow::Frames(n) => {
                while self.window.len() > n {
                    self.window.pop_front();
                }
            }
            MetricsWindow::Seconds(t) => {
                while self
                    .window
                    .front()
                    .is_some_and(|f| frame.stamp - f.stamp >= t)
                {
                    self.window.pop_front();
                }
            }
        }
    }

    /// The current window and whole-run statistics.
    pub fn snapshot(&self) -> StabilityReport {
        StabilityReport {
            window: self.window_stats(),
            run: self.run_stats(),
        }
    }

    fn window_stats(&self) -> StabilityStats {
        let mut inst = Welford::default();
        let (mut ious, mut centre, mut size) =
            (Welford::default(), Welford::default(), Welford::default());
        let mut per_track: HashMap<u32, Welford> = HashMap::new();
        let (mut flicker, mut births, mut deaths, mut track_frames) = (0, 0, 0, 0);
        for f in &self.window {
            inst.push(f.instances as f64);
            f.ious.iter().for_each(|&v| ious.push(v));
            f.centre.iter().for_each(|&v| centre.push(v));
            f.size.iter().for_each(|&v| size.push(v));
            for &(id, sc) in &f.scores {
                per_track.entry(id).or_default().push(sc);
            }
            flicker += f.flicker;
            births += f.births;
            deaths += f.deaths;
            track_frames += f.instances;
        }
        let mut score_std = Welford::default();
        per_track
            .values()
            .filter(|w| w.n >= 2)
            .for_each(|w| score_std.push(w.std()));
        let duration = match (self.window.front(), self.window.back()) {
            (Some(a), Some(b)) => b.stamp - a.stamp,
            _ => 0.0,
        };
        assemble(
            self.window.len() as u64,
            duration,
            &inst,
            &ious,
            &centre,
            &size,
            &score_std,
            flicker,
            births,
            deaths,
            track_frames,
        )
    }

    fn run_stats(&self) -> StabilityStats {
        let r = &self.run;
        let mut score_std = r.score_std_done;
        r.live_scores
            .values()
            .filter(|w| w.n >= 2)
            .for_each(|w| score_std.push(w.std()));
        let duration = r.first_stamp.map_or(0.0, |s0| r.last_stamp - s0);
        assemble(
            r.frames,
            duration,
            &r.instances,
            &r.ious,
            &r.centre,
            &r.size,
            &score_std,
            r.flicker,
            r.births,
            r.deaths,
            r.track_frames,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    frames: u64,
    duration_s: f64,
    inst: &Welford,
    ious: &Welford,
    centre: &Welford,
    size: &Welford,
    score_std: &Welford,
    flicker: u64,
    births: u64,
    deaths: u64,
    track_frames: u64,
) -> StabilityStats {
    let per = |x: u64, n: u64| {
        if n == 0 {
            f64::NAN
        } else {
            x as f64 / n as f64
        }
    };
    StabilityStats {
        frames,
        duration_s,
        instances_per_frame_mean: inst.mean(),
        instances_per_frame_std: inst.std(),
        track_frames,
        mask_stability_mean: ious.mean(),
        mask_stability_samples: ious.n,
        box_centre_jitter_mean: centre.mean(),
        box_size_jitter_mean: size.mean(),
        box_jitter_samples: centre.n,
        score_std_mean: score_std.mean(),
        score_std_tracks: score_std.n,
        flicker_events: flicker,
        flicker_per_100_track_frames: 100.0 * per(flicker, track_frames),
        births,
        deaths,
        births_per_frame: per(births, frames),
        deaths_per_frame: per(deaths, frames),
    }
}

/// Normalised centre shift and size change between two boxes, or `None` for a degenerate previous
/// box (see [`StabilityStats::box_centre_jitter_mean`]).
pub fn box_jitter(prev: &[f32; 4], cur: &[f32; 4]) -> Option<(f64, f64)> {
    let f = |b: &[f32; 4]| {
        let (x1, y1, x2, y2) = (
            f64::from(b[0]),
            f64::from(b[1]),
            f64::from(b[2]),
            f64::from(b[3]),
        );
        let (w, h) = ((x2 - x1).max(0.0), (y2 - y1).max(0.0));
        ((x1 + x2) / 2.0, (y1 + y2) / 2.0, (w * h).sqrt())
    };
    let (px, py, ps) = f(prev);
    let (cx, cy, cs) = f(cur);
    if ps <= 0.0 || !ps.is_finite() {
        return None;
    }
    let centre = ((cx - px).powi(2) + (cy - py).powi(2)).sqrt() / ps;
    let size = (cs - ps).abs() / ps;
    Some((centre, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::tracker::TrackObservation;

    fn frame(stamp: f64, n: usize) -> FrameAssociation {
        FrameAssociation {
            frame_index: 0,
            stamp,
            observations: (0..n)
                .map(|i| TrackObservation {
                    track_id: i as u32,
                    input_index: i,
                    class_id: 0,
                    score: 0.5,
                    bbox: [0.0, 0.0, 10.0, 10.0],
                    frames_since_seen: 1,
                    iou_with_last: Some(0.5),
                    last_bbox: Some([1.0, 0.0, 11.0, 10.0]),
                    last_score: Some(0.5),
                })
                .collect(),
            deaths: vec![],
            live_tracks: n,
        }
    }

    #[test]
    fn time_jump_restarts_the_window_only() {
        let mut m = StabilityMetrics::new(MetricsConfig {
            window: MetricsWindow::Seconds(10.0),
            flicker_max_gap: 3,
        })
        .unwrap();
        for k in 0..5 {
            m.observe(&frame(100.0 + k as f64, 2));
        }
        m.observe(&frame(3.0, 4));
        let r = m.snapshot();
        assert_eq!(r.window.frames, 1);
        assert_eq!(r.window.instances_per_frame_mean, 4.0);
        assert_eq!(r.run.frames, 6);
        assert_eq!(r.run.track_frames, 14);
        assert!((r.run.box_centre_jitter_mean - 0.1).abs() < 1e-12);
    }

    #[test]
    fn rejects_empty_windows() {
        for window in [
            MetricsWindow::Frames(0),
            MetricsWindow::Seconds(0.0),
            MetricsWindow::Seconds(f64::NAN),
        ] {
            let cfg = MetricsConfig {
                window,
                flicker_max_gap: 1,
            };
            assert!(StabilityMetrics::new(cfg).is_err());
        }
    }

    #[test]
    fn box_jitter_definition() {
        // Centre moves by (3, 4) -> 5 px; previous box 10 x 40 -> scale 20; new box 20 x 20.
        let (c, s) = box_jitter(&[0.0, 0.0, 10.0, 40.0], &[-2.0, 14.0, 18.0, 34.0]).unwrap();
        assert!((c - 5.0 / 20.0).abs() < 1e-12);
        assert!(s.abs() < 1e-12);
        assert!(box_jitter(&[5.0, 5.0, 5.0, 9.0], &[0.0, 0.0, 1.0, 1.0]).is_none());
    }
}
