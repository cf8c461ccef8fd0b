//! `yolact replay`: segment every image of a rosbag2 recording offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use yolact_ros2::bag::out_path::{check_writable, refuse_overlap, write_atomic};
use yolact_ros2::depth::Depth3dOptions;
use yolact_ros2::eval::coco_eval::{
    evaluate, results_from_json_str, results_have_masks, stats_json, CocoGt, IouType,
};
use yolact_ros2::node::params::table as t;
use yolact_ros2::node::params::DepthParams;
use yolact_ros2::replay::depth::parse_depth_arg;
use yolact_ros2::replay::{
    replay, CocoCollector, CocoMatch, CocoMatcher, DepthOptions, DepthSelection, ReplayOptions,
    Report,
};

use super::{DetectArgs, ModelArgs};

/// Exit status of a run stopped by Ctrl-C, SIGTERM or SIGHUP (128 + SIGINT, as shells report
/// Ctrl-C; the handler cannot tell the three apart).
const EXIT_INTERRUPTED: u8 = 130;
/// The run completed, but data was lost on the way: frames skipped (undecodable, failed
/// inference) or storage that could not be read (damaged chunks, a cut-off file).
const EXIT_INCOMPLETE: u8 = 3;

pub const EXIT_HELP: &str = "Exit status: 0 every message was segmented; 3 the run completed but \
frames were skipped or parts of the bag could not be read (see the report's skipped and \
read_errors); 1 no frame was segmented, or the bag cannot be opened (e.g. not an MCAP file) or \
an output is refused; 2 bad arguments or weights; 130 interrupted (Ctrl-C, SIGTERM or SIGHUP: \
the bag and report are still finished).";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CocoMatchArg {
    Index,
    Stamp,
    Auto,
}

impl From<CocoMatchArg> for CocoMatch {
    fn from(a: CocoMatchArg) -> Self {
        match a {
            CocoMatchArg::Index => CocoMatch::Index,
            CocoMatchArg::Stamp => CocoMatch::Stamp,
            CocoMatchArg::Auto => CocoMatch::Auto,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A rosbag2 directory (with metadata.yaml), or a single .mcap or .db3 file.
    pub bag: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    /// Comma-separated topics to segment; default: every Image and CompressedImage topic.
    #[arg(long, value_delimiter = ',', value_name = "T1,T2")]
    pub topics: Option<Vec<String>>,
    /// Output MCAP bag (ros2 profile) with the segmentations and a final /diagnostics message.
    #[arg(long, value_name = "OUT.mcap")]
    pub out: Option<PathBuf>,
    /// Also copy the input images into the output bag.
    #[arg(long)]
    pub copy_inputs: bool,
    /// Directory for report.json, report.md, latency.png and stability.png.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// COCO ground truth for the bag's frames: writes results.json (into --report, else next to
    /// --out) and prints box and mask AP.
    #[arg(long, value_name = "ANN.json")]
    pub coco_gt: Option<PathBuf>,
    /// How frames find their COCO image: by position among the image messages of the selected
    /// topics (images sorted by id), by header stamp (`stamp_ns` field or a file name whose stem
    /// is the stamp in ns), or stamps when every image has one.
    #[arg(long, value_enum, default_value_t = CocoMatchArg::Auto)]
    pub coco_match: CocoMatchArg,
    /// Continue an interrupted run: keep the complete frames already in --out (or in
    /// OUT.partial.mcap, left by a killed run) and segment only the rest; each frame ends up in the
    /// output exactly once. Without an earlier output it starts from the beginning.
    #[arg(long, requires = "out")]
    pub resume: bool,
    #[command(flatten)]
    pub depth: DepthArgs,
}

/// The 3D outputs from aligned depth (docs/replay.md, "3D outputs"); the `--depth-*` values mean
/// what the node's `depth.*` parameters mean, with the same defaults.
#[derive(Debug, clap::Args)]
pub struct DepthArgs {
    /// Pair a colour topic with its aligned (registered) depth topic, 16UC1 mm or 32FC1 m, and
    /// the depth's CameraInfo (default: `camera_info` next to DEPTH). Repeatable. Without it,
    /// the usual driver names are paired where the bag holds them
    /// (`.../color/image_raw` with `.../aligned_depth_to_color/image_raw`, ...).
    #[arg(long = "depth", value_name = "COLOUR=DEPTH[=INFO]", value_parser = parse_depth_arg)]
    pub depth: Vec<yolact_ros2::replay::DepthTopics>,
    /// No 3D outputs, even where the bag holds depth under a driver's usual name.
    #[arg(long, conflicts_with = "depth")]
    pub no_depth: bool,
    /// Leave the labelled PointCloud2 out of the output bag (the largest 3D output).
    #[arg(long)]
    pub no_points: bool,
    /// Seconds; colour and depth stamps pair when at most this far apart.
    #[arg(long, value_name = "S", default_value_t = t::DEPTH_SLOP.default_double())]
    pub depth_slop: f64,
    /// Depth frames (and colour frames) kept waiting for a partner.
    #[arg(long, value_name = "N", default_value_t = t::DEPTH_QUEUE_SIZE.default_int() as usize)]
    pub depth_queue_size: usize,
    /// Metres per depth unit; default: the encoding's (16UC1 mm, 32FC1 m).
    #[arg(long, value_name = "M")]
    pub depth_scale: Option<f64>,
    /// Mask erosion before sampling depth, colour pixels.
    #[arg(long, value_name = "PX", default_value_t = t::DEPTH_EROSION_PX.default_int() as usize)]
    pub depth_erosion_px: usize,
    /// Metres; readings below are invalid.
    #[arg(long, value_name = "M", default_value_t = t::DEPTH_MIN_DEPTH.default_double())]
    pub depth_min: f64,
    /// Metres; readings above are invalid.
    #[arg(long, value_name = "M", default_value_t = t::DEPTH_MAX_DEPTH.default_double())]
    pub depth_max: f64,
    /// Core band along the ray, median +- k * 1.4826 * MAD (0: no rejection).
    #[arg(long, value_name = "K", default_value_t = t::DEPTH_OUTLIER_K.default_double())]
    pub depth_outlier_k: f64,
    /// Metres; the band grows over sorted depths while consecutive readings are this close.
    #[arg(long, value_name = "M", default_value_t = t::DEPTH_MAX_GAP.default_double())]
    pub depth_max_gap: f64,
    /// Fewer points left: the instance has no 3D box.
    #[arg(long, value_name = "N", default_value_t = t::DEPTH_MIN_POINTS.default_int() as usize)]
    pub depth_min_points: usize,
}

impl DepthArgs {
    pub fn options(&self) -> Result<DepthOptions> {
        let options = Depth3dOptions {
            erosion_px: self.depth_erosion_px,
            min_depth: self.depth_min,
            max_depth: self.depth_max,
            outlier_k: self.depth_outlier_k,
            max_gap: self.depth_max_gap,
            min_points: self.depth_min_points,
        };
        options.validate().context("--depth-*")?;
        if !(self.depth_slop.is_finite() && self.depth_slop >= 0.0) {
            anyhow::bail!("--depth-slop {} must be finite and >= 0", self.depth_slop);
        }
        if self.depth_queue_size == 0 {
            anyhow::bail!("--depth-queue-size must be at least 1");
        }
        if let Some(s) = self.depth_scale {
            if !(s.is_finite() && s > 0.0) {
                anyhow::bail!("--depth-scale {s} must be finite and > 0");
            }
        }
        let selection = if self.no_depth {
            DepthSelection::Off
        } else if self.depth.is_empty() {
            DepthSelection::Auto
        } else {
            DepthSelection::Given(self.depth.clone())
        };
        Ok(DepthOptions {
            selection,
            params: DepthParams {
                slop_s: self.depth_slop,
                queue_size: self.depth_queue_size,
                scale: self.depth_scale,
                options,
            },
            points: !self.no_points,
        })
    }
}

/// First SIGINT, SIGTERM or SIGHUP (ctrlc's `termination` feature): ask the loop to stop between
/// frames, so `timeout`, `docker stop` and systemd get a finished bag and report. Second: leave
/// at once (the output stays as OUT.partial.mcap, every frame before the last recoverable).
fn install_ctrlc() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: aborting; the output is left as OUT.partial.mcap (`yolact replay --resume` or `yolact bag-recover` finishes it)");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!("\ninterrupted: finishing the output bag (interrupt again to abort)");
    })
    .context("installing the signal handler")?;
    Ok(stop)
}

/// Every file the run will write, refused when it is or is inside an input and checked
/// writable, all before the model is loaded or a frame is read.
fn check_outputs(a: &ReplayArgs) -> Result<()> {
    let mut inputs = yolact_ros2::replay::input_paths(&a.bag);
    if let Some(p) = &a.coco_gt {
        inputs.push(p.clone());
    }
    let w = Path::new(&a.model.weights);
    if w.exists() {
        inputs.push(w.to_path_buf());
    }
    let mut outputs: Vec<(String, PathBuf)> = Vec::new();
    if let Some(o) = &a.out {
        outputs.push(("--out".into(), o.clone()));
    }
    if let Some(d) = &a.report {
        if d.exists() && !d.is_dir() {
            anyhow::bail!("--report `{}` exists and is not a directory", d.display());
        }
        for f in Report::FILES {
            outputs.push((format!("--report's {f}"), d.join(f)));
        }
    }
    if a.coco_gt.is_some() {
        let dir = coco_dir(a);
        for f in ["results.json", "results_bbox.json"] {
            outputs.push((format!("COCO {f}"), dir.join(f)));
        }
    }
    refuse_overlap(&inputs, &outputs)?;
    for (what, p) in &outputs {
        check_writable(what, p)?;
    }
    Ok(())
}

/// Hidden by indicatif itself when stderr is not a terminal, so logs and tests see no escapes.
fn progress_bar() -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {pos}/{len} frames  {per_sec}  ETA {eta}  {elapsed_precise}",
    ) {
        pb.set_style(style);
    }
    pb
}

struct Coco {
    gt: CocoGt,
    dir: PathBuf,
}

fn coco_dir(a: &ReplayArgs) -> PathBuf {
    if let Some(d) = &a.report {
        return d.clone();
    }
    a.out
        .as_deref()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Writes results.json (and results_bbox.json for YOLACT++), evaluates and prints the stats;
/// returns `{"bbox": .., "segm": ..}`.
fn coco_evaluate(c: &Coco, rec: &CocoCollector) -> Result<serde_json::Value> {
    std::fs::create_dir_all(&c.dir).with_context(|| format!("creating {}", c.dir.display()))?;
    let write = |name: &str, records: &Vec<serde_json::Value>| -> Result<String> {
        let p = c.dir.join(name);
        let text = serde_json::to_string(records)?;
        write_atomic(&p, text.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
        Ok(text)
    };
    let mask_results = results_from_json_str(&write("results.json", &rec.masks)?)?;
    // YOLACT++ ranks boxes by the class score and masks by the rescored one, as `yolact eval`.
    let box_results = match &rec.boxes {
        Some(b) => results_from_json_str(&write("results_bbox.json", b)?)?,
        None => mask_results.clone(),
    };
    let bbox = evaluate(&c.gt, &box_results, IouType::Bbox)?;
    let segm = if results_have_masks(&mask_results) {
        Some(evaluate(&c.gt, &mask_results, IouType::Segm)?)
    } else {
        None
    };
    super::coco_eval::print_table("bbox", &bbox);
    if let Some(s) = &segm {
        super::coco_eval::print_table("segm", s);
    }
    Ok(stats_json(&bbox, segm.as_ref()))
}

fn print_summary(report: &Report) {
    println!(
        "{} messages, {} frames processed, {} skipped, {} read errors, {:.3} frames/s, {} detections",
        report.messages,
        report.frames,
        report.skipped_total,
        report.read_errors.len(),
        report.fps,
        report.detections_total
    );
    for (reason, n) in &report.skipped_by_reason {
        println!("  skipped ({reason}): {n}");
    }
    for (kind, n) in &report.read_errors_by_reason {
        println!("  read errors ({kind}): {n}");
    }
    if report.resumed_frames > 0 {
        println!(
            "  resumed: {} frames carried over from the interrupted output",
            report.resumed_frames
        );
    }
    for e in &report.read_errors {
        println!("  read error: {e}");
    }
    for (topic, d) in &report.depth {
        println!(
            "3D {topic} + {}: {} of {} colour frames paired, {} instances located, {} without \
             enough depth, {} depth errors",
            d.depth_topic,
            d.paired,
            d.colour_frames,
            d.instances_located,
            d.instances_without_enough_depth,
            d.errors
        );
    }
    if let Some(c) = &report.coco {
        println!(
            "COCO: {} frames matched by {}, {} unmatched (not evaluated)",
            c.matched, c.matched_by, c.unmatched
        );
    }
}

pub fn run(a: ReplayArgs) -> Result<ExitCode> {
    let stop = install_ctrlc()?;
    if let Err(e) = check_outputs(&a) {
        eprintln!("error: {e:#}");
        return Ok(ExitCode::from(1));
    }
    let (coco, matcher) = match &a.coco_gt {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            let matcher = CocoMatcher::new(&json, a.coco_match.into())
                .with_context(|| format!("reading {}", p.display()))?;
            let gt =
                CocoGt::from_value(&json).with_context(|| format!("reading {}", p.display()))?;
            (
                Some(Coco {
                    gt,
                    dir: coco_dir(&a),
                }),
                Some(matcher),
            )
        }
        None => (None, None),
    };
    let depth = a.depth.options()?;
    let engine = a.model.load()?;
    let pb = progress_bar();
    let opts = ReplayOptions {
        topics: a.topics.clone(),
        out: a.out.clone(),
        copy_inputs: a.copy_inputs,
        stop: Some(stop),
        progress: Some(pb.clone()),
        coco: matcher,
        resume: a.resume,
        depth: Some(depth),
        ..ReplayOptions::new(a.detect.options()?)
    };
    let result = replay(&engine, &a.bag, &opts);
    pb.finish_and_clear();
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: replaying {}: {e}", a.bag.display());
            return Ok(ExitCode::from(1));
        }
    };

    print_summary(&report);
    if let (Some(c), Some(rec)) = (&coco, report.coco_records.take()) {
        let stats = coco_evaluate(c, &rec)?;
        if let Some(s) = report.coco.as_mut() {
            s.stats = Some(stats);
        }
    }
    if let Some(dir) = &a.report {
        report
            .write(dir)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
    }
    if report.interrupted {
        eprintln!(
            "interrupted after {} frames; the output bag and the report are complete up to there",
            report.frames
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if report.frames == 0 {
        eprintln!(
            "error: no frame was segmented: {} messages read, {} skipped, {} read errors (see the reasons above)",
            report.messages,
            report.skipped_total,
            report.read_errors.len()
        );
        return Ok(ExitCode::from(1));
    }
    if report.skipped_total > 0 || !report.read_errors.is_empty() {
        eprintln!(
            "warning: incomplete: {} frames skipped, {} read errors (exit status {EXIT_INCOMPLETE})",
            report.skipped_total,
            report.read_errors.len()
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}
