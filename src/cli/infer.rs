use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use yolact_ros2::engine::preprocess::load_image;
use yolact_ros2::engine::{Engine, InferOptions};
use yolact_ros2::output::detection::Detections;
use yolact_ros2::output::json::{self, DetectionsJson};
use yolact_ros2::output::overlay;

use super::{DetectArgs, ModelArgs};

const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "PNG", "JPG"];

#[derive(Debug, clap::Args)]
pub struct InferArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    /// Write detections as JSON (a directory when there are several images: <stem>.json).
    #[arg(long, value_name = "OUT.json")]
    pub json: Option<PathBuf>,
    /// Write the image with masks, boxes and labels drawn (a directory for several images: <stem>.png).
    #[arg(long, value_name = "OUT.png")]
    pub overlay: Option<PathBuf>,
    /// Write the eval-mode head outputs (loc, conf, mask, priors, proto) as safetensors
    /// (a directory for several images: <stem>.safetensors).
    #[arg(long, value_name = "RAW.safetensors")]
    pub dump_raw: Option<PathBuf>,
    /// Images, or directories of images (png, jpg, bmp).
    #[arg(required = true, value_name = "IMAGE|DIR")]
    pub inputs: Vec<PathBuf>,
}

pub fn run(a: InferArgs) -> Result<ExitCode> {
    let (images, several) = collect_inputs(&a.inputs)?;
    check_unique_stems(&images, several)?;
    let opts = a.detect.options()?;
    let engine = a.model.load()?;
    let outputs = Outputs::new(&a, several)?;

    let mut failed = 0usize;
    for path in &images {
        // A dangling link found in a folder is an input that was meant to be processed.
        if path.is_symlink() && !path.exists() {
            let target = std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            eprintln!(
                "error: {}: a broken symbolic link (its target {target} does not exist)",
                path.display()
            );
            failed += 1;
            continue;
        }
        if let Err(e) = infer_one(&engine, path, &opts, &outputs) {
            eprintln!("error: {}: {e:#}", path.display());
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} images failed", images.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn infer_one(engine: &Engine, path: &Path, opts: &InferOptions, out: &Outputs) -> Result<()> {
    let img = load_image(path)?;
    let start = std::time::Instant::now();
    let dets = engine.infer(&img, opts)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}: {}x{}, {} detections ({}, {ms:.1} ms)",
        path.display(),
        dets.width,
        dets.height,
        dets.items.len(),
        dets.config
    );
    for d in &dets.items {
        let [x1, y1, x2, y2] = d.bbox;
        println!(
            "  {:<14} {:.3}  [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}]",
            dets.label(d.class_id),
            d.score
        );
    }
    if let Some(p) = out.path(&out.json, path, "json") {
        let v = detections_json(path, &dets)?;
        std::fs::write(&p, serde_json::to_vec_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = out.path(&out.overlay, path, "png") {
        overlay::draw(&img, &dets)
            .save(&p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = out.path(&out.dump_raw, path, "safetensors") {
        let raw = engine.raw(&img)?;
        let tensors: HashMap<String, candle_core::Tensor> = [
            ("loc", raw.loc),
            ("conf", raw.conf),
            ("mask", raw.mask),
            ("priors", raw.priors),
            ("proto", raw.proto),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_string(), t))
        .collect();
        candle_core::safetensors::save(&tensors, &p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The `--json` document of one image.
pub fn detections_json(path: &Path, dets: &Detections) -> Result<serde_json::Value> {
    Ok(json::to_value(&DetectionsJson::new(
        &path.display().to_string(),
        dets,
    ))?)
}

/// Expands directories (keeping broken links with an image extension, reported by [`run`]);
/// `several` is true when outputs must be directories.
fn collect_inputs(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, bool)> {
    let mut images = Vec::new();
    let mut saw_dir = false;
    for p in inputs {
        if p.is_dir() {
            saw_dir = true;
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    (f.is_file() || f.is_symlink() && !f.exists())
                        && f.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                eprintln!("warning: {} holds no png/jpg/bmp images", p.display());
            }
            images.extend(found);
        } else if p.exists() {
            images.push(p.clone());
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    if images.is_empty() {
        bail!("no images to process");
    }
    let several = saw_dir || images.len() > 1;
    Ok((images, several))
}

fn check_unique_stems(images: &[PathBuf], several: bool) -> Result<()> {
    if !several {
        return Ok(());
    }
    let mut seen = HashSet::new();
    for p in images {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        if !seen.insert(stem.clone()) {
            bail!("two inputs share the file stem `{stem}`, so their outputs would overwrite each other; rename one");
        }
    }
    Ok(())
}

struct Outputs {
    several: bool,
    json: Option<PathBuf>,
    overlay: Option<PathBuf>,
    dump_raw: Option<PathBuf>,
}

impl Outputs {
    fn new(a: &InferArgs, several: bool) -> Result<Self> {
        let out = Outputs {
            several,
            json: a.json.clone(),
            overlay: a.overlay.clone(),
            dump_raw: a.dump_raw.clone(),
        };
        for p in [&out.json, &out.overlay, &out.dump_raw]
            .into_iter()
            .flatten()
        {
            if several {
                std::fs::create_dir_all(p).with_context(|| {
                    format!("creating output directory {} (several inputs)", p.display())
                })?;
            } else if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        Ok(out)
    }

    fn path(&self, target: &Option<PathBuf>, input: &Path, ext: &str) -> Option<PathBuf> {
        let t = target.as_ref()?;
        if !self.several {
            return Some(t.clone());
        }
        let stem = input
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        Some(t.join(format!("{stem}.{ext}")))
    }
}
