use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use image::{Rgb, RgbImage};
use serde::Serialize;
use yolact_ros2::cuda::timing::{mib, GpuMemMeter, MemReport};
use yolact_ros2::engine::preprocess::load_image;
use yolact_ros2::engine::{ClockKind, StageTimes};

use super::{DetectArgs, ModelArgs};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    /// Timed iterations (after the warm-up). BENCHMARKS.md's GPU figures use `--iters 100
    /// --warmup 10` (medians of at least 100 frames).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Replay the network (backbone .. heads) as one captured CUDA graph, batch 1. Experimental,
    /// unverified on a GPU. CUDA only; when the capture fails the run goes on eagerly, with one
    /// log line saying why. The network's time is then one stage, `network`.
    #[arg(long)]
    pub cuda_graph: bool,
    /// Time the stages with the wall clock and a device synchronize at each stage boundary, even
    /// on CUDA (where the default is CUDA events with one wait per frame).
    #[arg(long)]
    pub wall_clock: bool,
    /// Image to run; a synthetic 640x480 scene when omitted.
    pub image: Option<PathBuf>,
}

/// Median, min and max of a sample, in ms.
#[derive(Debug, Clone, Copy, Serialize)]
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
    let mut engine = a.model.load()?;
    if a.wall_clock {
        engine.set_clock(ClockKind::Wall)?;
    }
    let (graph, graph_error) = if a.cuda_graph {
        match engine.capture_network() {
            Ok(g) => (Some(g), None),
            Err(e) => {
                log::warn!("--cuda-graph: capture failed, running the network eagerly: {e}");
                (None, Some(e.to_string()))
            }
        }
    } else {
        (None, None)
    };
    let frame = |img: &RgbImage| match &graph {
        Some(g) => engine.infer_timed_graph(g, img, &opts),
        None => engine.infer_timed(img, &opts),
    };
    for _ in 0..a.warmup {
        frame(&img)?;
    }
    // After the warm-up, so the high-water marks are those of steady-state frames.
    let mut meter = GpuMemMeter::for_device(engine.device())?;
    let mut stages: Vec<StageTimes> = Vec::with_capacity(a.iters);
    let mut n_dets = 0;
    for _ in 0..a.iters {
        let (dets, t) = frame(&img)?;
        if let Some(m) = meter.as_mut() {
            m.sample()?;
        }
        n_dets = dets.items.len();
        stages.push(t);
    }
    let memory = meter.map(|m| m.report()).transpose()?;
    let (w, h) = img.dimensions();
    let r = Report {
        config: engine.config().name.to_string(),
        device: format!("{:?}", engine.device()).to_lowercase(),
        dtype: format!("{:?}", engine.dtype()).to_lowercase(),
        image: (w, h),
        iters: a.iters,
        warmup: a.warmup,
        detections: n_dets,
        clock: engine.clock(),
        cuda_graph: graph.is_some(),
        cuda_graph_error: graph_error,
        stages: stage_spreads(&stages, graph.is_some()),
        frame: Spread::of(&stages.iter().map(|t| t.total()).collect::<Vec<_>>()),
        memory,
    };
    if a.json {
        println!("{}", r.json()?);
    } else {
        print!("{}", r.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// Median and spread of each reported stage. A graph replay runs backbone .. heads as one launch,
/// reported as `network` (its time is in [`StageTimes::backbone`]).
pub fn stage_spreads(stages: &[StageTimes], graph: bool) -> Vec<(&'static str, Spread)> {
    let columns: Vec<(&'static str, usize)> = if graph {
        vec![("preprocess", 0), ("network", 1), ("nms", 5), ("masks", 6)]
    } else {
        StageTimes::NAMES.iter().copied().zip(0..).collect()
    };
    columns
        .into_iter()
        .map(|(name, i)| {
            let samples: Vec<Duration> = stages.iter().map(|s| s.as_array()[i]).collect();
            (name, Spread::of(&samples))
        })
        .collect()
}

/// The JSON form of a [`Report`].
#[derive(Serialize)]
struct ReportJson<'a> {
    config: &'a str,
    device: &'a str,
    dtype: &'a str,
    image: ImageSize,
    iters: usize,
    warmup: usize,
    detections: usize,
    clock: &'static str,
    cuda_graph: bool,
    cuda_graph_error: Option<&'a str>,
    frame_ms: Spread,
    stages: std::collections::BTreeMap<&'static str, Spread>,
    fps: f64,
    peak_gpu_mem_mib: Option<f64>,
    gpu_mem_source: Option<&'static str>,
    device_used_max_mib: Option<f64>,
}

#[derive(Serialize)]
struct ImageSize {
    width: u32,
    height: u32,
}

/// Everything one `yolact bench` run reports.
#[derive(Debug, Clone)]
pub struct Report {
    pub config: String,
    pub device: String,
    pub dtype: String,
    pub image: (u32, u32),
    pub iters: usize,
    pub warmup: usize,
    pub detections: usize,
    pub clock: ClockKind,
    pub cuda_graph: bool,
    /// Why `--cuda-graph` fell back to eager.
    pub cuda_graph_error: Option<String>,
    pub stages: Vec<(&'static str, Spread)>,
    pub frame: Spread,
    /// Peak GPU memory (CUDA only).
    pub memory: Option<MemReport>,
}

impl Report {
    pub fn fps(&self) -> f64 {
        1000.0 / self.frame.median
    }

    /// The `--json` document. Through a `Value`, whose object keys are sorted, so the key order
    /// is the one the tools reading it have always seen.
    pub fn json(&self) -> Result<serde_json::Value> {
        let doc = ReportJson {
            config: &self.config,
            device: &self.device,
            dtype: &self.dtype,
            image: ImageSize {
                width: self.image.0,
                height: self.image.1,
            },
            iters: self.iters,
            warmup: self.warmup,
            detections: self.detections,
            clock: self.clock.as_str(),
            cuda_graph: self.cuda_graph,
            cuda_graph_error: self.cuda_graph_error.as_deref(),
            frame_ms: self.frame,
            stages: self.stages.iter().copied().collect(),
            fps: self.fps(),
            peak_gpu_mem_mib: self.memory.map(|m| mib(m.peak_bytes)),
            gpu_mem_source: self.memory.map(|m| m.source.as_str()),
            device_used_max_mib: self.memory.map(|m| mib(m.device_used_max_bytes)),
        };
        Ok(serde_json::to_value(doc)?)
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "{} on {} ({}), {}x{} image, {} iterations after {} warm-up, {} detections\n",
            self.config,
            self.device,
            self.dtype,
            self.image.0,
            self.image.1,
            self.iters,
            self.warmup,
            self.detections
        );
        let mode = if self.cuda_graph {
            "network replayed as one CUDA graph"
        } else {
            "eager"
        };
        out += &format!("timing: {}, {mode}\n", self.clock.describe());
        if let Some(why) = &self.cuda_graph_error {
            out += &format!("cuda graph: not used ({why})\n");
        }
        out += &format!(
            "{:<12} {:>10} {:>10} {:>10}\n",
            "stage (ms)", "median", "min", "max"
        );
        for (n, s) in self
            .stages
            .iter()
            .chain(std::iter::once(&("frame", self.frame)))
        {
            out += &format!(
                "{n:<12} {:>10.2} {:>10.2} {:>10.2}\n",
                s.median, s.min, s.max
            );
        }
        out += &format!("FPS (median frame): {:.2}\n", self.fps());
        if let Some(m) = &self.memory {
            out += &format!(
                "peak GPU memory: {:.1} MiB ({}); device in use, max: {:.1} MiB\n",
                mib(m.peak_bytes),
                m.source.describe(),
                mib(m.device_used_max_bytes)
            );
        }
        out
    }
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
        let s = Spread::of(&[]);
        assert!(s.median.is_nan() && s.min.is_nan() && s.max.is_nan());
        let v = serde_json::to_value(Spread::of(&[d(7)])).unwrap();
        assert_eq!(
            (v["median"].as_f64(), v["min"].as_f64(), v["max"].as_f64()),
            (Some(7.0), Some(7.0), Some(7.0))
        );
    }

    fn times(ms: [u64; 7]) -> StageTimes {
        let d = |i: usize| Duration::from_millis(ms[i]);
        StageTimes {
            preprocess: d(0),
            backbone: d(1),
            fpn: d(2),
            protonet: d(3),
            heads: d(4),
            nms: d(5),
            masks: d(6),
        }
    }

    #[test]
    fn stage_columns_follow_the_mode() {
        let t = [times([1, 20, 3, 4, 5, 6, 7]), times([3, 40, 0, 0, 0, 2, 9])];
        let eager = stage_spreads(&t, false);
        let names: Vec<&str> = eager.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, StageTimes::NAMES);
        assert_eq!(eager[1].1.median, 30.0);
        assert_eq!(eager[2].1.min, 0.0);
        let graph = stage_spreads(&t, true);
        let names: Vec<&str> = graph.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["preprocess", "network", "nms", "masks"]);
        assert_eq!((graph[1].1.min, graph[1].1.max), (20.0, 40.0));
        assert_eq!((graph[3].1.min, graph[3].1.max), (7.0, 9.0));
    }

    fn report(memory: Option<MemReport>, clock: ClockKind) -> Report {
        let t = [times([1, 2, 3, 4, 5, 6, 7])];
        Report {
            config: "yolact_resnet50".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            image: (640, 480),
            iters: 1,
            warmup: 0,
            detections: 3,
            clock,
            cuda_graph: false,
            cuda_graph_error: Some("no GPU".into()),
            stages: stage_spreads(&t, false),
            frame: Spread::of(&[t[0].total()]),
            memory,
        }
    }

    /// The document's keys and a spread's bytes, as `yolact bench --json` has always printed them
    /// (sorted keys; written out by hand).
    #[test]
    fn json_keeps_its_keys_and_bytes() {
        let v = report(None, ClockKind::Wall).json().unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "clock",
                "config",
                "cuda_graph",
                "cuda_graph_error",
                "detections",
                "device",
                "device_used_max_mib",
                "dtype",
                "fps",
                "frame_ms",
                "gpu_mem_source",
                "image",
                "iters",
                "peak_gpu_mem_mib",
                "stages",
                "warmup"
            ]
        );
        assert_eq!(v["image"].to_string(), r#"{"height":480,"width":640}"#);
        assert_eq!(
            v["stages"]["nms"].to_string(),
            r#"{"max":6.0,"median":6.0,"min":6.0}"#
        );
        let stages: Vec<&str> = v["stages"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            stages,
            [
                "backbone",
                "fpn",
                "heads",
                "masks",
                "nms",
                "preprocess",
                "protonet"
            ]
        );
    }

    #[test]
    fn json_names_the_clock_and_the_memory_source() {
        let v = report(None, ClockKind::Wall).json().unwrap();
        assert_eq!(v["clock"], "wall");
        assert_eq!(v["cuda_graph"], false);
        assert_eq!(v["cuda_graph_error"], "no GPU");
        assert!(v["peak_gpu_mem_mib"].is_null() && v["gpu_mem_source"].is_null());
        assert_eq!(v["frame_ms"]["median"].as_f64(), Some(28.0));
        assert!((v["fps"].as_f64().unwrap() - 1000.0 / 28.0).abs() < 1e-9);
        assert_eq!(v["stages"]["masks"]["max"].as_f64(), Some(7.0));

        let m = MemReport::from_readings(Some(512 << 20), 0, 3 << 30);
        let r = report(Some(m), ClockKind::CudaEvents);
        let v = r.json().unwrap();
        assert_eq!(v["clock"], "cuda_events");
        assert_eq!(v["peak_gpu_mem_mib"].as_f64(), Some(512.0));
        assert_eq!(v["gpu_mem_source"], "mempool_used_high");
        assert_eq!(v["device_used_max_mib"].as_f64(), Some(3072.0));
        let table = r.table();
        assert!(table.contains("timing: cuda events"), "{table}");
        assert!(table.contains("peak GPU memory: 512.0 MiB"), "{table}");
        assert!(report(None, ClockKind::Wall)
            .table()
            .contains("timing: wall clock"));
    }
}
