use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use image::{Rgb, RgbImage};
use serde_json::json;
use yolact_ros2::pipeline::StageTimes;
use yolact_ros2::preprocess::load_image;

use super::{DetectArgs, ModelArgs};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    /// Timed iterations (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Image to run; a synthetic 640x480 scene when omitted.
    pub image: Option<PathBuf>,
}

/// Median, min and max of a sample, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(samples: &[Duration]) -> Spread {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Spread {
            median,
            min: ms.first().copied().unwrap_or(f64::NAN),
            max: ms.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"median": self.median, "min": self.min, "max": self.max})
    }
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if a.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let opts = a.detect.options()?;
    let img = match &a.image {
        Some(p) => load_image(p)?,
        None => synthetic_scene(640, 480),
    };
    let engine = a.model.load()?;
    for _ in 0..a.warmup {
        engine.infer_timed(&img, &opts)?;
    }
    let mut frames = Vec::with_capacity(a.iters);
    let mut stages: Vec<StageTimes> = Vec::with_capacity(a.iters);
    let mut n_dets = 0;
    for _ in 0..a.iters {
        let (dets, t) = engine.infer_timed(&img, &opts)?;
        n_dets = dets.items.len();
        frames.push(t.total());
        stages.push(t);
    }
    let frame = Spread::of(&frames);
    let per_stage: Vec<(&str, Spread)> = StageTimes::NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                *name,
                Spread::of(&stages.iter().map(|s| s.as_array()[i]).collect::<Vec<_>>()),
            )
        })
        .collect();
    let fps = 1000.0 / frame.median;
    let device = format!("{:?}", engine.device()).to_lowercase();
    let (w, h) = img.dimensions();
    if a.json {
        let stages_json: serde_json::Map<String, serde_json::Value> = per_stage
            .iter()
            .map(|(n, s)| (n.to_string(), s.json()))
            .collect();
        let v = json!({
            "config": engine.config().name,
            "device": device,
            "image": {"width": w, "height": h},
            "iters": a.iters,
            "warmup": a.warmup,
            "detections": n_dets,
            "frame_ms": frame.json(),
            "stages": stages_json,
            "fps": fps,
        });
        println!("{v}");
    } else {
        println!(
            "{} on {device}, {w}x{h} image, {} iterations after {} warm-up, {n_dets} detections",
            engine.config().name,
            a.iters,
            a.warmup
        );
        println!(
            "{:<12} {:>10} {:>10} {:>10}",
            "stage (ms)", "median", "min", "max"
        );
        for (n, s) in per_stage.iter().chain(std::iter::once(&("frame", frame))) {
            println!("{n:<12} {:>10.2} {:>10.2} {:>10.2}", s.median, s.min, s.max);
        }
        println!("FPS (median frame): {fps:.2}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A deterministic test scene: gradients and a few solid shapes.
pub fn synthetic_scene(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let in_disc = (fx - 0.3).powi(2) + (fy - 0.5).powi(2) < 0.04;
        let in_rect = (0.55..0.85).contains(&fx) && (0.2..0.7).contains(&fy);
        if in_disc {
            Rgb([220, 40, 40])
        } else if in_rect {
            Rgb([40, 60, 200])
        } else {
            Rgb([(255.0 * fx) as u8, (255.0 * fy) as u8, 128])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_min_max() {
        let d = |ms: u64| Duration::from_millis(ms);
        let s = Spread::of(&[d(5), d(1), d(3)]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        let s = Spread::of(&[d(4), d(2)]);
        assert_eq!(s.median, 3.0);
    }
}
