use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use yolact_ros2::eval::coco_eval::{evaluate_files, stats_json, CocoStats, STAT_NAMES};

#[derive(Debug, clap::Args)]
pub struct CocoEvalArgs {
    /// COCO ground-truth annotations (instances_*.json).
    #[arg(long, value_name = "ANN.json")]
    pub gt: PathBuf,
    /// Detections in COCO result format (a list of {image_id, category_id, bbox, score, segmentation?}).
    #[arg(long, value_name = "RES.json")]
    pub results: PathBuf,
    /// Print `{"bbox": {...}, "segm": {...}}` with the twelve COCO stats instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CocoEvalArgs) -> Result<ExitCode> {
    let (bbox, segm) = evaluate_files(&a.gt, &a.results).with_context(|| {
        format!(
            "evaluating {} against {}",
            a.results.display(),
            a.gt.display()
        )
    })?;
    if a.json {
        println!("{}", stats_json(&bbox, segm.as_ref())?);
        return Ok(ExitCode::SUCCESS);
    }
    print_table("bbox", &bbox);
    if let Some(s) = &segm {
        print_table("segm", s);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_table(kind: &str, s: &CocoStats) {
    println!("{kind}:");
    for (name, v) in STAT_NAMES.iter().zip(s.as_array()) {
        println!("  {name:<6} {v:.4}");
    }
}
