//! Command-line interface: one module per subcommand.

mod bag_recover;
mod bench;
mod bench_ops;
mod coco_eval;
mod config;
mod convert;
mod eval;
mod infer;
mod node;
mod replay;
mod synth_scenes;
mod train;
mod train_step;

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use yolact_ros2::config::builtin_names;
use yolact_ros2::cuda::{resolve_device, Selected};
use yolact_ros2::engine::Engine;
use yolact_ros2::post::fast_nms::NmsKind;
use yolact_ros2::weights::source::HostWeights;

#[derive(Debug, Parser)]
#[command(name = "yolact", version, about = "YOLACT / YOLACT++ instance segmentation in Rust", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Segment images: print detections, write JSON, overlays and raw head outputs.
    Infer(infer::InferArgs),
    /// Convert a checkpoint (legacy or zip .pth, safetensors) to safetensors.
    Convert(convert::ConvertArgs),
    /// Time each stage of a frame and print median and spread.
    Bench(bench::BenchArgs),
    /// Time our deformable 3x3 conv (DCNv2) against a plain 3x3 conv, per backbone DCN shape.
    #[command(long_about = bench_ops::LONG_ABOUT)]
    BenchOps(bench_ops::BenchOpsArgs),
    /// Run the model on an annotated image folder, write COCO results and print box and mask AP.
    Eval(eval::EvalArgs),
    /// Evaluate a COCO results file against ground truth (box and mask AP/AR, as pycocotools).
    CocoEval(coco_eval::CocoEvalArgs),
    /// Segment every image of a rosbag2 recording offline; write an MCAP bag and a report.
    #[command(after_help = replay::EXIT_HELP)]
    Replay(replay::ReplayArgs),
    /// Rewrite a damaged MCAP file (cut off by a kill or power cut, bad chunks) as a complete one.
    BagRecover(bag_recover::BagRecoverArgs),
    /// Run the ROS 2 node (`--params-file config/yolact.yaml`, `--dry-run` to check a config).
    Node(node::NodeArgs),
    /// Generate RGB-D tabletop scenes with exact ground truth (COCO masks, depth, 3D boxes, bags).
    #[command(long_about = synth_scenes::LONG_ABOUT)]
    SynthScenes(synth_scenes::SynthScenesArgs),
    /// Train or fine-tune on a COCO-format data set (the reference's losses, SGD and schedule).
    Train(train::TrainArgs),
    /// One deterministic training step: the loss terms and gradients, for parity checks.
    TrainStep(train_step::TrainStepArgs),
    /// Print a config as JSON (edit it and pass the file to `train --config`).
    Config(config::ConfigArgs),
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Infer(a) => infer::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchOps(a) => bench_ops::run(a),
        Command::CocoEval(a) => coco_eval::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Replay(a) => replay::run(a),
        Command::BagRecover(a) => bag_recover::run(a),
        Command::Node(a) => node::run(a),
        Command::SynthScenes(a) => synth_scenes::run(a),
        Command::Train(a) => train::run(a),
        Command::TrainStep(a) => train_step::run(a),
        Command::Config(a) => config::run(a),
    }
}

/// Where the model comes from and where it runs; shared by `infer` and `bench`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Checkpoint: `yolact_plus_mini` (the default: the model shipped in the binary, trained
    /// here on generated tabletop scenes: book, cup, sports ball, carrot, donut); a `.pth`
    /// (legacy or zip) or `.safetensors` file; a released config name (e.g.
    /// yolact_plus_resnet50: downloaded once from Hugging Face into its cache, $HF_HOME); or
    /// `synthetic[:SEED]`: deterministic random weights (yolact_resnet50 unless --config says).
    #[arg(long, value_name = "W", default_value = yolact_ros2::weights::shipped::SHIPPED_NAME)]
    pub weights: String,
    /// Config name; detected from the checkpoint's keys and file name when omitted.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(builtin_names()))]
    pub config: Option<String>,
    /// cpu, cuda[:N] or auto (CUDA device 0 when usable, else the CPU with one log line saying
    /// why).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Run the network in f16 (CUDA only; decode, NMS and masks stay f32).
    #[arg(long)]
    pub half: bool,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Engine> {
        let sel = select(&self.device, self.half)?;
        let host = HostWeights::load(&self.weights, self.config.as_deref())
            .with_context(|| format!("--weights {}", self.weights))?;
        let source = host.source.to_string();
        Engine::from_host(&host, &sel.device, sel.dtype)
            .with_context(|| format!("loading {source}"))
    }
}

/// Post-processing flags shared by `infer` and `bench`.
#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Keep detections whose class score is above this and whose final score is at least this.
    #[arg(long, default_value_t = 0.15)]
    pub score_threshold: f32,
    /// Keep at most this many detections per image.
    #[arg(long, default_value_t = 100)]
    pub top_k: usize,
    /// Non-maximum suppression: the reference's class-wise Fast NMS, cross-class Fast NMS, or
    /// traditional greedy NMS.
    #[arg(long, value_enum, default_value_t = NmsArg::Fast)]
    pub nms: NmsArg,
    /// Do not crop masks to their boxes.
    #[arg(long)]
    pub no_crop: bool,
}

impl DetectArgs {
    pub fn options(&self) -> Result<yolact_ros2::engine::InferOptions> {
        if !(0.0..=1.0).contains(&self.score_threshold) {
            bail!(
                "--score-threshold must be within 0..=1, got {}",
                self.score_threshold
            );
        }
        let max = yolact_ros2::node::params::MAX_TOP_K;
        if !(1..=max).contains(&self.top_k) {
            // 0 would run the whole network and keep nothing; the node refuses it the same way.
            bail!("--top-k must be within 1..={max}, got {}", self.top_k);
        }
        Ok(yolact_ros2::engine::InferOptions {
            score_threshold: self.score_threshold,
            top_k: self.top_k,
            nms: self.nms.into(),
            crop: !self.no_crop,
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NmsArg {
    Fast,
    CrossClass,
    Traditional,
}

impl From<NmsArg> for NmsKind {
    fn from(a: NmsArg) -> Self {
        match a {
            NmsArg::Fast => NmsKind::Fast,
            NmsArg::CrossClass => NmsKind::FastCrossClass,
            NmsArg::Traditional => NmsKind::Traditional,
        }
    }
}

/// `cpu`, `cuda`, `cuda:N` or `auto`, and `--half` (see [`resolve_device`]).
pub fn select(device: &str, half: bool) -> Result<Selected> {
    Ok(resolve_device(device, half)?)
}
