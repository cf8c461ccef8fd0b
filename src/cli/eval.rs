use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use yolact_ros2::engine::preprocess::load_image;
use yolact_ros2::engine::InferOptions;
use yolact_ros2::eval::coco_eval::{evaluate, results_from_json_str, stats_json, CocoGt, IouType};
use yolact_ros2::eval::export::{image_ids_by_file_name, result_records, RecordScore};

use super::{ModelArgs, NmsArg};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// COCO ground-truth annotations; images are matched to them by file name.
    #[arg(long, value_name = "ANN.json")]
    pub coco_gt: PathBuf,
    /// Folder holding the annotated images.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Where results.json (and, for YOLACT++, results_bbox.json) are written.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Keep detections above this class score (the reference's COCO evaluation uses none).
    #[arg(long, default_value_t = 0.0)]
    pub score_threshold: f32,
    /// Detections per image (COCO's maxDets is 100).
    #[arg(long, default_value_t = 100)]
    pub top_k: usize,
    #[arg(long, value_enum, default_value_t = NmsArg::Fast)]
    pub nms: NmsArg,
    /// Evaluate at most this many images (in file-name order).
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Print `{"bbox": {...}, "segm": {...}}` instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs) -> Result<ExitCode> {
    let gt_text = std::fs::read_to_string(&a.coco_gt)
        .with_context(|| format!("reading {}", a.coco_gt.display()))?;
    let gt_json: serde_json::Value = serde_json::from_str(&gt_text)
        .with_context(|| format!("parsing {}", a.coco_gt.display()))?;
    let ids = image_ids_by_file_name(&gt_json)
        .with_context(|| format!("reading {}", a.coco_gt.display()))?;
    let gt = CocoGt::from_json_str(&gt_text)
        .with_context(|| format!("reading {}", a.coco_gt.display()))?;

    let mut files: Vec<(PathBuf, i64)> = std::fs::read_dir(&a.images)
        .with_context(|| format!("reading {}", a.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let id = *ids.get(p.file_name()?.to_str()?)?;
            Some((p, id))
        })
        .collect();
    files.sort();
    if let Some(n) = a.max_images {
        files.truncate(n);
    }
    if files.is_empty() {
        bail!(
            "no file in {} has a file name listed in {}",
            a.images.display(),
            a.coco_gt.display()
        );
    }

    let engine = a.model.load()?;
    let opts = InferOptions {
        score_threshold: a.score_threshold,
        top_k: a.top_k,
        nms: a.nms.into(),
        crop: true,
    };
    let rescored = engine.config().use_maskiou;
    let (mut masks, mut boxes) = (Vec::new(), Vec::new());
    let mut failed = 0;
    for (i, (path, id)) in files.iter().enumerate() {
        let dets = match load_image(path).and_then(|img| engine.infer(&img, &opts)) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        masks.extend(result_records(*id, &dets, RecordScore::Mask)?);
        if rescored {
            boxes.extend(result_records(*id, &dets, RecordScore::Box)?);
        }
        eprint!("\r{}/{} images", i + 1, files.len());
    }
    eprintln!();

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let write = |name: &str, records: &Vec<serde_json::Value>| -> Result<String> {
        let p = a.out.join(name);
        let text = serde_json::to_string(records)?;
        std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
        Ok(text)
    };
    let mask_text = write("results.json", &masks)?;
    let mask_results = results_from_json_str(&mask_text)?;
    // YOLACT++ ranks boxes by the class score and masks by the rescored one, as the reference does.
    let box_results = if rescored {
        results_from_json_str(&write("results_bbox.json", &boxes)?)?
    } else {
        mask_results.clone()
    };
    let bbox = evaluate(&gt, &box_results, IouType::Bbox)?;
    let segm = evaluate(&gt, &mask_results, IouType::Segm)?;
    if a.json {
        println!("{}", stats_json(&bbox, Some(&segm))?);
    } else {
        super::coco_eval::print_table("bbox", &bbox);
        super::coco_eval::print_table("segm", &segm);
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
