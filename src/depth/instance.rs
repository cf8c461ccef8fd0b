//! One mask and one aligned depth image to one instance in 3D: erode the mask, sample the depth
//! pixels under it, drop invalid readings, reject outliers along the ray, back-project, summarise.
//! Too few points left is a result of its own, never a box made up from them.

use super::camera::{CameraModel, PixelMap};
use super::geometry::PointStats;
use super::image::DepthImage;
use super::mask::{erode, window};
use super::robust::depth_band;
use super::DepthError;
use crate::output::detection::Mask;

/// How depth readings are chosen (the node's `depth.*` parameters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Depth3dOptions {
    /// Erosion of the mask before sampling, in colour pixels.
    pub erosion_px: usize,
    /// Readings outside `[min_depth, max_depth]` metres are invalid.
    pub min_depth: f64,
    pub max_depth: f64,
    /// Core band half-width in robust standard deviations (1.4826 MAD); 0 turns rejection off.
    pub outlier_k: f64,
    /// The band grows over sorted depths while consecutive readings are at most this far apart
    /// (metres): a continuous surface is kept, background behind a gap is not.
    pub max_gap: f64,
    /// Fewer points than this after rejection: not enough depth.
    pub min_points: usize,
}

impl Default for Depth3dOptions {
    fn default() -> Self {
        Self {
            erosion_px: 2,
            min_depth: 0.1,
            max_depth: 10.0,
            outlier_k: 3.0,
            max_gap: 0.02,
            min_points: 20,
        }
    }
}

impl Depth3dOptions {
    pub fn validate(&self) -> Result<(), DepthError> {
        let bad = |m: String| Err(DepthError::Options(m));
        if !(self.min_depth.is_finite() && self.max_depth.is_finite() && self.min_depth >= 0.0) {
            return bad(format!(
                "depth range [{}, {}] must be finite and non-negative",
                self.min_depth, self.max_depth
            ));
        }
        if self.min_depth >= self.max_depth {
            return bad(format!(
                "min depth {} must be below max depth {}",
                self.min_depth, self.max_depth
            ));
        }
        if !(self.outlier_k.is_finite() && self.outlier_k >= 0.0) {
            return bad(format!(
                "outlier k {} must be finite and >= 0",
                self.outlier_k
            ));
        }
        if !(self.max_gap.is_finite() && self.max_gap >= 0.0) {
            return bad(format!("max gap {} must be finite and >= 0", self.max_gap));
        }
        if self.min_points == 0 {
            return bad("min points must be at least 1".into());
        }
        Ok(())
    }
}

/// An instance located in 3D, in the depth camera's optical frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance3d {
    pub stats: PointStats,
    /// Depth pixels under the eroded mask.
    pub sampled: usize,
    /// Of those, readings in the valid range (before outlier rejection).
    pub valid: usize,
    /// `valid / sampled`.
    pub valid_fraction: f64,
    /// The points kept, metres.
    pub points: Vec<[f32; 3]>,
}

/// The outcome for one instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Instance3dResult {
    Located(Instance3d),
    /// Fewer than `required` points survived (empty or fully eroded mask, no depth under it,
    /// everything out of range or rejected).
    NotEnoughDepth {
        sampled: usize,
        valid: usize,
        kept: usize,
        required: usize,
    },
}

impl Instance3dResult {
    pub fn located(&self) -> Option<&Instance3d> {
        match self {
            Self::Located(i) => Some(i),
            Self::NotEnoughDepth { .. } => None,
        }
    }
}

/// The depth pixel range `[lo, hi)` whose centres can map into colour pixels `[c0, c1)`.
fn depth_range(
    c0: usize,
    c1: usize,
    colour_to_depth: impl Fn(f64) -> f64,
    n: u32,
) -> (usize, usize) {
    let a = colour_to_depth(c0 as f64 - 0.5);
    let b = colour_to_depth(c1 as f64 - 0.5);
    let (a, b) = (a.min(b), a.max(b));
    let lo = a.floor().max(0.0) as usize;
    let hi = (b.ceil() + 1.0).clamp(0.0, f64::from(n)) as usize;
    (lo.min(n as usize), hi)
}

/// Locates one instance. `mask` is in colour pixels (`colour`'s size); `depth` is aligned with
/// the colour image (same optical frame) and described by `depth_cam`, possibly at another
/// resolution. Errors are inputs that disagree; a mask without enough depth is `Ok`.
pub fn instance_3d(
    mask: &Mask,
    colour: &CameraModel,
    depth_cam: &CameraModel,
    depth: &DepthImage,
    opts: &Depth3dOptions,
) -> Result<Instance3dResult, DepthError> {
    if depth.width != depth_cam.width || depth.height != depth_cam.height {
        return Err(DepthError::SizeMismatch {
            image_w: depth.width,
            image_h: depth.height,
            info_w: depth_cam.width,
            info_h: depth_cam.height,
        });
    }
    if mask.width != colour.width as usize || mask.height != colour.height as usize {
        return Err(DepthError::MaskSize {
            mask_w: mask.width,
            mask_h: mask.height,
            colour_w: colour.width,
            colour_h: colour.height,
        });
    }
    let not_enough = |sampled, valid, kept| {
        Ok(Instance3dResult::NotEnoughDepth {
            sampled,
            valid,
            kept,
            required: opts.min_points,
        })
    };
    let Some(win) = window(mask) else {
        return not_enough(0, 0, 0);
    };
    let eroded = erode(&win, opts.erosion_px, mask.width, mask.height);

    let d2c = PixelMap::new(depth_cam, colour);
    let c2d = d2c.inverse();
    let (u0, u1) = depth_range(
        eroded.x0,
        eroded.x0 + eroded.width,
        |u| c2d.map(u, 0.0)[0],
        depth.width,
    );
    let (v0, v1) = depth_range(
        eroded.y0,
        eroded.y0 + eroded.height,
        |v| c2d.map(0.0, v)[1],
        depth.height,
    );
    // The map is separable: colour column per depth column, colour row per depth row.
    let cols: Vec<Option<usize>> = (u0..u1)
        .map(|u| d2c.map_column(u, colour.width as usize))
        .collect();

    let mut sampled = 0usize;
    let mut readings: Vec<(usize, usize, f64)> = Vec::new();
    for v in v0..v1 {
        let Some(cv) = d2c.map_row(v, colour.height as usize) else {
            continue;
        };
        for (u, cu) in (u0..u1).zip(&cols) {
            let Some(cu) = *cu else { continue };
            if !eroded.contains(cu, cv) {
                continue;
            }
            sampled += 1;
            let z = f64::from(depth.at(u, v));
            if z.is_finite() && z >= opts.min_depth && z <= opts.max_depth {
                readings.push((u, v, z));
            }
        }
    }
    let valid = readings.len();
    if valid < opts.min_points {
        return not_enough(sampled, valid, valid);
    }
    if opts.outlier_k > 0.0 {
        let z: Vec<f64> = readings.iter().map(|r| r.2).collect();
        if let Some((lo, hi)) = depth_band(&z, opts.outlier_k, opts.max_gap) {
            readings.retain(|r| r.2 >= lo && r.2 <= hi);
        }
    }
    if readings.len() < opts.min_points {
        return not_enough(sampled, valid, readings.len());
    }
    let points: Vec<[f32; 3]> = readings
        .iter()
        .map(|&(u, v, z)| {
            let p = depth_cam.back_project(u as f64, v as f64, z);
            [p[0] as f32, p[1] as f32, p[2] as f32]
        })
        .collect();
    let Some(stats) = PointStats::from_points(&points) else {
        return not_enough(sampled, valid, 0);
    };
    Ok(Instance3dResult::Located(Instance3d {
        stats,
        sampled,
        valid,
        valid_fraction: valid as f64 / sampled.max(1) as f64,
        points,
    }))
}
