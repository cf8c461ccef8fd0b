//! `yolact replay`: segment every image of a rosbag2 recording offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use yolact_ros2::replay::{replay, ReplayOptions};

use super::{DetectArgs, ModelArgs};

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
    /// Directory for report.json and report.md.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

pub fn run(a: ReplayArgs) -> Result<ExitCode> {
    let engine = a.model.load()?;
    let opts = ReplayOptions {
        topics: a.topics.clone(),
        out: a.out.clone(),
        copy_inputs: a.copy_inputs,
        infer: a.detect.options()?,
    };
    let report =
        replay(&engine, &a.bag, &opts).with_context(|| format!("replaying {}", a.bag.display()))?;
    if let Some(dir) = &a.report {
        report
            .write(dir)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
    }
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
    for e in &report.read_errors {
        println!("  read error: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
