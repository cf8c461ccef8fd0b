use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use yolact_ros2::engine::InferOptions;
use yolact_ros2::eval::coco_eval::stats_json;
use yolact_ros2::eval::run::{coco_options, evaluate_engine, EvalSet};

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
    #[arg(long, default_value_t = coco_options().score_threshold)]
    pub score_threshold: f32,
    /// Detections per image (COCO's maxDets is 100).
    #[arg(long, default_value_t = coco_options().top_k)]
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
    let set = EvalSet::open(&a.coco_gt, &a.images, a.max_images).with_context(|| {
        format!(
            "--coco-gt {} --images {}",
            a.coco_gt.display(),
            a.images.display()
        )
    })?;
    let engine = a.model.load()?;
    let opts = InferOptions {
        score_threshold: a.score_threshold,
        top_k: a.top_k,
        nms: a.nms.into(),
        crop: true,
    };
    let out = evaluate_engine(&engine, &set, &opts, &mut |done, total| {
        eprint!("\r{done}/{total} images")
    })?;
    eprintln!();
    for (path, e) in &out.failed {
        eprintln!("error: {}: {e}", path.display());
    }

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let write = |name: &str, records: &Vec<serde_json::Value>| -> Result<()> {
        let p = a.out.join(name);
        let text = serde_json::to_string(records)?;
        std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
        Ok(())
    };
    write("results.json", &out.mask_records)?;
    if let Some(boxes) = &out.box_records {
        write("results_bbox.json", boxes)?;
    }
    if a.json {
        println!("{}", stats_json(&out.bbox, Some(&out.segm))?);
    } else {
        super::coco_eval::print_table("bbox", &out.bbox);
        super::coco_eval::print_table("segm", &out.segm);
    }
    Ok(if out.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
